"""The acting fast paths keep their checks: the MLP/Linear parameter check is skipped only for the module's own
tree object already checked, the keyed modules' plain-dict reads/writes give the same results and errors, and the
optimiser's cached leaf checks still reject taped or non-floating leaves."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import nn
from arrayrl.autodiff import Tensor
from arrayrl.optim import Adam
from arrayrl.random import Generator


def _bad_bias(tree):
    bad = {k: dict(v) for k, v in tree.items()}
    bad["2"]["bias"] = np.zeros((1,), np.float32)
    return bad


@pytest.mark.parametrize("cls", ["mlp", "linear"])
def test_parameter_check_runs_again_for_a_new_tree(cls):
    x = np.ones((3, 4), np.float32)
    if cls == "mlp":
        net = nn.MLP(4, 2, num_cells=[8], generator=Generator(0), dtype=np.float32)
        bad, msg = _bad_bias(net.params), r"params\['2'\]\['bias'\]: expected shape \(2,\), got \(1,\)"
    else:
        net = nn.Linear(4, 2, generator=Generator(0), dtype=np.float32)
        bad, msg = {"weight": net.params["weight"], "bias": np.zeros((1,), np.float32)}, r"expected shape \(2,\)"
    good = net.params
    y = net(x)
    np.testing.assert_array_equal(net(x), y)  # the cached path: same values
    with pytest.raises(ValueError, match=msg):  # another tree passed explicitly is checked
        net.apply(bad, x)
    net.params = bad  # a new own tree (an optimiser step, loss.params = new) is checked at its first use
    with pytest.raises(ValueError, match=msg):
        net(x)
    net.params = good
    np.testing.assert_array_equal(net(x), y)


def test_keyed_plain_dict_paths_same_results_and_errors():
    mlp = nn.MLP(4, 2, num_cells=[8], activation_class="relu", generator=Generator(0), dtype=np.float32)
    actor = nn.QValueActor(mlp, in_keys=[("agent", "observation")], action_space="categorical")
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    batch = {"agent": {"observation": obs}}
    out = actor(batch)
    q = mlp(obs)
    np.testing.assert_array_equal(out["action_value"], q)
    np.testing.assert_array_equal(out["action"], np.argmax(q, -1))
    assert out["action"].dtype == np.int64
    np.testing.assert_array_equal(out["chosen_action_value"][:, 0], q.max(-1))
    assert batch == {"agent": {"observation": obs}}  # not mutated
    value = nn.KeyedModule(mlp, in_keys=["observation"], out_keys=[("next", "q")])
    res = value({"observation": obs, "next": {"r": obs[:, :1]}})
    assert set(res["next"]) == {"r", "q"}
    np.testing.assert_array_equal(res["next"]["q"], q)
    with pytest.raises(KeyError, match=r"key 'observation' \(in_key of KeyedModule\) not found in the batch; keys "
                                       r"present: 'obs'"):
        value({"obs": obs})
    with pytest.raises(TypeError, match="batch: expected a"):
        value([obs])


def test_adam_cached_leaf_checks_still_reject_bad_leaves():
    params = {"w": np.ones((2, 2), np.float32)}
    opt = Adam(lr=0.1)
    state = opt.init(params)
    grads = {"w": np.full((2, 2), 0.5, np.float32)}
    new, state2 = opt.update(grads, state, params)  # float32 numpy leaves are now known good
    assert new["w"].dtype == np.float32
    with pytest.raises(TypeError, match=r"params\['w'\]: the optimiser takes raw arrays"):
        opt.update(grads, state, {"w": Tensor(params["w"])})
    with pytest.raises(TypeError, match=r"grads\['w'\]"):
        opt.update({"w": np.ones((2, 2), np.int64)}, state, params)
    with pytest.raises(TypeError, match=r"params\['w'\]"):
        opt.update(grads, state, {"w": np.ones((2, 2), np.int32)})
