"""PPO on CartPole-v1, CleanRL's ``ppo.py`` built from arrayrl (``arrayrl train ppo-cartpole``).

The hyper-parameters are CleanRL's defaults (``cleanrl/ppo.py``; published result on CartPole-v1: 490.04 +- 6.12).
The algorithm, in CleanRL's order, ``num_iterations = total_timesteps // (num_envs * num_steps)`` iterations:

1. learning rate ``lr * (1 - (iteration - 1) / num_iterations)`` (``anneal_lr``);
2. rollout: ``num_steps`` steps of the ``num_envs`` environments (SAME_STEP autoreset), actions drawn from the
   categorical actor (the same live parameters the loss trains), with their log-probability
   (``action_log_prob``), into a ``[num_envs, num_steps]`` TorchRL batch (time = the last batch axis);
3. advantages once per rollout with :class:`arrayrl.value.GAE` (``gamma``, ``gae_lambda``) on the critic: writes
   ``advantage``, ``value_target = A + V`` and ``state_value`` (``V_old``, the value at collection time, used by the
   value clipping). As CleanRL, a truncated episode end counts as terminal (``bootstrap_truncated=False``;
   ``True`` bootstraps it from the real final observation instead);
4. ``update_epochs`` epochs over a random permutation of the flattened batch, ``num_minibatches`` minibatches each:
   one Adam step (``eps = 1e-5``) on :class:`arrayrl.objectives.ClipPPOLoss` (clipped surrogate ``clip_coef``,
   advantages standardised per minibatch, entropy bonus ``ent_coef``, clipped value loss), gradients clipped to a
   global norm of ``max_grad_norm`` (:func:`arrayrl.optim.clip_grad_norm`) over actor and critic together;
   ``target_kl`` (default ``None``) stops the epochs early as CleanRL.

Loss scaling: CleanRL's ``loss = pg_loss - ent_coef H + vf_coef * 0.5 * mean(max(sq, sq_clipped))``; arrayrl's
``l2`` critic loss has no 1/2, so ``critic_coeff = 0.5 * vf_coef`` gives the same total.

Networks (CleanRL's ``Agent``): actor ``obs -> 64 -> 64 -> logits`` and critic ``obs -> 64 -> 64 -> 1``, tanh,
initialised as CleanRL's ``layer_init`` (:func:`arrayrl.nn.orthogonal_layers`): orthogonal weights
(``torch.nn.init.orthogonal_``'s distribution) with gain ``sqrt(2)`` for the hidden layers, ``0.01`` for the actor's
last layer and ``1.0`` for the critic's, zero biases (the critic is drawn first, as CleanRL builds it first).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

from .. import Generator
from .._backend import namespace_of
from ..distributions import Categorical
from ..nn import MLP, KeyedModule, ProbabilisticActor, ValueOperator, orthogonal_layers
from ..objectives import ClipPPOLoss
from ..optim import Adam, clip_grad_norm
from ..value import GAE
from .backends import run_on_backend
from .logging import Reference, RunLogger, Summary
from .rollout import VectorRollout, vector_env

NAME = "ppo-cartpole"
# CleanRL's published result for ppo.py on CartPole-v1 (mean +- std over seeds of the final episodic return)
REFERENCE = Reference(490.04, 6.12, "CleanRL ppo.py")


@dataclasses.dataclass
class Options:
    """CleanRL ``ppo.py`` defaults (``Args``), plus where to run and write."""

    env_id: str = "CartPole-v1"
    total_timesteps: int = 500_000
    learning_rate: float = 2.5e-4
    num_envs: int = 4
    num_steps: int = 128
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    adam_eps: float = 1e-5  # CleanRL: optim.Adam(..., eps=1e-5)
    hidden_sizes: tuple[int, ...] = (64, 64)  # CleanRL's Agent: 64 -> 64, tanh, actor and critic
    bootstrap_truncated: bool = False  # CleanRL: done = terminated | truncated ends the GAE recursion
    seed: int = 1
    backend: str = "numpy"  # numpy | torch | cupy
    device: str | None = None  # torch: "cpu" (default) / "cuda:0"; cupy: a GPU index
    out: str | None = None  # default runs/ppo-cartpole-seed<seed>
    progress: bool | None = None  # rich progress bar (default: iff stdout is a terminal)
    loss_log_frequency: int = 1  # record the last minibatch's loss every this many iterations
    threads: int | None = 1  # CPU threads of OpenBLAS / torch during the run (None: leave them)


def make_envs(opts: Options):
    """The recipe's vector env (:func:`~arrayrl.recipes.rollout.vector_env`); the action space must be discrete."""
    import gymnasium as gym

    envs = vector_env(opts.env_id, opts.num_envs)
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):
        envs.close()
        raise ValueError(f"{opts.env_id}: ppo-cartpole needs a discrete action space, got {envs.single_action_space}")
    return envs


def _stack_time(steps: list, xp: Any) -> dict:
    """A list of ``T`` step batches ``{key: [E, ...]}`` (nested) -> one batch ``{key: [E, T, ...]}``."""
    first = steps[0]
    out: dict = {}
    for k, v in first.items():
        out[k] = _stack_time([s[k] for s in steps], xp) if isinstance(v, dict) else \
            namespace_of(v).stack([s[k] for s in steps], axis=1)
    return out


