"""Cases of ``benchmarks/losses.py``: one arrayrl loss and its TorchRL twin per case, same shapes, float32, library
defaults (arrayrl's default BLAS policy, torch's default threads). ``build(side, name)`` returns a zero-argument
step: arrayrl ``loss.value_and_grad(batch)``; TorchRL ``loss(td)``, sum of the ``loss_*`` terms, ``backward()``.

Networks (both sides the same layouts, independently initialised):

* DQN / QMixer / IQL: MLPs 64x64 ReLU, obs 8, 4 actions (QMixer: 4 agents, state 16, embed 32), IQL action 2;
* ClipPPO / A2C: actor MLP 64x64 tanh -> NormalParamExtractor -> IndependentNormal (one ``-tanhn`` row:
  TanhNormal, Monte-Carlo entropy), critic MLP 64x64 tanh, obs 8, action 2. Flat ``[B]`` minibatch with the
  advantage and value target precomputed; or a ``[64 envs, 128 steps]`` rollout with GAE (gamma 0.99, lambda 0.95,
  both libraries' default) computed inside the loss (the TorchRL step hands the loss a shallow copy without the
  keys its estimator writes, so every call recomputes GAE);
* SAC v2 (2 critics), TD3 (2 critics), REDQ (10 critics, 2 sub-sampled): MLPs ``h x h`` ReLU (``h`` = 256 as
  CleanRL's SAC/TD3, or 64), obs 8, action 2; SAC/REDQ: TanhNormal actor, target entropy -2; TD3: deterministic
  ReLU actor with a tanh output, bounds [-1, 1]. TD(0) targets, gamma 0.99;
* CQL (CQL(H), 2 critics, ``num_random`` 10, TanhNormal actor, target entropy -2, the other arguments the
  libraries' defaults): MLPs ``h x h`` ReLU (``h`` = 256 as CleanRL's / TorchRL's CQL examples, or 64), obs 8,
  action 2, TD(0), gamma 0.99;
* GAIL with the WGAN-GP gradient penalty (``use_grad_penalty=True``, ``gp_lambda`` 10): discriminator MLP 64x64
  tanh on ``concat(obs 8, action 2)`` -> 1 -> sigmoid; ``B`` expert and ``B`` collector pairs (the penalty's
  double backward included in both libraries' steps; arrayrl draws its default one coefficient per sample,
  TorchRL one per element);
* DreamerV3 actor (``DreamerV3ActorLoss``, built as ``tests/objectives/test_dreamer_v3_actor.py``; the docstring's seed
  example scaled to 64 units): ``RSSMPriorV3`` (GRU) hidden 64, belief 64, 4 categoricals x 16 classes (state 64),
  action 7; reward and value MLPs depth 1, 64 cells, ELU; ``DreamerActor`` depth 1, 64 cells -> TanhNormal;
  ``imagination_horizon`` 15, ``make_value_estimator(TDLambda)`` (gamma 0.99, lambda 0.95), the other arguments the
  libraries' defaults (entropy bonus 3e-4 with TorchRL's Monte-Carlo entropy, return normalisation); ``B`` start
  states. arrayrl's default target is TD(lambda) along the horizon, TorchRL's ``r + gamma V'`` without a
  continuation model (``docs/divergences.md``); the step is the actor loss's forward (imagination on the tape) and
  backward on both sides.
"""

from __future__ import annotations

import importlib.util
import os

OBS, N_ACT, N_AGENTS, STATE, EMBED, ACT_DIM = 8, 4, 4, 16, 32, 2
ENVS, STEPS = 64, 128
DV3_HID, DV3_BELIEF, DV3_CAT, DV3_CLS, DV3_ACT, DV3_H = 64, 64, 4, 16, 7, 15
DV3_STATE = DV3_CAT * DV3_CLS


def _has_module(rel: str) -> bool:
    """Whether ``arrayrl/<rel>`` exists, without importing arrayrl (the TorchRL worker must not depend on it)."""
    spec = importlib.util.find_spec("arrayrl")  # top level only: executes nothing
    return bool(spec and spec.submodule_search_locations) and any(
        os.path.exists(os.path.join(d, rel)) for d in spec.submodule_search_locations)


