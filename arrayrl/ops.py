"""Functions missing from the array-API standard, on raw OR taped arrays, with fused (hand-derived) VJPs.

Each function is a tape primitive (:func:`arrayrl.autodiff.primitive`) over a raw kernel of
:mod:`arrayrl._kernels` (or :mod:`arrayrl._scan`): on raw arrays it calls the kernel directly, on
:class:`~arrayrl.autodiff.Tensor` it records one node whose VJP is written below instead of a chain of elementary
nodes. Conventions follow PyTorch (``relu``'s gradient is 0 at 0, ``smooth_l1`` is ``F.smooth_l1_loss`` with
``reduction="none"``).

================================ ========================================== =================================
function                         value                                      VJP (cotangent ``g``)
================================ ========================================== =================================
``logsumexp(x, axis, keepdims)`` ``log sum exp x``                          ``g exp(x - y)``
``log_softmax(x, axis=-1)``      ``x - logsumexp(x)``                       ``g - exp(y) sum(g)``
``softmax(x, axis=-1)``          ``exp(x) / sum exp(x)``                    ``y (g - sum(g y))``
``softplus(x, beta, threshold)`` ``log(1 + exp(beta x)) / beta``            ``g sigmoid(beta x)``
``sigmoid(x)``                   ``1 / (1 + exp(-x))``                      ``g y (1 - y)``
``relu(x)``                      ``max(x, 0)``                              ``g [not x <= 0]``
``elu(x, alpha)``                ``x`` or ``alpha (exp(x) - 1)``            ``g`` or ``g alpha exp(x)``
``leaky_relu(x, negative_slope)`` ``x`` or ``negative_slope x``             ``g`` or ``g negative_slope``
``silu(x)``                      ``x sigmoid(x)``                           ``g s (1 + x (1 - s))``
``smooth_l1(x, beta=1)``         ``0.5 x^2/beta`` or ``|x| - 0.5 beta``     ``g clip(x / beta, -1, 1)``
``reverse_discounted_scan``      ``y_t = x_t + c_t y_{t+1}``                forward scan, see below
``linear(x, w, b, activation)``  ``act(x @ w.mT + b)``                      ``gz = act'(g)``: ``gz @ w``,
                                                                            ``gz.mT @ x``, ``sum_rows(gz)``
``mlp(x, layers, activations)``  ``linear`` stacked, one node              ``linear``'s, last layer first
================================ ========================================== =================================

Two reductions of the greedy Q-value heads, :func:`max_last` and :func:`argmax_last`, are the namespace's own
``max``/``argmax`` (taped or not) with a NumPy shortcut that skips NumPy's Python-level reduction wrappers.
"""

from __future__ import annotations

from typing import Any

import operator

import numpy as _np

from . import _cupy_kernels, _kernels, _numba_scan, _pool
from ._backend import namespace_of
from ._scan import reverse_discounted_scan_raw
from .autodiff.core import Tensor, defvjp, defvjp_joint, primitive, sum_to_shape
from .autodiff.core import _raw_mul as _mul, _raw_sub as _sub  # operators; large NumPy results pooled (_pool)
from .autodiff.tuning import _ND, blas_call, serial_below
from .autodiff.tuning import matmul as _mm  # xp.matmul under the BLAS thread policy on NumPy

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
    "reverse_discounted_scan",
    "linear",
    "mlp",
    "max_last",
    "argmax_last",
]


_le = _pool.elementwise(_np.less_equal, operator.le)  # ``x <= y``; a large NumPy mask goes into a pooled buffer


def _keep(xp, y, x, axis, keepdims):
    """Reshape a reduction output (or its cotangent) to the ``keepdims=True`` shape."""
    if keepdims:
        return y
    if axis is None:
        axes = set(range(x.ndim))
    elif isinstance(axis, int):
        axes = {axis % x.ndim}
    else:
        axes = {a % x.ndim for a in axis}
    return xp.reshape(y, tuple(1 if i in axes else s for i, s in enumerate(x.shape)))


