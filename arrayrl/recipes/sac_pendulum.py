"""SAC on Pendulum-v1, CleanRL's ``sac_continuous_action.py`` built from arrayrl (``arrayrl train sac-pendulum``).

The hyper-parameters are CleanRL's defaults (``cleanrl/sac_continuous_action.py``, ``Args``). CleanRL publishes no
Pendulum-v1 figure for this script; the reference line is the issue's target, a return of -200 within 20k steps
(``arrayrl train sac-pendulum --total-steps 20000``). The algorithm, in CleanRL's order, one environment step per
iteration ``global_step = 0 .. total_timesteps - 1`` (the loop is :func:`~arrayrl.recipes._continuous.off_policy_loop`):

1. before ``learning_starts``: uniform random actions; after: ``a ~ pi(.|s)``, a draw of the tanh-Gaussian actor
   (the same live parameters the loss trains);
2. step the vector env (SAME_STEP autoreset) and store the transition, with the real next observation and
   ``terminated`` (truncation bootstraps), in a uniform replay buffer;
3. after ``learning_starts``, every step, on one sampled batch: one Adam step (``q_lr``) of both critics on
   ``loss_qvalue`` of :class:`arrayrl.objectives.SACLoss` (v2: ``y = r + gamma (1 - terminated) (min_i Q'_i(s', a')
   - alpha log pi(a'|s'))``, ``l2`` = mean squared error, summed over the two critics as CleanRL's ``qf1_loss +
   qf2_loss``);
4. every ``policy_frequency`` steps, ``policy_frequency`` times (CleanRL's delayed but compensated update), with the
   updated critics: one Adam step (``policy_lr``) of the actor on ``loss_actor`` (``alpha log pi(a~|s) - min_i
   Q_i(s, a~)``) and, with ``autotune``, one Adam step (``q_lr``, as CleanRL) of ``log alpha`` on ``loss_alpha``
   (target entropy ``-dim(A)``);
5. every ``target_network_frequency`` steps: ``Q'_i <- tau Q_i + (1 - tau) Q'_i``
   (:class:`~arrayrl.objectives.SoftUpdate`).

Networks (CleanRL's): actor ``obs -> 256 -> 256 -> (mean, log_std)`` (ReLU), ``log_std`` squashed to
``[log_std_min, log_std_max] = [-5, 2]`` by ``tanh`` (``scale_mapping="cleanrl"``; any
:class:`~arrayrl.nn.NormalParamExtractor` mapping name instead, e.g. ``"biased_softplus_1.0"``, TorchRL's), action
``tanh(u)`` rescaled to the action bounds (:class:`~arrayrl.distributions.TanhNormal`); two critics
``concat(obs, a) -> 256 -> 256 -> 1``.

Differences from CleanRL, both inside the library's loss (TorchRL's choices): the temperature loss is
``-log(alpha) (log pi + H_target)`` (CleanRL: ``-alpha (log pi + H_target)``, the same sign of the gradient), and
``loss_actor`` and ``loss_alpha`` of one update come from one draw of ``a~`` (CleanRL draws again for the alpha loss,
after the actor step).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import Generator
from .._backend import namespace_of
from ..distributions import TanhNormal
from ..nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor, Sequential
from ..objectives import SACLoss, SoftUpdate
from ..optim import Adam
from ._continuous import continuous_setup, off_policy_loop, qvalue_network, update_subtree
from .backends import run_on_backend
from .logging import Reference, Summary

NAME = "sac-pendulum"
# CleanRL publishes no Pendulum-v1 result for sac_continuous_action.py: the target is the reference line
# 200-step episodes: a 20k-step run has 100, so it is measured on its last 10
REFERENCE = Reference(-200.0, None, "target (-200 within 20k steps)", window=10)


@dataclasses.dataclass
class Options:
    """CleanRL ``sac_continuous_action.py`` defaults (``Args``), plus where to run and write."""

    env_id: str = "Pendulum-v1"
    total_timesteps: int = 1_000_000  # CleanRL's default; the target is measured at 20 000
    num_envs: int = 1
    buffer_size: int = 1_000_000
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    learning_starts: int = 5_000
    policy_lr: float = 3e-4
    q_lr: float = 1e-3
    policy_frequency: int = 2
    target_network_frequency: int = 1
    alpha: float = 0.2  # the temperature when autotune is off
    autotune: bool = True
    hidden_sizes: tuple[int, ...] = (256, 256)  # CleanRL's actor and SoftQNetwork: 256 -> 256, ReLU
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    scale_mapping: str = "cleanrl"  # "cleanrl" (tanh-squashed log_std) or a NormalParamExtractor mapping name
    seed: int = 1
    backend: str = "numpy"  # numpy | torch | cupy
    device: str | None = None  # torch: "cpu" (default) / "cuda:0"; cupy: a GPU index
    out: str | None = None  # default runs/sac-pendulum-seed<seed>
    progress: bool | None = None  # rich progress bar (default: iff stdout is a terminal)
    loss_log_frequency: int = 100  # record the losses when global_step % this == 0 (CleanRL: 100)
    threads: int | None = 1  # CPU threads of OpenBLAS / torch during the run (None: leave them)


def make_actor(opts: Options, n_obs: int, low: Any, high: Any, generator: Any, xp: Any, device: Any):
    """CleanRL's ``Actor``: ``obs -> 256 -> 256 -> (mean, log_std)``, a :class:`TanhNormal` over ``[low, high]``."""
    n_act = int(low.shape[0])
    net = MLP(in_features=n_obs, out_features=2 * n_act, num_cells=list(opts.hidden_sizes), activation_class="relu",
              generator=generator, xp=xp, dtype=xp.float32, device=device)
    if opts.scale_mapping == "cleanrl":
        lo, hi = float(opts.log_std_min), float(opts.log_std_max)

        def loc_scale(x):  # CleanRL: log_std = min + (max - min) (tanh(x) + 1) / 2; std = exp(log_std)
            xq = namespace_of(x)  # (the tape's namespace inside a gradient call)
            half = x.shape[-1] // 2
            return x[..., :half], xq.exp(lo + 0.5 * (hi - lo) * (xq.tanh(x[..., half:]) + 1.0))

        head = KeyedModule(loc_scale, in_keys=["param"], out_keys=["loc", "scale"])
    else:
        head = KeyedModule(NormalParamExtractor(opts.scale_mapping), in_keys=["param"], out_keys=["loc", "scale"])
    module = Sequential(KeyedModule(net, in_keys=["observation"], out_keys=["param"]), head)
    bounds = {"low": xp.asarray(low, device=device), "high": xp.asarray(high, device=device)}
    return ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=TanhNormal,
                              distribution_kwargs=bounds, default_interaction_type="random")


