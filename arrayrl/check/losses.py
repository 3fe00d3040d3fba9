"""``arrayrl check`` provider: the loss classes vs TorchRL 0.14.1 and ``reference/losses`` (see :mod:`arrayrl.cli`).

Components (each runs ``n_cases`` random cases):

* ``loss.DQNLoss``, ``loss.DistributionalDQNLoss``, ``loss.QMixerLoss[qmix]``, ``loss.QMixerLoss[vdn]``,
  ``loss.IQLLoss``, ``loss.DiscreteIQLLoss``: a case draws the loss's options (action space, loss function,
  reduction, ``delay_*``, ``double_dqn``, value estimator, gamma, ensemble size, expectile, temperature,
  prioritized-replay weights, batch size...), builds TorchRL's loss with torch's default dtype set to float64,
  copies its online *and* target weights into the arrayrl loss, feeds both the same batch and compares every output
  key, the ``td_error`` each writes into its batch (values) and the gradient of ``sum(loss_*)`` w.r.t. every
  parameter (arrayrl's tape vs ``torch.autograd``). With the TD(0) estimator the outputs are also compared with
  ``reference/losses`` (per-sample float64 loops) fed TorchRL's network outputs (column "vs reference"; skipped
  when the oracle is absent, see :mod:`arrayrl.check._oracle`).
* ``loss.self-consistency[finite-diff]``: a random loss of any family above; the gradient of each ``loss_*`` term
  w.r.t. the networks that term trains, along random unit directions, against central finite differences
  (``eps=1e-6``; tolerance 1e-6, the truncation/round-off level of float64 differences). Semi-gradient terms are
  differentiated only w.r.t. their own network, and targets are delayed, so held-out values stay put.
* ``loss.self-consistency[backends]``: the same loss on every other backend present (torch through
  array-api-compat, array-api-strict): outputs and ``td_error`` against NumPy's, and the tape gradients on the
  backends in :data:`TAPE_BACKENDS`.

The case builders (:func:`dqn_case`, :func:`distributional_dqn_case`, :func:`qmixer_case`, :func:`iql_case`,
:func:`discrete_iql_case`; :data:`BUILDERS` maps the families to them) take a ``numpy.random.Generator`` and
optional fixed options (every option not given is drawn), and must run inside
:func:`~arrayrl.check._common.torch_float64`; :func:`compare_with_torchrl`, :func:`check_finite_differences` and
:func:`check_backends` record into an :class:`~arrayrl.check._common.Errors`. Tests reuse them.

The actor-critic families (PPO, A2C, REINFORCE, MAPPO/IPPO, SAC, DiscreteSAC, DDPG, TD3, TD3BC) are built in
:mod:`arrayrl.check.actor_critic` and merged into :data:`CHECKS`; :class:`LossCase` carries what they need beyond
the value-based losses (``td_error`` optional, TorchRL's normal draws replayed through :class:`NormalRecorder`,
state compared after the call).

TorchRL conventions handled here: TorchRL's QValueModule has no ``binary`` action space, so binary DQN cases use the
same hand-written head on both sides (``a = Q > 0``, ``Q(s, a) = sum_k max(Q_k, 0)``); DQN cases with
``mult_one_hot``/``binary`` actions and ``double_dqn`` run arrayrl with ``torchrl_compat=True`` (see
docs/divergences.md); IQL with ``reduction="none"`` uses ``scalar_output_mode="non_tensor"`` on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from . import _oracle as oracle
from ._common import TOLERANCE, Errors, torch_float64

__all__ = [
    "CHECKS", "TOLERANCE", "FD_TOLERANCE", "TAPE_BACKENDS", "LossCase", "BUILDERS", "dqn_case",
    "distributional_dqn_case", "qmixer_case", "iql_case", "discrete_iql_case", "compare_with_torchrl",
    "check_finite_differences", "check_backends",
]

#: finite differences (eps=1e-6, float64) are good to ~1e-9 relative; 1e-6 leaves room, a wrong VJP is O(1)
FD_TOLERANCE = 1e-6
ESTIMATORS = ("td0", "td1", "tdlambda")
LOSS_FUNCTIONS = ("l2", "smooth_l1", "l1")
REDUCTIONS = ("mean", "sum", "none")


@dataclass
class LossCase:
    """One TorchRL loss, its input and a recipe for the matching arrayrl loss.

    ``build(convert)`` returns ``(arrayrl loss, batch)`` with every array (weights, targets, constants, batch)
    passed through ``convert`` (a tree map from NumPy to a backend; it must copy). ``grads`` lists
    ``(TorchRL params attribute, path into arrayrl's gradient tree, TorchRL name prefix to strip)``; ``terms``
    maps each ``loss_*`` term to the networks it trains; ``reference()`` gives the expected outputs from
    ``reference/losses`` (TD(0) only, else None; None as well when the oracle is absent, see
    :mod:`arrayrl.check._oracle`).
    """

    family: str
    options: dict
    torchrl_loss: Any
    td: Any
    build: Callable[[Callable], tuple[Any, dict]]
    grads: list
    terms: dict
    reference: Callable[[], dict] | None = None
    #: compare the ``td_error`` each loss writes into its batch (the value-based and SAC losses do; PPO does not)
    td_error: bool = True
    #: replay TorchRL's standard-normal draws (recorded during its call) into the arrayrl loss's ``generator``;
    #: ``fix_draws(draws)`` may reshape them first (SAC ``skip_done_states``: TorchRL draws only the kept rows)
    replay_draws: bool = False
    fix_draws: Callable[[list], list] | None = None
    #: ``after(arrayrl loss, errors)``: state compared after both calls (log_alpha, beta, normaliser statistics)
    after: Callable[[Any, Errors], None] | None = None
    #: keyword arguments of :class:`NormalRecorder` (REDQ: ``randperm=True, sample=True``; CQL: ``uniform=True``)
    recorder: dict | None = None

    def __post_init__(self) -> None:
        if oracle.load().module is None:
            self.reference = None


# ------------------------------------------------------------------------------------------------------ helpers
def _oracle(dotted: str) -> Any:
    """The oracle's submodule ``dotted`` (only called from ``LossCase.reference``, which exists with the oracle)."""
    module = oracle.submodule(dotted)
    if module is None:
        raise RuntimeError(f"the oracle is absent ({oracle.status()}); reference.{dotted} cannot be used")
    return module


def _pick(rng: np.random.Generator, opts: dict, key: str, choices: Sequence) -> Any:
    """``opts[key]`` if given, else a uniform draw from ``choices`` (recorded in ``opts``)."""
    if key not in opts:
        opts[key] = choices[int(rng.integers(len(choices)))]
    return opts[key]


def _numpy_copy(tree: Any) -> Any:
    from ..tree import tree_map

    return tree_map(lambda x: np.array(x, copy=True), tree)


def _converter(xp: Any, device: Any, fdtype: Any) -> Callable:
    from ..tree import tree_map

    def conv(a: np.ndarray) -> Any:
        a = np.asarray(a)
        kw = {"dtype": fdtype} if a.dtype.kind == "f" else {}
        if device is not None:
            kw["device"] = device
        return xp.asarray(np.array(a, copy=True), **kw)

    return lambda tree: tree_map(conv, tree)


def _backends() -> dict:
    """The non-NumPy backends present: ``{name: (namespace, device, float64 dtype)}``."""
    import importlib.util

    out: dict[str, tuple[Any, str | None, Any]] = {}
    if importlib.util.find_spec("torch") is not None:
        import array_api_compat.torch as t

        out["torch"] = (t, "cpu", getattr(t, "float64"))  # set by array_api_compat.torch at import
    if importlib.util.find_spec("array_api_strict") is not None:
        import array_api_strict as s

        out["array_api_strict"] = (s, None, s.float64)
    return out


def _torch_flat(params: Any, prefix: str = "") -> dict:
    """TorchRL parameter TensorDict -> ``{state_dict name without TensorDictModule 'module' levels: tensor}``,
    floating leaves whose name starts with ``prefix`` (stripped); the C51 ``support`` buffers are left out."""
    out = {}
    for k, v in params.flatten_keys(".").items():
        name = ".".join(p for p in k.split(".") if p != "module")
        if name.startswith(prefix) and v.dtype.is_floating_point and name.split(".")[-1] != "support":
            out[name[len(prefix):]] = v
    return out


def _tree(params: Any, prefix: str = "") -> dict:
    """TorchRL parameters -> an arrayrl parameter tree of NumPy copies (see :func:`_torch_flat`)."""
    from ..nn.params import unflatten_params

    return unflatten_params({k: v.detach().numpy().copy() for k, v in _torch_flat(params, prefix).items()})


def _perturb(rng: np.random.Generator, *param_tds: Any) -> None:
    """Move TorchRL's online weights away from the target copies made at construction."""
    import torch

    with torch.no_grad():
        for td in param_tds:
            for p in _torch_flat(td).values():  # weights only: the C51 support stays a linspace
                p.add_(torch.as_tensor(0.1 * rng.normal(size=tuple(p.shape)), dtype=p.dtype))


def _transition(rng: np.random.Generator, B: int, obs_shape: tuple, action: np.ndarray) -> dict:
    term = rng.random((B, 1)) < 0.3
    return {"observation": rng.normal(size=(B,) + obs_shape), "action": action,
            "next": {"observation": rng.normal(size=(B,) + obs_shape), "reward": rng.normal(size=(B, 1)),
                     "done": term | (rng.random((B, 1)) < 0.2), "terminated": term}}  # truncations too


def _discrete_action(rng: np.random.Generator, shape: tuple, n: int, space: str) -> np.ndarray:
    idx = rng.integers(0, n, shape)
    return idx if space == "categorical" else np.eye(n, dtype=np.int64)[idx]


def _to_td(batch: dict, batch_size: list) -> Any:
    from ..interop import to_tensordict

    return to_tensordict(_numpy_copy(batch), batch_size=batch_size)


def _run_net(module: Any, params: Any, td: Any) -> Any:
    """TorchRL network ``module`` with ``params`` on a copy of ``td`` (no tape) -> the output TensorDict."""
    import torch

    with torch.no_grad(), params.to_module(module):
        return module(td.clone())


def _np(x: Any) -> np.ndarray:
    import torch

    x = getattr(x, "data", x) if not isinstance(x, torch.Tensor) else x  # NonTensorData
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def _estimator_kwargs(est: str) -> dict:
    """Hyper-parameters of ``make_value_estimator(est, gamma=...)`` beyond gamma (TD(lambda): lambda 0.7)."""
    return {"lmbda": 0.7} if est == "tdlambda" else {}


# ------------------------------------------------------------------------------------------------------ DQN
def _binary_nets(nobs: int, nA: int) -> tuple:
    """TorchRL's QValueModule has no binary action space: both sides use a head writing ``a = (Q > 0)`` and
    ``Q(s, a) = sum_k Q_k a_k``."""
    import torch
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP

    from .._backend import namespace_of
    from ..nn import MLP, KeyedModule

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp = TMLP(in_features=nobs, out_features=nA, num_cells=[8])

        def forward(self, obs: Any) -> tuple:
            q = self.mlp(obs)
            a = (q > 0).long()
            return q, a, (q * a).sum(-1, keepdim=True)

    tactor = TensorDictModule(Head(), ["observation"], ["action_value", "action", "chosen_action_value"])

    def actor() -> Any:
        mlp = MLP(in_features=nobs, out_features=nA, num_cells=[8])

        def head(p: Any, obs: Any) -> tuple:
            q = mlp.apply(p["0"], obs)
            xp = namespace_of(q)
            a = xp.astype(q > 0, xp.int64)
            return q, a, xp.sum(q * xp.astype(a, q.dtype), axis=-1, keepdims=True)

        return KeyedModule(head, params={"0": mlp.params}, in_keys=["observation"],
                           out_keys=["action_value", "action", "chosen_action_value"])

    return tactor, actor


def dqn_case(rng: np.random.Generator, **opts: Any) -> LossCase:
    """DQNLoss / Double DQN over the four action spaces (options: ``action_space``, ``delay_value``,
    ``double_dqn``, ``loss_function``, ``reduction``, ``estimator``, ``gamma``, ``priority_weight``, ``B``)."""
    import torchrl.objectives as TO
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import QValueActor as TQA
    from torchrl.modules import QValueModule as TQM
    from torchrl.modules import SafeSequential

    from .. import objectives as O
    from ..nn import MLP, QValueActor

    space = _pick(rng, opts, "action_space", ("one_hot", "categorical", "mult_one_hot", "binary"))
    delay = _pick(rng, opts, "delay_value", (True, False))
    double = _pick(rng, opts, "double_dqn", (False, True) if delay else (False,))
    fn = _pick(rng, opts, "loss_function", LOSS_FUNCTIONS)
    reduction = _pick(rng, opts, "reduction", REDUCTIONS)
    est = _pick(rng, opts, "estimator", ESTIMATORS)
    gamma = _pick(rng, opts, "gamma", (0.9, 0.99, 0.5))
    weighted = _pick(rng, opts, "priority_weight", (True, False))
    B = _pick(rng, opts, "B", (1, 3, 6, 8))
    nobs, var_nums = 3, [2, 3]
    nA = 5 if space == "mult_one_hot" else 4

    tnet = TMLP(in_features=nobs, out_features=nA, num_cells=[8])
    if space == "mult_one_hot":
        tactor = SafeSequential(TensorDictModule(tnet, ["observation"], ["action_value"]),
                                TQM(action_space="mult_one_hot", var_nums=var_nums))

        def actor() -> Any:
            return QValueActor(MLP(in_features=nobs, out_features=nA, num_cells=[8]), action_space="mult_one_hot",
                               var_nums=var_nums)
    elif space == "binary":
        tactor, actor = _binary_nets(nobs, nA)
    else:
        tactor = TQA(tnet, in_keys=["observation"], action_space=space)

        def actor() -> Any:
            return QValueActor(MLP(in_features=nobs, out_features=nA, num_cells=[8]), action_space=space)

    tl = TO.DQNLoss(tactor, action_space=space, double_dqn=double, delay_value=delay, loss_function=fn,
                    reduction=reduction)
    hp = _estimator_kwargs(est)
    tl.make_value_estimator(est, gamma=gamma, **hp)
    if delay:
        _perturb(rng, tl.value_network_params)
    prefix = "mlp." if space == "binary" else ""

    def as_tree(params: Any) -> dict:
        return {"0": _tree(params, prefix)} if space == "binary" else _tree(params) | {"1": {}}

    online = as_tree(tl.value_network_params)
    target = as_tree(tl.target_value_network_params) if delay else None

    if space == "categorical":
        action = rng.integers(0, nA, B)
    elif space == "one_hot":
        action = np.eye(nA, dtype=bool)[rng.integers(0, nA, B)]
    elif space == "binary":
        action = rng.random((B, nA)) < 0.5
    else:
        action = np.concatenate([np.eye(k, dtype=bool)[rng.integers(0, k, B)] for k in var_nums], -1)
    batch = _transition(rng, B, (nobs,), action)
    if weighted:
        batch["priority_weight"] = rng.random(B) + 0.5
    td = _to_td(batch, [B])

    def build(convert: Callable) -> tuple:
        al = O.DQNLoss(actor(), action_space=space, double_dqn=double, delay_value=delay, loss_function=fn,
                       reduction=reduction, torchrl_compat=space in ("mult_one_hot", "binary") and double)
        al.make_value_estimator(est, gamma=gamma, **hp)
        al.params = {"value_network": convert(online)}
        if delay:
            al._set_target("value_network", convert(target))
        return al, convert(batch)

    reference = None
    if est == "td0" and space in ("categorical", "one_hot"):
        def reference() -> dict:
            net = tl.value_network
            obs = td.select("observation")
            nobs_td = td["next"].select("observation")
            q = _run_net(net, tl.value_network_params, obs)["action_value"].numpy()
            nq_t = _run_net(net, tl.target_value_network_params, nobs_td)["action_value"].numpy()
            nq_o = _run_net(net, tl.value_network_params, nobs_td)["action_value"].numpy() if double else None
            r = _oracle("losses.dqn").dqn_loss(
                q, batch["action"], batch["next"]["reward"], nq_t, batch["next"]["terminated"], gamma=gamma,
                next_q_online=nq_o, double_dqn=double, loss_function=fn, reduction=reduction,
                weights=batch.get("priority_weight"), action_space=space)
            return {"loss": r["loss"], "td_error": r["td_error"]}

    return LossCase("DQNLoss", opts, tl, td, build, [("value_network_params", ("value_network",) + (
        ("0",) if space == "binary" else ()), prefix)], {"loss": ("value_network",)}, reference)


# ---------------------------------------------------------------------------------------- distributional DQN
def distributional_dqn_case(rng: np.random.Generator, **opts: Any) -> LossCase:
    """C51 (options: ``action_space``, ``delay_value``, ``reduction``, ``gamma``, ``atoms``, ``v_max``,
    ``on_atoms`` (rewards on the support grid: TorchRL's integer-``b`` fix-up), ``priority_weight``, ``B``)."""
    import torch
    import torchrl.objectives as TO
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import DistributionalQValueActor

    from .. import objectives as O
    from .. import ops
    from .._backend import namespace_of
    from ..nn import MLP, KeyedModule

    space = _pick(rng, opts, "action_space", ("one_hot", "categorical"))
    delay = _pick(rng, opts, "delay_value", (True, False))
    reduction = _pick(rng, opts, "reduction", REDUCTIONS)
    gamma = _pick(rng, opts, "gamma", (0.9, 0.99, 0.5))
    atoms = _pick(rng, opts, "atoms", (5, 7, 11))
    v_max = _pick(rng, opts, "v_max", (2.0, 10.0))
    on_atoms = _pick(rng, opts, "on_atoms", (True, False))
    weighted = _pick(rng, opts, "priority_weight", (True, False))
    B = _pick(rng, opts, "B", (2, 3, 6, 8))  # B=1: TorchRL reads a categorical action [1] as [B, 1] and fails
    nobs, nA = 3, 3

    support = np.linspace(-v_max, v_max, atoms)
    tnet = torch.nn.Sequential(TMLP(in_features=nobs, out_features=atoms * nA, num_cells=[8]),
                               torch.nn.Unflatten(-1, (atoms, nA)), torch.nn.LogSoftmax(-2))
    tactor = DistributionalQValueActor(tnet, in_keys=["observation"], support=torch.tensor(support),
                                       action_space=space)
    tl = TO.DistributionalDQNLoss(tactor, gamma=gamma, delay_value=delay, reduction=reduction)
    if delay:
        _perturb(rng, tl.value_network_params)
    online = _tree(tl.value_network_params, "0.0.")
    target = _tree(tl.target_value_network_params, "0.0.") if delay else None

    batch = _transition(rng, B, (nobs,), _discrete_action(rng, (B,), nA, space))
    if on_atoms:
        batch["next"]["reward"] = 0.5 * support[rng.integers(0, atoms, (B, 1))]
    if weighted:
        batch["priority_weight"] = rng.random(B) + 0.5
    td = _to_td(batch, [B])

    def build(convert: Callable) -> tuple:
        mlp = MLP(in_features=nobs, out_features=atoms * nA, num_cells=[8])

        def logits(p: Any, obs: Any) -> Any:
            x = mlp.apply(p, obs)
            x = namespace_of(x).reshape(x, tuple(x.shape[:-1]) + (atoms, nA))
            return ops.log_softmax(x, axis=-2)

        net = KeyedModule(logits, params=mlp.params, in_keys=["observation"], out_keys=["action_value"])
        al = O.DistributionalDQNLoss(net, gamma=gamma, support=convert(support), delay_value=delay,
                                     reduction=reduction, action_space=space)
        al.params = {"value_network": convert(online)}
        if delay:
            al._set_target("value_network", convert(target))
        return al, convert(batch)

    def reference() -> dict:
        net = tl.value_network
        obs, nobs_td = td.select("observation"), td["next"].select("observation")
        lp = _run_net(net, tl.value_network_params, obs)["action_value"].numpy()
        nlp_t = _run_net(net, tl.target_value_network_params, nobs_td)["action_value"].numpy()
        nlp_o = _run_net(net, tl.value_network_params, nobs_td)["action_value"].numpy()
        r = _oracle("losses.distributional").distributional_dqn_loss(
            lp, batch["action"], batch["next"]["reward"], batch["next"]["terminated"], nlp_t, support, gamma=gamma,
            next_log_probs_online=nlp_o, double_dqn=True, reduction=reduction,
            weights=batch.get("priority_weight"), action_space=space)
        return {"loss": r["loss"], "td_error": r["td_error"]}

    return LossCase("DistributionalDQNLoss", opts, tl, td, build, [("value_network_params", ("value_network",),
                                                                    "0.0.")], {"loss": ("value_network",)}, reference)


# ------------------------------------------------------------------------------------------------------ QMixer
def qmixer_case(rng: np.random.Generator, **opts: Any) -> LossCase:
    """QMixerLoss with a VDN or QMIX mixer (options: ``mixer``, ``action_space``, ``delay_value``,
    ``loss_function``, ``estimator``, ``gamma``, ``n_agents``, ``state_shape``, ``B``)."""
    import torch
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.modules import QValueModule as TQM
    from torchrl.modules import SafeSequential
    from torchrl.modules.models.multiagent import QMixer as TQMixer
    from torchrl.modules.models.multiagent import VDNMixer as TVDN
    from torchrl.objectives.multiagent import QMixerLoss as TQMixerLoss

    from .. import objectives as O
    from ..interop import to_torch
    from ..nn import KeyedModule, Linear, QValueActor
    from ..nn.multiagent import QMixer, VDNMixer

    from ..tree import tree_map

    kind = _pick(rng, opts, "mixer", ("qmix", "vdn"))
    space = _pick(rng, opts, "action_space", ("categorical", "one_hot"))
    delay = _pick(rng, opts, "delay_value", (True, False))
    fn = _pick(rng, opts, "loss_function", LOSS_FUNCTIONS)
    est = _pick(rng, opts, "estimator", ESTIMATORS)
    gamma = _pick(rng, opts, "gamma", (0.9, 0.99, 0.5))
    n = _pick(rng, opts, "n_agents", (1, 2, 3))
    S = _pick(rng, opts, "state_shape", ((4,), (2, 3)))
    B = _pick(rng, opts, "B", (1, 3, 5))
    nobs, nA, E = 6, 4, 5
    keys: dict[str, Any] = dict(action_value_key=("agents", "action_value"), action_key=("agents", "action"),
                                chosen_action_value_key=("agents", "chosen_action_value"))

    module = TensorDictModule(torch.nn.Linear(nobs, nA), in_keys=[("agents", "observation")],
                              out_keys=[("agents", "action_value")])
    vm = TQM(action_value_key=("agents", "action_value"), action_space=space,
             out_keys=[("agents", "action"), ("agents", "action_value"), ("agents", "chosen_action_value")])
    qnet = SafeSequential(module, vm)
    if kind == "vdn":
        tm = TensorDictModule(TVDN(n_agents=n, device="cpu"), in_keys=[("agents", "chosen_action_value")],
                              out_keys=["chosen_action_value"])
    else:
        tm = TensorDictModule(TQMixer(state_shape=S, mixing_embed_dim=E, n_agents=n, device="cpu"),
                              in_keys=[("agents", "chosen_action_value"), "state"], out_keys=["chosen_action_value"])
    tl = TQMixerLoss(qnet, tm, action_space=space, delay_value=delay, loss_function=fn)
    hp = _estimator_kwargs(est)
    tl.make_value_estimator(est, gamma=gamma, **hp)
    if delay:
        _perturb(rng, tl.local_value_network_params, tl.mixer_network_params)
    online = {"local_value_network": _tree(tl.local_value_network_params) | {"1": {}},
              "mixer_network": _tree(tl.mixer_network_params)}
    target = {"local_value_network": _tree(tl.target_local_value_network_params) | {"1": {}},
              "mixer_network": _tree(tl.target_mixer_network_params)} if delay else None

    term = rng.random((B, 1)) < 0.3
    batch = {"agents": {"observation": rng.normal(size=(B, n, nobs)),
                        "action": _discrete_action(rng, (B, n), nA, space)},
             "state": rng.normal(size=(B,) + S),
             "next": {"agents": {"observation": rng.normal(size=(B, n, nobs))}, "state": rng.normal(size=(B,) + S),
                      "reward": rng.normal(size=(B, 1)), "done": term | (rng.random((B, 1)) < 0.2),
                      "terminated": term}}
    c = tree_map(to_torch, _numpy_copy(batch))
    td = TensorDict({"agents": TensorDict(c["agents"], [B, n]), "state": c["state"],
                     "next": TensorDict({**c["next"], "agents": TensorDict(c["next"]["agents"], [B, n])}, [B])}, [B])

    def build(convert: Callable) -> tuple:
        aq = QValueActor(KeyedModule(Linear(nobs, nA), in_keys=[("agents", "observation")],
                                     out_keys=[("agents", "action_value")]), action_space=space, **keys)
        al = O.QMixerLoss(aq, VDNMixer(n) if kind == "vdn" else QMixer(S, E, n), action_space=space,
                          delay_value=delay, loss_function=fn)
        al.make_value_estimator(est, gamma=gamma, **hp)
        al.params = convert(online)
        if target is not None:
            for name, tree in target.items():
                al._set_target(name, convert(tree))
        return al, convert(batch)

    reference = None
    if est == "td0":
        def reference() -> dict:
            net = tl.local_value_network
            q = _run_net(net, tl.local_value_network_params, td.select(("agents", "observation")))
            nq = _run_net(net, tl.target_local_value_network_params, td["next"].select(("agents", "observation")))

            def flat(params: Any) -> dict:
                return {k: v.detach().numpy() for k, v in _torch_flat(params).items()}

            r = _oracle("losses.qmixer").qmixer_loss(
                q["agents", "action_value"].numpy(), batch["agents"]["action"], batch["next"]["reward"],
                nq["agents", "action_value"].numpy(), batch["next"]["terminated"], gamma=gamma, mixer=kind,
                params=flat(tl.mixer_network_params), target_params=flat(tl.target_mixer_network_params),
                state=batch["state"], next_state=batch["next"]["state"], loss_function=fn, action_space=space)
            return {"loss": r["loss"], "td_error": r["td_error"]}

    return LossCase(f"QMixerLoss[{kind}]", opts, tl, td, build,
                    [("local_value_network_params", ("local_value_network",), ""),
                     ("mixer_network_params", ("mixer_network",), "")],
                    {"loss": ("local_value_network", "mixer_network")}, reference)


# ------------------------------------------------------------------------------------------------------ IQL
def iql_case(rng: np.random.Generator, **opts: Any) -> LossCase:
    """IQLLoss (``discrete=None``: TanhNormal actor, Q(s, a)) or DiscreteIQLLoss (``discrete="categorical"`` or
    ``"one_hot"``: categorical actor, Q(s, .)); options: ``num_qvalue_nets``, ``loss_function``, ``reduction``,
    ``expectile``, ``temperature`` (10 reaches TorchRL's ``exp`` clamp at 100), ``estimator``, ``gamma``, ``B``."""
    import torch
    import torchrl.objectives as TO
    from tensordict.nn import NormalParamExtractor as TNPE
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TMLP
    from torchrl.modules import OneHotCategorical as TOHC
    from torchrl.modules import ProbabilisticActor as TPA
    from torchrl.modules import TanhNormal as TTN
    from torchrl.modules import ValueOperator as TVO

    from .. import objectives as O
    from ..distributions import Categorical, OneHotCategorical, TanhNormal
    from ..nn import MLP, KeyedModule, NormalParamExtractor, ProbabilisticActor, ValueOperator

    discrete = _pick(rng, opts, "discrete", (None, "categorical", "one_hot"))
    n_q = _pick(rng, opts, "num_qvalue_nets", (1, 2, 3))
    fn = _pick(rng, opts, "loss_function", LOSS_FUNCTIONS)
    reduction = _pick(rng, opts, "reduction", REDUCTIONS)
    tau = _pick(rng, opts, "expectile", (0.3, 0.5, 0.7, 0.9))
    beta = _pick(rng, opts, "temperature", (0.5, 1.0, 3.0, 10.0))
    est = _pick(rng, opts, "estimator", ESTIMATORS)
    gamma = _pick(rng, opts, "gamma", (0.9, 0.99, 0.5))
    B = _pick(rng, opts, "B", (2, 4, 7))
    nobs, nA = 3, (2 if discrete is None else 4)
    kw = dict(loss_function=fn, reduction=reduction, expectile=tau, temperature=beta, num_qvalue_nets=n_q,
              scalar_output_mode="non_tensor" if reduction == "none" else None)
    if discrete is not None:
        kw["action_space"] = discrete

    if discrete is None:
        tactor = TPA(TensorDictModule(torch.nn.Sequential(TMLP(in_features=nobs, out_features=2 * nA, num_cells=[8]),
                                                          TNPE()), ["observation"], ["loc", "scale"]),
                     in_keys=["loc", "scale"], distribution_class=TTN)
        tq = TVO(TMLP(in_features=nobs + nA, out_features=1, num_cells=[8]), in_keys=["observation", "action"])
        actor_prefix = "0.0."
    else:
        tactor = TPA(TensorDictModule(TMLP(in_features=nobs, out_features=nA, num_cells=[8]), ["observation"],
                                      ["logits"]), in_keys=["logits"],
                     distribution_class=TOHC if discrete == "one_hot" else torch.distributions.Categorical)
        tq = TVO(TMLP(in_features=nobs, out_features=nA, num_cells=[8]), in_keys=["observation"],
                 out_keys=["state_action_value"])
        actor_prefix = "0."
    tv = TVO(TMLP(in_features=nobs, out_features=1, num_cells=[8]), in_keys=["observation"])
    tl = (TO.IQLLoss if discrete is None else TO.DiscreteIQLLoss)(tactor, tq, tv, **kw)
    hp = _estimator_kwargs(est)
    tl.make_value_estimator(est, gamma=gamma, **hp)
    _perturb(rng, tl.qvalue_network_params)
    online = {"actor_network": {"0": _tree(tl.actor_network_params, actor_prefix), "1": {}},
              "qvalue_network": _tree(tl.qvalue_network_params), "value_network": _tree(tl.value_network_params)}
    target_q = _tree(tl.target_qvalue_network_params)  # TorchRL's re-sampled ensemble, then perturbed online

    action = rng.uniform(-0.9, 0.9, (B, nA)) if discrete is None else _discrete_action(rng, (B,), nA, discrete)
    batch = _transition(rng, B, (nobs,), action)
    td = _to_td(batch, [B])

    def build(convert: Callable) -> tuple:
        if discrete is None:
            amlp, ape = MLP(in_features=nobs, out_features=2 * nA, num_cells=[8]), NormalParamExtractor()
            amod = KeyedModule(lambda p, o: ape.apply({}, amlp.apply(p, o)), params=amlp.params,
                               in_keys=["observation"], out_keys=["loc", "scale"])
            actor = ProbabilisticActor(amod, in_keys=["loc", "scale"], distribution_class=TanhNormal)
            q = ValueOperator(MLP(in_features=nobs + nA, out_features=1, num_cells=[8]),
                              in_keys=["observation", "action"])
        else:
            amod = KeyedModule(MLP(in_features=nobs, out_features=nA, num_cells=[8]), in_keys=["observation"],
                               out_keys=["logits"])
            actor = ProbabilisticActor(amod, in_keys=["logits"],
                                       distribution_class=OneHotCategorical if discrete == "one_hot" else Categorical)
            q = ValueOperator(MLP(in_features=nobs, out_features=nA, num_cells=[8]), in_keys=["observation"],
                              out_keys=["state_action_value"])
        v = ValueOperator(MLP(in_features=nobs, out_features=1, num_cells=[8]), in_keys=["observation"])
        al = (O.IQLLoss if discrete is None else O.DiscreteIQLLoss)(actor, q, v, **kw)
        al.make_value_estimator(est, gamma=gamma, **hp)
        al.params = convert(online)
        al._set_target("qvalue_network", convert(target_q))
        return al, convert(batch)

    reference = None
    if est == "td0":
        def reference() -> dict:
            with torch.no_grad():
                with tl.actor_network_params.to_module(tl.actor_network):
                    lp = tl.actor_network.get_dist(td.clone()).log_prob(td["action"]).numpy()
                tdq = td.select(*tl.qvalue_network.in_keys)
                q_t = tl._vmap_qvalue_networkN0(tdq.clone(), tl.target_qvalue_network_params)
                q_o = tl._vmap_qvalue_networkN0(tdq.clone(), tl.qvalue_network_params)
            q_t, q_o = q_t["state_action_value"].numpy(), q_o["state_action_value"].numpy()
            v = _run_net(tl.value_network, tl.value_network_params, td.select("observation"))["state_value"].numpy()
            nv = _run_net(tl.value_network, tl.value_network_params,
                          td["next"].select("observation"))["state_value"].numpy()
            common = dict(gamma=gamma, temperature=beta, expectile=tau, loss_function=fn, reduction=reduction)
            nxt = batch["next"]
            riql = _oracle("losses.iql")
            if discrete is None:
                return riql.iql_loss(lp, q_t[..., 0], q_o[..., 0], v, nv, nxt["reward"], nxt["terminated"], **common)
            return riql.discrete_iql_loss(lp, q_t, q_o, batch["action"], v, nv, nxt["reward"], nxt["terminated"],
                                          action_space=discrete, **common)

    return LossCase("DiscreteIQLLoss" if discrete else "IQLLoss", opts, tl, td, build,
                    [("qvalue_network_params", ("qvalue_network",), ""),
                     ("value_network_params", ("value_network",), ""),
                     ("actor_network_params", ("actor_network", "0"), actor_prefix)],
                    {"loss_actor": ("actor_network",), "loss_qvalue": ("qvalue_network",),
                     "loss_value": ("value_network",)}, reference)


def discrete_iql_case(rng: np.random.Generator, **opts: Any) -> LossCase:
    """DiscreteIQLLoss: :func:`iql_case` with ``discrete`` drawn from ``"categorical"``, ``"one_hot"``."""
    _pick(rng, opts, "discrete", ("categorical", "one_hot"))
    return iql_case(rng, **opts)


#: family -> (builder, fixed options)
BUILDERS: dict[str, tuple[Callable, dict]] = {
    "DQNLoss": (dqn_case, {}),
    "DistributionalDQNLoss": (distributional_dqn_case, {}),
    "QMixerLoss[qmix]": (qmixer_case, {"mixer": "qmix"}),
    "QMixerLoss[vdn]": (qmixer_case, {"mixer": "vdn"}),
    "IQLLoss": (iql_case, {"discrete": None}),
    "DiscreteIQLLoss": (discrete_iql_case, {}),
}


# ------------------------------------------------------------------------------------------------------ checks
def _subtree(tree: dict, path: tuple) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def compare_with_torchrl(case: LossCase, acc: Errors) -> None:
    """Run TorchRL's loss and the arrayrl loss on ``case``: every output key and the written ``td_error``
    (values), every parameter gradient of ``sum(loss_*)`` (grads) and, where given, the reference outputs."""
    from ..nn.params import flatten_params

    import torch

    from ..random import Generator

    tl, td = case.torchrl_loss, case.td
    al, batch = case.build(_numpy_copy)
    with NormalRecorder(**(case.recorder or {})) as rec:
        out_t = tl(td)
    sum(out_t.get(k).sum() for k in out_t.keys() if k.startswith("loss")).backward()
    draws = rec.draws
    if case.replay_draws:
        draws = case.fix_draws(draws) if case.fix_draws is not None else draws
        al.generator = Generator.from_noise(*draws) if draws else None
    out_a, grads = al.value_and_grad(batch)
    if case.replay_draws and draws and al.generator.remaining:
        raise AssertionError(f"{al.generator.remaining} of TorchRL's {len(draws)} draws left unused ({case.options})")
    if sorted(out_a) != sorted(out_t.keys()):
        raise AssertionError(f"output keys {sorted(out_a)}, TorchRL's {sorted(out_t.keys())} ({case.options})")
    for k in out_t.keys():
        acc.value(out_a[k], _np(out_t.get(k)), k)
    if case.td_error:
        acc.value(batch["td_error"], _np(td.get("td_error")), "td_error")
    for attr, path, prefix in case.grads:
        if isinstance(getattr(tl, attr), torch.Tensor):  # a bare parameter (SAC's log_alpha)
            p = getattr(tl, attr)
            acc.grad(_subtree(grads, path), p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape)),
                     f"grad {attr}")
            continue
        flat_t = {k: v for k, v in _torch_flat(getattr(tl, attr), prefix).items()
                  if k.split(".")[-1] not in _STATISTICS}  # normalisation statistics: state, not parameters
        flat_a = flatten_params(_subtree(grads, path))
        if sorted(flat_t) != sorted(flat_a):
            raise AssertionError(f"{attr}: parameters {sorted(flat_a)}, TorchRL's {sorted(flat_t)}")
        for k, p in flat_t.items():
            g = p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape))
            acc.grad(flat_a[k], g, f"grad {attr}.{k}")
    if case.after is not None:
        case.after(al, acc)
    if case.reference is not None:
        for k, want in case.reference().items():
            acc.ref(out_a[k] if k in out_a else batch[k], want, f"{k} vs reference")


