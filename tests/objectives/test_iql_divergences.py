"""IQL divergences from TorchRL 0.14.1 (docs/divergences.md, "IQL's critic loss: n-step discount and masks").

TorchRL's ``qvalue_loss`` selects ``("next", ...)``, the actor's inputs and the action before the value estimator
runs. That drops ``steps_to_next_obs`` (``y = r + gamma V(s')`` for an n-step batch instead of
``r + gamma**n V(s')``) and, in ``IQLLoss`` (not ``DiscreteIQLLoss``), the ``("collector", "mask")`` of
``loss_qvalue``. arrayrl does both right by default; ``torchrl_compat=True`` reproduces TorchRL.

Evidence: (1) algebraic, without torch (n-step ``gamma`` equals an estimator built with ``gamma**n``; a masked
``reduction="none"`` loss equals the unmasked one with zeros at the masked rows); (2) the paper's numbers from
``reference/losses`` (per-sample loops) fed TorchRL's network outputs, and TorchRL's own numbers from the installed
torchrl on copied weights (``arrayrl.check.losses.iql_case``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import arrayrl.objectives as O
from arrayrl.distributions import Categorical, TanhNormal
from arrayrl.nn import MLP, KeyedModule, ProbabilisticActor, ValueOperator
from tests.objectives.torchrl_helpers import normal_actor

GAMMA, N_STEPS, B = 0.9, 3, 7
MASK = np.array([True, False, True, True, False, True, False])[:, None]
TERMS = ("loss_actor", "loss_qvalue", "loss_value")


def _loss(discrete, **kw):
    nobs, nA = 3, 2 if discrete is None else 4
    if discrete is None:
        actor = normal_actor(nobs, nA, TanhNormal)
        q = ValueOperator(MLP(in_features=nobs + nA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    else:
        actor = ProbabilisticActor(KeyedModule(MLP(in_features=nobs, out_features=nA, num_cells=[8]),
                                               in_keys=["observation"], out_keys=["logits"]),
                                   in_keys=["logits"], distribution_class=Categorical)
        q = ValueOperator(MLP(in_features=nobs, out_features=nA, num_cells=[8]), in_keys=["observation"],
                          out_keys=["state_action_value"])
    v = ValueOperator(MLP(in_features=nobs, out_features=1, num_cells=[8]), in_keys=["observation"])
    cls = O.IQLLoss if discrete is None else O.DiscreteIQLLoss
    extra = {} if discrete is None else {"action_space": discrete}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = cls(actor, q, v, reduction="none", scalar_output_mode="exclude", **extra, **kw)
    return loss.make_value_estimator("td0", gamma=GAMMA)


def _batch(rng, discrete):
    term = rng.uniform(size=(B, 1)) < 0.3
    action = rng.uniform(-0.9, 0.9, (B, 2)) if discrete is None else rng.integers(0, 4, B)
    return {"observation": rng.normal(size=(B, 3)), "action": action,
            "next": {"observation": rng.normal(size=(B, 3)), "reward": rng.normal(size=(B, 1)),
                     "done": term, "terminated": term}}


# ------------------------------------------------------------------------------------------------ algebraic
@pytest.mark.parametrize("discrete", [None, "categorical"])
def test_nstep_batches_discount_by_gamma_to_the_n(discrete):
    """Default: steps_to_next_obs = n gives the target of a TD(0) estimator with gamma**n; compat: that of gamma."""
    loss = _loss(discrete)
    batch = _batch(np.random.default_rng(0), discrete)
    plain = loss(batch)["loss_qvalue"]
    nstep = dict(batch, steps_to_next_obs=np.full((B, 1), N_STEPS))
    got = loss(nstep)["loss_qvalue"]
    loss.make_value_estimator("td0", gamma=GAMMA**N_STEPS)
    np.testing.assert_allclose(got, loss(batch)["loss_qvalue"], rtol=1e-12)
    assert not np.allclose(got, plain)  # the batch has non-terminal rows: gamma**n differs from gamma
    loss.make_value_estimator("td0", gamma=GAMMA)
    loss.torchrl_compat = True
    np.testing.assert_allclose(loss(nstep)["loss_qvalue"], plain, rtol=1e-12)


@pytest.mark.parametrize("discrete", [None, "categorical"])
def test_collector_mask_applies_to_the_critic_loss(discrete):
    """Default: every term is zero at the masked rows. Compat: IQLLoss's loss_qvalue ignores the mask (TorchRL),
    DiscreteIQLLoss's keeps it (TorchRL too)."""
    loss = _loss(discrete)
    batch = _batch(np.random.default_rng(1), discrete)
    full = loss(batch)
    masked = dict(batch, collector={"mask": MASK})
    out = loss(masked)
    for k in TERMS:
        np.testing.assert_allclose(out[k], np.where(MASK[:, 0], full[k], 0.0), rtol=1e-12, err_msg=k)
    loss.torchrl_compat = True
    compat = loss(masked)
    np.testing.assert_allclose(compat["loss_qvalue"], full["loss_qvalue"] if discrete is None else out["loss_qvalue"],
                               rtol=1e-12)
    for k in ("loss_actor", "loss_value"):
        np.testing.assert_allclose(compat[k], out[k], rtol=1e-12, err_msg=k)


