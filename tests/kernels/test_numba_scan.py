"""The numba scan kernels (arrayrl._numba_scan) against the generic array-API path and the float64 reference.

Goldens: :func:`arrayrl._scan.reverse_discounted_scan_raw` and ``_scan_adjoint`` of :mod:`arrayrl.ops`, the
generic :mod:`arrayrl.value.functional` estimators (all run under ``generic_path()``) and the independent
``reference/value.py`` loops. Hypothesis draws shapes, the time axis, done patterns, per-step gamma/lmbda; both
layouts (batch-major lanes, time-major columns) and float32/float64 are run. Skipped without numba.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytest.importorskip("numba")

import arrayrl._numba_scan as K  # noqa: E402
from arrayrl import ops  # noqa: E402
from arrayrl._scan import reverse_discounted_scan_raw  # noqa: E402
from arrayrl.testing.strategies import trajectory_batches  # noqa: E402
from arrayrl.value import functional as F  # noqa: E402
from reference import value as R  # noqa: E402

# the generic blocked scan multiplies NaN discounts by design (its selects drop the products)
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

DTYPES = [np.float64, np.float32]
SET = settings(deadline=None, max_examples=min(25, settings.default.max_examples))


@pytest.fixture(autouse=True)
def _numba_on():
    K.set_enabled(True)
    yield
    K.set_enabled(None)


@pytest.fixture(params=["lanes", "cols"])
def layout(request, monkeypatch):
    """``cols``: the time-major kernel even for a single trailing column (the dispatch threshold set to 1)."""
    monkeypatch.setattr(K, "_COLS_MIN_M", 1 if request.param == "cols" else 1 << 30)
    return request.param


def close(ours, golden, dtype, T, what=""):
    """float64: 1e-12 relative to the output's scale; float32: a few eps per step (the summation orders differ)."""
    ours, golden = np.asarray(ours, dtype=np.float64), np.asarray(golden, dtype=np.float64)
    finite = np.isfinite(golden)
    scale = max(1.0, float(np.max(np.abs(golden[finite]), initial=0.0)))
    tol = 1e-12 if dtype == np.float64 else 2 * max(T, 1) * float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(ours, golden, rtol=tol, atol=tol * scale, equal_nan=True, err_msg=what)


def loop(x, c, axis):
    """``y_t = x_t + c_t y_{t+1}`` in float64, one step at a time (c == 0 cuts by a select)."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    c = np.moveaxis(np.asarray(c, dtype=np.float64), axis, -1)
    y = np.empty_like(x)
    T = x.shape[-1]
    y[..., T - 1] = x[..., T - 1]
    for t in range(T - 2, -1, -1):
        with np.errstate(invalid="ignore"):
            y[..., t] = x[..., t] + np.where(c[..., t] == 0, 0.0, c[..., t] * y[..., t + 1])
    return np.moveaxis(y, -1, axis)


@st.composite
def scan_inputs(draw):
    """``(x, c, axis)``: 1 to 3 axes, cuts (``c == 0``, some ``-0.0``) and NaN/inf placed right after cuts."""
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    shape = tuple(draw(st.integers(1, 40)) if i == 0 else s for i, s in enumerate(shape))
    perm = draw(st.permutations(range(len(shape))))
    shape = tuple(shape[i] for i in perm)
    axis = perm.index(0) - (len(shape) if draw(st.booleans()) else 0)
    seed = draw(st.integers(0, 2**32 - 1))
    p_cut = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    c = rng.uniform(0.0, 1.2, size=shape) * (rng.random(shape) >= p_cut)
    c = np.where(rng.random(shape) < 0.05, -0.0, c)
    if draw(st.booleans()):  # garbage after a cut: y_{t+1} is NaN/inf where c_t == 0
        ax = axis % len(shape)
        nxt = np.roll(np.moveaxis(c, ax, -1) == 0, 1, axis=-1)
        nxt[..., 0] = False
        nxt = np.moveaxis(nxt, -1, ax) & (rng.random(shape) < 0.5)
        x = np.where(nxt, rng.choice([np.nan, np.inf, -np.inf], size=shape), x)
    return x, c, axis


@pytest.mark.parametrize("dtype", DTYPES)
@SET
@given(data=scan_inputs())
def test_reverse_scan_matches_generic_and_loop(dtype, layout, data):
    x, c, axis = (a.astype(dtype) if isinstance(a, np.ndarray) else a for a in data)
    ours = K.try_reverse_scan(x, c, axis)
    with K.generic_path():
        gen = reverse_discounted_scan_raw(x, c, axis=axis)
    T = x.shape[axis]
    assert ours.dtype == dtype and ours.shape == x.shape
    close(ours, gen, dtype, T, "generic")
    close(ours, loop(x, c, axis), dtype, T, "loop")
    assert np.array_equal(np.isnan(ours), np.isnan(loop(x, c, axis)))  # NaN exactly where the loop has it


@pytest.mark.parametrize("dtype", DTYPES)
@SET
@given(data=scan_inputs())
def test_forward_scan_is_the_adjoint(dtype, layout, data):
    g, c, axis = (a.astype(dtype) if isinstance(a, np.ndarray) else a for a in data)
    ours = K.try_forward_scan(g, c, axis)
    with K.generic_path():
        gen = ops._scan_adjoint(np, g, c, axis)
    close(ours, gen, dtype, g.shape[axis])


def _coef(v, dtype):
    """What ``_coef`` of the functional module passes on: a Python float, or an array of the inputs' dtype."""
    return v if isinstance(v, float) else np.asarray(v, dtype=dtype)


