"""A2C, REINFORCE, MAPPO/IPPO and the value normalisers one sample at a time, float64 (network-free: network outputs
in). Never imports arrayrl.

* A2C/A3C (Mnih et al. 2016, arXiv:1602.01783, algorithm S3): per sample ``i``::

      loss_objective_i = -log pi(a_i|s_i) A_i            loss_entropy_i = -c_H H_i
      loss_critic_i    = c_V d(y_i, V_i)   (PPO2 clip: max(d(y, V), d(y, V_old + clip(V - V_old, -c, c))))

* REINFORCE with a baseline (Williams 1992): ``loss_actor_i = -log pi(a_i|s_i) A_i``, ``loss_value_i = d(y_i, V_i)``.
* MAPPO (Yu et al. 2022, arXiv:2103.01955) / IPPO (de Witt et al. 2020, arXiv:2011.09533): the clipped PPO
  surrogate per (sample, agent) with the advantage standardised separately for each agent (unbiased std, floor 1e-6)
  and, with value normalisation, the critic distance taken between ``(y - mu) / sigma`` and ``(V - mu) / sigma``.
* Normalisers fed a stream of batches (each batch ``[N, *S]``, statistics per element of ``S``):
  PopArt-style EMA with debiasing (van Hasselt et al. 2016), exact running mean/variance (Chan et al.), EMA of
  quantiles (DreamerV3, Hafner et al. 2023). Loops over samples; quantiles by sorting a Python list.

``d`` is ``l2`` (no 1/2), ``l1`` or ``smooth_l1``; reductions as :func:`reference.losses.common.reduce`.
"""

from __future__ import annotations

import math

import numpy as np

from .._util import as_f64
from .common import distance_scalar, reduce
from .ppo import ppo_loss

__all__ = ["critic_loss", "a2c_loss", "reinforce_loss", "normalize_per_agent", "mappo_loss", "popart_stream",
           "running_stream", "percentile_stream", "quantile_linear"]


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def critic_loss(value, value_target, *, old_value=None, coeff: float = 1.0, loss_critic_type: str = "smooth_l1",
                clip_value: float | None = None) -> tuple[np.ndarray, float | None]:
    """``(c_V d(y_i, V_i) per sample, clip fraction or None)``, PPO2-clipped around ``old_value`` if ``clip_value``."""
    v, y = as_f64("value", value), as_f64("value_target", value_target)
    out = np.empty(v.shape)
    clipped = []
    for i in np.ndindex(*v.shape):
        d = distance_scalar(float(y[i]), float(v[i]), loss_critic_type)
        if clip_value is not None:
            vo = float(as_f64("old_value", old_value)[i])
            delta = float(v[i]) - vo
            dc = min(max(delta, -clip_value), clip_value)
            clipped.append(1.0 if dc != delta else 0.0)
            d = max(d, distance_scalar(float(y[i]), vo + dc, loss_critic_type))
        out[i] = coeff * d
    return out, (_mean(clipped) if clip_value is not None else None)


def _policy_gradient(log_prob, advantage) -> np.ndarray:
    lp, adv = as_f64("log_prob", log_prob), as_f64("advantage", advantage)
    if lp.shape != adv.shape:
        raise ValueError(f"advantage: expected shape {lp.shape}, got {adv.shape}")
    out = np.empty(lp.shape)
    for i in np.ndindex(*lp.shape):
        out[i] = -float(lp[i]) * float(adv[i])
    return out


def a2c_loss(log_prob, advantage, *, entropy=None, entropy_coeff: float = 0.01, value=None, value_target=None,
             old_value=None, critic_coeff: float | None = 1.0, loss_critic_type: str = "smooth_l1",
             clip_value: float | None = None, reduction: str = "mean", mask=None) -> dict:
    """A2C outputs from per-sample arrays ``[*B]``: ``loss_objective``, and where given ``entropy`` /
    ``loss_entropy`` and (``critic_coeff`` not ``None``) ``loss_critic`` / ``value_clip_fraction``."""
    out = {"loss_objective": reduce(_policy_gradient(log_prob, advantage), reduction, mask=mask)}
    if entropy is not None:
        h = as_f64("entropy", entropy)
        out["entropy"] = _mean(float(x) for x in h.reshape(-1))
        le = np.empty(h.shape)
        for i in np.ndindex(*h.shape):
            le[i] = -entropy_coeff * float(h[i])
        out["loss_entropy"] = reduce(le, reduction, mask=mask)
    if critic_coeff is not None and value is not None:
        lc, frac = critic_loss(value, value_target, old_value=old_value, coeff=critic_coeff,
                               loss_critic_type=loss_critic_type, clip_value=clip_value)
        out["loss_critic"] = reduce(lc, reduction, mask=mask)
        if frac is not None:
            out["value_clip_fraction"] = frac
    return out


def reinforce_loss(log_prob, advantage, value, value_target, *, old_value=None, loss_critic_type: str = "smooth_l1",
                   clip_value: float | None = None, reduction: str = "mean", mask=None) -> dict:
    """REINFORCE outputs ``loss_actor``, ``loss_value`` (+ ``value_clip_fraction``) from per-sample arrays."""
    lv, frac = critic_loss(value, value_target, old_value=old_value, loss_critic_type=loss_critic_type,
                           clip_value=clip_value)
    out = {"loss_actor": reduce(_policy_gradient(log_prob, advantage), reduction, mask=mask),
           "loss_value": reduce(lv, reduction, mask=mask)}
    if frac is not None:
        out["value_clip_fraction"] = frac
    return out