logsumexp = primitive(_kernels.logsumexp, name="logsumexp")
defvjp(
    logsumexp,
    lambda xp, g, ans, x, axis=None, keepdims=False: _mul(
        _keep(xp, g, x, axis, keepdims), xp.exp(_sub(x, _keep(xp, ans, x, axis, keepdims)))
    ),
)

log_softmax = primitive(_kernels.log_softmax, name="log_softmax")
defvjp(log_softmax, lambda xp, g, ans, x, axis=-1: _sub(g, _mul(xp.exp(ans), xp.sum(g, axis=axis, keepdims=True))))

softmax = primitive(_kernels.softmax, name="softmax")
defvjp(softmax, lambda xp, g, ans, x, axis=-1: _mul(ans, _sub(g, xp.sum(_mul(g, ans), axis=axis, keepdims=True))))


def _softplus_vjp(xp, g, ans, x, beta=1.0, threshold=None):
    z = x * beta if beta != 1.0 else x
    gs = _mul(g, _kernels.sigmoid(z))
    return gs if threshold is None else xp.where(z > threshold, g, gs)


softplus = primitive(_kernels.softplus, name="softplus")
defvjp(softplus, _softplus_vjp)

sigmoid = primitive(_kernels.sigmoid, name="sigmoid")
defvjp(sigmoid, lambda xp, g, ans, x: _mul(g, _mul(ans, _sub(1.0, ans))))

relu = primitive(_kernels.relu, name="relu")
defvjp(relu, lambda xp, g, ans, x: _kernels.zero_where(_le(x, 0), g))  # torch threshold_backward: NaN x passes g

elu = primitive(_kernels.elu, name="elu")
defvjp(elu, lambda xp, g, ans, x, alpha=1.0: _mul(g, _kernels.elu_slope(x, alpha)))

leaky_relu = primitive(_kernels.leaky_relu, name="leaky_relu")
defvjp(leaky_relu, lambda xp, g, ans, x, negative_slope=0.01: xp.where(x > 0, g, g * negative_slope))


def _silu_vjp(xp, g, ans, x):
    s = _kernels.sigmoid(x)
    return _mul(g, s * (1.0 + x * (1.0 - s)))


silu = primitive(_kernels.silu, name="silu")
defvjp(silu, _silu_vjp)


def _smooth_l1_vjp(xp, g, ans, x, beta=1.0):
    if beta == 0:
        return g * xp.sign(x)
    return _mul(g, xp.clip(x / beta if beta != 1.0 else x, min=-1.0, max=1.0))


smooth_l1 = primitive(_kernels.smooth_l1, name="smooth_l1")
defvjp(smooth_l1, _smooth_l1_vjp)


# ------------------------------------------------------------------------------------------ reverse discounted scan


def _along(ax: int, sl: slice) -> tuple:
    return (slice(None),) * ax + (sl, ...)


def _scan_adjoint(xp, g, c, axis):
    """``gx_0 = g_0``, ``gx_t = g_t + c_{t-1} gx_{t-1}``: a compiled forward scan (CuPy, or NumPy with numba), else
    the reverse kernel run on flipped arrays.

    With ``u_s = gx_{T-1-s}``: ``u_s = g_{T-1-s} + c_{T-2-s} u_{s+1}``, i.e. a reverse scan of ``flip(g)`` with
    discounts ``flip(c)`` shifted by one (the last discount is never used; it is set to 0).
    """
    ax = axis % g.ndim
    T = g.shape[ax]
    if T == 0:
        return g
    fused = _cupy_kernels.dispatch("forward_scan", g, c, ax)  # CuPy: one forward-scan kernel (None elsewhere)
    if fused is None:  # raw NumPy + numba: the compiled forward scan, no flips (None: not applicable)
        fused = _numba_scan.try_forward_scan(g, c, ax)
    if fused is not None:
        return fused
    cf = xp.flip(c, axis=ax)
    pad = xp.zeros(tuple(1 if i == ax else s for i, s in enumerate(c.shape)), dtype=c.dtype, device=c.device)
    cs = xp.concat([cf[_along(ax, slice(1, None))], pad], axis=ax)
    # second order (taped cotangent or discounts): the adjoint is itself a scan, recorded as one (its VJP is again
    # a scan, so the scan is differentiable to any order); raw arrays take the raw kernel
    scan = reverse_discounted_scan if isinstance(g, Tensor) or isinstance(cs, Tensor) else reverse_discounted_scan_raw
    return xp.flip(scan(xp.flip(g, axis=ax), cs, axis=ax), axis=ax)