HAS_REDQ = _has_module(os.path.join("objectives", "redq.py"))


def _cases() -> dict:
    """name -> spec: loss, batch (int or (envs, steps)), hidden, dist, issue target (TorchRL / arrayrl)."""
    c: dict = {}
    for loss, t256, t4096 in (("dqn", 5.0, 1.3), ("qmixer", 4.0, 1.3), ("iql", 4.0, 1.3)):
        c[f"{loss}-256"] = dict(loss=loss, batch=256, hidden=64, target=t256)
        c[f"{loss}-4096"] = dict(loss=loss, batch=4096, hidden=64, target=t4096)
    for loss in ("ppo", "a2c"):
        c[f"{loss}-256"] = dict(loss=loss, batch=256, hidden=64, dist="normal", target=3.0)
        c[f"{loss}-4096"] = dict(loss=loss, batch=4096, hidden=64, dist="normal", target=1.0)
        c[f"{loss}-gae"] = dict(loss=loss, batch=(ENVS, STEPS), hidden=64, dist="normal", target=3.0)
    c["ppo-256-tanhn"] = dict(loss="ppo", batch=256, hidden=64, dist="tanh", target=3.0)
    for loss in ("sac", "td3") + (("redq",) if HAS_REDQ else ()):
        for h in (256, 64):
            c[f"{loss}-256-h{h}"] = dict(loss=loss, batch=256, hidden=h, target=3.0)
            c[f"{loss}-4096-h{h}"] = dict(loss=loss, batch=4096, hidden=h, target=1.0)
    for h in (256, 64):
        c[f"cql-256-h{h}"] = dict(loss="cql", batch=256, hidden=h, target=3.0)
        c[f"cql-4096-h{h}"] = dict(loss="cql", batch=4096, hidden=h, target=1.0)
    c["gail-256"] = dict(loss="gail", batch=256, hidden=64, target=3.0)
    c["gail-4096"] = dict(loss="gail", batch=4096, hidden=64, target=1.0)
    c["dreamerv3-actor-256"] = dict(loss="dreamerv3_actor", batch=256, hidden=64, target=2.0)
    c["dreamerv3-actor-1024"] = dict(loss="dreamerv3_actor", batch=1024, hidden=64, target=1.0)
    for name, spec in c.items():
        spec["name"] = name
    return c


CASES = _cases()


def describe(spec: dict) -> str:
    b = spec["batch"]
    shape = f"[{b[0]}x{b[1]}] GAE inside" if isinstance(b, tuple) else str(b)
    extra = {"tanh": ", TanhNormal"}.get(spec.get("dist"), "")
    if spec["loss"] == "gail":
        extra = ", grad penalty"
    elif spec["loss"] == "cql":
        extra = ", 2 critics, num_random 10"
    elif spec["loss"] == "dreamerv3_actor":
        return (f"{shape} start states, H {DV3_H}, RSSMPriorV3 {DV3_HID}/{DV3_BELIEF}/{DV3_CAT}x{DV3_CLS}, "
                f"MLPs 1x{spec['hidden']}, TanhNormal, TDLambda")
    h = spec["hidden"]
    return f"{shape}, {h}x{h}{extra}"


