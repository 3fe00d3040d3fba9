"""Conservative Q-Learning: :class:`CQLLoss` (continuous actions) and :class:`DiscreteCQLLoss`.

Paper: Kumar, Zhou, Tucker & Levine 2020, "Conservative Q-Learning for Offline Reinforcement Learning"
(arXiv:2006.04779), CQL(H) with the importance-sampled log-sum-exp of appendix F ("min_q_version=3" of the authors'
code, github.com/aviralkumar2907/CQL, ``d4rl/rlkit/torch/sac/cql.py``). The classes mirror
``torchrl.objectives.CQLLoss`` / ``DiscreteCQLLoss`` (TorchRL 0.14.1): constructor arguments, keys, outputs, TD0
default estimator (TD1, TDLambda), targets and the ``td_error`` written into the caller's batch. The soft actor-critic
machinery (temperature, critic ensemble, bootstrap) is :mod:`arrayrl.objectives.actor_critic`.

**CQLLoss**, ``N = 2`` critics, ``K = num_random``, ``T = temperature``, ``w = min_q_weight``, ``A`` the action
dimension. Draws, in TorchRL's order (from :attr:`generator`): (1) ``a' ~ pi(.|s')`` ``[*B]`` (and ``[*B K]`` more
with ``max_q_backup``); (2) ``a_rand ~ U(-1, 1)`` ``[*B K, A]``; (3) ``a_cur ~ pi(.|s)`` ``[*B K]``;
(4) ``a_new ~ pi(.|s')`` ``[*B K]``; (5) ``a_bc ~ pi(.|s)`` ``[*B]``; (6) ``a~ ~ pi(.|s)`` ``[*B]``. Draws 1-4 use
the actor without gradient; ``*B K`` repeats each state ``K`` times along the last batch axis (``repeat_interleave``)::

    V(s')        = min_i Qtgt_i(s', a')  [- alpha log pi(a'|s') if not deterministic_backup]
                   max_q_backup: min_i max_k Qtgt_i(s', a'_k)
    y            = r + gamma (1 - terminated) V(s');   td_error = max_i (Q_i(s, a) - y)**2
    loss_qvalue  = reduce(sum_i dist(Q_i(s, a), y))
    lse_i(s)     = T w logsumexp_{3K}([Q_i(s, a_rand) - A log(1/2), Q_i(s, a_new) - log pi(a_new|s'),
                                       Q_i(s, a_cur) - log pi(a_cur|s)] / T)         (log-probs without gradient)
    gap_i(s)     = lse_i(s) - w Q_i(s, a)
    loss_cql     = reduce(sum_i gap_i)          with_lagrange: reduce(sum_i sg(alpha') (gap_i - tau))
    loss_alpha_prime = -1/2 alpha' sum_i (mean sg(gap_i) - tau),  alpha' = min(exp(log_alpha'), 1e6)
    loss_actor_bc = reduce(alpha log pi(a_bc|s) - log pi(a_data|s))
    loss_actor   = reduce(alpha log pi(a~|s) - min_i sg(Q_i)(s, a~))
    loss_alpha   = reduce(-log(alpha) (sg log pi(a~|s) + H_target));  entropy = -mean log pi(a~|s)

**DiscreteCQLLoss** (no draws), a Q-value network over ``nA`` actions::

    y           = r + gamma (1 - terminated) max_a Qtgt(s', a)
    loss_qvalue = reduce(dist(Q(s, a), y));   td_error = (Q(s, a) - y)**2   [*B, 1]
    loss_cql    = reduce(logsumexp_a Q(s, a) - Q(s, a_data))
    logged: td_error (mean over the first batch axis), pred_value = mean Q(s, .), target_value = mean y.

Divergences from TorchRL 0.14.1 (``torchrl_compat=True`` reproduces TorchRL; docs/divergences.md):

* TorchRL's log-sum-exp runs over the 3 proposal types of each repeated sample (``[*B K, 3]``), not over the
  ``3K`` sampled actions of a state;
* TorchRL scores the actions drawn from ``pi(.|s')`` at ``s'`` (the authors' code: at ``s``);
* TorchRL's ``[*B K] - [*B, 1]`` broadcast makes every row's penalty the mean log-sum-exp of the *whole* batch
  minus its own ``w Q(s, a)`` (equal to the paper only under a plain mean, without masks);
* with ``with_lagrange``, TorchRL leaves ``loss_cql`` unscaled by ``alpha'`` and ``loss_alpha_prime`` is not
  detached from the critics (summing every ``loss_*`` pushes the critics to *raise* the gap);
* DiscreteCQL: TorchRL bootstraps from the *online* network (its target network is never read) and halves the
  Q loss (``0.5 dist``).

Kept as TorchRL (documented): the temperature loss in ``log alpha`` with the straight-through clamp; the Q-value
ensemble of a single critic re-drawn ``U(min, max)`` (pass a list of two critics to stack them exactly); TorchRL's
comparison of critic parameters with the actor's (tied parameters) is not reproduced. arrayrl does not write
``pred_q1``/``pred_q2``/``cql_q1_loss``/``cql_q2_loss``/``pred_val`` into the caller's batch (only ``td_error``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from .. import data as _data
from .._backend import device_of, namespace_of
from .._validate import check_number
from ..ops import logsumexp
from . import functional as F
from ._nets import action_values, as_qvalue_actor, find_action_space
from .actor_critic import (
    ActorCriticLoss,
    EntropyTemperature,
    critic_ensemble_loss,
    ensemble_td_error,
    min_over_critics,
    soft_actor_loss,
    soft_state_value,
)
from .common import LossModule
from .dqn import _trailing
from .utils import _GAMMA_ERROR, _steps_key, check_loss_args
from .sac import SoftActorCriticBase, _check_target_entropy, _sg_tree
from .utils import check_next_value, check_transition, distance_loss, step_mdp, stop_gradient

__all__ = ["CQLLoss", "DiscreteCQLLoss", "cql_conservative_gap", "discrete_cql_gap", "repeat_interleave"]

ALPHA_PRIME_MAX = 1e6


# ------------------------------------------------------------------------------------------------ pure terms
def repeat_interleave(x: Any, k: int, batch_ndim: int) -> Any:
    """Repeat each entry of the last batch axis ``k`` times in place (``torch.repeat_interleave(x, k, dim=
    batch_ndim - 1)``): ``[*B, *E] -> [*B[:-1], B[-1] k, *E]``, row ``b k + j`` is row ``b``."""
    xp = namespace_of(x)
    shape = tuple(x.shape)
    if batch_ndim < 1 or x.ndim < batch_ndim:
        raise ValueError(f"repeat_interleave: expected at least {max(batch_ndim, 1)} batch dimensions, got shape "
                         f"{shape}")
    lead, rest = shape[:batch_ndim], shape[batch_ndim:]
    y = xp.expand_dims(x, axis=batch_ndim)
    y = xp.broadcast_to(y, lead + (k,) + rest)
    return xp.reshape(y, lead[:-1] + (lead[-1] * k,) + rest)


def cql_conservative_gap(q_data: Any, q_rand: Any, q_cur: Any, q_new: Any, log_prob_cur: Any, log_prob_new: Any,
                         action_dim: int, *, temperature: float = 1.0, min_q_weight: float = 1.0,
                         torchrl_compat: bool = False) -> Any:
    """The CQL(H) penalty per critic and state, ``[N, *B]`` (Kumar et al. 2020, eq. 4 with appendix F's
    importance-sampled log-sum-exp).

    Args:
        q_data: ``[N, *B]`` ``Q_i(s, a_data)``.
        q_rand, q_cur, q_new: ``[N, *B, K]`` the critics at the ``K`` uniform actions, the ``K`` actions from
            ``pi(.|s)`` and the ``K`` actions from ``pi(.|s')``.
        log_prob_cur, log_prob_new: ``[*B, K]`` their log-probabilities (gradient stopped here).
        action_dim: ``A``; the uniform proposal on ``[-1, 1]^A`` has log-density ``A log(1/2)``.
        temperature, min_q_weight: ``T``, ``w``.
        torchrl_compat: TorchRL 0.14.1: the log-sum-exp over the 3 proposals of each sample ``[N, *B, K]``, then
            every row gets the mean of all of them over the batch (``[B K] - [B, 1]`` broadcast, then mean).

    Returns ``gap_i(s) = T w logsumexp_{3K}(cat / T) - w Q_i(s, a_data)``.
    """
    xp = namespace_of(q_data, q_rand, q_cur, q_new)
    for name, q in (("q_rand", q_rand), ("q_cur", q_cur), ("q_new", q_new)):
        if tuple(q.shape[:-1]) != tuple(q_data.shape) or q.ndim != q_data.ndim + 1:
            raise ValueError(f"{name}: expected shape [N, *B, K] with [N, *B] = {tuple(q_data.shape)}, got "
                             f"{tuple(q.shape)}")
    for name, lp in (("log_prob_cur", log_prob_cur), ("log_prob_new", log_prob_new)):
        if tuple(lp.shape) != tuple(q_rand.shape[1:]):
            raise ValueError(f"{name}: expected shape {tuple(q_rand.shape[1:])} ([*B, K]), got {tuple(lp.shape)}")
    density = float(action_dim) * math.log(0.5)
    lp_cur = xp.expand_dims(stop_gradient(log_prob_cur), axis=0)
    lp_new = xp.expand_dims(stop_gradient(log_prob_new), axis=0)
    parts = [q_rand - density, q_new - lp_new, q_cur - lp_cur]
    t, w = float(temperature), float(min_q_weight)
    if torchrl_compat:
        cat = xp.stack(parts, axis=-1)  # [N, *B, K, 3]
        lse = logsumexp(cat / t, axis=-1) * (w * t)  # [N, *B, K]
        n = q_data.shape[0]
        flat = xp.reshape(lse, (n, -1))
        mean = xp.mean(flat, axis=-1)  # [N]
        mean = xp.reshape(mean, (n,) + (1,) * (q_data.ndim - 1))
        return mean - q_data * w
    cat = xp.concat(parts, axis=-1)  # [N, *B, 3K]
    return logsumexp(cat / t, axis=-1) * (w * t) - q_data * w


def discrete_cql_gap(action_value: Any, action: Any, action_space: str = "one_hot", *, name: str = "action") -> Any:
    """Discrete CQL(H) penalty ``logsumexp_a Q(s, a) - Q(s, a_data)``, ``[*B, nA] -> [*B]`` (Kumar et al. 2020)."""
    chosen = F.chosen_action_value(action_value, action, action_space, name=name)
    return logsumexp(action_value, axis=-1) - chosen


# ------------------------------------------------------------------------------------------------ CQLLoss
class CQLLoss(SoftActorCriticBase):
    """The continuous CQL loss (TorchRL ``CQLLoss``); formulas in the module docstring.

    Args:
        actor_network: a probabilistic actor whose distribution has ``rsample_and_log_prob`` (``TanhNormal``...).
        qvalue_network: a keyed critic writing ``state_action_value [*B, 1]``, or a list of two critics (stacked
            exactly). A single critic is expanded as TorchRL (members re-drawn ``U(min, max)`` per leaf).

    Keyword Args:
        loss_function ("smooth_l1"), alpha_init (1.0), min_alpha, max_alpha, action_spec, fixed_alpha (False),
        target_entropy ("auto": ``-dim(A)``), delay_actor (False), delay_qvalue (True), temperature (1.0),
        min_q_weight (1.0), max_q_backup (False), deterministic_backup (True), num_random (10), with_lagrange (False),
        lagrange_thresh (0.0), reduction ("mean"), deactivate_vmap, scalar_output_mode: as TorchRL.
        generator: the six draws (module docstring); a ``NoiseGenerator`` replays given ones.
        torchrl_compat: reproduce TorchRL 0.14.1's numbers (module docstring).

    ``loss.params``: ``actor_network``, ``qvalue_network`` (``[2, ...]``), ``log_alpha`` (unless fixed) and
    ``log_alpha_prime`` (with ``with_lagrange``, initialised at 0). Outputs: ``loss_actor``, ``loss_actor_bc``,
    ``loss_qvalue``, ``loss_cql``, ``loss_alpha``, ``alpha``, ``entropy`` (and ``loss_alpha_prime``).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        value: Any = "state_value"
        state_action_value: Any = "state_action_value"
        log_prob: Any = "_log_prob"
        pred_q1: Any = "pred_q1"
        pred_q2: Any = "pred_q2"
        priority: Any = "td_error"
        cql_q1_loss: Any = "cql_q1_loss"
        cql_q2_loss: Any = "cql_q2_loss"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS = ("loss_actor", "loss_actor_bc", "loss_qvalue", "loss_cql", "loss_alpha", "alpha", "entropy")
    _POLICY_NETWORK = "actor_network"
    use_prioritized_weights = False  # CQL has no priority_weight key (TorchRL)

    # SAC's target entropy ("auto" from the action spec), data-action check, critic call, bootstrap and in_keys

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        action_spec: Any = None,
        fixed_alpha: bool = False,
        target_entropy: Any = "auto",
        delay_actor: bool = False,
        delay_qvalue: bool = True,
        gamma: float | None = None,
        temperature: float = 1.0,
        min_q_weight: float = 1.0,
        max_q_backup: bool = False,
        deterministic_backup: bool = True,
        num_random: int = 10,
        with_lagrange: bool = False,
        lagrange_thresh: float = 0.0,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        scalar_output_mode: str | None = None,
        generator: Any = None,
        torchrl_compat: bool = False,
    ) -> None:
        loss_function, reduction = check_loss_args(
            loss_function, reduction, "auto", fixed_alpha=fixed_alpha, delay_actor=delay_actor,
            delay_qvalue=delay_qvalue, max_q_backup=max_q_backup, deterministic_backup=deterministic_backup,
            with_lagrange=with_lagrange, deactivate_vmap=deactivate_vmap, torchrl_compat=torchrl_compat, gamma=gamma)
        _check_target_entropy(target_entropy)
        self.temperature = float(check_number(temperature, "temperature", low=0.0, low_open=True))
        self.min_q_weight = float(check_number(min_q_weight, "min_q_weight"))
        self.num_random = int(check_number(num_random, "num_random", low=1, integer=True))
        self.target_action_gap = float(check_number(lagrange_thresh, "lagrange_thresh"))
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.max_q_backup = bool(max_q_backup)
        self.deterministic_backup = bool(deterministic_backup)
        self.with_lagrange = bool(with_lagrange)
        self.torchrl_compat = bool(torchrl_compat)
        self._setup(actor_network, qvalue_network, num_qvalue_nets=2, delay_actor=delay_actor,
                    delay_qvalue=delay_qvalue, temperature=EntropyTemperature(alpha_init, min_alpha, max_alpha,
                                                                              fixed_alpha),
                    generator=generator, reduction=reduction, scalar_output_mode=scalar_output_mode,
                    deactivate_vmap=deactivate_vmap)
        if self.with_lagrange:
            from ..tree import tree_leaves

            like = tree_leaves(self.params["actor_network"])[0]
            leaf = namespace_of(like).asarray(0.0, dtype=like.dtype, device=device_of(like))
            self.convert_to_functional(None, "log_alpha_prime", params=leaf)
        self._set_target_entropy(target_entropy, action_spec, alpha_init)

    @property
    def lagrange_thresh(self) -> float:
        return self.target_action_gap

    def _all_out_keys(self) -> list:
        keys = super()._all_out_keys()
        if self.with_lagrange:
            keys.append("loss_alpha_prime")
        return keys

    def _estimator_network(self) -> Any:
        return None

    # ---------------------------------------------------------------------------------------- pieces
    def _repeat_keys(self) -> list:
        """The entries a repeated batch needs: the actor's inputs and the critics' non-action inputs."""
        action = _data.unravel_key(self.tensor_keys.action)
        keys = [_data.unravel_key(k) for k in self._networks["actor_network"].in_keys]
        for k in self._networks["qvalue_network"].in_keys:
            k = _data.unravel_key(k)
            if k != action and k not in keys:
                keys.append(k)
        return keys

    def _repeated(self, batch: Mapping, batch_shape: tuple, where: str) -> dict:
        out: dict = {}
        nb = len(batch_shape)
        for k in self._repeat_keys():
            x = _data.get(batch, k, what=f"{where} input of the actor/critics")
            if tuple(x.shape[:nb]) != tuple(batch_shape):
                full = k if where == "current" else ("next",) + k
                raise ValueError(f"{_data.key_str(full)}: expected leading batch shape {tuple(batch_shape)} (the "
                                 f"policy's), got {tuple(x.shape)}")
            _data.set_(out, k, repeat_interleave(x, self.num_random, nb))
        return out

    def _draw_sg(self, actor_params: Any, batch: Mapping) -> tuple:
        action, log_prob = self._rsample(self._dist(actor_params, batch))
        return stop_gradient(action), stop_gradient(log_prob)

    def _per_state(self, q: Any, batch_shape: tuple) -> Any:
        """``[N, *B[:-1], B[-1] K] -> [N, *B, K]``."""
        return namespace_of(q).reshape(q, (q.shape[0],) + tuple(batch_shape) + (self.num_random,))

    def _next_value(self, params: dict, batch: Mapping, nxt: Mapping, batch_shape: tuple, alpha: Any) -> Any:
        """``V(s')`` ``[*B]`` (draw 1, and the ``K`` backup draws with ``max_q_backup``)."""
        sg_actor = _sg_tree(params["actor_network"])
        a_next, lp_next = self._draw_sg(sg_actor, nxt)
        target_q = self._target_tree("qvalue_network")
        if self.max_q_backup:
            rep = self._repeated(nxt, batch_shape, "next")
            a_rep, _ = self._draw_sg(sg_actor, rep)
            q = self._per_state(self._q(target_q, rep, a_rep), batch_shape)
            xp = namespace_of(q)
            return min_over_critics(xp.max(q, axis=-1))
        q = self._q(target_q, nxt, a_next)
        if tuple(q.shape[1:]) != tuple(batch_shape):
            raise ValueError(f"{_data.key_str(self.tensor_keys.state_action_value)} (critic output at s'): expected "
                             f"shape [N, *{tuple(batch_shape)}], got {tuple(q.shape)}")
        if self.deterministic_backup:
            return min_over_critics(q)
        return soft_state_value(q, lp_next, alpha)

    def _alpha_prime(self, params: dict) -> Any:
        la = params["log_alpha_prime"]
        xp = namespace_of(la)
        return xp.clip(xp.exp(la), max=ALPHA_PRIME_MAX)

    # ---------------------------------------------------------------------------------------- forward
    def _forward(self, batch: Mapping, params: dict) -> dict:
        actor = self._networks["actor_network"]
        dist = self._dist(params["actor_network"], batch)  # the online policy at s (draws 5 and 6)
        self._check_data_action(batch, dist)
        batch_shape = tuple(dist.batch_shape)
        if not batch_shape:
            raise ValueError("CQLLoss: the batch needs at least one batch dimension (the random actions are "
                             "repeated along the last one)")
        like = getattr(dist, "loc", None)
        alpha = self._alpha(params, stop_gradient(like))
        nxt = step_mdp(batch, actor.in_keys)
        # ---- Q loss (draw 1)
        next_value = stop_gradient(self._next_value(params, batch, nxt, batch_shape, alpha))
        target = self._target_value(batch, next_value, batch_shape)
        q_params = params["qvalue_network"]
        pred = self._q(q_params, batch)
        if tuple(pred.shape[1:]) != batch_shape:
            raise ValueError(f"{_data.key_str(self.tensor_keys.state_action_value)} (critic output): expected shape "
                             f"[N, *{batch_shape}], got {tuple(pred.shape)}")
        loss_qvalue = self._reduce_loss(critic_ensemble_loss(pred, target, self.loss_function, "sum"), batch)
        td_error = ensemble_td_error(pred, target, "max_sq")
        # ---- CQL penalty (draws 2, 3, 4)
        gap = self._gap(params, batch, nxt, batch_shape, pred, dist)
        xq = namespace_of(gap)
        out_extra = {}
        if self.with_lagrange:
            alpha_prime = self._alpha_prime(params)
            tau = self.target_action_gap
            c = [self._reduce_loss(gap[i, ...] if self.torchrl_compat else stop_gradient(gap[i, ...]), batch,
                                   reduction="mean") for i in range(gap.shape[0])]
            out_extra["loss_alpha_prime"] = (-(alpha_prime * (c[0] - tau)) - alpha_prime * (c[1] - tau)) * 0.5
            if self.torchrl_compat:
                loss_cql = self._reduce_loss(xq.sum(gap, axis=0), batch)
            else:
                loss_cql = self._reduce_loss(xq.sum(gap - tau, axis=0) * stop_gradient(alpha_prime), batch)
        else:
            loss_cql = self._reduce_loss(xq.sum(gap, axis=0), batch)
        # ---- behaviour-cloning actor term (draw 5)
        _, lp_bc = self._rsample(dist)
        data_action = _data.get(batch, self.tensor_keys.action, what="action")
        bc_log_prob = dist.log_prob(data_action)
        loss_actor_bc = self._reduce_loss(alpha * lp_bc - bc_log_prob, batch)
        # ---- actor and temperature (draw 6)
        a_pi, lp_pi = self._rsample(dist)
        min_q = min_over_critics(self._q(_sg_tree(q_params), batch, a_pi))
        loss_actor = self._reduce_loss(soft_actor_loss(lp_pi, min_q, alpha), batch)
        self._resolve_target_entropy(dist)
        loss_alpha = self._reduce_loss(self._alpha_loss(params, lp_pi), batch)
        xl = namespace_of(stop_gradient(lp_pi))
        entropy = -xl.mean(stop_gradient(lp_pi))
        self._write_priority(batch, td_error)
        out = {"loss_actor": loss_actor, "loss_actor_bc": loss_actor_bc, "loss_qvalue": loss_qvalue,
               "loss_cql": loss_cql, "loss_alpha": loss_alpha}
        self._scalars(out, alpha, entropy)
        out.update(out_extra)
        return out

    def _gap(self, params: dict, batch: Mapping, nxt: Mapping, batch_shape: tuple, pred: Any, dist: Any) -> Any:
        """``gap_i(s)`` ``[N, *B]`` from draws 2 (uniform), 3 (``pi(.|s)``) and 4 (``pi(.|s')``)."""
        k = self.num_random
        a_dim = int(dist.event_shape[-1]) if dist.event_shape else 1
        like = stop_gradient(pred)
        gen = self._draws(like)
        rep_shape = tuple(batch_shape[:-1]) + (batch_shape[-1] * k,) + tuple(dist.event_shape)
        a_rand = gen.uniform(rep_shape, -1.0, 1.0, like.dtype)
        sg_actor = _sg_tree(params["actor_network"])
        rep_s = self._repeated(batch, batch_shape, "current")
        rep_next = self._repeated(nxt, batch_shape, "next")
        a_cur, lp_cur = self._draw_sg(sg_actor, rep_s)
        a_new, lp_new = self._draw_sg(sg_actor, rep_next)
        q_params = params["qvalue_network"]
        q_rand = self._q(q_params, rep_s, a_rand)
        q_cur = self._q(q_params, rep_s, a_cur)
        q_new = self._q(q_params, rep_next if self.torchrl_compat else rep_s, a_new)
        xp = namespace_of(lp_cur)
        per = lambda x: xp.reshape(x, tuple(batch_shape) + (k,))  # noqa: E731
        return cql_conservative_gap(pred, self._per_state(q_rand, batch_shape), self._per_state(q_cur, batch_shape),
                                    self._per_state(q_new, batch_shape), per(lp_cur), per(lp_new), a_dim,
                                    temperature=self.temperature, min_q_weight=self.min_q_weight,
                                    torchrl_compat=self.torchrl_compat)


