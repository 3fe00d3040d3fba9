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


# ------------------------------------------------------------------------------------------------ bad input, wrapping
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from arrayrl.random import NoiseGenerator, as_generator  # noqa: E402


def test_numpy_generator_is_wrapped_and_shared():
    """``Generator(np_rng)`` / ``as_generator(np_rng)`` draw from the caller's generator itself (golden: NumPy)."""
    ref = np.random.default_rng(5)
    rng = np.random.default_rng(5)
    g = as_generator(rng)
    assert isinstance(g, Generator) and g.xp is np
    np.testing.assert_array_equal(g.normal((3,)), ref.normal(0.0, 1.0, size=(3,)))
    np.testing.assert_array_equal(g.uniform((2,), -1.0, 2.0), ref.uniform(-1.0, 2.0, size=(2,)))
    np.testing.assert_array_equal(g.integers(0, 7, (4,)), ref.integers(0, 7, size=(4,)))
    np.testing.assert_array_equal(rng.normal(size=2), ref.normal(size=2))  # same stream: rng advanced
    assert as_generator(g) is g
    noise = Generator.from_noise(np.ones(2))
    assert as_generator(noise) is noise


def test_torch_generator_is_wrapped():
    torch = pytest.importorskip("torch")
    g = Generator(torch.Generator().manual_seed(3))
    ref = torch.Generator().manual_seed(3)
    out = g.normal((4,), dtype=torch.float32)
    assert isinstance(out, torch.Tensor)
    assert torch.equal(out, torch.randn((4,), generator=ref, dtype=torch.float32))
    with pytest.raises(TypeError, match=r"seed: a torch.Generator draws torch arrays, but xp= is numpy"):
        Generator(torch.Generator(), xp=np)


@pytest.mark.parametrize("bad,hint", [
    (0, r"builtins.int; for a seed, pass arrayrl.random.Generator\(0, xp=...\)"),
    (None, r"builtins.NoneType$"),
    (np.random.RandomState(0), r"RandomState; the legacy RandomState is not supported"),
    (__import__("random").Random(0), r"random.Random$"),
])
def test_as_generator_rejects_other_objects_by_name(bad, hint):
    with pytest.raises(TypeError, match=rf"^noise_source: expected an arrayrl.random.Generator .*got .*{hint}"):
        as_generator(bad, "noise_source")


@given(bad=st.sampled_from([-1, 1.5, True, "0", None, np.float64(1.0)]))
def test_seed_is_validated(bad):
    kind = ValueError if bad == -1 else TypeError
    with pytest.raises(kind, match=r"^seed: expected an integer"):
        Generator(bad)


def test_integer_like_seeds_and_shapes():
    a = Generator(np.int64(4)).normal((np.int64(2), np.int32(3)))
    b = Generator(4).normal((2, 3))
    np.testing.assert_array_equal(a, b)
    assert Generator(0).uniform(np.int64(3)).shape == (3,)
    assert Generator(0).normal((0, 2)).shape == (0, 2)  # empty draws are fine


@given(shape=st.one_of(
    st.lists(st.integers(-3, -1), min_size=1, max_size=2).map(tuple),
    st.sampled_from([(2.0,), (True,), ("2",), 2.5, "3", None, (2, None)]),
), method=st.sampled_from(["normal", "uniform", "integers"]))
def test_bad_shapes_are_named(shape, method):
    g = Generator(0)
    call = {"normal": lambda: g.normal(shape), "uniform": lambda: g.uniform(shape),
            "integers": lambda: g.integers(0, 3, shape)}[method]
    with pytest.raises((TypeError, ValueError), match=r"^shape(\[\d\])?: expected"):
        call()


@given(value=st.sampled_from([float("nan"), float("inf"), -float("inf"), "1", None, True]),
       arg=st.sampled_from(["loc", "scale", "low", "high"]))
def test_non_finite_or_non_numeric_bounds_are_named(value, arg):
    g = Generator(0)
    with pytest.raises((TypeError, ValueError), match=rf"^{arg}: expected a"):
        if arg in ("loc", "scale"):
            g.normal((2,), **{arg: value})
        else:
            g.uniform((2,), **{"low": 0.0, "high": 1.0, arg: value})


def test_inconsistent_bounds_and_dtypes():
    g = Generator(0)
    with pytest.raises(ValueError, match=r"^scale: expected >= 0, got -1.0"):
        g.normal((2,), scale=-1.0)
    with pytest.raises(ValueError, match=r"^high: expected >= low \(1.0\), got 0.0"):
        g.uniform((2,), 1.0, 0.0)
    assert np.all(g.uniform((3,), 0.5, 0.5) == 0.5)  # low == high: the constant (bias bound of fan_in == 0)
    with pytest.raises(ValueError, match=r"^high: expected > low \(3\), got 3"):
        g.integers(3, 3, (2,))
    with pytest.raises(TypeError, match=r"^low: expected an integer, got float"):
        g.integers(0.5, 3, (2,))
    with pytest.raises(TypeError, match=r"^dtype: Generator.normal expects a real floating dtype of numpy, got"):
        g.normal((2,), dtype=np.int64)
    with pytest.raises(TypeError, match=r"^dtype: Generator.uniform expects a real floating dtype"):
        g.uniform((2,), dtype=np.bool_)
    with pytest.raises(TypeError, match=r"^dtype: Generator.integers expects an integral dtype"):
        g.integers(0, 2, (2,), dtype=np.float32)
    with pytest.raises(ValueError, match=r"^n: expected an integer >= 0, got -1"):
        g.permutation(-1)
    with pytest.raises(TypeError, match=r"^draws\[1\]: expected an array, got list"):
        NoiseGenerator([np.ones(2), [1.0, 2.0]])
