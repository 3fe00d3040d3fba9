"""Slow float64 reference for the distributions used by the losses (log-prob, entropy, samples from given noise).

One loop per element with ``math`` functions.  Shapes: parameters and values broadcast (NumPy rules); event
dimensions are the trailing ``event_dims`` axes of the broadcast shape and are summed over.

TorchRL 0.14.1 conventions reproduced (``torchrl/modules/distributions/{continuous,discrete}.py``):

* ``IndependentNormal``: Normal with the last dim as event (log-prob summed over it).
* ``TanhNormal(loc, scale, low=-1, high=1, event_dims=1)``: pre-tanh ``u ~ Normal(loc, scale)``,
  ``action = mid + half * tanh(u)`` with ``mid = (high + low) / 2``, ``half = (high - low) / 2``
  (equivalently ``low + (high - low) (tanh(u) + 1) / 2``).
  ``log p(action) = log N(u; loc, scale) - log(1 - tanh(u)^2) - log(half)`` summed over the event dims, with
  ``u = atanh((action - mid) / half)`` and ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``.
  TorchRL's "safe" tanh clamps ``tanh(u)`` (and the argument of atanh) to ``+-(1 - eps)`` with
  ``eps = torch.finfo(dtype).resolution`` (1e-15 in float64, 1e-6 in float32): ``clamp_eps`` below.
  ``tanh_loc=True`` replaces loc by ``upscale * tanh(loc / upscale)`` and, as TorchRL does, then adds ``mid``
  (an action-space offset added to a pre-tanh location: a TorchRL quirk; irrelevant for the default
  ``low=-1, high=1`` where mid = 0).
* ``OneHotCategorical.log_prob(v) = Categorical.log_prob(argmax(v))`` (first maximal index).
* ``Categorical`` / ``OneHotCategorical`` entropy ``-sum_k p_k log p_k`` (terms with p_k = 0 contribute 0).
* ``Delta(param, atol=1e-6, rtol=1e-6)``: log-prob ``+inf`` where ``|v - param| < atol + rtol |param|`` for every
  event element, else ``-inf``.
"""

from __future__ import annotations

import math

import numpy as np

from ._util import as_f64, as_index, log_softmax_row, softplus

__all__ = [
    "normal_log_prob",
    "normal_entropy",
    "independent_normal_log_prob",
    "independent_normal_entropy",
    "tanh_normal_log_prob",
    "tanh_normal_rsample",
    "tanh_normal_deterministic_sample",
    "categorical_log_prob",
    "categorical_entropy",
    "one_hot_categorical_log_prob",
    "one_hot_categorical_entropy",
    "delta_log_prob",
]

LOG_2PI = math.log(2.0 * math.pi)
FLOAT64_RESOLUTION = 1e-15  # torch.finfo(torch.float64).resolution


def _broadcast(**named):
    arrs = {k: as_f64(k, v) for k, v in named.items()}
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrs.values()))
    except ValueError as err:
        desc = ", ".join(f"{k}{tuple(a.shape)}" for k, a in arrs.items())
        raise ValueError(f"shapes do not broadcast: {desc}") from err
    return shape, {k: np.broadcast_to(a, shape) for k, a in arrs.items()}


def _sum_event(x: np.ndarray, event_dims: int) -> np.ndarray:
    if event_dims < 0 or event_dims > x.ndim:
        raise ValueError(f"event_dims: expected 0..{x.ndim}, got {event_dims}")
    batch_shape = x.shape[: x.ndim - event_dims]
    out = np.zeros(batch_shape, dtype=np.float64)
    for b in np.ndindex(*batch_shape):
        total = 0.0
        for e in np.ndindex(*x.shape[x.ndim - event_dims :]):
            total += float(x[b + e])
        out[b] = total
    return out


# -- Normal ----------------------------------------------------------------------------------------------------


def _normal_lp(x: float, mu: float, sigma: float) -> float:
    z = (x - mu) / sigma
    return -0.5 * z * z - math.log(sigma) - 0.5 * LOG_2PI


def normal_log_prob(value, loc, scale):
    """Elementwise ``log N(value; loc, scale) = -(v - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2``."""
    shape, a = _broadcast(value=value, loc=loc, scale=scale)
    out = np.empty(shape, dtype=np.float64)
    for i in np.ndindex(*shape):
        out[i] = _normal_lp(float(a["value"][i]), float(a["loc"][i]), float(a["scale"][i]))
    return out


