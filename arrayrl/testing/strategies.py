"""Hypothesis strategies for RL trajectory data (public: other libraries' tests can use them).

The main strategy, :func:`trajectory_batches`, draws a :class:`TrajectoryBatch`: state values, next state values,
rewards, ``done``/``terminated``/``truncated`` flags, per-step or scalar ``gamma``/``lmbda``, and current/behaviour
log-probabilities, all of one shape with the time axis at ``time_dim``. Shapes, the time axis, the flag patterns
and the discounts are all drawn:

* any number of batch axes (``min_batch_dims``..``max_batch_dims``), a time axis of length
  ``min_time``..``max_time``, optional trailing feature axes (TorchRL's ``[*B, T, F]`` with ``F = 1`` by default);
* the time axis anywhere (``time_axis="any"``) or TorchRL's default ``-2`` (``time_axis="default"``) or a fixed
  int; ``batch.time_dim`` is the value to pass as ``time_dim=`` (negative or not, as drawn);
* ``done`` patterns per trajectory: none, every step, only the first step, only the last step, first and last,
  Bernoulli(p) with p drawn; ``terminated`` is a subset of ``done`` (drawn per step), ``truncated = done &
  ~terminated``; a trajectory can be all-terminated;
* ``gamma``/``lmbda``: Python floats in ``[0, 1]`` (0 and 1 included) or per-step arrays of the values' shape.

Arrays are NumPy float64/bool by default; pass ``xp`` (an array-API namespace), ``dtype`` and ``device`` to get
arrays of another library, or convert afterwards with :meth:`TrajectoryBatch.map`. Floating values are bounded
(``|x| <= value_bound``) and finite.

Example (a test of your own GAE against arrayrl's)::

    from hypothesis import given
    from arrayrl.testing.strategies import trajectory_batches
    from arrayrl.value.functional import generalized_advantage_estimate

    @given(trajectory_batches(max_time=32))
    def test_my_gae(tb):
        adv, _ = generalized_advantage_estimate(tb.gamma, tb.lmbda, tb.state_value, tb.next_state_value,
                                                tb.reward, tb.done, tb.terminated, time_dim=tb.time_dim)
        mine = my_gae(...)                      # same arrays
        np.testing.assert_allclose(mine, adv, rtol=1e-10, atol=1e-10)

Other strategies: :func:`done_flags` (``done``/``terminated`` for a given shape and time axis),
:func:`discounts` (a scalar or per-step discount).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = ["TrajectoryBatch", "trajectory_batches", "done_flags", "discounts", "DONE_PATTERNS"]

DONE_PATTERNS = ("random", "none", "all", "first", "last", "first_and_last")

_FLOAT_FIELDS = ("state_value", "next_state_value", "reward", "log_pi", "log_mu")
_BOOL_FIELDS = ("done", "terminated", "truncated")


@dataclasses.dataclass(frozen=True)
class TrajectoryBatch:
    """Arrays of one shape, time axis at ``time_dim``; ``gamma``/``lmbda`` are floats or arrays of that shape."""

    state_value: Any
    next_state_value: Any
    reward: Any
    done: Any
    terminated: Any
    truncated: Any
    log_pi: Any
    log_mu: Any
    gamma: Any
    lmbda: Any
    time_dim: int

    @property
    def shape(self) -> tuple:
        return tuple(self.reward.shape)

    @property
    def time_axis(self) -> int:
        """``time_dim`` as a non-negative axis."""
        return self.time_dim % len(self.shape)

    def map(self, fn: Callable[[Any], Any], *, floats_only: bool = False) -> "TrajectoryBatch":
        """Apply ``fn`` to every array (``gamma``/``lmbda`` too when they are arrays); bools too unless
        ``floats_only``."""
        changes = {}
        for f in _FLOAT_FIELDS + ("gamma", "lmbda"):
            v = getattr(self, f)
            if not isinstance(v, float):
                changes[f] = fn(v)
        if not floats_only:
            for f in _BOOL_FIELDS:
                changes[f] = fn(getattr(self, f))
        return dataclasses.replace(self, **changes)

    def as_batch(self, *, value_key: str = "state_value") -> dict:
        """A TorchRL-layout nested dict: ``{value_key, "next": {value_key, "reward", "done", "terminated",
        "truncated"}, "action_log_prob"}`` (log_mu as the behaviour log-probability)."""
        return {
            value_key: self.state_value,
            "action_log_prob": self.log_mu,
            "next": {
                value_key: self.next_state_value,
                "reward": self.reward,
                "done": self.done,
                "terminated": self.terminated,
                "truncated": self.truncated,
            },
        }


def _pattern_flags(pattern: str, T: int, rand: np.ndarray, p: float) -> np.ndarray:
    if pattern == "random":
        return rand < p
    out = np.zeros(T, dtype=bool)
    if pattern == "all":
        out[:] = True
    elif pattern == "first":
        out[0] = True
    elif pattern == "last":
        out[-1] = True
    elif pattern == "first_and_last":
        out[0] = out[-1] = True
    return out


@st.composite
def done_flags(draw, shape: tuple, time_axis: int, *, patterns: tuple = DONE_PATTERNS,
               terminated_fraction: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(done, terminated)`` NumPy bool arrays of ``shape``; each trajectory (index along the other axes) gets a
    pattern from ``patterns``; ``terminated`` is a random subset of ``done`` (fraction drawn in [0, 1] unless
    given)."""
    shape = tuple(shape)
    ax = time_axis % len(shape)
    T = shape[ax]
    moved = shape[:ax] + shape[ax + 1:] + (T,)
    n_traj = int(np.prod(moved[:-1], dtype=np.int64))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    p = draw(st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0]) | st.floats(0.0, 1.0))
    pats = draw(st.lists(st.sampled_from(patterns), min_size=n_traj, max_size=n_traj)) if n_traj else []
    done = np.zeros((n_traj, T), dtype=bool)
    for i, pat in enumerate(pats):
        done[i] = _pattern_flags(pat, T, rng.random(T), p)
    frac = draw(st.sampled_from([0.0, 0.5, 1.0]) | st.floats(0.0, 1.0)) if terminated_fraction is None \
        else terminated_fraction
    term = done & (rng.random(done.shape) < frac)
    done = np.moveaxis(done.reshape(moved), -1, ax)
    term = np.moveaxis(term.reshape(moved), -1, ax)
    return np.ascontiguousarray(done), np.ascontiguousarray(term)


