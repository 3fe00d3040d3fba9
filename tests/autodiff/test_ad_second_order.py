"""Second order on the tape: the backward walk recorded on the tape (``create_graph``, nested ``grad``, ``hvp``).

Evidence:

* every covered primitive: ``hvp`` (the gradient of ``<grad f, v>``, reverse over reverse) against central finite
  differences of the first derivative, ``(grad f(x + e v) - grad f(x - e v)) / 2e``, in float64. Each primitive is
  wrapped as ``f(x) = sum(c * (sin(op(x)) + 0.3 op(x)^2))`` so both its first derivative (``J^T diag J``) and its second derivative
  enter the Hessian, and every differentiable argument is perturbed;
* nested ``grad(grad(f))`` (and a third order) against closed forms;
* ``value_and_grad(create_graph=True)`` on a function closing over Tensors of an enclosing transformation (a
  gradient penalty), against finite differences and torch double backward;
* Hessian-vector products of an MLP loss against ``torch.autograd.functional.hvp`` on copied weights;
* the first-order walk is untouched (raw cotangents, raw results) and a raw-only rule fails with a clear error.
"""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import namespace_of, ops
from arrayrl.autodiff import Tensor, defvjp, grad, primitive, value_and_grad, vjp
from arrayrl.autodiff.api import hvp
from arrayrl.autodiff.core import SecondOrderError
from arrayrl.tree import tree_flatten, tree_unflatten

EPS = 1e-5
RTOL, ATOL = 2e-6, 2e-8


def _tmap(fn, *trees):
    leaves = [tree_flatten(t)[0] for t in trees]
    return tree_unflatten(tree_flatten(trees[0])[1], [fn(*xs) for xs in zip(*leaves)])


def _fd_hvp(f, x, v):
    g = grad(f)
    gp = g(_tmap(lambda a, b: a + EPS * b, x, v))
    gm = g(_tmap(lambda a, b: a - EPS * b, x, v))
    return _tmap(lambda a, b: (a - b) / (2 * EPS), gp, gm)


def _assert_tree_close(got, want, what=""):
    gl, wl = tree_flatten(got)[0], tree_flatten(want)[0]
    assert len(gl) == len(wl)
    for a, b in zip(gl, wl):
        assert type(a) is np.ndarray, (what, type(a))  # raw results at top level
        assert a.dtype == b.dtype and a.shape == b.shape, what
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=what)


def _check(op, x, seed=0):
    """hvp of ``sum(c * (sin(op(x)) + 0.3 op(x)^2))`` vs finite differences of its gradient, two random directions."""
    rng = np.random.default_rng(seed)
    out = op(x)
    c = rng.normal(size=np.shape(out))

    def f(t):
        y = op(t)
        xp = namespace_of(y)
        return xp.sum(c * (xp.sin(y) + 0.3 * y * y))

    for k in range(2):
        v = _tmap(lambda a: rng.normal(size=a.shape), x)
        got = hvp(f, x, v)
        want = _fd_hvp(f, x, v)
        _assert_tree_close(got, want, f"direction {k}")
        # the Hessian is not trivially zero along v (the test can fail)
        assert max(float(np.max(np.abs(w))) for w in tree_flatten(want)[0]) > 1e-3


R = np.random.default_rng(1)
A = R.normal(size=(3, 4))
B = R.normal(size=(3, 4))
P = R.uniform(0.5, 2.0, size=(3, 4))  # positive
U = R.uniform(-0.8, 0.8, size=(3, 4))  # in (-1, 1)


def _xp(t):
    return namespace_of(t)


