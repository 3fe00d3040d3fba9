"""A2CLoss / ReinforceLoss against the float64 per-sample oracle (reference/losses/a2c.py) on Hypothesis batches, on
every backend; gradients against finite differences; the caller's batch is never modified; bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_ppo_reference import NA, NOBS, _log_softmax, _nets  # noqa: E402  (linear actor / critic)

from arrayrl.autodiff import check_grads
from arrayrl.objectives.a2c import A2CLoss
from arrayrl.objectives.reinforce import ReinforceLoss
from arrayrl.objectives.value_norm import RunningValueNorm
from reference import value as RV
from reference.losses import a2c as R
from reference.losses import ppo as RP


@st.composite
def _cases(draw):
    b = draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return dict(
        b=b, obs=rng.normal(size=(b, NOBS)), w=rng.normal(size=(NOBS, NA)), u=rng.normal(size=(NOBS, 1)),
        action=rng.integers(0, NA, b), adv=rng.normal(size=(b, 1)), target=rng.normal(size=(b, 1)),
        v_old=rng.normal(size=(b, 1)), mask=rng.random(b) < 0.7,
        cls=draw(st.sampled_from(["a2c", "reinforce"])),
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        clip_value=draw(st.sampled_from([None, 0.3])),
        fn=draw(st.sampled_from(["l2", "l1", "smooth_l1"])),
        critic_coeff=draw(st.sampled_from([0.6, 0.0, None])),
        entropy_coeff=draw(st.sampled_from([0.03, 0.0])),
        masked=draw(st.booleans()),
    )


def _batch(xp, c):
    f = xp.from_numpy
    out = {"observation": f(c["obs"]), "action": f(c["action"]), "advantage": f(c["adv"]),
           "value_target": f(c["target"]), "state_value": f(c["v_old"])}
    if c["masked"]:
        out["collector"] = {"mask": f(c["mask"])}
    return out


def _loss(xp, c, **extra):
    actor, critic = _nets(xp, c["w"], c["u"])
    kw = dict(loss_critic_type=c["fn"], reduction=c["reduction"], clip_value=c["clip_value"], **extra)
    if c["cls"] == "reinforce":
        return ReinforceLoss(actor, critic, **kw)
    return A2CLoss(actor, critic, entropy_coeff=c["entropy_coeff"], critic_coeff=c["critic_coeff"], **kw)


def _oracle(c):
    logits = c["obs"] @ c["w"]
    lp = _log_softmax(logits)[np.arange(c["b"]), c["action"]]
    common = dict(old_value=c["v_old"][:, 0], loss_critic_type=c["fn"], clip_value=c["clip_value"],
                  reduction=c["reduction"], mask=c["mask"] if c["masked"] else None)
    value = (c["obs"] @ c["u"])[:, 0]
    if c["cls"] == "reinforce":
        return R.reinforce_loss(lp, c["adv"][:, 0], value, c["target"][:, 0], **common)
    ent = np.array([RP.categorical_entropy_row(row) for row in logits]) if c["entropy_coeff"] else None
    return R.a2c_loss(lp, c["adv"][:, 0], entropy=ent, entropy_coeff=c["entropy_coeff"], value=value,
                      value_target=c["target"][:, 0], critic_coeff=c["critic_coeff"], **common)


@settings(max_examples=8)
@given(c=_cases())
def test_a2c_reinforce_vs_reference(xp, c):
    out = _loss(xp, c)(_batch(xp, c))
    want = _oracle(c)
    assert sorted(out) == sorted(want)
    for k, v in want.items():
        assert ("float32" if "32" in str(xp.float_dtype) else "float64") in str(out[k].dtype), k
        np.testing.assert_allclose(xp.to_numpy(out[k]), np.asarray(v), rtol=max(xp.rtol, 1e-9),
                                   atol=max(xp.atol, 1e-10), err_msg=k)


def _trajectory(rng, b=2, t=5):
    done = np.zeros((b, t, 1), bool)
    done[0, 2] = done[:, -1] = True
    term = done.copy()
    term[1, -1] = False
    return {"observation": rng.normal(size=(b, t, NOBS)), "action": rng.integers(0, NA, (b, t)),
            "next": {"observation": rng.normal(size=(b, t, NOBS)), "reward": rng.normal(size=(b, t, 1)),
                     "done": done, "terminated": term}}


def _to(xp, tree):
    return {k: _to(xp, v) if isinstance(v, dict) else xp.from_numpy(v) for k, v in tree.items()}


@pytest.mark.parametrize("cls", ["a2c", "reinforce"])
def test_gae_inside_forward_vs_reference(xp, cls):
    """The loss runs GAE (gamma 0.9, lambda 0.8) on the detached critic: the oracle's GAE on V = obs @ u."""
    rng = np.random.default_rng(1)
    c = dict(w=rng.normal(size=(NOBS, NA)), u=rng.normal(size=(NOBS, 1)), cls=cls, fn="smooth_l1",
             reduction="mean", clip_value=None, critic_coeff=0.5, entropy_coeff=0.02)
    tr = _trajectory(rng)
    loss = _loss(xp, c)
    loss.make_value_estimator("gae", gamma=0.9, lmbda=0.8)
    batch = _to(xp, tr)
    out = loss(batch)
    v, nv = tr["observation"] @ c["u"], tr["next"]["observation"] @ c["u"]
    adv, target = RV.gae(0.9, 0.8, v, nv, tr["next"]["reward"], tr["next"]["done"], tr["next"]["terminated"])
    logits = tr["observation"] @ c["w"]
    lp = np.take_along_axis(_log_softmax(logits), tr["action"][..., None], -1)[..., 0]
    if cls == "reinforce":
        want = R.reinforce_loss(lp, adv[..., 0], v[..., 0], target[..., 0])
    else:
        ent = np.array([[RP.categorical_entropy_row(r) for r in row] for row in logits])
        want = R.a2c_loss(lp, adv[..., 0], entropy=ent, entropy_coeff=0.02, value=v[..., 0],
                          value_target=target[..., 0], critic_coeff=0.5)
    for k, val in want.items():
        np.testing.assert_allclose(xp.to_numpy(out[k]), val, rtol=max(xp.rtol, 1e-9), atol=max(xp.atol, 1e-10),
                                   err_msg=k)


