"""Compiled: one traced signature taken through the pipeline, and the loop that runs it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends.base import Backend, get_backend
from .errors import DTypeError, GpuGraphError, ShapeError
from .ir import Graph, TensorType, Value, verify
from .memory import MemoryPlan, plan_memory, reorder_for_memory
from .ops.core import is_cupy
from .passes.pipeline import PassRecord, lower_for_backend, optimize
from .pytree import TreeDef, leaf_paths, unflatten
from .region_exec import explain_regions
from .schedule import Schedule, schedule


@dataclass(frozen=True)
class Options:
    backend: str = "auto"
    optimize: bool = True
    fuse: bool = True
    streams: int | None = None
    cuda_graph: bool = False
    verify: bool = False
    unsafe_math: bool = False
    vectorize: bool = True


@dataclass
class Launch:
    step: int
    runner: Any  # Runner, or None for a view (reshape without a copy)
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    stream: int
    waits: tuple[int, ...]
    record: bool


class Executable:
    """A flat list of launches over one arena. ``run`` is the only per-call work.

    The arena is allocated once; every arena value (and every view of one) is an array made
    once at its planned offset and written through ``out=``. Values the user gets back are
    fresh buffers each call ("output" slots) or copies, never arena memory; user inputs are
    only read.
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
        self.arena = backend.alloc(plan.arena_bytes)
        self.fixed: dict[Value, Any] = {}  # constants, arena values and their views
        for v, slot in plan.slots.items():
            root = plan.slots[plan.root(v)]
            if slot.kind == "const":
                self.fixed[v] = backend.asarray(v.node.attrs["value"])
            elif slot.kind in ("arena", "view") and root.kind == "arena":
                self.fixed[v] = backend.view(self.arena, root.offset, v.type)
        self.fresh = [v for v, s in plan.slots.items() if s.kind == "output"]
        self.launches: list[Launch] = []
        for i, step in enumerate(sched.steps):
            node = step.node
            if node.op == "constant":
                continue
            is_view = plan.slots[node.outputs[0]].kind == "view"
            if is_view and node.outputs[0] in self.fixed and not (step.waits or step.record):
                continue  # nothing to do at run time
            runner = None if is_view else backend.prepare(node)
            self.launches.append(
                Launch(i, runner, node.inputs, node.outputs, step.stream, step.waits, step.record)
            )
        self.streams = backend.make_streams(sched.num_streams)
        self._lock = threading.Lock()

    def run(self, args: list[Any]) -> list[Any]:
        # One call at a time per plan: concurrent calls (from several Python threads) would
        # share the arena and overwrite each other's intermediate values.
        with self._lock:
            return self._run(args)

    def _run(self, args: list[Any]) -> list[Any]:
        b = self.backend
        env = dict(self.fixed)
        env.update(zip(self.graph.inputs, args))
        for v in self.fresh:
            env[v] = b.empty(v.type)
        b.execute(self, env)
        results, seen = [], set()
        for v in self.graph.outputs:
            slot = self.plan.slots[v]
            r = env[v]
            if slot.kind != "output" or id(r) in seen:
                r = b.copy(r)  # never hand out an input, a constant or the same buffer twice
            seen.add(id(r))
            results.append(r)
        return results

    def launch_all(self, env: dict, streams: list) -> None:
        """Every launch, in order, on ``streams`` (a backend's ``execute`` may run it with the
        caller's stream or under CUDA graph capture)."""
        b = self.backend
        events: dict[int, Any] = {}
        for launch in self.launches:
            stream = streams[launch.stream]
            for w in launch.waits:
                b.wait(stream, events[w])
            ins = [env[v] for v in launch.inputs]
            if launch.runner is None:
                out = launch.outputs[0]
                if out not in self.fixed:
                    env[out] = ins[0].reshape(out.type.shape)
            else:
                outs = [env[v] for v in launch.outputs]
                b.run_on(stream, lambda r=launch.runner, i=ins, o=outs: r(i, o))
            if launch.record:
                events[launch.step] = b.record(stream)


def _weak_int_ranges(graph: Graph) -> dict[int, tuple[int, int]]:
    """For each weak Python-int input that the graph casts to a narrower integer dtype (a weak
    scalar takes the dtype of the array it meets), the range of values that cast keeps exact."""
    users = graph.users()
    ranges: dict[int, tuple[int, int]] = {}
    for i, v in enumerate(graph.inputs):
        if not (v.type.weak and v.type.dtype.kind == "i"):
            continue
        for node in users.get(v, []):
            dt = node.attrs.get("dtype") if node.op == "astype" else None
            if dt is not None and np.dtype(dt).kind in "iu":
                info = np.iinfo(dt)
                lo, hi = ranges.get(i, (info.min, info.max))
                ranges[i] = (max(lo, int(info.min)), min(hi, int(info.max)))
    return ranges


# Called with every Compiled once it is built (the test suite race-checks every plan).
COMPILED_OBSERVERS: list[Callable[[Compiled], None]] = []


