"""Self-tests of reference.value: hand-computed goldens (T=3/4) and cross-checks against TorchRL's loops."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from reference import value as V

F, T_ = False, True


def col(*xs, dtype=np.float64):
    """A single trajectory in TorchRL's layout [1, T, 1]."""
    return np.asarray(xs, dtype=dtype).reshape(1, -1, 1)


def flags(*xs):
    return col(*xs, dtype=bool)


def flat(x):
    return np.asarray(x).reshape(-1)


# --------------------------------------------------------------------------------------------------------------
# hand-computed goldens
# --------------------------------------------------------------------------------------------------------------


def test_td0_hand():
    # G = r + 0.5 (1 - term) V':  [1 + 0.5*2, 2 (terminated), 3 + 0.5*6]
    out = V.td0_return(0.5, col(2, 4, 6), col(1, 2, 3), flags(F, T_, F))
    np.testing.assert_allclose(flat(out), [2.0, 2.0, 6.0], rtol=0, atol=1e-15)
    adv = V.td0_advantage(0.5, col(1, 1, 1), col(2, 4, 6), col(1, 2, 3), flags(F, T_, F))
    np.testing.assert_allclose(flat(adv), [1.0, 1.0, 5.0], rtol=0, atol=1e-15)
    # terminated defaults to done in the advantage
    adv2 = V.td0_advantage(0.5, col(1, 1, 1), col(2, 4, 6), col(1, 2, 3), flags(F, T_, F), None)
    np.testing.assert_array_equal(adv, adv2)


@pytest.mark.parametrize(
    "done, term, expected",
    [
        # no done: G2 = 1 + .5*8 = 5; G1 = 1 + .5*5 = 3.5; G0 = 1 + .5*3.5 = 2.75
        ((F, F, F), (F, F, F), [2.75, 3.5, 5.0]),
        # truncated at 1: G1 = 1 + .5*4 = 3, G0 = 1 + .5*3 = 2.5
        ((F, T_, F), (F, F, F), [2.5, 3.0, 5.0]),
        # terminated at 1: G1 = 1, G0 = 1.5
        ((F, T_, F), (F, T_, F), [1.5, 1.0, 5.0]),
        # terminated at the last step: G2 = 1, G1 = 1.5, G0 = 1.75
        ((F, F, T_), (F, F, T_), [1.75, 1.5, 1.0]),
    ],
)
def test_td1_hand(done, term, expected):
    out = V.td1_return(0.5, col(2, 4, 8), col(1, 1, 1), flags(*done), flags(*term))
    np.testing.assert_allclose(flat(out), expected, rtol=0, atol=1e-15)
    adv = V.td1_advantage(0.5, col(1, 2, 3), col(2, 4, 8), col(1, 1, 1), flags(*done), flags(*term))
    np.testing.assert_allclose(flat(adv), np.asarray(expected) - [1, 2, 3], rtol=0, atol=1e-15)


def test_td1_per_step_gamma_hand():
    g = col(0.5, 0.25, 1.0)
    nv, r, d = col(2, 4, 8), col(1, 1, 1), flags(F, F, F)
    # rolling: G2 = 1 + 8 = 9; G1 = 1 + .25*9 = 3.25; G0 = 1 + .5*3.25 = 2.625
    np.testing.assert_allclose(flat(V.td1_return(g, nv, r, d, d)), [2.625, 3.25, 9.0], atol=1e-15)
    # fixed per start step: G0 = 1 + .5 + .25 + .125*8 = 2.75; G1 = 1 + .25 + .0625*8 = 1.75; G2 = 1 + 8 = 9
    np.testing.assert_allclose(flat(V.td1_return(g, nv, r, d, d, rolling_gamma=False)), [2.75, 1.75, 9.0], atol=1e-15)
    # TorchRL's branch seeds with 0 (no bootstrap at the end of the rollout): 1.75, 1.25, 1
    np.testing.assert_allclose(flat(V.td1_return(g, nv, r, d, d, rolling_gamma=False, torchrl_compat=True)),
                               [1.75, 1.25, 1.0], atol=1e-15)
    with pytest.raises(ValueError, match="rolling_gamma=False"):
        V.td1_return(0.5, nv, r, d, d, rolling_gamma=False)


