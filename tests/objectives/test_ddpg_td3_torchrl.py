"""DDPGLoss, TD3Loss and TD3BCLoss against TorchRL 0.14.1: float64, copied weights (online and target), identical
batches and identical draws (TorchRL's ``torch.randn_like`` target-policy noise is recorded and replayed through a
NoiseGenerator).

Every output key (the non-scalar metadata included), the td_error written into the batch and every parameter
gradient (actor, critic or critic ensemble) are compared at relative 1e-10, for every delay_* setting, TD3 with
bounds and with a Bounded spec, each reduction, loss function and value estimator, prioritized weights, collector
masks, ensemble sizes and deactivate_vmap."""

from __future__ import annotations

import itertools
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
from torchrl.modules import ValueOperator as TVO  # noqa: E402

from arrayrl.data import unravel_key  # noqa: E402
from arrayrl.interop import from_tensordict  # noqa: E402
from arrayrl.nn import MLP, KeyedModule, ValueOperator  # noqa: E402
from arrayrl.objectives.ddpg import DDPGLoss  # noqa: E402
from arrayrl.objectives.td3 import TD3BCLoss, TD3Loss  # noqa: E402
from arrayrl.nn.params import flatten_params  # noqa: E402
from arrayrl.random import Generator  # noqa: E402
from tests.objectives.torchrl_helpers import Comparer, Recorder  # noqa: E402
from tests.objectives.torchrl_helpers import float64_default  # noqa: E402,F401  (autouse fixture)
from tests.objectives.torchrl_helpers import perturb as _perturb  # noqa: E402
from tests.objectives.torchrl_helpers import torch_tree as _tree  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]

RTOL, ATOL = 1e-10, 1e-12
B, NOBS, NA = 6, 3, 2
CMP = Comparer(RTOL, ATOL, shapes=True)
MAX_ERR, _close, _compare_grads, _outputs = CMP.max_err, CMP.close, CMP.grads, CMP.outputs  # MAX_ERR: worst seen
#: torch.randn_like draws (TD3's target-policy noise)
_RecordRandn = partial(Recorder, normal=False, randn_like=True)


