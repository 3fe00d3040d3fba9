"""Normalisation layers with running statistics as **explicit state** (DESIGN.md section 7):
:class:`BatchNorm1d` (``torch.nn.BatchNorm1d``), :class:`BatchRenorm1d` (``torchrl.modules.BatchRenorm1d``,
Ioffe 2017, arXiv:1702.03275, as used by CrossQ, Bhatt et al. 2024), :class:`NormMLP` (``torchrl.modules.MLP`` with
``norm_class``) and :class:`StatefulValueOperator` (a keyed critic around a stateful network).

The protocol::

    out, new_state = layer.apply(params, x, state, train=True)    # batch statistics, state advanced
    out, same      = layer.apply(params, x, state, train=False)   # running statistics, state returned unchanged

Nothing is mutated: ``layer.state`` is only a default (the initial statistics); the caller keeps the state it gets
back. Gradients flow through the batch statistics (mean and standard deviation of the batch are on the tape);
the running statistics and BatchRenorm's ``r``/``d`` corrections carry no gradient, as in torch.

Layout (weights and statistics copy 1:1 from torch): ``params = {"weight": [C], "bias": [C]}`` (``affine``),
``state = {"running_mean": [C], "running_var": [C], "num_batches_tracked": int64 []}``. Inputs are ``[B, C]`` or
``[B, C, L]`` (statistics over every axis but the channel axis ``1``). **Ensembles**: params and state with a leading
member axis (``weight [N, C]``, ``running_mean [N, C]``, ``num_batches_tracked [N]``) take inputs ``[N, B, C(, L)]``
and compute each member's statistics over its own batch (TorchRL's ``vmap`` over stacked parameters and buffers).

Shape checks only, never data: a training batch of one sample per channel raises (torch's "Expected more than 1
value per channel when training").

Divergence (``torchrl_compat=True`` reproduces TorchRL 0.14.1): TorchRL's ``BatchRenorm1d`` calls the out-of-place
``num_batches_tracked.clamp_max(warmup_steps)`` and discards the result, so the counter keeps growing and the
warm-up factor ``num_batches_tracked // warmup_steps`` (or ``/ warmup_steps`` with ``smooth``) exceeds 1 after
``2 * warmup_steps`` batches: ``r`` and ``d`` are then *extrapolated* (``r = 1 + 2 (r - 1)``...), beyond the
``r_max``/``d_max`` clip. arrayrl clamps the factor to ``[0, 1]`` (the intent of that line, and the CrossQ authors'
``steps >= warmup_steps`` switch). Kept as TorchRL: the unbiased running variance uses the batch axis size only
(``B / (B - 1)``, also for ``[B, C, L]`` inputs).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .. import data as _data
from .. import ops
from .._backend import base_of, device_of, namespace_of
from .._checks import check_floating
from ..random import _index
from ..tree import tree_flatten, tree_unflatten
from .layers import _Layer, _kwargs_list, get_activation
from .params import linear_params

__all__ = ["BatchNorm1d", "BatchRenorm1d", "NormMLP", "StatefulValueOperator", "stack_states", "expand_state"]


def _sg(x: Any) -> Any:
    from ..autodiff import stop_gradient

    return stop_gradient(x)


def _float(value: Any, name: str, low: float | None = None, *, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if low is not None and not value > low:
        raise ValueError(f"{name}: expected a value > {low}, got {value}")
    return float(value)


class _BatchNormBase(_Layer):
    """Shared parameter/state handling of the batch-normalisation layers."""

    num_features: int  # set by each subclass's __init__
    affine: bool = True
    track_running_stats: bool = True

    def _init(self, generator: Any, dtype: Any) -> dict:
        if not self.affine:
            return {}
        xp, dev = generator.xp, getattr(generator, "device", None)
        c = self.num_features
        kw = {} if dev is None else {"device": dev}
        return {"weight": xp.ones((c,), dtype=dtype, **kw), "bias": xp.zeros((c,), dtype=dtype, **kw)}

    def init_state(self, *, xp: Any = None, dtype: Any = None, device: Any = None, like: Any = None) -> dict:
        """Fresh running statistics (``running_mean`` 0, ``running_var`` 1, ``num_batches_tracked`` 0); the namespace,
        dtype and device of ``like`` (an array) or of ``xp``/``dtype``/``device`` (default: those of the construction,
        NumPy float64)."""
        if not self.track_running_stats:
            return {}
        if like is not None:
            xp, dtype, device = namespace_of(like), like.dtype, device_of(like)
        if xp is None:
            xp = self._init_xp
        if xp is None:  # the default namespace of arrayrl's initialisers (that of a default Generator)
            from .module import resolve_generator

            xp = resolve_generator(None, None, device).xp
        xp = base_of(xp)
        if dtype is None:
            from .._backend import default_float_dtype

            dtype = self._init_dtype if self._init_dtype is not None else default_float_dtype(xp, device)
        device = device if device is not None else self._init_device
        kw = {} if device is None else {"device": device}
        c = self.num_features
        return {"running_mean": xp.zeros((c,), dtype=dtype, **kw), "running_var": xp.ones((c,), dtype=dtype, **kw),
                "num_batches_tracked": xp.asarray(0, dtype=xp.int64, **kw)}

    def _layout(self, params: Mapping, x: Any, state: Mapping) -> tuple:
        """``(lead, reduce axes, broadcast shape, batch count)`` after checking shapes."""
        check_floating(x, "input")
        ref = state.get("running_mean") if state else (params.get("weight") if params else None)
        if ref is None:
            lead, lead_shape = 0, ()
        else:
            lead = ref.ndim - 1
            if lead not in (0, 1):
                raise ValueError(f"state['running_mean']: expected shape (C,) or (N, C) (an ensemble), got "
                                 f"{tuple(ref.shape)}")
            lead_shape = tuple(ref.shape[:lead])
        c = self.num_features
        if x.ndim not in (lead + 2, lead + 3):
            want = "[N, B, C] or [N, B, C, L]" if lead else "[B, C] or [B, C, L]"
            raise ValueError(f"input: {type(self).__name__} expects {want}, got shape {tuple(x.shape)}")
        if tuple(x.shape[:lead]) != lead_shape or x.shape[lead + 1] != c:
            raise ValueError(f"input: expected shape {lead_shape + ('B', c)}(, L) (num_features={c}), got "
                             f"{tuple(x.shape)}")
        for tree, names, what in ((params, ("weight", "bias"), "params"),
                                  (state, ("running_mean", "running_var"), "state")):
            for name in names:
                if tree and name in tree and tuple(tree[name].shape) != lead_shape + (c,):
                    raise ValueError(f"{what}[{name!r}]: expected shape {lead_shape + (c,)}, got "
                                     f"{tuple(tree[name].shape)}")
        if self.affine and (not params or "weight" not in params or "bias" not in params):
            raise KeyError(f"params: {type(self).__name__}(affine=True) needs 'weight' and 'bias', got "
                           f"{sorted(params) if params else []}")
        if self.track_running_stats and (not state or any(k not in state for k in
                                                          ("running_mean", "running_var", "num_batches_tracked"))):
            raise KeyError(f"state: expected 'running_mean', 'running_var' and 'num_batches_tracked' (see "
                           f"init_state()), got {sorted(state) if state else []}")
        axes = (lead,) + tuple(range(lead + 2, x.ndim))
        bshape = lead_shape + (1, c) + (1,) * (x.ndim - lead - 2)
        count = 1
        for a in axes:
            count *= int(x.shape[a])
        return lead, axes, bshape, count

    @staticmethod
    def _batch_stats(x: Any, axes: tuple, bshape: tuple) -> tuple:
        xp = namespace_of(x)
        mean = xp.mean(x, axis=axes)
        dev = x - xp.reshape(mean, bshape)
        var = xp.mean(dev * dev, axis=axes)  # biased (torch normalises with it)
        return mean, var, dev

    def _affine(self, params: Mapping, y: Any, bshape: tuple) -> Any:
        if not self.affine:
            return y
        xp = namespace_of(y, params["weight"], params["bias"])
        return y * xp.reshape(params["weight"], bshape) + xp.reshape(params["bias"], bshape)

    def __call__(self, x: Any, state: Any = None, *, train: bool = True) -> tuple:
        return self.apply(self.params, x, state, train=train)


class BatchNorm1d(_BatchNormBase):
    """``torch.nn.BatchNorm1d`` as a pure function of ``(params, x, state)``.

    Args:
        num_features: ``C``.
        eps: added to the variance (``1e-5``).
        momentum: running-average factor (``0.1``); ``None``: cumulative average ``1 / num_batches_tracked``.
        affine: learnable ``weight``/``bias`` (``True``).
        track_running_stats: keep running statistics (``True``); without them batch statistics are always used and
            the state is ``{}``.
        generator, xp, dtype, device: defaults of :meth:`init` / :meth:`init_state`.

    ``apply(params, x, state, train=True) -> (y, new_state)``: ``train=True`` normalises with the batch mean and
    the biased batch variance and returns ``running = (1 - m) running + m stat`` (unbiased variance,
    ``num_batches_tracked + 1``); ``train=False`` normalises with the running statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, generator: Any = None, xp: Any = None, dtype: Any = None,
                 device: Any = None):
        self.num_features = _index(num_features, "num_features", 1)
        self.eps = _float(eps, "eps", 0.0)
        self.momentum = _float(momentum, "momentum", allow_none=True)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        self._build_params(generator, xp, dtype, device)
        self.state = self.init_state()

    def apply(self, params: Any, x: Any, state: Any = None, *, train: bool = True) -> tuple:
        state = self.state if state is None else state
        lead, axes, bshape, count = self._layout(params, x, state)
        xp = namespace_of(x)
        use_batch = bool(train) or not self.track_running_stats
        if use_batch:
            if count <= 1:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                                 f"{tuple(x.shape)}")
            mean, var, dev = self._batch_stats(x, axes, bshape)
            y = dev / xp.reshape(xp.sqrt(var + self.eps), bshape)
        else:
            rm, rv = state["running_mean"], state["running_var"]
            y = (x - xp.reshape(rm, bshape)) / xp.reshape(xp.sqrt(rv + self.eps), bshape)
        y = self._affine(params, y, bshape)
        if not (train and self.track_running_stats):
            return y, state
        sx = namespace_of(_sg(mean))
        nbt = state["num_batches_tracked"] + 1
        rm, rv = state["running_mean"], state["running_var"]
        m = self.momentum
        if m is None:
            f = 1.0 / sx.astype(nbt, rm.dtype)
            f = sx.reshape(f, tuple(f.shape) + (1,))
        else:
            f = m
        unbiased = _sg(var) * (count / (count - 1))
        new = {"running_mean": (1 - f) * rm + f * _sg(mean), "running_var": (1 - f) * rv + f * unbiased,
               "num_batches_tracked": nbt}
        return y, new

    def __repr__(self) -> str:
        return (f"BatchNorm1d({self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats})")