def test_td_lambda_hand():
    nv, r, d = col(2, 4, 8), col(1, 1, 1), flags(F, F, F)
    # G2 = 1 + .5*8 = 5; G1 = 1 + .5(.5*4 + .5*5) = 3.25; G0 = 1 + .5(.5*2 + .5*3.25) = 2.3125
    np.testing.assert_allclose(flat(V.td_lambda_return(0.5, 0.5, nv, r, d, d)), [2.3125, 3.25, 5.0], atol=1e-15)
    # lambda = 0 -> TD(0); lambda = 1 -> TD(1)
    np.testing.assert_allclose(flat(V.td_lambda_return(0.5, 0.0, nv, r, d, d)), [2.0, 3.0, 5.0], atol=1e-15)
    np.testing.assert_allclose(flat(V.td_lambda_return(0.5, 1.0, nv, r, d, d)), [2.75, 3.5, 5.0], atol=1e-15)
    # truncated at 0: G0 = 1 + .5(.5*2 + .5*2) = 2 (cut), terminated at 0: G0 = 1
    np.testing.assert_allclose(flat(V.td_lambda_return(0.5, 0.5, nv, r, flags(T_, F, F), flags(F, F, F))),
                               [2.0, 3.25, 5.0], atol=1e-15)
    np.testing.assert_allclose(flat(V.td_lambda_return(0.5, 0.5, nv, r, flags(T_, F, F), flags(T_, F, F))),
                               [1.0, 3.25, 5.0], atol=1e-15)
    adv = V.td_lambda_advantage(0.5, 0.5, col(1, 1, 1), nv, r, d, d)
    np.testing.assert_allclose(flat(adv), [1.3125, 2.25, 4.0], atol=1e-15)


def test_td_lambda_fixed_gamma_hand():
    # rolling_gamma=False, gamma=[.5, .25, 1], lambda=1: G0 = 1 + .5 + .25 + .125*8 = 2.75; G1 = 1.75; G2 = 9
    out = V.td_lambda_return(col(0.5, 0.25, 1.0), 1.0, col(2, 4, 8), col(1, 1, 1), flags(F, F, F), None,
                             rolling_gamma=False)
    np.testing.assert_allclose(flat(out), [2.75, 1.75, 9.0], atol=1e-15)


@pytest.mark.parametrize(
    "done, term, expected_adv",
    [
        # delta = [1 + .9*2 - 1, 1 + .9*3 - 2, 1 + .9*4 - 3] = [1.8, 1.7, 1.6], gamma*lambda = .72
        # A2 = 1.6, A1 = 1.7 + .72*1.6 = 2.852, A0 = 1.8 + .72*2.852 = 3.85344
        ((F, F, F), (F, F, F), [3.85344, 2.852, 1.6]),
        # truncated at 1: A1 = 1.7 (cut), A0 = 1.8 + .72*1.7 = 3.024
        ((F, T_, F), (F, F, F), [3.024, 1.7, 1.6]),
        # terminated at 1: delta1 = 1 - 2 = -1, A0 = 1.8 - .72 = 1.08
        ((F, T_, F), (F, T_, F), [1.08, -1.0, 1.6]),
    ],
)
def test_gae_hand(done, term, expected_adv):
    adv, target = V.gae(0.9, 0.8, col(1, 2, 3), col(2, 3, 4), col(1, 1, 1), flags(*done), flags(*term))
    np.testing.assert_allclose(flat(adv), expected_adv, rtol=0, atol=1e-14)
    np.testing.assert_allclose(flat(target), np.asarray(expected_adv) + [1, 2, 3], rtol=0, atol=1e-14)


