"""DreamerV3ActorLoss: against TorchRL 0.14.1 in float64 on copied weights with TorchRL's draws replayed in order
(``torch.rand`` of the prior's straight-through categorical, ``_standard_normal`` of the TanhNormal actor and of
its Monte-Carlo entropy), <= 1e-10 relative on every output, the imagined trajectory and every actor gradient; the
TD(lambda) divergence; finite differences through the imagination; the docstring example.

TorchRL's ``RSSMPriorV3`` (GRU) runs its cell in float32 (``.float()``); the tests make ``Tensor.float`` the identity on
float64 tensors while TorchRL runs."""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pytest

from arrayrl.distributions import TanhNormal
from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor, Sequential
from arrayrl.nn.params import flatten_params, unflatten_params
from arrayrl.nn.rssm import RSSMPriorV3
from arrayrl.nn.rssm_v1 import DreamerActor, StochasticKeyedModule
from arrayrl.objectives.dreamer import DreamerEnv
from arrayrl.objectives.dreamer_v3 import DreamerV3ActorLoss, DreamerV3ValueLoss
from arrayrl.random import Generator

N, C, K, R, HID, A, HZ = 3, 2, 3, 4, 5, 2, 3
S = C * K
RTOL, ATOL = 1e-10, 1e-12
MAX_ERR: dict = {}


def _close(got, want, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)
    err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-3))) if got.size else 0.0
    MAX_ERR[what.split(".")[0]] = max(MAX_ERR.get(what.split(".")[0], 0.0), err)


def _cont_fn(p, s, b):
    from arrayrl import ops
    from arrayrl._backend import namespace_of

    xp = namespace_of(s, b, p["weight"])
    y = ops.linear(xp.concat([s, b], axis=-1), p["weight"], p["bias"])
    return 1.0 / (1.0 + xp.exp(-y))


# ------------------------------------------------------------------------------------------------ numpy-only setup
def _smooth_fn(p, s, b, a):
    """A smooth (draw-free) transition: the RSSM's straight-through state has a zero derivative in value, so finite
    differences can only check the loss's own gradient path on a differentiable world model."""
    from arrayrl import ops
    from arrayrl._backend import namespace_of

    xp = namespace_of(s, b, a, p["s"]["weight"])
    x = xp.concat([s, b, a], axis=-1)
    return xp.tanh(ops.linear(x, p["s"]["weight"], p["s"]["bias"])), xp.tanh(ops.linear(x, p["b"]["weight"],
                                                                                           p["b"]["bias"]))


def _setup(with_cont=False, smooth=False, horizon=HZ, recurrent_model="gru", **kw):
    g = Generator(3)
    reward = MLP(S + R, 1, depth=1, num_cells=5, activation_class="elu", generator=g, dtype=np.float64)
    if smooth:
        rng = np.random.default_rng(7)
        tp = {k: {"weight": rng.normal(size=(n, S + R + A)) * 0.5, "bias": rng.normal(size=(n,))}
              for k, n in (("s", S), ("b", R))}
        trans = KeyedModule(_smooth_fn, params=tp, in_keys=["state", "belief", "action"], out_keys=["state", "belief"])
    else:
        prior = RSSMPriorV3(HID, R, C, K, A, recurrent_model=recurrent_model, num_blocks=2, generator=g,
                            dtype=np.float64)
        trans = StochasticKeyedModule(prior, in_keys=["state", "belief", "action"], out_keys=["_", "state", "belief"])
    wm = Sequential(trans, KeyedModule(reward, in_keys=["state", "belief"], out_keys=["reward"]))
    net = DreamerActor(A, depth=1, num_cells=5, in_features=S + R, generator=g, dtype=np.float64)
    actor = ProbabilisticActor(KeyedModule(net, in_keys=["state", "belief"], out_keys=["loc", "scale"]),
                               in_keys=["loc", "scale"], distribution_class=TanhNormal)
    vnet = MLP(S + R, 1, depth=1, num_cells=5, activation_class="elu", generator=g, dtype=np.float64)
    value = KeyedModule(vnet, in_keys=["state", "belief"], out_keys=["state_value"])
    cont = None
    if with_cont:
        rng = np.random.default_rng(5)
        cont = KeyedModule(_cont_fn, params={"weight": rng.normal(size=(1, S + R)), "bias": np.array([1.0])},
                           in_keys=["state", "belief"], out_keys=["continuation"])
    loss = DreamerV3ActorLoss(actor, value, DreamerEnv(wm), continuation_model=cont, imagination_horizon=horizon,
                              **kw)
    rng = np.random.default_rng(0)
    batch = {"state": rng.normal(size=(N, S)), "belief": rng.normal(size=(N, R))}
    draws = []
    for _ in range(horizon):
        draws += [rng.normal(size=(N, A))] + ([] if smooth else [rng.uniform(size=(N, C))])
    draws.append(rng.normal(size=(N, horizon, A)))  # the Monte-Carlo entropy draw
    return loss, batch, draws, value


