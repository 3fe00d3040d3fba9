"""The CuPy RawKernels (arrayrl._cupy_kernels) against the generic array-API path on CuPy and NumPy.

Goldens: :func:`arrayrl._scan.reverse_discounted_scan_raw`, ``_scan_adjoint`` of :mod:`arrayrl.ops` and the generic
:mod:`arrayrl.value.functional` estimators, run on the same CuPy arrays under ``generic_path()`` (and the scan on
NumPy copies). Shapes cover every launch path: batch-major rows (one segment), one long row (segments, carry pass,
a second level of carries), time-major columns, trailing feature axes; float32 and float64; done patterns with NaN
written after every cut. Skipped without CuPy and a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")
try:
    if cupy.cuda.runtime.getDeviceCount() < 1:
        pytest.skip("no GPU", allow_module_level=True)
except Exception as err:  # noqa: BLE001 - no driver
    pytest.skip(f"no GPU: {err}", allow_module_level=True)

import arrayrl._cupy_kernels as K  # noqa: E402
from arrayrl import ops  # noqa: E402
from arrayrl._scan import reverse_discounted_scan_raw  # noqa: E402
from arrayrl.value import functional as F  # noqa: E402

# (shape, time axis): rows [B, T]; one long row (segments and two levels of carries); [B, T, 1]; time-major
# [T, B]; a feature axis [B, T, 3]; short rows that are not whole tiles
CASES = [((512, 200), 1), ((1, 300_000), 1), ((3, 5000), 1), ((64, 37, 1), 1), ((333, 96), 0),
         ((8, 129, 3), 1), ((2, 1), 1), ((1000, 7), 1)]
DTYPES = [np.float32, np.float64]


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


def _data(shape, axis, dtype, seed=0):
    """x, c with cuts (c == 0) at random steps and NaN/inf in x *after* each cut (never reached by earlier steps:
    the scan runs backwards, so a cut at t hides t+1 ...; NaN sits right after it in time)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(dtype)
    c = rng.uniform(0.5, 1.0, size=shape).astype(dtype)
    done = rng.random(size=shape) < 0.05
    c[done] = 0
    return x, c, done


def _nan_after_cut(x, c, axis):
    """``x`` with NaN at step ``t + 1`` of every cut ``c_t == 0``: ``y_t`` must not see it (a cut is a select)."""
    x = x.copy()
    cut = np.moveaxis(c == 0, axis, -1)
    xm = np.moveaxis(x, axis, -1)
    nxt = np.zeros_like(cut)
    nxt[..., 1:] = cut[..., :-1]
    xm[nxt] = np.nan
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", CASES)
def test_reverse_and_forward_scan_agree_with_generic(shape, axis, dtype):
    x, c, _ = _data(shape, axis, dtype)
    x = _nan_after_cut(x, c, axis)
    xg, cg = cupy.asarray(x), cupy.asarray(c)
    ref = reverse_discounted_scan_raw(x, c, axis=axis)  # NumPy generic
    with K.generic_path():
        ref_cp = reverse_discounted_scan_raw(xg, cg, axis=axis)
    got = K.try_reverse_scan(xg, cg, axis)
    assert got is not None and got.dtype == dtype and got.shape == shape
    np.testing.assert_allclose(cupy.asnumpy(got), ref, **_tol(dtype))
    np.testing.assert_allclose(cupy.asnumpy(got), cupy.asnumpy(ref_cp), **_tol(dtype))
    # NaN stays exactly where the generic path has it (it never leaks through a cut)
    assert np.array_equal(np.isnan(cupy.asnumpy(got)), np.isnan(ref))

    g = cupy.asarray(np.random.default_rng(1).normal(size=shape).astype(dtype))
    with K.generic_path():
        ref_adj = ops._scan_adjoint(cupy, g, cg, axis)
    adj = K.try_forward_scan(g, cg, axis)
    np.testing.assert_allclose(cupy.asnumpy(adj), cupy.asnumpy(ref_adj), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((256, 100, 1), 1), ((1, 70_000, 1), 1), ((50, 40), 0), ((4, 33, 2), 1)])
@pytest.mark.parametrize("per_step", [False, True])
def test_fused_gae_and_td_lambda_agree_with_generic(shape, axis, dtype, per_step):
    rng = np.random.default_rng(2)
    v, nv, r = (cupy.asarray(rng.normal(size=shape).astype(dtype)) for _ in range(3))
    done = cupy.asarray(rng.random(size=shape) < 0.05)
    terminated = done & cupy.asarray(rng.random(size=shape) < 0.5)
    if per_step:
        gamma = cupy.asarray(rng.uniform(0.9, 1.0, size=shape).astype(dtype))
        lmbda = cupy.asarray(rng.uniform(0.8, 1.0, size=shape).astype(dtype))
    else:
        gamma, lmbda = 0.99, 0.95
    with K.generic_path():
        adv_ref, tgt_ref = F.generalized_advantage_estimate(gamma, lmbda, v, nv, r, done, terminated, time_dim=axis)
        ret_ref = F.td_lambda_return_estimate(gamma, lmbda, nv, r, done, terminated, time_dim=axis)
    adv, tgt = K.try_gae(gamma, lmbda, v, nv, r, done, terminated, axis)
    ret = K.try_td_lambda(gamma, lmbda, nv, r, done, terminated, axis)
    for got, ref in ((adv, adv_ref), (tgt, tgt_ref), (ret, ret_ref)):
        np.testing.assert_allclose(cupy.asnumpy(got), cupy.asnumpy(ref), **_tol(dtype))


def test_not_applicable_returns_none_and_dispatch_ignores_numpy():
    x = np.ones((4, 5))
    assert K.dispatch("reverse_scan", x, x, 1) is None
    xi = cupy.ones((4, 5), dtype=cupy.int32)
    assert K.try_reverse_scan(xi, xi, 1) is None  # not floating: the generic path raises
    xf = cupy.ones((4, 5))
    assert K.try_reverse_scan(xf, cupy.ones((4, 6)), 1) is None
    with K.generic_path():
        assert K.dispatch("reverse_scan", xf, xf, 1) is None
    assert K.dispatch("reverse_scan", xf, xf, 1) is not None


def test_taped_scan_gradient_uses_the_kernel_and_agrees():
    from arrayrl.autodiff import value_and_grad

    x, c, _ = _data((16, 300), 1, np.float64)
    xg, cg = cupy.asarray(x), cupy.asarray(c)

    def loss(x, c):
        import arrayrl

        xp = arrayrl.namespace_of(x, c)
        return xp.sum(ops.reverse_discounted_scan(x, c, axis=1) ** 2)

    v, (gx, gc) = value_and_grad(loss, argnums=(0, 1))(xg, cg)
    v0, (gx0, gc0) = value_and_grad(loss, argnums=(0, 1))(x, c)
    np.testing.assert_allclose(float(v), float(v0), rtol=1e-10)
    np.testing.assert_allclose(cupy.asnumpy(gx), gx0, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cupy.asnumpy(gc), gc0, rtol=1e-9, atol=1e-9)
