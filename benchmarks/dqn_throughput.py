"""Throughput of the whole DQN training loop: arrayrl's ``dqn-cartpole`` recipe vs a plain-torch CleanRL ``dqn.py``.

Both run the same algorithm with the same hyper-parameters and the same environment layout (gymnasium
``SyncVectorEnv``, SAME_STEP autoreset, CartPole-v1): epsilon-greedy acting with the online network, a 10k
uniform replay buffer, an Adam step on the mean squared TD error every ``train_frequency`` steps, a hard target copy
every ``target_network_frequency`` steps. The plain-torch side is CleanRL's loop with ``torch.nn`` and
``torch.optim.Adam``, and a NumPy ring buffer sampled with NumPy and converted with ``torch.from_numpy`` (what
CleanRL's stable-baselines3 buffer does). Each run is a fresh subprocess, alternating between the two (so neither
inherits the other's thread pools or warm caches), ``--repeats`` times each; the reported figure is the env steps/s
of the whole loop (environment, acting, buffer, training) over ``--steps`` steps.

    python benchmarks/dqn_throughput.py --steps 20000 --learning-starts 2000 --repeats 3 \\
        --csv benchmarks/results/dqn_throughput.csv

The defaults start learning early (``--learning-starts 2000``) so that 90% of the timed steps train, as in the full
500k run (98%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time


# ------------------------------------------------------------------------------------- the twins' shared parts
def torch_setup(seed: int, threads: int):
    """torch on ``threads`` threads; Python, NumPy and torch seeded with ``seed``; returns ``(numpy, torch)``."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np, torch


def vector_env(env_id: str, num_envs: int):
    """CleanRL's layout: ``num_envs`` copies of ``env_id`` in a SyncVectorEnv with SAME_STEP autoreset."""
    import gymnasium as gym

    return gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def real_next(next_obs, infos):
    """The real next observations: ``next_obs`` with each ended episode's final observation put back."""
    real = next_obs.copy()
    if "final_obs" in infos:
        for i in infos["_final_obs"].nonzero()[0]:
            real[i] = infos["final_obs"][i]
    return real


def linear_schedule(start: float, end: float, duration: float, t: int) -> float:
    """CleanRL's epsilon schedule: linear from ``start`` to ``end`` over ``duration`` steps, then ``end``."""
    return max((end - start) / duration * t + start, end)


def plain_torch(steps: int, learning_starts: int, seed: int, threads: int) -> dict:
    """CleanRL dqn.py (same defaults), torch CPU; returns {"steps_per_s", "wall_time", "episodes"}."""
    import torch.nn as nn
    import torch.nn.functional as F

    np, torch = torch_setup(seed, threads)
    lr, buffer_size, gamma, tau, target_freq, batch_size = 2.5e-4, 10_000, 0.99, 1.0, 500, 128
    start_e, end_e, exploration_fraction, train_frequency = 1.0, 0.05, 0.5, 10
    envs = vector_env("CartPole-v1", 1)
    envs.single_action_space.seed(seed)

    def qnetwork():
        return nn.Sequential(nn.Linear(4, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 2))

    q_network, target_network = qnetwork(), qnetwork()
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=lr)
    # the replay buffer: numpy ring arrays, uniform indices, torch.from_numpy at sampling (SB3's ReplayBuffer)
    obs_b = np.zeros((buffer_size, 4), np.float32)
    next_obs_b = np.zeros((buffer_size, 4), np.float32)
    act_b = np.zeros((buffer_size, 1), np.int64)
    rew_b = np.zeros((buffer_size, 1), np.float32)
    done_b = np.zeros((buffer_size, 1), np.float32)
    pos, full = 0, False

    episodes = 0
    obs, _ = envs.reset(seed=seed)
    t0 = time.perf_counter()
    for global_step in range(steps):
        epsilon = linear_schedule(start_e, end_e, exploration_fraction * steps, global_step)
        actions: np.ndarray
        if random.random() < epsilon:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            q_values = q_network(torch.Tensor(obs))
            actions = torch.argmax(q_values, dim=1).cpu().numpy()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        episodes += int(np.sum(terminations | truncations))
        real_next_obs = real_next(next_obs, infos)
        obs_b[pos], next_obs_b[pos], act_b[pos], rew_b[pos], done_b[pos] = (
            obs[0], real_next_obs[0], actions[0], rewards[0], terminations[0])
        pos = (pos + 1) % buffer_size
        full = full or pos == 0
        obs = next_obs
        if global_step > learning_starts:
            if global_step % train_frequency == 0:
                idx = np.random.randint(0, buffer_size if full else pos, size=batch_size)
                d_obs, d_next = torch.from_numpy(obs_b[idx]), torch.from_numpy(next_obs_b[idx])
                d_act, d_rew, d_done = torch.from_numpy(act_b[idx]), torch.from_numpy(rew_b[idx]), torch.from_numpy(done_b[idx])
                with torch.no_grad():
                    target_max, _ = target_network(d_next).max(dim=1)
                    td_target = d_rew.flatten() + gamma * target_max * (1 - d_done.flatten())
                old_val = q_network(d_obs).gather(1, d_act).squeeze()
                loss = F.mse_loss(td_target, old_val)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if global_step % target_freq == 0:
                for tp, qp in zip(target_network.parameters(), q_network.parameters()):
                    tp.data.copy_(tau * qp.data + (1.0 - tau) * tp.data)
    wall = time.perf_counter() - t0
    envs.close()
    return {"steps_per_s": steps / wall, "wall_time": wall, "episodes": episodes}


