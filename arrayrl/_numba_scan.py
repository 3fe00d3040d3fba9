"""Compiled CPU scan kernels (numba) behind the generic array-API value estimators: an optional accelerator.

The generic code (:mod:`arrayrl._scan`, :mod:`arrayrl.ops`, :mod:`arrayrl.value.functional`) stays the reference
and the fallback. Each ``try_*`` function below returns ``None`` whenever it does not apply (not plain
``numpy.ndarray`` inputs, a dtype other than float32/float64, mismatched shapes or dtypes, an empty array, numba
missing or disabled): the caller then runs the generic path, which also raises the proper errors. numba is imported
on the first call that could use it, never at ``import arrayrl``.

Recurrences (exact and serial: no truncation, no reassociation; a cut is a select, never a multiplication by a
mask, so a NaN or an infinity after a cut never reaches earlier steps):

* :func:`try_reverse_scan` ``(x, c, axis)``: ``y_{T-1} = x_{T-1}``, ``y_t = x_t + (0 if c_t == 0 else
  c_t y_{t+1})`` -- :func:`arrayrl._scan.reverse_discounted_scan_raw`.
* :func:`try_forward_scan` ``(g, c, axis)``: its adjoint, ``gx_0 = g_0``, ``gx_t = g_t + (0 if c_{t-1} == 0 else
  c_{t-1} gx_{t-1})`` -- ``_scan_adjoint`` of :mod:`arrayrl.ops` (the VJP of the scan with respect to ``x``).
* :func:`try_gae` (fused ``delta``, scan and value target in one pass):
  ``delta_t = r_t + g_t (0 if terminated_t else V'_t) - V_t``, ``c_t = 0 if done_t else g_t l_t``,
  ``A = scan(delta, c)``, ``target = A + V``.
* :func:`try_td_lambda` (fused, rolling gamma): ``V*_t = 0 if terminated_t else V'_t``,
  ``w_t = 1 if (done_t or t == T-1) else 1 - l_t``, ``x_t = r_t + g_t V*_t w_t``, ``c_t = 0 if done_t else
  g_t l_t``, ``G = scan(x, c)``.

Each value is computed with the same float operations in the same order and dtype as the generic code (a Python
float ``gamma`` is rounded to the dtype, ``gamma * lmbda`` and ``1 - lmbda`` of Python floats are taken in double
and then rounded, as the generic code does), so every elementwise term is bit-identical; only the scan's
summation order differs from the generic blocked scan (the kernels run the sequential loop itself).

Layouts (no transpose copy is ever made): every array ``[*B, T, *F]`` (time axis ``axis``) is viewed as
``[L, T, M]`` with ``L = prod(B)``, ``M = prod(F)`` (a C-contiguous reshape; non-contiguous inputs are copied once).

* ``M < _COLS_MIN_M`` (batch-major, TorchRL's ``[B, T, 1]``): the ``L * M`` lanes are scanned in blocks of
  ``_BLOCK = 4`` lanes, one register accumulator each, so four independent recurrences overlap their latency;
  the ``L * M mod 4`` lanes after the last full block (all of them for a single trajectory) run one lane alone
  (a repeated lane would quadruple the work at ``(1, T)``: measured 3x slower there).
* otherwise (time-major, e.g. ``[T, B]``): for each ``l`` and each chunk of ``_CHUNK`` columns the time loop runs
  outside and a contiguous (SIMD) loop over the columns inside, with the accumulators in an L1-sized buffer.

Threads (``prange`` over lane blocks or column chunks; numba's default thread count) are used only from
``_PAR_MIN_ELEMS`` (8M) elements, or when asked with ``parallel=True`` (``parallel=False`` forbids them). Measured
on the 2-core shared machine (``benchmarks/value.py --threads``): 1.6x faster at ``(1024, 256)`` batch-major with
the second core idle, 4-5x *slower* when it was busy; the time-major kernel has a single work item below
``_CHUNK`` columns. The scans are memory-bound, so threads are opt-in below that size.

Kernels are compiled lazily on first use, per dtype (float32, float64) and per argument kind (scalar or per-step
coefficients), with ``cache=True`` (on-disk cache in ``__pycache__``; a cold compile of everything is about 30 s
of CPU, a cached load well under a second). Each estimator has one compiled entry point taking plain arrays (numba
unboxes arrays in C; a namedtuple argument cost about 7 us more per call) that bundles them inside the compiled
code and branches to the driver :func:`_kind` chose. The cost of a call on small inputs is the Python wrapper
and the unboxing (about 10-15 us on an idle core).

Switches: ``ARRAYRL_DISABLE_NUMBA=1`` in the environment, or :func:`set_enabled(False) <set_enabled>` / the
:func:`generic_path` context manager, force the generic path.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import namedtuple
from typing import Any, Iterator

import numpy as np

from . import _pool

__all__ = [
    "available",
    "set_enabled",
    "generic_path",
    "try_reverse_scan",
    "try_forward_scan",
    "try_gae",
    "try_td_lambda",
]

_BLOCK = 4  # lanes per register block of the batch-major kernel (the kernel below is written for 4)
_CHUNK = 1024  # columns per tile of the time-major kernel (accumulators stay in L1)
_COLS_MIN_M = 16  # trailing size from which the time-major kernel is used
_PAR_MIN_ELEMS = 1 << 23  # threads from this many elements (benchmarks/value.py --threads; see the docstring)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_BOOL = np.dtype(np.bool_)

# Argument bundles. numba types a namedtuple by its class, so the overloads below pick each estimator's step at
# compile time. The coefficients ``g`` (gamma), ``gl`` (gamma * lmbda) and ``oml`` (1 - lmbda) are all scalars of
# the dtype or all ``[L, T, M]`` arrays (two compiled variants per estimator and dtype, see _coefs).
_Scan = namedtuple("_Scan", "x c")
_Adjoint = namedtuple("_Adjoint", "g c")
_Gae = namedtuple("_Gae", "g gl v nv r d tm")
_TdLambda = namedtuple("_TdLambda", "g gl oml nv r d tm")

_state: dict = {"enabled": None, "kernels": None}  # enabled: None = not decided yet (env var, import of numba)


# ------------------------------------------------------------------------------------------------------ switches


def available() -> bool:
    """Whether the numba path is on: numba importable, ``ARRAYRL_DISABLE_NUMBA`` unset, not :func:`set_enabled`
    ``(False)``. The first call imports numba (about 0.3 s) and compiles nothing."""
    if _state["enabled"] is None:
        if os.environ.get("ARRAYRL_DISABLE_NUMBA", "") not in ("", "0"):
            _state["enabled"] = False
        else:
            try:
                import numba  # noqa: F401
            except ImportError:
                _state["enabled"] = False
            else:
                _state["enabled"] = True
    return _state["enabled"]


def set_enabled(flag: bool | None) -> None:
    """``False``: force the generic path; ``True``: use numba (raises ``ImportError`` without it); ``None``:
    decide again from the environment on the next call."""
    if flag:
        import numba  # noqa: F401
    _state["enabled"] = None if flag is None else bool(flag)


@contextlib.contextmanager
def generic_path() -> Iterator[None]:
    """Context manager: the generic array-API path inside the block (tests, benchmarks)."""
    prev = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = prev


# --------------------------------------------------------------------------------------------------- entry points


def try_reverse_scan(x: Any, c: Any, axis: int = -1, *, parallel: bool | None = None) -> Any:
    """``reverse_discounted_scan_raw(x, c, axis)`` (see the module docstring), or ``None`` if not applicable."""
    lay = _layout((x, c), (), axis)
    if lay is None:
        return None
    (x3, c3), _, shape, L, T, M = lay
    out = _pool.empty((L, T, M), x3.dtype)
    _kernels()["scan"](_kind(L, T, M, parallel), x3, c3, out, L, T, M)
    return out.reshape(shape)


def try_forward_scan(g: Any, c: Any, axis: int = -1, *, parallel: bool | None = None) -> Any:
    """The scan's adjoint ``gx_t = g_t + c_{t-1} gx_{t-1}`` (``_scan_adjoint(xp, g, c, axis)`` of
    :mod:`arrayrl.ops`), or ``None`` if not applicable."""
    lay = _layout((g, c), (), axis)
    if lay is None:
        return None
    (g3, c3), _, shape, L, T, M = lay
    out = _pool.empty((L, T, M), g3.dtype)
    _kernels()["adjoint"](_kind(L, T, M, parallel), g3, c3, out, L, T, M)
    return out.reshape(shape)


def try_gae(gamma: Any, lmbda: Any, state_value: Any, next_state_value: Any, reward: Any, done: Any,
            terminated: Any, axis: int, *, parallel: bool | None = None) -> Any:
    """Fused GAE ``-> (advantage, value_target)``, or ``None`` if not applicable.

    Arguments as in :func:`arrayrl.value.functional.generalized_advantage_estimate` after its checks: ``gamma`` and
    ``lmbda`` are what ``_coef`` returns (a Python float, a 0-d array or an array of the values' shape, of their
    dtype), ``terminated`` is an array (not ``None``), ``axis`` the normalised time axis.
    """
    lay = _layout((state_value, next_state_value, reward), (done, terminated), axis)
    if lay is None:
        return None
    coefs = _coefs(gamma, lmbda, lay, oml=False)
    if coefs is None:
        return None
    (v, nv, r), (d, tm), shape, L, T, M = lay
    g, gl = coefs
    adv = _pool.empty((L, T, M), v.dtype)
    target = _pool.empty((L, T, M), v.dtype)
    _kernels()["gae"](_kind(L, T, M, parallel), g, gl, v, nv, r, d, tm, adv, target, L, T, M)
    return adv.reshape(shape), target.reshape(shape)


def try_td_lambda(gamma: Any, lmbda: Any, next_state_value: Any, reward: Any, done: Any, terminated: Any,
                  axis: int, *, parallel: bool | None = None) -> Any:
    """Fused TD(lambda) return (rolling gamma), or ``None`` if not applicable.

    Arguments as in :func:`arrayrl.value.functional.td_lambda_return_estimate` after its checks (see
    :func:`try_gae`); only for ``rolling_gamma is not False``.
    """
    lay = _layout((next_state_value, reward), (done, terminated), axis)
    if lay is None:
        return None
    coefs = _coefs(gamma, lmbda, lay, oml=True)
    if coefs is None:
        return None
    (nv, r), (d, tm), shape, L, T, M = lay
    g, gl, oml = coefs
    out = _pool.empty((L, T, M), r.dtype)
    _kernels()["td_lambda"](_kind(L, T, M, parallel), g, gl, oml, nv, r, d, tm, out, L, T, M)
    return out.reshape(shape)


# ------------------------------------------------------------------------------------------ argument preparation


def _view3(a: np.ndarray, L: int, T: int, M: int) -> np.ndarray:
    """A C-contiguous writeable ``[L, T, M]`` view of ``a`` (the kernels never write it). Non-contiguous or
    read-only inputs are copied once: numba compiles read-only arrays to code about 20 times slower (measured),
    and one variant per dtype keeps the compile time down."""
    flags = a.flags
    if not (flags.c_contiguous and flags.writeable):
        a = np.array(a, order="C")
    return a.reshape(L, T, M)


def _layout(floats: tuple, flags: tuple, axis: int) -> Any:
    """``(floats3, flags3, shape, L, T, M)`` or ``None``: the arrays as ``[L, T, M]`` views, if the path applies
    (plain ``numpy.ndarray`` inputs of one shape, floats of one dtype float32/float64, bool flags, a valid axis).

    When it applies, these are exactly the checks of the generic code's argument validation, which then passes."""
    x = floats[0]
    if type(x) is not np.ndarray or not available():
        return None
    shape, dt = x.shape, x.dtype
    if dt not in _FLOATS or x.size == 0:
        return None
    for a in floats:
        if type(a) is not np.ndarray or a.shape != shape or a.dtype != dt:
            return None
    for a in flags:
        if type(a) is not np.ndarray or a.shape != shape or a.dtype != _BOOL:
            return None
    nd = len(shape)
    if type(axis) is not int and (isinstance(axis, bool) or not isinstance(axis, np.integer)):
        return None
    if not -nd <= axis < nd:
        return None
    ax = int(axis) % nd
    L, T, M = math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1:])
    return (tuple(_view3(a, L, T, M) for a in floats), tuple(_view3(a, L, T, M) for a in flags), shape, L, T, M)


