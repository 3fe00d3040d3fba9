"""Recurrent cells and RMS normalisation for world models: :class:`GRUCell` (``torch.nn.GRUCell``),
:class:`RMSNorm` (``torch.nn.RMSNorm``), and DreamerV3's block-diagonal GRU, :class:`DreamerV3BlockGRUCell` /
:class:`DreamerV3BlockGRU` (``torchrl.modules.DreamerV3BlockGRUCell`` / ``DreamerV3BlockGRU`` of TorchRL 0.14.1,
its ``"reference"`` backend).

Parameter trees are the torch ``state_dict`` layouts, nested at the dots, so weights copy 1:1
(:func:`arrayrl.interop.params_from_torch`):

* ``GRUCell``: ``weight_ih [3H, I]``, ``weight_hh [3H, H]``, ``bias_ih [3H]``, ``bias_hh [3H]`` (gate order
  ``r, z, n``); ``r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)``, ``z = sigmoid(...)``,
  ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``, ``h' = n + z (h - n)`` (= ``(1 - z) n + z h``).
* ``RMSNorm``: ``weight [*normalized_shape]``; ``y = x / sqrt(mean(x^2) + eps) * weight`` over the trailing
  ``len(normalized_shape)`` axes, ``eps=None`` meaning the dtype's machine epsilon (as torch).
* ``DreamerV3BlockGRUCell``: ``input_linear {weight [P, I], bias [P]}``, ``input_norm {weight [P]}``,
  ``hidden_linear {weight [P, H], bias [P]}``, ``hidden_norm {weight [P]}``, ``dynamic_linears {"0": {weight
  [G, in_0 / G, H / G], bias [H]}, ...}``, ``dynamic_norms {"0": {weight [H]}, ...}``, ``gates {weight
  [G, H / G, 3H / G], bias [3H]}`` with ``G = num_blocks``, ``P = projection_size``, ``in_0 = H + 2 P G``;
  ``DreamerV3BlockGRU`` nests that tree under ``"cell"``.

DreamerV3 block GRU step (``_dreamer_v3_block_gru_update``): ``x' = act(rms(Lin(x)))``, ``h' = act(rms(Lin(h)))``;
per block ``g``: ``u_g = [h_g, x', h']``; ``v = act(rms(BlockLin(u)))`` (``num_layers`` times, block-diagonal
weights); ``[reset, cand, update] = BlockLin(v)`` split per block; ``reset = sigmoid(reset)``,
``cand = tanh(reset * cand)``, ``update = sigmoid(update + update_bias)``, ``h_new = update cand + (1 - update) h``.

Divergence: TorchRL 0.14.1's DreamerV3 RMS norm computes in float32 whatever the input dtype (``value.float()``,
meant for bfloat16 recurrences), so its float64 block GRU is only float32-accurate; arrayrl computes in the input
dtype (float32 in, float32 out; float64 stays float64). With float32 inputs the two agree.

Gates: :func:`gate_sigmoid` ``= (1 + tanh(x / 2)) / 2`` and :func:`gate_silu` ``= x gate_sigmoid(x)`` (the same
functions as ``ops.sigmoid`` / ``ops.silu``, to rounding; one ``tanh`` pass: about 2x faster than the branch-free
``ops.sigmoid``/``ops.silu`` kernels on ``[256, 128]`` float32, 33 vs 68-74 us), each one taped op
with its closed-form VJP (``s (1 - s)``, ``s (1 + x (1 - s))``). The GRU computes ``r`` and ``z`` with one add and
one sigmoid on the ``[M, 2H]`` slab, all its gates in one taped node (:func:`gru_gates`, joint VJP: no sliced
cotangents padded with zeros).

Inputs may have any leading batch shape (torch's cells take ``[B, I]`` or ``[I]``). Checks are on shapes and
dtypes only. Initialisation: ``GRUCell`` as torch (``U(-1/sqrt(H), 1/sqrt(H))`` on every leaf); DreamerV3 linear and
block-linear weights ``TruncNormal(0, std=1.1368/sqrt(fan_in))`` cut at ``+-2 std`` (``_dreamer_v3_init``, by
redrawing out-of-range values a fixed number of times, then clipping), biases 0, norm weights 1.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from .. import _kernels, ops
from ..autodiff import defvjp, defvjp_joint, primitive
from .._backend import device_of, namespace_of
from .._checks import check_floating, dtype_name
from ..random import _index
from .layers import _Layer, get_activation
from .params import _shape_str, uniform_fan_in

__all__ = [
    "GRUCell",
    "RMSNorm",
    "DreamerV3BlockGRUCell",
    "DreamerV3BlockGRU",
    "gru_cell",
    "gru_gates",
    "rms_norm",
    "block_linear",
    "block_gru_update",
    "trunc_normal",
    "gate_sigmoid",
    "gate_silu",
]


# ------------------------------------------------------------------------------------------------ checks / init
def _check_tree(tree: Any, spec: dict, where: str) -> None:
    """``tree`` has exactly the keys of ``spec`` (a nested dict of shapes) with those shapes."""
    if not isinstance(tree, dict):
        raise TypeError(f"{where}: expected a dict with keys {list(spec)}, got {type(tree).__name__}")
    missing = [k for k in spec if k not in tree]
    if missing:
        raise KeyError(f"{where}: missing {missing}; keys present: {list(tree)}")
    extra = [k for k in tree if k not in spec]
    if extra:
        raise ValueError(f"{where}: unexpected keys {extra} (expected {list(spec)})")
    for key, want in spec.items():
        path = f"{where}[{key!r}]"
        if isinstance(want, dict):
            _check_tree(tree[key], want, path)
            continue
        shape = getattr(tree[key], "shape", None)
        if shape is None:
            raise TypeError(f"{path}: expected an array, got {type(tree[key]).__name__}")
        if tuple(shape) != tuple(want):
            raise ValueError(f"{path}: expected shape {_shape_str(want)}, got {_shape_str(tuple(shape))}")


def _leaves(tree: Any) -> list:
    if isinstance(tree, dict):
        return [leaf for v in tree.values() for leaf in _leaves(v)]
    return [tree]


def _check_dtypes(x: Any, name: str, tree: Any) -> None:
    check_floating(x, name)
    for leaf in _leaves(tree):
        if leaf.dtype != x.dtype:
            raise TypeError(f"{name}: dtype {dtype_name(x.dtype)} differs from the parameters' "
                            f"{dtype_name(leaf.dtype)} (cast one of them)")


def _check_features(x: Any, n: int, name: str, what: str) -> None:
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(f"{name}: expected a last dimension of size {n} ({what}), got shape {tuple(x.shape)}")


def trunc_normal(generator: Any, shape: tuple, std: float, dtype: Any = None, *, rounds: int = 12) -> Any:
    """``N(0, std^2)`` truncated to ``[-2 std, 2 std]`` (``torch.nn.init.trunc_normal_(std=std, a=-2std, b=2std)``):
    out-of-range draws are redrawn ``rounds`` times (a fixed count, no data-dependent loop; each value is left
    outside with probability ``0.0455^rounds``), then clipped."""
    out = generator.normal(shape, dtype, scale=std)
    xp = namespace_of(out)
    for _ in range(rounds):
        out = xp.where(xp.abs(out) > 2 * std, generator.normal(shape, dtype, scale=std), out)
    return xp.clip(out, min=-2 * std, max=2 * std)


def _xp_kw(generator: Any) -> tuple:
    dev = getattr(generator, "device", None)
    return generator.xp, ({} if dev is None else {"device": dev})


# ------------------------------------------------------------------------------------------------ functional
def _flatten(x: Any, n: int) -> tuple:
    """``x [*B, n] -> ([M, n], B)``."""
    batch = tuple(x.shape[:-1])
    if x.ndim == 2:
        return x, batch
    xp = namespace_of(x)
    return xp.reshape(x, (-1, n)), batch


def _unflatten(y: Any, batch: tuple) -> Any:
    if len(batch) == 1:
        return y
    return namespace_of(y).reshape(y, batch + (int(y.shape[-1]),))


# ------------------------------------------------------------------------------------------------ gates
def _sigmoid_raw(x: Any) -> Any:
    """``(1 + tanh(x / 2)) / 2``: the logistic function, branch-free and without overflow."""
    return 0.5 * namespace_of(x).tanh(0.5 * x) + 0.5


def _silu_raw(x: Any) -> Any:
    """``x gate_sigmoid(x)`` (NumPy: :func:`arrayrl._kernels.gate_silu_np`, the same operations in a pooled
    buffer)."""
    if _kernels.numpy_floats(x):
        return _kernels.gate_silu_np(x)
    return x * _sigmoid_raw(x)


gate_sigmoid = primitive(_sigmoid_raw, name="gate_sigmoid")
defvjp(gate_sigmoid, lambda xp, g, ans, x: g * (ans * (1.0 - ans)))
gate_silu = primitive(_silu_raw, name="gate_silu")


def _silu_vjp(xp: Any, g: Any, ans: Any, x: Any) -> Any:
    """``g s (1 + x (1 - s))`` (NumPy, first order: :func:`arrayrl._kernels.gate_silu_vjp_np`)."""
    if _kernels.numpy_floats(g, x):
        return _kernels.gate_silu_vjp_np(g, x)
    s = _sigmoid_raw(x)
    return g * (s * (1.0 + x * (1.0 - s)))


defvjp(gate_silu, _silu_vjp)


# ------------------------------------------------------------------------------------------------ functional cells
def _gru_gates_rn(gi: Any, gh: Any, h: int) -> tuple:
    """``(rz [M, 2H], n [M, H])`` of :func:`gru_gates` (its forward, recomputed by its VJP)."""
    rz = _sigmoid_raw(gi[..., :2 * h] + gh[..., :2 * h])
    return rz, namespace_of(gi, gh).tanh(gi[..., 2 * h:] + rz[..., :h] * gh[..., 2 * h:])


def _gru_gates_raw(gi: Any, gh: Any, hx: Any) -> Any:
    """The GRU's gates after its two projections, one taped node: ``gi = x W_ih^T + b_ih``,
    ``gh = h W_hh^T + b_hh`` (``[M, 3H]``, torch's ``r, z, n`` order) and ``h [M, H]``:
    ``[r, z] = gate_sigmoid(gi[:, :2H] + gh[:, :2H])``, ``n = tanh(gi[:, 2H:] + r gh[:, 2H:])``,
    ``h' = n + z (h - n)`` ``[M, H]``.

    VJP (joint, one pass; ``g = dh'``): ``dh = g z``, ``dn_pre = (g - g z) (1 - n^2)``,
    ``dr_pre = dn_pre gh_n r (1 - r)``, ``dz_pre = g (h - n) z (1 - z)``; ``dgi = [dr_pre, dz_pre, dn_pre]``,
    ``dgh = [dr_pre, dz_pre, dn_pre r]``: contiguous ``[M, 3H]`` cotangents instead of the slices' zero-padded
    pieces summed by the tape.

    NumPy (raw arrays of one floating dtype; the VJP at first order): :func:`arrayrl._kernels.gru_gates_np` /
    :func:`~arrayrl._kernels.gru_gates_vjp_np`, the same operations in place on pooled buffers (bit-identical).
    """
    h = int(hx.shape[-1])
    if tuple(gi.shape) != tuple(gh.shape) or tuple(gi.shape) != tuple(hx.shape[:-1]) + (3 * h,):
        raise ValueError(f"gi, gh: expected shape {tuple(hx.shape[:-1]) + (3 * h,)} (hx {tuple(hx.shape)} with 3 H "
                         f"gate features), got {tuple(gi.shape)} and {tuple(gh.shape)}")
    if _kernels.numpy_floats(gi, gh, hx):
        return _kernels.gru_gates_np(gi, gh, hx)
    rz, n = _gru_gates_rn(gi, gh, h)
    return n + rz[..., h:] * (hx - n)


gru_gates = primitive(_gru_gates_raw, name="gru_gates")


def _gru_gates_vjp(xp: Any, g: Any, ans: Any, needs: tuple, gi: Any, gh: Any, hx: Any) -> tuple:
    if _kernels.numpy_floats(g, gi, gh, hx):
        return _kernels.gru_gates_vjp_np(g, gi, gh, hx, 0 in needs, 1 in needs)
    h = int(hx.shape[-1])
    rz, n = _gru_gates_rn(gi, gh, h)
    r, z = rz[..., :h], rz[..., h:]
    dhx = g * z
    dn_pre = (g - dhx) * (1.0 - n * n)
    dr_pre = (dn_pre * gh[..., 2 * h:]) * (r * (1.0 - r))
    dz_pre = (g * (hx - n)) * (z * (1.0 - z))
    dgi = xp.concat([dr_pre, dz_pre, dn_pre], axis=-1) if 0 in needs else None
    dgh = xp.concat([dr_pre, dz_pre, dn_pre * r], axis=-1) if 1 in needs else None
    return dgi, dgh, dhx


defvjp_joint(gru_gates, _gru_gates_vjp)


def gru_cell(params: dict, input: Any, hx: Any) -> Any:
    """One ``torch.nn.GRUCell`` step on checked ``[M, I]``/``[M, H]`` arrays (``params`` in torch's layout; the
    biases may be absent): the two projections, then :func:`gru_gates` (``[r, z] = sigmoid(gi[:, :2H] +
    gh[:, :2H])`` in one slab, ``n = tanh(gi[:, 2H:] + r gh[:, 2H:])``, ``h' = n + z (h - n)``)."""
    gi = ops.linear(input, params["weight_ih"], params.get("bias_ih"))
    gh = ops.linear(hx, params["weight_hh"], params.get("bias_hh"))
    return gru_gates(gi, gh, hx)


def rms_norm(x: Any, weight: Any = None, eps: float = 1e-6, ndim: int = 1) -> Any:
    """``x / sqrt(mean(x^2, trailing ndim axes) + eps) * weight`` (``F.rms_norm``); ``weight`` may be ``None``."""
    xp = namespace_of(x, weight)
    axes = tuple(range(-ndim, 0))
    y = x / xp.sqrt(xp.mean(x * x, axis=axes, keepdims=True) + eps)
    return y if weight is None else y * weight


def block_linear(x: Any, weight: Any, bias: Any = None) -> Any:
    """TorchRL's ``_DreamerV3BlockLinear``: ``x [*B, in]`` split into ``G`` equal blocks, block ``g`` multiplied by
    ``weight[g] [in/G, out/G]`` (block-diagonal, note the ``[in, out]`` orientation), concatenated: ``[*B, out]``
    (+ ``bias [out]``)."""
    xp = namespace_of(x, weight, bias)
    g, bin_, bout = (int(s) for s in weight.shape)
    batch = tuple(x.shape[:-1])
    v = xp.permute_dims(xp.reshape(x, (-1, g, bin_)), (1, 0, 2))  # [G, M, in/G]
    v = xp.permute_dims(xp.matmul(v, weight), (1, 0, 2))  # [M, G, out/G]
    v = xp.reshape(v, batch + (g * bout,))
    return v if bias is None else v + bias


def block_gru_update(features: Any, belief: Any, hidden_layers: Callable[[Any], Any], gates: dict, *,
                     num_blocks: int, update_bias: float) -> Any:
    """TorchRL's ``_dreamer_v3_block_gru_update``: the gated block update of ``belief [*B, H]`` from
    ``features [*B, F]`` (shared by every block), ``hidden_layers`` (a function ``[*B, G (H/G + F)] -> [*B, H]``) and
    the ``gates`` block-linear parameters ``{weight [G, H/G, 3H/G], bias [3H]}``."""
    xp = namespace_of(features, belief)
    lead = tuple(belief.shape[:-1])
    h = int(belief.shape[-1])
    f = int(features.shape[-1])
    hb = h // num_blocks
    grouped = xp.reshape(belief, lead + (num_blocks, hb))
    repeated = xp.broadcast_to(xp.expand_dims(features, axis=-2), lead + (num_blocks, f))
    hidden = xp.reshape(xp.concat([grouped, repeated], axis=-1), lead + (num_blocks * (hb + f),))
    hidden = hidden_layers(hidden)
    gate_values = xp.reshape(block_linear(hidden, gates["weight"], gates["bias"]), lead + (num_blocks, 3, hb))
    reset = gate_sigmoid(xp.reshape(gate_values[..., 0, :], lead + (h,)))
    candidate = xp.tanh(reset * xp.reshape(gate_values[..., 1, :], lead + (h,)))
    update = gate_sigmoid(xp.reshape(gate_values[..., 2, :], lead + (h,)) + update_bias)
    return update * candidate + (1.0 - update) * belief


# ------------------------------------------------------------------------------------------------ GRUCell
class GRUCell(_Layer):
    """``torch.nn.GRUCell(input_size, hidden_size, bias=True)``: ``apply(params, input [*B, I], hx [*B, H] | None)
    -> [*B, H]`` (``hx=None`` is zeros). Parameters ``weight_ih [3H, I]``, ``weight_hh [3H, H]``, ``bias_ih [3H]``,
    ``bias_hh [3H]`` (gates ``r, z, n``), all ``U(-1/sqrt(H), 1/sqrt(H))`` at init."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, generator: Any = None,
                 xp: Any = None, dtype: Any = None, device: Any = None):
        self.input_size = _index(input_size, "input_size", minimum=1)
        self.hidden_size = _index(hidden_size, "hidden_size", minimum=1)
        if not isinstance(bias, bool):
            raise TypeError(f"bias: expected a bool, got {type(bias).__name__}")
        self.bias = bias
        h, i = self.hidden_size, self.input_size
        self._spec: dict[str, tuple[int, ...]] = {"weight_ih": (3 * h, i), "weight_hh": (3 * h, h)}
        if bias:
            self._spec.update({"bias_ih": (3 * h,), "bias_hh": (3 * h,)})
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        return {k: uniform_fan_in(generator, shape, self.hidden_size, dtype) for k, shape in self._spec.items()}

    def apply(self, params: dict, input: Any, hx: Any = None) -> Any:
        _check_tree(params, self._spec, "params")
        _check_dtypes(input, "input", params)
        _check_features(input, self.input_size, "input", "input_size")
        xp = namespace_of(input, hx, names=("input", "hx"))
        batch = tuple(input.shape[:-1])
        if hx is None:
            hx = xp.zeros(batch + (self.hidden_size,), dtype=input.dtype, **_dev_kw(input))
        else:
            check_floating(hx, "hx")
            if tuple(hx.shape) != batch + (self.hidden_size,):
                raise ValueError(f"hx: expected shape {batch + (self.hidden_size,)} (input's batch, hidden_size), "
                                 f"got {tuple(hx.shape)}")
            if hx.dtype != input.dtype:
                raise TypeError(f"hx: dtype {dtype_name(hx.dtype)} differs from input: {dtype_name(input.dtype)}")
        if input.ndim == 1:
            out = gru_cell(params, xp.expand_dims(input, axis=0), xp.expand_dims(hx, axis=0))
            return out[0, ...]
        x2, _ = _flatten(input, self.input_size)
        h2, _ = _flatten(hx, self.hidden_size)
        return _unflatten(gru_cell(params, x2, h2), batch)

    def __repr__(self) -> str:
        return f"GRUCell({self.input_size}, {self.hidden_size}, bias={self.bias})"


def _dev_kw(x: Any) -> dict:
    dev = device_of(x)
    return {} if dev is None else {"device": dev}


# ------------------------------------------------------------------------------------------------ RMSNorm
class RMSNorm(_Layer):
    """``torch.nn.RMSNorm(normalized_shape, eps=None, elementwise_affine=True)``: normalise over the trailing
    ``len(normalized_shape)`` axes, ``x / sqrt(mean(x^2) + eps) * weight``; ``eps=None`` is the machine epsilon of the
    input dtype (torch's default). Parameters ``{"weight": [*normalized_shape]}`` (ones at init), or ``{}``."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float | None = None,
                 elementwise_affine: bool = True, *, generator: Any = None, xp: Any = None, dtype: Any = None,
                 device: Any = None):
        shape: tuple[int, ...]
        if isinstance(normalized_shape, Sequence):
            shape = tuple(_index(s, f"normalized_shape[{i}]", minimum=1) for i, s in enumerate(normalized_shape))
        else:
            shape = (_index(normalized_shape, "normalized_shape", minimum=1),)
        if not shape:
            raise ValueError("normalized_shape: expected at least one dimension")
        self.normalized_shape = shape
        if eps is not None:
            eps = float(eps)
            if not eps >= 0:
                raise ValueError(f"eps: expected a number >= 0 or None, got {eps!r}")
        self.eps = eps
        self.elementwise_affine = bool(elementwise_affine)
        self._spec = {"weight": shape} if self.elementwise_affine else {}
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        if not self.elementwise_affine:
            return {}
        xp, kw = _xp_kw(generator)
        return {"weight": xp.ones(self.normalized_shape, dtype=dtype, **kw)}

    def apply(self, params: dict, x: Any) -> Any:
        _check_tree(params, self._spec, "params")
        _check_dtypes(x, "input", params)
        k = len(self.normalized_shape)
        if tuple(x.shape[x.ndim - k:]) != self.normalized_shape or x.ndim < k:
            raise ValueError(f"input: expected trailing dimensions {self.normalized_shape} (normalized_shape), got "
                             f"shape {tuple(x.shape)}")
        xp = namespace_of(x)
        eps = float(xp.finfo(x.dtype).eps) if self.eps is None else self.eps
        return rms_norm(x, params.get("weight"), eps, k)

    def __repr__(self) -> str:
        return (f"RMSNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine})")


# ------------------------------------------------------------------------------------------------ DreamerV3 block GRU
_DV3_STD = 1.1368


class DreamerV3BlockGRUCell(_Layer):
    """``torchrl.modules.DreamerV3BlockGRUCell``: ``apply(params, input [*B, I], hidden [*B, H] | None) -> [*B, H]``.

    Args (TorchRL's): ``input_size``, ``hidden_size`` (divisible by ``num_blocks``), ``projection_size=512``,
    ``num_blocks=8``, ``num_layers=1``, ``activation_class="silu"`` (a name, ``nn.SiLU``-like class or function),
    ``norm_eps=1e-4``, ``update_bias=-1.0``. Layout and math: see the module docstring.
    """

    def __init__(self, input_size: int, hidden_size: int, *, projection_size: int = 512, num_blocks: int = 8,
                 num_layers: int = 1, activation_class: Any = "silu", norm_eps: float = 1e-4,
                 update_bias: float = -1.0, generator: Any = None, xp: Any = None, dtype: Any = None,
                 device: Any = None):
        self.input_size = _index(input_size, "input_size", minimum=1)
        self.hidden_size = _index(hidden_size, "hidden_size", minimum=1)
        self.projection_size = _index(projection_size, "projection_size", minimum=1)
        self.num_blocks = _index(num_blocks, "num_blocks", minimum=1)
        self.num_layers = _index(num_layers, "num_layers", minimum=1)
        if self.hidden_size % self.num_blocks:
            raise ValueError(f"hidden_size: must be divisible by num_blocks, got {self.hidden_size} and "
                             f"{self.num_blocks}")
        self.norm_eps = float(norm_eps)
        self.update_bias = float(update_bias)
        self.activation_class = activation_class
        self.activation = get_activation(activation_class)
        h, p, g, i = self.hidden_size, self.projection_size, self.num_blocks, self.input_size
        first = h + 2 * p * g
        self._layer_in = [first] + [h] * (self.num_layers - 1)
        self._spec = {
            "input_linear": {"weight": (p, i), "bias": (p,)},
            "input_norm": {"weight": (p,)},
            "hidden_linear": {"weight": (p, h), "bias": (p,)},
            "hidden_norm": {"weight": (p,)},
            "dynamic_linears": {str(k): {"weight": (g, n // g, h // g), "bias": (h,)}
                                for k, n in enumerate(self._layer_in)},
            "dynamic_norms": {str(k): {"weight": (h,)} for k in range(self.num_layers)},
            "gates": {"weight": (g, h // g, 3 * h // g), "bias": (3 * h,)},
        }
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        xp, kw = _xp_kw(generator)
        h, p, g, i = self.hidden_size, self.projection_size, self.num_blocks, self.input_size

        def lin(n_in: int, n_out: int) -> dict:
            return {"weight": trunc_normal(generator, (n_out, n_in), _DV3_STD / math.sqrt(n_in), dtype),
                    "bias": xp.zeros((n_out,), dtype=dtype, **kw)}

        def block(n_in: int, n_out: int) -> dict:  # fan-in spans the whole kernel (in_features, not in/G)
            return {"weight": trunc_normal(generator, (g, n_in // g, n_out // g), _DV3_STD / math.sqrt(n_in), dtype),
                    "bias": xp.zeros((n_out,), dtype=dtype, **kw)}

        def ones(n: int) -> dict:
            return {"weight": xp.ones((n,), dtype=dtype, **kw)}

        return {
            "input_linear": lin(i, p),
            "input_norm": ones(p),
            "hidden_linear": lin(h, p),
            "hidden_norm": ones(p),
            "dynamic_linears": {str(k): block(n, h) for k, n in enumerate(self._layer_in)},
            "dynamic_norms": {str(k): ones(h) for k in range(self.num_layers)},
            "gates": block(h, 3 * h),
        }

    def _check(self, params: Any, where: str = "params") -> None:
        _check_tree(params, self._spec, where)

    def _project_input(self, params: dict, x: Any) -> Any:
        """``act(rms(input_linear(x)))`` on ``[M, I]``."""
        v = ops.linear(x, params["input_linear"]["weight"], params["input_linear"]["bias"])
        return self.activation(rms_norm(v, params["input_norm"]["weight"], self.norm_eps))

    def _step_projected(self, params: dict, projected: Any, hidden: Any) -> Any:
        """One recurrence step from the projected input ``[M, P]`` and ``hidden [M, H]``."""
        xp = namespace_of(projected, hidden)
        hf = ops.linear(hidden, params["hidden_linear"]["weight"], params["hidden_linear"]["bias"])
        hf = self.activation(rms_norm(hf, params["hidden_norm"]["weight"], self.norm_eps))
        features = xp.concat([projected, hf], axis=-1)

        def dynamics(v: Any) -> Any:
            for k in range(self.num_layers):
                lin = params["dynamic_linears"][str(k)]
                v = block_linear(v, lin["weight"], lin["bias"])
                v = self.activation(rms_norm(v, params["dynamic_norms"][str(k)]["weight"], self.norm_eps))
            return v

        return block_gru_update(features, hidden, dynamics, params["gates"], num_blocks=self.num_blocks,
                                update_bias=self.update_bias)

    def _check_hidden(self, hidden: Any, input: Any, batch: tuple) -> Any:
        xp = namespace_of(input, hidden, names=("input", "hidden"))
        if hidden is None:
            return xp.zeros(batch + (self.hidden_size,), dtype=input.dtype, **_dev_kw(input))
        check_floating(hidden, "hidden")
        if tuple(hidden.shape) != batch + (self.hidden_size,):
            raise ValueError(f"hidden: expected shape {batch + (self.hidden_size,)} (the input's batch shape, "
                             f"hidden_size), got {tuple(hidden.shape)}")
        if hidden.dtype != input.dtype:
            raise TypeError(f"hidden: dtype {dtype_name(hidden.dtype)} differs from input: {dtype_name(input.dtype)}")
        return hidden

    def apply(self, params: dict, input: Any, hidden: Any = None) -> Any:
        self._check(params)
        _check_dtypes(input, "input", params)
        _check_features(input, self.input_size, "input", "input_size")
        batch = tuple(input.shape[:-1])
        hidden = self._check_hidden(hidden, input, batch)
        xp = namespace_of(input, hidden)
        x2 = xp.reshape(input, (-1, self.input_size))
        h2 = xp.reshape(hidden, (-1, self.hidden_size))
        out = self._step_projected(params, self._project_input(params, x2), h2)
        return xp.reshape(out, batch + (self.hidden_size,))

    def __repr__(self) -> str:
        return (f"DreamerV3BlockGRUCell({self.input_size}, {self.hidden_size}, projection_size="
                f"{self.projection_size}, num_blocks={self.num_blocks}, num_layers={self.num_layers})")


class DreamerV3BlockGRU(_Layer):
    """``torchrl.modules.DreamerV3BlockGRU`` (the ``"reference"`` backend): batch-major sequences.

    ``apply(params, input [B, T, I], hidden [B, H] | None, is_init [B, T] | [B, T, 1] | None) -> (outputs [B, T, H],
    final hidden [B, H])``; where ``is_init[:, t]`` the carry is zeroed before step ``t``. ``params = {"cell":
    <DreamerV3BlockGRUCell tree>}``. The time loop is a Python loop over the static ``T``.
    """

    def __init__(self, input_size: int, hidden_size: int, *, projection_size: int = 512, num_blocks: int = 8,
                 num_layers: int = 1, activation_class: Any = "silu", norm_eps: float = 1e-4,
                 update_bias: float = -1.0, generator: Any = None, xp: Any = None, dtype: Any = None,
                 device: Any = None):
        self.cell = DreamerV3BlockGRUCell(input_size, hidden_size, projection_size=projection_size,
                                          num_blocks=num_blocks, num_layers=num_layers,
                                          activation_class=activation_class, norm_eps=norm_eps,
                                          update_bias=update_bias, xp=xp, dtype=dtype, device=device,
                                          generator=generator)
        self._build_params(generator, xp, dtype, device, {"cell": self.cell.params})

    def _init(self, generator: Any, dtype: Any) -> dict:
        return {"cell": self.cell._init(generator, dtype)}

    def apply(self, params: dict, input: Any, hidden: Any = None, is_init: Any = None) -> tuple:
        cell = self.cell
        _check_tree(params, {"cell": cell._spec}, "params")
        p = params["cell"]
        _check_dtypes(input, "input", p)
        if input.ndim != 3 or input.shape[-1] != cell.input_size:
            raise ValueError(f"input: expected shape [batch, time, {cell.input_size}] (input_size), got "
                             f"{tuple(input.shape)}")
        b, t = int(input.shape[0]), int(input.shape[1])
        if t == 0:
            raise ValueError("input: must contain at least one time step")
        hidden = cell._check_hidden(hidden, input, (b,))
        xp = namespace_of(input, hidden, is_init, names=("input", "hidden", "is_init"))
        if is_init is not None:
            if is_init.ndim == 3 and is_init.shape[-1] == 1:
                is_init = xp.squeeze(is_init, axis=-1)
            if tuple(is_init.shape) != (b, t) or is_init.dtype != xp.bool:
                raise ValueError(f"is_init: expected a bool array of shape {(b, t)} or {(b, t, 1)}, got shape "
                                 f"{tuple(is_init.shape)} and dtype {dtype_name(is_init.dtype)}")
        projected = cell._project_input(p, xp.reshape(input, (b * t, cell.input_size)))
        projected = xp.reshape(projected, (b, t, cell.projection_size))
        outputs = []
        for step in range(t):
            if is_init is not None:
                mask = xp.expand_dims(is_init[:, step], axis=-1)
                hidden = xp.where(mask, xp.zeros_like(hidden), hidden)
            hidden = cell._step_projected(p, projected[:, step, :], hidden)
            outputs.append(hidden)
        return xp.stack(outputs, axis=1), hidden

    def __repr__(self) -> str:
        c = self.cell
        return (f"DreamerV3BlockGRU({c.input_size}, {c.hidden_size}, projection_size={c.projection_size}, "
                f"num_blocks={c.num_blocks}, num_layers={c.num_layers})")
