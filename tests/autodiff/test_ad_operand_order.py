"""Operator order on the tape, on every backend of the ``xp`` fixture (numpy, array_api_strict float64 and its
float32-only device, torch, cupy where a GPU is present, and the taped namespace over NumPy).

A raw array (an argument that is not differentiated, a closure, the result of a comparison or a creation
function) on the LEFT of a Tensor must defer to the Tensor's reflected operator: NumPy, torch and CuPy do by
protocol; array_api_strict raised ``TypeError`` on a foreign right operand until
:func:`arrayrl.autodiff.core.defer_operators_to_tensor` lifted that for Tensors (other foreign operands are still
refused).

Goldens: the derivative formulas of each operator written by hand, evaluated in float64 NumPy at the backend's
(rounded) inputs; broadcasting undone by summing, written here independently of the tape.
"""

from __future__ import annotations

import operator as O
from collections import namedtuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arrayrl import namespace_of
from arrayrl._backend import backend_name, is_taped
from arrayrl.autodiff import Tensor, grad, stop_gradient, value_and_grad
from arrayrl.autodiff.core import defer_operators_to_tensor
from tests.autodiff.ad_helpers import farrays

# name -> (operator, d op(a, b) / da, d op(a, b) / db), in float64 NumPy (a, b > 0)
ARITH = {
    "add": (O.add, lambda a, b: np.ones_like(a * b), lambda a, b: np.ones_like(a * b)),
    "sub": (O.sub, lambda a, b: np.ones_like(a * b), lambda a, b: -np.ones_like(a * b)),
    "mul": (O.mul, lambda a, b: b + 0 * a, lambda a, b: a + 0 * b),
    "truediv": (O.truediv, lambda a, b: 1 / b + 0 * a, lambda a, b: -a / b**2),
    "pow": (O.pow, lambda a, b: b * a ** (b - 1), lambda a, b: a**b * np.log(a)),
}
COMPARE = {"lt": O.lt, "le": O.le, "gt": O.gt, "ge": O.ge, "eq": O.eq, "ne": O.ne}
# (shape of the non-differentiated operand x, shape of the differentiated w): same shapes and broadcasting both ways
SHAPES = [((3, 4), (3, 4)), ((4,), (3, 4)), ((3, 4), (4,)), ((), (2, 3)), ((2, 1), (1, 3))]
MODES = ("x op w", "w op x", "s op w", "w op s")