def _coefs(gamma: Any, lmbda: Any, lay: tuple, oml: bool) -> Any:
    """``(g, gl[, oml])`` = ``(gamma, gamma * lmbda[, 1 - lmbda])`` for the kernels, or ``None``.

    They are computed by the same NumPy expressions as the generic code (Python floats in double, arrays in the
    dtype), then rounded to the dtype: the kernels' elementwise terms are bit-identical to the generic ones. If any
    is per-step, all three are passed as ``[L, T, M]`` arrays (scalars filled in: one extra pass on this rare path,
    and two compiled variants per estimator instead of eight); otherwise all are scalars.
    """
    floats, _, shape, L, T, M = lay
    dt = floats[0].dtype
    if type(gamma) is float and type(lmbda) is float:  # the common case
        return (dt.type(gamma), dt.type(gamma * lmbda)) + ((dt.type(1.0 - lmbda),) if oml else ())
    for v in (gamma, lmbda):
        if not (isinstance(v, float) or (type(v) is np.ndarray and v.dtype == dt and v.shape in ((), shape))):
            return None
    coefs = [gamma, gamma * lmbda] + ([1.0 - lmbda] if oml else [])
    if all(np.ndim(v) == 0 for v in coefs):
        return tuple(dt.type(v) for v in coefs)
    return tuple(_view3(np.full(shape, v, dtype=dt) if np.ndim(v) == 0 else v, L, T, M) for v in coefs)


