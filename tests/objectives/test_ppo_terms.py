"""The pure policy-gradient terms (hand calculations, algebraic properties), the loss classes' input checks, the
saturated-TanhNormal ratio, and a learning test."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from arrayrl import namespace_of
from arrayrl.autodiff import grad
from arrayrl.distributions import Categorical, CompositeDistribution, IndependentNormal, Normal, TanhNormal
from arrayrl.nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor, ValueOperator
from arrayrl.objectives import policy_gradient as PG
from arrayrl.objectives.ppo import ClipPPOLoss, KLPENPPOLoss, PPOLoss
from arrayrl.random import Generator


def _a(x):
    return np.asarray(x, dtype=np.float64)


# ------------------------------------------------------------------------------------------------ terms
def test_clipped_surrogate_hand_values_and_asymmetric_bounds():
    lw = _a([[math.log(0.5)], [0.0], [math.log(1.5)], [math.log(1.5)]])
    adv = _a([[1.0], [2.0], [1.0], [-1.0]])
    loss, frac = PG.clipped_surrogate(lw, adv, (0.1, 0.3))
    # r = .5 clipped to .9 (A>0: min(.5, .9) = .5); r = 1; r = 1.5 -> 1.3 (A>0: 1.3); A<0: min(-1.5, -1.3) = -1.5
    np.testing.assert_allclose(loss[:, 0], [-0.5, -2.0, -1.3, 1.5], rtol=1e-14)
    assert float(frac) == 0.75
    assert PG.clip_bounds(0.2) == (math.log1p(-0.2), math.log1p(0.2))
    for bad in (1.0, (1.0, 0.2), (-0.1, 0.2), (0.1, 0.2, 0.3)):
        with pytest.raises(ValueError, match="clip_epsilon"):
            PG.clip_bounds(bad)


def test_clipped_surrogate_gradient_zero_where_the_clip_binds():
    adv = _a([[1.0], [1.0], [-1.0], [-1.0]])
    lw = _a([[0.5], [0.05], [-0.5], [0.05]])  # bound (A>0, r>1+e), free, bound (A<0, r<1-e), free
    def total(x):
        loss = PG.clipped_surrogate(x, adv, 0.2)[0]
        return loss.__array_namespace__().sum(loss)

    g = grad(total)(lw)
    np.testing.assert_allclose(g[:, 0], [0.0, -math.exp(0.05), 0.0, math.exp(0.05)], rtol=1e-14)


def test_kl_penalty_surrogate_grad_beta_changes_only_the_gradient():
    lw, adv, kl = _a([[0.1], [-0.2]]), _a([[1.0], [0.5]]), _a([[0.3], [0.1]])
    v1 = PG.kl_penalty_surrogate(lw, adv, kl, 1.0)
    v2 = PG.kl_penalty_surrogate(lw, adv, kl, 1.0, grad_beta=2.0)
    np.testing.assert_allclose(v1, v2, rtol=0, atol=0)
    np.testing.assert_allclose(v1[:, 0], [-(math.exp(0.1) - 0.3), -(math.exp(-0.2) * 0.5 - 0.1)], rtol=1e-14)

    def total(k, b):
        o = PG.kl_penalty_surrogate(lw, adv, k, 1.0, grad_beta=b)
        return o.__array_namespace__().sum(o)

    np.testing.assert_allclose(grad(total)(kl, 2.0), 2.0 * np.ones((2, 1)))  # TorchRL's gradient (new beta)
    np.testing.assert_allclose(grad(total)(kl, None), np.ones((2, 1)))  # the gradient of the value (old beta)


def test_adapt_kl_beta_thresholds():
    for kl, want in ((0.02, 2.0), (0.01, 1.0), (0.005, 0.5)):
        assert float(PG.adapt_kl_beta(1.0, _a([kl, kl]), 0.01)) == want


def test_clipped_value_loss_hand_value():
    v, old, tgt = _a([[1.0], [0.0]]), _a([[0.0], [0.05]]), _a([[2.0], [1.0]])
    loss, frac = PG.critic_loss(v, tgt, "l2", old_value=old, clip_value=0.2)
    # row 0: V clipped to 0.2: max((2-1)^2, (2-.2)^2) = 3.24; row 1: inside, (1-0)^2
    np.testing.assert_allclose(loss[:, 0], [3.24, 1.0], rtol=1e-14)
    assert float(frac) == 0.5


def test_explained_variance_ess_approx_kl_and_pg_loss():
    t, v = _a([[1.0], [2.0], [3.0]]), _a([[1.0], [2.5], [2.5]])
    np.testing.assert_allclose(PG.explained_variance(t, v), [1 - (1 / 6) / (2 / 3 + np.finfo(float).eps)])
    assert PG.explained_variance(_a(np.ones((3, 4, 1))), _a(np.ones((3, 4, 1)))).shape == (4, 1)  # dim 0 only
    np.testing.assert_allclose(PG.effective_sample_size(_a(np.full((5, 1), 0.3))), 1.0, rtol=1e-14)
    np.testing.assert_allclose(PG.effective_sample_size(_a([[0.0], [-800.0], [-800.0], [-800.0]])), 0.25, rtol=1e-12)
    np.testing.assert_allclose(PG.approx_kl(_a([0.0, -1.0]), _a([-0.5, -0.5])), 0.0)
    np.testing.assert_allclose(PG.policy_gradient_loss(_a([-1.0, -2.0]), _a([2.0, -1.0])), [2.0, -2.0])


def test_normalize_advantage_unbiased_exclude_dims_and_mask():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3, 1))
    got = PG.normalize_advantage(a)
    np.testing.assert_allclose(got, (a - a.mean()) / a.std(ddof=1), rtol=1e-13)
    got = PG.normalize_advantage(a, (-2,))
    np.testing.assert_allclose(got, (a - a.mean((0, 2), keepdims=True)) / a.std((0, 2), ddof=1, keepdims=True), rtol=1e-13)
    np.testing.assert_allclose(PG.normalize_advantage(np.zeros((3, 1))), np.zeros((3, 1)))  # std clamped at 1e-6
    m = np.array([[True] * 3, [True] * 3, [True, False, False], [False] * 3])
    got = PG.normalize_advantage(a, mask=m)
    sel = a[m]
    np.testing.assert_allclose(got[m], ((sel - sel.mean()) / sel.std(ddof=0)), rtol=1e-13)
    for bad in ((0, 0), (3,)):
        with pytest.raises(ValueError, match="exclude_dims"):
            PG.normalize_advantage(a, bad)


def test_kl_registry_matches_closed_forms_and_monte_carlo():
    import torch

    rng = np.random.default_rng(1)
    lp, lq = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    got = PG.kl_divergence(Categorical(logits=lp), Categorical(logits=lq))
    want = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=torch.as_tensor(lp)),
                                             torch.distributions.Categorical(logits=torch.as_tensor(lq))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-13)
    m1, s1, m2, s2 = rng.normal(size=(4, 2)), np.exp(rng.normal(size=(4, 2))), rng.normal(size=(4, 2)), np.exp(rng.normal(size=(4, 2)))
    from reference.losses.ppo import normal_kl

    ref = np.array([[normal_kl(m1[i, j], s1[i, j], m2[i, j], s2[i, j]) for j in range(2)] for i in range(4)])
    np.testing.assert_allclose(PG.kl_divergence(Normal(m1, s1), Normal(m2, s2)), ref, rtol=1e-12)
    np.testing.assert_allclose(PG.kl_divergence(IndependentNormal(m1, s1), IndependentNormal(m2, s2)), ref.sum(-1), rtol=1e-12)
    np.testing.assert_allclose(PG.kl_divergence(TanhNormal(m1, s1), TanhNormal(m2, s2)), ref.sum(-1), rtol=1e-12)
    mc = PG.mc_kl_divergence(IndependentNormal(m1, s1), IndependentNormal(m2, s2), 20000, generator=Generator(0))
    np.testing.assert_allclose(mc, ref.sum(-1), rtol=0.1, atol=0.05)


def test_entropy_analytic_and_monte_carlo():
    loc, scale = np.zeros((2, 3)), np.full((2, 3), 0.5)
    np.testing.assert_allclose(PG.entropy(IndependentNormal(loc, scale)), 3 * (0.5 + 0.5 * math.log(2 * math.pi) + math.log(0.5)))
    with pytest.raises(ValueError, match="generator"):
        PG.entropy(TanhNormal(loc, scale))
    noise = np.random.default_rng(0).normal(size=(4, 2, 3))
    d = TanhNormal(loc, scale)
    want = -np.mean(d.rsample_and_log_prob(noise=noise)[1], axis=0)
    np.testing.assert_allclose(PG.entropy(d, samples_mc_entropy=4, noise=noise), want)


def test_entropy_of_a_composite_with_a_tanh_normal_head():
    """Analytic heads in closed form, the TanhNormal head by Monte-Carlo (noise keyed by head); a composite whose
    heads all have a closed form stays analytic."""
    rng = np.random.default_rng(1)
    lg, loc, scale = rng.normal(size=(2, 3)), rng.normal(size=(2, 2)), np.full((2, 2), 0.4)
    d = CompositeDistribution.from_distributions({"move": Categorical(logits=lg), "arm": TanhNormal(loc, scale)})
    assert not PG.has_analytic_entropy(d)
    assert PG.has_analytic_entropy(CompositeDistribution.from_distributions({"move": Categorical(logits=lg)}))
    with pytest.raises(ValueError, match="generator"):
        PG.entropy(d)
    noise = rng.normal(size=(3, 2, 2))
    want = Categorical(logits=lg).entropy() - TanhNormal(loc, scale).rsample_and_log_prob(noise=noise)[1].mean(0)
    np.testing.assert_allclose(PG.entropy(d, samples_mc_entropy=3, noise={"arm": noise}), want, rtol=1e-14)
    np.testing.assert_allclose(PG.entropy(d, samples_mc_entropy=3, generator=Generator.from_noise(noise)), want,
                               rtol=1e-14)


def test_broadcast_advantage_errors_and_per_token():
    lw = np.zeros((3, 1))
    with pytest.raises(ValueError, match="advantage.*trailing singleton"):
        PG.broadcast_advantage(np.zeros(3), lw)
    assert PG.broadcast_advantage(np.arange(3.0)[:, None], np.zeros((3, 2, 1))).shape == (3, 2, 1)


# ------------------------------------------------------------------------------------------------ classes
def _cat_loss(cls=ClipPPOLoss, critic=True, dtype=np.float64, **kw):
    actor = ProbabilisticActor(KeyedModule(MLP(in_features=3, out_features=2, num_cells=[4], dtype=dtype),
                                           in_keys=["observation"], out_keys=["logits"]), in_keys=["logits"],
                               distribution_class=Categorical)
    c = ValueOperator(MLP(in_features=3, out_features=1, num_cells=[4], dtype=dtype),
                      in_keys=["observation"]) if critic else None
    return cls(actor, c, **kw)


def _cat_batch(B=4, dtype=np.float64):
    rng = np.random.default_rng(0)
    return {"observation": rng.normal(size=(B, 3)).astype(dtype), "action": rng.integers(0, 2, B),
            "action_log_prob": np.full(B, math.log(0.5), dtype=dtype), "advantage": rng.normal(size=(B, 1)).astype(dtype),
            "logits": np.zeros((B, 2), dtype=dtype),
            "next": {"observation": rng.normal(size=(B, 3)).astype(dtype), "reward": rng.normal(size=(B, 1)).astype(dtype),
                     "done": np.zeros((B, 1), bool), "terminated": np.zeros((B, 1), bool)}}


def test_bad_inputs_name_the_key():
    loss = _cat_loss()
    b = _cat_batch()
    with pytest.raises(ValueError, match="advantage.*trailing singleton"):
        loss({**b, "advantage": b["advantage"][:, 0]})
    with pytest.raises(ValueError, match="action_log_prob.*expected shape"):
        loss({**b, "action_log_prob": b["action_log_prob"][:, None]})
    with pytest.raises(KeyError, match="action_log_prob"):
        loss({k: v for k, v in b.items() if k != "action_log_prob"})
    with pytest.raises(KeyError, match="logits"):
        _cat_loss(KLPENPPOLoss)({k: v for k, v in b.items() if k != "logits"})
    with pytest.raises(RuntimeError, match="Critic network is not specified"):
        _cat_loss(critic=False)({k: v for k, v in b.items() if k != "advantage"})
    with pytest.raises(TypeError, match="critic_coef"):
        _cat_loss(critic_coef=1.0)
    with pytest.raises(TypeError, match="Missing"):
        _cat_loss(critic=False, critic_coeff=0.5)
    with pytest.raises(ValueError, match="clip_value=True"):
        _cat_loss(clip_epsilon=(0.1, 0.2), clip_value=True)


def test_critic_coeff_semantics_and_float32_and_no_mutation():
    assert _cat_loss(critic_coeff=None).critic_coeff == 1.0
    zero = _cat_loss(critic_coeff=0)
    assert "loss_critic" not in zero(_cat_batch()) and "loss_critic" not in zero.out_keys
    loss = _cat_loss(KLPENPPOLoss, clip_value=0.1, dtype=np.float32)
    b = _cat_batch(dtype=np.float32)
    b["state_value"] = np.zeros((4, 1), np.float32)
    b_no_adv = {k: v for k, v in b.items() if k != "advantage"}
    before = copy.deepcopy(b_no_adv)
    out, grads = loss.value_and_grad(b_no_adv)
    for k, v in out.items():
        assert v.dtype == np.float32, k
    assert all(g.dtype == np.float32 for g in __import__("arrayrl").tree.tree_leaves(grads))
    assert loss.beta.dtype == np.float32
    assert sorted(b_no_adv) == sorted(before)  # the caller's batch is untouched
    for k in before:
        if k != "next":
            np.testing.assert_array_equal(b_no_adv[k], before[k])


def test_make_value_estimator_every_supported_type():
    loss = _cat_loss()
    b = {k: v for k, v in _cat_batch().items() if k != "advantage"}
    for est in ("td0", "td1", "tdlambda", "gae", "vtrace"):
        loss.make_value_estimator(est, gamma=0.9)
        out = loss(b)
        assert np.isfinite(out["loss_objective"]), est
    with pytest.raises(ValueError, match="unknown alias"):
        loss.make_value_estimator("nope")


def test_klpen_beta_is_loss_state_and_reset():
    loss = _cat_loss(KLPENPPOLoss, critic=False, beta=1.0, dtarg=1e-8)
    b = _cat_batch()
    b["logits"] = np.full((4, 2), 3.0) * np.array([1.0, -1.0])  # an old policy far from the current one
    loss(b)
    assert float(loss.beta) == 2.0
    loss(b)
    assert float(loss.beta) == 4.0
    loss.reset()
    assert loss.beta == 1.0


def test_saturated_tanh_normal_ratio_is_exactly_one_at_unchanged_parameters():
    """TorchRL #2199/#4080: at loc=8, small scale, TorchRL's stored pre-tanh score differs from the atanh re-score.
    arrayrl's actor stores dist.log_prob(action) (the same atanh path the loss uses), so lw == 0 exactly."""
    B, A = 6, 2
    mlp = MLP(in_features=3, out_features=2 * A, num_cells=[])
    w = mlp.params["0"]["weight"]
    params = {"0": {"weight": np.zeros_like(w), "bias": np.concatenate([np.full(A, 8.0), np.full(A, -6.0)])}}
    pe = NormalParamExtractor()
    for dtype in (np.float32, np.float64):
        obs = np.random.default_rng(0).normal(size=(B, 3)).astype(dtype)
        mlp = MLP(in_features=3, out_features=2 * A, num_cells=[], dtype=dtype)
        mod = KeyedModule(lambda p, o, mlp=mlp: pe.apply({}, mlp.apply(p, o)), params=mlp.params,
                          in_keys=["observation"], out_keys=["loc", "scale"])
        actor = ProbabilisticActor(mod, in_keys=["loc", "scale"], distribution_class=TanhNormal, return_log_prob=True)
        actor.params = {"0": {"0": {k: v.astype(dtype) for k, v in params["0"].items()}}, "1": {}}
        batch = actor({"observation": obs}, generator=Generator(0), interaction_type="random")
        assert np.all(np.abs(batch["action"]) > 0.999)  # saturated
        batch["advantage"] = np.ones((B, 1), dtype)
        loss = ClipPPOLoss(actor, entropy_bonus=False)
        out = loss(batch)
        assert float(out["clip_fraction"]) == 0.0 and float(out["kl_approx"]) == 0.0
        assert float(out["max_ratio"]) == 1.0 and float(out["mean_ratio"]) == 1.0
        # TorchRL's stored value (the exact pre-tanh score) would break this: a different log-prob, ratio != 1
        d = actor.get_dist(actor.params, {"observation": obs})
        _, lp_pre = d.rsample_and_log_prob(Generator(0))
        assert np.max(np.abs(lp_pre - batch["action_log_prob"])) > 1e-3 or dtype == np.float64


