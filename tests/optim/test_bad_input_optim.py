"""arrayrl.optim on bad input: mixed dtypes, state and gradient trees that do not match the parameters, invalid
hyper-parameters, empty leaves. Goldens: torch.optim (which requires ``grad.dtype == param.dtype``, so its answer
for a float64 gradient of a float32 parameter is the cast gradient) and hand-written rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import arrayrl.optim as O
from arrayrl.tree import tree_leaves, tree_map

OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("AdamW", dict(lr=0.03, weight_decay=0.2, amsgrad=True)),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)]
SHAPES = {("layer", "weight"): (4, 3), ("layer", "bias"): (4,), ("log_alpha",): ()}


def _params(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return {"layer": {"weight": rng.normal(size=(4, 3)).astype(dtype), "bias": rng.normal(size=(4,)).astype(dtype)},
            "log_alpha": np.asarray(rng.normal(), dtype=dtype)}


def _grads(p, dtype=np.float64):
    return tree_map(lambda x: (np.cos(2.0 * x.astype(np.float64)) + 0.25).astype(dtype), p)


def _replace(tree, path, value):
    """A copy of the nested dict ``tree`` with ``tree[path]`` replaced (the input is left alone)."""
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: _replace(tree[path[0]], path[1:], value)}


def _state_keys(name, kw):
    if name == "SGD":
        return ["momentum_buffer"] if kw.get("momentum") else []
    return ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if kw.get("amsgrad") else [])


# ------------------------------------------------------------------------------------------------ dtypes
@pytest.mark.torchrl
@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=IDS)
def test_float64_gradients_keep_float32_parameters(name, kw):
    torch = pytest.importorskip("torch")
    p = _params(np.float32)
    opt = getattr(O, name)(**kw)
    state = opt.init(p)
    tparams = [torch.nn.Parameter(torch.tensor(x)) for x in tree_leaves(p)]
    topt = getattr(torch.optim, name)(tparams, **kw)
    for _ in range(3):
        g = _grads(p, np.float64)
        p, state = opt.update(g, state, p)
        for tp, gg in zip(tparams, tree_leaves(g)):
            tp.grad = torch.tensor(gg).to(torch.float32)  # torch needs the parameter's dtype
        topt.step()
        for leaf in tree_leaves(p) + [x for k in _state_keys(name, kw) for x in tree_leaves(state[k])]:
            assert leaf.dtype == np.float32
    for a, b in zip(tree_leaves(p), tparams):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=2e-6, atol=2e-7)


def test_float64_gradients_keep_float32_parameters_on_torch_and_strict():
    import array_api_strict as strict

    torch = pytest.importorskip("torch")
    for conv, f32, f64 in [(torch.asarray, torch.float32, torch.float64), (strict.asarray, strict.float32, strict.float64)]:
        p = {"w": conv(np.ones((2, 3)), dtype=f32)}
        g, _ = O.clip_grad_norm({"w": conv(np.full((2, 3), 0.5), dtype=f64)}, 1.0)  # clipping keeps float64
        assert g["w"].dtype == f64
        for opt in (O.SGD(lr=0.1, momentum=0.5), O.Adam(lr=0.1)):
            new, state = opt.update(g, opt.init(p), p)
            assert new["w"].dtype == f32
            assert all(x.dtype == f32 for x in tree_leaves({k: v for k, v in state.items() if k != "step"}))


# ------------------------------------------------------------------------------------------------ trees
def _wrong_shape(draw, shape):
    """A shape different from ``shape``, favouring the broadcastable ones (the silent failures)."""
    candidates = [(), (1,), tuple(1 for _ in shape), shape + (1,), (1,) + shape, tuple(s + 1 for s in shape)]
    cand = [c for c in candidates if c != shape]
    return draw(st.one_of(st.sampled_from(cand), st.lists(st.integers(0, 5), max_size=3).map(tuple)
                          .filter(lambda c: c != shape)))


@given(data=st.data(), which=st.sampled_from(range(len(OPTIMIZERS))), path=st.sampled_from(sorted(SHAPES)))
def test_state_leaf_of_wrong_shape_is_named(data, which, path):
    name, kw = OPTIMIZERS[which]
    keys = _state_keys(name, kw)
    if not keys:
        return
    key = data.draw(st.sampled_from(keys))
    bad = _wrong_shape(data.draw, SHAPES[path])
    p = _params()
    opt = getattr(O, name)(**kw)
    state = opt.init(p)
    state = {**state, key: _replace(state[key], path, np.zeros(bad, np.float32))}
    where = f"state['{key}']" + "".join(f"['{k}']" for k in path)
    with pytest.raises(ValueError, match=rf"^{ _re(where) }: expected shape .*, got \({', '.join(map(str, bad))}"):
        opt.update(_grads(p), {**state, "step": 1}, p)


@given(data=st.data(), which=st.sampled_from(range(len(OPTIMIZERS))), path=st.sampled_from(sorted(SHAPES)))
def test_gradient_leaf_of_wrong_shape_is_named(data, which, path):
    name, kw = OPTIMIZERS[which]
    bad = _wrong_shape(data.draw, SHAPES[path])
    p = _params()
    opt = getattr(O, name)(**kw)
    g = _replace(_grads(p), path, np.zeros(bad))
    where = "grads" + "".join(f"['{k}']" for k in path)
    with pytest.raises(ValueError, match=rf"^{_re(where)}: expected shape {_re(str(SHAPES[path]))}"):
        opt.update(g, opt.init(p), p)


def _re(text):
    import re

    return re.escape(text)


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=IDS)
def test_state_built_for_another_tree(name, kw):
    p = _params()
    other = {"encoder": {"weight": np.zeros((4, 3), np.float32)}, "log_alpha": np.zeros((), np.float32)}
    opt = getattr(O, name)(**kw)
    keys = _state_keys(name, kw)
    if keys:  # used to be a bare StopIteration
        with pytest.raises(ValueError, match=rf"state\['{keys[0]}'\]: expected the keys \['layer', 'log_alpha'\] "
                                             r"of params, got missing \['layer'\], unexpected \['encoder'\]"):
            opt.update(_grads(p), opt.init(other), p)
    with pytest.raises(ValueError, match=r"grads: expected the keys .* got missing \['layer'\]"):
        opt.update(_grads(other), opt.init(p), p)
    with pytest.raises(ValueError, match=r"grads\['layer'\]: expected the keys \['weight', 'bias'\] of "
                                         r"params\['layer'\], got order \['bias', 'weight'\]"):
        g = _grads(p)
        opt.update({**g, "layer": {"bias": g["layer"]["bias"], "weight": g["layer"]["weight"]}}, opt.init(p), p)


def test_state_of_another_optimizer_or_option():
    p = _params()
    with pytest.raises(ValueError, match=r"state: missing 'exp_avg'"):
        O.Adam().update(_grads(p), O.SGD(lr=0.1).init(p), p)
    with pytest.raises(ValueError, match=r"state\['max_exp_avg_sq'\]: expected a dict .*got None"):
        O.Adam(amsgrad=True).update(_grads(p), O.Adam().init(p), p)
    with pytest.raises(ValueError, match=r"state\['momentum_buffer'\]: expected a dict .*got None"):
        O.SGD(lr=0.1, momentum=0.9).update(_grads(p), O.SGD(lr=0.1).init(p), p)
    for bad in (None, {"exp_avg": 0}, {"step": -1}, {"step": 1.0}):
        with pytest.raises(ValueError, match=r"state: expected the dict returned by opt.init"):
            O.Adam().update(_grads(p), bad, p)


def test_non_floating_and_taped_leaves_are_rejected():
    from arrayrl.autodiff import Tensor

    p = _params()
    opt = O.Adam()
    with pytest.raises(TypeError, match=r"grads\['layer'\]\['bias'\]: expected a real floating"):
        opt.update(_replace(_grads(p), ("layer", "bias"), np.zeros(4, np.int64)), opt.init(p), p)
    ip = _replace(p, ("log_alpha",), np.zeros((), np.int64))
    with pytest.raises(TypeError, match=r"params\['log_alpha'\]: expected a real floating"):
        opt.update(_grads(p), opt.init(p), ip)
    tp = _replace(p, ("log_alpha",), Tensor(p["log_alpha"]))
    with pytest.raises(TypeError, match=r"params\['log_alpha'\]: the optimiser takes raw arrays"):
        opt.update(_grads(p), opt.init(p), tp)


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=IDS)
def test_empty_leaves_update(name, kw):
    p = {"w": np.zeros((0, 3), np.float32), "b": np.ones(2, np.float32)}
    g = {"w": np.zeros((0, 3)), "b": np.ones(2)}
    opt = getattr(O, name)(**kw)
    new, _ = opt.update(g, opt.init(p), p)
    assert new["w"].shape == (0, 3) and new["w"].dtype == np.float32
    assert np.all(new["b"] < 1.0)


# ------------------------------------------------------------------------------------------------ hyper-parameters
_SPECS = {  # argument -> (optimizers, valid(value)); the rule is torch.optim's, plus "finite"
    "lr": (["SGD", "Adam", "AdamW"], lambda v: math.isfinite(v) and v >= 0),
    "weight_decay": (["SGD", "Adam", "AdamW"], lambda v: math.isfinite(v) and v >= 0),
    "momentum": (["SGD"], lambda v: math.isfinite(v) and v >= 0),
    "dampening": (["SGD"], lambda v: 0 <= v <= 1),
    "eps": (["Adam", "AdamW"], lambda v: math.isfinite(v) and v >= 0),
    "betas[0]": (["Adam", "AdamW"], lambda v: 0 <= v < 1),
    "betas[1]": (["Adam", "AdamW"], lambda v: 0 <= v < 1),
}
_VALUES = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, -1e-12, 0.999999, 1.5]),
                    st.floats(-2.0, 2.0, allow_nan=False))


def _kwargs(arg, value):
    if arg.startswith("betas"):
        betas = [0.9, 0.999]
        betas[int(arg[6])] = value
        return {"betas": tuple(betas)}
    return {arg: value}


@given(arg=st.sampled_from(sorted(_SPECS)), value=_VALUES, data=st.data())
def test_hyper_parameters_are_validated_by_name(arg, value, data):
    names, valid = _SPECS[arg]
    name = data.draw(st.sampled_from(names))
    cls = getattr(O, name)
    kwargs = _kwargs(arg, value)
    if valid(value):
        opt = cls(**kwargs)
        p = _params()
        opt.update(_grads(p), opt.init(p), p)
        return
    with pytest.raises(ValueError, match=rf"^{_re(arg)}: expected a finite number"):
        cls(**kwargs)
    opt = cls()  # set after construction: caught at the next update
    if arg.startswith("betas"):
        opt.betas = kwargs["betas"]
    else:
        setattr(opt, arg, value)
    p = _params()
    with pytest.raises(ValueError, match=rf"^{_re(arg)}: expected a finite number"):
        opt.update(_grads(p), opt.init(p), p)


@pytest.mark.parametrize("kw,match", [
    (dict(lr="0.1"), r"lr: expected a real number, got str"),
    (dict(lr=None), r"lr: expected a real number, got NoneType"),
    (dict(lr=True), r"lr: expected a real number, got bool"),
    (dict(betas=(0.9,)), r"betas: expected a pair"),
    (dict(betas=0.9), r"betas: expected a pair"),
    (dict(amsgrad="yes"), r"amsgrad: expected True or False"),
    (dict(maximize=1), r"maximize: expected True or False"),
])
def test_adam_argument_types(kw, match):
    with pytest.raises((TypeError, ValueError), match=match):
        O.Adam(**kw)


def test_sgd_nesterov_and_flags():
    with pytest.raises(ValueError, match=r"nesterov: requires momentum > 0 and dampening == 0, got momentum=0.9, "
                                         r"dampening=0.5"):
        O.SGD(lr=0.1, momentum=0.9, dampening=0.5, nesterov=True)
    with pytest.raises(TypeError, match=r"nesterov: expected True or False"):
        O.SGD(lr=0.1, momentum=0.9, nesterov="yes")


@given(max_norm=_VALUES, norm_type=st.one_of(st.sampled_from([math.nan, -math.inf, -1.0, 0.0, 1.0, 2.0, math.inf]),
                                             st.floats(0.5, 4.0)))
def test_clip_grad_norm_arguments(max_norm, norm_type):
    g = {"a": np.array([3.0, -4.0]), "b": np.zeros((0, 2))}  # an empty leaf: contributes 0 to every norm
    if not (math.isfinite(max_norm) and max_norm >= 0):
        with pytest.raises(ValueError, match=r"^max_norm: expected a finite number >= 0"):
            O.clip_grad_norm(g, max_norm, norm_type)
    elif not norm_type > 0:
        with pytest.raises(ValueError, match=r"^norm_type: expected a positive number or inf"):
            O.clip_grad_norm(g, max_norm, norm_type)
    else:
        out, norm = O.clip_grad_norm(g, max_norm, norm_type)
        want = 4.0 if norm_type == math.inf else (3.0**norm_type + 4.0**norm_type) ** (1.0 / norm_type)
        np.testing.assert_allclose(float(norm), want, rtol=1e-9)
        assert out["b"].shape == (0, 2)


def test_clip_grad_norm_bad_trees():
    with pytest.raises(ValueError, match=r"grads: expected at least one array, got an empty tree"):
        O.clip_grad_norm({}, 1.0)
    with pytest.raises(TypeError, match=r"grads\['a'\]: expected a real floating"):
        O.clip_grad_norm({"a": np.array([1, 2])}, 1.0)
    with pytest.raises(TypeError, match=r"error_if_nonfinite: expected True or False"):
        O.clip_grad_norm({"a": np.ones(2)}, 1.0, error_if_nonfinite="no")
    with pytest.raises(TypeError, match=r"norm_type: expected a real number, got str"):
        O.global_norm({"a": np.ones(2)}, "fro")
