"""Raw kernels of the functions missing from the array-API standard (numerically stable, raw arrays only).

Each takes raw backend arrays and uses only standard functions on ``namespace_of(x)``. :mod:`arrayrl.ops` wraps
them as taped primitives with hand-derived VJPs; use those (they accept raw or taped arrays).

Backend-specific accelerators live here, behind generic code (DESIGN section 2), each tested against it:

* :func:`zero_where` on NumPy arrays ANDs the float bits with a mask instead of calling ``np.where`` (NumPy's masked
  loops branch per element and run 10-20x slower than arithmetic on random masks); the result is bit-identical to
  the generic ``xp.where(cond, 0, a)`` (tests/autodiff/test_ad_ops.py);
* :func:`linear` on NumPy arrays adds the bias and applies the activation in place on the fresh matmul product
  (no temporaries), adds the bias of narrow tall outputs on a wider view (:func:`_add_rows_np`) and skips the
  namespace lookup; :func:`relu`/:func:`elu`/:func:`elu_slope` compare against a cached zero array (NumPy's
  ``maximum``/``minimum`` against a scalar take a non-SIMD loop, 4x slower), and float32 :func:`elu` uses
  ``exp(m) - 1`` (NumPy's float32 ``expm1`` has no SIMD loop); :func:`take_along_axis` and the taped NumPy
  namespace's ``sum``/``mean``/``reshape`` (:data:`NUMPY_KERNELS`) skip NumPy's Python-level wrappers;
  :func:`expand_to` fills instead of broadcasting. Same values as the generic code (bit-identical except float32
  ``elu``, within 1.2e-7), tested in tests/autodiff/test_ad_fastpaths.py;
* :func:`gru_gates_np`/:func:`gru_gates_vjp_np` and :func:`gate_silu_np`/:func:`gate_silu_vjp_np` (dispatched to by
  :mod:`arrayrl.nn.recurrent` when :func:`numpy_floats` holds) run the generic tanh-form gates' operations in the
  same order, in place on pooled buffers (no fresh temporary per operation: the DreamerV3 imagination's page
  faults); bit-identical, tested in tests/nn/test_gru_kernels.py.

NumPy's elementwise loops are fast only on same-shape contiguous operands: broadcasting a scalar or a row takes
slower loops (2-5x), and ``np.where`` on random masks is 20-40x slower than arithmetic. The kernels avoid both.
"""

from __future__ import annotations

from typing import Any

import numpy as _np

from . import _pool
from ._backend import namespace_of

__all__ = [
    "logsumexp",
    "log_softmax",
    "softmax",
    "softplus",
    "sigmoid",
    "relu",
    "elu",
    "elu_slope",
    "leaky_relu",
    "silu",
    "smooth_l1",
    "zero_where",
    "expand_to",
    "ones_vector",
    "take_along_axis",
    "take_along_axis_vjp",
    "linear",
    "LINEAR_ACTIVATIONS",
    "numpy_floats",
    "gate_silu_np",
    "gate_silu_vjp_np",
    "gru_gates_np",
    "gru_gates_vjp_np",
]

_FAST_MIN_SIZE = 2048  # below this np.where is as fast as the bit trick

# dtype -> a read-only 1-D NumPy zero buffer, grown to the largest request (one per dtype). NumPy's maximum/minimum
# against a scalar or a broadcast operand take a slow non-SIMD loop (4x slower than against a same-shape array).
_ZEROS: dict = {}


_ONES: dict = {}


def _cached(cache: dict, fill: Any, n: int, dtype: Any) -> Any:
    buf = cache.get(dtype)
    if buf is None or buf.size < n:
        buf = _np.full(max(n, 2 * buf.size if buf is not None else 0), fill, dtype=dtype)
        buf.flags.writeable = False
        cache[dtype] = buf
    return buf[:n]


def _np_zeros_like(a: Any) -> Any:
    """A read-only array of zeros with ``a``'s shape and dtype (a view of the cached buffer: no allocation)."""
    return _cached(_ZEROS, 0, a.size, a.dtype).reshape(a.shape)


