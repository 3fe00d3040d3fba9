"""Value estimators as pure functions, with TorchRL 0.14.1's names, argument order and keywords.

Code written against ``torchrl.objectives.value.functional`` runs after changing the import::

    from arrayrl.value.functional import generalized_advantage_estimate
    adv, target = generalized_advantage_estimate(0.99, 0.95, value, next_value, reward, done, terminated)

Conventions (TorchRL's)
-----------------------
* Every array has the same shape ``[*B, T, *F]``; the time axis is ``time_dim`` (default ``-2``: TorchRL's
  ``[*B, T, F]`` layout with a trailing feature axis). Any axis can be the time axis (``time_dim`` may be
  negative or not); every other index is an independent trajectory. A 1-D input is a single trajectory and needs
  ``time_dim=-1`` (or ``0``), as in TorchRL. Shapes are never broadcast: ``[B]`` against ``[B, 1]`` is an error.
* ``done`` and ``terminated`` are bool arrays of the values' shape. ``done[t]`` marks the last step of a
  trajectory: multi-step recursions are cut there. ``terminated[t]`` masks the bootstrap ``V(s_{t+1})``
  (``next_state_value[t]``). A truncated step (``done & ~terminated``) bootstraps from ``next_state_value[t]``.
  The last step of the rollout always bootstraps from ``next_state_value[T-1]`` unless terminated.
  ``terminated=None`` means ``terminated = done``. ``terminated`` should imply ``done`` (as it does in every
  TorchRL environment).
* Floating inputs have dtype float32 or float64 (float16, bfloat16 and integers are rejected), all the same one
  (never promoted), and come from one library and device (messages name both arguments:
  ``reward is torch, state_value is numpy``).
* ``gamma`` and ``lmbda`` are Python numbers, 0-d (or one-element) arrays, or per-step arrays of the values' shape.
  Python numbers are range checked: ``gamma`` and ``lmbda`` in ``[0, 1]``, V-trace's ``rho_thresh`` and ``c_thresh``
  in ``(0, inf]``, NaN rejected. Arrays are not (that would read device data); they must be of the inputs' library
  and device (a NumPy ``gamma`` with torch inputs is a ``TypeError`` naming ``gamma``) and are cast to their dtype.
  Per-step values are "rolling" (``gamma[t]`` discounts the step from ``t`` to ``t + 1``); with
  ``rolling_gamma=False`` (TD(1) and TD(lambda) only) ``gamma[k]`` discounts the whole future seen from ``k``.
* Outputs have the inputs' shape and dtype; an empty batch or time axis gives empty outputs.

Differences with TorchRL (all documented in ``docs/divergences.md``)
--------------------------------------------------------------------
* The ``vec_*`` names are the *same* exact implementation as the loop names. TorchRL's ``vec_*`` functions drop
  geometric-filter terms below ``1e-7`` and build ``[T, T]`` tables; arrayrl reduces every recursive estimator to
  one exact reverse scan (:func:`arrayrl.ops.reverse_discounted_scan`), so the ``vec_*`` variants also accept
  ``rolling_gamma=False`` (TorchRL raises ``NotImplementedError``).
* A masked bootstrap is a ``where``, not a multiplication: a NaN or infinite ``next_state_value`` at a terminated
  step, or any garbage after ``done``, never reaches other outputs (TorchRL gives NaN).
* ``td1_return_estimate(..., rolling_gamma=False)``: TorchRL seeds that branch with 0, so a last step that is not
  done does not bootstrap, unlike every other estimator (and its own ``td_lambda_return_estimate`` with
  ``lmbda=1``). arrayrl bootstraps; ``torchrl_compat=True`` reproduces TorchRL.
* Bad input raises ``TypeError`` (dtype, library) or ``ValueError`` (shape, axis, hyper-parameter range) naming the
  argument, instead of TorchRL's ``RuntimeError`` or silent broadcasting/promotion. The checks read shapes and
  dtypes only (never data), so they never synchronise a device.

Every function is differentiable through :mod:`arrayrl.autodiff` with respect to the values and rewards (only
array-API calls and :func:`arrayrl.ops.reverse_discounted_scan`).

Papers: Sutton & Barto (2018), ch. 6, 7, 12 (TD(0), TD(1), TD(lambda)); Schulman et al. (2016), "High-Dimensional
Continuous Control Using Generalized Advantage Estimation" (GAE); Espeholt et al. (2018), "IMPALA" (V-trace).
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Mapping

from .. import _cupy_kernels, _numba_scan
from .._backend import base_of, is_array, namespace_of
from .._checks import (
    check_bool,
    check_floating,
    check_same_dtype,
    check_same_shape,
    check_scalar_range,
    dtype_name,
    is_float32_or_64,
)
from ..ops import reverse_discounted_scan

__all__ = [
    "td0_return_estimate",
    "td0_advantage_estimate",
    "td1_return_estimate",
    "vec_td1_return_estimate",
    "td1_advantage_estimate",
    "vec_td1_advantage_estimate",
    "td_lambda_return_estimate",
    "vec_td_lambda_return_estimate",
    "td_lambda_advantage_estimate",
    "vec_td_lambda_advantage_estimate",
    "generalized_advantage_estimate",
    "vec_generalized_advantage_estimate",
    "vtrace_advantage_estimate",
    "reward2go",
]


# ------------------------------------------------------------------------------------------------------ helpers


class _Ctx:
    """Namespace, dtype, device, shape and the normalised time axis of one call, plus 0-d constants.

    ``ref``/``ref_name`` are the first floating input and its argument name (the reference of the checks)."""

    __slots__ = ("xp", "dtype", "device", "shape", "ax", "zero", "one", "ref", "ref_name")

    def __init__(self, xp: Any, ref: Any, ref_name: str, ax: int | None):
        self.xp = xp
        self.ref, self.ref_name = ref, ref_name
        self.dtype = ref.dtype
        self.device = ref.device
        self.shape = tuple(ref.shape)
        self.ax = ax
        self.zero = xp.zeros((), dtype=ref.dtype, device=ref.device)
        self.one = xp.ones((), dtype=ref.dtype, device=ref.device)

    @property
    def time_axis(self) -> int:
        """The normalised time axis (only for functions that have one: not TD(0))."""
        ax = self.ax
        assert ax is not None, "this estimator has no time axis"
        return ax

    def last_step(self) -> Any:
        """Bool array, broadcastable to ``shape``, True at the last index of the time axis."""
        ax = self.time_axis
        xp, T = self.xp, self.shape[ax]
        idx = xp.arange(T, device=self.device) == T - 1
        return xp.reshape(idx, tuple(T if i == ax else 1 for i in range(len(self.shape))))


def _time_axis(time_dim: Any, ndim: int) -> int:
    if isinstance(time_dim, bool) or not isinstance(time_dim, int):
        raise TypeError(f"time_dim: expected an int, got {type(time_dim).__name__}")
    if ndim == 0:
        raise ValueError("inputs must have a time axis, got 0-d arrays")
    if not -ndim <= time_dim < ndim:
        hint = " (1-D inputs are a single trajectory: pass time_dim=-1)" if ndim == 1 else ""
        raise ValueError(
            f"time_dim: expected an axis in [{-ndim}, {ndim}) for inputs of {ndim} dimension(s), got {time_dim}{hint}"
        )
    return time_dim % ndim


def _validate(floats: Mapping[str, Any], flags: Mapping[str, Any]) -> tuple[Any, str, Any]:
    """Check the arrays of one call and return ``(xp, ref_name, ref)``; never broadcasts, never promotes.

    ``floats``/``flags`` map names (argument names, or batch keys for the estimator classes) to arrays;
    ``None`` flags are skipped, every float is required. The first float is the reference:

    * every input is an array of one library and device (``TypeError`` naming both inputs otherwise);
    * floats have dtype float32 or float64 (float16, bfloat16, integers: ``TypeError``), all the same one
      (``TypeError`` naming both inputs and dtypes), flags are bool;
    * every input has the reference's shape (``ValueError``).

    Shapes and dtypes only: no data is read, nothing synchronises.
    """
    names = [*floats, *(n for n, a in flags.items() if a is not None)]
    arrays = [*floats.values(), *(a for a in flags.values() if a is not None)]
    n_floats = len(floats)
    for name, a in zip(names, arrays):
        if a is None or isinstance(a, (bool, int, float)):
            raise TypeError(f"{name}: expected an array, got {type(a).__name__}")
    try:
        xp = namespace_of(*arrays, names=names)
    except TypeError:
        for name, a in zip(names, arrays):
            if not is_array(a):
                raise TypeError(f"{name}: expected an array, got {type(a).__name__}") from None
        raise
    ref_name, ref = names[0], arrays[0]
    if not is_float32_or_64(ref):
        check_floating(ref, ref_name)
    shape, dtype = tuple(ref.shape), ref.dtype
    for i, (name, a) in enumerate(zip(names, arrays)):
        if i < n_floats:
            if a.dtype != dtype:
                check_floating(a, name)
                check_same_dtype({ref_name: ref, name: a})
        else:
            check_bool(a, name)
        if tuple(a.shape) != shape:
            check_same_shape(dict(zip(names, arrays)))
    return xp, ref_name, ref


def _prepare(floats: Mapping[str, Any], flags: Mapping[str, Any], time_dim: Any = None) -> _Ctx:
    """:func:`_validate` the inputs and build the call context (``time_dim`` normalised when given)."""
    xp, ref_name, ref = _validate(floats, flags)
    ax = None if time_dim is None else _time_axis(time_dim, ref.ndim)
    return _Ctx(xp, ref, ref_name, ax)


_THRESHOLD_RANGE: dict[str, Any] = {"low": 0.0, "high": math.inf, "low_open": True}  # V-trace's rho_thresh, c_thresh: (0, inf]


def _check_hyperparameter(value: Any, name: str, low: float = 0.0, high: float = 1.0, *, low_open: bool = False) -> Any:
    """Check a discount-like hyper-parameter (``gamma``, ``lmbda``, V-trace's thresholds) without reading arrays.

    A Python (or NumPy scalar) number must lie in ``[low, high]`` (``(low, high]`` with ``low_open``; NaN is
    rejected) and is returned as a ``float``; an array is returned unchecked (its data lives on the device);
    ``bool`` and anything else raise ``TypeError``. Used by the functions below and by the estimator constructors.
    """
    if type(value) is float and low <= value <= high and (value > low or not low_open):  # the common case
        return value
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected a number or an array, got bool")
    if isinstance(value, numbers.Real):  # Python and NumPy scalars: host numbers, checked for free
        check_scalar_range(value, name, low, high, low_open=low_open)
        return float(value)
    if not is_array(value):
        raise TypeError(f"{name}: expected a number or an array, got {type(value).__name__}")
    return value


def _coef(ctx: _Ctx, value: Any, name: str, low: float = 0.0, high: float = 1.0, *, low_open: bool = False) -> Any:
    """A hyper-parameter as a Python float or an array of the inputs' dtype (see :func:`_check_hyperparameter`).

    Arrays: 0-d or one-element (a scalar), or per-step of exactly the inputs' shape, of the inputs' library and
    device, of a real dtype (cast to the inputs'). Anything else raises ``TypeError``/``ValueError`` naming ``name``.
    """
    value = _check_hyperparameter(value, name, low, high, low_open=low_open)
    if isinstance(value, float):
        return value
    namespace_of(ctx.ref, value, names=(ctx.ref_name, name))  # TypeError if another library or device
    own = namespace_of(value)
    if not base_of(own).isdtype(value.dtype, ("real floating", "integral")):
        raise TypeError(f"{name}: expected a number or a real array, got dtype {dtype_name(value.dtype)}")
    xp = ctx.xp
    shape = tuple(value.shape)
    if shape != ctx.shape:
        if math.prod(shape) != 1:
            raise ValueError(
                f"{name}: expected a scalar or an array of the inputs' shape {ctx.shape} (the shape of "
                f"{ctx.ref_name}), got shape {shape}"
            )
        value = xp.reshape(value, ())
    if value.dtype != ctx.dtype:
        value = xp.astype(value, ctx.dtype)
    return value


def _is_scalar(v: Any) -> bool:
    return isinstance(v, float) or v.ndim == 0


def _const(ctx: _Ctx, v: Any) -> Any:
    """``v`` as an array (0-d for scalars) so it can be a branch of ``where``."""
    return ctx.xp.asarray(v, dtype=ctx.dtype, device=ctx.device) if isinstance(v, float) else v


def _masked(ctx: _Ctx, mask: Any, value: Any) -> Any:
    """``0`` where ``mask`` else ``value`` (a select: NaN/inf in ``value`` under the mask never leaks)."""
    return ctx.xp.where(mask, ctx.zero, value)


def _scan(ctx: _Ctx, x: Any, c: Any) -> Any:
    return reverse_discounted_scan(x, c, axis=ctx.ax)


def _default_terminated(done: Any, terminated: Any) -> Any:
    return done if terminated is None else terminated


def _plain(gamma: Any, lmbda: Any, time_dim: Any) -> bool:
    """The lean check of the compiled fast path: Python-float hyper-parameters in ``[0, 1]`` and an ``int`` time
    axis. The kernel dispatch then checks the arrays (plain NumPy arrays of one shape, floats of one dtype
    float32/float64, bool flags, ``time_dim`` in range) and returns ``None`` unless all pass: exactly the checks of
    :func:`_prepare` and :func:`_coef` for such inputs, so the full validation is skipped only where it passes."""
    return (type(gamma) is float and type(lmbda) is float and type(time_dim) is int and 0.0 <= gamma <= 1.0
            and 0.0 <= lmbda <= 1.0)


# -------------------------------------------------------------------------------------------------------- TD(0)


def td0_return_estimate(
    gamma: Any,
    next_state_value: Any,
    reward: Any,
    terminated: Any = None,
    *,
    done: Any = None,
) -> Any:
    """One-step TD target ``G_t = r_t + gamma_t (1 - terminated_t) V(s_{t+1})``.

    Elementwise, so there is no time axis. ``done`` plays no role: truncated steps bootstrap.

    Args:
        gamma: discount, scalar or per-step.
        next_state_value: ``V(s_{t+1})``, any shape.
        reward: ``r_t``, same shape.
        terminated: bool, same shape.

    Keyword Args:
        done: deprecated alias of ``terminated``, used only if ``terminated`` is None (warns, like TorchRL).

    Returns:
        ``G``, same shape and dtype as ``reward``.
    """
    if terminated is None:
        if done is None:
            raise TypeError("td0_return_estimate: terminated is required")
        warnings.warn(
            "done for td0_return_estimate is deprecated. Pass ``terminated`` instead.", DeprecationWarning, stacklevel=2
        )
        terminated = done
    ctx = _prepare({"next_state_value": next_state_value, "reward": reward}, {"terminated": terminated})
    return _td0_target(_coef(ctx, gamma, "gamma"), next_state_value, reward, terminated, zero=ctx.zero)


def _td0_target(gamma: Any, next_state_value: Any, reward: Any, terminated: Any, *, zero: Any = None) -> Any:
    """``r + gamma * where(terminated, 0, V')``, the formula of :func:`td0_return_estimate` **without its checks**:
    for callers that have already checked the arrays (one library, device, float dtype and shape; ``terminated``
    bool) and ``gamma`` (a float in ``[0, 1]`` or a checked array), e.g. :class:`~arrayrl.value.TD0Estimator`.
    ``zero``: a 0-d zero of the values' dtype and device (built when not given). A select, so NaN/inf in ``V'``
    under ``terminated`` never leaks."""
    xp = namespace_of(reward, next_state_value)
    if zero is None:
        zero = xp.zeros((), dtype=next_state_value.dtype, device=next_state_value.device)
    return reward + gamma * xp.where(terminated, zero, next_state_value)


def td0_advantage_estimate(
    gamma: Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any = None,
) -> Any:
    """TD(0) advantage ``r_t + gamma_t (1 - terminated_t) V(s_{t+1}) - V(s_t)``.

    ``done`` is only the default of ``terminated`` (TorchRL's argument order). All arrays share one shape.
    """
    terminated = _default_terminated(done, terminated)
    _prepare(
        {"state_value": state_value, "next_state_value": next_state_value, "reward": reward},
        {"done": done, "terminated": terminated},
    )
    return td0_return_estimate(gamma, next_state_value, reward, terminated) - state_value


# -------------------------------------------------------------------------------------------------------- TD(1)


def td1_return_estimate(
    gamma: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any = None,
    rolling_gamma: bool | None = None,
    time_dim: int = -2,
    *,
    torchrl_compat: bool = False,
) -> Any:
    """TD(1) (Monte-Carlo) return, bootstrapped at truncations and at the end of the rollout.

    ``G_t = r_t``                                        if terminated_t
    ``G_t = r_t + gamma_t V(s_{t+1})``                   if done_t (truncated) or t = T-1
    ``G_t = r_t + gamma_t G_{t+1}``                      otherwise

    One reverse scan: ``x_t = r_t + [b_t] gamma_t V(s_{t+1})`` with ``b = (done | last) & ~terminated``, and
    ``c_t = gamma_t [~(done_t | terminated_t)]``.

    Args:
        gamma: discount, scalar or per-step (rolling, see ``rolling_gamma``).
        next_state_value, reward: ``[*B, T, *F]`` floating arrays.
        done, terminated: bool arrays of the same shape (``terminated`` defaults to ``done``).
        rolling_gamma: ``None``/``True``: ``gamma[t]`` discounts step ``t -> t+1``. ``False`` (needs a per-step
            gamma): ``gamma[k]`` discounts the whole future of step ``k``,
            ``G_k = r_k + g_k r_{k+1} + g_k^2 r_{k+2} + ...`` (O(T^2) memory).
        time_dim: the time axis (default ``-2``).
        torchrl_compat: with ``rolling_gamma=False``, reproduce TorchRL 0.14.1, whose recursion starts from 0: a
            last step that is not done does not bootstrap.

    Returns:
        ``G``, same shape and dtype as ``reward``.
    """
    terminated = _default_terminated(done, terminated)
    ctx = _prepare(
        {"next_state_value": next_state_value, "reward": reward}, {"done": done, "terminated": terminated}, time_dim
    )
    xp = ctx.xp
    g = _coef(ctx, gamma, "gamma")
    if rolling_gamma is False:
        if _is_scalar(g):
            raise ValueError("rolling_gamma=False is expected only with time-sensitive (per-step) gamma values")
        boot = done if torchrl_compat else xp.logical_or(done, ctx.last_step())
        vstar = _masked(ctx, terminated, next_state_value)
        return _non_rolling_return(ctx, g, 1.0, vstar, reward, xp.logical_or(done, terminated), boot)
    boot = xp.logical_and(xp.logical_or(done, ctx.last_step()), xp.logical_not(terminated))
    x = reward + xp.where(boot, g * next_state_value, ctx.zero)
    c = xp.where(xp.logical_or(done, terminated), ctx.zero, _const(ctx, g))
    return _scan(ctx, x, c)


def td1_advantage_estimate(
    gamma: Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any = None,
    rolling_gamma: bool | None = None,
    time_dim: int = -2,
    *,
    torchrl_compat: bool = False,
) -> Any:
    """TD(1) advantage: :func:`td1_return_estimate` ``- state_value`` (all arrays of one shape)."""
    terminated = _default_terminated(done, terminated)
    _prepare(
        {"state_value": state_value, "next_state_value": next_state_value, "reward": reward},
        {"done": done, "terminated": terminated},
        time_dim,
    )
    ret = td1_return_estimate(
        gamma, next_state_value, reward, done, terminated, rolling_gamma, time_dim=time_dim,
        torchrl_compat=torchrl_compat,
    )
    return ret - state_value


# --------------------------------------------------------------------------------------------------- TD(lambda)


def td_lambda_return_estimate(
    gamma: Any,
    lmbda: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any = None,
    rolling_gamma: bool | None = None,
    time_dim: int = -2,
) -> Any:
    """TD(lambda) return (Sutton & Barto, eq. 12.3, recursive form with TorchRL's masks).

    ``V*_t = (1 - terminated_t) V(s_{t+1})``;
    ``G_t = r_t + gamma_t [(1 - lambda_t) V*_t + lambda_t X_t]`` with ``X_t = V*_t`` if done_t or t = T-1,
    else ``X_t = G_{t+1}``.

    One reverse scan: ``x_t = r_t + gamma_t V*_t w_t`` with ``w_t = 1`` if done_t or t = T-1 else
    ``1 - lambda_t``, and ``c_t = gamma_t lambda_t [~done_t]``. ``lmbda = 0`` gives TD(0), ``lmbda = 1`` TD(1).

    Args:
        gamma, lmbda: scalars or per-step arrays.
        next_state_value, reward: ``[*B, T, *F]`` floating arrays.
        done, terminated: bool arrays of the same shape (``terminated`` defaults to ``done``).
        rolling_gamma: ``False`` (needs per-step gamma or lmbda): ``gamma[k]`` and ``lmbda[k]`` are used for the
            whole future of step ``k`` (O(T^2) memory).
        time_dim: the time axis (default ``-2``).

    Returns:
        ``G``, same shape and dtype as ``reward``.
    """
    terminated = _default_terminated(done, terminated)
    if rolling_gamma is not False and _plain(gamma, lmbda, time_dim):  # NumPy + numba: checks in the dispatch
        fused = _numba_scan.try_td_lambda(gamma, lmbda, next_state_value, reward, done, terminated, time_dim)
        if fused is not None:
            return fused
    ctx = _prepare(
        {"next_state_value": next_state_value, "reward": reward}, {"done": done, "terminated": terminated}, time_dim
    )
    xp = ctx.xp
    g = _coef(ctx, gamma, "gamma")
    lm = _coef(ctx, lmbda, "lmbda")
    if rolling_gamma is False:
        if _is_scalar(g) and _is_scalar(lm):
            raise ValueError(
                "rolling_gamma=False is expected only with time-sensitive (per-step) gamma or lambda values"
            )
        vstar = _masked(ctx, terminated, next_state_value)
        return _non_rolling_return(ctx, g, lm, vstar, reward, done, xp.logical_or(done, ctx.last_step()))
    fused = _numba_scan.try_td_lambda(g, lm, next_state_value, reward, done, terminated, ctx.time_axis)
    if fused is None:
        fused = _cupy_kernels.dispatch("td_lambda", g, lm, next_state_value, reward, done, terminated, ctx.time_axis)
    if fused is not None:  # NumPy + numba (array coefficients) or CuPy: the fused TD(lambda) pass
        return fused
    vstar = _masked(ctx, terminated, next_state_value)
    ends = xp.logical_or(done, ctx.last_step())
    w = xp.where(ends, ctx.one, _const(ctx, 1.0 - lm))
    x = reward + g * vstar * w
    c = xp.where(done, ctx.zero, _const(ctx, g * lm))
    return _scan(ctx, x, c)


def td_lambda_advantage_estimate(
    gamma: Any,
    lmbda: Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any = None,
    rolling_gamma: bool | None = None,
    time_dim: int = -2,
) -> Any:
    """TD(lambda) advantage: :func:`td_lambda_return_estimate` ``- state_value`` (all arrays of one shape)."""
    terminated = _default_terminated(done, terminated)
    _prepare(
        {"state_value": state_value, "next_state_value": next_state_value, "reward": reward},
        {"done": done, "terminated": terminated},
        time_dim,
    )
    ret = td_lambda_return_estimate(
        gamma, lmbda, next_state_value, reward, done, terminated, rolling_gamma, time_dim=time_dim
    )
    return ret - state_value


def _non_rolling_return(ctx: _Ctx, g: Any, lm: Any, vstar: Any, reward: Any, cut: Any, boot: Any) -> Any:
    """``rolling_gamma=False``: every step ``k`` runs its own recursion with constants ``(g_k, lm_k)``.

    ``G_k = sum_{i >= k, no cut in [k, i)} (g_k lm_k)^{i-k} (r_i + g_k (1 - lm_k) V*_i + g_k lm_k [boot_i] V*_i)``,
    evaluated with a ``[..., T(k), T(i)]`` table (exact powers; no truncation).
    """
    xp, ax = ctx.xp, ctx.time_axis
    T = ctx.shape[ax]

    def last(a: Any) -> Any:  # time axis last
        return xp.moveaxis(a, ax, -1) if not _is_scalar(a) else a

    def per_k(a: Any) -> Any:  # [..., T] -> [..., T, 1]
        return xp.expand_dims(last(a), axis=-1) if not _is_scalar(a) else a

    def per_i(a: Any) -> Any:  # [..., T] -> [..., 1, T]
        return xp.expand_dims(last(a), axis=-2)

    cuts = xp.astype(last(cut), xp.int64)
    seg = xp.cumulative_sum(cuts, axis=-1, include_initial=True)[..., :T]  # cuts strictly before i
    steps = xp.arange(T, device=ctx.device)
    ahead = steps[None, :] >= steps[:, None]  # [T(k), T(i)]: i >= k
    same_traj = xp.expand_dims(seg, axis=-1) == xp.expand_dims(seg, axis=-2)
    valid = xp.logical_and(ahead, same_traj)
    expo = xp.astype(xp.clip(steps[None, :] - steps[:, None], min=0), ctx.dtype)
    gk, lk = per_k(g), per_k(lm)
    a = _const(ctx, gk * lk)
    pw = a**expo  # finite: expo >= 0
    vs = per_i(vstar)
    term = per_i(reward) + gk * (1.0 - lk) * vs + a * xp.where(per_i(boot), vs, ctx.zero)
    out = xp.sum(xp.where(valid, pw * term, ctx.zero), axis=-1)
    return xp.moveaxis(out, -1, ax)


# ---------------------------------------------------------------------------------------------------------- GAE


def generalized_advantage_estimate(
    gamma: Any,
    lmbda: Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any = None,
    *,
    time_dim: int = -2,
) -> tuple[Any, Any]:
    """Generalized advantage estimate (Schulman et al., 2016) -> ``(advantage, value_target)``.

    ``delta_t = r_t + gamma_t (1 - terminated_t) V(s_{t+1}) - V(s_t)``,
    ``A_t = delta_t + gamma_t lambda_t (1 - done_t) A_{t+1}`` (``A_T = 0``), ``value_target = A + V``.

    Args:
        gamma, lmbda: scalars or per-step arrays.
        state_value, next_state_value, reward: ``[*B, T, *F]`` floating arrays.
        done, terminated: bool arrays of the same shape (``terminated`` defaults to ``done``).
        time_dim: the time axis (default ``-2``).

    Returns:
        ``(advantage, value_target)``, each of the inputs' shape and dtype.
    """
    terminated = _default_terminated(done, terminated)
    if _plain(gamma, lmbda, time_dim):  # NumPy + numba: the array checks are in the dispatch
        fused = _numba_scan.try_gae(gamma, lmbda, state_value, next_state_value, reward, done, terminated, time_dim)
        if fused is not None:
            return fused
    ctx = _prepare(
        {"state_value": state_value, "next_state_value": next_state_value, "reward": reward},
        {"done": done, "terminated": terminated},
        time_dim,
    )
    g = _coef(ctx, gamma, "gamma")
    lm = _coef(ctx, lmbda, "lmbda")
    fused = _numba_scan.try_gae(g, lm, state_value, next_state_value, reward, done, terminated, ctx.time_axis)
    if fused is None:
        fused = _cupy_kernels.dispatch("gae", g, lm, state_value, next_state_value, reward, done, terminated,
                                       ctx.time_axis)
    if fused is not None:  # NumPy + numba (array coefficients) or CuPy: delta, scan and target in one pass
        return fused
    delta = reward + g * _masked(ctx, terminated, next_state_value) - state_value
    c = ctx.xp.where(done, ctx.zero, _const(ctx, g * lm))
    adv = _scan(ctx, delta, c)
    return adv, adv + state_value


# ------------------------------------------------------------------------------------------------------ V-trace


def vtrace_advantage_estimate(
    gamma: Any,
    log_pi: Any,
    log_mu: Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any = None,
    rho_thresh: Any = 1.0,
    c_thresh: Any = 1.0,
    time_dim: int = -2,
) -> tuple[Any, Any]:
    """V-trace targets and policy-gradient advantages (Espeholt et al., 2018) -> ``(advantage, vs)``.

    ``rho_t = exp(log_pi_t - log_mu_t)`` (``log_pi``: the current policy, ``log_mu``: the behaviour policy),
    ``rho_bar = min(rho, rho_thresh)``, ``c_bar = min(rho, c_thresh)``;
    ``delta_t = rho_bar_t (r_t + gamma_t (1 - terminated_t) V(s_{t+1}) - V(s_t))``;
    ``vs_t - V(s_t) = delta_t + gamma_t (1 - done_t) c_bar_t (vs_{t+1} - V(s_{t+1}))`` (0 past the rollout);
    ``adv_t = rho_bar_t (r_t + gamma_t (1 - terminated_t) vs'_{t+1} - V(s_t))`` where ``vs'_{t+1} = vs_{t+1}``,
    replaced by ``V(s_{t+1})`` (``next_state_value[t]``) where done_t and at the last step.

    ``min`` is a clip with PyTorch's ``clamp_max`` gradient (passed at the bound).

    Returns:
        ``(advantage, vs)``, each of the inputs' shape and dtype.
    """
    ctx = _prepare(
        {
            "state_value": state_value,
            "next_state_value": next_state_value,
            "reward": reward,
            "log_pi": log_pi,
            "log_mu": log_mu,
        },
        {"done": done, "terminated": terminated},
        time_dim,
    )
    terminated = _default_terminated(done, terminated)
    xp, ax = ctx.xp, ctx.time_axis
    g = _coef(ctx, gamma, "gamma")
    rho = xp.exp(log_pi - log_mu)
    rho_bar = xp.clip(rho, max=_coef(ctx, rho_thresh, "rho_thresh", **_THRESHOLD_RANGE))
    c_bar = xp.clip(rho, max=_coef(ctx, c_thresh, "c_thresh", **_THRESHOLD_RANGE))
    delta = rho_bar * (reward + g * _masked(ctx, terminated, next_state_value) - state_value)
    c = xp.where(done, ctx.zero, g * c_bar)
    vs = _scan(ctx, delta, c) + state_value
    T = ctx.shape[ax]
    if T == 0:  # static shape: an empty rollout (the slices below would start out of bounds)
        vs_next = next_state_value
    else:
        lead = (slice(None),) * ax
        vs_next = xp.concat([vs[lead + (slice(1, T), ...)], next_state_value[lead + (slice(T - 1, T), ...)]], axis=ax)
        vs_next = xp.where(done, next_state_value, vs_next)
    adv = rho_bar * (reward + g * _masked(ctx, terminated, vs_next) - state_value)
    return adv, vs


# -------------------------------------------------------------------------------------------------- reward2go


def reward2go(reward: Any, done: Any, gamma: Any, *, time_dim: int = -2) -> Any:
    """Discounted reward-to-go inside each trajectory, no bootstrap.

    ``R_t = r_t + gamma_t (1 - done_t) R_{t+1}``, ``R_{T-1} = r_{T-1}``. Every non-time index (batch and feature
    positions) is its own sequence, so a feature axis of any size works (TorchRL issue #2086).

    Args:
        reward: ``[*B, T, *F]`` floating array.
        done: bool array of the same shape.
        gamma: scalar or per-step discount.
        time_dim: the time axis (default ``-2``).
    """
    ctx = _prepare({"reward": reward}, {"done": done}, time_dim)
    c = ctx.xp.where(done, ctx.zero, _const(ctx, _coef(ctx, gamma, "gamma")))
    return _scan(ctx, reward, c)


# ------------------------------------------------------------------------------- vec_ names: same implementation

vec_td1_return_estimate = td1_return_estimate
vec_td1_advantage_estimate = td1_advantage_estimate
vec_td_lambda_return_estimate = td_lambda_return_estimate
vec_td_lambda_advantage_estimate = td_lambda_advantage_estimate
vec_generalized_advantage_estimate = generalized_advantage_estimate
