"""Fused primitives and fast paths added for speed: ``ops.linear`` (dense layer + activation, one node with a joint
VJP) against the composed elementary ops on every raw backend and against finite differences; the NumPy accelerators
(linear, relu, elu, elu_slope) against the generic code; the outer-product fast path of the batched matmul VJP;
``defvjp_joint``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from ad_helpers import assert_vjp_fd
from arrayrl import _kernels, namespace_of, ops
from arrayrl.autodiff import Tensor, defvjp_joint, primitive, value_and_grad, vjp

ACTS = [None, "relu", "tanh"]


def _composed(x, w, b, activation):
    """The same layer from elementary taped ops: transpose, matmul, add, activation."""
    xp = namespace_of(x, w, b)
    y = xp.matmul(x, w.mT)
    if b is not None:
        y = y + (xp.expand_dims(b, axis=-2) if w.ndim == 3 else b)
    if activation == "relu":
        return ops.relu(y)
    if activation == "tanh":
        return xp.tanh(y)
    return y


# (x shape, weight shape, bias shape or None): plain, leading batch dims, ensemble with shared and stacked input
SHAPES = [
    ((5, 3), (4, 3), (4,)),
    ((2, 5, 3), (4, 3), (4,)),
    ((5, 3), (4, 3), None),
    ((5, 3), (2, 4, 3), (2, 4)),
    ((2, 5, 3), (2, 4, 3), (2, 4)),
]


def _arrays(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [None if s is None else rng.normal(size=s) for s in shapes]


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_linear_equals_composed_ops_on_every_backend(raw_xp, shapes, activation):
    x, w, b = (None if a is None else raw_xp.from_numpy(a) for a in _arrays(shapes))
    args = (x, w) if b is None else (x, w, b)

    def fused(*a):
        return ops.linear(a[0], a[1], a[2] if len(a) > 2 else None, activation)

    def composed(*a):
        return _composed(a[0], a[1], a[2] if len(a) > 2 else None, activation)

    out_f, vjp_f = vjp(fused, *args)
    out_c, vjp_c = vjp(composed, *args)
    assert type(out_f) is type(x) and out_f.dtype == x.dtype and tuple(out_f.shape) == tuple(out_c.shape)
    tol = dict(rtol=raw_xp.rtol, atol=raw_xp.atol)
    np.testing.assert_allclose(raw_xp.to_numpy(out_f), raw_xp.to_numpy(out_c), **tol)
    np.testing.assert_allclose(raw_xp.to_numpy(fused(*args)), raw_xp.to_numpy(out_c), **tol)  # raw call, no tape
    cot = raw_xp.from_numpy(np.random.default_rng(1).normal(size=tuple(out_f.shape)))
    for gf, gc, a in zip(vjp_f(cot), vjp_c(cot), args):
        assert tuple(gf.shape) == tuple(a.shape) and gf.dtype == a.dtype
        np.testing.assert_allclose(raw_xp.to_numpy(gf), raw_xp.to_numpy(gc), **tol)


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_linear_vjp_matches_finite_differences(shapes, activation):
    x, w, b = _arrays(shapes, seed=2)
    z = _composed(x, w, b, None)
    if activation == "relu" and np.min(np.abs(z)) < 1e-3:
        pytest.skip("a pre-activation lies on the kink of relu")
    if b is None:
        assert_vjp_fd(lambda x, w: ops.linear(x, w, None, activation), (x, w))
    else:
        assert_vjp_fd(lambda x, w, b: ops.linear(x, w, b, activation), (x, w, b))


@given(st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.sampled_from(ACTS), st.booleans())
def test_linear_vjp_random_shapes_finite_differences(m, n_in, n_out, activation, constant_input):
    rng = np.random.default_rng(m * 100 + n_in * 10 + n_out)
    x, w, b = rng.normal(size=(m, n_in)), rng.normal(size=(n_out, n_in)), rng.normal(size=(n_out,))
    if activation == "relu":
        z = x @ w.T + b
        if np.min(np.abs(z)) < 1e-3:
            return
    # constant_input: x is not differentiated, so the joint VJP skips its cotangent (argnums)
    argnums = (1, 2) if constant_input else None
    assert_vjp_fd(lambda x, w, b: ops.linear(x, w, b, activation), (x, w, b), argnums=argnums)


def test_linear_records_one_node_and_skips_constant_inputs():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(6, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4,))

    def loss(p):
        y = ops.linear(x, p["w"], p["b"], "relu")
        assert isinstance(y, Tensor) and y._parents and len(y._parents) == 2  # x is a constant: not a parent
        return namespace_of(y).sum(y * y)

    v, g = value_and_grad(loss)({"w": w, "b": b})
    z = np.maximum(x @ w.T + b, 0.0)
    np.testing.assert_allclose(v, np.sum(z * z))
    gz = 2 * z
    np.testing.assert_allclose(g["w"], gz.T @ x)
    np.testing.assert_allclose(g["b"], gz.sum(0))


def test_linear_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        ops.linear(np.ones((2, 3)), np.ones((4, 3)), None, "swish")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("activation", ACTS)
def test_linear_numpy_accelerator_equals_generic(dtype, shapes, activation):
    x, w, b = (None if a is None else a.astype(dtype) for a in _arrays(shapes, seed=3))
    x = x * 3.0
    x.flat[0] = np.nan  # NaN propagates through the fused relu, as through ops.relu
    got = _kernels.linear(x, w, b, activation)
    want = _kernels._linear_generic(x, w, b, activation)
    assert got.dtype == want.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_linear_numpy_accelerator_does_not_write_inputs():
    rng = np.random.default_rng(4)
    x, w, b = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4,))
    copies = [a.copy() for a in (x, w, b)]
    _kernels.linear(x, w, b, "relu")
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_numpy_accelerator_equals_generic(dtype):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1024, 4)).astype(dtype)  # above the accelerator's size threshold
    x[:5, 0] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    got = _kernels.relu(x)
    np.testing.assert_array_equal(got, np.where(x <= 0, dtype(0), x))  # NaN positions compare equal
    zeros = _kernels._np_zeros_like(x)
    assert not zeros.flags.writeable and not zeros.any()


@pytest.mark.parametrize("alpha", [1.0, 0.3, 1.7, -0.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elu_and_its_slope_numpy_paths_equal_generic(alpha, dtype):
    rng = np.random.default_rng(6)
    x = (rng.normal(size=(300, 7)) * 3).astype(dtype)
    x[0, :4] = [0.0, -0.0, 1e-30, -1e-30]
    want = np.where(x > 0, x, alpha * np.expm1(x.astype(np.float64))).astype(dtype)
    got = _kernels.elu(x, alpha)
    assert got.dtype == dtype
    # NumPy float32: exp(m) - 1 instead of expm1 (absolute error below one float32 ulp of 1 times alpha)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-15,
                               atol=1.2e-7 * abs(alpha) if dtype == np.float32 else 0)
    slope = _kernels.elu_slope(x, alpha)
    np.testing.assert_allclose(slope, np.where(x > 0, 1.0, alpha * np.exp(x)), rtol=1e-6 if dtype == np.float32 else 1e-15)
    assert slope.dtype == dtype
    # the generic formulas (another backend) give the same values
    strict = pytest.importorskip("array_api_strict")
    xs = strict.asarray(x)
    np.testing.assert_allclose(np.asarray(_kernels.elu_slope(xs, alpha)), slope, rtol=1e-6, atol=0)
    np.testing.assert_allclose(np.asarray(_kernels.elu(xs, alpha)), want, rtol=1e-6 if dtype == np.float32 else 1e-15,
                               atol=1e-7 if dtype == np.float32 else 0)


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((6, 1, 3), (6, 3, 4)), ((6, 1, 4), (6, 4, 1)), ((6, 2, 3), (6, 3, 1)), ((2, 6, 1, 3), (6, 3, 2)), ((6, 1, 3), (3, 4))],
)
def test_batched_matmul_outer_product_fast_paths_match_finite_differences(a_shape, b_shape):
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=a_shape), rng.normal(size=b_shape)
    assert_vjp_fd(lambda a, b: namespace_of(a, b).matmul(a, b), (a, b))


def test_defvjp_joint_computes_shared_work_once():
    calls = []

    def raw(x, y):
        return x * y + x

    p = primitive(raw, name="xy_plus_x")

    def joint(xp, g, ans, needs, x, y):
        calls.append(needs)
        return (g * (y + 1.0) if 0 in needs else None, g * x if 1 in needs else None)

    defvjp_joint(p, joint)
    x, y = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    gx, gy = vjp(p, x, y)[1](np.ones(2))
    np.testing.assert_allclose(gx, y + 1.0)
    np.testing.assert_allclose(gy, x)
    assert calls == [(0, 1)]
    calls.clear()
    (gy_only,) = vjp(lambda y: p(x, y), y)[1](np.ones(2))
    np.testing.assert_allclose(gy_only, x)
    assert calls == [(1,)]


@pytest.mark.parametrize("x_shape, i_shape, axis", [((6, 4), (6, 1), -1), ((2, 3, 5), (2, 3, 1), 2), ((6, 4), (6, 2), -1),
                                                    ((6, 4), (1, 4), 0), ((6, 4), (1, 1), -1)])
def test_take_along_axis_numpy_accelerator_equals_numpy(x_shape, i_shape, axis):
    rng = np.random.default_rng(8)
    x = rng.normal(size=x_shape)
    n = x_shape[axis]
    idx = rng.integers(-n, n, size=i_shape)  # negative indices count from the end
    np.testing.assert_array_equal(_kernels.take_along_axis(x, idx, axis), np.take_along_axis(x, idx, axis=axis))
    ns = Tensor(x).__array_namespace__()  # the taped NumPy namespace uses the accelerator
    out, vjp_fn = vjp(lambda v: ns.take_along_axis(v, idx, axis=axis), x)
    np.testing.assert_array_equal(out, np.take_along_axis(x, idx, axis=axis))
    cot = np.random.default_rng(0).normal(size=out.shape)
    (g,) = vjp_fn(cot)
    want = np.zeros_like(x)  # scatter-add of the cotangent at the gathered positions
    full_idx = np.broadcast_to(idx % n, out.shape)
    grids = list(np.meshgrid(*[np.arange(s) for s in out.shape], indexing="ij"))
    grids[axis % x.ndim] = full_idx
    np.add.at(want, tuple(grids), cot)
    np.testing.assert_allclose(g, want, rtol=0, atol=0)
    with pytest.raises(IndexError):
        _kernels.take_along_axis(x, np.full(i_shape, n + 3), axis)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.bool_])
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2), (1,)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_numpy_sum_and_mean_kernels_equal_numpy(dtype, axis, keepdims):
    x = (np.random.default_rng(9).normal(size=(4, 3, 5)) * 10).astype(dtype)
    for fast, ref in ((_kernels._np_sum, np.sum), (_kernels._np_mean, np.mean)):
        got, want = fast(x, axis=axis, keepdims=keepdims), ref(x, axis=axis, keepdims=keepdims)
        assert type(got) is type(want) and got.dtype == want.dtype and np.shape(got) == np.shape(want)
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_kernels._np_sum(x, 1), np.sum(x, 1))  # positional axis still works
    np.testing.assert_array_equal(_kernels._np_mean(x, 1, np.float64), np.mean(x, 1, np.float64))


def test_reduction_vjps_numpy_fill_equals_broadcast():
    x = np.random.default_rng(10).normal(size=(3, 4))
    for axis, keepdims in ((None, False), (0, False), (1, True), ((0, 1), False)):
        for red in ("sum", "mean"):
            f = lambda v: getattr(namespace_of(v), red)(v, axis=axis, keepdims=keepdims) * 2.0  # noqa: E731
            g = assert_vjp_fd(f, (x,))[0]
            assert g.flags.writeable and g.shape == x.shape


@pytest.mark.parametrize("m, o", [(4096, 4), (4096, 64), (3000, 16), (16384, 2), (4097, 8), (256, 64), (4096, 100)])
def test_tiled_bias_add_is_bit_identical_to_broadcast_add(m, o):
    rng = np.random.default_rng(11)
    y = rng.normal(size=(m, o)).astype(np.float32)
    b = rng.normal(size=(o,)).astype(np.float32)
    want = y + b
    _kernels._add_rows_np(y, b)
    np.testing.assert_array_equal(y, want)
