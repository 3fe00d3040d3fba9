"""The policy-gradient / SAC components of ``arrayrl check`` (arrayrl.check.actor_critic): each passes against TorchRL
(and reference/ where the case has one), and each fails when one arrayrl weight is moved, when TorchRL's replayed
draws are altered, or when the state compared after the call differs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from arrayrl.check import actor_critic as A  # noqa: E402
from arrayrl.check import losses as L  # noqa: E402
from arrayrl.check._common import Errors, torch_float64  # noqa: E402
from arrayrl.tree import tree_map  # noqa: E402

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]


def _noop():
    return None


def _compare(case):
    acc = Errors()
    L.compare_with_torchrl(case, acc)
    return acc


def test_components_are_registered():
    names = set(L.CHECKS)
    for family in A.BUILDERS:
        assert f"loss.{family}" in names


@pytest.mark.parametrize("family", list(A.BUILDERS))
def test_family_passes_against_torchrl(family):
    res = L.CHECKS[f"loss.{family}"](1, np.random.default_rng(3), _noop)
    assert res["passed"] and res["cases"] == 1, res
    assert res["value_rel"] < 1e-12 and res["grad_rel"] < 1e-12


#: one case per family with fixed options that exercise the reference and (where there is one) the replayed draws
FIXED = {
    "PPOLoss": dict(actor="categorical", critic=True, advantage="gae", mask=False),
    "ClipPPOLoss": dict(actor="tanh", critic=True, advantage="given", mask=False, delay_actor=False,
                        samples_mc_entropy=3),
    "KLPENPPOLoss": dict(actor="independent", critic=False, advantage="given", mask=False),
    "A2CLoss": dict(actor="tanh", advantage="td0", mask=False, advantage_norm=None, critic_coeff=0.7),
    "ReinforceLoss": dict(actor="categorical", advantage="given", mask=False, delay_value=False, clip_value=0.1),
    "MAPPOLoss": dict(actor="tanh", value_norm=None, advantage="default"),
    "IPPOLoss": dict(actor="categorical", value_norm=None, advantage="given", clip_value=0.1),
    "SACLoss[v1]": dict(actor="tanh", alpha="learned"),
    "SACLoss[v2]": dict(actor="tanh", alpha="clamp_both", skip_done_states=True),
    "DiscreteSACLoss": dict(estimator="td0", alpha="learned"),
    "DDPGLoss": dict(delay_actor=True, delay_value=True),
    "TD3Loss": dict(bounds="spec", delay_actor=True),
    "TD3BCLoss": dict(bounds="unit", num_qvalue_nets=2),
    "REDQLoss": dict(actor="independent", estimator="td0", num_qvalue_nets=4, sub_sample_len=2, alpha="learned",
                     delay_qvalue=True),
    "CrossQLoss": dict(num_qvalue_nets=2, warmup_steps=2, smooth=False, train_critic=True, alpha="learned",
                       steps=2),
    "TQCLoss": dict(num_qvalue_nets=2, n_quantiles=4, top_quantiles_to_drop_per_net=1, skip_done_states=True,
                    alpha="clamp_both", delay_qvalue=True),
    "CQLLoss": dict(actor="tanh", estimator="td0", with_lagrange=True, lagrange_thresh=0.3, alpha="learned",
                    max_q_backup=True, deterministic_backup=False, reduction="mean", num_random=2),
    "DiscreteCQLLoss": dict(estimator="td0", delay_value=True, action_space="one_hot"),
    "BCLoss": dict(actor="deterministic", loss_function="smooth_l1", reduction="mean", shape="chunk",
                   pad_mask=True),
    "DTLoss": dict(loss_function="smooth_l1", reduction="mean", masks="both"),
    "OnlineDTLoss": dict(actor="tanh", alpha="clamp_both", samples_mc_entropy=2, reduction="mean", masks="both"),
    "RNDLoss": dict(reduction="mean", update_fraction=0.5, rms=True, obs_clip=1.5, collector=True, shape=(2, 6)),
    "GAILLoss[torchrl]": dict(use_grad_penalty=True, gp_lambda=4.0, reduction="mean", shape=(4, 3)),
    "GAILLoss[paper]": dict(use_grad_penalty=True, gp_lambda=4.0, reduction="sum", shape=(5,)),
    "DreamerModelLoss": dict(free_nats=0.5, delayed_clamp=True, lambda_kl=0.7, global_average=False,
                             reco_loss="l1", reward_loss="smooth_l1", B=2, T=3),
    "DreamerActorLoss": dict(discount_loss=True, imagination_horizon=3, N=3),
    "DreamerValueLoss": dict(discount_loss=True, value_loss="l2", gamma=0.9, B=2, H=4),
    "DreamerV3ModelLoss": dict(kl_mode="separate", unimix=0.01, reward_two_hot=True, reco_loss="l2",
                               global_average=False, free_bits=1.0, kl_alpha=0.8, lambda_continue=0.7,
                               continue_target_scale=0.9, lambda_kl=1.0),
    # symlog_mse: the two-hot critic's single leaf moved by a constant shifts all its logits alike (softmax-blind)
    "DreamerV3ValueLoss": dict(value_loss="symlog_mse", slow_critic_regularization=0.5, gamma=0.99, reduction="mean",
                               discount_loss=True, weight=True),
    "DreamerV3ActorLoss": dict(use_reinforce=True, continuation=True, entropy_bonus=0.1, return_normalization=True,
                               return_normalization_rate=0.5, return_normalization_min_scale=1.0,
                               discount_loss=True),
}


def _case(family, seed=0, **extra):
    builder, fixed = A.BUILDERS[family]
    return builder(np.random.default_rng(seed), **{**fixed, **FIXED[family], **extra})


@pytest.mark.parametrize("family", list(A.BUILDERS))
def test_one_moved_weight_fails(family):
    """A weight moved by 1e-3 in the arrayrl loss (first network, then every other one) shows in the values or the
    gradients, and against the reference where there is one."""
    with torch_float64(0):
        ok = _compare(_case(family))
        assert ok.result()["passed"], ok.result()
        nets = list(_case(family).build(L._numpy_copy)[0].params)
        for net in [n for n in nets if n != "log_alpha"]:
            acc = _compare(A.perturb_weight(_case(family), 1e-3, net))
            res = acc.result()
            assert not res["passed"] and max(res["value_rel"], res["grad_rel"]) > 1e-7, (net, res)
            if not np.isnan(ok.ref_abs) and net == nets[0]:
                assert acc.ref_abs > 1e-7, (net, res)


@pytest.mark.parametrize("family", ["PPOLoss", "ClipPPOLoss", "KLPENPPOLoss", "A2CLoss", "ReinforceLoss",
                                    "MAPPOLoss", "IPPOLoss", "DiscreteSACLoss", "REDQLoss", "CQLLoss",
                                    "DiscreteCQLLoss", "BCLoss", "DTLoss", "OnlineDTLoss", "RNDLoss",
                                    "GAILLoss[torchrl]", "GAILLoss[paper]"])
def test_reference_is_used(family):
    if L.oracle.load().module is None:
        pytest.skip("the oracle is absent")
    with torch_float64(0):
        acc = _compare(_case(family))
    assert acc.ref_abs < 1e-12, acc.result()


@pytest.mark.parametrize("family", ["ClipPPOLoss", "A2CLoss", "MAPPOLoss", "SACLoss[v1]", "SACLoss[v2]", "TD3Loss",
                                    "REDQLoss", "CrossQLoss", "TQCLoss", "CQLLoss",
                                    "OnlineDTLoss", "RNDLoss", "GAILLoss[torchrl]", "GAILLoss[paper]",
                                    "DreamerModelLoss", "DreamerActorLoss", "DreamerV3ActorLoss"])
def test_altered_draws_fail(family):
    """TorchRL's draws are replayed: scaled draws change the arrayrl numbers (so the draws matter), and a missing
    draw is an error rather than a silent fresh draw. RND's uniforms only feed a threshold (``u < fraction``), which
    a 1% scale rarely crosses: they are reflected (``1 - u``) instead."""
    alter = (lambda x: 1.0 - x) if family == "RNDLoss" else (lambda x: 1.01 * x)
    with torch_float64(0):
        case = _case(family)
        case.fix_draws = (lambda f: lambda d: [alter(x) if x.dtype.kind == "f" else x
                                               for x in (f(d) if f else d)])(case.fix_draws)
        res = _compare(case).result()
        assert not res["passed"], res
        case = _case(family)
        case.fix_draws = lambda d: d[:-1]
        try:
            res = _compare(case).result()
        except (RuntimeError, ValueError):  # the NoiseGenerator ran out of draws
            return
        assert not res["passed"], res  # no draws left at all: fresh draws, other numbers


@pytest.mark.parametrize("family,attr", [("KLPENPPOLoss", "beta"), ("SACLoss[v2]", "log_alpha"),
                                         ("REDQLoss", "log_alpha"), ("TQCLoss", "log_alpha"),
                                         ("CrossQLoss", "log_alpha"), ("CQLLoss", "log_alpha"),
                                         ("OnlineDTLoss", "log_alpha"),
                                         ("A2CLoss", "advantage_norm_state"), ("MAPPOLoss", "value_norm_state")])
def test_state_after_the_call_is_compared(family, attr):
    extra = {"A2CLoss": dict(advantage_norm="popart"), "MAPPOLoss": dict(value_norm="popart")}.get(family, {})
    with torch_float64(0):
        case = _case(family, **extra)
        after = case.after

        def broken(al, acc):
            if attr == "beta":
                al.beta = float(al.beta) * 1.01
            elif attr == "log_alpha":
                al.params = {**al.params, "log_alpha": al.params["log_alpha"] + 1e-3}
            else:
                state = dict(getattr(al, attr))
                k = sorted(state)[0]
                state[k] = np.asarray(state[k]) + 1e-3
                setattr(al, attr, state)
            after(al, acc)

        case.after = broken
        res = _compare(case).result()
    assert not res["passed"] and res["value_rel"] > 1e-6, res


def test_rnd_mask_draw_decides_the_samples():
    """RND's recorded ``torch.rand`` mask is what arrayrl trains on: the same draws shifted by half a period (mod 1)
    select other samples; with ``update_fraction=1`` TorchRL draws nothing and arrayrl takes no draw."""
    with torch_float64(0):
        case = _case("RNDLoss", reduction="none")
        case.fix_draws = lambda d: [(x + 0.5) % 1.0 for x in d]
        res = _compare(case).result()
        assert not res["passed"] and res["value_rel"] > 1e-6, res
        case = _case("RNDLoss", update_fraction=1.0)
        res = _compare(case).result()
        assert res["passed"], res


def test_gail_coefficient_conventions():
    """The paper's per-sample coefficient and TorchRL's per-element draws are different losses: TorchRL's per-element
    draws given to arrayrl in paper mode (or row-constant draws in compat mode) are rejected or give other numbers."""
    with torch_float64(0):
        case = _case("GAILLoss[torchrl]")
        build = case.build

        def paper(convert):
            al, batch = build(convert)
            al.torchrl_compat = False
            return al, batch

        case.build = paper
        with pytest.raises(ValueError, match="shape"):  # per-element draws where one per sample is expected
            _compare(case)
        case = _case("GAILLoss[paper]")
        build = case.build

        def compat(convert):
            al, batch = build(convert)
            al.torchrl_compat = True
            return al, batch

        case.build = compat
        case.fix_draws = None  # TorchRL's row-constant draws, in its per-element layout
        res = _compare(case).result()
        assert res["passed"], res  # the same numbers: row-constant per-element draws are the per-sample convention
        assert res["ref_abs"] < 1e-12 or np.isnan(res["ref_abs"]), res


def test_redq_subset_draw_is_replayed():
    """REDQ's recorded randperm picks the target critics: another permutation gives other numbers."""
    with torch_float64(0):
        case = _case("REDQLoss", sub_sample_len=1)
        fix = case.fix_draws
        case.fix_draws = lambda d: [x[::-1].copy() if x.dtype.kind == "i" else x for x in fix(d)]
        res = _compare(case).result()
    assert not res["passed"] and res["value_rel"] > 1e-6, res


