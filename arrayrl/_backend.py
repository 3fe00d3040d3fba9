"""Backend layer: which array-API namespace an array belongs to, devices, dtypes.

Everything numeric in arrayrl starts with ``xp = namespace_of(*inputs)`` and then calls only functions of the
array-API standard (2024.12) on ``xp``. This module is the only place (with :mod:`arrayrl.interop`) that knows
about concrete libraries.

Rules implemented here:

* taped arrays (:class:`arrayrl.autodiff.Tensor`) win: if any input is taped, the *taped namespace* over the
  backend namespace is returned, so the same code records a tape;
* ``None`` and Python scalars (``bool``, ``int``, ``float``) are ignored; NumPy scalars (``np.float64(1.0)``, the
  0-d results of NumPy reductions) count as NumPy only when no other array is given;
* Python lists/tuples, NumPy scalars of object dtype and other non-arrays raise ``TypeError``;
* mixing libraries (NumPy with torch, say) or devices (``cpu`` with ``cuda:0``) raises ``TypeError`` naming both
  (by position, ``argument 0``, or by the caller's names: ``namespace_of(r, v, names=("reward", "state_value"))``
  says ``reward is torch, state_value is numpy``).

NumPy arrays are given NumPy's own namespace (NumPy >= 2.1 implements the standard natively, and calling it
directly avoids a wrapper layer); torch and CuPy go through ``array_api_compat``; array-api-strict is its own
namespace.
"""

from __future__ import annotations

import numbers
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "namespace_of",
    "is_array",
    "is_taped",
    "backend_name",
    "device_of",
    "is_floating_dtype",
    "is_bool_dtype",
    "is_integer_dtype",
    "default_float_dtype",
    "to_numpy",
    "asarray_like",
]

_SCALARS = (bool, int, float, numbers.Real)

# type(array) -> namespace; filled lazily. Namespaces never change for a type, so this is safe.
_NS_CACHE: dict[type, Any] = {}


def is_taped(x: Any) -> bool:
    """True for an :class:`arrayrl.autodiff.Tensor` (duck-typed so this layer does not import autodiff)."""
    return getattr(type(x), "_arrayrl_taped", False)


def is_array(x: Any) -> bool:
    """True for a backend array or a taped array (not for Python scalars, lists or ``None``)."""
    if is_taped(x):
        return True
    if isinstance(x, (np.ndarray, np.generic)):
        return True
    if isinstance(x, (list, tuple, dict, str, bytes)) or x is None or isinstance(x, _SCALARS):
        return False
    return array_api_compat.is_array_api_obj(x)


def _raw_namespace(x: Any) -> Any:
    tp = type(x)
    ns = _NS_CACHE.get(tp)
    if ns is not None:
        return ns
    if tp is np.ndarray or isinstance(x, np.generic):
        ns = np
    else:
        ns = array_api_compat.array_namespace(x)
    _NS_CACHE[tp] = ns
    return ns


_BASES: dict = {}  # namespace -> the raw namespace under it (see base_of)


def base_of(xp: Any) -> Any:
    """The raw namespace under ``xp``: the base of a taped namespace, ``xp`` itself for a raw one.

    Cached per namespace: ``getattr(np, "_arrayrl_base", np)`` goes through NumPy's module ``__getattr__``, which
    raises (and catches) an AttributeError on every call (~3 us)."""
    try:
        return _BASES[xp]
    except KeyError:
        base = _BASES[xp] = getattr(xp, "_arrayrl_base", xp)
        return base
    except TypeError:  # (an unhashable namespace object)
        return getattr(xp, "_arrayrl_base", xp)


def backend_name(xp: Any) -> str:
    """A short name of a namespace: ``numpy``, ``torch``, ``cupy``, ``array_api_strict`` or ``taped[numpy]``."""
    base = getattr(xp, "_arrayrl_base", None)
    if base is not None:
        return f"taped[{backend_name(base)}]"
    if xp is np or array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_torch_namespace(xp):
        return "torch"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return "array_api_strict"
    return getattr(xp, "__name__", repr(xp))


def _same_library(a: Any, b: Any) -> bool:
    return a is b or backend_name(a) == backend_name(b)


def device_of(x: Any) -> Any:
    """The device of an array (taped or raw), as the array API's ``device()`` reports it."""
    if is_taped(x):
        x = x.value
    return array_api_compat.device(x)


def _label(i: int | None, names: Any) -> str:
    """How an error message calls ``arrays[i]``: ``names[i]`` when given, else ``argument i``."""
    if i is not None and names is not None and i < len(names) and names[i] is not None:
        return str(names[i])
    return f"argument {i}"


