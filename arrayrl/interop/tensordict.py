"""TensorDict <-> nested dicts, and torch module weights <-> arrayrl parameter trees."""

from __future__ import annotations

from typing import Any, Mapping

from ..nn.params import flatten_params, unflatten_params
from .arrays import from_torch, to_torch

__all__ = ["from_tensordict", "to_tensordict", "params_from_torch", "params_to_torch"]


def _is_tensordict(x: Any) -> bool:
    try:
        from tensordict import TensorDictBase
    except ImportError:  # pragma: no cover - tensordict not installed
        return False
    return isinstance(x, TensorDictBase)


def from_tensordict(td: Any, xp: Any = None, *, copy: bool = False) -> dict:
    """A nested ``dict`` with ``td``'s entries (nested TensorDicts become nested dicts).

    Tensors are detached and converted to ``xp`` (default: kept as torch tensors, which are array-API arrays through
    array-api-compat); non-tensor entries (``NonTensorData``) are returned as their Python value.
    """
    import torch

    if not _is_tensordict(td):
        raise TypeError(f"td: expected a TensorDict, got {type(td).__name__}")
    out: dict = {}
    for k, v in td.items():
        if _is_non_tensor(v):
            out[k] = v.data
        elif _is_tensordict(v):
            out[k] = from_tensordict(v, xp, copy=copy)
        elif isinstance(v, torch.Tensor):
            if xp is None:
                out[k] = v.detach().clone() if copy else v.detach()
            else:
                out[k] = from_torch(v, xp, copy=copy)
        else:
            out[k] = v
    return out


def _is_non_tensor(v: Any) -> bool:
    try:
        from tensordict import is_non_tensor
    except ImportError:  # pragma: no cover
        return False
    return bool(is_non_tensor(v))


def to_tensordict(d: Mapping, batch_size: Any = None, *, device: Any = None) -> Any:
    """A ``TensorDict`` from a nested dict of arrays (any backend; converted with :func:`to_torch`).

    ``batch_size`` defaults to ``[]``; TensorDict checks that every entry starts with it.
    """
    from tensordict import TensorDict

    if not isinstance(d, Mapping):
        raise TypeError(f"d: expected a (nested) dict, got {type(d).__name__}")

    def conv(node: Mapping) -> dict:
        return {k: conv(v) if isinstance(v, Mapping) else to_torch(v) for k, v in node.items()}

    return TensorDict(conv(d), batch_size=[] if batch_size is None else batch_size, device=device)


def params_from_torch(module: Any, xp: Any = None, *, buffers: bool = False) -> dict:
    """Copy the weights of a torch module into an arrayrl parameter tree (``state_dict`` layout).

    ``module`` may be any ``torch.nn.Module`` (``nn.Linear`` -> ``{"weight", "bias"}``; ``nn.Sequential`` and
    ``torchrl.modules.MLP`` -> ``{"0": {...}, "2": {...}}``, the layout of :class:`arrayrl.nn.MLP`) or a TensorDict of
    parameters (e.g. a TorchRL loss's ``actor_network_params``, stacked ``[N, ...]`` for ensembles). The arrays are
    copies (later in-place torch updates do not show) of namespace ``xp`` (default NumPy), keeping the dtype.
    ``buffers=True`` includes the module's buffers.
    """
    if _is_tensordict(module):
        return from_tensordict(module, xp if xp is not None else _numpy(), copy=True)
    if not hasattr(module, "named_parameters"):
        raise TypeError(f"module: expected a torch.nn.Module or a TensorDict of parameters, got {type(module).__name__}")
    flat = {name: from_torch(p, xp, copy=True) for name, p in module.named_parameters()}
    if buffers:
        flat.update({name: from_torch(b, xp, copy=True) for name, b in module.named_buffers()})
    return unflatten_params(flat)


def _numpy():
    import numpy

    return numpy


def params_to_torch(params: Any, module: Any) -> Any:
    """Copy an arrayrl parameter tree into ``module``'s parameters in place (inverse of :func:`params_from_torch`).

    Names and shapes must match exactly (``KeyError``/``ValueError`` naming the parameter; every name and shape is
    checked before the first copy, so a failed call leaves ``module`` unchanged); values are cast to each parameter's
    dtype and device. Returns ``module``.
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    flat = flatten_params(params)
    named = dict(module.named_parameters())
    missing = sorted(set(named) - set(flat))
    extra = sorted(set(flat) - set(named))
    if missing or extra:
        raise KeyError(f"params: names do not match the module's parameters (missing {missing}, unexpected {extra})")
    for name, p in named.items():
        v = flat[name]
        if tuple(v.shape) != tuple(p.shape):
            raise ValueError(f"params: {name!r} has shape {tuple(v.shape)}, the module expects {tuple(p.shape)}")
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(to_torch(flat[name], device=p.device, dtype=p.dtype))
    return module
