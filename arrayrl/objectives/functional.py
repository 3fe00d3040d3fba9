"""Pure loss terms on arrays (no networks, no batches): the functional core of the loss classes.

Every function takes raw or taped arrays of one backend, uses only the array-API standard (plus
:mod:`arrayrl.ops`), keeps the input dtype, never mutates its inputs and checks shapes strictly (``[B]`` against
``[B, 1]`` is an error, except where the docstring says "``[*B]`` or ``[*B, 1]``", TorchRL's trailing singleton).

Families:

* value-based discrete control: :func:`chosen_action_value`, :func:`greedy_action_value`,
  :func:`double_q_next_value`, :func:`td0_target`, :func:`dqn_loss` (Mnih et al. 2015; van Hasselt et al. 2016);
* distributional: :func:`c51_projection`, :func:`distributional_dqn_loss` (Bellemare et al. 2017, Algorithm 1);
* implicit Q-learning: :func:`expectile_loss`, :func:`iql_value_loss`, :func:`iql_actor_loss`,
  :func:`ensemble_critic_loss` (Kostrikov et al. 2021, arXiv:2110.06169);
* value decomposition: :func:`mixer_td_loss` (QMIX, Rashid et al. 2018; VDN, Sunehag et al. 2017).
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

from .. import ops
from .._backend import namespace_of
from .._checks import check_array, check_bool, check_floating, check_integer, check_min_rank
from .._validate import StructureCache, check_index_range, check_number, structure_signature
from .utils import distance_loss, reduce_loss, stop_gradient

__all__ = [
    "ACTION_SPACES",
    "normalize_action_space",
    "per_sample",
    "categorical_index",
    "check_one_hot",
    "chosen_action_value",
    "greedy_action_value",
    "greedy_action_index",
    "double_q_next_value",
    "td0_target",
    "dqn_loss",
    "c51_projection",
    "distributional_dqn_loss",
    "expectile_loss",
    "iql_value_loss",
    "iql_actor_loss",
    "ensemble_critic_loss",
    "mixer_td_loss",
]

ACTION_SPACES = ("one_hot", "categorical", "mult_one_hot", "binary")
_SPEC_CLASSES = {"OneHot": "one_hot", "Categorical": "categorical", "MultiOneHot": "mult_one_hot", "Binary": "binary",
                 "OneHotDiscreteTensorSpec": "one_hot", "DiscreteTensorSpec": "categorical",
                 "MultiOneHotDiscreteTensorSpec": "mult_one_hot", "BinaryDiscreteTensorSpec": "binary"}


_CANONICAL = frozenset(ACTION_SPACES)


def normalize_action_space(action_space: Any) -> str:
    """``"one-hot"`` -> ``"one_hot"`` etc. (:func:`arrayrl.nn.keyed.normalize_action_space`); TorchRL specs are
    recognised by class name (``OneHot``, ``Categorical``, ``MultiOneHot``, ``Binary``)."""
    if type(action_space) is str and action_space in _CANONICAL:  # already normalised (the loss classes' hot path)
        return action_space
    from ..nn.keyed import normalize_action_space as _normalize

    if isinstance(action_space, str):
        return _normalize(action_space.lower())
    name = type(action_space).__name__
    if name in _SPEC_CLASSES:
        return _SPEC_CLASSES[name]
    raise ValueError(f"action_space: expected one of {ACTION_SPACES} or a TorchRL discrete spec, got {action_space!r}")


def per_sample(x: Any, batch_shape: tuple, name: str, ref: str | None = None) -> Any:
    """``x`` of shape ``[*B]`` or ``[*B, 1]`` (TorchRL's trailing singleton) returned as ``[*B]``; else ValueError
    (naming ``name`` and ``ref``, the input ``B`` comes from)."""
    check_array(x, name)
    shape = tuple(x.shape)
    if shape == tuple(batch_shape):
        return x
    if shape == tuple(batch_shape) + (1,):
        return namespace_of(x).squeeze(x, axis=-1)
    origin = f" (the batch shape of {ref})" if ref else ""
    raise ValueError(f"{name}: expected shape {tuple(batch_shape)} or {tuple(batch_shape) + (1,)}{origin}, got {shape}")


def _float_action(action: Any, like: Any) -> Any:
    xp = namespace_of(like, action)
    return xp.astype(action, like.dtype) if action.dtype != like.dtype else action


def _check_scalar(value: Any, name: str, **interval: Any) -> None:
    """Check a hyper-parameter given as a Python/NumPy number (arrays are data: left to the caller)."""
    if isinstance(value, numbers.Real):
        check_number(value, name, **interval)


def _check_discount(gamma: Any) -> None:
    _check_scalar(gamma, "gamma", low=0.0, high=1.0)


def _check_floats(**arrays: Any) -> None:
    """Every array must have a real floating dtype (``TypeError`` naming it)."""
    for name, a in arrays.items():
        check_floating(a, name)


def categorical_index(action: Any, batch_shape: tuple, n: int, name: str = "action", ref: str | None = None) -> Any:
    """Integer action indices ``[*B]`` or ``[*B, 1]`` as ``[*B]``, checked to lie in ``[0, n)`` under the
    :mod:`arrayrl._validate` policy (``-1`` would wrap around, ``n`` reads garbage on torch); ``ref`` names where
    ``B`` comes from."""
    check_integer(action, name)
    idx = per_sample(action, batch_shape, name, ref)
    check_index_range(idx, n, name)
    return idx


def check_one_hot(action: Any, shape: tuple, name: str = "action", space: str = "one_hot") -> None:
    """``action`` (a ``space`` action: one-hot, multi-one-hot or binary) must have the shape of the action values."""
    check_array(action, name)
    if tuple(action.shape) != tuple(shape):
        raise ValueError(
            f"{name}: expected a {space} action of shape {tuple(shape)} (the shape of the action values: "
            f"{shape[-1]} actions), got {tuple(action.shape)}"
        )


# ------------------------------------------------------------------------------------------- DQN family
def chosen_action_value(action_value: Any, action: Any, action_space: str = "one_hot", *, name: str = "action") -> Any:
    """``Q(s, a)`` for the data action, shape ``[*B]``.

    * ``categorical``: ``action`` holds integer indices of shape ``[*B]`` or ``[*B, 1]`` in ``[0, nA)`` (checked
      under the :mod:`arrayrl._validate` policy); gathered with ``take_along_axis``.
    * ``one_hot``, ``mult_one_hot``, ``binary``: ``action`` has ``action_value``'s shape ``[*B, nA]`` (bool, int or
      float); the result is ``sum_k Q_k a_k`` (TorchRL: several ones sum several values).

    Raises:
        TypeError: a float categorical action.
        ValueError: shapes that do not fit ``action_value`` ``[*B, nA]``.
        IndexError: a categorical index outside ``[0, nA)`` (:class:`arrayrl._validate.IndexRangeError`, also a
            ``ValueError``), when validation is on.
    """
    space = normalize_action_space(action_space)
    sig = structure_signature(action_value, action)
    sig = sig and (sig, space)
    xp = namespace_of(action_value, action)
    if sig not in _CHOSEN_CHECKED:  # the shape/dtype checks, once per structure (the index range: every call)
        check_min_rank(action_value, 1, "action_value")
        check_floating(action_value, "action_value")
        if space == "categorical":
            check_integer(action, name)
            per_sample(action, tuple(action_value.shape[:-1]), name, "action_value")
        else:
            check_one_hot(action, tuple(action_value.shape), name, space)
        _CHOSEN_CHECKED.add(sig)
    if space == "categorical":
        idx = action if action.ndim == action_value.ndim else action[..., None]  # [*B] -> [*B, 1]
        check_index_range(idx, action_value.shape[-1], name)
        return xp.squeeze(xp.take_along_axis(action_value, idx, axis=-1), axis=-1)
    return xp.sum(action_value * _float_action(action, action_value), axis=-1)


#: (signatures of the action values and the action, action space) that passed chosen_action_value's checks
_CHOSEN_CHECKED = StructureCache(128)


def greedy_action_index(action_value: Any) -> Any:
    """``argmax_a Q(s, a)`` (first maximum, as ``torch.argmax``), integer ``[*B]``."""
    xp = namespace_of(action_value)
    return xp.argmax(stop_gradient(action_value), axis=-1)


def greedy_action_value(action_value: Any, action_space: str = "one_hot", *, var_nums: Any = None) -> Any:
    """``max_a Q(s, a)`` over the action space, shape ``[*B]``.

    * ``one_hot``/``categorical``: ``max_k Q_k``;
    * ``mult_one_hot``: ``sum_g max_{k in g} Q_k`` over the groups of sizes ``var_nums``;
    * ``binary``: ``sum_k max(Q_k, 0)`` (each bit is set iff its value is positive).

    TorchRL's ``QValueModule`` one-hot greedy action is ``Q == max Q``, multi-hot at ties, so its chosen value is
    ``k * max`` when ``k`` actions tie; this uses the true maximum (ties have measure zero for continuous values).
    """
    xp = namespace_of(action_value)
    space = normalize_action_space(action_space)
    if space in ("one_hot", "categorical"):
        return ops.max_last(action_value)[..., 0]  # (xp.max; NumPy without its Python-level wrapper)
    if space == "binary":
        return xp.sum(xp.where(action_value > 0, action_value, xp.zeros_like(action_value)), axis=-1)
    if var_nums is None:
        raise ValueError("var_nums: required for a mult_one_hot action space (the size of each one-hot group)")
    if isinstance(var_nums, int):  # equal groups, as torch.split
        n_all = action_value.shape[-1]
        var_nums = [var_nums] * (n_all // var_nums) + ([n_all % var_nums] if n_all % var_nums else [])
    if sum(var_nums) != action_value.shape[-1]:
        raise ValueError(f"var_nums: expected sizes summing to {action_value.shape[-1]}, got {list(var_nums)}")
    parts, start = [], 0
    for n in var_nums:
        parts.append(xp.max(action_value[..., start : start + n], axis=-1))
        start += n
    return xp.sum(xp.stack(parts, axis=-1), axis=-1)


def double_q_next_value(next_q_online: Any, next_q_target: Any) -> Any:
    """Double DQN bootstrap ``Q_target(s', argmax_a Q_online(s', a))``, shape ``[*B]`` (van Hasselt et al. 2016).

    The online values only choose the action (no gradient flows through them).
    """
    _check_floats(next_q_online=next_q_online, next_q_target=next_q_target)
    if tuple(next_q_online.shape) != tuple(next_q_target.shape):
        raise ValueError(
            f"next_q_target: expected shape {tuple(next_q_online.shape)} (the shape of next_q_online), "
            f"got {tuple(next_q_target.shape)}"
        )
    xp = namespace_of(next_q_online, next_q_target)
    a = xp.expand_dims(greedy_action_index(next_q_online), axis=-1)
    return xp.squeeze(xp.take_along_axis(next_q_target, a, axis=-1), axis=-1)


def td0_target(reward: Any, next_value: Any, terminated: Any, gamma: Any, steps_to_next_obs: Any = None) -> Any:
    """One-step target ``y = r + gamma**n * (1 - terminated) * V(s')`` (``terminated`` selects, so a NaN ``V(s')``
    at a terminal step does not leak). All inputs ``[*B]`` (same shape); ``n`` defaults to 1."""
    xp = namespace_of(reward, next_value, terminated, steps_to_next_obs)
    _check_discount(gamma)
    check_floating(reward, "reward")
    check_floating(next_value, "next_value")
    check_bool(terminated, "terminated")
    shape = tuple(reward.shape)
    for name, a in (("next_value", next_value), ("terminated", terminated), ("steps_to_next_obs", steps_to_next_obs)):
        if a is not None and tuple(a.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape} (the shape of reward), got {tuple(a.shape)}")
    disc = gamma if steps_to_next_obs is None else gamma ** xp.astype(steps_to_next_obs, reward.dtype)
    boot = xp.where(terminated, xp.zeros_like(next_value), next_value)
    return reward + disc * boot


def dqn_loss(
    q_values: Any,
    action: Any,
    reward: Any,
    next_q_target: Any,
    terminated: Any,
    *,
    gamma: float,
    next_q_online: Any = None,
    double_dqn: bool = False,
    loss_function: str = "l2",
    reduction: str = "mean",
    weights: Any = None,
    steps_to_next_obs: Any = None,
    action_space: str = "one_hot",
    var_nums: Sequence[int] | None = None,
) -> dict:
    """DQN / Double DQN TD(0) loss on Q-value arrays (Mnih et al. 2015; van Hasselt et al. 2016).

    ``pred = Q(s, a)``; ``y = r + gamma**n (1 - terminated) Q'(s')`` with ``Q'(s') = max_a Q_target(s', a)`` (DQN)
    or ``Q_target(s', argmax_a Q_online(s', a))`` (Double DQN); ``loss = reduce(distance(pred, sg(y)), weights)``.

    Shapes: ``q_values``, ``next_q_target``, ``next_q_online`` ``[*B, nA]``; ``action`` see
    :func:`chosen_action_value`; ``reward``, ``terminated``, ``weights``, ``steps_to_next_obs`` ``[*B]`` or
    ``[*B, 1]``. Returns ``{"loss", "pred", "target", "td_error"}`` with ``td_error = (pred - y)**2`` (no tape).
    """
    check_min_rank(q_values, 1, "q_values")
    check_floating(q_values, "q_values")
    batch_shape = tuple(q_values.shape[:-1])
    if tuple(next_q_target.shape) != tuple(q_values.shape):
        raise ValueError(
            f"next_q_target: expected shape {tuple(q_values.shape)} (the shape of q_values), got {tuple(next_q_target.shape)}"
        )
    pred = chosen_action_value(q_values, action, action_space)
    if double_dqn:
        if next_q_online is None:
            raise ValueError("next_q_online: required with double_dqn=True")
        nxt = double_q_next_value(next_q_online, next_q_target)
    else:
        nxt = greedy_action_value(next_q_target, action_space, var_nums=var_nums)
    r = per_sample(reward, batch_shape, "reward", "q_values")
    term = per_sample(terminated, batch_shape, "terminated", "q_values")
    n = None if steps_to_next_obs is None else per_sample(steps_to_next_obs, batch_shape, "steps_to_next_obs",
                                                          "q_values")
    y = stop_gradient(td0_target(r, stop_gradient(nxt), term, gamma, n))
    w = None if weights is None else per_sample(weights, batch_shape, "weights", "q_values")
    loss = reduce_loss(distance_loss(pred, y, loss_function), reduction, weights=w)
    diff = stop_gradient(pred) - y
    return {"loss": loss, "pred": pred, "target": y, "td_error": diff * diff}


# ------------------------------------------------------------------------------------------- C51
def c51_projection(next_probs: Any, reward: Any, terminated: Any, support: Any, discount: Any) -> Any:
    """Project the distributional Bellman target onto the fixed support (Bellemare et al. 2017, Algorithm 1).

    ``Tz_j = clip(r + discount (1 - terminated) z_j, V_min, V_max)``, ``b_j = (Tz_j - V_min) / dz``, and
    ``m_i = sum_j p_j max(0, 1 - |b_j - i|)``: the mass of atom ``j`` split between ``floor(b_j)`` and
    ``ceil(b_j)`` in proportion to the distance (all of it on ``b_j`` when ``b_j`` is an integer). This equals the
    ``l/u`` index form with Rainbow's fix-ups for integer ``b`` that TorchRL uses, written without scatter so it
    runs on every backend and any batch rank.

    Shapes: ``next_probs`` ``[*B, atoms]``; ``reward``, ``terminated`` ``[*B]``; ``support`` ``[atoms]`` (sorted,
    evenly spaced); ``discount`` a scalar or ``[*B]``. Returns ``m`` ``[*B, atoms]`` (no tape), summing to the
    mass of ``next_probs``.
    """
    xp = namespace_of(next_probs, reward, support)
    _check_floats(next_probs=next_probs, support=support)
    next_probs, reward, support = stop_gradient(next_probs), stop_gradient(reward), stop_gradient(support)
    atoms = support.shape[-1]
    if support.ndim != 1 or atoms < 2:
        raise ValueError(f"support: expected a 1-D array of at least 2 atoms, got shape {tuple(support.shape)}")
    batch_shape = tuple(next_probs.shape[:-1])
    if next_probs.shape[-1] != atoms:
        raise ValueError(f"next_probs: expected {atoms} atoms in the last axis (the support), got {tuple(next_probs.shape)}")
    for name, a in (("reward", reward), ("terminated", terminated)):
        if tuple(a.shape) != batch_shape:
            raise ValueError(
                f"{name}: expected shape {batch_shape} (the batch shape of next_probs [*B, atoms]), "
                f"got {tuple(a.shape)}"
            )
    check_floating(reward, "reward")
    check_bool(terminated, "terminated")
    v_min, v_max = support[0], support[atoms - 1]
    dz = (v_max - v_min) / (atoms - 1)
    if not isinstance(discount, (int, float)):
        discount = xp.expand_dims(discount, axis=-1)
    not_term = xp.expand_dims(xp.where(terminated, xp.zeros_like(reward), xp.ones_like(reward)), axis=-1)
    tz = xp.expand_dims(reward, axis=-1) + discount * not_term * support
    tz = xp.minimum(xp.maximum(tz, v_min), v_max)
    b = (tz - v_min) / dz  # [*B, atoms(source j)]
    idx = xp.astype(xp.arange(atoms, device=getattr(support, "device", None)), b.dtype)
    kernel = 1.0 - xp.abs(xp.expand_dims(b, axis=-2) - xp.expand_dims(idx, axis=-1))  # [*B, i, j]
    kernel = xp.clip(kernel, min=0.0)
    return xp.sum(kernel * xp.expand_dims(next_probs, axis=-2), axis=-1)


def distributional_dqn_loss(
    log_probs: Any,
    action: Any,
    reward: Any,
    next_log_probs_online: Any,
    next_log_probs_target: Any,
    terminated: Any,
    *,
    support: Any,
    gamma: float,
    steps_to_next_obs: Any = None,
    reduction: str = "mean",
    weights: Any = None,
    action_space: str = "one_hot",
    log_probs_name: str = "log_probs",
    action_name: str = "action",
) -> dict:
    """C51 cross-entropy loss with TorchRL's (Rainbow's) double-Q action choice.

    ``a* = argmax_a sum_z z p_online(s', a)``; ``m = c51_projection(p_target(s', a*), r, terminated, z, gamma**n)``;
    ``loss_b = -sum_z m_z log p(s, a)_z``; ``loss = reduce(loss_b, weights)``.

    Shapes: ``log_probs`` and the two next log-probs ``[*B, atoms, nA]`` (log-softmax over atoms); ``action``
    ``[*B, nA]`` one-hot or ``[*B]``/``[*B, 1]`` indices; ``reward``, ``terminated`` ``[*B]`` or ``[*B, 1]``.
    Returns ``{"loss", "td_error"}`` with ``td_error = loss_b`` (no tape).

    ``log_probs_name``/``action_name`` name those inputs in error messages (the loss class passes its keys).
    """
    xp = namespace_of(log_probs, next_log_probs_target, support)
    check_min_rank(log_probs, 2, log_probs_name)
    check_floating(log_probs, log_probs_name)
    _check_floats(next_log_probs_online=next_log_probs_online, next_log_probs_target=next_log_probs_target)
    check_min_rank(support, 1, "support")
    batch_shape = tuple(log_probs.shape[:-2])
    atoms, n_act = log_probs.shape[-2], log_probs.shape[-1]
    if tuple(support.shape) != (atoms,):
        raise ValueError(
            f"{log_probs_name}: expected {support.shape[0]} atoms (the length of support) in axis -2 of "
            f"[*B, atoms, n_actions], got shape {tuple(log_probs.shape)}"
        )
    for name, a in (("next_log_probs_online", next_log_probs_online), ("next_log_probs_target", next_log_probs_target)):
        if tuple(a.shape) != tuple(log_probs.shape):
            raise ValueError(
                f"{name}: expected shape {tuple(log_probs.shape)} (the shape of {log_probs_name}), got {tuple(a.shape)}"
            )
    _check_discount(gamma)
    space = normalize_action_space(action_space)
    if space == "categorical":
        idx = categorical_index(action, batch_shape, n_act, action_name, log_probs_name)
        idx = xp.broadcast_to(xp.reshape(idx, batch_shape + (1, 1)), batch_shape + (atoms, 1))
        log_p_a = xp.squeeze(xp.take_along_axis(log_probs, idx, axis=-1), axis=-1)
    elif space == "one_hot":
        check_one_hot(action, batch_shape + (n_act,), action_name)
        a = xp.expand_dims(_float_action(action, log_probs), axis=-2)
        log_p_a = xp.sum(log_probs * a, axis=-1)
    else:
        raise ValueError(f"action_space: DistributionalDQNLoss supports 'one_hot' and 'categorical', got {space!r}")
    sup = stop_gradient(support)
    p_online = xp.exp(stop_gradient(next_log_probs_online))
    q_online = xp.sum(p_online * xp.reshape(sup, (atoms, 1)), axis=-2)  # [*B, nA]
    a_star = xp.broadcast_to(
        xp.reshape(greedy_action_index(q_online), batch_shape + (1, 1)), batch_shape + (atoms, 1)
    )
    p_next = xp.squeeze(xp.take_along_axis(xp.exp(stop_gradient(next_log_probs_target)), a_star, axis=-1), axis=-1)
    r = per_sample(reward, batch_shape, "reward", log_probs_name)
    term = per_sample(terminated, batch_shape, "terminated", log_probs_name)
    if steps_to_next_obs is None:
        disc: Any = gamma
    else:
        n = per_sample(steps_to_next_obs, batch_shape, "steps_to_next_obs", log_probs_name)
        disc = gamma ** xp.astype(n, r.dtype)
    m = c51_projection(p_next, r, term, sup, disc)
    per = -xp.sum(xp.multiply(m, log_p_a), axis=-1)
    w = None if weights is None else per_sample(weights, batch_shape, "weights", log_probs_name)
    return {"loss": reduce_loss(per, reduction, weights=w), "td_error": stop_gradient(per)}


# ------------------------------------------------------------------------------------------- IQL
def expectile_loss(diff: Any, expectile: float) -> Any:
    """Asymmetric L2 ``|tau - 1(u < 0)| u**2`` with ``u = diff`` (weight ``tau`` if ``u > 0`` else ``1 - tau``);
    ``expectile`` in ``(0, 1)`` (``ValueError`` otherwise: outside it a weight is negative)."""
    _check_scalar(expectile, "expectile", low=0.0, high=1.0, low_open=True, high_open=True)
    xp = namespace_of(diff)
    one = xp.ones_like(stop_gradient(diff))
    w = xp.where(stop_gradient(diff) > 0, expectile * one, (1.0 - expectile) * one)
    return xp.multiply(w, diff * diff)


def iql_value_loss(min_q: Any, value: Any, expectile: float) -> Any:
    """IQL value loss (eq. 5): ``L2^tau(sg(min_i Q_target_i(s, a)) - V(s))``, elementwise ``[*B]``."""
    _check_floats(min_q=min_q, value=value)
    if tuple(min_q.shape) != tuple(value.shape):
        raise ValueError(f"value: expected shape {tuple(min_q.shape)} (the shape of min_q), got {tuple(value.shape)}")
    sg_min_q = stop_gradient(min_q)
    return expectile_loss(namespace_of(sg_min_q, value).subtract(sg_min_q, value), expectile)


def iql_actor_loss(log_prob: Any, min_q: Any, value: Any, temperature: float, max_weight: float = 100.0) -> Any:
    """Advantage-weighted regression actor loss (IQL eq. 7): ``-min(exp(beta (Q - V)), max_weight) log pi(a|s)``.

    ``Q`` and ``V`` carry no gradient; ``beta = temperature``; the clamp at 100 is the one of the IQL code and
    TorchRL. Shapes ``[*B]``, elementwise.
    """
    xp = namespace_of(log_prob, min_q, value)
    _check_scalar(temperature, "temperature", low=0.0, low_open=True)
    _check_scalar(max_weight, "max_weight", low=0.0, low_open=True)
    _check_floats(log_prob=log_prob, min_q=min_q, value=value)
    for name, a in (("min_q", min_q), ("value", value)):
        if tuple(a.shape) != tuple(log_prob.shape):
            raise ValueError(f"{name}: expected shape {tuple(log_prob.shape)} (the shape of log_prob), got {tuple(a.shape)}")
    exp_a = xp.exp((stop_gradient(min_q) - stop_gradient(value)) * temperature)
    exp_a = xp.clip(exp_a, max=float(max_weight))
    return -xp.multiply(exp_a, log_prob)


def ensemble_critic_loss(pred: Any, target: Any, loss_function: str = "smooth_l1") -> tuple:
    """Critic ensemble loss summed over members: ``sum_i dist(Q_i, sg(y))``, ``[*B]``; and ``td_error`` ``[N, *B]``.

    ``pred`` ``[N, *B]``, ``target`` ``[*B]`` (broadcast over the members explicitly, never silently).
    """
    xp = namespace_of(pred, target)
    _check_floats(pred=pred, target=target)
    check_min_rank(pred, 1, "pred")
    if tuple(pred.shape[1:]) != tuple(target.shape):
        raise ValueError(f"target: expected shape {tuple(pred.shape[1:])} (pred without its ensemble axis), got {tuple(target.shape)}")
    y = xp.broadcast_to(xp.expand_dims(stop_gradient(target), axis=0), tuple(pred.shape))
    diff = stop_gradient(pred) - y
    return xp.sum(distance_loss(pred, y, loss_function), axis=0), diff * diff


# ------------------------------------------------------------------------------------------- mixers
def mixer_td_loss(global_value: Any, target: Any, loss_function: str = "l2") -> tuple:
    """QMIX/VDN TD loss ``mean(dist(Q_tot, sg(y)))`` (plain mean, as TorchRL) and ``td_error = (Q_tot - y)**2``.

    ``global_value`` (the mixed ``Q_tot``) and ``target`` (``y``) must have the same shape ``[*B]``.
    """
    check_floating(global_value, "global_value")
    check_floating(target, "target")
    if tuple(target.shape) != tuple(global_value.shape):
        raise ValueError(
            f"target: expected shape {tuple(global_value.shape)} (the shape of global_value, the mixed value), "
            f"got {tuple(target.shape)}"
        )
    xp = namespace_of(global_value, target)
    y = stop_gradient(target)
    diff = stop_gradient(global_value) - y
    return xp.mean(distance_loss(global_value, y, loss_function)), diff * diff

