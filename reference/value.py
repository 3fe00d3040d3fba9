"""Slow float64 reference for the value estimators (returns and advantages).

Plain Python loops, one trajectory at a time, written from the papers and from TorchRL 0.14.1's documented
semantics (``torchrl.objectives.value.functional``).  Conventions shared by every function:

* Inputs have the same shape (any rank >= 1); the time axis is ``time_dim`` (default ``-2``, TorchRL's
  ``[*B, T, F]`` layout).  Every other index (batch and feature positions) is an independent trajectory.
* ``done[t]`` marks the last step of a trajectory: multi-step recursions are cut there.
  ``terminated[t]`` masks the bootstrap ``V(s_{t+1})`` (``next_value[t]``).  A truncated step
  (``done & ~terminated``) therefore bootstraps from ``next_value[t]``.  ``terminated=None`` means
  ``terminated = done`` (TorchRL's default).
* The last index of the time axis always closes the rollout: it bootstraps from ``next_value[T-1]``
  unless terminated.
* ``gamma`` / ``lmbda``: a Python float (or 0-d array) or a per-step array of the reward's shape.
  Per-step values are "rolling": ``gamma[t]`` discounts the step from ``t`` to ``t+1``
  (TorchRL's ``rolling_gamma=True``).  With ``rolling_gamma=False`` the value at ``k`` discounts the whole
  future seen from ``k`` (TD(1) and TD(lambda) only).
* Outputs are float64 arrays of the input shape.  Where a masked term would be ``0 * inf`` TorchRL gives NaN;
  the loops below skip the term instead (only relevant for non-finite values).

Papers: Sutton & Barto (2018) ch. 6/7/12 (TD(0), n-step, TD(lambda) returns); Schulman et al. 2016
"High-Dimensional Continuous Control Using Generalized Advantage Estimation"; Espeholt et al. 2018 "IMPALA".
"""

from __future__ import annotations

import math

import numpy as np

from ._util import as_bool, as_f64, check_same_shape, lanes, normalize_axis, per_step

__all__ = [
    "td0_return",
    "td0_advantage",
    "td1_return",
    "td1_advantage",
    "td_lambda_return",
    "td_lambda_advantage",
    "gae",
    "vtrace",
    "reward2go",
]


# --------------------------------------------------------------------------------------------------------------
# driver: split arrays into trajectories along the time axis, call a per-trajectory kernel on Python lists
# --------------------------------------------------------------------------------------------------------------


def _run(kernel, floats: dict, flags: dict, time_dim: int, n_out: int):
    """Apply ``kernel(**lists)`` to every lane along ``time_dim``.

    ``floats``/``flags`` map argument names to float64/bool arrays of one common shape.  ``kernel`` receives
    Python lists (floats and bools) and returns ``n_out`` lists of length T.
    """
    first = next(iter(floats.values()))
    shape = first.shape
    if first.ndim == 0:
        raise ValueError("inputs must have at least one (time) dimension, got a 0-d array")
    axis = normalize_axis(time_dim, first.ndim)
    outs = [np.empty(shape, dtype=np.float64) for _ in range(n_out)]
    for idx in lanes(shape, axis):
        kw = {k: [float(v) for v in a[idx]] for k, a in floats.items()}
        kw.update({k: [bool(v) for v in a[idx]] for k, a in flags.items()})
        res = kernel(**kw)
        if n_out == 1:
            res = (res,)
        for out, lane in zip(outs, res):
            out[idx] = lane
    return outs[0] if n_out == 1 else tuple(outs)


def _prepare(next_value, reward, done, terminated, value=None):
    nv = as_f64("next_value", next_value)
    r = as_f64("reward", reward)
    d = as_bool("done", done)
    tm = d.copy() if terminated is None else as_bool("terminated", terminated)
    v = None if value is None else as_f64("value", value)
    check_same_shape(reward=r, next_value=nv, value=v, done=d, terminated=tm)
    return nv, r, d, tm, v


# --------------------------------------------------------------------------------------------------------------
# TD(0)
# --------------------------------------------------------------------------------------------------------------


