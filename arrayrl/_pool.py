"""A per-thread pool of large NumPy buffers for arrayrl's own outputs and cotangents (on by default).

Why: a tape over NumPy allocates a fresh temporary for every op and every cotangent. glibc serves blocks above its
mmap threshold (128 KiB initially) with ``mmap`` and unmaps them when they are freed, so every training step
page-faults its big temporaries in again: a 4096 x 64 float32 activation is 1 MiB, 256 page faults, and a DQN
update at batch 4096 took 1792 faults per call. :func:`arrayrl.autodiff.tune_allocator` (``mallopt``) hides this
but changes the allocator of the whole process (every library in it), keeps up to 512 MiB and takes transparent
huge pages away from big arrays. The pool fixes it inside arrayrl only: the NumPy kernels of arrayrl (taped
elementwise ops and matrix products, the fused primitives of :mod:`arrayrl.ops`, the backward walk's
accumulations) write into buffers taken from here with ``out=``, and a buffer is handed out again only once
nothing else refers to it.

Rules:

* **Free means unreferenced.** A pooled buffer is handed out again only when ``sys.getrefcount`` shows that the
  pool's own list holds the only reference. Every view of an ndarray (slices, reshapes, ``.T``, ``.view``, a
  ``memoryview``, a DLPack capsule, a torch tensor from ``torch.from_numpy``) keeps a reference to its base, so a
  buffer is never reused while a result or any view of it is alive. (A *weak* reference does not count: don't keep
  pooled results through ``weakref`` only.) Nothing is ever returned to the pool explicitly.
* **Big blocks only**: outputs of at least :data:`MIN_BYTES` (128 KiB, glibc's initial mmap threshold; smaller
  blocks come from the heap and cost nothing to reallocate).
* **Byte cap** per thread (:data:`DEFAULT_MAX_BYTES`, 256 MiB, or ``set_buffer_pool(max_bytes=...)``, or the
  environment variable ``ARRAYRL_BUFFER_POOL_MAX_MB``). A request that would pass the cap first evicts free
  buffers (oldest shape first); if that is not enough, the new array is simply not pooled.
* **Per thread** (``threading.local``): a thread only reuses buffers it allocated; an array passed to another
  thread stays referenced there, hence busy.
* **Only where reference counts tell**: off on free-threaded CPython (``sys._is_gil_enabled() is False``, where
  another thread may take a reference between the check and the reuse) and on other interpreters (PyPy).
* **Switchable**: ``set_buffer_pool(False)`` or ``ARRAYRL_BUFFER_POOL=0`` at import: every kernel then allocates
  fresh arrays, with bit-identical values (the same NumPy loops run, only the output memory differs). The pool
  only ever writes NumPy arrays that are C-contiguous, of one dtype, and asked for by arrayrl's kernels.

Entry points for kernels: :func:`empty` (a buffer to fill), :func:`matmul` (``np.matmul`` into a buffer),
:func:`elementwise` (a NumPy ufunc writing into a buffer, with a fallback for every other input), :func:`stack`,
:func:`concat` and :func:`clip` (``np.stack``/``np.concatenate``/``np.clip`` into a buffer).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import threading
from typing import Any, Callable, Iterator

import numpy as np

__all__ = [
    "MIN_BYTES",
    "DEFAULT_MAX_BYTES",
    "supported",
    "set_buffer_pool",
    "buffer_pool_enabled",
    "buffer_pool",
    "buffer_pool_stats",
    "clear_buffer_pool",
    "empty",
    "xp_empty",
    "matmul",
    "elementwise",
    "stack",
    "concat",
    "clip",
]

#: smallest pooled block (bytes): glibc's initial mmap threshold
MIN_BYTES = 128 * 1024
#: default byte cap of each thread's pool
DEFAULT_MAX_BYTES = 256 * 1024 * 1024

_ENV = "ARRAYRL_BUFFER_POOL"
_ENV_MAX = "ARRAYRL_BUFFER_POOL_MAX_MB"
_ND = np.ndarray


def _refs_at(bufs: list, i: int) -> int:
    """The reference count of ``bufs[i]`` seen from here (the list's reference, the call's temporary...)."""
    return sys.getrefcount(bufs[i])


#: what :func:`_refs_at` reports for an object held by the pool's list only (calibrated, not assumed)
_FREE_REFS = _refs_at([object()], 0)


def supported() -> bool:
    """Whether reference counts prove a buffer free on this interpreter: CPython with the GIL."""
    if platform.python_implementation() != "CPython":
        return False
    gil = getattr(sys, "_is_gil_enabled", None)
    return gil is None or bool(gil())


class _ThreadPool(threading.local):
    """One thread's pool: ``free[(shape, dtype)]`` lists the buffers of that kind (busy or not), oldest first."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.free: dict[tuple, list] = {}
        self.held = 0
        self.hits = 0
        self.misses = 0
        self.generation = _config["generation"]

    def evict(self, need: int) -> bool:
        """Drop unreferenced buffers, oldest kind first, until ``need`` more bytes fit under the cap."""
        cap = _config["max_bytes"]
        for key in list(self.free):
            bufs = self.free[key]
            i = 0
            while i < len(bufs) and self.held + need > cap:
                if _refs_at(bufs, i) == _FREE_REFS:
                    self.held -= bufs.pop(i).nbytes
                else:
                    i += 1
            if not bufs:
                del self.free[key]
            if self.held + need <= cap:
                return True
        return self.held + need <= cap


