"""Memory planning: liveness over the schedule, views, and offsets in one arena.

Every value produced by a node lives in one of four places (``Slot.kind``):
  "arena"  bytes [offset, offset+size) of the per-Compiled arena,
  "view"   a reshape of another value (no bytes of its own; keeps its base alive),
  "output" a fresh buffer per call, returned to the user (never arena memory),
  "const"  a constant uploaded once at lowering.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ir import Graph, Value
from .schedule import Schedule

ALIGN = 256
VIEW_OPS = frozenset({"reshape"})


def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a if a > 1 else n


@dataclass
class Slot:
    value: Value
    kind: str
    size: int = 0
    offset: int = -1
    first: int = -1  # step that defines it
    last: int = -1  # last step that reads it (or the end, for outputs)
    base: Value | None = None  # for views: the value whose bytes are shared


@dataclass
class MemoryPlan:
    slots: dict[Value, Slot]
    arena_bytes: int
    naive_bytes: int
    lower_bound_bytes: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        ratio = self.naive_bytes / self.arena_bytes if self.arena_bytes else float("inf")
        return (
            f"arena {self.arena_bytes} B, naive {self.naive_bytes} B "
            f"({ratio:.2f}x saved), lower bound {self.lower_bound_bytes} B"
        )


def plan_intervals(triples, align: int = 1) -> tuple[list[int], int]:
    """Offsets for (first_use, last_use, size) triples so that no two whose inclusive live
    ranges overlap share a byte. Greedy by size: the biggest buffer is placed first at the
    lowest offset that fits between already placed, overlapping buffers."""
    order = sorted(range(len(triples)), key=lambda i: (-triples[i][2], triples[i][0]))
    offsets = [0] * len(triples)
    placed: list[int] = []
    total = 0
    for i in order:
        first, last, size = triples[i]
        busy = sorted(
            (offsets[j], offsets[j] + triples[j][2])
            for j in placed
            if not (triples[j][1] < first or last < triples[j][0])
        )
        best, cursor = None, 0
        for lo, hi in busy:
            if lo - cursor >= size and (best is None or lo - cursor < best[1]):
                best = (cursor, lo - cursor)
            cursor = max(cursor, align_up(hi, align))
        offset = best[0] if best is not None else cursor
        offsets[i] = offset
        placed.append(i)
        total = max(total, offset + size)
    return offsets, align_up(total, align)


def lower_bound(triples) -> int:
    """The largest sum of live bytes at any step: no plan can use less."""
    if not triples:
        return 0
    end = max(t[1] for t in triples)
    return max(sum(s for f, la, s in triples if f <= k <= la) for k in range(end + 1))


def plan_memory(graph: Graph, sched: Schedule, align: int = ALIGN) -> MemoryPlan:
    slots: dict[Value, Slot] = {}
    outputs = set(graph.outputs)
    for v in graph.inputs:
        slots[v] = Slot(v, "input", first=-1)
    for i, step in enumerate(sched.steps):
        node = step.node
        for v in node.outputs:
            if node.op == "constant":
                slots[v] = Slot(v, "const", first=i)
            elif v in outputs:
                slots[v] = Slot(v, "output", v.type.nbytes, first=i)
            elif node.op in VIEW_OPS and node.inputs[0] in slots:
                slots[v] = Slot(v, "view", first=i, base=_root(slots, node.inputs[0]))
            else:
                slots[v] = Slot(v, "arena", v.type.nbytes, first=i, last=i)
        for v in node.inputs:
            s = slots.get(v)
            if s is not None:
                root = slots[_root(slots, v)]
                root.last = max(root.last, i)
    arena = [s for s in slots.values() if s.kind == "arena"]
    triples = [(s.first, s.last, s.size) for s in arena]
    offsets, total = plan_intervals(triples, align)
    for s, off in zip(arena, offsets):
        s.offset = off
    naive = sum(align_up(s.size, align) for s in arena)
    return MemoryPlan(slots, total, naive, lower_bound(triples))


def _root(slots: dict[Value, Slot], v: Value) -> Value:
    while slots[v].kind == "view":
        v = slots[v].base
    return v
