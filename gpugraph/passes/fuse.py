"""Elementwise fusion: maximal convex groups of elementwise ops become one "fused" node.

Every elementwise op the CUDA codegen can express starts as a group of its own; groups joined by
a producer -> consumer edge are merged when the union stays convex (no path leaves the group and
re-enters it, so the fused graph has no cycle) and every value the group hands to the rest of the
graph (its outputs, each written once) has the group's full iteration shape. Then sibling groups
(groups that read the same outer value and have the same iteration shape) merge under the same
rules, so that value is read once, by one kernel with several outputs. Scalar constants are
copied into the body and become literals in the kernel. Reductions, matmul and shape ops are
boundaries. Single ops become fused nodes too, so every elementwise op runs as a generated
kernel on CuPy (uniform launch path). Notes for ``Compiled.explain()`` go to
``graph.meta["fusion_notes"]``. The grouping (and what it costs) is in ``fuse_groups``; this
module breaks the rare cycles between groups and builds the fused nodes.
"""

from __future__ import annotations

import heapq

from ..codegen import emit_kernel, is_inline_constant
from ..errors import UnsupportedError
from ..ir import Graph, GraphBuilder, Node, Value
from .fuse_groups import describe as _describe
from .fuse_groups import group_nodes

FUSED_OP = "fused"


def _stuck_groups(graph: Graph, groups: list[set[Node]]) -> list[int]:
    """Indices of multi-node groups that cannot be ordered once every group is one node.

    Each group is convex on its own, but two convex groups can still need each other (A feeds
    B through one edge and B feeds A through another): then the fused graph has a cycle."""
    owner = {n: i for i, g in enumerate(groups) if len(g) > 1 for n in g}
    unit = {n: ("g", owner[n]) if n in owner else ("n", n.id) for n in graph.nodes}
    deps: dict[tuple, set[tuple]] = {u: set() for u in unit.values()}
    for node in graph.nodes:
        for v in node.inputs:
            if v.node is not None and unit[v.node] != unit[node]:
                deps[unit[node]].add(unit[v.node])
    users: dict[tuple, list[tuple]] = {u: [] for u in deps}
    for u, d in deps.items():
        for p in d:
            users[p].append(u)
    waiting = {u: len(d) for u, d in deps.items()}
    ready = [u for u, c in waiting.items() if c == 0]
    while ready:  # peel sources: what is left is on a cycle or downstream of one
        for u in users[ready.pop()]:
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    left = {u for u, c in waiting.items() if c > 0}
    feeding = {u: sum(w in left for w in users[u]) for u in left}
    sinks = [u for u, c in feeding.items() if c == 0]
    while sinks:  # peel sinks: what is left is on a cycle (or between two)
        u = sinks.pop()
        left.discard(u)
        for p in deps[u]:
            if p in left:
                feeding[p] -= 1
                if feeding[p] == 0:
                    sinks.append(p)
    return sorted(u[1] for u in left if u[0] == "g")


def _break_cycles(graph: Graph, groups: list[set[Node]], notes: list[str]) -> list[set[Node]]:
    """Split groups into single ops until the groups can be ordered (rare; see above)."""
    index = {n: i for i, n in enumerate(graph.nodes)}
    while stuck := _stuck_groups(graph, groups):
        k = min(stuck, key=lambda i: (len(groups[i]), min(index[n] for n in groups[i])))
        members = sorted(groups[k], key=index.__getitem__)
        notes.append(
            f"split: {', '.join(map(_describe, members))}: fused whole it would form a cycle "
            "with another group"
        )
        groups = groups[:k] + [{n} for n in members] + groups[k + 1 :]
    return groups


def _body(members: list[Node], outputs: list[Value]) -> tuple[Graph, list[Value]]:
    """The group as its own graph, and the outer values that feed it (its node's inputs)."""
    b = GraphBuilder()
    env: dict[Value, Value] = {}
    externals: list[Value] = []
    inside = set(members)
    for node in members:
        ins = []
        for v in node.inputs:
            if v not in env:
                if v.node is not None and is_inline_constant(v.node):
                    const = v.node
                    env[v] = b.add_node("constant", [], const.attrs, [v.type], const.loc).output
                else:
                    assert v.node not in inside
                    env[v] = b.add_input(v.type)
                    externals.append(v)
            ins.append(env[v])
        copy = b.add_node(node.op, ins, node.attrs, [o.type for o in node.outputs], node.loc)
        env.update(zip(node.outputs, copy.outputs))
    return b.build([env[v] for v in outputs]), externals


