"""Truncated Quantile Critics: :class:`TQCLoss` (TorchRL ``torchrl.objectives.TQCLoss``, 0.14.1; a SAC v2 subclass).

Paper: Kuznetsov, Shvechikov, Grishin & Vetrov 2020, "Controlling Overestimation Bias with Truncated Mixture of
Continuous Distributional Quantile Critics" (arXiv:2005.04269). ``N`` critics each output ``M`` quantiles
(``state_action_value [*B, M]``); ``k = top_quantiles_to_drop_per_net``. Draws: ``a' ~ pi(.|s')`` then
``a~ ~ pi(.|s)``::

    Z      = sort(pool_i Z_target_i(s', a'))[:N M - k N]                     (pooled over critics, ascending)
    y_j    = r + gamma (1 - terminated) (Z_j - alpha log pi(a'|s'))          [*B, K],  K = N M - k N
    delta  = y_j - Z_i(s, a)_m                                               [N, *B, M, K]
    rho    = huber_1(delta) |tau_m - 1(sg delta < 0)|,   tau_m = (m + 1/2) / M
    loss_qvalue = reduce(sum_i mean_{m, j} rho);   td_error = max_i mean_{m, j} |delta|
    loss_actor  = reduce(alpha log pi(a~|s) - mean_{i, m} Z_i(s, a~)_m)       (the untruncated mixture; critic
                                                                               parameters without gradient)
    loss_alpha  = reduce(-log(alpha) (sg log pi(a~|s) + H_target));  alpha, entropy as SAC

Kept as TorchRL (documented in /tmp/divergences_redq.md): the critic loss **sums** over critics (the authors' code
takes the mean over critics too: TorchRL's value is ``N`` times theirs); the temperature loss is in ``log alpha``;
``skip_done_states`` skips **terminated** next states (correct: unlike SAC's, it never skips truncations);
only TD(0) is supported.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import data as _data
from .._backend import namespace_of
from .._validate import check_number
from .dqn import _steps_key
from .sac import SACLoss, _sg_tree, _zero_where
from .utils import check_transition, step_mdp, stop_gradient

__all__ = ["TQCLoss", "quantile_huber_loss", "truncated_quantile_target"]


def truncated_quantile_target(next_quantiles: Any, next_log_prob: Any, alpha: Any, drop_per_net: int) -> Any:
    """``sort(pool_i Z_i)[:N M - k N] - alpha log pi``: ``[N, *B, M] -> [*B, K]`` (no gradient)."""
    z = stop_gradient(next_quantiles)
    xp = namespace_of(z)
    n, m = int(z.shape[0]), int(z.shape[-1])
    keep = n * m - drop_per_net * n
    if keep < 1:
        raise ValueError(f"top_quantiles_to_drop_per_net: must be smaller than the critic's number of quantiles "
                         f"({m}), got {drop_per_net}")
    pooled = xp.reshape(xp.moveaxis(z, 0, -2), tuple(z.shape[1:-1]) + (n * m,))
    kept = xp.sort(pooled, axis=-1)[..., :keep]
    lp = stop_gradient(next_log_prob)
    return kept - alpha * xp.expand_dims(lp, axis=-1)


def quantile_huber_loss(quantiles: Any, target: Any) -> tuple:
    """``(sum_i mean_{m, j} rho [*B], td_error = max_i mean_{m, j} |delta| [*B])`` for ``quantiles [N, *B, M]``
    (with tape) and ``target [*B, K]`` (no gradient); ``rho`` the quantile Huber loss (kappa = 1)."""
    xp = namespace_of(quantiles, target)
    y = stop_gradient(target)
    delta = xp.expand_dims(xp.expand_dims(y, axis=0), axis=-2) - xp.expand_dims(quantiles, axis=-1)
    ad = xp.abs(delta)
    huber = xp.where(ad <= 1.0, 0.5 * delta * delta, ad - 0.5)
    m = int(quantiles.shape[-1])
    sx = namespace_of(stop_gradient(delta))
    sd = stop_gradient(delta)
    tau = (sx.astype(sx.arange(m, device=_device(sd)), sd.dtype) + 0.5) / m
    tau = sx.reshape(tau, (1,) * (sd.ndim - 2) + (m, 1))
    w = sx.abs(tau - sx.astype(sd < 0, sd.dtype))
    loss = xp.sum(xp.mean(huber * w, axis=(-1, -2)), axis=0)
    td = sx.max(sx.mean(sx.abs(sd), axis=(-1, -2)), axis=0)
    return loss, td


def _device(x: Any) -> Any:
    from .._backend import device_of

    return device_of(x)


class TQCLoss(SACLoss):
    """The TQC loss; formulas in the module docstring.

    Args:
        actor_network: a probabilistic actor (``rsample_and_log_prob``).
        qvalue_network: a keyed critic writing ``M`` quantiles ``state_action_value [*B, M]``; or a list of
            ``num_qvalue_nets`` critics (stacked exactly); or an ``Ensemble`` critic.

    Keyword Args:
        num_qvalue_nets (5), top_quantiles_to_drop_per_net (2), alpha_init, min_alpha, max_alpha, action_spec,
        fixed_alpha, target_entropy, delay_qvalue (True), separate_losses, reduction, deactivate_vmap,
        skip_done_states (on terminated), use_prioritized_weights, scalar_output_mode: as TorchRL.
        generator, torchrl_compat: as :class:`~arrayrl.objectives.SACLoss` (compat only changes the ``"auto"``
            target entropy of batched specs).
    """

    SUPPORTED_VALUE_ESTIMATORS: tuple = ("td0",)  # the LossModule declaration (SACLoss's is a 3-tuple)

    def __init__(self, actor_network: Any, qvalue_network: Any, *, num_qvalue_nets: int = 5,
                 top_quantiles_to_drop_per_net: int = 2, alpha_init: float = 1.0, min_alpha: float | None = None,
                 max_alpha: float | None = None, action_spec: Any = None, fixed_alpha: bool = False,
                 target_entropy: Any = "auto", delay_qvalue: bool = True, gamma: float | None = None,
                 priority_key: Any = None, separate_losses: bool = False, reduction: str | None = None,
                 deactivate_vmap: bool = False, skip_done_states: bool = False, use_prioritized_weights: Any = "auto",
                 scalar_output_mode: str | None = None, generator: Any = None, torchrl_compat: bool = False) -> None:
        if isinstance(num_qvalue_nets, int) and not isinstance(num_qvalue_nets, bool) and num_qvalue_nets < 1:
            raise ValueError("num_qvalue_nets must be greater than zero.")
        self.top_quantiles_to_drop_per_net = check_number(top_quantiles_to_drop_per_net,
                                                          "top_quantiles_to_drop_per_net", low=0, integer=True)
        super().__init__(actor_network, qvalue_network, None, num_qvalue_nets=num_qvalue_nets,
                         loss_function="smooth_l1", alpha_init=alpha_init, min_alpha=min_alpha, max_alpha=max_alpha,
                         action_spec=action_spec, fixed_alpha=fixed_alpha, target_entropy=target_entropy,
                         delay_actor=False, delay_qvalue=delay_qvalue, gamma=gamma, priority_key=priority_key,
                         separate_losses=separate_losses, reduction=reduction, skip_done_states=skip_done_states,
                         deactivate_vmap=deactivate_vmap, use_prioritized_weights=use_prioritized_weights,
                         scalar_output_mode=scalar_output_mode, generator=generator, torchrl_compat=torchrl_compat)

    def _quantiles(self, q_params: Any, batch: Mapping, batch_shape: tuple, action: Any = None) -> Any:
        z = self._critics(q_params, batch, action)
        if z.ndim != len(batch_shape) + 2 or tuple(z.shape[1:-1]) != tuple(batch_shape):
            raise ValueError(f"{_data.key_str(self.tensor_keys.state_action_value)} (critic output): the TQC critic "
                             f"must output [*B, M] quantiles, i.e. [N, *{tuple(batch_shape)}, M] for the ensemble; "
                             f"got {tuple(z.shape)}")
        return z

    def _terminated_mask(self, batch: Mapping, batch_shape: tuple) -> Any:
        tk = self.tensor_keys
        key = tk.terminated if _data.has(batch, ("next",) + _data.unravel_key(tk.terminated)) else tk.done
        m = _data.get(batch, ("next",) + _data.unravel_key(key), what="terminated flag")
        if m.ndim == len(batch_shape) + 1 and m.shape[-1] == 1:
            m = namespace_of(m).squeeze(m, axis=-1)
        return m

    def _quantile_target(self, params: dict, batch: Mapping) -> tuple:
        """``(y [*B, K], alpha, batch_shape)`` (draw 1: ``a' ~ pi(.|s')``, online actor without gradient)."""
        tk = self.tensor_keys
        actor = self._networks["actor_network"]
        nxt = step_mdp(batch, actor.in_keys)
        dist = self._dist(_sg_tree(params["actor_network"]), nxt)
        action, log_prob = self._rsample(dist)
        action, log_prob = stop_gradient(action), stop_gradient(log_prob)
        batch_shape = tuple(log_prob.shape)
        alpha = self._alpha(params, log_prob)
        z = self._quantiles(self._target_tree("qvalue_network"), nxt, batch_shape, action)
        next_value = truncated_quantile_target(z, log_prob, alpha, self.top_quantiles_to_drop_per_net)
        if self.skip_done_states:
            next_value = _zero_where(self._terminated_mask(batch, batch_shape), next_value)
        steps_key = _steps_key(self.value_estimator)
        check_transition(batch, tk, batch_shape, steps_key=steps_key,
                         weight_key=tk.priority_weight if self.use_prioritized_weights in (True, "auto") else None)
        # TD(0) per retained atom: reward, terminated (and done, steps) expanded to [*B, K] as TorchRL does
        xp = namespace_of(next_value)
        shape = tuple(next_value.shape)
        tb: dict = {}
        for key in (tk.reward, tk.terminated, tk.done):
            full = ("next",) + _data.unravel_key(key)
            if _data.has(batch, full):
                v = _data.get(batch, full)
                v = namespace_of(v).reshape(v, batch_shape + (1,))
                _data.set_(tb, full, namespace_of(v).broadcast_to(v, shape))
        if _data.has(batch, steps_key):
            s = _data.get(batch, steps_key)
            s = namespace_of(s).reshape(s, batch_shape + (1,))
            _data.set_(tb, steps_key, namespace_of(s).broadcast_to(s, shape))
        y = self.value_estimator.value_estimate(tb, next_value=stop_gradient(next_value))
        return stop_gradient(y), alpha, batch_shape, xp

    def _forward(self, batch: Mapping, params: dict) -> dict:
        weights = self._weights(batch)
        dist = self._dist(params["actor_network"], batch)
        self._check_data_action(batch, dist)
        target, alpha, batch_shape, _ = self._quantile_target(params, batch)
        z = self._quantiles(params["qvalue_network"], batch, batch_shape)
        per, td_error = quantile_huber_loss(z, target)
        loss_qvalue = self._reduce_loss(per, batch, weights=weights)
        # actor: the untruncated mixture mean at a~ ~ pi(.|s)
        action, log_prob = self._rsample(dist)
        za = self._quantiles(_sg_tree(params["qvalue_network"]), batch, batch_shape, action)
        xp = namespace_of(za, log_prob)
        q = xp.mean(xp.mean(za, axis=-1), axis=0)
        loss_actor = self._reduce_loss(alpha * log_prob - q, batch, weights=weights)
        self._resolve_target_entropy(dist)
        loss_alpha = self._reduce_loss(self._alpha_loss(params, log_prob), batch, weights=weights)
        entropy = -namespace_of(stop_gradient(log_prob)).mean(stop_gradient(log_prob))
        self._write_priority(batch, td_error)
        out = {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, "loss_alpha": loss_alpha}
        return self._scalars(out, alpha, entropy)
