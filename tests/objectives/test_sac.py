"""SACLoss (v1, v2) and DiscreteSACLoss against the float64 per-sample oracle (reference/losses/sac.py) on
Hypothesis batches, on every backend; gradients against float64 finite differences (through the rsample path and
the log_alpha leaf); the divergences from TorchRL (paper default vs torchrl_compat); bad input; a learning test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl._backend import namespace_of
from arrayrl.autodiff import check_grads
from arrayrl.distributions import Categorical, IndependentNormal, OneHotCategorical, TanhNormal
from arrayrl.nn import KeyedModule, ProbabilisticActor
from arrayrl.objectives.sac import DiscreteSACLoss, SACLoss
from arrayrl.random import Generator
from reference import distributions as RD
from reference.losses import sac as R

NOBS, NA, K = 3, 2, 4


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


def _linear(name):
    return lambda p, o: namespace_of(o, p[name]).matmul(o, p[name])


def _q_fn(params, o, a):
    ns = namespace_of(o, a, params["u"])
    return (ns.matmul(o, params["u"]) + ns.matmul(a, params["v"])
            + ns.multiply(ns.sum(ns.multiply(a, a), axis=-1, keepdims=True), params["c"]))


def _critics(xp, qs):
    """A list of critics Q_i(s, a) = obs @ u_i + a @ v_i + c_i |a|^2 (stacked exactly by the loss)."""
    return [KeyedModule(_q_fn, params={k: xp.from_numpy(v) for k, v in q.items()}, in_keys=["observation", "action"],
                        out_keys=["state_action_value"]) for q in qs]


def _value(xp, z):
    return KeyedModule(_linear("z"), params={"z": xp.from_numpy(z)}, in_keys=["observation"],
                       out_keys=["state_value"])


def _np_q(q, o, a):
    return (o @ q["u"] + a @ q["v"] + (a * a).sum(-1, keepdims=True) * q["c"])[..., 0]


def _stack(qs):
    return {k: np.stack([q[k] for q in qs]) for k in qs[0]}


def _to(xp, tree):
    if isinstance(tree, dict):
        return {k: _to(xp, v) for k, v in tree.items()}
    return xp.from_numpy(tree)


# ------------------------------------------------------------------------------------------------ cases
@st.composite
def _cases(draw, version=None):
    b = draw(st.sampled_from([2, 4, 6]))
    n = draw(st.sampled_from([1, 2]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    q = lambda: dict(u=rng.normal(size=(NOBS, 1)), v=rng.normal(size=(NA, 1)), c=rng.normal(size=(1,)) * 0.5)  # noqa
    term = rng.random(b) < 0.3
    done = term | (rng.random(b) < 0.3)
    alpha = draw(st.sampled_from([(0.7, None, None, False), (0.4, None, None, True), (3.0, 0.1, 1.5, False),
                                  (0.05, 0.2, None, False)]))
    return dict(
        b=b, n=n, version=draw(st.sampled_from([1, 2])) if version is None else version,
        actor=dict(w=rng.normal(size=(NOBS, NA)) * 0.7, s=rng.normal(size=(NOBS, NA))),
        qs=[q() for _ in range(n)], qs_target=[q() for _ in range(n)], z=rng.normal(size=(NOBS, 1)),
        z_target=rng.normal(size=(NOBS, 1)), obs=rng.normal(size=(b, NOBS)), next_obs=rng.normal(size=(b, NOBS)),
        action=rng.uniform(-0.9, 0.9, (b, NA)), reward=rng.normal(size=(b, 1)), term=term[:, None], done=done[:, None],
        weights=rng.random(b) + 0.5 if draw(st.booleans()) else None,
        eps_a=rng.normal(size=(b, NA)), eps_b=rng.normal(size=(b, NA)), alpha=alpha,
        dist=draw(st.sampled_from(["tanh", "normal"])), fn=draw(st.sampled_from(["l2", "l1", "smooth_l1"])),
        reduction=draw(st.sampled_from(["mean", "sum", "none"])), skip=draw(st.booleans()),
        compat=draw(st.booleans()), gamma=draw(st.sampled_from([0.9, 0.5])),
    )


def _batch(xp, c):
    f = xp.from_numpy
    batch = {"observation": f(c["obs"]), "action": f(c["action"]),
             "next": {"observation": f(c["next_obs"]), "reward": f(c["reward"]), "done": f(c["done"]),
                      "terminated": f(c["term"])}}
    if c["weights"] is not None:
        batch["priority_weight"] = f(c["weights"])
    return batch


def _sac(xp, c, **extra):
    a0, amin, amax, fixed = c["alpha"]
    kw = dict(num_qvalue_nets=c["n"], loss_function=c["fn"], alpha_init=a0, min_alpha=amin, max_alpha=amax,
              fixed_alpha=fixed, reduction=c["reduction"], action_spec=(NA,), torchrl_compat=c["compat"],
              scalar_output_mode="non_tensor", skip_done_states=c["skip"] and c["version"] == 2)
    kw.update(extra)
    value = _value(xp, c["z"]) if c["version"] == 1 else None
    loss = SACLoss(_actor(xp, c["actor"], c["dist"]), _critics(xp, c["qs"]), value, **kw)
    loss.make_value_estimator("td0", gamma=c["gamma"])
    loss._set_target("qvalue_network", _to(xp, _stack(c["qs_target"])))
    if c["version"] == 1:
        loss._set_target("value_network", {"z": xp.from_numpy(c["z_target"])})
    loss.generator = Generator.from_noise(xp.from_numpy(c["eps_a"]), xp.from_numpy(c["eps_b"]))
    return loss


def _rsample(c, obs, eps):
    loc, scale = obs @ c["actor"]["w"], np.exp(0.3 * (obs @ c["actor"]["s"]))
    if c["dist"] == "tanh":
        return RD.tanh_normal_rsample(loc, scale, eps)
    a = loc + scale * eps
    return a, RD.independent_normal_log_prob(a, loc, scale)


def _sac_oracle(c):
    a0, amin, amax, fixed = c["alpha"]
    common = dict(gamma=c["gamma"], log_alpha=math.log(a0), target_entropy=-float(NA), min_alpha=amin,
                  max_alpha=amax, loss_function=c["fn"], reduction=c["reduction"], weights=c["weights"],
                  torchrl_compat=c["compat"])
    qs, qt = c["qs"], c["qs_target"]
    q_pred = np.stack([_np_q(q, c["obs"], c["action"]) for q in qs])
    if c["version"] == 2:
        a_next, lp_next = _rsample(c, c["next_obs"], c["eps_a"])
        a_pi, lp_pi = _rsample(c, c["obs"], c["eps_b"])
        zero = np.zeros_like(a_next)
        return R.sac_v2_loss(
            q_pred, np.stack([_np_q(q, c["next_obs"], a_next) for q in qt]), lp_next,
            np.stack([_np_q(q, c["obs"], a_pi) for q in qs]), lp_pi, c["reward"], c["term"],
            skip_done_states=c["skip"], done=c["done"],
            q_next_zero=np.stack([_np_q(q, c["next_obs"], zero) for q in qt]),
            **common)
    a_hat, lp_hat = _rsample(c, c["obs"], c["eps_a"])
    a_pi, lp_pi = _rsample(c, c["obs"], c["eps_b"])
    return R.sac_v1_loss(
        q_pred, (c["next_obs"] @ c["z_target"])[:, 0], (c["obs"] @ c["z"])[:, 0],
        np.stack([_np_q(q, c["obs"], a_hat) for q in qs]), np.stack([_np_q(q, c["obs"], a_hat) for q in qt]), lp_hat,
        np.stack([_np_q(q, c["obs"], a_pi) for q in qs]), lp_pi, c["reward"], c["term"], **common)


def _assert_matches(xp, out, want, batch, keys):
    f32 = "32" in str(xp.float_dtype)
    for k in keys:
        assert ("float32" if f32 else "float64") in str(out[k].dtype), (k, out[k].dtype)
        np.testing.assert_allclose(xp.to_numpy(out[k]), np.asarray(want[k]), rtol=max(xp.rtol, 1e-9),
                                   atol=max(xp.atol, 1e-10), err_msg=k)
    np.testing.assert_allclose(xp.to_numpy(batch["td_error"]), want["td_error"], rtol=max(xp.rtol, 1e-9),
                               atol=max(xp.atol, 1e-10), err_msg="td_error")


@settings(max_examples=5)
@given(c=_cases())
def test_sac_vs_reference(xp, c):
    if c["compat"] and c["version"] == 1 and c["b"] % c["n"]:
        return
    loss = _sac(xp, c)
    batch = _batch(xp, c)
    out = loss(batch)
    assert loss.generator.remaining == 0
    _assert_matches(xp, out, _sac_oracle(c), batch, out.keys())


@st.composite
def _discrete_cases(draw):
    b = draw(st.sampled_from([2, 3, 5]))
    n = draw(st.sampled_from([1, 2, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    term = rng.random(b) < 0.3
    space = draw(st.sampled_from(["categorical", "one_hot"]))
    idx = rng.integers(0, K, b)
    return dict(
        b=b, n=n, space=space, w=rng.normal(size=(NOBS, K)) * 2.0, qs=[rng.normal(size=(NOBS, K)) for _ in range(n)],
        qs_target=[rng.normal(size=(NOBS, K)) for _ in range(n)], obs=rng.normal(size=(b, NOBS)),
        next_obs=rng.normal(size=(b, NOBS)), action=idx if space == "categorical" else np.eye(K, dtype=np.int64)[idx],
        reward=rng.normal(size=(b, 1)), term=term[:, None], done=(term | (rng.random(b) < 0.3))[:, None],
        weights=rng.random(b) + 0.5 if draw(st.booleans()) else None,
        alpha=draw(st.sampled_from([(0.7, None, None, False), (0.4, None, None, True), (3.0, None, 1.5, False)])),
        fn=draw(st.sampled_from(["l2", "l1", "smooth_l1"])), reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        skip=draw(st.booleans()), compat=draw(st.booleans()), gamma=0.9,
    )


def _discrete(xp, c, **extra):
    a0, amin, amax, fixed = c["alpha"]
    actor = ProbabilisticActor(KeyedModule(_linear("w"), params={"w": xp.from_numpy(c["w"])},
                                           in_keys=["observation"], out_keys=["logits"]), in_keys=["logits"],
                               distribution_class=Categorical if c["space"] == "categorical" else OneHotCategorical)
    critics = [KeyedModule(_linear("u"), params={"u": xp.from_numpy(u)}, in_keys=["observation"],
                           out_keys=["action_value"]) for u in c["qs"]]
    kw = dict(action_space=c["space"], num_actions=K, num_qvalue_nets=c["n"], loss_function=c["fn"], alpha_init=a0,
              min_alpha=amin, max_alpha=amax, fixed_alpha=fixed, reduction=c["reduction"],
              skip_done_states=c["skip"], torchrl_compat=c["compat"], scalar_output_mode="non_tensor")
    kw.update(extra)
    loss = DiscreteSACLoss(actor, critics, **kw)
    loss.make_value_estimator("td0", gamma=c["gamma"])
    loss._set_target("qvalue_network", {"u": xp.from_numpy(np.stack(c["qs_target"]))})
    return loss


def _discrete_oracle(c):
    a0, amin, amax, _ = c["alpha"]
    return R.discrete_sac_loss(
        np.stack([c["obs"] @ u for u in c["qs"]]), c["action"], np.stack([c["next_obs"] @ u for u in c["qs_target"]]),
        c["next_obs"] @ c["w"], c["obs"] @ c["w"], c["reward"], c["term"], gamma=c["gamma"], log_alpha=math.log(a0),
        target_entropy=0.98 * math.log(K), min_alpha=amin, max_alpha=amax, loss_function=c["fn"],
        reduction=c["reduction"], weights=c["weights"], action_space=c["space"], skip_done_states=c["skip"],
        done=c["done"], torchrl_compat=c["compat"])


@settings(max_examples=5)
@given(c=_discrete_cases())
def test_discrete_sac_vs_reference(xp, c):
    loss = _discrete(xp, c)
    batch = _batch(xp, c)
    out = loss(batch)
    _assert_matches(xp, out, _discrete_oracle(c), batch, out.keys())


# ------------------------------------------------------------------------------------------------ gradients
class _NP:
    float_dtype = np.float64
    from_numpy = staticmethod(np.asarray)


def _grad_case(c):
    c = dict(c)
    a0, amin, amax, fixed = c["alpha"]
    if amin is not None or amax is not None:  # finite differences see the clamp; the straight-through is by design
        c["alpha"] = (a0 if (amin is None or a0 > amin) and (amax is None or a0 < amax) else 0.5, None, None, fixed)
    return c


def _check_terms(loss, batch, groups, reset=lambda: None):
    """Each loss term against central finite differences w.r.t. the parameters it trains (the others fixed):
    loss_qvalue/qvalue_network, loss_actor/actor_network (through the rsample path), loss_alpha/log_alpha,
    loss_value/value_network. Other dependencies are stop-gradients by design (TorchRL's detached critics in the
    actor loss, the detached next action...), which finite differences of the whole sum would see."""
    params = loss.params
    for term, net in groups:
        if net not in params:
            continue

        def f(sub, term=term, net=net):
            reset()
            out = loss._forward(batch, {**params, net: sub})
            return namespace_of(out[term]).sum(out[term])

        check_grads(f, (params[net],), max_elements=0, n_directions=2)


@settings(max_examples=4)
@given(c=_cases())
def test_sac_gradients_vs_finite_differences(c):
    c = _grad_case(c)
    if c["compat"] and c["version"] == 1 and c["b"] % c["n"]:
        return
    loss = _sac(_NP, c)
    reset = lambda: setattr(loss, "generator", Generator.from_noise(c["eps_a"], c["eps_b"]))  # noqa: E731
    _check_terms(loss, _batch(_NP, c), [("loss_qvalue", "qvalue_network"), ("loss_actor", "actor_network"),
                                        ("loss_alpha", "log_alpha"), ("loss_value", "value_network")], reset)


@settings(max_examples=3)
@given(c=_discrete_cases())
def test_discrete_sac_gradients_vs_finite_differences(c):
    c = _grad_case(c)
    loss = _discrete(_NP, c)
    _check_terms(loss, _batch(_NP, c), [("loss_qvalue", "qvalue_network"), ("loss_actor", "actor_network"),
                                        ("loss_alpha", "log_alpha")])


def _fixed_case(version=2, **over):
    rng = np.random.default_rng(3)
    b, n = 6, 2
    term = np.array([True, False, False, False, False, False])
    done = np.array([True, True, False, True, False, False])  # rows 1 and 3 are truncations
    q = lambda: dict(u=rng.normal(size=(NOBS, 1)), v=rng.normal(size=(NA, 1)), c=rng.normal(size=(1,)) * 0.5)  # noqa
    c = dict(b=b, n=n, version=version, actor=dict(w=rng.normal(size=(NOBS, NA)) * 0.7, s=rng.normal(size=(NOBS, NA))),
             qs=[q() for _ in range(n)], qs_target=[q() for _ in range(n)], z=rng.normal(size=(NOBS, 1)),
             z_target=rng.normal(size=(NOBS, 1)), obs=rng.normal(size=(b, NOBS)), next_obs=rng.normal(size=(b, NOBS)),
             action=rng.uniform(-0.9, 0.9, (b, NA)), reward=rng.normal(size=(b, 1)), term=term[:, None],
             done=done[:, None], weights=None, eps_a=rng.normal(size=(b, NA)), eps_b=rng.normal(size=(b, NA)),
             alpha=(0.7, None, None, False), dist="tanh", fn="l2", reduction="none", skip=False, compat=False,
             gamma=0.9)
    c.update(over)
    return c


def test_log_alpha_gradient_is_straight_through_at_the_clamp():
    """TorchRL clamps log_alpha.data in place: the loss uses the clamped value, the gradient is the unclamped
    -(log pi + H). Finite differences of a clip would give 0 there; arrayrl returns TorchRL's gradient."""
    c = _fixed_case(alpha=(5.0, None, 2.0, False), reduction="mean")
    loss = _sac(_NP, c)
    batch = _batch(_NP, c)
    out, grads = loss.value_and_grad(batch)
    want = _sac_oracle(c)
    np.testing.assert_allclose(out["alpha"], 2.0, rtol=1e-14)
    np.testing.assert_allclose(out["loss_alpha"], want["loss_alpha"], rtol=1e-12)
    a_pi, lp_pi = _rsample(c, c["obs"], c["eps_b"])
    np.testing.assert_allclose(grads["log_alpha"], -np.mean(lp_pi - NA), rtol=1e-12)
    # the stored leaf was projected onto the bounds (TorchRL's in-place clamp_)
    np.testing.assert_allclose(loss.params["log_alpha"], math.log(2.0), rtol=1e-15)


