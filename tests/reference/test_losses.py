"""Self-tests of reference.losses: hand-computed goldens and cross-checks against TorchRL 0.14.1 loss modules
(float64 networks; the reference is fed the networks' OUTPUTS)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reference.distributions import tanh_normal_log_prob
from reference.losses import common, distributional, dqn, iql, qmixer

# --------------------------------------------------------------------------------------------------------------
# common
# --------------------------------------------------------------------------------------------------------------


def test_distance_and_reduce_hand():
    a, b = np.array([0.0, 0.0, 0.0]), np.array([0.5, -2.0, 1.0])
    np.testing.assert_allclose(common.distance(a, b, "l2"), [0.25, 4.0, 1.0])
    np.testing.assert_allclose(common.distance(a, b, "l1"), [0.5, 2.0, 1.0])
    np.testing.assert_allclose(common.distance(a, b, "smooth_l1"), [0.125, 1.5, 0.5])  # |x|=1 -> 1 - .5
    l, w = np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 3.0])
    assert common.reduce(l, "mean") == 2.0
    assert common.reduce(l, "sum") == 6.0
    assert common.reduce(l, "mean", weights=w) == (1 + 9) / 4
    assert common.reduce(l, "sum", weights=w) == 10.0
    np.testing.assert_allclose(common.reduce(l, "none", weights=w), [1.0, 0.0, 9.0])
    m = np.array([True, False, True])
    assert common.reduce(l, "mean", mask=m) == 2.0
    assert common.reduce(l, "mean", mask=np.zeros(3, bool)) == 0.0  # sum(mask).clamp_min(1)
    np.testing.assert_allclose(common.reduce(l, "none", mask=m), [1.0, 0.0, 3.0])
    with pytest.raises(ValueError, match="weights"):
        common.reduce(l, "mean", weights=np.ones(2))


def test_chosen_action_value():
    q = np.array([[1.0, 5.0, 3.0], [2.0, 0.0, 7.0]])
    np.testing.assert_allclose(common.chosen_action_value(q, np.array([1, 2])), [5.0, 7.0])
    np.testing.assert_allclose(common.chosen_action_value(q, np.array([[1], [2]])), [5.0, 7.0])
    np.testing.assert_allclose(common.chosen_action_value(q, np.array([[0, 1, 0], [1, 0, 0]])), [5.0, 2.0])
    assert common.greedy_index([1.0, 3.0, 3.0]) == 1


# --------------------------------------------------------------------------------------------------------------
# DQN
# --------------------------------------------------------------------------------------------------------------


def test_dqn_hand():
    q = np.array([[1.0, 2.0], [0.5, -1.0]])
    nq_t = np.array([[3.0, 4.0], [10.0, 0.0]])
    nq_o = np.array([[9.0, 0.0], [0.0, 1.0]])
    r, term = np.array([1.0, 2.0]), np.array([False, True])
    # DQN: y = [1 + .5*4, 2] = [3, 2]; pred (a = [1, 0]) = [2, .5]; l2 = [1, 2.25] -> mean 1.625
    out = dqn.dqn_loss(q, np.array([1, 0]), r, nq_t, term, gamma=0.5)
    np.testing.assert_allclose(out["target"], [3.0, 2.0])
    np.testing.assert_allclose(out["td_error"], [1.0, 2.25])
    np.testing.assert_allclose(out["abs_td_error"], [1.0, 1.5])
    assert out["loss"] == pytest.approx(1.625, abs=1e-15)
    # Double DQN: argmax online at s' = 0 -> y0 = 1 + .5*3 = 2.5; (2 - 2.5)^2 = .25
    out = dqn.dqn_loss(q, np.array([1, 0]), r, nq_t, term, gamma=0.5, next_q_online=nq_o, double_dqn=True,
                       reduction="none")
    np.testing.assert_allclose(out["loss"], [0.25, 2.25])
    # smooth_l1 + weights [1, 3]: per = [.5 (|x|=1), 1.0 (|1.5| - .5)] -> (.5 + 3) / 4
    out = dqn.dqn_loss(q, np.array([[0, 1], [1, 0]]), r, nq_t, term, gamma=0.5, loss_function="smooth_l1",
                       weights=np.array([1.0, 3.0]))
    assert out["loss"] == pytest.approx(3.5 / 4, abs=1e-15)
    # n-step: gamma^2 = .25 -> y0 = 1 + .25*4 = 2
    out = dqn.dqn_loss(q, np.array([1, 0]), r, nq_t, term, gamma=0.5, steps_to_next_obs=np.array([2, 1]))
    np.testing.assert_allclose(out["target"], [2.0, 2.0])


def _f64(torch, x):
    """A float64 0-d gamma: TorchRL's estimators store ``torch.tensor(gamma)`` (default dtype, float32), so a
    Python-float gamma would be applied rounded to float32 (~1e-8 relative on float64 losses)."""
    return torch.tensor(x, dtype=torch.float64)


def _perturb_(params, torch, scale=0.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for leaf in params.values(True, True):
        leaf.data.add_(scale * torch.randn(leaf.shape, generator=gen, dtype=leaf.dtype))


def _apply(module, params, *args):
    with params.to_module(module):
        return module(*args)


@pytest.mark.torchrl
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("action_space", ["categorical", "one_hot"])
@pytest.mark.parametrize("double_dqn", [False, True])
@pytest.mark.parametrize("loss_function, reduction, weighted",
                         [("l2", "mean", False), ("smooth_l1", "mean", True), ("l1", "sum", True),
                          ("l2", "none", False)])
def test_dqn_vs_torchrl(action_space, double_dqn, loss_function, reduction, weighted):
    import torch
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.modules import QValueActor
    from torchrl.objectives import DQNLoss

    torch.manual_seed(0)
    B, O, A = 6, 3, 4
    net = torch.nn.Sequential(torch.nn.Linear(O, 8), torch.nn.Tanh(), torch.nn.Linear(8, A)).double()
    actor = QValueActor(TensorDictModule(net, ["observation"], ["action_value"]), in_keys=["observation"],
                        action_space=action_space)
    loss = DQNLoss(actor, action_space=action_space, double_dqn=double_dqn, delay_value=True,
                   loss_function=loss_function, reduction=reduction)
    loss.make_value_estimator(gamma=_f64(torch, 0.9))
    _perturb_(loss.target_value_network_params, torch)

    obs, nobs = torch.randn(B, O, dtype=torch.float64), torch.randn(B, O, dtype=torch.float64)
    idx = torch.randint(0, A, (B,))
    action = idx if action_space == "categorical" else torch.nn.functional.one_hot(idx, A)
    done = torch.tensor([False, True, False, True, False, True]).unsqueeze(-1)
    term = torch.tensor([False, True, False, False, False, False]).unsqueeze(-1)
    reward = torch.randn(B, 1, dtype=torch.float64)
    weights = torch.rand(B, dtype=torch.float64) + 0.1
    data = {"observation": obs, "action": action,
            "next": {"observation": nobs, "reward": reward, "done": done, "terminated": term}}
    if weighted:
        data["priority_weight"] = weights
    td = TensorDict(data, [B])
    out = loss(td)

    with torch.no_grad():
        q = net(obs).numpy()
        nq_o = net(nobs).numpy()
        nq_t = _apply(loss.value_network, loss.target_value_network_params,
                      TensorDict({"observation": nobs}, [B]))["action_value"].numpy()
    ref = dqn.dqn_loss(q, action.numpy(), reward.numpy(), nq_t, term.numpy(), gamma=0.9, next_q_online=nq_o,
                       double_dqn=double_dqn, loss_function=loss_function, reduction=reduction,
                       weights=weights.numpy() if weighted else None, action_space=action_space)
    np.testing.assert_allclose(ref["loss"], out["loss"].detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ref["td_error"], td["td_error"].squeeze(-1).numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# C51
# --------------------------------------------------------------------------------------------------------------


def test_c51_projection_hand():
    support = np.array([-1.0, 0.0, 1.0])  # dz = 1
    p = np.array([[0.2, 0.3, 0.5]])
    # r = .5, gamma = .5: Tz = [0, .5, 1] -> b = [1, 1.5, 2]
    # atom 0 (b=1, integer): m1 += .2 ; atom 1: m1 += .3*.5, m2 += .3*.5 ; atom 2 (b=2): m2 += .5
    m = distributional.c51_projection(p, np.array([0.5]), np.array([False]), support, discount=0.5)
    np.testing.assert_allclose(m, [[0.0, 0.35, 0.65]], atol=1e-15)
    # terminated: Tz = r = .5 for every atom -> all mass split between atoms 1 and 2
    m = distributional.c51_projection(p, np.array([0.5]), np.array([True]), support, discount=0.5)
    np.testing.assert_allclose(m, [[0.0, 0.5, 0.5]], atol=1e-15)
    # clipping: r = 5 -> Tz = Vmax for every atom
    m = distributional.c51_projection(p, np.array([5.0]), np.array([False]), support, discount=0.9)
    np.testing.assert_allclose(m, [[0.0, 0.0, 1.0]], atol=1e-15)
    # r = -5 -> Tz = Vmin (b = 0, l = u = 0)
    m = distributional.c51_projection(p, np.array([-5.0]), np.array([False]), support, discount=0.9)
    np.testing.assert_allclose(m, [[1.0, 0.0, 0.0]], atol=1e-15)
    with pytest.raises(ValueError, match="support"):
        distributional.c51_projection(p, np.array([0.0]), np.array([False]), np.array([0.0, 1.0, 3.0]), discount=1.0)


def test_c51_loss_hand():
    support = np.array([-1.0, 0.0, 1.0])
    # one sample, 2 actions; online next probs make action 1 greedy (E = [-.6, .6])
    nlp_online = np.log(np.array([[[0.8, 0.2], [0.0 + 1e-300, 0.0 + 1e-300], [0.2, 0.8]]]))
    nlp_online[0, 1, :] = np.log(np.array([1e-300, 1e-300]))
    nlp_target = np.log(np.array([[[0.1, 0.2], [0.1, 0.3], [0.8, 0.5]]]))
    lp = np.log(np.array([[[0.3, 0.25], [0.3, 0.25], [0.4, 0.5]]]))
    out = distributional.distributional_dqn_loss(lp, np.array([0]), np.array([0.5]), np.array([False]), nlp_target,
                                                 support, gamma=0.5, next_log_probs_online=nlp_online)
    assert out["next_action"][0] == 1
    # p = target probs of action 1 = [.2, .3, .5] -> m = [0, .35, .65] (see projection test)
    np.testing.assert_allclose(out["target_distribution"], [[0.0, 0.35, 0.65]], atol=1e-15)
    expected = -(0.35 * math.log(0.3) + 0.65 * math.log(0.4))
    assert out["loss"] == pytest.approx(expected, abs=1e-14)
    # paper variant (argmax from the target net): E_target = [.7, .3] -> action 0, p = [.1, .1, .8]
    out = distributional.distributional_dqn_loss(lp, np.array([0]), np.array([0.5]), np.array([False]), nlp_target,
                                                 support, gamma=0.5, double_dqn=False)
    assert out["next_action"][0] == 0
    # Tz = [0, .5, 1] -> m1 = .1 + .05, m2 = .05 + .8
    np.testing.assert_allclose(out["target_distribution"], [[0.0, 0.15, 0.85]], atol=1e-15)


@pytest.mark.torchrl
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("action_space", ["categorical", "one_hot"])
@pytest.mark.parametrize("weighted", [False, True])
def test_distributional_vs_torchrl(action_space, weighted):
    import torch
    from tensordict import TensorDict
    from torchrl.modules import DistributionalQValueActor
    from torchrl.objectives import DistributionalDQNLoss

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # TorchRL builds the projection buffer with the default dtype
    try:
        torch.manual_seed(1)
        B, O, A, atoms = 7, 3, 3, 5
        support = torch.linspace(-2.0, 2.0, atoms)

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(O, atoms * A)

            def forward(self, x):
                return self.lin(x).view(*x.shape[:-1], atoms, A)

        net = Net()
        actor = DistributionalQValueActor(net, support=support, in_keys=["observation"], action_space=action_space)
        loss = DistributionalDQNLoss(actor, gamma=0.8, delay_value=True)
        _perturb_(loss.target_value_network_params, torch, scale=0.7)
        obs, nobs = torch.randn(B, O), torch.randn(B, O)
        idx = torch.randint(0, A, (B,))
        action = idx if action_space == "categorical" else torch.nn.functional.one_hot(idx, A)
        # large rewards hit the clipping; integer-valued Tz hits the l == u branch
        reward = torch.tensor([0.3, -5.0, 5.0, 0.0, 1.0, -0.7, 0.25]).unsqueeze(-1)
        done = torch.tensor([False, False, True, True, False, False, True]).unsqueeze(-1)
        term = torch.tensor([False, False, True, False, False, False, False]).unsqueeze(-1)
        weights = torch.rand(B) + 0.2
        data = {"observation": obs, "action": action,
                "next": {"observation": nobs, "reward": reward, "done": done, "terminated": term}}
        if weighted:
            data["priority_weight"] = weights
        td = TensorDict(data, [B])
        out = loss(td)
        with torch.no_grad():
            lp = torch.log_softmax(net(obs), -2).numpy()
            nlp_o = torch.log_softmax(net(nobs), -2).numpy()
            with loss.target_value_network_params.to_module(loss.value_network):
                nlp_t = loss.value_network(TensorDict({"observation": nobs}, [B]))["action_value"].numpy()
    finally:
        torch.set_default_dtype(old)
    ref = distributional.distributional_dqn_loss(lp, action.numpy(), reward.numpy(), term.numpy(), nlp_t,
                                                 support.numpy(), gamma=0.8, next_log_probs_online=nlp_o,
                                                 weights=weights.numpy() if weighted else None,
                                                 action_space=action_space)
    np.testing.assert_allclose(ref["loss"], out["loss"].detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ref["td_error"], td["td_error"].squeeze(-1).numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# QMixer / VDN
# --------------------------------------------------------------------------------------------------------------


def _tiny_qmix_params():
    # state dim 1 (s = 1), embed 2, 2 agents
    return {
        "hyper_w_1.weight": np.array([[1.0], [-2.0], [0.5], [1.0]]),  # -> |[1, -2, .5, 1]| = W1[[1, 2], [.5, 1]]
        "hyper_w_1.bias": np.zeros(4),
        "hyper_b_1.weight": np.array([[0.0], [0.0]]), "hyper_b_1.bias": np.array([0.0, -3.0]),
        "hyper_w_final.weight": np.array([[-1.0], [2.0]]), "hyper_w_final.bias": np.zeros(2),  # Wf = [1, 2]
        "V.0.weight": np.array([[1.0], [-1.0]]), "V.0.bias": np.zeros(2),  # relu([1, -1]) = [1, 0]
        "V.2.weight": np.array([[3.0, 5.0]]), "V.2.bias": np.array([0.5]),  # V = 3.5
    }


def test_qmix_hand():
    q = np.array([[[1.0], [2.0]]])  # q = [1, 2]
    # h_pre = q @ W1 + b1 = [1*1 + 2*.5, 1*2 + 2*1] + [0, -3] = [2, 1]; elu -> [2, 1]
    # Q_tot = 2*1 + 1*2 + 3.5 = 7.5
    np.testing.assert_allclose(qmixer.qmix_mix(q, np.array([[1.0]]), _tiny_qmix_params()), [[7.5]], atol=1e-15)
    # q = [-3, 0]: h_pre = [-3, -6 - 3] -> elu = [e^-3 - 1, e^-9 - 1]
    expected = (math.exp(-3) - 1) * 1 + (math.exp(-9) - 1) * 2 + 3.5
    np.testing.assert_allclose(qmixer.qmix_mix(np.array([[[-3.0], [0.0]]]), np.array([[1.0]]), _tiny_qmix_params()),
                               [[expected]], atol=1e-15)
    np.testing.assert_allclose(qmixer.vdn_mix(np.array([[[1.0], [2.0]], [[-1.0], [0.5]]])), [[3.0], [-0.5]])


def test_qmixer_loss_hand_vdn():
    local_q = np.array([[[1.0, 2.0], [0.0, 3.0]]])  # 1 sample, 2 agents, 2 actions
    next_q = np.array([[[4.0, 1.0], [0.0, -1.0]]])  # max = [4, 0] -> VDN 4
    # chosen a = [0, 1] -> Q_tot = 1 + 3 = 4; y = 1 + .5*4 = 3; l2 = 1
    out = qmixer.qmixer_loss(local_q, np.array([[0, 1]]), np.array([1.0]), next_q, np.array([False]), gamma=0.5)
    np.testing.assert_allclose([out["q_tot"][0], out["target"][0], out["loss"]], [4.0, 3.0, 1.0])
    out = qmixer.qmixer_loss(local_q, np.array([[0, 1]]), np.array([[1.0]]), next_q, np.array([[True]]), gamma=0.5)
    assert out["loss"] == 9.0  # y = r = 1


@pytest.mark.torchrl
def test_qmix_mixer_vs_torchrl():
    import torch
    from torchrl.modules.models.multiagent import QMixer

    torch.manual_seed(0)
    mixer = QMixer(state_shape=(2, 3), mixing_embed_dim=4, n_agents=3, device="cpu").double()
    q = torch.randn(5, 2, 3, 1, dtype=torch.float64)
    s = torch.randn(5, 2, 2, 3, dtype=torch.float64)
    params = {k: v.detach().numpy() for k, v in mixer.state_dict().items()}
    with torch.no_grad():
        expected = mixer(q, s).numpy()
    np.testing.assert_allclose(qmixer.qmix_mix(q.numpy(), s.numpy(), params), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.torchrl
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("mixer_kind", ["vdn", "qmix"])
@pytest.mark.parametrize("action_space", ["categorical", "one_hot"])
def test_qmixer_loss_vs_torchrl(mixer_kind, action_space):
    import torch
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.modules import QValueModule, SafeSequential
    from torchrl.modules.models.multiagent import QMixer, VDNMixer
    from torchrl.objectives.multiagent import QMixerLoss

    torch.manual_seed(2)
    B, n, O, A, S = 5, 3, 4, 3, 6
    net = torch.nn.Linear(O, A).double()
    local = SafeSequential(
        TensorDictModule(net, [("agents", "observation")], [("agents", "action_value")]),
        QValueModule(action_value_key=("agents", "action_value"),
                     out_keys=[("agents", "action"), ("agents", "action_value"), ("agents", "chosen_action_value")],
                     action_space=action_space),
    )
    if mixer_kind == "vdn":
        mixer_net = VDNMixer(n_agents=n, device="cpu")
        mixer = TensorDictModule(mixer_net, [("agents", "chosen_action_value")], ["chosen_action_value"])
    else:
        mixer_net = QMixer(state_shape=(S,), mixing_embed_dim=4, n_agents=n, device="cpu").double()
        mixer = TensorDictModule(mixer_net, [("agents", "chosen_action_value"), "state"], ["chosen_action_value"])
    loss = QMixerLoss(local, mixer, action_space=action_space, delay_value=True)
    loss.make_value_estimator(gamma=_f64(torch, 0.7))
    _perturb_(loss.target_local_value_network_params, torch, scale=0.4, seed=1)
    if mixer_kind == "qmix":
        _perturb_(loss.target_mixer_network_params, torch, scale=0.4, seed=2)

    obs, nobs = torch.randn(B, n, O, dtype=torch.float64), torch.randn(B, n, O, dtype=torch.float64)
    state, nstate = torch.randn(B, S, dtype=torch.float64), torch.randn(B, S, dtype=torch.float64)
    idx = torch.randint(0, A, (B, n))
    action = idx if action_space == "categorical" else torch.nn.functional.one_hot(idx, A)
    reward = torch.randn(B, 1, dtype=torch.float64)
    done = torch.tensor([False, True, True, False, False]).unsqueeze(-1)
    term = torch.tensor([False, True, False, False, False]).unsqueeze(-1)
    td = TensorDict({
        "agents": TensorDict({"observation": obs, "action": action}, [B, n]),
        "state": state,
        "next": {"agents": TensorDict({"observation": nobs}, [B, n]), "state": nstate, "reward": reward,
                 "done": done, "terminated": term},
    }, [B])
    out = loss(td)

    with torch.no_grad():
        q = net(obs).numpy()
        tparams = loss.target_local_value_network_params
        with tparams.to_module(loss.local_value_network):
            nq_t = loss.local_value_network(TensorDict({"agents": TensorDict({"observation": nobs}, [B, n])}, [B]))[
                "agents", "action_value"].numpy()
    kw = {}
    if mixer_kind == "qmix":
        online = {k: v.detach().numpy() for k, v in mixer_net.state_dict().items()}
        with loss.target_mixer_network_params.to_module(loss.mixer_network):
            target = {k: v.detach().numpy() for k, v in mixer_net.state_dict().items()}
        kw = dict(params=online, target_params=target, state=state.numpy(), next_state=nstate.numpy())
    ref = qmixer.qmixer_loss(q, action.numpy(), reward.numpy(), nq_t, term.numpy(), gamma=0.7, mixer=mixer_kind,
                             action_space=action_space, **kw)
    np.testing.assert_allclose(ref["loss"], out["loss"].detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ref["td_error"], td["td_error"].squeeze(-1).numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------
# IQL
# --------------------------------------------------------------------------------------------------------------


def test_expectile_hand():
    np.testing.assert_allclose(iql.expectile_loss(np.array([2.0, -2.0, 0.0]), 0.7), [0.7 * 4, 0.3 * 4, 0.0])


def test_iql_hand():
    q_t = np.array([[1.0, 5.0], [2.0, 4.0]])  # min over critics: [1, 4]
    q_o = np.array([[0.0, 3.0], [1.0, 2.0]])
    value, next_value = np.array([2.0, 0.0]), np.array([1.0, 10.0])
    log_prob, reward, term = np.array([-1.0, -2.0]), np.array([0.5, 1.0]), np.array([False, True])
    out = iql.iql_loss(log_prob, q_t, q_o, value, next_value, reward, term, gamma=0.5, temperature=2.0,
                       expectile=0.7, loss_function="l2")
    # u = [1 - 2, 4 - 0] = [-1, 4]; value loss = [.3*1, .7*16] -> mean 5.75
    assert out["loss_value"] == pytest.approx(5.75, abs=1e-14)
    # exp_a = [e^-2, min(e^8, 100)] ; actor = -exp_a * log_prob = [e^-2, 200] -> mean
    assert out["loss_actor"] == pytest.approx((math.exp(-2) + 200.0) / 2, abs=1e-13)
    # y = [.5 + .5*1, 1] = [1, 1]; sum over critics of l2: [(0-1)^2 + (1-1)^2, (3-1)^2 + (2-1)^2] = [1, 5]
    assert out["loss_qvalue"] == pytest.approx(3.0, abs=1e-14)
    np.testing.assert_allclose(out["td_error"], [1.0, 4.0])
    assert out["entropy"] == pytest.approx(1.5)
    # discrete variant gathers the data action from [N, B, nA]
    q_t_all = np.stack([np.stack([q_t[i], np.full(2, 99.0)], -1) for i in range(2)])  # action 0 is the data action
    q_o_all = np.stack([np.stack([np.full(2, -99.0), q_o[i]], -1) for i in range(2)])
    with pytest.raises(ValueError, match="expectile"):
        iql.discrete_iql_loss(log_prob, q_t_all, q_o_all, np.array([0, 0]), value, next_value, reward, term,
                              gamma=0.5, expectile=1.0)
    d = iql.discrete_iql_loss(log_prob, q_t_all, q_t_all, np.array([0, 0]), value, next_value, reward, term,
                              gamma=0.5, temperature=2.0, expectile=0.7, loss_function="l2")
    assert d["loss_value"] == pytest.approx(5.75, abs=1e-14)


@pytest.mark.torchrl
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("loss_function, reduction", [("smooth_l1", "mean"), ("l2", "sum"), ("l1", "none")])
def test_iql_vs_torchrl(loss_function, reduction):
    import torch
    from tensordict import TensorDict
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import IQLLoss

    torch.manual_seed(3)
    B, O, A = 6, 3, 2
    actor_net = torch.nn.Sequential(torch.nn.Linear(O, 2 * A), NormalParamExtractor()).double()
    actor = ProbabilisticActor(TensorDictModule(actor_net, ["observation"], ["loc", "scale"]),
                               in_keys=["loc", "scale"], distribution_class=TanhNormal, return_log_prob=False)

    class QNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(O + A, 1)

        def forward(self, obs, act):
            return self.lin(torch.cat([obs, act], -1))

    qnet = ValueOperator(QNet().double(), in_keys=["observation", "action"], out_keys=["state_action_value"])
    vnet = ValueOperator(torch.nn.Linear(O, 1).double(), in_keys=["observation"])
    # expectile 0.75 is exact in float32: TorchRL builds the weight with torch.where(diff > 0, expectile,
    # 1 - expectile) on Python floats, i.e. in the default dtype (float32)
    loss = IQLLoss(actor, qnet, vnet, num_qvalue_nets=2, temperature=3.0, expectile=0.75,
                   loss_function=loss_function, reduction=reduction)
    loss.make_value_estimator(gamma=_f64(torch, 0.9))
    _perturb_(loss.target_qvalue_network_params, torch, scale=0.5)

    obs, nobs = torch.randn(B, O, dtype=torch.float64), torch.randn(B, O, dtype=torch.float64)
    action = torch.rand(B, A, dtype=torch.float64) * 1.8 - 0.9
    reward = torch.randn(B, 1, dtype=torch.float64)
    done = torch.tensor([False, True, True, False, False, False]).unsqueeze(-1)
    term = torch.tensor([False, True, False, False, False, False]).unsqueeze(-1)
    td = TensorDict({"observation": obs, "action": action,
                     "next": {"observation": nobs, "reward": reward, "done": done, "terminated": term}}, [B])
    out = loss(td.clone())

    with torch.no_grad():
        loc, scale = actor_net(obs)
        log_prob = tanh_normal_log_prob(action.numpy(), loc.numpy(), scale.numpy())  # reference density
        qs = {}
        for name in ("qvalue_network_params", "target_qvalue_network_params"):
            p = getattr(loss, name)
            vals = []
            for i in range(2):
                with p[i].to_module(loss.qvalue_network):
                    vals.append(loss.qvalue_network(TensorDict({"observation": obs, "action": action}, [B]))[
                        "state_action_value"].squeeze(-1).numpy())
            qs[name] = np.stack(vals)
        with loss.value_network_params.to_module(loss.value_network):
            v = loss.value_network(TensorDict({"observation": obs}, [B]))["state_value"].squeeze(-1).numpy()
            nv = loss.value_network(TensorDict({"observation": nobs}, [B]))["state_value"].squeeze(-1).numpy()
    ref = iql.iql_loss(log_prob, qs["target_qvalue_network_params"], qs["qvalue_network_params"], v, nv,
                       reward.numpy(), term.numpy(), gamma=0.9, temperature=3.0, expectile=0.75,
                       loss_function=loss_function, reduction=reduction)
    for key in ("loss_actor", "loss_qvalue", "loss_value"):
        np.testing.assert_allclose(ref[key], out[key].detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=key)
    if reduction != "none":
        np.testing.assert_allclose(ref["entropy"], out["entropy"].numpy(), rtol=1e-10)


@pytest.mark.torchrl
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("action_space", ["categorical", "one_hot"])
def test_discrete_iql_vs_torchrl(action_space):
    import torch
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.modules import OneHotCategorical, ProbabilisticActor, ValueOperator
    from torchrl.objectives import DiscreteIQLLoss

    torch.manual_seed(4)
    B, O, A = 6, 3, 4
    actor_net = torch.nn.Linear(O, A).double()
    dist_class = OneHotCategorical if action_space == "one_hot" else torch.distributions.Categorical
    actor = ProbabilisticActor(TensorDictModule(actor_net, ["observation"], ["logits"]), in_keys=["logits"],
                               distribution_class=dist_class, return_log_prob=False)
    qnet = ValueOperator(torch.nn.Linear(O, A).double(), in_keys=["observation"], out_keys=["state_action_value"])
    vnet = ValueOperator(torch.nn.Linear(O, 1).double(), in_keys=["observation"])
    loss = DiscreteIQLLoss(actor, qnet, vnet, num_qvalue_nets=2, temperature=0.5, expectile=0.75,
                           action_space=action_space)
    loss.make_value_estimator(gamma=_f64(torch, 0.95))
    _perturb_(loss.target_qvalue_network_params, torch, scale=0.5)

    obs, nobs = torch.randn(B, O, dtype=torch.float64), torch.randn(B, O, dtype=torch.float64)
    idx = torch.randint(0, A, (B,))
    action = idx if action_space == "categorical" else torch.nn.functional.one_hot(idx, A)
    reward = torch.randn(B, 1, dtype=torch.float64)
    done = torch.tensor([False, True, True, False, False, False]).unsqueeze(-1)
    term = torch.tensor([False, True, False, False, False, False]).unsqueeze(-1)
    td = TensorDict({"observation": obs, "action": action,
                     "next": {"observation": nobs, "reward": reward, "done": done, "terminated": term}}, [B])
    out = loss(td.clone())

    with torch.no_grad():
        log_prob = torch.distributions.Categorical(logits=actor_net(obs)).log_prob(idx).numpy()
        qs = {}
        for name in ("qvalue_network_params", "target_qvalue_network_params"):
            p = getattr(loss, name)
            vals = []
            for i in range(2):
                with p[i].to_module(loss.qvalue_network):
                    vals.append(loss.qvalue_network(TensorDict({"observation": obs}, [B]))[
                        "state_action_value"].numpy())
            qs[name] = np.stack(vals)
        with loss.value_network_params.to_module(loss.value_network):
            v = loss.value_network(TensorDict({"observation": obs}, [B]))["state_value"].squeeze(-1).numpy()
            nv = loss.value_network(TensorDict({"observation": nobs}, [B]))["state_value"].squeeze(-1).numpy()
    ref = iql.discrete_iql_loss(log_prob, qs["target_qvalue_network_params"], qs["qvalue_network_params"],
                                action.numpy(), v, nv, reward.numpy(), term.numpy(), gamma=0.95, temperature=0.5,
                                expectile=0.75, action_space=action_space)
    for key in ("loss_actor", "loss_qvalue", "loss_value", "entropy"):
        np.testing.assert_allclose(ref[key], out[key].detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.torchrl
@pytest.mark.filterwarnings("ignore")
def test_torchrl_one_hot_ties_sum_the_tied_values():
    """Documents a TorchRL quirk the reference does not copy: with one-hot actions the greedy action is
    ``Q == max Q`` (multi-hot at ties), so the DQN bootstrap becomes k * max Q when k actions tie."""
    import torch
    from tensordict import TensorDict
    from torchrl.modules import QValueActor
    from torchrl.objectives import DQNLoss

    net = torch.nn.Linear(2, 3).double()
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([1.0, 1.0, 0.0]))  # Q(s', .) = [1, 1, 0]: a two-way tie
    z = torch.zeros(1, 1, dtype=torch.float64)
    results = {}
    for space, action in (("one_hot", torch.tensor([[1, 0, 0]])), ("categorical", torch.tensor([0]))):
        loss = DQNLoss(QValueActor(net, in_keys=["observation"], action_space=space), action_space=space)
        loss.make_value_estimator(gamma=_f64(torch, 1.0))
        td = TensorDict({"observation": torch.zeros(1, 2, dtype=torch.float64), "action": action,
                         "next": {"observation": torch.zeros(1, 2, dtype=torch.float64), "reward": z,
                                  "done": z.bool(), "terminated": z.bool()}}, [1])
        results[space] = loss(td)["loss"].item()
    ref = dqn.dqn_loss(np.array([[1.0, 1.0, 0.0]]), np.array([0]), np.zeros(1), np.array([[1.0, 1.0, 0.0]]),
                       np.zeros(1, bool), gamma=1.0)["loss"]
    assert ref == 0.0 and results["categorical"] == 0.0  # y = 0 + 1 * max Q = 1 = Q(s, a)
    assert results["one_hot"] == 1.0  # TorchRL: y = 0 + (1 + 1) = 2
