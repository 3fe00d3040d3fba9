"""``arrayrl check`` provider part: REDQLoss, CrossQLoss and TQCLoss vs TorchRL 0.14.1 (merged into
:data:`arrayrl.check.actor_critic.BUILDERS`, hence into :data:`arrayrl.check.losses.CHECKS`).

Components (each runs ``n_cases`` random cases, options drawn per case):

* ``loss.REDQLoss`` (:func:`redq_case`): TanhNormal or IndependentNormal actors, ensemble size ``N`` and subset
  size ``M`` (``M == N`` too: TorchRL clamps it to ``N - 1``, as ``torchrl_compat``), temperature schemes (learned,
  fixed, clamped at either end), loss functions, reductions, estimators, ``delay_qvalue``, ``deactivate_vmap``.
  TorchRL's ``randperm`` (the critic subset) and its standard-normal draws (``rsample`` and ``Normal.sample``, routed
  through ``rsample``) are recorded and replayed;
* ``loss.CrossQLoss`` (:func:`crossq_case`): BatchRenorm critics (``warmup_steps``, ``smooth``, ``momentum``;
  TorchRL's running statistics copied into the arrayrl loss's explicit ``state``), the critic loss in training or
  evaluation statistics, ensemble sizes, temperature schemes, loss functions, reductions, estimators. A case runs
  ``steps`` consecutive calls (through the warm-up and past it): each call's outputs, ``td_error`` and gradients are
  compared, then the statistics after :meth:`~arrayrl.objectives.crossq.CrossQLoss.commit_state` against TorchRL's
  buffers, then both critics take the same SGD step (TorchRL's gradient) before the next call;
* ``loss.TQCLoss`` (:func:`tqc_case`): ensemble and quantile counts, quantiles dropped per net, temperature
  schemes, reductions, ``skip_done_states`` (terminated next states; TorchRL draws ``a'`` for the kept rows only,
  scattered into arrayrl's ``[B, A]`` draw), prioritized weights, ``delay_qvalue``, ``deactivate_vmap``.

Reference (column "vs reference", oracle only): REDQ cases with TD(0) and an IndependentNormal actor are fed to
``reference.losses.redq_crossq_tqc.redq_loss`` with TorchRL's critic outputs, the actions and log-probabilities
recomputed in torch from the replayed draws and subset (its ``td_error`` convention is left out). CrossQ and TQC
have no reference column yet.
arrayrl runs with ``torchrl_compat=True``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._common import Errors

__all__ = ["BUILDERS", "redq_case", "crossq_case", "tqc_case"]

ALPHA_CHOICES = ("learned", "fixed", "clamp_max", "clamp_min", "clamp_both")
#: REDQ's temperature schemes: TorchRL's REDQ needs both bounds (defaults 0.1, 10)
REDQ_ALPHAS = {
    "learned": (1.0, 0.1, 10.0, False),
    "fixed": (0.3, 0.1, 10.0, True),
    "clamp_max": (20.0, 0.1, 10.0, False),
    "clamp_min": (0.05, 0.1, 10.0, False),
    "clamp_both": (0.05, 0.2, 3.0, False),
}


def _A() -> Any:
    from . import actor_critic

    return actor_critic


def _L() -> Any:
    from . import losses

    return losses


def _common(rng: np.random.Generator, opts: dict, alphas: dict | None = None) -> tuple:
    """Actor kind, temperature scheme, reduction and the shared keyword arguments."""
    import torch
    from torchrl.data import Bounded

    A, pick = _A(), _L()._pick
    alpha = pick(rng, opts, "alpha", ALPHA_CHOICES)
    red = pick(rng, opts, "reduction", A.REDUCTIONS)
    a0, amin, amax, fixed = (alphas or A.ALPHAS)[alpha]
    kw = dict(alpha_init=a0, min_alpha=amin, max_alpha=amax, fixed_alpha=fixed, reduction=red,
              action_spec=Bounded(-torch.ones(A.NA), torch.ones(A.NA), (A.NA,)),
              scalar_output_mode="non_tensor" if red == "none" else None)
    return kw, fixed


def _online(tl: Any, fixed: bool, prefix: str, qvalue: Any) -> dict:
    L = _L()
    out: dict[str, Any] = {"actor_network": {"0": L._tree(tl.actor_network_params, prefix), "1": {}},
                           "qvalue_network": qvalue}
    if not fixed:
        out["log_alpha"] = tl.log_alpha.detach().numpy().copy()
    return out


def _grads(prefix: str, fixed: bool) -> list:
    g = [("actor_network_params", ("actor_network", "0"), prefix), ("qvalue_network_params", ("qvalue_network",), "")]
    if not fixed:
        g.append(("log_alpha", ("log_alpha",), ""))
    return g


def _replayed_policy(tl: Any, td: Any, eps: np.ndarray) -> tuple:
    """TorchRL's actor at ``td``'s observations with the standard-normal draw ``eps`` replayed: ``(action,
    log_prob)`` as NumPy arrays (no tape)."""
    import torch
    import torch.distributions.normal as tdn

    orig = tdn._standard_normal
    tdn._standard_normal = lambda *a, **k: torch.as_tensor(eps)
    try:
        with torch.no_grad(), tl.actor_network_params.to_module(tl.actor_network):
            dist = tl.actor_network.get_dist(td.select("observation").clone())
            a = dist.rsample()
            lp = dist.log_prob(a)
    finally:
        tdn._standard_normal = orig
    return a.numpy(), lp.numpy()


def _q_all(tl: Any, obs: Any, action: Any, params: Any, key: str = "state_action_value") -> np.ndarray:
    """TorchRL's critic ensemble ``[N, B, ...]`` at ``(obs, action)`` with ``params`` (no tape)."""
    from tensordict import TensorDict

    A, L = _A(), _L()
    td = TensorDict({"observation": obs.clone(), "action": A._t(np.asarray(action))}, [obs.shape[0]])
    return np.stack([L._run_net(tl.qvalue_network, params[i], td)[key].numpy()
                     for i in range(params.batch_size[0])])