@st.composite
def discounts(draw, shape: tuple, *, per_step: Any = None, low: float = 0.0, high: float = 1.0) -> Any:
    """A Python float in ``[low, high]`` (the bounds are likely) or, if ``per_step`` (drawn when ``None``), a float64
    array of ``shape`` with values in ``[low, high]``."""
    if per_step is None:
        per_step = draw(st.booleans())
    elems = st.sampled_from([low, high]) | st.floats(low, high)
    if not per_step:
        return float(draw(elems))
    return draw(hnp.arrays(np.float64, tuple(shape), elements=st.floats(low, high)))


@st.composite
def trajectory_batches(
    draw,
    xp: Any = None,
    dtype: Any = None,
    device: Any = None,
    *,
    min_batch_dims: int = 0,
    max_batch_dims: int = 2,
    max_batch_size: int = 3,
    min_time: int = 1,
    max_time: int = 16,
    feature_shape: Any = (1,),
    time_axis: Any = "any",
    per_step_gamma: Any = None,
    per_step_lmbda: Any = None,
    done_patterns: tuple = DONE_PATTERNS,
    value_bound: float = 10.0,
) -> TrajectoryBatch:
    """Draw a :class:`TrajectoryBatch` (see the module docstring).

    Args:
        xp, dtype, device: target namespace (default NumPy), floating dtype (default float64 or ``xp``'s
            ``float64``) and device of the arrays.
        min_batch_dims, max_batch_dims, max_batch_size: number and size of the batch axes.
        min_time, max_time: length of the time axis.
        feature_shape: trailing feature axes (a tuple), or ``None`` to draw ``()`` or ``(F,)`` with F in 1..3.
        time_axis: ``"any"`` (any axis, drawn as a negative or non-negative int), ``"default"`` (``-2``, TorchRL's
            layout; needs a feature axis, else ``-1``) or an int.
        per_step_gamma, per_step_lmbda: ``True``/``False`` to force array/scalar discounts; ``None`` draws it.
        done_patterns: the allowed per-trajectory ``done`` patterns (:data:`DONE_PATTERNS`).
        value_bound: bound of the values and rewards.
    """
    n_batch = draw(st.integers(min_batch_dims, max_batch_dims))
    batch = tuple(draw(st.lists(st.integers(1, max_batch_size), min_size=n_batch, max_size=n_batch)))
    T = draw(st.integers(min_time, max_time))
    if feature_shape is None:
        feature_shape = draw(st.sampled_from([(), (1,), (2,), (3,)]))
    feature_shape = tuple(feature_shape)
    layout = batch + (T,) + feature_shape  # TorchRL's [*B, T, *F]
    ndim = len(layout)
    default_ax = len(batch)
    def _moved(at: int) -> tuple:
        """The layout with the time axis moved to position ``at``."""
        dims = list(layout)
        del dims[default_ax]
        dims.insert(at, T)
        return tuple(dims)

    if time_axis == "any":
        ax = draw(st.integers(0, ndim - 1))
        shape = _moved(ax)
        time_dim = ax if draw(st.booleans()) else ax - ndim
    else:
        time_dim = (-2 if ndim >= 2 else -1) if time_axis == "default" else int(time_axis)
        shape = layout if time_axis == "default" else _moved(time_dim % ndim)
    ax = time_dim % ndim
    floats = st.floats(-value_bound, value_bound, width=64)
    arr = {f: draw(hnp.arrays(np.float64, shape, elements=floats)) for f in ("state_value", "next_state_value",
                                                                               "reward")}
    arr["log_mu"] = draw(hnp.arrays(np.float64, shape, elements=st.floats(-3.0, 0.0)))
    arr["log_pi"] = arr["log_mu"] + draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0]) |
                                                    st.floats(-1.5, 1.5)))
    done, terminated = draw(done_flags(shape, ax, patterns=done_patterns))
    gamma = draw(discounts(shape, per_step=per_step_gamma))
    lmbda = draw(discounts(shape, per_step=per_step_lmbda))
    tb = TrajectoryBatch(
        state_value=arr["state_value"],
        next_state_value=arr["next_state_value"],
        reward=arr["reward"],
        done=done,
        terminated=terminated,
        truncated=done & ~terminated,
        log_pi=arr["log_pi"],
        log_mu=arr["log_mu"],
        gamma=gamma,
        lmbda=lmbda,
        time_dim=time_dim,
    )
    if xp is None and dtype is None:
        return tb
    if xp is None:
        return tb.map(lambda a: a.astype(dtype) if a.dtype != bool else a)

    def convert(a: np.ndarray) -> Any:
        if a.dtype == bool:
            return xp.asarray(a, device=device) if device is not None else xp.asarray(a)
        dt = dtype if dtype is not None else xp.float64
        return xp.asarray(a, dtype=dt, device=device) if device is not None else xp.asarray(a, dtype=dt)

    return tb.map(convert)
