"""arrayrl.testing.strategies draws what it promises (and converts to other namespaces)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl.testing.strategies import DONE_PATTERNS, TrajectoryBatch, discounts, done_flags, trajectory_batches

from value_helpers import FEW, SETTINGS


@SETTINGS
@given(tb=trajectory_batches())
def test_invariants(tb):
    shape = tb.shape
    for f in ("state_value", "next_state_value", "reward", "log_pi", "log_mu", "done", "terminated", "truncated"):
        assert getattr(tb, f).shape == shape
    assert tb.done.dtype == bool and tb.state_value.dtype == np.float64
    assert not np.any(tb.terminated & ~tb.done)  # terminated implies done
    np.testing.assert_array_equal(tb.truncated, tb.done & ~tb.terminated)
    assert -len(shape) <= tb.time_dim < len(shape)
    for g in (tb.gamma, tb.lmbda):
        assert isinstance(g, float) and 0 <= g <= 1 or g.shape == shape and np.all((g >= 0) & (g <= 1))
    assert np.all(np.abs(tb.reward) <= 10)


def test_the_interesting_cases_are_reachable():
    """300 draws cover: done only at the first / only at the last step, the time axis first and not at -2, a
    negative time_dim, per-step gamma, gamma = 1 with lambda = 0, truncated and terminated together, 1-D inputs."""
    seen = set()

    def features(tb):
        d = np.moveaxis(tb.done, tb.time_axis, -1)
        T = d.shape[-1]
        if T > 2 and np.any(d[..., 0] & ~np.any(d[..., 1:], axis=-1)):
            yield "done only first"
        if T > 2 and np.any(d[..., -1] & ~np.any(d[..., :-1], axis=-1)):
            yield "done only last"
        if tb.time_axis == 0 and len(tb.shape) >= 3:
            yield "time first"
        if tb.time_dim < 0 and tb.time_axis != len(tb.shape) - 2:
            yield "negative time_dim elsewhere"
        if not isinstance(tb.gamma, float):
            yield "per-step gamma"
        if isinstance(tb.gamma, float) and isinstance(tb.lmbda, float) and tb.gamma == 1.0 and tb.lmbda == 0.0:
            yield "gamma 1 lambda 0"
        if np.any(tb.truncated) and np.any(tb.terminated):
            yield "truncated and terminated"
        if len(tb.shape) == 1:
            yield "1-D"

    @settings(max_examples=300, database=None, deadline=None)
    @given(trajectory_batches(feature_shape=None))
    def collect(tb):
        seen.update(features(tb))

    collect()
    assert seen == {"done only first", "done only last", "time first", "negative time_dim elsewhere",
                    "per-step gamma", "gamma 1 lambda 0", "truncated and terminated", "1-D"}


@FEW
@given(data=st.data())
def test_conversion_to_a_namespace(xp, data):
    tb = data.draw(trajectory_batches(xp=xp.ns, dtype=xp.float_dtype, device=xp.device), label="batch")
    assert tb.reward.dtype == xp.float_dtype
    np.testing.assert_array_equal(xp.to_numpy(tb.truncated), xp.to_numpy(tb.done) & ~xp.to_numpy(tb.terminated))


@FEW
@given(tb=trajectory_batches(dtype=np.float32, time_axis="default", feature_shape=(2,), min_batch_dims=1))
def test_options(tb):
    assert tb.reward.dtype == np.float32 and tb.shape[-1] == 2 and tb.time_dim == -2
    batch = tb.as_batch()
    assert batch["next"]["reward"] is tb.reward and batch["action_log_prob"] is tb.log_mu
    assert isinstance(tb.map(lambda a: a), TrajectoryBatch)


@FEW
@given(data=st.data())
def test_building_blocks(data):
    done, term = data.draw(done_flags((3, 5, 2), 1, patterns=("first",)))
    assert np.all(done[:, 0]) and not np.any(done[:, 1:])
    assert not np.any(term & ~done)
    g = data.draw(discounts((4,), per_step=True, low=0.5, high=0.9))
    assert g.shape == (4,) and np.all((g >= 0.5) & (g <= 0.9))
    assert set(DONE_PATTERNS) >= {"first", "last", "none", "all"}