def _scan_vjp_x(xp, g, ans, x, c, axis=-1):
    return _scan_adjoint(xp, g, c, axis)


def _scan_vjp_c(xp, g, ans, x, c, axis=-1):
    ax = axis % g.ndim
    if g.shape[ax] == 0:
        return g
    gx = _scan_adjoint(xp, g, c, axis)
    pad = xp.zeros(tuple(1 if i == ax else s for i, s in enumerate(ans.shape)), dtype=ans.dtype, device=ans.device)
    y_next = xp.concat([ans[_along(ax, slice(1, None))], pad], axis=ax)
    return _mul(gx, y_next)


def _scan_raw(x: Any, c: Any, axis: int = -1) -> Any:
    return reverse_discounted_scan_raw(x, c, axis=axis)


reverse_discounted_scan = primitive(_scan_raw, name="reverse_discounted_scan")
reverse_discounted_scan.__doc__ = """``y_t = x_t + c_t * y_{t+1}`` along ``axis`` (``y_{T-1} = x_{T-1}``), raw or taped.

GAE, TD(lambda), TD(1), V-trace and reward-to-go reduce to it. Forward: :func:`arrayrl._scan.reverse_discounted_scan_raw`.
VJP: ``gx`` is the forward scan ``gx_0 = g_0``, ``gx_t = g_t + c_{t-1} gx_{t-1}`` (the same raw kernel on flipped
arrays), and ``gc_t = gx_t y_{t+1}`` (0 at ``t = T-1``).

Args:
    x: ``[..., T, ...]`` floating array.
    c: same shape as ``x`` (per-step discount; 0 cuts the recursion).
    axis: the time axis.
"""
defvjp(reverse_discounted_scan, _scan_vjp_x, _scan_vjp_c)


# ------------------------------------------------------------------------------------------------------------ linear


def _ones_rows(xp, g):
    return _kernels.ones_vector(xp, g.shape[-2], g)


def _linear_vjp(xp, g, ans, needs, x, weight, bias, activation, mm=_mm):
    """Cotangents of ``(x, weight, bias)`` for ``y = act(z)``, ``z = x @ weight.mT + bias``, sharing ``gz``.

    ``mm(xp, a, b)``: the product (default: under the BLAS thread policy; :func:`_mlp_vjp` passes the plain pooled
    product when it has set the policy once for the whole stack)."""
    if activation == "relu":
        g = _kernels.zero_where(_le(ans, 0), g)  # as relu's VJP: 0 where z <= 0 (ans == 0), g elsewhere (NaN passes)
    elif activation == "tanh":
        g = _mul(g, _sub(1.0, _mul(ans, ans)))
    gx = gw = gb = None
    if 0 in needs:
        gx = mm(xp, g, weight)
        if gx.ndim != x.ndim:  # an input shared by the members of an ensemble: summed over them
            gx = sum_to_shape(xp, gx, tuple(x.shape))
    if weight.ndim == 2:  # x [*B, in], g [*B, out]: flatten the batch
        g2 = g if g.ndim == 2 else xp.reshape(g, (-1, weight.shape[0]))
        if 1 in needs:
            x2 = x if x.ndim == 2 else xp.reshape(x, (-1, weight.shape[1]))
            gw = mm(xp, g2.mT, x2)
        if 2 in needs:
            gb = mm(xp, _ones_rows(xp, g2), g2)  # BLAS row sum (NumPy's float32 sum over axis 0 is ~10x slower)
    else:  # ensemble: weight [N, out, in], x [M, in] or [N, M, in], g [N, M, out]
        if 1 in needs:
            gw = mm(xp, g.mT, x)
        if 2 in needs:
            gb = mm(xp, _ones_rows(xp, g), g)
    return gx, gw, gb


