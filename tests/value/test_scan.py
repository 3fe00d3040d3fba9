"""The raw reverse discounted scan kernel (arrayrl._scan): every algorithm against the sequential loop, on every
raw backend; NaN after a cut; float32 error of the order of the loop's; gradients through arrayrl.ops."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import arrayrl._numba_scan as NS
import arrayrl._scan as S
from arrayrl.autodiff import value_and_grad
from arrayrl.ops import reverse_discounted_scan
from reference.gradcheck import numerical_vjp

from value_helpers import FEW, SETTINGS


def loop(x, c, axis=-1):
    """The recurrence itself, float64, one step at a time (c == 0 cuts exactly)."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    c = np.moveaxis(np.asarray(c, dtype=np.float64), axis, -1)
    y = np.empty_like(x)
    T = x.shape[-1]
    y[..., T - 1] = x[..., T - 1]
    for t in range(T - 2, -1, -1):
        with np.errstate(invalid="ignore"):
            y[..., t] = x[..., t] + np.where(c[..., t] == 0, 0.0, c[..., t] * y[..., t + 1])
    return np.moveaxis(y, -1, axis)


# (N, T) and the thresholds that force each algorithm: sequential, doubling, blocked (with and without a tail),
# blocked on row chunks, blocked with a blocked carry scan
PATHS = {
    "sequential": ((3, 4), {}),
    "doubling": ((5, 37), {}),
    "blocked": ((3, 64), {"_DOUBLING_MAX_ELEMS": 0}),
    "blocked-tail": ((2, 77), {"_DOUBLING_MAX_ELEMS": 0}),
    "blocked-chunks": ((11, 45), {"_DOUBLING_MAX_ELEMS": 0, "_CHUNK_ELEMS": 100}),
    "blocked-recursive": ((1, 300), {"_DOUBLING_MAX_ELEMS": 0}),
}


def _data(shape, seed, p_cut=0.1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    c = rng.uniform(0.0, 1.2, size=shape) * (rng.random(shape) >= p_cut)
    return x, c


@pytest.fixture(autouse=True)
def _generic_scan():
    """These tests pin the generic algorithms (thresholds monkeypatched); the numba kernels have their own tests."""
    with NS.generic_path():
        yield


@pytest.mark.parametrize("path", list(PATHS))
def test_every_algorithm_matches_the_loop(raw_xp, path, monkeypatch):
    shape, knobs = PATHS[path]
    for k, v in knobs.items():
        monkeypatch.setattr(S, k, v)
    x, c = _data(shape, seed=len(path))
    y = S.reverse_discounted_scan_raw(raw_xp.from_numpy(x), raw_xp.from_numpy(c))
    tol = 1e-12 if raw_xp.is_float64 else 2e-5 * shape[1]
    np.testing.assert_allclose(raw_xp.to_numpy(y), loop(x, c), rtol=tol, atol=tol)
    assert y.dtype == raw_xp.float_dtype


@pytest.mark.parametrize("path", list(PATHS))
def test_nan_and_inf_after_a_cut_never_leak(path, monkeypatch):
    shape, knobs = PATHS[path]
    for k, v in knobs.items():
        monkeypatch.setattr(S, k, v)
    N, T = shape
    x, c = _data(shape, seed=1, p_cut=0.0)
    cut = T // 2
    c[:, cut] = 0.0
    clean = loop(x, c)
    for bad in (np.nan, np.inf):
        xb, cb = x.copy(), c.copy()
        xb[:, cut + 1:] = bad
        cb[:, cut + 1:] = bad  # garbage discounts too
        with np.errstate(invalid="ignore", over="ignore"):
            y = S.reverse_discounted_scan_raw(xb, cb)
        np.testing.assert_allclose(y[:, : cut + 1], clean[:, : cut + 1], rtol=1e-12, atol=1e-12)
        if bad is np.nan:
            assert np.all(np.isnan(y[:, cut + 1:]))


def test_last_discount_is_never_read():
    x, c = _data((2, 50), seed=3)
    c2 = c.copy()
    c2[:, -1] = np.nan
    np.testing.assert_array_equal(S.reverse_discounted_scan_raw(x, c), S.reverse_discounted_scan_raw(x, c2))


@SETTINGS
@given(data=st.data())
def test_any_shape_and_axis_matches_the_loop(data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40), label="shape")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    x = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-100, 100)), label="x")
    c = data.draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0]) | st.floats(0, 1.5)),
                  label="c")
    y = S.reverse_discounted_scan_raw(x, c, axis=axis)
    scale = max(1.0, float(np.max(np.abs(loop(x, c, axis))))) if x.size else 1.0
    np.testing.assert_allclose(y, loop(x, c, axis), rtol=1e-11, atol=1e-11 * scale)


def test_float32_error_stays_near_the_sequential_loops():
    """No truncation and no rescaling: the float32 error of every algorithm is of the order of the float32
    loop's own rounding error (both measured against the float64 loop)."""
    rng = np.random.default_rng(0)
    for N, T, knobs in [(2, 20000, {}), (64, 512, {}), (1, 1000, {}), (300, 300, {"_CHUNK_ELEMS": 5000})]:
        x = rng.normal(size=(N, T))
        c = np.where(rng.random((N, T)) < 0.001, 0.0, 0.999)
        exact = loop(x, c)
        x32, c32 = x.astype(np.float32), c.astype(np.float32)
        y32 = np.empty_like(x32)  # the float32 loop
        y32[:, -1] = x32[:, -1]
        for t in range(T - 2, -1, -1):
            y32[:, t] = x32[:, t] + c32[:, t] * y32[:, t + 1]
        loop_err = np.max(np.abs(y32 - exact))
        old = {k: getattr(S, k) for k in knobs}
        try:
            for k, v in knobs.items():
                setattr(S, k, v)
            got = S.reverse_discounted_scan_raw(x32, c32)
        finally:
            for k, v in old.items():
                setattr(S, k, v)
        assert got.dtype == np.float32
        err = np.max(np.abs(got.astype(np.float64) - exact))
        eps_bound = 8 * np.finfo(np.float32).eps * np.max(np.abs(exact)) * np.sqrt(T)
        assert err <= 4 * loop_err + eps_bound, (N, T, err, loop_err)


@pytest.mark.parametrize("path", list(PATHS))
def test_gradients_through_ops_on_every_path(path, monkeypatch):
    """The taped primitive's VJP runs this kernel on flipped arrays: check it against finite differences."""
    shape, knobs = PATHS[path]
    for k, v in knobs.items():
        monkeypatch.setattr(S, k, v)
    x, c = _data(shape, seed=7)
    w = np.random.default_rng(8).normal(size=shape)

    def f(xx):
        y = reverse_discounted_scan(xx, c, axis=-1)
        return y.__array_namespace__().sum(y * w)

    _, g = value_and_grad(f)(x)
    (fd,) = numerical_vjp(lambda xx: loop(xx, c), (x,), w)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)


@FEW
@given(st.data())
def test_bad_input(data):
    with pytest.raises(ValueError, match="c: expected shape"):
        S.reverse_discounted_scan_raw(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="x: expected a real floating"):
        S.reverse_discounted_scan_raw(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="c: expected dtype"):
        S.reverse_discounted_scan_raw(np.zeros((2, 3)), np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="axis"):
        S.reverse_discounted_scan_raw(np.zeros((2, 3)), np.zeros((2, 3)), axis=2)
