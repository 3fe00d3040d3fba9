"""Self-tests of reference.losses.dreamer: hand-computed goldens, the lambda-return's limits (TD(0), discounted sum),
the quantile against numpy's linear method and the Gaussian KL against its closed form at known points."""

from __future__ import annotations

import math

import numpy as np

from reference import dreamer as D
from reference.losses import dreamer as R


def test_lambda_return_hand_and_limits():
    r, v = np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 1.0, 1.0]])
    # G2 = 3 + .5 = 3.5; G1 = 2 + .5 (.5 + .5 3.5) = 3.125; G0 = 1 + .5 (.5 + .5 3.125) = 2.03125
    np.testing.assert_allclose(R.lambda_return(r, v, 0.5, 0.5), [[2.03125, 3.125, 3.5]], rtol=1e-15)
    np.testing.assert_allclose(R.lambda_return(r, v, 0.5, 0.5, torchrl_compat=True), [[1.5, 2.5, 3.5]])
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    np.testing.assert_allclose(R.lambda_return(r, v, 0.9, 0.0), r + 0.9 * v, rtol=1e-14)
    mc = np.array([[sum(0.9 ** (k - t) * r[i, k] for k in range(t, 5)) + 0.9 ** (5 - t) * v[i, 4]
                    for t in range(5)] for i in range(2)])
    np.testing.assert_allclose(R.lambda_return(r, v, 0.9, 1.0), mc, rtol=1e-13)
    # a zero continuation cuts the return: G_t = r_t there
    c = np.ones((2, 5))
    c[:, 2] = 0.0
    g = R.lambda_return(r, v, 0.9, 0.7, c)
    np.testing.assert_allclose(g[:, 2], r[:, 2], rtol=1e-15)
    np.testing.assert_allclose(g[:, 1], r[:, 1] + 0.9 * (0.3 * v[:, 1] + 0.7 * r[:, 2]), rtol=1e-14)


def test_discount_weights_and_v1_losses_hand():
    np.testing.assert_allclose(R.discount_weights((1, 3), 0.5), [[1.0, 0.5, 0.25]])
    np.testing.assert_allclose(R.discount_weights((1, 3), 0.5, [[0.8, 0.5, 1.0]]), [[0.8, 0.2, 0.1]])
    r, v = np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 1.0, 1.0]])
    loss, g = R.dreamer_actor_loss(r, v, 0.5, 0.5)
    assert math.isclose(loss, -(2.03125 + 0.5 * 3.125 + 0.25 * 3.5), rel_tol=1e-15)
    loss, _ = R.dreamer_actor_loss(r, v, 0.5, 0.5, discount_loss=False)
    assert math.isclose(loss, -(2.03125 + 3.125 + 3.5), rel_tol=1e-15)
    val = np.array([[2.0, 3.0, 3.0], [0.0, 0.0, 0.0]])
    tgt = np.array([[2.5, 1.0, 3.0], [1.0, 0.0, 0.0]])
    # row 0: .25 + .5 * 4 = 2.25; row 1: 1 -> mean 1.625
    assert math.isclose(R.dreamer_value_loss(val, tgt, 0.5), 1.625, rel_tol=1e-15)
    assert math.isclose(R.dreamer_value_loss(val, tgt, 0.5, value_loss="l1", discount_loss=False),
                        (0.5 + 2.0 + 1.0) / 2, rel_tol=1e-15)


