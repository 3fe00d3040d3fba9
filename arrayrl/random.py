"""Random numbers for every backend.

The array API standard has no random numbers, so arrayrl carries a small :class:`Generator` per backend. Every
stochastic function in arrayrl takes a ``Generator`` (or the noise itself), never a global seed.

``Generator(seed, xp=...)`` draws with the backend's own generator where one exists (NumPy's PCG64,
``torch.Generator``, CuPy's ``default_rng``); array-api-strict arrays are drawn with NumPy and converted.
:meth:`Generator.from_noise` builds a generator that replays given arrays, so a test can feed TorchRL's exact draws.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

import numpy as np

from ._backend import backend_name, default_float_dtype

__all__ = ["Generator", "NoiseGenerator"]


def _shape(shape: Any) -> tuple:
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)


class Generator:
    """A seeded random generator producing arrays of namespace ``xp`` on ``device``.

    Args:
        seed: integer seed.
        xp: the array namespace (``numpy``, ``array_api_compat.torch``, ``array_api_strict``, CuPy...).
            Defaults to NumPy.
        device: the device of the arrays it returns (backend default if ``None``).

    Example:
        >>> import numpy as np
        >>> g = Generator(0, xp=np)
        >>> g.normal((2, 3)).shape
        (2, 3)
    """

    def __init__(self, seed: int = 0, xp: Any = None, device: Any = None):
        self.xp = np if xp is None else getattr(xp, "_arrayrl_base", xp)
        self.device = device
        self.seed = seed
        self._kind = backend_name(self.xp)
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
    def _dtype(self, dtype: Any) -> Any:
        return default_float_dtype(self.xp, self.device) if dtype is None else dtype

    def _finish(self, arr: Any, dtype: Any) -> Any:
        """Convert a NumPy draw into the target namespace/dtype/device."""
        if self._kind in ("numpy", "cupy"):
            return arr.astype(dtype, copy=False)
        return self.xp.asarray(np.asarray(arr), dtype=dtype, device=self.device)

    # ------------------------------------------------------------------ draws
    def normal(self, shape: Any, dtype: Any = None, *, loc: float = 0.0, scale: float = 1.0) -> Any:
        """Standard normal draws (times ``scale`` plus ``loc``) of the given shape."""
        shape, dtype = _shape(shape), self._dtype(dtype)
        if self._kind == "torch":
            out = self._torch.randn(shape, generator=self._rng, dtype=dtype, device=self._rng.device)
            return out * scale + loc if (scale != 1.0 or loc != 0.0) else out
        if self._kind == "cupy":
            return self._rng.standard_normal(shape, dtype=dtype) * scale + loc
        return self._finish(self._rng.normal(loc, scale, size=shape), dtype)

    def uniform(self, shape: Any, low: float = 0.0, high: float = 1.0, dtype: Any = None) -> Any:
        """Uniform draws in ``[low, high)``."""
        shape, dtype = _shape(shape), self._dtype(dtype)
        if self._kind == "torch":
            out = self._torch.rand(shape, generator=self._rng, dtype=dtype, device=self._rng.device)
            return out * (high - low) + low
        if self._kind == "cupy":
            return self._rng.uniform(low, high, size=shape).astype(dtype)
        return self._finish(self._rng.uniform(low, high, size=shape), dtype)

    def integers(self, low: int, high: int, shape: Any = (), dtype: Any = None) -> Any:
        """Integers in ``[low, high)`` (int64 unless ``dtype`` says otherwise)."""
        shape = _shape(shape)
        dtype = self.xp.int64 if dtype is None else dtype
        if self._kind == "torch":
            return self._torch.randint(low, high, shape, generator=self._rng, dtype=dtype, device=self._rng.device)
        if self._kind == "cupy":
            return self._rng.integers(low, high, size=shape).astype(dtype)
        return self._finish(self._rng.integers(low, high, size=shape), dtype)

    def permutation(self, n: int) -> Any:
        """A random permutation of ``0..n-1`` (int64)."""
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
