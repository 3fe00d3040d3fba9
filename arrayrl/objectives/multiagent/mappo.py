"""Multi-agent PPO: :class:`MAPPOLoss` (centralised critic) and :class:`IPPOLoss` (independent critics).

Yu, Velu, Vinitsky, Gao, Wang, Bayen & Wu 2022, "The Surprising Effectiveness of PPO in Cooperative Multi-Agent
Games" (NeurIPS 2022, arXiv:2103.01955); de Witt, Gupta, Makoviichuk, Makoviychuk, Torr, Sun & Whiteson 2020, "Is
Independent Learning All You Need in the StarCraft Multi-Agent Challenge?" (arXiv:2011.09533). Mirrors
``torchrl.objectives.multiagent.MAPPOLoss``/``IPPOLoss`` (TorchRL 0.14.1): :class:`~arrayrl.objectives.ClipPPOLoss`
with MAPPO's defaults,

* default estimator :class:`~arrayrl.value.MultiAgentGAE` (gamma 0.99, lambda 0.95, ``agent_dim=-2``): team reward
  and done ``[*B, T, 1]`` are broadcast to the per-agent values ``[*B, T, n_agents, 1]``;
* ``normalize_advantage=True`` with ``normalize_advantage_exclude_dims=(-2,)`` (each agent standardised on its own),
  ``entropy_coeff=0.01``;
* ``value_norm``: the critic loss is computed on normalised values (Yu et al. 2022, section 4 "value
  normalization")::

      state <- value_norm.update(value_target, state)                                    (every call)
      loss_critic = reduce(c_V dist(n(value_target), n(V_theta(s))))    n = value_norm.normalize(., state)

  ``V_old`` is normalised too, so ``clip_value`` acts in normalised space; ``explained_variance`` is reported on the
  normalised pair. The state is ``loss.value_norm_state`` (created on first use).

Per agent (shapes ``[*B, T, n_agents, 1]``): ``lw = log pi_theta(a^i|o^i) - log mu(a^i|o^i)``,
``loss_objective = reduce(-min(exp(lw) A^i, exp(clip(lw)) A^i))`` over every batch, time and agent entry. MAPPO and
IPPO are the same loss; they differ in the critic passed in (one conditioned on the global state or all
observations, or one per agent on its own observation). Set nested keys with ``set_keys(action=("agents",
"action"), sample_log_prob=("agents", "action_log_prob"), value=("agents", "state_value"))``.

Kept as TorchRL: the critic predicts raw-scale values and only the loss is normalised (MAPPO's reference code trains
the critic on the normalised scale and denormalises its output inside GAE); ``value_norm``'s statistics move on every
call, in evaluation mode too. ``advantage_norm`` is accepted as by PPOLoss (exclusive with ``normalize_advantage``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ... import data as _data
from .. import policy_gradient as PG
from .._nets import keyed_output
from ..ppo import ClipPPOLoss
from ..value_norm import _AdvantageNormMixin, _check_norm

__all__ = ["MAPPOLoss", "IPPOLoss"]


class MAPPOLoss(_AdvantageNormMixin, ClipPPOLoss):
    """Multi-agent PPO with a centralised critic (module docstring).

    Args:
        actor_network: a per-agent probabilistic actor (its distribution's batch shape ``[*B, T, n_agents]``).
        critic_network: a keyed value network writing ``[*B, T, n_agents, 1]`` under the ``value`` key.

    Keyword Args:
        value_norm: a :class:`~arrayrl.objectives.value_norm.ValueNorm` (``PopArtValueNorm``...) or ``None``.
        entropy_coeff: default 0.01. normalize_advantage: default ``True``. normalize_advantage_exclude_dims:
            default ``(-2,)``. advantage_norm: as :class:`~arrayrl.objectives.A2CLoss`.
        **kwargs: :class:`~arrayrl.objectives.ClipPPOLoss`'s (``clip_epsilon``, ``critic_coeff``, ``clip_value``,
            ``reduction``, ``torchrl_compat``...).
    """

    default_value_estimator = "magae"

    def __init__(self, actor_network: Any = None, critic_network: Any = None, *, value_norm: Any = None,
                 entropy_coeff: float = 0.01, normalize_advantage: bool = True,
                 normalize_advantage_exclude_dims: tuple = (-2,), advantage_norm: Any = None, **kwargs: Any) -> None:
        super().__init__(actor_network, critic_network, entropy_coeff=entropy_coeff,
                         normalize_advantage=normalize_advantage,
                         normalize_advantage_exclude_dims=normalize_advantage_exclude_dims, **kwargs)
        self._set_advantage_norm(advantage_norm, normalize_advantage)
        self.value_norm = _check_norm(value_norm, "value_norm")
        self.value_norm_state = None

    def _critic_terms(self, batch: Mapping, work: Mapping, params: dict) -> dict:
        norm = self.value_norm
        if norm is None or not self._has_critic:
            return super()._critic_terms(batch, work, params)
        # PPOLoss._critic_terms with TorchRL's ``_critic_loss_inputs`` hook between the critic and the distance
        tk = self.tensor_keys
        target = _data.get(work, tk.value_target, what="value target (written by the value estimator)")
        old = self._old_value(batch, work) if self.clip_value else None
        value = keyed_output(self._networks["critic_network"], params["critic_network"], work, tk.value,
                             what="state value written by the critic")
        state = norm.init(like=target) if self.value_norm_state is None else self.value_norm_state
        state = norm.update(target, state)
        self.value_norm_state = state
        target, value = norm.normalize(target, state), norm.normalize(value, state)
        old = None if old is None else norm.normalize(old, state)
        names = (f"critic output {_data.key_str(tk.value)}", _data.key_str(tk.value_target))
        loss, frac = PG.critic_loss(value, target, self.loss_critic_type, old_value=old, clip_value=self.clip_value,
                                    names=names)
        out = {"loss_critic": self._reduce(loss * self.critic_coeff, work)}
        if frac is not None:
            out["value_clip_fraction"] = frac
        if self.log_explained_variance:
            out["explained_variance"] = PG.explained_variance(target, value)
        return out


class IPPOLoss(MAPPOLoss):
    """Independent PPO (de Witt et al. 2020): :class:`MAPPOLoss` with a decentralised critic, each agent's value
    conditioned on its own observation (the loss is the same; only the critic passed in differs)."""
