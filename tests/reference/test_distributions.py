"""Self-tests of reference.distributions: hand values and cross-checks against torch / TorchRL (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reference import distributions as D

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def test_normal_hand():
    # log N(1; 0, 2) = -(1/2)^2/2 - log 2 - log(2 pi)/2
    np.testing.assert_allclose(D.normal_log_prob(1.0, 0.0, 2.0), -0.125 - math.log(2) - HALF_LOG_2PI, rtol=1e-15)
    np.testing.assert_allclose(D.normal_entropy(np.array([1.0, math.e])), [0.5 + HALF_LOG_2PI, 1.5 + HALF_LOG_2PI])
    lp = D.independent_normal_log_prob(np.zeros((2, 3)), 0.0, 1.0)
    np.testing.assert_allclose(lp, [-3 * HALF_LOG_2PI] * 2, rtol=1e-15)
    np.testing.assert_allclose(D.independent_normal_entropy(np.zeros((2, 3)), 1.0), [3 * (0.5 + HALF_LOG_2PI)] * 2)


def test_tanh_normal_hand():
    # action at the centre: u = 0, log(1 - tanh^2) = 0 -> log N(0; loc, scale) - log(half)
    np.testing.assert_allclose(D.tanh_normal_log_prob(np.array([0.0]), np.array([0.0]), np.array([1.0])),
                               [-HALF_LOG_2PI], rtol=1e-15)
    np.testing.assert_allclose(D.tanh_normal_log_prob(np.array([1.0]), np.array([0.0]), np.array([1.0]), 0.0, 2.0),
                               [-HALF_LOG_2PI], rtol=1e-15)
    np.testing.assert_allclose(D.tanh_normal_log_prob(np.array([0.0]), np.array([0.0]), np.array([1.0]), -2.0, 2.0),
                               [-HALF_LOG_2PI - math.log(2.0)], rtol=1e-15)
    # u = atanh(0.5): log(1 - 0.25) = log 0.75
    u = math.atanh(0.5)
    expected = -0.5 * (u - 0.1) ** 2 / 0.09 - math.log(0.3) - HALF_LOG_2PI - math.log(0.75)
    np.testing.assert_allclose(D.tanh_normal_log_prob(np.array([0.5]), np.array([0.1]), np.array([0.3])),
                               [expected], rtol=1e-13)
    # rsample from noise 0 is tanh(loc) and scores the same density as log_prob at that action
    act, lp = D.tanh_normal_rsample(np.array([0.2, -0.4]), np.array([0.5, 0.7]), np.zeros(2))
    np.testing.assert_allclose(act, np.tanh([0.2, -0.4]), rtol=1e-15)
    np.testing.assert_allclose(lp, D.tanh_normal_log_prob(act, np.array([0.2, -0.4]), np.array([0.5, 0.7])),
                               rtol=1e-12)
    np.testing.assert_allclose(D.tanh_normal_deterministic_sample(np.array([0.3]), 0.0, 4.0), [2 + 2 * np.tanh(0.3)])


def test_tanh_normal_density_integrates_to_one():
    # 1-D density over (low, high) integrated with the midpoint rule
    lo, hi = -0.5, 2.0
    xs = np.linspace(lo, hi, 40001)[:-1] + (hi - lo) / 80000
    lp = D.tanh_normal_log_prob(xs[:, None], np.full((xs.size, 1), 0.3), np.full((xs.size, 1), 0.8), lo, hi)
    assert abs(np.sum(np.exp(lp)) * (hi - lo) / 40000 - 1.0) < 1e-4


def test_categorical_hand():
    logits = np.array([[0.0, 0.0, math.log(2.0)]])  # p = [1/4, 1/4, 1/2]
    np.testing.assert_allclose(D.categorical_log_prob(logits, np.array([2])), [math.log(0.5)], rtol=1e-15)
    np.testing.assert_allclose(D.categorical_entropy(logits), [1.5 * math.log(2.0)], rtol=1e-15)
    np.testing.assert_allclose(D.one_hot_categorical_log_prob(logits, np.array([[0, 1, 0]])), [math.log(0.25)])
    # a -inf logit has probability 0 and contributes 0 to the entropy
    np.testing.assert_allclose(D.categorical_entropy(np.array([0.0, -np.inf])), 0.0, atol=0)


def test_delta_hand():
    out = D.delta_log_prob(np.array([[1.0, 2.0], [1.0, 2.1]]), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(out, [np.inf, -np.inf])


@pytest.mark.torchrl
@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (-0.5, 2.0), "array"])
@pytest.mark.parametrize("tanh_loc", [False, True])
def test_tanh_normal_vs_torchrl(bounds, tanh_loc):
    import torch
    from torchrl.modules.distributions import TanhNormal

    rng = np.random.default_rng(0)
    loc, scale = rng.normal(size=(4, 3)), rng.uniform(0.2, 1.5, size=(4, 3))
    if bounds == "array":
        low, high = rng.uniform(-2, -0.5, size=3), rng.uniform(0.5, 3, size=3)
    else:
        low, high = bounds
    # float64 bounds: Python-number bounds become float32 tensors in TorchRL, and the affine log|half| is then
    # computed in float32 (~4e-9 per event element on float64 data)
    f64 = dict(dtype=torch.float64)
    dist = TanhNormal(torch.as_tensor(loc), torch.as_tensor(scale), low=torch.tensor(low, **f64),
                      high=torch.tensor(high, **f64), tanh_loc=tanh_loc, upscale=2.0)
    action = np.asarray(dist.sample().numpy())
    ref = D.tanh_normal_log_prob(action, loc, scale, low, high, tanh_loc=tanh_loc, upscale=2.0)
    np.testing.assert_allclose(ref, dist.log_prob(torch.as_tensor(action)).numpy(), rtol=1e-10, atol=1e-10)
    # rsample_and_log_prob from the same draw
    torch.manual_seed(3)
    act_t, lp_t = dist.rsample_and_log_prob()
    torch.manual_seed(3)
    noise = torch.randn(4, 3, dtype=torch.float64).numpy()
    act, lp = D.tanh_normal_rsample(loc, scale, noise, low, high, tanh_loc=tanh_loc, upscale=2.0)
    np.testing.assert_allclose(act, act_t.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lp, lp_t.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(D.tanh_normal_deterministic_sample(loc, low, high, tanh_loc=tanh_loc, upscale=2.0),
                               dist.deterministic_sample.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.torchrl
def test_normal_and_categorical_vs_torch():
    import torch
    from torchrl.modules.distributions import IndependentNormal, OneHotCategorical

    rng = np.random.default_rng(1)
    loc, scale, x = rng.normal(size=(3, 4)), rng.uniform(0.3, 2, size=(3, 4)), rng.normal(size=(3, 4))
    d = IndependentNormal(torch.as_tensor(loc), torch.as_tensor(scale))
    np.testing.assert_allclose(D.independent_normal_log_prob(x, loc, scale), d.log_prob(torch.as_tensor(x)).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(D.independent_normal_entropy(loc, scale), d.entropy().numpy(), rtol=1e-12)
    np.testing.assert_allclose(D.normal_log_prob(x, loc, scale),
                               torch.distributions.Normal(torch.as_tensor(loc), torch.as_tensor(scale))
                               .log_prob(torch.as_tensor(x)).numpy(), rtol=1e-12)

    logits = rng.normal(size=(5, 4)) * 3
    idx = rng.integers(0, 4, size=5)
    cat = torch.distributions.Categorical(logits=torch.as_tensor(logits))
    np.testing.assert_allclose(D.categorical_log_prob(logits, idx), cat.log_prob(torch.as_tensor(idx)).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(D.categorical_entropy(logits), cat.entropy().numpy(), rtol=1e-12)
    oh = OneHotCategorical(logits=torch.as_tensor(logits))
    onehot = np.eye(4)[idx]
    np.testing.assert_allclose(D.one_hot_categorical_log_prob(logits, onehot),
                               oh.log_prob(torch.as_tensor(onehot)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(D.one_hot_categorical_entropy(logits), oh.entropy().numpy(), rtol=1e-12)


@pytest.mark.torchrl
def test_delta_vs_torchrl():
    import torch
    from torchrl.modules.distributions import Delta

    param = np.array([[1.0, 2.0], [0.0, 1e-7]])
    value = np.array([[1.0, 2.0 + 1e-9], [0.0, 2e-6]])
    d = Delta(torch.as_tensor(param))
    np.testing.assert_array_equal(D.delta_log_prob(value, param), d.log_prob(torch.as_tensor(value)).numpy())
