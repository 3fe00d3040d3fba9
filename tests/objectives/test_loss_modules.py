"""LossModule machinery, target updaters, bad input, batch mutation, divergences (torchrl_compat), doctests and
short training runs."""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest

import arrayrl.objectives as O
from arrayrl.distributions import TanhNormal
from arrayrl.nn import MLP, KeyedModule, Linear, NormalParamExtractor, ProbabilisticActor, QValueActor, ValueOperator
from arrayrl.nn.multiagent import QMixer, VDNMixer
from arrayrl.nn.params import flatten_params
from arrayrl.objectives.utils import next_state_value, reduce_loss


def _dqn_batch(rng, B=6, nobs=3, nA=4, space="categorical"):
    a = rng.integers(0, nA, B) if space == "categorical" else np.eye(nA, dtype=bool)[rng.integers(0, nA, B)]
    term = rng.uniform(size=(B, 1)) < 0.3
    return {"observation": rng.normal(size=(B, nobs)), "action": a,
            "next": {"observation": rng.normal(size=(B, nobs)), "reward": rng.normal(size=(B, 1)), "done": term,
                     "terminated": term}}


def _dqn(space="categorical", **kw):
    return O.DQNLoss(QValueActor(MLP(in_features=3, out_features=4, num_cells=[8]), action_space=space),
                     action_space=space, **kw)


