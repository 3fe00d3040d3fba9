"""PPO losses one sample at a time, float64, from Schulman et al. 2017 (network-free: network outputs in).

"Proximal Policy Optimization Algorithms" (arXiv:1707.06347). Per sample i (TorchRL 0.14.1's conventions for the
coefficients and reductions, catalog 5.17-5.19)::

    r_i   = pi_theta(a_i|s_i) / mu(a_i|s_i) = exp(log_prob_i - old_log_prob_i)
    PPO   L_i = -r_i A_i                                                        (eq. 6, CPI surrogate)
    Clip  L_i = -min(r_i A_i, clip(r_i, 1 - eps_low, 1 + eps_high) A_i)         (eq. 7; clip on the ratio)
    KLPEN L_i = -(r_i A_i - beta KL_i)                                          (eq. 8)
    H     loss_entropy_i = -c_H H_i                                             (eq. 9)
    V     loss_critic_i = c_V max(d(y_i, V_i), d(y_i, V_old_i + clip(V_i - V_old_i, -c, c)))   (PPO2 value clip)
    advantage normalisation: (A_i - mean) / max(std_unbiased, 1e-6)

The clip is written on the ratio here (the paper); TorchRL clips the log-ratio to ``[log(1-e), log(1+e)]``, the same
function (``exp`` is monotone), so the two agree to round-off. ``d`` is ``l2`` (no 1/2), ``l1`` or ``smooth_l1``.
Never imports arrayrl.
"""

from __future__ import annotations

import math

import numpy as np

from .._util import as_f64
from .common import distance_scalar, reduce

__all__ = ["ratio_terms", "ppo_loss", "normal_kl", "categorical_kl", "normal_entropy_scalar",
           "categorical_entropy_row", "normalize", "adapt_beta"]


def _mean(xs) -> float:
    return sum(xs) / len(xs)


def normalize(advantage) -> np.ndarray:
    """``(A - mean) / max(unbiased std, 1e-6)`` over every element (one loop, two passes)."""
    a = as_f64("advantage", advantage)
    flat = [float(x) for x in a.reshape(-1)]
    n = len(flat)
    if n <= 1:
        return a.copy()
    m = _mean(flat)
    std = math.sqrt(sum((x - m) ** 2 for x in flat) / (n - 1))
    std = max(std, 1e-6)
    return np.array([(x - m) / std for x in flat]).reshape(a.shape)


def ratio_terms(log_prob: float, old_log_prob: float, advantage: float, kind: str, *, eps_low: float = 0.2,
                eps_high: float = 0.2, kl: float = 0.0, beta: float = 1.0) -> tuple[float, bool]:
    """``(L_i, clipped_i)`` of one sample (``kind`` = ``"ppo"``, ``"clip"`` or ``"klpen"``)."""
    r = math.exp(log_prob - old_log_prob)
    if kind == "ppo":
        return -r * advantage, False
    if kind == "klpen":
        return -(r * advantage - beta * kl), False
    lo, hi = 1.0 - eps_low, 1.0 + eps_high
    rc = lo if r < lo else (hi if r > hi else r)
    return -min(r * advantage, rc * advantage), (r < lo or r > hi)


def adapt_beta(beta: float, kls, dtarg: float, increment: float = 2.0, decrement: float = 0.5) -> float:
    """The paper's adaptive coefficient with TorchRL's thresholds (x increment above 1.5 dtarg, x decrement below
    dtarg / 1.5, on the mean KL)."""
    d = _mean([float(k) for k in np.asarray(kls).reshape(-1)])
    if d > 1.5 * dtarg:
        return beta * increment
    if d < dtarg / 1.5:
        return beta * decrement
    return beta


