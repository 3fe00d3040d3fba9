"""Raw kernels of the functions missing from the array-API standard (numerically stable, raw arrays only).

Each takes raw backend arrays and uses only standard functions on ``namespace_of(x)``. :mod:`arrayrl.ops` wraps
them as taped primitives with hand-derived VJPs; use those (they accept raw or taped arrays).

One backend-specific accelerator lives here, behind generic code (DESIGN section 2): :func:`zero_where` on NumPy
arrays ANDs the float bits with a mask instead of calling ``np.where`` (NumPy's masked loops branch per element and
run 10-20x slower than arithmetic on random masks); the result is bit-identical to the generic
``xp.where(cond, 0, a)`` (tested in tests/autodiff/test_ad_ops.py).
"""

from __future__ import annotations

from typing import Any

import numpy as _np

from ._backend import namespace_of

__all__ = [
    "logsumexp",
    "log_softmax",
    "softmax",
    "softplus",
    "sigmoid",
    "relu",
    "elu",
    "leaky_relu",
    "silu",
    "smooth_l1",
    "zero_where",
]

_FAST_MIN_SIZE = 2048  # below this np.where is as fast as the bit trick


def zero_where(cond: Any, a: Any) -> Any:
    """``where(cond, 0, a)`` with an exact ``+0.0`` where ``cond`` is True (never ``a * mask``: NaN/inf in ``a``
    where ``cond`` holds do not leak). ``cond`` must have ``a``'s shape.

    NumPy accelerator (arrays of at least 2048 elements): ``a``'s bits AND ``-(not cond)``, bit-identical.
    """
    if type(a) is _np.ndarray and type(cond) is _np.ndarray and a.size >= _FAST_MIN_SIZE and a.shape == cond.shape:
        keep = (cond.view(_np.int8) - _np.int8(1)).astype(f"i{a.dtype.itemsize}")  # 0 where cond, all bits else
        _np.bitwise_and(a.view(keep.dtype), keep, out=keep)
        return keep.view(a.dtype)
    xp = namespace_of(a)
    return xp.where(cond, xp.zeros((), dtype=a.dtype, device=a.device), a)


def _finite_max(xp: Any, x: Any, axis: Any) -> Any:
    """``max(x, axis, keepdims=True)`` with infinite maxima replaced by 0 (so ``x - m`` never is ``inf - inf``)."""
    m = xp.max(x, axis=axis, keepdims=True)
    return xp.where(xp.isfinite(m), m, xp.zeros_like(m))


def logsumexp(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    """``log(sum(exp(x), axis))``, shifted by the maximum: exact for large |x|, ``-inf`` for all ``-inf``."""
    xp = namespace_of(x)
    m = _finite_max(xp, x, axis)
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    if not keepdims:
        out = xp.squeeze(out, axis=tuple(range(x.ndim)) if axis is None else axis)
    return out


def log_softmax(x: Any, axis: int = -1) -> Any:
    """``x - logsumexp(x, axis, keepdims=True)``."""
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x: Any, axis: int = -1) -> Any:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``."""
    xp = namespace_of(x)
    e = xp.exp(x - _finite_max(xp, x, axis))
    return e / xp.sum(e, axis=axis, keepdims=True)


def softplus(x: Any, beta: float = 1.0, threshold: float | None = None) -> Any:
    """``log(1 + exp(beta x)) / beta`` as ``max(z, 0) + log1p(exp(-|z|))`` (``z = beta x``), never overflowing.

    ``threshold``: where ``beta x > threshold`` return ``x`` (``torch.nn.functional.softplus`` uses 20); ``None``
    (default) keeps the exact value everywhere.
    """
    xp = namespace_of(x)
    z = x * beta if beta != 1.0 else x
    out = xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))
    if beta != 1.0:
        out = out / beta
    if threshold is not None:
        out = xp.where(z > threshold, x, out)
    return out


def sigmoid(x: Any) -> Any:
    """``1 / (1 + exp(-x))`` without overflow: ``e = exp(-|x|)``, ``1/(1+e)`` for ``x >= 0``, ``e/(1+e)`` else."""
    xp = namespace_of(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def relu(x: Any) -> Any:
    """``max(x, 0)`` as ``torch.relu``: ``0`` where ``x <= 0``, ``x`` elsewhere (NaN propagates)."""
    return zero_where(x <= 0, x)


def elu(x: Any, alpha: float = 1.0) -> Any:
    """``x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise."""
    xp = namespace_of(x)
    return xp.where(x > 0, x, alpha * xp.expm1(x))


def leaky_relu(x: Any, negative_slope: float = 0.01) -> Any:
    """``x`` for ``x > 0``, ``negative_slope x`` otherwise."""
    xp = namespace_of(x)
    return xp.where(x > 0, x, x * negative_slope)


def silu(x: Any) -> Any:
    """``x sigmoid(x)``."""
    return x * sigmoid(x)


def smooth_l1(x: Any, beta: float = 1.0) -> Any:
    """Huber with threshold ``beta`` (``torch.nn.functional.smooth_l1_loss``, elementwise, no reduction):
    ``0.5 x^2 / beta`` where ``|x| < beta``, ``|x| - 0.5 beta`` otherwise; ``|x|`` when ``beta == 0``."""
    xp = namespace_of(x)
    a = xp.abs(x)
    if beta == 0:
        return a
    return xp.where(a < beta, (0.5 / beta) * (x * x), a - 0.5 * beta)