def namespace_of(*arrays: Any, xp: Any = None, names: Any = None) -> Any:
    """Return the array-API namespace shared by ``arrays``.

    Args:
        *arrays: arrays (raw or taped), ``None`` or Python scalars. Nested containers are not searched.
        xp: an explicit namespace. Used when no array is given, and checked against the arrays otherwise.
        names: optional sequence of names, ``names[i]`` for ``arrays[i]`` (argument names or batch keys), used only
            in error messages (``"reward is torch, state_value is numpy"``); a missing entry (or ``None``) falls
            back to ``argument i``. It costs nothing when the inputs agree.

    Returns:
        The namespace to call. If any input is a taped :class:`~arrayrl.autodiff.Tensor`, the taped namespace
        over the backend's namespace, so the caller's code records a tape.

    Raises:
        TypeError: an input is not an array (a Python list, a string...), or inputs come from different
            libraries or devices; the message names both.
    """
    if xp is None:  # hot path: NumPy arrays, taped NumPy arrays and None only, without the general checks below
        found = False
        taped = None
        for a in arrays:
            t = type(a)
            if t is np.ndarray:
                found = True
            elif a is None:
                continue
            elif getattr(t, "_arrayrl_taped", False) and type(a.value) is np.ndarray:
                found, taped = True, a
            else:
                break
        else:
            if taped is not None:
                return taped.__array_namespace__()
            if found:
                return np
    base = None
    base_src = None
    taped_ns = None
    device = None
    device_src = None
    numpy_scalar = False
    for i, a in enumerate(arrays):
        if isinstance(a, np.generic):
            # A NumPy scalar (the 0-d result of a NumPy reduction) is NumPy's when nothing else decides, and is
            # otherwise a weak scalar like a Python float (so ``gamma=np.float64(0.99)`` works with torch arrays).
            numpy_scalar = True
            continue
        if a is None or isinstance(a, _SCALARS):
            continue
        if is_taped(a):
            taped_ns = a.__array_namespace__()
            raw = a.value
        elif isinstance(a, (list, tuple)):
            raise TypeError(
                f"{_label(i, names)} is a Python {type(a).__name__}; arrayrl functions take arrays "
                f"(convert with xp.asarray first)"
            )
        else:
            raw = a
        try:
            ns = _raw_namespace(raw)
        except TypeError as err:
            raise TypeError(f"{_label(i, names)} of type {type(a).__name__} is not an array-API array") from err
        if base is None:
            base, base_src = ns, i
        elif not _same_library(ns, base):
            raise TypeError(
                f"mixed array libraries: {_label(base_src, names)} is {backend_name(base)}, "
                f"{_label(i, names)} is {backend_name(ns)}"
            )
        if ns is not np:  # NumPy has one device; skip the lookup on the hot path
            dev = array_api_compat.device(raw)
            if device is None:
                device, device_src = dev, i
            elif dev != device:
                raise TypeError(
                    f"mixed devices: {_label(device_src, names)} is on {device}, {_label(i, names)} is on {dev}"
                )
    if base is None and numpy_scalar and xp is None:
        return np
    if base is None:
        if xp is None:
            raise TypeError("namespace_of: no array among the inputs and no xp= given")
        return xp
    if xp is not None and not _same_library(getattr(xp, "_arrayrl_base", xp), base):
        raise TypeError(f"xp= is {backend_name(xp)} but the arrays are {backend_name(base)}")
    return taped_ns if taped_ns is not None else base


def is_floating_dtype(xp: Any, dtype: Any) -> bool:
    """True for real floating dtypes (float32, float64)."""
    return xp.isdtype(dtype, "real floating")


def is_bool_dtype(xp: Any, dtype: Any) -> bool:
    return xp.isdtype(dtype, "bool")


def is_integer_dtype(xp: Any, dtype: Any) -> bool:
    return xp.isdtype(dtype, "integral")


def default_float_dtype(xp: Any, device: Any = None) -> Any:
    """The namespace's default real floating dtype (float64 for NumPy, torch's default for torch)."""
    info = xp.__array_namespace_info__()
    return info.default_dtypes(device=device)["real floating"]


def asarray_like(value: Any, like: Any, xp: Any = None) -> Any:
    """``value`` as an array of ``like``'s namespace, dtype and device (for scalars and per-step arrays)."""
    xp = xp or namespace_of(like)
    if is_taped(value):
        return value
    return xp.asarray(value, dtype=like.dtype, device=device_of(like))


def to_numpy(x: Any) -> np.ndarray:
    """Copy any array (taped, torch, CuPy, array-api-strict, NumPy) to a NumPy array. For tests and interop only."""
    if is_taped(x):
        x = x.value
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (np.generic, bool, int, float)):
        return np.asarray(x)
    mod = type(x).__module__
    if mod.startswith("torch"):
        return x.detach().cpu().numpy()
    if mod.startswith("cupy"):
        return x.get()
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError):
            pass
    return np.asarray(x)