# -------------------------------------------------------------------------------------------------------- driver


def _kind(L: int, T: int, M: int, parallel: bool | None) -> int:
    """The driver for an ``[L, T, M]`` problem: 0 lanes, 1 lanes threaded, 2 columns, 3 columns threaded."""
    par = parallel if parallel is not None else L * T * M >= _PAR_MIN_ELEMS
    if M < _COLS_MIN_M:
        return 1 if par and L * M >= 2 * _BLOCK else 0
    return 3 if par and L * -(-M // _CHUNK) > 1 else 2


def _kernels() -> dict:
    if _state["kernels"] is None:
        _state["kernels"] = _compile()
    return _state["kernels"]


# ------------------------------------------------------------------------------------------------- numba kernels
# Plain functions here; _compile() registers the overloads and wraps these with numba.njit (rebinding the module
# globals first, so that calls between them resolve to the compiled versions).


def _at(a, l, t, m):
    """``a[l, t, m]`` for an ``[L, T, M]`` array, ``a`` for a scalar (resolved at compile time)."""
    raise NotImplementedError  # numba overload only


def _xc(a, l, t, m, T):
    """``(x, c, e)`` of step ``t``: the scanned term, the coefficient of the previous accumulator, and what the
    step's output needs besides the accumulator (GAE: ``V_t``, loaded once, before any store)."""
    raise NotImplementedError


def _emit(o, l, t, m, y, e):
    """Write the outputs of step ``t`` from the accumulator ``y`` and ``e`` of :func:`_xc`."""
    raise NotImplementedError


def _reverse(a):
    """``True`` for a reverse-time scan, ``False`` for the forward adjoint."""
    raise NotImplementedError


def _zero(x):
    """``0`` of ``x``'s float type."""
    raise NotImplementedError


def _one(x):
    """``1`` of ``x``'s float type."""
    raise NotImplementedError


def _step(x, c, acc, s):
    """``x + (0 if c == 0 else c acc)``; at the first step ``s == 0`` the carry is ignored: ``y = x``."""
    z = _zero(x)
    return x + (z if (c == z) | (s == 0) else c * acc)  # `|`, not `or`: a select, no branch (SIMD)


def _lanes_block(a, o, n0, T, M):
    """Lanes ``n0 .. n0+3`` (lane ``n`` is ``(l, m) = divmod(n, M)``), one register accumulator each: four
    independent recurrences overlap their latency. Every input of a step is loaded before its outputs are stored."""
    l0, m0 = n0 // M, n0 % M
    l1, m1 = (n0 + 1) // M, (n0 + 1) % M
    l2, m2 = (n0 + 2) // M, (n0 + 2) % M
    l3, m3 = (n0 + 3) // M, (n0 + 3) % M
    rev = _reverse(a)
    y0 = y1 = y2 = y3 = _zero(o[0][l0, 0, m0])
    for s in range(T):
        t = T - 1 - s if rev else s
        x0, c0, e0 = _xc(a, l0, t, m0, T)
        x1, c1, e1 = _xc(a, l1, t, m1, T)
        x2, c2, e2 = _xc(a, l2, t, m2, T)
        x3, c3, e3 = _xc(a, l3, t, m3, T)
        y0 = _step(x0, c0, y0, s)
        y1 = _step(x1, c1, y1, s)
        y2 = _step(x2, c2, y2, s)
        y3 = _step(x3, c3, y3, s)
        _emit(o, l0, t, m0, y0, e0)
        _emit(o, l1, t, m1, y1, e1)
        _emit(o, l2, t, m2, y2, e2)
        _emit(o, l3, t, m3, y3, e3)


def _lane_one(a, o, n, T, M):
    """Lane ``n`` alone (the lanes after the last full block; the whole work when ``L * M == 1``)."""
    l, m = n // M, n % M
    rev = _reverse(a)
    y = _zero(o[0][l, 0, m])
    for s in range(T):
        t = T - 1 - s if rev else s
        x, c, e = _xc(a, l, t, m, T)
        y = _step(x, c, y, s)
        _emit(o, l, t, m, y, e)


def _cols_item(a, o, i, T, M):
    """Item ``i = (l, chunk)``: the time loop outside, a contiguous loop over the chunk's columns inside."""
    nch = (M + _CHUNK - 1) // _CHUNK
    l, m0 = i // nch, (i % nch) * _CHUNK
    m1 = min(M, m0 + _CHUNK)
    rev = _reverse(a)
    acc = np.zeros(m1 - m0, dtype=o[0].dtype)
    for s in range(T):
        t = T - 1 - s if rev else s
        for m in range(m0, m1):
            x, c, e = _xc(a, l, t, m, T)
            y = _step(x, c, acc[m - m0], s)
            acc[m - m0] = y
            _emit(o, l, t, m, y, e)


def _lanes(a, o, N, T, M):
    nb = N // _BLOCK
    for b in range(nb):
        _lanes_block(a, o, _BLOCK * b, T, M)
    for n in range(_BLOCK * nb, N):
        _lane_one(a, o, n, T, M)


def _lanes_par(a, o, N, T, M):
    nb = N // _BLOCK
    for b in _prange(nb):
        _lanes_block(a, o, _BLOCK * b, T, M)
    for n in range(_BLOCK * nb, N):
        _lane_one(a, o, n, T, M)


def _cols(a, o, L, T, M):
    for i in range(L * ((M + _CHUNK - 1) // _CHUNK)):
        _cols_item(a, o, i, T, M)


def _cols_par(a, o, L, T, M):
    for i in _prange(L * ((M + _CHUNK - 1) // _CHUNK)):
        _cols_item(a, o, i, T, M)


_prange = range  # numba.prange once compiled


def _drive(kind, a, o, L, T, M):
    """Run the driver ``kind`` (see :func:`_kind`) on the bundle ``a``, writing ``o``."""
    if kind == 0:
        _lanes(a, o, L * M, T, M)
    elif kind == 1:
        _lanes_par(a, o, L * M, T, M)
    elif kind == 2:
        _cols(a, o, L, T, M)
    else:
        _cols_par(a, o, L, T, M)


# ---- entry points: plain array arguments (numba unboxes arrays in C; a namedtuple argument costs ~7 us more per
# call), bundled inside the compiled code


def _scan_entry(kind, x, c, out, L, T, M):
    _drive(kind, _Scan(x, c), (out,), L, T, M)


def _adjoint_entry(kind, g, c, out, L, T, M):
    _drive(kind, _Adjoint(g, c), (out,), L, T, M)


def _gae_entry(kind, g, gl, v, nv, r, d, tm, adv, target, L, T, M):
    _drive(kind, _Gae(g, gl, v, nv, r, d, tm), (adv, target), L, T, M)


def _td_lambda_entry(kind, g, gl, oml, nv, r, d, tm, out, L, T, M):
    _drive(kind, _TdLambda(g, gl, oml, nv, r, d, tm), (out,), L, T, M)


# ---- estimator steps (selected by the bundle's class in the _xc/_emit/_reverse overloads)


def _scan_xc(a, l, t, m, T):
    x = a.x[l, t, m]
    return x, a.c[l, t, m], x  # e unused


def _adjoint_xc(a, l, t, m, T):
    g = a.g[l, t, m]
    return g, a.c[l, max(t - 1, 0), m], g  # c at t = 0 is never used (first step); e unused


# every operand is loaded unconditionally and then selected, so that LLVM can vectorize the column loop


def _gae_xc(a, l, t, m, T):
    r, nv, gl, v = a.r[l, t, m], a.nv[l, t, m], _at(a.gl, l, t, m), a.v[l, t, m]
    z = _zero(r)
    vstar = z if a.tm[l, t, m] else nv
    x = r + _at(a.g, l, t, m) * vstar - v
    return x, (z if a.d[l, t, m] else gl), v


def _td_lambda_xc(a, l, t, m, T):
    r, nv, gl, oml = a.r[l, t, m], a.nv[l, t, m], _at(a.gl, l, t, m), _at(a.oml, l, t, m)
    z = _zero(r)
    d = a.d[l, t, m]
    vstar = z if a.tm[l, t, m] else nv
    w = _one(z) if d | (t == T - 1) else oml
    x = r + _at(a.g, l, t, m) * vstar * w
    return x, (z if d else gl), x  # e unused


def _emit1(o, l, t, m, y, e):
    o[0][l, t, m] = y


def _emit_gae(o, l, t, m, y, e):
    o[0][l, t, m] = y
    o[1][l, t, m] = y + e


# bundle class -> (its step function, whether it scans backwards in time); the emitter is chosen by the number of
# outputs (_ov_emit)
_STEPS = {_Scan: ("_scan_xc", True), _Adjoint: ("_adjoint_xc", False), _Gae: ("_gae_xc", True),
          _TdLambda: ("_td_lambda_xc", True)}
_DRIVERS = ("_lanes_block", "_lane_one", "_cols_item", "_lanes", "_lanes_par", "_cols", "_cols_par", "_drive")
_ENTRIES = ("_scan_entry", "_adjoint_entry", "_gae_entry", "_td_lambda_entry")


def _compile() -> dict:
    """Import numba, register the compile-time overloads, wrap the kernels (lazily compiled, cached on disk)."""
    import numba
    from numba import types
    from numba.extending import intrinsic, overload

    g = globals()

    # the estimator's step functions are compiled as functions (not overload bodies) so that LLVM inlines them
    # into the drivers: measured 25x faster (no by-value copy and refcounts of the bundle per step)
    @overload(_xc)
    def _ov_xc(a, l, t, m, T):
        fn = g[_STEPS[a.instance_class][0]]
        return lambda a, l, t, m, T: fn(a, l, t, m, T)

    @overload(_emit)
    def _ov_emit(o, l, t, m, y, e):
        # the emitter is chosen by the number of outputs (GAE writes two)
        fn = g["_emit_gae" if len(o.types) == 2 else "_emit1"]
        return lambda o, l, t, m, y, e: fn(o, l, t, m, y, e)

    @overload(_reverse)
    def _ov_reverse(a):
        rev = _STEPS[a.instance_class][1]
        return lambda a: rev

    # typed constants, emitted as LLVM constants (a NumPy scalar or a numba type held in a closure would be
    # unpickled at every call: measured 20-300x slower)
    def constant(value):
        def typer(typingctx, x):
            return x(x), lambda context, builder, sig, args: context.get_constant(sig.return_type, value)
        return typer

    g["_zero"] = intrinsic(constant(0))
    g["_one"] = intrinsic(constant(1))

    @overload(_at)
    def _ov_at(a, l, t, m):
        if isinstance(a, types.Array):
            return lambda a, l, t, m: a[l, t, m]
        return lambda a, l, t, m: a

    g["_prange"] = numba.prange
    for name in ("_step", "_scan_xc", "_adjoint_xc", "_gae_xc", "_td_lambda_xc", "_emit1", "_emit_gae"):
        g[name] = numba.njit(cache=True)(g[name])
    for name in _DRIVERS + _ENTRIES:
        par = name.endswith("_par")
        g[name] = numba.njit(cache=True, parallel=par, error_model="numpy", boundscheck=False)(g[name])
    return {"scan": g["_scan_entry"], "adjoint": g["_adjoint_entry"], "gae": g["_gae_entry"],
            "td_lambda": g["_td_lambda_entry"]}