# ------------------------------------------------------------------------------------------------ MAPPO / IPPO
def normalize_per_agent(advantage, eps: float = 1e-6) -> np.ndarray:
    """``[..., n_agents]``: each agent's entries standardised on their own (unbiased std, floored at ``eps``)."""
    a = as_f64("advantage", advantage)
    out = np.empty(a.shape)
    for k in range(a.shape[-1]):
        xs = [float(a[i + (k,)]) for i in np.ndindex(*a.shape[:-1])]
        m = _mean(xs)
        std = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        std = max(std, eps)
        for i in np.ndindex(*a.shape[:-1]):
            out[i + (k,)] = (float(a[i + (k,)]) - m) / std
    return out


def mappo_loss(log_prob, old_log_prob, advantage, value, value_target, *, old_value=None, eps: float = 0.2,
               entropy=None, entropy_coeff: float = 0.01, critic_coeff: float = 1.0,
               loss_critic_type: str = "smooth_l1", clip_value: float | None = None, value_stats=None,
               normalize_advantage: bool = True, reduction: str = "mean") -> dict:
    """MAPPO/IPPO outputs from per-(sample, agent) arrays ``[..., n_agents]``; ``value_stats = (mu, sigma)`` of the
    value normaliser after its update (``None``: no value normalisation)."""
    adv = normalize_per_agent(advantage) if normalize_advantage else as_f64("advantage", advantage)
    v, y = as_f64("value", value), as_f64("value_target", value_target)
    vo = None if old_value is None else as_f64("old_value", old_value)
    if value_stats is not None:
        mu, sigma = value_stats
        v, y = (v - mu) / sigma, (y - mu) / sigma
        vo = None if vo is None else (vo - mu) / sigma
    return ppo_loss(log_prob, old_log_prob, adv, kind="clip", eps_low=eps, eps_high=eps, entropy=entropy,
                    entropy_coeff=entropy_coeff, value=v, old_value=vo, value_target=y, critic_coeff=critic_coeff,
                    loss_critic_type=loss_critic_type, clip_value=clip_value, reduction=reduction)


# ------------------------------------------------------------------------------------------------ normalisers
def _columns(batch) -> tuple[list, list]:
    """``batch [N, *S]`` -> (list of the element positions of ``S``, per position the list of the N values)."""
    b = as_f64("value_target", batch)
    pos = list(np.ndindex(*b.shape[1:]))
    return pos, [[float(b[(n,) + p]) for n in range(b.shape[0])] for p in pos]


def popart_stream(batches, beta: float = 0.99999, epsilon: float = 1e-5) -> list[tuple]:
    """After each batch of the stream: ``(mean, std)`` per element of ``S`` (dicts keyed by position)."""
    out = []
    m = m2 = d = None
    for batch in batches:
        pos, cols = _columns(batch)
        if m is None:
            m, m2, d = {p: 0.0 for p in pos}, {p: 0.0 for p in pos}, 0.0
        for p, c in zip(pos, cols):
            m[p] = beta * m[p] + (1 - beta) * _mean(c)
            m2[p] = beta * m2[p] + (1 - beta) * _mean(x * x for x in c)
        d = beta * d + (1 - beta)
        deb = max(d, epsilon)
        mean = {p: m[p] / deb for p in pos}
        out.append((mean, {p: math.sqrt(max(m2[p] / deb - mean[p] ** 2, epsilon)) for p in pos}))
    return out


def running_stream(batches, epsilon: float = 1e-5) -> list[tuple]:
    """After each batch: ``(mean, std)`` of every value seen so far (population variance, floored at ``epsilon``),
    computed from the concatenation (not incrementally)."""
    seen: dict = {}
    out = []
    for batch in batches:
        pos, cols = _columns(batch)
        for p, c in zip(pos, cols):
            seen.setdefault(p, []).extend(c)
        mean = {p: _mean(seen[p]) for p in pos}
        var = {p: sum((x - mean[p]) ** 2 for x in seen[p]) / len(seen[p]) for p in pos}
        out.append((mean, {p: math.sqrt(max(var[p], epsilon)) for p in pos}))
    return out


def quantile_linear(xs, q: float) -> float:
    """The ``q``-quantile with linear interpolation between order statistics (numpy's default, torch.quantile)."""
    s = sorted(xs)
    r = q * (len(s) - 1)
    lo, hi = math.floor(r), math.ceil(r)
    return s[lo] + (r - lo) * (s[hi] - s[lo])


def percentile_stream(batches, quantiles=(0.05, 0.95), rate: float = 0.01, min_scale: float = 1.0) -> list[tuple]:
    """After each batch: ``(low, high, scale)`` with ``low <- low + rate (q_lo - low)`` (same for ``high``) and
    ``scale = max(high - low, min_scale)``."""
    lo = hi = None
    out = []
    for batch in batches:
        pos, cols = _columns(batch)
        if lo is None:
            lo, hi = {p: 0.0 for p in pos}, {p: 0.0 for p in pos}
        for p, c in zip(pos, cols):
            lo[p] += rate * (quantile_linear(c, quantiles[0]) - lo[p])
            hi[p] += rate * (quantile_linear(c, quantiles[1]) - hi[p])
        out.append((dict(lo), dict(hi), {p: max(hi[p] - lo[p], min_scale) for p in pos}))
    return out