def test_torchrl_compat_is_a_flag():
    assert _loss("categorical", torchrl_compat=True).torchrl_compat is True
    with pytest.raises(TypeError, match="torchrl_compat: expected True or False"):
        _loss(None, torchrl_compat="yes")


# ------------------------------------------------------------------------------------------------ vs TorchRL
def _torchrl_case(discrete, gamma):
    from arrayrl.check.losses import iql_case

    return iql_case(np.random.default_rng(3), discrete=discrete, estimator="td0", gamma=gamma, reduction="none",
                    num_qvalue_nets=2, loss_function="l2", expectile=0.7, temperature=1.0, B=B)


def _outputs(td_out):
    return {k: np.asarray(td_out.get(k).detach().numpy()) for k in TERMS}


@pytest.mark.torchrl
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("discrete", [None, "categorical", "one_hot"])
def test_vs_torchrl_nstep(discrete):
    """Paper: reference/losses with gamma**n; torchrl_compat=True: TorchRL's numbers (gamma)."""
    pytest.importorskip("torchrl")
    import torch

    from arrayrl.check._common import torch_float64
    from arrayrl.check.losses import _numpy_copy

    with torch_float64(seed=0):
        case = _torchrl_case(discrete, GAMMA)
    with torch_float64(seed=0):  # the same networks and batch, the discount of an n-step batch
        paper = _torchrl_case(discrete, GAMMA**N_STEPS).reference()
    with torch_float64():
        al, batch = case.build(_numpy_copy)
        steps = np.full((B, 1), N_STEPS)
        batch["steps_to_next_obs"] = steps
        case.td["steps_to_next_obs"] = torch.as_tensor(steps)
        want = _outputs(case.torchrl_loss(case.td))
        out = al(batch)
        np.testing.assert_allclose(out["loss_qvalue"], paper["loss_qvalue"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(batch["td_error"], paper["td_error"], rtol=1e-9, atol=1e-12)
        assert not np.allclose(out["loss_qvalue"], want["loss_qvalue"])  # TorchRL discounts by gamma
        al.torchrl_compat = True
        out = al(batch)
        for k in TERMS:
            np.testing.assert_allclose(out[k], want[k], rtol=1e-9, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(batch["td_error"], case.td["td_error"].numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.torchrl
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("discrete", [None, "categorical", "one_hot"])
def test_vs_torchrl_collector_mask(discrete):
    """Paper: reference/losses per-sample terms, zero at masked rows; torchrl_compat=True: TorchRL's numbers (its
    IQLLoss leaves loss_qvalue unmasked, its DiscreteIQLLoss masks it)."""
    pytest.importorskip("torchrl")
    import torch

    from arrayrl.check._common import torch_float64
    from arrayrl.check.losses import _numpy_copy

    with torch_float64(seed=0):
        case = _torchrl_case(discrete, GAMMA)
    with torch_float64():
        ref = case.reference()  # unmasked per-sample terms
        al, batch = case.build(_numpy_copy)
        batch["collector"] = {"mask": MASK}
        case.td["collector", "mask"] = torch.as_tensor(MASK)
        want = _outputs(case.torchrl_loss(case.td))
        out = al(batch)
        for k in TERMS:
            np.testing.assert_allclose(out[k], np.where(MASK[:, 0], ref[k], 0.0), rtol=1e-9, atol=1e-12, err_msg=k)
        torchrl_masks_q = discrete is not None
        np.testing.assert_allclose(want["loss_qvalue"], np.where(MASK[:, 0], ref["loss_qvalue"], 0.0)
                                   if torchrl_masks_q else ref["loss_qvalue"], rtol=1e-9, atol=1e-12)
        al.torchrl_compat = True
        out = al(batch)
        for k in TERMS:
            np.testing.assert_allclose(out[k], want[k], rtol=1e-9, atol=1e-12, err_msg=k)
