"""Central finite differences in float64 (the oracle for gradient tests).

* :func:`numerical_grad` -- gradient of a scalar function of an array or of a pytree
  (nested ``dict`` / ``list`` / ``tuple`` whose leaves are arrays or Python numbers).
* :func:`numerical_vjp` -- vector-Jacobian product ``cotangent . J`` of an array-valued function of several arguments.
* :func:`numerical_jacobian` -- full Jacobian of an array-valued function of one array.

All inputs are cast to float64 copies; the function under test always receives fresh arrays, so it cannot
corrupt the probe point.  Central difference: ``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``, error O(eps^2).
"""

from __future__ import annotations

import numpy as np

__all__ = ["numerical_grad", "numerical_vjp", "numerical_jacobian"]


# -- tiny pytree helpers (own implementation: the reference never imports arrayrl) -----------------------------


def _flatten(tree, leaves: list):
    """Return a structure description; leaves are appended to ``leaves``."""
    if isinstance(tree, dict):
        keys = list(tree.keys())
        return ("dict", keys, [_flatten(tree[k], leaves) for k in keys])
    if isinstance(tree, (list, tuple)):
        return (type(tree).__name__, None, [_flatten(t, leaves) for t in tree])
    leaves.append(tree)
    return ("leaf", None, None)


def _unflatten(spec, it):
    kind, keys, children = spec
    if kind == "leaf":
        return next(it)
    built = [_unflatten(c, it) for c in children]
    if kind == "dict":
        return dict(zip(keys, built))
    return tuple(built) if kind == "tuple" else list(built)


def _is_float_leaf(x) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, (float, int)):
        return isinstance(x, float)
    arr = np.asarray(x)
    return arr.dtype.kind == "f"


def _scalar(v) -> float:
    arr = np.asarray(v, dtype=np.float64)
    if arr.size != 1:
        raise ValueError(f"f must return a scalar, got shape {arr.shape}")
    return float(arr.reshape(()))


def _perturbed_grad(f_of_leaves, leaves, diff_mask, eps):
    """d f / d leaf for each leaf flagged in ``diff_mask`` (None for the others)."""
    base = [np.array(l, dtype=np.float64, copy=True) if m else l for l, m in zip(leaves, diff_mask)]
    grads = []
    for li, (leaf, m) in enumerate(zip(base, diff_mask)):
        if not m:
            grads.append(None)
            continue
        g = np.zeros(leaf.shape, dtype=np.float64)
        for idx in np.ndindex(*leaf.shape):
            vals = []
            for sign in (1.0, -1.0):
                probe = [np.array(b, copy=True) if isinstance(b, np.ndarray) else b for b in base]
                probe[li][idx] += sign * eps
                vals.append(_scalar(f_of_leaves(probe)))
            g[idx] = (vals[0] - vals[1]) / (2.0 * eps)
        grads.append(g)
    return grads


def numerical_grad(f, x, eps: float = 1e-6):
    """Gradient of the scalar ``f(x)`` by central differences.

    ``x``: a float array, or a pytree (dict/list/tuple) of arrays and numbers.  Returns float64 arrays with the
    structure of ``x``.  Non-float leaves (bool/int arrays) are passed through unchanged and get ``None``.
    A Python-float leaf is passed to ``f`` as a 0-d float64 array.
    """
    leaves: list = []
    spec = _flatten(x, leaves)
    mask = [_is_float_leaf(l) for l in leaves]

    def f_of_leaves(ls):
        return f(_unflatten(spec, iter(ls)))

    grads = _perturbed_grad(f_of_leaves, leaves, mask, eps)
    return _unflatten(spec, iter(grads))


def numerical_vjp(f, args: tuple, cotangent, eps: float = 1e-6):
    """``cotangent . d f(*args) / d args`` by central differences.

    ``f(*args)`` returns an array (or pytree of arrays); ``cotangent`` has the same structure/shapes.
    Returns a tuple with one gradient per argument (each with the argument's pytree structure; ``None`` for
    non-float leaves).
    """
    if not isinstance(args, tuple):
        raise TypeError(f"args: expected a tuple of arguments, got {type(args).__name__}")
    cot_leaves: list = []
    cot_spec = _flatten(cotangent, cot_leaves)
    cot_leaves = [np.asarray(c, dtype=np.float64) for c in cot_leaves]

    def scalar_f(a):
        out_leaves: list = []
        out_spec = _flatten(f(*a), out_leaves)
        if out_spec != cot_spec:
            raise ValueError("cotangent: structure differs from the output of f")
        total = 0.0
        for o, c in zip(out_leaves, cot_leaves):
            o = np.asarray(o, dtype=np.float64)
            if o.shape != c.shape:
                raise ValueError(f"cotangent: expected shape {o.shape} (the output of f), got {c.shape}")
            total += float(np.sum(o * c))
        return total

    return tuple(numerical_grad(scalar_f, tuple(args), eps=eps))


def numerical_jacobian(f, x, eps: float = 1e-6) -> np.ndarray:
    """Jacobian ``J[out_idx + in_idx] = d f(x)[out_idx] / d x[in_idx]`` (shape ``out.shape + x.shape``)."""
    x = np.array(x, dtype=np.float64, copy=True)
    out0 = np.asarray(f(np.array(x, copy=True)), dtype=np.float64)
    jac = np.zeros(out0.shape + x.shape, dtype=np.float64)
    for idx in np.ndindex(*x.shape):
        xp_, xm = np.array(x, copy=True), np.array(x, copy=True)
        xp_[idx] += eps
        xm[idx] -= eps
        col = (np.asarray(f(xp_), dtype=np.float64) - np.asarray(f(xm), dtype=np.float64)) / (2.0 * eps)
        jac[(Ellipsis,) + idx] = col
    return jac
