"""DDPG, TD3 and TD3+BC losses, one sample at a time, in float64 (NumPy and Python floats only).

Papers: Lillicrap et al. 2015 "Continuous control with deep reinforcement learning" (DDPG, arXiv:1509.02971);
Fujimoto, van Hoof & Meger 2018 "Addressing Function Approximation Error in Actor-Critic Methods" (TD3,
arXiv:1802.09477); Fujimoto & Gu 2021 "A Minimalist Approach to Offline Reinforcement Learning" (TD3+BC,
arXiv:2106.06860). TorchRL 0.14.1 conventions (catalog 5.3, 5.13, 5.14): distances without 1/2, critic losses summed
over the N critics, the actor on critic 0 only.

The networks are per-row callables (so the oracle never runs a batched network): ``actor(o) -> a`` (1-D arrays),
``critic(o, a) -> float``; the targets are separate callables (a non-delayed target is the online function).

Per sample b (TD(0) target, ``y_b = r_b + gamma (1 - terminated_b) V'_b``)::

    DDPG    V'_b = Q'(s'_b, mu'(s'_b))
            loss_value = reduce(dist(Q(s_b, a_b), y_b)),  loss_actor = reduce(-Q(s_b, mu(s_b)))
            td_error_b = (Q(s_b, a_b) - y_b)^2
    TD3     eps_bk = clip(sigma_k z_bk, -c_k, c_k),  sigma_k = policy_noise s_k, c_k = noise_clip s_k,
            s_k = (high_k - low_k) / 2 (Fujimoto's main.py scales by max_action), or s_k = 1 (TorchRL: absolute)
            a'_bk = clip(mu'(s'_b)_k + eps_bk, low_k, high_k)
            V'_b = min_i Q'_i(s'_b, a'_b)
            loss_qvalue = reduce(sum_i dist(Q_i(s_b, a_b), y_b)),  td_error_b = max_i (Q_i(s_b, a_b) - y_b)^2
            loss_actor = reduce(-Q_0(s_b, mu(s_b)))
    TD3+BC  lmbd = alpha / mean_b |Q_0(s_b, mu(s_b))|,  bc = mean_{b,k} (mu(s_b)_k - a_bk)^2
            loss_actor = reduce(-lmbd Q_0(s_b, mu(s_b)) + bc)
"""

from __future__ import annotations

import numpy as np

from .._util import as_f64
from .common import batch_vector, distance_scalar, reduce

__all__ = ["clip_scalar", "target_noise", "smoothed_action", "ddpg_loss", "td3_loss", "td3_bc_loss"]


