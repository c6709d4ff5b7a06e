"""Grid reduction fusion: a sum/max over the leading axes of a float value (a column reduction,
``sum(a * b, axis=0)``, or a full one, ``sum(x * x)``), the elementwise chain producing its
operand, and a chain of elementwise ops on its result with constants (a mean's ``/ n``), become
one "fused_grid_reduce" node (ops/fused_reduce.py): on NumPy one pass over blocks of the
leading axis (the prologue evaluated per block, partial reductions combined), on CuPy the
two-stage grid kernels of codegen/reduce_grid.py where the prologue reads one array.

Runs after the row-reduction grouping (passes/fuse_reduce.py), on what it left: a column
reduction whose operand a row group already computes (a layer norm's ``dy * xhat``, handed out
by the backward row group) has no producer left to fuse and stays a plain op.

A producer joins when it is elementwise, makes a value of the operand's full shape, is no
graph output and every user of its value is in the group: then no path leaves the group and
comes back (only the last member's value is used outside, and nothing in the group descends
from it). A consumer joins when it is the one user of the group's result, elementwise, of the
result's shape, and its other operands are constants.
"""

from __future__ import annotations

import numpy as np

from ..codegen.reduce_graph_grid import grid_kernel
from ..errors import UnsupportedError
from ..ir import Graph, Node, Value
from ..ops.registry import get_op
from .fuse import _body
from .fuse_groups import describe

FUSED_GRID_OP = "fused_grid_reduce"
GRID_DTYPES = (np.dtype("float32"), np.dtype("float64"))


def leading_axes(node: Node) -> int | None:
    """k when ``node`` is a sum/max over axes (0, ..., k-1) of a float32/float64 value, else
    None (k == rank: a full reduction)."""
    if node.op not in ("sum", "max") or len(node.inputs) != 1:
        return None
    x = node.inputs[0]
    axes = tuple(node.attrs["axis"])
    if x.dtype not in GRID_DTYPES or not x.shape or axes != tuple(range(len(axes))) or not axes:
        return None
    return len(axes)


def _elementwise(node: Node, shape: tuple[int, ...], graph_outputs: set[Value]) -> bool:
    return (
        get_op(node.op).family == "elementwise"
        and len(node.outputs) == 1
        and node.output.shape == shape
        and node.output.dtype in (*GRID_DTYPES, np.dtype("float16"), np.dtype("bool"))
        and node.output not in graph_outputs
    )


def grow(seed: Node, users, claimed: set[Node], graph_outputs: set[Value]) -> list[Node]:
    """The members of the group of ``seed`` (see the module docstring), not yet in order."""
    full = seed.inputs[0].shape
    group = {seed}
    stack = [v.node for v in seed.inputs if v.node is not None]
    while stack:
        n = stack.pop()
        if n in group or n in claimed or not _elementwise(n, full, graph_outputs):
            continue
        if n.op == "constant" or any(u not in group for u in users.get(n.output, ())):
            continue
        group.add(n)
        stack += [v.node for v in n.inputs if v.node is not None]
    last = seed
    while last.output not in graph_outputs:
        (nxt, *more) = users.get(last.output, ()) or (None,)
        if nxt is None or more or nxt in claimed:
            break
        others = [v for v in nxt.inputs if v is not last.output]
        if not _elementwise(nxt, last.output.shape, set()) or any(
            v.node is None or v.node.op != "constant" or v.shape != () for v in others
        ):
            break
        group.add(nxt)
        last = nxt
    return list(group)


def grid_groups(graph: Graph, claimed: set[Node]) -> list[tuple[Node, list[Node]]]:
    """(seed reduction, members in graph order) of each group, outside ``claimed`` (the row
    groups' members); a group has two or more members."""
    users, graph_outputs = graph.users(), set(graph.outputs)
    index = {n: i for i, n in enumerate(graph.nodes)}
    taken = set(claimed)
    groups = []
    for node in graph.nodes:
        if node in taken or leading_axes(node) is None:
            continue
        members = sorted(grow(node, users, taken, graph_outputs), key=index.__getitem__)
        if len(members) > 1:
            taken |= set(members)
            groups.append((node, members))
    return groups


def grid_node(seed: Node, members: list[Node]) -> tuple[Node, Value, str]:
    """(the fused_grid_reduce node, the member value it replaces, its explain() note)."""
    out = members[-1].output
    body, externals = _body(members, [out])
    k = leading_axes(seed)
    attrs = {"body": body, "axes": k}
    try:
        kernel = grid_kernel(body, k)
        attrs.update(kernel)
        how = f"grid kernels {kernel['kernel_name']} ({kernel['grid_layout']})"
    except UnsupportedError as e:
        attrs["cuda_refusal"] = str(e)
        how = f"no grid kernel (on CuPy its ops run one by one): {e}"
    node = Node(FUSED_GRID_OP, externals, attrs, [out.type], members[-1].loc)
    x = seed.inputs[0]
    kind = "every axis" if k == len(x.shape) else f"axes {tuple(range(k))}"
    note = (
        f"grid reduction group: {len(members)} ops, {seed.op} over {kind} of {x.type} "
        f"[{', '.join(m.op for m in members)}] -> {out.type}; {len(externals)} input(s); "
        f"{how} ({describe(seed)})"
    )
    return node, out, note
