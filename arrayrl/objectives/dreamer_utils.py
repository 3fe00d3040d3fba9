"""DreamerV3 helpers, with TorchRL 0.14.1's names, signatures and semantics (``torchrl.objectives`` exports
``symlog``, ``symexp``, ``two_hot_encode``, ``two_hot_decode``, ``two_hot_cross_entropy``,
``categorical_kl_balanced`` and ``categorical_kl_terms``; the private ``_default_bins``, ``_unimix_probs`` and
``_straight_through_categorical`` of ``torchrl.modules.models.model_based`` are public here as
:func:`default_bins`, :func:`unimix_probs` and :func:`straight_through_categorical`).

Hafner et al. 2023, "Mastering Diverse Domains through World Models" (DreamerV3), arXiv:2301.04104.

=================================== =====================================================================
function                            value
=================================== =====================================================================
``symlog(x)``                       ``sign(x) log(1 + |x|)`` (``x`` where ``x == 0``: d/dx at 0 is 1)
``symexp(x)``                       ``sign(x) (exp|x| - 1)`` (``x`` where ``x == 0``: d/dx at 0 is 1)
``default_bins(n=255)``             ``symexp(linspace(-20, 20, n))``, built exactly antisymmetric
``two_hot_encode(x, bins)``         weights on the two bins around ``clip(x, b_0, b_{n-1})``, linear in
                                    **raw** space: ``w_up = (x - b_l) / (b_u - b_l)``, ``w_low = 1 - w_up``
``two_hot_decode(logits, bins)``    ``sum softmax(logits) bins`` (mirrored bins paired: uniform -> exactly 0)
``two_hot_cross_entropy``           ``-sum two_hot(target) log_softmax(logits)`` (unreduced)
``unimix_probs(logits, u)``         ``(1 - u) softmax(logits) + u / K``
``categorical_kl_terms``            ``(dyn, rep)``: KL summed over categoricals and classes, each with one
                                    side stopped, ``clip(min=free_nats)``, then mean
``categorical_kl_balanced``         ``alpha KL(sg q || p) + (1 - alpha) KL(q || sg p)``, softmax clamped at
                                    ``1e-8``, ``clip(min=free_bits)`` **per categorical**, then mean
``straight_through_categorical``    one-hot inverse-CDF sample in the forward pass, ``grad(probs)`` backward
=================================== =====================================================================

Shapes: logits are ``[*B, num_categoricals, num_classes]`` for the KL terms and ``[*B, n]`` for the two-hot
functions; ``bins`` is 1-D, ascending. Dtype follows the inputs (``bins`` is cast to the dtype of ``x``/``logits``
as TorchRL does). Gradients: ``two_hot_encode`` is differentiable in ``x`` (the bin indices are constants, the clip
passes the gradient at its bounds, as torch's ``clamp``); ``stop_gradient`` plays ``Tensor.detach``.
"""

from __future__ import annotations

import numbers
from typing import Any

from .. import ops
from .._backend import base_of, default_float_dtype, device_of, namespace_of
from .._checks import check_floating, check_scalar_range
from ..autodiff import stop_gradient
from ..random import Generator

__all__ = [
    "DEFAULT_NUM_BINS",
    "DEFAULT_BIN_RANGE",
    "symlog",
    "symexp",
    "default_bins",
    "two_hot_encode",
    "two_hot_decode",
    "two_hot_cross_entropy",
    "unimix_probs",
    "categorical_kl_terms",
    "categorical_kl_balanced",
    "straight_through_categorical",
]

DEFAULT_NUM_BINS = 255
DEFAULT_BIN_RANGE = 20.0


# ------------------------------------------------------------------------------------------------ symlog / symexp
def symlog(value: Any) -> Any:
    """``sign(x) * log1p(|x|)``, and ``x`` itself where ``x == 0`` (so the derivative at 0 is 1, not torch's
    ``sign``'-induced 0). ``torchrl.objectives.symlog``."""
    check_floating(value, "value")
    xp = namespace_of(value)
    return xp.where(value == 0, value, xp.sign(value) * xp.log1p(xp.abs(value)))


