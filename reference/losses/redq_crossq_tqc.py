"""REDQ, CrossQ and TQC losses and the batch-normalisation layers, one sample / one channel at a time, float64
(network-free: network outputs in; the norms take the pre-activations).

Chen et al. 2021 (REDQ, arXiv:2101.05982), Bhatt et al. 2024 (CrossQ), Kuznetsov et al. 2020 (TQC,
arXiv:2005.04269), Ioffe 2017 (Batch Renormalization, arXiv:1702.03275). TorchRL 0.14.1's conventions: distances
without 1/2, TQC's critic loss summed over critics, temperature losses in log alpha (REDQ: see ``torchrl_compat``).
"""

from __future__ import annotations

import math

import numpy as np

from .._util import as_f64
from .common import distance_scalar, reduce

__all__ = ["batch_norm", "batch_renorm", "redq_loss", "crossq_loss", "tqc_loss"]


def batch_norm(x, weight, bias, rm, rv, nbt, *, train, momentum=0.1, eps=1e-5):
    """torch.nn.BatchNorm1d on ``x [B, C]`` -> ``(y, (rm, rv, nbt))``."""
    x = as_f64("x", x)
    b, c = x.shape
    y = np.empty_like(x)
    nrm, nrv = np.array(rm, dtype=float), np.array(rv, dtype=float)
    for j in range(c):
        col = [float(v) for v in x[:, j]]
        if train:
            mu = sum(col) / b
            var = sum((v - mu) ** 2 for v in col) / b
            f = momentum if momentum is not None else 1.0 / (nbt + 1)
            nrm[j] = (1 - f) * rm[j] + f * mu
            nrv[j] = (1 - f) * rv[j] + f * var * b / (b - 1)
        else:
            mu, var = float(rm[j]), float(rv[j])
        for i in range(b):
            y[i, j] = (col[i] - mu) / math.sqrt(var + eps) * weight[j] + bias[j]
    return y, (nrm, nrv, nbt + 1 if train else nbt)


