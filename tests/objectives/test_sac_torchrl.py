"""SACLoss (v1, v2) and DiscreteSACLoss against TorchRL 0.14.1: float64, copied weights (online and target), identical
batches and identical draws (torch's standard-normal draws are recorded and replayed through a NoiseGenerator).

Every output key, the td_error written into the batch, every parameter gradient (actor, critics, value, log_alpha)
and the clamped log_alpha left after the call are compared (relative 1e-10)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import torch.distributions.normal as _tdn  # noqa: E402
import torchrl.objectives as TO  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import NormalParamExtractor as TNPE  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.data import Bounded  # noqa: E402
from torchrl.modules import MLP as TMLP  # noqa: E402
from torchrl.modules import IndependentNormal as TIN  # noqa: E402
from torchrl.modules import OneHotCategorical as TOHC  # noqa: E402
from torchrl.modules import ProbabilisticActor as TPA  # noqa: E402
from torchrl.modules import TanhNormal as TTN  # noqa: E402
from torchrl.modules import ValueOperator as TVO  # noqa: E402

from arrayrl.data import unravel_key  # noqa: E402
from arrayrl.distributions import Categorical, IndependentNormal, OneHotCategorical, TanhNormal  # noqa: E402
from arrayrl.interop import from_tensordict  # noqa: E402
from arrayrl.nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor, ValueOperator  # noqa: E402
from arrayrl.nn.params import flatten_params, unflatten_params  # noqa: E402
from arrayrl.objectives.sac import DiscreteSACLoss, SACLoss  # noqa: E402
from arrayrl.random import Generator  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]

RTOL, ATOL = 1e-10, 1e-12
B, NOBS, NA = 6, 3, 2
MAX_ERR: dict = {}  # worst relative error seen per quantity (printed by the last test)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


def _flat(td, prefix=""):
    out = {}
    for k, v in td.flatten_keys(".").items():
        name = ".".join(p for p in k.split(".") if p != "module")
        if name.startswith(prefix):
            out[name[len(prefix):]] = v
    return out


def _tree(td, prefix=""):
    return unflatten_params({k: v.detach().numpy().copy() for k, v in _flat(td, prefix).items()})


def _perturb(*tds):
    with torch.no_grad():
        for td in tds:
            for p in td.values(True, True):
                p.add_(0.1 * torch.randn_like(p))


def _close(got, want, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)
    err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-3))) if got.size else 0.0
    kind = what.split(".")[0].split("[")[0]
    MAX_ERR[kind] = max(MAX_ERR.get(kind, 0.0), err)


def _compare_grads(tparams, agrads, name, prefix=""):
    flat_t = _flat(tparams, prefix)
    flat_a = flatten_params(agrads)
    assert sorted(flat_t) == sorted(flat_a), (sorted(flat_t), sorted(flat_a))
    for k, p in flat_t.items():
        g = p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape))
        _close(flat_a[k], g, f"grad_{name}.{k}")


class _Recorder:
    """Record torch's standard-normal draws (Normal.rsample) during a TorchRL call."""

    def __enter__(self):
        self.draws, self._orig = [], _tdn._standard_normal

        def rec(*a, **k):
            x = self._orig(*a, **k)
            self.draws.append(x.detach().numpy().copy())
            return x

        _tdn._standard_normal = rec
        return self

    def __exit__(self, *exc):
        _tdn._standard_normal = self._orig


def _transition(action, *, weights=False):
    term = torch.rand(B, 1) < 0.3
    done = term | (torch.rand(B, 1) < 0.3)  # truncations too
    td = TensorDict({"observation": torch.randn(B, NOBS), "action": action,
                     ("next", "observation"): torch.randn(B, NOBS), ("next", "reward"): torch.randn(B, 1),
                     ("next", "done"): done, ("next", "terminated"): term}, [B])
    if weights:
        td["priority_weight"] = torch.rand(B) + 0.5
    return td


def _continuous_actor(dist):
    tdist, adist = (TTN, TanhNormal) if dist == "tanh" else (TIN, IndependentNormal)
    tactor = TPA(TensorDictModule(torch.nn.Sequential(TMLP(in_features=NOBS, out_features=2 * NA, num_cells=[8]),
                                                      TNPE()), ["observation"], ["loc", "scale"]),
                 in_keys=["loc", "scale"], distribution_class=tdist)
    amlp, ape = MLP(in_features=NOBS, out_features=2 * NA, num_cells=[8]), NormalParamExtractor()
    amod = KeyedModule(lambda p, o: ape.apply({}, amlp.apply(p, o)), params=amlp.params, in_keys=["observation"],
                       out_keys=["loc", "scale"])
    return tactor, ProbabilisticActor(amod, in_keys=["loc", "scale"], distribution_class=adist)


def _outputs(out, aout):
    keys = sorted(out.keys())
    assert sorted(aout) == keys, (sorted(aout), keys)
    for k in keys:
        want = out.get(k)
        want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(getattr(want, "data", want))
        _close(aout[k], want, f"out[{k}]")


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
