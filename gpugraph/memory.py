"""Memory planning: liveness over the schedule, in-place reuse, views, offsets in one arena.

Every value lives in one of five places (``Slot.kind``):
  "input"  a user's argument (never written),
  "arena"  bytes [offset, offset+size) of the per-Compiled arena,
  "view"   a reshape of another value (no bytes of its own; keeps its base alive),
  "output" a fresh buffer per call, returned to the user (never arena memory),
  "const"  a constant uploaded once at lowering.

Arena values are grouped into buffers: an elementwise (or in-place-safe fused) output that takes
over a dying input's bytes joins that input's buffer. Two buffers may share bytes only if every
access of one happens-before the first write of the other (``Schedule.happens_before``). On one
stream that is the interval rule and ``plan_intervals`` is the fast path; with several streams
the planner builds the conflict sets from happens-before queries instead.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from .ir import Graph, Node, Value
from .ops.registry import get_op
from .schedule import Schedule

ALIGN = 256
VIEW_OPS = frozenset({"reshape"})
REUSE_DEFAULT = True  # tests flip this to compare planned and unplanned runs
SEARCH_WORK = 1_000_000  # bound on placement work (items + conflicts, summed over tries)


def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a if a > 1 else n


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


@dataclass
class MemoryPlan:
    slots: dict[Value, Slot]
    arena_bytes: int
    naive_bytes: int
    lower_bound_bytes: int  # peak of live (aligned) buffer bytes over the chosen order
    live_peak_bytes: int = 0  # the same peak with unaligned sizes
    inplace_count: int = 0
    method: str = ""
    order_peak_bytes: int = 0  # peak live bytes of this order (unaligned, before in-place)
    aware_peak_bytes: int = 0  # the same under memory_aware_order(graph), for comparison
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        ratio = self.naive_bytes / self.arena_bytes if self.arena_bytes else float("inf")
        over = self.arena_bytes / self.lower_bound_bytes if self.lower_bound_bytes else 1.0
        n_arena = sum(s.kind == "arena" for s in self.slots.values())
        n_view = sum(s.kind == "view" for s in self.slots.values())
        return (
            f"arena {self.arena_bytes} B for {n_arena} values ({self.inplace_count} in place, "
            f"{n_view} views), naive {self.naive_bytes} B ({ratio:.2f}x saved), "
            f"lower bound {self.lower_bound_bytes} B (arena/bound {over:.3f}; {self.method}); "
            f"order peak {self.order_peak_bytes} B, memory-aware order {self.aware_peak_bytes} B"
        )

    def root(self, v: Value) -> Value:
        """The value whose bytes ``v`` occupies (itself unless it is a view)."""
        return _root(self.slots, v)

    def table(self) -> str:
        """One line per planned value: kind, offset, size, live range, what it aliases."""
        lines = []
        for s in sorted(self.slots.values(), key=lambda s: (s.first, s.value.id)):
            alias = f" view of #{s.base.id}" if s.base is not None else ""
            alias += f" in place of #{s.inplace.id}" if s.inplace is not None else ""
            op = s.value.node.op if s.value.node is not None else "input"
            lines.append(
                f"#{s.value.id:<6} {op:<12} {s.kind:<6} off={s.offset:<10} size={s.size:<10} "
                f"live=[{s.first},{s.last}]{alias}"
            )
        return "\n".join(lines)


# -- the raw planners ------------------------------------------------------------------------
def _place(sizes: Sequence[int], conflicts: list[list[int]], order: Sequence[int], align: int):
    """Put each item, in ``order``, into the smallest gap between already placed conflicting
    items that holds it (best fit), else just above them."""
    offsets = [-1] * len(sizes)
    total = 0
    for i in order:
        size = sizes[i]
        busy = sorted((offsets[j], offsets[j] + sizes[j]) for j in conflicts[i] if offsets[j] >= 0)
        best, best_gap, cursor = -1, -1, 0
        for lo, hi in busy:
            gap = lo - cursor
            if gap >= size and (best < 0 or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, align_up(hi, align))
        offsets[i] = best if best >= 0 else cursor
        total = max(total, offsets[i] + size)
    return offsets, align_up(total, align)


def plan_offsets(
    sizes: Sequence[int],
    conflicts: list[list[int]],
    align: int = 1,
    spans: Sequence[int] | None = None,
    target: int = 0,
) -> tuple[list[int], int]:
    """Offsets such that no two conflicting items share a byte. Greedy placement (``_place``)
    under a few orders: by size; by size then longest life; by size times conflicts; then
    seeded random orders by size times (1 + eps * noise), then a swap local search on the best
    order. Stops as soon as ``target`` (a lower bound) is reached; the work is bounded."""
    n = len(sizes)
    spans = spans or [0] * n
    target = align_up(target, align)
    orders = [
        sorted(range(n), key=lambda i: (-sizes[i], i)),
        sorted(range(n), key=lambda i: (-sizes[i], -spans[i], i)),
        sorted(range(n), key=lambda i: (-sizes[i] * (1 + len(conflicts[i])), i)),
    ]
    budget = max(4, SEARCH_WORK // max(n + sum(len(c) for c in conflicts), 1))
    rng = random.Random(0)
    best_order, best = orders[0], _place(sizes, conflicts, orders[0], align)
    for k in range(1, budget):
        if best[1] <= target:
            break
        if k < len(orders):
            order = orders[k]
        elif k < budget // 2:  # random orders, larger items still mostly first
            eps = (0.0, 1.0, 2.0, 4.0)[k % 4]
            noise = [1 + eps * rng.random() for _ in range(n)]
            order = sorted(range(n), key=lambda i: -sizes[i] * noise[i])
        else:  # local search: swap two items of the best order
            order = list(best_order)
            a, b = rng.randrange(n), rng.randrange(n)
            order[a], order[b] = order[b], order[a]
        got = _place(sizes, conflicts, order, align)
        if got[1] <= best[1]:
            best_order, best = order, got
    return best


def interval_conflicts(triples) -> list[list[int]]:
    """Pairs of (first, last, size) triples whose inclusive ranges overlap (a sweep)."""
    conflicts: list[list[int]] = [[] for _ in triples]
    active: list[int] = []
    for i in sorted(range(len(triples)), key=lambda k: triples[k][0]):
        first = triples[i][0]
        active = [j for j in active if triples[j][1] >= first]
        for j in active:
            conflicts[i].append(j)
            conflicts[j].append(i)
        active.append(i)
    return conflicts


def plan_intervals(triples, align: int = 1) -> tuple[list[int], int]:
    """Offsets for (first_use, last_use, size) triples so that no two whose inclusive live
    ranges overlap share a byte; returns (offsets, total bytes)."""
    sizes = [t[2] for t in triples]
    spans = [t[1] - t[0] for t in triples]
    bound = lower_bound([(f, la, align_up(x, align)) for f, la, x in triples])
    return plan_offsets(sizes, interval_conflicts(triples), align, spans, bound)


def lower_bound(triples) -> int:
    """The largest sum of live bytes at any step: no plan can use less."""
    if not triples:
        return 0
    delta = [0] * (max(t[1] for t in triples) + 2)
    for first, last, size in triples:
        delta[first] += size
        delta[last + 1] -= size
    peak = live = 0
    for d in delta:
        live += d
        peak = max(peak, live)
    return peak


# -- liveness and in-place -----------------------------------------------------------------
def inplace_safe(node: Node) -> bool:
    """Whether the node's runner reads every input element before writing the output element
    at the same index: elementwise ops, and ops that declare ``extra["inplace"] = True``
    (a fused kernel whose inputs and outputs are all indexed alike)."""
    opdef = get_op(node.op)
    return opdef.family == "elementwise" or bool(opdef.extra.get("inplace", False))


def _inplace_pair_ok(node: Node, out: int, inp: int) -> bool:
    """``extra["inplace"]`` may be a callable (node, output index, input index) -> bool for ops
    that are safe only for some pairs (a fused kernel without __restrict__ on that pair)."""
    rule = get_op(node.op).extra.get("inplace")
    return rule(node, out, inp) if callable(rule) else True


def _root(slots: dict[Value, Slot], v: Value) -> Value:
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
            root = _root(slots, v)
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
            s.last = slots[_root(slots, s.value)].last
    return slots, readers


def _assign_inplace(slots, readers, sched: Schedule) -> dict[Value, Value]:
    """buffer[v] = the first value of the in-place chain that v belongs to."""
    buffer: dict[Value, Value] = {v: v for v, s in slots.items() if s.kind == "arena"}
    for i, step in enumerate(sched.steps):
        node = step.node
        if not inplace_safe(node):
            continue
        taken: set[Value] = set()
        for k, out in enumerate(node.outputs):
            if slots[out].kind != "arena":
                continue
            for j, v in enumerate(node.inputs):
                r = _root(slots, v)
                rs = slots[r]
                if r in taken or rs.kind != "arena" or rs.size != slots[out].size:
                    continue
                if not _inplace_pair_ok(node, k, j):
                    continue
                same_layout = all(
                    u.type.shape == out.type.shape and u.dtype.itemsize == out.dtype.itemsize
                    for u in node.inputs
                    if _root(slots, u) is r
                )
                dies = all(sched.happens_before(x, i) for x in readers[r] if x != i)
                if same_layout and dies:
                    slots[out].inplace = r
                    buffer[out] = buffer[r]
                    taken.add(r)
                    break
    return buffer


def plan_memory(
    graph: Graph, sched: Schedule, align: int = ALIGN, reuse: bool | None = None
) -> MemoryPlan:
    """Plan every intermediate into one arena. ``reuse=False`` gives each its own range (no
    sharing, no in-place): the reference the planned run must match."""
    reuse = REUSE_DEFAULT if reuse is None else reuse
    slots, readers = liveness(graph, sched)
    arena = [v for v, s in slots.items() if s.kind == "arena"]
    naive = sum(align_up(slots[v].size, align) for v in arena)
    buffer = _assign_inplace(slots, readers, sched) if reuse else {v: v for v in arena}
    members: dict[Value, list[Value]] = {}
    for v in arena:
        members.setdefault(buffer[v], []).append(v)
    heads = list(members)
    sizes = [slots[h].size for h in heads]
    triples = [
        (slots[h].first, max(slots[m].last for m in members[h]), slots[h].size) for h in heads
    ]
    bound = lower_bound([(f, la, align_up(s, align)) for f, la, s in triples])
    if not reuse:
        offsets, total, method = [], 0, "no reuse"
        for size in sizes:
            offsets.append(total)
            total += align_up(size, align)
    elif sched.num_streams <= 1:
        offsets, total = plan_intervals(triples, align)
        method = "intervals"
    else:  # concurrency makes more values coexist: a clique of the conflicts is a tighter bound
        conflicts, _ = _hb_conflicts(heads, members, slots, readers, sched)
        seeds = {
            frozenset(i for i, t in enumerate(triples) if t[0] <= k <= t[1])
            for k in range(len(sched.steps))
        }
        bound = max(bound, clique_bound([align_up(x, align) for x in sizes], conflicts, seeds))
        spans = [t[1] - t[0] for t in triples]
        offsets, total = plan_offsets(sizes, conflicts, align, spans, bound)
        method = f"happens-before over {sched.num_streams} streams"
    for h, off in zip(heads, offsets):
        for m in members[h]:
            slots[m].offset = off
    order = [step.node for step in sched.steps]
    return MemoryPlan(
        slots,
        total,
        naive,
        bound,
        lower_bound(triples),
        sum(s.inplace is not None for s in slots.values()),
        method,
        order_peak(graph, order),
        order_peak(graph, memory_aware_order(Graph(graph.inputs, order, graph.outputs))),
    )


def _hb_conflicts(heads, members, slots, readers, sched: Schedule):
    """Buffers a, b conflict unless every access of one happens-before the first write of the
    other (later accesses of a buffer all depend on its first write). Overlapping linear
    ranges always conflict; for disjoint ones only the earlier can come first, and once past
    ``concurrent_until`` of all its accesses (when the schedule offers it) every later write is
    ordered after it, so happens-before is asked only inside that window."""
    hb = sched.happens_before
    horizon_of = getattr(sched, "concurrent_until", None)
    n = len(heads)
    acc, first, last, horizon = [], [], [], []
    for h in heads:
        a = {slots[m].first for m in members[h]}
        for m in members[h]:
            a.update(readers.get(m, ()))
        acc.append(sorted(a))
        first.append(slots[h].first)
        last.append(max(a))
        horizon.append(max(horizon_of(x) for x in a) if horizon_of else len(sched.steps))
    by_first = sorted(range(n), key=lambda i: first[i])
    starts = [first[i] for i in by_first]
    conflicts: list[list[int]] = [[] for _ in range(n)]
    for a in range(n):
        lo = bisect_left(starts, first[a])
        for b in by_first[lo : bisect_right(starts, horizon[a])]:
            if b == a or (first[b] == first[a] and b < a):
                continue  # each unordered pair once
            if first[b] <= last[a] or not all(hb(x, first[b]) for x in acc[a]):
                conflicts[a].append(b)
                conflicts[b].append(a)
    return conflicts, [last[i] for i in range(n)]


def clique_bound(sizes: Sequence[int], conflicts: list[list[int]], seeds) -> int:
    """A lower bound for any placement: the weight of a clique of the conflict graph, grown
    greedily (heaviest first) from each seed set (itself a clique)."""
    nbrs = [set(c) for c in conflicts]
    best = 0
    for seed in seeds:
        clique = set(seed)
        cand = set.intersection(*(nbrs[i] for i in clique)) if clique else set()
        for i in sorted(cand, key=lambda i: -sizes[i]):
            if clique <= nbrs[i]:
                clique.add(i)
        best = max(best, sum(sizes[i] for i in clique))
    return best


# -- a memory-aware topological order --------------------------------------------------------
def order_peak(graph: Graph, order: Sequence[Node]) -> int:
    """Peak live intermediate bytes if ``graph`` ran in ``order`` (one stream, no in-place)."""
    from .schedule import Step

    slots, _ = liveness(graph, Schedule([Step(n) for n in order]))
    return lower_bound([(s.first, s.last, s.size) for s in slots.values() if s.kind == "arena"])


def _greedy_order(graph: Graph) -> list[Node]:
    """List scheduling: among ready nodes run the one that frees the most bytes net of what it
    allocates (ties: the earlier in graph order). Views are charged to their base."""
    outputs, pinned = set(graph.outputs), set(graph.inputs)
    base: dict[Value, Value] = {}
    for n in graph.nodes:
        if n.op in VIEW_OPS:
            base[n.outputs[0]] = base.get(n.inputs[0], n.inputs[0])
    root = {v: base.get(v, v) for v in graph.values()}
    pending: dict[Value, int] = {}
    for n in graph.nodes:
        for v in n.inputs:
            pending[root[v]] = pending.get(root[v], 0) + 1
    missing = {n: len({v for v in n.inputs if v.node is not None}) for n in graph.nodes}
    users: dict[Value, list[Node]] = {}
    for n in graph.nodes:
        for v in {v for v in n.inputs if v.node is not None}:
            users.setdefault(v, []).append(n)
    pos = {n: k for k, n in enumerate(graph.nodes)}
    ready = [n for n in graph.nodes if missing[n] == 0]
    order: list[Node] = []

    def gain(n: Node) -> int:
        counts: dict[Value, int] = {}
        for v in n.inputs:
            counts[root[v]] = counts.get(root[v], 0) + 1
        freed = sum(
            r.type.nbytes
            for r, c in counts.items()
            if pending[r] == c
            and r not in pinned
            and r not in outputs
            and r.node is not None
            and r.node.op != "constant"
        )
        alloc = sum(
            v.type.nbytes
            for v in n.outputs
            if v not in outputs and n.op not in VIEW_OPS and n.op != "constant"
        )
        return freed - alloc

    while ready:
        n = max(ready, key=lambda m: (gain(m), -pos[m]))
        ready.remove(n)
        order.append(n)
        for v in n.inputs:
            pending[root[v]] -= 1
        for v in n.outputs:
            for u in users.get(v, ()):
                missing[u] -= 1
                if missing[u] == 0:
                    ready.append(u)
    assert len(order) == len(graph.nodes), "graph has a cycle or a dangling use"
    return order


def memory_aware_order(graph: Graph) -> list[Node]:
    """A topological order of ``graph.nodes`` with a low peak of live bytes: the greedy list
    schedule, or the graph's own order when that one peaks lower."""
    greedy = _greedy_order(graph)
    return greedy if order_peak(graph, greedy) < order_peak(graph, graph.nodes) else graph.nodes


def reorder_for_memory(graph: Graph) -> Graph:
    """The same graph (same nodes and values) with its nodes in ``memory_aware_order``; call it
    before ``schedule`` so that the scheduler's order is the memory-aware one."""
    return Graph(
        list(graph.inputs), list(memory_aware_order(graph)), list(graph.outputs), dict(graph.meta)
    )
