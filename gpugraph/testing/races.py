"""The race checker: is a compiled plan safe on concurrent streams?

``check_races(compiled, *args, trials=..., seed=...)`` looks at the launch list exactly as the
Executable runs it (streams and waits as executed, not the schedule's intent), and

* computes the happens-before relation of those launches (program order on each stream plus
  one edge per wait, transitively), and reports every pair of launches that is not ordered by
  it yet touches overlapping bytes with at least one write: a RAW, WAR or WAW ``Hazard``
  naming both nodes and the byte range;
* checks the plan itself (``lifetimes.find_overlaps``): two values live at the same time under
  happens-before must not share bytes, whatever the streams. An ordered clobber on one stream
  has no unordered pair, so only this finds it;
* replays the plan on NumPy sequentially (the launches in list order) and in ``trials`` random
  interleavings that respect the waits (arena and outputs poisoned with a different byte each
  trial), and compares every result with an unplanned evaluation (``sim.evaluate_unplanned``:
  the same runners, every value in fresh memory), never with the plan under test.

Regions: every body plan inside a region launch (recursively) gets the same hazard and overlap
checks, reported with the region's path (``in step 3 (scan) body: ...``); in every trial the
region launches run their bodies simulated too, each body run in its own random interleaving on
a poisoned arena, and the reference evaluates the regions with no plan at all. The parent sees
a region launch as reading its inputs and writing its outputs: the bodies' arenas and the carry
buffers are the region's own allocations, not bytes of the parent's arena.

Helpers build the planted bugs the tests use: ``with_plan`` / ``with_schedule`` rebuild a
Compiled around another memory plan or schedule, ``LinearOrder`` is a schedule whose
happens-before is the linear order (a planner fed it reuses memory as if there were one
stream), and ``stream_safe_plan`` is a reference planner that is safe under any schedule.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..backends.sim import Range, SimProgram, evaluate_unplanned, root_of
from ..memory import MemoryPlan, plan_intervals, plan_memory
from ..pytree import flatten
from ..schedule import Schedule, Step, vector_clocks
from .lifetimes import Overlap, find_child_arena_overlaps, find_overlaps


@dataclass(frozen=True)
class StepRef:
    step: int  # schedule step index
    stream: int
    op: str
    loc: str | None

    def __str__(self) -> str:
        where = f" at {self.loc}" if self.loc else ""
        return f"step {self.step} ({self.op} on stream {self.stream}{where})"


@dataclass(frozen=True)
class Hazard:
    kind: str  # "RAW" (b reads what a writes), "WAR" (b writes what a reads) or "WAW"
    a: StepRef  # the earlier launch in list order
    b: StepRef
    space: str  # "arena", or the buffer of one input/output/constant
    lo: int
    hi: int
    region: str = ""  # the region body it is in ("" for the top-level plan)

    def __str__(self) -> str:
        verb = {"RAW": ("writes", "reads"), "WAR": ("reads", "writes"), "WAW": ("writes",) * 2}
        va, vb = verb[self.kind]
        where = f"in {self.region}: " if self.region else ""
        return (
            f"{where}{self.kind} on {self.space}[{self.lo}:{self.hi}): {self.a} {va} and "
            f"{self.b} {vb}, and no event orders them"
        )


@dataclass
class RaceReport:
    hazards: list[Hazard]
    mismatches: list[str]  # runs whose results differ from the unplanned evaluation
    trials: int
    num_streams: int
    notes: list[str] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)  # live values sharing bytes
    regions: list[str] = field(default_factory=list)  # the region bodies checked too

    @property
    def ok(self) -> bool:
        return not self.hazards and not self.mismatches and not self.overlaps

    def __iter__(self):
        return iter(self.hazards)

    def __len__(self) -> int:
        return len(self.hazards)

    def __str__(self, limit: int = 20) -> str:
        head = (
            f"{len(self.hazards)} hazard(s), {len(self.overlaps)} live overlap(s), "
            f"{len(self.mismatches)} mismatching run(s) in {self.trials} trial(s) on "
            f"{self.num_streams} stream(s)"
        )
        found = (self.hazards, self.overlaps, self.mismatches)
        shown = [str(x) for xs in found for x in xs[:limit]]
        if any(len(xs) > limit for xs in found):
            shown.append(f"... (first {limit} of each shown; see .hazards / .mismatches)")
        return "\n".join([head, *shown, *self.notes])


def _overlap(xs: list[Range], ys: list[Range]) -> tuple[str, int, int] | None:
    for sx, lx, hx in xs:
        for sy, ly, hy in ys:
            if sx == sy and lx < hy and ly < hx:
                return str(sx), max(lx, ly), min(hx, hy)
    return None


def find_hazards(prog: SimProgram) -> list[Hazard]:
    """Every unordered pair of launches with overlapping bytes and at least one write."""
    steps = prog.steps
    clock = vector_clocks([s.stream for s in steps], [s.waits for s in steps], prog.num_streams)

    def ref(k: int) -> StepRef:
        node = prog.node(k)
        return StepRef(steps[k].step, steps[k].stream, node.op, node.loc)

    hazards = []
    for j, b in enumerate(steps):
        for i in range(j):
            a = steps[i]
            if clock[j, a.stream] >= i:
                continue  # a happens before b
            for kind, xs, ys in (
                ("WAW", a.writes, b.writes),
                ("RAW", a.writes, b.reads),
                ("WAR", a.reads, b.writes),
            ):
                hit = _overlap(xs, ys)
                if hit:
                    hazards.append(Hazard(kind, ref(i), ref(j), *hit))
    return hazards


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    if x.dtype.kind in "fc":
        return np.array_equal(x, y, equal_nan=True)
    return np.array_equal(x, y)


def _host_args(compiled: Any, args: tuple) -> list[np.ndarray]:
    leaves, _ = flatten(args)
    out = []
    for t, x in zip(compiled.input_types, leaves):
        x = x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else x
        out.append(np.asarray(x, dtype=t.dtype))
    return out


def check_races(compiled: Any, *args: Any, trials: int = 20, seed: int = 0) -> RaceReport:
    """Hazards of ``compiled``'s launch list, live values sharing bytes in its plan, and a check
    of the sequential run and ``trials`` random interleavings against an unplanned evaluation.
    Works for any backend's Compiled (it replays on NumPy)."""
    prog = SimProgram(compiled.executable)
    report = RaceReport([], [], trials, prog.num_streams)
    for path, p in prog.walk():  # the plan itself, then every region body's plan
        report.hazards += [replace(h, region=path) for h in find_hazards(p)]
        found = find_overlaps(p) + find_child_arena_overlaps(p)
        report.overlaps += [replace(o, region=path) for o in found]
        where = f"in {path}: " if path else ""
        for step, w in p.dropped_waits:
            report.notes.append(f"{where}step {step} waits on step {w}, not an earlier launch")
        if path:
            report.regions.append(path)
    host = _host_args(compiled, args)
    reference = evaluate_unplanned(compiled.graph, host)
    rng = np.random.default_rng(seed)
    for t in range(-1, trials):  # -1: the launches in list order
        order = prog.interleaving(rng if t >= 0 else None)
        got = prog.run(
            host, order, int(rng.integers(256)) if t >= 0 else 0xFF, rng if t >= 0 else None
        )
        bad = [k for k, (x, y) in enumerate(zip(reference, got)) if not _same(x, y)]
        if bad:
            run = f"trial {t}" if t >= 0 else "the sequential run"
            report.mismatches.append(
                f"{run}: outputs {bad} differ from the unplanned evaluation; step order "
                f"{[prog.steps[k].step for k in order]}"
            )
    return report