# ------------------------------------------------------------------------------------------------ data
def data(spec: dict, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    f = np.float32
    loss, b = spec["loss"], spec["batch"]
    bs = b if isinstance(b, tuple) else (b,)
    n = lambda *s: rng.normal(size=bs + s).astype(f)  # noqa: E731
    term = rng.uniform(size=bs + (1,)) < (0.01 if loss in ("ppo", "a2c") else 0.1)
    if loss == "dreamerv3_actor":
        return {"state": n(DV3_STATE), "belief": n(DV3_BELIEF)}
    if loss == "dqn":
        return {"observation": n(OBS), "action": rng.integers(0, N_ACT, bs),
                "next": {"observation": n(OBS), "reward": n(1), "done": term, "terminated": term}}
    if loss == "qmixer":
        return {"agents": {"observation": n(N_AGENTS, OBS), "action": rng.integers(0, N_ACT, bs + (N_AGENTS,))},
                "state": n(STATE),
                "next": {"agents": {"observation": n(N_AGENTS, OBS)}, "state": n(STATE), "reward": n(1),
                         "done": term, "terminated": term}}
    if loss in ("ppo", "a2c"):
        lo = 0.9 if spec.get("dist") == "tanh" else 2.0
        action = rng.uniform(-lo, lo, size=bs + (ACT_DIM,)).astype(f)
        out = {"observation": n(OBS), "action": action,
               "action_log_prob": (-0.5 * action ** 2 - 0.919).sum(-1).astype(f)}
        if isinstance(b, tuple):  # rollout: the estimator runs inside the loss
            done = term.copy()
            done[:, -1] = True  # truncated at the end of the rollout
            out["next"] = {"observation": n(OBS), "reward": n(1), "done": done, "terminated": term}
        else:
            out["advantage"], out["value_target"] = n(1), n(1)
        return out
    if loss == "gail":  # B expert and B collector (observation, action) pairs
        return {"observation": n(OBS), "action": rng.uniform(-0.9, 0.9, size=bs + (ACT_DIM,)).astype(f),
                "collector_observation": n(OBS) + f(0.5),
                "collector_action": rng.uniform(-0.9, 0.9, size=bs + (ACT_DIM,)).astype(f)}
    # sac / td3 / redq / iql / cql: a continuous transition
    return {"observation": n(OBS), "action": rng.uniform(-0.9, 0.9, size=bs + (ACT_DIM,)).astype(f),
            "next": {"observation": n(OBS), "reward": n(1), "done": term, "terminated": term}}


# ------------------------------------------------------------------------------------------------ arrayrl side
def arrayrl_step(spec: dict):
    import numpy as np

    import arrayrl.objectives as O
    from arrayrl.distributions import IndependentNormal, TanhNormal
    from arrayrl.nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor, QValueActor, ValueOperator
    from arrayrl.nn.multiagent import QMixer

    loss_name, h = spec["loss"], spec["hidden"]
    if loss_name == "dreamerv3_actor":
        return _arrayrl_dreamerv3_actor(spec)
    act = "tanh" if loss_name in ("ppo", "a2c") else "relu"
    kw = dict(num_cells=[h, h], activation_class=act, dtype=np.float32)

    def gaussian_actor(dist):
        net, ext = MLP(in_features=OBS, out_features=2 * ACT_DIM, **kw), NormalParamExtractor()
        module = KeyedModule(lambda p, o: ext.apply({}, net.apply(p, o)), params=net.params, in_keys=["observation"],
                             out_keys=["loc", "scale"])
        return ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=dist)

    def q_net():
        return ValueOperator(MLP(in_features=OBS + ACT_DIM, out_features=1, **kw), in_keys=["observation", "action"])

    if loss_name == "dqn":
        loss = O.DQNLoss(QValueActor(MLP(in_features=OBS, out_features=N_ACT, **kw), action_space="categorical"),
                         action_space="categorical")
    elif loss_name == "qmixer":
        local = QValueActor(
            KeyedModule(MLP(in_features=OBS, out_features=N_ACT, **kw), in_keys=[("agents", "observation")],
                        out_keys=[("agents", "action_value")]),
            action_space="categorical", action_value_key=("agents", "action_value"), action_key=("agents", "action"),
            chosen_action_value_key=("agents", "chosen_action_value"))
        mixer = KeyedModule(QMixer((STATE,), EMBED, N_AGENTS, dtype=np.float32),
                            in_keys=[("agents", "chosen_action_value"), "state"], out_keys=["chosen_action_value"])
        loss = O.QMixerLoss(local, mixer, action_space="categorical")
    elif loss_name == "iql":
        v = ValueOperator(MLP(in_features=OBS, out_features=1, **kw), in_keys=["observation"])
        loss = O.IQLLoss(gaussian_actor(TanhNormal), q_net(), v)
    elif loss_name in ("ppo", "a2c"):
        actor = gaussian_actor(TanhNormal if spec.get("dist") == "tanh" else IndependentNormal)
        critic = ValueOperator(MLP(in_features=OBS, out_features=1, **kw), in_keys=["observation"])
        loss = (O.ClipPPOLoss if loss_name == "ppo" else O.A2CLoss)(actor, critic)
    elif loss_name == "sac":
        loss = O.SACLoss(gaussian_actor(TanhNormal), q_net(), target_entropy=-float(ACT_DIM))
    elif loss_name == "td3":
        from arrayrl._backend import namespace_of

        mlp = MLP(in_features=OBS, out_features=ACT_DIM, **kw)
        def mu(p, o):
            y = mlp.apply(p, o)
            return namespace_of(y).tanh(y)

        actor = KeyedModule(mu, params=mlp.params, in_keys=["observation"], out_keys=["action"])
        from arrayrl.objectives.td3 import TD3Loss

        loss = TD3Loss(actor, q_net(), bounds=(-1.0, 1.0))
    elif loss_name == "redq":
        from arrayrl.objectives.redq import REDQLoss

        loss = REDQLoss(gaussian_actor(TanhNormal), q_net(), num_qvalue_nets=10, target_entropy=-float(ACT_DIM))
    elif loss_name == "cql":
        loss = O.CQLLoss(gaussian_actor(TanhNormal), q_net(), num_random=10, target_entropy=-float(ACT_DIM))
    elif loss_name == "gail":
        from arrayrl import ops

        dmlp = MLP(in_features=OBS + ACT_DIM, out_features=1, num_cells=[h, h], activation_class="tanh",
                   dtype=np.float32)

        def disc(p, o, a):
            from arrayrl._backend import namespace_of

            return ops.sigmoid(dmlp.apply(p, namespace_of(o, a).concat([o, a], axis=-1)))

        loss = O.GAILLoss(KeyedModule(disc, params=dmlp.params, in_keys=["observation", "action"],
                                      out_keys=["d_logits"]), use_grad_penalty=True, gp_lambda=10)
    else:
        raise ValueError(loss_name)
    if loss_name not in ("ppo", "a2c", "gail"):
        loss.make_value_estimator(gamma=0.99)
    batch = data(spec)

    def step():
        out, grads = loss.value_and_grad(batch)
        return out

    return step


