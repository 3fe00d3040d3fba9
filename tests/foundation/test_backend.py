"""Backend layer: namespace_of, dtype/device helpers, to_numpy."""

import numpy as np
import pytest

from arrayrl._backend import (
    backend_name,
    default_float_dtype,
    is_array,
    is_floating_dtype,
    namespace_of,
    to_numpy,
)


def test_namespace_of_each_backend(xp):
    a = xp.from_numpy(np.ones(3))
    ns = namespace_of(a)
    assert backend_name(ns) == backend_name(xp.ns)
    # None and Python scalars are ignored
    assert namespace_of(None, 2.0, a, 3, True) is ns


def test_taped_wins_over_raw():
    from arrayrl.autodiff import Tensor

    raw = np.ones(2)
    t = Tensor(np.zeros(2))
    ns = namespace_of(raw, t)
    assert backend_name(ns) == "taped[numpy]"
    assert ns._arrayrl_base is np
    assert namespace_of(t, raw) is ns


def test_mixed_libraries_raise_naming_both():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"argument 0 is numpy, argument 1 is torch"):
        namespace_of(np.ones(2), torch.ones(2))


def test_mixed_strict_devices_raise():
    s = pytest.importorskip("array_api_strict")
    a = s.ones(2, device=s.Device("CPU_DEVICE"))
    b = s.ones(2, device=s.Device("device1"))
    with pytest.raises(TypeError, match="mixed devices"):
        namespace_of(a, b)


def test_python_list_raises():
    with pytest.raises(TypeError, match="argument 1 is a Python list"):
        namespace_of(np.ones(2), [1.0, 2.0])


def test_no_array_needs_xp():
    with pytest.raises(TypeError, match="no array"):
        namespace_of(None, 1.0)
    assert namespace_of(None, xp=np) is np


def test_xp_argument_checked_against_arrays():
    s = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match="xp= is array_api_strict"):
        namespace_of(np.ones(2), xp=s)


def test_is_array():
    assert is_array(np.ones(1))
    assert not is_array([1.0])
    assert not is_array(1.0)
    assert not is_array(None)


def test_dtype_helpers(xp):
    a = xp.from_numpy(np.ones(2))
    ns = namespace_of(a)
    base = getattr(ns, "_arrayrl_base", ns)
    assert is_floating_dtype(base, a.dtype)
    assert not is_floating_dtype(base, xp.from_numpy(np.ones(2, dtype=bool)).dtype)
    assert is_floating_dtype(base, default_float_dtype(base))


def test_to_numpy_roundtrip(xp):
    v = np.arange(6.0).reshape(2, 3)
    out = to_numpy(xp.from_numpy(v))
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, v)


def test_numpy_scalars_are_weak():
    torch = pytest.importorskip("torch")
    assert namespace_of(np.float64(1.0)) is np
    assert backend_name(namespace_of(torch.ones(2), np.float64(0.5))) == "torch"
    assert is_array(np.float32(1.0))
