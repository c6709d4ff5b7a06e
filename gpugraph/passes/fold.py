"""Constant folding: a node whose inputs are all constants is evaluated with NumPy at compile
time and replaced by a constant node.

Limits, so folding never makes a graph worse or changes what it computes:

* size: a result with more than ``FOLD_MAX_ELEMENTS`` elements stays a node (a scalar
  ``full``/``broadcast_to``'d to a huge shape is not materialized); inputs larger than
  ``FOLD_MAX_INPUT_ELEMENTS`` are not touched either (no huge compile-time matmuls).
* dtype: each result is cast to exactly the dtype (and checked against the shape) that the
  op's shape rule inferred, as the runtime does when it writes into its output buffer.
* safety: ops that may raise at run time (a gather with an out-of-range index), are
  non-deterministic, or are opaque (fused kernels, nested graphs) are never folded. An impl
  that raises anyway is left in the graph, so the error still happens when the user runs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, GraphBuilder, Node, TensorType, Value, rebuild
from ..ops.core import run_node_impl
from ..ops.registry import get_op

FOLD_MAX_ELEMENTS = 1 << 16
FOLD_MAX_INPUT_ELEMENTS = 1 << 22
SPLAT_MAX_ELEMENTS = 1 << 16  # larger constants are not scanned for a repeated value

# Families whose ops are pure functions of their operands and attrs.
FOLDABLE_FAMILIES = frozenset(
    {"elementwise", "reduce", "linalg", "shape", "index", "creation", "nondiff"}
)
# Ops of those families that still must not be folded, and why (shown by docs and tests).
NO_FOLD_OPS: dict[str, str] = {
    "take": "an out-of-range index raises at run time",
    "take_grad": "an out-of-range index raises at run time",
}


def constant_of(v: Value) -> np.ndarray | None:
    """The array of a value defined by a constant node, else None."""
    node = v.node
    if node is not None and node.op == "constant":
        return node.attrs["value"]
    return None


def splat(v: Value) -> np.generic | None:
    """The one scalar every element of ``v`` equals (bit for bit), if v is a constant or a
    ``full``; else None."""
    node = v.node
    if node is None:
        return None
    if node.op == "full":
        return np.asarray(node.attrs["value"], dtype=node.attrs["dtype"])[()]
    if node.op != "constant":
        return None
    arr = node.attrs["value"]
    if arr.size == 0 or arr.size > SPLAT_MAX_ELEMENTS:  # big splats are `full` nodes anyway
        return None
    flat = np.ascontiguousarray(arr).reshape(-1)
    bits = flat.view(f"u{arr.dtype.itemsize}")
    return flat[0] if np.all(bits == bits[0]) else None


def foldable(node: Node) -> bool:
    """Whether ``node`` may be evaluated at compile time (inputs not considered)."""
    if node.op == "constant" or node.op in NO_FOLD_OPS:
        return False
    opdef = get_op(node.op)
    if opdef.family not in FOLDABLE_FAMILIES:
        return False
    if opdef.extra.get("nondeterministic") or opdef.extra.get("no_fold"):
        return False
    return not any(isinstance(a, Graph) for a in _flat_attrs(node.attrs))


def _flat_attrs(attrs: dict[str, Any]):
    for a in attrs.values():
        yield from a if isinstance(a, (tuple, list)) else (a,)


def _within_limits(node: Node, arrays: list[np.ndarray]) -> bool:
    if any(a.size > FOLD_MAX_INPUT_ELEMENTS for a in arrays):
        return False
    return all(v.type.size <= FOLD_MAX_ELEMENTS for v in node.outputs)


def evaluate(node: Node, arrays: list[np.ndarray]) -> list[np.ndarray] | None:
    """Run ``node`` on NumPy arrays; None when the impl raises or disagrees with the types."""
    try:
        with np.errstate(all="ignore"):
            results = run_node_impl(np, node.op, arrays, node.attrs)
    except Exception:  # the op raises for these operands: leave it to raise at run time
        return None
    if len(results) != len(node.outputs):
        return None
    out = []
    for r, v in zip(results, node.outputs):
        arr = np.array(r, dtype=v.type.dtype, copy=True, order="C")
        if arr.shape != v.type.shape:
            return None
        arr.flags.writeable = False  # attrs are immutable
        out.append(arr)
    return out


def _emit_constant(b: GraphBuilder, value: np.ndarray, loc: str | None) -> Value:
    t = TensorType(value.shape, value.dtype)
    return b.add_node("constant", [], {"value": value}, [t], loc).output


def fold(graph: Graph) -> tuple[Graph, dict[str, int]]:
    """Replace every foldable node whose inputs are all constants by constant nodes."""
    rewrites: dict[str, int] = {}

    def visit(b: GraphBuilder, node: Node, ins: list[Value]) -> list[Value] | None:
        if not foldable(node):
            return None
        arrays = [constant_of(v) for v in ins]
        if any(a is None for a in arrays) or not _within_limits(node, arrays):
            return None
        values = evaluate(node, arrays)
        if values is None:
            return None
        key = f"fold {node.op}"
        rewrites[key] = rewrites.get(key, 0) + 1
        return [_emit_constant(b, a, node.loc) for a in values]

    new = rebuild(graph, visit)
    return (new, rewrites) if rewrites else (graph, {})
