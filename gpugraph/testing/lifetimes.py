"""The plan check: no two values that are live at the same time share bytes, whatever the streams.

``find_hazards`` (races.py) only looks at launches that no event orders; a plan that puts two
simultaneously live values on the same bytes of one stream is ordered, and wrong all the same.
``find_overlaps`` checks the plan itself, on the launch list as executed:

* a value is live from the launch that writes it until every launch that reads it (itself or
  through a view; views share their root's bytes) has happened;
* two arena values whose byte ranges intersect are legal only if every access of one happens
  before the write of the other (happens-before: program order on each stream plus the waits,
  transitively), or the other is written *in place* of the first: by the launch that is the
  first's last use, on exactly its bytes, by an op whose runner reads each element before it
  writes the same element (``memory.inplace_safe``).

Everything else is reported as an ``Overlap`` naming both values, their nodes and steps, and a
launch that witnesses the overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends.sim import SimProgram, root_of
from ..ir import Value
from ..memory import inplace_safe
from ..ops.registry import get_op
from ..schedule import vector_clocks


@dataclass(frozen=True)
class ValueRef:
    value: int  # Value.id
    op: str
    loc: str | None
    step: int  # schedule step of the launch that writes it
    stream: int

    def __str__(self) -> str:
        where = f" at {self.loc}" if self.loc else ""
        return (
            f"value #{self.value} ({self.op}{where}, written by step {self.step} on stream "
            f"{self.stream})"
        )


@dataclass(frozen=True)
class Overlap:
    a: ValueRef  # written first in launch order
    b: ValueRef
    lo: int  # arena bytes both occupy
    hi: int
    witness: str  # a launch that touches ``a`` while ``b`` is live
    region: str = ""  # the region body whose plan it is in ("" for the top-level plan)

    def __str__(self) -> str:
        where = f"in {self.region}: " if self.region else ""
        return (
            f"{where}LIVE OVERLAP on arena[{self.lo}:{self.hi}): {self.a} and {self.b} share bytes "
            f"while both are live: {self.witness}"
        )


def _arena_accesses(prog: SimProgram) -> tuple[dict[Value, int], dict[Value, list[int]]]:
    """For each arena root: the launch position that writes it, and every position touching it
    (its writer, its readers, and launches that read it through a view)."""
    plan = prog.executable.plan
    writer: dict[Value, int] = {}
    access: dict[Value, list[int]] = {}

    def roots(values) -> list[Value]:
        out = []
        for v in values:
            if v in plan.slots:
                r = root_of(plan, v)
                if plan.slots[r].kind == "arena":
                    out.append(r)
        return out

    for k, st in enumerate(prog.steps):
        if st.runner is not None:  # a view launch writes no bytes
            for r in roots(st.launch.outputs):
                writer.setdefault(r, k)
                access.setdefault(r, []).append(k)
        for r in roots(st.launch.inputs):
            access.setdefault(r, []).append(k)
    return writer, access


def _inplace_ok(prog: SimProgram, k: int, a: Value, b: Value) -> bool:
    """Launch ``k`` reads ``a`` and writes ``b`` on the same bytes: legal for an in-place-safe
    op whose every operand rooted at ``a`` is laid out like ``b`` (same shape and item size)."""
    plan = prog.executable.plan
    node = prog.node(k)
    sa, sb = plan.slots[a], plan.slots[b]
    if (sa.offset, a.type.nbytes) != (sb.offset, b.type.nbytes) or not inplace_safe(node):
        return False
    if b not in node.outputs:
        return False
    rule = get_op(node.op).extra.get("inplace")
    out = node.outputs.index(b)
    for j, u in enumerate(node.inputs):
        if u not in plan.slots or root_of(plan, u) is not a:
            continue
        if u.type.shape != b.type.shape or u.dtype.itemsize != b.dtype.itemsize:
            return False
        if callable(rule) and not rule(node, out, j):
            return False
    return True


def find_overlaps(prog: SimProgram) -> list[Overlap]:
    """Every pair of arena values that share bytes while both are live (see the module doc)."""
    plan = prog.executable.plan
    steps = prog.steps
    clock = vector_clocks([s.stream for s in steps], [s.waits for s in steps], prog.num_streams)
    writer, access = _arena_accesses(prog)
    latest: dict[Value, np.ndarray] = {}  # per stream, the last launch position touching it
    for r, ks in access.items():
        m = np.full(clock.shape[1], -1, dtype=np.int64)
        for k in ks:
            m[steps[k].stream] = max(m[steps[k].stream], k)
        latest[r] = m

    def ref(v: Value) -> ValueRef:
        k = writer[v]
        return ValueRef(v.id, v.node.op, v.node.loc, steps[k].step, steps[k].stream)

    def launch(k: int) -> str:
        return f"step {steps[k].step} ({prog.node(k).op} on stream {steps[k].stream})"

    def dead_before_written(a: Value, b: Value) -> bool:
        """Every access of ``a`` happens before ``b`` is written (or ``b`` takes over its bytes
        in place)."""
        w = writer[b]
        if not np.all(latest[a] <= clock[w]):
            return False
        return w not in access[a] or _inplace_ok(prog, w, a, b)

    def witness(a: Value, b: Value) -> str:
        w = writer[b]
        for k in sorted(access[a], reverse=True):
            if k == w and k == writer[a]:
                return f"{launch(k)} writes both"
            if k == w:
                return f"{launch(k)} writes #{b.id} while it reads #{a.id}, not in place"
            if clock[w, steps[k].stream] < k:
                order = "after" if k > w else "unordered with"
                verb = "writes" if k == writer[a] else "reads"
                return f"{launch(k)} {verb} #{a.id} {order} {launch(w)}, which writes #{b.id}"
        return f"#{a.id} is live when {launch(w)} writes #{b.id}"

    spans = [(plan.slots[r].offset, plan.slots[r].offset + r.type.nbytes, r) for r in writer]
    spans = sorted((t for t in spans if t[1] > t[0]), key=lambda t: (t[0], t[1], writer[t[2]]))
    found = []
    for i, (lo, hi, x) in enumerate(spans):
        for lo2, hi2, y in spans[i + 1 :]:
            if lo2 >= hi:
                break
            a, b = (x, y) if writer[x] <= writer[y] else (y, x)
            if dead_before_written(a, b) or dead_before_written(b, a):
                continue
            found.append(Overlap(ref(a), ref(b), max(lo, lo2), min(hi, hi2), witness(a, b)))
    return found


def find_child_arena_overlaps(prog: SimProgram) -> list[Overlap]:
    """A region launch's child arena (``plan.scratch``: the bytes its bodies' plans run on)
    against every arena value: legal only if the value is dead before the region launch (every
    access happens before it) or written after it (the region happens before its writer).
    The value's own reads and writes by the region launch count as live: its bodies write the
    child range while the launch reads its inputs and writes its outputs."""
    plan = prog.executable.plan
    steps = prog.steps
    clock = vector_clocks([s.stream for s in steps], [s.waits for s in steps], prog.num_streams)
    writer, access = _arena_accesses(prog)
    found = []
    for k, st in enumerate(steps):
        node = prog.node(k)
        if node not in plan.scratch:
            continue
        off, size = plan.scratch[node]
        # an op's own scratch (conv's im2col tiles) is written and read by its launch alone
        what = "scratch" if get_op(node.op).extra.get("scratch_kw") else "child arena"
        child = ValueRef(-1, f"{node.op} {what}", node.loc, st.step, st.stream)
        for r, w in writer.items():
            lo, hi = plan.slots[r].offset, plan.slots[r].offset + r.type.nbytes
            if not (lo < off + size and off < hi):
                continue
            dead = k not in access[r] and all(clock[k, steps[j].stream] >= j for j in access[r])
            later = w != k and clock[w, st.stream] >= k
            if dead or later:
                continue
            ref = ValueRef(r.id, r.node.op, r.node.loc, steps[w].step, steps[w].stream)
            at = f"[{off}, {off + size})"
            uses = f"uses {at} as scratch" if what == "scratch" else f"runs its bodies on {at}"
            why = f"step {st.step} ({node.op}) {uses}"
            found.append(Overlap(ref, child, max(lo, off), min(hi, off + size), why))
    return found