@settings(max_examples=4)
@given(c=_cases())
def test_gradients_vs_finite_differences(c):
    loss = _loss(np_backend, c)
    batch = _batch(np_backend, c)

    def total(w, u):
        out = loss._forward(batch, {"actor_network": {"0": {"w": w}, "1": {}}, "critic_network": {"u": u}})
        ns = w.__array_namespace__()
        return sum(ns.sum(out[k]) for k in out if k.startswith("loss"))

    check_grads(total, (c["w"], c["u"]))


class np_backend:  # the numpy backend in float64, for the finite differences
    float_dtype = np.float64
    from_numpy = staticmethod(lambda a: np.asarray(a))


@pytest.mark.parametrize("cls", ["a2c", "reinforce"])
def test_never_mutates_the_callers_batch(cls):
    """TorchRL's ReinforceLoss writes advantage, value_target, state_value, loc and scale into its input: arrayrl
    never writes into the caller's batch (estimator inside forward, advantage_norm on)."""
    rng = np.random.default_rng(2)
    c = dict(w=rng.normal(size=(NOBS, NA)), u=rng.normal(size=(NOBS, 1)), cls=cls, fn="l2", reduction="mean",
             clip_value=None, critic_coeff=1.0, entropy_coeff=0.01)
    extra = {"advantage_norm": RunningValueNorm()} if cls == "a2c" else {}
    loss = _loss(np_backend, c, **extra)
    batch = _trajectory(rng)
    snapshot = copy.deepcopy(batch)
    ids = {k: id(v) for k, v in batch.items()}
    out, grads = loss.value_and_grad(batch)
    assert sorted(batch) == sorted(snapshot) and sorted(batch["next"]) == sorted(snapshot["next"])
    assert {k: id(v) for k, v in batch.items()} == ids
    for k in ("observation", "action"):
        np.testing.assert_array_equal(batch[k], snapshot[k])
    for k in snapshot["next"]:
        np.testing.assert_array_equal(batch["next"][k], snapshot["next"][k])


