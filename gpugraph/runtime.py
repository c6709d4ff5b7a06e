"""Compiled: one traced signature taken through the pipeline (the launch list it lowers to,
and the loop that runs it, are ``executable.Executable``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends.base import BackendInfo, default_backend, get_backend
from .buffers import _CONSUMED, check_live, check_out, consume, donated_outputs, donation_pairs
from .errors import DTypeError, GpuGraphError, ShapeError
from .executable import Executable, Launch
from .ir import Graph, TensorType, verify
from .memory import plan_memory, reorder_for_memory
from .ops.core import is_array, is_cupy
from .passes.pipeline import PassRecord, lower_for_backend, optimize
from .pytree import TreeDef, flatten, leaf_paths, unflatten
from .region_explain import explain_regions
from .schedule import schedule

__all__ = ["COMPILED_OBSERVERS", "Compiled", "Executable", "Launch", "Options"]


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


# At most this many fast keys per Compiled (each is one checked call's tree and types).
_FAST_KEYS_MAX = 16

_FAST_FLATTEN: Callable[[Any], tuple[tuple, list] | None] | None = None


def _load_fast_flatten() -> Callable[[Any], tuple[tuple, list] | None]:
    """trace.fast_flatten, imported on the first call (trace imports this module)."""
    global _FAST_FLATTEN
    from .trace import fast_flatten

    _FAST_FLATTEN = fast_flatten
    return fast_flatten


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
        self._types = tuple(v.type for v in graph.inputs)  # fixed: the traced graph's inputs
        # what backend="auto" picked and why (explain() says it); None for a named backend
        self.backend_choice: BackendInfo | None = None
        name = options.backend
        if name == "auto":
            self.backend_choice = default_backend()
            name = self.backend_choice.name
        self.backend = get_backend(name)
        self._nd_native = self.backend.is_native(np.empty(0))  # NumPy arrays pass unconverted
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
        self.memory = plan_memory(self.graph, self.schedule, backend=self.backend.name)
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
        # fast key -> (NumPy scalar positions, insertion-to-leaf order) of calls checked once
        self._fast: dict[tuple, tuple[tuple[int, ...], tuple[int, ...] | None]] = {}
        self.reserve_out = True  # ``out=`` means output buffers (jit clears it if fn has out)
        for observe in COMPILED_OBSERVERS:
            observe(self)

    # -- calling --------------------------------------------------------------------------
    @property
    def input_types(self) -> list[TensorType]:
        return list(self._types)

    def check_args(self, leaves: list[Any]) -> list[Any]:
        types = self._types
        if len(leaves) != len(types):
            raise GpuGraphError(
                f"compiled function takes {len(types)} array arguments, got {len(leaves)}"
            )
        out = []
        b = self.backend
        nd, nd_native = np.ndarray, self._nd_native
        for name, t, x in zip(self.arg_names, types, leaves):
            # the common leaf first: a native NumPy array of the right shape and dtype passes
            # as it is (any other leaf, or a mismatch, goes through the checks that name it)
            if type(x) is nd and nd_native and x.shape == t.shape and x.dtype == t.dtype:
                out.append(x)
                continue
            if isinstance(x, (bool, int, float)) and t.weak:
                out.append(self._scalar_arg(len(out), name, t, x))
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

    def _scalar_arg(self, i: int, name: str, t: TensorType, x: Any) -> Any:
        """The Python number ``x`` for the weak input ``i``: range-checked, as an array."""
        lo, hi = self._int_ranges.get(i, (None, None))
        if lo is not None and not isinstance(x, bool) and not lo <= x <= hi:
            raise DTypeError(
                f"argument {name}: Python integer {x} is out of bounds for the integer "
                f"dtype it combines with (range {lo}..{hi}); NumPy raises here too"
            )
        try:
            return self.backend.asarray(np.asarray(x, dtype=t.dtype))
        except OverflowError:
            raise DTypeError(f"argument {name}: {x} does not fit in {t.dtype}") from None

    def call_flat(self, leaves: list[Any], out: list[Any] | None = None) -> list[Any]:
        """Run on flattened arguments; ``out``: optional flattened output buffers."""
        args = self.check_args(leaves)
        if _CONSUMED:
            check_live(leaves, self.arg_names)
        return self._run(leaves, args, out)

    def call_fast(self, args: list[Any], numpy_scalars_at: tuple[int, ...] = ()) -> Any:
        """The call path of a signature seen before (``JitFunction``'s cache hit on types,
        shapes and dtypes of positional arrays and numbers): only what depends on the values
        is checked, i.e. the Python numbers' ranges and donated arrays' liveness.
        ``numpy_scalars_at``: positions of NumPy scalars, made 0-d arrays as in check_args."""
        for i in numpy_scalars_at:
            args[i] = self.backend.asarray(np.asarray(args[i]))
        if self._scalars:  # only the numbers: the key matched every array's shape and dtype
            types, names = self._types, self.arg_names
            for i in self._scalars:
                args[i] = self._scalar_arg(i, names[i], types[i], args[i])
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
        fast_flatten = _FAST_FLATTEN or _load_fast_flatten()
        found = fast_flatten(args) if out is None and not kwargs else None
        hit = None if found is None else self._fast.get(found[0])
        if hit is not None:  # a plain tree seen (and checked) before: no per-leaf checks
            scalars_at, order = hit
            leaves = found[1] if order is None else [found[1][i] for i in order]
            return self.call_fast(leaves, scalars_at)
        if not self.reserve_out and out is not None:  # fn's own parameter called out
            kwargs, out = {**kwargs, "out": out}, None
        leaves, _ = flatten(args + ((kwargs,) if kwargs else ()))
        if found is not None:
            args_checked = self.check_args(leaves)  # raises as before on any mismatch
            self._remember_fast(found, args, leaves, args_checked)
            if _CONSUMED:
                check_live(leaves, self.arg_names)
            return self._pack(self._run(leaves, args_checked, None))
        return self._pack(self.call_flat(leaves, self.flatten_out(out)))

    def _remember_fast(
        self, found: tuple[tuple, list], args: tuple, leaves: list, checked: list
    ) -> None:
        """Enter a fast key whose call ``check_args`` just accepted: a later call with the same
        key (the same tree, array shapes and dtypes, number types) skips the checks, as
        ``JitFunction``'s cache hit does. Only where ``call_fast`` converts exactly what
        ``check_args`` did: Python numbers at the weak inputs, NumPy scalars made 0-d arrays,
        every other leaf passed through as it is (no backend conversion)."""
        from .trace import _FAST_SCALARS, _NUMPY_SCALARS, leaf_order

        if len(self._fast) >= _FAST_KEYS_MAX:
            return  # a caller cycling through many orders or types: the checked path stays
        order = leaf_order(args)
        mine = found[1] if order is None else [found[1][i] for i in order]
        if len(mine) != len(leaves) or any(a is not b for a, b in zip(mine, leaves)):
            return
        weak = set(self._scalars)
        scalars_at = []
        for i, (x, y) in enumerate(zip(leaves, checked)):
            t = type(x)
            if (t in _FAST_SCALARS) != (i in weak):
                return  # e.g. a 0-d array for a weak input: call_fast would treat it as a number
            if t in _NUMPY_SCALARS:
                scalars_at.append(i)
            elif i not in weak and y is not x:
                return  # converted for the backend (e.g. NumPy to CuPy): the checked path does
        if scalars_at and self.donated:
            return  # a donated NumPy scalar is consumed as the caller's object: checked path
        self._fast[found[0]] = (tuple(scalars_at), order)

    def flatten_out(self, out: Any) -> list[Any] | None:
        """``out=`` as a list of leaves in output order (it must have the output's structure;
        a single output may be given as the bare array)."""
        if out is None:
            return None
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
