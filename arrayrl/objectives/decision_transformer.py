"""Decision Transformer losses: :class:`DTLoss` and :class:`OnlineDTLoss` (TorchRL 0.14.1
``torchrl.objectives.DTLoss`` / ``OnlineDTLoss``).

Papers: Chen et al. 2021, "Decision Transformer: Reinforcement Learning via Sequence Modeling" (arXiv:2106.01345);
Zheng, Zhang & Grover 2022, "Online Decision Transformer" (arXiv:2202.05607). The transformer is not part of the
loss: ``actor_network`` is any keyed module producing the action (DT) or the distribution parameters (ODT) from a
``[*B, T, F]`` batch (a transformer, or a small MLP in the tests).

**DTLoss** (deterministic actor, no draws), elementwise over ``[*B, T, A]``::

    loss = reduce(dist(actor(batch)[action_pred], sg(batch[action_target])))        (dist: l2 without 1/2, l1, smooth_l1)

**OnlineDTLoss** (stochastic actor, ``pi = actor.get_dist(batch)``, ``S = samples_mc_entropy`` draws
``x_k ~ pi`` by rsample from :attr:`generator`, ``alpha = exp(log alpha)``)::

    H                   = -mean_k log pi(x_k)                    [*B, T]   (TanhNormal: scored on the pre-tanh draw)
    loss_log_likelihood = reduce(-log pi(a_target))
    loss_entropy        = reduce(-sg(alpha) H)
    loss_alpha          = reduce(alpha sg(H - H_target))          (gradient only to log alpha)
    entropy = mean H (no gradient),  alpha

The temperature is :class:`~arrayrl.objectives.actor_critic.EntropyTemperature` (the SAC family's block:
``alpha_init``, ``min_alpha``/``max_alpha`` with TorchRL's clamping, ``fixed_alpha``); ``target_entropy="auto"``
is ``-dim(A)`` from ``action_spec`` (else the actor's ``spec``; else the distribution's event shape).

**Padding (docs/divergences.md, "DT/OnlineDT attention mask").** Trajectory segments shorter than the context are
padded; the reference implementations (kzl/decision-transformer, facebookresearch/online-dt) score only the
positions where ``attention_mask > 0``. TorchRL 0.14.1 has no such key: padded positions enter every mean unless a
loss mask (``("collector", "mask")``/``"shifted_valid"``, :attr:`loss_mask_key`) is in the batch. arrayrl reads the
``attention_mask`` key (renamed with ``set_keys(attention_mask=...)``; absent from the batch = no padding):
``[*B, T]`` (or ``[*B, T, 1]``), bool or numeric (on where ``> 0``), broadcast over the action dimensions. Every
``loss_*`` term and the ``entropy`` output are averaged over the valid positions only; ``reduction="none"`` keeps
the shape with zeros at padded positions. ``torchrl_compat=True`` ignores the attention mask (TorchRL's numbers); the
loss masks of :attr:`loss_mask_key` are honoured in both modes, except that in compat mode, as TorchRL,
``reduction="none"`` applies no mask at all and ``entropy`` is the plain mean.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Mapping

from .. import data as _data
from .._backend import device_of, namespace_of
from .._checks import check_floating
from .._validate import check_choice, check_number
from .actor_critic import EntropyTemperature, TemperatureAttributes, _numel, auto_target_entropy
from .common import LossModule
from .utils import distance_loss, expand_mask, stop_gradient

__all__ = ["DTLoss", "OnlineDTLoss", "attention_valid_mask"]

_REDUCTIONS = ("mean", "sum", "none")


def attention_valid_mask(mask: Any, loss: Any, name: str = "attention_mask") -> Any:
    """The validity mask ``[*loss.shape]`` (bool) of an attention/padding mask: on where ``mask > 0`` (a bool mask
    as is); trailing singletons dropped, broadcast over trailing loss dimensions (the action's)."""
    xp = namespace_of(mask)
    if xp.isdtype(mask.dtype, "bool"):
        m = mask
    elif xp.isdtype(mask.dtype, ("integral", "real floating")):
        m = mask > 0
    else:
        raise TypeError(f"{name}: expected a bool or numeric mask (on where > 0), got {mask.dtype}")
    return expand_mask(m, loss, name)


class _DTBase(LossModule):
    """Keys, the attention mask and the reductions shared by DTLoss and OnlineDTLoss."""

    @dataclasses.dataclass
    class _AcceptedKeys:
        """``action_target`` (the dataset's action), ``action_pred`` (where the actor writes its prediction; used for
        the spec in ODT), ``attention_mask`` (arrayrl: the padding mask, on where ``> 0``)."""

        action_target: Any = "action"
        action_pred: Any = "action"
        attention_mask: Any = "attention_mask"

    default_keys = _AcceptedKeys
    _POLICY_NETWORK = "actor_network"

    def _check_actor(self, actor_network: Any, need_dist: bool) -> None:
        if getattr(actor_network, "params", None) is None or not hasattr(actor_network, "apply"):
            raise TypeError(f"actor_network: expected an arrayrl keyed module with parameters, got "
                            f"{type(actor_network).__name__}")
        if need_dist and not hasattr(actor_network, "get_dist"):
            raise TypeError(f"actor_network: expected a probabilistic actor with get_dist(params, batch), got "
                            f"{type(actor_network).__name__}")

    def _target_action(self, batch: Mapping) -> Any:
        a = _data.get(batch, self.tensor_keys.action_target, what="target action")
        check_floating(a, _data.key_str(self.tensor_keys.action_target))
        return a

    def _padding_mask(self, batch: Mapping, loss: Any) -> Any:
        """The valid positions from ``attention_mask`` (paper mode only), or ``None``."""
        key = self.tensor_keys.attention_mask
        if self.torchrl_compat or key is None:
            return None
        m = _data.get_or(batch, key, None)
        if m is None:
            return None
        return attention_valid_mask(stop_gradient(m), loss, _data.key_str(key))

    def _reduce(self, loss: Any, batch: Mapping, pad: Any) -> Any:
        if self.torchrl_compat and self.reduction == "none" and self._NO_MASK_IN_NONE:
            return loss
        return self._reduce_loss(loss, batch, mask=pad)

    _NO_MASK_IN_NONE = False

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        keys = [*self._networks["actor_network"].in_keys, tk.action_target]
        if self._READS_PRED_KEY:
            keys.append(tk.action_pred)
        if tk.attention_mask is not None and not self.torchrl_compat:
            keys.append(tk.attention_mask)
        return sorted(keys, key=str)

    _READS_PRED_KEY = True


class DTLoss(_DTBase):
    """The Decision Transformer loss (TorchRL ``DTLoss``); see the module docstring.

    Args:
        actor_network: a keyed module (deterministic) writing the predicted action at ``action_pred`` from the
            batch; a probabilistic actor runs in deterministic mode.

    Keyword Args:
        loss_function: ``"l2"`` (default; no 1/2), ``"l1"``, ``"smooth_l1"``.
        reduction: ``"mean"`` (default; over every element ``B * T * A``), ``"sum"``, ``"none"`` (``[*B, T, A]``).
        device: accepted for TorchRL compatibility (ignored: arrays keep their device).
        torchrl_compat: ignore the ``attention_mask`` (TorchRL 0.14.1).

    Output: ``loss``. ``loss.params = {"actor_network": tree}``.
    """

    _OUT_KEYS = ("loss",)

    def __init__(self, actor_network: Any, *, loss_function: str = "l2", reduction: str | None = None,
                 device: Any = None, torchrl_compat: bool = False) -> None:
        reduction = "mean" if reduction is None else reduction
        check_choice(reduction, "reduction", _REDUCTIONS)
        check_choice(loss_function, "loss_function", ("l2", "l1", "smooth_l1"))
        self._check_actor(actor_network, need_dist=False)
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.torchrl_compat = bool(torchrl_compat)
        self.convert_to_functional(actor_network, "actor_network")

    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        target = stop_gradient(self._target_action(batch))
        out = self._networks["actor_network"].apply(params["actor_network"], batch, interaction_type="deterministic")
        pred = _data.get(out, tk.action_pred, what="predicted action (the actor's output)")
        check_floating(pred, f"{_data.key_str(tk.action_pred)} (the actor's prediction)")
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"{_data.key_str(tk.action_target)}: the target action has shape {tuple(target.shape)} "
                             f"but the actor's prediction has shape {tuple(pred.shape)}")
        if target.dtype != pred.dtype:
            target = namespace_of(target).astype(target, pred.dtype)
        loss = distance_loss(pred, target, self.loss_function)
        return {"loss": self._reduce(loss, batch, self._padding_mask(batch, loss))}


