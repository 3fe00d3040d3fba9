"""The buffer pool covers the taped NumPy primitives of issue 9 section 3: ``stack``/``concat`` outputs and their
cotangents, the backward walk's accumulation of column-slice cotangents, the zero-padded cotangent of a slice,
``clip``'s output and cotangent, and the NumPy kernels ``elu``/``elu_slope``/``softplus``/``sigmoid``/``softmax``.

For each: the large buffers are reused across calls (pool hits, no new misses), a result kept from call 1 is
unchanged by call 2 (never overwritten while referenced), and the values are bit-identical with the pool on and
off. Goldens: hand formulas in float64 (``exp``, ``log1p``...) and torch's elu gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import _kernels, _pool
from arrayrl.autodiff import value_and_grad
from arrayrl.autodiff.namespace import taped_namespace

XP = taped_namespace(np)
ROWS, COLS, PARTS = 1024, 64, 15  # [1024, 64] float32 = 256 KiB: above the 128 KiB threshold


pytestmark = pytest.mark.usefixtures("fresh_pool")  # tests/conftest.py: an empty, enabled pool per test


def _parts(seed: int = 0, n: int = PARTS) -> list:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((ROWS, COLS)).astype(np.float32) for _ in range(n)]


def _trajectory_loss(*xs):
    """stack and concat (rows and columns) of the parts, elu/softplus, a weighted sum (distinct cotangents)."""
    s = XP.stack(xs, axis=0)  # [15, 1024, 64]
    c = XP.concat(xs, axis=0)  # [15360, 64]
    w = XP.concat(xs[:2], axis=1)  # [1024, 128]: column slices in the VJP, accumulated with the others
    y = _elu(XP.reshape(s, (-1, COLS))) * _softplus(c)
    return XP.sum(y * c) + XP.sum(w * w)


def _elu(x):
    from arrayrl import ops

    return ops.elu(x)


def _softplus(x):
    from arrayrl import ops

    return ops.softplus(x, threshold=2.0)


def _in_pool(a) -> bool:
    """Whether the memory of ``a`` (or of the array it views) is one of this thread's pooled buffers."""
    base = a
    while base.base is not None:
        base = base.base
    return any(b is base for bufs in _pool._local.free.values() for b in bufs)


def _misses_after_warmup(fn, *args) -> tuple:
    """(results of call 1, misses added by calls 2 and 3, hits added by them)."""
    first = fn(*args)
    fn(*args)
    m0, h0 = _pool.buffer_pool_stats()["misses"], _pool.buffer_pool_stats()["hits"]
    fn(*args)
    st = _pool.buffer_pool_stats()
    return first, st["misses"] - m0, st["hits"] - h0


def test_stack_and_concat_outputs_are_pooled_and_never_overwritten():
    xs = _parts()
    first, misses, hits = _misses_after_warmup(lambda: (XP.stack(xs, axis=1), XP.concat(xs, axis=0)))
    assert misses == 0 and hits >= 2 and all(_in_pool(a) for a in first)
    keep = [a.copy() for a in first]
    again = (XP.stack(_parts(1), axis=1), XP.concat(_parts(2), axis=0))
    for a, k in zip(first, keep):
        np.testing.assert_array_equal(a, k)  # call 2 did not write into call 1's live results
    for a, b in zip(first, again):
        assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(first[0], np.stack(xs, axis=1))  # golden: NumPy's own copy
    np.testing.assert_array_equal(first[1], np.concatenate(xs, axis=0))


def test_stack_view_keeps_its_buffer_busy():
    xs = _parts()
    view = XP.stack(xs, axis=0)[3]  # only a view of the stacked result is kept
    keep = view.copy()
    for seed in (1, 2):
        XP.stack(_parts(seed), axis=0)
    np.testing.assert_array_equal(view, keep)


def test_trajectory_gradients_are_pooled_and_kept_results_unchanged():
    xs = _parts()
    vg = value_and_grad(_trajectory_loss, argnums=tuple(range(PARTS)))
    (v1, g1), misses, hits = _misses_after_warmup(vg, *xs)
    assert misses == 0 and hits > 0  # every large output and cotangent of calls 2 and 3 came from the pool
    assert all(_in_pool(g) for g in g1)  # the leaves' cotangents: views of pooled VJP outputs and sums
    keep = [np.array(g, copy=True) for g in g1]
    vg(*_parts(7))
    for g, k in zip(g1, keep):
        np.testing.assert_array_equal(g, k)
    # golden: the gradient by hand (float64): d/dx [elu(x) softplus_t(x) x] + [x in the first two] 2x
    for i, (x, g) in enumerate(zip(xs, g1)):
        x = x.astype(np.float64)
        elu, delu = np.where(x > 0, x, np.expm1(x)), np.where(x > 0, 1.0, np.exp(x))
        sp = np.where(x > 2.0, x, np.log1p(np.exp(x)))
        dsp = np.where(x > 2.0, 1.0, 1.0 / (1.0 + np.exp(-x)))
        want = delu * sp * x + elu * dsp * x + elu * sp + (2 * x if i < 2 else 0.0)
        np.testing.assert_allclose(g, want, rtol=2e-5, atol=2e-5)