def symexp(value: Any) -> Any:
    """``sign(x) * expm1(|x|)``, and ``x`` where ``x == 0`` (derivative 1 at 0); the inverse of :func:`symlog`.
    ``torchrl.objectives.symexp``."""
    check_floating(value, "value")
    xp = namespace_of(value)
    return xp.where(value == 0, value, xp.sign(value) * xp.expm1(xp.abs(value)))


# ------------------------------------------------------------------------------------------------ bins
def _torch_linspace(xp: Any, start: float, end: float, steps: int, dtype: Any, device: Any) -> Any:
    """``torch.linspace(start, end, steps)`` with torch's two-sided formula (``start + step i`` on the first half,
    ``end - step (steps - 1 - i)`` on the second), so the bins agree bit for bit in float32 too."""
    kw = {} if device is None else {"device": device}
    idx = xp.arange(steps, dtype=dtype, **kw)
    if steps == 1:
        return xp.full((1,), start, dtype=dtype, **kw)
    step = (end - start) / (steps - 1)
    rev = xp.asarray(float(steps - 1), dtype=dtype, **kw) - idx
    first = idx < float(steps // 2)
    return xp.where(first, start + idx * step, end - rev * step)


def default_bins(num_bins: int = DEFAULT_NUM_BINS, *, xp: Any = None, dtype: Any = None, device: Any = None) -> Any:
    """DreamerV3's symmetric symexp support (``torchrl.modules.models.model_based._default_bins``).

    Odd ``num_bins``: ``half = symexp(linspace(-20, 0, n // 2 + 1))`` and ``bins = [half, -flip(half[:-1])]`` (an
    exact 0 in the middle). Even: ``half = symexp(-20 + step * arange(n // 2))``, ``step = 40 / (n - 1)``, and
    ``bins = [half, -flip(half)]``. 255 bins span about ``+-4.85e8``. ``xp`` defaults to NumPy, ``dtype`` to the
    namespace's default float.
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral):
        raise TypeError(f"num_bins: expected an integer, got {type(num_bins).__name__} {num_bins!r}")
    num_bins = int(num_bins)
    if num_bins < 2:
        raise ValueError(f"num_bins: must be at least 2, got {num_bins}")
    if xp is None:  # the default namespace of arrayrl's initialisers (that of a default Generator: NumPy)
        xp = Generator(0, device=device).xp
    xp = base_of(xp)
    dtype = default_float_dtype(xp, device) if dtype is None else dtype
    kw = {} if device is None else {"device": device}
    half_size = num_bins // 2
    if num_bins % 2:
        half = symexp(_torch_linspace(xp, -DEFAULT_BIN_RANGE, 0.0, half_size + 1, dtype, device))
        return xp.concat([half, -xp.flip(half[:-1], axis=0)])
    step = 2 * DEFAULT_BIN_RANGE / (num_bins - 1)
    half = symexp(-DEFAULT_BIN_RANGE + step * xp.arange(half_size, dtype=dtype, **kw))
    return xp.concat([half, -xp.flip(half, axis=0)])


def _check_bins(bins: Any, name: str = "bins") -> int:
    check_floating(bins, name)
    if bins.ndim != 1 or bins.shape[0] < 2:
        raise ValueError(f"{name}: expected a one-dimensional array with at least 2 values, got shape "
                         f"{tuple(bins.shape)}")
    return int(bins.shape[0])


def _dev(x: Any) -> dict:
    dev = device_of(stop_gradient(x))
    return {} if dev is None else {"device": dev}


def _as_dtype_of(xp: Any, bins: Any, like: Any) -> Any:
    return bins if bins.dtype == like.dtype else xp.astype(bins, like.dtype)


# ------------------------------------------------------------------------------------------------ two-hot
def two_hot_encode(x: Any, bins: Any) -> Any:
    """Two-hot encoding of raw scalars ``x [*S]`` on an ascending support ``bins [n]``: ``[*S, n]``.

    ``x`` is clipped to ``[bins[0], bins[-1]]``; ``lower = #{bins <= x} - 1`` clipped to ``[0, n - 2]``,
    ``upper = lower + 1``; ``w_up = (x - b_lower) / (b_upper - b_lower)`` (linear in raw space, as TorchRL, not in
    symlog space) and ``w_lower = 1 - w_up``. Example: ``0.3`` on ``[-1, 0, 1]`` is ``[0, 0.7, 0.3]``.

    The bin search uses comparisons with every bin (``[*S, n]`` masks, no gather, no integer arrays).
    """
    check_floating(x, "x")
    n = _check_bins(bins)
    xp = namespace_of(x, bins, names=("x", "bins"))
    bins = _as_dtype_of(xp, bins, x)
    x = xp.clip(x, min=bins[0], max=bins[n - 1])
    xe = xp.expand_dims(x, axis=-1)
    count = xp.sum(xp.astype(stop_gradient(xe) >= stop_gradient(bins), x.dtype), axis=-1, keepdims=True)
    lower = xp.clip(count - 1.0, min=0.0, max=float(n - 2))
    idx = xp.arange(n, dtype=x.dtype, **_dev(x))
    lower_mask = idx == lower
    upper_mask = idx == lower + 1.0
    zeros = xp.zeros_like(xp.broadcast_to(stop_gradient(bins), tuple(lower_mask.shape)))
    lower_value = xp.sum(xp.where(lower_mask, bins, zeros), axis=-1, keepdims=True)
    upper_value = xp.sum(xp.where(upper_mask, bins, zeros), axis=-1, keepdims=True)
    upper_weight = (xe - lower_value) / (upper_value - lower_value)
    lower_weight = 1.0 - upper_weight
    return xp.where(lower_mask, lower_weight, zeros) + xp.where(upper_mask, upper_weight, zeros)


def two_hot_decode(logits: Any, bins: Any) -> Any:
    """``sum(softmax(logits) * bins, -1)``: ``[*S, n] -> [*S]``.

    As TorchRL, mirrored bins are paired, ``sum_k (p_up - p_low) b_up + p_low (b_up + b_low)`` (plus the centre
    bin for odd ``n``), so an antisymmetric support decodes a uniform distribution to exactly 0.
    """
    check_floating(logits, "logits")
    n = _check_bins(bins)
    if logits.ndim < 1 or logits.shape[-1] != n:
        raise ValueError(f"logits: the trailing dimension must match the support size {n} of bins, got shape "
                         f"{tuple(logits.shape)}")
    xp = namespace_of(logits, bins, names=("logits", "bins"))
    bins = _as_dtype_of(xp, bins, logits)
    probs = ops.softmax(logits, axis=-1)
    mid = n // 2
    lower = xp.flip(probs[..., :mid], axis=-1)
    lower_bins = xp.flip(bins[:mid], axis=0)
    if n % 2:
        upper, upper_bins = probs[..., mid + 1:], bins[mid + 1:]
        center = probs[..., mid] * bins[mid]
    else:
        upper, upper_bins = probs[..., mid:], bins[mid:]
        center = None
    paired = (upper - lower) * upper_bins + lower * (upper_bins + lower_bins)
    expectation = xp.sum(paired, axis=-1)
    return expectation if center is None else expectation + center


def two_hot_cross_entropy(logits: Any, target: Any, bins: Any) -> Any:
    """``-sum(two_hot_encode(target, bins) * log_softmax(logits), -1)``, unreduced: ``[*S]``.

    ``logits [*S, n]``; ``target [*S]`` or ``[*S, 1]`` (raw values), anything else is a ``ValueError``.
    """
    check_floating(logits, "logits")
    check_floating(target, "target")
    if logits.ndim < 1:
        raise ValueError("logits: expected at least one dimension (the bins), got shape ()")
    lead = tuple(logits.shape[:-1])
    xp = namespace_of(logits, target, bins, names=("logits", "target", "bins"))
    if tuple(target.shape) == lead + (1,):
        target = xp.squeeze(target, axis=-1)
    if tuple(target.shape) != lead:
        raise ValueError(f"target: expected shape {lead} or {lead + (1,)} (that of logits without its bins), got "
                         f"{tuple(target.shape)}")
    n = _check_bins(bins)
    if logits.shape[-1] != n:
        raise ValueError(f"logits: the trailing dimension must match the support size {n} of bins, got shape "
                         f"{tuple(logits.shape)}")
    encoded = two_hot_encode(target, bins)
    return -xp.sum(encoded * ops.log_softmax(logits, axis=-1), axis=-1)


# ------------------------------------------------------------------------------------------------ categoricals
def unimix_probs(logits: Any, unimix: float) -> Any:
    """``(1 - unimix) softmax(logits) + unimix / K`` over the last axis (``softmax`` alone for ``unimix == 0``);
    ``unimix`` in ``[0, 1)``."""
    check_floating(logits, "logits")
    check_scalar_range(unimix, "unimix", 0.0, 1.0, high_open=True)
    probs = ops.softmax(logits, axis=-1)
    if unimix:
        probs = (1 - unimix) * probs + unimix / logits.shape[-1]
    return probs


def _check_pair(posterior_logits: Any, prior_logits: Any, min_ndim: int) -> Any:
    check_floating(posterior_logits, "posterior_logits")
    check_floating(prior_logits, "prior_logits")
    if tuple(posterior_logits.shape) != tuple(prior_logits.shape):
        raise ValueError(f"prior_logits: expected the shape of posterior_logits {tuple(posterior_logits.shape)}, got "
                         f"{tuple(prior_logits.shape)}")
    if posterior_logits.ndim < min_ndim:
        raise ValueError(f"posterior_logits: expected shape [..., num_categoricals, num_classes], got "
                         f"{tuple(posterior_logits.shape)}")
    if posterior_logits.dtype != prior_logits.dtype:
        raise TypeError(f"prior_logits: dtype {prior_logits.dtype} differs from posterior_logits: "
                        f"{posterior_logits.dtype}")
    return namespace_of(posterior_logits, prior_logits, names=("posterior_logits", "prior_logits"))


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a Python number, got {type(value).__name__}")
    return float(value)


def categorical_kl_terms(posterior_logits: Any, prior_logits: Any, free_nats: float = 1.0,
                         unimix: float = 0.01) -> tuple:
    """DreamerV3's dynamics and representation losses, ``(dyn, rep)``, two scalars.

    With ``q = unimix_probs(posterior_logits)`` and ``p = unimix_probs(prior_logits)``:
    ``dyn = sum_{cat, cls} sg(q) (sg(log q) - log p)`` (trains the prior),
    ``rep = sum_{cat, cls} q (log q - sg(log p))`` (trains the posterior); each is clipped below at ``free_nats``
    on the **sum over categoricals** (skipped for ``free_nats == 0``), then averaged over the batch.
    Shapes: ``[*B, num_categoricals, num_classes]`` (equal); ``*B`` may be empty.
    """
    xp = _check_pair(posterior_logits, prior_logits, 2)
    free_nats = _number(free_nats, "free_nats")
    posterior = unimix_probs(posterior_logits, unimix)
    prior = unimix_probs(prior_logits, unimix)
    posterior_log = xp.log(posterior)
    prior_log = xp.log(prior)
    dynamics = xp.sum(stop_gradient(posterior) * (stop_gradient(posterior_log) - prior_log), axis=(-1, -2))
    representation = xp.sum(posterior * (posterior_log - stop_gradient(prior_log)), axis=(-1, -2))
    if free_nats:
        dynamics = xp.clip(dynamics, min=free_nats)
        representation = xp.clip(representation, min=free_nats)
    return xp.mean(dynamics), xp.mean(representation)


def categorical_kl_balanced(posterior_logits: Any, prior_logits: Any, alpha: float = 0.8,
                            free_bits: float = 1.0) -> Any:
    """KL balancing (DreamerV3 section 3, TorchRL's variant): a scalar.

    ``q = clip(softmax(posterior_logits), min=1e-8)``, ``p = clip(softmax(prior_logits), min=1e-8)`` (not
    renormalised); ``t1 = sum_cls sg(q) (log sg(q) - log p)``, ``t2 = sum_cls q (log q - log sg(p))``, each
    clipped below at ``free_bits`` **per categorical** and averaged over every other axis; returns
    ``alpha t1 + (1 - alpha) t2``. (The paper clips the sum over categoricals: :func:`categorical_kl_terms`.)
    """
    xp = _check_pair(posterior_logits, prior_logits, 1)
    alpha = _number(alpha, "alpha")
    free_bits = _number(free_bits, "free_bits")
    eps = 1e-8
    posterior = xp.clip(ops.softmax(posterior_logits, axis=-1), min=eps)
    prior = xp.clip(ops.softmax(prior_logits, axis=-1), min=eps)
    post_sg = stop_gradient(posterior)
    kl_term1 = xp.sum(post_sg * (xp.log(post_sg) - xp.log(prior)), axis=-1)
    prior_sg = stop_gradient(prior)
    kl_term2 = xp.sum(posterior * (xp.log(posterior) - xp.log(prior_sg)), axis=-1)
    kl_term1 = xp.mean(xp.clip(kl_term1, min=free_bits))
    kl_term2 = xp.mean(xp.clip(kl_term2, min=free_bits))
    return alpha * kl_term1 + (1.0 - alpha) * kl_term2


def straight_through_categorical(logits: Any, unimix: float = 0.0, uniform: Any = None, *,
                                 generator: Any = None) -> Any:
    """A one-hot sample of ``unimix_probs(logits)`` with the straight-through gradient of the probabilities
    (``torchrl.modules.models.model_based._straight_through_categorical``).

    The class is ``#{k: u > cumsum(probs)_k}`` (clipped to ``K - 1``) for the uniform draw ``u [*B]`` (``uniform``
    given, or drawn from ``generator``, as torch's ``torch.rand(probs.shape[:-1])``); the result is
    ``probs + sg(one_hot - probs)``: exactly one-hot in value, ``d probs`` in gradient. ``[*B, K] -> [*B, K]``.
    """
    probs = unimix_probs(logits, unimix)
    xp = namespace_of(logits, uniform, names=("logits", "uniform"))
    lead = tuple(logits.shape[:-1])
    if uniform is None:
        if generator is None:
            raise ValueError("uniform: give the uniform draws [*B] or a generator= to draw them")
        uniform = generator.uniform(lead, dtype=logits.dtype)
    else:
        check_floating(uniform, "uniform")
        if tuple(uniform.shape) != lead:
            raise ValueError(f"uniform: expected shape {lead} (logits without the classes), got "
                             f"{tuple(uniform.shape)}")
    p = stop_gradient(probs)
    u = xp.expand_dims(xp.astype(stop_gradient(uniform), p.dtype), axis=-1)
    # u > cumsum(p) holds on a prefix of the classes (the cumsum is nondecreasing), of length the class index; the
    # one-hot is the first class outside it: above[k - 1] and not above[k] (above[-1] = True). Forcing
    # above[K - 1] = False is the clip to K - 1. Elementwise only: no reduction over the (short) class axis.
    above = u > xp.cumulative_sum(p, axis=-1)
    lead_false = xp.zeros_like(above[..., :1])
    above = xp.concat([above[..., :-1], lead_false], axis=-1)
    before = xp.concat([xp.logical_not(lead_false), above[..., :-1]], axis=-1)
    one_hot = xp.astype(xp.logical_and(before, xp.logical_not(above)), p.dtype)
    return probs + stop_gradient(one_hot - p)