def _batch(tb, dtype):
    return tb.map(lambda a: a.astype(dtype) if a.dtype.kind == "f" else a)


BATCHES = trajectory_batches(max_time=24, feature_shape=None, time_axis="any", max_batch_size=5)


@pytest.mark.parametrize("dtype", DTYPES)
@SET
@given(tb=BATCHES)
def test_gae_matches_generic_and_reference(dtype, layout, tb):
    tb = _batch(tb, dtype)
    g, lm = _coef(tb.gamma, dtype), _coef(tb.lmbda, dtype)
    args = (tb.state_value, tb.next_state_value, tb.reward, tb.done, tb.terminated)
    adv, target = K.try_gae(g, lm, *args, tb.time_axis)
    with K.generic_path():
        gadv, gtarget = F.generalized_advantage_estimate(g, lm, *args, time_dim=tb.time_dim)
    radv, rtarget = R.gae(tb.gamma, tb.lmbda, *args, time_dim=tb.time_dim)
    T = tb.shape[tb.time_axis]
    assert adv.dtype == target.dtype == dtype
    close(adv, gadv, dtype, T, "adv vs generic")
    close(target, gtarget, dtype, T, "target vs generic")
    close(adv, radv, np.float32, T, "adv vs reference")  # reference: float64 loops on the same inputs
    close(target, rtarget, np.float32, T, "target vs reference")


@pytest.mark.parametrize("dtype", DTYPES)
@SET
@given(tb=BATCHES)
def test_td_lambda_matches_generic_and_reference(dtype, layout, tb):
    tb = _batch(tb, dtype)
    g, lm = _coef(tb.gamma, dtype), _coef(tb.lmbda, dtype)
    args = (tb.next_state_value, tb.reward, tb.done, tb.terminated)
    ret = K.try_td_lambda(g, lm, *args, tb.time_axis)
    with K.generic_path():
        gret = F.td_lambda_return_estimate(g, lm, *args, time_dim=tb.time_dim)
    rret = R.td_lambda_return(tb.gamma, tb.lmbda, *args, time_dim=tb.time_dim)
    T = tb.shape[tb.time_axis]
    assert ret.dtype == dtype
    close(ret, gret, dtype, T, "vs generic")
    close(ret, rret, np.float32, T, "vs reference")


