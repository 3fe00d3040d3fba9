"""The orthogonal initialiser (``torch.nn.init.orthogonal_``) and CleanRL's ``layer_init`` (``orthogonal_layers``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arrayrl import nn
from arrayrl.random import Generator


def _generator(xp, seed=0):
    base = getattr(xp.ns, "_arrayrl_base", xp.ns)
    if not hasattr(base, "linalg"):
        pytest.skip(f"{xp.name} has no linalg extension")
    return Generator(seed, xp=base, device=xp.device)


@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (5, 5), (4, 2, 3)], ids=["tall", "wide", "square", "3d"])
def test_orthogonal_rows_or_columns(xp, shape):
    """W W^T = gain^2 I (wide/square) or W^T W = gain^2 I (tall), on the flattened [rows, cols] matrix."""
    gain = 1.7
    w = nn.orthogonal(_generator(xp), shape, gain=gain, dtype=xp.float_dtype)
    assert w.dtype == xp.float_dtype and tuple(w.shape) == shape
    m = xp.to_numpy(w).astype(np.float64).reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    tol = 1e-12 if xp.is_float64 else 1e-5
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(m.shape)), atol=tol * gain**2)


def test_orthogonal_dtype_and_errors():
    g = Generator(0)
    assert nn.orthogonal(g, (3, 4), dtype=np.float32).dtype == np.float32
    assert nn.orthogonal(g, (3, 4)).dtype == np.float64
    for bad in [(4,), 4, ()]:
        with pytest.raises(ValueError, match="shape: orthogonal needs at least 2 dimensions"):
            nn.orthogonal(g, bad)
    with pytest.raises(ValueError, match="gain"):
        nn.orthogonal(g, (2, 2), gain=float("nan"))
    assert nn.orthogonal(g, (0, 3)).shape == (0, 3)


def _ks(a, b):
    grid = np.sort(np.concatenate([a, b]))
    return np.abs(np.searchsorted(np.sort(a), grid, side="right") / a.size
                  - np.searchsorted(np.sort(b), grid, side="right") / b.size).max()


@pytest.mark.torchrl
@pytest.mark.parametrize("shape", [(6, 3), (3, 6)], ids=["tall", "wide"])
def test_orthogonal_matches_torch_statistically(shape):
    """The entries [0, 0] and [-1, -1] of 3000 draws have torch's distribution (two-sample Kolmogorov-Smirnov).

    The sign fix matters: without it, LAPACK's Householder QR makes ``Q[0, 0]`` always negative."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    n = 3000
    tw = np.stack([torch.nn.init.orthogonal_(torch.empty(shape)).numpy() for _ in range(n)])
    g = Generator(1)
    aw = np.stack([nn.orthogonal(g, shape) for _ in range(n)])
    for idx in [(0, 0), (-1, -1)]:
        a, t = aw[(slice(None),) + idx], tw[(slice(None),) + idx]
        # the 0.1% critical value of the KS distance for two samples of 3000 is 1.95 * sqrt(2 / 3000) = 0.050
        assert _ks(a, t) < 0.05, idx
        assert abs(a.mean()) < 0.03 and abs(a.var() - t.var()) < 0.02


def test_orthogonal_layers_cleanrl_layer_init():
    """CleanRL's Agent: hidden layers gain sqrt(2), head 0.01, zero biases; dtype kept; one gain for all."""
    mlp = nn.MLP(4, 2, num_cells=[64, 64], generator=Generator(0), dtype=np.float32)
    gains = [math.sqrt(2), math.sqrt(2), 0.01]
    new = nn.orthogonal_layers(Generator(1), mlp.params, gains)
    assert list(new) == list(mlp.params) == ["0", "2", "4"]
    for (key, layer), gain in zip(new.items(), gains):
        w = layer["weight"].astype(np.float64)
        assert layer["weight"].dtype == np.float32 and layer["weight"].shape == mlp.params[key]["weight"].shape
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        np.testing.assert_allclose(gram, gain**2 * np.eye(min(w.shape)), atol=1e-5 * gain**2)
        assert layer["bias"].dtype == np.float32 and not layer["bias"].any()
    assert mlp.params["0"]["bias"].any()  # the input tree is untouched
    one = nn.orthogonal_layers(Generator(1), mlp.params["0"], 2.0, bias_const=0.5)
    assert set(one) == {"weight", "bias"} and np.all(one["bias"] == 0.5)
    np.testing.assert_allclose(one["weight"].T.astype(np.float64) @ one["weight"], 4 * np.eye(4), atol=1e-5)


def test_orthogonal_layers_errors():
    mlp = nn.MLP(4, 2, num_cells=[8])
    with pytest.raises(ValueError, match=r"gains: expected one gain per layer \(2\), got 3"):
        nn.orthogonal_layers(Generator(0), mlp.params, [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="params: expected a linear layer"):
        nn.orthogonal_layers(Generator(0), {"0": np.zeros((2, 2))}, 1.0)