def _arrayrl_dreamerv3_actor(spec: dict):
    import numpy as np

    from arrayrl.distributions import TanhNormal
    from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor, Sequential
    from arrayrl.nn.rssm import RSSMPriorV3
    from arrayrl.nn.rssm_v1 import DreamerActor, StochasticKeyedModule
    from arrayrl.objectives.dreamer import DreamerEnv
    from arrayrl.objectives.dreamer_v3 import DreamerV3ActorLoss
    from arrayrl.random import Generator
    from arrayrl.value import ValueEstimators

    h, f32, g = spec["hidden"], np.float32, Generator(0)
    feat = DV3_STATE + DV3_BELIEF
    prior = RSSMPriorV3(DV3_HID, DV3_BELIEF, DV3_CAT, DV3_CLS, DV3_ACT, generator=g, dtype=f32)
    trans = StochasticKeyedModule(prior, in_keys=["state", "belief", "action"], out_keys=["_", "state", "belief"])
    reward = MLP(feat, 1, depth=1, num_cells=h, activation_class="elu", generator=g, dtype=f32)
    env = DreamerEnv(Sequential(trans, KeyedModule(reward, in_keys=["state", "belief"], out_keys=["reward"])),
                     prior_shape=[DV3_STATE], belief_shape=[DV3_BELIEF])
    net = DreamerActor(DV3_ACT, depth=1, num_cells=h, in_features=feat, generator=g, dtype=f32)
    actor = ProbabilisticActor(KeyedModule(net, in_keys=["state", "belief"], out_keys=["loc", "scale"]),
                               in_keys=["loc", "scale"], distribution_class=TanhNormal)
    vnet = MLP(feat, 1, depth=1, num_cells=h, activation_class="elu", generator=g, dtype=f32)
    value = KeyedModule(vnet, in_keys=["state", "belief"], out_keys=["state_value"])
    loss = DreamerV3ActorLoss(actor, value, env, imagination_horizon=DV3_H, generator=Generator(1))  # required
    loss = loss.make_value_estimator(ValueEstimators.TDLambda)
    batch = data(spec)

    def step():
        (out, _fake), grads = loss.value_and_grad(batch)
        return out

    return step


