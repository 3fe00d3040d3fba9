"""A fused Adam/AdamW step for one NumPy leaf (numba): an optional accelerator behind :meth:`arrayrl.optim.Adam.update`.

The generic array-API code of :class:`arrayrl.optim.Adam` stays the reference and the fallback. For one update,
:func:`fused_adam` wraps the generic per-leaf step ``generic(p, g, m, v, vmax) -> (p', m', v'[, vmax'])`` into one
that runs the kernel instead where it applies (plain ``numpy.ndarray`` leaves of one dtype, float32 or float64) and
``generic`` elsewhere; it returns ``generic`` itself when numba is missing or switched off (the one switch of
:mod:`arrayrl._numba_scan`: ``ARRAYRL_DISABLE_NUMBA=1``, :func:`~arrayrl._numba_scan.set_enabled`,
:func:`~arrayrl._numba_scan.generic_path`). numba is imported on the first call that could use it, never at
``import arrayrl``.

What one pass over the ``n`` elements computes (torch's single-tensor Adam, in torch's order)::

    g  = -g if maximize                           p~ = p * decay        (AdamW; decay = 1 - lr wd)
    g  = g + wd * p       (Adam's L2 decay)
    d  = g - m
    m' = d * w + m        (w = 1 - beta1 < 0.5)   m' = g - d * w'       (else, w' = 1 - (1 - beta1): torch.lerp)
    v' = v * beta2 + (g * g) * (1 - beta2)
    vmax' = max(vmax, v') (amsgrad, NaN-propagating as np.maximum; then used in place of v')
    p' = (m' / (sqrt(v') / bias_correction2_sqrt + eps)) * (-step_size) + p~

Why bit-identical to the generic path: each element goes through the same IEEE operations in the same order and
dtype (the generic code's in-place operators do not change a rounding). The scalars are the same Python floats,
each rounded once to the leaf's dtype (``np.array(..., dtype)``), which is what NumPy 2 does to a Python float
combined with a float32 array (weak scalars); numba without ``fastmath`` neither contracts ``a * b + c`` into an FMA
nor reassociates; ``sqrt`` and ``/`` are correctly rounded on both sides. ``tests/optim/test_adam_kernel.py``
checks the bits over several steps for every option and both dtypes.

Inputs are never written: the wrapper allocates new outputs (C-contiguous, the parameter's shape) and one compiled
call fills them all. Leaves of any shape and layout are accepted (the kernel reads a non-C-contiguous leaf through a
compiled copy); NumPy scalars, which NumPy returns for arithmetic on 0-d arrays, are taken as 0-d arrays. numba
compiles one variant per dtype, number of dimensions, layout (read-only included) and amsgrad-or-not on first use
(0.5-2 s each; ``cache=True`` keeps them on disk in ``__pycache__``). The cost of a small leaf is the wrapper, three
allocations and numba's argument unboxing (about 4 us); from a few thousand elements it is the two divisions and the
square root per element (about 1.2 ns per float32 element, vectorised).

Measured (``Adam.update`` of a whole tree, float32, steady state; 2-core machine shared with other jobs, load
average 0.6-0.9; before = the generic path with the former tree handling, after = this kernel and the fast walk of
:mod:`arrayrl.optim`; medians of 7 runs of 300-2000 updates, three alternating fresh processes each):

* DQN (CleanRL, MLP 4-120-84-2: 6 leaves, 10.9k floats): 194-256 us -> 78-106 us (2.4x);
* SAC critics (2 x MLP 4-256-256-1: 12 leaves, 135k floats): 0.89-1.03 ms -> 0.43-0.45 ms (2.1x);
* SAC actor (MLP 3-256-256-2: 6 leaves, 67k floats): 0.44-0.52 ms -> 0.19-0.23 ms (2.3x).

Of the DQN update about 25 us are the kernel calls, 10 us the allocations and 30 us the checking walk of the four
trees; the generic NumPy path makes about 12 NumPy calls per leaf.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._numba_scan import available

__all__ = ["available", "fused_adam"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

_state: dict = {"kernel": None}  # the entry point once wrapped by numba (each variant compiled or loaded on first use)


def fused_adam(generic: Callable[..., tuple], *, decay: float, weight_decay: float, lerp_weight: float,
               lerp_from_end: bool, beta2: float, one_minus_beta2: float, bias_correction2_sqrt: float, eps: float,
               neg_step_size: float, maximize: bool, l2: bool, decoupled: bool) -> Callable[..., tuple]:
    """The per-leaf step of one update: the kernel where it applies, ``generic`` elsewhere (``generic`` itself
    when numba is off). The scalars are those of the module docstring, as Python floats.

    ``step(p, g, m, v, vmax=None)`` (``vmax`` only with amsgrad; the caller has checked the shapes equal) returns
    ``(p', m', v')`` or ``(p', m', v', vmax')``. The kernel applies to NumPy arrays of one float32/float64 dtype;
    the scalars are rounded to each dtype once per update.
    """
    if not available():
        return generic
    kernel = _kernel()
    scalars = (decay, weight_decay, lerp_weight, beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size)
    rounded: dict = {}  # dtype -> the scalars as a [8] array of that dtype

    def step(p: Any, g: Any, m: Any, v: Any, vmax: Any = None) -> tuple:
        if not _one_float_dtype(p, g, m, v, vmax):
            if not any(isinstance(x, np.generic) for x in (p, g, m, v, vmax)):
                return generic(p, g, m, v, vmax)
            # NumPy returns scalars for arithmetic on 0-d arrays (a 0-d gradient, a state from the generic path)
            p, g, m, v, vmax = (np.asarray(x) if isinstance(x, np.generic) else x for x in (p, g, m, v, vmax))
            if not _one_float_dtype(p, g, m, v, vmax):
                return generic(p, g, m, v, vmax)
        dt = p.dtype
        c = rounded.get(dt)
        if c is None:
            c = rounded[dt] = np.array(scalars, dtype=dt)
        shape = p.shape
        po, mo, vo = np.empty(shape, dt), np.empty(shape, dt), np.empty(shape, dt)  # C-contiguous
        if vmax is None:
            kernel(p, g, m, v, None, po, mo, vo, None, c, maximize, l2, decoupled, lerp_from_end)
            return po, mo, vo
        vmo = np.empty(shape, dt)
        kernel(p, g, m, v, vmax, po, mo, vo, vmo, c, maximize, l2, decoupled, lerp_from_end)
        return po, mo, vo, vmo

    return step


def _one_float_dtype(p: Any, g: Any, m: Any, v: Any, vmax: Any) -> bool:
    """Whether the leaves are ``numpy.ndarray`` of one dtype, float32 or float64 (``vmax`` may be ``None``)."""
    if not (type(p) is np.ndarray and type(g) is np.ndarray and type(m) is np.ndarray and type(v) is np.ndarray):
        return False
    dt = p.dtype
    # a tuple comparison tests identity first: cheap for the usual (singleton) dtype objects
    return dt in _FLOATS and (g.dtype, m.dtype, v.dtype) == (dt, dt, dt) and (
        vmax is None or (type(vmax) is np.ndarray and vmax.dtype == dt))


def _kernel() -> Any:
    """The compiled entry point (wrapped by numba on the first call)."""
    if _state["kernel"] is None:
        _state["kernel"] = _compile()
    return _state["kernel"]


# ------------------------------------------------------------------------------------------------- numba kernels
# Plain functions here; _compile() wraps them with numba.njit (rebinding the module globals first, so that the
# entry points call the compiled loop). ``vmax is None`` in the loop is resolved at compile time (numba prunes the
# branch for a ``None`` argument).


def _adam_loop(p, g, m, v, vmax, po, mo, vo, vmo, c, maximize, l2, decoupled, from_end):
    """One pass over the flat leaves (module docstring); ``c`` = ``(decay, wd, w, beta2, 1 - beta2,
    bias_correction2_sqrt, eps, -step_size)`` in the leaves' dtype."""
    decay, wd, w, b2, omb2, bc2, eps, nss = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    for i in range(p.shape[0]):
        gi = -g[i] if maximize else g[i]
        pi = p[i]
        if l2:
            gi = gi + wd * pi
        if decoupled:
            pi = pi * decay
        mi = m[i]
        d = gi - mi
        mn = gi - d * w if from_end else d * w + mi
        vn = v[i] * b2 + (gi * gi) * omb2
        mo[i] = mn
        vo[i] = vn
        if vmax is not None:
            a = vmax[i]
            vn = a if (a >= vn) | (a != a) else vn  # np.maximum: the first operand on ties and when it is NaN
            vmo[i] = vn
        po[i] = (mn / (np.sqrt(vn) / bc2 + eps)) * nss + pi


def _adam_entry(p, g, m, v, vmax, po, mo, vo, vmo, c, maximize, l2, decoupled, from_end):
    """:func:`_adam_loop` on flat views of the leaves (``ravel`` is a view of a C-contiguous array, as the outputs,
    and a copy of any other input)."""
    if vmax is None:
        _adam_loop(p.ravel(), g.ravel(), m.ravel(), v.ravel(), None, po.ravel(), mo.ravel(), vo.ravel(), None, c,
                   maximize, l2, decoupled, from_end)
    else:
        _adam_loop(p.ravel(), g.ravel(), m.ravel(), v.ravel(), vmax.ravel(), po.ravel(), mo.ravel(), vo.ravel(),
                   vmo.ravel(), c, maximize, l2, decoupled, from_end)


def _compile() -> Any:
    """Import numba and wrap the kernels (compiled lazily per argument types, cached on disk)."""
    import numba

    g = globals()
    for name in ("_adam_loop", "_adam_entry"):
        g[name] = numba.njit(cache=True, error_model="numpy", boundscheck=False)(g[name])
    return g["_adam_entry"]
