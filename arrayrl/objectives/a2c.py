"""Advantage actor-critic: :class:`A2CLoss`.

Mnih, Badia, Mirza, Graves, Lillicrap, Harley, Silver & Kavukcuoglu 2016, "Asynchronous Methods for Deep
Reinforcement Learning" (arXiv:1602.01783; A3C, whose synchronous form is A2C). Mirrors ``torchrl.objectives.A2CLoss``
(TorchRL 0.14.1): constructor arguments, keys, outputs, default estimator (GAE, gamma 0.99, lambda 0.95, run on the
detached critic). Per sample (shapes ``[*B, 1]``)::

    A              = batch[advantage], or the estimator's advantage       (optionally divided by advantage_norm)
    loss_objective = reduce(-log pi_theta(a|s) A)                          (the policy gradient, A a constant)
    loss_entropy   = reduce(-c_H H[pi_theta(.|s)])                         (A3C's entropy regularisation, beta)
    loss_critic    = reduce(c_V dist(value_target, V_theta(s)))            (optionally value-clipped)
    entropy        = mean H

The terms are :mod:`arrayrl.objectives.policy_gradient`'s; the machinery (advantage, log-probability, entropy,
critic, reductions, estimators) is :class:`~arrayrl.objectives.ppo.PPOLoss`'s, which this class extends (so, unlike
TorchRL, ``isinstance(loss, PPOLoss)`` holds).

``critic_coeff`` (TorchRL's semantics, not PPOLoss's): ``1.0`` by default; ``None`` removes ``loss_critic`` (the
critic still feeds the estimator); ``0`` still returns ``loss_critic`` (times 0). The entropy terms are returned only
if ``entropy_bonus and entropy_coeff``.

Divergences from TorchRL 0.14.1 (``torchrl_compat=True`` reproduces TorchRL; docs/divergences.md):

* ``clip_value`` with the advantage computed inside the loss: TorchRL clips against the value its estimator has
  just written (a no-op); arrayrl against the value stored in the caller's batch (as PPOLoss).
* ``out_keys`` lists ``value_clip_fraction`` when it is returned (TorchRL omits it).

Also unlike TorchRL: unknown keyword arguments raise ``TypeError`` (TorchRL ignores them, e.g. a misspelt
``normalize_advantage``), a per-dimension ``Normal`` actor broadcasts the advantage per action dimension as PPOLoss
(TorchRL's ``[*B, A, 1] * [*B, 1]`` product fails), and an advantage without its trailing singleton raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import data as _data
from .._backend import namespace_of
from . import policy_gradient as PG
from .ppo import PPOLoss

__all__ = ["A2CLoss"]


class _ScoreFunctionLoss(PPOLoss):
    """What A2C and REINFORCE share on top of PPOLoss: the score-function term and TorchRL's critic coefficient."""

    @staticmethod
    def _networks_given(actor_network: Any, critic_network: Any, actor: Any, critic: Any) -> tuple:
        """``(actor, critic)``: the ``actor=``/``critic=`` aliases win; both are required (``TypeError``)."""
        actor_network = actor if actor is not None else actor_network
        critic_network = critic if critic is not None else critic_network
        if actor_network is None or critic_network is None:
            raise TypeError("Missing positional arguments actor_network or critic_network.")
        return actor_network, critic_network

    @property
    def _has_critic(self) -> bool:
        return self.critic_coeff is not None

    def _in_keys(self) -> list:  # the stored log-probability is not read
        lp = _data.unravel_key(self.tensor_keys.sample_log_prob)
        return [k for k in super()._in_keys() if _data.unravel_key(k) != lp]

    def _score_function_loss(self, work: Mapping, params: dict, advantage: Any) -> tuple:
        """``(reduce(-log pi_theta(a|s) A), dist)``; ``log pi`` ``[*B, *K, 1]``, the advantage broadcast over ``K``."""
        dist, log_prob = self._log_prob(params["actor_network"], work)
        lp = namespace_of(log_prob).expand_dims(log_prob, axis=-1)
        adv = PG.broadcast_advantage(advantage, lp, _data.key_str(self.tensor_keys.advantage))
        return self._reduce(PG.policy_gradient_loss(lp, adv), work), dist

    def _torchrl_out_keys(self) -> list:
        return [k for k in self._all_out_keys() if k != "value_clip_fraction"]