def td0_return(gamma, next_value, reward, terminated):
    """One-step TD target ``G_t = r_t + gamma_t * (1 - terminated_t) * V(s_{t+1})``.

    Elementwise (no time axis).  ``done`` plays no role: truncated steps bootstrap.
    """
    nv = as_f64("next_value", next_value)
    r = as_f64("reward", reward)
    tm = as_bool("terminated", terminated)
    check_same_shape(reward=r, next_value=nv, terminated=tm)
    g = per_step("gamma", gamma, r.shape)
    out = np.empty(r.shape, dtype=np.float64)
    for i in np.ndindex(*r.shape):
        out[i] = r[i] if tm[i] else r[i] + g[i] * nv[i]
    return out


def td0_advantage(gamma, value, next_value, reward, done, terminated=None):
    """``td0_return - value``.  ``done`` is only the default for ``terminated`` (TorchRL's signature order)."""
    nv, r, d, tm, v = _prepare(next_value, reward, done, terminated, value)
    return td0_return(gamma, nv, r, tm) - v


# --------------------------------------------------------------------------------------------------------------
# TD(1): Monte-Carlo return inside the rollout, bootstrapped at truncation / end of rollout
# --------------------------------------------------------------------------------------------------------------


def _td1_rolling(g, nv, r, d, tm):
    T = len(r)
    out = [0.0] * T
    for t in reversed(range(T)):
        if tm[t]:
            out[t] = r[t]
        elif d[t] or t == T - 1:
            out[t] = r[t] + g[t] * nv[t]
        else:
            out[t] = r[t] + g[t] * out[t + 1]
    return out


def _td1_fixed(g, nv, r, d, tm, seed_zero):
    # gamma_k discounts every future step seen from k: G_k = r_k + g_k r_{k+1} + g_k^2 r_{k+2} + ...
    T = len(r)
    out = [0.0] * T
    for k in range(T):
        gk = g[k]
        acc = 0.0 if seed_zero else nv[T - 1]  # value "beyond" the last step of the rollout
        for i in reversed(range(k, T)):
            if tm[i]:
                acc = r[i]
            elif d[i]:
                acc = r[i] + gk * nv[i]
            else:
                acc = r[i] + gk * acc
        out[k] = acc
    return out


def td1_return(gamma, next_value, reward, done, terminated=None, rolling_gamma=None, *, time_dim=-2,
               torchrl_compat=False):
    """TD(1) (Monte-Carlo) return with bootstrapping at truncations and at the end of the rollout.

    ``G_t = r_t``                               if terminated_t
    ``G_t = r_t + gamma_t V(s_{t+1})``           if done_t and not terminated_t, or t = T-1
    ``G_t = r_t + gamma_t G_{t+1}``              otherwise

    ``rolling_gamma=False`` (needs an array gamma): ``gamma[k]`` discounts the whole future of step k.
    ``torchrl_compat=True`` reproduces TorchRL 0.14.1's ``rolling_gamma=False`` branch, which seeds the
    recursion with 0 instead of ``V(s_T)``: a non-done last step then does NOT bootstrap (a TorchRL defect;
    its own ``td_lambda_return_estimate(lmbda=1, rolling_gamma=False)`` bootstraps).
    """
    nv, r, d, tm, _ = _prepare(next_value, reward, done, terminated)
    g_arr = np.asarray(gamma)
    g = per_step("gamma", gamma, r.shape)
    if rolling_gamma is None or rolling_gamma:
        return _run(lambda g, nv, r, d, tm: _td1_rolling(g, nv, r, d, tm),
                    {"g": g, "nv": nv, "r": r}, {"d": d, "tm": tm}, time_dim, 1)
    if g_arr.ndim == 0:
        raise ValueError("rolling_gamma=False needs a per-step gamma array of the reward's shape")
    return _run(lambda g, nv, r, d, tm: _td1_fixed(g, nv, r, d, tm, torchrl_compat),
                {"g": g, "nv": nv, "r": r}, {"d": d, "tm": tm}, time_dim, 1)


def td1_advantage(gamma, value, next_value, reward, done, terminated=None, rolling_gamma=None, *, time_dim=-2,
                  torchrl_compat=False):
    """``td1_return - value``."""
    nv, r, d, tm, v = _prepare(next_value, reward, done, terminated, value)
    return td1_return(gamma, nv, r, d, tm, rolling_gamma, time_dim=time_dim, torchrl_compat=torchrl_compat) - v


