"""Value normalisers (pure state updates) against TorchRL 0.14.1's stateful ones on the same stream of inputs and
against the float64 per-sample oracle on every backend; KLAdaptiveLR against TorchRL's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl.objectives.value_norm import (KLAdaptiveLR, PercentileValueNorm, PopArtValueNorm, RunningValueNorm,
                                           kl_adaptive_lr)
from arrayrl.optim import SGD, Adam, Stateful
from reference.losses import a2c as R

KINDS = {"popart": (PopArtValueNorm, {"beta": 0.8}), "running": (RunningValueNorm, {}),
         "percentile": (PercentileValueNorm, {"rate": 0.3, "min_scale": 0.5}),
         "percentile-center": (PercentileValueNorm, {"rate": 0.7, "quantiles": (0.2, 0.9), "center": True})}


def _stream(rng, n, lead, shape):
    return [rng.normal(size=lead + shape) * (1 + k) + k for k in range(n)]


# ------------------------------------------------------------------------------------------------ TorchRL
@pytest.mark.torchrl
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("lead,shape", [((6, 4), (1,)), ((3, 2, 5), (2,))])
def test_normalisers_vs_torchrl_stream(kind, dtype, lead, shape):
    torch = pytest.importorskip("torch")
    import torchrl.modules.value_norm as tvn

    cls, kw = KINDS[kind]
    old_default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))  # (PercentileValueNorm's quantile buffer takes the default dtype)
    try:
        tnorm = getattr(tvn, cls.__name__)(shape=shape, **kw)
    finally:
        torch.set_default_dtype(old_default)
    norm = cls(shape=shape, **kw)
    rng = np.random.default_rng(0)
    xs = [x.astype(dtype) for x in _stream(rng, 5, lead, shape)]
    state = norm.init(like=xs[0])
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-6, atol=1e-6)
    for step, x in enumerate(xs):
        mask = None
        tx = torch.as_tensor(x)
        if step % 2:  # TorchRL's loss drops invalid rows (value_target[mask]); arrayrl weights them 0
            mask = rng.random(lead) < 0.6
            mask.flat[0] = True
            tx = tx[torch.as_tensor(mask)]
        tnorm.update(tx)
        old = copy.deepcopy(state)
        y, state = norm(x, state, mask=mask)
        for k in old:  # the input state is untouched
            np.testing.assert_array_equal(old[k], copy.deepcopy(old)[k])
        for name, buf in tnorm.named_buffers():
            if not name.startswith("_"):
                assert state[name].dtype == np.dtype(dtype), name
                np.testing.assert_allclose(state[name], buf.numpy(), **tol, err_msg=f"{step} {name}")
        probe = x[..., :]  # normalize / denormalize / scale with the updated statistics
        np.testing.assert_allclose(y, tnorm.normalize(torch.as_tensor(probe)).numpy(), **tol)
        np.testing.assert_allclose(norm.denormalize(y, state), tnorm.denormalize(torch.as_tensor(y)).numpy(), **tol)
        np.testing.assert_allclose(norm.scale(state), tnorm.scale().numpy(), **tol)
        assert y.dtype == np.dtype(dtype)


# ------------------------------------------------------------------------------------------------ reference
@st.composite
def _streams(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(st.integers(1, 3))
    lead = (draw(st.integers(1, 5)), draw(st.integers(1, 3)))
    s = draw(st.sampled_from([(1,), (2,)]))
    return _stream(rng, n, lead, s), s


def _flat(x, shape):
    return np.asarray(x).reshape((-1,) + shape)


@settings(max_examples=5)
@given(case=_streams(), kind=st.sampled_from(["popart", "running", "percentile"]))
def test_normalisers_vs_reference(xp, case, kind):
    xs, shape = case
    cls, kw = KINDS[kind]
    norm = cls(shape=shape, **kw)
    if kind == "popart":
        want = R.popart_stream([_flat(x, shape) for x in xs], beta=0.8)
    elif kind == "running":
        want = R.running_stream([_flat(x, shape) for x in xs])
    else:
        want = R.percentile_stream([_flat(x, shape) for x in xs], rate=0.3, min_scale=0.5)
    state = norm.init(like=xp.from_numpy(xs[0]))
    tol = dict(rtol=max(xp.rtol, 1e-9), atol=max(xp.atol, 1e-10))
    for x, w in zip(xs, want):
        y, state = norm(xp.from_numpy(x), state)
        pos = list(np.ndindex(*shape))
        if kind == "percentile":
            lo, hi, scale = w
            np.testing.assert_allclose(xp.to_numpy(state["low"]), np.array([lo[p] for p in pos]).reshape(shape), **tol)
            np.testing.assert_allclose(xp.to_numpy(state["high"]), np.array([hi[p] for p in pos]).reshape(shape),
                                       **tol)
            mean, std = np.zeros(shape), np.array([scale[p] for p in pos]).reshape(shape)
        else:
            mean = np.array([w[0][p] for p in pos]).reshape(shape)
            std = np.array([w[1][p] for p in pos]).reshape(shape)
        np.testing.assert_allclose(xp.to_numpy(norm.scale(state)), std, **tol)
        np.testing.assert_allclose(xp.to_numpy(y), (x - mean) / std, **tol)


def test_masked_update_equals_update_on_valid_rows():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 3, 2, 1))
    mask = np.array([[True, False, True], [False, False, True], [True, True, True], [False, True, False]])
    for kind in ("popart", "running", "percentile"):
        cls, kw = KINDS[kind]
        norm = cls(**kw)
        s0 = norm.update(rng.normal(size=(5, 1)), norm.init(like=x))
        for xx, m in ((x, mask), (x[:, :, 0], mask[..., None])):  # a [B, T, 1] mask of a [B, T, 1] target
            a = norm.update(xx, s0, mask=m)
            b = norm.update(xx[mask], s0)
            for k in a:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-14, err_msg=f"{kind} {k}")
        empty = norm.update(x, s0, mask=np.zeros((4, 3), bool))  # no valid row: state unchanged (TorchRL: NaN)
        for k in empty:
            np.testing.assert_array_equal(empty[k], s0[k])


def test_call_without_update_and_bad_input():
    norm = PopArtValueNorm(shape=2, beta=0.5)
    x = np.arange(12.0).reshape(3, 2, 2)
    s = norm.update(x, norm.init(like=x))
    y, s2 = norm(x + 1, s, update=False)
    assert s2 == s or all(np.array_equal(s2[k], s[k]) for k in s)
    np.testing.assert_allclose(y, norm.normalize(x + 1, s))
    with pytest.raises(ValueError, match="value_target"):
        norm.update(np.zeros((3, 1)), s)
    with pytest.raises(ValueError, match="state"):
        norm.update(x, {"running_mean": s["running_mean"]})
    with pytest.raises(ValueError, match="mask"):
        norm.update(x, s, mask=np.ones((2,), bool))
    with pytest.raises(TypeError, match="like"):
        norm.init()
    with pytest.raises(ValueError, match="quantiles"):
        PercentileValueNorm(quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="rate"):
        PercentileValueNorm(rate=2.0)
    assert norm.init(xp=np)["debiasing_term"].dtype == np.float64


# ------------------------------------------------------------------------------------------------ KLAdaptiveLR
@pytest.mark.torchrl
def test_kl_adaptive_lr_vs_torchrl():
    torch = pytest.importorskip("torch")
    from torchrl.objectives import KLAdaptiveLR as TKL

    params = [torch.nn.Parameter(torch.zeros(1))]
    topt = torch.optim.Adam(params, lr=1e-3)
    tsched = TKL(topt, target_kl=0.01, factor=2.0, min_lr=1e-4, max_lr=3e-3)
    opt = Adam(lr=1e-3)
    sched = KLAdaptiveLR(opt, target_kl=0.01, factor=2.0, min_lr=1e-4, max_lr=3e-3)
    for kl in [0.05, 0.001, 0.001, 0.001, 0.0, 0.012, 0.03, 0.5, 0.5, 0.5, 0.5, 0.004, np.float64(0.001)]:
        tsched.step(kl)
        sched.step(kl)
        assert sched.get_last_lr() == tsched.get_last_lr() == [opt.lr]
    assert sched.state_dict() == tsched.state_dict()
    for bad in (dict(target_kl=0.0), dict(target_kl=0.01, factor=1.0), dict(target_kl=0.01, min_lr=1.0, max_lr=0.1)):
        with pytest.raises(ValueError):
            TKL(topt, **bad)
        with pytest.raises(ValueError):
            KLAdaptiveLR(opt, **bad)
    with pytest.raises(ValueError, match="finite"):
        sched.step(float("nan"))


def test_kl_adaptive_lr_drives_the_optimiser():
    """The schedule edits the lr the next update reads (a Stateful wrapper and a list of optimisers too)."""
    p = {"w": np.ones(3)}
    g = {"w": np.ones(3)}
    trainer = Stateful(SGD(lr=0.1), p)
    other = SGD(lr=0.05)
    sched = KLAdaptiveLR([trainer, other], target_kl=0.01, max_lr=1.0)
    sched.step(1.0)  # too large: lr / 1.5
    assert sched.get_last_lr() == [0.1 / 1.5, 0.05 / 1.5]
    np.testing.assert_allclose(trainer.step(g)["w"], 1 - 0.1 / 1.5)
    assert kl_adaptive_lr(1e-3, 0.0, 0.01) == 1e-3  # a zero KL leaves the lr unchanged
    assert kl_adaptive_lr(1e-3, 0.001, 0.01) == 1.5e-3
    assert kl_adaptive_lr(5e-6, 0.5, 0.01) == 1e-5  # clamped to min_lr
    with pytest.raises(TypeError, match="optimizer"):
        KLAdaptiveLR(object(), target_kl=0.01)
