"""Region bodies compiled once: planning (shared with the parent's memory plan) and programs.

``planned(graph)`` orders, schedules (one stream) and memory-plans a sub-graph once; the
parent's ``plan_memory`` asks ``scratch_bytes(node)`` for the arena range a region node's bodies
need (the largest body arena) and the region's runner then compiles each body into a
``BodyPlan`` on that same plan, its arena a slice of the parent's (``RegionRunner.attach``).
A ``BodyPlan``'s ``program`` is ``f(*inputs, *dests)``: the backend's straight-line program
(NumPy) or its launches on the caller's stream (CuPy).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .ir import Graph, Node
from .launch_bind import bound
from .memory import _inplace_pair_ok, inplace_safe, plan_memory, reorder_for_memory
from .ops.control import REGION_OPS, sub_graphs
from .ops.registry import get_op
from .schedule import schedule

# (sub-graph, streams, backend) -> (its memory-aware order, schedule, memory plan): planned
# once, when the parent's memory plan asks how much arena a region needs (scratch_bytes) and
# again when the region's runner compiles the body. Keyed by id, holding the graph so the id
# stays its. ``backend`` is None except for a backend with its own region sizes
# (``extra["scratch_bytes_on"]``: the cpu backend's native loops reserve no child range).
_PLANNED: OrderedDict[tuple[int, int | None, str | None], tuple[Graph, Graph, Any, Any]] = (
    OrderedDict()
)
_PLANNED_MAX = 512


def _sizing(backend: str | None) -> str | None:
    """The backend name if some region op sizes its child range for it, else None (shared)."""
    if backend is None:
        return None
    own = any(backend in get_op(op).extra.get("scratch_bytes_on", {}) for op in REGION_OPS)
    return backend if own else None


def planned(
    graph: Graph, streams: int | None = 1, backend: str | None = None
) -> tuple[Graph, Any, Any]:
    """``streams``: 1, or None for the body's width (capped as top-level plans are): a wide
    body gets several streams where the backend has real ones (CuPy). ``backend``: the
    backend the body runs on (its nested regions' child ranges may depend on it)."""
    backend = _sizing(backend)
    key = (id(graph), streams, backend)
    hit = _PLANNED.get(key)
    if hit is not None and hit[0] is graph:
        _PLANNED.move_to_end(key)
        return hit[1:]
    if streams == 1:
        ordered = reorder_for_memory(graph)
        sched = schedule(ordered, 1)
        plan = (ordered, sched, plan_memory(ordered, sched, backend=backend))
    else:
        ordered = planned(graph, 1, backend)[0]
        sched = schedule(ordered, streams)
        narrow = sched.num_streams == 1  # nothing to overlap: the one-stream plan
        plan = (
            planned(graph, 1, backend)
            if narrow
            else (ordered, sched, plan_memory(ordered, sched, backend=backend))
        )
    _PLANNED[key] = (graph, *plan)
    if len(_PLANNED) > _PLANNED_MAX:
        _PLANNED.popitem(last=False)
    return plan


def body_streams(backend: Any) -> int | None:
    """Streams for a body on ``backend``: its width on a backend with concurrent streams."""
    return None if backend.concurrent_streams else 1


def scratch_bytes(node: Node) -> int:
    """Bytes of its parent's arena a region node's bodies need: the largest of their arenas
    (a while's condition and body, or a cond's branches, never run at the same time; each
    body's arena holds its own nested regions' ranges). The parent's plan does not know the
    backend, so this covers both the one-stream plan and the wide one (they differ only for a
    body with parallel work)."""
    sizes = [planned(g, s)[2].arena_bytes for g in sub_graphs(node.attrs) for s in (1, None)]
    return max(sizes, default=0)


class BodyPlan:
    """One sub-graph compiled once: its plan, and (on first use) its arena and program."""

    def __init__(self, graph: Graph, backend: Any) -> None:
        from .runtime import COMPILED_OBSERVERS, Executable  # runtime imports this module

        self.graph, self.schedule, self.memory = planned(graph, body_streams(backend), backend.name)
        self.executable = Executable(self.graph, self.schedule, self.memory, backend)
        self.executable.blas_scope = False  # the region sets it once per run (RegionRunner)
        _direct_reshape_copies(self.executable)
        self.backend = backend
        self._program: Callable[..., list] | None = None
        for observe in COMPILED_OBSERVERS:
            observe(self)

    def rebuilt(self, memory: Any = None, sched: Any = None) -> BodyPlan:
        """A copy on another memory plan and/or schedule (the race tests' planted bugs), with
        its own executable, arena and program; nothing is re-planned."""
        from .runtime import Executable

        new = copy.copy(self)
        new.schedule = sched if sched is not None else self.schedule
        new.memory = memory if memory is not None else self.memory
        new.executable = Executable(self.graph, new.schedule, new.memory, self.backend)
        new.executable.blas_scope = False
        _direct_reshape_copies(new.executable)
        new._program = None
        return new

    @property
    def program(self) -> Callable[..., list]:
        """``f(*inputs, *dests)``: one run of the body writing its outputs into ``dests``. The
        backend's straight-line program where it has one (NumPy: the generated function of
        the top-level dispatch, fused groups inlined), else the launches on the caller's
        stream. Made, with the arena, on the first run (``lower()`` allocates nothing)."""
        if self._program is None:
            ex = self.executable  # both makers read ex.fixed: the arena is allocated here
            self._program = ex.backend.program(ex) or _launch_program(ex)
        return self._program

    @property
    def arena_bytes(self) -> int:
        return self.memory.arena_bytes


def _direct_reshape_copies(ex: Any) -> None:
    """A body output that is a reshape of an arena value must be copied into the driver's
    buffer (a carry or a row of ys). The generic runner calls the op's impl and assigns (about
    5 us a step in the differentiated RNN body); this one is one ``copyto`` of a view, and has
    the ``call`` form the NumPy program binds directly."""
    xp = ex.backend.xp
    for launch in ex.launches:
        if launch.runner is None or ex.schedule.steps[launch.step].node.op != "reshape":
            continue
        shape = launch.outputs[0].type.shape

        def call(x: Any, out: Any, shape: tuple = shape) -> None:
            xp.copyto(out, x.reshape(shape))

        def run(ins: list, outs: list, call: Callable = call) -> None:
            call(ins[0], out=outs[0])

        run.call = call  # type: ignore[attr-defined]
        launch.runner = run


def _launch_program(ex: Any) -> Callable[..., list]:
    """A body as a program for backends without ``program`` (CuPy): its launches, bound once
    (``launch_bind``), on the caller's current stream; a wide body's other streams fork off it
    and join back into it (events made once, re-recorded every run: a wait binds to the
    record made before it)."""
    graph, fixed, fresh_at = ex.graph, ex.fixed, ex.fresh_at
    n = len(graph.inputs)
    b = ex.backend
    side = ex.streams[1:]
    if side:
        event = b.xp.cuda.Event
        fork, joins = event(disable_timing=True), [event(disable_timing=True) for _ in side]
        events = {la.step: event(disable_timing=True) for la in ex.launches if la.record}
    # outputs not written by the body itself: an input passed through, a constant, a repeat
    copied = [(p, v) for p, v in enumerate(graph.outputs) if fresh_at.get(p) is not v]

    def run(*arrays: Any) -> list:
        dests = list(arrays[n:])
        env = dict(zip(graph.inputs, arrays[:n]))
        for p, v in fresh_at.items():
            env[v] = dests[p]
        launches = bound(ex)
        if not side:
            launches.run_here(env)
        else:
            origin = b.xp.cuda.get_current_stream()
            origin.record(fork)
            for s in side:
                s.wait_event(fork)
            launches.run(b, env, [origin, *side], events)
            for s, ev in zip(side, joins):
                s.record(ev)
                origin.wait_event(ev)
        for p, v in copied:
            dests[p][...] = env[v] if v in env else fixed[v]
        return dests

    return run


def inplace_carries(plan: BodyPlan, n: int) -> list[bool]:
    """For each of a loop body's first ``n`` inputs (its carries): whether the new value may be
    written over the old one, so that the loop keeps one buffer for it instead of two. Holds
    when the body writes the new carry itself (not an input passed through, a constant or a
    repeat), the old value is not also an output, and every launch that reads the old value
    (directly or through a view) comes before the launch that writes the new one, or is that
    launch and reads each element before writing it (the planner's in-place rule). A body
    plan runs on one stream, so launch order is execution order."""
    ex, mem, g = plan.executable, plan.memory, plan.graph
    if plan.schedule.num_streams > 1:  # launch order is not execution order: double-buffer
        return [False] * n
    result = []
    for k in range(n):
        old, new = g.inputs[k], g.outputs[k]
        ok = ex.fresh_at.get(k) is new and old not in g.outputs
        writer = next(
            (i for i, la in enumerate(ex.launches) if la.runner is not None and new in la.outputs),
            None,
        )
        if writer is None:
            ok = False
        for i, la in enumerate(ex.launches if ok else ()):
            reads = [j for j, v in enumerate(la.inputs) if v in mem.slots and mem.root(v) is old]
            if la.runner is None or not reads or i < writer:
                continue  # a view reads no bytes; a read before the write is fine
            node = ex.schedule.steps[la.step].node
            out = node.outputs.index(new) if i == writer else -1
            ok = (
                out >= 0
                and inplace_safe(node)
                and all(
                    _inplace_pair_ok(node, out, j)
                    and node.inputs[j].type.shape == new.type.shape
                    and node.inputs[j].dtype.itemsize == new.dtype.itemsize
                    for j in reads
                )
            )
            if not ok:
                break
        result.append(ok)
    return result
