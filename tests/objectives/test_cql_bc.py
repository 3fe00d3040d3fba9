"""CQLLoss, DiscreteCQLLoss and BCLoss against the float64 per-sample oracle (reference/losses/cql_bc.py) on
Hypothesis batches on every backend; gradients against float64 finite differences; the divergences from TorchRL
(paper default vs torchrl_compat); learning tests (DiscreteCQL on an offline chain MDP, BC of an expert); bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl._backend import namespace_of
from arrayrl.autodiff import check_grads
from arrayrl.distributions import IndependentNormal, TanhNormal
from arrayrl.nn import KeyedModule, ProbabilisticActor
from arrayrl.objectives.bc import BCLoss
from arrayrl.objectives.cql import CQLLoss, DiscreteCQLLoss
from arrayrl.random import Generator
from reference import distributions as RD
from reference.losses import cql_bc as R

NOBS, NA, NACT = 3, 2, 4


# ------------------------------------------------------------------------------------------------ networks
def _actor(xp, p, dist="tanh"):
    """loc = obs @ w, scale = exp(0.3 obs @ s)."""
    def f(params, o):
        ns = namespace_of(o, params["w"])
        return ns.matmul(o, params["w"]), ns.exp(ns.matmul(o, params["s"]) * 0.3)

    mod = KeyedModule(f, params={"w": xp.from_numpy(p["w"]), "s": xp.from_numpy(p["s"])}, in_keys=["observation"],
                      out_keys=["loc", "scale"])
    return ProbabilisticActor(mod, in_keys=["loc", "scale"],
                              distribution_class=TanhNormal if dist == "tanh" else IndependentNormal)


def _q_fn(params, o, a):
    ns = namespace_of(o, a, params["u"])
    return (ns.matmul(o, params["u"]) + ns.matmul(a, params["v"])
            + ns.multiply(ns.sum(ns.multiply(a, a), axis=-1, keepdims=True), params["c"]))


def _critics(xp, qs):
    return [KeyedModule(_q_fn, params={k: xp.from_numpy(v) for k, v in q.items()}, in_keys=["observation", "action"],
                        out_keys=["state_action_value"]) for q in qs]


def _np_q(q, o, a):
    return (o @ q["u"] + a @ q["v"] + (a * a).sum(-1, keepdims=True) * q["c"])[..., 0]


def _to(xp, tree):
    if isinstance(tree, dict):
        return {k: _to(xp, v) for k, v in tree.items()}
    return xp.from_numpy(tree)


class _NP:
    float_dtype = np.float64
    from_numpy = staticmethod(np.asarray)
    to_numpy = staticmethod(np.asarray)
    rtol, atol = 1e-10, 1e-10


# ------------------------------------------------------------------------------------------------ CQL cases
def _cql_draw(rng, b, k, backup):
    d = dict(eps_next=rng.normal(size=(b, NA)))
    if backup:
        d["eps_backup"] = rng.normal(size=(b * k, NA))
    d.update(u_rand=rng.uniform(-1, 1, (b * k, NA)), eps_cur=rng.normal(size=(b * k, NA)),
             eps_new=rng.normal(size=(b * k, NA)), eps_bc=rng.normal(size=(b, NA)), eps_pi=rng.normal(size=(b, NA)))
    return d


@st.composite
def _cql_cases(draw):
    b = draw(st.sampled_from([2, 3, 5]))
    k = draw(st.sampled_from([1, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    q = lambda: dict(u=rng.normal(size=(NOBS, 1)), v=rng.normal(size=(NA, 1)), c=rng.normal(size=(1,)) * 0.5)  # noqa
    term = rng.random(b) < 0.3
    backup = draw(st.booleans())
    return dict(
        b=b, k=k, actor=dict(w=rng.normal(size=(NOBS, NA)) * 0.7, s=rng.normal(size=(NOBS, NA))),
        qs=[q(), q()], qs_target=[q(), q()], obs=rng.normal(size=(b, NOBS)), next_obs=rng.normal(size=(b, NOBS)),
        action=rng.uniform(-0.9, 0.9, (b, NA)), reward=rng.normal(size=(b, 1)), term=term[:, None],
        done=(term | (rng.random(b) < 0.3))[:, None], draws=_cql_draw(rng, b, k, backup),
        alpha=draw(st.sampled_from([(0.7, None, None, False), (0.4, None, None, True), (3.0, 0.1, 1.5, False)])),
        dist=draw(st.sampled_from(["tanh", "normal"])), fn=draw(st.sampled_from(["l2", "l1", "smooth_l1"])),
        reduction=draw(st.sampled_from(["mean", "sum", "none"])), compat=draw(st.booleans()),
        backup=backup, det_backup=draw(st.booleans()), lagrange=draw(st.booleans()),
        temperature=draw(st.sampled_from([1.0, 0.5])), weight=draw(st.sampled_from([1.0, 2.5])),
        thresh=draw(st.sampled_from([0.0, 0.7])), log_alpha_prime=draw(st.sampled_from([0.0, -0.4])),
        mask=(rng.random(b) < 0.7) if draw(st.booleans()) else None, gamma=0.9,
    )


def _batch(xp, c):
    f = xp.from_numpy
    batch = {"observation": f(c["obs"]), "action": f(c["action"]),
             "next": {"observation": f(c["next_obs"]), "reward": f(c["reward"]), "done": f(c["done"]),
                      "terminated": f(c["term"])}}
    if c.get("mask") is not None:
        batch["collector"] = {"mask": f(c["mask"])}
    return batch


DRAW_ORDER = ("eps_next", "eps_backup", "u_rand", "eps_cur", "eps_new", "eps_bc", "eps_pi")


def _noise(xp, c):
    return Generator.from_noise(*[xp.from_numpy(c["draws"][k]) for k in DRAW_ORDER if k in c["draws"]])


def _cql(xp, c, **extra):
    a0, amin, amax, fixed = c["alpha"]
    kw = dict(loss_function=c["fn"], alpha_init=a0, min_alpha=amin, max_alpha=amax, fixed_alpha=fixed,
              reduction=c["reduction"], action_spec=(NA,), torchrl_compat=c["compat"], scalar_output_mode="non_tensor",
              num_random=c["k"], max_q_backup=c["backup"], deterministic_backup=c["det_backup"],
              with_lagrange=c["lagrange"], lagrange_thresh=c["thresh"], temperature=c["temperature"],
              min_q_weight=c["weight"])
    kw.update(extra)
    loss = CQLLoss(_actor(xp, c["actor"], c["dist"]), _critics(xp, c["qs"]), **kw)
    loss.make_value_estimator("td0", gamma=c["gamma"])
    loss._set_target("qvalue_network", _to(xp, {k: np.stack([q[k] for q in c["qs_target"]]) for k in c["qs"][0]}))
    if loss.with_lagrange:
        loss.params = {**loss.params, "log_alpha_prime": xp.from_numpy(np.asarray(c["log_alpha_prime"]))}
    loss.generator = _noise(xp, c)
    return loss


def _rs(c, obs, eps):
    loc, scale = obs @ c["actor"]["w"], np.exp(0.3 * (obs @ c["actor"]["s"]))
    if c["dist"] == "tanh":
        return RD.tanh_normal_rsample(loc, scale, eps)
    a = loc + scale * eps
    return a, RD.independent_normal_log_prob(a, loc, scale)


def _log_prob(c, obs, a):
    loc, scale = obs @ c["actor"]["w"], np.exp(0.3 * (obs @ c["actor"]["s"]))
    if c["dist"] == "tanh":
        return RD.tanh_normal_log_prob(a, loc, scale)
    return RD.independent_normal_log_prob(a, loc, scale)


def _cql_oracle(c, compat=None, score_next=None):
    """``score_next``: score the pi(.|s') actions at s' (default: TorchRL's choice in compat mode, s otherwise)."""
    compat = c["compat"] if compat is None else compat
    score_next = compat if score_next is None else score_next
    a0, amin, amax, fixed = c["alpha"]
    d, b, k = c["draws"], c["b"], c["k"]
    qs, qt = c["qs"], c["qs_target"]
    obs_rep, next_rep = np.repeat(c["obs"], k, axis=0), np.repeat(c["next_obs"], k, axis=0)
    a_next, lp_next = _rs(c, c["next_obs"], d["eps_next"])
    if c["backup"]:
        a_bk, _ = _rs(c, next_rep, d["eps_backup"])
        q_next = np.stack([_np_q(q, next_rep, a_bk).reshape(b, k) for q in qt])
    else:
        q_next = np.stack([_np_q(q, c["next_obs"], a_next) for q in qt])
    a_cur, lp_cur = _rs(c, obs_rep, d["eps_cur"])
    a_new, lp_new = _rs(c, next_rep, d["eps_new"])
    new_at = next_rep if score_next else obs_rep
    per = lambda x: x.reshape(b, k)  # noqa: E731
    _, lp_bc = _rs(c, c["obs"], d["eps_bc"])
    a_pi, lp_pi = _rs(c, c["obs"], d["eps_pi"])
    return R.cql_loss(
        np.stack([_np_q(q, c["obs"], c["action"]) for q in qs]), q_next, lp_next,
        np.stack([per(_np_q(q, obs_rep, d["u_rand"])) for q in qs]),
        np.stack([per(_np_q(q, obs_rep, a_cur)) for q in qs]), np.stack([per(_np_q(q, new_at, a_new)) for q in qs]),
        per(lp_cur), per(lp_new), lp_bc, _log_prob(c, c["obs"], c["action"]),
        np.stack([_np_q(q, c["obs"], a_pi) for q in qs]), lp_pi, c["reward"], c["term"], gamma=c["gamma"],
        log_alpha=math.log(a0), target_entropy=-float(NA), action_dim=NA, min_alpha=amin, max_alpha=amax,
        temperature=c["temperature"], min_q_weight=c["weight"], max_q_backup=c["backup"],
        deterministic_backup=c["det_backup"], with_lagrange=c["lagrange"], log_alpha_prime=c["log_alpha_prime"],
        lagrange_thresh=c["thresh"], loss_function=c["fn"], reduction=c["reduction"], mask=c.get("mask"),
        torchrl_compat=compat)


def _assert_matches(xp, out, want, keys, batch=None):
    f32 = "32" in str(xp.float_dtype)
    for k in keys:
        assert ("float32" if f32 else "float64") in str(out[k].dtype), (k, out[k].dtype)
        np.testing.assert_allclose(xp.to_numpy(out[k]), np.asarray(want[k]), rtol=max(xp.rtol, 1e-9),
                                   atol=max(xp.atol, 1e-9), err_msg=k)
    if batch is not None:
        np.testing.assert_allclose(xp.to_numpy(batch["td_error"]), np.asarray(want["td_error"]),
                                   rtol=max(xp.rtol, 1e-9), atol=max(xp.atol, 1e-9), err_msg="td_error")


@settings(max_examples=4)
@given(c=_cql_cases())
def test_cql_vs_reference(xp, c):
    if c["compat"] and c["mask"] is not None:
        c = dict(c, mask=None)  # TorchRL's batch-wide mean has no per-row masking to compare with
    loss = _cql(xp, c)
    batch = _batch(xp, c)
    before = {k: v for k, v in batch.items()}
    out = loss(batch)
    assert loss.generator.remaining == 0
    assert set(batch) == set(before) | {"td_error"}  # only td_error is written into the caller's batch
    _assert_matches(xp, out, _cql_oracle(c), out.keys(), batch)


# ------------------------------------------------------------------------------------------------ DiscreteCQL
@st.composite
def _dcql_cases(draw):
    b = draw(st.sampled_from([2, 3, 5]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    space = draw(st.sampled_from(["categorical", "one_hot"]))
    idx = rng.integers(0, NACT, b)
    term = rng.random(b) < 0.3
    return dict(b=b, space=space, u=rng.normal(size=(NOBS, NACT)), u_target=rng.normal(size=(NOBS, NACT)),
                obs=rng.normal(size=(b, NOBS)), next_obs=rng.normal(size=(b, NOBS)),
                action=idx if space == "categorical" else np.eye(NACT, dtype=np.int64)[idx],
                reward=rng.normal(size=(b, 1)), term=term[:, None], done=(term | (rng.random(b) < 0.3))[:, None],
                fn=draw(st.sampled_from(["l2", "l1", "smooth_l1"])),
                reduction=draw(st.sampled_from(["mean", "sum", "none"])), compat=draw(st.booleans()), gamma=0.9)


def _dcql(xp, c, **extra):
    net = KeyedModule(lambda p, o: namespace_of(o, p["u"]).matmul(o, p["u"]), params={"u": xp.from_numpy(c["u"])},
                      in_keys=["observation"], out_keys=["action_value"])
    kw = dict(loss_function=c["fn"], reduction=c["reduction"], action_space=c["space"], torchrl_compat=c["compat"])
    kw.update(extra)
    loss = DiscreteCQLLoss(net, **kw)
    loss.make_value_estimator("td0", gamma=c["gamma"])
    if loss.delay_value:
        loss.target_params = {"value_network": {"u": xp.from_numpy(c["u_target"])}}
    return loss


def _dcql_oracle(c, compat=None):
    compat = c["compat"] if compat is None else compat
    u_next = c["u"] if compat else c["u_target"]
    return R.discrete_cql_loss(c["obs"] @ c["u"], c["action"], c["next_obs"] @ u_next, c["reward"], c["term"],
                               gamma=c["gamma"], loss_function=c["fn"], reduction=c["reduction"],
                               action_space=c["space"], torchrl_compat=compat)


@settings(max_examples=4)
@given(c=_dcql_cases())
def test_discrete_cql_vs_reference(xp, c):
    loss = _dcql(xp, c)
    batch = _batch(xp, c)
    out = loss(batch)
    want = _dcql_oracle(c)
    want["td_error"], td = want["td_error_mean"], want["td_error"]
    _assert_matches(xp, out, want, out.keys())
    np.testing.assert_allclose(xp.to_numpy(batch["td_error"]), td, rtol=max(xp.rtol, 1e-9), atol=1e-9)


# ------------------------------------------------------------------------------------------------ BC
def _np_quartic(p, e):
    d = p - e
    return d * d * d * d


@st.composite
def _bc_cases(draw):
    b = draw(st.sampled_from([2, 4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    fn = draw(st.sampled_from(["l1", "l2", "mse", "smooth_l1", "cross_entropy", "auto_mse", "auto_ce", "callable",
                               "auto_nll"]))
    return dict(b=b, fn=fn, w=rng.normal(size=(NOBS, NACT)), s=rng.normal(size=(NOBS, NACT)) * 0.3,
                obs=rng.normal(size=(b, NOBS)),
                expert=(rng.integers(0, NACT, (b, 1)) if fn in ("cross_entropy", "auto_ce")
                        else rng.uniform(-0.95, 0.95, (b, NACT)) * (1 if fn == "auto_nll" else 3)),
                pad=(rng.random((b, NACT)) < 0.3) if fn in ("l1", "l2", "smooth_l1", "callable") and
                draw(st.booleans()) else None,
                reduction=draw(st.sampled_from(["mean", "sum", "none"])))


def _bc(xp, c):
    w = {"w": xp.from_numpy(c["w"])}
    if c["fn"] == "auto_nll":
        actor = _actor(xp, {"w": c["w"], "s": c["s"]}, "tanh")
    else:
        actor = KeyedModule(lambda p, o: namespace_of(o, p["w"]).matmul(o, p["w"]), params=w,
                            in_keys=["observation"], out_keys=["action"])
    fn = {"auto_mse": None, "auto_ce": None, "auto_nll": None, "callable": _np_quartic}.get(c["fn"], c["fn"])
    loss = BCLoss(actor, loss_function=fn, reduction=c["reduction"])
    if c["pad"] is not None:
        loss.set_keys(pad_mask="is_pad")
    return loss


def _bc_oracle(c):
    pred = c["obs"] @ c["w"]
    fn = c["fn"]
    if fn == "auto_nll":
        loc, scale = pred, np.exp(0.3 * (c["obs"] @ c["s"]))
        el = -RD.tanh_normal_log_prob(c["expert"], loc, scale)
    elif fn == "callable":
        el = (pred - c["expert"]) ** 4
    else:
        el = R.bc_elementwise(pred, c["expert"], {"auto_mse": "l2", "auto_ce": "cross_entropy"}.get(fn, fn))
    return {"loss_bc": R.bc_loss(el, c["reduction"], pad=c["pad"])}


@settings(max_examples=6)
@given(c=_bc_cases())
def test_bc_vs_reference(xp, c):
    loss = _bc(xp, c)
    batch = {"observation": xp.from_numpy(c["obs"]), "action": xp.from_numpy(c["expert"])}
    if c["pad"] is not None:
        batch["is_pad"] = xp.from_numpy(c["pad"])
    out = loss(batch)
    assert set(batch) == {"observation", "action"} | ({"is_pad"} if c["pad"] is not None else set())
    _assert_matches(xp, out, _bc_oracle(c), ["loss_bc"])


# ------------------------------------------------------------------------------------------------ gradients
def _fd_terms(loss, batch, groups, reset=lambda: None):
    """Each term against central finite differences w.r.t. the parameters it trains (the others held fixed;
    the stop-gradients -- detached proposals, critics in the actor loss, alpha' in loss_cql -- are by design)."""
    params = loss.params
    for term, net in groups:
        if net not in params:
            continue

        def f(sub, term=term, net=net):
            reset()
            out = loss._forward(batch, {**params, net: sub})
            return namespace_of(out[term]).sum(out[term])

        check_grads(f, (params[net],), max_elements=0, n_directions=2)


def _no_clamp(c):
    a0, amin, amax, fixed = c["alpha"]
    return dict(c, alpha=(a0 if amin is None and amax is None else 0.5, None, None, fixed))


@settings(max_examples=3)
@given(c=_cql_cases())
def test_cql_gradients_vs_finite_differences(c):
    c = _no_clamp(c)
    loss = _cql(_NP, c)
    reset = lambda: setattr(loss, "generator", _noise(_NP, c))  # noqa: E731
    _fd_terms(loss, _batch(_NP, c), [("loss_qvalue", "qvalue_network"), ("loss_cql", "qvalue_network"),
                                     ("loss_actor", "actor_network"), ("loss_actor_bc", "actor_network"),
                                     ("loss_alpha", "log_alpha"), ("loss_alpha_prime", "log_alpha_prime")], reset)


@settings(max_examples=3)
@given(c=_dcql_cases())
def test_discrete_cql_gradients_vs_finite_differences(c):
    loss = _dcql(_NP, c)
    _fd_terms(loss, _batch(_NP, c), [("loss_qvalue", "value_network"), ("loss_cql", "value_network")])


@settings(max_examples=4)
@given(c=_bc_cases())
def test_bc_gradients_vs_finite_differences(c):
    loss = _bc(_NP, c)
    batch = {"observation": c["obs"], "action": c["expert"]}
    if c["pad"] is not None:
        batch["is_pad"] = c["pad"]
    _fd_terms(loss, batch, [("loss_bc", "actor_network")])


# ------------------------------------------------------------------------------------------------ divergences
def _fixed_cql(**over):
    rng = np.random.default_rng(7)
    b, k = 4, 3
    q = lambda: dict(u=rng.normal(size=(NOBS, 1)), v=rng.normal(size=(NA, 1)) * 2, c=rng.normal(size=(1,)))  # noqa
    c = dict(b=b, k=k, actor=dict(w=rng.normal(size=(NOBS, NA)), s=rng.normal(size=(NOBS, NA))), qs=[q(), q()],
             qs_target=[q(), q()], obs=rng.normal(size=(b, NOBS)), next_obs=rng.normal(size=(b, NOBS)) * 2,
             action=rng.uniform(-0.9, 0.9, (b, NA)), reward=rng.normal(size=(b, 1)),
             term=np.zeros((b, 1), bool), done=np.zeros((b, 1), bool), draws=_cql_draw(rng, b, k, False),
             alpha=(0.7, None, None, False), dist="tanh", fn="l2", reduction="mean", compat=False, backup=False,
             det_backup=True, lagrange=False, temperature=1.0, weight=1.0, thresh=0.0, log_alpha_prime=0.0,
             mask=None, gamma=0.9)
    c.update(over)
    return c


def _both(c, **kw):
    outs = {}
    for compat in (False, True):
        cc = dict(c, compat=compat)
        loss = _cql(_NP, cc, **kw)
        outs[compat] = loss.value_and_grad(_batch(_NP, cc))
        loss.generator = _noise(_NP, cc)
    return outs


def test_divergence_cql_logsumexp_over_state_samples():
    """Paper: the log-sum-exp runs over the 3K proposals of a state; TorchRL: over the 3 proposal types of each
    repeated sample. The two log-sum-exps differ at the same scoring state, and each mode equals its reference."""
    c = _fixed_cql()
    outs = _both(c)
    paper, compat = _cql_oracle(c, compat=False), _cql_oracle(c, compat=True)
    np.testing.assert_allclose(outs[False][0]["loss_cql"], paper["loss_cql"], rtol=1e-12)
    np.testing.assert_allclose(outs[True][0]["loss_cql"], compat["loss_cql"], rtol=1e-12)
    # same scoring state (s), only the log-sum-exp axis changed: still different
    lse_only = _cql_oracle(c, compat=True, score_next=False)
    assert abs(paper["loss_cql"] - lse_only["loss_cql"]) > 1e-2


def test_divergence_cql_next_actions_scored_at_s():
    """The actions drawn from pi(.|s') are scored at s in the authors' code and at s' in TorchRL: each mode equals
    the oracle with its own scoring state and differs from the oracle with the other one (same log-sum-exp)."""
    c = _fixed_cql()
    outs = _both(c)
    for compat in (False, True):
        got = outs[compat][0]["loss_cql"]
        np.testing.assert_allclose(got, _cql_oracle(c, compat, score_next=compat)["loss_cql"], rtol=1e-12)
        assert abs(got - _cql_oracle(c, compat, score_next=not compat)["loss_cql"]) > 1e-3


def test_divergence_cql_lagrange_scaling_and_detach():
    """With Lagrange: the paper scales loss_cql by alpha' (a constant for the critics) and trains alpha' alone with
    loss_alpha_prime; TorchRL leaves loss_cql unscaled and its loss_alpha_prime sends a gradient to the critics."""
    c = _fixed_cql(lagrange=True, thresh=0.5, log_alpha_prime=0.8)
    outs = _both(c)
    ap = math.exp(0.8)
    for compat in (False, True):
        want = _cql_oracle(c, compat)
        for k in ("loss_cql", "loss_alpha_prime"):
            np.testing.assert_allclose(outs[compat][0][k], want[k], rtol=1e-12, err_msg=k)
    plain = _both(dict(c, lagrange=False))
    np.testing.assert_allclose(outs[False][0]["loss_cql"], ap * (plain[False][0]["loss_cql"] - 2 * 0.5), rtol=1e-12)
    np.testing.assert_allclose(outs[True][0]["loss_cql"], plain[True][0]["loss_cql"], rtol=1e-13)
    # the gradient of loss_alpha_prime alone w.r.t. the critics: zero (paper), non-zero (TorchRL)
    for compat, nonzero in ((False, False), (True, True)):
        cc = dict(c, compat=compat)
        loss = _cql(_NP, cc)
        _, g = loss.value_and_grad(_batch(_NP, cc), terms=["loss_alpha_prime"])
        norm = sum(float(np.abs(v).sum()) for v in g["qvalue_network"].values())
        assert (norm > 1e-6) == nonzero, (compat, norm)
        assert float(np.abs(g["log_alpha_prime"])) > 0


def test_divergence_cql_batch_broadcast_under_mask():
    """TorchRL's [B K] - [B, 1] broadcast gives each row the batch-mean log-sum-exp: rows masked out by
    ("collector", "mask") still enter it. The paper's per-state penalty ignores masked rows entirely."""
    c = _fixed_cql(mask=np.array([True, True, False, False]))
    obs2 = c["obs"].copy()
    obs2[3] += 3.0  # move a masked row
    vals = {}
    for compat in (False, True):
        for tag, obs in (("a", c["obs"]), ("b", obs2)):
            cc = dict(c, compat=compat, obs=obs)
            vals[compat, tag] = float(_cql(_NP, cc)(_batch(_NP, cc))["loss_cql"])
    assert vals[False, "a"] == pytest.approx(vals[False, "b"], rel=1e-13)
    assert abs(vals[True, "a"] - vals[True, "b"]) > 1e-3
    np.testing.assert_allclose(vals[False, "a"], _cql_oracle(c, compat=False)["loss_cql"], rtol=1e-12)


def test_divergence_discrete_cql_target_network_and_half():
    """Paper: y bootstraps from the target network and loss_qvalue = dist; TorchRL: the online network (its target
    is never read) and 0.5 dist."""
    rng = np.random.default_rng(1)
    c = dict(b=4, space="categorical", u=rng.normal(size=(NOBS, NACT)), u_target=rng.normal(size=(NOBS, NACT)),
             obs=rng.normal(size=(4, NOBS)), next_obs=rng.normal(size=(4, NOBS)), action=rng.integers(0, NACT, 4),
             reward=rng.normal(size=(4, 1)), term=np.zeros((4, 1), bool), done=np.zeros((4, 1), bool), fn="l2",
             reduction="mean", gamma=0.9)
    vals = {}
    for compat in (False, True):
        cc = dict(c, compat=compat)
        vals[compat] = float(_dcql(_NP, cc)(_batch(_NP, cc))["loss_qvalue"])
        np.testing.assert_allclose(vals[compat], _dcql_oracle(cc)["loss_qvalue"], rtol=1e-12)
        moved = _dcql(_NP, dict(cc, u_target=c["u_target"] + 1.0))
        v2 = float(moved(_batch(_NP, cc))["loss_qvalue"])
        assert (abs(v2 - vals[compat]) > 1e-6) == (not compat)  # TorchRL never reads the target
    same = dict(c, u_target=c["u"])  # target == online: TorchRL is exactly half the paper's loss
    np.testing.assert_allclose(float(_dcql(_NP, dict(same, compat=True))(_batch(_NP, same))["loss_qvalue"]),
                               0.5 * float(_dcql(_NP, dict(same, compat=False))(_batch(_NP, same))["loss_qvalue"]),
                               rtol=1e-13)


# ------------------------------------------------------------------------------------------------ learning
def _chain_dataset(rng, n_states=5, episodes=60, horizon=20, p_right=0.5):
    """Chain MDP: start at 0, action 1 moves right, 0 moves left (floor 0); reward 1 on reaching the last state
    (terminal). Behaviour policy: right with probability p_right."""
    obs, act, nobs, rew, term = [], [], [], [], []
    for _ in range(episodes):
        s = 0
        for _ in range(horizon):
            a = int(rng.random() < p_right)
            s2 = min(s + 1, n_states - 1) if a else max(s - 1, 0)
            done = s2 == n_states - 1
            obs.append(s), act.append(a), nobs.append(s2), rew.append(float(done)), term.append(done)
            s = s2
            if done:
                break
    eye = np.eye(n_states)
    return dict(observation=eye[obs], action=np.array(act), next=dict(
        observation=eye[nobs], reward=np.array(rew)[:, None], done=np.array(term)[:, None],
        terminated=np.array(term)[:, None]))


def _chain_value(policy, n_states=5, horizon=20, gamma=0.9):
    """Expected discounted return of a stochastic policy p(right | s) from state 0 (exact DP over the horizon)."""
    v = np.zeros(n_states)
    for _ in range(horizon):
        nv = np.zeros(n_states)
        for s in range(n_states - 1):
            pr = policy(s)
            right, left = min(s + 1, n_states - 1), max(s - 1, 0)
            r_right = 1.0 if right == n_states - 1 else gamma * v[right]
            nv[s] = pr * r_right + (1 - pr) * gamma * v[left]
        v = nv
    return v[0]


def test_discrete_cql_learns_chain_mdp():
    """DiscreteCQL on a fixed offline dataset of a chain MDP (behaviour: uniform, right with p=0.5), all loss_* terms
    summed, learns the greedy policy "always right", whose return beats the behaviour policy's."""
    from arrayrl.objectives import SoftUpdate
    from arrayrl.optim import Adam

    rng = np.random.default_rng(0)
    data = _chain_dataset(rng)
    net = KeyedModule(lambda p, o: namespace_of(o, p["u"]).matmul(o, p["u"]), params={"u": np.zeros((5, 2))},
                      in_keys=["observation"], out_keys=["action_value"])
    loss = DiscreteCQLLoss(net, action_space="categorical")
    loss.make_value_estimator("td0", gamma=0.9)
    upd = SoftUpdate(loss, tau=0.1)
    opt = Adam(lr=0.05)
    state = opt.init(loss.params)
    for _ in range(300):
        batch = {**data, "next": dict(data["next"])}
        _, grads = loss.value_and_grad(batch)
        params, state = opt.update(grads, state, loss.params)
        loss.params = params
        upd.step()
    q = loss.params["value_network"]["u"]
    greedy = lambda s: float(np.argmax(q[s]) == 1)  # noqa: E731
    assert data["next"]["reward"].sum() > 0
    assert all(greedy(s) == 1.0 for s in range(4)), q
    assert _chain_value(greedy) > _chain_value(lambda s: 0.5) + 0.2


def test_bc_reproduces_expert():
    """BC (l2 on a deterministic linear actor; cross-entropy on logits) reproduces an expert's actions."""
    from arrayrl.optim import Adam

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(64, NOBS))
    w_star = rng.normal(size=(NOBS, NA))
    expert = obs @ w_star
    actor = KeyedModule(lambda p, o: namespace_of(o, p["w"]).matmul(o, p["w"]), params={"w": np.zeros((NOBS, NA))},
                        in_keys=["observation"], out_keys=["action"])
    loss = BCLoss(actor, loss_function="l2")
    opt = Adam(lr=0.05)
    state = opt.init(loss.params)
    for _ in range(400):
        _, g = loss.value_and_grad({"observation": obs, "action": expert})
        p, state = opt.update(g, state, loss.params)
        loss.params = p
    np.testing.assert_allclose(actor.params["w"], w_star, atol=1e-3)
    # discrete expert: argmax of a linear score
    labels = np.argmax(obs @ rng.normal(size=(NOBS, NACT)), axis=-1)
    clf = KeyedModule(lambda p, o: namespace_of(o, p["w"]).matmul(o, p["w"]), params={"w": np.zeros((NOBS, NACT))},
                      in_keys=["observation"], out_keys=["action"])
    loss = BCLoss(clf)  # integer expert actions: cross-entropy
    state = opt.init(loss.params)
    for _ in range(400):
        _, g = loss.value_and_grad({"observation": obs, "action": labels})
        p, state = opt.update(g, state, loss.params)
        loss.params = p
    assert np.mean(np.argmax(obs @ clf.params["w"], axis=-1) == labels) >= 0.95


# ------------------------------------------------------------------------------------------------ bad input, API
def test_cql_api_and_bad_input():
    c = _fixed_cql(lagrange=True)
    loss = _cql(_NP, c)
    assert loss.policy is loss.actor_network
    assert sorted(loss.params) == ["actor_network", "log_alpha", "log_alpha_prime", "qvalue_network"]
    assert loss.out_keys[-1] == "loss_alpha_prime"
    loss.generator = Generator(3, xp=np)  # real draws: seeded, reproducible
    o1 = loss(_batch(_NP, c))
    loss.generator = Generator(3, xp=np)
    o2 = loss(_batch(_NP, c))
    assert all(np.all(np.isfinite(v)) and np.array_equal(v, o2[k]) for k, v in o1.items())
    with pytest.raises(TypeError):
        CQLLoss(_actor(_NP, c["actor"]), _critics(_NP, c["qs"]), gamma=0.9)
    with pytest.raises(ValueError, match="temperature"):
        CQLLoss(_actor(_NP, c["actor"]), _critics(_NP, c["qs"]), temperature=0.0)
    with pytest.raises(ValueError, match="num_random"):
        CQLLoss(_actor(_NP, c["actor"]), _critics(_NP, c["qs"]), num_random=0)
    with pytest.raises(ValueError, match="qvalue_network"):
        CQLLoss(_actor(_NP, c["actor"]), _critics(_NP, c["qs"] * 2))
    batch = _batch(_NP, c)
    del batch["next"]["observation"]
    with pytest.raises(KeyError, match="next"):
        loss(batch)
    batch = _batch(_NP, c)
    batch["action"] = batch["action"][:, :1]
    with pytest.raises(ValueError, match="action"):
        loss(batch)


def test_discrete_cql_and_bc_api_and_bad_input():
    rng = np.random.default_rng(0)
    c = dict(b=3, space="categorical", u=rng.normal(size=(NOBS, NACT)), u_target=rng.normal(size=(NOBS, NACT)),
             obs=rng.normal(size=(3, NOBS)), next_obs=rng.normal(size=(3, NOBS)), action=rng.integers(0, NACT, (3, 1)),
             reward=rng.normal(size=(3, 1)), term=np.zeros((3, 1), bool), done=np.zeros((3, 1), bool), fn="l2",
             reduction="mean", compat=False, gamma=0.9)
    loss = _dcql(_NP, c)
    assert loss.policy is loss.value_network
    out = loss(_batch(_NP, c))  # categorical actions [B, 1] work (TorchRL crashes on them)
    np.testing.assert_allclose(out["loss_cql"], _dcql_oracle(c)["loss_cql"], rtol=1e-12)
    with pytest.raises(ValueError, match="loss_function"):
        DiscreteCQLLoss(loss.value_network, loss_function="huber", action_space="categorical")
    bad = _batch(_NP, c)
    bad["action"] = np.full((3,), 9)
    with pytest.raises(ValueError):
        loss(bad)
    actor = KeyedModule(lambda p, o: namespace_of(o, p["w"]).matmul(o, p["w"]), params={"w": np.zeros((NOBS, NA))},
                        in_keys=["observation"], out_keys=["action"])
    with pytest.raises(ValueError, match="loss_function"):
        BCLoss(actor, loss_function="huber")
    bc = BCLoss(actor, loss_function="l1")
    assert bc.policy is actor
    with pytest.raises(KeyError, match="action"):
        bc({"observation": c["obs"]})
    with pytest.raises(ValueError, match="shape"):
        bc({"observation": c["obs"], "action": np.zeros((3, NA + 1))})
    nll = BCLoss(_actor(_NP, dict(w=rng.normal(size=(NOBS, NA)), s=rng.normal(size=(NOBS, NA)))))
    nll.set_keys(pad_mask="pad")
    with pytest.raises(RuntimeError, match="pad_mask"):
        nll({"observation": c["obs"], "action": np.zeros((3, NA)), "pad": np.zeros((3, NA), bool)})


def test_cql_batch_rank_two_equals_flat_batch():
    """A [2, 3] batch (the K repeats along the last batch axis) gives the numbers of the flattened [6] batch with
    the same draws, in both modes (mean reduction)."""
    rng = np.random.default_rng(5)
    c = _fixed_cql()
    b = 6
    c.update(b=b, obs=rng.normal(size=(b, NOBS)), next_obs=rng.normal(size=(b, NOBS)),
             action=rng.uniform(-0.9, 0.9, (b, NA)), reward=rng.normal(size=(b, 1)), term=np.zeros((b, 1), bool),
             done=np.zeros((b, 1), bool), draws=_cql_draw(rng, b, c["k"], False))
    for compat in (False, True):
        cc = dict(c, compat=compat)
        flat = _cql(_NP, cc)(_batch(_NP, cc))
        two = _cql(_NP, cc, reduction="mean")
        shaped = {k: v.reshape((2, v.shape[0] // 2) + v.shape[1:]) for k, v in c["draws"].items()}
        two.generator = Generator.from_noise(*[shaped[k] for k in DRAW_ORDER if k in shaped])
        batch = _batch(_NP, cc)
        batch2 = {"observation": batch["observation"].reshape(2, 3, NOBS), "action": batch["action"].reshape(2, 3, NA),
                  "next": {k: v.reshape((2, 3) + v.shape[1:]) for k, v in batch["next"].items()}}
        out2 = two(batch2)
        for k in flat:
            np.testing.assert_allclose(out2[k], flat[k], rtol=1e-12, err_msg=(compat, k))