class A2CLoss(_ScoreFunctionLoss):
    """The A2C loss (TorchRL ``A2CLoss``; module docstring).

    Args:
        actor_network: a probabilistic actor with ``get_dist(params, batch)`` (``arrayrl.nn.ProbabilisticActor``).
        critic_network: a keyed state-value network writing ``state_value`` ``[*B, 1]`` (required).

    Keyword Args:
        entropy_bonus: add the entropy terms (default ``True``; only if ``entropy_coeff`` is nonzero).
        samples_mc_entropy: Monte-Carlo draws for distributions without a closed-form entropy (TanhNormal).
        entropy_coeff: ``c_H`` (default 0.01). critic_coeff: ``c_V`` (default 1.0; ``None``: no critic loss).
        loss_critic_type: ``"smooth_l1"`` (default), ``"l2"`` (no 1/2) or ``"l1"``.
        advantage_norm: a :class:`~arrayrl.objectives.value_norm.ValueNorm`; the advantage is divided by its
            ``scale``. Its state is ``loss.advantage_norm_state``, updated from the valid rows of the value target
            when the advantage is computed here in training mode (``loss.train()``/``loss.eval()``).
        separate_losses: accepted (arrayrl networks never share trees).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (``[*B]``).
        clip_value: clip ``V_theta(s)`` to ``V_old +- c`` (``V_old`` = the batch's ``state_value``).
        torchrl_compat: reproduce TorchRL where arrayrl differs (module docstring).
        generator: an :class:`arrayrl.random.Generator` for the Monte-Carlo entropy.
        functional, actor, critic, gamma, advantage_key, value_target_key: as TorchRL (aliases and errors).

    Outputs: ``loss_objective``, ``loss_critic`` (+ ``value_clip_fraction``), ``entropy``, ``loss_entropy``.
    """

    def __init__(
        self,
        actor_network: Any = None,
        critic_network: Any = None,
        *,
        entropy_bonus: bool = True,
        samples_mc_entropy: int = 1,
        entropy_coeff: float | None = None,
        critic_coeff: float | None = 1.0,
        loss_critic_type: str = "smooth_l1",
        advantage_norm: Any = None,
        gamma: float | None = None,
        separate_losses: bool = False,
        advantage_key: Any = None,
        value_target_key: Any = None,
        functional: bool = True,
        actor: Any = None,
        critic: Any = None,
        reduction: str | None = None,
        clip_value: float | None = None,
        torchrl_compat: bool = False,
        generator: Any = None,
        **kwargs: Any,
    ) -> None:
        actor_network, critic_network = _ScoreFunctionLoss._networks_given(actor_network, critic_network, actor, critic)
        unknown = sorted(set(kwargs) - {"entropy_coef", "critic_coef", "device"})  # (PPOLoss raises on the first two)
        if unknown:
            raise TypeError(f"A2CLoss: unexpected keyword arguments {unknown}")
        entropy_coeff = 0.01 if entropy_coeff is None else entropy_coeff
        super().__init__(
            actor_network, critic_network, entropy_bonus=entropy_bonus, samples_mc_entropy=samples_mc_entropy,
            entropy_coeff=entropy_coeff, log_explained_variance=False, critic_coeff=1.0,
            loss_critic_type=loss_critic_type, advantage_norm=advantage_norm, gamma=gamma,
            separate_losses=separate_losses,
            advantage_key=advantage_key, value_target_key=value_target_key, functional=functional,
            reduction=reduction, clip_value=clip_value, torchrl_compat=torchrl_compat, generator=generator, **kwargs)
        self.critic_coeff = None if critic_coeff is None else float(critic_coeff)
        self.entropy_bonus = bool(entropy_bonus and entropy_coeff)

    def _all_out_keys(self) -> list:
        keys = ["loss_objective"]
        if self._has_critic:
            keys.append("loss_critic")
            if self.clip_value:
                keys.append("value_clip_fraction")
        if self.entropy_bonus:
            keys += ["entropy", "loss_entropy"]
        return keys

    def _forward(self, batch: Mapping, params: dict) -> dict:
        advantage, work = self._advantage(batch, params)
        loss, dist = self._score_function_loss(work, params, advantage)
        out = {"loss_objective": loss}
        out.update(self._entropy_terms(dist, advantage, work))
        out.update(self._critic_terms(batch, work, params))
        return out
