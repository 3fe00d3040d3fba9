"""The estimator classes: the batch protocol, keys, value networks, differentiability, registry (no TorchRL needed;
the numbers are checked against the functional API, which is checked against reference/ and TorchRL)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import arrayrl.value as AV
from arrayrl._backend import is_taped
from arrayrl.autodiff import Tensor, value_and_grad
from arrayrl.nn import KeyedModule
from arrayrl.value import functional as F


def _batch(shape=(2, 6), obs_dim=3, seed=0, with_values=False):
    rng = np.random.default_rng(seed)
    b = {
        "obs": rng.normal(size=shape + (obs_dim,)),
        "action_log_prob": rng.normal(size=shape + (1,)) * 0.2,
        "next": {
            "obs": rng.normal(size=shape + (obs_dim,)),
            "reward": rng.normal(size=shape + (1,)),
            "done": rng.random(shape + (1,)) < 0.3,
        },
    }
    b["next"]["terminated"] = b["next"]["done"] & (rng.random(shape + (1,)) < 0.5)
    if with_values:
        b["state_value"] = rng.normal(size=shape + (1,))
        b["next"]["state_value"] = rng.normal(size=shape + (1,))
    return b


W = np.array([[0.3], [-0.2], [0.5]])


class CountingNet:
    """A keyed value network V(obs) = obs @ W that counts its calls."""

    in_keys = [("obs",)]
    out_keys = [("state_value",)]

    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return dict(batch, state_value=batch["obs"] @ W)

    def apply(self, params, batch):
        self.calls += 1
        return dict(batch, state_value=batch["obs"] @ params["w"])


def _snapshot(tree):
    return {k: (_snapshot(v) if isinstance(v, dict) else (id(v), np.array(v, copy=True))) for k, v in tree.items()}


def _same(tree, snap):
    for k, v in snap.items():
        if isinstance(v, dict):
            _same(tree[k], v)
        else:
            assert id(tree[k]) == v[0]
            np.testing.assert_array_equal(tree[k], v[1])
    assert set(tree) == set(snap)


MAKERS = {
    "TD0Estimator": lambda net: AV.TD0Estimator(gamma=0.9, value_network=net),
    "TD1Estimator": lambda net: AV.TD1Estimator(gamma=0.9, value_network=net),
    "TDLambdaEstimator": lambda net: AV.TDLambdaEstimator(gamma=0.9, lmbda=0.8, value_network=net),
    "GAE": lambda net: AV.GAE(gamma=0.9, lmbda=0.8, value_network=net),
    "VTrace": lambda net: AV.VTrace(gamma=0.9, value_network=net, actor_network=lambda b: b["action_log_prob"] + 0.1),
}


def _expected(name, b, v, nv):
    n = b["next"]
    if name == "TD0Estimator":
        t = F.td0_return_estimate(0.9, nv, n["reward"], n["terminated"])
        return t - v, t
    if name == "TD1Estimator":
        t = F.td1_return_estimate(0.9, nv, n["reward"], n["done"], n["terminated"])
        return t - v, t
    if name == "TDLambdaEstimator":
        t = F.td_lambda_return_estimate(0.9, 0.8, nv, n["reward"], n["done"], n["terminated"])
        return t - v, t
    if name == "GAE":
        return F.generalized_advantage_estimate(0.9, 0.8, v, nv, n["reward"], n["done"], n["terminated"])
    lp = b["action_log_prob"]
    return F.vtrace_advantage_estimate(0.9, lp + 0.1, lp, v, nv, n["reward"], n["done"], n["terminated"])


@pytest.mark.parametrize("name", list(MAKERS))
def test_forward_returns_a_new_batch_and_never_mutates_the_input(name):
    b = _batch()
    snap = _snapshot(b)
    net = CountingNet()
    out = MAKERS[name](net)(b)
    _same(b, snap)  # same keys, same array objects, same values
    assert out is not b and out["next"] is not b["next"]
    v, nv = b["obs"] @ W, b["next"]["obs"] @ W
    adv, target = _expected(name, b, v, nv)
    np.testing.assert_allclose(out["advantage"], adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["value_target"], target, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["state_value"], v)
    np.testing.assert_allclose(out["next"]["state_value"], nv)
    assert out["next"]["reward"] is b["next"]["reward"]


@pytest.mark.parametrize("name", list(MAKERS))
def test_values_from_the_batch_without_network(name):
    b = _batch(with_values=True)
    out = MAKERS[name](None)(b)
    adv, target = _expected(name, b, b["state_value"], b["next"]["state_value"])
    np.testing.assert_allclose(out["advantage"], adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["value_target"], target, rtol=1e-12, atol=1e-12)
    del b["next"]["state_value"]
    with pytest.raises(KeyError, match=r"\('next', 'state_value'\)"):
        MAKERS[name](None)(b)


def test_skip_existing_reuses_values_and_the_default_reruns_the_network():
    b = _batch(with_values=True)
    net = CountingNet()
    out = AV.GAE(gamma=0.9, lmbda=0.8, value_network=net)(b)
    assert net.calls == 2
    np.testing.assert_allclose(out["state_value"], b["obs"] @ W)  # re-run, as TorchRL (skip_existing=None)
    out = AV.GAE(gamma=0.9, lmbda=0.8, value_network=net, skip_existing=True)(b)
    assert net.calls == 2
    assert out["state_value"] is b["state_value"]


def test_params_and_target_params_go_through_apply():
    b = _batch()
    net = CountingNet()
    w1, w2 = {"w": W * 2}, {"w": W * 3}
    est = AV.TD0Estimator(gamma=0.9, value_network=net)
    out = est(b, params=w1, target_params=w2)
    np.testing.assert_allclose(out["state_value"], b["obs"] @ (W * 2))
    np.testing.assert_allclose(out["next"]["state_value"], b["next"]["obs"] @ (W * 3))
    out = est(b, params=w1)  # target defaults to params
    np.testing.assert_allclose(out["next"]["state_value"], b["next"]["obs"] @ (W * 2))
    with pytest.raises(ValueError, match="both"):
        est(b, target_params=w2)
    target = est.value_estimate(b, target_params=w2)
    np.testing.assert_allclose(target, F.td0_return_estimate(0.9, b["next"]["obs"] @ (W * 3), b["next"]["reward"],
                                                             b["next"]["terminated"]))


def test_network_parameters_get_no_gradient_and_next_value_is_constant():
    b = _batch()
    net = CountingNet()
    est = AV.GAE(gamma=0.9, lmbda=0.8, value_network=net, differentiable=True)

    def f(params, nobs):
        bb = dict(b, next=dict(b["next"], obs=nobs))
        out = est(bb, params=params)
        xp = nobs.__array_namespace__()
        return xp.sum(out["advantage"]) + xp.sum(out["value_target"])

    _, (gp, gn) = value_and_grad(f, argnums=(0, 1))({"w": W}, b["next"]["obs"])
    np.testing.assert_array_equal(gp["w"], 0.0)
    np.testing.assert_array_equal(gn, 0.0)


@pytest.mark.parametrize("differentiable", [True, False])
def test_differentiable_flag(differentiable):
    b = _batch()
    est = AV.TDLambdaEstimator(gamma=0.9, lmbda=0.8, value_network=CountingNet(), differentiable=differentiable)
    out = est(dict(b, obs=Tensor(b["obs"]), next=dict(b["next"], reward=Tensor(b["next"]["reward"]))))
    for k in ("advantage", "value_target", "state_value"):
        assert is_taped(out[k]) == differentiable, k

    def f(obs, rew):
        o = est(dict(b, obs=obs, next=dict(b["next"], reward=rew)))
        xp = obs.__array_namespace__()
        return xp.sum(o["advantage"] * 1.5) if differentiable else xp.sum(obs) * 0.0

    if differentiable:
        _, (g_obs, g_rew) = value_and_grad(f, argnums=(0, 1))(b["obs"], b["next"]["reward"])
        ret = lambda r: F.td_lambda_return_estimate(0.9, 0.8, b["next"]["obs"] @ W, r, b["next"]["done"],  # noqa
                                                    b["next"]["terminated"])
        np.testing.assert_allclose(g_rew, value_and_grad(lambda r: r.__array_namespace__().sum(ret(r) * 1.5))(
            b["next"]["reward"])[1])
        np.testing.assert_allclose(g_obs, np.broadcast_to(-1.5 * W[:, 0], g_obs.shape))


def test_set_keys():
    b = _batch(with_values=True)
    b = {"v": b.pop("state_value"), **b, "next": {**b["next"], "v": b["next"].pop("state_value"),
                                                  "r": b["next"].pop("reward")}}
    est = AV.GAE(gamma=0.9, lmbda=0.8, value_network=None)
    est.set_keys(value="v", reward="r", advantage=("out", "adv"), value_target="tgt")
    out = est(b)
    adv, tgt = F.generalized_advantage_estimate(0.9, 0.8, b["v"], b["next"]["v"], b["next"]["r"], b["next"]["done"],
                                                b["next"]["terminated"])
    np.testing.assert_allclose(out["out"]["adv"], adv)
    np.testing.assert_allclose(out["tgt"], tgt)
    assert est.advantage_key == ("out", "adv") and est.value_key == "v"
    assert est.out_keys == [("out", "adv"), "tgt"]
    with pytest.raises(KeyError, match="not an accepted"):
        est.set_keys(foo="bar")
    with pytest.raises(ValueError, match="cannot be None"):
        est.set_keys(value=None)
    with pytest.raises(KeyError, match="not found in value network out_keys"):
        AV.GAE(gamma=0.9, lmbda=0.8, value_network=CountingNet()).set_keys(value="other")
    assert AV.GAE(gamma=0.9, lmbda=0.8, value_network=CountingNet()).in_keys == [
        ("obs",), ("next", "reward"), ("next", "done"), ("next", "terminated"), ("next", "obs")]


def test_time_dim_is_the_last_batch_dimension_by_default():
    b = _batch(shape=(3, 5), with_values=True)
    n = b["next"]
    for td, axis in [(None, 1), (-1, 1), (1, 1), (0, 0), (-2, 0)]:
        out = AV.TD1Estimator(gamma=0.9, value_network=None, time_dim=td)(b)
        want = F.td1_return_estimate(0.9, n["state_value"], n["reward"], n["done"], n["terminated"], time_dim=axis)
        np.testing.assert_allclose(out["value_target"], want)
    est = AV.GAE(gamma=0.9, lmbda=0.8, value_network=None)
    a0 = est(b, time_dim=0)["advantage"]
    np.testing.assert_allclose(a0, F.generalized_advantage_estimate(0.9, 0.8, b["state_value"], n["state_value"],
                                                                    n["reward"], n["done"], n["terminated"],
                                                                    time_dim=0)[0])
    with pytest.raises(ValueError, match="time_dim"):
        est(b, time_dim=2)
    flat = {"state_value": np.zeros((4, 1)), "next": {"state_value": np.ones((4, 1)), "reward": np.ones((4, 1)),
                                                        "done": np.zeros((4, 1), bool)}}
    # a [B] replay batch is one trajectory of length B (TorchRL's behaviour)
    out = AV.TD1Estimator(gamma=0.5, value_network=None)(flat)
    np.testing.assert_allclose(out["value_target"][:, 0], [1.9375, 1.875, 1.75, 1.5])
    with pytest.raises(ValueError, match="at least one batch dimension"):
        AV.TD1Estimator(gamma=0.5, value_network=None)({"state_value": np.zeros((1,)), "next": {
            "state_value": np.zeros((1,)), "reward": np.zeros((1,)), "done": np.zeros((1,), bool)}})


def test_steps_to_next_obs_and_terminated_default():
    b = _batch(with_values=True)
    del b["next"]["terminated"]
    b["steps_to_next_obs"] = np.array([[1, 2, 3, 1, 1, 2], [2, 2, 2, 2, 2, 2]])
    out = AV.TD0Estimator(gamma=0.9, value_network=None)(b)
    g = 0.9 ** b["steps_to_next_obs"][..., None].astype(float)
    n = b["next"]
    np.testing.assert_allclose(out["value_target"], F.td0_return_estimate(g, n["state_value"], n["reward"], n["done"]))


def test_average_rewards_and_average_gae():
    b = _batch(with_values=True)
    n = b["next"]
    out = AV.TD0Estimator(gamma=0.9, value_network=None, average_rewards=True)(b)
    r = (n["reward"] - n["reward"].mean()) / n["reward"].std(ddof=1)
    np.testing.assert_allclose(out["next"]["reward"], r)
    assert b["next"]["reward"] is n["reward"] and not np.allclose(n["reward"], r)
    out = AV.GAE(gamma=0.9, lmbda=0.8, value_network=None, average_gae=True)(b)
    adv, tgt = F.generalized_advantage_estimate(0.9, 0.8, b["state_value"], n["state_value"], n["reward"], n["done"],
                                                n["terminated"])
    np.testing.assert_allclose(out["advantage"], (adv - adv.mean()) / adv.std(ddof=1))
    np.testing.assert_allclose(out["value_target"], tgt)  # the raw advantage
    groups = np.array([0, 1])
    out = AV.GAE(gamma=0.9, lmbda=0.8, value_network=None, average_gae=True, group_key="task")(dict(b, task=groups))
    for gi in range(2):
        a = adv[gi]
        np.testing.assert_allclose(out["advantage"][gi], (a - a.mean()) / a.std(ddof=1))
    with pytest.raises(KeyError, match="group_key"):
        AV.GAE(gamma=0.9, lmbda=0.8, value_network=None, average_gae=True, group_key="task")(b)


def test_multi_agent_gae_broadcasts_team_signals():
    rng = np.random.default_rng(0)
    B, T, n = 2, 5, 3
    v, nv = rng.normal(size=(B, T, n, 1)), rng.normal(size=(B, T, n, 1))
    r, d = rng.normal(size=(B, T, 1)), rng.random((B, T, 1)) < 0.3
    b = {"state_value": v, "next": {"state_value": nv, "reward": r, "done": d, "terminated": d}}
    out = AV.MultiAgentGAE(gamma=0.9, lmbda=0.8, value_network=None)(b)
    for a in range(n):
        adv, _ = F.generalized_advantage_estimate(0.9, 0.8, v[:, :, a], nv[:, :, a], r, d, d)
        np.testing.assert_allclose(out["advantage"][:, :, a], adv)
    bad = dict(b, next=dict(b["next"], reward=r[..., 0]))
    with pytest.raises(ValueError, match="one fewer"):
        AV.MultiAgentGAE(gamma=0.9, lmbda=0.8, value_network=None)(bad)
    out = AV.MultiAgentGAE(gamma=0.9, lmbda=0.8, value_network=None, average_gae=True)(b)
    np.testing.assert_allclose(out["advantage"].mean(axis=(0, 1, 3)), 0.0, atol=1e-12)


def test_auto_reset_env():
    b = _batch(with_values=True)
    b["next"]["truncated"] = b["next"]["done"] & ~b["next"]["terminated"]
    n = b["next"]
    out = AV.GAE(gamma=0.9, lmbda=0.8, value_network=None, auto_reset_env=True)(b)
    r = n["reward"] + 0.9 * b["state_value"] * n["truncated"]
    adv, _ = F.generalized_advantage_estimate(0.9, 0.8, b["state_value"], n["state_value"], r, n["done"], n["done"])
    np.testing.assert_allclose(out["advantage"], adv)


def test_vtrace_options():
    b = _batch(with_values=True)
    with pytest.raises(NotImplementedError, match="scalar"):
        AV.VTrace(gamma=np.ones((2, 6, 1)), actor_network=lambda x: x, value_network=None)
    with pytest.raises(TypeError):
        AV.VTrace(gamma=0.9, actor_network=None, value_network=None)
    lp = b["action_log_prob"]
    est = AV.VTrace(gamma=0.9, actor_network=lambda x: {"action_log_prob": x["action_log_prob"] * 0.5},
                    value_network=None, rho_thresh=1.1)
    out = est(b)
    n = b["next"]
    adv, vs = F.vtrace_advantage_estimate(0.9, lp * 0.5, lp, b["state_value"], n["state_value"], n["reward"],
                                          n["done"], n["terminated"], rho_thresh=1.1)
    np.testing.assert_allclose(out["advantage"], adv)
    np.testing.assert_allclose(est.value_estimate(b), vs)
    assert est.in_keys[-1] == "action_log_prob"


def test_value_network_inputs_chunks_and_nan_next_observations():
    b = _batch(shape=(4, 6))
    net = KeyedModule(lambda o: o @ W, in_keys=["obs"], out_keys=["state_value"])
    ref = AV.GAE(gamma=0.9, lmbda=0.8, value_network=net)(b)
    for kw in ({"value_chunk_size": 3}, {"num_chunks": 3}, {"num_chunk": 2, "value_chunk_dim": 1}):
        out = AV.GAE(gamma=0.9, lmbda=0.8, value_network=net, **kw)(b)
        np.testing.assert_array_equal(out["advantage"], ref["advantage"])
    nobs = b["next"]["obs"].copy()
    nobs[0, 2] = np.nan
    out = AV.GAE(gamma=0.9, lmbda=0.8, value_network=net)(dict(b, next=dict(b["next"], obs=nobs)))
    np.testing.assert_allclose(out["next"]["state_value"][0, 2], b["obs"][0, 2] @ W)
    assert np.all(np.isfinite(out["advantage"]))
    with pytest.raises(ValueError, match="cannot both"):
        AV.GAE(gamma=0.9, lmbda=0.8, value_network=net, value_chunk_size=2, num_chunks=2)


def test_keyword_call_returns_advantage_and_target():
    b = _batch(with_values=True)
    est = AV.GAE(gamma=0.9, lmbda=0.8, value_network=None)
    adv, tgt = est(state_value=b["state_value"], next_state_value=b["next"]["state_value"],
                   next_reward=b["next"]["reward"], next_done=b["next"]["done"],
                   next_terminated=b["next"]["terminated"])
    out = est(b)
    np.testing.assert_array_equal(adv, out["advantage"])
    np.testing.assert_array_equal(tgt, out["value_target"])


def test_constructor_errors_and_deprecated_names():
    with pytest.raises(RuntimeError, match="set_keys"):
        AV.GAE(gamma=0.9, lmbda=0.9, value_network=None, advantage_key="a")
    with pytest.raises(TypeError, match="value_network"):
        AV.GAE(gamma=0.9, lmbda=0.9, value_network=3)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        est = AV.TD0Estimate(gamma=0.9, value_network=None)
    assert isinstance(est, AV.TD0Estimator)
    with pytest.raises(TypeError, match="batch"):
        AV.GAE(gamma=0.9, lmbda=0.9, value_network=None)([1, 2])


def test_registry():
    VE = AV.ValueEstimators
    for alias, member in [("td0", VE.TD0), ("TD1", VE.TD1), ("tdlambda", VE.TDLambda), ("TDLambda", VE.TDLambda),
                          ("gae", VE.GAE), ("MAGAE", VE.MAGAE), ("vtrace", VE.VTrace)]:
        assert AV.coerce_value_type(alias) is member
    with pytest.raises(KeyError, match="Unknown value estimator alias"):
        AV.coerce_value_type("td2")
    with pytest.raises(ValueError):
        AV.coerce_value_type("td2")
    kw = AV.default_value_kwargs("gae")
    assert kw == {"gamma": 0.99, "lmbda": 0.95, "differentiable": True}
    kw["gamma"] = 0.5
    assert AV.default_value_kwargs(VE.GAE)["gamma"] == 0.99
    assert AV.default_value_kwargs("td0") == {"gamma": 0.99, "differentiable": True}
    assert AV.get_value_estimator_entry("tdlambda").cls is AV.TDLambdaEstimator

    class Loss:
        critic_network = None
        value_network = CountingNet()
        actor_network = staticmethod(lambda b: b["action_log_prob"])
        gamma = 0.7

    loss = Loss()
    est = AV.dispatch_value_estimator(loss, "gae", supported=[VE.GAE, VE.TD0], tensor_keys={"advantage": "adv"})
    assert isinstance(est, AV.GAE) and est.gamma == 0.7 and est.lmbda == 0.95 and est.differentiable
    assert est.value_network is Loss.value_network and est.advantage_key == "adv"
    assert loss.value_type is VE.GAE and loss._value_estimator is est
    with pytest.raises(NotImplementedError, match="Supported value types"):
        AV.dispatch_value_estimator(loss, "vtrace", supported=[VE.GAE])
    vt = AV.build_value_estimator(loss, "vtrace")
    assert vt.actor_network is Loss.actor_network
