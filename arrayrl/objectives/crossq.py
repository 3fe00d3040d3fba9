"""CrossQ: :class:`CrossQLoss` (TorchRL ``torchrl.objectives.CrossQLoss``, 0.14.1).

Paper: Bhatt, Palenicek, Belousov, Argus, Amiranashvili, Brox, Peters 2024, "CrossQ: Batch Normalization in Deep
Reinforcement Learning for Greater Sample Efficiency and Simplicity" (ICLR 2024, arXiv:1902.05605). No target
networks; the critic normalises its activations (:class:`~arrayrl.nn.norm.BatchRenorm1d`) over the **joint** batch
``[(s, a); (s', a')]`` of one call. Draws: ``a' ~ pi(.|s')`` (``sample``: no reparameterisation), then
``a~ ~ pi(.|s)`` (``rsample``)::

    [Q_i(s, a); Q_i(s', a')] = critic_i(cat[(s, a), (s', a')])          one call, training statistics [2B]
    V(s')       = sg(min_i Q_i(s', a') - alpha log pi(a'|s'))
    y           = r + gamma (1 - terminated) V(s')
    loss_qvalue = reduce(sum_i dist(Q_i(s, a), y));   td_error = max_i |Q_i(s, a) - y|
    loss_actor  = reduce(alpha log pi(a~|s) - min_i Q_i(s, a~))          evaluation statistics (the running ones
                                                                         just updated by the critic call), critic
                                                                         parameters without gradient
    loss_alpha  = reduce(-log(alpha) (sg log pi(a~|s) + H_target))

**Running statistics are explicit state** (DESIGN.md section 7). The critic is a stateful keyed module
(:class:`~arrayrl.nn.norm.StatefulValueOperator` around a :class:`~arrayrl.nn.norm.NormMLP`, or a plain keyed
critic without state). The loss keeps the ensemble's statistics (``[N, ...]`` leaves) in :attr:`CrossQLoss.state`:

* every call (``loss(batch)``, ``loss.value_and_grad(batch)``) *reads* ``loss.state`` and never changes it; the
  statistics the call produced are in :attr:`CrossQLoss.next_state` afterwards (``None`` before the first call);
* :meth:`CrossQLoss.commit_state` (``loss.state = loss.next_state``) advances them -- call it once per training
  step, after the optimiser step (TorchRL updates the buffers in place during the forward pass);
* the pure form :meth:`CrossQLoss.forward_with_state` ``(batch, state) -> (outputs, new_state)`` touches nothing;
  ``value_and_grad(batch, state=...)`` takes a state explicitly too;
* ``loss.train_critic = False`` runs the critic loss with running statistics (no update; TorchRL with
  ``qvalue_network.eval()`` before the call -- which TorchRL then forgets, defect 29).

Outputs (TorchRL's): ``loss_actor, loss_qvalue, loss_alpha, alpha, entropy`` scalars and the non-scalar
``log_prob [B]`` (``log pi(a~|s)``, no gradient) and ``td_error [B]``; ``td_error`` is also written into the
caller's batch. Kept as TorchRL (documented): the temperature loss is in ``log alpha``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .. import data as _data
from .._backend import namespace_of
from ..nn.norm import expand_state, stack_states
from ..tree import tree_flatten, tree_unflatten
from .actor_critic import (
    ActorCriticLoss,
    EntropyTemperature,
    bootstrap_target,
    critic_ensemble_loss,
    ensemble_td_error,
    min_over_critics,
    soft_actor_loss,
)
from .utils import _steps_key, check_loss_args
from .sac import SoftActorCriticBase, _check_target_entropy, _sg_tree, _squeeze_last
from .utils import check_next_value, check_transition, step_mdp, stop_gradient

__all__ = ["CrossQLoss"]


def _member(tree: Any, i: int) -> Any:
    leaves, treedef = tree_flatten(tree)
    return tree_unflatten(treedef, [x[i, ...] for x in leaves])


class CrossQLoss(SoftActorCriticBase):
    """The CrossQ loss; formulas and the state protocol in the module docstring.

    Args:
        actor_network: a probabilistic actor (``rsample_and_log_prob``/``sample_and_log_prob``).
        qvalue_network: a stateful keyed critic (``apply_with_state(params, batch, state, train=) -> (batch,
            state)``, e.g. :class:`~arrayrl.nn.norm.StatefulValueOperator`) writing ``state_action_value [B, 1]``,
            or a plain keyed critic; or a list of ``num_qvalue_nets`` of them (parameters and statistics stacked
            exactly). A single critic is expanded as TorchRL: parameters re-drawn ``U(min, max)`` per leaf,
            statistics copied.

    Keyword Args:
        num_qvalue_nets (2), loss_function (``"smooth_l1"``), alpha_init, min_alpha, max_alpha, action_spec,
        fixed_alpha, target_entropy, separate_losses, reduction, deactivate_vmap, scalar_output_mode: as TorchRL.
        generator: the draws (``normal [B, A]`` at s', then at s).
        torchrl_compat: TorchRL's ``"auto"`` target entropy on batched specs (as SACLoss).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        state_action_value: Any = "state_action_value"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        log_prob: Any = "_log_prob"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS = ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy", "log_prob", "td_error")


    def __init__(self, actor_network: Any, qvalue_network: Any, *, num_qvalue_nets: int = 2,
                 loss_function: str = "smooth_l1", alpha_init: float = 1.0, min_alpha: float | None = None,
                 max_alpha: float | None = None, action_spec: Any = None, fixed_alpha: bool = False,
                 target_entropy: Any = "auto", gamma: float | None = None, priority_key: Any = None,
                 separate_losses: bool = False, reduction: str | None = None, deactivate_vmap: bool = False,
                 scalar_output_mode: str | None = None, generator: Any = None, torchrl_compat: bool = False) -> None:
        loss_function, reduction = check_loss_args(
            loss_function, reduction, "auto", fixed_alpha=fixed_alpha, separate_losses=separate_losses,
            deactivate_vmap=deactivate_vmap, torchrl_compat=torchrl_compat, gamma=gamma, priority_key=priority_key)
        _check_target_entropy(target_entropy)
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.separate_losses = separate_losses
        self.torchrl_compat = torchrl_compat
        self.train_critic = True
        self._setup(actor_network, qvalue_network, num_qvalue_nets=num_qvalue_nets, delay_actor=False,
                    delay_qvalue=False, temperature=EntropyTemperature(alpha_init, min_alpha, max_alpha, fixed_alpha),
                    generator=generator, reduction=reduction, scalar_output_mode=scalar_output_mode,
                    deactivate_vmap=deactivate_vmap)
        nets = qvalue_network if isinstance(qvalue_network, (list, tuple)) else [qvalue_network]
        states = [getattr(m, "state", None) or {} for m in nets]
        if isinstance(qvalue_network, (list, tuple)):
            self._state = stack_states(states) if states[0] else {}
        else:
            self._state = expand_state(states[0], self._n) if states[0] else {}
        self._stateful = hasattr(nets[0], "apply_with_state")
        self.next_state: Any = None
        self._set_target_entropy(target_entropy, action_spec, alpha_init)
        self._adopt_actor_keys(actor_network, None)

    # ---------------------------------------------------------------------------------------- state
    @property
    def state(self) -> Any:
        """The critics' running statistics used by the next call (``[N, ...]`` leaves; ``{}`` without norms)."""
        return self._state

    @state.setter
    def state(self, value: Any) -> None:
        from .common import _check_like

        if self._state:
            _check_like("state", value, self._state)
        self._state = value

    def commit_state(self) -> Any:
        """``loss.state = loss.next_state`` (the statistics of the last call); returns the new state."""
        if self.next_state is None:
            raise RuntimeError("commit_state: no call has produced new statistics yet")
        self.state = self.next_state
        return self._state

    # ---------------------------------------------------------------------------------------- keys
    def _in_keys(self) -> list:
        tk = self.tensor_keys
        nets = self._networks
        actor_in = list(nets["actor_network"].in_keys)
        return [tk.action, ("next", tk.reward), ("next", tk.done), ("next", tk.terminated), *actor_in,
                *[("next",) + _data.unravel_key(k) for k in actor_in], *nets["qvalue_network"].in_keys]

    def _estimator_network(self) -> Any:
        return None

    # ---------------------------------------------------------------------------------------- critic calls
    def _q_state(self, q_params: Any, batch: Mapping, state: Any, train: bool) -> tuple:
        """``(Q_i [N, *B], new_state)`` from one call of the (stateful) critic ensemble."""
        net = self._networks["qvalue_network"]
        key = self.tensor_keys.state_action_value
        name = _data.key_str(key)
        if not self._stateful:
            return _squeeze_last(self._critics(q_params, batch), name), state
        if getattr(net, "batched_ensemble", False) and not self.deactivate_vmap:
            out, new = net.apply_with_state(q_params, batch, state, train=train)
            q = _data.get(out, key, what="critic output")
        else:
            outs, news = [], []
            for i in range(self._n):
                o, s = net.apply_with_state(_member(q_params, i), batch, _member(state, i) if state else state,
                                            train=train)
                outs.append(_data.get(o, key, what="critic output"))
                news.append(s)
            q = namespace_of(*outs).stack(outs, axis=0)
            new = stack_states(news) if news and news[0] else state
        return _squeeze_last(q, name), new

    # ---------------------------------------------------------------------------------------- forward
    def forward_with_state(self, batch: Mapping, state: Any = None) -> tuple:
        """Pure: ``(outputs, new_state)`` with ``state`` (default :attr:`state`); nothing on the loss changes except
        the documented ``td_error`` written into ``batch``."""
        if self._temperature is not None:
            self._temperature.project(self)
        out, new = self._forward_state(batch, self.params, self._state if state is None else state)
        return self._select(out), new

    def _forward(self, batch: Mapping, params: dict) -> dict:
        out, new = self._forward_state(batch, params, self._call_state)
        self.next_state = new
        return out

    @property
    def _call_state(self) -> Any:
        return self.__dict__.get("_override_state") or self._state

    def value_and_grad(self, batch: Mapping | None = None, /, *, terms: Any = None, state: Any = None,
                       **kwargs: Any) -> tuple:
        """As :meth:`LossModule.value_and_grad`, with the running statistics ``state`` (default :attr:`state`);
        the new statistics are in :attr:`next_state` afterwards."""
        self.__dict__["_override_state"] = state
        try:
            return super().value_and_grad(batch, terms=terms, **kwargs)
        finally:
            self.__dict__["_override_state"] = None

    def _forward_state(self, batch: Mapping, params: dict, state: Any) -> tuple:
        tk = self.tensor_keys
        actor = self._networks["actor_network"]
        qnet = self._networks["qvalue_network"]
        dist = self._dist(params["actor_network"], batch)
        self._check_data_action(batch, dist)
        batch_shape = tuple(dist.batch_shape)
        if len(batch_shape) != 1:
            raise ValueError(f"CrossQLoss: the joint critic batch concatenates along one batch axis; expected a batch "
                             f"of shape [B], got the policy's batch shape {batch_shape}")
        b = batch_shape[0]
        # draw 1: a' ~ pi(.|s') (sample: no reparameterisation; online actor, no gradient)
        nxt = step_mdp(batch, actor.in_keys)
        ndist = self._dist(_sg_tree(params["actor_network"]), nxt)
        next_action, next_log_prob = ndist.sample_and_log_prob(self._draws(ndist.loc if hasattr(ndist, "loc")
                                                                          else next_log_prob_like(ndist)))
        next_action, next_log_prob = stop_gradient(next_action), stop_gradient(next_log_prob)
        alpha = self._alpha(params, next_log_prob)
        # one critic call on cat[(s, a), (s', a')]
        nxt_a = _data.with_(nxt, tk.action, next_action)
        joint: dict = {}
        for k in qnet.in_keys:
            cur = _data.get(batch, k, what="critic input")
            nx = _data.get(nxt_a, k, what="next critic input")
            if tuple(cur.shape[1:]) != tuple(nx.shape[1:]) or cur.shape[0] != b or nx.shape[0] != b:
                raise ValueError(f"{_data.key_str(('next',) + _data.unravel_key(k))}: expected shape "
                                 f"{tuple(cur.shape)} (that of {_data.key_str(k)}) for the joint critic batch, got "
                                 f"{tuple(nx.shape)}")
            _data.set_(joint, k, namespace_of(cur, nx).concat([cur, nx], axis=0))
        q_joint, new_state = self._q_state(params["qvalue_network"], joint, state, self.train_critic)
        if tuple(q_joint.shape) != (self._n, 2 * b):
            raise ValueError(f"{_data.key_str(tk.state_action_value)} (critic output): expected shape "
                             f"{(self._n, 2 * b)} on the joint batch, got {tuple(q_joint.shape)}")
        pred, q_next = q_joint[:, :b], q_joint[:, b:]
        next_value = stop_gradient(min_over_critics(stop_gradient(q_next)) - alpha * next_log_prob)
        check_transition(batch, tk, batch_shape, steps_key=_steps_key(self.value_estimator))
        check_next_value(next_value, batch_shape, actor.in_keys, "next state value")
        target = bootstrap_target(self.value_estimator, batch, next_value)
        loss_qvalue = self._reduce_loss(critic_ensemble_loss(pred, target, self.loss_function, "sum"), batch)
        td_error = ensemble_td_error(pred, target, "max_abs")
        # draw 2: a~ ~ pi(.|s); critics with the running statistics (updated above), no parameter gradient
        action, log_prob = self._rsample(dist)
        q_actor, _ = self._q_state(_sg_tree(params["qvalue_network"]), _data.with_(batch, tk.action, action),
                                   new_state, False)
        min_q = min_over_critics(q_actor)
        loss_actor = self._reduce_loss(soft_actor_loss(log_prob, min_q, alpha), batch)
        self._resolve_target_entropy(dist)
        loss_alpha = self._reduce_loss(self._alpha_loss(params, log_prob), batch)
        lp = stop_gradient(log_prob)
        self._write_priority(batch, td_error)
        out = {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, "loss_alpha": loss_alpha}
        self._scalars(out, alpha, -namespace_of(lp).mean(lp))
        out["log_prob"] = lp
        out["td_error"] = td_error
        return out, new_state


def next_log_prob_like(dist: Any) -> Any:
    probs = getattr(dist, "probs", None)
    if probs is None:
        raise TypeError(f"actor_network: cannot infer the namespace of {type(dist).__name__}'s draws")
    return probs
