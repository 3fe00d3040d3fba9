"""CleanRL's ``dqn.py`` loop built from TorchRL 0.14.1's own pieces: the TorchRL twin of ``arrayrl train dqn-cartpole``.

The same algorithm, hyper-parameters and environment layout as the recipe and as the plain-torch twin
(:func:`dqn_throughput.plain_torch`): one CartPole-v1 in a gymnasium ``SyncVectorEnv`` (SAME_STEP autoreset, the
real next observation stored), epsilon-greedy with CleanRL's linear schedule, a 10k-transition uniform replay
buffer, an Adam step every 10 env steps on a batch of 128 from ``learning_starts``, the target copied every 500.
What a TorchRL user writes instead of the hand-written parts:

* the Q network is a ``torchrl.modules.QValueActor`` over an ``MLP`` (4 -> 120 -> 84 -> 2, ReLU), called on a
  ``TensorDict`` to act;
* the loss is ``torchrl.objectives.DQNLoss(loss_function="l2", delay_value=True)`` with the TD(0) estimator
  (``make_value_estimator(ValueEstimators.TD0, gamma=0.99)``), the target update ``HardUpdate`` stepped every 500 env
  steps (``value_network_update_interval=1``: a copy per call);
* the buffer is ``ReplayBuffer(storage=LazyTensorStorage(10_000))`` with its default uniform ``RandomSampler``,
  extended with one ``TensorDict`` transition per step.

The environment is gymnasium's (not ``torchrl.envs.GymEnv``), so the three implementations step the very same
environment code; this measures TorchRL's modules, objectives and buffer in CleanRL's loop. Used by
``benchmarks/train_throughput.py --torchrl`` (impl ``torchrl``).
"""

from __future__ import annotations

import random
import time


def torchrl_dqn(steps: int, learning_starts: int, seed: int, threads: int) -> dict:
    """Run the loop for ``steps`` env steps; returns ``{"steps_per_s", "wall_time", "episodes"}``."""
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, ReplayBuffer
    from torchrl.modules import MLP, QValueActor
    from torchrl.objectives import DQNLoss, HardUpdate, ValueEstimators

    from arrayrl.recipes.dqn_cartpole import Options
    from dqn_throughput import linear_schedule, real_next, torch_setup, vector_env  # (benchmarks/: on sys.path)

    a = Options()
    np, torch = torch_setup(seed, threads)
    envs = vector_env(a.env_id, 1)
    envs.single_action_space.seed(seed)
    n_obs, n_act = envs.single_observation_space.shape[0], int(envs.single_action_space.n)

    qnet = MLP(in_features=n_obs, out_features=n_act, num_cells=list(a.hidden_sizes), activation_class=torch.nn.ReLU)
    actor = QValueActor(qnet, in_keys=["observation"], action_space="categorical")
    loss = DQNLoss(actor, loss_function="l2", delay_value=True, action_space="categorical")
    loss.make_value_estimator(ValueEstimators.TD0, gamma=a.gamma)
    target_update = HardUpdate(loss, value_network_update_interval=1)
    optimizer = torch.optim.Adam(loss.parameters(), lr=a.learning_rate)
    rb = ReplayBuffer(storage=LazyTensorStorage(a.buffer_size), batch_size=a.batch_size)

    episodes = 0
    obs, _ = envs.reset(seed=seed)
    t0 = time.perf_counter()
    for global_step in range(steps):
        epsilon = linear_schedule(a.start_e, a.end_e, a.exploration_fraction * steps, global_step)
        if random.random() < epsilon:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            with torch.no_grad():
                actions = actor(TensorDict({"observation": torch.from_numpy(obs)}, batch_size=[1]))["action"].numpy()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        done = terminations | truncations
        episodes += int(done.sum())
        next_real = real_next(next_obs, infos)
        rb.extend(TensorDict({
            "observation": torch.from_numpy(obs), "action": torch.from_numpy(actions),
            "next": {"observation": torch.from_numpy(next_real),
                     "reward": torch.from_numpy(rewards.astype(np.float32)).reshape(-1, 1),
                     "done": torch.from_numpy(done).reshape(-1, 1),
                     "terminated": torch.from_numpy(terminations).reshape(-1, 1)},
        }, batch_size=[1]))
        obs = next_obs
        if global_step > learning_starts:
            if global_step % a.train_frequency == 0:
                out = loss(rb.sample())
                optimizer.zero_grad()
                out["loss"].backward()
                optimizer.step()
            if global_step % a.target_network_frequency == 0:
                target_update.step()
    wall = time.perf_counter() - t0
    envs.close()
    return {"steps_per_s": steps / wall, "wall_time": wall, "episodes": episodes}


if __name__ == "__main__":
    import sys

    print(torchrl_dqn(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000, 1_000, 1, 1))
