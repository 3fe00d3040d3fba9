"""Assertion helpers for comparing arrayrl outputs across backends (public: other libraries' tests use them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import backend_name, is_taped, namespace_of, to_numpy

__all__ = ["assert_allclose", "default_tolerance"]


def default_tolerance(dtype: Any) -> tuple[float, float]:
    """``(rtol, atol)`` scaled to a floating dtype: 1e-10 for float64, 1e-4 for float32."""
    name = str(dtype)
    if "float32" in name:
        return 1e-4, 1e-5
    if "float16" in name or "bfloat16" in name:
        return 1e-2, 1e-3
    return 1e-10, 1e-10


def assert_allclose(
    actual: Any,
    expected: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    xp: Any = None,
    dtype: Any = None,
    shape: tuple | None = None,
    name: str = "value",
) -> None:
    """Assert that ``actual`` matches ``expected`` in namespace, dtype, shape and values.

    Args:
        actual: the array under test (any backend, taped or raw).
        expected: the golden value (NumPy array, scalar, or any array; converted to float64 NumPy).
        rtol, atol: tolerances; default from :func:`default_tolerance` of ``actual``'s dtype.
        xp: if given, ``actual`` must belong to this namespace (compared by backend name).
        dtype: if given, ``actual.dtype`` must equal it.
        shape: if given, ``actual.shape`` must equal it; otherwise it must equal ``expected``'s shape.
        name: used in failure messages.
    """
    if xp is not None:
        got_ns = namespace_of(actual)
        want = backend_name(xp)
        got = backend_name(got_ns)
        if is_taped(actual) and not want.startswith("taped"):
            got = backend_name(got_ns._arrayrl_base)
        if got != want:
            raise AssertionError(f"{name}: expected a {want} array, got {got}")
    if dtype is not None and actual.dtype != dtype:
        raise AssertionError(f"{name}: expected dtype {dtype}, got {actual.dtype}")
    a = np.asarray(to_numpy(actual), dtype=np.float64) if not _is_bool(actual) else to_numpy(actual)
    e = np.asarray(to_numpy(expected))
    want_shape = tuple(shape) if shape is not None else tuple(e.shape)
    if tuple(a.shape) != want_shape:
        raise AssertionError(f"{name}: expected shape {want_shape}, got {tuple(a.shape)}")
    if a.dtype == bool or e.dtype == bool:
        np.testing.assert_array_equal(a, e, err_msg=name)
        return
    r, t = default_tolerance(getattr(actual, "dtype", "float64"))
    np.testing.assert_allclose(
        a, e.astype(np.float64), rtol=r if rtol is None else rtol, atol=t if atol is None else atol, err_msg=name
    )


def _is_bool(x: Any) -> bool:
    return "bool" in str(getattr(x, "dtype", ""))
