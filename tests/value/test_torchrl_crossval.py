"""Cross-validation against the installed TorchRL 0.14.1, float64: the loop functions and the estimator classes,
values to 1e-10 and gradients (tape vs torch.autograd) to 1e-10."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import arrayrl.value as AV
from arrayrl.autodiff import value_and_grad
from arrayrl.nn import KeyedModule
from arrayrl.testing.strategies import trajectory_batches
from arrayrl.value import functional as F

from value_helpers import FEW, SETTINGS

pytestmark = pytest.mark.torchrl

torch = pytest.importorskip("torch")
TF = pytest.importorskip("torchrl.objectives.value.functional")
TV = pytest.importorskip("torchrl.objectives.value")
tensordict = pytest.importorskip("tensordict")

TOL = 1e-10


def _tt(a, grad=False):
    """NumPy -> torch float64/bool. Python floats become float64 0-d tensors: TorchRL multiplies a Python gamma
    by an int mask, which rounds gamma to float32 (see docs/divergences.md)."""
    if isinstance(a, float):
        return torch.tensor(a, dtype=torch.float64)
    t = torch.tensor(np.asarray(a))
    return t.requires_grad_(True) if grad else t


# name -> (arrayrl call, TorchRL call, differentiable fields); both calls take a dict of arrays/tensors
FUNCTIONAL = {
    "td0_return_estimate": (
        lambda m, a, td: m.td0_return_estimate(a["gamma"], a["next_state_value"], a["reward"], a["terminated"]),
        ("next_state_value", "reward"),
    ),
    "td0_advantage_estimate": (
        lambda m, a, td: m.td0_advantage_estimate(a["gamma"], a["state_value"], a["next_state_value"], a["reward"],
                                                  a["done"], a["terminated"]),
        ("state_value", "next_state_value", "reward"),
    ),
    "td1_return_estimate": (
        lambda m, a, td: m.td1_return_estimate(a["gamma"], a["next_state_value"], a["reward"], a["done"],
                                               a["terminated"], time_dim=td),
        ("next_state_value", "reward"),
    ),
    "td1_advantage_estimate": (
        lambda m, a, td: m.td1_advantage_estimate(a["gamma"], a["state_value"], a["next_state_value"], a["reward"],
                                                  a["done"], a["terminated"], time_dim=td),
        ("state_value", "next_state_value", "reward"),
    ),
    "td_lambda_return_estimate": (
        lambda m, a, td: m.td_lambda_return_estimate(a["gamma"], a["lmbda"], a["next_state_value"], a["reward"],
                                                     a["done"], a["terminated"], time_dim=td),
        ("next_state_value", "reward"),
    ),
    "td_lambda_advantage_estimate": (
        lambda m, a, td: m.td_lambda_advantage_estimate(a["gamma"], a["lmbda"], a["state_value"],
                                                        a["next_state_value"], a["reward"], a["done"],
                                                        a["terminated"], time_dim=td),
        ("state_value", "next_state_value", "reward"),
    ),
    "generalized_advantage_estimate": (
        lambda m, a, td: m.generalized_advantage_estimate(a["gamma"], a["lmbda"], a["state_value"],
                                                          a["next_state_value"], a["reward"], a["done"],
                                                          a["terminated"], time_dim=td),
        ("state_value", "next_state_value", "reward"),
    ),
    "vtrace_advantage_estimate": (
        lambda m, a, td: m.vtrace_advantage_estimate(a["gamma"], a["log_pi"], a["log_mu"], a["state_value"],
                                                     a["next_state_value"], a["reward"], a["done"],
                                                     a["terminated"], time_dim=td),
        ("state_value", "next_state_value", "reward"),
    ),
    "reward2go": (
        lambda m, a, td: m.reward2go(a["reward"], a["done"], a["gamma"], time_dim=td),
        ("reward",),
    ),
}
FIELDS = ("state_value", "next_state_value", "reward", "done", "terminated", "log_pi", "log_mu", "gamma", "lmbda")


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize("name", list(FUNCTIONAL))
@SETTINGS
@given(data=st.data())
def test_functional_matches_torchrl_loops(name, data):
    call, diff = FUNCTIONAL[name]
    kw = {"per_step_gamma": False} if name == "reward2go" else {}
    if name.startswith("td0"):
        kw["time_axis"] = "default"
    if name == "reward2go":
        kw["min_batch_dims"] = 1  # TorchRL's reward2go needs a 2-D (or more) reward
    tb = data.draw(trajectory_batches(max_time=12, **kw), label="batch")
    arrays = {f: getattr(tb, f) for f in FIELDS}
    td = tb.time_dim
    if name == "reward2go":
        # TorchRL's reward2go truncates its filter at gamma**k < 1e-7 and fails for gamma == 0: stay where it is exact
        arrays["gamma"] = 0.5 + 0.5 * tb.gamma
    # TorchRL: values and gradients through autograd
    targs = {f: _tt(v, grad=f in diff) for f, v in arrays.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_out = _tuple(call(TF, targs, td))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    cot = [rng.normal(size=tuple(o.shape)) for o in t_out]
    total = sum((o * torch.tensor(c)).sum() for o, c in zip(t_out, cot))
    t_grads = torch.autograd.grad(total, [targs[f] for f in diff], allow_unused=True)

    def ours(*vals):
        a = dict(arrays, **dict(zip(diff, vals)))
        out = _tuple(call(F, a, td))
        xp = vals[0].__array_namespace__()
        acc = None
        for o, c in zip(out, cot):
            s = xp.sum(o * c)
            acc = s if acc is None else acc + s
        return acc, out

    (_, out), grads = value_and_grad(ours, argnums=tuple(range(len(diff))), has_aux=True)(*[arrays[f] for f in diff])
    for o, t in zip(out, t_out):
        np.testing.assert_allclose(np.asarray(o), t.detach().numpy(), rtol=TOL, atol=TOL, err_msg=name)
    for f, g, t in zip(diff, grads, t_grads):
        t = np.zeros_like(g) if t is None else t.numpy()
        np.testing.assert_allclose(g, t, rtol=TOL, atol=TOL, err_msg=f"{name}: d/d{f}")


@pytest.mark.parametrize("name", ["td1_return_estimate", "td_lambda_return_estimate"])
@FEW
@given(data=st.data())
def test_rolling_gamma_false_matches_torchrl_loop(name, data):
    tb = data.draw(trajectory_batches(max_time=8, per_step_gamma=True, per_step_lmbda=True), label="batch")
    t = {f: _tt(getattr(tb, f)) for f in FIELDS}
    if name == "td1_return_estimate":
        ours = F.td1_return_estimate(tb.gamma, tb.next_state_value, tb.reward, tb.done, tb.terminated,
                                     rolling_gamma=False, time_dim=tb.time_dim, torchrl_compat=True)
        theirs = TF.td1_return_estimate(t["gamma"], t["next_state_value"], t["reward"], t["done"], t["terminated"],
                                        rolling_gamma=False, time_dim=tb.time_dim)
    else:
        ours = F.td_lambda_return_estimate(tb.gamma, tb.lmbda, tb.next_state_value, tb.reward, tb.done,
                                           tb.terminated, rolling_gamma=False, time_dim=tb.time_dim)
        theirs = TF.td_lambda_return_estimate(t["gamma"], t["lmbda"], t["next_state_value"], t["reward"], t["done"],
                                              t["terminated"], rolling_gamma=False, time_dim=tb.time_dim)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=TOL, atol=TOL)


@FEW
@given(data=st.data())
def test_torchrl_vec_functions_agree_when_the_filter_is_not_truncated(data):
    """TorchRL's vec_ kernels drop terms below 1e-7; with gamma*lambda >= 0.81 and T <= 12 nothing is dropped."""
    tb = data.draw(trajectory_batches(max_time=12, per_step_gamma=False, per_step_lmbda=False,
                                      time_axis="default", min_batch_dims=1), label="batch")
    g, lm = 0.9 + 0.1 * tb.gamma, 0.9 + 0.1 * tb.lmbda
    t = {f: _tt(getattr(tb, f)) for f in FIELDS}
    adv, _ = F.vec_generalized_advantage_estimate(g, lm, tb.state_value, tb.next_state_value, tb.reward, tb.done,
                                                  tb.terminated)
    tg, tlm = _tt(g), _tt(lm)
    tadv, _ = TF.vec_generalized_advantage_estimate(tg, tlm, t["state_value"], t["next_state_value"], t["reward"],
                                                    t["done"], t["terminated"])
    np.testing.assert_allclose(adv, tadv.numpy(), rtol=1e-9, atol=1e-9)
    ret = F.vec_td_lambda_return_estimate(g, lm, tb.next_state_value, tb.reward, tb.done, tb.terminated)
    tret = TF.vec_td_lambda_return_estimate(tg, tlm, t["next_state_value"], t["reward"], t["done"], t["terminated"])
    np.testing.assert_allclose(ret, tret.numpy(), rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------- estimator classes


def _linear_nets(rng, obs_dim):
    W, b = rng.normal(size=(obs_dim, 1)), rng.normal(size=(1,))
    lin = torch.nn.Linear(obs_dim, 1).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(W.T))
        lin.bias.copy_(torch.tensor(b))
    tnet = tensordict.nn.TensorDictModule(lin, in_keys=["obs"], out_keys=["state_value"])
    anet = KeyedModule(lambda o: o @ W + b, in_keys=["obs"], out_keys=["state_value"])
    return anet, tnet


