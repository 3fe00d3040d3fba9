"""Opt-in process policy for large batches on CPU (nothing here runs on import).

Why: a tape over NumPy allocates a fresh temporary for every op and every cotangent. With glibc, blocks larger than
the mmap threshold (128 KiB initially, adapted upwards only when such a block is *freed*) are obtained with ``mmap``
and returned to the OS with ``munmap`` on free, so each call page-faults its temporaries in again (a 4096 x 64
float32 activation is 1 MiB = 256 page faults). Raising the threshold keeps those blocks in the heap, where the next
call reuses them without faults.

* :func:`tune_allocator` sets glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` with ``mallopt`` (through
  ctypes). It is process-wide and irreversible in practice; a no-op (returns False) where glibc is absent.
* :func:`set_blas_threads` / :func:`blas_threads` (context manager) set the thread count of NumPy's OpenBLAS.

Recommended policy (measured on a 2-core CPU, benchmarks/results/tape-cpu.md and losses-cpu.md):

* always call ``tune_allocator()`` once at start-up of a CPU training loop: 2-2.5x at batch 4096 (DQN, IQL,
  QMixer), up to 1.3x already at batch 256 when the activations pass 128 KiB (QMixer's 4 agents x 256 rows);
* ``set_blas_threads(1)`` when the cores are shared (another library's thread pool such as torch's, data loaders,
  other processes) or the layers are small (batch <= ~1000 rows of 64 features): OpenBLAS's busy-waiting threads
  then cost more than they gain, and collapse (10-40x) under contention. On an idle machine with large layers the
  default threads can be ~10% faster; keep them there.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from typing import Iterator

__all__ = ["tune_allocator", "blas_threads", "set_blas_threads"]

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


def _openblas_setters():
    """``(get, set)`` of the thread count of the OpenBLAS that NumPy loaded, or None (cached)."""
    if _BLAS_FNS:
        return _BLAS_FNS[0]
    import glob
    import os

    import numpy as np

    here = os.path.dirname(np.__file__)
    paths = glob.glob(os.path.join(here, os.pardir, "numpy.libs", "*openblas*.so*"))
    paths += glob.glob(os.path.join(here, ".dylibs", "*openblas*"))
    found = None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _BLAS_NAMES:
            get, set_ = getattr(lib, get_name, None), getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
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
