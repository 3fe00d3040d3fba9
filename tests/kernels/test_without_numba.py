"""The generic path without numba: the estimator, scan and optimiser tests with ``ARRAYRL_DISABLE_NUMBA=1``, the
in-process switch, and a process in which numba cannot be imported at all.

CI installs numba (the ``fast`` extra), so without these tests the pure array-API fallback of
:mod:`arrayrl._numba_scan` would never run on NumPy there. Goldens: the ``reference/value.py`` loops (float64,
written independently of the library) and the value tests' own goldens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import arrayrl._numba_optim as KO
import arrayrl._numba_scan as K
from arrayrl import _scan
from arrayrl.optim import Adam
from arrayrl.autodiff import value_and_grad
from arrayrl.value import functional as F
from reference import value as R

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAS_NUMBA = __import__("importlib.util").util.find_spec("numba") is not None

# the estimator and scan tests that go through the dispatch (the CLI and strategy-coverage tests do not)
VALUE_TESTS = [f"tests/value/{name}.py" for name in (
    "test_functional_reference", "test_estimators", "test_properties", "test_scan", "test_shifted",
    "test_torchrl_crossval", "test_bad_input", "test_errors")] + [
    f"tests/optim/{name}.py" for name in ("test_optim", "test_bad_input_optim", "test_adam_kernel")]

# run in the child: pytest (or a script) followed by a check that no numba kernel ran and numba was not imported
_GUARD = """
import sys
import arrayrl._numba_scan as K, arrayrl._numba_optim as KO
problems = []
if K._state["kernels"] is not None or KO._state["kernel"] is not None:
    problems.append("a numba kernel was compiled or loaded")
if "numba" in sys.modules:
    problems.append("numba was imported")
if K.available():
    problems.append("K.available() is True")
if problems:
    print("NUMBA GUARD: " + "; ".join(problems))
    sys.exit(rc or 3)
