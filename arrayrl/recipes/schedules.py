"""Schedules and exploration for the recipes.

* :func:`linear_schedule` / :class:`LinearSchedule`: CleanRL's ``linear_schedule(start_e, end_e, duration, t)``,
  ``max(start + (end - start) / duration * t, end)`` for a decreasing schedule (``min`` for an increasing one).
* :class:`EpsilonGreedy`: epsilon-greedy action selection on any backend, drawing from an
  :class:`arrayrl.random.Generator` (never from global state).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .._backend import namespace_of

__all__ = ["linear_schedule", "LinearSchedule", "EpsilonGreedy"]


def linear_schedule(start: float, end: float, duration: float, t: float) -> float:
    """The value at step ``t`` of a line from ``start`` (``t = 0``) to ``end`` (``t = duration``), then ``end``.

    Exactly CleanRL's formula (``slope = (end - start) / duration; max(slope * t + start, end)``), extended to
    increasing schedules with ``min``.
    """
    if duration <= 0:
        return end
    value = (end - start) / duration * t + start
    return max(value, end) if end <= start else min(value, end)


@dataclasses.dataclass(frozen=True)
class LinearSchedule:
    """:func:`linear_schedule` as a callable of the step: ``LinearSchedule(1.0, 0.05, 250_000)(t)``."""

    start: float
    end: float
    duration: float

    def __call__(self, t: float) -> float:
        return linear_schedule(self.start, self.end, self.duration, t)


class EpsilonGreedy:
    """Epsilon-greedy actions over ``num_actions`` discrete actions.

    Args:
        num_actions: the actions are the integers ``0 .. num_actions - 1``.
        generator: an :class:`arrayrl.random.Generator`; the random actions are arrays of its namespace and device.
        per_env: ``False`` (CleanRL's ``dqn.py``): one coin for the whole batch, so the greedy actions are not even
            computed when it says explore. ``True``: one coin per batch row, random and greedy actions mixed with
            ``where`` (the greedy actions are always computed).
        block: coins and random actions are drawn ``block`` steps at a time (two generator calls per block instead
            of two per step); the streams do not depend on when ``greedy`` is called, so the seed and ``block``
            fix them.

    ``explorer(epsilon, greedy, batch_size)`` returns ``[batch_size]`` integer actions; ``greedy()`` computes the greedy
    actions (``[batch_size]`` integers), and is called only when needed.
    """

    def __init__(self, num_actions: int, generator: Any, *, per_env: bool = False, block: int = 4096):
        self.num_actions = int(num_actions)
        self.generator = generator
        self.per_env = bool(per_env)
        self.block = int(block)
        self._coins: list = []  # host floats (per_env=False)
        self._random: Any = None  # [block, batch_size] random actions
        self._i = self.block

    def _refill(self, batch_size: int) -> None:
        gen = self.generator
        shape = (self.block,) if not self.per_env else (self.block, batch_size)
        coins = gen.uniform(shape)
        self._coins = coins.tolist() if not self.per_env else coins
        self._random = gen.integers(0, self.num_actions, (self.block, batch_size))
        self._i = 0

    def __call__(self, epsilon: float, greedy: Callable[[], Any], batch_size: int) -> Any:
        if self._i >= self.block or self._random.shape[1] != batch_size:
            self._refill(batch_size)
        i = self._i
        self._i = i + 1
        if not self.per_env:
            return self._random[i] if self._coins[i] < epsilon else greedy()
        greedy_actions = greedy()
        random_actions = self._random[i]
        xp = namespace_of(greedy_actions)
        return xp.where(self._coins[i] < epsilon, xp.astype(random_actions, greedy_actions.dtype), greedy_actions)
