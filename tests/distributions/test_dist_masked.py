"""MaskedCategorical: values and gradients against TorchRL's MaskedCategorical (float64), NaN-free gradients on
masked rows (float64 finite differences), validation of masked-out actions, sampling, every backend; and the
taped-noise fix of Categorical sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

import arrayrl.distributions as D
from arrayrl import namespace_of
from arrayrl._validate import IndexRangeError
from arrayrl.autodiff import Tensor, check_grads, value_and_grad
from arrayrl.objectives import policy_gradient as PG
from arrayrl.random import Generator

TOL = dict(rtol=1e-10, atol=1e-10)


def _case(shape=(5, 6), seed=0):
    """logits with a spread, and a mask with: a single allowed action (row 0), all-but-one masked (row 1), the
    last action masked (row 2), all allowed (row 3), a random row."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape) * 3
    a = shape[-1]
    mask = rng.uniform(size=shape) < 0.6
    mask[..., 0, :] = False
    mask[..., 0, 2] = True
    mask[..., 1, :] = True
    mask[..., 1, 0] = False
    mask[..., 2, a - 1] = False
    mask[..., 2, 0] = True
    mask[..., 3, :] = True
    return rng, logits, mask


def _allowed_actions(rng, mask, sample_shape=()):
    """An allowed action per row (inverse-CDF on the uniform over the allowed ones)."""
    m = np.broadcast_to(mask, sample_shape + mask.shape)
    u = rng.uniform(size=m.shape)
    return np.argmax(np.where(m, u, -1.0), axis=-1)


# ------------------------------------------------------------------------------------------------ against TorchRL
@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    return torch


@pytest.fixture(scope="module")
def TMasked(torch):
    from torchrl.modules.distributions import MaskedCategorical

    return MaskedCategorical


def _t(torch, x, grad=False):
    x = np.asarray(x)
    return torch.tensor(x, dtype=torch.float64 if x.dtype.kind == "f" else None, requires_grad=grad)


