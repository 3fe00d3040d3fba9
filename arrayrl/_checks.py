"""Shape, rank and dtype assertions with messages that name the argument (or batch key).

These checks look at shapes and dtypes only, never at data, so they never force a GPU synchronisation (the one
exception, :func:`check_scalar_range`, looks at Python numbers only, never at arrays).
Every message has the form ``"<name>: expected <what>, got <what>"``; dtypes are written without their library
prefix (``float16``, not ``torch.float16``).

"Floating" means float32 or float64, the dtypes arrayrl computes in: float16 and bfloat16 (which the array API's
``isdtype(..., "real floating")`` also accepts on NumPy and torch) are rejected by :func:`check_floating`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

from ._backend import base_of, is_array, namespace_of

__all__ = [
    "check_array",
    "check_same_shape",
    "assert_same_shape",
    "check_rank",
    "check_min_rank",
    "check_floating",
    "is_float32_or_64",
    "check_same_dtype",
    "check_scalar_range",
    "dtype_name",
    "check_bool",
    "check_integer",
    "check_shape",
    "normalize_axis",
]


def dtype_name(dtype: Any) -> str:
    """``float32`` for NumPy's, torch's (``torch.float32``), array-api-strict's and CuPy's float32 alike."""
    return str(dtype).rsplit(".", 1)[-1]


def _fmt(shape: Any) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_array(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` is an array (raw or taped)."""
    if not is_array(x):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")


def check_same_shape(arrays: Mapping[str, Any]) -> tuple | None:
    """Raise ``ValueError`` unless every array in ``{name: array}`` has the same shape (``None`` entries skipped).

    Never broadcasts: ``[B]`` against ``[B, 1]`` is an error. Returns the common shape (``None`` if all are None).
    """
    ref_name = ref_shape = None
    for name, a in arrays.items():
        if a is None:
            continue
        check_array(a, name)
        if ref_shape is None:
            ref_name, ref_shape = name, tuple(a.shape)
        elif tuple(a.shape) != ref_shape:
            raise ValueError(
                f"{name}: expected shape {_fmt(ref_shape)} (the shape of {ref_name}), got {_fmt(tuple(a.shape))}"
            )
    return ref_shape


assert_same_shape = check_same_shape


def check_shape(x: Any, shape: tuple, name: str) -> None:
    """Raise ``ValueError`` unless ``x.shape == shape`` (``None`` in ``shape`` matches any size)."""
    check_array(x, name)
    got = tuple(x.shape)
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {_fmt(got)}")


def check_rank(x: Any, ndim: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim == ndim``."""
    check_array(x, name)
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {_fmt(tuple(x.shape))}")


def check_min_rank(x: Any, ndim: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim >= ndim``."""
    check_array(x, name)
    if x.ndim < ndim:
        raise ValueError(f"{name}: expected at least {ndim} dimensions, got shape {_fmt(tuple(x.shape))}")


# (type(x), type(dtype), dtype, kind) -> True for combinations already checked (dtypes are few; the hot path is one dict lookup)
_KIND_OK: dict = {}


def _base_namespace(x: Any) -> Any:
    """The raw backend namespace of ``x`` (the taped namespace's base for a taped array)."""
    xp = namespace_of(x)
    return base_of(xp)


def _has_kind(xp: Any, dtype: Any, kind: str) -> bool:
    """``xp.isdtype(dtype, kind)``, where the kind ``"float32|64"`` is float32 or float64 exactly."""
    if kind == "float32|64":
        return dtype == xp.float32 or dtype == xp.float64
    return bool(xp.isdtype(dtype, kind))


def _check_kind(x: Any, name: str, kind: str, what: str) -> None:
    try:
        key = (type(x), type(x.dtype), x.dtype, kind)  # (dtype types first: no cross-library dtype ==)
        if key in _KIND_OK:
            return
    except (AttributeError, TypeError):  # not an array, or an unhashable dtype: the full check below
        key = None
    check_array(x, name)
    if not _has_kind(_base_namespace(x), x.dtype, kind):
        raise TypeError(f"{name}: expected {what}, got {dtype_name(x.dtype)}")
    if key is not None:
        _KIND_OK[key] = True


def is_float32_or_64(x: Any) -> bool:
    """True for an array (raw or taped) of dtype float32 or float64 (cached per array type and dtype)."""
    try:
        key = (type(x), type(x.dtype), x.dtype, "float32|64")
        hit = _KIND_OK.get(key)
    except (AttributeError, TypeError):
        return is_array(x) and _has_kind(_base_namespace(x), x.dtype, "float32|64")
    if hit is None:
        if not is_array(x):
            return False
        hit = _KIND_OK[key] = _has_kind(_base_namespace(x), x.dtype, "float32|64")
    return hit


def check_floating(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has dtype float32 or float64 (float16, bfloat16 and integers are rejected)."""
    if not is_float32_or_64(x):
        check_array(x, name)
        raise TypeError(f"{name}: expected a real floating dtype (float32 or float64), got {dtype_name(x.dtype)}")


def check_same_dtype(arrays: Mapping[str, Any]) -> Any:
    """Raise ``TypeError`` unless every array in ``{name: array}`` has the dtype of the first (``None`` skipped).

    Never promotes: a float64 array among float32 ones is an error naming both,
    ``"next_state_value: dtype float64 differs from state_value: float32"``. Returns the common dtype.
    """
    ref_name = ref = None
    for name, a in arrays.items():
        if a is None:
            continue
        check_array(a, name)
        if ref_name is None:
            ref_name, ref = name, a.dtype
        elif a.dtype != ref:
            raise TypeError(f"{name}: dtype {dtype_name(a.dtype)} differs from {ref_name}: {dtype_name(ref)}")
    return ref


def check_scalar_range(
    value: Any, name: str, low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False
) -> None:
    """Raise ``ValueError`` if the Python number ``value`` is NaN or outside ``[low, high]`` (``(`` / ``)`` with
    ``low_open`` / ``high_open``). Arrays and other objects pass unchecked: looking at array data would force a
    device synchronisation, so per-step (array) hyper-parameters are the caller's responsibility."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return
    v = float(value)
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if math.isnan(v) or below or above:
        lo = ("(" if low_open else "[") + f"{low:g}"
        hi = f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{name}: expected a number in {lo}, {hi}, got {value!r}")


def check_bool(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` is boolean."""
    _check_kind(x, name, "bool", "a bool dtype")


def check_integer(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has an integer dtype."""
    _check_kind(x, name, "integral", "an integer dtype")


def normalize_axis(axis: int, ndim: int, name: str = "axis") -> int:
    """Map a possibly negative axis into ``[0, ndim)``; ``ValueError`` naming the argument if out of range."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: expected an axis in [{-ndim}, {ndim}) for an array of {ndim} dimensions, got {axis}")
    return axis % ndim