def test_vtrace_hand():
    # rho = [1, 2, .5]; rho_bar = c_bar = [1, 1, .5]; V = 1, V' = [1, 1, 2], r = 1, gamma = .5
    # delta = [1*(1 + .5 - 1), .5, .5*(1 + 1 - 1)] = [.5, .5, .5]
    # vs - V: [.5 + .5*.75, .5 + .5*.5, .5] = [.875, .75, .5]
    # adv0 = 1 + .5*1.75 - 1 = .875; adv1 = 1 + .5*1.5 - 1 = .75; adv2 = .5*(1 + .5*2 - 1) = .5
    lp = col(0.0, math.log(2.0), math.log(0.5))
    lmu = col(0.0, 0.0, 0.0)
    adv, vs = V.vtrace(0.5, lp, lmu, col(1, 1, 1), col(1, 1, 2), col(1, 1, 1), flags(F, F, F))
    np.testing.assert_allclose(flat(vs), [1.875, 1.75, 1.5], atol=1e-15)
    np.testing.assert_allclose(flat(adv), [0.875, 0.75, 0.5], atol=1e-15)
    # done at 0 (truncated): vs0 - V0 = .5 (cut); adv0 bootstraps from V'_0 = 1: 1 + .5 - 1 = .5
    adv, vs = V.vtrace(0.5, lp, lmu, col(1, 1, 1), col(1, 1, 2), col(1, 1, 1), flags(T_, F, F), flags(F, F, F))
    np.testing.assert_allclose(flat(vs), [1.5, 1.75, 1.5], atol=1e-15)
    np.testing.assert_allclose(flat(adv), [0.5, 0.75, 0.5], atol=1e-15)


def test_reward2go_hand():
    # done after step 1: R1 = 2, R0 = 1 + .5*2 = 2; R3 = 4, R2 = 3 + .5*4 = 5
    out = V.reward2go(col(1, 2, 3, 4), flags(F, T_, F, F), 0.5)
    np.testing.assert_allclose(flat(out), [2.0, 2.0, 5.0, 4.0], atol=1e-15)
    # gamma = 0 gives the rewards (TorchRL 0.14.1 raises IndexError here)
    np.testing.assert_allclose(flat(V.reward2go(col(1, 2, 3, 4), flags(F, F, F, F), 0.0)), [1, 2, 3, 4])


# --------------------------------------------------------------------------------------------------------------
# structural properties of the reference itself
# --------------------------------------------------------------------------------------------------------------


def _random_case(rng, shape, p_done=0.3, p_term=0.5):
    done = rng.random(shape) < p_done
    term = done & (rng.random(shape) < p_term)
    return dict(
        value=rng.normal(size=shape), next_value=rng.normal(size=shape), reward=rng.normal(size=shape),
        done=done, terminated=term,
    )


def test_time_axis_moves():
    rng = np.random.default_rng(0)
    c = _random_case(rng, (2, 5, 3))
    a, t = V.gae(0.9, 0.7, c["value"], c["next_value"], c["reward"], c["done"], c["terminated"])
    moved = {k: np.moveaxis(v, 1, 0) for k, v in c.items()}
    a0, t0 = V.gae(0.9, 0.7, moved["value"], moved["next_value"], moved["reward"], moved["done"],
                   moved["terminated"], time_dim=0)
    np.testing.assert_array_equal(np.moveaxis(a0, 0, 1), a)
    np.testing.assert_array_equal(np.moveaxis(t0, 0, 1), t)


def test_split_at_done_changes_nothing():
    rng = np.random.default_rng(1)
    c = _random_case(rng, (1, 8, 1))
    c["done"][0, 3, 0] = True
    whole = V.td_lambda_return(0.9, 0.6, c["next_value"], c["reward"], c["done"], c["terminated"])
    parts = [V.td_lambda_return(0.9, 0.6, *(c[k][:, s] for k in ("next_value", "reward", "done", "terminated")))
             for s in (slice(0, 4), slice(4, 8))]
    np.testing.assert_allclose(whole, np.concatenate(parts, axis=1), rtol=0, atol=1e-14)