def normal_entropy(scale):
    """Elementwise ``1/2 + log(2 pi)/2 + log sigma``."""
    s = as_f64("scale", scale)
    out = np.empty(s.shape, dtype=np.float64)
    for i in np.ndindex(*s.shape):
        out[i] = 0.5 + 0.5 * LOG_2PI + math.log(float(s[i]))
    return out


def independent_normal_log_prob(value, loc, scale, event_dims: int = 1):
    """Normal log-prob summed over the trailing ``event_dims`` axes."""
    return _sum_event(normal_log_prob(value, loc, scale), event_dims)


def independent_normal_entropy(loc, scale, event_dims: int = 1):
    """Normal entropy summed over the trailing ``event_dims`` axes (``loc`` only fixes the shape)."""
    shape, a = _broadcast(loc=loc, scale=scale)
    return _sum_event(normal_entropy(np.array(a["scale"])), event_dims)


# -- TanhNormal ------------------------------------------------------------------------------------------------


def _log1m_tanh2(u: float) -> float:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|."""
    return 2.0 * (math.log(2.0) - u - softplus(-2.0 * u))


def _tanh_loc(loc: float, mid: float, tanh_loc: bool, upscale: float) -> float:
    if not tanh_loc:
        return loc
    return upscale * math.tanh(loc / upscale) + mid


def _clamp(y: float, eps) -> float:
    if eps is None:
        return y
    lim = 1.0 - eps
    return min(max(y, -lim), lim)


def tanh_normal_log_prob(action, loc, scale, low=-1.0, high=1.0, event_dims: int = 1, *,
                         clamp_eps=FLOAT64_RESOLUTION, tanh_loc: bool = False, upscale: float = 5.0):
    """Log-density of a given action under TanhNormal (change of variables through the inverse, per element).

    ``y = (action - mid) / half`` (clamped to ``+-(1 - clamp_eps)`` unless ``clamp_eps is None``),
    ``u = atanh(y)``; per element ``log N(u; loc, scale) - log(1 - tanh(u)^2) - log(half)``; summed over the
    trailing ``event_dims`` axes.
    """
    shape, a = _broadcast(action=action, loc=loc, scale=scale, low=low, high=high)
    per = np.empty(shape, dtype=np.float64)
    for i in np.ndindex(*shape):
        lo, hi = float(a["low"][i]), float(a["high"][i])
        if not hi > lo:
            raise ValueError("high must be strictly greater than low")
        mid, half = (hi + lo) / 2.0, (hi - lo) / 2.0
        mu = _tanh_loc(float(a["loc"][i]), mid, tanh_loc, upscale)
        y = _clamp((float(a["action"][i]) - mid) / half, clamp_eps)
        u = math.atanh(y)
        per[i] = _normal_lp(u, mu, float(a["scale"][i])) - _log1m_tanh2(u) - math.log(half)
    return _sum_event(per, event_dims)


def tanh_normal_rsample(loc, scale, noise, low=-1.0, high=1.0, event_dims: int = 1, *,
                        clamp_eps=FLOAT64_RESOLUTION, tanh_loc: bool = False, upscale: float = 5.0):
    """Reparameterised sample from given standard-normal ``noise`` and its log-prob -> ``(action, log_prob)``.

    ``u = loc + scale * noise``; ``action = mid + half * clamp(tanh(u))``; the log-prob scores the pre-tanh
    ``u`` itself (TorchRL's ``rsample_and_log_prob``), so it stays exact when tanh saturates.
    """
    shape, a = _broadcast(loc=loc, scale=scale, noise=noise, low=low, high=high)
    act = np.empty(shape, dtype=np.float64)
    per = np.empty(shape, dtype=np.float64)
    for i in np.ndindex(*shape):
        lo, hi = float(a["low"][i]), float(a["high"][i])
        mid, half = (hi + lo) / 2.0, (hi - lo) / 2.0
        mu = _tanh_loc(float(a["loc"][i]), mid, tanh_loc, upscale)
        sigma = float(a["scale"][i])
        u = mu + sigma * float(a["noise"][i])
        act[i] = mid + half * _clamp(math.tanh(u), clamp_eps)
        per[i] = _normal_lp(u, mu, sigma) - _log1m_tanh2(u) - math.log(half)
    return act, _sum_event(per, event_dims)


def tanh_normal_deterministic_sample(loc, low=-1.0, high=1.0, *, clamp_eps=FLOAT64_RESOLUTION,
                                     tanh_loc: bool = False, upscale: float = 5.0):
    """``mid + half * tanh(loc)`` (the transformed mean of the base Normal, TorchRL's deterministic sample)."""
    shape, a = _broadcast(loc=loc, low=low, high=high)
    out = np.empty(shape, dtype=np.float64)
    for i in np.ndindex(*shape):
        lo, hi = float(a["low"][i]), float(a["high"][i])
        mid, half = (hi + lo) / 2.0, (hi - lo) / 2.0
        mu = _tanh_loc(float(a["loc"][i]), mid, tanh_loc, upscale)
        out[i] = mid + half * _clamp(math.tanh(mu), clamp_eps)
    return out


# -- Categorical / OneHotCategorical -----------------------------------------------------------------------------


def _rows(logits: np.ndarray):
    if logits.ndim < 1:
        raise ValueError("logits: expected at least one dimension (the categories)")
    return np.ndindex(*logits.shape[:-1])


def categorical_log_prob(logits, index):
    """``log_softmax(logits)[..., index]``; ``index`` has the batch shape ``logits.shape[:-1]``."""
    lg = as_f64("logits", logits)
    ix = as_index("index", index)
    if tuple(ix.shape) != lg.shape[:-1]:
        raise ValueError(f"index: expected shape {lg.shape[:-1]} (logits.shape[:-1]), got {tuple(ix.shape)}")
    out = np.empty(lg.shape[:-1], dtype=np.float64)
    for b in _rows(lg):
        k = int(ix[b])
        if not 0 <= k < lg.shape[-1]:
            raise ValueError(f"index: {k} is out of range for {lg.shape[-1]} categories")
        out[b] = log_softmax_row(lg[b])[k]
    return out


def categorical_entropy(logits):
    """``-sum_k p_k log p_k`` per row (p = softmax(logits)); zero-probability categories contribute 0."""
    lg = as_f64("logits", logits)
    out = np.empty(lg.shape[:-1], dtype=np.float64)
    for b in _rows(lg):
        total = 0.0
        for lp in log_softmax_row(lg[b]):
            if lp > -math.inf:
                total -= math.exp(lp) * lp
        out[b] = total
    return out


def one_hot_categorical_log_prob(logits, value):
    """TorchRL: ``Categorical.log_prob(argmax(value))`` (first maximal index of the one-hot ``value``)."""
    lg = as_f64("logits", logits)
    v = as_f64("value", value)
    if v.shape != lg.shape:
        raise ValueError(f"value: expected shape {lg.shape} (the shape of logits), got {v.shape}")
    idx = np.empty(lg.shape[:-1], dtype=np.int64)
    for b in _rows(lg):
        row = [float(x) for x in v[b]]
        idx[b] = row.index(max(row))
    return categorical_log_prob(lg, idx)


def one_hot_categorical_entropy(logits):
    """Same as :func:`categorical_entropy`."""
    return categorical_entropy(logits)


# -- Delta -----------------------------------------------------------------------------------------------------


def delta_log_prob(value, param, atol: float = 1e-6, rtol: float = 1e-6, event_dims: int = 1):
    """``+inf`` where every event element satisfies ``|v - p| < atol + rtol |p|``, else ``-inf``."""
    shape, a = _broadcast(value=value, param=param)
    if event_dims < 0 or event_dims > len(shape):
        raise ValueError(f"event_dims: expected 0..{len(shape)}, got {event_dims}")
    batch_shape = shape[: len(shape) - event_dims]
    out = np.empty(batch_shape, dtype=np.float64)
    for b in np.ndindex(*batch_shape):
        equal = True
        for e in np.ndindex(*shape[len(shape) - event_dims :]):
            v, p = float(a["value"][b + e]), float(a["param"][b + e])
            if not abs(v - p) < atol + rtol * abs(p):
                equal = False
        out[b] = math.inf if equal else -math.inf
    return out