def _rows(x: Any, weight: Any) -> int:
    """The rows of one matrix product of ``x @ weight.mT``: ``x``'s second-to-last axis for an ensemble weight on a
    stacked input (one product per member), else all of ``x``'s rows."""
    if weight.ndim == 3 and x.ndim == 3:
        return x.shape[-2]
    return x.size // x.shape[-1] if x.shape[-1] else 0


def _linear_raw(x: Any, weight: Any, bias: Any = None, activation: str | None = None) -> Any:
    """:func:`arrayrl._kernels.linear` with NumPy products under the BLAS thread policy (work per matrix:
    rows x in x out)."""
    if type(x) is _ND and type(weight) is _ND:
        return blas_call(_rows(x, weight) * weight.shape[-1] * weight.shape[-2], _kernels.linear, x, weight, bias,
                         activation)
    return _kernels.linear(x, weight, bias, activation)


_linear = primitive(_linear_raw, name="linear")
defvjp_joint(_linear, _linear_vjp)


#: raw NumPy products of fewer multiply-adds than this (``rows x in x out``) take :func:`linear`'s lean path:
#: OpenBLAS runs them on one thread by itself (its gemm/gemv threading thresholds are 262144 and 9216 for
#: ``m n k`` and ``m n``), so the BLAS thread policy has nothing to do there
LEAN_WORK = 8192

_matmul_np, _add_np, _maximum_np, _tanh_np = _np.matmul, _np.add, _np.maximum, _np.tanh


def _lean_linear(x: Any, weight: Any, bias: Any, activation: str | None) -> Any:
    """:func:`arrayrl._kernels.linear` for small 2-D raw NumPy operands of one dtype, in the fewest Python calls:
    ``y = x @ weight.T``, then the bias and the activation in place (the same ufuncs, so the same values)."""
    y = _matmul_np(x, weight.T)
    if bias is not None:
        _add_np(y, bias, out=y)
    if activation == "relu":
        _maximum_np(y, 0.0, out=y)  # NaN propagates, as relu's zero_where(y <= 0, y)
    elif activation == "tanh":
        _tanh_np(y, out=y)
    return y


def _raw_2d(x: Any, weight: Any, bias: Any) -> bool:
    """Raw NumPy ``x [M, in]``, ``weight [out, in]``, ``bias [out]`` or None, all of one dtype."""
    return (
        type(x) is _ND
        and type(weight) is _ND
        and x.ndim == 2
        and weight.ndim == 2
        and x.dtype is weight.dtype
        and (bias is None or (type(bias) is _ND and bias.dtype is weight.dtype))
    )


def _is_lean(x: Any, weight: Any, bias: Any) -> bool:
    """:func:`_raw_2d` operands under :data:`LEAN_WORK` multiply-adds."""
    return _raw_2d(x, weight, bias) and x.shape[0] * weight.size < LEAN_WORK


