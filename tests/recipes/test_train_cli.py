"""The train command: smoke runs of dqn-cartpole (numpy and torch), outputs, option parsing, parser hook-up."""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

from arrayrl.recipes import cli, get_recipe  # noqa: E402
from arrayrl.recipes.logging import Reference, RunLogger, running_mean  # noqa: E402

SMOKE = ["--total-steps", "400", "--set", "learning_starts=100", "--set", "train_frequency=2",
         "--set", "loss_log_frequency=10", "--set", "target_network_frequency=50", "--no-progress"]


def _check_outputs(out_dir):
    with open(os.path.join(out_dir, "progress.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "wall_time", "episodic_return"]
    assert len(rows) > 5  # ~20-step episodes in 400 steps
    steps = [int(r[0]) for r in rows[1:]]
    assert steps == sorted(steps) and all(0 <= s < 400 for s in steps)
    assert all(float(r[2]) >= 1 for r in rows[1:])
    png = os.path.join(out_dir, "learning_curve.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) < 200_000


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_dqn_cartpole_smoke(backend, tmp_path):
    if backend == "torch":
        pytest.importorskip("torch")
    recipe = get_recipe("dqn-cartpole")
    opts = recipe.Options(**cli.parse_overrides(recipe.Options, [s for s in SMOKE[3::2] if "=" in s]),
                          total_timesteps=400, backend=backend, out=str(tmp_path), progress=False)
    summary = recipe.train(opts)
    # 150 gradient steps (101..399, every 2), a loss logged every 10 env steps from step 110
    assert len(summary.losses) == 29 and summary.losses_finite
    assert summary.steps == 400 and summary.episodes > 5 and math.isfinite(summary.final_mean_return)
    _check_outputs(str(tmp_path))


def test_python_m_recipes_plain_output(tmp_path):
    """`python -m arrayrl.recipes ...` with stdout a pipe: plain progress lines and the summary line."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "arrayrl.recipes", "dqn-cartpole", *SMOKE, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "\x1b[" not in proc.stdout  # no terminal control codes
    assert len(lines) == 11 and lines[0].startswith("dqn-cartpole: step 40/400")
    assert lines[-1].startswith("dqn-cartpole: 400 steps in ") and "last-100-episode mean return" in lines[-1]
    _check_outputs(str(out))


def test_import_needs_no_gymnasium_nor_matplotlib():
    code = "import sys, arrayrl, arrayrl.recipes; assert 'gymnasium' not in sys.modules and 'matplotlib' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_parser_hooks_into_a_parent_cli():
    parser = argparse.ArgumentParser(prog="arrayrl")
    cli.add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "dqn-cartpole", "--total-steps", "5", "--seed", "3", "--backend", "torch",
                              "--out", "d", "--set", "gamma=0.9"])
    assert args.func is cli.run_train
    assert (args.recipe, args.total_steps, args.seed, args.backend, args.out) == ("dqn-cartpole", 5, 3, "torch", "d")
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "no-such-recipe"])


def test_parse_overrides_types_and_errors(capsys):
    options = get_recipe("dqn-cartpole").Options
    got = cli.parse_overrides(options, ["learning_starts=5e2", "gamma=0.9", "hidden_sizes=64,32", "progress=false",
                                        "device=none", "env-id=CartPole-v0"])
    assert got == {"learning_starts": 500, "gamma": 0.9, "hidden_sizes": (64, 32), "progress": False, "device": None,
                   "env_id": "CartPole-v0"}
    with pytest.raises(ValueError, match="KEY one of"):
        cli.parse_overrides(options, ["no_such_option=1"])
    with pytest.raises(ValueError, match="boolean"):
        cli.parse_overrides(options, ["progress=maybe"])
    args = argparse.Namespace(recipe="dqn-cartpole", overrides=["bogus=1"])
    assert cli.run_train(args) == 2 and "bogus" in capsys.readouterr().err


def test_logger_plain_lines_and_running_mean(tmp_path):
    stream = io.StringIO()  # not a terminal: plain lines every 10% of the run
    log = RunLogger(str(tmp_path), recipe="r", total_steps=100, stream=stream)
    assert not log.rich
    for step in range(1, 101):
        if step % 25 == 0:
            log.episode(step, float(step))
        log.progress(step)
    log.loss(np.float32(0.5))
    summary = log.close(100)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[0].startswith("r: step 10/100")
    assert summary.episodes == 4 and summary.final_mean_return == pytest.approx(62.5) and summary.losses == [0.5]
    np.testing.assert_allclose(running_mean([1, 2, 3, 4], window=2), [1, 1.5, 2.5, 3.5])


def test_arrayrl_train_command(tmp_path, capsys):
    """``arrayrl train`` (the package's own CLI, not only ``python -m arrayrl.recipes``) runs a recipe end to end."""
    from arrayrl.cli import main

    assert main(["train", "dqn-cartpole", *SMOKE, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "progress.csv").read_text().splitlines()[0] == "step,wall_time,episodic_return"
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    assert "dqn-cartpole" in capsys.readouterr().out
    assert main(["train", "no-such-recipe"]) == 2


def test_logger_measures_over_the_reference_window(tmp_path):
    """A reference with ``window=2`` (Pendulum's recipes use 10) measures the run over its last 2 episodes: the
    summary value, the summary line and the progress lines (returns 10, 20, 30, 40 -> mean of 30 and 40 = 35)."""
    stream = io.StringIO()
    log = RunLogger(str(tmp_path), recipe="r", total_steps=40, stream=stream,
                    reference=Reference(-200.0, None, "target", window=2))
    for step in range(10, 41, 10):
        log.episode(step, float(step))
        log.progress(step)
    summary = log.close(40)
    assert summary.window == 2 and summary.final_mean_return == pytest.approx(35.0)
    assert "last-2-episode mean return 35.00" in stream.getvalue().splitlines()[-1]
    assert "return(last 2) 35.0" in stream.getvalue()


@pytest.mark.parametrize("name, window", [("dqn-cartpole", 100), ("ppo-cartpole", 100), ("sac-pendulum", 10),
                                          ("td3-pendulum", 10)])
def test_recipes_measure_over_their_reference_window(name, window):
    """CartPole runs are measured as CleanRL reports them (last 100 episodes); a 20k-step Pendulum run has only 100
    episodes of 200 steps, so it is measured on its last 10 (else the random warm-up episodes would count)."""
    import importlib

    module = importlib.import_module("arrayrl.recipes." + name.replace("-", "_"))
    assert module.REFERENCE.window == window
