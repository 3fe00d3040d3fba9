"""The loss provider of ``arrayrl check`` (arrayrl.check.losses): every family passes against TorchRL and
reference/, a loss broken on purpose is caught (values, gradients, finite differences), and a case leaves torch's
default dtype and RNG as it found them."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from arrayrl.autodiff import stop_gradient  # noqa: E402
from arrayrl.check import losses as L  # noqa: E402
from arrayrl.check._common import Errors, torch_float64  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]


def _noop():
    return None


@pytest.mark.parametrize("family", list(L.BUILDERS))
def test_family_passes_against_torchrl_and_reference(family):
    res = L.CHECKS[f"loss.{family}"](4, np.random.default_rng(7), _noop)
    assert res["passed"] and res["cases"] == 4, res
    assert res["value_rel"] < 1e-12 and res["grad_rel"] < 1e-12


def test_reference_is_used_for_td0():
    with torch_float64(0):
        case = L.dqn_case(np.random.default_rng(0), action_space="categorical", estimator="td0")
        assert case.reference is not None
        acc = Errors()
        L.compare_with_torchrl(case, acc)
    assert acc.result()["passed"] and acc.ref_abs < 1e-12
    with torch_float64(0):
        assert L.dqn_case(np.random.default_rng(0), estimator="td1").reference is None


def _iql(rng):
    return L.iql_case(rng, discrete=None, num_qvalue_nets=2, loss_function="l2", reduction="mean", expectile=0.7,
                      temperature=1.0, estimator="td0")


def _c51(rng):
    return L.distributional_dqn_case(rng)


def test_wrong_values_fail(monkeypatch):
    """A 1% error in the expectile loss shows in the values (vs TorchRL) and against the reference."""
    import arrayrl.objectives.functional as F

    orig = F.expectile_loss
    monkeypatch.setattr(F, "expectile_loss", lambda diff, tau: orig(diff, tau) * 1.01)
    with torch_float64(0):
        acc = Errors()
        L.compare_with_torchrl(_iql(np.random.default_rng(0)), acc)
    res = acc.result()
    assert not res["passed"] and res["value_rel"] > 1e-4 and res["ref_abs"] > 1e-4
    assert "loss_value" in res["note"]


def test_wrong_gradient_with_right_values_fails(monkeypatch):
    """Same values, half the gradient through the value loss: caught by TorchRL's gradients and by finite
    differences, not by the values."""
    import arrayrl.objectives.functional as F

    orig = F.expectile_loss

    def half_grad(diff, tau):
        return orig(stop_gradient(diff) + 0.5 * (diff - stop_gradient(diff)), tau)

    monkeypatch.setattr(F, "expectile_loss", half_grad)
    with torch_float64(0):
        case = _iql(np.random.default_rng(0))
        acc = Errors()
        L.compare_with_torchrl(case, acc)
        fd = Errors(L.FD_TOLERANCE)
        L.check_finite_differences(case, fd, np.random.default_rng(1))
    assert acc.value_rel < 1e-12 and acc.grad_rel > 1e-3 and not acc.result()["passed"]
    assert fd.grad_rel > 1e-3 and not fd.result()["passed"] and "loss_value" in fd.result()["note"]


def test_backend_mismatch_fails(monkeypatch):
    """An error that only appears off NumPy is caught by the backends component."""
    import arrayrl.objectives.functional as F

    orig = F.expectile_loss

    def off_numpy(diff, tau):
        out = orig(diff, tau)
        return out if isinstance(stop_gradient(diff), np.ndarray) else out * 1.01

    monkeypatch.setattr(F, "expectile_loss", off_numpy)
    with torch_float64(0):
        acc = Errors()
        L.check_backends(_iql(np.random.default_rng(0)), acc)
    assert not acc.result()["passed"] and acc.value_rel > 1e-4


def test_case_restores_torch_state():
    before = torch.get_default_dtype(), torch.random.get_rng_state()
    res = L.CHECKS["loss.DQNLoss"](2, np.random.default_rng(0), _noop)
    assert res["passed"]
    assert torch.get_default_dtype() == before[0]
    assert torch.equal(torch.random.get_rng_state(), before[1])


@pytest.mark.parametrize("build", [_iql, _c51], ids=["iql", "c51"])
def test_tape_gradients_on_array_api_strict(build):
    """Taped losses on array-api-strict, whose operators refuse a taped right operand: library code uses xp calls."""
    pytest.importorskip("array_api_strict")
    with torch_float64(0):
        acc = Errors()
        L.check_backends(build(np.random.default_rng(0)), acc, tape_backends=("torch", "array_api_strict"))
    assert acc.result()["passed"]
