"""Every functional estimator on every backend equals the float64 loop oracle (reference/) on Hypothesis inputs;
gradients through the tape equal central finite differences of the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arrayrl.autodiff import value_and_grad
from arrayrl.testing import assert_allclose
from arrayrl.testing.strategies import trajectory_batches
from arrayrl.value import functional as F
from reference.gradcheck import numerical_vjp

from value_helpers import CASE_IDS, CASES, FEW, NON_ROLLING, SETTINGS, float32_tolerance


def _draw(data, case, **kw):
    if case.name in NON_ROLLING:
        kw.setdefault("per_step_gamma", True)
        kw.setdefault("max_time", 10)
    if not case.timed:
        kw.setdefault("time_axis", "default")
    return data.draw(trajectory_batches(**kw), label="batch")


def _check_against_reference(xp, case, data):
    tb = _draw(data, case)
    expected = case.ref(tb)
    got = case.ours(tb.map(xp.from_numpy), F)
    assert len(got) == len(expected)
    scale = max([1.0] + [float(np.max(np.abs(e))) for e in expected if e.size])
    tol = 1e-10 * scale if xp.is_float64 else float32_tolerance(tb, expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert_allclose(g, e, rtol=0.0, atol=tol, xp=xp.ns, dtype=xp.float_dtype, name=f"{case.name}[{i}]")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@SETTINGS
@given(data=st.data())
def test_matches_reference_numpy(case, data):
    """NumPy, the full number of examples."""
    from conftest import _make_backend

    _check_against_reference(_make_backend("numpy"), case, data)


@pytest.mark.parametrize("case", [c for c in CASES if not c.name.startswith("vec_")], ids=lambda c: c.name)
@FEW
@given(data=st.data())
def test_matches_reference_every_backend(xp, case, data):
    """Every backend of the ``xp`` fixture (fewer examples; the vec_ names are the same functions)."""
    _check_against_reference(xp, case, data)


def test_vec_names_are_the_same_implementation():
    for name in ("td1_return_estimate", "td1_advantage_estimate", "td_lambda_return_estimate",
                 "td_lambda_advantage_estimate", "generalized_advantage_estimate"):
        assert getattr(F, "vec_" + name) is getattr(F, name)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@FEW
@given(data=st.data())
def test_gradients_match_finite_differences(case, data):
    tb = _draw(data, case, max_time=8, max_batch_dims=1, max_batch_size=2)
    names = case.diff
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    cot = tuple(rng.normal(size=e.shape) for e in case.ref(tb))

    def ours(*arrays):
        import dataclasses

        out = case.ours(dataclasses.replace(tb, **dict(zip(names, arrays))), F)
        xp = arrays[0].__array_namespace__()
        total = None
        for o, c in zip(out, cot):
            s = xp.sum(o * c)
            total = s if total is None else total + s
        return total

    def ref(*arrays):
        import dataclasses

        return case.ref(dataclasses.replace(tb, **dict(zip(names, arrays))))

    args = tuple(getattr(tb, n) for n in names)
    _, grads = value_and_grad(ours, argnums=tuple(range(len(names))))(*args)
    fd = numerical_vjp(ref, args, cot)
    for n, g, f in zip(names, grads, fd):
        np.testing.assert_allclose(g, f, rtol=1e-6, atol=1e-6, err_msg=f"{case.name}: d/d{n}")


@pytest.mark.parametrize("case", [c for c in CASES if c.name == "generalized_advantage_estimate"], ids=["gae"])
@FEW
@given(data=st.data())
def test_float32_stays_float32(xp, case, data):
    """float32 in, float32 out on every backend that has float32 (and float64 in, float64 out)."""
    tb = _draw(data, case)
    tb32 = tb.map(lambda a: xp.from_numpy(a, dtype=xp.float32) if a.dtype != bool else xp.from_numpy(a))
    for out in case.ours(tb32, F):
        assert out.dtype == xp.float32
