"""Dreamer v1 losses (TorchRL 0.14.1 ``torchrl.objectives.dreamer``): :class:`DreamerModelLoss`,
:class:`DreamerActorLoss`, :class:`DreamerValueLoss`, and :class:`DreamerEnv`, the latent imagination environment
the actor loss rolls.

Hafner et al. 2020, "Dream to Control: Learning Behaviors by Latent Imagination", arXiv:1912.01603.

Each ``forward`` returns TorchRL's pair ``(loss_dict, fake_data)``:

* ``DreamerModelLoss(world_model)(batch, generator=g)``: ``("next", reward)`` is renamed ``("next", true_reward)``
  (in a copy: the caller's batch is untouched), ``world_model`` runs (writing ``("next", reward)`` (the
  prediction), the prior/posterior statistics and ``("next", reco_pixels)``);
  ``KL = log(sp/sq) + (sq^2 + (mp - mq)^2) / (2 sp^2) - 1/2`` summed over the last axis (unless
  ``global_average``), ``clip(min=free_nats)`` per element then mean (``delayed_clamp``: mean then clip);
  ``reco = mean(sum_{C,H,W} dist(pixels, reco))``, ``reward = mean(dist(r_true, r_hat))``. Outputs
  ``loss_model_kl, loss_model_reco, loss_model_reward``, shape ``[1]``, each times its ``lambda_*``;
  ``fake_data`` is the world model's output without tape.
* ``DreamerActorLoss(actor_model, value_model, model_based_env)(batch, generator=g)``: from ``state`` and ``belief``
  (without tape), roll the actor (``"random"`` interaction: reparameterised samples) and the world model of
  ``model_based_env`` for ``imagination_horizon`` steps **on the tape**; ``V' = V(s_{t+1})`` from ``value_model``
  (held out: its parameters are constants, the gradient flows through its inputs); ``lambda_target`` along the
  imagination axis; ``loss_actor = -mean_B sum_{t,f} w_t lambda_t`` with ``w_t = gamma^t`` (``discount_loss``) or 1.
  0-d output; ``fake_data`` (``[*B, H, ...]``, tape stripped) carries ``lambda_target``.
* ``DreamerValueLoss(value_model)(fake_data)``: ``loss_value = mean_B sum_{t,f} w_t dist(V(s_t), lambda_target)``,
  0-d; returns ``(loss_dict, fake_data)``.

Draws (``generator=`` of ``forward``/``value_and_grad``, or of the constructor): at each imagination step the
action noise (``[*B, A]``) then the world model's (the prior's state noise ``[*B, S]``), TorchRL's order.

Divergences (docs: ``/tmp/divergences_dreamer.md``):

* TorchRL's ``lambda_target`` builds a 0-d TensorDict, so the estimator's time axis is the trailing feature axis of
  size 1 and the "lambda target" is exactly ``r_t + gamma V(s_{t+1})`` (TorchRL #987). arrayrl computes the real
  TD(lambda) along the imagination horizon, ``G_t = r_t + gamma ((1 - lambda) V_{t+1} + lambda G_{t+1})``,
  ``G_{H-1} = r_{H-1} + gamma V_H`` (TD0: ``lambda = 0``, TD1: ``lambda = 1``); ``torchrl_compat=True`` gives
  TorchRL's one-step target.
* ``discount_loss`` defaults to ``True`` (TorchRL's code; its docstrings say ``False``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Sequence

from .. import data as _data
from .._backend import device_of, namespace_of
from .._checks import check_floating
from ..data import NestedKey
from ..value import ValueEstimators
from ..value.functional import td_lambda_return_estimate
from .actor_critic import _sg_tree
from .common import LossModule
from .utils import distance_loss, stop_gradient

__all__ = ["DreamerEnv", "DreamerModelLoss", "DreamerActorLoss", "DreamerValueLoss"]

_DISTANCES = ("l1", "l2", "smooth_l1")


def _check_loss_name(value: Any, name: str) -> str:
    value = "l2" if value is None else value
    if value not in _DISTANCES:
        raise ValueError(f"{name}: expected one of {_DISTANCES} or None, got {value!r}")
    return value


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def _check_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a Python number, got {type(value).__name__}")
    return float(value)




def _zeros_bool(like: Any) -> Any:
    xp = namespace_of(like)
    return xp.zeros_like(stop_gradient(like)) != 0


def _stack(trees: list, axis: int) -> Any:
    first = trees[0]
    if isinstance(first, Mapping):
        return {k: _stack([t[k] for t in trees], axis) for k in first if all(k in t for t in trees)}
    return namespace_of(*trees).stack(trees, axis=axis)


class _GeneratorMixin:
    """``forward(batch, *, generator=None)`` and ``value_and_grad(batch, *, generator=None)`` with the draws taken
    from ``generator`` (or the constructor's)."""

    _generator: Any = None
    _active: Any = None

    def _gen(self) -> Any:
        g = self._active if self._active is not None else self._generator
        if g is None:
            raise ValueError(f"generator: {type(self).__name__} samples (world model / actor noise); pass "
                             "generator= to forward/value_and_grad or to the constructor")
        return g

    def _run(self, fn: Any, generator: Any) -> Any:
        old = self._active
        self._active = generator
        try:
            return fn()
        finally:
            self._active = old


class DreamerEnv:
    """Latent imagination environment (``torchrl.envs.model_based.DreamerEnv``): ``world_model`` is a keyed
    module reading ``"state"``, ``"belief"``, ``"action"`` and writing (at the root) the next ``"state"``,
    ``"belief"`` and ``"reward"`` (e.g. a :class:`~arrayrl.nn.Sequential` of a
    :class:`~arrayrl.nn.rssm_v1.StochasticKeyedModule` around :class:`~arrayrl.nn.rssm_v1.RSSMPrior` and a reward
    :class:`~arrayrl.nn.KeyedModule`). Imagination never terminates (``done = terminated = False``).
    ``prior_shape``, ``belief_shape`` and ``obs_decoder`` are kept for TorchRL's signature."""

    def __init__(self, world_model: Any, prior_shape: Sequence[int] | None = None,
                 belief_shape: Sequence[int] | None = None, obs_decoder: Any = None):
        if not hasattr(world_model, "apply") or not hasattr(world_model, "params"):
            raise TypeError(f"world_model: expected an arrayrl keyed module, got {type(world_model).__name__}")
        self.world_model = world_model
        self.prior_shape, self.belief_shape, self.obs_decoder = prior_shape, belief_shape, obs_decoder

    def step(self, params: Any, td: Mapping, *, generator: Any = None, belief_key: NestedKey = "belief",
             reward_key: NestedKey = "reward") -> dict:
        """One imagined step: ``td`` (``state``, ``belief``, ``action``...) with ``"next"`` = ``{state, belief,
        reward, done, terminated}`` added (the world model's outputs)."""
        out = self.world_model.apply(params, td, generator=generator)
        reward = _data.get(out, reward_key, what="reward written by the world model")
        nxt: dict = {}
        for k in ("state", belief_key, reward_key):
            nxt = _data.with_(nxt, k, _data.get(out, k, what="key written by the world model"))
        done = _zeros_bool(reward)
        nxt["done"], nxt["terminated"] = done, done
        return _data.with_(dict(td), "next", nxt)


# ------------------------------------------------------------------------------------------------ model loss
class DreamerModelLoss(_GeneratorMixin, LossModule):
    """Dreamer world-model loss (see the module docstring). Args (TorchRL's): ``world_model`` (a keyed module),
    ``lambda_kl=1.0``, ``lambda_reco=1.0``, ``lambda_reward=1.0``, ``reco_loss="l2"``, ``reward_loss="l2"``,
    ``free_nats=3``, ``delayed_clamp=False``, ``global_average=False``; arrayrl: ``generator`` (the world model's
    draws, when ``forward`` is not given one). Parameters: ``loss.params = {"world_model": tree}``."""

    @dataclasses.dataclass
    class _AcceptedKeys:
        reward: NestedKey = "reward"
        true_reward: NestedKey = "true_reward"
        prior_mean: NestedKey = "prior_mean"
        prior_std: NestedKey = "prior_std"
        posterior_mean: NestedKey = "posterior_mean"
        posterior_std: NestedKey = "posterior_std"
        pixels: NestedKey = "pixels"
        reco_pixels: NestedKey = "reco_pixels"

    default_keys = _AcceptedKeys
    _OUT_KEYS = ("loss_model_kl", "loss_model_reco", "loss_model_reward")
    _POLICY_NETWORK = None

    def __init__(self, world_model: Any, *, lambda_kl: float = 1.0, lambda_reco: float = 1.0,
                 lambda_reward: float = 1.0, reco_loss: str | None = None, reward_loss: str | None = None,
                 free_nats: float = 3, delayed_clamp: bool = False, global_average: bool = False,
                 generator: Any = None):
        super().__init__()
        self.convert_to_functional(world_model, "world_model")
        self.reco_loss = _check_loss_name(reco_loss, "reco_loss")
        self.reward_loss = _check_loss_name(reward_loss, "reward_loss")
        self.lambda_kl = _check_float(lambda_kl, "lambda_kl")
        self.lambda_reco = _check_float(lambda_reco, "lambda_reco")
        self.lambda_reward = _check_float(lambda_reward, "lambda_reward")
        self.free_nats = _check_float(free_nats, "free_nats")
        self.delayed_clamp = _check_bool(delayed_clamp, "delayed_clamp")
        self.global_average = _check_bool(global_average, "global_average")
        self._generator = generator

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        return list(self._networks["world_model"].in_keys) + [("next", tk.reward), ("next", tk.pixels)]

    def kl_loss(self, prior_mean: Any, prior_std: Any, posterior_mean: Any, posterior_std: Any) -> Any:
        """KL(posterior || prior) of diagonal Gaussians, summed over the last axis (unless ``global_average``),
        clipped at ``free_nats`` (per element, or after the mean with ``delayed_clamp``), averaged: 0-d."""
        xp = namespace_of(prior_mean, prior_std, posterior_mean, posterior_std)
        for name, v in (("prior_mean", prior_mean), ("prior_std", prior_std), ("posterior_mean", posterior_mean),
                        ("posterior_std", posterior_std)):
            check_floating(v, name)
            if tuple(v.shape) != tuple(prior_mean.shape):
                raise ValueError(f"{name}: expected the shape of prior_mean {tuple(prior_mean.shape)}, got "
                                 f"{tuple(v.shape)}")
        kl = (xp.log(prior_std / posterior_std)
              + (posterior_std ** 2 + (prior_mean - posterior_mean) ** 2) / (2 * prior_std ** 2) - 0.5)
        if not self.global_average:
            kl = xp.sum(kl, axis=-1)
        if self.delayed_clamp:
            return xp.clip(xp.mean(kl), min=self.free_nats)
        return xp.mean(xp.clip(kl, min=self.free_nats))

    def _forward_full(self, batch: Mapping, params: dict) -> tuple:
        tk = self.tensor_keys
        reward = _data.get(batch, ("next", tk.reward), what="reward key of DreamerModelLoss")
        td = _data.without(batch, ("next",) + _data.unravel_key(tk.reward))
        td = _data.with_(td, ("next", tk.true_reward), reward)
        td = self._networks["world_model"].apply(params["world_model"], td, generator=self._active
                                                 if self._active is not None else self._generator)

        def g(key: NestedKey) -> Any:
            return _data.get(td, ("next", key), what="output of the world model")

        kl = self.kl_loss(g(tk.prior_mean), g(tk.prior_std), g(tk.posterior_mean), g(tk.posterior_std))
        xp = namespace_of(kl)
        pixels, reco = g(tk.pixels), g(tk.reco_pixels)
        check_floating(pixels, "pixels")
        reco_l = distance_loss(pixels, reco, self.reco_loss)
        if not self.global_average:
            if reco_l.ndim < 3:
                raise ValueError(f"pixels: expected [..., C, H, W], got shape {tuple(pixels.shape)}")
            reco_l = xp.sum(reco_l, axis=(-3, -2, -1))
        reco_l = xp.mean(reco_l)
        true_r, pred_r = g(tk.true_reward), g(tk.reward)
        rew_l = distance_loss(true_r, pred_r, self.reward_loss)
        if not self.global_average and rew_l.ndim and rew_l.shape[-1] == 1:
            rew_l = xp.squeeze(rew_l, axis=-1)
        rew_l = xp.mean(rew_l)
        out = {
            "loss_model_kl": xp.reshape(self.lambda_kl * kl, (1,)),
            "loss_model_reco": xp.reshape(self.lambda_reco * reco_l, (1,)),
            "loss_model_reward": xp.reshape(self.lambda_reward * rew_l, (1,)),
        }
        return out, td

    def _forward(self, batch: Mapping, params: dict) -> dict:
        return self._forward_full(batch, params)[0]

    def forward(self, batch: Mapping, *, generator: Any = None) -> tuple:  # type: ignore[override]
        """``(loss_dict, fake_data)``: the world model's output batch, without tape."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch: expected a nested dict of arrays, got {type(batch).__name__}")
        out, td = self._run(lambda: self._forward_full(batch, self.params), generator)
        return self._select(out), _sg_tree(td)

    def __call__(self, batch: Mapping, /, *, generator: Any = None) -> tuple:  # type: ignore[override]
        return self.forward(batch, generator=generator)

    def value_and_grad(self, batch: Mapping, /, *, terms: Sequence[str] | None = None,  # type: ignore[override]
                       generator: Any = None) -> tuple:
        return self._run(lambda: LossModule.value_and_grad(self, batch, terms=terms), generator)


# ------------------------------------------------------------------------------------------------ actor loss
class DreamerActorLoss(_GeneratorMixin, LossModule):
    """Dreamer actor loss (see the module docstring).

    Args (TorchRL's): ``actor_model`` (a :class:`~arrayrl.nn.ProbabilisticActor` reading ``state`` and ``belief``),
    ``value_model`` (a keyed module writing ``state_value``; held out), ``model_based_env``
    (:class:`DreamerEnv`; held out), ``imagination_horizon=15``, ``discount_loss=True``; arrayrl:
    ``torchrl_compat=False`` (``True``: TorchRL's one-step "lambda" target), ``generator``. ``gamma``/``lmbda``
    raise ``TypeError`` as in TorchRL (use :meth:`make_value_estimator`). Default estimator TDLambda(0.99, 0.95).
    Parameters: ``loss.params = {"actor_model": tree}``.

    ``forward`` and ``value_and_grad`` return ``(loss_dict, fake_data)`` where the base class returns the dict.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        belief: NestedKey = "belief"
        reward: NestedKey = "reward"
        value: NestedKey = "state_value"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"

    default_keys = _AcceptedKeys
    default_value_estimator = ValueEstimators.TDLambda
    SUPPORTED_VALUE_ESTIMATORS = (ValueEstimators.TD0, ValueEstimators.TD1, ValueEstimators.TDLambda)
    _OUT_KEYS = ("loss_actor",)
    _POLICY_NETWORK = "actor_model"

    def __init__(self, actor_model: Any, value_model: Any, model_based_env: DreamerEnv, *,
                 imagination_horizon: int = 15, discount_loss: bool = True, gamma: Any = None, lmbda: Any = None,
                 torchrl_compat: bool = False, generator: Any = None):
        super().__init__()
        if gamma is not None or lmbda is not None:
            raise TypeError("gamma, lmbda: pass them through make_value_estimator(value_type, gamma=..., lmbda=...)")
        if not isinstance(model_based_env, DreamerEnv):
            raise TypeError(f"model_based_env: expected a DreamerEnv, got {type(model_based_env).__name__}")
        for name, m in (("actor_model", actor_model), ("value_model", value_model)):
            if not hasattr(m, "apply") or not hasattr(m, "params"):
                raise TypeError(f"{name}: expected an arrayrl keyed module, got {type(m).__name__}")
        if isinstance(imagination_horizon, bool) or not isinstance(imagination_horizon, int) or imagination_horizon < 1:
            raise ValueError(f"imagination_horizon: expected a positive integer, got {imagination_horizon!r}")
        self.convert_to_functional(actor_model, "actor_model")
        self.value_model = value_model
        self.model_based_env = model_based_env
        self.imagination_horizon = imagination_horizon
        self.discount_loss = _check_bool(discount_loss, "discount_loss")
        self.torchrl_compat = _check_bool(torchrl_compat, "torchrl_compat")
        self._generator = generator

    def _value_estimator_keys(self) -> dict:
        return {"value": self.tensor_keys.value}

    def _in_keys(self) -> list:
        return ["state", self.tensor_keys.belief]

    def _gamma_lmbda(self) -> tuple:
        est = self.value_estimator
        gamma = est.gamma
        vt = self.value_type
        name = getattr(vt, "name", getattr(vt, "__name__", ""))
        if "TD0" in name:
            lmbda = 0.0
        elif "TD1" in name:
            lmbda = 1.0
        else:
            lmbda = getattr(est, "lmbda", 1.0)
        return gamma, lmbda

    def lambda_target(self, reward: Any, value: Any) -> Any:
        """The target for ``reward``, ``value`` = ``V(s_{t+1})``, both ``[*B, H, 1]``: TD(lambda) along ``H``
        (``torchrl_compat``: ``r + gamma V'``)."""
        check_floating(reward, "reward")
        check_floating(value, "value")
        if tuple(reward.shape) != tuple(value.shape) or reward.ndim < 2:
            raise ValueError(f"value: expected the shape of reward {tuple(reward.shape)} ([*B, H, 1]), got "
                             f"{tuple(value.shape)}")
        gamma, lmbda = self._gamma_lmbda()
        if self.torchrl_compat:
            return reward + gamma * value
        done = _zeros_bool(reward)
        return td_lambda_return_estimate(gamma, lmbda, value, reward, done, done, time_dim=-2)

    def _imagine(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        gen = self._gen()
        state = stop_gradient(_data.get(batch, "state", what="state key of DreamerActorLoss"))
        belief = stop_gradient(_data.get(batch, tk.belief, what="belief key of DreamerActorLoss"))
        check_floating(state, "state")
        check_floating(belief, "belief")
        if tuple(state.shape[:-1]) != tuple(belief.shape[:-1]):
            raise ValueError(f"belief: expected the batch shape {tuple(state.shape[:-1])} of state, got "
                             f"{tuple(belief.shape[:-1])}")
        actor = self._networks["actor_model"]
        env = self.model_based_env
        env_params = _sg_tree(env.world_model.params)
        cur = _data.with_({"state": state}, tk.belief, belief)
        steps = []
        for _ in range(self.imagination_horizon):
            td = actor.apply(params["actor_model"], cur, generator=gen, interaction_type="random")
            td = env.step(env_params, td, generator=gen, belief_key=tk.belief, reward_key=tk.reward)
            steps.append(td)
            nxt = td["next"]
            cur = _data.with_({"state": nxt["state"]}, tk.belief, _data.get(nxt, tk.belief))
        return _stack(steps, state.ndim - 1)

    def _forward_full(self, batch: Mapping, params: dict) -> tuple:
        tk = self.tensor_keys
        fake = self._imagine(batch, params)
        nxt = fake["next"]
        next_td = _data.with_({"state": nxt["state"]}, tk.belief, _data.get(nxt, tk.belief))
        next_td = self.value_model.apply(_sg_tree(self.value_model.params), next_td)
        next_value = _data.get(next_td, tk.value, what="value written by value_model")
        reward = _data.get(nxt, tk.reward)
        lam = self.lambda_target(reward, next_value)
        xp = namespace_of(lam)
        if self.discount_loss:
            gamma, _ = self._gamma_lmbda()
            w = _discount(xp, gamma, lam)
            actor_loss = -xp.mean(xp.sum(lam * w, axis=(-2, -1)))
        else:
            actor_loss = -xp.mean(xp.sum(lam, axis=(-2, -1)))
        fake = _data.with_(fake, "lambda_target", lam)
        return {"loss_actor": actor_loss}, fake

    def _forward(self, batch: Mapping, params: dict) -> dict:
        return self._forward_full(batch, params)[0]

    def forward(self, batch: Mapping, *, generator: Any = None) -> tuple:  # type: ignore[override]
        """``(loss_dict, fake_data)``: the imagined trajectory ``[*B, H, ...]`` with ``lambda_target``, no tape."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch: expected a nested dict of arrays, got {type(batch).__name__}")
        out, fake = self._run(lambda: self._forward_full(batch, self.params), generator)
        return self._select(out), _sg_tree(fake)

    def __call__(self, batch: Mapping, /, *, generator: Any = None) -> tuple:  # type: ignore[override]
        return self.forward(batch, generator=generator)

    def value_and_grad(self, batch: Mapping, /, *, terms: Sequence[str] | None = None,  # type: ignore[override]
                       generator: Any = None) -> tuple:
        """``((loss_dict, fake_data), grads)``; ``grads = {"actor_model": tree}`` (through the whole imagined
        trajectory: actor -> world model -> actor ... -> value model)."""
        from ..autodiff import value_and_grad

        names = list(terms) if terms is not None else ["loss_actor"]
        bad = [t for t in names if t not in self._OUT_KEYS]
        if bad:
            raise ValueError(f"terms: {bad} are not outputs of DreamerActorLoss; outputs: {list(self._OUT_KEYS)}")

        def total(p: dict) -> tuple:
            out, fake = self._forward_full(batch, p)
            return out["loss_actor"], (out, fake)

        def run() -> tuple:
            (_, (out, fake)), grads = value_and_grad(total, has_aux=True)(self.params)
            return (self._select(out), _sg_tree(fake)), grads

        return self._run(run, generator)


def _discount(xp: Any, gamma: Any, like: Any) -> Any:
    """``w_t = gamma^t`` along axis ``-2`` of ``like`` (``[*B, H, F]``), shape ``[H, 1]`` (TorchRL's
    ``cumprod([1, gamma, gamma, ...])``)."""
    h = int(like.shape[-2])
    dev = device_of(stop_gradient(like))
    kw = {} if dev is None else {"device": dev}
    t = xp.reshape(xp.arange(h, dtype=like.dtype, **kw), (h, 1))
    g = xp.asarray(stop_gradient(gamma), dtype=like.dtype, **kw) if not isinstance(gamma, (int, float)) else \
        xp.asarray(float(gamma), dtype=like.dtype, **kw)
    return g ** t


# ------------------------------------------------------------------------------------------------ value loss
class DreamerValueLoss(LossModule):
    """Dreamer value loss (see the module docstring). Args (TorchRL's, positional): ``value_model`` (a keyed
    module writing ``state_value``), ``value_loss="l2"``, ``discount_loss=True``, ``gamma=0.99``.
    ``forward(fake_data) -> (loss_dict, fake_data)``; ``loss.params = {"value_model": tree}``."""

    @dataclasses.dataclass
    class _AcceptedKeys:
        value: NestedKey = "state_value"

    default_keys = _AcceptedKeys
    _OUT_KEYS = ("loss_value",)
    _POLICY_NETWORK = None

    def __init__(self, value_model: Any, value_loss: str | None = None, discount_loss: bool = True,
                 gamma: float = 0.99):
        super().__init__()
        self.convert_to_functional(value_model, "value_model")
        self.value_loss = _check_loss_name(value_loss, "value_loss")
        self.discount_loss = _check_bool(discount_loss, "discount_loss")
        self.gamma = _check_float(gamma, "gamma")

    def _in_keys(self) -> list:
        return list(self._networks["value_model"].in_keys) + ["lambda_target"]

    def _forward(self, fake_data: Mapping, params: dict) -> dict:
        lam = stop_gradient(_data.get(fake_data, "lambda_target", what="lambda_target (from DreamerActorLoss)"))
        net = self._networks["value_model"]
        inputs: dict = {}
        for k in net.in_keys:
            inputs = _data.with_(inputs, k, stop_gradient(_data.get(fake_data, k, what="in_key of value_model")))
        value = _data.get(net.apply(params["value_model"], inputs), self.tensor_keys.value,
                          what="value written by value_model")
        xp = namespace_of(value, lam)
        if lam.ndim < 2:
            raise ValueError(f"lambda_target: expected [*B, H, 1], got shape {tuple(lam.shape)}")
        d = distance_loss(value, lam, self.value_loss)
        if self.discount_loss:
            d = _discount(xp, self.gamma, lam) * d
        return {"loss_value": xp.mean(xp.sum(d, axis=(-1, -2)))}

    def forward(self, fake_data: Mapping) -> tuple:  # type: ignore[override]
        """``(loss_dict, fake_data)`` (``fake_data`` returned as given)."""
        if not isinstance(fake_data, Mapping):
            raise TypeError(f"fake_data: expected a nested dict of arrays, got {type(fake_data).__name__}")
        return self._select(self._forward(fake_data, self.params)), fake_data

    def __call__(self, fake_data: Mapping, /) -> tuple:  # type: ignore[override]
        return self.forward(fake_data)
