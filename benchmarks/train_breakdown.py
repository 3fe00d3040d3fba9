"""Where the ``dqn-cartpole`` loop's time goes: wall-clock totals of its main calls during one recipe run.

The calls are wrapped (``time.perf_counter`` around each) in-process; the run is the recipe itself with its
defaults except ``--total-steps`` (default 30 000: learning starts at 10 000, so 2/3 of the steps train).

    python benchmarks/train_breakdown.py 30000

Every figure is also given per environment step (the issue's unit: ``us/env step``). The wrappers cost time of
their own (two ``perf_counter`` calls and two counter updates per call, measured here on a no-op): it is taken off
each wrapped call, and off the caller for a nested one (``SyncVectorEnv.step`` inside ``VectorRollout.step``), so
that "rollout overhead" (``VectorRollout.step`` minus gymnasium's ``SyncVectorEnv.step``) and "rest" (the loop's
own Python, epsilon schedule, logging, ``loss.params =``) are not inflated by the measurement.
"""
import collections
import sys
import tempfile
import time

import gymnasium.vector

from arrayrl.nn import QValueActor
from arrayrl.objectives import DQNLoss, SoftUpdate
from arrayrl.optim import Adam
from arrayrl.recipes import get_recipe
from arrayrl.recipes.buffer import ReplayBuffer
from arrayrl.recipes.rollout import VectorRollout

T = collections.Counter()
N = collections.Counter()


def wrap(cls, name, label):
    f = getattr(cls, name)

    def g(*a, **k):
        t = time.perf_counter()
        r = f(*a, **k)
        T[label] += time.perf_counter() - t
        N[label] += 1
        return r

    setattr(cls, name, g)
    return f


def wrapper_cost(n=200_000):
    """Seconds a wrapper adds to one call (min over a few runs of a wrapped no-op minus the bare no-op)."""
    class Noop:
        def f(self):
            return None

    def best_of_5(call):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n):
                call()
            times.append(time.perf_counter() - t)
        return min(times)

    o = Noop()
    bare = best_of_5(o.f)
    wrap(Noop, "f", "noop")
    wrapped = best_of_5(o.f)  # (the bound method is looked up again: now the wrapper)
    del T["noop"], N["noop"]
    return max(wrapped - bare, 0.0) / n


GYM = "  of which SyncVectorEnv.step"
ROLL = "VectorRollout.step (incl. gym)"
CALLS = [(DQNLoss, "value_and_grad", "DQNLoss.value_and_grad"), (Adam, "update", "Adam.update"),
         (ReplayBuffer, "sample", "ReplayBuffer.sample"), (ReplayBuffer, "extend", "ReplayBuffer.extend"),
         (VectorRollout, "step", ROLL), (gymnasium.vector.SyncVectorEnv, "step", GYM),
         (QValueActor, "__call__", "QValueActor(batch) (acting)"), (SoftUpdate, "step", "SoftUpdate.step")]


def main(steps):
    w = wrapper_cost()
    for cls, name, label in CALLS:
        wrap(cls, name, label)
    r = get_recipe("dqn-cartpole")
    with tempfile.TemporaryDirectory() as out:
        s = r.train(r.Options(total_timesteps=steps, out=out, progress=False))
    # own time of each call: minus its own wrapper, and the outer call minus the nested call (with its wrapper)
    own = {k: T[k] - N[k] * w for k in T}
    own[ROLL] -= T[GYM]
    rest = s.wall_time - sum(T[k] for k in T if k != GYM) - sum(N[k] for k in T if k != GYM) * w
    print(f"total loop wall {s.wall_time:.2f} s, {s.steps_per_s:.0f} steps/s ({steps} env steps); wrapper cost "
          f"{w * 1e6:.2f} us/call, taken off")
    print(f"{'':42s} {'s':>7s} {'%':>6s} {'us/call':>9s} {'calls':>7s} {'us/env step':>12s}")
    for k, v in list(own.items()) + [("rest (loop Python, schedule, logging)", rest)]:
        label = "rollout overhead (VectorRollout - gym)" if k == ROLL else k
        n = N.get(k, steps)
        print(f"{label:42s} {v:7.2f} {100 * v / s.wall_time:5.1f}% {1e6 * v / max(n, 1):9.1f} {n:7d} "
              f"{1e6 * v / steps:12.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30000)