class OnlineDTLoss(TemperatureAttributes, _DTBase):
    """The Online Decision Transformer loss (TorchRL ``OnlineDTLoss``); see the module docstring.

    Args:
        actor_network: a probabilistic actor (``arrayrl.nn.ProbabilisticActor``) whose distribution has
            ``log_prob`` and ``rsample_and_log_prob`` (``TanhNormal``, ``IndependentNormal``...).

    Keyword Args:
        alpha_init (1.0), min_alpha, max_alpha, fixed_alpha (False): the temperature
            (:class:`~arrayrl.objectives.actor_critic.EntropyTemperature`).
        target_entropy: ``"auto"`` (``-dim(A)``) or a number.
        samples_mc_entropy: ``S``, the number of draws of the entropy estimate (default 1).
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"`` (``[*B, T]`` terms).
        scalar_output_mode: with ``reduction="none"``, ``"exclude"`` (default, warns if not given) drops ``alpha``
            and ``entropy``; ``"non_tensor"`` keeps them.
        action_spec: arrayrl: the action spec for ``target_entropy="auto"`` (default: ``actor_network.spec``).
        generator: an :class:`arrayrl.random.Generator` (or ``Generator.from_noise(eps)`` replaying the
            ``[S, *B, T, A]`` standard-normal draws); default ``Generator(0)`` of the actor's namespace.
        torchrl_compat: ignore the ``attention_mask``; count every dimension of a batched action spec (TorchRL).

    Outputs: ``loss_log_likelihood``, ``loss_entropy``, ``loss_alpha``, ``alpha``, ``entropy``.
    ``loss.params = {"actor_network": tree, "log_alpha": 0-d}`` (no ``log_alpha`` with ``fixed_alpha``).
    """

    _OUT_KEYS = ("loss_log_likelihood", "loss_entropy", "loss_alpha", "alpha", "entropy")
    _SCALAR_OUTPUTS = ("alpha", "entropy")
    _NO_MASK_IN_NONE = True
    _READS_PRED_KEY = False

    def __init__(self, actor_network: Any, *, alpha_init: float = 1.0, min_alpha: float | None = None,
                 max_alpha: float | None = None, fixed_alpha: bool = False, target_entropy: Any = "auto",
                 samples_mc_entropy: int = 1, reduction: str | None = None, scalar_output_mode: str | None = None,
                 action_spec: Any = None, generator: Any = None, torchrl_compat: bool = False) -> None:
        reduction = "mean" if reduction is None else reduction
        check_choice(reduction, "reduction", _REDUCTIONS)
        if scalar_output_mode is not None:
            check_choice(scalar_output_mode, "scalar_output_mode", ("exclude", "non_tensor"))
        if target_entropy != "auto":
            check_number(target_entropy, "target_entropy")
        self.samples_mc_entropy = check_number(samples_mc_entropy, "samples_mc_entropy", low=1, integer=True)
        self._check_actor(actor_network, need_dist=True)
        self.reduction = reduction
        super().__init__()
        self.torchrl_compat = bool(torchrl_compat)
        self.generator = generator
        self.convert_to_functional(actor_network, "actor_network")
        self._temperature = EntropyTemperature(alpha_init, min_alpha, max_alpha, fixed_alpha)
        leaves = _leaves(self.params["actor_network"])
        if not leaves:
            raise ValueError("actor_network: has no parameters to take the namespace/dtype of log_alpha from")
        self._temp.register(self, leaves[0])
        self._target_entropy_arg = target_entropy
        self._target_entropy_from_event: float | None = None
        self._action_spec = action_spec
        if reduction == "none" and scalar_output_mode is None:
            warnings.warn(
                "OnlineDTLoss with reduction='none' cannot include scalar values (alpha, entropy) in its outputs; "
                "they are excluded. Pass scalar_output_mode='exclude' to silence this or 'non_tensor' to keep them.",
                UserWarning, stacklevel=2)
            scalar_output_mode = "exclude"
        self.scalar_output_mode = scalar_output_mode

    # ---------------------------------------------------------------------------------------- temperature
    @property
    def alpha(self) -> Any:
        """``exp(log alpha)`` (clamped to the bounds), no gradient."""
        la = self._temp.log_alpha({} if self.fixed_alpha else self._params)
        if isinstance(la, float):
            return math.exp(la)
        xp = namespace_of(la)
        return xp.asarray(xp.exp(la))

    @property
    def target_entropy(self) -> float:
        """``H_target``: the number given, or ``"auto"``: ``-dim(A)`` from ``action_spec`` (else the actor's ``spec``;
        else the distribution's event shape, resolved at the first call; TorchRL raises without a spec)."""
        te = self._target_entropy_arg
        if te != "auto":
            return float(te)
        spec = self._action_spec if self._action_spec is not None else getattr(self._networks["actor_network"],
                                                                               "spec", None)
        if spec is None:
            if self._target_entropy_from_event is not None and not self.torchrl_compat:
                return self._target_entropy_from_event
            raise RuntimeError(
                "Cannot infer the dimensionality of the action. Consider providing the target entropy explicitly "
                "or provide the spec of the action tensor in the actor network (action_spec=...)."
            )
        from .sac import _spec_leaf

        leaf, container = _spec_leaf(spec, self.tensor_keys.action_pred)
        return auto_target_entropy(leaf, container_shape=container, torchrl_compat=self.torchrl_compat)

    def _draws(self, like: Any) -> Any:
        if self.generator is None:
            from ..random import Generator

            raw = stop_gradient(like)
            self.generator = Generator(0, xp=namespace_of(raw), device=device_of(raw))
        return self.generator

    # ---------------------------------------------------------------------------------------- calling
    def forward(self, batch: Mapping) -> dict:
        self._temp.project(self)
        return super().forward(batch)

    def value_and_grad(self, batch: Mapping | None = None, /, *, terms: Any = None, **kwargs: Any) -> tuple:
        self._temp.project(self)
        return super().value_and_grad(batch, terms=terms, **kwargs)

    def _all_out_keys(self) -> list:
        keys = list(self._OUT_KEYS)
        if self.reduction == "none" and self.scalar_output_mode != "non_tensor":
            keys = [k for k in keys if k not in self._SCALAR_OUTPUTS]
        return keys

    def _forward(self, batch: Mapping, params: dict) -> dict:
        target = self._target_action(batch)
        if getattr(target, "requires_grad", False):
            raise RuntimeError(f"{_data.key_str(self.tensor_keys.action_target)}: target action cannot be part of a "
                               "graph.")
        dist = self._networks["actor_network"].get_dist(params["actor_network"], batch)
        if not getattr(dist, "has_rsample", False):
            raise TypeError(f"actor_network: the policy's {type(dist).__name__} has no reparameterised sampler "
                            "(needed by the Monte-Carlo entropy)")
        if self._target_entropy_arg == "auto" and self._target_entropy_from_event is None:
            self._target_entropy_from_event = -float(_numel(tuple(getattr(dist, "event_shape", ()))))
        log_likelihood = dist.log_prob(target)
        like = getattr(dist, "loc", None)
        _, log_p = dist.rsample_and_log_prob(self._draws(log_likelihood if like is None else like),
                                             (self.samples_mc_entropy,))
        xp = namespace_of(log_likelihood, log_p)
        entropy = -xp.mean(log_p, axis=0)  # [*B, T]
        temp = self._temp
        log_alpha = temp.log_alpha(params)
        alpha = temp.alpha(params, entropy)
        te = self.target_entropy
        if isinstance(log_alpha, float):
            alpha_t = xp.asarray(math.exp(log_alpha), dtype=entropy.dtype, device=device_of(stop_gradient(entropy)))
        else:
            alpha_t = namespace_of(log_alpha).exp(log_alpha)
        h = stop_gradient(entropy)
        xh = namespace_of(h)
        loss_alpha = namespace_of(alpha_t, h).multiply(alpha_t, h - te)
        pad = self._padding_mask(batch, log_likelihood)
        out = {
            "loss_log_likelihood": self._reduce(-log_likelihood, batch, pad),
            "loss_entropy": self._reduce(-namespace_of(alpha, entropy).multiply(alpha, entropy), batch, pad),
            "loss_alpha": self._reduce(loss_alpha, batch, pad),
        }
        if self.reduction != "none" or self.scalar_output_mode == "non_tensor":
            if self.torchrl_compat:
                out["entropy"] = xh.mean(h)
            else:
                out["entropy"] = self._reduce_loss(h, batch, mask=pad, reduction="mean")
            out["alpha"] = alpha
        return out


def _leaves(tree: Any) -> list:
    from ..tree import tree_leaves

    return tree_leaves(tree)
