"""The pooled NumPy kernels behind ``gru_gates`` and ``gate_silu`` (arrayrl._kernels.gru_gates_np & co.): bit-identical
to the generic array-API code they replace (run here by switching the NumPy dispatch off), values and gradients;
pooled buffers are reused across calls without touching a result that is still referenced; second order (taped
cotangents) keeps the generic rules."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import _kernels, _pool
from arrayrl._backend import namespace_of
from arrayrl.autodiff import check_grads, grad, value_and_grad
from arrayrl.nn import recurrent
from arrayrl.nn.recurrent import gate_silu, gru_gates

DTYPES = [np.float32, np.float64]
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-310, 5e-324, 1e30, -1e30, 88.7, -88.7, 1e-8,
                    -3.0, 0.5, 20.0])


def _sum(x):
    return namespace_of(x).sum(x)


@pytest.fixture
def generic(monkeypatch):
    """Run a function with the NumPy kernels' dispatch switched off (the generic array-API code on NumPy)."""

    def run(fn, *args):
        with monkeypatch.context() as m:
            m.setattr(_kernels, "numpy_floats", lambda *a: False)
            return fn(*args)

    return run


def _special(shape, dtype, seed):
    """Random normals with the special values (NaN, infinities, signed zeros, denormals, huge) sprinkled in."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=shape)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=min(flat.size, 3 * SPECIAL.size), replace=False)
    flat[idx] = np.resize(SPECIAL, idx.size)
    with np.errstate(over="ignore", under="ignore"):
        return x.astype(dtype)


# (gi/gh shape, hx shape): one row, the GRUCell's [M, 3H] (small: heap; 1024 x 64: pooled), a leading batch, and
# non-contiguous slices of wider arrays
SHAPES = [((12,), (4,)), ((5, 12), (5, 4)), ((1024, 192), (1024, 64)), ((3, 7, 24), (3, 7, 8))]


def _gru_args(gshape, hshape, dtype, seed, special, strided):
    make = _special if special else (lambda s, d, k: np.random.default_rng(k).normal(scale=2.0, size=s).astype(d))
    if strided:  # columns of wider arrays (rows not contiguous)
        wide = lambda s, k: make(s[:-1] + (2 * s[-1],), dtype, k)[..., ::2]
        return wide(gshape, seed), wide(gshape, seed + 1), wide(hshape, seed + 2)
    return make(gshape, dtype, seed), make(gshape, dtype, seed + 1), make(hshape, dtype, seed + 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: "x".join(map(str, s[0])))
@pytest.mark.parametrize("special", [False, True], ids=["random", "special"])
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "strided"])
def test_gru_gates_kernel_bit_identical_to_generic(generic, dtype, shapes, special, strided):
    """Forward and every cotangent (all arguments, then ``gi`` only, then ``gh`` only) equal the generic code's
    bit for bit (NaN where NaN); dtypes kept."""
    gi, gh, hx = _gru_args(*shapes, dtype, 0, special, strided)
    v = _special(hx.shape, dtype, 9) if special else np.random.default_rng(9).normal(size=hx.shape).astype(dtype)
    loss = lambda a, b, c: _sum(gru_gates(a, b, c) * v)
    with np.errstate(all="ignore"):
        ours = gru_gates(gi, gh, hx)
        ref = generic(gru_gates, gi, gh, hx)
        assert ours.dtype == dtype and ours.shape == hx.shape
        np.testing.assert_array_equal(ours, ref)
        for argnums in [(0, 1, 2), (0,), (1,), (1, 2)]:
            _, g_ours = value_and_grad(loss, argnums=argnums)(gi, gh, hx)
            _, g_ref = generic(value_and_grad(loss, argnums=argnums), gi, gh, hx)
            for a, b in zip(g_ours, g_ref):
                assert a.dtype == dtype
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (5, 3), (1024, 64), (4, 16, 1024)], ids=str)
@pytest.mark.parametrize("special", [False, True], ids=["random", "special"])
def test_gate_silu_kernel_bit_identical_to_generic(generic, dtype, shape, special):
    x = _special(shape, dtype, 3) if special else np.random.default_rng(3).normal(scale=4.0, size=shape).astype(dtype)
    v = np.random.default_rng(4).normal(size=shape).astype(dtype)
    loss = lambda a: _sum(gate_silu(a) * v)
    with np.errstate(all="ignore"):
        ours = gate_silu(x)
        assert ours.dtype == dtype
        np.testing.assert_array_equal(ours, generic(gate_silu, x))
        (g_ours,) = value_and_grad(loss, argnums=(0,))(x)[1]
        (g_ref,) = generic(value_and_grad(loss, argnums=(0,)), x)[1]
        assert g_ours.dtype == dtype
        np.testing.assert_array_equal(g_ours, g_ref)


def test_gate_silu_values_vs_formula():
    """Golden: ``x / (1 + exp(-x))`` and its derivative ``s (1 + x (1 - s))`` in float64 (hand formula; the tanh
    form's ``0.5 tanh + 0.5`` cancels in the negative tail, so an absolute tolerance of a few ulps of 1 there)."""
    x = np.linspace(-30, 30, 4001)
    s = 1.0 / (1.0 + np.exp(-x))
    np.testing.assert_allclose(gate_silu(x), x * s, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(grad(lambda a: _sum(gate_silu(a)))(x), s + x * s * (1 - s), rtol=1e-13, atol=1e-14)


def test_kernels_reuse_pool_buffers_and_keep_results():
    """At the 1024 x 64 shape every buffer of the kernels comes from the pool: once warm, a call takes all its
    buffers (gates 3, their VJP 6, silu 1, its VJP 2) as pool hits, no new allocation, and never those of a result
    still referenced (it stays unchanged)."""
    if not (_pool.supported() and _pool.buffer_pool_enabled()):
        pytest.skip("buffer pool unavailable")
    gi, gh, hx = _gru_args((1024, 192), (1024, 64), np.float32, 0, False, False)
    g = np.random.default_rng(5).normal(size=hx.shape).astype(np.float32)
    _pool.clear_buffer_pool()
    kept = [_kernels.gru_gates_np(gi, gh, hx), *_kernels.gru_gates_vjp_np(g, gi, gh, hx, True, True),
            _kernels.gate_silu_np(gh), _kernels.gate_silu_vjp_np(g, hx)]
    copies = [a.copy() for a in kept]

    def calls(scale):
        _kernels.gru_gates_np(gi * scale, gh, hx)
        _kernels.gru_gates_vjp_np(g * scale, gi, gh, hx, True, True)
        _kernels.gate_silu_np(gh * scale)
        _kernels.gate_silu_vjp_np(g * scale, hx)

    calls(0.5)  # warm: the kept results hold their buffers, so this call adds its own
    before = _pool.buffer_pool_stats()
    for k in range(3):
        calls(0.25 * (k + 1))
    after = _pool.buffer_pool_stats()
    assert after["misses"] == before["misses"]
    assert after["hits"] - before["hits"] == 3 * (3 + 6 + 1 + 2)
    for a, b in zip(kept, copies):
        np.testing.assert_array_equal(a, b)


def test_dispatch_only_raw_numpy_of_one_float_dtype():
    f32, f64 = np.zeros(3, np.float32), np.zeros(3)
    assert _kernels.numpy_floats(f32, f32) and _kernels.numpy_floats(f64)
    assert not _kernels.numpy_floats(f32, f64)
    assert not _kernels.numpy_floats(np.zeros(3, np.int64))
    assert not _kernels.numpy_floats(f32, [0.0, 0.0, 0.0])


def test_second_order_through_gru_gates_and_silu():
    """Taped cotangents keep the generic rules: Hessian-vector products equal finite differences of the gradient,
    also for the gradient as a function of the output weights ``w`` (the tape then boxes the primals as well: the
    kernels see only raw NumPy at first order)."""
    rng = np.random.default_rng(2)
    gi, gh, hx = rng.normal(size=(3, 6)), rng.normal(size=(3, 6)), rng.normal(size=(3, 2))
    g = grad(lambda a, b, c: _sum(gate_silu(gru_gates(a, b, c)) ** 2), argnums=(0, 1, 2))
    check_grads(lambda a, b, c: _sum(g(a, b, c)[0] * g(a, b, c)[1]) + _sum(g(a, b, c)[2]), (gi, gh, hx))
    w = rng.normal(size=(3, 2))
    dgate = lambda w: grad(lambda a, b, c: _sum(gru_gates(a, b, c) * w), argnums=(0, 1, 2))(gi, gh, hx)
    check_grads(lambda w: _sum(dgate(w)[0] ** 2) + _sum(dgate(w)[1] ** 2) + _sum(dgate(w)[2] ** 2), (w,))
    dsilu = lambda w: grad(lambda a: _sum(gate_silu(a) * w))(hx)
    check_grads(lambda w: _sum(dsilu(w) ** 2), (w,))
