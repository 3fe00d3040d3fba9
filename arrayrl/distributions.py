"""Distributions for policies: :class:`Normal`, :class:`IndependentNormal`, :class:`TanhNormal`, :class:`Delta`,
:class:`TanhDelta`, :class:`Categorical`, :class:`OneHotCategorical`, :class:`MaskedCategorical` (action masks,
TorchRL's semantics, NaN-free gradients) and :class:`CompositeDistribution` (several named action heads).

Written once against the array API: parameters may be raw arrays of any backend or taped
:class:`arrayrl.autodiff.Tensor`\\ s, so ``log_prob``, ``entropy`` and ``rsample`` are differentiable through the
tape. Parametrisations, formulas and roundings follow ``torch.distributions`` and
``torchrl.modules.distributions`` (TorchRL 0.14.1), so values match them to float64 round-off.

Common interface (shapes: ``S`` sample shape, ``B`` batch shape, ``E`` event shape):

* ``log_prob(value)``: ``value [*S, *B, *E] -> [*S, *B]``;
* ``entropy() -> [*B]`` where an analytic form exists (``NotImplementedError`` otherwise, as torch);
* ``sample(generator, sample_shape=(), *, noise=None) -> [*S, *B, *E]`` (no gradient), ``rsample`` (reparameterised,
  ``has_rsample``), and ``sample_and_log_prob`` / ``rsample_and_log_prob`` (score the same draw; TanhNormal scores
  its pre-tanh value, TorchRL's ``rsample_and_log_prob``). Randomness comes from an :class:`arrayrl.random.Generator`
  or from ``noise`` (standard-normal draws for the Normal family, uniform ``[0, 1)`` draws ``[*S, *B]`` for the
  categorical ones), so a test can replay torch's draws;
* ``mode``, ``mean``, ``deterministic_sample`` (what TorchRL's ``ExplorationType.DETERMINISTIC`` returns).

Validation: shapes and dtypes are always checked (``ValueError``/``TypeError`` naming the argument). Checks that
read data (``scale > 0``, ``high > low`` for array bounds, ``value`` inside the support) force a device
synchronisation, so they run only with ``validate_args=True`` (off by default, as TorchRL turns torch's off). The
one exception is the class index of :class:`Categorical`/:class:`OneHotCategorical` ``log_prob``, a gather that would
otherwise wrap ``-1`` around or read garbage on torch: with ``validate_args=None`` (their default) it follows the
process-wide policy of :mod:`arrayrl._validate` (checked for CPU arrays, skipped on GPUs, unless
``arrayrl.set_validate_args`` says otherwise); ``True``/``False`` force it on/off.

Divergences from TorchRL 0.14.1 (``torchrl_compat=True`` reproduces TorchRL):

* ``TanhDelta`` with bounds other than ``[-1, 1]``: TorchRL adds the action-space centre ``(high + low) / 2`` to
  the *pre-tanh* parameter before ``tanh`` and the affine map, so ``param = 0`` does not map to the centre of the
  box. arrayrl maps ``param`` through ``tanh`` and the affine map only.
* ``TanhNormal(tanh_loc=True)`` with such bounds: the same pre-tanh shift of ``loc``.
* ``IndependentNormal(tanh_loc=True)``: TorchRL ignores ``tanh_loc`` at construction (applies it only in
  ``update``); arrayrl applies it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from . import ops
from ._backend import backend_name, base_of, device_of, is_taped, namespace_of
from ._checks import check_array, check_floating, check_integer
from ._validate import check_index_range
from .autodiff import defvjp, primitive, stop_gradient

__all__ = [
    "Distribution",
    "Normal",
    "IndependentNormal",
    "TanhNormal",
    "Delta",
    "TanhDelta",
    "Categorical",
    "OneHotCategorical",
    "MaskedCategorical",
    "CompositeDistribution",
    "safe_tanh",
    "safe_atanh",
    "tanh_log_abs_det_jacobian",
]

_HALF_LOG_2PI = math.log(math.sqrt(2.0 * math.pi))
_LOG2 = math.log(2.0)
_TORCH_SOFTPLUS_THRESHOLD = 20.0  # torch.nn.functional.softplus(x) returns x where x > 20


# ------------------------------------------------------------------------------------------------ helpers
def _shape(sample_shape: Any) -> tuple:
    if isinstance(sample_shape, int):
        return (int(sample_shape),)
    return tuple(int(s) for s in sample_shape)


def _sg(x: Any) -> Any:
    return stop_gradient(x) if is_taped(x) else x


def _resolution(xp: Any, dtype: Any) -> float:
    """``torch.finfo(dtype).resolution``: ``10 ** -floor(-log10(eps))`` (1e-6 for float32, 1e-15 for float64)."""
    eps = float(base_of(xp).finfo(dtype).eps)
    return 10.0 ** -int(-math.log10(eps))


def _sum_rightmost(x: Any, n: int, xp: Any) -> Any:
    if n == 0:
        return x
    return xp.sum(x, axis=tuple(range(-n, 0)))


def _fmt(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _check_value(value: Any, shape: tuple, name: str = "value") -> int:
    """``value.shape`` must be ``[*S, *shape]``; returns ``len(S)``."""
    check_array(value, name)
    got = tuple(value.shape)
    k = len(shape)
    if len(got) < k or (k and got[len(got) - k:] != tuple(shape)):
        raise ValueError(f"{name}: expected shape [*sample_shape, *{_fmt(shape)}] (batch + event shape), got {_fmt(got)}")
    return len(got) - k


def _param(x: Any, like: Any, name: str) -> Any:
    """A float parameter: Python numbers become arrays of ``like``'s namespace/dtype/device; arrays are checked."""
    xp = namespace_of(like)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return base_of(xp).asarray(float(x), dtype=like.dtype, device=device_of(like))
    if callable(x) and not hasattr(x, "shape"):
        x = x(like)  # TorchRL accepts a callable scale (torch.ones_like...)
    check_floating(x, name)
    namespace_of(x, like)  # same library and device
    if x.dtype != like.dtype:
        raise TypeError(f"{name}: expected dtype {like.dtype} (that of loc), got {x.dtype}")
    return x


def _draw(generator: Any, noise: Any, sample_shape: Any, shape: tuple, dtype: Any, kind: str, like: Any) -> Any:
    """Noise of shape ``sample_shape + shape``: ``noise`` if given, else ``generator.normal``/``uniform``.

    Given ``noise`` must have shape ``[*sample_shape, *shape]``; with the default ``sample_shape=()`` any leading
    sample axes are accepted (``noise [*S, *shape]`` draws ``S`` samples).
    """
    sample_shape = _shape(sample_shape)
    if noise is not None:
        check_floating(noise, "noise")
        got = tuple(noise.shape)
        k = len(shape)
        ok = got == sample_shape + shape if sample_shape else (len(got) >= k and got[len(got) - k:] == shape)
        if not ok:
            raise ValueError(
                f"noise: expected shape {_fmt(sample_shape + shape) if sample_shape else '[*sample_shape, *' + _fmt(shape) + ']'} "
                f"(sample_shape + batch + event shape), got {_fmt(got)}"
            )
        namespace_of(noise, like)
        if noise.dtype != dtype:
            raise TypeError(f"noise: expected dtype {dtype} (that of the parameters), got {noise.dtype}")
        return noise
    if generator is None:
        raise TypeError("generator: a Generator (or noise=) is required to sample")
    gxp = getattr(generator, "xp", None)
    want = backend_name(base_of(namespace_of(like)))
    if gxp is not None and backend_name(gxp) != want:
        raise TypeError(f"generator: draws {backend_name(gxp)} arrays, the parameters are {want} arrays")
    full = sample_shape + shape
    out = generator.normal(full, dtype) if kind == "normal" else generator.uniform(full, 0.0, 1.0, dtype)
    try:
        namespace_of(out, like)
    except TypeError as err:
        raise TypeError(f"generator: draws arrays of another library or device than the parameters ({err})") from None
    return out


def _binary(name: str) -> Any:
    def op(a: Any, b: Any) -> Any:
        """Mixed raw/taped/scalar operands through the namespace function (``raw_array * tensor`` raises on
        array-api-strict, whose operators do not return ``NotImplemented``)."""
        if isinstance(a, float) or isinstance(b, float):
            return {"add": lambda: a + b, "multiply": lambda: a * b, "subtract": lambda: a - b,
                    "divide": lambda: a / b}[name]()
        return getattr(namespace_of(a, b), name)(a, b)

    op.__name__ = f"xp_{name}"
    return op


xp_add, xp_mul, xp_sub, xp_div = (_binary(n) for n in ("add", "multiply", "subtract", "divide"))