def test_clip_ppo_with_a_categorical_and_tanh_normal_composite():
    """A composite actor (Categorical + TanhNormal heads): the ratio, clipped objective and entropy are the sums over
    heads computed by hand (the TanhNormal entropy by Monte-Carlo on the loss's generator, the Categorical's in
    closed form), and the gradient of loss_objective + loss_entropy matches float64 finite differences."""
    rng = np.random.default_rng(7)
    B, K, coef, eps = 6, 3, 0.1, 0.2
    obs = rng.normal(size=(B, 3))
    w = {"move": rng.normal(size=(3, 3)), "loc": rng.normal(size=(3, 2)), "scale": 0.3 * rng.normal(size=(3, 2))}

    def heads(p, o):
        xp = namespace_of(p["scale"])
        return {"move": {"logits": o @ p["move"]}, "arm": {"loc": o @ p["loc"], "scale": 0.2 + xp.exp(o @ p["scale"])}}

    actor = ProbabilisticActor(KeyedModule(heads, params=w, in_keys=["observation"], out_keys=["params"]),
                               in_keys=["params"], distribution_class=CompositeDistribution,
                               distribution_kwargs={"distribution_map": {"move": Categorical, "arm": TanhNormal}},
                               return_log_prob=True, default_interaction_type="random")
    batch = actor({"observation": obs}, generator=Generator(0))
    batch["advantage"] = rng.normal(size=(B, 1))
    loss = ClipPPOLoss(actor, entropy_coeff=coef, clip_epsilon=eps, samples_mc_entropy=K)
    p0 = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in w.items()}  # ratios away from 1, some clipped
    noise = rng.normal(size=(K, B, 2))

    def run(p, grads=False):
        actor.params = {"0": p, "1": {}}
        loss.generator = Generator.from_noise(noise)
        return loss.value_and_grad(batch) if grads else (loss(batch), None)

    out, g = run(p0, grads=True)
    # by hand, head by head
    hp = heads(p0, obs)
    cat, tanh = Categorical(**hp["move"]), TanhNormal(**hp["arm"])
    lw = cat.log_prob(batch["action"]["move"]) + tanh.log_prob(batch["action"]["arm"]) - batch["action_log_prob"]
    lw, adv = lw[:, None], batch["advantage"]
    surr = np.minimum(np.exp(lw) * adv, np.exp(np.clip(lw, math.log(1 - eps), math.log(1 + eps))) * adv)
    h = cat.entropy() - tanh.rsample_and_log_prob(noise=noise)[1].mean(0)
    np.testing.assert_allclose(out["loss_objective"], -surr.mean(), rtol=1e-12)
    np.testing.assert_allclose(out["entropy"], h.mean(), rtol=1e-12)
    np.testing.assert_allclose(out["loss_entropy"], -coef * h.mean(), rtol=1e-12)
    frac = float(out["clip_fraction"])
    assert 0.0 < frac < 1.0, frac
    # finite differences of loss_objective + loss_entropy, every parameter entry
    for k, v in p0.items():
        for idx in np.ndindex(v.shape):
            tot = []
            for d in (1e-6, -1e-6):
                p = {kk: vv.copy() for kk, vv in p0.items()}
                p[k][idx] += d
                o = run(p)[0]
                tot.append(float(o["loss_objective"]) + float(o["loss_entropy"]))
            np.testing.assert_allclose(g["actor_network"]["0"][k][idx], (tot[0] - tot[1]) / 2e-6, rtol=1e-5,
                                       atol=1e-8, err_msg=f"{k}{idx}")
    actor.params = {"0": w, "1": {}}


