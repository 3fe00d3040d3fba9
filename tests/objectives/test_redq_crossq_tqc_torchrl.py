"""REDQLoss, CrossQLoss (with BatchRenorm critics, train and eval statistics) and TQCLoss against TorchRL 0.14.1:
float64, copied weights (online, target, running statistics), identical batches and identical draws (torch's
standard-normal draws and REDQ's randperm are recorded and replayed through a NoiseGenerator).

Every output key, the td_error written into the batch, every parameter gradient (actor, critics, log_alpha) and,
for CrossQ, the running statistics after the call are compared (relative 1e-10)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import torchrl.objectives as TO  # noqa: E402
from torchrl.data import Bounded  # noqa: E402
from torchrl.modules import MLP as TMLP  # noqa: E402
from torchrl.modules import ValueOperator as TVO  # noqa: E402
from torchrl.modules.models.batchrenorm import BatchRenorm1d as TBR  # noqa: E402

from arrayrl.interop import from_tensordict  # noqa: E402
from arrayrl.nn import MLP, ValueOperator  # noqa: E402
from arrayrl.nn.norm import BatchRenorm1d, NormMLP, StatefulValueOperator  # noqa: E402
from arrayrl.objectives.crossq import CrossQLoss  # noqa: E402
from arrayrl.objectives.redq import REDQLoss  # noqa: E402
from arrayrl.objectives.tqc import TQCLoss  # noqa: E402
from arrayrl.random import Generator  # noqa: E402
from tests.objectives.torchrl_helpers import Comparer, Recorder, continuous_actor, transition  # noqa: E402
from tests.objectives.torchrl_helpers import float64_default  # noqa: E402,F401  (autouse fixture)
from tests.objectives.torchrl_helpers import perturb as _perturb  # noqa: E402
from tests.objectives.torchrl_helpers import torch_flat as _flat  # noqa: E402
from tests.objectives.torchrl_helpers import torch_tree as _tree  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]

B, NOBS, NA = 6, 3, 2  # the SAC cross-validation's
CMP = Comparer(1e-10, 1e-12)
MAX_ERR, _close, _compare_grads, _outputs = CMP.max_err, CMP.close, CMP.grads, CMP.outputs  # MAX_ERR: worst seen
_transition = partial(transition, B, (NOBS,))
_continuous_actor = partial(continuous_actor, NOBS, NA)
#: torch's standard-normal draws (rsample, and Normal.sample routed through rsample under no_grad: the same value
#: loc + scale * eps) and randperm
_Recorder = partial(Recorder, randperm=True, sample=True)


def _params(tl, fixed):
    params = {"actor_network": {"0": _tree(tl.actor_network_params, "0.0."), "1": {}},
              "qvalue_network": _tree(tl.qvalue_network_params)}
    if not fixed:
        params["log_alpha"] = tl.log_alpha.detach().numpy().copy()
    return params


def _check_alpha(al, tl):
    if not al.fixed_alpha:
        _close(al._last_grads["log_alpha"], tl.log_alpha.grad.numpy(), "grad_log_alpha")
        _close(al.params["log_alpha"], tl.log_alpha.detach().numpy(), "log_alpha_after_call")


def _run(tl, al, td, scatter=None):
    batch = from_tensordict(td, np, copy=True)
    with _Recorder() as rec:
        out = tl(td)
    sum(out[k].sum() for k in out.keys() if k.startswith("loss")).backward()
    draws = scatter(rec.draws) if scatter else rec.draws
    al.generator = Generator.from_noise(*draws)
    aout, grads = al.value_and_grad(batch)
    al._last_grads = grads
    assert al.generator.remaining == 0
    _outputs(out, aout)
    _close(batch["td_error"], td["td_error"].detach().numpy(), "td_error")
    _compare_grads(tl.actor_network_params, grads["actor_network"]["0"], "actor", "0.0.")
    return aout, grads


# ------------------------------------------------------------------------------------------------ REDQ
REDQ_CASES = [  # (n, m, alpha (a0, min, max, fixed), reduction, est, fn)
    (4, 2, (1.0, 0.1, 10.0, False), "mean", "td0", "smooth_l1"),
    (3, 3, (0.05, 0.1, 10.0, False), "sum", "td0", "l2"),  # sub_sample_len == N: TorchRL clamps to N - 1
    (5, 1, (20.0, 0.1, 10.0, False), "none", "tdlambda", "l1"),  # alpha clamped at the top
    (2, 1, (0.3, 0.1, 10.0, True), "mean", "td1", "smooth_l1"),
]


@pytest.mark.parametrize("case", REDQ_CASES, ids=lambda c: f"N{c[0]}M{c[1]}-{c[3]}-{c[4]}")
@pytest.mark.parametrize("delay", [True, False])
def test_redq_vs_torchrl(case, delay):
    n, m, (a0, amin, amax, fixed), reduction, est, fn = case
    tactor, actor = _continuous_actor("tanh")
    tq = TVO(TMLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    q = ValueOperator(MLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    spec = Bounded(-torch.ones(NA), torch.ones(NA), (NA,))
    kw = dict(num_qvalue_nets=n, sub_sample_len=m, loss_function=fn, alpha_init=a0, min_alpha=amin, max_alpha=amax,
              fixed_alpha=fixed, delay_qvalue=delay, reduction=reduction, action_spec=spec,
              scalar_output_mode="non_tensor" if reduction == "none" else None)
    tl = TO.REDQLoss(tactor, tq, **kw)
    al = REDQLoss(actor, q, torchrl_compat=True, **kw)
    hp = {"lmbda": 0.7} if est == "tdlambda" else {}
    tl.make_value_estimator(est, gamma=0.9, **hp)
    al.make_value_estimator(est, gamma=0.9, **hp)
    _perturb(tl.actor_network_params, tl.qvalue_network_params)
    al.params = _params(tl, fixed)
    if delay:
        al._set_target("qvalue_network", _tree(tl.target_qvalue_network_params))
    td = _transition(torch.rand(B, NA) * 1.8 - 0.9)
    aout, grads = _run(tl, al, td)
    assert aout["state_action_value_actor"].shape == (n, B) and aout["next.state_value"].shape == (B,)
    _compare_grads(tl.qvalue_network_params, grads["qvalue_network"], "qvalue")
    if not fixed:
        _close(grads["log_alpha"], tl.log_alpha.grad.numpy(), "grad_log_alpha")
        _close(al.params["log_alpha"], tl.log_alpha.detach().numpy(), "log_alpha_after_call")


# ------------------------------------------------------------------------------------------------ CrossQ
def _crossq_case(n, warmup, smooth, momentum, alpha, reduction="mean", est="td0"):
    tactor, actor = _continuous_actor("tanh")
    nk = [{"num_features": 8, "warmup_steps": warmup, "smooth": smooth, "momentum": momentum}] * 2
    tq = TVO(TMLP(in_features=NOBS + NA, out_features=1, num_cells=[8, 8], norm_class=TBR, norm_kwargs=nk),
             in_keys=["observation", "action"]).double()
    anet = NormMLP(NOBS + NA, 1, [8, 8], norm_class=BatchRenorm1d,
                   norm_kwargs=[{"warmup_steps": warmup, "smooth": smooth, "momentum": momentum,
                                 "torchrl_compat": True}] * 2)
    q = StatefulValueOperator(anet, in_keys=["observation", "action"])
    a0, amin, amax, fixed = alpha
    spec = Bounded(-torch.ones(NA), torch.ones(NA), (NA,))
    kw = dict(num_qvalue_nets=n, alpha_init=a0, min_alpha=amin, max_alpha=amax, fixed_alpha=fixed,
              reduction=reduction, action_spec=spec, scalar_output_mode="non_tensor" if reduction == "none" else None)
    tl = TO.CrossQLoss(tactor, tq, **kw)
    al = CrossQLoss(actor, q, torchrl_compat=True, **kw)
    hp = {"lmbda": 0.7} if est == "tdlambda" else {}
    tl.make_value_estimator(est, gamma=0.9, **hp)
    al.make_value_estimator(est, gamma=0.9, **hp)
    _perturb(tl.actor_network_params)
    with torch.no_grad():  # perturb the critic parameters (not the statistics)
        for k, p in tl.qvalue_network_params.flatten_keys(".").items():
            if "running" not in k and "num_batches" not in k:
                p.add_(0.3 * torch.randn_like(p))
    return tl, al, fixed


def _split_state(tl):
    flat = _flat(tl.qvalue_network_params)
    stats = {k: v.detach().numpy().copy() for k, v in flat.items()
             if k.split(".")[-1] in ("running_mean", "running_var", "num_batches_tracked")}
    return stats


def _crossq_params(tl, fixed):
    flat = _flat(tl.qvalue_network_params)
    from arrayrl.nn.params import unflatten_params
    qp = unflatten_params({k: v.detach().numpy().copy() for k, v in flat.items()
                           if k.split(".")[-1] in ("weight", "bias")})
    st = unflatten_params(_split_state(tl))
    params = {"actor_network": {"0": _tree(tl.actor_network_params, "0.0."), "1": {}}, "qvalue_network": qp}
    if not fixed:
        params["log_alpha"] = tl.log_alpha.detach().numpy().copy()
    return params, st


@pytest.mark.parametrize("cfg", [
    (2, 2, False, 0.01, (1.0, None, None, False), "mean", "td0"),
    (3, 3, True, 0.2, (0.3, None, 2.0, False), "sum", "tdlambda"),
    (1, 0, False, 0.1, (0.5, None, None, True), "none", "td0"),
], ids=["N2-warmup2", "N3-smooth", "N1-nowarmup-none"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_crossq_vs_torchrl_steps(cfg, train):
    """Five consecutive calls (through the warm-up and past 2 x warmup_steps, where TorchRL's factor exceeds 1):
    outputs, td_error, gradients and the running statistics after each call; critic loss in train or eval
    statistics (the actor loss always in eval statistics)."""
    n, warmup, smooth, momentum, alpha, reduction, est = cfg
    tl, al, fixed = _crossq_case(n, warmup, smooth, momentum, alpha, reduction, est)
    params, st = _crossq_params(tl, fixed)
    al.params = params
    al.state = st
    al.train_critic = train
    for step in range(5):
        tl.qvalue_network.train(train)
        tl.zero_grad()
        td = _transition(torch.rand(B, NA) * 1.8 - 0.9)
        aout, grads = _run(tl, al, td)
        flat_g = {k: v for k, v in _flat(tl.qvalue_network_params).items()}
        from arrayrl.nn.params import flatten_params
        ag = flatten_params(grads["qvalue_network"])
        for k, p in flat_g.items():
            if k in ag:
                g = p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape))
                _close(ag[k], g, f"grad_qvalue.{k}")
        assert sorted(ag) == sorted(k for k in flat_g if k.split(".")[-1] in ("weight", "bias"))
        if not fixed:
            _close(grads["log_alpha"], tl.log_alpha.grad.numpy(), "grad_log_alpha")
        assert al.state is not al.next_state
        al.commit_state()
        from arrayrl.nn.params import flatten_params as fp
        got = fp(al.state)
        for k, v in _split_state(tl).items():
            _close(got[k], v, f"state.{k}")
        with torch.no_grad():  # a small optimiser-like move, identical on both sides
            for p in tl.qvalue_network_params.flatten_keys(".").values():
                if p.grad is not None:
                    p.sub_(0.05 * p.grad)
        al.params = {**al.params, "qvalue_network": _crossq_params(tl, fixed)[0]["qvalue_network"]}


# ------------------------------------------------------------------------------------------------ TQC
@pytest.mark.parametrize("cfg", [
    (3, 4, 1, (1.0, None, None, False), "mean", False, False),
    (2, 5, 2, (0.2, 0.1, 5.0, False), "sum", True, True),
    (1, 3, 0, (0.5, None, None, True), "none", False, True),
], ids=["N3M4k1", "N2M5k2-skip-weights", "N1M3k0-none"])
@pytest.mark.parametrize("delay", [True, False])
def test_tqc_vs_torchrl(cfg, delay):
    n, mq, k, (a0, amin, amax, fixed), reduction, skip, weights = cfg
    tactor, actor = _continuous_actor("tanh")
    tq = TVO(TMLP(in_features=NOBS + NA, out_features=mq, num_cells=[8]), in_keys=["observation", "action"])
    q = ValueOperator(MLP(in_features=NOBS + NA, out_features=mq, num_cells=[8]), in_keys=["observation", "action"])
    spec = Bounded(-torch.ones(NA), torch.ones(NA), (NA,))
    kw = dict(num_qvalue_nets=n, top_quantiles_to_drop_per_net=k, alpha_init=a0, min_alpha=amin, max_alpha=amax,
              fixed_alpha=fixed, delay_qvalue=delay, reduction=reduction, action_spec=spec, skip_done_states=skip,
              scalar_output_mode="non_tensor" if reduction == "none" else None)
    tl = TO.TQCLoss(tactor, tq, **kw)
    al = TQCLoss(actor, q, torchrl_compat=True, **kw)
    tl.make_value_estimator("td0", gamma=0.9)
    al.make_value_estimator("td0", gamma=0.9)
    _perturb(tl.actor_network_params, tl.qvalue_network_params)
    al.params = _params(tl, fixed)
    if delay:
        al._set_target("qvalue_network", _tree(tl.target_qvalue_network_params))
    td = _transition(torch.rand(B, NA) * 1.8 - 0.9, weights=weights)
    keep = ~td["next", "terminated"].squeeze(-1).numpy()

    def scatter(draws):
        if not skip or keep.all():
            return draws
        full = np.zeros((B, NA))
        full[keep] = draws[0]
        return [full] + draws[1:]

    aout, grads = _run(tl, al, td, scatter)
    _compare_grads(tl.qvalue_network_params, grads["qvalue_network"], "qvalue")
    if not fixed:
        _close(grads["log_alpha"], tl.log_alpha.grad.numpy(), "grad_log_alpha")
        _close(al.params["log_alpha"], tl.log_alpha.detach().numpy(), "log_alpha_after_call")


def test_zz_report_max_errors(capsys):
    with capsys.disabled():
        print("\nmax relative errors vs TorchRL:", {k: f"{v:.1e}" for k, v in sorted(MAX_ERR.items())})
