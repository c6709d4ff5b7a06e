"""Compiled: one traced signature taken through the pipeline, and the loop that runs it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends.base import Backend, BackendInfo, default_backend, get_backend
from .buffers import _CONSUMED, check_live, check_out, consume, donated_outputs, donation_pairs
from .errors import ArenaMemoryError, DTypeError, GpuGraphError, ShapeError
from .ir import Graph, TensorType, Value, verify
from .memory import MemoryPlan, plan_memory, reorder_for_memory
from .ops.core import is_array, is_cupy
from .passes.pipeline import PassRecord, lower_for_backend, optimize
from .pytree import TreeDef, leaf_paths, unflatten
from .region_explain import explain_regions
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
    cond_to_select: bool = True


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
        """The generic call: a dict of values filled by ``launch_all`` (or the backend's own
        ``execute``). ``arrays``: the inputs, then optionally one buffer or None per output."""
        b, graph = self.backend, self.graph
        n = len(graph.inputs)
        outs = list(arrays[n:]) or [None] * len(graph.outputs)
        env = dict(self.fixed)
        env.update(zip(graph.inputs, arrays[:n]))
        for p, v in self.fresh_at.items():
            env[v] = b.empty(v.type) if outs[p] is None else outs[p]
        b.execute(self, env)
        results = []
        for p, v in enumerate(graph.outputs):
            if self.fresh_at.get(p) is v:
                results.append(env[v])
            elif outs[p] is None:  # never hand out an input, a constant or one buffer twice
                results.append(b.copy(env[v]))
            else:
                b.copyto(outs[p], env[v])
                results.append(outs[p])
        return results

    def launch_all(self, env: dict, streams: list) -> None:
        """Every launch, in order, on ``streams`` (a backend's ``execute`` may run it with the
        caller's stream or under CUDA graph capture)."""
        b = self.backend
        fixed = self.fixed_values
        events: dict[int, Any] = {}
        for launch in self.launches:
            stream = streams[launch.stream]
            for w in launch.waits:
                b.wait(stream, events[w])
            ins = [env[v] for v in launch.inputs]
            if launch.runner is None:
                out = launch.outputs[0]
                if out not in fixed:
                    env[out] = ins[0].reshape(out.type.shape)
            else:
                outs = [env[v] for v in launch.outputs]
                b.run_on(stream, lambda r=launch.runner, i=ins, o=outs: r(i, o))
            if launch.record:
                events[launch.step] = b.record(stream)


def _packer(tree: TreeDef) -> Callable[[list], Any]:
    """results list -> the user's output structure (the common shapes without a tree walk)."""
    if tree.kind == "leaf":
        return lambda r: r[0]
    if tree.kind == "tuple" and all(c.kind == "leaf" for c in tree.children):
        return tuple
    return lambda r: unflatten(tree, r)


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
        donated: Sequence[int] = (),
    ):
        self.traced_graph = graph
        self.in_tree, self.out_tree, self.options = in_tree, out_tree, options
        self.arg_names = arg_names or leaf_paths(in_tree, "args")
        self._int_ranges = _weak_int_ranges(graph)
        # what backend="auto" picked and why (explain() says it); None for a named backend
        self.backend_choice: BackendInfo | None = None
        name = options.backend
        if name == "auto":
            self.backend_choice = default_backend()
            name = self.backend_choice.name
        self.backend = get_backend(name)
        self.pass_log: list[PassRecord] = []
        check = options.verify
        if check:
            verify(graph)
        g = (
            optimize(
                graph,
                self.pass_log,
                check,
                unsafe_math=options.unsafe_math,
                cond_to_select=options.cond_to_select,
            )
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
        self.executable = ex = Executable(
            self.graph, self.schedule, self.memory, self.backend, options.cuda_graph
        )
        self.backend.ready(ex)  # compiles native code now: its errors surface at lower()
        # flat input indices donated by the caller, and which output may reuse which
        self.donated = frozenset(donated)
        self.donation = donation_pairs(
            self.graph, self.schedule, self.memory, self.donated, ex.fresh_at
        )
        # input positions that take Python numbers (converted each call)
        self._scalars = [i for i, t in enumerate(self.input_types) if t.weak]
        self._pack = _packer(out_tree)
        self.reserve_out = True  # ``out=`` means output buffers (jit clears it if fn has out)
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
            if not is_array(x):  # a ShapeDtype, or any other object with shape and dtype
                raise GpuGraphError(
                    f"argument {name}: expected an array, got {type(x).__name__} (a gg.ShapeDtype "
                    "describes an argument for fn.lower(...); the call takes data)"
                )
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

    def call_flat(self, leaves: list[Any], out: list[Any] | None = None) -> list[Any]:
        """Run on flattened arguments; ``out``: optional flattened output buffers."""
        args = self.check_args(leaves)
        if _CONSUMED:
            check_live(leaves, self.arg_names)
        return self._run(leaves, args, out)

    def call_fast(self, args: list[Any]) -> Any:
        """The call path of a signature seen before (``JitFunction``'s cache hit on types,
        shapes and dtypes of positional arrays and numbers): only what depends on the values
        is checked, i.e. the Python numbers' ranges and donated arrays' liveness."""
        if self._scalars:
            args = self.check_args(args)
        if _CONSUMED:
            check_live(args, self.arg_names)
        if not self.donated:
            return self._pack(self.executable.run(args))
        return self._pack(self._run(args, args, None))

    def _run(self, leaves: list[Any], args: list[Any], out: list[Any] | None) -> list[Any]:
        b, ex = self.backend, self.executable
        if out is not None:
            out = check_out(b, out, [v.type for v in self.graph.outputs], args)
        elif self.donation:
            out = donated_outputs(b, args, self.donation, len(self.graph.outputs))
        results = ex.run(args, out)
        if self.donated:
            consume(b, leaves, self.donated)
        return results

    def __call__(self, *args: Any, out: Any = None, **kwargs: Any) -> Any:
        """Call with the traced arguments: the dynamic ones by position, then the keyword ones
        that were passed to the jitted function by keyword (keyword-only parameters).
        ``out``: output buffers (an array, or the output's tree of arrays) to write the results
        into; they are returned. Without it every call returns fresh arrays."""
        from .pytree import flatten

        if not self.reserve_out and out is not None:  # fn's own parameter called out
            kwargs, out = {**kwargs, "out": out}, None
        leaves, _ = flatten(args + ((kwargs,) if kwargs else ()))
        return self._pack(self.call_flat(leaves, self.flatten_out(out)))

    def flatten_out(self, out: Any) -> list[Any] | None:
        """``out=`` as a list of leaves in output order (it must have the output's structure;
        a single output may be given as the bare array)."""
        if out is None:
            return None
        from .pytree import flatten

        leaves, tree = flatten(out, is_leaf=lambda x: hasattr(x, "shape"))
        if tree != self.out_tree:
            raise GpuGraphError(
                "out= must have the structure of the function's output (the same nesting of "
                "tuples, lists and dicts, one array per output)"
            )
        return leaves

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
        """DOT with nodes coloured by stream; hovering shows each output's arena bytes."""
        return self.graph.to_dot({s.node: s.stream for s in self.schedule.steps}, self.memory)

    def explain(self) -> str:
        lines = [
            f"backend: {self.backend.name}"
            + (f" (auto: {self.backend_choice.reason})" if self.backend_choice else ""),
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
        lines.extend(self.backend.explain_lines(self.executable))
        return "\n".join(lines)
