"""Extreme inputs stay finite; bad inputs raise errors naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl.distributions as D
from arrayrl import namespace_of
from arrayrl.autodiff import value_and_grad
from arrayrl.random import Generator


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(getattr(x, "value", x), dtype=np.float64))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_normal_at_the_bounds_and_saturated(dtype):
    loc = np.array([[0.0, 3.0, -19.0], [20.0, -20.0, 0.5]], dtype=dtype)
    scale = np.array([[1.0, 0.1, 2.0], [0.5, 0.05, 1e-3]], dtype=dtype)
    for low, high in [(-1.0, 1.0), (-2.0, 0.5)]:
        d = D.TanhNormal(loc, scale, low=low, high=high)
        action = np.array([[high, low, high], [low, high, (low + high) / 2]], dtype=dtype)
        lp = d.log_prob(action)
        assert lp.dtype == dtype and _finite(lp)
        # pre-tanh values up to |u| = 20 (noise scaled so that u = loc + scale * noise hits +-20)
        noise = ((np.array([[20.0, -20.0, 20.0], [-20.0, 20.0, 20.0]]) - loc) / scale).astype(dtype)
        a, lp2 = d.rsample_and_log_prob(noise=noise)
        assert _finite(a) and _finite(lp2) and lp2.dtype == dtype
        assert np.all(np.asarray(a) <= high) and np.all(np.asarray(a) >= low)

        def f(p):
            dd = D.TanhNormal(p["loc"], p["scale"], low=low, high=high)
            aa, ll = dd.rsample_and_log_prob(noise=noise)
            xp = namespace_of(aa)
            return xp.sum(ll) + xp.sum(aa) + xp.sum(dd.log_prob(action))

        val, g = value_and_grad(f)({"loc": loc, "scale": scale})
        assert _finite(val) and _finite(g["loc"]) and _finite(g["scale"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_tanh_normal_unsafe_inverse_at_the_bound_is_infinite():
    """safe_tanh=False reproduces torch's TanhTransform: atanh(1) = inf (documented; the default is safe)."""
    d = D.TanhNormal(np.zeros(2), np.ones(2), safe_tanh=False)
    assert not _finite(d.log_prob(np.array([1.0, 0.0])))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_categorical_extreme_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4], [-np.inf, 0.0, 1.0]], dtype=dtype)
    c = D.Categorical(logits=logits)
    assert _finite(c.entropy()) and c.entropy().dtype == dtype
    lp = c.log_prob(np.array([0, 1, 2, 1]))
    assert _finite(lp)
    np.testing.assert_allclose(np.asarray(c.entropy())[:3], [0.0, np.log(3), np.log(2)], atol=1e-6)

    def f(lg):
        cc = D.Categorical(logits=lg)
        xp = namespace_of(lg)
        return xp.sum(cc.entropy()) + xp.sum(cc.log_prob(np.array([0, 1, 2])))

    val, g = value_and_grad(f)(logits[:3])
    assert _finite(val) and _finite(g)
    oh = D.OneHotCategorical(logits=logits)
    assert not np.any(np.isnan(np.asarray(oh.entropy())))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_entropy_never_nan_with_zero_probs():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    assert not np.any(np.isnan(D.Categorical(probs=probs).entropy()))
    assert not np.any(np.isnan(D.Categorical(logits=np.log(probs)).entropy()))


# ------------------------------------------------------------------------------------------------ bad input
def test_logits_of_the_wrong_rank():
    with pytest.raises(ValueError, match="logits"):
        D.Categorical(logits=np.asarray(1.0))
    with pytest.raises(ValueError, match="logits, probs"):
        D.Categorical()
    with pytest.raises(TypeError, match="logits"):
        D.Categorical(logits=np.array([1, 2]))
    c = D.Categorical(logits=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="value: expected shape"):
        c.log_prob(np.zeros((3,), dtype=np.int64))
    with pytest.raises(TypeError, match="value"):
        c.log_prob(np.zeros((4,)))
    with pytest.raises(ValueError, match="value: expected shape"):
        D.OneHotCategorical(logits=np.zeros((4, 3))).log_prob(np.zeros((4, 2)))


def test_scale_must_be_positive_with_validate_args():
    loc, bad = np.zeros(3), np.array([1.0, 0.0, -1.0])
    for cls in (D.Normal, D.IndependentNormal, D.TanhNormal):
        cls(loc, bad)  # no data check by default
        with pytest.raises(ValueError, match="scale"):
            cls(loc, bad, validate_args=True)
    with pytest.raises(ValueError, match="scale: expected shape"):
        D.Normal(np.zeros(3), np.ones(2))
    with pytest.raises(TypeError, match="scale: expected dtype"):
        D.Normal(np.zeros(3), np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError, match="loc"):
        D.TanhNormal([0.0], [1.0])


