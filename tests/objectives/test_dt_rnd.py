"""DTLoss, OnlineDTLoss and RNDLoss against the float64 per-element oracle (reference/losses/dt_rnd.py) on Hypothesis
batches, on every backend; gradients against float64 finite differences; the attention-mask divergence from TorchRL
(paper default vs torchrl_compat); RunningMeanStd as an explicit state; bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl._backend import namespace_of
from arrayrl.distributions import IndependentNormal, TanhNormal
from arrayrl.nn import KeyedModule, Linear, ProbabilisticActor
from arrayrl.objectives.decision_transformer import DTLoss, OnlineDTLoss
from arrayrl.objectives.rnd import RNDLoss, RunningMeanStd, normalize_observation
from arrayrl.random import Generator
from reference import distributions as RD
from reference.gradcheck import numerical_grad
from reference.losses import dt_rnd as R

F, A, D = 3, 2, 4  # observation features, action dims, RND feature dims


# ------------------------------------------------------------------------------------------------ networks
def _det_actor(xp, w):
    def f(params, o):
        ns = namespace_of(o, params["w"])
        return ns.tanh(ns.matmul(o, params["w"]))

    return KeyedModule(f, params={"w": xp.from_numpy(w)}, in_keys=["observation"], out_keys=["action"])


def _prob_actor(xp, p, dist):
    def f(params, o):
        ns = namespace_of(o, params["w"])
        return ns.matmul(o, params["w"]), ns.exp(ns.matmul(o, params["s"]) * 0.3)

    mod = KeyedModule(f, params={"w": xp.from_numpy(p["w"]), "s": xp.from_numpy(p["s"])}, in_keys=["observation"],
                      out_keys=["loc", "scale"])
    return ProbabilisticActor(mod, in_keys=["loc", "scale"],
                              distribution_class=TanhNormal if dist == "tanh" else IndependentNormal)


def _linear(xp, w, b):
    lin = Linear(w.shape[1], w.shape[0])
    lin.params = {"weight": xp.from_numpy(w), "bias": xp.from_numpy(b)}
    return lin


def _check_out(xp, out, want, keys=None):
    f32 = "32" in str(xp.float_dtype)
    for k in (keys or want):
        assert ("float32" if f32 else "float64") in str(out[k].dtype), (k, out[k].dtype)
        np.testing.assert_allclose(xp.to_numpy(out[k]), np.asarray(want[k]), rtol=max(xp.rtol, 1e-9),
                                   atol=max(xp.atol, 1e-10), err_msg=k)


# ------------------------------------------------------------------------------------------------ DT
@st.composite
def _dt_cases(draw):
    b, t = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 3, 4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    att = draw(st.sampled_from([None, "bool", "int", "float"]))
    m = rng.random((b, t)) < 0.6
    attention = None if att is None else (m if att == "bool" else m.astype(np.int64) if att == "int" else
                                          m * rng.uniform(0.5, 2.0, (b, t)))
    return dict(w=rng.normal(size=(F, A)), obs=rng.normal(size=(b, t, F)), action=rng.uniform(-0.9, 0.9, (b, t, A)),
                attention=attention, loss_mask=(rng.random((b, t)) < 0.8) if draw(st.booleans()) else None,
                fn=draw(st.sampled_from(["l2", "l1", "smooth_l1"])),
                reduction=draw(st.sampled_from(["mean", "sum", "none"])), compat=draw(st.booleans()))


def _dt_batch(xp, c):
    batch = {"observation": xp.from_numpy(c["obs"]), "action": xp.from_numpy(c["action"])}
    if c["attention"] is not None:
        a = c["attention"]
        batch["attention_mask"] = xp.from_numpy(a, dtype=xp.float_dtype if a.dtype.kind == "f" else None)
    if c["loss_mask"] is not None:
        batch["collector"] = {"mask": xp.from_numpy(c["loss_mask"])}
    return batch


@settings(max_examples=6)
@given(c=_dt_cases())
def test_dt_vs_reference(xp, c):
    loss = DTLoss(_det_actor(xp, c["w"]), loss_function=c["fn"], reduction=c["reduction"], torchrl_compat=c["compat"])
    batch = _dt_batch(xp, c)
    out = loss(batch)
    pred = np.tanh(c["obs"] @ c["w"])
    want = R.dt_loss(pred, c["action"], loss_function=c["fn"], reduction=c["reduction"],
                     attention_mask=c["attention"], loss_mask=c["loss_mask"], torchrl_compat=c["compat"])
    _check_out(xp, out, want)
    assert sorted(out) == ["loss"]


# ------------------------------------------------------------------------------------------------ ODT
ALPHAS = [(1.0, None, None, False), (0.4, None, None, True), (3.0, 0.1, 1.5, False), (0.05, 0.2, None, False)]


@st.composite
def _odt_cases(draw):
    b, t, s = draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 3])), draw(st.sampled_from([1, 2, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return dict(actor=dict(w=rng.normal(size=(F, A)) * 0.7, s=rng.normal(size=(F, A))), obs=rng.normal(size=(b, t, F)),
                action=rng.uniform(-0.9, 0.9, (b, t, A)), eps=rng.normal(size=(s, b, t, A)), s=s,
                attention=(rng.random((b, t)) < 0.6) if draw(st.booleans()) else None,
                loss_mask=(rng.random((b, t)) < 0.8) if draw(st.booleans()) else None,
                alpha=draw(st.sampled_from(ALPHAS)), dist=draw(st.sampled_from(["tanh", "normal"])),
                te=draw(st.sampled_from(["auto", -0.5])), reduction=draw(st.sampled_from(["mean", "sum", "none"])),
                compat=draw(st.booleans()))


def _odt(xp, c, **extra):
    a0, amin, amax, fixed = c["alpha"]
    kw = dict(alpha_init=a0, min_alpha=amin, max_alpha=amax, fixed_alpha=fixed, target_entropy=c["te"],
              samples_mc_entropy=c["s"], reduction=c["reduction"], scalar_output_mode="non_tensor",
              action_spec=(A,), torchrl_compat=c["compat"])
    kw.update(extra)
    loss = OnlineDTLoss(_prob_actor(xp, c["actor"], c["dist"]), **kw)
    loss.generator = Generator.from_noise(xp.from_numpy(c["eps"]))
    return loss


def _odt_oracle(c):
    loc = c["obs"] @ c["actor"]["w"]
    scale = np.exp(0.3 * (c["obs"] @ c["actor"]["s"]))
    if c["dist"] == "tanh":
        ll = RD.tanh_normal_log_prob(c["action"], loc, scale)
        lps = np.stack([RD.tanh_normal_rsample(loc, scale, e)[1] for e in c["eps"]])
    else:
        ll = RD.independent_normal_log_prob(c["action"], loc, scale)
        lps = np.stack([RD.independent_normal_log_prob(loc + scale * e, loc, scale) for e in c["eps"]])
    a0, amin, amax, _ = c["alpha"]
    return R.online_dt_loss(ll, lps, log_alpha=math.log(a0), target_entropy=-float(A) if c["te"] == "auto" else c["te"],
                            min_alpha=amin, max_alpha=amax, reduction=c["reduction"], attention_mask=c["attention"],
                            loss_mask=c["loss_mask"], torchrl_compat=c["compat"])


@settings(max_examples=6)
@given(c=_odt_cases())
def test_online_dt_vs_reference(xp, c):
    loss = _odt(xp, c)
    out = loss(_dt_batch(xp, dict(c, attention=c["attention"])))
    assert loss.generator.remaining == 0
    want = _odt_oracle(c)
    assert sorted(out) == sorted(want)
    _check_out(xp, out, want)


# ------------------------------------------------------------------------------------------------ RND
@st.composite
def _rnd_cases(draw):
    shape = draw(st.sampled_from([(5,), (2, 3), (1,)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.normal(size=shape + (F,)) * 2.0 + 0.5
    return dict(shape=shape, obs=x, wp=rng.normal(size=(D, F)), bp=rng.normal(size=D), wt=rng.normal(size=(D, F)),
                bt=rng.normal(size=D), u=rng.random(shape), fraction=draw(st.sampled_from([0.25, 0.6, 1.0])),
                reduction=draw(st.sampled_from(["mean", "sum", "none"])), rms=draw(st.booleans()),
                clip=draw(st.sampled_from([5.0, 0.7])), history=rng.normal(size=(7, F)) * 1.5 - 0.3,
                loss_mask=(rng.random(shape) < 0.7) if draw(st.booleans()) else None)


@settings(max_examples=6)
@given(c=_rnd_cases())
def test_rnd_vs_reference(xp, c):
    state, rstate = None, None
    if c["rms"]:
        rms = RunningMeanStd(shape=(F,))
        state = rms.update(xp.from_numpy(c["history"]), rms.init(like=xp.from_numpy(c["history"])))
        rstate = R.rms_update(c["history"], R.rms_init((F,)))
        for k in ("mean", "var", "count"):
            _check_out(xp, state, rstate, [k])
    loss = RNDLoss(_linear(xp, c["wp"], c["bp"]), _linear(xp, c["wt"], c["bt"]), obs_rms=state, obs_clip=c["clip"],
                   reduction=c["reduction"], update_fraction=c["fraction"],
                   generator=Generator.from_noise(xp.from_numpy(c["u"])))
    batch = {"next": {"observation": xp.from_numpy(c["obs"])}}
    if c["loss_mask"] is not None:
        batch["collector"] = {"mask": xp.from_numpy(c["loss_mask"])}
    out = loss(batch)
    assert loss.generator.remaining == (1 if c["fraction"] == 1.0 else 0)
    x = R.rms_normalize(c["obs"], rstate, c["clip"]) if c["rms"] else c["obs"]
    want = R.rnd_loss(x @ c["wp"].T + c["bp"], x @ c["wt"].T + c["bt"], c["u"], update_fraction=c["fraction"],
                      reduction=c["reduction"], loss_mask=c["loss_mask"])
    _check_out(xp, out, want)


def test_running_mean_std_matches_reference_sequence_and_mask():
    rms = RunningMeanStd(shape=(F,))
    rng = np.random.default_rng(3)
    state, ref = rms.init(xp=np), R.rms_init((F,))
    for n in (4, 1, 6):
        x = rng.normal(size=(n, F)) * 3 + 1
        state, ref = rms.update(x, state), R.rms_update(x, ref)
    for k in ref:
        np.testing.assert_allclose(state[k], ref[k], rtol=1e-12)
    x = rng.normal(size=(5, F))
    keep = np.array([True, False, True, True, False])
    np.testing.assert_allclose(rms.update(x, state, mask=keep)["var"], R.rms_update(x[keep], ref)["var"], rtol=1e-12)
    same = rms.update(x, state, mask=np.zeros(5, dtype=bool))
    assert all(np.array_equal(same[k], state[k]) for k in state)  # nothing valid: unchanged
    np.testing.assert_allclose(rms.normalize(x, state), R.rms_normalize(x, ref), rtol=1e-12)
    np.testing.assert_allclose(rms.denormalize(rms.normalize(x, state), state), x, rtol=1e-12)
    np.testing.assert_allclose(normalize_observation(x, state, 0.3), R.rms_normalize(x, ref, 0.3), rtol=1e-12)


# ------------------------------------------------------------------------------------------------ gradients
def _fd_check(loss, batch, reset=lambda: None, rtol=1e-6, terms=None, names=None):
    """arrayrl's gradient of ``terms`` (default: every loss_*) against central differences of the same terms, for
    the parameter trees ``names`` (default: all). Stop-gradients make the comparison per term group: ODT's
    loss_alpha carries sg(H) (no actor gradient) and loss_entropy sg(alpha) (no log_alpha gradient)."""
    reset()
    outs, grads = loss.value_and_grad(batch, terms=terms)
    names = list(loss.params) if names is None else names

    def total(p):
        reset()
        out = loss._forward(batch, p)
        keys = [k for k in out if k.startswith("loss")] if terms is None else terms
        return float(sum(np.sum(out[k]) for k in keys))

    fd = numerical_grad(total, loss.params)
    flat_a, flat_f = [], []

    def walk(a, f):
        if isinstance(a, dict):
            for k in a:
                walk(a[k], f[k])
        else:
            flat_a.append(np.asarray(a)), flat_f.append(np.asarray(f))

    for n in names:
        walk(grads[n], fd[n])
    assert flat_a
    for a, f in zip(flat_a, flat_f):
        np.testing.assert_allclose(a, f, rtol=rtol, atol=1e-7)
    return outs


def _np(xp_name="numpy"):
    from tests.conftest import _make_backend

    return _make_backend(xp_name)


@pytest.mark.parametrize("fn", ["l2", "l1", "smooth_l1"])
def test_dt_grad_vs_finite_differences(fn):
    rng = np.random.default_rng(1)
    c = dict(w=rng.normal(size=(F, A)), obs=rng.normal(size=(2, 3, F)), action=rng.uniform(-0.9, 0.9, (2, 3, A)),
             attention=np.array([[1, 1, 0], [1, 0, 0]]), loss_mask=None)
    loss = DTLoss(_det_actor(_np(), c["w"]), loss_function=fn)
    _fd_check(loss, _dt_batch(_np(), c))


@pytest.mark.parametrize("dist", ["tanh", "normal"])
def test_online_dt_grad_vs_finite_differences(dist):
    rng = np.random.default_rng(2)
    c = dict(actor=dict(w=rng.normal(size=(F, A)) * 0.7, s=rng.normal(size=(F, A))), obs=rng.normal(size=(2, 3, F)),
             action=rng.uniform(-0.9, 0.9, (2, 3, A)), eps=rng.normal(size=(2, 2, 3, A)), s=2,
             attention=np.array([[True, True, False], [True, True, True]]), loss_mask=None,
             alpha=(0.7, None, None, False), dist=dist, te="auto", reduction="mean", compat=False)
    loss = _odt(_np(), c)
    eps = c["eps"]

    def reset():
        loss.generator = Generator.from_noise(eps)

    batch = _dt_batch(_np(), c)
    _fd_check(loss, batch, reset, terms=["loss_log_likelihood", "loss_entropy"], names=["actor_network"])
    _fd_check(loss, batch, reset, terms=["loss_alpha"], names=["log_alpha"])
    reset()
    _, g = loss.value_and_grad(batch, terms=["loss_alpha"])
    assert np.all(g["actor_network"]["0"]["w"] == 0)  # sg(H - H_target)


def test_rnd_grad_vs_finite_differences():
    rng = np.random.default_rng(4)
    xp = _np()
    x = rng.normal(size=(6, F))
    state = RunningMeanStd(shape=(F,)).update(x * 0.5, RunningMeanStd(shape=(F,)).init(xp=np))
    u = rng.random(6)
    loss = RNDLoss(_linear(xp, rng.normal(size=(D, F)), rng.normal(size=D)),
                   _linear(xp, rng.normal(size=(D, F)), rng.normal(size=D)), obs_rms=state, update_fraction=0.6)

    def reset():
        loss.generator = Generator.from_noise(u)

    _fd_check(loss, {"next": {"observation": x}}, reset)
    assert set(loss.params) == {"predictor_network"}  # the target is frozen: never in params


# ------------------------------------------------------------------------------------------------ divergences
def _padded_dt_case(seed=5):
    rng = np.random.default_rng(seed)
    att = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
    obs = rng.normal(size=(2, 4, F))
    action = rng.uniform(-0.9, 0.9, (2, 4, A))
    garbage_obs, garbage_action = obs.copy(), action.copy()
    garbage_obs[att == 0] = 50.0
    garbage_action[att == 0] = -0.99
    return dict(w=rng.normal(size=(F, A)), att=att, obs=obs, action=action, gobs=garbage_obs, gaction=garbage_action)


def test_dt_attention_mask_paper_vs_torchrl_compat():
    """Divergence "DT/OnlineDT attention mask": paper mode scores only attention_mask > 0 (the padded positions'
    content does not matter); torchrl_compat (TorchRL) averages the padding in too."""
    c, xp = _padded_dt_case(), _np()
    batch = {"observation": c["obs"], "action": c["action"], "attention_mask": c["att"]}
    garbage = {"observation": c["gobs"], "action": c["gaction"], "attention_mask": c["att"]}
    paper, compat = DTLoss(_det_actor(xp, c["w"])), DTLoss(_det_actor(xp, c["w"]), torchrl_compat=True)
    pred = np.tanh(c["obs"] @ c["w"])
    valid = (pred - c["action"])[c["att"] > 0]
    np.testing.assert_allclose(paper(batch)["loss"], np.mean(valid ** 2), rtol=1e-12)
    np.testing.assert_allclose(paper(garbage)["loss"], paper(batch)["loss"], rtol=1e-12)
    np.testing.assert_allclose(compat(batch)["loss"], np.mean((pred - c["action"]) ** 2), rtol=1e-12)
    assert abs(float(compat(garbage)["loss"]) - float(compat(batch)["loss"])) > 1e-3
    assert abs(float(compat(batch)["loss"]) - float(paper(batch)["loss"])) > 1e-6
    # paper gradients ignore the padding too
    g1, g2 = paper.value_and_grad(batch)[1], paper.value_and_grad(garbage)[1]
    np.testing.assert_allclose(g1["actor_network"]["w"], g2["actor_network"]["w"], rtol=1e-12)
    # reduction="none": zeros at the padded elements (paper), the raw elements (compat)
    none = DTLoss(_det_actor(xp, c["w"]), reduction="none")(garbage)["loss"]
    assert np.all(none[c["att"] == 0] == 0) and none.shape == (2, 4, A)
    # the key can be renamed; a batch without it has no padding (TorchRL's numbers)
    renamed = DTLoss(_det_actor(xp, c["w"])).set_keys(attention_mask="pad")
    np.testing.assert_allclose(renamed(batch)["loss"], compat(batch)["loss"], rtol=1e-15)
    np.testing.assert_allclose(renamed({**batch, "pad": c["att"]})["loss"], paper(batch)["loss"], rtol=1e-15)


def test_online_dt_attention_mask_paper_vs_torchrl_compat():
    c0, xp = _padded_dt_case(6), _np()
    rng = np.random.default_rng(7)
    c = dict(actor=dict(w=rng.normal(size=(F, A)) * 0.7, s=rng.normal(size=(F, A))), s=2,
             eps=rng.normal(size=(2, 2, 4, A)), alpha=(0.5, None, None, False), dist="tanh", te="auto",
             reduction="mean")
    out = {}
    for compat in (False, True):
        for name, (o, a) in {"clean": (c0["obs"], c0["action"]), "garbage": (c0["gobs"], c0["gaction"])}.items():
            loss = _odt(xp, dict(c, compat=compat))
            out[compat, name] = loss({"observation": o, "action": a, "attention_mask": c0["att"]})
            want = _odt_oracle(dict(c, obs=o, action=a, attention=c0["att"], loss_mask=None, compat=compat))
            for k in want:
                np.testing.assert_allclose(out[compat, name][k], want[k], rtol=1e-10, err_msg=k)
    for k in ("loss_log_likelihood", "loss_entropy", "loss_alpha", "entropy"):
        np.testing.assert_allclose(out[False, "clean"][k], out[False, "garbage"][k], rtol=1e-12, err_msg=k)
        assert abs(float(out[True, "clean"][k]) - float(out[True, "garbage"][k])) > 1e-6, k
        assert abs(float(out[True, "clean"][k]) - float(out[False, "clean"][k])) > 1e-9, k


# ------------------------------------------------------------------------------------------------ API and bad input
def test_keys_outputs_and_no_mutation():
    xp = _np()
    rng = np.random.default_rng(8)
    c = dict(actor=dict(w=rng.normal(size=(F, A)), s=rng.normal(size=(F, A))), s=1, eps=rng.normal(size=(1, 2, 3, A)),
             alpha=(1.0, None, None, False), dist="tanh", te="auto", reduction="mean", compat=False)
    batch = {"observation": rng.normal(size=(2, 3, F)), "action": rng.uniform(-0.5, 0.5, (2, 3, A))}
    snapshot = {k: v.copy() for k, v in batch.items()}
    odt = _odt(xp, c)
    out = odt(batch)
    assert list(out) == odt.out_keys == ["loss_log_likelihood", "loss_entropy", "loss_alpha", "alpha", "entropy"]
    assert set(batch) == set(snapshot) and all(np.array_equal(batch[k], snapshot[k]) for k in batch)
    assert set(odt.params) == {"actor_network", "log_alpha"} and odt.policy is odt.actor_network
    assert odt.target_entropy == -2.0
    dt = DTLoss(_det_actor(xp, c["actor"]["w"]))
    assert dt.out_keys == ["loss"] and dt.policy is dt.actor_network
    dt(batch)
    assert set(batch) == set(snapshot) and all(np.array_equal(batch[k], snapshot[k]) for k in batch)
    assert dt(observation=batch["observation"], action=batch["action"]).shape == ()
    dt.set_keys(action_target="expert")
    with pytest.raises(KeyError, match="expert"):
        dt(batch)
    r = RNDLoss(_linear(xp, np.ones((D, F)), np.zeros(D)), _linear(xp, np.zeros((D, F)), np.zeros(D)))
    assert r.out_keys == ["loss_predictor"] and r.in_keys == [("next", "observation")]
    with pytest.raises(AttributeError):
        r.policy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnlineDTLoss(_prob_actor(xp, c["actor"], "tanh"), reduction="none", scalar_output_mode="exclude")
    with pytest.warns(UserWarning, match="scalar"):
        none = OnlineDTLoss(_prob_actor(xp, c["actor"], "tanh"), reduction="none")
    assert none.out_keys == ["loss_log_likelihood", "loss_entropy", "loss_alpha"]


def test_bad_input_messages():
    xp = _np()
    w = np.ones((F, A))
    lin = lambda: _linear(xp, np.ones((D, F)), np.zeros(D))  # noqa: E731
    with pytest.raises(ValueError, match="update_fraction"):
        RNDLoss(lin(), lin(), update_fraction=1.5)
    with pytest.raises(ValueError, match="reduction"):
        DTLoss(_det_actor(xp, w), reduction="avg")
    with pytest.raises(ValueError, match="loss_function"):
        DTLoss(_det_actor(xp, w), loss_function="huber")
    with pytest.raises(TypeError, match="get_dist"):
        OnlineDTLoss(_det_actor(xp, w))
    with pytest.raises(ValueError, match="samples_mc_entropy"):
        OnlineDTLoss(_prob_actor(xp, dict(w=w, s=w), "tanh"), samples_mc_entropy=0)
    with pytest.raises(ValueError, match="obs_rms"):
        RNDLoss(lin(), lin(), obs_rms={"mean": np.zeros(F)})
    r = RNDLoss(lin(), lin(), obs_rms={"mean": np.zeros(D + 1), "var": np.ones(D + 1)})
    with pytest.raises(ValueError, match="obs_rms\\['mean'\\]"):
        r({"next": {"observation": np.zeros((2, F))}})
    with pytest.raises(KeyError, match="observation"):
        r({"observation": np.zeros((2, F))})
    dt = DTLoss(_det_actor(xp, w))
    with pytest.raises(TypeError, match="attention_mask"):
        dt({"observation": np.zeros((1, 2, F)), "action": np.zeros((1, 2, A)),
            "attention_mask": np.array([["a", "b"]])})
    with pytest.raises(ValueError, match="action"):
        dt({"observation": np.zeros((1, 2, F)), "action": np.zeros((1, 2, A + 1))})
    odt = OnlineDTLoss(_prob_actor(xp, dict(w=w, s=w), "tanh"))
    from arrayrl.autodiff import value_and_grad

    def f(a):
        return odt({"observation": np.zeros((1, 2, F)), "action": a})["loss_log_likelihood"]

    with pytest.raises(RuntimeError, match="graph"):
        value_and_grad(f)(np.zeros((1, 2, A)))
    with pytest.raises(RuntimeError, match="dimensionality"):
        OnlineDTLoss(_prob_actor(xp, dict(w=w, s=w), "tanh"), torchrl_compat=True).target_entropy


def test_integer_observations_are_cast_and_float32_stays_float32():
    import array_api_strict as s

    xp = _np("array_api_strict-f32")
    rng = np.random.default_rng(9)
    r = RNDLoss(_linear(xp, rng.normal(size=(D, F)), rng.normal(size=D)),
                _linear(xp, rng.normal(size=(D, F)), rng.normal(size=D)), update_fraction=1.0)
    out = r({"next": {"observation": s.asarray(np.arange(2 * F).reshape(2, F), dtype=s.int32, device=xp.device)}})
    assert out["loss_predictor"].dtype == s.float32
