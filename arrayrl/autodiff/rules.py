"""VJP rules of the array-API primitives: the one table (:data:`arrayrl.autodiff.core.VJP_TABLE`) is filled here.

Every rule is ``rule(xp, g, ans, *args, **kwargs) -> cotangent of that argument`` written against the namespace
``xp`` it receives: the raw one in the first-order walk, the taped one in the second-order walk
(:func:`~arrayrl.autodiff.core.backward_taped`, which passes Tensors for ``g``, ``ans`` and the differentiated
arguments), so every rule here is itself differentiable (the tape's pooled operators fall back to the Python
operators on Tensors; ``prod`` needs ``cumulative_prod``, which has no VJP, and raises there). Elementwise primitives return cotangents of the broadcast shape; the backward walk sums
them back with :func:`~arrayrl.autodiff.core.sum_to_shape` and asserts the shape.

Conventions (PyTorch's, so that cross-validation is exact):

* ``maximum``/``minimum``: the gradient is split 50/50 at ties (``torch.maximum``).
* ``clip``: the gradient passes at the bounds (``torch.clamp``); with array bounds, ``min`` gets the gradient where
  ``x < min`` and ``max`` where ``x > max`` (and where ``max < min``, as ``torch.clamp``).
* ``max``/``min`` reductions send the gradient to ONE index, the first arg-max in C order over the reduced axes
  (``torch.max(x, dim)``; note that ``torch.amax`` and the all-reduce ``torch.max(x)`` split it evenly instead).
* ``where`` selects the cotangent with ``where`` (never multiplies by a mask), so a NaN in the unused branch does
  not leak.
* ``abs``'s gradient is 0 at 0, ``sqrt``'s is ``inf`` at 0, ``std``'s is 0 where the standard deviation is 0,
  ``pow(x, y)``'s w.r.t. ``y`` is 0 where ``x == 0 and y >= 0`` (all as PyTorch).
"""

from __future__ import annotations

import math
import operator
from typing import Any

from .. import _kernels, _pool

from .core import VJP_TABLE, _entry, _is_nd, defvjp, defvjp_argnum, np_zero_half, sum_to_shape
from .core import _raw_add as _add, _raw_div as _div, _raw_mul as _mul, _raw_neg as _neg, _raw_sub as _sub
from .core import _raw_eq as _eq, _raw_gt as _gt, _raw_lt as _lt
from .tuning import matmul as _mm  # xp.matmul under the BLAS thread policy on NumPy

__all__ = ["DIFFERENTIABLE", "ELEMENTWISE"]


def _reg(name: str, *rules, elementwise: bool = False) -> None:
    defvjp(_entry(name, elementwise), *rules)


# ----------------------------------------------------------------------------------------------------------- helpers


