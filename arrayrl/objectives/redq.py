"""Randomized Ensembled Double Q-learning: :class:`REDQLoss` (TorchRL ``torchrl.objectives.REDQLoss``, 0.14.1).

Paper: Chen, Wang, Zhou & Ross 2021, "Randomized Ensembled Double Q-Learning: Learning Fast Without a Model"
(arXiv:2101.05982), Algorithm 2 (the SAC-based REDQ). ``N`` critics, a random subset ``M`` (``sub_sample_len``) of
target critics in the target. Draws, in TorchRL's order: ``permutation(N)`` (the subset is its first ``M`` entries,
sorted), then **one** reparameterised draw of shape ``[2, *B, A]`` for ``(a~ ~ pi(.|s), a' ~ pi(.|s'))``::

    loss_actor[N, B]  = -(Q_i(s, a~) - alpha log pi(a~|s))          (critic parameters without gradient)
    V(s')             = min_{j in subset} [Q_target_j(s', a') - alpha log pi(a'|s')]   (no gradient)
    y                 = r + gamma (1 - terminated) V(s')              (value estimator, V(s') injected)
    loss_qvalue[N, B] = dist(Q_i(s, a), y);   td_error = max_i (Q_i(s, a) - y)**2
    loss_actor, loss_qvalue: reduced over N * B (a **mean** over critics, not SAC's sum)
    alpha = exp(clamp(log alpha)),  entropy = -mean log pi over the [2, B] draws (current and next)

The temperature loss (Divergence, docs: /tmp/divergences_redq.md):

* default (the REDQ authors' code, ``redq/algos/redq_sac.py``): ``loss_alpha[B] = -log(alpha) (sg log pi(a~|s) +
  H_target)`` on the current samples, and ``min_alpha``/``max_alpha`` default to ``None`` (no clamp);
* ``torchrl_compat=True`` (TorchRL): ``loss_alpha[2, B] = -alpha_c (sg log pi + H_target)`` over the current
  **and** next samples, in ``alpha`` (not ``log alpha``), with ``alpha_c = exp(clamp(log alpha))`` clamped
  straight-through (the gradient of the unclamped ``log alpha``), and ``min_alpha=0.1``, ``max_alpha=10`` by default.

Neither mode writes the clamp back into ``log_alpha`` (TorchRL's REDQ clamps only the value it uses).

Outputs (TorchRL's): ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha``, ``entropy`` (scalars; ``[N, B]``,
``[N, B]``, ``[2, B]`` (compat) / ``[B]`` losses with ``reduction="none"``) and the non-scalar logging entries
``state_action_value_actor [N, B]``, ``action_log_prob_actor [B]``, ``"next.state_value" [B]`` (the key contains a
literal dot, as TorchRL's) and ``target_value [B]``. ``td_error`` is written into the caller's batch.

Bad input: ``sub_sample_len`` outside ``[1, N]`` raises ``ValueError`` (TorchRL silently clamps it to
``[1, N - 1]``; with ``torchrl_compat=True`` ``sub_sample_len == N`` is clamped to ``N - 1`` as TorchRL); a list of
critics whose length is not ``num_qvalue_nets`` raises ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .. import data as _data
from .._backend import namespace_of
from .._validate import check_number
from ..tree import tree_map
from .actor_critic import (
    ActorCriticLoss,
    EntropyTemperature,
    bootstrap_target,
    clamp_log_alpha,
    critic_ensemble_loss,
    ensemble_td_error,
    soft_state_value,
)
from .utils import _steps_key, check_loss_args
from .sac import SoftActorCriticBase, _check_target_entropy, _sg_tree, _squeeze_last
from .utils import check_next_value, check_transition, step_mdp, stop_gradient

__all__ = ["REDQLoss", "redq_temperature_loss"]

_DEFAULT = object()


def redq_temperature_loss(log_alpha: Any, log_prob: Any, target_entropy: Any, min_log_alpha: float | None,
                          max_log_alpha: float | None) -> Any:
    """TorchRL's REDQ temperature loss ``-exp(clamp_st(log alpha)) (sg log pi + H_target)`` (elementwise).

    ``clamp_st`` is the straight-through clamp (:func:`~arrayrl.objectives.actor_critic.clamp_log_alpha`): the value
    of the clamped ``log alpha``, the gradient of the unclamped one. In ``alpha``, not ``log alpha``.
    """
    lp = stop_gradient(log_prob)
    if target_entropy is None:
        return namespace_of(lp).zeros_like(lp)
    la = clamp_log_alpha(log_alpha, min_log_alpha, max_log_alpha)
    if isinstance(la, float):
        import math

        return -math.exp(la) * (lp + target_entropy)
    xp = namespace_of(la)
    return -xp.exp(la) * (lp + target_entropy)


class _NoProjectTemperature(EntropyTemperature):
    """REDQ clamps the value it uses, never the ``log_alpha`` leaf (TorchRL's ``REDQLoss.alpha``)."""

    def project(self, loss: Any) -> None:
        return None


def _take_members(tree: Any, idx: Any) -> Any:
    def _take(x: Any) -> Any:
        xp = namespace_of(x)
        return xp.take(x, idx, axis=0)

    return tree_map(_take, tree)


class REDQLoss(SoftActorCriticBase):
    """The REDQ loss; formulas in the module docstring.

    Args:
        actor_network: a probabilistic actor whose distribution has ``rsample_and_log_prob`` (``TanhNormal``...).
        qvalue_network: a keyed critic writing ``state_action_value [*B, 1]``; a list of ``num_qvalue_nets`` critics
            (stacked exactly); or an ``Ensemble`` critic. A single critic is expanded as TorchRL (``U(min, max)``).

    Keyword Args:
        num_qvalue_nets (10), sub_sample_len (2), loss_function (``"smooth_l1"``), alpha_init (1.0), min_alpha,
        max_alpha (TorchRL: 0.1 and 10; paper default: no clamp), action_spec, fixed_alpha, target_entropy
        (``"auto"``: ``-dim(A)``), delay_qvalue (True), gSDE (accepted; must be False), separate_losses, reduction,
        deactivate_vmap, scalar_output_mode: as TorchRL.
        generator: the draws (``permutation`` then one ``normal [2, *B, A]``); a ``NoiseGenerator`` replays them.
        torchrl_compat: TorchRL's temperature loss and bounds (module docstring).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        value: Any = "state_value"
        sample_log_prob: Any = "action_log_prob"
        priority: Any = "td_error"
        state_action_value: Any = "state_action_value"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS = ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy", "state_action_value_actor",
                 "action_log_prob_actor", "next.state_value", "target_value")
    delay_actor = False

    # the target entropy ("auto" from the action spec) and the data-action check are SAC's

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        num_qvalue_nets: int = 10,
        sub_sample_len: int = 2,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: Any = _DEFAULT,
        max_alpha: Any = _DEFAULT,
        action_spec: Any = None,
        fixed_alpha: bool = False,
        target_entropy: Any = "auto",
        delay_qvalue: bool = True,
        gSDE: bool = False,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        scalar_output_mode: str | None = None,
        generator: Any = None,
        torchrl_compat: bool = False,
    ) -> None:
        loss_function, reduction = check_loss_args(
            loss_function, reduction, "auto", fixed_alpha=fixed_alpha, delay_qvalue=delay_qvalue, gSDE=gSDE,
            separate_losses=separate_losses, deactivate_vmap=deactivate_vmap, torchrl_compat=torchrl_compat, gamma=gamma, priority_key=priority_key)
        if gSDE:
            raise NotImplementedError("gSDE: arrayrl has no gSDE exploration; REDQLoss needs gSDE=False")
        n = check_number(num_qvalue_nets, "num_qvalue_nets", low=1, integer=True)
        m = check_number(sub_sample_len, "sub_sample_len", low=1, integer=True)
        if m > n:
            raise ValueError(f"sub_sample_len: expected at most num_qvalue_nets={n} target critics in the subset, "
                             f"got {m}")
        if torchrl_compat:
            m = max(1, min(m, n - 1))  # TorchRL's clamp to [1, N - 1]
        if min_alpha is _DEFAULT:
            min_alpha = 0.1 if torchrl_compat else None
        if max_alpha is _DEFAULT:
            max_alpha = 10.0 if torchrl_compat else None
        _check_target_entropy(target_entropy)
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.sub_sample_len = m
        self.separate_losses = separate_losses
        self.gSDE = False
        self.torchrl_compat = torchrl_compat
        self._setup(actor_network, qvalue_network, num_qvalue_nets=n, delay_actor=False, delay_qvalue=delay_qvalue,
                    temperature=_NoProjectTemperature(alpha_init, min_alpha, max_alpha, fixed_alpha),
                    generator=generator, reduction=reduction, scalar_output_mode=scalar_output_mode,
                    deactivate_vmap=deactivate_vmap)
        self._set_target_entropy(target_entropy, action_spec, alpha_init)
        self._adopt_actor_keys(actor_network, "sample_log_prob")

    # ---------------------------------------------------------------------------------------- keys
    def _in_keys(self) -> list:
        tk = self.tensor_keys
        nets = self._networks
        actor_in = list(nets["actor_network"].in_keys)
        return [tk.action, ("next", tk.reward), ("next", tk.done), ("next", tk.terminated), *actor_in,
                *[("next",) + _data.unravel_key(k) for k in actor_in], *nets["qvalue_network"].in_keys]

    def _estimator_network(self) -> Any:
        return None

    @property
    def alpha(self) -> Any:
        """``exp(clamp(log alpha))`` (no gradient)."""
        like = _leaves_first(self.params["actor_network"])
        return self._alpha(self.params, like)

    # ---------------------------------------------------------------------------------------- forward
    def _subset(self, like: Any) -> Any:
        gen = self._draws(like)
        perm = stop_gradient(gen.permutation(self.num_qvalue_nets))
        xp = namespace_of(perm)
        return xp.sort(perm[: self.sub_sample_len])

    def _joint_draw(self, params: dict, batch: Mapping) -> tuple:
        """One reparameterised draw ``[2, *B, A]`` from the policy at ``[s, s']`` (TorchRL stacks the online and
        the target actor -- a detached copy -- over the stacked inputs): ``(a~, log pi(a~|s), a', log pi(a'|s'))``;
        the next half carries no gradient."""
        actor = self._networks["actor_network"]
        nxt = step_mdp(batch, actor.in_keys)
        stacked: dict = {}
        for k in actor.in_keys:
            cur, nx = _data.get(batch, k, what="actor input"), _data.get(nxt, k, what="next actor input")
            if tuple(cur.shape) != tuple(nx.shape):
                raise ValueError(f"{_data.key_str(('next',) + _data.unravel_key(k))}: expected shape "
                                 f"{tuple(cur.shape)} (that of {_data.key_str(k)}), got {tuple(nx.shape)}")
            _data.set_(stacked, k, namespace_of(cur, nx).stack([cur, nx], axis=0))
        dist = self._dist(params["actor_network"], stacked)
        action, log_prob = self._rsample(dist)
        self._resolve_target_entropy(dist)
        return action[0, ...], log_prob[0, ...], stop_gradient(action[1, ...]), stop_gradient(log_prob[1, ...]), \
            log_prob

    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        dist0 = self._dist(params["actor_network"], batch)
        self._check_data_action(batch, dist0)
        like = dist0.loc if hasattr(dist0, "loc") else _leaves_first(params["actor_network"])
        idx = self._subset(stop_gradient(like))
        action, log_prob, next_action, next_log_prob, both_log_prob = self._joint_draw(params, batch)
        batch_shape = tuple(log_prob.shape)
        alpha = self._alpha(params, stop_gradient(log_prob))
        # critics: Q^sg_i(s, a~) [N, B]; Q^tgt_j(s', a') [M, B] for j in the subset; Q_i(s, a) [N, B]
        q_actor = self._q(_sg_tree(params["qvalue_network"]), batch, action)
        nxt = step_mdp(batch, self._networks["actor_network"].in_keys)
        q_next = self._q(_take_members(self._target_tree("qvalue_network"), idx), nxt, next_action)
        pred = self._q(params["qvalue_network"], batch)
        for name, q, lead in (("critic output at (s, a~)", q_actor, self._n),
                              ("critic output at (s', a')", q_next, self.sub_sample_len),
                              ("critic output at (s, a)", pred, self._n)):
            if tuple(q.shape) != (lead,) + batch_shape:
                raise ValueError(f"{_data.key_str(tk.state_action_value)} ({name}): expected shape "
                                 f"{(lead,) + batch_shape} (N critics, the policy's batch shape), got {tuple(q.shape)}")
        xp = namespace_of(q_actor, log_prob)
        loss_actor = -(q_actor - alpha * xp.expand_dims(log_prob, axis=0))
        next_value = stop_gradient(soft_state_value(q_next, next_log_prob, alpha))
        check_transition(batch, tk, batch_shape, steps_key=_steps_key(self.value_estimator))
        check_next_value(next_value, batch_shape, self._networks["actor_network"].in_keys, "next state value")
        target = bootstrap_target(self.value_estimator, batch, next_value)
        loss_qvalue = critic_ensemble_loss(pred, target, self.loss_function, "per_critic")
        td_error = ensemble_td_error(pred, target, "max_sq")
        if self.torchrl_compat:
            loss_alpha = redq_temperature_loss(self._temp.raw_log_alpha(params), both_log_prob, self.target_entropy,
                                               self.min_log_alpha, self.max_log_alpha)
        else:
            loss_alpha = self._alpha_loss(params, log_prob)
        self._write_priority(batch, td_error)
        out = {"loss_actor": self._reduce_loss(loss_actor, batch),
               "loss_qvalue": self._reduce_loss(loss_qvalue, batch),
               "loss_alpha": self._reduce_loss(loss_alpha, batch)}
        xs = namespace_of(stop_gradient(both_log_prob))
        self._scalars(out, alpha, -xs.mean(stop_gradient(both_log_prob)))
        out.update({"state_action_value_actor": stop_gradient(q_actor),
                    "action_log_prob_actor": stop_gradient(log_prob),
                    "next.state_value": next_value, "target_value": stop_gradient(target)})
        return out

    def _q(self, q_params: Any, batch: Mapping, action: Any = None) -> Any:
        q = self._critics(q_params, batch, action)
        return _squeeze_last(q, _data.key_str(self.tensor_keys.state_action_value))

    def _critics(self, q_params: Any, batch: Mapping, action: Any = None, key: Any = None) -> Any:
        # the subset of target critics has M members, not N: run it with its own size
        from ._nets import ensemble_apply

        tk = self.tensor_keys
        if action is not None:
            batch = _data.with_(batch, tk.action, action)
        key = tk.state_action_value if key is None else key
        leaves = _leaves_all(q_params)
        n = int(leaves[0].shape[0]) if leaves else self._n
        return ensemble_apply(self._networks["qvalue_network"], q_params, batch, key, n, loop=self.deactivate_vmap)


def _leaves_all(tree: Any) -> list:
    from ..tree import tree_leaves

    return tree_leaves(tree)


def _leaves_first(tree: Any) -> Any:
    leaves = _leaves_all(tree)
    if not leaves:
        raise ValueError("actor_network: has no parameters")
    return leaves[0]
