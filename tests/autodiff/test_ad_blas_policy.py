"""The BLAS thread policy (arrayrl.autodiff.tuning): arrayrl's own small NumPy products run with OpenBLAS set to
one thread, the caller's count is restored afterwards, large products and ``"off"`` leave it alone.

The thread count in effect *during* a product is observed by spying on the raw NumPy product / the raw linear
kernel (monkeypatched), reading OpenBLAS's own getter. Values are checked against float64 NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl._kernels as K
from arrayrl import namespace_of, ops
from arrayrl.autodiff import (
    Tensor,
    blas_policy,
    blas_threads,
    grad,
    set_blas_policy,
    set_blas_threads,
    tuning,
    value_and_grad,
)

_FNS = tuning._openblas_setters()
pytestmark = pytest.mark.skipif(_FNS is None, reason="NumPy's OpenBLAS not found")


@pytest.fixture
def two_threads():
    """OpenBLAS at 2 threads and the default policy for the test; the previous state restored after it."""
    old_policy, old_thr = blas_policy()
    old = set_blas_threads(2)
    if _FNS[0]() != 2:
        set_blas_threads(old)
        pytest.skip("OpenBLAS cannot run 2 threads here")
    set_blas_policy("auto", serial_below=tuning.SERIAL_BELOW)
    yield
    set_blas_policy(old_policy, serial_below=old_thr)
    set_blas_threads(old)


@pytest.fixture
def spy(monkeypatch):
    """Records OpenBLAS's thread count at every raw NumPy product and raw linear kernel call arrayrl makes."""
    seen = []
    raw_mm, raw_linear = tuning._np_matmul_raw, K.linear

    def mm(a, b):
        seen.append(("matmul", a.shape, b.shape, _FNS[0]()))
        return raw_mm(a, b)

    def linear(x, w, b=None, act=None):
        seen.append(("linear", x.shape, w.shape, _FNS[0]()))
        return raw_linear(x, w, b, act)

    monkeypatch.setattr(tuning, "_np_matmul_raw", mm)
    monkeypatch.setattr(K, "linear", linear)
    return seen


def _mlp_loss(p, x):
    h = ops.linear(x, p["w0"], p["b0"], "relu")
    q = ops.linear(h, p["w1"], p["b1"])
    xp = namespace_of(q)
    return xp.mean((q @ p["v"]) ** 2) + xp.sum(xp.matmul(h, p["w1"].mT))


def _params(rng, n_in=4, hidden=64, dtype=np.float32):
    return {"w0": rng.normal(size=(hidden, n_in)).astype(dtype), "b0": rng.normal(size=hidden).astype(dtype),
            "w1": rng.normal(size=(hidden, hidden)).astype(dtype) / 8, "b1": rng.normal(size=hidden).astype(dtype),
            "v": rng.normal(size=(hidden, 2)).astype(dtype)}


def test_small_products_serial_and_restored(two_threads, spy):
    rng = np.random.default_rng(0)
    p, x = _params(rng), rng.normal(size=(256, 4)).astype(np.float32)
    v, g = value_and_grad(_mlp_loss)(p, x)
    kinds = {k for k, *_ in spy}
    assert kinds == {"matmul", "linear"} and len(spy) >= 8  # forward, VJPs, sum_to_shape's BLAS row sums
    assert all(t == 1 for *_, t in spy), spy
    assert _FNS[0]() == 2  # restored
    # values: float64 NumPy with the same formula
    p64, x64 = {k: a.astype(np.float64) for k, a in p.items()}, x.astype(np.float64)
    h = np.maximum(x64 @ p64["w0"].T + p64["b0"], 0)
    q = h @ p64["w1"].T + p64["b1"]
    np.testing.assert_allclose(v, np.mean((q @ p64["v"]) ** 2) + np.sum(h @ p64["w1"].T), rtol=1e-4)
    assert g["w0"].dtype == np.float32 and v.dtype == np.float32


def test_large_products_keep_the_threads(two_threads, spy):
    a, b = np.ones((2048, 128), np.float32), np.ones((128, 65), np.float32)  # 2048*128*65 > SERIAL_BELOW
    assert 2048 * 128 * 65 >= tuning.SERIAL_BELOW
    out = Tensor(a).__array_namespace__().matmul(a, b)  # the taped namespace's matmul, raw inputs
    assert spy[-1][-1] == 2 and float(out[0, 0]) == 128.0
    w = np.ones((65, 128), np.float32)
    ops.linear(a, w)
    assert spy[-1] == ("linear", (2048, 128), (65, 128), 2)