def batch_renorm(x, weight, bias, rm, rv, nbt, *, train, momentum=0.01, eps=1e-5, max_r=3.0, max_d=5.0,
                 warmup_steps=10000, smooth=False, torchrl_compat=False):
    """Batch renormalisation (TorchRL's BatchRenorm1d; the warm-up factor clamped to 1 unless torchrl_compat)."""
    x = as_f64("x", x)
    b, c = x.shape
    y = np.empty_like(x)
    nrm, nrv = np.array(rm, dtype=float), np.array(rv, dtype=float)
    if warmup_steps > 0:
        f = nbt / warmup_steps if smooth else float(nbt // warmup_steps)
        f = f if torchrl_compat else min(f, 1.0)
    for j in range(c):
        col = [float(v) for v in x[:, j]]
        sigma = math.sqrt(rv[j] + eps)
        if not train:
            for i in range(b):
                y[i, j] = (col[i] - rm[j]) / sigma * weight[j] + bias[j]
            continue
        mu = sum(col) / b
        var = sum((v - mu) ** 2 for v in col) / b
        s = math.sqrt(var + eps)
        r = min(max(s / sigma, 1 / max_r), max_r)
        d = min(max((mu - rm[j]) / sigma, -max_d), max_d)
        if warmup_steps > 0:
            r, d = 1 + (r - 1) * f, d * f
        for i in range(b):
            y[i, j] = ((col[i] - mu) / s * r + d) * weight[j] + bias[j]
        nrm[j] = rm[j] + momentum * (mu - rm[j])
        nrv[j] = rv[j] + momentum * (var * b / (b - 1) - rv[j])
    return y, (nrm, nrv, nbt + 1 if train else nbt)


def _clamp(la, lo, hi):
    if lo is not None:
        la = max(la, lo)
    if hi is not None:
        la = min(la, hi)
    return la


def redq_loss(q_actor, log_prob, q_next_sub, next_log_prob, q_pred, reward, terminated, *, gamma, log_alpha,
              target_entropy, min_alpha=None, max_alpha=None, loss_function="smooth_l1", reduction="mean",
              torchrl_compat=False):
    """REDQ -> dict of the losses (reduced), ``td_error``, ``target_value``, ``next.state_value``, alpha, entropy.

    ``q_actor``, ``q_pred`` ``[N, B]``; ``q_next_sub`` ``[M, B]`` (the sub-sampled target critics at (s', a'));
    ``log_prob``, ``next_log_prob`` ``[B]``.
    """
    qa, qp, qn = as_f64("q_actor", q_actor), as_f64("q_pred", q_pred), as_f64("q_next_sub", q_next_sub)
    lp, nlp = as_f64("log_prob", log_prob).reshape(-1), as_f64("next_log_prob", next_log_prob).reshape(-1)
    r = as_f64("reward", reward).reshape(-1)
    tm = np.asarray(terminated).reshape(-1).astype(bool)
    n, b = qp.shape
    lo = math.log(min_alpha) if min_alpha else None
    hi = math.log(max_alpha) if max_alpha else None
    la = _clamp(float(log_alpha), lo, hi)
    alpha = math.exp(la)
    actor, qloss = np.empty((n, b)), np.empty((n, b))
    v, y, td = np.empty(b), np.empty(b), np.empty(b)
    for j in range(b):
        v[j] = min(float(qn[i, j]) - alpha * nlp[j] for i in range(qn.shape[0]))
        y[j] = r[j] if tm[j] else r[j] + gamma * v[j]
        td[j] = max((float(qp[i, j]) - y[j]) ** 2 for i in range(n))
        for i in range(n):
            actor[i, j] = -(float(qa[i, j]) - alpha * lp[j])
            qloss[i, j] = distance_scalar(float(qp[i, j]), y[j], loss_function)
    if torchrl_compat:
        both = np.stack([lp, nlp])
        aloss = np.array([[0.0 if target_entropy is None else -alpha * (float(both[k, j]) + target_entropy)
                           for j in range(b)] for k in range(2)])
    else:
        aloss = np.array([0.0 if target_entropy is None else -la * (lp[j] + target_entropy) for j in range(b)])
    return {"loss_actor": reduce(actor, reduction), "loss_qvalue": reduce(qloss, reduction),
            "loss_alpha": reduce(aloss, reduction), "alpha": alpha, "entropy": -float(np.mean(np.stack([lp, nlp]))),
            "td_error": td, "target_value": y, "next.state_value": v}


def crossq_loss(q_pred, q_next, next_log_prob, q_actor, log_prob, reward, terminated, *, gamma, log_alpha,
                target_entropy, loss_function="smooth_l1", reduction="mean"):
    """CrossQ from the critic outputs (``q_pred``/``q_next`` from the joint training-statistics call, ``q_actor``
    from the evaluation-statistics call), ``[N, B]``."""
    qp, qn, qa = as_f64("q_pred", q_pred), as_f64("q_next", q_next), as_f64("q_actor", q_actor)
    lp, nlp = as_f64("log_prob", log_prob).reshape(-1), as_f64("next_log_prob", next_log_prob).reshape(-1)
    r = as_f64("reward", reward).reshape(-1)
    tm = np.asarray(terminated).reshape(-1).astype(bool)
    n, b = qp.shape
    alpha = math.exp(float(log_alpha))
    ql, al, aa, td = np.empty(b), np.empty(b), np.empty(b), np.empty(b)
    for j in range(b):
        v = min(float(qn[i, j]) for i in range(n)) - alpha * nlp[j]
        y = r[j] if tm[j] else r[j] + gamma * v
        ql[j] = sum(distance_scalar(float(qp[i, j]), y, loss_function) for i in range(n))
        td[j] = max(abs(float(qp[i, j]) - y) for i in range(n))
        al[j] = alpha * lp[j] - min(float(qa[i, j]) for i in range(n))
        aa[j] = 0.0 if target_entropy is None else -float(log_alpha) * (lp[j] + target_entropy)
    return {"loss_actor": reduce(al, reduction), "loss_qvalue": reduce(ql, reduction),
            "loss_alpha": reduce(aa, reduction), "alpha": alpha, "entropy": -float(np.mean(lp)), "td_error": td,
            "log_prob": lp}


def tqc_loss(z_pred, z_next, next_log_prob, z_actor, log_prob, reward, terminated, *, gamma, log_alpha,
             target_entropy, top_quantiles_to_drop, reduction="mean"):
    """TQC from quantiles ``[N, B, M]`` (``z_next``: the target critics at (s', a'))."""
    zp, zn, za = as_f64("z_pred", z_pred), as_f64("z_next", z_next), as_f64("z_actor", z_actor)
    lp, nlp = as_f64("log_prob", log_prob).reshape(-1), as_f64("next_log_prob", next_log_prob).reshape(-1)
    r = as_f64("reward", reward).reshape(-1)
    tm = np.asarray(terminated).reshape(-1).astype(bool)
    n, b, m = zp.shape
    keep = n * m - top_quantiles_to_drop * n
    alpha = math.exp(float(log_alpha))
    ql, al, aa, td = np.empty(b), np.empty(b), np.empty(b), np.empty(b)
    for j in range(b):
        atoms = sorted(float(zn[i, j, k]) for i in range(n) for k in range(m))[:keep]
        ys = [r[j] if tm[j] else r[j] + gamma * (z - alpha * nlp[j]) for z in atoms]
        per, tds = [], []
        for i in range(n):
            acc, acc_abs = 0.0, 0.0
            for q in range(m):
                tau = (q + 0.5) / m
                for y in ys:
                    dlt = y - float(zp[i, j, q])
                    h = 0.5 * dlt * dlt if abs(dlt) <= 1 else abs(dlt) - 0.5
                    acc += abs(tau - (1.0 if dlt < 0 else 0.0)) * h
                    acc_abs += abs(dlt)
            per.append(acc / (m * keep))
            tds.append(acc_abs / (m * keep))
        ql[j], td[j] = sum(per), max(tds)
        al[j] = alpha * lp[j] - sum(float(za[i, j, q]) for i in range(n) for q in range(m)) / (n * m)
        aa[j] = 0.0 if target_entropy is None else -float(log_alpha) * (lp[j] + target_entropy)
    return {"loss_actor": reduce(al, reduction), "loss_qvalue": reduce(ql, reduction),
            "loss_alpha": reduce(aa, reduction), "alpha": alpha, "entropy": -float(np.mean(lp)), "td_error": td}