def test_gradients_bit_identical_with_pool_on_and_off():
    xs = _parts(3)
    vg = value_and_grad(_trajectory_loss, argnums=tuple(range(PARTS)))
    on = [vg(*xs) for _ in range(2)][-1]
    with _pool.buffer_pool(False):
        off = vg(*xs)
    assert on[0].tobytes() == off[0].tobytes()
    for a, b in zip(on[1], off[1]):
        assert a.tobytes() == b.tobytes()


def test_accumulated_column_slice_cotangents_are_pooled():
    """concat along axis 1: the cotangents are column slices (contiguous rows), summed by the walk's add."""
    x = _parts(4, 1)[0]

    def f(x):
        return XP.sum(XP.concat([x, x, x], axis=1) ** 2.0)

    vg = value_and_grad(f)
    (v, g), misses, _ = _misses_after_warmup(vg, x)
    assert misses == 0 and _in_pool(g)  # the sum of the three column slices
    np.testing.assert_allclose(g, 6.0 * x.astype(np.float64), rtol=1e-6)
    m0 = _pool.buffer_pool_stats()["hits"]
    _pool.elementwise(np.add)(np.ones((ROWS, 2 * COLS), np.float32)[:, :COLS], 1.0)
    assert _pool.buffer_pool_stats()["hits"] == m0 + 1  # a column slice is a pooled ufunc operand


def test_slice_cotangent_is_zero_padded_into_a_pooled_buffer():
    x = _parts(5, 1)[0]
    vg = value_and_grad(lambda x: XP.sum(x[:, 10:40] * 3.0))
    (v, g), misses, _ = _misses_after_warmup(vg, x)
    assert misses == 0 and _in_pool(g)
    want = np.zeros_like(x)
    want[:, 10:40] = 3.0
    keep = g.copy()
    vg(_parts(6, 1)[0])
    np.testing.assert_array_equal(g, want)
    np.testing.assert_array_equal(g, keep)
    assert np.signbit(g).sum() == 0  # the pads are +0.0


def test_clip_cotangent_pooled_and_exact():
    x = _parts(8, 1)[0]
    y = XP.clip(x, min=-0.5, max=0.5)  # the forward output too
    assert _in_pool(y) and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.clip(x, -0.5, 0.5))
    with _pool.buffer_pool(False):
        assert XP.clip(x, min=-0.5, max=0.5).tobytes() == y.tobytes()
    vg = value_and_grad(lambda x: XP.sum(XP.clip(x, min=-0.5, max=0.5) * 2.0))
    (v, g), misses, _ = _misses_after_warmup(vg, x)
    assert misses == 0 and _in_pool(g)
    np.testing.assert_array_equal(g, np.where((x >= -0.5) & (x <= 0.5), 2.0, 0.0).astype(np.float32))


KERNELS = {
    "elu": (lambda x: _kernels.elu(x), lambda x: np.where(x > 0, x, np.expm1(x)), 2e-7),
    "elu_a": (lambda x: _kernels.elu(x, 0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)), 2e-7),
    "elu_slope": (lambda x: _kernels.elu_slope(x), lambda x: np.where(x > 0, 1.0, np.exp(x)), 1e-7),
    "elu_slope_a": (lambda x: _kernels.elu_slope(x, 0.5), lambda x: np.where(x > 0, 1.0, 0.5 * np.exp(x)), 1e-7),
    "softplus": (lambda x: _kernels.softplus(x), lambda x: np.logaddexp(0.0, x), 3e-7),
    "softplus_bt": (lambda x: _kernels.softplus(x, beta=2.0, threshold=1.0),
                    lambda x: np.where(2 * x > 1.0, x, np.logaddexp(0.0, 2 * x) / 2), 3e-7),
    "sigmoid": (lambda x: _kernels.sigmoid(x), lambda x: 1.0 / (1.0 + np.exp(-x)), 1e-7),
    "softmax": (lambda x: _kernels.softmax(x, axis=-1),
                lambda x: np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1,
                                                                                                    keepdims=True),
                1e-7),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_kernels_pooled_exact_and_identical_on_off(name):
    fn, golden, tol = KERNELS[name]
    x = (_parts(9, 1)[0] * 3.0).astype(np.float32)
    if name != "softmax":  # (softmax rows with inf/NaN follow the kernel's own conventions, tested elsewhere)
        x[0, :4] = [0.0, -0.0, np.inf, -np.inf]
        x[1, 0] = np.nan
    first, misses, hits = _misses_after_warmup(fn, x)
    assert misses == 0 and hits > 0 and _in_pool(first)
    keep = first.copy()
    fn(x + 1.0)
    np.testing.assert_array_equal(first, keep)
    with _pool.buffer_pool(False):
        off = fn(x)
    assert first.tobytes() == off.tobytes()
    with np.errstate(all="ignore"):
        want = golden(x.astype(np.float64))
    ok = np.isfinite(want)
    np.testing.assert_allclose(first[ok], want[ok], rtol=4 * tol, atol=tol)
    np.testing.assert_array_equal(np.isnan(first), np.isnan(want))


def test_elu_slope_matches_torch():
    torch = pytest.importorskip("torch")
    x = _parts(10, 1)[0] * 3.0
    x[0, :2] = [0.0, -0.0]
    for alpha in (1.0, 0.5):
        t = torch.from_numpy(x.copy()).requires_grad_()
        torch.nn.functional.elu(t, alpha=alpha).sum().backward()
        np.testing.assert_allclose(_kernels.elu_slope(x, alpha), t.grad.numpy(), rtol=2e-7, atol=1e-7)
