"""Reduction fusion: a sum/max over the innermost axis, the elementwise chain that produces
its operand and the elementwise ops that consume its result (broadcast back over the row)
become one "fused_reduce" node (ops/fused_reduce.py): one pass over blocks of rows on NumPy,
one row kernel on CuPy.

Groups grow from each eligible reduction, in graph order, over producer -> consumer edges in
both directions. A node joins when it fits the reduction's row space (``member_kinds``: an
elementwise op over the full shape or over one value per row, another innermost reduction of
the same rows, a reshape between the two per-row shapes, a broadcast_to), when every edge
between it and the group agrees on how the value is laid out (a value of shape ``lead`` made
per row must not be read as a column by broadcasting), and when the group stays convex: no
path leaves the group and comes back (checked with the ancestor bitsets of fuse_groups: an
outside producer of a member that descends from the group is such a path). A node belongs to
the first group that takes it. Softmax, log_softmax, logsumexp, layer/rms norm, var and their
gradients' row-wise parts each become one group per direction; what a group hands out
(values used outside it) can be full-shape or per-row (a saved mean or rstd): several outputs.

Then a sum/max over the leading axes (a column or full reduction) that no row group took may
form a grid group with its own producers (passes/fuse_reduce_grid.py). Reductions that stay
unfused (a middle axis, another op, an integer dtype, or nothing to fuse with) get a note for
``Compiled.explain()``. Runs before the elementwise fusion, which then
treats the fused_reduce nodes as boundaries. ``ENABLED`` (env GPUGRAPH_REDUCE_FUSION=0 turns it
off) and ``gg.jit(fuse=False)`` (no fusion at all) switch it off.
"""

from __future__ import annotations

import heapq
import os

from ..codegen.reduce_graph import row_kernel
from ..errors import UnsupportedError
from ..ir import Graph, Node, Value
from ..ops.registry import get_op
from ..ops.row_space import REDUCE_DTYPES, ROW_REDUCERS, Space, member_kinds, reduction_space
from .fuse import _body, _stuck_groups, rebuild
from .fuse_groups import Ancestors, describe
from .fuse_reduce_grid import FUSED_GRID_OP, grid_axes, grid_groups, grid_node

FUSED_REDUCE_OP = "fused_reduce"
ENABLED = os.environ.get("GPUGRAPH_REDUCE_FUSION", "1") != "0"


# reductions that stay single ops, and why (the general reason below covers the others)
UNFUSED_REDUCTIONS = {
    "argmax": "argmax gives an int64 index: the kernels fold values (sum/max/min/prod), not "
    "(value, index) pairs, so it runs as its own op",
    "argmin": "argmin gives an int64 index: the kernels fold values (sum/max/min/prod), not "
    "(value, index) pairs, so it runs as its own op",
}


def why_not_row_reduction(node: Node) -> str:
    """Why a reduce-family node cannot seed a fused reduction group."""
    if node.op in UNFUSED_REDUCTIONS:
        return UNFUSED_REDUCTIONS[node.op]
    if node.op not in ROW_REDUCERS:
        return f"{node.op} is not a reduction the row kernels have ({', '.join(ROW_REDUCERS)})"
    x = node.inputs[0]
    if x.dtype not in REDUCE_DTYPES[node.op]:
        names = ", ".join(str(d) for d in REDUCE_DTYPES[node.op])
        return f"dtype {x.dtype} (a {node.op} fuses over {names})"
    if not x.shape:
        return "a 0-d operand has no axis to reduce"
    why = (
        f"over axes {tuple(node.attrs['axis'])} of {x.type}: only the innermost (last) axis "
        "alone fuses in a row group"
    )
    run = grid_axes(node)
    if run is not None:
        why += (
            f"; over {'leading' if run[0] == 0 else 'middle'} axes, a grid group needs an "
            "elementwise producer that only it reads or a consumer with constants (a row group "
            "may have taken the producer)"
        )
    return why