def _sum_to(g: np.ndarray, shape: tuple) -> np.ndarray:
    """Undo broadcasting: sum ``g`` over the leading axes and the axes where ``shape`` has 1."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _leaf(xp, a: np.ndarray):
    """A differentiable input on the backend: a raw array (the taped backend builds constant Tensors; the
    differentiated argument is its raw value)."""
    return stop_gradient(xp.from_numpy(a))


def _tol(xp) -> dict:
    return dict(rtol=1e-10, atol=1e-12) if xp.is_float64 else dict(rtol=5e-4, atol=5e-5)


def _apply(op, mode, x, w, s):
    return {"x op w": lambda: op(x, w), "w op x": lambda: op(w, x), "s op w": lambda: op(s, w),
            "w op s": lambda: op(w, s)}[mode]()


@given(data=st.data())
def test_arithmetic_operators_any_order(xp, data):
    """``+ - * / **`` with the raw argument, the Tensor or a Python scalar on either side; gradient by hand."""
    name = data.draw(st.sampled_from(sorted(ARITH)), label="op")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    xs, ws = data.draw(st.sampled_from(SHAPES), label="shapes")
    x_np = data.draw(farrays(xs, 0.5, 2.0), label="x")
    w_np = data.draw(farrays(ws, 0.5, 2.0), label="w")
    s = data.draw(st.floats(0.5, 2.0), label="s")
    op, da, db = ARITH[name]
    out_shape = np.broadcast_shapes(xs, ws) if mode in ("x op w", "w op x") else ws
    c_np = data.draw(farrays(out_shape, -1.0, 1.0), label="c")
    x, w, c = xp.from_numpy(x_np), _leaf(xp, w_np), xp.from_numpy(c_np)

    def loss(w, x, c):
        return namespace_of(w).sum(_apply(op, mode, x, w, s) * c)

    v, g = value_and_grad(loss)(w, x, c)
    # golden at the backend's rounded inputs, float64
    x64, w64, c64 = (xp.to_numpy(a).astype(np.float64) for a in (x, w, c))
    a, b = {"x op w": (x64, w64), "w op x": (w64, x64), "s op w": (s, w64), "w op s": (w64, s)}[mode]
    d = db(np.asarray(a), np.asarray(b)) if mode in ("x op w", "s op w") else da(np.asarray(a), np.asarray(b))
    want_g = _sum_to(np.broadcast_to(c64 * d, out_shape), ws)
    np.testing.assert_allclose(xp.to_numpy(v), np.sum(op(a, b) * c64), **_tol(xp))
    assert not is_taped(g) and backend_name(namespace_of(g)) == backend_name(namespace_of(w)) and g.dtype == w.dtype
    np.testing.assert_allclose(xp.to_numpy(g), want_g, **_tol(xp))


@pytest.mark.parametrize("mode", ["x @ w", "w @ x", "x @ w.mT", "x.mT @ w"])
def test_matmul_any_order(xp, mode):
    rng = np.random.default_rng(0)
    x_np, w_np = rng.normal(size=(2, 3)), rng.normal(size=(3, 2))
    if mode == "x @ w.mT":
        w_np = w_np.T.copy()  # (2, 3)
    if mode == "x.mT @ w":
        w_np = rng.normal(size=(2, 4))
    expr = {"x @ w": lambda x, w: x @ w, "w @ x": lambda x, w: w @ x, "x @ w.mT": lambda x, w: x @ w.mT,
            "x.mT @ w": lambda x, w: x.mT @ w}[mode]
    c_np = rng.normal(size=expr(x_np, w_np).shape)
    x, w, c = xp.from_numpy(x_np), _leaf(xp, w_np), xp.from_numpy(c_np)
    g = grad(lambda w, x, c: namespace_of(w).sum(expr(x, w) * c))(w, x, c)
    x64, c64 = xp.to_numpy(x).astype(np.float64), xp.to_numpy(c).astype(np.float64)
    want = {"x @ w": lambda: x64.T @ c64, "w @ x": lambda: c64 @ x64.T, "x @ w.mT": lambda: (x64.T @ c64).T,
            "x.mT @ w": lambda: x64 @ c64}[mode]()
    np.testing.assert_allclose(xp.to_numpy(g), want, **_tol(xp))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(COMPARE))
def test_comparisons_any_order_feed_arithmetic(xp, name, mode):
    """Comparisons in every order; their (raw, constant) result then stands left of the Tensor."""
    grid = np.array([0.5, 1.0, 1.5])
    rng = np.random.default_rng(1)
    x_np, w_np = rng.choice(grid, size=(3, 4)), rng.choice(grid, size=(3, 4))  # ties included
    s = 1.0
    op = COMPARE[name]
    x, w = xp.from_numpy(x_np), _leaf(xp, w_np)
    seen = {}

    def loss(w, x):
        ns = namespace_of(w)
        m = _apply(op, mode, x, w, s)
        seen["m"] = m
        mf = ns.astype(m, w.dtype)
        return ns.sum(mf * w) + ns.sum(1.0 - mf) + ns.sum((mf + 1.0) * ns.ones_like(w))  # mask on the left

    v, g = value_and_grad(loss)(w, x)
    assert not is_taped(seen["m"]) or not seen["m"].requires_grad  # a constant either way
    a, b = {"x op w": (x_np, w_np), "w op x": (w_np, x_np), "s op w": (s, w_np), "w op s": (w_np, s)}[mode]
    mask = np.asarray(op(a, b), dtype=np.float64)
    np.testing.assert_allclose(xp.to_numpy(g), mask, **_tol(xp))
    np.testing.assert_allclose(xp.to_numpy(v), np.sum(mask * w_np) + np.sum(1 - mask) + np.sum(mask + 1), **_tol(xp))


def test_creation_functions_on_the_left(xp):
    """Arrays made inside the function (``ones_like``, ``asarray``, ``zeros``, ``arange``: raw constants) can stand
    left of a Tensor on every backend."""
    w_np = np.array([[0.5, 1.0, 2.0], [1.5, 0.75, 1.25]])
    w = _leaf(xp, w_np)

    def loss(w):
        ns = namespace_of(w)
        two = ns.asarray(2.0, dtype=w.dtype, device=w.device)
        z = ns.zeros(w.shape, dtype=w.dtype, device=w.device)
        r = ns.astype(ns.arange(3, device=w.device), w.dtype)
        return ns.sum((ns.ones_like(w) - w) * (two * w) + (z + w) + ns.full_like(w, 3.0) / w) + ns.sum(r @ w.mT)

    g = grad(loss)(w)
    w64 = xp.to_numpy(w).astype(np.float64)
    want = (2 - 4 * w64) + 1 - 3 / w64**2 + np.arange(3.0)[None, :]
    np.testing.assert_allclose(xp.to_numpy(g), want, **_tol(xp))


def test_pytree_and_keyword_arguments_on_the_left(xp):
    """Non-differentiated pytree and keyword arguments stay as the caller passed them (raw, not copied) and work
    on the left of the Tensor."""
    Pair = namedtuple("Pair", "a b")
    rng = np.random.default_rng(2)
    x_np, y_np, w_np = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(3, 2))
    batch = {"x": xp.from_numpy(x_np), "nest": [Pair(xp.from_numpy(y_np), 3)], "name": "b", "none": None}
    before = dict(batch)
    scale = xp.from_numpy(np.array(0.5))
    seen = {}

    def loss(w, batch, *, scale):
        seen.update(batch=batch, scale=scale)
        ns = namespace_of(w)
        y = batch["nest"][0].a
        return ns.sum(scale * (batch["x"] @ w) + batch["nest"][0].b * (y @ w))

    g = grad(loss)(_leaf(xp, w_np), batch, scale=scale)
    assert seen["batch"] is batch and seen["scale"] is scale and type(batch["nest"][0]) is Pair
    assert batch.keys() == before.keys() and all(batch[k] is before[k] for k in before)  # caller's dict unchanged
    x64, y64 = (xp.to_numpy(a).astype(np.float64) for a in (batch["x"], batch["nest"][0].a))
    want = 0.5 * x64.sum(0)[:, None] + 3 * y64.sum(0)[:, None]
    np.testing.assert_allclose(xp.to_numpy(g), np.broadcast_to(want, (3, 2)), **_tol(xp))


@pytest.mark.parametrize("name", ["add", "sub", "mul", "truediv", "pow", "matmul"])
def test_closure_arrays_either_side(xp, name):
    """A raw array captured by a closure (not an argument) works on either side of the Tensor."""
    op = getattr(O, name)
    rng = np.random.default_rng(3)
    x_np = rng.uniform(0.5, 2.0, size=(3, 3))
    w_np = rng.uniform(0.5, 2.0, size=(3, 3))
    x, w = xp.from_numpy(x_np), _leaf(xp, w_np)

    def left(w):
        return namespace_of(w).sum(op(w, x))

    def right(w):
        return namespace_of(w).sum(op(x, w))

    x64, w64 = xp.to_numpy(x).astype(np.float64), xp.to_numpy(w).astype(np.float64)
    if name == "matmul":
        want_left, want_right = np.ones((3, 3)) @ x64.T, x64.T @ np.ones((3, 3))
    else:
        _, da, db = ARITH[name]
        want_left, want_right = da(w64, x64), db(x64, w64)
    np.testing.assert_allclose(xp.to_numpy(grad(left)(w)), want_left, **_tol(xp))
    np.testing.assert_allclose(xp.to_numpy(grad(right)(w)), want_right, **_tol(xp))


def test_strict_still_refuses_other_foreign_operands():
    """The deferral is narrow: strict arrays still reject NumPy arrays and NumPy scalars; it is installed once."""
    strict = pytest.importorskip("array_api_strict")
    a = strict.asarray([1.0, 2.0])
    Tensor(a)  # the tape has seen strict's array type
    assert defer_operators_to_tensor(type(a)) is True and type(a)._check_type_device._arrayrl_defers
    for other in (np.ones(2), np.float64(1.0)):
        with pytest.raises(TypeError, match="Expected Array or Python scalar"):
            a + other
    assert type(a + Tensor(a)) is Tensor and type(a < Tensor(a)) is type(a)  # comparisons: raw constants


class _RefusingArray:
    """A backend array whose operators raise on a foreign operand, as array_api_strict's did (and might again in a
    version whose internals ``defer_operators_to_tensor`` does not know)."""

    def __add__(self, other):
        raise TypeError(f"Expected Array or Python scalar; got {type(other)}")


def test_refused_operand_error_says_what_to_do():
    x = _RefusingArray()
    with pytest.raises(TypeError, match=r"put the Tensor on the left or call the namespace function"):
        grad(lambda w: namespace_of(w).sum(x + w))(np.ones(2))


class _FakeCupy:
    """Mimics ``cupy.ndarray``'s operator dispatch: ``__add__(x, y)`` calls ``y.__radd__(x)`` when
    ``_should_use_rop(x, y)``; CuPy >= 10 tests ``y.__array_ufunc__ is None`` (NEP 13), older CuPy
    ``x.__array_priority__ < y.__array_priority__`` (CuPy's is 100). Otherwise it computes (on NumPy here)."""

    __array_priority__ = 100

    def __init__(self, v, modern: bool):
        self.v, self.modern = v, modern
        self.shape, self.ndim, self.mT = v.shape, v.ndim, v.T

    def _use_rop(self, y) -> bool:
        if self.modern:
            try:
                return y.__array_ufunc__ is None
            except AttributeError:
                return self.__array_priority__ < getattr(y, "__array_priority__", 0)
        return self.__array_priority__ < getattr(y, "__array_priority__", 0) and not isinstance(y, _FakeCupy)

    def _op(self, y, name, fn):
        if self._use_rop(y):
            return getattr(y, f"__r{name}__")(self)
        if not isinstance(y, (np.ndarray, float, int)):  # CuPy would try to convert y to a device array and fail
            raise TypeError(f"cannot convert {type(y).__name__} to a CuPy array")
        return fn(self.v, y)

    def __add__(self, y):
        return self._op(y, "add", O.add)

    def __matmul__(self, y):
        return self._op(y, "matmul", O.matmul)


@pytest.mark.parametrize("modern", [True, False])
def test_tensor_wins_cupy_style_dispatch(modern):
    """A CuPy-like left operand defers to the Tensor under both of CuPy's rules, so the results are taped."""
    w_np = np.array([[1.0, 2.0], [3.0, 4.0]])
    x = np.array([[0.5, 1.0], [2.0, -1.0]])
    seen = []

    def loss(w):
        fake = _FakeCupy(x, modern)
        seen.extend([fake @ w, fake + w])
        return namespace_of(w).sum(seen[0] * 2.0 + seen[1])

    g = grad(loss)(w_np)
    assert all(type(t) is Tensor and t.requires_grad for t in seen)
    np.testing.assert_allclose(g, 2.0 * x.T @ np.ones((2, 2)) + 1.0)


def _cupy_with_gpu():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no GPU")
    except Exception:  # noqa: BLE001 - any CUDA failure means "no GPU"
        pytest.skip("no usable GPU")
    return cupy


@pytest.mark.parametrize("name", ["add", "sub", "mul", "truediv", "pow", "matmul", "lt", "eq"])
def test_raw_cupy_on_the_left_of_a_tensor(name):
    """Real CuPy (skipped without one): a raw ``cupy.ndarray`` closure on the left of a Tensor defers to it."""
    cupy = _cupy_with_gpu()
    op = getattr(O, name)
    rng = np.random.default_rng(4)
    x_np, w_np = rng.uniform(0.5, 2.0, size=(3, 3)), rng.uniform(0.5, 2.0, size=(3, 3))
    x, w = cupy.asarray(x_np), cupy.asarray(w_np)

    def loss(w):
        ns = namespace_of(w)
        r = op(x, w)
        return ns.sum(ns.astype(r, w.dtype) * w) if name in COMPARE else ns.sum(r)

    g = cupy.asnumpy(grad(loss)(w))
    if name in COMPARE:
        want = np.asarray(op(x_np, w_np), dtype=np.float64)
    elif name == "matmul":
        want = x_np.T @ np.ones((3, 3))
    else:
        want = ARITH[name][2](x_np, w_np)
    np.testing.assert_allclose(g, want, rtol=1e-10)