def _validate_positive(x: Any, name: str) -> None:
    xp = base_of(namespace_of(x))
    raw = x.value if is_taped(x) else x
    if not bool(xp.all(raw > 0)):
        raise ValueError(f"{name}: expected strictly positive values (validate_args=True)")


# ------------------------------------------------------------------------------------------------ safe tanh
def _safe_tanh_raw(x: Any, *, lim: float) -> Any:
    xp = namespace_of(x)
    return xp.clip(xp.tanh(x), min=-lim, max=lim)


def _safe_atanh_raw(y: Any, *, lim: float) -> Any:
    xp = namespace_of(y)
    return xp.atanh(xp.clip(y, min=-lim, max=lim))


#: ``clip(tanh(x), -lim, lim)`` with TorchRL's gradient ``g * (1 - out**2)`` (nonzero when clipped).
safe_tanh = primitive(_safe_tanh_raw, name="safe_tanh", elementwise=True)
defvjp(safe_tanh, lambda xp, g, ans, x, *, lim: g * (1.0 - ans * ans))

#: ``atanh(clip(y, -lim, lim))`` with TorchRL's gradient ``g / (1 - clip(y)**2)`` (nonzero when clipped).
safe_atanh = primitive(_safe_atanh_raw, name="safe_atanh", elementwise=True)


def _safe_atanh_vjp(xp: Any, g: Any, ans: Any, y: Any, *, lim: float) -> Any:
    yc = xp.clip(y, min=-lim, max=lim)
    return g / (1.0 - yc * yc)


defvjp(safe_atanh, _safe_atanh_vjp)


def tanh_log_abs_det_jacobian(u: Any) -> Any:
    """``log |d tanh(u) / du| = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``, finite for every finite ``u``
    (torch's ``TanhTransform.log_abs_det_jacobian``, with torch's softplus threshold of 20)."""
    return 2.0 * (_LOG2 - u - ops.softplus(-2.0 * u, threshold=_TORCH_SOFTPLUS_THRESHOLD))


def _torch_atanh(y: Any) -> Any:
    """``0.5 * (log1p(y) - log1p(-y))``: torch's ``TanhTransform`` inverse (used when ``safe_tanh=False``)."""
    xp = namespace_of(y)
    return 0.5 * (xp.log1p(y) - xp.log1p(-y))


