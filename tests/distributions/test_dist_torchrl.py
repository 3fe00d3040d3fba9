"""arrayrl.distributions against torch.distributions / torchrl.modules.distributions in float64: values to 1e-10 and
gradients through the tape against torch.autograd."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl.distributions as D
from arrayrl import namespace_of
from arrayrl.autodiff import value_and_grad

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TOL = dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(autouse=True)
def _float64_default():
    """TorchRL turns Python-float bounds into tensors of torch's default dtype (float32 unless changed); arrayrl uses
    the parameters' dtype. Compare in float64 throughout."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def tdist():
    import torchrl.modules.distributions as T

    return T


def t(x, grad=False):
    return torch.tensor(np.asarray(x), dtype=torch.float64 if np.asarray(x).dtype.kind == "f" else None,
                        requires_grad=grad)


def close(a, b, **kw):
    np.testing.assert_allclose(np.asarray(a), b.detach().numpy() if hasattr(b, "detach") else b, **(kw or TOL))


def _data(shape=(5, 3), seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=shape) * spread
    scale = np.exp(rng.normal(size=shape) * 0.5)
    return rng, loc, scale


TANH_CASES = [
    dict(),
    dict(low=-2.0, high=3.0),
    dict(tanh_loc=True),
    dict(low=0.0, high=2.0, tanh_loc=True),
    dict(event_dims=0),
    dict(event_dims=2),
    dict(safe_tanh=False),
    dict(upscale=2.0, tanh_loc=True, low=-0.5, high=4.0),
]


@pytest.mark.parametrize("kw", TANH_CASES, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_tanh_normal_values(tdist, kw):
    rng, loc, scale = _data()
    low, high = kw.get("low", -1.0), kw.get("high", 1.0)
    u = rng.uniform(0.01, 0.99, size=loc.shape)
    if kw.get("safe_tanh", True):
        u[0, 0], u[1, 1] = 1.0, 0.0  # actions exactly at the bounds
    action = low + (high - low) * u
    td = tdist.TanhNormal(t(loc), t(scale), **kw)
    ad = D.TanhNormal(loc, scale, torchrl_compat=True, **kw)
    close(ad.log_prob(action), td.log_prob(t(action)), rtol=1e-10, atol=1e-9)
    close(ad.deterministic_sample, td.deterministic_sample)
    assert ad.batch_shape == tuple(td.batch_shape) and ad.event_shape == tuple(td.event_shape)
    # rsample_and_log_prob with torch's own draw replayed as noise
    torch.manual_seed(1)
    act_t, lp_t = td.rsample_and_log_prob((4,))
    torch.manual_seed(1)
    noise = torch.randn((4,) + loc.shape, dtype=torch.float64).numpy()
    act_a, lp_a = ad.rsample_and_log_prob(noise=noise)
    close(act_a, act_t)
    close(lp_a, lp_t, rtol=1e-10, atol=1e-9)


def test_tanh_normal_gradients(tdist):
    """d/d(loc, scale) of rsample + its pre-tanh log-prob + log_prob(given action), |u| up to ~20."""
    rng, loc, scale = _data(spread=2.0)
    noise = rng.normal(size=(4,) + loc.shape) * 4.0
    action = np.tanh(rng.normal(size=loc.shape)) * 2.5 + 0.5
    action[0, 0] = 3.0

    def f(p):
        d = D.TanhNormal(p["loc"], p["scale"], low=-2.0, high=3.0, tanh_loc=True, torchrl_compat=True)
        a, lp = d.rsample_and_log_prob(noise=noise)
        xp = namespace_of(a)
        return xp.sum(lp) + xp.sum(a * a) + xp.sum(d.log_prob(action)) + xp.sum(d.deterministic_sample)

    val, g = value_and_grad(f)({"loc": loc, "scale": scale})
    tl, ts = t(loc, True), t(scale, True)
    d = tdist.TanhNormal(tl, ts, low=-2.0, high=3.0, tanh_loc=True)
    base = d.base_dist
    u = base.mean + t(noise) * base.stddev
    tr = d.transforms[0]
    a = tr(u)
    lp = base.log_prob(u) - tr.log_abs_det_jacobian(u, a).sum(-1)
    tot = lp.sum() + (a * a).sum() + d.log_prob(t(action)).sum() + d.deterministic_sample.sum()
    tot.backward()
    np.testing.assert_allclose(float(val), tot.item(), rtol=1e-12)
    close(g["loc"], tl.grad, rtol=1e-10, atol=1e-9)
    close(g["scale"], ts.grad, rtol=1e-10, atol=1e-9)


def test_normal_family_values_and_gradients(tdist):
    rng, loc, scale = _data()
    value = loc + scale * rng.normal(size=loc.shape)
    noise = rng.normal(size=(2,) + loc.shape)

    def f(p):
        n = D.Normal(p["loc"], p["scale"])
        i = D.IndependentNormal(p["loc"], p["scale"])
        xp = namespace_of(p["loc"])
        return (xp.sum(n.log_prob(value)) + 2 * xp.sum(n.entropy()) + 3 * xp.sum(i.log_prob(value))
                + xp.sum(i.entropy()) + xp.sum(n.rsample(noise=noise) ** 2))

    val, g = value_and_grad(f)({"loc": loc, "scale": scale})
    tl, ts = t(loc, True), t(scale, True)
    n = torch.distributions.Normal(tl, ts)
    i = tdist.IndependentNormal(tl, ts)
    tot = (n.log_prob(t(value)).sum() + 2 * n.entropy().sum() + 3 * i.log_prob(t(value)).sum() + i.entropy().sum()
           + ((tl + t(noise) * ts) ** 2).sum())
    tot.backward()
    np.testing.assert_allclose(float(val), tot.item(), rtol=1e-12)
    close(g["loc"], tl.grad)
    close(g["scale"], ts.grad)
    close(D.IndependentNormal(loc, scale).log_prob(value), i.log_prob(t(value)))


def test_independent_normal_tanh_loc(tdist):
    """TorchRL ignores tanh_loc at construction (compat); arrayrl applies it by default."""
    _, loc, scale = _data(spread=8.0)
    td = tdist.IndependentNormal(t(loc), t(scale), tanh_loc=True)
    close(D.IndependentNormal(loc, scale, tanh_loc=True, torchrl_compat=True).mean, td.mean)
    close(D.IndependentNormal(loc, scale, tanh_loc=True).mean, 5.0 * np.tanh(loc / 5.0))
    assert np.abs(td.mean.numpy() - 5.0 * np.tanh(loc / 5.0)).max() > 0.1


@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (0.0, 2.0)])
def test_tanh_delta(tdist, bounds):
    rng, param, _ = _data(spread=1.0)
    low, high = bounds
    td = tdist.TanhDelta(t(param), low=low, high=high)
    ad = D.TanhDelta(param, low=low, high=high, torchrl_compat=True)
    close(ad.mode, td.mode, rtol=1e-10, atol=1e-14)
    close(ad.deterministic_sample, td.deterministic_sample, rtol=1e-10, atol=1e-14)
    close(ad.rsample(), td.rsample(), rtol=1e-10, atol=1e-14)
    at = td.mode
    lt = td.log_prob(at)
    la = ad.log_prob(at.numpy())
    assert np.array_equal(np.isinf(la), np.isinf(lt.numpy()))
    # arrayrl's default: no pre-tanh shift, param 0 maps to the centre of the box
    np.testing.assert_allclose(D.TanhDelta(np.zeros((2, 3)), low=low, high=high).mode, (low + high) / 2, atol=1e-15)

    def f(p):
        xp = namespace_of(p)
        return xp.sum(D.TanhDelta(p, low=low, high=high, torchrl_compat=True).rsample() ** 3)

    val, g = value_and_grad(f)(param)
    tp = t(param, True)
    (tdist.TanhDelta(tp, low=low, high=high).rsample() ** 3).sum().backward()
    close(g, tp.grad)


