"""The NumPy buffer pool (arrayrl._pool): never hands out a buffer in use, same values on/off, cap, switches.

The property test runs random programs of allocations (``empty``, pooled ufuncs, matmul, stack, concat), views, and drops;
every array handed out is filled with a fresh stamp, and after each step every live array (or view) must still
hold its own stamp and share no memory with the newest allocation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl import _pool
from arrayrl.autodiff import value_and_grad

KIB = 1024
# (rows, cols) float32 blocks at, above and below the 128 KiB threshold
SHAPES = [(256, 128), (512, 128), (64, 64)]


pytestmark = pytest.mark.usefixtures("fresh_pool")  # tests/conftest.py: an empty, enabled pool per test


def _allocate(kind: str, shape: tuple) -> np.ndarray:
    """One pooled allocation of ``shape`` (float32) by ``kind``."""
    if kind == "empty":
        return _pool.empty(shape, np.float32)
    if kind == "ufunc":
        return _pool.elementwise(np.add)(np.ones(shape, np.float32), 1.0)
    if kind == "stack":
        return _pool.stack([np.ones(shape[1:], np.float32)] * shape[0], axis=0)
    if kind == "concat":
        return _pool.concat([np.ones((shape[0] // 2,) + shape[1:], np.float32)] * 2, axis=0)
    a = np.ones((shape[0], 8), np.float32)
    return _pool.matmul(a, np.ones((8, shape[1]), np.float32))


_STEP = st.one_of(
    st.tuples(st.just("alloc"), st.sampled_from(["empty", "ufunc", "matmul", "stack", "concat"]), st.sampled_from(SHAPES)),
    st.tuples(st.just("view"), st.integers(0, 50), st.sampled_from(["slice", "reshape", "T", "memoryview"])),
    st.tuples(st.just("drop"), st.integers(0, 50), st.booleans()),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=40))
def test_buffer_in_use_is_never_handed_out(program):
    live: list = []  # [(array or view, stamp)] still referenced by the "user"
    stamp = 0
    for step in program:
        if step[0] == "alloc":
            new = _allocate(step[1], step[2])
            for arr, _ in live:
                target = np.asarray(arr) if isinstance(arr, memoryview) else arr
                assert not np.shares_memory(new, target), "a buffer in use was handed out again"
            stamp += 1
            new[...] = stamp
            live.append((new, stamp))
        elif step[0] == "view" and live:
            arr, s = live[step[1] % len(live)]
            base = np.asarray(arr)
            view = {"slice": lambda: base[1:], "reshape": lambda: base.reshape(-1), "T": lambda: base.T,
                    "memoryview": lambda: memoryview(base)}[step[2]]()
            del base
            live.append((view, s))
        elif step[0] == "drop" and live:
            live.pop(step[1] % len(live))
        for arr, s in live:  # nothing written by a later allocation
            assert np.all(np.asarray(arr) == s)


def test_free_buffers_are_reused_and_busy_ones_counted():
    a = _pool.empty((512, 128), np.float32)
    addr = a.ctypes.data
    view = a[3:]
    del a
    b = _pool.empty((512, 128), np.float32)
    assert b.ctypes.data != addr  # the view keeps the first buffer busy
    del view
    c = _pool.empty((512, 128), np.float32)
    assert c.ctypes.data == addr  # now it is free: reused
    stats = _pool.buffer_pool_stats()
    assert stats["hits"] == 1 and stats["buffers"] == 2 and stats["busy"] == 2
    del b, c
    assert _pool.buffer_pool_stats()["busy"] == 0


def test_small_blocks_are_not_pooled():
    for _ in range(3):
        _pool.empty((64, 64), np.float32)  # 16 KiB
    assert _pool.buffer_pool_stats()["buffers"] == 0


def _dqn_like(params, x, target):
    from arrayrl import namespace_of, ops

    h = ops.linear(x, params["w0"], params["b0"], "relu")
    h = ops.linear(h, params["w1"], params["b1"], "tanh")
    xp = namespace_of(h)
    q = xp.exp(h * 0.5) - h / 3.0 + xp.tanh(h) * h  # elementwise taped ops on 2048 x 64 float32 (512 KiB)
    q = q @ params["w2"]
    return xp.mean(ops.smooth_l1(q - target))


def _problem():
    rng = np.random.default_rng(0)
    f = np.float32
    params = {"w0": rng.normal(size=(64, 16)).astype(f), "b0": rng.normal(size=(64,)).astype(f),
              "w1": (rng.normal(size=(64, 64)) / 8).astype(f), "b1": rng.normal(size=(64,)).astype(f),
              "w2": (rng.normal(size=(64, 2)) / 8).astype(f)}
    return params, rng.normal(size=(2048, 16)).astype(f), rng.normal(size=(2048, 2)).astype(f)


def test_values_identical_with_pool_on_and_off():
    params, x, target = _problem()
    vg = value_and_grad(_dqn_like)
    results = {}
    for on in (False, True, True):  # the second pooled call runs on reused buffers
        with _pool.buffer_pool(on):
            results.setdefault(on, []).append(vg(params, x, target))
    assert _pool.buffer_pool_stats()["hits"] > 0  # the pooled path did run (and reuse)
    v0, g0 = results[False][0]
    for v, g in results[True]:
        assert v.tobytes() == v0.tobytes()
        for k in g0:
            assert g[k].tobytes() == g0[k].tobytes(), k


def test_matmul_and_ufunc_values_and_fallbacks():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(512, 96)), rng.normal(size=(96, 80))
    with _pool.buffer_pool(False):
        ref_mm, ref_add = np.matmul(a, b), np.add(a, a[0])
    assert _pool.matmul(a, b).tobytes() == ref_mm.tobytes()
    add = _pool.elementwise(np.add)
    assert add(a, a[0]).tobytes() == ref_add.tobytes()  # broadcast row
    assert add(a, a.astype(np.float32)).dtype == np.float64  # mixed dtypes: NumPy's own promotion (not pooled)
    assert np.array_equal(add(a.T, 1.0), a.T + 1.0)  # strided input: not pooled, NumPy's result
    assert _pool.buffer_pool_stats()["buffers"] == 2


def test_cap_is_respected_and_free_buffers_evicted():
    _pool.set_buffer_pool(True, max_bytes=1024 * KIB)
    held = [_pool.empty((256, 256), np.float32) for _ in range(4)]  # 4 x 256 KiB fill the cap
    extra = _pool.empty((256, 256), np.float32)  # over the cap, all busy: not pooled
    stats = _pool.buffer_pool_stats()
    assert stats["held_bytes"] == 1024 * KIB and stats["buffers"] == 4
    del held[:2], extra
    big = _pool.empty((512, 256), np.float32)  # 512 KiB: two free buffers are evicted to make room
    stats = _pool.buffer_pool_stats()
    assert stats["held_bytes"] <= 1024 * KIB and stats["buffers"] == 3
    assert all(not np.shares_memory(big, h) for h in held)


def test_off_switch_and_unsupported_interpreter(monkeypatch):
    a = _pool.empty((512, 128), np.float32)
    addr = a.ctypes.data
    del a
    _pool.set_buffer_pool(False)
    assert not _pool.buffer_pool_enabled()
    assert _pool.buffer_pool_stats()["buffers"] == 0  # switching off dropped the buffers
    assert type(_pool.empty((512, 128), np.float32)) is np.ndarray
    assert _pool.buffer_pool_stats()["misses"] == 0  # plain np.empty
    _pool.set_buffer_pool(True)
    b = _pool.empty((512, 128), np.float32)
    assert _pool.buffer_pool_stats()["misses"] == 1  # on again: a fresh pool, no buffer kept from before
    del b, addr
    monkeypatch.setattr(_pool, "supported", lambda: False)
    with pytest.raises(RuntimeError, match="GIL"):
        _pool.set_buffer_pool(True)
    with pytest.raises(ValueError):
        _pool.set_buffer_pool(None, max_bytes=-1)


def test_env_var_switches_the_pool_off():
    code = "from arrayrl import _pool; print(_pool.buffer_pool_enabled(), _pool.buffer_pool_stats()['max_bytes'])"
    env = dict(os.environ, ARRAYRL_BUFFER_POOL="0", ARRAYRL_BUFFER_POOL_MAX_MB="2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", str(2 * 1024 * 1024)]
    env["ARRAYRL_BUFFER_POOL"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == str(_pool.supported())


def test_pools_are_per_thread():
    a = _pool.empty((512, 128), np.float32)
    addr = a.ctypes.data
    del a  # free in this thread's pool
    seen = []

    def other():
        seen.append(_pool.empty((512, 128), np.float32).ctypes.data)
        seen.append(_pool.buffer_pool_stats()["hits"])

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen[1] == 0  # the other thread has its own (empty) pool
    assert _pool.empty((512, 128), np.float32).ctypes.data == addr
