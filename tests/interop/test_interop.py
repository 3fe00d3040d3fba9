"""arrayrl.interop: DLPack conversions, TensorDict <-> dict, torch weights <-> parameter trees."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl.nn as nn
from arrayrl._backend import backend_name, namespace_of

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torchrl

from arrayrl.interop import (  # noqa: E402
    convert,
    from_tensordict,
    from_torch,
    params_from_torch,
    params_to_torch,
    to_tensordict,
    to_torch,
)


def test_numpy_torch_roundtrip_shares_memory_unless_copied():
    a = np.arange(6.0).reshape(2, 3)
    t = to_torch(a)
    assert t.dtype == torch.float64 and t.shape == (2, 3)
    t[0, 0] = 10.0
    assert a[0, 0] == 10.0  # zero-copy
    c = to_torch(a, copy=True)
    c[0, 1] = -1.0
    assert a[0, 1] == 1.0
    back = from_torch(t)
    assert isinstance(back, np.ndarray) and np.array_equal(back, a)
    assert from_torch(t, copy=True) is not back
    ro = np.arange(3.0)
    ro.flags.writeable = False
    tro = to_torch(ro)
    assert tro.tolist() == [0.0, 1.0, 2.0] and not np.shares_memory(tro.numpy(), ro)  # read-only: copied
    with pytest.raises(TypeError, match="t:"):
        from_torch(a)


def test_convert_between_backends(raw_xp):
    xp = raw_xp
    a = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32 if not xp.is_float64 else np.float64)
    x = xp.from_numpy(a)
    for target in (np, __import__("array_api_strict"), __import__("array_api_compat.torch").torch):
        y = convert(x, target)
        assert backend_name(namespace_of(y)) == backend_name(target)
        np.testing.assert_array_equal(xp.to_numpy(convert(y, xp.ns)), a)
    assert to_torch(x).dtype in (torch.float32, torch.float64)


def test_tensordict_roundtrip():
    from tensordict import TensorDict

    td = TensorDict({"obs": torch.randn(4, 3, dtype=torch.float64), "next": {"reward": torch.ones(4, 1),
                                                                               "done": torch.zeros(4, 1, dtype=torch.bool)}},
                    batch_size=[4])
    d = from_tensordict(td, np)
    assert set(d) == {"obs", "next"} and d["next"]["done"].dtype == np.bool_
    np.testing.assert_array_equal(d["obs"], td["obs"].numpy())
    kept = from_tensordict(td)
    assert isinstance(kept["obs"], torch.Tensor)
    td2 = to_tensordict(d, batch_size=[4])
    assert td2.batch_size == torch.Size([4]) and torch.equal(td2["next", "reward"], td["next", "reward"])
    with pytest.raises(TypeError, match="td"):
        from_tensordict({"a": 1})


def test_params_from_and_to_torch():
    seq = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2, bias=False))
    p = params_from_torch(seq)
    assert list(nn.flatten_params(p)) == ["0.weight", "0.bias", "2.weight"]
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    mlp = nn.MLP(3, 2, num_cells=[4], bias_last_layer=False)
    # float32: the summation order differs from torch's, so an output near 0 needs an absolute tolerance too
    np.testing.assert_allclose(mlp.apply(p, x), seq(torch.tensor(x)).detach().numpy(), rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        seq[0].weight.add_(1.0)
    assert not np.allclose(p["0"]["weight"], seq[0].weight.detach().numpy())  # a copy, not a view
    params_to_torch(mlp.params, seq)
    np.testing.assert_allclose(seq[0].weight.detach().numpy(), mlp.params["0"]["weight"].astype(np.float32))
    assert seq[0].weight.dtype == torch.float32
    lin = torch.nn.Linear(2, 2)
    assert set(params_from_torch(lin)) == {"weight", "bias"}
    with pytest.raises(KeyError, match="missing \\['bias'\\]"):
        params_to_torch({"weight": np.zeros((2, 2))}, lin)
    with pytest.raises(ValueError, match="'weight' has shape"):
        params_to_torch({"weight": np.zeros((3, 2)), "bias": np.zeros(2)}, lin)


def test_params_from_a_tensordict_of_stacked_params():
    """TorchRL losses keep ensembles as TensorDicts with a leading [N] axis; they copy to an Ensemble tree."""
    from tensordict import TensorDict
    from torchrl.modules import MLP as TMLP

    nets = [TMLP(in_features=3, out_features=1, num_cells=[5]) for _ in range(3)]
    stacked = TensorDict.from_modules(*nets)
    p = params_from_torch(stacked)
    assert p["0"]["weight"].shape == (3, 5, 3)
    e = nn.Ensemble(nn.MLP(3, 1, num_cells=[5]), 3, params=p)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    y = e(x)
    for i, net in enumerate(nets):
        np.testing.assert_allclose(y[i], net(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)