def ones_vector(xp: Any, n: int, like: Any) -> Any:
    """``ones((n,))`` with ``like``'s dtype and device (NumPy: a read-only view of a cached buffer)."""
    if type(like) is _np.ndarray:
        return _cached(_ONES, 1, n, like.dtype)
    return xp.ones((n,), dtype=like.dtype, device=like.device)


def _bit_masked(cond: Any, a: Any) -> bool:
    """The bit-mask selections apply: NumPy arrays, a boolean ``cond`` of ``a``'s shape."""
    return type(a) is _np.ndarray and type(cond) is _np.ndarray and a.shape == cond.shape and cond.dtype == _np.bool_


def zero_where(cond: Any, a: Any) -> Any:
    """``where(cond, 0, a)`` with an exact ``+0.0`` where ``cond`` is True (never ``a * mask``: NaN/inf in ``a``
    where ``cond`` holds do not leak). ``cond`` must have ``a``'s shape.

    NumPy accelerator (a boolean ``cond``): from 2048 elements ``a``'s bits AND ``-(not cond)`` (bit-identical),
    below it ``np.where`` itself (a call costs more than the loop there)."""
    if _bit_masked(cond, a):
        if a.size < _FAST_MIN_SIZE:
            return _np.where(cond, 0.0, a)
        keep = _np.subtract(cond.view(_np.int8), _np.int8(1), out=_pool.empty(a.shape, f"i{a.dtype.itemsize}"))  # 0 where cond, all bits else
        _np.bitwise_and(a.view(keep.dtype), keep, out=keep)
        return keep.view(a.dtype)
    xp = namespace_of(a)
    return xp.where(cond, xp.zeros((), dtype=a.dtype, device=a.device), a)


def keep_where(cond: Any, a: Any) -> Any:
    """``where(cond, a, 0)``: :func:`zero_where` with the condition the other way round, in one pass on NumPy
    (``a``'s bits AND ``-cond``, no negated mask built first)."""
    if _bit_masked(cond, a):
        if a.size < _FAST_MIN_SIZE:
            return _np.where(cond, a, 0.0)
        keep = _np.negative(cond.view(_np.int8), out=_pool.empty(a.shape, f"i{a.dtype.itemsize}"))  # all bits where cond
        _np.bitwise_and(a.view(keep.dtype), keep, out=keep)
        return keep.view(a.dtype)
    xp = namespace_of(a)
    return xp.where(cond, a, xp.zeros((), dtype=a.dtype, device=a.device))


def expand_to(xp: Any, a: Any, shape: tuple) -> Any:
    """``broadcast_to(a, shape)`` for the tape's reduction VJPs (``a`` has the keepdims shape).

    NumPy accelerator: a filled fresh array instead of a broadcast view (``np.broadcast_to`` is a slow Python-level
    function, and NumPy's arithmetic on broadcast operands takes slow non-SIMD loops downstream); same values."""
    if type(a) is _np.ndarray or isinstance(a, _np.generic):
        out = _pool.empty(shape, a.dtype)
        out[...] = a
        return out
    return xp.broadcast_to(a, shape)


def int_range(x: Any) -> tuple[int, int]:
    """``(int(min(x)), int(max(x)))`` of a non-empty integer array (the index-range check of every categorical
    gather). NumPy accelerator: the ufunc reductions themselves (``np.min``/``np.max`` add ~2 us of dispatch each)."""
    if type(x) is _np.ndarray:
        return int(_np.minimum.reduce(x, axis=None)), int(_np.maximum.reduce(x, axis=None))
    xp = namespace_of(x)
    return int(xp.min(x)), int(xp.max(x))


def _last_axis_single(x: Any, indices: Any, axis: int) -> bool:
    """NumPy arrays, a gather along the last axis of one index per row, no broadcasting (the fast case)."""
    return (
        type(x) is _np.ndarray
        and type(indices) is _np.ndarray
        and x.ndim == indices.ndim
        and x.ndim >= 1
        and axis % x.ndim == x.ndim - 1
        and indices.shape[-1] == 1
        and x.shape[:-1] == indices.shape[:-1]
        and x.shape[-1] > 0
    )


