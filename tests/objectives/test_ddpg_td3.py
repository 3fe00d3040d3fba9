"""DDPGLoss, TD3Loss, TD3BCLoss: the pure terms and the losses against the float64 per-sample oracle
(reference/losses/ddpg_td3.py) on Hypothesis batches on every backend; gradients against float64 finite differences
(of arrayrl and of the oracle); the target-noise divergence (paper default vs torchrl_compat); a learning test;
bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl._backend import namespace_of
from arrayrl.autodiff import check_grads
from arrayrl.nn import MLP, Ensemble, KeyedModule, ValueOperator
from arrayrl.objectives.ddpg import DDPGLoss, deterministic_actor_loss, squared_td_error
from arrayrl.objectives.td3 import (
    TD3BCLoss,
    TD3Loss,
    noise_scale,
    smoothed_target_action,
    target_policy_noise,
    td3_bc_actor_loss,
)
from arrayrl.objectives.utils import SoftUpdate
from arrayrl.optim import Adam
from arrayrl.random import Generator
from reference.losses import ddpg_td3 as R

NOBS, NA = 3, 2


# ------------------------------------------------------------------------------------------------ networks
def _actor_fn(p, o):
    ns = namespace_of(o, p["w"])
    return ns.tanh(o @ p["w"])


def _critic_fn(p, o, a):
    ns = namespace_of(o, a, p["u"])
    return ns.concat([o, a, a * a], axis=-1) @ p["u"]


def _nets(xp, w, u):
    """Actor ``a = tanh(o W)`` and critic ``Q = [o, a, a^2] u`` (``u`` ``[F, 1]``), or a list of critics (``u``
    ``[N, F, 1]``: stacked exactly by the loss)."""
    actor = KeyedModule(_actor_fn, params={"w": xp.from_numpy(w)}, in_keys=["observation"], out_keys=["action"])

    def critic(ui):
        return KeyedModule(_critic_fn, params={"u": xp.from_numpy(ui)}, in_keys=["observation", "action"],
                           out_keys=["state_action_value"])

    return actor, (critic(u) if u.ndim == 2 else [critic(u[i]) for i in range(u.shape[0])])


def _row_actor(w):
    def f(o):
        return np.array([math.tanh(sum(float(o[j]) * float(w[j, k]) for j in range(len(o)))) for k in range(NA)])
    return f


def _row_critic(u):
    def f(o, a):
        x = [float(v) for v in o] + [float(v) for v in a] + [float(v) * float(v) for v in a]
        return sum(x[j] * float(u[j, 0]) for j in range(len(x)))
    return f


@st.composite
def _cases(draw, kind):
    b = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = 1 if kind == "ddpg" else draw(st.sampled_from([1, 2, 3]))
    feat = NOBS + 2 * NA
    bounds = draw(st.sampled_from([(-1.0, 1.0), (-2.0, 2.0), ([-1.0, -0.5], [0.5, 1.5])]))
    lo, hi = np.broadcast_to(np.asarray(bounds[0], float), (NA,)), np.broadcast_to(np.asarray(bounds[1], float), (NA,))
    c = dict(
        kind=kind, b=b, n=n, bounds=bounds,
        obs=rng.normal(size=(b, NOBS)), next_obs=rng.normal(size=(b, NOBS)),
        action=lo + (hi - lo) * rng.uniform(size=(b, NA)), reward=rng.normal(size=(b, 1)),
        terminated=rng.uniform(size=(b, 1)) < 0.3,
        w=rng.normal(size=(NOBS, NA)), w_t=rng.normal(size=(NOBS, NA)),
        u=rng.normal(size=(n, feat, 1)), u_t=rng.normal(size=(n, feat, 1)),
        z=rng.normal(size=(b, NA)) * 2.0,
        weights=rng.uniform(0.5, 1.5, size=b) if draw(st.booleans()) else None,
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        fn=draw(st.sampled_from(["l2", "l1", "smooth_l1"])),
        delay_actor=draw(st.booleans()), delay_critic=draw(st.booleans()),
        compat=draw(st.booleans()), spec=draw(st.booleans()),
    )
    c["done"] = c["terminated"] | (rng.uniform(size=(b, 1)) < 0.3)
    return c


class _Spec:
    """A bounded spec: any object with ``low``/``high``."""

    def __init__(self, low, high):
        self.low, self.high = low, high


class _FixedNoise:
    """Returns the same standard-normal draw at every call (finite differences evaluate the loss many times)."""

    def __init__(self, z):
        self.z = z

    def normal(self, shape, dtype=None, **kw):
        assert tuple(shape) == tuple(self.z.shape)
        return self.z


def _batch(xp, c):
    f = xp.from_numpy
    batch = {"observation": f(c["obs"]), "action": f(c["action"]),
             "next": {"observation": f(c["next_obs"]), "reward": f(c["reward"]), "done": f(c["done"]),
                      "terminated": f(c["terminated"])}}
    if c["weights"] is not None:
        batch["priority_weight"] = f(c["weights"])
    return batch


def _loss(xp, c, cls=None):
    kind = c["kind"]
    u = c["u"][0] if kind == "ddpg" else c["u"]
    actor, critic = _nets(xp, c["w"], u)
    common = dict(loss_function=c["fn"], reduction=c["reduction"])
    if kind == "ddpg":
        loss = DDPGLoss(actor, critic, delay_actor=c["delay_actor"], delay_value=c["delay_critic"], **common)
        qname = "value_network"
    else:
        cls = TD3Loss if kind == "td3" else TD3BCLoss
        lo, hi = c["bounds"]
        bkw = ({"action_spec": _Spec(xp.from_numpy(np.asarray(lo, float)), xp.from_numpy(np.asarray(hi, float)))}
               if c["spec"] else {"bounds": (lo, hi)})
        loss = cls(actor, critic, num_qvalue_nets=c["n"], delay_actor=c["delay_actor"], delay_qvalue=c["delay_critic"],
                   torchrl_compat=c["compat"], policy_noise=0.3, noise_clip=0.4, **bkw, **common)
        loss.generator = Generator.from_noise(xp.from_numpy(c["z"]))
        qname = "qvalue_network"
    loss.make_value_estimator("td0", gamma=0.9)
    # targets: the online trees for non-delayed networks, other trees otherwise
    if c["delay_actor"]:
        loss.target_params = {"actor_network": {"w": xp.from_numpy(c["w_t"])}}
    if c["delay_critic"]:
        loss.target_params = {qname: {"u": xp.from_numpy(c["u_t"][0] if kind == "ddpg" else c["u_t"])}}
    return loss


def _oracle(c, **extra):
    actor, critics = _row_actor(c["w"]), [_row_critic(c["u"][i]) for i in range(c["n"])]
    t_actor = _row_actor(c["w_t"]) if c["delay_actor"] else actor
    t_critics = [_row_critic(c["u_t"][i]) for i in range(c["n"])] if c["delay_critic"] else critics
    args = (c["obs"], c["action"], c["next_obs"], c["reward"], c["terminated"])
    kw = dict(gamma=0.9, loss_function=c["fn"], reduction=c["reduction"], weights=c["weights"])
    if c["kind"] == "ddpg":
        return R.ddpg_loss(*args, actor=actor, critic=critics[0], target_actor=t_actor, target_critic=t_critics[0],
                           **kw)
    lo, hi = c["bounds"]
    fn = R.td3_loss if c["kind"] == "td3" else R.td3_bc_loss
    return fn(*args, c["z"], actor=actor, critics=critics, target_actor=t_actor, target_critics=t_critics, low=lo,
              high=hi, policy_noise=0.3, noise_clip=0.4, scaled=not c["compat"], **kw, **extra)


def _assert_like_oracle(xp, out, batch, want):
    f32 = not xp.is_float64
    for k, v in want.items():
        got = batch["td_error"] if k == "td_error" else out[k]
        assert ("float32" if f32 else "float64") in str(got.dtype), (k, got.dtype)
        np.testing.assert_allclose(xp.to_numpy(got), np.asarray(v), rtol=max(xp.rtol, 1e-9),
                                   atol=max(xp.atol, 1e-10), err_msg=k)
    assert sorted(out) == sorted(set(want) - ({"td_error"} if "loss_qvalue" in want else set()))


# ------------------------------------------------------------------------------------------------ pure terms
@settings(max_examples=8)
@given(c=_cases("td3"))
def test_pure_terms_vs_reference(xp, c):
    f, t = xp.from_numpy, xp.to_numpy
    lo, hi = (np.broadcast_to(np.asarray(v, float), (NA,)).copy() for v in c["bounds"])
    tol = dict(rtol=max(xp.rtol, 1e-12), atol=max(xp.atol, 1e-12))
    for scaled in (False, True):
        scale = noise_scale(f(lo), f(hi)) if scaled else 1.0
        eps = target_policy_noise(f(c["z"]), policy_noise=0.3, noise_clip=0.4, scale=scale)
        want = R.target_noise(c["z"], policy_noise=0.3, noise_clip=0.4, low=lo, high=hi, scaled=scaled)
        np.testing.assert_allclose(t(eps), want, **tol)
        mu = np.tanh(c["next_obs"] @ c["w"]) * 1.3
        a = smoothed_target_action(f(mu), eps, f(lo), f(hi))
        np.testing.assert_allclose(t(a), R.smoothed_action(mu, want, lo, hi), **tol)
        assert np.all(t(a) >= lo - 1e-7) and np.all(t(a) <= hi + 1e-7)
    q = c["reward"][:, 0]
    np.testing.assert_allclose(t(deterministic_actor_loss(f(q))), -q, **tol)
    y = c["obs"][:, 0]
    np.testing.assert_allclose(t(squared_td_error(f(q), f(y))), (q - y) ** 2, **tol)
    pi = np.tanh(c["obs"] @ c["w"])
    loss, bc, lmbd = td3_bc_actor_loss(f(q), f(pi), f(c["action"]), 2.5)
    lm = 2.5 / np.mean(np.abs(q))
    bc_want = np.mean((pi - c["action"]) ** 2)
    np.testing.assert_allclose(t(loss), -lm * q + bc_want, **tol)
    np.testing.assert_allclose(float(t(bc)), bc_want, **tol)
    np.testing.assert_allclose(float(t(lmbd)), lm, **tol)


# ------------------------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("kind", ["ddpg", "td3", "td3bc"])
@settings(max_examples=5)
@given(data=st.data())
def test_losses_vs_reference(xp, kind, data):
    """Every output (and the td_error written into the batch) equals the per-sample oracle: delays, bounds or a
    spec, paper or TorchRL noise, reductions, loss functions, priority weights, 1-3 critics."""
    c = data.draw(_cases(kind))
    loss = _loss(xp, c)
    batch = _batch(xp, c)
    out = loss(batch)
    _assert_like_oracle(xp, out, batch, _oracle(c))


@pytest.mark.parametrize("kind", ["ddpg", "td3", "td3bc"])
@settings(max_examples=2)
@given(data=st.data())
def test_gradients_vs_finite_differences(kind, data):
    """Tape gradients against float64 finite differences, term by term (a loss's gradient is not the derivative of
    its value: the actor loss holds the critic out, TD3+BC holds lmbd): d loss_actor / d actor of arrayrl's own
    loss (DDPG, TD3) and of the oracle (TD3+BC with lmbd held), d critic loss / d critic of both. The targets are
    held out of everything."""
    from tests.conftest import _make_backend

    c = data.draw(_cases(kind))
    xp = _make_backend("numpy")
    loss = _loss(xp, c)
    if kind != "ddpg":
        loss.generator = _FixedNoise(c["z"])
    batch = _batch(xp, c)
    qname, qterm = ("value_network", "loss_value") if kind == "ddpg" else ("qvalue_network", "loss_qvalue")
    u0 = c["u"][0] if kind == "ddpg" else c["u"]

    def term(name, w, u):
        out = loss._forward(batch, {"actor_network": {"w": w}, qname: {"u": u}})
        return namespace_of(out[name]).sum(out[name])

    check_grads(lambda u: term(qterm, c["w"], u), (u0,), max_elements=8, n_directions=2)
    if kind != "td3bc":
        check_grads(lambda w: term("loss_actor", w, u0), (c["w"],))
    out, grads = loss.value_and_grad(batch)

    def oracle_term(name, w, u):
        cc = dict(c, w=w, u=u if kind != "ddpg" else u[None])
        if not c["delay_actor"]:  # the non-delayed target stays at the unperturbed online weights
            cc.update(delay_actor=True, w_t=c["w"])
        if not c["delay_critic"]:
            cc.update(delay_critic=True, u_t=c["u"])
        extra = {"lmbd": float(out["lmbd"])} if kind == "td3bc" else {}
        return float(np.sum(_oracle(cc, **extra)[name]))

    h = 1e-6
    for name, arr, tname, g in (("w", c["w"], "loss_actor", grads["actor_network"]["w"]),
                                ("u", u0, qterm, grads[qname]["u"])):
        fd = np.zeros_like(arr)
        for i in np.ndindex(*arr.shape):
            d = np.zeros_like(arr)
            d[i] = h
            args_p = (c["w"] + d, u0) if name == "w" else (c["w"], u0 + d)
            args_m = (c["w"] - d, u0) if name == "w" else (c["w"], u0 - d)
            fd[i] = (oracle_term(tname, *args_p) - oracle_term(tname, *args_m)) / (2 * h)
        np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-5, atol=1e-6, err_msg=f"{kind} d{tname}/d{name}")


# ------------------------------------------------------------------------------------------------ divergence
def test_td3_noise_scale_divergence():
    """Paper default: sigma and c scale with (high - low)/2 (Fujimoto's max_action); torchrl_compat: absolute
    noise. Different for bounds [-2, 2], identical for [-1, 1]."""
    from tests.conftest import _make_backend

    xp = _make_backend("numpy")
    rng = np.random.default_rng(3)
    base = dict(kind="td3", b=4, n=2, obs=rng.normal(size=(4, NOBS)), next_obs=rng.normal(size=(4, NOBS)),
                reward=rng.normal(size=(4, 1)), terminated=np.zeros((4, 1), bool), done=np.zeros((4, 1), bool),
                w=rng.normal(size=(NOBS, NA)) * 0.3, w_t=rng.normal(size=(NOBS, NA)) * 0.3,
                u=rng.normal(size=(2, NOBS + 2 * NA, 1)), u_t=rng.normal(size=(2, NOBS + 2 * NA, 1)),
                z=rng.normal(size=(4, NA)), weights=None, reduction="mean", fn="smooth_l1", delay_actor=True,
                delay_critic=True, spec=False)
    results = {}
    for bounds in ((-2.0, 2.0), (-1.0, 1.0)):
        for compat in (False, True):
            c = dict(base, bounds=bounds, compat=compat, action=rng.uniform(-1, 1, size=(4, NA)))
            out = _loss(xp, c)(_batch(xp, c))
            want = _oracle(c)
            np.testing.assert_allclose(out["next_state_value"], want["next_state_value"], rtol=1e-12)
            results[bounds, compat] = out["next_state_value"]
    assert not np.allclose(results[(-2.0, 2.0), False], results[(-2.0, 2.0), True])
    np.testing.assert_array_equal(results[(-1.0, 1.0), False], results[(-1.0, 1.0), True])


# ------------------------------------------------------------------------------------------------ behaviour
def _mlp_nets(seed=0):
    g = Generator(seed)
    actor = KeyedModule(MLP(in_features=1, out_features=1, num_cells=[], activate_last_layer=True, generator=g),
                        in_keys=["observation"], out_keys=["action"])
    critic = ValueOperator(MLP(in_features=2, out_features=1, num_cells=[32], generator=g),
                           in_keys=["observation", "action"])
    return actor, critic


def test_td3_learns_continuous_bandit():
    """1-D bandit r(a) = -(a - 0.6)^2 on [-1, 1] (every step terminal, so y = r), actor a = tanh(w), twin critics
    Q = [1, a, a^2] u (seeded, different inits), targets moved by SoftUpdate, the actor updated every second step
    (the policy delay lives in the trainer): the actor reaches a = 0.6 and the critics the true Q."""
    from tests.conftest import _make_backend

    xp = _make_backend("numpy")
    rng = np.random.default_rng(0)
    actor = KeyedModule(_actor_fn, params={"w": np.array([[-0.5]])}, in_keys=["observation"], out_keys=["action"])
    critics = [KeyedModule(_critic_fn, params={"u": rng.normal(size=(3, 1))}, in_keys=["observation", "action"],
                           out_keys=["state_action_value"]) for _ in range(2)]
    loss = TD3Loss(actor, critics, bounds=(-1.0, 1.0), loss_function="l2", generator=Generator(1))
    updater = SoftUpdate(loss, tau=0.05)
    opt = Adam(lr=2e-2)
    state = opt.init(loss.params)
    n = 64
    for step in range(600):
        a = rng.uniform(-1, 1, size=(n, 1))
        batch = {"observation": np.ones((n, 1)), "action": a,
                 "next": {"observation": np.ones((n, 1)), "reward": -(a - 0.6) ** 2, "done": np.ones((n, 1), bool),
                          "terminated": np.ones((n, 1), bool)}}
        terms = None if step % 2 else ["loss_qvalue"]  # the policy delay d = 2
        out, grads = loss.value_and_grad(batch, terms=terms)
        params, state = opt.update(grads, state, loss.params)
        loss.params = params
        updater.step()
    mu = float(actor({"observation": np.ones((1, 1))})["action"][0, 0])
    assert abs(mu - 0.6) < 1e-2, mu
    np.testing.assert_allclose(loss.params["qvalue_network"]["u"][:, :, 0], [[-0.36, 1.2, -1.0]] * 2, atol=2e-2)
    assert xp.name == "numpy"


@settings(max_examples=2)
@given(c=_cases("td3"))
def test_critic_only_terms_leave_actor_untouched(c):
    """value_and_grad(terms=["loss_qvalue"]) gives zero actor gradients: the trainer's policy delay."""
    from tests.conftest import _make_backend

    xp = _make_backend("numpy")
    loss = _loss(xp, c)
    _, grads = loss.value_and_grad(_batch(xp, c), terms=["loss_qvalue"])
    assert np.all(grads["actor_network"]["w"] == 0)
    assert np.any(grads["qvalue_network"]["u"] != 0)


@pytest.mark.parametrize("kind", ["ddpg", "td3", "td3bc"])
@settings(max_examples=2)
@given(data=st.data())
def test_batch_not_mutated_except_td_error(kind, data):
    from tests.conftest import _make_backend

    xp = _make_backend("numpy")
    c = data.draw(_cases(kind))
    loss = _loss(xp, c)
    batch = _batch(xp, c)
    before = {k: (dict(v) if isinstance(v, dict) else v.copy()) for k, v in batch.items()}
    loss(batch)
    assert sorted(batch) == sorted(list(before) + ["td_error"])
    for k, v in before.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                np.testing.assert_array_equal(batch[k][kk], vv)
        else:
            np.testing.assert_array_equal(batch[k], v)


@settings(max_examples=2)
@given(c=_cases("td3"))
def test_float32_in_float32_out(c):
    c = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64 else v) for k, v in c.items()}

    class _F32:
        is_float64 = False
        from_numpy = staticmethod(lambda a: np.asarray(a))

    loss = _loss(_F32, dict(c, compat=False))
    out, grads = loss.value_and_grad(_batch(_F32, c))
    assert all(v.dtype == np.float32 for v in out.values())
    assert grads["actor_network"]["w"].dtype == np.float32


