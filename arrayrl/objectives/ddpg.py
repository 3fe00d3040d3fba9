"""Deep Deterministic Policy Gradient: :class:`DDPGLoss` and the deterministic-policy terms TD3 reuses.

Lillicrap et al. 2015, "Continuous control with deep reinforcement learning" (arXiv:1509.02971), built on the
deterministic policy gradient of Silver et al. 2014 ("Deterministic Policy Gradient Algorithms", ICML). Mirrors
``torchrl.objectives.DDPGLoss`` (TorchRL 0.14.1): constructor arguments, keys, outputs, value estimators (TD0
default; TD1, TDLambda), targets, reductions, prioritized-replay weights and the ``td_error`` written into the
caller's batch.

Per sample (``mu`` the deterministic actor, ``Q`` the critic; ``mu'``/``Q'`` their targets)::

    y          = r + gamma (1 - terminated) Q'(s', mu'(s'))         (value estimator, Q'(s', mu'(s')) injected)
    loss_value = reduce(dist(Q(s, a), y))                           (Lillicrap et al. eq. 4; "l2" by default)
    loss_actor = reduce(-Q_sg(s, mu(s)))                            (critic parameters without gradient; the
                                                                     gradient reaches mu through the action: the DPG)
    td_error   = (Q(s, a) - y)**2                                   ([*B], no gradient)

With the default ``delay_actor=False`` the target actor ``mu'`` *is* the online actor, without gradient (TorchRL's
detached view); ``delay_value=True`` keeps a target critic that only :class:`~arrayrl.objectives.SoftUpdate` /
:class:`~arrayrl.objectives.HardUpdate` move.

Pure terms: :func:`deterministic_actor_loss` (``-Q(s, mu(s))``), :func:`squared_td_error`. TD3 and TD3+BC
(:mod:`arrayrl.objectives.td3`) reuse them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .. import data as _data
from .._backend import namespace_of
from .._checks import check_floating
from ._nets import keyed_output
from .actor_critic import _sg_tree, _squeeze_last, bootstrap_target
from .common import LossModule
from .utils import (_steps_key, check_loss_args, check_next_value, check_transition, distance_loss, step_mdp,
                    stop_gradient)

__all__ = ["DDPGLoss", "deterministic_actor_loss", "squared_td_error"]


# ------------------------------------------------------------------------------------------------ pure terms
def deterministic_actor_loss(q_policy: Any) -> Any:
    """Deterministic policy-gradient actor loss ``-Q(s, mu(s))``, elementwise ``[*B] -> [*B]``.

    ``q_policy`` is the critic's value at the policy's own action, computed with critic parameters that carry no
    gradient: descending this loss moves ``mu`` along ``grad_a Q(s, a)|_{a = mu(s)}`` (Silver et al. 2014,
    theorem 1; Lillicrap et al. 2015, eq. 6). TD3 applies it to its first critic only (Fujimoto et al. 2018).
    """
    check_floating(q_policy, "q_policy")
    return -q_policy


def squared_td_error(pred: Any, target: Any) -> Any:
    """The priority ``(Q(s, a) - y)**2`` (no gradient), ``[*B]`` (TorchRL's DDPG ``td_error``)."""
    check_floating(pred, "pred")
    check_floating(target, "target")
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"target: expected shape {tuple(pred.shape)} (the shape of pred), got {tuple(target.shape)}")
    d = stop_gradient(pred) - stop_gradient(target)
    return d * d


# ------------------------------------------------------------------------------------------------ helpers
def _check_keyed(module: Any, what: str) -> None:
    if not (hasattr(module, "apply") and hasattr(module, "in_keys") and hasattr(module, "out_keys")):
        raise TypeError(f"{what}: expected a keyed module (in_keys, out_keys, apply(params, batch)), got "
                        f"{type(module).__name__}")