# ------------------------------------------------------------------------------------------------------ REDQ
def redq_case(rng: np.random.Generator, **opts: Any) -> Any:
    """REDQLoss (drawn: ``actor``, ``num_qvalue_nets``, ``sub_sample_len``, ``alpha``, ``loss_function``,
    ``reduction``, ``estimator``, ``delay_qvalue``, ``deactivate_vmap``)."""
    import torchrl.objectives as TO
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import ValueOperator as TVO

    from ..nn import MLP, ValueOperator
    from ..objectives.redq import REDQLoss

    A, L = _A(), _L()
    pick = L._pick
    kind = pick(rng, opts, "actor", ("tanh", "independent"))
    n = pick(rng, opts, "num_qvalue_nets", (2, 3, 4, 5))
    m = pick(rng, opts, "sub_sample_len", tuple(range(1, n + 1)))
    fn = pick(rng, opts, "loss_function", A.LOSS_FUNCTIONS)
    est = pick(rng, opts, "estimator", ("td0", "td1", "tdlambda"))
    dq = pick(rng, opts, "delay_qvalue", (True, False))
    novmap = pick(rng, opts, "deactivate_vmap", (False, False, True))
    kw, fixed = _common(rng, opts, REDQ_ALPHAS)
    kw.update(num_qvalue_nets=n, sub_sample_len=m, loss_function=fn, delay_qvalue=dq, deactivate_vmap=novmap)
    B = 6
    tactor, actor, prefix = A.policy_nets(kind, log_prob=False)
    tq = TVO(TMLP(in_features=A.NOBS + A.NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    tl = TO.REDQLoss(tactor, tq, **kw)
    hp = A._estimator(est)
    tl.make_value_estimator(est, gamma=0.9, **hp)
    A._perturb(rng, 0.1, tl.actor_network_params, tl.qvalue_network_params)
    online = _online(tl, fixed, prefix, L._tree(tl.qvalue_network_params))
    target = L._tree(tl.target_qvalue_network_params) if dq else None
    td = A._transition(rng, B, rng.uniform(-0.9, 0.9, (B, A.NA)), False)
    log_alpha0 = float(tl.log_alpha.detach())
    td_ref = td.clone()
    draws: list = []

    def build(convert: Callable) -> tuple:
        q = ValueOperator(MLP(in_features=A.NOBS + A.NA, out_features=1, num_cells=[8]),
                          in_keys=["observation", "action"])
        al = REDQLoss(actor(), q, torchrl_compat=True, **kw)
        al.make_value_estimator(est, gamma=0.9, **hp)
        al.params = convert(online)
        if target is not None:
            al._set_target("qvalue_network", convert(target))
        return al, A._batch(td, convert)

    def keep(d: list) -> list:
        draws[:] = d
        return d

    reference = None
    if est == "td0" and kind == "independent":  # (TanhNormal: log pi of the replayed action is re-derived, atanh)
        def reference() -> dict:
            perm, eps = draws
            mm = min(m, n - 1)
            sub = np.sort(perm[:mm])
            a, lp = _replayed_policy(tl, td_ref, eps[0])
            na_, nlp = _replayed_policy(tl, td_ref["next"], eps[1])
            tgt = tl.target_qvalue_network_params if dq else tl.qvalue_network_params
            q_actor = _q_all(tl, td_ref["observation"], a, tl.qvalue_network_params)[..., 0]
            q_next = _q_all(tl, td_ref["next", "observation"], na_, tgt)[sub][..., 0]
            q_pred = _q_all(tl, td_ref["observation"], td_ref["action"].numpy(), tl.qvalue_network_params)
            nxt = td_ref["next"]
            want = L._oracle("losses.redq_crossq_tqc").redq_loss(
                q_actor, lp, q_next, nlp, q_pred[..., 0], nxt["reward"].numpy(), nxt["terminated"].numpy(),
                gamma=0.9, log_alpha=log_alpha0, target_entropy=float(tl.target_entropy),
                min_alpha=kw["min_alpha"], max_alpha=kw["max_alpha"], loss_function=fn, reduction=kw["reduction"],
                torchrl_compat=True)
            want.pop("td_error")  # TorchRL's td_error convention differs from the oracle's squared error
            return want

    return L.LossCase("REDQLoss", opts, tl, td, build, _grads(prefix, fixed),
                      {"loss_actor": ("actor_network",), "loss_qvalue": ("qvalue_network",)}, reference,
                      replay_draws=True, fix_draws=keep, after=A._alpha_after(tl),
                      recorder={"randperm": True, "sample": True})


# ------------------------------------------------------------------------------------------------------ CrossQ
def _stats(tl: Any) -> dict:
    from ..check.losses import _STATISTICS

    out = {}
    for k, v in tl.qvalue_network_params.flatten_keys(".").items():
        name = ".".join(p for p in k.split(".") if p != "module")
        if name.split(".")[-1] in _STATISTICS:
            out[name] = v.detach().numpy().copy()
    return out


def _weights(tl: Any) -> dict:
    from ..nn.params import unflatten_params

    flat = _L()._torch_flat(tl.qvalue_network_params)
    return unflatten_params({k: v.detach().numpy().copy() for k, v in flat.items()
                             if k.split(".")[-1] in ("weight", "bias")})


def crossq_case(rng: np.random.Generator, **opts: Any) -> Any:
    """CrossQLoss (drawn: ``num_qvalue_nets``, ``warmup_steps``, ``smooth``, ``momentum``, ``train_critic``,
    ``alpha``, ``loss_function``, ``reduction``, ``estimator``, ``steps`` (consecutive calls compared))."""
    import torch
    import torchrl.objectives as TO
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import ValueOperator as TVO
    from torchrl.modules.models.batchrenorm import BatchRenorm1d as TBR

    from ..nn.norm import BatchRenorm1d, NormMLP, StatefulValueOperator
    from ..nn.params import flatten_params, unflatten_params
    from ..objectives.crossq import CrossQLoss
    from ..tree import tree_map

    A, L = _A(), _L()
    pick = L._pick
    n = pick(rng, opts, "num_qvalue_nets", (1, 2, 3))
    warmup = pick(rng, opts, "warmup_steps", (0, 1, 2, 3))
    smooth = pick(rng, opts, "smooth", (False, True))
    momentum = pick(rng, opts, "momentum", (0.01, 0.1, 0.2))
    train = pick(rng, opts, "train_critic", (True, True, False))
    fn = pick(rng, opts, "loss_function", A.LOSS_FUNCTIONS)
    est = pick(rng, opts, "estimator", ("td0", "td1", "tdlambda"))
    steps = pick(rng, opts, "steps", (1, 2, 3, 4))
    kw, fixed = _common(rng, opts)
    kw.update(num_qvalue_nets=n, loss_function=fn)
    B = 6
    tactor, actor, prefix = A.policy_nets("tanh", log_prob=False)
    nk = [{"num_features": 8, "warmup_steps": warmup, "smooth": smooth, "momentum": momentum}] * 2
    tq = TVO(TMLP(in_features=A.NOBS + A.NA, out_features=1, num_cells=[8, 8], norm_class=TBR, norm_kwargs=nk),
             in_keys=["observation", "action"]).double()
    tl = TO.CrossQLoss(tactor, tq, **kw)
    hp = A._estimator(est)
    tl.make_value_estimator(est, gamma=0.9, **hp)
    A._perturb(rng, 0.1, tl.actor_network_params)
    with torch.no_grad():  # the critic's weights (not its statistics)
        for k, p in tl.qvalue_network_params.flatten_keys(".").items():
            if k.split(".")[-1] in ("weight", "bias"):
                p.add_(torch.as_tensor(0.3 * rng.normal(size=tuple(p.shape))))
    online = _online(tl, fixed, prefix, _weights(tl))
    state0 = unflatten_params(_stats(tl))

    def batch_td() -> Any:
        return A._transition(rng, B, rng.uniform(-0.9, 0.9, (B, A.NA)), False)

    td = batch_td()
    later = [batch_td() for _ in range(steps - 1)]
    tl.qvalue_network.train(train)

    def make(convert: Callable) -> Any:
        net = NormMLP(A.NOBS + A.NA, 1, [8, 8], norm_class=BatchRenorm1d,
                      norm_kwargs=[{"warmup_steps": warmup, "smooth": smooth, "momentum": momentum,
                                    "torchrl_compat": True}] * 2)
        al = CrossQLoss(actor(), StatefulValueOperator(net, in_keys=["observation", "action"]), torchrl_compat=True,
                        **kw)
        al.make_value_estimator(est, gamma=0.9, **hp)
        al.params = convert(online)
        al.state = convert(state0)
        al.train_critic = train
        return al

    def build(convert: Callable) -> tuple:
        return make(convert), A._batch(td, convert)

    def state_after(al: Any, acc: Errors) -> None:
        A._alpha_after(tl)(al, acc)
        if al.next_state is None or al.state is al.next_state:
            raise AssertionError("CrossQLoss: the call left no new state (or changed loss.state itself)")
        al.commit_state()
        got = flatten_params(al.state)
        want = _stats(tl)
        if sorted(got) != sorted(want):
            raise AssertionError(f"CrossQ state leaves {sorted(got)}, TorchRL's {sorted(want)}")
        for k, v in want.items():
            acc.value(np.asarray(got[k]), v, f"state.{k} after the call")

    def sgd(al: Any) -> None:
        """The same small step on both critics (TorchRL's gradient), then fresh gradients."""
        flat = {k: p for k, p in L._torch_flat(tl.qvalue_network_params).items()
                if k.split(".")[-1] in ("weight", "bias")}
        step = unflatten_params({k: (-0.05 * p.grad).numpy().copy() if p.grad is not None
                                 else np.zeros(tuple(p.shape)) for k, p in flat.items()})
        with torch.no_grad():
            for p in flat.values():
                if p.grad is not None:
                    p.sub_(0.05 * p.grad)
        al.params = {**al.params, "qvalue_network": tree_map(lambda a, d: a + d, al.params["qvalue_network"], step)}
        tl.zero_grad()
        if getattr(tl, "log_alpha", None) is not None and tl.log_alpha.grad is not None:
            tl.log_alpha.grad = None

    def after(al: Any, acc: Errors) -> None:
        state_after(al, acc)
        for td_k in later:
            sgd(al)
            tl.qvalue_network.train(train)
            sub = L.LossCase("CrossQLoss", opts, tl, td_k, lambda convert, td_k=td_k: (al, A._batch(td_k, convert)),
                             _grads(prefix, fixed), {}, None, replay_draws=True, after=state_after,
                             recorder={"sample": True})
            L.compare_with_torchrl(sub, acc)

    return L.LossCase("CrossQLoss", opts, tl, td, build, _grads(prefix, fixed),
                      {"loss_actor": ("actor_network",), "loss_qvalue": ("qvalue_network",)}, None,
                      replay_draws=True, after=after, recorder={"sample": True})


# ------------------------------------------------------------------------------------------------------ TQC
def tqc_case(rng: np.random.Generator, **opts: Any) -> Any:
    """TQCLoss (drawn: ``num_qvalue_nets``, ``n_quantiles``, ``top_quantiles_to_drop_per_net``, ``alpha``,
    ``reduction``, ``skip_done_states``, ``priority_weight``, ``delay_qvalue``, ``deactivate_vmap``)."""
    import torchrl.objectives as TO
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import ValueOperator as TVO

    from ..nn import MLP, ValueOperator
    from ..objectives.tqc import TQCLoss

    A, L = _A(), _L()
    pick = L._pick
    n = pick(rng, opts, "num_qvalue_nets", (1, 2, 3))
    mq = pick(rng, opts, "n_quantiles", (3, 4, 5))
    k = pick(rng, opts, "top_quantiles_to_drop_per_net", tuple(range(0, mq - 1)))
    skip = pick(rng, opts, "skip_done_states", (False, True))
    weighted = pick(rng, opts, "priority_weight", (False, True))
    dq = pick(rng, opts, "delay_qvalue", (True, False))
    novmap = pick(rng, opts, "deactivate_vmap", (False, False, True))
    kw, fixed = _common(rng, opts)
    kw.update(num_qvalue_nets=n, top_quantiles_to_drop_per_net=k, delay_qvalue=dq, skip_done_states=skip,
              deactivate_vmap=novmap)
    B = 6
    tactor, actor, prefix = A.policy_nets("tanh", log_prob=False)
    tq = TVO(TMLP(in_features=A.NOBS + A.NA, out_features=mq, num_cells=[8]), in_keys=["observation", "action"])
    tl = TO.TQCLoss(tactor, tq, **kw)
    tl.make_value_estimator("td0", gamma=0.9)
    A._perturb(rng, 0.1, tl.actor_network_params, tl.qvalue_network_params)
    online = _online(tl, fixed, prefix, L._tree(tl.qvalue_network_params))
    target = L._tree(tl.target_qvalue_network_params) if dq else None
    td = A._transition(rng, B, rng.uniform(-0.9, 0.9, (B, A.NA)), weighted)
    keep_rows = ~td["next", "terminated"].numpy()[:, 0]

    def fix_draws(draws: list) -> list:
        if not skip or keep_rows.all():
            return draws
        full = np.zeros((B, A.NA))
        full[keep_rows] = draws[0]
        return [full] + draws[1:]

    def build(convert: Callable) -> tuple:
        q = ValueOperator(MLP(in_features=A.NOBS + A.NA, out_features=mq, num_cells=[8]),
                          in_keys=["observation", "action"])
        al = TQCLoss(actor(), q, torchrl_compat=True, **kw)
        al.make_value_estimator("td0", gamma=0.9)
        al.params = convert(online)
        if target is not None:
            al._set_target("qvalue_network", convert(target))
        return al, A._batch(td, convert)

    return L.LossCase("TQCLoss", opts, tl, td, build, _grads(prefix, fixed),
                      {"loss_actor": ("actor_network",), "loss_qvalue": ("qvalue_network",)}, None,
                      replay_draws=True, fix_draws=fix_draws, after=A._alpha_after(tl))


#: family -> (builder, fixed options)
BUILDERS: dict[str, tuple[Callable, dict]] = {
    "REDQLoss": (redq_case, {}),
    "CrossQLoss": (crossq_case, {}),
    "TQCLoss": (tqc_case, {}),
}