def test_action_outside_the_support():
    d = D.TanhNormal(np.zeros((2, 2)), np.ones((2, 2)), low=-2.0, high=1.0, validate_args=True)
    with pytest.raises(ValueError, match="value: outside the support"):
        d.log_prob(np.array([[0.0, 1.5], [0.0, 0.0]]))
    d.log_prob(np.array([[-2.0, 1.0], [0.0, 0.0]]))  # the bounds themselves are inside
    with pytest.raises(ValueError, match=r"value: expected integers in \[0, 3\)"):
        D.Categorical(logits=np.zeros(3), validate_args=True).log_prob(np.asarray(3))
    with pytest.raises(ValueError, match="value: expected one-hot"):
        D.OneHotCategorical(logits=np.zeros(3), validate_args=True).log_prob(np.array([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="high"):
        D.TanhNormal(np.zeros(2), np.ones(2), low=1.0, high=1.0)
    with pytest.raises(ValueError, match="high"):
        D.TanhNormal(np.zeros(2), np.ones(2), low=np.ones(2), high=np.zeros(2), validate_args=True)
    with pytest.raises(ValueError, match="low"):
        D.TanhNormal(np.zeros(2), np.ones(2), low=np.zeros(3), high=np.ones(3))


def test_sampling_arguments():
    d = D.Normal(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(TypeError, match="generator"):
        d.rsample()
    with pytest.raises(ValueError, match="noise"):
        d.rsample(noise=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="noise"):
        d.rsample(sample_shape=(4,), noise=np.zeros((5, 2, 3)))
    assert d.rsample(noise=np.zeros((4, 5, 2, 3))).shape == (4, 5, 2, 3)
    assert d.rsample(Generator(0), (7,)).shape == (7, 2, 3)
    import array_api_strict as s

    with pytest.raises(TypeError, match="generator"):
        d.rsample(Generator(0, xp=s))
    with pytest.raises(NotImplementedError, match="deterministic_sample"):
        D.TanhNormal(np.zeros(2), np.ones(2)).mode
    with pytest.raises(NotImplementedError):
        D.TanhNormal(np.zeros(2), np.ones(2)).entropy()


# ------------------------------------------------------------------------------------------------ index-range policy
@pytest.mark.parametrize("bad", [-1, 3])
def test_categorical_index_out_of_range(raw_xp, bad):
    """-1 wraps around and 3 reads garbage (torch) or raises a bare IndexError (NumPy) without the check; the
    default (auto) policy checks CPU arrays on every backend."""
    from arrayrl._validate import IndexRangeError

    logits = raw_xp.from_numpy(np.log(np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])))
    dtype = raw_xp.int32 if "no_float64" in str(raw_xp.device) else None
    dist = D.Categorical(logits=logits)
    with pytest.raises(IndexRangeError, match=rf"value: expected integers in \[0, 3\), got values outside "
                                              rf"\(min {min(bad, 1)}, max {max(bad, 1)}\)"):
        dist.log_prob(raw_xp.from_numpy(np.array([bad, 1]), dtype=dtype))
    assert issubclass(IndexRangeError, IndexError) and issubclass(IndexRangeError, ValueError)
    ok = dist.log_prob(raw_xp.from_numpy(np.array([2, 0]), dtype=dtype))
    np.testing.assert_allclose(raw_xp.to_numpy(ok), np.log([0.5, 0.6]), rtol=1e-6)


def test_validate_args_switch_and_gpu_auto(monkeypatch):
    """False turns the check off (-1 then wraps around: the defect the check prevents), True forces it, per-instance
    flags win, and the auto policy does not read GPU arrays (no host sync)."""
    import arrayrl
    from arrayrl import _validate

    dist = D.Categorical(logits=np.log(np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])))
    with arrayrl.validate_args(False):
        assert arrayrl.get_validate_args() is False
        np.testing.assert_allclose(dist.log_prob(np.array([-1, 0])), np.log([0.5, 0.6]))  # wrapped, unchecked
    assert arrayrl.get_validate_args() is None
    with pytest.raises(TypeError, match="flag"):
        arrayrl.set_validate_args("yes")
    monkeypatch.setattr(_validate, "_on_cpu", lambda x: False)  # pretend the array lives on a GPU
    with pytest.raises(IndexError) as info:
        dist.log_prob(np.array([3, 0]))
    assert not isinstance(info.value, _validate.IndexRangeError)  # unchecked: NumPy's own error
    with arrayrl.validate_args(True), pytest.raises(_validate.IndexRangeError, match="max 3"):
        dist.log_prob(np.array([3, 0]))
    with pytest.raises(_validate.IndexRangeError):
        D.Categorical(logits=np.zeros((2, 3)), validate_args=True).log_prob(np.array([3, 0]))
    with arrayrl.validate_args(True):  # per-instance False wins over the switch
        D.Categorical(logits=np.zeros((2, 3)), validate_args=False).log_prob(np.array([-1, 0]))
