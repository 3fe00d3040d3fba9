"""Generators draw reproducibly on every backend; NoiseGenerator replays injected draws."""

import numpy as np
import pytest

from arrayrl._backend import backend_name, namespace_of, to_numpy
from arrayrl.random import Generator


def _base(xp):
    return getattr(xp.ns, "_arrayrl_base", xp.ns)


def test_shapes_dtypes_and_reproducibility(raw_xp):
    ns = raw_xp.ns
    g1 = Generator(123, xp=ns, device=raw_xp.device)
    g2 = Generator(123, xp=ns, device=raw_xp.device)
    a = g1.normal((3, 4), dtype=raw_xp.float_dtype)
    b = g2.normal((3, 4), dtype=raw_xp.float_dtype)
    assert backend_name(namespace_of(a)) == backend_name(ns)
    assert a.shape == (3, 4) and a.dtype == raw_xp.float_dtype
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    u = to_numpy(g1.uniform((1000,), -2.0, 3.0, dtype=raw_xp.float_dtype))
    assert u.min() >= -2.0 and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.2
    k = to_numpy(g1.integers(0, 5, (200,)))
    assert k.min() >= 0 and k.max() <= 4 and len(np.unique(k)) == 5
    p = to_numpy(g1.permutation(10))
    np.testing.assert_array_equal(np.sort(p), np.arange(10))


def test_normal_moments():
    x = to_numpy(Generator(0).normal((20000,), loc=1.5, scale=2.0))
    assert abs(x.mean() - 1.5) < 0.05 and abs(x.std() - 2.0) < 0.05


def test_different_seeds_differ():
    a = to_numpy(Generator(0).normal((8,)))
    b = to_numpy(Generator(1).normal((8,)))
    assert not np.allclose(a, b)


def test_from_noise_replays_in_order_and_checks_shape():
    n1, n2 = np.ones((2,)), np.zeros((3,))
    g = Generator.from_noise(n1, n2)
    assert g.normal((2,)) is n1
    np.testing.assert_array_equal(g.normal((3,), loc=1.0, scale=2.0), np.ones(3))
    with pytest.raises(RuntimeError, match="no injected draws left"):
        g.uniform((1,))
    g = Generator.from_noise(n1)
    with pytest.raises(ValueError, match=r"expected a draw of shape \(5,\), got \(2,\)"):
        g.normal((5,))