_config: dict = {"max_bytes": DEFAULT_MAX_BYTES, "generation": 0}
_enabled = False  # read on every kernel call (a module global: one lookup)
_local = _ThreadPool()


def _take(shape: tuple, dtype: np.dtype, nbytes: int) -> np.ndarray:
    """An unreferenced pooled buffer of this shape and dtype, or a new one (pooled if it fits under the cap)."""
    st = _local
    if st.generation != _config["generation"]:
        st.reset()  # the pool was cleared, resized or switched off and on since this thread last used it
    key = (shape, dtype)
    bufs = st.free.get(key)
    if bufs is not None:
        for i in range(len(bufs)):
            if _refs_at(bufs, i) == _FREE_REFS:
                st.hits += 1
                return bufs[i]
    st.misses += 1
    buf = np.empty(shape, dtype)
    if st.held + nbytes > _config["max_bytes"] and not st.evict(nbytes):
        return buf
    if bufs is None:
        bufs = st.free[key] = []
    bufs.append(buf)
    st.held += nbytes
    return buf


# ------------------------------------------------------------------------------------------------------- switches


def set_buffer_pool(enabled: bool | None = None, *, max_bytes: int | None = None) -> bool:
    """Switch the buffer pool on or off and/or set its byte cap per thread; returns the previous on/off state.

    Args:
        enabled: ``True``/``False``; ``None`` keeps the current state (to change ``max_bytes`` only).
        max_bytes: the cap of each thread's pool (default :data:`DEFAULT_MAX_BYTES`); ``None`` keeps it.

    Switching off, or changing the cap, empties every thread's pool (each thread drops its buffers on its next
    request; buffers still in use stay valid arrays, they are simply no longer pooled).

    Raises:
        RuntimeError: ``enabled=True`` on an interpreter where reference counts do not prove a buffer free
            (see :func:`supported`).
        ValueError: a negative or non-integer ``max_bytes``.
    """
    global _enabled
    if enabled and not supported():
        raise RuntimeError(
            "the buffer pool needs CPython with the GIL (it proves a buffer free by its reference count); "
            f"this is {platform.python_implementation()} {platform.python_version()}"
        )
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes: expected a non-negative int, got {max_bytes!r}")
        _config["max_bytes"] = max_bytes
        _config["generation"] += 1
    old = _enabled
    if enabled is not None:
        _enabled = bool(enabled)
        if not _enabled:
            _config["generation"] += 1
            _local.reset()
    return old


def buffer_pool_enabled() -> bool:
    """Whether arrayrl's NumPy kernels take their large outputs from the pool."""
    return _enabled


