"""Optimisers as pure functions of pytrees: :class:`SGD`, :class:`Adam`, :class:`AdamW`, and :func:`clip_grad_norm`.

Functional protocol (every backend; parameters, gradients and state are same-structured trees)::

    opt = Adam(lr=3e-4)
    state = opt.init(params)
    params, state = opt.update(grads, state, params)     # new trees; the inputs are not modified

:class:`Stateful` wraps this for the usual ``step(grads)`` style. The update formulas and their floating-point order
follow ``torch.optim``'s single-tensor (CPU default) implementations of torch 2.13, so 20 steps match ``torch.optim``
to float round-off:

* SGD: ``g += wd * p``; momentum ``b = g`` at the first step, then ``b = momentum * b + (1 - dampening) * g``;
  ``g = g + momentum * b`` (nesterov) or ``g = b``; ``p -= lr * g``.
* Adam: ``g += wd * p`` (AdamW instead ``p *= 1 - lr * wd`` first); ``m = lerp(m, g, 1 - beta1)``;
  ``v = beta2 * v + (1 - beta2) * g * g``; (amsgrad: ``v_max = max(v_max, v)``);
  ``p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``.

The step counter is a Python ``int`` in the state (bias corrections are host scalars, as torch's non-capturable
path), so an update never synchronises with the device.

Dtypes: every parameter keeps its dtype. A gradient of another floating dtype (a float64 gradient for a float32
parameter) is cast to the parameter's dtype before it is used, as torch, whose ``param.grad`` always has the
parameter's dtype; the state leaves have the dtype of their parameter too.

Hyper-parameters enter Adam's arithmetic as Python floats (``float(lr)``, as torch's param groups), so a NumPy
float64 hyper-parameter does not promote float32 arithmetic.

Checks (shapes, structure and Python hyper-parameters only, never data): hyper-parameters are validated at
construction and again at each update where one was rebound (so ``opt.lr = float("nan")`` is caught),
``ValueError`` naming the argument; gradients and state trees must have the structure (dict keys in the same order)
and leaf shapes of ``params``, ``ValueError`` naming the path of the first difference
(``grads['layer']['bias']: expected shape (4,) ...``); parameters and gradients must be real floating arrays.

Speed (an update is called once per training step on small trees, so its Python overhead matters): one walk of the
parameter, gradient and state trees together checks them and builds the new trees (:func:`_walk`); only when it
meets a difference or something unusual does the checked path (flatten, compare, name the difference) run. On NumPy,
Adam's per-leaf arithmetic is one fused numba kernel (:mod:`arrayrl._numba_optim`), bit-identical to the generic
code below, which stays the reference and the fallback (every other backend, numba off).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Callable

from . import _numba_optim
from ._backend import device_of, is_array, is_taped, namespace_of
from ._checks import check_floating
from .nn.params import _format_path, _leaves_like
from .tree import tree_flatten, tree_map, tree_paths, tree_unflatten

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Stateful", "clip_grad_norm", "global_norm"]


def _check_number(value: Any, name: str, *, low: float = 0.0, high: float | None = None,
                  high_open: bool = False) -> None:
    """Raise unless ``value`` is a finite real number in ``[low, high]`` (``[low, high)`` with ``high_open``).

    ``TypeError`` for non-numbers (bools included), ``ValueError`` for NaN, infinities and values out of range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if high is None:
        ok, bounds = value >= low, f">= {low}"
    else:
        ok = low <= value and (value < high if high_open else value <= high)
        bounds = f"in [{low}, {high}{')' if high_open else ']'}"
    if not (math.isfinite(value) and ok):
        raise ValueError(f"{name}: expected a finite number {bounds}, got {value}")


