"""Shape, rank and dtype assertions with messages that name the argument (or batch key).

These checks look at shapes and dtypes only, never at data, so they never force a GPU synchronisation.
Every message has the form ``"<name>: expected <what>, got <what>"``.
"""

from __future__ import annotations

from typing import Any, Mapping

from ._backend import is_array, is_taped, namespace_of

__all__ = [
    "check_array",
    "check_same_shape",
    "assert_same_shape",
    "check_rank",
    "check_min_rank",
    "check_floating",
    "check_bool",
    "check_integer",
    "check_shape",
    "normalize_axis",
]


def _fmt(shape: Any) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def check_array(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` is an array (raw or taped)."""
    if not is_array(x):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")


def check_same_shape(arrays: Mapping[str, Any]) -> tuple:
    """Raise ``ValueError`` unless every array in ``{name: array}`` has the same shape (``None`` entries skipped).

    Never broadcasts: ``[B]`` against ``[B, 1]`` is an error. Returns the common shape.
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


def _check_kind(x: Any, name: str, kind: str, what: str) -> None:
    try:
        key = (type(x), type(x.dtype), x.dtype, kind)  # (dtype types first: no cross-library dtype ==)
        if key in _KIND_OK:
            return
    except (AttributeError, TypeError):  # not an array, or an unhashable dtype: the full check below
        key = None
    check_array(x, name)
    xp = namespace_of(x)
    if is_taped(x):
        xp = xp._arrayrl_base
    if not xp.isdtype(x.dtype, kind):
        article = "an" if what[0] in "aeiou" else "a"
        raise TypeError(f"{name}: expected {article} {what} dtype, got {x.dtype}")
    if key is not None:
        _KIND_OK[key] = True


def check_floating(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has a real floating dtype."""
    _check_kind(x, name, "real floating", "real floating (float32 or float64)")


def check_bool(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` is boolean."""
    _check_kind(x, name, "bool", "bool")


def check_integer(x: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has an integer dtype."""
    _check_kind(x, name, "integral", "integer")


def normalize_axis(axis: int, ndim: int, name: str = "axis") -> int:
    """Map a possibly negative axis into ``[0, ndim)``; ``ValueError`` naming the argument if out of range."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: expected an axis in [{-ndim}, {ndim}) for an array of {ndim} dimensions, got {axis}")
    return axis % ndim