def test_errors():
    with pytest.raises(ValueError, match="reward"):
        V.td1_return(0.9, np.zeros((2, 3, 1)), np.zeros((2, 3)), np.zeros((2, 3, 1), bool))
    with pytest.raises(ValueError, match="time_dim"):
        V.reward2go(np.zeros(4), np.zeros(4, bool), 0.9)  # 1-D with the default time_dim=-2
    with pytest.raises(TypeError, match="done"):
        V.gae(0.9, 0.9, *[np.zeros((1, 3, 1))] * 3, np.zeros((1, 3, 1)))
    with pytest.raises(ValueError, match="gamma"):
        V.gae(np.full((3,), 0.9), 0.9, *[np.zeros((1, 3, 1))] * 3, np.zeros((1, 3, 1), bool))


# --------------------------------------------------------------------------------------------------------------
# cross-checks against TorchRL 0.14.1's loop functions (float64, 1e-10)
# --------------------------------------------------------------------------------------------------------------

TOL = dict(rtol=1e-10, atol=1e-10)


def _torch_case(seed, shape, *, gamma_array=False, lmbda_array=False, flag_mode="valid"):
    rng = np.random.default_rng(seed)
    c = _random_case(rng, shape)
    if flag_mode == "any":  # terminated not implied by done: the formulas must still agree
        c["terminated"] = rng.random(shape) < 0.3
    elif flag_mode == "none":
        c["done"][:] = False
        c["terminated"][:] = False
    c["gamma"] = rng.uniform(0.5, 1.0, size=shape) if gamma_array else 0.93
    c["lmbda"] = rng.uniform(0.0, 1.0, size=shape) if lmbda_array else 0.71
    c["log_pi"] = rng.normal(scale=0.7, size=shape)
    c["log_mu"] = rng.normal(scale=0.7, size=shape)
    return c


def _t(x):
    """To torch, float64.  Python-float gammas become 0-d float64 tensors: TorchRL multiplies a Python float by
    an int mask (``gamma * (~terminated).int()``), which gives a float32 tensor, so GAE/V-trace/TD(0) would apply
    gamma rounded to float32 (errors ~1e-8 on float64 inputs; see test_torchrl_python_float_gamma_is_float32)."""
    import torch

    if isinstance(x, float):
        return torch.tensor(x, dtype=torch.float64)
    return torch.as_tensor(x) if isinstance(x, np.ndarray) else x


def _n(x):
    return x.detach().numpy()


CASES = [
    dict(shape=(3, 7, 2), time_dim=-2),
    dict(shape=(7, 3, 2), time_dim=0),
    dict(shape=(2, 3, 6), time_dim=-1),
    dict(shape=(2, 6, 3, 1), time_dim=1),
    dict(shape=(9,), time_dim=-1),
]
FLAG_MODES = ["valid", "any", "none"]