# ------------------------------------------------------------------------------------------------ divergences
def test_divergence_skip_done_states_truncation():
    """#2613: TorchRL's skip_done_states masks on done, so truncated rows (1, 3) bootstrap from Q(s', 0) with
    log pi = 0. arrayrl's default masks on terminated: the numbers equal skip_done_states=False."""
    c = _fixed_case(skip=True)
    ref_paper, ref_compat = (R.sac_v2_loss(**_v2_inputs(c, compat)) for compat in (False, True))
    outs = {}
    for compat in (False, True):
        cc = dict(c, compat=compat)
        batch = _batch(_NP, cc)
        loss = _sac(_NP, cc)
        outs[compat] = loss(batch)["loss_qvalue"]
        want = ref_compat if compat else ref_paper
        np.testing.assert_allclose(outs[compat], want["loss_qvalue"], rtol=1e-12)
    plain = _sac(_NP, dict(c, skip=False))(_batch(_NP, c))["loss_qvalue"]
    np.testing.assert_allclose(outs[False], plain, rtol=1e-15)  # skipping terminated rows changes nothing
    differs = ~np.isclose(outs[True], outs[False])
    assert list(np.nonzero(differs)[0]) == [1, 3]  # exactly the truncations


def _v2_inputs(c, compat):
    a_next, lp_next = _rsample(c, c["next_obs"], c["eps_a"])
    a_pi, lp_pi = _rsample(c, c["obs"], c["eps_b"])
    qs, qt = c["qs"], c["qs_target"]
    return dict(q_pred=np.stack([_np_q(q, c["obs"], c["action"]) for q in qs]),
                q_next=np.stack([_np_q(q, c["next_obs"], a_next) for q in qt]), next_log_prob=lp_next,
                q_actor=np.stack([_np_q(q, c["obs"], a_pi) for q in qs]), log_prob=lp_pi, reward=c["reward"],
                terminated=c["term"], gamma=c["gamma"], log_alpha=math.log(c["alpha"][0]), target_entropy=-2.0,
                loss_function=c["fn"], reduction=c["reduction"], skip_done_states=c["skip"], done=c["done"],
                q_next_zero=np.stack([_np_q(q, c["next_obs"], np.zeros_like(a_next)) for q in qt]),
                torchrl_compat=compat)


