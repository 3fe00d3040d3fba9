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
call, in evaluation mode too. ``advantage_norm`` is PPOLoss's (exclusive with ``normalize_advantage``, so pass
``normalize_advantage=False`` with it).
"""

from __future__ import annotations

from typing import Any

from ..ppo import ClipPPOLoss
from ..value_norm import _check_norm

__all__ = ["MAPPOLoss", "IPPOLoss"]


class MAPPOLoss(ClipPPOLoss):
    """Multi-agent PPO with a centralised critic (module docstring).

    Args:
        actor_network: a per-agent probabilistic actor (its distribution's batch shape ``[*B, T, n_agents]``).
        critic_network: a keyed value network writing ``[*B, T, n_agents, 1]`` under the ``value`` key.

    Keyword Args:
        value_norm: a :class:`~arrayrl.objectives.value_norm.ValueNorm` (``PopArtValueNorm``...) or ``None``.
        entropy_coeff: default 0.01. normalize_advantage: default ``True``. normalize_advantage_exclude_dims:
            default ``(-2,)``. advantage_norm: as :class:`~arrayrl.objectives.PPOLoss`.
        **kwargs: :class:`~arrayrl.objectives.ClipPPOLoss`'s (``clip_epsilon``, ``critic_coeff``, ``clip_value``,
            ``reduction``, ``torchrl_compat``...).
    """

    default_value_estimator = "magae"

    def __init__(self, actor_network: Any = None, critic_network: Any = None, *, value_norm: Any = None,
                 entropy_coeff: float = 0.01, normalize_advantage: bool = True,
                 normalize_advantage_exclude_dims: tuple = (-2,), advantage_norm: Any = None, **kwargs: Any) -> None:
        super().__init__(actor_network, critic_network, entropy_coeff=entropy_coeff,
                         normalize_advantage=normalize_advantage,
                         normalize_advantage_exclude_dims=normalize_advantage_exclude_dims,
                         advantage_norm=advantage_norm, **kwargs)
        self.value_norm = _check_norm(value_norm, "value_norm")
        self.value_norm_state = None

    def _critic_loss_inputs(self, target: Any, value: Any, old: Any) -> tuple:
        """TorchRL's hook between the critic and the distance: fold the value target into ``value_norm_state``,
        then normalise the target, the prediction and ``V_old`` with the new statistics."""
        norm = self.value_norm
        if norm is None:
            return target, value, old
        state = norm.init(like=target) if self.value_norm_state is None else self.value_norm_state
        state = norm.update(target, state)
        self.value_norm_state = state
        return (norm.normalize(target, state), norm.normalize(value, state),
                None if old is None else norm.normalize(old, state))


class IPPOLoss(MAPPOLoss):
    """Independent PPO (de Witt et al. 2020): :class:`MAPPOLoss` with a decentralised critic, each agent's value
    conditioned on its own observation (the loss is the same; only the critic passed in differs)."""