@pytest.mark.torchrl
@pytest.mark.parametrize("neg_inf", [-math.inf, -10.0, -1e9])
@pytest.mark.parametrize("param", ["logits", "probs"])
def test_dense_values_match_torchrl(torch, TMasked, neg_inf, param):
    rng, logits, mask = _case()
    p = logits if param == "logits" else np.exp(logits) / np.exp(logits).sum(-1, keepdims=True) * 3.0
    ad = D.MaskedCategorical(**{param: p}, mask=mask, neg_inf=neg_inf)
    td = TMasked(**{param: _t(torch, p)}, mask=torch.as_tensor(mask), neg_inf=neg_inf)
    np.testing.assert_allclose(ad.probs, td.probs.numpy(), **TOL)
    np.testing.assert_allclose(ad.entropy(), td.entropy().numpy(), **TOL)
    assert np.array_equal(ad.mode, td.mode.numpy()) and np.array_equal(ad.deterministic_sample, td.mode.numpy())
    if math.isfinite(neg_inf):  # TorchRL's logits are finite too: equal
        np.testing.assert_allclose(ad.logits, td.logits.numpy(), rtol=1e-10, atol=1e-8)
    else:  # allowed entries equal; masked: finite here, -inf in TorchRL (documented), exp() == 0 in both
        tl = td.logits.numpy()
        np.testing.assert_allclose(ad.logits[mask], tl[mask], **TOL)
        assert np.all(np.isneginf(tl[~mask])) and np.all(np.isfinite(ad.logits)) and np.all(ad.probs[~mask] == 0)
    # log_prob of allowed actions, with a sample shape (TorchRL's cross-entropy path takes no sample shape with
    # batched logits: its use_cross_entropy=False path there), and of every action with validation off
    value = _allowed_actions(rng, mask)
    np.testing.assert_allclose(ad.log_prob(value), td.log_prob(torch.as_tensor(value)).numpy(), **TOL)
    td_plain = TMasked(**{param: _t(torch, p)}, mask=torch.as_tensor(mask), neg_inf=neg_inf, use_cross_entropy=False)
    value = _allowed_actions(rng, mask, (3,))
    np.testing.assert_allclose(ad.log_prob(value), td_plain.log_prob(torch.as_tensor(value)).numpy(), **TOL)
    every = np.broadcast_to(np.arange(6)[:, None], (6, 5)).copy()
    loose = D.MaskedCategorical(**{param: p}, mask=mask, neg_inf=neg_inf, validate_args=False)
    got, ref = loose.log_prob(every), td_plain.log_prob(torch.as_tensor(every)).numpy()
    assert np.array_equal(np.isneginf(got), np.isneginf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(got[fin], ref[fin], rtol=1e-10, atol=1e-8)
    if math.isinf(neg_inf):
        assert np.all(np.isneginf(got[~mask.T]))


@pytest.mark.torchrl
def test_broadcast_mask_matches_torchrl(torch, TMasked):
    rng, logits, _ = _case()
    mask = np.array([True, False, True, True, False, True])
    ad, td = D.MaskedCategorical(logits=logits, mask=mask), TMasked(logits=_t(torch, logits), mask=torch.as_tensor(mask))
    value = _allowed_actions(rng, np.broadcast_to(mask, logits.shape))
    np.testing.assert_allclose(ad.log_prob(value), td.log_prob(torch.as_tensor(value)).numpy(), **TOL)
    np.testing.assert_allclose(ad.probs, td.probs.numpy(), **TOL)
    # TorchRL's entropy raises on a broadcast mask (expand_as_right); compare with the expanded mask
    full = TMasked(logits=_t(torch, logits), mask=torch.as_tensor(np.broadcast_to(mask, logits.shape).copy()))
    np.testing.assert_allclose(ad.entropy(), full.entropy().numpy(), **TOL)
    assert ad.batch_shape == (5,)


@pytest.mark.torchrl
@pytest.mark.parametrize("padding", [None, -1])
def test_sparse_indices_match_torchrl(torch, TMasked, padding):
    rng, logits, _ = _case()
    if padding is None:
        idx = np.stack([rng.permutation(6)[:3] for _ in range(5)])
    else:
        idx = np.array([[4, -1, -1], [0, 5, 2], [1, 3, -1], [2, 0, 1], [5, -1, 3]])
    ad = D.MaskedCategorical(logits=logits, indices=idx, padding_value=padding)
    td = TMasked(logits=_t(torch, logits), indices=torch.as_tensor(idx), padding_value=padding)
    valid = idx != (padding if padding is not None else -99)
    tl = td.logits.numpy()
    np.testing.assert_allclose(ad.logits[valid], tl[valid], **TOL)
    np.testing.assert_allclose(ad.probs, td.probs.numpy(), **TOL)
    assert np.array_equal(ad.mode, td.mode.numpy())
    pick = np.argmax(np.where(valid, rng.uniform(size=idx.shape), -1), axis=-1)
    value = idx[np.arange(5), pick]
    np.testing.assert_allclose(ad.log_prob(value), td.log_prob(torch.as_tensor(value)).numpy(), **TOL)
    outside = np.array([[a for a in range(6) if a not in idx[r]][0] for r in range(5)])
    loose = D.MaskedCategorical(logits=logits, indices=idx, padding_value=padding, validate_args=False)
    assert np.all(np.isneginf(loose.log_prob(outside)))
    assert np.all(np.isneginf(td.log_prob(torch.as_tensor(outside)).numpy()))
    # entropy: TorchRL's is NaN with padding (0 * -inf); arrayrl's is the entropy over the non-padded positions
    p = np.where(valid, np.exp(np.take_along_axis(logits, np.where(valid, idx, 0), -1)), 0.0)
    p /= p.sum(-1, keepdims=True)
    hand = -np.sum(np.where(valid, p * np.log(np.where(valid, p, 1.0)), 0.0), -1)
    np.testing.assert_allclose(ad.entropy(), hand, **TOL)
    if padding is None:
        np.testing.assert_allclose(ad.entropy(), td.entropy().numpy(), **TOL)
    else:
        assert np.all(np.isnan(td.entropy().numpy()[~valid.all(-1)]))
    # samples are allowed actions: indices[position]
    s = ad.sample(noise=rng.uniform(size=(200, 5)))
    assert all(np.all(np.isin(s[:, r], idx[r][valid[r]])) for r in range(5))


@pytest.mark.torchrl
@pytest.mark.parametrize("neg_inf", [-math.inf, -5.0])
def test_gradients_match_torch_autograd(torch, TMasked, neg_inf):
    rng, logits, mask = _case()
    value = _allowed_actions(rng, mask)
    w = rng.uniform(-1.0, 1.0, size=(5,))  # |w| <= 1: TorchRL's entropy gradient is NaN beyond (see below)

    def f(lg):
        d = D.MaskedCategorical(logits=lg, mask=mask, neg_inf=neg_inf)
        xp = namespace_of(lg)
        return xp.sum(d.log_prob(value)) + xp.sum(d.entropy() * w) + xp.sum(d.probs[..., 1])

    val, g = value_and_grad(f)(logits)
    tl = _t(torch, logits, True)
    td = TMasked(logits=tl, mask=torch.as_tensor(mask), neg_inf=neg_inf)
    tot = td.log_prob(torch.as_tensor(value)).sum() + (td.entropy() * _t(torch, w)).sum() + td.probs[..., 1].sum()
    tot.backward()
    np.testing.assert_allclose(float(val), tot.item(), rtol=1e-12)
    np.testing.assert_allclose(g, tl.grad.numpy(), **TOL)
    if math.isinf(neg_inf):
        assert np.all(g[~mask] == 0)


@pytest.mark.torchrl
def test_torchrl_entropy_gradient_is_nan_with_a_coefficient_above_one_arrayrl_is_not(torch, TMasked):
    """TorchRL fills masked logits with finfo.min: the cotangent c * finfo.min overflows to -inf for |c| > 1 and
    meets a zero probability (NaN). arrayrl's where-select keeps it finite (and equal to c times the c=1 gradient)."""
    _, logits, mask = _case()
    tl = _t(torch, logits, True)
    (2.0 * TMasked(logits=tl, mask=torch.as_tensor(mask)).entropy().sum()).backward()
    assert np.isnan(tl.grad.numpy()).any()
    ent = lambda c: lambda lg: c * namespace_of(lg).sum(D.MaskedCategorical(logits=lg, mask=mask).entropy())  # noqa: E731
    _, g2 = value_and_grad(ent(2.0))(logits)
    _, g1 = value_and_grad(ent(1.0))(logits)
    assert np.all(np.isfinite(g2))
    np.testing.assert_allclose(g2, 2 * g1, rtol=1e-14)


@pytest.mark.torchrl
def test_probs_gradients_match_torch_autograd(torch, TMasked):
    rng, logits, mask = _case()
    probs = np.exp(rng.normal(size=logits.shape))
    value = _allowed_actions(rng, mask)

    def f(p):
        d = D.MaskedCategorical(probs=p, mask=mask)
        xp = namespace_of(p)
        return xp.sum(d.log_prob(value)) + 2 * xp.sum(d.entropy())

    val, g = value_and_grad(f)(probs)
    tp = _t(torch, probs, True)
    td = TMasked(probs=tp, mask=torch.as_tensor(mask))
    tot = td.log_prob(torch.as_tensor(value)).sum() + 2 * td.entropy().sum()
    np.testing.assert_allclose(float(val), tot.item(), rtol=1e-12)
    tot.backward()
    # TorchRL's probs path takes log(0) at masked entries: 0 * inf = NaN in every row with a masked entry.
    # arrayrl's is finite, zero at masked entries, and agrees with TorchRL on the rows without a masked entry.
    full = mask.all(-1)
    assert np.isnan(tp.grad.numpy()).any(-1)[~full].all()
    np.testing.assert_allclose(g[full], tp.grad.numpy()[full], **TOL)
    assert np.all(np.isfinite(g)) and np.all(g[~mask] == 0)
    check_grads(f, (probs,))


# ------------------------------------------------------------------------------------------------ NaN-free
def test_gradients_are_finite_and_match_finite_differences_on_masked_rows():
    """Rows with a single allowed action, all-but-one masked, large logits; masked-out actions scored with
    validation off (-inf values, zero gradient); entropy with a large coefficient; KL between two masked policies."""
    rng, logits, mask = _case(seed=1)
    logits[3, 0] = 1e4
    value = _allowed_actions(rng, mask, (3,))
    masked_value = np.argmax(~mask, axis=-1)[None]  # a masked-out action per row (row 1: action 0, row 3: none)
    q_logits = rng.normal(size=logits.shape) * 2  # (q keeps mass on every allowed action: a finite KL)

    def terms(lg, *, validate=None):
        d = D.MaskedCategorical(logits=lg, mask=mask, validate_args=validate)
        q = D.MaskedCategorical(logits=lg * 0.5 + q_logits, mask=mask)
        xp = namespace_of(lg)
        return (xp.sum(d.log_prob(value)) + 1e6 * xp.sum(d.entropy()) + xp.sum(PG.kl_divergence(d, q))
                + xp.sum(d.probs * d.probs))

    def with_masked(lg):
        d = D.MaskedCategorical(logits=lg, mask=mask, validate_args=False)
        xp = namespace_of(lg)
        lp = d.log_prob(masked_value)
        return terms(lg) + xp.sum(xp.where(xp.isfinite(lp), lp, xp.zeros_like(lp))) + xp.sum(xp.exp(lp))

    val, g = value_and_grad(with_masked)(logits)
    assert np.isfinite(float(val)) and np.all(np.isfinite(g))
    assert np.all(g[~mask] == 0)
    assert np.all(g[0] == 0)  # a single allowed action: log p = 0, entropy 0, whatever the logits
    lp = D.MaskedCategorical(logits=logits, mask=mask, validate_args=False).log_prob(masked_value)
    assert np.all(np.isneginf(lp[:, [0, 1, 2, 4]])) and np.isfinite(lp[0, 3]) is np.True_
    small = logits.copy()
    small[3, 0] = 5.0  # finite differences need moderate values
    check_grads(lambda lg: terms(lg) / 1e6, (small,))


def test_all_masked_row_is_rejected_under_validation_and_finite_without():
    logits = np.zeros((2, 3))
    mask = np.array([[True, False, True], [False, False, False]])
    with pytest.raises(ValueError, match="mask: every row must allow at least one action"):
        D.MaskedCategorical(logits=logits, mask=mask)
    d = D.MaskedCategorical(logits=logits, mask=mask, validate_args=False)
    assert np.all(np.isfinite(d.logits)) and np.all(np.isfinite(d.entropy())) and d.entropy()[1] == 0
    assert np.isneginf(d.log_prob(np.array([0, 1]))[1])
    _, g = value_and_grad(lambda lg: namespace_of(lg).sum(
        D.MaskedCategorical(logits=lg, mask=mask, validate_args=False).entropy()))(logits)
    assert np.all(np.isfinite(g))
    with pytest.raises(ValueError, match=r"indices \(all padding\)"):
        D.MaskedCategorical(logits=logits, indices=np.array([[0, 1], [-1, -1]]), padding_value=-1)


# ------------------------------------------------------------------------------------------------ validation
def test_masked_out_action_raises_naming_it_under_the_policy():
    _, logits, mask = _case()
    d = D.MaskedCategorical(logits=logits, mask=mask)
    value = np.array([2, 1, 0, 0, 0])
    value[4] = np.argmax(mask[4])
    value[1] = 0  # row 1 masks action 0
    with pytest.raises(ValueError, match=r"value: action 0 at index \(1,\) is masked out"):
        d.log_prob(value)
    with pytest.raises(IndexRangeError, match=r"value: expected integers in \[0, 6\)"):
        d.log_prob(np.array([2, 1, 0, 6, 0]))
    with _validate(False):
        assert np.isneginf(d.log_prob(value)[1])  # TorchRL's value
    with _validate(True):
        with pytest.raises(ValueError, match="masked out"):
            D.MaskedCategorical(logits=logits, mask=mask, validate_args=None).log_prob(value)
    assert np.isneginf(D.MaskedCategorical(logits=logits, mask=mask, validate_args=False).log_prob(value)[1])
    with pytest.raises(ValueError, match=r"action 3 at index \(1, 0\) is not among the allowed indices"):
        D.MaskedCategorical(logits=logits[:2], indices=np.array([[0, 1], [1, 2]])).log_prob(np.array([[0, 1], [3, 2]]))


def _validate(flag):
    from arrayrl._validate import validate_args

    return validate_args(flag)


def test_bad_arguments_name_the_argument():
    lg = np.zeros((2, 3))
    m = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match="mask, indices: give exactly one"):
        D.MaskedCategorical(logits=lg)
    with pytest.raises(ValueError, match="mask, indices: give exactly one"):
        D.MaskedCategorical(logits=lg, mask=m, indices=np.zeros((2, 1), np.int64))
    with pytest.raises(ValueError, match="logits, probs"):
        D.MaskedCategorical(mask=m)
    with pytest.raises(TypeError, match="mask: expected a boolean"):
        D.MaskedCategorical(logits=lg, mask=m.astype(np.int64))
    with pytest.raises(ValueError, match="mask: expected a shape broadcastable"):
        D.MaskedCategorical(logits=lg, mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="mask: expected a shape broadcastable"):
        D.MaskedCategorical(logits=lg[0], mask=m)
    with pytest.raises(ValueError, match="indices: expected shape"):
        D.MaskedCategorical(logits=lg, indices=np.zeros((3, 1), np.int64))
    with pytest.raises(TypeError, match="indices"):
        D.MaskedCategorical(logits=lg, indices=np.zeros((2, 1)))
    with pytest.raises(IndexRangeError, match="indices"):
        D.MaskedCategorical(logits=lg, indices=np.array([[0, 3], [1, 2]]))
    for bad in (float("nan"), float("inf"), "x", True):
        with pytest.raises(ValueError, match="neg_inf"):
            D.MaskedCategorical(logits=lg, mask=m, neg_inf=bad)
    with pytest.raises(ValueError, match="padding_side"):
        D.MaskedCategorical(logits=lg, mask=m, padding_side="top")
    with pytest.raises(TypeError, match="padding_value"):
        D.MaskedCategorical(logits=lg, indices=np.zeros((2, 1), np.int64), padding_value=1.5)
    with pytest.raises(TypeError, match="logits"):
        D.MaskedCategorical(logits=np.zeros((2, 3), np.int64), mask=m)
    with pytest.raises(TypeError, match="value"):
        D.MaskedCategorical(logits=lg, mask=m).log_prob(np.zeros(2))
    with pytest.raises(ValueError, match="value: expected shape"):
        D.MaskedCategorical(logits=lg, mask=m).log_prob(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="sparse"):
        D.MaskedCategorical(logits=lg, indices=np.zeros((2, 1), np.int64)).mask
    d = D.MaskedCategorical(logits=lg, mask=m, padding_side="right")
    assert d.padding_side == "right" and d.padding_value == 0 and d.mask is m and d.num_samples == 3
    assert "MaskedCategorical" in D.__all__ and isinstance(d, D.Categorical)


