"""Functional loss cores and mixers vs the float64 per-sample reference (reference/losses), on every backend;
gradients vs finite differences (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arrayrl.autodiff import check_grads
from arrayrl.nn.multiagent import QMixer, VDNMixer
from arrayrl.nn.params import flatten_params, unflatten_params
from arrayrl.objectives import functional as F
from arrayrl.objectives.utils import distance_loss, reduce_loss
from arrayrl.testing import assert_allclose
from reference.losses import common as rcommon
from reference.losses import distributional as rdist
from reference.losses import dqn as rdqn
from reference.losses import iql as riql
from reference.losses import qmixer as rqmix

SHAPES = st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple)
SEEDS = st.integers(0, 2**31 - 1)
FAST = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _onehot(rng, shape, n):
    return np.eye(n, dtype=bool)[rng.integers(0, n, shape)]


def _ints(xp, a):
    dtype = xp.int32 if "no_float64" in str(xp.device) else None
    return xp.from_numpy(np.asarray(a), dtype=dtype)


# ------------------------------------------------------------------------------------------------ utils
@FAST
@given(shape=SHAPES, seed=SEEDS, fn=st.sampled_from(["l1", "l2", "smooth_l1"]),
       reduction=st.sampled_from(["mean", "sum", "none"]), weighted=st.booleans(), masked=st.booleans())
def test_distance_and_reduce_vs_reference(xp, shape, seed, fn, reduction, weighted, masked):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(scale=2.0, size=shape), rng.normal(scale=2.0, size=shape)
    w = rng.uniform(0.1, 2.0, size=shape) if weighted else None
    m = (rng.uniform(size=shape) < 0.7) if masked else None
    d = distance_loss(xp.from_numpy(a), xp.from_numpy(b), fn)
    assert_allclose(d, rcommon.distance(a, b, fn), rtol=xp.rtol, atol=xp.atol, dtype=xp.float_dtype)
    out = reduce_loss(d, reduction, weights=None if w is None else xp.from_numpy(w), mask=None if m is None else xp.from_numpy(m))
    want = rcommon.reduce(rcommon.distance(a, b, fn), reduction, weights=w, mask=m)
    assert_allclose(out, want, rtol=xp.rtol, atol=xp.atol)


# ------------------------------------------------------------------------------------------------ DQN
@FAST
@given(shape=SHAPES, seed=SEEDS, n_act=st.integers(2, 5), space=st.sampled_from(["one_hot", "categorical"]),
       double=st.booleans(), fn=st.sampled_from(["l1", "l2", "smooth_l1"]),
       reduction=st.sampled_from(["mean", "sum", "none"]), weighted=st.booleans(), nstep=st.booleans())
def test_dqn_loss_vs_reference(xp, shape, seed, n_act, space, double, fn, reduction, weighted, nstep):
    rng = np.random.default_rng(seed)
    q, qt, qo = (rng.normal(size=shape + (n_act,)) for _ in range(3))
    action = _onehot(rng, shape, n_act) if space == "one_hot" else rng.integers(0, n_act, shape)
    reward, term = rng.normal(size=shape + (1,)), rng.uniform(size=shape + (1,)) < 0.3
    w = rng.uniform(0.1, 2.0, size=shape) if weighted else None
    steps = rng.integers(1, 4, size=shape + (1,)).astype(float) if nstep else None
    kw = dict(gamma=0.9, double_dqn=double, loss_function=fn, reduction=reduction, action_space=space)
    want = rdqn.dqn_loss(q, action, reward, qt, term, next_q_online=qo, weights=w, steps_to_next_obs=steps, **kw)
    act = _ints(xp, action) if space == "categorical" else xp.from_numpy(action)
    got = F.dqn_loss(xp.from_numpy(q), act, xp.from_numpy(reward), xp.from_numpy(qt), xp.from_numpy(term),
                     next_q_online=xp.from_numpy(qo), weights=None if w is None else xp.from_numpy(w),
                     steps_to_next_obs=None if steps is None else xp.from_numpy(steps), **kw)
    for k in ("loss", "pred", "target", "td_error"):
        assert_allclose(got[k], want[k], rtol=xp.rtol, atol=xp.atol, name=k)


@pytest.mark.parametrize("space", ["one_hot", "categorical"])
def test_dqn_loss_grad_fd(space):
    rng = np.random.default_rng(0)
    q, qt = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    action = _onehot(rng, (5,), 3) if space == "one_hot" else rng.integers(0, 3, 5)
    r, term = rng.normal(size=(5, 1)), rng.uniform(size=(5, 1)) < 0.3
    for fn in ("l1", "l2", "smooth_l1"):
        check_grads(lambda x: F.dqn_loss(x, action, r, qt, term, gamma=0.9, loss_function=fn, action_space=space)["loss"], q)


def test_greedy_value_spaces():
    q = np.array([[1.0, -2.0, 3.0, 0.5, -1.0]])
    assert F.greedy_action_value(q, "one_hot")[0] == 3.0
    assert F.greedy_action_value(q, "binary")[0] == 4.5
    assert F.greedy_action_value(q, "mult_one_hot", var_nums=[2, 3])[0] == 1.0 + 3.0
    assert F.greedy_action_value(q, "mult_one_hot", var_nums=2)[0] == 1.0 + 3.0 - 1.0
    a = np.array([[1, 0, 1, 0, 1]])
    assert F.chosen_action_value(q, a, "binary")[0] == 3.0


# ------------------------------------------------------------------------------------------------ C51
@FAST
@given(shape=SHAPES, seed=SEEDS, atoms=st.integers(2, 7), n_act=st.integers(2, 4),
       space=st.sampled_from(["one_hot", "categorical"]), reduction=st.sampled_from(["mean", "sum", "none"]),
       nstep=st.booleans(), vmax=st.floats(0.5, 5.0))
def test_distributional_vs_reference(xp, shape, seed, atoms, n_act, space, reduction, nstep, vmax):
    rng = np.random.default_rng(seed)

    def logp():
        x = rng.normal(size=shape + (atoms, n_act))
        return x - np.log(np.exp(x).sum(-2, keepdims=True))

    lp, lpo, lpt = logp(), logp(), logp()
    support = np.linspace(-vmax, vmax, atoms)
    action = _onehot(rng, shape, n_act) if space == "one_hot" else rng.integers(0, n_act, shape)
    # rewards on the support grid too, so that integer b (the fix-up case) is exercised
    reward = np.where(rng.uniform(size=shape + (1,)) < 0.5, rng.normal(scale=vmax, size=shape + (1,)),
                      support[rng.integers(0, atoms, shape + (1,))])
    term = rng.uniform(size=shape + (1,)) < 0.3
    steps = rng.integers(1, 3, size=shape + (1,)).astype(float) if nstep else None
    want = rdist.distributional_dqn_loss(lp, action, reward, term, lpt, support, gamma=0.9, next_log_probs_online=lpo,
                                         steps_to_next_obs=steps, reduction=reduction, action_space=space)
    act = _ints(xp, action) if space == "categorical" else xp.from_numpy(action)
    got = F.distributional_dqn_loss(xp.from_numpy(lp), act, xp.from_numpy(reward), xp.from_numpy(lpo), xp.from_numpy(lpt),
                                    xp.from_numpy(term), support=xp.from_numpy(support), gamma=0.9,
                                    steps_to_next_obs=None if steps is None else xp.from_numpy(steps),
                                    reduction=reduction, action_space=space)
    assert_allclose(got["loss"], want["loss"], rtol=xp.rtol * 10, atol=xp.atol * 10, name="loss")
    assert_allclose(got["td_error"], want["td_error"], rtol=xp.rtol * 10, atol=xp.atol * 10, name="td_error")


def test_c51_projection_mass_and_fixups():
    support = np.linspace(-1.0, 1.0, 5)
    p = np.full((4, 5), 0.2)
    reward = np.array([0.0, 0.5, -3.0, 3.0])  # integer b everywhere for gamma=1 / clamped at both ends
    m = F.c51_projection(p, reward, np.array([False, False, True, True]), support, 1.0)
    np.testing.assert_allclose(m.sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(m, rdist.c51_projection(p, reward, np.array([False, False, True, True]), support, discount=1.0))
    np.testing.assert_allclose(m[2], [1, 0, 0, 0, 0])
    np.testing.assert_allclose(m[3], [0, 0, 0, 0, 1])


def test_distributional_grad_fd():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2, 5, 3))
    support = np.linspace(-2, 2, 5)
    nxt = rng.normal(size=x.shape)
    nxt = nxt - np.log(np.exp(nxt).sum(-2, keepdims=True))
    a = rng.integers(0, 3, (3, 2))

    def f(x):
        from arrayrl import ops

        lp = ops.log_softmax(x, axis=-2)
        return F.distributional_dqn_loss(lp, a, np.ones((3, 2)), nxt, nxt, np.zeros((3, 2), bool), support=support,
                                         gamma=0.9, action_space="categorical")["loss"]

    check_grads(f, x)


# ------------------------------------------------------------------------------------------------ IQL
@FAST
@given(shape=SHAPES, seed=SEEDS, n=st.integers(1, 3), tau=st.floats(0.05, 0.95), beta=st.floats(0.1, 5.0),
       fn=st.sampled_from(["l1", "l2", "smooth_l1"]), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_iql_terms_vs_reference(xp, shape, seed, n, tau, beta, fn, reduction):
    rng = np.random.default_rng(seed)
    qt, qo = rng.normal(size=(n,) + shape), rng.normal(size=(n,) + shape)
    lp, v, nv = rng.normal(size=shape), rng.normal(size=shape), rng.normal(size=shape)
    r, term = rng.normal(size=shape), rng.uniform(size=shape) < 0.3
    if rng.uniform() < 0.3:  # large advantages hit the exp clamp at 100
        v = v - 10.0
    want = riql.iql_loss(lp, qt, qo, v, nv, r, term, gamma=0.9, temperature=beta, expectile=tau, loss_function=fn,
                         reduction=reduction)
    X = xp.from_numpy
    min_q = xp.min(X(qt), axis=0)
    y = F.td0_target(X(r), X(nv), X(term), 0.9)
    crit, td = F.ensemble_critic_loss(X(qo), y, fn)
    got = {
        "loss_actor": reduce_loss(F.iql_actor_loss(X(lp), min_q, X(v), beta), reduction),
        "loss_value": reduce_loss(F.iql_value_loss(min_q, X(v), tau), reduction),
        "loss_qvalue": reduce_loss(crit, reduction),
        "td_error": xp.max(td, axis=0),
    }
    for k, val in got.items():
        assert_allclose(val, want[k], rtol=xp.rtol, atol=xp.atol, name=k)


def test_iql_terms_grad_fd():
    rng = np.random.default_rng(2)
    qt, lp, v = rng.normal(size=(2, 6)), rng.normal(size=6), rng.normal(size=6)
    check_grads(lambda x: F.iql_actor_loss(x, qt.min(0), v, 2.0), lp)
    check_grads(lambda x: F.iql_value_loss(qt.min(0), x, 0.7), v)
    check_grads(lambda x: F.ensemble_critic_loss(x, v, "smooth_l1")[0], qt)


# ------------------------------------------------------------------------------------------------ mixers
@FAST
@given(shape=SHAPES, seed=SEEDS, n=st.integers(1, 4), embed=st.integers(1, 5))
def test_mixers_vs_reference(xp, shape, seed, n, embed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=shape + (n, 1))
    state = rng.normal(size=shape + (2, 3))
    assert_allclose(VDNMixer(n)(xp.from_numpy(q)), rqmix.vdn_mix(q), rtol=xp.rtol, atol=xp.atol)
    mixer = QMixer((2, 3), embed, n)
    params = {k: rng.normal(size=v.shape) for k, v in flatten_params(mixer.params).items()}
    want = rqmix.qmix_mix(q, state, params)
    p = {k: xp.from_numpy(v) for k, v in params.items()}
    got = mixer.apply(unflatten_params(p), xp.from_numpy(q), xp.from_numpy(state))
    assert_allclose(got, want, rtol=xp.rtol * 10, atol=xp.atol * 10)


def test_qmixer_grad_fd():
    rng = np.random.default_rng(3)
    mixer = QMixer((4,), 3, 2)
    q, s = rng.normal(size=(5, 2, 1)), rng.normal(size=(5, 4))

    check_grads(lambda p, q: mixer.apply(p, q, s), (mixer.params, q))


def test_qmixer_loss_functional_vs_reference():
    rng = np.random.default_rng(4)
    q, qt = rng.normal(size=(6, 3, 4)), rng.normal(size=(6, 3, 4))
    a = rng.integers(0, 4, (6, 3))
    r, term = rng.normal(size=(6, 1)), rng.uniform(size=(6, 1)) < 0.3
    want = rqmix.qmixer_loss(q, a, r, qt, term, gamma=0.9, mixer="vdn", action_space="categorical")
    vdn = VDNMixer(3)
    q_tot = vdn(F.chosen_action_value(q, a, "categorical")[..., None])[..., 0]
    nxt = vdn(F.greedy_action_value(qt, "categorical")[..., None])[..., 0]
    y = F.td0_target(r[..., 0], nxt, term[..., 0], 0.9)
    loss, td = F.mixer_td_loss(q_tot, y, "l2")
    np.testing.assert_allclose(loss, want["loss"], rtol=1e-12)
    np.testing.assert_allclose(td, want["td_error"], rtol=1e-12)


# ------------------------------------------------------------------------------------------------ index range
@pytest.mark.parametrize("bad", [-1, 3])
def test_gathers_reject_out_of_range_actions(xp, bad):
    """-1 wraps around (every backend) and n_actions reads garbage (torch) or raises a bare IndexError (NumPy):
    every categorical gather checks the range under the default (auto) policy, on every CPU backend."""
    from arrayrl._validate import IndexRangeError

    rng = np.random.default_rng(0)
    q = xp.from_numpy(rng.normal(size=(4, 3)))
    action = _ints(xp, np.array([0, bad, 2, 1]))
    msg = rf"action: expected integers in \[0, 3\), got values outside \(min {min(bad, 0)}, max {max(bad, 2)}\)"
    with pytest.raises(IndexRangeError, match=msg):
        F.chosen_action_value(q, action, "categorical")
    lp = xp.from_numpy(np.log(np.full((4, 5, 3), 0.2)))
    r, term = xp.from_numpy(rng.normal(size=(4,))), xp.from_numpy(np.zeros(4, bool))
    with pytest.raises(IndexRangeError, match=msg):
        F.distributional_dqn_loss(lp, action, r, lp, lp, term, support=xp.from_numpy(np.linspace(-1, 1, 5)),
                                  gamma=0.9, action_space="categorical")
    with pytest.raises(IndexRangeError, match=msg):
        F.dqn_loss(q, action, r, q, term, gamma=0.9, action_space="categorical")


def test_categorical_trailing_one_and_one_hot_width():
    q = np.arange(12.0).reshape(4, 3)
    a = np.array([0, 2, 1, 2])
    np.testing.assert_array_equal(F.chosen_action_value(q, a[:, None], "categorical"), [0.0, 5.0, 7.0, 11.0])
    with pytest.raises(ValueError, match=r"'act': expected a one_hot action of shape \(4, 3\)"):
        F.chosen_action_value(q, np.eye(4)[a], "one_hot", name="'act'")


def test_distributional_atom_count_and_gamma():
    lp = np.log(np.full((4, 5, 3), 0.2))
    r, term, a = np.zeros(4), np.zeros(4, bool), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match=r"log_probs: expected 7 atoms \(the length of support\)"):
        F.distributional_dqn_loss(lp, a, r, lp, lp, term, support=np.linspace(-1, 1, 7), gamma=0.9,
                                  action_space="categorical")
    with pytest.raises(ValueError, match=r"gamma: .* in \[0.0, 1.0\], got nan"):
        F.distributional_dqn_loss(lp, a, r, lp, lp, term, support=np.linspace(-1, 1, 5), gamma=float("nan"),
                                  action_space="categorical")


def test_mixer_td_loss_names_its_roles():
    with pytest.raises(ValueError, match=r"target: expected shape \(3,\) \(the shape of global_value"):
        F.mixer_td_loss(np.zeros(3), np.zeros((3, 1)))
