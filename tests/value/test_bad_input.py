"""Bad input to the value layer: every public function of ``arrayrl.value.functional`` and every estimator class
is fuzzed (Hypothesis) with wrong shapes, dtypes, libraries and hyper-parameters, and fed empty batches.

The contract under test: never a silent broadcast or promotion, never an obscure error from deep inside; a
``TypeError``/``ValueError`` whose message names the offending argument (functional) or batch key (classes).
Goldens are hand-derived: the shape of an empty output, ``0`` for the standardisation of a single element.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import arrayrl.value as AV
from arrayrl.value import functional as F

GAMMA, LMBDA = 0.9, 0.8

# name -> (float arguments in the order the function checks them, flag arguments, call(arrays, gamma, lmbda))
FUNCS = {
    "td0_return_estimate": (
        ("next_state_value", "reward"), ("terminated",),
        lambda a, g, l: F.td0_return_estimate(g, a["next_state_value"], a["reward"], a["terminated"]),
    ),
    "td0_advantage_estimate": (
        ("state_value", "next_state_value", "reward"), ("done", "terminated"),
        lambda a, g, l: F.td0_advantage_estimate(g, a["state_value"], a["next_state_value"], a["reward"], a["done"],
                                                 a["terminated"]),
    ),
    "td1_return_estimate": (
        ("next_state_value", "reward"), ("done", "terminated"),
        lambda a, g, l: F.td1_return_estimate(g, a["next_state_value"], a["reward"], a["done"], a["terminated"]),
    ),
    "td1_advantage_estimate": (
        ("state_value", "next_state_value", "reward"), ("done", "terminated"),
        lambda a, g, l: F.td1_advantage_estimate(g, a["state_value"], a["next_state_value"], a["reward"], a["done"],
                                                 a["terminated"]),
    ),
    "td_lambda_return_estimate": (
        ("next_state_value", "reward"), ("done", "terminated"),
        lambda a, g, l: F.td_lambda_return_estimate(g, l, a["next_state_value"], a["reward"], a["done"],
                                                    a["terminated"]),
    ),
    "td_lambda_advantage_estimate": (
        ("state_value", "next_state_value", "reward"), ("done", "terminated"),
        lambda a, g, l: F.td_lambda_advantage_estimate(g, l, a["state_value"], a["next_state_value"], a["reward"],
                                                       a["done"], a["terminated"]),
    ),
    "generalized_advantage_estimate": (
        ("state_value", "next_state_value", "reward"), ("done", "terminated"),
        lambda a, g, l: F.generalized_advantage_estimate(g, l, a["state_value"], a["next_state_value"], a["reward"],
                                                         a["done"], a["terminated"]),
    ),
    "vtrace_advantage_estimate": (
        ("state_value", "next_state_value", "reward", "log_pi", "log_mu"), ("done", "terminated"),
        lambda a, g, l: F.vtrace_advantage_estimate(g, a["log_pi"], a["log_mu"], a["state_value"],
                                                    a["next_state_value"], a["reward"], a["done"], a["terminated"]),
    ),
    "reward2go": (("reward",), ("done",), lambda a, g, l: F.reward2go(a["reward"], a["done"], g)),
}
for _name in F.__all__:  # the vec_ names are the same functions
    if _name.startswith("vec_"):
        FUNCS[_name] = FUNCS[_name[4:]]
USES_LMBDA = {n for n in FUNCS if "lambda" in n or "generalized" in n}


def test_every_public_function_is_fuzzed():
    assert set(FUNCS) == set(F.__all__)


def _inputs(names, shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for n in names:
        if n in ("done", "terminated"):
            out[n] = rng.random(shape) < 0.3
        else:
            out[n] = rng.normal(size=shape).astype(dtype)
    return out


def _outputs(res):
    return res if isinstance(res, tuple) else (res,)


def _named(msg: str, name: str) -> bool:
    """The message is about ``name``: it starts with it or names it as the reference of the comparison."""
    return msg.startswith(f"{name}:") or f"(the shape of {name})" in msg or f"differs from {name}:" in msg


@st.composite
def wrong_shapes(draw, shape):
    """A shape that is not ``shape``: often a broadcast-compatible one ([B, T] vs [B, T, 1], a size 1...)."""
    kind = draw(st.sampled_from(["drop_last", "add_last", "add_first", "resize", "one", "swap"]))
    s = list(shape)
    if kind == "drop_last":
        s = s[:-1]
    elif kind == "add_last":
        s = s + [1]
    elif kind == "add_first":
        s = [draw(st.integers(1, 3))] + s
    elif kind in ("resize", "one"):
        i = draw(st.integers(0, len(s) - 1))
        s[i] = 1 if kind == "one" and s[i] != 1 else s[i] + draw(st.sampled_from([-1, 1, 2]))
    else:
        s = [s[1], s[0]] + s[2:]
    if tuple(s) == tuple(shape) or min(s, default=1) < 0:
        s = list(shape) + [2]
    return tuple(s)


batch_shapes = st.tuples(st.integers(1, 4), st.integers(1, 5)).map(lambda bt: bt + (1,))


# ----------------------------------------------------------------------------------------------- functional


@pytest.mark.parametrize("fname", sorted(FUNCS))
@given(data=st.data(), shape=batch_shapes)
def test_wrong_shape_names_the_argument(fname, data, shape):
    floats, flags, call = FUNCS[fname]
    arrays = _inputs(floats + flags, shape)
    name = data.draw(st.sampled_from(floats + flags), label="argument")
    bad = data.draw(wrong_shapes(shape), label="shape")
    arrays[name] = _inputs((name,), bad)[name]
    with pytest.raises(ValueError) as err:
        call(arrays, GAMMA, LMBDA)
    assert _named(str(err.value), name), str(err.value)


@pytest.mark.parametrize("fname", sorted(FUNCS))
@given(data=st.data(), shape=batch_shapes)
def test_wrong_dtype_names_the_argument(fname, data, shape):
    floats, flags, call = FUNCS[fname]
    base = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype of the others")
    arrays = _inputs(floats + flags, shape, base)
    name = data.draw(st.sampled_from(floats + flags), label="argument")
    if name in flags:
        bad = data.draw(st.sampled_from([np.float64, np.int64, np.uint8]), label="bad dtype")
        arrays[name] = arrays[name].astype(bad)
        with pytest.raises(TypeError, match=rf"^{name}: expected a bool dtype, got {np.dtype(bad).name}"):
            call(arrays, GAMMA, LMBDA)
        return
    other = np.float64 if base is np.float32 else np.float32
    candidates = [np.float16, np.int32, np.int64, np.bool_] + ([other] if len(floats) > 1 else [])
    bad = data.draw(st.sampled_from(candidates), label="bad dtype")
    arrays[name] = arrays[name].astype(bad)
    with pytest.raises(TypeError) as err:
        call(arrays, GAMMA, LMBDA)
    msg = str(err.value)
    assert _named(msg, name), msg
    if bad is other:  # a float32/float64 mix names both arguments and both dtypes
        assert re.search(r"dtype (float32|float64) differs from \w+: (float32|float64)", msg), msg
    else:
        assert f"expected a real floating dtype (float32 or float64), got {np.dtype(bad).name}" in msg, msg


BAD_UNIT = [math.nan, math.inf, -math.inf, 1.0 + 1e-6, -1e-6, 2, -1]


@pytest.mark.parametrize("fname", sorted(FUNCS))
@given(bad=st.sampled_from(BAD_UNIT) | st.floats(1.0, 1e30, exclude_min=True) | st.floats(-1e30, 0.0, exclude_max=True),
       which=st.sampled_from(["gamma", "lmbda"]), as_numpy=st.booleans())
def test_hyperparameter_out_of_range(fname, bad, which, as_numpy):
    floats, flags, call = FUNCS[fname]
    if which == "lmbda" and fname not in USES_LMBDA:
        which = "gamma"
    arrays = _inputs(floats + flags, (2, 3, 1))
    if as_numpy:  # a NumPy scalar is a host number too (float32 where the rounding keeps it out of range)
        bad = np.float32(bad) if not 0.0 <= np.float32(bad) <= 1.0 else np.float64(bad)
    g, l = (bad, LMBDA) if which == "gamma" else (GAMMA, bad)
    with pytest.raises(ValueError, match=rf"^{which}: expected a number in \[0, 1\], got"):
        call(arrays, g, l)
    for edge in (0, 1, 0.0, 1.0, np.float32(1.0)):  # the bounds themselves are valid
        for o in _outputs(call(arrays, *((edge, LMBDA) if which == "gamma" else (GAMMA, edge)))):
            assert np.all(np.isfinite(o))


@given(bad=st.sampled_from([0.0, -1.0, math.nan, -math.inf]), which=st.sampled_from(["rho_thresh", "c_thresh"]))
def test_vtrace_thresholds_must_be_positive(bad, which):
    floats, flags, _ = FUNCS["vtrace_advantage_estimate"]
    a = _inputs(floats + flags, (2, 3, 1))
    with pytest.raises(ValueError, match=rf"^{which}: expected a number in \(0, inf\]"):
        F.vtrace_advantage_estimate(GAMMA, a["log_pi"], a["log_mu"], a["state_value"], a["next_state_value"],
                                    a["reward"], a["done"], **{which: bad})
    # no truncation at all is a valid choice
    F.vtrace_advantage_estimate(GAMMA, a["log_pi"], a["log_mu"], a["state_value"], a["next_state_value"],
                                a["reward"], a["done"], **{which: math.inf})


@pytest.mark.parametrize("fname", sorted(FUNCS))
@given(data=st.data(), shape=batch_shapes, which=st.sampled_from(["gamma", "lmbda"]))
def test_per_step_hyperparameter_of_another_shape(fname, data, shape, which):
    """A per-step gamma/lmbda has exactly the inputs' shape (or one element): [B, 1] against [B, T, 1] or
    [B, T] against [B, T, 1] never broadcasts."""
    floats, flags, call = FUNCS[fname]
    if which == "lmbda" and fname not in USES_LMBDA:
        which = "gamma"
    bad = data.draw(wrong_shapes(shape).filter(lambda s: math.prod(s) != 1), label="shape")
    arrays = _inputs(floats + flags, shape)
    per_step = np.full(bad, 0.5)
    g, l = (per_step, LMBDA) if which == "gamma" else (GAMMA, per_step)
    with pytest.raises(ValueError, match=rf"^{which}: expected a scalar or an array of the inputs' shape"):
        call(arrays, g, l)
    if fname.startswith("td0"):  # the brief's case: a [B, 1] per-step gamma against [B] inputs (no time axis)
        arrays = _inputs(floats + flags, (4,))
        with pytest.raises(ValueError, match=r"^gamma: expected a scalar or an array of the inputs' shape \(4,\)"):
            call(arrays, np.full((4, 1), 0.9), LMBDA)


@pytest.mark.parametrize("fname", ["generalized_advantage_estimate", "td_lambda_return_estimate", "reward2go",
                                   "td0_return_estimate", "vtrace_advantage_estimate"])
def test_per_step_gamma_of_another_library(fname):
    torch = pytest.importorskip("torch")
    floats, flags, call = FUNCS[fname]
    arrays = {k: torch.asarray(v) for k, v in _inputs(floats + flags, (2, 3, 1)).items()}
    for gamma in (np.full((2, 3, 1), 0.9), np.asarray(0.9)):
        with pytest.raises(TypeError, match=r"mixed array libraries: \w+ is torch, gamma is numpy"):
            call(arrays, gamma, LMBDA)
    with pytest.raises(TypeError, match=r"^gamma: expected a number or a real array, got dtype bool"):
        call(arrays, torch.ones((2, 3, 1), dtype=torch.bool), LMBDA)
    # NumPy scalars are host numbers, accepted like Python floats
    for gamma in (np.float32(0.9), np.float64(0.9)):
        out = _outputs(call(arrays, gamma, LMBDA))
        ref = _outputs(call(arrays, 0.9, LMBDA))
        for o, r in zip(out, ref):
            assert o.dtype == torch.float64
            np.testing.assert_allclose(o.numpy(), r.numpy(), rtol=1e-6)


@pytest.mark.parametrize("fname", sorted(FUNCS))
@given(data=st.data())
def test_mixed_libraries_name_both_arguments(fname, data):
    torch = pytest.importorskip("torch")
    floats, flags, call = FUNCS[fname]
    arrays = _inputs(floats + flags, (2, 3, 1))
    names = floats + flags
    name = data.draw(st.sampled_from(names[1:] if len(names) > 1 else names), label="torch argument")
    arrays[name] = torch.asarray(arrays[name])
    with pytest.raises(TypeError, match=rf"mixed array libraries: {names[0]} is numpy, {name} is torch"):
        call(arrays, GAMMA, LMBDA)


@pytest.mark.parametrize("fname", sorted(FUNCS))
@pytest.mark.parametrize("shape", [(0, 4, 1), (3, 0, 1), (0, 0, 1), (2, 3, 0)])
def test_empty_batches_give_empty_outputs(fname, shape, raw_xp):
    """Scalar and per-step (empty) hyper-parameters; no warning either (no "mean of empty slice")."""
    floats, flags, call = FUNCS[fname]
    arrays = {k: raw_xp.from_numpy(v) for k, v in _inputs(floats + flags, shape).items()}
    per_step = raw_xp.from_numpy(np.full(shape, 0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _outputs(call(arrays, GAMMA, LMBDA)) + _outputs(call(arrays, per_step, per_step))
        a = arrays
        if fname.endswith("td1_return_estimate"):
            out += (F.td1_return_estimate(per_step, a["next_state_value"], a["reward"], a["done"],
                                          rolling_gamma=False),)
        if fname.endswith("td_lambda_return_estimate"):
            out += (F.td_lambda_return_estimate(GAMMA, per_step, a["next_state_value"], a["reward"], a["done"],
                                                rolling_gamma=False),)
    for o in out:
        assert tuple(o.shape) == shape
        assert o.dtype == raw_xp.float_dtype


# ---------------------------------------------------------------------------------------------- estimators

VALUE_KEYS = ("state_value", ("next", "state_value"), ("next", "reward"), ("next", "done"), ("next", "terminated"))


def _actor(batch):
    return batch["action_log_prob"] * 0.5


CLASSES = {
    "TD0Estimator": lambda **k: AV.TD0Estimator(gamma=GAMMA, value_network=None, **k),
    "TD1Estimator": lambda **k: AV.TD1Estimator(gamma=GAMMA, value_network=None, **k),
    "TDLambdaEstimator": lambda **k: AV.TDLambdaEstimator(gamma=GAMMA, lmbda=LMBDA, value_network=None, **k),
    "GAE": lambda **k: AV.GAE(gamma=GAMMA, lmbda=LMBDA, value_network=None, **k),
    "MultiAgentGAE": lambda **k: AV.MultiAgentGAE(gamma=GAMMA, lmbda=LMBDA, value_network=None, **k),
    "VTrace": lambda **k: AV.VTrace(gamma=GAMMA, actor_network=_actor, value_network=None, **k),
}
N_AGENTS = 3


def test_every_estimator_class_is_fuzzed():
    assert set(CLASSES) == {n for n in AV.estimators.__all__ if n.endswith(("Estimator", "GAE", "VTrace"))}


def _batch(cls_name, shape, dtype=np.float64, seed=0):
    """``{key: array}`` (flat, tuple keys) of a batch; MultiAgentGAE's values get an agent axis."""
    rng = np.random.default_rng(seed)
    vshape = shape[:-1] + (N_AGENTS, 1) if cls_name == "MultiAgentGAE" else shape
    flat = {
        "state_value": rng.normal(size=vshape).astype(dtype),
        ("next", "state_value"): rng.normal(size=vshape).astype(dtype),
        ("next", "reward"): rng.normal(size=shape).astype(dtype),
        ("next", "done"): rng.random(shape) < 0.3,
    }
    flat[("next", "terminated")] = flat[("next", "done")] & (rng.random(shape) < 0.5)
    if cls_name == "VTrace":
        flat["action_log_prob"] = (rng.normal(size=shape) * 0.2).astype(dtype)
    return flat


