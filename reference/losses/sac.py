"""Soft Actor-Critic losses, one sample at a time (network-free: network outputs in).

Haarnoja et al. 2018 (SAC v1, arXiv:1801.01290), Haarnoja et al. 2018b (v2, learned temperature,
arXiv:1812.05905), Christodoulou 2019 (discrete SAC, arXiv:1910.07207). TorchRL 0.14.1's conventions (catalog 5.4,
5.5): distances without 1/2, critic losses summed over the N critics, the temperature loss in log alpha.

Per sample b (alpha = exp(log_alpha_c), log_alpha_c = log_alpha clamped to the TorchRL bounds; H = target entropy):

SAC v2::

    V'_b        = min_i [Qtarget_i(s'_b, a'_b) - alpha logpi(a'_b | s'_b)]
    y_b         = r_b + gamma (1 - terminated_b) V'_b
    loss_qvalue = reduce(sum_i dist(Q_i(s_b, a_b), y_b))        td_error_b = max_i |Q_i - y_b|
    loss_actor  = reduce(alpha logpi(a~_b | s_b) - min_i Q_i(s_b, a~_b))
    loss_alpha  = reduce(-log_alpha_c (logpi(a~_b | s_b) + H))
    entropy     = -mean_b logpi(a~_b | s_b)

``skip_done_states``: a skipped row (terminated; TorchRL: done) uses the action 0 and log-prob 0 at s'.

SAC v1::

    y_b         = r_b + gamma (1 - terminated_b) Vtarget(s'_b)
    loss_qvalue = reduce(sum_i dist(Q_i(s_b, a_b), y_b))        td_error_b = max_i |Q_i - y_b|
        TorchRL (torchrl_compat): critic i only on chunk i of the batch, td_error_b = (Q_{i(b)} - y_b)^2
    loss_value  = reduce(dist(V(s_b), min_i Q_i(s_b, a^_b) - alpha logpi(a^_b | s_b)))
        with the online critics (paper, softlearning), TorchRL: the target critics

DiscreteSAC (p = softmax(logits))::

    V'_b        = sum_a p'(a) [min_i Qtarget_i(s'_b, a) - alpha logp'(a)],   logp' = log(p' or 1e-8 where p' = 0)
    loss_qvalue = reduce(sum_i dist(Q_i(s_b, a_b), y_b))        td_error_b = max_i |Q_i - y_b|
    loss_actor  = reduce(sum_a p(a) [alpha log p(a) - min_i Q_i(s_b, a)])
    loss_alpha  = reduce(-log_alpha_c (sum_a p log p + H))
    entropy     = mean_b(-sum_a p log p)

``skip_done_states`` (discrete): V'_b = 0 for skipped rows, and logp' = the normalised logits.
"""

from __future__ import annotations

import math

import numpy as np

from .._util import as_f64
from .common import batch_vector, chosen_action_value, distance_scalar, reduce

__all__ = ["clamp_log_alpha", "auto_target_entropy", "sac_v2_loss", "sac_v1_loss", "discrete_sac_loss"]


def clamp_log_alpha(log_alpha: float, min_alpha=None, max_alpha=None) -> float:
    """TorchRL's bounds: only ``min_alpha`` -> upper bound 1e9; only ``max_alpha`` -> no lower bound; 0 = not given."""
    if bool(min_alpha) != bool(max_alpha):
        min_alpha = min_alpha if min_alpha else 0.0
        max_alpha = max_alpha if max_alpha else 1e9
    la = float(log_alpha)
    if min_alpha:
        la = max(la, math.log(min_alpha))
    if max_alpha:
        la = min(la, math.log(max_alpha))
    return la


def auto_target_entropy(spec_shape, torchrl_compat: bool = False) -> float:
    """``-dim(A)``: the last dimension of the spec (paper); TorchRL counts every dimension of the spec."""
    shape = tuple(int(s) for s in spec_shape)
    n = 1
    for s in (shape if torchrl_compat else shape[-1:]):
        n *= s
    return -float(n)


def _ens(name, x, batch_shape=None):
    q = as_f64(name, x)
    if q.ndim < 1 or (batch_shape is not None and q.shape[1:] != tuple(batch_shape)):
        raise ValueError(f"{name}: expected shape [N, *B], got {q.shape}")
    return q


def _td_target(r, term, gamma, v_next):
    return r if term else r + gamma * v_next