#: running-statistics leaves of batch-normalisation layers (left out of the gradient comparison)
_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


class NormalRecorder:
    """Records torch's standard-normal draws made inside the ``with`` block, in call order: ``Normal.rsample``'s
    ``_standard_normal`` and ``torch.randn_like`` (TD3's target-policy noise); with ``randperm=True`` also
    ``torch.randperm`` (REDQ's critic subset), with ``sample=True`` ``Normal.sample`` is routed through ``rsample``
    under ``no_grad`` (the same value ``loc + scale * eps``, so its draw is recorded too), with ``uniform=True``
    the results of ``Tensor.uniform_`` (CQL's random actions, recorded as drawn: ``U(low, high)``), with
    ``rand=True`` the results of ``torch.rand`` (RND's update-fraction mask, GAIL's ``Uniform(0, 1).sample``) and with
    ``rand=fn`` ``torch.rand(shape, dtype=...)`` replaced by ``fn(shape, dtype)`` (a tensor; recorded too: GAIL's
    per-sample coefficient made constant along each row)."""

    def __init__(self, *, randperm: bool = False, sample: bool = False, uniform: bool = False,
                 rand: bool | Callable = False) -> None:
        self._randperm, self._sample, self._uniform, self._rand = randperm, sample, uniform, rand

    def __enter__(self) -> "NormalRecorder":
        import torch
        import torch.distributions.normal as tdn

        self.draws: list[np.ndarray] = []
        self._torch, self._mod = torch, tdn
        self._orig = tdn._standard_normal, torch.randn_like
        self._orig_perm, self._orig_sample = torch.randperm, tdn.Normal.sample
        self._orig_uniform, self._orig_rand = torch.Tensor.uniform_, torch.rand
        if self._rand:
            orig_rand, fn = self._orig_rand, self._rand

            def rand(*a: Any, **k: Any) -> Any:
                if callable(fn):
                    shape = tuple(a[0]) if len(a) == 1 and not isinstance(a[0], int) else tuple(a)
                    out = fn(shape, k.get("dtype"))
                else:
                    out = orig_rand(*a, **k)
                self.draws.append(out.detach().numpy().copy())
                return out

            torch.rand = rand
        if self._uniform:
            orig_uniform = self._orig_uniform

            def uniform(t: Any, *a: Any, **k: Any) -> Any:
                out = orig_uniform(t, *a, **k)
                self.draws.append(out.detach().numpy().copy())
                return out

            torch.Tensor.uniform_ = uniform
        if self._randperm:
            def perm(*a: Any, **k: Any) -> Any:
                x = self._orig_perm(*a, **k)
                self.draws.append(x.numpy().copy())
                return x

            torch.randperm = perm
        if self._sample:
            def sample(dist: Any, sample_shape: Any = torch.Size()) -> Any:
                with torch.no_grad():
                    return dist.rsample(sample_shape)

            tdn.Normal.sample = sample

        def recording(fn: Callable) -> Callable:
            def record(*a: Any, **k: Any) -> Any:
                x = fn(*a, **k)
                self.draws.append(x.detach().numpy().copy())
                return x

            return record

        tdn._standard_normal, torch.randn_like = (recording(f) for f in self._orig)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mod._standard_normal, self._torch.randn_like = self._orig
        self._torch.randperm, self._mod.Normal.sample = self._orig_perm, self._orig_sample
        self._torch.Tensor.uniform_, self._torch.rand = self._orig_uniform, self._orig_rand