@pytest.mark.parametrize("dtype", DTYPES)
def test_short_rollouts_are_bit_identical(dtype, layout):
    """For T <= 4 the generic scan is the sequential loop too, so every output must be bit-identical: the
    elementwise terms round exactly as the generic code (``gamma * lmbda`` and ``1 - lmbda`` of Python floats in
    double then cast; 0-d or per-step array coefficients in the dtype)."""
    rng = np.random.default_rng(3)
    shape = (6, 4, 2)
    v, nv, r = (rng.normal(size=shape).astype(dtype) for _ in range(3))
    d = rng.random(shape) < 0.3
    tm = d & (rng.random(shape) < 0.5)
    per_step = rng.uniform(0.0, 1.0, size=shape).astype(dtype)
    coefs = [(0.99, 0.95), (np.asarray(0.99, dtype), np.asarray(0.95, dtype)), (0.3, np.asarray(0.7, dtype)),
             (per_step, 0.95), (0.97, per_step), (per_step, per_step[::-1].copy())]
    for g, lm in coefs:
        with K.generic_path():
            gadv, gtarget = F.generalized_advantage_estimate(g, lm, v, nv, r, d, tm, time_dim=1)
            gret = F.td_lambda_return_estimate(g, lm, nv, r, d, tm, time_dim=1)
        adv, target = K.try_gae(g, lm, v, nv, r, d, tm, 1)
        assert np.array_equal(adv, gadv) and np.array_equal(target, gtarget)
        assert np.array_equal(K.try_td_lambda(g, lm, nv, r, d, tm, 1), gret)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_after_done_never_leaks(dtype, layout):
    """Garbage (NaN, inf) in every input after a ``done`` step stays there; earlier steps are finite and equal the
    generic path's."""
    rng = np.random.default_rng(0)
    shape = (5, 30, 3)
    v, nv, r = (rng.normal(size=shape).astype(dtype) for _ in range(3))
    done = np.zeros(shape, bool)
    done[:, 11, :] = True
    term = done.copy()
    for a in (v, nv, r):
        a[:, 12:, :] = np.nan
    nv[:, 11, :] = np.inf  # terminated: the bootstrap is masked by a select
    adv, target = K.try_gae(0.99, 0.95, v, nv, r, done, term, 1)
    ret = K.try_td_lambda(0.99, 0.95, nv, r, done, term, 1)
    for out in (adv, target, ret):
        assert np.isfinite(out[:, :12]).all()
    with K.generic_path():
        gadv, _ = F.generalized_advantage_estimate(0.99, 0.95, v, nv, r, done, term, time_dim=1)
    close(adv[:, :12], gadv[:, :12], dtype, 30)


@pytest.mark.parametrize("kernel", ["lanes", "cols"])
def test_threads_and_chunks_agree_with_serial(kernel, monkeypatch):
    """``parallel=True`` (forced on a small input) equals the serial kernel bit for bit; the time-major kernel
    covers several column chunks (M > _CHUNK) and a partial one; the lane kernel a partial last block."""
    monkeypatch.setattr(K, "_COLS_MIN_M", 1 if kernel == "cols" else 1 << 30)
    shape = (3, 9, K._CHUNK + 37) if kernel == "cols" else (4 * 5 + 3, 50)
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    c = rng.uniform(0.5, 1.0, size=shape) * (rng.random(shape) > 0.05)
    ser = K.try_reverse_scan(x, c, 1, parallel=False)
    par = K.try_reverse_scan(x, c, 1, parallel=True)
    assert np.array_equal(ser, par)
    close(ser, loop(x, c, 1), np.float64, shape[1])
    assert np.array_equal(K.try_forward_scan(x, c, 1, parallel=True), K.try_forward_scan(x, c, 1, parallel=False))


