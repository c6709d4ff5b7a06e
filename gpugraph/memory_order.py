"""Liveness of values over an order of steps, and a memory-aware topological order.

``liveness`` gives each value its slot kind and live range over a schedule; ``order_peak`` is the
peak of live bytes that implies for a single-stream order; ``memory_aware_order`` picks a
topological order with a low peak (a greedy list schedule, or the graph's own order) and
``reorder_for_memory`` applies it before scheduling.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from .ir import Graph, Node, Value
from .memory_place import lower_bound
from .schedule import Schedule, Step

VIEW_OPS = frozenset({"reshape"})


@dataclass
class Slot:
    value: Value
    kind: str
    size: int = 0
    offset: int = -1
    first: int = -1  # step that defines it
    last: int = -1  # last step that reads it, itself or through a view (the end, for outputs)
    base: Value | None = None  # for views: the value whose bytes are shared
    inplace: Value | None = None  # arena value whose bytes this one took over at ``first``


def view_root(slots: dict[Value, Slot], v: Value) -> Value:
    while slots[v].kind == "view":
        v = slots[v].base
    return v


def liveness(graph: Graph, sched: Schedule) -> tuple[dict[Value, Slot], dict[Value, list[int]]]:
    """Slots with def/last-use steps, and the steps reading each root (views count for their
    base)."""
    slots: dict[Value, Slot] = {v: Slot(v, "input", first=-1) for v in graph.inputs}
    readers: dict[Value, list[int]] = {}
    outputs, end = set(graph.outputs), len(sched.steps)
    for i, step in enumerate(sched.steps):
        node = step.node
        for v in node.inputs:
            root = view_root(slots, v)
            readers.setdefault(root, []).append(i)
            slots[root].last = max(slots[root].last, i)
        for v in node.outputs:
            if node.op == "constant":
                slots[v] = Slot(v, "const", first=i)
            elif v in outputs:
                slots[v] = Slot(v, "output", v.type.nbytes, first=i, last=end)
            elif node.op in VIEW_OPS:
                slots[v] = Slot(v, "view", first=i, last=i, base=node.inputs[0])
            else:
                slots[v] = Slot(v, "arena", v.type.nbytes, first=i, last=i)
    for s in slots.values():  # a view's own range ends when its root's does
        if s.kind == "view":
            s.last = slots[view_root(slots, s.value)].last
    return slots, readers


def order_peak(graph: Graph, order: Sequence[Node]) -> int:
    """Peak live intermediate bytes if ``graph`` ran in ``order`` (one stream, no in-place)."""
    slots, _ = liveness(graph, Schedule([Step(n) for n in order]))
    return lower_bound([(s.first, s.last, s.size) for s in slots.values() if s.kind == "arena"])


def _greedy_order(graph: Graph) -> list[Node]:
    """List scheduling: among ready nodes run the one that frees the most bytes net of what it
    allocates (ties: the earlier in graph order). Views are charged to their base.

    The ready nodes sit in a heap keyed by (-gain, position). A node's gain only grows, and only
    when it becomes the last unscheduled reader of one of its inputs' roots (from then on it
    would free that root); at that moment it is pushed again with its new gain, and heap entries
    whose gain is no longer current are skipped when popped. So each step costs O(log n) plus
    the node's own inputs and outputs, and the order is the one the plain rule picks."""
    outputs, pinned = set(graph.outputs), set(graph.inputs)
    base: dict[Value, Value] = {}
    for n in graph.nodes:
        if n.op in VIEW_OPS:
            base[n.outputs[0]] = base.get(n.inputs[0], n.inputs[0])
    root = {v: base.get(v, v) for v in graph.values()}
    pending: dict[Value, int] = {}
    readers: dict[Value, set[Node]] = {}  # unscheduled nodes reading each root
    for n in graph.nodes:
        for v in n.inputs:
            pending[root[v]] = pending.get(root[v], 0) + 1
            readers.setdefault(root[v], set()).add(n)
    missing = {n: len({v for v in n.inputs if v.node is not None}) for n in graph.nodes}
    users: dict[Value, list[Node]] = {}
    for n in graph.nodes:
        for v in {v for v in n.inputs if v.node is not None}:
            users.setdefault(v, []).append(n)
    pos = {n: k for k, n in enumerate(graph.nodes)}

    def freeable(r: Value) -> bool:
        return (
            r not in pinned and r not in outputs and r.node is not None and r.node.op != "constant"
        )

    def gain(n: Node) -> int:
        counts: dict[Value, int] = {}
        for v in n.inputs:
            counts[root[v]] = counts.get(root[v], 0) + 1
        freed = sum(r.type.nbytes for r, c in counts.items() if pending[r] == c and freeable(r))
        alloc = sum(
            v.type.nbytes
            for v in n.outputs
            if v not in outputs and n.op not in VIEW_OPS and n.op != "constant"
        )
        return freed - alloc

    current: dict[Node, int] = {}  # gain of each ready node as last pushed
    heap: list[tuple[int, int, Node]] = []

    def push(n: Node) -> None:
        current[n] = g = gain(n)
        heapq.heappush(heap, (-g, pos[n], n))

    for n in graph.nodes:
        if missing[n] == 0:
            push(n)
    order: list[Node] = []
    while heap:
        g, _, n = heapq.heappop(heap)
        if current.get(n) != -g:
            continue  # scheduled already, or pushed again since with a larger gain
        del current[n]
        order.append(n)
        for v in n.inputs:
            pending[root[v]] -= 1
        for r in {root[v] for v in n.inputs}:
            readers[r].discard(n)
            if len(readers[r]) == 1:  # its last reader now frees r: its gain grew
                (last,) = readers[r]
                if last in current:
                    push(last)
        for v in n.outputs:
            for u in users.get(v, ()):
                missing[u] -= 1
                if missing[u] == 0:
                    push(u)
    assert len(order) == len(graph.nodes), "graph has a cycle or a dangling use"
    return order


def _memory_aware(graph: Graph) -> tuple[list[Node], int]:
    greedy = _greedy_order(graph)
    greedy_peak, own_peak = order_peak(graph, greedy), order_peak(graph, graph.nodes)
    return (greedy, greedy_peak) if greedy_peak < own_peak else (graph.nodes, own_peak)


def memory_aware_order(graph: Graph) -> list[Node]:
    """A topological order of ``graph.nodes`` with a low peak of live bytes: the greedy list
    schedule, or the graph's own order when that one peaks lower."""
    return _memory_aware(graph)[0]


def reorder_for_memory(graph: Graph) -> Graph:
    """The same graph (same nodes and values) with its nodes in ``memory_aware_order``; call it
    before ``schedule`` so that the scheduler's order is the memory-aware one. The order's peak
    goes to ``meta["aware_peak_bytes"]`` (with the order, in ``meta["aware_order"]``, as node
    ids), so that the memory plan can report it without ordering again."""
    order, peak = _memory_aware(graph)
    meta = dict(graph.meta, aware_peak_bytes=peak, aware_order=tuple(n.id for n in order))
    return Graph(list(graph.inputs), list(order), list(graph.outputs), meta)


def aware_peak(graph: Graph, order: Sequence[Node]) -> int:
    """The peak of the memory-aware order: recorded by ``reorder_for_memory`` when ``order`` is
    the order it made, else computed (one more greedy pass)."""
    if graph.meta.get("aware_order") == tuple(n.id for n in order):
        return graph.meta["aware_peak_bytes"]
    return _memory_aware(Graph(graph.inputs, list(order), graph.outputs))[1]
