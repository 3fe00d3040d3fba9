"""Argument validation: the process-wide ``validate_args`` policy for data-dependent checks, and checks of
hyper-parameters and per-sample batch entries with messages that name the argument or key.

**The policy** (the idea of ``torch.distributions.Distribution.set_default_validate_args``). Some checks must read
the data: a categorical action must lie in ``[0, n_actions)``, otherwise ``take_along_axis`` wraps ``-1`` around on
every backend, returns garbage on torch (no bounds check) and a bare ``IndexError`` on NumPy. Reading data forces
a host synchronisation on a GPU, so these checks follow one switch:

* :func:`set_validate_args` ``(True)``: always check; ``(False)``: never check (no cost at all);
* ``None`` (the default, "auto"): check arrays that live on the CPU (NumPy, array-api-strict, torch on CPU) and
  skip arrays on a GPU (CuPy, torch CUDA), where the check would stall the device;
* :func:`validate_args` ``(flag)``: a context manager that sets the switch for a block and restores it.

The switch is process-wide (not per thread), as torch's. Shape and dtype checks (:mod:`arrayrl._checks`) never
read data and always run.

:func:`check_index_range` is the data check every gather of a categorical action goes through.
:func:`check_number`, :func:`check_choice`, :func:`check_flag` validate hyper-parameters at construction (Python
values, so they cost nothing per call); :func:`check_evenly_spaced` is the constructor-time check of a C51 support
(a one-off host read); :func:`batch_entry` reads a per-sample batch entry (``reward``, ``done``, ``weights``...)
and checks its shape against the batch shape and its dtype.

**Validate once per structure.** A shape/dtype check reads only the *structure* of its inputs: which keys are
present, the array types, shapes, dtypes and devices. Whether it passes is a function of that signature
(:func:`array_signature`), so a :class:`StructureCache` remembers the signatures that passed and the check is
skipped when the next call has the same one (a training loop feeds batches of one structure). A new key, shape,
dtype, backend or device is a new signature and is checked in full, with the same error. Data checks
(:func:`check_index_range`) are never cached: the data changes every call. Nested entries are read with :func:`arrayrl.data.get_or`
(a ``type(x) is dict`` fast path, no ABC ``Mapping`` ``isinstance`` for plain dicts).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Mapping
from typing import Any, Iterable, Iterator

from . import _kernels
from . import data as _data
from ._backend import backend_name, base_of, device_of, is_array, is_taped, namespace_of
from ._checks import check_array

__all__ = [
    "set_validate_args",
    "get_validate_args",
    "validate_args",
    "validation_enabled",
    "IndexRangeError",
    "check_index_range",
    "check_number",
    "check_choice",
    "check_flag",
    "check_evenly_spaced",
    "batch_entry",
    "array_signature",
    "structure_signature",
    "StructureCache",
]

_FLAG: bool | None = None  # the process-wide switch (None = auto: CPU arrays only)
_CPU_BY_TYPE: dict = {}  # array type -> on the CPU, for libraries whose arrays live on one kind of device only


def set_validate_args(flag: bool | None) -> None:
    """Turn data-dependent validation on (``True``), off (``False``) or back to auto (``None``: CPU arrays only)."""
    global _FLAG
    if flag is not None and not isinstance(flag, bool):
        raise TypeError(f"flag: expected True, False or None, got {flag!r}")
    _FLAG = flag


def get_validate_args() -> bool | None:
    """The current switch: ``True``, ``False`` or ``None`` (auto)."""
    return _FLAG


@contextlib.contextmanager
def validate_args(flag: bool | None = True) -> Iterator[None]:
    """``with validate_args(True): ...`` sets the switch for the block and restores the previous value after."""
    old = _FLAG
    set_validate_args(flag)
    try:
        yield
    finally:
        set_validate_args(old)


def _on_cpu(x: Any) -> bool:
    raw = x.value if is_taped(x) else x
    tp = type(raw)
    known = _CPU_BY_TYPE.get(tp)
    if known is not None:
        return known
    name = backend_name(namespace_of(raw))
    if name in ("numpy", "array_api_strict", "cupy"):  # array-api-strict wraps NumPy: all its devices are host memory
        _CPU_BY_TYPE[tp] = name != "cupy"
        return _CPU_BY_TYPE[tp]
    dev = device_of(raw)
    return str(getattr(dev, "type", dev)).lower().startswith("cpu")


def validation_enabled(x: Any, enabled: bool | None = None) -> bool:
    """Whether a data-dependent check of ``x`` runs: ``enabled`` if given, else the switch, else (auto) ``x`` on CPU."""
    flag = _FLAG if enabled is None else enabled
    return _on_cpu(x) if flag is None else bool(flag)


class IndexRangeError(IndexError, ValueError):
    """An index outside its range. Both an ``IndexError`` (what NumPy raises) and a ``ValueError`` (what
    ``torch.distributions`` raises for a value outside the support), so either ``except`` catches it."""


def check_index_range(index: Any, n: int, name: str, *, enabled: bool | None = None) -> None:
    """Raise :class:`IndexRangeError` unless every entry of the integer array ``index`` lies in ``[0, n)``.

    Runs only when :func:`validation_enabled` (``enabled`` overrides the switch); otherwise it reads nothing and
    costs nothing. Empty arrays pass. Message: ``"action: expected integers in [0, 3), got values outside
    (min -1, max 2)"``.
    """
    if not validation_enabled(index, enabled):
        return
    raw = index.value if is_taped(index) else index
    if math.prod(raw.shape) == 0:
        return
    lo, hi = _kernels.int_range(raw)
    if lo < 0 or hi >= n:
        raise IndexRangeError(f"{name}: expected integers in [0, {n}), got values outside (min {lo}, max {hi})")


def _interval(low: Any, high: Any, low_open: bool, high_open: bool) -> str:
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    return f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"


def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> Any:
    """Check a hyper-parameter: a finite real number (an ``int`` if ``integer``) in the interval given.

    ``low``/``high`` ``None`` mean unbounded; ``low_open``/``high_open`` exclude the bound. ``bool`` is not a number
    here. Returns the value (an ``int`` when ``integer``, otherwise unchanged).

    Raises:
        TypeError: not a real number (a string, ``None``, ``True``).
        ValueError: NaN, infinite, outside the interval, or not integral with ``integer=True`` (``2.5``, ``2.0``);
            the message names ``name`` and the interval.
    """
    kind = "an integer" if integer else "a finite real number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {kind}, got {value!r} ({type(value).__name__})")
    where = _interval(low, high, low_open, high_open)
    if not math.isfinite(float(value)):
        raise ValueError(f"{name}: expected {kind} in {where}, got {value!r}")
    if integer:
        if not isinstance(value, numbers.Integral):
            raise ValueError(f"{name}: expected {kind} in {where}, got {value!r} ({type(value).__name__})")
        value = int(value)
    v = float(value)
    if (low is not None and (v < low or (low_open and v == low))) or (
        high is not None and (v > high or (high_open and v == high))
    ):
        raise ValueError(f"{name}: expected {kind} in {where}, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """Raise ``ValueError`` unless ``value`` is one of ``choices`` (compared by type and value: ``True`` is not
    ``1``). Returns ``value``."""
    choices = tuple(choices)
    if not any(type(value) is type(c) and value == c for c in choices):
        raise ValueError(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_flag(value: Any, name: str) -> bool:
    """Raise ``TypeError`` unless ``value`` is a ``bool`` (``delay_value="yes"`` is not silently truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r} ({type(value).__name__})")
    return value


