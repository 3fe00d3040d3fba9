"""Decision Transformer, Online Decision Transformer and RND losses, one element at a time (network outputs in).

Chen et al. 2021 (DT, arXiv:2106.01345), Zheng et al. 2022 (ODT, arXiv:2202.05607), Burda et al. 2018 (RND,
arXiv:1810.12894); TorchRL 0.14.1's conventions (catalog 5.11, 5.12, 5.28).

DT (elementwise over [B, T, A]; ``valid`` = the attention mask, broadcast over A)::

    loss = reduce(dist(pred, target))                 mean over the valid elements only

ODT (per position (b, t); ``lp_k`` = log pi(x_k) of the S entropy draws, ``ll`` = log pi(a_target))::

    H = -(1/S) sum_k lp_k;   alpha = exp(clamped log_alpha)
    loss_log_likelihood = reduce(-ll);   loss_entropy = reduce(-alpha H);   loss_alpha = reduce(alpha (H - H_target))
    entropy = mean H;   alpha

Paper mode: every mean runs over the valid positions (attention_mask > 0) and ``reduction="none"`` has zeros at the
padded ones. ``torchrl_compat`` (TorchRL): the attention mask is ignored (``loss_mask`` -- TorchRL's collector mask --
is still applied to the ``loss_*`` means, not to ``entropy`` and not under ``reduction="none"``).

RND (per sample b; ``u_b`` the uniform draw)::

    x = clip((x - mean) / sqrt(max(var, 1e-8)), -clip, clip)    (with statistics)
    e_b = (1/F) sum_f (pred_bf - target_bf)^2;   m_b = u_b < update_fraction (all on if update_fraction == 1)
    mean: sum_b e_b m_b / max(sum_b m_b, 1);  sum: sum_b e_b m_b;  none: e_b m_b

Running statistics (TorchRL's RunningMeanStd): mean 0, var 1, count 1e-4 initially; a batch of n rows with mean
mb and population variance vb gives mean' = mean + d n / N, var' = (var c + vb n + d^2 c n / N) / N, N = c + n.
"""

from __future__ import annotations

import math

import numpy as np

from .._util import as_bool, as_f64
from .common import distance_scalar, reduce

__all__ = ["dt_loss", "online_dt_loss", "rnd_loss", "rms_init", "rms_update", "rms_normalize"]


def _valid(mask, shape: tuple) -> np.ndarray:
    """A [B, T] (or [B, T, 1]) mask (bool, or numeric: on where > 0) broadcast to ``shape``."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    m = as_bool("mask", m) if m.dtype == bool else as_f64("mask", m) > 0
    while m.ndim > len(shape) and m.shape[-1] == 1:
        m = m.reshape(m.shape[:-1])
    out = np.empty(shape, dtype=bool)
    for i in np.ndindex(*shape):
        out[i] = bool(m[i[: m.ndim]])
    return out


def dt_loss(pred, target, *, loss_function: str = "l2", reduction: str = "mean", attention_mask=None,
            loss_mask=None, torchrl_compat: bool = False):
    """DTLoss ``{"loss": ...}`` from the actor's prediction and the target action (both [B, T, A])."""
    p, a = as_f64("pred", pred), as_f64("target", target)
    if p.shape != a.shape:
        raise ValueError(f"target: expected shape {p.shape}, got {a.shape}")
    el = np.empty(p.shape)
    for i in np.ndindex(*p.shape):
        el[i] = distance_scalar(float(p[i]), float(a[i]), loss_function)
    m = _valid(loss_mask, p.shape)
    if not torchrl_compat:
        m &= _valid(attention_mask, p.shape)
    return {"loss": reduce(el, reduction, mask=m)}


def _clamp_log_alpha(la: float, min_alpha, max_alpha) -> float:
    if bool(min_alpha) != bool(max_alpha):
        min_alpha = min_alpha if min_alpha else 0.0
        max_alpha = max_alpha if max_alpha else 1e9
    if min_alpha:
        la = max(la, math.log(min_alpha))
    if max_alpha:
        la = min(la, math.log(max_alpha))
    return la


