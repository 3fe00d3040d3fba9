"""VDN and QMIX mixers and the QMixer TD loss, one sample at a time.

Sunehag et al. 2017 "Value-Decomposition Networks for Cooperative Multi-Agent Learning" (VDN);
Rashid et al. 2018 "QMIX: Monotonic Value Function Factorisation for Deep Multi-Agent RL".

Mixer inputs follow TorchRL 0.14.1 (``torchrl.modules.models.multiagent``): per-agent chosen values
``q_agents [*B, n_agents, 1]``, global state ``state [*B, *state_shape]`` (flattened to S features);
output ``Q_tot [*B, 1]``.

QMIX (``QMixer(state_shape, mixing_embed_dim=E, n_agents=n)``), per sample with ``s`` the flat state:

    W1[i, e]  = |hyper_w_1(s)[i * E + e]|          (Linear S -> n*E, reshaped [n, E])
    b1[e]     = hyper_b_1(s)[e]                    (Linear S -> E)
    h[e]      = elu(sum_i q_i W1[i, e] + b1[e])
    Wf[e]     = |hyper_w_final(s)[e]|              (Linear S -> E)
    V         = V.2(relu(V.0(s)))                  (Linear S -> E, ReLU, Linear E -> 1)
    Q_tot     = sum_e h[e] Wf[e] + V

``params`` is a flat dict with TorchRL's ``state_dict`` names and torch ``Linear`` layout (``weight [out, in]``,
``y = W x + b``): ``hyper_w_1.weight/bias``, ``hyper_b_1.weight/bias``, ``hyper_w_final.weight/bias``,
``V.0.weight/bias``, ``V.2.weight/bias``.

QMixerLoss (TD(0)), per sample:

    Q_i   = Q^i(o_i, a_i)                          (gather / one-hot dot)
    Q_tot = Mixer(Q_., s)
    y     = r + gamma (1 - terminated) Mixer_target(max_a Q^i_target(o'_i, a), s')
    loss  = mean_b distance(Q_tot, y)              (plain mean: no reduction / weights / masks in TorchRL)
    td_error = (Q_tot - y)^2
"""

from __future__ import annotations

import math

import numpy as np

from .._util import as_f64
from .common import batch_vector, chosen_action_value, distance_scalar

__all__ = ["vdn_mix", "qmix_mix", "qmixer_loss", "QMIX_PARAM_NAMES"]

QMIX_PARAM_NAMES = (
    "hyper_w_1.weight", "hyper_w_1.bias",
    "hyper_b_1.weight", "hyper_b_1.bias",
    "hyper_w_final.weight", "hyper_w_final.bias",
    "V.0.weight", "V.0.bias",
    "V.2.weight", "V.2.bias",
)


def _check_agents(q_agents, n_agents=None):
    q = as_f64("q_agents", q_agents)
    if q.ndim < 2 or q.shape[-1] != 1 or (n_agents is not None and q.shape[-2] != n_agents):
        want = "n_agents" if n_agents is None else n_agents
        raise ValueError(f"q_agents: expected shape [*B, {want}, 1], got {q.shape}")
    return q


def vdn_mix(q_agents):
    """``Q_tot = sum_i Q_i``: ``[*B, n, 1] -> [*B, 1]``."""
    q = _check_agents(q_agents)
    batch_shape = q.shape[:-2]
    out = np.empty(batch_shape + (1,), dtype=np.float64)
    for b in np.ndindex(*batch_shape):
        total = 0.0
        for i in range(q.shape[-2]):
            total += float(q[b + (i, 0)])
        out[b + (0,)] = total
    return out


def _linear(weight: np.ndarray, bias: np.ndarray, x: list) -> list:
    """torch.nn.Linear per sample: ``y_o = sum_k W[o, k] x_k + b_o``."""
    out = []
    for o in range(weight.shape[0]):
        acc = float(bias[o])
        for k in range(weight.shape[1]):
            acc += float(weight[o, k]) * x[k]
        out.append(acc)
    return out


def _elu(x: float) -> float:
    return x if x > 0.0 else math.expm1(x)


def _qmix_one(q: list, s: list, p: dict, embed_dim: int) -> float:
    n = len(q)
    w1 = [abs(v) for v in _linear(p["hyper_w_1.weight"], p["hyper_w_1.bias"], s)]
    b1 = _linear(p["hyper_b_1.weight"], p["hyper_b_1.bias"], s)
    hidden = []
    for e in range(embed_dim):
        acc = b1[e]
        for i in range(n):
            acc += q[i] * w1[i * embed_dim + e]
        hidden.append(_elu(acc))
    wf = [abs(v) for v in _linear(p["hyper_w_final.weight"], p["hyper_w_final.bias"], s)]
    v_hidden = [max(v, 0.0) for v in _linear(p["V.0.weight"], p["V.0.bias"], s)]
    v = _linear(p["V.2.weight"], p["V.2.bias"], v_hidden)[0]
    return sum(hidden[e] * wf[e] for e in range(embed_dim)) + v


