"""CuPy RawKernels for the reverse discounted scan and the fused estimators: an optional GPU accelerator.

The generic array-API code (:mod:`arrayrl._scan`, :mod:`arrayrl.ops`, :mod:`arrayrl.value.functional`) stays the
reference and the fallback. The entry points mirror :mod:`arrayrl._numba_scan` (same arguments, same contract):
each ``try_*`` returns ``None`` when it does not apply (not CuPy arrays, a dtype other than float32/float64,
mismatched shapes or dtypes, an empty array, CuPy or a GPU missing, the path switched off), and the caller then runs
the generic code, which also raises the proper errors. :func:`dispatch` is the one hook for the generic code.
CuPy is imported on the first call that could use it; each kernel is compiled on its first use (CuPy caches the
binaries on disk).

Recurrences (exact: no truncation of the horizon; a cut is a select, never a multiplication by a mask, so a NaN or
an infinity after ``done`` never reaches earlier steps):

* ``reverse_scan(x, c)``: ``y_{T-1} = x_{T-1}``, ``y_t = x_t + (0 if c_t == 0 else c_t y_{t+1})``;
* ``forward_scan(g, c)`` (its adjoint): ``gx_0 = g_0``, ``gx_t = g_t + (0 if c_{t-1} == 0 else c_{t-1} gx_{t-1})``,
  run as a reverse scan of the reversed index;
* ``gae``: ``delta_t = r_t + g_t (0 if terminated_t else V'_t) - V_t``, ``c_t = 0 if done_t else g_t l_t``,
  ``A = scan(delta, c)``, ``target = A + V``;
* ``td_lambda`` (rolling gamma): ``V*_t = 0 if terminated_t else V'_t``, ``w_t = 1 if (done_t or t = T-1) else
  1 - l_t``, ``x_t = r_t + g_t V*_t w_t``, ``c_t = 0 if done_t else g_t l_t``, ``G = scan(x, c)``.

The elementwise terms use the same float operations in the same order as the generic code, compiled with
``--fmad=false`` (no fused multiply-add contraction), so they are bit-identical; only the scan's summation order
differs (the parallel scans reassociate the affine maps).

Layouts: every array ``[*B, T, *F]`` (time axis ``axis``) is viewed as ``[L, T, M]`` (``L = prod(B)``,
``M = prod(F)``; C-contiguous, non-contiguous inputs are copied once).

* ``M == 1`` (batch-major rows, TorchRL's ``[B, T, 1]``): one warp per row segment. A step is the affine map
  ``y -> x + c y`` with a cut flag (a triple ``(a, b, cut)``; composing with a cut keeps the cut side only). Each
  lane composes ``_K`` consecutive steps, the warp combines the lanes' triples with a shuffle scan, then every lane
  re-runs its steps from its incoming value and writes them; tiles of ``32 _K`` steps are processed from the end of
  the row, the carry passed from tile to tile.
* long rows with few of them (``B = 1``, long ``T``): the row is cut into segments, one warp each. Pass 1 writes
  each segment's composed triple, pass 2 scans the triples of a row (the same warp kernel, one segment), pass 3
  re-runs every segment from its carry and writes the outputs.
* ``M > 1`` (time-major, e.g. ``[T, B]``): one thread per column ``(l, m)``, a sequential loop over time;
  neighbouring threads read neighbouring addresses (coalesced).

Switches: ``ARRAYRL_DISABLE_CUPY_KERNELS=1`` in the environment, :func:`set_enabled(False) <set_enabled>` or the
:func:`generic_path` context manager force the generic path.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, Iterator

import numpy as np

__all__ = [
    "available",
    "set_enabled",
    "generic_path",
    "dispatch",
    "try_reverse_scan",
    "try_forward_scan",
    "try_gae",
    "try_td_lambda",
]

_K = 4  # steps per lane in the warp kernel (a tile is 32 * _K steps)
_TILE = 32 * _K
_WARPS_PER_BLOCK = 4
_TARGET_WARPS = 8192  # split rows into segments until about this many warps run (fills an H100/H200)
_COL_THREADS = 256

_MODES = {"scan": 0, "adjoint": 1, "gae": 2, "td_lambda": 3, "carries": 4}
_state: dict = {"enabled": None, "modules": {}}


# ------------------------------------------------------------------------------------------------------ switches


def available() -> bool:
    """Whether the CuPy path is on: CuPy importable with a GPU, ``ARRAYRL_DISABLE_CUPY_KERNELS`` unset, not
    :func:`set_enabled` ``(False)``."""
    if _state["enabled"] is None:
        if os.environ.get("ARRAYRL_DISABLE_CUPY_KERNELS", "") not in ("", "0"):
            _state["enabled"] = False
        else:
            try:
                import cupy

                _state["enabled"] = cupy.cuda.runtime.getDeviceCount() > 0
            except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: the generic path
                _state["enabled"] = False
    return _state["enabled"]


def set_enabled(flag: bool | None) -> None:
    """``False``: force the generic path; ``True``: use the kernels; ``None``: decide again on the next call."""
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


def dispatch(name: str, *args: Any, **kwargs: Any) -> Any:
    """The hook of the generic code: ``try_<name>(*args, **kwargs)`` (``name`` one of ``"reverse_scan"``,
    ``"forward_scan"``, ``"gae"``, ``"td_lambda"``), or ``None`` when the CuPy path does not apply.

    Cheap on other backends: one type check before anything is imported."""
    first = args[0] if name in ("reverse_scan", "forward_scan") else args[2]
    if type(first).__module__.split(".")[0] != "cupy" or not available():
        return None
    return _ENTRY[name](*args, **kwargs)


# ------------------------------------------------------------------------------------------------------ CUDA source

_SOURCE = r"""
// REAL, MODE and COEF_ARRAY are defined by the compile options.
#define FULL_MASK 0xffffffffu
typedef long long idx_t;

