"""A uniform replay buffer over nested-dict batches, on any backend.

The storage is a ring of preallocated arrays, one per leaf of the first batch added: same nested keys
(``("next", "reward")``...), dtype, trailing shape and device, with a leading axis of length ``capacity``. It stays
on the batch's device (a CuPy buffer never leaves the GPU).

Writes use ``__setitem__`` with a contiguous integer slice (``storage[i:j, ...] = values``), the one in-place update the
array API allows; a write that runs past the end of the ring is split into two slices. Sampling draws integer
indices from an :class:`arrayrl.random.Generator` (uniform, with replacement) and gathers with ``take``.

Example:
    >>> import numpy as np
    >>> from arrayrl import Generator
    >>> rb = ReplayBuffer(capacity=4)
    >>> rb.extend({"observation": np.zeros((3, 2), np.float32), "next": {"reward": np.ones((3, 1), np.float32)}})
    >>> len(rb)
    3
    >>> rb.sample(5, Generator(0))["next"]["reward"].shape
    (5, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import data as _data
from .._backend import device_of, namespace_of

__all__ = ["ReplayBuffer"]


def _at(batch: Mapping, path: tuple) -> Any:
    """``batch[path[0]][path[1]]...`` (no checks: the hot path; a bad path raises KeyError/TypeError)."""
    for k in path:
        batch = batch[k]
    return batch


class ReplayBuffer:
    """A ring buffer of transitions with uniform sampling with replacement.

    Args:
        capacity: the number of transitions kept; older ones are overwritten first.

    The structure (nested keys, dtypes, trailing shapes, device) is fixed by the first :meth:`extend`; every later
    batch must match it (a mismatch raises ``ValueError`` naming the key).
    """

    def __init__(self, capacity: int):
        if int(capacity) != capacity or capacity < 1:
            raise ValueError(f"capacity: expected an integer >= 1, got {capacity!r}")
        self.capacity = int(capacity)
        self._keys: list[tuple] = []  # nested keys of the leaves, in the first batch's order (empty: unallocated)
        self._storage: list[Any] = []  # one array [capacity, *shape] per key
        self._dict_sizes: list = []  # (path of a nested dict, its number of entries)
        self._signature: list = []  # (dtype, trailing shape) of each storage array
        self._pos = 0  # next row to write
        self._size = 0

    def __len__(self) -> int:
        return self._size

    # ------------------------------------------------------------------------------------------ writing
    def _allocate(self, batch: Mapping) -> None:
        """Fix the structure from the first batch: keys, trailing shapes, dtypes, devices."""
        keys = _data.keys(batch)
        if not keys:
            raise ValueError("batch: expected a nested dict with at least one array")
        leaves = [_data.get(batch, k) for k in keys]
        self._check_leaves(keys, leaves, None)
        self._keys = keys
        self._storage = [namespace_of(x).zeros((self.capacity, *x.shape[1:]), dtype=x.dtype, device=device_of(x))
                         for x in leaves]
        self._signature = [(s.dtype, s.shape[1:]) for s in self._storage]  # what every later leaf must match
        # the size of every nested dict, so that an extra key is caught without walking the batch
        self._dict_sizes = [(p, len(_data.get(batch, p)) if p else len(batch))
                            for p in {k[:i] for k in keys for i in range(len(k))}]

    def _check_leaves(self, keys: list, leaves: list, storage: list | None) -> int:
        """The common batch size; ``ValueError`` naming the key for a bad leaf (no batch axis, another batch size,
        or another trailing shape / dtype than the storage)."""
        n = None
        for i, (k, x) in enumerate(zip(keys, leaves)):
            name = _data.key_str(k)
            if not hasattr(x, "shape") or len(x.shape) == 0:
                raise ValueError(f"batch[{name}]: expected an array with a leading batch axis, got {type(x).__name__}")
            if n is None:
                n = x.shape[0]
            elif x.shape[0] != n:
                raise ValueError(f"batch[{name}]: batch size {x.shape[0]} differs from the first leaf's {n}")
            if storage is not None:
                s = storage[i]
                if tuple(x.shape[1:]) != tuple(s.shape[1:]):
                    raise ValueError(f"batch[{name}]: expected shape [B, {', '.join(map(str, s.shape[1:]))}] (from "
                                     f"the first batch), got {list(x.shape)}")
                if x.dtype != s.dtype:
                    raise ValueError(f"batch[{name}]: expected dtype {s.dtype} (from the first batch), got {x.dtype}")
                if device_of(x) != device_of(s):
                    raise ValueError(f"batch[{name}]: expected device {device_of(s)} (from the first batch), got "
                                     f"{device_of(x)}")
        return 0 if n is None else n

    def _structure_error(self, batch: Mapping) -> ValueError:
        got, want = set(_data.keys(batch)), set(self._keys)
        missing = [_data.key_str(k) for k in self._keys if k not in got]
        extra = [_data.key_str(k) for k in sorted(got - want)]
        return ValueError(f"batch: structure differs from the buffer's (fixed by the first batch): missing keys "
                          f"{missing}, unexpected keys {extra}")

    def _leaves(self, batch: Mapping) -> tuple[list, int]:
        """The batch's leaves in storage order and its size, checked against the storage (the hot path: a few
        dict lookups and comparisons per leaf)."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch: expected a nested dict of arrays, got {type(batch).__name__}")
        try:
            leaves = [batch[k[0]] if len(k) == 1 else _at(batch, k) for k in self._keys]
            sizes_ok = all(len(_at(batch, p)) == size for p, size in self._dict_sizes)
        except (KeyError, TypeError, IndexError):
            raise self._structure_error(batch) from None
        if not sizes_ok:
            raise self._structure_error(batch)
        try:
            n = leaves[0].shape[0]
            ok = all(x.dtype == dtype and x.shape[1:] == trailing and x.shape[0] == n
                     for x, (dtype, trailing) in zip(leaves, self._signature))
        except (AttributeError, IndexError, TypeError):
            ok = False
        if not ok:
            return leaves, self._check_leaves(self._keys, leaves, self._storage)  # raises, naming the key
        return leaves, n

    def extend(self, batch: Mapping) -> None:
        """Add a batch of transitions (every leaf has the leading batch axis ``[B, ...]``).

        With ``B > capacity`` only the last ``capacity`` transitions are kept.
        """
        if not self._keys:
            self._allocate(batch)
        leaves, n = self._leaves(batch)
        if n == 0:
            return
        cap = self.capacity
        if n > cap:
            leaves, n = [x[n - cap:, ...] for x in leaves], cap
        start, end = self._pos, self._pos + n
        if end <= cap:
            for s, x in zip(self._storage, leaves):
                s[start:end, ...] = x
        else:  # wrap: the head fills the ring's end, the tail its start
            head = cap - start
            for s, x in zip(self._storage, leaves):
                s[start:, ...] = x[:head, ...]
                s[: n - head, ...] = x[head:, ...]
        self._pos = end % cap
        self._size = min(self._size + n, cap)

    # ------------------------------------------------------------------------------------------ reading
    def sample(self, batch_size: int, generator: Any) -> dict:
        """``batch_size`` transitions drawn uniformly with replacement, as a nested dict of ``[batch_size, ...]``.

        ``generator`` (an :class:`arrayrl.random.Generator` of the buffer's namespace and device) draws the indices.
        """
        if self._size == 0:
            raise RuntimeError("sample: the buffer is empty")
        idx = generator.integers(0, self._size, (int(batch_size),))
        out: dict = {}
        for k, s in zip(self._keys, self._storage):
            _data.set_(out, k, namespace_of(s).take(s, idx, axis=0))
        return out

    def storage(self) -> dict:
        """The whole storage as a nested dict of ``[capacity, ...]`` arrays (rows ``>= len(self)`` are unused)."""
        out: dict = {}
        for k, s in zip(self._keys, self._storage):
            _data.set_(out, k, s)
        return out