def linear(x: Any, weight: Any, bias: Any = None, activation: str | None = None) -> Any:
    """A dense layer ``act(x @ weight.mT + bias)`` (torch's layout) as ONE tape node, raw or taped.

    The composed form records a transpose, a matmul, an add and the activation (four nodes, four cotangents);
    this records one node whose VJP computes ``gz = g * act'(z)`` once and then ``gx = gz @ weight``,
    ``gweight = gz.mT @ x`` and ``gbias = sum_rows(gz)``, each only for the arguments that need a gradient.

    Args:
        x: ``[*B, in]``; with an ensemble weight ``[M, in]`` (shared by the members) or ``[N, M, in]``.
        weight: ``[out, in]`` or an ensemble ``[N, out, in]``.
        bias: ``[out]`` (``[N, out]``) or ``None``.
        activation: ``None``, ``"relu"`` (gradient 0 at 0, as :func:`relu`) or ``"tanh"``.

    Returns:
        ``[*B, out]`` (``[N, M, out]`` for an ensemble).
    """
    if activation not in _kernels.LINEAR_ACTIVATIONS:
        raise ValueError(f"activation: expected one of {_kernels.LINEAR_ACTIVATIONS}, got {activation!r}")
    if _is_lean(x, weight, bias):  # acting at small batch: no tape, no thread policy (see LEAN_WORK)
        return _lean_linear(x, weight, bias, activation)
    return _linear(x, weight, bias, activation)


# ------------------------------------------------------------------------------------------ a stack of dense layers


def _mlp_raw(activations: tuple, saved: list, x: Any, *weights_biases: Any) -> Any:
    """``h_l = act_l(h_{l-1} @ w_l.mT + b_l)`` for ``l = 0..L-1`` (``h_{-1} = x``); ``weights_biases`` is
    ``w_0, b_0, w_1, b_1, ...`` (a bias may be None). The layer outputs ``h_0..h_{L-1}`` are appended to ``saved``
    (for the VJP).

    NumPy: when every layer's product is below the BLAS policy's threshold, the whole stack runs inside ONE
    :func:`blas_call` (one thread switch instead of one per layer) on :func:`arrayrl._kernels.linear` (small
    layers on :func:`linear`'s lean path); otherwise each layer as raw :func:`linear`. A stack whose every
    product is under :data:`LEAN_WORK` skips the switch (three ``ctypes`` calls, ~1.5 us): OpenBLAS runs those
    products on one thread by itself, so the policy has nothing to change there."""
    return _mlp_stack(activations, saved, x, weights_biases)


def _mlp_stack(activations: tuple, saved: list, x: Any, weights_biases: Any) -> Any:
    """The body of :func:`_mlp_raw` (``weights_biases`` a sequence; :func:`mlp` calls it directly on raw NumPy)."""
    work = _stack_work(x, weights_biases)
    if work < serial_below():
        if work < LEAN_WORK:
            return _mlp_serial(activations, saved, x, weights_biases)
        return blas_call(0, _mlp_serial, activations, saved, x, weights_biases)
    h = x
    for i, act in enumerate(activations):
        h = _linear_raw(h, weights_biases[2 * i], weights_biases[2 * i + 1], act)
        saved.append(h)
    return h


def _stack_work(x: Any, weights_biases: tuple) -> int:
    """The largest product of the stack in multiply-adds per matrix (rows x in x out), as :func:`_linear_raw`
    counts it; the threshold itself (never serial as a whole) for non-NumPy operands."""
    if type(x) is not _ND:
        return serial_below()
    if not weights_biases:
        return 0
    if type(weights_biases[0]) is not _ND:
        return serial_below()
    rows = _rows(x, weights_biases[0])  # (the later layers' inputs have the first product's rows)
    largest = 0  # in x out of the largest matrix (a plain loop: this runs on every raw forward)
    for w in weights_biases[::2]:
        if type(w) is not _ND:
            return serial_below()
        shape = w.shape
        size = shape[-1] * shape[-2]
        if size > largest:
            largest = size
    return rows * largest


def _mlp_serial(activations: tuple, saved: list, x: Any, weights_biases: tuple) -> Any:
    """The layers of :func:`_mlp_raw` on NumPy, the BLAS threads already set (no policy per product): small layers
    (:func:`_is_small`) on :func:`linear`'s lean path, others on :func:`arrayrl._kernels.linear`."""
    h = x
    for i, act in enumerate(activations):
        w, b = weights_biases[2 * i], weights_biases[2 * i + 1]
        h = _lean_linear(h, w, b, act) if _is_small(h, w, b) else _kernels.linear(h, w, b, act)
        saved.append(h)
    return h


