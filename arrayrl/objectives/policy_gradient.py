"""Pure terms of the policy-gradient family (PPO, A2C, REINFORCE, MAPPO): arrays in, arrays out.

Papers: Schulman, Wolski, Dhariwal, Radford & Klimov 2017, "Proximal Policy Optimization Algorithms"
(arXiv:1707.06347; clipped surrogate eq. 7, KL penalty eq. 8 and its adaptive coefficient, entropy bonus eq. 9);
Williams 1992 (REINFORCE); Mnih et al. 2016 (A2C/A3C, arXiv:1602.01783); Hilton, Cobbe & Schulman 2021, "Batch
size-invariance for policy optimization" (PPO-EWMA, arXiv:2110.00641; the proximal policy and the capped importance
weight).

Shape convention (TorchRL 0.14.1): log-probabilities ``[*B, *K]`` (``K`` = per-token axes, usually none), the
log-weight and the per-sample losses carry a trailing singleton ``[*B, *K, 1]``, the advantage is ``[*B, 1]``
(broadcast over ``K`` by :func:`broadcast_advantage`), values and value targets ``[*B, 1]``. Every function uses
only the array-API standard (plus :mod:`arrayrl.ops`), keeps the input dtype and works on raw or taped arrays.

Terms:

* ratios: :func:`log_ratio`, :func:`broadcast_advantage`, :func:`clip_bounds`, :func:`clip_fraction`,
  :func:`approx_kl`, :func:`effective_sample_size`;
* surrogates: :func:`importance_weighted_surrogate`, :func:`clipped_surrogate`, :func:`kl_penalty_surrogate`,
  :func:`policy_gradient_loss`, :func:`adapt_kl_beta`;
* entropy: :func:`entropy` (analytic or Monte-Carlo), :func:`entropy_bonus_loss`;
* critic: :func:`critic_loss` (with :func:`clipped_value_loss`), :func:`explained_variance`;
* advantage standardisation: :func:`normalize_advantage`;
* KL divergences: :func:`kl_divergence` with a small registry (:func:`register_kl`) for Normal, IndependentNormal,
  TanhNormal (through the base Normals, as torch's ``TransformedDistribution`` rule), Categorical and
  OneHotCategorical; :func:`mc_kl_divergence` otherwise.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

from .._backend import namespace_of
from .._checks import check_array, check_floating, check_same_shape
from ..autodiff import stop_gradient
from .. import ops
from .utils import distance_loss

__all__ = [
    "log_ratio",
    "broadcast_advantage",
    "clip_bounds",
    "clip_fraction",
    "approx_kl",
    "effective_sample_size",
    "importance_weighted_surrogate",
    "clipped_surrogate",
    "kl_penalty_surrogate",
    "policy_gradient_loss",
    "adapt_kl_beta",
    "entropy",
    "has_analytic_entropy",
    "entropy_bonus_loss",
    "clipped_value_loss",
    "critic_loss",
    "explained_variance",
    "normalize_advantage",
    "kl_divergence",
    "has_analytic_kl",
    "register_kl",
    "mc_kl_divergence",
]

#: TorchRL's advantage-normalisation epsilon: ``torch.finfo(torch.float).resolution``.
NORMALIZE_EPS = 1e-6
#: TorchRL's epsilon of the masked (``shifted_valid``) standardisation.
MASKED_NORMALIZE_EPS = 1e-4


def _fmt(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


# ------------------------------------------------------------------------------------------------ ratios
def log_ratio(log_prob: Any, old_log_prob: Any, *, names: tuple = ("log_prob", "old_log_prob")) -> Any:
    """The log importance weight ``lw = log pi_theta(a|s) - log mu(a|s)`` with a trailing singleton.

    Args:
        log_prob: ``[*B, *K]`` current log-probability of the stored action.
        old_log_prob: ``[*B, *K]`` the stored (behaviour or proximal) log-probability; same shape and dtype.
        names: how the two arrays are named in error messages (the loss classes pass the batch keys).

    Returns:
        ``[*B, *K, 1]``.
    """
    check_floating(log_prob, names[0])
    check_floating(old_log_prob, names[1])
    check_same_shape({names[0]: log_prob, names[1]: old_log_prob})
    xp = namespace_of(log_prob, old_log_prob)
    return xp.expand_dims(xp.subtract(log_prob, old_log_prob), axis=-1)


def broadcast_advantage(advantage: Any, log_weight: Any, name: str = "advantage") -> Any:
    """The advantage ``[*B, 1]`` brought to the log-weight's shape ``[*B, *K, 1]`` (TorchRL's per-token broadcast).

    Raises ``ValueError`` (naming ``name``) if the advantage has no trailing singleton or its batch shape is not
    the leading part of the log-weight's: a ``[B]`` advantage would otherwise meet a ``[B, 1]`` log-weight in an
    outer product ``[B, B]``.
    """
    check_floating(advantage, name)
    a, w = tuple(advantage.shape), tuple(log_weight.shape)
    if not a or a[-1] != 1:
        raise ValueError(
            f"{name}: expected a trailing singleton dimension [*B, 1] (batch shape {_fmt(w[:-1])} of the "
            f"log-probabilities), got shape {_fmt(a)}; reshape it with advantage[..., None]"
        )
    if a == w:
        return advantage
    b = a[:-1]
    if len(w) < len(a) or w[: len(b)] != b:
        raise ValueError(
            f"{name}: shape {_fmt(a)} does not match the log-probabilities' batch shape {_fmt(w[:-1])} "
            f"(expected {_fmt(w[:-1][: len(b)] + (1,))} or {_fmt(w)})"
        )
    xp = namespace_of(advantage)
    k = len(w) - len(a)
    return xp.broadcast_to(xp.reshape(advantage, b + (1,) * k + (1,)), w)


def clip_bounds(clip_epsilon: Any) -> tuple[float, float]:
    """``(log(1 - eps_low), log(1 + eps_high))``: the PPO trust region in log space.

    ``clip_epsilon`` is a number (symmetric) or a pair ``(eps_low, eps_high)`` (asymmetric, DAPO's clip-higher).
    Both must be ``>= 0`` and ``eps_low < 1`` (``ValueError``).
    """
    if isinstance(clip_epsilon, (tuple, list)):
        if len(clip_epsilon) != 2:
            raise ValueError(f"clip_epsilon: a tuple must have length 2 (eps_low, eps_high), got {clip_epsilon!r}")
        low, high = float(clip_epsilon[0]), float(clip_epsilon[1])
    elif isinstance(clip_epsilon, numbers.Real) and not isinstance(clip_epsilon, bool):
        low = high = float(clip_epsilon)
    else:
        raise TypeError(f"clip_epsilon: expected a number or a pair (low, high), got {type(clip_epsilon).__name__}")
    if not (low >= 0 and high >= 0):
        raise ValueError(f"clip_epsilon: values must be non-negative, got ({low}, {high})")
    if low >= 1.0:
        raise ValueError(f"clip_epsilon: eps_low must be < 1 (to keep 1 - eps_low > 0), got {low}")
    return math.log1p(-low), math.log1p(high)


def clip_fraction(log_weight: Any, clipped_log_weight: Any) -> Any:
    """``mean(lw_clipped != lw)`` over every element (TorchRL's ``clip_fraction``; no gradient). ``[]``."""
    lw, lc = stop_gradient(log_weight), stop_gradient(clipped_log_weight)
    xp = namespace_of(lw, lc)
    return xp.mean(xp.astype(lc != lw, lw.dtype))


def approx_kl(log_prob: Any, old_log_prob: Any) -> Any:
    """``mean(log mu - log pi_theta)``: the k1 estimator of ``KL(mu || pi_theta)`` on the stored actions (TorchRL's
    ``kl_approx``; no gradient). Inputs ``[*B, *K]`` of one shape; returns ``[]``."""
    check_same_shape({"log_prob": log_prob, "old_log_prob": old_log_prob})
    lp, old = stop_gradient(log_prob), stop_gradient(old_log_prob)
    xp = namespace_of(lp, old)
    return xp.mean(xp.subtract(old, lp))


def effective_sample_size(log_weight: Any, axis: int = 0) -> Any:
    """Normalised effective sample size of the importance weights ``w = exp(lw)`` along ``axis``::

        ESS = (sum_i w_i)^2 / sum_i w_i^2 / n = exp(2 logsumexp(lw) - logsumexp(2 lw)) / n

    Args:
        log_weight: ``[*B, *K, 1]`` (the trailing singleton is dropped first).
        axis: the axis of the particles; TorchRL reduces over dim 0 only, so ``[B, T, 1]`` gives ``[T]``.

    Returns:
        ``lw.shape[:-1]`` without ``axis``; 1 when all weights are equal, ``1/n`` when one weight dominates.
    """
    lw = stop_gradient(log_weight)
    xp = namespace_of(lw)
    lw = xp.squeeze(lw, axis=-1)
    ess = xp.exp(2.0 * ops.logsumexp(lw, axis=axis) - ops.logsumexp(2.0 * lw, axis=axis))
    return ess / lw.shape[axis]


# ------------------------------------------------------------------------------------------------ surrogates
def _weight(log_weight: Any, log_is_weight: Any) -> Any:
    return log_weight if log_is_weight is None else log_weight + stop_gradient(log_is_weight)


def importance_weighted_surrogate(log_weight: Any, advantage: Any, log_is_weight: Any = None) -> Any:
    """The unclipped surrogate ``-r A`` with ``r = exp(lw)`` (PPO paper eq. 6, the conservative policy iteration
    objective; TorchRL's ``PPOLoss``).

    Args:
        log_weight: ``[*S, 1]``; advantage: same shape (see :func:`broadcast_advantage`).
        log_is_weight: optional gradient-free correction ``log(pi_prox / mu)`` (PPO-EWMA / capped weights); the
            surrogate is then ``-exp(lw + log_is) A``.

    Returns:
        the per-sample loss ``[*S, 1]``.
    """
    check_same_shape({"log_weight": log_weight, "advantage": advantage})
    xp = namespace_of(log_weight, advantage)
    return -(xp.exp(_weight(log_weight, log_is_weight)) * advantage)


def clipped_surrogate(log_weight: Any, advantage: Any, clip_epsilon: Any, log_is_weight: Any = None) -> tuple:
    """PPO's clipped surrogate (paper eq. 7), clipped in log space as TorchRL::

        lw_c = clip(lw, log(1 - eps_low), log(1 + eps_high))
        loss = -min(exp(lw + log_is) A, exp(lw_c + log_is) A)

    ``exp(clip(lw, log(1-e), log(1+e))) = clip(r, 1-e, 1+e)``, so this is the paper's ``-min(r A, clip(r) A)``.
    The gradient is zero where the clip binds (``clip`` passes the gradient at its bounds, as ``torch.clamp``).

    Args:
        log_weight, advantage: ``[*S, 1]``, same shape.
        clip_epsilon: ``eps`` or ``(eps_low, eps_high)`` (see :func:`clip_bounds`).
        log_is_weight: optional ``log(pi_prox / mu)`` (PPO-EWMA): the clip acts on ``pi_theta / pi_prox`` and the
            surrogate is weighted by ``pi_theta / mu``.

    Returns:
        ``(loss [*S, 1], clip_fraction [])``.
    """
    check_same_shape({"log_weight": log_weight, "advantage": advantage})
    low, high = clip_bounds(clip_epsilon)
    xp = namespace_of(log_weight, advantage)
    clipped = xp.clip(log_weight, min=low, max=high)
    gain1 = xp.exp(_weight(log_weight, log_is_weight)) * advantage
    gain2 = xp.exp(_weight(clipped, log_is_weight)) * advantage
    return -xp.minimum(gain1, gain2), clip_fraction(log_weight, clipped)


def kl_penalty_surrogate(log_weight: Any, advantage: Any, kl: Any, beta: Any, *, grad_beta: Any = None,
                         log_is_weight: Any = None) -> Any:
    """PPO's KL-penalised surrogate (paper eq. 8): ``-(r A - beta KL(pi_old || pi_theta))``.

    Args:
        log_weight, advantage, kl: ``[*S, 1]``, same shape.
        beta: the penalty coefficient (a number or a 0-d array).
        grad_beta: if given, the value still uses ``beta`` but the gradient is that of ``grad_beta`` (the term is
            ``grad_beta KL + sg((beta - grad_beta) KL)``); this reproduces TorchRL, whose in-place update of the
            coefficient after building the loss makes the backward pass use the *updated* coefficient.
        log_is_weight: see :func:`importance_weighted_surrogate`.

    Returns:
        the per-sample loss ``[*S, 1]``.
    """
    check_same_shape({"log_weight": log_weight, "advantage": advantage, "kl": kl})
    xp = namespace_of(log_weight, advantage, kl)
    gain = xp.exp(_weight(log_weight, log_is_weight)) * advantage
    if grad_beta is None:
        penalty = kl * beta  # (array on the left: a raw left operand must not meet a taped right one)
    else:
        penalty = kl * grad_beta + stop_gradient(stop_gradient(kl) * (beta - grad_beta))
    return -(gain - penalty)


def adapt_kl_beta(beta: Any, kl: Any, dtarg: float, increment: float = 2.0, decrement: float = 0.5) -> Any:
    """The adaptive KL coefficient of the PPO paper (section 4), with TorchRL's thresholds::

        d = mean(KL);  beta * increment if d > 1.5 dtarg;  beta * decrement if d < dtarg / 1.5;  else beta

    Computed with ``where`` (no data-dependent Python branch, no device synchronisation). Returns a 0-d array of
    ``kl``'s dtype (no gradient).
    """
    k = stop_gradient(kl)
    xp = namespace_of(k)
    d = xp.mean(k)
    one = xp.asarray(1.0, dtype=k.dtype, device=getattr(k, "device", None))
    factor = xp.where(d > 1.5 * dtarg, one * increment, xp.where(d < dtarg / 1.5, one * decrement, one))
    return stop_gradient(beta) * factor


def policy_gradient_loss(log_prob: Any, advantage: Any) -> Any:
    """The score-function (REINFORCE / A2C) loss ``-log pi_theta(a|s) A`` (Williams 1992; ``A`` is taken as given:
    pass a stop-gradient advantage). Inputs of one shape; returns that shape."""
    check_same_shape({"log_prob": log_prob, "advantage": advantage})
    return -(log_prob * advantage)


# ------------------------------------------------------------------------------------------------ entropy
def has_analytic_entropy(dist: Any) -> bool:
    """Whether ``dist.entropy()`` has a closed form (arrayrl distributions raise ``NotImplementedError`` otherwise);
    a :class:`~arrayrl.distributions.CompositeDistribution` has one when every head has."""
    from ..distributions import CompositeDistribution, Distribution

    if isinstance(dist, CompositeDistribution):
        return all(has_analytic_entropy(d) for d in dist.dists.values())
    return type(dist).entropy is not Distribution.entropy


def entropy(dist: Any, *, samples_mc_entropy: int = 1, generator: Any = None, noise: Any = None) -> Any:
    """The policy entropy ``H[pi(.|s)]`` ``[*B]`` (the PPO paper's entropy bonus, eq. 9).

    Analytic where the distribution has ``entropy()`` (Normal, IndependentNormal, Categorical...); otherwise the
    Monte-Carlo estimate ``-mean_k log pi(x_k)`` over ``samples_mc_entropy`` draws ``x_k`` (reparameterised, scored
    on the draw itself: TanhNormal scores its pre-tanh value, as TorchRL's ``rsample_and_log_prob``), from
    ``generator`` or from ``noise`` (``[samples_mc_entropy, *B, *E]`` standard normals for the Normal family).

    A :class:`~arrayrl.distributions.CompositeDistribution` gives the sum over its heads: analytic heads in closed
    form, the others by the Monte-Carlo estimate above (``noise``: a dict with one entry per such head, see
    ``CompositeDistribution.entropy``), as TorchRL's ``composite_entropy``.

    Unlike TorchRL, an analytic entropy that is not finite is returned as is (the fallback would read data).
    """
    from ..distributions import CompositeDistribution

    if has_analytic_entropy(dist):
        return dist.entropy()
    if generator is None and noise is None:
        raise ValueError(
            f"entropy: {type(dist).__name__} has no analytic entropy; a Monte-Carlo estimate needs a generator "
            "(arrayrl.random.Generator) or noise"
        )
    n = int(samples_mc_entropy)
    if n < 1:
        raise ValueError(f"samples_mc_entropy: expected >= 1, got {samples_mc_entropy}")
    if isinstance(dist, CompositeDistribution):
        return dist.entropy(n, generator=generator, noise=noise)
    draw = dist.rsample_and_log_prob if dist.has_rsample else dist.sample_and_log_prob
    _, lp = draw(generator, (n,), noise=noise)
    return -namespace_of(lp).mean(lp, axis=0)


def entropy_bonus_loss(entropy_: Any, coeff: Any) -> Any:
    """``-c_H H`` (elementwise, same shape as the entropy)."""
    return -(coeff * entropy_)


# ------------------------------------------------------------------------------------------------ critic
def clipped_value_loss(value: Any, old_value: Any, target: Any, clip_value: Any, loss: Any,
                       loss_critic_type: str = "smooth_l1") -> tuple:
    """PPO2-style value clipping (TorchRL's ``_clip_value_loss``; OpenAI baselines ``ppo2``)::

        V_c  = V_old + clip(V - V_old, -c, c)
        loss = max(loss, dist(target, V_c))          (the pessimistic of the two)
        clip_fraction = mean(V - V_old != clip(V - V_old, -c, c))

    Args:
        value: ``[*B, 1]`` current ``V_theta(s)``; old_value: ``V_old(s)`` stored at collection time (a constant);
        target: the value target; loss: ``dist(target, V)`` (elementwise). All of one shape.
        clip_value: ``c > 0``.

    Returns:
        ``(loss [*B, 1], clip_fraction [])``.
    """
    check_same_shape({"value": value, "old_value": old_value, "target": target, "loss": loss})
    xp = namespace_of(value, old_value, target, loss)
    old = stop_gradient(old_value)
    pre = xp.subtract(value, old)
    clipped = xp.clip(pre, min=-clip_value, max=clip_value)
    fraction = clip_fraction(pre, clipped)
    loss_clipped = distance_loss(target, xp.add(old, clipped), loss_critic_type)
    return xp.maximum(loss, loss_clipped), fraction


def critic_loss(value: Any, target: Any, loss_critic_type: str = "smooth_l1", *, old_value: Any = None,
                clip_value: Any = None, names: tuple = ("value", "value_target")) -> tuple:
    """The critic loss ``dist(target, V_theta(s))`` (``l2`` without 1/2, ``l1``, ``smooth_l1``; target first, as
    TorchRL), optionally value-clipped (:func:`clipped_value_loss`).

    Args:
        value, target: ``[*B, 1]``, same shape; old_value: with ``clip_value``, ``V_old`` of that shape.
        names: names of ``value`` and ``target`` in error messages.

    Returns:
        ``(loss [*B, 1], clip_fraction [] or None)``; the target carries no gradient.
    """
    check_floating(value, names[0])
    check_floating(target, names[1])
    check_same_shape({names[0]: value, names[1]: target})
    target = stop_gradient(target)
    loss = distance_loss(target, value, loss_critic_type)
    if clip_value is None:
        return loss, None
    if old_value is None:
        raise ValueError("old_value: required with clip_value")
    check_same_shape({names[0]: value, f"old {names[0]}": old_value})
    return clipped_value_loss(value, old_value, target, clip_value, loss, loss_critic_type)


def explained_variance(target: Any, value: Any, axis: int = 0) -> Any:
    """``1 - Var(target - V) / (Var(target) + eps)`` with population variances along ``axis`` and
    ``eps = finfo(dtype).eps`` (TorchRL: dim 0 only, so ``[B, T, 1]`` gives ``[T, 1]``). No gradient."""
    t, v = stop_gradient(target), stop_gradient(value)
    check_same_shape({"target": t, "value": v})
    xp = namespace_of(t, v)
    eps = float(xp.finfo(t.dtype).eps)
    resid = xp.var(xp.subtract(t, v), axis=axis, correction=0)
    total = xp.var(t, axis=axis, correction=0)
    return 1.0 - resid / (total + eps)


# ------------------------------------------------------------------------------------------------ advantages
def normalize_advantage(advantage: Any, exclude_dims: Sequence[int] = (), *, mask: Any = None,
                        eps: float | None = None) -> Any:
    """Standardise the advantage: ``(A - mean) / max(std, eps)`` over every axis except ``exclude_dims``.

    * no mask: unbiased std (``correction=1``), ``eps = 1e-6`` (TorchRL's ``_standardize``);
    * ``mask`` (TorchRL's ``shifted_valid``, broadcast to the advantage from the left): masked mean and *biased*
      masked std over the valid entries, ``count`` clamped at 1, ``eps = 1e-4``.

    Args:
        advantage: ``[*B, 1]`` (any shape). exclude_dims: axes kept independent (e.g. ``(-2,)``, the agent axis).

    Returns:
        the advantage's shape. Excluding every axis returns the input unchanged. Repeated or out-of-range axes raise
        ``ValueError``.
    """
    check_floating(advantage, "advantage")
    xp = namespace_of(advantage, mask)
    nd = advantage.ndim
    excl = [d + nd if d < 0 else d for d in exclude_dims]
    if len(set(excl)) != len(excl):
        raise ValueError(f"normalize_advantage_exclude_dims: repeated dimensions {tuple(exclude_dims)}")
    if any(d < 0 or d >= nd for d in excl):
        raise ValueError(
            f"normalize_advantage_exclude_dims: {tuple(exclude_dims)} out of range for an advantage of shape "
            f"{_fmt(tuple(advantage.shape))}"
        )
    axes = tuple(d for d in range(nd) if d not in excl)
    if not axes:
        return advantage
    if mask is None:
        e = NORMALIZE_EPS if eps is None else eps
        mean = xp.mean(advantage, axis=axes, keepdims=True)
        std = xp.std(advantage, axis=axes, keepdims=True, correction=1)
        return (advantage - mean) / xp.clip(std, min=e)
    e = MASKED_NORMALIZE_EPS if eps is None else eps
    m = stop_gradient(mask)
    mxp = namespace_of(m)
    while m.ndim < nd:
        m = mxp.expand_dims(m, axis=-1)
    m = mxp.astype(mxp.broadcast_to(m, tuple(advantage.shape)), advantage.dtype)
    count = xp.clip(xp.sum(m, axis=axes, keepdims=True), min=1.0)
    loc = xp.sum(advantage * m, axis=axes, keepdims=True) / count
    var = xp.sum((advantage - loc) ** 2 * m, axis=axes, keepdims=True) / count
    return (advantage - loc) / xp.clip(xp.sqrt(var), min=e)


# ------------------------------------------------------------------------------------------------ KL registry
_KL: dict = {}


def register_kl(p_cls: type, q_cls: type) -> Callable:
    """Decorator registering ``fn(p, q) -> KL(p || q) [*B]`` for the pair of classes (looked up along the MRO)."""

    def deco(fn: Callable) -> Callable:
        _KL[(p_cls, q_cls)] = fn
        return fn

    return deco


def _lookup(p: Any, q: Any) -> Callable | None:
    for pc in type(p).__mro__:
        for qc in type(q).__mro__:
            fn = _KL.get((pc, qc))
            if fn is not None:
                return fn
    return None


def has_analytic_kl(p: Any, q: Any) -> bool:
    """Whether :func:`kl_divergence` has a closed form for ``(p, q)``."""
    _register_defaults()
    return _lookup(p, q) is not None


def kl_divergence(p: Any, q: Any) -> Any:
    """``KL(p || q)`` ``[*B]`` in closed form (``NotImplementedError`` for an unregistered pair; see
    :func:`mc_kl_divergence`). Formulas follow ``torch.distributions.kl`` so values match TorchRL to round-off."""
    _register_defaults()
    fn = _lookup(p, q)
    if fn is None:
        raise NotImplementedError(f"no analytic KL for ({type(p).__name__}, {type(q).__name__}); use mc_kl_divergence")
    return fn(p, q)


def mc_kl_divergence(p: Any, q: Any, samples: int = 1, *, generator: Any = None, noise: Any = None) -> Any:
    """Monte-Carlo ``KL(p || q) ~ mean_k [log p(x_k) - log q(x_k)]``, ``x_k ~ p`` (``samples`` draws, no
    reparameterisation: the draws are constants), TorchRL's fallback. Returns ``[*B]``."""
    x, lp = p.sample_and_log_prob(generator, (int(samples),), noise=noise)
    lq = q.log_prob(stop_gradient(x))
    xp = namespace_of(lp, lq)
    return xp.mean(xp.subtract(lp, lq), axis=0)


def _sum_rightmost(x: Any, n: int) -> Any:
    if n == 0:
        return x
    xp = namespace_of(x)
    return xp.sum(x, axis=tuple(range(x.ndim - n, x.ndim)))


def _normal_kl(p: Any, q: Any) -> Any:
    """torch's ``_kl_normal_normal``: ``0.5 (r + t - 1 - log r)``, ``r = (s_p / s_q)^2``, ``t = ((m_p - m_q)/s_q)^2``."""
    xp = namespace_of(p.loc, p.scale, q.loc, q.scale)
    var_ratio = (p.scale / q.scale) ** 2
    t1 = (xp.subtract(p.loc, q.loc) / q.scale) ** 2
    return 0.5 * (var_ratio + t1 - 1.0 - xp.log(var_ratio))


_DEFAULTS_DONE = False


def _register_defaults() -> None:
    global _DEFAULTS_DONE
    if _DEFAULTS_DONE:
        return
    from ..distributions import Categorical, Normal, TanhNormal

    @register_kl(Normal, Normal)
    def _kl_normal(p: Any, q: Any) -> Any:
        if tuple(p.event_shape) != tuple(q.event_shape) or tuple(p.batch_shape) != tuple(q.batch_shape):
            raise ValueError(
                f"kl_divergence: shapes differ: p batch {p.batch_shape} event {p.event_shape}, q batch "
                f"{q.batch_shape} event {q.event_shape}"
            )
        return _sum_rightmost(_normal_kl(p, q), len(p.event_shape))

    @register_kl(TanhNormal, TanhNormal)
    def _kl_tanh_normal(p: Any, q: Any) -> Any:
        # torch's TransformedDistribution rule: the same bijection on both sides leaves the KL of the bases
        pb, qb = (p.low, p.high), (q.low, q.high)
        if all(isinstance(b, float) for b in pb + qb) and pb != qb:
            raise NotImplementedError("kl_divergence: TanhNormal pair with different bounds has no closed form")
        if p.event_dims != q.event_dims or tuple(p.loc.shape) != tuple(q.loc.shape):
            raise ValueError("kl_divergence: TanhNormal pair with different shapes")
        return _sum_rightmost(_normal_kl(p._base, q._base), p.event_dims)

    @register_kl(Categorical, Categorical)
    def _kl_categorical(p: Any, q: Any) -> Any:
        # torch's _kl_categorical_categorical: inf where q has no mass, 0 where p has none
        xp = namespace_of(p.probs, q.probs)
        t = p.probs * xp.subtract(p.logits, q.logits)
        qp, pp = stop_gradient(q.probs), stop_gradient(p.probs)
        t = xp.where(qp == 0, xp.full_like(stop_gradient(t), math.inf), t)
        t = xp.where(pp == 0, xp.zeros_like(stop_gradient(t)), t)
        return xp.sum(t, axis=-1)

    _DEFAULTS_DONE = True