def _directional_fd(f: Callable, x: Any, g: Any, rng: np.random.Generator, eps: float) -> tuple[float, float]:
    """``<g, d>`` vs ``(f(x + eps d) - f(x - eps d)) / 2 eps`` along a random unit direction ``d``."""
    from ..tree import tree_leaves, tree_map

    d = tree_map(lambda a: rng.normal(size=tuple(a.shape)), x)
    norm = float(np.sqrt(sum(np.sum(v * v) for v in tree_leaves(d))))
    d = tree_map(lambda v: v / norm, d)
    fd = (float(f(tree_map(lambda a, v: a + eps * v, x, d))) - float(f(tree_map(lambda a, v: a - eps * v, x, d))))
    fd /= 2 * eps
    ad = float(sum(np.sum(np.asarray(a) * v) for a, v in zip(tree_leaves(g), tree_leaves(d))))
    return abs(ad - fd), abs(ad - fd) / max(1.0, abs(fd))


def check_finite_differences(case: LossCase, acc: Errors, rng: np.random.Generator, *, n_directions: int = 2,
                             eps: float = 1e-6) -> None:
    """Tape gradient of each ``loss_*`` term w.r.t. the networks it trains vs central finite differences."""
    from .._backend import namespace_of
    from ..autodiff import value_and_grad

    al, batch = case.build(_numpy_copy)
    for term, nets in case.terms.items():
        def f(sub: dict, term: str = term) -> Any:
            out = al._forward(dict(batch), {**al.params, **sub})[term]
            return namespace_of(out).sum(out)

        x = {n: al.params[n] for n in nets}
        _, g = value_and_grad(f)(x)
        for _ in range(n_directions):
            acc.grad_error(*_directional_fd(f, x, g, rng, eps), f"d {term} / d {'+'.join(nets)}")


