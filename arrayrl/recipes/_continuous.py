"""Pieces shared by the continuous-action off-policy recipes (``sac-pendulum``, ``td3-pendulum``).

CleanRL's ``sac_continuous_action.py`` and ``td3_continuous_action.py`` share their environment layout and their
loop; only the networks of the actor and the update differ. This module holds the shared part, once:

* :func:`make_envs`: ``num_envs`` copies of a ``Box``-action env, SAME_STEP autoreset (CleanRL's gym 0.29 layout:
  the real next observation goes into the buffer, truncation bootstraps);
* :func:`action_bounds`: the action space's ``low``/``high`` as float32 host arrays;
* :func:`qvalue_network`: CleanRL's ``SoftQNetwork`` / ``QNetwork``: ``concat(obs, action) -> 256 -> 256 -> 1``,
  ReLU, as a keyed :class:`~arrayrl.nn.ValueOperator` writing ``state_action_value``;
* :class:`UniformActions`: the random actions of the warm-up phase (``action_space.sample()`` in CleanRL);
* :func:`update_subtree`: one optimiser step on one entry of ``loss.params`` (CleanRL has one optimiser per
  network, each with its own learning rate);
* :func:`off_policy_loop`: CleanRL's loop, one environment step per iteration ``global_step = 0 ..
  total_timesteps - 1``: random actions before ``learning_starts``, the recipe's policy after; every transition
  into a uniform replay buffer; after ``learning_starts``, one call of the recipe's ``train(global_step, batch)``
  per step on a sampled batch.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from .. import Generator
from ..nn import MLP, ValueOperator
from .buffer import ReplayBuffer
from .logging import Reference, RunLogger, Summary
from .rollout import VectorRollout, vector_env

__all__ = ["make_envs", "action_bounds", "qvalue_network", "UniformActions", "update_subtree", "off_policy_loop"]


def make_envs(env_id: str, num_envs: int, algo: str):
    """The recipe's vector env (:func:`~arrayrl.recipes.rollout.vector_env`); the action space must be a bounded
    ``Box``."""
    import gymnasium as gym

    envs = vector_env(env_id, num_envs)
    space = envs.single_action_space
    if not isinstance(space, gym.spaces.Box) or not (np.all(np.isfinite(space.low))
                                                     and np.all(np.isfinite(space.high))):
        envs.close()
        raise ValueError(f"{env_id}: {algo} needs a bounded continuous (Box) action space, got {space}")
    return envs


def continuous_setup(opts: Any, name: str, algo: str, xp: Any, device: Any) -> tuple:
    """``(out_dir, envs, rollout, n_obs, low, high)``: the run's folder (``opts.out``, else
    ``runs/<name>-seed<seed>``), ``opts.num_envs`` environments with their :class:`VectorRollout`, the observation
    size and the action bounds."""
    out_dir = opts.out or os.path.join("runs", f"{name}-seed{opts.seed}")
    envs = make_envs(opts.env_id, opts.num_envs, algo)
    rollout = VectorRollout(envs, xp=xp, device=device)
    low, high = action_bounds(envs)
    return out_dir, envs, rollout, envs.single_observation_space.shape[0], low, high


def action_bounds(envs: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of the single action space, float32 ``[A]``."""
    space = envs.single_action_space
    return np.asarray(space.low, np.float32).reshape(-1), np.asarray(space.high, np.float32).reshape(-1)


def qvalue_network(n_obs: int, n_act: int, hidden_sizes: tuple, generator: Any, xp: Any, device: Any) -> ValueOperator:
    """``Q(s, a)``: ``MLP(concat(observation, action))``, ReLU hidden layers, writing ``state_action_value [*B, 1]``."""
    net = MLP(in_features=n_obs + n_act, out_features=1, num_cells=list(hidden_sizes), activation_class="relu",
              generator=generator, xp=xp, dtype=xp.float32, device=device)
    return ValueOperator(net, in_keys=["observation", "action"])


class UniformActions:
    """Uniform random actions in ``[low, high]`` (host float32 ``[num_envs, A]``), drawn ``block`` steps at a time
    from an :class:`arrayrl.random.Generator` (NumPy): the warm-up actions go to the environment."""

    def __init__(self, low: np.ndarray, high: np.ndarray, generator: Any, block: int = 1024):
        self.low, self.high = low, high
        self.generator = generator
        self.block = int(block)
        self._draws: Any = None
        self._i = self.block

    def __call__(self, num_envs: int) -> np.ndarray:
        if self._i >= self.block or self._draws.shape[1] != num_envs:
            u = self.generator.uniform((self.block, num_envs, self.low.size))
            self._draws = (self.low + (self.high - self.low) * u).astype(np.float32)
            self._i = 0
        out = self._draws[self._i]
        self._i += 1
        return out


def update_subtree(loss: Any, key: str, optimizer: Any, state: dict, grads: dict) -> dict:
    """``loss.params[key] <- optimizer step`` with ``grads[key]`` (the other entries unchanged); the new state."""
    params = dict(loss.params)
    params[key], state = optimizer.update(grads[key], state, params[key])
    loss.params = params
    return state


def off_policy_loop(opts: Any, *, name: str, reference: Reference, envs: Any, rollout: VectorRollout,
                    low: np.ndarray, high: np.ndarray, act: Callable[[], Any],
                    train: Callable[[int, dict], dict | None], out_dir: str, xp: Any, device: Any) -> Summary:
    """CleanRL's off-policy loop (module docstring).

    Args:
        opts: the recipe's options (``total_timesteps``, ``learning_starts``, ``buffer_size``, ``batch_size``,
            ``num_envs``, ``seed``, ``progress``, ``loss_log_frequency``).
        act: ``() -> actions [num_envs, A]`` from the current observation ``rollout.observation`` (the policy with
            the live parameters, exploration included).
        train: ``(global_step, batch) -> outputs`` (the loss outputs of that step, floats or scalars; their sum is
            logged every ``loss_log_frequency`` steps).
    """
    rb = ReplayBuffer(opts.buffer_size)
    sample_gen = Generator(opts.seed + 1, xp=xp, device=device)
    warmup = UniformActions(low, high, Generator(opts.seed + 2))  # host draws: the actions go to the env
    logger = RunLogger(out_dir, recipe=name, total_steps=opts.total_timesteps, reference=reference,
                       progress=opts.progress)

    rollout.reset(seed=opts.seed)
    for global_step in range(opts.total_timesteps):
        actions = warmup(opts.num_envs) if global_step < opts.learning_starts else act()
        step = rollout.step(actions)
        for episodic_return, _ in step.episodes:
            logger.episode(global_step, episodic_return)
        if step.batch is not None:  # (always, with SAME_STEP autoreset)
            rb.extend(step.batch)

        if global_step > opts.learning_starts:
            out = train(global_step, rb.sample(opts.batch_size, sample_gen))
            if out and global_step % opts.loss_log_frequency == 0:
                logger.loss(sum(float(v) for v in out.values()))
        logger.progress(global_step + 1)

    envs.close()
    return logger.close(opts.total_timesteps)