def test_threshold_counts_one_matrix_of_the_stack(two_threads, spy, monkeypatch):
    """The work is m*k*n of one product (OpenBLAS threads each GEMM of a stack on its own), for ``matmul`` and for
    ``linear`` (an ensemble weight [N, out, in] with x [N, M, in] is N products of M x in x out)."""
    works = []
    real = tuning.blas_call

    def recording(work, fn, *args):
        works.append(work)
        return real(work, fn, *args)

    monkeypatch.setattr(ops, "blas_call", recording)
    monkeypatch.setattr(tuning, "blas_call", recording)
    set_blas_policy("auto", serial_below=10**9)  # every product below: every call goes through blas_call
    ops.linear(np.ones((5, 7, 3), np.float32), np.ones((2, 3), np.float32))  # rows 35, in 3, out 2
    ops.linear(np.ones((6, 3), np.float32), np.ones((4, 2, 3), np.float32))  # shared x: 6 x 3 x 2 per member
    ops.linear(np.ones((4, 6, 3), np.float32), np.ones((4, 2, 3), np.float32))  # per member 6 x 3 x 2
    # empty inner dimension (batched: a 2-D product this small takes ops.linear's lean raw path, no blas_call)
    ops.linear(np.ones((1, 6, 0), np.float32), np.ones((2, 0), np.float32))
    tuning.np_matmul(np.ones((3, 4, 5)), np.ones((5, 2)))
    tuning.np_matmul(np.ones(5), np.ones((5, 2)))
    tuning.np_matmul(np.ones((4, 5)), np.ones(5))
    assert works == [35 * 3 * 2, 6 * 3 * 2, 6 * 3 * 2, 0, 4 * 5 * 2, 5 * 2, 4 * 5]


def test_policy_off_and_user_single_thread(two_threads, spy):
    rng = np.random.default_rng(1)
    p, x = _params(rng), rng.normal(size=(64, 4)).astype(np.float32)
    assert set_blas_policy("off") == "auto" and blas_policy()[0] == "off"
    grad(_mlp_loss)(p, x)
    assert spy and all(t == 2 for *_, t in spy)  # off: OpenBLAS untouched
    set_blas_policy("auto")
    spy.clear()
    with blas_threads(1) as found:  # the user's own process-wide setting wins and is kept
        assert found
        grad(_mlp_loss)(p, x)
        assert _FNS[0]() == 1
    assert spy and all(t == 1 for *_, t in spy) and _FNS[0]() == 2


def test_restored_when_the_product_raises(two_threads):
    with pytest.raises(ValueError):
        tuning.np_matmul(np.ones((3, 4)), np.ones((5, 2)))
    assert _FNS[0]() == 2


def test_torch_products_are_not_touched(two_threads, spy):
    torch = pytest.importorskip("torch")
    x, w = torch.ones((8, 3)), torch.ones((2, 3))
    assert tuple(ops.linear(x, w).shape) == (8, 2) and tuple(tuning.matmul(torch, x, w.mT).shape) == (8, 2)
    assert not [s for s in spy if s[0] == "matmul"]  # the NumPy product was never called


def test_policy_arguments_are_checked(monkeypatch):
    old = blas_policy()
    try:
        with pytest.raises(ValueError, match=r"policy: expected 'auto' or 'off', got 'fast'"):
            set_blas_policy("fast")
        with pytest.raises(ValueError, match="serial_below: expected a non-negative int, got -1"):
            set_blas_policy("auto", serial_below=-1)
        monkeypatch.setenv("ARRAYRL_BLAS_POLICY", "OFF")
        tuning._policy_from_env()
        assert blas_policy()[0] == "off"
        monkeypatch.setenv("ARRAYRL_BLAS_POLICY", "sometimes")
        with pytest.raises(ValueError, match="ARRAYRL_BLAS_POLICY: expected 'auto' or 'off', got 'sometimes'"):
            tuning._policy_from_env()
    finally:
        set_blas_policy(*old[:1], serial_below=old[1])
    assert blas_policy() == old


def test_default_threshold_is_all_serial_on_two_cores(monkeypatch):
    """On <= 2 usable cores a second BLAS thread only pays on an idle machine and costs 3-15x under load: the default
    "auto" threshold makes every product serial there; above, the size threshold applies."""
    monkeypatch.setattr(tuning, "_usable_cores", lambda: 2)
    assert tuning.default_serial_below() == tuning.ALWAYS_SERIAL
    monkeypatch.setattr(tuning, "_usable_cores", lambda: 16)
    assert tuning.default_serial_below() == tuning.SERIAL_BELOW
