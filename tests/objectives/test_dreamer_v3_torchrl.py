"""DreamerV3 world-model / critic losses and RSSM cells against TorchRL 0.14.1 on copied weights, in float64
(<= 1e-10 relative) where TorchRL can run in float64, float32 otherwise; gradients of every parameter compared."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import torchrl.modules.models.model_based as mb  # noqa: E402
import torchrl.objectives as TO  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402

from arrayrl import ops  # noqa: E402
from arrayrl.interop import params_from_torch  # noqa: E402
from arrayrl.nn import KeyedModule  # noqa: E402
from arrayrl.nn.rssm import RSSMPosteriorV3, RSSMPriorV3  # noqa: E402
from arrayrl.objectives.dreamer_utils import two_hot_decode, default_bins  # noqa: E402
from arrayrl.objectives.dreamer_v3 import DreamerV3ModelLoss, DreamerV3ValueLoss  # noqa: E402
from arrayrl.tree import tree_paths  # noqa: E402

TOL = dict(rtol=1e-10, atol=1e-12)
B, T, C, K, OBS, OBS2, NB = 2, 3, 4, 5, 6, 3, 255


@pytest.fixture(autouse=True)
def _f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


def _np(t):
    return t.detach().cpu().numpy()


def _close(a, b, tol=TOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **tol)


def _grads_close(grads, tmod, tol=TOL):
    tg = {n: p.grad for n, p in tmod.named_parameters()}
    for path, g in tree_paths(grads):
        name = ".".join(str(k) for k in path)
        ref = tg[name]
        _close(g, np.zeros_like(g) if ref is None else _np(ref), tol)


# ------------------------------------------------------------------------------------------------ world model
class _TorchWM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.post = torch.nn.Linear(OBS, C * K)
        self.prior = torch.nn.Linear(OBS, C * K)
        self.reco = torch.nn.Linear(OBS, OBS)
        self.reco2 = torch.nn.Linear(OBS, OBS2)
        self.reward = torch.nn.Linear(OBS, NB)
        self.reward_scalar = torch.nn.Linear(OBS, 1)
        self.cont = torch.nn.Linear(OBS, 1)

    def forward(self, x):
        lead = x.shape[:-1]
        return (self.post(x).view(*lead, C, K), self.prior(torch.tanh(x)).view(*lead, C, K), self.reco(x) * 3,
                self.reco2(x), self.reward(x), self.reward_scalar(x), self.cont(x))


def _wm_fn(p, x):
    from arrayrl._backend import namespace_of

    xp = namespace_of(x, p["post"]["weight"])
    lead = tuple(x.shape[:-1])

    def lin(name, v):
        return ops.linear(v, p[name]["weight"], p[name]["bias"])

    return (xp.reshape(lin("post", x), lead + (C, K)), xp.reshape(lin("prior", xp.tanh(x)), lead + (C, K)),
            lin("reco", x) * 3, lin("reco2", x), lin("reward", x), lin("reward_scalar", x), lin("cont", x))


WM_OUT = [("next", "posterior_logits"), ("next", "prior_logits"), ("next", "reco_pixels"), ("next", "reco_obs2"),
          ("next", "reward_logits"), ("next", "reward"), ("next", "continue_pred")]


def _wm_pair():
    tnet = _TorchWM()
    twm = TensorDictModule(tnet, in_keys=[("next", "pixels")], out_keys=WM_OUT)
    awm = KeyedModule(_wm_fn, params=params_from_torch(tnet), in_keys=[("next", "pixels")], out_keys=WM_OUT)
    return tnet, twm, awm


def _wm_batch(seed=0, int_obs2=False):
    rng = np.random.default_rng(seed)
    nxt = {"pixels": rng.normal(size=(B, T, OBS)) * 2,
           "obs2": (rng.integers(0, 256, size=(B, T, OBS2)).astype(np.uint8) if int_obs2
                    else rng.normal(size=(B, T, OBS2))),
           "reward": rng.normal(size=(B, T, 1)) * 5,
           "terminated": rng.random(size=(B, T, 1)) < 0.3}
    nxt["done"] = nxt["terminated"].copy()
    return {"next": nxt}


def _td(batch):
    def conv(d):
        return {k: conv(v) if isinstance(v, dict) else torch.as_tensor(v) for k, v in d.items()}

    return TensorDict(conv(batch), batch_size=[B, T])


MODEL_CASES = [
    dict(),
    dict(kl_mode="separate", lambda_dynamic=0.5, lambda_representation=0.1, unimix=0.01, lambda_continue=1.0),
    dict(reward_two_hot=False, reco_loss="l1", global_average=True, free_bits=0.0, kl_alpha=0.6),
    dict(reco_symlog=[True, False], lambda_continue=0.7, continue_target_scale=0.9, lambda_kl=2.0),
]


@pytest.mark.parametrize("case", range(len(MODEL_CASES)))
def test_model_loss_matches_torchrl(case):
    kw = MODEL_CASES[case]
    heads = "reco_symlog" in kw
    tnet, twm, awm = _wm_pair()
    batch = _wm_batch(case, int_obs2=heads)
    tl = TO.DreamerV3ModelLoss(twm, **kw)
    al = DreamerV3ModelLoss(awm, **kw)
    if heads:
        tl.set_keys(pixels=["pixels", "obs2"], reco_pixels=["reco_pixels", "reco_obs2"])
        al.set_keys(pixels=["pixels", "obs2"], reco_pixels=["reco_pixels", "reco_obs2"])
    tout, _ = tl(_td(batch))
    out, grads = al.value_and_grad(batch)
    assert sorted(out) == sorted(tout.keys())
    total = sum(v for k, v in tout.items() if k.startswith("loss"))
    total.sum().backward()
    for k in out:
        assert out[k].shape == (1,)
        # TorchRL casts the continue target and integer observations to float32 ((~terminated).float(),
        # obs.float() / 255): those terms are float32-accurate on its side
        f32 = k == "loss_model_continue" or (heads and k == "loss_model_reco")
        _close(out[k], _np(tout[k]), dict(rtol=1e-6, atol=1e-7) if f32 else TOL)
    _grads_close(grads["world_model"], tnet, dict(rtol=1e-5, atol=1e-7) if case in (1, 3) else TOL)


def test_model_loss_output_batch_and_float32():
    tnet, twm, awm = _wm_pair()
    batch = _wm_batch(5)
    losses, wm_out = DreamerV3ModelLoss(awm).forward_with_output(batch)
    _, tout = TO.DreamerV3ModelLoss(twm)(_td(batch))
    _close(wm_out["next"]["true_reward"], _np(tout["next", "true_reward"]))
    assert "reward" in wm_out["next"]  # the world model's prediction
    # float32 in, float32 out
    from arrayrl.nn.params import cast_params

    awm.params = cast_params(awm.params, np.float32)
    b32 = {"next": {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in batch["next"].items()}}
    out32 = DreamerV3ModelLoss(awm)(b32)
    for k, v in out32.items():
        assert v.dtype == np.float32
        _close(v, losses[k], dict(rtol=1e-4, atol=1e-5))


# ------------------------------------------------------------------------------------------------ value loss
class _TorchValue(torch.nn.Module):
    def __init__(self, two_hot):
        super().__init__()
        self.two_hot = two_hot
        self.lin = torch.nn.Linear(OBS, NB if two_hot else 1)

    def forward(self, x):
        y = self.lin(x)
        if self.two_hot:
            return y, mb.two_hot_decode(y, mb._default_bins(NB)).unsqueeze(-1)
        return y * 4


def _value_pair(two_hot):
    tnet = _TorchValue(two_hot)
    keys = ["state_value_logits", "state_value"] if two_hot else ["state_value"]
    twm = TensorDictModule(tnet, in_keys=["state"], out_keys=keys)

    def fn(p, x):
        y = ops.linear(x, p["lin"]["weight"], p["lin"]["bias"])
        if two_hot:
            return y, two_hot_decode(y, default_bins(NB))[..., None]
        return y * 4

    awm = KeyedModule(fn, params=params_from_torch(tnet), in_keys=["state"], out_keys=keys)
    return tnet, twm, awm


def _fake(seed, with_weight):
    rng = np.random.default_rng(seed)
    d = {"state": rng.normal(size=(B, T, OBS)), "lambda_target": rng.normal(size=(B, T, 1)) * 10}
    if with_weight:
        d["discount_weight"] = rng.random(size=(B, T, 1))
    return d


VALUE_CASES = [
    dict(two_hot=False, kw=dict(), weight=False),
    dict(two_hot=True, kw=dict(value_loss="two_hot"), weight=True),
    dict(two_hot=True, kw=dict(value_loss="two_hot", slow_critic_regularization=1.0), weight=False),
    dict(two_hot=False, kw=dict(slow_critic_regularization=0.5, gamma=0.9, reduction="sum"), weight=False),
    dict(two_hot=False, kw=dict(discount_loss=False, reduction="none"), weight=False),
]


def _perturb_target(tl, al, tnet):
    # move the slow critic away from the online one, identically on both sides
    if tl.slow_critic_regularization:
        with torch.no_grad():
            for p in tl.target_value_model_params.values(True, True):
                p.add_(0.1)
        al.target_params = {"value_model": params_from_torch(tnet)}
        tp = al.target_params["value_model"]
        al.target_params = {"value_model": {"lin": {k: v + 0.1 for k, v in tp["lin"].items()}}}


@pytest.mark.parametrize("case", range(len(VALUE_CASES)))
def test_value_loss_matches_torchrl(case):
    c = VALUE_CASES[case]
    tnet, tvm, avm = _value_pair(c["two_hot"])
    fake = _fake(case, c["weight"])
    tl = TO.DreamerV3ValueLoss(tvm, **c["kw"])
    al = DreamerV3ValueLoss(avm, **c["kw"])
    _perturb_target(tl, al, tnet)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tout, _ = tl(TensorDict({k: torch.as_tensor(v) for k, v in fake.items()}, [B, T]))
    out, grads = al.value_and_grad(fake)
    tout["loss_value"].sum().backward()
    for k in ("loss_value", "value_slow_loss"):
        _close(out[k], _np(tout[k]))
    _grads_close(grads["value_model"], tnet)


@pytest.mark.parametrize("two_hot", [False, True])
def test_replay_value_loss_matches_torchrl(two_hot):
    tnet, tvm, avm = _value_pair(two_hot)
    kw = dict(value_loss="two_hot") if two_hot else {}
    rng = np.random.default_rng(3)
    done = rng.random(size=(B, 5, 1)) < 0.3
    batch = {"state": rng.normal(size=(B, 5, OBS)), "bootstrap": rng.normal(size=(B, 5)) * 3,
             "next": {"reward": rng.normal(size=(B, 5, 1)), "done": done, "terminated": done & (rng.random(
                 size=(B, 5, 1)) < 0.5)}}
    tl = TO.DreamerV3ValueLoss(tvm, **kw)
    al = DreamerV3ValueLoss(avm, **kw)
    td = TensorDict({"state": torch.as_tensor(batch["state"]), "bootstrap": torch.as_tensor(batch["bootstrap"]),
                     "next": {k: torch.as_tensor(v) for k, v in batch["next"].items()}}, [B, 5])
    tout = tl.replay_value_loss(td, horizon=20.0, lmbda=0.9)
    out = al.replay_value_loss(batch, horizon=20.0, lmbda=0.9)
    _close(out["loss_replay_value"], _np(tout["loss_replay_value"]))


# ------------------------------------------------------------------------------------------------ RSSM cells
def _patched_rms(value, weight, eps):  # TorchRL's DreamerV3 RMS norm, in the input dtype (it forces float32)
    return torch.nn.functional.rms_norm(value, (weight.shape[0],), weight, eps)


@pytest.mark.parametrize("mode", ["gru", "block_gru"])
def test_prior_matches_torchrl(mode, monkeypatch):
    tp = mb.RSSMPriorV3(hidden_dim=16, rnn_hidden_dim=8, num_categoricals=C, num_classes=K, action_dim=2,
                        recurrent_model=mode, num_blocks=2, unimix=0.01)
    if mode == "gru":
        params = params_from_torch(tp)
    else:
        monkeypatch.setattr(mb, "_dreamer_v3_rms_norm", _patched_rms)
        params = params_from_torch(tp)
    ap = RSSMPriorV3(16, 8, C, K, 2, recurrent_model=mode, num_blocks=2, unimix=0.01)
    s = torch.randn(3, C * K, requires_grad=True)
    b = torch.randn(3, 8)
    a = torch.randn(3, 2) * 3
    u = torch.rand(3, C)
    if mode == "gru":  # TorchRL's forward casts the GRU input to float32: compose its own layers in float64
        tb = tp.rnn(tp.action_state_projector(torch.cat([s, a], -1)), b)
        tl = tp.rnn_to_prior_projector(tb).view(3, C, K)
        ts = mb._straight_through_categorical(tl, 0.01, uniform=u).view(3, C * K)
    else:
        tl, ts, tb = tp(s, b, a, _uniform=u)
    ((tl * torch.cos(tl)).sum() + (ts * torch.arange(C * K)).sum() + (tb ** 2).sum()).backward()

    def f(p, s_):
        from arrayrl._backend import namespace_of

        lg, st, bl = ap.apply(p, s_, _np(b), _np(a), uniform=_np(u))
        xp = namespace_of(lg, st, bl)
        return xp.sum(lg * xp.cos(lg)) + xp.sum(st * np.arange(C * K, dtype=np.float64)) + xp.sum(bl * bl), \
            (lg, st, bl)

    import arrayrl.autodiff as ad

    (_, (lg, st, bl)), (gp, gs) = ad.value_and_grad(f, argnums=(0, 1), has_aux=True)(params, _np(s))
    _close(lg, _np(tl))
    _close(st, _np(ts))
    _close(bl, _np(tb))
    _close(gs, _np(s.grad))
    named = dict(tp.named_parameters())
    for path, g in tree_paths(gp):
        _close(g, _np(named[".".join(map(str, path))].grad))


@pytest.mark.parametrize("rms", [False, True])
def test_posterior_matches_torchrl(rms, monkeypatch):
    monkeypatch.setattr(mb, "_dreamer_v3_rms_norm", _patched_rms)
    tq = mb.RSSMPosteriorV3(hidden_dim=16, num_categoricals=C, num_classes=K, rnn_hidden_dim=8, obs_embed_dim=5,
                            use_rms_norm=rms, num_layers=2, unimix=0.1)
    aq = RSSMPosteriorV3(16, C, K, 8, 5, use_rms_norm=rms, num_layers=2, unimix=0.1)
    params = params_from_torch(tq)
    b, e, u = torch.randn(2, 3, 8), torch.randn(2, 3, 5), torch.rand(2, 3, C)
    tl, ts = tq(b, e, _uniform=u)
    al, as_ = aq.apply(params, _np(b), _np(e), uniform=_np(u))
    _close(al, _np(tl))
    _close(as_, _np(ts))


def test_rssm_float32_matches_torchrl_unpatched():
    torch.set_default_dtype(torch.float32)
    tp = mb.RSSMPriorV3(hidden_dim=16, rnn_hidden_dim=8, num_categoricals=C, num_classes=K, action_dim=2,
                        recurrent_model="block_gru", num_blocks=2)
    ap = RSSMPriorV3(16, 8, C, K, 2, recurrent_model="block_gru", num_blocks=2)
    s, b, a, u = torch.randn(3, C * K), torch.randn(3, 8), torch.randn(3, 2), torch.rand(3, C)
    tl, ts, tb = tp(s, b, a, _uniform=u)
    lg, st, bl = ap.apply(params_from_torch(tp), _np(s), _np(b), _np(a), uniform=_np(u))
    assert lg.dtype == np.float32 and bl.dtype == np.float32
    _close(lg, _np(tl), dict(rtol=1e-5, atol=1e-5))
    _close(bl, _np(tb), dict(rtol=1e-5, atol=1e-5))