def ppo_loss(log_prob, old_log_prob, advantage, *, kind: str = "clip", eps_low: float = 0.2, eps_high: float = 0.2,
             kl=None, beta: float = 1.0, entropy=None, entropy_coeff: float = 0.01, value=None, old_value=None,
             value_target=None, critic_coeff: float = 1.0, loss_critic_type: str = "smooth_l1",
             clip_value: float | None = None, normalize_advantage: bool = False, reduction: str = "mean",
             mask=None) -> dict:
    """The PPO outputs from per-sample arrays of shape ``[*B]`` (``entropy``/``value``... optional).

    Returns a dict with ``loss_objective``, ``kl_approx``, and where applicable ``clip_fraction``, ``loss_entropy``,
    ``entropy``, ``loss_critic``, ``value_clip_fraction``, ``max_ratio``, ``mean_ratio`` (reductions by
    :func:`reference.losses.common.reduce`; the diagnostics are plain means over every sample, as TorchRL).
    """
    lp, old, adv = (as_f64(n, x) for n, x in (("log_prob", log_prob), ("old_log_prob", old_log_prob),
                                             ("advantage", advantage)))
    if not lp.shape == old.shape == adv.shape:
        raise ValueError(f"shapes differ: {lp.shape}, {old.shape}, {adv.shape}")
    if normalize_advantage:
        adv = normalize(adv)
    kl_arr = np.zeros(lp.shape) if kl is None else as_f64("kl", kl)
    obj = np.empty(lp.shape)
    clipped = []
    ratios = []
    for i in np.ndindex(*lp.shape):
        obj[i], c = ratio_terms(float(lp[i]), float(old[i]), float(adv[i]), kind, eps_low=eps_low,
                                eps_high=eps_high, kl=float(kl_arr[i]), beta=beta)
        clipped.append(1.0 if c else 0.0)
        ratios.append(math.exp(float(lp[i]) - float(old[i])))
    out = {"loss_objective": reduce(obj, reduction, mask=mask),
           "kl_approx": _mean([float(o) - float(p) for o, p in zip(old.reshape(-1), lp.reshape(-1))])}
    if kind == "clip":
        out.update(clip_fraction=_mean(clipped), max_ratio=max(ratios), mean_ratio=_mean(ratios))
    if entropy is not None:
        h = as_f64("entropy", entropy)
        out["entropy"] = _mean([float(x) for x in h.reshape(-1)])
        le = np.empty(h.shape)
        for i in np.ndindex(*h.shape):
            le[i] = -entropy_coeff * float(h[i])
        out["loss_entropy"] = reduce(le, reduction, mask=mask)
    if value is not None:
        v, y = as_f64("value", value), as_f64("value_target", value_target)
        lc = np.empty(v.shape)
        vclipped = []
        for i in np.ndindex(*v.shape):
            d = distance_scalar(float(y[i]), float(v[i]), loss_critic_type)
            if clip_value is not None:
                vo = float(as_f64("old_value", old_value)[i])
                delta = float(v[i]) - vo
                dc = min(max(delta, -clip_value), clip_value)
                vclipped.append(1.0 if dc != delta else 0.0)
                d = max(d, distance_scalar(float(y[i]), vo + dc, loss_critic_type))
            lc[i] = critic_coeff * d
        out["loss_critic"] = reduce(lc, reduction, mask=mask)
        if clip_value is not None:
            out["value_clip_fraction"] = _mean(vclipped)
    return out


def normal_kl(loc_p: float, scale_p: float, loc_q: float, scale_q: float) -> float:
    """``KL(N(m_p, s_p^2) || N(m_q, s_q^2)) = log(s_q/s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2``."""
    return math.log(scale_q / scale_p) + (scale_p ** 2 + (loc_p - loc_q) ** 2) / (2 * scale_q ** 2) - 0.5


def _log_softmax(row) -> list[float]:
    m = max(row)
    s = math.log(sum(math.exp(x - m) for x in row))
    return [x - m - s for x in row]


def categorical_kl(logits_p, logits_q) -> float:
    """``sum_k p_k (log p_k - log q_k)`` for one row of logits."""
    lp, lq = _log_softmax([float(x) for x in logits_p]), _log_softmax([float(x) for x in logits_q])
    return sum(math.exp(a) * (a - b) for a, b in zip(lp, lq))


def categorical_entropy_row(logits) -> float:
    lp = _log_softmax([float(x) for x in logits])
    return -sum(math.exp(a) * a for a in lp)


def normal_entropy_scalar(scale: float) -> float:
    return 0.5 + 0.5 * math.log(2 * math.pi) + math.log(scale)
