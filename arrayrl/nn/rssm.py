"""DreamerV3's recurrent state-space model cells with categorical latents: :class:`RSSMPriorV3` (sequence model +
dynamics predictor) and :class:`RSSMPosteriorV3` (representation model), TorchRL 0.14.1's
``torchrl.modules.models.model_based.RSSMPriorV3`` / ``RSSMPosteriorV3``.

Hafner et al. 2023, "Mastering Diverse Domains through World Models", arXiv:2301.04104.

The stochastic state is ``num_categoricals`` (``C``) one-hot vectors of ``num_classes`` (``K``) classes, flattened
to ``[*B, C K]``. It is sampled with :func:`arrayrl.objectives.dreamer_utils.straight_through_categorical` from
``unimix_probs(logits, unimix)``: the uniform draws ``[*B, C]`` are injected (``uniform=``, TorchRL's ``_uniform``)
or drawn from ``generator`` (TorchRL's ``torch.rand(probs.shape[:-1])``); the value is one-hot, the gradient is that
of the probabilities.

Prior, ``recurrent_model="gru"`` (TorchRL's default)::

    x = silu(Lin([z, a]));  h' = GRUCell(x, h);  logits = Lin(silu(Lin(h')))  -> [*B, C, K]

Prior, ``recurrent_model="block_gru"`` (the reference DreamerV3 core, TorchRL's ``_DreamerV3BlockGRU``)::

    a <- a / max(|sg(a)|, 1)
    f = [silu(rms(Lin(h))), silu(rms(Lin(z))), silu(rms(Lin(a)))]
    h' = block_gru_update(f, h)  (8 blocks, update bias -1; arrayrl.nn.recurrent.block_gru_update)
    logits = Lin(silu(rms(Lin(...silu(rms(Lin(h'))))))  (prior_num_layers hidden layers)

Posterior: ``logits = Lin(silu(Lin([h, e])))``, or with ``use_rms_norm=True``
``Lin(silu(rms(Lin(...silu(rms(Lin([h, e])))))))`` (``num_layers`` hidden layers).

Parameter trees are TorchRL's ``state_dict`` nested at the dots, so weights copy 1:1
(:func:`arrayrl.interop.params_from_torch`):

* prior "gru": ``action_state_projector {"0": lin}``, ``rnn {weight_ih, weight_hh, bias_ih, bias_hh}``,
  ``rnn_to_prior_projector {"0": lin, "2": lin}``;
* prior "block_gru": ``rnn {belief_projection {"0": lin, "1": {weight}}, state_projection {...},
  action_projection {...}, hidden_layers {"0": {weight [G, in/G, H/G], bias [H]}, "1": {weight [H]}, ...},
  gates {weight [G, H/G, 3H/G], bias [3H]}}``, ``rnn_to_prior_projector {"0": lin, "1": {weight}, "3": lin, ...}``;
* posterior: ``obs_rnn_to_post_projector {"0": lin, "2": lin}`` (or ``{"0": lin, "1": {weight}, "3": lin...}``).

``lin`` is ``{"weight": [out, in], "bias": [out]}``. Initialisation: torch's defaults for the plain layers
(``U(+-1/sqrt(fan_in))``; TorchRL's ``nn.GRUCell`` / ``nn.Linear``), DreamerV3's truncated normal
(``std = 1.1368 / sqrt(fan_in)``, zero biases, unit norm weights) for the RMS-normalised ones, as TorchRL.

Divergences (documented in ``docs/divergences.md``): TorchRL's "gru" prior casts its GRU input to float32
(``action_state.float()``), so it cannot run in float64 (a dtype mismatch); TorchRL's DreamerV3 RMS norm computes in
float32 whatever the dtype. arrayrl computes in the input dtype throughout (float32 in, float32 out). Unlike
TorchRL there is no ``nn.LazyLinear``: the input sizes (``action_dim``; ``rnn_hidden_dim`` and ``obs_embed_dim``)
are required.
"""