def _nets():
    """A tanh actor obs -> action and a critic (obs, action) -> Q, in TorchRL and arrayrl (same layouts)."""
    tactor = TensorDictModule(TMLP(in_features=NOBS, out_features=NA, num_cells=[8], activate_last_layer=True),
                              ["observation"], ["action"])
    tq = TVO(TMLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    actor = KeyedModule(MLP(in_features=NOBS, out_features=NA, num_cells=[8], activate_last_layer=True),
                        in_keys=["observation"], out_keys=["action"])
    q = ValueOperator(MLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    return tactor, tq, actor, q


def _transition(low=-1.0, high=1.0, *, weights=False, mask=False, steps=False):
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    term = torch.rand(B, 1) < 0.3
    done = term | (torch.rand(B, 1) < 0.3)  # truncations too
    action = low + (high - low) * torch.rand(B, NA)
    td = TensorDict({"observation": torch.randn(B, NOBS), "action": action,
                     ("next", "observation"): torch.randn(B, NOBS), ("next", "reward"): torch.randn(B, 1),
                     ("next", "done"): done, ("next", "terminated"): term}, [B])
    if weights:
        td["priority_weight"] = torch.rand(B) + 0.5
    if mask:
        m = torch.ones(B, dtype=torch.bool)
        m[1] = m[4] = False
        td["collector", "mask"] = m
    if steps:
        td["steps_to_next_obs"] = torch.randint(1, 4, (B, 1))
    return td


def _estimator(tl, al, est):
    hp = {"lmbda": 0.7} if est == "tdlambda" else {}
    tl.make_value_estimator(est, gamma=0.9, **hp)
    al.make_value_estimator(est, gamma=0.9, **hp)


# ------------------------------------------------------------------------------------------------ DDPG
DELAYS = list(itertools.product([False, True], repeat=2))
_ids = lambda d: "".join("T" if x else "F" for x in d)  # noqa: E731


def _run_ddpg(delays, fn="l2", reduction="mean", est="td0", weights=False, mask=False, steps=False):
    delay_actor, delay_value = delays
    tactor, tq, actor, q = _nets()
    kw = dict(loss_function=fn, delay_actor=delay_actor, delay_value=delay_value, reduction=reduction)
    tl = TO.DDPGLoss(tactor, tq, **kw)
    al = DDPGLoss(actor, q, **kw)
    _estimator(tl, al, est)
    _perturb(tl.actor_network_params, tl.value_network_params)
    al.params = {"actor_network": _tree(tl.actor_network_params), "value_network": _tree(tl.value_network_params)}
    if delay_actor:
        al.target_params = {"actor_network": _tree(tl.target_actor_network_params)}
    if delay_value:
        al.target_params = {"value_network": _tree(tl.target_value_network_params)}
    td = _transition(weights=weights, mask=mask, steps=steps)
    batch = from_tensordict(td, np, copy=True)
    out = tl(td)
    sum(out[k].sum() for k in out.keys() if k.startswith("loss")).backward()
    aout, grads = al.value_and_grad(batch)
    _outputs(out, aout)
    _close(batch["td_error"], td["td_error"].detach().numpy(), "td_error")
    _compare_grads(tl.actor_network_params, grads["actor_network"], "actor")
    _compare_grads(tl.value_network_params, grads["value_network"], "value")
    return tl, al


@pytest.mark.parametrize("delays", DELAYS, ids=_ids)
def test_ddpg_delays_vs_torchrl(delays):
    """Every delay_actor/delay_value setting: outputs (td_error, pred_value, target_value [B] included), the
    priority written into the batch and the actor and critic gradients."""
    _run_ddpg(delays)


DDPG_MISC = [  # fn, reduction, est, weights, mask, steps
    ("smooth_l1", "sum", "td1", True, False, False),
    ("l1", "none", "tdlambda", True, False, False),
    ("l2", "mean", "td0", True, True, True),
    ("l2", "none", "td0", False, True, False),
]


@pytest.mark.parametrize("fn,reduction,est,weights,mask,steps", DDPG_MISC)
def test_ddpg_options_vs_torchrl(fn, reduction, est, weights, mask, steps):
    """Loss functions, reductions, estimators, prioritized weights, collector masks and n-step discounts."""
    _run_ddpg((True, True), fn, reduction, est, weights, mask, steps)


def test_ddpg_keys_like_torchrl():
    tl, al = _run_ddpg((False, True))
    assert al.out_keys == tl.out_keys
    assert [unravel_key(k) for k in al.in_keys] == [unravel_key(k) for k in tl.in_keys]
    al.select_out_keys("loss_actor", "pred_value")
    tl.select_out_keys("loss_actor", "pred_value")
    assert al.out_keys == tl.out_keys
    # TorchRL 0.14.1 raises "Selecting out-keys failed" unless the batch holds every in_key, including
    # ("next", "action") and priority_weight; arrayrl does not need them
    td = _transition(weights=True)
    assert sorted(al(from_tensordict(td, np, copy=True))) == ["loss_actor", "pred_value"]
    td["next", "action"] = torch.zeros(B, NA)
    assert sorted(al(from_tensordict(td, np, copy=True))) == sorted(tl(td).keys())


# ------------------------------------------------------------------------------------------------ TD3 / TD3BC
SPEC_LOW, SPEC_HIGH = [-1.0, -0.5], [1.0, 0.8]


def _td3_case(cls, delays, *, fn="smooth_l1", reduction="mean", est="td0", n_q=2, weights=False, mask=False,
              steps=False, spec=False, deactivate_vmap=False, policy_noise=0.2, noise_clip=0.5):
    delay_actor, delay_qvalue = delays
    tactor, tq, actor, q = _nets()
    if spec:
        low, high = SPEC_LOW, SPEC_HIGH
        bounds_kw = {"action_spec": Bounded(torch.tensor(low), torch.tensor(high), (NA,))}
    else:
        low, high = -1.0, 1.0
        bounds_kw = {"bounds": (low, high)}
    kw = dict(num_qvalue_nets=n_q, loss_function=fn, delay_actor=delay_actor, delay_qvalue=delay_qvalue,
              reduction=reduction, deactivate_vmap=deactivate_vmap, policy_noise=policy_noise, noise_clip=noise_clip)
    tl = getattr(TO, cls.__name__)(tactor, tq, **bounds_kw, **kw)
    al = cls(actor, q, **bounds_kw, torchrl_compat=True, **kw)
    _estimator(tl, al, est)
    _perturb(tl.actor_network_params, tl.qvalue_network_params)
    al.params = {"actor_network": _tree(tl.actor_network_params), "qvalue_network": _tree(tl.qvalue_network_params)}
    if delay_actor:
        al.target_params = {"actor_network": _tree(tl.target_actor_network_params)}
    if delay_qvalue:
        al.target_params = {"qvalue_network": _tree(tl.target_qvalue_network_params)}
    td = _transition(low, high, weights=weights, mask=mask, steps=steps)
    batch = from_tensordict(td, np, copy=True)
    with _RecordRandn() as rec:
        out = tl(td)
    sum(out[k].sum() for k in out.keys() if k.startswith("loss")).backward()
    assert [d.shape for d in rec.draws] == [(B, NA)]
    al.generator = Generator.from_noise(*rec.draws)
    aout, grads = al.value_and_grad(batch)
    assert al.generator.remaining == 0
    _outputs(out, aout)
    _close(batch["td_error"], td["td_error"].detach().numpy(), "td_error")
    _compare_grads(tl.actor_network_params, grads["actor_network"], "actor")
    _compare_grads(tl.qvalue_network_params, grads["qvalue_network"], "qvalue")
    return tl, al, out


@pytest.mark.parametrize("cls", [TD3Loss, TD3BCLoss], ids=lambda c: c.__name__)
@pytest.mark.parametrize("delays", DELAYS, ids=_ids)
def test_td3_delays_vs_torchrl(cls, delays):
    """Every delay_actor/delay_qvalue setting of TD3 and TD3BC (bounds [-1, 1])."""
    _td3_case(cls, delays)


TD3_MISC = [  # fn, reduction, est, n_q, weights, mask, steps, spec, deactivate_vmap
    ("smooth_l1", "mean", "td0", 2, False, False, False, True, False),
    ("l2", "sum", "td1", 3, True, False, False, True, False),
    ("l1", "none", "tdlambda", 1, True, False, False, False, False),
    ("smooth_l1", "mean", "td0", 2, True, True, True, False, True),
    ("l2", "none", "td0", 3, False, True, False, True, True),
]


@pytest.mark.parametrize("cls", [TD3Loss, TD3BCLoss], ids=lambda c: c.__name__)
@pytest.mark.parametrize("fn,reduction,est,n_q,weights,mask,steps,spec,deactivate_vmap", TD3_MISC)
def test_td3_options_vs_torchrl(cls, fn, reduction, est, n_q, weights, mask, steps, spec, deactivate_vmap):
    """A Bounded spec with asymmetric bounds (torchrl_compat: absolute noise), loss functions, reductions,
    estimators, ensemble sizes 1-3, prioritized weights, collector masks, n-step discounts, deactivate_vmap."""
    _td3_case(cls, (True, True), fn=fn, reduction=reduction, est=est, n_q=n_q, weights=weights, mask=mask,
              steps=steps, spec=spec, deactivate_vmap=deactivate_vmap)


def test_td3_noise_clip_binds_vs_torchrl():
    """Large policy_noise and small noise_clip: the noise clip and the action clip both bind."""
    _, al, out = _td3_case(TD3Loss, (True, True), policy_noise=2.0, noise_clip=0.3)


def test_td3_default_equals_torchrl_on_unit_bounds():
    """Without torchrl_compat (paper noise scale (high-low)/2 = 1) the numbers are TorchRL's for bounds [-1, 1]."""
    tl, al, out = _td3_case(TD3Loss, (True, True))
    al.torchrl_compat = False
    td = _transition(weights=True)
    batch = from_tensordict(td, np, copy=True)
    with _RecordRandn() as rec:
        tout = tl(td)
    al.generator = Generator.from_noise(*rec.draws)
    aout = al(batch)
    _outputs(tout, aout)


@pytest.mark.parametrize("cls", [TD3Loss, TD3BCLoss], ids=lambda c: c.__name__)
def test_td3_keys_like_torchrl(cls):
    tl, al, _ = _td3_case(cls, (True, True))
    assert al.out_keys == tl.out_keys
    assert sorted(map(str, (unravel_key(k) for k in al.in_keys))) == sorted(
        map(str, (unravel_key(k) for k in tl.in_keys)))
    np.testing.assert_array_equal(np.asarray(al.min_action), tl.min_action.numpy())
    np.testing.assert_array_equal(np.asarray(al.max_action), tl.max_action.numpy())


def test_td3_ensemble_resampling_like_torchrl():
    """A single critic is expanded as TorchRL: members U(min, max) per leaf, none equal to the critic."""
    _, _, actor, q = _nets()
    al = TD3Loss(actor, q, bounds=(-1.0, 1.0), num_qvalue_nets=3, generator=Generator(0))
    for path, leaf in flatten_params(al.params["qvalue_network"]).items():
        orig = flatten_params(q.params)[path]
        assert leaf.shape == (3,) + orig.shape
        assert np.all(leaf >= orig.min() - 1e-15) and np.all(leaf <= orig.max() + 1e-15)
        if orig.size > 1:
            assert not any(np.array_equal(leaf[i], orig) for i in range(3))


def test_zz_report_max_errors(capsys):
    """Print the worst relative errors seen above (``pytest -s`` shows them)."""
    with capsys.disabled():
        print("\nDDPG/TD3/TD3BC vs TorchRL max relative errors:",
              {k: f"{v:.1e}" for k, v in sorted(MAX_ERR.items())})
    assert MAX_ERR and all(v <= RTOL for v in MAX_ERR.values())
