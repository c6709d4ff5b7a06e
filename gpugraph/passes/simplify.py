"""Algebraic simplification: local rewrites, one table of rules per op.

By default only rewrites that give bit-for-bit the IEEE result for every input (NaN, inf and
signed zeros included) are applied. ``x + 0.0 -> x`` is *not* one of them: ``-0.0 + 0.0`` is
``+0.0``; the exact identity of addition is ``-0.0`` (``x + (-0.0) == x`` for every x), and of
subtraction ``+0.0``. ``x * 0 -> 0`` is wrong for NaN and inf. Such rewrites run only with
``unsafe_math=True``. docs/optimizer.md lists every rule.

Broadcasting: ``x * ones((4, 3))`` with ``x: f32[3]`` is a broadcast of x, not x. A rule that
keeps an operand emits ``broadcast_to`` when the operand's shape differs from the output's.

The rule functions live in ``simplify_rules``; this module holds the tables and the driver.
"""

from __future__ import annotations

from ..ir import Graph, GraphBuilder, Node, Value, rebuild
from ..ops.registry import get_op
from .simplify_rules import (
    Ctx,
    Rule,
    add_zero,
    argmax_unit_axis,
    cast_cast,
    cast_same,
    chain,
    div_minus_one,
    div_one,
    identity,
    implicit_broadcast,
    involution,
    mul_minus_one,
    mul_one,
    mul_zero,
    reduce_unit_axes,
    same_operands,
    same_shape,
    sub_zero,
    transpose_identity,
    transpose_transpose,
    where_const,
    where_same,
    zero_sub,
)

# Rules per op, tried in order; the first that returns a value wins. Names show in explain().
RULES: dict[str, tuple[tuple[str, Rule], ...]] = {
    "add": (("x+0 -> x", add_zero),),
    "subtract": (("x-0 -> x", sub_zero), ("0-x -> -x", zero_sub)),
    "multiply": (
        ("x*1 -> x", mul_one),
        ("x*-1 -> -x", mul_minus_one),
        ("x*0 -> 0", mul_zero),
    ),
    "divide": (("x/1 -> x", div_one), ("x/-1 -> -x", div_minus_one)),
    "negative": (("--x -> x", involution("negative")),),
    "logical_not": (("!!x -> x", involution("logical_not")),),
    "maximum": (("max(x,x) -> x", same_operands),),
    "minimum": (("min(x,x) -> x", same_operands),),
    "where": (("where(c,x,x) -> x", where_same), ("where(const,x,y)", where_const)),
    "stop_gradient": (("stop_gradient -> x", identity),),
    "astype": (("astype same dtype -> x", cast_same), ("astype∘lossless astype", cast_cast)),
    "reshape": (("reshape same shape -> x", same_shape), ("reshape∘reshape", chain("reshape"))),
    "broadcast_to": (
        ("broadcast_to same shape -> x", same_shape),
        ("broadcast_to∘broadcast_to", chain("broadcast_to")),
    ),
    "transpose": (
        ("transpose identity -> x", transpose_identity),
        ("transpose∘transpose", transpose_transpose),
    ),
    "sum": (("reduce over size-1 axes", reduce_unit_axes),),
    "max": (("reduce over size-1 axes", reduce_unit_axes),),
    "min": (("reduce over size-1 axes", reduce_unit_axes),),
    "argmax": (("argmax over size-1 axis -> 0", argmax_unit_axis),),
}


# Rules for every op of a family, tried after the op's own rules.
FAMILY_RULES: dict[str, tuple[tuple[str, Rule], ...]] = {
    "elementwise": (("drop operand broadcast", implicit_broadcast),),
}


def simplify(graph: Graph, unsafe_math: bool = False) -> tuple[Graph, dict[str, int]]:
    """Apply the first matching rule of RULES to every node, in one topological sweep."""
    rewrites: dict[str, int] = {}

    def visit(b: GraphBuilder, node: Node, ins: list[Value]) -> list[Value] | None:
        rules = RULES.get(node.op, ()) + FAMILY_RULES.get(get_op(node.op).family, ())
        if not rules or len(node.outputs) != 1:
            return None
        ctx = Ctx(b, node, unsafe_math)
        for name, rule in rules:
            start = len(b.nodes)
            new = rule(ctx, ins)
            if new is None:
                assert len(b.nodes) == start, f"rule {name} emitted nodes but did not fire"
                continue
            t, want = new.type, node.output.type
            assert (t.shape, t.dtype) == (want.shape, want.dtype), (name, t, want)
            rewrites[name] = rewrites.get(name, 0) + 1
            return [new]
        return None

    new = rebuild(graph, visit)
    return (new, rewrites) if rewrites else (graph, {})


def simplify_unsafe(graph: Graph) -> tuple[Graph, dict[str, int]]:
    """simplify() with the non-IEEE-exact rewrites (x * 0 -> 0, x + 0.0 -> x) switched on."""
    return simplify(graph, unsafe_math=True)
