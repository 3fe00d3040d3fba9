"""Self-tests of reference.gradcheck on functions with hand-derived derivatives."""

from __future__ import annotations

import numpy as np
import pytest

from reference.gradcheck import numerical_grad, numerical_jacobian, numerical_vjp


def test_grad_of_array_function():
    # f(x) = sum x^3 + x0 x1 -> df/dx = 3 x^2 + (x1, x0, 0)
    x = np.array([1.0, -2.0, 0.5])
    g = numerical_grad(lambda v: np.sum(v**3) + v[0] * v[1], x)
    np.testing.assert_allclose(g, [3 + -2.0, 12 + 1.0, 0.75], rtol=1e-8, atol=1e-8)
    assert g.dtype == np.float64 and g.shape == x.shape


def test_grad_casts_and_does_not_mutate():
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    x_copy = x.copy()
    g = numerical_grad(lambda v: float(np.sum(np.sin(v))), x)
    np.testing.assert_allclose(g, np.cos(x.astype(np.float64)), rtol=1e-8)
    np.testing.assert_array_equal(x, x_copy)
    assert g.dtype == np.float64


def test_grad_of_pytree():
    # f = a * sum(w) + b[0] * c  with a python float leaf, a bool leaf ignored
    tree = {"w": np.array([1.0, 2.0]), "pair": (np.array(3.0), 4.0), "mask": np.array([True, False])}

    def f(t):
        return t["pair"][0] * np.sum(t["w"]) + t["pair"][1] ** 2 * np.sum(t["w"][t["mask"]])

    g = numerical_grad(f, tree)
    assert set(g) == {"w", "pair", "mask"} and isinstance(g["pair"], tuple)
    # d/dw = 3 + 16 * mask ; d/dpair0 = sum w = 3 ; d/dpair1 = 2*4*w0 = 8
    np.testing.assert_allclose(g["w"], [19.0, 3.0], rtol=1e-8)
    np.testing.assert_allclose(g["pair"][0], 3.0, rtol=1e-8)
    np.testing.assert_allclose(g["pair"][1], 8.0, rtol=1e-8)
    assert g["mask"] is None


def test_vjp_matches_matrix_product():
    rng = np.random.default_rng(0)
    A, x, y = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=3)
    ct = rng.normal(size=3)
    # f(x, y) = A x * y (elementwise) ; ct . df/dx = (ct*y) A ; ct . df/dy = ct * (A x)
    gx, gy = numerical_vjp(lambda a, b: (A @ a) * b, (x, y), ct)
    np.testing.assert_allclose(gx, (ct * y) @ A, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gy, ct * (A @ x), rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="cotangent"):
        numerical_vjp(lambda a, b: (A @ a) * b, (x, y), np.ones(2))


def test_jacobian_shape_and_values():
    x = np.array([[0.3, -1.2]])
    J = numerical_jacobian(lambda v: np.stack([v[0, 0] * v[0, 1], np.exp(v[0, 1]), v[0, 0]]), x)
    assert J.shape == (3, 1, 2)
    np.testing.assert_allclose(J[:, 0, :], [[-1.2, 0.3], [0.0, np.exp(-1.2)], [1.0, 0.0]], rtol=1e-8, atol=1e-9)
