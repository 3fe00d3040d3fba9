"""``shifted=True``: one value-network call on ``T + shifted_budget`` slots (TorchRL 0.14.1's budgeted path).

Cross-validation against TorchRL 0.14.1 (float64, copied weights) for every estimator class, with
``torchrl_compat=True`` and, where TorchRL is right, the default; algebraic properties (shifted == unshifted on
consistent layouts when nothing is dropped); the two divergences (terminated step at the budget cut, time axis)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import arrayrl.value as AV
from arrayrl._backend import namespace_of
from arrayrl.nn import KeyedModule

TOL = 1e-10
T_NAMES = ["TD0Estimator", "TD1Estimator", "TDLambdaEstimator", "GAE"]
EXTRA = {"TD0Estimator": {}, "TD1Estimator": {}, "TDLambdaEstimator": {"lmbda": 0.8}, "GAE": {"lmbda": 0.8}}


def _consistent(rng, shape, obs_dim=3, p_done=0.3, p_term=0.5, time_axis=-1, dtype=np.float64):
    """A batch in TorchRL's single-step layout: ``next_obs[t] == obs[t+1]`` unless ``done[t]`` (then a true final
    observation, and ``obs[t+1]`` is a reset observation). ``time_axis`` indexes the batch dims."""
    ax = time_axis % len(shape)
    T = shape[ax]
    obs = rng.normal(size=shape + (obs_dim,))
    nobs = rng.normal(size=shape + (obs_dim,))
    d = rng.uniform(size=shape + (1,)) < p_done
    tm = d & (rng.uniform(size=shape + (1,)) < p_term)
    o, n, dd = (np.moveaxis(a, ax, 0) for a in (obs, nobs, d))  # views: writes go through
    for t in range(T - 1):
        n[t] = np.where(dd[t], n[t], o[t + 1])
    r = rng.normal(size=shape + (1,))
    lmu = rng.normal(size=shape + (1,)) * 0.3
    return {"obs": obs.astype(dtype), "action_log_prob": lmu.astype(dtype),
            "next": {"obs": nobs.astype(dtype), "reward": r.astype(dtype), "done": d, "terminated": tm}}


def _linear(rng, obs_dim=3):
    W, b = rng.normal(size=(obs_dim, 1)), rng.normal(size=(1,))
    return W, b, KeyedModule(lambda o: o @ W + b, in_keys=["obs"], out_keys=["state_value"])


def _flat(out, key):
    v = out
    for k in (key if isinstance(key, tuple) else (key,)):
        v = v[k]
    return np.asarray(v)


def _manual_batch(T, done_at, term_at, next_over=None):
    """obs_t = 10 t (scalar feature), consistent next obs, overrides for the next obs of done steps."""
    obs = (np.arange(T, dtype=np.float64) * 10).reshape(1, T, 1)
    nobs = obs + 10
    d = np.zeros((1, T, 1), bool)
    tm = d.copy()
    d[0, list(done_at)] = True
    tm[0, list(term_at)] = True
    for i, v in (next_over or {}).items():
        nobs[0, i] = v
    return {"obs": obs, "next": {"obs": nobs, "reward": np.zeros((1, T, 1)), "done": d, "terminated": tm}}


IDENTITY = KeyedModule(lambda o: o * 1.0, in_keys=["obs"], out_keys=["state_value"])


# ------------------------------------------------------------------------------------------ semantics by hand


def test_truncation_inside_uses_the_true_next_observation_and_terminal_the_reset_one():
    # truncated at t=1 (true next obs 101), terminated at t=3 (next obs 103, reset obs[4] = 40)
    b = _manual_batch(6, [1, 3], [3], {1: 101.0, 3: 103.0, 5: 999.0})
    out = AV.TD0Estimator(gamma=1.0, value_network=IDENTITY, shifted=True, shifted_budget=2)(b)
    np.testing.assert_array_equal(_flat(out, "state_value").ravel(), [0, 10, 20, 30, 40, 50])
    np.testing.assert_array_equal(_flat(out, ("next", "state_value")).ravel(), [10, 101, 30, 40, 50, 999])
    np.testing.assert_array_equal(_flat(out, "value_target").ravel(), [10, 101, 30, 0, 50, 999])
    assert _flat(out, "shifted_valid").all()
    # budget 1: the truncation uses the only extra slot, the last step is dropped, t=4 is cut and bootstraps
    out = AV.TD0Estimator(gamma=1.0, value_network=IDENTITY, shifted=True)(b)
    np.testing.assert_array_equal(_flat(out, "shifted_valid").ravel(), [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(_flat(out, "value_target").ravel(), [10, 101, 30, 0, 50, 0])
    np.testing.assert_array_equal(_flat(out, "advantage").ravel(), [10, 91, 10, -30, 10, 0])


def test_network_called_once_on_t_plus_budget_slots():
    calls = []

    def f(o):
        calls.append(o.shape)
        return o * 1.0

    net = KeyedModule(f, in_keys=["obs"], out_keys=["state_value"])
    b = _manual_batch(6, [2], [2])
    for budget in (1, 3):
        calls.clear()
        AV.GAE(gamma=0.9, lmbda=0.9, value_network=net, shifted=True, shifted_budget=budget)(b)
        assert calls == [(1, 6 + budget, 1)]
    calls.clear()
    AV.GAE(gamma=0.9, lmbda=0.9, value_network=net)(b)
    assert len(calls) == 2


def test_no_truncation_is_the_concatenation_and_unused_slots_are_zero():
    seen = []

    def f(o):
        seen.append(np.array(o))
        return o * 1.0

    b = _manual_batch(4, [1], [1], {3: 77.0})
    AV.TD0Estimator(gamma=1.0, value_network=KeyedModule(f, in_keys=["obs"], out_keys=["state_value"]),
                    shifted=True, shifted_budget=3)(b)
    np.testing.assert_array_equal(seen[0].ravel(), [0, 10, 20, 30, 77, 0, 0])


def test_terminated_last_kept_step_does_not_bootstrap_unless_torchrl_compat():
    b = _manual_batch(6, [1, 4], [4], {1: 101.0, 4: 104.0, 5: 999.0})
    ours = AV.TD0Estimator(gamma=1.0, value_network=IDENTITY, shifted=True)(b)
    compat = AV.TD0Estimator(gamma=1.0, value_network=IDENTITY, shifted=True, torchrl_compat=True)(b)
    np.testing.assert_array_equal(_flat(ours, "value_target").ravel(), [10, 101, 30, 40, 0, 0])
    np.testing.assert_array_equal(_flat(compat, "value_target").ravel(), [10, 101, 30, 40, 104, 0])


# ------------------------------------------------------------------------------------------ algebraic properties


@pytest.mark.parametrize("name", T_NAMES + ["VTrace"])
@pytest.mark.parametrize("seed", range(4))
def test_shifted_equals_unshifted_on_consistent_layouts_when_nothing_is_dropped(name, seed):
    rng = np.random.default_rng(seed)
    shape = [(2, 7), (3, 5), (1, 9), (2, 2, 6)][seed]
    T = shape[-1]
    _, _, net = _linear(rng)
    b = _consistent(rng, shape)
    kw = dict(EXTRA.get(name, {}))
    if name == "VTrace":
        kw["actor_network"] = lambda bb: bb["obs"][..., :1] * 0.2
    plain = getattr(AV, name)(gamma=0.9, value_network=net, **kw)(b)
    shifted = getattr(AV, name)(gamma=0.9, value_network=net, shifted=True, shifted_budget=T, **kw)(b)
    assert _flat(shifted, "shifted_valid").all()
    for key in ("advantage", "value_target", "state_value"):
        np.testing.assert_allclose(_flat(shifted, key), _flat(plain, key), rtol=1e-12, atol=1e-12, err_msg=key)
    # next values agree except at terminated steps (there: the value of the reset observation, never read)
    term = b["next"]["terminated"]
    nv, pnv = _flat(shifted, ("next", "state_value")), _flat(plain, ("next", "state_value"))
    np.testing.assert_allclose(np.where(term, 0, nv), np.where(term, 0, pnv), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_kept_steps_before_the_cut_equal_unshifted_on_the_cut_batch(seed):
    """With a small budget, the kept prefix of each row is TorchRL's unshifted estimate of that prefix (a rollout
    ending at the last kept step)."""
    rng = np.random.default_rng(seed)
    _, _, net = _linear(rng)
    b = _consistent(rng, (3, 10), p_done=0.5, p_term=0.3)
    out = AV.GAE(gamma=0.9, lmbda=0.8, value_network=net, shifted=True)(b)
    valid = _flat(out, "shifted_valid")
    assert not valid.all()  # this test is about drops
    for row in range(3):
        k = int(valid[row].sum())
        sub = {"obs": b["obs"][row:row + 1, :k], "next": {kk: v[row:row + 1, :k] for kk, v in b["next"].items()}}
        ref = AV.GAE(gamma=0.9, lmbda=0.8, value_network=net)(sub)
        assert valid[row, :k].all()
        for key in ("advantage", "value_target"):
            np.testing.assert_allclose(_flat(out, key)[row, :k], _flat(ref, key)[0], rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(_flat(out, key)[row, k:], 0.0)


@pytest.mark.parametrize("name", ["TD1Estimator", "GAE"])
def test_time_dim_moves_with_the_data(name):
    rng = np.random.default_rng(5)
    _, _, net = _linear(rng)
    b = _consistent(rng, (8, 3), time_axis=0)  # [T, B]
    kw = dict(EXTRA[name])
    out0 = getattr(AV, name)(gamma=0.9, value_network=net, shifted=True, shifted_budget=8, time_dim=0, **kw)(b)
    plain = getattr(AV, name)(gamma=0.9, value_network=net, time_dim=0, **kw)(b)
    tb = {"obs": np.swapaxes(b["obs"], 0, 1), "next": {k: np.swapaxes(v, 0, 1) for k, v in b["next"].items()}}
    out1 = getattr(AV, name)(gamma=0.9, value_network=net, shifted=True, shifted_budget=8, **kw)(tb)
    for key in ("advantage", "value_target", "state_value"):
        np.testing.assert_allclose(_flat(out0, key), _flat(plain, key), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(_flat(out0, key), np.swapaxes(_flat(out1, key), 0, 1), rtol=1e-12, atol=1e-12)


def test_float32_in_float32_out_and_caller_batch_untouched():
    rng = np.random.default_rng(0)
    W, bias, _ = _linear(rng)
    net = KeyedModule(lambda o: o @ W.astype(np.float32) + bias.astype(np.float32), in_keys=["obs"],
                      out_keys=["state_value"])
    b = _consistent(rng, (2, 6), dtype=np.float32)
    snap = {k: np.copy(v) for k, v in b["next"].items()}
    keys = set(b)
    out = AV.GAE(gamma=0.9, lmbda=0.9, value_network=net, shifted=True, average_gae=True)(b)
    assert set(b) == keys and set(b["next"]) == set(snap)
    for k, v in snap.items():
        np.testing.assert_array_equal(b["next"][k], v)
    for key in ("advantage", "value_target", "state_value", ("next", "state_value")):
        assert _flat(out, key).dtype == np.float32, key
    assert _flat(out, "shifted_valid").dtype == bool


def test_errors_name_the_problem():
    b = _manual_batch(5, [1], [])
    with pytest.raises(ValueError, match="shifted must be a boolean"):
        AV.GAE(gamma=0.9, lmbda=0.9, value_network=IDENTITY, shifted=1)
    with pytest.raises(ValueError, match="shifted_budget"):
        AV.GAE(gamma=0.9, lmbda=0.9, value_network=IDENTITY, shifted=True, shifted_budget=0)

    class Net:
        in_keys, out_keys = ["obs"], ["state_value"]

        def __call__(self, batch):
            return dict(batch, state_value=batch["obs"] * 1.0)

        def apply(self, params, batch):
            return self(batch)

    net = Net()
    est = AV.TD0Estimator(gamma=0.9, value_network=net, shifted=True)
    est(b, params={"w": np.ones(1)})  # params alone: one set serves t and t+1
    with pytest.raises(ValueError, match="single call"):
        est(b, params={"w": np.ones(1)}, target_params={"w": np.zeros(1)})
    bad = dict(b, next=dict(b["next"], done=b["next"]["done"].astype(np.float64)))
    with pytest.raises(TypeError, match=r"'next', 'done'"):
        est(bad)
    bad = dict(b, next=dict(b["next"], obs=b["next"]["obs"][:, :4]))
    with pytest.raises(ValueError, match=r"'next', 'obs'"):
        est(bad)
    ma = {"obs": np.zeros((1, 5, 2, 1)), "next": {"obs": np.zeros((1, 5, 2, 1)), "reward": np.zeros((1, 5, 2, 1)),
                                                   "done": np.zeros((1, 5, 2, 1), bool),
                                                   "terminated": np.zeros((1, 5, 2, 1), bool)}}
    with pytest.raises(NotImplementedError, match="team-level"):
        AV.MultiAgentGAE(gamma=0.9, lmbda=0.9, value_network=IDENTITY, shifted=True)(ma)


# ------------------------------------------------------------------------------------------ TorchRL 0.14.1


def _torch_side():
    torch = pytest.importorskip("torch")
    tensordict = pytest.importorskip("tensordict")
    TV = pytest.importorskip("torchrl.objectives.value")
    os.environ.setdefault("RL_WARNINGS", "False")
    return torch, tensordict, TV


def _td(torch, tensordict, b, shape):
    def conv(d):
        return {k: conv(v) if isinstance(v, dict) else torch.tensor(np.asarray(v)) for k, v in d.items()}

    return tensordict.TensorDict(conv(b), batch_size=list(shape))


def _tnet(torch, tensordict, W, bias):
    lin = torch.nn.Linear(W.shape[0], 1).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(W.T))
        lin.bias.copy_(torch.tensor(bias))
    return tensordict.nn.TensorDictModule(lin, in_keys=["obs"], out_keys=["state_value"])


def _compare(out, tout, keys=("advantage", "value_target", "state_value", ("next", "state_value"))):
    np.testing.assert_array_equal(_flat(out, "shifted_valid"), tout["shifted_valid"].numpy())
    for key in keys:
        np.testing.assert_allclose(_flat(out, key), tout[key].detach().numpy(), rtol=TOL, atol=TOL, err_msg=str(key))


CASES = [(n, budget, avg) for n in T_NAMES for budget in (1, 2, 4) for avg in (False, True)
         if not (avg and n == "TD0Estimator")]


@pytest.mark.torchrl
@pytest.mark.parametrize("name,budget,avg", CASES)
@pytest.mark.parametrize("seed", range(3))
def test_estimators_match_torchrl_shifted(name, budget, avg, seed):
    torch, tensordict, TV = _torch_side()
    rng = np.random.default_rng(seed)
    shape = [(3, 9), (2, 2, 7), (1, 12)][seed]
    W, bias, net = _linear(rng)
    b = _consistent(rng, shape, p_done=0.35)
    kw = dict(EXTRA[name])
    if avg:
        kw["average_gae" if name == "GAE" else "average_rewards"] = True
    tkw = {k: (torch.tensor(v, dtype=torch.float64) if k == "lmbda" else v) for k, v in kw.items()}
    g = torch.tensor(0.9, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tout = getattr(TV, name)(gamma=g, value_network=_tnet(torch, tensordict, W, bias), shifted=True,
                                 shifted_budget=budget, **tkw)(_td(torch, tensordict, b, shape))
    compat = getattr(AV, name)(gamma=0.9, value_network=net, shifted=True, shifted_budget=budget,
                               torchrl_compat=True, **kw)(b)
    _compare(compat, tout)
    # the default differs from TorchRL only where a terminated step is the last kept one
    lv = _flat(compat, "shifted_valid")
    last = lv & ~np.concatenate([lv[..., 1:], np.ones_like(lv[..., :1])], axis=-1)
    if not (last & b["next"]["terminated"][..., 0]).any():
        _compare(getattr(AV, name)(gamma=0.9, value_network=net, shifted=True, shifted_budget=budget, **kw)(b), tout)


@pytest.mark.torchrl
@pytest.mark.parametrize("seed", range(3))
def test_terminated_cut_divergence_against_torchrl(seed):
    """Rows built so that a terminated step is the last kept one: compat reproduces TorchRL's bootstrap from the
    terminal observation; the default returns the reward only there (and nowhere else differs)."""
    torch, tensordict, TV = _torch_side()
    rng = np.random.default_rng(seed)
    W, bias, net = _linear(rng)
    T = 8
    b = _consistent(rng, (2, T), p_done=0.0)
    d, tm = b["next"]["done"], b["next"]["terminated"]
    d[:, 2] = True  # truncation: uses the only extra slot -> the last step is dropped, T-2 is the last kept one
    d[:, T - 2] = True
    tm[:, T - 2] = True
    b["next"]["obs"][:, 2] = rng.normal(size=(2, 3))
    b["next"]["obs"][:, T - 2] = rng.normal(size=(2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tout = TV.GAE(gamma=torch.tensor(0.9, dtype=torch.float64), lmbda=torch.tensor(0.8, dtype=torch.float64),
                      value_network=_tnet(torch, tensordict, W, bias), shifted=True)(_td(torch, tensordict, b, (2, T)))
    compat = AV.GAE(gamma=0.9, lmbda=0.8, value_network=net, shifted=True, torchrl_compat=True)(b)
    _compare(compat, tout)
    ours = AV.GAE(gamma=0.9, lmbda=0.8, value_network=net, shifted=True)(b)
    r, v = b["next"]["reward"], _flat(ours, "state_value")
    np.testing.assert_allclose(_flat(ours, "value_target")[:, T - 2], r[:, T - 2], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_flat(ours, "advantage")[:, T - 2], r[:, T - 2] - v[:, T - 2], rtol=1e-12,
                               atol=1e-12)
    assert not np.allclose(_flat(compat, "value_target")[:, T - 2], r[:, T - 2])
    np.testing.assert_allclose(_flat(ours, "value_target")[:, :3], tout["value_target"][:, :3].numpy(),
                               rtol=TOL, atol=TOL)


@pytest.mark.torchrl
@pytest.mark.parametrize("name", ["TD1Estimator", "GAE"])
def test_time_dim_divergence_against_torchrl(name):
    """TorchRL builds the sequence along the last batch dimension whatever time_dim: compat reproduces it; the
    default equals shifted=False (TorchRL's own unshifted estimate)."""
    torch, tensordict, TV = _torch_side()
    rng = np.random.default_rng(11)
    W, bias, net = _linear(rng)
    b = _consistent(rng, (6, 4), time_axis=0)
    kw = dict(EXTRA[name])
    tkw = {k: torch.tensor(v, dtype=torch.float64) for k, v in kw.items()}
    g = torch.tensor(0.9, dtype=torch.float64)
    outs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sh in (True, False):
            outs[sh] = getattr(TV, name)(gamma=g, value_network=_tnet(torch, tensordict, W, bias), shifted=sh,
                                         shifted_budget=4, time_dim=0, **tkw)(_td(torch, tensordict, b, (6, 4)))
    compat = getattr(AV, name)(gamma=0.9, value_network=net, shifted=True, shifted_budget=4, time_dim=0,
                               torchrl_compat=True, **kw)(b)
    _compare(compat, outs[True])
    ours = getattr(AV, name)(gamma=0.9, value_network=net, shifted=True, shifted_budget=6, time_dim=0, **kw)(b)
    for key in ("advantage", "value_target", "state_value"):
        np.testing.assert_allclose(_flat(ours, key), outs[False][key].numpy(), rtol=TOL, atol=TOL)
    assert not np.allclose(_flat(compat, "advantage"), outs[False]["advantage"].numpy())


@pytest.mark.torchrl
@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("budget", [1, 3])
def test_vtrace_matches_torchrl_shifted(seed, budget):
    torch, tensordict, TV = _torch_side()
    from torch.distributions import Categorical
    from torchrl.modules import ProbabilisticActor

    rng = np.random.default_rng(seed)
    shape, n_act = (2, 8), 4
    W, bias, net = _linear(rng)
    b = _consistent(rng, shape, p_done=0.35)
    Wa, ba = rng.normal(size=(3, n_act)), rng.normal(size=(n_act,))
    lin = torch.nn.Linear(3, n_act).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(Wa.T))
        lin.bias.copy_(torch.tensor(ba))
    actor = ProbabilisticActor(tensordict.nn.TensorDictModule(lin, in_keys=["obs"], out_keys=["logits"]),
                               in_keys=["logits"], distribution_class=Categorical, return_log_prob=True)

    def our_actor(bb):
        logits = bb["obs"] @ Wa + ba
        m = np.max(logits, axis=-1, keepdims=True)
        return m - (m + np.log(np.sum(np.exp(logits - m), axis=-1, keepdims=True)))

    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tout = TV.VTrace(gamma=t(0.9), actor_network=actor, value_network=_tnet(torch, tensordict, W, bias),
                         rho_thresh=t(1.2), c_thresh=t(0.9), shifted=True,
                         shifted_budget=budget)(_td(torch, tensordict, b, shape))
    out = AV.VTrace(gamma=0.9, actor_network=our_actor, value_network=net, rho_thresh=1.2, c_thresh=0.9,
                    shifted=True, shifted_budget=budget, torchrl_compat=True)(b)
    _compare(out, tout)