def test_divergence_discrete_skip_done_states_truncation():
    """DiscreteSAC: TorchRL sets V(s') = 0 on done rows, so truncations lose their bootstrap."""
    rng = np.random.default_rng(1)
    c = dict(b=4, n=2, space="categorical", w=rng.normal(size=(NOBS, K)), qs=[rng.normal(size=(NOBS, K))] * 2,
             qs_target=[rng.normal(size=(NOBS, K)) for _ in range(2)], obs=rng.normal(size=(4, NOBS)),
             next_obs=rng.normal(size=(4, NOBS)), action=np.array([0, 1, 2, 3]), reward=rng.normal(size=(4, 1)),
             term=np.array([[True], [False], [False], [False]]), done=np.array([[True], [True], [False], [False]]),
             weights=None, alpha=(0.7, None, None, False), fn="l2", reduction="none", skip=True, gamma=0.9)
    out = {compat: _discrete(_NP, dict(c, compat=compat))(_batch(_NP, c))["loss_qvalue"] for compat in (False, True)}
    for compat in (False, True):
        np.testing.assert_allclose(out[compat], _discrete_oracle(dict(c, compat=compat))["loss_qvalue"], rtol=1e-12)
    assert list(np.nonzero(~np.isclose(out[True], out[False]))[0]) == [1]