def take_along_axis(x: Any, indices: Any, axis: int = -1) -> Any:
    """``take_along_axis(x, indices, axis)`` of ``x``'s namespace.

    NumPy accelerator (one index per row along the last axis, the Q(s, a) gather): fancy indexing on the
    ``[rows, n]`` view (``np.take_along_axis`` builds its index grids in Python); same values and errors."""
    if _last_axis_single(x, indices, axis):
        n = x.shape[-1]
        rows = x.size // n
        return x.reshape(rows, n)[_np.arange(rows), indices.reshape(rows)].reshape(indices.shape)
    return namespace_of(x).take_along_axis(x, indices, axis=axis)


def take_along_axis_vjp(xp: Any, g: Any, x: Any, indices: Any, axis: int) -> Any:
    """The cotangent of ``x`` for :func:`take_along_axis` when :func:`_last_axis_single` holds (NumPy): ``g``
    scattered into zeros at the gathered positions (one per row, so no accumulation), exactly
    ``where(arange(n) == idx, g, 0)``."""
    n = x.shape[-1]
    rows = x.size // n
    out = _pool.empty(x.shape, g.dtype)
    out.fill(0)
    out.reshape(rows, n)[_np.arange(rows), indices.reshape(rows)] = g.reshape(rows)
    return out


_add_reduce: Any = _np.add.reduce  # (typed Any: numpy's stubs have no overload for a runtime keepdims flag)


def _np_sum(x: Any, axis: Any = None, *args: Any, dtype: Any = None, keepdims: bool = False, **kw: Any) -> Any:
    """``np.sum`` without its Python-level dispatch (``np.add.reduce``: the same reduction, same values)."""
    if args or kw or type(x) is not _np.ndarray or (dtype is None and x.dtype.kind in "biu"):
        return _np.sum(x, axis, *args, dtype=dtype, keepdims=keepdims, **kw)  # (integer promotion of np.sum)
    return _add_reduce(x, axis=axis, dtype=dtype, keepdims=keepdims)


def _np_mean(x: Any, axis: Any = None, *args: Any, keepdims: bool = False, **kw: Any) -> Any:
    """``np.mean`` of a float32/float64 array without its Python-level dispatch: the sum (``np.add.reduce``, as
    ``np.mean`` does) divided by the count; the same values."""
    if args or kw or type(x) is not _np.ndarray or x.dtype.kind != "f" or x.dtype.itemsize < 4:
        return _np.mean(x, axis, *args, keepdims=keepdims, **kw)
    if axis is None:
        n = x.size
    else:
        n = 1
        for a in (axis,) if isinstance(axis, int) else axis:
            n *= x.shape[a]
    return _add_reduce(x, axis=axis, keepdims=keepdims) / n


#: raw functions used instead of NumPy's own by the taped NumPy namespace (same values; tested)
NUMPY_KERNELS = {"take_along_axis": lambda x, indices, /, *, axis=-1: take_along_axis(x, indices, axis),
                 "sum": _np_sum, "mean": _np_mean,
                 "reshape": lambda x, /, shape, *, copy=None: x.reshape(shape) if copy is None else _np.reshape(x, shape, copy=copy)}


_SHORT_AXIS = 64  # the pairwise maximum below beats np.max over a last axis up to about this length


def _np_max_last(x: Any) -> Any:
    """``np.max(x, axis=-1, keepdims=True)`` for a NumPy ``x`` whose last axis has ``2..64`` entries: pairwise
    ``np.maximum`` of the two halves (the odd column folded into the first), ``ceil(log2 K)`` whole-array calls.

    ``np.max`` over a short last axis runs its reduction loop once per row (~4.5x slower than a sum on
    ``[256, 4, 16]``); the maximum is exact in any order and NaN propagates through ``np.maximum``, so the values
    are the same."""
    m = x
    k = m.shape[-1]
    while k > 1:
        h = k // 2
        top = _np.maximum(m[..., :h], m[..., h:2 * h], out=_pool.empty(m.shape[:-1] + (h,), m.dtype))
        if k % 2:
            _np.maximum(top[..., :1], m[..., 2 * h:], out=top[..., :1])
        m, k = top, h
    return m


