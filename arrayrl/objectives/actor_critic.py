"""Machinery shared by the soft actor-critic family (SAC v1/v2, DiscreteSAC; REDQ, CrossQ, TQC, CQL, TD3 reuse it).

TorchRL 0.14.1 copies the entropy-temperature block, the critic-ensemble handling and the soft targets across five
files (``sac.py``, ``redq.py``, ``cql.py``, ``crossq.py``, ``tqc.py``); arrayrl writes them once, here.

Pure terms (arrays in, arrays out; ``N`` critics, batch shape ``[*B]``, ``K`` discrete actions):

* :func:`soft_state_value` -- ``V(s') = min_i [Q_i(s', a') - alpha log pi(a'|s')]``, ``[N, *B] -> [*B]``
  (Haarnoja et al. 2018b, "Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905, eq. 3 with the
  clipped double-Q of Fujimoto et al. 2018);
* :func:`expected_soft_state_value` -- the exact expectation over discrete actions,
  ``V(s') = sum_a pi(a|s') [min_i Q_i(s', a) - alpha log pi(a|s')]``, ``[N, *B, K] -> [*B]`` (Christodoulou 2019,
  "Soft Actor-Critic for Discrete Action Settings", arXiv:1910.07207, eq. 10);
* :func:`soft_actor_loss` -- ``alpha log pi(a~|s) - min_i Q_i(s, a~)`` (arXiv:1812.05905 eq. 7, reparameterised);
  :func:`expected_soft_actor_loss` -- ``sum_a pi(a|s) [alpha log pi(a|s) - min_i Q_i(s, a)]`` (arXiv:1910.07207
  eq. 12);
* :func:`temperature_loss` -- ``-log(alpha) (sg(log pi) + H_target)``: **in log alpha**, the convention of TorchRL
  and Stable-Baselines3 (the paper's eq. 18 uses ``alpha``; same fixed points, different step sizes);
* :func:`critic_ensemble_loss` with the ensemble reductions of the family: ``"sum"`` over critics (SAC v2,
  DiscreteSAC, TD3, CrossQ, TQC, CQL, IQL), ``"per_critic"`` (REDQ then averages the ``[N, *B]`` array over
  ``N * B``), ``"chunk"`` (TorchRL's SAC v1: critic ``i`` sees only chunk ``i`` of the batch);
  :func:`ensemble_td_error` (the priorities: ``max_i |Q_i - y|``, ``max_i (Q_i - y)**2`` or per chunk);
* :func:`auto_target_entropy` -- ``-dim(A)`` from an action spec (event dimensions only; TorchRL's count of every
  dimension of a batched spec with ``torchrl_compat=True``); :func:`discrete_target_entropy`;
* :func:`alpha_log_bounds` / :func:`clamp_log_alpha` -- TorchRL's ``min_alpha``/``max_alpha`` semantics;
* :func:`bootstrap_target` -- the value estimator's target with an injected next value (TD0 by default).

Building blocks for the loss classes:

* :class:`EntropyTemperature` -- ``log_alpha`` as a trainable leaf ``loss.params["log_alpha"]`` (or a constant
  with ``fixed_alpha``), ``alpha_init``, clamping, the temperature loss;
* :class:`TermSelection` -- ``value_and_grad(batch, terms=[...])`` that skips the unrequested term groups (their
  products, not only their backward pass; TD3 and SAC v2 declare their groups);
* :class:`ActorCriticLoss` -- a :class:`~arrayrl.objectives.LossModule` base that registers the actor, the critic
  ensemble (stacked ``[N, ...]`` parameters, targets), the temperature and a :class:`~arrayrl.random.Generator`, and
  runs the critics on a batch with a replaced action.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

from .. import data as _data
from .._backend import device_of, namespace_of
from .._checks import check_floating, check_min_rank
from .._validate import check_choice, check_number
from ..nn.params import stack
from ..autodiff import stop_gradient as _tree_stop_gradient
from ._nets import ensemble_apply, make_ensemble
from .common import LossModule
from .utils import distance_loss, stop_gradient

__all__ = [
    "min_over_critics",
    "soft_state_value",
    "expected_soft_state_value",
    "soft_actor_loss",
    "expected_soft_actor_loss",
    "temperature_loss",
    "critic_ensemble_loss",
    "ensemble_td_error",
    "chunk_mask",
    "auto_target_entropy",
    "discrete_target_entropy",
    "alpha_log_bounds",
    "clamp_log_alpha",
    "bootstrap_target",
    "EntropyTemperature",
    "TermSelection",
    "ActorCriticLoss",
    "ENSEMBLE_REDUCTIONS",
]

ENSEMBLE_REDUCTIONS = ("sum", "per_critic", "chunk")


def _check_ensemble(q: Any, name: str, batch_shape: tuple | None = None, extra: int = 0,
                    ref: str = "the log-probability") -> None:
    check_floating(q, name)
    check_min_rank(q, 1 + extra, name)
    if batch_shape is not None:
        got = tuple(q.shape[1 : q.ndim - extra])
        if got != tuple(batch_shape):
            raise ValueError(
                f"{name}: expected shape [N, *{tuple(batch_shape)}{', K' if extra else ''}] (N critics, the batch "
                f"shape of {ref}), got {tuple(q.shape)}"
            )


def _same_shape(ref_name: str, ref: Any, **arrays: Any) -> None:
    for name, a in arrays.items():
        if tuple(a.shape) != tuple(ref.shape):
            raise ValueError(f"{name}: expected shape {tuple(ref.shape)} (the shape of {ref_name}), got {tuple(a.shape)}")


#: ``tree`` with every leaf's tape dropped (containers rebuilt as plain ``dict``/``list``/``tuple``): the tape's own
#: tree walk, the hot path of every actor-critic call
_sg_tree = _tree_stop_gradient


def _squeeze_last(x: Any, name: str) -> Any:
    """``[..., 1]`` -> ``[...]`` (``ValueError`` naming ``name`` without the trailing singleton)."""
    if x.ndim == 0 or x.shape[-1] != 1:
        raise ValueError(f"{name}: expected a trailing singleton dimension [..., 1], got shape {tuple(x.shape)}")
    return namespace_of(x).squeeze(x, axis=-1)


def _scale(alpha: Any, x: Any) -> Any:
    """``alpha * x`` for a number or a 0-d array ``alpha`` (through the namespace: raw and taped operands mix)."""
    if isinstance(alpha, (int, float)):
        return alpha * x
    return namespace_of(alpha, x).multiply(alpha, x)


# ------------------------------------------------------------------------------------------------ pure terms
def min_over_critics(q: Any) -> Any:
    """``min_i Q_i``: ``[N, *B(, K)] -> [*B(, K)]`` (clipped double-Q; ties send the gradient to one critic)."""
    check_min_rank(q, 1, "q")
    return namespace_of(q).min(q, axis=0)


def soft_state_value(next_q: Any, next_log_prob: Any, alpha: Any) -> Any:
    """Soft value of the next state from one sampled action: ``V(s') = min_i [Q_i(s', a') - alpha log pi(a'|s')]``.

    Args:
        next_q: ``[N, *B]``, critic ``i``'s ``Q_i(s', a')`` (target critics).
        next_log_prob: ``[*B]``, ``log pi(a'|s')`` of the same draw.
        alpha: the temperature (a number or a 0-d array, no gradient).

    Returns ``[*B]`` (TorchRL subtracts ``alpha log pi`` before the minimum; same value).
    """
    check_floating(next_log_prob, "next_log_prob")
    _check_ensemble(next_q, "next_q", tuple(next_log_prob.shape))
    xp = namespace_of(next_q, next_log_prob)
    return xp.min(next_q - _scale(alpha, xp.expand_dims(next_log_prob, axis=0)), axis=0)


def expected_soft_state_value(next_q: Any, next_probs: Any, next_log_probs: Any, alpha: Any) -> Any:
    """Discrete soft value ``V(s') = sum_a pi(a|s') [min_i Q_i(s', a) - alpha log pi(a|s')]`` (arXiv:1910.07207 eq. 10).

    ``next_q`` ``[N, *B, K]``; ``next_probs``, ``next_log_probs`` ``[*B, K]``. Returns ``[*B]``.
    """
    check_floating(next_probs, "next_probs")
    check_floating(next_log_probs, "next_log_probs")
    _same_shape("next_probs", next_probs, next_log_probs=next_log_probs)
    check_min_rank(next_probs, 1, "next_probs")
    _check_ensemble(next_q, "next_q", tuple(next_probs.shape[:-1]), extra=1)
    if tuple(next_q.shape[1:]) != tuple(next_probs.shape):
        raise ValueError(f"next_q: expected shape [N, *{tuple(next_probs.shape)}], got {tuple(next_q.shape)}")
    xp = namespace_of(next_q, next_probs, next_log_probs)
    return xp.sum(next_probs * (xp.min(next_q, axis=0) - _scale(alpha, next_log_probs)), axis=-1)


def soft_actor_loss(log_prob: Any, min_q: Any, alpha: Any) -> Any:
    """Reparameterised SAC policy loss ``alpha log pi(a~|s) - min_i Q_i(s, a~)``, ``[*B]`` (arXiv:1812.05905 eq. 7).

    ``min_q`` comes from critics whose parameters carry no gradient; the gradient reaches the actor through ``a~``
    (inside ``min_q``) and through ``log_prob``.
    """
    check_floating(log_prob, "log_prob")
    check_floating(min_q, "min_q")
    _same_shape("log_prob", log_prob, min_q=min_q)
    return namespace_of(log_prob, min_q).subtract(_scale(alpha, log_prob), min_q)


def expected_soft_actor_loss(probs: Any, log_probs: Any, min_q: Any, alpha: Any) -> Any:
    """Discrete SAC policy loss ``sum_a pi(a|s) [alpha log pi(a|s) - min_i Q_i(s, a)]``, ``[*B, K] -> [*B]``
    (arXiv:1910.07207 eq. 12)."""
    for name, a in (("probs", probs), ("log_probs", log_probs), ("min_q", min_q)):
        check_floating(a, name)
    _same_shape("probs", probs, log_probs=log_probs, min_q=min_q)
    xp = namespace_of(probs, log_probs, min_q)
    return xp.sum(xp.multiply(probs, xp.subtract(_scale(alpha, log_probs), min_q)), axis=-1)


def temperature_loss(log_alpha: Any, log_prob: Any, target_entropy: Any) -> Any:
    """Temperature loss ``-log(alpha) (sg(log pi) + H_target)``, ``[*B]``.

    In **log alpha** (TorchRL's and Stable-Baselines3's convention; Haarnoja et al. 2018b eq. 18 write ``alpha``):
    the gradient with respect to ``log alpha`` is ``-(log pi + H_target)``, positive when the policy's entropy
    ``-log pi`` exceeds the target, so gradient descent lowers alpha. ``target_entropy=None`` gives zeros (TorchRL's
    placeholder).
    """
    check_floating(log_prob, "log_prob")
    if target_entropy is None:
        return namespace_of(stop_gradient(log_prob)).zeros_like(stop_gradient(log_prob))
    return _scale(-log_alpha, stop_gradient(log_prob) + target_entropy)


def chunk_mask(n: int, batch_shape: tuple, like: Any) -> Any:
    """``[N, *B]`` bool: ``True`` where row ``b`` of the leading batch axis lies in chunk ``i`` (TorchRL's
    ``td.reshape(N, -1, ...)``: chunk ``i`` is rows ``i B/N .. (i+1) B/N - 1``). ``B % N`` must be 0."""
    if not batch_shape:
        raise ValueError("chunk_mask: SAC v1's per-chunk critic loss needs at least one batch dimension")
    b0 = int(batch_shape[0])
    if b0 % n != 0:
        raise RuntimeError(f"Batch size={tuple(batch_shape)} is incompatible with num_qvqlue_nets={n}.")
    xp = namespace_of(like)
    dev = device_of(like)
    rows = xp.arange(b0, device=dev) // (b0 // n)
    m = xp.expand_dims(rows, axis=0) == xp.expand_dims(xp.arange(n, device=dev), axis=1)  # [N, B0]
    m = xp.reshape(m, (n, b0) + (1,) * (len(batch_shape) - 1))
    return xp.broadcast_to(m, (n,) + tuple(batch_shape))


def critic_ensemble_loss(pred: Any, target: Any, loss_function: str = "smooth_l1", reduction: str = "sum") -> Any:
    """Elementwise critic loss of an ensemble, before the batch reduction.

    Args:
        pred: ``[N, *B]`` predictions ``Q_i(s, a)`` (with tape).
        target: ``[*B]`` the target ``y`` (gradient stopped here).
        loss_function: ``"l2"`` (no 1/2), ``"l1"``, ``"smooth_l1"`` (:func:`~arrayrl.objectives.distance_loss`).
        reduction: ``"sum"``: ``sum_i dist(Q_i, y)`` ``[*B]`` (SAC v2, DiscreteSAC, TD3, CrossQ, TQC, CQL, IQL);
            ``"per_critic"``: ``dist(Q_i, y)`` ``[N, *B]`` (REDQ averages it over ``N * B``); ``"chunk"``: critic
            ``i`` on chunk ``i`` of the leading batch axis only, ``[*B]`` (TorchRL's SAC v1; ``B % N == 0``).
    """
    check_choice(reduction, "reduction", ENSEMBLE_REDUCTIONS)
    check_floating(target, "target")
    _check_ensemble(pred, "pred", tuple(target.shape), ref="target")
    xp = namespace_of(pred, target)
    y = xp.broadcast_to(xp.expand_dims(stop_gradient(target), axis=0), tuple(pred.shape))
    per = distance_loss(pred, y, loss_function)
    if reduction == "per_critic":
        return per
    if reduction == "chunk":
        m = chunk_mask(int(pred.shape[0]), tuple(target.shape), target)
        per = xp.where(m, per, xp.zeros_like(per))
    return xp.sum(per, axis=0)


def ensemble_td_error(pred: Any, target: Any, kind: str = "max_abs") -> Any:
    """Priorities ``[*B]`` (no gradient): ``"max_abs"``: ``max_i |Q_i - y|`` (SAC v2, DiscreteSAC);
    ``"max_sq"``: ``max_i (Q_i - y)**2`` (TD3, REDQ, IQL); ``"chunk_sq"``: ``(Q_i - y)**2`` of the critic that
    owns the row's chunk (TorchRL's SAC v1)."""
    check_choice(kind, "kind", ("max_abs", "max_sq", "chunk_sq"))
    check_floating(target, "target")
    _check_ensemble(pred, "pred", tuple(target.shape), ref="target")
    xp = namespace_of(pred, target)
    d = stop_gradient(pred) - xp.expand_dims(stop_gradient(target), axis=0)
    if kind == "max_abs":
        return xp.max(xp.abs(d), axis=0)
    if kind == "max_sq":
        return xp.max(d * d, axis=0)
    m = chunk_mask(int(pred.shape[0]), tuple(target.shape), target)
    return xp.sum(xp.where(m, d * d, xp.zeros_like(d)), axis=0)


# ------------------------------------------------------------------------------------------------ temperature
def _spec_shape(spec: Any, what: str = "action_spec") -> tuple:
    if isinstance(spec, bool):
        raise TypeError(f"{what}: expected an action spec (with .shape), a shape tuple or an int, got a bool")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"{what}: expected a non-negative action dimension, got {spec}")
        return (spec,)
    if isinstance(spec, (tuple, list)):
        return tuple(int(s) for s in spec)
    shape = getattr(spec, "shape", None)
    if shape is None:
        raise TypeError(f"{what}: expected an action spec (with .shape), a shape tuple or an int, got "
                        f"{type(spec).__name__}")
    return tuple(int(s) for s in shape)


def _numel(shape: tuple) -> int:
    out = 1
    for s in shape:
        out *= int(s)
    return out


def auto_target_entropy(action_spec: Any, *, event_dims: int = 1, container_shape: tuple = (),
                        torchrl_compat: bool = False) -> float:
    """``target_entropy="auto"`` of the continuous losses: ``-dim(A)`` (Haarnoja et al. 2018b, section 5).

    Args:
        action_spec: the action's spec (anything with ``.shape``: a TorchRL ``Bounded``...), a shape tuple, an int
            (the action dimension), or a ``Mapping`` of such specs (a composite action: the dimensions are summed).
        event_dims: how many trailing dimensions form one action (1: a vector action, the distributions'
            default). The leading dimensions of a spec are batch dimensions (a batched env's spec has shape
            ``[n_envs, A]``) and are not counted.
        container_shape: TorchRL's container (composite) batch shape, skipped in compat mode.
        torchrl_compat: TorchRL 0.14.1 counts every dimension of the spec after the container's shape, so a
            ``(4, 2)`` bounded spec gives ``-8`` instead of ``-2`` (docs/divergences.md).
    """
    if isinstance(action_spec, Mapping):
        return float(sum(auto_target_entropy(s, event_dims=event_dims, container_shape=container_shape,
                                             torchrl_compat=torchrl_compat) for s in action_spec.values()))
    shape = _spec_shape(action_spec)
    if torchrl_compat:
        return -float(_numel(shape[len(container_shape):]))
    check_number(event_dims, "event_dims", low=0, integer=True)
    return -float(_numel(shape[len(shape) - event_dims:] if event_dims else ()))


def discrete_target_entropy(num_actions: Any, weight: float = 0.98) -> float:
    """``target_entropy="auto"`` of DiscreteSAC: ``-weight * log(1 / num_actions) = weight * log(num_actions)``
    (positive; Christodoulou 2019 uses ``weight = 0.98``)."""
    if num_actions is None:
        raise ValueError("num_actions needs to be provided if target_entropy == 'auto'")
    num_actions = check_number(num_actions, "num_actions", low=1, integer=True)
    check_number(weight, "target_entropy_weight")
    return -float(math.log(1.0 / num_actions) * weight)


def alpha_log_bounds(min_alpha: float | None, max_alpha: float | None) -> tuple:
    """``(min log alpha, max log alpha)`` with TorchRL's rules: giving only ``min_alpha`` sets the upper bound to
    ``1e9``; giving only ``max_alpha`` leaves the lower bound open (``None``); a ``0`` counts as not given;
    ``max_alpha == 0`` with a ``min_alpha`` raises."""
    for name, v in (("min_alpha", min_alpha), ("max_alpha", max_alpha)):
        if v is not None:
            check_number(v, name, low=0.0)
    if bool(min_alpha) ^ bool(max_alpha):
        min_alpha = min_alpha if min_alpha else 0.0
        if max_alpha == 0:
            raise ValueError("max_alpha must be either None or greater than 0.")
        max_alpha = max_alpha if max_alpha else 1e9
    if min_alpha and max_alpha and min_alpha > max_alpha:
        raise ValueError(f"max_alpha: expected >= min_alpha ({min_alpha}), got {max_alpha}")
    lo = math.log(min_alpha) if min_alpha else None
    hi = math.log(max_alpha) if max_alpha else None
    return lo, hi


def clamp_log_alpha(log_alpha: Any, lo: float | None, hi: float | None) -> Any:
    """``log alpha`` clamped to ``[lo, hi]`` with a straight-through gradient.

    TorchRL clamps ``log_alpha.data`` in place, so the loss uses the clamped value while the gradient is the one of
    the unclamped parameter (d/d log_alpha = 1). A plain ``clip`` would zero the gradient outside the bounds.
    """
    if lo is None and hi is None:
        return log_alpha
    if isinstance(log_alpha, float):
        return min(max(log_alpha, -math.inf if lo is None else lo), math.inf if hi is None else hi)
    xp = namespace_of(log_alpha)
    raw = stop_gradient(log_alpha)
    return log_alpha + (xp.clip(raw, min=lo, max=hi) - raw)


class EntropyTemperature:
    """The entropy temperature of the SAC family: ``alpha = exp(log_alpha)``.

    Args:
        alpha_init: initial ``alpha > 0`` (``log_alpha = log(alpha_init)``).
        min_alpha, max_alpha: bounds (:func:`alpha_log_bounds`); ``log_alpha`` is clamped on every loss call
            (TorchRL clamps the parameter in place; arrayrl writes the clamped leaf back into ``loss.params`` at the
            start of :meth:`ActorCriticLoss.forward`/``value_and_grad``, and clamps with a straight-through gradient
            inside the loss, so both values and gradients equal TorchRL's).
        fixed_alpha: ``log_alpha`` is a constant (not in ``loss.params``); ``loss_alpha`` is still returned.

    :meth:`register` adds the trainable leaf ``loss.params["log_alpha"]`` (a 0-d array of the actor's namespace,
    dtype and device).
    """

    NAME = "log_alpha"

    def __init__(self, alpha_init: float = 1.0, min_alpha: float | None = None, max_alpha: float | None = None,
                 fixed_alpha: bool = False):
        self.alpha_init = check_number(alpha_init, "alpha_init", low=0.0, low_open=True)
        self.min_log_alpha, self.max_log_alpha = alpha_log_bounds(min_alpha, max_alpha)
        self.fixed_alpha = bool(fixed_alpha)
        self._fixed_value = math.log(self.alpha_init)

    def register(self, loss: LossModule, like: Any) -> None:
        """Add ``log_alpha`` to ``loss.params`` (unless fixed); ``like`` is an array giving namespace/dtype/device."""
        if self.fixed_alpha:
            return
        xp = namespace_of(like)
        leaf = xp.asarray(self._fixed_value, dtype=like.dtype, device=device_of(like))
        loss.convert_to_functional(None, self.NAME, params=leaf)

    def raw_log_alpha(self, params: Mapping) -> Any:
        """``log_alpha`` from ``params`` (possibly taped), or the fixed float."""
        return self._fixed_value if self.fixed_alpha else params[self.NAME]

    def log_alpha(self, params: Mapping) -> Any:
        """The clamped ``log alpha`` (straight-through, see :func:`clamp_log_alpha`)."""
        return clamp_log_alpha(self.raw_log_alpha(params), self.min_log_alpha, self.max_log_alpha)

    def alpha(self, params: Mapping, like: Any) -> Any:
        """``alpha = exp(log alpha)`` as a 0-d array of ``like``'s namespace and dtype, without gradient."""
        la = self.log_alpha(params)
        xp = namespace_of(like)
        if isinstance(la, float):
            return xp.asarray(math.exp(la), dtype=like.dtype, device=device_of(like))
        raw = stop_gradient(la)
        xr = namespace_of(raw)
        return xr.asarray(xr.exp(raw))  # a 0-d array (NumPy's exp of a 0-d array is a scalar)

    def loss(self, params: Mapping, log_prob: Any, target_entropy: Any) -> Any:
        """:func:`temperature_loss` with the clamped ``log alpha`` (elementwise, ``[*B]``)."""
        return temperature_loss(self.log_alpha(params), log_prob, target_entropy)

    def project(self, loss: LossModule) -> None:
        """Write the clamped ``log_alpha`` back into ``loss.params`` (TorchRL's in-place ``clamp_``)."""
        if self.fixed_alpha or (self.min_log_alpha is None and self.max_log_alpha is None):
            return
        owner = loss._owners[self.NAME]
        la = owner.params
        owner.params = namespace_of(la).clip(la, min=self.min_log_alpha, max=self.max_log_alpha)

    def __repr__(self) -> str:
        return (f"EntropyTemperature(alpha_init={self.alpha_init}, min_log_alpha={self.min_log_alpha}, "
                f"max_log_alpha={self.max_log_alpha}, fixed_alpha={self.fixed_alpha})")


# ------------------------------------------------------------------------------------------------ targets
def bootstrap_target(estimator: Any, batch: Mapping, next_value: Any) -> Any:
    """The value estimator's target with an injected next value: ``[*B] -> [*B]``, no gradient.

    ``estimator.value_estimate(batch, next_value=V(s')[..., None])`` -- for TD0
    ``y = r + gamma**n (1 - terminated) V(s')`` (TorchRL's losses put ``V(s')`` in ``("next", "state_value")``).
    """
    xp = namespace_of(next_value)
    y = estimator.value_estimate(batch, next_value=xp.expand_dims(stop_gradient(next_value), axis=-1))
    y = stop_gradient(y)
    return namespace_of(y).squeeze(y, axis=-1)


# ------------------------------------------------------------------------------------------------ base class
class TemperatureAttributes:
    """The read-only temperature attributes of a loss holding an :class:`EntropyTemperature` in ``_temperature``
    (written once for :class:`ActorCriticLoss` and OnlineDTLoss): ``log_alpha``, ``fixed_alpha``,
    ``min_log_alpha``, ``max_log_alpha``."""

    _temperature: EntropyTemperature | None
    _owners: dict

    @property
    def _temp(self) -> EntropyTemperature:
        if self._temperature is None:
            raise AttributeError(f"{type(self).__name__} has no entropy temperature")
        return self._temperature

    @property
    def log_alpha(self) -> Any:
        """The current ``log alpha``: the leaf ``params["log_alpha"]``, or the fixed value (a float)."""
        t = self._temp
        return t._fixed_value if t.fixed_alpha else self._owners[t.NAME].params

    @property
    def fixed_alpha(self) -> bool:
        return self._temp.fixed_alpha

    @property
    def min_log_alpha(self) -> float | None:
        return self._temp.min_log_alpha

    @property
    def max_log_alpha(self) -> float | None:
        return self._temp.max_log_alpha


class TermSelection:
    """``value_and_grad(batch, terms=[...])`` that computes only the requested terms (a mixin for loss classes).

    :meth:`LossModule.value_and_grad` differentiates the sum of ``terms`` but runs the whole ``_forward``; the
    unrequested terms' products were computed and thrown away (their backward is never run: the tape walks only
    the ancestors of the requested terms). A loss with this mixin reads :meth:`_wants` in ``_forward`` and skips
    the term groups that were not asked for:

    * ``_TERM_GROUPS``: ``{group: (output keys...)}``; a group is computed when ``terms`` is ``None`` (every call
      of ``forward``, and ``value_and_grad`` without ``terms``) or names one of its keys;
    * the outputs of a skipped group are absent from the returned dict (the requested terms, their metadata and
      the shared scalars remain); values and gradients of what is computed are those of the full call;
    * the random draws of a skipped group are still taken, so the generator's stream (and every later call) does
      not depend on ``terms``.
    """

    _TERM_GROUPS: dict = {}
    _wanted_terms: frozenset | None = None

    def value_and_grad(self, batch: Mapping | None = None, /, *, terms: Any = None, **kwargs: Any) -> tuple:
        self._wanted_terms = None if terms is None else frozenset(terms)
        try:
            return super().value_and_grad(batch, terms=terms, **kwargs)  # type: ignore[misc]
        finally:
            self._wanted_terms = None

    def _wants(self, group: str) -> bool:
        """Whether the term group ``group`` (a key of ``_TERM_GROUPS``) is computed in this call."""
        wanted = self._wanted_terms
        return wanted is None or not wanted.isdisjoint(self._TERM_GROUPS[group])


class ActorCriticLoss(TermSelection, TemperatureAttributes, LossModule):
    """Base of the soft actor-critic losses: an actor, a critic ensemble, an optional temperature, a generator.

    Subclasses call :meth:`_setup` from ``__init__`` and implement ``_forward``. Helpers:

    * :meth:`_critics` -- ``Q_i`` for every member, ``[N, *B(, K)]``, on a batch whose action is replaced;
    * :meth:`_dist` -- the actor's distribution; :meth:`_rsample` -- a reparameterised draw and its log-prob from
      :attr:`generator`;
    * :meth:`_alpha` / :meth:`_alpha_loss` -- the temperature block;
    * :meth:`_scalars` -- ``alpha`` and ``entropy`` outputs, honouring ``reduction="none"`` and
      ``scalar_output_mode``.

    ``generator`` (constructor argument or attribute): an :class:`arrayrl.random.Generator` (or a
    :class:`~arrayrl.random.NoiseGenerator` replaying given draws); by default a ``Generator(0)`` of the actor's
    namespace, created at the first draw.
    """

    _POLICY_NETWORK = "actor_network"
    _SCALAR_OUTPUTS = ("alpha", "entropy")

    def _setup(self, actor_network: Any, qvalue_network: Any, *, num_qvalue_nets: int, delay_actor: bool,
               delay_qvalue: bool, temperature: EntropyTemperature | None, generator: Any,
               reduction: str, scalar_output_mode: str | None, deactivate_vmap: bool) -> None:
        if not hasattr(actor_network, "get_dist"):
            raise TypeError("actor_network: expected a probabilistic actor with get_dist(params, batch), got "
                            f"{type(actor_network).__name__}")
        self.num_qvalue_nets = check_number(num_qvalue_nets, "num_qvalue_nets", low=1, integer=True)
        if scalar_output_mode is not None:
            check_choice(scalar_output_mode, "scalar_output_mode", ("exclude", "non_tensor"))
        self.delay_actor = bool(delay_actor)
        self.delay_qvalue = bool(delay_qvalue)
        self.deactivate_vmap = bool(deactivate_vmap)
        self._n = self.num_qvalue_nets  # always a leading member axis, of size 1 for one critic (TorchRL's too)
        self.generator = generator
        self.convert_to_functional(actor_network, "actor_network", create_target_params=self.delay_actor)
        if isinstance(qvalue_network, (list, tuple)):
            if len(qvalue_network) != self._n:
                raise ValueError(f"qvalue_network: got a list of {len(qvalue_network)} networks but "
                                 f"num_qvalue_nets={self._n}")
            template, qparams = qvalue_network[0], stack([m.params for m in qvalue_network])
        else:
            from ..random import Generator

            ens_gen = generator if isinstance(generator, Generator) else None
            template, qparams = make_ensemble(qvalue_network, self._n, ens_gen, "qvalue_network")
        self.convert_to_functional(template, "qvalue_network", params=qparams, create_target_params=self.delay_qvalue)
        self._temperature = temperature
        if temperature is not None:
            leaves = [x for x in _leaves(self.params["actor_network"])]
            if not leaves:
                raise ValueError("actor_network: has no parameters to take the namespace/dtype of log_alpha from")
            temperature.register(self, leaves[0])
        if reduction == "none" and scalar_output_mode is None:
            warnings.warn(
                f"{type(self).__name__} with reduction='none' cannot include scalar values (alpha, entropy) in its "
                "outputs; they are excluded. Pass scalar_output_mode='exclude' to silence this or 'non_tensor' to keep "
                "them.", UserWarning, stacklevel=3)
            scalar_output_mode = "exclude"
        self.scalar_output_mode = scalar_output_mode

    # ---------------------------------------------------------------------------------------- parameters
    def _draws(self, like: Any) -> Any:
        if self.generator is None:
            from ..random import Generator

            self.generator = Generator(0, xp=namespace_of(stop_gradient(like)), device=device_of(stop_gradient(like)))
        return self.generator

    # ---------------------------------------------------------------------------------------- calling
    def forward(self, batch: Mapping) -> dict:
        if self._temperature is not None:
            self._temperature.project(self)
        return super().forward(batch)

    def value_and_grad(self, batch: Mapping | None = None, /, *, terms: Any = None, **kwargs: Any) -> tuple:
        if self._temperature is not None:
            self._temperature.project(self)
        return super().value_and_grad(batch, terms=terms, **kwargs)

    @property
    def _emits_scalars(self) -> bool:
        """Whether the scalar metadata (``alpha``, ``entropy``...) is among the outputs: a reduced loss, or
        ``scalar_output_mode="non_tensor"`` (TorchRL excludes it from unreduced outputs otherwise)."""
        return self.reduction != "none" or self.scalar_output_mode == "non_tensor"

    def _all_out_keys(self) -> list:
        keys = list(self._OUT_KEYS)
        if not self._emits_scalars:
            keys = [k for k in keys if k not in self._SCALAR_OUTPUTS]
        return keys

    # ---------------------------------------------------------------------------------------- pieces
    def _dist(self, actor_params: Any, batch: Mapping) -> Any:
        return self._networks["actor_network"].get_dist(actor_params, batch)

    def _rsample(self, dist: Any) -> tuple:
        """``(a~, log pi(a~))`` from one reparameterised draw of :attr:`generator` (pre-tanh score for TanhNormal)."""
        if not getattr(dist, "has_rsample", False):
            raise TypeError(f"actor_network: the policy's {type(dist).__name__} has no reparameterised sampler")
        like = getattr(dist, "loc", None)
        return dist.rsample_and_log_prob(self._draws(like if like is not None else dist.probs))

    def _critics(self, q_params: Any, batch: Mapping, action: Any = None, key: Any = None) -> Any:
        """Critic outputs ``[N, *B(, K)]`` at ``key`` (default ``state_action_value``, the trailing 1 squeezed)
        on ``batch`` with its action replaced by ``action`` (when given)."""
        tk = self.tensor_keys
        if action is not None:
            batch = _data.with_(batch, tk.action, action)
        key = tk.state_action_value if key is None else key
        return ensemble_apply(self._networks["qvalue_network"], q_params, batch, key, self._n,
                              loop=self.deactivate_vmap)

    def _alpha(self, params: Mapping, like: Any) -> Any:
        return self._temp.alpha(params, like)

    def _alpha_loss(self, params: Mapping, log_prob: Any) -> Any:
        """:func:`temperature_loss` ``[*B]`` with the loss's ``target_entropy``."""
        return self._temp.loss(params, log_prob, getattr(self, "target_entropy"))

    def _skip_mask(self, batch: Mapping, batch_shape: tuple) -> Any:
        """``skip_done_states``: the rows whose next state is skipped, ``[*B]`` bool: ``terminated`` (the paper:
        only those never bootstrap; ``done`` if the batch has no ``terminated``), or ``done`` with
        ``torchrl_compat`` (TorchRL, which also skips truncations, #2613)."""
        tk = self.tensor_keys
        compat = getattr(self, "torchrl_compat", False)
        key = tk.done if compat else tk.terminated
        if not compat and not _data.has(batch, ("next",) + _data.unravel_key(tk.terminated)):
            key = tk.done
        m = _data.get(batch, ("next",) + _data.unravel_key(key), what="done/terminated flag")
        if m.ndim == len(batch_shape) + 1 and m.shape[-1] == 1:
            m = namespace_of(m).squeeze(m, axis=-1)
        return m

    def _weights(self, batch: Mapping) -> Any:
        return self._priority_weights(batch)

    def _scalars(self, out: dict, alpha: Any, entropy: Any) -> dict:
        if self._emits_scalars:
            out["alpha"] = alpha
            out["entropy"] = entropy
        return out


def _leaves(tree: Any) -> list:
    from ..tree import tree_leaves

    return tree_leaves(tree)
