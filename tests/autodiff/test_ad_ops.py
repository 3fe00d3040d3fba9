"""arrayrl.ops: fused VJPs vs the same functions composed from elementary taped ops; numerical stability; the
NumPy accelerator of zero_where vs the generic code."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from ad_helpers import assert_vjp_fd, farrays
from arrayrl import _kernels, namespace_of, ops
from arrayrl.autodiff import Tensor, stop_gradient, vjp


def _lse(x, axis=None, keepdims=False):
    xp = namespace_of(x)
    m = stop_gradient(xp.max(x, axis=axis, keepdims=True))
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=tuple(range(x.ndim)) if axis is None else axis)


def _sigmoid(x):
    return 1.0 / (1.0 + namespace_of(x).exp(-x))


COMPOSED = {
    "logsumexp": (lambda x: ops.logsumexp(x, axis=-1), lambda x: _lse(x, axis=-1)),
    "logsumexp_all_keep": (lambda x: ops.logsumexp(x, keepdims=True), lambda x: _lse(x, keepdims=True)),
    "log_softmax": (lambda x: ops.log_softmax(x, axis=0), lambda x: x - _lse(x, axis=0, keepdims=True)),
    "softmax": (
        lambda x: ops.softmax(x, axis=-1),
        lambda x: namespace_of(x).exp(x - _lse(x, axis=-1, keepdims=True)),
    ),
    "softplus": (
        ops.softplus,
        lambda x: namespace_of(x).maximum(x, 0.0) + namespace_of(x).log1p(namespace_of(x).exp(-namespace_of(x).abs(x))),
    ),
    "softplus_beta": (lambda x: ops.softplus(x, beta=2.5), lambda x: namespace_of(x).log1p(namespace_of(x).exp(2.5 * x)) / 2.5),
    "sigmoid": (ops.sigmoid, _sigmoid),
    "relu": (ops.relu, lambda x: namespace_of(x).maximum(x, 0.0)),
    "elu": (lambda x: ops.elu(x, 0.7), lambda x: namespace_of(x).where(x > 0, x, 0.7 * namespace_of(x).expm1(x))),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.1), lambda x: namespace_of(x).where(x > 0, x, 0.1 * x)),
    "silu": (ops.silu, lambda x: x * _sigmoid(x)),
    "smooth_l1": (
        ops.smooth_l1,
        lambda x: namespace_of(x).where(namespace_of(x).abs(x) < 1.0, 0.5 * x * x, namespace_of(x).abs(x) - 0.5),
    ),
    "smooth_l1_beta": (
        lambda x: ops.smooth_l1(x, beta=0.3),
        lambda x: namespace_of(x).where(namespace_of(x).abs(x) < 0.3, 0.5 * x * x / 0.3, namespace_of(x).abs(x) - 0.15),
    ),
}


@pytest.mark.parametrize("name", sorted(COMPOSED))
@given(data=st.data())
def test_fused_vjp_matches_composed(name, data):
    fused, composed = COMPOSED[name]
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    # away from the kinks (0 for relu-likes, +-beta for smooth_l1) where composed forms pick other sub-gradients
    x = data.draw(farrays(shape, -3.0, 3.0, avoid=(0.0, -1.0, 1.0, -0.3, 0.3), margin=1e-3))
    out_f, vjp_f = vjp(fused, x)
    out_c, vjp_c = vjp(composed, x)
    np.testing.assert_allclose(out_f, out_c, rtol=1e-12, atol=1e-12)
    cot = np.random.default_rng(0).normal(size=np.shape(out_f))
    np.testing.assert_allclose(vjp_f(np.asarray(cot))[0], vjp_c(np.asarray(cot))[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(COMPOSED))
@given(data=st.data())
def test_fused_vjp_matches_finite_differences(name, data):
    fused, _ = COMPOSED[name]
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4))
    x = data.draw(farrays(shape, -3.0, 3.0, avoid=(0.0, -1.0, 1.0, -0.3, 0.3), margin=1e-2))
    assert_vjp_fd(fused, (x,))


def _scan_composed(x, c, axis):
    xp = namespace_of(x, c)
    xs, cs = xp.moveaxis(x, axis, -1), xp.moveaxis(c, axis, -1)
    T = xs.shape[-1]
    ys = [xs[..., T - 1]]
    for t in range(T - 2, -1, -1):
        ys.append(xs[..., t] + cs[..., t] * ys[-1])
    return xp.moveaxis(xp.stack(ys[::-1], axis=-1), -1, axis)


@given(data=st.data())
def test_reverse_discounted_scan_fused_vs_composed(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(farrays(shape))
    c = data.draw(farrays(shape, 0.0, 1.0))
    out_f, vjp_f = vjp(lambda x, c: ops.reverse_discounted_scan(x, c, axis=axis), x, c)
    out_c, vjp_c = vjp(lambda x, c: _scan_composed(x, c, axis), x, c)
    np.testing.assert_allclose(out_f, out_c, rtol=1e-12, atol=1e-12)
    cot = np.asarray(np.random.default_rng(1).normal(size=shape))
    for a, b in zip(vjp_f(cot), vjp_c(cot)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert_vjp_fd(lambda x, c: ops.reverse_discounted_scan(x, c, axis=axis), (x, c))


def test_reverse_discounted_scan_zero_length():
    x = np.zeros((2, 0))
    out, vjp_fn = vjp(lambda x, c: ops.reverse_discounted_scan(x, c, axis=1), x, x.copy())
    gx, gc = vjp_fn(np.zeros((2, 0)))
    assert out.shape == gx.shape == gc.shape == (2, 0)


def test_numerical_stability_at_extremes():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        np.testing.assert_allclose(ops.softplus(x), [0.0, np.log1p(np.exp(-50.0)), np.log(2.0), 50.0 + np.log1p(np.exp(-50.0)), 1000.0])
        np.testing.assert_allclose(ops.sigmoid(x), [0.0, 1 / (1 + np.exp(50.0)), 0.5, 1 / (1 + np.exp(-50.0)), 1.0])
        assert ops.logsumexp(x) == 1000.0
        np.testing.assert_allclose(ops.log_softmax(x)[-1], 0.0)
        np.testing.assert_allclose(ops.softmax(x), [0, 0, 0, 0, 1.0])
        np.testing.assert_allclose(ops.logsumexp(np.array([1e308, 1e308])), 1e308 + np.log(2.0))
    with np.errstate(divide="ignore"):  # log(0) = -inf is the answer
        assert ops.logsumexp(np.array([-np.inf, -np.inf])) == -np.inf
    assert ops.logsumexp(np.array([np.inf, 1.0])) == np.inf
    g = vjp(ops.softplus, x)[1](np.ones(5))[0]
    np.testing.assert_allclose(g, ops.sigmoid(x))


def test_softplus_threshold_like_torch():
    torch = pytest.importorskip("torch")
    x = np.array([-30.0, -1.0, 0.5, 10.0, 19.0, 21.0, 40.0])
    for beta, thr in ((1.0, 20.0), (2.0, 5.0)):
        want = torch.nn.functional.softplus(torch.tensor(x), beta=beta, threshold=thr).numpy()
        np.testing.assert_allclose(ops.softplus(x, beta=beta, threshold=thr), want, rtol=1e-15, atol=0)


def test_relu_nan_and_inf_like_torch():
    torch = pytest.importorskip("torch")
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1.0, 2.0])
    np.testing.assert_array_equal(ops.relu(x), torch.relu(torch.tensor(x)).numpy())
    g = vjp(ops.relu, x)[1](np.ones(7))[0]
    tx = torch.tensor(x, requires_grad=True)
    torch.relu(tx).backward(torch.ones(7, dtype=torch.float64))
    np.testing.assert_array_equal(g, tx.grad.numpy())


# each selection kernel and its golden: np.where with the zero on the same side
SELECTIONS = {"zero_where": (_kernels.zero_where, lambda c, a: np.where(c, a.dtype.type(0), a)),
              "keep_where": (_kernels.keep_where, lambda c, a: np.where(c, a, a.dtype.type(0)))}


@pytest.mark.parametrize("kind", sorted(SELECTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [5, 4096])  # below and above the accelerator's size threshold
def test_selection_numpy_accelerators_are_bit_identical_to_where(kind, dtype, n):
    """``zero_where(c, a) = where(c, 0, a)`` and ``keep_where(c, a) = where(c, a, 0)`` bit for bit: an exact +0.0
    where zeroed, NaN/inf/-0.0 kept elsewhere, strided inputs too."""
    select, golden = SELECTIONS[kind]
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, 3)).astype(dtype)
    a[:4, 0] = [np.nan, np.inf, -np.inf, -0.0]
    cond = rng.random(size=(n, 3)) < 0.5
    cond[:4, 0] = [True, False, True, False]
    got = select(cond, a)
    want = golden(cond, a)
    assert got.dtype == dtype and got.shape == a.shape
    np.testing.assert_array_equal(got.view(f"i{a.itemsize}"), want.view(f"i{a.itemsize}"))
    strided = a[::2]
    np.testing.assert_array_equal(select(cond[::2], strided), golden(cond[::2], strided))


def test_ops_on_other_backends_return_backend_arrays(raw_xp):
    x = raw_xp.from_numpy(np.array([[-1.0, 0.5, 2.0], [0.0, -3.0, 1.0]]))
    for fn in (ops.relu, ops.sigmoid, ops.softplus, ops.smooth_l1, ops.silu, lambda v: ops.logsumexp(v, axis=1)):
        r = fn(x)
        assert type(r) is type(x) and r.dtype == x.dtype
        t = fn(Tensor(x))
        assert isinstance(t, Tensor) and type(t.value) is type(x)