@contextlib.contextmanager
def buffer_pool(enabled: bool) -> Iterator[None]:
    """Context manager: the pool on (or off) inside the block, the previous state restored after it."""
    old = set_buffer_pool(enabled)
    try:
        yield
    finally:
        set_buffer_pool(old)


def buffer_pool_stats() -> dict:
    """This thread's pool: ``{"enabled", "max_bytes", "held_bytes", "buffers", "busy", "hits", "misses"}``."""
    st = _local
    if st.generation != _config["generation"]:
        st.reset()
    bufs = [(lst, i) for lst in st.free.values() for i in range(len(lst))]
    return {
        "enabled": _enabled,
        "max_bytes": _config["max_bytes"],
        "held_bytes": st.held,
        "buffers": len(bufs),
        "busy": sum(1 for lst, i in bufs if _refs_at(lst, i) != _FREE_REFS),
        "hits": st.hits,
        "misses": st.misses,
    }


def clear_buffer_pool() -> None:
    """Drop this thread's pooled buffers (those still in use stay valid arrays) and reset its counters."""
    _local.reset()


def _from_env() -> None:
    """Apply ``ARRAYRL_BUFFER_POOL`` (``0``/``off``/``false`` switch it off) and ``ARRAYRL_BUFFER_POOL_MAX_MB``."""
    value = os.environ.get(_ENV, "").strip().lower()
    if value not in ("", "0", "1", "on", "off", "true", "false"):
        raise ValueError(f"{_ENV}: expected 0/1/on/off/true/false, got {value!r}")
    mb = os.environ.get(_ENV_MAX, "").strip()
    set_buffer_pool(None, max_bytes=int(float(mb) * 1024 * 1024) if mb else None)
    set_buffer_pool(supported() and value not in ("0", "off", "false"))


_from_env()


# -------------------------------------------------------------------------------------------------------- kernels


def empty(shape: tuple, dtype: Any) -> np.ndarray:
    """``np.empty(shape, dtype)`` (C order), from the pool when it is on and the block has at least
    :data:`MIN_BYTES`. The caller fills it; nobody else refers to it."""
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if _enabled and nbytes >= MIN_BYTES:
        return _take(shape, dtype, nbytes)
    return np.empty(shape, dtype)


def xp_empty(xp: Any, shape: tuple, *, dtype: Any, device: Any = None) -> Any:
    """``xp.empty(shape, dtype=dtype, device=device)`` for generic array-API code: a pooled buffer (:func:`empty`)
    when ``xp`` is NumPy, the namespace's own ``empty`` otherwise."""
    if xp is np:
        return empty(shape, dtype)
    return xp.empty(shape, dtype=dtype, device=device)


