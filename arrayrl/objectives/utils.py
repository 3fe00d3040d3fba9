"""Helpers shared by every loss: distances, masked/weighted reductions, target-network updaters.

Mirrors ``torchrl.objectives.utils`` (TorchRL 0.14.1):

* :func:`distance_loss` -- elementwise ``l1``/``l2``/``smooth_l1`` (``l2`` has **no** 1/2, ``smooth_l1`` is Huber
  with ``beta=1``), shapes must match unless ``strict_shape=False``.
* :func:`reduce_loss` -- TorchRL's ``_reduce``/``_reduce_loss``: ``"mean"``/``"sum"``/``"none"`` with an optional
  boolean mask (masked positions are selected out with ``where``, never multiplied, so NaN there cannot leak) and
  optional prioritized-replay weights (``mean = sum(l*w*m)/sum(w*m)``).
* :class:`SoftUpdate` (Polyak, ``theta_t <- (1-tau) theta_t + tau theta``) and :class:`HardUpdate` (copies every
  ``interval + 1`` calls, TorchRL's counting) acting on a :class:`~arrayrl.objectives.LossModule`'s target trees.
* :func:`hold_out_net`, :func:`hold_out_params`, :func:`next_state_value`.
* :class:`ValueEstimators` and :func:`default_value_kwargs`, re-exported from :mod:`arrayrl.value`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any, Callable

from .._backend import is_taped, namespace_of
from .._checks import check_array
from .._validate import batch_entry, check_choice, check_flag, check_number
from .. import data as _data
from ..autodiff import stop_gradient as _tree_stop_gradient
from ..ops import smooth_l1
from ..tree import tree_map

__all__ = [
    "distance_loss",
    "reduce_loss",
    "expand_mask",
    "SoftUpdate",
    "HardUpdate",
    "TargetNetUpdater",
    "hold_out_net",
    "hold_out_params",
    "next_state_value",
    "step_mdp",
    "check_transition",
    "check_next_value",
    "stop_gradient",
    "check_loss_args",
    "ValueEstimators",
    "default_value_kwargs",
]

_REDUCTIONS = ("mean", "sum", "none")
_MISSING = object()
_DISTANCES = ("l1", "l2", "smooth_l1")

_GAMMA_ERROR = (
    "Passing gamma / lmbda to the loss constructor is not supported (as in TorchRL); use "
    "loss.make_value_estimator(value_type, gamma=...)."
)
_PRIORITY_KEY_ERROR = "Setting 'priority' via the constructor is deprecated, use .set_keys(priority='some_key') instead."


def check_loss_args(loss_function: str | None, reduction: str | None, use_prioritized_weights: Any = "auto", *,
                    gamma: Any = None, priority_key: Any = None, **flags: Any) -> tuple[Any, str]:
    """Validate the constructor arguments every value loss shares, in this order: ``gamma`` and ``priority_key``
    (``TypeError``: TorchRL's deprecated constructor arguments, ``None`` for a loss without them), ``reduction``
    (``None`` -> ``"mean"``), ``loss_function`` (``None``: the loss has no distance), ``use_prioritized_weights`` and
    the boolean ``flags`` (``delay_value=...``), each error naming the argument. Returns
    ``(loss_function, reduction)``."""
    if gamma is not None:
        raise TypeError(_GAMMA_ERROR)
    if priority_key is not None:
        raise TypeError(_PRIORITY_KEY_ERROR)
    reduction = "mean" if reduction is None else reduction
    check_choice(reduction, "reduction", _REDUCTIONS)
    if loss_function is not None:
        check_choice(loss_function, "loss_function", _DISTANCES)
    check_choice(use_prioritized_weights, "use_prioritized_weights", ("auto", True, False))
    for name, value in flags.items():
        check_flag(value, name)
    return loss_function, reduction


def _steps_key(estimator: Any) -> Any:
    """The n-step key the value estimator reads (``steps_to_next_obs`` by default)."""
    return getattr(getattr(estimator, "tensor_keys", None), "steps_to_next_obs", "steps_to_next_obs")


def __getattr__(name: str) -> Any:  # re-exports resolved lazily (arrayrl.value sits in a sibling layer)
    if name in ("ValueEstimators", "default_value_kwargs"):
        from .. import value as _value

        return getattr(_value, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def stop_gradient(x: Any) -> Any:
    """``x`` with no tape: the raw backend array for a taped one, ``x`` itself for a raw one, and for a pytree
    (``dict``/``list``/``tuple``, e.g. ``loss.params = tree``) the tree itself when no leaf is taped (the same
    object: the networks' check-once-per-tree fast path keys on it), else a copy with every taped leaf replaced
    (:func:`arrayrl.autodiff.stop_gradient`)."""
    if is_taped(x):
        return x.value
    if type(x) in (dict, list, tuple) and _has_taped_leaf(x):
        return _tree_stop_gradient(x)
    return x


def _has_taped_leaf(tree: Any) -> bool:
    if type(tree) is dict:
        return any(_has_taped_leaf(v) for v in tree.values())
    if type(tree) in (list, tuple):
        return any(_has_taped_leaf(v) for v in tree)
    return is_taped(tree)


def distance_loss(v1: Any, v2: Any, loss_function: str, strict_shape: bool = True) -> Any:
    """Elementwise distance between ``v1`` and ``v2`` (no reduction).

    ``"l2"``: ``(v1 - v2)**2`` (no 1/2, as ``torch.nn.functional.mse_loss``); ``"l1"``: ``|v1 - v2|``;
    ``"smooth_l1"``: Huber with ``beta = 1``: ``0.5 d**2`` if ``|d| < 1`` else ``|d| - 0.5``.

    Args:
        v1, v2: arrays of the same shape (any backend, raw or taped).
        loss_function: ``"l1"``, ``"l2"`` or ``"smooth_l1"``.
        strict_shape: if ``False``, ``v1`` and ``v2`` broadcast (TorchRL's escape hatch).

    Raises:
        ValueError: unequal shapes with ``strict_shape=True``; an unknown ``loss_function``.
    """
    check_array(v1, "v1")
    check_array(v2, "v2")
    if strict_shape and tuple(v1.shape) != tuple(v2.shape):
        raise ValueError(f"v2: expected shape {tuple(v1.shape)} (the shape of v1), got {tuple(v2.shape)}")
    if loss_function not in _DISTANCES:
        raise ValueError(f"loss_function: expected one of {_DISTANCES}, got {loss_function!r}")
    xp = namespace_of(v1, v2)
    d = v1 - v2
    if loss_function == "l2":
        return d * d
    if loss_function == "l1":
        return xp.abs(d)
    return smooth_l1(d)


def expand_mask(mask: Any, loss: Any, name: str = "mask") -> Any:
    """Bring a validity mask (or a weight array) to ``loss``'s shape, as TorchRL's ``_expand_loss_mask``.

    Trailing singleton dims are dropped while the mask has more dims than the loss (``[B, T, 1]`` masks a ``[B, T]``
    loss); a mask with fewer dims gets trailing singleton dims and is broadcast (``[B]`` masks ``[B, N]``).
    """
    xp = namespace_of(mask)
    while mask.ndim > loss.ndim and mask.shape[-1] == 1:
        mask = xp.squeeze(mask, axis=-1)
    if mask.ndim > loss.ndim:
        raise ValueError(
            f"{name}: a mask of shape {tuple(mask.shape)} cannot be applied to a loss of shape {tuple(loss.shape)} "
            "(more non-singleton dimensions than the loss)"
        )
    if mask.ndim < loss.ndim:
        mask = xp.reshape(mask, tuple(mask.shape) + (1,) * (loss.ndim - mask.ndim))
    for m, s in zip(mask.shape, loss.shape):
        if m != s and m != 1:
            raise ValueError(f"{name}: shape {tuple(mask.shape)} does not broadcast to the loss shape {tuple(loss.shape)}")
    if tuple(mask.shape) != tuple(loss.shape):
        mask = xp.broadcast_to(mask, tuple(loss.shape))
    return mask


def reduce_loss(loss: Any, reduction: str = "mean", *, mask: Any = None, weights: Any = None) -> Any:
    """Reduce an elementwise loss as TorchRL's ``LossModule._reduce_loss`` / ``utils._reduce``.

    * ``mean``: ``sum(l * m) / max(sum(m), 1)``; with weights ``sum(l * w * m) / sum(w * m)``.
    * ``sum``: ``sum(l * w * m)``.
    * ``none``: ``where(m, l, 0) * w``, same shape as ``loss``.

    ``m`` is selected with ``where`` (masked positions may hold NaN/inf). The mask is expanded with
    :func:`expand_mask`; weights must have the loss's shape unless a mask is given (then they are expanded too).

    Divergence: TorchRL compacts ``loss[mask]`` for ``reduction="none"`` with a caller-supplied mask (a
    data-dependent shape); arrayrl keeps the shape and writes zeros at masked positions (docs/divergences.md).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    xp = namespace_of(loss, mask, weights)
    if mask is not None:
        mask = expand_mask(mask, loss)
        loss = xp.where(mask, loss, xp.zeros_like(loss))
        if weights is not None and tuple(weights.shape) != tuple(loss.shape):
            weights = expand_mask(weights, loss, "weights")
    elif weights is not None and tuple(weights.shape) != tuple(loss.shape):
        raise ValueError(f"weights: expected shape {tuple(loss.shape)} (the shape of the loss), got {tuple(weights.shape)}")
    if weights is not None:
        weights = xp.astype(weights, loss.dtype) if weights.dtype != loss.dtype else weights
        if mask is not None:
            weights = xp.where(mask, weights, xp.zeros_like(weights))
        if reduction == "none":
            return loss * weights
        total = xp.sum(loss * weights)
        return total if reduction == "sum" else total / xp.sum(weights)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return xp.sum(loss)
    if mask is None:
        return xp.mean(loss)
    count = xp.sum(xp.astype(mask, loss.dtype))
    return xp.sum(loss) / xp.clip(count, min=1.0)


# --------------------------------------------------------------------------------------------- target updaters
class TargetNetUpdater:
    """Base of :class:`SoftUpdate`/:class:`HardUpdate`.

    Works on ``loss.delayed_targets`` (the names of the networks that have their own target tree, i.e. a
    ``delay_*=True`` flag). ``init_()`` (run by the constructor, as in TorchRL) copies each source tree into its
    target. A loss with no delayed target raises ``RuntimeError`` (TorchRL: "the target and source data are
    identical for all params").
    """

    def __init__(self, loss_module: Any):
        from .common import LossModule

        if not isinstance(loss_module, LossModule):
            raise TypeError(f"loss_module: expected an arrayrl LossModule, got {type(loss_module).__name__}")
        self.loss_module = loss_module
        self._names = tuple(loss_module.delayed_targets)
        if not self._names:
            raise RuntimeError(
                f"{type(loss_module).__name__} has no delayed target parameters (all delay_* flags are False, or the "
                f"loss has no target network); a {type(self).__name__} has nothing to update"
            )
        self.initialized = False
        self.init_()

    def init_(self) -> None:
        if self.initialized:
            warnings.warn("Updater already initialized.", stacklevel=2)
        for name in self._names:
            self.loss_module._set_target(name, self.loss_module.params[name])
        self.initialized = True

    def step(self) -> None:
        if not self.initialized:
            raise RuntimeError(f"{type(self).__name__} must be initialized (init_()) before step()")
        for name in self._names:
            new = self._step(self.loss_module.params[name], self.loss_module.target_params[name])
            if new is not None:
                self.loss_module._set_target(name, new)

    def _step(self, source: Any, target: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict:
        state = {"initialized": self.initialized}
        if hasattr(self, "counter"):
            state["counter"] = self.counter
        return state

    def load_state_dict(self, state: Mapping) -> None:
        self.initialized = state.get("initialized", self.initialized)
        if "counter" in state and hasattr(self, "counter"):
            self.counter = state["counter"]


def _lerp(target: Any, source: Any, weight: float) -> Any:
    return target + weight * (stop_gradient(source) - target)


class SoftUpdate(TargetNetUpdater):
    """Polyak averaging (DDPG, arXiv:1509.02971): ``theta_t <- eps * theta_t + (1 - eps) * theta``.

    Exactly one of ``eps`` and ``tau = 1 - eps`` must be given; ``tau`` must lie in ``(0, 1]``, i.e. ``eps`` in
    ``[0, 1)`` (``eps = 1`` would freeze the targets forever; a warning below 0.5, as TorchRL). Each :meth:`step`
    replaces the loss's target trees by new arrays (the old ones are not mutated).
    """

    def __init__(self, loss_module: Any, *, eps: float | None = None, tau: float | None = None):
        if eps is None and tau is None:
            raise ValueError("SoftUpdate: give one of eps or tau")
        if eps is not None and tau is not None:
            raise ValueError("SoftUpdate: give only one of eps and tau")
        if eps is None:
            eps = 1.0 - check_number(tau, "tau", low=0.0, high=1.0, low_open=True)
        else:
            check_number(eps, "eps", low=0.0, high=1.0, high_open=True)
        if eps < 0.5:
            warnings.warn("Found an eps value < 0.5, which is unexpected. You may want to use tau instead.", stacklevel=2)
        self.eps = float(eps)
        super().__init__(loss_module)

    def _step(self, source: Any, target: Any) -> Any:
        w = 1.0 - self.eps
        return tree_map(lambda t, s: _lerp(t, s, w), target, source)


class HardUpdate(TargetNetUpdater):
    """Hard copy of the online parameters into the targets (Double DQN, arXiv:1509.06461).

    TorchRL's counting, kept on purpose: ``counter`` starts at 0; a :meth:`step` copies when
    ``counter == value_network_update_interval`` (then resets it to 0) and increments it otherwise, so the copy
    happens on calls ``interval + 1``, ``2 (interval + 1)``, ... ``value_network_update_interval`` is an integer
    ``>= 1``.
    """

    def __init__(self, loss_module: Any, *, value_network_update_interval: int = 1000):
        self.value_network_update_interval = check_number(value_network_update_interval,
                                                          "value_network_update_interval", low=1, integer=True)
        self.counter = 0
        super().__init__(loss_module)

    def _step(self, source: Any, target: Any) -> Any:
        if self.counter == self.value_network_update_interval:
            return tree_map(stop_gradient, source)
        return None

    def step(self) -> None:
        super().step()
        if self.counter == self.value_network_update_interval:
            self.counter = 0
        else:
            self.counter += 1


# --------------------------------------------------------------------------------------------- hold-out helpers
class _ContextDecorator:
    """Base of the hold-out helpers: usable as ``with obj:`` and as a decorator."""

    def __enter__(self) -> Any:  # pragma: no cover - overridden
        return self

    def __exit__(self, *exc: Any) -> None:  # pragma: no cover - overridden
        return None

    def __call__(self, func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self:
                return func(*args, **kwargs)

        return wrapped


class hold_out_net(_ContextDecorator):
    """Hold a network's parameters out of the tape for a block (TorchRL's ``hold_out_net``).

    Inside the block, ``network.params`` is replaced by its gradient-stopped copy (taped leaves become raw arrays);
    gradients still flow *through* the network to its inputs. arrayrl differentiates only what is passed to
    ``value_and_grad``, so for raw parameters this is a no-op kept for API compatibility.
    """

    def __init__(self, network: Any):
        self.network = network
        self._saved = None

    def __enter__(self) -> Any:
        params = getattr(self.network, "params", None)
        if params is not None:
            self._saved = params
            self.network.params = tree_map(stop_gradient, params)
        return self.network

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            self.network.params = self._saved
            self._saved = None


class hold_out_params(_ContextDecorator):
    """``with hold_out_params(params) as p:`` gives gradient-stopped copies of a parameter tree (or sequence)."""

    def __init__(self, params: Any):
        self.params = tree_map(stop_gradient, params if isinstance(params, (dict, list, tuple)) else tuple(params))

    def __enter__(self) -> Any:
        return self.params

    def __exit__(self, *exc: Any) -> None:
        return None


# --------------------------------------------------------------------------------------------- next-state value
def step_mdp(batch: Mapping, required: Any = ()) -> dict:
    """The batch one step ahead: the entries under ``"next"`` become root entries (TorchRL's ``step_mdp`` with
    ``keep_other=False``). Arrays are shared, nothing is copied or mutated.

    ``required``: the keys the next-state networks read (their ``in_keys``). Each must be present under
    ``"next"``; a missing one raises ``KeyError`` naming the full nested key (``('next', 'observation')``), not the
    key the network reads from the shifted batch.
    """
    nxt = _data.get(batch, "next", what="next-step entries")  # (KeyError listing the keys present)
    if type(nxt) is not dict and not isinstance(nxt, Mapping):
        raise TypeError(f"('next',): expected a nested batch (dict) of next-step entries, got {type(nxt).__name__}")
    for key in required:
        if _data.get_or(nxt, key, _MISSING) is _MISSING:
            _data.get(batch, ("next",) + _data.unravel_key(key), what="next-state input")  # raises KeyError
    return dict(nxt)


def check_transition(batch: Mapping, keys: Any, batch_shape: tuple, *, steps_key: Any = "steps_to_next_obs",
                     weight_key: Any = None) -> None:
    """Check the per-sample entries a TD loss reads against the batch shape ``[*B]`` of its predictions.

    ``("next", keys.reward)`` (floating), ``("next", keys.done)`` (bool, required), ``("next", keys.terminated)``
    (bool, optional), ``steps_key`` (numeric, optional) and ``weight_key`` (floating, optional) must each be
    ``[*B]`` or ``[*B, 1]``; anything else raises naming the full key (no silent broadcast downstream).
    """
    batch_entry(batch, ("next", keys.reward), batch_shape, kind="floating", what="reward")
    batch_entry(batch, ("next", keys.done), batch_shape, kind="bool", what="done")
    batch_entry(batch, ("next", keys.terminated), batch_shape, kind="bool", what="terminated", required=False)
    if steps_key is not None:
        batch_entry(batch, steps_key, batch_shape, kind="numeric", what="n-step count", required=False)
    if weight_key is not None:  # [*B] only: reduce_loss never broadcasts weights
        batch_entry(batch, weight_key, batch_shape, kind="floating", what="priority weight", required=False,
                    trailing_one=False)


def check_next_value(next_value: Any, want: tuple, in_keys: Any, what: str) -> None:
    """``next_value``, computed from the ``"next"`` entries, must have the shape ``want`` that the root entries
    imply; otherwise a ``ValueError`` naming the next-state inputs (``('next', 'observation')`` of another batch
    size, say), instead of a shape error about the reward further down."""
    if tuple(next_value.shape) != tuple(want):
        names = ", ".join(_data.key_str(("next",) + _data.unravel_key(k)) for k in in_keys)
        raise ValueError(
            f"{names}: the {what} computed from the next-state inputs has shape {tuple(next_value.shape)}, expected "
            f"{tuple(want)} (from the batch shape of the root entries)"
        )


def next_state_value(
    tensordict: Mapping,
    operator: Any = None,
    next_val_key: Any = "state_action_value",
    gamma: float = 0.99,
    pred_next_val: Any = None,
    **kwargs: Any,
) -> Any:
    """``r + gamma**n * (1 - done) * V(s')`` without gradient, shape ``[*B]`` (TorchRL's ``next_state_value``).

    Reads ``("next", "reward")``, ``("next", "done")`` (TorchRL uses *done*, not *terminated*, here: truncated
    steps do not bootstrap) and the root ``steps_to_next_obs`` (``n``, default 1). ``V(s')`` is ``pred_next_val`` or
    ``operator(step_mdp(batch))[next_val_key]``. Done positions take the reward alone (selected, so a NaN ``V(s')``
    there does not leak).
    """
    check_number(gamma, "gamma", low=0.0, high=1.0)
    reward = _data.get(tensordict, ("next", "reward"))
    done = _data.get(tensordict, ("next", "done"))
    xp = namespace_of(reward)
    rewards = xp.squeeze(reward, axis=-1) if reward.ndim and reward.shape[-1] == 1 else reward
    done = xp.squeeze(done, axis=-1) if done.ndim and done.shape[-1] == 1 else done
    if gamma == 0:
        return stop_gradient(rewards)
    steps = _data.get_or(tensordict, "steps_to_next_obs", None)
    if pred_next_val is None:
        if operator is None:
            raise ValueError("next_state_value: give operator or pred_next_val")
        out = operator(step_mdp(tensordict), **kwargs)
        pred_next_val = _data.get(out, next_val_key)
    v = stop_gradient(pred_next_val)
    v = xp.squeeze(v, axis=-1) if v.ndim > rewards.ndim else v
    disc = gamma if steps is None else gamma ** xp.astype(xp.squeeze(steps, axis=-1), rewards.dtype)
    return stop_gradient(rewards + disc * xp.where(done, xp.zeros_like(v), v))
