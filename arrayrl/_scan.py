"""Raw (untaped) kernel of the reverse discounted scan ``y_t = x_t + c_t * y_{t+1}`` (``y_{T-1} = x_{T-1}``).

GAE, TD(lambda), TD(1), V-trace and reward-to-go all reduce to this recurrence. This module holds the forward
kernel on raw backend arrays only; :mod:`arrayrl.ops` wraps it as a taped primitive whose VJP is a forward scan
(this same kernel run on flipped arrays).

Contract
--------
* ``y_{T-1} = x_{T-1}``: the last discount ``c_{T-1}`` is never read.
* ``c_t == 0`` cuts the recursion *exactly*: ``y_t = x_t`` whatever ``y_{t+1}`` is, so a NaN or an infinity after a
  cut (a garbage value after ``done``) never leaks backward. This is done with ``xp.where``, never by multiplying a
  mask (``0 * nan`` is ``nan``).
* No truncation: every algorithm below computes the same sums as the sequential loop, only in another order, so
  the float32 error stays of the order of the loop's (``O(T eps)`` in the worst case).
* Only array-API standard functions, so the kernel runs on NumPy, CuPy, torch and array-api-strict. Writes go
  into arrays this module allocated (never into inputs).

Algorithms (chosen from the static shape ``[N, T]`` after the time axis is moved last and the other axes are
flattened; shapes are static, so this is not a branch on data):

* ``T <= _SEQ_T``: the plain sequential loop (a few vector operations per step).
* small problems: Hillis-Steele doubling, ``log2 T`` steps of whole-array operations (fewest Python calls).
* otherwise: a blocked scan. The time axis is cut into ``m`` blocks of ``k`` steps; (1) each block is scanned
  locally from its end, together with the suffix products ``P_j = c_j ... c_{k-1}`` and a bool "cut in
  ``[j, k)``" flag (so a NaN discount after a cut cannot hide the cut); (2) the block carries
  ``Y_b = y_local[b, 0] + P[b, 0] Y_{b+1}`` form a reverse scan of length ``m``, solved by a recursive call;
  (3) ``y = y_local + P * Y_{next block}`` (skipped where the flag is set). Large batches are processed in row
  chunks so that the working set stays in cache.

Cost (NumPy, one core): the blocked scan makes about 8 strided vector operations per element in (1) and 3 in
(3); two of them are ``where`` (NaN safety), which NumPy runs 3 to 6 times slower than a multiplication. See
``benchmarks/results/value-cpu.md``.
"""

from __future__ import annotations

import math
from typing import Any

from . import _cupy_kernels, _numba_scan, _pool
from ._backend import namespace_of
from ._checks import check_floating, check_same_shape, dtype_name, is_float32_or_64, normalize_axis

__all__ = ["reverse_discounted_scan_raw"]

# Algorithm thresholds (tuned on a 2-core x86 CPU with NumPy; see benchmarks/value.py).
_SEQ_T = 4  # at most this many steps: sequential loop
_DOUBLING_MAX_ELEMS = 1 << 12  # N * T at most this (or T < 2 k): doubling
_BLOCK = 8  # block length k of the blocked scan
_CHUNK_ELEMS = 1 << 18  # row chunk size (elements) of the blocked scan for large batches


def reverse_discounted_scan_raw(x: Any, c: Any, axis: int = -1) -> Any:
    """``y_t = x_t + c_t * y_{t+1}`` along ``axis``, ``y_{T-1} = x_{T-1}`` (``c_{T-1}`` is unused).

    Args:
        x: floating array ``[..., T, ...]``.
        c: array of the same shape and dtype as ``x`` (per-step discount; ``0`` cuts the recursion exactly).
        axis: the time axis.

    Returns:
        ``y``, same shape and dtype as ``x`` (a new array).
    """
    xp = namespace_of(x, c, names=("x", "c"))
    if not is_float32_or_64(x):
        check_floating(x, "x")
    if tuple(x.shape) != tuple(c.shape):
        check_same_shape({"x": x, "c": c})
    if c.dtype != x.dtype:
        raise TypeError(f"c: expected dtype {dtype_name(x.dtype)} (the dtype of x), got {dtype_name(c.dtype)}")
    ax = normalize_axis(axis, x.ndim)
    T = x.shape[ax]
    if T <= 1 or math.prod(x.shape) == 0:
        return xp.asarray(x, copy=True)
    out = _numba_scan.try_reverse_scan(x, c, ax)  # NumPy + numba: the compiled serial scan (None: not applicable)
    if out is None:
        out = _cupy_kernels.dispatch("reverse_scan", x, c, ax)  # CuPy: the RawKernel scan
    if out is not None:
        return out
    if math.prod(x.shape[ax + 1:]) == 1:  # [*B, T, 1, ...]: same memory order as [N, T], no axis move
        N = math.prod(x.shape[:ax])
        y = _scan_2d(xp, xp.reshape(x, (N, T)), xp.reshape(c, (N, T)))
        return xp.reshape(y, tuple(x.shape))
    xs = xp.moveaxis(x, ax, -1)
    cs = xp.moveaxis(c, ax, -1)
    lead = tuple(xs.shape[:-1])
    N = math.prod(lead)
    y = _scan_2d(xp, xp.reshape(xs, (N, T)), xp.reshape(cs, (N, T)))
    return xp.moveaxis(xp.reshape(y, lead + (T,)), -1, ax)


# ----------------------------------------------------------------------------------------------------- dispatch


