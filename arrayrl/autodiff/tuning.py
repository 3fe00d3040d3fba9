"""CPU process policy: the BLAS thread policy (on by default) and opt-in allocator tuning.

**BLAS threads (default policy ``"auto"``).** NumPy's OpenBLAS starts all cores for products as small as
256 x 64 @ 64 x 64, and its worker threads busy-wait between calls. On a machine whose cores are shared (other
processes, torch's thread pool, data loaders) they then collapse: one DQN update (batch 256, MLP 4-64-64-2) took
7 ms with the default threads and 0.65 ms single-threaded. So every NumPy matrix product that arrayrl itself
issues (the fused :func:`arrayrl.ops.linear` and its VJP, :func:`arrayrl.ops.mlp` with one switch for the whole
stack when every layer is below the threshold -- none when every product is under ``arrayrl.ops.LEAN_WORK``
multiply-adds, where OpenBLAS is serial by itself --, the taped namespace's ``matmul`` and ``@``, the matmul
VJPs, the BLAS row sums of :func:`~arrayrl.autodiff.sum_to_shape`) goes through :func:`blas_call`: a product of
fewer than :data:`SERIAL_BELOW` multiply-adds per matrix (``m * k * n``) runs with OpenBLAS set to one thread,
and the caller's thread count is restored right after. Larger products keep the process's setting (they amortise
the threads' wake-up). On a machine with at most 2 usable cores every product runs serially
(:func:`default_serial_below`). The switch costs two ``ctypes`` calls (~0.6 us) and is skipped when OpenBLAS already runs
one thread. Users' own NumPy calls are never affected.

* :func:`set_blas_policy` ``("off")`` (or the environment variable ``ARRAYRL_BLAS_POLICY=off`` at import)
  leaves OpenBLAS alone; ``set_blas_policy("auto", serial_below=n)`` moves the threshold;
* :func:`set_blas_threads` / :func:`blas_threads` (context manager) set the process-wide thread count, as before
  (``set_blas_threads(1)`` makes every product serial, yours included).

The thread count of OpenBLAS is process-wide: arrayrl called from several Python threads at once may run a
product with the other thread's setting (never a wrong result, only another speed).

Threshold, measured on the 2-core shared VM (float32, OpenBLAS 0.3.31). Products alone, 1 vs 2 threads (medians
of 7 alternated rounds): 2 threads gain nothing below ~1e5 multiply-adds (OpenBLAS stays serial by itself), save
10-210 us per product from 1e6 (256x64@64x64: 26 vs 17 us; the weight gradient 64x256@256x64 is *slower* threaded:
20 vs 34 us) to 1.7e7 (4096x64@64x64: 413 vs 205 us), and halve the time from 6.7e7 (1024x256@256x256: 1.29 vs
0.66 ms). Inside a training step on shared cores the threaded runs collapse instead: a DQN update (MLP 4-64-64-2,
value_and_grad) took 150 ms with the default threads against 0.45 ms with this policy at batch 256, and 377 ms
against 26 ms at batch 4096 (load 6-8 on the 2 cores; medians of 12 alternated rounds). :data:`SERIAL_BELOW` =
2**24 + 1 keeps every product of a 64-wide MLP up to batch 4096 serial and leaves the threads to products long
enough (>= ~0.4 ms single-threaded) to amortise their wake-up.

**Allocator.** A tape over NumPy allocates a fresh temporary for every op and every cotangent. With glibc, blocks
larger than the mmap threshold (128 KiB initially) are obtained with ``mmap`` and unmapped on free, so each call
page-faults its temporaries in again (a 4096 x 64 float32 activation is 1 MiB = 256 page faults). The default fix is
library-level: arrayrl's NumPy kernels write their large outputs into the per-thread buffer pool of
:mod:`arrayrl._pool` (a buffer is reused only once nothing refers to it; ``set_buffer_pool(False)`` or
``ARRAYRL_BUFFER_POOL=0`` switches it off). :func:`tune_allocator` stays as an opt-in: it sets glibc's
``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` with ``mallopt`` (through ctypes), which also removes the faults of
allocations arrayrl does not make, but it is process-wide (every library in the process), irreversible in practice,
keeps up to 512 MiB of freed memory, and takes transparent huge pages away from big arrays (the reverse scan at
large sizes ran 25 % slower under it); a no-op (returns False) where glibc is absent.

Nothing here changes process state on import; the BLAS policy acts only around arrayrl's own products.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from typing import Any, Callable, Iterator

import numpy as _np

from .. import _pool

__all__ = [
    "tune_allocator",
    "blas_threads",
    "set_blas_threads",
    "set_blas_policy",
    "blas_policy",
    "blas_call",
    "matmul",
    "np_matmul",
    "serial_below",
    "SERIAL_BELOW",
]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator(mmap_threshold: int = 256 * 1024 * 1024, trim_threshold: int = 512 * 1024 * 1024) -> bool:
    """Keep large temporaries in the heap (glibc ``mallopt``), so repeated calls reuse them without page faults.

    Args:
        mmap_threshold: blocks below this size come from the heap, not ``mmap`` (glibc caps it at 32 MiB on
            64-bit: ``HEAP_MAX``/2 = 32 MiB; larger values are clamped to that by this function).
        trim_threshold: free heap memory above this is returned to the OS.

    Returns:
        True if both settings were applied (Linux with glibc), False otherwise.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_threshold = min(int(mmap_threshold), 32 * 1024 * 1024)
    ok1 = mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    ok2 = mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
    return bool(ok1 and ok2)


