"""Grid reduction fusion: a sum/max/min over the leading axes of a float value (a column
reduction, ``sum(a * b, axis=0)``, or a full one, ``sum(x * x)``) or over a middle run of axes
(``sum(x, axis=1)`` of a 3-d x: the column layout with ``outer``), the elementwise chain
producing its operand, and a chain of elementwise ops on its result with constants (a mean's
``/ n``), become one "fused_grid_reduce" node (ops/fused_grid_reduce.py): on NumPy one pass
over blocks of the leading axis (the prologue evaluated per block, partial reductions
combined; for a middle run, each block of axis 0 gives its slice of the result), on CuPy the
two-stage grid kernels of codegen/reduce_grid.py.

Runs after the row-reduction grouping (passes/fuse_reduce.py), on what it left. A column
reduction whose operand a row group computes only for it (a layer norm's ``dy * xhat``)
recomputes that operand from the row group's per-row values (_Recompute), and a lone reduction
over the same axes of an array the group reads joins it (_siblings: a layer norm's db).

A producer joins when it is elementwise, makes a value of the operand's full shape, is no
graph output and every user of its value is in the group: then no path leaves the group and
comes back (only the last member's value is used outside, and nothing in the group descends
from it). A consumer joins when it is the one user of the group's result, elementwise, of the
result's shape, and its other operands are constants.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..codegen import is_inline_constant
from ..codegen.reduce_graph_grid import grid_kernel
from ..errors import UnsupportedError
from ..ir import Graph, Node, Value
from ..ops.registry import get_op
from .fuse import _body
from .fuse_groups import Ancestors, describe

FUSED_GRID_OP = "fused_grid_reduce"
GRID_REDUCERS = ("sum", "max", "min", "prod")  # codegen/reduce_grid.REDUCERS
GRID_DTYPES = (np.dtype("float32"), np.dtype("float64"))


def grid_axes(node: Node) -> tuple[int, int] | None:
    """(start, stop) when ``node`` is a sum/max/min of a float32/float64 value over the run of
    axes start..stop-1 with start == 0 (leading axes: a column reduction, or a full one when
    stop is the rank) or with axes kept on both sides (a middle run: the column layout with
    ``outer``), else None."""
    if node.op not in GRID_REDUCERS or len(node.inputs) != 1:
        return None
    x = node.inputs[0]
    axes = tuple(node.attrs["axis"])
    if x.dtype not in GRID_DTYPES or not x.shape or not axes:
        return None
    start, stop = axes[0], axes[-1] + 1
    if axes != tuple(range(start, stop)) or (start > 0 and stop == len(x.shape)):
        return None  # not one run; or trailing axes (a row reduction, not fused over several)
    return start, stop


def leading_axes(node: Node) -> int | None:
    """k when ``node`` is a grid reduction over axes (0, ..., k-1), else None."""
    run = grid_axes(node)
    return run[1] if run is not None and run[0] == 0 else None


def _elementwise(node: Node, shape: tuple[int, ...], graph_outputs: set[Value]) -> bool:
    return (
        get_op(node.op).family == "elementwise"
        and len(node.outputs) == 1
        and node.output.shape == shape
        and node.output.dtype in (*GRID_DTYPES, np.dtype("float16"), np.dtype("bool"))
        and node.output not in graph_outputs
    )


# recompute a row group's values in grid groups (env GPUGRAPH_GRID_RECOMPUTE=0: off; a bench
# compares both)
RECOMPUTE = os.environ.get("GPUGRAPH_GRID_RECOMPUTE", "1") != "0"
MAX_CLONES = 16  # ops a grid group may recompute from a row group's values
MAX_FULL_LEAVES = 3  # full-shape arrays such a recomputation may read


@dataclass
class GridGroup:
    """A grid group: ``members`` (original nodes, in graph order: what the fused node
    replaces), ``seeds`` (its reductions) and ``outs`` (the member values used outside, one per
    seed); ``body`` the nodes its body is built from: ``clones`` (recomputed row-group ops,
    new nodes) and the members with their inputs renamed through ``renamed``."""

    seeds: list[Node]
    members: list[Node]
    outs: list[Value]
    clones: list[Node] = field(default_factory=list)
    renamed: dict[Value, Value] = field(default_factory=dict)

    def body(self) -> tuple[list[Node], list[Value]]:
        nodes, env = list(self.clones), dict(self.renamed)
        for m in self.members:
            if any(v in env for v in m.inputs):
                copy = Node(
                    m.op, [env.get(v, v) for v in m.inputs], m.attrs, [m.output.type], m.loc
                )
                env[m.output] = copy.output
                m = copy
            nodes.append(m)
        return nodes, [env.get(v, v) for v in self.outs]


class _Recompute:
    """Clones of a row group's elementwise ops that make the full-shape operand of a column
    reduction (a layer norm's ``dy * xhat``) from the row group's per-row values (mean, rstd)
    and full-shape arrays made outside it: the row group then hands out the small values
    instead of writing a full-size temporary that only the reduction reads."""

    def __init__(self, full: tuple[int, ...], row: set[Node]) -> None:
        self.full, self.row = full, row
        self.clones: dict[Value, Node] = {}
        self.leaves: set[Value] = set()

    def clone(self, v: Value) -> Value | None:
        """The clone's value for ``v`` (a row-group value), or None where it cannot be made."""
        if v in self.clones:
            return self.clones[v].output
        n = v.node
        if (
            n is None
            or n not in self.row
            or get_op(n.op).family != "elementwise"
            or len(n.outputs) != 1
            or n.op == "constant"
            or len(self.clones) >= MAX_CLONES
        ):
            return None
        ins = []
        for u in n.inputs:
            if u.node is not None and u.node in self.row and u.shape == self.full:
                c = self.clone(u)  # full-shape and made in the row group: recompute it too
                if c is None:
                    return None
                ins.append(c)
                continue
            if u.shape == self.full and not (u.node is not None and is_inline_constant(u.node)):
                self.leaves.add(u)  # a full array made outside the row group: read
                if len(self.leaves) > MAX_FULL_LEAVES:
                    return None
            ins.append(u)  # a graph input, a constant, a per-row/column value: read
        copy = Node(n.op, ins, n.attrs, [v.type], n.loc)
        self.clones[v] = copy
        return copy.output


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


def _recomputed(g: GridGroup, users, rows: dict[Node, set[Node]], graph_outputs) -> bool:
    """Recompute the row-group values the members read in full (module docstring): only where
    the value is read by nothing else outside its row group (else it is written anyway)."""
    inside, full = set(g.members), g.seeds[0].inputs[0].shape
    for m in g.members:
        for v in m.inputs:
            row = rows.get(v.node) if v.node is not None else None
            if row is None or v in g.renamed or v.shape != full:
                continue
            if v in graph_outputs or any(u not in inside and u not in row for u in users[v]):
                continue
            plan = _Recompute(tuple(v.shape), row)
            got = plan.clone(v)
            if got is None:
                continue
            g.clones += [c for c in plan.clones.values() if c not in g.clones]
            g.renamed[v] = got
    return bool(g.renamed)


def grid_groups(graph: Graph, rows: dict[Node, set[Node]]) -> list[GridGroup]:
    """The grid groups of ``graph`` outside the row groups (``rows``: each row-group member ->
    its group's members); a group has two or more members, or recomputes row-group ops."""
    users, graph_outputs = graph.users(), set(graph.outputs)
    index = {n: i for i, n in enumerate(graph.nodes)}
    taken = set(rows)
    groups = []
    for node in graph.nodes:
        if node in taken or grid_axes(node) is None:
            continue
        members = sorted(grow(node, users, taken, graph_outputs), key=index.__getitem__)
        g = GridGroup([node], members, [members[-1].output])
        recomputed = RECOMPUTE and _recomputed(g, users, rows, graph_outputs)
        if len(members) > 1 or recomputed:
            taken |= set(members)
            groups.append(g)
    return _siblings(graph, groups, taken, index)


def _siblings(graph: Graph, groups: list[GridGroup], taken: set[Node], index) -> list[GridGroup]:
    """A lone reduction over the same leading axes of an array a group already reads in full
    (a layer norm's ``sum(dy, axis=0)`` beside ``sum(dy * xhat, axis=0)``) joins it: one pass
    over that array gives both. It must not descend from the group (nor the group from it:
    its operand is read by the group, so made before it)."""
    ancestors = Ancestors(index)
    for node in graph.nodes:
        run = grid_axes(node)
        if node in taken or run is None:
            continue
        x = node.inputs[0]
        for g in groups:
            if grid_axes(g.seeds[0]) != run or g.seeds[0].inputs[0].shape != x.shape:
                continue
            reads = {v for n in g.body()[0] for v in n.inputs}
            bits = sum(1 << index[m] for m in g.members)
            below = x.node is not None and ancestors.of(x.node) & bits
            above = any(ancestors.of(m) >> index[node] & 1 for m in g.members)
            if x in reads and not below and not above:
                g.seeds.append(node)
                g.members = sorted([*g.members, node], key=index.__getitem__)
                g.outs.append(node.output)
                taken.add(node)
                break
    return groups


def grid_node(g: GridGroup) -> tuple[Node, str]:
    """(the fused_grid_reduce node, its explain() note)."""
    nodes, outs = g.body()
    body, externals = _body(nodes, outs)
    seed = g.seeds[0]
    start, k = grid_axes(seed)
    attrs = {"body": body, "axes": k, "start": start}
    try:
        kernel = grid_kernel(body, k, start)
        attrs.update(kernel)
        how = f"grid kernels {kernel['kernel_name']} ({kernel['grid_layout']})"
    except UnsupportedError as e:
        attrs["cuda_refusal"] = str(e)
        how = f"no grid kernel (on CuPy its ops run one by one): {e}"
    node = Node(FUSED_GRID_OP, externals, attrs, [v.type for v in g.outs], g.members[-1].loc)
    x = seed.inputs[0]
    kind = "every axis" if k - start == len(x.shape) else f"axes {tuple(range(start, k))}"
    what = ", ".join(s.op for s in g.seeds)
    extra = ""
    if g.clones:
        made = ", ".join(str(v.type) for v in g.renamed)
        extra = (
            f"; recomputes {len(g.clones)} op(s) [{', '.join(c.op for c in g.clones)}] of a "
            f"row group instead of reading {made} (the row group hands out per-row values)"
        )
    note = (
        f"grid reduction group: {len(nodes)} ops, {what} over {kind} of {x.type} "
        f"[{', '.join(n.op for n in nodes)}] -> {', '.join(str(v.type) for v in g.outs)}; "
        f"{len(externals)} input(s); {how}{extra} ({describe(seed)})"
    )
    return node, note
