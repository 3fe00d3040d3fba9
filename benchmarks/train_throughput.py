"""Whole-loop throughput of the ``arrayrl train`` recipes vs plain-torch CleanRL twins of the same recipes.

For each algorithm the two sides run the same algorithm with the same hyper-parameters (the recipe's ``Options``
defaults = CleanRL's ``Args``) and the same environment layout (gymnasium ``SyncVectorEnv``, SAME_STEP autoreset,
the real next observation into the buffer):

* ``dqn``: ``dqn-cartpole`` vs CleanRL ``dqn.py`` (the twin is :func:`dqn_throughput.plain_torch`);
* ``ppo``: ``ppo-cartpole`` vs CleanRL ``ppo.py`` (4 envs x 128 steps, 4 epochs x 4 minibatches, GAE, clipped
  surrogate and value loss, entropy bonus, global grad-norm clip 0.5, lr annealing, orthogonal ``layer_init``);
* ``sac``: ``sac-pendulum`` vs CleanRL ``sac_continuous_action.py`` (256x256 actor and twin critics, batch 256,
  autotuned alpha, delayed-but-compensated actor updates, Polyak targets);
* ``td3``: ``td3-pendulum`` vs CleanRL ``td3_continuous_action.py`` (256x256, batch 256, target policy smoothing,
  delayed actor and target updates).

The plain-torch twins are CleanRL's loops with ``torch.nn``/``torch.optim.Adam`` and a NumPy ring buffer sampled
with NumPy and converted with ``torch.from_numpy`` (what CleanRL's stable-baselines3 buffer does); with ``--torchrl``, DQN also runs a third
side, the same loop on TorchRL's own actor, ``DQNLoss``, ``HardUpdate`` and ``ReplayBuffer`` (:mod:`torchrl_dqn`); ``torch`` runs with
**1 thread** (``torch.set_num_threads``), as the recipes run with 1 OpenBLAS thread (``threads=1``). Each run is a
fresh subprocess, alternating between the two sides (and alternating which goes first); the figures are env steps/s
of the whole loop (environment, acting, buffer, training) over ``--steps`` steps, per wall-clock second and per CPU
second of the process (less sensitive to other jobs on a shared machine; it includes each side's small set-up). ``learning_starts`` is lowered (per
algorithm, below) so that most timed steps train.

    python benchmarks/train_throughput.py --algos dqn,ppo,sac,td3 --repeats 3 \\
        --csv benchmarks/results/train-throughput.csv
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from dqn_throughput import _load, append_csv, real_next, torch_setup, vector_env  # (the script's folder)


# algorithm -> (recipe, default steps, default learning_starts or None for on-policy)
ALGOS = {
    "dqn": ("dqn-cartpole", 10_000, 1_000),
    "ppo": ("ppo-cartpole", 8_192, None),  # 16 iterations of 4 x 128 steps: every iteration trains
    "sac": ("sac-pendulum", 2_000, 200),
    "td3": ("td3-pendulum", 2_000, 200),
}


# ------------------------------------------------------------------------------------------------ shared torch parts
class _Ring:
    """CleanRL's (stable-baselines3) replay buffer: NumPy ring arrays, uniform indices, ``torch.from_numpy``."""

    def __init__(self, np, torch, size: int, obs_dim: int, act_shape: tuple, act_dtype):
        self.np, self.torch, self.size, self.pos, self.full = np, torch, size, 0, False
        self.obs = np.zeros((size, obs_dim), np.float32)
        self.next_obs = np.zeros((size, obs_dim), np.float32)
        self.actions = np.zeros((size, *act_shape), act_dtype)
        self.rewards = np.zeros((size, 1), np.float32)
        self.dones = np.zeros((size, 1), np.float32)

    def add(self, obs, next_obs, actions, rewards, terminations) -> None:
        for i in range(obs.shape[0]):
            p = self.pos
            self.obs[p], self.next_obs[p], self.actions[p] = obs[i], next_obs[i], actions[i]
            self.rewards[p], self.dones[p] = rewards[i], terminations[i]
            self.pos = (p + 1) % self.size
            self.full = self.full or self.pos == 0

    def sample(self, n: int) -> tuple:
        idx = self.np.random.randint(0, self.size if self.full else self.pos, size=n)
        f = self.torch.from_numpy
        return f(self.obs[idx]), f(self.actions[idx]), f(self.next_obs[idx]), f(self.rewards[idx]), f(self.dones[idx])


