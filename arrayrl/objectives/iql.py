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

Divergences from TorchRL 0.14.1 (docs/divergences.md; ``torchrl_compat=True`` reproduces TorchRL): TorchRL's
``qvalue_loss`` selects ``("next", ...)``, the actor's inputs and the action before the value estimator runs, so it
drops ``steps_to_next_obs`` (an n-step batch is discounted by ``gamma`` instead of ``gamma**n``), and
``IQLLoss`` (not ``DiscreteIQLLoss``) also drops the ``("collector", "mask")``/``"shifted_valid"`` masks from
``loss_qvalue``. arrayrl uses both by default.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping

from .. import data as _data
from .._backend import namespace_of
from .._checks import check_floating, check_integer
from .._validate import check_choice, check_number
from . import functional as F
from ._nets import ensemble_apply, keyed_output, make_ensemble
from .actor_critic import _squeeze_last
from .common import LossModule
from .utils import _steps_key, check_loss_args, check_next_value, check_transition, step_mdp, stop_gradient

__all__ = ["IQLLoss", "DiscreteIQLLoss"]


def _check_batch_shape(x: Any, batch_shape: tuple, name: str, what: str) -> None:
    """``x`` (a network output without its ensemble/trailing axes) must have the policy's batch shape."""
    if tuple(x.shape) != tuple(batch_shape):
        raise ValueError(
            f"{name} ({what}): expected batch shape {tuple(batch_shape)} (that of the policy's log-probability), "
            f"got {tuple(x.shape)}"
        )


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
        num_qvalue_nets: ensemble size, an integer ``>= 1`` (default 2; 1 keeps an un-expanded tree).
        loss_function: critic distance, ``"smooth_l1"`` (default), ``"l2"``, ``"l1"``.
        temperature: ``beta > 0`` of the advantage weights (default 1.0).
        expectile: ``tau`` in ``(0, 1)`` of the value loss (default 0.5).
        separate_losses: accepted for compatibility; arrayrl networks never share parameter trees, so each loss
            term already trains only its own networks' shared-nothing trees.
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"``.
        deactivate_vmap: run the critics member by member instead of one batched pass.
        scalar_output_mode: with ``reduction="none"``, ``"non_tensor"`` keeps ``entropy`` (a scalar) in the outputs;
            otherwise it is excluded (with a warning if not set to ``"exclude"``).
        generator: an :class:`arrayrl.random.Generator` for the ensemble expansion of a single critic.
        torchrl_compat: ``False`` (default): ``loss_qvalue`` discounts by ``gamma**steps_to_next_obs`` and honours
            the batch masks (the paper, and what the other terms do). ``True``: TorchRL 0.14.1's numbers, which
            ignore ``steps_to_next_obs`` for the critic target and (``IQLLoss`` only) the masks for ``loss_qvalue``.

    Bad hyper-parameters (``num_qvalue_nets=2.5``, ``temperature <= 0``, ``expectile`` outside ``(0, 1)``, NaN...)
    raise ``ValueError``/``TypeError`` naming the argument. The action is checked against the policy's batch and
    event shape (and dtype), naming its key.

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
        torchrl_compat: bool = False,
    ) -> None:
        loss_function, reduction = check_loss_args(loss_function, reduction, separate_losses=separate_losses,
                                                 deactivate_vmap=deactivate_vmap, torchrl_compat=torchrl_compat, gamma=gamma, priority_key=priority_key)
        num_qvalue_nets = check_number(num_qvalue_nets, "num_qvalue_nets", low=1, integer=True)
        check_number(temperature, "temperature", low=0.0, low_open=True)
        check_number(expectile, "expectile", low=0.0, high=1.0, low_open=True, high_open=True)
        if scalar_output_mode is not None:
            check_choice(scalar_output_mode, "scalar_output_mode", ("exclude", "non_tensor"))
        if value_network is None:
            raise ValueError("value_network: IQLLoss needs a state-value network V(s)")
        if not hasattr(actor_network, "get_dist"):
            raise TypeError(
                f"actor_network: expected a probabilistic actor with get_dist(params, batch), got {type(actor_network).__name__}"
            )
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.temperature = temperature
        self.expectile = expectile
        self.separate_losses = separate_losses
        self.deactivate_vmap = deactivate_vmap
        self.torchrl_compat = torchrl_compat
        self.num_qvalue_nets = num_qvalue_nets
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

    # TorchRL 0.14.1's IQLLoss.qvalue_loss reduces over a key selection without the masks (DiscreteIQLLoss keeps them)
    _COMPAT_DROPS_QVALUE_MASK = True

    # -------------------------------------------------------------------------------------------- pieces
    def _critics(self, params: Any, batch: Mapping, action: Any) -> Any:
        """``Q_i(s, a_data)`` for every member, ``[N, *B]`` (the critic reads the action from ``batch``)."""
        q = ensemble_apply(self._networks["qvalue_network"], params, batch, self.tensor_keys.state_action_value,
                           self._n, loop=self.deactivate_vmap)
        return _squeeze_last(q, _data.key_str(self.tensor_keys.state_action_value))

    def _value(self, params: Any, batch: Mapping) -> Any:
        v = keyed_output(self._networks["value_network"], params, batch, self.tensor_keys.value,
                         what="state value of the value network")
        return _squeeze_last(v, _data.key_str(self.tensor_keys.value))

    def _policy_action(self, dist: Any, batch: Mapping) -> Any:
        """The data action, checked against the policy: floating, of shape ``batch_shape + event_shape``."""
        key = self.tensor_keys.action
        action = _data.get(batch, key, what="action")
        name = _data.key_str(key)
        check_floating(action, name)
        want = getattr(dist, "_full_shape", None)
        if want is not None and tuple(action.shape) != tuple(want):
            raise ValueError(f"{name}: expected shape {tuple(want)} (the policy's batch + event shape), got "
                             f"{tuple(action.shape)}")
        return action

    def _log_prob(self, params: Any, batch: Mapping) -> tuple:
        """``(log pi(a_data | s), a_data)``, the action as :meth:`_policy_action` returns it."""
        dist = self._networks["actor_network"].get_dist(params, batch)
        action = self._policy_action(dist, batch)
        return dist.log_prob(action), action

    def _min_target_q(self, batch: Mapping, action: Any) -> Any:
        xp_q = self._critics(self._target_tree("qvalue_network"), batch, action)
        return namespace_of(xp_q).min(xp_q, axis=0)

    def _estimator_batch(self, batch: Mapping) -> Mapping:
        """What the value estimator sees: the batch; with ``torchrl_compat`` TorchRL's key selection (``"next"``,
        the actor's inputs, the action), which drops ``steps_to_next_obs``."""
        if not self.torchrl_compat:
            return batch
        keys = ["next", *self._networks["actor_network"].in_keys, self.tensor_keys.action]
        return _data.select(batch, keys, strict=False)

    # -------------------------------------------------------------------------------------------- losses
    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        # actor
        log_prob, action = self._log_prob(params["actor_network"], batch)
        batch_shape = tuple(log_prob.shape)
        min_q = stop_gradient(self._min_target_q(batch, action))
        _check_batch_shape(min_q, batch_shape, _data.key_str(tk.state_action_value), "critic output")
        value = self._value(params["value_network"], batch)  # one pass: with tape for loss_value, without for the actor
        _check_batch_shape(value, batch_shape, _data.key_str(tk.value), "value network output")
        v_sg = stop_gradient(value)
        loss_actor = self._reduce_loss(F.iql_actor_loss(log_prob, min_q, v_sg, self.temperature), batch)
        # critics
        check_transition(batch, tk, batch_shape, steps_key=_steps_key(self.value_estimator))
        v_in = self._networks["value_network"].in_keys
        next_v = self._value(self._target_tree("value_network"), step_mdp(batch, v_in))
        check_next_value(next_v, batch_shape, v_in, "next state value")
        next_v = stop_gradient(namespace_of(next_v).expand_dims(next_v, axis=-1))
        target = self.value_estimator.value_estimate(self._estimator_batch(batch), next_value=next_v)
        target = stop_gradient(_squeeze_last(target, "value target"))
        pred = self._critics(params["qvalue_network"], batch, action)
        loss_q, td_error = F.ensemble_critic_loss(pred, target, self.loss_function)
        drop_mask = self.torchrl_compat and self._COMPAT_DROPS_QVALUE_MASK
        loss_qvalue = self._reduce_loss(loss_q, None if drop_mask else batch)
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
        expectile: must be in ``(0, 1)`` (``ValueError``; TorchRL's message for ``>= 1``).
        torchrl_compat: ``True`` ignores ``steps_to_next_obs`` for the critic target, as TorchRL 0.14.1 (its
            ``DiscreteIQLLoss`` keeps the masks, so both modes honour them).
        Others as :class:`IQLLoss` (no ``deactivate_vmap``).

    A categorical action is ``[*B]`` or ``[*B, 1]`` (the trailing 1 is squeezed) integers in ``[0, nA)`` (checked
    under the :mod:`arrayrl._validate` policy); a one-hot action is ``[*B, nA]``, ``nA`` the policy's and the
    critic's number of actions. Anything else raises naming the action key.
    """

    _COMPAT_DROPS_QVALUE_MASK = False

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
        torchrl_compat: bool = False,
    ) -> None:
        if isinstance(expectile, (int, float)) and expectile >= 1.0:  # TorchRL's message (other cases: IQLLoss)
            raise ValueError(f"expectile: Expectile should be lower than 1.0 but is {expectile}")
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
            generator=generator, torchrl_compat=torchrl_compat,
        )

    def _policy_action(self, dist: Any, batch: Mapping) -> Any:
        """The data action for ``dist``: categorical indices ``[*B]`` (a trailing 1 squeezed) in ``[0, K)``, or a
        one-hot ``[*B, K]``, with ``*B`` and ``K`` the policy's batch shape and number of classes."""
        key = self.tensor_keys.action
        action = _data.get(batch, key, what="action")
        name = _data.key_str(key)
        batch_shape = tuple(getattr(dist, "batch_shape", action.shape[: action.ndim - 1]))
        n = getattr(dist, "num_categories", None)
        if self.action_space == "categorical":
            if n is None:  # a policy without num_categories: the range is checked at the critic's gather
                check_integer(action, name)
                return F.per_sample(action, batch_shape, name, "the policy")
            return F.categorical_index(action, batch_shape, n, name, "the policy")
        F.check_one_hot(action, batch_shape + ((n,) if n is not None else tuple(action.shape[-1:])), name)
        return action

    def _critics(self, params: Any, batch: Mapping, action: Any) -> Any:
        """``Q_i(s, a_data)`` ``[N, *B]``: the critic's action values ``[N, *B, nA]`` at the data action."""
        q = ensemble_apply(self._networks["qvalue_network"], params, batch, self.tensor_keys.state_action_value,
                           self._n, loop=self.deactivate_vmap)  # [N, *B, nA]
        xp = namespace_of(q, action)
        name = _data.key_str(self.tensor_keys.action)
        if tuple(q.shape[1:-1]) != tuple(action.shape[: len(q.shape) - 2]):
            raise ValueError(
                f"{_data.key_str(self.tensor_keys.state_action_value)} (critic output): expected shape "
                f"[N, *B, n_actions] with *B = {tuple(action.shape[: len(q.shape) - 2])} (the batch shape of {name}), "
                f"got {tuple(q.shape)}"
            )
        a = xp.broadcast_to(xp.expand_dims(action, axis=0), (q.shape[0],) + tuple(action.shape))
        return F.chosen_action_value(q, a, self.action_space, name=name)
