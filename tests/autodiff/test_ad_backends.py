"""The tape on every raw backend (numpy, array_api_strict float64 and float32-only, torch, cupy where present).

Gradients are computed on the backend and compared with central finite differences of the same code run on
float64 NumPy (reference.gradcheck), with float32 tolerances on float32-only devices. Gradients must come back as
raw arrays of the backend, with the argument's dtype and nesting.
"""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import namespace_of, ops
from arrayrl._backend import backend_name, is_taped
from arrayrl.autodiff import Tensor, check_grads, value_and_grad, vjp
from reference.gradcheck import numerical_grad, numerical_vjp


def _params(rng):
    return {
        "w": rng.normal(size=(3, 5)),
        "b": rng.normal(size=(5,)),
        "v": rng.normal(size=(5, 2)),
        "lo": np.array(-0.3),
    }


def composite_loss(p, x, a, c):
    """Touches most primitives and the fused ops; written once against the array API (no operators with a raw
    array on the left: array_api_strict's operators reject foreign types instead of deferring)."""
    xp = namespace_of(p["w"], x)
    h = xp.tanh(xp.matmul(x, p["w"]) + p["b"])  # (6, 5)
    h = ops.relu(h) + ops.softplus(h) * 0.1 + ops.sigmoid(h) * 0.2 + ops.silu(h) * 0.05
    q = xp.matmul(h, p["v"])  # (6, 2)
    q_sa = xp.take_along_axis(q, a, axis=-1)  # (6, 1)
    nxt = xp.max(q, axis=-1, keepdims=True)
    soft = ops.logsumexp(q, axis=-1, keepdims=True) - ops.log_softmax(q, axis=-1)[:, :1]
    d = xp.clip(q_sa - 0.9 * nxt, min=p["lo"], max=0.8) + soft * 0.1
    hub = ops.smooth_l1(d)
    seq = xp.reshape(xp.concat([d, xp.flip(d, axis=0)], axis=0), (3, 4))
    ret = ops.reverse_discounted_scan(seq, c, axis=-1)
    stats = xp.std(h, axis=0, correction=1) + xp.var(q, axis=None)
    w = xp.where(x[:, :1] > 0, hub, hub * 2.0)
    return (
        xp.mean(w)
        + xp.sum(ret[:, 0]) * 0.1
        + xp.sum(stats) * 0.01
        + xp.sum(xp.permute_dims(h, (1, 0))[1:3, ...] ** 2) * 0.01
        + xp.sum(xp.stack([q[:, 0], q[:, 1]], axis=1) * ops.softmax(q, axis=-1)) * 0.05
        + xp.sum(xp.sqrt(xp.exp(q) + 1.0)) * 0.01
        + xp.prod(xp.cumulative_sum(ops.elu(q[:2, :]), axis=0) + 3.0)
    )


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    p = _params(rng)
    x = rng.normal(size=(6, 3))
    a = rng.integers(0, 2, size=(6, 1))
    c = rng.uniform(0.5, 1.0, size=(3, 4))
    return p, x, a, c


def test_composite_loss_gradient_on_backend(raw_xp):
    p_np, x_np, a_np, c_np = _inputs()
    p = {k: raw_xp.from_numpy(v) for k, v in p_np.items()}
    x, a, c = raw_xp.from_numpy(x_np), raw_xp.from_numpy(a_np), raw_xp.from_numpy(c_np)
    v, g = value_and_grad(composite_loss)(p, x, a, c)

    # golden: finite differences of the same function on float64 NumPy, at the backend's (rounded) inputs
    p64 = {k: raw_xp.to_numpy(t).astype(np.float64) for k, t in p.items()}
    x64, c64 = raw_xp.to_numpy(x).astype(np.float64), raw_xp.to_numpy(c).astype(np.float64)
    want_v = composite_loss(p64, x64, a_np, c64)
    want_g = numerical_grad(lambda q: composite_loss(q, x64, a_np, c64), p64)
    rtol, atol = (1e-6, 1e-8) if raw_xp.is_float64 else (2e-3, 2e-4)
    assert backend_name(namespace_of(v)) == backend_name(raw_xp.ns)
    np.testing.assert_allclose(raw_xp.to_numpy(v), want_v, rtol=rtol if raw_xp.is_float64 else 1e-5)
    for k in p:
        assert not is_taped(g[k]), k
        assert backend_name(namespace_of(g[k])) == backend_name(raw_xp.ns), k
        assert g[k].dtype == p[k].dtype and tuple(g[k].shape) == tuple(p[k].shape), k
        np.testing.assert_allclose(raw_xp.to_numpy(g[k]), want_g[k], rtol=rtol, atol=atol, err_msg=k)


