"""GRUCell, RMSNorm and DreamerV3's block GRU (cell and sequence): values and gradients against torch.nn.GRUCell,
torch.nn.RMSNorm and TorchRL 0.14.1's DreamerV3BlockGRUCell/DreamerV3BlockGRU on copied weights in float64, float64
finite differences on the tape, every backend against the float64 loop oracle, float32 in/out, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl._backend import namespace_of
from arrayrl.autodiff import check_grads, value_and_grad
from arrayrl.nn.recurrent import DreamerV3BlockGRU, DreamerV3BlockGRUCell, GRUCell, RMSNorm
from arrayrl.testing._assert import assert_allclose
from reference import dreamer as R

TOL = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(old)


def _np_params(module):
    return {k: v for k, v in _nest({n: p.detach().numpy().copy() for n, p in module.named_parameters()}).items()}


def _nest(flat):
    out: dict = {}
    for name, v in flat.items():
        d = out
        *head, last = name.split(".")
        for h in head:
            d = d.setdefault(h, {})
        d[last] = v
    return out


def _flat_grads(module):
    return _nest({n: p.grad.numpy().copy() for n, p in module.named_parameters()})


def _assert_tree(a, b, **tol):
    assert sorted(a) == sorted(b)
    for k in a:
        if isinstance(a[k], dict):
            _assert_tree(a[k], b[k], **tol)
        else:
            np.testing.assert_allclose(a[k], b[k], err_msg=k, **tol)


def _vs_torch(torch, ours, theirs, inputs, params, n_out=1):
    """Outputs and gradients (inputs and parameters) for a random covector on every output."""
    tin = [torch.tensor(a, requires_grad=True) if a is not None and a.dtype != bool else
           (None if a is None else torch.tensor(a)) for a in inputs]
    tout = theirs(*tin)
    tout = tout if isinstance(tout, tuple) else (tout,)
    rng = np.random.default_rng(9)
    cots = [rng.normal(size=tuple(o.shape)) for o in tout]
    sum(((o * torch.tensor(c)).sum() for o, c in zip(tout, cots))).backward()
    diff = [i for i, a in enumerate(inputs) if a is not None and a.dtype != bool]

    def f(p, *xs):
        full = list(inputs)
        for i, x in zip(diff, xs):
            full[i] = x
        out = ours(p, *full)
        out = out if isinstance(out, tuple) else (out,)
        return sum(namespace_of(o).sum(o * c) for o, c in zip(out, cots))

    out = ours(params, *inputs)
    out = out if isinstance(out, tuple) else (out,)
    for o, t in zip(out, tout):
        np.testing.assert_allclose(o, t.detach().numpy(), **TOL)
    _, grads = value_and_grad(f, argnums=tuple(range(1 + len(diff))))(params, *[inputs[i] for i in diff])
    _assert_tree(grads[0], _flat_grads(theirs), rtol=1e-10, atol=1e-12)
    for g, i in zip(grads[1:], diff):
        np.testing.assert_allclose(g, tin[i].grad.numpy(), **TOL)


# ------------------------------------------------------------------------------------------------ torch / TorchRL
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5,), ()])
def test_gru_cell_vs_torch(torch, bias, shape):
    torch.manual_seed(0)
    t = torch.nn.GRUCell(3, 4, bias=bias)
    a = GRUCell(3, 4, bias=bias)
    p = _np_params(t)
    rng = np.random.default_rng(0)
    x, h = rng.normal(size=shape + (3,)), rng.normal(size=shape + (4,))
    _vs_torch(torch, a.apply, t, [x, h], p)
    np.testing.assert_allclose(a.apply(p, x), t(torch.tensor(x)).detach().numpy(), **TOL)  # hx=None is zeros
    # leading batch dimensions beyond torch's [B, I]: the same as flattening
    x3, h3 = rng.normal(size=(2, 3, 3)), rng.normal(size=(2, 3, 4))
    np.testing.assert_allclose(a.apply(p, x3, h3).reshape(6, 4), a.apply(p, x3.reshape(6, 3), h3.reshape(6, 4)),
                               rtol=1e-15)


@pytest.mark.parametrize("shape,eps,affine", [((4,), None, True), ((2, 3), 1e-3, True), ((4,), 1e-5, False)])
def test_rms_norm_vs_torch(torch, shape, eps, affine):
    torch.manual_seed(1)
    t = torch.nn.RMSNorm(shape, eps=eps, elementwise_affine=affine)
    if affine:
        with torch.no_grad():
            t.weight.add_(torch.randn(shape))
    a = RMSNorm(shape, eps=eps, elementwise_affine=affine)
    p = _np_params(t)
    x = np.random.default_rng(1).normal(size=(5,) + shape) * 0.1
    if affine:
        _vs_torch(torch, a.apply, t, [x], p)
    else:
        np.testing.assert_allclose(a.apply({}, x), t(torch.tensor(x)).detach().numpy(), **TOL)


def _patch_rms_norm(torch, monkeypatch):
    """TorchRL's DreamerV3 RMS norm computes in float32 whatever the input dtype (module docstring): for a float64
    golden, the same F.rms_norm in the input dtype."""
    import torchrl.modules.models.model_based as mb

    monkeypatch.setattr(mb, "_dreamer_v3_rms_norm",
                        lambda v, w, eps: torch.nn.functional.rms_norm(v, (w.shape[0],), w, eps))


@pytest.mark.torchrl
@pytest.mark.parametrize("layers,blocks", [(1, 2), (2, 4)])
def test_block_gru_cell_vs_torchrl(torch, monkeypatch, layers, blocks):
    import torchrl.modules as trm

    torch.manual_seed(2)
    t = trm.DreamerV3BlockGRUCell(6, 8, projection_size=4, num_blocks=blocks, num_layers=layers)
    with torch.no_grad():  # non-trivial biases and norm weights
        for n, prm in t.named_parameters():
            if prm.ndim == 1:
                prm.add_(0.3 * torch.randn(prm.shape))
    a = DreamerV3BlockGRUCell(6, 8, projection_size=4, num_blocks=blocks, num_layers=layers)
    p = _np_params(t)
    assert sorted(a.params) == sorted(p)
    rng = np.random.default_rng(2)
    x, h = rng.normal(size=(3, 6)), rng.normal(size=(3, 8))
    # unpatched TorchRL (float32 norms) agrees to float32 accuracy only
    np.testing.assert_allclose(a.apply(p, x, h), t(torch.tensor(x), torch.tensor(h)).detach().numpy(), atol=1e-6)
    _patch_rms_norm(torch, monkeypatch)
    _vs_torch(torch, a.apply, t, [x, h], p)
    np.testing.assert_allclose(a.apply(p, x), t(torch.tensor(x)).detach().numpy(), **TOL)


@pytest.mark.torchrl
def test_block_gru_sequence_vs_torchrl(torch, monkeypatch):
    import torchrl.modules as trm

    _patch_rms_norm(torch, monkeypatch)
    torch.manual_seed(3)
    t = trm.DreamerV3BlockGRU(5, 8, projection_size=3, num_blocks=2, num_layers=1)
    a = DreamerV3BlockGRU(5, 8, projection_size=3, num_blocks=2, num_layers=1)
    p = _np_params(t)
    rng = np.random.default_rng(3)
    x, h = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 8))
    init = rng.random((3, 4)) < 0.3
    init[0, 2] = True
    _vs_torch(torch, a.apply, t, [x, h, init], p)
    o, hf = a.apply(p, x, None, init[..., None])
    to, th = t(torch.tensor(x), None, torch.tensor(init[..., None]))
    np.testing.assert_allclose(o, to.detach().numpy(), **TOL)
    np.testing.assert_allclose(hf, th.detach().numpy(), **TOL)


def test_block_gru_float32_vs_torchrl(torch):
    """float32 in, float32 out; TorchRL's float32 path (its norms are float32 there) agrees to float32 accuracy."""
    import torchrl.modules as trm

    torch.manual_seed(4)
    t = trm.DreamerV3BlockGRUCell(6, 8, projection_size=4, num_blocks=2).float()
    a = DreamerV3BlockGRUCell(6, 8, projection_size=4, num_blocks=2)
    p = {k: v for k, v in _nest({n: q.detach().numpy().copy() for n, q in t.named_parameters()}).items()}
    x = np.random.default_rng(4).normal(size=(3, 6)).astype(np.float32)
    y = a.apply(p, x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, t(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ finite differences
def test_gradients_vs_finite_differences():
    rng = np.random.default_rng(5)
    g = GRUCell(3, 4)
    check_grads(lambda p, x, h: g.apply(p, x, h), (g.params, rng.normal(size=(2, 3)), rng.normal(size=(2, 4))))
    n = RMSNorm(4, eps=1e-3)
    check_grads(lambda p, x: n.apply(p, x), ({"weight": rng.normal(size=4)}, rng.normal(size=(3, 4))))
    c = DreamerV3BlockGRUCell(4, 6, projection_size=3, num_blocks=3, num_layers=2)
    check_grads(lambda p, x, h: c.apply(p, x, h), (c.params, rng.normal(size=(2, 4)), rng.normal(size=(2, 6))))
    s = DreamerV3BlockGRU(4, 6, projection_size=2, num_blocks=2)
    init = np.array([[False, True, False], [False, False, False]])
    check_grads(lambda p, x, h: s.apply(p, x, h, init), (s.params, rng.normal(size=(2, 3, 4)),
                                                         rng.normal(size=(2, 6))))


# ------------------------------------------------------------------------------------------------ every backend
def _to(xp, tree):
    if isinstance(tree, dict):
        return {k: _to(xp, v) for k, v in tree.items()}
    return xp.from_numpy(np.asarray(tree))


def test_backends_vs_reference(xp):
    rng = np.random.default_rng(6)
    f32 = not xp.is_float64
    tol = dict(rtol=2e-4, atol=2e-5) if f32 else TOL
    dt = xp.float_dtype

    g = GRUCell(3, 4)
    x, h = rng.normal(size=(2, 3)), rng.normal(size=(2, 4))
    want = np.stack([R.gru_step(g.params, x[i], h[i]) for i in range(2)])
    assert_allclose(g.apply(_to(xp, g.params), xp.from_numpy(x), xp.from_numpy(h)), want, xp=xp.ns, dtype=dt,
                    **tol, name="gru")

    w = rng.normal(size=4)
    n = RMSNorm(4, eps=1e-4)
    want = np.stack([R.rms_norm(h[i], w, 1e-4) for i in range(2)])
    assert_allclose(n.apply(_to(xp, {"weight": w}), xp.from_numpy(h)), want, xp=xp.ns, dtype=dt, **tol, name="rms")

    c = DreamerV3BlockGRUCell(5, 6, projection_size=3, num_blocks=3, num_layers=2)
    x, h = rng.normal(size=(2, 5)), rng.normal(size=(2, 6))
    want = np.stack([R.block_gru_step(c.params, x[i], h[i], num_blocks=3, num_layers=2) for i in range(2)])
    assert_allclose(c.apply(_to(xp, c.params), xp.from_numpy(x), xp.from_numpy(h)), want, xp=xp.ns, dtype=dt,
                    **tol, name="block cell")

    s = DreamerV3BlockGRU(5, 6, projection_size=3, num_blocks=3)
    xs = rng.normal(size=(2, 3, 5))
    init = np.array([[False, False, True], [True, False, False]])
    hh = h.copy()
    outs = []
    for t in range(3):
        hh = np.stack([R.block_gru_step(s.params["cell"], xs[i, t], np.zeros(6) if init[i, t] else hh[i],
                                        num_blocks=3) for i in range(2)])
        outs.append(hh)
    o, hf = s.apply(_to(xp, s.params), xp.from_numpy(xs), xp.from_numpy(h), xp.from_numpy(init))
    assert_allclose(o, np.stack(outs, 1), xp=xp.ns, dtype=dt, **tol, name="block seq")
    assert_allclose(hf, hh, xp=xp.ns, dtype=dt, **tol, name="block final")


def test_init_layout_and_distribution():
    from arrayrl.random import Generator

    c = DreamerV3BlockGRUCell(16, 64, projection_size=32, num_blocks=4, generator=Generator(1))
    p = c.params
    assert p["gates"]["weight"].shape == (4, 16, 48) and p["gates"]["bias"].shape == (192,)
    assert p["dynamic_linears"]["0"]["weight"].shape == (4, (64 + 2 * 32 * 4) // 4, 16)
    w = p["dynamic_linears"]["0"]["weight"]
    std = 1.1368 / np.sqrt(64 + 2 * 32 * 4)
    assert np.abs(w).max() <= 2 * std
    np.testing.assert_allclose(w.std(), 0.8796 * std, rtol=0.05)  # std of N(0,1) truncated at +-2
    assert np.all(p["gates"]["bias"] == 0) and np.all(p["input_norm"]["weight"] == 1)
    g = GRUCell(3, 8, dtype=np.float32)
    assert all(v.dtype == np.float32 for v in g.params.values())
    assert np.abs(g.params["weight_ih"]).max() <= 1 / np.sqrt(8)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input():
    g = GRUCell(3, 4)
    with pytest.raises(ValueError, match="input"):
        g.apply(g.params, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="hx"):
        g.apply(g.params, np.zeros((2, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"params\['weight_ih'\]"):
        g.apply({**g.params, "weight_ih": np.zeros((4, 3))}, np.zeros((2, 3)))
    with pytest.raises(KeyError, match="bias_hh"):
        g.apply({k: v for k, v in g.params.items() if k != "bias_hh"}, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="input"):
        g.apply(g.params, np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="hidden_size"):
        DreamerV3BlockGRUCell(3, 7, num_blocks=2)
    c = DreamerV3BlockGRUCell(3, 4, projection_size=2, num_blocks=2)
    with pytest.raises(ValueError, match=r"params\['gates'\]\['weight'\]"):
        c.apply({**c.params, "gates": {"weight": np.zeros((2, 2, 2)), "bias": np.zeros(12)}}, np.zeros((1, 3)))
    s = DreamerV3BlockGRU(3, 4, projection_size=2, num_blocks=2)
    with pytest.raises(ValueError, match="input"):
        s.apply(s.params, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="is_init"):
        s.apply(s.params, np.zeros((2, 5, 3)), None, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="input"):
        RMSNorm(4).apply(RMSNorm(4).params, np.zeros((2, 3)))


def test_gate_sigmoid_and_silu_vs_reference_and_ops(xp):
    """The GRU/RSSM gates (tanh form, one taped op each) equal the float64 loop oracle and ``ops.sigmoid`` /
    ``ops.silu`` on every backend, at the extremes too; float32 in, float32 out; tape gradients vs finite
    differences."""
    from arrayrl import ops
    from arrayrl.nn.recurrent import gate_sigmoid, gate_silu

    x = np.concatenate([np.array([-60.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 60.0]),
                        np.random.default_rng(0).normal(size=9) * 4])
    tol = dict(rtol=max(xp.rtol, 1e-12), atol=max(xp.atol, 1e-15))
    for fn, ref, op in ((gate_sigmoid, R.sigmoid, ops.sigmoid), (gate_silu, R.silu, ops.silu)):
        got = fn(xp.from_numpy(x))
        assert ("float32" in str(got.dtype)) == (not xp.is_float64)
        np.testing.assert_allclose(xp.to_numpy(got), ref(x), **tol)
        np.testing.assert_allclose(xp.to_numpy(got), xp.to_numpy(op(xp.from_numpy(x))), **tol)
    check_grads(lambda v: gate_sigmoid(v), (x,))
    check_grads(lambda v: gate_silu(v), (x,))
