"""arrayrl.distributions on every backend against the float64 loops of reference/distributions.py (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import given as _given
from hypothesis import strategies as st

import arrayrl.distributions as D
from arrayrl.random import Generator
from arrayrl.testing import assert_allclose
from reference import distributions as R

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# the xp fixture only selects a backend: reusing it across Hypothesis examples is intended
_FIXTURE_OK = settings(
    parent=settings.default,
    suppress_health_check=list(settings.default.suppress_health_check) + [HealthCheck.function_scoped_fixture],
)


def given(*args, **kwargs):
    return lambda f: _FIXTURE_OK(_given(*args, **kwargs)(f))


def _tol(xp):
    return dict(rtol=xp.rtol * 10, atol=xp.atol * 10)


def _res(xp):
    return 1e-15 if xp.is_float64 else 1e-6


@st.composite
def normal_params(draw, max_dims=3):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=max_dims)))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=shape) * draw(st.sampled_from([0.5, 2.0, 6.0]))
    scale = np.exp(rng.normal(size=shape) * 0.7)
    return loc, scale, rng


@given(normal_params())
def test_normal_and_independent_normal(xp, p):
    loc, scale, rng = p
    value = loc + scale * rng.normal(size=loc.shape)
    L, S, V = xp.from_numpy(loc), xp.from_numpy(scale), xp.from_numpy(value)
    tol = _tol(xp)
    assert_allclose(D.Normal(L, S).log_prob(V), R.normal_log_prob(value, loc, scale), xp=xp.ns, **tol)
    assert_allclose(D.Normal(L, S).entropy(), R.normal_entropy(scale), **tol)
    e = loc.ndim
    for ev in range(0, e + 1):
        d = D.IndependentNormal(L, S, event_dim=ev)
        assert d.batch_shape == loc.shape[: e - ev] and d.event_shape == loc.shape[e - ev:]
        assert_allclose(d.log_prob(V), R.independent_normal_log_prob(value, loc, scale, ev), **tol)
        assert_allclose(d.entropy(), R.independent_normal_entropy(loc, scale, ev), **tol)


@given(normal_params(), st.sampled_from([(-1.0, 1.0), (-2.0, 3.0), (0.0, 0.5)]), st.booleans(), st.integers(0, 1))
def test_tanh_normal(xp, p, bounds, tanh_loc, event_dims):
    loc, scale, rng = p
    low, high = bounds
    noise = rng.normal(size=(2,) + loc.shape)
    # actions strictly inside, plus the bounds themselves
    action = low + (high - low) * rng.uniform(0.02, 0.98, size=loc.shape)
    action.flat[0] = high
    if action.size > 1:
        action.flat[-1] = low
    L, S = xp.from_numpy(loc), xp.from_numpy(scale)
    kw = dict(low=low, high=high, event_dims=event_dims, tanh_loc=tanh_loc)
    d = D.TanhNormal(L, S, **kw, torchrl_compat=True)
    ref_kw = dict(clamp_eps=_res(xp), tanh_loc=tanh_loc, upscale=5.0)
    tol = _tol(xp)
    lp = d.log_prob(xp.from_numpy(action))
    ref = R.tanh_normal_log_prob(action, loc, scale, low, high, event_dims, **ref_kw)
    # at the clamped bounds the log-prob is +-O(1/res) sensitive: compare with a looser tolerance there
    assert_allclose(lp, ref, rtol=tol["rtol"] * (1 if xp.is_float64 else 50), atol=1e-8 if xp.is_float64 else 5e-2)
    act, lp2 = d.rsample_and_log_prob(noise=xp.from_numpy(noise))
    ref_act, ref_lp = R.tanh_normal_rsample(loc, scale, noise, low, high, event_dims, **ref_kw)
    assert_allclose(act, ref_act, **tol)
    assert_allclose(lp2, ref_lp, rtol=tol["rtol"], atol=tol["atol"] * 100)
    assert_allclose(d.deterministic_sample, R.tanh_normal_deterministic_sample(loc, low, high, **ref_kw), **tol)


@st.composite
def logits_params(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=2)))
    k = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape + (k,)) * draw(st.sampled_from([0.1, 3.0, 30.0]))
    index = rng.integers(0, k, size=shape + (3,))[..., 0] if shape else np.asarray(rng.integers(0, k))
    return logits, np.asarray(index, dtype=np.int64)


@given(logits_params())
def test_categorical_and_one_hot(xp, p):
    logits, index = p
    tol = _tol(xp)
    d = D.Categorical(logits=xp.from_numpy(logits))
    assert_allclose(d.log_prob(xp.from_numpy(index)), R.categorical_log_prob(logits, index), **tol)
    assert_allclose(d.entropy(), R.categorical_entropy(logits), **tol)
    k = logits.shape[-1]
    one_hot = np.eye(k)[index]
    oh = D.OneHotCategorical(logits=xp.from_numpy(logits))
    assert_allclose(oh.log_prob(xp.from_numpy(one_hot)), R.one_hot_categorical_log_prob(logits, one_hot), **tol)
    assert_allclose(oh.entropy(), R.one_hot_categorical_entropy(logits), **tol)
    # probs parametrisation gives the same distribution (up to torch's eps clipping of the probabilities)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = probs / probs.sum(-1, keepdims=True)
    if probs.min() > 1e-6:
        dp = D.Categorical(probs=xp.from_numpy(probs))
        assert_allclose(dp.log_prob(xp.from_numpy(index)), R.categorical_log_prob(logits, index), **tol)


@given(normal_params(max_dims=2), st.integers(0, 2))
def test_delta(xp, p, which):
    param, _, rng = p
    value = param.copy()
    if which == 1:
        value.flat[0] += 1.0
    elif which == 2:
        value = value + 1e-9  # inside atol
    d = D.Delta(xp.from_numpy(param))
    assert_allclose(d.log_prob(xp.from_numpy(value)), R.delta_log_prob(value, param, event_dims=1), rtol=0, atol=0)


def test_sample_statistics(xp):
    """Samples from a Generator have the right moments / frequencies (seeded, loose bounds)."""
    g = Generator(3, xp=getattr(xp.ns, "_arrayrl_base", xp.ns), device=xp.device)
    loc = xp.from_numpy(np.array([0.5, -2.0]))
    scale = xp.from_numpy(np.array([1.0, 0.25]))
    s = xp.to_numpy(D.Normal(loc, scale).sample(g, (4000,)))
    assert s.shape == (4000, 2)
    np.testing.assert_allclose(s.mean(0), [0.5, -2.0], atol=0.06)
    np.testing.assert_allclose(s.std(0), [1.0, 0.25], rtol=0.06)
    probs = np.array([0.1, 0.6, 0.3])
    idx = xp.to_numpy(D.Categorical(logits=xp.from_numpy(np.log(probs))).sample(g, (4000,)))
    np.testing.assert_allclose(np.bincount(idx, minlength=3) / 4000, probs, atol=0.03)
    oh = xp.to_numpy(D.OneHotCategorical(logits=xp.from_numpy(np.log(probs))).sample(g, (10,)))
    assert oh.shape == (10, 3) and (oh.sum(-1) == 1).all()


@given(normal_params(max_dims=2), st.sampled_from([(-1.0, 1.0), (-2.0, 3.0)]))
def test_gradients_vs_finite_differences(p, bounds):
    """log_prob, entropy and rsample through the tape vs central finite differences (float64)."""
    from arrayrl.autodiff import check_grads

    loc, scale, rng = p
    low, high = bounds
    noise = rng.normal(size=loc.shape)
    action = low + (high - low) * rng.uniform(0.05, 0.95, size=loc.shape)
    value = loc + scale * rng.normal(size=loc.shape)

    def tanh_normal(lc, sc):
        d = D.TanhNormal(lc, sc, low=low, high=high, tanh_loc=True)
        a, lp = d.rsample_and_log_prob(noise=noise)
        return {"a": a, "lp": lp, "lp_given": d.log_prob(action)}

    def normal(lc, sc):
        d = D.IndependentNormal(lc, sc)
        return {"lp": d.log_prob(value), "h": d.entropy(), "s": d.rsample(noise=noise)}

    def categorical(lg):
        c = D.Categorical(logits=lg)
        return {"lp": c.log_prob(np.zeros(lg.shape[:-1], dtype=np.int64)), "h": c.entropy()}

    check_grads(tanh_normal, (loc, scale), rtol=1e-5, atol=1e-6)
    check_grads(normal, (loc, scale), rtol=1e-5, atol=1e-6)
    check_grads(categorical, (loc,), rtol=1e-5, atol=1e-6)