@pytest.mark.torchrl
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['shape']}-t{c['time_dim']}")
@pytest.mark.parametrize("flag_mode", FLAG_MODES)
@pytest.mark.parametrize("per_step", [False, True], ids=["scalar", "per_step"])
def test_vs_torchrl_multi_step(case, flag_mode, per_step):
    from torchrl.objectives.value import functional as TF

    shape, td = case["shape"], case["time_dim"]
    c = _torch_case(zlib.crc32(repr((shape, flag_mode, per_step)).encode()), shape, gamma_array=per_step, lmbda_array=per_step,
                    flag_mode=flag_mode)
    t = {k: _t(v) for k, v in c.items()}
    g, lm = c["gamma"], c["lmbda"]

    adv, tgt = TF.generalized_advantage_estimate(t["gamma"], t["lmbda"], t["value"], t["next_value"], t["reward"],
                                                 t["done"], t["terminated"], time_dim=td)
    radv, rtgt = V.gae(g, lm, c["value"], c["next_value"], c["reward"], c["done"], c["terminated"], time_dim=td)
    np.testing.assert_allclose(radv, _n(adv), **TOL)
    np.testing.assert_allclose(rtgt, _n(tgt), **TOL)

    ret = TF.td1_return_estimate(t["gamma"], t["next_value"], t["reward"], t["done"], t["terminated"], time_dim=td)
    np.testing.assert_allclose(V.td1_return(g, c["next_value"], c["reward"], c["done"], c["terminated"],
                                            time_dim=td), _n(ret), **TOL)
    a1 = TF.td1_advantage_estimate(t["gamma"], t["value"], t["next_value"], t["reward"], t["done"],
                                   t["terminated"], time_dim=td)
    np.testing.assert_allclose(V.td1_advantage(g, c["value"], c["next_value"], c["reward"], c["done"],
                                               c["terminated"], time_dim=td), _n(a1), **TOL)

    ret = TF.td_lambda_return_estimate(t["gamma"], t["lmbda"], t["next_value"], t["reward"], t["done"],
                                       t["terminated"], time_dim=td)
    np.testing.assert_allclose(V.td_lambda_return(g, lm, c["next_value"], c["reward"], c["done"], c["terminated"],
                                                  time_dim=td), _n(ret), **TOL)
    al = TF.td_lambda_advantage_estimate(t["gamma"], t["lmbda"], t["value"], t["next_value"], t["reward"],
                                         t["done"], t["terminated"], time_dim=td)
    np.testing.assert_allclose(V.td_lambda_advantage(g, lm, c["value"], c["next_value"], c["reward"], c["done"],
                                                     c["terminated"], time_dim=td), _n(al), **TOL)

    adv, vs = TF.vtrace_advantage_estimate(t["gamma"], t["log_pi"], t["log_mu"], t["value"], t["next_value"],
                                           t["reward"], t["done"], t["terminated"], rho_thresh=_t(1.3), c_thresh=_t(0.9),
                                           time_dim=td)
    radv, rvs = V.vtrace(g, c["log_pi"], c["log_mu"], c["value"], c["next_value"], c["reward"], c["done"],
                         c["terminated"], rho_thresh=1.3, c_thresh=0.9, time_dim=td)
    np.testing.assert_allclose(radv, _n(adv), **TOL)
    np.testing.assert_allclose(rvs, _n(vs), **TOL)

    if not per_step:  # TorchRL's reward2go takes a scalar gamma only
        r2g = TF.reward2go(t["reward"], t["done"], g, time_dim=td)
        np.testing.assert_allclose(V.reward2go(c["reward"], c["done"], g, time_dim=td), _n(r2g), **TOL)


@pytest.mark.torchrl
@pytest.mark.parametrize("flag_mode", FLAG_MODES)
def test_vs_torchrl_td0(flag_mode):
    from torchrl.objectives.value import functional as TF

    c = _torch_case(7, (4, 5, 1), gamma_array=True, flag_mode=flag_mode)
    t = {k: _t(v) for k, v in c.items()}
    for g, tg in ((c["gamma"], t["gamma"]), (0.9, _t(0.9))):
        ret = TF.td0_return_estimate(tg, t["next_value"], t["reward"], t["terminated"])
        np.testing.assert_allclose(V.td0_return(g, c["next_value"], c["reward"], c["terminated"]), _n(ret), **TOL)
        adv = TF.td0_advantage_estimate(tg, t["value"], t["next_value"], t["reward"], t["done"], t["terminated"])
        np.testing.assert_allclose(V.td0_advantage(g, c["value"], c["next_value"], c["reward"], c["done"],
                                                   c["terminated"]), _n(adv), **TOL)
        adv = TF.td0_advantage_estimate(tg, t["value"], t["next_value"], t["reward"], t["done"])
        np.testing.assert_allclose(V.td0_advantage(g, c["value"], c["next_value"], c["reward"], c["done"]),
                                   _n(adv), **TOL)