def test_divergence_sac_v1_chunks_and_value_target():
    """TorchRL's SAC v1 trains critic i on chunk i only and builds V's target from the target critics; arrayrl
    (paper, softlearning) trains every critic on the full batch and uses the online critics."""
    c = _fixed_case(version=1, reduction="none")
    out = {}
    for compat in (False, True):
        cc = dict(c, compat=compat)
        batch = _batch(_NP, cc)
        out[compat] = _sac(_NP, cc)(batch)
        want = _sac_oracle(cc)
        for k in ("loss_qvalue", "loss_value"):
            np.testing.assert_allclose(out[compat][k], want[k], rtol=1e-12, err_msg=k)
        np.testing.assert_allclose(batch["td_error"], want["td_error"], rtol=1e-12)
    assert not np.allclose(out[True]["loss_qvalue"], out[False]["loss_qvalue"])
    assert not np.allclose(out[True]["loss_value"], out[False]["loss_value"])
    # paper mode has no divisibility requirement; TorchRL's chunks raise
    c5 = _fixed_case(version=1, b=5, **{k: v[:5] for k, v in c.items() if k in
                                        ("obs", "next_obs", "action", "reward", "term", "done", "eps_a", "eps_b")})
    c5["n"], c5["qs"], c5["qs_target"] = 2, c["qs"], c["qs_target"]
    _sac(_NP, c5)(_batch(_NP, c5))
    with pytest.raises(RuntimeError, match="incompatible"):
        _sac(_NP, dict(c5, compat=True))(_batch(_NP, c5))


