"""DTLoss, OnlineDTLoss and RNDLoss against TorchRL 0.14.1: float64, copied weights, identical [B, T, F] batches and
identical draws (ODT's entropy rsamples recorded from torch and replayed; RND's ``torch.rand`` mask replayed from the
same seed). Every output key and every parameter gradient (actor, log_alpha, predictor) are compared (relative
1e-10), and the clamped log_alpha left after the call. The attention-mask divergence is shown both ways: with
``torchrl_compat`` arrayrl ignores ``attention_mask`` as TorchRL does; in paper mode it equals TorchRL given the same
mask as a loss mask (``("collector", "mask")``)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import NormalParamExtractor as TNPE  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.data import Bounded  # noqa: E402
from torchrl.envs.transforms.rnd import RunningMeanStd as TRMS  # noqa: E402
from torchrl.modules import MLP as TMLP  # noqa: E402
from torchrl.modules import IndependentNormal as TIN  # noqa: E402
from torchrl.modules import ProbabilisticActor as TPA  # noqa: E402
from torchrl.modules import TanhNormal as TTN  # noqa: E402
from torchrl.objectives import DTLoss as TDT  # noqa: E402
from torchrl.objectives import OnlineDTLoss as TODT  # noqa: E402
from torchrl.objectives.rnd import RNDLoss as TRND  # noqa: E402

from arrayrl.distributions import IndependentNormal, TanhNormal  # noqa: E402
from arrayrl.interop import from_tensordict  # noqa: E402
from arrayrl.nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor  # noqa: E402
from arrayrl.objectives.decision_transformer import DTLoss, OnlineDTLoss  # noqa: E402
from arrayrl.objectives.rnd import RNDLoss, RunningMeanStd  # noqa: E402
from arrayrl.nn.params import unflatten_params  # noqa: E402
from arrayrl.random import Generator  # noqa: E402
from tests.objectives.torchrl_helpers import Comparer  # noqa: E402
from tests.objectives.torchrl_helpers import Recorder as _Recorder  # noqa: E402
from tests.objectives.torchrl_helpers import float64_default  # noqa: E402,F401  (autouse fixture)
from tests.objectives.torchrl_helpers import torch_flat as _flat  # noqa: E402
from tests.objectives.torchrl_helpers import torch_tree as _tree  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]

RTOL, ATOL = 1e-10, 1e-12
B, T, F, A, D = 3, 4, 3, 2, 5
CMP = Comparer(RTOL, ATOL)
MAX_ERR, _close, _outputs = CMP.max_err, CMP.close, CMP.outputs  # MAX_ERR: worst relative error seen
_compare_grads = CMP.flat_grads  # on {name: TorchRL parameter}


def _sequence_td(masks=()):
    td = TensorDict({"observation": torch.randn(B, T, F), "action": torch.rand(B, T, A) * 1.8 - 0.9}, [B, T])
    att = torch.rand(B, T) < 0.6
    att[:, 0] = True
    if "attention" in masks:
        td["attention_mask"] = att
    if "collector" in masks:
        td["collector", "mask"] = att if "same" in masks else torch.rand(B, T) < 0.7
    return td


# ------------------------------------------------------------------------------------------------ DT
def _dt_pair(fn, reduction, compat=True):
    tnet = TMLP(in_features=F, out_features=A, num_cells=[8])
    tactor = TensorDictModule(tnet, ["observation"], ["action"])
    tl = TDT(tactor, loss_function=fn, reduction=reduction)
    mlp = MLP(in_features=F, out_features=A, num_cells=[8])
    al = DTLoss(KeyedModule(mlp, in_keys=["observation"], out_keys=["action"]), loss_function=fn,
                reduction=reduction, torchrl_compat=compat)
    al.params = {"actor_network": _tree(tl.actor_network_params)}
    return tl, al


@pytest.mark.parametrize("fn,reduction,masks", [
    ("l2", "mean", ()), ("l1", "sum", ()), ("smooth_l1", "none", ()), ("l2", "mean", ("attention",)),
    ("l2", "mean", ("collector",)), ("smooth_l1", "none", ("collector", "attention")),
    ("l1", "mean", ("collector", "attention"))])
def test_dt_vs_torchrl(fn, reduction, masks):
    """torchrl_compat: TorchRL ignores attention_mask; both honour the collector mask."""
    tl, al = _dt_pair(fn, reduction)
    td = _sequence_td(masks)
    batch = from_tensordict(td, np, copy=True)
    out = tl(td)
    out["loss"].sum().backward()
    aout, grads = al.value_and_grad(batch)
    _outputs(out, aout)
    _compare_grads(_flat(tl.actor_network_params), grads["actor_network"], "dt_actor")
    assert al.out_keys == tl.out_keys


def test_dt_attention_mask_paper_equals_torchrl_with_loss_mask():
    """Paper mode reading attention_mask == TorchRL given the same mask as ("collector", "mask")."""
    tl, al = _dt_pair("l2", "mean", compat=False)
    td = _sequence_td(("attention", "collector", "same"))
    batch = from_tensordict(td, np, copy=True)
    del batch["collector"]
    out = tl(td)
    out["loss"].backward()
    aout, grads = al.value_and_grad(batch)
    _outputs(out, aout)
    _compare_grads(_flat(tl.actor_network_params), grads["actor_network"], "dt_actor")
    # ...and differs from TorchRL on the same batch without the loss mask (TorchRL scores the padding)
    td2 = td.clone()
    del td2["collector"]
    assert abs(float(tl(td2)["loss"]) - float(aout["loss"])) > 1e-6


# ------------------------------------------------------------------------------------------------ ODT
ALPHAS = {"learned": (1.0, None, None, False), "fixed": (0.3, None, None, True), "clamp_max": (5.0, None, 2.0, False),
          "clamp_min": (0.01, 0.1, None, False), "clamp_both": (0.05, 0.2, 3.0, False)}


def _odt_pair(dist, alpha, samples, reduction, te="auto", compat=True):
    tdist, adist = (TTN, TanhNormal) if dist == "tanh" else (TIN, IndependentNormal)
    spec = Bounded(-torch.ones(A), torch.ones(A), (A,))
    tactor = TPA(TensorDictModule(torch.nn.Sequential(TMLP(in_features=F, out_features=2 * A, num_cells=[8]), TNPE()),
                                  ["observation"], ["loc", "scale"]), in_keys=["loc", "scale"],
                 distribution_class=tdist, spec=spec)
    a0, amin, amax, fixed = ALPHAS[alpha]
    kw = dict(alpha_init=a0, min_alpha=amin, max_alpha=amax, fixed_alpha=fixed, target_entropy=te,
              samples_mc_entropy=samples, reduction=reduction,
              scalar_output_mode="non_tensor" if reduction == "none" else None)
    tl = TODT(tactor, **kw)
    amlp, ape = MLP(in_features=F, out_features=2 * A, num_cells=[8]), NormalParamExtractor()
    amod = KeyedModule(lambda p, o: ape.apply({}, amlp.apply(p, o)), params=amlp.params, in_keys=["observation"],
                       out_keys=["loc", "scale"])
    al = OnlineDTLoss(ProbabilisticActor(amod, in_keys=["loc", "scale"], distribution_class=adist),
                      action_spec=spec, torchrl_compat=compat, **kw)
    params = {"actor_network": {"0": _tree(tl.actor_network_params, "0.0."), "1": {}}}
    if not fixed:
        params["log_alpha"] = tl.log_alpha.detach().numpy().copy()
    al.params = params
    return tl, al


def _run_odt(tl, al, td, batch, keys=None):
    with _Recorder() as rec:
        out = tl(td)
    sum(out[k].sum() for k in out.keys() if k.startswith("loss")).backward()
    al.generator = Generator.from_noise(*rec.draws)
    aout, grads = al.value_and_grad(batch)
    assert al.generator.remaining == 0
    _outputs(out, aout, keys)
    _compare_grads(_flat(tl.actor_network_params, "0.0."), grads["actor_network"]["0"], "odt_actor")
    if not al.fixed_alpha:
        _close(grads["log_alpha"], tl.log_alpha.grad.numpy(), "grad_log_alpha")
        _close(al.params["log_alpha"], tl.log_alpha.detach().numpy(), "log_alpha_after_call")
    assert al.target_entropy == float(tl.target_entropy)
    return aout


ODT_CASES = [  # dist, alpha, samples, reduction, masks, target_entropy
    ("tanh", "learned", 1, "mean", (), "auto"),
    ("tanh", "fixed", 3, "sum", ("attention",), "auto"),
    ("normal", "clamp_max", 2, "mean", ("collector",), -0.5),
    ("tanh", "clamp_min", 2, "none", ("collector", "attention"), "auto"),
    ("normal", "clamp_both", 1, "mean", ("collector", "attention"), "auto"),
    ("tanh", "learned", 4, "sum", ("collector",), 1.5),
]


@pytest.mark.parametrize("dist,alpha,samples,reduction,masks,te", ODT_CASES)
def test_online_dt_vs_torchrl(dist, alpha, samples, reduction, masks, te):
    """torchrl_compat: every output, actor and log_alpha gradient, the clamp; attention_mask ignored as TorchRL;
    collector masks in the loss_* means (not in entropy, not under reduction="none")."""
    tl, al = _odt_pair(dist, alpha, samples, reduction, te)
    td = _sequence_td(masks)
    _run_odt(tl, al, td, from_tensordict(td, np, copy=True))
    assert al.out_keys == [k for k in tl.out_keys if k in al.out_keys]


def test_online_dt_attention_mask_paper_equals_torchrl_loss_terms_with_loss_mask():
    """Paper mode with attention_mask == TorchRL with the same mask as a loss mask, for every loss_* term and the
    gradients; TorchRL's entropy output stays the plain mean over the padding (paper: the masked mean)."""
    tl, al = _odt_pair("tanh", "learned", 2, "mean", compat=False)
    td = _sequence_td(("attention", "collector", "same"))
    batch = from_tensordict(td, np, copy=True)
    del batch["collector"]
    aout = _run_odt(tl, al, td, batch, keys=["loss_log_likelihood", "loss_entropy", "loss_alpha", "alpha"])
    assert abs(float(aout["entropy"]) - float(tl(td)["entropy"])) > 1e-9 or bool(td["attention_mask"].all())


