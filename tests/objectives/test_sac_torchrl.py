"""SACLoss (v1, v2) and DiscreteSACLoss against TorchRL 0.14.1: float64, copied weights (online and target), identical
batches and identical draws (torch's standard-normal draws are recorded and replayed through a NoiseGenerator).

Every output key, the td_error written into the batch, every parameter gradient (actor, critics, value, log_alpha)
and the clamped log_alpha left after the call are compared (relative 1e-10)."""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import torchrl.objectives as TO  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.data import Bounded  # noqa: E402
from torchrl.modules import MLP as TMLP  # noqa: E402
from torchrl.modules import OneHotCategorical as TOHC  # noqa: E402
from torchrl.modules import ProbabilisticActor as TPA  # noqa: E402
from torchrl.modules import ValueOperator as TVO  # noqa: E402

from arrayrl.data import unravel_key  # noqa: E402
from arrayrl.distributions import Categorical, OneHotCategorical  # noqa: E402
from arrayrl.interop import from_tensordict  # noqa: E402
from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor, ValueOperator  # noqa: E402
from arrayrl.objectives.sac import DiscreteSACLoss, SACLoss  # noqa: E402
from arrayrl.random import Generator  # noqa: E402
from tests.objectives.torchrl_helpers import Comparer, continuous_actor, transition  # noqa: E402
from tests.objectives.torchrl_helpers import Recorder as _Recorder  # noqa: E402
from tests.objectives.torchrl_helpers import float64_default  # noqa: E402,F401  (autouse fixture)
from tests.objectives.torchrl_helpers import perturb as _perturb  # noqa: E402
from tests.objectives.torchrl_helpers import torch_tree as _tree  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]

RTOL, ATOL = 1e-10, 1e-12
B, NOBS, NA = 6, 3, 2
CMP = Comparer(RTOL, ATOL)
MAX_ERR, _close, _compare_grads, _outputs = CMP.max_err, CMP.close, CMP.grads, CMP.outputs  # MAX_ERR: worst seen
_transition = partial(transition, B, (NOBS,))
_continuous_actor = partial(continuous_actor, NOBS, NA)


# ------------------------------------------------------------------------------------------------ SAC
ALPHAS = {  # name -> (alpha_init, min_alpha, max_alpha, fixed_alpha)
    "learned": (1.0, None, None, False),
    "fixed": (0.3, None, None, True),
    "clamp_max": (5.0, None, 2.0, False),  # only max: no lower bound
    "clamp_min": (0.01, 0.1, None, False),  # only min: upper bound 1e9
    "clamp_both": (0.05, 0.2, 3.0, False),
    "fixed_clamped": (5.0, 0.1, 2.0, True),
}


