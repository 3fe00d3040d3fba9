"""Bad input to the backend and checks layers: ``namespace_of(..., names=...)`` names the offending inputs, the
dtype checks reject float16/bfloat16 and mixed float dtypes, python-number hyper-parameters are range checked.

Goldens are hand-written messages and hand-picked bounds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arrayrl._backend import namespace_of
from arrayrl._checks import (
    check_floating,
    check_same_dtype,
    check_scalar_range,
    dtype_name,
    is_float32_or_64,
)
from arrayrl._scan import reverse_discounted_scan_raw

@given(data=st.data(), n=st.integers(2, 6), first_torch=st.booleans())
def test_mixed_libraries_name_the_first_of_each(data, n, first_torch):
    """The message names the first input (the reference library) and the first input of another library."""
    torch = pytest.importorskip("torch")
    words = data.draw(st.lists(st.sampled_from(["reward", "done", "value", "gamma", "x"]), min_size=n, max_size=n))
    names = [f"{w}{i}" for i, w in enumerate(words)]
    other_i = data.draw(st.integers(1, n - 1), label="first input of the other library")
    rest = data.draw(st.lists(st.booleans(), min_size=n - other_i - 1, max_size=n - other_i - 1), label="rest")
    is_torch = [first_torch] * other_i + [not first_torch] + rest
    arrays = [torch.ones(2) if t else np.ones(2) for t in is_torch]
    first, other = ("torch", "numpy") if first_torch else ("numpy", "torch")
    with pytest.raises(TypeError) as err:
        namespace_of(*arrays, names=names)
    assert str(err.value) == f"mixed array libraries: {names[0]} is {first}, {names[other_i]} is {other}"


def test_names_fall_back_to_positions():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"^mixed array libraries: reward is numpy, argument 2 is torch$"):
        namespace_of(np.ones(2), None, torch.ones(2), names=("reward",))
    with pytest.raises(TypeError, match=r"^mixed array libraries: argument 0 is numpy, state_value is torch$"):
        namespace_of(np.ones(2), torch.ones(2), names=(None, "state_value"))


def test_names_in_the_other_messages():
    with pytest.raises(TypeError, match=r"^gamma is a Python list; arrayrl functions take arrays"):
        namespace_of(np.ones(2), [0.9], names=("reward", "gamma"))
    with pytest.raises(TypeError, match=r"^reward of type str is not an array-API array"):
        namespace_of("abc", names=("reward",))
    s = pytest.importorskip("array_api_strict")
    a = s.ones(2, device=s.Device("CPU_DEVICE"))
    b = s.ones(2, device=s.Device("device1"))
    with pytest.raises(TypeError, match=r"^mixed devices: reward is on .*CPU_DEVICE.*, done is on .*device1"):
        namespace_of(a, b, names=("reward", "done"))


def test_names_do_not_change_the_result(xp):
    a = xp.from_numpy(np.ones(3))
    assert namespace_of(a, None, a, names=("x", "y", "z")) is namespace_of(a, None, a)


# ----------------------------------------------------------------------------------------------- dtype checks

HALF = ["float16", "bfloat16"]


@pytest.mark.parametrize("half", HALF)
def test_check_floating_rejects_half_precision_torch(half):
    torch = pytest.importorskip("torch")
    x = torch.ones(2, dtype=getattr(torch, half))
    assert not is_float32_or_64(x)
    msg = rf"^reward: expected a real floating dtype \(float32 or float64\), got {half}$"
    with pytest.raises(TypeError, match=msg):
        check_floating(x, "reward")


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.bool_, np.complex128])
def test_check_floating_rejects_other_dtypes(dtype):
    x = np.ones(2, dtype=dtype)
    assert not is_float32_or_64(x)
    with pytest.raises(TypeError, match=rf"^value: expected a real floating dtype .*, got {np.dtype(dtype).name}$"):
        check_floating(x, "value")


def test_float32_and_float64_accepted(xp):
    for dt in (xp.float32, xp.float_dtype):
        x = xp.from_numpy(np.ones(2), dtype=dt)
        assert is_float32_or_64(x)
        check_floating(x, "x")
    assert not is_float32_or_64([1.0]) and not is_float32_or_64(1.0)


def test_check_same_dtype_names_both(xp):
    if not xp.is_float64:
        pytest.skip("needs float64 and float32 on one device")
    a = xp.from_numpy(np.ones(2), dtype=xp.float32)
    b = xp.from_numpy(np.ones(2), dtype=xp.float64)
    with pytest.raises(TypeError, match=r"^next_state_value: dtype float64 differs from state_value: float32$"):
        check_same_dtype({"state_value": a, "skipped": None, "next_state_value": b})
    assert check_same_dtype({"a": a, "b": a, "c": None}) == a.dtype


def test_dtype_name_has_no_library_prefix():
    torch = pytest.importorskip("torch")
    s = pytest.importorskip("array_api_strict")
    assert dtype_name(torch.float16) == dtype_name(np.dtype(np.float16)) == "float16"
    assert dtype_name(s.float32) == "float32"


def test_scan_rejects_half_precision_and_names_its_arguments():
    with pytest.raises(TypeError, match=r"^x: expected a real floating dtype .*, got float16$"):
        reverse_discounted_scan_raw(np.ones((2, 3), np.float16), np.ones((2, 3), np.float16))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"^mixed array libraries: x is numpy, c is torch$"):
        reverse_discounted_scan_raw(np.ones((2, 3)), torch.ones((2, 3), dtype=torch.float64))


# ------------------------------------------------------------------------------------------- scalar ranges


@given(v=st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=10))
def test_scalar_range_closed_unit_interval(v):
    if 0.0 <= v <= 1.0:
        check_scalar_range(v, "gamma", 0.0, 1.0)
    else:
        with pytest.raises(ValueError, match=rf"^gamma: expected a number in \[0, 1\], got {v!r}$"):
            check_scalar_range(v, "gamma", 0.0, 1.0)


@pytest.mark.parametrize("bad", [math.nan, -math.inf, math.inf, np.float32("nan")])
def test_scalar_range_rejects_nan_and_inf(bad):
    with pytest.raises(ValueError, match=r"^lmbda: expected a number in \[0, 1\]"):
        check_scalar_range(bad, "lmbda", 0.0, 1.0)


def test_scalar_range_open_bound_and_passthrough():
    with pytest.raises(ValueError, match=r"^rho_thresh: expected a number in \(0, inf\], got 0.0$"):
        check_scalar_range(0.0, "rho_thresh", 0.0, math.inf, low_open=True)
    check_scalar_range(math.inf, "rho_thresh", 0.0, math.inf, low_open=True)
    with pytest.raises(ValueError, match=r"^p: expected a number in \[0, 1\), got 1$"):
        check_scalar_range(1, "p", 0.0, 1.0, high_open=True)
    # arrays (device data) and non-numbers are left to their own checks
    check_scalar_range(np.full(3, 5.0), "gamma", 0.0, 1.0)
    check_scalar_range(True, "gamma", 0.0, 0.5)
    check_scalar_range("x", "gamma", 0.0, 1.0)
