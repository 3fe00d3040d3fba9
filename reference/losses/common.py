"""Shared per-sample pieces of the reference losses: distances, TorchRL's reduction, action gathering.

TorchRL 0.14.1 conventions (catalog sections 0 and 1.4):

* ``distance(a, b, "l2") = (a - b)^2`` (no 1/2), ``"l1" = |a - b|``,
  ``"smooth_l1"`` = Huber with beta = 1: ``0.5 x^2`` if ``|x| < 1`` else ``|x| - 0.5``.
* ``reduce(loss, "mean" | "sum" | "none", weights=None, mask=None)``:
  mean = ``sum(l w m) / sum(w m)`` (weights) or ``sum(l m) / max(sum(m), 1)`` (no weights);
  sum = ``sum(l w m)``; none = ``l w`` with zeros at masked positions (shape kept: the "mask read from the
  batch" semantics of ``LossModule._reduce_loss``).
"""

from __future__ import annotations

import numpy as np

from .._util import as_bool, as_f64, as_index

__all__ = ["distance", "distance_scalar", "reduce", "chosen_action_value", "greedy_index", "batch_vector"]

LOSS_FUNCTIONS = ("l2", "l1", "smooth_l1")


def distance_scalar(a: float, b: float, loss_function: str) -> float:
    x = a - b
    if loss_function == "l2":
        return x * x
    if loss_function == "l1":
        return abs(x)
    if loss_function == "smooth_l1":
        return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5
    raise ValueError(f"loss_function: expected one of {LOSS_FUNCTIONS}, got {loss_function!r}")


def distance(a, b, loss_function: str = "l2") -> np.ndarray:
    """Elementwise distance of two same-shape arrays (see module docstring)."""
    a, b = as_f64("a", a), as_f64("b", b)
    if a.shape != b.shape:
        raise ValueError(f"b: expected shape {a.shape} (the shape of a), got {b.shape}")
    out = np.empty(a.shape, dtype=np.float64)
    for i in np.ndindex(*a.shape):
        out[i] = distance_scalar(float(a[i]), float(b[i]), loss_function)
    return out


def reduce(loss, reduction: str = "mean", weights=None, mask=None):
    """TorchRL's ``_reduce_loss`` (weights = prioritized-replay weights of the loss's shape)."""
    l = as_f64("loss", loss)
    w = np.ones(l.shape) if weights is None else as_f64("weights", weights)
    m = np.ones(l.shape, dtype=bool) if mask is None else as_bool("mask", mask)
    for name, arr in (("weights", w), ("mask", m)):
        if arr.shape != l.shape:
            raise ValueError(f"{name}: expected shape {l.shape} (the shape of the loss), got {arr.shape}")
    if reduction == "none":
        out = np.empty(l.shape, dtype=np.float64)
        for i in np.ndindex(*l.shape):
            out[i] = l[i] * w[i] if m[i] else 0.0
        return out
    num = 0.0
    den = 0.0
    for i in np.ndindex(*l.shape):
        if m[i]:
            num += float(l[i]) * float(w[i])
            den += float(w[i])
    if reduction == "sum":
        return np.float64(num)
    if reduction == "mean":
        if weights is None:
            den = max(den, 1.0)  # sum(mask).clamp_min(1)
        return np.float64(num / den)
    raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")


def greedy_index(row) -> int:
    """First index of the maximum (torch.argmax's tie rule)."""
    vals = [float(v) for v in row]
    best = 0
    for k in range(1, len(vals)):
        if vals[k] > vals[best]:
            best = k
    return best


def chosen_action_value(q, action, action_space=None):
    """``Q(s, a)`` from action values ``q[..., nA]``.

    ``action_space="categorical"``: integer indices of shape ``q.shape[:-1]`` (or with a trailing singleton).
    ``action_space="one_hot"``: an array of ``q``'s shape; the result is ``sum_k q_k a_k`` (TorchRL's one-hot
    convention, so a multi-hot action sums several values).  ``None``: one-hot iff ``action.shape == q.shape``.
    """
    q = as_f64("q", q)
    a = np.asarray(action)
    batch_shape = q.shape[:-1]
    if action_space is None:
        action_space = "one_hot" if a.shape == q.shape else "categorical"
    out = np.empty(batch_shape, dtype=np.float64)
    if action_space == "one_hot":
        a = as_f64("action", a)
        if a.shape != q.shape:
            raise ValueError(f"action: expected a one-hot array of shape {q.shape}, got {a.shape}")
        for b in np.ndindex(*batch_shape):
            total = 0.0
            for k in range(q.shape[-1]):
                total += float(q[b + (k,)]) * float(a[b + (k,)])
            out[b] = total
        return out
    if action_space != "categorical":
        raise ValueError(f"action_space: expected 'categorical', 'one_hot' or None, got {action_space!r}")
    a = as_index("action", a)
    if a.shape == batch_shape + (1,):
        a = a.reshape(batch_shape)
    if a.shape != batch_shape:
        raise ValueError(f"action: expected indices of shape {batch_shape}, got {a.shape}")
    for b in np.ndindex(*batch_shape):
        k = int(a[b])
        if not 0 <= k < q.shape[-1]:
            raise ValueError(f"action: index {k} out of range for {q.shape[-1]} actions")
        out[b] = float(q[b + (k,)])
    return out


def batch_vector(name: str, x, batch_shape: tuple, *, kind: str = "float"):
    """Per-sample input of shape ``batch_shape`` or ``batch_shape + (1,)`` (TorchRL's trailing singleton)."""
    arr = as_bool(name, x) if kind == "bool" else as_f64(name, x)
    if arr.shape == tuple(batch_shape) + (1,):
        arr = arr.reshape(batch_shape)
    if arr.shape != tuple(batch_shape):
        raise ValueError(f"{name}: expected shape {tuple(batch_shape)} or {tuple(batch_shape) + (1,)}, got {arr.shape}")
    return arr

