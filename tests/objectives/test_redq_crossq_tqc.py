"""REDQLoss, CrossQLoss and TQCLoss against the float64 per-sample oracle (reference/losses/redq_crossq_tqc.py) on
Hypothesis batches on every backend; gradients against float64 finite differences; REDQ's temperature-loss
divergence (paper default vs torchrl_compat); CrossQ's explicit running-statistics state; bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl._backend import namespace_of
from arrayrl.nn import KeyedModule
from arrayrl.nn.norm import BatchRenorm1d, NormMLP, StatefulValueOperator
from arrayrl.objectives.crossq import CrossQLoss
from arrayrl.objectives.redq import REDQLoss
from arrayrl.objectives.tqc import TQCLoss
from arrayrl.random import Generator
from reference.losses import redq_crossq_tqc as R
from tests.objectives.test_sac import NA, NOBS, _actor, _batch, _check_terms, _critics, _np_q, _q_fn, _rsample, _stack, _to

class _NPBackend:
    rtol = atol = 1e-10

    @staticmethod
    def from_numpy(a, dtype=None):
        a = np.asarray(a)
        return a.astype(np.float64) if a.dtype.kind == "f" else a

    @staticmethod
    def to_numpy(a):
        return np.asarray(a)


_NP = _NPBackend()


def _close(xp, got, want, what, tol=None):
    got = np.asarray(xp.to_numpy(got) if hasattr(xp, "to_numpy") else got, dtype=np.float64)
    rtol = tol if tol is not None else getattr(xp, "rtol", 1e-10)
    atol = tol if tol is not None else getattr(xp, "atol", 1e-10)
    if hasattr(xp, "float_dtype") and hasattr(got, "dtype") is False:
        pass
    np.testing.assert_allclose(got, np.asarray(want, dtype=np.float64), rtol=rtol, atol=atol * 10, err_msg=what)


@st.composite
def _cases(draw, quantiles=False):
    b = draw(st.sampled_from([2, 4, 5]))
    n = draw(st.sampled_from([1, 2, 3]))
    mq = draw(st.sampled_from([2, 3])) if quantiles else 1
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    q = lambda: dict(u=rng.normal(size=(NOBS, mq)), v=rng.normal(size=(NA, mq)), c=rng.normal(size=(mq,)) * 0.5)  # noqa
    term = rng.random(b) < 0.3
    return dict(b=b, n=n, mq=mq, m=draw(st.integers(1, n)), k=draw(st.integers(0, mq - 1)),
                actor=dict(w=rng.normal(size=(NOBS, NA)) * 0.7, s=rng.normal(size=(NOBS, NA))),
                qs=[q() for _ in range(n)], qs_target=[q() for _ in range(n)], obs=rng.normal(size=(b, NOBS)),
                next_obs=rng.normal(size=(b, NOBS)), action=rng.uniform(-0.9, 0.9, (b, NA)),
                reward=rng.normal(size=(b, 1)), term=term[:, None], done=(term | (rng.random(b) < 0.3))[:, None],
                weights=None, eps=rng.normal(size=(2, b, NA)), perm=rng.permutation(n),
                log_alpha=draw(st.sampled_from([math.log(0.7), math.log(0.05), math.log(20.0)])),
                fn=draw(st.sampled_from(["l2", "l1", "smooth_l1"])), reduction=draw(st.sampled_from(["mean", "sum", "none"])),
                compat=draw(st.booleans()), gamma=draw(st.sampled_from([0.9, 0.5])), dist="tanh")


def _np_quant(q, o, a):
    return o @ q["u"] + a @ q["v"] + (a * a).sum(-1, keepdims=True) * q["c"]


# ------------------------------------------------------------------------------------------------ REDQ
def _redq(xp, c):
    loss = REDQLoss(_actor(xp, c["actor"]), _critics(xp, c["qs"]), num_qvalue_nets=c["n"], sub_sample_len=c["m"],
                    loss_function=c["fn"], alpha_init=math.exp(c["log_alpha"]), reduction=c["reduction"],
                    action_spec=(NA,), torchrl_compat=c["compat"], scalar_output_mode="non_tensor")
    loss.make_value_estimator("td0", gamma=c["gamma"])
    loss._set_target("qvalue_network", _to(xp, _stack(c["qs_target"])))
    loss.generator = Generator.from_noise(xp.from_numpy(c["perm"], dtype=None), xp.from_numpy(c["eps"]))
    return loss


def _redq_oracle(c):
    m = c["m"] if not c["compat"] else max(1, min(c["m"], c["n"] - 1))
    a, lp = _rsample(c, c["obs"], c["eps"][0])
    na, nlp = _rsample(c, c["next_obs"], c["eps"][1])
    idx = sorted(c["perm"][:m])
    q_actor = np.stack([_np_q(q, c["obs"], a) for q in c["qs"]])
    q_pred = np.stack([_np_q(q, c["obs"], c["action"]) for q in c["qs"]])
    q_next = np.stack([_np_q(c["qs_target"][i], c["next_obs"], na) for i in idx])
    bounds = dict(min_alpha=0.1, max_alpha=10.0) if c["compat"] else {}
    return R.redq_loss(q_actor, lp, q_next, nlp, q_pred, c["reward"], c["term"], gamma=c["gamma"],
                       log_alpha=c["log_alpha"], target_entropy=-float(NA), loss_function=c["fn"],
                       reduction=c["reduction"], torchrl_compat=c["compat"], **bounds)


@settings(max_examples=4, deadline=None)
@given(c=_cases())
def test_redq_vs_reference(xp, c):
    loss = _redq(xp, c)
    batch = _batch(xp, c)
    out = loss(batch)
    want = _redq_oracle(c)
    for k in ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy", "target_value", "next.state_value"):
        _close(xp, out[k], want[k], k)
    _close(xp, batch["td_error"], want["td_error"], "td_error")


def _grad_case(c):
    c = dict(c)
    c["log_alpha"] = math.log(0.7)  # inside REDQ's bounds (finite differences see a clamp)
    return c


@settings(max_examples=3, deadline=None)
@given(c=_cases())
def test_redq_gradients_vs_finite_differences(c):
    c = _grad_case(c)
    loss = _redq(_NP, c)
    reset = lambda: setattr(loss, "generator", Generator.from_noise(c["perm"], c["eps"]))  # noqa: E731
    _check_terms(loss, _batch(_NP, c), [("loss_qvalue", "qvalue_network"), ("loss_actor", "actor_network"),
                                        ("loss_alpha", "log_alpha")], reset)


def test_redq_alpha_loss_paper_vs_torchrl():
    """Divergence: paper (REDQ authors' code) -log(alpha)(log pi(a~|s) + H) on current samples, no clamp;
    TorchRL -alpha_c (log pi + H) over current and next samples, alpha clamped to [0.1, 10]."""
    rng = np.random.default_rng(0)
    c = _cases().example() if False else None  # noqa: F841 - deterministic case below
    q = lambda: dict(u=rng.normal(size=(NOBS, 1)), v=rng.normal(size=(NA, 1)), c=rng.normal(size=(1,)))  # noqa
    c = dict(b=4, n=3, m=2, actor=dict(w=rng.normal(size=(NOBS, NA)), s=rng.normal(size=(NOBS, NA))),
             qs=[q() for _ in range(3)], qs_target=[q() for _ in range(3)], obs=rng.normal(size=(4, NOBS)),
             next_obs=rng.normal(size=(4, NOBS)), action=rng.uniform(-0.9, 0.9, (4, NA)),
             reward=rng.normal(size=(4, 1)), term=np.zeros((4, 1), bool), done=np.zeros((4, 1), bool), weights=None,
             eps=rng.normal(size=(2, 4, NA)), perm=np.array([2, 0, 1]), log_alpha=math.log(20.0), fn="smooth_l1",
             reduction="mean", gamma=0.9, dist="tanh")
    outs = {}
    for compat in (False, True):
        c["compat"] = compat
        loss = _redq(_NP, c)
        o, g = loss.value_and_grad(_batch(_NP, c))
        outs[compat] = (o, g)
        w = _redq_oracle(c)
        _close(_NP, o["loss_alpha"], w["loss_alpha"], f"loss_alpha compat={compat}")
        _close(_NP, o["alpha"], w["alpha"], f"alpha compat={compat}")
    a, lp = _rsample(c, c["obs"], c["eps"][0])
    _, nlp = _rsample(c, c["next_obs"], c["eps"][1])
    assert abs(float(outs[False][0]["alpha"]) - 20.0) < 1e-9  # no clamp
    assert abs(float(outs[True][0]["alpha"]) - 10.0) < 1e-9  # clamped at max_alpha
    np.testing.assert_allclose(outs[False][1]["log_alpha"], -np.mean(lp - NA), rtol=1e-10)
    np.testing.assert_allclose(outs[True][1]["log_alpha"], -10.0 * np.mean(np.stack([lp, nlp]) - NA), rtol=1e-10)


def test_redq_bad_input():
    rng = np.random.default_rng(1)
    q = lambda: dict(u=rng.normal(size=(NOBS, 1)), v=rng.normal(size=(NA, 1)), c=rng.normal(size=(1,)))  # noqa
    actor = _actor(_NP, dict(w=rng.normal(size=(NOBS, NA)), s=rng.normal(size=(NOBS, NA))))
    with pytest.raises(ValueError, match="sub_sample_len"):
        REDQLoss(actor, _critics(_NP, [q(), q()]), num_qvalue_nets=2, sub_sample_len=3, action_spec=(NA,))
    with pytest.raises(ValueError, match="sub_sample_len"):
        REDQLoss(actor, _critics(_NP, [q(), q()]), num_qvalue_nets=2, sub_sample_len=0, action_spec=(NA,))
    with pytest.raises(ValueError, match="num_qvalue_nets"):
        REDQLoss(actor, _critics(_NP, [q(), q(), q()]), num_qvalue_nets=2, action_spec=(NA,))
    with pytest.raises(NotImplementedError, match="gSDE"):
        REDQLoss(actor, _critics(_NP, [q(), q()]), num_qvalue_nets=2, gSDE=True, action_spec=(NA,))


# ------------------------------------------------------------------------------------------------ TQC
def _tqc(xp, c, skip=False):
    crit = [KeyedModule(_q_fn, params={k: xp.from_numpy(v) for k, v in q.items()}, in_keys=["observation", "action"],
                        out_keys=["state_action_value"]) for q in c["qs"]]
    loss = TQCLoss(_actor(xp, c["actor"]), crit, num_qvalue_nets=c["n"], top_quantiles_to_drop_per_net=c["k"],
                   alpha_init=math.exp(c["log_alpha"]), reduction=c["reduction"], action_spec=(NA,),
                   scalar_output_mode="non_tensor", skip_done_states=skip)
    loss.make_value_estimator("td0", gamma=c["gamma"])
    loss._set_target("qvalue_network", _to(xp, _stack(c["qs_target"])))
    loss.generator = Generator.from_noise(xp.from_numpy(c["eps"][1]), xp.from_numpy(c["eps"][0]))
    return loss


def _tqc_oracle(c):
    a, lp = _rsample(c, c["obs"], c["eps"][0])
    na, nlp = _rsample(c, c["next_obs"], c["eps"][1])
    zp = np.stack([_np_quant(q, c["obs"], c["action"]) for q in c["qs"]])
    zn = np.stack([_np_quant(q, c["next_obs"], na) for q in c["qs_target"]])
    za = np.stack([_np_quant(q, c["obs"], a) for q in c["qs"]])
    return R.tqc_loss(zp, zn, nlp, za, lp, c["reward"], c["term"], gamma=c["gamma"], log_alpha=c["log_alpha"],
                      target_entropy=-float(NA), top_quantiles_to_drop=c["k"], reduction=c["reduction"])


@settings(max_examples=4, deadline=None)
@given(c=_cases(quantiles=True), skip=st.booleans())
def test_tqc_vs_reference(xp, c, skip):
    loss = _tqc(xp, c, skip)
    batch = _batch(xp, c)
    out = loss(batch)
    want = _tqc_oracle(c)  # skipping terminated next states changes nothing (they never bootstrap)
    for k in ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"):
        _close(xp, out[k], want[k], k)
    _close(xp, batch["td_error"], want["td_error"], "td_error")


@settings(max_examples=3, deadline=None)
@given(c=_cases(quantiles=True))
def test_tqc_gradients_vs_finite_differences(c):
    c = _grad_case(c)
    loss = _tqc(_NP, c)
    reset = lambda: setattr(loss, "generator", Generator.from_noise(c["eps"][1], c["eps"][0]))  # noqa: E731
    _check_terms(loss, _batch(_NP, c), [("loss_qvalue", "qvalue_network"), ("loss_actor", "actor_network"),
                                        ("loss_alpha", "log_alpha")], reset)


def test_tqc_bad_input():
    rng = np.random.default_rng(2)
    c = dict(n=2, k=3, mq=3, actor=dict(w=rng.normal(size=(NOBS, NA)), s=rng.normal(size=(NOBS, NA))),
             qs=[dict(u=rng.normal(size=(NOBS, 3)), v=rng.normal(size=(NA, 3)), c=rng.normal(size=(3,)))] * 2,
             log_alpha=0.0, reduction="mean", gamma=0.9, b=2, obs=rng.normal(size=(2, NOBS)),
             next_obs=rng.normal(size=(2, NOBS)), action=rng.uniform(-0.9, 0.9, (2, NA)), reward=np.zeros((2, 1)),
             term=np.zeros((2, 1), bool), done=np.zeros((2, 1), bool), weights=None, eps=rng.normal(size=(2, 2, NA)))
    c["qs_target"] = c["qs"]
    loss = _tqc(_NP, c)
    with pytest.raises(ValueError, match="top_quantiles_to_drop_per_net"):
        loss(_batch(_NP, c))
    with pytest.raises(ValueError, match="num_qvalue_nets"):
        TQCLoss(_actor(_NP, c["actor"]), _critics(_NP, [c["qs"][0]] * 3), num_qvalue_nets=2, action_spec=(NA,))


# ------------------------------------------------------------------------------------------------ CrossQ
H = 4


def _crossq(xp, c, warmup=2, momentum=0.01):
    rng = np.random.default_rng(c["b"] * 7 + c["n"])
    nets = []
    for _ in range(c["n"]):
        net = NormMLP(NOBS + NA, 1, [H], norm_class=BatchRenorm1d, norm_kwargs={"warmup_steps": warmup, "momentum": momentum},
                      xp=getattr(xp, "ns", None) and None)
        p = {"0": {"weight": rng.normal(size=(H, NOBS + NA)), "bias": rng.normal(size=(H,))},
             "1": {"weight": rng.normal(size=(H,)) + 1, "bias": rng.normal(size=(H,))},
             "3": {"weight": rng.normal(size=(1, H)), "bias": rng.normal(size=(1,))}}
        net.params = _to(xp, p)
        net.state = {"1": {"running_mean": xp.from_numpy(rng.normal(size=(H,)) * 0.3),
                           "running_var": xp.from_numpy(rng.random(H) + 0.5),
                           "num_batches_tracked": xp.from_numpy(np.asarray(c["nbt"]), dtype=None)}}
        nets.append(StatefulValueOperator(net, in_keys=["observation", "action"]))
    loss = CrossQLoss(_actor(xp, c["actor"]), nets, num_qvalue_nets=c["n"], loss_function=c["fn"],
                      alpha_init=math.exp(c["log_alpha"]), reduction=c["reduction"], action_spec=(NA,),
                      scalar_output_mode="non_tensor")
    loss.make_value_estimator("td0", gamma=c["gamma"])
    loss.generator = Generator.from_noise(xp.from_numpy(c["eps"][1]), xp.from_numpy(c["eps"][0]))
    return loss


def _np_critic(p, s, x, train, warmup=2):
    h = x @ p["0"]["weight"].T + p["0"]["bias"]
    h, ns = _bn(p, s, h, train, warmup)
    return (np.tanh(h) @ p["3"]["weight"].T + p["3"]["bias"])[:, 0], ns


def _bn(p, s, h, train, warmup):
    y, (rm, rv, nbt) = R.batch_renorm(h, p["1"]["weight"], p["1"]["bias"], s["1"]["running_mean"],
                                      s["1"]["running_var"], int(s["1"]["num_batches_tracked"]), train=train,
                                      warmup_steps=warmup)
    return y, {"1": {"running_mean": rm, "running_var": rv, "num_batches_tracked": nbt}}


def _crossq_oracle(loss, c, train=True):
    from arrayrl._backend import to_numpy
    P = {k: to_numpy(v) if not isinstance(v, dict) else v for k, v in loss.params.items()}
    qp = P["qvalue_network"]
    st_ = loss.state
    na, nlp = _rsample(c, c["next_obs"], c["eps"][1])
    a, lp = _rsample(c, c["obs"], c["eps"][0])
    joint = np.concatenate([np.concatenate([c["obs"], c["action"]], -1), np.concatenate([c["next_obs"], na], -1)])
    qj, qa, states = [], [], []
    for i in range(c["n"]):
        pi = {k: {kk: to_numpy(vv[i, ...]) for kk, vv in v.items()} for k, v in qp.items()}
        si = {"1": {k: to_numpy(v[i, ...]) for k, v in st_["1"].items()}}
        q, ns = _np_critic(pi, si, joint, train)
        qj.append(q)
        states.append(ns)
        qa.append(_np_critic(pi, ns, np.concatenate([c["obs"], a], -1), False)[0])
    qj = np.stack(qj)
    b = c["b"]
    out = R.crossq_loss(qj[:, :b], qj[:, b:], nlp, np.stack(qa), lp, c["reward"], c["term"], gamma=c["gamma"],
                        log_alpha=c["log_alpha"], target_entropy=-float(NA), loss_function=c["fn"],
                        reduction=c["reduction"])
    return out, states


@settings(max_examples=4, deadline=None)
@given(c=_cases(), nbt=st.sampled_from([0, 3, 9]))
def test_crossq_vs_reference(xp, c, nbt):
    c = dict(c, nbt=nbt, b=max(c["b"], 2))
    loss = _crossq(xp, c)
    batch = _batch(xp, c)
    state0 = loss.state
    out = loss(batch)
    assert loss.state is state0  # a call never advances the statistics
    want, states = _crossq_oracle(loss, c)
    for k in ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy", "log_prob", "td_error"):
        _close(xp, out[k], want[k], k)
    _close(xp, batch["td_error"], want["td_error"], "td_error")
    for i, s in enumerate(states):
        for k in ("running_mean", "running_var"):
            _close(xp, loss.next_state["1"][k][i, ...], s["1"][k], f"next_state[{i}].{k}")
        assert int(xp.to_numpy(loss.next_state["1"]["num_batches_tracked"])[i]) == nbt + 1
    loss.commit_state()
    assert loss.state is loss.next_state


@settings(max_examples=3, deadline=None)
@given(c=_cases())
def test_crossq_gradients_vs_finite_differences(c):
    """Through the batch statistics of the joint [2B] critic call (BatchRenorm's mean and std are on the tape)."""
    # warm-up factor 0 (r = 1, d = 0: TorchRL detaches them, finite differences would see them) and momentum 0
    # (the actor's running statistics would see the detached next action): the gradient through the batch mean and
    # standard deviation of the joint call is what is checked
    # standard deviation of the joint call is what is checked; every row terminated, because the target's
    # sg(min_i Q_i(s', a')) comes from the online critics (no target networks: finite differences would see it)
    c = dict(_grad_case(c), nbt=0, term=np.ones_like(c["term"]))
    loss = _crossq(_NP, c, warmup=2, momentum=0.0)
    reset = lambda: setattr(loss, "generator", Generator.from_noise(c["eps"][1], c["eps"][0]))  # noqa: E731
    _check_terms(loss, _batch(_NP, c), [("loss_qvalue", "qvalue_network"), ("loss_actor", "actor_network"),
                                        ("loss_alpha", "log_alpha")], reset)


def test_crossq_state_protocol_and_bad_input():
    rng = np.random.default_rng(5)
    c = dict(b=4, n=2, actor=dict(w=rng.normal(size=(NOBS, NA)), s=rng.normal(size=(NOBS, NA))),
             obs=rng.normal(size=(4, NOBS)), next_obs=rng.normal(size=(4, NOBS)), action=rng.uniform(-0.9, 0.9, (4, NA)),
             reward=rng.normal(size=(4, 1)), term=np.zeros((4, 1), bool), done=np.zeros((4, 1), bool), weights=None,
             eps=rng.normal(size=(2, 4, NA)), log_alpha=0.0, fn="smooth_l1", reduction="mean", gamma=0.9, nbt=0)
    loss = _crossq(_NP, c)
    batch = _batch(_NP, c)
    s0 = loss.state
    out1, new1 = loss.forward_with_state(batch)
    loss.generator = Generator.from_noise(c["eps"][1], c["eps"][0])
    out2, new2 = loss.forward_with_state(batch, s0)
    assert loss.state is s0 and loss.next_state is None
    np.testing.assert_array_equal(new1["1"]["running_mean"], new2["1"]["running_mean"])
    with pytest.raises(RuntimeError, match="commit_state"):
        loss.commit_state()
    loss.train_critic = False  # running statistics in the critic loss: the state does not move
    loss.generator = Generator.from_noise(c["eps"][1], c["eps"][0])
    _, new3 = loss.forward_with_state(batch)
    np.testing.assert_array_equal(new3["1"]["running_mean"], s0["1"]["running_mean"])
    with pytest.raises(ValueError, match="num_qvalue_nets"):
        CrossQLoss(_actor(_NP, c["actor"]), loss._networks["qvalue_network"] and [loss._networks["qvalue_network"]] * 3,
                   num_qvalue_nets=2, action_spec=(NA,))
    with pytest.raises(ValueError, match="state"):
        loss.state = {"1": {"running_mean": np.zeros((2, H + 1)), "running_var": np.ones((2, H)),
                            "num_batches_tracked": np.zeros(2, np.int64)}}
