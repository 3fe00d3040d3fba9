"""Generative adversarial imitation learning: :class:`GAILLoss` (TorchRL 0.14.1 ``torchrl.objectives.GAILLoss``).

The discriminator loss of GAIL (Ho & Ermon 2016, "Generative Adversarial Imitation Learning", eq. 17 with
TorchRL's labels: expert = 1, policy = 0). ``D`` outputs **probabilities** (TorchRL uses ``nn.BCELoss``, despite the
key name ``d_logits``). Expert and collector halves are concatenated on axis 0 and fed to ``D`` under the *expert*
key names; with ``p_e = D(o_e, a_e)``, ``p_c = D(o_c, a_c)`` (``[*B, 1]``, the batch ``[B]`` or ``[B, T]``)::

    l = -max(log p_e, -100) - max(log(1 - p_c), -100)                      (torch's BCE, logs clamped at -100)

Gradient penalty (``use_grad_penalty``; Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", WGAN-GP)::

    x_hat = u x_c + (1 - u) x_e                 (observations and actions; u ~ U(0, 1))
    g     = grad_{(o_hat, a_hat)} sum D(x_hat)  (concatenated on the last axis)
    gp    = gp_lambda * mean((||g||_2 - 1)^2)   (over the samples)
    loss  = reduce(l + gp)                      (gp broadcast over l, then the reduction, as TorchRL)

``gp`` is differentiated with respect to the discriminator's parameters through ``g``: the inner gradient is taken
with ``arrayrl.autodiff.grad(..., create_graph=True)`` (the tape's second order), so ``loss.value_and_grad`` returns
the exact gradient of the penalty (torch's ``create_graph=True`` double backward). ``x_hat`` is a constant.

Interpolation coefficient (the defect; see /tmp/divergences_gail.md):

* paper (default): one ``u`` per sample, shape ``[*B, 1]``, shared by the observation and the action (WGAN-GP draws
  ``epsilon ~ U[0, 1]`` per sample, so ``x_hat`` lies on the segment between a real and a generated sample);
* ``torchrl_compat=True``: TorchRL draws ``u`` per *element*, independently for the observation (its shape) then the
  action (its shape), so ``x_hat`` is a random point of the box spanned by the pair, not on the segment.

Draws come from ``generator`` (an :class:`arrayrl.random.Generator`; a ``NoiseGenerator`` replays given draws): one
``uniform(batch_shape + (1,))`` (paper) or ``uniform(obs.shape)`` then ``uniform(action.shape)`` (TorchRL's order).

Outputs: ``loss`` and, with the penalty, ``gp_loss`` (its value, no gradient), TorchRL's keys. Labels and every
output follow ``D``'s dtype (TorchRL builds float32 labels, so its loss fails on a float64 discriminator).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .. import data as _data
from .._backend import device_of, namespace_of
from .._checks import check_floating
from .._validate import check_choice
from ..autodiff import grad, stop_gradient
from .common import LossModule

__all__ = ["GAILLoss", "gail_discriminator_loss", "gradient_penalty"]

_LOG_CLAMP = -100.0  # torch's binary_cross_entropy clamps its logs at -100


def gail_discriminator_loss(expert_prob: Any, collector_prob: Any) -> Any:
    """``-max(log p_e, -100) - max(log(1 - p_c), -100)`` elementwise (torch ``BCELoss`` with labels 1 and 0).

    Shapes equal (``[*B, 1]``); probabilities in ``[0, 1]``. Ho & Ermon 2016, eq. 17 (the discriminator's side)."""
    xp = namespace_of(expert_prob, collector_prob)
    if tuple(expert_prob.shape) != tuple(collector_prob.shape):
        raise ValueError(f"collector_prob: expected the expert's shape {tuple(expert_prob.shape)}, got "
                         f"{tuple(collector_prob.shape)}")
    return -xp.maximum(xp.log(expert_prob), _LOG_CLAMP) - xp.maximum(xp.log1p(-collector_prob), _LOG_CLAMP)


def gradient_penalty(gradients: Any, gp_lambda: float) -> Any:
    """``gp_lambda * mean((||g||_2 - 1)^2)`` with the norm over the last axis (Gulrajani et al. 2017, eq. 3)."""
    xp = namespace_of(gradients)
    n = xp.linalg.vector_norm(gradients, axis=-1)
    return gp_lambda * xp.mean((n - 1.0) ** 2)


class GAILLoss(LossModule):
    """GAIL discriminator loss (TorchRL ``GAILLoss``); see the module docstring.

    Args:
        discriminator_network: a keyed module reading the expert observation and action keys and writing the
            probability that the pair is an expert's at ``discriminator_pred`` (``[*B, 1]``).

    Keyword Args:
        use_grad_penalty: add the WGAN-GP gradient penalty (default ``False``).
        gp_lambda: its weight (default 10).
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"``.
        generator: the draws of the interpolation coefficient (module docstring); default ``Generator(0)`` of the
            data's namespace, created at the first draw; assign ``loss.generator`` to change it.
        torchrl_compat: draw the coefficient per element as TorchRL (module docstring); default per sample.

    Keys: ``expert_action="action"``, ``expert_observation="observation"``, ``collector_action="collector_action"``,
    ``collector_observation="collector_observation"``, ``discriminator_pred="d_logits"``. Outputs: ``loss`` (+
    ``gp_loss``). ``loss.params = {"discriminator_network": tree}``.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        expert_action: Any = "action"
        expert_observation: Any = "observation"
        collector_action: Any = "collector_action"
        collector_observation: Any = "collector_observation"
        discriminator_pred: Any = "d_logits"

    default_keys = _AcceptedKeys
    _OUT_KEYS = ("loss", "gp_loss")
    _POLICY_NETWORK = None

    def __init__(self, discriminator_network: Any, *, use_grad_penalty: bool = False, gp_lambda: float = 10,
                 reduction: str | None = None, generator: Any = None, torchrl_compat: bool = False) -> None:
        reduction = "mean" if reduction is None else reduction
        check_choice(reduction, "reduction", ("mean", "sum", "none"))
        if not hasattr(discriminator_network, "apply") or getattr(discriminator_network, "params", None) is None:
            raise TypeError(f"discriminator_network: expected an arrayrl keyed module with parameters, got "
                            f"{type(discriminator_network).__name__}")
        self.reduction = reduction
        super().__init__()
        self.use_grad_penalty = bool(use_grad_penalty)
        self.gp_lambda = gp_lambda
        self.generator = generator
        self.torchrl_compat = bool(torchrl_compat)
        self.convert_to_functional(discriminator_network, "discriminator_network")

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        keys = {_data.unravel_key(k) for k in self._networks["discriminator_network"].in_keys}
        keys |= {_data.unravel_key(k) for k in (tk.expert_observation, tk.expert_action, tk.collector_observation,
                                                  tk.collector_action)}
        return sorted(keys, key=str)

    def _all_out_keys(self) -> list:
        return ["loss", "gp_loss"] if self.use_grad_penalty else ["loss"]

    def _draws(self, like: Any) -> Any:
        if self.generator is None:
            from ..random import Generator

            self.generator = Generator(0, xp=namespace_of(like), device=device_of(like))
        return self.generator

    def _discriminate(self, params: Any, obs: Any, act: Any) -> Any:
        tk = self.tensor_keys
        d = self._networks["discriminator_network"]
        inp = _data.set_(_data.set_({}, tk.expert_observation, obs), tk.expert_action, act)
        return _data.get(d.apply(params, inp), tk.discriminator_pred, what="discriminator prediction")

    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        obs_e = stop_gradient(_data.get(batch, tk.expert_observation, what="expert observation"))
        act_e = stop_gradient(_data.get(batch, tk.expert_action, what="expert action"))
        obs_c = stop_gradient(_data.get(batch, tk.collector_observation, what="collector observation"))
        act_c = stop_gradient(_data.get(batch, tk.collector_action, what="collector action"))
        for x, name in ((obs_e, tk.expert_observation), (act_e, tk.expert_action),
                        (obs_c, tk.collector_observation), (act_c, tk.collector_action)):
            check_floating(x, _data.key_str(name))
        if tuple(obs_c.shape) != tuple(obs_e.shape) or tuple(act_c.shape) != tuple(act_e.shape):
            raise ValueError(
                f"collector data: expected the expert's shapes {tuple(obs_e.shape)} / {tuple(act_e.shape)}, got "
                f"{tuple(obs_c.shape)} / {tuple(act_c.shape)}")
        if obs_e.ndim < 2 or obs_e.ndim > 3 or act_e.ndim != obs_e.ndim:
            raise ValueError(f"observations/actions: expected [B, F] or [B, T, F] arrays, got {tuple(obs_e.shape)} "
                             f"and {tuple(act_e.shape)}")
        xp = namespace_of(obs_e, act_e, obs_c, act_c)
        bshape = tuple(obs_e.shape[:-1])
        n = bshape[0]
        pdisc = params["discriminator_network"]
        preds = self._discriminate(pdisc, xp.concat([obs_e, obs_c], axis=0), xp.concat([act_e, act_c], axis=0))
        if tuple(preds.shape) != (2 * n,) + bshape[1:] + (1,):
            raise ValueError(f"{_data.key_str(tk.discriminator_pred)}: expected probabilities of shape "
                             f"{(2 * n,) + bshape[1:] + (1,)}, got {tuple(preds.shape)}")
        loss = gail_discriminator_loss(preds[:n], preds[n:])
        out: dict = {}
        if self.use_grad_penalty:
            gen = self._draws(obs_e)
            dt = obs_e.dtype
            if self.torchrl_compat:
                u_o = gen.uniform(tuple(obs_e.shape), dtype=dt)
                u_a = gen.uniform(tuple(act_e.shape), dtype=act_e.dtype)
            else:
                u_o = u_a = gen.uniform(bshape + (1,), dtype=dt)
            obs_mix = u_o * obs_c + (1.0 - u_o) * obs_e
            act_mix = u_a * act_c + (1.0 - u_a) * act_e

            def d_sum(o: Any, a: Any) -> Any:
                p = self._discriminate(pdisc, o, a)
                return namespace_of(p).sum(p)

            g_o, g_a = grad(d_sum, argnums=(0, 1), create_graph=True)(obs_mix, act_mix)
            gp = gradient_penalty(namespace_of(g_o, g_a).concat([g_o, g_a], axis=-1), self.gp_lambda)
            loss = loss + gp
            out["gp_loss"] = stop_gradient(gp)
        out["loss"] = self._reduce_loss(loss, batch)
        return out
