"""Linear schedule (CleanRL's formula, hand-computed values) and epsilon-greedy exploration."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import Generator
from arrayrl.recipes import EpsilonGreedy, LinearSchedule, linear_schedule


def test_linear_schedule_goldens():
    # CleanRL dqn.py: start_e 1, end_e 0.05, duration 0.5 * 500_000
    eps = LinearSchedule(1.0, 0.05, 250_000)
    assert eps(0) == 1.0
    assert eps(125_000) == pytest.approx(0.525)  # halfway: (1 + 0.05) / 2
    assert eps(250_000) == pytest.approx(0.05)
    assert eps(400_000) == 0.05  # clamped at the end value
    assert eps(1) == pytest.approx(1.0 - 0.95 / 250_000)
    assert linear_schedule(0.0, 1.0, 10, 5) == 0.5  # increasing: min(., end)
    assert linear_schedule(0.0, 1.0, 10, 20) == 1.0
    assert linear_schedule(1.0, 0.1, 0, 3) == 0.1  # zero duration: the end value at once


def test_epsilon_greedy_extremes_and_rate():
    calls = []

    def greedy():
        calls.append(1)
        return np.array([7])  # not a valid random action: tells greedy from random

    ex = EpsilonGreedy(3, Generator(0), block=64)
    assert all(ex(0.0, greedy, 1)[0] == 7 for _ in range(200)) and len(calls) == 200
    calls.clear()
    rand = np.concatenate([ex(1.0, greedy, 1) for _ in range(300)])
    assert not calls  # eps = 1: the greedy actions are never computed
    assert set(rand.tolist()) == {0, 1, 2}
    n = 20_000
    picks = np.concatenate([ex(0.3, greedy, 1) for _ in range(n)])
    rate = np.mean(picks != 7)
    assert abs(rate - 0.3) < 0.02  # binomial std 0.0032
    # one coin for the whole batch (CleanRL): rows are all greedy or all random
    batch = [ex(0.5, lambda: np.full(4, 7), 4) for _ in range(200)]
    assert all((b == 7).all() or (b != 7).all() for b in batch)


def test_epsilon_greedy_is_seeded_and_per_env_on_torch():
    ex1, ex2 = EpsilonGreedy(2, Generator(5), block=16), EpsilonGreedy(2, Generator(5), block=16)
    s1 = [int(ex1(0.5, lambda: np.array([9]), 1)[0]) for _ in range(100)]
    s2 = [int(ex2(0.5, lambda: np.array([9]), 1)[0]) for _ in range(100)]
    assert s1 == s2 and len(set(s1)) == 3  # 0, 1 (random) and 9 (greedy)
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xp

    ex = EpsilonGreedy(2, Generator(0, xp=xp), per_env=True)
    out = torch.stack([ex(0.5, lambda: torch.full((64,), 9), 64) for _ in range(20)])
    assert isinstance(out, torch.Tensor) and out.dtype == torch.int64
    mixed = (out == 9).float().mean(dim=1)  # per row coins: each batch mixes greedy and random rows
    assert ((mixed > 0) & (mixed < 1)).all() and abs(float((out == 9).float().mean()) - 0.5) < 0.1