def test_divergence_target_entropy_batched_spec():
    c = _fixed_case()
    assert _sac(_NP, c, action_spec=(4, NA)).target_entropy == -2.0
    assert _sac(_NP, dict(c, compat=True), action_spec=(4, NA)).target_entropy == -8.0
    # without a spec: the policy's event size, learned at the first call (TorchRL raises)
    loss = _sac(_NP, c, action_spec=None)
    with pytest.raises(RuntimeError, match="dimensionality"):
        loss.target_entropy
    loss(_batch(_NP, c))
    assert loss.target_entropy == -2.0


# ------------------------------------------------------------------------------------------------ contracts
def test_sac_does_not_mutate_batch_except_td_error_and_float32():
    import array_api_strict as s

    class _F32:
        float_dtype = s.float32
        to_numpy = staticmethod(lambda x: np.asarray(x))

        @staticmethod
        def from_numpy(a):
            a = np.asarray(a)
            dt = s.float32 if a.dtype.kind == "f" else (s.bool if a.dtype.kind == "b" else s.int64)
            return s.asarray(a, dtype=dt)

    c = _fixed_case(reduction="mean")
    for version in (1, 2):
        batch = _batch(_F32, dict(c, version=version))
        before = {k: v for k, v in batch.items()}
        nxt = dict(batch["next"])
        loss = _sac(_F32, dict(c, version=version))
        out = loss(batch)
        assert set(batch) == set(before) | {"td_error"} and batch["next"] == nxt
        assert all(batch[k] is before[k] for k in before)
        for k, v in out.items():
            assert v.dtype == s.float32, k
        assert loss.params["log_alpha"].dtype == s.float32


