"""``arrayrl check`` provider part: the Dreamer v1 and v3 losses vs TorchRL 0.14.1 (merged into
:data:`arrayrl.check.actor_critic.BUILDERS`, hence into :data:`arrayrl.check.losses.CHECKS`). There is no
``reference/losses`` oracle for them: TorchRL only.

Components (each runs ``n_cases`` random cases on small float64 networks, TorchRL's weights copied; the cases follow
tests/objectives/test_dreamer_v1_torchrl.py, test_dreamer_v3_torchrl.py and test_dreamer_v3_actor.py):

* ``loss.DreamerModelLoss``: RSSM prior/posterior rollout, encoder, decoder, reward head on ``[B, T]`` sequences
  (drawn: ``free_nats``, ``delayed_clamp``, ``lambda_kl``, ``global_average``, ``reco_loss``, ``reward_loss``,
  ``B``, ``T``); TorchRL's ``torch.randn_like`` (prior, posterior) draws are recorded and replayed; the world
  model's output batch (``next`` prior/posterior statistics, states, reconstructions, rewards) is compared too;
* ``loss.DreamerActorLoss``: imagination through a DreamerEnv (RSSM prior + reward head) with a TanhNormal
  DreamerActor, ``torchrl_compat=True`` (TorchRL's one-step "lambda" target) (drawn: ``discount_loss``,
  ``imagination_horizon``, ``N``); the action and prior draws are replayed and the imagined trajectory compared;
* ``loss.DreamerValueLoss``: a value MLP on a random imagined batch (drawn: ``discount_loss``, ``value_loss``,
  ``gamma``, ``B``, ``H``);
* ``loss.DreamerV3ModelLoss``: a deterministic world-model head on ``[B, T]`` batches (drawn: ``kl_mode``,
  ``unimix``, ``reward_two_hot``, ``reco_loss``, ``global_average``, ``free_bits``, ``kl_alpha``,
  ``lambda_continue``, ``continue_target_scale``, ``lambda_kl``);
* ``loss.DreamerV3ValueLoss``: symlog-MSE or two-hot critics, a slow critic moved away from the online one,
  ``discount_weight`` present or not (drawn: ``value_loss``, ``slow_critic_regularization``, ``gamma``,
  ``reduction``, ``discount_loss``, ``weight``);
* ``loss.DreamerV3ActorLoss``: RSSMPriorV3 (GRU) imagination, TanhNormal DreamerActor, optional continuation model,
  ``torchrl_compat=True`` (drawn: ``use_reinforce``, ``continuation``, ``entropy_bonus``,
  ``return_normalization``, ``return_normalization_rate``, ``return_normalization_min_scale``, ``discount_loss``);
  TorchRL's ``torch.rand`` (straight-through categorical) and ``_standard_normal`` (actor, Monte-Carlo entropy)
  draws are replayed; the imagined trajectory and the return statistics after the call are compared.

TorchRL's Dreamer losses return ``(losses, data)``: they are wrapped (:class:`_TorchSide`) to give the loss
TensorDict to :func:`arrayrl.check.losses.compare_with_torchrl` and keep the data; the arrayrl losses likewise
(:class:`_ArraySide`, the replayed ``generator`` passed per call). TorchRL's RSSM priors cast their GRU input to
float32 (``.float()``) and the V3 model loss casts its continue target (``(~terminated).float()``): while TorchRL
runs, ``Tensor.float`` keeps float64 tensors and casts the others to float64 (arrayrl computes in float64).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._common import Errors

__all__ = ["BUILDERS", "model_case", "actor_case", "value_case", "v3_model_case", "v3_value_case",
           "v3_actor_case"]

#: Dreamer v1 sizes (TorchRL needs rnn_hidden_dim == hidden_dim)
S, R, HID, A, E = 3, 4, 4, 2, 4


def _A() -> Any:
    from . import actor_critic

    return actor_critic


def _L() -> Any:
    from . import losses

    return losses


class _TorchSide:
    """TorchRL's Dreamer loss: ``__call__(td)`` gives its loss TensorDict (the data it returns kept in ``data``);
    ``modules`` become live parameter TensorDicts (attributes named like the ``grads`` of the case)."""

    def __init__(self, loss: Any, modules: dict) -> None:
        from tensordict import TensorDict

        self.loss = loss
        self.data: Any = None
        for name, m in modules.items():
            setattr(self, name, TensorDict.from_module(m))

    def __call__(self, td: Any) -> Any:
        import torch

        had = "float" in torch.Tensor.__dict__
        orig = torch.Tensor.float

        def as_float(x: Any, *a: Any, **k: Any) -> Any:
            if x.dtype == torch.float64:
                return x
            return orig(x, *a, **k) if x.dtype.is_floating_point else x.to(torch.float64)

        setattr(torch.Tensor, "float", as_float)
        try:
            out, self.data = self.loss(td)
        finally:
            if had:
                setattr(torch.Tensor, "float", orig)
            else:
                delattr(torch.Tensor, "float")
        return out

    def __getattr__(self, name: str) -> Any:  # return statistics and the like
        return getattr(self.__dict__["loss"], name)


class _ArraySide:
    """An arrayrl Dreamer loss as :func:`compare_with_torchrl` calls it: ``generator`` (set there) passed per call,
    ``value_and_grad`` giving ``(losses, grads)`` (the imagined data kept in ``data`` where the loss returns it)."""

    def __init__(self, loss: Any, *, returns_data: bool, draws: bool = True) -> None:
        self.loss, self.returns_data, self.draws = loss, returns_data, draws
        self.generator: Any = None
        self.data: Any = None

    @property
    def params(self) -> Any:
        return self.loss.params

    @params.setter
    def params(self, value: Any) -> None:
        self.loss.params = value

    def value_and_grad(self, batch: Any) -> tuple:
        kw = {"generator": self.generator} if self.draws else {}
        out, grads = self.loss.value_and_grad(batch, **kw)
        if self.returns_data:
            out, self.data = out
        return out, grads


def _get(tree: Any, key: Any) -> Any:
    for k in (key,) if isinstance(key, str) else key:
        tree = tree[k]
    return tree


def _data_after(tl: _TorchSide, keys: list, rerun: Callable | None = None) -> Callable:
    """``after``: the data each loss returned (``rerun(al)``: the arrayrl data from a forward call) compared."""
    L = _L()

    def after(al: Any, acc: Errors) -> None:
        data = rerun(al) if rerun is not None else al.data
        for key in keys:
            acc.value(_get(data, key), L._np(tl.data.get(key)), f"data {key}")

    return after


def _t(x: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(np.array(x, copy=True))


def _td(batch: dict, batch_size: list) -> Any:
    from tensordict import TensorDict

    def conv(d: dict) -> dict:
        return {k: conv(v) if isinstance(v, dict) else _t(v) for k, v in d.items()}

    return TensorDict(conv(batch), batch_size)


def _mlp_pair(n_in: int, n_out: int, cells: int = 6) -> tuple:
    """A TorchRL ELU MLP and its arrayrl twin (weights copied)."""
    import torch
    from torchrl.modules import MLP as TMLP

    from ..interop import params_from_torch
    from ..nn import MLP

    tm = TMLP(in_features=n_in, out_features=n_out, depth=1, num_cells=cells, activation_class=torch.nn.ELU)
    am = MLP(n_in, n_out, depth=1, num_cells=cells, activation_class="elu")
    am.params = params_from_torch(tm)
    return tm, am


def _grads(tl: _TorchSide, entries: list) -> list:
    return [(attr, path, "") for attr, path in entries]


# ------------------------------------------------------------------------------------------------ Dreamer v1
def _prior_pair() -> tuple:
    from torchrl.data import Unbounded
    from torchrl.modules.models.model_based import RSSMPrior as TPrior

    from ..interop import params_from_torch
    from ..nn.rssm_v1 import RSSMPrior

    tp = TPrior(Unbounded(A), hidden_dim=HID, rnn_hidden_dim=R, state_dim=S, action_dim=A)
    ap = RSSMPrior(action_dim=A, hidden_dim=HID, rnn_hidden_dim=R, state_dim=S)
    ap.params = params_from_torch(tp)
    return tp, ap


def _actor_pair(state_dim: int, cells: int = 6, std_bias: float = 5.0) -> tuple:
    """TorchRL's DreamerActor in a TanhNormal ProbabilisticActor and the arrayrl twin."""
    import torch
    from tensordict.nn import TensorDictModule as TDM
    from torchrl.data import Unbounded
    from torchrl.envs.utils import ExplorationType
    from torchrl.modules import ProbabilisticActor as TPA
    from torchrl.modules import TanhNormal as TTN
    from torchrl.modules.models.model_based import DreamerActor as TDA

    from ..distributions import TanhNormal
    from ..interop import params_from_torch
    from ..nn import KeyedModule, ProbabilisticActor
    from ..nn.rssm_v1 import DreamerActor

    td_actor = TDA(A, depth=1, num_cells=cells, std_bias=std_bias)
    td_actor(torch.zeros(1, state_dim), torch.zeros(1, R))  # materialise the lazy MLP
    t_actor = TPA(TDM(td_actor, in_keys=["state", "belief"], out_keys=["loc", "scale"]), in_keys=["loc", "scale"],
                  distribution_class=TTN, default_interaction_type=ExplorationType.RANDOM, spec=Unbounded(A))
    net = DreamerActor(A, depth=1, num_cells=cells, in_features=state_dim + R, std_bias=std_bias)
    net.params = params_from_torch(td_actor)
    a_actor = ProbabilisticActor(KeyedModule(net, in_keys=["state", "belief"], out_keys=["loc", "scale"]),
                                 in_keys=["loc", "scale"], distribution_class=TanhNormal)
    return td_actor, t_actor, a_actor


