"""Algebraic properties of the estimators (Hypothesis inputs, float64 NumPy and every backend where cheap)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arrayrl.testing.strategies import trajectory_batches
from arrayrl.value import functional as F

from value_helpers import FEW, SETTINGS

TOL = dict(rtol=1e-10, atol=1e-10)


def _scale(*arrays):
    return max([1.0] + [float(np.max(np.abs(a))) for a in arrays if np.size(a)])


def _close(a, b, *, scale=1.0, err_msg=""):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10 * scale, err_msg=err_msg)


# every recursive estimator as a function of a TrajectoryBatch -> tuple of outputs
TIMED = {
    "gae": lambda tb: F.generalized_advantage_estimate(tb.gamma, tb.lmbda, tb.state_value, tb.next_state_value,
                                                       tb.reward, tb.done, tb.terminated, time_dim=tb.time_dim),
    "td_lambda": lambda tb: (F.td_lambda_return_estimate(tb.gamma, tb.lmbda, tb.next_state_value, tb.reward, tb.done,
                                                         tb.terminated, time_dim=tb.time_dim),),
    "td1": lambda tb: (F.td1_return_estimate(tb.gamma, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                                             time_dim=tb.time_dim),),
    "vtrace": lambda tb: F.vtrace_advantage_estimate(tb.gamma, tb.log_pi, tb.log_mu, tb.state_value,
                                                     tb.next_state_value, tb.reward, tb.done, tb.terminated,
                                                     time_dim=tb.time_dim),
    "reward2go": lambda tb: (F.reward2go(tb.reward, tb.done, tb.gamma, time_dim=tb.time_dim),),
}


@SETTINGS
@given(tb=trajectory_batches())
def test_lambda_zero_is_td0(tb):
    tb = dataclasses.replace(tb, lmbda=0.0)
    got = F.td_lambda_return_estimate(tb.gamma, 0.0, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                                      time_dim=tb.time_dim)
    _close(got, F.td0_return_estimate(tb.gamma, tb.next_state_value, tb.reward, tb.terminated),
           scale=_scale(got))
    adv, _ = F.generalized_advantage_estimate(tb.gamma, 0.0, tb.state_value, tb.next_state_value, tb.reward,
                                              tb.done, tb.terminated, time_dim=tb.time_dim)
    _close(adv, F.td0_advantage_estimate(tb.gamma, tb.state_value, tb.next_state_value, tb.reward, tb.done,
                                         tb.terminated), scale=_scale(adv))


@SETTINGS
@given(tb=trajectory_batches())
def test_lambda_one_is_td1(tb):
    got = F.td_lambda_return_estimate(tb.gamma, 1.0, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                                      time_dim=tb.time_dim)
    want = F.td1_return_estimate(tb.gamma, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                                 time_dim=tb.time_dim)
    _close(got, want, scale=_scale(got))


@SETTINGS
@given(tb=trajectory_batches())
def test_gae_plus_value_is_td_lambda_with_consistent_values(tb):
    """``V'_t = V_{t+1}`` inside trajectories  =>  ``GAE + V == TD(lambda) return`` (Schulman et al. 2016, eq. 16)."""
    ax = tb.time_axis
    v = np.moveaxis(tb.state_value, ax, -1)
    nv = np.moveaxis(tb.next_state_value, ax, -1).copy()
    d = np.moveaxis(tb.done, ax, -1)
    inside = ~d[..., :-1]
    nv[..., :-1] = np.where(inside, v[..., 1:], nv[..., :-1])
    tb = dataclasses.replace(tb, next_state_value=np.moveaxis(nv, -1, ax))
    _, target = TIMED["gae"](tb)
    (ret,) = TIMED["td_lambda"](tb)
    _close(target, ret, scale=_scale(ret, target))


def _concat(tb1, tb2, ax):
    def cat(a, b):
        if isinstance(a, float):
            return a
        return np.concatenate([a, b], axis=ax)

    fields = {f.name: cat(getattr(tb1, f.name), getattr(tb2, f.name)) for f in dataclasses.fields(tb1)
              if f.name != "time_dim"}
    return dataclasses.replace(tb1, **fields)


