"""Cross-validation of the loss classes against TorchRL 0.14.1 (float64, copied weights, identical batches): every
output key, the written td_error and every parameter gradient."""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import NormalParamExtractor as TNPE  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.modules import MLP as TMLP  # noqa: E402
from torchrl.modules import ProbabilisticActor as TPA  # noqa: E402
from torchrl.modules import QValueActor as TQA  # noqa: E402
from torchrl.modules import QValueModule as TQM  # noqa: E402
from torchrl.modules import SafeSequential, TanhNormal as TTN, ValueOperator as TVO  # noqa: E402
from torchrl.modules.models.multiagent import QMixer as TQMixer, VDNMixer as TVDN  # noqa: E402

import arrayrl.objectives as O  # noqa: E402
import torchrl.objectives as TO  # noqa: E402
from arrayrl.distributions import Categorical, OneHotCategorical, TanhNormal  # noqa: E402
from arrayrl.nn import MLP, KeyedModule, Linear, ProbabilisticActor, QValueActor, ValueOperator  # noqa: E402
from arrayrl.nn.multiagent import QMixer, VDNMixer  # noqa: E402
from arrayrl.nn.params import flatten_params  # noqa: E402
from torchrl.objectives.multiagent import QMixerLoss as TQMixerLoss  # noqa: E402
from tests.objectives.torchrl_helpers import Comparer, normal_actor, perturb, torch_tree, transition  # noqa: E402
from tests.objectives.torchrl_helpers import float64_default  # noqa: E402,F401  (autouse fixture)

pytestmark = [pytest.mark.torchrl, pytest.mark.filterwarnings("ignore")]

ESTIMATORS = ["td0", "td1", "tdlambda"]
_tree = partial(torch_tree, floats=True)  # floating parameters, no C51 support
_perturb = partial(perturb, floats=True)
_compare_grads = Comparer(1e-9, 1e-11, floats=True, grad_label="").grads
_transition = partial(transition, trunc_p=0.2)


def _set_estimator(tl, al, est):
    hp = {"lmbda": 0.7} if est == "tdlambda" else {}
    tl.make_value_estimator(est, gamma=0.9, **hp)
    al.make_value_estimator(est, gamma=0.9, **hp)


def _np_batch(td):
    from arrayrl.interop import from_tensordict

    return from_tensordict(td, np, copy=True)


# ------------------------------------------------------------------------------------------------ DQN
DQN_CASES = [c for c in itertools.product(["one_hot", "categorical", "mult_one_hot", "binary"], [False, True],
                                          [False, True], ["l2", "smooth_l1", "l1"], ["mean", "sum", "none"], ESTIMATORS)
             if not (c[1] and not c[2])]  # double_dqn needs delay_value


def _binary_nets(nobs, nA):
    """TorchRL's QValueModule cannot do binary actions; both sides use a head writing a = (Q > 0),
    chosen = sum_k max(Q_k, 0)."""

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = TMLP(in_features=nobs, out_features=nA, num_cells=[8])

        def forward(self, obs):
            q = self.mlp(obs)
            a = (q > 0).long()
            return q, a, (q * a).sum(-1, keepdim=True)

    tactor = TensorDictModule(Head(), ["observation"], ["action_value", "action", "chosen_action_value"])
    mlp = MLP(in_features=nobs, out_features=nA, num_cells=[8])

    def head(p, obs):
        q = mlp.apply(p["0"], obs)
        xp = q.__array_namespace__()
        a = xp.astype(q > 0, xp.int64)
        return q, a, xp.sum(q * xp.astype(a, q.dtype), axis=-1, keepdims=True)

    return tactor, KeyedModule(head, params={"0": mlp.params}, in_keys=["observation"],
                               out_keys=["action_value", "action", "chosen_action_value"])


