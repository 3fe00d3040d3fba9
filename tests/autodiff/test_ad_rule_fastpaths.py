"""Fast paths of the VJP rules for user code written with plain array-API ops (issue 9, general tape).

* ``maximum``/``minimum`` (a Python scalar, a 0-d constant or an array operand; ``xp.maximum(x @ w + b, 0.0)`` as
  ReLU): the NumPy path (:func:`arrayrl.autodiff.core.np_zero_half`: bit mask + masked halving) against torch at
  ties, with NaN in the unused cotangent, under broadcasting, float32 kept, second order (generic path);
* ``where``'s NumPy path (``zero_where``) against torch and against the generic ``where`` form;
* the pooled comparisons of the rules and the 2-D shortcut of ``_pool.matmul``;
* the backward walk keyed by tape position (a root given twice adds its seeds).

Arrays of at least 2048 elements take the bit-mask branch of ``zero_where``, smaller ones its ``where`` branch;
both are exercised. Goldens come from torch.autograd (the convention arrayrl follows) or from the ``where`` form
written out here.
"""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import _pool, namespace_of
from arrayrl.autodiff import grad, value_and_grad, vjp
from arrayrl.autodiff.core import _raw_eq, _raw_gt, _raw_lt, _raw_not, np_zero_half

torch = pytest.importorskip("torch")

SIZES = [(3, 5), (64, 64)]  # below and above zero_where's bit-mask threshold (2048 elements)


def _tied(shape, dtype, seed=0, c=0.0):
    """Values in {c - 1, c, c + 1, random}: a third of the entries tie with ``c``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    pick = rng.integers(0, 3, size=shape)
    x = np.where(pick == 0, c, x)
    return x.astype(dtype)


def _torch_grad(f, *arrays):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = f(*ts)
    return [g.numpy() for g in torch.autograd.grad(out, ts)]


@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["maximum", "minimum"])
@pytest.mark.parametrize("c", [0.0, 0.5, "0-d"])
def test_maximum_minimum_scalar_operand_split_ties_like_torch(shape, dtype, name, c):
    """``maximum(x, c)`` with a Python scalar or a 0-d constant: the gradient is split at ties (torch), float32
    stays float32."""
    c_np = np.asarray(0.25, dtype=dtype) if c == "0-d" else c
    x = _tied(shape, dtype, c=float(c_np))
    w = np.arange(1.0, x.size + 1.0).reshape(shape).astype(dtype)

    def f(a):
        xp = namespace_of(a)
        return xp.sum(getattr(xp, name)(a, c_np) * w)

    got = grad(f)(x)
    want = _torch_grad(lambda a: (getattr(torch, name)(a, torch.tensor(c_np, dtype=a.dtype)) * torch.tensor(w)).sum(), x)[0]
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(got, want)
    assert np.count_nonzero(got == w * 0.5) > 0  # ties were met (the test sees the split)


@pytest.mark.parametrize("shape", SIZES, ids=str)
def test_maximum_scalar_first_operand_and_relu_form(shape):
    """``maximum(0.0, z)`` (scalar first) and ``maximum(x @ w + b, 0.0)`` give torch's gradients."""
    rng = np.random.default_rng(1)
    # integer-valued data: x @ w + b is exact in any summation order, so its ties at 0 are the same for torch
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    w = rng.integers(-2, 3, size=(shape[1], 4)).astype(np.float64)
    b_tied = rng.integers(-2, 3, size=(4,)).astype(np.float64)
    def f(w_, b_):
        xp = namespace_of(w_, b_)
        return xp.sum(xp.maximum(x @ w_ + b_, 0.0) * 3.0) + xp.sum(xp.maximum(0.0, x @ w_ - 1.0))

    got = grad(f, argnums=(0, 1))(w, b_tied)
    want = _torch_grad(
        lambda w_, b_: (torch.maximum(torch.tensor(x) @ w_ + b_, torch.tensor(0.0, dtype=torch.float64)) * 3.0).sum()
        + torch.maximum(torch.tensor(0.0, dtype=torch.float64), torch.tensor(x) @ w_ - 1.0).sum(),
        w,
        b_tied,
    )
    assert np.count_nonzero(x @ w + b_tied == 0.0) > 0 and np.count_nonzero(x @ w - 1.0 == 0.0) > 0
    for g, t in zip(got, want):
        np.testing.assert_array_equal(g, t)


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")  # the forward's inf * 0
@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_loser_gets_exact_zero_even_where_the_cotangent_is_nan(shape, name):
    """The cotangent is selected, never multiplied by a mask: NaN/inf upstream where ``x`` loses stay out (torch's
    ``masked_fill``), and the zero is ``+0.0``."""
    x = _tied(shape, np.float64, seed=4)
    loses = x < 0.0 if name == "maximum" else x > 0.0
    w = np.where(loses, np.nan, 2.0)
    w.flat[::7] = np.where(loses.flat[::7], -np.inf, w.flat[::7])

    got = grad(lambda a: namespace_of(a).sum(getattr(namespace_of(a), name)(a, 0.0) * w))(x)
    want = _torch_grad(lambda a: (getattr(torch, name)(a, torch.zeros((), dtype=a.dtype)) * torch.tensor(w)).sum(), x)[0]
    np.testing.assert_array_equal(got, want)
    assert np.all(got[loses] == 0.0) and not np.any(np.signbit(got[loses]))