def arrayrl_recipe(steps: int, learning_starts: int, seed: int, threads: int, backend: str) -> dict:
    from arrayrl.recipes import get_recipe

    recipe = get_recipe("dqn-cartpole")
    with tempfile.TemporaryDirectory() as out:
        s = recipe.train(recipe.Options(total_timesteps=steps, learning_starts=learning_starts, seed=seed,
                                        backend=backend, threads=threads, out=out, progress=False))
    return {"steps_per_s": s.steps_per_s, "wall_time": s.wall_time, "episodes": s.episodes}


def append_csv(path: str, rows: list) -> None:
    """Append ``rows`` (dicts with the same keys) to the CSV at ``path``, writing the header if the file is new."""
    import csv

    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)


def _child(args: argparse.Namespace) -> None:
    if args.impl == "torch-cleanrl":
        res = plain_torch(args.steps, args.learning_starts, args.seed, args.threads)
    else:
        res = arrayrl_recipe(args.steps, args.learning_starts, args.seed, args.threads, args.impl.split("-", 1)[1])
    print("RESULT " + json.dumps(res), flush=True)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--learning-starts", type=int, default=2_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="OpenBLAS / torch threads in every run")
    p.add_argument("--impls", default="arrayrl-numpy,torch-cleanrl", help="comma list: arrayrl-numpy, arrayrl-torch, "
                   "torch-cleanrl")
    p.add_argument("--csv", default=None, help="append the runs to this CSV")
    p.add_argument("--impl", default=None, help=argparse.SUPPRESS)  # child process
    args = p.parse_args()
    if args.impl:
        return _child(args)
    impls = args.impls.split(",")
    rows = []
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
          flush=True)
    for rep in range(args.repeats):
        for impl in impls if rep % 2 == 0 else impls[::-1]:  # alternate the order too
            load = _load()
            cmd = [sys.executable, __file__, "--impl", impl, "--steps", str(args.steps), "--learning-starts",
                   str(args.learning_starts), "--seed", str(args.seed), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            res = json.loads(out.split("RESULT ", 1)[1])
            rows.append({"impl": impl, "repeat": rep, "steps": args.steps, "load_before": load, **res})
            print(f"{impl:15s} repeat {rep}: {res['steps_per_s']:7.0f} steps/s ({res['wall_time']:.1f} s), load {load}",
                  flush=True)
    med = {i: statistics.median(r["steps_per_s"] for r in rows if r["impl"] == i) for i in impls}
    for i in impls:
        print(f"median {i:15s} {med[i]:7.0f} steps/s")
    if "torch-cleanrl" in med:
        for i in impls:
            if i != "torch-cleanrl":
                print(f"ratio {i} / torch-cleanrl: {med[i] / med['torch-cleanrl']:.2f}x")
    if args.csv:
        append_csv(args.csv, rows)


if __name__ == "__main__":
    main()