struct Aff { REAL a; REAL b; int cut; };  // y -> cut ? b : b + a * y

__device__ __forceinline__ Aff identity() { Aff r; r.a = (REAL)1; r.b = (REAL)0; r.cut = 0; return r; }

// f after g (g is applied first): a cut in f hides g entirely (a select: NaN behind a cut never leaks)
__device__ __forceinline__ Aff compose(Aff f, Aff g) {
    Aff r;
    r.a = f.cut ? f.a : f.a * g.a;
    r.b = f.cut ? f.b : f.b + f.a * g.b;
    r.cut = f.cut | g.cut;
    return r;
}

__device__ __forceinline__ REAL apply(Aff f, REAL y) { return f.cut ? f.b : f.b + f.a * y; }

__device__ __forceinline__ Aff shfl_down(Aff v, int off) {
    Aff r;
    r.a = __shfl_down_sync(FULL_MASK, v.a, off);
    r.b = __shfl_down_sync(FULL_MASK, v.b, off);
    r.cut = __shfl_down_sync(FULL_MASK, v.cut, off);
    return r;
}

__device__ __forceinline__ Aff shfl0(Aff v) {
    Aff r;
    r.a = __shfl_sync(FULL_MASK, v.a, 0);
    r.b = __shfl_sync(FULL_MASK, v.b, 0);
    r.cut = __shfl_sync(FULL_MASK, v.cut, 0);
    return r;
}

#if COEF_ARRAY
#define COEF(p, s, i) (p[i])
#else
#define COEF(p, s, i) (s)
#endif

#define ARGS const REAL* __restrict__ a0, const REAL* __restrict__ a1, const REAL* __restrict__ a2, \
             const bool* __restrict__ f0, const bool* __restrict__ f1, const unsigned char* __restrict__ f2, \
             const REAL* __restrict__ cg, const REAL* __restrict__ cgl, const REAL* __restrict__ coml, \
             REAL sg, REAL sgl, REAL soml, REAL* __restrict__ o0, REAL* __restrict__ o1, \
             idx_t L, idx_t T, idx_t M
#define PASS a0, a1, a2, f0, f1, f2, cg, cgl, coml, sg, sgl, soml, o0, o1, L, T, M

// Step u (0 .. T-1, scanned from T-1 down to 0) of row l, column m: the term x, the coefficient c and the cut.
__device__ __forceinline__ void step(ARGS, idx_t l, idx_t u, idx_t m, REAL* x, REAL* c, int* cut) {
    const REAL zero = (REAL)0;
#if MODE == 0   /* reverse scan: a0 = x, a1 = c */
    idx_t i = (l * T + u) * M + m;
    *x = a0[i];
    *c = (u == T - 1) ? zero : a1[i];
#elif MODE == 1 /* adjoint (forward scan) of step t = T-1-u: a0 = g, a1 = c (c_{t-1}) */
    idx_t t = T - 1 - u;
    *x = a0[(l * T + t) * M + m];
    *c = (t == 0) ? zero : a1[(l * T + t - 1) * M + m];
#elif MODE == 2 /* GAE: a0 = V, a1 = V', a2 = r, f0 = done, f1 = terminated */
    idx_t i = (l * T + u) * M + m;
    REAL vstar = f1[i] ? zero : a1[i];
    *x = a2[i] + COEF(cg, sg, i) * vstar - a0[i];
    *c = (f0[i] || u == T - 1) ? zero : COEF(cgl, sgl, i);
#elif MODE == 3 /* TD(lambda): a1 = V', a2 = r, f0 = done, f1 = terminated */
    idx_t i = (l * T + u) * M + m;
    bool d = f0[i];
    REAL vstar = f1[i] ? zero : a1[i];
    REAL w = (d || u == T - 1) ? (REAL)1 : COEF(coml, soml, i);
    *x = a2[i] + COEF(cg, sg, i) * vstar * w;
    *c = (d || u == T - 1) ? zero : COEF(cgl, sgl, i);
#else           /* carries: the segments' triples (a0 = a, a1 = b, f2 = cut), M == 1 */
    idx_t i = l * T + u;
    *x = a1[i];
    *c = (u == T - 1 || f2[i]) ? zero : a0[i];
#endif
    *cut = (*c == zero);
}