def _order(graph: Graph, units: dict[Node, Node]) -> list[Node]:
    """Topological order of the new nodes; ``units`` maps each old node to its new node."""
    deps: dict[Node, set[Node]] = {}
    key: dict[Node, int] = {}
    for i, old in enumerate(graph.nodes):
        new = units[old]
        key[new] = max(key.get(new, -1), i)
        d = deps.setdefault(new, set())
        for v in old.inputs:
            if v.node is not None and units[v.node] is not new:
                d.add(units[v.node])
    waiting = {n: len(d) for n, d in deps.items()}
    users: dict[Node, list[Node]] = {n: [] for n in deps}
    for n, d in deps.items():
        for p in d:
            users[p].append(n)
    ready = [(key[n], n.id, n) for n, c in waiting.items() if c == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, n = heapq.heappop(ready)
        order.append(n)
        for u in users[n]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, (key[u], u.id, u))
    assert len(order) == len(deps), "fusion produced a cycle"
    return order


def rebuild(graph: Graph, units: dict[Node, Node], env: dict[Value, Value], meta: dict) -> Graph:
    """The graph of the new nodes (``units``: old node -> its new node, a group's fused node
    for its members) in topological order, every input renamed through ``env`` (old value ->
    the group output that replaces it); shared by the elementwise and reduction passes."""

    def resolve(v: Value) -> Value:
        while v in env:
            v = env[v]
        return v

    new_nodes = []
    for node in _order(graph, units):
        ins = [resolve(v) for v in node.inputs]
        if any(a is not b for a, b in zip(ins, node.inputs)):
            copy = Node(node.op, ins, node.attrs, [o.type for o in node.outputs], node.loc)
            env.update(zip(node.outputs, copy.outputs))
            node = copy
        new_nodes.append(node)
    return Graph(list(graph.inputs), new_nodes, [resolve(v) for v in graph.outputs], meta)


def fuse(graph: Graph, vectorize: bool = True) -> tuple[Graph, dict[str, int]]:
    """The fusion pass: (graph with fused nodes, counts of what it did). ``vectorize``: kernels
    get the vector path (codegen/cuda.py)."""
    if any(n.op == FUSED_OP for n in graph.nodes):
        return graph, {}
    notes: list[str] = []
    groups = _break_cycles(graph, group_nodes(graph, notes), notes)
    index = {n: i for i, n in enumerate(graph.nodes)}
    users, graph_outputs = graph.users(), set(graph.outputs)
    units: dict[Node, Node] = {n: n for n in graph.nodes}
    env: dict[Value, Value] = {}
    fused_ops = 0
    for k, group in enumerate(groups):
        members = sorted(group, key=index.__getitem__)
        outs = [
            v
            for n in members
            for v in n.outputs
            if v in graph_outputs or any(u not in group for u in users[v])
        ]
        if not outs:  # dead code (optimize=False keeps it): nothing to write, nothing to fuse
            notes.append(f"left unfused: {', '.join(map(_describe, members))}: no result is used")
            continue
        body, externals = _body(members, outs)
        try:
            kernel = emit_kernel(body, vectorize=vectorize)
        except UnsupportedError as e:
            notes.append(f"left unfused: {', '.join(map(_describe, members))}: {e}")
            continue
        attrs = {"body": body, **kernel.attrs()}
        node = Node(FUSED_OP, externals, attrs, [v.type for v in outs], members[-1].loc)
        for m in members:
            units[m] = node
        env.update(zip(outs, node.outputs))
        fused_ops += len(members)
        ops = ", ".join(m.op for m in members)
        kind = "single op" if len(members) == 1 else f"{len(members)} ops"
        notes.append(
            f"group {k}: {kind} [{ops}] -> {len(outs)} output(s) "
            f"{', '.join(str(v.type) for v in outs)}; {len(externals)} input(s); "
            f"kernel {kernel.name}" + (f" ({kernel.lanes} lanes)" if kernel.lanes > 1 else "")
        )
    if not fused_ops:
        if notes:
            meta = dict(graph.meta, fusion_notes=graph.meta.get("fusion_notes", []) + notes)
            return Graph(graph.inputs, graph.nodes, graph.outputs, meta), {}
        return graph, {}

    meta = dict(graph.meta, fusion_notes=graph.meta.get("fusion_notes", []) + notes)
    new = rebuild(graph, units, env, meta)
    fused_nodes = sum(n.op == FUSED_OP for n in new.nodes)
    return new, {
        "elementwise op fused": fused_ops,
        "fused kernel formed": fused_nodes,
    }
