"""Array conversion between libraries: DLPack when both sides support it, NumPy as the bridge otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import backend_name, base_of, device_of, is_array, is_taped, namespace_of, to_numpy

__all__ = ["to_torch", "from_torch", "convert"]


def _torch():
    import torch

    return torch


def _raw(x: Any) -> Any:
    return x.value if is_taped(x) else x


def _shareable_numpy(a: np.ndarray) -> np.ndarray:
    """``a`` itself when torch can share its memory, else a C-contiguous native-byte-order copy.

    torch has no negative strides (``from_dlpack`` *aborts the interpreter* on one, ``from_numpy`` raises), no
    non-native byte order and no read-only tensors (sharing a read-only buffer would let an in-place torch op write
    into memory the caller declared immutable, e.g. a ``np.broadcast_to`` view or a replay buffer's frozen arrays).
    Other non-contiguous views (transposes, positive steps) are shared as they are.
    """
    if a.dtype.hasobject or a.dtype.fields is not None:
        raise TypeError(f"x: NumPy dtype {a.dtype} has no torch equivalent (expected a bool, integer, float or complex array)")
    if any(s < 0 for s in a.strides) or not a.flags.writeable or not a.dtype.isnative:
        return np.array(a, dtype=a.dtype.newbyteorder("="), order="C", copy=True)
    return a


def _has_negative_strides(x: Any) -> bool:
    """True when ``x`` (CuPy and other strided arrays) exposes a negative stride, which DLPack consumers refuse."""
    strides = getattr(x, "strides", None)
    return strides is not None and any(s < 0 for s in strides)


def to_torch(x: Any, *, device: Any = None, dtype: Any = None, copy: bool = False) -> Any:
    """A ``torch.Tensor`` with ``x``'s values (any backend, taped arrays unwrapped; Python scalars accepted).

    Zero-copy where the source allows it (NumPy, CuPy, array-api-strict on CPU; transposed and strided views are
    shared as they are). A copy is made where torch cannot alias the memory: negative strides (``a[::-1]``), read-only
    NumPy arrays, non-native byte order. ``copy=True`` always copies. ``device``/``dtype`` convert afterwards
    (``Tensor.to``).

    Raises:
        TypeError: ``x`` is not an array or a Python/NumPy scalar, or its dtype has no torch equivalent (object,
            structured).
    """
    torch = _torch()
    x = _raw(x)
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, (bool, int, float)):
        t = torch.as_tensor(x)
    elif not is_array(x):
        raise TypeError(f"x: expected an array (NumPy, torch, CuPy, array-api-strict...) or a Python scalar, "
                        f"got {type(x).__name__}")
    elif isinstance(x, (np.ndarray, np.generic)) or backend_name(namespace_of(x)) == "array_api_strict":
        # NumPy memory (array-api-strict wraps a NumPy array): checked on the NumPy side, where a bad layout is
        # visible, before torch sees it
        t = torch.from_numpy(_shareable_numpy(np.asarray(to_numpy(x))))
    else:
        if _has_negative_strides(x):
            x = x.copy()  # CuPy: ndarray.copy() is C-ordered
        try:
            t = torch.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError, AttributeError):
            t = torch.from_numpy(np.array(to_numpy(x), copy=True))
    if copy:
        t = t.clone()
    if device is not None or dtype is not None:
        t = t.to(device=device if device is not None else t.device, dtype=dtype if dtype is not None else t.dtype)
    return t


#: torch dtypes NumPy cannot represent (by name, so that the table needs no torch import)
_NO_NUMPY_DTYPES = frozenset({"bfloat16", "complex32", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
                              "float8_e5m2fnuz", "qint8", "quint8", "qint32", "quint4x2", "bits8", "bits16"})


def from_torch(t: Any, xp: Any = None, *, device: Any = None, copy: bool = False) -> Any:
    """A ``torch.Tensor`` (detached) as an array of namespace ``xp`` (default NumPy).

    NumPy shares memory with a CPU tensor unless ``copy=True`` (then later in-place changes of the tensor, e.g. an
    optimiser step, do not show); CuPy goes through DLPack; array-api-strict copies; a torch namespace returns the
    detached tensor itself (a clone with ``copy=True``).
    """
    torch = _torch()
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t: expected a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise TypeError(f"t: expected a dense (strided) tensor, got layout {t.layout}; call t.to_dense() first")
    # lazy conjugate/negative views (t.conj(), torch._neg_view) cannot be exported as they are: materialise them
    t = t.detach().resolve_conj().resolve_neg()
    kind = "numpy" if xp is None else backend_name(base_of(xp))
    if kind != "torch" and str(t.dtype).removeprefix("torch.") in _NO_NUMPY_DTYPES:
        raise TypeError(f"t: torch dtype {t.dtype} has no NumPy/array-API equivalent; convert it first "
                        f"(e.g. t.float())")
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
    base = base_of(xp)
    arr = t.cpu().numpy()
    return base.asarray(arr, copy=True, device=device) if device is not None else base.asarray(arr, copy=True)


def convert(x: Any, xp: Any, *, device: Any = None) -> Any:
    """``x`` (any backend) as an array of namespace ``xp``, on ``device`` if given.

    Same library: returned as is (moved with ``to_device`` when ``device`` differs). torch on either side: through
    :func:`to_torch`/:func:`from_torch`. Otherwise ``xp.from_dlpack``, falling back to a NumPy copy.
    """
    x = _raw(x)
    target = base_of(xp)
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