@pytest.mark.parametrize("kw", [dict(entropy_bonus=0.0),
                                dict(entropy_bonus=0.0, discount_loss=False, return_normalization_min_scale=1e-3)])
def test_gradient_matches_finite_differences(kw):
    """The reparameterised path (entropy, REINFORCE and the continuation weights stop gradients on quantities that
    depend on the actor, so finite differences do not apply there: they are checked against TorchRL)."""
    loss, batch, draws, _ = _setup(smooth=True, **kw)
    loss.eval()  # keep the return statistics fixed between evaluations
    loss.retnorm_state = {"low": np.array([-0.3]), "high": np.array([0.4])}
    (out, _), grads = loss.value_and_grad(batch, generator=Generator.from_noise(*draws))
    flat = flatten_params(loss.params["actor_model"])
    gflat = flatten_params(grads["actor_model"])
    base = {k: np.array(v) for k, v in flat.items()}
    eps = 1e-6
    for name in ("0.backbone.0.weight", "0.backbone.2.bias"):
        w = base[name]
        for idx in [(0,) * w.ndim, tuple(s - 1 for s in w.shape)]:
            vals = []
            for sgn in (1, -1):
                p = {k: v.copy() for k, v in base.items()}
                p[name][idx] += sgn * eps
                loss.params = {"actor_model": {**unflatten_params(p), "1": {}}}
                vals.append(float(loss(batch, generator=Generator.from_noise(*draws))[0]["loss_actor"]))
            loss.params = {"actor_model": {**unflatten_params(base), "1": {}}}
            fd = (vals[0] - vals[1]) / (2 * eps)
            np.testing.assert_allclose(np.asarray(gflat[name])[idx], fd, rtol=1e-5, atol=1e-9)
    f_out, _ = loss(batch, generator=Generator.from_noise(*draws))
    assert float(out["loss_actor"]) == float(f_out["loss_actor"])