# -- planted bugs and reference plans ---------------------------------------------------------


def with_plan(compiled: Any, plan: MemoryPlan | None = None, sched: Schedule | None = None):
    """A shallow copy of ``compiled`` whose Executable is rebuilt on another plan/schedule."""
    from ..runtime import Executable

    new = copy.copy(compiled)
    new.schedule = sched if sched is not None else compiled.schedule
    new.memory = plan if plan is not None else compiled.memory
    new.executable = Executable(
        new.graph, new.schedule, new.memory, new.backend, compiled.executable.cuda_graph
    )
    return new


def with_body_plan(
    compiled: Any,
    body: str,
    plan: MemoryPlan | None = None,
    region: int = 0,
    sched: Schedule | None = None,
) -> Any:
    """A copy of ``compiled`` whose ``region``-th region launch runs its body ``body`` (e.g.
    "body", "cond", "branch 1") on another memory plan (e.g. a ``clobbered_plan``) and/or
    schedule (e.g. one ``drop_wait`` away); the real compiled object and runner are untouched."""
    ex = copy.copy(compiled.executable)
    ex.launches = list(ex.launches)
    at = [k for k, la in enumerate(ex.launches) if getattr(la.runner, "plans", None)][region]
    runner = copy.copy(ex.launches[at].runner)
    runner.plans = dict(runner.plans)
    runner.plans[body] = runner.plans[body].rebuilt(memory=plan, sched=sched)
    if hasattr(runner, "order"):
        runner.order = list(runner.plans.values())
    runner._driver = None
    ex.launches[at] = replace(ex.launches[at], runner=runner)
    new = copy.copy(compiled)
    new.executable = ex
    return new