class DDPGLoss(LossModule):
    """The DDPG loss (TorchRL ``DDPGLoss``); formulas in the module docstring.

    Args:
        actor_network: a deterministic keyed actor ``mu`` reading e.g. ``observation`` and writing ``action``
            (``KeyedModule(MLP(...), in_keys=["observation"], out_keys=["action"])``, TorchRL's ``Actor``).
        value_network: a keyed critic writing ``state_action_value`` ``[*B, 1]`` from the observation and the
            action (``ValueOperator(MLP(...), in_keys=["observation", "action"])``).

    Keyword Args:
        loss_function: critic distance, ``"l2"`` (default, no 1/2), ``"l1"``, ``"smooth_l1"``.
        delay_actor: keep a target copy of the actor (default ``False``: the target is the online actor, detached).
        delay_value: keep a target copy of the critic (default ``True``).
        separate_losses: accepted for compatibility (arrayrl networks never share parameter trees, and the actor
            loss never differentiates the critic's parameters).
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"``.
        use_prioritized_weights: ``"auto"`` (use ``priority_weight`` when present), ``True``, ``False``.

    Outputs (TorchRL's): ``loss_actor``, ``loss_value`` (scalars, ``[*B]`` with ``reduction="none"``),
    ``pred_value``, ``target_value`` (``[*B]``), ``pred_value_max``, ``target_value_max`` (scalars), and, as
    TorchRL, ``td_error`` ``[*B]`` although ``out_keys`` does not list it (it is dropped by
    :meth:`select_out_keys`). ``td_error`` is also written into the caller's batch (``tensor_keys.priority``).

    Shapes: ``observation [*B, F]``, ``action [*B, A]``, ``("next", "reward"|"done"|"terminated") [*B, 1]``.

    Example::

        >>> import numpy as np
        >>> from arrayrl.nn import MLP, KeyedModule, ValueOperator
        >>> from arrayrl.objectives.ddpg import DDPGLoss
        >>> actor = KeyedModule(MLP(in_features=3, out_features=2, num_cells=[]), in_keys=["observation"],
        ...                     out_keys=["action"])
        >>> critic = ValueOperator(MLP(in_features=5, out_features=1, num_cells=[]), in_keys=["observation", "action"])
        >>> loss = DDPGLoss(actor, critic)
        >>> rng = np.random.default_rng(0)
        >>> data = {"observation": rng.normal(size=(4, 3)), "action": rng.uniform(-1, 1, size=(4, 2)),
        ...         "next": {"observation": rng.normal(size=(4, 3)), "reward": rng.normal(size=(4, 1)),
        ...                  "done": np.zeros((4, 1), bool), "terminated": np.zeros((4, 1), bool)}}
        >>> out, grads = loss.value_and_grad(data)
        >>> sorted(out)
        ['loss_actor', 'loss_value', 'pred_value', 'pred_value_max', 'target_value', 'target_value_max', 'td_error']
        >>> sorted(grads)
        ['actor_network', 'value_network']
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        state_action_value: Any = "state_action_value"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        priority_weight: Any = "priority_weight"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS = ("loss_actor", "loss_value", "pred_value", "target_value", "pred_value_max", "target_value_max")
    _VALUE_KEY_MAP = {"value": "state_action_value"}
    _POLICY_NETWORK = "actor_network"

    def __init__(
        self,
        actor_network: Any,
        value_network: Any,
        *,
        loss_function: str = "l2",
        delay_actor: bool = False,
        delay_value: bool = True,
        gamma: float | None = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        use_prioritized_weights: Any = "auto",
    ) -> None:
        loss_function, reduction = check_loss_args(loss_function, reduction, use_prioritized_weights,
                                                 delay_actor=delay_actor, delay_value=delay_value,
                                                 separate_losses=separate_losses, gamma=gamma)
        _check_keyed(actor_network, "actor_network")
        _check_keyed(value_network, "value_network")
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.delay_actor = delay_actor
        self.delay_value = delay_value
        self.separate_losses = separate_losses
        self.use_prioritized_weights = use_prioritized_weights
        self.convert_to_functional(actor_network, "actor_network", create_target_params=delay_actor)
        self.convert_to_functional(value_network, "value_network", create_target_params=delay_value)

    # ---------------------------------------------------------------------------------------- keys
    def _in_keys(self) -> list:
        """TorchRL's ``in_keys`` (sorted by ``str``): the next-step flags, the actor's and the critic's inputs at
        ``s`` and at ``s'`` (so ``("next", "action")`` too), and ``priority_weight`` unless
        ``use_prioritized_weights=False``."""
        tk = self.tensor_keys
        actor_in = list(self._networks["actor_network"].in_keys)
        value_in = list(self._networks["value_network"].in_keys)
        keys = [("next", tk.reward), ("next", tk.done), ("next", tk.terminated), *actor_in,
                *[("next",) + _data.unravel_key(k) for k in actor_in], *value_in,
                *[("next",) + _data.unravel_key(k) for k in value_in]]
        if self.use_prioritized_weights:
            keys.append(tk.priority_weight)
        uniq = {_data.unravel_key(k): k for k in keys}
        return [uniq[k] for k in sorted(uniq, key=lambda t: str(t[0] if len(t) == 1 else t))]

    def _select(self, out: dict) -> dict:
        if self._selected_out_keys is None:  # TorchRL returns td_error although out_keys omits it
            return dict(out)
        return super()._select(out)

    # ---------------------------------------------------------------------------------------- pieces
    def _critic(self, params: Any, batch: Mapping) -> Any:
        """``Q(s, a)`` ``[*B]`` of the critic on ``batch`` (the trailing 1 squeezed)."""
        name = _data.key_str(self.tensor_keys.state_action_value)
        q = keyed_output(self._networks["value_network"], params, batch, self.tensor_keys.state_action_value,
                         what="state-action value of the value network")
        check_floating(q, name)
        return _squeeze_last(q, name)

    def _next_inputs(self) -> list:
        """The keys read under ``"next"``: the actor's inputs and the critic's inputs the actor does not write."""
        actor = self._networks["actor_network"]
        produced = {_data.unravel_key(k) for k in actor.out_keys}
        keys = list(actor.in_keys)
        keys += [k for k in self._networks["value_network"].in_keys if _data.unravel_key(k) not in produced]
        return keys

    def _next_value(self, batch: Mapping) -> Any:
        """``Q'(s', mu'(s'))`` ``[*B]`` from the target actor and critic, without tape."""
        nxt = step_mdp(batch, self._next_inputs())
        nxt = self._networks["actor_network"].apply(self._target_tree("actor_network"), nxt)
        return stop_gradient(self._critic(self._target_tree("value_network"), nxt))

    def _value_terms(self, params: dict, batch: Mapping, weights: Any) -> tuple:
        """``(loss_value, metadata)``: the critic regressed on ``y`` (TorchRL's ``loss_value``)."""
        tk = self.tensor_keys
        pred = self._critic(params["value_network"], batch)
        batch_shape = tuple(pred.shape)
        check_transition(batch, tk, batch_shape, steps_key=_steps_key(self.value_estimator),
                         weight_key=tk.priority_weight if self.use_prioritized_weights in (True, "auto") else None)
        next_value = self._next_value(batch)
        check_next_value(next_value, batch_shape, self._next_inputs(), "next state-action value")
        target = bootstrap_target(self.value_estimator, batch, next_value)
        td_error = squared_td_error(pred, target)
        self._write_priority(batch, td_error)
        loss_value = self._reduce_loss(distance_loss(pred, target, self.loss_function), batch, weights=weights)
        xp = namespace_of(target)
        pred_sg = stop_gradient(pred)
        meta = {"td_error": td_error, "pred_value": pred_sg, "target_value": target,
                "target_value_max": xp.max(target), "pred_value_max": xp.max(pred_sg)}
        return loss_value, meta, batch_shape

    def _actor_terms(self, params: dict, batch: Mapping, weights: Any, batch_shape: tuple) -> Any:
        """``loss_actor = reduce(-Q_sg(s, mu(s)))`` (TorchRL's ``loss_actor``)."""
        with_action = self._networks["actor_network"].apply(params["actor_network"], batch)
        q = self._critic(_sg_tree(params["value_network"]), with_action)
        if tuple(q.shape) != batch_shape:
            raise ValueError(f"{_data.key_str(self.tensor_keys.state_action_value)} (critic at the policy action): "
                             f"expected batch shape {batch_shape}, got {tuple(q.shape)}")
        return self._reduce_loss(deterministic_actor_loss(q), batch, weights=weights)

    # ---------------------------------------------------------------------------------------- forward
    def _forward(self, batch: Mapping, params: dict) -> dict:
        weights = self._priority_weights(batch)
        loss_value, meta, batch_shape = self._value_terms(params, batch, weights)  # TorchRL's order: value, actor
        loss_actor = self._actor_terms(params, batch, weights, batch_shape)
        return {"loss_actor": loss_actor, "loss_value": loss_value, **meta}
