"""Float64 loop oracle for the DreamerV3 helpers and recurrent cells (NumPy + math only, never arrayrl).

Written from DreamerV3 (Hafner et al. 2023, arXiv:2301.04104) and TorchRL 0.14.1's documented semantics:

* ``symlog(x) = sign(x) log(1 + |x|)``, ``symexp(x) = sign(x) (e^|x| - 1)``;
* ``two_hot_encode``: per value, find the bracketing bins by a linear search, weights linear in raw space, values
  outside the support saturate at the end bins;
* ``two_hot_decode``: ``sum_k softmax_k b_k``; ``two_hot_cross_entropy``: ``-sum_k two_hot_k log_softmax_k``;
* ``categorical_kl_terms``: unimix probabilities, KL summed over categoricals and classes, clipped below at
  ``free_nats``, averaged (dyn and rep have the same value; they differ only in which side is stopped);
* ``categorical_kl_balanced``: softmax clamped at 1e-8, KL per categorical clipped at ``free_bits``, averaged;
* ``categorical_sample_index``: inverse-CDF class of a uniform draw (the first class whose cumulative probability
  reaches ``u``, the last one if none does), the one-hot of the straight-through sample;
* ``sigmoid``, ``silu``: per element (``1 / (1 + e^-x)`` branching on the sign for stability);
* ``gru_step``: ``torch.nn.GRUCell``'s equations unit by unit; ``rms_norm`` per row; ``block_gru_step``:
  DreamerV3's block-diagonal GRU cell, block by block.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["symlog", "symexp", "two_hot_encode", "two_hot_decode", "two_hot_cross_entropy",
           "categorical_kl_terms", "categorical_kl_balanced", "categorical_sample_index", "sigmoid", "silu",
           "gru_step", "rms_norm", "block_gru_step"]


def _sign(v: float) -> float:
    return 1.0 if v > 0 else (-1.0 if v < 0 else 0.0)


def symlog(x):
    x = np.asarray(x, dtype=np.float64)
    return np.array([_sign(v) * math.log1p(abs(v)) for v in x.ravel()]).reshape(x.shape)


def symexp(x):
    x = np.asarray(x, dtype=np.float64)
    return np.array([_sign(v) * math.expm1(abs(v)) for v in x.ravel()]).reshape(x.shape)


def two_hot_encode(x, bins):
    x = np.asarray(x, dtype=np.float64)
    bins = [float(b) for b in np.asarray(bins, dtype=np.float64)]
    n = len(bins)
    out = np.zeros(x.shape + (n,))
    for idx in np.ndindex(*x.shape):
        v = min(max(float(x[idx]), bins[0]), bins[-1])
        lo = 0
        for k in range(n - 1):  # the last bin whose left edge is <= v, at most n - 2
            if bins[k] <= v:
                lo = k
        w_up = (v - bins[lo]) / (bins[lo + 1] - bins[lo])
        out[idx + (lo,)] = 1.0 - w_up
        out[idx + (lo + 1,)] = w_up
    return out


def _log_softmax(row):
    m = max(row)
    s = sum(math.exp(v - m) for v in row)
    return [v - m - math.log(s) for v in row]


def two_hot_decode(logits, bins):
    logits = np.asarray(logits, dtype=np.float64)
    bins = np.asarray(bins, dtype=np.float64)
    out = np.zeros(logits.shape[:-1])
    for idx in np.ndindex(*out.shape):
        lp = _log_softmax(list(logits[idx]))
        out[idx] = sum(math.exp(a) * b for a, b in zip(lp, bins))
    return out


def two_hot_cross_entropy(logits, target, bins):
    logits = np.asarray(logits, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64).reshape(logits.shape[:-1])
    enc = two_hot_encode(target, bins)
    out = np.zeros(logits.shape[:-1])
    for idx in np.ndindex(*out.shape):
        lp = _log_softmax(list(logits[idx]))
        out[idx] = -sum(w * a for w, a in zip(enc[idx], lp))
    return out


def _probs(row, unimix):
    lp = _log_softmax(list(row))
    k = len(lp)
    return [(1.0 - unimix) * math.exp(a) + unimix / k for a in lp]


def categorical_kl_terms(posterior_logits, prior_logits, free_nats=1.0, unimix=0.01):
    q = np.asarray(posterior_logits, dtype=np.float64)
    p = np.asarray(prior_logits, dtype=np.float64)
    batch = q.shape[:-2]
    total, count = 0.0, 0
    for idx in np.ndindex(*batch):
        kl = 0.0
        for c in range(q.shape[-2]):
            qc, pc = _probs(q[idx + (c,)], unimix), _probs(p[idx + (c,)], unimix)
            kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(qc, pc))
        if free_nats:
            kl = max(kl, free_nats)
        total += kl
        count += 1
    value = total / count
    return value, value


def categorical_kl_balanced(posterior_logits, prior_logits, alpha=0.8, free_bits=1.0):
    q = np.asarray(posterior_logits, dtype=np.float64)
    p = np.asarray(prior_logits, dtype=np.float64)
    total, count = 0.0, 0
    for idx in np.ndindex(*q.shape[:-1]):
        qc = [max(v, 1e-8) for v in _probs(q[idx], 0.0)]
        pc = [max(v, 1e-8) for v in _probs(p[idx], 0.0)]
        kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(qc, pc))
        total += max(kl, free_bits)
        count += 1
    mean = total / count
    return alpha * mean + (1.0 - alpha) * mean


def categorical_sample_index(probs, uniform):
    """``[*B, K]`` probabilities and ``[*B]`` uniforms -> ``[*B]`` class indices (inverse CDF, loop over classes)."""
    probs = np.asarray(probs, dtype=np.float64)
    uniform = np.asarray(uniform, dtype=np.float64)
    out = np.zeros(probs.shape[:-1], dtype=np.int64)
    for idx in np.ndindex(*out.shape):
        u, c, k = float(uniform[idx]), 0.0, probs.shape[-1] - 1
        for j in range(probs.shape[-1]):
            c += float(probs[idx + (j,)])
            if u <= c:
                k = j
                break
        out[idx] = k
    return out


def _sigmoid(v):
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def sigmoid(x):
    x = np.asarray(x, dtype=np.float64)
    return np.array([_sigmoid(float(v)) for v in x.ravel()]).reshape(x.shape)


def silu(x):
    x = np.asarray(x, dtype=np.float64)
    return np.array([float(v) * _sigmoid(float(v)) for v in x.ravel()]).reshape(x.shape)


def _affine(w, b, x, row):
    return sum(float(w[row, j]) * float(x[j]) for j in range(len(x))) + (0.0 if b is None else float(b[row]))


def gru_step(params, x, h):
    """One GRUCell step on 1-D ``x [I]``, ``h [H]`` (torch layout, gates r, z, n)."""
    x = np.asarray(x, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    n_h = h.shape[0]
    wi, wh = params["weight_ih"], params["weight_hh"]
    bi, bh = params.get("bias_ih"), params.get("bias_hh")
    out = np.zeros(n_h)
    for u in range(n_h):
        r = _sigmoid(_affine(wi, bi, x, u) + _affine(wh, bh, h, u))
        z = _sigmoid(_affine(wi, bi, x, n_h + u) + _affine(wh, bh, h, n_h + u))
        n = math.tanh(_affine(wi, bi, x, 2 * n_h + u) + r * _affine(wh, bh, h, 2 * n_h + u))
        out[u] = (1.0 - z) * n + z * h[u]
    return out


def rms_norm(x, weight, eps):
    x = np.asarray(x, dtype=np.float64)
    ms = sum(float(v) * float(v) for v in x) / len(x)
    scale = 1.0 / math.sqrt(ms + eps)
    return np.array([float(v) * scale * (1.0 if weight is None else float(weight[i])) for i, v in enumerate(x)])


def _silu(v):
    return v * _sigmoid(v)


def _lin(layer, x):
    w, b = np.asarray(layer["weight"], dtype=np.float64), layer.get("bias")
    return np.array([_affine(w, b, x, r) for r in range(w.shape[0])])


def _block(layer, x):
    """Block-diagonal linear: block g maps x[g * bi:(g + 1) * bi] with weight[g] (in, out)."""
    w = np.asarray(layer["weight"], dtype=np.float64)
    g, bi, bo = w.shape
    out = np.zeros(g * bo)
    for blk in range(g):
        for o in range(bo):
            out[blk * bo + o] = sum(float(x[blk * bi + j]) * float(w[blk, j, o]) for j in range(bi))
    return out + np.asarray(layer["bias"], dtype=np.float64)


def block_gru_step(params, x, h, *, num_blocks, num_layers=1, eps=1e-4, update_bias=-1.0):
    """One DreamerV3BlockGRUCell step (SiLU) on 1-D ``x [I]``, ``h [H]`` with TorchRL's state_dict layout."""
    x = np.asarray(x, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    n_h = h.shape[0]
    hb = n_h // num_blocks
    px = [_silu(v) for v in rms_norm(_lin(params["input_linear"], x), params["input_norm"]["weight"], eps)]
    ph = [_silu(v) for v in rms_norm(_lin(params["hidden_linear"], h), params["hidden_norm"]["weight"], eps)]
    feats = px + ph
    v = []
    for blk in range(num_blocks):
        v += [float(a) for a in h[blk * hb:(blk + 1) * hb]] + feats
    v = np.array(v)
    for k in range(num_layers):
        v = _block(params["dynamic_linears"][str(k)], v)
        v = np.array([_silu(a) for a in rms_norm(v, params["dynamic_norms"][str(k)]["weight"], eps)])
    gates = _block(params["gates"], v)
    out = np.zeros(n_h)
    for blk in range(num_blocks):
        base = blk * 3 * hb
        for j in range(hb):
            r = _sigmoid(gates[base + j])
            c = math.tanh(r * gates[base + hb + j])
            u = _sigmoid(gates[base + 2 * hb + j] + update_bias)
            out[blk * hb + j] = u * c + (1.0 - u) * h[blk * hb + j]
    return out
