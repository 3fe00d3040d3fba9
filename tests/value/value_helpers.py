"""Shared tables of the value-estimator tests: each functional estimator, its reference oracle and its arguments."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, settings

from arrayrl.value import functional as F
from reference import value as R

SETTINGS = settings(
    deadline=None,
    suppress_health_check=list(settings.default.suppress_health_check) + [HealthCheck.function_scoped_fixture],
)
FEW = settings(SETTINGS, max_examples=min(8, settings.default.max_examples))

EPS32 = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class Case:
    """One functional estimator: ``ours(tb, mod)`` and ``ref(tb)`` return tuples of outputs; ``diff`` names the
    arrays of the TrajectoryBatch that the outputs are differentiable in (values and rewards)."""

    name: str
    ours: Callable[[Any, Any], tuple]
    ref: Callable[[Any], tuple]
    diff: tuple
    timed: bool = True


def _t(x):
    return x if isinstance(x, tuple) else (x,)


CASES = [
    Case("td0_return_estimate",
         lambda tb, m: _t(m.td0_return_estimate(tb.gamma, tb.next_state_value, tb.reward, tb.terminated)),
         lambda tb: _t(R.td0_return(tb.gamma, tb.next_state_value, tb.reward, tb.terminated)),
         ("next_state_value", "reward"), timed=False),
    Case("td0_advantage_estimate",
         lambda tb, m: _t(m.td0_advantage_estimate(tb.gamma, tb.state_value, tb.next_state_value, tb.reward, tb.done,
                                                   tb.terminated)),
         lambda tb: _t(R.td0_advantage(tb.gamma, tb.state_value, tb.next_state_value, tb.reward, tb.done,
                                       tb.terminated)),
         ("state_value", "next_state_value", "reward"), timed=False),
]
for _vec in ("", "vec_"):
    CASES += [
        Case(f"{_vec}td1_return_estimate",
             lambda tb, m, v=_vec: _t(getattr(m, f"{v}td1_return_estimate")(
                 tb.gamma, tb.next_state_value, tb.reward, tb.done, tb.terminated, time_dim=tb.time_dim)),
             lambda tb: _t(R.td1_return(tb.gamma, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                                        time_dim=tb.time_dim)),
             ("next_state_value", "reward")),
        Case(f"{_vec}td1_advantage_estimate",
             lambda tb, m, v=_vec: _t(getattr(m, f"{v}td1_advantage_estimate")(
                 tb.gamma, tb.state_value, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                 time_dim=tb.time_dim)),
             lambda tb: _t(R.td1_advantage(tb.gamma, tb.state_value, tb.next_state_value, tb.reward, tb.done,
                                           tb.terminated, time_dim=tb.time_dim)),
             ("state_value", "next_state_value", "reward")),
        Case(f"{_vec}td_lambda_return_estimate",
             lambda tb, m, v=_vec: _t(getattr(m, f"{v}td_lambda_return_estimate")(
                 tb.gamma, tb.lmbda, tb.next_state_value, tb.reward, tb.done, tb.terminated, time_dim=tb.time_dim)),
             lambda tb: _t(R.td_lambda_return(tb.gamma, tb.lmbda, tb.next_state_value, tb.reward, tb.done,
                                              tb.terminated, time_dim=tb.time_dim)),
             ("next_state_value", "reward")),
        Case(f"{_vec}td_lambda_advantage_estimate",
             lambda tb, m, v=_vec: _t(getattr(m, f"{v}td_lambda_advantage_estimate")(
                 tb.gamma, tb.lmbda, tb.state_value, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                 time_dim=tb.time_dim)),
             lambda tb: _t(R.td_lambda_advantage(tb.gamma, tb.lmbda, tb.state_value, tb.next_state_value, tb.reward,
                                                 tb.done, tb.terminated, time_dim=tb.time_dim)),
             ("state_value", "next_state_value", "reward")),
        Case(f"{_vec}generalized_advantage_estimate",
             lambda tb, m, v=_vec: _t(getattr(m, f"{v}generalized_advantage_estimate")(
                 tb.gamma, tb.lmbda, tb.state_value, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                 time_dim=tb.time_dim)),
             lambda tb: _t(R.gae(tb.gamma, tb.lmbda, tb.state_value, tb.next_state_value, tb.reward, tb.done,
                                 tb.terminated, time_dim=tb.time_dim)),
             ("state_value", "next_state_value", "reward")),
    ]
CASES += [
    Case("vtrace_advantage_estimate",
         lambda tb, m: _t(m.vtrace_advantage_estimate(tb.gamma, tb.log_pi, tb.log_mu, tb.state_value,
                                                      tb.next_state_value, tb.reward, tb.done, tb.terminated,
                                                      time_dim=tb.time_dim)),
         lambda tb: _t(R.vtrace(tb.gamma, tb.log_pi, tb.log_mu, tb.state_value, tb.next_state_value, tb.reward,
                                tb.done, tb.terminated, time_dim=tb.time_dim)),
         ("state_value", "next_state_value", "reward")),
    Case("reward2go",
         lambda tb, m: _t(m.reward2go(tb.reward, tb.done, tb.gamma, time_dim=tb.time_dim)),
         lambda tb: _t(R.reward2go(tb.reward, tb.done, tb.gamma, time_dim=tb.time_dim)),
         ("reward",)),
    Case("td1_return_estimate[rolling_gamma=False]",
         lambda tb, m: _t(m.td1_return_estimate(tb.gamma, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                                                rolling_gamma=False, time_dim=tb.time_dim)),
         lambda tb: _t(R.td1_return(tb.gamma, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                                    rolling_gamma=False, time_dim=tb.time_dim)),
         ("next_state_value", "reward")),
    Case("td_lambda_return_estimate[rolling_gamma=False]",
         lambda tb, m: _t(m.td_lambda_return_estimate(tb.gamma, tb.lmbda, tb.next_state_value, tb.reward, tb.done,
                                                      tb.terminated, rolling_gamma=False, time_dim=tb.time_dim)),
         lambda tb: _t(R.td_lambda_return(tb.gamma, tb.lmbda, tb.next_state_value, tb.reward, tb.done,
                                          tb.terminated, rolling_gamma=False, time_dim=tb.time_dim)),
         ("next_state_value", "reward")),
]
CASE_IDS = [c.name for c in CASES]
NON_ROLLING = {"td1_return_estimate[rolling_gamma=False]", "td_lambda_return_estimate[rolling_gamma=False]"}


def float32_tolerance(tb: Any, expected: tuple) -> float:
    """Absolute tolerance for float32 results: a few ulps times the time length times the largest magnitude
    met along the recursion (the sequential loop's worst-case rounding error has this order)."""
    T = tb.shape[tb.time_axis] if tb.shape else 1
    scale = max([1.0] + [float(np.max(np.abs(e))) for e in expected if np.size(e)]
                + [float(np.max(np.abs(a))) for a in (tb.state_value, tb.next_state_value, tb.reward)])
    return 8.0 * EPS32 * (T + 2) * scale