// Write the result y of step u.
__device__ __forceinline__ void emit(ARGS, idx_t l, idx_t u, idx_t m, REAL y) {
#if MODE == 1
    o0[(l * T + (T - 1 - u)) * M + m] = y;
#elif MODE == 2
    idx_t i = (l * T + u) * M + m;
    o0[i] = y;
    o1[i] = y + a0[i];
#elif MODE == 4
    if (u > 0) o0[l * T + u - 1] = y;  // the carry into segment u-1 is the value at the start of segment u
#else
    o0[(l * T + u) * M + m] = y;
#endif
}

// One warp scans steps [u0, u1) of row l (M == 1), from the carry y_{u1} (ignored when u1 == T: a forced cut).
// WRITE: emit every value; otherwise store the segment's composed triple in agg[k] (o0 = a, o1 = b, cutp).
template <bool WRITE>
__device__ void warp_segment(ARGS, idx_t l, idx_t u0, idx_t u1, REAL carry, unsigned char* cutp, idx_t k) {
    const int lane = threadIdx.x & 31;
    Aff seg = identity();
    for (idx_t end = u1; end > u0; end -= TILE) {
        idx_t base = end - TILE + (idx_t)lane * K;
        REAL xs[K], cs[K];
        int cuts[K];
        Aff loc = identity();
#pragma unroll
        for (int j = K - 1; j >= 0; --j) {
            idx_t u = base + j;
            if (u >= u0 && u < end) {
                step(PASS, l, u, 0, &xs[j], &cs[j], &cuts[j]);
                Aff e; e.a = cs[j]; e.b = xs[j]; e.cut = cuts[j];
                loc = compose(e, loc);
            }
        }
        Aff S = loc;  // suffix scan: S of lane j composes lanes j .. 31
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            Aff o = shfl_down(S, off);
            if (lane + off < 32) S = compose(S, o);
        }
        Aff next = shfl_down(S, 1);
        Aff tile = shfl0(S);
        if (WRITE) {
            REAL y = (lane == 31) ? carry : apply(next, carry);
#pragma unroll
            for (int j = K - 1; j >= 0; --j) {
                idx_t u = base + j;
                if (u >= u0 && u < end) {
                    y = xs[j] + (cuts[j] ? (REAL)0 : cs[j] * y);
                    emit(PASS, l, u, 0, y);
                }
            }
            carry = apply(tile, carry);
        } else {
            seg = compose(tile, seg);
        }
    }
    if (!WRITE && lane == 0) { o0[k] = seg.a; o1[k] = seg.b; cutp[k] = (unsigned char)seg.cut; }
}

