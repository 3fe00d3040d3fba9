"""The value-estimator registry: :class:`ValueEstimators`, :func:`default_value_kwargs` and TorchRL's plumbing.

Mirrors ``torchrl.objectives.utils`` (0.14.1): estimator classes register themselves against an enum member with
:func:`register_value_estimator`; losses build one with :func:`build_value_estimator` /
:func:`dispatch_value_estimator` from an enum member or a case-insensitive string alias (``"td0"``, ``"td1"``,
``"tdlambda"``, ``"gae"``, ``"magae"``, ``"vtrace"``; the member names ``"TDLambda"``... work too).

Defaults (:func:`default_value_kwargs`, a fresh dict each call): ``gamma=0.99`` for all, ``lmbda=0.95`` for
TD(lambda)/GAE/MAGAE, and ``differentiable=True`` (the estimator classes themselves default to ``False``).
"""

from __future__ import annotations

import importlib
from enum import Enum
from typing import Any, Iterable

__all__ = [
    "ValueEstimators",
    "UnknownValueEstimatorError",
    "default_value_kwargs",
    "register_value_estimator",
    "get_value_estimator_entry",
    "build_value_estimator",
    "dispatch_value_estimator",
    "coerce_value_type",
]


class ValueEstimators(Enum):
    """Value estimator types (TorchRL's enum, same member names and descriptions)."""

    TD0 = "Bootstrapped TD (1-step return)"
    TD1 = "TD(1) (infinity-step return)"
    TDLambda = "TD(lambda)"
    GAE = "Generalized advantage estimate"
    MAGAE = "Multi-agent generalized advantage estimate"
    VTrace = "V-trace"


class UnknownValueEstimatorError(KeyError, ValueError):
    """An unknown string alias (a ``KeyError`` as in TorchRL, and a ``ValueError``)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


_BUILTIN_DEFAULTS: dict[ValueEstimators, dict[str, Any]] = {
    ValueEstimators.TD0: {"gamma": 0.99, "differentiable": True},
    ValueEstimators.TD1: {"gamma": 0.99, "differentiable": True},
    ValueEstimators.TDLambda: {"gamma": 0.99, "lmbda": 0.95, "differentiable": True},
    ValueEstimators.GAE: {"gamma": 0.99, "lmbda": 0.95, "differentiable": True},
    ValueEstimators.MAGAE: {"gamma": 0.99, "lmbda": 0.95, "differentiable": True},
    ValueEstimators.VTrace: {"gamma": 0.99, "differentiable": True},
}


class _Entry:
    __slots__ = ("cls", "default_kwargs")

    def __init__(self, cls: Any, default_kwargs: dict) -> None:
        self.cls = cls
        self.default_kwargs = dict(default_kwargs)


_REGISTRY: dict[Any, _Entry] = {}


def register_value_estimator(value_type: Any, *, default_kwargs: dict | None = None):
    """Class decorator: register an estimator class for ``value_type`` with its default hyperparameters."""

    def _decorator(cls: type) -> type:
        _REGISTRY[value_type] = _Entry(cls, default_kwargs or {})
        return cls

    return _decorator


def _ensure_builtins() -> None:
    if not all(vt in _REGISTRY for vt in ValueEstimators):
        importlib.import_module("arrayrl.value.estimators")


def coerce_value_type(value_type: Any) -> Any:
    """An enum member (or a registered key) from a member or a case-insensitive string alias."""
    if isinstance(value_type, ValueEstimators):
        return value_type
    if isinstance(value_type, str):
        if value_type in _REGISTRY:
            return value_type
        key = value_type.lower()
        for member in ValueEstimators:
            if member.name.lower() == key:
                return member
        for reg in _REGISTRY:
            if isinstance(reg, Enum) and reg.name.lower() == key:
                return reg
        known = [m.name.lower() for m in ValueEstimators]
        raise UnknownValueEstimatorError(f"Unknown value estimator alias {value_type!r}. Known aliases: {known}.")
    if isinstance(value_type, Enum) or value_type in _REGISTRY:
        return value_type
    raise TypeError(f"value_type must be a ValueEstimators member or a string alias, got {type(value_type).__name__}.")


def get_value_estimator_entry(value_type: Any) -> _Entry:
    """The registry entry (``.cls``, ``.default_kwargs``) of ``value_type``."""
    vt = coerce_value_type(value_type)
    _ensure_builtins()
    try:
        return _REGISTRY[vt]
    except KeyError as exc:
        raise NotImplementedError(f"No value estimator registered for {vt!r}.") from exc


def default_value_kwargs(value_type: Any) -> dict:
    """Default hyperparameters of ``value_type`` (a new dict each call), e.g. ``{"gamma": 0.99, "lmbda": 0.95,
    "differentiable": True}`` for ``ValueEstimators.GAE``."""
    vt = coerce_value_type(value_type)
    if isinstance(vt, ValueEstimators) and vt not in _REGISTRY:
        return dict(_BUILTIN_DEFAULTS[vt])
    return dict(get_value_estimator_entry(vt).default_kwargs)


def build_value_estimator(loss_module: Any, value_type: Any, **hyperparams: Any) -> Any:
    """``cls.for_loss(loss_module, **(defaults | hyperparams))`` for the class registered for ``value_type``."""
    entry = get_value_estimator_entry(value_type)
    return entry.cls.for_loss(loss_module, **{**entry.default_kwargs, **hyperparams})


def dispatch_value_estimator(
    loss_module: Any,
    value_type: Any,
    *,
    supported: Iterable[Any],
    tensor_keys: dict | None = None,
    **hyperparams: Any,
) -> Any:
    """TorchRL's ``make_value_estimator`` body: check ``value_type`` is ``supported`` (``NotImplementedError``
    otherwise), merge ``loss_module.gamma`` if present, build, assign ``loss_module._value_estimator`` and
    ``loss_module.value_type``, forward ``tensor_keys`` with ``set_keys``."""
    vt = coerce_value_type(value_type)
    supported_set = {coerce_value_type(v) for v in supported}
    if vt not in supported_set:
        names = sorted(getattr(v, "name", str(v)) for v in supported_set)
        raise NotImplementedError(
            f"Value type {vt!r} is not implemented for loss {type(loss_module).__name__}. "
            f"Supported value types: {names}."
        )
    loss_module.value_type = vt
    hp = dict(hyperparams)
    if hasattr(loss_module, "gamma"):
        hp.setdefault("gamma", loss_module.gamma)
    estimator = build_value_estimator(loss_module, vt, **hp)
    loss_module._value_estimator = estimator
    if tensor_keys is not None:
        estimator.set_keys(**tensor_keys)
    return estimator
