"""Value and advantage normalisers as pure state updates, and the KL-adaptive learning-rate schedule.

TorchRL 0.14.1's ``torchrl.modules.value_norm`` (``PopArtValueNorm``, ``RunningValueNorm``, ``PercentileValueNorm``)
keeps its running statistics in registered buffers and updates them in place. Here the statistics are an explicit
state (a dict of arrays) and every update returns a new one::

    norm = PopArtValueNorm(shape=1)
    state = norm.init(like=value_target)                 # zeros of value_target's namespace, dtype, device
    normalized, state = norm(value_target, state)        # update with the batch, then normalise with the new stats
    state = norm.update(value_target, state, mask=valid)  # update only (rows where ``valid`` is False are ignored)
    y = norm.normalize(x, state); x = norm.denormalize(y, state); s = norm.scale(state)

Shapes: ``value_target [*R, *shape]``; the leading axes ``R`` (batch, time, agents) are reduced, ``shape`` (default
``(1,)``) is the per-element shape of the statistics. ``mask`` is a boolean array over leading axes of the value
target (trailing singletons are dropped first, as TorchRL's ``_valid_value_target_rows``): TorchRL drops the invalid
rows with ``value_target[mask]``; here they get zero weight, so the shapes stay static. A batch with no valid row
leaves the state unchanged (TorchRL would fold in the NaN statistics of an empty batch).

The normalisers (per element of ``shape``; ``eps`` = ``epsilon``):

* :class:`PopArtValueNorm` (van Hasselt et al. 2016, "Learning values across many orders of magnitude",
  arXiv:1602.07714; the value normaliser of MAPPO, Yu et al. 2022, arXiv:2103.01955)::

      m <- beta m + (1 - beta) mean(x);  m2 <- beta m2 + (1 - beta) mean(x^2);  d <- beta d + (1 - beta)
      mu = m / max(d, eps);  var = max(m2 / max(d, eps) - mu^2, eps);  normalize(x) = (x - mu) / sqrt(var)

  (the debiasing term ``d`` makes the zero-initialised averages unbiased). Only the statistics: PopArt's
  "preserving outputs" rescaling of the value head is not part of it (nor of TorchRL's).
* :class:`RunningValueNorm`: exact running mean and population variance (Chan et al. parallel update of
  Welford's ``M2``), ``var = max(M2 / max(n, 1), eps)``.
* :class:`PercentileValueNorm` (DreamerV3's return normalisation, Hafner et al. 2023, arXiv:2301.04104)::

      lo <- lerp(lo, quantile(x, q_lo), rate);  hi <- lerp(hi, quantile(x, q_hi), rate)
      scale = max(hi - lo, min_scale);  normalize(x) = x / scale   (center=True: (x - lo) / scale)

  with ``torch.quantile``'s linear interpolation between order statistics.

:class:`KLAdaptiveLR` is TorchRL's ``torchrl.objectives.KLAdaptiveLR`` (the rsl_rl schedule, Rudin et al. 2021,
arXiv:2109.11978) for :mod:`arrayrl.optim` optimisers; :func:`kl_adaptive_lr` is its pure rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import data as _data
from .._backend import namespace_of
from .._checks import check_floating
from ..autodiff import stop_gradient
from ..optim import _lerp

__all__ = ["ValueNorm", "PopArtValueNorm", "RunningValueNorm", "PercentileValueNorm", "KLAdaptiveLR",
           "kl_adaptive_lr"]


def _device(x: Any) -> Any:
    return getattr(x, "device", None)


class ValueNorm:
    """Base class: ``init``, ``update``, ``normalize``, ``denormalize``, ``scale`` and ``__call__`` (module docstring).

    Keyword Args:
        shape: the per-element shape of the statistics (an int or a tuple; default ``1``).
        epsilon: numerical floor (default ``1e-5``).
        device: accepted for TorchRL compatibility (the state takes the device of ``init``'s arguments).
    """

    #: names of the state entries, and whether each has ``shape`` (True) or is a scalar (False)
    _STATE: tuple = ()

    def __init__(self, *, shape: int | Sequence[int] = 1, epsilon: float = 1e-5, device: Any = None) -> None:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"shape: expected positive ints, got {shape!r}")
        self.shape = shape
        self.epsilon = float(epsilon)
        self.device = device

    # ------------------------------------------------------------------------------------------------ state
    def init(self, like: Any = None, *, xp: Any = None, dtype: Any = None, device: Any = None) -> dict:
        """The initial state: zeros in the namespace, dtype and device of ``like`` (or of ``xp``/``dtype``/``device``;
        ``dtype`` defaults to ``xp.float64``)."""
        if like is not None:
            like = stop_gradient(like)
            check_floating(like, "like")
            xp = namespace_of(like)
            dtype = like.dtype if dtype is None else dtype
            device = _device(like) if device is None else device
        if xp is None:
            raise TypeError(f"{type(self).__name__}.init: pass an array (like=) or a namespace (xp=)")
        dtype = xp.float64 if dtype is None else dtype
        return {name: xp.zeros(self.shape if shaped else (), dtype=dtype, device=device)
                for name, shaped in self._STATE}

    def _check_state(self, state: Any) -> dict:
        if not isinstance(state, Mapping) or set(state) != {n for n, _ in self._STATE}:
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"state: expected the dict returned by {type(self).__name__}.init (keys "
                             f"{sorted(n for n, _ in self._STATE)}), got {got}")
        for name, shaped in self._STATE:
            want = self.shape if shaped else ()
            if tuple(state[name].shape) != want:
                raise ValueError(f"state[{name!r}]: expected shape {want}, got {tuple(state[name].shape)}")
        return dict(state)

    def _prepare(self, value_target: Any, state: Mapping, mask: Any) -> tuple:
        """``(x, w, count, axes)``: the value target in the state's dtype, the weights broadcast to it (or ``None``),
        the number of values reduced into each statistic (a Python int, or ``[*shape]`` with a mask) and the reduced
        axes."""
        state = self._check_state(state)
        x = stop_gradient(value_target)
        check_floating(x, "value_target")
        n = len(self.shape)
        if tuple(x.shape[x.ndim - n:]) != self.shape or x.ndim < n:
            raise ValueError(f"value_target: {type(self).__name__} was initialised with shape={self.shape} but got a "
                             f"value_target of shape {tuple(x.shape)} (trailing shape must be {self.shape})")
        ref = state[self._STATE[0][0]]
        xp = namespace_of(x, ref)
        if x.dtype != ref.dtype:
            x = xp.astype(x, ref.dtype)
        axes = tuple(range(x.ndim - n))
        if mask is None:
            count = 1
            for d in axes:
                count *= int(x.shape[d])
            return x, None, count, axes
        m = stop_gradient(mask)
        mxp = namespace_of(m)
        while m.ndim >= x.ndim and m.ndim > 0 and m.shape[-1] == 1:  # TorchRL's _valid_value_target_rows
            m = mxp.squeeze(m, axis=-1)
        if m.ndim > len(axes) or tuple(m.shape) != tuple(x.shape[: m.ndim]):
            raise ValueError(f"mask: shape {tuple(m.shape)} does not match the leading (reduced) axes of the "
                             f"value_target, shape {tuple(x.shape)}")
        if m.dtype != mxp.bool:
            m = m != 0
        while m.ndim < x.ndim:
            m = mxp.expand_dims(m, axis=-1)
        w = xp.astype(xp.broadcast_to(m, tuple(x.shape)), x.dtype)
        return x, w, xp.sum(w, axis=axes), axes

    @staticmethod
    def _keep_if_empty(count: Any, new: dict, old: Mapping) -> dict:
        """With a mask, every row may be invalid: keep the old state then (``where``, no host read)."""
        if isinstance(count, int):
            return new
        xp = namespace_of(count)
        some = xp.max(count) > 0
        return {k: xp.where(some, v, old[k]) for k, v in new.items()}

    # ------------------------------------------------------------------------------------------------ API
    def update(self, value_target: Any, state: Mapping, *, mask: Any = None) -> dict:  # pragma: no cover
        """The state after folding in a batch of value targets (no gradient; the input state is not modified)."""
        raise NotImplementedError

    def normalize(self, value_target: Any, state: Mapping) -> Any:  # pragma: no cover
        raise NotImplementedError

    def denormalize(self, normalized_value: Any, state: Mapping) -> Any:  # pragma: no cover
        raise NotImplementedError

    def scale(self, state: Mapping) -> Any:  # pragma: no cover
        """The multiplicative scale of :meth:`normalize` ``[*shape]`` (what an advantage is divided by)."""
        raise NotImplementedError

    def __call__(self, value_target: Any, state: Mapping, *, update: bool = True, mask: Any = None) -> tuple:
        """``(normalize(x, new_state), new_state)``; ``update=False`` (evaluation) normalises with ``state``."""
        new = self.update(value_target, state, mask=mask) if update else self._check_state(state)
        return self.normalize(value_target, new), new

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, epsilon={self.epsilon})"


def _moments(x: Any, w: Any, count: Any, axes: tuple) -> tuple:
    """``(mean(x), mean(x^2))`` over ``axes``, weighted by ``w`` when given (``x`` itself when nothing is reduced)."""
    xp = namespace_of(x)
    if not axes:
        return x, x * x
    if w is None:
        return xp.mean(x, axis=axes), xp.mean(x * x, axis=axes)
    den = xp.clip(count, min=1.0)
    return xp.sum(x * w, axis=axes) / den, xp.sum(x * x * w, axis=axes) / den


class PopArtValueNorm(ValueNorm):
    """Exponential moving averages of the mean and the mean square with debiasing (module docstring).

    Keyword Args:
        shape, epsilon, device: see :class:`ValueNorm`. beta: the decay (default ``0.99999``, MAPPO's).

    State: ``running_mean [*shape]``, ``running_mean_sq [*shape]``, ``debiasing_term []``.
    """

    _STATE = (("running_mean", True), ("running_mean_sq", True), ("debiasing_term", False))

    def __init__(self, *, shape: int | Sequence[int] = 1, beta: float = 0.99999, epsilon: float = 1e-5,
                 device: Any = None) -> None:
        super().__init__(shape=shape, epsilon=epsilon, device=device)
        self.beta = float(beta)

    def update(self, value_target: Any, state: Mapping, *, mask: Any = None) -> dict:
        x, w, count, axes = self._prepare(value_target, state, mask)
        mean, mean_sq = _moments(x, w, count, axes)
        b = self.beta
        new = {"running_mean": state["running_mean"] * b + (1.0 - b) * mean,
               "running_mean_sq": state["running_mean_sq"] * b + (1.0 - b) * mean_sq,
               "debiasing_term": state["debiasing_term"] * b + (1.0 - b)}
        return self._keep_if_empty(count, new, state)

    def _stats(self, state: Mapping) -> tuple:
        state = self._check_state(state)
        xp = namespace_of(state["running_mean"])
        debias = xp.clip(state["debiasing_term"], min=self.epsilon)
        mean = state["running_mean"] / debias
        var = xp.clip(state["running_mean_sq"] / debias - mean ** 2, min=self.epsilon)
        return mean, xp.sqrt(var)

    def normalize(self, value_target: Any, state: Mapping) -> Any:
        mean, std = self._stats(state)
        return (value_target - mean) / std

    def denormalize(self, normalized_value: Any, state: Mapping) -> Any:
        mean, std = self._stats(state)
        return normalized_value * std + mean

    def scale(self, state: Mapping) -> Any:
        return self._stats(state)[1]


class RunningValueNorm(ValueNorm):
    """Exact running mean and population variance, no decay (module docstring).

    State: ``mean [*shape]``, ``m2 [*shape]`` (sum of squared deviations), ``count []``.
    """

    _STATE = (("mean", True), ("m2", True), ("count", False))

    def update(self, value_target: Any, state: Mapping, *, mask: Any = None) -> dict:
        x, w, count, axes = self._prepare(value_target, state, mask)
        xp = namespace_of(x)
        mean, mean_sq = _moments(x, w, count, axes)
        if not axes:
            bc, var = 1.0, xp.zeros_like(x)
        elif w is None:
            bc, var = float(count), xp.var(x, axis=axes, correction=0)
        else:  # population variance of the valid rows
            bc = xp.max(count)  # (the mask covers whole rows: every element has the same count)
            var = xp.sum((x - mean) ** 2 * w, axis=axes) / xp.clip(count, min=1.0)
        delta = mean - state["mean"]
        total = state["count"] + bc
        new = {"mean": state["mean"] + delta * (bc / total),
               "m2": state["m2"] + var * bc + delta ** 2 * (state["count"] * bc / total),
               "count": total}
        return self._keep_if_empty(count, new, state)

    def _std(self, state: Mapping) -> Any:
        state = self._check_state(state)
        xp = namespace_of(state["m2"])
        return xp.sqrt(xp.clip(state["m2"] / xp.clip(state["count"], min=1.0), min=self.epsilon))

    def normalize(self, value_target: Any, state: Mapping) -> Any:
        return (value_target - state["mean"]) / self._std(state)

    def denormalize(self, normalized_value: Any, state: Mapping) -> Any:
        return normalized_value * self._std(state) + state["mean"]

    def scale(self, state: Mapping) -> Any:
        return self._std(state)


def quantile(x: Any, q: float, count: Any = None) -> Any:
    """``torch.quantile(x, q, dim=0)`` (linear interpolation) of ``x [N, *S]`` sorted along axis 0; with ``count``
    (``[*S]``) only the first ``count`` rows of each column are order statistics (the rest sorted to the end).
    Returns ``[*S]``."""
    xp = namespace_of(x)
    n = int(x.shape[0])
    last = (xp.asarray(float(n), dtype=x.dtype, device=_device(x)) if count is None else count) - 1.0
    rank = q * last
    below, above = xp.floor(rank), xp.ceil(rank)
    weight = rank - below

    def at(r: Any) -> Any:
        idx = xp.astype(xp.clip(r, min=0.0, max=float(max(n - 1, 0))), xp.int64)
        idx = xp.broadcast_to(xp.reshape(idx, (1, *idx.shape)), (1, *x.shape[1:]))
        return xp.squeeze(xp.take_along_axis(x, idx, axis=0), axis=0)

    lo, hi = at(below), at(above)
    # torch.lerp's two-sided rounding
    return xp.where(weight < 0.5, lo + weight * (hi - lo), hi - (hi - lo) * (1.0 - weight))


class PercentileValueNorm(ValueNorm):
    """EMA of a low and a high quantile; ``scale = max(high - low, min_scale)`` (module docstring).

    Keyword Args:
        shape, epsilon (unused: ``min_scale`` bounds the divisor), device: see :class:`ValueNorm`.
        quantiles: ``(low, high)``, ``0 <= low < high <= 1`` (default ``(0.05, 0.95)``). rate: the EMA rate in
        ``[0, 1]`` (default ``0.01``). min_scale: ``> 0`` (default ``1.0``). center: subtract ``low`` too.

    State: ``low [*shape]``, ``high [*shape]``.
    """

    _STATE = (("low", True), ("high", True))

    def __init__(self, *, shape: int | Sequence[int] = 1, quantiles: tuple = (0.05, 0.95), rate: float = 0.01,
                 min_scale: float = 1.0, center: bool = False, epsilon: float = 1e-5, device: Any = None) -> None:
        super().__init__(shape=shape, epsilon=epsilon, device=device)
        low, high = quantiles
        if not 0 <= low < high <= 1:
            raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}.")
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be in [0, 1], got {rate}.")
        if min_scale <= 0:
            raise ValueError(f"min_scale must be positive, got {min_scale}.")
        self.quantiles = (float(low), float(high))
        self.rate = float(rate)
        self.min_scale = float(min_scale)
        self.center = bool(center)

    def update(self, value_target: Any, state: Mapping, *, mask: Any = None) -> dict:
        x, w, count, _ = self._prepare(value_target, state, mask)
        xp = namespace_of(x)
        flat = xp.reshape(x, (-1, *self.shape))
        if w is not None:  # invalid rows sort to the end
            big = xp.full_like(flat, float(xp.finfo(flat.dtype).max))
            flat = xp.where(xp.reshape(w, tuple(flat.shape)) > 0, flat, big)
        srt = xp.sort(flat, axis=0)
        c = None if w is None else count
        new = {"low": _lerp(state["low"], quantile(srt, self.quantiles[0], c), self.rate),
               "high": _lerp(state["high"], quantile(srt, self.quantiles[1], c), self.rate)}
        return self._keep_if_empty(count, new, state)

    def scale(self, state: Mapping) -> Any:
        state = self._check_state(state)
        xp = namespace_of(state["low"])
        return xp.clip(state["high"] - state["low"], min=self.min_scale)

    def normalize(self, value_target: Any, state: Mapping) -> Any:
        if self.center:
            return (value_target - state["low"]) / self.scale(state)
        return value_target / self.scale(state)

    def denormalize(self, normalized_value: Any, state: Mapping) -> Any:
        if self.center:
            return normalized_value * self.scale(state) + state["low"]
        return normalized_value * self.scale(state)


def _check_norm(norm: Any, name: str) -> Any:
    if norm is not None and not isinstance(norm, ValueNorm):
        raise TypeError(f"{name}: expected an arrayrl.objectives.value_norm.ValueNorm (PopArtValueNorm, "
                        f"RunningValueNorm, PercentileValueNorm), got {type(norm).__name__}")
    return norm


class _AdvantageNormMixin:
    """``advantage_norm`` for the on-policy losses (TorchRL's ``PPOLoss``/``A2CLoss._scale_advantage``).

    ``A <- A / advantage_norm.scale(state)`` (no re-centring: the value baseline centres the advantage). The state
    (``loss.advantage_norm_state``, created on first use) is updated *before* the scaling with the valid rows of the
    value target (masks: ``loss.loss_mask_key``), only when the loss computed the advantage itself and is in
    training mode (``loss.train()`` / ``loss.eval()``; ``loss.training``). Mixed into
    :class:`~arrayrl.objectives.PPOLoss` (so every PPO-family loss, A2C and MAPPO have it): its ``__init__`` calls
    :meth:`_set_advantage_norm` and its ``_advantage`` calls :meth:`_scale_advantage`. Place before the loss class in
    the bases.
    """

    training = True
    tensor_keys: Any  # (provided by the LossModule this is mixed into)
    _loss_mask_keys: Callable[[], tuple]

    def train(self, mode: bool = True) -> Any:
        """Training mode (``advantage_norm`` statistics move) or not; returns the loss."""
        self.training = bool(mode)
        return self

    def eval(self) -> Any:
        return self.train(False)

    def _set_advantage_norm(self, advantage_norm: Any, normalize_advantage: bool) -> None:
        _check_norm(advantage_norm, "advantage_norm")
        if advantage_norm is not None and normalize_advantage:
            raise ValueError("normalize_advantage=True and advantage_norm are mutually exclusive; pass "
                             "normalize_advantage=False to rescale the advantage with advantage_norm")
        self.advantage_norm = advantage_norm
        self.advantage_norm_state = None

    def _validity_mask(self, batch: Mapping) -> Any:
        mask = None
        for key in self._loss_mask_keys():
            m = _data.get_or(batch, key, None)
            if m is not None:
                m = stop_gradient(m)
                xp = namespace_of(m)
                m = m if m.dtype == xp.bool else m != 0
                mask = m if mask is None else xp.logical_and(mask, m)
        return mask

    def _scale_advantage(self, adv: Any, batch: Mapping, work: Mapping) -> Any:
        """``adv / scale`` (``adv`` unchanged without ``advantage_norm``); ``batch`` is the caller's batch (is the
        advantage precomputed?), ``work`` the batch with the estimator's outputs."""
        norm = self.advantage_norm
        if norm is None:
            return adv
        state = norm.init(like=adv) if self.advantage_norm_state is None else self.advantage_norm_state
        tk = self.tensor_keys
        if self.training and _data.get_or(batch, tk.advantage, None) is None:
            target = _data.get(work, tk.value_target, what="value target (advantage_norm updates its statistics "
                                                          "from the value target written by the estimator)")
            state = norm.update(target, state, mask=self._validity_mask(work))
        self.advantage_norm_state = state
        return adv / norm.scale(state)


# ------------------------------------------------------------------------------------------------ KL-adaptive lr
def kl_adaptive_lr(lr: float, kl: float, target_kl: float, factor: float = 1.5, min_lr: float = 1e-5,
                   max_lr: float = 1e-2) -> float:
    """The next learning rate: ``lr / factor`` if ``kl > 2 target_kl``, ``lr * factor`` if
    ``0 < kl < target_kl / 2``, else ``lr``; clamped to ``[min_lr, max_lr]`` (a zero KL leaves ``lr`` unchanged)."""
    if kl > 2.0 * target_kl:
        scale = 1.0 / factor
    elif 0.0 < kl < 0.5 * target_kl:
        scale = factor
    else:
        scale = 1.0
    return min(max_lr, max(min_lr, lr * scale))


class KLAdaptiveLR:
    """Adapt the learning rate of :mod:`arrayrl.optim` optimisers to a target policy KL (TorchRL's ``KLAdaptiveLR``).

    ``step(kl)`` applies :func:`kl_adaptive_lr` to ``optimizer.lr`` (the optimiser's hyper-parameter attribute, read
    at its next update; TorchRL edits the ``param_groups`` the same way). ``kl`` is the mean KL of the last update,
    e.g. ``ClipPPOLoss``'s ``kl_approx``; it is read to the host once per step (a scheduler decides on the host).

    Args:
        optimizer: an :class:`arrayrl.optim.Optimizer`, an :class:`arrayrl.optim.Stateful`, or a sequence of them
            (TorchRL's parameter groups).
        target_kl: finite, ``> 0``.

    Keyword Args:
        factor: ``> 1`` (default 1.5). min_lr, max_lr: ``0 < min_lr <= max_lr < inf`` (defaults 1e-5, 1e-2).
    """

    def __init__(self, optimizer: Any, target_kl: float, *, factor: float = 1.5, min_lr: float = 1e-5,
                 max_lr: float = 1e-2) -> None:
        if not math.isfinite(target_kl) or target_kl <= 0:
            raise ValueError(f"target_kl must be finite and positive, got {target_kl}.")
        if not math.isfinite(factor) or factor <= 1.0:
            raise ValueError(f"factor must be finite and greater than one, got {factor}.")
        if not (0 < min_lr <= max_lr) or not math.isfinite(max_lr):
            raise ValueError(f"Expected 0 < min_lr <= max_lr < inf, got min_lr={min_lr} and max_lr={max_lr}.")
        opts = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
        for o in opts:
            if not hasattr(getattr(o, "optimizer", o), "lr"):
                raise TypeError(f"optimizer: expected an arrayrl.optim optimizer (with an lr attribute), got "
                                f"{type(o).__name__}")
        self.optimizer = optimizer
        self._opts = [getattr(o, "optimizer", o) for o in opts]
        self.target_kl = float(target_kl)
        self.factor = float(factor)
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.last_kl: float | None = None

    def step(self, kl: Any) -> None:
        """Rescale the learning rate(s) from the KL of the last update (a number or a 0-d array)."""
        kl = float(stop_gradient(kl))
        if not math.isfinite(kl):
            raise ValueError(f"The KL divergence must be finite, got {kl}.")
        for o in self._opts:
            o.lr = kl_adaptive_lr(o.lr, kl, self.target_kl, self.factor, self.min_lr, self.max_lr)
        self.last_kl = kl

    def get_last_lr(self) -> list:
        return [float(o.lr) for o in self._opts]

    def state_dict(self) -> dict:
        """The schedule's state (not the optimiser's)."""
        return {"target_kl": self.target_kl, "factor": self.factor, "min_lr": self.min_lr, "max_lr": self.max_lr,
                "last_kl": self.last_kl}

    def load_state_dict(self, state_dict: Mapping) -> None:
        self.target_kl = float(state_dict["target_kl"])
        self.factor = float(state_dict["factor"])
        self.min_lr = float(state_dict["min_lr"])
        self.max_lr = float(state_dict["max_lr"])
        last = state_dict.get("last_kl")
        self.last_kl = None if last is None else float(last)