@pytest.mark.parametrize("y_shape", [(64,), (1, 64), (64, 64)], ids=str)
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_two_array_operands_with_broadcasting_like_torch(y_shape, name):
    """Both operands differentiated, the second broadcast (its cotangent summed back), ties included."""
    x = _tied((64, 64), np.float32, seed=5)
    y = np.zeros(y_shape, np.float32)
    y.flat[::3] = 0.5
    w = np.random.default_rng(6).normal(size=(64, 64)).astype(np.float32)

    gx, gy = grad(lambda a, b: namespace_of(a).sum(getattr(namespace_of(a, b), name)(a, b) * w), argnums=(0, 1))(x, y)
    tx, ty = _torch_grad(lambda a, b: (getattr(torch, name)(a, b) * torch.tensor(w)).sum(), x, y)
    assert gx.dtype == np.float32 and gy.dtype == np.float32 and gy.shape == y_shape
    np.testing.assert_array_equal(gx, tx)
    np.testing.assert_allclose(gy, ty, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_np_zero_half_equals_the_where_form_bit_for_bit(dtype):
    """The NumPy kernel against ``where(zero, 0, where(half, g * 0.5, g))`` on specials (NaN, inf, -0.0, subnormal,
    the largest float), above and below the bit-mask threshold; the inputs are not written."""
    fi = np.finfo(dtype)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, fi.smallest_subnormal, -fi.smallest_subnormal, fi.max,
                         fi.tiny, 1.0, -3.0], dtype=dtype)
    rng = np.random.default_rng(7)
    for n in (11, 4096):
        g = rng.choice(specials, size=n).astype(dtype)
        zero = rng.random(n) < 0.4
        half = (rng.random(n) < 0.3) & ~zero
        g0, z0, h0 = g.copy(), zero.copy(), half.copy()
        want = np.where(zero, dtype(0.0), np.where(half, g * dtype(0.5), g))
        got = np_zero_half(g, zero, half)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))
        np.testing.assert_array_equal(g, g0)
        np.testing.assert_array_equal(zero, z0)
        np.testing.assert_array_equal(half, h0)


