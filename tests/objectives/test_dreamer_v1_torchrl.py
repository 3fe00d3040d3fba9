"""Dreamer v1 (RSSMPrior/RSSMPosterior/RSSMRollout/DreamerActor, DreamerModelLoss/ActorLoss/ValueLoss) against
TorchRL 0.14.1 in float64 on copied weights, with TorchRL's draws (``torch.randn_like`` of the RSSM and the
``_standard_normal`` of the actor's TanhNormal) recorded and replayed in order. Relative 1e-10 on every output,
the imagined trajectory and every parameter gradient.

TorchRL's ``RSSMPrior`` casts its GRU input to float32 (``.float()``) and then fails on float64 weights; the tests
make ``Tensor.float`` the identity on float64 tensors while TorchRL runs (the arrayrl divergence: it computes in
the input dtype)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import torch.distributions.normal as _tdn  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule as TDM  # noqa: E402
from tensordict.nn import TensorDictSequential as TDS  # noqa: E402
from torchrl.data import Composite, Unbounded  # noqa: E402
from torchrl.envs.model_based.dreamer import DreamerEnv as TDreamerEnv  # noqa: E402
from torchrl.envs.utils import ExplorationType  # noqa: E402
from torchrl.modules import MLP as TMLP  # noqa: E402
from torchrl.modules import ProbabilisticActor as TPA  # noqa: E402
from torchrl.modules import TanhNormal as TTN  # noqa: E402
from torchrl.modules import WorldModelWrapper  # noqa: E402
from torchrl.modules.models.model_based import DreamerActor as TDA  # noqa: E402
from torchrl.modules.models.model_based import RSSMPosterior as TPost  # noqa: E402
from torchrl.modules.models.model_based import RSSMPrior as TPrior  # noqa: E402
from torchrl.modules.models.model_based import RSSMRollout as TRoll  # noqa: E402
from torchrl.objectives import DreamerActorLoss as TActorLoss  # noqa: E402
from torchrl.objectives import DreamerModelLoss as TModelLoss  # noqa: E402
from torchrl.objectives import DreamerValueLoss as TValueLoss  # noqa: E402

from arrayrl.distributions import TanhNormal  # noqa: E402
from arrayrl.interop import params_from_torch  # noqa: E402
from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor, Sequential  # noqa: E402
from arrayrl.nn.params import flatten_params  # noqa: E402
from arrayrl.nn.rssm_v1 import DreamerActor, RSSMPosterior, RSSMPrior, RSSMRollout, StochasticKeyedModule  # noqa: E402
from arrayrl.objectives.dreamer import DreamerActorLoss, DreamerEnv, DreamerModelLoss, DreamerValueLoss  # noqa: E402
from arrayrl.random import Generator  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]

RTOL, ATOL = 1e-10, 1e-12
B, T, S, R, HID, A, E, HZ = 2, 3, 3, 4, 4, 2, 4, 3  # TorchRL needs R == HID (see test_dreamer_v1.py)
MAX_ERR: dict = {}


@pytest.fixture(autouse=True)
def _float64(monkeypatch):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    orig = torch.Tensor.float
    monkeypatch.setattr(torch.Tensor, "float",
                        lambda self, *a, **k: self if self.dtype == torch.float64 else orig(self, *a, **k))
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def record(monkeypatch):
    """Record TorchRL's draws in order (``torch.randn_like`` and ``torch.distributions``' ``_standard_normal``)."""
    draws: list = []
    orig_like, orig_std = torch.randn_like, _tdn._standard_normal

    def like(x, *a, **k):
        out = orig_like(x, *a, **k)
        draws.append(out.detach().numpy().copy())
        return out

    def std(shape, dtype, device):
        out = orig_std(shape, dtype=dtype, device=device)
        draws.append(out.detach().numpy().copy())
        return out

    monkeypatch.setattr(torch, "randn_like", like)
    monkeypatch.setattr(_tdn, "_standard_normal", std)
    return draws


def _close(got, want, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)
    err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-3))) if got.size else 0.0
    MAX_ERR[what.split(".")[0]] = max(MAX_ERR.get(what.split(".")[0], 0.0), err)


def _np(x):
    return x.detach().numpy()


# ------------------------------------------------------------------------------------------------ builders
def _prior_pair():
    tp = TPrior(Unbounded(A), hidden_dim=HID, rnn_hidden_dim=R, state_dim=S, action_dim=A)
    ap = RSSMPrior(action_dim=A, hidden_dim=HID, rnn_hidden_dim=R, state_dim=S)
    ap.params = params_from_torch(tp)
    return tp, ap


def _actor_pair():
    td_actor = TDA(A, depth=1, num_cells=6)
    td_actor(torch.zeros(1, S), torch.zeros(1, R))  # materialise the lazy MLP
    t_actor = TPA(TDM(td_actor, in_keys=["state", "belief"], out_keys=["loc", "scale"]), in_keys=["loc", "scale"],
                  distribution_class=TTN, default_interaction_type=ExplorationType.RANDOM,
                  spec=Unbounded(A))
    net = DreamerActor(A, depth=1, num_cells=6, in_features=S + R)
    net.params = params_from_torch(td_actor)
    a_actor = ProbabilisticActor(KeyedModule(net, in_keys=["state", "belief"], out_keys=["loc", "scale"]),
                                 in_keys=["loc", "scale"], distribution_class=TanhNormal)
    return td_actor, t_actor, a_actor


def _mlp_pair(n_in, n_out):
    tm = TMLP(in_features=n_in, out_features=n_out, depth=1, num_cells=6, activation_class=torch.nn.ELU)
    am = MLP(n_in, n_out, depth=1, num_cells=6, activation_class="elu")
    am.params = params_from_torch(tm)
    return tm, am


def _env_pair():
    tp, ap = _prior_pair()
    tr, ar = _mlp_pair(S + R, 1)
    t_wm = WorldModelWrapper(TDM(tp, in_keys=["state", "belief", "action"], out_keys=["_", "_", "state", "belief"]),
                             TDM(tr, in_keys=["state", "belief"], out_keys=["reward"]))
    t_env = TDreamerEnv(t_wm, prior_shape=torch.Size([S]), belief_shape=torch.Size([R]))
    t_env.observation_spec = Composite(state=Unbounded(S), belief=Unbounded(R))
    t_env.action_spec = Unbounded(A)
    t_env.reward_spec = Unbounded(1)
    a_wm = Sequential(StochasticKeyedModule(ap, in_keys=["state", "belief", "action"],
                                            out_keys=["_", "_", "state", "belief"]),
                      KeyedModule(ar, in_keys=["state", "belief"], out_keys=["reward"]))
    return t_env, DreamerEnv(a_wm), (tp, ap, tr, ar)


def _batch(rng):
    # TorchRL's prior GRU cell takes 2-D inputs only, so the imagination batch is flat: [N = B T]
    return {"state": rng.normal(size=(B * T, S)), "belief": rng.normal(size=(B * T, R))}


# ------------------------------------------------------------------------------------------------ modules
def test_rssm_prior_posterior_actor_match_torchrl(record):
    rng = np.random.default_rng(0)
    tp, ap = _prior_pair()
    s, b, a = rng.normal(size=(B, S)), rng.normal(size=(B, R)), rng.normal(size=(B, A))
    tout = tp(*(torch.tensor(v) for v in (s, b, a)))
    aout = ap.apply(ap.params, s, b, a, generator=Generator.from_noise(*record))
    for name, x, y in zip(("prior_mean", "prior_std", "state", "belief"), aout, tout):
        _close(x, _np(y), f"prior.{name}")
    tq = TPost(hidden_dim=HID, state_dim=S, rnn_hidden_dim=R, obs_embed_dim=E)
    aq = RSSMPosterior(hidden_dim=HID, state_dim=S, rnn_hidden_dim=R, obs_embed_dim=E)
    aq.params = params_from_torch(tq)
    emb = rng.normal(size=(B, T, E))
    bb = rng.normal(size=(B, T, R))
    n0 = len(record)
    tout = tq(torch.tensor(bb), torch.tensor(emb))
    aout = aq.apply(aq.params, bb, emb, generator=Generator.from_noise(*record[n0:]))
    for name, x, y in zip(("posterior_mean", "posterior_std", "state"), aout, tout):
        _close(x, _np(y), f"posterior.{name}")
    td_actor, _, a_actor = _actor_pair()
    ss, bb = rng.normal(size=(B, T, S)) * 3, rng.normal(size=(B, T, R)) * 3
    loc, scale = td_actor(torch.tensor(ss), torch.tensor(bb))
    aloc, ascale = a_actor.modules[0].fn.apply(a_actor.modules[0].params, ss, bb)
    _close(aloc, _np(loc), "actor.loc")
    _close(ascale, _np(scale), "actor.scale")


# ------------------------------------------------------------------------------------------------ actor/value
@pytest.mark.parametrize("discount_loss", [True, False])
def test_actor_value_losses_match_torchrl_compat(record, discount_loss):
    rng = np.random.default_rng(1)
    t_env, a_env, _ = _env_pair()
    td_actor, t_actor, a_actor = _actor_pair()
    tv, av = _mlp_pair(S + R, 1)
    t_value = TDM(tv, in_keys=["state", "belief"], out_keys=["state_value"])
    a_value = KeyedModule(av, in_keys=["state", "belief"], out_keys=["state_value"])
    batch = _batch(rng)
    t_loss = TActorLoss(t_actor, t_value, t_env, imagination_horizon=HZ, discount_loss=discount_loss)
    tdata = TensorDict({k: torch.tensor(v) for k, v in batch.items()}, [B * T])
    t_out, t_fake = t_loss(tdata)
    t_out["loss_actor"].backward()
    assert len(record) == 2 * HZ  # per step: the action, then the prior's state noise
    a_loss = DreamerActorLoss(a_actor, a_value, a_env, imagination_horizon=HZ, discount_loss=discount_loss,
                              torchrl_compat=True)
    (a_out, a_fake), grads = a_loss.value_and_grad(batch, generator=Generator.from_noise(*record))
    assert np.shape(a_out["loss_actor"]) == tuple(t_out["loss_actor"].shape) == ()
    _close(a_out["loss_actor"], _np(t_out["loss_actor"]), "loss_actor")
    for key in ["action", "lambda_target", ("next", "state"), ("next", "belief"), ("next", "reward")]:
        _close(a_fake[key] if isinstance(key, str) else a_fake[key[0]][key[1]], _np(t_fake.get(key)),
               f"fake_data.{key}")
    tgrads = {k: p.grad for k, p in td_actor.named_parameters()}
    agrads = flatten_params(grads["actor_model"]["0"])
    assert sorted(tgrads) == sorted(agrads)
    for k, g in tgrads.items():
        _close(agrads[k], _np(g), f"grad_actor.{k}")
    # the forward path agrees with value_and_grad
    f_out, _ = a_loss(batch, generator=Generator.from_noise(*record))
    _close(f_out["loss_actor"], _np(t_out["loss_actor"]), "loss_actor")

    # value loss on TorchRL's fake data
    t_vloss = TValueLoss(t_value, discount_loss=discount_loss)
    tv_out, _ = t_vloss(t_fake)
    tv_out["loss_value"].backward()
    a_vloss = DreamerValueLoss(a_value, discount_loss=discount_loss)
    av_out, grads = a_vloss.value_and_grad(a_fake)
    _close(av_out["loss_value"], _np(tv_out["loss_value"]), "loss_value")
    agv = flatten_params(grads["value_model"])
    for k, p in tv.named_parameters():
        _close(agv[k], _np(p.grad), f"grad_value.{k}")


def test_actor_paper_lambda_differs_from_torchrl(record):
    """Divergence: TorchRL's "lambda target" is the 1-step r + gamma V'; arrayrl's default is TD(lambda) along the
    horizon (checked against a float64 reference recursion on TorchRL's own imagined rewards and values)."""
    rng = np.random.default_rng(2)
    t_env, a_env, _ = _env_pair()
    _, t_actor, a_actor = _actor_pair()
    tv, av = _mlp_pair(S + R, 1)
    t_value = TDM(tv, in_keys=["state", "belief"], out_keys=["state_value"])
    a_value = KeyedModule(av, in_keys=["state", "belief"], out_keys=["state_value"])
    batch = _batch(rng)
    t_loss = TActorLoss(t_actor, t_value, t_env, imagination_horizon=HZ)
    t_out, t_fake = t_loss(TensorDict({k: torch.tensor(v) for k, v in batch.items()}, [B * T]))
    r = _np(t_fake["next", "reward"])
    with torch.no_grad():
        v = _np(tv(t_fake["next", "state"], t_fake["next", "belief"]))
    _close(_np(t_fake["lambda_target"]), r + 0.99 * v, "torchrl_one_step")
    g, lm = 0.99, 0.95
    ref = np.zeros_like(r)
    nxt = v[..., -1, :]
    for t in reversed(range(HZ)):
        nxt = r[..., t, :] + g * ((1 - lm) * v[..., t, :] + lm * nxt) if t < HZ - 1 else r[..., t, :] + g * v[..., t, :]
        ref[..., t, :] = nxt
    w = g ** np.arange(HZ)[:, None]
    a_loss = DreamerActorLoss(a_actor, a_value, a_env, imagination_horizon=HZ)
    a_out, a_fake = a_loss(batch, generator=Generator.from_noise(*record))
    _close(a_fake["lambda_target"], ref, "paper_lambda_target")
    _close(a_out["loss_actor"], -(ref * w).sum((-2, -1)).mean(), "paper_loss_actor")
    assert abs(float(a_out["loss_actor"]) - float(t_out["loss_actor"])) > 1e-3


# ------------------------------------------------------------------------------------------------ model loss
class _Dec(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(S + R, 4)

    def forward(self, s, b):
        return self.lin(torch.cat([s, b], -1)).unflatten(-1, (1, 2, 2))


@pytest.mark.parametrize("kw", [{}, {"free_nats": 0}, {"delayed_clamp": True, "free_nats": 0.5, "lambda_kl": 0.7},
                                {"global_average": True, "reco_loss": "l1", "reward_loss": "smooth_l1"}])
def test_model_loss_matches_torchrl(record, kw):
    rng = np.random.default_rng(3)
    tp, ap = _prior_pair()
    tq = TPost(hidden_dim=HID, state_dim=S, rnn_hidden_dim=R, obs_embed_dim=E)
    aq = RSSMPosterior(hidden_dim=HID, state_dim=S, rnn_hidden_dim=R, obs_embed_dim=E)
    aq.params = params_from_torch(tq)
    tenc = torch.nn.Linear(4, E)
    tdec = _Dec()
    tr, ar = _mlp_pair(S + R, 1)
    nxt = ("next",)
    t_roll = TRoll(TDM(tp, in_keys=["state", "belief", "action"],
                       out_keys=[nxt + ("prior_mean",), nxt + ("prior_std",), "_", nxt + ("belief",)]),
                   TDM(tq, in_keys=[nxt + ("belief",), nxt + ("encoded_latents",)],
                       out_keys=[nxt + ("posterior_mean",), nxt + ("posterior_std",), nxt + ("state",)]))
    t_wm = WorldModelWrapper(
        TDS(TDM(lambda x: tenc(x.flatten(-3)), in_keys=[nxt + ("pixels",)], out_keys=[nxt + ("encoded_latents",)]),
            t_roll, TDM(tdec, in_keys=[nxt + ("state",), nxt + ("belief",)], out_keys=[nxt + ("reco_pixels",)])),
        TDM(tr, in_keys=[nxt + ("state",), nxt + ("belief",)], out_keys=[nxt + ("reward",)]))
    a_enc = KeyedModule(_enc_taped, params=params_from_torch(tenc), in_keys=[nxt + ("pixels",)],
                        out_keys=[nxt + ("encoded_latents",)])
    a_roll = RSSMRollout(
        StochasticKeyedModule(ap, in_keys=["state", "belief", "action"],
                              out_keys=[nxt + ("prior_mean",), nxt + ("prior_std",), "_", nxt + ("belief",)]),
        StochasticKeyedModule(aq, in_keys=[nxt + ("belief",), nxt + ("encoded_latents",)],
                              out_keys=[nxt + ("posterior_mean",), nxt + ("posterior_std",), nxt + ("state",)]))
    dp = params_from_torch(tdec)
    a_dec = KeyedModule(_dec_taped, params=dp,
                        in_keys=[nxt + ("state",), nxt + ("belief",)], out_keys=[nxt + ("reco_pixels",)])
    a_wm = Sequential(a_enc, a_roll, a_dec, KeyedModule(ar, in_keys=[nxt + ("state",), nxt + ("belief",)],
                                                         out_keys=[nxt + ("reward",)]))
    batch = {"state": rng.normal(size=(B, T, S)), "belief": rng.normal(size=(B, T, R)),
             "action": rng.normal(size=(B, T, A)),
             "next": {"pixels": rng.normal(size=(B, T, 1, 2, 2)), "reward": rng.normal(size=(B, T, 1))}}
    tdata = TensorDict({"state": torch.tensor(batch["state"]), "belief": torch.tensor(batch["belief"]),
                        "action": torch.tensor(batch["action"]),
                        "next": {k: torch.tensor(v) for k, v in batch["next"].items()}}, [B, T])
    t_loss = TModelLoss(t_wm, **kw)
    t_out, t_fake = t_loss(tdata)
    sum(t_out.values()).sum().backward()
    assert len(record) == 2 * T
    a_loss = DreamerModelLoss(a_wm, **kw)
    a_out, grads = a_loss.value_and_grad(batch, generator=Generator.from_noise(*record))
    f_out, a_fake = a_loss(batch, generator=Generator.from_noise(*record))
    for k in ("loss_model_kl", "loss_model_reco", "loss_model_reward"):
        assert tuple(np.shape(a_out[k])) == tuple(t_out[k].shape) == (1,)
        _close(a_out[k], _np(t_out[k]), k)
        _close(f_out[k], _np(t_out[k]), k)
    for key in ("prior_mean", "posterior_std", "state", "belief", "reco_pixels", "reward", "true_reward"):
        _close(a_fake["next"][key], _np(t_fake["next", key]), f"fake_data.{key}")
    ag = grads["world_model"]
    pairs = [(tenc, ag["0"]), (tp, ag["1"]["rssm_prior"]), (tq, ag["1"]["rssm_posterior"]), (tdec, ag["2"]),
             (tr, ag["3"])]
    for tmod, tree in pairs:
        flat = flatten_params(tree)
        for k, p in tmod.named_parameters():
            _close(flat[k], _np(p.grad), f"grad_world_model.{k}")


def _enc_taped(p, x):
    from arrayrl import ops
    from arrayrl._backend import namespace_of

    xp = namespace_of(x, p["weight"])
    y = ops.linear(xp.reshape(x, (-1, 4)), p["weight"], p["bias"])
    return xp.reshape(y, tuple(x.shape[:-3]) + (E,))


def _dec_taped(p, s, b):
    from arrayrl import ops
    from arrayrl._backend import namespace_of

    xp = namespace_of(s, b, p["lin"]["weight"])
    x = xp.concat([s, b], axis=-1)
    y = ops.linear(xp.reshape(x, (-1, S + R)), p["lin"]["weight"], p["lin"]["bias"])
    return xp.reshape(y, tuple(s.shape[:-1]) + (1, 2, 2))


def test_zz_report_max_errors():
    print("max relative errors vs TorchRL:", {k: f"{v:.1e}" for k, v in sorted(MAX_ERR.items())})