#: from this many rows on, ``_kernels.linear`` may tile the bias add of narrow rows (``_kernels._add_rows_np``)
_TILED_ROWS = 2048


def _is_small(x: Any, weight: Any, bias: Any) -> bool:
    """:func:`_raw_2d` operands whose output ``[M, out]`` is smaller than the
    buffer pool's :data:`arrayrl._pool.MIN_BYTES` and has fewer than 2048 rows: then
    :func:`arrayrl._kernels.linear` would neither pool the output nor tile the bias add, and :func:`_lean_linear`
    runs the same ufuncs in fewer Python calls (the same values). Only for products whose BLAS threads are
    already decided (:func:`_mlp_serial`); :func:`linear` alone uses :func:`_is_lean`."""
    return (_raw_2d(x, weight, bias) and x.shape[0] < _TILED_ROWS
            and x.shape[0] * weight.shape[0] * x.itemsize < _pool.MIN_BYTES)


def _mlp_taped(activations: tuple, x: Any, weights_biases: tuple) -> list:
    """The layer outputs of :func:`_mlp_raw` recorded on the tape, one :func:`linear` node per layer."""
    saved, h = [], x
    for i, act in enumerate(activations):
        h = _linear(h, weights_biases[2 * i], weights_biases[2 * i + 1], act)
        saved.append(h)
    return saved


def _mlp_vjp(xp, g, ans, needs, activations, saved, x, *weights_biases):
    """Cotangents of ``(x, w_0, b_0, ...)`` (argnums 2, 3, 4, ...) of :func:`_mlp_raw`: the layers' joint VJPs
    (:func:`_linear_vjp`: ``gz_l = g_l act_l'(h_l)`` from the saved output ``h_l``, then ``g_{l-1} = gz_l @ w_l``,
    ``gw_l = gz_l.mT @ h_{l-1}``, ``gb_l = sum_rows(gz_l)``) from the last layer to the first; the first layer's
    ``gx`` only when ``x`` needs one (not for a constant input).

    NumPy: the products run inside one :func:`blas_call` when all are below the policy's threshold (the backward
    products have the forward's sizes). On taped cotangents (``create_graph``) the layer outputs are recomputed on
    the tape from the node's taped arguments, so that the cotangents are differentiable again (second order)."""
    if isinstance(g, Tensor):
        return _mlp_backward(xp, g, needs, activations, _mlp_taped(activations, x, weights_biases), x,
                             weights_biases, _mm)
    if type(g) is _ND and _stack_work(x, weights_biases) < serial_below():
        return blas_call(0, _mlp_backward, xp, g, needs, activations, saved, x, weights_biases, _pooled_mm)
    return _mlp_backward(xp, g, needs, activations, saved, x, weights_biases, _mm)


def _pooled_mm(xp, a, b):
    """``a @ b`` of NumPy arrays into a pooled buffer, on the BLAS threads already set (:func:`_mlp_vjp`)."""
    return _pool.matmul(a, b)


def _mlp_backward(xp, g, needs, activations, saved, x, weights_biases, mm):
    """The body of :func:`_mlp_vjp` (``saved``: the layer outputs; ``mm``: the product)."""
    out: list = [None] * (3 + len(weights_biases))
    for i in range(len(activations) - 1, -1, -1):
        wi = 3 + 2 * i
        layer_needs = (0,) if i or 2 in needs else ()
        if wi in needs:
            layer_needs += (1,)
        if wi + 1 in needs:
            layer_needs += (2,)
        g, out[wi], out[wi + 1] = _linear_vjp(xp, g, saved[i], layer_needs, x if i == 0 else saved[i - 1],
                                              weights_biases[wi - 3], weights_biases[wi - 2], activations[i], mm)
    out[2] = g
    return out


_mlp = primitive(_mlp_raw, name="mlp")
defvjp_joint(_mlp, _mlp_vjp)