@pytest.mark.parametrize("horizon,recurrent_model", [(3, "gru"), (5, "gru"), (4, "block_gru")])
def test_gradient_through_the_gru_and_the_straight_through_sample_vs_finite_differences(monkeypatch, horizon,
                                                                                       recurrent_model):
    """The tape gradient of the actor loss through a 3-5 step imagination with the real DreamerV3 prior (GRU or block
    GRU cell, categorical latents drawn one-hot from injected uniforms) against float64 central differences of the
    function the straight-through estimator differentiates: ``z = one_hot + probs(theta) - sg(probs(theta_0))``, the
    base run's one-hot samples held fixed (the one-hot value itself is piecewise constant: its finite difference is
    0). The uniforms keep the sampled classes unchanged under the perturbation (asserted)."""
    import arrayrl.objectives.dreamer_utils as DU
    from arrayrl.autodiff import stop_gradient

    loss, batch, draws, _ = _setup(entropy_bonus=0.0, horizon=horizon, recurrent_model=recurrent_model)
    loss.eval()  # keep the return statistics fixed between evaluations
    loss.retnorm_state = {"low": np.array([-0.3]), "high": np.array([0.4])}
    (_, _), grads = loss.value_and_grad(batch, generator=Generator.from_noise(*draws))
    original = DU.straight_through_categorical
    base: list = []

    def record(logits, unimix=0.0, uniform=None, *, generator=None):
        y = original(logits, unimix, uniform, generator=generator)
        base.append((np.asarray(stop_gradient(y)), np.asarray(stop_gradient(DU.unimix_probs(logits, unimix)))))
        return y

    monkeypatch.setattr(DU, "straight_through_categorical", record)
    f0 = float(loss(batch, generator=Generator.from_noise(*draws))[0]["loss_actor"])
    assert len(base) == horizon
    calls = iter(())

    def surrogate(logits, unimix=0.0, uniform=None, *, generator=None):
        one_hot, p0 = next(calls)
        sample = np.asarray(original(logits, unimix, uniform, generator=generator))  # consumes the uniform draw
        np.testing.assert_array_equal(sample, one_hot)  # the same classes under the perturbation
        return one_hot + DU.unimix_probs(logits, unimix) - p0

    monkeypatch.setattr(DU, "straight_through_categorical", surrogate)
    flat = {k: np.array(v) for k, v in flatten_params(loss.params["actor_model"]).items()}
    gflat = {k: np.asarray(v) for k, v in flatten_params(grads["actor_model"]).items()}

    def f(p):
        nonlocal calls
        calls = iter(base)
        loss.params = {"actor_model": {**unflatten_params(p), "1": {}}}
        return float(loss(batch, generator=Generator.from_noise(*draws))[0]["loss_actor"])

    assert abs(f(flat) - f0) <= 1e-15 * max(1.0, abs(f0))  # the surrogate has the loss's value
    rng = np.random.default_rng(11)
    eps = 1e-6
    for _ in range(3):  # random directions over every actor parameter
        d = {k: rng.normal(size=v.shape) for k, v in flat.items()}
        fd = (f({k: v + eps * d[k] for k, v in flat.items()}) - f({k: v - eps * d[k] for k, v in flat.items()}))
        fd /= 2 * eps
        tape = sum(float(np.sum(gflat[k] * d[k])) for k in flat)
        np.testing.assert_allclose(tape, fd, rtol=1e-6, atol=1e-9)
    loss.params = {"actor_model": {**unflatten_params(flat), "1": {}}}


def test_paper_td_lambda_vs_torchrl_compat():
    """Divergence: without a continuation model TorchRL's target is r + gamma V'; arrayrl's is TD(lambda) along H."""
    loss, batch, draws, value = _setup(entropy_bonus=0.0)
    compat, _, _, _ = _setup(entropy_bonus=0.0, torchrl_compat=True)
    out, fake = loss(batch, generator=Generator.from_noise(*draws))
    out_c, fake_c = compat(batch, generator=Generator.from_noise(*draws))
    r = np.asarray(fake["next"]["reward"])
    v = np.asarray(value({"state": fake["next"]["state"], "belief": fake["next"]["belief"]})["state_value"])
    np.testing.assert_allclose(fake_c["lambda_target"], r + 0.99 * v, rtol=1e-12)
    ref = np.empty_like(r)
    gret = r[:, -1] + 0.99 * v[:, -1]
    ref[:, -1] = gret
    for t in range(HZ - 2, -1, -1):
        gret = r[:, t] + 0.99 * (0.05 * v[:, t] + 0.95 * gret)
        ref[:, t] = gret
    np.testing.assert_allclose(fake["lambda_target"], ref, rtol=1e-12)
    w = 0.99 ** np.arange(HZ)[:, None]
    np.testing.assert_allclose(fake["discount_weight"][0], w, rtol=1e-14)
    # first forward in training mode: lo, hi <- 0.01 quantile; scale = max(hi - lo, 1) = 1
    np.testing.assert_allclose(out["loss_actor"], -(ref * w).mean(), rtol=1e-12)
    np.testing.assert_allclose(out["return_high"], 0.01 * np.quantile(ref, 0.95), rtol=1e-12)
    assert abs(float(out["loss_actor"]) - float(out_c["loss_actor"])) > 1e-6