class BatchRenorm1d(_BatchNormBase):
    """TorchRL's ``BatchRenorm1d`` (Ioffe 2017) as a pure function of ``(params, x, state)``.

    Args:
        num_features: ``C``.

    Keyword Args:
        momentum (0.01), eps (1e-5), max_r (3.0), max_d (5.0), warmup_steps (10000), smooth (False): as TorchRL.
        torchrl_compat: let the warm-up factor exceed 1 as TorchRL 0.14.1 does (module docstring).
        generator, xp, dtype, device: defaults of :meth:`init` / :meth:`init_state`.

    Training (``train=True``), per channel, ``sigma = sqrt(running_var + eps)``::

        mu_B, var_B = batch mean, biased batch variance;  s_B = sqrt(var_B + eps)
        r = clip(sg(s_B) / sigma, 1/max_r, max_r);  d = clip((sg(mu_B) - running_mean) / sigma, -max_d, max_d)
        f = num_batches_tracked // warmup_steps (or / warmup_steps with smooth), clipped to 1 (not in compat)
        r = 1 + (r - 1) f;  d = d f
        y = weight ((x - mu_B) / s_B r + d) + bias
        running_var += momentum (var_B B / (B - 1) - running_var); running_mean += momentum (mu_B - running_mean)
        num_batches_tracked += 1

    Evaluation: ``y = weight (x - running_mean) / sigma + bias``.
    """

    def __init__(self, num_features: int, *, momentum: float = 0.01, eps: float = 1e-5, max_r: float = 3.0,
                 max_d: float = 5.0, warmup_steps: int = 10000, smooth: bool = False, torchrl_compat: bool = False,
                 generator: Any = None, xp: Any = None, dtype: Any = None, device: Any = None):
        self.num_features = _index(num_features, "num_features", 1)
        self.momentum = _float(momentum, "momentum")
        self.eps = _float(eps, "eps", 0.0)
        self.max_r = _float(max_r, "max_r", 0.0)
        self.max_d = _float(max_d, "max_d")
        if self.max_d < 0:
            raise ValueError(f"max_d: expected a value >= 0, got {max_d}")
        self.warmup_steps = _index(warmup_steps, "warmup_steps")
        self.smooth, self.torchrl_compat = bool(smooth), bool(torchrl_compat)
        self._build_params(generator, xp, dtype, device)
        self.state = self.init_state()

    def apply(self, params: Any, x: Any, state: Any = None, *, train: bool = True) -> tuple:
        state = self.state if state is None else state
        lead, axes, bshape, _ = self._layout(params, x, state)
        xp = namespace_of(x)
        rm, rv, nbt = state["running_mean"], state["running_var"], state["num_batches_tracked"]
        sx = namespace_of(rm)
        running_std = sx.sqrt(rv + self.eps)
        if not train:
            y = (x - xp.reshape(rm, bshape)) / xp.reshape(running_std, bshape)
            return self._affine(params, y, bshape), state
        nb = int(x.shape[lead])
        if nb <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        mean, var, dev = self._batch_stats(x, axes, bshape)
        std = xp.sqrt(var + self.eps)
        smean, sstd, svar = _sg(mean), _sg(std), _sg(var)
        r = sx.clip(sstd / running_std, min=1.0 / self.max_r, max=self.max_r)
        d = sx.clip((smean - rm) / running_std, min=-self.max_d, max=self.max_d)
        if self.warmup_steps > 0:
            if self.smooth:
                f = sx.astype(nbt, rm.dtype) / self.warmup_steps
            else:
                f = sx.astype(nbt // self.warmup_steps, rm.dtype)
            if not self.torchrl_compat:
                f = sx.clip(f, max=1.0)
            f = sx.reshape(f, tuple(f.shape) + (1,))
            r = 1.0 + (r - 1.0) * f
            d = d * f
        y = dev / xp.reshape(std, bshape) * xp.reshape(r, bshape) + xp.reshape(d, bshape)
        unbiased = svar * nb / (nb - 1)
        new = {"running_mean": rm + self.momentum * (smean - rm), "running_var": rv + self.momentum * (unbiased - rv),
               "num_batches_tracked": nbt + 1}
        return self._affine(params, y, bshape), new

    def __repr__(self) -> str:
        return (f"BatchRenorm1d({self.num_features}, momentum={self.momentum}, eps={self.eps}, max_r={self.max_r}, "
                f"max_d={self.max_d}, warmup_steps={self.warmup_steps}, smooth={self.smooth}, "
                f"torchrl_compat={self.torchrl_compat})")


_NORMS = {"batchnorm1d": BatchNorm1d, "batch_norm": BatchNorm1d, "batchrenorm1d": BatchRenorm1d,
          "batch_renorm": BatchRenorm1d}


def _norm_class(norm_class: Any) -> type:
    if isinstance(norm_class, type) and issubclass(norm_class, _BatchNormBase):
        return norm_class
    name = norm_class if isinstance(norm_class, str) else getattr(norm_class, "__name__", None)
    if isinstance(name, str) and name.lower() in _NORMS:
        return _NORMS[name.lower()]
    raise TypeError(f"norm_class: expected BatchNorm1d, BatchRenorm1d (arrayrl or torch/TorchRL class, or its name), "
                    f"got {norm_class!r}")


class NormMLP(_Layer):
    """``torchrl.modules.MLP`` with ``norm_class``: ``Linear, Norm, Act, Linear, Norm, Act, ..., Linear``, same
    ``nn.Sequential`` indices, so ``params`` (linear and norm weights) and ``state`` (the norms' running statistics,
    keyed by the norm's index) copy 1:1 from TorchRL's ``state_dict``.

    Args:
        in_features, out_features, num_cells, activation_class, activation_kwargs, activate_last_layer,
        bias_last_layer: as :class:`~arrayrl.nn.MLP`.
        norm_class: :class:`BatchNorm1d` or :class:`BatchRenorm1d` (or torch's / TorchRL's class, or a name).
        norm_kwargs: a dict or a list of one dict per norm layer (``num_features`` is filled in; if given it must
            match).

    ``apply(params, *inputs, state=None, train=True) -> (y, new_state)``; inputs ``[B, F]`` (several are
    concatenated), output ``[B, out]``. An ensemble tree (leading ``N`` on every leaf of params and state) gives
    ``[N, B, out]`` in one batched pass, each member normalising over its own activations.
    """

    def __init__(self, in_features: int, out_features: int, num_cells: Sequence[int] = (), *,
                 norm_class: Any = "batch_renorm", norm_kwargs: Any = None, activation_class: Any = "tanh",
                 activation_kwargs: Any = None, activate_last_layer: bool = False, bias_last_layer: bool = True,
                 generator: Any = None, xp: Any = None, dtype: Any = None, device: Any = None):
        self.in_features = _index(in_features, "in_features", 1)
        self.out_features = _index(out_features, "out_features", 1)
        self.num_cells = [_index(c, f"num_cells[{i}]", 1) for i, c in enumerate(num_cells)]
        self.depth = len(self.num_cells)
        self.activate_last_layer, self.bias_last_layer = bool(activate_last_layer), bool(bias_last_layer)
        n_act = self.depth + int(self.activate_last_layer)
        cls = _norm_class(norm_class)
        nkw = _kwargs_list(norm_kwargs, n_act, "norm_kwargs")
        acts = [get_activation(activation_class, kw) for kw in _kwargs_list(activation_kwargs, n_act, "activation_kwargs")]
        sizes_in, sizes_out = [self.in_features] + self.num_cells, self.num_cells + [self.out_features]
        # (kind, key, module-or-sizes)
        self.layers: list = []
        index = 0
        for i, (a, b) in enumerate(zip(sizes_in, sizes_out)):
            last = i == self.depth
            self.layers.append(("linear", str(index), (a, b, self.bias_last_layer if last else True)))
            index += 1
            if not last or self.activate_last_layer:
                kw = dict(nkw[i])
                nf = kw.pop("num_features", b)
                if nf != b:
                    raise ValueError(f"norm_kwargs[{i}]: num_features={nf} but the layer has {b} features")
                kw.pop("device", None)
                kw.pop("dtype", None)
                self.layers.append(("norm", str(index), cls(b, **kw, xp=xp, dtype=dtype, device=device)))
                self.layers.append(("act", str(index + 1), acts[i]))
                index += 2
        self._build_params(generator, xp, dtype, device)
        self.state = self.init_state(xp=xp, dtype=dtype, device=device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        out = {}
        for kind, key, obj in self.layers:
            if kind == "linear":
                a, b, bias = obj
                out[key] = linear_params(generator, a, b, bias=bias, dtype=dtype)
            elif kind == "norm":
                out[key] = obj._init(generator, dtype)
        return out

    def init_state(self, *, xp: Any = None, dtype: Any = None, device: Any = None, like: Any = None) -> dict:
        """Fresh running statistics of every norm layer, ``{index: state}``."""
        return {key: obj.init_state(xp=xp, dtype=dtype, device=device, like=like)
                for kind, key, obj in self.layers if kind == "norm"}

    def apply(self, params: Any, *inputs: Any, state: Any = None, train: bool = True) -> tuple:
        state = self.state if state is None else state
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a dict keyed by layer index, got {type(params).__name__}")
        for kind, key, _ in self.layers:
            if kind in ("linear", "norm") and key not in params:
                raise KeyError(f"params: missing layer {key!r}; keys present: {list(params)}")
            if kind == "norm" and key not in state:
                raise KeyError(f"state: missing the statistics of norm layer {key!r}; keys present: {list(state)}")
        if not inputs:
            raise TypeError("NormMLP.apply: expected at least one input array")
        for i, a in enumerate(inputs):
            check_floating(a, f"inputs[{i}]")
            if a.ndim != 2:
                raise ValueError(f"inputs[{i}]: NormMLP expects a [B, features] input (batch statistics over one "
                                 f"batch axis), got shape {tuple(a.shape)}")
        h = inputs[0] if len(inputs) == 1 else namespace_of(*inputs).concat(list(inputs), axis=-1)
        if h.shape[-1] != self.in_features:
            raise ValueError(f"inputs: expected {self.in_features} features in all (in_features), got {h.shape[-1]}")
        first = params[self.layers[0][1]]["weight"]
        if first.ndim not in (2, 3):
            raise ValueError(f"params['0']['weight']: expected shape (out, in) or (N, out, in), got {tuple(first.shape)}")
        n = int(first.shape[0]) if first.ndim == 3 else None
        new_state = {}
        for kind, key, obj in self.layers:
            if kind == "linear":
                a, b, bias = obj
                w = params[key]["weight"]
                want = ((n,) if n is not None else ()) + (b, a)
                if tuple(w.shape) != want:
                    raise ValueError(f"params[{key!r}]['weight']: expected shape {want}, got {tuple(w.shape)}")
                h = ops.linear(h, w, params[key].get("bias") if bias else None)
            elif kind == "norm":
                h, new_state[key] = obj.apply(params[key], h, state[key], train=train)
            else:
                h = obj(h)
        return h, new_state

    def __call__(self, *inputs: Any, state: Any = None, train: bool = True) -> tuple:
        return self.apply(self.params, *inputs, state=state, train=train)

    def __repr__(self) -> str:
        norms = [type(o).__name__ for k, _, o in self.layers if k == "norm"]
        return (f"NormMLP(in_features={self.in_features}, out_features={self.out_features}, "
                f"num_cells={self.num_cells}, norms={norms})")


def stack_states(states: Sequence[Any]) -> Any:
    """Stack per-member state trees on a new leading axis (an ensemble's state)."""
    flat = [tree_flatten(s) for s in states]
    leaves0, treedef = flat[0]
    out = []
    for j in range(len(leaves0)):
        col = [f[0][j] for f in flat]
        out.append(namespace_of(*col).stack(col, axis=0))
    return tree_unflatten(treedef, out)


def expand_state(state: Any, n: int) -> Any:
    """``n`` copies of one state tree on a leading axis (TorchRL's ``buffer.expand(N, ...).clone()``)."""
    leaves, treedef = tree_flatten(state)
    out = []
    for x in leaves:
        xp = namespace_of(x)
        out.append(xp.asarray(xp.broadcast_to(xp.expand_dims(x, axis=0), (n,) + tuple(x.shape)), copy=True))
    return tree_unflatten(treedef, out)


class StatefulValueOperator:
    """A keyed critic around a stateful network (:class:`NormMLP`, or anything with
    ``apply(params, *inputs, state=..., train=...) -> (y, new_state)`` and ``params``/``state`` attributes).

    ``apply_with_state(params, batch, state, *, train) -> (outputs dict, new_state)`` reads ``in_keys`` and writes
    ``out_keys`` (default ``["state_action_value"]``); ``params``/``state`` are live views of the network's.
    """

    def __init__(self, module: Any, in_keys: Any = None, out_keys: Any = None):
        if not hasattr(module, "apply") or not hasattr(module, "state"):
            raise TypeError(f"module: expected a stateful network (apply(params, *x, state=, train=) and .state), got "
                            f"{type(module).__name__}")
        self.module = module
        in_keys = ["observation", "action"] if in_keys is None else in_keys
        out_keys = ["state_action_value"] if out_keys is None else out_keys
        self.in_keys = [_data.unravel_key(k) for k in ([in_keys] if isinstance(in_keys, str) else in_keys)]
        self.out_keys = [_data.unravel_key(k) for k in ([out_keys] if isinstance(out_keys, str) else out_keys)]
        if len(self.out_keys) != 1:
            raise ValueError(f"out_keys: expected one output key, got {self.out_keys}")

    @property
    def params(self) -> Any:
        return self.module.params

    @params.setter
    def params(self, value: Any) -> None:
        self.module.params = value

    @property
    def state(self) -> Any:
        return self.module.state

    @state.setter
    def state(self, value: Any) -> None:
        self.module.state = value

    @property
    def batched_ensemble(self) -> bool:
        """True if the network runs an ensemble tree (leading member axis) in one pass."""
        return isinstance(self.module, NormMLP)

    def apply_with_state(self, params: Any, batch: Mapping, state: Any, *, train: bool = True) -> tuple:
        inputs = [_data.get(batch, k, what="critic input") for k in self.in_keys]
        y, new_state = self.module.apply(params, *inputs, state=state, train=train)
        return _data.with_(batch, self.out_keys[0], y), new_state

    def __call__(self, batch: Mapping, *, train: bool = True) -> tuple:
        return self.apply_with_state(self.params, batch, self.state, train=train)

    def __repr__(self) -> str:
        return f"StatefulValueOperator({self.module!r}, in_keys={self.in_keys}, out_keys={self.out_keys})"