def test_time_major_layout_needs_no_copy():
    """A ``[T, B]`` input uses the column kernel on the input's own memory (same result as batch-major data)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 200))
    c = np.full_like(x, 0.9)
    tm = K.try_reverse_scan(x, c, axis=0)
    bm = K.try_reverse_scan(np.ascontiguousarray(x.T), np.ascontiguousarray(c.T), axis=1)
    np.testing.assert_array_equal(tm, bm.T)
    assert K._view3(x, 1, 64, 200).base is x  # a view, not a copy


def test_not_applicable_returns_none():
    x = np.ones((3, 4))
    c = np.full((3, 4), 0.5)
    d = np.zeros((3, 4), bool)
    assert K.try_reverse_scan(x.astype(np.float16), c.astype(np.float16)) is None
    assert K.try_reverse_scan(x.astype(np.int64), c.astype(np.int64)) is None
    assert K.try_reverse_scan(x, c.astype(np.float32)) is None  # mixed dtypes: the generic path raises
    assert K.try_reverse_scan(x, c[:, :2]) is None
    assert K.try_reverse_scan(np.ones((0, 4)), np.ones((0, 4))) is None
    assert K.try_reverse_scan(x, c, axis=2) is None
    assert K.try_gae(0.9, 0.9, x, x, x, d, d.astype(np.int8), 1) is None
    assert K.try_gae(0.9, np.full((4,), 0.9), x, x, x, d, d, 1) is None  # lmbda of another shape
    assert K.try_td_lambda(0.9, np.float32(0.9) * np.ones((3, 4), np.float32), x, x, d, d, 1) is None
    try:
        import torch
    except ImportError:
        return
    assert K.try_reverse_scan(torch.ones(3, 4), torch.ones(3, 4)) is None


def test_switches(monkeypatch):
    x, c = np.ones((2, 3)), np.full((2, 3), 0.5)
    assert K.available() and K.try_reverse_scan(x, c) is not None
    with K.generic_path():
        assert not K.available() and K.try_reverse_scan(x, c) is None
    assert K.available()
    K.set_enabled(False)
    assert K.try_reverse_scan(x, c) is None
    monkeypatch.setenv("ARRAYRL_DISABLE_NUMBA", "1")
    K.set_enabled(None)  # decide from the environment again
    assert not K.available()
    monkeypatch.setenv("ARRAYRL_DISABLE_NUMBA", "0")
    K.set_enabled(None)
    assert K.available()


def test_numba_is_imported_lazily():
    code = ("import sys, numpy as np; import arrayrl, arrayrl._numba_scan as K; assert 'numba' not in sys.modules; "
            "K.try_reverse_scan(np.ones((2, 3)), np.ones((2, 3))); assert 'numba' in sys.modules")
    env = dict(os.environ)
    env.pop("ARRAYRL_DISABLE_NUMBA", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))


BAD_CALLS = {  # (what is wrong, keyword overrides of a valid call) -> the generic path's error must be raised
    "gamma above 1": {"gamma": 1.5},
    "lmbda NaN": {"lmbda": float("nan")},
    "gamma bool": {"gamma": True},
    "time_dim numpy int": {"time_dim": np.int64(1)},
    "time_dim bool": {"time_dim": True},
    "time_dim out of range": {"time_dim": 3},
    "float16 values": {"dtype": np.float16},
    "done not bool": {"done": np.zeros((3, 6, 1), np.int8)},
    "shape mismatch": {"reward": np.zeros((3, 5, 1), np.float32)},
    "mixed dtypes": {"reward": np.zeros((3, 6, 1), np.float64)},
}


@pytest.mark.parametrize("what", list(BAD_CALLS))
@pytest.mark.parametrize("estimator", ["gae", "td_lambda"])
def test_functional_fast_path_keeps_every_error(what, estimator):
    """The functions' lean fast path (Python-float hyper-parameters, the kernel's own array checks) never accepts
    an input that the full validation rejects: each bad call raises the generic path's error, message included."""
    kw = {"gamma": 0.99, "lmbda": 0.95, "time_dim": 1, "dtype": np.float32, "done": None, "reward": None}
    kw.update(BAD_CALLS[what])
    rng = np.random.default_rng(0)
    v, nv, r = (rng.normal(size=(3, 6, 1)).astype(kw["dtype"]) for _ in range(3))
    r = r if kw["reward"] is None else kw["reward"]
    d = rng.random((3, 6, 1)) < 0.2 if kw["done"] is None else kw["done"]

    def call():
        if estimator == "gae":
            return F.generalized_advantage_estimate(kw["gamma"], kw["lmbda"], v, nv, r, d, time_dim=kw["time_dim"])
        return F.td_lambda_return_estimate(kw["gamma"], kw["lmbda"], nv, r, d, time_dim=kw["time_dim"])

    with K.generic_path():
        with pytest.raises((TypeError, ValueError)) as generic:
            call()
    with pytest.raises(type(generic.value)) as fast:
        call()
    assert str(fast.value) == str(generic.value)


@pytest.mark.parametrize("dtype", DTYPES)
def test_functional_fast_path_matches_generic(dtype):
    """The public functions on plain float arguments (the fast path) equal the generic path bit for bit at T <= 4
    (the generic scan is then the sequential loop) and within the scan tolerance at T = 50."""
    rng = np.random.default_rng(5)
    for shape in [(5, 4, 2), (3, 50, 1)]:
        v, nv, r = (rng.normal(size=shape).astype(dtype) for _ in range(3))
        d = rng.random(shape) < 0.2
        tm = d & (rng.random(shape) < 0.5)
        adv, target = F.generalized_advantage_estimate(0.99, 0.95, v, nv, r, d, tm, time_dim=1)
        ret = F.td_lambda_return_estimate(0.99, 0.95, nv, r, d, tm, time_dim=1)
        with K.generic_path():
            gadv, gtarget = F.generalized_advantage_estimate(0.99, 0.95, v, nv, r, d, tm, time_dim=1)
            gret = F.td_lambda_return_estimate(0.99, 0.95, nv, r, d, tm, time_dim=1)
        assert adv.dtype == target.dtype == ret.dtype == dtype
        if shape[1] <= 4:
            assert np.array_equal(adv, gadv) and np.array_equal(target, gtarget) and np.array_equal(ret, gret)
        for ours, gen in ((adv, gadv), (target, gtarget), (ret, gret)):
            close(ours, gen, dtype, shape[1])