def test_continuation_target_and_weights_and_value_loss_chain():
    loss, batch, draws, value = _setup(with_cont=True)
    out, fake = loss(batch, generator=Generator.from_noise(*draws))
    c_next, c_root = np.asarray(fake["next"]["continuation"]), np.asarray(fake["continuation"])
    np.testing.assert_allclose(c_root[:, 1:], c_next[:, :-1], rtol=0)
    w = np.cumprod(np.concatenate([c_root[:, :1], 0.99 * c_root[:, 1:]], 1), 1)
    np.testing.assert_allclose(fake["discount_weight"], w, rtol=1e-13)
    np.testing.assert_allclose(out["continuation_mean"], c_next.mean(), rtol=1e-13)
    vl = DreamerV3ValueLoss(value, actor_loss=loss)
    assert np.isfinite(float(vl(fake)["loss_value"]))
    assert loss.out_keys == list(DreamerV3ActorLoss._OUT_KEYS)
    with pytest.raises(TypeError):
        DreamerV3ActorLoss(loss.actor_model, value, loss.model_based_env, gamma=0.9)
    with pytest.raises(ValueError):
        _setup(return_normalization_quantiles=(0.9, 0.1))


def test_docstring_example_runs():
    import arrayrl.objectives.dreamer_v3 as mod

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


# ------------------------------------------------------------------------------------------------ against TorchRL
TORCH_CASES = [dict(), dict(use_reinforce=True), dict(continuation=True, entropy_bonus=0.1),
               dict(continuation=True, use_reinforce=True, return_normalization_rate=0.5),
               dict(return_normalization_min_scale=1e-3, return_normalization_rate=1.0, discount_loss=False),
               dict(return_normalization=False, entropy_bonus=0.0)]


