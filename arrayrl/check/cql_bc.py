"""``arrayrl check`` provider part: CQLLoss, DiscreteCQLLoss and BCLoss vs TorchRL 0.14.1 and
``reference/losses/cql_bc.py`` (merged into :data:`arrayrl.check.actor_critic.BUILDERS`, hence into
:data:`arrayrl.check.losses.CHECKS`).

Components (each runs ``n_cases`` random cases, options drawn per case):

* ``loss.CQLLoss`` (:func:`cql_case`): TanhNormal or IndependentNormal actors, temperature schemes (learned, fixed,
  clamped), loss functions, reductions, estimators, ``max_q_backup``, ``deterministic_backup``, ``with_lagrange``
  (``lagrange_thresh``; ``log_alpha'`` moved away from 0, its gradient compared), ``temperature``,
  ``min_q_weight``, ``num_random``, ``delay_actor``/``delay_qvalue``, ``deactivate_vmap``. TorchRL's six draws (its
  ``rsample`` standard normals and the ``Tensor.uniform_`` random actions, in call order) are recorded and
  replayed; the clamped ``log_alpha`` and ``target_entropy`` are compared after the call;
* ``loss.DiscreteCQLLoss`` (:func:`discrete_cql_case`): categorical / one-hot Q-value actors, loss functions,
  reductions, estimators, gamma, ``delay_value`` (a perturbed target that neither side may read: TorchRL bootstraps
  from the online net), batch sizes;
* ``loss.BCLoss`` (:func:`bc_case`): a deterministic actor (``l1``, ``l2``, ``mse``, ``smooth_l1``, a callable,
  auto = MSE), a stochastic actor (TanhNormal / IndependentNormal: auto = negative log-likelihood; ``l2`` on its deterministic
  action) and a logits
  actor (integer expert actions ``[B]`` or ``[B, 1]``: auto / ``cross_entropy``); flat ``[B]`` or chunked
  ``[B, H]`` batches, reductions, a bool pad mask (``mean``/``sum`` only: with ``none`` TorchRL compacts the
  output, arrayrl keeps the shape, a documented difference).

Reference (column "vs reference", oracle only): every CQL case is fed to ``reference.losses.cql_bc.cql_loss`` with
TorchRL's critic outputs at the replayed actions and their log-probabilities (recomputed in torch from the
recorded draws, TorchRL's ``rsample_and_log_prob``; ``torchrl_compat=True``: s' scoring, batch-mean log-sum-exp);
DiscreteCQL TD(0) cases to ``discrete_cql_loss`` (bootstrapping from the online net, as TorchRL); BC cases other
than a callable loss to ``bc_elementwise`` + ``bc_loss`` with TorchRL's (deterministic-mode) prediction (the NLL case: TorchRL's
``-log pi(e|s)``, so only the reduction and mask are checked there).
arrayrl runs with ``torchrl_compat=True`` (CQL, DiscreteCQL).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._common import Errors

__all__ = ["BUILDERS", "cql_case", "discrete_cql_case", "bc_case"]


def _A() -> Any:
    from . import actor_critic

    return actor_critic


def _L() -> Any:
    from . import losses

    return losses


# ------------------------------------------------------------------------------------------------------ CQL
def _policy_draw(tl: Any, obs: Any, eps: np.ndarray) -> tuple:
    """TorchRL's actor at observations ``obs`` with the standard-normal draw ``eps`` replayed through TorchRL's
    ``rsample_and_log_prob`` (the call CQL makes): ``(action, log_prob)`` as NumPy arrays (no tape)."""
    import torch
    import torch.distributions.normal as tdn
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.modules.distributions.utils import rsample_and_log_prob

    orig = tdn._standard_normal
    tdn._standard_normal = lambda *a, **k: torch.as_tensor(eps)
    try:
        td = TensorDict({"observation": obs.clone()}, [obs.shape[0]])
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM), \
                tl.actor_network_params.to_module(tl.actor_network):
            a, lp = rsample_and_log_prob(tl.actor_network.get_dist(td))
    finally:
        tdn._standard_normal = orig
    return a.numpy(), lp.numpy()


def cql_case(rng: np.random.Generator, **opts: Any) -> Any:
    """CQLLoss (drawn: ``actor``, ``alpha``, ``loss_function``, ``reduction``, ``estimator``, ``max_q_backup``,
    ``deterministic_backup``, ``with_lagrange``, ``lagrange_thresh``, ``temperature``, ``min_q_weight``,
    ``num_random``, ``delay_actor``, ``delay_qvalue``, ``deactivate_vmap``, ``B``; ``with_lagrange`` only with a
    reduction other than ``none``: TorchRL 0.14.1 fails to build that output)."""
    import torch
    import torchrl.objectives as TO
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import ValueOperator as TVO

    from ..nn import MLP, ValueOperator
    from ..objectives.cql import CQLLoss
    from .redq_crossq_tqc import _common, _grads, _online, _q_all

    A, L = _A(), _L()
    pick = L._pick
    kind = pick(rng, opts, "actor", ("tanh", "independent"))
    fn = pick(rng, opts, "loss_function", A.LOSS_FUNCTIONS)
    est = pick(rng, opts, "estimator", ("td0", "td1", "tdlambda"))
    mqb = pick(rng, opts, "max_q_backup", (False, True))
    det = pick(rng, opts, "deterministic_backup", (True, False))
    kw, fixed = _common(rng, opts)
    # (TorchRL 0.14.1 cannot put its scalar loss_alpha_prime into a reduction="none" output TensorDict)
    lag = (pick(rng, opts, "with_lagrange", (False, True)) if kw["reduction"] != "none"
           else opts.setdefault("with_lagrange", False))
    tau = pick(rng, opts, "lagrange_thresh", (0.0, 0.3, -0.5)) if lag else 0.0
    temp = pick(rng, opts, "temperature", (1.0, 0.7, 2.0))
    w = pick(rng, opts, "min_q_weight", (1.0, 5.0, 0.3))
    k = pick(rng, opts, "num_random", (2, 3, 4))
    da, dq = pick(rng, opts, "delay_actor", (False, True)), pick(rng, opts, "delay_qvalue", (True, False))
    novmap = pick(rng, opts, "deactivate_vmap", (False, False, True))
    B = pick(rng, opts, "B", (3, 5))
    kw.update(loss_function=fn, max_q_backup=mqb, deterministic_backup=det, with_lagrange=lag, lagrange_thresh=tau,
              temperature=temp, min_q_weight=w, num_random=k, delay_actor=da, delay_qvalue=dq,
              deactivate_vmap=novmap)
    tactor, actor, prefix = A.policy_nets(kind, log_prob=False)
    tq = TVO(TMLP(in_features=A.NOBS + A.NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    tl = TO.CQLLoss(tactor, tq, **kw)
    hp = A._estimator(est)
    tl.make_value_estimator(est, gamma=0.9, **hp)
    A._perturb(rng, 0.1, tl.actor_network_params, tl.qvalue_network_params)
    online = _online(tl, fixed, prefix, L._tree(tl.qvalue_network_params))
    if lag:
        with torch.no_grad():
            tl.log_alpha_prime.add_(float(rng.uniform(-0.5, 0.5)))
        online["log_alpha_prime"] = tl.log_alpha_prime.detach().numpy().copy()
    targets = {}
    if da:
        targets["actor_network"] = {"0": L._tree(tl.target_actor_network_params, prefix), "1": {}}
    if dq:
        targets["qvalue_network"] = L._tree(tl.target_qvalue_network_params)
    td = A._transition(rng, B, rng.uniform(-0.9, 0.9, (B, A.NA)), False)
    log_alpha0 = float(tl.log_alpha.detach())
    log_alpha_prime0 = float(tl.log_alpha_prime.detach()) if lag else 0.0
    target_entropy = float(tl.target_entropy)
    td_ref = td.clone()
    draws: list = []

    def build(convert: Callable) -> tuple:
        q = ValueOperator(MLP(in_features=A.NOBS + A.NA, out_features=1, num_cells=[8]),
                          in_keys=["observation", "action"])
        al = CQLLoss(actor(), q, torchrl_compat=True, **kw)
        al.make_value_estimator(est, gamma=0.9, **hp)
        al.params = convert(online)
        for name, tree in targets.items():
            al._set_target(name, convert(tree))
        return al, A._batch(td, convert)

    def keep(d: list) -> list:
        want = [(B, A.NA)] + ([(B * k, A.NA)] if mqb else []) + [(B * k, A.NA)] * 3 + [(B, A.NA)] * 2
        if [x.shape for x in d] != want:
            raise AssertionError(f"CQLLoss: TorchRL's draws have shapes {[x.shape for x in d]}, expected {want}")
        draws[:] = d
        return d

    def after(al: Any, acc: Errors) -> None:
        A._alpha_after(tl)(al, acc)
        acc.value(al.target_entropy, float(tl.target_entropy), "target_entropy")

    def reference() -> dict:
        d = list(draws)
        eps_next = d.pop(0)
        eps_backup = d.pop(0) if mqb else None
        a_rand, eps_cur, eps_new, eps_bc, eps_pi = d
        obs, nobs = td_ref["observation"], td_ref["next", "observation"]
        rep = lambda x: x.repeat_interleave(k, dim=0)  # noqa: E731
        tgt = tl.target_qvalue_network_params if dq else tl.qvalue_network_params
        onl = tl.qvalue_network_params
        a_next, lp_next = _policy_draw(tl, nobs, eps_next)
        if mqb:
            assert eps_backup is not None  # popped above whenever mqb
            a_b, _ = _policy_draw(tl, rep(nobs), eps_backup)
            q_next = _q_all(tl, rep(nobs), a_b, tgt)[..., 0].reshape(2, B, k)
        else:
            q_next = _q_all(tl, nobs, a_next, tgt)[..., 0]
        a_cur, lp_cur = _policy_draw(tl, rep(obs), eps_cur)
        a_new, lp_new = _policy_draw(tl, rep(nobs), eps_new)
        per = lambda q: q[..., 0].reshape(2, B, k)  # noqa: E731
        q_rand = per(_q_all(tl, rep(obs), a_rand, onl))
        q_cur = per(_q_all(tl, rep(obs), a_cur, onl))
        q_new = per(_q_all(tl, rep(nobs), a_new, onl))  # TorchRL scores the pi(.|s') actions at s'
        _, lp_bc = _policy_draw(tl, obs, eps_bc)
        a_pi, lp_pi = _policy_draw(tl, obs, eps_pi)
        with torch.no_grad(), tl.actor_network_params.to_module(tl.actor_network):
            from tensordict import TensorDict

            bc_lp = tl.actor_network.get_dist(TensorDict({"observation": obs.clone()}, [B])).log_prob(
                td_ref["action"]).numpy()
        nxt = td_ref["next"]
        want = L._oracle("losses.cql_bc").cql_loss(
            _q_all(tl, obs, td_ref["action"].numpy(), onl)[..., 0], q_next, lp_next, q_rand, q_cur, q_new,
            lp_cur.reshape(B, k), lp_new.reshape(B, k), lp_bc, bc_lp, _q_all(tl, obs, a_pi, onl)[..., 0], lp_pi,
            nxt["reward"].numpy(), nxt["terminated"].numpy(), gamma=0.9, log_alpha=log_alpha0,
            target_entropy=target_entropy, action_dim=A.NA, min_alpha=kw["min_alpha"], max_alpha=kw["max_alpha"],
            temperature=temp, min_q_weight=w, max_q_backup=mqb, deterministic_backup=det, with_lagrange=lag,
            log_alpha_prime=log_alpha_prime0, lagrange_thresh=tau, loss_function=fn, reduction=kw["reduction"],
            torchrl_compat=True)
        return want

    grads = _grads(prefix, fixed)
    if lag:
        grads.append(("log_alpha_prime", ("log_alpha_prime",), ""))
    return L.LossCase("CQLLoss", opts, tl, td, build, grads,
                      {"loss_actor": ("actor_network",), "loss_qvalue": ("qvalue_network",),
                       "loss_cql": ("qvalue_network",)}, reference if est == "td0" else None, replay_draws=True, fix_draws=keep, after=after,
                      recorder={"uniform": True})


# ------------------------------------------------------------------------------------------------------ DiscreteCQL
def discrete_cql_case(rng: np.random.Generator, **opts: Any) -> Any:
    """DiscreteCQLLoss (drawn: ``action_space``, ``loss_function``, ``reduction``, ``estimator``, ``gamma``,
    ``delay_value``, ``B``)."""
    import torchrl.objectives as TO
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import QValueActor as TQVA

    from ..nn import MLP, QValueActor
    from ..objectives.cql import DiscreteCQLLoss

    A, L = _A(), _L()
    pick = L._pick
    space = pick(rng, opts, "action_space", ("categorical", "one_hot"))
    fn = pick(rng, opts, "loss_function", A.LOSS_FUNCTIONS)
    red = pick(rng, opts, "reduction", A.REDUCTIONS)
    est = pick(rng, opts, "estimator", ("td0", "td1", "tdlambda"))
    gamma = pick(rng, opts, "gamma", (0.9, 0.5))
    delay = pick(rng, opts, "delay_value", (True, False))
    B = pick(rng, opts, "B", (1, 4, 6))
    nA = 4
    tnet = TQVA(TMLP(in_features=A.NOBS, out_features=nA, num_cells=[8]), in_keys=["observation"],
                action_space=space)
    kw = dict(loss_function=fn, reduction=red, delay_value=delay, action_space=space)
    tl = TO.DiscreteCQLLoss(tnet, **kw)
    hp = A._estimator(est)
    tl.make_value_estimator(est, gamma=gamma, **hp)
    A._perturb(rng, 0.1, tl.value_network_params)  # away from the target copy (never read: TorchRL bootstraps online)
    online = {"value_network": {"0": L._tree(tl.value_network_params, "0."), "1": {}}}
    target = {"0": L._tree(tl.target_value_network_params, "0."), "1": {}} if delay else None
    td = A._transition(rng, B, L._discrete_action(rng, (B,), nA, space), False)
    td_ref = td.clone()

    def build(convert: Callable) -> tuple:
        al = DiscreteCQLLoss(QValueActor(MLP(in_features=A.NOBS, out_features=nA, num_cells=[8]),
                                         in_keys=["observation"], action_space=space), torchrl_compat=True, **kw)
        al.make_value_estimator(est, gamma=gamma, **hp)
        al.params = convert(online)
        if target is not None:
            al._set_target("value_network", convert(target))
        return al, A._batch(td, convert)

    reference = None
    if est == "td0":
        def reference() -> dict:
            q = L._run_net(tl.value_network, tl.value_network_params, td_ref.select("observation"))
            qn = L._run_net(tl.value_network, tl.value_network_params, td_ref["next"].select("observation"))
            nxt = td_ref["next"]
            want = L._oracle("losses.cql_bc").discrete_cql_loss(
                q["action_value"].numpy(), td_ref["action"].numpy(), qn["action_value"].numpy(),
                nxt["reward"].numpy(), nxt["terminated"].numpy(), gamma=gamma, loss_function=fn, reduction=red,
                action_space=space, torchrl_compat=True)
            want["td_error"] = want.pop("td_error_mean")  # the logged output; the batch's td_error vs TorchRL
            return want

    return L.LossCase("DiscreteCQLLoss", opts, tl, td, build, [("value_network_params", ("value_network", "0"), "0.")],
                      {"loss_qvalue": ("value_network",), "loss_cql": ("value_network",)}, reference)


# ------------------------------------------------------------------------------------------------------ BC
def _pow4_torch(p: Any, e: Any) -> Any:
    return ((p - e) ** 4).sum(-1)


def _pow4(p: Any, e: Any) -> Any:
    from .._backend import namespace_of

    xp = namespace_of(p, e)
    d = p - e
    return xp.sum(d * d * d * d, axis=-1)


BC_LOSSES = {"deterministic": (None, "l1", "l2", "mse", "smooth_l1", "callable"),
             "stochastic": (None, "l2"), "logits": (None, "cross_entropy")}


def bc_case(rng: np.random.Generator, **opts: Any) -> Any:
    """BCLoss (drawn: ``actor`` (``deterministic``, ``stochastic``, ``logits``), ``dist`` (stochastic: ``tanh``,
    ``independent``), ``loss_function`` (:data:`BC_LOSSES`), ``reduction``, ``shape`` (``flat`` [B] or ``chunk``
    [B, H]; logits: flat), ``pad_mask`` (``mean``/``sum``), ``B``)."""
    import torch
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.modules import MLP as TMLP
    import torchrl.objectives as TO

    from ..nn import MLP, KeyedModule
    from ..objectives.bc import BCLoss

    A, L = _A(), _L()
    pick = L._pick
    kind = pick(rng, opts, "actor", ("deterministic", "deterministic", "stochastic", "logits"))
    fn = pick(rng, opts, "loss_function", BC_LOSSES[kind])
    red = pick(rng, opts, "reduction", A.REDUCTIONS)
    shape = pick(rng, opts, "shape", ("flat", "chunk")) if kind != "logits" else opts.setdefault("shape", "flat")
    pad = pick(rng, opts, "pad_mask", (False, True)) if red != "none" else opts.setdefault("pad_mask", False)
    B = pick(rng, opts, "B", (3, 5))
    lead: tuple[int, ...] = (B,) if shape == "flat" else (B, 3)
    nA = 4
    obs = rng.normal(size=lead + (A.NOBS,))
    path: tuple[str, ...]
    if kind == "deterministic":
        tnet = TensorDictModule(TMLP(in_features=A.NOBS, out_features=A.NA, num_cells=[8]), ["observation"],
                                ["action"])

        def anet() -> Any:
            return KeyedModule(MLP(in_features=A.NOBS, out_features=A.NA, num_cells=[8]), in_keys=["observation"],
                               out_keys=["action"])

        prefix, path = "", ("actor_network",)
        action: np.ndarray = 3.0 * rng.uniform(-0.9, 0.9, lead + (A.NA,))  # smooth_l1 sees both branches
    elif kind == "stochastic":
        tnet, anet, prefix = A.policy_nets(pick(rng, opts, "dist", ("tanh", "independent")), log_prob=False)
        path = ("actor_network", "0")
        action = rng.uniform(-0.9, 0.9, lead + (A.NA,))
    else:
        tnet = TensorDictModule(TMLP(in_features=A.NOBS, out_features=nA, num_cells=[8]), ["observation"],
                                ["action"])

        def anet() -> Any:
            return KeyedModule(MLP(in_features=A.NOBS, out_features=nA, num_cells=[8]), in_keys=["observation"],
                               out_keys=["action"])

        prefix, path = "", ("actor_network",)
        action = rng.integers(0, nA, lead + ((1,) if pick(rng, opts, "trailing_one", (False, True)) else ()))
    entries = {"observation": A._t(obs), "action": A._t(action)}
    if pad:
        mask = rng.random(lead) < 0.4
        mask.flat[0] = False  # at least one element counts
        entries["pad"] = A._t(mask)
    td = TensorDict(entries, list(lead))
    tfn, afn = (_pow4_torch, _pow4) if fn == "callable" else (fn, fn)
    tl = TO.BCLoss(tnet, loss_function=tfn, reduction=red)
    if pad:
        tl.set_keys(pad_mask="pad")
    A._perturb(rng, 0.1, tl.actor_network_params)
    params = L._tree(tl.actor_network_params, prefix)
    online = {"actor_network": {"0": params, "1": {}} if kind == "stochastic" else params}
    td_ref = td.clone()

    def build(convert: Callable) -> tuple:
        al = BCLoss(anet(), loss_function=afn, reduction=red)
        if pad:
            al.set_keys(pad_mask="pad")
        al.params = convert(online)
        return al, A._batch(td, convert)

    reference = None
    if fn != "callable":
        def reference() -> dict:
            R = L._oracle("losses.cql_bc")
            expert = td_ref["action"].numpy()
            if kind == "stochastic" and fn is None:
                with torch.no_grad(), tl.actor_network_params.to_module(tl.actor_network):
                    el = -tl.actor_network.get_dist(td_ref.select("observation").clone()).log_prob(
                        td_ref["action"]).numpy()
            else:
                with set_exploration_type(ExplorationType.DETERMINISTIC):
                    pred = L._run_net(tl.actor_network, tl.actor_network_params,
                                      td_ref.select("observation"))["action"].numpy()
                el = R.bc_elementwise(pred, expert, "cross_entropy" if kind == "logits" else (fn or "l2"))
            return {"loss_bc": R.bc_loss(el, red, pad=td_ref["pad"].numpy() if pad else None)}

    return L.LossCase("BCLoss", opts, tl, td, build, [("actor_network_params", path, prefix)],
                      {"loss_bc": ("actor_network",)}, reference, td_error=False)


#: family -> (builder, fixed options)
BUILDERS: dict[str, tuple[Callable, dict]] = {
    "CQLLoss": (cql_case, {}),
    "DiscreteCQLLoss": (discrete_cql_case, {}),
    "BCLoss": (bc_case, {}),
}
