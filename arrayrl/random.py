"""Random numbers for every backend.

The array API standard has no random numbers, so arrayrl carries a small :class:`Generator` per backend. Every
stochastic function in arrayrl takes a ``Generator`` (or the noise itself), never a global seed.

``Generator(seed, xp=...)`` draws with the backend's own generator where one exists (NumPy's PCG64,
``torch.Generator``, CuPy's ``default_rng``); array-api-strict arrays are drawn with NumPy and converted.
:meth:`Generator.from_noise` builds a generator that replays given arrays, so a test can feed TorchRL's exact draws.

Backend generators are accepted where an arrayrl generator is expected, by *wrapping* them (:func:`as_generator`,
or ``Generator(rng)``): a ``numpy.random.Generator`` (``np.random.default_rng(0)``) draws NumPy arrays, a
``torch.Generator`` draws torch tensors on its device. The wrapper shares the caller's generator (draws advance it;
nothing is copied), so seeding stays in the caller's hands. Anything else (an int seed, the legacy
``numpy.random.RandomState``, ``random.Random``) is rejected by name: pass ``Generator(seed)`` instead.

Arguments are checked (``TypeError``/``ValueError`` naming the argument): shapes are sequences of non-negative
integers (any integer-like, ``np.int64`` included; bools and floats rejected), bounds are finite with ``low <= high``
(``low < high`` for :meth:`Generator.integers`), ``scale >= 0``, dtypes are floating for ``normal``/``uniform`` and
integral for ``integers``.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections import deque
from typing import Any, Sequence

import numpy as np

from ._backend import backend_name, base_of, default_float_dtype, is_array

__all__ = ["Generator", "NoiseGenerator", "as_generator"]


def _index(value: Any, name: str, minimum: int = 0) -> int:
    """``value`` as a Python int (any integer-like: ``operator.index``), ``>= minimum``; bools rejected."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an integer, got bool {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}") from None
    if out < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {out}")
    return out


def _shape(shape: Any, name: str = "shape") -> tuple:
    """A shape as a tuple of non-negative Python ints (an integer means a 1-D shape)."""
    if type(shape) is tuple and all(type(s) is int and s >= 0 for s in shape):  # the common case, already clean
        return shape
    try:
        return (_index(shape, name),)
    except TypeError:
        pass
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"{name}: expected an integer or a sequence of integers, got {type(shape).__name__} {shape!r}")
    return tuple(_index(s, f"{name}[{i}]") for i, s in enumerate(shape))