def clip_scalar(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _per_dim(v, a_dim: int) -> list:
    arr = as_f64("bound", v)
    if arr.ndim == 0:
        return [float(arr)] * a_dim
    if arr.shape != (a_dim,):
        raise ValueError(f"bound: expected a number or shape ({a_dim},), got {arr.shape}")
    return [float(x) for x in arr]


def target_noise(z, *, policy_noise: float, noise_clip: float, low, high, scaled: bool) -> np.ndarray:
    """``eps [B, A]`` from standard-normal ``z [B, A]`` (see the module docstring)."""
    z = as_f64("z", z)
    b_dim, a_dim = z.shape
    lo, hi = _per_dim(low, a_dim), _per_dim(high, a_dim)
    out = np.empty(z.shape)
    for b in range(b_dim):
        for k in range(a_dim):
            s = (hi[k] - lo[k]) / 2.0 if scaled else 1.0
            out[b, k] = clip_scalar(float(z[b, k]) * policy_noise * s, -noise_clip * s, noise_clip * s)
    return out


def smoothed_action(next_action, noise, low, high) -> np.ndarray:
    """``a' = clip(mu'(s') + eps, low, high)`` ``[B, A]``."""
    na, e = as_f64("next_action", next_action), as_f64("noise", noise)
    if na.shape != e.shape:
        raise ValueError(f"noise: expected shape {na.shape}, got {e.shape}")
    lo, hi = _per_dim(low, na.shape[1]), _per_dim(high, na.shape[1])
    out = np.empty(na.shape)
    for b in range(na.shape[0]):
        for k in range(na.shape[1]):
            out[b, k] = clip_scalar(float(na[b, k]) + float(e[b, k]), lo[k], hi[k])
    return out


def _rows(obs, action, next_obs, reward, terminated):
    o, a, no = as_f64("observation", obs), as_f64("action", action), as_f64("next_observation", next_obs)
    b_dim = o.shape[0]
    r = batch_vector("reward", reward, (b_dim,))
    t = batch_vector("terminated", terminated, (b_dim,), kind="bool")
    return o, a, no, r, t, b_dim


def _y(r: float, term: bool, gamma: float, v_next: float) -> float:
    return r if term else r + gamma * v_next


def ddpg_loss(obs, action, next_obs, reward, terminated, *, actor, critic, target_actor, target_critic, gamma=0.99,
              loss_function="l2", reduction="mean", weights=None) -> dict:
    """DDPG outputs: ``loss_actor, loss_value, td_error, pred_value, target_value, pred_value_max,
    target_value_max``."""
    o, a, no, r, t, b_dim = _rows(obs, action, next_obs, reward, terminated)
    pred, target, value_l, actor_l = (np.empty(b_dim) for _ in range(4))
    for b in range(b_dim):
        pred[b] = float(critic(o[b], a[b]))
        target[b] = _y(float(r[b]), bool(t[b]), gamma, float(target_critic(no[b], target_actor(no[b]))))
        value_l[b] = distance_scalar(pred[b], target[b], loss_function)
        actor_l[b] = -float(critic(o[b], actor(o[b])))
    td = np.array([(pred[b] - target[b]) ** 2 for b in range(b_dim)])
    return {"loss_actor": reduce(actor_l, reduction, weights), "loss_value": reduce(value_l, reduction, weights),
            "td_error": td, "pred_value": pred, "target_value": target,
            "pred_value_max": np.float64(max(pred)), "target_value_max": np.float64(max(target))}


def _td3_critic(o, a, no, r, t, z, *, critics, target_actor, target_critics, low, high, policy_noise, noise_clip,
                scaled, gamma, loss_function):
    b_dim, n = o.shape[0], len(critics)
    mu_next = np.stack([np.asarray(target_actor(no[b]), dtype=np.float64) for b in range(b_dim)])
    eps = target_noise(z, policy_noise=policy_noise, noise_clip=noise_clip, low=low, high=high, scaled=scaled)
    a_next = smoothed_action(mu_next, eps, low, high)
    pred = np.empty((n, b_dim))
    next_v, target, q_l, td = (np.empty(b_dim) for _ in range(4))
    for b in range(b_dim):
        next_v[b] = min(float(target_critics[i](no[b], a_next[b])) for i in range(n))
        target[b] = _y(float(r[b]), bool(t[b]), gamma, next_v[b])
        for i in range(n):
            pred[i, b] = float(critics[i](o[b], a[b]))
        q_l[b] = sum(distance_scalar(pred[i, b], target[b], loss_function) for i in range(n))
        td[b] = max((pred[i, b] - target[b]) ** 2 for i in range(n))
    return {"pred_value": pred, "next_state_value": next_v, "target_value": target, "td_error": td}, q_l


def td3_loss(obs, action, next_obs, reward, terminated, z, *, actor, critics, target_actor, target_critics, low,
             high, policy_noise=0.2, noise_clip=0.5, scaled=True, gamma=0.99, loss_function="smooth_l1",
             reduction="mean", weights=None) -> dict:
    """TD3 outputs: ``loss_actor, loss_qvalue, pred_value [N, B], state_action_value_actor [N, B],
    next_state_value, target_value, td_error``. ``critics``/``target_critics``: lists of N callables."""
    o, a, no, r, t, b_dim = _rows(obs, action, next_obs, reward, terminated)
    meta, q_l = _td3_critic(o, a, no, r, t, z, critics=critics, target_actor=target_actor,
                            target_critics=target_critics, low=low, high=high, policy_noise=policy_noise,
                            noise_clip=noise_clip, scaled=scaled, gamma=gamma, loss_function=loss_function)
    q_actor = np.array([[float(c(o[b], actor(o[b]))) for b in range(b_dim)] for c in critics])
    actor_l = np.array([-q_actor[0, b] for b in range(b_dim)])
    return {"loss_actor": reduce(actor_l, reduction, weights), "loss_qvalue": reduce(q_l, reduction, weights),
            "state_action_value_actor": q_actor, **meta}


def td3_bc_loss(obs, action, next_obs, reward, terminated, z, *, actor, critics, target_actor, target_critics, low,
                high, alpha=2.5, policy_noise=0.2, noise_clip=0.5, scaled=True, gamma=0.99, loss_function="smooth_l1",
                reduction="mean", weights=None, lmbd=None) -> dict:
    """TD3+BC outputs: TD3's critic outputs and ``loss_actor, bc_loss, lmbd, state_action_value_actor [B]``.

    ``lmbd``: a fixed value instead of ``alpha / mean|Q|`` (the paper's code detaches lmbd, so the actor's
    gradient is the derivative of the loss with lmbd held: finite differences must hold it too)."""
    o, a, no, r, t, b_dim = _rows(obs, action, next_obs, reward, terminated)
    meta, q_l = _td3_critic(o, a, no, r, t, z, critics=critics, target_actor=target_actor,
                            target_critics=target_critics, low=low, high=high, policy_noise=policy_noise,
                            noise_clip=noise_clip, scaled=scaled, gamma=gamma, loss_function=loss_function)
    pi = [np.asarray(actor(o[b]), dtype=np.float64) for b in range(b_dim)]
    q0 = np.array([float(critics[0](o[b], pi[b])) for b in range(b_dim)])
    lmbd = alpha / (sum(abs(q) for q in q0) / b_dim) if lmbd is None else float(lmbd)
    sq, count = 0.0, 0
    for b in range(b_dim):
        for k in range(a.shape[1]):
            sq += (float(pi[b][k]) - float(a[b, k])) ** 2
            count += 1
    bc = sq / count
    actor_l = np.array([-lmbd * q0[b] + bc for b in range(b_dim)])
    return {"loss_actor": reduce(actor_l, reduction, weights), "loss_qvalue": reduce(q_l, reduction, weights),
            "bc_loss": np.float64(bc), "lmbd": np.float64(lmbd), "state_action_value_actor": q0, **meta}
