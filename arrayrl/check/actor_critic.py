"""``arrayrl check`` provider part: the policy-gradient and soft actor-critic losses vs TorchRL 0.14.1 and
``reference/losses/{ppo,a2c,sac}`` (merged into :data:`arrayrl.check.losses.CHECKS`; see :mod:`arrayrl.cli`).

Components (each runs ``n_cases`` random cases, options drawn per case as for ``loss.DQNLoss``):

* ``loss.PPOLoss``, ``loss.ClipPPOLoss``, ``loss.KLPENPPOLoss`` (:func:`ppo_case`): categorical, per-dimension
  Normal, IndependentNormal and TanhNormal actors; with or without a critic; the advantage given (GAE of another
  critic) or estimated inside ``forward`` (TorchRL's default GAE, TD(0), TD(1), TD(lambda), GAE); advantage
  normalisation, clip epsilon (symmetric or ``(low, high)``), value clipping, reductions, a collector mask, critic
  distances, Monte-Carlo entropy samples (TanhNormal), ``delay_actor`` + ``max_importance_ratio`` (clip), KL-penalty
  ``beta``/``dtarg`` (its adapted ``beta`` is compared after the call);
* ``loss.A2CLoss``, ``loss.ReinforceLoss`` (:func:`a2c_case`, :func:`reinforce_case`): the same actors and
  advantage sources, ``critic_coeff`` (or none), value clipping, the PopArt/percentile advantage normaliser (its
  statistics compared after the call), ``delay_value`` (REINFORCE);
* ``loss.MAPPOLoss``, ``loss.IPPOLoss`` (:func:`mappo_case`): ``[B, T, n_agents]`` data under ``("agents", ...)``,
  a central (MAPPO) or per-agent (IPPO) critic, PopArt/running value normalisers (statistics compared), the
  advantage given or from the default MultiAgentGAE;
* ``loss.SACLoss[v1]``, ``loss.SACLoss[v2]`` (:func:`sac_case`), ``loss.DiscreteSACLoss``
  (:func:`discrete_sac_case`): every delay setting, learned/fixed/clamped temperature (the gradient of
  ``log_alpha`` and the clamped ``log_alpha`` left after the call are compared), loss functions, reductions,
  estimators, ensemble sizes, prioritized weights, ``skip_done_states``;
* ``loss.DDPGLoss`` (:func:`ddpg_case`), ``loss.TD3Loss``, ``loss.TD3BCLoss`` (:func:`td3_case`): every delay
  setting, unit bounds or an asymmetric Bounded spec, loss functions, reductions, estimators, n-step discounts,
  ensemble sizes, prioritized weights, collector masks, ``deactivate_vmap``, binding noise clips (TorchRL's
  ``randn_like`` target-policy noise replayed).

How a case is made equal on both sides: torch's default dtype is float64 (:func:`~arrayrl.check._common.
torch_float64`), the batch is collected with TorchRL's actor (so the stored log-probabilities and distribution
parameters are TorchRL's), TorchRL's online (perturbed away from the targets) and target weights are copied into the
arrayrl loss, and TorchRL's standard-normal draws (``rsample``: TanhNormal entropy estimates, SAC's actions) are
(and ``torch.randn_like``: TD3) recorded during its call and replayed through :meth:`arrayrl.random.Generator.from_noise`
(:class:`~arrayrl.check.losses.NormalRecorder`). arrayrl runs with ``torchrl_compat=True`` (TorchRL's out keys,
its KL-penalty gradient, value clip against the freshly estimated value, SAC v1 critic chunks, target entropy of a
batched spec; docs/divergences.md). The comparison itself is :func:`arrayrl.check.losses.compare_with_torchrl`.

Reference (column "vs reference", with the oracle only): PPO family, A2C, REINFORCE and MAPPO/IPPO cases without a
value normaliser, advantage normaliser or collector mask are fed to ``reference.losses.ppo.ppo_loss`` /
``a2c.a2c_loss`` / ``a2c.reinforce_loss`` / ``a2c.mappo_loss`` with TorchRL's network outputs (log-probabilities,
exact entropies, analytic KLs, values, TorchRL's advantage and target); DiscreteSAC cases with
``reference.losses.sac.discrete_sac_loss`` (TD(0), no draws). TanhNormal entropies and KLs (Monte-Carlo) are left
out of the reference.

This module imports :mod:`.losses` inside its functions only, so either module may be imported first.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._common import TOLERANCE, Errors, torch_float64

__all__ = ["CHECKS", "BUILDERS", "policy_nets", "rollout", "ppo_case", "a2c_case", "reinforce_case", "mappo_case",
           "sac_case", "discrete_sac_case", "ddpg_case", "td3_case", "perturb_weight"]

AG = "agents"
NOBS, NA, NCAT = 3, 2, 3
REDUCTIONS = ("mean", "sum", "none")
LOSS_FUNCTIONS = ("l2", "smooth_l1", "l1")
IN_FORWARD = ("default", "td0", "td1", "tdlambda", "gae")


def _L() -> Any:
    from . import losses

    return losses


def _estimator(est: str) -> dict:
    return {"lmbda": 0.7} if est in ("tdlambda", "gae") else {}


# ------------------------------------------------------------------------------------------------------ networks
def policy_nets(kind: str, *, nested: bool = False, log_prob: bool = True, nobs: int = NOBS, na: int = NA,
                ncat: int = NCAT) -> tuple:
    """``(TorchRL actor, arrayrl actor factory, TorchRL parameter prefix)`` of one kind: ``categorical``
    (``ncat`` logits), ``normal`` (per-dimension Normal), ``independent`` (IndependentNormal), ``tanh``
    (TanhNormal); ``nested`` puts every key under ``("agents", ...)``; ``log_prob``: TorchRL's actor writes its
    log-probability (collection for the on-policy losses). Weights are copied into the arrayrl actor later."""
    import torch
    from tensordict.nn import NormalParamExtractor as TNPE
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import IndependentNormal as TIN
    from torchrl.modules import ProbabilisticActor as TPA
    from torchrl.modules import TanhNormal as TTN

    from ..distributions import Categorical, IndependentNormal, Normal, TanhNormal
    from ..nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor

    def k(name: str) -> Any:
        return (AG, name) if nested else name

    out = {"out_keys": [k("action")]} if nested else {}
    tkw = dict(out, return_log_prob=True) if log_prob else dict(out)
    if kind == "categorical":
        tnet = TensorDictModule(TMLP(in_features=nobs, out_features=ncat, num_cells=[8]), [k("observation")],
                                [k("logits")])
        tactor = TPA(tnet, in_keys=[k("logits")], distribution_class=torch.distributions.Categorical, **tkw)

        def actor() -> Any:
            net = KeyedModule(MLP(in_features=nobs, out_features=ncat, num_cells=[8]), in_keys=[k("observation")],
                              out_keys=[k("logits")])
            return ProbabilisticActor(net, in_keys=[k("logits")], distribution_class=Categorical, **out)

        return tactor, actor, "0."
    tdist = {"normal": torch.distributions.Normal, "independent": TIN, "tanh": TTN}[kind]
    adist = {"normal": Normal, "independent": IndependentNormal, "tanh": TanhNormal}[kind]
    tnet = TensorDictModule(torch.nn.Sequential(TMLP(in_features=nobs, out_features=2 * na, num_cells=[8]), TNPE()),
                            [k("observation")], [k("loc"), k("scale")])
    tactor = TPA(tnet, in_keys=[k("loc"), k("scale")], distribution_class=tdist, **tkw)

    def normal_actor() -> Any:
        mlp, ape = MLP(in_features=nobs, out_features=2 * na, num_cells=[8]), NormalParamExtractor()
        net = KeyedModule(lambda p, o: ape.apply({}, mlp.apply(p, o)), params=mlp.params, in_keys=[k("observation")],
                          out_keys=[k("loc"), k("scale")])
        return ProbabilisticActor(net, in_keys=[k("loc"), k("scale")], distribution_class=adist, **out)

    return tactor, normal_actor, "0.0."


def _value_pair(nobs: int = NOBS, cells: int = 8) -> tuple:
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import ValueOperator as TVO

    from ..nn import MLP, ValueOperator

    return (TVO(TMLP(in_features=nobs, out_features=1, num_cells=[cells]), in_keys=["observation"]),
            lambda: ValueOperator(MLP(in_features=nobs, out_features=1, num_cells=[cells]), in_keys=["observation"]))


def _t(x: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(np.array(x, copy=True))


def rollout(rng: np.random.Generator, tactor: Any, B: int, T: int, *, nested: int | None = None,
            mask: bool = False) -> Any:
    """A ``[B, T]`` TensorDict collected with TorchRL's actor (random exploration: torch's RNG; its log-prob and
    distribution parameters stored), episode ends inside and at the end (truncated there for some rows);
    ``nested=n``: observations ``[B, T, n, NOBS]`` under ``("agents", ...)`` with a team reward/done."""
    import torch
    from tensordict import TensorDict
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    lead = (B, T) if nested is None else (B, T, nested)

    def obs() -> Any:
        x = _t(rng.normal(size=lead + (NOBS,)))
        return {"observation": x} if nested is None else {AG: TensorDict({"observation": x}, list(lead))}

    td = TensorDict(obs(), [B, T])
    with set_exploration_type(ExplorationType.RANDOM), torch.no_grad():
        td = tactor(td)
    done = rng.random((B, T, 1)) < 0.2
    done[:, -1] = True
    term = done & (rng.random((B, T, 1)) < 0.7)
    td["next"] = TensorDict({**obs(), "reward": _t(rng.normal(size=(B, T, 1))), "done": _t(done),
                             "terminated": _t(term)}, [B, T])
    if mask:
        m = np.ones((B, T), dtype=bool)
        m[0, T // 2:] = False
        td[("collector", "mask")] = _t(m)
    return td.detach()


def _perturb(rng: np.random.Generator, scale: float, *param_tds: Any) -> None:
    import torch

    with torch.no_grad():
        for td in param_tds:
            for p in td.values(True, True):
                if p.dtype.is_floating_point:
                    p.add_(torch.as_tensor(scale * rng.normal(size=tuple(p.shape)), dtype=p.dtype))


def _given_advantage(td: Any, *, nested: bool = False) -> Any:
    """Advantage and value target from another critic's GAE (gamma 0.9, lambda 0.8), written into ``td``; its
    ``state_value`` stays as V_old."""
    import torch
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP
    from torchrl.objectives.value import GAE as TGAE
    from torchrl.objectives.value import MultiAgentGAE as TMAGAE

    if nested:
        other = TensorDictModule(TMLP(in_features=NOBS, out_features=1, num_cells=[4]), [(AG, "observation")],
                                 [(AG, "state_value")])
        est = TMAGAE(gamma=0.9, lmbda=0.8, value_network=other)
        est.set_keys(value=(AG, "state_value"), advantage=(AG, "advantage"), value_target=(AG, "value_target"))
    else:
        est = TGAE(gamma=0.9, lmbda=0.8, value_network=_value_pair(cells=4)[0])
    with torch.no_grad():
        est(td)
    return td.detach()


def _batch(td: Any, convert: Callable) -> dict:
    from ..interop import from_tensordict

    return convert(from_tensordict(td, np, copy=True))


def _buffers_after(norm: Any, state_attr: str) -> Callable:
    """``after`` hook: a TorchRL normaliser's public buffers vs the arrayrl loss's state after the call."""
    def after(al: Any, acc: Errors) -> None:
        state = getattr(al, state_attr)
        for name, buf in norm.named_buffers():
            if not name.startswith("_"):
                acc.value(np.asarray(state[name]), buf.detach().numpy(), f"{state_attr}.{name}")

    return after


# ------------------------------------------------------------------------------------------------------ reference
def _torch_dist(actor: Any, params: Any, td: Any) -> Any:
    import torch

    with torch.no_grad(), params.to_module(actor):
        return actor.get_dist(td.clone())


def _exact_entropy(kind: str, dist: Any) -> np.ndarray | None:
    """Per-sample entropy where it is exact (TanhNormal: Monte-Carlo, None)."""
    if kind == "tanh":
        return None
    h = dist.entropy().detach().numpy()
    return h.sum(-1) if kind == "normal" else h


def _log_prob(kind: str, dist: Any, action: Any) -> np.ndarray:
    lp = dist.log_prob(action).detach().numpy()
    return lp.sum(-1) if kind == "normal" else lp


def _kl(kind: str, td: Any) -> np.ndarray | None:
    """Analytic ``KL(pi_old || pi)`` per sample from the stored parameters and TorchRL's current ones (reference's
    formulas), None for TanhNormal."""
    ref = _L()._oracle("losses.ppo")
    if kind == "tanh":
        return None
    if kind == "categorical":
        old, new = td["__old_logits"].numpy(), td["logits"].numpy()
        return np.array([ref.categorical_kl(old[i], new[i]) for i in np.ndindex(*old.shape[:-1])]).reshape(
            old.shape[:-1])
    ol, os_, nl, ns = (td[k].numpy() for k in ("__old_loc", "__old_scale", "loc", "scale"))
    out = np.zeros(ol.shape[:-1])
    for i in np.ndindex(*ol.shape[:-1]):
        out[i] = sum(ref.normal_kl(ol[i][d], os_[i][d], nl[i][d], ns[i][d]) for d in range(ol.shape[-1]))
    return out


# ------------------------------------------------------------------------------------------------------ PPO
def ppo_case(rng: np.random.Generator, **opts: Any) -> Any:
    """PPOLoss / ClipPPOLoss / KLPENPPOLoss (option ``cls``: ``ppo``, ``clip``, ``klpen``; the others are drawn:
    ``actor``, ``critic``, ``advantage`` (``given`` or an estimator inside forward), ``normalize_advantage``,
    ``clip_epsilon``, ``clip_value``, ``reduction``, ``mask``, ``loss_critic_type``, ``samples_mc_entropy``,
    ``delay_actor``, ``beta``, ``dtarg``, ``B``, ``T``)."""
    import torchrl.objectives as TO

    from .. import objectives as O

    L = _L()
    pick = L._pick
    cls = pick(rng, opts, "cls", ("ppo", "clip", "klpen"))
    kind = pick(rng, opts, "actor", ("categorical", "normal", "independent", "tanh"))
    critic = pick(rng, opts, "critic", (True, True, False))
    adv = pick(rng, opts, "advantage", ("given",) + (IN_FORWARD if critic else ()))
    norm = pick(rng, opts, "normalize_advantage", (False, True))
    red = pick(rng, opts, "reduction", REDUCTIONS)
    mask = pick(rng, opts, "mask", (False, False, True))
    B, T = pick(rng, opts, "B", (2, 3)), pick(rng, opts, "T", (3, 5))
    kw: dict[str, Any] = dict(normalize_advantage=norm, reduction=red, entropy_coeff=0.05)
    if critic:
        kw.update(critic_coeff=0.7, clip_value=pick(rng, opts, "clip_value", (None, 0.1)),
                  loss_critic_type=pick(rng, opts, "loss_critic_type", LOSS_FUNCTIONS))
    else:
        kw["critic_coeff"] = None
    if kind == "tanh":
        kw["samples_mc_entropy"] = pick(rng, opts, "samples_mc_entropy", (1, 3))
    delay = False
    if cls == "clip":
        kw["clip_epsilon"] = pick(rng, opts, "clip_epsilon", (0.2, (0.1, 0.3)))
        delay = pick(rng, opts, "delay_actor", (False, False, True))
        if delay:
            kw.update(delay_actor=True, max_importance_ratio=1.3)
    if cls == "klpen":
        kw.update(beta=pick(rng, opts, "beta", (1.0, 0.5)), dtarg=pick(rng, opts, "dtarg", (0.01, 1e-4)))

    tactor, actor, prefix = policy_nets(kind)
    tcritic, critic_net = _value_pair() if critic else (None, None)
    tcls, acls = {"ppo": (TO.PPOLoss, O.PPOLoss), "clip": (TO.ClipPPOLoss, O.ClipPPOLoss),
                  "klpen": (TO.KLPENPPOLoss, O.KLPENPPOLoss)}[cls]
    tl = tcls(tactor, tcritic, **kw)
    hp = _estimator(adv)
    if adv not in ("given", "default"):
        tl.make_value_estimator(adv, gamma=0.9, **hp)
    td = rollout(rng, tactor, B, T, mask=mask)
    if adv == "given":
        td = _given_advantage(td)
    _perturb(rng, 0.5, tl.actor_network_params)  # ratios away from 1, some clipped
    online = {"actor_network": {"0": L._tree(tl.actor_network_params, prefix), "1": {}}}
    if critic:
        online["critic_network"] = L._tree(tl.critic_network_params)
    target = None
    if delay:
        _perturb(rng, 0.2, tl.target_actor_network_params)  # the proximal policy differs from mu and pi_theta
        target = {"actor_network": {"0": L._tree(tl.target_actor_network_params, prefix), "1": {}}}
    beta0 = float(tl.beta) if cls == "klpen" else None
    td_ref = td.clone()

    def build(convert: Callable) -> tuple:
        al = acls(actor(), critic_net() if critic else None, **kw, torchrl_compat=True)
        if adv not in ("given", "default"):
            al.make_value_estimator(adv, gamma=0.9, **hp)
        al.params = convert(online)
        if target is not None:
            al.target_params = convert(target)
        return al, _batch(td, convert)

    def after(al: Any, acc: Errors) -> None:
        acc.value(float(al.beta), float(tl.beta), "beta after the call")

    reference = None
    if not mask and not delay and kind != "normal":  # (per-dimension Normal: per-token ratios, not the oracle's)
        def reference() -> dict:
            lp, ent, kl, work = _pg_outputs(tl, td_ref, kind, prefix, critic)
            lo, hi = (kw["clip_epsilon"] if isinstance(kw.get("clip_epsilon"), tuple)
                      else (kw.get("clip_epsilon", 0.2),) * 2)
            want = _oracle_ppo().ppo_loss(
                lp, work["action_log_prob"].numpy(), work["advantage"].numpy()[..., 0], kind=cls, eps_low=lo,
                eps_high=hi, kl=kl if cls == "klpen" else None, beta=beta0 or 1.0, entropy=ent, entropy_coeff=0.05,
                value=work["__value"] if critic else None, old_value=work["__old_value"] if critic else None,
                value_target=work["value_target"].numpy()[..., 0] if critic else None,
                critic_coeff=0.7, loss_critic_type=kw.get("loss_critic_type", "smooth_l1"),
                clip_value=kw.get("clip_value"), normalize_advantage=norm, reduction=red)
            if cls == "klpen" and kl is None:
                want.pop("loss_objective")
            return want

    grads: list[tuple[str, tuple[str, ...], Any]] = [("actor_network_params", ("actor_network", "0"), prefix)]
    terms = {"loss_objective": ("actor_network",)}
    if critic:
        grads.append(("critic_network_params", ("critic_network",), ""))
        terms["loss_critic"] = ("critic_network",)
    return L.LossCase({"ppo": "PPOLoss", "clip": "ClipPPOLoss", "klpen": "KLPENPPOLoss"}[cls], opts, tl, td, build,
                      grads, terms, reference, td_error=False, replay_draws=True,
                      after=after if cls == "klpen" else None)


def _oracle_ppo() -> Any:
    return _L()._oracle("losses.ppo")


def _pg_outputs(tl: Any, td: Any, kind: str, prefix: str, critic: bool, *, value_key: Any = "state_value") -> tuple:
    """TorchRL's network outputs for the reference: per-sample log-prob of the data action, exact entropy, analytic
    KL (old parameters vs current), and a TensorDict with the advantage/value target TorchRL's estimator gives
    (``td``'s own when given), ``__value`` (current critic) and ``__old_value`` (V_old: the stored one, else the
    freshly estimated value, TorchRL's clip reference)."""
    import torch

    work = td.clone()
    for name in ("logits", "loc", "scale"):
        if name in work.keys():
            work[f"__old_{name}"] = work[name]
    has_adv = "advantage" in work.keys()
    old_value = work["state_value"].numpy()[..., 0].copy() if has_adv and "state_value" in work.keys() else None
    if not has_adv:
        with torch.no_grad():
            p = tl.critic_network_params.detach()
            tl.value_estimator(work, params=p, target_params=p)
    actor = tl.actor_network
    with torch.no_grad(), tl.actor_network_params.to_module(actor):
        dist = actor.get_dist(work)
    lp = _log_prob(kind, dist, work["action"])
    ent = _exact_entropy(kind, dist)
    kl = _kl(kind, work)
    if critic:
        v = _L()._run_net(tl.critic_network, tl.critic_network_params, work.select("observation"))
        work["__value"] = v[value_key].numpy()[..., 0]
        work["__old_value"] = old_value if old_value is not None else work["__value"]
    return lp, ent, kl, work


# ------------------------------------------------------------------------------------------------------ A2C
def a2c_case(rng: np.random.Generator, **opts: Any) -> Any:
    """A2CLoss (options ``actor``, ``advantage``, ``critic_coeff``, ``clip_value``, ``reduction``, ``mask``,
    ``loss_critic_type``, ``samples_mc_entropy``, ``advantage_norm``, ``B``, ``T``)."""
    return _pg_case(rng, "a2c", opts)


def reinforce_case(rng: np.random.Generator, **opts: Any) -> Any:
    """ReinforceLoss (options ``actor``, ``advantage``, ``clip_value``, ``reduction``, ``mask``,
    ``loss_critic_type``, ``delay_value``, ``B``, ``T``)."""
    return _pg_case(rng, "reinforce", opts)


def _pg_case(rng: np.random.Generator, cls: str, opts: dict) -> Any:
    import torch
    import torchrl.objectives as TO
    from torchrl.modules.value_norm import PercentileValueNorm as TPercentile
    from torchrl.modules.value_norm import PopArtValueNorm as TPopArt

    from .. import objectives as O
    from ..objectives.value_norm import PercentileValueNorm, PopArtValueNorm

    L = _L()
    pick = L._pick
    a2c = cls == "a2c"
    # TorchRL's A2C cannot broadcast a per-dimension Normal's log-prob against its advantage
    kind = pick(rng, opts, "actor", ("categorical", "independent", "tanh") + (() if a2c else ("normal",)))
    adv = pick(rng, opts, "advantage", ("given",) + IN_FORWARD)
    red = pick(rng, opts, "reduction", REDUCTIONS)
    mask = pick(rng, opts, "mask", (False, False, True))
    cv = pick(rng, opts, "clip_value", (None, 0.1))
    B, T = pick(rng, opts, "B", (2, 3)), pick(rng, opts, "T", (3, 5))
    kw: dict[str, Any] = dict(reduction=red, clip_value=cv,
                              loss_critic_type=pick(rng, opts, "loss_critic_type", LOSS_FUNCTIONS))
    akw: dict[str, Any] = {}
    norm_pair = None
    if a2c:
        kw.update(critic_coeff=pick(rng, opts, "critic_coeff", (0.7, None)), entropy_coeff=0.05)
        if kind == "tanh":
            kw["samples_mc_entropy"] = pick(rng, opts, "samples_mc_entropy", (1, 3))
        vn = pick(rng, opts, "advantage_norm", (None, None, "popart", "percentile"))
        if vn is not None:
            norm_pair = {"popart": (TPopArt(shape=1, beta=0.9), PopArtValueNorm(shape=1, beta=0.9)),
                         "percentile": (TPercentile(shape=1, rate=0.5, min_scale=0.1),
                                        PercentileValueNorm(shape=1, rate=0.5, min_scale=0.1))}[vn]
    delay = not a2c and pick(rng, opts, "delay_value", (False, True))
    if delay:
        kw["delay_value"] = True

    tactor, actor, prefix = policy_nets(kind)
    tcritic, critic_net = _value_pair()
    tcls, acls = (TO.A2CLoss, O.A2CLoss) if a2c else (TO.ReinforceLoss, O.ReinforceLoss)
    tl = tcls(tactor, tcritic, **kw, **({"advantage_norm": norm_pair[0]} if norm_pair else {}))
    hp = _estimator(adv)
    if adv not in ("given", "default"):
        tl.make_value_estimator(adv, gamma=0.9, **hp)
    td = rollout(rng, tactor, B, T, mask=mask)
    if adv == "given":
        td = _given_advantage(td)
        if cv is not None:
            td["state_value"] = _t(rng.normal(size=(B, T, 1)))  # V_old for the clip
    _perturb(rng, 0.5, tl.actor_network_params)
    if delay:
        _perturb(rng, 0.3, tl.critic_network_params)  # the online critic moves away from the target
    online = {"actor_network": {"0": L._tree(tl.actor_network_params, prefix), "1": {}},
              "critic_network": L._tree(tl.critic_network_params)}
    target = {"critic_network": L._tree(tl.target_critic_network_params)} if delay else None
    td_ref = td.clone()

    def build(convert: Callable) -> tuple:
        extra = dict(akw)
        if norm_pair is not None:
            extra["advantage_norm"] = type(norm_pair[1])(**_norm_kwargs(norm_pair[1]))
        al = acls(actor(), critic_net(), **kw, **extra, torchrl_compat=True)
        if adv not in ("given", "default"):
            al.make_value_estimator(adv, gamma=0.9, **hp)
        al.params = convert(online)
        if target is not None:
            al.target_params = convert(target)
        return al, _batch(td, convert)

    reference = None
    if not mask and norm_pair is None and not delay:
        def reference() -> dict:
            lp, ent, _, work = _pg_outputs(tl, td_ref, kind, prefix, True)
            R = L._oracle("losses.a2c")
            common = dict(old_value=work["__old_value"], loss_critic_type=kw["loss_critic_type"], clip_value=cv,
                          reduction=red)
            adv_ = work["advantage"].numpy()[..., 0]
            y = work["value_target"].numpy()[..., 0]
            if a2c:
                return R.a2c_loss(lp, adv_, entropy=ent, entropy_coeff=0.05, value=work["__value"], value_target=y,
                                  critic_coeff=kw["critic_coeff"], **common)
            return R.reinforce_loss(lp, adv_, work["__value"], y, **common)

    return L.LossCase("A2CLoss" if a2c else "ReinforceLoss", opts, tl, td, build,
                      [("actor_network_params", ("actor_network", "0"), prefix),
                       ("critic_network_params", ("critic_network",), "")],
                      {("loss_objective" if a2c else "loss_actor"): ("actor_network",)}, reference, td_error=False,
                      replay_draws=True,
                      after=_buffers_after(norm_pair[0], "advantage_norm_state") if norm_pair else None)


def _norm_kwargs(norm: Any) -> dict:
    """Constructor arguments of a fresh copy of an arrayrl normaliser (each build gets its own)."""
    from ..objectives.value_norm import PercentileValueNorm

    if isinstance(norm, PercentileValueNorm):
        return dict(shape=1, rate=0.5, min_scale=0.1)
    return dict(shape=1, beta=0.9)


# ------------------------------------------------------------------------------------------------------ MAPPO
def mappo_case(rng: np.random.Generator, **opts: Any) -> Any:
    """MAPPOLoss (central critic) / IPPOLoss (per-agent critic) (option ``cls``: ``mappo`` or ``ippo``; drawn:
    ``actor``, ``value_norm``, ``clip_value``, ``reduction``, ``advantage`` (``given``: another critic's
    MultiAgentGAE and a stored V_old; ``default``: the loss's MultiAgentGAE), ``n_agents``, ``B``, ``T``)."""
    import torch
    import torchrl.modules.value_norm as tvn
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP
    from torchrl.objectives.multiagent import IPPOLoss as TIPPO
    from torchrl.objectives.multiagent import MAPPOLoss as TMAPPO

    from .._backend import namespace_of
    from ..nn import MLP, KeyedModule
    from ..objectives.multiagent.mappo import IPPOLoss, MAPPOLoss
    from ..objectives.value_norm import PopArtValueNorm, RunningValueNorm

    L = _L()
    pick = L._pick
    cls = pick(rng, opts, "cls", ("mappo", "ippo"))
    kind = pick(rng, opts, "actor", ("categorical", "independent", "tanh"))
    vnorm = pick(rng, opts, "value_norm", (None, "popart", "running"))
    cv = pick(rng, opts, "clip_value", (None, 0.1))
    red = pick(rng, opts, "reduction", REDUCTIONS)
    adv = pick(rng, opts, "advantage", ("given", "default"))
    N = pick(rng, opts, "n_agents", (2, 3))
    B, T = pick(rng, opts, "B", (2, 3)), pick(rng, opts, "T", (3, 4))
    central = cls == "mappo"
    kw = dict(reduction=red, clip_value=cv, critic_coeff=0.8, entropy_coeff=0.02)
    keys = dict(value=(AG, "state_value"))
    if adv == "given":
        keys.update(advantage=(AG, "advantage"), value_target=(AG, "value_target"))
    vn_pair: tuple[Any, Callable[[], Any]] | None = None
    if vnorm == "popart":
        vn_pair = (tvn.PopArtValueNorm(shape=1, beta=0.7), lambda: PopArtValueNorm(shape=1, beta=0.7))
    elif vnorm == "running":
        vn_pair = (tvn.RunningValueNorm(shape=1), lambda: RunningValueNorm(shape=1))

    tactor, actor, aprefix = policy_nets(kind, nested=True)
    if central:
        tcritic = TensorDictModule(torch.nn.Sequential(torch.nn.Flatten(-2),
                                                       TMLP(in_features=N * NOBS, out_features=N, num_cells=[8]),
                                                       torch.nn.Unflatten(-1, (N, 1))),
                                   [(AG, "observation")], [(AG, "state_value")])
        cprefix = "1."
    else:
        tcritic = TensorDictModule(TMLP(in_features=NOBS, out_features=1, num_cells=[8]), [(AG, "observation")],
                                   [(AG, "state_value")])
        cprefix = ""

    def critic() -> Any:
        if not central:
            return KeyedModule(MLP(in_features=NOBS, out_features=1, num_cells=[8]), in_keys=[(AG, "observation")],
                               out_keys=[(AG, "state_value")])
        mlp = MLP(in_features=N * NOBS, out_features=N, num_cells=[8])

        def f(p: Any, o: Any) -> Any:
            lead = tuple(o.shape[:-2])
            h = mlp.apply(p, namespace_of(o).reshape(o, lead + (N * NOBS,)))
            return namespace_of(h).reshape(h, lead + (N, 1))

        return KeyedModule(f, params=mlp.params, in_keys=[(AG, "observation")], out_keys=[(AG, "state_value")])

    tcls, acls = (TMAPPO, MAPPOLoss) if central else (TIPPO, IPPOLoss)
    vn_kw: dict[str, Any] = {"value_norm": vn_pair[0]} if vn_pair else {}
    tl = tcls(tactor, tcritic, **kw, **vn_kw)
    tl.set_keys(**keys)
    td = rollout(rng, tactor, B, T, nested=N).exclude((AG, "logits"), (AG, "loc"), (AG, "scale"))
    if adv == "given":
        td = _given_advantage(td, nested=True)
        td[(AG, "state_value")] = _t(rng.normal(size=(B, T, N, 1)))
    _perturb(rng, 0.5, tl.actor_network_params)
    online = {"actor_network": {"0": L._tree(tl.actor_network_params, aprefix), "1": {}},
              "critic_network": L._tree(tl.critic_network_params, cprefix)}
    td_ref = td.clone()

    def build(convert: Callable) -> tuple:
        al = acls(actor(), critic(), **kw, **({"value_norm": vn_pair[1]()} if vn_pair else {}),
                  torchrl_compat=True).set_keys(**keys)
        al.params = convert(online)
        return al, _batch(td, convert)

    reference = None
    if vnorm is None:
        def reference() -> dict:
            work = td_ref.clone()
            if adv != "given":  # TorchRL's MultiAgentGAE; V_old is then the freshly estimated value (torchrl_compat)
                with torch.no_grad():
                    p = tl.critic_network_params.detach()
                    tl.value_estimator(work, params=p, target_params=p)
            with torch.no_grad(), tl.actor_network_params.to_module(tl.actor_network):
                dist = tl.actor_network.get_dist(work)
            lp = dist.log_prob(work[AG, "action"]).numpy()
            ent = _exact_entropy(kind, dist)
            v = L._run_net(tl.critic_network, tl.critic_network_params, work.select((AG, "observation")))
            ak, yk = tl.tensor_keys.advantage, tl.tensor_keys.value_target
            want = L._oracle("losses.a2c").mappo_loss(
                lp, work[AG, "action_log_prob"].numpy(), _per_agent(work[ak].numpy(), N),
                v[AG, "state_value"].numpy()[..., 0], _per_agent(work[yk].numpy(), N),
                old_value=work[AG, "state_value"].numpy()[..., 0], entropy=ent, entropy_coeff=0.02,
                critic_coeff=0.8, clip_value=cv, reduction=red)
            return want

    return L.LossCase("MAPPOLoss" if central else "IPPOLoss", opts, tl, td, build,
                      [("actor_network_params", ("actor_network", "0"), aprefix),
                       ("critic_network_params", ("critic_network",), cprefix)],
                      {"loss_objective": ("actor_network",), "loss_critic": ("critic_network",)}, reference,
                      td_error=False, replay_draws=True,
                      after=_buffers_after(tl.value_norm, "value_norm_state") if vn_pair else None)


def _per_agent(x: np.ndarray, n: int) -> np.ndarray:
    """``[B, T, n, 1]`` (or a team ``[B, T, 1]`` broadcast to the agents) -> ``[B, T, n]``."""
    return np.broadcast_to(x[..., 0] if x.shape[-2:] == (n, 1) else x, x.shape[:2] + (n,))


# ------------------------------------------------------------------------------------------------------ SAC
#: temperature schemes: name -> (alpha_init, min_alpha, max_alpha, fixed_alpha)
ALPHAS = {
    "learned": (1.0, None, None, False),
    "fixed": (0.3, None, None, True),
    "clamp_max": (5.0, None, 2.0, False),
    "clamp_min": (0.01, 0.1, None, False),
    "clamp_both": (0.05, 0.2, 3.0, False),
    "fixed_clamped": (5.0, 0.1, 2.0, True),
}


def _transition(rng: np.random.Generator, B: int, action: np.ndarray, weights: bool) -> Any:
    from tensordict import TensorDict

    term = rng.random((B, 1)) < 0.3
    done = term | (rng.random((B, 1)) < 0.3)  # truncations too
    td = TensorDict({"observation": _t(rng.normal(size=(B, NOBS))), "action": _t(action),
                     ("next", "observation"): _t(rng.normal(size=(B, NOBS))),
                     ("next", "reward"): _t(rng.normal(size=(B, 1))), ("next", "done"): _t(done),
                     ("next", "terminated"): _t(term)}, [B])
    if weights:
        td["priority_weight"] = _t(rng.random(B) + 0.5)
    return td


def _alpha_after(tl: Any) -> Callable:
    def after(al: Any, acc: Errors) -> None:
        if not al.fixed_alpha:
            acc.value(np.asarray(al.params["log_alpha"]), tl.log_alpha.detach().numpy(), "log_alpha after the call")

    return after


def sac_case(rng: np.random.Generator, **opts: Any) -> Any:
    """SACLoss (option ``version``: 1 or 2; drawn: ``actor`` (tanh, independent), ``delay_actor``,
    ``delay_qvalue``, ``delay_value``, ``alpha`` (:data:`ALPHAS`), ``loss_function``, ``reduction``, ``estimator``,
    ``num_qvalue_nets``, ``skip_done_states`` (v2), ``priority_weight``, ``deactivate_vmap``)."""
    import torchrl.objectives as TO
    from torchrl.data import Bounded
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import ValueOperator as TVO

    import torch

    from ..nn import MLP, ValueOperator
    from ..objectives.sac import SACLoss

    L = _L()
    pick = L._pick
    version = pick(rng, opts, "version", (1, 2))
    dist = pick(rng, opts, "actor", ("tanh", "independent"))
    da, dq, dv = (pick(rng, opts, k, (False, True)) for k in ("delay_actor", "delay_qvalue", "delay_value"))
    alpha = pick(rng, opts, "alpha", tuple(ALPHAS))
    fn = pick(rng, opts, "loss_function", LOSS_FUNCTIONS)
    red = pick(rng, opts, "reduction", REDUCTIONS)
    est = pick(rng, opts, "estimator", ("td0", "td1", "tdlambda"))
    n_q = pick(rng, opts, "num_qvalue_nets", (1, 2, 3))
    skip = version == 2 and pick(rng, opts, "skip_done_states", (False, False, True))
    weighted = pick(rng, opts, "priority_weight", (False, True))
    novmap = pick(rng, opts, "deactivate_vmap", (False, False, True))
    B = 6  # SAC v1 (TorchRL) splits the batch into num_qvalue_nets chunks
    tactor, actor, prefix = policy_nets(dist, log_prob=False)
    tq = TVO(TMLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
    tv, value = _value_pair() if version == 1 else (None, None)
    a0, amin, amax, fixed = ALPHAS[alpha]
    kw = dict(num_qvalue_nets=n_q, loss_function=fn, alpha_init=a0, min_alpha=amin, max_alpha=amax,
              fixed_alpha=fixed, delay_actor=da, delay_qvalue=dq, delay_value=dv, reduction=red,
              skip_done_states=skip, action_spec=Bounded(-torch.ones(NA), torch.ones(NA), (NA,)),
              scalar_output_mode="non_tensor" if red == "none" else None, deactivate_vmap=novmap)
    tl = TO.SACLoss(tactor, tq, tv, **kw)
    hp = _estimator(est)
    tl.make_value_estimator(est, gamma=0.9, **hp)
    _perturb(rng, 0.1, tl.actor_network_params, tl.qvalue_network_params,
             *([tl.value_network_params] if version == 1 else []))
    online: dict[str, Any] = {"actor_network": {"0": L._tree(tl.actor_network_params, prefix), "1": {}},
                              "qvalue_network": L._tree(tl.qvalue_network_params)}
    if version == 1:
        online["value_network"] = L._tree(tl.value_network_params)
    if not fixed:
        online["log_alpha"] = tl.log_alpha.detach().numpy().copy()
    targets = {}
    if da:
        targets["actor_network"] = {"0": L._tree(tl.target_actor_network_params, prefix), "1": {}}
    if dq:
        targets["qvalue_network"] = L._tree(tl.target_qvalue_network_params)
    if version == 1 and dv:
        targets["value_network"] = L._tree(tl.target_value_network_params)
    td = _transition(rng, B, rng.uniform(-0.9, 0.9, (B, NA)), weighted)
    keep = ~td["next", "done"].numpy()[:, 0]

    def fix_draws(draws: list) -> list:
        if not skip:
            return draws
        full = np.zeros((B, NA))  # TorchRL draws a' for the kept rows only; arrayrl draws [B, A] and masks
        full[keep] = draws[0]
        return [full] + draws[1:]

    def build(convert: Callable) -> tuple:
        q = ValueOperator(MLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
        al = SACLoss(actor(), q, value() if version == 1 else None, torchrl_compat=True, **kw)
        al.make_value_estimator(est, gamma=0.9, **hp)
        al.params = convert(online)
        for name, tree in targets.items():
            al._set_target(name, convert(tree))
        return al, _batch(td, convert)

    grads = [("actor_network_params", ("actor_network", "0"), prefix),
             ("qvalue_network_params", ("qvalue_network",), "")]
    if version == 1:
        grads.append(("value_network_params", ("value_network",), ""))
    if not fixed:
        grads.append(("log_alpha", ("log_alpha",), ""))
    terms = {"loss_actor": ("actor_network",), "loss_qvalue": ("qvalue_network",)}
    return L.LossCase(f"SACLoss[v{version}]", opts, tl, td, build, grads, terms, None, replay_draws=True,
                      fix_draws=fix_draws, after=_alpha_after(tl))


def discrete_sac_case(rng: np.random.Generator, **opts: Any) -> Any:
    """DiscreteSACLoss (drawn: ``action_space``, ``alpha``, ``loss_function``, ``reduction``, ``estimator``,
    ``num_qvalue_nets``, ``skip_done_states``, ``priority_weight``, ``delay_qvalue``, ``B``)."""
    import torch
    import torchrl.objectives as TO
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import OneHotCategorical as TOHC
    from torchrl.modules import ValueOperator as TVO
    from tensordict.nn import TensorDictModule
    from torchrl.modules import ProbabilisticActor as TPA

    from ..distributions import Categorical, OneHotCategorical
    from ..nn import MLP, KeyedModule, ProbabilisticActor, ValueOperator
    from ..objectives.sac import DiscreteSACLoss

    L = _L()
    pick = L._pick
    space = pick(rng, opts, "action_space", ("categorical", "one_hot"))
    alpha = pick(rng, opts, "alpha", tuple(ALPHAS))
    fn = pick(rng, opts, "loss_function", LOSS_FUNCTIONS)
    red = pick(rng, opts, "reduction", REDUCTIONS)
    est = pick(rng, opts, "estimator", ("td0", "td1", "tdlambda"))
    n_q = pick(rng, opts, "num_qvalue_nets", (1, 2, 3))
    skip = pick(rng, opts, "skip_done_states", (False, True))
    weighted = pick(rng, opts, "priority_weight", (False, True))
    dq = pick(rng, opts, "delay_qvalue", (True, False))
    B = pick(rng, opts, "B", (3, 6))
    nA = 4
    tdist = TOHC if space == "one_hot" else torch.distributions.Categorical
    tactor = TPA(TensorDictModule(TMLP(in_features=NOBS, out_features=nA, num_cells=[8]), ["observation"],
                                  ["logits"]), in_keys=["logits"], distribution_class=tdist)
    tq = TVO(TMLP(in_features=NOBS, out_features=nA, num_cells=[8]), in_keys=["observation"],
             out_keys=["action_value"])
    a0, amin, amax, fixed = ALPHAS[alpha]
    kw = dict(action_space=space, num_actions=nA, num_qvalue_nets=n_q, loss_function=fn, alpha_init=a0,
              min_alpha=amin, max_alpha=amax, fixed_alpha=fixed, reduction=red, skip_done_states=skip,
              delay_qvalue=dq, scalar_output_mode="non_tensor" if red == "none" else None)
    tl = TO.DiscreteSACLoss(tactor, tq, **kw)
    hp = _estimator(est)
    tl.make_value_estimator(est, gamma=0.9, **hp)
    _perturb(rng, 0.1, tl.actor_network_params, tl.qvalue_network_params)
    online: dict[str, Any] = {"actor_network": {"0": L._tree(tl.actor_network_params, "0."), "1": {}},
                              "qvalue_network": L._tree(tl.qvalue_network_params)}
    if not fixed:
        online["log_alpha"] = tl.log_alpha.detach().numpy().copy()
    target = L._tree(tl.target_qvalue_network_params) if dq else None
    action = L._discrete_action(rng, (B,), nA, space)
    td = _transition(rng, B, action, weighted)
    log_alpha0 = float(tl.log_alpha.detach()) if not fixed else float(np.log(a0))
    target_entropy = float(tl.target_entropy)
    td_ref = td.clone()

    def build(convert: Callable) -> tuple:
        actor = ProbabilisticActor(KeyedModule(MLP(in_features=NOBS, out_features=nA, num_cells=[8]),
                                               in_keys=["observation"], out_keys=["logits"]), in_keys=["logits"],
                                   distribution_class=OneHotCategorical if space == "one_hot" else Categorical)
        q = ValueOperator(MLP(in_features=NOBS, out_features=nA, num_cells=[8]), in_keys=["observation"],
                          out_keys=["action_value"])
        al = DiscreteSACLoss(actor, q, torchrl_compat=True, **kw)
        al.make_value_estimator(est, gamma=0.9, **hp)
        al.params = convert(online)
        if target is not None:
            al._set_target("qvalue_network", convert(target))
        return al, _batch(td, convert)

    def after(al: Any, acc: Errors) -> None:
        _alpha_after(tl)(al, acc)
        acc.value(al.target_entropy, float(tl.target_entropy), "target_entropy")

    reference = None
    if est == "td0":
        def reference() -> dict:
            with torch.no_grad():
                q_all = tl._vmap_qnetworkN0(td_ref.select("observation").clone(), tl.qvalue_network_params)
                q_next = tl._vmap_qnetworkN0(td_ref["next"].select("observation").clone(),
                                                   tl.target_qvalue_network_params)
            logits = L._run_net(tl.actor_network, tl.actor_network_params, td_ref.select("observation"))["logits"]
            nlogits = L._run_net(tl.actor_network, tl.actor_network_params,
                                 td_ref["next"].select("observation"))["logits"]
            nxt = td_ref["next"]
            return L._oracle("losses.sac").discrete_sac_loss(
                q_all["action_value"].numpy(), td_ref["action"].numpy(), q_next["action_value"].numpy(),
                nlogits.numpy(), logits.numpy(), nxt["reward"].numpy(), nxt["terminated"].numpy(), gamma=0.9,
                log_alpha=log_alpha0, target_entropy=target_entropy, min_alpha=amin, max_alpha=amax,
                loss_function=fn, reduction=red,
                weights=td_ref["priority_weight"].numpy() if weighted else None, action_space=space,
                skip_done_states=skip, done=nxt["done"].numpy(), torchrl_compat=True)

    grads = [("actor_network_params", ("actor_network", "0"), "0."), ("qvalue_network_params", ("qvalue_network",), "")]
    if not fixed:
        grads.append(("log_alpha", ("log_alpha",), ""))
    return L.LossCase("DiscreteSACLoss", opts, tl, td, build, grads,
                      {"loss_actor": ("actor_network",), "loss_qvalue": ("qvalue_network",)}, reference,
                      after=after)


# ------------------------------------------------------------------------------------------------------ DDPG / TD3
def _deterministic_nets() -> tuple:
    """A tanh actor obs -> action and a critic (obs, action) -> Q (TorchRL modules, arrayrl factories)."""
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import ValueOperator as TVO

    from ..nn import MLP, KeyedModule, ValueOperator

    tactor = TensorDictModule(TMLP(in_features=NOBS, out_features=NA, num_cells=[8], activate_last_layer=True),
                              ["observation"], ["action"])
    tq = TVO(TMLP(in_features=NOBS + NA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])

    def actor() -> Any:
        return KeyedModule(MLP(in_features=NOBS, out_features=NA, num_cells=[8], activate_last_layer=True),
                           in_keys=["observation"], out_keys=["action"])

    def q() -> Any:
        return ValueOperator(MLP(in_features=NOBS + NA, out_features=1, num_cells=[8]),
                             in_keys=["observation", "action"])

    return tactor, tq, actor, q


def _off_policy_batch(rng: np.random.Generator, B: int, low: Any, high: Any, weighted: bool, mask: bool,
                      steps: bool) -> Any:
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    td = _transition(rng, B, low + (high - low) * rng.random((B, NA)), weighted)
    if mask:
        m = np.ones(B, dtype=bool)
        m[1] = m[B - 2] = False
        td["collector", "mask"] = _t(m)
    if steps:
        td["steps_to_next_obs"] = _t(rng.integers(1, 4, (B, 1)))
    return td


def ddpg_case(rng: np.random.Generator, **opts: Any) -> Any:
    """DDPGLoss (drawn: ``delay_actor``, ``delay_value``, ``loss_function``, ``reduction``, ``estimator``,
    ``priority_weight``, ``mask``, ``n_step`` (``steps_to_next_obs``))."""
    import torchrl.objectives as TO

    from ..objectives.ddpg import DDPGLoss

    L = _L()
    pick = L._pick
    da, dv = pick(rng, opts, "delay_actor", (False, True)), pick(rng, opts, "delay_value", (False, True))
    fn, red = pick(rng, opts, "loss_function", LOSS_FUNCTIONS), pick(rng, opts, "reduction", REDUCTIONS)
    est = pick(rng, opts, "estimator", ("td0", "td1", "tdlambda"))
    weighted, mask = pick(rng, opts, "priority_weight", (False, True)), pick(rng, opts, "mask", (False, True))
    steps = est == "td0" and pick(rng, opts, "n_step", (False, True))
    B = 6
    tactor, tq, actor, q = _deterministic_nets()
    kw = dict(loss_function=fn, delay_actor=da, delay_value=dv, reduction=red)
    tl = TO.DDPGLoss(tactor, tq, **kw)
    hp = _estimator(est)
    tl.make_value_estimator(est, gamma=0.9, **hp)
    _perturb(rng, 0.1, tl.actor_network_params, tl.value_network_params)
    online = {"actor_network": L._tree(tl.actor_network_params), "value_network": L._tree(tl.value_network_params)}
    targets = {}
    if da:
        targets["actor_network"] = L._tree(tl.target_actor_network_params)
    if dv:
        targets["value_network"] = L._tree(tl.target_value_network_params)
    td = _off_policy_batch(rng, B, -1.0, 1.0, weighted, mask, steps)

    def build(convert: Callable) -> tuple:
        al = DDPGLoss(actor(), q(), **kw)
        al.make_value_estimator(est, gamma=0.9, **hp)
        al.params = convert(online)
        for name, tree in targets.items():
            al._set_target(name, convert(tree))
        return al, _batch(td, convert)

    return L.LossCase("DDPGLoss", opts, tl, td, build, [("actor_network_params", ("actor_network",), ""),
                                                       ("value_network_params", ("value_network",), "")],
                      {"loss_actor": ("actor_network",), "loss_value": ("value_network",)}, None, replay_draws=True)


def td3_case(rng: np.random.Generator, **opts: Any) -> Any:
    """TD3Loss / TD3BCLoss (option ``cls``: ``td3`` or ``td3bc``; drawn: ``delay_actor``, ``delay_qvalue``,
    ``bounds`` (``unit``: bounds (-1, 1); ``spec``: an asymmetric Bounded spec, torchrl_compat's absolute noise),
    ``loss_function``, ``reduction``, ``estimator``, ``num_qvalue_nets``, ``priority_weight``, ``mask``,
    ``n_step``, ``deactivate_vmap``, ``policy_noise``/``noise_clip``). TorchRL's ``randn_like`` target-policy noise
    is replayed."""
    import torch
    import torchrl.objectives as TO
    from torchrl.data import Bounded

    from ..objectives.td3 import TD3BCLoss, TD3Loss

    L = _L()
    pick = L._pick
    cls = pick(rng, opts, "cls", ("td3", "td3bc"))
    da, dq = pick(rng, opts, "delay_actor", (False, True)), pick(rng, opts, "delay_qvalue", (False, True))
    bounds = pick(rng, opts, "bounds", ("unit", "spec"))
    fn, red = pick(rng, opts, "loss_function", LOSS_FUNCTIONS), pick(rng, opts, "reduction", REDUCTIONS)
    est = pick(rng, opts, "estimator", ("td0", "td1", "tdlambda"))
    n_q = pick(rng, opts, "num_qvalue_nets", (1, 2, 3))
    weighted, mask = pick(rng, opts, "priority_weight", (False, True)), pick(rng, opts, "mask", (False, True))
    steps = est == "td0" and pick(rng, opts, "n_step", (False, True))
    novmap = pick(rng, opts, "deactivate_vmap", (False, False, True))
    noise, clip = pick(rng, opts, "policy_noise", ((0.2, 0.5), (2.0, 0.3)))
    B = 6
    tactor, tq, actor, q = _deterministic_nets()
    if bounds == "spec":
        low: float | list[float]
        high: float | list[float]
        low, high = [-1.0, -0.5], [1.0, 0.8]
        bkw: dict[str, Any] = {"action_spec": Bounded(torch.tensor(low), torch.tensor(high), (NA,))}
    else:
        low, high = -1.0, 1.0
        bkw = {"bounds": (low, high)}
    kw = dict(num_qvalue_nets=n_q, loss_function=fn, delay_actor=da, delay_qvalue=dq, reduction=red,
              deactivate_vmap=novmap, policy_noise=noise, noise_clip=clip)
    tcls, acls = (TO.TD3Loss, TD3Loss) if cls == "td3" else (TO.TD3BCLoss, TD3BCLoss)
    tl = tcls(tactor, tq, **bkw, **kw)
    hp = _estimator(est)
    tl.make_value_estimator(est, gamma=0.9, **hp)
    _perturb(rng, 0.1, tl.actor_network_params, tl.qvalue_network_params)
    online = {"actor_network": L._tree(tl.actor_network_params), "qvalue_network": L._tree(tl.qvalue_network_params)}
    targets = {}
    if da:
        targets["actor_network"] = L._tree(tl.target_actor_network_params)
    if dq:
        targets["qvalue_network"] = L._tree(tl.target_qvalue_network_params)
    td = _off_policy_batch(rng, B, low, high, weighted, mask, steps)

    def build(convert: Callable) -> tuple:
        al = acls(actor(), q(), **bkw, **kw, torchrl_compat=True)
        al.make_value_estimator(est, gamma=0.9, **hp)
        al.params = convert(online)
        for name, tree in targets.items():
            al._set_target(name, convert(tree))
        return al, _batch(td, convert)

    return L.LossCase("TD3Loss" if cls == "td3" else "TD3BCLoss", opts, tl, td, build,
                      [("actor_network_params", ("actor_network",), ""),
                       ("qvalue_network_params", ("qvalue_network",), "")],
                      {"loss_actor": ("actor_network",), "loss_qvalue": ("qvalue_network",)}, None, replay_draws=True)


# ------------------------------------------------------------------------------------------------------ registry
#: family -> (builder, fixed options)
BUILDERS: dict[str, tuple[Callable, dict]] = {
    "PPOLoss": (ppo_case, {"cls": "ppo"}),
    "ClipPPOLoss": (ppo_case, {"cls": "clip"}),
    "KLPENPPOLoss": (ppo_case, {"cls": "klpen"}),
    "A2CLoss": (a2c_case, {}),
    "ReinforceLoss": (reinforce_case, {}),
    "MAPPOLoss": (mappo_case, {"cls": "mappo"}),
    "IPPOLoss": (mappo_case, {"cls": "ippo"}),
    "SACLoss[v1]": (sac_case, {"version": 1}),
    "SACLoss[v2]": (sac_case, {"version": 2}),
    "DiscreteSACLoss": (discrete_sac_case, {}),
    "DDPGLoss": (ddpg_case, {}),
    "TD3Loss": (td3_case, {"cls": "td3"}),
    "TD3BCLoss": (td3_case, {"cls": "td3bc"}),
}

from .redq_crossq_tqc import BUILDERS as _ENSEMBLE_BUILDERS  # noqa: E402  (REDQ, CrossQ, TQC)

BUILDERS.update(_ENSEMBLE_BUILDERS)

from .cql_bc import BUILDERS as _CQL_BC_BUILDERS  # noqa: E402  (CQL, DiscreteCQL, BC)

BUILDERS.update(_CQL_BC_BUILDERS)

from .dt_rnd import BUILDERS as _DT_BUILDERS  # noqa: E402  (DT, OnlineDT, RND)

BUILDERS.update(_DT_BUILDERS)

from .gail import BUILDERS as _GAIL_BUILDERS  # noqa: E402  (GAIL: TorchRL's and the paper's coefficient)

BUILDERS.update(_GAIL_BUILDERS)

from .dreamer import BUILDERS as _DREAMER_BUILDERS  # noqa: E402  (Dreamer v1 and v3)

BUILDERS.update(_DREAMER_BUILDERS)


def perturb_weight(case: Any, scale: float = 1e-3, network: str | None = None) -> Any:
    """``case`` with its arrayrl loss built with one weight moved by ``scale`` (the first leaf of ``network``, by
    default the first network): every component must then fail (the check's honesty test)."""
    from ..tree import tree_map

    build = case.build

    def broken(convert: Callable) -> tuple:
        al, batch = build(convert)
        params = dict(al.params)
        name = network or next(k for k in params if k != "log_alpha")
        moved = [False]

        def move(x: Any) -> Any:
            if moved[0]:
                return x
            moved[0] = True
            return x + scale

        params[name] = tree_map(move, params[name])
        al.params = params
        return al, batch

    case.build = broken
    return case


def _component(family: str) -> Callable:
    builder, fixed = BUILDERS[family]

    def run(n_cases: int, rng: np.random.Generator, tick: Callable[[], None]) -> dict:
        L = _L()
        acc = Errors(TOLERANCE)
        for _ in range(n_cases):
            with torch_float64(L._seed(rng)):
                case = builder(rng, **fixed)
                acc.label = L._label(case)
                L.compare_with_torchrl(case, acc)
            acc.cases += 1
            tick()
        return acc.result()

    return run


CHECKS: dict[str, Callable] = {f"loss.{family}": _component(family) for family in BUILDERS}
