"""Pytrees: nested tuples, lists, dicts, NamedTuples and dataclass instances (and None) of
leaves, flattened for tracing; ``tree_map``, ``tree_leaves`` and ``tree_structure`` are public
(``gg.tree_map``...). A dataclass instance is a node when its class is frozen or registered
with ``register_dataclass``, and all its fields are ``__init__`` arguments (it is rebuilt by
calling the class with them); a class with ``__pytree_leaf__ = True`` (gg.ShapeDtype) stays a
leaf."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TreeDef:
    kind: str  # "leaf", "none", "tuple", "list", "dict", "namedtuple", "dataclass"
    children: tuple[TreeDef, ...] = ()
    keys: tuple = ()
    node_type: Any = None  # the class of a NamedTuple or dataclass node

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)


LEAF = TreeDef("leaf")
_NDARRAY = np.ndarray


def flatten(obj: Any, is_leaf: Callable[[Any], bool] | None = None) -> tuple[list, TreeDef]:
    leaves: list = []
    add = leaves.append

    def kids(items: Any) -> tuple[TreeDef, ...]:
        # an exact ndarray is a leaf whatever is_leaf says (no node type matches it): inline,
        # without a call per leaf, as a model's parameter tree is mostly such leaves
        out = []
        for c in items:
            if type(c) is _NDARRAY:
                add(c)
                out.append(LEAF)
            else:
                out.append(walk(c))
        return tuple(out)

    def walk(o: Any) -> TreeDef:
        if is_leaf is not None and is_leaf(o):
            leaves.append(o)
            return LEAF
        if o is None:
            return TreeDef("none")
        if isinstance(o, tuple) and hasattr(o, "_fields"):
            return TreeDef("namedtuple", kids(o), tuple(o._fields), type(o))
        if isinstance(o, tuple):
            return TreeDef("tuple", kids(o))
        if _is_dataclass_node(o):
            keys = tuple(f.name for f in dataclasses.fields(o))
            return TreeDef("dataclass", kids(getattr(o, k) for k in keys), keys, type(o))
        if isinstance(o, list):
            return TreeDef("list", kids(o))
        if isinstance(o, dict):
            keys = tuple(sorted(o, key=repr))
            return TreeDef("dict", kids(o[k] for k in keys), keys)
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
        if t.kind == "namedtuple":
            return t.node_type(*kids)
        if t.kind == "dataclass":
            return t.node_type(**dict(zip(t.keys, kids)))
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
        if treedef.kind == "dict":
            key = f"[{treedef.keys[i]!r}]"
        elif treedef.kind in ("namedtuple", "dataclass"):
            key = f".{treedef.keys[i]}"
        else:
            key = f"[{i}]"
        out.extend(leaf_paths(child, prefix + key))
    return out


_REGISTERED: set[type] = set()


def register_dataclass(cls: type) -> type:
    """Make instances of the (non-frozen) dataclass ``cls`` pytree nodes; usable as a
    decorator. Frozen dataclasses are nodes without it."""
    if not dataclasses.is_dataclass(cls) or not isinstance(cls, type):
        from .errors import GpuGraphError

        raise GpuGraphError(f"register_dataclass: {cls!r} is not a dataclass")
    _REGISTERED.add(cls)
    return cls


def _is_dataclass_node(o: Any) -> bool:
    cls = type(o)
    return (
        dataclasses.is_dataclass(cls)
        and not getattr(cls, "__pytree_leaf__", False)
        and (cls.__dataclass_params__.frozen or cls in _REGISTERED)
        and all(f.init for f in dataclasses.fields(cls))
    )


def tree_leaves(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> list:
    """The leaves of ``tree`` in order (None is an empty subtree, as in JAX)."""
    return flatten(tree, is_leaf)[0]


def tree_structure(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> TreeDef:
    """The structure of ``tree`` (a TreeDef: equal structures compare equal)."""
    return flatten(tree, is_leaf)[1]


def tree_map(
    fn: Callable, tree: Any, *rest: Any, is_leaf: Callable[[Any], bool] | None = None
) -> Any:
    """``fn`` applied to the leaves of ``tree`` (and the matching leaves of ``rest``, which
    must have the same structure); the result has ``tree``'s structure."""
    from .errors import GpuGraphError

    leaves, treedef = flatten(tree, is_leaf)
    others = []
    for i, r in enumerate(rest):
        lv, td = flatten(r, is_leaf)
        if td != treedef:
            raise GpuGraphError(
                f"tree_map: tree {i + 1} has another structure than the first: {td} vs {treedef}"
            )
        others.append(lv)
    return unflatten(treedef, [fn(*xs) for xs in zip(leaves, *others)])
