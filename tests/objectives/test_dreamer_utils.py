"""DreamerV3 helpers (symlog/symexp, symexp bins, two-hot encode/decode/cross-entropy, unimix, the two categorical KL
functions, the straight-through categorical): values and gradients against TorchRL 0.14.1 in float64, float64 finite
differences on the tape, every backend against the float64 loop oracle (reference/dreamer.py), float32 in/out, bad
input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arrayrl._backend import namespace_of
from arrayrl.autodiff import check_grads, value_and_grad
from arrayrl.objectives import dreamer_utils as D
from arrayrl.testing._assert import assert_allclose
from reference import dreamer as R

TOL64 = dict(rtol=1e-10, atol=1e-12)


def _sum(y):
    return namespace_of(y).sum(y)


def _dot(y, c):
    return namespace_of(y).sum(y * c)


# ------------------------------------------------------------------------------------------------ TorchRL
@pytest.fixture
def T():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    import torchrl.objectives as tro
    import torchrl.modules.models.model_based as mb

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch, tro, mb
    torch.set_default_dtype(old)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    bins = D.default_bins(255)
    x = np.concatenate([rng.normal(size=6) * 30, [0.0, 0.3, -2e9, 2e9, bins[3], bins[130], -5.5, 1e6]])
    return rng, bins, x


@pytest.mark.torchrl
def test_symlog_symexp_vs_torchrl(T):
    torch, tro, _ = T
    x = np.array([-100.0, -1.5, -1e-9, 0.0, 1e-9, 0.7, 100.0])
    for fa, ft in ((D.symlog, tro.symlog), (D.symexp, tro.symexp)):
        tx = torch.tensor(x, requires_grad=True)
        ty = ft(tx)
        ty.sum().backward()
        val, g = value_and_grad(lambda v: _sum(fa(v)))(x)
        np.testing.assert_allclose(fa(x), ty.detach().numpy(), **TOL64)
        np.testing.assert_allclose(g, tx.grad.numpy(), **TOL64)
        assert g[3] == 1.0  # d/dx at 0 is 1
    np.testing.assert_allclose(D.symexp(D.symlog(x)), x, rtol=1e-14)


@pytest.mark.torchrl
@pytest.mark.parametrize("n", [255, 254, 41, 5, 2, 3])
def test_default_bins_vs_torchrl(T, n):
    torch, _, mb = T
    for dt, tdt, rtol in ((np.float64, torch.float64, 1e-14), (np.float32, torch.float32, 1e-5)):
        a = D.default_bins(n, dtype=dt)
        assert a.dtype == dt and a.shape == (n,)
        # torch's vectorised linspace rounds differently from its scalar formula by about one ulp
        np.testing.assert_allclose(a, mb._default_bins(n, dtype=tdt).numpy(), rtol=rtol, atol=0)
        np.testing.assert_array_equal(a, -a[::-1])  # exactly antisymmetric
        assert np.all(np.diff(a) > 0)
        if n % 2:
            assert a[n // 2] == 0.0
    b = D.default_bins()
    np.testing.assert_allclose([b[0], b[-1]], [-np.expm1(20.0), np.expm1(20.0)], rtol=1e-15)


@pytest.mark.torchrl
def test_two_hot_encode_vs_torchrl(T):
    torch, tro, _ = T
    rng, bins, x = _inputs()
    tx, tb = torch.tensor(x, requires_grad=True), torch.tensor(bins)
    ty = tro.two_hot_encode(tx, tb)
    cot = rng.normal(size=ty.shape)
    (ty * torch.tensor(cot)).sum().backward()
    y = D.two_hot_encode(x, bins)
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL64)
    _, g = value_and_grad(lambda v: _dot(D.two_hot_encode(v, bins), cot))(x)
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-10, atol=1e-20)
    np.testing.assert_allclose(D.two_hot_encode(np.array([0.3, 0.25]), np.array([-1.0, 0.0, 1.0])),
                               [[0, 0.7, 0.3], [0, 0.75, 0.25]], rtol=1e-15, atol=1e-16)
    # a leading shape and the documented example
    x2 = x[:12].reshape(3, 4)
    np.testing.assert_allclose(D.two_hot_encode(x2, bins), tro.two_hot_encode(torch.tensor(x2), tb).numpy(), **TOL64)


@pytest.mark.torchrl
@pytest.mark.parametrize("n", [255, 254, 7])
def test_two_hot_decode_and_cross_entropy_vs_torchrl(T, n):
    torch, tro, _ = T
    rng = np.random.default_rng(1)
    bins = D.default_bins(n)
    logits = rng.normal(size=(2, 3, n)) * 3
    target = rng.normal(size=(2, 3)) * 40
    tl = torch.tensor(logits, requires_grad=True)
    tt = torch.tensor(target, requires_grad=True)
    tb = torch.tensor(bins)
    dec = tro.two_hot_decode(tl, tb)
    c1 = rng.normal(size=dec.shape)
    (dec * torch.tensor(c1)).sum().backward()
    np.testing.assert_allclose(D.two_hot_decode(logits, bins), dec.detach().numpy(), rtol=1e-10, atol=1e-6)
    _, g = value_and_grad(lambda v: _dot(D.two_hot_decode(v, bins), c1))(logits)
    np.testing.assert_allclose(g, tl.grad.numpy(), rtol=1e-10, atol=1e-6)  # bins up to 4.85e8: atol is ~1e-15 rel.
    assert D.two_hot_decode(np.zeros((2, n)), bins).tolist() == [0.0, 0.0]

    tl.grad = None
    for tshape in ((2, 3), (2, 3, 1)):
        ce = tro.two_hot_cross_entropy(tl, tt.reshape(tshape), tb)
        c2 = rng.normal(size=ce.shape)
        tl.grad = tt.grad = None
        (ce * torch.tensor(c2)).sum().backward()
        tgt = target.reshape(tshape)
        np.testing.assert_allclose(D.two_hot_cross_entropy(logits, tgt, bins), ce.detach().numpy(), **TOL64)
        _, (gl, gt) = value_and_grad(lambda a, b: _dot(D.two_hot_cross_entropy(a, b, bins), c2), argnums=(0, 1))(
            logits, tgt)
        np.testing.assert_allclose(gl, tl.grad.numpy(), **TOL64)
        np.testing.assert_allclose(gt, tt.grad.numpy().reshape(tshape), rtol=1e-10, atol=1e-20)


@pytest.mark.torchrl
@pytest.mark.parametrize("free,unimix", [(1.0, 0.01), (0.0, 0.0), (3.0, 0.1), (0.05, 0.01)])
def test_categorical_kl_terms_vs_torchrl(T, free, unimix):
    torch, tro, mb = T
    rng = np.random.default_rng(2)
    q, p = rng.normal(size=(3, 2, 4, 6)) * 2, rng.normal(size=(3, 2, 4, 6)) * 2
    tq, tp = torch.tensor(q, requires_grad=True), torch.tensor(p, requires_grad=True)
    dyn, rep = tro.categorical_kl_terms(tq, tp, free, unimix)
    (0.7 * dyn + 1.9 * rep).backward()
    a_dyn, a_rep = D.categorical_kl_terms(q, p, free, unimix)
    assert a_dyn.shape == () and a_rep.shape == ()
    np.testing.assert_allclose([float(a_dyn), float(a_rep)], [dyn.item(), rep.item()], **TOL64)

    def f(q_, p_):
        d, r = D.categorical_kl_terms(q_, p_, free, unimix)
        return 0.7 * d + 1.9 * r

    _, (gq, gp) = value_and_grad(f, argnums=(0, 1))(q, p)
    np.testing.assert_allclose(gq, tq.grad.numpy(), **TOL64)
    np.testing.assert_allclose(gp, tp.grad.numpy(), **TOL64)
    np.testing.assert_allclose(D.unimix_probs(q, unimix), mb._unimix_probs(torch.tensor(q), unimix).numpy(), **TOL64)


@pytest.mark.torchrl
@pytest.mark.parametrize("alpha,free", [(0.8, 1.0), (0.8, 0.1), (0.3, 0.0), (1.0, 0.5)])
def test_categorical_kl_balanced_vs_torchrl(T, alpha, free):
    torch, tro, _ = T
    rng = np.random.default_rng(3)
    q, p = rng.normal(size=(5, 4, 8)) * 3, rng.normal(size=(5, 4, 8)) * 3
    q[0, 0, 0] = 40.0  # a probability below the 1e-8 clamp
    tq, tp = torch.tensor(q, requires_grad=True), torch.tensor(p, requires_grad=True)
    kl = tro.categorical_kl_balanced(tq, tp, alpha, free)
    kl.backward()
    val, (gq, gp) = value_and_grad(lambda a, b: D.categorical_kl_balanced(a, b, alpha, free), argnums=(0, 1))(q, p)
    np.testing.assert_allclose(float(val), kl.item(), **TOL64)
    np.testing.assert_allclose(gq, tq.grad.numpy(), **TOL64)
    np.testing.assert_allclose(gp, tp.grad.numpy(), **TOL64)


@pytest.mark.torchrl
def test_straight_through_categorical_vs_torchrl(T):
    torch, _, mb = T
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 4, 6))
    u = rng.uniform(size=(3, 4))
    u[0, 0] = 0.999999999  # beyond the cumulative sum's rounding: the last class
    tl = torch.tensor(logits, requires_grad=True)
    ty = mb._straight_through_categorical(tl, 0.01, torch.tensor(u))
    cot = rng.normal(size=ty.shape)
    (ty * torch.tensor(cot)).sum().backward()
    y = D.straight_through_categorical(logits, 0.01, u)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.sum(y, -1), 1.0, atol=1e-15)
    _, g = value_and_grad(lambda v: _dot(D.straight_through_categorical(v, 0.01, u), cot))(logits)
    np.testing.assert_allclose(g, tl.grad.numpy(), **TOL64)


# ------------------------------------------------------------------------------------------------ finite differences
def test_gradients_vs_finite_differences():
    rng, bins, _ = _inputs()
    x = rng.normal(size=(4,)) * 20  # away from the bins' kinks
    logits = rng.normal(size=(4, 255))
    check_grads(lambda v: D.two_hot_encode(v, bins), (x,))
    check_grads(lambda v: D.two_hot_decode(v, bins), (logits,), atol=1e-4)  # values ~1e8 at the edges
    small = D.default_bins(9)
    check_grads(lambda a, b: D.two_hot_cross_entropy(a, b, small), (rng.normal(size=(4, 9)), rng.normal(size=4)))
    check_grads(lambda v: D.symlog(v), (np.array([-3.0, 0.0, 0.2]),))
    check_grads(lambda v: D.symexp(v), (np.array([-3.0, 0.0, 0.2]),))
    check_grads(lambda v: D.unimix_probs(v, 0.05), (rng.normal(size=(3, 5)),))
    q, p = rng.normal(size=(3, 4, 6)), rng.normal(size=(3, 4, 6))
    # each term stops one side: its gradient is the full KL gradient on the other side only
    check_grads(lambda b: D.categorical_kl_terms(q, b, 0.3, 0.01)[0], (p,))
    check_grads(lambda a: D.categorical_kl_terms(a, p, 0.3, 0.01)[1], (q,))
    check_grads(lambda b: D.categorical_kl_balanced(q, b, 1.0, 0.05), (p,))
    check_grads(lambda a: D.categorical_kl_balanced(a, p, 0.0, 0.05), (q,))


def test_stop_gradient_split():
    """dyn only trains the prior, rep only the posterior; balanced splits alpha / 1 - alpha."""
    rng = np.random.default_rng(5)
    q, p = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 5))
    _, (gq, gp) = value_and_grad(lambda a, b: D.categorical_kl_terms(a, b, 0.0)[0], argnums=(0, 1))(q, p)
    assert np.all(gq == 0) and np.any(gp != 0)
    _, (gq, gp) = value_and_grad(lambda a, b: D.categorical_kl_terms(a, b, 0.0)[1], argnums=(0, 1))(q, p)
    assert np.any(gq != 0) and np.all(gp == 0)
    _, (gq1, gp1) = value_and_grad(lambda a, b: D.categorical_kl_balanced(a, b, 1.0, 0.0), argnums=(0, 1))(q, p)
    _, (gq2, gp2) = value_and_grad(lambda a, b: D.categorical_kl_balanced(a, b, 0.25, 0.0), argnums=(0, 1))(q, p)
    _, (gq3, _) = value_and_grad(lambda a, b: D.categorical_kl_balanced(a, b, 0.0, 0.0), argnums=(0, 1))(q, p)
    np.testing.assert_allclose(gp2, 0.25 * gp1, rtol=1e-12)
    np.testing.assert_allclose(gq2, 0.75 * gq3, rtol=1e-12)


# ------------------------------------------------------------------------------------------------ every backend
def test_backends_vs_reference(xp):
    rng = np.random.default_rng(6)
    bins_np = D.default_bins(255)
    bins = xp.from_numpy(bins_np)
    x = np.concatenate([rng.normal(size=5) * 30, [0.0, -1e10, 1e10, 0.25]])
    logits = rng.normal(size=(3, 255)) * 2
    target = rng.normal(size=3) * 20
    q, p = rng.normal(size=(2, 3, 4, 6)), rng.normal(size=(2, 3, 4, 6))
    dt = xp.float_dtype
    f32 = not xp.is_float64
    tol = dict(rtol=2e-4, atol=2e-5) if f32 else TOL64
    xx = xp.from_numpy(x)
    assert_allclose(D.symlog(xx), R.symlog(x), xp=xp.ns, dtype=dt, **tol, name="symlog")
    assert_allclose(D.symexp(xp.from_numpy(x[:5] / 10)), R.symexp(x[:5] / 10), xp=xp.ns, dtype=dt, **tol)
    assert_allclose(D.two_hot_encode(xx, bins), R.two_hot_encode(x, bins_np), xp=xp.ns, dtype=dt,
                    **(dict(rtol=2e-4, atol=2e-4) if f32 else TOL64), name="encode")
    # decode in float32 is ~1e-7 relative to the largest bin (4.85e8)
    assert_allclose(D.two_hot_decode(xp.from_numpy(logits), bins), R.two_hot_decode(logits, bins_np), xp=xp.ns,
                    dtype=dt, rtol=1e-4 if f32 else 1e-10, atol=300.0 if f32 else 1e-6, name="decode")
    assert_allclose(D.two_hot_cross_entropy(xp.from_numpy(logits), xp.from_numpy(target), bins),
                    R.two_hot_cross_entropy(logits, target, bins_np), xp=xp.ns, dtype=dt, **tol, name="ce")
    for free, uni in ((1.0, 0.01), (0.0, 0.0)):
        dyn, rep = D.categorical_kl_terms(xp.from_numpy(q), xp.from_numpy(p), free, uni)
        want = R.categorical_kl_terms(q, p, free, uni)
        assert_allclose(dyn, want[0], xp=xp.ns, dtype=dt, **tol, name="dyn")
        assert_allclose(rep, want[1], xp=xp.ns, dtype=dt, **tol, name="rep")
    kl = D.categorical_kl_balanced(xp.from_numpy(q), xp.from_numpy(p), 0.8, 0.5)
    assert_allclose(kl, R.categorical_kl_balanced(q, p, 0.8, 0.5), xp=xp.ns, dtype=dt, **tol, name="balanced")
    st_ = D.straight_through_categorical(xp.from_numpy(q), 0.01, xp.from_numpy(rng.uniform(size=(2, 3, 4))))
    assert_allclose(xp.sum(st_, axis=-1), np.ones((2, 3, 4)), xp=xp.ns, dtype=dt, rtol=0, atol=1e-6)
    b = D.default_bins(255, xp=xp.ns, dtype=dt, device=xp.device)
    assert_allclose(b, bins_np, dtype=dt,
                    rtol=2e-6 if f32 else 1e-15, atol=0)


@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=8), st.integers(2, 12))
def test_two_hot_encode_property(values, n):
    """Two-hot weights are non-negative, sum to 1 and reconstruct the clipped value (oracle agrees)."""
    bins = D.default_bins(n) / 1e6
    x = np.array(values)
    enc = D.two_hot_encode(x, bins)
    np.testing.assert_allclose(enc, R.two_hot_encode(x, bins), rtol=1e-9, atol=1e-12)
    assert np.all(enc >= -1e-12)
    np.testing.assert_allclose(enc.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(enc @ bins, np.clip(x, bins[0], bins[-1]), rtol=1e-9, atol=1e-9 * np.abs(bins).max())


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input():
    bins = D.default_bins(5)
    with pytest.raises(ValueError, match="bins"):
        D.two_hot_encode(np.zeros(3), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="bins"):
        D.two_hot_encode(np.zeros(3), np.zeros(1))
    with pytest.raises(TypeError, match="x"):
        D.two_hot_encode(np.zeros(3, dtype=np.int64), bins)
    with pytest.raises(ValueError, match="logits"):
        D.two_hot_decode(np.zeros((2, 4)), bins)
    with pytest.raises(ValueError, match="target"):
        D.two_hot_cross_entropy(np.zeros((2, 5)), np.zeros((2, 2)), bins)
    with pytest.raises(ValueError, match="prior_logits"):
        D.categorical_kl_terms(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="posterior_logits"):
        D.categorical_kl_terms(np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="unimix"):
        D.categorical_kl_terms(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), unimix=1.0)
    with pytest.raises(TypeError, match="free_bits"):
        D.categorical_kl_balanced(np.zeros((2, 3)), np.zeros((2, 3)), free_bits=np.float64(1.0)[None])
    with pytest.raises(ValueError, match="num_bins"):
        D.default_bins(1)
    with pytest.raises(TypeError, match="num_bins"):
        D.default_bins(3.0)
    with pytest.raises(ValueError, match="uniform"):
        D.straight_through_categorical(np.zeros((2, 3)), 0.0, np.zeros(3))
    with pytest.raises(TypeError, match="value"):
        D.symlog(np.zeros(2, dtype=np.int32))


def test_straight_through_index_vs_reference_on_every_backend(xp):
    """The one-hot class is the inverse-CDF class of the loop oracle (``#{k: u > cumsum_k}``, clipped to ``K - 1``),
    including the edges u = 0 and u = 1 (the cumulative sum's rounding may stay below 1: the clip) and classes of
    (numerically) zero probability."""
    from reference.dreamer import categorical_sample_index

    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 3, 6)) * 2
    logits[:, :, 0] = -200.0  # zero probability in float64 and float32
    logits[1, 1, -1] = -200.0
    u = rng.uniform(size=(5, 3))
    top = 1.0 if xp.is_float64 else 0.999  # float32: where the float32 cumsum ends is a matter of its rounding
    u[0] = [0.0, top, 0.5]
    u[1, 1] = top
    y = D.straight_through_categorical(xp.from_numpy(logits), 0.0, xp.from_numpy(u))
    assert ("float32" in str(y.dtype)) == (not xp.is_float64)
    y = xp.to_numpy(y)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    want = categorical_sample_index(e / e.sum(-1, keepdims=True), u)
    np.testing.assert_array_equal(np.argmax(y, axis=-1), want)
    np.testing.assert_allclose(np.sort(y, axis=-1)[..., :-1], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.max(y, axis=-1), 1.0, atol=1e-6)
    assert want[0, 0] == 0 and want[0, 1] >= 4  # u = 0: the first class (torch's u > cumsum); u = 1: the far end