from __future__ import annotations

import math
from typing import Any

from .. import ops
from .._backend import namespace_of
from .._checks import check_floating, check_scalar_range, dtype_name
from ..random import _index
from .layers import _Layer
from .params import linear_params
from .recurrent import (_check_tree, _DV3_STD, block_gru_update, block_linear, gate_silu, gru_cell, rms_norm,
                        trunc_normal)

__all__ = ["RSSMPriorV3", "RSSMPosteriorV3"]


def _xp_kw(generator: Any) -> tuple:
    dev = getattr(generator, "device", None)
    return generator.xp, ({} if dev is None else {"device": dev})


def _dv3_linear(generator: Any, n_in: int, n_out: int, dtype: Any) -> dict:
    xp, kw = _xp_kw(generator)
    return {"weight": trunc_normal(generator, (n_out, n_in), _DV3_STD / math.sqrt(n_in), dtype),
            "bias": xp.zeros((n_out,), dtype=dtype, **kw)}


def _ones(generator: Any, n: int, dtype: Any) -> dict:
    xp, kw = _xp_kw(generator)
    return {"weight": xp.ones((n,), dtype=dtype, **kw)}


def _norm_stack_spec(n_in: int, hidden: int, n_layers: int, n_out: int) -> dict:
    """``[Lin, RMS, SiLU] * n_layers + [Lin]`` as an ``nn.Sequential`` state-dict layout."""
    spec: dict = {}
    layer_in = n_in
    for i in range(n_layers):
        spec[str(3 * i)] = {"weight": (hidden, layer_in), "bias": (hidden,)}
        spec[str(3 * i + 1)] = {"weight": (hidden,)}
        layer_in = hidden
    spec[str(3 * n_layers)] = {"weight": (n_out, layer_in), "bias": (n_out,)}
    return spec


def _norm_stack_init(generator: Any, spec: dict, dtype: Any) -> dict:
    out = {}
    for k, v in spec.items():
        if "bias" in v:
            n_out, n_in = v["weight"]
            out[k] = _dv3_linear(generator, n_in, n_out, dtype)
        else:
            out[k] = _ones(generator, v["weight"][0], dtype)
    return out


def _norm_stack_apply(params: dict, x: Any, n_layers: int, eps: float) -> Any:
    for i in range(n_layers):
        lin = params[str(3 * i)]
        x = gate_silu(rms_norm(ops.linear(x, lin["weight"], lin["bias"]), params[str(3 * i + 1)]["weight"], eps))
    lin = params[str(3 * n_layers)]
    return ops.linear(x, lin["weight"], lin["bias"])