#: backends whose tape gradients :func:`check_backends` compares (outputs are compared on every backend).
#: array-api-strict is left out: its operators raise TypeError for a taped right operand (``Array * Tensor``
#: never reaches ``Tensor.__rmul__``), and the loss code has raw-first products (objectives/functional.py:
#: distributional_dqn_loss, expectile_loss, iql_value_loss, iql_actor_loss).
TAPE_BACKENDS = ("torch", "array_api_strict")


def check_backends(case: LossCase, acc: Errors, tape_backends: Sequence[str] = TAPE_BACKENDS) -> None:
    """The arrayrl loss on every other backend present: outputs and ``td_error`` vs NumPy's, and tape gradients
    on the backends in ``tape_backends``."""
    from .._backend import to_numpy
    from ..nn.params import flatten_params

    def np_(x: Any) -> np.ndarray:
        return to_numpy(x) if hasattr(x, "shape") else np.asarray(x, dtype=np.float64)

    al, batch = case.build(_numpy_copy)
    out, grads = al.value_and_grad(batch)
    flat = flatten_params(grads)
    for name, (xp, device, fdtype) in _backends().items():
        al_b, batch_b = case.build(_converter(xp, device, fdtype))
        if name not in tape_backends:
            out_b = al_b(batch_b)
        else:
            out_b, grads_b = al_b.value_and_grad(batch_b)
        for k in out:
            acc.value(np_(out_b[k]), np.asarray(out[k], dtype=np.float64), f"{name} {k}")
        acc.value(np_(batch_b["td_error"]), batch["td_error"], f"{name} td_error")
        if name not in tape_backends:
            continue
        flat_b = flatten_params(grads_b)
        if sorted(flat_b) != sorted(flat):
            raise AssertionError(f"{name}: gradient leaves {sorted(flat_b)}, NumPy's {sorted(flat)}")
        for k, g in flat.items():
            acc.grad(np_(flat_b[k]), g, f"{name} grad {k}")


