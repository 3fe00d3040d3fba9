"""Shape/dtype checks name the argument and never broadcast."""

import numpy as np
import pytest

from arrayrl._checks import (
    check_bool,
    check_floating,
    check_integer,
    check_rank,
    check_same_shape,
    check_shape,
    normalize_axis,
)


def test_same_shape_never_broadcasts(xp):
    a = xp.from_numpy(np.zeros((4, 1)))
    b = xp.from_numpy(np.zeros((4,)))
    with pytest.raises(ValueError, match=r"reward: expected shape \(4, 1\) \(the shape of value\), got \(4,\)"):
        check_same_shape({"value": a, "reward": b})
    assert check_same_shape({"value": a, "reward": a, "skip": None}) == (4, 1)


def test_rank_and_shape_messages(xp):
    a = xp.from_numpy(np.zeros((2, 3)))
    check_rank(a, 2, "logits")
    with pytest.raises(ValueError, match=r"logits: expected 3 dimensions, got shape \(2, 3\)"):
        check_rank(a, 3, "logits")
    check_shape(a, (None, 3), "obs")
    with pytest.raises(ValueError, match=r"obs: expected shape \(\*, 4\), got \(2, 3\)"):
        check_shape(a, (None, 4), "obs")


def test_dtype_checks(xp):
    f = xp.from_numpy(np.zeros(2))
    i = xp.from_numpy(np.zeros(2, dtype=np.int64))
    b = xp.from_numpy(np.zeros(2, dtype=bool))
    check_floating(f, "value")
    check_integer(i, "action")
    check_bool(b, "done")
    with pytest.raises(TypeError, match="value: expected a real floating"):
        check_floating(i, "value")
    with pytest.raises(TypeError, match="done: expected a bool dtype"):
        check_bool(f, "done")
    with pytest.raises(TypeError, match="action: expected an integer dtype"):
        check_integer(f, "action")


def test_list_rejected():
    with pytest.raises(TypeError, match="reward: expected an array, got list"):
        check_floating([1.0], "reward")


def test_normalize_axis():
    assert normalize_axis(-2, 3) == 1
    with pytest.raises(ValueError, match=r"time_dim: expected an axis in \[-3, 3\)"):
        normalize_axis(3, 3, "time_dim")
