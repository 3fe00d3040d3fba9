"""Per-sample float64 loops for the Dreamer (v1) and DreamerV3 losses (NumPy + math only, never arrayrl).

Written from Hafner et al. 2020, "Dream to Control" (arXiv:1912.01603; the lambda-return is eq. 6), Hafner et al.
2023, "Mastering Diverse Domains through World Models" (DreamerV3, arXiv:2301.04104), and TorchRL 0.14.1's
documented reductions. Inputs are **network outputs** along already-imagined trajectories (rewards, values,
continuations, log-probs, entropies, logits), never networks. Shapes: ``[B, H]`` (batch of start states by
imagination horizon) unless said otherwise; ``[B, H, 1]`` is accepted wherever ``[B, H]`` is.

Imagination (one trajectory, ``t = 0 .. H-1``; ``V'_t = V(s_{t+1})``, ``c_t`` the continuation at ``s_{t+1}``)::

    G_{H-1} = r_{H-1} + gamma c_{H-1} V'_{H-1}
    G_t     = r_t + gamma c_t ((1 - lambda) V'_t + lambda G_{t+1})          (c = 1 without a continuation model)
    w_0 = c^root_0,  w_t = w_{t-1} gamma c^root_t   (c^root = [c(s_0), c_0, ..., c_{H-2}]; 1 without the model)

``torchrl_compat=True`` (no continuation model): TorchRL's one-step ``G_t = r_t + gamma V'_t`` (TorchRL #987).

Losses (``mean_b`` over start states, ``sum_t`` over the horizon):

* :func:`dreamer_actor_loss`: ``-mean_b sum_t w_t G_t`` (``w_t = gamma^t`` with ``discount_loss``, else 1).
* :func:`dreamer_value_loss`: ``mean_b sum_t w_t d(V_t, G_t)`` with ``d`` TorchRL's distance (``l2 = (a - b)^2``:
  no 1/2).
* :func:`dreamer_model_loss`: Gaussian ``KL(q || p)`` per latent unit, summed over units (unless
  ``global_average``), clipped below at ``free_nats`` per sample (``delayed_clamp``: after the mean), averaged;
  reconstruction ``mean_b sum_{C,H,W} d(x, x_hat)``; reward ``mean d(r, r_hat)``; each times its ``lambda_*``.
* :func:`dreamer_v3_actor_loss`: return scale ``S = max(hi - lo, min_scale)`` of the EMA of the 5 %/95 % quantiles
  of ``G`` (updated before use in training mode), reparameterised ``-mean_{b,t} w_t G_t / S`` or REINFORCE
  ``-mean w_t log pi_t (G_t - V_t) / S``, minus ``entropy_bonus mean w_t H_t``.
* :func:`dreamer_v3_value_loss`: per step ``(symlog V - symlog G)^2`` or the two-hot cross-entropy of the value
  logits, plus ``slow_reg`` times the same towards the slow critic's value, weighted by ``w`` (given) or
  ``gamma^t``, then TorchRL's reduction.
* :func:`replay_value_loss`: the same step loss on a replay sequence against TD(lambda) targets at
  ``gamma = 1 - 1 / horizon`` bootstrapped from the imagined returns, weighted by ``not done``.
* :func:`dreamer_v3_model_loss`: the KL terms (``balanced`` or ``separate``, from :mod:`reference.dreamer`),
  symlog reconstruction per head, two-hot (or symlog-MSE) reward, continue BCE on ``(1 - terminated) scale``.

Scalar outputs are Python floats (arrayrl's have shape ``[1]`` or ``()``).
"""

from __future__ import annotations

import math

import numpy as np

from .. import dreamer as D
from ..value import td_lambda_return
from .common import distance_scalar, reduce

__all__ = ["lambda_return", "discount_weights", "percentile_update", "dreamer_actor_loss", "dreamer_value_loss",
           "dreamer_model_loss", "dreamer_v3_actor_loss", "dreamer_v3_value_loss", "replay_value_target",
           "replay_value_loss", "dreamer_v3_model_loss", "symexp_bins"]