def test_maximum_scalar_second_order_like_torch():
    """Second order through ``maximum(x, 0.0)`` (the taped walk takes the generic path): the Hessian-vector product
    of ``sum(maximum(x, 0) ** 2 * w)`` against torch's double backward, ties included."""
    x = _tied((8, 5), np.float64, seed=8)
    w = np.random.default_rng(9).normal(size=(8, 5))
    v = np.random.default_rng(10).normal(size=(8, 5))

    def f(a):
        xp = namespace_of(a)
        return xp.sum(xp.maximum(a, 0.0) ** 2 * w)

    def inner(a):
        g = grad(f, create_graph=True)(a)
        return namespace_of(g).sum(g * v)

    got = grad(inner)(x)
    xt = torch.tensor(x, requires_grad=True)
    (gt,) = torch.autograd.grad((torch.maximum(xt, torch.zeros((), dtype=xt.dtype)) ** 2 * torch.tensor(w)).sum(), xt,
                                create_graph=True)
    (want,) = torch.autograd.grad((gt * torch.tensor(v)).sum(), xt)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)
    # and the first derivative at the ties is the split one: 2 max(x, 0) = 0 there, so check away from 0 too
    g1 = grad(f)(x)
    np.testing.assert_allclose(g1, gt.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SIZES, ids=str)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_where_numpy_path_selects_like_torch_and_the_where_form(shape, dtype):
    """``where(c, x, y)``'s cotangents on NumPy (``zero_where``) equal torch's and the generic ``where`` form, with
    NaN upstream where the branch is not taken."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=shape).astype(dtype)
    y = rng.normal(size=shape).astype(dtype)
    c = rng.random(shape) < 0.5
    w = rng.normal(size=shape).astype(dtype)

    gx, gy = grad(lambda a, b: namespace_of(a).sum(namespace_of(a, b).where(c, a * 2.0, b) * w), argnums=(0, 1))(x, y)
    tx, ty = _torch_grad(lambda a, b: (torch.where(torch.tensor(c), a * 2.0, b) * torch.tensor(w)).sum(), x, y)
    assert gx.dtype == dtype and gy.dtype == dtype
    np.testing.assert_array_equal(gx, tx)
    np.testing.assert_array_equal(gy, ty)
    np.testing.assert_array_equal(gx, np.where(c, 2 * w, 0.0).astype(dtype))
    np.testing.assert_array_equal(gy, np.where(c, 0.0, w).astype(dtype))

    # NaN upstream: the safe-log idiom where(c, log(where(c, x, 1)), 0) keeps the gradient finite
    xa = np.where(c, np.abs(x) + 0.5, -1.0).astype(dtype)
    g = grad(lambda a: namespace_of(a).sum(namespace_of(a).where(c, namespace_of(a).log(namespace_of(a).where(c, a, 1.0)), 0.0)))(xa)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, np.where(c, 1.0 / xa, 0.0), rtol=1e-6)


def test_where_with_broadcast_condition_takes_the_generic_path():
    """A condition of another shape than the cotangent (broadcast) is handled by ``where`` (same result)."""
    x = np.random.default_rng(12).normal(size=(64, 64))
    c = np.arange(64) % 2 == 0  # (64,) broadcast over rows
    g = grad(lambda a: namespace_of(a).sum(namespace_of(a).where(c, a, 0.0) * 3.0))(x)
    np.testing.assert_array_equal(g, np.where(c, 3.0, 0.0) * np.ones((64, 1)))


def _pool_counts():
    st = _pool.buffer_pool_stats()
    return st["hits"], st["misses"]


def test_rule_comparisons_are_exact_and_their_large_masks_pooled():
    """The rules' comparisons equal NumPy's; a large mask is taken from the pool (a miss, then a hit once the first
    one was dropped), a small one is not."""
    x = np.random.default_rng(13).normal(size=(4096, 64)).astype(np.float32)
    for fn, ref in ((_raw_lt, np.less), (_raw_gt, np.greater), (_raw_eq, np.equal)):
        np.testing.assert_array_equal(fn(x, 0.0), ref(x, 0.0))
        np.testing.assert_array_equal(fn(x[:3, :3], x[:3, :1]), ref(x[:3, :3], x[:3, :1]))
    np.testing.assert_array_equal(_raw_not(x > 0), ~(x > 0))
    with _pool.buffer_pool(True):
        for fn in (_raw_lt, _raw_gt, _raw_eq):
            _pool.clear_buffer_pool()
            m = fn(x, 0.0)
            assert _pool_counts() == (0, 1)
            other = fn(x, 1.0)  # the first mask is alive: a second buffer
            assert _pool_counts() == (0, 2)
            np.testing.assert_array_equal(other, fn.__wrapped__(x, 1.0))
            del m
            fn(x, 0.0)
            assert _pool_counts() == (1, 2)
            fn(x[:8], 0.0)  # 512 bytes: not pooled
            assert _pool_counts() == (1, 2)


def test_pool_matmul_2d_shortcut():
    """``_pool.matmul``'s 2-D shortcut: the same values as ``np.matmul``, pooled above the size threshold only,
    NumPy's own error and dtype promotion otherwise."""
    rng = np.random.default_rng(14)
    a = rng.normal(size=(1024, 64)).astype(np.float32)
    b = rng.normal(size=(64, 48)).astype(np.float32)
    with _pool.buffer_pool(True):
        _pool.clear_buffer_pool()
        out = _pool.matmul(a, b)  # 1024 x 48 float32 = 192 KiB: pooled
        assert out.shape == (1024, 48) and _pool_counts() == (0, 1)
        np.testing.assert_array_equal(out, np.matmul(a, b))
        del out
        np.testing.assert_array_equal(_pool.matmul(a, b), np.matmul(a, b))
        assert _pool_counts() == (1, 1)
        small = _pool.matmul(a[:8], b)  # 1.5 KiB: not pooled
        np.testing.assert_array_equal(small, np.matmul(a[:8], b))
        assert _pool_counts() == (1, 1)
        mixed = _pool.matmul(a, b.astype(np.float64))
        assert mixed.dtype == np.float64
        np.testing.assert_array_equal(mixed, np.matmul(a, b.astype(np.float64)))
        with pytest.raises(ValueError):
            _pool.matmul(a, a)
        stacked = rng.normal(size=(2, 1024, 64)).astype(np.float32)
        np.testing.assert_array_equal(_pool.matmul(stacked, b), np.matmul(stacked, b))


