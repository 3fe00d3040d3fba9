"""DreamerV3 world-model and critic losses and the RSSM cells, without TorchRL: float64 references written out by
hand, finite differences on the tape, float32 in/out, the paper's settings reachable by arguments, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import ops
from arrayrl._backend import namespace_of
from arrayrl.autodiff import check_grads
from arrayrl.nn import KeyedModule
from arrayrl.nn.rssm import RSSMPosteriorV3, RSSMPriorV3
from arrayrl.objectives.dreamer_v3 import DreamerV3ModelLoss, DreamerV3ValueLoss, replay_value_target
from arrayrl.random import Generator

B, T, C, K, OBS = 2, 3, 3, 4, 5


def _symlog(x):
    return np.sign(x) * np.log1p(np.abs(x))


def _wm(seed=0):
    rng = np.random.default_rng(seed)
    p = {n: {"weight": rng.normal(size=(o, OBS)) * 0.5, "bias": rng.normal(size=(o,)) * 0.1}
         for n, o in (("post", C * K), ("prior", C * K), ("reco", OBS), ("reward", 1), ("cont", 1))}

    def fn(p, x):
        xp = namespace_of(x, p["post"]["weight"])
        lead = tuple(x.shape[:-1])

        def lin(n, v):
            return ops.linear(v, p[n]["weight"], p[n]["bias"])

        return (xp.reshape(lin("post", x), lead + (C, K)), xp.reshape(lin("prior", xp.tanh(x)), lead + (C, K)),
                lin("reco", x), lin("reward", x), lin("cont", x))

    keys = [("next", k) for k in ("posterior_logits", "prior_logits", "reco_pixels", "reward", "continue_pred")]
    return KeyedModule(fn, params=p, in_keys=[("next", "pixels")], out_keys=keys), p


def _batch(seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    term = rng.random(size=(B, T, 1)) < 0.4
    return {"next": {"pixels": (rng.normal(size=(B, T, OBS)) * 2).astype(dtype),
                     "reward": (rng.normal(size=(B, T, 1)) * 3).astype(dtype), "terminated": term, "done": term}}


PAPER = dict(kl_mode="separate", lambda_dynamic=0.5, lambda_representation=0.1, free_bits=1.0, unimix=0.01,
             lambda_continue=1.0, reward_two_hot=False)


def test_model_loss_float64_reference_paper_settings():
    """The paper's world-model loss (separate dyn/rep KL with free bits on the sum over categoricals, 1% unimix, a
    continue head) is reachable by arguments; checked against a hand-written NumPy float64 computation."""
    wm, p = _wm()
    batch = _batch()
    out = DreamerV3ModelLoss(wm, **PAPER)(batch)
    x = batch["next"]["pixels"]

    def lin(n, v):
        return v @ p[n]["weight"].T + p[n]["bias"]

    def probs(lg):
        e = np.exp(lg - lg.max(-1, keepdims=True))
        return 0.99 * e / e.sum(-1, keepdims=True) + 0.01 / K

    q, pr = probs(lin("post", x).reshape(B, T, C, K)), probs(lin("prior", np.tanh(x)).reshape(B, T, C, K))
    kl = np.maximum((q * (np.log(q) - np.log(pr))).sum((-1, -2)), 1.0).mean()
    reco = ((_symlog(x) - _symlog(lin("reco", x))) ** 2).sum(-1).mean()
    rew = ((_symlog(batch["next"]["reward"]) - _symlog(lin("reward", x))) ** 2).mean()
    logit, y = lin("cont", x)[..., 0], 1.0 - batch["next"]["terminated"][..., 0]
    bce = (np.logaddexp(0, logit) - logit * y).mean()
    ref = {"loss_model_dynamic": 0.5 * kl, "loss_model_representation": 0.1 * kl, "loss_model_reco": reco,
           "loss_model_reward": rew, "loss_model_continue": bce}
    assert sorted(out) == sorted(ref)
    for k, v in ref.items():
        np.testing.assert_allclose(out[k], [v], rtol=1e-12)


@pytest.mark.parametrize("kw", [dict(), PAPER, dict(reco_loss="l1", global_average=True, free_bits=0.0,
                                                     reward_two_hot=False)])
def test_model_loss_finite_differences(kw):
    wm, p = _wm()
    loss = DreamerV3ModelLoss(wm, **{"reward_two_hot": False, **kw})
    batch = _batch()

    def f(params):
        out = loss._forward(batch, {"world_model": params})
        acc = 0.0  # the KL terms carry stop-gradients (value != surrogate): their gradients are checked vs TorchRL
        for k, v in out.items():
            if k in ("loss_model_reco", "loss_model_reward", "loss_model_continue"):
                acc = acc + namespace_of(v).sum(v)
        return acc

    check_grads(f, (p,), rtol=1e-5, atol=1e-7)


def test_model_loss_float32_in_float32_out():
    wm, p = _wm()
    wm.params = {n: {k: v.astype(np.float32) for k, v in d.items()} for n, d in p.items()}
    out = DreamerV3ModelLoss(wm, **PAPER)(_batch(dtype=np.float32))
    assert all(v.dtype == np.float32 for v in out.values())


def test_model_loss_bad_input():
    wm, _ = _wm()
    batch = _batch()
    with pytest.raises(ValueError, match="kl_mode"):
        DreamerV3ModelLoss(wm, kl_mode="both")
    with pytest.raises(ValueError, match="continue_target_scale"):
        DreamerV3ModelLoss(wm, continue_target_scale=0.0)
    with pytest.raises(TypeError, match="world_model"):
        DreamerV3ModelLoss(object())
    with pytest.raises(KeyError, match="reward"):
        DreamerV3ModelLoss(wm, reward_two_hot=False)({"next": {"pixels": batch["next"]["pixels"]}})
    # two-hot expects 255 logits: the scalar head is rejected with the bin count in the message
    with pytest.raises(ValueError, match="255 bins"):
        with pytest.warns(DeprecationWarning):
            DreamerV3ModelLoss(wm)(batch)
    # lambda_continue > 0 requires the continue keys (TorchRL silently skips the term)
    nxt = {k: v for k, v in batch["next"].items() if k not in ("terminated", "done")}
    with pytest.raises(KeyError, match="terminated or done"):
        DreamerV3ModelLoss(wm, reward_two_hot=False, lambda_continue=1.0)({"next": nxt})


# ------------------------------------------------------------------------------------------------ value loss
def _value(seed=0, two_hot=False):
    rng = np.random.default_rng(seed)
    p = {"weight": rng.normal(size=(255 if two_hot else 1, OBS)) * 0.3, "bias": np.zeros(255 if two_hot else 1)}

    def fn(p, x):
        return ops.linear(x, p["weight"], p["bias"]) * (1.0 if two_hot else 4.0)

    key = "state_value_logits" if two_hot else "state_value"
    return KeyedModule(fn, params=p, in_keys=["state"], out_keys=[key]), p


def test_value_loss_float64_reference():
    vm, p = _value()
    rng = np.random.default_rng(2)
    fake = {"state": rng.normal(size=(B, T, OBS)), "lambda_target": rng.normal(size=(B, T, 1)) * 5}
    out = DreamerV3ValueLoss(vm, gamma=0.9)(fake)
    v = (fake["state"] @ p["weight"].T + p["bias"])[..., 0] * 4
    w = 0.9 ** np.arange(T)
    ref = (w * (_symlog(v) - _symlog(fake["lambda_target"][..., 0])) ** 2).mean()
    np.testing.assert_allclose(out["loss_value"], ref, rtol=1e-12)
    assert out["value_slow_loss"] == 0


def test_value_loss_paper_settings_and_finite_differences():
    """Paper: a two-hot critic regularised towards its slow copy (slowreg 1); gradients by finite differences."""
    vm, p = _value(two_hot=True)
    rng = np.random.default_rng(4)
    fake = {"state": rng.normal(size=(B, T, OBS)), "lambda_target": rng.normal(size=(B, T, 1)) * 5}
    loss = DreamerV3ValueLoss(vm, value_loss="two_hot", slow_critic_regularization=1.0)
    loss.target_params = {"value_model": {k: v + 0.05 for k, v in p.items()}}
    out = loss(fake)
    assert float(out["value_slow_loss"]) > 0

    def f(params):
        return loss._forward(fake, {"value_model": params})["loss_value"]

    check_grads(f, (p,), rtol=1e-5, atol=1e-7)


def test_replay_value_target_reference():
    rng = np.random.default_rng(5)
    r, boot = rng.normal(size=(T + 2,)), rng.normal(size=(T + 2,))
    done = np.zeros(T + 2, bool)
    g, lm = 1 - 1 / 10.0, 0.8
    out = replay_value_target(r[None], done[None], done[None], boot[None], horizon=10.0, lmbda=lm)[0]
    ref = np.zeros(T + 1)
    nxt = boot[-1]
    for k in reversed(range(T + 1)):
        nxt = r[k + 1] + g * ((1 - lm) * boot[k + 1] + lm * nxt) if k < T else r[k + 1] + g * boot[k + 1]
        ref[k] = nxt
    np.testing.assert_allclose(out, ref, rtol=1e-12)


def test_value_loss_bad_input():
    vm, _ = _value()
    with pytest.raises(ValueError, match="value_loss"):
        DreamerV3ValueLoss(vm, value_loss="mse")
    with pytest.raises(ValueError, match="slow_critic_regularization"):
        DreamerV3ValueLoss(vm, slow_critic_regularization=-1.0)
    with pytest.raises(KeyError, match="lambda_target"):
        DreamerV3ValueLoss(vm)({"state": np.zeros((B, T, OBS))})
    with pytest.raises(ValueError, match="lambda_target"):
        DreamerV3ValueLoss(vm)({"state": np.zeros((B, T, OBS)), "lambda_target": np.zeros((B, T + 1, 1))})


# ------------------------------------------------------------------------------------------------ RSSM
def test_rssm_sampling_one_hot_from_generator_and_injected_uniform():
    prior = RSSMPriorV3(8, 6, C, K, 2, unimix=0.01)
    post = RSSMPosteriorV3(8, C, K, 6, 5, use_rms_norm=True)
    rng = np.random.default_rng(0)
    s, b, a = rng.normal(size=(4, C * K)), rng.normal(size=(4, 6)), rng.normal(size=(4, 2))
    lg, st, bl = prior(s, b, a, generator=Generator(3))
    assert lg.shape == (4, C, K) and st.shape == (4, C * K) and bl.shape == (4, 6)
    np.testing.assert_array_equal(st.reshape(4, C, K).sum(-1), 1.0)
    u = Generator(3).uniform((4, C), dtype=np.float64)
    _, st2, _ = prior(s, b, a, uniform=u)
    np.testing.assert_array_equal(st, st2)
    # u = 0 picks class 0, u -> 1 the last class
    _, z0 = post(bl, rng.normal(size=(4, 5)), uniform=np.zeros((4, C)))
    np.testing.assert_array_equal(z0.reshape(4, C, K)[..., 0], 1.0)


def test_rssm_bad_input():
    with pytest.raises(ValueError, match="action_dim"):
        RSSMPriorV3(8, 6, C, K)
    with pytest.raises(ValueError, match="recurrent_model"):
        RSSMPriorV3(8, 6, C, K, 2, recurrent_model="lstm")
    with pytest.raises(ValueError, match="unimix"):
        RSSMPosteriorV3(8, C, K, 6, 5, unimix=1.0)
    prior = RSSMPriorV3(8, 6, C, K, 2)
    with pytest.raises(ValueError, match="belief"):
        prior(np.zeros((2, C * K)), np.zeros((2, 7)), np.zeros((2, 2)), uniform=np.zeros((2, C)))
    with pytest.raises(TypeError, match="state"):
        prior(np.zeros((2, C * K), np.float32), np.zeros((2, 6)), np.zeros((2, 2)), uniform=np.zeros((2, C)))
    with pytest.raises(ValueError, match="uniform"):
        prior(np.zeros((2, C * K)), np.zeros((2, 6)), np.zeros((2, 2)))


def test_rssm_float32_and_block_gru_finite_differences():
    prior = RSSMPriorV3(8, 6, C, K, 2, recurrent_model="block_gru", num_blocks=2, xp=None, dtype=np.float32)
    lg, st, bl = prior(np.zeros((2, C * K), np.float32), np.ones((2, 6), np.float32), np.ones((2, 2), np.float32),
                       uniform=np.full((2, C), 0.5, np.float32))
    assert lg.dtype == st.dtype == bl.dtype == np.float32
    p64 = RSSMPriorV3(8, 6, C, K, 2, recurrent_model="block_gru", num_blocks=2)
    rng = np.random.default_rng(1)
    s, b, a = rng.normal(size=(2, C * K)), rng.normal(size=(2, 6)), rng.normal(size=(2, 2)) * 2

    def f(params, s_, b_):
        lg, bl = p64.belief_and_logits(params, s_, b_, a)
        xp = namespace_of(lg, bl)
        return xp.sum(lg * xp.cos(lg)) + xp.sum(bl * bl)

    check_grads(f, (p64.params, s, b), rtol=1e-5, atol=1e-7)
