"""Dreamer v1 world-model and actor networks (TorchRL 0.14.1 ``torchrl.modules.models.model_based``):
:class:`RSSMPrior`, :class:`RSSMPosterior`, :class:`RSSMRollout` (Gaussian latents with a ``scale_lb`` floor) and
:class:`DreamerActor` (TorchRL's ``loc``/``scale`` mapping ``biased_softplus_{std_bias}_{std_min_val}``).

Hafner et al. 2020, "Dream to Control" (arXiv:1912.01603); RSSM from Hafner et al. 2019 (arXiv:1811.04551).

Parameter trees are the torch ``state_dict`` layouts nested at the dots, so weights copy 1:1
(:func:`arrayrl.interop.params_from_torch`):

* ``RSSMPrior``: ``rnn {weight_ih [3R, H], weight_hh [3R, R], bias_ih [3R], bias_hh [3R]}`` (``torch.nn.GRUCell``),
  ``action_state_projector {"0": Linear(S + A, H)}``, ``rnn_to_prior_projector {"0": Linear(H, H),
  "2": Linear(H, 2 S)}`` with ``H = hidden_dim``, ``R = rnn_hidden_dim``, ``S = state_dim``, ``A = action_dim``.
* ``RSSMPosterior``: ``obs_rnn_to_post_projector {"0": Linear(R + E, H), "2": Linear(H, 2 S)}`` (``E`` the
  observation embedding size).
* ``DreamerActor``: ``backbone`` = the ``torchrl.modules.MLP`` tree (``"0"``, ``"2"``, ...; the appended
  ``NormalParamExtractor`` has no parameters).

Math (activations ELU):

* prior: ``x = elu(Lin([s, a]))``; ``b' = GRUCell(x, b)``; ``[mu, raw] = Lin(elu(Lin(b')))``;
  ``sigma = max(softplus(raw), scale_lb)``; ``s' = mu + eps sigma``. Returns ``(mu, sigma, s', b')``.
* posterior: ``[mu, raw] = Lin(elu(Lin([b, e])))``, ``sigma = max(softplus(raw), scale_lb)``, ``s = mu + eps sigma``.
* actor: ``[loc, raw] = MLP([s, b])``, ``scale = max(softplus(raw + inv_softplus(std_bias - std_min_val)) +
  std_min_val, 1e-4)``.

Noise: ``eps`` is the ``noise=`` argument or ``generator.normal(sigma.shape)`` (TorchRL's ``torch.randn_like``),
one draw per call, so replaying TorchRL's draws in order reproduces it exactly.

Divergence: TorchRL's ``RSSMPrior`` runs its GRU cell in float32 whatever the input dtype (``.float()``, for
autocast), so it cannot run in float64 (a dtype mismatch with float64 weights) and rounds the belief of float64
inputs. arrayrl computes in the input dtype (float32 in, float32 out; float64 stays float64).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import ops
from .._backend import namespace_of
from .._checks import check_floating, dtype_name
from ..data import get, unravel_key, with_
from ..random import _index
from .keyed import KeyedModule, KeyedModuleBase
from .layers import MLP, NormalParamExtractor, _Layer
from .params import linear_params
from .recurrent import GRUCell, _check_tree

__all__ = ["RSSMPrior", "RSSMPosterior", "RSSMRollout", "DreamerActor", "StochasticKeyedModule"]


def _lin(params: dict, x: Any) -> Any:
    return ops.linear(x, params["weight"], params["bias"])


def _linear_2d(params: dict, x: Any) -> Any:
    """``x [*B, in] -> [*B, out]`` (``ops.linear`` on a flattened ``[M, in]`` view)."""
    xp = namespace_of(x)
    batch = tuple(x.shape[:-1])
    if x.ndim == 2:
        return _lin(params, x)
    flat = xp.reshape(x, (-1, int(x.shape[-1])))
    y = _lin(params, flat)
    return xp.reshape(y, batch + (int(y.shape[-1]),))


def _check_input(x: Any, name: str, size: int, what: str, like: Any) -> None:
    check_floating(x, name)
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{name}: expected a last dimension of size {size} ({what}), got shape {tuple(x.shape)}")
    if x.dtype != like.dtype:
        raise TypeError(f"{name}: dtype {dtype_name(x.dtype)} differs from the parameters' {dtype_name(like.dtype)}")


def _same_batch(a: Any, b: Any, name_a: str, name_b: str) -> None:
    if tuple(a.shape[:-1]) != tuple(b.shape[:-1]):
        raise ValueError(f"{name_b}: expected the batch shape {tuple(a.shape[:-1])} of {name_a}, got "
                         f"{tuple(b.shape[:-1])}")


def _sample(mean: Any, std: Any, noise: Any, generator: Any, name: str) -> Any:
    if noise is None:
        if generator is None:
            raise ValueError(f"{name}: give noise= (standard normal draws of the state's shape) or a generator=")
        noise = generator.normal(tuple(std.shape), std.dtype)
    else:
        check_floating(noise, "noise")
        if tuple(noise.shape) != tuple(std.shape):
            raise ValueError(f"noise: expected shape {tuple(std.shape)} (that of the state), got {tuple(noise.shape)}")
    return mean + noise * std


def _softplus_lb(raw: Any, scale_lb: float) -> Any:
    return namespace_of(raw).clip(ops.softplus(raw, threshold=20.0), min=scale_lb)


class RSSMPrior(_Layer):
    """``torchrl.modules.RSSMPrior``: ``apply(params, state [*B, S], belief [*B, R], action [*B, A], noise=None,
    *, generator=None) -> (prior_mean, prior_std, state, belief)``.

    Args (TorchRL's): ``action_spec`` (only its last shape entry is used, when ``action_dim`` is not given),
    ``hidden_dim=200``, ``rnn_hidden_dim=200``, ``state_dim=30``, ``scale_lb=0.1``, ``action_dim`` (required unless
    ``action_spec`` gives it: arrayrl has no lazy layers). Init as torch (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``).
    """

    def __init__(self, action_spec: Any = None, hidden_dim: int = 200, rnn_hidden_dim: int = 200,
                 state_dim: int = 30, scale_lb: float = 0.1, action_dim: int | None = None, *,
                 generator: Any = None, xp: Any = None, dtype: Any = None, device: Any = None):
        if action_dim is None:
            shape = getattr(action_spec, "shape", None)
            if not shape:
                raise ValueError("action_dim: required (or an action_spec with a shape): arrayrl has no lazy layers")
            action_dim = shape[-1]
        self.action_dim = _index(action_dim, "action_dim", minimum=1)
        self.hidden_dim = _index(hidden_dim, "hidden_dim", minimum=1)
        self.rnn_hidden_dim = _index(rnn_hidden_dim, "rnn_hidden_dim", minimum=1)
        self.state_dim = _index(state_dim, "state_dim", minimum=1)
        self.scale_lb = float(scale_lb)
        self._rnn = GRUCell(self.hidden_dim, self.rnn_hidden_dim, xp=xp, dtype=dtype, device=device)
        h, r, s = self.hidden_dim, self.rnn_hidden_dim, self.state_dim
        self._spec = {
            "rnn": dict(self._rnn._spec),
            "action_state_projector": {"0": {"weight": (h, s + self.action_dim), "bias": (h,)}},
            "rnn_to_prior_projector": {"0": {"weight": (h, r), "bias": (h,)},
                                       "2": {"weight": (2 * s, h), "bias": (2 * s,)}},
        }
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        h, r, s = self.hidden_dim, self.rnn_hidden_dim, self.state_dim
        return {
            "rnn": self._rnn._init(generator, dtype),
            "action_state_projector": {"0": linear_params(generator, s + self.action_dim, h, dtype=dtype)},
            "rnn_to_prior_projector": {"0": linear_params(generator, r, h, dtype=dtype),
                                       "2": linear_params(generator, h, 2 * s, dtype=dtype)},
        }

    def apply(self, params: dict, state: Any, belief: Any, action: Any, noise: Any = None, *,
              generator: Any = None) -> tuple:
        _check_tree(params, self._spec, "params")
        like = params["rnn"]["weight_ih"]
        _check_input(state, "state", self.state_dim, "state_dim", like)
        _check_input(belief, "belief", self.rnn_hidden_dim, "rnn_hidden_dim", like)
        _check_input(action, "action", self.action_dim, "action_dim", like)
        _same_batch(state, belief, "state", "belief")
        _same_batch(state, action, "state", "action")
        xp = namespace_of(state, belief, action, names=("state", "belief", "action"))
        x = ops.elu(_linear_2d(params["action_state_projector"]["0"], xp.concat([state, action], axis=-1)))
        belief = self._rnn.apply(params["rnn"], x, belief)
        proj = params["rnn_to_prior_projector"]
        out = _linear_2d(proj["2"], ops.elu(_linear_2d(proj["0"], belief)))
        mean, raw = out[..., : self.state_dim], out[..., self.state_dim:]
        std = _softplus_lb(raw, self.scale_lb)
        return mean, std, _sample(mean, std, noise, generator, "generator"), belief

    def __repr__(self) -> str:
        return (f"RSSMPrior(action_dim={self.action_dim}, hidden_dim={self.hidden_dim}, rnn_hidden_dim="
                f"{self.rnn_hidden_dim}, state_dim={self.state_dim}, scale_lb={self.scale_lb})")


class RSSMPosterior(_Layer):
    """``torchrl.modules.RSSMPosterior``: ``apply(params, belief [*B, R], obs_embedding [*B, E], noise=None, *,
    generator=None) -> (posterior_mean, posterior_std, state)``.

    Args (TorchRL's): ``hidden_dim=200``, ``state_dim=30``, ``scale_lb=0.1``, ``rnn_hidden_dim`` and
    ``obs_embed_dim`` (both required: arrayrl has no lazy layers).
    """

    def __init__(self, hidden_dim: int = 200, state_dim: int = 30, scale_lb: float = 0.1,
                 rnn_hidden_dim: int | None = None, obs_embed_dim: int | None = None, *, generator: Any = None,
                 xp: Any = None, dtype: Any = None, device: Any = None):
        if rnn_hidden_dim is None or obs_embed_dim is None:
            raise ValueError("rnn_hidden_dim, obs_embed_dim: both required (arrayrl has no lazy layers)")
        self.hidden_dim = _index(hidden_dim, "hidden_dim", minimum=1)
        self.state_dim = _index(state_dim, "state_dim", minimum=1)
        self.rnn_hidden_dim = _index(rnn_hidden_dim, "rnn_hidden_dim", minimum=1)
        self.obs_embed_dim = _index(obs_embed_dim, "obs_embed_dim", minimum=1)
        self.scale_lb = float(scale_lb)
        h, s = self.hidden_dim, self.state_dim
        self._spec = {"obs_rnn_to_post_projector": {
            "0": {"weight": (h, self.rnn_hidden_dim + self.obs_embed_dim), "bias": (h,)},
            "2": {"weight": (2 * s, h), "bias": (2 * s,)}}}
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        h, s = self.hidden_dim, self.state_dim
        return {"obs_rnn_to_post_projector": {
            "0": linear_params(generator, self.rnn_hidden_dim + self.obs_embed_dim, h, dtype=dtype),
            "2": linear_params(generator, h, 2 * s, dtype=dtype)}}

    def apply(self, params: dict, belief: Any, obs_embedding: Any, noise: Any = None, *,
              generator: Any = None) -> tuple:
        _check_tree(params, self._spec, "params")
        proj = params["obs_rnn_to_post_projector"]
        _check_input(belief, "belief", self.rnn_hidden_dim, "rnn_hidden_dim", proj["0"]["weight"])
        _check_input(obs_embedding, "obs_embedding", self.obs_embed_dim, "obs_embed_dim", proj["0"]["weight"])
        _same_batch(belief, obs_embedding, "belief", "obs_embedding")
        xp = namespace_of(belief, obs_embedding, names=("belief", "obs_embedding"))
        out = _linear_2d(proj["2"], ops.elu(_linear_2d(proj["0"], xp.concat([belief, obs_embedding], axis=-1))))
        mean, raw = out[..., : self.state_dim], out[..., self.state_dim:]
        std = _softplus_lb(raw, self.scale_lb)
        return mean, std, _sample(mean, std, noise, generator, "generator")

    def __repr__(self) -> str:
        return (f"RSSMPosterior(hidden_dim={self.hidden_dim}, state_dim={self.state_dim}, rnn_hidden_dim="
                f"{self.rnn_hidden_dim}, obs_embed_dim={self.obs_embed_dim}, scale_lb={self.scale_lb})")


class DreamerActor(_Layer):
    """``torchrl.modules.DreamerActor``: ``apply(params, state, belief) -> (loc, scale)``, ``[*B, out_features]``.

    Args (TorchRL's): ``out_features``, ``depth=4``, ``num_cells=200``, ``activation_class="elu"``,
    ``std_bias=5.0``, ``std_min_val=1e-4``; ``in_features`` (``state_dim + belief_dim``) is required.
    ``scale = max(biased_softplus_{std_bias}_{std_min_val}(raw), 1e-4)`` (``NormalParamExtractor``'s default floor).
    """

    def __init__(self, out_features: int, depth: int = 4, num_cells: int = 200, activation_class: Any = "elu",
                 std_bias: float = 5.0, std_min_val: float = 1e-4, *, in_features: int | None = None,
                 generator: Any = None, xp: Any = None, dtype: Any = None, device: Any = None):
        if in_features is None:
            raise ValueError("in_features: required (state_dim + belief_dim; arrayrl has no lazy layers)")
        self.out_features = _index(out_features, "out_features", minimum=1)
        self.std_bias, self.std_min_val = float(std_bias), float(std_min_val)
        self._mlp = MLP(in_features, 2 * self.out_features, depth=depth, num_cells=num_cells,
                        activation_class=activation_class, xp=xp, dtype=dtype, device=device)
        self.in_features = self._mlp.in_features
        self._extractor = NormalParamExtractor(scale_mapping=f"biased_softplus_{std_bias}_{std_min_val}")
        self._build_params(generator, xp, dtype, device)

    def _init(self, generator: Any, dtype: Any) -> dict:
        return {"backbone": self._mlp._init(generator, dtype)}

    def apply(self, params: dict, state: Any, belief: Any) -> tuple:
        if not isinstance(params, Mapping) or set(params) != {"backbone"}:
            got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
            raise KeyError(f"params: expected a dict with the key 'backbone' (the MLP tree), got {got}")
        check_floating(state, "state")
        check_floating(belief, "belief")
        _same_batch(state, belief, "state", "belief")
        out = self._mlp.apply(params["backbone"], state, belief)
        return self._extractor.apply({}, out)

    def __repr__(self) -> str:
        return (f"DreamerActor(out_features={self.out_features}, in_features={self.in_features}, "
                f"std_bias={self.std_bias}, std_min_val={self.std_min_val})")


class StochasticKeyedModule(KeyedModule):
    """A :class:`~arrayrl.nn.KeyedModule` whose network samples: ``apply(params, batch, *, generator=...)`` calls
    ``fn.apply(params, *inputs, generator=generator)`` (for :class:`RSSMPrior`/:class:`RSSMPosterior`, which draw
    their state noise from it; TorchRL's ``TensorDictModule`` uses the global torch RNG instead)."""

    def forward_arrays(self, params: Any, *inputs: Any, generator: Any = None) -> tuple:
        fn: Any = self.fn
        out = fn.apply(params, *inputs, generator=generator)
        if not isinstance(out, tuple):
            out = (out,)
        if len(out) < len(self.out_keys):
            raise ValueError(f"out_keys: {len(self.out_keys)} keys but the network returned {len(out)} output(s)")
        return out[: len(self.out_keys)]

    def apply(self, params: Any, batch: Mapping, *, generator: Any = None, interaction_type: str | None = None) -> dict:
        from .keyed import _write

        return _write(batch, self.out_keys, self.forward_arrays(params, *self._read(batch), generator=generator))


def _slice(tree: Any, axis: int, t: int) -> Any:
    if isinstance(tree, Mapping):
        return {k: _slice(v, axis, t) for k, v in tree.items()}
    return tree[(slice(None),) * axis + (t,)]


def _stack(trees: list, axis: int) -> Any:
    first = trees[0]
    if isinstance(first, Mapping):
        return {k: _stack([tr[k] for tr in trees], axis) for k in first}
    return namespace_of(*trees).stack(trees, axis=axis)


def _select(tree: Mapping, keys: list) -> dict:
    out: dict = {}
    for k in keys:
        try:
            v = get(tree, k)
        except KeyError:
            continue
        out = with_(out, k, v)
    return out


class RSSMRollout(KeyedModuleBase):
    """``torchrl.modules.RSSMRollout`` (its loop path): run ``rssm_prior`` then ``rssm_posterior`` (keyed modules)
    at every time step of a ``[*B, T, ...]`` batch, the posterior's ``("next", "state")`` and the prior's
    ``("next", "belief")`` becoming ``"state"``/``"belief"`` of the next step; the steps are stacked back along
    ``time_axis`` (default 1: batches ``[B, T, ...]``; every array entry must have that axis).

    ``params = {"rssm_prior": ..., "rssm_posterior": ...}``. ``apply(..., generator=...)`` passes the generator to
    the sub-modules, which draw in TorchRL's order (prior, posterior, per step).
    """

    def __init__(self, rssm_prior: KeyedModuleBase, rssm_posterior: KeyedModuleBase, *, time_axis: int = 1):
        for name, m in (("rssm_prior", rssm_prior), ("rssm_posterior", rssm_posterior)):
            if not isinstance(m, KeyedModuleBase):
                raise TypeError(f"{name}: expected a keyed module, got {type(m).__name__}")
        self.rssm_prior, self.rssm_posterior = rssm_prior, rssm_posterior
        self.time_axis = _index(time_axis, "time_axis")
        produced = list(rssm_prior.out_keys)
        self.in_keys = list(rssm_prior.in_keys) + [k for k in rssm_posterior.in_keys
                                                   if k not in produced and k not in rssm_prior.in_keys]
        self.out_keys = produced + [k for k in rssm_posterior.out_keys if k not in produced]

    @property
    def params(self) -> dict:
        return {"rssm_prior": self.rssm_prior.params, "rssm_posterior": self.rssm_posterior.params}

    @params.setter
    def params(self, value: Any) -> None:
        if not isinstance(value, Mapping) or set(value) != {"rssm_prior", "rssm_posterior"}:
            raise ValueError("params: expected a dict with keys ['rssm_posterior', 'rssm_prior']")
        self.rssm_prior.params = value["rssm_prior"]
        self.rssm_posterior.params = value["rssm_posterior"]

    def apply(self, params: Any, batch: Mapping, *, generator: Any = None, interaction_type: str | None = None) -> dict:
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch: expected a (nested) dict of arrays, got {type(batch).__name__}")
        from ..data import keys as _keys

        out_set = {unravel_key(k) for k in self.out_keys}
        inputs: dict = {}
        for k in _keys(batch):
            if k not in out_set:
                inputs = with_(inputs, k, get(batch, k))
        probe = get(inputs, self.rssm_prior.in_keys[0], what="in_key of RSSMRollout")
        ax = self.time_axis
        if probe.ndim <= ax:
            raise ValueError(f"batch: expected a time axis {ax} in {self.rssm_prior.in_keys[0]!r}, got shape "
                             f"{tuple(probe.shape)}")
        steps = int(probe.shape[ax])
        keep = list(_keys(inputs)) + [k for k in self.out_keys if k not in _keys(inputs)]
        outs = []
        td = _slice(inputs, ax, 0)
        for t in range(steps):
            td = self.rssm_prior.apply(params["rssm_prior"], td, generator=generator)
            td = self.rssm_posterior.apply(params["rssm_posterior"], td, generator=generator)
            outs.append(_select(td, keep))
            if t < steps - 1:
                nxt = _slice(inputs, ax, t + 1)
                nxt = with_(nxt, ("state",), get(td, ("next", "state")))
                td = with_(nxt, ("belief",), get(td, ("next", "belief")))
        stacked = _stack(outs, ax)
        merged = dict(batch)
        for k in _keys(stacked):
            merged = with_(merged, k, get(stacked, k))
        return merged

    def __repr__(self) -> str:
        return f"RSSMRollout({self.rssm_prior!r}, {self.rssm_posterior!r}, time_axis={self.time_axis})"
