"""The fast paths of the TD3 / TD3+BC / SAC v2 losses agree with their full computation.

``value_and_grad(batch, terms=[...])`` computes only the requested term group (``TermSelection``), and TD3's actor
term differentiates critic 0 alone. The reference in every test is the full call (``terms=None``), whose values and
gradients the TorchRL cross-checks (``test_ddpg_td3_torchrl.py``, ``test_sac_torchrl.py``) compare with TorchRL
0.14.1. Networks: the recipes' (``arrayrl.nn.MLP`` critics stacked on a leading member axis), small.
"""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl import Generator
from arrayrl.objectives import SACLoss, TD3BCLoss, TD3Loss
from arrayrl.objectives import td3 as td3_module
from arrayrl.recipes import sac_pendulum, td3_pendulum
from arrayrl.recipes._continuous import qvalue_network
from arrayrl.tree import tree_leaves, tree_paths

N_OBS, N_ACT, B = 3, 2, 16
LOW, HIGH = np.full(N_ACT, -2.0, np.float32), np.full(N_ACT, 2.0, np.float32)


def _batch(seed: int = 0) -> dict:
    r = np.random.default_rng(seed)
    f = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"observation": f(B, N_OBS), "action": r.uniform(-2, 2, (B, N_ACT)).astype(np.float32),
            "next": {"observation": f(B, N_OBS), "reward": f(B, 1), "done": np.zeros((B, 1), bool),
                     "terminated": r.uniform(size=(B, 1)) < 0.2}}


def _critics(gen, n):
    return [qvalue_network(N_OBS, N_ACT, (8, 8), gen, np, None) for _ in range(n)]


def _td3(kind: str = "td3", n: int = 2):
    gen = Generator(1, xp=np)
    opts = td3_pendulum.Options(hidden_sizes=(8, 8))
    actor = td3_pendulum.make_actor(opts, N_OBS, LOW, HIGH, gen, np, None)
    cls = TD3Loss if kind == "td3" else TD3BCLoss
    loss = cls(actor, _critics(gen, n), bounds=(LOW, HIGH), num_qvalue_nets=n, loss_function="l2",
               generator=Generator(7, xp=np))
    loss.make_value_estimator("td0", gamma=0.9)
    return loss


def _sac(n: int = 2, fixed_alpha: bool = False):
    gen = Generator(1, xp=np)
    opts = sac_pendulum.Options(hidden_sizes=(8, 8))
    actor = sac_pendulum.make_actor(opts, N_OBS, LOW, HIGH, gen, np, None)
    loss = SACLoss(actor, _critics(gen, n), num_qvalue_nets=n, loss_function="l2", fixed_alpha=fixed_alpha,
                   alpha_init=0.5, target_entropy=-float(N_ACT), generator=Generator(7, xp=np))
    loss.make_value_estimator("td0", gamma=0.9)
    return loss


def _assert_tree_close(a, b, what):
    pa, pb = dict(tree_paths(a)), dict(tree_paths(b))
    assert pa.keys() == pb.keys(), what
    for k in pa:
        np.testing.assert_allclose(np.asarray(pa[k]), np.asarray(pb[k]), rtol=1e-6, atol=1e-7, err_msg=f"{what} {k}")


TD3_GROUPS = {"actor": (["loss_actor"], "actor_network", ("loss_actor", "state_action_value_actor")),
              "critic": (["loss_qvalue"], "qvalue_network",
                         ("loss_qvalue", "pred_value", "next_state_value", "target_value"))}


@pytest.mark.parametrize("kind", ["td3", "td3bc"])
@pytest.mark.parametrize("group", ["actor", "critic"])
def test_td3_terms_equal_the_full_call(kind, group):
    """Outputs and the trained network's gradient of a one-term call equal those of the full call; the other
    group's outputs are absent and its network's gradient is zero."""
    terms, net, keys = TD3_GROUPS[group]
    if kind == "td3bc" and group == "actor":
        keys = keys + ("bc_loss", "lmbd")
    full_loss, part_loss = _td3(kind), _td3(kind)
    full_out, full_grads = full_loss.value_and_grad(_batch(), terms=None)
    part_batch = _batch()
    out, grads = part_loss.value_and_grad(part_batch, terms=terms)
    assert set(out) == set(keys)
    for k in keys:
        np.testing.assert_allclose(out[k], full_out[k], rtol=1e-6, atol=1e-7, err_msg=k)
    _assert_tree_close(grads[net], full_grads[net], net)
    other = "qvalue_network" if net == "actor_network" else "actor_network"
    assert all(np.all(g == 0) for g in tree_leaves(grads[other]))
    assert ("td_error" in part_batch) == (group == "critic")