# ------------------------------------------------------------------------------------------------------ registry
def _label(case: LossCase) -> str:
    return f"{case.family}(" + ", ".join(f"{k}={v}" for k, v in case.options.items()) + ")"


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


def _torchrl_component(family: str) -> Callable:
    builder, fixed = BUILDERS[family]

    def run(n_cases: int, rng: np.random.Generator, tick: Callable[[], None]) -> dict:
        acc = Errors(TOLERANCE)
        for _ in range(n_cases):
            with torch_float64(_seed(rng)):
                case = builder(rng, **fixed)
                acc.label = _label(case)
                compare_with_torchrl(case, acc)
            acc.cases += 1
            tick()
        return acc.result()

    return run


def _self_component(kind: str) -> Callable:
    def run(n_cases: int, rng: np.random.Generator, tick: Callable[[], None]) -> dict:
        acc = Errors(FD_TOLERANCE if kind == "finite-diff" else TOLERANCE)
        families = list(BUILDERS)
        for i in range(n_cases):
            builder, fixed = BUILDERS[families[i % len(families)]]  # every family once per len(BUILDERS) cases
            opts = dict(fixed)
            if kind == "finite-diff" and builder not in (iql_case, discrete_iql_case):
                opts["delay_value"] = True  # finite differences must not move the held-out targets (IQL: delayed)
            with torch_float64(_seed(rng)):
                case = builder(rng, **opts)
                acc.label = _label(case)
                if kind == "finite-diff":
                    check_finite_differences(case, acc, rng)
                else:
                    check_backends(case, acc)
            acc.cases += 1
            tick()
        out = acc.result()
        if kind == "finite-diff":
            out["value_abs"] = out["value_rel"] = float("nan")  # only gradients are checked
        return out

    return run


from .actor_critic import CHECKS as _ACTOR_CRITIC_CHECKS  # noqa: E402  (imports this module lazily)

CHECKS: dict[str, Callable] = {
    **{f"loss.{family}": _torchrl_component(family) for family in BUILDERS},
    **_ACTOR_CRITIC_CHECKS,
    "loss.self-consistency[finite-diff]": _self_component("finite-diff"),
    "loss.self-consistency[backends]": _self_component("backends"),
}