def _real(value: Any, name: str) -> float:
    """A finite real number (``TypeError`` for non-numbers and bools, ``ValueError`` for NaN and infinities)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return float(value)


def _wrapped_kind(rng: Any) -> str | None:
    """``"numpy"``/``"torch"`` for a backend generator that :class:`Generator` can wrap, else ``None``."""
    if isinstance(rng, np.random.Generator):
        return "numpy"
    if type(rng).__module__.startswith("torch") and type(rng).__name__ == "Generator":
        return "torch"
    return None


class Generator:
    """A seeded random generator producing arrays of namespace ``xp`` on ``device``.

    Args:
        seed: a non-negative integer seed; or a ``numpy.random.Generator`` / ``torch.Generator`` to draw from
            (shared, not copied: its state advances with every draw).
        xp: the array namespace (``numpy``, ``array_api_compat.torch``, ``array_api_strict``, CuPy...).
            Defaults to NumPy (to torch for a wrapped ``torch.Generator``).
        device: the device of the arrays it returns (backend default if ``None``; a wrapped ``torch.Generator``'s
            device).

    Example:
        >>> import numpy as np
        >>> g = Generator(0, xp=np)
        >>> g.normal((2, 3)).shape
        (2, 3)
    """

    def __init__(self, seed: Any = 0, xp: Any = None, device: Any = None):
        wrapped = _wrapped_kind(seed)
        if wrapped == "torch" and xp is None:
            import array_api_compat.torch as xp
        self.xp = np if xp is None else base_of(xp)
        self.device = device
        self._kind = backend_name(self.xp)
        if wrapped is not None:
            if wrapped != self._kind:
                what = "torch.Generator" if wrapped == "torch" else "numpy.random.Generator"
                raise TypeError(f"seed: a {what} draws {wrapped} arrays, but xp= is {self._kind}")
            self.seed, self._rng = None, seed
            if wrapped == "torch":
                import torch

                self._torch = torch
                self.device = seed.device if device is None else device
            return
        self.seed = seed = _index(seed, "seed")
        if self._kind == "torch":
            import torch

            self._torch = torch
            self._rng = torch.Generator(device="cpu" if device is None else device)
            self._rng.manual_seed(int(seed))
        elif self._kind == "cupy":
            import cupy

            self._rng = cupy.random.default_rng(seed)
        else:
            self._rng = np.random.default_rng(seed)

    # ------------------------------------------------------------------ helpers
    def _dtype(self, dtype: Any, kind: str = "real floating", method: str = "normal") -> Any:
        """``dtype`` (the namespace's default float if ``None``), checked to be of ``kind``."""
        if dtype is None:
            return default_float_dtype(self.xp, self.device) if kind == "real floating" else self.xp.int64
        isdtype = getattr(self.xp, "isdtype", None)
        if isdtype is None:  # a bare library module without the array API's isdtype: trust the caller
            return dtype
        try:
            ok = isdtype(dtype, kind)
        except (TypeError, ValueError, AttributeError):
            ok = False
        if not ok:
            raise TypeError(f"dtype: Generator.{method} expects {'an' if kind == 'integral' else 'a'} {kind} dtype "
                            f"of {self._kind}, got {dtype!r}")
        return dtype

    def _finish(self, arr: Any, dtype: Any) -> Any:
        """Convert a NumPy draw into the target namespace/dtype/device."""
        if self._kind in ("numpy", "cupy"):
            return arr.astype(dtype, copy=False)
        return self.xp.asarray(np.asarray(arr), dtype=dtype, device=self.device)

    # ------------------------------------------------------------------ draws
    def normal(self, shape: Any, dtype: Any = None, *, loc: float = 0.0, scale: float = 1.0) -> Any:
        """Standard normal draws (times ``scale`` plus ``loc``) of the given shape."""
        shape, dtype = _shape(shape), self._dtype(dtype)
        _real(loc, "loc")
        if _real(scale, "scale") < 0:
            raise ValueError(f"scale: expected >= 0, got {scale}")
        if self._kind == "torch":
            out = self._torch.randn(shape, generator=self._rng, dtype=dtype, device=self._rng.device)
            return out * scale + loc if (scale != 1.0 or loc != 0.0) else out
        if self._kind == "cupy":
            return self._rng.standard_normal(shape, dtype=dtype) * scale + loc
        return self._finish(self._rng.normal(loc, scale, size=shape), dtype)

    def uniform(self, shape: Any, low: float = 0.0, high: float = 1.0, dtype: Any = None) -> Any:
        """Uniform draws in ``[low, high)`` (``low == high`` gives the constant ``low``)."""
        shape, dtype = _shape(shape), self._dtype(dtype, method="uniform")
        if _real(low, "low") > _real(high, "high"):
            raise ValueError(f"high: expected >= low ({low}), got {high}")
        if self._kind == "torch":
            out = self._torch.rand(shape, generator=self._rng, dtype=dtype, device=self._rng.device)
            return out * (high - low) + low
        if self._kind == "cupy":
            return self._rng.uniform(low, high, size=shape).astype(dtype)
        return self._finish(self._rng.uniform(low, high, size=shape), dtype)

    def integers(self, low: int, high: int, shape: Any = (), dtype: Any = None) -> Any:
        """Integers in ``[low, high)`` (int64 unless ``dtype`` says otherwise)."""
        shape = _shape(shape)
        dtype = self._dtype(dtype, "integral", "integers")
        low, high = _index(low, "low", minimum=-(2**63)), _index(high, "high", minimum=-(2**63))
        if high <= low:
            raise ValueError(f"high: expected > low ({low}), got {high}")
        if self._kind == "torch":
            return self._torch.randint(low, high, shape, generator=self._rng, dtype=dtype, device=self._rng.device)
        if self._kind == "cupy":
            return self._rng.integers(low, high, size=shape).astype(dtype)
        return self._finish(self._rng.integers(low, high, size=shape), dtype)

    def permutation(self, n: int) -> Any:
        """A random permutation of ``0..n-1`` (int64)."""
        n = _index(n, "n")
        if self._kind == "torch":
            return self._torch.randperm(n, generator=self._rng, device=self._rng.device)
        if self._kind == "cupy":
            return self._rng.permutation(n)
        return self._finish(self._rng.permutation(n), self.xp.int64)

    # ------------------------------------------------------------------ injection
    @staticmethod
    def from_noise(*draws: Any) -> "NoiseGenerator":
        """A generator that returns ``draws`` in order, whatever method is called (shapes are checked)."""
        return NoiseGenerator(draws)


class NoiseGenerator:
    """Replays given arrays in order. Used to inject exact draws (e.g. TorchRL's) into a stochastic function.

    Every draw method pops the next array and checks that its shape matches the request, so a test cannot silently
    feed noise of the wrong shape. Raises ``RuntimeError`` when the queue is exhausted.
    """

    def __init__(self, draws: Sequence[Any]):
        for i, d in enumerate(draws):
            if not is_array(d):
                raise TypeError(f"draws[{i}]: expected an array, got {type(d).__name__}")
        self._queue = deque(draws)

    def _pop(self, method: str, shape: Any) -> Any:
        if not self._queue:
            raise RuntimeError(f"NoiseGenerator.{method}: no injected draws left")
        arr = self._queue.popleft()
        if shape is not None and tuple(arr.shape) != _shape(shape):
            raise ValueError(f"NoiseGenerator.{method}: expected a draw of shape {_shape(shape)}, got {tuple(arr.shape)}")
        return arr

    def normal(self, shape: Any, dtype: Any = None, *, loc: float = 0.0, scale: float = 1.0) -> Any:
        out = self._pop("normal", shape)
        return out * scale + loc if (scale != 1.0 or loc != 0.0) else out

    def uniform(self, shape: Any, low: float = 0.0, high: float = 1.0, dtype: Any = None) -> Any:
        return self._pop("uniform", shape)

    def integers(self, low: int, high: int, shape: Any = (), dtype: Any = None) -> Any:
        return self._pop("integers", shape)

    def permutation(self, n: int) -> Any:
        return self._pop("permutation", (n,))

    @property
    def remaining(self) -> int:
        return len(self._queue)


def as_generator(obj: Any, what: str = "generator") -> Any:
    """``obj`` as an arrayrl generator, for every function that takes one (``what`` names the argument in errors).

    * an arrayrl :class:`Generator` or :class:`NoiseGenerator` (or a subclass) is returned as is;
    * a ``numpy.random.Generator`` or a ``torch.Generator`` is wrapped (``Generator(obj)``: draws NumPy arrays,
      respectively torch tensors on the generator's device, advancing ``obj`` itself);
    * anything else raises ``TypeError`` naming ``what``: an int seed (ambiguous about the backend: pass
      ``Generator(seed, xp=...)``), ``None``, ``numpy.random.RandomState``, ``random.Random``...
    """
    if isinstance(obj, (Generator, NoiseGenerator)):
        return obj
    if _wrapped_kind(obj) is not None:
        return Generator(obj)
    hint = ""
    if isinstance(obj, numbers.Integral) and not isinstance(obj, bool):
        hint = f"; for a seed, pass arrayrl.random.Generator({obj}, xp=...)"
    elif isinstance(obj, np.random.RandomState):
        hint = "; the legacy RandomState is not supported, use numpy.random.default_rng(seed)"
    raise TypeError(
        f"{what}: expected an arrayrl.random.Generator (or a numpy.random.Generator / torch.Generator to wrap), "
        f"got {type(obj).__module__}.{type(obj).__qualname__}{hint}"
    )