def check_evenly_spaced(support: Any, name: str = "support") -> None:
    """A C51 support: a floating 1-D array of at least 2 atoms, strictly increasing, evenly spaced.

    Spacing tolerance: ``sqrt(eps) * dz + 8 eps max|z|`` (``linspace`` round-off passes in float32 and float64).
    Reads the data (one host transfer): call it once, at construction.
    """
    check_array(support, name)
    raw = support.value if is_taped(support) else support
    xp = namespace_of(raw)
    if raw.ndim != 1 or raw.shape[0] < 2:
        raise ValueError(f"{name}: expected a 1-D array of at least 2 atoms, got shape {tuple(raw.shape)}")
    if not xp.isdtype(raw.dtype, "real floating"):
        raise TypeError(f"{name}: expected a real floating dtype, got {raw.dtype}")
    atoms = int(raw.shape[0])
    if not bool(xp.all(xp.isfinite(raw))):
        raise ValueError(f"{name}: expected finite atoms, got non-finite values")
    diff = raw[1:] - raw[:-1]
    lo, hi = float(xp.min(raw)), float(xp.max(raw))
    if not bool(xp.all(diff > 0)):
        i = int(xp.argmax(xp.astype(diff <= 0, xp.int32)))
        raise ValueError(f"{name}: expected strictly increasing atoms, got z[{i + 1}] = {float(raw[i + 1])} <= "
                         f"z[{i}] = {float(raw[i])}")
    dz = (float(raw[atoms - 1]) - float(raw[0])) / (atoms - 1)
    eps = float(xp.finfo(raw.dtype).eps)
    tol = math.sqrt(eps) * dz + 8 * eps * max(abs(lo), abs(hi))
    dmin, dmax = float(xp.min(diff)), float(xp.max(diff))
    if dmax - dz > tol or dz - dmin > tol:
        raise ValueError(f"{name}: expected evenly spaced atoms (spacing {dz:.6g}), got spacings between "
                         f"{dmin:.6g} and {dmax:.6g}")


