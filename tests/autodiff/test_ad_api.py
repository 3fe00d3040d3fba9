"""Public API of arrayrl.autodiff: pytrees, argnums, has_aux, vjp, stop_gradient, check_grads, errors, long chains."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import namespace_of, ops
from arrayrl._backend import backend_name, is_taped
from arrayrl.autodiff import (
    Tensor,
    check_grads,
    defvjp,
    grad,
    primitive,
    stop_gradient,
    taped_namespace,
    value_and_grad,
    vjp,
)
from reference.gradcheck import numerical_grad


def mlp_loss(params, x):
    xp = namespace_of(params["w1"], x)
    h = xp.tanh(x @ params["w1"] + params["b1"])
    out = h @ params["layers"][0]["w"] + params["layers"][1][0]
    return xp.mean(out**2)


def make_params(rng):
    return {
        "w1": rng.normal(size=(3, 4)),
        "b1": rng.normal(size=(4,)),
        "layers": [{"w": rng.normal(size=(4, 2))}, (rng.normal(size=(2,)),)],
    }


def test_pytree_gradients_same_nesting_raw_arrays():
    rng = np.random.default_rng(0)
    p, x = make_params(rng), rng.normal(size=(5, 3))
    v, g = value_and_grad(mlp_loss)(p, x)
    assert set(g) == {"w1", "b1", "layers"}
    assert isinstance(g["layers"], list) and isinstance(g["layers"][1], tuple)
    assert type(g["w1"]) is np.ndarray and not is_taped(g["w1"])
    assert g["layers"][0]["w"].shape == (4, 2)
    np.testing.assert_array_equal(np.asarray(v), np.asarray(mlp_loss(p, x)))
    fd = numerical_grad(lambda q: mlp_loss(q, x), p)
    np.testing.assert_allclose(g["w1"], fd["w1"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g["layers"][1][0], fd["layers"][1][0], rtol=1e-6, atol=1e-8)


def test_argnums_tuple_and_grad_and_has_aux():
    rng = np.random.default_rng(1)
    p, x = make_params(rng), rng.normal(size=(5, 3))
    v, (gp, gx) = value_and_grad(mlp_loss, argnums=(0, 1))(p, x)
    assert gx.shape == x.shape
    np.testing.assert_allclose(gx, numerical_grad(lambda y: mlp_loss(p, y), x), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(grad(mlp_loss, argnums=1)(p, x), gx)

    def with_aux(p, x):
        loss = mlp_loss(p, x)
        return loss, {"loss": loss, "h": p["w1"] * 2.0, "n": 3}

    (v2, aux), g2 = value_and_grad(with_aux, has_aux=True)(p, x)
    assert not is_taped(aux["loss"]) and not is_taped(aux["h"]) and aux["n"] == 3
    np.testing.assert_array_equal(g2["w1"], gp["w1"])
    g3, aux3 = grad(with_aux, has_aux=True)(p, x)
    np.testing.assert_array_equal(g3["b1"], gp["b1"])


def test_vjp_non_scalar_output_pytree():
    x = np.array([1.0, 2.0, 3.0])

    def f(x):
        xp = namespace_of(x)
        return {"a": xp.sin(x), "b": xp.sum(x * x)}

    out, vjp_fn = vjp(f, x)
    np.testing.assert_array_equal(out["a"], np.sin(x))
    (g,) = vjp_fn({"a": np.array([1.0, 0.0, 2.0]), "b": np.asarray(3.0)})
    np.testing.assert_allclose(g, np.cos(x) * [1.0, 0.0, 2.0] + 6.0 * x, rtol=1e-14)
    (g2,) = vjp_fn({"a": np.zeros(3), "b": np.asarray(1.0)})  # callable twice
    np.testing.assert_allclose(g2, 2.0 * x)
    with pytest.raises(ValueError, match="shape"):
        vjp_fn({"a": np.zeros(2), "b": np.asarray(1.0)})


def test_stop_gradient_blocks_flow():
    def f(x):
        xp = namespace_of(x)
        return xp.sum(x * stop_gradient(x)) + xp.sum(stop_gradient({"a": x})["a"])

    x = np.array([1.0, -2.0])
    np.testing.assert_array_equal(grad(f)(x), x)
    assert stop_gradient(x) is x


def test_constant_tensor_and_namespace_contract():
    t = Tensor(np.ones((2, 3)))
    xp = t.__array_namespace__()
    assert xp is taped_namespace(np) and xp._arrayrl_base is np
    assert backend_name(xp) == "taped[numpy]" and namespace_of(t) is xp
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and t.dtype == np.float64 and t.mT.shape == (3, 2)
    assert t.device == "cpu" and not t.requires_grad
    # non-differentiable functions return raw constants; dtypes and constants pass through
    assert type(xp.argmax(t, axis=1)) is np.ndarray
    assert type(t > 0.5) is np.ndarray and type(xp.isnan(t)) is np.ndarray
    assert xp.float32 is np.float32 and xp.pi == np.pi
    assert type(xp.zeros_like(t)) is np.ndarray and type(xp.astype(t, xp.int64)) is np.ndarray
    assert xp.asarray(t) is t
    from arrayrl._backend import default_float_dtype

    assert default_float_dtype(xp) == np.float64 and xp.__array_api_version__ == np.__array_api_version__
    assert xp.finfo(t.dtype).eps == np.finfo(np.float64).eps
    assert float(xp.sum(t)) == 6.0 and bool(Tensor(np.asarray(1.0))) and len(t) == 2
    assert [r.shape for r in t] == [(3,), (3,)]


def test_numpy_functions_refuse_tensors():
    t = Tensor(np.ones(3))
    with pytest.raises(TypeError):
        np.exp(t)
    with pytest.raises(TypeError):
        np.add(t, 1.0)
    with pytest.raises(TypeError, match="immutable"):
        t[0] = 1.0
    # NumPy functions that would convert (np.asarray -> object array) fail loudly instead of cutting the tape
    for fn in (np.asarray, np.mean, lambda v: np.concatenate([v]), lambda v: np.where(True, v, 0.0)):
        with pytest.raises(TypeError):
            fn(t)


def test_getitem_rejects_advanced_indices():
    t = Tensor(np.arange(6.0).reshape(2, 3))
    for key in (np.array([0, 1]), [0, 1], (slice(None), np.array([True, False, True])), t, True):
        with pytest.raises(TypeError, match="basic indexing"):
            t[key]
    assert t[np.int64(1), 2].value == 5.0


def test_namespace_of_a_raw_input_cannot_silently_cut_the_tape():
    def wrong(p, x):
        return namespace_of(x).mean((x @ p) ** 2)  # NumPy's namespace applied to a Tensor

    with pytest.raises(TypeError, match="cut the tape"):
        grad(wrong)(np.ones((3, 2)), np.ones((4, 3)))


def test_unknown_function_refuses_to_drop_gradient():
    def f(x):
        xp = namespace_of(x)
        return xp.sum(xp.cbrt(x))  # NumPy extra without a VJP

    with pytest.raises(NotImplementedError, match="cbrt"):
        grad(f)(np.ones(3))
    xp = Tensor(np.ones(3)).__array_namespace__()
    assert np.allclose(xp.cbrt(Tensor(np.full(3, 8.0))), 2.0)  # constants are fine


def test_raw_path_returns_raw_and_matches_taped_values():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3))
    for fn in (ops.logsumexp, ops.softplus, ops.smooth_l1, ops.sigmoid, ops.relu, ops.log_softmax, ops.softmax):
        r = fn(x)
        assert type(r) in (np.ndarray, np.float64)
        t = fn(Tensor(x))
        assert isinstance(t, Tensor)
        np.testing.assert_array_equal(np.asarray(t.value), np.asarray(r))


# --------------------------------------------------------------------------------------------------------- errors


def test_non_scalar_output_raises():
    with pytest.raises(ValueError, match=r"scalar .*shape \(3,\)"):
        value_and_grad(lambda x: x * 2.0)(np.ones(3))
    with pytest.raises(TypeError, match="must return a 0-d array"):
        value_and_grad(lambda x: "nope")(np.ones(3))


def test_integer_leaf_raises_naming_path():
    p = {"w": np.ones((2, 2)), "layers": [np.ones(2), np.arange(3)]}
    with pytest.raises(TypeError, match=r"args\[0\]\['layers'\]\[1\].*floating.*int64"):
        value_and_grad(lambda p: namespace_of(p["w"]).sum(p["w"]))(p)
    with pytest.raises(TypeError, match=r"args\[1\].*floating"):
        value_and_grad(lambda a, b: namespace_of(a).sum(a), argnums=(0, 1))(np.ones(2), np.arange(2))


def test_python_list_and_scalar_leaves_raise():
    with pytest.raises(TypeError, match=r"args\[0\]\[0\].*float"):
        value_and_grad(lambda x: x[0])([1.0, 2.0])
    with pytest.raises(TypeError, match=r"args\[0\].*float"):
        value_and_grad(lambda x: x)(1.0)


def test_mixed_backends_raise():
    torch = pytest.importorskip("torch")
    p = {"a": np.ones(2), "b": torch.ones(2, dtype=torch.float64)}
    with pytest.raises(TypeError, match=r"mixed array libraries.*args\[0\]\['a'\].*numpy.*args\[0\]\['b'\].*torch"):
        value_and_grad(lambda p: p["a"])(p)
    with pytest.raises(TypeError, match="mixed array libraries"):
        namespace_of(Tensor(np.ones(2)), torch.ones(2))


def test_mismatched_shapes_raise_value_error():
    with pytest.raises(ValueError):
        value_and_grad(lambda x, y: namespace_of(x).sum(x + y))(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="c: expected shape"):
        grad(lambda x: namespace_of(x).sum(ops.reverse_discounted_scan(x, np.ones(4))))(np.ones(3))


def test_nested_differentiation_differentiates_the_inner_gradient():
    def outer(x):  # d/dy sum(y * x) = x, so outer(x) = x[0] and its gradient is e_0 (hand calculation)
        return grad(lambda y: namespace_of(y).sum(y * x))(x)[0]

    np.testing.assert_array_equal(grad(outer)(np.ones(2)), [1.0, 0.0])


def test_tensor_in_keyword_argument_of_primitive_raises():
    p = primitive(lambda x, scale=1.0: x * scale, name="scaled")
    defvjp(p, lambda xp, g, ans, x, scale=1.0: g * scale)
    with pytest.raises(TypeError, match="keyword argument"):
        grad(lambda x: namespace_of(x).sum(p(np.ones(2), scale=x)))(np.ones(2))


def test_user_primitive_and_defvjp():
    cube = primitive(lambda x: x * x * x, name="cube", elementwise=True)
    defvjp(cube, lambda xp, g, ans, x: g * 3.0 * x * x)
    x = np.array([1.0, -2.0])
    np.testing.assert_allclose(grad(lambda x: namespace_of(x).sum(cube(x)))(x), 3 * x * x)
    assert type(cube(x)) is np.ndarray


def test_bad_vjp_shape_is_caught():
    bad = primitive(lambda x: x * 2.0, name="bad")
    defvjp(bad, lambda xp, g, ans, x: xp.sum(g))  # wrong shape, not elementwise
    with pytest.raises(AssertionError, match="VJP of bad"):
        grad(lambda x: namespace_of(x).sum(bad(x)))(np.ones(3))


# --------------------------------------------------------------------------------------------------------- check_grads


def test_check_grads_passes_and_catches_a_wrong_vjp():
    rng = np.random.default_rng(3)
    p, x = make_params(rng), rng.normal(size=(5, 3))
    check_grads(mlp_loss, (p, x))
    check_grads(lambda x: namespace_of(x).sin(x) * 2.0, (rng.normal(size=(40, 10)),), max_elements=8)  # directions
    wrong = primitive(lambda x: x * x, name="wrong_square", elementwise=True)
    defvjp(wrong, lambda xp, g, ans, x: g * x)  # should be 2 x g
    with pytest.raises(AssertionError, match="max error"):
        check_grads(lambda x: wrong(x), (rng.normal(size=(3,)),))
    with pytest.raises(AssertionError, match="direction"):
        check_grads(lambda x: wrong(x), (rng.normal(size=(30, 30)),))


# --------------------------------------------------------------------------------------------------------- long chains


def test_100k_node_chain_backward_iterative():
    n = 100_000

    def f(x):
        y = x
        for _ in range(n):
            y = y * 1.0000001 + 1e-7
        return namespace_of(y).sum(y)

    v, g = value_and_grad(f)(np.ones(2))
    np.testing.assert_allclose(g, np.full(2, 1.0000001**n), rtol=1e-9)


def test_cotangent_accumulation_does_not_mutate_shared_arrays():
    x = np.array([1.0, 2.0])
    y_raw = np.array([3.0, 4.0])
    y_copy = y_raw.copy()

    def f(x):
        xp = namespace_of(x)
        a = x * y_raw
        return xp.sum(a + a + x + x * x)  # fan-out: several cotangents accumulate on a and x

    g = grad(f)(x)
    np.testing.assert_array_equal(g, 2 * y_raw + 1 + 2 * x)
    np.testing.assert_array_equal(y_raw, y_copy)
    np.testing.assert_array_equal(x, [1.0, 2.0])