def _check_qmix_params(params, n_agents: int):
    missing = [k for k in QMIX_PARAM_NAMES if k not in params]
    if missing:
        raise KeyError(f"params: missing {missing}; expected keys {list(QMIX_PARAM_NAMES)}")
    p = {k: as_f64(k, params[k]) for k in QMIX_PARAM_NAMES}
    embed_dim, state_dim = p["hyper_b_1.weight"].shape
    expected = {
        "hyper_w_1.weight": (embed_dim * n_agents, state_dim), "hyper_w_1.bias": (embed_dim * n_agents,),
        "hyper_b_1.weight": (embed_dim, state_dim), "hyper_b_1.bias": (embed_dim,),
        "hyper_w_final.weight": (embed_dim, state_dim), "hyper_w_final.bias": (embed_dim,),
        "V.0.weight": (embed_dim, state_dim), "V.0.bias": (embed_dim,),
        "V.2.weight": (1, embed_dim), "V.2.bias": (1,),
    }
    for k, shp in expected.items():
        if p[k].shape != shp:
            raise ValueError(f"params[{k!r}]: expected shape {shp}, got {p[k].shape}")
    return p, embed_dim, state_dim


def qmix_mix(q_agents, state, params):
    """QMIX mixing network (see module docstring): ``[*B, n, 1]``, ``[*B, *state_shape]`` -> ``[*B, 1]``."""
    q = _check_agents(q_agents)
    n_agents = q.shape[-2]
    p, embed_dim, state_dim = _check_qmix_params(params, n_agents)
    batch_shape = q.shape[:-2]
    st = as_f64("state", state)
    if st.shape[: len(batch_shape)] != batch_shape or int(np.prod(st.shape[len(batch_shape):])) != state_dim:
        raise ValueError(f"state: expected shape {batch_shape} + (state features totalling {state_dim}), got {st.shape}")
    out = np.empty(batch_shape + (1,), dtype=np.float64)
    for b in np.ndindex(*batch_shape):
        s = [float(v) for v in np.reshape(st[b], (-1,))]
        qs = [float(q[b + (i, 0)]) for i in range(n_agents)]
        out[b + (0,)] = _qmix_one(qs, s, p, embed_dim)
    return out


def _mix(mixer, q_agents, state, params):
    if mixer == "vdn":
        return vdn_mix(q_agents)
    if mixer == "qmix":
        if params is None or state is None:
            raise ValueError("mixer='qmix' needs state/next_state and params/target_params")
        return qmix_mix(q_agents, state, params)
    raise ValueError(f"mixer: expected 'vdn' or 'qmix', got {mixer!r}")


def qmixer_loss(local_q, action, reward, next_local_q_target, terminated, *, gamma, mixer="vdn", params=None,
                target_params=None, state=None, next_state=None, loss_function="l2", action_space=None):
    """QMixerLoss -> dict ``loss (scalar mean), q_tot [*B], target [*B], td_error [*B]``.

    ``local_q``, ``next_local_q_target``: ``[*B, n_agents, nA]`` per-agent action values (online at s, target at s');
    ``action``: ``[*B, n_agents]`` (or ``[*B, n_agents, 1]``) indices or ``[*B, n_agents, nA]`` one-hot;
    ``reward``, ``terminated``: ``[*B]`` or ``[*B, 1]``; ``state``/``next_state``: ``[*B, *state_shape]`` (QMIX).
    """
    q = as_f64("local_q", local_q)
    qt = as_f64("next_local_q_target", next_local_q_target)
    if qt.shape != q.shape:
        raise ValueError(f"next_local_q_target: expected shape {q.shape} (the shape of local_q), got {qt.shape}")
    if q.ndim < 3:
        raise ValueError(f"local_q: expected shape [*B, n_agents, nA], got {q.shape}")
    batch_shape = q.shape[:-2]
    chosen = chosen_action_value(q, action, action_space)[..., None]  # [*B, n, 1]
    next_max = np.empty(qt.shape[:-1] + (1,), dtype=np.float64)
    for bi in np.ndindex(*qt.shape[:-1]):
        next_max[bi + (0,)] = max(float(v) for v in qt[bi])
    q_tot = _mix(mixer, chosen, state, params)[..., 0]
    next_tot = _mix(mixer, next_max, next_state, target_params)[..., 0]
    r = batch_vector("reward", reward, batch_shape)
    tm = batch_vector("terminated", terminated, batch_shape, kind="bool")
    y = np.empty(batch_shape, dtype=np.float64)
    per = np.empty(batch_shape, dtype=np.float64)
    td = np.empty(batch_shape, dtype=np.float64)
    total = 0.0
    for b in np.ndindex(*batch_shape):
        y[b] = float(r[b]) if tm[b] else float(r[b]) + float(gamma) * float(next_tot[b])
        per[b] = distance_scalar(float(q_tot[b]), float(y[b]), loss_function)
        td[b] = (float(q_tot[b]) - float(y[b])) ** 2
        total += per[b]
    return {"loss": np.float64(total / max(per.size, 1)), "q_tot": q_tot, "target": y, "td_error": td}