def _nest(flat):
    out: dict = {"next": {}}
    for k, v in flat.items():
        if isinstance(k, tuple):
            out[k[0]][k[1]] = v
        else:
            out[k] = v
    return out


def _key_named(msg: str, key) -> bool:
    from arrayrl.data import key_str

    return _named(msg, f"key {key_str(key)}")


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
@given(data=st.data(), shape=batch_shapes)
def test_estimator_wrong_shape_names_the_key(cls_name, data, shape):
    flat = _batch(cls_name, shape)
    keys = [k for k in flat if not (cls_name == "MultiAgentGAE" and k == "state_value")]
    key = data.draw(st.sampled_from(keys), label="key")
    good = tuple(flat[key].shape)
    strategy = wrong_shapes(good)
    if key == "action_log_prob":  # [*B, T] is TorchRL's sample_log_prob layout, accepted for [*B, T, 1] values
        strategy = strategy.filter(lambda s: s != good[:-1])
    if cls_name == "MultiAgentGAE" and key[0] == "next" and key != ("next", "state_value"):
        # a team signal [*B, T, 1] may also be per-agent, of the value's shape [*B, T, n_agents, 1] (documented)
        strategy = strategy.filter(lambda s: s != tuple(flat["state_value"].shape))
    bad = data.draw(strategy, label="shape")
    flat[key] = np.zeros(bad, dtype=flat[key].dtype)
    with pytest.raises(ValueError) as err:
        CLASSES[cls_name]()(_nest(flat))
    assert _key_named(str(err.value), key), str(err.value)


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
@given(data=st.data(), shape=batch_shapes)
def test_estimator_wrong_dtype_names_the_key(cls_name, data, shape):
    base = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype of the others")
    flat = _batch(cls_name, shape, base)
    key = data.draw(st.sampled_from(list(flat)), label="key")
    if flat[key].dtype == np.bool_:
        flat[key] = flat[key].astype(data.draw(st.sampled_from([np.float32, np.int64])))
    else:
        other = np.float64 if base is np.float32 else np.float32
        flat[key] = flat[key].astype(data.draw(st.sampled_from([np.float16, np.int64, other]), label="bad dtype"))
    with pytest.raises(TypeError) as err:
        CLASSES[cls_name]()(_nest(flat))
    assert _key_named(str(err.value), key), str(err.value)