def _all_numpy(arrays: Any) -> bool:
    """Every entry is a NumPy array, raw or as the value of a Tensor, or None (a bias left out)."""
    for a in arrays:
        t = type(a)
        if t is not _ND and a is not None and not (t is Tensor and type(a.value) is _ND):
            return False
    return True


def _all_raw_numpy(arrays: Any) -> bool:
    """Every entry is a raw NumPy array or None (a bias left out): nothing to record on a tape."""
    for a in arrays:
        if type(a) is not _ND and a is not None:
            return False
    return True


_CHECKED_ACTIVATIONS: set = set()  # activation tuples already validated by mlp (a hashable tuple is checked once)


def mlp(x: Any, layers: Any, activations: Any) -> Any:
    """A stack of dense layers ``h_l = act_l(h_{l-1} @ w_l.mT + b_l)`` (``h_{-1} = x``), raw or taped.

    NumPy operands (raw or taped) run as ONE primitive: taped ones record one node for the whole stack, whose VJP
    runs the layers' VJPs (those of :func:`linear`) from the last layer to the first with the activation
    derivatives taken from the saved layer outputs and no cotangent for a constant input; raw ones run the layers
    directly (small ones on :func:`linear`'s lean path). Other backends record one :func:`linear` node per layer
    (the generic path; the same values). Second order (``create_graph``) works on both: the fused node's rule
    recomputes the layer outputs on the tape.

    Args:
        x: ``[M, in]`` (with ensemble weights: ``[M, in]`` shared by the members, or ``[N, M, in]``).
        layers: ``[(weight, bias), ...]``: ``weight [out, in]`` (``[N, out, in]``), ``bias [out]`` (``[N, out]``)
            or None.
        activations: one of ``None``, ``"relu"``, ``"tanh"`` per layer.

    Returns:
        The last layer's output, ``[M, out]`` (``[N, M, out]``).
    """
    if len(activations) != len(layers):
        raise ValueError(f"activations: expected one per layer ({len(layers)}), got {len(activations)}")
    acts = activations if type(activations) is tuple else tuple(activations)
    if acts not in _CHECKED_ACTIVATIONS:
        for act in acts:
            if act not in _kernels.LINEAR_ACTIVATIONS:
                raise ValueError(f"activations: expected entries in {_kernels.LINEAR_ACTIVATIONS}, got {act!r}")
        _CHECKED_ACTIVATIONS.add(acts)
    flat = [a for wb in layers for a in wb]
    if type(x) is _ND and _all_raw_numpy(flat):
        return _mlp_stack(acts, [], x, flat)  # raw NumPy: nothing to record, so no primitive wrapper
    if _all_numpy(flat) and _all_numpy((x,)):
        return _mlp(acts, [], x, *flat)  # one node on the tape
    h = x
    for (w, b), act in zip(layers, activations):
        h = _linear(h, w, b, act)
    return h


# ---------------------------------------------------------------------------------------------- greedy reductions
_max_reduce_np, _int64_np = _np.maximum.reduce, _np.dtype(_np.int64)


def max_last(x: Any) -> Any:
    """``xp.max(x, axis=-1, keepdims=True)``: ``[*B, A] -> [*B, 1]``, raw or taped (the gradient goes to one index).

    Raw NumPy: the ufunc reduction ``np.max`` itself calls (the same values, without its ~2 us wrapper)."""
    if type(x) is _ND:
        return _max_reduce_np(x, axis=-1, keepdims=True)
    return namespace_of(x).max(x, axis=-1, keepdims=True)


def argmax_last(x: Any) -> Any:
    """``astype(xp.argmax(x, axis=-1), int64)``: the first maximum's index, ``[*B, A] -> [*B]`` int64 (constant
    on the tape). Raw NumPy: the array's own ``argmax`` (what ``np.argmax`` calls)."""
    if type(x) is _ND:
        i = x.argmax(axis=-1)
        return i if i.dtype == _int64_np else i.astype(_int64_np)
    xp = namespace_of(x)
    return xp.astype(xp.argmax(x, axis=-1), xp.int64, copy=False)
