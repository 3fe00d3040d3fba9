"""PPOLoss / ClipPPOLoss / KLPENPPOLoss against the float64 per-sample oracle (reference/losses/ppo.py) on Hypothesis
batches, on every backend; gradients against float64 finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl.autodiff import check_grads
from arrayrl.distributions import Categorical, IndependentNormal
from arrayrl.nn import KeyedModule, ProbabilisticActor, ValueOperator
from arrayrl.objectives.ppo import ClipPPOLoss, KLPENPPOLoss, PPOLoss
from reference.losses import ppo as R

NOBS, NA = 3, 3


def _nets(xp, w, u, kind="categorical"):
    """Linear actor (logits = obs @ W, or loc = obs @ W with scale 0.7) and linear critic (V = obs @ u)."""
    W, U = xp.from_numpy(w), xp.from_numpy(u)
    if kind == "categorical":
        mod = KeyedModule(lambda p, o: o @ p["w"], params={"w": W}, in_keys=["observation"], out_keys=["logits"])
        actor = ProbabilisticActor(mod, in_keys=["logits"], distribution_class=Categorical)
    else:
        def f(p, o):
            loc = o @ p["w"]
            ns = loc.__array_namespace__()
            return loc, ns.ones_like(loc) * 0.7

        mod = KeyedModule(f, params={"w": W}, in_keys=["observation"], out_keys=["loc", "scale"])
        actor = ProbabilisticActor(mod, in_keys=["loc", "scale"], distribution_class=IndependentNormal)
    critic = ValueOperator(KeyedModule(lambda p, o: o @ p["u"], params={"u": U}, in_keys=["observation"],
                                       out_keys=["state_value"]).fn, params={"u": U}, in_keys=["observation"])
    return actor, critic


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@st.composite
def _cases(draw):
    b = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    return dict(
        b=b, obs=rng.normal(size=(b, NOBS)), w=rng.normal(size=(NOBS, NA)), u=rng.normal(size=(NOBS, 1)),
        action=rng.integers(0, NA, b), old=rng.normal(size=b) * 0.5 - 1.0, adv=rng.normal(size=(b, 1)),
        target=rng.normal(size=(b, 1)), v_old=rng.normal(size=(b, 1)),
        old_logits=rng.normal(size=(b, NA)),
        kind=draw(st.sampled_from(["ppo", "clip", "klpen"])),
        eps=draw(st.sampled_from([0.2, (0.1, 0.3)])),
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        normalize=draw(st.booleans()),
        clip_value=draw(st.sampled_from([None, 0.3])),
        fn=draw(st.sampled_from(["l2", "l1", "smooth_l1"])),
    )


def _batch(xp, c):
    f = xp.from_numpy
    return {"observation": f(c["obs"]), "action": f(c["action"]), "action_log_prob": f(c["old"]),
            "advantage": f(c["adv"]), "value_target": f(c["target"]), "state_value": f(c["v_old"]),
            "logits": f(c["old_logits"])}


def _loss(xp, c, **extra):
    actor, critic = _nets(xp, c["w"], c["u"])
    cls = {"ppo": PPOLoss, "clip": ClipPPOLoss, "klpen": KLPENPPOLoss}[c["kind"]]
    kw = dict(entropy_coeff=0.03, critic_coeff=0.6, loss_critic_type=c["fn"], reduction=c["reduction"],
              normalize_advantage=c["normalize"], clip_value=c["clip_value"], **extra)
    if c["kind"] == "clip":
        kw["clip_epsilon"] = c["eps"]
    if c["kind"] == "klpen":
        kw.update(beta=0.7, dtarg=0.01)
    return cls(actor, critic, **kw)


def _oracle(c):
    logits = c["obs"] @ c["w"]
    lsm = _log_softmax(logits)
    lp = lsm[np.arange(c["b"]), c["action"]]
    kl = np.array([R.categorical_kl(c["old_logits"][i], logits[i]) for i in range(c["b"])])
    ent = np.array([R.categorical_entropy_row(logits[i]) for i in range(c["b"])])
    lo, hi = c["eps"] if isinstance(c["eps"], tuple) else (c["eps"], c["eps"])
    return R.ppo_loss(lp, c["old"], c["adv"][:, 0], kind=c["kind"], eps_low=lo, eps_high=hi, kl=kl, beta=0.7,
                      entropy=ent, entropy_coeff=0.03, value=(c["obs"] @ c["u"])[:, 0], old_value=c["v_old"][:, 0],
                      value_target=c["target"][:, 0], critic_coeff=0.6, loss_critic_type=c["fn"],
                      clip_value=c["clip_value"], normalize_advantage=c["normalize"], reduction=c["reduction"])


@settings(max_examples=6)
@given(c=_cases())
def test_ppo_family_vs_reference(xp, c):
    loss = _loss(xp, c)
    batch = _batch(xp, c)
    out = loss(batch)
    want = _oracle(c)
    for k, v in want.items():
        got = xp.to_numpy(out[k])
        assert "float32" in str(out[k].dtype) if "32" in str(xp.float_dtype) else "float64" in str(out[k].dtype), k
        np.testing.assert_allclose(got, np.asarray(v), rtol=max(xp.rtol, 1e-9), atol=max(xp.atol, 1e-10), err_msg=k)
    if c["kind"] == "klpen":  # beta adapted from the batch KL after the call
        kl = xp.to_numpy(out["kl"])[:, 0]
        np.testing.assert_allclose(float(xp.to_numpy(loss.beta)), R.adapt_beta(0.7, kl, 0.01), rtol=1e-6)


@settings(max_examples=4)
@given(c=_cases())
def test_ppo_family_gradients_vs_finite_differences(c):
    import numpy as xnp

    class _NP:  # the numpy backend in float64
        float_dtype = xnp.float64
        from_numpy = staticmethod(lambda a: xnp.asarray(a))

    loss = _loss(_NP, c)
    batch = _batch(_NP, c)

    def total(w, u):
        out = loss._forward(batch, {"actor_network": {"0": {"w": w}, "1": {}}, "critic_network": {"u": u}})
        ns = w.__array_namespace__()
        return sum(ns.sum(out[k]) for k in out if k.startswith("loss"))

    if c["kind"] == "klpen":
        loss.beta = 0.7  # each call adapts beta: keep it fixed across the finite differences
        f = lambda w, u: (setattr(loss, "beta", 0.7), total(w, u))[1]  # noqa: E731
    else:
        f = total
    check_grads(f, (c["w"], c["u"]))


def test_reference_clip_on_ratio_equals_log_space_clip():
    """The oracle clips the ratio (paper); arrayrl clips the log-ratio (TorchRL): the same numbers."""
    for lw in np.linspace(-1, 1, 41):
        for a in (-1.3, 0.0, 2.0):
            got = R.ratio_terms(lw, 0.0, a, "clip", eps_low=0.1, eps_high=0.3)[0]
            lc = min(max(lw, np.log1p(-0.1)), np.log1p(0.3))
            np.testing.assert_allclose(got, -min(np.exp(lw) * a, np.exp(lc) * a), rtol=1e-14, atol=1e-15)