def test_critic_coeff_and_entropy_semantics():
    rng = np.random.default_rng(3)
    c = dict(w=rng.normal(size=(NOBS, NA)), u=rng.normal(size=(NOBS, 1)), cls="a2c", fn="l2", reduction="mean",
             clip_value=None, b=4, obs=rng.normal(size=(4, NOBS)), action=rng.integers(0, NA, 4),
             adv=rng.normal(size=(4, 1)), target=rng.normal(size=(4, 1)), v_old=rng.normal(size=(4, 1)),
             masked=False)
    for cc, ec, keys in [(1.0, 0.01, ["entropy", "loss_critic", "loss_entropy", "loss_objective"]),
                         (0.0, 0.01, ["entropy", "loss_critic", "loss_entropy", "loss_objective"]),
                         (None, 0.0, ["loss_objective"])]:
        loss = _loss(np_backend, {**c, "critic_coeff": cc, "entropy_coeff": ec})
        out, grads = loss.value_and_grad(_batch(np_backend, c))
        assert sorted(out) == keys == sorted(loss.out_keys)
        if cc == 0.0:
            assert float(out["loss_critic"]) == 0.0 and not np.any(grads["critic_network"]["u"])
        if cc is None:
            assert not np.any(grads["critic_network"]["u"])


def test_advantage_norm_state_is_explicit():
    """The normaliser's state moves only in training mode with the advantage computed inside; the old state object
    is never modified."""
    rng = np.random.default_rng(4)
    c = dict(w=rng.normal(size=(NOBS, NA)), u=rng.normal(size=(NOBS, 1)), cls="a2c", fn="l2", reduction="mean",
             clip_value=None, critic_coeff=1.0, entropy_coeff=0.0)
    norm = RunningValueNorm()
    loss = _loss(np_backend, c, advantage_norm=norm)
    batch = _trajectory(rng)
    out1 = loss(batch)
    s1 = loss.advantage_norm_state
    s1_copy = copy.deepcopy(s1)
    assert float(s1["count"]) == 10.0
    loss(batch)
    assert float(loss.advantage_norm_state["count"]) == 20.0
    for k in s1:
        np.testing.assert_array_equal(s1[k], s1_copy[k])
    loss.eval()
    out3 = loss(batch)
    assert float(loss.advantage_norm_state["count"]) == 20.0
    # the scaled objective is the unscaled one divided by the scale (mean reduction, a constant scale)
    plain = _loss(np_backend, c)
    plain.make_value_estimator("gae")
    ref = float(plain(batch)["loss_objective"])
    np.testing.assert_allclose(float(out3["loss_objective"]), ref / float(norm.scale(loss.advantage_norm_state)[0]),
                               rtol=1e-12)
    np.testing.assert_allclose(float(out1["loss_objective"]), ref / float(norm.scale(s1)[0]), rtol=1e-12)
    assert abs(float(norm.scale(s1)[0]) - 1.0) > 0.05  # (the scaling is not a no-op)


def test_bad_input():
    rng = np.random.default_rng(5)
    c = dict(w=rng.normal(size=(NOBS, NA)), u=rng.normal(size=(NOBS, 1)), cls="a2c", fn="l2", reduction="mean",
             clip_value=None, critic_coeff=1.0, entropy_coeff=0.01, b=3, obs=rng.normal(size=(3, NOBS)),
             action=rng.integers(0, NA, 3), adv=rng.normal(size=(3, 1)), target=rng.normal(size=(3, 1)),
             v_old=rng.normal(size=(3, 1)), masked=False)
    actor, critic = _nets(np_backend, c["w"], c["u"])
    for cls in (A2CLoss, ReinforceLoss):
        with pytest.raises(TypeError, match="critic_network"):
            cls(actor)
        with pytest.raises(TypeError, match="gamma"):
            cls(actor, critic, gamma=0.9)
        loss = cls(actor, critic)
        batch = _batch(np_backend, c)
        with pytest.raises(ValueError, match="advantage"):
            loss({**batch, "advantage": batch["advantage"][:, 0]})  # [B]: would broadcast to [B, B]
        with pytest.raises(KeyError, match="action"):
            loss({k: v for k, v in batch.items() if k != "action"})
        with pytest.raises(ValueError, match="value_target"):
            loss({**batch, "value_target": batch["value_target"][:2]})
    with pytest.raises(TypeError, match="normalize_advantage"):
        A2CLoss(actor, critic, normalize_advantage=True)  # TorchRL silently ignores it
    with pytest.raises(TypeError, match="entropy_coeff"):
        A2CLoss(actor, critic, entropy_coef=0.1)
    with pytest.raises(TypeError, match="ValueNorm"):
        A2CLoss(actor, critic, advantage_norm=object())
    with pytest.raises(ValueError, match="loss_critic_type"):
        ReinforceLoss(actor, critic, loss_critic_type="huber")
    with pytest.raises(KeyError, match="state_value"):
        A2CLoss(actor, critic, clip_value=0.1)({k: v for k, v in _batch(np_backend, c).items()
                                                if k != "state_value"})
