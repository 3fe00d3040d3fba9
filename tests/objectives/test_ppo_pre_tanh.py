"""Exact PPO ratio with a saturated TanhNormal: ``store_pre_tanh=True`` actors store the pre-tanh draw ``u`` and
its exact density, and PPOLoss scores the stored action at ``u`` (``TanhNormal.log_prob(action, pre_tanh=u)``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arrayrl import namespace_of
from arrayrl.autodiff import check_grads, value_and_grad
from arrayrl.distributions import Categorical, TanhNormal
from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor, ProbabilisticModule
from arrayrl.objectives.ppo import ClipPPOLoss, KLPENPPOLoss, PPOLoss
from arrayrl.random import Generator

B, A = 6, 2


def _hand_log_prob(u, loc, scale):
    """float64 by hand: sum_a [log N(u; loc, scale) - log(1 - tanh(u)^2)], the Jacobian term in its stable form
    log(1 - tanh^2 u) = 2 (log 2 - u - log(1 + exp(-2u)))."""
    u, loc, scale = (np.asarray(x, np.float64) for x in (u, loc, scale))
    normal = -0.5 * ((u - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)
    ladj = 2.0 * (math.log(2.0) - u - np.logaddexp(0.0, -2.0 * u))
    return np.sum(normal - ladj, axis=-1)


def _actor(dtype, store_pre_tanh=True, loc=8.0, log_scale=-3.0):
    """loc = 8 (tanh saturates: 1 - tanh(8) ~ 2e-7 < float32's 1e-6 clip), scale = exp(-3) ~ 0.05."""
    mlp = MLP(in_features=3, out_features=2 * A, num_cells=[], dtype=dtype)
    params = {"0": {"weight": np.zeros_like(mlp.params["0"]["weight"]),
                    "bias": np.concatenate([np.full(A, loc), np.full(A, log_scale)]).astype(dtype)}}

    def net(p, o):
        h = mlp.apply(p, o)
        xp = namespace_of(h)
        return h[..., :A], xp.exp(h[..., A:])

    mod = KeyedModule(net, params=params, in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(mod, in_keys=["loc", "scale"], distribution_class=TanhNormal, return_log_prob=True,
                              store_pre_tanh=store_pre_tanh)


def _collect(actor, dtype, seed=0):
    obs = np.random.default_rng(seed).normal(size=(B, 3)).astype(dtype)
    batch = actor({"observation": obs}, generator=Generator(seed), interaction_type="random")
    batch["advantage"] = np.random.default_rng(seed + 1).normal(size=(B, 1)).astype(dtype)
    return batch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ratio_is_exactly_one_and_stored_log_prob_is_the_density_at_u(dtype):
    actor = _actor(dtype)
    batch = _collect(actor, dtype)
    u, lp = batch["action_pre_tanh"], batch["action_log_prob"]
    assert u.dtype == dtype and lp.dtype == dtype and batch["action"].dtype == dtype
    assert u.shape == (B, A) and lp.shape == (B,)
    assert np.all(np.abs(batch["action"]) > 0.999) and np.all(u > 7.0)  # saturated
    np.testing.assert_array_equal(batch["action"], np.clip(np.tanh(u), -1 + 1e-6 if dtype == np.float32 else -1 + 1e-15,
                                                           1 - 1e-6 if dtype == np.float32 else 1 - 1e-15))
    hand = _hand_log_prob(u, batch["loc"], batch["scale"])
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-4)
    np.testing.assert_allclose(lp, hand, **tol)
    for cls in (ClipPPOLoss, PPOLoss, KLPENPPOLoss):
        loss = cls(actor, entropy_bonus=False)
        out, grads = loss.value_and_grad(batch)
        assert float(out["kl_approx"]) == 0.0, cls.__name__
        if cls is ClipPPOLoss:
            assert float(out["clip_fraction"]) == 0.0
            assert float(out["max_ratio"]) == 1.0 and float(out["mean_ratio"]) == 1.0
        # the ratio is exactly 1: the surrogate is -mean(A) exactly
        np.testing.assert_array_equal(out["loss_objective"], -np.mean(batch["advantage"]).astype(dtype))
    # the stored action scored through the actor also uses u
    np.testing.assert_array_equal(actor.log_prob(actor.params, batch), lp)


def test_without_pre_tanh_the_stored_value_is_the_atanh_rescore():
    """The default (TorchRL's dist.log_prob(action)): ratio 1 as well, but in float32 the stored value is the density
    at atanh(clip(tanh(u))) ~ 7.25, far from the density at the drawn u ~ 8."""
    actor = _actor(np.float32, store_pre_tanh=False)
    batch = _collect(actor, np.float32)
    assert "action_pre_tanh" not in batch and actor.pre_tanh_key is None
    out = ClipPPOLoss(actor, entropy_bonus=False)(batch)
    assert float(out["clip_fraction"]) == 0.0 and float(out["max_ratio"]) == 1.0
    exact = _collect(_actor(np.float32), np.float32)  # the same draw (same seed), with u stored
    np.testing.assert_array_equal(batch["action"], exact["action"])
    hand = _hand_log_prob(exact["action_pre_tanh"], exact["loc"], exact["scale"])
    assert np.min(np.abs(batch["action_log_prob"] - hand)) > 1.0
    # a batch carrying u is not used by an actor that does not store it (the key belongs to the actor's option)
    plain = ClipPPOLoss(actor, entropy_bonus=False)({**batch, "action_pre_tanh": exact["action_pre_tanh"]})
    assert float(plain["max_ratio"]) == 1.0


def test_ratio_moves_with_the_parameters_and_gradient_matches_finite_differences():
    """Not a constant: changing loc changes the ratio by the Normal density at u; the PPO gradient w.r.t. the bias
    matches float64 finite differences of the loss."""
    actor = _actor(np.float64)
    batch = _collect(actor, np.float64)
    loss = PPOLoss(actor, entropy_bonus=False)
    p0 = loss.params["actor_network"]
    bias = p0["0"]["0"]["bias"]
    moved = {"0": {"0": {**p0["0"]["0"], "bias": bias + np.array([0.01, 0.0, 0.0, 0.0])}}, "1": {}}
    actor.params = moved
    out = loss(batch)
    u, loc, scale = batch["action_pre_tanh"], batch["loc"], batch["scale"]
    lw = _hand_log_prob(u, loc + np.array([0.01, 0.0]), scale) - _hand_log_prob(u, loc, scale)
    np.testing.assert_allclose(out["loss_objective"], -np.mean(np.exp(lw) * batch["advantage"][:, 0]), rtol=1e-12)
    actor.params = p0

    def f(b):
        actor.params = {"0": {"0": {**p0["0"]["0"], "bias": b}}, "1": {}}
        return loss(batch)["loss_objective"]

    _, g = loss.value_and_grad(batch)
    eps = 1e-6
    fd = np.array([(float(f(bias + eps * e)) - float(f(bias - eps * e))) / (2 * eps) for e in np.eye(2 * A)])
    actor.params = p0
    np.testing.assert_allclose(g["actor_network"]["0"]["0"]["bias"], fd, rtol=1e-6, atol=1e-9)


def test_log_prob_pre_tanh_gradients_and_errors():
    rng = np.random.default_rng(3)
    loc, scale = rng.normal(size=(4, 2)) * 4, np.exp(rng.normal(size=(4, 2)) * 0.3)
    u = loc + scale * rng.normal(size=(4, 2))
    u[0] = [12.0, -15.0]  # deep saturation
    d = TanhNormal(loc, scale)
    a = d.rsample(noise=(u - loc) / scale)
    np.testing.assert_allclose(d.log_prob(a, pre_tanh=u), _hand_log_prob(u, loc, scale), rtol=1e-12)
    # same as rsample_and_log_prob of the same draw, exactly
    a2, lp2, u2 = d.rsample_and_log_prob(noise=(u - loc) / scale, return_pre_tanh=True)
    np.testing.assert_array_equal(d.log_prob(a2, pre_tanh=u2), lp2)
    check_grads(lambda m, s: TanhNormal(m, s).log_prob(a, pre_tanh=u), (loc, scale))
    with pytest.raises(ValueError, match="pre_tanh: expected the shape"):
        d.log_prob(a, pre_tanh=u[:, :1])
    with pytest.raises(TypeError, match="pre_tanh: expected dtype"):
        d.log_prob(a, pre_tanh=u.astype(np.float32))
    with pytest.raises(TypeError, match="pre_tanh"):
        d.log_prob(a, pre_tanh=np.zeros((4, 2), np.int64))


def test_probabilistic_module_store_pre_tanh_options():
    loc, scale = np.full((3, 2), 8.0), np.full((3, 2), 0.05)
    mod = ProbabilisticModule(["loc", "scale"], distribution_class=TanhNormal, return_log_prob=True,
                              store_pre_tanh=True)
    assert mod.out_keys == [("action",), ("action_log_prob",), ("action_pre_tanh",)]
    out = mod({"loc": loc, "scale": scale})  # deterministic: u = loc
    np.testing.assert_array_equal(out["action_pre_tanh"], loc)
    np.testing.assert_allclose(out["action_log_prob"], _hand_log_prob(loc, loc, scale), rtol=1e-12)
    np.testing.assert_array_equal(mod.log_prob(out), out["action_log_prob"])
    no_lp = ProbabilisticModule(["loc", "scale"], distribution_class=TanhNormal, store_pre_tanh=True,
                                pre_tanh_key=("extra", "u"), default_interaction_type="random")
    assert no_lp.out_keys == [("action",), ("extra", "u")]
    out = no_lp({"loc": loc, "scale": scale}, generator=Generator(1))
    np.testing.assert_array_equal(out["action"], TanhNormal(loc, scale).rsample(Generator(1)))
    assert out["extra"]["u"].shape == (3, 2)
    with pytest.raises(ValueError, match="store_pre_tanh: Categorical"):
        ProbabilisticModule(["logits"], distribution_class=Categorical, store_pre_tanh=True)
    with pytest.raises(ValueError, match="pre_tanh_key"):
        ProbabilisticModule(["loc", "scale"], distribution_class=TanhNormal, pre_tanh_key="u")
    with pytest.raises(TypeError, match="store_pre_tanh"):
        ProbabilisticModule(["loc", "scale"], distribution_class=TanhNormal, store_pre_tanh="yes")
    with pytest.raises(ValueError, match="generator"):
        no_lp({"loc": loc, "scale": scale})
    with pytest.raises(NotImplementedError, match="mode"):
        mod({"loc": loc, "scale": scale}, interaction_type="mode")
