"""A uniform replay buffer over nested-dict batches, on any backend.

The storage is a ring of preallocated arrays, one per leaf of the first batch added: same nested keys
(``("next", "reward")``...), dtype, trailing shape and device, with a leading axis of length ``capacity``. It stays
on the batch's device (a CuPy buffer never leaves the GPU).

Writes use ``__setitem__`` with a contiguous integer slice (``storage[i:j, ...] = values``), the one in-place update the
array API allows; a write that runs past the end of the ring is split into two slices. Sampling draws integer
indices from an :class:`arrayrl.random.Generator` (uniform, with replacement) and gathers with ``take``.

Both run once per environment step in the recipes, so the structure is compiled once, from the first batch, into
flat lists: the nested dicts (each read with one ``itemgetter``, its size checked), the expected dtype and shape
of every leaf (one comparison each), and a layout that rebuilds the nested output of :meth:`ReplayBuffer.sample`.
On NumPy storage, ``take`` is the array's own method (``ndarray.take``, the same gather without ``np.take``'s
dispatch).

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

import functools
import operator
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from .. import data as _data
from .._backend import device_of, namespace_of

__all__ = ["ReplayBuffer"]


def _at(batch: Mapping, path: tuple) -> Any:
    """``batch[path[0]][path[1]]...`` (no checks: the hot path; a bad path raises KeyError/TypeError)."""
    for k in path:
        batch = batch[k]
    return batch


def _item_getter(names: list) -> Callable[[Mapping], tuple]:
    """``node -> (node[names[0]], node[names[1]], ...)``, always a tuple (``operator.itemgetter`` is one for 2+)."""
    if len(names) == 1:
        name = names[0]
        return lambda node: (node[name],)
    return operator.itemgetter(*names) if names else lambda node: ()


def _gather(storage: Any) -> Callable[[Any], Any]:
    """``idx -> take(storage, idx, axis=0)``: ``ndarray.take`` on NumPy, else the namespace's ``take``."""
    if type(storage) is np.ndarray:
        return functools.partial(storage.take, axis=0)
    return functools.partial(namespace_of(storage).take, storage, axis=0)


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
        # the structure, compiled from the first batch (empty: unallocated); the leaves are numbered dict by dict
        # (breadth first), in each dict's order
        self._keys: list[tuple] = []  # nested key of each leaf
        self._storage: list[Any] = []  # one array [capacity, *shape] per leaf
        self._gathers: list = []  # one `idx -> storage[idx]` per leaf
        self._reads: list = []  # per nested dict: (path, number of entries, getter of its leaves)
        self._layout: list = []  # (parent dict, key, leaf number or None for a nested dict), to rebuild a batch
        self._dtypes: list = []  # the dtype of every leaf
        self._trailing: list = []  # the trailing shape of every leaf
        self._n = -1  # the batch size of the last batch, and the full shapes expected with it
        self._shapes: list = []
        self._pos = 0  # next row to write
        self._size = 0

    def __len__(self) -> int:
        return self._size

    # ------------------------------------------------------------------------------------------ writing
    def _allocate(self, batch: Mapping) -> None:
        """Fix the structure from the first batch: keys, trailing shapes, dtypes, devices."""
        keys: list = []
        layout: list = []
        reads: list = []
        nodes: list = [batch]
        paths: list[tuple] = [()]
        for parent, node in enumerate(nodes):  # breadth first: `nodes` grows while it is walked
            names = []
            for k, v in node.items():
                if isinstance(v, Mapping):
                    layout.append((parent, k, None))
                    nodes.append(v)
                    paths.append(paths[parent] + (k,))
                else:
                    layout.append((parent, k, len(keys)))
                    keys.append(paths[parent] + (k,))
                    names.append(k)
            reads.append((paths[parent], len(node), _item_getter(names)))
        if not keys:
            raise ValueError("batch: expected a nested dict with at least one array")
        leaves = [_at(batch, k) for k in keys]
        self._check_leaves(keys, leaves, None)
        self._keys, self._layout, self._reads = keys, layout, reads
        self._storage = [namespace_of(x).zeros((self.capacity, *x.shape[1:]), dtype=x.dtype, device=device_of(x))
                         for x in leaves]
        self._gathers = [_gather(s) for s in self._storage]
        self._dtypes = [s.dtype for s in self._storage]  # what every later leaf must match
        self._trailing = [tuple(s.shape[1:]) for s in self._storage]

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
        """The batch's leaves in storage order and its size, checked against the storage (the hot path: per nested
        dict one lookup, one ``len`` and one ``itemgetter``; per leaf one dtype and one shape comparison)."""
        if type(batch) is not dict and not isinstance(batch, Mapping):
            raise TypeError(f"batch: expected a nested dict of arrays, got {type(batch).__name__}")
        leaves: list = []
        try:
            for path, size, get in self._reads:
                node = _at(batch, path)
                if len(node) != size:  # an extra (or missing) key
                    raise KeyError(path)
                leaves += get(node)
        except (KeyError, TypeError, IndexError):
            raise self._structure_error(batch) from None
        try:
            n = leaves[0].shape[0]
            if n != self._n:  # the full shapes expected for this batch size (it rarely changes)
                self._n, self._shapes = n, [(n, *t) for t in self._trailing]
            ok = True
            for x, dtype, shape in zip(leaves, self._dtypes, self._shapes):
                if x.dtype != dtype or x.shape != shape:
                    ok = False
                    break
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
    def _assemble(self, leaves: list) -> dict:
        """The nested dict of the first batch's structure (and key order) holding ``leaves`` (in storage order)."""
        nodes: list = [{}]
        for parent, key, leaf in self._layout:  # breadth first, as the nested dicts were numbered
            if leaf is None:
                nodes.append({})
                nodes[parent][key] = nodes[-1]
            else:
                nodes[parent][key] = leaves[leaf]
        return nodes[0]

    def sample(self, batch_size: int, generator: Any) -> dict:
        """``batch_size`` transitions drawn uniformly with replacement, as a nested dict of ``[batch_size, ...]``.

        ``generator`` (an :class:`arrayrl.random.Generator` of the buffer's namespace and device) draws the indices
        ``idx`` (one call, ``integers(0, len(self), (batch_size,))``); every leaf is ``take(storage, idx, axis=0)``.
        """
        if self._size == 0:
            raise RuntimeError("sample: the buffer is empty")
        idx = generator.integers(0, self._size, (int(batch_size),))
        return self._assemble([gather(idx) for gather in self._gathers])

    def storage(self) -> dict:
        """The whole storage as a nested dict of ``[capacity, ...]`` arrays (rows ``>= len(self)`` are unused)."""
        return self._assemble(self._storage)
