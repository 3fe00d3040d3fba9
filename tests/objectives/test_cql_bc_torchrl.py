"""CQLLoss, DiscreteCQLLoss and BCLoss against TorchRL 0.14.1 in ``torchrl_compat`` mode: float64, copied weights
(online and target), identical batches and identical draws (torch's standard-normal and ``uniform_`` draws are
recorded in order during the TorchRL call and replayed through a NoiseGenerator).

Every output key, the td_error written into the batch and every parameter gradient (actor, critics, log_alpha,
log_alpha_prime; value network; BC actor) are compared (relative 1e-10)."""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import torchrl.objectives as TO  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.data import Bounded  # noqa: E402
from torchrl.modules import MLP as TMLP  # noqa: E402
from torchrl.modules import QValueActor as TQVA  # noqa: E402
from torchrl.modules import ValueOperator as TVO  # noqa: E402

from arrayrl.data import unravel_key  # noqa: E402
from arrayrl.interop import from_tensordict  # noqa: E402
from arrayrl.nn import MLP, KeyedModule, QValueActor, ValueOperator  # noqa: E402
from arrayrl.objectives.bc import BCLoss  # noqa: E402
from arrayrl.objectives.cql import CQLLoss, DiscreteCQLLoss  # noqa: E402
from arrayrl.random import Generator  # noqa: E402
from tests.objectives.torchrl_helpers import Comparer, Recorder, continuous_actor, transition  # noqa: E402
from tests.objectives.torchrl_helpers import float64_default  # noqa: E402,F401  (autouse fixture)
from tests.objectives.torchrl_helpers import perturb as _perturb  # noqa: E402
from tests.objectives.torchrl_helpers import torch_tree as _tree  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]

RTOL, ATOL = 1e-10, 1e-12
B, NOBS, NA = 5, 3, 2
CMP = Comparer(RTOL, ATOL)
MAX_ERR, _close, _compare_grads, _outputs = CMP.max_err, CMP.close, CMP.grads, CMP.outputs  # MAX_ERR: worst seen
_transition = partial(transition, B, (NOBS,))
_continuous_actor = partial(continuous_actor, NOBS, NA)
#: torch's standard-normal draws (Normal.rsample) and ``Tensor.uniform_`` results, in call order
_Recorder = partial(Recorder, uniform=True)


# ------------------------------------------------------------------------------------------------ CQL
ALPHAS = {  # name -> (alpha_init, min_alpha, max_alpha, fixed_alpha)
    "learned": (1.0, None, None, False),
    "fixed": (0.3, None, None, True),
    "clamp_both": (0.05, 0.2, 3.0, False),
}

CQL_CASES = [  # id, dist, alpha, kwargs, est
    ("default", "tanh", "learned", {}, "td0"),
    ("normal_fixed", "normal", "fixed", dict(loss_function="l2", num_random=3), "td0"),
    ("max_q_backup", "tanh", "learned", dict(max_q_backup=True, num_random=4), "td0"),
    ("soft_backup", "tanh", "clamp_both", dict(deterministic_backup=False, temperature=0.7, min_q_weight=5.0), "td1"),
    ("lagrange", "tanh", "learned", dict(with_lagrange=True, lagrange_thresh=0.3, num_random=3), "td0"),
    ("lagrange_sum", "normal", "learned", dict(with_lagrange=True, lagrange_thresh=-0.5, reduction="sum",
                                               loss_function="l1", temperature=2.0), "tdlambda"),
    ("none_delays", "tanh", "learned", dict(reduction="none", scalar_output_mode="non_tensor", delay_actor=True,
                                            delay_qvalue=False, num_random=2, max_q_backup=True), "td0"),
    ("vmap_off", "tanh", "fixed", dict(deactivate_vmap=True, reduction="sum", min_q_weight=0.3), "td0"),
]


