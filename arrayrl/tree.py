"""Pytrees: nested ``dict``/``list``/``tuple`` containers of arrays (parameters, gradients, optimizer state).

Containers are ``dict`` (keys kept in insertion order), ``list`` and ``tuple``; everything else is a leaf. ``None`` is
an empty subtree (kept in place, never passed to ``f``). These helpers are pure Python and backend-agnostic; they
sit in the backend layer so that the autodiff tape (gradients shaped like their arguments) and :mod:`arrayrl.nn`
share one implementation.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["tree_flatten", "tree_unflatten", "tree_leaves", "tree_map", "tree_structure_equal", "tree_paths"]


class TreeDef:
    """The structure of a pytree with its leaves removed (hashable-free, compared with ``==``)."""

    __slots__ = ("kind", "meta", "children")

    def __init__(self, kind: str, meta: Any, children: tuple):
        self.kind, self.meta, self.children = kind, meta, children

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TreeDef)
            and self.kind == other.kind
            and self.meta == other.meta
            and self.children == other.children
        )

    def __repr__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c!r}" for k, c in zip(self.meta, self.children)) + "}"
        inner = ", ".join(repr(c) for c in self.children)
        return f"[{inner}]" if self.kind == "list" else f"({inner})"


_LEAF = TreeDef("leaf", None, ())
_NONE = TreeDef("none", None, ())


def _flatten(tree: Any, leaves: list) -> TreeDef:
    if isinstance(tree, dict):
        keys = tuple(tree.keys())
        return TreeDef("dict", keys, tuple(_flatten(tree[k], leaves) for k in keys))
    if isinstance(tree, list):
        return TreeDef("list", len(tree), tuple(_flatten(v, leaves) for v in tree))
    if isinstance(tree, tuple):
        return TreeDef("tuple", len(tree), tuple(_flatten(v, leaves) for v in tree))
    if tree is None:
        return _NONE
    leaves.append(tree)
    return _LEAF


def tree_flatten(tree: Any) -> tuple[list, TreeDef]:
    """Return ``(leaves, treedef)``; leaves in depth-first, insertion order."""
    leaves: list = []
    return leaves, _flatten(tree, leaves)


def _unflatten(treedef: TreeDef, it) -> Any:
    kind = treedef.kind
    if kind == "leaf":
        return next(it)
    if kind == "none":
        return None
    children = [_unflatten(c, it) for c in treedef.children]
    if kind == "dict":
        return dict(zip(treedef.meta, children))
    return children if kind == "list" else tuple(children)


def tree_unflatten(treedef: TreeDef, leaves: list) -> Any:
    """Inverse of :func:`tree_flatten`."""
    it = iter(leaves)
    out = _unflatten(treedef, it)
    rest = sum(1 for _ in it)
    if rest:
        raise ValueError(f"tree_unflatten: {rest} leaves left over")
    return out


def tree_leaves(tree: Any) -> list:
    """The leaves of ``tree`` in flatten order."""
    return tree_flatten(tree)[0]


def tree_structure_equal(a: Any, b: Any) -> bool:
    return tree_flatten(a)[1] == tree_flatten(b)[1]


def tree_map(f: Callable[..., Any], tree: Any, *rest: Any) -> Any:
    """Apply ``f`` leafwise to ``tree`` and the trees in ``rest`` (which must have the same structure)."""
    leaves, treedef = tree_flatten(tree)
    others = []
    for i, r in enumerate(rest):
        rl, rd = tree_flatten(r)
        if rd != treedef:
            raise ValueError(f"tree_map: tree {i + 1} has structure {rd!r}, expected {treedef!r}")
        others.append(rl)
    return tree_unflatten(treedef, [f(x, *xs) for x, *xs in zip(leaves, *others)])


def tree_paths(tree: Any, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """``[(path, leaf), ...]`` where ``path`` is the tuple of keys/indices leading to each leaf."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in tree_paths(v, prefix + (k,))]
    if isinstance(tree, (list, tuple)):
        return [p for i, v in enumerate(tree) for p in tree_paths(v, prefix + (i,))]
    if tree is None:
        return []
    return [(prefix, tree)]
