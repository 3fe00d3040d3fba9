"""Soft Actor-Critic: :class:`SACLoss` (v1 with a state-value network, v2 without) and :class:`DiscreteSACLoss`.

Papers: Haarnoja, Zhou, Abbeel & Levine 2018, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep Reinforcement
Learning with a Stochastic Actor" (v1, arXiv:1801.01290); Haarnoja et al. 2018b, "Soft Actor-Critic Algorithms and
Applications" (v2, learned temperature, arXiv:1812.05905); Christodoulou 2019, "Soft Actor-Critic for Discrete
Action Settings" (arXiv:1910.07207). The classes mirror ``torchrl.objectives.SACLoss`` / ``DiscreteSACLoss``
(TorchRL 0.14.1): constructor arguments, keys, outputs, value estimators (TD0 default; TD1, TDLambda), targets,
reductions, prioritized-replay weights and the ``td_error`` written into the caller's batch. The terms come from
:mod:`arrayrl.objectives.actor_critic`.

**SAC v2** (``value_network=None``), ``N`` critics, per sample; draws: ``a' ~ pi(.|s')`` then ``a~ ~ pi(.|s)``::

    V(s')       = min_i [Q_target_i(s', a') - alpha log pi(a'|s')]      (a' from the online actor, no gradient)
    y           = r + gamma (1 - terminated) V(s')                       (value estimator, V(s') injected)
    loss_qvalue = reduce(sum_i dist(Q_i(s, a), y));   td_error = max_i |Q_i(s, a) - y|
    loss_actor  = reduce(alpha log pi(a~|s) - min_i Q_i(s, a~))          (critic parameters without gradient)
    loss_alpha  = reduce(-log(alpha) (sg log pi(a~|s) + H_target))
    alpha = exp(log alpha), entropy = -mean log pi(a~|s)

**SAC v1** (``value_network`` given); draws: ``a^ ~ pi_target(.|s)`` then ``a~ ~ pi(.|s)``::

    y           = r + gamma (1 - terminated) V_target(s')
    loss_qvalue = reduce(sum_i dist(Q_i(s, a), y));   td_error = max_i |Q_i - y|
    loss_value  = reduce(dist(V(s), min_i Q_i(s, a^) - alpha log pi_target(a^|s)))   (online critics, no gradient)
    loss_actor, loss_alpha as v2.

**DiscreteSAC** (no draws), ``K`` actions::

    V(s')       = sum_a pi(a|s') [min_i Q_target_i(s', a) - alpha log pi(a|s')]
    loss_qvalue = reduce(sum_i dist(Q_i(s, a_data), y));   td_error = max_i |Q_i - y|
    loss_actor  = reduce(sum_a pi(a|s) [alpha log pi(a|s) - min_i Q_i(s, a)])
    loss_alpha  = reduce(-log(alpha) (sum_a pi log pi + H_target)),  H_target = 0.98 log K ("auto")

Divergences from TorchRL 0.14.1 (docs/divergences.md; ``torchrl_compat=True`` reproduces TorchRL):

* ``target_entropy="auto"`` counts only the event dimension of the action spec (``-dim(A)``); TorchRL counts the
  batch dimensions of a batched spec too (``(4, 2)`` gives ``-8``).
* ``skip_done_states`` skips **terminated** next states; TorchRL skips **done** ones, so a truncated transition
  gets ``a' = 0``, ``log pi(a'|s') = 0`` and bootstraps from ``Q(s', 0)`` (continuous) or from 0 (discrete; #2613).
  arrayrl computes every row and selects with ``where`` (static shapes): with terminated rows skipped the numbers
  equal those without skipping.
* SAC v1 trains every critic on the full batch and builds V's target from the online critics (the paper and
  softlearning); TorchRL trains critic ``i`` on chunk ``i`` of the batch (``B % N == 0``), takes
  ``td_error = (Q_i - y)**2`` of the owning critic, and uses the target critics in V's target.

Kept as TorchRL (documented): the temperature loss is in ``log alpha``; ``log alpha`` is clamped to
``[log min_alpha, log max_alpha]`` at every call with a straight-through gradient (TorchRL clamps the parameter in
place); v2 never reads its target actor (``delay_actor`` only matters for v1's value loss); the critic ensemble from
a single network is re-drawn ``U(min, max)`` per leaf (pass a list of critics to stack them exactly).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping

from .. import data as _data
from .._backend import namespace_of
from .._checks import check_floating
from .._validate import check_number
from . import functional as F
from ._nets import keyed_output
from .actor_critic import (
    ActorCriticLoss,
    _sg_tree,
    _squeeze_last,
    EntropyTemperature,
    auto_target_entropy,
    bootstrap_target,
    critic_ensemble_loss,
    discrete_target_entropy,
    ensemble_td_error,
    expected_soft_actor_loss,
    expected_soft_state_value,
    min_over_critics,
    soft_actor_loss,
    soft_state_value,
)
from .utils import (_steps_key, check_loss_args, check_next_value, check_transition, distance_loss, step_mdp,
                    stop_gradient)

__all__ = ["SACLoss", "DiscreteSACLoss"]


def _expand_like(mask: Any, x: Any) -> Any:
    """``mask [*B]`` broadcast to ``x [*B, *E]``."""
    xp = namespace_of(mask)
    m = xp.reshape(mask, tuple(mask.shape) + (1,) * (x.ndim - mask.ndim))
    return xp.broadcast_to(m, tuple(x.shape))


def _zero_where(mask: Any, x: Any) -> Any:
    xp = namespace_of(x, mask)
    return xp.where(_expand_like(mask, x), xp.zeros_like(x), x)


def _spec_leaf(spec: Any, key: Any) -> tuple:
    """``(leaf spec, container shape)`` of the action in ``spec`` (a TorchRL ``Composite``, a dict, or a leaf)."""
    k = _data.unravel_key(key)
    if type(spec).__name__ in ("Composite", "CompositeSpec"):
        container = spec[k[:-1]].shape if len(k) > 1 else spec.shape
        leaf = spec[k]
        if leaf is None:
            raise RuntimeError(f"Cannot infer the dimensionality of the action. The action spec for key '{key}' is None.")
        if type(leaf).__name__ in ("Composite", "CompositeSpec"):
            return {name: sub for name, sub in leaf.items() if sub is not None}, tuple(container)
        return leaf, tuple(container)
    if isinstance(spec, Mapping):  # {action key: spec}, else a composite action (its leaves are summed)
        name = k if len(k) > 1 else k[0]
        return (spec[name] if name in spec else spec), ()
    return spec, ()


def _actor_critic_in_keys(loss: Any) -> list:
    """The entries an actor + critic loss reads: action, the transition, the actor's inputs at s and s', the
    critic's inputs."""
    tk = loss.tensor_keys
    nets = loss._networks
    actor_in = list(nets["actor_network"].in_keys)
    return [tk.action, ("next", tk.reward), ("next", tk.done), ("next", tk.terminated), *actor_in,
            *[("next",) + _data.unravel_key(k) for k in actor_in], *nets["qvalue_network"].in_keys]


