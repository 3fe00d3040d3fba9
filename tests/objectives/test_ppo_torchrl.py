"""Cross-validation of PPOLoss / ClipPPOLoss / KLPENPPOLoss against TorchRL 0.14.1: float64, copied weights,
identical ``[B, T]`` batches collected by TorchRL's actor (so the stored log-probabilities are TorchRL's); every
output key and every parameter gradient, relative error <= 1e-10 (plus a 1e-12 absolute floor for zeros)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import NormalParamExtractor as TNPE  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.envs.utils import ExplorationType, set_exploration_type  # noqa: E402
from torchrl.modules import MLP as TMLP  # noqa: E402
from torchrl.modules import IndependentNormal as TIN  # noqa: E402
from torchrl.modules import ProbabilisticActor as TPA  # noqa: E402
from torchrl.modules import TanhNormal as TTN  # noqa: E402
from torchrl.modules import ValueOperator as TVO  # noqa: E402
import torchrl.objectives as TO  # noqa: E402
from torchrl.objectives.value import GAE as TGAE  # noqa: E402

from arrayrl.distributions import Categorical, IndependentNormal, Normal, TanhNormal  # noqa: E402
from arrayrl.interop import from_tensordict  # noqa: E402
from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor, ValueOperator  # noqa: E402
from arrayrl.objectives.ppo import ClipPPOLoss, KLPENPPOLoss, PPOLoss  # noqa: E402
from arrayrl.random import Generator  # noqa: E402
from tests.objectives.torchrl_helpers import Comparer, normal_actor, perturb  # noqa: E402
from tests.objectives.torchrl_helpers import float64_default  # noqa: E402,F401  (autouse fixture)
from tests.objectives.torchrl_helpers import torch_tree as _tree  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]

RTOL, ATOL = 1e-10, 1e-12
B, T, NOBS, NA = 3, 4, 3, 2
CLASSES = {"ppo": (TO.PPOLoss, PPOLoss), "clip": (TO.ClipPPOLoss, ClipPPOLoss), "klpen": (TO.KLPENPPOLoss, KLPENPPOLoss)}
_compare_grads = Comparer(RTOL, ATOL, grad_label="").grads
_check_outputs = Comparer(RTOL, ATOL, shapes=True).outputs


def _actors(kind):
    """TorchRL and arrayrl actors of one kind (weights copied later): categorical, normal (per-dimension Normal,
    TorchRL's per-token path), independent (IndependentNormal), tanh (TanhNormal)."""
    if kind == "categorical":
        tnet = TensorDictModule(TMLP(in_features=NOBS, out_features=3, num_cells=[8]), ["observation"], ["logits"])
        tactor = TPA(tnet, in_keys=["logits"], distribution_class=torch.distributions.Categorical,
                     return_log_prob=True)
        anet = KeyedModule(MLP(in_features=NOBS, out_features=3, num_cells=[8]), in_keys=["observation"],
                           out_keys=["logits"])
        return tactor, ProbabilisticActor(anet, in_keys=["logits"], distribution_class=Categorical), "0."
    tdist = {"normal": torch.distributions.Normal, "independent": TIN, "tanh": TTN}[kind]
    adist = {"normal": Normal, "independent": IndependentNormal, "tanh": TanhNormal}[kind]
    tmlp = TMLP(in_features=NOBS, out_features=2 * NA, num_cells=[8])
    tnet = TensorDictModule(torch.nn.Sequential(tmlp, TNPE()), ["observation"], ["loc", "scale"])
    tactor = TPA(tnet, in_keys=["loc", "scale"], distribution_class=tdist, return_log_prob=True)
    return tactor, normal_actor(NOBS, NA, adist), "0.0."


def _pair(cls, kind, critic, kw, akw=None):
    tactor, aactor, prefix = _actors(kind)
    tcritic = acritic = None
    if critic:
        tcritic = TVO(TMLP(in_features=NOBS, out_features=1, num_cells=[8]), in_keys=["observation"])
        acritic = ValueOperator(MLP(in_features=NOBS, out_features=1, num_cells=[8]), in_keys=["observation"])
    tcls, acls = CLASSES[cls]
    tl = tcls(tactor, tcritic, **kw)
    al = acls(aactor, acritic, **kw, **(akw or {}))
    return tl, al, tactor, prefix


def _copy_weights(tl, al, prefix):
    params = {"actor_network": {"0": _tree(tl.actor_network_params, prefix), "1": {}}}
    if "critic_network" in al.params:
        params["critic_network"] = _tree(tl.critic_network_params)
    al.params = params


def _rollout(tactor, *, stored_value=None, mask=False):
    """A [B, T] batch collected with TorchRL's actor (random exploration, stored log-prob)."""
    td = TensorDict({"observation": torch.randn(B, T, NOBS)}, [B, T])
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        td = tactor(td)
    done = torch.zeros(B, T, 1, dtype=torch.bool)
    done[0, 1] = True
    done[:, -1] = True
    term = done.clone()
    term[:, -1] = False  # truncated at the end of the rollout
    td["next"] = TensorDict({"observation": torch.randn(B, T, NOBS), "reward": torch.randn(B, T, 1),
                             "done": done, "terminated": term}, [B, T])
    if stored_value is not None:
        td["state_value"] = stored_value
    if mask:
        m = torch.ones(B, T, dtype=torch.bool)
        m[1, 2:] = False
        td[("collector", "mask")] = m
    return td.detach()


def _run(tl, al, td, *, noise=None):
    batch = from_tensordict(td, np, copy=True)
    if noise is not None:
        torch.manual_seed(123)
        n = torch.randn(*noise).numpy()
        al.generator = Generator.from_noise(n)
        torch.manual_seed(123)
    tout = tl(td)
    total = sum(tout[k].sum() for k in tout.keys() if k.startswith("loss"))
    total.backward()
    aout, grads = al.value_and_grad(batch)
    return tout, aout, grads, batch


def _grads_all(tl, al, grads, prefix):
    _compare_grads(tl.actor_network_params, grads["actor_network"]["0"], "actor", prefix)
    if "critic_network" in grads:
        _compare_grads(tl.critic_network_params, grads["critic_network"], "critic")


# ------------------------------------------------------------------------------------------------ grid
KINDS = ["categorical", "normal", "independent", "tanh"]
CASES = [
    # (cls, kind, critic, precomputed advantage, normalize, clip form, clip_value, reduction, mask)
    (cls, kind, critic, pre, norm, clip, cv, red, mask)
    for i, (cls, kind, critic, pre) in enumerate(itertools.product(["ppo", "clip", "klpen"], KINDS, [True, False],
                                                                   [False, True]))
    for norm, clip, cv, red, mask in [(
        bool(i % 2), (0.2, (0.1, 0.3))[(i // 2) % 2] if cls == "clip" else None,
        (None, 0.1)[(i // 3) % 2] if critic else None,
        ("mean", "sum", "none")[i % 3], bool((i // 4) % 2))]
    if critic or pre  # without a critic the advantage must be given
]


@pytest.mark.parametrize("cls,kind,critic,pre,norm,clip,cv,red,mask", CASES)
def test_ppo_family_vs_torchrl(cls, kind, critic, pre, norm, clip, cv, red, mask):
    kw = dict(normalize_advantage=norm, reduction=red, clip_value=cv, entropy_coeff=0.05,
              critic_coeff=0.7 if critic else None)
    if clip is not None:
        kw["clip_epsilon"] = clip
    tl, al, tactor, prefix = _pair(cls, kind, critic, kw, {"torchrl_compat": True})
    td = _rollout(tactor, mask=mask)
    if pre:
        gae = TGAE(gamma=0.9, lmbda=0.8, value_network=TVO(TMLP(in_features=NOBS, out_features=1, num_cells=[4]),
                                                            in_keys=["observation"]))
        with torch.no_grad():
            gae(td)
        td = td.detach()
    perturb(tl.actor_network_params, scale=0.5)  # ratios away from 1, some clipped
    _copy_weights(tl, al, prefix)
    noise = (1, B, T, NA) if kind == "tanh" else None  # TanhNormal: Monte-Carlo entropy, TorchRL's draws replayed
    tout, aout, grads, _ = _run(tl, al, td, noise=noise)
    _check_outputs(tout, aout)
    _grads_all(tl, al, grads, prefix)
    if cls == "klpen":
        np.testing.assert_allclose(float(al.beta), float(tl.beta), rtol=0, atol=0)


@pytest.mark.parametrize("cls", ["ppo", "clip", "klpen"])
@pytest.mark.parametrize("est", ["td0", "td1", "tdlambda", "gae"])
def test_estimators_inside_forward_vs_torchrl(cls, est):
    hp = {"lmbda": 0.7} if est in ("tdlambda", "gae") else {}
    tl, al, tactor, prefix = _pair(cls, "independent", True, {}, {"torchrl_compat": True})
    tl.make_value_estimator(est, gamma=0.9, **hp)
    al.make_value_estimator(est, gamma=0.9, **hp)
    perturb(tl.actor_network_params, scale=0.3)
    _copy_weights(tl, al, prefix)
    tout, aout, grads, _ = _run(tl, al, _rollout(tactor))
    _check_outputs(tout, aout)
    _grads_all(tl, al, grads, prefix)


def test_samples_mc_entropy_vs_torchrl():
    tl, al, tactor, prefix = _pair("clip", "tanh", True, {"samples_mc_entropy": 3})
    perturb(tl.actor_network_params, scale=0.2)
    _copy_weights(tl, al, prefix)
    tout, aout, grads, _ = _run(tl, al, _rollout(tactor), noise=(3, B, T, NA))
    _check_outputs(tout, aout)
    _grads_all(tl, al, grads, prefix)


def test_delay_actor_and_max_importance_ratio_vs_torchrl():
    kw = {"delay_actor": True, "max_importance_ratio": 1.3}
    tl, al, tactor, prefix = _pair("clip", "independent", True, kw)
    td = _rollout(tactor)
    perturb(tl.actor_network_params, scale=0.3)
    perturb(tl.target_actor_network_params, scale=0.2)  # the proximal policy differs from both mu and pi_theta
    _copy_weights(tl, al, prefix)
    al.target_params = {"actor_network": {"0": _tree(tl.target_actor_network_params, prefix), "1": {}}}
    tout, aout, grads, _ = _run(tl, al, td)
    _check_outputs(tout, aout)
    _grads_all(tl, al, grads, prefix)


# ------------------------------------------------------------------------------------------------ divergences
def _klpen_run(compat, **kw):
    tl, al, tactor, prefix = _pair("klpen", "categorical", False, {"beta": 1.0, "dtarg": 1e-4, **kw},
                                   {"torchrl_compat": compat})
    torch.manual_seed(3)
    td = _rollout(tactor)
    td["advantage"] = torch.randn(B, T, 1)
    torch.manual_seed(4)
    perturb(tl.actor_network_params, scale=0.5)  # mean KL >> 1.5 dtarg: beta doubles
    _copy_weights(tl, al, prefix)
    return (tl, al, prefix) + _run(tl, al, td)


def test_klpen_beta_gradient_divergence():
    """TorchRL's gradient uses the updated beta (2.0) while its value uses the old one (1.0); arrayrl's gradient is
    the gradient of the value it returns. torchrl_compat=True reproduces TorchRL's gradient."""
    tl, al, prefix, tout, aout, grads, _ = _klpen_run(True)
    _check_outputs(tout, aout)
    _grads_all(tl, al, grads, prefix)
    assert float(al.beta) == float(tl.beta) == 2.0
    tl, al, prefix, tout, aout, grads, _ = _klpen_run(False)
    _check_outputs(tout, aout)  # same values
    assert float(al.beta) == 2.0
    with pytest.raises(AssertionError):
        _grads_all(tl, al, grads, prefix)  # not TorchRL's gradient
    # ... but TorchRL's gradient at a beta held at 1.0 (increment = decrement = 1: TorchRL's beta cannot move)
    tl1, _, prefix, tout1, _, _, _ = _klpen_run(False, increment=1.0, decrement=1.0)
    np.testing.assert_allclose(tout1["loss_objective"].detach().numpy(), aout["loss_objective"], rtol=RTOL)
    _grads_all(tl1, al, grads, prefix)


def test_clip_value_divergence_estimator_inside_forward():
    """TorchRL clips against the value its estimator just wrote (a no-op); arrayrl against the stored V_old."""
    torch.manual_seed(5)
    stored = torch.randn(B, T, 1)
    results = {}
    for compat in (True, False):
        tl, al, tactor, prefix = _pair("clip", "categorical", True, {"clip_value": 0.05}, {"torchrl_compat": compat})
        torch.manual_seed(6)
        td = _rollout(tactor, stored_value=stored)
        td[("next", "state_value")] = stored  # (TorchRL's estimator cannot stack a root-only stored value)
        _copy_weights(tl, al, prefix)
        tout, aout, grads, batch = _run(tl, al, td)
        results[compat] = (tout, aout, grads, tl, prefix, batch)
    tout, aout, grads, tl, prefix, _ = results[True]
    _check_outputs(tout, aout)
    _grads_all(tl, al, grads, prefix)
    assert float(aout["value_clip_fraction"]) == 0.0
    tout, aout, grads, tl, prefix, batch = results[False]
    assert float(aout["value_clip_fraction"]) > 0.5
    assert float(aout["loss_critic"]) > float(tout["loss_critic"])
    # arrayrl's number is TorchRL's when TorchRL is handed the same V_old with a precomputed advantage
    pre = TensorDict(batch, [B, T]).exclude("advantage", "value_target")
    critic = tl.critic_network_params.detach()
    with torch.no_grad():
        tl.value_estimator(pre, params=critic, target_params=critic)
    pre["state_value"] = stored
    out2 = tl(pre)
    np.testing.assert_allclose(out2["loss_critic"].detach().numpy(), aout["loss_critic"], rtol=RTOL)
    # without a stored V_old arrayrl refuses to clip
    tl, al, tactor, prefix = _pair("clip", "categorical", True, {"clip_value": 0.05})
    with pytest.raises(KeyError, match="state_value"):
        al(from_tensordict(_rollout(tactor), np, copy=True))


def test_out_keys_divergence():
    tl, al, _, _ = _pair("ppo", "categorical", False, {})
    _, alc, _, _ = _pair("ppo", "categorical", False, {}, {"torchrl_compat": True})
    assert alc.out_keys == tl.out_keys == ["loss_objective", "entropy", "loss_entropy", "loss_critic"]
    assert al.out_keys == ["loss_objective", "kl_approx", "entropy", "loss_entropy"]
    tl, al, tactor, prefix = _pair("clip", "categorical", True, {})
    assert al.out_keys == ["loss_objective", "clip_fraction", "entropy", "loss_entropy", "loss_critic",
                           "explained_variance", "ESS", "kl_approx", "max_ratio", "mean_ratio"]
    _copy_weights(tl, al, prefix)
    td = _rollout(tactor)
    assert sorted(al(from_tensordict(td, np, copy=True))) == sorted(al.out_keys) == sorted(tl(td).keys())
    assert "explained_variance" not in tl.out_keys


def test_default_keys_match_torchrl():
    tl, al, _, _ = _pair("clip", "tanh", True, {})
    for f in ("advantage", "value_target", "value", "sample_log_prob", "action", "reward", "done", "terminated"):
        assert getattr(al.tensor_keys, f) == getattr(tl.tensor_keys, f), f
    assert al.tensor_keys.sample_log_prob == "action_log_prob"