def _torchrl_dreamerv3_actor(spec: dict):
    import torch
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule as TDM

    import torchrl.objectives as TO
    from torchrl.data import Composite, Unbounded
    from torchrl.envs.model_based.dreamer import DreamerEnv
    from torchrl.envs.utils import ExplorationType
    from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, WorldModelWrapper
    from torchrl.modules.models import model_based as mb
    from torchrl.objectives import ValueEstimators

    h, feat = spec["hidden"], DV3_STATE + DV3_BELIEF
    prior = mb.RSSMPriorV3(hidden_dim=DV3_HID, rnn_hidden_dim=DV3_BELIEF, num_categoricals=DV3_CAT,
                           num_classes=DV3_CLS, action_dim=DV3_ACT)
    reward = MLP(in_features=feat, out_features=1, depth=1, num_cells=h, activation_class=torch.nn.ELU)
    env = DreamerEnv(WorldModelWrapper(TDM(prior, in_keys=["state", "belief", "action"],
                                           out_keys=["_", "state", "belief"]),
                                       TDM(reward, in_keys=["state", "belief"], out_keys=["reward"])),
                     prior_shape=torch.Size([DV3_STATE]), belief_shape=torch.Size([DV3_BELIEF]))
    env.observation_spec = Composite(state=Unbounded(DV3_STATE), belief=Unbounded(DV3_BELIEF))
    env.action_spec = Unbounded(DV3_ACT)
    env.reward_spec = Unbounded(1)
    net = mb.DreamerActor(DV3_ACT, depth=1, num_cells=h)
    net(torch.zeros(1, DV3_STATE), torch.zeros(1, DV3_BELIEF))  # materialise the lazy layers
    actor = ProbabilisticActor(TDM(net, in_keys=["state", "belief"], out_keys=["loc", "scale"]),
                               in_keys=["loc", "scale"], distribution_class=TanhNormal,
                               default_interaction_type=ExplorationType.RANDOM, spec=Unbounded(DV3_ACT))
    vnet = MLP(in_features=feat, out_features=1, depth=1, num_cells=h, activation_class=torch.nn.ELU)
    value = TDM(vnet, in_keys=["state", "belief"], out_keys=["state_value"])
    loss = TO.DreamerV3ActorLoss(actor, value, env, imagination_horizon=DV3_H)
    loss.make_value_estimator(ValueEstimators.TDLambda)
    b = spec["batch"]
    td = TensorDict({k: torch.as_tensor(v) for k, v in data(spec).items()}, [b])
    params = list(net.parameters())

    def step():
        for p in params:
            p.grad = None
        out, _fake = loss(td)
        out["loss_actor"].backward()
        return out

    return step