def test_v1_model_loss_gaussian_kl_and_free_nats():
    # KL(N(0, 1) || N(1, 2)) = log 2 + (1 + 1) / 8 - 1/2
    kl1 = math.log(2.0) + 2.0 / 8.0 - 0.5
    pm, ps = np.array([[1.0, 0.0]]), np.array([[2.0, 1.0]])
    qm, qs = np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]])
    x, xh = np.zeros((1, 1, 1, 2)), np.array([[[[1.0, 2.0]]]])
    out = R.dreamer_model_loss(pm, ps, qm, qs, x, xh, [0.5], [1.5], free_nats=0.0, lambda_reco=2.0)
    assert math.isclose(out["loss_model_kl"], kl1, rel_tol=1e-14)
    assert math.isclose(out["loss_model_reco"], 2.0 * 5.0, rel_tol=1e-15)
    assert math.isclose(out["loss_model_reward"], 1.0, rel_tol=1e-15)
    assert R.dreamer_model_loss(pm, ps, qm, qs, x, xh, [0.5], [1.5])["loss_model_kl"] == 3.0  # free nats
    ga = R.dreamer_model_loss(pm, ps, qm, qs, x, xh, [0.5], [1.5], free_nats=0.0, global_average=True)
    assert math.isclose(ga["loss_model_kl"], kl1 / 2, rel_tol=1e-14)
    assert math.isclose(ga["loss_model_reco"], 2.5, rel_tol=1e-15)
    # delayed clamp: mean then clip; per-element clip first differs when one sample is below the floor
    pm2, ps2 = np.vstack([pm, [[0.0, 0.0]]]), np.vstack([ps, [[1.0, 1.0]]])
    qm2, qs2 = np.zeros((2, 2)), np.ones((2, 2))
    x2, xh2 = np.zeros((2, 1, 1, 2)), np.zeros((2, 1, 1, 2))
    a = R.dreamer_model_loss(pm2, ps2, qm2, qs2, x2, xh2, [0, 0], [0, 0], free_nats=0.3)["loss_model_kl"]
    b = R.dreamer_model_loss(pm2, ps2, qm2, qs2, x2, xh2, [0, 0], [0, 0], free_nats=0.3,
                             delayed_clamp=True)["loss_model_kl"]
    assert math.isclose(a, (kl1 + 0.3) / 2, rel_tol=1e-14) and math.isclose(b, 0.3, rel_tol=1e-15)


def test_percentile_update_matches_numpy_linear_quantile():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(3, 7))
    lo, hi = R.percentile_update(g, 0.1, 0.2, rate=0.25)
    assert math.isclose(lo, 0.1 + 0.25 * (np.quantile(g, 0.05) - 0.1), rel_tol=1e-14)
    assert math.isclose(hi, 0.2 + 0.25 * (np.quantile(g, 0.95) - 0.2), rel_tol=1e-14)


def test_v3_actor_loss_hand():
    r, v = np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 1.0, 1.0]])
    g = np.array([2.03125, 3.125, 3.5])
    w = np.array([1.0, 0.5, 0.25])
    out = R.dreamer_v3_actor_loss(r, v, 0.5, 0.5, return_normalization=False)
    assert math.isclose(out["loss_actor"], -float(w @ g) / 3, rel_tol=1e-15)
    assert out["return_scale"] == 1.0 and out["continuation_mean"] == 1.0
    # statistics from zero with rate 1: lo/hi = the quantiles; scale = max(hi - lo, 1)
    out = R.dreamer_v3_actor_loss(r, v, 0.5, 0.5, rate=1.0, quantiles=(0.0, 1.0), min_scale=0.1)
    assert math.isclose(out["return_scale"], 3.5 - 2.03125, rel_tol=1e-15)
    assert math.isclose(out["loss_actor"], -float(w @ g) / 3 / (3.5 - 2.03125), rel_tol=1e-15)
    lp, base, ent = np.array([[-1.0, 0.5, 2.0]]), np.array([[2.0, 3.0, 4.0]]), np.array([[0.3, 0.2, 0.1]])
    out = R.dreamer_v3_actor_loss(r, v, 0.5, 0.5, use_reinforce=True, log_prob=lp, baseline=base, entropy=ent,
                                  entropy_bonus=0.5, return_normalization=False)
    pg = -float(np.sum(w * lp[0] * (g - base[0]))) / 3
    e = float(w @ ent[0]) / 3
    assert math.isclose(out["actor_entropy"], e, rel_tol=1e-15)
    assert math.isclose(out["loss_actor"], pg - 0.5 * e, rel_tol=1e-14)
    # continuation: root = [c(s_0), c_0, c_1]; w = cumprod(root * [1, gamma, gamma])
    c = np.array([[0.5, 1.0, 0.8]])
    out = R.dreamer_v3_actor_loss(r, v, 0.5, 0.5, continuation=c, first_continuation=[0.9],
                                  return_normalization=False)
    np.testing.assert_allclose(out["discount_weight"], [[0.9, 0.9 * 0.5 * 0.5, 0.9 * 0.25 * 0.5 * 1.0]])
    assert math.isclose(out["continuation_mean"], 2.3 / 3, rel_tol=1e-15)
    g2 = 3 + 0.5 * 0.8
    g1 = 2 + 0.5 * (0.5 + 0.5 * g2)
    g0 = 1 + 0.5 * 0.5 * (0.5 + 0.5 * g1)
    np.testing.assert_allclose(out["lambda_target"], [[g0, g1, g2]], rtol=1e-15)