# --------------------------------------------------------------------------------------------------------------
# TD(lambda)
# --------------------------------------------------------------------------------------------------------------


def _td_lambda_rolling(g, lm, nv, r, d, tm):
    T = len(r)
    out = [0.0] * T
    for t in reversed(range(T)):
        v_next = 0.0 if tm[t] else nv[t]  # V*(s_{t+1}) = (1 - terminated_t) V(s_{t+1})
        future = v_next if (d[t] or t == T - 1) else out[t + 1]
        out[t] = r[t] + g[t] * ((1.0 - lm[t]) * v_next + lm[t] * future)
    return out


def _td_lambda_fixed(g, lm, nv, r, d, tm):
    T = len(r)
    out = [0.0] * T
    for k in range(T):
        gk, lk = g[k], lm[k]
        acc = 0.0
        for i in reversed(range(k, T)):
            v_next = 0.0 if tm[i] else nv[i]
            future = v_next if (d[i] or i == T - 1) else acc
            acc = r[i] + gk * ((1.0 - lk) * v_next + lk * future)
        out[k] = acc
    return out


def td_lambda_return(gamma, lmbda, next_value, reward, done, terminated=None, rolling_gamma=None, *,
                     time_dim=-2):
    """TD(lambda) return (recursive form, Sutton & Barto eq. 12.3 with bootstrapping masks).

    ``V*_t = (1 - terminated_t) V(s_{t+1})``
    ``G_t  = r_t + gamma_t [(1 - lambda_t) V*_t + lambda_t X_t]`` with
    ``X_t = V*_t`` if done_t or t = T-1, else ``X_t = G_{t+1}``.

    lambda = 0 gives TD(0); lambda = 1 gives TD(1) (for inputs where terminated implies done).
    ``rolling_gamma=False``: ``gamma[k]`` and ``lmbda[k]`` are used for the whole future of step k
    (needs gamma or lmbda as an array).
    """
    nv, r, d, tm, _ = _prepare(next_value, reward, done, terminated)
    g = per_step("gamma", gamma, r.shape)
    lm = per_step("lmbda", lmbda, r.shape)
    floats = {"g": g, "lm": lm, "nv": nv, "r": r}
    if rolling_gamma is None or rolling_gamma:
        return _run(_td_lambda_rolling, floats, {"d": d, "tm": tm}, time_dim, 1)
    if np.asarray(gamma).ndim == 0 and np.asarray(lmbda).ndim == 0:
        raise ValueError("rolling_gamma=False needs a per-step gamma or lmbda array of the reward's shape")
    return _run(_td_lambda_fixed, floats, {"d": d, "tm": tm}, time_dim, 1)


def td_lambda_advantage(gamma, lmbda, value, next_value, reward, done, terminated=None, rolling_gamma=None, *,
                        time_dim=-2):
    """``td_lambda_return - value``."""
    nv, r, d, tm, v = _prepare(next_value, reward, done, terminated, value)
    return td_lambda_return(gamma, lmbda, nv, r, d, tm, rolling_gamma, time_dim=time_dim) - v


# --------------------------------------------------------------------------------------------------------------
# GAE (Schulman et al. 2016)
# --------------------------------------------------------------------------------------------------------------


def _gae(g, lm, v, nv, r, d, tm):
    T = len(r)
    adv = [0.0] * T
    nxt = 0.0  # A_T = 0
    for t in reversed(range(T)):
        delta = r[t] - v[t] + (0.0 if tm[t] else g[t] * nv[t])
        a = delta if d[t] else delta + g[t] * lm[t] * nxt
        adv[t] = a
        nxt = a
    target = [a + vv for a, vv in zip(adv, v)]
    return adv, target