# ------------------------------------------------------------------------------------------------ TorchRL side
def torchrl_step(spec: dict):
    import torch
    from tensordict import TensorDict
    from tensordict.nn import NormalParamExtractor, TensorDictModule

    import torchrl.objectives as TO
    from torchrl.modules import (MLP, IndependentNormal, ProbabilisticActor, QValueActor, QValueModule,
                                 SafeSequential, TanhNormal, ValueOperator)

    loss_name, h = spec["loss"], spec["hidden"]
    if loss_name == "dreamerv3_actor":
        return _torchrl_dreamerv3_actor(spec)
    act = torch.nn.Tanh if loss_name in ("ppo", "a2c") else torch.nn.ReLU
    kw = dict(num_cells=[h, h], activation_class=act)

    def gaussian_actor(dist):
        return ProbabilisticActor(
            TensorDictModule(torch.nn.Sequential(MLP(in_features=OBS, out_features=2 * ACT_DIM, **kw),
                                                 NormalParamExtractor()), ["observation"], ["loc", "scale"]),
            in_keys=["loc", "scale"], distribution_class=dist)

    def q_net():
        return ValueOperator(MLP(in_features=OBS + ACT_DIM, out_features=1, **kw), in_keys=["observation", "action"])

    drop: tuple = ()
    if loss_name == "dqn":
        loss = TO.DQNLoss(QValueActor(MLP(in_features=OBS, out_features=N_ACT, **kw), in_keys=["observation"],
                                      action_space="categorical"), action_space="categorical")
    elif loss_name == "qmixer":
        from torchrl.modules.models.multiagent import QMixer
        from torchrl.objectives.multiagent import QMixerLoss

        module = TensorDictModule(MLP(in_features=OBS, out_features=N_ACT, **kw), in_keys=[("agents", "observation")],
                                  out_keys=[("agents", "action_value")])
        vm = QValueModule(action_value_key=("agents", "action_value"), action_space="categorical",
                          out_keys=[("agents", "action"), ("agents", "action_value"), ("agents", "chosen_action_value")])
        mixer = TensorDictModule(QMixer(state_shape=(STATE,), mixing_embed_dim=EMBED, n_agents=N_AGENTS, device="cpu"),
                                 in_keys=[("agents", "chosen_action_value"), "state"], out_keys=["chosen_action_value"])
        loss = QMixerLoss(SafeSequential(module, vm), mixer, action_space="categorical")
    elif loss_name == "iql":
        v = ValueOperator(MLP(in_features=OBS, out_features=1, **kw), in_keys=["observation"])
        loss = TO.IQLLoss(gaussian_actor(TanhNormal), q_net(), v)
    elif loss_name in ("ppo", "a2c"):
        actor = gaussian_actor(TanhNormal if spec.get("dist") == "tanh" else IndependentNormal)
        critic = ValueOperator(MLP(in_features=OBS, out_features=1, **kw), in_keys=["observation"])
        loss = (TO.ClipPPOLoss if loss_name == "ppo" else TO.A2CLoss)(actor, critic)
        if isinstance(spec["batch"], tuple):  # keys the estimator writes into the caller's td
            drop = ("advantage", "value_target", "state_value", ("next", "state_value"))
    elif loss_name == "sac":
        loss = TO.SACLoss(gaussian_actor(TanhNormal), q_net(), target_entropy=-float(ACT_DIM))
    elif loss_name == "td3":
        actor = TensorDictModule(torch.nn.Sequential(MLP(in_features=OBS, out_features=ACT_DIM, **kw),
                                                     torch.nn.Tanh()), ["observation"], ["action"])
        loss = TO.TD3Loss(actor, q_net(), bounds=(-1.0, 1.0))
    elif loss_name == "redq":
        loss = TO.REDQLoss(gaussian_actor(TanhNormal), q_net(), num_qvalue_nets=10, target_entropy=-float(ACT_DIM))
    elif loss_name == "cql":
        loss = TO.CQLLoss(gaussian_actor(TanhNormal), q_net(), num_random=10, target_entropy=-float(ACT_DIM))
    elif loss_name == "gail":
        class Disc(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.mlp = MLP(in_features=OBS + ACT_DIM, out_features=1, num_cells=[h, h],
                               activation_class=torch.nn.Tanh)

            def forward(self, o, a):
                return torch.sigmoid(self.mlp(torch.cat([o, a], -1)))

        loss = TO.GAILLoss(TensorDictModule(Disc(), in_keys=["observation", "action"], out_keys=["d_logits"]),
                           use_grad_penalty=True, gp_lambda=10)
    else:
        raise ValueError(loss_name)
    if loss_name not in ("ppo", "a2c", "gail"):
        loss.make_value_estimator(gamma=0.99)
    b = spec["batch"]
    bs = list(b) if isinstance(b, tuple) else [b]

    def conv(d):
        return {k: conv(v) if isinstance(v, dict) else torch.as_tensor(v) for k, v in d.items()}

    td = TensorDict(conv(data(spec)), bs)
    params = [p for p in loss.parameters() if p.requires_grad]

    def step():
        for p in params:
            p.grad = None
        out = loss(td.exclude(*drop) if drop else td)
        total = sum(v.sum() for k, v in out.items() if k.startswith("loss"))
        total.backward()
        return out

    return step


def build(side: str, name: str):
    spec = CASES[name]
    return (arrayrl_step if side == "arrayrl" else torchrl_step)(spec)