def _check_target_entropy(target_entropy: Any) -> None:
    """``target_entropy``: ``"auto"``, ``None`` or a number."""
    if not (target_entropy is None or target_entropy == "auto"):
        check_number(target_entropy, "target_entropy")


class SoftActorCriticBase(ActorCriticLoss):
    """What SAC, REDQ, CrossQ, TQC and CQL share on top of :class:`ActorCriticLoss`: the target entropy
    (``"auto"`` from the action spec), the data-action check, the critic call ``Q_i(s, a)`` and the bootstrapped
    target, and the entries they read. Written once here; each loss adds its own terms."""

    _target_entropy_from_event: float | None = None  # "auto" without a spec: -|event| of the policy, at the 1st call

    # ---------------------------------------------------------------------------------------- target entropy
    def _set_target_entropy(self, target_entropy: Any, action_spec: Any, alpha_init: float) -> None:
        """Keep ``target_entropy`` (resolved lazily by :attr:`target_entropy`), ``action_spec`` and ``alpha_init``."""
        self.alpha_init = float(alpha_init)
        self._target_entropy_arg = target_entropy
        self._target_entropy_from_event = None
        self._action_spec = action_spec

    @property
    def target_entropy(self) -> float | None:
        """``H_target``: the number given, or ``"auto"`` resolved from ``action_spec`` (else the actor's ``spec``)
        by :func:`~arrayrl.objectives.actor_critic.auto_target_entropy`; without a spec, from the policy's event
        shape at the first call (not in ``torchrl_compat`` mode, where TorchRL raises)."""
        te = self._target_entropy_arg
        if te is None or te != "auto":
            return None if te is None else float(te)
        spec = self._action_spec if self._action_spec is not None else getattr(self._networks["actor_network"],
                                                                               "spec", None)
        if spec is None:
            if self._target_entropy_from_event is not None and not self.torchrl_compat:
                return self._target_entropy_from_event
            raise RuntimeError(
                "Cannot infer the dimensionality of the action. Consider providing the target entropy explicitly "
                "or provide the spec of the action tensor in the actor network (action_spec=...)."
            )
        leaf, container = _spec_leaf(spec, self.tensor_keys.action)
        return auto_target_entropy(leaf, container_shape=container, torchrl_compat=self.torchrl_compat)

    def _resolve_target_entropy(self, dist: Any) -> None:
        if self._target_entropy_from_event is None:
            self._target_entropy_from_event = -float(_numel(tuple(getattr(dist, "event_shape", ()))))

    # ---------------------------------------------------------------------------------------- keys
    def _in_keys(self) -> list:
        return _actor_critic_in_keys(self)

    # ---------------------------------------------------------------------------------------- pieces
    def _q(self, q_params: Any, batch: Mapping, action: Any = None) -> Any:
        """``Q_i(s, a)`` ``[N, *B]``."""
        q = self._critics(q_params, batch, action)
        return _squeeze_last(q, _data.key_str(self.tensor_keys.state_action_value))

    def _check_data_action(self, batch: Mapping, dist: Any) -> None:
        key = self.tensor_keys.action
        action = _data.get(batch, key, what="action")
        name = _data.key_str(key)
        check_floating(action, name)
        want = tuple(dist.batch_shape) + tuple(dist.event_shape)
        if tuple(action.shape) != want:
            raise ValueError(f"{name}: expected shape {want} (the policy's batch + event shape), got "
                             f"{tuple(action.shape)}")

    def _target_value(self, batch: Mapping, next_value: Any, batch_shape: tuple) -> Any:
        """``y = bootstrap(V(s'))`` ``[*B]`` after checking the transition entries against ``[*B]``."""
        tk = self.tensor_keys
        check_transition(batch, tk, batch_shape, steps_key=_steps_key(self.value_estimator),
                         weight_key=tk.priority_weight if self.use_prioritized_weights in (True, "auto") else None)
        check_next_value(next_value, batch_shape, self._networks["actor_network"].in_keys, "next state value")
        return bootstrap_target(self.value_estimator, batch, next_value)