@pytest.mark.torchrl
@pytest.mark.parametrize("flag_mode", FLAG_MODES)
def test_vs_torchrl_fixed_gamma(flag_mode):
    """rolling_gamma=False: TD(lambda) agrees; TD(1) agrees only in torchrl_compat mode (TorchRL seeds with 0)."""
    from torchrl.objectives.value import functional as TF

    c = _torch_case(11, (3, 6, 2), gamma_array=True, lmbda_array=True, flag_mode=flag_mode)
    t = {k: _t(v) for k, v in c.items()}
    ret = TF.td_lambda_return_estimate(t["gamma"], t["lmbda"], t["next_value"], t["reward"], t["done"],
                                       t["terminated"], rolling_gamma=False)
    np.testing.assert_allclose(V.td_lambda_return(c["gamma"], c["lmbda"], c["next_value"], c["reward"], c["done"],
                                                  c["terminated"], rolling_gamma=False), _n(ret), **TOL)
    ret = TF.td1_return_estimate(t["gamma"], t["next_value"], t["reward"], t["done"], t["terminated"],
                                 rolling_gamma=False)
    ours = V.td1_return(c["gamma"], c["next_value"], c["reward"], c["done"], c["terminated"], rolling_gamma=False,
                        torchrl_compat=True)
    np.testing.assert_allclose(ours, _n(ret), **TOL)
    if flag_mode == "none":  # the default (bootstrapping) version differs exactly where TorchRL drops V(s_T)
        fixed = V.td1_return(c["gamma"], c["next_value"], c["reward"], c["done"], c["terminated"],
                             rolling_gamma=False)
        assert not np.allclose(fixed, _n(ret))
        # and equals TorchRL's own TD(lambda=1) with rolling_gamma=False
        lam1 = TF.td_lambda_return_estimate(t["gamma"], 1.0, t["next_value"], t["reward"], t["done"],
                                            t["terminated"], rolling_gamma=False)
        np.testing.assert_allclose(fixed, _n(lam1), **TOL)


@pytest.mark.torchrl
def test_vs_torchrl_terminated_none():
    from torchrl.objectives.value import functional as TF

    c = _torch_case(3, (2, 6, 1))
    t = {k: _t(v) for k, v in c.items()}
    adv, _ = TF.generalized_advantage_estimate(_t(0.9), _t(0.8), t["value"], t["next_value"], t["reward"], t["done"])
    np.testing.assert_allclose(V.gae(0.9, 0.8, c["value"], c["next_value"], c["reward"], c["done"])[0], _n(adv), **TOL)
    adv, vs = TF.vtrace_advantage_estimate(_t(0.9), t["log_pi"], t["log_mu"], t["value"], t["next_value"], t["reward"],
                                           t["done"])
    radv, rvs = V.vtrace(0.9, c["log_pi"], c["log_mu"], c["value"], c["next_value"], c["reward"], c["done"])
    np.testing.assert_allclose(radv, _n(adv), **TOL)
    np.testing.assert_allclose(rvs, _n(vs), **TOL)


@pytest.mark.torchrl
def test_torchrl_python_float_gamma_is_float32():
    """Documents a TorchRL precision quirk: a Python-float gamma is applied in float32 by GAE on float64 data."""
    from torchrl.objectives.value import functional as TF

    c = _torch_case(5, (2, 6, 1), flag_mode="none")
    t = {k: _t(v) for k, v in c.items() if isinstance(v, np.ndarray)}
    adv, _ = TF.generalized_advantage_estimate(0.93, 0.0, t["value"], t["next_value"], t["reward"], t["done"],
                                               t["terminated"])
    exact = V.gae(0.93, 0.0, c["value"], c["next_value"], c["reward"], c["done"], c["terminated"])[0]
    as_f32 = V.gae(float(np.float32(0.93)), 0.0, c["value"], c["next_value"], c["reward"], c["done"],
                   c["terminated"])[0]
    np.testing.assert_allclose(as_f32, _n(adv), **TOL)
    assert np.max(np.abs(exact - _n(adv))) > 1e-9


# --------------------------------------------------------------------------------------------------------------
# Hypothesis: random layouts and flag patterns
# --------------------------------------------------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402


