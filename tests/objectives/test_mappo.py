"""MAPPOLoss / IPPOLoss: ``[B, T, n_agents]`` data under nested ``("agents", ...)`` keys. Against TorchRL 0.14.1 on
copied weights in float64 (every output, every parameter gradient, the value normaliser's statistics, <= 1e-10
relative), against the per-sample float64 oracle on Hypothesis batches on every backend, and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl._backend import namespace_of
from arrayrl.autodiff import check_grads
from arrayrl.distributions import Categorical, IndependentNormal, TanhNormal
from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor
from arrayrl.objectives.multiagent.mappo import IPPOLoss, MAPPOLoss
from arrayrl.objectives.value_norm import PopArtValueNorm, RunningValueNorm
from reference.losses import a2c as R
from tests.objectives.torchrl_helpers import normal_actor, perturb, torch_float64

B, T, N, NOBS, NA = 2, 4, 3, 3, 2
AG = "agents"
KEYS = dict(value=(AG, "state_value"))


# ------------------------------------------------------------------------------------------------ arrayrl nets
def _actor(kind, mlp=None):
    out = 3 if kind == "categorical" else 2 * NA
    mlp = mlp or MLP(in_features=NOBS, out_features=out, num_cells=[8])
    if kind == "categorical":
        net = KeyedModule(mlp, in_keys=[(AG, "observation")], out_keys=[(AG, "logits")])
        return ProbabilisticActor(net, in_keys=[(AG, "logits")], out_keys=[(AG, "action")],
                                  distribution_class=Categorical)
    dist = {"tanh": TanhNormal, "independent": IndependentNormal}[kind]
    return normal_actor(NOBS, NA, dist, obs_key=(AG, "observation"), loc_key=(AG, "loc"), scale_key=(AG, "scale"),
                        mlp=mlp, out_keys=[(AG, "action")])


def _critic(central, mlp=None):
    if not central:  # IPPO: one shared value head per agent on its own observation
        mlp = mlp or MLP(in_features=NOBS, out_features=1, num_cells=[8])
        return KeyedModule(mlp, in_keys=[(AG, "observation")], out_keys=[(AG, "state_value")])
    mlp = mlp or MLP(in_features=N * NOBS, out_features=N, num_cells=[8])

    def f(p, o):  # MAPPO: every agent's value from all observations
        lead = tuple(o.shape[:-2])
        h = mlp.apply(p, namespace_of(o).reshape(o, lead + (N * NOBS,)))
        return namespace_of(h).reshape(h, lead + (N, 1))

    return KeyedModule(f, params=mlp.params, in_keys=[(AG, "observation")], out_keys=[(AG, "state_value")])


# ------------------------------------------------------------------------------------------------ TorchRL
@pytest.fixture
def trl():
    pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    with torch_float64() as torch:
        yield torch


def _torch_pair(torch, kind, central, cls, kw, akw):
    from tensordict.nn import NormalParamExtractor as TNPE
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import IndependentNormal as TIN
    from torchrl.modules import ProbabilisticActor as TPA
    from torchrl.modules import TanhNormal as TTN
    from torchrl.objectives.multiagent import IPPOLoss as TIPPO
    from torchrl.objectives.multiagent import MAPPOLoss as TMAPPO

    if kind == "categorical":
        tnet = TensorDictModule(TMLP(in_features=NOBS, out_features=3, num_cells=[8]), [(AG, "observation")],
                                [(AG, "logits")])
        tactor = TPA(tnet, in_keys=[(AG, "logits")], out_keys=[(AG, "action")],
                     distribution_class=torch.distributions.Categorical, return_log_prob=True)
        aprefix = "0."
    else:
        tnet = TensorDictModule(torch.nn.Sequential(TMLP(in_features=NOBS, out_features=2 * NA, num_cells=[8]),
                                                    TNPE()), [(AG, "observation")], [(AG, "loc"), (AG, "scale")])
        tactor = TPA(tnet, in_keys=[(AG, "loc"), (AG, "scale")], out_keys=[(AG, "action")],
                     distribution_class={"tanh": TTN, "independent": TIN}[kind], return_log_prob=True)
        aprefix = "0.0."
    if central:
        tcritic = TensorDictModule(torch.nn.Sequential(torch.nn.Flatten(-2),
                                                       TMLP(in_features=N * NOBS, out_features=N, num_cells=[8]),
                                                       torch.nn.Unflatten(-1, (N, 1))),
                                   [(AG, "observation")], [(AG, "state_value")])
        cprefix = "1."
    else:
        tcritic = TensorDictModule(TMLP(in_features=NOBS, out_features=1, num_cells=[8]), [(AG, "observation")],
                                   [(AG, "state_value")])
        cprefix = ""
    tcls, acls = {"mappo": (TMAPPO, MAPPOLoss), "ippo": (TIPPO, IPPOLoss)}[cls]
    tkw = dict(kw)
    if "value_norm" in kw:
        tkw["value_norm"], akw = kw["value_norm"][0], {**akw, "value_norm": kw["value_norm"][1]}
    tl = tcls(tactor, tcritic, **tkw)
    tl.set_keys(**KEYS)  # (TorchRL's set_keys returns None)
    al = acls(_actor(kind), _critic(central), **{**tkw, **akw}).set_keys(**KEYS)
    return tl, al, tactor, aprefix, cprefix


def _rollout(torch, tactor):
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    td = TensorDict({AG: TensorDict({"observation": torch.randn(B, T, N, NOBS)}, [B, T, N])}, [B, T])
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        td = tactor(td)
    done = torch.zeros(B, T, 1, dtype=torch.bool)
    done[0, 1] = done[:, -1] = True
    term = done.clone()
    term[1, -1] = False
    td["next"] = TensorDict({AG: TensorDict({"observation": torch.randn(B, T, N, NOBS)}, [B, T, N]),
                             "reward": torch.randn(B, T, 1), "done": done, "terminated": term}, [B, T])
    return td.exclude((AG, "logits"), (AG, "loc"), (AG, "scale")).detach()


VALUE_NORMS = {None: None, "popart": lambda tvn: (tvn.PopArtValueNorm(shape=1, beta=0.7),
                                                  PopArtValueNorm(shape=1, beta=0.7)),
               "running": lambda tvn: (tvn.RunningValueNorm(shape=1), RunningValueNorm(shape=1))}
CASES = [("mappo", "categorical", True, None, None, "mean", False),
         ("mappo", "tanh", True, "popart", None, "sum", False),
         ("mappo", "independent", True, "running", 0.1, "none", True),
         ("mappo", "categorical", True, "popart", 0.1, "mean", True),
         ("ippo", "categorical", False, "running", None, "mean", False),
         ("ippo", "independent", False, None, 0.1, "mean", True),
         ("ippo", "tanh", False, "popart", 0.2, "none", True)]


@pytest.mark.torchrl
@pytest.mark.parametrize("cls,kind,central,vnorm,cv,red,pre", CASES)
def test_mappo_ippo_vs_torchrl(trl, cls, kind, central, vnorm, cv, red, pre):
    torch = trl
    import torchrl.modules.value_norm as tvn
    from torchrl.objectives.value import MultiAgentGAE as TMAGAE
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP

    from test_ppo_torchrl import _check_outputs, _compare_grads, _run, _tree

    kw = dict(reduction=red, clip_value=cv, critic_coeff=0.8, entropy_coeff=0.02)
    if vnorm:
        kw["value_norm"] = VALUE_NORMS[vnorm](tvn)
    tl, al, tactor, aprefix, cprefix = _torch_pair(torch, kind, central, cls, kw, {"torchrl_compat": True})
    for step in range(2):  # twice: the value normaliser's statistics carry over
        torch.manual_seed(1 + step)
        td = _rollout(torch, tactor)
        if pre:  # advantage and target from another critic; a stored V_old makes the value clip bite
            other = TensorDictModule(TMLP(in_features=NOBS, out_features=1, num_cells=[4]), [(AG, "observation")],
                                     [(AG, "state_value")])
            est = TMAGAE(gamma=0.9, lmbda=0.8, value_network=other)
            est.set_keys(value=(AG, "state_value"), advantage=(AG, "advantage"), value_target=(AG, "value_target"))
            with torch.no_grad():
                est(td)
            td = td.detach()
            td[(AG, "state_value")] = torch.randn(B, T, N, 1)
            tl.set_keys(advantage=(AG, "advantage"), value_target=(AG, "value_target"))
            al.set_keys(advantage=(AG, "advantage"), value_target=(AG, "value_target"))
        perturb(tl.actor_network_params, scale=0.5)
        al.params = {"actor_network": {"0": _tree(tl.actor_network_params, aprefix), "1": {}},
                     "critic_network": _tree(tl.critic_network_params, cprefix)}
        tl.zero_grad()
        noise = (1, B, T, N, NA) if kind == "tanh" else None
        tout, aout, grads, _ = _run(tl, al, td, noise=noise)
        _check_outputs(tout, aout)
        _compare_grads(tl.actor_network_params, grads["actor_network"]["0"], "actor", aprefix)
        _compare_grads(tl.critic_network_params, grads["critic_network"], "critic", cprefix)
        if vnorm:
            for name, buf in tl.value_norm.named_buffers():
                np.testing.assert_allclose(np.asarray(al.value_norm_state[name]), buf.numpy(), rtol=1e-10,
                                           err_msg=name)
    assert aout["ESS"].shape == (T, N)  # per (time, agent), as TorchRL


@pytest.mark.torchrl
def test_defaults_match_torchrl(trl):
    from torchrl.objectives.multiagent import MAPPOLoss as TMAPPO

    tl, al, _, _, _ = _torch_pair(trl, "categorical", True, "mappo", {}, {})
    assert (al.normalize_advantage, al.normalize_advantage_exclude_dims, al.entropy_coeff) == (
        tl.normalize_advantage, tuple(tl.normalize_advantage_exclude_dims), float(tl.entropy_coeff)) == (
        True, (-2,), 0.01)
    assert type(al.value_estimator).__name__ == type(tl.value_estimator).__name__ == "MultiAgentGAE"
    assert al.value_estimator.agent_dim == tl.value_estimator.agent_dim == -2
    assert al.tensor_keys.action == tl.tensor_keys.action == (AG, "action")
    assert al.tensor_keys.sample_log_prob == tl.tensor_keys.sample_log_prob == (AG, "action_log_prob")
    with pytest.raises(ValueError, match="mutually exclusive"):
        TMAPPO(_torch_pair(trl, "categorical", True, "mappo", {}, {})[2], None, advantage_norm=object())
    with pytest.raises(ValueError, match="mutually exclusive"):
        MAPPOLoss(_actor("categorical"), _critic(True), advantage_norm=RunningValueNorm())


# ------------------------------------------------------------------------------------------------ reference
def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@st.composite
def _cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    b, t = draw(st.integers(1, 3)), draw(st.integers(2, 3))
    return dict(
        b=b, t=t, obs=rng.normal(size=(b, t, N, NOBS)), w=rng.normal(size=(NOBS, 3)), u=rng.normal(size=(NOBS, 1)),
        action=rng.integers(0, 3, (b, t, N)), old=rng.normal(size=(b, t, N)) * 0.3 - 1.1,
        adv=rng.normal(size=(b, t, N, 1)) * 2, target=rng.normal(size=(b, t, N, 1)) * 3 + 1,
        v_old=rng.normal(size=(b, t, N, 1)),
        cls=draw(st.sampled_from([MAPPOLoss, IPPOLoss])), vnorm=draw(st.booleans()),
        clip_value=draw(st.sampled_from([None, 0.3])), reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        fn=draw(st.sampled_from(["l2", "smooth_l1"])))


def _linear_nets(xp, c):
    W, U = xp.from_numpy(c["w"]), xp.from_numpy(c["u"])
    actor = ProbabilisticActor(KeyedModule(lambda p, o: o @ p["w"], params={"w": W}, in_keys=[(AG, "observation")],
                                           out_keys=[(AG, "logits")]),
                               in_keys=[(AG, "logits")], out_keys=[(AG, "action")], distribution_class=Categorical)
    critic = KeyedModule(lambda p, o: o @ p["u"], params={"u": U}, in_keys=[(AG, "observation")],
                         out_keys=[(AG, "state_value")])
    return actor, critic


def _mappo(xp, c):
    actor, critic = _linear_nets(xp, c)
    loss = c["cls"](actor, critic, value_norm=PopArtValueNorm(beta=0.5) if c["vnorm"] else None, critic_coeff=0.7,
                    clip_value=c["clip_value"], reduction=c["reduction"], loss_critic_type=c["fn"])
    return loss.set_keys(advantage=(AG, "advantage"), value_target=(AG, "value_target"), **KEYS)


def _ma_batch(xp, c):
    f = xp.from_numpy
    return {AG: {"observation": f(c["obs"]), "action": f(c["action"]), "action_log_prob": f(c["old"]),
                 "advantage": f(c["adv"]), "value_target": f(c["target"]), "state_value": f(c["v_old"])}}


@settings(max_examples=6)
@given(c=_cases())
def test_mappo_vs_reference(xp, c):
    loss = _mappo(xp, c)
    out = loss(_ma_batch(xp, c))
    logits = c["obs"] @ c["w"]
    lp = np.take_along_axis(_log_softmax(logits), c["action"][..., None], -1)[..., 0]
    ent = -(np.exp(_log_softmax(logits)) * _log_softmax(logits)).sum(-1)
    stats = None
    if c["vnorm"]:
        mean, std = R.popart_stream([c["target"].reshape(-1, 1)], beta=0.5)[-1]
        stats = (mean[(0,)], std[(0,)])
    want = R.mappo_loss(lp, c["old"], c["adv"][..., 0], (c["obs"] @ c["u"])[..., 0], c["target"][..., 0],
                        old_value=c["v_old"][..., 0], entropy=ent, entropy_coeff=0.01, critic_coeff=0.7,
                        loss_critic_type=c["fn"], clip_value=c["clip_value"], value_stats=stats,
                        reduction=c["reduction"])
    tol = dict(rtol=max(xp.rtol, 1e-9), atol=max(xp.atol, 1e-10))
    for k, v in want.items():
        np.testing.assert_allclose(xp.to_numpy(out[k]), np.asarray(v), **tol, err_msg=k)
    if c["vnorm"]:  # one update with this batch's targets
        np.testing.assert_allclose(xp.to_numpy(loss.value_norm.scale(loss.value_norm_state))[0], stats[1], **tol)


class _NP:
    float_dtype = np.float64
    from_numpy = staticmethod(lambda a: np.asarray(a))


@settings(max_examples=3)
@given(c=_cases())
def test_mappo_gradients_vs_finite_differences(c):
    loss = _mappo(_NP, c)
    batch = _ma_batch(_NP, c)

    def total(w, u):
        loss.value_norm_state = None  # each evaluation starts from the same normaliser state
        out = loss._forward(batch, {"actor_network": {"0": {"w": w}, "1": {}}, "critic_network": {"u": u}})
        ns = w.__array_namespace__()
        return sum(ns.sum(out[k]) for k in out if k.startswith("loss"))

    check_grads(total, (c["w"], c["u"]))


def test_mappo_gae_inside_and_no_mutation():
    """Team reward/done [B, T, 1] broadcast to the agents by the default MultiAgentGAE; the caller's batch is
    untouched."""
    from reference import value as RV

    rng = np.random.default_rng(7)
    c = dict(w=rng.normal(size=(NOBS, 3)), u=rng.normal(size=(NOBS, 1)))
    actor, critic = _linear_nets(_NP, c)
    loss = MAPPOLoss(actor, critic, normalize_advantage=False, critic_coeff=1.0, loss_critic_type="l2").set_keys(
        **KEYS)
    obs, nobs = rng.normal(size=(B, T, N, NOBS)), rng.normal(size=(B, T, N, NOBS))
    done = np.zeros((B, T, 1), bool)
    done[:, -1] = True
    batch = {AG: {"observation": obs, "action": rng.integers(0, 3, (B, T, N)),
                  "action_log_prob": rng.normal(size=(B, T, N))},
             "next": {AG: {"observation": nobs}, "reward": rng.normal(size=(B, T, 1)), "done": done,
                      "terminated": done.copy()}}
    snapshot = {k: dict(v) for k, v in batch.items()}
    out = loss(batch)
    assert {k: dict(v) for k, v in batch.items()} == snapshot and sorted(batch[AG]) == sorted(snapshot[AG])
    v, nv = obs @ c["u"], nobs @ c["u"]
    rew = np.broadcast_to(batch["next"]["reward"][:, :, None], (B, T, N, 1))
    dn = np.broadcast_to(done[:, :, None], (B, T, N, 1))
    adv, target = RV.gae(0.99, 0.95, v, nv, rew, dn, dn, time_dim=1)
    np.testing.assert_allclose(out["loss_critic"], np.mean((target - v) ** 2), rtol=1e-12)