def test_check_grads_on_backend(raw_xp):
    if not raw_xp.is_float64:
        pytest.skip("finite differences need float64 (float32 covered by test_composite_loss_gradient_on_backend)")
    p_np, x_np, a_np, c_np = _inputs(1)
    p = {k: raw_xp.from_numpy(v) for k, v in p_np.items()}
    x, a, c = raw_xp.from_numpy(x_np), raw_xp.from_numpy(a_np), raw_xp.from_numpy(c_np)
    check_grads(lambda p, x, c: composite_loss(p, x, a, c), (p, x, c))


def test_getitem_and_shape_ops_on_backend(raw_xp):
    rng = np.random.default_rng(2)
    x_np = rng.normal(size=(3, 4, 2))
    x = raw_xp.from_numpy(x_np)

    idx_np = np.array([2, 0, 2])
    idx = raw_xp.from_numpy(idx_np)

    def f(x, idx):
        xp = namespace_of(x)
        parts = [
            x[1, ...],
            x[:, 1:3, :],
            x[None, 0:2, ::2, 1],
            xp.expand_dims(x[..., 0], axis=1)[:, :, 2:],
            xp.squeeze(x[:, :1, :], axis=1),
            xp.moveaxis(x, 0, -1)[:, :, 1],
            xp.broadcast_to(x[:1, ...], (2, 4, 2))[1, ...],
            xp.take(x, idx, axis=1)[:, :, 0],
        ]
        return sum(xp.sum(pt * float(i + 1)) for i, pt in enumerate(parts))

    v, g = value_and_grad(f)(x, idx)
    want = numerical_grad(lambda x: f(x, idx_np), raw_xp.to_numpy(x).astype(np.float64))
    tol = 1e-7 if raw_xp.is_float64 else 2e-4
    np.testing.assert_allclose(raw_xp.to_numpy(g), want, rtol=tol, atol=tol)


def test_vjp_and_tensor_namespace_on_backend(raw_xp):
    x = raw_xp.from_numpy(np.array([[0.5, -1.0], [2.0, 0.25]]))
    t = Tensor(x)
    xp = t.__array_namespace__()
    assert xp._arrayrl_base is namespace_of(x)
    assert backend_name(xp) == f"taped[{backend_name(raw_xp.ns)}]"
    assert not is_taped(xp.argmax(t, axis=1)) and not is_taped(xp.isnan(t))
    assert not is_taped(t > 0.0)
    out, vjp_fn = vjp(lambda x: namespace_of(x).exp(x) * 2.0, x)
    (g,) = vjp_fn(raw_xp.from_numpy(np.ones((2, 2))))
    np.testing.assert_allclose(raw_xp.to_numpy(g), 2 * np.exp(raw_xp.to_numpy(x)), rtol=raw_xp.rtol)
    assert g.dtype == x.dtype


def test_scan_vjp_on_backend(raw_xp):
    rng = np.random.default_rng(3)
    x_np, c_np = rng.normal(size=(2, 5)), rng.uniform(0, 1, size=(2, 5))
    x, c = raw_xp.from_numpy(x_np), raw_xp.from_numpy(c_np)
    cot_np = rng.normal(size=(2, 5))
    out, vjp_fn = vjp(lambda x, c: ops.reverse_discounted_scan(x, c, axis=1), x, c)
    gx, gc = vjp_fn(raw_xp.from_numpy(cot_np))
    want = numerical_vjp(
        lambda x, c: ops.reverse_discounted_scan(x, c, axis=1),
        (raw_xp.to_numpy(x).astype(np.float64), raw_xp.to_numpy(c).astype(np.float64)),
        cot_np,
    )
    tol = 1e-7 if raw_xp.is_float64 else 2e-4
    np.testing.assert_allclose(raw_xp.to_numpy(gx), want[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(raw_xp.to_numpy(gc), want[1], rtol=tol, atol=tol)