def _critics(qp, y, loss_function, chunked):
    """Per-sample critic loss and td_error (sum over critics, or TorchRL's chunks)."""
    n, batch_shape = qp.shape[0], qp.shape[1:]
    loss = np.empty(batch_shape)
    td = np.empty(batch_shape)
    if chunked:
        if batch_shape[0] % n:
            raise RuntimeError("batch size not divisible by the number of critics")
        size = batch_shape[0] // n
    for b in np.ndindex(*batch_shape):
        if chunked:
            i = b[0] // size
            loss[b] = distance_scalar(float(qp[(i,) + b]), float(y[b]), loss_function)
            td[b] = (float(qp[(i,) + b]) - float(y[b])) ** 2
        else:
            loss[b] = sum(distance_scalar(float(qp[(i,) + b]), float(y[b]), loss_function) for i in range(n))
            td[b] = max(abs(float(qp[(i,) + b]) - float(y[b])) for i in range(n))
    return loss, td


def _actor_alpha(q_actor, log_prob, alpha, la, target_entropy, batch_shape):
    n = q_actor.shape[0]
    actor = np.empty(batch_shape)
    alpha_l = np.empty(batch_shape)
    for b in np.ndindex(*batch_shape):
        m = min(float(q_actor[(i,) + b]) for i in range(n))
        actor[b] = alpha * float(log_prob[b]) - m
        alpha_l[b] = 0.0 if target_entropy is None else -la * (float(log_prob[b]) + target_entropy)
    return actor, alpha_l


def _finish(out, reduction, weights, scalars):
    red = {k: (reduce(v, reduction, weights=weights)) for k, v in out.items()}
    if reduction != "none" or scalars:
        red.update(scalars)
    return red


def sac_v2_loss(q_pred, q_next, next_log_prob, q_actor, log_prob, reward, terminated, *, gamma, log_alpha,
                target_entropy, min_alpha=None, max_alpha=None, loss_function="smooth_l1", reduction="mean",
                weights=None, skip_done_states=False, done=None, q_next_zero=None, torchrl_compat=False,
                keep_scalars=True):
    """SAC v2 -> dict ``loss_actor, loss_qvalue, loss_alpha, alpha, entropy, td_error``.

    ``q_pred`` ``[N, *B]`` Q_i(s, a_data); ``q_next`` ``[N, *B]`` target Q_i(s', a'); ``next_log_prob`` ``[*B]``;
    ``q_actor`` ``[N, *B]`` Q_i(s, a~); ``log_prob`` ``[*B]`` logpi(a~|s); ``q_next_zero`` ``[N, *B]`` target
    Q_i(s', 0) (used for skipped rows with ``skip_done_states``).
    """
    qp = _ens("q_pred", q_pred)
    batch_shape = qp.shape[1:]
    qn, qa = _ens("q_next", q_next, batch_shape), _ens("q_actor", q_actor, batch_shape)
    nlp, lp = batch_vector("next_log_prob", next_log_prob, batch_shape), batch_vector("log_prob", log_prob, batch_shape)
    r = batch_vector("reward", reward, batch_shape)
    tm = batch_vector("terminated", terminated, batch_shape, kind="bool")
    skip = None
    if skip_done_states:
        skip = batch_vector("done", done, batch_shape, kind="bool") if torchrl_compat else tm
        qz = _ens("q_next_zero", q_next_zero, batch_shape)
    la = clamp_log_alpha(log_alpha, min_alpha, max_alpha)
    alpha = math.exp(la)
    n = qp.shape[0]
    y = np.empty(batch_shape)
    for b in np.ndindex(*batch_shape):
        if skip is not None and skip[b]:
            v = min(float(qz[(i,) + b]) for i in range(n))
        else:
            v = min(float(qn[(i,) + b]) - alpha * float(nlp[b]) for i in range(n))
        y[b] = _td_target(float(r[b]), bool(tm[b]), gamma, v)
    ql, td = _critics(qp, y, loss_function, False)
    actor, alpha_l = _actor_alpha(qa, lp, alpha, la, target_entropy, batch_shape)
    out = _finish({"loss_actor": actor, "loss_qvalue": ql, "loss_alpha": alpha_l}, reduction, weights,
                  {"alpha": alpha, "entropy": -float(np.mean(lp))} if keep_scalars else {})
    out["td_error"] = td
    return out