# ------------------------------------------------------------------------------------ validate once per structure
_MISSING = object()


def array_signature(x: Any) -> tuple | None:
    """``(type, backend type, shape, dtype, device)`` of an array (raw or taped): what a shape/dtype check reads.
    ``None`` for anything without ``shape``/``dtype``/``device`` (never cached: the full check runs)."""
    raw = x.value if is_taped(x) else x
    try:
        return (type(x), type(raw), tuple(raw.shape), raw.dtype, raw.device)
    except AttributeError:
        return None


def structure_signature(*arrays: Any) -> tuple | None:
    """The signatures of ``arrays`` (:func:`array_signature`), ``None`` standing for an absent (``None``) input; the
    whole signature is ``None`` (never cached) if one input is not an array."""
    out: list[tuple | None] = []
    for x in arrays:
        if x is None:
            out.append(None)
            continue
        sig = array_signature(x)
        if sig is None:
            return None
        out.append(sig)
    return tuple(out)


class StructureCache:
    """The signatures that passed a structure check, so that the check runs once per structure.

    ``sig in cache`` (``False`` for ``None`` or an unhashable signature), ``cache.add(sig)`` after the check passed.
    At most ``maxsize`` signatures are kept; when full the cache is emptied (a stream of ever-new shapes then costs
    one full check per call, as without a cache). A signature must hold everything the check's outcome depends on.
    """

    __slots__ = ("_seen", "maxsize")

    def __init__(self, maxsize: int = 64) -> None:
        self._seen: set = set()
        self.maxsize = maxsize

    def __contains__(self, sig: Any) -> bool:
        try:
            return sig in self._seen
        except TypeError:  # an unhashable dtype or key
            return False

    def add(self, sig: Any) -> None:
        if sig is None:
            return
        try:
            hash(sig)
        except TypeError:
            return
        if len(self._seen) >= self.maxsize:
            self._seen.clear()
        self._seen.add(sig)

    def clear(self) -> None:
        self._seen.clear()

    def __len__(self) -> int:
        return len(self._seen)


_ENTRY_CACHE = StructureCache(256)  # batch_entry: (key, batch shape, kind, trailing_one, array signature)

_KINDS = {"bool": ("bool", "a bool"), "floating": ("real floating", "a real floating"),
          "integer": ("integral", "an integer"), "numeric": ("numeric", "a numeric")}


def batch_entry(batch: Mapping, key: Any, batch_shape: tuple, *, kind: str, what: str, required: bool = True,
                trailing_one: bool = True) -> Any:
    """Read the per-sample entry ``key`` of ``batch`` and check it against ``batch_shape``.

    Accepts ``[*B]`` or, with ``trailing_one``, ``[*B, 1]`` (TorchRL's trailing singleton); any other shape
    (another batch size, a non-singleton trailing axis, a missing axis) is a ``ValueError`` naming the key; a
    wrong dtype kind (``"bool"``, ``"floating"``, ``"integer"``, ``"numeric"``) a ``TypeError``. A missing entry
    raises ``KeyError`` (naming the full nested key) if ``required``, else returns ``None``. Returns the array
    unchanged (no reshape: the consumer keeps TorchRL's layout). Checked once per structure (:class:`StructureCache`:
    the key, ``batch_shape``, ``kind``, ``trailing_one`` and the array's signature).
    """
    value = _data.get_or(batch, key, _MISSING)
    if value is _MISSING:
        if required:
            _data.get(batch, key, what=what)  # raises KeyError naming the key and the keys present
        return None
    if value is None:
        return None
    sig = array_signature(value)
    if sig is not None:
        sig = (key, batch_shape, kind, trailing_one, sig)
        if sig in _ENTRY_CACHE:
            return value
    name = _data.key_str(key)
    if not is_array(value):
        raise TypeError(f"{name} ({what}): expected an array, got {type(value).__name__}")
    shape, want = tuple(value.shape), tuple(batch_shape)
    if shape != want and not (trailing_one and shape == want + (1,)):
        accepted = f"{want} or {want + (1,)}" if trailing_one else f"{want}"
        raise ValueError(f"{name} ({what}): expected shape {accepted} (the batch shape), got {shape}")
    dtype_kind, label = _KINDS[kind]
    xp = namespace_of(value)
    xp = base_of(xp)
    if not xp.isdtype(value.dtype, dtype_kind):
        raise TypeError(f"{name} ({what}): expected {label} dtype, got {value.dtype}")
    _ENTRY_CACHE.add(sig)
    return value