# ------------------------------------------------------------------------------------------------ bad input
def _simple(cls=TD3Loss, **kw):
    actor, critic = _mlp_nets()
    return cls(actor, critic, **({"bounds": (-1.0, 1.0)} | kw)) if cls is not DDPGLoss else cls(actor, critic, **kw)


def _bandit_batch(a):
    n = a.shape[0]
    return {"observation": np.ones((n, 1)), "action": a,
            "next": {"observation": np.ones((n, 1)), "reward": np.zeros((n, 1)), "done": np.zeros((n, 1), bool),
                     "terminated": np.zeros((n, 1), bool)}}


@pytest.mark.parametrize("cls", [TD3Loss, TD3BCLoss])
def test_action_outside_bounds_raises(cls):
    loss = _simple(cls, bounds=(-0.5, 0.5))
    with pytest.raises(ValueError, match="action.*bounds"):
        loss(_bandit_batch(np.array([[0.2], [0.7]])))
    loss(_bandit_batch(np.array([[0.2], [0.5]])))  # on the bound is inside


def test_bad_constructor_arguments():
    actor, critic = _mlp_nets()
    with pytest.raises(ValueError, match="One of 'bounds' and 'action_spec'"):
        TD3Loss(actor, critic)
    with pytest.raises(ValueError, match="One of 'bounds' and 'action_spec'"):
        TD3Loss(actor, critic, bounds=(-1, 1), action_spec=_Spec(-1.0, 1.0))
    with pytest.raises(ValueError, match="low bound higher"):
        TD3Loss(actor, critic, bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="low bound higher"):
        TD3Loss(actor, critic, action_spec=_Spec(np.array([-1.0, 1.0]), np.array([1.0, 0.0])))
    with pytest.raises(ValueError, match="finite"):
        TD3Loss(actor, critic, bounds=(-np.inf, np.inf))
    TD3Loss(actor, critic, bounds=(-np.inf, np.inf), torchrl_compat=True)  # TorchRL's absolute noise needs none
    with pytest.raises(ValueError, match="Bounded"):
        TD3Loss(actor, critic, action_spec=object())
    with pytest.raises(ValueError, match="bounds"):
        TD3Loss(actor, critic, bounds=1.0)
    with pytest.raises(TypeError, match="gamma"):
        TD3Loss(actor, critic, bounds=(-1, 1), gamma=0.9)
    with pytest.raises(TypeError, match="gamma"):
        TD3BCLoss(actor, critic, bounds=(-1, 1), gamma=0.9)  # TorchRL's TD3BCLoss has no gamma argument
    with pytest.raises(TypeError, match="gamma"):
        DDPGLoss(actor, critic, gamma=0.9)
    with pytest.raises(ValueError, match="num_qvalue_nets"):
        TD3Loss(actor, critic, bounds=(-1, 1), num_qvalue_nets=0)
    with pytest.raises(ValueError, match="policy_noise"):
        TD3Loss(actor, critic, bounds=(-1, 1), policy_noise=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        TD3BCLoss(actor, critic, bounds=(-1, 1), alpha=float("nan"))
    with pytest.raises(ValueError, match="loss_function"):
        DDPGLoss(actor, critic, loss_function="huber")
    with pytest.raises(TypeError, match="delay_value"):
        DDPGLoss(actor, critic, delay_value="yes")
    with pytest.raises(TypeError, match="actor_network"):
        DDPGLoss(lambda x: x, critic)
    with pytest.raises(NotImplementedError, match="GAE"):
        DDPGLoss(actor, critic).make_value_estimator("gae")


def test_wrong_ensemble_size_raises():
    actor, critic = _mlp_nets()
    with pytest.raises(ValueError, match="list of 3 networks but num_qvalue_nets=2"):
        TD3Loss(actor, [critic, critic, critic], bounds=(-1, 1))
    ens = ValueOperator(Ensemble(MLP(in_features=2, out_features=1, num_cells=[4]), 3),
                        in_keys=["observation", "action"])
    with pytest.raises(ValueError, match="ensemble of 3 members but num_qvalue_nets=2"):
        TD3Loss(actor, ens, bounds=(-1, 1))
    loss = TD3Loss(actor, [critic, critic], bounds=(-1, 1))
    qp = loss.params["qvalue_network"]
    bad = {"qvalue_network": {k: {kk: vv[:1] for kk, vv in v.items()} for k, v in qp.items()}}  # 1 member, not 2
    with pytest.raises(ValueError, match="qvalue_network"):
        loss.params = {**loss.params, **bad}


def test_bad_batches_raise():
    loss = _simple()
    with pytest.raises(ValueError, match="action.: expected shape"):
        loss(_bandit_batch(np.zeros((2, 2))))
    with pytest.raises(TypeError, match="action"):
        loss(_bandit_batch(np.zeros((2, 1), dtype=np.int64)))
    b = _bandit_batch(np.zeros((2, 1)))
    del b["next"]["observation"]
    with pytest.raises(KeyError, match="next.*observation"):
        loss(b)
    b = _bandit_batch(np.zeros((2, 1)))
    b["next"]["reward"] = np.zeros((3, 1))
    with pytest.raises(ValueError, match="reward"):
        loss(b)
    d = _simple(DDPGLoss)
    b = _bandit_batch(np.zeros((2, 1)))
    b["next"]["done"] = np.zeros((2, 1))
    with pytest.raises(TypeError, match="done"):
        d(b)