sys.exit(rc)
"""

# a meta-path finder that makes ``import numba`` fail as if it were not installed
_BLOCKER = """
import importlib.abc, sys
class _NoNumba(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "numba" or name.startswith("numba."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _NoNumba())
"""


def _child(code: str, env_extra: dict, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("ARRAYRL_DISABLE_NUMBA", None)
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _report(res: subprocess.CompletedProcess) -> str:
    return f"exit {res.returncode}\n--- stdout ---\n{res.stdout[-6000:]}\n--- stderr ---\n{res.stderr[-3000:]}"


def test_value_tests_pass_with_numba_disabled():
    """``ARRAYRL_DISABLE_NUMBA=1``: the estimator and scan tests pass on the generic path (a small Hypothesis
    budget: the ``dev`` profile), no kernel is compiled or loaded and numba is never imported."""
    args = ["-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly", *VALUE_TESTS]
    code = f"import pytest\nrc = int(pytest.main({args!r}))\n" + _GUARD
    res = _child(code, {"ARRAYRL_DISABLE_NUMBA": "1", "HYPOTHESIS_PROFILE": "dev"}, timeout=900)
    if res.returncode != 0 or " passed" not in res.stdout or "NUMBA GUARD" in res.stdout:
        pytest.fail(_report(res), pytrace=False)


SMOKE = """
import numpy as np
import arrayrl, arrayrl._numba_scan as K
from arrayrl.autodiff import value_and_grad
from arrayrl.value import functional as F
from reference import value as R
assert not K.available()
try:
    K.set_enabled(True)
except ImportError:
    pass
else:
    raise AssertionError("set_enabled(True) should raise ImportError without numba")
K.set_enabled(None)
rng = np.random.default_rng(0)
shape = (3, 40, 1)
v, nv, r = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
d = rng.random(shape) < 0.1
tm = d & (rng.random(shape) < 0.5)
adv, target = F.generalized_advantage_estimate(0.99, 0.95, v, nv, r, d, tm)
radv, rtarget = R.gae(0.99, 0.95, v, nv, r, d, tm)
assert adv.dtype == np.float32
np.testing.assert_allclose(adv, radv, rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(target, rtarget, rtol=1e-4, atol=1e-4)
ret = F.td_lambda_return_estimate(0.99, 0.95, nv, r, d, tm)
np.testing.assert_allclose(ret, R.td_lambda_return(0.99, 0.95, nv, r, d, tm), rtol=1e-4, atol=1e-4)
np.testing.assert_allclose(F.reward2go(r, d, 0.9), R.reward2go(r, d, 0.9), rtol=1e-4, atol=1e-4)
loss = lambda vv: vv.__array_namespace__().sum(F.generalized_advantage_estimate(0.99, 0.95, vv, nv, r, d, tm)[0])
g = value_and_grad(loss)(v)[1]
assert g.shape == v.shape and np.isfinite(g).all()
# Adam, one step from zero state (hand calculation: m = 0.1 g, v = 0.001 g^2, both bias-corrected to g and g^2,
# so p' = p - lr * g / (|g| + eps) = p - lr * sign(g) up to eps)
from arrayrl.optim import Adam
opt = Adam(lr=0.1)
p0 = {"w": np.array([1.0, -2.0, 3.0], np.float32)}
g0 = {"w": np.array([0.5, -4.0, 2.0], np.float32)}
p1, st = opt.update(g0, opt.init(p0), p0)
assert p1["w"].dtype == np.float32 and st["step"] == 1
np.testing.assert_allclose(p1["w"], [0.9, -1.9, 2.9], rtol=1e-6)
rc = 0
"""


def test_library_works_when_numba_is_not_installed():
    """``import numba`` fails (a meta-path blocker, the environment variable unset): ``import arrayrl`` works,
    the dispatch reports numba unavailable, and the estimators (and a gradient) match the reference loops."""
    res = _child(_BLOCKER + SMOKE + _GUARD, {}, timeout=300)
    if res.returncode != 0:
        pytest.fail(_report(res), pytrace=False)


def test_the_blocker_really_blocks_numba():
    """The blocker of the test above must make ``import numba`` fail (else that test proves nothing)."""
    res = _child(_BLOCKER + "import numba\n", {}, timeout=120)
    if res.returncode == 0 or "blocked by the test" not in res.stderr:
        pytest.fail(_report(res), pytrace=False)


# ---------------------------------------------------------------------------------------------------- in process


def _inputs(shape=(4, 30, 2), seed=0):
    rng = np.random.default_rng(seed)
    v, nv, r = (rng.standard_normal(shape) for _ in range(3))
    d = rng.random(shape) < 0.1
    return v, nv, r, d, d & (rng.random(shape) < 0.5)


@pytest.fixture
def no_kernels(monkeypatch):
    """Any numba kernel launch raises (the compiled entry points are looked up through ``K._kernels`` and
    ``KO._kernel``)."""
    calls = []

    def forbidden():
        calls.append(1)
        raise AssertionError("a numba kernel was called")

    monkeypatch.setattr(K, "_kernels", forbidden)
    monkeypatch.setattr(KO, "_kernel", forbidden)
    yield calls
    K.set_enabled(None)


def _run_all(v, nv, r, d, tm):
    """Every dispatching entry: the raw scan, GAE, TD(lambda), a gradient through the taped scan, and an Adam
    update (checked in the test against a hand calculation)."""
    c = np.where(d, 0.0, 0.9)
    scan = _scan.reverse_discounted_scan_raw(r, c, axis=1)
    adv, target = F.generalized_advantage_estimate(0.99, 0.95, v, nv, r, d, tm, time_dim=1)
    ret = F.td_lambda_return_estimate(0.99, 0.95, nv, r, d, tm, time_dim=1)
    def loss(vv):
        return vv.__array_namespace__().sum(F.generalized_advantage_estimate(0.99, 0.95, vv, nv, r, d, tm,
                                                                             time_dim=1)[0])

    grad = value_and_grad(loss)(v)[1]
    return scan, adv, target, ret, grad, _adam_step()


def _adam_step():
    """One Adam step from zero state: bias-corrected ``m = g``, ``v = g**2``, so ``p' = p - lr g / (|g| + eps)``."""
    p = {"w": np.array([1.0, -2.0, 3.0], np.float32)}
    g = {"w": np.array([0.5, -4.0, 2.0], np.float32)}
    return Adam(lr=0.1).update(g, Adam(lr=0.1).init(p), p)[0]["w"]


@pytest.mark.parametrize("switch", ["set_enabled", "generic_path", "env"])
def test_dispatch_falls_back_when_disabled(no_kernels, monkeypatch, switch):
    """Each switch sends every estimator to the generic path (no kernel call) with the reference's values."""
    v, nv, r, d, tm = _inputs()
    if switch == "env":
        monkeypatch.setenv("ARRAYRL_DISABLE_NUMBA", "1")
        K.set_enabled(None)  # decide again from the environment, as at the first call of a process
        scan, adv, target, ret, grad, adam = _run_all(v, nv, r, d, tm)
    elif switch == "set_enabled":
        K.set_enabled(False)
        scan, adv, target, ret, grad, adam = _run_all(v, nv, r, d, tm)
    else:
        with K.generic_path():
            scan, adv, target, ret, grad, adam = _run_all(v, nv, r, d, tm)
    assert not no_kernels
    np.testing.assert_allclose(adam, [0.9, -1.9, 2.9], rtol=1e-6)
    radv, rtarget = R.gae(0.99, 0.95, v, nv, r, d, tm, time_dim=1)
    np.testing.assert_allclose(adv, radv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(target, rtarget, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret, R.td_lambda_return(0.99, 0.95, nv, r, d, tm, time_dim=1), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(scan, R.reward2go(r, d, 0.9, time_dim=1), rtol=1e-12, atol=1e-12)
    # the advantage is linear in the values: a directional derivative of the reference is exact (up to rounding)
    for u in np.random.default_rng(1).standard_normal((3, *v.shape)):
        fd = (np.sum(R.gae(0.99, 0.95, v + u, nv, r, d, tm, time_dim=1)[0])
              - np.sum(R.gae(0.99, 0.95, v - u, nv, r, d, tm, time_dim=1)[0])) / 2
        np.testing.assert_allclose(np.sum(grad * u), fd, rtol=1e-9)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_dispatch_uses_the_kernels_when_enabled(no_kernels, monkeypatch):
    """Control for the test above: with numba enabled each dispatching entry does reach ``K._kernels`` (so the
    fallback test would see a kernel call if a switch were ignored)."""
    monkeypatch.delenv("ARRAYRL_DISABLE_NUMBA", raising=False)
    K.set_enabled(None)
    v, nv, r, d, tm = _inputs()
    c = np.where(d, 0.0, 0.9)
    entries = [lambda: _scan.reverse_discounted_scan_raw(r, c, axis=1),
               lambda: F.generalized_advantage_estimate(0.99, 0.95, v, nv, r, d, tm, time_dim=1),
               lambda: F.td_lambda_return_estimate(0.99, 0.95, nv, r, d, tm, time_dim=1), _adam_step]
    for i, f in enumerate(entries):
        with pytest.raises(AssertionError, match="numba kernel was called"):
            f()
        assert len(no_kernels) == i + 1
