"""ReplayBuffer: ring writes and wrap, uniform sampling, nested keys, dtype/device kept, structure errors."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import Generator
from arrayrl._backend import to_numpy
from arrayrl.recipes import ReplayBuffer


def _backends():
    out = [pytest.param("numpy", id="numpy")]
    try:
        import array_api_strict  # noqa: F401

        out.append(pytest.param("array_api_strict", id="array_api_strict"))
    except ImportError:
        pass
    try:
        import torch  # noqa: F401

        out.append(pytest.param("torch", id="torch"))
    except ImportError:
        pass
    return out


def _xp(name):
    if name == "numpy":
        return np
    if name == "torch":
        import array_api_compat.torch as xp

        return xp
    import array_api_strict as xp

    return xp


def _batch(xp, start, n):
    """Transitions numbered start..start+n-1: the number is in every leaf, so rows can be traced."""
    v = np.arange(start, start + n)
    return {
        "observation": xp.asarray(np.stack([v, -v], axis=1).astype(np.float32)),
        "action": xp.asarray(v.astype(np.int64)),
        "next": {
            "observation": xp.asarray(np.stack([v + 0.5, -v], axis=1).astype(np.float32)),
            "reward": xp.asarray(v[:, None].astype(np.float32)),
            "done": xp.asarray((v % 2 == 0)[:, None]),
        },
    }


@pytest.mark.parametrize("backend", _backends())
def test_ring_write_wraps_and_keeps_structure(backend):
    xp = _xp(backend)
    rb = ReplayBuffer(5)
    rb.extend(_batch(xp, 0, 3))
    assert len(rb) == 3
    rb.extend(_batch(xp, 3, 3))  # 3 -> row 3, 4 -> row 4, 5 -> row 0 (wrap split in two slices)
    assert len(rb) == 5
    st = rb.storage()
    np.testing.assert_array_equal(to_numpy(st["action"]), [5, 1, 2, 3, 4])
    np.testing.assert_array_equal(to_numpy(st["next"]["reward"])[:, 0], [5, 1, 2, 3, 4])
    np.testing.assert_array_equal(to_numpy(st["next"]["observation"])[:, 0], [5.5, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(to_numpy(st["next"]["done"])[:, 0], [False, False, True, False, True])
    # dtype, trailing shape, namespace kept
    for key, dtype in (("action", xp.int64), ("observation", xp.float32)):
        assert st[key].dtype == dtype
    assert st["next"]["done"].dtype == xp.bool
    assert tuple(st["observation"].shape) == (5, 2) and tuple(st["next"]["reward"].shape) == (5, 1)
    assert type(st["action"]) is type(_batch(xp, 0, 1)["action"])
    # a batch longer than the ring keeps its last `capacity` transitions, oldest overwritten first
    rb.extend(_batch(xp, 10, 7))  # pos 1: 12..16 -> rows 1,2,3,4,0
    np.testing.assert_array_equal(to_numpy(rb.storage()["action"]), [16, 12, 13, 14, 15])
    assert len(rb) == 5


@pytest.mark.parametrize("backend", _backends())
def test_sample_rows_are_whole_transitions(backend):
    xp = _xp(backend)
    rb = ReplayBuffer(8)
    rb.extend(_batch(xp, 0, 6))
    s = rb.sample(50, Generator(3, xp=xp))
    a = to_numpy(s["action"])
    assert a.shape == (50,) and a.min() >= 0 and a.max() <= 5  # only filled rows
    np.testing.assert_array_equal(to_numpy(s["next"]["reward"])[:, 0], a)  # the leaves of a row stay together
    np.testing.assert_array_equal(to_numpy(s["observation"])[:, 1], -a)
    np.testing.assert_array_equal(to_numpy(s["next"]["done"])[:, 0], a % 2 == 0)
    assert s["next"]["done"].dtype == xp.bool and s["action"].dtype == xp.int64


def test_sampling_is_uniform_with_replacement():
    rb = ReplayBuffer(16)
    rb.extend(_batch(np, 0, 10))  # partly filled: only rows 0..9 may be drawn
    n = 20_000
    counts = np.bincount(rb.sample(n, Generator(0))["action"], minlength=16)
    assert counts[10:].sum() == 0
    expected = n / 10
    chi2 = ((counts[:10] - expected) ** 2 / expected).sum()
    assert chi2 < 27.88  # chi-square, 9 degrees of freedom, p = 0.001
    # with replacement: a sample larger than the buffer is fine and repeats rows
    assert rb.sample(25, Generator(1))["action"].shape == (25,)
    # the same generator seed gives the same draws
    np.testing.assert_array_equal(rb.sample(64, Generator(7))["action"], rb.sample(64, Generator(7))["action"])


def test_torch_device_and_dtype_kept():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as xp

    rb = ReplayBuffer(4)
    rb.extend(_batch(xp, 0, 2))
    s = rb.sample(3, Generator(0, xp=xp, device=torch.device("cpu")))
    assert isinstance(s["observation"], torch.Tensor) and s["observation"].device.type == "cpu"
    assert s["observation"].dtype == torch.float32 and s["next"]["done"].dtype == torch.bool


def test_structure_errors_name_the_key():
    rb = ReplayBuffer(4)
    rb.extend(_batch(np, 0, 2))
    bad = _batch(np, 0, 2)
    del bad["next"]["reward"]
    with pytest.raises(ValueError, match=r"missing keys \[\"\('next', 'reward'\)\"\]"):
        rb.extend(bad)
    bad = _batch(np, 0, 2)
    bad["next"]["extra"] = np.zeros((2, 1))
    with pytest.raises(ValueError, match=r"unexpected keys \[\"\('next', 'extra'\)\"\]"):
        rb.extend(bad)
    bad = _batch(np, 0, 2)
    bad["next"]["reward"] = bad["next"]["reward"].astype(np.float64)
    with pytest.raises(ValueError, match=r"\('next', 'reward'\).*dtype float32"):
        rb.extend(bad)
    bad = _batch(np, 0, 2)
    bad["observation"] = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"'observation'.*shape \[B, 2\]"):
        rb.extend(bad)
    bad = _batch(np, 0, 2)
    bad["action"] = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match=r"'action'.*batch size 3"):
        rb.extend(bad)
    assert len(rb) == 2  # nothing was written by the failed calls
    with pytest.raises(RuntimeError, match="empty"):
        ReplayBuffer(3).sample(1, Generator(0))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)


@pytest.mark.parametrize("backend", _backends())
def test_sample_is_take_of_the_drawn_indices(backend):
    """sample = take(storage, idx, axis=0) per leaf, idx = generator.integers(0, len, (n,)): the NumPy fast path
    (ndarray.take) and the generic namespace take give that same golden."""
    xp = _xp(backend)
    rb = ReplayBuffer(7)
    rb.extend(_batch(xp, 0, 5))
    s = rb.sample(40, Generator(11, xp=xp))
    idx = to_numpy(Generator(11, xp=xp).integers(0, 5, (40,)))
    st = {k: to_numpy(v) for k, v in rb.storage().items() if k != "next"}
    st.update({("next", k): to_numpy(v) for k, v in rb.storage()["next"].items()})
    for key, full in st.items():
        got = s[key[0]][key[1]] if isinstance(key, tuple) else s[key]
        np.testing.assert_array_equal(to_numpy(got), np.take(full, idx, axis=0))
        assert type(got) is type(rb.storage()["action"])


def test_nested_structure_and_key_order_kept():
    """Three levels, leaves and nested dicts interleaved: sample() and storage() rebuild the same nested keys in the
    same order (as data.keys lists them), each leaf with its own values."""
    from arrayrl import data

    def batch(start, n):
        v = np.arange(start, start + n)
        return {"a": v.astype(np.float32), "next": {"r": v[:, None] * 10, "deep": {"x": v.astype(np.int32) * 100}},
                "b": v % 2 == 1, "c": {"y": v.astype(np.float64)[:, None, None] * 1000}}

    rb = ReplayBuffer(6)
    rb.extend(batch(0, 4))
    rb.extend(batch(4, 3))  # wraps: rows 4, 5, 0
    for out in (rb.storage(), rb.sample(30, Generator(2))):
        assert data.keys(out) == data.keys(batch(0, 1)) == [("a",), ("next", "r"), ("next", "deep", "x"), ("b",),
                                                            ("c", "y")]
        a = out["a"].astype(np.int64)
        np.testing.assert_array_equal(out["next"]["r"][:, 0], a * 10)
        np.testing.assert_array_equal(out["next"]["deep"]["x"], a * 100)
        np.testing.assert_array_equal(out["b"], a % 2 == 1)
        np.testing.assert_array_equal(out["c"]["y"][:, 0, 0], a * 1000)
        assert [out["a"].dtype, out["next"]["r"].dtype, out["next"]["deep"]["x"].dtype, out["b"].dtype,
                out["c"]["y"].dtype] == [np.float32, np.int64, np.int32, np.bool_, np.float64]
    np.testing.assert_array_equal(rb.storage()["a"], [6, 1, 2, 3, 4, 5])


def test_batch_size_may_change_between_extends():
    rb = ReplayBuffer(10)
    for start, n in ((0, 3), (3, 1), (4, 4), (8, 1)):
        rb.extend(_batch(np, start, n))
    np.testing.assert_array_equal(rb.storage()["action"][:9], np.arange(9))
    bad = _batch(np, 9, 2)
    bad["next"]["observation"] = np.zeros((2, 3), np.float32)  # the shapes checked are those of this batch size
    with pytest.raises(ValueError, match=r"\('next', 'observation'\).*shape \[B, 2\].*\[2, 3\]"):
        rb.extend(bad)
    rb.extend(_batch(np, 9, 2))  # back to a good batch of the same size
    np.testing.assert_array_equal(rb.storage()["action"], [10, 1, 2, 3, 4, 5, 6, 7, 8, 9])


def test_nested_structure_errors():
    rb = ReplayBuffer(4)
    rb.extend(_batch(np, 0, 2))
    bad = _batch(np, 0, 2)
    bad["next"] = bad["next"]["reward"]  # a leaf where a nested dict was
    with pytest.raises(ValueError, match=r"missing keys .*\('next', 'observation'\).*unexpected keys \[\"'next'\"\]"):
        rb.extend(bad)
    bad = _batch(np, 0, 2)
    bad["action"] = {"x": bad["action"]}  # a nested dict where a leaf was
    with pytest.raises(ValueError, match=r"batch\['action'\]: expected an array with a leading batch axis, got dict"):
        rb.extend(bad)
    bad = _batch(np, 0, 2)
    bad["next"]["reward"] = [[0.0], [1.0]]  # not an array
    with pytest.raises(ValueError, match=r"\('next', 'reward'\).*expected an array"):
        rb.extend(bad)
    with pytest.raises(TypeError, match="batch: expected a nested dict"):
        rb.extend([1, 2])
    assert len(rb) == 2
