"""Proximal Policy Optimization: :class:`PPOLoss`, :class:`ClipPPOLoss`, :class:`KLPENPPOLoss`.

Schulman, Wolski, Dhariwal, Radford & Klimov 2017, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347).
Mirrors ``torchrl.objectives.PPOLoss`` / ``ClipPPOLoss`` / ``KLPENPPOLoss`` (TorchRL 0.14.1): constructor arguments,
keys, outputs, default estimator (GAE, gamma 0.99, lambda 0.95). The terms live in
:mod:`arrayrl.objectives.policy_gradient`. Per sample (shapes ``[*B, 1]``; ``mu`` = the behaviour policy whose
log-probability is stored under ``sample_log_prob``, default ``"action_log_prob"``)::

    A           = batch[advantage], or GAE run here on the detached critic
                  (optionally standardised, or divided by advantage_norm's scale)
    lw          = log pi_theta(a|s) - log mu(a|s)
    PPOLoss     loss_objective = reduce(-exp(lw) A)                                              (eq. 6)
    ClipPPOLoss loss_objective = reduce(-min(exp(lw) A, exp(clip(lw, log(1-e_lo), log(1+e_hi))) A))  (eq. 7)
    KLPENPPOLoss loss_objective = reduce(-(exp(lw) A - beta KL(pi_old || pi_theta)))             (eq. 8)
    loss_entropy   = reduce(-c_H H[pi_theta(.|s)])                                                (eq. 9)
    loss_critic    = reduce(c_V dist(value_target, V_theta(s)))   (optionally value-clipped)      (eq. 9)
    kl_approx      = mean(log mu - log pi_theta)

Divergences from TorchRL 0.14.1 (``torchrl_compat=True`` reproduces TorchRL; docs/divergences.md):

* KLPEN: TorchRL updates ``beta`` in place after building ``-(r A - beta KL)``, so the loss value uses the old
  coefficient and the gradient the new one. arrayrl's gradient is the gradient of the value it returns (the old
  ``beta``); the new ``beta`` is loss state for the next call.
* ``clip_value`` with the advantage computed inside the loss: TorchRL reads ``V_old`` after the estimator has
  overwritten ``state_value`` with the current prediction, so clipping is a no-op. arrayrl reads ``V_old`` from the
  caller's batch (the value stored at collection time) and raises ``KeyError`` if it is absent.
* ``out_keys`` lists exactly the returned entries (TorchRL lists ``loss_critic`` without a critic and omits
  ``kl_approx``/``explained_variance``).
* ``make_value_estimator("vtrace")`` scores the stored action (IMPALA's ``log pi(a_t|s_t)``); TorchRL's V-trace uses
  the actor's fresh deterministic sample.

Kept as TorchRL: ``beta`` adapts on every call (minibatch KL); ``explained_variance`` and ``ESS`` reduce over dim 0
only; ``kl``, ``clip_fraction``, ``kl_approx``, ``entropy``, ``max_ratio``, ``mean_ratio`` ignore masks.

``advantage_norm`` (a :class:`~arrayrl.objectives.value_norm.ValueNorm`, TorchRL's argument): ``A / scale`` without
re-centring, statistics updated before the scaling from the valid rows of the value target, only when the advantage is
computed here and the loss is in training mode (``loss.train()``/``loss.eval()``); state in
``loss.advantage_norm_state``. Exclusive with ``normalize_advantage``. A2CLoss and MAPPOLoss inherit it.

Composite distributions (:class:`~arrayrl.distributions.CompositeDistribution`, several named heads): the
log-probability and the entropy are the sums over heads; a head without a closed-form entropy (TanhNormal) gets the
Monte-Carlo estimate with ``samples_mc_entropy`` draws from ``generator``, the others stay analytic (TorchRL's
``composite_entropy``). Not implemented: per-head ``entropy_coeff`` mappings (a ``Mapping`` raises
``NotImplementedError``), so one ``entropy_coeff`` weighs the summed entropy.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

from .. import data as _data
from .._backend import namespace_of
from ..autodiff import stop_gradient
from . import policy_gradient as PG
from ._nets import keyed_output
from .common import LossModule, _coerce_value_type
from .utils import _GAMMA_ERROR
from .value_norm import _AdvantageNormMixin

__all__ = ["PPOLoss", "ClipPPOLoss", "KLPENPPOLoss"]

_CRITIC_TYPES = ("l1", "l2", "smooth_l1")


class PPOLoss(_AdvantageNormMixin, LossModule):
    """The plain importance-weighted PPO loss (TorchRL ``PPOLoss``), base of the clipped and KL-penalised losses.

    Args:
        actor_network: a probabilistic actor with ``get_dist(params, batch)`` (``arrayrl.nn.ProbabilisticActor``);
            its ``log_prob_key`` and ``sample_key`` become the ``sample_log_prob`` and ``action`` keys.
        critic_network: a keyed state-value network writing ``state_value`` ``[*B, 1]`` (optional).

    Keyword Args:
        entropy_bonus: add ``loss_entropy`` (default ``True``). samples_mc_entropy: draws of the Monte-Carlo entropy
            for distributions (or composite heads) without a closed form (TanhNormal). entropy_coeff: ``c_H``
            (default 0.01; a float: per-head mappings are not implemented).
        log_explained_variance: return ``explained_variance`` (default ``True``).
        critic_coeff: ``c_V``; ``None`` with a critic means 1.0, ``0`` (or a negative value) disables the critic
            loss. A nonzero coefficient without a critic raises ``TypeError``.
        loss_critic_type: ``"smooth_l1"`` (default), ``"l2"`` (no 1/2) or ``"l1"``.
        normalize_advantage: standardise ``A`` (unbiased std, eps 1e-6; masked and biased with eps 1e-4 when the
            batch has ``shifted_valid``). normalize_advantage_exclude_dims: axes kept independent.
        advantage_norm: a :class:`~arrayrl.objectives.value_norm.ValueNorm` (``PopArtValueNorm``...): ``A`` is
            divided by its ``scale`` (no re-centring). Its state is ``loss.advantage_norm_state`` (created on first
            use), updated before the scaling from the valid rows of the value target when the advantage is computed
            here in training mode (``loss.train()``/``loss.eval()``). Exclusive with ``normalize_advantage``
            (``ValueError``).
        separate_losses: accepted; arrayrl networks never share trees, so each loss only trains its own network.
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"`` (``loss_*`` then have shape ``[*B]``).
        clip_value: ``c``: clip the value prediction to ``V_old +- c`` (PPO2-style; see the module docstring).
        delay_actor: PPO-EWMA: a target actor (``loss.target_params["actor_network"]``, moved by
            ``SoftUpdate``) is the proximal policy; the ratio is taken against it and the surrogate is weighted by
            ``pi_prox / mu`` (no gradient).
        max_importance_ratio: cap ``pi_theta / mu`` at ``R`` by lifting the gradient-free weight
            ``log_is = min(log_is, log R - sg(lw))``.
        torchrl_compat: reproduce TorchRL's numbers and listings where arrayrl follows the paper (module docstring).
        generator: an :class:`arrayrl.random.Generator` for the Monte-Carlo entropy (and KL); default a seeded one
            created on first use. Tests inject draws with ``Generator.from_noise``.
        functional, device: accepted for compatibility (arrayrl losses are always functional).

    Shapes: ``observation [*B, F]``, ``action`` as the distribution's samples, ``sample_log_prob [*B]`` (the
    distribution's batch shape), ``advantage``/``value_target``/``state_value`` ``[*B, 1]``,
    ``("next", reward|done|terminated) [*B, 1]``. With GAE inside the loss the last batch axis is time.

    Example::

        >>> import numpy as np
        >>> from arrayrl.distributions import Categorical
        >>> from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor, ValueOperator
        >>> from arrayrl.objectives.ppo import ClipPPOLoss
        >>> actor = ProbabilisticActor(KeyedModule(MLP(in_features=3, out_features=2, num_cells=[8]),
        ...                            in_keys=["observation"], out_keys=["logits"]), in_keys=["logits"],
        ...                            distribution_class=Categorical)
        >>> critic = ValueOperator(MLP(in_features=3, out_features=1, num_cells=[8]), in_keys=["observation"])
        >>> loss = ClipPPOLoss(actor, critic)
        >>> rng = np.random.default_rng(0)
        >>> B = 5
        >>> batch = {"observation": rng.normal(size=(B, 3)), "action": rng.integers(0, 2, B),
        ...          "action_log_prob": np.full(B, np.log(0.5)),
        ...          "next": {"observation": rng.normal(size=(B, 3)), "reward": rng.normal(size=(B, 1)),
        ...                   "done": np.zeros((B, 1), bool), "terminated": np.zeros((B, 1), bool)}}
        >>> out, grads = loss.value_and_grad(batch)
        >>> sorted(grads)
        ['actor_network', 'critic_network']
        >>> out["loss_objective"].shape
        ()
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        """Key names (TorchRL defaults; ``sample_log_prob`` is ``"action_log_prob"``, tensordict 0.14's default)."""

        advantage: Any = "advantage"
        value_target: Any = "value_target"
        value: Any = "state_value"
        sample_log_prob: Any = "action_log_prob"
        action: Any = "action"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"

    default_keys = _AcceptedKeys
    default_value_estimator = "gae"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda", "gae", "magae", "vtrace")
    _POLICY_NETWORK = "actor_network"

    def __init__(
        self,
        actor_network: Any = None,
        critic_network: Any = None,
        *,
        entropy_bonus: bool = True,
        samples_mc_entropy: int = 1,
        entropy_coeff: Any = None,
        log_explained_variance: bool = True,
        critic_coeff: float | None = None,
        loss_critic_type: str = "smooth_l1",
        normalize_advantage: bool = False,
        normalize_advantage_exclude_dims: tuple = (),
        advantage_norm: Any = None,
        gamma: float | None = None,
        separate_losses: bool = False,
        advantage_key: Any = None,
        value_target_key: Any = None,
        value_key: Any = None,
        functional: bool = True,
        actor: Any = None,
        critic: Any = None,
        reduction: str | None = None,
        clip_value: float | None = None,
        delay_actor: bool = False,
        max_importance_ratio: float | None = None,
        device: Any = None,
        torchrl_compat: bool = False,
        generator: Any = None,
        **kwargs: Any,
    ) -> None:
        if actor is not None:
            actor_network = actor
        if critic is not None:
            critic_network = critic
        for old, new in (("critic_coef", "critic_coeff"), ("entropy_coef", "entropy_coeff")):
            if old in kwargs:
                raise TypeError(f"'{old}' has been removed in torchrl v0.11. Please use '{new}' instead.")
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword arguments {sorted(kwargs)}")
        if gamma is not None:
            raise TypeError(_GAMMA_ERROR)
        for name, val in (("advantage_key", advantage_key), ("value_target_key", value_target_key),
                          ("value_key", value_key)):
            if val is not None:
                raise RuntimeError(f"Setting '{name}' via the constructor is deprecated, use .set_keys() instead.")
        # TorchRL's critic_coeff semantics: None -> 1.0 with a critic; None/0 -> no critic loss
        if critic_coeff is None and critic_network is not None:
            critic_coeff = 1.0
        elif critic_coeff in (None, 0) and critic_network is not None:
            critic_coeff = None
        if actor_network is None or (critic_network is None and critic_coeff not in (None, 0.0)):
            raise TypeError("Missing positional arguments actor_network or critic_network.")
        if not hasattr(actor_network, "get_dist"):
            raise TypeError(
                f"actor_network: expected a probabilistic actor with get_dist(params, batch), got "
                f"{type(actor_network).__name__}"
            )
        if entropy_coeff is None:
            entropy_coeff = 0.01
        if isinstance(entropy_coeff, Mapping):
            raise NotImplementedError("per-head entropy_coeff mappings (composite distributions) are not implemented")
        if not isinstance(entropy_coeff, numbers.Real):
            raise TypeError("entropy_coeff must be a float or a Mapping[str, float]")
        if loss_critic_type not in _CRITIC_TYPES:
            raise ValueError(f"loss_critic_type: expected one of {_CRITIC_TYPES}, got {loss_critic_type!r}")
        reduction = "mean" if reduction is None else reduction
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
        if max_importance_ratio is not None and max_importance_ratio <= 0:
            raise ValueError(f"max_importance_ratio must be > 0, got {max_importance_ratio}.")
        if clip_value is not None and not clip_value > 0:
            raise ValueError(f"clip_value: expected a positive number, got {clip_value!r}")
        self.reduction = reduction
        super().__init__()
        self._set_advantage_norm(advantage_norm, normalize_advantage)
        self.convert_to_functional(actor_network, "actor_network", create_target_params=delay_actor)
        if critic_network is not None:
            self.convert_to_functional(critic_network, "critic_network")
        self.critic_network = critic_network  # (None without a critic; read by the estimators' for_loss)
        self.delay_actor = delay_actor
        self.entropy_bonus = entropy_bonus
        self.samples_mc_entropy = samples_mc_entropy
        self.entropy_coeff = float(entropy_coeff)
        self.log_explained_variance = log_explained_variance
        self.critic_coeff = critic_coeff
        self.loss_critic_type = loss_critic_type
        self.normalize_advantage = normalize_advantage
        self.normalize_advantage_exclude_dims = tuple(normalize_advantage_exclude_dims)
        self.separate_losses = separate_losses
        self.clip_value = clip_value
        self.max_importance_ratio = max_importance_ratio
        self.torchrl_compat = bool(torchrl_compat)
        self.generator = generator
        self.functional = functional
        self._adopt_actor_keys(actor_network, "sample_log_prob", _untuple)

    # -------------------------------------------------------------------------------------------- keys / outputs
    @property
    def _has_critic(self) -> bool:
        return self.critic_coeff is not None and self.critic_coeff > 0

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        actor_in = list(self._networks["actor_network"].in_keys)
        keys = [*actor_in, *[("next",) + _data.unravel_key(k) for k in actor_in]]
        if "critic_network" in self._networks:
            keys += list(self._networks["critic_network"].in_keys)
        return keys + [tk.action, tk.sample_log_prob, ("next", tk.reward), ("next", tk.done), ("next", tk.terminated)]

    def _head_keys(self) -> list:
        return ["loss_objective", "kl_approx"]

    def _tail_keys(self) -> list:
        return []

    def _all_out_keys(self) -> list:
        """The entries :meth:`forward` returns, in order."""
        keys = self._head_keys()
        if self.entropy_bonus:
            keys += ["entropy", "loss_entropy"]
        if self._has_critic:
            keys.append("loss_critic")
            if self.clip_value:
                keys.append("value_clip_fraction")
            if self.log_explained_variance:
                keys.append("explained_variance")
        return keys + self._tail_keys()

    def _torchrl_out_keys(self) -> list:
        """TorchRL 0.14.1's listing: ``loss_critic`` always (``if self.loss_critic:`` tests a bound method), no
        ``explained_variance``, no ``kl_approx`` except in ClipPPO's tail."""
        keys = [k for k in self._head_keys() if k != "kl_approx"]
        if self.entropy_bonus:
            keys += ["entropy", "loss_entropy"]
        keys.append("loss_critic")
        if self.clip_value:
            keys.append("value_clip_fraction")
        return keys + self._tail_keys()

    @property
    def out_keys(self) -> list:
        if self._selected_out_keys is not None:
            return list(self._selected_out_keys)
        return self._torchrl_out_keys() if self.torchrl_compat else self._all_out_keys()

    def _select(self, out: dict) -> dict:
        if self._selected_out_keys is None:
            return {k: out[k] for k in self._all_out_keys() if k in out}
        return {k: out[k] for k in self._selected_out_keys if k in out}

    # -------------------------------------------------------------------------------------------- estimators
    def _estimator_network(self) -> Any:
        return self._networks.get("critic_network")

    def make_value_estimator(self, value_type: Any = None, **hyperparams: Any) -> LossModule:
        """As :meth:`LossModule.make_value_estimator`; V-trace gets the actor: ``log pi(a_t|s_t)`` of the stored action
        with the live actor parameters (``torchrl_compat``: the actor network itself, TorchRL's fresh sample)."""
        vt = value_type if value_type is not None else self.default_value_estimator
        if isinstance(vt, str) or type(vt).__name__ == "ValueEstimators":
            if _coerce_value_type(vt).name == "VTrace" and "actor_network" not in hyperparams:
                actor = self._networks["actor_network"]
                hyperparams["actor_network"] = actor if self.torchrl_compat else self._stored_action_log_prob
        return super().make_value_estimator(value_type, **hyperparams)

    def _stored_action_log_prob(self, batch: Mapping) -> Any:
        actor = self._networks["actor_network"]
        return stop_gradient(actor.log_prob(actor.params, batch))

    # -------------------------------------------------------------------------------------------- pieces
    def _advantage(self, batch: Mapping, params: dict) -> tuple[Any, Mapping]:
        """``(A, work)``: the advantage (scaled by ``advantage_norm`` or standardised, if asked) and the batch the loss
        reads from (the caller's, or a new dict with the estimator's outputs). The estimator runs on the detached
        critic (TorchRL); the next values come from the delayed critic when there is one (ReinforceLoss's
        ``delay_value``), else from the same detached tree (one object: shifted estimators require it)."""
        tk = self.tensor_keys
        adv = _data.get_or(batch, tk.advantage, None)
        work = batch
        if adv is None:
            if "critic_network" not in self._networks:
                raise RuntimeError("Critic network is not specified, cannot compute advantage within forward.")
            critic = stop_gradient(params["critic_network"])
            target = self._target_tree("critic_network") if "critic_network" in self.delayed_targets else critic
            work = self.value_estimator(batch, params=critic, target_params=target)
            adv = _data.get(work, tk.advantage, what="advantage written by the value estimator")
        adv = stop_gradient(adv)
        if self.advantage_norm is not None:
            adv = self._scale_advantage(adv, batch, work)
        elif self.normalize_advantage and _numel(adv) > 1:
            mask = _data.get_or(work, "shifted_valid", None)
            adv = PG.normalize_advantage(adv, self.normalize_advantage_exclude_dims, mask=mask)
        return adv, work

    def _log_prob(self, actor_params: Any, batch: Mapping) -> tuple[Any, Any]:
        """``(dist, log pi(a|s))`` of the stored action under ``actor_params``."""
        actor = self._networks["actor_network"]
        dist = actor.get_dist(actor_params, batch)
        action = stop_gradient(_data.get(batch, self.tensor_keys.action, what="action"))
        # store_pre_tanh actors (TanhNormal): score the stored pre-image, the exact density of the drawn action
        pre_key = getattr(actor, "pre_tanh_key", None)
        pre = _data.get_or(batch, pre_key, None) if pre_key is not None else None
        if pre is not None and getattr(dist, "supports_pre_tanh", False):
            return dist, dist.log_prob(action, pre_tanh=stop_gradient(pre))
        return dist, dist.log_prob(action)

    def _log_weight(self, batch: Mapping, params: dict, advantage: Any) -> dict:
        """The ratio pieces: ``lw [*B, *K, 1]`` (against the proximal policy), ``log_is`` (or ``None``), the
        broadcast advantage, the current distribution and ``kl_approx``."""
        tk = self.tensor_keys
        key = _data.key_str(tk.sample_log_prob)
        old = _data.get_or(batch, tk.sample_log_prob, None)
        if old is None:
            raise KeyError(
                f"Couldn't find the log-prob {key} in the input data (the behaviour log-probability written by the "
                "actor with return_log_prob=True); present keys: "
                + ", ".join(_data.key_str(k) for k in _data.keys(batch))
            )
        old = stop_gradient(old)
        dist, log_prob = self._log_prob(params["actor_network"], batch)
        if tuple(old.shape) != tuple(log_prob.shape):
            raise ValueError(
                f"{key}: expected shape {tuple(log_prob.shape)} (the batch shape of the actor's distribution), got "
                f"{tuple(old.shape)}"
            )
        prox = old
        if self.delay_actor:
            prox = stop_gradient(self._log_prob(self._target_tree("actor_network"), batch)[1])
        lw = PG.log_ratio(log_prob, prox, names=("current log-probability", key))
        log_is = PG.log_ratio(prox, old, names=("proximal log-probability", key)) if self.delay_actor else None
        if self.max_importance_ratio is not None:  # cap pi_theta / mu at R through the gradient-free weight
            xp = namespace_of(stop_gradient(lw))
            cap = xp.log(xp.asarray(float(self.max_importance_ratio), dtype=old.dtype)) - stop_gradient(lw)
            log_is = xp.minimum(xp.zeros_like(cap) if log_is is None else log_is, cap)
        adv = PG.broadcast_advantage(advantage, lw, _data.key_str(tk.advantage))
        return {"lw": lw, "log_is": log_is, "advantage": adv, "dist": dist,
                "kl_approx": PG.approx_kl(log_prob, prox)}

    def _mc_generator(self, like: Any) -> Any:
        if self.generator is None:
            from ..random import Generator

            self.generator = Generator(0, xp=namespace_of(stop_gradient(like)))
        return self.generator

    def _reduce(self, loss: Any, batch: Mapping) -> Any:
        out = self._reduce_loss(loss, batch)
        return namespace_of(out).squeeze(out, axis=-1) if self.reduction == "none" else out

    def _entropy_terms(self, dist: Any, lw: Any, batch: Mapping) -> dict:
        if not self.entropy_bonus:
            return {}
        gen = None if PG.has_analytic_entropy(dist) else self._mc_generator(lw)
        h = PG.entropy(dist, samples_mc_entropy=self.samples_mc_entropy, generator=gen)
        xp = namespace_of(h)
        h = xp.expand_dims(h, axis=-1)
        return {"entropy": xp.mean(stop_gradient(h)),
                "loss_entropy": self._reduce(PG.entropy_bonus_loss(h, self.entropy_coeff), batch)}

    def _old_value(self, batch: Mapping, work: Mapping) -> Any:
        """``V_old`` for value clipping: the caller's stored value (paper); TorchRL reads the estimator's output."""
        key = self.tensor_keys.value
        src = work if self.torchrl_compat else batch
        v = _data.get_or(src, key, None)
        if v is None:
            raise KeyError(
                f"clip_value is set to {self.clip_value}, but the key {_data.key_str(key)} (the value predicted at "
                "collection time, V_old) was not found in the input batch"
                + ("" if self.torchrl_compat else "; torchrl_compat=True clips against the estimator's fresh value "
                   "(a no-op, as TorchRL)")
            )
        return stop_gradient(v)

    def _critic_loss_inputs(self, target: Any, value: Any, old: Any) -> tuple:
        """``(value_target, V_theta(s), V_old or None)`` as the critic distance, the value clip and
        ``explained_variance`` see them (TorchRL's hook; identity here, MAPPO's ``value_norm`` normalises)."""
        return target, value, old

    def _critic_terms(self, batch: Mapping, work: Mapping, params: dict) -> dict:
        if not self._has_critic:
            return {}
        tk = self.tensor_keys
        target = _data.get(work, tk.value_target, what="value target (written by the value estimator)")
        old = self._old_value(batch, work) if self.clip_value else None
        value = keyed_output(self._networks["critic_network"], params["critic_network"], work, tk.value,
                             what="state value written by the critic")
        target, value, old = self._critic_loss_inputs(target, value, old)
        names = (f"critic output {_data.key_str(tk.value)}", _data.key_str(tk.value_target))
        loss, frac = PG.critic_loss(value, target, self.loss_critic_type, old_value=old, clip_value=self.clip_value,
                                    names=names)
        out = {"loss_critic": self._reduce(loss * self.critic_coeff, work)}
        if frac is not None:
            out["value_clip_fraction"] = frac
        if self.log_explained_variance:
            out["explained_variance"] = PG.explained_variance(target, value)
        return out

    def _objective(self, parts: dict, batch: Mapping, work: Mapping) -> dict:
        """The policy terms (``loss_objective`` and the class's diagnostics); overridden by the subclasses."""
        loss = PG.importance_weighted_surrogate(parts["lw"], parts["advantage"], parts["log_is"])
        return {"loss_objective": self._reduce(loss, work)}

    def _forward(self, batch: Mapping, params: dict) -> dict:
        advantage, work = self._advantage(batch, params)
        parts = self._log_weight(work, params, advantage)
        out = self._objective(parts, batch, work)
        out["kl_approx"] = parts["kl_approx"]
        out.update(self._entropy_terms(parts["dist"], parts["lw"], work))
        out.update(self._critic_terms(batch, work, params))
        return out


