"""Implicit Q-Learning: :class:`IQLLoss` (continuous actions) and :class:`DiscreteIQLLoss`.

Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit Q-Learning" (arXiv:2110.06169).
Mirrors ``torchrl.objectives.IQLLoss`` / ``DiscreteIQLLoss`` (TorchRL 0.14.1). With ``N`` critics (one parameter
tree with a leading member axis), per sample::

    m          = min_i Q_target_i(s, a)                        (target critics, data action)
    loss_value = reduce(L2^tau(m - V(s)))                       L2^tau(u) = |tau - 1(u < 0)| u**2      (eq. 5)
    loss_actor = reduce(-min(exp(beta (m - sg V(s))), 100) log pi(a | s))                            (eq. 7)
    y          = r + gamma (1 - terminated) V(s')               (value estimator, V(s') without tape)  (eq. 6)
    loss_qvalue= reduce(sum_i dist(Q_i(s, a), y))
    entropy    = -mean log pi(a | s)                            (the data log-likelihood, TorchRL's logging value)

``td_error = max_i (Q_i - y)**2`` ``[*B]`` is written into the caller's batch.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping

from .. import data as _data
from .._backend import namespace_of
from . import functional as F
from ._nets import ensemble_apply, keyed_output, make_ensemble
from .common import LossModule
from .dqn import _GAMMA_ERROR, _PRIORITY_KEY_ERROR, _check_common
from .utils import step_mdp, stop_gradient

__all__ = ["IQLLoss", "DiscreteIQLLoss"]


def _squeeze_last(x: Any, name: str) -> Any:
    if x.ndim == 0 or x.shape[-1] != 1:
        raise ValueError(f"{name}: expected a trailing singleton dimension [..., 1], got shape {tuple(x.shape)}")
    return namespace_of(x).squeeze(x, axis=-1)


class IQLLoss(LossModule):
    """The IQL loss (TorchRL ``IQLLoss``); formulas in the module docstring.

    Args:
        actor_network: a probabilistic actor with ``get_dist(params, batch)`` (``arrayrl.nn.ProbabilisticActor``).
        qvalue_network: a keyed critic writing ``state_action_value`` ``[*B, 1]``; or a list of
            ``num_qvalue_nets`` critics (stacked exactly); or a critic whose parameters already carry the ensemble
            axis (``arrayrl.nn.Ensemble``). A single critic is expanded as TorchRL does: every member leaf is
            re-drawn ``U(min, max)`` of the original leaf (from ``generator``), so no member equals it.
        value_network: a keyed value network writing ``state_value`` ``[*B, 1]``.

    Keyword Args:
        num_qvalue_nets: ensemble size (default 2; 1 keeps an un-expanded tree).
        loss_function: critic distance, ``"smooth_l1"`` (default), ``"l2"``, ``"l1"``.
        temperature: ``beta`` of the advantage weights (default 1.0).
        expectile: ``tau`` of the value loss (default 0.5).
        separate_losses: accepted for compatibility; arrayrl networks never share parameter trees, so each loss
            term already trains only its own networks' shared-nothing trees.
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"``.
        deactivate_vmap: run the critics member by member instead of one batched pass.
        scalar_output_mode: with ``reduction="none"``, ``"non_tensor"`` keeps ``entropy`` (a scalar) in the outputs;
            otherwise it is excluded (with a warning if not set to ``"exclude"``).
        generator: an :class:`arrayrl.random.Generator` for the ensemble expansion of a single critic.

    Example (the twin of TorchRL's docstring example: obs 3, action 4, batch 2)::

        >>> import numpy as np
        >>> from arrayrl.distributions import TanhNormal
        >>> from arrayrl.nn import KeyedModule, Linear, MLP, NormalParamExtractor, ProbabilisticActor, ValueOperator
        >>> from arrayrl.objectives import IQLLoss
        >>> n_act, n_obs = 4, 3
        >>> net = MLP(in_features=n_obs, out_features=2 * n_act, num_cells=[])
        >>> module = KeyedModule(lambda params, obs: NormalParamExtractor().apply({}, net.apply(params, obs)),
        ...                      params=net.params, in_keys=["observation"], out_keys=["loc", "scale"])
        >>> actor = ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=TanhNormal,
        ...                            distribution_kwargs={"low": -1.0, "high": 1.0})
        >>> qvalue = ValueOperator(MLP(in_features=n_obs + n_act, out_features=1, num_cells=[]),
        ...                        in_keys=["observation", "action"])
        >>> value = ValueOperator(Linear(n_obs, 1), in_keys=["observation"])
        >>> loss = IQLLoss(actor, qvalue, value)
        >>> rng = np.random.default_rng(0)
        >>> data = {
        ...     "observation": rng.normal(size=(2, n_obs)),
        ...     "action": rng.uniform(-0.9, 0.9, size=(2, n_act)),
        ...     "next": {"done": np.zeros((2, 1), bool), "terminated": np.zeros((2, 1), bool),
        ...              "reward": rng.normal(size=(2, 1)), "observation": rng.normal(size=(2, n_obs))},
        ... }
        >>> out = loss(data)
        >>> sorted(out)
        ['entropy', 'loss_actor', 'loss_qvalue', 'loss_value']
        >>> loss_actor, loss_qvalue, loss_value, entropy = loss(
        ...     observation=data["observation"], action=data["action"], next_done=data["next"]["done"],
        ...     next_terminated=data["next"]["terminated"], next_observation=data["next"]["observation"],
        ...     next_reward=data["next"]["reward"])
        >>> _ = loss.select_out_keys("loss_actor", "loss_qvalue")
        >>> out, grads = loss.value_and_grad(data, terms=["loss_actor"])
        >>> sorted(out), sorted(grads)
        (['loss_actor', 'loss_qvalue'], ['actor_network', 'qvalue_network', 'value_network'])
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        value: Any = "state_value"
        action: Any = "action"
        log_prob: Any = "_log_prob"
        priority: Any = "td_error"
        state_action_value: Any = "state_action_value"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS = ("loss_actor", "loss_qvalue", "loss_value", "entropy")

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        value_network: Any,
        *,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        temperature: float = 1.0,
        expectile: float = 0.5,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        scalar_output_mode: str | None = None,
        generator: Any = None,
    ) -> None:
        if gamma is not None:
            raise TypeError(_GAMMA_ERROR)
        if priority_key is not None:
            raise TypeError(_PRIORITY_KEY_ERROR)
        loss_function, reduction = _check_common(loss_function, reduction)
        if value_network is None:
            raise ValueError("value_network: IQLLoss needs a state-value network V(s)")
        if not hasattr(actor_network, "get_dist"):
            raise TypeError(
                f"actor_network: expected a probabilistic actor with get_dist(params, batch), got {type(actor_network).__name__}"
            )
        if int(num_qvalue_nets) < 1:
            raise ValueError(f"num_qvalue_nets: expected >= 1, got {num_qvalue_nets}")
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.temperature = temperature
        self.expectile = expectile
        self.separate_losses = separate_losses
        self.deactivate_vmap = deactivate_vmap
        self.num_qvalue_nets = int(num_qvalue_nets)
        self.delay_qvalue = True
        self._n = None if self.num_qvalue_nets == 1 else self.num_qvalue_nets
        if isinstance(qvalue_network, (list, tuple)) and self.num_qvalue_nets == 1 and len(qvalue_network) == 1:
            qvalue_network = qvalue_network[0]
        template, qparams = make_ensemble(qvalue_network, self._n, generator, "qvalue_network")
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(template, "qvalue_network", params=qparams, create_target_params=True)
        self.convert_to_functional(value_network, "value_network")
        if reduction == "none" and scalar_output_mode is None:
            warnings.warn(
                f"{type(self).__name__} with reduction='none' excludes the scalar 'entropy' from its outputs; pass "
                "scalar_output_mode='exclude' to silence this or 'non_tensor' to keep it.",
                UserWarning,
                stacklevel=2,
            )
            scalar_output_mode = "exclude"
        self.scalar_output_mode = scalar_output_mode

    # TorchRL's static helper (its default expectile is 0.8)
    @staticmethod
    def loss_value_diff(diff: Any, expectile: float = 0.8) -> Any:
        return F.expectile_loss(diff, expectile)

    def _all_out_keys(self) -> list:
        keys = list(self._OUT_KEYS)
        if self.reduction == "none" and self.scalar_output_mode != "non_tensor":
            keys.remove("entropy")
        return keys

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        nets = self._networks
        actor_in = list(nets["actor_network"].in_keys)
        return [tk.action, ("next", tk.reward), ("next", tk.done), ("next", tk.terminated), *actor_in,
                *[("next",) + _data.unravel_key(k) for k in actor_in], *nets["qvalue_network"].in_keys,
                *nets["value_network"].in_keys, *[("next",) + _data.unravel_key(k) for k in nets["value_network"].in_keys]]

    # -------------------------------------------------------------------------------------------- pieces
    def _critics(self, params: Any, batch: Mapping) -> Any:
        """``Q_i(s, a_data)`` for every member, ``[N, *B]``."""
        q = ensemble_apply(self._networks["qvalue_network"], params, batch, self.tensor_keys.state_action_value,
                           self._n, loop=self.deactivate_vmap)
        return _squeeze_last(q, _data.key_str(self.tensor_keys.state_action_value))

    def _value(self, params: Any, batch: Mapping) -> Any:
        v = keyed_output(self._networks["value_network"], params, batch, self.tensor_keys.value,
                         what="state value of the value network")
        return _squeeze_last(v, _data.key_str(self.tensor_keys.value))

    def _log_prob(self, params: Any, batch: Mapping) -> Any:
        dist = self._networks["actor_network"].get_dist(params, batch)
        return dist.log_prob(_data.get(batch, self.tensor_keys.action, what="action"))

    def _min_target_q(self, batch: Mapping) -> Any:
        xp_q = self._critics(self._target_tree("qvalue_network"), batch)
        return namespace_of(xp_q).min(xp_q, axis=0)

    # -------------------------------------------------------------------------------------------- losses
    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        # actor
        log_prob = self._log_prob(params["actor_network"], batch)
        min_q = stop_gradient(self._min_target_q(batch))
        value = self._value(params["value_network"], batch)  # one pass: with tape for loss_value, without for the actor
        v_sg = stop_gradient(value)
        loss_actor = self._reduce_loss(F.iql_actor_loss(log_prob, min_q, v_sg, self.temperature), batch)
        # critics
        next_v = self._value(self._target_tree("value_network"), step_mdp(batch))
        target = self.value_estimator.value_estimate(batch, next_value=stop_gradient(namespace_of(next_v).expand_dims(next_v, axis=-1)))
        target = stop_gradient(_squeeze_last(target, "value target"))
        pred = self._critics(params["qvalue_network"], batch)
        loss_q, td_error = F.ensemble_critic_loss(pred, target, self.loss_function)
        loss_qvalue = self._reduce_loss(loss_q, batch)
        # value
        loss_value = self._reduce_loss(F.iql_value_loss(min_q, value, self.expectile), batch)
        xp = namespace_of(td_error)
        self._write_priority(batch, xp.max(td_error, axis=0))
        out = {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, "loss_value": loss_value}
        if self.reduction != "none" or self.scalar_output_mode == "non_tensor":
            out["entropy"] = -xp.mean(stop_gradient(log_prob))
        return out