def _batches(rng, shape, obs_dim, p_done=0.25):
    obs = rng.normal(size=shape + (obs_dim,))
    nobs = rng.normal(size=shape + (obs_dim,))
    r = rng.normal(size=shape + (1,))
    d = rng.uniform(size=shape + (1,)) < p_done
    tm = d & (rng.uniform(size=shape + (1,)) < 0.5)
    lmu = rng.normal(size=shape + (1,)) * 0.3
    ours = {"obs": obs, "action_log_prob": lmu, "next": {"obs": nobs, "reward": r, "done": d, "terminated": tm}}
    td = tensordict.TensorDict(
        {"obs": torch.tensor(obs), "action_log_prob": torch.tensor(lmu),
         "next": {"obs": torch.tensor(nobs), "reward": torch.tensor(r), "done": torch.tensor(d),
                  "terminated": torch.tensor(tm)}},
        batch_size=list(shape),
    )
    return ours, td


CLASS_CASES = [
    ("TD0Estimator", {}),
    ("TD0Estimator", {"average_rewards": True}),
    ("TD1Estimator", {}),
    ("TD1Estimator", {"time_dim": 0}),
    ("TDLambdaEstimator", {"lmbda": 0.8}),
    ("TDLambdaEstimator", {"lmbda": 0.8, "average_rewards": True, "vectorized": False}),
    ("GAE", {"lmbda": 0.8}),
    ("GAE", {"lmbda": 0.8, "average_gae": True}),
    ("GAE", {"lmbda": 0.8, "time_dim": -2}),
    ("GAE", {"lmbda": 0.8, "skip_existing": True, "_no_net": True}),
]