def _env_pair(t_trans: Any, a_trans: Any, out_keys: list, state_dim: int) -> tuple:
    """TorchRL's and arrayrl's DreamerEnv over a transition module and an ELU reward head."""
    import torch
    from tensordict.nn import TensorDictModule as TDM
    from torchrl.data import Composite, Unbounded
    from torchrl.envs.model_based.dreamer import DreamerEnv as TDreamerEnv
    from torchrl.modules import WorldModelWrapper

    from ..nn import KeyedModule, Sequential
    from ..nn.rssm_v1 import StochasticKeyedModule
    from ..objectives.dreamer import DreamerEnv

    tr, ar = _mlp_pair(state_dim + R, 1)
    t_wm = WorldModelWrapper(TDM(t_trans, in_keys=["state", "belief", "action"], out_keys=out_keys),
                             TDM(tr, in_keys=["state", "belief"], out_keys=["reward"]))
    t_env = TDreamerEnv(t_wm, prior_shape=torch.Size([state_dim]), belief_shape=torch.Size([R]))
    t_env.observation_spec = Composite(state=Unbounded(state_dim), belief=Unbounded(R))
    t_env.action_spec = Unbounded(A)
    t_env.reward_spec = Unbounded(1)
    a_wm = Sequential(StochasticKeyedModule(a_trans, in_keys=["state", "belief", "action"], out_keys=out_keys),
                      KeyedModule(ar, in_keys=["state", "belief"], out_keys=["reward"]))
    return t_env, DreamerEnv(a_wm)