# ------------------------------------------------------------------------------------------------ sampling
def test_samples_follow_the_masked_probabilities_and_never_a_masked_action():
    _, logits, mask = _case(seed=2)
    d = D.MaskedCategorical(logits=logits, mask=mask)
    n = 40000
    s = d.sample(Generator(0), (n,))
    assert s.shape == (n, 5) and s.dtype == np.int64
    assert np.all(np.take_along_axis(mask, s.T, axis=-1))
    freq = np.stack([np.bincount(s[:, r], minlength=6) / n for r in range(5)])
    np.testing.assert_allclose(freq, d.probs, atol=4 * math.sqrt(0.25 / n))
    # inverse CDF by hand: u in [cdf_{i-1}, cdf_i) -> i
    u = np.random.default_rng(0).uniform(size=(7, 5))
    cdf = np.cumsum(d.probs, -1)
    hand = np.array([[np.searchsorted(cdf[r], u[k, r], side="right") for r in range(5)] for k in range(7)])
    np.testing.assert_array_equal(d.sample(noise=u), np.minimum(hand, 5))
    s2, lp = d.sample_and_log_prob(noise=u)
    np.testing.assert_array_equal(s2, d.sample(noise=u))
    np.testing.assert_allclose(lp, d.log_prob(s2), rtol=0, atol=0)