def _bh(name: str, x) -> np.ndarray:
    """``[B, H]`` float64 (a trailing singleton is dropped)."""
    a = np.array(x, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected [B, H] or [B, H, 1], got shape {a.shape}")
    return a


# ------------------------------------------------------------------------------------------------ imagination
def lambda_return(reward, next_value, gamma: float, lmbda: float, continuation=None, *,
                  torchrl_compat: bool = False) -> np.ndarray:
    """``G [B, H]`` from ``reward``, ``next_value = V(s_{t+1})`` and ``continuation`` (``c`` at ``s_{t+1}``), all
    ``[B, H]`` (module docstring); ``lmbda = 0`` is TD(0), ``lmbda = 1`` the discounted sum bootstrapped at ``H``."""
    r, v = _bh("reward", reward), _bh("next_value", next_value)
    c = np.ones(r.shape) if continuation is None else _bh("continuation", continuation)
    b, h = r.shape
    out = np.zeros((b, h))
    for i in range(b):
        if torchrl_compat and continuation is None:
            for t in range(h):
                out[i, t] = float(r[i, t]) + gamma * float(v[i, t])
            continue
        g = float(r[i, h - 1]) + gamma * float(c[i, h - 1]) * float(v[i, h - 1])
        out[i, h - 1] = g
        for t in range(h - 2, -1, -1):
            g = float(r[i, t]) + gamma * float(c[i, t]) * ((1.0 - lmbda) * float(v[i, t]) + lmbda * g)
            out[i, t] = g
    return out


def discount_weights(shape: tuple, gamma: float, root_continuation=None) -> np.ndarray:
    """``w [B, H]``: ``w_0 = c_0``, ``w_t = w_{t-1} gamma c_t`` (``c`` = ``root_continuation`` or 1)."""
    b, h = shape
    c = np.ones((b, h)) if root_continuation is None else _bh("root_continuation", root_continuation)
    out = np.zeros((b, h))
    for i in range(b):
        w = float(c[i, 0])
        out[i, 0] = w
        for t in range(1, h):
            w = w * gamma * float(c[i, t])
            out[i, t] = w
    return out


def _quantile(values: list, q: float) -> float:
    """``torch.quantile`` (linear interpolation between order statistics)."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def percentile_update(returns, low: float, high: float, *, quantiles=(0.05, 0.95), rate: float = 0.01) -> tuple:
    """DreamerV3's return statistics: ``lo <- lo + rate (quantile(G, q_lo) - lo)``, same for ``hi``."""
    vals = [float(v) for v in np.asarray(returns, dtype=np.float64).ravel()]
    return (low + rate * (_quantile(vals, quantiles[0]) - low), high + rate * (_quantile(vals, quantiles[1]) - high))


# ------------------------------------------------------------------------------------------------ Dreamer v1
def dreamer_actor_loss(reward, next_value, gamma: float = 0.99, lmbda: float = 0.95, *, discount_loss: bool = True,
                       torchrl_compat: bool = False) -> tuple:
    """``(loss_actor, G [B, H])``: ``-mean_b sum_t w_t G_t``."""
    g = lambda_return(reward, next_value, gamma, lmbda, torchrl_compat=torchrl_compat)
    b, h = g.shape
    total = 0.0
    for i in range(b):
        total += sum((gamma ** t if discount_loss else 1.0) * float(g[i, t]) for t in range(h))
    return -total / b, g


def dreamer_value_loss(value, lambda_target, gamma: float = 0.99, *, discount_loss: bool = True,
                       value_loss: str = "l2") -> float:
    """``mean_b sum_t w_t d(V_t, G_t)`` (``w_t = gamma^t`` or 1)."""
    v, g = _bh("value", value), _bh("lambda_target", lambda_target)
    b, h = v.shape
    total = 0.0
    for i in range(b):
        for t in range(h):
            w = gamma ** t if discount_loss else 1.0
            total += w * distance_scalar(float(v[i, t]), float(g[i, t]), value_loss)
    return total / b


def _gauss_kl(mp: float, sp: float, mq: float, sq: float) -> float:
    """``KL(N(mq, sq) || N(mp, sp))``."""
    return math.log(sp / sq) + (sq * sq + (mp - mq) ** 2) / (2.0 * sp * sp) - 0.5


def dreamer_model_loss(prior_mean, prior_std, posterior_mean, posterior_std, pixels, reco_pixels, true_reward,
                       reward, *, lambda_kl: float = 1.0, lambda_reco: float = 1.0, lambda_reward: float = 1.0,
                       reco_loss: str = "l2", reward_loss: str = "l2", free_nats: float = 3.0,
                       delayed_clamp: bool = False, global_average: bool = False) -> dict:
    """Dreamer's world-model loss. ``prior_*``/``posterior_*`` ``[N, S]`` (leading axes flattened by the caller),
    ``pixels``/``reco_pixels`` ``[N, C, H, W]``, rewards ``[N]`` or ``[N, 1]``."""
    mp, sp = np.asarray(prior_mean, np.float64), np.asarray(prior_std, np.float64)
    mq, sq = np.asarray(posterior_mean, np.float64), np.asarray(posterior_std, np.float64)
    n, s = mp.shape
    kls = []
    for i in range(n):
        per = [_gauss_kl(mp[i, j], sp[i, j], mq[i, j], sq[i, j]) for j in range(s)]
        kls += per if global_average else [sum(per)]
    if delayed_clamp:
        kl = max(sum(kls) / len(kls), free_nats)
    else:
        kl = sum(max(v, free_nats) for v in kls) / len(kls)
    x, xh = np.asarray(pixels, np.float64), np.asarray(reco_pixels, np.float64)
    per_sample = []
    for i in range(n):
        d = [distance_scalar(float(a), float(b), reco_loss) for a, b in zip(x[i].ravel(), xh[i].ravel())]
        per_sample += d if global_average else [sum(d)]
    reco = sum(per_sample) / len(per_sample)
    rt, rp = np.asarray(true_reward, np.float64).ravel(), np.asarray(reward, np.float64).ravel()
    rew = sum(distance_scalar(float(a), float(b), reward_loss) for a, b in zip(rt, rp)) / len(rt)
    return {"loss_model_kl": lambda_kl * kl, "loss_model_reco": lambda_reco * reco,
            "loss_model_reward": lambda_reward * rew}


# ------------------------------------------------------------------------------------------------ DreamerV3
def dreamer_v3_actor_loss(reward, next_value, gamma: float = 0.99, lmbda: float = 0.95, *, continuation=None,
                          first_continuation=None, discount_loss: bool = True, torchrl_compat: bool = False,
                          use_reinforce: bool = False, log_prob=None, baseline=None, entropy=None,
                          entropy_bonus: float = 0.0, return_normalization: bool = True, training: bool = True,
                          low: float = 0.0, high: float = 0.0, quantiles=(0.05, 0.95), rate: float = 0.01,
                          min_scale: float = 1.0) -> dict:
    """DreamerV3's actor loss on an imagined batch (module docstring). ``continuation [B, H]`` (at ``s_{t+1}``) and
    ``first_continuation [B]`` (at ``s_0``) come together; ``log_prob`` (of the taken actions), ``baseline``
    (``V(s_t)``) and ``entropy`` are ``[B, H]``; ``low``/``high`` the return statistics before the call.
    Returns the outputs plus ``lambda_target`` and ``discount_weight`` (``[B, H]``)."""
    g = lambda_return(reward, next_value, gamma, lmbda, continuation, torchrl_compat=torchrl_compat)
    b, h = g.shape
    root = None
    if continuation is not None:
        c = _bh("continuation", continuation)
        first = np.asarray(first_continuation, np.float64).reshape(b)
        root = np.zeros((b, h))
        for i in range(b):
            root[i, 0] = first[i]
            for t in range(1, h):
                root[i, t] = c[i, t - 1]
    w = discount_weights((b, h), gamma, root) if discount_loss else np.ones((b, h))
    if return_normalization and training:
        low, high = percentile_update(g, low, high, quantiles=quantiles, rate=rate)
    scale = max(high - low, min_scale) if return_normalization else 1.0
    lp = _bh("log_prob", log_prob) if use_reinforce else None
    base = _bh("baseline", baseline) if use_reinforce else None
    total = 0.0
    for i in range(b):
        for t in range(h):
            if use_reinforce:
                total += w[i, t] * lp[i, t] * (g[i, t] - base[i, t]) / scale
            else:
                total += w[i, t] * g[i, t] / scale
    loss = -total / (b * h)
    ent = 0.0
    if entropy_bonus > 0:
        e = _bh("entropy", entropy)
        ent = sum(w[i, t] * e[i, t] for i in range(b) for t in range(h)) / (b * h)
        loss -= entropy_bonus * ent
    cont_mean = 1.0 if continuation is None else float(sum(_bh("c", continuation).ravel())) / (b * h)
    return {"loss_actor": loss, "actor_entropy": ent, "return_low": low, "return_high": high,
            "return_scale": scale, "continuation_mean": cont_mean, "lambda_target": g, "discount_weight": w}


def symexp_bins(n: int) -> np.ndarray:
    """``symexp(linspace(-20, 20, n))`` (DreamerV3's support; arrayrl builds it exactly antisymmetric)."""
    return D.symexp(np.array([-20.0 + 40.0 * k / (n - 1) for k in range(n)]))


def _step_loss(pred, target: float, kind: str, bins) -> float:
    """``pred``: a value (``"symlog_mse"``) or a row of logits (``"two_hot"``)."""
    if kind == "two_hot":
        return float(D.two_hot_cross_entropy(np.asarray(pred)[None, :], np.array([target]), bins)[0])
    d = float(D.symlog(np.array([pred]))[0]) - float(D.symlog(np.array([target]))[0])
    return d * d


def _preds(pred, kind: str):
    p = np.asarray(pred, dtype=np.float64)
    return p if kind == "two_hot" else _bh("value", p)


def dreamer_v3_value_loss(pred, lambda_target, *, value_loss: str = "symlog_mse", weight=None,
                          discount_loss: bool = True, gamma: float = 0.99, slow_value=None, slow_reg: float = 0.0,
                          reduction: str = "mean", bins=None) -> dict:
    """``pred``: values ``[B, T]`` (``"symlog_mse"``) or logits ``[B, T, n]`` (``"two_hot"``, on ``bins``);
    ``weight [B, T]`` (``discount_weight``) or ``gamma^t`` / 1; ``slow_value [B, T]`` the slow critic's value."""
    p = _preds(pred, value_loss)
    g = _bh("lambda_target", lambda_target)
    b, h = g.shape
    w = _bh("weight", weight) if weight is not None else np.array(
        [[gamma ** t if discount_loss else 1.0 for t in range(h)] for _ in range(b)])
    loss, slow = np.zeros((b, h)), np.zeros((b, h))
    for i in range(b):
        for t in range(h):
            step = _step_loss(p[i, t], float(g[i, t]), value_loss, bins)
            if slow_reg:
                slow[i, t] = _step_loss(p[i, t], float(slow_value[i][t]), value_loss, bins)
                step += slow_reg * slow[i, t]
            loss[i, t] = w[i, t] * step
            slow[i, t] = w[i, t] * slow[i, t]
    return {"loss_value": reduce(loss, reduction), "value_slow_loss": reduce(slow, reduction)}


def replay_value_target(reward, done, terminated, bootstrap, horizon: float = 333.0, lmbda: float = 0.95):
    """``[B, T - 1]``: element ``k`` is the TD(lambda) return from step ``k + 1`` on (rewards, flags, bootstraps
    ``[k + 1:]``), ``gamma = 1 - 1 / horizon``."""
    r, bt = _bh("reward", reward), _bh("bootstrap", bootstrap)
    d = np.asarray(done, dtype=bool).reshape(r.shape)
    tm = np.asarray(terminated, dtype=bool).reshape(r.shape)
    g = td_lambda_return(1.0 - 1.0 / horizon, lmbda, bt[:, 1:, None], r[:, 1:, None], d[:, 1:, None],
                         tm[:, 1:, None])
    return np.asarray(g)[..., 0]


def replay_value_loss(pred, reward, done, terminated, bootstrap, *, horizon: float = 333.0, lmbda: float = 0.95,
                      value_loss: str = "symlog_mse", slow_value=None, slow_reg: float = 0.0,
                      reduction: str = "mean", bins=None) -> float:
    """The critic's loss on a replay sequence ``[B, T]``: step ``k < T - 1`` against :func:`replay_value_target`,
    weighted by ``not done_k`` (plus ``slow_reg`` times the loss towards ``slow_value``)."""
    target = replay_value_target(reward, done, terminated, bootstrap, horizon, lmbda)
    p = _preds(pred, value_loss)
    d = np.asarray(done, dtype=bool).reshape(target.shape[0], -1)
    b, t1 = target.shape
    out = np.zeros((b, t1))
    for i in range(b):
        for k in range(t1):
            step = _step_loss(p[i, k], float(target[i, k]), value_loss, bins)
            if slow_reg:
                step += slow_reg * _step_loss(p[i, k], float(slow_value[i][k]), value_loss, bins)
            out[i, k] = (0.0 if d[i, k] else 1.0) * step
    return float(reduce(out, reduction))


def _bce_logits(logit: float, target: float) -> float:
    """``softplus(l) - l y`` (stable)."""
    return max(logit, 0.0) + math.log1p(math.exp(-abs(logit))) - logit * target


def dreamer_v3_model_loss(true_reward, prior_logits, posterior_logits, heads, *, reward_logits=None,
                          reward=None, continue_logits=None, terminated=None, lambda_kl: float = 1.0,
                          lambda_reco: float = 1.0, lambda_reward: float = 1.0, lambda_continue: float = 0.0,
                          kl_mode: str = "balanced", lambda_dynamic: float = 1.0,
                          lambda_representation: float = 0.1, unimix: float = 0.0,
                          continue_target_scale: float = 1.0, kl_alpha: float = 0.8, free_bits: float = 1.0,
                          reco_loss: str = "l2", global_average: bool = False, bins=None) -> dict:
    """DreamerV3's world-model loss on ``N`` samples (leading axes flattened by the caller).

    ``true_reward [N]``; logits ``[N, C, K]``; ``heads``: ``[(x [N, ...], x_hat [N, ...], symlog: bool), ...]``
    (integer ``x`` is divided by 255 without symlog); ``reward_logits [N, n]`` on ``bins`` (two-hot) or ``reward
    [N]`` (symlog-MSE); ``continue_logits [N]``, ``terminated [N]`` (bool) when ``lambda_continue > 0``."""
    rt = np.asarray(true_reward, np.float64).ravel()
    n = len(rt)
    res: dict = {}
    reco = 0.0
    for x, xh, use_symlog in heads:
        xa = np.asarray(x)
        xf = np.asarray(xa, dtype=np.float64)
        if not use_symlog and xa.dtype.kind in "iub":
            xf = xf / 255.0
        xh = np.asarray(xh, np.float64)
        if use_symlog:
            xf, xh = D.symlog(xf), D.symlog(xh)
        per = []
        for i in range(n):
            e = [float(a) - float(b) for a, b in zip(xf[i].ravel(), xh[i].ravel())]
            d = [v * v if reco_loss == "l2" else abs(v) for v in e]
            per += d if global_average else [sum(d)]
        reco += sum(per) / len(per)
    res["loss_model_reco"] = lambda_reco * reco
    if reward_logits is not None:
        ce = D.two_hot_cross_entropy(np.asarray(reward_logits, np.float64), rt, bins)
        rl = sum(float(v) for v in ce) / n
    else:
        rp = np.asarray(reward, np.float64).ravel()
        rl = sum((float(D.symlog(np.array([a]))[0]) - float(D.symlog(np.array([b]))[0])) ** 2
                 for a, b in zip(rt, rp)) / n
    res["loss_model_reward"] = lambda_reward * rl
    if kl_mode == "separate":
        dyn, rep = D.categorical_kl_terms(posterior_logits, prior_logits, free_nats=free_bits, unimix=unimix)
        res["loss_model_dynamic"] = lambda_kl * lambda_dynamic * dyn
        res["loss_model_representation"] = lambda_kl * lambda_representation * rep
    else:
        res["loss_model_kl"] = lambda_kl * D.categorical_kl_balanced(posterior_logits, prior_logits,
                                                                     alpha=kl_alpha, free_bits=free_bits)
    if lambda_continue > 0:
        cl = np.asarray(continue_logits, np.float64).ravel()
        tm = np.asarray(terminated, dtype=bool).ravel()
        bce = [_bce_logits(float(cl[i]), (0.0 if tm[i] else 1.0) * continue_target_scale) for i in range(n)]
        res["loss_model_continue"] = lambda_continue * sum(bce) / n
    return res