_BLAS_NAMES = [
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),  # NumPy >= 2 wheels
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
]
_BLAS_FNS: list = []


def _openblas_paths() -> list:
    """Candidate files of the OpenBLAS that NumPy loaded: NumPy's wheel folders, then threadpoolctl's view (if
    installed), then the library folder NumPy's build configuration names."""
    import glob

    here = os.path.dirname(_np.__file__)
    paths = glob.glob(os.path.join(here, os.pardir, "numpy.libs", "*openblas*.so*"))
    paths += glob.glob(os.path.join(here, ".dylibs", "*openblas*"))
    try:
        import threadpoolctl

        paths += [c.filepath for c in threadpoolctl.ThreadpoolController().lib_controllers
                  if c.internal_api == "openblas"]
    except Exception:  # noqa: BLE001 - optional helper: absent or failing means "not found here"
        pass
    try:
        libdir = _np.__config__.CONFIG["Build Dependencies"]["blas"]["lib directory"]
        paths += glob.glob(os.path.join(libdir, "*openblas*.so*"))
    except Exception:  # noqa: BLE001 - older NumPy without CONFIG
        pass
    return paths


def _openblas_setters():
    """``(get, set)`` of the thread count of the OpenBLAS that NumPy loaded, or None (looked up once, cached)."""
    if _BLAS_FNS:
        return _BLAS_FNS[0]
    found = None
    for path in _openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _BLAS_NAMES:
            get, set_ = getattr(lib, get_name, None), getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                found = (get, set_)
                break
        if found:
            break
    _BLAS_FNS.append(found)
    return found


def set_blas_threads(n: int) -> int | None:
    """Set the number of threads of NumPy's OpenBLAS for the whole process; returns the previous count (or None
    if OpenBLAS was not found). Small matrices (a 4096 x 64 x 64 layer) gain little from threads and lose a lot
    when the cores are shared: OpenBLAS threads busy-wait for each other."""
    fns = _openblas_setters()
    if fns is None:
        return None
    get, set_ = fns
    old = get()
    set_(int(n))
    return old


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[bool]:
    """Limit NumPy's OpenBLAS to ``n`` threads inside the block (yields False if OpenBLAS was not found)."""
    old = set_blas_threads(n)
    try:
        yield old is not None
    finally:
        if old is not None:
            set_blas_threads(old)


# ----------------------------------------------------------------------------------------------- BLAS thread policy

#: threshold of the ``"auto"`` policy on machines with more than 2 usable cores: products of fewer multiply-adds per
#: matrix run single-threaded
SERIAL_BELOW = 2**24 + 1
#: the threshold that makes every product serial
ALWAYS_SERIAL = 2**62


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_serial_below() -> int:
    """The default threshold of ``"auto"``: :data:`SERIAL_BELOW` with more than 2 usable cores, else
    :data:`ALWAYS_SERIAL`. On 2 cores a second BLAS thread saves at most half a product and only on an idle machine;
    under load it costs 3-15x (8192x64 @ 64x64: 1.0 ms on one thread, 16 ms on two at load 5-8), which made a
    ClipPPO update on a [64, 128] rollout 12x slower (668 vs 54 ms) and SAC at batch 4096 (256x256) 3x slower."""
    return SERIAL_BELOW if _usable_cores() > 2 else ALWAYS_SERIAL