def test_cql_each_draw_is_replayed():
    """Each of CQL's recorded draws (a' (soft backup), the K backup actions (max_q_backup), the uniform actions,
    pi(.|s) and pi(.|s') K times, a_bc, a~) reaches the arrayrl loss: altering any one alone gives other numbers."""
    with torch_float64(0):
        for mqb, i in [(False, i) for i in range(6)] + [(True, 1)]:
            case = _case("CQLLoss", max_q_backup=mqb)
            fix = case.fix_draws
            case.fix_draws = lambda d, i=i: [x * 1.01 if j == i else x for j, x in enumerate(fix(d))]
            res = _compare(case).result()
            assert not res["passed"] and res["value_rel"] > 1e-8, (mqb, i, res)


@pytest.mark.parametrize("step", [0, 2])
def test_crossq_state_is_compared_at_every_call(step):
    """CrossQ's running statistics after each committed call are compared with TorchRL's buffers: moved statistics
    (after the first call, or at the last of three calls) fail."""
    with torch_float64(0):
        case = _case("CrossQLoss", steps=3)
        calls = [0]
        orig = type(case.build(L._numpy_copy)[0]).commit_state

        def commit(self):
            out = orig(self)
            if calls[0] == step:
                self.state = tree_map(lambda x: np.asarray(x) + 1e-3 if np.asarray(x).dtype.kind == "f" else x,
                                      self.state)
            calls[0] += 1
            return out

        build = case.build

        def patched(convert):
            al, batch = build(convert)
            al.commit_state = commit.__get__(al)
            return al, batch

        case.build = patched
        res = _compare(case).result()
    assert calls[0] == 3
    assert not res["passed"] and res["value_rel"] > 1e-6, res


def test_crossq_eval_statistics_differ():
    """The critic loss in training vs evaluation statistics gives other numbers (the option is honoured)."""
    with torch_float64(0):
        case = _case("CrossQLoss", train_critic=False, steps=1)
        build = case.build

        def flipped(convert):
            al, batch = build(convert)
            al.train_critic = True
            return al, batch

        case.build = flipped
        res = _compare(case).result()
    assert not res["passed"], res