def make_agent(opts: Options, n_obs: int, n_actions: int, xp: Any, device: Any = None) -> tuple[MLP, MLP]:
    """CleanRL's ``Agent``: ``(actor_net, critic_net)``, ``obs -> hidden... -> n_actions`` and ``-> 1``, tanh,
    float32, with CleanRL's ``layer_init`` (orthogonal; gain sqrt(2) hidden, 1.0 critic head, 0.01 actor head; zero
    biases), drawn from ``Generator(opts.seed)`` (critic first, as CleanRL builds it first)."""
    gen = Generator(opts.seed, xp=xp, device=device)
    nets = [MLP(in_features=n_obs, out_features=n_out, num_cells=list(opts.hidden_sizes), activation_class="tanh",
                generator=gen, xp=xp, dtype=xp.float32, device=device) for n_out in (n_actions, 1)]
    hidden_gains = [math.sqrt(2.0)] * len(opts.hidden_sizes)
    for net, head_gain in zip(nets[::-1], (1.0, 0.01)):  # critic, then actor
        net.params = orthogonal_layers(gen, net.params, hidden_gains + [head_gain])
    return nets[0], nets[1]


def train(opts: Options) -> Summary:
    """Run the recipe; returns the :class:`~arrayrl.recipes.logging.Summary` (also printed)."""
    return run_on_backend(opts, _train)


def _train(opts: Options, xp: Any, device: Any) -> Summary:
    out_dir = opts.out or os.path.join("runs", f"{NAME}-seed{opts.seed}")
    batch_size = opts.num_envs * opts.num_steps
    minibatch_size = batch_size // opts.num_minibatches
    num_iterations = opts.total_timesteps // batch_size

    envs = make_envs(opts)
    rollout = VectorRollout(envs, xp=xp, device=device)
    n_obs = envs.single_observation_space.shape[0]
    n_actions = int(envs.single_action_space.n)

    # categorical actor and state-value critic (CleanRL's Agent), clipped PPO loss, GAE, Adam
    actor_net, critic_net = make_agent(opts, n_obs, n_actions, xp, device)
    actor = ProbabilisticActor(KeyedModule(actor_net, in_keys=["observation"], out_keys=["logits"]),
                               in_keys=["logits"], distribution_class=Categorical, return_log_prob=True,
                               default_interaction_type="random")
    critic = ValueOperator(critic_net, in_keys=["observation"])
    loss = ClipPPOLoss(actor, critic, clip_epsilon=opts.clip_coef, clip_value=opts.clip_coef if opts.clip_vloss
                       else None, entropy_bonus=opts.ent_coef > 0, entropy_coeff=opts.ent_coef,
                       critic_coeff=0.5 * opts.vf_coef, loss_critic_type="l2", normalize_advantage=opts.norm_adv)
    gae = GAE(gamma=opts.gamma, lmbda=opts.gae_lambda, value_network=critic)
    optimizer = Adam(lr=opts.learning_rate, eps=opts.adam_eps)
    opt_state = optimizer.init(loss.params)

    act_gen = Generator(opts.seed + 1, xp=xp, device=device)
    shuffle_gen = Generator(opts.seed + 2, xp=xp, device=device)
    logger = RunLogger(out_dir, recipe=NAME, total_steps=num_iterations * batch_size, reference=REFERENCE,
                       progress=opts.progress)
    train_keys = ["observation", "action", "action_log_prob", "advantage", "value_target", "state_value"]

    rollout.reset(seed=opts.seed)
    global_step = 0
    for iteration in range(1, num_iterations + 1):
        if opts.anneal_lr:
            optimizer.lr = (1.0 - (iteration - 1.0) / num_iterations) * opts.learning_rate

        # rollout: num_steps steps of every env, with the current parameters
        steps = []
        for _ in range(opts.num_steps):
            policy_out = actor({"observation": rollout.observation}, generator=act_gen)
            step = rollout.step(policy_out["action"])
            for episodic_return, _ in step.episodes:
                logger.episode(global_step, episodic_return)
            global_step += opts.num_envs
            batch = step.batch  # (always all num_envs rows, with SAME_STEP autoreset)
            assert batch is not None, "SAME_STEP autoreset yields a transition for every environment"
            batch["action_log_prob"] = policy_out["action_log_prob"]
            if not opts.bootstrap_truncated:
                batch["next"]["terminated"] = batch["next"]["done"]
            steps.append(batch)
            logger.progress(global_step)
        data = gae(_stack_time(steps, xp))  # [E, T]: advantage, value_target, state_value (V_old)

        # flatten [E, T] -> [E * T] and optimise on shuffled minibatches
        flat = {k: xp.reshape(data[k], (batch_size, *data[k].shape[2:])) for k in train_keys}
        out = None
        for _epoch in range(opts.update_epochs):
            perm = shuffle_gen.permutation(batch_size)
            for start in range(0, batch_size, minibatch_size):
                idx = perm[start:start + minibatch_size]
                mb = {k: xp.take(v, idx, axis=0) for k, v in flat.items()}
                out, grads = loss.value_and_grad(mb)
                grads, _ = clip_grad_norm(grads, opts.max_grad_norm)
                loss.params, opt_state = optimizer.update(grads, opt_state, loss.params)
            if opts.target_kl is not None and out is not None and float(out["kl_approx"]) > opts.target_kl:
                break
        if out is not None and iteration % opts.loss_log_frequency == 0:
            logger.loss(out["loss_objective"] + out["loss_critic"] + out.get("loss_entropy", 0.0))

    envs.close()
    return logger.close(global_step)