@pytest.mark.parametrize("name", list(TIMED))
@SETTINGS
@given(data=st.data())
def test_two_trajectories_equal_their_concatenation_with_done_at_the_boundary(name, data):
    tb1 = data.draw(trajectory_batches(per_step_gamma=True, per_step_lmbda=True), label="first")
    ax = tb1.time_axis
    shape2 = list(tb1.shape)
    shape2[ax] = data.draw(st.integers(1, 10), label="T2")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    # the second trajectory batch: same shape except along time, random content
    tb2 = dataclasses.replace(
        tb1,
        **{f: rng.normal(size=shape2) for f in ("state_value", "next_state_value", "reward", "log_pi", "log_mu")},
        done=rng.random(shape2) < 0.2, gamma=rng.random(shape2), lmbda=rng.random(shape2),
    )
    tb2 = dataclasses.replace(tb2, terminated=tb2.done & (rng.random(shape2) < 0.5))
    # done at the last step of the first part
    last = [slice(None)] * len(tb1.shape)
    last[ax] = slice(-1, None)
    done1 = tb1.done.copy()
    done1[tuple(last)] = True
    tb1 = dataclasses.replace(tb1, done=done1)
    joint = TIMED[name](_concat(tb1, tb2, ax))
    for j, a, b in zip(joint, TIMED[name](tb1), TIMED[name](tb2)):
        _close(j, np.concatenate([a, b], axis=ax), scale=_scale(j))


@pytest.mark.parametrize("name", list(TIMED))
@pytest.mark.parametrize("garbage", ["finite", "nan", "inf"])
@SETTINGS
@given(data=st.data())
def test_garbage_after_a_done_never_changes_earlier_outputs(name, garbage, data):
    """TorchRL #4209: anything after an in-batch done (values, rewards, flags, discounts) cannot reach earlier
    steps; NaN and inf included (where, not mask multiplication)."""
    tb = data.draw(trajectory_batches(min_time=2, per_step_gamma=True, per_step_lmbda=True), label="batch")
    ax = tb.time_axis
    T = tb.shape[ax]
    k = data.draw(st.integers(0, T - 2), label="done at")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    sl = [slice(None)] * len(tb.shape)
    sl[ax] = k
    done = tb.done.copy()
    done[tuple(sl)] = True
    tb = dataclasses.replace(tb, done=done)
    after = [slice(None)] * len(tb.shape)
    after[ax] = slice(k + 1, None)
    after = tuple(after)
    fill = {"finite": None, "nan": np.nan, "inf": np.inf}[garbage]

    def spoil(a):
        a = a.copy()
        a[after] = rng.normal(size=a[after].shape) * 1e6 if fill is None else fill
        return a

    spoiled = dataclasses.replace(
        tb, **{f: spoil(getattr(tb, f)) for f in ("state_value", "next_state_value", "reward", "log_pi", "log_mu")},
        gamma=spoil(tb.gamma) if fill is None else tb.gamma, lmbda=spoil(tb.lmbda) if fill is None else tb.lmbda,
    )
    before = [slice(None)] * len(tb.shape)
    before[ax] = slice(0, k + 1)
    with np.errstate(invalid="ignore", over="ignore"):
        outs = TIMED[name](spoiled)
    for a, b in zip(outs, TIMED[name](tb)):
        assert np.all(np.isfinite(a[tuple(before)]))
        _close(a[tuple(before)], b[tuple(before)], scale=_scale(b))


@SETTINGS
@given(tb=trajectory_batches(min_time=1))
def test_truncated_steps_bootstrap_and_terminated_steps_never_do(tb):
    """TorchRL #2773, #3771: at a terminated step nothing of V(s') is used (NaN there changes nothing); at a
    truncated step (done & ~terminated) every estimator bootstraps with gamma V(s')."""
    g = tb.gamma if isinstance(tb.gamma, float) else tb.gamma
    nv_nan = np.where(tb.terminated, np.nan, tb.next_state_value)
    spoiled = dataclasses.replace(tb, next_state_value=nv_nan)
    for name in ("gae", "td_lambda", "td1", "vtrace"):
        for a, b in zip(TIMED[name](spoiled), TIMED[name](tb)):
            _close(a, b, scale=_scale(b), err_msg=name)
    assert np.all(np.isfinite(F.td0_return_estimate(g, nv_nan, tb.reward, tb.terminated)))
    trunc = tb.truncated
    boot = tb.reward + g * tb.next_state_value
    _close(np.where(trunc, F.td0_return_estimate(g, tb.next_state_value, tb.reward, tb.terminated), 0),
           np.where(trunc, boot, 0), scale=_scale(boot))
    for name in ("td_lambda", "td1"):
        (ret,) = TIMED[name](tb)
        _close(np.where(trunc, ret, 0), np.where(trunc, boot, 0), scale=_scale(boot), err_msg=name)
    adv, _ = TIMED["gae"](tb)
    _close(np.where(trunc, adv, 0), np.where(trunc, boot - tb.state_value, 0), scale=_scale(boot), err_msg="gae")
    # terminated: the return is the reward alone
    for name in ("td_lambda", "td1"):
        (ret,) = TIMED[name](tb)
        _close(np.where(tb.terminated, ret, 0), np.where(tb.terminated, tb.reward, 0), scale=_scale(ret))