def test_categorical_values_and_gradients(tdist):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 5)) * 3
    logits[0, 0] = 1e4
    logits[1, :2] = -1e4
    index = rng.integers(0, 5, size=(2, 6))  # sample_shape (2,)
    one_hot = np.eye(5)[index[0]]

    def f(lg):
        c = D.Categorical(logits=lg)
        o = D.OneHotCategorical(logits=lg)
        xp = namespace_of(lg)
        return (xp.sum(c.log_prob(index)) + 2 * xp.sum(c.entropy()) + 3 * xp.sum(o.log_prob(one_hot))
                + xp.sum(o.rsample(noise=np.full((6,), 0.3)) * w))

    w = rng.normal(size=(6, 5))
    val, g = value_and_grad(f)(logits)
    tl = t(logits, True)
    c = torch.distributions.Categorical(logits=tl)
    o = tdist.OneHotCategorical(logits=tl)
    torch_rs = o.sample() * 0 + torch.nn.functional.one_hot(
        torch.as_tensor(D.Categorical(logits=logits).sample(noise=np.full((6,), 0.3))), 5)
    probs = o.probs
    rs = torch_rs + probs - probs.detach()
    tot = (c.log_prob(torch.as_tensor(index)).sum() + 2 * c.entropy().sum()
           + 3 * o.log_prob(t(one_hot)).sum() + (rs * t(w)).sum())
    tot.backward()
    np.testing.assert_allclose(float(val), tot.item(), rtol=1e-12)
    close(g, tl.grad)
    close(D.Categorical(logits=logits).log_prob(index), c.log_prob(torch.as_tensor(index)))
    close(D.Categorical(logits=logits).entropy(), c.entropy())
    close(D.OneHotCategorical(logits=logits).mode, o.mode, rtol=0, atol=0)
    assert D.OneHotCategorical(logits=logits).mode.dtype == np.int64
    probs = np.exp(logits[2:] - logits[2:].max(-1, keepdims=True))
    pc = torch.distributions.Categorical(probs=t(probs))
    close(D.Categorical(probs=probs).log_prob(index[:, 2:]), pc.log_prob(torch.as_tensor(index[:, 2:])))
    close(D.Categorical(probs=probs).entropy(), pc.entropy())


def test_delta_matches_torchrl(tdist):
    rng, param, _ = _data()
    value = param.copy()
    value[0] += 1e-7
    value[1, 0] += 1.0
    close(D.Delta(param).log_prob(value), tdist.Delta(t(param)).log_prob(t(value)), rtol=0, atol=0)


def test_tanh_log_abs_det_jacobian_matches_torch_exactly():
    """Including torch's softplus threshold (softplus(x) = x for x > 20), which matters for u < -10."""
    u = np.concatenate([np.linspace(-20, 20, 81), [-10.5, -10.01, -9.99, 1e-8, -1e-8]])
    ref = torch.distributions.transforms.TanhTransform().log_abs_det_jacobian(t(u), torch.tanh(t(u))).numpy()
    np.testing.assert_allclose(D.tanh_log_abs_det_jacobian(u), ref, rtol=1e-14, atol=1e-15)