def region_runners(compiled: Any) -> list[Any]:
    """The runners of ``compiled``'s region launches, in launch order."""
    return [la.runner for la in compiled.executable.launches if getattr(la.runner, "plans", None)]


def with_schedule(compiled: Any, sched: Schedule) -> Any:
    """Rebuild with another schedule, keeping the memory plan (e.g. one wait dropped)."""
    return with_plan(compiled, compiled.memory, sched)


def drop_wait(sched: Schedule, step: int, wait: int) -> Schedule:
    """A copy of ``sched`` with one wait removed from one step."""
    steps = [Step(s.node, s.stream, s.waits, s.record) for s in sched.steps]
    s = steps[step]
    assert wait in s.waits, f"step {step} does not wait on {wait}"
    steps[step] = Step(s.node, s.stream, tuple(w for w in s.waits if w != wait), s.record)
    return Schedule(steps, sched.num_streams)


class LinearOrder(Schedule):
    """The same steps, but happens-before is the linear order: a planner given this reuses
    memory as if every step ran on one stream (the planted bug)."""

    def __init__(self, sched: Schedule):
        super().__init__(sched.steps, sched.num_streams)

    def happens_before(self, a, b) -> bool:
        return self.index(a) < self.index(b)

    def concurrent_until(self, a) -> int:
        return self.index(a)


def clobbered_plan(plan: MemoryPlan) -> tuple[MemoryPlan, list, list]:
    """The planted ordered-clobber bug: a copy of ``plan`` in which one buffer ``b`` (a value
    and every value written in place of it) is moved onto the bytes of a buffer ``a`` that is
    still read after ``b`` is first written. Returns (plan, a, b), each buffer as the list of
    its values in definition order; raises if no two buffers are live at the same time."""
    slots = {v: copy.copy(s) for v, s in plan.slots.items()}
    head = {v: v for v, s in slots.items() if s.kind == "arena"}
    for v in sorted(head, key=lambda v: slots[v].first):  # in-place chains share one buffer
        if slots[v].inplace is not None:
            head[v] = head[slots[v].inplace]
    span: dict[Any, tuple[int, int]] = {}
    for v, h in head.items():
        f, la = span.get(h, (slots[v].first, slots[v].last))
        span[h] = (min(f, slots[v].first), max(la, slots[v].last))
    pairs = [(a, b) for a in span for b in span if span[a][0] < span[b][0] < span[a][1]]
    if not pairs:
        raise ValueError("no two arena buffers are live at the same time in this plan")
    a, b = min(pairs, key=lambda p: (span[p[1]][0], span[p[0]][0]))
    offset = slots[a].offset
    for v, h in head.items():
        if h is b:
            slots[v].offset = offset
    end = offset + max(slots[v].size for v, h in head.items() if h is b)
    bad = copy.copy(plan)
    bad.slots, bad.arena_bytes = slots, max(plan.arena_bytes, end)
    bad.notes = [*plan.notes, f"clobbered_plan: #{b.id} moved onto #{a.id}'s bytes"]
    members = sorted(head, key=lambda v: slots[v].first)
    return bad, [v for v in members if head[v] is a], [v for v in members if head[v] is b]


