"""REINFORCE with a learned baseline: :class:`ReinforceLoss`.

Williams 1992, "Simple statistical gradient-following algorithms for connectionist reinforcement learning" (Machine
Learning 8:229-256; the likelihood-ratio gradient ``E[grad log pi(a|s) (G - b(s))]``). Mirrors
``torchrl.objectives.ReinforceLoss`` (TorchRL 0.14.1): constructor arguments, keys, outputs, default estimator (GAE,
gamma 0.99, lambda 0.95; ``make_value_estimator("td1")`` gives Williams' Monte-Carlo return ``G - V(s)``). Per sample
(shapes ``[*B, 1]``)::

    A          = batch[advantage], or the estimator's advantage (critic detached; next values from the target
                 critic when ``delay_value``: PPOLoss's estimator call reads the delayed tree)
    loss_actor = reduce(-log pi_theta(a_stored|s) sg(A))
    loss_value = reduce(dist(value_target, V_theta(s)))          (no coefficient; optionally value-clipped)

The stored action is scored (TorchRL 0.14.1; 0.14.0 scored a fresh deterministic sample). Built on
:class:`~arrayrl.objectives.a2c._ScoreFunctionLoss` (PPOLoss's machinery); there is no entropy term.

Divergences from TorchRL 0.14.1 (``torchrl_compat=True`` reproduces TorchRL; docs/divergences.md):

* TorchRL's ``forward`` does not copy its input: ``advantage``, ``value_target``, ``state_value``,
  ``("next", "state_value")`` and the distribution parameters (``loc``, ``scale``/``logits``) are written into the
  caller's tensordict. arrayrl never modifies the caller's batch (whatever ``torchrl_compat``).
* ``clip_value`` with the advantage computed inside the loss (as PPOLoss and A2CLoss) and ``out_keys`` listing
  ``value_clip_fraction``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .a2c import _ScoreFunctionLoss

__all__ = ["ReinforceLoss"]


class ReinforceLoss(_ScoreFunctionLoss):
    """The REINFORCE loss with a critic baseline (TorchRL ``ReinforceLoss``; module docstring).

    Args:
        actor_network: a probabilistic actor (``arrayrl.nn.ProbabilisticActor``).
        critic_network: a keyed state-value network writing ``state_value`` ``[*B, 1]`` (required: ``TypeError``).

    Keyword Args:
        delay_value: a target critic (``loss.target_params["critic_network"]``, moved by ``SoftUpdate``/
            ``HardUpdate``) gives the bootstrapped next values.
        loss_critic_type: ``"smooth_l1"`` (default), ``"l2"`` or ``"l1"``.
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"``. clip_value: as :class:`~arrayrl.objectives.A2CLoss`.
        torchrl_compat: see the module docstring.
        separate_losses, functional, actor, critic, gamma, advantage_key, value_target_key: as TorchRL.

    Outputs: ``loss_actor``, ``loss_value`` (+ ``value_clip_fraction``).
    """

    def __init__(
        self,
        actor_network: Any = None,
        critic_network: Any = None,
        *,
        delay_value: bool = False,
        loss_critic_type: str = "smooth_l1",
        gamma: float | None = None,
        advantage_key: Any = None,
        value_target_key: Any = None,
        separate_losses: bool = False,
        functional: bool = True,
        actor: Any = None,
        critic: Any = None,
        reduction: str | None = None,
        clip_value: float | None = None,
        torchrl_compat: bool = False,
    ) -> None:
        actor_network, critic_network = _ScoreFunctionLoss._networks_given(actor_network, critic_network, actor, critic)
        if not functional and delay_value:
            raise RuntimeError("delay_value and ~functional are incompatible, as delayed value currently relies on "
                               "functional calls.")
        super().__init__(
            actor_network, critic_network, entropy_bonus=False, log_explained_variance=False, critic_coeff=1.0,
            loss_critic_type=loss_critic_type, gamma=gamma, separate_losses=separate_losses,
            advantage_key=advantage_key, value_target_key=value_target_key, functional=functional,
            reduction=reduction, clip_value=clip_value, torchrl_compat=torchrl_compat)
        self.delay_value = bool(delay_value)
        if self.delay_value:
            self.convert_to_functional(critic_network, "critic_network", create_target_params=True)

    def _all_out_keys(self) -> list:
        return ["loss_actor", "loss_value"] + (["value_clip_fraction"] if self.clip_value else [])

    def _forward(self, batch: Mapping, params: dict) -> dict:
        advantage, work = self._advantage(batch, params)
        loss, _ = self._score_function_loss(work, params, advantage)
        critic = self._critic_terms(batch, work, params)
        out = {"loss_actor": loss, "loss_value": critic.pop("loss_critic")}
        out.update(critic)
        return out
