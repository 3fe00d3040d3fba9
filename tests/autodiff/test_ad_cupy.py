"""The tape over CuPy (``taped-cupy``): values and gradients on CuPy arrays equal the NumPy tape's.

Covers the taped namespace built over ``array_api_compat.cupy`` (elementwise ops, reductions, matmul, indexing,
where, take_along_axis), the fused primitives of :mod:`arrayrl.ops` and raw CuPy operands on either side of a
Tensor. Skipped without CuPy and a GPU.
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

from arrayrl import namespace_of, ops  # noqa: E402
from arrayrl.autodiff import Tensor, check_grads, value_and_grad  # noqa: E402


def _loss(p, x, idx):
    h = ops.linear(x, p["w0"], p["b0"], "relu")
    h = ops.linear(h, p["w1"], p["b1"], "tanh")
    xp = namespace_of(h)
    q = xp.take_along_axis(h, idx, axis=-1)
    y = xp.where(q > 0, xp.exp(-q), ops.softplus(q)) + ops.logsumexp(h, axis=-1, keepdims=True)
    s = ops.reverse_discounted_scan(xp.reshape(h[:, :4], (-1, 4)), 0.9 * xp.ones_like(h[:, :4]), axis=-1)
    return xp.mean(ops.smooth_l1(y - 1.0)) + xp.sum(s ** 2) / 100.0 + xp.max(h) * xp.std(h)


def _problem():
    rng = np.random.default_rng(0)
    p = {"w0": rng.normal(size=(16, 5)), "b0": rng.normal(size=(16,)),
         "w1": rng.normal(size=(6, 16)) / 4, "b1": rng.normal(size=(6,))}
    return p, rng.normal(size=(32, 5)), rng.integers(0, 6, size=(32, 1))


def test_taped_cupy_namespace_values_and_gradients_match_numpy():
    p, x, idx = _problem()
    v0, g0 = value_and_grad(_loss)(p, x, idx)
    pc = {k: cupy.asarray(v) for k, v in p.items()}
    v, g = value_and_grad(_loss)(pc, cupy.asarray(x), cupy.asarray(idx))
    assert type(g["w0"]) is cupy.ndarray
    np.testing.assert_allclose(float(v), float(v0), rtol=1e-12)
    for k in g0:
        np.testing.assert_allclose(cupy.asnumpy(g[k]), g0[k], rtol=1e-10, atol=1e-12)


def test_taped_cupy_namespace_operand_order_and_finite_differences():
    w = cupy.asarray(np.random.default_rng(1).normal(size=(3, 4)))
    raw = cupy.ones((2, 3))
    xp = Tensor(w).__array_namespace__()
    assert "cupy" in xp.__name__
    value, grad = value_and_grad(lambda w: xp.sum((raw @ w) * (1.0 - w[0]) / (2.0 + (raw @ w) ** 2)))(w)
    assert type(grad) is cupy.ndarray and grad.shape == (3, 4)
    check_grads(lambda w: xp.sum(xp.tanh(raw @ w) ** 2), (w,))
