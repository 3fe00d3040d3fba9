"""GAIL's discriminator loss with the WGAN-GP gradient penalty, one sample at a time, in float64.

Ho & Ermon 2016, "Generative Adversarial Imitation Learning" (arXiv:1606.03476), the discriminator's side of eq. 17
with TorchRL's labels (expert 1, policy 0) and torch's BCE (logs clamped at -100); Gulrajani et al. 2017, "Improved
Training of Wasserstein GANs" (arXiv:1704.00028), eq. 3 for the penalty. Per sample i (a row ``[obs, act]``)::

    l_i     = -max(log D(e_i), -100) - max(log(1 - D(c_i)), -100)
    xhat_i  = u_i * c_i + (1 - u_i) * e_i          (u_i a scalar per sample -- WGAN-GP -- or per element -- TorchRL)
    gp      = lambda * mean_i (||grad_x D(xhat_i)||_2 - 1)^2
    loss    = reduce_i (l_i + gp)

The discriminator is an explicit MLP on the row ``[obs, act]``: ``tanh`` hidden layers, a sigmoid output; its input
gradient is back-propagated by hand for each sample (no autodiff). Network weights in torch's layout.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mlp_prob", "mlp_input_grad", "gail_loss"]


def _layers(weights):
    return [(np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)) for w, b in weights]


def mlp_prob(weights, x) -> float:
    """``sigmoid(W_L tanh(... tanh(W_1 x + b_1) ...) + b_L)`` for one input row ``x``; ``weights = [(W, b), ...]``."""
    h = np.asarray(x, dtype=np.float64)
    layers = _layers(weights)
    for k, (w, b) in enumerate(layers):
        z = [sum(w[j, i] * h[i] for i in range(len(h))) + b[j] for j in range(len(b))]
        h = np.array([math.tanh(v) for v in z]) if k < len(layers) - 1 else np.array(z)
    return 1.0 / (1.0 + math.exp(-h[0]))


def mlp_input_grad(weights, x) -> np.ndarray:
    """``d mlp_prob / dx`` for one row ``x`` (forward pass storing activations, then the chain rule by hand)."""
    layers = _layers(weights)
    hs = [np.asarray(x, dtype=np.float64)]
    for k, (w, b) in enumerate(layers):
        z = w @ hs[-1] + b
        hs.append(np.tanh(z) if k < len(layers) - 1 else z)
    p = 1.0 / (1.0 + math.exp(-hs[-1][0]))
    delta = np.array([p * (1.0 - p)])  # d p / d z_L
    for k in range(len(layers) - 1, -1, -1):
        w, _ = layers[k]
        dh = np.array([sum(w[j, i] * delta[j] for j in range(w.shape[0])) for i in range(w.shape[1])])
        if k == 0:
            return dh
        delta = dh * (1.0 - hs[k] ** 2)  # through tanh of layer k-1's output
    raise AssertionError("unreachable")


def gail_loss(weights, obs_e, act_e, obs_c, act_c, *, use_grad_penalty=False, gp_lambda=10.0, u_obs=None,
              u_act=None, reduction="mean"):
    """Returns ``(loss, gp)`` (``gp`` None without the penalty). Inputs ``[N, F]`` (flatten a ``[B, T]`` batch);
    ``u_obs``/``u_act`` of the observation/action shapes (equal columns for a per-sample coefficient)."""
    obs_e, act_e, obs_c, act_c = (np.asarray(a, dtype=np.float64) for a in (obs_e, act_e, obs_c, act_c))
    n = obs_e.shape[0]
    ls = []
    for i in range(n):
        pe = mlp_prob(weights, np.concatenate([obs_e[i], act_e[i]]))
        pc = mlp_prob(weights, np.concatenate([obs_c[i], act_c[i]]))
        le = -max(math.log(pe) if pe > 0 else -math.inf, -100.0)
        lc = -max(math.log1p(-pc) if pc < 1 else -math.inf, -100.0)
        ls.append(le + lc)
    gp = None
    if use_grad_penalty:
        terms = []
        for i in range(n):
            xo = u_obs[i] * obs_c[i] + (1.0 - u_obs[i]) * obs_e[i]
            xa = u_act[i] * act_c[i] + (1.0 - u_act[i]) * act_e[i]
            g = mlp_input_grad(weights, np.concatenate([xo, xa]))
            terms.append((math.sqrt(sum(v * v for v in g)) - 1.0) ** 2)
        gp = gp_lambda * sum(terms) / n
        ls = [v + gp for v in ls]
    ls = np.array(ls)
    if reduction == "mean":
        return float(sum(ls) / n), gp
    if reduction == "sum":
        return float(sum(ls)), gp
    return ls[:, None], gp
