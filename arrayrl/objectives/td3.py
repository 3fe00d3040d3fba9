"""Twin Delayed DDPG: :class:`TD3Loss` and :class:`TD3BCLoss` (TD3+BC), with their pure terms.

Papers: Fujimoto, van Hoof & Meger 2018, "Addressing Function Approximation Error in Actor-Critic Methods"
(TD3, arXiv:1802.09477); Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning" (TD3+BC,
arXiv:2106.06860). The classes mirror ``torchrl.objectives.TD3Loss`` / ``TD3BCLoss`` (TorchRL 0.14.1): constructor
arguments, keys, outputs, value estimators (TD0 default; TD1, TDLambda), targets, reductions, prioritized-replay
weights and the ``td_error`` written into the caller's batch.

**TD3**, ``N`` critics (default 2), actor ``mu``, targets ``mu'``, ``Q'_i``, bounds ``[low, high]``, per sample::

    loss_actor  = reduce(-Q_sg_0(s, mu(s)))                      critic 0 only (the paper's Q_theta1)
    eps         = clip(sigma * z, -c, c),  z ~ N(0, 1) [*B, A]   target-policy smoothing (paper eq. 14)
    a'          = clip(mu'(s') + eps, low, high)
    y           = r + gamma (1 - terminated) min_i Q'_i(s', a')  clipped double-Q (paper eq. 10), no gradient
    loss_qvalue = reduce(sum_i dist(Q_i(s, a), y))               ("smooth_l1" by default, as TorchRL)
    td_error    = max_i (Q_i(s, a) - y)**2                       [*B], written into the batch

``sigma = policy_noise * scale``, ``c = noise_clip * scale`` with ``scale = (high - low) / 2`` per action dimension
(Fujimoto's reference code multiplies both by ``max_action``; CleanRL by ``action_scale``). TorchRL 0.14.1 uses
``scale = 1`` (absolute units): ``torchrl_compat=True``. The two agree exactly for actions in ``[-1, 1]``.

**TD3+BC**: the critic as TD3; the actor (``q = Q_sg_0(s, mu(s))``, ``lmbd = alpha / sg(mean_b |q_b|)``)::

    loss_actor = reduce(-lmbd q + mean_{b, k} (mu(s_b)_k - a_{b, k})**2)        (Fujimoto & Gu eq. 3; alpha = 2.5)

Pure terms: :func:`target_policy_noise`, :func:`smoothed_target_action`, :func:`noise_scale`,
:func:`td3_bc_actor_loss`; the actor term :func:`~arrayrl.objectives.ddpg.deterministic_actor_loss`; the ensemble
terms :func:`~arrayrl.objectives.actor_critic.critic_ensemble_loss` / ``ensemble_td_error`` /
``min_over_critics``.

Kept as TorchRL (documented in docs/divergences.md): the actor loss uses critic 0 only, and there is no policy delay
inside the loss -- the paper updates the actor (and the targets) every ``d = 2`` critic updates; a trainer does that
by stepping the actor's optimizer with ``grads["actor_network"]`` every ``d``-th call (``value_and_grad(...,
terms=["loss_qvalue"])`` on the others).

Randomness: one draw ``z`` of the data action's shape and dtype, from :attr:`TD3Loss.generator` (an
:class:`arrayrl.random.Generator`, default ``Generator(0)`` of the action's namespace), after the actor loss --
TorchRL's ``randn_like(action)``. ``Generator.from_noise(z)`` injects a given draw.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from .. import data as _data
from .._backend import device_of, is_array, namespace_of
from .._checks import check_floating
from .._validate import check_number, validation_enabled
from ..nn.layers import Ensemble
from ..nn.params import stack
from ..tree import tree_map
from ._nets import ensemble_apply, make_ensemble
from .actor_critic import TermSelection, bootstrap_target, critic_ensemble_loss, ensemble_td_error, min_over_critics
from .common import LossModule
from .ddpg import _check_keyed, _sg_tree, _squeeze_last, deterministic_actor_loss
from .utils import _steps_key, check_loss_args, check_next_value, check_transition, step_mdp, stop_gradient

__all__ = ["TD3Loss", "TD3BCLoss", "target_policy_noise", "smoothed_target_action", "noise_scale",
           "td3_bc_actor_loss"]


# ------------------------------------------------------------------------------------------------ pure terms
def noise_scale(low: Any, high: Any) -> Any:
    """The action scale of the smoothing noise, ``(high - low) / 2`` (``max_action`` for symmetric bounds)."""
    return (high - low) / 2


def target_policy_noise(z: Any, *, policy_noise: float = 0.2, noise_clip: float = 0.5, scale: Any = 1.0) -> Any:
    """TD3's target-policy smoothing noise ``clip(policy_noise * scale * z, -noise_clip * scale, noise_clip * scale)``.

    Args:
        z: standard-normal draws ``[*B, A]`` (the data action's shape).
        policy_noise, noise_clip: ``sigma`` and ``c`` of Fujimoto et al. 2018, eq. 14, in units of ``scale``.
        scale: ``1`` (absolute units, TorchRL) or :func:`noise_scale` of the bounds (``[A]`` or a number;
            Fujimoto's and CleanRL's code).

    Returns ``[*B, A]`` (no gradient flows through it: it perturbs the target action).
    """
    check_floating(z, "z")
    xp = namespace_of(z, scale if is_array(scale) else None)
    eps = z * policy_noise * scale
    if is_array(scale):
        c = noise_clip * scale
        return xp.minimum(xp.maximum(eps, -c), c)
    return xp.clip(eps, min=-noise_clip * scale, max=noise_clip * scale)


def smoothed_target_action(next_action: Any, noise: Any, low: Any, high: Any) -> Any:
    """The smoothed target action ``a' = clip(mu'(s') + eps, low, high)`` ``[*B, A]`` (no gradient).

    ``low``/``high``: numbers or arrays broadcasting to ``[*B, A]`` (typically ``[A]``).
    """
    check_floating(next_action, "next_action")
    check_floating(noise, "noise")
    if tuple(next_action.shape) != tuple(noise.shape):
        raise ValueError(f"noise: expected shape {tuple(next_action.shape)} (the shape of next_action), got "
                         f"{tuple(noise.shape)}")
    a = stop_gradient(next_action) + stop_gradient(noise)
    low, high = stop_gradient(low), stop_gradient(high)
    xp = namespace_of(a, low if is_array(low) else None, high if is_array(high) else None)
    return xp.minimum(xp.maximum(a, low), high)


def td3_bc_actor_loss(q_policy: Any, policy_action: Any, data_action: Any, alpha: float = 2.5) -> tuple:
    """TD3+BC actor loss (Fujimoto & Gu 2021, eq. 3 and their reference code) before the batch reduction.

    ``lmbd = alpha / sg(mean_b |q_b|)``, ``bc = mean_{b, k} (pi(s_b)_k - a_{b, k})**2`` (a scalar: the mean over
    the batch and the action dimensions, ``F.mse_loss``), ``loss_b = -lmbd q_b + bc``.

    Args:
        q_policy: ``Q_0(s, pi(s))`` ``[*B]`` (critic parameters without gradient).
        policy_action: ``pi(s)`` ``[*B, A]``; data_action: ``a`` ``[*B, A]``.
        alpha: the paper's ``alpha`` (2.5).

    Returns ``(loss [*B], bc_loss [] (no gradient), lmbd [] (no gradient))``.
    """
    check_floating(q_policy, "q_policy")
    check_floating(policy_action, "policy_action")
    check_floating(data_action, "data_action")
    if tuple(policy_action.shape) != tuple(data_action.shape):
        raise ValueError(f"data_action: expected shape {tuple(policy_action.shape)} (the shape of the policy's "
                         f"action), got {tuple(data_action.shape)}")
    if tuple(q_policy.shape) != tuple(policy_action.shape[:-1]):
        raise ValueError(f"q_policy: expected shape {tuple(policy_action.shape[:-1])} (the batch shape of the "
                         f"policy's action), got {tuple(q_policy.shape)}")
    xp = namespace_of(q_policy, policy_action, data_action)
    d = policy_action - data_action
    bc = xp.mean(d * d)
    lmbd = alpha / xp.mean(xp.abs(stop_gradient(q_policy)))
    return -lmbd * q_policy + bc, stop_gradient(bc), lmbd


# ------------------------------------------------------------------------------------------------ bounds
def _bound_pair(bounds: Any, what: str) -> tuple:
    if isinstance(bounds, (tuple, list)) and len(bounds) == 2:
        return bounds[0], bounds[1]
    raise ValueError(f"{what}: expected a (low, high) pair, got {bounds!r}")


def _spec_bounds(spec: Any, action_key: Any) -> tuple:
    """``(low, high)`` of a bounded action spec: an object with ``low``/``high`` (or ``space.low``/``space.high``,
    TorchRL's ``Bounded``), a ``(low, high)`` pair, or a composite / mapping holding the action key."""
    if isinstance(spec, (tuple, list)):
        return _bound_pair(spec, "action_spec")
    key = _data.unravel_key(action_key)
    if type(spec).__name__ in ("Composite", "CompositeSpec"):
        container = spec[key[:-1]].shape if len(key) > 1 else spec.shape
        return _spec_bounds(spec[key][(0,) * len(container)], action_key)
    if isinstance(spec, Mapping):
        leaf = _data.get_or(spec, key, None)
        if leaf is None:
            raise ValueError(f"action_spec: no entry for the action key {_data.key_str(action_key)}")
        return _spec_bounds(leaf, action_key)
    for holder in (spec, getattr(spec, "space", None)):
        if holder is not None and hasattr(holder, "low") and hasattr(holder, "high"):
            return holder.low, holder.high
    raise ValueError(f"action_spec is not of type Bounded but {type(spec)} (expected an object with low/high, or a "
                     "(low, high) pair)")


def _to_like(x: Any, like: Any) -> Any:
    """``x`` (a number or an array of any backend) as an array of ``like``'s namespace, dtype and device."""
    xp = namespace_of(like)
    dev = device_of(like)
    if is_array(x):
        try:
            same = namespace_of(x) is xp
        except (TypeError, ValueError):
            same = False
        if same and x.dtype == like.dtype:
            return x
        if not same:
            try:
                x = xp.from_dlpack(x)
            except Exception:  # noqa: BLE001 - no DLPack path between these backends: go through Python lists
                x = getattr(x, "tolist", lambda: x)()
    return xp.asarray(x, dtype=like.dtype, device=dev)


def _finite_number_or_array(x: Any, name: str) -> Any:
    """Validate one bound at construction (a one-off host read for an array): real, no NaN."""
    if is_array(x):
        xp = namespace_of(x)
        if xp.isdtype(x.dtype, "bool") or not xp.isdtype(x.dtype, "numeric"):
            raise TypeError(f"{name}: expected a real array, got dtype {x.dtype}")
        if xp.isdtype(x.dtype, "real floating") and bool(xp.any(xp.isnan(x))):
            raise ValueError(f"{name}: contains NaN")
        return x
    if isinstance(x, (list, tuple)):  # one number per action dimension
        return [_finite_number_or_array(v, f"{name}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name}: expected a number or an array, got {type(x).__name__}")
    if math.isnan(float(x)):
        raise ValueError(f"{name}: is NaN")
    return float(x)


def _all(xp: Any, cond: Any) -> bool:
    return bool(xp.all(cond)) if is_array(cond) else bool(cond)


# ------------------------------------------------------------------------------------------------ TD3
class TD3Loss(TermSelection, LossModule):
    """The TD3 loss (TorchRL ``TD3Loss``); formulas in the module docstring.

    Args:
        actor_network: a deterministic keyed actor writing ``action`` (e.g. ``KeyedModule(MLP(...) then tanh,
            in_keys=["observation"], out_keys=["action"])``).
        qvalue_network: a keyed critic writing ``state_action_value`` ``[*B, 1]`` from the observation and the
            action; or a list of ``num_qvalue_nets`` critics (stacked exactly); or an ``arrayrl.nn.Ensemble``
            critic of ``num_qvalue_nets`` members. A single critic is expanded as TorchRL does: each member leaf
            re-drawn ``U(min, max)`` of the original leaf (from ``generator``), so no member equals it.

    Keyword Args:
        action_spec: a bounded spec of the action (anything with ``low``/``high``, e.g. TorchRL's ``Bounded``; a
            composite/mapping holding the action key; or a ``(low, high)`` pair).
        bounds: ``(low, high)`` (numbers or arrays ``[A]``). Exactly one of ``action_spec`` and ``bounds``
            (``ValueError`` otherwise, as TorchRL); ``low > high`` anywhere raises. Stored as ``min_action`` /
            ``max_action``.
        num_qvalue_nets: ensemble size (default 2).
        policy_noise, noise_clip: target smoothing ``sigma`` (0.2) and ``c`` (0.5), in units of the action scale
            ``(high - low) / 2`` (absolute units with ``torchrl_compat=True``).
        loss_function: ``"smooth_l1"`` (default), ``"l2"``, ``"l1"``.
        delay_actor, delay_qvalue: target copies of the actor / critics (both default ``True``).
        separate_losses: accepted for compatibility (no shared parameter trees in arrayrl).
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"``.
        deactivate_vmap: run the critics member by member instead of one batched pass.
        use_prioritized_weights: ``"auto"``, ``True``, ``False``.
        generator: :class:`arrayrl.random.Generator` of the smoothing noise (and of a single critic's ensemble
            expansion); assign ``loss.generator`` to change it (``Generator.from_noise(z)`` injects ``z``).
        torchrl_compat: ``False`` (default): the noise is scaled by ``(high - low) / 2`` (Fujimoto's code);
            ``True``: TorchRL 0.14.1's absolute noise. Identical for bounds ``[-1, 1]``.

    Bounds must be finite unless ``torchrl_compat=True`` (the scale needs them). The data action must lie in
    ``[low, high]`` (a data check, under the :mod:`arrayrl._validate` policy: on by default for CPU arrays):
    ``ValueError`` naming the action key otherwise.

    Outputs: ``loss_actor``, ``loss_qvalue`` (scalars; ``[*B]`` with ``reduction="none"``) and TorchRL's metadata
    ``pred_value`` ``[N, *B]`` (``Q_i(s, a)``), ``state_action_value_actor`` ``[N, *B]`` (``Q_i(s, mu(s))``),
    ``next_state_value`` ``[*B]`` (``min_i Q'_i(s', a')``), ``target_value`` ``[*B]`` (``y``).

    ``value_and_grad(batch, terms=["loss_qvalue"])`` (or ``["loss_actor"]``) computes only that term and its
    metadata (:class:`~arrayrl.objectives.actor_critic.TermSelection`; the noise ``z`` is drawn either way). In the
    actor term only critic 0 is differentiated; critics ``1..N-1`` run without tape, for the metadata.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        state_action_value: Any = "state_action_value"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        priority_weight: Any = "priority_weight"

    default_keys = _AcceptedKeys
    default_value_estimator = "td0"
    SUPPORTED_VALUE_ESTIMATORS = ("td0", "td1", "tdlambda")
    _OUT_KEYS: tuple = ("loss_actor", "loss_qvalue", "pred_value", "state_action_value_actor", "next_state_value",
                 "target_value")
    _TERM_GROUPS = {"actor": ("loss_actor", "state_action_value_actor"),
                    "critic": ("loss_qvalue", "pred_value", "next_state_value", "target_value")}
    _VALUE_KEY_MAP = {"value": "state_action_value"}
    _POLICY_NETWORK = "actor_network"

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        action_spec: Any = None,
        bounds: Any = None,
        num_qvalue_nets: int = 2,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        loss_function: str = "smooth_l1",
        delay_actor: bool = True,
        delay_qvalue: bool = True,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        use_prioritized_weights: Any = "auto",
        generator: Any = None,
        torchrl_compat: bool = False,
    ) -> None:
        loss_function, reduction = check_loss_args(
            loss_function, reduction, use_prioritized_weights, delay_actor=delay_actor, delay_qvalue=delay_qvalue,
            separate_losses=separate_losses, deactivate_vmap=deactivate_vmap, torchrl_compat=torchrl_compat,
            gamma=gamma, priority_key=priority_key)
        self.num_qvalue_nets = check_number(num_qvalue_nets, "num_qvalue_nets", low=1, integer=True)
        self.policy_noise = float(check_number(policy_noise, "policy_noise", low=0.0))
        self.noise_clip = float(check_number(noise_clip, "noise_clip", low=0.0))
        _check_keyed(actor_network, "actor_network")
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.delay_actor = delay_actor
        self.delay_qvalue = delay_qvalue
        self.separate_losses = separate_losses
        self.deactivate_vmap = deactivate_vmap
        self.use_prioritized_weights = use_prioritized_weights
        self.torchrl_compat = torchrl_compat
        self.generator = generator
        self._n = self.num_qvalue_nets  # always a leading member axis (size 1 for one critic, as TorchRL's)
        self.convert_to_functional(actor_network, "actor_network", create_target_params=delay_actor)
        if isinstance(qvalue_network, (list, tuple)):
            if len(qvalue_network) != self._n:
                raise ValueError(f"qvalue_network: got a list of {len(qvalue_network)} networks but "
                                 f"num_qvalue_nets={self._n}")
            for i, m in enumerate(qvalue_network):
                _check_keyed(m, f"qvalue_network[{i}]")
            template, qparams = qvalue_network[0], stack([m.params for m in qvalue_network])
        else:
            _check_keyed(qvalue_network, "qvalue_network")
            from ..random import Generator

            ens_gen = generator if isinstance(generator, Generator) else None
            template, qparams = make_ensemble(qvalue_network, self._n, ens_gen, "qvalue_network")
        self.convert_to_functional(template, "qvalue_network", params=qparams, create_target_params=delay_qvalue)
        # the critics run as one whole (never split into critic 0 and the rest): one critic, or a network that needs
        # every member at once (arrayrl.nn.Ensemble, which make_ensemble kept as it is)
        self._whole_ensemble = self._n == 1 or isinstance(getattr(template, "fn", None), Ensemble)
        self._set_bounds(action_spec, bounds)

    def _set_bounds(self, action_spec: Any, bounds: Any) -> None:
        if (action_spec is None) == (bounds is None):
            raise ValueError("One of 'bounds' and 'action_spec' must be provided, but not both or none. Got "
                             f"bounds={bounds} and action_spec={action_spec}.")
        low, high = (_spec_bounds(action_spec, self.tensor_keys.action) if action_spec is not None
                     else _bound_pair(bounds, "bounds"))
        low = _finite_number_or_array(low, "bounds low" if bounds is not None else "action_spec.low")
        high = _finite_number_or_array(high, "bounds high" if bounds is not None else "action_spec.high")
        like = next((x for x in (low, high) if is_array(x)), None)
        if like is not None:  # both bounds in one namespace (a spec's torch tensors stay torch here)
            xp = namespace_of(like)
            low = low if is_array(low) and namespace_of(low) is xp else xp.asarray(_py(low), dtype=like.dtype)
            high = high if is_array(high) and namespace_of(high) is xp else xp.asarray(_py(high), dtype=like.dtype)
            if not _all(xp, low <= high):
                raise ValueError("Got a low bound higher than a high bound.")
            finite = _all(xp, xp.isfinite(low)) and _all(xp, xp.isfinite(high))
        else:  # numbers, or lists of numbers (broadcast against each other)
            lows, highs = (v if isinstance(v, list) else [v] for v in (low, high))
            if len(lows) != len(highs) and 1 not in (len(lows), len(highs)):
                raise ValueError(f"bounds: low has {len(lows)} entries but high has {len(highs)}")
            pairs = [(lo, hi) for lo in lows for hi in highs] if 1 in (len(lows), len(highs)) else zip(lows, highs)
            pairs = list(pairs)
            if any(lo > hi for lo, hi in pairs):
                raise ValueError("Got a low bound higher than a high bound.")
            finite = all(math.isfinite(v) for pair in pairs for v in pair)
        if not finite and not self.torchrl_compat:
            raise ValueError("bounds: the target-policy noise is scaled by (high - low) / 2, which needs finite "
                             "bounds; give finite bounds or torchrl_compat=True (absolute noise)")
        self.min_action, self.max_action = low, high

    # ---------------------------------------------------------------------------------------- keys
    def _in_keys(self) -> list:
        tk = self.tensor_keys
        actor_in = list(self._networks["actor_network"].in_keys)
        return [tk.action, ("next", tk.reward), ("next", tk.done), ("next", tk.terminated), *actor_in,
                *[("next",) + _data.unravel_key(k) for k in actor_in], *self._networks["qvalue_network"].in_keys]

    # ---------------------------------------------------------------------------------------- pieces
    def _draws(self, like: Any) -> Any:
        if self.generator is None:
            from ..random import Generator

            self.generator = Generator(0, xp=namespace_of(like), device=device_of(like))
        return self.generator

    def _critics(self, q_params: Any, batch: Mapping, n: int | None = None) -> Any:
        """``Q_i`` ``[N, *B]`` of every member of ``q_params`` (``n`` of them, default ``N``) on ``batch`` (the
        trailing 1 squeezed)."""
        name = _data.key_str(self.tensor_keys.state_action_value)
        q = ensemble_apply(self._networks["qvalue_network"], q_params, batch, self.tensor_keys.state_action_value,
                           self._n if n is None else n, loop=self.deactivate_vmap)
        check_floating(q, name)
        return _squeeze_last(q, f"{name} (critic output)")

    def _policy(self, actor_params: Any, batch: Mapping) -> tuple:
        """``(batch with mu(s) at the action key, mu(s))``."""
        out = self._networks["actor_network"].apply(actor_params, batch)
        action = _data.get(out, self.tensor_keys.action, what="action written by the actor")
        check_floating(action, f"{_data.key_str(self.tensor_keys.action)} (actor output)")
        return out, action

    def _bounds_like(self, action: Any) -> tuple:
        return _to_like(self.min_action, action), _to_like(self.max_action, action)

    def _data_action(self, batch: Mapping, like: Any, low: Any, high: Any) -> Any:
        """The data action ``[*B, A]``: floating, of the policy's action shape, inside ``[low, high]``."""
        key = self.tensor_keys.action
        name = _data.key_str(key)
        action = _data.get(batch, key, what="action")
        check_floating(action, name)
        if tuple(action.shape) != tuple(like.shape):
            raise ValueError(f"{name}: expected shape {tuple(like.shape)} (the shape of the actor's action), got "
                             f"{tuple(action.shape)}")
        if validation_enabled(action):
            xp = namespace_of(action)
            inside = xp.logical_and(action >= low, action <= high)
            if not bool(xp.all(inside)):
                raise ValueError(f"{name}: the data action must lie within the bounds [min_action, max_action] "
                                 f"(got values between {float(xp.min(action))} and {float(xp.max(action))})")
        return action

    def _critics_at_policy(self, params: dict, with_action: Mapping, others: bool) -> tuple:
        """``(Q_sg_0(s, mu(s)) [*B] with tape through mu(s), Q_sg_i(s, mu(s)) [N, *B] without tape or None)``.

        Only critic 0 enters the actor losses: it alone runs on the taped action, so the backward pass goes through
        one critic instead of the whole ensemble. ``others``: critics ``1..N-1`` also run, on the action without
        tape (TD3's ``state_action_value_actor`` metadata, ``[N, *B]``); else the second item is ``None``. A critic
        whose network needs every member at once (``arrayrl.nn.Ensemble``) runs whole, on the taped action.
        """
        q_params = _sg_tree(params["qvalue_network"])
        if self._whole_ensemble:
            q = self._critics(q_params, with_action)
            return q[0, ...], stop_gradient(q) if others else None
        first = self._critics(tree_map(lambda x: x[:1, ...], q_params), with_action, n=1)  # [1, *B]
        if not others:
            return first[0, ...], None
        key = self.tensor_keys.action
        rest = self._critics(tree_map(lambda x: x[1:, ...], q_params),
                             _data.with_(with_action, key, stop_gradient(_data.get(with_action, key))),
                             n=self._n - 1)  # [N - 1, *B]
        return first[0, ...], namespace_of(rest).concat([stop_gradient(first), rest], axis=0)

    def _actor_terms(self, params: dict, batch: Mapping, weights: Any) -> tuple:
        """``(loss_actor, metadata, mu(s))``: ``reduce(-Q_sg_0(s, mu(s)))``."""
        with_action, policy_action = self._policy(params["actor_network"], batch)
        q0, q = self._critics_at_policy(params, with_action, others=True)
        loss = self._reduce_loss(deterministic_actor_loss(q0), batch, weights=weights)
        return loss, {"state_action_value_actor": q}, policy_action

    def _smoothing_draw(self, action: Any) -> Any:
        """The draw ``z ~ N(0, 1)`` of the data action's shape and dtype (TorchRL's ``randn_like(action)``)."""
        z = self._draws(action).normal(tuple(action.shape), dtype=action.dtype)
        if tuple(z.shape) != tuple(action.shape):
            raise ValueError(f"generator: drew noise of shape {tuple(z.shape)}, expected {tuple(action.shape)}")
        return z

    def _next_value(self, batch: Mapping, action: Any, low: Any, high: Any) -> Any:
        """``min_i Q'_i(s', a')`` ``[*B]`` with ``a' = clip(mu'(s') + eps, low, high)`` (one draw of ``z``)."""
        xp = namespace_of(action)
        z = self._smoothing_draw(action)
        scale = 1.0 if self.torchrl_compat else noise_scale(low, high)
        noise = target_policy_noise(xp.asarray(z, dtype=action.dtype), policy_noise=self.policy_noise,
                                    noise_clip=self.noise_clip, scale=scale)
        actor = self._networks["actor_network"]
        nxt, next_mu = self._policy(self._target_tree("actor_network"), step_mdp(batch, actor.in_keys))
        if tuple(next_mu.shape) != tuple(action.shape):
            raise ValueError(f"{_data.key_str(self.tensor_keys.action)} (target actor at the next state): expected "
                             f"shape {tuple(action.shape)} (the data action's), got {tuple(next_mu.shape)}")
        nxt = _data.with_(nxt, self.tensor_keys.action, smoothed_target_action(next_mu, noise, low, high))
        return stop_gradient(min_over_critics(self._critics(self._target_tree("qvalue_network"), nxt)))

    def _critic_terms(self, params: dict, batch: Mapping, weights: Any, policy_action: Any) -> tuple:
        """``(loss_qvalue, metadata, td_error)`` of the critic ensemble regressed on the clipped double-Q target.

        ``policy_action``: ``mu(s)``, or ``None`` when the actor term is skipped (the data action then gives the
        namespace and dtype of the bounds)."""
        tk = self.tensor_keys
        if policy_action is None:
            policy_action = _data.get(batch, tk.action, what="action")
            check_floating(policy_action, _data.key_str(tk.action))
        low, high = self._bounds_like(policy_action)
        action = self._data_action(batch, policy_action, low, high)
        batch_shape = tuple(action.shape[:-1])
        check_transition(batch, tk, batch_shape, steps_key=_steps_key(self.value_estimator),
                         weight_key=tk.priority_weight if self.use_prioritized_weights in (True, "auto") else None)
        next_value = self._next_value(batch, action, low, high)
        check_next_value(next_value, batch_shape, self._networks["actor_network"].in_keys, "next state value")
        target = bootstrap_target(self.value_estimator, batch, next_value)
        pred = self._critics(params["qvalue_network"], batch)
        if tuple(pred.shape[1:]) != batch_shape:
            raise ValueError(f"{_data.key_str(tk.state_action_value)} (critic output): expected shape "
                             f"[N, *{batch_shape}], got {tuple(pred.shape)}")
        per = critic_ensemble_loss(pred, target, self.loss_function, "sum")
        td_error = ensemble_td_error(pred, target, "max_sq")
        meta = {"next_state_value": next_value, "pred_value": stop_gradient(pred), "target_value": target}
        return self._reduce_loss(per, batch, weights=weights), meta, td_error

    # ---------------------------------------------------------------------------------------- forward
    def _forward(self, batch: Mapping, params: dict) -> dict:
        weights = self._priority_weights(batch)
        out: dict = {}
        policy_action = None
        if self._wants("actor"):  # TorchRL: the actor first, then the noise
            out["loss_actor"], meta_actor, policy_action = self._actor_terms(params, batch, weights)
            out.update(meta_actor)
        if self._wants("critic"):
            out["loss_qvalue"], meta_value, td_error = self._critic_terms(params, batch, weights, policy_action)
            out.update(meta_value)
            self._write_priority(batch, td_error)
        else:  # the critic term's draw, so that the generator's stream does not depend on terms
            self._smoothing_draw(_data.get(batch, self.tensor_keys.action, what="action"))
        return out


def _py(x: Any) -> Any:
    return x.tolist() if is_array(x) and hasattr(x, "tolist") else x


# ------------------------------------------------------------------------------------------------ TD3+BC
class TD3BCLoss(TD3Loss):
    """The TD3+BC loss (TorchRL ``TD3BCLoss``): :class:`TD3Loss`'s critic, the behaviour-cloning actor of
    Fujimoto & Gu 2021 (module docstring; :func:`td3_bc_actor_loss`).

    Keyword Args:
        alpha: the paper's ``alpha`` (default 2.5), ``>= 0``.
        Others as :class:`TD3Loss` (no ``gamma``, as TorchRL's constructor).

    ``lmbd`` and ``bc_loss`` are plain means over the batch (TorchRL and the reference code; masks and priority
    weights enter only the final reduction of ``loss_actor``).

    Outputs: ``loss_actor``, ``loss_qvalue``, ``bc_loss``, ``lmbd`` (scalars), ``pred_value`` ``[N, *B]``,
    ``state_action_value_actor`` ``[*B]`` (critic 0 only), ``next_state_value``, ``target_value`` ``[*B]``.
    """

    _OUT_KEYS: tuple = ("loss_actor", "loss_qvalue", "bc_loss", "lmbd", "pred_value", "state_action_value_actor",
                 "next_state_value", "target_value")
    _TERM_GROUPS = {"actor": ("loss_actor", "state_action_value_actor", "bc_loss", "lmbd"),
                    "critic": TD3Loss._TERM_GROUPS["critic"]}

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        action_spec: Any = None,
        bounds: Any = None,
        num_qvalue_nets: int = 2,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        alpha: float = 2.5,
        loss_function: str = "smooth_l1",
        delay_actor: bool = True,
        delay_qvalue: bool = True,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        use_prioritized_weights: Any = "auto",
        generator: Any = None,
        torchrl_compat: bool = False,
    ) -> None:
        self.alpha = float(check_number(alpha, "alpha", low=0.0))
        super().__init__(actor_network, qvalue_network, action_spec=action_spec, bounds=bounds,
                         num_qvalue_nets=num_qvalue_nets, policy_noise=policy_noise, noise_clip=noise_clip,
                         loss_function=loss_function, delay_actor=delay_actor, delay_qvalue=delay_qvalue,
                         priority_key=priority_key, separate_losses=separate_losses, reduction=reduction,
                         deactivate_vmap=deactivate_vmap, use_prioritized_weights=use_prioritized_weights,
                         generator=generator, torchrl_compat=torchrl_compat)

    def _actor_terms(self, params: dict, batch: Mapping, weights: Any) -> tuple:
        """``(loss_actor, metadata, pi(s))``: ``reduce(-lmbd Q_sg_0(s, pi(s)) + bc)``."""
        with_action, policy_action = self._policy(params["actor_network"], batch)
        q0, _ = self._critics_at_policy(params, with_action, others=False)  # [*B]
        key = self.tensor_keys.action
        data_action = _data.get(batch, key, what="action")
        check_floating(data_action, _data.key_str(key))
        if tuple(data_action.shape) != tuple(policy_action.shape):
            raise ValueError(f"{_data.key_str(key)}: expected shape {tuple(policy_action.shape)} (the shape of the "
                             f"actor's action), got {tuple(data_action.shape)}")
        per, bc, lmbd = td3_bc_actor_loss(q0, policy_action, data_action, self.alpha)
        loss = self._reduce_loss(per, batch, weights=weights)
        return loss, {"state_action_value_actor": stop_gradient(q0), "bc_loss": bc, "lmbd": stop_gradient(lmbd)}, \
            policy_action
