"""CompositeDistribution: against tensordict's CompositeDistribution (float64), by hand (sum over heads), draw
order, gradients (float64 finite differences), errors, and use through ProbabilisticActor and ClipPPOLoss."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl.distributions as D
from arrayrl import namespace_of
from arrayrl.autodiff import check_grads, value_and_grad
from arrayrl.nn import KeyedModule, ProbabilisticActor
from arrayrl.objectives.ppo import ClipPPOLoss
from arrayrl.random import Generator

B = 5


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return rng, {
        "cont": {"loc": rng.normal(size=(B, 4)), "scale": np.exp(rng.normal(size=(B, 4)) * 0.3)},
        "nested": {"disc": {"logits": rng.normal(size=(B, 3)) * 2}},
    }


MAP = {"cont": D.Normal, ("nested", "disc"): D.Categorical}


def _value(rng):
    return {"cont": rng.normal(size=(B, 4)), "nested": {"disc": rng.integers(0, 3, size=(B,))}}


@pytest.mark.torchrl
def test_log_prob_and_entropy_match_tensordict():
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict
    from tensordict.nn import CompositeDistribution as TC
    from tensordict.nn import set_composite_lp_aggregate

    rng, params = _params()
    value = _value(rng)
    tparams = TensorDict({"cont": {k: torch.tensor(v) for k, v in params["cont"].items()},
                          "nested": {"disc": {"logits": torch.tensor(params["nested"]["disc"]["logits"])}}}, [B])
    tdist = TC(tparams, {"cont": torch.distributions.Normal, ("nested", "disc"): torch.distributions.Categorical})
    tvalue = TensorDict({"cont": torch.tensor(value["cont"]), "nested": {"disc": torch.tensor(value["nested"]["disc"])}},
                        [B])
    d = D.CompositeDistribution(params, MAP)
    assert d.batch_shape == (B,)
    with set_composite_lp_aggregate(True):
        np.testing.assert_allclose(d.log_prob(value), tdist.log_prob(tvalue).numpy(), rtol=1e-12)
        np.testing.assert_allclose(d.entropy(), tdist.entropy().numpy(), rtol=1e-12)
    with set_composite_lp_aggregate(False):
        per_t = tdist.log_prob_composite(tvalue, include_sum=False)
        per = d.log_prob_composite(value)
        np.testing.assert_allclose(per["cont_log_prob"], per_t["cont_log_prob"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(per["nested"]["disc_log_prob"], per_t["nested", "disc_log_prob"].numpy(), rtol=1e-12)
        ent_t = tdist.entropy(include_sum=False)
        ent = d.entropy(aggregate=False)
        np.testing.assert_allclose(ent["cont"], ent_t["cont_entropy"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(ent["nested"]["disc"], ent_t["nested", "disc_entropy"].numpy(), rtol=1e-12)


def test_sums_over_heads_by_hand_with_a_sample_shape():
    rng, params = _params(1)
    d = D.CompositeDistribution(params, MAP)
    normal = D.Normal(**params["cont"])
    cat = D.Categorical(**params["nested"]["disc"])
    s = d.sample(Generator(0), (3,))
    assert s["cont"].shape == (3, B, 4) and s["nested"]["disc"].shape == (3, B)
    hand = normal.log_prob(s["cont"]).sum(-1) + cat.log_prob(s["nested"]["disc"])
    np.testing.assert_allclose(d.log_prob(s), hand, rtol=1e-14)
    np.testing.assert_allclose(d.entropy(), normal.entropy().sum(-1) + cat.entropy(), rtol=1e-14)
    per = d.log_prob(s, aggregate=False)
    assert per["cont"].shape == (3, B, 4) and per["nested"]["disc"].shape == (3, B)
    both = d.log_prob_composite(s, include_sum=True)
    np.testing.assert_allclose(both["sample_log_prob"], hand, rtol=1e-14)
    # draw order: the heads' order, one generator
    g = Generator(0)
    np.testing.assert_array_equal(s["cont"], normal.sample(g, (3,)))
    np.testing.assert_array_equal(s["nested"]["disc"], cat.sample(g, (3,)))
    # noise per head replays
    noise = {"cont": rng.normal(size=(B, 4)), "nested": {"disc": rng.uniform(size=(B,))}}
    s2, lp2 = d.sample_and_log_prob(noise=noise)
    np.testing.assert_array_equal(s2["cont"], normal.sample(noise=noise["cont"]))
    np.testing.assert_array_equal(s2["nested"]["disc"], cat.sample(noise=noise["nested"]["disc"]))
    np.testing.assert_allclose(lp2, d.log_prob(s2), rtol=1e-14)
    np.testing.assert_array_equal(d.mode["nested"]["disc"], cat.mode)
    np.testing.assert_array_equal(d.deterministic_sample["cont"], params["cont"]["loc"])
    assert d["nested", "disc"] is d.dists[("nested", "disc")] and len(d) == 2 and not d.has_rsample
    with pytest.raises(NotImplementedError, match="head .*'nested', 'disc'.*reparameterised"):
        d.rsample(Generator(0))


def test_tanh_normal_head_monte_carlo_entropy_and_rsample_and_log_prob():
    rng = np.random.default_rng(2)
    loc, scale = rng.normal(size=(B, 2)), np.exp(rng.normal(size=(B, 2)) * 0.2)
    lg = rng.normal(size=(B, 3))
    t, c = D.TanhNormal(loc, scale), D.Categorical(logits=lg)
    d = D.CompositeDistribution.from_distributions({"arm": t, "move": c})
    with pytest.raises(ValueError, match="head 'arm' \\(TanhNormal\\) has no analytic entropy"):
        d.entropy()
    noise = {"arm": rng.normal(size=(7, B, 2))}
    _, lp_t = t.rsample_and_log_prob(noise=noise["arm"])
    np.testing.assert_allclose(d.entropy(noise=noise), -lp_t.mean(0) + c.entropy(), rtol=1e-14)
    assert d.entropy(16, generator=Generator(0)).shape == (B,)
    a, lp = D.CompositeDistribution.from_distributions({"arm": t}).rsample_and_log_prob(noise={"arm": noise["arm"][0]})
    a_t, lp_tt = t.rsample_and_log_prob(noise=noise["arm"][0])
    np.testing.assert_array_equal(a["arm"], a_t)
    np.testing.assert_array_equal(lp, lp_tt)


def test_gradients_through_the_composite_match_finite_differences():
    rng, params = _params(3)
    value = _value(rng)

    def f(loc, scale, logits):
        d = D.CompositeDistribution({"cont": {"loc": loc, "scale": scale}, "nested": {"disc": {"logits": logits}}},
                                    MAP)
        return d.log_prob(value) + 0.5 * d.entropy()

    args = (params["cont"]["loc"], params["cont"]["scale"], params["nested"]["disc"]["logits"])
    check_grads(f, args)
    # and it is the sum of the heads' gradients
    _, g = value_and_grad(lambda p: namespace_of(p["lg"]).sum(f(p["loc"], p["scale"], p["lg"])))(
        {"loc": args[0], "scale": args[1], "lg": args[2]})
    _, gc = value_and_grad(lambda lg: namespace_of(lg).sum(
        D.Categorical(logits=lg).log_prob(value["nested"]["disc"]) + 0.5 * D.Categorical(logits=lg).entropy()))(args[2])
    np.testing.assert_allclose(g["lg"], gc, rtol=1e-12, atol=1e-15)


def test_errors_name_the_head_or_argument():
    rng, params = _params()
    with pytest.raises(KeyError, match="parameters of head 'cont'"):
        D.CompositeDistribution({"nested": params["nested"]}, MAP)
    with pytest.raises(TypeError, match="distribution_map"):
        D.CompositeDistribution(params, {})
    with pytest.raises(TypeError, match=r"params\['cont'\]: arguments"):
        D.CompositeDistribution({**params, "cont": {"mean": 1}}, MAP)
    with pytest.raises(TypeError, match="head 'b': dtype float32 differs"):
        D.CompositeDistribution.from_distributions({"a": D.Normal(np.zeros(3), 1.0),
                                                    "b": D.Normal(np.zeros(3, np.float32), 1.0)})
    with pytest.raises(ValueError, match="batch_shape: \\(4,\\) is not a prefix"):
        D.CompositeDistribution(params, MAP, batch_shape=(4,))
    with pytest.raises(ValueError, match="overlap"):
        D.CompositeDistribution.from_distributions({"a": D.Normal(np.zeros(3), 1.0), ("a", "b"): D.Normal(np.zeros(3), 1.0)})
    d = D.CompositeDistribution(params, MAP)
    with pytest.raises(KeyError, match="sample of head"):
        d.log_prob({"cont": np.zeros((B, 4))})
    with pytest.raises(TypeError, match="value: expected a nested dict"):
        d.log_prob(np.zeros(B))
    with pytest.raises(ValueError, match="different sample shapes"):
        d.log_prob({"cont": np.zeros((2, B, 4)), "nested": {"disc": np.zeros((3, B), np.int64)}})
    with pytest.raises(TypeError, match="noise: expected a dict"):
        d.sample(noise=np.zeros(B))
    with pytest.raises(KeyError, match="head 'x' not in the composite"):
        d["x"]
    assert "CompositeDistribution" in D.__all__


def test_probabilistic_actor_and_clip_ppo_with_a_composite():
    """in_keys=["params"] (the nested dict of head parameters): the sample dict is written under "action", the
    joint log-prob under "action_log_prob"; ClipPPOLoss then has ratio 1 at unchanged parameters, and its gradient
    matches float64 finite differences."""
    rng = np.random.default_rng(4)
    obs = rng.normal(size=(B, 3))
    w = {"cont": rng.normal(size=(3, 2)), "disc": rng.normal(size=(3, 4))}

    def net(p, o):
        return {"cont": {"loc": o @ p["cont"], "scale": 0.5 + 0.0 * (o @ p["cont"])}, "disc": {"logits": o @ p["disc"]}}

    mod = KeyedModule(net, params=w, in_keys=["observation"], out_keys=["params"])
    actor = ProbabilisticActor(mod, in_keys=["params"], distribution_class=D.CompositeDistribution,
                               distribution_kwargs={"distribution_map": {"cont": D.IndependentNormal,
                                                                         "disc": D.Categorical}},
                               return_log_prob=True, default_interaction_type="random")
    batch = actor({"observation": obs}, generator=Generator(0))
    assert batch["action"]["cont"].shape == (B, 2) and batch["action"]["disc"].shape == (B,)
    d = actor.get_dist(actor.params, batch)
    np.testing.assert_allclose(batch["action_log_prob"],
                               d["cont"].log_prob(batch["action"]["cont"]) + d["disc"].log_prob(batch["action"]["disc"]),
                               rtol=1e-14)
    batch["advantage"] = rng.normal(size=(B, 1))
    loss = ClipPPOLoss(actor, entropy_coeff=0.1)
    out, grads = loss.value_and_grad(batch)
    assert float(out["clip_fraction"]) == 0.0 and float(out["kl_approx"]) == 0.0 and float(out["max_ratio"]) == 1.0
    np.testing.assert_allclose(out["entropy"], np.mean(d.entropy()), rtol=1e-14)
    p0 = {k: v.copy() for k, v in w.items()}

    def total(k, i, j, eps):
        p = {kk: vv.copy() for kk, vv in p0.items()}
        p[k][i, j] += eps
        actor.params = {"0": p, "1": {}}
        o = loss(batch)
        return float(o["loss_objective"]) + float(o["loss_entropy"])

    for k, (i, j) in (("cont", (1, 0)), ("disc", (2, 3))):
        fd = (total(k, i, j, 1e-6) - total(k, i, j, -1e-6)) / 2e-6
        np.testing.assert_allclose(grads["actor_network"]["0"][k][i, j], fd, rtol=1e-6, atol=1e-9)
    actor.params = {"0": p0, "1": {}}