// Pass 1 (several segments per row): the composed triple of segment s of row l -> agg[l * nseg + s].
extern "C" __global__ void seg_aggregate(ARGS, idx_t seg, idx_t nseg, unsigned char* cutp) {
    idx_t w = ((idx_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (w >= L * nseg) return;  // whole warps return together
    idx_t l = w / nseg, s = w % nseg;
    idx_t u0 = s * seg, u1 = min(u0 + seg, T);
    warp_segment<false>(PASS, l, u0, u1, (REAL)0, cutp, w);
}

// Pass 3 (or the only pass): segment s of row l from its carry (carries[l * nseg + s]; none for the last one).
extern "C" __global__ void seg_scan(ARGS, idx_t seg, idx_t nseg, const REAL* __restrict__ carries) {
    idx_t w = ((idx_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (w >= L * nseg) return;
    idx_t l = w / nseg, s = w % nseg;
    idx_t u0 = s * seg, u1 = min(u0 + seg, T);
    REAL carry = (s + 1 < nseg) ? carries[w] : (REAL)0;
    warp_segment<true>(PASS, l, u0, u1, carry, (unsigned char*)0, 0);
}

// Time-major layout: one thread per column (l, m), steps from T-1 down to 0.
extern "C" __global__ void col_scan(ARGS) {
    idx_t n = (idx_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= L * M) return;
    idx_t l = n / M, m = n % M;
    REAL y = (REAL)0, x, c;
    int cut;
    for (idx_t u = T - 1; u >= 0; --u) {
        step(PASS, l, u, m, &x, &c, &cut);
        y = x + (cut ? (REAL)0 : c * y);
        emit(PASS, l, u, m, y);
    }
}
"""


def _module(dtype: np.dtype, mode: str, coef_array: bool) -> Any:
    """The compiled module of one dtype, mode and coefficient kind (compiled on first use, then cached)."""
    key = (dtype.name, mode, coef_array)
    mod = _state["modules"].get(key)
    if mod is None:
        import cupy

        real = "float" if dtype == np.float32 else "double"
        options = ("--fmad=false", f"-DREAL={real}", f"-DMODE={_MODES[mode]}",
                   f"-DCOEF_ARRAY={int(coef_array)}", f"-DK={_K}", f"-DTILE={_TILE}")
        mod = _state["modules"][key] = cupy.RawModule(code=_SOURCE, options=options)
    return mod


# ------------------------------------------------------------------------------------------------------ driver

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _layout(floats: tuple, flags: tuple, axis: Any) -> Any:
    """``(floats3, flags3, shape, L, T, M)`` (``[L, T, M]`` C-contiguous views) or ``None`` if the path does not
    apply."""
    import cupy

    x = floats[0]
    if type(x) is not cupy.ndarray or x.dtype not in _FLOATS:
        return None
    shape = x.shape
    for a in floats[1:] + flags:
        if type(a) is not cupy.ndarray or a.shape != shape or a.device != x.device:
            return None
    if any(a.dtype != x.dtype for a in floats[1:]) or any(a.dtype != np.bool_ for a in flags):
        return None
    if x.ndim == 0 or x.size == 0 or isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        return None
    if not -x.ndim <= axis < x.ndim:
        return None
    ax = int(axis) % x.ndim
    L, T, M = math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1:])
    if L * T * M >= 2**62:
        return None
    view = lambda a: cupy.ascontiguousarray(a).reshape(L, T, M)  # noqa: E731
    return tuple(map(view, floats)), tuple(map(view, flags)), shape, L, T, M


def _coefs(gamma: Any, lmbda: Any, lay: tuple) -> Any:
    """``(coef arrays or None, scalars)`` for ``gamma``, ``gamma * lmbda`` and ``1 - lmbda``, computed as the
    generic code does (Python floats in double, arrays in the dtype), then rounded to the dtype; ``None`` if a
    coefficient is of another kind (the generic path then handles it)."""
    import cupy

    floats, _, shape, L, T, M = lay
    dt = floats[0].dtype
    for v in (gamma, lmbda):
        if not (isinstance(v, float) or (type(v) is cupy.ndarray and v.dtype == dt and v.shape in ((), shape))):
            return None
    coefs = [gamma, gamma * lmbda, 1.0 - lmbda]
    if all(isinstance(v, float) for v in coefs):
        return None, tuple(dt.type(v) for v in coefs)
    arrays = tuple(cupy.ascontiguousarray(cupy.broadcast_to(cupy.asarray(v, dtype=dt), shape)).reshape(L, T, M)
                   for v in coefs)
    return arrays, tuple(dt.type(0) for _ in coefs)


def _segments(L: int, T: int) -> tuple[int, int]:
    """``(segment length, segments per row)`` of the warp kernel: whole rows when there are enough of them,
    otherwise segments of whole tiles, about :data:`_TARGET_WARPS` warps in all."""
    nseg = max(1, min(-(-T // _TILE), -(-_TARGET_WARPS // L)))
    seg = -(-T // nseg)
    seg = -(-seg // _TILE) * _TILE
    return seg, -(-T // seg)


def _run(mode: str, floats: tuple, flags: tuple, coefs: Any, outs: tuple, L: int, T: int, M: int) -> None:
    """Launch the kernels of ``mode`` on ``[L, T, M]`` arrays (writes ``outs``)."""
    import cupy

    dt = outs[0].dtype
    arrays, scalars = coefs if coefs is not None else (None, (dt.type(0),) * 3)
    dummy = outs[0]
    a = list(floats) + [dummy] * (3 - len(floats))
    f = list(flags) + [cupy.zeros((1,), dtype=cupy.bool_)] * (2 - len(flags))
    cga = list(arrays) if arrays is not None else [dummy] * 3
    o = list(outs) + [dummy] * (2 - len(outs))
    extra_flag = floats[2] if mode == "carries" else cupy.zeros((1,), dtype=cupy.uint8)
    args = [*a, *f, extra_flag, *cga, *scalars, *o, np.int64(L), np.int64(T), np.int64(M)]
    mod = _module(dt, mode, arrays is not None)
    if M > 1:
        grid = (-(-(L * M) // _COL_THREADS),)
        mod.get_function("col_scan")(grid, (_COL_THREADS,), tuple(args))
        return
    seg, nseg = _segments(L, T)
    block = (32 * _WARPS_PER_BLOCK,)
    grid = (-(-(L * nseg) // _WARPS_PER_BLOCK),)
    carries = dummy
    if nseg > 1:
        agg_a = cupy.empty((L, nseg), dtype=dt)
        agg_b = cupy.empty((L, nseg), dtype=dt)
        agg_cut = cupy.empty((L, nseg), dtype=cupy.uint8)
        args1 = list(args)
        args1[12], args1[13] = agg_a, agg_b  # o0, o1 receive the triples
        mod.get_function("seg_aggregate")(grid, block, tuple(args1) + (np.int64(seg), np.int64(nseg), agg_cut))
        carries = cupy.empty((L, nseg), dtype=dt)
        _run("carries", (agg_a, agg_b, agg_cut), (), None, (carries,), L, nseg, 1)
    mod.get_function("seg_scan")(grid, block, tuple(args) + (np.int64(seg), np.int64(nseg), carries))


# --------------------------------------------------------------------------------------------------- entry points


def try_reverse_scan(x: Any, c: Any, axis: int = -1) -> Any:
    """``reverse_discounted_scan_raw(x, c, axis)`` on CuPy arrays, or ``None`` if not applicable."""
    lay = _layout((x, c), (), axis)
    if lay is None:
        return None
    (x3, c3), _, shape, L, T, M = lay
    import cupy

    out = cupy.empty((L, T, M), dtype=x3.dtype)
    _run("scan", (x3, c3), (), None, (out,), L, T, M)
    return out.reshape(shape)


def try_forward_scan(g: Any, c: Any, axis: int = -1) -> Any:
    """The scan's adjoint ``gx_t = g_t + c_{t-1} gx_{t-1}`` (``_scan_adjoint`` of :mod:`arrayrl.ops`) on CuPy
    arrays, or ``None`` if not applicable."""
    lay = _layout((g, c), (), axis)
    if lay is None:
        return None
    (g3, c3), _, shape, L, T, M = lay
    import cupy

    out = cupy.empty((L, T, M), dtype=g3.dtype)
    _run("adjoint", (g3, c3), (), None, (out,), L, T, M)
    return out.reshape(shape)


def try_gae(gamma: Any, lmbda: Any, state_value: Any, next_state_value: Any, reward: Any, done: Any,
            terminated: Any, axis: int) -> Any:
    """Fused GAE ``-> (advantage, value_target)`` on CuPy arrays, or ``None`` if not applicable (arguments as
    :func:`arrayrl._numba_scan.try_gae`)."""
    lay = _layout((state_value, next_state_value, reward), (done, terminated), axis)
    if lay is None:
        return None
    coefs = _coefs(gamma, lmbda, lay)
    if coefs is None:
        return None
    floats, flags, shape, L, T, M = lay
    import cupy

    adv = cupy.empty((L, T, M), dtype=floats[0].dtype)
    target = cupy.empty_like(adv)
    _run("gae", floats, flags, coefs, (adv, target), L, T, M)
    return adv.reshape(shape), target.reshape(shape)


def try_td_lambda(gamma: Any, lmbda: Any, next_state_value: Any, reward: Any, done: Any, terminated: Any,
                  axis: int) -> Any:
    """Fused TD(lambda) return (rolling gamma) on CuPy arrays, or ``None`` if not applicable (arguments as
    :func:`arrayrl._numba_scan.try_td_lambda`)."""
    lay = _layout((next_state_value, next_state_value, reward), (done, terminated), axis)
    if lay is None:
        return None
    coefs = _coefs(gamma, lmbda, lay)
    if coefs is None:
        return None
    floats, flags, shape, L, T, M = lay
    import cupy

    out = cupy.empty((L, T, M), dtype=floats[0].dtype)
    _run("td_lambda", floats, flags, coefs, (out,), L, T, M)
    return out.reshape(shape)


_ENTRY: dict[str, Callable[..., Any]] = {"reverse_scan": try_reverse_scan, "forward_scan": try_forward_scan,
                                         "gae": try_gae, "td_lambda": try_td_lambda}
