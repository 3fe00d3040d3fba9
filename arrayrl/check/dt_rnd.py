"""``arrayrl check`` provider part: DTLoss, OnlineDTLoss and RNDLoss vs TorchRL 0.14.1 and
``reference/losses/dt_rnd.py``
(merged into :data:`arrayrl.check.actor_critic.BUILDERS`, hence into :data:`arrayrl.check.losses.CHECKS`).

Components (each runs ``n_cases`` random cases on ``[B, T, F]`` sequence batches, options drawn per case):

* ``loss.DTLoss`` (:func:`dt_case`): loss functions, reductions, an ``attention_mask`` (ignored by TorchRL, hence by
  ``torchrl_compat``) and/or a ``("collector", "mask")`` loss mask;
* ``loss.OnlineDTLoss`` (:func:`online_dt_case`): TanhNormal / IndependentNormal actors, temperature schemes
  (learned, fixed, clamped), ``samples_mc_entropy``, reductions, explicit target entropies, the same masks.
  TorchRL's entropy ``rsample`` draw is recorded and replayed; the clamped ``log_alpha`` is compared after the call;
* ``loss.RNDLoss`` (:func:`rnd_case`): ``[B]`` or ``[B, T]`` next observations (float32-representable: TorchRL casts
  them with ``.float()``, and its networks are wrapped to cast back to float64), ``update_fraction`` (1: no draw),
  reductions, ``obs_clip``, a ``("collector", "mask")`` loss mask, running statistics on or off (arrayrl's
  ``RunningMeanStd`` state, loaded into TorchRL's buffers). TorchRL's ``torch.rand`` update-fraction mask is recorded
  and replayed; the predictor's gradients are compared (the target network must get none).

Reference (oracle only): every case is fed to ``reference.losses.dt_rnd.dt_loss`` / ``online_dt_loss`` with
TorchRL's prediction (DT), its log-likelihood of the target actions and the log-probabilities of the replayed entropy
samples (ODT, TorchRL's ``rsample_and_log_prob``), ``torchrl_compat=True``; every RND case to ``rnd_loss`` with TorchRL's networks applied to observations normalised by
the oracle's own ``rms_update`` / ``rms_normalize`` (so arrayrl's running statistics are checked there too) and the
replayed draws. arrayrl runs with ``torchrl_compat=True`` (DT, ODT; RNDLoss has no such switch).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._common import Errors

__all__ = ["BUILDERS", "dt_case", "online_dt_case", "rnd_case"]

T_LEN = 4


def _A() -> Any:
    from . import actor_critic

    return actor_critic


def _L() -> Any:
    from . import losses

    return losses


def _sequence(rng: np.random.Generator, B: int, masks: str) -> Any:
    """A ``[B, T]`` TensorDict of observations and actions; ``masks``: ``none``, ``attention``, ``collector`` or
    ``both`` (an attention mask with its first step on, a separate collector mask)."""
    from tensordict import TensorDict

    A = _A()
    td = TensorDict({"observation": A._t(rng.normal(size=(B, T_LEN, A.NOBS))),
                     "action": A._t(rng.uniform(-0.9, 0.9, (B, T_LEN, A.NA)))}, [B, T_LEN])
    if masks in ("attention", "both"):
        att = rng.random((B, T_LEN)) < 0.6
        att[:, 0] = True
        td["attention_mask"] = A._t(att)
    if masks in ("collector", "both"):
        m = rng.random((B, T_LEN)) < 0.7
        m[0, 0] = True
        td["collector", "mask"] = A._t(m)
    return td


def _masks(td: Any) -> dict:
    return {"attention_mask": td["attention_mask"].numpy() if "attention_mask" in td.keys() else None,
            "loss_mask": td["collector", "mask"].numpy() if ("collector", "mask") in td.keys(True) else None}


def dt_case(rng: np.random.Generator, **opts: Any) -> Any:
    """DTLoss (drawn: ``loss_function``, ``reduction``, ``masks``, ``B``)."""
    import torchrl.objectives as TO
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP

    from ..nn import MLP, KeyedModule
    from ..objectives.decision_transformer import DTLoss

    A, L = _A(), _L()
    pick = L._pick
    fn = pick(rng, opts, "loss_function", A.LOSS_FUNCTIONS)
    red = pick(rng, opts, "reduction", A.REDUCTIONS)
    masks = pick(rng, opts, "masks", ("none", "attention", "collector", "both"))
    B = pick(rng, opts, "B", (2, 3))
    tactor = TensorDictModule(TMLP(in_features=A.NOBS, out_features=A.NA, num_cells=[8]), ["observation"], ["action"])
    tl = TO.DTLoss(tactor, loss_function=fn, reduction=red)
    A._perturb(rng, 0.1, tl.actor_network_params)
    online = {"actor_network": L._tree(tl.actor_network_params)}
    td = _sequence(rng, B, masks)
    td_ref = td.clone()

    def build(convert: Callable) -> tuple:
        al = DTLoss(KeyedModule(MLP(in_features=A.NOBS, out_features=A.NA, num_cells=[8]), in_keys=["observation"],
                                out_keys=["action"]), loss_function=fn, reduction=red, torchrl_compat=True)
        al.params = convert(online)
        return al, A._batch(td, convert)

    def reference() -> dict:
        pred = L._run_net(tl.actor_network, tl.actor_network_params, td_ref.select("observation"))["action"]
        return L._oracle("losses.dt_rnd").dt_loss(pred.numpy(), td_ref["action"].numpy(), loss_function=fn,
                                                  reduction=red, torchrl_compat=True, **_masks(td_ref))

    return L.LossCase("DTLoss", opts, tl, td, build, [("actor_network_params", ("actor_network",), "")],
                      {"loss": ("actor_network",)}, reference, td_error=False)


def online_dt_case(rng: np.random.Generator, **opts: Any) -> Any:
    """OnlineDTLoss (drawn: ``actor``, ``alpha``, ``samples_mc_entropy``, ``reduction``, ``target_entropy``,
    ``masks``, ``B``)."""
    import torch
    import torch.distributions.normal as tdn
    import torchrl.objectives as TO
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.modules.distributions.utils import rsample_and_log_prob

    from ..objectives.decision_transformer import OnlineDTLoss
    from .redq_crossq_tqc import ALPHA_CHOICES

    A, L = _A(), _L()
    pick = L._pick
    kind = pick(rng, opts, "actor", ("tanh", "independent"))
    alpha = pick(rng, opts, "alpha", ALPHA_CHOICES)
    S = pick(rng, opts, "samples_mc_entropy", (1, 2, 4))
    red = pick(rng, opts, "reduction", A.REDUCTIONS)
    te = pick(rng, opts, "target_entropy", (-2.0, -0.5, 1.5))
    masks = pick(rng, opts, "masks", ("none", "attention", "collector", "both"))
    B = pick(rng, opts, "B", (2, 3))
    a0, amin, amax, fixed = A.ALPHAS[alpha]
    kw = dict(alpha_init=a0, min_alpha=amin, max_alpha=amax, fixed_alpha=fixed, target_entropy=te,
              samples_mc_entropy=S, reduction=red, scalar_output_mode="non_tensor" if red == "none" else None)
    tactor, actor, prefix = A.policy_nets(kind, log_prob=False)
    tl = TO.OnlineDTLoss(tactor, **kw)
    A._perturb(rng, 0.1, tl.actor_network_params)
    online: dict[str, Any] = {"actor_network": {"0": L._tree(tl.actor_network_params, prefix), "1": {}}}
    if not fixed:
        online["log_alpha"] = tl.log_alpha.detach().numpy().copy()
    log_alpha0 = float(tl.log_alpha.detach())
    td = _sequence(rng, B, masks)
    td_ref = td.clone()
    draws: list = []

    def build(convert: Callable) -> tuple:
        al = OnlineDTLoss(actor(), torchrl_compat=True, **kw)
        al.params = convert(online)
        return al, A._batch(td, convert)

    def keep(d: list) -> list:
        draws[:] = d
        return d

    def after(al: Any, acc: Errors) -> None:
        A._alpha_after(tl)(al, acc)
        acc.value(al.target_entropy, float(tl.target_entropy), "target_entropy")

    def reference() -> dict:
        (eps,) = draws
        orig = tdn._standard_normal
        tdn._standard_normal = lambda *a, **k: torch.as_tensor(eps)
        try:
            with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM), \
                    tl.actor_network_params.to_module(tl.actor_network):
                dist = tl.actor_network.get_dist(td_ref.select("observation").clone())
                _, lp = rsample_and_log_prob(dist, (S,))
                ll = dist.log_prob(td_ref["action"])
        finally:
            tdn._standard_normal = orig
        return L._oracle("losses.dt_rnd").online_dt_loss(
            ll.numpy(), lp.numpy(), log_alpha=log_alpha0, target_entropy=te, min_alpha=amin, max_alpha=amax,
            reduction=red, torchrl_compat=True, **_masks(td_ref))

    grads: list[tuple[str, tuple[str, ...], Any]] = [("actor_network_params", ("actor_network", "0"), prefix)]
    if not fixed:
        grads.append(("log_alpha", ("log_alpha",), ""))
    return L.LossCase("OnlineDTLoss", opts, tl, td, build, grads,
                      {"loss_log_likelihood": ("actor_network",), "loss_entropy": ("actor_network",)}, reference,
                      td_error=False, replay_draws=True, fix_draws=keep, after=after)


# ------------------------------------------------------------------------------------------------------ RND
RND_F, RND_D = 3, 5


def _f32(x: np.ndarray) -> np.ndarray:
    """Rounded to float32 and back: TorchRL's ``.float()`` of such an observation loses nothing."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def rnd_case(rng: np.random.Generator, **opts: Any) -> Any:
    """RNDLoss (drawn: ``reduction``, ``update_fraction``, ``rms`` (running statistics), ``obs_clip``,
    ``collector`` (loss mask), ``shape``)."""
    import torch
    from tensordict import TensorDict
    from torchrl.envs.transforms.rnd import RunningMeanStd as TRMS
    from torchrl.modules import MLP as TMLP
    from torchrl.objectives.rnd import RNDLoss as TRND

    from ..nn import MLP
    from ..objectives.rnd import RNDLoss, RunningMeanStd

    A, L = _A(), _L()
    pick = L._pick
    red = pick(rng, opts, "reduction", A.REDUCTIONS)
    frac = pick(rng, opts, "update_fraction", (0.25, 0.5, 0.8, 1.0))
    rms = pick(rng, opts, "rms", (False, True))
    clip = pick(rng, opts, "obs_clip", (1.5, 5.0))
    collector = pick(rng, opts, "collector", (False, True))
    shape = pick(rng, opts, "shape", ((8,), (2, 6), (3, 4)))

    class Double(torch.nn.Module):
        """TorchRL casts the observation to float32 (``.float()``): back to float64 for the float64 networks."""

        def forward(self, x: Any) -> Any:
            return x.double()

    tp = torch.nn.Sequential(Double(), TMLP(in_features=RND_F, out_features=RND_D, num_cells=[8]))
    tt = torch.nn.Sequential(Double(), TMLP(in_features=RND_F, out_features=RND_D, num_cells=[8]))
    hist = _f32(rng.normal(size=(9, RND_F)) * 2 + 1) if rms else None
    state, trms = None, None
    if rms:
        arms = RunningMeanStd(shape=(RND_F,))
        state = arms.update(hist, arms.init(xp=np))
        trms = TRMS(shape=(RND_F,)).double()  # float32 buffers: float64 here, then arrayrl's statistics loaded
        with torch.no_grad():
            for k in ("mean", "var", "count"):
                getattr(trms, k).copy_(torch.as_tensor(np.asarray(state[k])))
    tl = TRND(tp, tt, obs_rms=trms, obs_clip=clip, reduction=red, update_fraction=frac)
    tl.predictor_network_params = TensorDict.from_module(tp)  # the live parameters (their .grad after backward)
    pred_tree = L._tree(tl.predictor_network_params, "1.")
    targ_tree = L._tree(TensorDict.from_module(tt), "1.")
    td = TensorDict({("next", "observation"): A._t(_f32(rng.normal(size=shape + (RND_F,)) * 3))}, list(shape))
    if collector:
        m = rng.random(shape) < 0.7
        m.reshape(-1)[0] = True
        td["collector", "mask"] = A._t(m)
    td_ref = td.clone()
    draws: list = []  # TorchRL's own draws, kept here whatever ``fix_draws`` makes of the recorded ones
    torch_rand = torch.rand

    def rand(size: tuple, dtype: Any) -> Any:
        x = torch_rand(size, dtype=dtype)
        draws.append(x.numpy().copy())
        return x

    def build(convert: Callable) -> tuple:
        draws.clear()  # built before each TorchRL call (compare_with_torchrl)
        pred = MLP(in_features=RND_F, out_features=RND_D, num_cells=[8])
        targ = MLP(in_features=RND_F, out_features=RND_D, num_cells=[8])
        pred.params, targ.params = convert(pred_tree), convert(targ_tree)
        al = RNDLoss(pred, targ, obs_rms=None if state is None else convert(dict(state)), obs_clip=clip,
                     reduction=red, update_fraction=frac)
        return al, A._batch(td, convert)

    def after(al: Any, acc: Errors) -> None:
        if any(p.grad is not None for p in tt.parameters()):
            raise AssertionError("TorchRL's RND target network got gradients")
        if list(al.out_keys) != list(tl.out_keys) or list(al.in_keys) != [tl.tensor_keys.observation]:
            raise AssertionError(f"RND keys: arrayrl {al.in_keys} -> {al.out_keys}, TorchRL "
                                 f"{[tl.tensor_keys.observation]} -> {tl.out_keys}")

    def reference() -> dict:
        R = L._oracle("losses.dt_rnd")
        x = td_ref["next", "observation"].numpy()
        if rms:
            x = R.rms_normalize(x, R.rms_update(hist, R.rms_init((RND_F,))), clip)
        with torch.no_grad():
            pf, tf = tp(torch.as_tensor(x)).numpy(), tt(torch.as_tensor(x)).numpy()
        if len(draws) != (frac < 1.0):
            raise AssertionError(f"TorchRL made {len(draws)} torch.rand draws (update_fraction={frac})")
        u = draws[0] if frac < 1.0 else None
        lm = td_ref["collector", "mask"].numpy() if collector else None
        return R.rnd_loss(pf, tf, u, update_fraction=frac, reduction=red, loss_mask=lm)

    return L.LossCase("RNDLoss", opts, tl, td, build, [("predictor_network_params", ("predictor_network",), "1.")],
                      {"loss_predictor": ("predictor_network",)}, reference, td_error=False, replay_draws=True,
                      after=after, recorder={"rand": rand})


#: family -> (builder, fixed options)
BUILDERS: dict[str, tuple[Callable, dict]] = {
    "DTLoss": (dt_case, {}),
    "OnlineDTLoss": (online_dt_case, {}),
    "RNDLoss": (rnd_case, {}),
}
