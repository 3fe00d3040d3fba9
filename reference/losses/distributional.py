"""Categorical (C51) distributional DQN, one sample and one atom at a time.

Bellemare, Dabney & Munos 2017 "A Distributional Perspective on Reinforcement Learning", Algorithm 1.

Per sample (TorchRL 0.14.1 ``DistributionalDQNLoss``; layout of log-probs: ``[*B, atoms, nA]``):

1. ``a* = argmax_a sum_j z_j p_online(s', a)_j`` (first maximum), next probs ``p_j = p_target(s', a*)_j``.
   TorchRL always picks ``a*`` with the ONLINE net and scores it with the TARGET net (Double-DQN style, as in
   Rainbow / Kaixhin's implementation).  The paper's Algorithm 1 uses one network for both:
   ``double_dqn=False`` reproduces that.
2. ``Tz_j = clip(r + (1 - terminated) * gamma^n * z_j, Vmin, Vmax)``  (terminated, not done: truncations bootstrap).
3. ``b_j = (Tz_j - Vmin) / dz``, ``l = floor(b_j)``, ``u = ceil(b_j)``;
   ``m_l += p_j (u - b_j)``, ``m_u += p_j (b_j - l)``; when ``l == u`` (b_j an integer) the whole ``p_j`` goes to
   atom ``l``.  The paper's pseudo-code loses that mass (both weights are 0); TorchRL shifts ``l`` down (or ``u``
   up at 0) so the mass is kept -- the same numbers as the explicit ``l == u`` branch here.
4. ``loss_b = -sum_j m_j log p_online(s, a)_j``; ``td_error = loss_b``; ``loss = reduce(loss_b, weights)``.

The support must be evenly spaced and increasing: ``z_j = Vmin + j dz``, ``dz = (Vmax - Vmin) / (atoms - 1)``.
``b_j`` is clipped to ``[0, atoms - 1]`` against round-off (TorchRL's index_add could spill ~1e-16 of mass into
the next sample's first atom there).  TorchRL accumulates ``m`` in a default-dtype (float32) buffer and only
accepts a 1-D batch; the reference accumulates in float64 and accepts any batch shape.
"""

from __future__ import annotations

import math

import numpy as np

from .._util import as_f64, as_index
from .common import batch_vector, greedy_index, reduce

__all__ = ["c51_projection", "distributional_dqn_loss"]


def _check_support(support) -> tuple[np.ndarray, float, float, float]:
    z = as_f64("support", support)
    if z.ndim != 1 or z.shape[0] < 2:
        raise ValueError(f"support: expected a 1-D array of at least 2 atoms, got shape {z.shape}")
    vmin, vmax = float(z[0]), float(z[-1])
    dz = (vmax - vmin) / (z.shape[0] - 1)
    if not dz > 0 or not np.allclose(z, vmin + dz * np.arange(z.shape[0]), rtol=1e-12, atol=1e-12 * abs(dz)):
        raise ValueError("support: expected evenly spaced increasing atoms (a linspace)")
    return z, vmin, vmax, dz


def c51_projection(next_probs, reward, terminated, support, *, discount):
    """Project ``r + discount * z`` (``r`` if terminated) with probabilities ``next_probs`` onto ``support``.

    ``next_probs``: ``[*B, atoms]``; ``reward``, ``terminated``: ``[*B]`` or ``[*B, 1]``; ``discount``: scalar or
    ``[*B]`` (``gamma ** n``).  Returns ``m`` of shape ``[*B, atoms]`` (each row sums to the row sum of p).
    """
    z, vmin, vmax, dz = _check_support(support)
    p = as_f64("next_probs", next_probs)
    atoms = z.shape[0]
    if p.ndim < 1 or p.shape[-1] != atoms:
        raise ValueError(f"next_probs: expected shape [*B, {atoms}], got {p.shape}")
    batch_shape = p.shape[:-1]
    r = batch_vector("reward", reward, batch_shape)
    tm = batch_vector("terminated", terminated, batch_shape, kind="bool")
    disc = np.asarray(discount, dtype=np.float64)
    disc = np.full(batch_shape, float(disc)) if disc.ndim == 0 else batch_vector("discount", disc, batch_shape)
    m = np.zeros(p.shape, dtype=np.float64)
    for bi in np.ndindex(*batch_shape):
        for j in range(atoms):
            tz = float(r[bi]) if tm[bi] else float(r[bi]) + float(disc[bi]) * float(z[j])
            tz = min(max(tz, vmin), vmax)
            b = min(max((tz - vmin) / dz, 0.0), float(atoms - 1))
            lo, up = math.floor(b), math.ceil(b)
            pj = float(p[bi + (j,)])
            if lo == up:
                m[bi + (lo,)] += pj
            else:
                m[bi + (lo,)] += pj * (up - b)
                m[bi + (up,)] += pj * (b - lo)
    return m


