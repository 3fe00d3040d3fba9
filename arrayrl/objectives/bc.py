"""Behaviour cloning: :class:`BCLoss` (TorchRL 0.14.1 ``torchrl.objectives.BCLoss``).

Supervised imitation of an expert's actions (Pomerleau 1989, "ALVINN"; Bain & Sammut 1995): the actor runs in
deterministic mode on the batch and its prediction at the ``action`` key is compared with the expert action stored
there (the batch itself is never modified). Per element, with ``p`` the prediction and ``e`` the expert action:

* ``"l1"``: ``|p - e|``; ``"l2"``/``"mse"``: ``(p - e)**2``; ``"smooth_l1"``: Huber with beta 1 (as
  ``torch.nn.functional``);
* ``"cross_entropy"``: ``-log_softmax(p)[e]`` with ``p`` logits ``[*B, C]`` and ``e`` class ids ``[*B]`` or
  ``[*B, 1]`` (or soft targets ``-sum_c e_c log_softmax(p)_c`` for a floating ``e`` of ``p``'s shape);
* a callable ``loss_function(p, e)`` returning the elementwise loss (written against the array API);
* ``None`` (TorchRL's auto mode): integer expert actions -> cross-entropy; an actor that writes ``loc``, ``scale``,
  ``logits`` or ``probs`` -> the negative log-likelihood ``-log pi(e|s)`` of its distribution; otherwise MSE.

``pad_mask`` (a key, ``True`` = padded) masks elements out of the reduction; trailing dimensions broadcast (a
``[*B, H]`` mask applies to a ``[*B, H, A]`` loss). ``loss_bc = reduce(loss)``.

Differences from TorchRL (documented): with a pad mask and ``reduction="none"`` arrayrl keeps the loss's shape with
zeros at padded elements (TorchRL returns the compacted 1-D tensor, a data-dependent shape). A wholly padded batch
gives 0 under ``"mean"``, as TorchRL's code does (its docstring says NaN). Cross-entropy takes the classes on the
last axis for any batch rank (torch's ``cross_entropy`` reads them on axis 1, which differs for batches of rank > 1).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping

from .. import data as _data
from .._backend import namespace_of
from .._checks import check_floating
from .._validate import check_choice
from ..ops import log_softmax
from . import functional as F
from .common import LossModule
from .utils import distance_loss, stop_gradient

__all__ = ["BCLoss", "bc_cross_entropy"]

LOSS_FUNCTIONS = ("l1", "l2", "mse", "smooth_l1", "cross_entropy")
_DIST_KEYS = (("loc",), ("scale",), ("logits",), ("probs",))


def bc_cross_entropy(logits: Any, target: Any, *, name: str = "action") -> Any:
    """``-log_softmax(logits)[target]`` ``[*B]`` for class ids ``[*B]``/``[*B, 1]``, or the soft-label
    ``-sum_c target_c log_softmax(logits)_c`` for a floating ``target`` of ``logits``' shape ``[*B, C]``."""
    check_floating(logits, "logits (the actor's prediction)")
    xp = namespace_of(logits, target)
    lsm = log_softmax(logits, axis=-1)
    if xp.isdtype(target.dtype, "real floating"):
        if tuple(target.shape) != tuple(logits.shape):
            raise ValueError(f"{name}: floating cross-entropy targets must have the prediction's shape "
                             f"{tuple(logits.shape)} (class probabilities), got {tuple(target.shape)}")
        return -xp.sum(stop_gradient(target) * lsm, axis=-1)
    idx = F.categorical_index(target, tuple(logits.shape[:-1]), logits.shape[-1], name, "the actor's logits")
    return -xp.squeeze(xp.take_along_axis(lsm, idx[..., None], axis=-1), axis=-1)


