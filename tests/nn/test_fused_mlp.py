"""The fused MLP node (:func:`arrayrl.ops.mlp`) and the lean raw path of :func:`arrayrl.ops.linear`.

* an MLP whose activations are all fusable records ONE tape node on NumPy, with values and gradients (parameters
  and input) equal to the per-layer path (one ``linear`` node per layer, the generic path) to rounding, for depths
  1-4, relu/tanh, several batch shapes, float32/float64, plain and ensemble trees (shared and stacked inputs);
* gradients agree with torch autograd on a TorchRL-layout ``nn.Sequential`` (float64);
* second order (Hessian-vector products, a gradient penalty) through the fused node equals the per-layer path;
* other backends keep the per-layer path; a non-fusable activation keeps it too;
* the lean raw ``ops.linear`` equals the generic kernel, float32 in -> float32 out.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arrayrl import _kernels, namespace_of, nn, ops
from arrayrl.autodiff import Tensor, grad, hvp, value_and_grad
from arrayrl.random import Generator


def _mlp(depth, act, dtype, seed=0, activate_last_layer=False, n_in=5, n_out=3, bias_last_layer=True):
    return nn.MLP(n_in, n_out, num_cells=[7 + i for i in range(depth)], activation_class=act,
                  activate_last_layer=activate_last_layer, bias_last_layer=bias_last_layer,
                  generator=Generator(seed), dtype=dtype)


def _per_layer(module):
    """The same module forced onto the per-layer path (one ops.linear node per layer)."""
    module._stack_acts = None
    return module


def _loss_and_grads(module, x, c, apply=None):
    apply = apply or module.apply
    seen = {}

    def f(params, x):
        y = apply(params, x)
        seen["y"] = y
        return _sum(y * c)

    value, grads = value_and_grad(f, argnums=(0, 1))(module.params, x)
    return value, grads, seen["y"]


def _sum(a):
    return namespace_of(a).sum(a)


def _node_name(y):
    """The primitive that made ``y`` (looking through the batch-restoring reshape)."""
    if not (isinstance(y, Tensor) and y._parents):
        return None
    while y._entry.name == "reshape":
        y = y._parents[0][1]
    return y._entry.name


def _close(a, b, dtype):
    rtol, atol = (2e-5, 2e-6) if dtype == np.float32 else (1e-12, 1e-13)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _tree_close(a, b, dtype):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _tree_close(a[k], b[k], dtype)
    else:
        assert a.dtype == b.dtype == dtype
        _close(a, b, dtype)


@pytest.mark.parametrize("depth", [0, 1, 2, 3])  # 1-4 linear layers
@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [(6,), (2, 3), ()])
@pytest.mark.parametrize("activate_last_layer", [False, True])
def test_fused_equals_per_layer(depth, act, dtype, batch, activate_last_layer):
    rng = np.random.default_rng(depth + 10 * len(batch))
    fused = _mlp(depth, act, dtype, activate_last_layer=activate_last_layer)
    plain = _per_layer(_mlp(depth, act, dtype, activate_last_layer=activate_last_layer))
    x = rng.standard_normal(batch + (5,)).astype(dtype)
    c = rng.standard_normal(batch + (3,)).astype(dtype)
    v1, (gp1, gx1), y1 = _loss_and_grads(fused, x, c)
    v2, (gp2, gx2), y2 = _loss_and_grads(plain, x, c)
    assert _node_name(y1) == "mlp" and _node_name(y2) == "linear"
    assert y1.value.dtype == dtype and v1.dtype == dtype
    _close(v1, v2, dtype)
    _tree_close(gp1, gp2, dtype)
    assert gx1.shape == x.shape and gx1.dtype == dtype
    _close(gx1, gx2, dtype)
    np.testing.assert_array_equal(fused(x), plain(x))  # raw path: the same kernels


def test_constant_input_and_no_bias_last_layer():
    """``x`` not differentiated (a constant input) and a last layer without bias: parameter gradients unchanged."""
    rng = np.random.default_rng(3)
    fused, plain = _mlp(2, "relu", np.float64, bias_last_layer=False), _per_layer(_mlp(2, "relu", np.float64,
                                                                                     bias_last_layer=False))
    x, c = rng.standard_normal((9, 5)), rng.standard_normal((9, 3))
    g1 = grad(lambda p: _sum(fused.apply(p, x) * c))(fused.params)
    g2 = grad(lambda p: _sum(plain.apply(p, x) * c))(plain.params)
    assert "bias" not in g1["4"]
    _tree_close(g1, g2, np.float64)


@pytest.mark.parametrize("stacked_input", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ensemble_fused_equals_per_layer(stacked_input, dtype):
    rng = np.random.default_rng(4)
    fused = nn.Ensemble(_mlp(2, "tanh", dtype), 3, generator=Generator(1))
    plain = nn.Ensemble(_per_layer(_mlp(2, "tanh", dtype)), 3, generator=Generator(1))
    x = rng.standard_normal(((3,) if stacked_input else ()) + (4, 5)).astype(dtype)
    c = rng.standard_normal((3, 4, 3)).astype(dtype)

    def run(m):
        return _loss_and_grads(m, x, c, apply=lambda p, x: m.apply(p, x, stacked_input=stacked_input))

    v1, (gp1, gx1), y1 = run(fused)
    v2, (gp2, gx2), y2 = run(plain)
    assert _node_name(y1) == "mlp" and _node_name(y2) == "linear"
    _close(v1, v2, dtype)
    _tree_close(gp1, gp2, dtype)
    assert gx1.shape == x.shape
    _close(gx1, gx2, dtype)


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("activate_last_layer", [False, True])
def test_gradients_match_torch_autograd(act, activate_last_layer):
    rng = np.random.default_rng(5)
    m = _mlp(2, act, np.float64, activate_last_layer=activate_last_layer)
    sizes = [5, 7, 8, 3]
    layers = []
    for i in range(3):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1], dtype=torch.float64))
        if i < 2 or activate_last_layer:
            layers.append(torch.nn.ReLU() if act == "relu" else torch.nn.Tanh())
    seq = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for key, p in m.params.items():
            seq[int(key)].weight.copy_(torch.from_numpy(p["weight"]))
            seq[int(key)].bias.copy_(torch.from_numpy(p["bias"]))
    x, c = rng.standard_normal((11, 5)), rng.standard_normal((11, 3))
    value, (gp, gx), y = _loss_and_grads(m, x, c)
    assert _node_name(y) == "mlp"
    xt = torch.from_numpy(x).requires_grad_(True)
    loss = (seq(xt) * torch.from_numpy(c)).sum()
    loss.backward()
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-11, atol=1e-13)
    for key in m.params:
        np.testing.assert_allclose(gp[key]["weight"], seq[int(key)].weight.grad.numpy(), rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(gp[key]["bias"], seq[int(key)].bias.grad.numpy(), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_second_order_equals_per_layer(act):
    """Hessian-vector products in the parameters and a gradient penalty (``|d y / d x|^2`` differentiated in the
    parameters): the fused node's taped rule equals the per-layer path, and the HVP equals finite differences."""
    rng = np.random.default_rng(6)
    fused, plain = _mlp(2, act, np.float64), _per_layer(_mlp(2, act, np.float64))
    x, c = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    v = {k: {n: rng.standard_normal(a.shape) for n, a in layer.items()} for k, layer in fused.params.items()}

    def loss(m):
        return lambda p: _sum(m.apply(p, x) * c) ** 2 if act == "relu" else _sum(m.apply(p, x) * c)

    h1, h2 = hvp(loss(fused), fused.params, v), hvp(loss(plain), plain.params, v)
    _tree_close(h1, h2, np.float64)
    eps = 1e-6
    shifted = {s: {k: {n: a + s * eps * v[k][n] for n, a in layer.items()} for k, layer in fused.params.items()}
               for s in (1, -1)}
    g_plus, g_minus = grad(loss(fused))(shifted[1]), grad(loss(fused))(shifted[-1])
    for k in h1:
        for n in h1[k]:
            np.testing.assert_allclose(h1[k][n], (g_plus[k][n] - g_minus[k][n]) / (2 * eps), rtol=1e-5, atol=1e-6)

    def penalty(m):
        def f(p):
            gx = grad(lambda xx: _sum(m.apply(p, xx) * c))(x)
            return _sum(gx * gx)
        return f

    gp1, gp2 = grad(penalty(fused))(fused.params), grad(penalty(plain))(plain.params)
    _tree_close(gp1, gp2, np.float64)
    assert any(np.abs(a).max() > 0 for layer in gp1.values() for a in layer.values())