def _check_input(x: Any, name: str, n: int, what: str, dtype: Any) -> None:
    check_floating(x, name)
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(f"{name}: expected a last dimension of size {n} ({what}), got shape {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"{name}: dtype {dtype_name(x.dtype)} differs from the parameters' {dtype_name(dtype)}")


def _sample(logits: Any, unimix: float, uniform: Any, generator: Any, c: int, k: int) -> Any:
    from ..objectives.dreamer_utils import straight_through_categorical

    xp = namespace_of(logits)
    sample = straight_through_categorical(logits, unimix, uniform, generator=generator)
    return xp.reshape(sample, tuple(sample.shape[:-2]) + (c * k,))


class _RSSMBase(_Layer):
    def _common(self, num_categoricals: int, num_classes: int, unimix: float, norm_eps: float) -> None:
        self.num_categoricals = _index(num_categoricals, "num_categoricals", minimum=1)
        self.num_classes = _index(num_classes, "num_classes", minimum=1)
        check_scalar_range(unimix, "unimix", 0.0, 1.0, high_open=True)
        self.unimix = float(unimix)
        self.norm_eps = float(norm_eps)
        self.state_dim = self.num_categoricals * self.num_classes

    def _logits(self, flat: Any) -> Any:
        xp = namespace_of(flat)
        return xp.reshape(flat, tuple(flat.shape[:-1]) + (self.num_categoricals, self.num_classes))

    def _param_dtype(self, params: dict) -> Any:
        from .recurrent import _leaves

        return _leaves(params)[0].dtype


class RSSMPriorV3(_RSSMBase):
    """DreamerV3 prior: ``apply(params, state [*B, C K], belief [*B, H], action [*B, A], *, uniform=None,
    generator=None) -> (prior_logits [*B, C, K], next_state [*B, C K], next_belief [*B, H])``.

    Args (TorchRL's names and defaults): ``hidden_dim=512``, ``rnn_hidden_dim=512``, ``num_categoricals=32``,
    ``num_classes=32``, ``action_dim`` (required: no lazy layers), ``recurrent_model="gru" | "block_gru"``,
    ``num_blocks=8``, ``num_layers=1`` (block-linear dynamics layers), ``prior_num_layers=2`` (block-GRU prior
    head), ``norm_eps=1e-4``, ``unimix=0.0``. ``uniform [*B, C]`` are the sampling draws (else ``generator``).
    :meth:`belief_and_logits` skips the sampling (TorchRL's ``_belief_and_logits``).
    """

    def __init__(self, hidden_dim: int = 512, rnn_hidden_dim: int = 512, num_categoricals: int = 32,
                 num_classes: int = 32, action_dim: int | None = None, *, recurrent_model: str = "gru",
                 num_blocks: int = 8, num_layers: int = 1, prior_num_layers: int = 2, norm_eps: float = 1e-4,
                 unimix: float = 0.0, generator: Any = None, xp: Any = None, dtype: Any = None, device: Any = None):
        self._common(num_categoricals, num_classes, unimix, norm_eps)
        if action_dim is None:
            raise ValueError("action_dim: required (arrayrl has no lazy layers; TorchRL's LazyLinear infers it)")
        self.action_dim = _index(action_dim, "action_dim", minimum=1)
        self.hidden_dim = _index(hidden_dim, "hidden_dim", minimum=1)
        self.rnn_hidden_dim = _index(rnn_hidden_dim, "rnn_hidden_dim", minimum=1)
        if recurrent_model not in ("gru", "block_gru"):
            raise ValueError(f"recurrent_model: must be 'gru' or 'block_gru', got {recurrent_model!r}")
        self.recurrent_model = recurrent_model
        self.num_blocks = _index(num_blocks, "num_blocks", minimum=1)
        self.num_layers = _index(num_layers, "num_layers", minimum=1)
        self.prior_num_layers = _index(prior_num_layers, "prior_num_layers", minimum=0)
        h, p, s, a, g = self.rnn_hidden_dim, self.hidden_dim, self.state_dim, self.action_dim, self.num_blocks
        if recurrent_model == "block_gru":
            if h % g:
                raise ValueError(f"rnn_hidden_dim: must be divisible by num_blocks, got {h} and {g}")

            def proj(n_in: int) -> dict:
                return {"0": {"weight": (p, n_in), "bias": (p,)}, "1": {"weight": (p,)}}

            hidden_layers: dict = {}
            layer_in = h + 3 * p * g
            for i in range(self.num_layers):
                if layer_in % g:
                    raise ValueError(f"hidden_dim: rnn_hidden_dim + 3 hidden_dim num_blocks must be divisible by "
                                     f"num_blocks, got {layer_in} and {g}")
                hidden_layers[str(3 * i)] = {"weight": (g, layer_in // g, h // g), "bias": (h,)}
                hidden_layers[str(3 * i + 1)] = {"weight": (h,)}
                layer_in = h
            self._spec = {
                "rnn": {"belief_projection": proj(h), "state_projection": proj(s), "action_projection": proj(a),
                        "hidden_layers": hidden_layers,
                        "gates": {"weight": (g, h // g, 3 * h // g), "bias": (3 * h,)}},
                "rnn_to_prior_projector": _norm_stack_spec(h, p, self.prior_num_layers, s),
            }
        else:
            self._spec = {
                "action_state_projector": {"0": {"weight": (p, s + a), "bias": (p,)}},
                "rnn": {"weight_ih": (3 * h, p), "weight_hh": (3 * h, h), "bias_ih": (3 * h,), "bias_hh": (3 * h,)},
                "rnn_to_prior_projector": {"0": {"weight": (p, h), "bias": (p,)}, "2": {"weight": (s, p),
                                                                                       "bias": (s,)}},
            }
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        h, p, s, a = self.rnn_hidden_dim, self.hidden_dim, self.state_dim, self.action_dim
        if self.recurrent_model == "gru":
            from .params import uniform_fan_in

            return {
                "action_state_projector": {"0": linear_params(generator, s + a, p, dtype=dtype)},
                "rnn": {k: uniform_fan_in(generator, shape, h, dtype) for k, shape in self._spec["rnn"].items()},
                "rnn_to_prior_projector": {"0": linear_params(generator, h, p, dtype=dtype),
                                           "2": linear_params(generator, p, s, dtype=dtype)},
            }
        xp, kw = _xp_kw(generator)
        rnn_spec = self._spec["rnn"]
        rnn: dict = {}
        for name in ("belief_projection", "state_projection", "action_projection"):
            n_out, n_in = rnn_spec[name]["0"]["weight"]
            rnn[name] = {"0": _dv3_linear(generator, n_in, n_out, dtype), "1": _ones(generator, n_out, dtype)}
        hidden_layers = {}
        for key, v in rnn_spec["hidden_layers"].items():
            if "bias" in v:
                gg, bin_, bout = v["weight"]
                hidden_layers[key] = {
                    "weight": trunc_normal(generator, (gg, bin_, bout), _DV3_STD / math.sqrt(gg * bin_), dtype),
                    "bias": xp.zeros((h,), dtype=dtype, **kw)}
            else:
                hidden_layers[key] = _ones(generator, h, dtype)
        rnn["hidden_layers"] = hidden_layers
        gg, bin_, bout = rnn_spec["gates"]["weight"]
        rnn["gates"] = {"weight": trunc_normal(generator, (gg, bin_, bout), _DV3_STD / math.sqrt(h), dtype),
                        "bias": xp.zeros((3 * h,), dtype=dtype, **kw)}
        return {"rnn": rnn,
                "rnn_to_prior_projector": _norm_stack_init(generator, self._spec["rnn_to_prior_projector"], dtype)}

    def _update_belief(self, params: dict, state: Any, belief: Any, action: Any) -> Any:
        xp = namespace_of(state, belief, action, names=("state", "belief", "action"))
        if self.recurrent_model == "gru":
            lin = params["action_state_projector"]["0"]
            x = gate_silu(ops.linear(xp.concat([state, action], axis=-1), lin["weight"], lin["bias"]))
            if x.ndim == 2:  # [B, F] already: no reshapes on the tape
                return gru_cell(params["rnn"], x, belief)
            batch = tuple(x.shape[:-1])
            x2 = xp.reshape(x, (-1, self.hidden_dim))
            h2 = xp.reshape(belief, (-1, self.rnn_hidden_dim))
            return xp.reshape(gru_cell(params["rnn"], x2, h2), batch + (self.rnn_hidden_dim,))
        rnn = params["rnn"]
        eps = self.norm_eps

        def proj(p: dict, v: Any) -> Any:
            return gate_silu(rms_norm(ops.linear(v, p["0"]["weight"], p["0"]["bias"]), p["1"]["weight"], eps))

        from ..autodiff import stop_gradient

        action = action / xp.clip(xp.abs(stop_gradient(action)), min=1.0)
        features = xp.concat([proj(rnn["belief_projection"], belief), proj(rnn["state_projection"], state),
                              proj(rnn["action_projection"], action)], axis=-1)

        def dynamics(v: Any) -> Any:
            for i in range(self.num_layers):
                lin = rnn["hidden_layers"][str(3 * i)]
                v = block_linear(v, lin["weight"], lin["bias"])
                v = gate_silu(rms_norm(v, rnn["hidden_layers"][str(3 * i + 1)]["weight"], eps))
            return v

        return block_gru_update(features, belief, dynamics, rnn["gates"], num_blocks=self.num_blocks,
                                update_bias=-1.0)

    def _check_inputs(self, params: dict, state: Any, belief: Any, action: Any) -> Any:
        _check_tree(params, self._spec, "params")
        dtype = self._param_dtype(params)
        _check_input(state, "state", self.state_dim, "num_categoricals * num_classes", dtype)
        _check_input(belief, "belief", self.rnn_hidden_dim, "rnn_hidden_dim", dtype)
        xp = namespace_of(state, belief, action, names=("state", "belief", "action"))
        if not xp.isdtype(action.dtype, "real floating"):
            action = xp.astype(action, belief.dtype)  # TorchRL: action.to(belief.dtype)
        _check_input(action, "action", self.action_dim, "action_dim", dtype)
        batch = tuple(state.shape[:-1])
        for name, v in (("belief", belief), ("action", action)):
            if tuple(v.shape[:-1]) != batch:
                raise ValueError(f"{name}: batch shape {tuple(v.shape[:-1])} differs from state's {batch}")
        return action

    def belief_and_logits(self, params: dict, state: Any, belief: Any, action: Any) -> tuple:
        """``(prior_logits [*B, C, K], next_belief [*B, H])`` without sampling."""
        action = self._check_inputs(params, state, belief, action)
        belief = self._update_belief(params, state, belief, action)
        if self.recurrent_model == "gru":
            head = params["rnn_to_prior_projector"]
            flat = ops.linear(gate_silu(ops.linear(belief, head["0"]["weight"], head["0"]["bias"])),
                              head["2"]["weight"], head["2"]["bias"])
        else:
            flat = _norm_stack_apply(params["rnn_to_prior_projector"], belief, self.prior_num_layers, self.norm_eps)
        return self._logits(flat), belief

    def apply(self, params: dict, state: Any, belief: Any, action: Any, *, uniform: Any = None,
              generator: Any = None) -> tuple:
        logits, belief = self.belief_and_logits(params, state, belief, action)
        sample = _sample(logits, self.unimix, uniform, generator, self.num_categoricals, self.num_classes)
        return logits, sample, belief

    def __repr__(self) -> str:
        return (f"RSSMPriorV3(hidden_dim={self.hidden_dim}, rnn_hidden_dim={self.rnn_hidden_dim}, "
                f"num_categoricals={self.num_categoricals}, num_classes={self.num_classes}, action_dim="
                f"{self.action_dim}, recurrent_model={self.recurrent_model!r}, unimix={self.unimix})")


class RSSMPosteriorV3(_RSSMBase):
    """DreamerV3 posterior: ``apply(params, belief [*B, H], obs_embedding [*B, E], *, uniform=None, generator=None)
    -> (posterior_logits [*B, C, K], state [*B, C K])``.

    Args (TorchRL's): ``hidden_dim=512``, ``num_categoricals=32``, ``num_classes=32``, ``rnn_hidden_dim`` and
    ``obs_embed_dim`` (required), ``use_rms_norm=False``, ``num_layers=1`` (with ``use_rms_norm``),
    ``norm_eps=1e-4``, ``unimix=0.0``. :meth:`logits` skips the sampling.
    """

    def __init__(self, hidden_dim: int = 512, num_categoricals: int = 32, num_classes: int = 32,
                 rnn_hidden_dim: int | None = None, obs_embed_dim: int | None = None, *, use_rms_norm: bool = False,
                 num_layers: int = 1, norm_eps: float = 1e-4, unimix: float = 0.0, generator: Any = None,
                 xp: Any = None, dtype: Any = None, device: Any = None):
        self._common(num_categoricals, num_classes, unimix, norm_eps)
        if rnn_hidden_dim is None or obs_embed_dim is None:
            raise ValueError("rnn_hidden_dim, obs_embed_dim: both are required (arrayrl has no lazy layers)")
        self.hidden_dim = _index(hidden_dim, "hidden_dim", minimum=1)
        self.rnn_hidden_dim = _index(rnn_hidden_dim, "rnn_hidden_dim", minimum=1)
        self.obs_embed_dim = _index(obs_embed_dim, "obs_embed_dim", minimum=1)
        if not isinstance(use_rms_norm, bool):
            raise TypeError(f"use_rms_norm: expected a bool, got {type(use_rms_norm).__name__}")
        self.use_rms_norm = use_rms_norm
        self.num_layers = _index(num_layers, "num_layers", minimum=1)
        n_in, p, s = self.rnn_hidden_dim + self.obs_embed_dim, self.hidden_dim, self.state_dim
        if use_rms_norm:
            self._spec = {"obs_rnn_to_post_projector": _norm_stack_spec(n_in, p, self.num_layers, s)}
        else:
            self._spec = {"obs_rnn_to_post_projector": {"0": {"weight": (p, n_in), "bias": (p,)},
                                                        "2": {"weight": (s, p), "bias": (s,)}}}
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        spec = self._spec["obs_rnn_to_post_projector"]
        if self.use_rms_norm:
            return {"obs_rnn_to_post_projector": _norm_stack_init(generator, spec, dtype)}
        n_in, p, s = self.rnn_hidden_dim + self.obs_embed_dim, self.hidden_dim, self.state_dim
        return {"obs_rnn_to_post_projector": {"0": linear_params(generator, n_in, p, dtype=dtype),
                                              "2": linear_params(generator, p, s, dtype=dtype)}}

    def logits(self, params: dict, belief: Any, obs_embedding: Any) -> Any:
        """``posterior_logits [*B, C, K]`` without sampling."""
        _check_tree(params, self._spec, "params")
        dtype = self._param_dtype(params)
        _check_input(belief, "belief", self.rnn_hidden_dim, "rnn_hidden_dim", dtype)
        _check_input(obs_embedding, "obs_embedding", self.obs_embed_dim, "obs_embed_dim", dtype)
        if tuple(belief.shape[:-1]) != tuple(obs_embedding.shape[:-1]):
            raise ValueError(f"obs_embedding: batch shape {tuple(obs_embedding.shape[:-1])} differs from belief's "
                             f"{tuple(belief.shape[:-1])}")
        xp = namespace_of(belief, obs_embedding, names=("belief", "obs_embedding"))
        x = xp.concat([belief, obs_embedding], axis=-1)
        head = params["obs_rnn_to_post_projector"]
        if self.use_rms_norm:
            flat = _norm_stack_apply(head, x, self.num_layers, self.norm_eps)
        else:
            flat = ops.linear(gate_silu(ops.linear(x, head["0"]["weight"], head["0"]["bias"])),
                              head["2"]["weight"], head["2"]["bias"])
        return self._logits(flat)

    def apply(self, params: dict, belief: Any, obs_embedding: Any, *, uniform: Any = None,
              generator: Any = None) -> tuple:
        logits = self.logits(params, belief, obs_embedding)
        return logits, _sample(logits, self.unimix, uniform, generator, self.num_categoricals, self.num_classes)

    def __repr__(self) -> str:
        return (f"RSSMPosteriorV3(hidden_dim={self.hidden_dim}, num_categoricals={self.num_categoricals}, "
                f"num_classes={self.num_classes}, rnn_hidden_dim={self.rnn_hidden_dim}, obs_embed_dim="
                f"{self.obs_embed_dim}, use_rms_norm={self.use_rms_norm}, unimix={self.unimix})")