@pytest.mark.parametrize("name,kw", CLASS_CASES, ids=[f"{n}-{sorted(k)}" for n, k in CLASS_CASES])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimator_classes_match_torchrl(name, kw, seed):
    kw = dict(kw)
    no_net = kw.pop("_no_net", False)
    rng = np.random.default_rng(seed)
    shape = [(3, 9), (2, 4, 6), (1, 13)][seed]
    anet, tnet = _linear_nets(rng, 3)
    batch, td = _batches(rng, shape, 3)
    if no_net:  # values given in the batch, no network
        v, nv = rng.normal(size=shape + (1,)), rng.normal(size=shape + (1,))
        batch = dict(batch, state_value=v, next=dict(batch["next"], state_value=nv))
        td["state_value"], td["next", "state_value"] = torch.tensor(v), torch.tensor(nv)
        anet = tnet = None
    tkw = {k: (torch.tensor(v, dtype=torch.float64) if k == "lmbda" else v) for k, v in kw.items()}
    ours = getattr(AV, name)(gamma=0.9, value_network=anet, differentiable=True, **kw)
    theirs = getattr(TV, name)(gamma=torch.tensor(0.9, dtype=torch.float64), value_network=tnet, differentiable=True,
                               **tkw)
    # gradients w.r.t. the observations and rewards, through the value network and the estimator
    w_adv, w_tgt = rng.normal(size=shape + (1,)), rng.normal(size=shape + (1,))
    obs_t = td["obs"].clone().requires_grad_(True)
    rew_t = td["next", "reward"].clone().requires_grad_(True)
    td["obs"], td["next", "reward"] = obs_t, rew_t
    tout = theirs(td)
    (tout["advantage"] * torch.tensor(w_adv)).sum().add((tout["value_target"] * torch.tensor(w_tgt)).sum()).backward()

    def f(obs, rew):
        b = dict(batch, obs=obs, next=dict(batch["next"], reward=rew))
        out = ours(b)
        xp = obs.__array_namespace__()
        return xp.sum(out["advantage"] * w_adv) + xp.sum(out["value_target"] * w_tgt), out

    (_, out), (g_obs, g_rew) = value_and_grad(f, argnums=(0, 1), has_aux=True)(batch["obs"], batch["next"]["reward"])
    for key in ("advantage", "value_target"):
        np.testing.assert_allclose(np.asarray(out[key]), tout[key].detach().numpy(), rtol=TOL, atol=TOL, err_msg=key)
    t_obs = np.zeros_like(g_obs) if obs_t.grad is None else obs_t.grad.numpy()
    np.testing.assert_allclose(g_obs, t_obs, rtol=TOL, atol=TOL, err_msg="d/d obs")
    np.testing.assert_allclose(g_rew, rew_t.grad.numpy(), rtol=TOL, atol=TOL, err_msg="d/d reward")
    if not no_net:
        np.testing.assert_allclose(np.asarray(out["state_value"]), tout["state_value"].detach().numpy(), rtol=TOL,
                                   atol=TOL)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("team_reward", [True, False])
