"""Bad input for every loss class and functional term: wrong shapes and dtypes of every input key, out-of-range
categorical actions, NaN/inf/out-of-range hyper-parameters, empty batches. Zero silent broadcasts: a wrong input
either raises an error that names it, or (for a harmless variant, e.g. a float one-hot action) gives exactly the
outputs of the valid batch.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arrayrl
import arrayrl.objectives as O
from arrayrl import data as _data
from arrayrl._validate import IndexRangeError
from arrayrl.distributions import Categorical, OneHotCategorical, TanhNormal
from arrayrl.nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor, QValueActor, ValueOperator
from arrayrl.nn.multiagent import QMixer
from arrayrl.objectives import functional as F
from arrayrl.objectives.utils import next_state_value

B, NOBS, NA, ATOMS, N_AGENTS = 5, 3, 4, 5, 2
ERRORS = (ValueError, TypeError, KeyError, IndexError)
FUZZ = settings(max_examples=40, deadline=None)
# keys a network reads: the network's own layer reports the bad shape ("input: ..."), so for them the test asks
# only for an error (a change requested in arrayrl/nn: name the in_key there)
NETWORK_INPUTS = {("observation",), ("next", "observation"), ("agents", "observation"),
                  ("next", "agents", "observation"), ("state",), ("next", "state")}


def _transition(rng, n, obs_shape=(NOBS,)):
    term = rng.uniform(size=(n, 1)) < 0.3
    return {"observation": rng.normal(size=(n,) + obs_shape),
            "next": {"observation": rng.normal(size=(n,) + obs_shape), "reward": rng.normal(size=(n, 1)),
                     "done": term | (rng.uniform(size=(n, 1)) < 0.2), "terminated": term}}


def _action(rng, n, space):
    idx = rng.integers(0, NA, n)
    return idx if space == "categorical" else np.eye(NA, dtype=np.int64)[idx]


def _dqn(space):
    def make(reduction="mean"):
        actor = QValueActor(MLP(in_features=NOBS, out_features=NA, num_cells=[8]), action_space=space)
        loss = O.DQNLoss(actor, action_space=space, reduction=reduction)

        def batch(rng, n):
            return dict(_transition(rng, n), action=_action(rng, n, space), priority_weight=rng.uniform(0.5, 1, n),
                        steps_to_next_obs=rng.integers(1, 3, (n, 1)))

        return loss, batch

    return make


def _c51(space):
    def make(reduction="mean"):
        mlp = MLP(in_features=NOBS, out_features=ATOMS * NA, num_cells=[8])

        def logits(p, obs):
            x = mlp.apply(p, obs)
            xp = x.__array_namespace__()
            return arrayrl.ops.log_softmax(xp.reshape(x, tuple(x.shape[:-1]) + (ATOMS, NA)), axis=-2)

        net = KeyedModule(logits, params=mlp.params, in_keys=["observation"], out_keys=["action_value"])
        loss = O.DistributionalDQNLoss(net, gamma=0.9, support=np.linspace(-2.0, 2.0, ATOMS), action_space=space,
                                       reduction=reduction)
        return loss, lambda rng, n: dict(_transition(rng, n), action=_action(rng, n, space))

    return make


def _actor(discrete):
    if discrete is None:
        net, ext = MLP(in_features=NOBS, out_features=4, num_cells=[8]), NormalParamExtractor()
        module = KeyedModule(lambda p, o: ext.apply({}, net.apply(p, o)), params=net.params, in_keys=["observation"],
                             out_keys=["loc", "scale"])
        return ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=TanhNormal)
    module = KeyedModule(MLP(in_features=NOBS, out_features=NA, num_cells=[8]), in_keys=["observation"],
                         out_keys=["logits"])
    return ProbabilisticActor(module, in_keys=["logits"],
                              distribution_class=Categorical if discrete == "categorical" else OneHotCategorical)


def _iql(discrete):
    def make(reduction="mean", **kw):
        v = ValueOperator(MLP(in_features=NOBS, out_features=1, num_cells=[8]), in_keys=["observation"])
        som = kw.pop("scalar_output_mode", "exclude" if reduction == "none" else None)
        if discrete is None:
            q = ValueOperator(MLP(in_features=NOBS + 2, out_features=1, num_cells=[8]),
                              in_keys=["observation", "action"])
            loss = O.IQLLoss(_actor(None), q, v, reduction=reduction, scalar_output_mode=som, **kw)
            return loss, lambda rng, n: dict(_transition(rng, n), action=rng.uniform(-0.9, 0.9, (n, 2)))
        q = ValueOperator(MLP(in_features=NOBS, out_features=NA, num_cells=[8]), in_keys=["observation"],
                          out_keys=["state_action_value"])
        loss = O.DiscreteIQLLoss(_actor(discrete), q, v, action_space=discrete, reduction=reduction,
                                 scalar_output_mode=som, **kw)
        return loss, lambda rng, n: dict(_transition(rng, n), action=_action(rng, n, discrete))

    return make


def _qmixer(space):
    def make(reduction=None):
        local = QValueActor(KeyedModule(MLP(in_features=NOBS, out_features=NA, num_cells=[8]),
                                        in_keys=[("agents", "observation")], out_keys=[("agents", "action_value")]),
                            action_space=space, action_value_key=("agents", "action_value"),
                            action_key=("agents", "action"), chosen_action_value_key=("agents", "chosen_action_value"))
        loss = O.QMixerLoss(local, QMixer((4,), 3, N_AGENTS), action_space=space)

        def batch(rng, n):
            t = _transition(rng, n, (N_AGENTS, NOBS))
            idx = rng.integers(0, NA, (n, N_AGENTS))
            act = idx if space == "categorical" else np.eye(NA, dtype=np.int64)[idx]
            return {"agents": {"observation": t["observation"], "action": act}, "state": rng.normal(size=(n, 4)),
                    "next": {"agents": {"observation": t["next"]["observation"]}, "state": rng.normal(size=(n, 4)),
                             **{k: t["next"][k] for k in ("reward", "done", "terminated")}}}

        return loss, batch

    return make


FACTORIES = {
    "DQN[categorical]": _dqn("categorical"), "DQN[one_hot]": _dqn("one_hot"),
    "C51[categorical]": _c51("categorical"), "C51[one_hot]": _c51("one_hot"),
    "IQL": _iql(None), "DiscreteIQL[categorical]": _iql("categorical"), "DiscreteIQL[one_hot]": _iql("one_hot"),
    "QMixer[categorical]": _qmixer("categorical"), "QMixer[one_hot]": _qmixer("one_hot"),
}
_BUILT: dict = {}


def _built(name):
    if name not in _BUILT:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _BUILT[name] = FACTORIES[name]()
    return _BUILT[name]


def _mutate(x, how):
    """``batch``: one row fewer; ``extra``: a trailing axis of 2; ``drop``: the last axis removed; ``dtype``:
    bool/int -> float64, float -> int64."""
    if how == "batch":
        return x[:-1]
    if how == "extra":
        return np.broadcast_to(x[..., None], x.shape + (2,))
    if how == "drop":
        return x[..., 0] if x.ndim else x
    return x.astype(np.int64) if x.dtype.kind == "f" else x.astype(np.float64)


def _same_outputs(got, want):
    return set(got) == set(want) and all(np.array_equal(np.asarray(got[k]), np.asarray(want[k])) for k in want)


# ------------------------------------------------------------------------------------------------ loss classes
@FUZZ
@given(name=st.sampled_from(sorted(FACTORIES)), how=st.sampled_from(["batch", "extra", "drop", "dtype"]),
       pick=st.integers(0, 10**6), seed=st.integers(0, 2**16))
def test_every_input_key_with_a_wrong_shape_or_dtype(name, how, pick, seed):
    loss, make = _built(name)
    batch = make(np.random.default_rng(seed), B)
    keys = _data.keys(batch)
    key = keys[pick % len(keys)]
    bad = _data.with_(batch, key, _mutate(_data.get(batch, key), how))
    want = loss(make(np.random.default_rng(seed), B))
    try:
        got = loss(bad)
    except ERRORS as err:
        if key not in NETWORK_INPUTS:
            assert key[-1] in str(err), f"{name}: the error for a bad {key} ({how}) does not name it: {err}"
        return
    # no error: only harmless variants (an int one-hot as float, say) may pass, and must change nothing
    assert how in ("drop", "dtype") and _same_outputs(got, want), f"{name}: {key} ({how}) was accepted silently"


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_missing_next_state_input_names_the_nested_key(name):
    loss, make = _built(name)
    batch = make(np.random.default_rng(0), B)
    obs = ("next", "agents", "observation") if "QMixer" in name else ("next", "observation")
    nxt = dict(batch["next"])
    if "QMixer" in name:
        nxt["agents"] = {}
    else:
        del nxt["observation"]
    with pytest.raises(KeyError, match=rf"key {_re(repr(obs))} \(next-state input\) not found"):
        loss(dict(batch, next=nxt))


def _re(s):
    import re

    return re.escape(s)


@pytest.mark.parametrize("name", [n for n in sorted(FACTORIES) if "categorical" in n])
@pytest.mark.parametrize("bad", [-1, NA])
def test_out_of_range_categorical_action(name, bad):
    """-1 wraps around and NA reads garbage on torch / raises a bare IndexError on NumPy without the check."""
    loss, make = _built(name)
    batch = make(np.random.default_rng(0), B)
    key = ("agents", "action") if "QMixer" in name else ("action",)
    action = np.array(_data.get(batch, key))
    action.flat[1] = bad
    with pytest.raises(IndexRangeError, match=rf"action'?\)?: expected integers in \[0, {NA}\), got values outside"):
        loss(_data.with_(batch, key, action))
    with arrayrl.validate_args(False):  # off: no check at all (NumPy's own bare error or a wrapped value)
        try:
            loss(_data.with_(batch, key, action))
        except IndexRangeError:  # pragma: no cover - the check must be off
            pytest.fail("validate_args(False) must skip the range check")
        except IndexError:
            pass


@pytest.mark.parametrize("name", [n for n in sorted(FACTORIES) if "categorical" in n])
def test_categorical_action_with_trailing_one(name):
    """[*B] and [*B, 1] integer actions give the same outputs (TorchRL's trailing singleton), in every loss
    (DiscreteIQLLoss rejected [*B, 1] before)."""
    loss, make = _built(name)
    batch = make(np.random.default_rng(2), B)
    key = ("agents", "action") if "QMixer" in name else ("action",)
    col = _data.with_(batch, key, _data.get(batch, key)[..., None])
    assert _same_outputs(loss(col), loss(batch))


@pytest.mark.parametrize("name", [n for n in sorted(FACTORIES) if "one_hot" in n])
def test_one_hot_width_must_match_the_action_values(name):
    loss, make = _built(name)
    batch = make(np.random.default_rng(4), B)
    key = ("agents", "action") if "QMixer" in name else ("action",)
    a = _data.get(batch, key)
    for wrong in (a[..., :-1], np.concatenate([a, np.zeros_like(a[..., :1])], axis=-1)):
        with pytest.raises(ValueError, match=rf"{_re(_data.key_str(key))}: expected a one_hot action of shape"):
            loss(_data.with_(batch, key, wrong))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_empty_batch(name):
    """B = 0 runs: 'none' gives [0] terms, 'sum' gives 0 (QMixer has no reduction: its mean of nothing is NaN, as
    torch's), and td_error has no rows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reductions = [None] if "QMixer" in name else ["none", "sum"]
        for reduction in reductions:
            loss, make = FACTORIES[name](reduction)
            batch = make(np.random.default_rng(5), 0)
            out = loss(batch)
            assert batch["td_error"].shape[0] == 0
            for k, v in out.items():
                if reduction == "none":
                    assert np.shape(v) == (0,), (k, np.shape(v))
                elif reduction == "sum" and k.startswith("loss"):  # (IQL's entropy is a mean: NaN, as torch's)
                    assert float(v) == 0.0, k
                else:
                    assert np.shape(v) == () and math.isnan(float(v)), k


# ------------------------------------------------------------------------------------------------ hyper-parameters
NONFINITE = [float("nan"), float("inf"), -float("inf")]
HYPER_CASES = [
    ("IQL", {"num_qvalue_nets": 2.5}), ("IQL", {"num_qvalue_nets": 0}), ("IQL", {"temperature": 0.0}),
    ("IQL", {"temperature": -1.0}), ("IQL", {"expectile": 1.5}), ("IQL", {"expectile": -0.1}),
    ("IQL", {"expectile": 0.0}), ("IQL", {"loss_function": "huber"}), ("IQL", {"separate_losses": None}),
    ("DiscreteIQL[categorical]", {"expectile": 1.0}),
    ("DiscreteIQL[categorical]", {"expectile": 0.0}), ("DiscreteIQL[categorical]", {"num_qvalue_nets": 2.0}),
] + [(n, {k: v}) for n in ("IQL", "DiscreteIQL[one_hot]") for k in ("temperature", "expectile", "num_qvalue_nets")
     for v in NONFINITE]


@pytest.mark.parametrize("name,kw", HYPER_CASES)
def test_iql_hyper_parameters(name, kw):
    (arg,) = kw
    with pytest.raises(TypeError if arg == "separate_losses" else ValueError, match=rf"^{arg}: "):
        FACTORIES[name]("mean", **kw)
    with pytest.raises(ValueError, match="^reduction: "):
        FACTORIES[name]("max")
    with pytest.raises(ValueError, match="^scalar_output_mode: "):
        FACTORIES["IQL"]("mean", scalar_output_mode="keep")


def _dqn_net():
    return QValueActor(MLP(in_features=NOBS, out_features=NA), action_space="categorical")


def _c51_net():
    return KeyedModule(MLP(in_features=NOBS, out_features=NA), in_keys=["observation"], out_keys=["action_value"])


@pytest.mark.parametrize("build,arg,error", [
    (lambda: O.DQNLoss(_dqn_net(), loss_function="huber"), "loss_function", ValueError),
    (lambda: O.DQNLoss(_dqn_net(), reduction="avg"), "reduction", ValueError),
    (lambda: O.DQNLoss(_dqn_net(), delay_value="yes"), "delay_value", TypeError),
    (lambda: O.DQNLoss(_dqn_net(), double_dqn=1), "double_dqn", TypeError),
    (lambda: O.DQNLoss(_dqn_net(), use_prioritized_weights="always"), "use_prioritized_weights", ValueError),
    (lambda: O.QMixerLoss(_dqn_net(), QMixer((4,), 3, 2), loss_function="mse"), "loss_function", ValueError),
    *[(lambda g=g: O.DistributionalDQNLoss(_c51_net(), gamma=g, support=np.linspace(-1, 1, 5)), "gamma", ValueError)
      for g in NONFINITE + [1.5, -0.1]],
    (lambda: O.DistributionalDQNLoss(_c51_net(), gamma=0.9, support=np.linspace(1, -1, 5)), "support", ValueError),
    (lambda: O.DistributionalDQNLoss(_c51_net(), gamma=0.9, support=np.array([-1.0, 0.0, 0.1, 1.0])), "support",
     ValueError),
    (lambda: O.DistributionalDQNLoss(_c51_net(), gamma=0.9, support=np.array([0.0, 0.0, 1.0])), "support",
     ValueError),
    (lambda: O.DistributionalDQNLoss(_c51_net(), gamma=0.9, support=np.array([0.0, np.nan, 1.0])), "support",
     ValueError),
    (lambda: O.DistributionalDQNLoss(_c51_net(), gamma=0.9, support=np.linspace(-1, 1, 5), use_prioritized_weights=2),
     "use_prioritized_weights", ValueError),
    *[(lambda v=v: O.SoftUpdate(O.DQNLoss(_dqn_net()), tau=v), "tau", ValueError) for v in NONFINITE + [0.0, 1.5]],
    *[(lambda v=v: O.SoftUpdate(O.DQNLoss(_dqn_net()), eps=v), "eps", ValueError) for v in NONFINITE + [1.0, -0.5]],
    *[(lambda v=v: O.HardUpdate(O.DQNLoss(_dqn_net()), value_network_update_interval=v),
       "value_network_update_interval", ValueError) for v in (-1, 0, 2.5, float("inf"))],
])
@pytest.mark.filterwarnings("ignore")
def test_constructor_hyper_parameters(build, arg, error):
    with pytest.raises(error, match=rf"^{arg}: "):
        build()


def test_valid_hyper_parameter_edges_are_accepted():
    """The bounds that are inside: tau = 1 (copy), eps = 0, interval 1, evenly spaced float32 support."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        O.SoftUpdate(O.DQNLoss(_dqn_net()), tau=1.0)
        O.SoftUpdate(O.DQNLoss(_dqn_net()), eps=0.0)
        O.HardUpdate(O.DQNLoss(_dqn_net()), value_network_update_interval=1)
        O.DistributionalDQNLoss(_c51_net(), gamma=1.0, support=np.linspace(-10, 10, 51, dtype=np.float32))
        O.DistributionalDQNLoss(_c51_net(), gamma=0.0, support=np.linspace(1000, 1001, 11))


def test_c51_wrong_atom_count_names_the_network_output():
    loss, make = _built("C51[one_hot]")
    bad = O.DistributionalDQNLoss(loss._networks["value_network"], gamma=0.9, support=np.linspace(-1, 1, ATOMS + 2))
    with pytest.raises(ValueError, match=rf"'action_value' \(log-probabilities of the value network\): expected "
                                         rf"{ATOMS + 2} atoms"):
        bad(make(np.random.default_rng(0), B))


# ------------------------------------------------------------------------------------------------ functional terms
def _functional_cases(rng, shape):
    q = rng.normal(size=shape + (NA,))
    lp = np.log(np.full(shape + (ATOMS, NA), 1.0 / ATOMS))
    r, term = rng.normal(size=shape), rng.uniform(size=shape) < 0.3
    v1, v2 = rng.normal(size=shape), rng.normal(size=shape)
    a = rng.integers(0, NA, shape)
    sup = np.linspace(-1.0, 1.0, ATOMS)
    return {
        "dqn_loss": (lambda q_values, action, reward, next_q_target, terminated, next_q_online: F.dqn_loss(
            q_values, action, reward, next_q_target, terminated, next_q_online=next_q_online, gamma=0.9,
            double_dqn=True, action_space="categorical"),
            dict(q_values=q, action=a, reward=r, next_q_target=q + 1, terminated=term, next_q_online=q - 1)),
        "distributional_dqn_loss": (lambda log_probs, action, reward, next_log_probs_online, next_log_probs_target,
                                    terminated: F.distributional_dqn_loss(
            log_probs, action, reward, next_log_probs_online, next_log_probs_target, terminated, support=sup,
            gamma=0.9, action_space="categorical"),
            dict(log_probs=lp, action=a, reward=r, next_log_probs_online=lp, next_log_probs_target=lp,
                 terminated=term)),
        "c51_projection": (lambda next_probs, reward, terminated: F.c51_projection(next_probs, reward, terminated,
                                                                                   sup, 0.9),
                           dict(next_probs=np.exp(lp[..., 0]), reward=r, terminated=term)),
        "td0_target": (lambda reward, next_value, terminated: F.td0_target(reward, next_value, terminated, 0.9),
                       dict(reward=r, next_value=v1, terminated=term)),
        "iql_value_loss": (lambda min_q, value: F.iql_value_loss(min_q, value, 0.7), dict(min_q=v1, value=v2)),
        "iql_actor_loss": (lambda log_prob, min_q, value: F.iql_actor_loss(log_prob, min_q, value, 1.0),
                           dict(log_prob=v1, min_q=v2, value=v1)),
        "ensemble_critic_loss": (lambda pred, target: F.ensemble_critic_loss(pred, target),
                                 dict(pred=np.stack([v1, v2]), target=v1)),
        "mixer_td_loss": (lambda global_value, target: F.mixer_td_loss(global_value, target),
                          dict(global_value=v1, target=v2)),
        "chosen_action_value": (lambda action_value, action: F.chosen_action_value(action_value, action,
                                                                                  "categorical"),
                                dict(action_value=q, action=a)),
    }


FUNCTIONAL = sorted(_functional_cases(np.random.default_rng(0), (2,)))


@FUZZ
@given(fn=st.sampled_from(FUNCTIONAL), how=st.sampled_from(["batch", "extra", "drop", "dtype"]),
       pick=st.integers(0, 100), shape=st.lists(st.integers(2, 3), min_size=1, max_size=2).map(tuple),
       seed=st.integers(0, 2**16))
def test_functional_terms_reject_wrong_inputs(fn, how, pick, shape, seed):
    f, args = _functional_cases(np.random.default_rng(seed), shape)[fn]
    names = sorted(args)
    arg = names[pick % len(names)]
    if fn == "ensemble_critic_loss" and arg == "pred" and (how == "batch" or (how == "drop" and len(shape) == 1)):
        return  # pred [N, *B]: one row fewer is a smaller ensemble (legitimate); [N, B] -> [N] may equal [B]
    bad = dict(args, **{arg: _mutate(args[arg], how)})
    with pytest.raises(ERRORS) as info:
        f(**bad)
    assert arg in str(info.value), f"{fn}: the error for a bad {arg} ({how}) does not name it: {info.value}"


FUNCTIONAL_HYPER = [
    (lambda v: F.expectile_loss(np.zeros(3), v), "expectile"),
    (lambda v: F.iql_value_loss(np.zeros(3), np.zeros(3), v), "expectile"),
    (lambda v: F.iql_actor_loss(np.zeros(3), np.zeros(3), np.zeros(3), v), "temperature"),
    (lambda v: F.td0_target(np.zeros(3), np.zeros(3), np.zeros(3, bool), v), "gamma"),
    (lambda v: F.dqn_loss(np.zeros((3, 2)), np.zeros(3, np.int64), np.zeros(3), np.zeros((3, 2)), np.zeros(3, bool),
                          gamma=v, action_space="categorical"), "gamma"),
    (lambda v: next_state_value({"next": {"reward": np.zeros((3, 1)), "done": np.zeros((3, 1), bool)}},
                                pred_next_val=np.zeros((3, 1)), gamma=v), "gamma"),
]


@pytest.mark.parametrize("call,arg,value", [(c, a, v) for c, a in FUNCTIONAL_HYPER
                                            for v in NONFINITE + [-1.0] + ([] if a == "temperature" else [1.5])])
def test_functional_hyper_parameters(call, arg, value):
    """NaN/inf and out-of-range Python hyper-parameters of the functional terms (any positive temperature is
    valid; gamma and expectile live in [0, 1] and (0, 1))."""
    with pytest.raises(ValueError, match=rf"^{arg}: "):
        call(value)