def online_dt_loss(log_likelihood, sample_log_probs, *, log_alpha: float, target_entropy: float, min_alpha=None,
                   max_alpha=None, reduction: str = "mean", attention_mask=None, loss_mask=None,
                   torchrl_compat: bool = False) -> dict:
    """OnlineDTLoss outputs from ``log pi(a_target)`` [B, T] and the S draws' log-probs [S, B, T]."""
    ll = as_f64("log_likelihood", log_likelihood)
    lp = as_f64("sample_log_probs", sample_log_probs)
    if lp.shape[1:] != ll.shape:
        raise ValueError(f"sample_log_probs: expected shape [S, *{ll.shape}], got {lp.shape}")
    S = lp.shape[0]
    H = np.empty(ll.shape)
    for i in np.ndindex(*ll.shape):
        H[i] = -sum(float(lp[(k,) + i]) for k in range(S)) / S
    alpha = math.exp(_clamp_log_alpha(float(log_alpha), min_alpha, max_alpha))
    lm = _valid(loss_mask, ll.shape)
    m = lm if torchrl_compat else lm & _valid(attention_mask, ll.shape)
    terms = {"loss_log_likelihood": -ll, "loss_entropy": -alpha * H, "loss_alpha": alpha * (H - target_entropy)}
    out = {}
    for k, v in terms.items():
        if torchrl_compat and reduction == "none":
            out[k] = v.copy()  # TorchRL applies no mask under "none"
        else:
            out[k] = reduce(v, reduction, mask=m)
    if torchrl_compat:
        out["entropy"] = np.float64(sum(float(h) for h in H.ravel()) / H.size)
    else:
        out["entropy"] = reduce(H, "mean", mask=m)
    out["alpha"] = np.float64(alpha)
    return out


def rms_init(shape: tuple, epsilon: float = 1e-4) -> dict:
    return {"mean": np.zeros(shape), "var": np.ones(shape), "count": np.float64(epsilon)}


def rms_update(x, state: dict) -> dict:
    """Fold the rows of ``x`` [N, *shape] into the statistics (population variance of the batch)."""
    x = as_f64("x", x)
    shape = state["mean"].shape
    rows = x.reshape((-1,) + shape)
    n = rows.shape[0]
    c = float(state["count"])
    mean, var = np.empty(shape), np.empty(shape)
    for j in np.ndindex(*shape):
        vals = [float(rows[(r,) + j]) for r in range(n)]
        mb = sum(vals) / n
        vb = sum((v - mb) ** 2 for v in vals) / n
        d = mb - float(state["mean"][j])
        tot = c + n
        mean[j] = float(state["mean"][j]) + d * n / tot
        var[j] = (float(state["var"][j]) * c + vb * n + d * d * c * n / tot) / tot
    return {"mean": mean, "var": var, "count": np.float64(c + n)}


def rms_normalize(x, state: dict, clip=None) -> np.ndarray:
    x = as_f64("x", x)
    shape = state["mean"].shape
    out = np.empty(x.shape)
    for i in np.ndindex(*x.shape):
        j = i[len(i) - len(shape):] if shape else ()
        v = (float(x[i]) - float(state["mean"][j])) / math.sqrt(max(float(state["var"][j]), 1e-8))
        if clip is not None:
            v = min(max(v, -clip), clip)
        out[i] = v
    return out


def rnd_loss(pred_features, target_features, uniform=None, *, update_fraction: float = 0.25,
             reduction: str = "mean", loss_mask=None) -> dict:
    """RNDLoss ``{"loss_predictor": ...}`` from the two networks' features [*B, F] and the draws ``uniform`` [*B]."""
    p, t = as_f64("pred_features", pred_features), as_f64("target_features", target_features)
    if p.shape != t.shape:
        raise ValueError(f"target_features: expected shape {p.shape}, got {t.shape}")
    bshape, F = p.shape[:-1], p.shape[-1]
    e = np.empty(bshape)
    for b in np.ndindex(*bshape):
        e[b] = sum((float(p[b + (f,)]) - float(t[b + (f,)])) ** 2 for f in range(F)) / F
    drawn = np.ones(bshape, dtype=bool)
    if update_fraction < 1.0:
        u = as_f64("uniform", uniform)
        for b in np.ndindex(*bshape):
            drawn[b] = float(u[b]) < update_fraction
    lm = _valid(loss_mask, bshape)
    if reduction == "none":
        out = np.empty(bshape)
        for b in np.ndindex(*bshape):
            out[b] = e[b] if (drawn[b] and lm[b]) else 0.0
        return {"loss_predictor": out}
    return {"loss_predictor": reduce(e, reduction, mask=drawn & lm)}