# ------------------------------------------------------------------------------------------------ PPO
def plain_torch_ppo(steps: int, learning_starts: int | None, seed: int, threads: int) -> dict:
    """CleanRL ppo.py (defaults of ``ppo-cartpole``), torch CPU."""
    np, torch = torch_setup(seed, threads)
    import torch.nn as nn
    from torch.distributions.categorical import Categorical

    from arrayrl.recipes.ppo_cartpole import Options

    a = Options()
    envs = vector_env(a.env_id, a.num_envs)
    batch_size = a.num_envs * a.num_steps
    minibatch_size = batch_size // a.num_minibatches
    num_iterations = steps // batch_size
    n_obs, n_act = envs.single_observation_space.shape[0], int(envs.single_action_space.n)

    def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
        torch.nn.init.orthogonal_(layer.weight, std)
        torch.nn.init.constant_(layer.bias, bias_const)
        return layer

    class Agent(nn.Module):
        def __init__(self):
            super().__init__()
            self.critic = nn.Sequential(layer_init(nn.Linear(n_obs, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)),
                                        nn.Tanh(), layer_init(nn.Linear(64, 1), std=1.0))
            self.actor = nn.Sequential(layer_init(nn.Linear(n_obs, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)),
                                       nn.Tanh(), layer_init(nn.Linear(64, n_act), std=0.01))

        def get_value(self, x):
            return self.critic(x)

        def get_action_and_value(self, x, action=None):
            probs = Categorical(logits=self.actor(x))
            if action is None:
                action = probs.sample()
            return action, probs.log_prob(action), probs.entropy(), self.critic(x)

    agent = Agent()
    optimizer = torch.optim.Adam(agent.parameters(), lr=a.learning_rate, eps=1e-5)
    obs = torch.zeros((a.num_steps, a.num_envs, n_obs))
    actions = torch.zeros((a.num_steps, a.num_envs))
    logprobs = torch.zeros((a.num_steps, a.num_envs))
    rewards = torch.zeros((a.num_steps, a.num_envs))
    dones = torch.zeros((a.num_steps, a.num_envs))
    values = torch.zeros((a.num_steps, a.num_envs))

    episodes, global_step = 0, 0
    next_obs, _ = envs.reset(seed=seed)
    next_obs, next_done = torch.Tensor(next_obs), torch.zeros(a.num_envs)
    t0, c0 = time.perf_counter(), time.process_time()
    for iteration in range(1, num_iterations + 1):
        optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * a.learning_rate
        for step in range(a.num_steps):
            global_step += a.num_envs
            obs[step], dones[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step], logprobs[step] = action, logprob
            next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            next_done = np.logical_or(terminations, truncations)
            episodes += int(next_done.sum())
            rewards[step] = torch.tensor(reward).view(-1)
            next_obs, next_done = torch.Tensor(next_obs), torch.Tensor(next_done)
        with torch.no_grad():  # GAE
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards)
            lastgaelam = 0
            for t in reversed(range(a.num_steps)):
                if t == a.num_steps - 1:
                    nextnonterminal, nextvalues = 1.0 - next_done, next_value
                else:
                    nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
                delta = rewards[t] + a.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + a.gamma * a.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values
        b_obs, b_logprobs, b_actions = obs.reshape((-1, n_obs)), logprobs.reshape(-1), actions.reshape(-1)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        b_inds = np.arange(batch_size)
        clipfracs = []
        for _epoch in range(a.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                mb = b_inds[start:start + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb], b_actions.long()[mb])
                logratio = newlogprob - b_logprobs[mb]
                ratio = logratio.exp()
                with torch.no_grad():
                    clipfracs += [((ratio - 1.0).abs() > a.clip_coef).float().mean().item()]
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * torch.clamp(ratio, 1 - a.clip_coef, 1 + a.clip_coef)).mean()
                newvalue = newvalue.view(-1)
                v_unclipped = (newvalue - b_returns[mb]) ** 2
                v_clipped = b_values[mb] + torch.clamp(newvalue - b_values[mb], -a.clip_coef, a.clip_coef)
                v_loss = 0.5 * torch.max(v_unclipped, (v_clipped - b_returns[mb]) ** 2).mean()
                loss = pg_loss - a.ent_coef * entropy.mean() + v_loss * a.vf_coef
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), a.max_grad_norm)
                optimizer.step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    envs.close()
    return {"steps_per_s": global_step / wall, "wall_time": wall, "cpu_time": cpu, "episodes": episodes}