def train(opts: Options) -> Summary:
    """Run the recipe; returns the :class:`~arrayrl.recipes.logging.Summary` (also printed)."""
    return run_on_backend(opts, _train)


def _train(opts: Options, xp: Any, device: Any) -> Summary:
    out_dir, envs, rollout, n_obs, low, high = continuous_setup(opts, NAME, "SAC", xp, device)
    n_act = int(low.shape[0])

    # actor, two critics, SAC v2 loss with target critics, one optimiser per network (CleanRL's)
    gen = Generator(opts.seed, xp=xp, device=device)
    actor = make_actor(opts, n_obs, low, high, gen, xp, device)
    critics = [qvalue_network(n_obs, n_act, opts.hidden_sizes, gen, xp, device) for _ in range(2)]
    loss = SACLoss(actor, critics, num_qvalue_nets=2, loss_function="l2", alpha_init=opts.alpha if not opts.autotune
                   else 1.0, fixed_alpha=not opts.autotune, target_entropy=-float(n_act), delay_qvalue=True,
                   generator=Generator(opts.seed + 3, xp=xp, device=device))
    loss.make_value_estimator("td0", gamma=opts.gamma)
    target_update = SoftUpdate(loss, tau=opts.tau)
    q_opt, actor_opt = Adam(lr=opts.q_lr), Adam(lr=opts.policy_lr)
    q_state = q_opt.init(loss.params["qvalue_network"])
    actor_state = actor_opt.init(loss.params["actor_network"])
    alpha_opt = Adam(lr=opts.q_lr) if opts.autotune else None  # CleanRL: Adam([log_alpha], lr=q_lr)
    alpha_state = alpha_opt.init(loss.params["log_alpha"]) if alpha_opt is not None else None
    policy_terms = ["loss_actor", "loss_alpha"] if opts.autotune else ["loss_actor"]
    act_gen = Generator(opts.seed + 4, xp=xp, device=device)

    def act():
        return actor({"observation": rollout.observation}, generator=act_gen)["action"]

    def train_step(global_step: int, batch: dict) -> dict:
        nonlocal q_state, actor_state, alpha_state
        out, grads = loss.value_and_grad(batch, terms=["loss_qvalue"])
        q_state = update_subtree(loss, "qvalue_network", q_opt, q_state, grads)
        logged = {"loss_qvalue": out["loss_qvalue"]}
        if global_step % opts.policy_frequency == 0:
            for _ in range(opts.policy_frequency):  # compensate for the delay (CleanRL)
                out, grads = loss.value_and_grad(batch, terms=policy_terms)
                actor_state = update_subtree(loss, "actor_network", actor_opt, actor_state, grads)
                if alpha_opt is not None and alpha_state is not None:
                    alpha_state = update_subtree(loss, "log_alpha", alpha_opt, alpha_state, grads)
            logged["loss_actor"] = out["loss_actor"]
        if global_step % opts.target_network_frequency == 0:
            target_update.step()
        return logged

    return off_policy_loop(opts, name=NAME, reference=REFERENCE, envs=envs, rollout=rollout, low=low, high=high,
                           act=act, train=train_step, out_dir=out_dir, xp=xp, device=device)