def _finite_max(xp: Any, x: Any, axis: Any) -> Any:
    """``max(x, axis, keepdims=True)`` with infinite maxima replaced by 0 (so ``x - m`` never is ``inf - inf``).

    NumPy accelerator: a short last axis (the logits of a softmax) takes :func:`_np_max_last` (same values)."""
    if type(x) is _np.ndarray and x.ndim and (axis == -1 or axis == x.ndim - 1) and 2 <= x.shape[-1] <= _SHORT_AXIS:
        m = _np_max_last(x)
    else:
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
    m = _finite_max(xp, x, axis)
    if type(x) is _np.ndarray and type(m) is _np.ndarray and x.dtype == m.dtype and x.dtype.kind == "f":  # pooled
        e = _np.subtract(x, m, out=_pool.empty(x.shape, x.dtype))
        _np.exp(e, out=e)
        return _np.divide(e, _np_sum(e, axis=axis, keepdims=True), out=e)
    e = xp.exp(x - m)
    return e / xp.sum(e, axis=axis, keepdims=True)


def softplus(x: Any, beta: float = 1.0, threshold: float | None = None) -> Any:
    """``log(1 + exp(beta x)) / beta`` as ``max(z, 0) + log1p(exp(-|z|))`` (``z = beta x``), never overflowing.

    ``threshold``: where ``beta x > threshold`` return ``x`` (``torch.nn.functional.softplus`` uses 20); ``None``
    (default) keeps the exact value everywhere.
    """
    if type(x) is _np.ndarray and x.dtype.kind == "f":
        return _np_softplus(x, beta, threshold)
    xp = namespace_of(x)
    z = x * beta if beta != 1.0 else x
    out = xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))
    if beta != 1.0:
        out = out / beta
    if threshold is not None:
        out = xp.where(z > threshold, x, out)
    return out


def _np_softplus(x: Any, beta: float, threshold: float | None) -> Any:
    """:func:`softplus` of a floating NumPy ``x``: the same steps in place on pooled buffers (``max(z, 0)``
    against the cached zeros, the same sum in the same operand order; the threshold's ``where`` as a masked copy
    of ``x``), bit-identical (NaN payloads included)."""
    z = x if beta == 1.0 else _np.multiply(x, beta, out=_pool.empty(x.shape, x.dtype))
    out = _np.abs(z, out=_pool.empty(x.shape, x.dtype))
    _np.negative(out, out=out)
    _np.exp(out, out=out)
    _np.log1p(out, out=out)
    _np.add(_np.maximum(z, _np_zeros_like(z), out=_pool.empty(x.shape, x.dtype)), out, out=out)
    if beta != 1.0:
        _np.divide(out, beta, out=out)
    if threshold is not None:
        _np.copyto(out, x, where=_np.greater(z, threshold, out=_pool.empty(x.shape, _np.bool_)))
    return out


def sigmoid(x: Any) -> Any:
    """``1 / (1 + exp(-x))`` without overflow: ``e = exp(-|x|)``, ``1/(1+e)`` for ``x >= 0``, ``e/(1+e)`` else.

    Branch-free (no ``where``, whose NumPy loop branches per element: 5x slower on ``[256, 128]``): the numerator
    is ``max(e, [x >= 0])`` (``e <= 1``: it is 1 for ``x >= 0`` and ``e`` otherwise), so the values are exactly
    those of the two branches; NaN propagates. NumPy: the same steps in place on two buffers."""
    if type(x) is _np.ndarray and x.dtype.kind == "f":
        e = _np.abs(x, out=_pool.empty(x.shape, x.dtype))
        _np.negative(e, out=e)
        _np.exp(e, out=e)
        num = _np.greater_equal(x, _np_zeros_like(x), out=_pool.empty(x.shape, x.dtype))  # [x >= 0] as 0.0/1.0
        _np.maximum(e, num, out=num)
        e += 1.0
        return _np.divide(num, e, out=num)
    xp = namespace_of(x)
    e = xp.exp(-xp.abs(x))
    return xp.maximum(e, xp.astype(x >= 0, e.dtype)) / (1.0 + e)