class ClipPPOLoss(PPOLoss):
    """The clipped PPO loss (TorchRL ``ClipPPOLoss``), paper eq. 7 (module docstring).

    Keyword Args:
        clip_epsilon: ``eps`` (default 0.2) or ``(eps_low, eps_high)``; the clip acts on the log-weight,
            ``clip(lw, log(1 - eps_low), log(1 + eps_high))``.
        clip_value: a float, or ``True`` for ``clip_epsilon`` (not allowed with a tuple).
        Others as :class:`PPOLoss`.

    Extra outputs: ``clip_fraction`` (share of clipped log-weights), ``ESS`` (normalised effective sample size
    over dim 0, shape ``batch[1:]``), ``max_ratio``, ``mean_ratio`` (of ``pi_theta / mu``).
    """

    def __init__(self, actor_network: Any = None, critic_network: Any = None, *, clip_epsilon: Any = 0.2,
                 clip_value: Any = None, **kwargs: Any) -> None:
        if isinstance(clip_value, bool):
            if clip_value and isinstance(clip_epsilon, (tuple, list)):
                raise ValueError(
                    "clip_value=True cannot infer the value-clip threshold from an asymmetric clip_epsilon tuple. "
                    "Pass an explicit float threshold instead, e.g. clip_value=0.2."
                )
            clip_value = float(clip_epsilon) if clip_value else None
        PG.clip_bounds(clip_epsilon)  # validates
        self.clip_epsilon = tuple(float(e) for e in clip_epsilon) if isinstance(clip_epsilon, (tuple, list)) \
            else float(clip_epsilon)
        super().__init__(actor_network, critic_network, clip_value=clip_value, **kwargs)

    def _head_keys(self) -> list:
        return ["loss_objective", "clip_fraction"]

    def _tail_keys(self) -> list:
        return ["ESS", "kl_approx", "max_ratio", "mean_ratio"]

    def _objective(self, parts: dict, batch: Mapping, work: Mapping) -> dict:
        lw, log_is = parts["lw"], parts["log_is"]
        loss, frac = PG.clipped_surrogate(lw, parts["advantage"], self.clip_epsilon, log_is)
        behav = stop_gradient(lw if log_is is None else lw + log_is)
        xp = namespace_of(behav)
        ratio = xp.exp(behav)
        return {"loss_objective": self._reduce(loss, work), "clip_fraction": frac,
                "ESS": PG.effective_sample_size(behav), "max_ratio": xp.max(ratio), "mean_ratio": xp.mean(ratio)}


