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

This module plans in-place reuse and drives the plan; ``memory_order`` holds liveness and the
memory-aware node order, ``memory_place`` the offset placement. Their public names are
re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ir import Graph, Node, Value
from .memory_hb import hb_clique_bound, hb_conflicts
from .memory_order import (
    VIEW_OPS,
    Slot,
    aware_peak,
    liveness,
    memory_aware_order,
    order_peak,
    reorder_for_memory,
    view_root,
)
from .memory_place import (
    SEARCH_WORK,
    align_up,
    clique_bound,
    interval_conflicts,
    live_sets,
    lower_bound,
    plan_intervals,
    plan_offsets,
)
from .ops.registry import get_op
from .schedule import Schedule

__all__ = [
    "ALIGN",
    "REUSE_DEFAULT",
    "SEARCH_WORK",
    "VIEW_OPS",
    "MemoryPlan",
    "Slot",
    "align_up",
    "clique_bound",
    "inplace_safe",
    "interval_conflicts",
    "liveness",
    "lower_bound",
    "memory_aware_order",
    "order_peak",
    "plan_intervals",
    "plan_memory",
    "plan_offsets",
    "reorder_for_memory",
]

ALIGN = 256
REUSE_DEFAULT = True  # tests flip this to compare planned and unplanned runs


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
    aware_peak_bytes: int = 0  # the same for memory_aware_order (memory_order.aware_peak)
    notes: list[str] = field(default_factory=list)
    # nodes -> (offset, bytes) of an arena range written only while that node's step runs:
    # a region's bodies' own plans (a child plan), or an op's scratch (extra["scratch_bytes"],
    # e.g. conv's im2col tiles), which its runner gets as scratch=
    scratch: dict[Node, tuple[int, int]] = field(default_factory=dict)

    def summary(self) -> str:
        if self.arena_bytes:
            saved = f"{self.naive_bytes / self.arena_bytes:.2f}x saved"
        else:  # e.g. one fused kernel: no intermediate values, or all of them in place or views
            saved = "all saved" if self.naive_bytes else "no intermediates"
        over = self.arena_bytes / self.lower_bound_bytes if self.lower_bound_bytes else 1.0
        n_arena = sum(s.kind == "arena" for s in self.slots.values())
        n_view = sum(s.kind == "view" for s in self.slots.values())
        ops = [n for n in self.scratch if get_op(n.op).extra.get("scratch_kw")]
        scratch = (
            f" + scratch for {len(ops)} step(s), up to {max(self.scratch[n][1] for n in ops)} B"
            if ops
            else ""
        )
        return (
            f"arena {self.arena_bytes} B for {n_arena} values{scratch} "
            f"({self.inplace_count} in place, "
            f"{n_view} views), naive {self.naive_bytes} B ({saved}), "
            f"lower bound {self.lower_bound_bytes} B (arena/bound {over:.3f}; {self.method}); "
            f"order peak {self.order_peak_bytes} B, memory-aware order {self.aware_peak_bytes} B"
        )

    def root(self, v: Value) -> Value:
        """The value whose bytes ``v`` occupies (itself unless it is a view)."""
        return view_root(self.slots, v)

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
        for node, (off, size) in self.scratch.items():
            lines.append(f"{'scratch':<7} {node.op:<12} {'arena':<6} off={off:<10} size={size:<10}")
        return "\n".join(lines)


# -- in-place ----------------------------------------------------------------------------------
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
                r = view_root(slots, v)
                rs = slots[r]
                if r in taken or rs.kind != "arena" or rs.size != slots[out].size:
                    continue
                if not _inplace_pair_ok(node, k, j):
                    continue
                same_layout = all(
                    u.type.shape == out.type.shape and u.dtype.itemsize == out.dtype.itemsize
                    for u in node.inputs
                    if view_root(slots, u) is r
                )
                # a reader after step i cannot happen before it: test the last one first, so
                # that a value with many readers is not scanned at each of them
                dies = rs.last <= i and all(
                    sched.happens_before(x, i) for x in readers[r] if x != i
                )
                if same_layout and dies:
                    slots[out].inplace = r
                    buffer[out] = buffer[r]
                    taken.add(r)
                    break
    return buffer


def plan_memory(
    graph: Graph,
    sched: Schedule,
    align: int = ALIGN,
    reuse: bool | None = None,
    backend: str | None = None,
) -> MemoryPlan:
    """Plan every intermediate into one arena. ``reuse=False`` gives each its own range (no
    sharing, no in-place): the reference the planned run must match. ``backend``: the backend
    the plan runs on, for region ops whose child range depends on it (a loop the cpu backend
    runs as one native function reserves none)."""
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
    scratch = _scratch_needs(sched, backend)  # (step, node, bytes) of region steps
    naive += sum(align_up(n, align) for _, _, n in scratch)
    triples += [(i, i, n) for i, _, n in scratch]
    sizes += [n for _, _, n in scratch]
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
        nh = len(heads)  # the values; the region steps' child arenas are placed below
        conflicts, _ = hb_conflicts(heads, members, slots, readers, sched)
        hsizes = [align_up(x, align) for x in sizes[:nh]]
        clique: list[int] = []

        def refine() -> int:  # only when the live-bytes bound is missed (else they are equal)
            seeds = live_sets(triples[:nh], len(sched.steps))
            clique.append(hb_clique_bound(hsizes, conflicts, seeds))
            return clique[0]

        spans = [t[1] - t[0] for t in triples[:nh]]
        offsets, total = plan_offsets(sizes[:nh], conflicts, align, spans, bound, refine)
        bound = max([bound, *clique])
        offsets = list(offsets) + [0] * (len(sizes) - nh)
        method = f"happens-before over {sched.num_streams} streams"
        # region steps may run concurrently with any other stream's values: their child
        # arenas get bytes of their own after everything else (the interval rule does not hold)
        for j in range(nh, len(sizes)):
            offsets[j] = align_up(total, align)
            total = offsets[j] + align_up(sizes[j], align)
    placed = {node: (off, n) for (_, node, n), off in zip(scratch, offsets[len(heads) :])}
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
        aware_peak(graph, order),
        scratch=placed,
    )


def _scratch_needs(sched: Schedule, backend: str | None) -> list[tuple[int, Node, int]]:
    """(step, node, bytes) for every step whose op declares ``extra["scratch_bytes"]``: region
    ops (installed by region_exec: the largest arena among the node's bodies) and ops whose
    impl takes ``scratch=`` (conv's im2col tiles); ``extra["scratch_bytes_on"][backend]``
    replaces it on that backend (the cpu backend's native loops need no child range). The
    range is live at that step only, so it shares bytes with values that are dead around it."""
    out = []
    for i, step in enumerate(sched.steps):
        extra = get_op(step.node.op).extra
        need = extra.get("scratch_bytes_on", {}).get(backend) or extra.get("scratch_bytes")
        n = need(step.node) if need is not None else 0
        if n:
            out.append((i, step.node, n))
    return out
