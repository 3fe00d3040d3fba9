"""Where the ``dqn-cartpole`` loop's time goes: wall-clock totals of its main calls during one recipe run.

The calls are wrapped (``time.perf_counter`` around each) in-process; the run is the recipe itself with its
defaults except ``--total-steps`` (default 30 000: learning starts at 10 000, so 2/3 of the steps train).

    python benchmarks/train_breakdown.py 30000
"""
import sys, time, tempfile, collections
from arrayrl.objectives import DQNLoss
from arrayrl.optim import Adam
from arrayrl.recipes import get_recipe
from arrayrl.recipes.buffer import ReplayBuffer
from arrayrl.recipes.rollout import VectorRollout
from arrayrl.nn import QValueActor
from arrayrl.objectives import SoftUpdate
import gymnasium.vector
T = collections.Counter(); N = collections.Counter()
def wrap(cls, name, label):
    f = getattr(cls, name)
    def g(*a, **k):
        t = time.perf_counter(); r = f(*a, **k); T[label] += time.perf_counter() - t; N[label] += 1; return r
    setattr(cls, name, g)
wrap(DQNLoss, "value_and_grad", "DQNLoss.value_and_grad")
wrap(Adam, "update", "Adam.update")
wrap(ReplayBuffer, "sample", "ReplayBuffer.sample")
wrap(ReplayBuffer, "extend", "ReplayBuffer.extend")
wrap(VectorRollout, "step", "VectorRollout.step (incl. gym)")
wrap(gymnasium.vector.SyncVectorEnv, "step", "  of which SyncVectorEnv.step")
wrap(QValueActor, "__call__", "QValueActor(batch) (acting)")
wrap(SoftUpdate, "step", "SoftUpdate.step")
steps = int(sys.argv[1]) if len(sys.argv) > 1 else 30000
r = get_recipe("dqn-cartpole")
with tempfile.TemporaryDirectory() as out:
    s = r.train(r.Options(total_timesteps=steps, out=out, progress=False))
print(f"total loop wall {s.wall_time:.2f} s, {s.steps_per_s:.0f} steps/s")
acc = 0
for k, v in T.items():
    if not k.startswith("  "): acc += v
    print(f"{k:34s} {v:7.2f} s {100 * v / s.wall_time:5.1f}%  {1e6 * v / max(N[k], 1):8.1f} us/call  x{N[k]}")
print(f"{'rest (loop Python, loss.params=, logging)':34s} {s.wall_time - acc:7.2f} s {100 * (s.wall_time - acc) / s.wall_time:5.1f}%")