@pytest.mark.parametrize("terms", [["loss_actor"], ["loss_qvalue"], ["loss_actor", "loss_alpha"], ["loss_alpha"]])
def test_sac_terms_equal_the_full_call(terms):
    """SAC v2: a one-group call gives the full call's outputs and gradients of that group."""
    actor_group = "loss_qvalue" not in terms
    keys = {"loss_actor", "loss_alpha", "alpha", "entropy"} if actor_group else {"loss_qvalue", "alpha"}
    full_out, full_grads = _sac().value_and_grad(_batch(), terms=None)
    out, grads = _sac().value_and_grad(_batch(), terms=terms)
    assert set(out) == keys
    for k in keys:
        np.testing.assert_allclose(out[k], full_out[k], rtol=1e-6, atol=1e-7, err_msg=k)
    # loss_alpha has no actor gradient and loss_actor none for log_alpha (alpha enters it without gradient), so each
    # term's network gradient is the full call's
    trained = {"loss_actor": "actor_network", "loss_alpha": "log_alpha", "loss_qvalue": "qvalue_network"}
    for net in (trained[t] for t in terms):
        _assert_tree_close(grads[net], full_grads[net], net)


@pytest.mark.parametrize("make,terms", [(_td3, ["loss_actor"]), (_td3, ["loss_qvalue"]),
                                        (_sac, ["loss_actor", "loss_alpha"]), (_sac, ["loss_qvalue"])])
def test_terms_keep_the_generator_stream(make, terms):
    """After a one-term call the next full call sees the same draws as after a full call (the skipped term's draw
    is taken)."""
    a, b = make(), make()
    a.value_and_grad(_batch(0))
    b.value_and_grad(_batch(0), terms=terms)
    out_a, _ = a.value_and_grad(_batch(1))
    out_b, _ = b.value_and_grad(_batch(1))
    for k in out_a:
        np.testing.assert_array_equal(out_a[k], out_b[k], err_msg=k)


def test_td3_skipped_terms_run_no_critic(monkeypatch):
    """What the ensemble runs in each call: the critic term runs the target and online ensembles (N members each);
    the actor term runs critic 0 on the taped action and critics 1..N-1 on the raw action -- nothing else."""
    from arrayrl.autodiff.core import is_tensor

    calls = []
    real = td3_module.ensemble_apply

    def spy(module, params, batch, key, n, **kw):
        calls.append((n, is_tensor(batch["action"]), any(is_tensor(x) for x in tree_leaves(params))))
        return real(module, params, batch, key, n, **kw)

    monkeypatch.setattr(td3_module, "ensemble_apply", spy)
    loss = _td3(n=3)
    loss.value_and_grad(_batch(), terms=["loss_qvalue"])
    assert calls == [(3, False, False), (3, False, True)]  # target critics at s', online critics at (s, a)
    calls.clear()
    out, _ = loss.value_and_grad(_batch(), terms=["loss_actor"])
    assert calls == [(1, True, False), (2, False, False)]
    assert out["state_action_value_actor"].shape == (3, B)


def test_td3_actor_metadata_and_gradient_equal_the_whole_ensemble():
    """``state_action_value_actor`` ``[N, B]`` and the actor gradient of the split pass equal those of one pass of
    the whole ensemble on the taped action (the pre-split computation, rebuilt here from the pieces)."""
    from arrayrl.autodiff import value_and_grad
    from arrayrl import namespace_of
    from arrayrl.objectives.ddpg import _sg_tree
    from arrayrl.objectives.utils import stop_gradient

    loss = _td3(n=3)
    batch = _batch()
    out, grads = loss.value_and_grad(batch, terms=["loss_actor"])

    def reference(actor_params):
        with_action, _ = loss._policy(actor_params, batch)
        q = loss._critics(_sg_tree(loss.params["qvalue_network"]), with_action)  # [N, B], all members taped
        xp = namespace_of(q)
        return -(xp.sum(q[0]) / B), stop_gradient(q)  # loss_actor = mean_b(-Q_0)

    (_, q_ref), g_ref = value_and_grad(reference, has_aux=True)(loss.params["actor_network"])
    np.testing.assert_allclose(out["state_action_value_actor"], np.asarray(q_ref), rtol=1e-6, atol=1e-7)
    _assert_tree_close(grads["actor_network"], g_ref, "actor_network")


def test_forward_and_no_terms_compute_everything():
    """``forward`` and ``value_and_grad`` without ``terms`` return every output (no selection left over)."""
    for loss in (_td3(), _sac()):
        loss.value_and_grad(_batch(), terms=["loss_qvalue"])
        assert set(loss(_batch())) == set(loss._all_out_keys())
        assert set(loss.value_and_grad(_batch())[0]) == set(loss._all_out_keys())
