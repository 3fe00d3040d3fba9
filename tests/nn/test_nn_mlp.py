"""MLP / Linear / Ensemble / NormalParamExtractor: layout and values vs TorchRL, backends, ensembles, errors."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl.nn as nn
from arrayrl import namespace_of
from arrayrl.autodiff import value_and_grad
from arrayrl.testing import assert_allclose
from arrayrl.tree import tree_leaves, tree_map

ACTS = ["tanh", "relu", "elu", "leaky_relu", "silu"]


def _np_mlp(params, x, act, keys):
    """Independent NumPy forward for the backend tests."""
    f = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "elu": lambda z: np.where(z > 0, z, np.expm1(z)),
         "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z), "silu": lambda z: z / (1 + np.exp(-z))}[act]
    h = x
    for i, k in enumerate(keys):
        h = h @ params[k]["weight"].T + params[k].get("bias", 0.0)
        if i < len(keys) - 1:
            h = f(h)
    return h


@pytest.mark.parametrize("act", ["tanh", "elu"])
def test_mlp_on_every_backend(xp, act):
    m = nn.MLP(3, (2, 2), num_cells=[5, 4], activation_class=act)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 3))
    params = tree_map(lambda a: xp.from_numpy(a), m.params)
    y = m.apply(params, xp.from_numpy(x))
    ref = _np_mlp(m.params, x, act, ["0", "2", "4"]).reshape(2, 6, 2, 2)
    assert_allclose(y, ref, rtol=xp.rtol * 10, atol=xp.atol * 10, dtype=xp.float_dtype)


def test_mlp_layout_and_options():
    m = nn.MLP(in_features=3, out_features=2, depth=2)
    assert m.num_cells == [32, 32] and list(m.params) == ["0", "2", "4"]
    m = nn.MLP(3, 2, num_cells=[4], activate_last_layer=True, bias_last_layer=False)
    assert list(m.params) == ["0", "2"] and "bias" not in m.params["2"]
    assert list(nn.MLP(3, 2).params) == ["0"]  # depth 0: one linear layer
    x = np.ones((5, 3))
    assert nn.MLP(3, 2).apply(nn.MLP(3, 2).params, x[:, :1], x[:, 1:]).shape == (5, 2)  # inputs concatenated
    m = nn.MLP(3, 2, num_cells=[4], activation_class="leaky_relu", activation_kwargs={"negative_slope": 0.5})
    h = x @ m.params["0"]["weight"].T * -1.0 - 10.0
    assert m._activations[0](h)[0, 0] == pytest.approx(0.5 * h[0, 0])


def test_mlp_errors():
    with pytest.raises(ValueError, match="in_features"):
        nn.MLP(out_features=2, num_cells=[3])
    with pytest.raises(ValueError, match="depth"):
        nn.MLP(3, 2, depth=2, num_cells=[4])
    with pytest.raises(ValueError, match="activation_class"):
        nn.MLP(3, 2, num_cells=[4], activation_class="swish2")
    with pytest.raises(ValueError, match="activation_kwargs"):
        nn.MLP(3, 2, num_cells=[4, 4], activation_kwargs=[{}])
    m = nn.MLP(3, 2, num_cells=[4])
    with pytest.raises(ValueError, match="input: expected a last dimension of size 3"):
        m(np.ones((5, 4)))
    with pytest.raises(KeyError, match="'2'"):
        m.apply({"0": m.params["0"]}, np.ones((5, 3)))
    with pytest.raises(ValueError, match="inputs\\[1\\]"):
        m(np.ones((5, 1)), np.ones((4, 2)))
    with pytest.raises(TypeError, match="input"):
        m(np.ones((5, 3), dtype=np.int64))


def test_ensemble_is_one_batched_pass_equal_to_the_member_loop(xp):
    from arrayrl.random import Generator

    base = getattr(xp.ns, "_arrayrl_base", xp.ns)
    m = nn.MLP(3, 2, num_cells=[8, 8], activation_class="relu")
    e = nn.Ensemble(m, 4, generator=Generator(0, xp=base, device=xp.device), dtype=xp.float_dtype)
    params = tree_map(lambda a: xp.from_numpy(xp.to_numpy(a)), e.params)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 7, 3))
    xs = rng.normal(size=(4, 5, 7, 3))
    y = e.apply(params, xp.from_numpy(x))
    ys = e.apply(params, xp.from_numpy(xs), stacked_input=True)
    assert tuple(y.shape) == (4, 5, 7, 2) and tuple(ys.shape) == (4, 5, 7, 2)
    members = nn.unstack(tree_map(xp.to_numpy, e.params))
    for i, p in enumerate(members):
        ref = _np_mlp(p, x, "relu", ["0", "2", "4"])
        assert_allclose(y[i, ...], ref, rtol=xp.rtol * 10, atol=xp.atol * 10)
        assert_allclose(ys[i, ...], _np_mlp(p, xs[i], "relu", ["0", "2", "4"]), rtol=xp.rtol * 10, atol=xp.atol * 10)


def test_ensemble_gradients_equal_member_gradients():
    m = nn.MLP(3, 1, num_cells=[6])
    trees = [m.init(__import__("arrayrl").Generator(i)) for i in range(3)]
    e = nn.Ensemble.from_params(m, trees)
    x = np.random.default_rng(0).normal(size=(10, 3))

    def loss_ens(p):
        y = e.apply(p, x)
        return namespace_of(y).sum(y**2)

    def loss_one(p):
        y = m.apply(p, x)
        return namespace_of(y).sum(y**2)

    _, g = value_and_grad(loss_ens)(e.params)
    for i, t in enumerate(trees):
        _, gi = value_and_grad(loss_one)(t)
        for a, b in zip(tree_leaves(gi), tree_leaves(g)):
            np.testing.assert_allclose(b[i], a, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="ensemble axis"):
        e.apply(e.params, np.ones((2, 10, 3)), stacked_input=True)


def test_linear():
    lin = nn.Linear(3, 2)
    x = np.random.default_rng(0).normal(size=(4, 5, 3))
    np.testing.assert_allclose(lin(x), x @ lin.params["weight"].T + lin.params["bias"], rtol=1e-14)
    assert "bias" not in nn.Linear(3, 2, bias=False).params


# ------------------------------------------------------------------------------------------------ TorchRL
@pytest.fixture
def torch64():
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(old)


@pytest.mark.torchrl
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("last", [False, True])
def test_mlp_matches_torchrl_values_and_gradients(torch64, act, last):
    torch = torch64
    from torchrl.modules import MLP as TMLP

    from arrayrl.interop import params_from_torch

    tcls = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU, "leaky_relu": torch.nn.LeakyReLU,
            "silu": torch.nn.SiLU}[act]
    kw = dict(in_features=4, out_features=(2, 3), num_cells=[7, 5], activate_last_layer=last, bias_last_layer=not last)
    tm = TMLP(activation_class=tcls, **kw)
    am = nn.MLP(activation_class=tcls, **kw)
    assert [k for k in nn.flatten_params(am.params)] == list(tm.state_dict())
    assert [v.shape for v in nn.flatten_params(am.params).values()] == [tuple(v.shape) for v in tm.state_dict().values()]
    p = params_from_torch(tm)
    x = np.random.default_rng(0).normal(size=(3, 6, 4)) * 2
    w = np.random.default_rng(1).normal(size=(3, 6, 2, 3))

    def loss(p):
        y = am.apply(p, x)
        return namespace_of(y).sum(y * w)

    val, g = value_and_grad(loss)(p)
    yt = tm(torch.tensor(x))
    lt = (yt * torch.tensor(w)).sum()
    lt.backward()
    np.testing.assert_allclose(am.apply(p, x), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(val), lt.item(), rtol=1e-10)
    for name, prm in tm.named_parameters():
        np.testing.assert_allclose(nn.flatten_params(g)[name], prm.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.torchrl
@pytest.mark.parametrize("mapping", ["biased_softplus_1.0", "biased_softplus_0.5_0.1", "softplus", "exp", "relu",
                                     "expln", "none", "biased_softplus"])
def test_normal_param_extractor_matches_tensordict(torch64, mapping):
    torch = torch64
    from tensordict.nn import NormalParamExtractor as TNPE

    x = np.random.default_rng(0).normal(size=(5, 6)) * 15  # beyond softplus' threshold of 20 after the bias
    x[0, 3:] = [25.0, -25.0, 0.0]
    loc_t, scale_t = TNPE(scale_mapping=mapping)(torch.tensor(x))
    ext = nn.NormalParamExtractor(scale_mapping=mapping)
    loc, scale = ext(x)
    np.testing.assert_array_equal(loc, loc_t.numpy())
    # tensordict builds the plain "biased_softplus" mapping once, at import, in the default dtype of that moment
    # (float32 unless tensordict was first imported under float64), so its bias is only float32-exact.
    rtol = 1e-7 if mapping == "biased_softplus" else 1e-12
    np.testing.assert_allclose(scale, scale_t.numpy(), rtol=rtol, atol=1e-15)

    def f(z):
        lo, sc = ext.apply({}, z)
        xp = namespace_of(sc)
        return xp.sum(lo * 2.0) + xp.sum(xp.log(sc))

    _, g = value_and_grad(f)(x)
    xt = torch.tensor(x, requires_grad=True)
    lt, st = TNPE(scale_mapping=mapping)(xt)
    (lt.sum() * 2.0 + st.log().sum()).backward()
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=max(rtol, 1e-10), atol=1e-12)


def test_normal_param_extractor_errors():
    with pytest.raises(ValueError, match="even"):
        nn.NormalParamExtractor()(np.ones((2, 3)))
    with pytest.raises(ValueError, match="scale_mapping"):
        nn.NormalParamExtractor("biased_exp")
    loc, scale, extra = nn.NormalParamExtractor()(np.zeros((2, 4)), "passthrough")
    assert extra == "passthrough"
    np.testing.assert_allclose(scale, 1.0, rtol=1e-12)  # biased_softplus_1.0 maps 0 to 1