def test_bad_input_messages():
    c = _fixed_case()
    batch = _batch(_NP, c)
    with pytest.raises(ValueError, match="action"):
        _sac(_NP, c)(dict(batch, action=np.zeros((6, 3))))
    with pytest.raises(ValueError, match="list of 3"):
        SACLoss(_actor(_NP, c["actor"]), _critics(_NP, c["qs"]) + _critics(_NP, c["qs"][:1]), num_qvalue_nets=2)
    with pytest.raises(ValueError, match="max_alpha"):
        SACLoss(_actor(_NP, c["actor"]), _critics(_NP, c["qs"]), min_alpha=2.0, max_alpha=1.0)
    with pytest.raises(ValueError, match="alpha_init"):
        SACLoss(_actor(_NP, c["actor"]), _critics(_NP, c["qs"]), alpha_init=0.0)
    with pytest.raises(TypeError, match="gamma"):
        SACLoss(_actor(_NP, c["actor"]), _critics(_NP, c["qs"]), gamma=0.9)
    with pytest.raises(ValueError, match="reward"):
        _sac(_NP, c)(dict(batch, next=dict(batch["next"], reward=np.zeros((5, 1)))))
    with pytest.raises(RuntimeError, match="no injected draws"):
        loss = _sac(_NP, c)
        loss.generator = Generator.from_noise()
        loss(batch)
    with pytest.raises(ValueError, match="num_actions"):
        DiscreteSACLoss(_actor(_NP, c["actor"]), _critics(_NP, c["qs"]), action_space="categorical")
    ones = np.ones((NOBS, K))
    dc = dict(b=2, n=1, space="categorical", w=ones, qs=[ones], qs_target=[ones],
              obs=np.ones((2, NOBS)), next_obs=np.ones((2, NOBS)), action=np.array([0, K]), reward=np.ones((2, 1)),
              term=np.zeros((2, 1), bool), done=np.zeros((2, 1), bool), weights=None, alpha=(1.0, None, None, False),
              fn="l2", reduction="mean", skip=False, compat=False, gamma=0.9)
    with pytest.raises(ValueError, match="action"):
        _discrete(_NP, dc)(_batch(_NP, dc))


