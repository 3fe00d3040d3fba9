"""DQN on CartPole-v1, CleanRL's ``dqn.py`` built from arrayrl (``arrayrl train dqn-cartpole``).

The hyper-parameters are CleanRL's defaults (``cleanrl/dqn.py``; published result on CartPole-v1: 488.69 +- 16.11).
The algorithm, in CleanRL's order, one environment step per iteration ``global_step = 0 .. total_timesteps - 1``:

1. epsilon = linear schedule from ``start_e`` to ``end_e`` over ``exploration_fraction * total_timesteps`` steps;
   with probability epsilon all environments take random actions, otherwise the greedy actions of the Q-value
   actor (the same live parameters the loss trains);
2. step the vector env (SAME_STEP autoreset, so every step is a transition) and store the transition, with the real
   next observation and ``terminated`` (truncation bootstraps), in a uniform replay buffer;
3. after ``learning_starts`` steps, every ``train_frequency`` steps: one Adam step on :class:`arrayrl.objectives.DQNLoss`
   (``l2`` = mean squared TD error, as CleanRL's ``F.mse_loss``; TD(0) target from the target network);
4. after ``learning_starts`` steps, every ``target_network_frequency`` steps: ``target <- tau * online + (1 - tau) *
   target`` (:class:`~arrayrl.objectives.SoftUpdate`; ``tau = 1`` is CleanRL's hard copy).

Everything numeric (network, loss, target update, optimiser, buffer, sampling) runs on the chosen backend
(``numpy`` default, ``torch``, ``cupy``); only the environment and the exploration coin live on the host.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

from .. import Generator
from ..nn import MLP, QValueActor
from ..objectives import DQNLoss, SoftUpdate
from ..optim import Adam
from .backends import run_on_backend
from .buffer import ReplayBuffer
from .logging import Reference, RunLogger, Summary
from .rollout import VectorRollout, vector_env
from .schedules import EpsilonGreedy, LinearSchedule

NAME = "dqn-cartpole"
# CleanRL's published result for dqn.py on CartPole-v1 (mean +- std over seeds of the final episodic return)
REFERENCE = Reference(488.69, 16.11, "CleanRL dqn.py")


@dataclasses.dataclass
class Options:
    """CleanRL ``dqn.py`` defaults (``Args``), plus where to run and write."""

    env_id: str = "CartPole-v1"
    total_timesteps: int = 500_000
    learning_rate: float = 2.5e-4
    num_envs: int = 1
    buffer_size: int = 10_000
    gamma: float = 0.99
    tau: float = 1.0
    target_network_frequency: int = 500
    batch_size: int = 128
    start_e: float = 1.0
    end_e: float = 0.05
    exploration_fraction: float = 0.5
    learning_starts: int = 10_000
    train_frequency: int = 10
    hidden_sizes: tuple[int, ...] = (120, 84)  # CleanRL's QNetwork: obs -> 120 -> 84 -> actions, ReLU
    seed: int = 1
    backend: str = "numpy"  # numpy | torch | cupy
    device: str | None = None  # torch: "cpu" (default) / "cuda:0"; cupy: a GPU index
    out: str | None = None  # default runs/dqn-cartpole-seed<seed>
    progress: bool | None = None  # rich progress bar (default: iff stdout is a terminal)
    loss_log_frequency: int = 100  # record the loss when global_step % this == 0 (CleanRL: 100)
    threads: int | None = 1  # CPU threads of OpenBLAS / torch during the run (None: leave them)


def make_envs(opts: Options):
    """The recipe's vector env (:func:`~arrayrl.recipes.rollout.vector_env`); the action space must be discrete."""
    import gymnasium as gym

    envs = vector_env(opts.env_id, opts.num_envs)
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        raise ValueError(f"{opts.env_id}: DQN needs a discrete action space, got {envs.single_action_space}")
    return envs


def train(opts: Options) -> Summary:
    """Run the recipe; returns the :class:`~arrayrl.recipes.logging.Summary` (also printed)."""
    return run_on_backend(opts, _train)


def _train(opts: Options, xp: Any, device: Any) -> Summary:
    out_dir = opts.out or os.path.join("runs", f"{NAME}-seed{opts.seed}")

    # environments; the rollout yields TorchRL transition batches on the backend
    envs = make_envs(opts)
    rollout = VectorRollout(envs, xp=xp, device=device)
    n_obs = envs.single_observation_space.shape[0]
    n_actions = int(envs.single_action_space.n)

    # Q network, greedy actor, loss with a delayed target, optimiser
    qnet = MLP(in_features=n_obs, out_features=n_actions, num_cells=list(opts.hidden_sizes), activation_class="relu",
               generator=Generator(opts.seed, xp=xp, device=device), xp=xp, dtype=xp.float32, device=device)
    actor = QValueActor(qnet, in_keys=["observation"], action_space="categorical")
    loss = DQNLoss(actor, action_space="categorical", loss_function="l2", delay_value=True)
    loss.make_value_estimator("td0", gamma=opts.gamma)
    with warnings.catch_warnings():  # tau = 1 (eps = 0) is CleanRL's hard copy, not a mistake
        warnings.filterwarnings("ignore", message="Found an eps value")
        target_update = SoftUpdate(loss, tau=opts.tau)
    optimizer = Adam(lr=opts.learning_rate)
    opt_state = optimizer.init(loss.params)

    rb = ReplayBuffer(opts.buffer_size)
    sample_gen = Generator(opts.seed + 1, xp=xp, device=device)
    explore = EpsilonGreedy(n_actions, Generator(opts.seed + 2))  # host draws: the actions go to the env
    epsilon = LinearSchedule(opts.start_e, opts.end_e, opts.exploration_fraction * opts.total_timesteps)
    logger = RunLogger(out_dir, recipe=NAME, total_steps=opts.total_timesteps, reference=REFERENCE,
                       progress=opts.progress)

    def greedy():
        return actor({"observation": rollout.observation})["action"]

    rollout.reset(seed=opts.seed)
    for global_step in range(opts.total_timesteps):
        actions = explore(epsilon(global_step), greedy, opts.num_envs)
        step = rollout.step(actions)
        for episodic_return, _ in step.episodes:
            logger.episode(global_step, episodic_return)
        if step.batch is not None:  # (always, with SAME_STEP autoreset: every env step is a transition)
            rb.extend(step.batch)

        if global_step > opts.learning_starts:
            if global_step % opts.train_frequency == 0:
                out, grads = loss.value_and_grad(rb.sample(opts.batch_size, sample_gen))
                loss.params, opt_state = optimizer.update(grads, opt_state, loss.params)
                if global_step % opts.loss_log_frequency == 0:
                    logger.loss(out["loss"])
            if global_step % opts.target_network_frequency == 0:
                target_update.step()
        logger.progress(global_step + 1)

    envs.close()
    return logger.close(opts.total_timesteps)
