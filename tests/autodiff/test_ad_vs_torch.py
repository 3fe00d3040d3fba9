"""Composite functions: arrayrl's tape vs torch.autograd on the same float64 inputs (1e-10)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from arrayrl import namespace_of, ops
from arrayrl.autodiff import stop_gradient, value_and_grad

torch = pytest.importorskip("torch")
F = torch.nn.functional
TOL = dict(rtol=1e-10, atol=1e-10)


def _t(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64 if np.asarray(a).dtype.kind == "f" else torch.int64, requires_grad=grad)


def _compare(f_np, f_torch, params, *consts):
    v, g = value_and_grad(f_np)(params, *consts)
    tp = {k: _t(a, True) for k, a in params.items()}
    tv = f_torch(tp, *[_t(c) for c in consts])
    tv.backward()
    np.testing.assert_allclose(np.asarray(v), tv.detach().numpy(), **TOL)
    for k in params:
        want = np.zeros_like(params[k]) if tp[k].grad is None else tp[k].grad.numpy()  # None: unused by torch
        np.testing.assert_allclose(g[k], want, err_msg=k, **TOL)


def _mlp_params(rng, sizes):
    p = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        p[f"w{i}"] = rng.normal(size=(a, b)) / np.sqrt(a)
        p[f"b{i}"] = rng.normal(size=(b,)) * 0.1
    return p


def mlp_np(p, x, n):
    xp = namespace_of(p["w0"], x)
    h = x
    for i in range(n):
        h = xp.matmul(h, p[f"w{i}"]) + p[f"b{i}"]
        if i < n - 1:
            h = xp.tanh(h) if i % 2 == 0 else ops.relu(h)
    return h


def mlp_torch(p, x, n):
    h = x
    for i in range(n):
        h = h @ p[f"w{i}"] + p[f"b{i}"]
        if i < n - 1:
            h = torch.tanh(h) if i % 2 == 0 else torch.relu(h)
    return h


@given(seed=st.integers(0, 2**16), batch=st.integers(1, 9))
def test_mlp_tanh_relu(seed, batch):
    rng = np.random.default_rng(seed)
    p = _mlp_params(rng, [3, 8, 7, 2])
    x = rng.normal(size=(batch, 3))
    _compare(
        lambda p, x: namespace_of(p["w0"], x).mean(mlp_np(p, x, 3) ** 2),
        lambda p, x: (mlp_torch(p, x, 3) ** 2).mean(),
        p,
        x,
    )


@given(seed=st.integers(0, 2**16), axis=st.sampled_from([0, 1, -1]), keepdims=st.booleans())
def test_logsumexp_log_softmax_softmax(seed, axis, keepdims):
    rng = np.random.default_rng(seed)
    p = {"x": rng.normal(size=(4, 5)) * 3.0}
    w = rng.normal(size=(4, 5))
    wl = w.sum(axis=axis, keepdims=keepdims)

    def f_np(p):
        xp = namespace_of(p["x"])
        return (
            xp.sum(ops.logsumexp(p["x"], axis=axis, keepdims=keepdims) * wl)
            + xp.sum(ops.log_softmax(p["x"], axis=axis) * w)
            + xp.sum(ops.softmax(p["x"], axis=axis) * w)
            + ops.logsumexp(p["x"])
        )

    def f_t(p):
        x = p["x"]
        return (
            (torch.logsumexp(x, dim=axis, keepdim=keepdims) * torch.tensor(wl)).sum()
            + (F.log_softmax(x, dim=axis) * torch.tensor(w)).sum()
            + (F.softmax(x, dim=axis) * torch.tensor(w)).sum()
            + torch.logsumexp(x.reshape(-1), dim=0)
        )

    _compare(f_np, f_t, p)


@pytest.mark.parametrize("detach_target", [True, False])
@given(seed=st.integers(0, 2**16))
def test_huber_td_loss_with_gather_and_max(detach_target, seed):
    rng = np.random.default_rng(seed)
    B, A = 7, 3
    p = _mlp_params(rng, [4, 6, A])
    obs, next_obs = rng.normal(size=(B, 4)), rng.normal(size=(B, 4))
    action = rng.integers(0, A, size=(B, 1))
    reward = rng.normal(size=(B, 1))
    done = (rng.random(size=(B, 1)) < 0.3).astype(np.float64)
    gamma = 0.9

    def f_np(p, obs, next_obs, action, reward, done):
        xp = namespace_of(p["w0"], obs)
        q_sa = xp.take_along_axis(mlp_np(p, obs, 2), action, axis=-1)
        next_q = xp.max(mlp_np(p, next_obs, 2), axis=-1, keepdims=True)
        if detach_target:
            next_q = stop_gradient(next_q)
        target = reward + gamma * (1.0 - done) * next_q
        return xp.mean(ops.smooth_l1(q_sa - target))

    def f_t(p, obs, next_obs, action, reward, done):
        q_sa = mlp_torch(p, obs, 2).gather(-1, action)
        next_q = mlp_torch(p, next_obs, 2).max(dim=-1, keepdim=True).values
        if detach_target:
            next_q = next_q.detach()
        target = reward + gamma * (1.0 - done) * next_q
        return F.smooth_l1_loss(q_sa, target)

    _compare(f_np, f_t, p, obs, next_obs, action, reward, done)


def _scan_torch(x, c):
    ys = [x[..., -1]]
    for t in range(x.shape[-1] - 2, -1, -1):
        ys.append(x[..., t] + c[..., t] * ys[-1])
    return torch.stack(ys[::-1], dim=-1)


@given(seed=st.integers(0, 2**16), T=st.integers(1, 7), axis=st.sampled_from([0, 1, -1]))
def test_reverse_discounted_scan(seed, T, axis):
    rng = np.random.default_rng(seed)
    shape = [3, 3]
    shape[axis] = T
    p = {"x": rng.normal(size=shape), "c": rng.uniform(0, 1, size=shape)}
    w = rng.normal(size=shape)

    def f_np(p):
        return namespace_of(p["x"]).sum(ops.reverse_discounted_scan(p["x"], p["c"], axis=axis) * w)

    def f_t(p):
        x, c = torch.movedim(p["x"], axis, -1), torch.movedim(p["c"], axis, -1)
        return (torch.movedim(_scan_torch(x, c), -1, axis) * torch.tensor(w)).sum()

    _compare(f_np, f_t, p)


@given(seed=st.integers(0, 2**16))
def test_activations_and_smooth_l1(seed):
    rng = np.random.default_rng(seed)
    p = {"x": rng.normal(size=(5, 4)) * 3.0}
    w = rng.normal(size=(5, 4))
    acts = [
        (ops.sigmoid, torch.sigmoid),
        (ops.relu, torch.relu),
        (lambda x: ops.elu(x, 0.5), lambda x: F.elu(x, 0.5)),
        (lambda x: ops.leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2)),
        (ops.silu, F.silu),
        (ops.softplus, lambda x: torch.log1p(torch.exp(x))),
        (lambda x: ops.softplus(x, beta=2.0, threshold=1.0), lambda x: F.softplus(x, beta=2.0, threshold=1.0)),
        (lambda x: ops.smooth_l1(x, beta=0.5), lambda x: F.smooth_l1_loss(x, torch.zeros_like(x), beta=0.5, reduction="none")),
    ]
    for a_np, a_t in acts:
        _compare(
            lambda p: namespace_of(p["x"]).sum(a_np(p["x"]) * w),
            lambda p: (a_t(p["x"]) * torch.tensor(w)).sum(),
            p,
        )
