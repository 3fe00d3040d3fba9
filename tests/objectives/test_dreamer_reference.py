"""Dreamer (v1) and DreamerV3 losses against the float64 per-sample oracle (reference/losses/dreamer.py) on Hypothesis
inputs, on every backend (the ``xp`` fixture: numpy, array-api-strict (float64 and float32), torch, taped-numpy).

The networks are tiny linear/tanh maps whose parameters are NumPy arrays: arrayrl runs them on the backend, the test
re-evaluates them in float64 NumPy on the trajectory arrayrl imagined (so the imagination itself is checked step by
step: the actions are the reference TanhNormal samples of the injected noise, the next states the transition of the
previous ones), and the reference gets only those outputs (rewards, values, continuations, log-probs, logits)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl._backend import namespace_of
from arrayrl.distributions import TanhNormal
from arrayrl.nn import KeyedModule, ProbabilisticActor, Sequential
from arrayrl.objectives.dreamer import DreamerActorLoss, DreamerEnv, DreamerModelLoss, DreamerValueLoss
from arrayrl.objectives.dreamer_utils import default_bins
from arrayrl.objectives.dreamer_v3 import DreamerV3ActorLoss, DreamerV3ModelLoss, DreamerV3ValueLoss
from arrayrl.random import Generator
from arrayrl.value import ValueEstimators
from reference import dreamer as RD
from reference.distributions import tanh_normal_log_prob, tanh_normal_rsample
from reference.losses import dreamer as R

S, BEL, A = 3, 2, 2
F = S + BEL
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# ------------------------------------------------------------------------------------------------ networks
def _ns(*arrays):
    return namespace_of(*arrays)


def _cat(s, b):
    return _ns(s, b).concat([s, b], axis=-1)


def _trans(p, s, b, a):
    xp = _ns(s, b, a, p["ws"])
    x = xp.concat([s, b, a], axis=-1)
    return xp.tanh(x @ p["ws"]), xp.tanh(x @ p["wb"])


def _actor(p, s, b):
    xp = _ns(s, b, p["w"])
    z = _cat(s, b) @ p["w"]
    return z[..., :A], xp.log1p(xp.exp(z[..., A:])) + 0.2


def _linear(p, s, b):
    return _cat(s, b) @ p["w"]


def _sigmoid(p, s, b):
    return 1.0 / (1.0 + _ns(s, b, p["w"]).exp(-(_cat(s, b) @ p["w"]) - 1.0))


def _np_sp(z):
    return np.log1p(np.exp(z))


def _weights(seed):
    rng = np.random.default_rng(seed)
    return {"ws": rng.normal(size=(F + A, S)) * 0.6, "wb": rng.normal(size=(F + A, BEL)) * 0.6,
            "actor": rng.normal(size=(F, 2 * A)) * 0.5, "reward": rng.normal(size=(F, 1)),
            "value": rng.normal(size=(F, 1)), "cont": rng.normal(size=(F, 1)) * 0.5,
            "state": rng.normal(size=(4, S)), "belief": rng.normal(size=(4, BEL)), "rng": rng}


def _modules(xp, w):
    f = xp.from_numpy
    trans = KeyedModule(_trans, params={"ws": f(w["ws"]), "wb": f(w["wb"])}, in_keys=["state", "belief", "action"],
                        out_keys=["state", "belief"])
    reward = KeyedModule(_linear, params={"w": f(w["reward"])}, in_keys=["state", "belief"], out_keys=["reward"])
    env = DreamerEnv(Sequential(trans, reward))
    actor = ProbabilisticActor(KeyedModule(_actor, params={"w": f(w["actor"])}, in_keys=["state", "belief"],
                                           out_keys=["loc", "scale"]),
                               in_keys=["loc", "scale"], distribution_class=TanhNormal)
    value = KeyedModule(_linear, params={"w": f(w["value"])}, in_keys=["state", "belief"], out_keys=["state_value"])
    cont = KeyedModule(_sigmoid, params={"w": f(w["cont"])}, in_keys=["state", "belief"], out_keys=["continuation"])
    return env, actor, value, cont


def _np_feat(s, b):
    return np.concatenate([s, b], axis=-1)


def _np_loc_scale(w, s, b):
    z = _np_feat(s, b) @ w["actor"]
    return z[..., :A], _np_sp(z[..., A:]) + 0.2


def _check_rollout(xp, w, fake, noise, n, h):
    """The imagined trajectory, step by step: ``a_t`` = TanhNormal sample of ``noise_t``, ``s_{t+1} = f(s_t, a_t)``,
    ``r_t = reward(s_{t+1})``."""
    tol = dict(rtol=max(xp.rtol, 1e-9), atol=max(xp.atol, 1e-10))
    s, b = w["state"][:n], w["belief"][:n]
    for t in range(h):
        np.testing.assert_allclose(xp.to_numpy(fake["state"])[:, t], s, **tol, err_msg="state")
        loc, scale = _np_loc_scale(w, s, b)
        act, _ = tanh_normal_rsample(loc, scale, noise[t])
        np.testing.assert_allclose(xp.to_numpy(fake["action"])[:, t], act, **tol, err_msg="action")
        x = np.concatenate([s, b, act], axis=-1)
        s, b = np.tanh(x @ w["ws"]), np.tanh(x @ w["wb"])
        np.testing.assert_allclose(xp.to_numpy(fake["next"]["reward"])[:, t], _np_feat(s, b) @ w["reward"], **tol,
                                   err_msg="reward")


def _close(xp, got, want, what):
    got_np = xp.to_numpy(got)
    assert ("float32" in str(got.dtype)) == (not xp.is_float64), what  # float32 in -> float32 out
    np.testing.assert_allclose(np.asarray(got_np, np.float64).reshape(np.shape(want)), want,
                               rtol=max(xp.rtol, 1e-9), atol=max(xp.atol, 1e-10), err_msg=what)


@st.composite
def _imagination(draw):
    return dict(seed=draw(st.integers(0, 2 ** 16)), n=draw(st.integers(1, 3)), h=draw(st.integers(2, 4)),
                gamma=draw(st.sampled_from([0.99, 0.8])), lmbda=draw(st.sampled_from([0.95, 0.5, 0.0, 1.0])),
                discount_loss=draw(st.booleans()), compat=draw(st.booleans()),
                value_loss=draw(st.sampled_from(["l2", "l1", "smooth_l1"])))


def _roll(xp, c, cls, **kw):
    w = _weights(c["seed"])
    env, actor, value, cont = _modules(xp, w)
    n, h = c["n"], c["h"]
    extra = {"continuation_model": cont} if kw.pop("with_cont", False) else {}
    loss = cls(actor, value, env, imagination_horizon=h, discount_loss=c["discount_loss"],
               torchrl_compat=c["compat"], **extra, **kw)
    loss = loss.make_value_estimator(ValueEstimators.TDLambda, gamma=c["gamma"], lmbda=c["lmbda"])
    noise = [w["rng"].normal(size=(n, A)) for _ in range(h)]
    ent_noise = w["rng"].normal(size=(n, h, A))
    draws = [xp.from_numpy(z) for z in noise] + [xp.from_numpy(ent_noise)]
    batch = {"state": xp.from_numpy(w["state"][:n]), "belief": xp.from_numpy(w["belief"][:n])}
    return w, loss, value, batch, draws, noise, ent_noise


def _np_traj(xp, fake):
    s, b = xp.to_numpy(fake["state"]).astype(np.float64), xp.to_numpy(fake["belief"]).astype(np.float64)
    s1 = xp.to_numpy(fake["next"]["state"]).astype(np.float64)
    b1 = xp.to_numpy(fake["next"]["belief"]).astype(np.float64)
    r = xp.to_numpy(fake["next"]["reward"]).astype(np.float64)[..., 0]
    return s, b, s1, b1, r


# ------------------------------------------------------------------------------------------------ Dreamer v1
@settings(max_examples=3)
@given(c=_imagination())
def test_dreamer_v1_actor_and_value_losses_vs_reference(xp, c):
    w, loss, value, batch, draws, noise, _ = _roll(xp, c, DreamerActorLoss)
    out, fake = loss(batch, generator=Generator.from_noise(*draws[:-1]))
    _check_rollout(xp, w, fake, noise, c["n"], c["h"])
    s, b, s1, b1, r = _np_traj(xp, fake)
    want, g = R.dreamer_actor_loss(r, (_np_feat(s1, b1) @ w["value"])[..., 0], c["gamma"], c["lmbda"],
                                   discount_loss=c["discount_loss"], torchrl_compat=c["compat"])
    _close(xp, out["loss_actor"], want, "loss_actor")
    _close(xp, fake["lambda_target"], g[..., None], "lambda_target")
    vloss = DreamerValueLoss(value, value_loss=c["value_loss"], discount_loss=c["discount_loss"], gamma=c["gamma"])
    vout, _ = vloss(fake)
    want_v = R.dreamer_value_loss((_np_feat(s, b) @ w["value"])[..., 0], g, c["gamma"],
                                  discount_loss=c["discount_loss"], value_loss=c["value_loss"])
    _close(xp, vout["loss_value"], want_v, "loss_value")


def _v1_world_model(xp, wm):
    f = xp.from_numpy

    def fn(p, x):
        ns = _ns(x, p["pm"])
        sp = lambda z: ns.log1p(ns.exp(z)) + 0.1  # noqa: E731
        reco = ns.reshape(x @ p["reco"], tuple(x.shape[:-1]) + (1, 2, 2))
        return x @ p["pm"], sp(x @ p["ps"]), x @ p["qm"], sp(x @ p["qs"]), reco, x @ p["r"]

    keys = ["prior_mean", "prior_std", "posterior_mean", "posterior_std", "reco_pixels", "reward"]
    return KeyedModule(fn, params={k: f(v) for k, v in wm.items()}, in_keys=["x"],
                       out_keys=[("next", k) for k in keys])


@settings(max_examples=8)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(2, 4), free_nats=st.sampled_from([0.0, "mid", 3.0]),
       delayed=st.booleans(), global_average=st.booleans(), fn=st.sampled_from(["l2", "l1", "smooth_l1"]))
def test_dreamer_v1_model_loss_vs_reference(xp, seed, n, free_nats, delayed, global_average, fn):
    rng = np.random.default_rng(seed)
    wm = {k: rng.normal(size=(3, m)) * 0.5 for k, m in (("pm", 2), ("ps", 2), ("qm", 2), ("qs", 2), ("reco", 4),
                                                         ("r", 1))}
    x, pix, rew = rng.normal(size=(n, 3)), rng.normal(size=(n, 1, 2, 2)), rng.normal(size=(n, 1))
    if free_nats == "mid":  # a floor between the smallest and the largest KL: clipping per sample != after the mean
        sp_, qs_ = _np_sp(x @ wm["ps"]) + 0.1, _np_sp(x @ wm["qs"]) + 0.1
        kl = np.log(sp_ / qs_) + (qs_ ** 2 + (x @ wm["pm"] - x @ wm["qm"]) ** 2) / (2 * sp_ ** 2) - 0.5
        kl = kl.ravel() if global_average else kl.sum(-1)
        free_nats = float(kl.min() + kl.max()) / 2
    loss = DreamerModelLoss(_v1_world_model(xp, wm), lambda_kl=0.7, lambda_reco=1.3, lambda_reward=0.4,
                            reco_loss=fn, reward_loss=fn, free_nats=free_nats, delayed_clamp=delayed,
                            global_average=global_average)
    batch = {"x": xp.from_numpy(x), "next": {"pixels": xp.from_numpy(pix), "reward": xp.from_numpy(rew)}}
    out, _ = loss(batch)
    sp = lambda z: _np_sp(z) + 0.1  # noqa: E731
    want = R.dreamer_model_loss(x @ wm["pm"], sp(x @ wm["ps"]), x @ wm["qm"], sp(x @ wm["qs"]), pix,
                                (x @ wm["reco"]).reshape(n, 1, 2, 2), rew, x @ wm["r"], lambda_kl=0.7,
                                lambda_reco=1.3, lambda_reward=0.4, reco_loss=fn, reward_loss=fn,
                                free_nats=free_nats, delayed_clamp=delayed, global_average=global_average)
    for k, v in want.items():
        assert tuple(out[k].shape) == (1,), k
        _close(xp, out[k], [v], k)


# ------------------------------------------------------------------------------------------------ DreamerV3 actor
@st.composite
def _v3_cases(draw):
    c = draw(_imagination())
    c.update(with_cont=draw(st.booleans()), reinforce=draw(st.booleans()),
             entropy_bonus=draw(st.sampled_from([0.0, 0.3])), retnorm=draw(st.booleans()),
             training=draw(st.booleans()), min_scale=draw(st.sampled_from([1.0, 1e-3])))
    return c


@settings(max_examples=4)
@given(c=_v3_cases())
def test_dreamer_v3_actor_loss_vs_reference(xp, c):
    w, loss, value, batch, draws, noise, ent_noise = _roll(
        xp, c, DreamerV3ActorLoss, with_cont=c["with_cont"], use_reinforce=c["reinforce"],
        entropy_bonus=c["entropy_bonus"], return_normalization=c["retnorm"], return_normalization_rate=0.3,
        return_normalization_min_scale=c["min_scale"])
    loss.train(c["training"])
    low, high = -0.2, 0.4
    loss.retnorm_state = {"low": xp.from_numpy(np.array([low])), "high": xp.from_numpy(np.array([high]))}
    out, fake = loss(batch, generator=Generator.from_noise(*draws))
    _check_rollout(xp, w, fake, noise, c["n"], c["h"])
    s, b, s1, b1, r = _np_traj(xp, fake)
    act = xp.to_numpy(fake["action"]).astype(np.float64)
    loc, scale = _np_loc_scale(w, s, b)
    sig = lambda z: 1.0 / (1.0 + np.exp(-z - 1.0))  # noqa: E731
    cont = first = None
    if c["with_cont"]:
        cont = sig(_np_feat(s1, b1) @ w["cont"])[..., 0]
        first = sig(_np_feat(s[:, 0], b[:, 0]) @ w["cont"])[..., 0]
    want = R.dreamer_v3_actor_loss(
        r, (_np_feat(s1, b1) @ w["value"])[..., 0], c["gamma"], c["lmbda"], continuation=cont,
        first_continuation=first, discount_loss=c["discount_loss"], torchrl_compat=c["compat"],
        use_reinforce=c["reinforce"], log_prob=tanh_normal_log_prob(act, loc, scale),
        baseline=(_np_feat(s, b) @ w["value"])[..., 0], entropy=-tanh_normal_rsample(loc, scale, ent_noise)[1],
        entropy_bonus=c["entropy_bonus"], return_normalization=c["retnorm"], training=c["training"], low=low,
        high=high, rate=0.3, min_scale=c["min_scale"])
    for k in ("loss_actor", "actor_entropy", "return_low", "return_high", "return_scale", "continuation_mean"):
        assert tuple(out[k].shape) == (), k
        _close(xp, out[k], want[k], k)
    _close(xp, fake["lambda_target"], want["lambda_target"][..., None], "lambda_target")
    _close(xp, fake["discount_weight"], want["discount_weight"][..., None], "discount_weight")


# ------------------------------------------------------------------------------------------------ DreamerV3 value
def _v3_value_model(xp, wv, two_hot):
    key = "state_value_logits" if two_hot else "state_value"
    return KeyedModule(_linear, params={"w": xp.from_numpy(wv)}, in_keys=["state", "belief"], out_keys=[key])


@settings(max_examples=8)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 3), h=st.integers(2, 4), two_hot=st.booleans(),
       slow=st.sampled_from([0.0, 0.7]), weight=st.booleans(), discount_loss=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_dreamer_v3_value_loss_vs_reference(xp, seed, n, h, two_hot, slow, weight, discount_loss, reduction):
    rng = np.random.default_rng(seed)
    nb = 9
    wv, ws = rng.normal(size=(F, nb if two_hot else 1)), rng.normal(size=(F, nb if two_hot else 1))
    s, b = rng.normal(size=(n, h, S)), rng.normal(size=(n, h, BEL))
    lam, dw = rng.normal(size=(n, h, 1)) * 3, rng.uniform(0.2, 1.0, size=(n, h, 1))
    loss = DreamerV3ValueLoss(_v3_value_model(xp, wv, two_hot), value_loss="two_hot" if two_hot else "symlog_mse",
                              discount_loss=discount_loss, gamma=0.9, num_value_bins=nb,
                              slow_critic_regularization=slow, reduction=reduction)
    if slow:
        loss.target_params = {"value_model": {"w": xp.from_numpy(ws)}}
    fake = {"state": xp.from_numpy(s), "belief": xp.from_numpy(b), "lambda_target": xp.from_numpy(lam)}
    if weight:
        fake["discount_weight"] = xp.from_numpy(dw)
    out = loss(fake)
    bins = np.asarray(default_bins(nb), np.float64)  # the support itself is checked against TorchRL elsewhere
    pred = _np_feat(s, b) @ wv
    slow_v = None
    if slow:
        sv = _np_feat(s, b) @ ws
        slow_v = RD.two_hot_decode(sv, bins) if two_hot else sv[..., 0]
    want = R.dreamer_v3_value_loss(pred if two_hot else pred[..., 0], lam, value_loss="two_hot" if two_hot else
                                   "symlog_mse", weight=dw if weight else None, discount_loss=discount_loss,
                                   gamma=0.9, slow_value=slow_v, slow_reg=slow, reduction=reduction, bins=bins)
    for k, v in want.items():
        _close(xp, out[k], v, k)


@settings(max_examples=3)
@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 2), t=st.integers(2, 4), two_hot=st.booleans(),
       slow=st.sampled_from([0.0, 0.5]), horizon=st.sampled_from([333.0, 4.0]), lmbda=st.sampled_from([0.95, 0.3]))
def test_dreamer_v3_replay_value_loss_vs_reference(xp, seed, n, t, two_hot, slow, horizon, lmbda):
    slow = 0.0 if two_hot else slow  # the replay slow critic reads a decoded state_value (TorchRL's), not logits
    rng = np.random.default_rng(seed)
    nb = 9
    wv, ws = rng.normal(size=(F, nb if two_hot else 1)), rng.normal(size=(F, 1))
    s, b = rng.normal(size=(n, t, S)), rng.normal(size=(n, t, BEL))
    rew, boot = rng.normal(size=(n, t, 1)), rng.normal(size=(n, t)) * 2
    term = rng.uniform(size=(n, t, 1)) < 0.3
    done = term | (rng.uniform(size=(n, t, 1)) < 0.2)
    loss = DreamerV3ValueLoss(_v3_value_model(xp, wv, two_hot), value_loss="two_hot" if two_hot else "symlog_mse",
                              num_value_bins=nb, slow_critic_regularization=slow)
    if slow:
        loss.target_params = {"value_model": {"w": xp.from_numpy(ws)}}
    batch = {"state": xp.from_numpy(s), "belief": xp.from_numpy(b), "bootstrap": xp.from_numpy(boot),
             "next": {"reward": xp.from_numpy(rew), "done": xp.from_numpy(done), "terminated": xp.from_numpy(term)}}
    got = loss.replay_value_loss(batch, horizon=horizon, lmbda=lmbda)["loss_replay_value"]
    bins = np.asarray(default_bins(nb), np.float64)
    pred = _np_feat(s, b) @ wv
    want = R.replay_value_loss(pred if two_hot else pred[..., 0], rew, done, term, boot, horizon=horizon,
                               lmbda=lmbda, value_loss="two_hot" if two_hot else "symlog_mse",
                               slow_value=(_np_feat(s, b) @ ws)[..., 0] if slow else None, slow_reg=slow, bins=bins)
    _close(xp, got, want, "loss_replay_value")


# ------------------------------------------------------------------------------------------------ DreamerV3 model
def _v3_world_model(xp, wm, two_hot):
    def fn(p, x):
        ns = _ns(x, p["prior"])
        lead = tuple(x.shape[:-1])
        return (ns.reshape(x @ p["prior"], lead + (2, 3)), ns.reshape(x @ p["post"], lead + (2, 3)),
                x @ p["reco"], x @ p["reward"], x @ p["cont"])

    out = [("next", "prior_logits"), ("next", "posterior_logits"), ("next", "reco_pixels"),
           ("next", "reward_logits" if two_hot else "reward"), ("next", "continue_pred")]
    return KeyedModule(fn, params={k: xp.from_numpy(v) for k, v in wm.items()}, in_keys=["x"], out_keys=out)


@st.composite
def _v3_model_cases(draw):
    return dict(seed=draw(st.integers(0, 2 ** 16)), n=draw(st.integers(1, 3)),
                free_bits=draw(st.sampled_from([0.0, 0.05, 1.0])), unimix=draw(st.sampled_from([0.0, 0.01])),
                two_hot=draw(st.booleans()), reco=draw(st.sampled_from(["l2", "l1"])),
                global_average=draw(st.booleans()), lambda_continue=draw(st.sampled_from([0.0, 1.0])),
                scale=draw(st.sampled_from([1.0, 0.997])))


@pytest.mark.parametrize("kl_mode", ["balanced", "separate"])
@pytest.mark.parametrize("symlog", [True, False])
@settings(max_examples=4)
@given(c=_v3_model_cases())
def test_dreamer_v3_model_loss_vs_reference(xp, kl_mode, symlog, c):
    c = dict(c, kl_mode=kl_mode, symlog=symlog)
    rng = np.random.default_rng(c["seed"])
    n, nb = c["n"], 9
    wm = {"prior": rng.normal(size=(3, 6)), "post": rng.normal(size=(3, 6)), "reco": rng.normal(size=(3, 4)),
          "reward": rng.normal(size=(3, nb if c["two_hot"] else 1)), "cont": rng.normal(size=(3, 1))}
    x, pix, rew = rng.normal(size=(n, 3)), rng.normal(size=(n, 4)) * 2, rng.normal(size=(n, 1)) * 2
    term = rng.uniform(size=(n, 1)) < 0.4
    kw = dict(lambda_kl=0.7, lambda_reco=1.3, lambda_reward=0.4, lambda_continue=c["lambda_continue"],
              kl_mode=c["kl_mode"], lambda_dynamic=0.5, lambda_representation=0.1, unimix=c["unimix"],
              continue_target_scale=c["scale"], kl_alpha=0.8, free_bits=c["free_bits"], reco_loss=c["reco"],
              global_average=c["global_average"])
    loss = DreamerV3ModelLoss(_v3_world_model(xp, wm, c["two_hot"]), reco_symlog=c["symlog"],
                              reward_two_hot=c["two_hot"], num_reward_bins=nb, **kw)
    batch = {"x": xp.from_numpy(x), "next": {"pixels": xp.from_numpy(pix), "reward": xp.from_numpy(rew),
                                             "terminated": xp.from_numpy(term)}}
    out = loss(batch)
    r_out = x @ wm["reward"]
    if c["kl_mode"] == "balanced":  # the oracle's balanced KL has no unimix (TorchRL's)
        kw.pop("unimix")
    want = R.dreamer_v3_model_loss(rew, (x @ wm["prior"]).reshape(n, 2, 3), (x @ wm["post"]).reshape(n, 2, 3),
                                   [(pix, x @ wm["reco"], c["symlog"])],
                                   reward_logits=r_out if c["two_hot"] else None,
                                   reward=None if c["two_hot"] else r_out, continue_logits=(x @ wm["cont"])[:, 0],
                                   terminated=term[:, 0], bins=np.asarray(default_bins(nb), np.float64), **kw)
    assert sorted(out) == sorted(want)
    for k, v in want.items():
        assert tuple(out[k].shape) == (1,), k
        _close(xp, out[k], [v], k)


def test_reference_float32_symexp_bins_agree_with_default_bins():
    """The oracle's own support (symexp of a linspace) and arrayrl's exactly antisymmetric one agree to rounding."""
    for n in (9, 255):
        np.testing.assert_allclose(np.asarray(default_bins(n), np.float64), R.symexp_bins(n), rtol=1e-12,
                                   atol=1e-12 * math.expm1(20.0) / n)