def _sac_case(version, dist, delays, alpha, fn="smooth_l1", reduction="mean", est="td0", n_q=2, skip=False,
              weights=False, spec_shape=(NA,), deactivate_vmap=False):
    delay_actor, delay_qvalue, delay_value = delays
    tactor, actor = _continuous_actor(dist)
    tq = TVO(TMLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    q = ValueOperator(MLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    tv = v = None
    if version == 1:
        tv = TVO(TMLP(in_features=NOBS, out_features=1, num_cells=[8]), in_keys=["observation"])
        v = ValueOperator(MLP(in_features=NOBS, out_features=1, num_cells=[8]), in_keys=["observation"])
    a0, amin, amax, fixed = ALPHAS[alpha]
    spec = Bounded(-torch.ones(spec_shape), torch.ones(spec_shape), spec_shape)
    kw = dict(num_qvalue_nets=n_q, loss_function=fn, alpha_init=a0, min_alpha=amin, max_alpha=amax,
              fixed_alpha=fixed, delay_actor=delay_actor, delay_qvalue=delay_qvalue, delay_value=delay_value,
              reduction=reduction, skip_done_states=skip, action_spec=spec,
              scalar_output_mode="non_tensor" if reduction == "none" else None, deactivate_vmap=deactivate_vmap)
    tl = TO.SACLoss(tactor, tq, tv, **kw)
    al = SACLoss(actor, q, v, torchrl_compat=True, **kw)
    hp = {"lmbda": 0.7} if est == "tdlambda" else {}
    tl.make_value_estimator(est, gamma=0.9, **hp)
    al.make_value_estimator(est, gamma=0.9, **hp)
    # online params move away from the targets copied at construction
    _perturb(tl.actor_network_params, tl.qvalue_network_params,
             *([tl.value_network_params] if version == 1 else []))
    params = {"actor_network": {"0": _tree(tl.actor_network_params, "0.0."), "1": {}},
              "qvalue_network": _tree(tl.qvalue_network_params)}
    if version == 1:
        params["value_network"] = _tree(tl.value_network_params)
    if not fixed:
        params["log_alpha"] = tl.log_alpha.detach().numpy().copy()
    al.params = params
    if delay_actor:
        al._set_target("actor_network", {"0": _tree(tl.target_actor_network_params, "0.0."), "1": {}})
    if delay_qvalue:
        al._set_target("qvalue_network", _tree(tl.target_qvalue_network_params))
    if version == 1 and delay_value:
        al._set_target("value_network", _tree(tl.target_value_network_params))
    td = _transition(torch.rand(B, NA) * 1.8 - 0.9, weights=weights)
    return tl, al, td


def _run_sac(tl, al, td, version, skip):
    batch = from_tensordict(td, np, copy=True)
    with _Recorder() as rec:
        out = tl(td)
    sum(out[k].sum() for k in out.keys() if k.startswith("loss")).backward()
    draws = rec.draws
    if skip and version == 2:  # TorchRL draws a' only for the not-done rows; arrayrl draws [B, A] and masks
        keep = ~td["next", "done"].squeeze(-1).numpy()
        full = np.zeros((B, NA))
        full[keep] = draws[0]
        draws = [full] + draws[1:]
    assert [d.shape for d in draws] == [(B, NA)] * 2 or skip
    al.generator = Generator.from_noise(*draws)
    aout, grads = al.value_and_grad(batch)
    assert al.generator.remaining == 0
    _outputs(out, aout)
    _close(batch["td_error"], td["td_error"].detach().numpy(), "td_error")
    _compare_grads(tl.actor_network_params, grads["actor_network"]["0"], "actor", "0.0.")
    _compare_grads(tl.qvalue_network_params, grads["qvalue_network"], "qvalue")
    if version == 1:
        _compare_grads(tl.value_network_params, grads["value_network"], "value")
    if not al.fixed_alpha:
        _close(grads["log_alpha"], tl.log_alpha.grad.numpy(), "grad_log_alpha")
        _close(al.params["log_alpha"], tl.log_alpha.detach().numpy(), "log_alpha_after_call")
    return aout


DELAYS = list(itertools.product([False, True], repeat=3))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("delays", DELAYS, ids=lambda d: "".join("T" if x else "F" for x in d))
@pytest.mark.parametrize("dist", ["tanh", "normal"])
def test_sac_delays_vs_torchrl(version, delays, dist):
    """Every delay_actor/delay_qvalue/delay_value setting, both versions, TanhNormal and IndependentNormal."""
    tl, al, td = _sac_case(version, dist, delays, "learned")
    _run_sac(tl, al, td, version, False)


@pytest.mark.parametrize("alpha", sorted(ALPHAS))
@pytest.mark.parametrize("version", [1, 2])
def test_sac_alpha_schemes_vs_torchrl(alpha, version):
    """Fixed and learned alpha, min/max clamping (the clamp moves log_alpha; its gradient is the unclamped one)."""
    tl, al, td = _sac_case(version, "tanh", (False, True, True), alpha)
    _run_sac(tl, al, td, version, False)


SAC_MISC = [  # version, fn, reduction, est, n_q, skip, weights, dist
    (2, "l2", "sum", "td1", 3, False, True, "tanh"),
    (2, "l1", "none", "tdlambda", 1, False, True, "normal"),
    (2, "smooth_l1", "mean", "td0", 2, True, False, "tanh"),
    (2, "l2", "none", "td0", 3, True, True, "tanh"),
    (1, "l2", "sum", "tdlambda", 3, False, True, "tanh"),
    (1, "l1", "none", "td1", 2, False, False, "normal"),
    (1, "smooth_l1", "mean", "td0", 1, False, True, "tanh"),
]


@pytest.mark.parametrize("version,fn,reduction,est,n_q,skip,weights,dist", SAC_MISC)
def test_sac_options_vs_torchrl(version, fn, reduction, est, n_q, skip, weights, dist):
    """Loss functions, reductions (incl. "none" with non-tensor scalars), estimators, ensemble sizes, prioritized
    weights and TorchRL's skip_done_states (on done, torchrl_compat)."""
    tl, al, td = _sac_case(version, dist, (False, True, True), "learned", fn=fn, reduction=reduction, est=est,
                           n_q=n_q, skip=skip, weights=weights)
    _run_sac(tl, al, td, version, skip)


def test_sac_deactivate_vmap_vs_torchrl():
    tl, al, td = _sac_case(2, "tanh", (True, True, True), "learned", deactivate_vmap=True, n_q=3)
    _run_sac(tl, al, td, 2, False)


def test_sac_target_entropy_batched_spec_compat():
    """torchrl_compat reproduces TorchRL's -8 for a (4, 2) spec; arrayrl's default gives -2."""
    tl, al, _ = _sac_case(2, "tanh", (False, True, True), "learned", spec_shape=(4, NA))
    assert float(tl.target_entropy) == -8.0
    assert al.target_entropy == -8.0
    al.torchrl_compat = False
    assert al.target_entropy == -2.0


def test_sac_out_keys_like_torchrl():
    for version in (1, 2):
        tl, al, _ = _sac_case(version, "tanh", (False, True, True), "learned")
        assert al.out_keys == tl.out_keys
        assert sorted(unravel_key(k) for k in al.in_keys) == sorted(unravel_key(k) for k in tl.in_keys)


# ------------------------------------------------------------------------------------------------ DiscreteSAC
def _discrete_case(space, alpha, fn="smooth_l1", reduction="mean", est="td0", n_q=2, skip=False, weights=False,
                   delay_qvalue=True):
    nA = 4
    tdist = TOHC if space == "one_hot" else torch.distributions.Categorical
    tactor = TPA(TensorDictModule(TMLP(in_features=NOBS, out_features=nA, num_cells=[8]), ["observation"],
                                  ["logits"]), in_keys=["logits"], distribution_class=tdist)
    tq = TVO(TMLP(in_features=NOBS, out_features=nA, num_cells=[8]), in_keys=["observation"],
             out_keys=["action_value"])
    actor = ProbabilisticActor(KeyedModule(MLP(in_features=NOBS, out_features=nA, num_cells=[8]),
                                           in_keys=["observation"], out_keys=["logits"]), in_keys=["logits"],
                               distribution_class=OneHotCategorical if space == "one_hot" else Categorical)
    q = ValueOperator(MLP(in_features=NOBS, out_features=nA, num_cells=[8]), in_keys=["observation"],
                      out_keys=["action_value"])
    a0, amin, amax, fixed = ALPHAS[alpha]
    kw = dict(action_space=space, num_actions=nA, num_qvalue_nets=n_q, loss_function=fn, alpha_init=a0,
              min_alpha=amin, max_alpha=amax, fixed_alpha=fixed, reduction=reduction, skip_done_states=skip,
              delay_qvalue=delay_qvalue, scalar_output_mode="non_tensor" if reduction == "none" else None)
    tl = TO.DiscreteSACLoss(tactor, tq, **kw)
    al = DiscreteSACLoss(actor, q, torchrl_compat=True, **kw)
    hp = {"lmbda": 0.7} if est == "tdlambda" else {}
    tl.make_value_estimator(est, gamma=0.9, **hp)
    al.make_value_estimator(est, gamma=0.9, **hp)
    _perturb(tl.actor_network_params, tl.qvalue_network_params)
    params = {"actor_network": {"0": _tree(tl.actor_network_params, "0."), "1": {}},
              "qvalue_network": _tree(tl.qvalue_network_params)}
    if not fixed:
        params["log_alpha"] = tl.log_alpha.detach().numpy().copy()
    al.params = params
    if delay_qvalue:
        al._set_target("qvalue_network", _tree(tl.target_qvalue_network_params))
    action = torch.randint(0, nA, (B,))
    action = action if space == "categorical" else torch.nn.functional.one_hot(action, nA)
    td = _transition(action, weights=weights)
    batch = from_tensordict(td, np, copy=True)
    out = tl(td)
    sum(out[k].sum() for k in out.keys() if k.startswith("loss")).backward()
    aout, grads = al.value_and_grad(batch)
    _outputs(out, aout)
    _close(batch["td_error"], td["td_error"].detach().numpy(), "td_error")
    _compare_grads(tl.actor_network_params, grads["actor_network"]["0"], "actor", "0.")
    _compare_grads(tl.qvalue_network_params, grads["qvalue_network"], "qvalue")
    if not fixed:
        _close(grads["log_alpha"], tl.log_alpha.grad.numpy(), "grad_log_alpha")
        _close(al.params["log_alpha"], tl.log_alpha.detach().numpy(), "log_alpha_after_call")
    assert al.target_entropy == pytest.approx(float(tl.target_entropy), rel=1e-15)


DISCRETE_CASES = [  # space, alpha, fn, reduction, est, n_q, skip, weights, delay_qvalue
    ("categorical", "learned", "smooth_l1", "mean", "td0", 2, False, False, True),
    ("one_hot", "learned", "l2", "sum", "td1", 3, False, True, False),
    ("categorical", "fixed", "l1", "none", "tdlambda", 1, False, True, True),
    ("one_hot", "clamp_max", "smooth_l1", "mean", "td0", 2, True, False, True),
    ("categorical", "clamp_min", "l2", "mean", "td0", 2, True, True, False),
    ("one_hot", "clamp_both", "smooth_l1", "none", "td0", 3, False, False, True),
    ("categorical", "fixed_clamped", "smooth_l1", "mean", "td1", 2, False, False, True),
]


@pytest.mark.parametrize("space,alpha,fn,reduction,est,n_q,skip,weights,delay_qvalue", DISCRETE_CASES)
def test_discrete_sac_vs_torchrl(space, alpha, fn, reduction, est, n_q, skip, weights, delay_qvalue):
    _discrete_case(space, alpha, fn, reduction, est, n_q, skip, weights, delay_qvalue)


def test_zz_report_max_errors(capsys):
    """Print the worst relative errors seen above (``pytest -s`` shows them)."""
    with capsys.disabled():
        print("\nSAC vs TorchRL max relative errors:", {k: f"{v:.1e}" for k, v in sorted(MAX_ERR.items())})
    assert all(v <= RTOL for v in MAX_ERR.values())