def relu(x: Any) -> Any:
    """``max(x, 0)`` as ``torch.relu``: ``0`` where ``x <= 0``, ``x`` elsewhere (NaN propagates).

    NumPy accelerator (arrays of at least 2048 elements): ``np.maximum`` against a cached zero array (NaN propagates
    too; 3x faster than the bit trick of :func:`zero_where` and than ``np.maximum(x, 0.0)``)."""
    if type(x) is _np.ndarray and x.size >= _FAST_MIN_SIZE:
        return _np.maximum(x, _np_zeros_like(x))
    return zero_where(x <= 0, x)


def elu(x: Any, alpha: float = 1.0) -> Any:
    """``x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise, as ``max(x, 0) + alpha expm1(min(x, 0))`` (one of the
    two terms is exactly 0; no ``where``, whose NumPy loop branches per element).

    NumPy accelerator: NumPy's float32 ``expm1`` has no SIMD loop (6x slower than ``exp``), so float32 NumPy arrays
    use ``exp(m) - 1`` (absolute error below 1.2e-7, one float32 ulp of 1).
    """
    if type(x) is _np.ndarray and x.dtype == _np.float32:
        z = _np_zeros_like(x)
        e = _np.minimum(x, z, out=_pool.empty(x.shape, x.dtype))
        _np.exp(e, out=e)
        e -= 1.0
        if alpha != 1.0:
            e *= alpha
        e += _np.maximum(x, z, out=_pool.empty(x.shape, x.dtype))
        return e
    xp = namespace_of(x)
    e = xp.expm1(xp.minimum(x, 0.0))
    return xp.maximum(x, 0.0) + (alpha * e if alpha != 1.0 else e)


def elu_slope(x: Any, alpha: float = 1.0) -> Any:
    """``d elu / dx``: ``1`` for ``x > 0``, ``alpha exp(x)`` otherwise (torch's ``elu_backward``; ``alpha`` at 0).

    For ``0 < alpha <= 1`` written without ``where`` (NumPy's masked loop branches per element): since
    ``alpha exp(min(x, 0)) <= 1`` it is ``max(alpha exp(min(x, 0)), [x > 0])``, exactly the same values. NumPy,
    in pooled buffers: for ``alpha == 1`` that is ``exp(min(x, 0))`` itself (``exp(0) == 1`` exactly where
    ``x >= 0``; NaN stays NaN), no mask needed.
    """
    xp = namespace_of(x)
    if 0.0 < alpha <= 1.0:
        if type(x) is _np.ndarray and x.dtype.kind == "f":
            z = _np_zeros_like(x)
            e = _np.minimum(x, z, out=_pool.empty(x.shape, x.dtype))
            _np.exp(e, out=e)
            if alpha == 1.0:
                return e
            e *= alpha
            return _np.maximum(e, _np.greater(x, z, out=_pool.empty(x.shape, x.dtype)), out=e)
        return xp.maximum(alpha * xp.exp(xp.minimum(x, 0.0)), xp.astype(x > 0, x.dtype))
    return xp.where(x > 0, xp.ones_like(x), alpha * xp.exp(x))


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


# ------------------------------------------------------------------------------------------------------------ linear

#: activations that :func:`linear` can fuse (``None``: none)
LINEAR_ACTIVATIONS = (None, "relu", "tanh")