def _action_index(action, batch_shape, n_actions, action_space):
    a = np.asarray(action)
    if action_space is None:
        action_space = "one_hot" if a.shape == tuple(batch_shape) + (n_actions,) and n_actions > 1 else "categorical"
    if action_space == "one_hot":
        a = as_f64("action", a)
        if a.shape != tuple(batch_shape) + (n_actions,):
            raise ValueError(f"action: expected one-hot shape {tuple(batch_shape) + (n_actions,)}, got {a.shape}")
        idx = np.empty(batch_shape, dtype=np.int64)
        for b in np.ndindex(*batch_shape):
            hot = [k for k in range(n_actions) if a[b + (k,)] != 0]
            if len(hot) != 1:
                raise ValueError("action: a one-hot action must have exactly one non-zero entry")
            idx[b] = hot[0]
        return idx
    a = as_index("action", a)
    if a.shape == tuple(batch_shape) + (1,):
        a = a.reshape(batch_shape)
    if a.shape != tuple(batch_shape):
        raise ValueError(f"action: expected indices of shape {tuple(batch_shape)}, got {a.shape}")
    return a


def distributional_dqn_loss(log_probs, action, reward, terminated, next_log_probs_target, support, *, gamma,
                            next_log_probs_online=None, double_dqn=True, steps_to_next_obs=None,
                            reduction="mean", weights=None, action_space=None):
    """C51 loss -> dict ``loss, td_error (= per-sample cross-entropy), target_distribution, next_action``.

    ``log_probs``, ``next_log_probs_target``, ``next_log_probs_online``: ``[*B, atoms, nA]`` log-softmax over atoms
    (TorchRL's ``action_value``); ``action``: ``[*B]`` indices or ``[*B, nA]`` one-hot.
    """
    z, _, _, _ = _check_support(support)
    lp = as_f64("log_probs", log_probs)
    nt = as_f64("next_log_probs_target", next_log_probs_target)
    if lp.ndim < 2 or lp.shape[-2] != z.shape[0]:
        raise ValueError(f"log_probs: expected shape [*B, {z.shape[0]}, nA], got {lp.shape}")
    if nt.shape != lp.shape:
        raise ValueError(f"next_log_probs_target: expected shape {lp.shape}, got {nt.shape}")
    if double_dqn:
        if next_log_probs_online is None:
            raise ValueError("next_log_probs_online: required with double_dqn=True")
        no = as_f64("next_log_probs_online", next_log_probs_online)
        if no.shape != lp.shape:
            raise ValueError(f"next_log_probs_online: expected shape {lp.shape}, got {no.shape}")
    else:
        no = nt
    batch_shape, atoms, n_actions = lp.shape[:-2], lp.shape[-2], lp.shape[-1]
    a = _action_index(action, batch_shape, n_actions, action_space)
    n = np.ones(batch_shape) if steps_to_next_obs is None else batch_vector(
        "steps_to_next_obs", steps_to_next_obs, batch_shape)

    next_action = np.empty(batch_shape, dtype=np.int64)
    next_p = np.empty(batch_shape + (atoms,), dtype=np.float64)
    disc = np.empty(batch_shape, dtype=np.float64)
    for b in np.ndindex(*batch_shape):
        expected = [sum(float(z[j]) * math.exp(float(no[b + (j, k)])) for j in range(atoms)) for k in range(n_actions)]
        k_star = greedy_index(expected)
        next_action[b] = k_star
        for j in range(atoms):
            next_p[b + (j,)] = math.exp(float(nt[b + (j, k_star)]))
        disc[b] = float(gamma) ** float(n[b])
    m = c51_projection(next_p, reward, terminated, z, discount=disc)

    per = np.empty(batch_shape, dtype=np.float64)
    for b in np.ndindex(*batch_shape):
        k = int(a[b])
        if not 0 <= k < n_actions:
            raise ValueError(f"action: index {k} out of range for {n_actions} actions")
        per[b] = -sum(float(m[b + (j,)]) * float(lp[b + (j, k)]) for j in range(atoms))
    w = None if weights is None else batch_vector("weights", weights, batch_shape)
    return {
        "loss": reduce(per, reduction, weights=w),
        "td_error": per,
        "target_distribution": m,
        "next_action": next_action,
    }