@pytest.mark.torchrl
@pytest.mark.parametrize("avg", [False, True])
@pytest.mark.parametrize("budget", [1, 3])
def test_multi_agent_gae_matches_torchrl_shifted(avg, budget):
    torch, tensordict, TV = _torch_side()
    rng = np.random.default_rng(3)
    B, T, n = 2, 7, 3
    W, bias, net = _linear(rng)
    team = _consistent(rng, (B, T), p_done=0.35)
    obs = rng.normal(size=(B, T, n, 3))
    nobs = rng.normal(size=(B, T, n, 3))
    d = team["next"]["done"]
    for t in range(T - 1):
        nobs[:, t] = np.where(d[:, t, None], nobs[:, t], obs[:, t + 1])
    b = {"obs": obs, "next": dict(team["next"], obs=nobs)}
    g, lm = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tout = TV.MultiAgentGAE(gamma=g, lmbda=lm, value_network=_tnet(torch, tensordict, W, bias), shifted=True,
                                shifted_budget=budget, average_gae=avg)(_td(torch, tensordict, b, (B, T)))
    out = AV.MultiAgentGAE(gamma=0.9, lmbda=0.7, value_network=net, shifted=True, shifted_budget=budget,
                           average_gae=avg, torchrl_compat=True)(b)
    _compare(out, tout)


