"""Implicit Q-Learning losses, one sample at a time (network-free: network outputs in).

Kostrikov, Nair & Levine 2021 "Offline Reinforcement Learning with Implicit Q-Learning".

Per sample b, with N critics (TorchRL 0.14.1 ``IQLLoss`` / ``DiscreteIQLLoss``, catalog 5.7 / 5.8):

    m_b        = min_i Qtarget_i(s_b, a_b)                   (target critics, data action)
    u_b        = m_b - V(s_b)
    loss_value = reduce(L_tau(u))      L_tau(u) = w u^2, w = tau if u > 0 else 1 - tau   (= |tau - 1(u<0)| u^2)
    exp_a_b    = min(exp(beta (m_b - V(s_b))), 100)         (beta = temperature; V detached)
    loss_actor = reduce(-exp_a * log pi(a_b | s_b))
    y_b        = r_b + gamma (1 - terminated_b) V(s'_b)     (V(s') detached)
    loss_qvalue= reduce(sum_i distance(Q_i(s_b, a_b), y_b))  (online critics, summed over critics)
    entropy    = -mean_b log pi(a_b | s_b)                   (the data log-likelihood, as TorchRL)
    td_error_b = max_i (Q_i(s_b, a_b) - y_b)^2

At u = 0 TorchRL weights by 1 - tau and the paper by tau; the term is 0 either way.
The paper's Q loss is the squared error; TorchRL's default ``loss_function`` is ``"smooth_l1"``.
"""

from __future__ import annotations

import math

import numpy as np

from .._util import as_f64
from .common import batch_vector, chosen_action_value, distance_scalar, reduce

__all__ = ["expectile_loss", "iql_loss", "discrete_iql_loss"]


def expectile_loss(diff, expectile: float = 0.8):
    """Elementwise ``w * diff^2`` with ``w = expectile`` where ``diff > 0`` else ``1 - expectile``.

    (TorchRL's static ``IQLLoss.loss_value_diff`` default is 0.8; the loss constructor's default is 0.5.)
    """
    d = as_f64("diff", diff)
    out = np.empty(d.shape, dtype=np.float64)
    for i in np.ndindex(*d.shape):
        u = float(d[i])
        w = expectile if u > 0.0 else 1.0 - expectile
        out[i] = w * u * u
    return out


def iql_loss(log_prob, q_target, q_online, value, next_value, reward, terminated, *, gamma, temperature=1.0,
             expectile=0.5, loss_function="smooth_l1", reduction="mean"):
    """IQL losses from chosen-action values -> dict ``loss_actor, loss_qvalue, loss_value, entropy, td_error``.

    ``q_target``, ``q_online``: ``[N, *B]`` (critic i's Q(s, a_data)); ``log_prob``, ``value`` (V(s)),
    ``next_value`` (V(s')): ``[*B]``; ``reward``, ``terminated``: ``[*B]`` or ``[*B, 1]``.
    """
    qt = as_f64("q_target", q_target)
    qo = as_f64("q_online", q_online)
    if qt.ndim < 1:
        raise ValueError("q_target: expected shape [N, *B]")
    if qo.shape != qt.shape:
        raise ValueError(f"q_online: expected shape {qt.shape} (the shape of q_target), got {qo.shape}")
    n_critics, batch_shape = qt.shape[0], qt.shape[1:]
    lp = batch_vector("log_prob", log_prob, batch_shape)
    v = batch_vector("value", value, batch_shape)
    nv = batch_vector("next_value", next_value, batch_shape)
    r = batch_vector("reward", reward, batch_shape)
    tm = batch_vector("terminated", terminated, batch_shape, kind="bool")

    actor = np.empty(batch_shape, dtype=np.float64)
    value_l = np.empty(batch_shape, dtype=np.float64)
    qloss = np.empty(batch_shape, dtype=np.float64)
    td = np.empty(batch_shape, dtype=np.float64)
    ent_sum = 0.0
    for b in np.ndindex(*batch_shape):
        m = min(float(qt[(i,) + b]) for i in range(n_critics))
        u = m - float(v[b])
        w = expectile if u > 0.0 else 1.0 - expectile
        value_l[b] = w * u * u
        exp_a = min(math.exp(temperature * u), 100.0)
        actor[b] = -exp_a * float(lp[b])
        y = float(r[b]) if tm[b] else float(r[b]) + float(gamma) * float(nv[b])
        qloss[b] = sum(distance_scalar(float(qo[(i,) + b]), y, loss_function) for i in range(n_critics))
        td[b] = max((float(qo[(i,) + b]) - y) ** 2 for i in range(n_critics))
        ent_sum += -float(lp[b])
    return {
        "loss_actor": reduce(actor, reduction),
        "loss_qvalue": reduce(qloss, reduction),
        "loss_value": reduce(value_l, reduction),
        "entropy": np.float64(ent_sum / max(int(np.prod(batch_shape)), 1)),
        "td_error": td,
    }


def discrete_iql_loss(log_prob, q_target_all, q_online_all, action, value, next_value, reward, terminated, *, gamma,
                      temperature=1.0, expectile=0.5, loss_function="smooth_l1", reduction="mean", action_space=None):
    """DiscreteIQL: critics output all action values ``[N, *B, nA]``; every Q above is the data action's
    (gather for integer actions ``[*B]``, dot product for one-hot ``[*B, nA]``).  ``expectile < 1`` required.
    """
    if not expectile < 1.0:
        raise ValueError(f"expectile: expected < 1, got {expectile}")
    qt = as_f64("q_target_all", q_target_all)
    qo = as_f64("q_online_all", q_online_all)
    if qt.ndim < 2:
        raise ValueError(f"q_target_all: expected shape [N, *B, nA], got {qt.shape}")
    if qo.shape != qt.shape:
        raise ValueError(f"q_online_all: expected shape {qt.shape}, got {qo.shape}")
    chosen_t = np.stack([chosen_action_value(qt[i], action, action_space) for i in range(qt.shape[0])])
    chosen_o = np.stack([chosen_action_value(qo[i], action, action_space) for i in range(qo.shape[0])])
    return iql_loss(log_prob, chosen_t, chosen_o, value, next_value, reward, terminated, gamma=gamma,
                    temperature=temperature, expectile=expectile, loss_function=loss_function, reduction=reduction)