def test_estimator_value_of_another_shape_never_broadcasts():
    """The brief's case: a [B] value against [B, 1] rewards gave a [B, B] advantage (TD estimators)."""
    for cls_name in ("TD0Estimator", "TD1Estimator", "TDLambdaEstimator"):
        for key in ("state_value", ("next", "state_value")):
            flat = _batch(cls_name, (4, 1))
            flat[key] = flat[key][:, 0]
            with pytest.raises(ValueError, match=r"key .*state_value.*: expected shape"):
                CLASSES[cls_name]()(_nest(flat))


def test_estimator_mixed_libraries_name_the_keys():
    torch = pytest.importorskip("torch")
    for cls_name in sorted(CLASSES):
        flat = _batch(cls_name, (2, 3, 1))
        flat[("next", "reward")] = torch.asarray(flat[("next", "reward")])
        with pytest.raises(TypeError, match=r"mixed array libraries: key 'state_value' is numpy, "
                                            r"key \('next', 'reward'\) is torch"):
            CLASSES[cls_name]()(_nest(flat))


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
@given(bad=st.sampled_from(BAD_UNIT), which=st.sampled_from(["gamma", "lmbda"]))
def test_estimator_constructor_checks_hyperparameters(cls_name, bad, which):
    kwargs = {"gamma": GAMMA, "value_network": None}
    if cls_name in ("TDLambdaEstimator", "GAE", "MultiAgentGAE"):
        kwargs["lmbda"] = LMBDA
    elif which == "lmbda":
        which = "gamma"
    if cls_name == "VTrace":
        kwargs["actor_network"] = _actor
    kwargs[which] = bad
    with pytest.raises(ValueError, match=rf"^{which}: expected a number in \[0, 1\]"):
        getattr(AV, cls_name)(**kwargs)
    with pytest.raises(TypeError, match=rf"^{which}: expected a number or an array, got str"):
        getattr(AV, cls_name)(**{**kwargs, which: "0.9"})


