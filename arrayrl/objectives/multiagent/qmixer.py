"""QMixerLoss: value-decomposition Q-learning for cooperative agents (QMIX, VDN).

Rashid et al. 2018, "QMIX: Monotonic Value Function Factorisation for Deep Multi-Agent Reinforcement Learning"
(arXiv:1803.11485); Sunehag et al. 2017, "Value-Decomposition Networks For Cooperative Multi-Agent Learning"
(arXiv:1706.05296). Mirrors ``torchrl.objectives.multiagent.QMixerLoss`` (TorchRL 0.14.1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ... import data as _data
from ..._backend import namespace_of
from ...nn.keyed import KeyedModule, KeyedModuleBase
from ...nn.multiagent import Mixer
from .. import functional as F
from .._nets import action_values, as_qvalue_actor, find_action_space
from ..common import LossModule
from ..dqn import _trailing
from ..utils import _steps_key, check_loss_args, check_next_value, check_transition, step_mdp, stop_gradient

__all__ = ["QMixerLoss"]


class QMixerLoss(LossModule):
    """The QMIX / VDN loss (TorchRL ``QMixerLoss``).

    Per sample: ``Q_i = Q^i(o_i, a_i)`` ``[*B, n_agents, 1]`` from the local Q-actor (agents in the penultimate
    dimension), ``Q_tot = Mixer(Q_., state)`` ``[*B, 1]``; the target ``y`` from the value estimator (default TD(0))
    with ``Q'(s') = Mixer_target(max_a Q^i_target(o'_i, a), state')``; ``loss = mean(dist(Q_tot, sg(y)))``.

    As TorchRL: **no** ``reduction``, masks or priority weights (a plain mean); ``td_error = (Q_tot - y)**2``
    ``[*B, 1]`` is written into the caller's batch.

    Args:
        local_value_network: a Q-value actor over the agents (``arrayrl.nn.QValueActor`` writing
            ``("agents", "action_value")``, ``("agents", "action")``, ``("agents", "chosen_action_value")``), or a
            plain network ``("agents", "observation") -> action values`` (wrapped with these keys).
        mixer_network: a keyed module reading ``("agents", "chosen_action_value")`` (and the state) and writing
            ``"chosen_action_value"``, or an :class:`arrayrl.nn.VDNMixer` / :class:`arrayrl.nn.QMixer` (wrapped with
            in_keys ``[local_value]`` plus ``"state"`` for a mixer that needs one).

    Keyword Args:
        loss_function: ``"l2"`` (default), ``"l1"``, ``"smooth_l1"``.
        delay_value: target copies of both networks (default ``True``).
        action_space: ``"one_hot"``, ``"categorical"``... (default: from the local Q-value head).
        torchrl_compat: ``False`` (default): each agent's next value is ``max_a Q^i_target(o'_i, a)`` from the action
            values (the paper). ``True``: the head's ``chosen_action_value`` (TorchRL; ``k * max`` at one-hot ties).

    Example (the twin of TorchRL's docstring example: 4 agents, a 64x64x3 state, batch 32)::

        >>> import numpy as np
        >>> from arrayrl.nn import KeyedModule, Linear, QValueActor
        >>> from arrayrl.nn.multiagent import QMixer
        >>> from arrayrl.objectives.multiagent import QMixerLoss
        >>> n_agents = 4
        >>> qnet = QValueActor(
        ...     KeyedModule(Linear(10, 3), in_keys=[("agents", "observation")], out_keys=[("agents", "action_value")]),
        ...     action_space="categorical",
        ...     action_value_key=("agents", "action_value"),
        ...     action_key=("agents", "action"),
        ...     chosen_action_value_key=("agents", "chosen_action_value"),
        ... )
        >>> qmixer = KeyedModule(
        ...     QMixer(state_shape=(64, 64, 3), mixing_embed_dim=32, n_agents=n_agents, device="cpu"),
        ...     in_keys=[("agents", "chosen_action_value"), "state"],
        ...     out_keys=["chosen_action_value"],
        ... )
        >>> loss = QMixerLoss(qnet, qmixer, action_space="categorical")
        >>> td = {
        ...     "agents": {"observation": np.zeros((32, n_agents, 10))},
        ...     "state": np.zeros((32, 64, 64, 3)),
        ...     "next": {
        ...         "agents": {"observation": np.zeros((32, n_agents, 10))},
        ...         "state": np.zeros((32, 64, 64, 3)),
        ...         "reward": np.zeros((32, 1)),
        ...         "done": np.zeros((32, 1), dtype=bool),
        ...         "terminated": np.zeros((32, 1), dtype=bool),
        ...     },
        ... }
        >>> out = loss(qnet(td))
        >>> list(out), out["loss"].shape
        (['loss'], ())
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        advantage: Any = "advantage"
        value_target: Any = "value_target"
        local_value: Any = ("agents", "chosen_action_value")
        global_value: Any = "chosen_action_value"
        action_value: Any = ("agents", "action_value")
        action: Any = ("agents", "action")
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS = ("loss",)
    _VALUE_KEY_MAP = {"value": "global_value"}
    _POLICY_NETWORK = "local_value_network"  # loss.policy: the agents' Q-value actor

    def __init__(
        self,
        local_value_network: Any,
        mixer_network: Any,
        *,
        loss_function: str | None = "l2",
        delay_value: bool = True,
        gamma: float | None = None,
        action_space: Any = None,
        priority_key: Any = None,
        torchrl_compat: bool = False,
    ) -> None:
        loss_function, _ = check_loss_args(loss_function, None, delay_value=delay_value, torchrl_compat=torchrl_compat, gamma=gamma, priority_key=priority_key)
        super().__init__()
        self.loss_function = loss_function
        self.delay_value = delay_value
        self.torchrl_compat = bool(torchrl_compat)
        tk = self.tensor_keys
        local = as_qvalue_actor(
            local_value_network, action_space, in_keys=[("agents", "observation")], action_value_key=tk.action_value,
            action_key=tk.action, chosen_action_value_key=tk.local_value,
        )
        if isinstance(mixer_network, KeyedModuleBase):
            mixer = mixer_network
        elif isinstance(mixer_network, Mixer):
            in_keys = [tk.local_value] + (["state"] if mixer_network.needs_state else [])
            mixer = KeyedModule(mixer_network, in_keys=in_keys, out_keys=[tk.global_value])
        else:
            raise TypeError(
                f"mixer_network: expected a keyed module or an arrayrl Mixer (VDNMixer, QMixer), got "
                f"{type(mixer_network).__name__}"
            )
        self.action_space = find_action_space(local, action_space, type(self).__name__)
        self.var_nums = getattr(getattr(local, "modules", [None])[-1], "var_nums", None)
        self.convert_to_functional(local, "local_value_network", create_target_params=delay_value)
        self.convert_to_functional(mixer, "mixer_network", create_target_params=delay_value)

    def _net_in_keys(self) -> list:
        """The batch entries the two networks read (the mixer's inputs that the local network writes excluded)."""
        local, mixer = self._networks["local_value_network"], self._networks["mixer_network"]
        produced = {_data.unravel_key(k) for k in local.out_keys}
        return list(local.in_keys) + [k for k in mixer.in_keys if _data.unravel_key(k) not in produced]

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        net_in = self._net_in_keys()
        return [tk.action, ("next", tk.reward), ("next", tk.done), ("next", tk.terminated), *net_in,
                *[("next",) + _data.unravel_key(k) for k in net_in]]

    def _mix(self, local_params: Any, mixer_params: Any, batch: Mapping, action: Any | None) -> Any:
        """Run the local actor then the mixer: agents' values of ``action`` (or their greedy values if ``None``).

        Returns the mixed value ``[*B, 1]`` (``ValueError`` naming the mixer's output key for another shape), with
        ``*B`` the batch shape of the local values ``[*B, n_agents, 1]``."""
        tk = self.tensor_keys
        local = self._networks["local_value_network"]
        if action is None and self.torchrl_compat:  # the head's chosen value (k * max at one-hot ties)
            out = local.apply(local_params, batch)
            local_value = _data.get_or(out, tk.local_value, None)
            if local_value is None:
                local_value = _trailing(F.greedy_action_value(_data.get(out, tk.action_value), self.action_space,
                                                              var_nums=self.var_nums))
        else:
            q = action_values(local, local_params, batch, tk.action_value)  # [*B, n_agents, nA]
            if action is None:  # max_a Q^i(o_i, a) (the paper)
                local_value = _trailing(F.greedy_action_value(q, self.action_space, var_nums=self.var_nums))
            else:
                local_value = _trailing(F.chosen_action_value(q, action, self.action_space,
                                                              name=_data.key_str(tk.action)))
        out = _data.with_(batch, tk.local_value, local_value)
        mixed = _data.get(self._networks["mixer_network"].apply(mixer_params, out), tk.global_value,
                          what="mixed value of the mixer network")
        want = tuple(local_value.shape[:-2]) + (1,)
        if tuple(mixed.shape) != want:
            raise ValueError(
                f"{_data.key_str(tk.global_value)} (mixed value of the mixer network): expected shape {want} (the "
                f"batch shape of {_data.key_str(tk.local_value)} {tuple(local_value.shape)} plus 1), got "
                f"{tuple(mixed.shape)}"
            )
        return mixed

    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        action = _data.get(batch, tk.action, what="agents' actions")
        q_tot = self._mix(params["local_value_network"], params["mixer_network"], batch, action)
        xp = namespace_of(q_tot)
        pred = xp.squeeze(q_tot, axis=-1)
        check_transition(batch, tk, tuple(pred.shape), steps_key=_steps_key(self.value_estimator))
        net_in = self._net_in_keys()
        next_value = stop_gradient(
            self._mix(self._target_tree("local_value_network"), self._target_tree("mixer_network"),
                      step_mdp(batch, net_in), None)
        )
        check_next_value(next_value, tuple(q_tot.shape), net_in, "next mixed value")
        target = self.value_estimator.value_estimate(batch, next_value=next_value)
        target = stop_gradient(namespace_of(target).squeeze(target, axis=-1))
        loss, td_error = F.mixer_td_loss(pred, target, self.loss_function)
        self._write_priority(batch, _trailing(td_error))
        return {"loss": loss}
