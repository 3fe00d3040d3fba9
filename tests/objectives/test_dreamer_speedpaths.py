"""The fast paths of the DreamerV3 imagination (issue 13): each one against the composition it replaces (written
here with the tape's generic ops), finite differences, or the loss it sits in."""

from __future__ import annotations

import numpy as np

from arrayrl.autodiff import check_grads, value_and_grad
from arrayrl._backend import namespace_of
from arrayrl.nn.recurrent import gru_gates


def _sum(x):
    return namespace_of(x).sum(x)


def _gru_gates_unfused(gi, gh, hx):
    """torch.nn.GRUCell's gates from its two projections, op by op (the docs' formula, float64)."""
    xp = np
    h = hx.shape[-1]
    r = 1.0 / (1.0 + xp.exp(-(gi[:, :h] + gh[:, :h])))
    z = 1.0 / (1.0 + xp.exp(-(gi[:, h:2 * h] + gh[:, h:2 * h])))
    n = xp.tanh(gi[:, 2 * h:] + r * gh[:, 2 * h:])
    return (1.0 - z) * n + z * hx


def _gru_inputs(m=5, h=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, 3 * h)), rng.normal(size=(m, 3 * h)), rng.normal(size=(m, h))


def test_gru_gates_forward_and_vjp_vs_formula_and_finite_differences():
    """One taped node for the GRU's gates: the value is torch's formula; the joint VJP (contiguous ``[M, 3H]``
    cotangents of ``gi``, ``gh`` and ``dh``) matches finite differences and the VJP of the op-by-op composition
    with a random covector; float32 in, float32 out."""
    gi, gh, hx = _gru_inputs()
    np.testing.assert_allclose(gru_gates(gi, gh, hx), _gru_gates_unfused(gi, gh, hx), rtol=1e-12, atol=1e-14)
    check_grads(lambda a, b, c: gru_gates(a, b, c), (gi, gh, hx))
    v = np.random.default_rng(1).normal(size=hx.shape)
    _, ours = value_and_grad(lambda a, b, c: _sum(gru_gates(a, b, c) * v), argnums=(0, 1, 2))(gi, gh, hx)
    eps = 1e-6
    for i, x in enumerate((gi, gh, hx)):
        fd = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            args = [gi.copy(), gh.copy(), hx.copy()]
            args[i][idx] += eps
            up = (_gru_gates_unfused(*args) * v).sum()
            args[i][idx] -= 2 * eps
            fd[idx] = (up - (_gru_gates_unfused(*args) * v).sum()) / (2 * eps)
        np.testing.assert_allclose(ours[i], fd, rtol=1e-6, atol=1e-8, err_msg=f"argument {i}")
    f32 = [a.astype(np.float32) for a in (gi, gh, hx)]
    assert gru_gates(*f32).dtype == np.float32
    _, g32 = value_and_grad(lambda a, b, c: _sum(gru_gates(a, b, c)), argnums=(0, 1, 2))(*f32)
    assert all(g.dtype == np.float32 for g in g32)


def test_gru_gates_second_order():
    """The joint rule is written against ``xp``: a Hessian-vector product through it equals finite differences of
    the gradient."""
    from arrayrl.autodiff import grad

    gi, gh, hx = _gru_inputs(m=3, h=2, seed=2)
    g = grad(lambda a: _sum(gru_gates(a, gh, hx) ** 2))
    check_grads(lambda a: g(a), (gi,))


def test_gru_gates_bad_shapes_name_the_arguments():
    import pytest

    gi, gh, hx = _gru_inputs()
    with pytest.raises(ValueError, match=r"gi, gh: expected shape \(5, 12\).*got \(5, 9\)"):
        gru_gates(gi[:, :9], gh, hx)
    with pytest.raises(ValueError, match="gi, gh"):
        gru_gates(gi, gh[:4], hx)
