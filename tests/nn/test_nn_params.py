"""Parameter-tree helpers and initialisers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import given as _given
from hypothesis import strategies as st

import arrayrl.nn as nn
from arrayrl._backend import device_of
from arrayrl.random import Generator
from arrayrl.testing import assert_allclose
from arrayrl.tree import tree_leaves

_FIXTURE_OK = settings(
    parent=settings.default,
    suppress_health_check=list(settings.default.suppress_health_check) + [HealthCheck.function_scoped_fixture],
)


def given(*args, **kwargs):
    return lambda f: _FIXTURE_OK(_given(*args, **kwargs)(f))


def _tree(xp, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "0": {"weight": xp.from_numpy(rng.normal(size=(4, 3))), "bias": xp.from_numpy(rng.normal(size=(4,)))},
        "2": {"weight": xp.from_numpy(rng.normal(size=(2, 4)))},
    }


def test_flatten_count_copy_cast(raw_xp):
    xp = raw_xp
    p = _tree(xp)
    flat = nn.flatten_params(p)
    assert list(flat) == ["0.weight", "0.bias", "2.weight"]
    back = nn.unflatten_params(flat)
    assert list(back) == ["0", "2"] and back["0"]["bias"] is p["0"]["bias"]
    assert nn.count_params(p) == 12 + 4 + 8
    c = nn.copy_params(p)
    for a, b in zip(tree_leaves(c), tree_leaves(p)):
        assert a is not b
        assert_allclose(a, xp.to_numpy(b), rtol=0, atol=0, xp=xp.ns)
    if xp.is_float64:
        f32 = nn.cast_params(p, xp.float32)
        assert all(leaf.dtype == xp.float32 for leaf in tree_leaves(f32))
        assert all(leaf.dtype == xp.float64 for leaf in tree_leaves(p))  # input unchanged
    moved = nn.to_device(p, device_of(p["0"]["bias"]))
    assert nn.count_params(moved) == 24 and moved["0"]["bias"] is p["0"]["bias"]
    z = nn.params_zip(p, c)
    assert z["0"]["weight"][0] is p["0"]["weight"]


@given(st.floats(0.0, 1.0))
def test_soft_and_hard_update(xp, tau):
    target, source = _tree(xp, 0), _tree(xp, 1)
    new = nn.soft_update(target, source, tau)
    for n, t, s in zip(tree_leaves(new), tree_leaves(target), tree_leaves(source)):
        t, s = xp.to_numpy(t), xp.to_numpy(s)
        assert_allclose(n, (1 - tau) * t + tau * s, rtol=xp.rtol, atol=xp.atol, xp=xp.ns)
    assert_allclose(nn.soft_update(target, source, 1.0)["0"]["bias"], xp.to_numpy(source["0"]["bias"]), rtol=0, atol=0)
    assert_allclose(nn.soft_update(target, source, 0.0)["0"]["bias"], xp.to_numpy(target["0"]["bias"]), rtol=0, atol=0)
    hard = nn.hard_update(target, source)
    assert_allclose(hard["2"]["weight"], xp.to_numpy(source["2"]["weight"]), rtol=0, atol=0)


def test_update_errors():
    a = _tree(_NP, 0)
    b = _tree(_NP, 1)
    del b["2"]
    with pytest.raises(ValueError, match="source"):
        nn.soft_update(a, b, 0.5)
    c = _tree(_NP, 1)
    c["2"]["weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"source\['2'\]\['weight'\]: expected shape .* \(that of target\['2'\]\['weight'\]\), got \(3, 3\)"):
        nn.hard_update(a, c)
    with pytest.raises(ValueError, match="tau"):
        nn.soft_update(a, a, 1.5)


def test_stack_unstack():
    trees = [_tree(_NP, i) for i in range(3)]
    s = nn.stack(trees)
    assert s["0"]["weight"].shape == (3, 4, 3)
    back = nn.unstack(s)
    np.testing.assert_array_equal(back[2]["2"]["weight"], trees[2]["2"]["weight"])
    with pytest.raises(ValueError, match="trees"):
        nn.stack([trees[0], {"0": trees[1]["0"]}])


def test_torch_default_init_distribution(raw_xp):
    """Weights and biases are U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as torch.nn.Linear."""
    xp = raw_xp
    base = getattr(xp.ns, "_arrayrl_base", xp.ns)
    gen = Generator(0, xp=base, device=xp.device)
    lin = nn.Linear(25, 400, generator=gen, dtype=xp.float_dtype)
    w, b = xp.to_numpy(lin.params["weight"]), xp.to_numpy(lin.params["bias"])
    assert w.shape == (400, 25) and b.shape == (400,)
    assert lin.params["weight"].dtype == xp.float_dtype
    bound = 1 / 5
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # uniform: mean 0, variance bound^2 / 3, and the extremes are reached
    assert abs(w.mean()) < 0.01 and abs(w.var() - bound**2 / 3) < 0.001
    assert np.abs(w).max() > 0.99 * bound
    # MLP layers draw with each layer's own fan-in
    mlp = nn.MLP(9, 2, num_cells=[100], generator=Generator(1, xp=base, device=xp.device), dtype=xp.float_dtype)
    assert np.abs(xp.to_numpy(mlp.params["0"]["weight"])).max() <= 1 / 3
    assert np.abs(xp.to_numpy(mlp.params["2"]["weight"])).max() <= 1 / 10


@pytest.mark.torchrl
def test_init_matches_torch_statistically():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tw = torch.nn.Linear(16, 2000).weight.detach().numpy().ravel()
    aw = nn.Linear(16, 2000).params["weight"].ravel()
    # two-sample Kolmogorov-Smirnov distance (32000 draws each): same distribution
    grid = np.linspace(-0.25, 0.25, 201)
    ks = np.abs(np.searchsorted(np.sort(tw), grid) / tw.size - np.searchsorted(np.sort(aw), grid) / aw.size).max()
    assert ks < 0.02


_NP = type("NP", (), {"from_numpy": staticmethod(lambda a: np.asarray(a))})