def _iql(**kw):
    n_obs, n_act = 3, 2
    net = MLP(in_features=n_obs, out_features=2 * n_act, num_cells=[8])
    ext = NormalParamExtractor()
    module = KeyedModule(lambda p, o: ext.apply({}, net.apply(p, o)), params=net.params, in_keys=["observation"],
                         out_keys=["loc", "scale"])
    actor = ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=TanhNormal)
    q = ValueOperator(MLP(in_features=n_obs + n_act, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    v = ValueOperator(MLP(in_features=n_obs, out_features=1, num_cells=[8]), in_keys=["observation"])
    return O.IQLLoss(actor, q, v, **kw)


def _iql_batch(rng, B=5):
    term = rng.uniform(size=(B, 1)) < 0.3
    return {"observation": rng.normal(size=(B, 3)), "action": rng.uniform(-0.9, 0.9, size=(B, 2)),
            "next": {"observation": rng.normal(size=(B, 3)), "reward": rng.normal(size=(B, 1)), "done": term,
                     "terminated": term}}


# ------------------------------------------------------------------------------------------------ machinery
def test_set_keys_and_errors():
    loss = _dqn()
    loss.set_keys(reward="r", action=("a", "b"))
    assert loss.tensor_keys.reward == "r" and loss.tensor_keys.action == ("a", "b")
    loss.set_keys(reward=None)
    assert loss.tensor_keys.reward == "reward"
    with pytest.raises(ValueError, match="not_a_key is not an accepted key"):
        loss.set_keys(not_a_key="x")


def test_renamed_keys_are_read():
    rng = np.random.default_rng(0)
    batch = _dqn_batch(rng)
    loss = _dqn()
    ref = loss(batch)["loss"]
    renamed = {"observation": batch["observation"], "act": batch["action"],
               "next": {"observation": batch["next"]["observation"], "rew": batch["next"]["reward"],
                        "done": batch["next"]["done"], "terminated": batch["next"]["terminated"]}}
    loss.set_keys(action="act", reward="rew")
    np.testing.assert_allclose(loss(renamed)["loss"], ref)


def test_select_out_keys_and_kwargs_call():
    rng = np.random.default_rng(1)
    loss = _iql()
    batch = _iql_batch(rng)
    full = loss(batch)
    assert list(full) == ["loss_actor", "loss_qvalue", "loss_value", "entropy"]
    flat = dict(observation=batch["observation"], action=batch["action"], next_observation=batch["next"]["observation"],
                next_reward=batch["next"]["reward"], next_done=batch["next"]["done"],
                next_terminated=batch["next"]["terminated"])
    vals = loss(**flat)
    assert isinstance(vals, tuple) and len(vals) == 4
    for v, k in zip(vals, full):
        np.testing.assert_allclose(v, full[k])
    loss.select_out_keys("loss_qvalue", "loss_actor")
    a, b = loss(**flat)
    np.testing.assert_allclose(a, full["loss_qvalue"])
    assert list(loss(batch)) == ["loss_qvalue", "loss_actor"]
    with pytest.raises(ValueError, match="not an output"):
        loss.select_out_keys("loss_nope")
    loss.reset_out_keys()
    assert len(loss(**flat)) == 4
    with pytest.raises(TypeError, match="unexpected keyword"):
        loss(**flat, bogus=np.zeros(3))
    single = _dqn()(**{"observation": batch["observation"], "action": rng.integers(0, 4, 5),
                       "next_observation": batch["next"]["observation"], "next_reward": batch["next"]["reward"],
                       "next_done": batch["next"]["done"], "next_terminated": batch["next"]["terminated"]})
    assert single.shape == ()


def test_value_and_grad_terms_and_structure():
    rng = np.random.default_rng(2)
    loss = _iql()
    batch = _iql_batch(rng)
    out, g = loss.value_and_grad(batch)
    assert set(g) == set(loss.params)
    for name in g:
        assert flatten_params(g[name]).keys() == flatten_params(loss.params[name]).keys()
    _, g_actor = loss.value_and_grad(batch, terms=["loss_actor"])
    assert all(np.all(x == 0) for x in flatten_params(g_actor["qvalue_network"]).values())
    assert all(np.all(x == 0) for x in flatten_params(g_actor["value_network"]).values())
    assert any(np.any(x != 0) for x in flatten_params(g_actor["actor_network"]).values())
    _, g_v = loss.value_and_grad(batch, terms=["loss_value"])
    assert all(np.all(x == 0) for x in flatten_params(g_v["qvalue_network"]).values())  # target critics only
    with pytest.raises(ValueError, match="not outputs"):
        loss.value_and_grad(batch, terms=["loss_x"])


def test_targets_live_or_delayed_and_updaters():
    loss = _dqn(delay_value=False)
    assert loss.delayed_targets == ()
    new = {"value_network": {"0": {l: {p: x + 1.0 for p, x in d.items()} for l, d in loss.params["value_network"]["0"].items()}, "1": {}}}
    loss.params = new
    np.testing.assert_array_equal(loss.target_value_network_params["0"]["0"]["weight"], new["value_network"]["0"]["0"]["weight"])
    with pytest.raises(RuntimeError, match="no delayed target"):
        O.SoftUpdate(loss, tau=0.1)

    loss = _dqn(delay_value=True)
    w0 = loss.target_params["value_network"]["0"]["0"]["weight"].copy()
    shifted = {"value_network": {"0": {l: {p: x + 1.0 for p, x in d.items()} for l, d in loss.params["value_network"]["0"].items()}, "1": {}}}
    loss.params = shifted
    np.testing.assert_array_equal(loss.target_params["value_network"]["0"]["0"]["weight"], w0)  # delayed: unchanged
    up = O.SoftUpdate(loss, tau=0.25)  # init_ copies the source into the target (TorchRL)
    src = shifted["value_network"]["0"]["0"]["weight"]
    np.testing.assert_array_equal(loss.target_params["value_network"]["0"]["0"]["weight"], src)
    loss.params = {"value_network": {"0": {l: {p: x + 4.0 for p, x in d.items()} for l, d in shifted["value_network"]["0"].items()}, "1": {}}}
    up.step()
    np.testing.assert_allclose(loss.target_params["value_network"]["0"]["0"]["weight"], src + 0.25 * 4.0)
    with pytest.raises(ValueError):
        O.SoftUpdate(loss, tau=0.1, eps=0.9)


def test_hard_update_counting():
    """TorchRL copies on calls interval+1, 2(interval+1), ... (verified against torchrl in the catalog)."""
    loss = _dqn()
    up = O.HardUpdate(loss, value_network_update_interval=3)
    copied = []
    for i in range(1, 10):
        p = loss.params["value_network"]
        loss.params = {"value_network": {"0": {l: {k: x + 1.0 for k, x in d.items()} for l, d in p["0"].items()}, "1": {}}}
        up.step()
        copied.append(np.array_equal(loss.target_params["value_network"]["0"]["0"]["bias"],
                                     loss.params["value_network"]["0"]["0"]["bias"]))
    assert [i + 1 for i, c in enumerate(copied) if c] == [4, 8]


def test_reduce_loss_masks_from_batch():
    rng = np.random.default_rng(3)
    loss = _dqn()
    batch = _dqn_batch(rng)
    per = np.arange(6.0)
    mask = np.array([True, False, True, True, False, True])[:, None]
    out = loss._reduce_loss(per, {"collector": {"mask": mask}})
    np.testing.assert_allclose(out, per[mask[:, 0]].mean())
    loss.loss_mask_key = None
    np.testing.assert_allclose(loss._reduce_loss(per, {"collector": {"mask": mask}}), per.mean())
    nan = np.where(mask[:, 0], per, np.nan)
    np.testing.assert_allclose(reduce_loss(nan, "sum", mask=mask[:, 0]), per[mask[:, 0]].sum())
    with pytest.raises(ValueError, match="weights"):
        reduce_loss(per, "mean", weights=np.ones((6, 1)))
    with pytest.raises(ValueError, match="weights"):  # TorchRL would broadcast [6] * [6, 1] -> [6, 6] (divergence 4)
        reduce_loss(per, "none", weights=np.ones((6, 1)))
    # divergence 3: a caller mask with reduction="none" keeps the shape (TorchRL compacts loss[mask])
    np.testing.assert_array_equal(reduce_loss(per, "none", mask=mask[:, 0]), np.where(mask[:, 0], per, 0.0))
    assert batch  # the batch helper is exercised elsewhere


def test_make_value_estimator_forms():
    from arrayrl import value as V

    loss = _dqn()
    loss.make_value_estimator("td0", gamma=0.5)
    loss.make_value_estimator(V.ValueEstimators.TD0, gamma=0.5)
    with pytest.raises(NotImplementedError, match="GAE"):
        loss.make_value_estimator("gae")
    with pytest.raises(TypeError, match="not supported"):
        O.DQNLoss(MLP(in_features=3, out_features=4), gamma=0.9, action_space="one_hot")


def test_next_state_value_util():
    rng = np.random.default_rng(4)
    r, d, v = rng.normal(size=(5, 1)), np.array([[True], [False], [False], [True], [False]]), rng.normal(size=(5, 1))
    v[0, 0] = np.nan  # done: never read
    out = next_state_value({"next": {"reward": r, "done": d}}, pred_next_val=v, gamma=0.9)
    np.testing.assert_allclose(out, np.where(d[:, 0], r[:, 0], r[:, 0] + 0.9 * v[:, 0]))


# ------------------------------------------------------------------------------------------------ bad input
def test_missing_key_message_lists_present():
    rng = np.random.default_rng(5)
    batch = _dqn_batch(rng)
    del batch["next"]["reward"]
    with pytest.raises(KeyError, match=r"'next', 'reward'.*keys present.*'observation'"):
        _dqn()(batch)


def test_wrong_action_dtype_and_shape():
    rng = np.random.default_rng(6)
    batch = _dqn_batch(rng)
    batch["action"] = batch["action"].astype(float)
    with pytest.raises(TypeError, match="action'?: expected an? integer"):
        _dqn()(batch)
    batch = _dqn_batch(rng, space="one_hot")
    batch["action"] = batch["action"][:, :3]
    with pytest.raises(ValueError, match=r"action'?: expected a one_hot action of shape \(6, 4\)"):
        _dqn("one_hot")(batch)


def test_agent_dim_in_wrong_place():
    mixer = QMixer((4,), 3, 2)
    with pytest.raises(ValueError, match=r"chosen_action_value: expected shape \(\*B, 2, 1\)"):
        mixer(np.zeros((5, 1, 2)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="state: expected shape"):
        mixer(np.zeros((5, 2, 1)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="takes no state"):
        VDNMixer(2)(np.zeros((5, 2, 1)), np.zeros((5, 4)))


def test_ensemble_size_mismatch():
    from arrayrl.nn import Ensemble

    q = ValueOperator(MLP(in_features=5, out_features=1), in_keys=["observation", "action"])
    loss = _iql()
    with pytest.raises(ValueError, match="list of 3 networks but num_qvalue_nets=2"):
        O.IQLLoss(loss._networks["actor_network"], [q, q, q], loss._networks["value_network"])
    ens = KeyedModule(Ensemble(MLP(in_features=5, out_features=1), 3), in_keys=["observation", "action"],
                      out_keys=["state_action_value"])
    with pytest.raises(ValueError, match="ensemble of 3 members but num_qvalue_nets=2"):
        O.IQLLoss(loss._networks["actor_network"], ens, loss._networks["value_network"])
    ok = O.IQLLoss(loss._networks["actor_network"], ens, loss._networks["value_network"], num_qvalue_nets=3)
    assert ok(_iql_batch(np.random.default_rng(0)))["loss_qvalue"].shape == ()
    with pytest.raises(ValueError, match="Expectile should be lower than 1.0"):
        O.DiscreteIQLLoss(loss._networks["actor_network"], q, loss._networks["value_network"], expectile=1.0,
                          action_space="categorical")


def test_batch_not_mutated_except_td_error():
    rng = np.random.default_rng(7)
    for loss, batch in ((_dqn(), _dqn_batch(rng)), (_iql(), _iql_batch(rng))):
        snapshot = {k: (dict(v) if isinstance(v, dict) else v.copy()) for k, v in batch.items()}
        loss(batch)
        assert set(batch) == set(snapshot) | {"td_error"}
        for k, v in snapshot.items():
            if isinstance(v, dict):
                assert set(batch[k]) == set(v)
                for kk, vv in v.items():
                    np.testing.assert_array_equal(batch[k][kk], vv)
            else:
                np.testing.assert_array_equal(batch[k], v)


# ------------------------------------------------------------------------------------------------ divergences
def test_dqn_ties_paper_vs_torchrl_compat():
    """One-hot ties: TorchRL's greedy head is multi-hot, so Q'(s') = k * max; arrayrl uses max (the paper)."""
    net = KeyedModule(lambda obs: obs, in_keys=["observation"], out_keys=["action_value"])  # Q(s, .) = s
    actor = QValueActor(net, action_space="one_hot")
    batch = {"observation": np.array([[0.0, 0.0, 0.0]]), "action": np.array([[1, 0, 0]]),
             "next": {"observation": np.array([[1.0, 1.0, 0.5]]), "reward": np.zeros((1, 1)),
                      "done": np.zeros((1, 1), bool), "terminated": np.zeros((1, 1), bool)}}
    paper = O.DQNLoss(actor, action_space="one_hot", delay_value=False)
    compat = O.DQNLoss(actor, action_space="one_hot", delay_value=False, torchrl_compat=True)
    for l in (paper, compat):
        l.make_value_estimator(gamma=0.5)
    np.testing.assert_allclose(paper(batch)["loss"], (0.5 * 1.0) ** 2)  # y = gamma * max = 0.5
    np.testing.assert_allclose(compat(batch)["loss"], (0.5 * 2.0) ** 2)  # y = gamma * (1 + 1)


def test_distributional_any_batch_rank():
    """TorchRL raises for a non-1-D batch; arrayrl projects any batch rank (same numbers as a flattened batch)."""
    from arrayrl import ops

    atoms, nA = 5, 3
    mlp = MLP(in_features=2, out_features=atoms * nA)

    def fn(p, obs):
        x = mlp.apply(p, obs)
        return ops.log_softmax(x.__array_namespace__().reshape(x, tuple(x.shape[:-1]) + (atoms, nA)) if hasattr(x, "__array_namespace__") else np.reshape(x, x.shape[:-1] + (atoms, nA)), axis=-2)

    net = KeyedModule(fn, params=mlp.params, in_keys=["observation"], out_keys=["action_value"])
    loss = O.DistributionalDQNLoss(net, gamma=0.9, support=np.linspace(-1, 1, atoms), action_space="categorical",
                                   reduction="none")
    rng = np.random.default_rng(8)
    b2 = {"observation": rng.normal(size=(2, 3, 2)), "action": rng.integers(0, nA, (2, 3)),
          "next": {"observation": rng.normal(size=(2, 3, 2)), "reward": rng.normal(size=(2, 3, 1)),
                   "done": np.zeros((2, 3, 1), bool), "terminated": np.zeros((2, 3, 1), bool)}}
    flat = {"observation": b2["observation"].reshape(6, 2), "action": b2["action"].reshape(6),
            "next": {k: v.reshape((6,) + v.shape[2:]) for k, v in b2["next"].items()}}
    np.testing.assert_allclose(loss(b2)["loss"].reshape(6), loss(flat)["loss"], rtol=1e-12)


# ------------------------------------------------------------------------------------------------ doctests
@pytest.mark.parametrize("module", ["arrayrl.objectives.dqn", "arrayrl.objectives.iql", "arrayrl.objectives.multiagent.qmixer",
                                    "arrayrl.objectives.ddpg", "arrayrl.objectives.ppo", "arrayrl.objectives.dreamer_v3",
                                    "arrayrl.recipes.buffer"])
def test_docstring_examples(module):
    import importlib

    mod = importlib.import_module(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


# ------------------------------------------------------------------------------------------------ training
def _adam_step(params, grads, state, lr):
    from arrayrl.tree import tree_map

    state["t"] += 1
    t = state["t"]
    state["m"] = tree_map(lambda m, g: 0.9 * m + 0.1 * g, state["m"], grads)
    state["v"] = tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, state["v"], grads)
    return tree_map(lambda p, m, v: p - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8), params,
                    state["m"], state["v"])


def test_dqn_learns_chain_mdp():
    """Deterministic 4-state chain, actions left/right, reward 1 on reaching the end (terminal): Q* is known."""
    n_s, gamma = 4, 0.9
    states = np.arange(n_s - 1)
    obs = np.eye(n_s)[np.repeat(states, 2)]
    acts = np.tile([0, 1], n_s - 1)
    nxt = np.clip(np.repeat(states, 2) + np.where(acts == 1, 1, -1), 0, n_s - 1)
    term = (nxt == n_s - 1)[:, None]
    batch = {"observation": obs, "action": acts, "next": {"observation": np.eye(n_s)[nxt], "reward": term.astype(float),
                                                          "done": term, "terminated": term}}
    net = KeyedModule(Linear(n_s, 2, bias=False), in_keys=["observation"], out_keys=["action_value"])
    loss = O.DQNLoss(QValueActor(net, action_space="categorical"), action_space="categorical", delay_value=True)
    loss.make_value_estimator(gamma=gamma)
    up = O.SoftUpdate(loss, tau=0.2)
    from arrayrl.tree import tree_map

    state = {"t": 0, "m": tree_map(np.zeros_like, loss.params), "v": tree_map(np.zeros_like, loss.params)}
    first = None
    for _ in range(600):
        out, g = loss.value_and_grad(batch)
        first = out["loss"] if first is None else first
        loss.params = _adam_step(loss.params, g, state, 0.05)
        up.step()
    w = loss.params["value_network"]["0"]["weight"]  # Q(s, a) = w[a, s]
    v_star = {2: 1.0, 1: gamma, 0: gamma**2}
    q_star = np.array([[gamma * v_star[max(s - 1, 0)] if s > 0 else gamma * v_star[0], v_star[s]] for s in states])
    np.testing.assert_allclose(w[:, : n_s - 1].T, q_star, atol=2e-3)
    assert out["loss"] < 1e-5 < first


def test_iql_improves_value_fit_offline():
    rng = np.random.default_rng(9)
    loss = _iql(expectile=0.7)
    loss.make_value_estimator(gamma=0.9)
    data = _iql_batch(rng, B=64)
    data["next"]["reward"] = np.tanh(data["observation"][:, :1]) + 0.1 * data["action"][:, :1]
    from arrayrl.tree import tree_map

    state = {"t": 0, "m": tree_map(np.zeros_like, loss.params), "v": tree_map(np.zeros_like, loss.params)}
    up = O.SoftUpdate(loss, tau=0.1)
    hist = []
    for _ in range(150):
        out, g = loss.value_and_grad(data)
        hist.append((out["loss_qvalue"], out["loss_value"]))
        loss.params = _adam_step(loss.params, g, state, 1e-2)
        up.step()
    (q0, v0), (q1, v1) = hist[0], hist[-1]
    assert q1 < 0.7 * q0 and v1 < v0


@pytest.mark.parametrize("component", ["finite-diff", "backends"])
def test_check_cases_pass(component):
    """``arrayrl check``'s loss self-consistency: every loss family's gradients vs finite differences, and its
    outputs (and tape gradients) on every backend vs NumPy (arrayrl.check.losses; the cases are built with TorchRL)."""
    pytest.importorskip("torchrl")
    from arrayrl.check.losses import CHECKS

    res = CHECKS[f"loss.self-consistency[{component}]"](6, np.random.default_rng(0), lambda: None)
    assert res["passed"] and res["cases"] == 6, res


def test_hold_out_helpers():
    from arrayrl.autodiff import Tensor, value_and_grad
    from arrayrl.objectives import hold_out_net, hold_out_params

    lin = Linear(2, 1)
    x = np.ones((3, 2))

    def f(p):
        lin.params = p
        with hold_out_net(lin) as net:  # inside the block the parameters are constants for the tape
            y = net(x)
        return p["bias"][0] * 0.0 + np.sum(y)

    _, g = value_and_grad(f)(lin.params)
    assert np.all(g["weight"] == 0)
    with hold_out_params({"w": Tensor(np.ones(2))}) as held:
        assert isinstance(held["w"], np.ndarray)
