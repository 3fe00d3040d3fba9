"""The shared actor-critic machinery (arrayrl/objectives/actor_critic.py): pure terms on every backend against hand
calculations and the float64 oracle, the ensemble reductions, the temperature block and its TorchRL rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arrayrl._backend import namespace_of
from arrayrl.autodiff import grad
from arrayrl.objectives import actor_critic as AC
from reference.losses import sac as R

RNG = np.random.default_rng(0)


def _np(xp, x):
    return xp.to_numpy(x)


def _close(xp, got, want):
    assert ("float32" if "32" in str(xp.float_dtype) else "float64") in str(got.dtype)
    np.testing.assert_allclose(_np(xp, got), want, rtol=max(xp.rtol, 1e-12), atol=max(xp.atol, 1e-12))


# ------------------------------------------------------------------------------------------------ pure terms
def test_soft_values_and_actor_losses(xp):
    q = RNG.normal(size=(3, 5))
    lp = RNG.normal(size=5)
    alpha = 0.3
    f = xp.from_numpy
    want_v = np.array([min(q[i, b] - alpha * lp[b] for i in range(3)) for b in range(5)])
    _close(xp, AC.soft_state_value(f(q), f(lp), alpha), want_v)
    _close(xp, AC.soft_state_value(f(q), f(lp), f(np.asarray(alpha))), want_v)  # a 0-d array temperature
    _close(xp, AC.soft_actor_loss(f(lp), AC.min_over_critics(f(q)), alpha), alpha * lp - q.min(0))
    qk = RNG.normal(size=(2, 4, 3))
    logits = RNG.normal(size=(4, 3))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    lpk = np.log(p)
    want = (p * (qk.min(0) - alpha * lpk)).sum(-1)
    _close(xp, AC.expected_soft_state_value(f(qk), f(p), f(lpk), alpha), want)
    _close(xp, AC.expected_soft_actor_loss(f(p), f(lpk), AC.min_over_critics(f(qk)), alpha),
           (p * (alpha * lpk - qk.min(0))).sum(-1))


def test_pure_terms_check_shapes():
    with pytest.raises(ValueError, match="next_q"):
        AC.soft_state_value(np.zeros((2, 4)), np.zeros(5), 0.1)
    with pytest.raises(ValueError, match="min_q"):
        AC.soft_actor_loss(np.zeros(4), np.zeros((4, 1)), 0.1)
    with pytest.raises(ValueError, match="next_q"):
        AC.expected_soft_state_value(np.zeros((2, 4, 2)), np.zeros((4, 3)), np.zeros((4, 3)), 0.1)
    with pytest.raises(ValueError, match="pred.*shape of target"):
        AC.critic_ensemble_loss(np.zeros((2, 4)), np.zeros((4, 1)))


def test_temperature_loss_is_in_log_alpha_with_stopped_log_prob():
    lp = RNG.normal(size=4)
    H = -2.0

    def f(log_alpha, log_prob):
        xp = namespace_of(log_alpha, log_prob)
        return xp.sum(AC.temperature_loss(log_alpha, log_prob, H))

    la = np.asarray(0.3)
    np.testing.assert_allclose(f(la, lp), np.sum(-0.3 * (lp + H)), rtol=1e-14)
    g_la, g_lp = grad(f, argnums=(0, 1))(la, lp)
    np.testing.assert_allclose(g_la, -np.sum(lp + H), rtol=1e-14)  # d/dlog_alpha = -(log pi + H)
    np.testing.assert_allclose(g_lp, 0.0)  # the log-probability is a constant of the temperature loss
    np.testing.assert_array_equal(AC.temperature_loss(la, lp, None), np.zeros(4))  # TorchRL's placeholder


# ------------------------------------------------------------------------------------------------ ensembles
@pytest.mark.parametrize("fn", ["l2", "l1", "smooth_l1"])
def test_critic_ensemble_reductions(xp, fn):
    n, b = 2, 6
    pred, y = RNG.normal(size=(n, b)) * 2, RNG.normal(size=b)
    from reference.losses.common import distance

    d = np.stack([distance(pred[i], y, fn) for i in range(n)])
    f = xp.from_numpy
    _close(xp, AC.critic_ensemble_loss(f(pred), f(y), fn, "sum"), d.sum(0))  # SAC, TD3, CrossQ, TQC, CQL
    _close(xp, AC.critic_ensemble_loss(f(pred), f(y), fn, "per_critic"), d)  # REDQ (mean over N*B downstream)
    owner = np.arange(b) // (b // n)
    _close(xp, AC.critic_ensemble_loss(f(pred), f(y), fn, "chunk"), d[owner, np.arange(b)])  # TorchRL SAC v1
    _close(xp, AC.ensemble_td_error(f(pred), f(y), "max_abs"), np.abs(pred - y).max(0))
    _close(xp, AC.ensemble_td_error(f(pred), f(y), "max_sq"), ((pred - y) ** 2).max(0))
    _close(xp, AC.ensemble_td_error(f(pred), f(y), "chunk_sq"), (pred[owner, np.arange(b)] - y) ** 2)


def test_chunk_loss_gradient_reaches_only_the_owning_critic():
    pred, y = RNG.normal(size=(3, 6)), RNG.normal(size=6)
    g = grad(lambda p: namespace_of(p).sum(AC.critic_ensemble_loss(p, y, "l2", "chunk")))(pred)
    mask = np.zeros((3, 6), bool)
    for i in range(3):
        mask[i, 2 * i: 2 * i + 2] = True
    np.testing.assert_allclose(g[~mask], 0.0)
    np.testing.assert_allclose(g[mask], (2 * (pred - y))[mask], rtol=1e-14)
    # the target is a constant
    gy = grad(lambda t: namespace_of(t).sum(AC.critic_ensemble_loss(pred, t, "l2", "sum")))(y)
    np.testing.assert_allclose(gy, 0.0)


def test_chunk_mask_layout_and_errors(xp):
    like = xp.from_numpy(np.zeros(1))
    m = AC.chunk_mask(2, (4, 3), like)
    assert tuple(m.shape) == (2, 4, 3)
    want = np.zeros((2, 4, 3), bool)
    want[0, :2], want[1, 2:] = True, True
    np.testing.assert_array_equal(_np(xp, m), want)
    with pytest.raises(RuntimeError, match="incompatible"):
        AC.chunk_mask(2, (5,), like)


# ------------------------------------------------------------------------------------------------ temperature
class _Spec:  # any object with .shape (a TorchRL Bounded spec works the same)
    def __init__(self, *shape):
        self.shape = shape


def test_auto_target_entropy():
    assert AC.auto_target_entropy(_Spec(4, 2)) == -2.0  # batch dims of a batched spec are not counted
    assert AC.auto_target_entropy(_Spec(4, 2), torchrl_compat=True) == -8.0  # TorchRL 0.14.1
    assert AC.auto_target_entropy(_Spec(4, 2), container_shape=(4,), torchrl_compat=True) == -2.0
    assert AC.auto_target_entropy(3) == -3.0 and AC.auto_target_entropy((2, 3), event_dims=2) == -6.0
    assert AC.auto_target_entropy(()) == -1.0  # a scalar action
    assert AC.auto_target_entropy({"a": (2,), "b": _Spec(5, 3)}) == -5.0  # composite: summed
    for shape in [(2,), (4, 2), (3, 1, 5)]:
        assert AC.auto_target_entropy(shape) == R.auto_target_entropy(shape)
        assert AC.auto_target_entropy(shape, torchrl_compat=True) == R.auto_target_entropy(shape, True)
    with pytest.raises(TypeError, match="action_spec"):
        AC.auto_target_entropy("auto")


def test_auto_target_entropy_matches_torchrl_spec_objects():
    pytest.importorskip("torchrl")
    from torchrl.data import Bounded

    spec = Bounded(-1.0, 1.0, (4, 2))
    assert AC.auto_target_entropy(spec, torchrl_compat=True) == -8.0
    assert AC.auto_target_entropy(spec) == -2.0


def test_discrete_target_entropy():
    assert AC.discrete_target_entropy(4) == pytest.approx(0.98 * math.log(4), rel=1e-15)
    assert AC.discrete_target_entropy(6, 0.5) == pytest.approx(0.5 * math.log(6), rel=1e-15)
    with pytest.raises(ValueError, match="num_actions"):
        AC.discrete_target_entropy(None)


@pytest.mark.parametrize("lo,hi", [(None, None), (0.1, None), (None, 2.0), (0.2, 3.0), (0.0, 2.0)])
def test_alpha_bounds_follow_torchrl(lo, hi):
    blo, bhi = AC.alpha_log_bounds(lo, hi)
    if lo and not hi:
        assert bhi == pytest.approx(math.log(1e9))
    if hi and not lo:
        assert blo is None
    for la in (-5.0, -1.0, 0.0, 0.5, 2.0, 30.0):
        got = AC.clamp_log_alpha(la, blo, bhi)
        assert got == pytest.approx(R.clamp_log_alpha(la, lo, hi), rel=1e-15)


def test_alpha_bounds_errors():
    with pytest.raises(ValueError, match="max_alpha"):
        AC.alpha_log_bounds(2.0, 1.0)
    with pytest.raises(ValueError, match="min_alpha"):
        AC.alpha_log_bounds(-1.0, None)
    with pytest.raises(ValueError, match="max_alpha must be either None or greater than 0"):  # TorchRL's
        AC.alpha_log_bounds(0.5, 0)
    with pytest.raises(ValueError, match="alpha_init"):
        AC.EntropyTemperature(alpha_init=-1.0)


def test_clamp_log_alpha_is_straight_through():
    lo, hi = math.log(0.5), math.log(2.0)
    for la in (-3.0, 0.1, 3.0):
        x = np.asarray(la)
        np.testing.assert_allclose(AC.clamp_log_alpha(x, lo, hi), min(max(la, lo), hi), rtol=1e-15)
        np.testing.assert_allclose(grad(lambda v: AC.clamp_log_alpha(v, lo, hi))(x), 1.0)


def test_entropy_temperature_leaf(xp):
    from arrayrl.objectives import LossModule

    like = xp.from_numpy(np.zeros(2))
    loss = LossModule()
    t = AC.EntropyTemperature(alpha_init=5.0, max_alpha=2.0)
    t.register(loss, like)
    leaf = loss.params["log_alpha"]
    assert tuple(leaf.shape) == () and str(leaf.dtype) == str(xp.from_numpy(np.zeros(1)).dtype)
    np.testing.assert_allclose(float(_np(xp, leaf)), math.log(5.0), rtol=1e-6)
    np.testing.assert_allclose(float(_np(xp, t.alpha(loss.params, like))), 2.0, rtol=1e-6)  # clamped in the loss
    t.project(loss)  # TorchRL's in-place clamp_ of the parameter
    np.testing.assert_allclose(float(_np(xp, loss.params["log_alpha"])), math.log(2.0), rtol=1e-6)
    fixed = AC.EntropyTemperature(alpha_init=0.3, fixed_alpha=True)
    other = LossModule()
    fixed.register(other, like)
    assert "log_alpha" not in other.params
    a = fixed.alpha({}, like)
    assert tuple(a.shape) == () and a.dtype == like.dtype
    np.testing.assert_allclose(float(_np(xp, a)), 0.3, rtol=1e-6)


def test_bootstrap_target_td0():
    from arrayrl.value import TD0Estimator

    est = TD0Estimator(gamma=0.9, value_network=None)
    r, v = RNG.normal(size=(4, 1)), RNG.normal(size=4)
    term = np.array([[True], [False], [False], [True]])
    batch = {"next": {"reward": r, "done": term, "terminated": term}}
    np.testing.assert_allclose(AC.bootstrap_target(est, batch, v), r[:, 0] + 0.9 * np.where(term[:, 0], 0.0, v),
                               rtol=1e-15)
