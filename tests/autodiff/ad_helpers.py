"""Shared helpers of the autodiff tests: the tape's VJP against central finite differences (reference.gradcheck)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from arrayrl.autodiff import vjp
from reference.gradcheck import numerical_vjp


def assert_vjp_fd(f, args, *, argnums=None, rtol=1e-6, atol=1e-7, eps=1e-6, seed=0, exact=True):
    """Check the tape's VJP of ``f`` (a function of NumPy float64 arrays) against central differences.

    Also checks that the taped forward value equals the raw forward value bit for bit (same code, same kernels;
    ``exact=False`` for composites whose taped form sums in another order, e.g. ``tensordot`` via ``matmul``).
    ``argnums``: which arguments are differentiated (the others, e.g. integer indices, are passed as is).
    """
    args = tuple(args)
    argnums = tuple(range(len(args))) if argnums is None else tuple(argnums)
    raw_out = f(*args)

    def g(*diff):
        full = list(args)
        for i, d in zip(argnums, diff):
            full[i] = d
        return f(*full)

    diff_args = tuple(args[i] for i in argnums)
    out, vjp_fn = vjp(g, *diff_args)
    if exact:
        np.testing.assert_array_equal(np.asarray(out), np.asarray(raw_out), err_msg="taped value != raw value")
    else:
        np.testing.assert_allclose(np.asarray(out), np.asarray(raw_out), rtol=1e-13, atol=1e-13)
    assert np.shape(out) == np.shape(raw_out)
    v = np.asarray(np.random.default_rng(seed).normal(size=np.shape(raw_out)))
    grads = vjp_fn(v)
    fd = numerical_vjp(g, diff_args, v, eps=eps)
    for i, a, b in zip(argnums, grads, fd):
        assert np.shape(a) == np.shape(args[i]), f"grad of arg {i}: shape {np.shape(a)} != {np.shape(args[i])}"
        np.testing.assert_allclose(np.asarray(a), b, rtol=rtol, atol=atol, err_msg=f"gradient of argument {i}")
    return grads


def farrays(shape, lo=-2.0, hi=2.0, avoid=(), margin=1e-2):
    """Hypothesis float64 arrays in ``[lo, hi]`` staying ``margin`` away from the points in ``avoid`` (kinks)."""
    el = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    if avoid:
        el = el.filter(lambda v: all(abs(v - p) > margin for p in avoid))
    return hnp.arrays(np.float64, shape, elements=el)


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
nonscalar_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


@st.composite
def axes_for(draw, ndim):
    """An ``axis`` argument for a reduction over an array of ``ndim`` dimensions: None, an int or a tuple."""
    if ndim == 0:
        return None
    return draw(
        st.one_of(
            st.none(),
            st.integers(-ndim, ndim - 1),
            st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
        )
    )


@st.composite
def distinct_arrays(draw, shape):
    """Float arrays whose entries are pairwise at least 0.25 apart (so max/min and sorts are differentiable)."""
    n = int(np.prod(shape)) if shape else 1
    perm = draw(st.permutations(list(range(n))))
    return (np.asarray(perm, dtype=np.float64) * 0.25 - n / 8).reshape(shape)