def _check_flag(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")


def _state_leaves(state: Any, key: str, params: Any, flat: tuple) -> list:
    """The leaves of ``state[key]``, checked against ``params`` (structure and shapes; the path named)."""
    if key not in state:
        raise ValueError(f"state: missing {key!r} (keys present: {list(state)}); build the state with opt.init(params)")
    return _leaves_like(state[key], params, f"state[{key!r}]", "params", flat)


def _cast_like(x: Any, p: Any) -> Any:
    """``x`` as an array of ``p``'s dtype (optimiser outputs keep the parameter's dtype)."""
    if type(x) is type(p) and x.dtype == p.dtype:  # the usual case (p is a checked array): no lookups
        return x
    if is_array(x) and x.dtype == p.dtype:
        return x
    xp = _namespace(x)
    x = _array(xp, x)
    return x if x.dtype == p.dtype else xp.astype(x, p.dtype)


# (array type, dtype) pairs already seen to be raw (untaped) real floating arrays: the per-update leaf checks are a
# set lookup for them (a taped Tensor is never added, so it always reaches the full check and its error).
_FLOATING: set = set()


def _remember_floating(p: Any, g: Any) -> None:
    """Record the (array type, dtype) pairs of a parameter and its gradient that passed the leaf checks (a taped
    gradient is never recorded, so it always reaches the full check)."""
    _FLOATING.add((type(p), p.dtype))
    if not is_taped(g):
        _FLOATING.add((type(g), g.dtype))


def _learn_floating(p: Any, g: Any) -> bool:
    """The checked path's leaf checks without their messages: whether ``p`` is a raw real floating array and ``g``
    a real floating array (then the pairs are remembered); ``False`` leaves the failure to the checked path, which
    names the leaf."""
    if is_taped(p):
        return False
    try:
        check_floating(p, "params")
        check_floating(g, "grads")
    except (TypeError, ValueError):
        return False
    _remember_floating(p, g)
    return True


def _known_floating(x: Any) -> bool:
    try:
        return (type(x), x.dtype) in _FLOATING
    except (AttributeError, TypeError):  # no dtype, or an unhashable dtype: the full check decides
        return False


def _namespace(*xs: Any) -> Any:
    """``namespace_of`` that also accepts NumPy scalars: NumPy returns ``np.float64`` for arithmetic on 0-d arrays
    (a 0-d ``log_alpha`` after one update), and ``namespace_of`` ignores those like Python numbers."""
    try:
        return namespace_of(*xs)
    except TypeError:
        import array_api_compat

        return array_api_compat.array_namespace(*[x for x in xs if x is not None])


def _array(xp: Any, x: Any) -> Any:
    """``x`` as an array (a no-op except for NumPy scalars, which become 0-d arrays)."""
    return x if is_array(x) else xp.asarray(x)


def _zeros_like(p: Any) -> Any:
    return _namespace(p).zeros_like(p)


def _lerp_rule(weight: float) -> tuple[bool, float]:
    """``torch.lerp``'s rounding rule: ``(False, w)`` for ``w < 0.5`` (``start + w (end - start)``), else
    ``(True, 1 - w)`` (``end - (end - start)(1 - w)``); the factor is a Python float (double)."""
    return (False, weight) if weight < 0.5 else (True, 1.0 - weight)


def _lerp(start: Any, end: Any, weight: float, *, same_layout: bool = False) -> Any:
    """``torch.lerp`` (the rule of :func:`_lerp_rule`).

    ``same_layout=True`` (``start`` and ``end`` of one shape and dtype, as an optimiser's state and gradient): the
    same operations, in place on the one temporary ``end - start`` (the inputs are never written).
    """
    from_end, factor = _lerp_rule(weight)
    if not same_layout:
        return end - (end - start) * factor if from_end else start + factor * (end - start)
    d = end - start
    d *= factor
    if from_end:
        return end - d
    d += start
    return d


class _Mismatch(Exception):
    """Internal: the fast walk of an update (:func:`_walk`) met something only the checked path handles."""


def _walk(fn: Callable[..., tuple], params: Any, grads: Any, states: list, n_out: int) -> tuple | list:
    """The fast path of an update: ``n_out`` trees of ``params``' structure whose leaves are ``fn(p, g, *s)`` (the
    leaves of ``params``, ``grads`` and each tree of ``states``), in one walk of the trees together.

    It applies only where the checked path (:meth:`Optimizer._map`) would pass: the same plain containers (``dict``
    with the keys in the same order, ``list``, ``tuple``, ``None``), equal leaf shapes, parameter and gradient
    leaves that are raw real floating arrays (an (array type, dtype) seen before, or one that passes the leaf
    checks now: :func:`_learn_floating`). Anything else raises :class:`_Mismatch` (possibly after ``fn`` ran on
    some leaves: it is pure), and the caller runs the checked path, which names the difference, or accepts what
    only it handles (a container subclass).
    ``fn`` gets the gradient cast to its parameter's dtype.
    """

    def walk(p: Any, others: list) -> tuple | list:
        kind = type(p)
        if kind is dict:
            keys = list(p)
            for o in others:
                if type(o) is not dict or list(o) != keys:
                    raise _Mismatch
            kids = [walk(p[k], [o[k] for o in others]) for k in keys]
            return [dict(zip(keys, col)) for col in zip(*kids)] if kids else [{} for _ in range(n_out)]
        if kind is list or kind is tuple:
            for o in others:
                if type(o) is not kind or len(o) != len(p):
                    raise _Mismatch
            kids = [walk(x, [o[i] for o in others]) for i, x in enumerate(p)]
            return [kind(col) for col in zip(*kids)] if kids else [kind() for _ in range(n_out)]
        if p is None:
            if any(o is not None for o in others):
                raise _Mismatch
            return [None] * n_out
        g = others[0]
        try:  # _known_floating and the shapes, inline (the cost of a small update is in these Python lines)
            if ((type(p), p.dtype) not in _FLOATING or (type(g), g.dtype) not in _FLOATING) \
                    and not _learn_floating(p, g):  # a first-seen type is learned here, not by a second walk
                raise _Mismatch
            shape = p.shape
            for o in others:
                if o.shape != shape:
                    raise _Mismatch
        except (AttributeError, TypeError):  # a leaf without a dtype or a shape, an unhashable dtype
            raise _Mismatch from None
        if type(g) is not type(p) or g.dtype != p.dtype:
            others = [_cast_like(g, p), *others[1:]]
        return fn(p, *others)

    return walk(params, [grads, *states])


class Optimizer:
    """Base class: ``init(params) -> state``, ``update(grads, state, params) -> (params, state)``.

    Hyper-parameters are attributes (``opt.lr = 1e-4`` changes the learning rate of later updates, as editing a
    torch param group).
    """

    maximize: bool = False  # ascend instead of descend (torch's ``maximize``)
    _hyper = operator.attrgetter("lr", "maximize")  # the hyper-parameter attributes (see _check_hyper_once)

    def init(self, params: Any) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def update(self, grads: Any, state: dict, params: Any) -> tuple[Any, dict]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _check_hyper(self) -> None:  # pragma: no cover - overridden
        """Validate the hyper-parameter attributes (``ValueError``/``TypeError`` naming the attribute)."""

    def _check_hyper_once(self) -> None:
        """:meth:`_check_hyper`, skipped while every attribute of ``_hyper`` is still bound to the very object last
        validated (an identity test, so rebinding one, even to an equal value or ``True`` for ``1``, checks again;
        numbers, bools and tuples are immutable)."""
        values = self._hyper(self)
        last = self.__dict__.get("_valid_hyper")
        if last is None or not all(map(operator.is_, values, last)):
            self._check_hyper()
            self._valid_hyper = values

    def _check_args(self, state: Any) -> int:
        """Validate the hyper-parameters (:meth:`_check_hyper_once`) and the state's step; return the step."""
        self._check_hyper_once()
        if not isinstance(state, dict) or not isinstance(state.get("step"), int) or isinstance(state["step"], bool) \
                or state["step"] < 0:
            got = f"step={state.get('step')!r}" if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state: expected the dict returned by opt.init(params) with an int step >= 0, got {got}")
        return state["step"]

    def _map(self, fn: Callable[..., tuple], grads: Any, state: dict, params: Any, keys: list) -> tuple | list:
        """Check the trees an update reads; return the ``1 + len(keys)`` new trees (parameters, then one per
        ``state[key]``) whose leaves are ``fn(p, g, *state_leaves)``, ``g`` cast to ``p``'s dtype. Call
        :meth:`_check_args` first.

        The fast walk (:func:`_walk`) where it applies; otherwise the checked path: the gradient tree (structure,
        shapes, real floating leaves), then each state tree against ``params``, each error naming the path of the
        first difference."""
        n_out = 1 + len(keys)
        if all(k in state for k in keys):
            try:
                return _walk(fn, params, grads, [state[k] for k in keys], n_out)
            except _Mismatch:
                pass
        pl, treedef = tree_flatten(params)
        gl = _leaves_like(grads, params, "grads", "params", (pl, treedef))
        if not all(_known_floating(p) and _known_floating(g) for p, g in zip(pl, gl)):
            for (path, p), g in zip(tree_paths(params), gl):
                if is_taped(p):
                    raise TypeError(f"{_format_path('params', path)}: the optimiser takes raw arrays, not taped "
                                    "Tensors")
                check_floating(p, _format_path("params", path))
                check_floating(g, _format_path("grads", path))
                _remember_floating(p, g)
        sl = [_state_leaves(state, k, params, (pl, treedef)) for k in keys]
        out = [fn(p, _cast_like(g, p), *s) for p, g, *s in zip(pl, gl, *sl)]
        return tuple(tree_unflatten(treedef, [o[i] for o in out]) for i in range(n_out))


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay (``torch.optim.SGD``)."""

    _hyper = operator.attrgetter("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")

    def __init__(self, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, *, maximize: bool = False):
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov, self.maximize = weight_decay, nesterov, maximize
        self._check_hyper()

    def _check_hyper(self) -> None:
        """``lr``, ``momentum``, ``weight_decay`` finite and ``>= 0``; ``dampening`` in ``[0, 1]``; Nesterov needs
        momentum and no dampening (as ``torch.optim.SGD``)."""
        _check_number(self.lr, "lr")
        _check_number(self.momentum, "momentum")
        _check_number(self.dampening, "dampening", high=1.0)
        _check_number(self.weight_decay, "weight_decay")
        _check_flag(self.nesterov, "nesterov")
        _check_flag(self.maximize, "maximize")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"nesterov: requires momentum > 0 and dampening == 0, got momentum={self.momentum}, "
                             f"dampening={self.dampening}")

    def init(self, params: Any) -> dict:
        """``{"step": 0, "momentum_buffer": zeros-like tree or None}``."""
        buf = tree_map(_zeros_like, params) if self.momentum != 0 else None
        return {"step": 0, "momentum_buffer": buf}

    def update(self, grads: Any, state: dict, params: Any) -> tuple[Any, dict]:
        first = self._check_args(state) == 0
        lr, mom, wd, damp = self.lr, self.momentum, self.weight_decay, self.dampening
        maximize, nesterov = self.maximize, self.nesterov

        def one(p: Any, g: Any, b: Any = None) -> tuple:
            if maximize:
                g = -g
            if wd != 0:
                g = g + wd * p
            if mom == 0:
                return (_cast_like(p - lr * g, p),)
            b = g if first else b * mom + (1.0 - damp) * g
            g = g + mom * b if nesterov else b
            return _cast_like(p - lr * g, p), _cast_like(b, p)

        out = self._map(one, grads, state, params, ["momentum_buffer"] if mom != 0 else [])
        return out[0], {"step": state["step"] + 1, "momentum_buffer": out[1] if mom != 0 else None}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with optional L2 ``weight_decay`` and AMSGrad (``torch.optim.Adam``)."""

    _decoupled = False
    _hyper = operator.attrgetter("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False):
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        self.weight_decay, self.amsgrad, self.maximize = weight_decay, amsgrad, maximize
        self._check_hyper()

    def _check_hyper(self) -> None:
        """``lr``, ``eps``, ``weight_decay`` finite and ``>= 0``; each of ``betas`` in ``[0, 1)`` (as
        ``torch.optim.Adam``, which also rejects NaN only by accident of its comparisons)."""
        _check_number(self.lr, "lr")
        _check_number(self.eps, "eps")
        if not isinstance(self.betas, tuple) or len(self.betas) != 2:
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {self.betas!r}")
        for i, b in enumerate(self.betas):
            _check_number(b, f"betas[{i}]", high=1.0, high_open=True)
        _check_number(self.weight_decay, "weight_decay")
        _check_flag(self.amsgrad, "amsgrad")
        _check_flag(self.maximize, "maximize")

    def init(self, params: Any) -> dict:
        """``{"step": 0, "exp_avg": zeros, "exp_avg_sq": zeros, "max_exp_avg_sq": zeros or None}``."""
        return {
            "step": 0,
            "exp_avg": tree_map(_zeros_like, params),
            "exp_avg_sq": tree_map(_zeros_like, params),
            "max_exp_avg_sq": tree_map(_zeros_like, params) if self.amsgrad else None,
        }

    def update(self, grads: Any, state: dict, params: Any) -> tuple[Any, dict]:
        """One step on every leaf: the fused NumPy kernel (:mod:`arrayrl._numba_optim`, bit-identical) where it
        applies, else the generic array-API code below (the reference)."""
        step = self._check_args(state) + 1
        # Python floats (a NumPy float64 hyper-parameter would promote float32 arithmetic), as torch's param groups
        lr, eps, wd = float(self.lr), float(self.eps), float(self.weight_decay)
        beta1, beta2 = float(self.betas[0]), float(self.betas[1])
        amsgrad, maximize = self.amsgrad, self.maximize
        decoupled, l2 = wd != 0 and self._decoupled, wd != 0 and not self._decoupled
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        step_size = lr / bias_correction1
        decay = 1 - lr * wd
        namespaces: dict = {}  # array types -> namespace (one lookup per backend, not per leaf)

        def generic(p: Any, g: Any, m: Any, v: Any, vmax: Any = None) -> tuple:
            key = (type(g), type(p), type(m), type(v))
            xp = namespaces.get(key)
            if xp is None:
                xp = namespaces[key] = _namespace(g, p, m, v)
            p0 = p
            if maximize:
                g = -g
            if decoupled:
                p = p * decay
            elif l2:
                g = g + wd * p
            # torch's operations in torch's order; the in-place operators act only on arrays created here (the
            # inputs are never written), which saves the temporaries of each expression without changing a bit
            m = _lerp(m, g, 1 - beta1, same_layout=True)
            gg = g * g
            gg *= 1 - beta2
            v = v * beta2
            v += gg
            if amsgrad:
                vmax = xp.maximum(vmax, v)
            denom = xp.sqrt(vmax if amsgrad else v)
            denom /= bias_correction2_sqrt
            denom += eps
            out = m / denom
            out *= -step_size
            out += p
            if amsgrad:
                return _cast_like(out, p0), _cast_like(m, p0), _cast_like(v, p0), _cast_like(vmax, p0)
            return _cast_like(out, p0), _cast_like(m, p0), _cast_like(v, p0)

        from_end, lerp_factor = _lerp_rule(1 - beta1)
        one = _numba_optim.fused_adam(
            generic, decay=decay, weight_decay=wd, lerp_weight=lerp_factor, lerp_from_end=from_end, beta2=beta2,
            one_minus_beta2=1 - beta2, bias_correction2_sqrt=bias_correction2_sqrt, eps=eps, neg_step_size=-step_size,
            maximize=maximize, l2=l2, decoupled=decoupled)
        keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
        out = self._map(one, grads, state, params, keys)
        return out[0], {
            "step": step,
            "exp_avg": out[1],
            "exp_avg_sq": out[2],
            "max_exp_avg_sq": out[3] if amsgrad else None,
        }


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): ``p *= 1 - lr * weight_decay`` before the Adam
    step (``torch.optim.AdamW``, default ``weight_decay=0.01``)."""

    _decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


class Stateful:
    """Convenience: holds ``params`` and the optimiser state; ``step(grads)`` updates both and returns the params.

    Example:
        >>> trainer = Stateful(Adam(lr=1e-3), params)
        >>> params = trainer.step(grads)
    """

    def __init__(self, optimizer: Optimizer, params: Any):
        self.optimizer, self.params = optimizer, params
        self.state = optimizer.init(params)

    def step(self, grads: Any) -> Any:
        self.params, self.state = self.optimizer.update(grads, self.state, self.params)
        return self.params


# ------------------------------------------------------------------------------------------------ clipping
def global_norm(grads: Any, norm_type: float = 2.0) -> Any:
    """The norm of all leaves taken together (a 0-d array): ``norm([norm(g) for g in leaves])`` as torch."""
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"norm_type: expected a real number, got {type(norm_type).__name__} {norm_type!r}")
    if not norm_type > 0:  # NaN included
        raise ValueError(f"norm_type: expected a positive number or inf, got {norm_type}")
    paths = tree_paths(grads)
    if not paths:
        raise ValueError("grads: expected at least one array, got an empty tree")
    for path, g in paths:
        check_floating(g, _format_path("grads", path))
    leaves = [g for _, g in paths]
    xp = _namespace(*leaves)
    if norm_type == math.inf:
        # an empty leaf has no max: it contributes 0 (as torch)
        norms = [xp.max(xp.abs(g)) if math.prod(g.shape) else xp.zeros((), dtype=g.dtype, device=device_of(g))
                 for g in leaves]
        return _array(xp, xp.max(xp.stack(norms)))

    def pnorm(x: Any) -> Any:
        if norm_type == 2.0:
            return xp.sqrt(xp.sum(x * x))
        if norm_type == 1.0:
            return xp.sum(xp.abs(x))
        return xp.sum(xp.abs(x) ** norm_type) ** (1.0 / norm_type)

    return _array(xp, pnorm(xp.stack([pnorm(xp.reshape(g, (-1,))) for g in leaves])))


def clip_grad_norm(grads: Any, max_norm: float, norm_type: float = 2.0, *,
                   error_if_nonfinite: bool = False) -> tuple[Any, Any]:
    """Scale all gradients together so that their global norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: ``coef = min(max_norm / (total_norm + 1e-6), 1)`` multiplies every leaf
    (always, without a data-dependent branch). Returns ``(clipped_grads, total_norm)``; the input is unchanged.
    ``error_if_nonfinite=True`` reads the norm (a device synchronisation) and raises ``RuntimeError`` if it is NaN or
    infinite.
    """
    _check_number(max_norm, "max_norm")
    _check_flag(error_if_nonfinite, "error_if_nonfinite")
    total = global_norm(grads, norm_type)
    xp = _namespace(total)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"clip_grad_norm: the total norm of order {norm_type} of the gradients is non-finite")
    coef = xp.clip(max_norm / (total + 1e-6), max=1.0)
    return tree_map(lambda g: _array(xp, g * xp.astype(coef, g.dtype)), grads), total