def sac_v1_loss(q_pred, next_value, value, q_hat_online, q_hat_target, log_prob_hat, q_actor, log_prob, reward,
                terminated, *, gamma, log_alpha, target_entropy, min_alpha=None, max_alpha=None,
                loss_function="smooth_l1", reduction="mean", weights=None, torchrl_compat=False, keep_scalars=True):
    """SAC v1 -> dict ``loss_actor, loss_qvalue, loss_alpha, loss_value, alpha, entropy, td_error``.

    ``next_value`` ``[*B]`` Vtarget(s'); ``value`` ``[*B]`` V(s); ``q_hat_*`` ``[N, *B]`` online / target
    Q_i(s, a^) with ``a^`` drawn from the target actor, ``log_prob_hat`` its log-prob.
    """
    qp = _ens("q_pred", q_pred)
    batch_shape = qp.shape[1:]
    nv, v = batch_vector("next_value", next_value, batch_shape), batch_vector("value", value, batch_shape)
    qh = _ens("q_hat_target" if torchrl_compat else "q_hat_online", q_hat_target if torchrl_compat else q_hat_online,
              batch_shape)
    lph, lp = batch_vector("log_prob_hat", log_prob_hat, batch_shape), batch_vector("log_prob", log_prob, batch_shape)
    qa = _ens("q_actor", q_actor, batch_shape)
    r = batch_vector("reward", reward, batch_shape)
    tm = batch_vector("terminated", terminated, batch_shape, kind="bool")
    la = clamp_log_alpha(log_alpha, min_alpha, max_alpha)
    alpha = math.exp(la)
    n = qp.shape[0]
    y = np.empty(batch_shape)
    vl = np.empty(batch_shape)
    for b in np.ndindex(*batch_shape):
        y[b] = _td_target(float(r[b]), bool(tm[b]), gamma, float(nv[b]))
        vt = min(float(qh[(i,) + b]) for i in range(n)) - alpha * float(lph[b])
        vl[b] = distance_scalar(float(v[b]), vt, loss_function)
    ql, td = _critics(qp, y, loss_function, torchrl_compat)
    actor, alpha_l = _actor_alpha(qa, lp, alpha, la, target_entropy, batch_shape)
    out = _finish({"loss_actor": actor, "loss_qvalue": ql, "loss_alpha": alpha_l, "loss_value": vl}, reduction,
                  weights, {"alpha": alpha, "entropy": -float(np.mean(lp))} if keep_scalars else {})
    out["td_error"] = td
    return out


def _log_softmax_row(z):
    z = [float(x) for x in z]
    m = max(z)
    s = math.log(sum(math.exp(x - m) for x in z)) + m
    return [x - s for x in z]


def discrete_sac_loss(q_all, action, q_next, next_logits, logits, reward, terminated, *, gamma, log_alpha,
                      target_entropy, min_alpha=None, max_alpha=None, loss_function="smooth_l1", reduction="mean",
                      weights=None, action_space="categorical", skip_done_states=False, done=None,
                      torchrl_compat=False, keep_scalars=True):
    """DiscreteSAC -> dict ``loss_actor, loss_qvalue, loss_alpha, alpha, entropy, td_error``.

    ``q_all`` ``[N, *B, K]`` online Q_i(s, .); ``q_next`` ``[N, *B, K]`` target Q_i(s', .); ``next_logits``,
    ``logits`` ``[*B, K]`` the policy's logits at s' and s.
    """
    qa = as_f64("q_all", q_all)
    n, batch_shape, k = qa.shape[0], qa.shape[1:-1], qa.shape[-1]
    qn = as_f64("q_next", q_next)
    nl, lg = as_f64("next_logits", next_logits), as_f64("logits", logits)
    r = batch_vector("reward", reward, batch_shape)
    tm = batch_vector("terminated", terminated, batch_shape, kind="bool")
    skip = None
    if skip_done_states:
        skip = batch_vector("done", done, batch_shape, kind="bool") if torchrl_compat else tm
    la = clamp_log_alpha(log_alpha, min_alpha, max_alpha)
    alpha = math.exp(la)
    qp = np.stack([chosen_action_value(qa[i], action, action_space) for i in range(n)])
    y = np.empty(batch_shape)
    actor = np.empty(batch_shape)
    alpha_l = np.empty(batch_shape)
    ent = np.empty(batch_shape)
    for b in np.ndindex(*batch_shape):
        nlsm = _log_softmax_row(nl[b])
        p_next = [math.exp(x) for x in nlsm]
        if skip_done_states:
            lp_next = nlsm
        else:
            lp_next = [math.log(p if p != 0.0 else 1e-8) for p in p_next]
        if skip is not None and skip[b]:
            v = 0.0
        else:
            v = sum(p_next[a] * (min(float(qn[(i,) + b + (a,)]) for i in range(n)) - alpha * lp_next[a])
                    for a in range(k))
        y[b] = _td_target(float(r[b]), bool(tm[b]), gamma, v)
        lsm = _log_softmax_row(lg[b])
        p = [math.exp(x) for x in lsm]
        actor[b] = sum(p[a] * (alpha * lsm[a] - min(float(qa[(i,) + b + (a,)]) for i in range(n))) for a in range(k))
        neg_h = sum(p[a] * lsm[a] for a in range(k))
        alpha_l[b] = 0.0 if target_entropy is None else -la * (neg_h + target_entropy)
        ent[b] = -neg_h
    ql, td = _critics(qp, y, loss_function, False)
    out = _finish({"loss_actor": actor, "loss_qvalue": ql, "loss_alpha": alpha_l}, reduction, weights,
                  {"alpha": alpha, "entropy": float(np.mean(ent))} if keep_scalars else {})
    out["td_error"] = td
    return out
