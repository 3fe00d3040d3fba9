"""DQN losses: :class:`DQNLoss` (DQN / Double DQN) and :class:`DistributionalDQNLoss` (C51).

Papers: Mnih et al. 2015, "Human-level control through deep reinforcement learning"; van Hasselt, Guez & Silver
2016, "Deep Reinforcement Learning with Double Q-learning" (arXiv:1509.06461); Bellemare, Dabney & Munos 2017, "A
Distributional Perspective on Reinforcement Learning" (arXiv:1707.06887).

The classes mirror ``torchrl.objectives.DQNLoss`` / ``DistributionalDQNLoss`` (TorchRL 0.14.1): same constructor
arguments, key names (``set_keys``), outputs (``{"loss"}``), default value estimator (TD0) and the ``td_error``
priority written into the caller's batch. The math lives in :mod:`arrayrl.objectives.functional`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .. import data as _data
from .._backend import namespace_of
from .._checks import check_min_rank
from .._validate import check_choice, check_evenly_spaced, check_number
from . import functional as F
from ._nets import action_values, as_keyed, as_qvalue_actor, find_action_space
from .common import LossModule
from .utils import _steps_key  # noqa: F401  (re-exported)
from .utils import check_loss_args, check_next_value, check_transition, distance_loss, step_mdp, stop_gradient

__all__ = ["DQNLoss", "DistributionalDQNLoss"]

def _trailing(x: Any) -> Any:
    """``[*B]`` -> ``[*B, 1]`` (the estimators' value shape)."""
    return namespace_of(x).reshape(x, tuple(x.shape) + (1,))


class DQNLoss(LossModule):
    """The DQN loss (TorchRL ``DQNLoss``).

    ``pred = Q(s, a)`` (gather for categorical actions, ``sum_k Q_k a_k`` for one-hot, multi-one-hot and binary);
    the target ``y`` comes from the value estimator (default TD(0): ``y = r + gamma (1 - terminated) Q'(s')``) with
    ``Q'(s') = max_a Q_target(s', a)`` (the target network at ``s'``), or for Double DQN ``Q_target(s', a*)`` with
    ``a*`` the greedy action of the online network (no gradient); then
    ``loss = reduce(dist(pred, sg(y)), priority_weight)``. ``td_error = (pred - y)**2`` ``[*B, 1]`` is written into
    the caller's batch. TD(1)/TD(lambda) treat the last batch dimension as time, as TorchRL.

    Args:
        value_network: a Q-value actor (:class:`arrayrl.nn.QValueActor`, writing ``action_value``, ``action``,
            ``chosen_action_value``) or a plain network ``observation -> action values`` (wrapped in a
            ``QValueActor``).

    Keyword Args:
        loss_function: ``"l2"`` (default, no 1/2), ``"l1"`` or ``"smooth_l1"``.
        delay_value: keep a target copy of the parameters (default ``True``).
        double_dqn: Double DQN (needs ``delay_value``).
        action_space: ``"one_hot"``, ``"categorical"``, ``"mult_one_hot"``, ``"binary"`` (default: from the Q-value
            head, else one-hot with a warning).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        use_prioritized_weights: ``"auto"`` (use ``priority_weight`` when present), ``True`` or ``False``.
        torchrl_compat: ``False`` (default): ``Q'(s') = max_a Q_target(s', a)`` computed from the action values (the
            paper; Double DQN: the first arg-max of the online values). ``True``: TorchRL's numbers, i.e. the Q-value
            head's ``chosen_action_value`` / greedy ``action``, whose one-hot greedy action is multi-hot at ties so
            ``k`` tied actions give ``k * max`` (docs/divergences.md). Identical without ties.

    Shapes: ``observation [*B, F]``, ``action [*B, nA]`` (one-hot) or ``[*B]`` integers (categorical),
    ``("next", "reward"|"done"|"terminated") [*B, 1]``.

    Example (the twin of TorchRL's docstring example)::

        >>> import numpy as np
        >>> from arrayrl.nn import MLP, QValueActor
        >>> from arrayrl.objectives import DQNLoss
        >>> n_obs, n_act = 4, 3
        >>> actor = QValueActor(MLP(in_features=n_obs, out_features=n_act), in_keys=["observation"],
        ...                     action_space="one_hot")
        >>> loss = DQNLoss(actor, action_space="one_hot")
        >>> rng = np.random.default_rng(0)
        >>> data = {
        ...     "observation": rng.normal(size=(10, n_obs)),
        ...     "action": np.eye(n_act, dtype=bool)[rng.integers(0, n_act, 10)],
        ...     "next": {"observation": rng.normal(size=(10, n_obs)), "done": np.zeros((10, 1), bool),
        ...              "terminated": np.zeros((10, 1), bool), "reward": rng.normal(size=(10, 1))},
        ... }
        >>> out = loss(data)
        >>> sorted(out), out["loss"].shape
        (['loss'], ())
        >>> out, grads = loss.value_and_grad(data)
        >>> sorted(grads)
        ['value_network']
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        """Key names (TorchRL defaults): ``value`` is the estimator's value key (the chosen action value)."""

        advantage: Any = "advantage"
        value_target: Any = "value_target"
        value: Any = "chosen_action_value"
        action_value: Any = "action_value"
        action: Any = "action"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        priority_weight: Any = "priority_weight"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS = ("loss",)
    _POLICY_NETWORK = "value_network"  # loss.policy: the Q-value actor

    def __init__(
        self,
        value_network: Any,
        *,
        loss_function: str | None = "l2",
        delay_value: bool = True,
        double_dqn: bool = False,
        gamma: float | None = None,
        action_space: Any = None,
        priority_key: Any = None,
        reduction: str | None = None,
        use_prioritized_weights: str | bool = "auto",
        torchrl_compat: bool = False,
    ) -> None:
        loss_function, reduction = check_loss_args(loss_function, reduction, use_prioritized_weights,
                                                 delay_value=delay_value, double_dqn=double_dqn,
                                                 torchrl_compat=torchrl_compat, gamma=gamma, priority_key=priority_key)
        if double_dqn and not delay_value:
            raise ValueError("double_dqn=True requires delay_value=True.")
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.delay_value = delay_value
        self.double_dqn = double_dqn
        self.use_prioritized_weights = use_prioritized_weights
        self.torchrl_compat = bool(torchrl_compat)
        tk = self.tensor_keys
        net = as_qvalue_actor(value_network, action_space, in_keys=["observation"], action_value_key=tk.action_value,
                              action_key=tk.action, chosen_action_value_key=tk.value)
        self.action_space = find_action_space(net, action_space, type(self).__name__)
        self.var_nums = getattr(getattr(net, "modules", [None])[-1], "var_nums", None)
        self.convert_to_functional(net, "value_network", create_target_params=delay_value)

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        net_in = self._networks["value_network"].in_keys
        return [tk.action, ("next", tk.reward), ("next", tk.done), ("next", tk.terminated), *net_in,
                *[("next",) + _data.unravel_key(k) for k in net_in]]

    def _next_value(self, next_batch: Mapping) -> Any:
        """``Q'(s')`` ``[*B, 1]`` without tape, from the target network (Double DQN: at the online greedy action)."""
        tk = self.tensor_keys
        net = self._networks["value_network"]
        target, online = self._target_tree("value_network"), self._params["value_network"]  # raw: no tape
        if self.torchrl_compat:  # the head's greedy action / chosen value (multi-hot at one-hot ties: values summed)
            tout = net.apply(target, next_batch)
            if self.double_dqn:
                next_action = _data.get(net.apply(online, next_batch), tk.action, what="greedy action of the value network")
                q_next = _data.get(tout, tk.action_value)
                return _trailing(F.chosen_action_value(q_next, next_action, self.action_space, name="greedy next action"))
            value = _data.get_or(tout, tk.value, None)
            if value is not None:
                return value
            return _trailing(F.greedy_action_value(_data.get(tout, tk.action_value), self.action_space, var_nums=self.var_nums))
        q_next = action_values(net, target, next_batch, tk.action_value)
        if self.double_dqn:
            if self.action_space not in ("one_hot", "categorical"):
                raise ValueError(
                    f"double_dqn: the {self.action_space} action space needs torchrl_compat=True (the greedy action "
                    f"of the Q-value head is used)"
                )
            return _trailing(F.double_q_next_value(action_values(net, online, next_batch, tk.action_value), q_next))
        return _trailing(F.greedy_action_value(q_next, self.action_space, var_nums=self.var_nums))

    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        net = self._networks["value_network"]
        q = action_values(net, params["value_network"], batch, tk.action_value)
        action = _data.get(batch, tk.action, what="action")
        pred = F.chosen_action_value(q, action, self.action_space, name=_data.key_str(tk.action))
        batch_shape = tuple(pred.shape)
        check_transition(batch, tk, batch_shape, steps_key=_steps_key(self.value_estimator),
                         weight_key=tk.priority_weight)
        next_value = stop_gradient(self._next_value(step_mdp(batch, net.in_keys)))
        check_next_value(next_value, batch_shape + (1,), net.in_keys, "next action value")
        target = self.value_estimator.value_estimate(batch, next_value=next_value)
        target = stop_gradient(namespace_of(target).squeeze(target, axis=-1))
        diff = stop_gradient(pred) - target
        self._write_priority(batch, _trailing(diff * diff))
        loss = distance_loss(pred, target, self.loss_function)
        loss = self._reduce_loss(loss, batch, weights=self._priority_weights(batch))
        return {"loss": loss}


class DistributionalDQNLoss(LossModule):
    """The C51 distributional DQN loss (TorchRL ``DistributionalDQNLoss``, Bellemare et al. 2017).

    The value network writes ``action_value``: log-probabilities over the atoms of ``support`` for every action,
    ``[*B, atoms, nA]``. With ``a* = argmax_a sum_z z p_online(s', a)`` (online network, Rainbow-style, as TorchRL),
    ``m = project(p_target(s', a*))`` on the support (:func:`~arrayrl.objectives.functional.c51_projection`, with
    ``Tz = r + gamma**n (1 - terminated) z``), ``loss_b = -sum_z m_z log p(s, a)_z`` and
    ``loss = reduce(loss_b, priority_weight)``; ``td_error = loss_b`` ``[*B, 1]`` is written into the batch.

    Unlike TorchRL (which raises for anything but a 1-D batch), any batch rank ``[*B]`` works.

    Args:
        value_network: a keyed module writing ``action_value`` (or a plain network ``observation -> [*B, atoms, nA]``
            log-probabilities).

    Keyword Args:
        gamma: discount in ``[0, 1]`` (required, as TorchRL; an attribute that can be changed later).
        support: the atoms ``z`` ``[atoms]`` (default: ``value_network.support``): strictly increasing and evenly
            spaced (checked once, at construction; ``ValueError`` otherwise). The network's ``action_value`` must
            have ``atoms`` entries in its axis -2 (``ValueError`` naming the key otherwise).
        delay_value: keep a target copy (default ``True``).
        action_space: ``"one_hot"`` (default) or ``"categorical"``.
        reduction, use_prioritized_weights: as :class:`DQNLoss`.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action_value: Any = "action_value"
        action: Any = "action"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        steps_to_next_obs: Any = "steps_to_next_obs"
        priority_weight: Any = "priority_weight"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0",)
    _OUT_KEYS = ("loss",)
    _POLICY_NETWORK = "value_network"

    def __init__(
        self,
        value_network: Any,
        *,
        gamma: float,
        support: Any = None,
        delay_value: bool = True,
        action_space: Any = None,
        priority_key: Any = None,
        reduction: str | None = None,
        use_prioritized_weights: str | bool = "auto",
    ) -> None:
        _, reduction = check_loss_args(None, reduction, use_prioritized_weights, delay_value=delay_value, priority_key=priority_key)
        check_number(gamma, "gamma", low=0.0, high=1.0)
        self.reduction = reduction
        super().__init__()
        self.gamma = gamma
        self.delay_value = delay_value
        self.use_prioritized_weights = use_prioritized_weights
        net = as_keyed(value_network, ["observation"], [self.tensor_keys.action_value], "value_network")
        support = getattr(value_network, "support", None) if support is None else support
        if support is None:
            raise ValueError("support: give the atoms of the value distribution (support=) or a network with .support")
        check_evenly_spaced(support, "support")
        self.support = support
        space = action_space if action_space is not None else getattr(value_network, "action_space", None)
        self.action_space = check_choice(F.normalize_action_space(space) if space is not None else "one_hot",
                                         "action_space", ("one_hot", "categorical"))
        self.convert_to_functional(net, "value_network", create_target_params=delay_value)

    def make_value_estimator(self, value_type: Any = None, **hyperparams: Any) -> "DistributionalDQNLoss":
        """Only TD(0) is supported and it is computed inline (TorchRL builds no estimator object either)."""
        from .common import _coerce_value_type

        vt = value_type if value_type is not None else self.default_value_estimator
        name = _coerce_value_type(vt).name if isinstance(vt, str) or hasattr(vt, "name") else type(vt).__name__
        if name.lower() != "td0":
            raise NotImplementedError(f"value type {name} is not implemented for DistributionalDQNLoss; supported: ['TD0']")
        self.value_type = vt
        return self

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        net_in = self._networks["value_network"].in_keys
        return [tk.action, ("next", tk.reward), ("next", tk.done), ("next", tk.terminated), *net_in,
                *[("next",) + _data.unravel_key(k) for k in net_in]]

    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        net = self._networks["value_network"]
        log_probs = _data.get(net.apply(params["value_network"], batch), tk.action_value, what="log-probabilities")
        log_probs_name = f"{_data.key_str(tk.action_value)} (log-probabilities of the value network)"
        check_min_rank(log_probs, 2, log_probs_name)
        check_transition(batch, tk, tuple(log_probs.shape[:-2]), steps_key=tk.steps_to_next_obs,
                         weight_key=tk.priority_weight)
        nb = step_mdp(batch, net.in_keys)
        next_online = _data.get(net.apply(stop_gradient(self._params["value_network"]), nb), tk.action_value)
        check_next_value(next_online, tuple(log_probs.shape), net.in_keys, "next-state log-probabilities")
        next_target = _data.get(net.apply(self._target_tree("value_network"), nb), tk.action_value)
        done = _data.get(batch, ("next", tk.done))
        terminated = _data.get_or(batch, ("next", tk.terminated), done)
        res = F.distributional_dqn_loss(
            log_probs,
            _data.get(batch, tk.action, what="action"),
            _data.get(batch, ("next", tk.reward)),
            next_online,
            next_target,
            terminated,
            support=self.support,
            gamma=self.gamma,
            steps_to_next_obs=_data.get_or(batch, tk.steps_to_next_obs, None),
            reduction="none",
            action_space=self.action_space,
            log_probs_name=log_probs_name,
            action_name=_data.key_str(tk.action),
        )
        per = res["loss"]
        self._write_priority(batch, _trailing(res["td_error"]))
        return {"loss": self._reduce_loss(per, batch, weights=self._priority_weights(batch))}
