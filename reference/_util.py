"""Small input helpers shared by the reference modules (NumPy only, never arrayrl).

Everything here converts inputs to plain float64 / bool NumPy arrays and walks index sets; no
arithmetic of the algorithms lives here.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

__all__ = [
    "as_f64",
    "as_bool",
    "as_index",
    "check_same_shape",
    "normalize_axis",
    "lanes",
    "per_step",
    "softplus",
    "log_softmax_row",
]


def as_f64(name: str, x) -> np.ndarray:
    """Copy ``x`` to a float64 array; bool/int/float accepted, anything else raises ``TypeError``."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a real array, got dtype {arr.dtype}")
    return np.array(arr, dtype=np.float64, copy=True)


def as_bool(name: str, x) -> np.ndarray:
    """Copy ``x`` to a bool array. Integer arrays must hold only 0/1; floats are refused."""
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        return arr.copy()
    if arr.dtype.kind in "iu":
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{name}: integer flags must be 0 or 1")
        return arr.astype(np.bool_)
    raise TypeError(f"{name}: expected a bool array, got dtype {arr.dtype}")


def as_index(name: str, x) -> np.ndarray:
    """Copy ``x`` to an int64 array of action indices."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def check_same_shape(**named: np.ndarray) -> tuple[int, ...]:
    """Raise ``ValueError`` naming the first argument whose shape differs from the first one's."""
    items = list(named.items())
    ref_name, ref = items[0]
    for name, arr in items[1:]:
        if arr is None:
            continue
        if tuple(arr.shape) != tuple(ref.shape):
            raise ValueError(
                f"{name}: expected shape {tuple(ref.shape)} (the shape of {ref_name}), got {tuple(arr.shape)}"
            )
    return tuple(ref.shape)


def normalize_axis(axis: int, ndim: int, name: str = "time_dim") -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{name}: expected an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for an array of {ndim} dimension(s)")
    return int(axis) % ndim


def lanes(shape: tuple[int, ...], axis: int) -> Iterator[tuple]:
    """Yield one index tuple per 1-D lane along ``axis`` (``slice(None)`` at ``axis``).

    ``arr[idx]`` is then the trajectory of one batch/feature position, in time order.
    """
    other = shape[:axis] + shape[axis + 1 :]
    for idx in np.ndindex(*other):
        yield idx[:axis] + (slice(None),) + idx[axis:]


def per_step(name: str, x, shape: tuple[int, ...]) -> np.ndarray:
    """A per-step coefficient (gamma, lambda): Python/0-d scalar -> filled array; else exact ``shape``."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(shape, float(arr), dtype=np.float64)
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name}: expected a scalar or an array of shape {tuple(shape)}, got {tuple(arr.shape)}")
    return arr.copy()


def softplus(z: float) -> float:
    """log(1 + exp(z)) without overflow."""
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def log_softmax_row(row) -> list[float]:
    """log_softmax of a 1-D sequence of floats: x_i - (m + log sum_j exp(x_j - m))."""
    vals = [float(v) for v in row]
    m = max(vals)
    if m == -math.inf:
        return [-math.inf] * len(vals)
    lse = m + math.log(sum(math.exp(v - m) for v in vals))
    return [v - lse for v in vals]