class Compiled:
    """A function compiled for one input signature. Call it with arrays like the original."""

    def __init__(
        self,
        graph: Graph,
        in_tree: TreeDef,
        out_tree: TreeDef,
        options: Options,
        arg_names: list[str] | None = None,
    ):
        self.traced_graph = graph
        self.in_tree, self.out_tree, self.options = in_tree, out_tree, options
        self.arg_names = arg_names or leaf_paths(in_tree, "args")
        self._int_ranges = _weak_int_ranges(graph)
        self.backend = get_backend(options.backend)
        self.pass_log: list[PassRecord] = []
        check = options.verify
        if check:
            verify(graph)
        g = (
            optimize(graph, self.pass_log, check, unsafe_math=options.unsafe_math)
            if options.optimize
            else graph
        )
        self.graph = lower_for_backend(g, self.pass_log, options.fuse, check, options.vectorize)
        # Streams only overlap work where the backend has real ones; elsewhere they would just
        # cost arena bytes, so the default there is 1 (an explicit streams=K is honoured).
        streams = options.streams
        if streams is None and not self.backend.concurrent_streams:
            streams = 1
        self.graph = reorder_for_memory(self.graph)
        self.schedule = schedule(self.graph, streams)
        self.memory = plan_memory(self.graph, self.schedule)
        self.executable = Executable(
            self.graph, self.schedule, self.memory, self.backend, options.cuda_graph
        )
        for observe in COMPILED_OBSERVERS:
            observe(self)

    # -- calling --------------------------------------------------------------------------
    @property
    def input_types(self) -> list[TensorType]:
        return [v.type for v in self.traced_graph.inputs]

    def check_args(self, leaves: list[Any]) -> list[Any]:
        types = self.input_types
        if len(leaves) != len(types):
            raise GpuGraphError(
                f"compiled function takes {len(types)} array arguments, got {len(leaves)}"
            )
        out = []
        b = self.backend
        for name, t, x in zip(self.arg_names, types, leaves):
            if isinstance(x, (bool, int, float)) and t.weak:
                lo, hi = self._int_ranges.get(len(out), (None, None))
                if lo is not None and not isinstance(x, bool) and not lo <= x <= hi:
                    raise DTypeError(
                        f"argument {name}: Python integer {x} is out of bounds for the integer "
                        f"dtype it combines with (range {lo}..{hi}); NumPy raises here too"
                    )
                try:
                    out.append(b.asarray(np.asarray(x, dtype=t.dtype)))
                except OverflowError:
                    raise DTypeError(f"argument {name}: {x} does not fit in {t.dtype}") from None
                continue
            shape = tuple(getattr(x, "shape", ()))
            dtype = getattr(x, "dtype", None)
            if shape != t.shape:
                raise ShapeError(f"argument {name}: expected shape {t.shape}, got {shape}")
            if dtype != t.dtype:
                got = dtype if dtype is not None else f"a Python {type(x).__name__}"
                raise DTypeError(f"argument {name}: expected dtype {t.dtype}, got {got}")
            if not b.is_native(x) and is_cupy(x):
                raise GpuGraphError(
                    f"argument {name}: a CuPy (GPU) array was passed to a function compiled for "
                    f"the {b.name} backend; pass a NumPy array ({name}.get()) or compile with "
                    "backend='cupy'"
                )
            out.append(x if b.is_native(x) else b.asarray(np.asarray(x)))
        return out

    def call_flat(self, leaves: list[Any]) -> list[Any]:
        return self.executable.run(self.check_args(leaves))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call with the traced arguments: the dynamic ones by position, then the keyword ones
        that were passed to the jitted function by keyword (keyword-only parameters)."""
        from .pytree import flatten

        leaves, _ = flatten(args + ((kwargs,) if kwargs else ()))
        return unflatten(self.out_tree, self.call_flat(leaves))

    # -- introspection --------------------------------------------------------------------
    @property
    def kernels(self) -> dict[str, str]:
        """Generated CUDA kernels of this plan: name -> source."""
        found: dict[str, str] = {}
        for node in self.graph.nodes:
            src = node.attrs.get("cuda_source")
            if src:
                found[node.attrs["kernel_name"]] = src
        return found

    def to_dot(self) -> str:
        return self.graph.to_dot({s.node: s.stream for s in self.schedule.steps})

    def explain(self) -> str:
        lines = [
            f"backend: {self.backend.name}",
            f"traced graph: {len(self.traced_graph.nodes)} nodes; "
            f"final graph: {len(self.graph.nodes)} nodes",
            "passes:",
        ]
        if not self.pass_log:
            lines.append("  (no pass changed the graph)")
        for rec in self.pass_log:
            fired = ", ".join(f"{k} x{n}" for k, n in sorted(rec.rewrites.items()))
            lines.append(f"  {rec.name}: {rec.nodes_before} -> {rec.nodes_after} nodes; {fired}")
        for note in self.traced_graph.meta.get("autograph", []):
            lines.append(f"  autograph: {note}")
        for note in self.graph.meta.get("fusion_notes", []):
            lines.append(f"  fusion: {note}")
        lines.append(
            f"schedule: {self.schedule.num_streams} stream(s), {len(self.schedule.steps)} steps"
        )
        lines.append(f"memory: {self.memory.summary()}")
        lines.extend(explain_regions(self.executable))
        return "\n".join(lines)
