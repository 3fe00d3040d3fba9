"""CQL (continuous and discrete) and behaviour cloning, one sample at a time (network-free: network outputs in).

Kumar, Zhou, Tucker & Levine 2020, "Conservative Q-Learning for Offline Reinforcement Learning" (arXiv:2006.04779),
CQL(H) with the importance-sampled log-sum-exp of the authors' code (``min_q_version=3``); TorchRL 0.14.1's
conventions where they are not defects (distances without 1/2, critic losses summed over the two critics, the
temperature loss in log alpha).

Continuous CQL, per state b, K proposals of each kind, A = action dimension, T = temperature, w = min_q_weight::

    V'_b   = min_i Qtgt_i(s'_b, a'_b) [- alpha logpi(a'_b|s'_b) unless deterministic_backup]
             max_q_backup: min_i max_k Qtgt_i(s'_b, a'_bk)
    y_b    = r_b + gamma (1 - terminated_b) V'_b
    loss_qvalue = reduce(sum_i dist(Q_i(s_b, a_b), y_b));   td_error_b = max_i (Q_i - y_b)^2
    c_ibj  = [Q_i(rand_bk) - A log(1/2) | Q_i(new_bk) - logpi(new_bk) | Q_i(cur_bk) - logpi(cur_bk)]
    paper:  gap_ib = T w log sum_{all 3K j} exp(c_ibj / T) - w Q_i(s_b, a_b)
    TorchRL (compat): lse_ibk = T w log sum_{3 types} exp(c / T) per (b, k);
            gap_ib = mean_{b', k} lse_ib'k - w Q_i(s_b, a_b)
    loss_cql: paper = reduce(sum_i alpha' (gap_ib - tau)) with Lagrange (alpha' a constant), reduce(sum_i gap_ib)
              otherwise; TorchRL = reduce(sum_i gap_ib) always
    loss_alpha_prime = -1/2 alpha' sum_i (mean_b gap_ib - tau),   alpha' = min(exp(log_alpha'), 1e6)
    loss_actor_bc = reduce(alpha logpi(a_bc|s) - logpi(a_data|s))
    loss_actor    = reduce(alpha logpi(a~|s) - min_i Q_i(s, a~));   loss_alpha = reduce(-log_alpha_c (logpi(a~) + H))

The caller evaluates the critics: whether ``q_new`` is scored at s (paper) or s' (TorchRL) is its choice.

Discrete CQL::

    y_b = r_b + gamma (1 - terminated_b) max_a Q'(s'_b, a)   (Q' = the target net; TorchRL: the online net)
    loss_qvalue = reduce(dist(Q(s_b, a_b), y_b))  (TorchRL: 0.5 dist)
    loss_cql    = reduce(lse_a Q(s_b, a) - Q(s_b, a_b))

BC: elementwise ``|p-e|``, ``(p-e)^2``, Huber, cross-entropy ``-log softmax(p)[e]`` or a given per-element loss,
then the masked reduction.
"""

from __future__ import annotations

import math

import numpy as np

from .._util import as_f64, log_softmax_row
from .common import batch_vector, chosen_action_value, distance_scalar, reduce
from .sac import clamp_log_alpha

__all__ = ["cql_loss", "discrete_cql_loss", "bc_elementwise", "bc_loss"]


def _lse(values, t):
    m = max(v / t for v in values)
    return t * (m + math.log(sum(math.exp(v / t - m) for v in values)))