@pytest.mark.torchrl
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case", range(len(TORCH_CASES)))
def test_matches_torchrl(case, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    import torch.distributions.normal as _tdn
    import torchrl.objectives as TO
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule as TDM
    from torchrl.data import Composite, Unbounded
    from torchrl.envs.model_based.dreamer import DreamerEnv as TDreamerEnv
    from torchrl.envs.utils import ExplorationType
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import ProbabilisticActor as TPA
    from torchrl.modules import TanhNormal as TTN
    from torchrl.modules import WorldModelWrapper
    from torchrl.modules.models import model_based as mb

    from arrayrl.interop import params_from_torch

    kw = dict(TORCH_CASES[case])
    with_cont = kw.pop("continuation", False)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(case)
        orig_float = torch.Tensor.float
        monkeypatch.setattr(torch.Tensor, "float",
                            lambda self, *a, **k: self if self.dtype == torch.float64 else orig_float(self, *a, **k))
        draws: list = []
        orig_rand, orig_std = torch.rand, _tdn._standard_normal

        def rand(*a, **k):
            out = orig_rand(*a, **k)
            draws.append(out.detach().numpy().copy())
            return out

        def std(shape, dtype, device):
            out = orig_std(shape, dtype=dtype, device=device)
            draws.append(out.detach().numpy().copy())
            return out

        monkeypatch.setattr(torch, "rand", rand)
        monkeypatch.setattr(_tdn, "_standard_normal", std)

        def mlp_pair(n_out):
            tm = TMLP(in_features=S + R, out_features=n_out, depth=1, num_cells=5, activation_class=torch.nn.ELU)
            am = MLP(S + R, n_out, depth=1, num_cells=5, activation_class="elu")
            am.params = params_from_torch(tm)
            return tm, am

        tp = mb.RSSMPriorV3(hidden_dim=HID, rnn_hidden_dim=R, num_categoricals=C, num_classes=K, action_dim=A)
        ap = RSSMPriorV3(HID, R, C, K, A)
        ap.params = params_from_torch(tp)
        tr, ar = mlp_pair(1)
        t_env = TDreamerEnv(WorldModelWrapper(TDM(tp, in_keys=["state", "belief", "action"],
                                                  out_keys=["_", "state", "belief"]),
                                              TDM(tr, in_keys=["state", "belief"], out_keys=["reward"])),
                            prior_shape=torch.Size([S]), belief_shape=torch.Size([R]))
        t_env.observation_spec = Composite(state=Unbounded(S), belief=Unbounded(R))
        t_env.action_spec = Unbounded(A)
        t_env.reward_spec = Unbounded(1)
        a_env = DreamerEnv(Sequential(
            StochasticKeyedModule(ap, in_keys=["state", "belief", "action"], out_keys=["_", "state", "belief"]),
            KeyedModule(ar, in_keys=["state", "belief"], out_keys=["reward"])))
        # REINFORCE rescores the stored action through atanh: at |a| ~ 1 - 1e-13 (the default std_bias=5 reaches it)
        # one ulp of tanh is a 1e-4 change of log pi in either library, so those cases use an unsaturated actor
        std_bias = 0.0 if kw.get("use_reinforce") else 5.0
        td_actor = mb.DreamerActor(A, depth=1, num_cells=5, std_bias=std_bias)
        td_actor(torch.zeros(1, S), torch.zeros(1, R))
        t_actor = TPA(TDM(td_actor, in_keys=["state", "belief"], out_keys=["loc", "scale"]), in_keys=["loc", "scale"],
                      distribution_class=TTN, default_interaction_type=ExplorationType.RANDOM, spec=Unbounded(A))
        net = DreamerActor(A, depth=1, num_cells=5, in_features=S + R, std_bias=std_bias)
        net.params = params_from_torch(td_actor)
        a_actor = ProbabilisticActor(KeyedModule(net, in_keys=["state", "belief"], out_keys=["loc", "scale"]),
                                     in_keys=["loc", "scale"], distribution_class=TanhNormal)
        tv, av = mlp_pair(1)
        t_value = TDM(tv, in_keys=["state", "belief"], out_keys=["state_value"])
        a_value = KeyedModule(av, in_keys=["state", "belief"], out_keys=["state_value"])
        t_cont = a_cont = None
        if with_cont:
            class _Cont(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.lin = torch.nn.Linear(S + R, 1)

                def forward(self, s, b):
                    return torch.sigmoid(self.lin(torch.cat([s, b], -1)) + 1.0)

            tc = _Cont()
            cp = params_from_torch(tc)["lin"]
            cp = {"weight": cp["weight"], "bias": cp["bias"] + 1.0}
            t_cont = TDM(tc, in_keys=["state", "belief"], out_keys=["continuation"])
            a_cont = KeyedModule(_cont_fn, params=cp, in_keys=["state", "belief"], out_keys=["continuation"])
        t_loss = TO.DreamerV3ActorLoss(t_actor, t_value, t_env, continuation_model=t_cont,
                                       imagination_horizon=HZ, **kw)
        a_loss = DreamerV3ActorLoss(a_actor, a_value, a_env, continuation_model=a_cont, imagination_horizon=HZ,
                                    torchrl_compat=True, **kw)
        rng = np.random.default_rng(case)
        for call in range(2):  # the second call sees the updated return statistics
            batch = {"state": rng.normal(size=(N, S)), "belief": rng.normal(size=(N, R))}
            n0 = len(draws)
            td_actor.zero_grad()
            t_out, t_fake = t_loss(TensorDict({k: torch.tensor(v) for k, v in batch.items()}, [N]))
            t_out["loss_actor"].backward()
            n_ent = 1 if kw.get("entropy_bonus", 3e-4) > 0 else 0
            assert len(draws) - n0 == 2 * HZ + n_ent
            (a_out, a_fake), grads = a_loss.value_and_grad(batch, generator=Generator.from_noise(*draws[n0:]))
            keys = ["action", "lambda_target", "discount_weight", ("next", "state"), ("next", "belief"),
                    ("next", "reward")] + (["continuation", ("next", "continuation")] if with_cont else [])
            for key in keys:
                got = a_fake[key] if isinstance(key, str) else a_fake[key[0]][key[1]]
                _close(got, t_fake.get(key).detach().numpy(), f"fake_data.{key}")
            if kw.get("use_reinforce"):
                assert np.abs(np.asarray(a_fake["action"])).max() < 1 - 1e-6
            for k in DreamerV3ActorLoss._OUT_KEYS:
                assert np.shape(a_out[k]) == tuple(t_out[k].shape) == ()
                _close(a_out[k], t_out[k].detach().numpy(), k)
            agrads = flatten_params(grads["actor_model"]["0"])
            tgrads = {k: p.grad for k, p in td_actor.named_parameters()}
            assert sorted(tgrads) == sorted(agrads)
            for k, g in tgrads.items():
                _close(agrads[k], g.numpy(), f"grad_actor.{k}")
        _close(a_loss.return_low, t_loss.return_low.numpy(), "return_low")
    finally:
        torch.set_default_dtype(old)


def test_zz_report_max_errors():
    print("max relative errors vs TorchRL:", {k: f"{v:.1e}" for k, v in sorted(MAX_ERR.items())})
