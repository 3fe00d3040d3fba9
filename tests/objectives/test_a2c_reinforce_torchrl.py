"""Cross-validation of A2CLoss / ReinforceLoss against TorchRL 0.14.1: float64, copied weights, identical ``[B, T]``
batches collected by TorchRL's actor; every output key and every parameter gradient, relative error <= 1e-10 (1e-12
absolute floor). The helpers (actors, rollouts, weight copies, comparisons) are the PPO cross-validation's."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from torchrl.modules import MLP as TMLP  # noqa: E402
from torchrl.modules import ValueOperator as TVO  # noqa: E402
from torchrl.modules.value_norm import PercentileValueNorm as TPercentile  # noqa: E402
from torchrl.modules.value_norm import PopArtValueNorm as TPopArt  # noqa: E402
import torchrl.objectives as TO  # noqa: E402
from torchrl.objectives import SoftUpdate as TSoftUpdate  # noqa: E402
from torchrl.objectives.value import GAE as TGAE  # noqa: E402

from test_ppo_torchrl import CLASSES as PPO_CLASSES  # noqa: E402  (tests/objectives is on sys.path)
from test_ppo_torchrl import (  # noqa: E402
    ATOL, B, NOBS, RTOL, T, _actors, _check_outputs, _copy_weights, _grads_all, _rollout, _run, _tree)

from arrayrl.interop import from_tensordict  # noqa: E402
from arrayrl.nn import MLP, ValueOperator  # noqa: E402
from arrayrl.objectives import SoftUpdate  # noqa: E402
from arrayrl.objectives.a2c import A2CLoss  # noqa: E402
from arrayrl.objectives.reinforce import ReinforceLoss  # noqa: E402
from arrayrl.objectives.value_norm import PercentileValueNorm, PopArtValueNorm  # noqa: E402
from tests.objectives.torchrl_helpers import float64_default  # noqa: E402,F401  (autouse fixture)
from tests.objectives.torchrl_helpers import perturb  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]
NA = 2
CLASSES = {"a2c": (TO.A2CLoss, A2CLoss), "reinforce": (TO.ReinforceLoss, ReinforceLoss)}


def _pair(cls, kind, kw, akw=None):
    tactor, aactor, prefix = _actors(kind)
    tcritic = TVO(TMLP(in_features=NOBS, out_features=1, num_cells=[8]), in_keys=["observation"])
    acritic = ValueOperator(MLP(in_features=NOBS, out_features=1, num_cells=[8]), in_keys=["observation"])
    tcls, acls = {**PPO_CLASSES, **CLASSES}[cls]
    kw, akw = dict(kw), dict(akw or {})
    if "advantage_norm" in kw:  # (TorchRL's normaliser, arrayrl's)
        kw["advantage_norm"], akw["advantage_norm"] = kw["advantage_norm"]
    return tcls(tactor, tcritic, **kw), acls(aactor, acritic, **{**kw, **akw}), tactor, prefix


def _precompute(td):
    gae = TGAE(gamma=0.9, lmbda=0.8, value_network=TVO(TMLP(in_features=NOBS, out_features=1, num_cells=[4]),
                                                        in_keys=["observation"]))
    with torch.no_grad():
        gae(td)
    return td.detach()


# ------------------------------------------------------------------------------------------------ grid
KINDS = ["categorical", "independent", "tanh"]
CASES = [
    # (cls, kind, precomputed advantage, critic_coeff, clip_value, reduction, mask)
    (cls, kind, pre, cc, cv, ("mean", "sum", "none")[i % 3], bool((i // 2) % 2))
    for i, (cls, kind, pre, cc, cv) in enumerate(itertools.product(
        ["a2c", "reinforce"], KINDS + ["normal"], [False, True], [0.7, None], [None, 0.1]))
    if not (cls == "reinforce" and cc is None)  # Reinforce has no critic coefficient
    and not (cls == "a2c" and kind == "normal")  # TorchRL's A2C cannot broadcast a per-dimension Normal
    and not (cls == "a2c" and cv is not None and not pre and i % 2)  # (keep the grid small)
]


@pytest.mark.parametrize("cls,kind,pre,cc,cv,red,mask", CASES)
def test_a2c_reinforce_vs_torchrl(cls, kind, pre, cc, cv, red, mask):
    kw = dict(reduction=red, clip_value=cv, loss_critic_type=("smooth_l1", "l2", "l1")[len(kind) % 3])
    if cls == "a2c":
        kw.update(critic_coeff=cc, entropy_coeff=0.05)
    tl, al, tactor, prefix = _pair(cls, kind, kw, {"torchrl_compat": True})
    td = _rollout(tactor, mask=mask)
    if pre:
        td = _precompute(td)
        if cv is not None:
            td["state_value"] = torch.randn(B, T, 1)  # V_old for the clip
    perturb(tl.actor_network_params, scale=0.5)
    _copy_weights(tl, al, prefix)
    noise = (1, B, T, NA) if kind == "tanh" and cls == "a2c" else None  # Monte-Carlo entropy: TorchRL's draws
    tout, aout, grads, _ = _run(tl, al, td, noise=noise)
    _check_outputs(tout, aout)
    _grads_all(tl, al, grads, prefix)


@pytest.mark.parametrize("cls", ["a2c", "reinforce"])
@pytest.mark.parametrize("est", ["td0", "td1", "tdlambda", "gae"])
def test_estimators_inside_forward_vs_torchrl(cls, est):
    hp = {"lmbda": 0.7} if est in ("tdlambda", "gae") else {}
    tl, al, tactor, prefix = _pair(cls, "independent", {})
    tl.make_value_estimator(est, gamma=0.9, **hp)
    al.make_value_estimator(est, gamma=0.9, **hp)
    perturb(tl.actor_network_params, scale=0.3)
    _copy_weights(tl, al, prefix)
    tout, aout, grads, _ = _run(tl, al, _rollout(tactor))
    _check_outputs(tout, aout)
    _grads_all(tl, al, grads, prefix)


def test_a2c_samples_mc_entropy_and_critic_coeff_zero_vs_torchrl():
    tl, al, tactor, prefix = _pair("a2c", "tanh", {"samples_mc_entropy": 3, "critic_coeff": 0.0})
    _copy_weights(tl, al, prefix)
    tout, aout, grads, _ = _run(tl, al, _rollout(tactor), noise=(3, B, T, NA))
    _check_outputs(tout, aout)
    assert float(aout["loss_critic"]) == 0.0  # returned, times 0
    _grads_all(tl, al, grads, prefix)


def _advantage_norm_vs_torchrl(cls, norm, kw=None, akw=None):
    """``cls`` (a key of CLASSES or of the PPO cross-validation's) with ``advantage_norm`` against TorchRL over four
    steps: statistics updated from the (masked) value target twice, then in eval mode (no update), then with a
    precomputed advantage (no update); outputs, gradients and every normaliser buffer compared at each step."""
    pair = {"popart": (TPopArt(shape=1, beta=0.9), PopArtValueNorm(shape=1, beta=0.9)),
            "percentile": (TPercentile(shape=1, rate=0.5, min_scale=0.1),
                           PercentileValueNorm(shape=1, rate=0.5, min_scale=0.1))}[norm]
    tl, al, tactor, prefix = _pair(cls, "categorical", {"advantage_norm": pair, **(kw or {})}, akw)
    tnorm = pair[0]
    for step in range(4):
        torch.manual_seed(10 + step)
        td = _rollout(tactor, mask=step == 1)
        if step == 2:
            tl.eval()
            al.eval()
        if step == 3:
            td = _precompute(td)
            tl.train()
            al.train()
        perturb(tl.actor_network_params, scale=0.2)
        _copy_weights(tl, al, prefix)
        tl.zero_grad()
        tout, aout, grads, _ = _run(tl, al, td)
        _check_outputs(tout, aout)
        _grads_all(tl, al, grads, prefix)
        bufs = {name: buf for name, buf in tnorm.named_buffers() if not name.startswith("_")}
        assert sorted(bufs) == sorted(al.advantage_norm_state)
        for name, buf in bufs.items():
            np.testing.assert_allclose(np.asarray(al.advantage_norm_state[name]), buf.numpy(), rtol=RTOL,
                                       atol=ATOL, err_msg=f"step {step} {name}")


@pytest.mark.parametrize("norm", ["popart", "percentile"])
def test_a2c_advantage_norm_vs_torchrl(norm):
    _advantage_norm_vs_torchrl("a2c", norm)


def test_reinforce_delay_value_vs_torchrl():
    tl, al, tactor, prefix = _pair("reinforce", "categorical", {"delay_value": True})
    perturb(tl.critic_network_params, scale=0.3)  # the online critic moves away from the target
    _copy_weights(tl, al, prefix)
    al.target_params = {"critic_network": _tree(tl.target_critic_network_params)}
    tout, aout, grads, _ = _run(tl, al, _rollout(tactor))
    _check_outputs(tout, aout)
    _grads_all(tl, al, grads, prefix)
    # one soft update moves both targets the same way
    TSoftUpdate(tl, tau=0.3).step()
    SoftUpdate(al, tau=0.3).step()
    np.testing.assert_allclose(np.asarray(al.target_params["critic_network"]["0"]["weight"]),
                               tl.target_critic_network_params["module", "0", "weight"].numpy(), rtol=RTOL)


# ------------------------------------------------------------------------------------------------ divergences
@pytest.mark.parametrize("cls", ["a2c", "reinforce"])
def test_clip_value_divergence_estimator_inside_forward(cls):
    """TorchRL clips against the value its estimator just wrote (a no-op); arrayrl against the stored V_old."""
    torch.manual_seed(5)
    stored = torch.randn(B, T, 1)
    crit = "loss_critic" if cls == "a2c" else "loss_value"
    res = {}
    for compat in (True, False):
        tl, al, tactor, prefix = _pair(cls, "categorical", {"clip_value": 0.05}, {"torchrl_compat": compat})
        torch.manual_seed(6)
        td = _rollout(tactor, stored_value=stored)
        td[("next", "state_value")] = stored
        _copy_weights(tl, al, prefix)
        res[compat] = (tl, prefix) + _run(tl, al, td)
    tl, prefix, tout, aout, grads, _ = res[True]
    _check_outputs(tout, aout)
    _grads_all(tl, al, grads, prefix)
    assert float(aout["value_clip_fraction"]) == 0.0
    tl, prefix, tout, aout, grads, batch = res[False]
    assert float(aout["value_clip_fraction"]) > 0.5
    assert float(aout[crit]) > float(tout[crit])
    # arrayrl's number is TorchRL's when TorchRL is handed the same V_old with a precomputed advantage
    pre = TensorDict(batch, [B, T]).exclude("advantage", "value_target")
    critic = tl.critic_network_params.detach()
    with torch.no_grad():
        tl.value_estimator(pre, params=critic, target_params=critic)
    pre["state_value"] = stored
    np.testing.assert_allclose(tl(pre)[crit].detach().numpy(), aout[crit], rtol=RTOL)


def test_out_keys_divergence():
    tl, al, _, _ = _pair("a2c", "categorical", {"clip_value": 0.1})
    _, alc, _, _ = _pair("a2c", "categorical", {"clip_value": 0.1}, {"torchrl_compat": True})
    assert alc.out_keys == tl.out_keys == ["loss_objective", "loss_critic", "entropy", "loss_entropy"]
    assert al.out_keys == ["loss_objective", "loss_critic", "value_clip_fraction", "entropy", "loss_entropy"]
    tl, al, _, _ = _pair("reinforce", "categorical", {"clip_value": 0.1})
    _, alc, _, _ = _pair("reinforce", "categorical", {"clip_value": 0.1}, {"torchrl_compat": True})
    assert alc.out_keys == tl.out_keys == ["loss_actor", "loss_value"]
    assert al.out_keys == ["loss_actor", "loss_value", "value_clip_fraction"]
    # without clipping both list what is returned; critic_coeff=None / entropy_coeff=0 drop their terms
    tl, al, _, _ = _pair("a2c", "categorical", {"critic_coeff": None, "entropy_coeff": 0.0})
    assert al.out_keys == tl.out_keys == ["loss_objective"]


def test_reinforce_mutation_divergence():
    """TorchRL's ReinforceLoss writes advantage, value_target, state_value and the distribution parameters into the
    caller's tensordict; arrayrl leaves the caller's batch untouched."""
    tl, al, tactor, prefix = _pair("reinforce", "independent", {})
    _copy_weights(tl, al, prefix)
    td = _rollout(tactor).exclude("loc", "scale")
    batch = from_tensordict(td, np, copy=True)
    before = {k: v.copy() for k, v in from_tensordict(td, np, copy=True).items() if not isinstance(v, dict)}
    keys_before = set(td.keys(True, True))
    tl(td)
    assert {"advantage", "value_target", "state_value", "loc", "scale"} <= set(td.keys(True, True)) - keys_before
    al(batch)
    assert set(batch) == set(before) | {"next"}
    assert sorted(batch["next"]) == sorted(from_tensordict(_rollout(tactor), np)["next"])
    for k, v in before.items():
        np.testing.assert_array_equal(batch[k], v)


def test_default_keys_match_torchrl():
    for cls in ("a2c", "reinforce"):
        tl, al, _, _ = _pair(cls, "tanh", {})
        for f in ("advantage", "value_target", "value", "sample_log_prob", "action", "reward", "done", "terminated"):
            assert getattr(al.tensor_keys, f) == getattr(tl.tensor_keys, f), (cls, f)
