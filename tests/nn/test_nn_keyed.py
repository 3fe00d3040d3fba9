"""Keyed modules: batches in, new batches out; TorchRL's key names, outputs and dtypes."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl.distributions as D
import arrayrl.nn as nn
from arrayrl import namespace_of
from arrayrl.autodiff import value_and_grad
from arrayrl.random import Generator
from arrayrl.testing import assert_allclose


def _actor(return_log_prob=True, **dist_kwargs):
    net = nn.Sequential(
        nn.KeyedModule(nn.MLP(4, 4, num_cells=[8]), in_keys=["observation"], out_keys=["hidden"]),
        nn.KeyedModule(nn.NormalParamExtractor(), in_keys=["hidden"], out_keys=["loc", "scale"]),
    )
    return nn.ProbabilisticActor(net, in_keys=["loc", "scale"], distribution_class=D.TanhNormal,
                                 distribution_kwargs=dist_kwargs, return_log_prob=return_log_prob)


def test_keyed_module_returns_a_new_batch():
    value = nn.ValueOperator(nn.MLP(3, 1, num_cells=[5]))
    assert value.out_keys == [("state_value",)]
    batch = {"observation": np.ones((2, 3)), "next": {"observation": np.zeros((2, 3))}}
    out = value(batch)
    assert set(batch) == {"observation", "next"}  # caller's dict untouched
    assert out["state_value"].shape == (2, 1) and out["next"] is batch["next"]
    nested = nn.ValueOperator(nn.MLP(3, 1), in_keys=[("next", "observation")], out_keys=[("next", "state_value")])
    out = nested(batch)
    assert "state_value" not in batch["next"] and out["next"]["state_value"].shape == (2, 1)
    q = nn.ValueOperator(nn.MLP(5, 1), in_keys=["observation", "action"])
    assert q.out_keys == [("state_action_value",)]
    assert q({"observation": np.ones((2, 3)), "action": np.ones((2, 2))})["state_action_value"].shape == (2, 1)


def test_keyed_module_errors():
    value = nn.ValueOperator(nn.MLP(3, 1))
    with pytest.raises(KeyError, match="'observation'.*keys present: 'obs'"):
        value({"obs": np.ones((2, 3))})
    two = nn.KeyedModule(lambda x: x, in_keys=["a"], out_keys=["b", "c"])
    with pytest.raises(ValueError, match="out_keys: 2 keys"):
        two({"a": np.ones(2)})
    with pytest.raises(KeyError, match="'mu'"):
        nn.ProbabilisticActor(nn.KeyedModule(lambda x: (x, x), in_keys=["o"], out_keys=["loc", "scale"]),
                              in_keys=["mu", "scale"], distribution_class=D.Normal)
    actor = nn.ProbabilisticActor(nn.KeyedModule(lambda x: (x, x), in_keys=["o"], out_keys=["loc", "sigma"]),
                                  in_keys=["loc", "sigma"], distribution_class=D.Normal)
    with pytest.raises(TypeError, match="in_keys: the distribution arguments \\['loc', 'sigma'\\]"):
        actor({"o": np.ones(2)})
    with pytest.raises(ValueError, match="generator"):
        _actor()({"observation": np.ones((2, 4))}, interaction_type="random")
    with pytest.raises(ValueError, match="interaction_type"):
        _actor()({"observation": np.ones((2, 4))}, interaction_type="greedy")
    with pytest.raises(TypeError, match="batch"):
        value(np.ones(3))


def test_probabilistic_actor_random_and_log_prob(xp):
    actor = _actor()
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 4))
    params = nn.params_map(lambda a: xp.from_numpy(a), actor.params)
    batch = {"observation": xp.from_numpy(obs)}
    noise = rng.normal(size=(5, 2))
    out = actor.apply(params, batch, generator=Generator.from_noise(xp.from_numpy(noise)), interaction_type="random")
    dist = actor.get_dist(params, batch)
    a_ref = dist.rsample(noise=xp.from_numpy(noise))
    assert_allclose(out["action"], xp.to_numpy(a_ref), rtol=xp.rtol, atol=xp.atol)
    assert_allclose(out["action_log_prob"], xp.to_numpy(dist.log_prob(a_ref)), rtol=xp.rtol * 100, atol=xp.atol * 100)
    assert tuple(out["action_log_prob"].shape) == (5,)
    det = actor.apply(params, batch)
    assert_allclose(det["action"], xp.to_numpy(dist.deterministic_sample), rtol=xp.rtol, atol=xp.atol)
    assert_allclose(actor.log_prob(params, det), xp.to_numpy(det["action_log_prob"]), rtol=xp.rtol, atol=xp.atol)


def test_probabilistic_actor_params_are_differentiable():
    actor = _actor(return_log_prob=False)
    obs = np.random.default_rng(0).normal(size=(5, 4))
    action = np.tanh(np.random.default_rng(1).normal(size=(5, 2)))

    def f(p):
        lp = actor.log_prob(p, {"observation": obs, "action": action})
        return namespace_of(lp).sum(lp)

    val, g = value_and_grad(f)(actor.params)
    assert set(g) == {"0", "1"} and g["0"]["0"]["0"]["weight"].shape == (8, 4)
    # finite differences on one weight
    eps = 1e-6
    p2 = nn.copy_params(actor.params)
    p2["0"]["0"]["0"]["weight"] = p2["0"]["0"]["0"]["weight"] + np.eye(8, 4) * eps
    p3 = nn.copy_params(actor.params)
    p3["0"]["0"]["0"]["weight"] = p3["0"]["0"]["0"]["weight"] - np.eye(8, 4) * eps
    fd = (float(f(p2)) - float(f(p3))) / (2 * eps)
    assert fd == pytest.approx(float(np.sum(g["0"]["0"]["0"]["weight"] * np.eye(8, 4))), rel=1e-6)


QV = np.array([[1.0, 3.0, 3.0, 0.0], [0.5, -1.0, 2.0, 4.0], [2.0, 1.0, 0.0, -1.0]])
MASK = np.array([[True, False, True, True], [True, True, True, False], [False, True, True, True]])


@pytest.mark.parametrize("space", ["one_hot", "categorical", "mult_one_hot"])
def test_qvalue_module_on_every_backend(xp, space):
    m = nn.QValueModule(space, var_nums=2 if space == "mult_one_hot" else None)
    q = xp.from_numpy(QV)
    out = m({"action_value": q})
    a, c = xp.to_numpy(out["action"]), xp.to_numpy(out["chosen_action_value"])
    if space == "categorical":
        np.testing.assert_array_equal(a, [1, 3, 0])
        np.testing.assert_array_equal(c, [[3.0], [4.0], [2.0]])
    elif space == "one_hot":
        np.testing.assert_array_equal(a, [[0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
        np.testing.assert_array_equal(c, [[6.0], [4.0], [2.0]])  # ties sum, as TorchRL
    else:
        np.testing.assert_array_equal(a, [[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 1, 0]])
    assert "int64" in str(out["action"].dtype) and out["chosen_action_value"].dtype == xp.float_dtype


def test_qvalue_chosen_value_is_differentiable():
    m = nn.QValueModule("one_hot")

    def f(q):
        c = m({"action_value": q})["chosen_action_value"]
        return namespace_of(c).sum(c)

    _, g = value_and_grad(f)(QV)
    np.testing.assert_array_equal(g, [[0, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]])
    with pytest.raises(NotImplementedError, match="binary"):
        nn.QValueModule("binary")
    with pytest.raises(ValueError, match="var_nums"):
        nn.QValueModule("mult_one_hot")
    with pytest.raises(ValueError, match="action_space"):
        nn.QValueModule("discrete")
    with pytest.raises(KeyError, match="'action_value'"):
        m({"q": QV})


# ------------------------------------------------------------------------------------------------ TorchRL
@pytest.fixture
def torch64():
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(old)


@pytest.mark.torchrl
@pytest.mark.parametrize("space", ["one-hot", "categorical", "mult-one-hot"])
@pytest.mark.parametrize("masked", [False, True])
def test_qvalue_module_matches_torchrl(torch64, space, masked):
    torch = torch64
    from tensordict import TensorDict
    from torchrl.modules import QValueModule as TQ

    kw = dict(var_nums=2) if space == "mult-one-hot" else {}
    if masked:
        kw["action_mask_key"] = "mask"
    tq = TQ(action_space=space, **kw)
    td = TensorDict({"action_value": torch.tensor(QV), "mask": torch.tensor(MASK)}, [3])
    out_t = tq(td.clone())
    out_a = nn.QValueModule(space, **kw)({"action_value": QV, "mask": MASK})
    for k in ("action", "action_value", "chosen_action_value"):
        np.testing.assert_array_equal(out_a[k], out_t[k].numpy(), err_msg=k)
        assert str(out_a[k].dtype) == str(out_t[k].dtype).replace("torch.", ""), k


@pytest.mark.torchrl
def test_qvalue_actor_matches_torchrl(torch64):
    torch = torch64
    from tensordict import TensorDict
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import QValueActor as TQA

    from arrayrl.interop import params_from_torch

    tm = TMLP(in_features=4, out_features=3, num_cells=[6])
    actor_t = TQA(tm, in_keys=["observation"], action_space="categorical")
    obs = np.random.default_rng(0).normal(size=(5, 4))
    out_t = actor_t(TensorDict({"observation": torch.tensor(obs)}, [5]))
    actor_a = nn.QValueActor(nn.MLP(4, 3, num_cells=[6]), action_space="categorical")
    params = {"0": params_from_torch(tm), "1": {}}
    out_a = actor_a.apply(params, {"observation": obs})
    np.testing.assert_array_equal(out_a["action"], out_t["action"].numpy())
    np.testing.assert_allclose(out_a["chosen_action_value"], out_t["chosen_action_value"].detach().numpy(), rtol=1e-12)


@pytest.mark.torchrl
def test_probabilistic_actor_matches_torchrl(torch64):
    """TanhNormal actor built in TorchRL, weights copied: deterministic action, action_log_prob and its gradients."""
    torch = torch64
    from tensordict import TensorDict
    from tensordict.nn import NormalParamExtractor as TNPE
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import ProbabilisticActor as TPA
    from torchrl.modules import TanhNormal as TTN

    from arrayrl.interop import params_from_torch

    tm = TMLP(in_features=4, out_features=4, num_cells=[8])
    t_actor = TPA(TensorDictModule(torch.nn.Sequential(tm, TNPE()), in_keys=["observation"], out_keys=["loc", "scale"]),
                  in_keys=["loc", "scale"], distribution_class=TTN,
                  distribution_kwargs={"low": -2.0, "high": 1.0}, return_log_prob=True)
    a_actor = _actor(low=-2.0, high=1.0)
    params = {"0": {"0": params_from_torch(tm), "1": {}}, "1": {}}
    obs = np.random.default_rng(0).normal(size=(5, 4)) * 2
    out_t = t_actor(TensorDict({"observation": torch.tensor(obs)}, [5]))
    out_a = a_actor.apply(params, {"observation": obs})
    assert "action_log_prob" in out_t.keys() and a_actor.log_prob_key == ("action_log_prob",)
    np.testing.assert_allclose(out_a["action"], out_t["action"].detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out_a["action_log_prob"], out_t["action_log_prob"].detach().numpy(), rtol=1e-10, atol=1e-9)
    action = np.tanh(np.random.default_rng(1).normal(size=(5, 2))) * 1.5 - 0.5

    def f(p):
        lp = a_actor.log_prob(p, {"observation": obs, "action": action})
        return namespace_of(lp).sum(lp)

    _, g = value_and_grad(f)(params)
    td = TensorDict({"observation": torch.tensor(obs), "action": torch.tensor(action)}, [5])
    t_actor.get_dist(td).log_prob(td["action"]).sum().backward()
    for name, prm in tm.named_parameters():
        np.testing.assert_allclose(nn.flatten_params(g["0"]["0"])[name], prm.grad.numpy(), rtol=1e-9, atol=1e-11)