class SACLoss(SoftActorCriticBase):
    """The SAC loss, v1 (with ``value_network``) or v2 (without); formulas in the module docstring.

    Args:
        actor_network: a probabilistic actor (``arrayrl.nn.ProbabilisticActor``) whose distribution has
            ``rsample_and_log_prob`` (``TanhNormal``, ``IndependentNormal``...).
        qvalue_network: a keyed critic writing ``state_action_value`` ``[*B, 1]`` from the observation and the
            action; or a list of ``num_qvalue_nets`` critics (stacked exactly); or an ``arrayrl.nn.Ensemble``
            critic. A single critic is expanded as TorchRL does (members re-drawn ``U(min, max)`` per leaf).
        value_network: ``V(s)`` writing ``state_value`` ``[*B, 1]`` (SAC v1), or ``None`` (v2).

    Keyword Args:
        num_qvalue_nets (2), loss_function (``"smooth_l1"``), alpha_init (1.0), min_alpha, max_alpha, action_spec,
        fixed_alpha (False), target_entropy (``"auto"``, a number, or ``None`` for a zero temperature loss),
        delay_actor (False), delay_qvalue (True), delay_value (True), separate_losses, reduction (``"mean"``),
        skip_done_states (False), deactivate_vmap, use_prioritized_weights (``"auto"``), scalar_output_mode:
        as TorchRL.
        generator: the :class:`arrayrl.random.Generator` of the action draws (default ``Generator(0)`` of the
            actor's namespace); assign ``loss.generator`` to change it (a ``NoiseGenerator`` replays given noise).
        torchrl_compat: reproduce TorchRL 0.14.1's numbers where it departs from the paper (module docstring).

    ``loss.params``: ``actor_network``, ``qvalue_network`` (``[N, ...]`` leaves), ``value_network`` (v1) and
    ``log_alpha`` (a 0-d leaf, absent with ``fixed_alpha``). Outputs: ``loss_actor``, ``loss_qvalue``,
    ``loss_alpha``, ``alpha``, ``entropy`` (and ``loss_value`` for v1), scalars (``[*B]`` losses with
    ``reduction="none"``, which drops ``alpha``/``entropy`` unless ``scalar_output_mode="non_tensor"``).

    SAC v2's ``value_and_grad(batch, terms=["loss_qvalue"])`` (or the actor's ``["loss_actor", "loss_alpha"]``)
    computes only those terms (:class:`~arrayrl.objectives.actor_critic.TermSelection`; both draws are taken either
    way); SAC v1 always computes every term.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        value: Any = "state_value"
        state_action_value: Any = "state_action_value"
        log_prob: Any = "action_log_prob"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        priority_weight: Any = "priority_weight"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS = ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy")
    _TERM_GROUPS = {"actor": ("loss_actor", "loss_alpha", "alpha", "entropy"), "critic": ("loss_qvalue", "alpha"),
                    "value": ("loss_value",)}

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        value_network: Any = None,
        *,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        action_spec: Any = None,
        fixed_alpha: bool = False,
        target_entropy: Any = "auto",
        delay_actor: bool = False,
        delay_qvalue: bool = True,
        delay_value: bool = True,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        skip_done_states: bool = False,
        deactivate_vmap: bool = False,
        use_prioritized_weights: Any = "auto",
        scalar_output_mode: str | None = None,
        generator: Any = None,
        torchrl_compat: bool = False,
    ) -> None:
        loss_function, reduction = check_loss_args(
            loss_function, reduction, use_prioritized_weights, fixed_alpha=fixed_alpha, delay_actor=delay_actor,
            delay_qvalue=delay_qvalue, delay_value=delay_value, separate_losses=separate_losses,
            skip_done_states=skip_done_states, deactivate_vmap=deactivate_vmap, torchrl_compat=torchrl_compat, gamma=gamma, priority_key=priority_key)
        _check_target_entropy(target_entropy)
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.use_prioritized_weights = use_prioritized_weights
        self.separate_losses = separate_losses
        self.skip_done_states = skip_done_states
        self.torchrl_compat = torchrl_compat
        self._version = 1 if value_network is not None else 2
        self.delay_value = bool(delay_value) if value_network is not None else False
        self._setup(actor_network, qvalue_network, num_qvalue_nets=num_qvalue_nets, delay_actor=delay_actor,
                    delay_qvalue=delay_qvalue, temperature=EntropyTemperature(alpha_init, min_alpha, max_alpha,
                                                                              fixed_alpha),
                    generator=generator, reduction=reduction, scalar_output_mode=scalar_output_mode,
                    deactivate_vmap=deactivate_vmap)
        if value_network is not None:
            self.convert_to_functional(value_network, "value_network", create_target_params=self.delay_value)
        self._set_target_entropy(target_entropy, action_spec, alpha_init)
        self._adopt_actor_keys(actor_network, "log_prob")

    # ---------------------------------------------------------------------------------------- keys
    def _all_out_keys(self) -> list:
        keys = super()._all_out_keys()
        if self._version == 1:
            keys.append("loss_value")
        return keys

    def _in_keys(self) -> list:
        keys = super()._in_keys()
        if self._version == 1:
            keys += list(self._networks["value_network"].in_keys)
        return keys

    def _estimator_network(self) -> Any:
        return None  # V(s') is injected (v2: the soft value; v1: the target value network's output)

    # ---------------------------------------------------------------------------------------- pieces
    def _next_soft_value(self, params: dict, batch: Mapping) -> tuple:
        """``(V(s') [*B], alpha, batch shape, pi(.|s'))`` of SAC v2 (draw 1: ``a' ~ pi(.|s')``, online actor
        without gradient)."""
        actor = self._networks["actor_network"]
        nxt = step_mdp(batch, actor.in_keys)
        dist = self._dist(_sg_tree(params["actor_network"]), nxt)
        action, log_prob = self._rsample(dist)
        action, log_prob = stop_gradient(action), stop_gradient(log_prob)
        batch_shape = tuple(log_prob.shape)
        alpha = self._alpha(params, log_prob)
        if self.skip_done_states:
            mask = self._skip_mask(batch, batch_shape)
            action, log_prob = _zero_where(mask, action), _zero_where(mask, log_prob)
        q = self._q(self._target_tree("qvalue_network"), nxt, action)
        return soft_state_value(q, log_prob, alpha), alpha, batch_shape, dist

    def _actor_terms(self, params: dict, batch: Mapping, alpha: Any, weights: Any, dist: Any) -> tuple:
        """``(loss_actor, loss_alpha, entropy)`` from ``a~ ~ pi(.|s)`` (one draw from ``dist``, the online
        policy at ``s``; gradient through the draw)."""
        action, log_prob = self._rsample(dist)
        min_q = min_over_critics(self._q(_sg_tree(params["qvalue_network"]), batch, action))
        if tuple(min_q.shape) != tuple(log_prob.shape):
            raise ValueError(f"{_data.key_str(self.tensor_keys.state_action_value)} (critic output): expected batch "
                             f"shape {tuple(log_prob.shape)} (that of the policy's log-probability), got "
                             f"{tuple(min_q.shape)}")
        loss_actor = self._reduce_loss(soft_actor_loss(log_prob, min_q, alpha), batch, weights=weights)
        self._resolve_target_entropy(dist)
        loss_alpha = self._reduce_loss(self._alpha_loss(params, log_prob), batch, weights=weights)
        xp = namespace_of(log_prob)
        entropy = -xp.mean(stop_gradient(log_prob))
        return loss_actor, loss_alpha, entropy

    def _critic_terms(self, params: dict, batch: Mapping, target: Any, weights: Any, chunked: bool) -> tuple:
        pred = self._q(params["qvalue_network"], batch)
        if tuple(pred.shape[1:]) != tuple(target.shape):
            raise ValueError(f"{_data.key_str(self.tensor_keys.state_action_value)} (critic output): expected shape "
                             f"[N, *{tuple(target.shape)}], got {tuple(pred.shape)}")
        per = critic_ensemble_loss(pred, target, self.loss_function, "chunk" if chunked else "sum")
        td_error = ensemble_td_error(pred, target, "chunk_sq" if chunked else "max_abs")
        return self._reduce_loss(per, batch, weights=weights), td_error

    # ---------------------------------------------------------------------------------------- forward
    def _forward(self, batch: Mapping, params: dict) -> dict:
        if self._version == 2 and not (self._wants("actor") and self._wants("critic")):
            return self._forward_v2_one_term(batch, params)
        weights = self._weights(batch)
        dist = self._dist(params["actor_network"], batch)  # the online policy at s (no draw yet)
        self._check_data_action(batch, dist)
        if self._version == 2:
            next_value, alpha, batch_shape, _ = self._next_soft_value(params, batch)
            target = self._target_value(batch, next_value, batch_shape)
            loss_qvalue, td_error = self._critic_terms(params, batch, target, weights, chunked=False)
        else:
            loss_qvalue, td_error, loss_value, alpha = self._v1_terms(params, batch, weights, dist)
        loss_actor, loss_alpha, entropy = self._actor_terms(params, batch, alpha, weights, dist)
        out = {}
        self._write_priority(batch, td_error)
        out.update({"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, "loss_alpha": loss_alpha})
        self._scalars(out, alpha, entropy)
        if self._version == 1:
            out["loss_value"] = loss_value
        return out

    def _forward_v2_one_term(self, batch: Mapping, params: dict) -> dict:
        """SAC v2 with only the critic term or only the actor terms (``value_and_grad(terms=...)``).

        The skipped term's draw is still taken, in the full call's order (draw 1 at ``s'``, then draw 2 at ``s``),
        from a policy of the same batch and event shape (the one at hand: ``pi(.|s')`` for a skipped draw 2,
        ``pi(.|s)`` for a skipped draw 1), so the generator's stream is the full call's; the computed terms equal
        the full call's.
        """
        weights = self._weights(batch)
        out: dict = {}
        if self._wants("critic"):  # loss_qvalue (draw 1), then draw 2 skipped
            next_value, alpha, batch_shape, next_dist = self._next_soft_value(params, batch)
            self._check_data_action(batch, next_dist)
            target = self._target_value(batch, next_value, batch_shape)
            out["loss_qvalue"], td_error = self._critic_terms(params, batch, target, weights, chunked=False)
            self._write_priority(batch, td_error)
            self._rsample(next_dist)
            if self._emits_scalars:
                out["alpha"] = alpha
            return out
        dist = self._dist(params["actor_network"], batch)  # draw 1 skipped, then the actor terms (draw 2)
        self._check_data_action(batch, dist)
        alpha = self._alpha(params, stop_gradient(self._rsample(dist)[1]))
        out["loss_actor"], out["loss_alpha"], entropy = self._actor_terms(params, batch, alpha, weights, dist)
        return self._scalars(out, alpha, entropy)

    def _v1_terms(self, params: dict, batch: Mapping, weights: Any, dist_online: Any) -> tuple:
        """SAC v1 critic and value terms (draw: ``a^ ~ pi_target(.|s)``)."""
        tk = self.tensor_keys
        vnet = self._networks["value_network"]
        batch_shape = tuple(dist_online.batch_shape)
        # the critics' target: y = r + gamma (1 - terminated) V_target(s')
        nxt = step_mdp(batch, vnet.in_keys)
        next_v = _squeeze_last(keyed_output(vnet, self._target_tree("value_network"), nxt, tk.value,
                                            what="state value of the value network"), _data.key_str(tk.value))
        target = self._target_value(batch, next_v, batch_shape)
        loss_qvalue, td_error = self._critic_terms(params, batch, target, weights, chunked=self.torchrl_compat)
        # the value's target: min_i Q_i(s, a^) - alpha log pi_target(a^|s)
        v = _squeeze_last(keyed_output(vnet, params["value_network"], batch, tk.value,
                                       what="state value of the value network"), _data.key_str(tk.value))
        dist = self._dist(self._target_tree("actor_network"), batch)
        action, log_prob = self._rsample(dist)
        action, log_prob = stop_gradient(action), stop_gradient(log_prob)
        alpha = self._alpha(params, log_prob)
        q_params = self._target_tree("qvalue_network") if self.torchrl_compat else _sg_tree(params["qvalue_network"])
        min_q = min_over_critics(self._q(q_params, batch, action))
        v_target = stop_gradient(min_q - alpha * log_prob)
        if tuple(v.shape) != tuple(v_target.shape):
            raise ValueError(f"{_data.key_str(tk.value)} (value network output): expected batch shape "
                             f"{tuple(v_target.shape)}, got {tuple(v.shape)}")
        loss_value = self._reduce_loss(distance_loss(v, v_target, self.loss_function), batch, weights=weights)
        return loss_qvalue, td_error, loss_value, alpha


def _numel(shape: tuple) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


class DiscreteSACLoss(ActorCriticLoss):
    """Discrete SAC (TorchRL ``DiscreteSACLoss``); formulas in the module docstring.

    Args:
        actor_network: a categorical actor (``arrayrl.distributions.Categorical`` / ``OneHotCategorical``).
        qvalue_network: a keyed critic writing ``action_value`` ``[*B, K]`` from the observation (a list of critics,
            or an ensemble, as :class:`SACLoss`).

    Keyword Args:
        action_space: ``"one_hot"`` (default, with a warning if not given) or ``"categorical"``.
        num_actions: ``K``, required by ``target_entropy="auto"`` (``0.98 log K`` with the default
            ``target_entropy_weight``).
        skip_done_states: skip terminated next states (TorchRL: done ones, see the module docstring).
        torchrl_compat: TorchRL's ``skip_done_states`` on ``done``.
        Others as :class:`SACLoss` (no ``delay_actor``, ``action_spec`` or value network).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        value: Any = "state_value"
        action_value: Any = "action_value"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        log_prob: Any = "log_prob"
        priority_weight: Any = "priority_weight"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS = ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy")
    _version = 2

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        action_space: Any = None,
        num_actions: int | None = None,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        fixed_alpha: bool = False,
        target_entropy_weight: float = 0.98,
        target_entropy: Any = "auto",
        delay_qvalue: bool = True,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        skip_done_states: bool = False,
        deactivate_vmap: bool = False,
        use_prioritized_weights: Any = "auto",
        scalar_output_mode: str | None = None,
        generator: Any = None,
        torchrl_compat: bool = False,
    ) -> None:
        loss_function, reduction = check_loss_args(
            loss_function, reduction, use_prioritized_weights, fixed_alpha=fixed_alpha, delay_qvalue=delay_qvalue,
            separate_losses=separate_losses, skip_done_states=skip_done_states, deactivate_vmap=deactivate_vmap,
            torchrl_compat=torchrl_compat, gamma=gamma, priority_key=priority_key)
        if action_space is None:
            warnings.warn("action_space was not specified. DiscreteSACLoss will default to 'one-hot'.", stacklevel=2)
            action_space = "one_hot"
        space = F.normalize_action_space(action_space)
        if space not in ("one_hot", "categorical"):
            raise ValueError(f"action_space: DiscreteSACLoss supports 'one_hot' and 'categorical', got {space!r}")
        if target_entropy == "auto":
            target_entropy = discrete_target_entropy(num_actions, target_entropy_weight)
        elif target_entropy is not None:
            target_entropy = float(check_number(target_entropy, "target_entropy"))
        if num_actions is not None:
            check_number(num_actions, "num_actions", low=1, integer=True)
        self.reduction = reduction
        super().__init__()
        self.action_space = space
        self.num_actions = num_actions
        self.loss_function = loss_function
        self.use_prioritized_weights = use_prioritized_weights
        self.separate_losses = separate_losses
        self.skip_done_states = skip_done_states
        self.torchrl_compat = torchrl_compat
        self.target_entropy = target_entropy
        self.alpha_init = float(alpha_init)
        self._setup(actor_network, qvalue_network, num_qvalue_nets=num_qvalue_nets, delay_actor=False,
                    delay_qvalue=delay_qvalue, temperature=EntropyTemperature(alpha_init, min_alpha, max_alpha,
                                                                              fixed_alpha),
                    generator=generator, reduction=reduction, scalar_output_mode=scalar_output_mode,
                    deactivate_vmap=deactivate_vmap)

    def _in_keys(self) -> list:
        return _actor_critic_in_keys(self)

    def _estimator_network(self) -> Any:
        return None

    def _action_values(self, q_params: Any, batch: Mapping, batch_shape: tuple, k: int) -> Any:
        """``Q_i(s, .)`` ``[N, *B, K]``, shape-checked against the policy's."""
        q = self._critics(q_params, batch, key=self.tensor_keys.action_value)
        want = (q.shape[0],) + tuple(batch_shape) + (k,)
        if tuple(q.shape) != want:
            raise ValueError(f"{_data.key_str(self.tensor_keys.action_value)} (critic output): expected shape "
                             f"[N, *B, n_actions] = {want} (the policy's batch shape and number of actions), got "
                             f"{tuple(q.shape)}")
        return q

    def _data_action(self, batch: Mapping, batch_shape: tuple, k: int) -> Any:
        key = self.tensor_keys.action
        action = _data.get(batch, key, what="action")
        name = _data.key_str(key)
        if self.action_space == "categorical":
            return F.categorical_index(action, batch_shape, k, name, "the policy")
        F.check_one_hot(action, tuple(batch_shape) + (k,), name)
        return action

    def _policy(self, actor_params: Any, batch: Mapping) -> tuple:
        dist = self._dist(actor_params, batch)
        probs = getattr(dist, "probs", None)
        if probs is None:
            raise TypeError(f"actor_network: expected a categorical policy (with probs/logits), got "
                            f"{type(dist).__name__}")
        return dist, probs, dist.logits

    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        weights = self._weights(batch)
        actor = self._networks["actor_network"]
        # target: the exact soft value of s' under the online policy (no gradient)
        nxt = step_mdp(batch, actor.in_keys)
        _, next_probs, next_logits = self._policy(_sg_tree(params["actor_network"]), nxt)
        next_probs, next_logits = stop_gradient(next_probs), stop_gradient(next_logits)
        xp = namespace_of(next_probs)
        batch_shape, k = tuple(next_probs.shape[:-1]), int(next_probs.shape[-1])
        alpha = self._alpha(params, next_probs)
        if self.skip_done_states:
            next_log_probs = next_logits  # TorchRL's skip branch uses the normalised logits
        else:
            next_log_probs = xp.log(xp.where(next_probs == 0, xp.full_like(next_probs, 1e-8), next_probs))
        q_next = self._action_values(self._target_tree("qvalue_network"), nxt, batch_shape, k)
        next_value = expected_soft_state_value(q_next, next_probs, next_log_probs, alpha)
        if self.skip_done_states:
            next_value = _zero_where(self._skip_mask(batch, batch_shape), next_value)
        check_transition(batch, tk, batch_shape, steps_key=_steps_key(self.value_estimator),
                         weight_key=tk.priority_weight if self.use_prioritized_weights in (True, "auto") else None)
        check_next_value(next_value, batch_shape, actor.in_keys, "next state value")
        target = bootstrap_target(self.value_estimator, batch, next_value)
        # critics
        q_all = self._action_values(params["qvalue_network"], batch, batch_shape, k)  # [N, *B, K]
        action = self._data_action(batch, batch_shape, k)
        xa = namespace_of(action)
        a = xa.broadcast_to(xa.expand_dims(action, axis=0), (q_all.shape[0],) + tuple(action.shape))
        pred = F.chosen_action_value(q_all, a, self.action_space, name=_data.key_str(tk.action))
        loss_qvalue = self._reduce_loss(critic_ensemble_loss(pred, target, self.loss_function, "sum"), batch,
                                        weights=weights)
        td_error = ensemble_td_error(pred, target, "max_abs")
        # actor: exact expectation over the actions (critic values without gradient)
        _, probs, log_probs = self._policy(params["actor_network"], batch)
        min_q = min_over_critics(stop_gradient(q_all))
        loss_actor = self._reduce_loss(expected_soft_actor_loss(probs, log_probs, min_q, alpha), batch,
                                       weights=weights)
        xpa = namespace_of(probs, log_probs)
        neg_entropy = stop_gradient(xpa.sum(log_probs * probs, axis=-1))
        loss_alpha = self._reduce_loss(self._alpha_loss(params, neg_entropy), batch, weights=weights)
        self._write_priority(batch, td_error)
        out = {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, "loss_alpha": loss_alpha}
        return self._scalars(out, alpha, -namespace_of(neg_entropy).mean(neg_entropy))