def gae(gamma, lmbda, value, next_value, reward, done, terminated=None, *, time_dim=-2):
    """Generalized advantage estimate -> ``(advantage, value_target)``.

    ``delta_t = r_t + gamma_t (1 - terminated_t) V(s_{t+1}) - V(s_t)``
    ``A_t = delta_t + gamma_t lambda_t (1 - done_t) A_{t+1}``, ``A_T = 0``; ``value_target = A + V``.
    """
    nv, r, d, tm, v = _prepare(next_value, reward, done, terminated, value)
    g = per_step("gamma", gamma, r.shape)
    lm = per_step("lmbda", lmbda, r.shape)
    return _run(_gae, {"g": g, "lm": lm, "v": v, "nv": nv, "r": r}, {"d": d, "tm": tm}, time_dim, 2)


# --------------------------------------------------------------------------------------------------------------
# V-trace (Espeholt et al. 2018)
# --------------------------------------------------------------------------------------------------------------


def _vtrace(g, lp, lmu, v, nv, r, d, tm, rho_thresh, c_thresh):
    T = len(r)
    rho = [math.exp(a - b) for a, b in zip(lp, lmu)]
    rho_bar = [min(x, rho_thresh) for x in rho]
    c_bar = [min(x, c_thresh) for x in rho]
    vs = [0.0] * T
    acc = 0.0  # vs_T - V_T := 0
    for t in reversed(range(T)):
        delta = rho_bar[t] * (r[t] - v[t] + (0.0 if tm[t] else g[t] * nv[t]))
        acc = delta if d[t] else delta + g[t] * c_bar[t] * acc
        vs[t] = acc + v[t]
    adv = [0.0] * T
    for t in range(T):
        vs_next = nv[t] if (d[t] or t == T - 1) else vs[t + 1]
        adv[t] = rho_bar[t] * (r[t] - v[t] + (0.0 if tm[t] else g[t] * vs_next))
    return adv, vs


def vtrace(gamma, log_pi, log_mu, value, next_value, reward, done, terminated=None, rho_thresh=1.0, c_thresh=1.0,
           *, time_dim=-2):
    """V-trace targets and policy-gradient advantages -> ``(advantage, vs)``.

    ``rho_t = exp(log_pi_t - log_mu_t)`` (pi: current/target policy, mu: behaviour policy),
    ``rho_bar = min(rho, rho_thresh)``, ``c_bar = min(rho, c_thresh)``;
    ``delta_t = rho_bar_t (r_t + gamma_t (1 - terminated_t) V(s_{t+1}) - V(s_t))``;
    ``vs_t - V(s_t) = delta_t + gamma_t (1 - done_t) c_bar_t (vs_{t+1} - V(s_{t+1}))`` (0 beyond the rollout);
    ``adv_t = rho_bar_t (r_t + gamma_t (1 - terminated_t) vs'_{t+1} - V(s_t))`` with ``vs'_{t+1} = vs_{t+1}``,
    replaced by ``V(s_{t+1})`` (``next_value[t]``) where done_t and at the last step.
    """
    nv, r, d, tm, v = _prepare(next_value, reward, done, terminated, value)
    lp = as_f64("log_pi", log_pi)
    lmu = as_f64("log_mu", log_mu)
    check_same_shape(reward=r, log_pi=lp, log_mu=lmu)
    g = per_step("gamma", gamma, r.shape)
    rt, ct = float(rho_thresh), float(c_thresh)
    return _run(lambda **kw: _vtrace(**kw, rho_thresh=rt, c_thresh=ct),
                {"g": g, "lp": lp, "lmu": lmu, "v": v, "nv": nv, "r": r}, {"d": d, "tm": tm}, time_dim, 2)


# --------------------------------------------------------------------------------------------------------------
# reward-to-go
# --------------------------------------------------------------------------------------------------------------


def _r2g(g, r, d):
    T = len(r)
    out = [0.0] * T
    for t in reversed(range(T)):
        out[t] = r[t] if (d[t] or t == T - 1) else r[t] + g[t] * out[t + 1]
    return out


def reward2go(reward, done, gamma, *, time_dim=-2):
    """Discounted reward-to-go inside each trajectory, no bootstrap: ``R_t = r_t + gamma_t (1 - done_t) R_{t+1}``,
    ``R_{T-1} = r_{T-1}``.
    """
    r = as_f64("reward", reward)
    d = as_bool("done", done)
    check_same_shape(reward=r, done=d)
    g = per_step("gamma", gamma, r.shape)
    return _run(_r2g, {"g": g, "r": r}, {"d": d}, time_dim, 1)