# ------------------------------------------------------------------------------------------------ SAC and TD3
def _qnetwork(nn, n_obs: int, n_act: int, hidden: tuple):
    import torch

    class QNetwork(nn.Module):  # CleanRL's SoftQNetwork / QNetwork
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(n_obs + n_act, hidden[0]), nn.Linear(hidden[0], hidden[1])
            self.fc3 = nn.Linear(hidden[1], 1)

        def forward(self, x, a):
            x = torch.cat([x, a], 1)
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    return QNetwork()


def _soft_update(net, target, tau: float) -> None:
    for p, tp in zip(net.parameters(), target.parameters()):
        tp.data.copy_(tau * p.data + (1 - tau) * tp.data)


def _off_policy_twin(name: str, steps: int, learning_starts: int, seed: int, threads: int) -> dict:
    """CleanRL sac_continuous_action.py (``name == "sac"``) or td3_continuous_action.py (``"td3"``), torch CPU."""
    np, torch = torch_setup(seed, threads)
    import torch.nn as nn
    import torch.nn.functional as F

    if name == "sac":
        from arrayrl.recipes.sac_pendulum import Options
    else:
        from arrayrl.recipes.td3_pendulum import Options
    a = Options()
    envs = vector_env(a.env_id, a.num_envs)
    envs.single_action_space.seed(seed)
    space = envs.single_action_space
    n_obs, n_act, hidden = envs.single_observation_space.shape[0], int(np.prod(space.shape)), a.hidden_sizes
    scale = torch.tensor((space.high - space.low) / 2.0, dtype=torch.float32)
    bias = torch.tensor((space.high + space.low) / 2.0, dtype=torch.float32)

    class SACActor(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(n_obs, hidden[0]), nn.Linear(hidden[0], hidden[1])
            self.fc_mean, self.fc_logstd = nn.Linear(hidden[1], n_act), nn.Linear(hidden[1], n_act)

        def get_action(self, x):
            x = F.relu(self.fc2(F.relu(self.fc1(x))))
            mean, log_std = self.fc_mean(x), torch.tanh(self.fc_logstd(x))
            log_std = a.log_std_min + 0.5 * (a.log_std_max - a.log_std_min) * (log_std + 1)
            normal = torch.distributions.Normal(mean, log_std.exp())
            x_t = normal.rsample()
            y_t = torch.tanh(x_t)
            log_prob = normal.log_prob(x_t) - torch.log(scale * (1 - y_t.pow(2)) + 1e-6)
            return y_t * scale + bias, log_prob.sum(1, keepdim=True)

    class TD3Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(n_obs, hidden[0]), nn.Linear(hidden[0], hidden[1])
            self.fc_mu = nn.Linear(hidden[1], n_act)

        def forward(self, x):
            return torch.tanh(self.fc_mu(F.relu(self.fc2(F.relu(self.fc1(x)))))) * scale + bias

    qf1, qf2 = _qnetwork(nn, n_obs, n_act, hidden), _qnetwork(nn, n_obs, n_act, hidden)
    qf1_target, qf2_target = _qnetwork(nn, n_obs, n_act, hidden), _qnetwork(nn, n_obs, n_act, hidden)
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    if name == "sac":
        actor = SACActor()
        q_optimizer = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=a.q_lr)
        actor_optimizer = torch.optim.Adam(list(actor.parameters()), lr=a.policy_lr)
        target_entropy = -float(n_act)
        log_alpha = torch.zeros(1, requires_grad=True)
        alpha = log_alpha.exp().item()
        a_optimizer = torch.optim.Adam([log_alpha], lr=a.q_lr)
    else:
        actor, target_actor = TD3Actor(), TD3Actor()
        target_actor.load_state_dict(actor.state_dict())
        q_optimizer = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=a.learning_rate)
        actor_optimizer = torch.optim.Adam(list(actor.parameters()), lr=a.learning_rate)
    rb = _Ring(np, torch, a.buffer_size, n_obs, (n_act,), np.float32)

    episodes = 0
    obs, _ = envs.reset(seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    for global_step in range(steps):
        if global_step < learning_starts:
            actions = np.array([space.sample() for _ in range(envs.num_envs)])
        elif name == "sac":
            actions, _ = actor.get_action(torch.Tensor(obs))
            actions = actions.detach().cpu().numpy()
        else:
            with torch.no_grad():
                actions = actor(torch.Tensor(obs))
                actions += torch.normal(0, scale * a.exploration_noise)
                actions = actions.cpu().numpy().clip(space.low, space.high)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        episodes += int(np.sum(terminations | truncations))
        rb.add(obs, real_next(next_obs, infos), actions, rewards, terminations)
        obs = next_obs
        if global_step <= learning_starts:
            continue
        d_obs, d_act, d_next, d_rew, d_done = rb.sample(a.batch_size)
        with torch.no_grad():
            if name == "sac":
                next_actions, next_log_pi = actor.get_action(d_next)
                min_next = torch.min(qf1_target(d_next, next_actions), qf2_target(d_next, next_actions)) \
                    - alpha * next_log_pi
            else:
                noise = (torch.randn_like(d_act) * a.policy_noise).clamp(-a.noise_clip, a.noise_clip) * scale
                next_actions = (target_actor(d_next) + noise).clamp(float(space.low[0]), float(space.high[0]))
                min_next = torch.min(qf1_target(d_next, next_actions), qf2_target(d_next, next_actions))
            next_q = d_rew.flatten() + (1 - d_done.flatten()) * a.gamma * min_next.view(-1)
        qf_loss = F.mse_loss(qf1(d_obs, d_act).view(-1), next_q) + F.mse_loss(qf2(d_obs, d_act).view(-1), next_q)
        q_optimizer.zero_grad()
        qf_loss.backward()
        q_optimizer.step()
        if global_step % a.policy_frequency == 0:
            if name == "sac":
                for _ in range(a.policy_frequency):  # compensate for the delay (CleanRL)
                    pi, log_pi = actor.get_action(d_obs)
                    actor_loss = (alpha * log_pi - torch.min(qf1(d_obs, pi), qf2(d_obs, pi))).mean()
                    actor_optimizer.zero_grad()
                    actor_loss.backward()
                    actor_optimizer.step()
                    with torch.no_grad():
                        _, log_pi = actor.get_action(d_obs)
                    alpha_loss = (-log_alpha.exp() * (log_pi + target_entropy)).mean()
                    a_optimizer.zero_grad()
                    alpha_loss.backward()
                    a_optimizer.step()
                    alpha = log_alpha.exp().item()
            else:
                actor_loss = -qf1(d_obs, actor(d_obs)).mean()
                actor_optimizer.zero_grad()
                actor_loss.backward()
                actor_optimizer.step()
                _soft_update(actor, target_actor, a.tau)
                _soft_update(qf1, qf1_target, a.tau)
                _soft_update(qf2, qf2_target, a.tau)
        if name == "sac" and global_step % a.target_network_frequency == 0:
            _soft_update(qf1, qf1_target, a.tau)
            _soft_update(qf2, qf2_target, a.tau)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    envs.close()
    return {"steps_per_s": steps / wall, "wall_time": wall, "cpu_time": cpu, "episodes": episodes}


# ------------------------------------------------------------------------------------------------ the two sides
def _with_cpu_time(run, *args) -> dict:
    """``run(*args)`` (a twin returning ``{"steps_per_s", "wall_time", "episodes"}``) plus the CPU seconds of the
    call (which include the twin's set-up: envs, networks)."""
    c0 = time.process_time()
    res = run(*args)
    return {**res, "cpu_time": time.process_time() - c0}


def plain_torch(algo: str, steps: int, learning_starts: int | None, seed: int, threads: int) -> dict:
    if algo == "dqn":
        import gymnasium  # noqa: F401 - imported before the CPU clock starts, as on the other paths
        import torch  # noqa: F401
        from dqn_throughput import plain_torch as dqn_twin

        return _with_cpu_time(dqn_twin, steps, learning_starts, seed, threads)
    if algo == "ppo":
        return plain_torch_ppo(steps, learning_starts, seed, threads)
    return _off_policy_twin(algo, steps, learning_starts, seed, threads)


def arrayrl_recipe(algo: str, steps: int, learning_starts: int | None, seed: int, threads: int) -> dict:
    from arrayrl.recipes import get_recipe

    from arrayrl.recipes import logging as run_logging

    recipe = get_recipe(ALGOS[algo][0])
    run_logging.plot_learning_curve = lambda *a, **k: None  # (the PNG is outside the timed loop; skip its CPU time)
    extra = {} if learning_starts is None else {"learning_starts": learning_starts}
    with tempfile.TemporaryDirectory() as out:
        c0 = time.process_time()  # (includes the recipe's small set-up: envs, networks)
        s = recipe.train(recipe.Options(total_timesteps=steps, seed=seed, backend="numpy", threads=threads, out=out,
                                        progress=False, **extra))
        cpu = time.process_time() - c0
    return {"steps_per_s": s.steps / s.wall_time, "wall_time": s.wall_time, "cpu_time": cpu, "episodes": s.episodes}


def torchrl_twin(algo: str, steps: int, learning_starts: int | None, seed: int, threads: int) -> dict:
    """The TorchRL twin (:mod:`torchrl_dqn`: TorchRL's actor, loss, estimator, target updater and buffer in
    CleanRL's loop); DQN only."""
    import gymnasium  # noqa: F401 - imported before the CPU clock starts, as on the other paths
    import torchrl.objectives  # noqa: F401
    from torchrl_dqn import torchrl_dqn

    if algo != "dqn":
        raise ValueError(f"--torchrl: only the dqn twin is built, got {algo}")
    return _with_cpu_time(torchrl_dqn, steps, learning_starts, seed, threads)


def _child(args: argparse.Namespace) -> None:
    fn = {"torch-cleanrl": plain_torch, "torchrl": torchrl_twin}.get(args.impl, arrayrl_recipe)
    ls = None if args.learning_starts is None or args.learning_starts < 0 else args.learning_starts
    print("RESULT " + json.dumps(fn(args.algo, args.steps, ls, args.seed, args.threads)), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algos", default="dqn,ppo,sac,td3")
    p.add_argument("--steps", type=int, default=None, help="env steps per run (default: per algorithm, ALGOS)")
    p.add_argument("--learning-starts", type=int, default=None, help="(off-policy; default: per algorithm)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="OpenBLAS / torch threads in every run")
    p.add_argument("--csv", default=None, help="append the runs to this CSV")
    p.add_argument("--baseline", default=None,
                   help="also run the arrayrl recipe importing arrayrl from this source tree (impl arrayrl-baseline: "
                        "a before/after comparison in the same rotation)")
    p.add_argument("--torchrl", action="store_true",
                   help="also run the TorchRL twin (benchmarks/torchrl_dqn.py; impl torchrl, dqn only)")
    p.add_argument("--impl", default=None, help=argparse.SUPPRESS)  # child process
    p.add_argument("--algo", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        return _child(args)
    impls = ["arrayrl-numpy", "torch-cleanrl"] + (["arrayrl-baseline"] if args.baseline else [])
    impls += ["torchrl"] if args.torchrl else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), os.environ.get("PYTHONPATH")]))}
    base_env = {**os.environ, "PYTHONPATH": os.path.abspath(args.baseline)} if args.baseline else None
    rows = []
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()},"
          f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    for algo in args.algos.split(","):
        _, steps, ls = ALGOS[algo]
        steps = args.steps or steps
        ls = ls if args.learning_starts is None or ls is None else args.learning_starts
        sides = [i for i in impls if i != "torchrl" or algo == "dqn"]  # (the TorchRL twin exists for DQN only)
        for rep in range(args.repeats):
            for impl in sides[rep % len(sides):] + sides[:rep % len(sides)]:  # rotate which goes first
                load = _load()
                cmd = [sys.executable, __file__, "--impl", impl, "--algo", algo, "--steps", str(steps),
                       "--learning-starts", str(-1 if ls is None else ls), "--seed", str(args.seed),
                       "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                     env=base_env if impl == "arrayrl-baseline" else env).stdout
                res = json.loads(out.split("RESULT ", 1)[1])
                rows.append({"algo": algo, "impl": impl, "repeat": rep, "steps": steps,
                             "learning_starts": "" if ls is None else ls, "load_before": load, **res})
                print(f"{algo} {impl:14s} repeat {rep}: {res['steps_per_s']:7.0f} steps/s ({res['wall_time']:.1f} s "
                      f"wall, {res['cpu_time']:.1f} s CPU), load {load}", flush=True)
        mine = [r for r in rows if r["algo"] == algo]
        med = {i: statistics.median(r["steps_per_s"] for r in mine if r["impl"] == i) for i in sides}
        cpu = {i: statistics.median(r["steps"] / r["cpu_time"] for r in mine if r["impl"] == i) for i in sides}
        print(f"{algo}: median arrayrl {med['arrayrl-numpy']:.0f}, torch {med['torch-cleanrl']:.0f} steps/s (wall), "
              f"ratio {med['arrayrl-numpy'] / med['torch-cleanrl']:.2f}x; per CPU second: arrayrl "
              f"{cpu['arrayrl-numpy']:.0f}, torch {cpu['torch-cleanrl']:.0f}, ratio "
              f"{cpu['arrayrl-numpy'] / cpu['torch-cleanrl']:.2f}x", flush=True)
        if "torchrl" in med:
            print(f"{algo}: TorchRL twin {med['torchrl']:.0f} steps/s (wall), {cpu['torchrl']:.0f} per CPU s; arrayrl / "
                  f"TorchRL {med['arrayrl-numpy'] / med['torchrl']:.2f}x wall, "
                  f"{cpu['arrayrl-numpy'] / cpu['torchrl']:.2f}x CPU", flush=True)
        if args.baseline:
            print(f"{algo}: baseline arrayrl {med['arrayrl-baseline']:.0f} steps/s (wall, ratio to torch "
                  f"{med['arrayrl-baseline'] / med['torch-cleanrl']:.2f}x), {cpu['arrayrl-baseline']:.0f} per CPU s "
                  f"(ratio {cpu['arrayrl-baseline'] / cpu['torch-cleanrl']:.2f}x); arrayrl / baseline "
                  f"{med['arrayrl-numpy'] / med['arrayrl-baseline']:.2f}x wall, "
                  f"{cpu['arrayrl-numpy'] / cpu['arrayrl-baseline']:.2f}x CPU", flush=True)
    if args.csv:
        append_csv(args.csv, rows)


if __name__ == "__main__":
    main()
