"""Gradients AT kinks (ties, bounds, zeros, NaN branches) against torch.autograd, the convention arrayrl follows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from arrayrl import namespace_of, ops
from arrayrl.autodiff import grad, value_and_grad

torch = pytest.importorskip("torch")


def torch_grads(f, *arrays):
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = f(*ts)
    gs = torch.autograd.grad(out, ts, allow_unused=True)
    return [np.zeros_like(a) if g is None else g.numpy() for a, g in zip(arrays, gs)]


def tape_grads(f, *arrays):
    g = grad(f, argnums=tuple(range(len(arrays))))(*arrays)
    return [np.asarray(x) for x in g]


def assert_same_grads(f_np, f_torch, *arrays):
    got = tape_grads(f_np, *arrays)
    want = torch_grads(f_torch, *arrays)
    for i, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"argument {i}")


tied = hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 4)), elements=st.sampled_from([-1.0, 0.0, 1.0]))


@given(x=tied, y=tied)
def test_maximum_minimum_split_ties(x, y):
    y = np.broadcast_to(y[:1, :1], x.shape).copy() if y.shape != x.shape else y
    w = np.arange(x.size, dtype=np.float64).reshape(x.shape) + 1.0
    for name in ("maximum", "minimum"):
        assert_same_grads(
            lambda a, b: namespace_of(a).sum(getattr(namespace_of(a, b), name)(a, b) * w),
            lambda a, b: (getattr(torch, name)(a, b) * torch.tensor(w)).sum(),
            x,
            y,
        )


@given(x=tied, axis=st.sampled_from([0, 1, -1]), keepdims=st.booleans())
def test_max_min_reduction_one_index_like_torch_max_dim(x, axis, keepdims):
    n_out = x.shape[1 - axis % 2]
    w = np.arange(1.0, n_out + 1.0)
    w = w.reshape((n_out, 1) if axis % 2 == 1 else (1, n_out)) if keepdims else w
    for name in ("max", "min"):
        assert_same_grads(
            lambda a: namespace_of(a).sum(getattr(namespace_of(a), name)(a, axis=axis, keepdims=keepdims) * w),
            lambda a: (getattr(a, name)(dim=axis, keepdim=keepdims).values * torch.tensor(w)).sum(),
            x,
        )


@given(x=tied)
def test_max_full_and_multi_axis_reduction_first_index_in_c_order(x):
    # torch.max(x) (all-reduce) splits ties evenly; arrayrl sends the gradient to one index, like max(dim) of the
    # flattened array: document-level choice (DESIGN 3), checked against torch on the flattened tensor.
    for name in ("max", "min"):
        assert_same_grads(
            lambda a: getattr(namespace_of(a), name)(a) * 3.0,
            lambda a: getattr(a.reshape(-1), name)(dim=0).values * 3.0,
            x,
        )
        assert_same_grads(
            lambda a: getattr(namespace_of(a), name)(a, axis=(0, 1)) * 3.0,
            lambda a: getattr(a.reshape(-1), name)(dim=0).values * 3.0,
            x,
        )
    x3 = np.stack([x, x[::-1]], axis=1)  # (n, 2, m): reduce axes (0, 2), keep 1
    assert_same_grads(
        lambda a: namespace_of(a).sum(namespace_of(a).max(a, axis=(0, 2)) * np.array([1.0, 2.0])),
        lambda a: (a.permute(1, 0, 2).reshape(2, -1).max(dim=1).values * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum(),
        x3,
    )


@pytest.mark.parametrize("bounds", ["scalar", "array", "min_only", "max_only", "crossed"])
def test_clip_gradient_passes_at_bounds_like_torch_clamp(bounds):
    x = np.array([-2.0, -0.5, -0.2, 0.0, 0.5, 0.7, 2.0])
    lo = np.array([-0.5, -0.5, 0.0, 0.0, 0.6, 0.7, 1.0])
    hi = np.array([0.5, 0.5, 0.3, 0.0, 0.5, 0.7, 3.0])
    w = np.arange(1.0, 8.0)
    if bounds == "scalar":
        assert_same_grads(
            lambda a: namespace_of(a).sum(namespace_of(a).clip(a, min=-0.5, max=0.5) * w),
            lambda a: (torch.clamp(a, min=-0.5, max=0.5) * torch.tensor(w)).sum(),
            x,
        )
    elif bounds == "min_only":
        assert_same_grads(
            lambda a: namespace_of(a).sum(namespace_of(a).clip(a, min=0.5) * w),
            lambda a: (torch.clamp(a, min=0.5) * torch.tensor(w)).sum(),
            x,
        )
    elif bounds == "max_only":
        assert_same_grads(
            lambda a: namespace_of(a).sum(namespace_of(a).clip(a, max=0.5) * w),
            lambda a: (torch.clamp(a, max=0.5) * torch.tensor(w)).sum(),
            x,
        )
    else:
        if bounds == "crossed":
            lo, hi = hi, lo  # min > max at some entries
        assert_same_grads(
            lambda a, l, h: namespace_of(a).sum(namespace_of(a, l, h).clip(a, min=l, max=h) * w),
            lambda a, l, h: (torch.clamp(a, min=l, max=h) * torch.tensor(w)).sum(),
            x,
            lo,
            hi,
        )


def test_where_selects_cotangent_so_inf_in_unused_branch_does_not_leak():
    # z = where(c, x, y) = [1, 0]; sqrt'(0) = inf flows back as the cotangent of z. Selecting with where gives
    # x's gradient 0 where c is False; multiplying by the mask would give inf * 0 = nan there.
    x = np.array([1.0, -1.0])
    y = np.array([0.0, 0.0])
    c = np.array([True, False])

    def f(x, y):
        xp = namespace_of(x, y)
        return xp.sum(xp.sqrt(xp.where(c, x, y)))

    with np.errstate(divide="ignore"):
        gx, gy = grad(f, argnums=(0, 1))(x, y)
    np.testing.assert_array_equal(gx, [0.5, 0.0])
    np.testing.assert_array_equal(gy, [0.0, np.inf])
    want = torch_grads(lambda a, b: torch.sqrt(torch.where(torch.tensor(c), a, b)).sum(), x, y)
    np.testing.assert_array_equal(gx, want[0])
    np.testing.assert_array_equal(gy, want[1])


def test_where_guarding_log_matches_torch_including_its_nan_at_zero():
    # The unused branch's VALUES (nan, -inf) never reach the output or the gradient of x > 0 entries; at x == 0 the
    # zero cotangent meets log's 1/x = inf -> nan, exactly as torch (use the "double where" idiom to avoid it).
    x = np.array([-1.0, 0.0, 2.0, 4.0])

    def f(x):
        xp = namespace_of(x)
        return xp.sum(xp.where(x > 0, xp.log(x), 0.0) * 2.0)

    with np.errstate(invalid="ignore", divide="ignore"):
        v, g = value_and_grad(f)(x)
        want = torch_grads(lambda a: (torch.where(a > 0, torch.log(a), 0.0) * 2.0).sum(), x)[0]
    assert np.isfinite(v)
    np.testing.assert_array_equal(g, want)
    np.testing.assert_array_equal(g[[0, 2, 3]], [0.0, 1.0, 0.5])

    def safe(x):
        xp = namespace_of(x)
        pos = x > 0
        return xp.sum(xp.where(pos, xp.log(xp.where(pos, x, 1.0)), 0.0) * 2.0)

    np.testing.assert_array_equal(grad(safe)(x), [0.0, 0.0, 1.0, 0.5])


def test_kinks_at_zero_like_torch():
    x = np.array([-1.0, 0.0, 0.0, 1.0, -1.0, 1.0])
    w = np.arange(1.0, 7.0)
    cases = [
        (lambda a: namespace_of(a).abs(a), torch.abs),
        (lambda a: ops.relu(a), torch.relu),
        (lambda a: ops.leaky_relu(a, 0.1), lambda a: torch.nn.functional.leaky_relu(a, 0.1)),
        (lambda a: ops.elu(a, 0.7), lambda a: torch.nn.functional.elu(a, 0.7)),
        (lambda a: ops.smooth_l1(a), lambda a: torch.nn.functional.smooth_l1_loss(a, torch.zeros_like(a), reduction="none")),
        (lambda a: ops.smooth_l1(a, beta=0.0), lambda a: torch.nn.functional.smooth_l1_loss(a, torch.zeros_like(a), reduction="none", beta=0.0)),
        (lambda a: namespace_of(a).maximum(a, 0.0), lambda a: torch.maximum(a, torch.zeros_like(a))),
        (lambda a: a**2.0, lambda a: a**2.0),
        (lambda a: a**0, lambda a: a**0),
    ]
    for f_np, f_t in cases:
        assert_same_grads(lambda a: namespace_of(a).sum(f_np(a) * w), lambda a: (f_t(a) * torch.tensor(w)).sum(), x)


def test_smooth_l1_exactly_at_beta_like_torch():
    x = np.array([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
    w = np.arange(1.0, 7.0)
    for beta in (1.0, 0.5):
        assert_same_grads(
            lambda a: namespace_of(a).sum(ops.smooth_l1(a, beta=beta) * w),
            lambda a: (torch.nn.functional.smooth_l1_loss(a, torch.zeros_like(a), reduction="none", beta=beta) * torch.tensor(w)).sum(),
            x,
        )


def test_std_of_constant_slice_has_zero_gradient_like_torch():
    x = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 3.0]])
    for corr in (0, 1):
        assert_same_grads(
            lambda a: namespace_of(a).sum(namespace_of(a).std(a, axis=1, correction=corr) * np.array([1.0, 2.0])),
            lambda a: (torch.std(a, dim=1, correction=corr) * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum(),
            x,
        )


def test_pow_at_zero_base_like_torch():
    x = np.array([0.0, 0.0, 2.0, 0.5])
    y = np.array([2.0, 0.0, 0.0, 3.0])
    with np.errstate(divide="ignore", invalid="ignore"):  # masked-out inf/nan, as torch (which does not warn)
        assert_same_grads(
            lambda a, b: namespace_of(a).sum(a**b),
            lambda a, b: (a**b).sum(),
            x,
            y,
        )


def test_sqrt_at_zero_is_inf_like_torch():
    with np.errstate(divide="ignore"):
        g = grad(lambda x: namespace_of(x).sum(namespace_of(x).sqrt(x)))(np.array([0.0, 4.0]))
    assert np.isinf(g[0]) and g[1] == 0.25


def test_vector_norm_at_origin_like_torch():
    x = np.zeros((2, 3))
    x[1] = [3.0, 4.0, 0.0]
    assert_same_grads(
        lambda a: namespace_of(a).sum(namespace_of(a).linalg.vector_norm(a, axis=1)),
        lambda a: torch.linalg.vector_norm(a, dim=1).sum(),
        x,
    )


def test_unused_argument_gets_zeros_and_constant_output():
    def f(x, y):
        return namespace_of(x).sum(x * 2.0)

    v, (gx, gy) = value_and_grad(f, argnums=(0, 1))(np.ones(3), np.ones((2, 2)))
    np.testing.assert_array_equal(gx, 2.0 * np.ones(3))
    np.testing.assert_array_equal(gy, np.zeros((2, 2)))
    v, g = value_and_grad(lambda x: np.float64(3.0) * np.ones(()))(np.ones(3))
    np.testing.assert_array_equal(g, np.zeros(3))
