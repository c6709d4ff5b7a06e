"""Common subexpression elimination by structural hashing.

Two nodes are the same computation when they have the same op, the same input values (after
earlier merges) and equal attrs. Constants are merged by dtype, shape and exact bytes, so
``0.0`` and ``-0.0`` stay apart while two NaN constants with one bit pattern merge. Float attrs
are compared by their exact bits too (``full(value=-0.0)`` is not ``full(value=0.0)``).
``add(a, b)`` and ``add(b, a)`` merge (COMMUTATIVE). Non-deterministic ops are never merged.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..ir import Graph, GraphBuilder, Node, Value, freeze, rebuild
from ..ops.registry import get_op


def attr_key(obj: Any) -> Any:
    """A hashable key for an attr that, unlike ``==``, separates -0.0 from 0.0, 1 from 1.0
    and True from 1, and makes NaN equal to itself."""
    if isinstance(obj, dict):
        return ("dict", tuple(sorted((k, attr_key(v)) for k, v in obj.items())))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(attr_key(v) for v in obj))
    if isinstance(obj, np.ndarray):
        data = np.ascontiguousarray(obj).tobytes()
        return ("ndarray", obj.dtype.str, obj.shape, hashlib.sha1(data).hexdigest())
    if isinstance(obj, np.generic):
        return ("scalar", obj.dtype.str, obj.tobytes())
    if isinstance(obj, float):
        return ("float", obj.hex())
    if isinstance(obj, (bool, int)):
        return (type(obj).__name__, obj)
    return freeze(obj)


# Binary ops whose result is the same bits with operands swapped (IEEE add and multiply are
# commutative; maximum/minimum are not: which zero maximum(-0.0, 0.0) returns depends on order).
COMMUTATIVE = frozenset({"add", "multiply", "equal", "not_equal", "logical_and", "logical_or"})


def node_key(node: Node, ins: list[Value]) -> Any:
    """Structural identity of ``node`` given its (already merged) inputs."""
    out_types = tuple((v.type.shape, v.type.dtype.str, v.type.weak) for v in node.outputs)
    attrs = tuple(sorted((k, attr_key(v)) for k, v in node.attrs.items()))
    operands = tuple(sorted(ins, key=lambda v: v.id)) if node.op in COMMUTATIVE else tuple(ins)
    return (node.op, operands, attrs, out_types)


def mergeable(node: Node) -> bool:
    return not get_op(node.op).extra.get("nondeterministic", False)


def _keep(b: GraphBuilder, node: Node, ins: list[Value]) -> list[Value]:
    """Carry ``node`` over as rebuild would (reuse it when its inputs did not change)."""
    if all(a is o for a, o in zip(ins, node.inputs)):
        b.nodes.append(node)
        return list(node.outputs)
    types = [v.type for v in node.outputs]
    return list(b.add_node(node.op, ins, node.attrs, types, node.loc).outputs)


def cse(graph: Graph) -> tuple[Graph, dict[str, int]]:
    """Merge structurally equal nodes into the first one in topological order."""
    seen: dict[Any, list[Value]] = {}
    rewrites: dict[str, int] = {}

    def visit(b: GraphBuilder, node: Node, ins: list[Value]) -> list[Value]:
        if not mergeable(node):
            return _keep(b, node, ins)
        key = node_key(node, ins)
        hit = seen.get(key)
        if hit is not None:
            name = "merge constant" if node.op == "constant" else f"merge {node.op}"
            rewrites[name] = rewrites.get(name, 0) + 1
            return hit
        outs = _keep(b, node, ins)
        seen[key] = outs
        return outs

    new = rebuild(graph, visit)
    return (new, rewrites) if rewrites else (graph, {})