def cql_loss(q_pred, q_next, next_log_prob, q_rand, q_cur, q_new, lp_cur, lp_new, lp_bc, bc_log_prob, q_actor, lp_pi,
             reward, terminated, *, gamma, log_alpha, target_entropy, action_dim, min_alpha=None, max_alpha=None,
             temperature=1.0, min_q_weight=1.0, max_q_backup=False, deterministic_backup=True, with_lagrange=False,
             log_alpha_prime=0.0, lagrange_thresh=0.0, loss_function="smooth_l1", reduction="mean", mask=None,
             torchrl_compat=False, keep_scalars=True):
    """-> dict of the CQLLoss outputs plus ``td_error``.

    ``q_pred`` ``[N, B]`` Q_i(s, a_data); ``q_next`` ``[N, B]`` target Q_i(s', a') or, with ``max_q_backup``,
    ``[N, B, K]`` at the K backup actions; ``q_rand``/``q_cur``/``q_new`` ``[N, B, K]``; ``lp_cur``/``lp_new``
    ``[B, K]``; ``next_log_prob``, ``lp_bc``, ``bc_log_prob``, ``lp_pi`` ``[B]``; ``q_actor`` ``[N, B]`` Q_i(s, a~).
    ``mask`` ``[B]`` (validity, as TorchRL's ``("collector", "mask")``).
    """
    qp = as_f64("q_pred", q_pred)
    n, bsz = qp.shape
    qn = as_f64("q_next", q_next)
    qr, qc, qw = as_f64("q_rand", q_rand), as_f64("q_cur", q_cur), as_f64("q_new", q_new)
    lc, lw = as_f64("lp_cur", lp_cur), as_f64("lp_new", lp_new)
    k = qr.shape[-1]
    r = batch_vector("reward", reward, (bsz,))
    tm = batch_vector("terminated", terminated, (bsz,), kind="bool")
    nlp = batch_vector("next_log_prob", next_log_prob, (bsz,))
    la = clamp_log_alpha(log_alpha, min_alpha, max_alpha)
    alpha = math.exp(la)
    y = np.empty(bsz)
    for b in range(bsz):
        if max_q_backup:
            v = min(max(float(qn[i, b, j]) for j in range(k)) for i in range(n))
        else:
            v = min(float(qn[i, b]) for i in range(n))
            if not deterministic_backup:
                v -= alpha * float(nlp[b])
        y[b] = float(r[b]) if tm[b] else float(r[b]) + gamma * v
    ql = np.array([sum(distance_scalar(float(qp[i, b]), y[b], loss_function) for i in range(n)) for b in range(bsz)])
    td = np.array([max((float(qp[i, b]) - y[b]) ** 2 for i in range(n)) for b in range(bsz)])
    density = action_dim * math.log(0.5)
    t, w = float(temperature), float(min_q_weight)

    def cat(i, b, j):
        return [float(qr[i, b, j]) - density, float(qw[i, b, j]) - float(lw[b, j]),
                float(qc[i, b, j]) - float(lc[b, j])]

    gap = np.empty((n, bsz))
    for i in range(n):
        if torchrl_compat:
            allmean = sum(w * _lse(cat(i, b, j), t) for b in range(bsz) for j in range(k)) / (bsz * k)
            for b in range(bsz):
                gap[i, b] = allmean - w * float(qp[i, b])
        else:
            for b in range(bsz):
                vals = [v for j in range(k) for v in cat(i, b, j)]
                gap[i, b] = w * _lse(vals, t) - w * float(qp[i, b])
    alpha_prime = min(math.exp(log_alpha_prime), 1e6)
    tau = float(lagrange_thresh)
    if with_lagrange and not torchrl_compat:
        cql = np.array([sum(alpha_prime * (gap[i, b] - tau) for i in range(n)) for b in range(bsz)])
    else:
        cql = gap.sum(0)
    lp_bc, bcl, lp = (batch_vector(nm, x, (bsz,)) for nm, x in
                      (("lp_bc", lp_bc), ("bc_log_prob", bc_log_prob), ("lp_pi", lp_pi)))
    qa = as_f64("q_actor", q_actor)
    bc = np.array([alpha * float(lp_bc[b]) - float(bcl[b]) for b in range(bsz)])
    actor = np.array([alpha * float(lp[b]) - min(float(qa[i, b]) for i in range(n)) for b in range(bsz)])
    alpha_l = np.array([0.0 if target_entropy is None else -la * (float(lp[b]) + target_entropy) for b in range(bsz)])
    out = {name: reduce(v, reduction, mask=mask) for name, v in
           (("loss_actor", actor), ("loss_actor_bc", bc), ("loss_qvalue", ql), ("loss_cql", cql),
            ("loss_alpha", alpha_l))}
    if reduction != "none" or keep_scalars:
        out["alpha"] = alpha
        out["entropy"] = -float(np.mean(lp))
    if with_lagrange:
        c = [float(reduce(gap[i], "mean", mask=mask)) for i in range(n)]
        out["loss_alpha_prime"] = -0.5 * sum(alpha_prime * (ci - tau) for ci in c)
    out["td_error"] = td
    return out