UNARY = {
    "negative": (lambda t: -t, A),
    "positive": (lambda t: _xp(t).positive(t) * t, A),
    "abs": (lambda t: _xp(t).abs(t) * t, A),
    "square": (lambda t: _xp(t).square(t), A),
    "sqrt": (lambda t: _xp(t).sqrt(t), P),
    "exp": (lambda t: _xp(t).exp(t), A),
    "expm1": (lambda t: _xp(t).expm1(t), A),
    "log": (lambda t: _xp(t).log(t), P),
    "log1p": (lambda t: _xp(t).log1p(t), P),
    "log2": (lambda t: _xp(t).log2(t), P),
    "log10": (lambda t: _xp(t).log10(t), P),
    "tanh": (lambda t: _xp(t).tanh(t), A),
    "sin": (lambda t: _xp(t).sin(t), A),
    "cos": (lambda t: _xp(t).cos(t), A),
    "tan": (lambda t: _xp(t).tan(t), U),
    "sinh": (lambda t: _xp(t).sinh(t), A),
    "cosh": (lambda t: _xp(t).cosh(t), A),
    "asin": (lambda t: _xp(t).asin(t), U),
    "acos": (lambda t: _xp(t).acos(t), U),
    "atan": (lambda t: _xp(t).atan(t), A),
    "asinh": (lambda t: _xp(t).asinh(t), A),
    "acosh": (lambda t: _xp(t).acosh(t), P + 1.0),
    "atanh": (lambda t: _xp(t).atanh(t), U),
    "pow_scalar": (lambda t: t**3.0, A),
    "pow_half": (lambda t: t**0.5, P),
    "pow_two": (lambda t: t**2, A),
    "rpow": (lambda t: 2.0**t, A),
    "div_scalar": (lambda t: 1.5 / t, P),
    "clip_scalars": (lambda t: _xp(t).clip(t, min=-0.5, max=0.7) * t, A),
    "sum_axis": (lambda t: _xp(t).sum(t * t, axis=1), A),
    "sum_all": (lambda t: _xp(t).sum(_xp(t).exp(t)), A),
    "mean_axis": (lambda t: _xp(t).mean(t * t, axis=0, keepdims=True), A),
    "max_axis": (lambda t: _xp(t).max(t * t, axis=1), A),
    "max_all": (lambda t: _xp(t).max(t * t), A),
    "min_axis": (lambda t: _xp(t).min(t * t, axis=0), A),
    "var": (lambda t: _xp(t).var(t, axis=1, correction=1.0), A),
    "std": (lambda t: _xp(t).std(t, axis=0), A),
    "cumulative_sum": (lambda t: _xp(t).cumulative_sum(t * t, axis=1), A),
    "vector_norm": (lambda t: _xp(t).linalg.vector_norm(t, axis=-1), A),
    "vector_norm_all": (lambda t: _xp(t).linalg.vector_norm(t), A),
    "reshape_permute": (lambda t: _xp(t).permute_dims(_xp(t).reshape(t * t, (2, 6)), (1, 0)), A),
    "getitem": (lambda t: (t * t)[1:, ::2], A),
    "getitem_int": (lambda t: (t * t)[1, None], A),
    "flip_roll": (lambda t: _xp(t).roll(_xp(t).flip(t * t, axis=0), 1, axis=1), A),
    "moveaxis": (lambda t: _xp(t).moveaxis(_xp(t).expand_dims(t * t, axis=0), 0, -1), A),
    "concat_stack": (lambda t: _xp(t).concat([_xp(t).stack([t, t * t]), (t * t)[None]], axis=0), A),
    "broadcast": (lambda t: _xp(t).broadcast_to(t[:1] * t[:1], (3, 1, 4)) * t, A),
    "take_along_axis": (lambda t: _xp(t).take_along_axis(t * t, np.array([[0], [3], [1]]), axis=1), A),
    "take": (lambda t: _xp(t).take(t * t, np.array([2, 0, 2]), axis=0), A),
    "mT": (lambda t: (t * t).mT @ t, A),
    "matmul_self": (lambda t: t @ t.mT, A),
    "matmul_batched": (lambda t: _xp(t).reshape(t, (3, 2, 2)) @ _xp(t).reshape(t * t, (3, 2, 2)), A),
    "matmul_vec": (lambda t: t @ t[0], A),
    "astype": (lambda t: _xp(t).astype(t * t, t.dtype), A),
    # fused primitives of arrayrl.ops
    "logsumexp": (lambda t: ops.logsumexp(t, axis=-1), A),
    "logsumexp_all": (lambda t: ops.logsumexp(t * t), A),
    "log_softmax": (lambda t: ops.log_softmax(t, axis=-1), A),
    "log_softmax_0": (lambda t: ops.log_softmax(t, axis=0), A),
    "softmax": (lambda t: ops.softmax(t, axis=-1), A),
    "softplus": (lambda t: ops.softplus(t), A),
    "softplus_beta": (lambda t: ops.softplus(t, beta=2.0, threshold=1.0), A),
    "sigmoid": (lambda t: ops.sigmoid(t), A),
    "relu": (lambda t: ops.relu(t) * t, A),
    "elu": (lambda t: ops.elu(t, alpha=0.7), A),
    "leaky_relu": (lambda t: ops.leaky_relu(t) * t, A),
    "silu": (lambda t: ops.silu(t), A),
    "smooth_l1": (lambda t: ops.smooth_l1(t * 2.0), A),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_second_derivative_vs_fd(name):
    op, x = UNARY[name]
    _check(op, x.copy())


def _binary(fn):
    return lambda d: fn(d["x"], d["y"])


BINARY = {
    "add": (_binary(lambda x, y: (x + y) * x), A, B),
    "subtract": (_binary(lambda x, y: (x - y) * y), A, B),
    "multiply": (_binary(lambda x, y: x * y), A, B),
    "divide": (_binary(lambda x, y: x / y), A, P),
    "pow": (_binary(lambda x, y: x**y), P, A),
    "atan2": (_binary(lambda x, y: _xp(x).atan2(x, y)), A, P),
    "hypot": (_binary(lambda x, y: _xp(x).hypot(x, y)), A, B),
    "logaddexp": (_binary(lambda x, y: _xp(x).logaddexp(x, y)), A, B),
    "maximum": (_binary(lambda x, y: _xp(x).maximum(x, y) * x), A, B),
    "minimum": (_binary(lambda x, y: _xp(x).minimum(x, y) * y), A, B),
    "where": (_binary(lambda x, y: _xp(x).where(A > 0, x * x, y * x)), A, B),
    "clip_arrays": (_binary(lambda x, y: _xp(x).clip(x * y, min=y - 1.0, max=y + 0.3) * x), A, B),
    "matmul": (_binary(lambda x, y: x @ y.mT), A, B),
    "matmul_bcast": (_binary(lambda x, y: x[None] @ _xp(x).reshape(y, (1, 4, 3))), A, B),
    "bcast_add": (_binary(lambda x, y: (x + y[0]) * x), A, B),
    "vecdot": (_binary(lambda x, y: _xp(x).vecdot(x, y)), A, B),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_second_derivative_vs_fd(name):
    op, x, y = BINARY[name]
    _check(op, {"x": x.copy(), "y": y.copy()})


X_IN = R.normal(size=(5, 3))


@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
@pytest.mark.parametrize("ensemble", [False, True])
def test_fused_linear_second_derivative_vs_fd(activation, ensemble):
    """``ops.linear`` (one fused node, joint VJP) w.r.t. the input, the weight and the bias at once."""
    r = np.random.default_rng(2)
    if ensemble:
        p = {"x": X_IN.copy(), "w": r.normal(size=(2, 4, 3)), "b": r.normal(size=(2, 4))}
    else:
        p = {"x": X_IN.copy(), "w": r.normal(size=(4, 3)), "b": r.normal(size=(4,))}

    def op(d):
        h = ops.linear(d["x"], d["w"], d["b"], activation)
        return h * h if activation == "relu" else h  # relu's second derivative is 0: square it

    _check(op, p)


def test_fused_linear_stack_second_derivative_vs_fd():
    """Two fused layers (the MLP case): the cross terms between layers go through the joint rule twice."""
    r = np.random.default_rng(3)
    p = {"w1": r.normal(size=(6, 3)), "b1": r.normal(size=(6,)), "w2": r.normal(size=(2, 6)), "b2": r.normal(size=(2,))}

    def op(d):
        h = ops.linear(X_IN, d["w1"], d["b1"], "relu")
        return ops.linear(h, d["w2"], d["b2"], "tanh")

    _check(op, p)


@pytest.mark.parametrize("axis", [0, -1])
def test_scan_second_derivative_vs_fd(axis):
    """``reverse_discounted_scan`` in ``x`` and the discounts ``c``: its adjoint is recorded as a scan."""
    r = np.random.default_rng(4)
    shape = (6, 3) if axis == 0 else (3, 6)
    d = {"x": r.normal(size=shape), "c": r.uniform(0.3, 0.99, size=shape)}
    _check(lambda t: ops.reverse_discounted_scan(t["x"] * t["c"], t["c"], axis=axis), d)


# ------------------------------------------------------------------------------------------------ nested grad


def test_grad_of_grad_closed_forms():
    x = np.array(0.7)

    def f(t):
        xp = namespace_of(t)
        return xp.tanh(t) * t

    th = np.tanh(0.7)
    s2 = 1 - th**2
    d1 = th + 0.7 * s2
    d2 = 2 * s2 - 2 * 0.7 * th * s2
    d3 = -6 * th * s2 - 0.7 * 2 * s2 * (s2 - 2 * th**2)
    np.testing.assert_allclose(grad(f)(x), d1, rtol=1e-12)
    np.testing.assert_allclose(grad(grad(f))(x), d2, rtol=1e-12)
    np.testing.assert_allclose(grad(grad(grad(f)))(x), d3, rtol=1e-12)
    assert type(grad(grad(f))(x)) is np.ndarray


def test_nested_value_and_grad_and_argnums():
    """``value_and_grad`` inside ``grad`` (the value is differentiable too); mixed partials with argnums."""
    def f(x, y):
        xp = namespace_of(x, y)
        return xp.sum(xp.exp(x) * y * y)

    x, y = np.array([0.2, -0.4]), np.array([1.5, 0.5])

    def outer(y_):
        v, gx = value_and_grad(f)(x, y_)
        assert isinstance(v, Tensor) and isinstance(gx, Tensor)
        return v + namespace_of(gx).sum(gx)

    # d/dy [sum(e^x y^2) + sum(e^x y^2)] = 4 e^x y
    np.testing.assert_allclose(grad(outer)(y), 4 * np.exp(x) * y, rtol=1e-12)
    # d/dy d/dx: mixed partial of sum(e^x y^2) contracted with ones: 2 e^x y
    gxy = grad(lambda yy: namespace_of(yy).sum(grad(f, argnums=0)(x, yy)))(y)
    np.testing.assert_allclose(gxy, 2 * np.exp(x) * y, rtol=1e-12)


def test_create_graph_closure_is_differentiated_by_enclosing_grad():
    """A gradient penalty: ``||d/dx sum D(x; w)|| `` differentiated w.r.t. the closed-over ``w``."""
    r = np.random.default_rng(5)
    x = r.normal(size=(4, 3))
    w0 = {"w": r.normal(size=(5, 3)), "b": r.normal(size=(5,)), "v": r.normal(size=(1, 5))}

    def penalty(w):
        def d_sum(xx):
            h = ops.linear(xx, w["w"], w["b"], "tanh")
            return namespace_of(h).sum(ops.sigmoid(ops.linear(h, w["v"])))

        g = grad(d_sum, create_graph=True)(x)
        xp = namespace_of(g)
        n = xp.linalg.vector_norm(g, axis=-1)
        return xp.mean((n - 1.0) ** 2)

    got = grad(penalty)(w0)
    # finite differences of the penalty itself
    flat, td = tree_flatten(w0)
    for k, leaf in enumerate(flat):
        fd = np.zeros_like(leaf)
        for i in np.ndindex(leaf.shape):
            lp = [a.copy() for a in flat]
            lm = [a.copy() for a in flat]
            lp[k][i] += 1e-6
            lm[k][i] -= 1e-6
            fd[i] = (penalty(tree_unflatten(td, lp)) - penalty(tree_unflatten(td, lm))) / 2e-6
        np.testing.assert_allclose(tree_flatten(got)[0][k], fd, rtol=1e-6, atol=1e-9)
    # outside an enclosing transformation, create_graph returns raw arrays (nothing outside is on their tape)
    assert type(penalty(w0)) is not Tensor


def test_vjp_of_vjp():
    x = np.array([0.3, 1.2, -0.5])

    def f(t):
        return namespace_of(t).sin(t) * t

    def first(t):
        _, fn = vjp(f, t)
        return namespace_of(t).sum(fn(np.ones(3))[0] * x)

    # d/dx sum((cos x x + sin x) * x0) = (2 cos x - x sin x) * x0
    np.testing.assert_allclose(grad(first)(x), (2 * np.cos(x) - x * np.sin(x)) * x, rtol=1e-12)


# ------------------------------------------------------------------------------------------------ vs torch


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_mlp_hvp_vs_torch(activation):
    torch = pytest.importorskip("torch")
    from arrayrl.interop.tensordict import params_from_torch
    from arrayrl.nn import MLP

    torch.manual_seed(0)
    mlp = MLP(in_features=3, out_features=2, num_cells=[8, 8], activation_class=activation)
    act = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[activation]
    tm = torch.nn.Sequential(torch.nn.Linear(3, 8), act(), torch.nn.Linear(8, 8), act(), torch.nn.Linear(8, 2)).double()
    names = [n for n, _ in tm.named_parameters()]
    params = params_from_torch(tm)
    r = np.random.default_rng(6)
    obs = r.normal(size=(7, 3))
    target = r.normal(size=(7, 2))

    def loss(p):
        y = mlp.apply(p, obs)
        xp = namespace_of(y)
        return xp.mean(ops.softplus(y - target) * (y - target))

    v = _tmap(lambda a: r.normal(size=a.shape), params)
    got = hvp(loss, params, v)

    flat_p, _ = tree_flatten(params)
    tparams = [torch.tensor(a) for a in flat_p]  # same leaf order as the torch module (checked below)
    assert [tuple(a.shape) for a in flat_p] == [tuple(p.shape) for p in tm.parameters()], names

    def tloss(*ps):
        h = torch.tensor(obs)
        for i in range(3):
            h = torch.nn.functional.linear(h, ps[2 * i], ps[2 * i + 1])
            if i < 2:
                h = torch.tanh(h) if activation == "tanh" else torch.relu(h)
        d = h - torch.tensor(target)
        return torch.mean(torch.nn.functional.softplus(d) * d)

    _, want = torch.autograd.functional.hvp(tloss, tuple(tparams), tuple(torch.tensor(a) for a in tree_flatten(v)[0]))
    for a, b in zip(tree_flatten(got)[0], want):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-11, atol=1e-13)
    # first-order gradients agree too, and the loss value
    np.testing.assert_allclose(float(loss(params)), float(tloss(*tparams)), rtol=1e-13)


# ------------------------------------------------------------------------------------------------ contracts


def test_first_order_results_stay_raw_and_float32():
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)

    def f(t):
        return namespace_of(t).sum(ops.softplus(t) * t)

    g = grad(f)(x)
    assert type(g) is np.ndarray and g.dtype == np.float32
    h = hvp(f, x, np.ones_like(x))
    assert type(h) is np.ndarray and h.dtype == np.float32
    np.testing.assert_allclose(h, hvp(f, x.astype(np.float64), np.ones((2, 3))), rtol=1e-5)


