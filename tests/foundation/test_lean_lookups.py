"""Fast paths of the per-call lookups and of two kernels, each against the general code or an independent golden:

* ``data.get_or`` on plain dicts (the ``type(node) is dict`` path) and on other mappings;
* ``random._shape`` of a clean tuple returns it unchanged, and still rejects bad entries by name;
* ``loss.params = new`` with an equal layout (the fast layout walk) and its errors for a wrong shape/dtype/key;
* ``_backend.base_of`` (the cached namespace lookup) for raw, taped and unhashable namespaces;
* ``_kernels.sigmoid`` (branch-free) equals the two-branch ``where`` formula bit for bit and torch's float64 sigmoid;
* ``_kernels._finite_max`` (pairwise maximum over a short last axis) equals ``np.max`` (NaN, inf included), and
  ``softmax``/``logsumexp`` match torch in float64.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from arrayrl import _kernels, data
from arrayrl.autodiff import Tensor
from arrayrl.random import _shape



def test_get_or_plain_dicts_and_other_mappings():
    from collections import OrderedDict
    from types import MappingProxyType

    leaf = np.ones(2)
    batch = {"next": {"obs": leaf, "none": None}, "r": 1}
    assert data.get_or(batch, ("next", "obs")) is leaf
    assert data.get_or(batch, ("next", "none"), "d") is None  # a stored None is a value, not "missing"
    assert data.get_or(batch, ("next", "x"), "d") == "d"
    assert data.get_or(batch, ("r", "deeper"), "d") == "d"  # a non-mapping on the path
    assert data.get_or(batch, "missing") is None
    other = MappingProxyType({"next": OrderedDict(obs=leaf)})
    assert data.get_or(other, ("next", "obs")) is leaf
    assert data.get_or(other, ("next", "x"), 5) == 5


def test_shape_fast_path_and_errors():
    s = (3, 4)
    assert _shape(s) is s
    assert _shape(()) == ()
    assert _shape(5) == (5,)
    assert _shape([np.int64(2), 3]) == (2, 3)
    assert _shape((np.int64(2), 3)) == (2, 3) and all(type(v) is int for v in _shape((np.int64(2), 3)))
    with pytest.raises(ValueError, match=r"shape\[1\]: expected an integer >= 0, got -1"):
        _shape((2, -1))
    with pytest.raises(TypeError, match=r"shape\[0\]: expected an integer, got bool True"):
        _shape((True, 2))
    with pytest.raises(TypeError, match=r"shape\[1\]: expected an integer, got float 2.0"):
        _shape((1, 2.0))


def _dqn():
    import arrayrl.objectives as O
    from arrayrl.nn import MLP, QValueActor

    net = MLP(in_features=4, out_features=2, num_cells=[8], activation_class="relu", dtype=np.float32)
    return O.DQNLoss(QValueActor(net, action_space="categorical"), action_space="categorical")


def _copy(tree):
    return {k: _copy(v) for k, v in tree.items()} if isinstance(tree, dict) else tree.copy()


def test_params_setter_fast_layout_and_errors():
    loss = _dqn()
    new = _copy(loss.params)
    new["value_network"]["0"]["0"]["weight"] += 1.0
    loss.params = new
    np.testing.assert_array_equal(loss.params["value_network"]["0"]["0"]["weight"], new["value_network"]["0"]["0"]["weight"])
    bad = _copy(loss.params)
    bad["value_network"]["0"]["2"]["bias"] = np.zeros((1,), np.float32)
    with pytest.raises(ValueError, match=r"params\['value_network'\]\.0\.2\.bias: expected shape \(2,\), got \(1,\)"):
        loss.params = bad
    bad = _copy(loss.params)
    bad["value_network"]["0"]["2"]["bias"] = bad["value_network"]["0"]["2"]["bias"].astype(np.float64)
    with pytest.raises(ValueError, match=r"params\['value_network'\]\.0\.2\.bias: expected dtype float32, got float64"):
        loss.params = bad
    bad = _copy(loss.params)
    bad["value_network"]["0"]["2"]["extra"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match=r"params\['value_network'\]: expected the structure"):
        loss.params = bad
    taped = _copy(loss.params)
    taped["value_network"]["0"]["0"]["weight"] = Tensor(taped["value_network"]["0"]["0"]["weight"])
    loss.params = taped  # a taped leaf of the right layout passes the check (another leaf type: the general walk)


def test_base_of_cached_lookup():
    from arrayrl._backend import base_of, namespace_of

    xp = namespace_of(np.ones(2))
    taped = namespace_of(Tensor(np.ones(2)))
    assert base_of(xp) is xp
    assert base_of(taped) is xp and base_of(taped) is xp  # (second call: the cache)
    assert base_of(np) is np

    class Unhashable:  # a namespace object that cannot key the cache still gets its base
        __hash__ = None
        _arrayrl_base = np

    assert base_of(Unhashable()) is np


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_branch_free_equals_the_two_branches(dtype):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(3000) * 40, [np.nan, np.inf, -np.inf, 0.0, -0.0, 800.0, -800.0]])
    x = x.astype(dtype)
    e = np.exp(-np.abs(x))
    with np.errstate(invalid="ignore"):
        ref = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    got = _kernels.sigmoid(x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, ref)
    finite = np.isfinite(x)
    torch_ref = torch.sigmoid(torch.from_numpy(x[finite].astype(np.float64))).numpy()
    rtol = 2.4e-7 if dtype == np.float32 else 4.5e-16  # 2 ulp (the formula of the old where branches)
    np.testing.assert_allclose(got[finite], torch_ref.astype(dtype), rtol=rtol, atol=0)
    small = x[:10].reshape(2, 5)
    np.testing.assert_array_equal(_kernels.sigmoid(small), ref[:10].reshape(2, 5))


@pytest.mark.parametrize("k", list(range(1, 20)) + [33, 64, 65])
def test_finite_max_short_axis_equals_np_max(k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((6, 3, k)).astype(np.float32)
    x[0, 0, k // 2] = np.nan
    x[1, 1, :] = -np.inf
    x[2, 2, 0] = np.inf
    m = np.max(x, axis=-1, keepdims=True)
    ref = np.where(np.isfinite(m), m, 0)
    np.testing.assert_array_equal(_kernels._finite_max(np, x, -1), ref)
    np.testing.assert_array_equal(_kernels._finite_max(np, x, 2), ref)
    m0 = np.max(x, axis=0, keepdims=True)
    np.testing.assert_array_equal(_kernels._finite_max(np, x, 0), np.where(np.isfinite(m0), m0, 0))


def test_softmax_logsumexp_match_torch_float64():
    x = np.random.default_rng(3).standard_normal((64, 4, 16)) * 5
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(_kernels.softmax(x, axis=-1), torch.softmax(xt, -1).numpy(), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(_kernels.logsumexp(x, axis=-1), torch.logsumexp(xt, -1).numpy(), rtol=1e-14)
    np.testing.assert_allclose(_kernels.log_softmax(x, axis=-1), torch.log_softmax(xt, -1).numpy(), rtol=1e-13,
                               atol=1e-14)


def test_sigmoid_generic_path_equals_numpy_path():
    xps = pytest.importorskip("array_api_strict")
    x = np.concatenate([np.random.default_rng(1).standard_normal(500) * 30, [np.nan, np.inf, -np.inf, 0.0]])
    np.testing.assert_array_equal(np.asarray(_kernels.sigmoid(xps.asarray(x))), _kernels.sigmoid(x))
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(_kernels.sigmoid(t).numpy(), _kernels.sigmoid(x))