def test_other_backend_keeps_the_per_layer_path():
    xps = pytest.importorskip("array_api_strict")
    m = _mlp(1, "relu", np.float64)
    params = {k: {n: xps.asarray(a) for n, a in layer.items()} for k, layer in m.params.items()}
    x = xps.asarray(np.random.default_rng(7).standard_normal((3, 5)))
    seen = {}

    def f(p):
        y = m.apply(p, x)
        seen["y"] = y
        return _sum(y)

    value, g = value_and_grad(f)(params)
    assert _node_name(seen["y"]) == "linear"
    ref = grad(lambda p: _sum(m.apply(p, np.asarray(x))))(m.params)
    np.testing.assert_allclose(np.asarray(g["2"]["weight"]), ref["2"]["weight"], rtol=1e-12)


def test_non_fusable_activation_keeps_the_per_layer_path():
    m = _mlp(1, "elu", np.float64)
    assert m._stack_acts is None
    seen = {}
    grad(lambda p: seen.setdefault("y", m.apply(p, np.ones((2, 5)))).__array_namespace__().sum(seen["y"]))(m.params)
    assert _node_name(seen["y"]) == "linear"


def test_mlp_bad_activations():
    w = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"activations: expected one per layer \(1\), got 2"):
        ops.mlp(np.ones((1, 3)), [(w, None)], ["relu", None])
    with pytest.raises(ValueError, match=r"activations: expected entries in .*got 'elu'"):
        ops.mlp(np.ones((1, 3)), [(w, None)], ["elu"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
@pytest.mark.parametrize("rows", [1, 3])
def test_lean_linear_equals_generic_kernel(dtype, activation, rows):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((rows, 6)).astype(dtype)
    w = rng.standard_normal((4, 6)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    assert ops._is_lean(x, w, b)
    for bias in (b, None):
        y = ops.linear(x, w, bias, activation)
        ref = _kernels._linear_generic(x, w, bias, activation)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, ref)
    x[0, 0] = np.nan  # NaN propagates through relu as in the generic kernel
    np.testing.assert_array_equal(ops.linear(x, w, b, activation), _kernels._linear_generic(x, w, b, activation))


def test_lean_linear_leaves_mixed_dtypes_and_bad_activation_to_the_checked_path():
    x, w = np.ones((1, 3), np.float64), np.ones((2, 3), np.float32)
    assert not ops._is_lean(x, w, None)
    assert ops.linear(x, w, np.ones(2, np.float32)).dtype == np.float64  # promoted as the generic kernel does
    with pytest.raises(ValueError, match="activation: expected one of"):
        ops.linear(np.ones((1, 3), np.float32), w, None, "elu")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_policy_switch_equals_per_product_policy(dtype):
    """The stack under one BLAS-policy switch (default) equals the stack with the policy off (each layer as raw
    ``linear``, no switch), forward and backward; the policy is restored afterwards."""
    from arrayrl.autodiff.tuning import blas_policy, set_blas_policy

    rng = np.random.default_rng(9)
    m = _mlp(2, "relu", dtype)
    x, c = rng.standard_normal((300, 5)).astype(dtype), rng.standard_normal((300, 3)).astype(dtype)
    on = _loss_and_grads(m, x, c)
    before = blas_policy()
    set_blas_policy("off")
    try:
        off = _loss_and_grads(m, x, c)
    finally:
        set_blas_policy(before[0], serial_below=before[1])
    assert blas_policy() == before
    _close(on[0], off[0], dtype)
    _tree_close(on[1][0], off[1][0], dtype)
    _close(on[1][1], off[1][1], dtype)


def test_no_input_cotangent_for_a_constant_input(monkeypatch):
    """The fused rule asks the first layer for ``gx`` only when the input is differentiated."""
    m = _mlp(2, "relu", np.float64)
    x = np.random.default_rng(10).standard_normal((4, 5))
    seen = []
    real = ops._linear_vjp
    monkeypatch.setattr(ops, "_linear_vjp", lambda xp, g, ans, needs, *a: seen.append(needs) or real(xp, g, ans,
                                                                                                        needs, *a))
    grad(lambda p: _sum(m.apply(p, x)))(m.params)
    assert seen == [(0, 1, 2), (0, 1, 2), (1, 2)]  # last layer first; the first layer: no (0,)
    seen.clear()
    grad(lambda xx: _sum(m.apply(m.params, xx)))(x)
    assert seen == [(0,), (0,), (0,)]  # only the input: no weight or bias products


def test_stack_work_counts_rows_as_linear_does():
    """The BLAS policy's work of a stack is its largest product, rows counted as ``_linear_raw`` counts them:
    all rows of a [B, T, in] input with plain weights (B*T), a member's rows for an ensemble on a stacked input."""
    from arrayrl import ops

    x3 = np.ones((4, 5, 3), np.float32)
    w, w2 = np.ones((2, 3), np.float32), np.ones((7, 2), np.float32)
    assert ops._stack_work(x3, (w, None, w2, None)) == 4 * 5 * 7 * 2  # hand count: 20 rows x the 7x2 matrix
    we = np.ones((4, 2, 3), np.float32)
    assert ops._stack_work(x3, (we, None)) == 5 * 2 * 3  # one [5, 3] @ [3, 2] product per member
    assert ops._stack_work(np.ones((6, 3), np.float32), (we, None)) == 6 * 2 * 3  # shared input