_POLICY_ENV = "ARRAYRL_BLAS_POLICY"
_policy = "auto"
_auto_threshold = default_serial_below()  # the threshold of "auto" (kept while the policy is "off")
_serial_below = _auto_threshold  # the threshold in effect: 0 when the policy is "off" (one comparison on the hot path)


def set_blas_policy(policy: str = "auto", *, serial_below: int | None = None) -> str:
    """Choose how arrayrl's own NumPy matrix products use OpenBLAS threads; returns the previous policy.

    Args:
        policy: ``"auto"`` (default): a product of fewer than ``serial_below`` multiply-adds per matrix runs with
            one thread, the caller's count is restored after it; ``"off"``: never touch OpenBLAS.
        serial_below: the threshold of ``"auto"`` (default :func:`default_serial_below`: every product on machines
            with at most 2 usable cores, :data:`SERIAL_BELOW` multiply-adds above); ``None`` keeps the current one.

    Raises:
        ValueError: an unknown ``policy`` or a negative ``serial_below``.
    """
    global _policy, _serial_below, _auto_threshold
    if policy not in ("auto", "off"):
        raise ValueError(f"policy: expected 'auto' or 'off', got {policy!r}")
    if serial_below is not None:
        if isinstance(serial_below, bool) or not isinstance(serial_below, int) or serial_below < 0:
            raise ValueError(f"serial_below: expected a non-negative int, got {serial_below!r}")
        _auto_threshold = serial_below
    old, _policy = _policy, policy
    _serial_below = _auto_threshold if policy == "auto" else 0
    return old


def blas_policy() -> tuple[str, int]:
    """The current ``(policy, serial_below)`` (see :func:`set_blas_policy`)."""
    return _policy, _auto_threshold


def blas_call(work: int, fn: Callable, *args: Any) -> Any:
    """``fn(*args)``, single-threaded in OpenBLAS when ``work`` (multiply-adds per matrix) is below the policy's
    threshold; the previous thread count is restored afterwards, also if ``fn`` raises."""
    if work >= _serial_below:
        return fn(*args)
    fns = _BLAS_FNS[0] if _BLAS_FNS else _openblas_setters()
    if fns is None:
        return fn(*args)
    get, set_ = fns
    cur = get()
    if cur == 1:
        return fn(*args)
    set_(1)
    try:
        return fn(*args)
    finally:
        set_(cur)


def serial_below() -> int:
    """The threshold in effect: :func:`blas_call` runs a product of fewer multiply-adds single-threaded (0 when the
    policy is ``"off"``). A caller that issues several products in one :func:`blas_call` (the fused MLP of
    :func:`arrayrl.ops.mlp`) compares their largest work against it."""
    return _serial_below


_ND = _np.ndarray
_np_matmul_raw = _pool.matmul  # np.matmul, into a pooled buffer when the output is large (arrayrl._pool)


def np_matmul(a: Any, b: Any) -> Any:
    """``a @ b`` for NumPy arrays under the BLAS policy (work: ``m * k * n`` of one matrix of the stack); a large
    output is written into a buffer of :mod:`arrayrl._pool`."""
    sa, sb = a.shape, b.shape
    work = (sa[-2] if len(sa) > 1 else 1) * (sa[-1] if sa else 1) * (sb[-1] if len(sb) > 1 else 1)
    if work >= _serial_below:
        return _np_matmul_raw(a, b)
    return blas_call(work, _np_matmul_raw, a, b)


def matmul(xp: Any, a: Any, b: Any) -> Any:
    """``xp.matmul(a, b)``; NumPy arrays go through :func:`np_matmul` (the BLAS policy), others are untouched."""
    if type(a) is _ND and type(b) is _ND:
        return np_matmul(a, b)
    return xp.matmul(a, b)


def _policy_from_env() -> None:
    """Apply ``ARRAYRL_BLAS_POLICY`` (``auto``/``off``, any case; unset means ``auto``); raises on another value."""
    value = os.environ.get(_POLICY_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "off"):
        raise ValueError(f"{_POLICY_ENV}: expected 'auto' or 'off', got {value!r}")
    set_blas_policy(value)


_policy_from_env()
