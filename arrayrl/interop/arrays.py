"""Array conversion between libraries: DLPack when both sides support it, NumPy as the bridge otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import backend_name, device_of, is_taped, namespace_of, to_numpy

__all__ = ["to_torch", "from_torch", "convert"]


def _torch():
    import torch

    return torch


def _raw(x: Any) -> Any:
    return x.value if is_taped(x) else x


def to_torch(x: Any, *, device: Any = None, dtype: Any = None, copy: bool = False) -> Any:
    """A ``torch.Tensor`` with ``x``'s values (any backend, taped arrays unwrapped).

    Zero-copy through DLPack where the source allows it (NumPy, CuPy, array-api-strict on CPU); ``copy=True``
    always copies. ``device``/``dtype`` convert afterwards (``Tensor.to``).
    """
    torch = _torch()
    x = _raw(x)
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, (bool, int, float)):
        t = torch.as_tensor(x)
    else:
        try:
            t = torch.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError, AttributeError):
            t = torch.from_numpy(np.array(to_numpy(x), copy=True))
    if copy:
        t = t.clone()
    if device is not None or dtype is not None:
        t = t.to(device=device if device is not None else t.device, dtype=dtype if dtype is not None else t.dtype)
    return t


def from_torch(t: Any, xp: Any = None, *, device: Any = None, copy: bool = False) -> Any:
    """A ``torch.Tensor`` (detached) as an array of namespace ``xp`` (default NumPy).

    NumPy shares memory with a CPU tensor unless ``copy=True`` (then later in-place changes of the tensor, e.g. an
    optimiser step, do not show); CuPy goes through DLPack; array-api-strict copies; a torch namespace returns the
    detached tensor itself (a clone with ``copy=True``).
    """
    torch = _torch()
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t: expected a torch.Tensor, got {type(t).__name__}")
    t = t.detach()
    kind = "numpy" if xp is None else backend_name(getattr(xp, "_arrayrl_base", xp))
    if kind == "torch":
        out = t.clone() if copy else t
        return out.to(device) if device is not None else out
    if kind == "numpy":
        arr = t.cpu().numpy()
        return arr.copy() if copy else arr
    if kind == "cupy":
        import cupy

        out = cupy.from_dlpack(t.contiguous())
        return out.copy() if copy else out
    base = getattr(xp, "_arrayrl_base", xp)
    arr = t.cpu().numpy()
    return base.asarray(arr, copy=True, device=device) if device is not None else base.asarray(arr, copy=True)


def convert(x: Any, xp: Any, *, device: Any = None) -> Any:
    """``x`` (any backend) as an array of namespace ``xp``, on ``device`` if given.

    Same library: returned as is (moved with ``to_device`` when ``device`` differs). torch on either side: through
    :func:`to_torch`/:func:`from_torch`. Otherwise ``xp.from_dlpack``, falling back to a NumPy copy.
    """
    x = _raw(x)
    target = getattr(xp, "_arrayrl_base", xp)
    tname = backend_name(target)
    sname = backend_name(namespace_of(x))
    if sname == tname:
        if device is not None and device_of(x) != device:
            return x.to_device(device)
        return x
    if sname == "torch":
        return from_torch(x, target, device=device)
    if tname == "torch":
        return to_torch(x, device=device)
    if tname == "numpy":
        return to_numpy(x)
    try:
        out = target.from_dlpack(x)
    except (TypeError, RuntimeError, BufferError, AttributeError, ValueError):
        out = target.asarray(np.array(to_numpy(x), copy=True))
    if device is not None and device_of(out) != device:
        out = out.to_device(device)
    return out