# ------------------------------------------------------------------------------------------------ RND
class _Double(torch.nn.Module):
    """TorchRL casts the observation to float32 (``.float()``); cast back so the float64 nets accept it (the
    observations are float32-representable, so nothing is lost)."""

    def forward(self, x):
        return x.double()


def _f32(x):
    return x.float().double()


@pytest.mark.parametrize("reduction,fraction,rms,collector", [
    ("mean", 0.25, False, False), ("mean", 0.6, True, False), ("sum", 0.5, True, True), ("none", 0.4, False, True),
    ("mean", 1.0, True, False), ("none", 1.0, False, False), ("mean", 0.5, True, True)])
def test_rnd_vs_torchrl(reduction, fraction, rms, collector):
    tp = torch.nn.Sequential(_Double(), TMLP(in_features=F, out_features=D, num_cells=[8]))
    tt = torch.nn.Sequential(_Double(), TMLP(in_features=F, out_features=D, num_cells=[8]))
    trms, state = None, None
    if rms:
        # TorchRL's update runs in float32 (x.float()): compare the update at float32 precision, then load arrayrl's
        # float64 statistics into TorchRL's buffers for the float64 loss comparison
        trms = TRMS(shape=(F,))
        hist = _f32(torch.randn(9, F) * 2 + 1)
        trms.update(hist)
        arms = RunningMeanStd(shape=(F,))
        state = arms.update(hist.numpy(), arms.init(xp=np))
        for k in ("mean", "var", "count"):
            np.testing.assert_allclose(state[k], getattr(trms, k).double().numpy(), rtol=2e-6, err_msg=k)
        trms = trms.double()
        with torch.no_grad():
            for k in ("mean", "var", "count"):
                getattr(trms, k).copy_(torch.as_tensor(state[k]))
    tl = TRND(tp, tt, obs_rms=trms, obs_clip=1.5, reduction=reduction, update_fraction=fraction)
    pred, targ = MLP(in_features=F, out_features=D, num_cells=[8]), MLP(in_features=F, out_features=D, num_cells=[8])
    sd = lambda m: unflatten_params({k[2:]: v.detach().numpy().copy() for k, v in m.state_dict().items()})  # noqa
    pred.params, targ.params = sd(tp), sd(tt)
    td = TensorDict({("next", "observation"): _f32(torch.randn(2, 6, F) * 3)}, [2, 6])
    if collector:
        td["collector", "mask"] = torch.rand(2, 6) < 0.7
    batch = from_tensordict(td, np, copy=True)
    torch.manual_seed(123)
    out = tl(td)
    out["loss_predictor"].sum().backward()
    torch.manual_seed(123)
    draws = [torch.rand(2, 6).numpy()] if fraction < 1 else []
    al = RNDLoss(pred, targ, obs_rms=state, obs_clip=1.5, reduction=reduction, update_fraction=fraction,
                 generator=Generator.from_noise(*draws))
    aout, grads = al.value_and_grad(batch)
    assert al.generator.remaining == 0
    _outputs(out, aout)
    _compare_grads({k[2:]: p for k, p in tp.named_parameters()}, grads["predictor_network"], "rnd_predictor")
    assert all(p.grad is None for p in tt.parameters())
    assert al.out_keys == tl.out_keys and al.in_keys == [tl.tensor_keys.observation]


def test_zz_report_max_errors(capsys):
    with capsys.disabled():
        print("\nDT/ODT/RND vs TorchRL max relative errors:", {k: f"{v:.1e}" for k, v in sorted(MAX_ERR.items())})
    assert all(v <= RTOL for v in MAX_ERR.values())
