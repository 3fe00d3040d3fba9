"""Nested batches: plain ``dict``s of arrays with nested keys written as tuples.

``batch[("next", "reward")]`` is ``batch["next"]["reward"]``. A string key is a top-level key. These helpers never
mutate their input unless the function name says so (``set_`` writes in place, as TorchRL's ``td.set``); ``with_``
returns a shallow-copied batch with the new entry.
"""

from __future__ import annotations

from collections.abc import Mapping  # (not typing.Mapping: isinstance against it is 3x slower)
from typing import Any, Iterable, Union

__all__ = ["NestedKey", "unravel_key", "get", "get_or", "has", "set_", "with_", "without", "select", "flatten_keys", "keys", "key_str"]

NestedKey = Union[str, tuple]

_MISSING = object()


def unravel_key(key: NestedKey) -> tuple:
    """``"a"`` -> ``("a",)``; ``("a", ("b", "c"))`` -> ``("a", "b", "c")``."""
    if isinstance(key, str):
        return (key,)
    if type(key) is tuple and key and all(type(k) is str for k in key):  # already flat (the hot path)
        return key
    out: tuple = ()
    for k in key:
        out += unravel_key(k)
    if not out:
        raise KeyError("empty nested key")
    return out


def key_str(key: NestedKey) -> str:
    """A readable form of a nested key for error messages: ``("next", "reward")`` -> ``('next', 'reward')``."""
    k = unravel_key(key)
    return repr(k[0]) if len(k) == 1 else repr(k)


def keys(batch: Mapping, *, leaves_only: bool = True) -> list[tuple]:
    """All nested keys of ``batch`` as tuples (leaves only by default)."""
    out = []
    for k, v in batch.items():
        if isinstance(v, Mapping):
            if not leaves_only:
                out.append((k,))
            out.extend((k,) + sub for sub in keys(v, leaves_only=leaves_only))
        else:
            out.append((k,))
    return out


def has(batch: Mapping, key: NestedKey) -> bool:
    return get_or(batch, key, _MISSING) is not _MISSING


def get_or(batch: Mapping, key: NestedKey, default: Any = None) -> Any:
    node: Any = batch
    for k in unravel_key(key):
        if type(node) is dict:  # the common case: a plain dict (no ABC isinstance check)
            node = node.get(k, _MISSING)
            if node is _MISSING:
                return default
        elif isinstance(node, Mapping) and k in node:
            node = node[k]
        else:
            return default
    return node


def get(batch: Mapping, key: NestedKey, *, what: str | None = None) -> Any:
    """Return ``batch[key]``; a missing key raises ``KeyError`` naming it and listing the keys present."""
    value = get_or(batch, key, _MISSING)
    if value is _MISSING:
        present = ", ".join(key_str(k) for k in keys(batch)) or "none"
        role = f" ({what})" if what else ""
        raise KeyError(f"key {key_str(key)}{role} not found in the batch; keys present: {present}")
    return value


def set_(batch: dict, key: NestedKey, value: Any) -> dict:
    """Write ``value`` at ``key`` in place, creating intermediate dicts. Returns ``batch``."""
    path = unravel_key(key)
    node = batch
    for k in path[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        elif not isinstance(nxt, dict):
            raise KeyError(f"cannot set {key_str(key)}: {k!r} holds a leaf, not a nested batch")
        node = nxt
    node[path[-1]] = value
    return batch


def with_(batch: Mapping, key: NestedKey, value: Any) -> dict:
    """A copy of ``batch`` with ``key`` set; only the dicts along the path are copied (arrays are shared)."""
    path = unravel_key(key)
    out = dict(batch)
    node = out
    for k in path[:-1]:
        child = node.get(k)
        child = dict(child) if isinstance(child, Mapping) else {}
        node[k] = child
        node = child
    node[path[-1]] = value
    return out


def without(batch: Mapping, key: NestedKey) -> dict:
    """A copy of ``batch`` without the nested ``key`` (only the dicts on the path are copied; absent keys are fine)."""
    k = unravel_key(key)
    out = dict(batch)
    if len(k) == 1:
        out.pop(k[0], None)
    elif isinstance(out.get(k[0]), Mapping):
        out[k[0]] = without(out[k[0]], k[1:])
    return out


def select(batch: Mapping, keys_: Iterable[NestedKey], *, strict: bool = True) -> dict:
    """A new nested batch with only ``keys_`` (missing keys raise ``KeyError`` when ``strict``)."""
    out: dict = {}
    for k in keys_:
        v = get(batch, k) if strict else get_or(batch, k, _MISSING)
        if v is not _MISSING:
            set_(out, k, v)
    return out


def flatten_keys(batch: Mapping, sep: str = "_") -> dict:
    """``{"next": {"reward": r}}`` -> ``{"next_reward": r}`` (TorchRL's kwargs-call naming)."""
    return {sep.join(k): get(batch, k) for k in keys(batch)}