def _add_rows_np(y: Any, b: Any) -> None:
    """``y += b`` in place for a C-contiguous ``[M, o]`` NumPy ``y`` and a bias ``[o]``.

    NumPy's broadcast add runs its inner loop once per row, so narrow rows (``o <= 64``) of a tall ``y`` are slow;
    the same additions done on the ``[M / r, r o]`` view with the bias tiled ``r`` times run 1.3-7x faster (from
    about 2048 rows; below, the tiling costs more than it saves)."""
    m, o = y.shape
    if 2 <= o <= 64 and m >= 2048 and y.flags.c_contiguous:
        r = 512 // o
        while m % r:
            r //= 2
        if r > 1:
            yy = y.reshape(m // r, r * o)
            _np.add(yy, _np.concatenate([b] * r), out=yy)
            return
    _np.add(y, b, out=y)


def _linear_generic(x: Any, weight: Any, bias: Any = None, activation: str | None = None) -> Any:
    xp = namespace_of(x, weight, bias)
    y = xp.matmul(x, weight.mT)
    if bias is not None:
        y = y + (xp.expand_dims(bias, axis=-2) if weight.ndim == 3 else bias)
    if activation == "relu":
        return relu(y)
    if activation == "tanh":
        return xp.tanh(y)
    return y


def linear(x: Any, weight: Any, bias: Any = None, activation: str | None = None) -> Any:
    """``act(x @ weight.mT + bias)``: a dense layer in torch's layout, optionally followed by an activation.

    Shapes: ``weight [out, in]`` with ``x [*B, in]`` gives ``[*B, out]``; an ensemble ``weight [N, out, in]``
    (``bias [N, out]``) with ``x [M, in]`` (shared) or ``[N, M, in]`` gives ``[N, M, out]``.
    ``activation``: ``None``, ``"relu"`` (:func:`relu`) or ``"tanh"``.

    NumPy accelerator: the bias add and the activation run in place on the matmul's fresh output.
    """
    if (
        type(x) is _np.ndarray
        and type(weight) is _np.ndarray
        and (bias is None or (type(bias) is _np.ndarray and bias.dtype == weight.dtype))
        and x.dtype == weight.dtype
    ):
        y = _pool.matmul(x, weight.mT)
        if bias is not None:
            if y.ndim == 2:
                _add_rows_np(y, bias)
            else:
                _np.add(y, bias if weight.ndim == 2 else bias[:, None, :], out=y)
        if activation == "relu":
            _np.maximum(y, _np_zeros_like(y), out=y)  # NaN propagates, as relu's zero_where(y <= 0, y)
        elif activation == "tanh":
            _np.tanh(y, out=y)
        return y
    return _linear_generic(x, weight, bias, activation)


# ------------------------------------------------------------------------------------------------ recurrent gates
# NumPy kernels of arrayrl.nn.recurrent's tanh-form gates (DreamerV3's GRU and silu): the generic code's operations in
# the same order (``a * b`` as ``multiply(a, b)``, ``1 - a`` as ``subtract(1, a)``...), written with ``out=`` into
# pooled buffers instead of a fresh temporary per operation; bit-identical (tests/nn/test_gru_kernels.py).


def numpy_floats(*arrays: Any) -> bool:
    """Whether all ``arrays`` are raw NumPy arrays of one floating dtype (the case of the kernels below; taped
    values under second order and other backends keep the generic code)."""
    dtype = arrays[0].dtype if type(arrays[0]) is _np.ndarray else None
    return dtype is not None and dtype.kind == "f" and all(type(a) is _np.ndarray and a.dtype == dtype
                                                          for a in arrays)


def _sigmoid_tanh_np(x: Any, out: Any) -> Any:
    """``0.5 tanh(0.5 x) + 0.5`` into ``out`` (``x``'s shape)."""
    _np.multiply(x, 0.5, out=out)
    _np.tanh(out, out=out)
    _np.multiply(out, 0.5, out=out)
    return _np.add(out, 0.5, out=out)


def gate_silu_np(x: Any) -> Any:
    """``x (0.5 tanh(0.5 x) + 0.5)`` (``arrayrl.nn.recurrent.gate_silu``) in one pooled buffer."""
    out = _sigmoid_tanh_np(x, _pool.empty(x.shape, x.dtype))
    return _np.multiply(x, out, out=out)


def gate_silu_vjp_np(g: Any, x: Any) -> Any:
    """``g (s (1 + x (1 - s)))`` with ``s = 0.5 tanh(0.5 x) + 0.5``: two pooled buffers."""
    s = _sigmoid_tanh_np(x, _pool.empty(x.shape, x.dtype))
    t = _np.subtract(1.0, s, out=_pool.empty(x.shape, x.dtype))
    _np.multiply(x, t, out=t)
    _np.add(1.0, t, out=t)
    _np.multiply(s, t, out=t)
    return _np.multiply(g, t, out=t)


def _gru_rn_np(gi: Any, gh: Any, h: int) -> tuple:
    """``rz = sigmoid(gi[:, :2H] + gh[:, :2H])`` ``[M, 2H]`` and ``n = tanh(gi[:, 2H:] + r gh[:, 2H:])`` ``[M, H]``
    in two pooled buffers."""
    lead = gi.shape[:-1]
    rz = _np.add(gi[..., :2 * h], gh[..., :2 * h], out=_pool.empty(lead + (2 * h,), gi.dtype))
    _sigmoid_tanh_np(rz, rz)
    n = _np.multiply(rz[..., :h], gh[..., 2 * h:], out=_pool.empty(lead + (h,), gi.dtype))
    _np.add(gi[..., 2 * h:], n, out=n)
    return rz, _np.tanh(n, out=n)


def gru_gates_np(gi: Any, gh: Any, hx: Any) -> Any:
    """``h' = n + z (h - n)`` of ``arrayrl.nn.recurrent.gru_gates`` (``gi, gh [M, 3H]``, ``hx [M, H]``, checked
    shapes): three pooled buffers, the result one of them."""
    h = hx.shape[-1]
    rz, n = _gru_rn_np(gi, gh, h)
    out = _np.subtract(hx, n, out=_pool.empty(hx.shape, hx.dtype))
    _np.multiply(rz[..., h:], out, out=out)
    return _np.add(n, out, out=out)


def gru_gates_vjp_np(g: Any, gi: Any, gh: Any, hx: Any, need_gi: bool, need_gh: bool) -> tuple:
    """``(dgi, dgh, dhx)`` of ``gru_gates`` for the cotangent ``g [M, H]``: ``dhx = g z``, ``dn_pre = (g - dhx)
    (1 - n^2)``, ``dr_pre = (dn_pre gh_n) (r (1 - r))``, ``dz_pre = (g (h - n)) (z (1 - z))``, ``dgi = [dr_pre,
    dz_pre, dn_pre]``, ``dgh = [dr_pre, dz_pre, dn_pre r]`` (``None`` where not needed). The pieces are written
    straight into the ``[M, 3H]`` outputs' column blocks (no concatenation); pooled throughout."""
    h = hx.shape[-1]
    rz, n = _gru_rn_np(gi, gh, h)
    r, z = rz[..., :h], rz[..., h:]
    dhx = _np.multiply(g, z, out=_pool.empty(hx.shape, hx.dtype))
    t = _np.multiply(n, n, out=_pool.empty(hx.shape, hx.dtype))
    _np.subtract(1.0, t, out=t)
    dgi = _pool.empty(gi.shape, gi.dtype)
    dr, dz, dn = dgi[..., :h], dgi[..., h:2 * h], dgi[..., 2 * h:]
    _np.subtract(g, dhx, out=dn)
    _np.multiply(dn, t, out=dn)
    _np.multiply(dn, gh[..., 2 * h:], out=dr)
    _np.subtract(1.0, r, out=t)
    _np.multiply(r, t, out=t)
    _np.multiply(dr, t, out=dr)
    _np.subtract(hx, n, out=dz)
    _np.multiply(g, dz, out=dz)
    _np.subtract(1.0, z, out=t)
    _np.multiply(z, t, out=t)
    _np.multiply(dz, t, out=dz)
    dgh = None
    if need_gh:
        dgh = _pool.empty(gh.shape, gh.dtype)
        dgh[..., :2 * h] = dgi[..., :2 * h]
        _np.multiply(dn, r, out=dgh[..., 2 * h:])
    return (dgi if need_gi else None), dgh, dhx