class BCLoss(LossModule):
    """Behaviour-cloning loss (TorchRL ``BCLoss``); see the module docstring.

    Args:
        actor_network: a keyed module writing its prediction at the ``action`` key (a deterministic network, a
            ``ProbabilisticActor`` -- run in deterministic mode -- or a network writing logits).

    Keyword Args:
        loss_function: ``None`` (auto), ``"l1"``, ``"l2"``, ``"mse"``, ``"smooth_l1"``, ``"cross_entropy"`` or a
            callable ``(prediction, expert) -> elementwise loss``.
        reduction: ``"mean"`` (default), ``"sum"``, ``"none"``.

    Keys: ``action`` (the expert action, and where the actor writes its prediction; an actor writing ``"action"``
    while the key is renamed still works with a ``FutureWarning``, one writing neither raises ``RuntimeError``),
    ``pad_mask`` (default ``None``). Output: ``loss_bc``. ``loss.params = {"actor_network": tree}``.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        pad_mask: Any = None

    default_keys = _AcceptedKeys
    _OUT_KEYS = ("loss_bc",)
    _POLICY_NETWORK = "actor_network"

    def __init__(self, actor_network: Any, *, loss_function: str | Callable | None = None,
                 reduction: str | None = None) -> None:
        reduction = "mean" if reduction is None else reduction
        check_choice(reduction, "reduction", ("mean", "sum", "none"))
        if loss_function is not None and not callable(loss_function):
            check_choice(loss_function, "loss_function", LOSS_FUNCTIONS)
        if not hasattr(actor_network, "apply") or getattr(actor_network, "params", None) is None:
            raise TypeError(f"actor_network: expected an arrayrl keyed module with parameters, got "
                            f"{type(actor_network).__name__}")
        self.reduction = reduction
        super().__init__()
        self.loss_function = loss_function
        self.convert_to_functional(actor_network, "actor_network")

    def _in_keys(self) -> list:
        tk = self.tensor_keys
        keys = [tk.action, *self._networks["actor_network"].in_keys]
        if tk.pad_mask is not None:
            keys.append(tk.pad_mask)
        return keys

    def _prediction(self, out: Mapping, expert: Any) -> Any:
        key = self.tensor_keys.action
        pred = _data.get_or(out, key, None)
        if pred is not None and pred is not expert:
            return pred
        legacy = _data.get_or(out, "action", None)
        if legacy is not None and legacy is not expert:
            warnings.warn(
                f"The actor wrote its prediction at 'action' while the loss's action key is {key!r}. Reading the "
                "prediction from the hardcoded 'action' key is deprecated (TorchRL removes it in v0.16): make the "
                "actor's out_keys match the loss's action key.", FutureWarning, stacklevel=4)
            return legacy
        raise RuntimeError(f"The actor did not write a prediction at {_data.key_str(key)!r}: make sure the actor's "
                           "out_keys match the loss's action key.")

    def _elementwise(self, fn: str, pred: Any, expert: Any) -> Any:
        name = _data.key_str(self.tensor_keys.action)
        if fn == "cross_entropy":
            return bc_cross_entropy(pred, expert, name=name)
        check_floating(pred, f"{name} (the actor's prediction)")
        if tuple(pred.shape) != tuple(expert.shape):
            raise ValueError(f"{name}: the expert action has shape {tuple(expert.shape)} but the actor's prediction "
                             f"has shape {tuple(pred.shape)}")
        xp = namespace_of(pred, expert)
        e = expert if expert.dtype == pred.dtype else xp.astype(expert, pred.dtype)
        return distance_loss(pred, stop_gradient(e), "l2" if fn == "mse" else fn)

    def _forward(self, batch: Mapping, params: dict) -> dict:
        tk = self.tensor_keys
        actor = self._networks["actor_network"]
        expert = _data.get(batch, tk.action, what="expert action")
        out = actor.apply(params["actor_network"], batch, interaction_type="deterministic")
        fn = self.loss_function
        xp = namespace_of(expert)
        if callable(fn):
            loss = fn(self._prediction(out, expert), expert)
            if not hasattr(loss, "shape"):
                raise TypeError(f"loss_function: the callable must return an array, got {type(loss).__name__}")
        elif fn is not None:
            loss = self._elementwise(fn, self._prediction(out, expert), expert)
        elif xp.isdtype(expert.dtype, "integral"):
            loss = self._elementwise("cross_entropy", self._prediction(out, expert), expert)
        elif any(k in [_data.unravel_key(o) for o in getattr(actor, "out_keys", [])] for k in _DIST_KEYS):
            if not hasattr(actor, "get_dist"):
                raise TypeError("actor_network: writes distribution parameters but has no get_dist(params, batch)")
            loss = -actor.get_dist(params["actor_network"], batch).log_prob(expert)
        else:
            loss = self._elementwise("l2", self._prediction(out, expert), expert)
        mask = None
        if tk.pad_mask is not None:
            pad = _data.get_or(batch, tk.pad_mask, None)
            if pad is not None:
                xm = namespace_of(pad)
                if pad.dtype != xm.bool:
                    raise TypeError(f"{_data.key_str(tk.pad_mask)}: expected a bool pad mask (True = padded), got "
                                    f"{pad.dtype}")
                mask = xm.logical_not(pad)
                if mask.ndim > loss.ndim:
                    raise RuntimeError(
                        f"pad_mask {_data.key_str(tk.pad_mask)!r} has more dimensions ({mask.ndim}) than the computed "
                        f"loss ({loss.ndim}): per-element masking requires an elementwise loss (e.g. "
                        "loss_function='l1'), not a distribution-based (NLL) or cross-entropy loss.")
        return {"loss_bc": self._reduce_loss(loss, batch, mask=mask)}
