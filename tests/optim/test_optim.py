"""arrayrl.optim: 20 steps against torch.optim (with clipping), every backend, errors."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl._numba_optim as N
import arrayrl.optim as O
from arrayrl.testing import assert_allclose
from arrayrl.tree import tree_leaves, tree_map

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.03, weight_decay=0.2, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True)),
]


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"layer": {"weight": rng.normal(size=(4, 3)), "bias": rng.normal(size=(4,))}, "log_alpha": rng.normal(size=())}


def _grad_fn(p, step):
    """A deterministic gradient field that depends on the parameters and the step (same formula on both sides)."""
    return tree_map(lambda x: np.sin(3 * x) * (1 + 0.1 * step) + 0.5 * x, p)


@pytest.mark.torchrl
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@pytest.mark.parametrize("max_norm", [None, 0.5])
def test_twenty_steps_match_torch(name, kw, max_norm, monkeypatch):
    """On NumPy float64 the Adam cases run the fused numba kernel where numba is on (counted), else the generic
    path (tests/optim/test_adam_kernel.py checks the two agree bit for bit)."""
    torch = pytest.importorskip("torch")
    kernel_calls = []
    if N.available():
        real = N._kernel()
        monkeypatch.setattr(N, "_kernel", lambda: lambda *a: (kernel_calls.append(1), real(*a))[1])
    p = _params()
    flat_names = ["layer.weight", "layer.bias", "log_alpha"]
    tparams = [torch.nn.Parameter(torch.tensor(x)) for x in tree_leaves(p)]
    topt = getattr(torch.optim, name)(tparams, **kw)
    opt = getattr(O, name)(**kw)
    state = opt.init(p)
    for step in range(20):
        g = _grad_fn(p, step)
        gt = [torch.tensor(x) for x in tree_leaves(_grad_fn({"layer": {"weight": tparams[0].detach().numpy(),
                                                                      "bias": tparams[1].detach().numpy()},
                                                            "log_alpha": tparams[2].detach().numpy()}, step))]
        for tp, gg in zip(tparams, gt):
            tp.grad = gg
        if max_norm is not None:
            g, norm = O.clip_grad_norm(g, max_norm)
            tnorm = torch.nn.utils.clip_grad_norm_(tparams, max_norm)
            np.testing.assert_allclose(float(norm), tnorm.item(), rtol=1e-13)
        topt.step()
        p, state = opt.update(g, state, p)
    for n, a, b in zip(flat_names, tree_leaves(p), tparams):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-12, atol=1e-13, err_msg=n)
    if name != "SGD":
        st = topt.state[tparams[0]]
        np.testing.assert_allclose(state["exp_avg"]["layer"]["weight"], st["exp_avg"].numpy(), rtol=1e-12, atol=1e-14)
        assert state["step"] == int(st["step"])
        assert len(kernel_calls) == (20 * 3 if N.available() else 0)


@pytest.mark.torchrl
@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, float("inf")])
def test_clip_grad_norm_matches_torch(norm_type):
    torch = pytest.importorskip("torch")
    g = _params(3)
    for max_norm in (0.1, 1e3):
        tg = [torch.nn.Parameter(torch.zeros(x.shape, dtype=torch.float64)) for x in tree_leaves(g)]
        for t, x in zip(tg, tree_leaves(g)):
            t.grad = torch.tensor(x)
        tn = torch.nn.utils.clip_grad_norm_(tg, max_norm, norm_type=norm_type)
        out, n = O.clip_grad_norm(g, max_norm, norm_type)
        np.testing.assert_allclose(float(n), tn.item(), rtol=1e-13)
        for a, t in zip(tree_leaves(out), tg):
            np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-13)
        assert tree_leaves(g)[0] is not tree_leaves(out)[0]


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_every_backend_matches_numpy(raw_xp, name):
    xp = raw_xp
    kw = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01, amsgrad=True)
    p_np = _params(1)
    p = tree_map(xp.from_numpy, p_np)
    opt = getattr(O, name)(**kw)
    s, s_np = opt.init(p), opt.init(p_np)
    for step in range(3):
        g_np = _grad_fn(p_np, step)
        g, _ = O.clip_grad_norm(tree_map(xp.from_numpy, g_np), 1.0)
        g_np, _ = O.clip_grad_norm(g_np, 1.0)
        p, s = opt.update(g, s, p)
        p_np, s_np = opt.update(g_np, s_np, p_np)
    for a, b in zip(tree_leaves(p), tree_leaves(p_np)):
        assert_allclose(a, b, rtol=xp.rtol * 10, atol=xp.atol * 10, xp=xp.ns, dtype=xp.float_dtype)


def test_stateful_and_errors():
    p = _params()
    trainer = O.Stateful(O.Adam(lr=0.1), p)
    new = trainer.step(_grad_fn(p, 0))
    assert trainer.params is new and trainer.state["step"] == 1
    assert not np.array_equal(new["layer"]["bias"], p["layer"]["bias"])  # inputs untouched, result moved
    bad = _params()
    del bad["log_alpha"]
    with pytest.raises(ValueError, match="grads"):
        O.SGD(lr=0.1).update(bad, O.SGD(lr=0.1).init(p), p)
    with pytest.raises(ValueError, match="lr"):
        O.Adam(lr=-1.0)
    with pytest.raises(ValueError, match="betas\\[1\\]"):
        O.Adam(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov"):
        O.SGD(lr=0.1, nesterov=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        O.clip_grad_norm({"a": np.array([np.inf, 1.0])}, 1.0, error_if_nonfinite=True)