# ------------------------------------------------------------------------------------------------ DiscreteCQLLoss
class DiscreteCQLLoss(LossModule):
    """The discrete CQL loss (TorchRL ``DiscreteCQLLoss``); formulas in the module docstring.

    Args:
        value_network: a Q-value actor (:class:`arrayrl.nn.QValueActor`) or a plain network
            ``observation -> action values`` (wrapped in a ``QValueActor``).

    Keyword Args:
        loss_function: ``"l2"`` (default, no 1/2), ``"l1"``, ``"smooth_l1"``.
        delay_value: keep a target copy of the parameters (default ``True``); the bootstrap reads it (TorchRL:
            never, see ``torchrl_compat``).
        action_space: ``"one_hot"``, ``"categorical"`` (default: from the Q-value head, else one-hot with a
            warning). Categorical actions may be ``[*B]`` or ``[*B, 1]``.
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"``.
        torchrl_compat: TorchRL 0.14.1: bootstrap from the online network (the greedy value of the Q-value head)
            and ``loss_qvalue = reduce(0.5 dist)``.

    Outputs: ``loss_qvalue``, ``loss_cql`` and the logged ``td_error`` (``[*B[1:], 1]``, the mean over the first
    batch axis), ``pred_value``, ``target_value`` (TorchRL returns the same five, its ``out_keys`` lists two).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        value_target: Any = "value_target"
        value: Any = "chosen_action_value"
        action_value: Any = "action_value"
        action: Any = "action"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        pred_val: Any = "pred_val"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS = ("loss_qvalue", "loss_cql", "td_error", "pred_value", "target_value")
    _POLICY_NETWORK = "value_network"

    def __init__(self, value_network: Any, *, loss_function: str | None = "l2", delay_value: bool = True,
                 gamma: float | None = None, action_space: Any = None, reduction: str | None = None,
                 torchrl_compat: bool = False) -> None:
        if gamma is not None:
            raise TypeError(_GAMMA_ERROR)
        if loss_function is None:
            raise ValueError("loss_function: expected one of ('l1', 'l2', 'smooth_l1'), got None")
        loss_function, reduction = check_loss_args(loss_function, reduction, "auto", delay_value=delay_value,
                                                 torchrl_compat=torchrl_compat)
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.delay_value = bool(delay_value)
        self.torchrl_compat = bool(torchrl_compat)
        tk = self.tensor_keys
        net = as_qvalue_actor(value_network, action_space, in_keys=["observation"], action_value_key=tk.action_value,
                              action_key=tk.action, chosen_action_value_key=tk.value)
        self.action_space = find_action_space(net, action_space, type(self).__name__)
        if self.action_space not in ("one_hot", "categorical"):
            raise ValueError(f"action_space: DiscreteCQLLoss supports 'one_hot' and 'categorical', got "
                             f"{self.action_space!r}")
        self.convert_to_functional(net, "value_network", create_target_params=self.delay_value)

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        net_in = self._networks["value_network"].in_keys
        return [tk.action, ("next", tk.reward), ("next", tk.done), ("next", tk.terminated), *net_in,
                *[("next",) + _data.unravel_key(k) for k in net_in]]

    def _next_value(self, next_batch: Mapping) -> Any:
        """``max_a Q(s', a)`` ``[*B, 1]`` without tape: the target network (paper) or the online one (TorchRL, via
        the Q-value head's ``chosen_action_value`` when it writes one)."""
        tk = self.tensor_keys
        net = self._networks["value_network"]
        if self.torchrl_compat:
            online = self._params["value_network"]
            value = _data.get_or(net.apply(online, next_batch), tk.value, None)
            if value is not None:
                return value
            q_next = action_values(net, online, next_batch, tk.action_value)
        else:
            q_next = action_values(net, self._target_tree("value_network"), next_batch, tk.action_value)
        return _trailing(F.greedy_action_value(q_next, self.action_space))

    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        net = self._networks["value_network"]
        q = action_values(net, params["value_network"], batch, tk.action_value)
        action = _data.get(batch, tk.action, what="action")
        name = _data.key_str(tk.action)
        pred = F.chosen_action_value(q, action, self.action_space, name=name)
        batch_shape = tuple(pred.shape)
        check_transition(batch, tk, batch_shape, steps_key=_steps_key(self.value_estimator))
        next_value = stop_gradient(self._next_value(step_mdp(batch, net.in_keys)))
        check_next_value(next_value, batch_shape + (1,), net.in_keys, "next action value")
        target = self.value_estimator.value_estimate(batch, next_value=next_value)
        target = stop_gradient(namespace_of(target).squeeze(target, axis=-1))
        diff = stop_gradient(pred) - target
        td_error = _trailing(diff * diff)
        self._write_priority(batch, td_error)
        per = distance_loss(pred, target, self.loss_function)
        if self.torchrl_compat:
            per = per * 0.5
        loss_qvalue = self._reduce_loss(per, batch)
        loss_cql = self._reduce_loss(discrete_cql_gap(q, action, self.action_space, name=name), batch)
        xp = namespace_of(td_error)
        sq = stop_gradient(q)
        return {"loss_qvalue": loss_qvalue, "loss_cql": loss_cql, "td_error": xp.mean(td_error, axis=0),
                "pred_value": namespace_of(sq).mean(sq), "target_value": xp.mean(target)}