def test_round_off_past_the_last_cumulative_probability_returns_the_last_allowed_action():
    logits = np.log(np.array([[0.3, 0.7, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]]))
    mask = np.array([[True, True, False, False], [False, True, True, False]])
    d = D.MaskedCategorical(logits=logits, mask=mask)
    u = np.array([np.nextafter(1.0, 0.0)] * 2)
    np.testing.assert_array_equal(d.sample(noise=np.array([1.0, 1.0])), [1, 2])  # u == 1: past every cdf
    np.testing.assert_array_equal(d.sample(noise=u), [1, 2])
    # Categorical would clip to the last class (a masked one here)
    assert D.Categorical(logits=np.where(mask, logits, -1e30)).sample(noise=np.array([1.0, 1.0]))[0] == 3
    np.testing.assert_array_equal(d.mode, [1, 2])


def test_taped_noise_is_accepted_by_categorical_sampling():
    """Bug fix: _sample_index stops the gradient of the uniform noise (a taped Tensor raised before)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3))
    u = rng.uniform(size=(2, 4))
    ref = D.Categorical(logits=logits).sample(noise=u)
    np.testing.assert_array_equal(D.Categorical(logits=logits).sample(noise=Tensor(u)), ref)
    np.testing.assert_array_equal(D.OneHotCategorical(logits=logits).sample(noise=Tensor(u)).argmax(-1), ref)
    mask = np.ones((4, 3), bool)
    np.testing.assert_array_equal(D.MaskedCategorical(logits=logits, mask=mask).sample(noise=Tensor(u)), ref)

    def f(lg, noise):  # noise on the tape next to the logits: the sample is a constant, the score differentiable
        c = D.Categorical(logits=lg)
        s = c.sample(noise=noise)
        return namespace_of(lg).sum(c.log_prob(s))

    val, (g_lg, g_u) = value_and_grad(f, argnums=(0, 1))(logits, u)
    assert np.all(g_u == 0) and np.all(np.isfinite(g_lg))


# ------------------------------------------------------------------------------------------------ backends
def test_every_backend_matches_numpy(xp):
    rng, logits, mask = _case()
    value = _allowed_actions(rng, mask, (2,))
    u = rng.uniform(size=(3, 5))
    idx = np.array([[4, -1, -1], [0, 5, 2], [1, 3, -1], [2, 0, 1], [5, -1, 3]])
    ref = D.MaskedCategorical(logits=logits, mask=mask)
    d = D.MaskedCategorical(logits=xp.from_numpy(logits), mask=xp.from_numpy(mask))
    tol = dict(rtol=xp.rtol, atol=xp.atol)
    np.testing.assert_allclose(xp.to_numpy(d.log_prob(xp.from_numpy(value))), ref.log_prob(value), **tol)
    np.testing.assert_allclose(xp.to_numpy(d.entropy()), ref.entropy(), **tol)
    np.testing.assert_array_equal(xp.to_numpy(d.sample(noise=xp.from_numpy(u))), ref.sample(noise=u))
    np.testing.assert_array_equal(xp.to_numpy(d.mode), ref.mode)
    assert d.entropy().dtype == xp.float_dtype
    sref = D.MaskedCategorical(logits=logits, indices=idx, padding_value=-1)
    s = D.MaskedCategorical(logits=xp.from_numpy(logits), indices=xp.from_numpy(idx), padding_value=-1)
    np.testing.assert_array_equal(xp.to_numpy(s.sample(noise=xp.from_numpy(u))), sref.sample(noise=u))
    picked = sref.mode
    np.testing.assert_allclose(xp.to_numpy(s.log_prob(xp.from_numpy(picked))), sref.log_prob(picked), **tol)
    np.testing.assert_allclose(xp.to_numpy(s.entropy()), sref.entropy(), **tol)
    np.testing.assert_array_equal(xp.to_numpy(s.mode), sref.mode)
    with pytest.raises(ValueError, match="masked out"):
        D.MaskedCategorical(logits=xp.from_numpy(logits), mask=xp.from_numpy(mask),
                            validate_args=True).log_prob(xp.from_numpy(np.zeros((5,), np.int64)))


def test_float32_in_float32_out():
    _, logits, mask = _case()
    d = D.MaskedCategorical(logits=logits.astype(np.float32), mask=mask)
    for x in (d.logits, d.probs, d.entropy(), d.log_prob(d.mode)):
        assert x.dtype == np.float32
    assert np.all(np.isfinite(d.logits))
    _, g = value_and_grad(lambda lg: namespace_of(lg).sum(D.MaskedCategorical(logits=lg, mask=mask).entropy()))(
        logits.astype(np.float32))
    assert g.dtype == np.float32 and np.all(np.isfinite(g))
