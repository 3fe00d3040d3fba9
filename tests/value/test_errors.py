"""Bad input: clear TypeError/ValueError naming the argument; NaN after a done never leaks backward."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from arrayrl.value import functional as F


def _arrays(shape=(2, 5, 1), seed=0):
    rng = np.random.default_rng(seed)
    v, nv, r = (rng.normal(size=shape) for _ in range(3))
    d = rng.random(shape) < 0.3
    return v, nv, r, d, d & (rng.random(shape) < 0.5)


ALL = {
    "gae": lambda v, nv, r, d, t, **k: F.generalized_advantage_estimate(0.9, 0.8, v, nv, r, d, t, **k),
    "td_lambda": lambda v, nv, r, d, t, **k: F.td_lambda_return_estimate(0.9, 0.8, nv, r, d, t, **k),
    "td_lambda_adv": lambda v, nv, r, d, t, **k: F.td_lambda_advantage_estimate(0.9, 0.8, v, nv, r, d, t, **k),
    "td1": lambda v, nv, r, d, t, **k: F.td1_return_estimate(0.9, nv, r, d, t, **k),
    "td1_adv": lambda v, nv, r, d, t, **k: F.td1_advantage_estimate(0.9, v, nv, r, d, t, **k),
    "vtrace": lambda v, nv, r, d, t, **k: F.vtrace_advantage_estimate(0.9, v, v, v, nv, r, d, t, **k),
    "reward2go": lambda v, nv, r, d, t, **k: F.reward2go(r, d, 0.9, **k),
}


@pytest.mark.parametrize("name", list(ALL))
def test_mismatched_shapes_name_the_argument(name):
    v, nv, r, d, t = _arrays()
    msg = r"done: expected shape \(2, 5\)" if name == "reward2go" else r"reward: expected shape \(2, 5, 1\).*got \(2, 5\)"
    with pytest.raises(ValueError, match=msg):
        ALL[name](v, nv, r[..., 0], d, t)
    with pytest.raises(ValueError, match=r"done: expected shape"):
        ALL[name](v, nv, r, d[:, :4], t)


def test_b_never_broadcasts_against_b1():
    v, nv, r, d, t = _arrays((4, 1))
    with pytest.raises(ValueError, match="next_state_value"):
        F.td0_return_estimate(0.9, nv[:, 0], r, t)


@pytest.mark.parametrize("name", list(ALL))
def test_done_must_be_bool(name):
    v, nv, r, d, t = _arrays()
    with pytest.raises(TypeError, match="done: expected a bool dtype, got float"):
        ALL[name](v, nv, r, d.astype(np.float64), t)
    if name != "reward2go":
        with pytest.raises(TypeError, match="terminated: expected a bool dtype"):
            ALL[name](v, nv, r, d, t.astype(np.int64))


@pytest.mark.parametrize("name", list(ALL))
def test_values_must_be_floating(name):
    v, nv, r, d, t = _arrays()
    with pytest.raises(TypeError, match="reward: expected a real floating"):
        ALL[name](v, nv, r.astype(np.int64), d, t)


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("time_dim", [3, -4, 10])
def test_time_axis_out_of_range(name, time_dim):
    v, nv, r, d, t = _arrays()
    with pytest.raises(ValueError, match=r"time_dim: expected an axis in \[-3, 3\)"):
        ALL[name](v, nv, r, d, t, time_dim=time_dim)


@pytest.mark.parametrize("name", list(ALL))
def test_one_dimensional_inputs_need_time_dim_minus_one(name):
    v, nv, r, d, t = _arrays((7,))
    with pytest.raises(ValueError, match="pass time_dim=-1"):
        ALL[name](v, nv, r, d, t)
    out = ALL[name](v, nv, r, d, t, time_dim=-1)
    for o in out if isinstance(out, tuple) else (out,):
        assert o.shape == (7,)
    out0 = ALL[name](v, nv, r, d, t, time_dim=0)
    for a, b in zip(out if isinstance(out, tuple) else (out,), out0 if isinstance(out0, tuple) else (out0,)):
        np.testing.assert_array_equal(a, b)


def test_time_dim_must_be_an_int():
    v, nv, r, d, t = _arrays()
    with pytest.raises(TypeError, match="time_dim: expected an int"):
        F.reward2go(r, d, 0.9, time_dim=1.0)


def test_zero_dimensional_inputs():
    with pytest.raises(ValueError, match="time axis"):
        F.reward2go(np.zeros(()), np.zeros((), bool), 0.9)


@pytest.mark.parametrize("bad", [np.ones((2, 5)), np.ones((5, 1)), np.ones((2, 5, 1, 1))])
def test_gamma_of_the_wrong_shape(bad):
    v, nv, r, d, t = _arrays()
    with pytest.raises(ValueError, match=r"gamma: expected a scalar or an array of the inputs' shape \(2, 5, 1\)"):
        F.generalized_advantage_estimate(bad, 0.9, v, nv, r, d, t)


def test_gamma_types():
    v, nv, r, d, t = _arrays()
    with pytest.raises(TypeError, match="gamma"):
        F.reward2go(r, d, [0.9])
    with pytest.raises(TypeError, match="lmbda: expected a number or an array, got bool"):
        F.generalized_advantage_estimate(0.9, True, v, nv, r, d, t)
    # a one-element array is a scalar (TorchRL accepts numel() == 1)
    a, _ = F.generalized_advantage_estimate(np.array([0.9]), 0.8, v, nv, r, d, t)
    b, _ = F.generalized_advantage_estimate(0.9, 0.8, v, nv, r, d, t)
    np.testing.assert_array_equal(a, b)


def test_rolling_gamma_false_needs_per_step_discounts():
    v, nv, r, d, t = _arrays()
    with pytest.raises(ValueError, match="rolling_gamma=False"):
        F.td1_return_estimate(0.9, nv, r, d, t, rolling_gamma=False)
    with pytest.raises(ValueError, match="rolling_gamma=False"):
        F.td_lambda_return_estimate(0.9, 0.5, nv, r, d, t, rolling_gamma=False)


def test_td0_done_alias_and_missing_terminated():
    v, nv, r, d, t = _arrays()
    with pytest.raises(TypeError, match="terminated is required"):
        F.td0_return_estimate(0.9, nv, r)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        out = F.td0_return_estimate(0.9, nv, r, done=d)
    np.testing.assert_array_equal(out, F.td0_return_estimate(0.9, nv, r, d))


def test_mixed_libraries_raise():
    torch = pytest.importorskip("torch")
    v, nv, r, d, t = _arrays()
    with pytest.raises(TypeError, match="mixed array libraries"):
        F.td0_return_estimate(0.9, torch.tensor(nv), r, t)


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("T", [3, 40, 3000])
def test_nan_after_a_done_never_leaks_backward(name, T):
    """A value that is NaN (or inf) after an in-batch done: every output up to the done stays finite and equal
    to the clean result (each algorithm of the scan kernel: T = 3, 40 and 3000 take different paths)."""
    v, nv, r, d, t = _arrays((2, T, 1), seed=T)
    d[:, T // 2] = True
    clean = ALL[name](v, nv, r, d, t)
    for bad in (np.nan, np.inf, -np.inf):
        vv, nn, rr = v.copy(), nv.copy(), r.copy()
        vv[:, T // 2 + 1:] = bad
        nn[:, T // 2 + 1:] = bad
        rr[:, T // 2 + 1] = bad
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore")
            out = ALL[name](vv, nn, rr, d, t)
        for a, b in zip(out if isinstance(out, tuple) else (out,), clean if isinstance(clean, tuple) else (clean,)):
            np.testing.assert_allclose(a[:, : T // 2 + 1], b[:, : T // 2 + 1], rtol=1e-12, atol=1e-12)


def test_nan_next_value_at_a_terminated_step_is_not_used():
    v, nv, r, d, t = _arrays((2, 6, 1))
    t[:, 2] = d[:, 2] = True
    nv[:, 2] = np.nan
    assert np.all(np.isfinite(F.generalized_advantage_estimate(0.9, 0.8, v, nv, r, d, t)[0]))
    assert np.all(np.isfinite(F.td_lambda_return_estimate(0.9, 0.8, nv, r, d, t)))
    assert np.all(np.isfinite(F.td0_return_estimate(0.9, nv, r, t)))


@pytest.mark.parametrize("bad", [1.0, [1.0, 2.0], None])
def test_non_arrays_name_the_argument(bad):
    d = np.zeros((2,), bool)
    with pytest.raises(TypeError, match="reward: expected an array"):
        F.reward2go(bad, d, 0.9, time_dim=-1)