def test_root_given_twice_adds_its_seeds():
    """``vjp`` of a function returning the same Tensor twice: the walk seeds it once with the sum of both
    cotangents (keyed by tape position)."""
    x = np.array([1.0, -2.0, 3.0])

    def f(a):
        y = a * a
        return y, y

    _, fn = vjp(f, x)
    (g,) = fn((np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])))
    np.testing.assert_array_equal(g, 2 * x * np.array([11.0, 22.0, 33.0]))


def test_plain_ops_dqn_loss_matches_torch_autograd():
    """The benchmark's plain-ops DQN loss (ReLU as ``maximum(., 0.0)``, ``take_along_axis``, a ``where`` Huber,
    ``max`` over actions): value and gradients against the same function under torch.autograd."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "tape.py"
    spec = importlib.util.spec_from_file_location("_tape_bench", path)
    tape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tape)
    for batch in (8, 64):
        b, p = tape.make_batch(batch), tape.make_params()
        b["obs"][0, :] = 0.0  # rows of z = b0: ties of the ReLU where b0 == 0 do not occur; keep random
        (v, g), (vt, gt) = tape.plain_step_fn(b, p)(), tape.torch_plain_step_fn(b, p)()
        np.testing.assert_allclose(v, vt.detach().numpy(), rtol=1e-6)
        for k, t in zip(p, gt):
            assert g[k].dtype == np.float32
            np.testing.assert_allclose(g[k], t.numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
        lm, gm = tape.numpy_manual_step_fn(b, p)()
        np.testing.assert_allclose(v, lm, rtol=1e-6)
        for k in p:
            np.testing.assert_allclose(g[k], gm[k], rtol=1e-4, atol=1e-6, err_msg=k)