def test_multi_agent_gae_matches_torchrl(seed, team_reward):
    rng = np.random.default_rng(seed)
    B, T, n = 2, 7, 3
    v, nv = rng.normal(size=(B, T, n, 1)), rng.normal(size=(B, T, n, 1))
    rshape = (B, T, 1) if team_reward else (B, T, n, 1)
    r = rng.normal(size=rshape)
    d = rng.uniform(size=rshape) < 0.3
    tm = d & (rng.uniform(size=rshape) < 0.5)
    batch = {"state_value": v, "next": {"state_value": nv, "reward": r, "done": d, "terminated": tm}}
    td = tensordict.TensorDict({"state_value": torch.tensor(v), "next": {
        "state_value": torch.tensor(nv), "reward": torch.tensor(r), "done": torch.tensor(d),
        "terminated": torch.tensor(tm)}}, batch_size=[B, T])
    g, lm = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    for avg in (False, True):
        out = AV.MultiAgentGAE(gamma=0.9, lmbda=0.7, value_network=None, average_gae=avg)(batch)
        tout = TV.MultiAgentGAE(gamma=g, lmbda=lm, value_network=None, average_gae=avg)(td.clone())
        for key in ("advantage", "value_target"):
            np.testing.assert_allclose(out[key], tout[key].numpy(), rtol=TOL, atol=TOL, err_msg=f"{key} avg={avg}")


@pytest.mark.parametrize("seed", [0, 1])
def test_vtrace_class_matches_torchrl(seed):
    """TorchRL's actor call returns log pi of the deterministic sample (the mode), not of the stored action."""
    from torchrl.modules import ProbabilisticActor
    from torch.distributions import Categorical

    rng = np.random.default_rng(seed)
    shape, obs_dim, n_act = (2, 8), 3, 4
    anet, tnet = _linear_nets(rng, obs_dim)
    batch, td = _batches(rng, shape, obs_dim)
    Wa, ba = rng.normal(size=(obs_dim, n_act)), rng.normal(size=(n_act,))
    lin = torch.nn.Linear(obs_dim, n_act).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(Wa.T))
        lin.bias.copy_(torch.tensor(ba))
    actor = ProbabilisticActor(tensordict.nn.TensorDictModule(lin, in_keys=["obs"], out_keys=["logits"]),
                               in_keys=["logits"], distribution_class=Categorical, return_log_prob=True)

    def our_actor(b):
        logits = b["obs"] @ Wa + ba
        m = np.max(logits, axis=-1, keepdims=True)
        return m - (m + np.log(np.sum(np.exp(logits - m), axis=-1, keepdims=True)))  # log softmax of the mode

    ours = AV.VTrace(gamma=0.9, actor_network=our_actor, value_network=anet, rho_thresh=1.2, c_thresh=0.9)
    theirs = TV.VTrace(gamma=_tt(0.9), actor_network=actor, value_network=tnet, rho_thresh=_tt(1.2),
                       c_thresh=_tt(0.9))  # Python floats would become float32 buffers
    out, tout = ours(batch), theirs(td)
    for key in ("advantage", "value_target"):
        np.testing.assert_allclose(out[key], tout[key].detach().numpy(), rtol=TOL, atol=TOL, err_msg=key)


def test_default_value_kwargs_and_aliases_match_torchrl():
    from torchrl.objectives.utils import ValueEstimators as TVE
    from torchrl.objectives.utils import default_value_kwargs as tdvk

    assert [m.name for m in AV.ValueEstimators] == [m.name for m in TVE]
    assert [m.value for m in AV.ValueEstimators] == [m.value for m in TVE]
    for m in TVE:
        assert AV.default_value_kwargs(m.name.lower()) == tdvk(m)
        assert AV.default_value_kwargs(AV.ValueEstimators[m.name]) == tdvk(m)
