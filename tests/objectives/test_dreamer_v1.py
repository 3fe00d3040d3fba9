"""Dreamer v1 losses and RSSM modules without torch: finite differences through the whole imagined trajectory,
the TD(lambda) divergence (paper default vs ``torchrl_compat``), defaults, dtypes and bad input."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from arrayrl.distributions import TanhNormal
from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor, Sequential
from arrayrl.nn.params import flatten_params, unflatten_params
from arrayrl.nn.rssm_v1 import DreamerActor, RSSMPosterior, RSSMPrior, StochasticKeyedModule
from arrayrl.objectives.dreamer import DreamerActorLoss, DreamerEnv, DreamerModelLoss, DreamerValueLoss
from arrayrl.random import Generator

N, S, R, HID, A, HZ = 3, 2, 3, 4, 2, 3


def _setup(dtype=np.float64, **kw):
    g = Generator(1)
    prior = RSSMPrior(action_dim=A, hidden_dim=HID, rnn_hidden_dim=R, state_dim=S, generator=g, dtype=dtype)
    reward = MLP(S + R, 1, depth=1, num_cells=5, activation_class="elu", generator=g, dtype=dtype)
    wm = Sequential(StochasticKeyedModule(prior, in_keys=["state", "belief", "action"],
                                          out_keys=["_", "_", "state", "belief"]),
                    KeyedModule(reward, in_keys=["state", "belief"], out_keys=["reward"]))
    net = DreamerActor(A, depth=1, num_cells=5, in_features=S + R, generator=g, dtype=dtype)
    actor = ProbabilisticActor(KeyedModule(net, in_keys=["state", "belief"], out_keys=["loc", "scale"]),
                               in_keys=["loc", "scale"], distribution_class=TanhNormal)
    vnet = MLP(S + R, 1, depth=1, num_cells=5, activation_class="elu", generator=g, dtype=dtype)
    value = KeyedModule(vnet, in_keys=["state", "belief"], out_keys=["state_value"])
    loss = DreamerActorLoss(actor, value, DreamerEnv(wm), imagination_horizon=HZ, **kw)
    rng = np.random.default_rng(0)
    batch = {"state": rng.normal(size=(N, S)).astype(dtype), "belief": rng.normal(size=(N, R)).astype(dtype)}
    draws = [rng.normal(size=(N, A if i % 2 == 0 else S)).astype(dtype) for i in range(2 * HZ)]
    return loss, batch, draws, value


def test_actor_loss_gradient_matches_finite_differences_through_imagination():
    loss, batch, draws, _ = _setup()
    (out, _), grads = loss.value_and_grad(batch, generator=Generator.from_noise(*draws))
    flat = flatten_params(loss.params["actor_model"])
    gflat = flatten_params(grads["actor_model"])
    base = {k: np.array(v) for k, v in flat.items()}
    eps = 1e-6
    for name in ("0.backbone.0.weight", "0.backbone.2.bias"):
        w = base[name]
        for idx in [(0,) * w.ndim, tuple(s - 1 for s in w.shape)]:
            vals = []
            for sgn in (1, -1):
                p = {k: v.copy() for k, v in base.items()}
                p[name][idx] += sgn * eps
                loss.params = {"actor_model": {**unflatten_params(p), "1": {}}}
                o, _ = loss(batch, generator=Generator.from_noise(*draws))
                vals.append(float(o["loss_actor"]))
            loss.params = {"actor_model": {**unflatten_params(base), "1": {}}}
            fd = (vals[0] - vals[1]) / (2 * eps)
            np.testing.assert_allclose(np.asarray(gflat[name])[idx], fd, rtol=1e-6, atol=1e-9)
    assert float(out["loss_actor"]) == float(loss(batch, generator=Generator.from_noise(*draws))[0]["loss_actor"])


def test_paper_td_lambda_vs_torchrl_compat():
    """Divergence (TorchRL #987): TorchRL's target is r + gamma V'; arrayrl's default is TD(lambda) along H."""
    loss, batch, draws, value = _setup()
    compat, _, _, _ = _setup(torchrl_compat=True)
    out, fake = loss(batch, generator=Generator.from_noise(*draws))
    out_c, fake_c = compat(batch, generator=Generator.from_noise(*draws))
    r = np.asarray(fake["next"]["reward"])
    v = np.asarray(value({"state": fake["next"]["state"], "belief": fake["next"]["belief"]})["state_value"])
    np.testing.assert_allclose(fake_c["lambda_target"], r + 0.99 * v, rtol=1e-12)
    ref = np.empty_like(r)
    g = r[:, -1] + 0.99 * v[:, -1]
    ref[:, -1] = g
    for t in range(HZ - 2, -1, -1):
        g = r[:, t] + 0.99 * (0.05 * v[:, t] + 0.95 * g)
        ref[:, t] = g
    np.testing.assert_allclose(fake["lambda_target"], ref, rtol=1e-12)
    w = 0.99 ** np.arange(HZ)[:, None]
    np.testing.assert_allclose(out["loss_actor"], -(ref * w).sum((-2, -1)).mean(), rtol=1e-12)
    assert not np.allclose(out["loss_actor"], out_c["loss_actor"])
    # TD0 / TD1 estimators
    loss.make_value_estimator("td0")
    o0, f0 = loss(batch, generator=Generator.from_noise(*draws))
    np.testing.assert_allclose(f0["lambda_target"], r + 0.99 * v, rtol=1e-12)
    loss.make_value_estimator("tdlambda", gamma=0.9, lmbda=0.5)
    _, f1 = loss(batch, generator=Generator.from_noise(*draws))
    assert f1["lambda_target"].shape == (N, HZ, 1)


def test_defaults_follow_torchrl_code():
    """TorchRL's docstrings say discount_loss defaults to False; its code (and arrayrl) default to True."""
    assert inspect.signature(DreamerActorLoss).parameters["discount_loss"].default is True
    assert inspect.signature(DreamerValueLoss).parameters["discount_loss"].default is True
    assert inspect.signature(DreamerActorLoss).parameters["imagination_horizon"].default == 15
    m = inspect.signature(DreamerModelLoss).parameters
    assert (m["free_nats"].default, m["delayed_clamp"].default, m["global_average"].default) == (3, False, False)
    loss, batch, draws, _ = _setup()
    assert loss.value_estimator.gamma == 0.99 and loss.value_estimator.lmbda == 0.95


def test_value_loss_and_shapes():
    loss, batch, draws, value = _setup()
    out, fake = loss(batch, generator=Generator.from_noise(*draws))
    assert np.shape(out["loss_actor"]) == ()
    assert fake["action"].shape == (N, HZ, A) and fake["next"]["state"].shape == (N, HZ, S)
    assert not fake["next"]["done"].any()
    vloss = DreamerValueLoss(value)
    vout, same = vloss(fake)
    assert same is fake and np.shape(vout["loss_value"]) == ()
    v = np.asarray(value({"state": fake["state"], "belief": fake["belief"]})["state_value"])
    w = 0.99 ** np.arange(HZ)[:, None]
    np.testing.assert_allclose(vout["loss_value"], (w * (v - fake["lambda_target"]) ** 2).sum((-1, -2)).mean(),
                               rtol=1e-12)
    vout2, _ = DreamerValueLoss(value, "l1", False)(fake)
    np.testing.assert_allclose(vout2["loss_value"], np.abs(v - fake["lambda_target"]).sum((-1, -2)).mean(),
                               rtol=1e-12)


def test_float32_in_float32_out():
    loss, batch, draws, value = _setup(dtype=np.float32)
    (out, fake), grads = loss.value_and_grad(batch, generator=Generator.from_noise(*draws))
    assert out["loss_actor"].dtype == np.float32 and fake["lambda_target"].dtype == np.float32
    assert all(np.asarray(g).dtype == np.float32 for g in flatten_params(grads["actor_model"]).values())
    vout, _ = DreamerValueLoss(value)(fake)
    assert vout["loss_value"].dtype == np.float32


def test_rssm_accepts_rnn_hidden_dim_different_from_hidden_dim():
    """TorchRL's RSSMPrior projects the belief with Linear(hidden_dim, hidden_dim) and crashes unless
    rnn_hidden_dim == hidden_dim; arrayrl's projector is Linear(rnn_hidden_dim, hidden_dim)."""
    prior = RSSMPrior(action_dim=2, hidden_dim=5, rnn_hidden_dim=3, state_dim=2)
    assert prior.params["rnn_to_prior_projector"]["0"]["weight"].shape == (5, 3)
    m, s, st, b = prior.apply(prior.params, np.zeros((4, 2)), np.zeros((4, 3)), np.zeros((4, 2)),
                              noise=np.zeros((4, 2)))
    assert b.shape == (4, 3) and np.all(s >= 0.1) and np.array_equal(st, m)
    post = RSSMPosterior(hidden_dim=5, state_dim=2, rnn_hidden_dim=3, obs_embed_dim=4)
    _, ps, _ = post.apply(post.params, np.zeros((4, 3)), np.zeros((4, 4)), noise=np.zeros((4, 2)))
    assert np.all(ps >= 0.1)


def test_model_loss_kl_free_nats_and_rename():
    def wm_fn(p, r):
        return r * p["w"], r * 0 + 1.0, r * 0 + 1.0, r * 0, r * 0 + 2.0

    keys = [("next", k) for k in ("reward", "prior_mean", "prior_std", "posterior_mean", "posterior_std")]
    wm = Sequential(KeyedModule(wm_fn, params={"w": np.array(0.5)}, in_keys=[("next", "true_reward")],
                                out_keys=keys),
                    KeyedModule(lambda x: x * 0.0, in_keys=[("next", "pixels")], out_keys=[("next", "reco_pixels")]))
    batch = {"next": {"reward": np.ones((2, 3, 1)), "pixels": np.ones((2, 3, 1, 2, 2))}}
    loss = DreamerModelLoss(wm, free_nats=0.0)
    out, fake = loss(batch)
    # KL(N(0, 2) || N(1, 1)) = log(1/2) + (4 + 1)/2 - 1/2
    np.testing.assert_allclose(out["loss_model_kl"], [np.log(0.5) + 2.0], rtol=1e-12)
    np.testing.assert_allclose(out["loss_model_reco"], [4.0])
    np.testing.assert_allclose(out["loss_model_reward"], [0.25])
    assert "reward" in batch["next"] and "true_reward" not in batch["next"]  # caller's batch untouched
    np.testing.assert_allclose(fake["next"]["true_reward"], 1.0)
    out3, _ = DreamerModelLoss(wm)(batch)
    np.testing.assert_allclose(out3["loss_model_kl"], [3.0])  # clipped at free_nats=3


def test_bad_input():
    loss, batch, draws, value = _setup()
    with pytest.raises(ValueError, match="generator"):
        loss(batch)
    with pytest.raises(KeyError, match="belief"):
        loss({"state": batch["state"]}, generator=Generator.from_noise(*draws))
    with pytest.raises(ValueError, match="belief"):
        loss({"state": batch["state"], "belief": batch["belief"][:2]}, generator=Generator.from_noise(*draws))
    with pytest.raises(TypeError, match="gamma"):
        DreamerActorLoss(loss.actor_model, value, loss.model_based_env, gamma=0.9)
    with pytest.raises(ValueError, match="imagination_horizon"):
        DreamerActorLoss(loss.actor_model, value, loss.model_based_env, imagination_horizon=0)
    with pytest.raises(TypeError, match="model_based_env"):
        DreamerActorLoss(loss.actor_model, value, object())
    with pytest.raises(ValueError, match="value_loss"):
        DreamerValueLoss(value, "l3")
    with pytest.raises(KeyError, match="lambda_target"):
        DreamerValueLoss(value)({"state": batch["state"], "belief": batch["belief"]})
    prior = RSSMPrior(action_dim=2, hidden_dim=4, rnn_hidden_dim=4, state_dim=2)
    with pytest.raises(ValueError, match="action"):
        prior.apply(prior.params, np.zeros((3, 2)), np.zeros((3, 4)), np.zeros((3, 5)), noise=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="generator"):
        prior.apply(prior.params, np.zeros((3, 2)), np.zeros((3, 4)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="noise"):
        prior.apply(prior.params, np.zeros((3, 2)), np.zeros((3, 4)), np.zeros((3, 2)), noise=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="action_dim"):
        RSSMPrior()
    with pytest.raises(ValueError, match="in_features"):
        DreamerActor(2)
