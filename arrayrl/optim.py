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
"""

from __future__ import annotations

import math
from typing import Any

from ._backend import is_array, is_taped, namespace_of
from .tree import tree_flatten, tree_leaves, tree_map, tree_unflatten

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Stateful", "clip_grad_norm", "global_norm"]


def _check_trees(grads: Any, params: Any) -> None:
    gl, gd = tree_flatten(grads)
    pl, pd = tree_flatten(params)
    if gd != pd:
        raise ValueError(f"grads: expected the structure of params {pd!r}, got {gd!r}")
    for i, (g, p) in enumerate(zip(gl, pl)):
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"grads: leaf {i} has shape {tuple(g.shape)}, the parameter has {tuple(p.shape)}")


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


def _lerp(start: Any, end: Any, weight: float) -> Any:
    """``torch.lerp`` rounding: ``start + w (end - start)`` for ``w < 0.5``, ``end - (end - start)(1 - w)`` else."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


class Optimizer:
    """Base class: ``init(params) -> state``, ``update(grads, state, params) -> (params, state)``.

    Hyper-parameters are attributes (``opt.lr = 1e-4`` changes the learning rate of later updates, as editing a
    torch param group).
    """

    def init(self, params: Any) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def update(self, grads: Any, state: dict, params: Any) -> tuple[Any, dict]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _prepare(self, grads: Any, params: Any, maximize: bool) -> Any:
        _check_trees(grads, params)
        for p in tree_leaves(params):
            if is_taped(p):
                raise TypeError("params: the optimiser takes raw arrays, not taped Tensors (use the gradients' values)")
        return tree_map(lambda g: -g, grads) if maximize else grads


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay (``torch.optim.SGD``)."""

    def __init__(self, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, *, maximize: bool = False):
        if lr < 0:
            raise ValueError(f"lr: expected >= 0, got {lr}")
        if momentum < 0:
            raise ValueError(f"momentum: expected >= 0, got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov: requires momentum > 0 and dampening == 0")
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov, self.maximize = weight_decay, nesterov, maximize

    def init(self, params: Any) -> dict:
        """``{"step": 0, "momentum_buffer": zeros-like tree or None}``."""
        buf = tree_map(_zeros_like, params) if self.momentum != 0 else None
        return {"step": 0, "momentum_buffer": buf}

    def update(self, grads: Any, state: dict, params: Any) -> tuple[Any, dict]:
        grads = self._prepare(grads, params, self.maximize)
        first = state["step"] == 0
        lr, mom, wd, damp = self.lr, self.momentum, self.weight_decay, self.dampening

        def one(g: Any, p: Any, b: Any) -> tuple:
            xp = _namespace(g, p, b)
            if wd != 0:
                g = g + wd * p
            if mom != 0:
                b = g if first else b * mom + (1.0 - damp) * g
                g = g + mom * b if self.nesterov else b
                b = _array(xp, b)
            return _array(xp, p - lr * g), b

        gl, treedef = tree_flatten(grads)
        pl = tree_leaves(params)
        bl = tree_leaves(state["momentum_buffer"]) if mom != 0 else [None] * len(pl)
        out = [one(g, p, b) for g, p, b in zip(gl, pl, bl)]
        new_params = tree_unflatten(treedef, [o[0] for o in out])
        new_buf = tree_unflatten(treedef, [o[1] for o in out]) if mom != 0 else None
        return new_params, {"step": state["step"] + 1, "momentum_buffer": new_buf}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with optional L2 ``weight_decay`` and AMSGrad (``torch.optim.Adam``)."""

    _decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False):
        if lr < 0:
            raise ValueError(f"lr: expected >= 0, got {lr}")
        if eps < 0:
            raise ValueError(f"eps: expected >= 0, got {eps}")
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"betas[{i}]: expected a value in [0, 1), got {b}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        self.weight_decay, self.amsgrad, self.maximize = weight_decay, amsgrad, maximize

    def init(self, params: Any) -> dict:
        """``{"step": 0, "exp_avg": zeros, "exp_avg_sq": zeros, "max_exp_avg_sq": zeros or None}``."""
        return {
            "step": 0,
            "exp_avg": tree_map(_zeros_like, params),
            "exp_avg_sq": tree_map(_zeros_like, params),
            "max_exp_avg_sq": tree_map(_zeros_like, params) if self.amsgrad else None,
        }

    def update(self, grads: Any, state: dict, params: Any) -> tuple[Any, dict]:
        grads = self._prepare(grads, params, self.maximize)
        step = state["step"] + 1
        beta1, beta2 = self.betas
        lr, wd, eps = self.lr, self.weight_decay, self.eps
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        step_size = lr / bias_correction1

        def one(g: Any, p: Any, m: Any, v: Any, vmax: Any) -> tuple:
            xp = _namespace(g, p, m, v)
            if wd != 0:
                if self._decoupled:
                    p = p * (1 - lr * wd)
                else:
                    g = g + wd * p
            m = _lerp(m, g, 1 - beta1)
            v = v * beta2 + (1 - beta2) * (g * g)
            if self.amsgrad:
                vmax = xp.maximum(vmax, v)
                denom = xp.sqrt(vmax) / bias_correction2_sqrt + eps
            else:
                denom = xp.sqrt(v) / bias_correction2_sqrt + eps
            out = p + (-step_size) * (m / denom)
            return _array(xp, out), _array(xp, m), _array(xp, v), (_array(xp, vmax) if self.amsgrad else None)

        gl, treedef = tree_flatten(grads)
        n = len(gl)
        vmaxl = tree_leaves(state["max_exp_avg_sq"]) if self.amsgrad else [None] * n
        out = [one(*a) for a in zip(gl, tree_leaves(params), tree_leaves(state["exp_avg"]),
                                    tree_leaves(state["exp_avg_sq"]), vmaxl)]
        col = lambda i: tree_unflatten(treedef, [o[i] for o in out])  # noqa: E731
        return col(0), {
            "step": step,
            "exp_avg": col(1),
            "exp_avg_sq": col(2),
            "max_exp_avg_sq": col(3) if self.amsgrad else None,
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
    leaves = [g for g in tree_leaves(grads)]
    if not leaves:
        raise ValueError("grads: expected at least one array")
    xp = _namespace(*leaves)
    if norm_type == math.inf:
        norms = [xp.max(xp.abs(g)) for g in leaves]
        return _array(xp, xp.max(xp.stack(norms)))
    if norm_type <= 0:
        raise ValueError(f"norm_type: expected a positive number or inf, got {norm_type}")

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
    total = global_norm(grads, norm_type)
    xp = _namespace(total)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"clip_grad_norm: the total norm of order {norm_type} of the gradients is non-finite")
    coef = xp.clip(max_norm / (total + 1e-6), max=1.0)
    return tree_map(lambda g: _array(xp, g * xp.astype(coef, g.dtype)), grads), total