class KLPENPPOLoss(PPOLoss):
    """The KL-penalised PPO loss with an adaptive coefficient (TorchRL ``KLPENPPOLoss``), paper eq. 8.

    ``KL(pi_old || pi_theta)`` is analytic where :func:`~arrayrl.objectives.policy_gradient.kl_divergence` has the
    pair (Normal, IndependentNormal, TanhNormal, Categorical), else Monte-Carlo with ``samples_mc_kl`` draws from
    ``pi_old``. ``pi_old`` is built from the distribution parameters stored in the batch (the actor's
    distribution ``in_keys``, e.g. ``loc``/``scale`` or ``logits``); with ``delay_actor`` it is the target actor.

    After each call ``beta`` (loss state, a 0-d array after the first call) becomes
    :func:`~arrayrl.objectives.policy_gradient.adapt_kl_beta` of the batch KL: ``x increment`` if
    ``mean KL > 1.5 dtarg``, ``x decrement`` if ``mean KL < dtarg / 1.5``. The returned loss and its gradient use the
    ``beta`` before the update (``torchrl_compat=True``: the gradient uses the updated one, as TorchRL).
    :meth:`reset` restores the initial ``beta``.

    Keyword Args:
        dtarg: target KL (0.01). beta: initial coefficient (1.0). increment (>= 1, default 2), decrement (<= 1,
        default 0.5). samples_mc_kl: Monte-Carlo draws (1). Others as :class:`PPOLoss`.

    Extra output: ``kl`` ``[*B, 1]`` (unreduced).
    """

    def __init__(self, actor_network: Any = None, critic_network: Any = None, *, dtarg: float = 0.01,
                 beta: float = 1.0, increment: float = 2, decrement: float = 0.5, samples_mc_kl: int = 1,
                 **kwargs: Any) -> None:
        if increment < 1.0:
            raise ValueError(f"increment should be >= 1.0 in KLPENPPOLoss, got {increment:4.4f}")
        if decrement > 1.0:
            raise ValueError(f"decrement should be <= 1.0 in KLPENPPOLoss, got {decrement:4.4f}")
        super().__init__(actor_network, critic_network, **kwargs)
        self.dtarg = dtarg
        self._beta_init = float(beta)
        self.beta = float(beta)
        self.increment = increment
        self.decrement = decrement
        self.samples_mc_kl = samples_mc_kl

    def reset(self) -> None:
        """Restore the initial ``beta``."""
        self.beta = self._beta_init

    def _in_keys(self) -> list:
        return super()._in_keys() + list(self._networks["actor_network"].probabilistic_module.in_keys)

    def _head_keys(self) -> list:
        return ["loss_objective", "kl", "kl_approx"]

    def _previous_dist(self, batch: Mapping) -> Any:
        actor = self._networks["actor_network"]
        if self.delay_actor:
            return actor.get_dist(self._target_tree("actor_network"), batch)
        prob = actor.probabilistic_module
        try:
            return prob.get_dist(batch)
        except KeyError as err:
            raise KeyError(
                f"The parameters of the distribution ({', '.join(_data.key_str(k) for k in prob.in_keys)}) were not "
                f"found in the batch. Make sure they are provided to {type(self).__name__}. ({err})"
            ) from err

    def _kl(self, previous: Any, current: Any, like: Any) -> Any:
        if PG.has_analytic_kl(previous, current):
            return PG.kl_divergence(previous, current)
        return PG.mc_kl_divergence(previous, current, self.samples_mc_kl, generator=self._mc_generator(like))

    def _objective(self, parts: dict, batch: Mapping, work: Mapping) -> dict:
        lw = parts["lw"]
        kl = self._kl(self._previous_dist(batch), parts["dist"], lw)
        xp = namespace_of(kl)
        kl = xp.expand_dims(kl, axis=-1)
        raw = stop_gradient(kl)
        beta = self.beta
        if not isinstance(beta, float):
            beta = namespace_of(raw).asarray(beta, dtype=raw.dtype)
        new_beta = PG.adapt_kl_beta(beta, raw, self.dtarg, self.increment, self.decrement)
        loss = PG.kl_penalty_surrogate(lw, parts["advantage"], kl, beta,
                                       grad_beta=new_beta if self.torchrl_compat else None,
                                       log_is_weight=parts["log_is"])
        self.beta = new_beta
        return {"loss_objective": self._reduce(loss, work), "kl": raw}


def _numel(x: Any) -> int:
    n = 1
    for s in x.shape:
        n *= int(s)
    return n


def _untuple(key: Any) -> Any:
    k = _data.unravel_key(key)
    return k[0] if len(k) == 1 else k