def test_estimator_hyperparameter_assigned_later_is_checked_at_call():
    est = CLASSES["GAE"]()
    est.gamma = 1.5
    with pytest.raises(ValueError, match=r"^gamma: expected a number in \[0, 1\], got 1.5"):
        est(_nest(_batch("GAE", (2, 3, 1))))


@pytest.mark.parametrize("which", ["rho_thresh", "c_thresh"])
@pytest.mark.parametrize("bad", [0.0, -0.5, math.nan])
def test_vtrace_constructor_thresholds(which, bad):
    with pytest.raises(ValueError, match=rf"^{which}: expected a number in \(0, inf\]"):
        CLASSES["VTrace"](**{which: bad})


@pytest.mark.parametrize("agent_dim", [4, 5, -5, 100])
def test_multiagent_gae_agent_dim_out_of_range(agent_dim):
    flat = _batch("MultiAgentGAE", (2, 3, 1))  # values [2, 3, 3, 1]: 4 dimensions
    with pytest.raises(ValueError, match=rf"^agent_dim: expected an axis in \[-4, 4\) .* got {agent_dim}"):
        CLASSES["MultiAgentGAE"](agent_dim=agent_dim)(_nest(flat))
    with pytest.raises(TypeError, match="agent_dim: expected an int"):
        CLASSES["MultiAgentGAE"](agent_dim=1.0)


