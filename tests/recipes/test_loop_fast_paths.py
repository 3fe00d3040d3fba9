"""The recipes' fast paths change nothing observable: dqn-cartpole with its defaults (a ``copy=False`` vector env,
the rollout copying the observations) logs exactly the returns and losses of the plain loop (gymnasium's
``copy=True`` env, which deep-copies them itself), the golden here.

The buffer is small (80) so that it is full and wraps many times in 400 steps.
"""

from __future__ import annotations

import csv
import os

import pytest

gym = pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

from arrayrl.recipes import dqn_cartpole  # noqa: E402

OPTS = dict(total_timesteps=400, buffer_size=80, learning_starts=100, train_frequency=2, batch_size=16,
            loss_log_frequency=2, target_network_frequency=50, hidden_sizes=(16, 16), progress=False)


def _run(out_dir):
    summary = dqn_cartpole.train(dqn_cartpole.Options(**OPTS, out=str(out_dir)))
    with open(os.path.join(str(out_dir), "progress.csv")) as f:
        rows = [(r[0], r[2]) for r in csv.reader(f)][1:]  # step, return (not the wall time)
    return rows, summary.losses


def test_dqn_fast_paths_log_the_same_run(tmp_path, monkeypatch):
    fast_rows, fast_losses = _run(tmp_path / "fast")

    def plain_envs(opts):
        return gym.vector.SyncVectorEnv([lambda: gym.make(opts.env_id) for _ in range(opts.num_envs)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, copy=True)

    monkeypatch.setattr(dqn_cartpole, "make_envs", plain_envs)
    plain_rows, plain_losses = _run(tmp_path / "plain")
    assert len(plain_losses) == 149 and len(plain_rows) > 10  # a loss every trained step: 102, 104, .., 398
    assert fast_rows == plain_rows
    assert [float(x) for x in fast_losses] == [float(x) for x in plain_losses]
