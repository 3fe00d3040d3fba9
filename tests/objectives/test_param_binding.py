"""Who owns parameters: modules, composites and losses share one live binding (issue 8, item 1).

Each test here failed on the design where composites and losses captured the tree when they were built: training
through ``loss.params = ...`` left ``actor(obs)`` acting with the initial weights.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import arrayrl.objectives as O
from arrayrl import Generator
from arrayrl.distributions import TanhNormal
from arrayrl.nn import (MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor, QValueActor, QValueModule,
                        Sequential, ValueOperator)
from arrayrl.optim import Adam
from arrayrl.tree import tree_map


def _shift(tree, by):
    return tree_map(lambda a: a + by, tree)


def _batch(rng, B=8):
    term = rng.uniform(size=(B, 1)) < 0.3
    return {"observation": rng.normal(size=(B, 3)), "action": rng.integers(0, 2, B),
            "next": {"observation": rng.normal(size=(B, 3)), "reward": rng.normal(size=(B, 1)), "done": term,
                     "terminated": term}}


def _greedy(w_tree, obs):
    """Hand-written forward of MLP(3 -> 8 -> 2, tanh) and its greedy action (the golden, independent of nn)."""
    h = np.tanh(obs @ w_tree["0"]["weight"].T + w_tree["0"]["bias"])
    q = h @ w_tree["2"]["weight"].T + w_tree["2"]["bias"]
    return q, q.argmax(-1)


def _dqn(delay=True):
    qnet = MLP(in_features=3, out_features=2, num_cells=[8])
    actor = QValueActor(qnet, in_keys=["observation"], action_space="categorical")
    return qnet, actor, O.DQNLoss(actor, action_space="categorical", delay_value=delay)


def test_trained_parameters_reach_the_actor_and_the_inner_network():
    rng = np.random.default_rng(0)
    qnet, actor, loss = _dqn()
    opt = Adam(lr=0.1)
    state = opt.init(loss.params)
    batch = _batch(rng)
    for _ in range(3):
        _, grads = loss.value_and_grad(batch)
        loss.params, state = opt.update(grads, state, loss.params)
    trained = loss.params["value_network"]["0"]
    obs = rng.normal(size=(16, 3))
    q, a = _greedy(trained, obs)
    out = actor({"observation": obs})
    np.testing.assert_allclose(out["action_value"], q, rtol=1e-12)
    np.testing.assert_array_equal(out["action"], a)
    assert qnet.params is trained  # one owner: the leaf network holds the trained tree
    np.testing.assert_allclose(loss.policy({"observation": obs})["action_value"], q, rtol=1e-12)


def test_assigning_the_inner_network_is_seen_by_wrappers_and_the_loss():
    qnet, actor, loss = _dqn(delay=False)
    new = _shift(qnet.params, 1.0)
    qnet.params = new
    assert actor.params["0"] is new
    assert loss.params["value_network"]["0"] is new
    obs = np.ones((2, 3))
    np.testing.assert_allclose(actor({"observation": obs})["action_value"], _greedy(new, obs)[0], rtol=1e-12)


def test_keyed_module_views_and_owns():
    mlp = MLP(in_features=3, out_features=1, num_cells=[4])
    view = KeyedModule(mlp, in_keys=["observation"], out_keys=["v"])
    view.params = _shift(mlp.params, 2.0)  # writes through to the module
    assert view.params is mlp.params
    own = KeyedModule(lambda p, o: mlp.apply(p, o), params=mlp.params, in_keys=["observation"], out_keys=["v"])
    before = mlp.params
    own.params = _shift(before, 1.0)  # explicit params: the keyed module owns its tree
    assert mlp.params is before and own.params is not before


def test_sequential_params_write_through_and_reject_wrong_keys():
    mlp = MLP(in_features=3, out_features=2, num_cells=[4])
    seq = Sequential(KeyedModule(mlp, in_keys=["observation"], out_keys=["action_value"]),
                     QValueModule("categorical"))
    new = _shift(mlp.params, 3.0)
    seq.params = {"0": new, "1": {}}
    assert mlp.params is new
    with pytest.raises(ValueError, match=r"params: expected a dict with keys \['0', '1'\]"):
        seq.params = {"0": new}
    with pytest.raises(ValueError, match="QValueModule has no parameters"):
        seq.params = {"0": new, "1": {"w": np.ones(2)}}


def test_loss_params_setter_checks_structure_shapes_and_dtypes():
    _, _, loss = _dqn()
    good = loss.params
    with pytest.raises(ValueError, match="expected the networks"):
        loss.params = {"other": good["value_network"]}
    bad = copy.deepcopy(good)
    bad["value_network"]["0"]["0"]["bias"] = np.ones(1)
    with pytest.raises(ValueError, match=r"params\['value_network'\]\.0\.0\.bias: expected shape \(8,\), got \(1,\)"):
        loss.params = bad
    bad = tree_map(lambda a: a.astype(np.float32), good)
    with pytest.raises(ValueError, match="expected dtype float64, got float32"):
        loss.params = bad


def test_target_params_are_public_and_copied():
    _, _, loss = _dqn(delay=True)
    tree = _shift(loss.params["value_network"], 5.0)
    loss.target_params = {"value_network": tree}
    got = loss.target_params["value_network"]
    np.testing.assert_array_equal(got["0"]["0"]["weight"], tree["0"]["0"]["weight"])
    assert got["0"]["0"]["weight"] is not tree["0"]["0"]["weight"]  # a copy: the caller's tree is not held
    tree["0"]["0"]["weight"][...] = 0.0
    assert np.all(loss.target_params["value_network"]["0"]["0"]["weight"] != 0.0)
    with pytest.raises(ValueError, match=r"target_params\['value_network'\]\.0\.0\.weight: expected shape"):
        loss.target_params = {"value_network": {"0": {"0": {"weight": np.ones((1, 1)), "bias": np.ones(8)},
                                                      "2": tree["0"]["2"]}, "1": {}}}
    _, _, online_only = _dqn(delay=False)
    with pytest.raises(KeyError, match="has no delayed target"):
        online_only.target_params = {"value_network": online_only.params["value_network"]}


def test_named_param_attributes_write_through():
    qnet, actor, loss = _dqn(delay=True)
    new = _shift(loss.value_network_params, 1.0)
    loss.value_network_params = new  # used to create a shadowing instance attribute
    assert loss.params["value_network"]["0"] is new["0"] and qnet.params is new["0"]
    loss.target_value_network_params = _shift(new, 1.0)
    np.testing.assert_allclose(loss.target_params["value_network"]["0"]["0"]["bias"], new["0"]["0"]["bias"] + 1.0)


def test_target_updaters_move_only_targets_and_hard_update_copies():
    qnet, actor, loss = _dqn(delay=True)
    upd = O.HardUpdate(loss, value_network_update_interval=1)
    loss.params = {"value_network": _shift(loss.params["value_network"], 1.0)}
    upd.step()
    upd.step()
    np.testing.assert_array_equal(loss.target_params["value_network"]["0"]["0"]["weight"], qnet.params["0"]["weight"])
    assert loss.target_params["value_network"]["0"]["0"]["weight"] is not qnet.params["0"]["weight"]


def test_loss_owned_ensemble_does_not_touch_the_template():
    net = MLP(in_features=3, out_features=4, num_cells=[8])
    ext = NormalParamExtractor()
    module = Sequential(KeyedModule(net, in_keys=["observation"], out_keys=["params"]),
                        KeyedModule(ext, in_keys=["params"], out_keys=["loc", "scale"]))
    actor = ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=TanhNormal)
    q = ValueOperator(MLP(in_features=5, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    v = ValueOperator(MLP(in_features=3, out_features=1, num_cells=[8]), in_keys=["observation"])
    loss = O.IQLLoss(actor, q, v, num_qvalue_nets=2, generator=Generator(1))
    template = q.params
    new = _shift(loss.params["qvalue_network"], 1.0)
    loss.params = {**loss.params, "qvalue_network": new}
    assert q.params is template  # the stacked ensemble belongs to the loss, not to the template critic
    assert loss.params["qvalue_network"] is new
    actor_new = _shift(loss.params["actor_network"], 0.5)
    loss.params = {**loss.params, "actor_network": actor_new}
    assert net.params is actor_new["0"]["0"]  # the actor's leaf network is trained in place of a copy
    assert loss.policy is actor


def test_get_stateful_net_live_and_snapshot():
    qnet, actor, loss = _dqn()
    live = loss.get_stateful_net("value_network", copy=False)
    snap = loss.get_stateful_net("value_network", copy=True)
    loss.params = {"value_network": _shift(loss.params["value_network"], 1.0)}
    assert live.params["0"] is qnet.params
    assert not np.allclose(snap.params["0"]["0"]["weight"], qnet.params["0"]["weight"])


def test_loss_without_policy_says_so():
    class Bare(O.LossModule):
        _POLICY_NETWORK = None

    with pytest.raises(AttributeError, match="Bare has no policy network"):
        Bare().policy


def test_assigning_taped_leaves_stores_raw_arrays():
    """``loss.params = tree`` strips the tape from taped leaves (a tree built inside a differentiated function, or
    constants wrapped as Tensors): the networks keep raw arrays, which act without a tape."""
    from arrayrl.autodiff import Tensor

    qnet, actor, loss = _dqn()
    taped = tree_map(lambda a: Tensor(a + 1.0), loss.params)
    loss.params = taped
    for leaf in [qnet.params["0"]["weight"], qnet.params["2"]["bias"], loss.params["value_network"]["0"]["0"]["bias"]]:
        assert type(leaf) is np.ndarray
    np.testing.assert_array_equal(qnet.params["0"]["weight"], taped["value_network"]["0"]["0"]["weight"].value)