# ------------------------------------------------------------------------------------------ backends


@pytest.mark.parametrize("name", T_NAMES)
def test_backends_agree_with_numpy(xp, name):
    """Every backend (and the tape) gives NumPy's result, in the backend's float dtype, with one network call."""
    rng = np.random.default_rng(7)
    W, bias, net = _linear(rng)
    b = _consistent(rng, (2, 9), p_done=0.4)
    kw = dict(EXTRA[name])
    if name == "GAE":
        kw["average_gae"] = True
    ref_out = getattr(AV, name)(gamma=0.9, value_network=net, shifted=True, shifted_budget=2, **kw)(b)
    Wx, bx = xp.from_numpy(W[:, 0]), xp.from_numpy(bias)
    calls = []

    def f(o):
        calls.append(1)
        ns = namespace_of(o)
        return ns.sum(o * Wx, axis=-1, keepdims=True) + bx

    xnet = KeyedModule(f, in_keys=["obs"], out_keys=["state_value"])
    conv = {"obs": xp.from_numpy(b["obs"]),
            "next": {k: xp.from_numpy(v) for k, v in b["next"].items()}}
    est = getattr(AV, name)(gamma=0.9, value_network=xnet, shifted=True, shifted_budget=2, **kw)
    out = est(conv)
    assert len(calls) == 1
    for key in ("advantage", "value_target", "state_value", ("next", "state_value")):
        got = _flat_x(xp, out, key)
        assert got.dtype == (np.float64 if xp.is_float64 else np.float32), key
        np.testing.assert_allclose(got, _flat(ref_out, key), rtol=xp.rtol * 10, atol=xp.atol * 10, err_msg=str(key))
    np.testing.assert_array_equal(_flat_x(xp, out, "shifted_valid"), _flat(ref_out, "shifted_valid"))


def _flat_x(xp, out, key):
    v = out
    for k in (key if isinstance(key, tuple) else (key,)):
        v = v[k]
    return xp.to_numpy(v)