class _Grower:
    """Grows one group at a time from a seed reduction (see the module docstring)."""

    def __init__(self, graph: Graph) -> None:
        self.index = {n: i for i, n in enumerate(graph.nodes)}
        self.users = graph.users()
        self.ancestors = Ancestors(self.index)
        self.claimed: set[Node] = set()

    def _neighbours(self, node: Node, space: Space):
        """Producers, consumers, and other readers of a full-shape operand (siblings: one pass
        over that operand serves both, as a layer norm's mean and variance)."""
        for v in node.inputs:
            if v.node is not None:
                yield v.node
            if v.shape == space.full:
                yield from self.users.get(v, ())
        for v in node.outputs:
            yield from self.users.get(v, ())

    def grow(self, seed: Node, space: Space) -> list[Node]:
        made: dict[Node, str] = {}
        reads: dict[Node, list[str]] = {}
        made[seed], reads[seed] = member_kinds(seed, space)  # type: ignore[misc]
        self.outer_reads: dict[Value, str] = {v: reads[seed][0] for v in seed.inputs}
        group = {seed}
        bits = 1 << self.index[seed]
        outside = {v.node for v in seed.inputs if v.node is not None}
        heap = [(self.index[n], n.id, n) for n in self._neighbours(seed, space)]
        heapq.heapify(heap)
        while heap:
            _, _, n = heapq.heappop(heap)
            if n in group or n in self.claimed:
                continue
            kinds = member_kinds(n, space)
            if kinds is None or not self._agrees(n, kinds, made, reads, space):
                continue
            nbits = bits | 1 << self.index[n]
            nout = (outside | {v.node for v in n.inputs if v.node is not None}) - group - {n}
            if any(self.ancestors.of(q) & nbits for q in nout):
                continue  # a path would leave the group through q and come back
            group.add(n)
            made[n], reads[n] = kinds
            for v, r in zip(n.inputs, kinds[1]):
                if v.node not in group:
                    self.outer_reads.setdefault(v, r)
            bits, outside = nbits, nout
            for m in self._neighbours(n, space):
                if m not in group and m not in self.claimed:
                    heapq.heappush(heap, (self.index[m], m.id, m))
        self.claimed |= group
        return sorted(group, key=self.index.__getitem__)

    def _agrees(self, n: Node, kinds, made, reads, space: Space) -> bool:
        """Every edge between ``n`` and the group is laid out the same on both ends."""
        n_made, n_reads = kinds
        for v, r in zip(n.inputs, n_reads):
            if v.node in made and not space.compatible(made[v.node], r):
                return False
            # an outer value is one kernel/block argument with one layout: a (cols,) value
            # that is a column to one member cannot be one value per row to another
            seen = self.outer_reads.get(v)
            if v.node not in made and seen is not None and not space.compatible(seen, r):
                return False
        for v in n.outputs:
            for u in self.users.get(v, ()):
                if u in made:
                    for w, r in zip(u.inputs, reads[u]):
                        if w is v and not space.compatible(n_made, r):
                            return False
        return True


def reduction_groups(graph: Graph, notes: list[tuple[Node, str]]) -> list[tuple[Space, list[Node]]]:
    """The groups of ``graph`` (each with two or more members), notes on what stayed out."""
    grower = _Grower(graph)
    groups = []
    for node in graph.nodes:
        if node.op in UNFUSED_REDUCTIONS:  # (argmax is an index op, not of the reduce family)
            notes.append((node, UNFUSED_REDUCTIONS[node.op]))
            continue
        if get_op(node.op).family != "reduce" or node in grower.claimed:
            continue
        space = reduction_space(node)
        if space is None:
            notes.append((node, why_not_row_reduction(node)))
            continue
        members = grower.grow(node, space)
        if len(members) == 1:
            notes.append(
                (
                    node,
                    "no elementwise producer or consumer over the same rows "
                    f"{space.lead} x {space.cols}",
                )
            )
            continue
        groups.append((space, members))
    return groups


def live(members: list[Node], outs: list[Value]) -> list[Node]:
    """The members that some of ``outs`` needs, in order: a value only a grid group read
    (which now recomputes it) is no longer made."""
    need, keep = set(outs), []
    for n in reversed(members):
        if any(v in need for v in n.outputs):
            keep.append(n)
            need.update(n.inputs)
    return keep[::-1]