def _matmul_shape(sa: tuple, sb: tuple) -> tuple | None:
    """The output shape of ``a @ b`` for arrays of at least 2 dimensions with equal (or absent) batch axes."""
    if len(sa) < 2 or len(sb) < 2 or sa[-1] != sb[-2]:
        return None
    if len(sb) == 2 or sa[:-2] == sb[:-2]:
        return sa[:-1] + sb[-1:]
    if len(sa) == 2:
        return sb[:-2] + sa[-2:-1] + sb[-1:]
    return None


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul(a, b)``, written into a pooled buffer when the pool is on and the product is large.

    Pooled only for operands of one dtype with at least 2 dimensions and equal (or absent) batch axes; the BLAS
    call is the same as for a fresh output (NumPy's own output is C-contiguous too), so the values are identical.
    """
    if _enabled:
        sa, sb = a.shape, b.shape
        if len(sa) == 2 and len(sb) == 2:  # the common case, checked without building the shape first
            if sa[0] * sb[1] * a.itemsize < MIN_BYTES or sa[1] != sb[0] or a.dtype != b.dtype:
                return np.matmul(a, b)
            return np.matmul(a, b, out=_take((sa[0], sb[1]), a.dtype, sa[0] * sb[1] * a.itemsize))
        if a.dtype == b.dtype:
            shape = _matmul_shape(sa, sb)
            if shape is not None:
                nbytes = math.prod(shape) * a.dtype.itemsize
                if nbytes >= MIN_BYTES:
                    return np.matmul(a, b, out=_take(shape, a.dtype, nbytes))
    return np.matmul(a, b)


_SCALARS = (float, int)
_OUT_DTYPE: dict = {}  # (ufunc, dtype, kinds of the arguments) -> output dtype (None: not pooled)


def _out_dtype(ufunc: np.ufunc, dtype: np.dtype, kinds: tuple) -> np.dtype | None:
    key = (ufunc, dtype, kinds)
    try:
        return _OUT_DTYPE[key]
    except KeyError:
        pass
    try:
        res = ufunc.resolve_dtypes(tuple(dtype if k is _ND else k for k in kinds) + (None,))[-1]
    except (TypeError, ValueError, np.exceptions.DTypePromotionError):  # no loop: NumPy raises in the fallback
        res = None
    _OUT_DTYPE[key] = res
    return res


def _ufunc_out(ufunc: np.ufunc, args: tuple) -> np.ndarray | None:
    """A pooled output for ``ufunc(*args)``, or ``None`` to leave the call to NumPy/the fallback.

    Pooled: NumPy arrays (all of one dtype, each with contiguous rows: C-contiguous or a slice of one such as
    the column block a ``concat`` VJP hands out) and Python ``float``/``int`` scalars, at least one array of
    :data:`MIN_BYTES`, a broadcast output of at least :data:`MIN_BYTES`. Anything else (another backend, mixed
    dtypes, transposed or strided views, NumPy scalars) is not pooled. The output is C-contiguous; the values are
    those of the fresh call (the same loop, elementwise)."""
    dtype = shape = None
    big = False
    for a in args:
        t = type(a)
        if t is _ND:
            if dtype is None:
                dtype, shape = a.dtype, a.shape
            elif a.dtype != dtype:
                return None
            elif a.shape != shape:
                shape = None
            if a.ndim and a.strides[-1] != a.itemsize:  # rows must be contiguous (a column slice is fine)
                return None
            big = big or a.nbytes >= MIN_BYTES
        elif t not in _SCALARS:
            return None
    if not big or dtype is None:  # dtype is set whenever big is (an array of MIN_BYTES was seen)
        return None
    if shape is None:
        try:
            shape = np.broadcast_shapes(*[a.shape for a in args if type(a) is _ND])
        except ValueError:
            return None
    odt = _out_dtype(ufunc, dtype, tuple(_ND if type(a) is _ND else type(a) for a in args))
    if odt is None:
        return None
    nbytes = math.prod(shape) * odt.itemsize
    if nbytes < MIN_BYTES:
        return None
    return _take(shape, odt, nbytes)


def elementwise(ufunc: np.ufunc, fallback: Callable | None = None) -> Callable:
    """``f(*args)``: ``ufunc(*args, out=<pooled buffer>)`` when the pool applies (see :func:`_ufunc_out`),
    ``fallback(*args)`` otherwise (default: the ufunc itself; pass ``operator.add`` or a namespace's function for
    code that must also run on other backends).

    Small arrays, the common case of a tape at batch 256, cost one type check and one size comparison more."""
    fallback = ufunc if fallback is None else fallback
    f: Callable[..., Any]

    if ufunc.nin == 1:

        def unary(a):
            if _enabled and type(a) is _ND and a.nbytes >= MIN_BYTES:
                out = _ufunc_out(ufunc, (a,))
                if out is not None:
                    return ufunc(a, out=out)
            return fallback(a)

        f = unary
    else:

        def binary(a, b):
            if _enabled and (
                (type(a) is _ND and a.nbytes >= MIN_BYTES) or (type(b) is _ND and b.nbytes >= MIN_BYTES)
            ):
                out = _ufunc_out(ufunc, (a, b))
                if out is not None:
                    return ufunc(a, b, out=out)
            return fallback(a, b)

        f = binary
    f.__name__ = getattr(fallback, "__name__", ufunc.__name__)
    f.__doc__ = f"``{ufunc.__name__}`` writing its large NumPy outputs into pooled buffers (arrayrl._pool)."
    setattr(f, "__wrapped__", fallback)
    return f


def _one_dtype(arrays: tuple) -> np.dtype | None:
    """The common dtype of a non-empty sequence of NumPy arrays (exactly ``np.ndarray``), or ``None``."""
    if not arrays:
        return None
    dtype = None
    for a in arrays:
        if type(a) is not _ND or (dtype is not None and a.dtype != dtype):
            return None
        dtype = a.dtype
    return dtype


def stack(arrays: Any, axis: int = 0, fallback: Callable | None = None) -> Any:
    """``np.stack(arrays, axis)`` written into a pooled buffer: NumPy arrays of one dtype and one shape whose
    result ``[..., len(arrays), ...]`` has at least :data:`MIN_BYTES`; ``fallback(arrays, axis=axis)`` (default
    ``np.stack``) for anything else. A copy either way: the values are the same."""
    arrays = tuple(arrays)
    if _enabled:
        dtype = _one_dtype(arrays)
        if dtype is not None:
            shape = arrays[0].shape
            nbytes = len(arrays) * arrays[0].nbytes
            if nbytes >= MIN_BYTES and all(a.shape == shape for a in arrays) and -len(shape) - 1 <= axis <= len(shape):
                ax = axis % (len(shape) + 1)
                out = _take(shape[:ax] + (len(arrays),) + shape[ax:], dtype, nbytes)
                return np.stack(arrays, axis=ax, out=out)
    return (fallback or np.stack)(arrays, axis=axis)


def concat(arrays: Any, axis: int | None = 0, fallback: Callable | None = None) -> Any:
    """``np.concatenate(arrays, axis)`` (``axis=None``: of the flattened arrays) written into a pooled buffer:
    NumPy arrays of one dtype and ndim, equal except along ``axis``, with a result of at least :data:`MIN_BYTES`;
    ``fallback(arrays, axis=axis)`` (default ``np.concatenate``) for anything else (same values: a copy)."""
    arrays = tuple(arrays)
    if _enabled:
        dtype = _one_dtype(arrays)
        if dtype is not None:
            nbytes = sum(a.nbytes for a in arrays)
            shape = _concat_shape(arrays, axis) if nbytes >= MIN_BYTES else None
            if shape is not None:
                return np.concatenate(arrays, axis=axis, out=_take(shape, dtype, nbytes))
    return (fallback or np.concatenate)(arrays, axis=axis)


def _concat_shape(arrays: tuple, axis: int | None) -> tuple | None:
    """The shape of ``concatenate(arrays, axis)``, or ``None`` where NumPy would raise (it raises in the fallback)."""
    if axis is None:
        return (sum(a.size for a in arrays),)
    first = arrays[0].shape
    nd = len(first)
    if not nd or not -nd <= axis < nd:
        return None
    ax = axis % nd
    for a in arrays:
        s = a.shape
        if len(s) != nd or s[:ax] != first[:ax] or s[ax + 1 :] != first[ax + 1 :]:
            return None
    return first[:ax] + (sum(a.shape[ax] for a in arrays),) + first[ax + 1 :]


def clip(x: Any, lo: Any, hi: Any, fallback: Callable) -> Any:
    """``np.clip(x, lo, hi)`` written into a pooled buffer for a large floating NumPy ``x`` and Python-number (or
    absent) bounds, whose result has ``x``'s dtype; ``fallback(x, lo, hi)`` for anything else (same values)."""
    if (
        _enabled
        and type(x) is _ND
        and x.nbytes >= MIN_BYTES
        and x.dtype.kind == "f"
        and (lo is not None or hi is not None)
        and (lo is None or type(lo) in _SCALARS)
        and (hi is None or type(hi) in _SCALARS)
    ):
        return np.clip(x, lo, hi, out=_take(x.shape, x.dtype, x.nbytes))
    return fallback(x, lo, hi)