@st.composite
def trajectories(draw):
    T = draw(st.integers(1, 8))
    B = draw(st.integers(1, 3))
    Fd = draw(st.integers(1, 2))
    layout = draw(st.sampled_from(["BTF", "TBF", "BFT"]))
    shape, time_dim = {"BTF": ((B, T, Fd), -2), "TBF": ((T, B, Fd), 0), "BFT": ((B, Fd, T), -1)}[layout]
    floats = st.floats(-5, 5, allow_nan=False, allow_subnormal=False)
    arr = lambda: draw(hnp.arrays(np.float64, shape, elements=floats))  # noqa: E731
    done = draw(hnp.arrays(np.bool_, shape))
    term = done & draw(hnp.arrays(np.bool_, shape))
    gamma = draw(st.sampled_from(["scalar", "array"]))
    g = draw(st.floats(0.0, 1.0)) if gamma == "scalar" else draw(hnp.arrays(np.float64, shape,
                                                                            elements=st.floats(0.0, 1.0)))
    lm = draw(st.floats(0.0, 1.0))
    return dict(value=arr(), next_value=arr(), reward=arr(), log_pi=arr() / 3, log_mu=arr() / 3, done=done,
                terminated=term, gamma=g, lmbda=lm, time_dim=time_dim)


@given(trajectories())
def test_gae_target_is_td_lambda_with_consistent_values(c):
    """GAE's value target equals the TD(lambda) return when V(s_{t+1}) == V_{t+1} inside trajectories."""
    td = c["time_dim"]
    v = np.moveaxis(c["value"], td, -1)
    nv = np.moveaxis(c["next_value"], td, -1).copy()
    d = np.moveaxis(c["done"], td, -1)
    nv[..., :-1] = np.where(d[..., :-1], nv[..., :-1], v[..., 1:])  # consistent where the trajectory continues
    nv = np.moveaxis(nv, -1, td)
    _, target = V.gae(c["gamma"], c["lmbda"], c["value"], nv, c["reward"], c["done"], c["terminated"], time_dim=td)
    ret = V.td_lambda_return(c["gamma"], c["lmbda"], nv, c["reward"], c["done"], c["terminated"], time_dim=td)
    np.testing.assert_allclose(target, ret, rtol=1e-9, atol=1e-9)


@pytest.mark.torchrl
@given(trajectories())
def test_vs_torchrl_hypothesis(c):
    from torchrl.objectives.value import functional as TF

    td = c["time_dim"]
    t = {k: _t(v) for k, v in c.items() if k != "time_dim"}
    args = ("value", "next_value", "reward", "done", "terminated")
    adv, tgt = TF.generalized_advantage_estimate(t["gamma"], t["lmbda"], *(t[k] for k in args), time_dim=td)
    radv, rtgt = V.gae(c["gamma"], c["lmbda"], *(c[k] for k in args), time_dim=td)
    np.testing.assert_allclose(radv, _n(adv), **TOL)
    ret = TF.td_lambda_return_estimate(t["gamma"], t["lmbda"], *(t[k] for k in args[1:]), time_dim=td)
    np.testing.assert_allclose(V.td_lambda_return(c["gamma"], c["lmbda"], *(c[k] for k in args[1:]), time_dim=td),
                               _n(ret), **TOL)
    ret = TF.td1_return_estimate(t["gamma"], *(t[k] for k in args[1:]), time_dim=td)
    np.testing.assert_allclose(V.td1_return(c["gamma"], *(c[k] for k in args[1:]), time_dim=td), _n(ret), **TOL)
    adv, vs = TF.vtrace_advantage_estimate(t["gamma"], t["log_pi"], t["log_mu"], *(t[k] for k in args),
                                           rho_thresh=_t(1.0), c_thresh=_t(1.0), time_dim=td)
    radv, rvs = V.vtrace(c["gamma"], c["log_pi"], c["log_mu"], *(c[k] for k in args), time_dim=td)
    np.testing.assert_allclose(radv, _n(adv), **TOL)
    np.testing.assert_allclose(rvs, _n(vs), **TOL)
    T = c["reward"].shape[td]
    g = c["gamma"]
    # TorchRL's reward2go: scalar gamma only, gamma=0 crashes, and its filter drops gamma^k < 1e-7
    exact_in_torchrl = np.ndim(g) == 0 and g > 0 and (g >= 1 or int(math.log(1e-7) / math.log(g)) >= T)
    if exact_in_torchrl:
        r2g = TF.reward2go(t["reward"], t["done"], g, time_dim=td)
        np.testing.assert_allclose(V.reward2go(c["reward"], c["done"], g, time_dim=td), _n(r2g), **TOL)