def _without_cycles(graph: Graph, groups: list, grids: list, notes: list[str]) -> tuple:
    """Drop groups until the groups can be ordered. Each is convex on its own, but two can
    need each other (a sibling reader of ``y`` in group A feeds group B's producers, and B's
    feeds A's): fused, the graph would have a cycle. The smallest stuck group goes first; its
    ops stay single (the elementwise pass may still fuse them)."""
    while True:
        sets_members = [m for _, m in groups] + [g.members for g in grids]
        sets = [set(m) for m in sets_members]
        stuck = _stuck_groups(graph, sets)
        if not stuck:
            return groups, grids
        k = min(stuck, key=lambda i: (len(sets[i]), i))
        seed = next(n for n in sets_members[k] if get_op(n.op).family == "reduce")
        notes.append(
            f"reduction left unfused: {describe(seed)}: its group would form a cycle with "
            "another reduction group"
        )
        if k < len(groups):
            groups = groups[:k] + groups[k + 1 :]
        else:
            k -= len(groups)
            grids = grids[:k] + grids[k + 1 :]


def fuse_reductions(graph: Graph) -> tuple[Graph, dict[str, int]]:
    """The pass: (graph with fused_reduce nodes, counts of what it did)."""
    if not ENABLED or any(n.op in (FUSED_REDUCE_OP, FUSED_GRID_OP) for n in graph.nodes):
        return graph, {}
    left: list[tuple[Node, str]] = []
    groups = reduction_groups(graph, left)
    rows = {n: set(members) for _, members in groups for n in members}
    grids = grid_groups(graph, rows)
    in_grid = {n for g in grids for n in g.members}
    notes = [
        f"reduction left unfused: {describe(node)}: {why}"
        for node, why in left
        if node not in in_grid
    ]
    groups, grids = _without_cycles(graph, groups, grids, notes)
    users, graph_outputs = graph.users(), set(graph.outputs)
    units: dict[Node, Node] = {n: n for n in graph.nodes}
    env: dict[Value, Value] = {}
    # grid groups first: what they read (a row group's mean and rstd where they recompute its
    # ops) a row group hands out; what only their recomputed ops read, it no longer does
    grid_notes, grid_reads = [], set()
    in_grid = {n for g in grids for n in g.members}
    for g in grids:
        node, note = grid_node(g)
        for m in g.members:
            units[m] = node
        env.update(zip(g.outs, node.outputs))
        grid_notes.append(note)
        grid_reads |= set(node.inputs)
    fused = 0
    for k, (space, members) in enumerate(groups):
        inside = set(members)
        outs = [
            v
            for n in members
            for v in n.outputs
            if v in graph_outputs
            or v in grid_reads
            or any(u not in inside and u not in in_grid for u in users[v])
        ]
        made = live(members, outs)
        body, externals = _body(made, outs)
        attrs = {"body": body, "lead": space.lead, "cols": space.cols}
        try:
            kernel = row_kernel(body, space)
            attrs.update(kernel.attrs())
            how = f"row kernel {kernel.name}"
        except UnsupportedError as e:
            attrs["cuda_refusal"] = str(e)
            how = f"no row kernel (on CuPy its ops run one by one): {e}"
        node = Node(FUSED_REDUCE_OP, externals, attrs, [v.type for v in outs], members[-1].loc)
        for m in members:
            units[m] = node
        env.update(zip(outs, node.outputs))
        fused += len(members)
        reductions = sum(m.op in ROW_REDUCERS for m in made)
        notes.append(
            f"reduction group {k}: {len(made)} ops, {reductions} reduction(s) over rows "
            f"{space.lead} x {space.cols} [{', '.join(m.op for m in made)}] -> "
            f"{', '.join(str(v.type) for v in outs)}; {len(externals)} input(s); {how}"
        )
    notes += grid_notes
    meta = dict(graph.meta, fusion_notes=graph.meta.get("fusion_notes", []) + notes)
    if not fused and not grids:
        return (Graph(graph.inputs, graph.nodes, graph.outputs, meta) if notes else graph), {}
    counts = {
        "op fused into a reduction group": fused,
        "reduction group formed": len(groups),
        "op fused into a grid reduction group": sum(len(g.members) for g in grids),
        "grid reduction group formed": len(grids),
    }
    return rebuild(graph, units, env, meta), {k: v for k, v in counts.items() if v}