def _axes(axis: Any, ndim: int) -> tuple:
    """Normalised, sorted tuple of reduced axes (``None`` -> all)."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        return (axis % ndim,) if ndim else ()
    return tuple(sorted(a % ndim for a in axis))


def _keep_shape(shape: tuple, axes: tuple) -> tuple:
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _unreduce(xp, g, x, axis, keepdims):
    """Reshape the cotangent of a reduction to ``keepdims`` form (broadcastable against ``x``); a 0-d cotangent (a
    full reduction, ``mean(loss)``) broadcasts against ``x`` as it is."""
    if keepdims or g.ndim == 0:
        return g
    return xp.reshape(g, _keep_shape(tuple(x.shape), _axes(axis, x.ndim)))


def _count(x, axis) -> int:
    n = 1
    shape = tuple(x.shape)
    for a in _axes(axis, x.ndim):
        n *= shape[a]
    return n


def _zeros(xp, shape, like):
    return xp.zeros(shape, dtype=like.dtype, device=like.device)


def scatter_along_axis(xp, g, indices, n: int, axis: int):
    """Adjoint of ``take(x, indices, axis)`` with 1-D ``indices``: sum ``g``'s slices into an axis of size ``n``.

    Written with ``where`` against a one-hot comparison (no scatter in the standard), so a NaN in one slice of ``g``
    lands only on its own index.
    """
    gm = xp.moveaxis(g, axis, -1)  # (..., k)
    ar = xp.arange(n, dtype=indices.dtype, device=indices.device)
    onehot = indices[:, None] == ar[None, :]  # (k, n)
    out = xp.sum(xp.where(onehot, gm[..., :, None], xp.zeros((), dtype=g.dtype, device=g.device)), axis=-2)
    return xp.moveaxis(out, -1, axis)


# ------------------------------------------------------------------------------------------------------ arithmetic

# Cotangents of the elementwise rules are computed with the tape's raw operators (_add ... _neg of .core): the
# operators themselves, except that a large NumPy result goes into a pooled buffer (arrayrl._pool).
_reg("add", lambda xp, g, ans, x, y: g, lambda xp, g, ans, x, y: g, elementwise=True)
_reg("subtract", lambda xp, g, ans, x, y: g, lambda xp, g, ans, x, y: _neg(g), elementwise=True)
_reg("multiply", lambda xp, g, ans, x, y: _mul(g, y), lambda xp, g, ans, x, y: _mul(g, x), elementwise=True)
_reg(
    "divide",
    lambda xp, g, ans, x, y: _div(g, y),
    lambda xp, g, ans, x, y: _div(_mul(_neg(g), x), _mul(y, y)),
    elementwise=True,
)
_reg("negative", lambda xp, g, ans, x: _neg(g), elementwise=True)
_reg("positive", lambda xp, g, ans, x: g, elementwise=True)


def _pow_x(xp, g, ans, x, y):
    if isinstance(y, (int, float)):
        if y == 0:
            return g * 0.0
        if y == 1:
            return g
        if y == 2:
            return _mul(g, _mul(2.0, x))
        return _mul(g, y * x ** (y - 1))
    return _mul(g, xp.where(y == 0, 0.0, y * x ** (y - 1)))


def _pow_y(xp, g, ans, x, y):
    if isinstance(x, (int, float)):
        return _mul(g, _mul(ans, math.log(x))) if x != 0 else g * xp.where(y >= 0, 0.0, ans * -math.inf)
    return _mul(g, xp.where((x == 0) & (y >= 0), 0.0, ans * xp.log(x)))


_reg("pow", _pow_x, _pow_y, elementwise=True)

# ------------------------------------------------------------------------------------------------------ unary

_LN2, _LN10 = math.log(2.0), math.log(10.0)

_UNARY = {
    "abs": lambda xp, g, ans, x: _mul(g, xp.sign(x)),
    "square": lambda xp, g, ans, x: _mul(g, _mul(2.0, x)),
    "sqrt": lambda xp, g, ans, x: _div(g, _mul(2.0, ans)),
    "exp": lambda xp, g, ans, x: _mul(g, ans),
    "expm1": lambda xp, g, ans, x: _mul(g, _add(ans, 1.0)),
    "log": lambda xp, g, ans, x: _div(g, x),
    "log1p": lambda xp, g, ans, x: _div(g, _add(x, 1.0)),
    "log2": lambda xp, g, ans, x: _div(g, _mul(x, _LN2)),
    "log10": lambda xp, g, ans, x: _div(g, _mul(x, _LN10)),
    "tanh": lambda xp, g, ans, x: _mul(g, _sub(1.0, _mul(ans, ans))),
    "sin": lambda xp, g, ans, x: _mul(g, xp.cos(x)),
    "cos": lambda xp, g, ans, x: _mul(_neg(g), xp.sin(x)),
    "tan": lambda xp, g, ans, x: _mul(g, _add(1.0, _mul(ans, ans))),
    "sinh": lambda xp, g, ans, x: _mul(g, xp.cosh(x)),
    "cosh": lambda xp, g, ans, x: _mul(g, xp.sinh(x)),
    "asin": lambda xp, g, ans, x: g / xp.sqrt(1.0 - x * x),
    "acos": lambda xp, g, ans, x: -g / xp.sqrt(1.0 - x * x),
    "atan": lambda xp, g, ans, x: g / (1.0 + x * x),
    "asinh": lambda xp, g, ans, x: g / xp.sqrt(x * x + 1.0),
    "acosh": lambda xp, g, ans, x: g / xp.sqrt(x * x - 1.0),
    "atanh": lambda xp, g, ans, x: g / (1.0 - x * x),
}
for _name, _rule in _UNARY.items():
    _reg(_name, _rule, elementwise=True)

_reg(
    "atan2",
    lambda xp, g, ans, y, x: g * x / (x * x + y * y),
    lambda xp, g, ans, y, x: -g * y / (x * x + y * y),
    elementwise=True,
)
_reg("hypot", lambda xp, g, ans, x, y: g * x / ans, lambda xp, g, ans, x, y: g * y / ans, elementwise=True)
_reg(
    "logaddexp",
    lambda xp, g, ans, x, y: g * xp.exp(x - ans),
    lambda xp, g, ans, x, y: g * xp.exp(y - ans),
    elementwise=True,
)


def _winner_ct(xp, g, a, b, loses):
    """Cotangent of ``a`` in ``maximum(a, b)`` (``loses = <``) or ``minimum(a, b)`` (``loses = >``), as torch:
    ``0`` where ``a`` loses, ``g / 2`` at ties (``a == b``), ``g`` elsewhere; ``g``'s shape (the broadcast one).

    ``b`` may be a Python scalar or a 0-d constant (``maximum(x, 0.0)`` as ReLU). On NumPy arrays the two
    selections are :func:`~arrayrl.autodiff.core.np_zero_half` (a bit mask and one masked halving: no ``where`` on
    an unpredictable mask, ~10x faster); elsewhere (other backends, taped cotangents) two ``where``.
    """
    lose = loses(a, b)
    tie = _eq(a, b)
    if _is_nd(g) and _is_nd(lose) and lose.shape == g.shape:
        return np_zero_half(g, lose, tie)
    return xp.where(lose, 0.0, xp.where(tie, g * 0.5, g))


def _maxmin_rules(loses):
    """torch.maximum/minimum: full gradient to the winner, half to each at ties, as torch (:func:`_winner_ct`)."""

    def first(xp, g, ans, x, y):
        return _winner_ct(xp, g, x, y, loses)

    def second(xp, g, ans, x, y):
        return _winner_ct(xp, g, y, x, loses)

    return first, second


_reg("maximum", *_maxmin_rules(_lt), elementwise=True)
_reg("minimum", *_maxmin_rules(_gt), elementwise=True)


# clip(x, min, max) is recorded with positional bounds (the namespace wrapper moves them); torch.clamp semantics.
def _clip_x(xp, g, ans, x, lo, hi):
    if lo is None and hi is None:
        return g
    if lo is None:
        mask = x <= hi
    elif hi is None:
        mask = x >= lo
    else:
        mask = (x >= lo) & (x <= hi)
    return _keep_where(xp, mask, g)


def _clip_lo(xp, g, ans, x, lo, hi):
    mask = x < lo
    if hi is not None:
        mask = mask & (hi > lo)
    return _keep_where(xp, mask, g)


def _clip_hi(xp, g, ans, x, lo, hi):
    mask = x > hi
    if lo is not None:
        mask = mask | (hi < lo)
    return _keep_where(xp, mask, g)


def _keep_where(xp, mask, g):
    """``where(mask, g, 0)``: the cotangent selected, never multiplied by a mask (a NaN of the other branch stays
    out). NumPy: :func:`arrayrl._kernels.keep_where` (a bit mask from 2048 elements; the same values)."""
    if _is_nd(g):
        return _kernels.keep_where(mask, g)
    return xp.where(mask, g, 0.0)


_reg("clip", _clip_x, _clip_lo, _clip_hi, elementwise=True)


def _where_x(xp, g, ans, c, x, y):
    """``where(c, g, 0)`` (:func:`_keep_where`)."""
    return _keep_where(xp, c, g)


def _where_y(xp, g, ans, c, x, y):
    """``where(c, 0, g)`` (see :func:`_keep_where`)."""
    if _is_nd(g):
        return _kernels.zero_where(c, g)
    return xp.where(c, 0.0, g)


_reg("where", None, _where_x, _where_y, elementwise=True)

# ------------------------------------------------------------------------------------------------------ reductions


def _sum_x(xp, g, ans, x, axis=None, *, dtype=None, keepdims=False):
    return _kernels.expand_to(xp, _unreduce(xp, g, x, axis, keepdims), tuple(x.shape))


def _mean_x(xp, g, ans, x, axis=None, *, keepdims=False):
    n = _count(x, axis)
    return _kernels.expand_to(xp, _unreduce(xp, g, x, axis, keepdims) / n, tuple(x.shape))


def _var_x(xp, g, ans, x, axis=None, *, correction=0.0, keepdims=False):
    n = _count(x, axis)
    m = xp.mean(x, axis=axis, keepdims=True)
    return _unreduce(xp, g, x, axis, keepdims) * ((2.0 / (n - correction)) * (x - m))


def _std_x(xp, g, ans, x, axis=None, *, correction=0.0, keepdims=False):
    n = _count(x, axis)
    m = xp.mean(x, axis=axis, keepdims=True)
    s = _unreduce(xp, ans, x, axis, keepdims)
    zero = s == 0
    gs = xp.where(zero, 0.0, _unreduce(xp, g, x, axis, keepdims) / ((n - correction) * xp.where(zero, 1.0, s)))
    return gs * (x - m)


def _select_one(xp, g, ans, x, axis, keepdims, argfn):
    """Cotangent of max/min: all of ``g`` to the first arg-max (arg-min) over the reduced axes (torch max(dim))."""
    shape = tuple(x.shape)
    axes = _axes(axis, x.ndim)
    gk = _unreduce(xp, g, x, axis, keepdims)
    if len(axes) == 1:
        ax = axes[0]
        idx = argfn(x, axis=ax, keepdims=True)
        ar = xp.arange(shape[ax], dtype=idx.dtype, device=x.device)
        ar = xp.reshape(ar, tuple(shape[ax] if i == ax else 1 for i in range(x.ndim)))
        return xp.where(ar == idx, gk, 0.0)
    # several axes: move them last, flatten, select, undo
    kept = [i for i in range(x.ndim) if i not in axes]
    perm = tuple(kept) + axes
    xm = xp.permute_dims(x, perm)
    kept_shape = tuple(shape[i] for i in kept)
    n = 1
    for a in axes:
        n *= shape[a]
    xf = xp.reshape(xm, kept_shape + (n,))
    idx = argfn(xf, axis=-1, keepdims=True)
    ar = xp.arange(n, dtype=idx.dtype, device=x.device)
    gf = xp.reshape(gk, kept_shape + (1,))
    sel = xp.where(ar == idx, gf, 0.0)
    sel = xp.reshape(sel, kept_shape + tuple(shape[a] for a in axes))
    inv = [0] * x.ndim
    for i, p in enumerate(perm):
        inv[p] = i
    return xp.permute_dims(sel, tuple(inv))


def _max_x(xp, g, ans, x, axis=None, *, keepdims=False):
    return _select_one(xp, g, ans, x, axis, keepdims, xp.argmax)


def _min_x(xp, g, ans, x, axis=None, *, keepdims=False):
    return _select_one(xp, g, ans, x, axis, keepdims, xp.argmin)


def _prod_x(xp, g, ans, x, axis=None, *, dtype=None, keepdims=False):
    """Product of all the other factors, by exclusive cumulative products from both sides (exact with zeros)."""
    shape = tuple(x.shape)
    axes = _axes(axis, x.ndim)
    kept = [i for i in range(x.ndim) if i not in axes]
    perm = tuple(kept) + axes
    kept_shape = tuple(shape[i] for i in kept)
    n = 1
    for a in axes:
        n *= shape[a]
    xf = xp.reshape(xp.permute_dims(x, perm), kept_shape + (n,))
    if dtype is not None:
        xf = xp.astype(xf, dtype)
    left = xp.cumulative_prod(xf, axis=-1, include_initial=True)[..., :-1]
    right = xp.flip(xp.cumulative_prod(xp.flip(xf, axis=-1), axis=-1, include_initial=True)[..., :-1], axis=-1)
    gf = xp.reshape(_unreduce(xp, g, x, axis, keepdims), kept_shape + (1,))
    out = xp.reshape(gf * (left * right), kept_shape + tuple(shape[a] for a in axes))
    inv = [0] * x.ndim
    for i, p in enumerate(perm):
        inv[p] = i
    return xp.permute_dims(out, tuple(inv))


def _cumsum_x(xp, g, ans, x, axis=None, *, dtype=None, include_initial=False):
    ax = 0 if axis is None else axis % x.ndim
    if include_initial:
        g = g[(slice(None),) * ax + (slice(1, None), ...)]
    return xp.flip(xp.cumulative_sum(xp.flip(g, axis=ax), axis=ax), axis=ax)


_reg("sum", _sum_x)
_reg("mean", _mean_x)
_reg("var", _var_x)
_reg("std", _std_x)
_reg("max", _max_x)
_reg("min", _min_x)
_reg("prod", _prod_x)
_reg("cumulative_sum", _cumsum_x)


# ------------------------------------------------------------------------------------------------------ linear algebra


def _matmul_a(xp, g, ans, a, b):
    if a.ndim == 2 and b.ndim == 2:
        return _mm(xp, g, b.mT)
    if a.ndim >= 3 and b.ndim >= 2 and b.shape[-1] == 1 and tuple(g.shape) == tuple(a.shape[:-1]) + (1,):
        # (..., m, 1) @ (..., 1, k): an outer product per batch item, as a broadcast multiply (batched matmuls of
        # tiny matrices are slow on CPU)
        return g * b.mT
    if b.ndim == 1:
        if a.ndim == 1:
            return g * b
        return sum_to_shape(xp, g[..., :, None] * b, tuple(a.shape))  # (..., n, k)
    if a.ndim == 1:
        r = _mm(xp, g[..., None, :], b.mT)[..., 0, :]  # (..., k)
        return sum_to_shape(xp, r, tuple(a.shape))
    return sum_to_shape(xp, _mm(xp, g, b.mT), tuple(a.shape))


def _matmul_b(xp, g, ans, a, b):
    if a.ndim == 2 and b.ndim == 2:
        return _mm(xp, a.mT, g)
    if b.ndim >= 3 and a.ndim >= 2 and a.shape[-2] == 1 and tuple(g.shape[:-2]) == tuple(b.shape[:-2]):
        # (..., k, 1) @ (..., 1, n): an outer product per batch item, as a broadcast multiply
        return sum_to_shape(xp, a.mT * g, tuple(b.shape))
    if a.ndim == 1:
        if b.ndim == 1:
            return g * a
        return sum_to_shape(xp, a[:, None] * g[..., None, :], tuple(b.shape))  # (..., k, m)
    if b.ndim == 1:
        r = _mm(xp, a.mT, g[..., :, None])[..., 0]
        return sum_to_shape(xp, r, tuple(b.shape))
    return sum_to_shape(xp, _mm(xp, a.mT, g), tuple(b.shape))


_reg("matmul", _matmul_a, _matmul_b)


def _vector_norm_x(xp, g, ans, x, axis=None, *, keepdims=False, ord=2):
    gk = _unreduce(xp, g, x, axis, keepdims)
    nk = _unreduce(xp, ans, x, axis, keepdims)
    zero = nk == 0
    return x * xp.where(zero, 0.0, gk / xp.where(zero, 1.0, nk))  # torch: 0 at the origin


_reg("vector_norm", _vector_norm_x)

# ------------------------------------------------------------------------------------------------------ shapes


def _reshape_back(xp, g, ans, x, *args, **kw):
    return xp.reshape(g, tuple(x.shape))


for _name in ("reshape", "expand_dims", "squeeze"):
    _reg(_name, _reshape_back)


def _permute_x(xp, g, ans, x, axes):
    inv = [0] * len(axes)
    for i, a in enumerate(axes):
        inv[a % len(axes)] = i
    return xp.permute_dims(g, tuple(inv))


_reg("permute_dims", _permute_x)
_reg("matrix_transpose", lambda xp, g, ans, x: g.mT)
_reg("broadcast_to", lambda xp, g, ans, x, shape: g, elementwise=True)
_reg("flip", lambda xp, g, ans, x, axis=None: xp.flip(g, axis=axis))
_reg("moveaxis", lambda xp, g, ans, x, source, destination: xp.moveaxis(g, destination, source))
_reg("astype", lambda xp, g, ans, x, dtype, /, *, copy=True, device=None: g)
_reg("to_device", lambda xp, g, ans, x, device: g.to_device(x.device))


def _neg_shift(shift):
    return tuple(-s for s in shift) if isinstance(shift, tuple) else -shift


_reg("roll", lambda xp, g, ans, x, /, shift, *, axis=None: xp.roll(g, _neg_shift(shift), axis=axis))


def _concat_rule(i, xp, g, ans, args, kw):
    axis = kw.get("axis", 0)
    if axis is None:
        start = sum(_size(a) for a in args[:i])
        return xp.reshape(g[start : start + _size(args[i])], tuple(args[i].shape))
    ax = axis % ans.ndim
    start = sum(a.shape[ax] for a in args[:i])
    return g[(slice(None),) * ax + (slice(start, start + args[i].shape[ax]), ...)]


def _size(a) -> int:
    n = 1
    for s in a.shape:
        n *= s
    return n


def _stack_rule(i, xp, g, ans, args, kw):
    ax = kw.get("axis", 0) % ans.ndim
    return g[(slice(None),) * ax + (i, ...)]


defvjp_argnum(_entry("concat"), _concat_rule)
defvjp_argnum(_entry("stack"), _stack_rule)


# ------------------------------------------------------------------------------------------------------ gathers


def _take_along_axis_x(xp, g, ans, x, indices, /, *, axis=-1):
    if _kernels._last_axis_single(x, indices, axis) and tuple(g.shape) == tuple(indices.shape):
        return _kernels.take_along_axis_vjp(xp, g, x, indices, axis)  # NumPy accelerator, same values
    ax = axis % x.ndim
    n = x.shape[ax]
    idx = indices % n  # negative indices count from the end (remainder takes the sign of n)
    k = idx.shape[ax]
    if k == 1:
        shape = [1] * x.ndim
        shape[ax] = n
        ar = xp.reshape(xp.arange(n, dtype=idx.dtype, device=idx.device), tuple(shape))
        out = xp.where(ar == idx, g, 0.0)
    else:
        gm = xp.moveaxis(g, ax, -1)[..., :, None]  # (..., k, 1)
        im = xp.moveaxis(idx, ax, -1)[..., :, None]
        ar = xp.arange(n, dtype=idx.dtype, device=idx.device)
        out = xp.moveaxis(xp.sum(xp.where(im == ar, gm, 0.0), axis=-2), -1, ax)
    return sum_to_shape(xp, out, tuple(x.shape))


def _take_x(xp, g, ans, x, indices, /, *, axis=None):
    if axis is None:
        if x.ndim != 1:
            raise ValueError("take: axis is required for arrays of more than one dimension")
        axis = 0
    ax = axis % x.ndim
    n = x.shape[ax]
    return scatter_along_axis(xp, g, indices % n, n, ax)


_reg("take_along_axis", _take_along_axis_x, None)
_reg("take", _take_x, None)


def _normalize_key(key, ndim):
    """Basic index -> list of per-input-axis items (int or slice) and the list of output-axis items (None kept)."""
    if not isinstance(key, tuple):
        key = (key,)
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    out = []
    seen_ellipsis = False
    for k in key:
        if k is Ellipsis:
            if seen_ellipsis:
                raise IndexError("an index can only have a single ellipsis")
            seen_ellipsis = True
            out.extend([slice(None)] * (ndim - n_real))
        else:
            out.append(k)
    if not seen_ellipsis:
        out.extend([slice(None)] * (ndim - n_real))
    return out


def _pad_axis(xp, g, ax: int, lo: int, hi: int, n: int):
    """``g`` zero-padded along ``ax`` to size ``n``, occupying ``[lo, hi)``: ``concat([0...], g, [0...])``.

    NumPy: written into a pooled buffer (:func:`arrayrl._pool.empty`: the pads filled with ``+0.0``, ``g``
    copied between them; the same values as the concat)."""
    if lo == 0 and hi == n:
        return g
    shape = tuple(g.shape)
    if _is_nd(g):
        out = _pool.empty(shape[:ax] + (n,) + shape[ax + 1 :], g.dtype)
        pre = (slice(None),) * ax
        out[pre + (slice(0, lo),)] = 0
        out[pre + (slice(lo, hi),)] = g
        out[pre + (slice(hi, n),)] = 0
        return out
    parts = []
    if lo > 0:
        parts.append(_zeros(xp, shape[:ax] + (lo,) + shape[ax + 1 :], g))
    parts.append(g)
    if hi < n:
        parts.append(_zeros(xp, shape[:ax] + (n - hi,) + shape[ax + 1 :], g))
    return xp.concat(parts, axis=ax)


def _getitem_x(xp, g, ans, x, key):
    shape = tuple(x.shape)
    items = _normalize_key(key, x.ndim)
    # 1) reshape g so that it has one axis per input axis (drop None axes, re-insert integer-indexed axes)
    gshape = tuple(g.shape)
    new_shape = []
    gpos = 0
    for k in items:
        if k is None:
            gpos += 1
        elif isinstance(k, slice):
            new_shape.append(gshape[gpos])
            gpos += 1
        else:
            new_shape.append(1)
    g = xp.reshape(g, tuple(new_shape))
    # 2) scatter each indexed axis back into its full size
    ax = 0
    for k in items:
        if k is None:
            continue
        n = shape[ax]
        if isinstance(k, slice):
            r = range(*k.indices(n))
        else:
            i = operator.index(k)
            i = i + n if i < 0 else i
            r = range(i, i + 1)
        if len(r) != n or (len(r) > 1 and r.step != 1):
            if len(r) == 0:
                g = _zeros(xp, tuple(g.shape[:ax]) + (n,) + tuple(g.shape[ax + 1 :]), g)
            elif len(r) == 1 or r.step == 1:
                g = _pad_axis(xp, g, ax, r[0], r[-1] + 1, n)
            else:
                idx = xp.asarray(list(r), device=g.device)
                g = scatter_along_axis(xp, g, idx, n, ax)
        ax += 1
    return g


_reg("getitem", _getitem_x)

#: names of the standard functions recorded as primitives by the taped namespace
DIFFERENTIABLE = tuple(
    ["add", "subtract", "multiply", "divide", "pow", "negative", "positive"]
    + list(_UNARY)
    + ["atan2", "hypot", "logaddexp", "maximum", "minimum", "where"]
    + ["sum", "mean", "var", "std", "max", "min", "prod", "cumulative_sum", "matmul"]
    + ["reshape", "expand_dims", "squeeze", "permute_dims", "matrix_transpose", "broadcast_to", "flip", "moveaxis"]
    + ["roll", "take_along_axis", "take"]
)
ELEMENTWISE = frozenset(n for n, e in VJP_TABLE.items() if e.elementwise)

_reg("tril", lambda xp, g, ans, x, /, *, k=0: xp.tril(g, k=k))
_reg("triu", lambda xp, g, ans, x, /, *, k=0: xp.triu(g, k=k))
