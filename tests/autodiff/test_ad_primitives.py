"""Every differentiable primitive of the taped namespace: VJP vs central finite differences (float64, NumPy).

Inputs are Hypothesis-drawn shapes (broadcasting in both arguments for binary functions) and values kept away from
kinks; the conventions AT the kinks (ties, bounds, zeros) are in test_ad_conventions.py (against torch.autograd).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from ad_helpers import assert_vjp_fd, axes_for, distinct_arrays, farrays, nonscalar_shapes, shapes
from arrayrl import namespace_of

UNARY = {
    # name: (lo, hi, kinks to avoid)
    "negative": (-2, 2, ()),
    "positive": (-2, 2, ()),
    "abs": (-2, 2, (0.0,)),
    "square": (-2, 2, ()),
    "sqrt": (0.1, 4, ()),
    "exp": (-2, 2, ()),
    "expm1": (-2, 2, ()),
    "log": (0.1, 4, ()),
    "log1p": (-0.8, 4, ()),
    "log2": (0.1, 4, ()),
    "log10": (0.1, 4, ()),
    "tanh": (-2, 2, ()),
    "sin": (-3, 3, ()),
    "cos": (-3, 3, ()),
    "tan": (-1.2, 1.2, ()),
    "sinh": (-2, 2, ()),
    "cosh": (-2, 2, ()),
    "asin": (-0.9, 0.9, ()),
    "acos": (-0.9, 0.9, ()),
    "atan": (-3, 3, ()),
    "asinh": (-3, 3, ()),
    "acosh": (1.1, 4, ()),
    "atanh": (-0.9, 0.9, ()),
}

BINARY = {
    # name: ((lo, hi) of x, (lo, hi) of y)
    "add": ((-2, 2), (-2, 2)),
    "subtract": ((-2, 2), (-2, 2)),
    "multiply": ((-2, 2), (-2, 2)),
    "divide": ((-2, 2), (0.5, 2)),
    "pow": ((0.2, 2), (-2, 2)),
    "atan2": ((0.2, 2), (0.2, 2)),
    "hypot": ((0.2, 2), (-2, -0.2)),
    "logaddexp": ((-3, 3), (-3, 3)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary(name, data):
    lo, hi, avoid = UNARY[name]
    x = data.draw(farrays(data.draw(shapes), lo, hi, avoid, margin=0.05))
    assert_vjp_fd(lambda x: getattr(namespace_of(x), name)(x), (x,))


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_broadcasting(name, data):
    (xl, xh), (yl, yh) = BINARY[name]
    bs = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
    x = data.draw(farrays(bs.input_shapes[0], xl, xh))
    y = data.draw(farrays(bs.input_shapes[1], yl, yh))
    assert_vjp_fd(lambda x, y: getattr(namespace_of(x, y), name)(x, y), (x, y))


OPERATORS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "**": lambda a, b: a**b,
}


@pytest.mark.parametrize("op", sorted(OPERATORS))
@given(data=st.data())
def test_operators_with_python_scalars_and_raw_arrays(op, data):
    f = OPERATORS[op]
    bs = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
    x = data.draw(farrays(bs.input_shapes[0], 0.3, 2.0))
    y = data.draw(farrays(bs.input_shapes[1], 0.3, 2.0))
    assert_vjp_fd(lambda x: f(x, 1.5), (x,))  # Tensor op Python scalar
    assert_vjp_fd(lambda x: f(1.5, x), (x,))  # Python scalar op Tensor (reflected)
    assert_vjp_fd(lambda x, y: f(x, y), (x, y))  # both taped
    assert_vjp_fd(lambda x, y: f(x, y), (x, y), argnums=(0,))  # Tensor op raw array
    assert_vjp_fd(lambda x, y: f(x, y), (x, y), argnums=(1,))  # raw array op Tensor (NumPy defers to Tensor)


@given(data=st.data())
def test_pow_special_exponents(data):
    x = data.draw(farrays(data.draw(shapes), -2.0, 2.0))
    for e in (0, 1, 2, 3, 2.0, -1.0):
        if e == -1.0 and np.any(np.abs(x) < 0.2):
            continue
        assert_vjp_fd(lambda x: x**e, (x,))
    assert_vjp_fd(lambda x: -x, (x,))
    assert_vjp_fd(lambda x: +x, (x,))
    assert_vjp_fd(lambda x: abs(x), (x + np.where(np.abs(x) < 0.05, 0.2, 0.0),))


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@given(data=st.data())
def test_maximum_minimum_away_from_ties(name, data):
    bs = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
    x = data.draw(farrays(bs.input_shapes[0], -2, 2))
    y = data.draw(farrays(bs.input_shapes[1], -2, 2))
    # keep pairs apart: shift y where it is close to x
    xb, yb = np.broadcast_arrays(x, y)
    if np.any(np.abs(xb - yb) < 0.05):
        y = y + 0.3 * np.sign(y - np.mean(x) + 1e-3) + 0.11
        xb, yb = np.broadcast_arrays(x, y)
        if np.any(np.abs(xb - yb) < 0.05):
            return
    assert_vjp_fd(lambda x, y: getattr(namespace_of(x, y), name)(x, y), (x, y))
    assert_vjp_fd(lambda x: getattr(namespace_of(x), name)(x, 0.25), (x,)) if np.all(np.abs(x - 0.25) > 0.05) else None


@given(data=st.data())
def test_clip_scalar_and_array_bounds(data):
    bs = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3))
    x = data.draw(farrays(bs.input_shapes[0], -2, 2, avoid=(-0.5, 0.5), margin=0.05))
    assert_vjp_fd(lambda x: namespace_of(x).clip(x, min=-0.5, max=0.5), (x,))
    assert_vjp_fd(lambda x: namespace_of(x).clip(x, min=-0.5), (x,))
    assert_vjp_fd(lambda x: namespace_of(x).clip(x, max=0.5), (x,))
    lo = data.draw(farrays(bs.input_shapes[1], -1.5, -0.2))
    hi = data.draw(farrays(bs.input_shapes[2], 0.2, 1.5))
    xb, lb, hb = np.broadcast_arrays(x, lo, hi)
    if np.any(np.abs(xb - lb) < 0.02) or np.any(np.abs(xb - hb) < 0.02):
        return
    assert_vjp_fd(lambda x, lo, hi: namespace_of(x, lo, hi).clip(x, min=lo, max=hi), (x, lo, hi))


@given(data=st.data())
def test_where_broadcasting(data):
    bs = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3))
    c = data.draw(hnp.arrays(np.bool_, bs.input_shapes[0]))
    x = data.draw(farrays(bs.input_shapes[1]))
    y = data.draw(farrays(bs.input_shapes[2]))
    assert_vjp_fd(lambda x, y: namespace_of(x, y).where(c, x, y), (x, y))
    assert_vjp_fd(lambda x: namespace_of(x).where(c, x, 0.5), (x,))


@pytest.mark.parametrize("name", ["sum", "mean", "prod"])
@given(data=st.data())
def test_sum_mean_prod(name, data):
    shape = data.draw(shapes)
    x = data.draw(farrays(shape, -1.5, 1.5))
    axis = data.draw(axes_for(len(shape)))
    keepdims = data.draw(st.booleans())
    assert_vjp_fd(lambda x: getattr(namespace_of(x), name)(x, axis=axis, keepdims=keepdims), (x,))


def test_prod_with_zeros():
    x = np.array([[0.0, 2.0, 3.0], [0.0, 0.0, 4.0], [1.0, 2.0, 3.0]])
    assert_vjp_fd(lambda x: namespace_of(x).prod(x, axis=1), (x,))
    assert_vjp_fd(lambda x: namespace_of(x).prod(x), (x[:, 1:],))


@pytest.mark.parametrize("name", ["var", "std"])
@given(data=st.data())
def test_var_std(name, data):
    shape = data.draw(nonscalar_shapes)
    x = data.draw(distinct_arrays(shape))
    axis = data.draw(axes_for(len(shape)))
    n = int(np.prod([shape[a] for a in ((axis,) if isinstance(axis, int) else (axis or range(len(shape))))]))
    correction = data.draw(st.sampled_from([0.0, 1.0] if n > 1 else [0.0]))
    keepdims = data.draw(st.booleans())
    if n == 1 and name == "std":
        return  # std of one element is 0: not differentiable (convention tested against torch)
    assert_vjp_fd(lambda x: getattr(namespace_of(x), name)(x, axis=axis, correction=correction, keepdims=keepdims), (x,))


@pytest.mark.parametrize("name", ["max", "min"])
@given(data=st.data())
def test_max_min_distinct(name, data):
    shape = data.draw(shapes)
    x = data.draw(distinct_arrays(shape))
    axis = data.draw(axes_for(len(shape)))
    keepdims = data.draw(st.booleans())
    assert_vjp_fd(lambda x: getattr(namespace_of(x), name)(x, axis=axis, keepdims=keepdims), (x,))


@given(data=st.data())
def test_cumulative_sum(data):
    shape = data.draw(nonscalar_shapes)
    x = data.draw(farrays(shape))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    include_initial = data.draw(st.booleans())
    assert_vjp_fd(lambda x: namespace_of(x).cumulative_sum(x, axis=axis, include_initial=include_initial), (x,))


@st.composite
def matmul_shapes(draw):
    n, k, m = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["mm", "vm", "mv", "vv"]))
    bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3))
    a = (k,) if kind in ("vm", "vv") else bs.input_shapes[0] + (n, k)
    b = (k,) if kind in ("mv", "vv") else bs.input_shapes[1] + (k, m)
    return a, b


@given(data=st.data())
def test_matmul_batched_broadcasting_and_vectors(data):
    sa, sb = data.draw(matmul_shapes())
    a, b = data.draw(farrays(sa)), data.draw(farrays(sb))
    assert_vjp_fd(lambda a, b: namespace_of(a, b).matmul(a, b), (a, b))
    assert_vjp_fd(lambda a, b: a @ b, (a, b))


@given(data=st.data())
def test_shape_functions(data):
    shape = data.draw(nonscalar_shapes)
    x = data.draw(farrays(shape))
    nd = len(shape)
    perm = tuple(data.draw(st.permutations(list(range(nd)))))
    ax = data.draw(st.integers(-nd, nd - 1))
    ax2 = data.draw(st.integers(-nd, nd - 1))
    new_ax = data.draw(st.integers(-nd - 1, nd))
    xp = namespace_of
    assert_vjp_fd(lambda x: xp(x).reshape(x, (-1,)), (x,))
    assert_vjp_fd(lambda x: xp(x).reshape(x, tuple(reversed(shape))), (x,))
    assert_vjp_fd(lambda x: xp(x).permute_dims(x, perm), (x,))
    assert_vjp_fd(lambda x: xp(x).expand_dims(x, axis=new_ax), (x,))
    assert_vjp_fd(lambda x: xp(x).squeeze(xp(x).expand_dims(x, axis=new_ax), axis=new_ax), (x,))
    assert_vjp_fd(lambda x: xp(x).flip(x, axis=ax), (x,))
    assert_vjp_fd(lambda x: xp(x).flip(x), (x,))
    assert_vjp_fd(lambda x: xp(x).moveaxis(x, ax, ax2), (x,))
    assert_vjp_fd(lambda x: xp(x).roll(x, 2, axis=ax), (x,))
    assert_vjp_fd(lambda x: xp(x).broadcast_to(x, (2,) + shape), (x,))
    assert_vjp_fd(lambda x: xp(x).unstack(x, axis=ax)[-1] * 2.0, (x,))
    if nd >= 2:
        assert_vjp_fd(lambda x: xp(x).matrix_transpose(x), (x,))
        assert_vjp_fd(lambda x: x.mT, (x,))
        assert_vjp_fd(lambda x: xp(x).tril(x, k=0), (x,))
        assert_vjp_fd(lambda x: xp(x).triu(x, k=1), (x,))


@given(data=st.data())
def test_broadcast_to_with_size_one_axes(data):
    bs = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=1, min_dims=0, max_dims=3, max_side=3))
    x = data.draw(farrays(bs.input_shapes[0]))
    assert_vjp_fd(lambda x: namespace_of(x).broadcast_to(x, bs.result_shape), (x,))


@given(data=st.data())
def test_concat_stack(data):
    shape = data.draw(nonscalar_shapes)
    nd = len(shape)
    ax = data.draw(st.integers(-nd, nd - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    parts = []
    for s in sizes:
        sh = list(shape)
        sh[ax] = s
        parts.append(data.draw(farrays(tuple(sh))))
    assert_vjp_fd(lambda *ps: namespace_of(*ps).concat(list(ps), axis=ax), tuple(parts))
    assert_vjp_fd(lambda *ps: namespace_of(*ps).concat(ps, axis=None), tuple(parts))
    same = [data.draw(farrays(shape)) for _ in sizes]
    sax = data.draw(st.integers(-nd - 1, nd))
    assert_vjp_fd(lambda *ps: namespace_of(*ps).stack(ps, axis=sax), tuple(same))


@given(data=st.data())
def test_take_along_axis(data):
    shape = data.draw(nonscalar_shapes)
    nd = len(shape)
    ax = data.draw(st.integers(-nd, nd - 1))
    n = shape[ax]
    k = data.draw(st.integers(1, 4))
    ishape = list(shape)
    ishape[ax] = k
    idx = data.draw(hnp.arrays(np.int64, tuple(ishape), elements=st.integers(-n, n - 1)))
    x = data.draw(farrays(shape))
    assert_vjp_fd(lambda x, i: namespace_of(x).take_along_axis(x, i, axis=ax), (x, idx), argnums=(0,))


@given(data=st.data())
def test_take(data):
    shape = data.draw(nonscalar_shapes)
    nd = len(shape)
    ax = data.draw(st.integers(-nd, nd - 1))
    n = shape[ax]
    idx = data.draw(hnp.arrays(np.int64, (data.draw(st.integers(0, 5)),), elements=st.integers(-n, n - 1)))
    x = data.draw(farrays(shape))
    assert_vjp_fd(lambda x, i: namespace_of(x).take(x, i, axis=ax), (x, idx), argnums=(0,))
    if nd == 1:
        assert_vjp_fd(lambda x, i: namespace_of(x).take(x, i), (x, idx), argnums=(0,))


@given(data=st.data())
def test_getitem_basic_indices(data):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
    key = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    x = data.draw(farrays(shape))
    assert_vjp_fd(lambda x: x[key], (x,))


@given(data=st.data())
def test_sort_vecdot_tensordot_norm(data):
    shape = data.draw(nonscalar_shapes)
    nd = len(shape)
    ax = data.draw(st.integers(-nd, nd - 1))
    x = data.draw(distinct_arrays(shape))
    y = data.draw(farrays(shape))
    desc = data.draw(st.booleans())
    xp = namespace_of
    assert_vjp_fd(lambda x: xp(x).sort(x, axis=ax), (x,))
    if desc:  # NumPy's own sort has no ``descending``: compare the taped descending sort with a flipped one
        from arrayrl.autodiff import Tensor

        t = Tensor(x)
        np.testing.assert_array_equal(xp(t).sort(t, axis=ax, descending=True).value, np.flip(np.sort(x, axis=ax), axis=ax))
    assert_vjp_fd(lambda x, y: xp(x, y).vecdot(x, y, axis=ax), (x, y), exact=False)
    assert_vjp_fd(lambda x, y: xp(x, y).tensordot(x, y, axes=nd), (x, y), exact=False)
    assert_vjp_fd(lambda x, y: xp(x, y).tensordot(x, y, axes=([ax], [ax])), (x, y), exact=False)
    x = x + 0.1  # away from zero
    for ord_ in (2, 1, 3, np.inf):
        assert_vjp_fd(lambda x: xp(x).linalg.vector_norm(x, axis=ax, ord=ord_), (x,), rtol=1e-5, exact=ord_ == 2)


def test_astype_between_floats_is_differentiable():
    from arrayrl.autodiff import grad

    x = np.array([1.0, 2.0, 3.0])
    g = grad(lambda x: namespace_of(x).sum(namespace_of(x).astype(x, np.float32) * 2.0))(x)
    assert g.dtype == np.float64
    np.testing.assert_array_equal(g, [2.0, 2.0, 2.0])
    g = grad(lambda x: namespace_of(x).sum(namespace_of(x).asarray(x, dtype=np.float32) ** 2))(x)
    np.testing.assert_allclose(g, 2 * x, rtol=1e-6)


@pytest.mark.parametrize("shape,axis", [((0,), None), ((2, 0), 1), ((2, 0), 0), ((0, 3), None), ((0, 3), 0)])
@pytest.mark.parametrize("name", ["sum", "prod"])
def test_empty_reductions(name, shape, axis):
    from arrayrl.autodiff import value_and_grad

    x = np.zeros(shape)
    w = np.linspace(1.0, 2.0, int(np.prod([s for i, s in enumerate(shape) if axis is not None and i != axis])) or 1)

    def f(x):
        xp = namespace_of(x)
        r = getattr(xp, name)(x, axis=axis)
        return xp.sum(r * w[: r.size].reshape(r.shape)) if r.ndim else r * 1.0

    v, g = value_and_grad(f)(x)
    assert g.shape == shape
    expected = getattr(np, name)(x, axis=axis)
    np.testing.assert_array_equal(np.asarray(v), np.sum(expected * w[: np.size(expected)].reshape(np.shape(expected))))