# ------------------------------------------------------------------------------------------------ base class
class Distribution:
    """Shared interface (see the module docstring). Subclasses set ``batch_shape``, ``event_shape``, ``dtype``."""

    has_rsample = False
    batch_shape: tuple = ()
    event_shape: tuple = ()

    def log_prob(self, value: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def entropy(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no analytic entropy")

    @property
    def mean(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no analytic mean")

    @property
    def mode(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no analytic mode")

    @property
    def deterministic_sample(self) -> Any:
        return self.mean

    def rsample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no reparameterised sampler (has_rsample=False)")

    def sample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> Any:
        return _sg(self.rsample(generator, sample_shape, noise=noise))

    def sample_and_log_prob(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> tuple:
        """``(sample, log_prob(sample))``: the sample carries no gradient, the log-prob keeps the score gradient."""
        s = self.sample(generator, sample_shape, noise=noise)
        return s, self.log_prob(s)

    def rsample_and_log_prob(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> tuple:
        """``(rsample, log_prob(rsample))`` with pathwise gradients through both."""
        s = self.rsample(generator, sample_shape, noise=noise)
        return s, self.log_prob(s)

    @property
    def _full_shape(self) -> tuple:
        return tuple(self.batch_shape) + tuple(self.event_shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_shape={self.batch_shape}, event_shape={self.event_shape})"


# ------------------------------------------------------------------------------------------------ Normal family
class Normal(Distribution):
    """``N(loc, scale)`` elementwise (``torch.distributions.Normal``); event shape ``()``.

    ``log_prob(v) = -(v - loc)^2 / (2 scale^2) - log(scale) - log(sqrt(2 pi))``,
    ``entropy = 1/2 + log(2 pi)/2 + log(scale)``, ``rsample = loc + eps * scale`` with ``eps ~ N(0, 1)``.

    Args:
        loc: floating array ``[*B]``.
        scale: array of the same shape and dtype, a Python number, or a callable ``scale(loc)``.
        validate_args: check ``scale > 0`` (reads data).
    """

    has_rsample = True

    def __init__(self, loc: Any, scale: Any, *, validate_args: bool = False):
        check_floating(loc, "loc")
        scale = _param(scale, loc, "scale")
        if scale.ndim and tuple(scale.shape) != tuple(loc.shape):
            raise ValueError(f"scale: expected shape {_fmt(tuple(loc.shape))} (the shape of loc) or (), got {_fmt(tuple(scale.shape))}")
        if not scale.ndim and loc.ndim:
            scale = namespace_of(loc, scale).broadcast_to(scale, tuple(loc.shape))
        self.validate_args = validate_args
        if validate_args:
            _validate_positive(scale, "scale")
        self.loc, self.scale = loc, scale
        self.dtype = loc.dtype
        self._set_shapes(tuple(loc.shape))

    def _set_shapes(self, shape: tuple) -> None:
        self.batch_shape, self.event_shape = shape, ()

    @property
    def _event_ndim(self) -> int:
        return len(self.event_shape)

    def _xp(self, *more: Any) -> Any:
        return namespace_of(self.loc, self.scale, *more)

    def _elementwise_log_prob(self, value: Any, xp: Any) -> Any:
        var = self.scale**2
        # xp.subtract, not ``-``: a raw left operand must not meet a taped right one (array-api-strict raises)
        return -(xp.subtract(value, self.loc) ** 2) / (2 * var) - xp.log(self.scale) - _HALF_LOG_2PI

    def log_prob(self, value: Any) -> Any:
        _check_value(value, self._full_shape)
        check_floating(value, "value")
        xp = self._xp(value)
        return _sum_rightmost(self._elementwise_log_prob(value, xp), self._event_ndim, xp)

    def entropy(self) -> Any:
        xp = self._xp()
        return _sum_rightmost(0.5 + 0.5 * math.log(2 * math.pi) + xp.log(self.scale), self._event_ndim, xp)

    def rsample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> Any:
        eps = _draw(generator, noise, sample_shape, tuple(self.loc.shape), self.dtype, "normal", _sg(self.loc))
        return xp_add(self.loc, xp_mul(eps, self.scale))

    @property
    def mean(self) -> Any:
        return self.loc

    @property
    def mode(self) -> Any:
        return self.loc

    @property
    def stddev(self) -> Any:
        return self.scale

    @property
    def variance(self) -> Any:
        return self.scale**2


class IndependentNormal(Normal):
    """A Normal whose last ``event_dim`` axes are one event (``torchrl.modules.IndependentNormal``):
    ``log_prob`` and ``entropy`` are summed over them.

    ``tanh_loc=True`` squashes the location: ``loc = upscale * tanh(loc / upscale)`` (see the module docstring for
    TorchRL's handling at construction; ``torchrl_compat=True`` ignores ``tanh_loc`` as TorchRL's constructor does).
    """

    def __init__(self, loc: Any, scale: Any, upscale: float = 5.0, tanh_loc: bool = False, event_dim: int = 1, *,
                 validate_args: bool = False, torchrl_compat: bool = False):
        check_floating(loc, "loc")
        if not 0 <= event_dim <= loc.ndim:
            raise ValueError(f"event_dim: expected 0..{loc.ndim} for loc of shape {_fmt(tuple(loc.shape))}, got {event_dim}")
        self.upscale, self.tanh_loc, self._event_dim = upscale, tanh_loc, int(event_dim)
        if tanh_loc and not torchrl_compat:
            xp = namespace_of(loc)
            loc = self.upscale * xp.tanh(loc / self.upscale)
        super().__init__(loc, scale, validate_args=validate_args)

    def _set_shapes(self, shape: tuple) -> None:
        cut = len(shape) - self._event_dim
        self.batch_shape, self.event_shape = shape[:cut], shape[cut:]


class _TanhTransform:
    """``u -> c + s * tanh(u)`` with ``c = (high + low) / 2``, ``s = (high - low) / 2`` (torch's ``TanhTransform``,
    TorchRL's ``SafeTanhTransform`` when ``safe``, composed with an ``AffineTransform`` for bounds other than
    ``[-1, 1]``). Shared by :class:`TanhNormal` and :class:`TanhDelta`."""

    def __init__(self, like: Any, low: Any, high: Any, safe: bool, validate: bool):
        self.safe = safe
        self.lim = 1.0 - _resolution(namespace_of(like), like.dtype)
        self.low, self.high = self._bounds(low, high, like, validate)
        self.non_trivial = not (isinstance(self.low, float) and isinstance(self.high, float)
                                and self.low == -1.0 and self.high == 1.0)
        self.centre, self.half = (self.high + self.low) / 2, (self.high - self.low) / 2

    @staticmethod
    def _bounds(low: Any, high: Any, like: Any, validate: bool) -> tuple:
        if isinstance(low, (int, float)) and isinstance(high, (int, float)):
            low, high = float(low), float(high)
            if not high > low:
                raise ValueError(f"high: must be strictly greater than low, got low={low}, high={high}")
            return low, high
        out = []
        for name, b in (("low", low), ("high", high)):
            if isinstance(b, (int, float)):
                b = _param(float(b), like, name)
            else:
                check_floating(b, name)
                namespace_of(b, like)
                if b.dtype != like.dtype:
                    raise TypeError(f"{name}: expected dtype {like.dtype} (that of the parameters), got {b.dtype}")
                ev, full = tuple(b.shape), tuple(like.shape)
                if len(ev) > len(full) or any(e not in (1, f) for e, f in zip(reversed(ev), reversed(full))):
                    raise ValueError(f"{name}: shape {_fmt(ev)} does not broadcast to the parameters' shape {_fmt(full)}")
            out.append(b)
        if validate:
            xp = base_of(namespace_of(*out))
            if not bool(xp.all(_sg(out[1]) > _sg(out[0]))):
                raise ValueError("high: must be strictly greater than low (validate_args=True)")
        return out[0], out[1]

    def arrays(self) -> tuple:
        """The bounds that are arrays (for ``namespace_of``)."""
        return tuple(b for b in (self.low, self.high) if not isinstance(b, float))

    def shift_pre_tanh(self, loc: Any) -> Any:
        """TorchRL's pre-tanh shift ``loc + (high - low) / 2 + low`` (``torchrl_compat`` only)."""
        return loc + (self.high - self.low) / 2 + self.low if self.non_trivial else loc

    def forward(self, u: Any) -> Any:
        y = safe_tanh(u, lim=self.lim) if self.safe else namespace_of(u).tanh(u)
        return xp_add(self.centre, xp_mul(self.half, y)) if self.non_trivial else y

    def inverse(self, action: Any) -> Any:
        y = xp_div(xp_sub(action, self.centre), self.half) if self.non_trivial else action
        return safe_atanh(y, lim=self.lim) if self.safe else _torch_atanh(y)

    def log_abs_det_jacobian(self, u: Any, xp: Any) -> Any:
        """Elementwise ``log|d forward / du| = log(1 - tanh(u)^2) + log s``."""
        ladj = tanh_log_abs_det_jacobian(u)
        if not self.non_trivial:
            return ladj
        return ladj + (math.log(abs(self.half)) if isinstance(self.half, float) else xp.log(xp.abs(self.half)))

    def check_support(self, value: Any, xp: Any, owner: str) -> None:
        raw = base_of(xp)
        v = _sg(value)
        inside = raw.logical_and(v >= _sg(self.low), v <= _sg(self.high))
        if not bool(raw.all(inside)):
            raise ValueError(f"value: outside the support [low, high] = [{self.low}, {self.high}] of {owner}")


class TanhNormal(Distribution):
    """``action = c + s * tanh(u)``, ``u ~ N(loc, scale)``, ``c = (high + low) / 2``, ``s = (high - low) / 2``
    (``torchrl.modules.TanhNormal``).

    ``log p(action) = sum_event[ log N(u; loc, scale) - log|d tanh/du|(u) - log s ]`` with
    ``u = atanh((action - c) / s)`` and the stable ``log|d tanh/du| = 2 (log 2 - u - softplus(-2u))``.
    ``rsample_and_log_prob`` scores the pre-tanh draw itself (no inverse), which stays exact when tanh saturates;
    ``rsample_and_log_prob(..., return_pre_tanh=True)`` also returns that draw ``u``, and
    ``log_prob(action, pre_tanh=u)`` scores a stored action at it (``ProbabilisticModule(store_pre_tanh=True)``
    and ``PPOLoss`` use the pair for an exact ratio).

    Args:
        loc, scale: ``[*B, *E]`` (scale may be a number or a callable, as TorchRL).
        upscale: ``tanh_loc`` scale (default 5.0).
        low, high: bounds, numbers or arrays broadcastable to ``loc`` (default ``-1, 1``).
        event_dims: trailing axes forming one event (default ``min(1, loc.ndim)``).
        tanh_loc: ``loc = upscale * tanh(loc / upscale)``.
        safe_tanh: clip ``tanh`` (and the argument of ``atanh``) to ``+-(1 - resolution)`` of the dtype (1e-6 in
            float32, 1e-15 in float64) with TorchRL's straight-through gradient, so actions at the bounds have a
            finite log-prob (default ``True``).
        torchrl_compat: reproduce TorchRL's pre-tanh shift of ``loc`` by ``c`` under ``tanh_loc`` with bounds.
        validate_args: check ``scale > 0``, ``high > low`` (array bounds) and that ``log_prob`` values lie in
            ``[low, high]``.

    ``entropy``, ``mean`` and ``mode`` have no closed form (``NotImplementedError``); ``deterministic_sample`` is
    ``c + s * tanh(loc)``.
    """

    has_rsample = True
    #: ``log_prob(value, pre_tanh=u)`` and ``rsample_and_log_prob(..., return_pre_tanh=True)`` are available
    supports_pre_tanh = True

    def __init__(self, loc: Any, scale: Any, upscale: float = 5.0, low: Any = -1.0, high: Any = 1.0,
                 event_dims: int | None = None, tanh_loc: bool = False, safe_tanh: bool = True, *,
                 torchrl_compat: bool = False, validate_args: bool = False):
        check_floating(loc, "loc")
        xp = namespace_of(loc)
        event_dims = min(1, loc.ndim) if event_dims is None else int(event_dims)
        if not 0 <= event_dims <= loc.ndim:
            raise ValueError(f"event_dims: expected 0..{loc.ndim} for loc of shape {_fmt(tuple(loc.shape))}, got {event_dims}")
        self.event_dims = event_dims
        cut = loc.ndim - event_dims
        self.batch_shape, self.event_shape = tuple(loc.shape[:cut]), tuple(loc.shape[cut:])
        self.dtype = loc.dtype
        self.validate_args = validate_args
        self.upscale, self.tanh_loc, self.safe_tanh = upscale, tanh_loc, safe_tanh
        self._t = _TanhTransform(loc, low, high, safe_tanh, validate_args)
        self.low, self.high = self._t.low, self._t.high
        if tanh_loc:
            loc = xp.tanh(loc / upscale) * upscale
            if torchrl_compat:
                loc = self._t.shift_pre_tanh(loc)
        self._base = Normal(loc, scale, validate_args=validate_args)
        self.loc, self.scale = loc, self._base.scale

    def _xp(self, *more: Any) -> Any:
        return namespace_of(self.loc, self.scale, *self._t.arrays(), *more)

    def _score_preimage(self, u: Any, xp: Any) -> Any:
        """``sum_event log N(u) - sum_event ladj(u)`` (TorchRL's ``rsample_and_log_prob`` order)."""
        base = _sum_rightmost(self._base._elementwise_log_prob(u, xp), self.event_dims, xp)
        return xp.subtract(base, _sum_rightmost(self._t.log_abs_det_jacobian(u, xp), self.event_dims, xp))

    def log_prob(self, value: Any, *, pre_tanh: Any = None) -> Any:
        """``log p(value)``; with ``pre_tanh=u`` (the pre-image the action was drawn as, ``value = c + s tanh(u)``)
        the density is scored at ``u`` directly (no ``atanh``: exact where ``tanh`` saturates and
        ``atanh(clip(tanh(u)))`` is not ``u``). ``value`` is then only checked for shape and dtype."""
        _check_value(value, self._full_shape)
        check_floating(value, "value")
        if pre_tanh is not None:
            check_floating(pre_tanh, "pre_tanh")
            if tuple(pre_tanh.shape) != tuple(value.shape):
                raise ValueError(f"pre_tanh: expected the shape of value {_fmt(tuple(value.shape))}, got "
                                 f"{_fmt(tuple(pre_tanh.shape))}")
            if pre_tanh.dtype != self.dtype:
                raise TypeError(f"pre_tanh: expected dtype {self.dtype} (that of loc), got {pre_tanh.dtype}")
            return self._score_preimage(pre_tanh, self._xp(pre_tanh))
        xp = self._xp(value)
        if self.validate_args:
            self._t.check_support(value, xp, "TanhNormal")
        u = self._t.inverse(value)
        # torch's TransformedDistribution.log_prob: 0 - sum(ladj) + sum(base log-prob) (== base - ladj exactly)
        ladj = _sum_rightmost(self._t.log_abs_det_jacobian(u, xp), self.event_dims, xp)
        return xp.subtract(_sum_rightmost(self._base._elementwise_log_prob(u, xp), self.event_dims, xp), ladj)

    def rsample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> Any:
        return self._t.forward(self._base.rsample(generator, sample_shape, noise=noise))

    def rsample_and_log_prob(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None,
                             return_pre_tanh: bool = False) -> tuple:
        """``(action, log p)`` scored at the pre-tanh draw ``u``; ``return_pre_tanh=True`` adds ``u`` as a third
        element (what :class:`arrayrl.nn.ProbabilisticModule` stores for ``log_prob(action, pre_tanh=u)``)."""
        u = self._base.rsample(generator, sample_shape, noise=noise)
        out = (self._t.forward(u), self._score_preimage(u, self._xp(u)))
        return out + (u,) if return_pre_tanh else out

    def sample_and_log_prob(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None,
                            return_pre_tanh: bool = False) -> tuple:
        u = _sg(self._base.rsample(generator, sample_shape, noise=noise))
        out = (_sg(self._t.forward(u)), self._score_preimage(u, self._xp(u)))
        return out + (u,) if return_pre_tanh else out

    @property
    def deterministic_pre_tanh(self) -> Any:
        """The pre-image of :attr:`deterministic_sample` (``loc``)."""
        return self.loc

    @property
    def deterministic_sample(self) -> Any:
        return self._t.forward(self.loc)

    @property
    def mode(self) -> Any:
        raise NotImplementedError("TanhNormal has no analytic mode; use deterministic_sample (c + s * tanh(loc))")

    @property
    def mean(self) -> Any:
        raise NotImplementedError("TanhNormal has no closed-form mean; estimate it from samples")


# ------------------------------------------------------------------------------------------------ Delta family
class Delta(Distribution):
    """A point mass at ``param`` (``torchrl.modules.Delta``).

    ``log_prob(v) = +inf`` where ``|v - param| < atol + rtol |param|`` for every event element, ``-inf`` otherwise.
    Default shapes: batch ``param.shape[:-1]``, event ``param.shape[-1:]``. ``sample``/``rsample`` return ``param``
    (broadcast to the sample shape; ``rsample`` keeps the gradient).
    """

    has_rsample = True

    def __init__(self, param: Any, atol: float = 1e-6, rtol: float = 1e-6, batch_shape: Any = None,
                 event_shape: Any = None):
        check_floating(param, "param")
        self.param, self.atol, self.rtol, self.dtype = param, atol, rtol, param.dtype
        batch_shape = tuple(batch_shape or ())
        event_shape = tuple(event_shape or ())
        if not batch_shape and not event_shape:
            if param.ndim == 0:
                raise ValueError("param: expected at least one dimension (the event), got a 0-d array")
            batch_shape, event_shape = tuple(param.shape[:-1]), tuple(param.shape[-1:])
        if batch_shape + event_shape != tuple(param.shape):
            raise ValueError(f"param: shape {_fmt(tuple(param.shape))} is not batch_shape + event_shape {_fmt(batch_shape + event_shape)}")
        self.batch_shape, self.event_shape = batch_shape, event_shape

    def log_prob(self, value: Any) -> Any:
        _check_value(value, self._full_shape)
        xp = base_of(namespace_of(value, self.param))
        v, p = _sg(value), _sg(self.param)
        equal = xp.abs(v - p) < self.atol + self.rtol * xp.abs(p)
        if self.event_shape:
            equal = xp.all(equal, axis=tuple(range(-len(self.event_shape), 0)))
        inf = xp.asarray(math.inf, dtype=v.dtype, device=device_of(v))
        return xp.where(equal, inf, -inf)

    def rsample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> Any:
        shape = _shape(sample_shape)
        if not shape:
            return self.param
        xp = namespace_of(self.param)
        return xp.broadcast_to(self.param, shape + tuple(self.param.shape))

    @property
    def mean(self) -> Any:
        return self.param

    @property
    def mode(self) -> Any:
        return self.param


class TanhDelta(Distribution):
    """A point mass at ``c + s * tanh(param)`` (``torchrl.modules.TanhDelta``; ``c``, ``s`` as :class:`TanhNormal`).

    ``mode``, ``deterministic_sample``, ``sample`` and ``rsample`` return the squashed point (``rsample`` keeps the
    gradient w.r.t. ``param``). ``log_prob`` is the Delta's ``+-inf`` at the pre-image minus the log-Jacobian.
    ``torchrl_compat=True`` adds TorchRL's pre-tanh shift by ``c`` for bounds other than ``[-1, 1]`` (see the module
    docstring).
    """

    has_rsample = True

    def __init__(self, param: Any, low: Any = -1.0, high: Any = 1.0, event_dims: int = 1, atol: float = 1e-6,
                 rtol: float = 1e-6, safe: bool = True, *, torchrl_compat: bool = False):
        check_floating(param, "param")
        if not 0 <= event_dims <= param.ndim:
            raise ValueError(f"event_dims: expected 0..{param.ndim} for param of shape {_fmt(tuple(param.shape))}, got {event_dims}")
        self._t = _TanhTransform(param, low, high, safe, False)
        self.low, self.high = self._t.low, self._t.high
        self.param, self.dtype = param, param.dtype
        self.loc = self._t.shift_pre_tanh(param) if torchrl_compat else param
        cut = param.ndim - event_dims
        self.batch_shape, self.event_shape = tuple(param.shape[:cut]), tuple(param.shape[cut:])
        self._delta = Delta(self.loc, atol=atol, rtol=rtol, batch_shape=self.batch_shape, event_shape=self.event_shape)

    def log_prob(self, value: Any) -> Any:
        _check_value(value, self._full_shape)
        check_floating(value, "value")
        xp = namespace_of(self.loc, *self._t.arrays(), value)
        u = self._t.inverse(value)
        ladj = _sum_rightmost(self._t.log_abs_det_jacobian(u, xp), len(self.event_shape), xp)
        return xp.subtract(self._delta.log_prob(u), ladj)

    @property
    def mode(self) -> Any:
        return self._t.forward(self.loc)

    @property
    def deterministic_sample(self) -> Any:
        return self.mode

    def rsample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> Any:
        return self._t.forward(self._delta.rsample(None, sample_shape))

    @property
    def mean(self) -> Any:
        raise NotImplementedError("TanhDelta mean has no analytic form (use mode)")


# ------------------------------------------------------------------------------------------------ categorical
def _normalize_logits(logits: Any, xp: Any) -> Any:
    """``log_softmax(logits)`` as ``(x - m) - logsumexp(x - m)`` with ``m`` the (constant) finite row maximum.

    Mathematically torch's ``logits - logsumexp(logits)``; subtracting the maximum first keeps the large-magnitude
    cancellation out (float32 logits of 1e4 keep ~1e-7 relative accuracy instead of ~1e-4).
    """
    raw = base_of(xp)
    m = raw.max(_sg(logits), axis=-1, keepdims=True)
    m = raw.where(raw.isfinite(m), m, raw.zeros_like(m))
    shifted = logits - m
    return shifted - ops.logsumexp(shifted, axis=-1, keepdims=True)


class Categorical(Distribution):
    """A categorical distribution over ``K`` classes (``torch.distributions.Categorical``); values are int64 indices.

    ``logits`` ``[*B, K]`` are normalised as ``logits - logsumexp(logits)`` (computed after subtracting the row
    maximum); ``probs`` ``[*B, K]`` are divided by
    their sum and ``logits = log(clip(probs, eps, 1 - eps))`` (torch's ``probs_to_logits``). Give exactly one.
    ``entropy = -sum(max(logits, finfo.min) * probs)`` (finite for ``-inf`` logits). ``sample`` inverts the CDF
    with uniform draws ``[*S, *B]`` (``noise=``) and carries no gradient; ``mode``/``deterministic_sample`` is the
    arg-max.

    Args:
        validate_args: ``True``: check ``probs >= 0`` and that ``log_prob`` values lie in ``[0, K)``; ``None``
            (default): only the index range, under the :mod:`arrayrl._validate` policy (on for CPU arrays);
            ``False``: no data check. An index outside ``[0, K)`` raises
            :class:`arrayrl._validate.IndexRangeError` (an ``IndexError`` and a ``ValueError``).
    """

    def __init__(self, logits: Any = None, probs: Any = None, *, validate_args: bool | None = None):
        if (logits is None) == (probs is None):
            raise ValueError("logits, probs: give exactly one of them")
        name, p = ("logits", logits) if logits is not None else ("probs", probs)
        check_floating(p, name)
        if p.ndim < 1:
            raise ValueError(f"{name}: expected at least 1 dimension [*batch, num_categories], got a 0-d array")
        xp = namespace_of(p)
        self.validate_args = validate_args
        self.num_categories = int(p.shape[-1])
        self.dtype = p.dtype
        if logits is not None:
            self.logits = _normalize_logits(logits, xp)
            self.probs = ops.softmax(self.logits, axis=-1)
        else:
            if validate_args and not bool(base_of(xp).all(_sg(probs) >= 0)):
                raise ValueError("probs: expected non-negative values (validate_args=True)")
            self.probs = probs / xp.sum(probs, axis=-1, keepdims=True)
            eps = float(base_of(xp).finfo(p.dtype).eps)
            self.logits = xp.log(xp.clip(self.probs, min=eps, max=1 - eps))
        self.batch_shape, self.event_shape = tuple(p.shape[:-1]), ()

    def _index_log_prob(self, index: Any, *, in_range: bool = False) -> Any:
        """Gather ``logits`` at ``index`` (``in_range``: the caller knows the indices are valid, e.g. an arg-max)."""
        check_integer(index, "value")
        index = _sg(index)  # indices carry no gradient
        _check_value(index, self.batch_shape)
        if not in_range:
            check_index_range(index, self.num_categories, "value", enabled=self.validate_args)
        xp = namespace_of(self.logits, index)
        lp = self.logits
        full = tuple(index.shape) + (self.num_categories,)
        if tuple(lp.shape) != full:
            lp = xp.broadcast_to(lp, full)
        idx = base_of(namespace_of(index)).expand_dims(index, axis=-1)
        return xp.take_along_axis(lp, idx, axis=-1)[..., 0]

    def log_prob(self, value: Any) -> Any:
        """``log p(value)`` for int indices ``value [*S, *B]``."""
        return self._index_log_prob(value)

    def entropy(self) -> Any:
        xp = namespace_of(self.logits)
        lg = xp.clip(self.logits, min=float(base_of(xp).finfo(self.dtype).min))
        return -xp.sum(lg * self.probs, axis=-1)

    def _sample_index(self, generator: Any, sample_shape: Any, noise: Any) -> Any:
        probs = _sg(self.probs)
        xp = base_of(namespace_of(probs))
        # the noise may be a taped Tensor: it carries no gradient into an index (raw xp below)
        u = _sg(_draw(generator, noise, sample_shape, self.batch_shape, self.dtype, "uniform", probs))
        cdf = xp.cumulative_sum(probs, axis=-1)
        below = xp.astype(cdf <= xp.expand_dims(u, axis=-1), xp.int64)
        return xp.clip(xp.sum(below, axis=-1), max=self.num_categories - 1)

    def sample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> Any:
        return self._sample_index(generator, sample_shape, noise)

    def sample_and_log_prob(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> tuple:
        s = self.sample(generator, sample_shape, noise=noise)
        return s, self.log_prob(s)

    @property
    def mode(self) -> Any:
        xp = base_of(namespace_of(self.probs))
        return xp.asarray(xp.astype(xp.argmax(_sg(self.probs), axis=-1), xp.int64))

    @property
    def deterministic_sample(self) -> Any:
        return self.mode

    @property
    def mean(self) -> Any:
        raise NotImplementedError("Categorical has no mean (torch returns NaN); use mode")


class OneHotCategorical(Categorical):
    """A categorical distribution over one-hot vectors ``[*B, K]`` (``torchrl.modules.OneHotCategorical``).

    ``log_prob(v) = Categorical.log_prob(argmax(v))`` (TorchRL's definition). ``sample`` returns int64 one-hots;
    ``rsample`` (``grad_method="pass_through"``, TorchRL's default) returns ``one_hot + probs - stop_gradient(probs)``
    in the logits' dtype (value one-hot, gradient of the probabilities). ``mode`` is ``(logits == max)`` as int64
    (ties give several ones, as TorchRL). Unlike TorchRL, logits with a last dimension of 1 are not squeezed.
    """

    has_rsample = True

    def __init__(self, logits: Any = None, probs: Any = None, grad_method: str = "pass_through", *,
                 validate_args: bool | None = None):
        if grad_method not in ("pass_through", "PassThrough"):
            raise ValueError(f"grad_method: only 'pass_through' is supported, got {grad_method!r}")
        super().__init__(logits, probs, validate_args=validate_args)
        self.num_samples = self.num_categories
        self.event_shape = (self.num_categories,)

    def _one_hot(self, index: Any) -> Any:
        xp = base_of(namespace_of(index))
        classes = xp.arange(self.num_categories, dtype=index.dtype, device=device_of(index))
        return xp.astype(xp.expand_dims(index, axis=-1) == classes, xp.int64)

    def log_prob(self, value: Any) -> Any:
        _check_value(value, self._full_shape)
        xp = base_of(namespace_of(value))
        v = _sg(value)
        if self.validate_args:
            ok = xp.all(xp.logical_or(v == 0, v == 1)) and xp.all(xp.sum(xp.astype(v, xp.int64), axis=-1) == 1)
            if not bool(ok):
                raise ValueError("value: expected one-hot vectors (0/1 entries, one 1 per row) (validate_args=True)")
        return self._index_log_prob(xp.asarray(xp.astype(xp.argmax(v, axis=-1), xp.int64)), in_range=True)

    def sample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> Any:
        return self._one_hot(self._sample_index(generator, sample_shape, noise))

    def rsample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> Any:
        hard = self.sample(generator, sample_shape, noise=noise)
        xp = namespace_of(self.probs)
        out = base_of(xp).astype(hard, self.dtype)
        return xp_add(out, self.probs - _sg(self.probs))

    @property
    def mode(self) -> Any:
        xp = base_of(namespace_of(self.logits))
        lg = _sg(self.logits)
        return xp.astype(lg == xp.max(lg, axis=-1, keepdims=True), xp.int64)


# ------------------------------------------------------------------------------------------------ masked categorical
def _one_hot_hit(table: Any, value: Any, xp: Any) -> Any:
    """``table[..., value]`` for a boolean ``table [*S, *B, K]`` (broadcast) and int ``value [*S, *B]``, as a
    comparison with ``arange(K)`` (no gather on booleans, which not every backend supports)."""
    k = int(table.shape[-1])
    classes = xp.arange(k, dtype=value.dtype, device=device_of(value))
    return xp.any(xp.logical_and(table, xp.expand_dims(value, axis=-1) == classes), axis=-1)


class MaskedCategorical(Categorical):
    """A categorical distribution restricted to the allowed actions (``torchrl.modules.MaskedCategorical``).

    Dense form: ``mask`` boolean ``[*B, A]`` (or broadcastable to the logits' shape), ``False`` = not allowed.
    Sparse form: ``indices`` integer ``[*B, K]``, the allowed actions of each row (entries equal to
    ``padding_value`` are padding); the distribution is then over the ``K`` positions and ``sample``/``mode``
    return ``indices[position]`` (TorchRL's ``sparse_mask``). Give exactly one of ``mask``/``indices`` and exactly
    one of ``logits``/``probs`` ``[*B, A]``.

    * ``logits``: the allowed logits are normalised over the allowed actions only,
      ``log p_a = l_a - logsumexp_{allowed} l``; ``probs``: zeroed outside the mask and renormalised.
    * ``log_prob(a)``: ``log p_a`` for an allowed ``a``; for a masked-out ``a``, ``neg_inf`` (default ``-inf``),
      as TorchRL. With a *finite* ``neg_inf`` (representable in the dtype) TorchRL fills the masked logits with
      ``neg_inf`` before normalising, so those actions keep a small probability and score ``neg_inf - logsumexp``;
      arrayrl reproduces that exactly (``logits``, ``probs``, ``log_prob``, ``sample``).
    * ``entropy``: over the allowed actions only (TorchRL: masked and non-finite logits are excluded and the rest
      renormalised), whatever ``neg_inf``.
    * ``sample``: CDF inversion of uniform draws ``[*S, *B]`` (``noise=`` or a Generator); never a masked action
      (with ``neg_inf=-inf``): if round-off puts ``u`` past the last cumulative probability, the last allowed action
      is returned. ``mode``/``deterministic_sample``: the arg-max (TorchRL's).

    NaN-free by construction: the masked logits are held as the dtype's lowest finite value (``finfo.min``) before
    normalisation and every masked quantity goes through a ``where`` (whose VJP selects), so ``log_prob``,
    ``entropy``, the KL of :mod:`arrayrl.objectives.policy_gradient` and all their gradients are finite (zero
    gradient into masked logits), also for rows with a single allowed action.

    Divergences from TorchRL 0.14.1:

    * with ``neg_inf=-inf``, ``dist.logits`` holds ``finfo.min - logsumexp`` (finite) at masked entries where
      TorchRL holds ``-inf`` (``probs`` are exactly 0 there in both; ``log_prob`` returns ``-inf`` in both);
    * sparse ``indices`` with padding: TorchRL's entropy is NaN (``0 * -inf``); arrayrl's is the entropy over the
      non-padded positions;
    * a row with no allowed action (TorchRL: NaN logits) raises ``ValueError`` when validation is on (see below);
      with validation off it scores ``neg_inf`` everywhere, has entropy 0 and samples position ``K - 1``.

    Validation (``validate_args``; ``None`` = the process-wide policy of :mod:`arrayrl._validate`: on for CPU
    arrays, off on GPUs): ``log_prob`` values must lie in ``[0, A)`` (:class:`arrayrl._validate.IndexRangeError`)
    and be allowed by the mask (``ValueError`` naming the action and its position: scoring a masked-out action is
    almost always a bug, e.g. a mask that changed between collection and training); every row must allow at
    least one action; sparse ``indices`` must lie in ``[0, A)``. With validation off, TorchRL's behaviour
    (``neg_inf``) and no data is read. ``probs >= 0`` is checked only with ``validate_args=True``.

    ``use_cross_entropy`` is accepted for compatibility (TorchRL's faster path; the values are the same).
    ``padding_side`` is stored (TorchRL 0.14.1 stores it too and does not use it).
    """

    def __init__(self, logits: Any = None, probs: Any = None, *, mask: Any = None, indices: Any = None,
                 neg_inf: float = float("-inf"), padding_value: int | None = None, use_cross_entropy: bool = True,
                 padding_side: str = "left", validate_args: bool | None = None):
        from ._validate import validation_enabled

        if (mask is None) == (indices is None):
            raise ValueError("mask, indices: give exactly one of them (a boolean mask or the allowed indices)")
        if (logits is None) == (probs is None):
            raise ValueError("logits, probs: give exactly one of them")
        if isinstance(neg_inf, bool) or not isinstance(neg_inf, (int, float)) or math.isnan(neg_inf) \
                or neg_inf == math.inf:
            raise ValueError(f"neg_inf: expected a real number below +inf (default -inf), got {neg_inf!r}")
        if padding_value is not None and (isinstance(padding_value, bool) or not isinstance(padding_value, int)):
            raise TypeError(f"padding_value: expected an int or None, got {padding_value!r}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side: expected 'left' or 'right', got {padding_side!r}")
        name, p = ("logits", logits) if logits is not None else ("probs", probs)
        check_floating(p, name)
        if p.ndim < 1:
            raise ValueError(f"{name}: expected at least 1 dimension [*batch, num_actions], got a 0-d array")
        xp = namespace_of(p)
        raw = base_of(xp)
        dev = device_of(p)
        self.validate_args = validate_args
        self.neg_inf = float(neg_inf)
        self.use_cross_entropy = bool(use_cross_entropy)
        self._padding_value, self._padding_side = padding_value, padding_side
        self.dtype = p.dtype
        n_actions = int(p.shape[-1])
        self.num_samples = self.num_categories = n_actions
        full = tuple(p.shape)
        self._sparse = indices is not None
        if self._sparse:
            check_integer(indices, "indices")
            indices = _sg(indices)
            namespace_of(indices, _sg(p))
            if indices.ndim != p.ndim or tuple(indices.shape[:-1]) != full[:-1]:
                raise ValueError(f"indices: expected shape [*batch, K] with batch shape {_fmt(full[:-1])} (that of "
                                 f"{name}), got {_fmt(tuple(indices.shape))}")
            pad = (indices == padding_value) if padding_value is not None else None
            safe_idx = raw.where(pad, raw.zeros_like(indices), indices) if pad is not None else indices
            check_index_range(safe_idx, n_actions, "indices", enabled=validate_args)
            supp = raw.logical_not(pad) if pad is not None else raw.ones(tuple(indices.shape), dtype=raw.bool,
                                                                         device=device_of(indices))
            self._mask, self._indices = indices, indices
            p = xp.take_along_axis(p, safe_idx, axis=-1)
            allowed = supp
        else:
            if not hasattr(mask, "dtype") or not raw.isdtype(mask.dtype, "bool"):
                raise TypeError(f"mask: expected a boolean array [*batch, {n_actions}], got "
                                f"{getattr(mask, 'dtype', type(mask).__name__)}")
            mask = _sg(mask)
            namespace_of(mask, _sg(p))
            ms = tuple(mask.shape)
            if len(ms) < 1 or len(ms) > len(full) or any(m not in (1, f) for m, f in zip(reversed(ms), reversed(full))) \
                    or ms[-1] != n_actions:
                raise ValueError(f"mask: expected a shape broadcastable to {_fmt(full)} (that of {name}) with "
                                 f"{n_actions} actions last, got {_fmt(ms)}")
            allowed = mask if ms == full else raw.broadcast_to(mask, full)
            self._mask, self._indices = mask, None
        self._allowed = allowed  # [*B, K]: the user's mask (dense) or the non-padded positions (sparse)
        if validation_enabled(allowed, validate_args) and math.prod(full[:-1]) and \
                not bool(raw.all(raw.any(allowed, axis=-1))):
            what = "indices (all padding)" if self._sparse else "mask"
            raise ValueError(f"{what}: every row must allow at least one action, got a row with none")
        lowest = raw.asarray(float(raw.finfo(self.dtype).min), dtype=self.dtype, device=dev)
        if probs is not None:
            if validate_args and not bool(raw.all(_sg(p) >= 0)):
                raise ValueError("probs: expected non-negative values (validate_args=True)")
            zero = raw.zeros((), dtype=self.dtype, device=dev)
            kept = xp.where(allowed, p, zero)
            total = xp.sum(kept, axis=-1, keepdims=True)
            total = xp.where(_sg(total) > 0, total, raw.ones((), dtype=self.dtype, device=dev))
            kept = kept / total
            # zero-probability entries are excluded like masked ones (log(0) would put inf * 0 in the gradients)
            support = raw.logical_and(allowed, _sg(kept) > 0)
            base = xp.log(xp.where(support, kept, raw.ones((), dtype=self.dtype, device=dev)))
        else:
            support = allowed
            base = p
        self._support = support
        # finite normalised logits, masked entries at finfo.min - logsumexp (exp() == 0 exactly)
        self._core = _normalize_logits(xp.where(support, base, lowest), xp)
        # neg_inf representable in the dtype (decided in Python: no device read); below the range it is -inf
        self._finite_fill = math.isfinite(self.neg_inf) and self.neg_inf >= float(raw.finfo(self.dtype).min)
        self._fill_value = self.neg_inf if self._finite_fill else -math.inf
        fill = raw.asarray(self._fill_value, dtype=self.dtype, device=dev)
        if self._finite_fill:
            self.logits = _normalize_logits(xp.where(support, base, fill), xp)  # TorchRL's masked_fill(neg_inf)
            self.probs = ops.softmax(self.logits, axis=-1)
        else:
            self.logits = self._core
            self.probs = xp.exp(self._core)
        self._k = int(self._core.shape[-1])
        self.batch_shape, self.event_shape = full[:-1], ()

    # ---------------------------------------------------------------------------------------- TorchRL properties
    @property
    def mask(self) -> Any:
        if self._sparse:
            raise ValueError("MaskedCategorical.mask does not support sparse masks (built from indices=)")
        return self._mask

    @property
    def padding_value(self) -> int:
        return self._padding_value if self._padding_value is not None else 0

    @property
    def padding_side(self) -> str:
        return self._padding_side

    # ---------------------------------------------------------------------------------------- scores
    def _validated_value(self, value: Any) -> Any:
        check_integer(value, "value")
        value = _sg(value)
        _check_value(value, self.batch_shape)
        check_index_range(value, self.num_samples, "value", enabled=self.validate_args)
        return value

    def _full(self, x: Any, lead: tuple, xp: Any) -> Any:
        shape = lead + tuple(x.shape)
        return x if tuple(x.shape) == shape else xp.broadcast_to(x, shape)

    def _position(self, value: Any) -> tuple:
        """``(position [*S, *B], found [*S, *B])``: the gather position of ``value`` and whether it is an allowed
        action (dense: the mask at ``value``; sparse: ``value`` is among the non-padded indices)."""
        raw = base_of(namespace_of(value))
        lead = tuple(value.shape[: value.ndim - len(self.batch_shape)])
        if not self._sparse:
            return value, _one_hot_hit(self._full(self._allowed, lead, raw), value, raw)
        idx = self._full(self._indices, lead, raw)
        eq = idx == raw.expand_dims(value, axis=-1)
        pos = raw.astype(raw.argmax(raw.astype(eq, raw.int32), axis=-1), value.dtype)  # first match (TorchRL)
        return pos, raw.any(eq, axis=-1)

    def _check_allowed(self, value: Any, found: Any) -> None:
        from ._validate import validation_enabled

        if not validation_enabled(value, self.validate_args) or math.prod(tuple(value.shape)) == 0:
            return
        raw = base_of(namespace_of(found))
        if bool(raw.all(found)):
            return
        flat = raw.reshape(raw.logical_not(found), (-1,))
        i = int(raw.argmax(raw.astype(flat, raw.int32)))
        where_ = tuple(int(j) for j in _unravel(i, tuple(found.shape)))
        bad = int(raw.reshape(value, (-1,))[i])
        n_bad = int(raw.sum(raw.astype(flat, raw.int32)))
        what = "not among the allowed indices" if self._sparse else "masked out (mask is False there)"
        raise ValueError(
            f"value: action {bad} at index {where_} is {what}; {n_bad} masked-out action(s) in all. Its "
            f"log-probability would be neg_inf={self.neg_inf} (TorchRL's value: disable validation with "
            "validate_args=False or arrayrl.set_validate_args(False) to get it)"
        )

    def log_prob(self, value: Any) -> Any:
        """``log p(value)`` for int actions ``value [*S, *B]``; ``neg_inf`` for masked-out actions (see above)."""
        value = self._validated_value(value)
        pos, found = self._position(value)
        self._check_allowed(value, found)
        lead = tuple(value.shape[: value.ndim - len(self.batch_shape)])
        src = self.logits if self._finite_fill else self._core
        xp = namespace_of(src, pos)
        raw = base_of(xp)
        lp = self._full(src, lead, xp)
        out = xp.take_along_axis(lp, raw.expand_dims(pos, axis=-1), axis=-1)[..., 0]
        if not self._finite_fill:  # a padded position or a masked-out action scores -inf
            hit = raw.logical_and(found, _one_hot_hit(self._full(self._support, lead, raw), pos, raw))
        elif self._sparse:  # TorchRL: an action not among the indices scores neg_inf
            hit = found
        else:  # TorchRL: a masked-out action keeps its (finite) normalised logit neg_inf - logsumexp
            return out
        fill = raw.asarray(self._fill_value, dtype=self.dtype, device=device_of(pos))
        return xp.where(hit, out, fill)

    def entropy(self) -> Any:
        """``-sum_{allowed} p log p`` over the allowed actions (renormalised over them, as TorchRL)."""
        core = self._core
        xp = namespace_of(core)
        raw = base_of(xp)
        terms = xp.where(self._support, xp.exp(core) * core, raw.zeros((), dtype=self.dtype, device=device_of(_sg(core))))
        return -xp.sum(terms, axis=-1)

    # ---------------------------------------------------------------------------------------- samples
    def _sample_index(self, generator: Any, sample_shape: Any, noise: Any) -> Any:
        probs = _sg(self.probs)
        xp = base_of(namespace_of(probs))
        u = _sg(_draw(generator, noise, sample_shape, self.batch_shape, self.dtype, "uniform", probs))
        cdf = xp.cumulative_sum(probs, axis=-1)
        count = xp.sum(xp.astype(cdf <= xp.expand_dims(u, axis=-1), xp.int64), axis=-1)
        k = self._k
        # round-off can leave u >= cdf[-1]: fall back on the last allowed position, never a masked one
        last = (k - 1) - xp.astype(xp.argmax(xp.astype(xp.flip(self._support, axis=-1), xp.int32), axis=-1), xp.int64)
        pos = xp.where(count >= k, xp.broadcast_to(last, tuple(count.shape)), count)
        return self._to_action(pos)

    def _to_action(self, pos: Any) -> Any:
        if not self._sparse:
            return pos
        xp = base_of(namespace_of(pos))
        lead = tuple(pos.shape[: pos.ndim - len(self.batch_shape)])
        idx = self._full(self._indices, lead, xp)
        return xp.take_along_axis(idx, xp.expand_dims(xp.astype(pos, idx.dtype), axis=-1), axis=-1)[..., 0]

    @property
    def mode(self) -> Any:
        xp = base_of(namespace_of(self.probs))
        return self._to_action(xp.asarray(xp.astype(xp.argmax(_sg(self.probs), axis=-1), xp.int64)))


def _unravel(i: int, shape: tuple) -> list:
    out = []
    for s in reversed(shape):
        out.append(i % s)
        i //= s
    return list(reversed(out))


# ------------------------------------------------------------------------------------------------ composite
def _head_str(key: tuple) -> str:
    return repr(key[0]) if len(key) == 1 else repr(key)


class CompositeDistribution(Distribution):
    """Several named, independent action heads as one distribution (tensordict's ``CompositeDistribution`` idea).

    Heads are named by (nested) keys: ``"move"`` or ``("arm", "grip")``. Samples, modes and per-head scores are
    nested dicts keyed by those names (:mod:`arrayrl.data`'s layout); the joint score is the sum over heads.

    Build it from parameters (tensordict's signature; ``params`` is a nested dict whose entry at each head name
    holds that head's constructor arguments)::

        CompositeDistribution({"move": {"logits": lg}, "arm": {"loc": m, "scale": s}},
                              {"move": Categorical, "arm": TanhNormal}, extra_kwargs={"arm": {"low": -2.0}})

    or from existing distributions: ``CompositeDistribution.from_distributions({"move": c, "arm": t})``.

    Shapes: the composite's ``batch_shape`` ``B`` is ``batch_shape=`` if given (it must be a prefix of every
    head's batch shape), else the longest common prefix of the heads' batch shapes. A head whose batch shape is
    longer (a ``Normal`` of shape ``[*B, 4]``: torch's ``Normal`` has no event axis) has its extra trailing
    axes summed in the joint ``log_prob``/``entropy`` (tensordict's ``flatten(...).sum(-1)``).

    * ``log_prob(value) -> [*S, *B]``: the sum of the heads' log-probabilities (``value`` a nested dict with an
      entry per head); ``log_prob(value, aggregate=False)`` returns the per-head scores unreduced, keyed by head
      name; :meth:`log_prob_composite` writes them as ``"<name>_log_prob"`` (and the sum under ``log_prob_key``
      with ``include_sum=True``), tensordict's layout.
    * ``entropy(samples_mc=1, *, generator=None, aggregate=True)``: the sum of the heads' entropies (independent
      heads); a head without an analytic entropy (``TanhNormal``) uses ``-mean log p`` over ``samples_mc`` draws
      from ``generator`` (``ValueError`` naming the head without one); ``aggregate=False``: per head.
    * ``sample``/``rsample``/``sample_and_log_prob``/``rsample_and_log_prob(generator, sample_shape, *,
      noise=None)``: per head, in the heads' order (``noise``: a dict with one entry per head, each the noise
      that head takes); ``rsample`` needs every head reparameterisable (``has_rsample``). ``*_and_log_prob``
      return ``(sample dict, joint log-prob)``, each head scored as its own ``*_and_log_prob`` does (TanhNormal
      on its pre-tanh draw).
    * ``mode``, ``mean``, ``deterministic_sample``: dicts.

    Every head must have the same floating dtype (the joint score's). Indexing ``dist["move"]`` returns a head.
    """

    def __init__(self, params: Any = None, distribution_map: Any = None, *, name_map: Any = None,
                 extra_kwargs: Any = None, batch_shape: Any = None, log_prob_key: Any = "sample_log_prob",
                 entropy_key: Any = "entropy"):
        from collections.abc import Mapping

        from .data import get, unravel_key

        if not isinstance(distribution_map, Mapping) or not distribution_map:
            raise TypeError("distribution_map: expected a non-empty dict {head name: distribution class}")
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a nested dict holding each head's arguments, got {type(params).__name__}")
        name_map = {unravel_key(k): unravel_key(v) for k, v in (name_map or {}).items()}
        extra = {unravel_key(k): dict(v) for k, v in (extra_kwargs or {}).items()}
        dists = {}
        for name, cls in distribution_map.items():
            key = unravel_key(name)
            if not callable(cls):
                raise TypeError(f"distribution_map[{_head_str(key)}]: expected a distribution class, got {cls!r}")
            kw = get(params, key, what=f"parameters of head {_head_str(key)}")
            if not isinstance(kw, Mapping):
                raise TypeError(f"params[{_head_str(key)}]: expected a dict of constructor arguments, got "
                                f"{type(kw).__name__}")
            try:
                dists[name_map.get(key, key)] = cls(**kw, **extra.get(key, {}))
            except TypeError as err:
                raise TypeError(f"params[{_head_str(key)}]: arguments {sorted(kw)} do not match "
                                f"{getattr(cls, '__name__', cls)}: {err}") from err
        self._setup(dists, batch_shape, log_prob_key, entropy_key)

    @classmethod
    def from_distributions(cls, distributions: Any, *, name_map: Any = None, batch_shape: Any = None,
                           log_prob_key: Any = "sample_log_prob", entropy_key: Any = "entropy"
                           ) -> "CompositeDistribution":
        """A composite of existing distributions ``{head name: distribution}``."""
        from collections.abc import Mapping

        from .data import unravel_key

        if not isinstance(distributions, Mapping) or not distributions:
            raise TypeError("distributions: expected a non-empty dict {head name: distribution}")
        name_map = {unravel_key(k): unravel_key(v) for k, v in (name_map or {}).items()}
        self = cls.__new__(cls)
        dists = {}
        for k, d in distributions.items():
            key = unravel_key(k)
            dists[name_map.get(key, key)] = d
        self._setup(dists, batch_shape, log_prob_key, entropy_key)
        return self

    def _setup(self, dists: dict, batch_shape: Any, log_prob_key: Any, entropy_key: Any) -> None:
        names = list(dists)
        for i, a in enumerate(names):  # a head may not sit inside another head's key
            for b in names[i + 1:]:
                short, long_ = (a, b) if len(a) <= len(b) else (b, a)
                if long_[: len(short)] == short:
                    raise ValueError(f"distribution_map: head names {_head_str(a)} and {_head_str(b)} overlap")
        for k, d in dists.items():
            if not isinstance(d, Distribution):
                raise TypeError(f"head {_head_str(k)}: expected an arrayrl distribution, got {type(d).__name__}")
        dtypes = {k: d.dtype for k, d in dists.items()}
        first = next(iter(dtypes.values()))
        other = [k for k, t in dtypes.items() if t != first]
        if other:
            raise TypeError(f"head {_head_str(other[0])}: dtype {dtypes[other[0]]} differs from {first} (that of "
                            f"head {_head_str(names[0])}); every head must share one floating dtype")
        shapes = [tuple(d.batch_shape) for d in dists.values()]
        if batch_shape is None:
            common: tuple = shapes[0]
            for s in shapes[1:]:
                n = 0
                while n < min(len(common), len(s)) and common[n] == s[n]:
                    n += 1
                common = common[:n]
            batch_shape = common
        else:
            batch_shape = _shape(batch_shape)
            for k, s in zip(names, shapes):
                if s[: len(batch_shape)] != batch_shape:
                    raise ValueError(f"batch_shape: {_fmt(batch_shape)} is not a prefix of the batch shape "
                                     f"{_fmt(s)} of head {_head_str(k)}")
        self.dists = dists
        self.dtype = first
        self.batch_shape, self.event_shape = batch_shape, ()
        self.log_prob_key, self.entropy_key = log_prob_key, entropy_key

    # ---------------------------------------------------------------------------------------- mapping access
    def __getitem__(self, name: Any) -> Distribution:
        from .data import unravel_key

        key = unravel_key(name)
        if key not in self.dists:
            raise KeyError(f"head {_head_str(key)} not in the composite (heads: "
                           f"{', '.join(_head_str(k) for k in self.dists)})")
        return self.dists[key]

    def keys(self) -> list:
        return list(self.dists)

    def items(self) -> list:
        return list(self.dists.items())

    def __iter__(self):
        return iter(self.dists)

    def __len__(self) -> int:
        return len(self.dists)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return all(d.has_rsample for d in self.dists.values())

    # ---------------------------------------------------------------------------------------- helpers
    def _reduce_head(self, x: Any, key: tuple, sample_ndim: int) -> Any:
        """``[*S, *B_head] -> [*S, *B]``: sum the head's extra trailing batch axes."""
        extra = len(self.dists[key].batch_shape) - len(self.batch_shape)
        return _sum_rightmost(x, extra, namespace_of(x))

    def _total(self, parts: dict, what: str) -> Any:
        total = None
        for key, x in parts.items():
            if total is not None and tuple(x.shape) != tuple(total.shape):
                raise ValueError(f"{what}: head {_head_str(key)} gives shape {_fmt(tuple(x.shape))}, the heads before "
                                 f"it {_fmt(tuple(total.shape))} (different sample shapes?)")
            total = x if total is None else xp_add(total, x)
        return total

    def _noise(self, noise: Any, key: tuple) -> Any:
        if noise is None:
            return None
        from collections.abc import Mapping

        from .data import get_or

        if not isinstance(noise, Mapping):
            raise TypeError(f"noise: expected a dict with one entry per head ({', '.join(_head_str(k) for k in self.dists)}), "
                            f"got {type(noise).__name__}")
        return get_or(noise, key, None)

    @staticmethod
    def _nest(parts: dict) -> dict:
        from .data import with_

        out: dict = {}
        for k, v in parts.items():
            out = with_(out, k, v)
        return out

    # ---------------------------------------------------------------------------------------- scores
    def log_prob(self, value: Any, *, aggregate: bool = True) -> Any:
        """The joint ``log p(value) [*S, *B]`` (sum over heads), or with ``aggregate=False`` a nested dict of the
        heads' unreduced log-probabilities keyed by head name."""
        from collections.abc import Mapping

        from .data import get

        if not isinstance(value, Mapping):
            raise TypeError(f"value: expected a nested dict with one sample per head, got {type(value).__name__}")
        parts = {k: d.log_prob(get(value, k, what=f"sample of head {_head_str(k)}")) for k, d in self.dists.items()}
        if not aggregate:
            return self._nest(parts)
        return self._total({k: self._reduce_head(v, k, 0) for k, v in parts.items()}, "log_prob")

    def log_prob_composite(self, value: Any, *, include_sum: bool = False) -> dict:
        """tensordict's layout: ``"<name>_log_prob"`` per head (nested beside the head's key), and the joint score
        under ``log_prob_key`` when ``include_sum``."""
        from .data import get, with_

        per = self.log_prob(value, aggregate=False)
        out: dict = {}
        for k in self.dists:
            out = with_(out, k[:-1] + (k[-1] + "_log_prob",), get(per, k))
        if include_sum:
            out = with_(out, self.log_prob_key, self.log_prob(value))
        return out

    def entropy(self, samples_mc: int = 1, *, generator: Any = None, noise: Any = None,
                aggregate: bool = True) -> Any:
        """The joint entropy ``[*B]`` (sum over the independent heads), or per head with ``aggregate=False``."""
        parts = {}
        for k, d in self.dists.items():
            try:
                parts[k] = d.entropy()
                continue
            except NotImplementedError:
                pass
            head_noise = self._noise(noise, k)
            if generator is None and head_noise is None:
                raise ValueError(f"entropy: head {_head_str(k)} ({type(d).__name__}) has no analytic entropy; a "
                                 "Monte-Carlo estimate needs generator= (or noise=)")
            if int(samples_mc) < 1:
                raise ValueError(f"samples_mc: expected >= 1, got {samples_mc}")
            draw = d.rsample_and_log_prob if d.has_rsample else d.sample_and_log_prob
            _, lp = draw(generator, (int(samples_mc),) if head_noise is None else (), noise=head_noise)
            parts[k] = -namespace_of(lp).mean(lp, axis=0)
        if not aggregate:
            return self._nest(parts)
        return self._total({k: self._reduce_head(v, k, 0) for k, v in parts.items()}, "entropy")

    # ---------------------------------------------------------------------------------------- samples
    def sample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> dict:
        return self._nest({k: d.sample(generator, sample_shape, noise=self._noise(noise, k))
                           for k, d in self.dists.items()})

    def rsample(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> dict:
        flat = [k for k, d in self.dists.items() if not d.has_rsample]
        if flat:
            raise NotImplementedError(f"rsample: head {_head_str(flat[0])} ({type(self.dists[flat[0]]).__name__}) "
                                      "has no reparameterised sampler; use sample")
        return self._nest({k: d.rsample(generator, sample_shape, noise=self._noise(noise, k))
                           for k, d in self.dists.items()})

    def _and_log_prob(self, method: str, generator: Any, sample_shape: Any, noise: Any) -> tuple:
        samples, lps = {}, {}
        for k, d in self.dists.items():
            s, lp = getattr(d, method)(generator, sample_shape, noise=self._noise(noise, k))
            samples[k], lps[k] = s, self._reduce_head(lp, k, 0)
        return self._nest(samples), self._total(lps, method)

    def sample_and_log_prob(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> tuple:
        return self._and_log_prob("sample_and_log_prob", generator, sample_shape, noise)

    def rsample_and_log_prob(self, generator: Any = None, sample_shape: Any = (), *, noise: Any = None) -> tuple:
        if not self.has_rsample:
            self.rsample(generator, sample_shape, noise=noise)  # raises naming the head
        return self._and_log_prob("rsample_and_log_prob", generator, sample_shape, noise)

    @property
    def mode(self) -> dict:
        return self._nest({k: d.mode for k, d in self.dists.items()})

    @property
    def mean(self) -> dict:
        return self._nest({k: d.mean for k, d in self.dists.items()})

    @property
    def deterministic_sample(self) -> dict:
        return self._nest({k: d.deterministic_sample for k, d in self.dists.items()})

    def __repr__(self) -> str:
        inner = ", ".join(f"{_head_str(k)}: {d!r}" for k, d in self.dists.items())
        return f"CompositeDistribution({{{inner}}}, batch_shape={self.batch_shape})"