def _scan_2d(xp: Any, x: Any, c: Any) -> Any:
    """Scan along the last axis of ``[N, T]`` arrays (``T >= 2``)."""
    N, T = x.shape
    if T <= _SEQ_T:
        return _sequential(xp, x, c)
    k = _BLOCK
    if N * T <= _DOUBLING_MAX_ELEMS or T < 2 * k:
        return _doubling(xp, x, c)
    rows = max(1, _CHUNK_ELEMS // T)
    if N <= rows:
        return _blocked(xp, x, c, k)
    out = _pool.xp_empty(xp, tuple(x.shape), dtype=x.dtype, device=x.device)
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        out[r0:r1, :] = _blocked(xp, x[r0:r1, :], c[r0:r1, :], k)
    return out


# --------------------------------------------------------------------------------------------------- algorithms


def _sequential(xp: Any, x: Any, c: Any) -> Any:
    """The loop itself: ``T - 1`` steps on ``[N]`` columns."""
    N, T = x.shape
    y = _pool.xp_empty(xp, tuple(x.shape), dtype=x.dtype, device=x.device)
    acc = x[:, T - 1]
    y[:, T - 1] = acc
    zero = xp.zeros((), dtype=x.dtype, device=x.device)
    for t in range(T - 2, -1, -1):
        ct = c[:, t]
        acc = x[:, t] + xp.where(ct == zero, zero, ct * acc)
        y[:, t] = acc
    return y


def _doubling(xp: Any, x: Any, c: Any) -> Any:
    """Hillis-Steele: after the step with offset ``s``, ``y_t`` sums the ``2s`` terms from ``t``.

    ``A_t`` holds the product ``c_t ... c_{t+s-1}`` and ``Z_t`` whether that span holds a cut (``c == 0``); both
    shrink by ``s`` entries per step (the dropped entries would only reach past the end). Where ``Z_t`` the update
    is skipped: a NaN discount after a cut (``0 * nan``) cannot hide the cut.
    """
    N, T = x.shape
    y = xp.asarray(x, copy=True)
    A = c[:, : T - 1]  # length T - s at the step with offset s
    zero = xp.zeros((), dtype=x.dtype, device=x.device)
    Z = A == zero
    s = 1
    while s < T:
        head = y[:, : T - s]
        head += xp.where(Z, zero, A * y[:, s:])  # in place: the right side is computed first
        y[:, : T - s] = head  # a no-op for NumPy views; needed where getitem copies
        if 2 * s < T:
            A = A[:, : T - 2 * s] * A[:, s : T - s]
            Z = xp.logical_or(Z[:, : T - 2 * s], Z[:, s : T - s])
        s *= 2
    return y


def _blocked(xp: Any, x: Any, c: Any, k: int) -> Any:
    """Blocked scan of ``[N, T]`` with blocks of ``k`` steps (see the module docstring)."""
    N, T = x.shape
    m = T // k
    r = T - m * k
    zero = xp.zeros((), dtype=x.dtype, device=x.device)
    L = m * k
    # tail (the last r < k steps): a short loop; its first value is the carry into the last block
    if r > 0:
        y_tail = _sequential(xp, x[:, L:], c[:, L:]) if r > 1 else x[:, L:]
        carry = y_tail[:, 0]
    else:
        y_tail = None
        carry = xp.zeros((N,), dtype=x.dtype, device=x.device)
    xb = xp.reshape(x[:, :L], (N, m, k))
    cb = xp.reshape(c[:, :L], (N, m, k))
    zb = xp.reshape(c[:, :L] == zero, (N, m, k))
    # (1) local scans and suffix products P_j = c_j ... c_{k-1} (the factor that carries Y_{b+1} to position j)
    yl = _pool.xp_empty(xp, (N, m, k), dtype=x.dtype, device=x.device)
    P = _pool.xp_empty(xp, (N, m, k), dtype=x.dtype, device=x.device)
    Zc = _pool.xp_empty(xp, (N, m, k), dtype=xp.bool, device=x.device)  # a cut in [j, k): P_j does not count
    acc = xb[:, :, k - 1]
    p = cb[:, :, k - 1]
    if r == 0:  # c_{T-1} is never read: the last block receives no carry
        p = xp.concat([p[:, : m - 1], xp.zeros((N, 1), dtype=x.dtype, device=x.device)], axis=1)
    z = p == zero
    yl[:, :, k - 1] = acc
    P[:, :, k - 1] = p
    Zc[:, :, k - 1] = z
    for j in range(k - 2, -1, -1):
        cj = cb[:, :, j]
        zj = zb[:, :, j]
        acc = xb[:, :, j] + xp.where(zj, zero, cj * acc)
        p = cj * p
        z = xp.logical_or(zj, z)
        yl[:, :, j] = acc
        P[:, :, j] = p
        Zc[:, :, j] = z
    # (2) carries: Y_b = yl[b, 0] + P[b, 0] Y_{b+1}, Y_m = carry
    x2 = xp.concat([yl[:, :, 0], carry[:, None]], axis=1)
    c2 = xp.concat([xp.where(Zc[:, :, 0], zero, P[:, :, 0]), xp.zeros((N, 1), dtype=x.dtype, device=x.device)],
                   axis=1)
    Y = _scan_2d(xp, x2, c2)[:, 1:]  # Y_{b+1} for b = 0..m-1
    # (3) fix-up
    yl += xp.where(Zc, zero, P * Y[:, :, None])  # yl is this function's own array
    y = xp.reshape(yl, (N, L))
    return y if y_tail is None else xp.concat([y, y_tail], axis=1)