def test_raw_only_rule_raises_clearly():
    cube = primitive(lambda x: x * x * x, name="raw_cube", elementwise=True)
    defvjp(cube, lambda xp, g, ans, x: g * 3 * np.square(x))  # np.square on a Tensor: raw-only
    x = np.array([0.5, 1.0])
    np.testing.assert_allclose(grad(lambda t: namespace_of(t).sum(cube(t)))(x), 3 * x * x)
    with pytest.raises(SecondOrderError, match="raw_cube"):
        grad(lambda t: namespace_of(t).sum(grad(lambda s: namespace_of(s).sum(cube(s)))(t)))(x)


def test_torch_backend_second_order():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xpt

    x = xpt.asarray([0.3, -0.7], dtype=xpt.float64)

    def f(t):
        xp = namespace_of(t)
        return xp.sum(ops.log_softmax(t, axis=-1) * xp.exp(t))

    h = hvp(f, x, xpt.asarray([1.0, 0.5], dtype=xpt.float64))
    tx = torch.tensor([0.3, -0.7], dtype=torch.float64)
    _, want = torch.autograd.functional.hvp(lambda t: torch.sum(torch.log_softmax(t, -1) * torch.exp(t)), tx,
                                            torch.tensor([1.0, 0.5], dtype=torch.float64))
    np.testing.assert_allclose(np.asarray(h), want.numpy(), rtol=1e-12)
