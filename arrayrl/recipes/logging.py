"""Run logging for the recipes: CSV of episode returns, progress display, learning-curve PNG, summary line.

:class:`RunLogger` writes into ``out_dir``:

* ``progress.csv``: one row per finished episode, ``step,wall_time,episodic_return`` (line-buffered, so a run that
  is stopped keeps what it logged);
* ``learning_curve.png`` (at :meth:`RunLogger.close`): the returns, their running mean over the reference's
  ``window`` episodes (100, CleanRL's metric; 10 for the 200-step Pendulum episodes of a 20k-step run), and the
  reference result (CleanRL's published final return, or the issue's target) as a dashed line;

and prints progress: a rich progress bar (steps/s, last episode return, loss) when stdout is a terminal, otherwise a
plain line every 10% of the run, flushed at once (CI logs, pipes). :meth:`RunLogger.close` prints one summary line
and returns a :class:`Summary`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

__all__ = ["RunLogger", "Summary", "Reference", "plot_learning_curve", "running_mean"]

CSV_HEADER = ("step", "wall_time", "episodic_return")


@dataclasses.dataclass(frozen=True)
class Reference:
    """A published result to compare with, e.g. CleanRL's ``dqn.py`` on CartPole-v1: 488.69 +- 16.11, and how a run
    is measured against it: the mean return of its last ``window`` episodes."""

    value: float
    std: float | None = None
    label: str = "reference"
    window: int = 100


@dataclasses.dataclass
class Summary:
    """The outcome of a run (also the final line printed)."""

    recipe: str
    steps: int
    wall_time: float
    steps_per_s: float
    episodes: int
    final_mean_return: float  # mean return of the last `window` episodes (fewer if fewer ended; nan if none)
    losses: list  # the logged loss values, in order
    out_dir: str
    window: int = 100

    @property
    def losses_finite(self) -> bool:
        return all(math.isfinite(v) for v in self.losses)

    def line(self) -> str:
        return (f"{self.recipe}: {self.steps} steps in {self.wall_time:.1f} s ({self.steps_per_s:.0f} steps/s), "
                f"last-{self.window}-episode mean return {self.final_mean_return:.2f} ({self.episodes} episodes) -> "
                f"{self.out_dir}")


def running_mean(values: Sequence[float], window: int = 100) -> np.ndarray:
    """The mean of the last ``window`` values (fewer at the start) at every index."""
    v = np.asarray(values, np.float64)
    c = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_learning_curve(steps: Sequence[int], returns: Sequence[float], path: str, *, title: str = "",
                        reference: Reference | None = None, window: int = 100) -> None:
    """Write a small PNG of episode returns against environment steps (matplotlib's Agg canvas, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.6), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(returns):
        ax.plot(steps, returns, color="tab:blue", alpha=0.25, linewidth=0.6, label="episodic return")
        ax.plot(steps, running_mean(returns, window), color="tab:blue", linewidth=1.6, label=f"mean of last {window}")
    if reference is not None:
        label = reference.label if reference.std is None else f"{reference.label} ({reference.value:g} ± {reference.std:g})"
        ax.axhline(reference.value, color="black", linestyle="--", linewidth=1.0, label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


class RunLogger:
    """Logs one training run (see the module docstring).

    Args:
        out_dir: created if missing.
        recipe: the recipe's name (summary line, plot title).
        total_steps: the run's length (progress bar, plain-line period).
        reference: drawn on the learning curve.
        progress: ``True`` (rich bar), ``False`` (plain lines) or ``None`` (rich bar iff stdout is a terminal).
        stream: where progress lines and the summary go (default ``sys.stdout``).

    The training loop calls :meth:`episode` when an episode ends, :meth:`loss` when it logs a loss, and
    :meth:`progress` as often as it likes (a single comparison until the next update is due).
    """

    def __init__(self, out_dir: str, *, recipe: str, total_steps: int, reference: Reference | None = None,
                 progress: bool | None = None, stream: Any = None):
        self.out_dir = out_dir
        self.recipe = recipe
        self.total_steps = int(total_steps)
        self.reference = reference
        self.window = reference.window if reference is not None else 100
        self.stream = sys.stdout if stream is None else stream
        self.rich = (self.stream.isatty() if hasattr(self.stream, "isatty") else False) if progress is None else progress
        os.makedirs(out_dir, exist_ok=True)
        self.csv_path = os.path.join(out_dir, "progress.csv")
        self.png_path = os.path.join(out_dir, "learning_curve.png")
        self._file = open(self.csv_path, "w", newline="", buffering=1)
        self._csv = csv.writer(self._file)
        self._csv.writerow(CSV_HEADER)
        self.steps: list[int] = []
        self.returns: list[float] = []
        self.losses: list[float] = []
        self._start = time.perf_counter()
        # rich: redraw every ~0.5% of the run; plain lines: every 10%
        self._every = max(1, self.total_steps // (200 if self.rich else 10))
        self._next = self._every
        self._bar: Any = None
        if self.rich:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn(f"[bold]{recipe}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self._task = self._bar.add_task(recipe, total=self.total_steps, info="")
            self._bar.start()

    @property
    def wall_time(self) -> float:
        return time.perf_counter() - self._start

    def episode(self, step: int, episodic_return: float) -> None:
        """Record a finished episode (one CSV row)."""
        self.steps.append(int(step))
        self.returns.append(float(episodic_return))
        self._csv.writerow((int(step), f"{self.wall_time:.3f}", f"{float(episodic_return):.6g}"))

    def loss(self, value: Any) -> None:
        self.losses.append(float(value))

    def _status(self, step: int) -> str:
        sps = step / max(self.wall_time, 1e-9)
        ret = f"{np.mean(self.returns[-self.window:]):.1f}" if self.returns else "-"
        loss = f"{self.losses[-1]:.4g}" if self.losses else "-"
        return f"{sps:.0f} steps/s, return(last {self.window}) {ret}, loss {loss}"

    def progress(self, step: int) -> None:
        """Update the display if due (``step`` = environment steps done)."""
        if step < self._next:
            return
        self._next = step + self._every
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=self._status(step))
        else:
            print(f"{self.recipe}: step {step}/{self.total_steps}, {self._status(step)}", file=self.stream, flush=True)

    def close(self, steps: int) -> Summary:
        """Finish: close the CSV, write the PNG, print and return the summary."""
        wall = self.wall_time
        if self._bar is not None:
            self._bar.update(self._task, completed=steps, info=self._status(steps))
            self._bar.stop()
        self._file.close()
        title = f"{self.recipe}: {steps} steps"
        plot_learning_curve(self.steps, self.returns, self.png_path, title=title, reference=self.reference,
                            window=self.window)
        last = float(np.mean(self.returns[-self.window:])) if self.returns else float("nan")
        summary = Summary(self.recipe, int(steps), wall, steps / max(wall, 1e-9), len(self.returns), last,
                          list(self.losses), self.out_dir, self.window)
        print(summary.line(), file=self.stream, flush=True)
        return summary
