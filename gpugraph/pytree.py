"""Pytrees: nested tuples, lists and dicts (and None) of leaves, flattened for tracing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TreeDef:
    kind: str  # "leaf", "none", "tuple", "list", "dict"
    children: tuple[TreeDef, ...] = ()
    keys: tuple = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)


LEAF = TreeDef("leaf")


def flatten(obj: Any, is_leaf: Callable[[Any], bool] | None = None) -> tuple[list, TreeDef]:
    leaves: list = []

    def walk(o: Any) -> TreeDef:
        if is_leaf is not None and is_leaf(o):
            leaves.append(o)
            return LEAF
        if o is None:
            return TreeDef("none")
        if isinstance(o, tuple) and not hasattr(o, "_fields"):
            return TreeDef("tuple", tuple(walk(c) for c in o))
        if isinstance(o, list):
            return TreeDef("list", tuple(walk(c) for c in o))
        if isinstance(o, dict):
            keys = tuple(sorted(o, key=repr))
            return TreeDef("dict", tuple(walk(o[k]) for k in keys), keys)
        leaves.append(o)
        return LEAF

    return leaves, walk(obj)


def unflatten(treedef: TreeDef, leaves) -> Any:
    it = iter(leaves)

    def build(t: TreeDef) -> Any:
        if t.kind == "leaf":
            return next(it)
        if t.kind == "none":
            return None
        kids = [build(c) for c in t.children]
        if t.kind == "tuple":
            return tuple(kids)
        if t.kind == "list":
            return kids
        return dict(zip(t.keys, kids))

    return build(treedef)


def leaf_paths(treedef: TreeDef, prefix: str = "") -> list[str]:
    """Human-readable paths (``params['w']``, ``args[1][0]``) of every leaf, in order."""
    if treedef.kind == "leaf":
        return [prefix]
    if treedef.kind == "none":
        return []
    out: list[str] = []
    for i, child in enumerate(treedef.children):
        key = f"[{treedef.keys[i]!r}]" if treedef.kind == "dict" else f"[{i}]"
        out.extend(leaf_paths(child, prefix + key))
    return out