class DiscreteIQLLoss(IQLLoss):
    """IQL for discrete actions (TorchRL ``DiscreteIQLLoss``).

    The critic writes ``state_action_value`` ``[*B, nA]``; every ``Q`` above becomes the data action's value (gather
    for ``categorical`` actions ``[*B]``/``[*B, 1]``, a dot product for ``one_hot`` ``[*B, nA]``). The actor is a
    categorical policy (``arrayrl.distributions.Categorical`` / ``OneHotCategorical``).

    Keyword Args:
        action_space: ``"one_hot"`` (default, with a warning if not given) or ``"categorical"``.
        expectile: must be ``< 1`` (``ValueError``).
        Others as :class:`IQLLoss` (no ``deactivate_vmap``).
    """

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        value_network: Any,
        *,
        action_space: Any = None,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        temperature: float = 1.0,
        expectile: float = 0.5,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        scalar_output_mode: str | None = None,
        generator: Any = None,
    ) -> None:
        if expectile >= 1.0:
            raise ValueError(f"Expectile should be lower than 1.0 but is {expectile}")
        if action_space is None:
            warnings.warn("action_space was not specified. DiscreteIQLLoss will default to 'one-hot'.", stacklevel=2)
            action_space = "one_hot"
        space = F.normalize_action_space(action_space)
        if space not in ("one_hot", "categorical"):
            raise ValueError(f"action_space: DiscreteIQLLoss supports 'one_hot' and 'categorical', got {space!r}")
        self.action_space = space
        super().__init__(
            actor_network, qvalue_network, value_network, num_qvalue_nets=num_qvalue_nets, loss_function=loss_function,
            temperature=temperature, expectile=expectile, gamma=gamma, priority_key=priority_key,
            separate_losses=separate_losses, reduction=reduction, scalar_output_mode=scalar_output_mode,
            generator=generator,
        )

    def _critics(self, params: Any, batch: Mapping) -> Any:
        q = ensemble_apply(self._networks["qvalue_network"], params, batch, self.tensor_keys.state_action_value,
                           self._n, loop=self.deactivate_vmap)  # [N, *B, nA]
        action = _data.get(batch, self.tensor_keys.action, what="action")
        xp = namespace_of(q, action)
        n = q.shape[0]
        if self.action_space == "categorical":
            a = F.per_sample(action, tuple(q.shape[1:-1]), _data.key_str(self.tensor_keys.action))
            a = xp.broadcast_to(xp.expand_dims(a, axis=0), (n,) + tuple(a.shape))
        else:
            if tuple(action.shape) != tuple(q.shape[1:]):
                raise ValueError(
                    f"{_data.key_str(self.tensor_keys.action)}: expected a one-hot action of shape {tuple(q.shape[1:])} "
                    f"(the shape of the action values), got {tuple(action.shape)}"
                )
            a = xp.broadcast_to(xp.expand_dims(action, axis=0), tuple(q.shape))
        return F.chosen_action_value(q, a, self.action_space, name=_data.key_str(self.tensor_keys.action))