@pytest.mark.parametrize("space,double,delay,fn,reduction,est", DQN_CASES)
def test_dqn_vs_torchrl(space, double, delay, fn, reduction, est):
    B, nobs = 6, 3
    var_nums = [2, 3]
    nA = 5 if space == "mult_one_hot" else 4
    tnet = TMLP(in_features=nobs, out_features=nA, num_cells=[8])
    if space == "mult_one_hot":
        tactor = SafeSequential(TensorDictModule(tnet, ["observation"], ["action_value"]),
                                TQM(action_space="mult_one_hot", var_nums=var_nums))
        actor = QValueActor(MLP(in_features=nobs, out_features=nA, num_cells=[8]), action_space="mult_one_hot",
                            var_nums=var_nums)
    elif space == "binary":
        tactor, actor = _binary_nets(nobs, nA)
    else:
        tactor = TQA(tnet, in_keys=["observation"], action_space=space)
        actor = QValueActor(MLP(in_features=nobs, out_features=nA, num_cells=[8]), action_space=space)
    tl = TO.DQNLoss(tactor, action_space=space, double_dqn=double, delay_value=delay, loss_function=fn,
                    reduction=reduction)
    al = O.DQNLoss(actor, action_space=space, double_dqn=double, delay_value=delay, loss_function=fn,
                   reduction=reduction, torchrl_compat=space in ("mult_one_hot", "binary") and double)
    _set_estimator(tl, al, est)
    if delay:
        _perturb(tl.value_network_params)
    def as_tree(td):
        return {"0": _tree(td, "mlp.")} if space == "binary" else _tree(td) | {"1": {}}

    al.params = {"value_network": as_tree(tl.value_network_params)}
    if delay:
        al._set_target("value_network", as_tree(tl.target_value_network_params))
    if space == "categorical":
        action = torch.randint(0, nA, (B,))
    elif space == "one_hot":
        action = torch.nn.functional.one_hot(torch.randint(0, nA, (B,)), nA).bool()
    elif space == "binary":
        action = torch.rand(B, nA) < 0.5
    else:
        action = torch.cat([torch.nn.functional.one_hot(torch.randint(0, k, (B,)), k) for k in var_nums], -1).bool()
    td = _transition(B, (nobs,), action)
    td["priority_weight"] = torch.rand(B) + 0.5
    batch = _np_batch(td)
    out = tl(td)
    out["loss"].sum().backward()
    aout, grads = al.value_and_grad(batch)
    np.testing.assert_allclose(aout["loss"], out["loss"].detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(batch["td_error"], td["td_error"].numpy(), rtol=1e-10, atol=1e-12)
    if space == "binary":
        _compare_grads(tl.value_network_params, grads["value_network"]["0"], "value_network", "mlp.")
    else:
        _compare_grads(tl.value_network_params, grads["value_network"], "value_network")


def _dist_actor(nobs, nA, atoms, support, space):
    from torchrl.modules import DistributionalQValueActor

    tnet = torch.nn.Sequential(TMLP(in_features=nobs, out_features=atoms * nA, num_cells=[8]),
                               torch.nn.Unflatten(-1, (atoms, nA)), torch.nn.LogSoftmax(-2))
    return DistributionalQValueActor(tnet, in_keys=["observation"], support=support, action_space=space)


@pytest.mark.parametrize("space", ["one_hot", "categorical"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("delay", [True, False])
def test_distributional_dqn_vs_torchrl(space, reduction, delay):
    from arrayrl import ops

    B, nobs, nA, atoms = 6, 3, 3, 7
    support = torch.linspace(-2.0, 2.0, atoms)
    tl = TO.DistributionalDQNLoss(_dist_actor(nobs, nA, atoms, support, space), gamma=0.9, delay_value=delay,
                                  reduction=reduction)
    mlp = MLP(in_features=nobs, out_features=atoms * nA, num_cells=[8])

    def logits(p, obs):
        x = mlp.apply(p, obs)
        x = namespace(x).reshape(x, tuple(x.shape[:-1]) + (atoms, nA))
        return ops.log_softmax(x, axis=-2)

    from arrayrl._backend import namespace_of as namespace

    net = KeyedModule(logits, params=mlp.params, in_keys=["observation"], out_keys=["action_value"])
    al = O.DistributionalDQNLoss(net, gamma=0.9, support=support.numpy(), delay_value=delay, reduction=reduction,
                                 action_space=space)
    if delay:
        _perturb(tl.value_network_params)
    al.params = {"value_network": _tree(tl.value_network_params, "0.0.")}
    if delay:
        al._set_target("value_network", _tree(tl.target_value_network_params, "0.0."))
    action = torch.randint(0, nA, (B,)) if space == "categorical" else torch.nn.functional.one_hot(torch.randint(0, nA, (B,)), nA)
    td = _transition(B, (nobs,), action)
    td["next", "reward"] = support[torch.randint(0, atoms, (B, 1))] * 0.5  # integer-b fix-up cases
    batch = _np_batch(td)
    out = tl(td)
    out["loss"].sum().backward()
    aout, grads = al.value_and_grad(batch)
    np.testing.assert_allclose(aout["loss"], out["loss"].detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(batch["td_error"], td["td_error"].numpy(), rtol=1e-9, atol=1e-12)
    _compare_grads(tl.value_network_params, grads["value_network"], "value_network", "0.0.")


# ------------------------------------------------------------------------------------------------ QMixer
@pytest.mark.parametrize("mixer_kind", ["vdn", "qmix"])
@pytest.mark.parametrize("space", ["categorical", "one_hot"])
@pytest.mark.parametrize("delay", [True, False])
@pytest.mark.parametrize("fn,est", [("l2", "td0"), ("smooth_l1", "td1"), ("l1", "tdlambda")])
def test_qmixer_vs_torchrl(mixer_kind, space, delay, fn, est):
    B, n, nobs, nA, S = 5, 3, 6, 4, (2, 3)
    keys = dict(action_value_key=("agents", "action_value"), action_key=("agents", "action"),
                chosen_action_value_key=("agents", "chosen_action_value"))
    module = TensorDictModule(torch.nn.Linear(nobs, nA), in_keys=[("agents", "observation")],
                              out_keys=[("agents", "action_value")])
    vm = TQM(action_value_key=("agents", "action_value"), action_space=space,
             out_keys=[("agents", "action"), ("agents", "action_value"), ("agents", "chosen_action_value")])
    qnet = SafeSequential(module, vm)
    if mixer_kind == "vdn":
        tm = TensorDictModule(TVDN(n_agents=n, device="cpu"), in_keys=[("agents", "chosen_action_value")],
                              out_keys=["chosen_action_value"])
        am = VDNMixer(n)
    else:
        tm = TensorDictModule(TQMixer(state_shape=S, mixing_embed_dim=5, n_agents=n, device="cpu"),
                              in_keys=[("agents", "chosen_action_value"), "state"], out_keys=["chosen_action_value"])
        am = QMixer(S, 5, n)
    tl = TQMixerLoss(qnet, tm, action_space=space, delay_value=delay, loss_function=fn)
    aq = QValueActor(KeyedModule(Linear(nobs, nA), in_keys=[("agents", "observation")],
                                 out_keys=[("agents", "action_value")]), action_space=space, **keys)
    al = O.QMixerLoss(aq, am, action_space=space, delay_value=delay, loss_function=fn)
    _set_estimator(tl, al, est)
    if delay:
        _perturb(tl.local_value_network_params, tl.mixer_network_params)
    al.params = {"local_value_network": _tree(tl.local_value_network_params) | {"1": {}},
                 "mixer_network": _tree(tl.mixer_network_params)}
    if delay:
        al._set_target("local_value_network", _tree(tl.target_local_value_network_params) | {"1": {}})
        al._set_target("mixer_network", _tree(tl.target_mixer_network_params))
    act = torch.randint(0, nA, (B, n))
    act = act if space == "categorical" else torch.nn.functional.one_hot(act, nA)
    term = torch.rand(B, 1) < 0.3
    td = TensorDict({"agents": TensorDict({"observation": torch.randn(B, n, nobs), "action": act}, [B, n]),
                     "state": torch.randn(B, *S),
                     "next": TensorDict({"agents": TensorDict({"observation": torch.randn(B, n, nobs)}, [B, n]),
                                         "state": torch.randn(B, *S), "reward": torch.randn(B, 1),
                                         "done": term | (torch.rand(B, 1) < 0.2), "terminated": term}, [B])}, [B])
    batch = _np_batch(td)
    out = tl(td)
    out["loss"].backward()
    aout, grads = al.value_and_grad(batch)
    np.testing.assert_allclose(aout["loss"], out["loss"].detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(batch["td_error"], td["td_error"].numpy(), rtol=1e-10, atol=1e-12)
    _compare_grads(tl.local_value_network_params, grads["local_value_network"], "local")
    _compare_grads(tl.mixer_network_params, grads["mixer_network"], "mixer")


# ------------------------------------------------------------------------------------------------ IQL
def _iql_pair(nobs, nA, kw, n_q, discrete=None):
    if discrete is None:
        tmlp = TMLP(in_features=nobs, out_features=2 * nA, num_cells=[8])
        tactor = TPA(TensorDictModule(torch.nn.Sequential(tmlp, TNPE()), ["observation"], ["loc", "scale"]),
                     in_keys=["loc", "scale"], distribution_class=TTN)
        tq = TVO(TMLP(in_features=nobs + nA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
        actor = normal_actor(nobs, nA, TanhNormal)
        q = ValueOperator(MLP(in_features=nobs + nA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    else:
        from torchrl.modules import OneHotCategorical as TOHC

        tdist = TOHC if discrete == "one_hot" else torch.distributions.Categorical
        tactor = TPA(TensorDictModule(TMLP(in_features=nobs, out_features=nA, num_cells=[8]), ["observation"],
                                      ["logits"]), in_keys=["logits"], distribution_class=tdist)
        tq = TVO(TMLP(in_features=nobs, out_features=nA, num_cells=[8]), in_keys=["observation"],
                 out_keys=["state_action_value"])
        amod = KeyedModule(MLP(in_features=nobs, out_features=nA, num_cells=[8]), in_keys=["observation"],
                           out_keys=["logits"])
        actor = ProbabilisticActor(amod, in_keys=["logits"],
                                   distribution_class=OneHotCategorical if discrete == "one_hot" else Categorical)
        q = ValueOperator(MLP(in_features=nobs, out_features=nA, num_cells=[8]), in_keys=["observation"],
                          out_keys=["state_action_value"])
    tv = TVO(TMLP(in_features=nobs, out_features=1, num_cells=[8]), in_keys=["observation"])
    v = ValueOperator(MLP(in_features=nobs, out_features=1, num_cells=[8]), in_keys=["observation"])
    if discrete is None:
        tl = TO.IQLLoss(tactor, tq, tv, num_qvalue_nets=n_q, **kw)
        al = O.IQLLoss(actor, q, v, num_qvalue_nets=n_q, **kw)
    else:
        tl = TO.DiscreteIQLLoss(tactor, tq, tv, num_qvalue_nets=n_q, action_space=discrete, **kw)
        al = O.DiscreteIQLLoss(actor, q, v, num_qvalue_nets=n_q, action_space=discrete, **kw)
    return tl, al


IQL_CASES = [
    (d, 1 + i % 3, fn, red, (0.3, 0.5, 0.7, 0.9)[i % 4], (0.5, 1.0, 3.0, 10.0)[i % 4], est)  # beta=10: exp clamp
    for i, (d, fn, red, est) in enumerate(itertools.product([None, "categorical", "one_hot"], ["l2", "smooth_l1", "l1"],
                                                            ["mean", "sum", "none"], ESTIMATORS))
]


@pytest.mark.parametrize("discrete,n_q,fn,reduction,tau,beta,est", IQL_CASES)
def test_iql_vs_torchrl(discrete, n_q, fn, reduction, tau, beta, est):
    B, nobs, nA = 7, 3, 2 if discrete is None else 4
    kw = dict(loss_function=fn, reduction=reduction, expectile=tau, temperature=beta,
              scalar_output_mode="non_tensor" if reduction == "none" else None)
    tl, al = _iql_pair(nobs, nA, kw, n_q, discrete)
    _set_estimator(tl, al, est)
    _perturb(tl.qvalue_network_params)
    actor_prefix = "0.0." if discrete is None else "0."
    al.params = {"actor_network": {"0": _tree(tl.actor_network_params, actor_prefix), "1": {}},
                 "qvalue_network": _tree(tl.qvalue_network_params), "value_network": _tree(tl.value_network_params)}
    al._set_target("qvalue_network", _tree(tl.target_qvalue_network_params))  # TorchRL's re-sampled ensemble
    if discrete is None:
        action = torch.rand(B, nA) * 1.8 - 0.9
    else:
        action = torch.randint(0, nA, (B,))
        action = action if discrete == "categorical" else torch.nn.functional.one_hot(action, nA)
    td = _transition(B, (nobs,), action)
    batch = _np_batch(td)
    out = tl(td)
    sum(out[k].sum() for k in out.keys() if k.startswith("loss")).backward()
    aout, grads = al.value_and_grad(batch)
    assert sorted(aout) == sorted(k for k in out.keys())
    for k in out.keys():
        want = out.get(k)
        want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(getattr(want, "data", want))
        np.testing.assert_allclose(aout[k], want, rtol=1e-9, atol=1e-11, err_msg=k)
    np.testing.assert_allclose(batch["td_error"], td["td_error"].numpy(), rtol=1e-9, atol=1e-11)
    _compare_grads(tl.qvalue_network_params, grads["qvalue_network"], "qvalue")
    _compare_grads(tl.value_network_params, grads["value_network"], "value")
    _compare_grads(tl.actor_network_params, grads["actor_network"]["0"], "actor", actor_prefix)


def test_iql_ensemble_resampling_like_torchrl():
    """A single critic becomes N members drawn U(min, max) of each leaf (TorchRL's expansion), none equal to it."""
    tl, al = _iql_pair(3, 2, {}, 3)
    q0 = flatten_params(al._networks["qvalue_network"].params)
    qn = flatten_params(al.params["qvalue_network"])
    for k, leaf in q0.items():
        assert qn[k].shape == (3,) + leaf.shape
        assert qn[k].min() >= leaf.min() - 1e-12 and qn[k].max() <= leaf.max() + 1e-12
        if leaf.size > 1:
            assert not any(np.allclose(qn[k][i], leaf) for i in range(3))