def test_v3_value_and_replay_losses_hand():
    val, tgt = np.array([[0.0, 1.0]]), np.array([[math.e - 1.0, 1.0]])  # symlog(e - 1) = 1
    out = R.dreamer_v3_value_loss(val, tgt, gamma=0.5)
    assert math.isclose(out["loss_value"], 0.5, rel_tol=1e-14) and out["value_slow_loss"] == 0.0
    slow = np.array([[0.0, 0.0]])
    out = R.dreamer_v3_value_loss(val, tgt, gamma=0.5, slow_value=slow, slow_reg=2.0, reduction="sum")
    s = math.log(2.0) ** 2  # symlog(1)^2 at t = 1, weight 0.5
    assert math.isclose(out["value_slow_loss"], 0.5 * s, rel_tol=1e-14)
    assert math.isclose(out["loss_value"], 1.0 + 2.0 * 0.5 * s, rel_tol=1e-14)
    bins = np.array([-1.0, 0.0, 1.0])
    logits = np.zeros((1, 2, 3))
    out = R.dreamer_v3_value_loss(logits, np.array([[0.3, 0.0]]), value_loss="two_hot", bins=bins,
                                  weight=np.ones((1, 2)))
    assert math.isclose(out["loss_value"], math.log(3.0), rel_tol=1e-14)  # uniform logits: CE = log 3
    # replay: T = 3, horizon 2 -> gamma .5, lmbda 0: target_k = r_{k+1} + .5 (1 - term_{k+1}) boot_{k+1}
    rew, boot = np.array([[9.0, 1.0, 2.0]]), np.array([[9.0, 4.0, 6.0]])
    done = term = np.array([[False, False, True]])
    np.testing.assert_allclose(R.replay_value_target(rew, done, term, boot, 2.0, 0.0), [[3.0, 2.0]])
    pred = np.array([[0.0, 0.0, 5.0]])
    want = (D.symlog(np.array([3.0]))[0] ** 2 + D.symlog(np.array([2.0]))[0] ** 2) / 2
    assert math.isclose(R.replay_value_loss(pred, rew, done, term, boot, horizon=2.0, lmbda=0.0), want,
                        rel_tol=1e-14)
    done2 = np.array([[True, False, True]])  # step 0 masked out (weight 0, still counted by the mean)
    assert math.isclose(R.replay_value_loss(pred, rew, done2, term, boot, horizon=2.0, lmbda=0.0),
                        D.symlog(np.array([2.0]))[0] ** 2 / 2, rel_tol=1e-14)


def test_v3_model_loss_hand():
    post = np.log(np.array([[[0.5, 0.5]]]))
    prior = np.log(np.array([[[0.25, 0.75]]]))
    kl = 0.5 * math.log(2.0) + 0.5 * math.log(0.5 / 0.75)
    x, xh = np.array([[math.e - 1.0, 0.0]]), np.array([[0.0, 0.0]])
    out = R.dreamer_v3_model_loss([0.0], prior, post, [(x, xh, True)], reward=[math.e - 1.0], free_bits=0.0,
                                  lambda_kl=2.0)
    assert math.isclose(out["loss_model_kl"], 2.0 * kl, rel_tol=1e-13)
    assert math.isclose(out["loss_model_reco"], 1.0, rel_tol=1e-14)
    assert math.isclose(out["loss_model_reward"], 1.0, rel_tol=1e-14)
    out = R.dreamer_v3_model_loss([0.0], prior, post, [(np.array([[255, 0]], np.uint8), xh, False)],
                                  reward=[0.0], kl_mode="separate", free_bits=0.0, lambda_dynamic=0.5,
                                  reco_loss="l1", lambda_continue=3.0, continue_logits=[0.0],
                                  terminated=[False], continue_target_scale=0.5)
    assert math.isclose(out["loss_model_reco"], 1.0, rel_tol=1e-15)  # 255 / 255
    assert math.isclose(out["loss_model_dynamic"], 0.5 * kl, rel_tol=1e-13)
    assert math.isclose(out["loss_model_representation"], 0.1 * kl, rel_tol=1e-13)
    assert math.isclose(out["loss_model_continue"], 3.0 * math.log(2.0), rel_tol=1e-14)  # softplus(0) - 0
    bins = np.array([-1.0, 0.0, 1.0])
    out = R.dreamer_v3_model_loss([0.3], prior, post, [(x, xh, True)], reward_logits=np.zeros((1, 3)), bins=bins)
    assert math.isclose(out["loss_model_reward"], math.log(3.0), rel_tol=1e-14)
    assert out["loss_model_kl"] == 1.0  # free bits
    assert R.symexp_bins(3)[1] == 0.0 and math.isclose(R.symexp_bins(3)[2], math.expm1(20.0), rel_tol=1e-15)