def test_learning_clip_ppo_on_a_bandit_improves_every_iteration():
    """A 3-armed bandit (means .1, .5, .9), softmax policy over free logits: ClipPPO with a mean-reward baseline
    raises the expected return at every outer iteration."""
    means = np.array([0.1, 0.5, 0.9])
    mod = KeyedModule(lambda p, o: o @ p["w"], params={"w": np.zeros((1, 3))}, in_keys=["observation"],
                      out_keys=["logits"])
    actor = ProbabilisticActor(mod, in_keys=["logits"], distribution_class=Categorical, return_log_prob=True)
    loss = ClipPPOLoss(actor, entropy_coeff=0.0)
    rng, gen = np.random.default_rng(0), Generator(0)
    returns = []
    for _ in range(8):
        probs = np.exp(actor.params["0"]["w"][0]) / np.exp(actor.params["0"]["w"][0]).sum()
        returns.append(float(probs @ means))
        batch = actor({"observation": np.ones((64, 1))}, generator=gen, interaction_type="random")
        r = means[batch["action"]] + 0.1 * rng.normal(size=64)
        batch["advantage"] = (r - r.mean())[:, None]
        for _ in range(4):
            _, g = loss.value_and_grad(batch)
            p = loss.params["actor_network"]
            loss.params = {"actor_network": {"0": {"w": p["0"]["w"] - 1.0 * g["actor_network"]["0"]["w"]}, "1": {}}}
    returns.append(float((np.exp(actor.params["0"]["w"][0]) / np.exp(actor.params["0"]["w"][0]).sum()) @ means))
    assert all(b > a for a, b in zip(returns, returns[1:])), returns
    assert returns[-1] > 0.8
