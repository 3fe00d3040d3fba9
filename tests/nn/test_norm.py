"""BatchNorm1d / BatchRenorm1d / NormMLP: values, running statistics and gradients against torch.nn.BatchNorm1d and
TorchRL's BatchRenorm1d in float64 (train and eval, the warm-up schedule, r_max/d_max clipping, [B, C, L] inputs,
ensembles), float64 finite differences, the warm-up-factor divergence, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl._backend import namespace_of
from arrayrl.autodiff import check_grads, value_and_grad
from arrayrl.nn.norm import BatchNorm1d, BatchRenorm1d, NormMLP, expand_state
from reference.losses import redq_crossq_tqc as R

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _t(x):
    return torch.tensor(np.asarray(x), dtype=torch.float64)


def _layer_pair(kind, **kw):
    if kind == "bn":
        return BatchNorm1d(3, **kw), torch.nn.BatchNorm1d(3, **kw).double()
    from torchrl.modules.models.batchrenorm import BatchRenorm1d as TBR

    return BatchRenorm1d(3, torchrl_compat=True, **kw), TBR(3, **kw).double()


CASES = [("bn", {}), ("bn", {"momentum": None}), ("bn", {"affine": False}), ("bn", {"track_running_stats": False}),
         ("brn", {"warmup_steps": 2}), ("brn", {"warmup_steps": 3, "smooth": True}),
         ("brn", {"warmup_steps": 0, "max_r": 1.2, "max_d": 0.1, "momentum": 0.3})]


@pytest.mark.parametrize("kind,kw", CASES, ids=[f"{k}-{'-'.join(map(str, v.values()))}" for k, v in CASES])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2)])
def test_norm_vs_torch(kind, kw, shape):
    """Seven calls (train, one eval in the middle): outputs, input and parameter gradients, running statistics."""
    if kind == "brn" and len(shape) == 3:
        shape = shape  # TorchRL's unbiased factor uses the batch axis only, as arrayrl does
    torch.manual_seed(0)
    a, t = _layer_pair(kind, **kw)
    if getattr(t, "weight", None) is not None:
        with torch.no_grad():
            t.weight.add_(torch.randn(3))
            t.bias.add_(torch.randn(3))
        params = {"weight": t.weight.detach().numpy().copy(), "bias": t.bias.detach().numpy().copy()}
    else:
        params = {}
    state = a.init_state()
    for step in range(7):
        train = step != 3
        t.train(train)
        x = (torch.randn(*shape) * 2 + 1).requires_grad_(True)
        y = t(x)
        cot = torch.randn(*shape)
        (y * cot).sum().backward()

        def f(p, xx, state=state):
            out = a.apply(p, xx, state, train=train)[0]
            return namespace_of(out).sum(out * cot.numpy())

        (_, g) = value_and_grad(f, argnums=(0, 1))(params, x.detach().numpy())
        ya, state = a.apply(params, x.detach().numpy(), state, train=train)
        np.testing.assert_allclose(ya, y.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g[1], x.grad.numpy(), rtol=1e-9, atol=1e-11)
        if params:
            np.testing.assert_allclose(g[0]["weight"], t.weight.grad.numpy(), rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(g[0]["bias"], t.bias.grad.numpy(), rtol=1e-9, atol=1e-11)
            t.weight.grad = t.bias.grad = None
        if state:
            np.testing.assert_allclose(state["running_mean"], t.running_mean.numpy(), rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(state["running_var"], t.running_var.numpy(), rtol=1e-10, atol=1e-13)
            assert int(state["num_batches_tracked"]) == int(t.num_batches_tracked)


def test_norm_is_pure_and_matches_reference():
    rng = np.random.default_rng(0)
    layer = BatchRenorm1d(3, warmup_steps=2)
    p = {"weight": rng.normal(size=3), "bias": rng.normal(size=3)}
    s = {"running_mean": rng.normal(size=3), "running_var": rng.random(3) + 0.5,
         "num_batches_tracked": np.asarray(5, np.int64)}
    s_copy = {k: np.array(v, copy=True) for k, v in s.items()}
    x = rng.normal(size=(6, 3)) * 3
    for train in (True, False):
        y, new = layer.apply(p, x, s, train=train)
        want, (rm, rv, nbt) = R.batch_renorm(x, p["weight"], p["bias"], s["running_mean"], s["running_var"], 5,
                                             train=train, warmup_steps=2)
        np.testing.assert_allclose(y, want, rtol=1e-12)
        np.testing.assert_allclose(new["running_mean"], rm, rtol=1e-12)
        np.testing.assert_allclose(new["running_var"], rv, rtol=1e-12)
        assert int(new["num_batches_tracked"]) == nbt
    for k in s:  # nothing mutated
        np.testing.assert_array_equal(s[k], s_copy[k])
    bn = BatchNorm1d(3)
    y, new = bn.apply(p, x, s, train=True)
    want, (rm, rv, _) = R.batch_norm(x, p["weight"], p["bias"], s["running_mean"], s["running_var"], 5, train=True)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    np.testing.assert_allclose(new["running_var"], rv, rtol=1e-12)


def test_batch_renorm_warmup_factor_divergence():
    """Paper/intended: factor min(n // warmup, 1); TorchRL (compat): the counter is never clamped, so at
    n = 2 warmup the corrections are doubled."""
    rng = np.random.default_rng(1)
    p = {"weight": np.ones(3), "bias": np.zeros(3)}
    s = {"running_mean": rng.normal(size=3), "running_var": rng.random(3) + 0.5,
         "num_batches_tracked": np.asarray(4, np.int64)}
    x = rng.normal(size=(5, 3))
    y_paper, _ = BatchRenorm1d(3, warmup_steps=2).apply(p, x, s)
    y_compat, _ = BatchRenorm1d(3, warmup_steps=2, torchrl_compat=True).apply(p, x, s)
    s1 = dict(s, num_batches_tracked=np.asarray(2, np.int64))
    y_at_warmup, _ = BatchRenorm1d(3, warmup_steps=2, torchrl_compat=True).apply(p, x, s1)
    np.testing.assert_allclose(y_paper, y_at_warmup, rtol=1e-12)  # factor 1 in both
    want, _ = R.batch_renorm(x, p["weight"], p["bias"], s["running_mean"], s["running_var"], 4, train=True,
                             warmup_steps=2, torchrl_compat=True)
    np.testing.assert_allclose(y_compat, want, rtol=1e-12)
    assert np.abs(y_compat - y_paper).max() > 1e-3


def test_norm_gradients_vs_finite_differences():
    rng = np.random.default_rng(2)
    s = {"running_mean": rng.normal(size=3), "running_var": rng.random(3) + 0.5,
         "num_batches_tracked": np.asarray(0, np.int64)}
    x = rng.normal(size=(6, 3, 2))
    for layer in (BatchNorm1d(3), BatchRenorm1d(3, warmup_steps=2)):  # renorm at factor 0: r, d constant
        p = {"weight": rng.normal(size=3), "bias": rng.normal(size=3)}
        check_grads(lambda pp, xx, layer=layer: layer.apply(pp, xx, s, train=True)[0], (p, x))
        check_grads(lambda pp, xx, layer=layer: layer.apply(pp, xx, s, train=False)[0], (p, x))


def test_norm_mlp_ensemble_equals_members():
    rng = np.random.default_rng(3)
    net = NormMLP(4, 1, [5, 5], norm_class="BatchRenorm1d", norm_kwargs={"warmup_steps": 1})
    members = [net.init(__import__("arrayrl").random.Generator(i)) for i in range(3)]
    stacked = {k: {kk: np.stack([m[k][kk] for m in members]) for kk in members[0][k]} for k in members[0]}
    st = expand_state(net.state, 3)
    x = rng.normal(size=(7, 4))
    y, new = net.apply(stacked, x, state=st, train=True)
    for i, m in enumerate(members):
        yi, ni = net.apply(m, x, state=net.state, train=True)
        np.testing.assert_allclose(y[i], yi, rtol=1e-12)
        np.testing.assert_allclose(new["1"]["running_mean"][i], ni["1"]["running_mean"], rtol=1e-12)
    assert list(net.params) == ["0", "1", "3", "4", "6"] and list(net.state) == ["1", "4"]


def test_norm_bad_input():
    layer = BatchNorm1d(3)
    p = layer.params
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.apply(p, np.zeros((1, 3)), train=True)
    with pytest.raises(ValueError, match="num_features=3"):
        layer.apply(p, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="input"):
        layer.apply(p, np.zeros(3))
    with pytest.raises(KeyError, match="state"):
        layer.apply(p, np.zeros((4, 3)), {"running_mean": np.zeros(3)})
    with pytest.raises(ValueError, match="eps"):
        BatchRenorm1d(3, eps=0.0)
    with pytest.raises(TypeError, match="norm_class"):
        NormMLP(3, 1, [4], norm_class="layer_norm")
    with pytest.raises(ValueError, match="NormMLP expects a \\[B, features\\]"):
        NormMLP(3, 1, [4])(np.zeros((2, 2, 3)))