def stream_safe_plan(graph: Any, sched: Schedule, align: int = 256) -> MemoryPlan:
    """A reference plan safe under ``sched``'s happens-before: each arena value's live range
    is widened to the last step that may still run concurrently with one of its uses, so two
    values share bytes only if every use of one happens before the other's definition."""
    plan = plan_memory(graph, LinearOrder(sched), align)
    last: dict[Any, int] = {}
    for i, step in enumerate(sched.steps):
        for v in (*step.node.inputs, *step.node.outputs):
            if v in plan.slots and plan.slots[v].kind != "input":
                r = root_of(plan, v)
                last[r] = max(last.get(r, i), sched.concurrent_until(i))
    arena = [s for s in plan.slots.values() if s.kind == "arena"]
    triples = [(s.first, max(s.last, last.get(s.value, s.first)), s.size) for s in arena]
    offsets, total = plan_intervals(triples, align)
    for s, off in zip(arena, offsets):
        s.offset = off
    for node, (_, size) in list(plan.scratch.items()):  # region child arenas: bytes of their own
        off = -(-total // align) * align
        plan.scratch[node], total = (off, size), off + size
    plan.arena_bytes = total
    plan.notes.append("stream_safe_plan: live ranges widened by concurrent_until")
    return plan


# -- random DAGs for property tests and benchmarks --------------------------------------------

UNARY = ("tanh", "sin", "cos", "negative", "relu", "sigmoid")
BINARY = ("add", "multiply", "subtract", "maximum")


def dag_function(recipe: list[tuple[str, int, int]], n_inputs: int = 2):
    """A function of ``n_inputs`` same-shape arrays built from ``recipe``: entry k is
    ``(op, i, j)`` applied to earlier values i (and j, for binary ops; "reshape" round-trips
    through a transposed shape, a view). Returns every value nobody consumed, concatenated."""
    import gpugraph as gg

    def fn(*xs: Any) -> Any:
        vals = list(xs[:n_inputs])
        used = [False] * (len(vals) + len(recipe))
        for op, i, j in recipe:
            i, j = i % len(vals), j % len(vals)
            used[i] = True
            if op == "reshape":
                shape = vals[i].shape
                vals.append(gg.reshape(gg.reshape(vals[i], shape[::-1]), shape))
            elif op in BINARY:
                used[j] = True
                vals.append(getattr(gg, op)(vals[i], vals[j]))
            else:
                vals.append(getattr(gg, op)(vals[i]))
        sinks = [v for k, v in enumerate(vals) if not used[k] and k >= n_inputs]
        return gg.concatenate(sinks or vals[-1:], axis=0)

    return fn


def branchy_function(branches: int = 4, depth: int = 3):
    """Inception-style: ``branches`` parallel chains of ``depth`` elementwise ops on one input,
    joined by a concatenate."""
    import gpugraph as gg

    def fn(x: Any) -> Any:
        outs = []
        for b in range(branches):
            y = x
            for d in range(depth):
                y = getattr(gg, UNARY[(b + d) % len(UNARY)])(y)
                y = gg.multiply(y, y) if d % 2 else gg.add(y, x)
            outs.append(y)
        return gg.concatenate(outs, axis=0)

    return fn