@pytest.mark.parametrize("name", list(TIMED))
@SETTINGS
@given(data=st.data())
def test_moving_the_time_axis_or_adding_batch_axes_changes_nothing(name, data):
    """TorchRL #1001: the result does not depend on where the time axis is, nor on extra batch/agent axes."""
    tb = data.draw(trajectory_batches(time_axis="default", per_step_gamma=True, per_step_lmbda=True), label="batch")
    base = TIMED[name](tb)
    ax = tb.time_axis
    new_ax = data.draw(st.integers(0, len(tb.shape) - 1), label="new axis")
    neg = data.draw(st.booleans(), label="negative")

    def move(a):
        return a if isinstance(a, float) else np.moveaxis(a, ax, new_ax)

    fields = {f.name: move(getattr(tb, f.name)) for f in dataclasses.fields(tb) if f.name != "time_dim"}
    moved = dataclasses.replace(tb, **fields, time_dim=new_ax - len(tb.shape) if neg else new_ax)
    for a, b in zip(TIMED[name](moved), base):
        _close(np.moveaxis(a, new_ax, ax), b, scale=_scale(b))
    # an agent axis in front: stack the batch with a shuffled copy of itself
    rng = np.random.default_rng(0)
    other = dataclasses.replace(tb, **{f: rng.permutation(getattr(tb, f).reshape(-1)).reshape(tb.shape)
                                       for f in ("state_value", "next_state_value", "reward")})

    def stack(a, b):
        return a if isinstance(a, float) else np.stack([a, b], axis=0)

    fields = {f.name: stack(getattr(tb, f.name), getattr(other, f.name)) for f in dataclasses.fields(tb)
              if f.name != "time_dim"}
    td = tb.time_dim if tb.time_dim < 0 else tb.time_dim + 1
    stacked = dataclasses.replace(tb, **fields, time_dim=td)
    for a, b, c in zip(TIMED[name](stacked), base, TIMED[name](other)):
        _close(a[0], b, scale=_scale(b))
        _close(a[1], c, scale=_scale(c))


@SETTINGS
@given(data=st.data())
def test_reward2go_with_several_features(data):
    """TorchRL #2086: every feature column (with its own done flags) is its own sequence."""
    tb = data.draw(trajectory_batches(feature_shape=(3,), time_axis="default", per_step_gamma=True), label="batch")
    out = F.reward2go(tb.reward, tb.done, tb.gamma, time_dim=tb.time_dim)
    assert out.shape == tb.reward.shape
    for f in range(3):
        col = F.reward2go(tb.reward[..., f:f + 1], tb.done[..., f:f + 1], tb.gamma[..., f:f + 1],
                          time_dim=tb.time_dim)
        _close(out[..., f:f + 1], col, scale=_scale(col))


@FEW
@given(tb=trajectory_batches())
def test_properties_hold_on_every_backend(xp, tb):
    """lambda=0 and lambda=1 on each backend (the raw and taped namespaces)."""
    t = tb.map(xp.from_numpy)
    zero = F.td_lambda_return_estimate(t.gamma, 0.0, t.next_state_value, t.reward, t.done, t.terminated,
                                       time_dim=tb.time_dim)
    td0 = F.td0_return_estimate(t.gamma, t.next_state_value, t.reward, t.terminated)
    one = F.td_lambda_return_estimate(t.gamma, 1.0, t.next_state_value, t.reward, t.done, t.terminated,
                                      time_dim=tb.time_dim)
    td1 = F.td1_return_estimate(t.gamma, t.next_state_value, t.reward, t.done, t.terminated, time_dim=tb.time_dim)
    tol = 1e-10 if xp.is_float64 else 1e-4
    scale = _scale(xp.to_numpy(one), xp.to_numpy(zero))
    np.testing.assert_allclose(xp.to_numpy(zero), xp.to_numpy(td0), atol=tol * scale, rtol=tol)
    np.testing.assert_allclose(xp.to_numpy(one), xp.to_numpy(td1), atol=tol * scale * tb.shape[tb.time_axis],
                               rtol=tol)