# ------------------------------------------------------------------------------------------------ learning
def test_sac_learns_a_continuous_bandit():
    """One state, one step, r(a) = -(a - 0.5)^2: SAC v2 with a learned temperature finds a = 0.5."""
    from arrayrl.optim import Adam

    B = 64
    actor = ProbabilisticActor(
        KeyedModule(lambda p, o: (o @ p["w"], _softplus(o @ p["s"]) + 1e-3),
                    params={"w": np.zeros((1, 1)), "s": np.zeros((1, 1))},
                    in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"], distribution_class=TanhNormal)
    critic = KeyedModule(lambda p, o, a: o * p["b"] + a * p["w1"] + a * a * p["w2"],
                         params={"b": np.zeros((1,)), "w1": np.zeros((1,)), "w2": np.zeros((1,))},
                         in_keys=["observation", "action"], out_keys=["state_action_value"])
    loss = SACLoss(actor, critic, num_qvalue_nets=2, action_spec=(1,), loss_function="l2", alpha_init=0.2,
                   delay_qvalue=False, generator=Generator(0, xp=np))
    rng = np.random.default_rng(0)
    opt = Adam(lr=0.05)
    state = opt.init(loss.params)
    obs = np.ones((B, 1))
    for _ in range(300):
        dist = actor.get_dist(loss.params["actor_network"], {"observation": obs})
        a = dist.sample(Generator(int(rng.integers(2**31)), xp=np))
        batch = {"observation": obs, "action": a,
                 "next": {"observation": obs, "reward": -(a - 0.5) ** 2, "done": np.ones((B, 1), bool),
                          "terminated": np.ones((B, 1), bool)}}
        _, grads = loss.value_and_grad(batch)
        loss.params, state = opt.update(grads, state, loss.params)
    w = loss.params["actor_network"]["0"]["w"]
    greedy = math.tanh(float(w[0, 0]))
    assert abs(greedy - 0.5) < 0.05, greedy


def _softplus(x):
    ns = namespace_of(x)
    return ns.log(1.0 + ns.exp(x))
