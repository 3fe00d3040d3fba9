"""The scan's adjoint (``ops._scan_adjoint``, the backward pass of ``reverse_discounted_scan``) takes numba's compiled
forward scan on raw NumPy arrays, and agrees with the generic flip-based path and with a plain Python loop
(``gx_0 = g_0``, ``gx_t = g_t + c_{t-1} gx_{t-1}``: the golden, written here from the recursion). Taped cotangents
(second order) keep the taped path. Skipped without numba."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

import arrayrl._numba_scan as K  # noqa: E402
from arrayrl import ops  # noqa: E402
from arrayrl.autodiff import grad  # noqa: E402


def _loop_adjoint(g, c, axis):
    g, c = np.moveaxis(g, axis, 0).astype(np.float64), np.moveaxis(c, axis, 0).astype(np.float64)
    out = np.empty_like(g)
    acc = np.zeros_like(g[0])
    for t in range(g.shape[0]):
        acc = g[t] + (c[t - 1] * acc if t else 0.0)
        out[t] = acc
    return np.moveaxis(out, 0, axis)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((7,), 0), ((3, 9), -1), ((9, 3), 0), ((2, 6, 4), 1), ((4, 5, 2), -1)])
def test_adjoint_uses_the_compiled_scan_and_agrees(monkeypatch, dtype, shape, axis):
    K.set_enabled(True)
    rng = np.random.default_rng(len(shape) + axis)
    g = rng.standard_normal(shape).astype(dtype)
    c = (rng.uniform(0, 1, shape) * (rng.uniform(size=shape) > 0.2)).astype(dtype)
    calls = []
    real = K.try_forward_scan
    monkeypatch.setattr(K, "try_forward_scan", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = ops._scan_adjoint(np, g, c, axis)
    assert calls and got.dtype == dtype and got.shape == g.shape
    with K.generic_path():
        generic = ops._scan_adjoint(np, g, c, axis)
    tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(got, generic, **tol)
    np.testing.assert_allclose(got, _loop_adjoint(g, c, axis), **tol)


def test_scan_gradient_and_second_order_through_the_dispatch():
    """First order takes the compiled adjoint; a taped cotangent (second order) still differentiates."""
    K.set_enabled(True)
    rng = np.random.default_rng(1)
    x, c, w = rng.standard_normal((3, 8)), rng.uniform(0, 1, (3, 8)), rng.standard_normal((3, 8))

    def f(x):
        return (ops.reverse_discounted_scan(x, c, axis=-1) * w).__array_namespace__().sum(
            ops.reverse_discounted_scan(x, c, axis=-1) * w)

    gx = grad(f)(x)
    np.testing.assert_allclose(gx, _loop_adjoint(w, c, -1), rtol=1e-13)

    def g2(x):  # d/dx of |grad_x <scan(x)^2, w>|^2: nonzero second derivative
        def h(xx):
            y = ops.reverse_discounted_scan(xx, c, axis=-1)
            return (y * y * w).__array_namespace__().sum(y * y * w)
        gg = grad(h)(x)
        return (gg * gg).__array_namespace__().sum(gg * gg)

    got = grad(g2)(x)
    with K.generic_path():
        ref = grad(g2)(x)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