def discrete_cql_loss(q_all, action, q_next, reward, terminated, *, gamma, loss_function="l2", reduction="mean",
                      action_space="categorical", torchrl_compat=False):
    """-> dict ``loss_qvalue, loss_cql, td_error ([B, 1]), td_error_mean, pred_value, target_value``.

    ``q_all`` ``[B, nA]`` online Q(s, .); ``q_next`` ``[B, nA]`` Q'(s', .) (the target net, or the online net for
    TorchRL's numbers -- the caller's choice).
    """
    q = as_f64("q_all", q_all)
    bsz, na = q.shape
    qn = as_f64("q_next", q_next)
    r = batch_vector("reward", reward, (bsz,))
    tm = batch_vector("terminated", terminated, (bsz,), kind="bool")
    pred = chosen_action_value(q, action, action_space)
    y = np.array([float(r[b]) if tm[b] else float(r[b]) + gamma * max(float(v) for v in qn[b]) for b in range(bsz)])
    scale = 0.5 if torchrl_compat else 1.0
    ql = np.array([scale * distance_scalar(float(pred[b]), y[b], loss_function) for b in range(bsz)])
    gap = np.empty(bsz)
    for b in range(bsz):
        m = max(float(v) for v in q[b])
        gap[b] = m + math.log(sum(math.exp(float(v) - m) for v in q[b])) - float(pred[b])
    td = ((pred - y) ** 2)[:, None]
    return {"loss_qvalue": reduce(ql, reduction), "loss_cql": reduce(gap, reduction), "td_error": td,
            "td_error_mean": td.mean(0), "pred_value": float(q.mean()), "target_value": float(y.mean())}


def bc_elementwise(pred, expert, loss_function):
    """Elementwise BC loss: ``"l1"``, ``"l2"``/``"mse"``, ``"smooth_l1"`` (same shapes) or ``"cross_entropy"``
    (``pred`` logits ``[*B, C]``, ``expert`` class ids ``[*B]`` or ``[*B, 1]``)."""
    p = as_f64("pred", pred)
    if loss_function == "cross_entropy":
        e = np.asarray(expert)
        if e.shape == p.shape[:-1] + (1,):
            e = e.reshape(p.shape[:-1])
        out = np.empty(p.shape[:-1])
        for b in np.ndindex(*p.shape[:-1]):
            out[b] = -log_softmax_row(p[b])[int(e[b])]
        return out
    e = as_f64("expert", expert)
    if e.shape != p.shape:
        raise ValueError(f"expert: expected shape {p.shape}, got {e.shape}")
    fn = "l2" if loss_function == "mse" else loss_function
    out = np.empty(p.shape)
    for i in np.ndindex(*p.shape):
        out[i] = distance_scalar(float(p[i]), float(e[i]), fn)
    return out


def bc_loss(elementwise_loss, reduction="mean", pad=None):
    """``loss_bc``: the elementwise loss reduced over its unpadded elements (``pad`` True = padded; a pad mask of
    fewer dimensions applies to every trailing element)."""
    l = as_f64("loss", elementwise_loss)
    mask = None
    if pad is not None:
        m = ~np.asarray(pad, dtype=bool)
        while m.ndim < l.ndim:
            m = m[..., None]
        mask = np.broadcast_to(m, l.shape)
    return reduce(l, reduction, mask=mask)