def _cql_case(dist, alpha, kw, est):
    tactor, actor = _continuous_actor(dist)
    tq = TVO(TMLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    q = ValueOperator(MLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    a0, amin, amax, fixed = ALPHAS[alpha]
    spec = Bounded(-torch.ones(NA), torch.ones(NA), (NA,))
    kw = dict(alpha_init=a0, min_alpha=amin, max_alpha=amax, fixed_alpha=fixed, action_spec=spec, **kw)
    tl = TO.CQLLoss(tactor, tq, **kw)
    al = CQLLoss(actor, q, torchrl_compat=True, **kw)
    hp = {"lmbda": 0.7} if est == "tdlambda" else {}
    tl.make_value_estimator(est, gamma=0.9, **hp)
    al.make_value_estimator(est, gamma=0.9, **hp)
    _perturb(tl.actor_network_params, tl.qvalue_network_params)
    if getattr(tl, "with_lagrange", False):
        with torch.no_grad():
            tl.log_alpha_prime.add_(0.4)
    params = {"actor_network": {"0": _tree(tl.actor_network_params, "0.0."), "1": {}},
              "qvalue_network": _tree(tl.qvalue_network_params)}
    if not fixed:
        params["log_alpha"] = tl.log_alpha.detach().numpy().copy()
    if tl.with_lagrange:
        params["log_alpha_prime"] = tl.log_alpha_prime.detach().numpy().copy()
    al.params = params
    if kw.get("delay_actor"):
        al._set_target("actor_network", {"0": _tree(tl.target_actor_network_params, "0.0."), "1": {}})
    if kw.get("delay_qvalue", True):
        al._set_target("qvalue_network", _tree(tl.target_qvalue_network_params))
    td = _transition(torch.rand(B, NA) * 1.8 - 0.9)
    return tl, al, td


@pytest.mark.parametrize("case", CQL_CASES, ids=[c[0] for c in CQL_CASES])
def test_cql_vs_torchrl(case):
    _, dist, alpha, kw, est = case
    tl, al, td = _cql_case(dist, alpha, kw, est)
    batch = from_tensordict(td, np, copy=True)
    with _Recorder() as rec:
        out = tl(td)
    sum(out[k].sum() for k in out.keys() if k.startswith("loss")).backward()
    k = kw.get("num_random", 10)
    want = [(B, NA)] + ([(B * k, NA)] if kw.get("max_q_backup") else []) + [(B * k, NA)] * 3 + [(B, NA)] * 2
    assert [d.shape for d in rec.draws] == want
    al.generator = Generator.from_noise(*rec.draws)
    aout, grads = al.value_and_grad(batch)
    assert al.generator.remaining == 0
    _outputs(out, aout)
    _close(batch["td_error"], td["td_error"].detach().numpy(), "td_error")
    _compare_grads(tl.actor_network_params, grads["actor_network"]["0"], "actor", "0.0.")
    _compare_grads(tl.qvalue_network_params, grads["qvalue_network"], "qvalue")
    if not al.fixed_alpha:
        _close(grads["log_alpha"], tl.log_alpha.grad.numpy(), "grad_log_alpha")
        _close(al.params["log_alpha"], tl.log_alpha.detach().numpy(), "log_alpha_after_call")
    if al.with_lagrange:
        _close(grads["log_alpha_prime"], tl.log_alpha_prime.grad.numpy(), "grad_log_alpha_prime")


def test_cql_keys_like_torchrl():
    for kw in ({}, {"with_lagrange": True}):
        tl, al, _ = _cql_case("tanh", "learned", kw, "td0")
        assert al.out_keys == tl.out_keys
        assert sorted(unravel_key(k) for k in al.in_keys) == sorted(unravel_key(k) for k in tl.in_keys)
        assert float(tl.target_entropy) == al.target_entropy


# ------------------------------------------------------------------------------------------------ DiscreteCQL
DISCRETE_CASES = [  # space, fn, reduction, est, delay_value
    ("categorical", "l2", "mean", "td0", True),
    ("one_hot", "smooth_l1", "sum", "td1", True),
    ("categorical", "l1", "none", "tdlambda", False),
    ("one_hot", "l2", "mean", "td0", False),
]


@pytest.mark.parametrize("space,fn,reduction,est,delay", DISCRETE_CASES)
def test_discrete_cql_vs_torchrl(space, fn, reduction, est, delay):
    nA = 4
    tnet = TQVA(TMLP(in_features=NOBS, out_features=nA, num_cells=[8]), in_keys=["observation"],
                action_space=space)
    anet = QValueActor(MLP(in_features=NOBS, out_features=nA, num_cells=[8]), in_keys=["observation"],
                       action_space=space)
    kw = dict(loss_function=fn, reduction=reduction, delay_value=delay, action_space=space)
    tl = TO.DiscreteCQLLoss(tnet, **kw)
    al = DiscreteCQLLoss(anet, torchrl_compat=True, **kw)
    hp = {"lmbda": 0.7} if est == "tdlambda" else {}
    tl.make_value_estimator(est, gamma=0.9, **hp)
    al.make_value_estimator(est, gamma=0.9, **hp)
    _perturb(tl.value_network_params)  # the online params move away from the (unused) TorchRL target
    al.params = {"value_network": {"0": _tree(tl.value_network_params, "0."), "1": {}}}
    action = torch.randint(0, nA, (B,))
    action = action if space == "categorical" else torch.nn.functional.one_hot(action, nA)
    td = _transition(action)
    batch = from_tensordict(td, np, copy=True)
    out = tl(td)
    sum(out[k].sum() for k in out.keys() if k.startswith("loss")).backward()
    aout, grads = al.value_and_grad(batch)
    _outputs(out, aout)
    _close(batch["td_error"], td["td_error"].detach().numpy(), "td_error")
    _compare_grads(tl.value_network_params, grads["value_network"]["0"], "value", "0.")


# ------------------------------------------------------------------------------------------------ BC
def _bc_det_actor(out_key="action"):
    tnet = TensorDictModule(TMLP(in_features=NOBS, out_features=NA, num_cells=[8]), ["observation"], [out_key])
    anet = KeyedModule(MLP(in_features=NOBS, out_features=NA, num_cells=[8]), in_keys=["observation"],
                       out_keys=[out_key])
    return tnet, anet


def _bc_run(tnet, anet, tparams_prefix, aparams_of, td, *, expect_warning=False, keys=None, **kw):
    tl = TO.BCLoss(tnet, **kw)
    al = BCLoss(anet, **kw)
    if keys:
        tl.set_keys(**keys)
        al.set_keys(**keys)
    _perturb(tl.actor_network_params)
    al.params = {"actor_network": aparams_of(tl)}
    batch = from_tensordict(td, np, copy=True)
    with warnings.catch_warnings(record=True) as wt:
        warnings.simplefilter("always")
        out = tl(td)
    with warnings.catch_warnings(record=True) as wa:
        warnings.simplefilter("always")
        aout, grads = al.value_and_grad(batch)
    if expect_warning:
        assert any(issubclass(w.category, FutureWarning) for w in wt)
        assert any(issubclass(w.category, FutureWarning) for w in wa)
    out["loss_bc"].sum().backward()
    _outputs(out, aout)
    g = grads["actor_network"]["0"] if tparams_prefix else grads["actor_network"]
    _compare_grads(tl.actor_network_params, g, "bc", tparams_prefix)


def _det_batch(a=None):
    return TensorDict({"observation": torch.randn(B, NOBS),
                       "action": torch.rand(B, NA) * 1.8 - 0.9 if a is None else a}, [B])


@pytest.mark.parametrize("fn", [None, "l1", "l2", "mse", "smooth_l1", "callable"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bc_deterministic_vs_torchrl(fn, reduction):
    tnet, anet = _bc_det_actor()
    td = _det_batch()
    td["action"] = td["action"] * 3.0  # smooth_l1 sees both branches
    if fn == "callable":
        tfn = lambda p, e: ((p - e) ** 4).sum(-1)  # noqa: E731
        tl = TO.BCLoss(tnet, loss_function=tfn, reduction=reduction)
        al = BCLoss(anet, loss_function=_np_sum4, reduction=reduction)
        _perturb(tl.actor_network_params)
        al.params = {"actor_network": _tree(tl.actor_network_params)}
        batch = from_tensordict(td, np, copy=True)
        out = tl(td)
        aout, grads = al.value_and_grad(batch)
        out["loss_bc"].sum().backward()
        _outputs(out, aout)
        _compare_grads(tl.actor_network_params, grads["actor_network"], "bc")
        return
    _bc_run(tnet, anet, "", lambda tl: _tree(tl.actor_network_params), td, loss_function=fn, reduction=reduction)


def _np_sum4(p, e):
    from arrayrl._backend import namespace_of

    xp = namespace_of(p, e)
    d = p - e
    return xp.sum(d * d * d * d, axis=-1)


def test_bc_pad_mask_vs_torchrl():
    """A [B, H] pad mask on a [B, H, A] chunked action (VLA-style), mean and sum."""
    h = 3
    for reduction in ("mean", "sum"):
        tnet, anet = _bc_det_actor()
        td = TensorDict({"observation": torch.randn(B, h, NOBS), "action": torch.randn(B, h, NA),
                         "action_is_pad": torch.rand(B, h) < 0.4}, [B, h])
        _bc_run(tnet, anet, "", lambda tl: _tree(tl.actor_network_params), td, keys={"pad_mask": "action_is_pad"},
                loss_function="l1", reduction=reduction)


def test_bc_pad_mask_none_keeps_shape_all_padded_mean_zero():
    """Documented difference: reduction="none" with a pad mask keeps the loss's shape (zeros at padded elements;
    TorchRL compacts to the unpadded elements). A wholly padded batch gives 0 under "mean" in both (TorchRL's
    docstring says NaN, its code clamps the count to 1)."""
    tnet, anet = _bc_det_actor()
    tl, al = TO.BCLoss(tnet, loss_function="l1", reduction="none"), BCLoss(anet, loss_function="l1", reduction="none")
    for loss in (tl, al):
        loss.set_keys(pad_mask="pad")
    al.params = {"actor_network": _tree(tl.actor_network_params)}
    pad = torch.rand(B, NA) < 0.4
    td = TensorDict({"observation": torch.randn(B, NOBS), "action": torch.randn(B, NA), "pad": pad}, [B])
    want = tl(td)["loss_bc"].detach().numpy()
    got = np.asarray(al(from_tensordict(td, np, copy=True))["loss_bc"])
    assert got.shape == (B, NA) and want.shape == (int((~pad).sum()),)
    _close(got[~pad.numpy()], want, "out[loss_bc_none]")
    assert np.all(got[pad.numpy()] == 0)
    tl.reduction = al.reduction = "mean"
    td["pad"] = torch.ones(B, NA, dtype=torch.bool)
    assert float(tl(td)["loss_bc"]) == 0.0
    assert float(al(from_tensordict(td, np, copy=True))["loss_bc"]) == 0.0


def test_bc_stochastic_nll_vs_torchrl():
    """loss_function=None with a TanhNormal actor: -log pi(a_expert|s) (through atanh)."""
    for reduction in ("mean", "none"):
        tactor, actor = _continuous_actor("tanh")
        td = _det_batch()
        _bc_run(tactor, actor, "0.0.", lambda tl: {"0": _tree(tl.actor_network_params, "0.0."), "1": {}}, td,
                reduction=reduction)


def test_bc_cross_entropy_vs_torchrl():
    """Integer expert actions: cross-entropy on the logits the network writes at "action" (None and explicit)."""
    nA = 4
    for fn, shape in ((None, (B,)), ("cross_entropy", (B, 1))):
        tnet = TensorDictModule(TMLP(in_features=NOBS, out_features=nA, num_cells=[8]), ["observation"], ["action"])
        anet = KeyedModule(MLP(in_features=NOBS, out_features=nA, num_cells=[8]), in_keys=["observation"],
                           out_keys=["action"])
        td = TensorDict({"observation": torch.randn(B, NOBS), "action": torch.randint(0, nA, shape)}, [B])
        _bc_run(tnet, anet, "", lambda tl: _tree(tl.actor_network_params), td, loss_function=fn)


def test_bc_legacy_action_key_warns_like_torchrl():
    """set_keys(action="expert") with an actor writing "action": FutureWarning, prediction read from "action"."""
    tnet, anet = _bc_det_actor("action")
    td = TensorDict({"observation": torch.randn(B, NOBS), "expert": torch.randn(B, NA)}, [B])
    _bc_run(tnet, anet, "", lambda tl: _tree(tl.actor_network_params), td, keys={"action": "expert"},
            expect_warning=True, loss_function="l2")


def test_bc_no_prediction_raises_like_torchrl():
    tnet, anet = _bc_det_actor("other")
    td = _det_batch()
    with pytest.raises(RuntimeError):
        TO.BCLoss(tnet, loss_function="l2")(td)
    with pytest.raises(RuntimeError, match="did not write a prediction"):
        BCLoss(anet, loss_function="l2")(from_tensordict(td, np, copy=True))


def test_zz_report_max_errors(capsys):
    with capsys.disabled():
        print("\nCQL/DiscreteCQL/BC vs TorchRL max relative errors:",
              {k: f"{v:.1e}" for k, v in sorted(MAX_ERR.items())})
    assert all(v <= RTOL for v in MAX_ERR.values())
