"""Executable: one memory plan's launch list over one arena, and the loop that runs it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .backends.base import Backend
from .errors import ArenaMemoryError
from .ir import Graph, Value
from .launch_bind import bound
from .memory import MemoryPlan
from .schedule import Schedule


@dataclass
class Launch:
    step: int
    runner: Any  # Runner, or None for a view (reshape without a copy)
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    stream: int
    waits: tuple[int, ...]
    record: bool
    # (offset, bytes) of the arena range the plan reserved as this launch's scratch (an op
    # with extra["scratch_kw"]: its runner gets the range as scratch=); None: none
    scratch: tuple[int, int] | None = None


class Executable:
    """A flat list of launches over one arena. ``run`` is the only per-call work.

    The arena (and every constant) is allocated on the first call, not at lowering, so
    ``lower()`` costs no device memory; every arena value (and every view of one) is then an
    array made once at its planned offset and written through ``out=``. Values the user gets
    back are fresh buffers each call ("output" slots), buffers the caller passed (``out=``, or a
    donated input's), or copies, never arena memory; user inputs are only read.

    A backend may turn the launch list into one straight-line program (``Backend.program``: the
    NumPy backend generates Python with every launch's call bound once); otherwise each call
    walks ``launches`` with a dict of values (``launch_all``), as the CuPy backend does.
    """

    def __init__(
        self,
        graph: Graph,
        sched: Schedule,
        plan: MemoryPlan,
        backend: Backend,
        cuda_graph: bool = False,
    ):
        self.graph, self.schedule, self.plan, self.backend = graph, sched, plan, backend
        self.cuda_graph = cuda_graph  # read by backends that can capture (CuPy)
        self._arena: Any = None
        self._fixed: dict[Value, Any] | None = None
        # values that get an array made once (constants, arena values and their views)
        fixed = set()
        for v, slot in plan.slots.items():
            root = plan.slots[plan.root(v)]
            if slot.kind == "const" or (slot.kind in ("arena", "view") and root.kind == "arena"):
                fixed.add(v)
        self.fixed_values = frozenset(fixed)
        self.fresh = [v for v, s in plan.slots.items() if s.kind == "output"]
        self.launches: list[Launch] = []
        for i, step in enumerate(sched.steps):
            node = step.node
            if node.op == "constant":
                continue
            is_view = plan.slots[node.outputs[0]].kind == "view"
            if is_view and node.outputs[0] in fixed and not (step.waits or step.record):
                continue  # nothing to do at run time
            runner = None if is_view else backend.prepare(node)
            scratch = plan.scratch.get(node) if getattr(runner, "scratch_kw", False) else None
            self.launches.append(
                Launch(
                    i,
                    runner,
                    node.inputs,
                    node.outputs,
                    step.stream,
                    step.waits,
                    step.record,
                    scratch,
                )
            )
        self.streams = backend.make_streams(sched.num_streams)
        # where the arena comes from: None allocates it; a region's body plan gets a slice of
        # its parent's arena (the range the parent's plan reserved for it, plan.scratch)
        self.arena_source: Callable[[], Any] | None = None
        for launch in self.launches:
            attach = getattr(launch.runner, "attach", None)
            if attach is not None:  # a region runner: its bodies' arenas live in ours
                attach(self)
        # output position -> the value whose fresh buffer it is (first position of each value)
        self.fresh_at: dict[int, Value] = {}
        for p, v in enumerate(graph.outputs):
            if plan.slots[v].kind == "output" and v not in self.fresh_at.values():
                self.fresh_at[p] = v
        self._program: Callable[..., list] | None = None
        # whether the program sets the BLAS thread policy itself (a region body's does not)
        self.blas_scope = True
        self._lock = threading.Lock()

    # -- memory, made on the first call ------------------------------------------------------
    @property
    def arena(self) -> Any:
        self._materialize()
        return self._arena

    @property
    def fixed(self) -> dict[Value, Any]:
        """Constants, arena values and their views: value -> array (made on first use)."""
        self._materialize()
        assert self._fixed is not None
        return self._fixed

    def _materialize(self) -> None:
        if self._fixed is not None:
            return
        b, plan = self.backend, self.plan
        try:
            arena = b.alloc(plan.arena_bytes) if self.arena_source is None else self.arena_source()
        except MemoryError as e:  # cupy.cuda.memory.OutOfMemoryError is a MemoryError too
            raise ArenaMemoryError(
                f"cannot allocate the arena of this plan: {plan.arena_bytes} bytes "
                f"({plan.arena_bytes / 2**20:.1f} MiB) on the {b.name} backend "
                f"({type(e).__name__}: {e}). Smaller inputs, or fewer streams (each stream "
                "keeps more values alive at once), need less."
            ) from e
        fixed: dict[Value, Any] = {}
        # In-place chains put many values at one offset: one array object per (offset, type),
        # because a ufunc whose out= is another object over the same bytes as an input takes
        # NumPy's slower overlap path (0.2 us a call), while the same object does not.
        views: dict[tuple, Any] = {}
        for v in self.fixed_values:
            slot, root = plan.slots[v], plan.slots[plan.root(v)]
            if slot.kind == "const":
                fixed[v] = b.asarray(v.node.attrs["value"])
                continue
            key = (root.offset, v.type.shape, v.type.dtype)
            if key not in views:
                views[key] = b.view(arena, root.offset, v.type)
            fixed[v] = views[key]
        self._arena, self._fixed = arena, fixed
        for launch in self.launches:  # ops' scratch ranges: arena bytes live at their step
            if launch.scratch is not None:
                launch.runner.bind_scratch(self.scratch_of(launch))

    def scratch_of(self, launch: Launch) -> Any:
        """The arena bytes (uint8) the plan reserved as ``launch``'s scratch, or None."""
        if launch.scratch is None:
            return None
        off, size = launch.scratch
        return self.arena[off : off + size]

    # -- calling -------------------------------------------------------------------------------
    def run(self, args: list[Any], outs: list[Any] | None = None) -> list[Any]:
        """One call: results in graph-output order. ``outs`` (optional) holds a buffer or None
        per output: given buffers are written and returned instead of fresh ones."""
        # One call at a time per plan: concurrent calls (from several Python threads) would
        # share the arena and overwrite each other's intermediate values.
        with self._lock:
            program = self._program
            if program is None:
                self._materialize()
                program = self._program = self.backend.program(self) or self._run_env
            return program(*args) if outs is None else program(*args, *outs)

    def _run_env(self, *arrays: Any) -> list[Any]:
        """The generic call: a dict of the values that change per call (inputs, output
        buffers, views of them) filled by ``launch_all`` (or the backend's own ``execute``);
        constants and arena values are in ``fixed``, bound into the launches once.
        ``arrays``: the inputs, then optionally one buffer or None per output."""
        b, graph, fixed = self.backend, self.graph, self.fixed
        n = len(graph.inputs)
        outs = list(arrays[n:]) or [None] * len(graph.outputs)
        env = dict(zip(graph.inputs, arrays[:n]))
        for p, v in self.fresh_at.items():
            env[v] = b.empty(v.type) if outs[p] is None else outs[p]
        b.execute(self, env)
        results = []
        for p, v in enumerate(graph.outputs):
            if self.fresh_at.get(p) is v:
                results.append(env[v])
                continue
            value = env[v] if v in env else fixed[v]
            if outs[p] is None:  # never hand out an input, a constant or one buffer twice
                results.append(b.copy(value))
            else:
                b.copyto(outs[p], value)
                results.append(outs[p])
        return results

    def launch_all(self, env: dict, streams: list) -> None:
        """Every launch, in order, on ``streams`` (a backend's ``execute`` may run it with the
        caller's stream or under CUDA graph capture). Each launch is bound once, on the first
        run (``launch_bind``): a call makes no Python object per launch."""
        bound(self).run(self.backend, env, streams)