def _enc_fn(p: Any, x: Any) -> Any:
    from .. import ops
    from .._backend import namespace_of

    xp = namespace_of(x, p["weight"])
    y = ops.linear(xp.reshape(x, (-1, 4)), p["weight"], p["bias"])
    return xp.reshape(y, tuple(x.shape[:-3]) + (E,))


def _dec_fn(p: Any, s: Any, b: Any) -> Any:
    from .. import ops
    from .._backend import namespace_of

    xp = namespace_of(s, b, p["lin"]["weight"])
    x = xp.concat([s, b], axis=-1)
    y = ops.linear(xp.reshape(x, (-1, S + R)), p["lin"]["weight"], p["lin"]["bias"])
    return xp.reshape(y, tuple(s.shape[:-1]) + (1, 2, 2))


def model_case(rng: np.random.Generator, **opts: Any) -> Any:
    """DreamerModelLoss (drawn: ``free_nats``, ``delayed_clamp``, ``lambda_kl``, ``global_average``, ``reco_loss``,
    ``reward_loss``, ``B``, ``T``)."""
    import torch
    from tensordict.nn import TensorDictModule as TDM
    from tensordict.nn import TensorDictSequential as TDS
    from torchrl.modules import WorldModelWrapper
    from torchrl.modules.models.model_based import RSSMPosterior as TPost
    from torchrl.modules.models.model_based import RSSMRollout as TRoll
    from torchrl.objectives import DreamerModelLoss as TModelLoss

    from ..interop import params_from_torch
    from ..nn import KeyedModule, Sequential
    from ..nn.rssm_v1 import RSSMPosterior, RSSMRollout, StochasticKeyedModule
    from ..objectives.dreamer import DreamerModelLoss

    L = _L()
    pick = L._pick
    kw = dict(free_nats=pick(rng, opts, "free_nats", (0.0, 0.5, 3.0)),
              delayed_clamp=pick(rng, opts, "delayed_clamp", (False, True)),
              lambda_kl=pick(rng, opts, "lambda_kl", (1.0, 0.7)),
              global_average=pick(rng, opts, "global_average", (False, True)),
              reco_loss=pick(rng, opts, "reco_loss", ("l2", "l1", "smooth_l1")),
              reward_loss=pick(rng, opts, "reward_loss", ("l2", "l1", "smooth_l1")))
    B = pick(rng, opts, "B", (2, 3))
    T = pick(rng, opts, "T", (2, 3))

    class Dec(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(S + R, 4)

        def forward(self, s: Any, b: Any) -> Any:
            return self.lin(torch.cat([s, b], -1)).unflatten(-1, (1, 2, 2))

    tp, _ = _prior_pair()
    tq = TPost(hidden_dim=HID, state_dim=S, rnn_hidden_dim=R, obs_embed_dim=E)
    tenc, tdec = torch.nn.Linear(4, E), Dec()
    tr, _ = _mlp_pair(S + R, 1)
    nxt = ("next",)
    roll_out = [nxt + ("prior_mean",), nxt + ("prior_std",), "_", nxt + ("belief",)]
    post_in = [nxt + ("belief",), nxt + ("encoded_latents",)]
    post_out = [nxt + ("posterior_mean",), nxt + ("posterior_std",), nxt + ("state",)]
    sb = [nxt + ("state",), nxt + ("belief",)]
    t_roll = TRoll(TDM(tp, in_keys=["state", "belief", "action"], out_keys=roll_out),
                   TDM(tq, in_keys=post_in, out_keys=post_out))
    t_wm = WorldModelWrapper(
        TDS(TDM(lambda x: tenc(x.flatten(-3)), in_keys=[nxt + ("pixels",)], out_keys=[nxt + ("encoded_latents",)]),
            t_roll, TDM(tdec, in_keys=sb, out_keys=[nxt + ("reco_pixels",)])),
        TDM(tr, in_keys=sb, out_keys=[nxt + ("reward",)]))
    mods = {"enc": tenc, "prior": tp, "post": tq, "dec": tdec, "reward": tr}
    trees = {k: params_from_torch(m) for k, m in mods.items()}
    tl = _TorchSide(TModelLoss(t_wm, **kw), {f"{k}_params": m for k, m in mods.items()})
    batch = {"state": rng.normal(size=(B, T, S)), "belief": rng.normal(size=(B, T, R)),
             "action": rng.normal(size=(B, T, A)),
             "next": {"pixels": rng.normal(size=(B, T, 1, 2, 2)), "reward": rng.normal(size=(B, T, 1))}}
    td = _td(batch, [B, T])
    draws: list = []

    def build(convert: Callable) -> tuple:
        from ..nn import MLP
        from ..nn.rssm_v1 import RSSMPrior

        ap = RSSMPrior(action_dim=A, hidden_dim=HID, rnn_hidden_dim=R, state_dim=S)
        aq = RSSMPosterior(hidden_dim=HID, state_dim=S, rnn_hidden_dim=R, obs_embed_dim=E)
        ar = MLP(S + R, 1, depth=1, num_cells=6, activation_class="elu")
        a_roll = RSSMRollout(StochasticKeyedModule(ap, in_keys=["state", "belief", "action"], out_keys=roll_out),
                             StochasticKeyedModule(aq, in_keys=post_in, out_keys=post_out))
        a_wm = Sequential(KeyedModule(_enc_fn, params=trees["enc"], in_keys=[nxt + ("pixels",)],
                                      out_keys=[nxt + ("encoded_latents",)]), a_roll,
                          KeyedModule(_dec_fn, params=trees["dec"], in_keys=sb, out_keys=[nxt + ("reco_pixels",)]),
                          KeyedModule(ar, in_keys=sb, out_keys=[nxt + ("reward",)]))
        al = DreamerModelLoss(a_wm, **kw)
        al.params = convert({"world_model": {"0": trees["enc"], "1": {"rssm_prior": trees["prior"],
                                                                      "rssm_posterior": trees["post"]},
                                             "2": trees["dec"], "3": trees["reward"]}})
        return _ArraySide(al, returns_data=False), convert(batch)

    def keep(d: list) -> list:
        draws[:] = d
        return d

    def rerun(al: Any) -> Any:
        from ..random import Generator

        return al.loss(_L()._numpy_copy(batch), generator=Generator.from_noise(*draws))[1]

    keys = [("next", k) for k in ("prior_mean", "prior_std", "posterior_mean", "posterior_std", "state", "belief",
                                  "reco_pixels", "reward", "true_reward")]
    grads = [("enc_params", ("world_model", "0")), ("prior_params", ("world_model", "1", "rssm_prior")),
             ("post_params", ("world_model", "1", "rssm_posterior")), ("dec_params", ("world_model", "2")),
             ("reward_params", ("world_model", "3"))]
    return L.LossCase("DreamerModelLoss", opts, tl, td, build, _grads(tl, grads),
                      {"loss_model_kl": ("world_model",)}, None, td_error=False, replay_draws=True, fix_draws=keep,
                      after=_data_after(tl, keys, rerun))


def actor_case(rng: np.random.Generator, **opts: Any) -> Any:
    """DreamerActorLoss, ``torchrl_compat=True`` (drawn: ``discount_loss``, ``imagination_horizon``, ``N``)."""
    from tensordict.nn import TensorDictModule as TDM
    from torchrl.objectives import DreamerActorLoss as TActorLoss

    from ..nn import KeyedModule
    from ..objectives.dreamer import DreamerActorLoss

    L = _L()
    pick = L._pick
    disc = pick(rng, opts, "discount_loss", (True, False))
    H = pick(rng, opts, "imagination_horizon", (2, 3, 4))
    N = pick(rng, opts, "N", (3, 6))
    tp, ap = _prior_pair()
    t_env, a_env = _env_pair(tp, ap, ["_", "_", "state", "belief"], S)
    td_actor, t_actor, a_actor = _actor_pair(S)
    tv, av = _mlp_pair(S + R, 1)
    t_value = TDM(tv, in_keys=["state", "belief"], out_keys=["state_value"])
    a_value = KeyedModule(av, in_keys=["state", "belief"], out_keys=["state_value"])
    tl = _TorchSide(TActorLoss(t_actor, t_value, t_env, imagination_horizon=H, discount_loss=disc),
                    {"actor_params": td_actor})
    al0 = DreamerActorLoss(a_actor, a_value, a_env, imagination_horizon=H, discount_loss=disc, torchrl_compat=True)
    params = L._numpy_copy(al0.params)
    batch = {"state": rng.normal(size=(N, S)), "belief": rng.normal(size=(N, R))}
    td = _td(batch, [N])

    def build(convert: Callable) -> tuple:
        al = DreamerActorLoss(a_actor, a_value, a_env, imagination_horizon=H, discount_loss=disc,
                              torchrl_compat=True)
        al.params = convert(params)
        return _ArraySide(al, returns_data=True), convert(batch)

    keys = ["action", "lambda_target", ("next", "state"), ("next", "belief"), ("next", "reward")]
    return L.LossCase("DreamerActorLoss", opts, tl, td, build, _grads(tl, [("actor_params", ("actor_model", "0"))]),
                      {"loss_actor": ("actor_model",)}, None, td_error=False, replay_draws=True,
                      after=_data_after(tl, keys))


def value_case(rng: np.random.Generator, **opts: Any) -> Any:
    """DreamerValueLoss on a random imagined batch (drawn: ``discount_loss``, ``value_loss``, ``gamma``, ``B``,
    ``H``)."""
    from tensordict.nn import TensorDictModule as TDM
    from torchrl.objectives import DreamerValueLoss as TValueLoss

    from ..nn import KeyedModule
    from ..objectives.dreamer import DreamerValueLoss

    L = _L()
    pick = L._pick
    disc = pick(rng, opts, "discount_loss", (True, False))
    vl = pick(rng, opts, "value_loss", ("l2", "l1", "smooth_l1"))
    gamma = pick(rng, opts, "gamma", (0.99, 0.9))
    B = pick(rng, opts, "B", (2, 3))
    H = pick(rng, opts, "H", (2, 4))
    tv, av = _mlp_pair(S + R, 1)
    tl = _TorchSide(TValueLoss(TDM(tv, in_keys=["state", "belief"], out_keys=["state_value"]), value_loss=vl,
                               discount_loss=disc, gamma=gamma), {"value_params": tv})
    tree = L._numpy_copy(av.params)
    batch = {"state": rng.normal(size=(B, H, S)), "belief": rng.normal(size=(B, H, R)),
             "lambda_target": rng.normal(size=(B, H, 1)) * 2}
    td = _td(batch, [B, H])

    def build(convert: Callable) -> tuple:
        al = DreamerValueLoss(KeyedModule(av, in_keys=["state", "belief"], out_keys=["state_value"]), value_loss=vl,
                              discount_loss=disc, gamma=gamma)
        al.params = {"value_model": convert(tree)}
        return _ArraySide(al, returns_data=False, draws=False), convert(batch)

    return L.LossCase("DreamerValueLoss", opts, tl, td, build, _grads(tl, [("value_params", ("value_model",))]),
                      {"loss_value": ("value_model",)}, None, td_error=False)


# ------------------------------------------------------------------------------------------------ Dreamer v3
#: DreamerV3 world-model / value sizes (test_dreamer_v3_torchrl.py); 255 two-hot bins
V3_C, V3_K, V3_OBS, V3_NB = 4, 5, 6, 255
V3_OUT = [("next", "posterior_logits"), ("next", "prior_logits"), ("next", "reco_pixels"), ("next", "reward_logits"),
          ("next", "reward"), ("next", "continue_pred")]


def _v3_wm_fn(p: Any, x: Any) -> tuple:
    from .. import ops
    from .._backend import namespace_of

    xp = namespace_of(x, p["post"]["weight"])
    lead = tuple(x.shape[:-1])

    def lin(name: str, v: Any) -> Any:
        return ops.linear(v, p[name]["weight"], p[name]["bias"])

    return (xp.reshape(lin("post", x), lead + (V3_C, V3_K)), xp.reshape(lin("prior", xp.tanh(x)), lead + (V3_C, V3_K)),
            lin("reco", x) * 3, lin("reward", x), lin("reward_scalar", x), lin("cont", x))


def v3_model_case(rng: np.random.Generator, **opts: Any) -> Any:
    """DreamerV3ModelLoss (drawn: ``kl_mode``, ``unimix``, ``reward_two_hot``, ``reco_loss``, ``global_average``,
    ``free_bits``, ``kl_alpha``, ``lambda_continue``, ``continue_target_scale``, ``lambda_kl``, ``B``, ``T``)."""
    import torch
    import torchrl.objectives as TO
    from tensordict.nn import TensorDictModule

    from ..interop import params_from_torch
    from ..nn import KeyedModule
    from ..objectives.dreamer_v3 import DreamerV3ModelLoss

    L = _L()
    pick = L._pick
    kw = dict(kl_mode=pick(rng, opts, "kl_mode", ("balanced", "separate")),
              unimix=pick(rng, opts, "unimix", (0.0, 0.01)),
              reward_two_hot=pick(rng, opts, "reward_two_hot", (True, False)),
              reco_loss=pick(rng, opts, "reco_loss", ("l2", "l1")),
              global_average=pick(rng, opts, "global_average", (False, True)),
              free_bits=pick(rng, opts, "free_bits", (1.0, 0.0)),
              kl_alpha=pick(rng, opts, "kl_alpha", (0.8, 0.6)),
              lambda_continue=pick(rng, opts, "lambda_continue", (0.0, 1.0, 0.7)),
              continue_target_scale=pick(rng, opts, "continue_target_scale", (1.0, 0.9)),
              lambda_kl=pick(rng, opts, "lambda_kl", (1.0, 2.0)))
    B = pick(rng, opts, "B", (2, 3))
    T = pick(rng, opts, "T", (2, 3))

    class WM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            n = V3_C * V3_K
            self.post, self.prior = torch.nn.Linear(V3_OBS, n), torch.nn.Linear(V3_OBS, n)
            self.reco, self.reward = torch.nn.Linear(V3_OBS, V3_OBS), torch.nn.Linear(V3_OBS, V3_NB)
            self.reward_scalar, self.cont = torch.nn.Linear(V3_OBS, 1), torch.nn.Linear(V3_OBS, 1)

        def forward(self, x: Any) -> tuple:
            lead = x.shape[:-1]
            return (self.post(x).view(*lead, V3_C, V3_K), self.prior(torch.tanh(x)).view(*lead, V3_C, V3_K),
                    self.reco(x) * 3, self.reward(x), self.reward_scalar(x), self.cont(x))

    tnet = WM()
    tl = _TorchSide(TO.DreamerV3ModelLoss(TensorDictModule(tnet, in_keys=[("next", "pixels")], out_keys=V3_OUT),
                                          **kw), {"world_model_params": tnet})
    tree = params_from_torch(tnet)
    # the reconstruction head first: moving a whole leaf of the categorical heads by a constant (perturb_weight)
    # shifts every logit of a row alike, which the softmax cannot see
    tree = {"reco": tree["reco"], **{k: v for k, v in tree.items() if k != "reco"}}
    term = rng.random(size=(B, T, 1)) < 0.3
    batch = {"next": {"pixels": rng.normal(size=(B, T, V3_OBS)) * 2, "reward": rng.normal(size=(B, T, 1)) * 5,
                      "terminated": term, "done": term.copy()}}
    td = _td(batch, [B, T])

    def build(convert: Callable) -> tuple:
        awm = KeyedModule(_v3_wm_fn, params=tree, in_keys=[("next", "pixels")], out_keys=V3_OUT)
        al = DreamerV3ModelLoss(awm, **kw)
        al.params = {"world_model": convert(tree)}
        return _ArraySide(al, returns_data=False, draws=False), convert(batch)

    return L.LossCase("DreamerV3ModelLoss", opts, tl, td, build,
                      _grads(tl, [("world_model_params", ("world_model",))]), {"loss_model_kl": ("world_model",)},
                      None, td_error=False)


def v3_value_case(rng: np.random.Generator, **opts: Any) -> Any:
    """DreamerV3ValueLoss (drawn: ``value_loss``, ``slow_critic_regularization``, ``gamma``, ``reduction``,
    ``discount_loss``, ``weight`` (a ``discount_weight`` in the batch), ``B``, ``T``)."""
    import torch
    import torchrl.modules.models.model_based as mb
    import torchrl.objectives as TO
    from tensordict.nn import TensorDictModule

    from .. import ops
    from ..interop import params_from_torch
    from ..nn import KeyedModule
    from ..objectives.dreamer_utils import default_bins, two_hot_decode
    from ..objectives.dreamer_v3 import DreamerV3ValueLoss

    L = _L()
    pick = L._pick
    vloss = pick(rng, opts, "value_loss", ("symlog_mse", "two_hot"))
    slow = pick(rng, opts, "slow_critic_regularization", (0.0, 0.5, 1.0))
    kw = dict(value_loss=vloss, slow_critic_regularization=slow, gamma=pick(rng, opts, "gamma", (0.99, 0.9)),
              reduction=pick(rng, opts, "reduction", ("mean", "sum", "none")),
              discount_loss=pick(rng, opts, "discount_loss", (True, False)))
    weight = pick(rng, opts, "weight", (False, True))
    B = pick(rng, opts, "B", (2, 3))
    T = pick(rng, opts, "T", (2, 3))
    two_hot = vloss == "two_hot"

    class Value(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(V3_OBS, V3_NB if two_hot else 1)

        def forward(self, x: Any) -> Any:
            y = self.lin(x)
            if two_hot:
                return y, mb.two_hot_decode(y, mb._default_bins(V3_NB)).unsqueeze(-1)
            return y * 4

    def fn(p: Any, x: Any) -> Any:
        y = ops.linear(x, p["lin"]["weight"], p["lin"]["bias"])
        if two_hot:
            return y, two_hot_decode(y, default_bins(V3_NB))[..., None]
        return y * 4

    tnet = Value()
    keys = ["state_value_logits", "state_value"] if two_hot else ["state_value"]
    tloss = TO.DreamerV3ValueLoss(TensorDictModule(tnet, in_keys=["state"], out_keys=keys), **kw)
    tree = params_from_torch(tnet)
    target = None
    if slow:  # the slow critic moved away from the online one, identically on both sides
        shift = {k: rng.normal(scale=0.1, size=tuple(v.shape)) for k, v in tree["lin"].items()}
        with torch.no_grad():
            for k, p in tloss.target_value_model_params.flatten_keys(".").items():
                p.add_(torch.as_tensor(shift[k.split(".")[-1]]))
        target = {"lin": {k: v + shift[k] for k, v in tree["lin"].items()}}
    tl = _TorchSide(tloss, {"value_params": tnet})
    batch = {"state": rng.normal(size=(B, T, V3_OBS)), "lambda_target": rng.normal(size=(B, T, 1)) * 10}
    if weight:
        batch["discount_weight"] = rng.random(size=(B, T, 1))
    td = _td(batch, [B, T])

    def build(convert: Callable) -> tuple:
        al = DreamerV3ValueLoss(KeyedModule(fn, params=tree, in_keys=["state"], out_keys=keys), **kw)
        al.params = {"value_model": convert(tree)}
        if target is not None:
            al.target_params = {"value_model": convert(target)}
        return _ArraySide(al, returns_data=False, draws=False), convert(batch)

    return L.LossCase("DreamerV3ValueLoss", opts, tl, td, build, _grads(tl, [("value_params", ("value_model",))]),
                      {"loss_value": ("value_model",)}, None, td_error=False)


def v3_actor_case(rng: np.random.Generator, **opts: Any) -> Any:
    """DreamerV3ActorLoss, ``torchrl_compat=True`` (drawn: ``use_reinforce``, ``continuation``, ``entropy_bonus``,
    ``return_normalization``, ``return_normalization_rate``, ``return_normalization_min_scale``,
    ``discount_loss``, ``N``)."""
    import torch
    import torchrl.objectives as TO
    from tensordict.nn import TensorDictModule as TDM
    from torchrl.modules.models import model_based as mb

    from ..interop import params_from_torch
    from ..nn import KeyedModule
    from ..nn.rssm import RSSMPriorV3
    from ..objectives.dreamer_v3 import DreamerV3ActorLoss

    L = _L()
    pick = L._pick
    reinforce = pick(rng, opts, "use_reinforce", (False, True))
    cont = pick(rng, opts, "continuation", (False, True))
    kw = dict(use_reinforce=reinforce, entropy_bonus=pick(rng, opts, "entropy_bonus", (3e-4, 0.1, 0.0)),
              return_normalization=pick(rng, opts, "return_normalization", (True, False)),
              return_normalization_rate=pick(rng, opts, "return_normalization_rate", (0.01, 0.5, 1.0)),
              return_normalization_min_scale=pick(rng, opts, "return_normalization_min_scale", (1.0, 1e-3)),
              discount_loss=pick(rng, opts, "discount_loss", (True, False)))
    N = pick(rng, opts, "N", (2, 3))
    C, K, H = 2, 3, 3
    SV = C * K
    tp = mb.RSSMPriorV3(hidden_dim=5, rnn_hidden_dim=R, num_categoricals=C, num_classes=K, action_dim=A)
    ap = RSSMPriorV3(5, R, C, K, A)
    ap.params = params_from_torch(tp)
    t_env, a_env = _env_pair(tp, ap, ["_", "state", "belief"], SV)
    # REINFORCE rescores the stored action through atanh: an unsaturated actor there (test_dreamer_v3_actor.py)
    td_actor, t_actor, a_actor = _actor_pair(SV, cells=5, std_bias=0.0 if reinforce else 5.0)
    tv, av = _mlp_pair(SV + R, 1, cells=5)
    t_value = TDM(tv, in_keys=["state", "belief"], out_keys=["state_value"])
    a_value = KeyedModule(av, in_keys=["state", "belief"], out_keys=["state_value"])
    t_cont = a_cont = None
    if cont:
        class Cont(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lin = torch.nn.Linear(SV + R, 1)

            def forward(self, s: Any, b: Any) -> Any:
                return torch.sigmoid(self.lin(torch.cat([s, b], -1)) + 1.0)

        tc = Cont()
        cp = params_from_torch(tc)["lin"]
        t_cont = TDM(tc, in_keys=["state", "belief"], out_keys=["continuation"])
        a_cont = KeyedModule(_cont_fn, params={"weight": cp["weight"], "bias": cp["bias"] + 1.0},
                             in_keys=["state", "belief"], out_keys=["continuation"])
    tl = _TorchSide(TO.DreamerV3ActorLoss(t_actor, t_value, t_env, continuation_model=t_cont, imagination_horizon=H,
                                          **kw), {"actor_params": td_actor})

    def make() -> Any:
        return DreamerV3ActorLoss(a_actor, a_value, a_env, continuation_model=a_cont, imagination_horizon=H,
                                  torchrl_compat=True, **kw)

    params = L._numpy_copy(make().params)
    batch = {"state": rng.normal(size=(N, SV)), "belief": rng.normal(size=(N, R))}
    td = _td(batch, [N])

    def build(convert: Callable) -> tuple:
        al = make()
        al.params = convert(params)
        return _ArraySide(al, returns_data=True), convert(batch)

    keys: list = ["action", "lambda_target", "discount_weight", ("next", "state"), ("next", "belief"),
                  ("next", "reward")] + (["continuation", ("next", "continuation")] if cont else [])
    data = _data_after(tl, keys)

    def after(al: Any, acc: Errors) -> None:
        data(al, acc)
        for k in ("return_low", "return_high"):
            acc.value(getattr(al.loss, k), L._np(getattr(tl.loss, k)), k)

    return L.LossCase("DreamerV3ActorLoss", opts, tl, td, build,
                      _grads(tl, [("actor_params", ("actor_model", "0"))]), {"loss_actor": ("actor_model",)}, None,
                      td_error=False, replay_draws=True, after=after, recorder={"rand": True})


def _cont_fn(p: Any, s: Any, b: Any) -> Any:
    from .. import ops
    from .._backend import namespace_of

    xp = namespace_of(s, b, p["weight"])
    y = ops.linear(xp.concat([s, b], axis=-1), p["weight"], p["bias"])
    return 1.0 / (1.0 + xp.exp(-y))


#: family -> (builder, fixed options)
BUILDERS: dict[str, tuple[Callable, dict]] = {
    "DreamerModelLoss": (model_case, {}),
    "DreamerActorLoss": (actor_case, {}),
    "DreamerValueLoss": (value_case, {}),
    "DreamerV3ModelLoss": (v3_model_case, {}),
    "DreamerV3ValueLoss": (v3_value_case, {}),
    "DreamerV3ActorLoss": (v3_actor_case, {}),
}
