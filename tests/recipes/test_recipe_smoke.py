"""Smoke runs of ppo-cartpole, sac-pendulum and td3-pendulum (a few hundred steps each, small networks): the losses
are finite and the run writes its CSV and PNG. Plus the CleanRL defaults of their options."""

from __future__ import annotations

import csv
import math
import os

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("matplotlib")

from arrayrl.recipes import RECIPES, get_recipe  # noqa: E402

SMOKE = {
    # 2 iterations of 2 envs x 64 steps, 1 epoch of 2 minibatches: 4 gradient steps, 2 logged losses
    "ppo-cartpole": dict(total_timesteps=256, num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1),
    # 300 steps, training from step 201 (99 critic steps, 50 x 2 actor steps), a loss logged every 10 steps
    "sac-pendulum": dict(total_timesteps=300, learning_starts=200, batch_size=32, hidden_sizes=(32, 32),
                         loss_log_frequency=10),
    "td3-pendulum": dict(total_timesteps=300, learning_starts=200, batch_size=32, hidden_sizes=(32, 32),
                         loss_log_frequency=10),
}
LOGGED = {"ppo-cartpole": 2, "sac-pendulum": 9, "td3-pendulum": 9}


def _rows(out_dir):
    with open(os.path.join(out_dir, "progress.csv")) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "wall_time", "episodic_return"]
    png = os.path.join(out_dir, "learning_curve.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return rows[1:]


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_recipe_smoke(name, tmp_path):
    recipe = get_recipe(name)
    opts = recipe.Options(**SMOKE[name], out=str(tmp_path), progress=False)
    summary = recipe.train(opts)
    assert summary.steps == SMOKE[name]["total_timesteps"]
    assert len(summary.losses) == LOGGED[name] and summary.losses_finite
    rows = _rows(str(tmp_path))
    assert len(rows) == summary.episodes >= 1
    steps = [int(r[0]) for r in rows]
    assert steps == sorted(steps) and all(0 <= s < summary.steps for s in steps)
    assert all(math.isfinite(float(r[2])) for r in rows)
    if name == "ppo-cartpole":
        assert all(float(r[2]) >= 1 for r in rows)
    else:  # Pendulum: 200-step episodes, returns in [-16.3 * 200, 0]
        assert steps[0] == 199 and all(-3300 < float(r[2]) <= 0 for r in rows)


def test_registered_with_cleanrl_defaults():
    assert {"dqn-cartpole", "ppo-cartpole", "sac-pendulum", "td3-pendulum"} <= set(RECIPES)
    ppo = get_recipe("ppo-cartpole").Options()
    assert (ppo.num_envs, ppo.num_steps, ppo.update_epochs, ppo.num_minibatches, ppo.gamma, ppo.gae_lambda,
            ppo.clip_coef, ppo.learning_rate, ppo.anneal_lr, ppo.ent_coef, ppo.vf_coef, ppo.max_grad_norm,
            ppo.norm_adv, ppo.clip_vloss, ppo.hidden_sizes, ppo.total_timesteps) == \
        (4, 128, 4, 4, 0.99, 0.95, 0.2, 2.5e-4, True, 0.01, 0.5, 0.5, True, True, (64, 64), 500_000)
    sac = get_recipe("sac-pendulum").Options()
    assert (sac.buffer_size, sac.gamma, sac.tau, sac.batch_size, sac.learning_starts, sac.policy_lr, sac.q_lr,
            sac.policy_frequency, sac.target_network_frequency, sac.autotune, sac.hidden_sizes) == \
        (1_000_000, 0.99, 0.005, 256, 5_000, 3e-4, 1e-3, 2, 1, True, (256, 256))
    td3 = get_recipe("td3-pendulum").Options()
    assert (td3.learning_rate, td3.tau, td3.batch_size, td3.policy_noise, td3.exploration_noise,
            td3.learning_starts, td3.policy_frequency, td3.noise_clip, td3.hidden_sizes) == \
        (3e-4, 0.005, 256, 0.2, 0.1, 25_000, 2, 0.5, (256, 256))


def test_ppo_agent_has_cleanrl_orthogonal_init():
    """CleanRL's Agent: every weight orthogonal (W W^T or W^T W = gain^2 I) with gain sqrt(2) for the hidden layers,
    0.01 for the actor head and 1.0 for the critic head; zero biases; float32."""
    import numpy as np

    ppo = get_recipe("ppo-cartpole")
    actor_net, critic_net = ppo.make_agent(ppo.Options(), 4, 2, np)
    for net, head in ((actor_net, 0.01), (critic_net, 1.0)):
        layers = list(net.params.values())
        assert [tuple(p["weight"].shape) for p in layers] == [(64, 4), (64, 64), (net.out_features, 64)]
        for layer, gain in zip(layers, [math.sqrt(2), math.sqrt(2), head]):
            w = layer["weight"].astype(np.float64)
            assert layer["weight"].dtype == np.float32 and not layer["bias"].any()
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            np.testing.assert_allclose(gram, gain**2 * np.eye(min(w.shape)), atol=1e-5)
