"""DQN and Double DQN TD losses, one sample at a time (network-free: Q-value arrays in).

Mnih et al. 2015 "Human-level control through deep reinforcement learning";
van Hasselt, Guez & Silver 2016 "Deep Reinforcement Learning with Double Q-learning".

Per sample b (TorchRL 0.14.1 DQNLoss, TD(0) estimator):

    pred_b   = Q(s_b, a_b)                           (gather, or sum_k Q_k a_k for one-hot actions)
    y_b      = r_b + gamma^n_b (1 - terminated_b) Q'(s'_b)
    Q'(s')   = max_a Qtarget(s', a)                  (DQN)
    Q'(s')   = Qtarget(s', argmax_a Qonline(s', a))  (Double DQN; argmax takes the first maximum)
    loss     = reduce(distance(pred, y), weights)    (l2 without 1/2 by default)

``n = steps_to_next_obs`` (1 if not given).  The target carries no gradient in TorchRL (target parameters);
in this network-free form ``y`` simply does not depend on ``q_values``.
TorchRL writes ``td_error = (pred - y)^2`` (its replay priority); ``abs_td_error = |pred - y|`` is also given.

Differences from TorchRL worth knowing (ties only, measure zero for continuous values): TorchRL's one-hot
greedy action is ``Q == max Q`` (multi-hot at ties), so its one-hot ``max_a Q`` is ``k * max`` when k actions
tie; the reference uses the true max.
"""

from __future__ import annotations

import numpy as np

from .._util import as_f64
from .common import batch_vector, chosen_action_value, distance_scalar, greedy_index, reduce

__all__ = ["dqn_target", "dqn_loss"]


def dqn_target(reward, next_q_target, terminated, *, gamma, next_q_online=None, double_dqn=False,
               steps_to_next_obs=None):
    """TD(0) targets ``y`` of shape ``next_q_target.shape[:-1]`` (see module docstring)."""
    qt = as_f64("next_q_target", next_q_target)
    batch_shape = qt.shape[:-1]
    r = batch_vector("reward", reward, batch_shape)
    tm = batch_vector("terminated", terminated, batch_shape, kind="bool")
    n = np.ones(batch_shape) if steps_to_next_obs is None else batch_vector(
        "steps_to_next_obs", steps_to_next_obs, batch_shape)
    if double_dqn:
        if next_q_online is None:
            raise ValueError("next_q_online: required with double_dqn=True")
        qo = as_f64("next_q_online", next_q_online)
        if qo.shape != qt.shape:
            raise ValueError(f"next_q_online: expected shape {qt.shape} (the shape of next_q_target), got {qo.shape}")
    y = np.empty(batch_shape, dtype=np.float64)
    for b in np.ndindex(*batch_shape):
        if tm[b]:
            y[b] = r[b]
            continue
        if double_dqn:
            a_star = greedy_index(qo[b])
            boot = float(qt[b + (a_star,)])
        else:
            boot = max(float(v) for v in qt[b])
        y[b] = r[b] + float(gamma) ** float(n[b]) * boot
    return y


def dqn_loss(q_values, action, reward, next_q_target, terminated, *, gamma, next_q_online=None, double_dqn=False,
             loss_function="l2", reduction="mean", weights=None, steps_to_next_obs=None, action_space=None):
    """DQN / Double DQN loss -> dict ``loss, pred, target, td_error, abs_td_error``.

    Shapes: ``q_values``, ``next_q_target``, ``next_q_online``: ``[*B, nA]``; ``action``: ``[*B]`` (or ``[*B, 1]``)
    indices or ``[*B, nA]`` one-hot; ``reward``, ``terminated``, ``weights``, ``steps_to_next_obs``: ``[*B]`` or
    ``[*B, 1]``.  ``loss`` is a scalar, or ``[*B]`` with ``reduction="none"``.
    """
    q = as_f64("q_values", q_values)
    qt = as_f64("next_q_target", next_q_target)
    if qt.shape != q.shape:
        raise ValueError(f"next_q_target: expected shape {q.shape} (the shape of q_values), got {qt.shape}")
    batch_shape = q.shape[:-1]
    pred = chosen_action_value(q, action, action_space)
    y = dqn_target(reward, qt, terminated, gamma=gamma, next_q_online=next_q_online, double_dqn=double_dqn,
                   steps_to_next_obs=steps_to_next_obs)
    per = np.empty(batch_shape, dtype=np.float64)
    sq = np.empty(batch_shape, dtype=np.float64)
    ab = np.empty(batch_shape, dtype=np.float64)
    for b in np.ndindex(*batch_shape):
        per[b] = distance_scalar(float(pred[b]), float(y[b]), loss_function)
        sq[b] = (float(pred[b]) - float(y[b])) ** 2
        ab[b] = abs(float(pred[b]) - float(y[b]))
    w = None if weights is None else batch_vector("weights", weights, batch_shape)
    return {
        "loss": reduce(per, reduction, weights=w),
        "pred": pred,
        "target": y,
        "td_error": sq,
        "abs_td_error": ab,
    }