def test_multiagent_gae_signal_of_a_wrong_rank_names_the_key():
    flat = _batch("MultiAgentGAE", (2, 3, 1))
    flat[("next", "done")] = flat[("next", "done")][..., 0]
    with pytest.raises(ValueError, match=r"^key \('next', 'done'\): MultiAgentGAE expected"):
        CLASSES["MultiAgentGAE"]()(_nest(flat))


@given(shape=batch_shapes, data=st.data())
def test_vtrace_log_prob_of_a_wrong_size(shape, data):
    """Both log-probabilities (the stored behaviour one and the actor's) are checked against the value's shape."""
    bad = data.draw(wrong_shapes(shape).filter(lambda s: s != shape[:-1]), label="shape")
    flat = _batch("VTrace", shape)
    flat["action_log_prob"] = np.zeros(bad)
    with pytest.raises(ValueError, match=r"^key 'action_log_prob': expected shape"):
        CLASSES["VTrace"]()(_nest(flat))
    flat = _batch("VTrace", shape)
    est = AV.VTrace(gamma=GAMMA, actor_network=lambda b: np.zeros(bad), value_network=None)
    with pytest.raises(ValueError, match=r"^log-probability returned by actor_network: expected shape"):
        est(_nest(flat))
    est = AV.VTrace(gamma=GAMMA, actor_network=lambda b: {"action_log_prob": np.zeros(bad)}, value_network=None)
    with pytest.raises(ValueError, match=r"^key 'action_log_prob' written by actor_network: expected shape"):
        est(_nest(flat))
    # TorchRL's [*B, T] layout of sample_log_prob (no feature axis) is accepted for [*B, T, 1] values
    ref = CLASSES["VTrace"]()(_nest(flat))["advantage"]
    flat["action_log_prob"] = flat["action_log_prob"][..., 0]
    np.testing.assert_array_equal(CLASSES["VTrace"]()(_nest(flat))["advantage"], ref)


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
@pytest.mark.parametrize("shape", [(0, 4, 1), (3, 0, 1), (0, 0, 1)])
def test_estimator_empty_batches(cls_name, shape, raw_xp):
    flat = {k: raw_xp.from_numpy(v) for k, v in _batch(cls_name, shape).items()}
    avg = {"TD0Estimator": "average_rewards", "TD1Estimator": "average_rewards",
           "TDLambdaEstimator": "average_rewards", "VTrace": "average_adv"}.get(cls_name, "average_gae")
    for kwargs in ({}, {avg: True}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = CLASSES[cls_name](**kwargs)(_nest(flat))
        for key in ("advantage", "value_target"):
            assert tuple(out[key].shape) == tuple(flat["state_value"].shape)
            assert out[key].dtype == raw_xp.float_dtype


@pytest.mark.parametrize("cls_name", sorted(CLASSES))
def test_standardising_a_single_element_gives_zero(cls_name, raw_xp):
    """Decision (TorchRL gives NaN): the std of one element is 0, so ``(x - mean) / max(0, eps) = 0``."""
    flat = {k: raw_xp.from_numpy(v) for k, v in _batch(cls_name, (1, 1, 1)).items()}
    avg = {"TD0Estimator": "average_rewards", "TD1Estimator": "average_rewards",
           "TDLambdaEstimator": "average_rewards", "VTrace": "average_adv"}.get(cls_name, "average_gae")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = CLASSES[cls_name](**{avg: True})(_nest(flat))
    key = ("next", "reward") if avg == "average_rewards" else ("advantage",)
    got = raw_xp.to_numpy(out[key[0]] if len(key) == 1 else out[key[0]][key[1]])
    np.testing.assert_array_equal(got, np.zeros(got.shape))
