"""Running region nodes in a compiled plan: each body is compiled once into its own plan.

A region node's runner (installed as the ``prepare`` hook of ``cond``/``while``/``scan`` for
the NumPy and CuPy backends) compiles every sub-graph at lowering time into a ``BodyPlan``
(region_body.py: memory-aware order, schedule, memory plan, ``Executable``), whose arena is a
slice of the parent's arena (``attach``: the range the parent's plan reserved for this node).
On the first run the body becomes a program ``f(*inputs, *dests)``: on NumPy the same generated
straight-line function the top-level dispatch uses (every call bound once, small fused groups
inlined as direct ufunc calls), elsewhere its launches on the caller's stream (a wide body
forks side streams off it). A loop's driver is generated too: one function per while/scan
node whose loop, unrolled twice so that the carry swap is in the names, holds the body
program's own lines (its ``inline`` hook) or, where it has none, one call of it. An iteration
is then a handful of direct ufunc calls: no re-tracing, no re-planning, no array or argument
list made. A loop carry lives in one buffer when the body can update it in place
(``region_body.inplace_carries``), else in two (iteration k reads one and writes the other);
a scan's per-step outputs are written straight into views of the rows of its stacked outputs.
A while loop reads its predicate once per iteration (on CuPy: one small device-to-host copy,
which also waits for the step's kernels).
Body programs leave the BLAS thread policy to their region, which sets it once per run.

Body plans are handed to ``runtime.COMPILED_OBSERVERS`` like top-level ones (the test suite's
race sweep reschedules them on several streams); kernels fused inside bodies reach
``codegen.cuda.KERNEL_OBSERVERS`` when the fusion pass makes them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .backends import blas
from .errors import UnsupportedError
from .ir import Node, TensorType
from .ops.control import REGION_OPS, clamp_index, loop_limit_error
from .ops.registry import get_op
from .region_body import BodyPlan, _launch_program, inplace_carries, scratch_bytes

__all__ = ["RUNNERS", "BodyPlan", "RegionRunner", "_launch_program"]


_OP_NAMES = {"cond": "cond/switch", "while": "while_loop", "scan": "scan/fori_loop"}


def _check_not_capturing(cuda: Any, node: Node) -> None:
    """Bodies launch on the caller's current stream (the region node's); under CUDA graph
    capture a host read of a predicate or index is illegal, so say so instead. ``cuda``:
    the backend's ``xp.cuda`` (CuPy or its test stand-in), None on NumPy."""
    stream = cuda.get_current_stream()
    if getattr(stream, "is_capturing", lambda: False)():
        raise UnsupportedError(
            f"a {_OP_NAMES.get(node.op, node.op)} (at {node.attrs.get('_loc')}) cannot run "
            "inside a CUDA graph capture: its branch or trip count is read on the host. "
            "gg.jit(..., cuda_graph=True) captures the work around regions itself; do not "
            "call a compiled function holding one inside your own stream capture"
        )


class RegionRunner:
    """Base of the three runners: holds the node and its body plans (for explain())."""

    plans: dict[str, BodyPlan]

    def __init__(self, node: Node, backend: Any) -> None:
        self.node, self.backend = node, backend
        self.child_range: tuple[int, int] | None = None  # (offset, bytes) in the parent arena
        self.trips: int | None = None  # iterations of the last run (loops)
        self._bufs: list[list[Any]] | None = None
        self.inplace: list[bool] = []  # per carry: updated in place (one buffer, not two)
        self._policy: Any = False  # the BLAS policy around a run, found on the first run
        # CuPy's cuda module, looked up once: on NumPy ``getattr(numpy, "cuda", None)`` goes
        # through NumPy's module __getattr__ and a caught AttributeError (~20 us a run)
        self._cuda = getattr(backend.xp, "cuda", None)

    def carry_types(self) -> list[TensorType]:
        return []

    def attach(self, parent: Any) -> None:
        """Called by the parent Executable: each body's arena becomes a slice of the range the
        parent's plan reserved for this node (``plan.scratch``), made when the parent's arena
        is. A body whose plan does not fit (a test's rebuilt plan) keeps its own allocation."""
        self.child_range = parent.plan.scratch.get(self.node)
        if self.child_range is None:
            return
        off, size = self.child_range
        for plan in self.plans.values():
            need = plan.memory.arena_bytes
            if 0 < need <= size:
                plan.executable.arena_source = lambda p=parent, o=off, n=need: p.arena[o : o + n]

    def __call__(self, ins: list, outs: list) -> None:
        """One run of the region. Body programs leave the BLAS thread policy to this call:
        it is set once here when a body has a GEMM, not twice per iteration (about 3 us)."""
        if self._cuda is not None:
            _check_not_capturing(self._cuda, self.node)
        if self._policy is False:
            self._policy = self._blas_policy()
        blas.run_small(self._policy, self.run, ins, outs)

    def _blas_policy(self) -> blas.Policy | None:
        """The policy to set around a run: None when no body has a GEMM, or when one sets the
        count itself (it has a big GEMM, which restores the count it found)."""
        progs = [p.program for p in self.plans.values()]
        if any(getattr(f, "blas_scoped", False) for f in progs):
            return None
        return blas.policy() if any(getattr(f, "gemms", 0) for f in progs) else None

    def run(self, ins: list, outs: list) -> None:
        raise NotImplementedError

    @property
    def bufs(self) -> list[list[Any]]:
        """The two carry buffer lists (iteration k reads one, writes the other), made on first
        use; a carry updated in place has one buffer, in both lists."""
        if self._bufs is None:
            self._bufs = self.make_bufs(self.backend.empty)
        return self._bufs

    def make_bufs(self, new: Callable[[TensorType], Any]) -> list[list[Any]]:
        types = self.carry_types()
        first = [new(t) for t in types]
        second = [a if same else new(t) for a, t, same in zip(first, types, self.inplace)]
        return [first, second]

    def buffer_bytes(self) -> int:
        return sum(
            t.nbytes * (1 if same else 2) for t, same in zip(self.carry_types(), self.inplace)
        )


class CondRunner(RegionRunner):
    def __init__(self, node: Node, backend: Any) -> None:
        super().__init__(node, backend)
        branches = node.attrs["branches"]
        self.plans = {f"branch {k}": BodyPlan(g, backend) for k, g in enumerate(branches)}
        self.order = list(self.plans.values())

    def run(self, ins: list, outs: list) -> None:
        k = clamp_index(int(ins[0]), len(self.order))  # on CuPy: one device-to-host read
        self.order[k].program(*ins[1:], *outs)


def _call_lines(plan: BodyPlan, ins: list[str], outs: list[str], prefix: str) -> tuple:
    """One run of ``plan`` over a driver's names: the body program's own lines where the
    backend can inline them (NumPy, when the body leaves the BLAS policy to its region), else
    one call of the program. Returns (lines, globals)."""
    program = plan.program
    inline = getattr(program, "inline", None)
    if inline is not None and not getattr(program, "blas_scoped", False):
        return inline(ins, outs, prefix)
    return [f"{prefix}p({', '.join(ins + outs)})"], {f"{prefix}p": program}


def _make_driver(name: str, params: list[str], lines: list[str], ns: dict) -> Any:
    source = f"def {name}({', '.join(params)}):\n" + "".join(f"    {x}\n" for x in lines)
    exec(compile(source, f"<gpugraph {name}>", "exec"), ns)
    driver = ns[name]
    driver.source = source  # what one run does, for debugging and tests
    return driver


def _names(stem: str, n: int) -> list[str]:
    return [f"{stem}{k}" for k in range(n)]


class WhileRunner(RegionRunner):
    def __init__(self, node: Node, backend: Any) -> None:
        super().__init__(node, backend)
        a = node.attrs
        self.n, self.max_steps, self.loc = a["n_carry"], a["max_steps"], a.get("_loc")
        self.plans = {
            "cond": BodyPlan(a["cond_graph"], backend),
            "body": BodyPlan(a["body_graph"], backend),
        }
        self.inplace = inplace_carries(self.plans["body"], self.n)
        self._pred: Any = None
        self._driver: Any = None

    def carry_types(self) -> list[TensorType]:
        return [v.type for v in self.node.outputs]

    def driver(self) -> Any:
        """``drive(*carries, *consts, *b0, *b1, pred) -> steps``: the whole loop as generated
        straight-line Python, unrolled twice so the carry swap is in the names (iteration 0
        reads the inputs and writes b0; odd ones read b0, even ones read b1)."""
        if self._driver is None:
            n, nk = self.n, len(self.node.inputs) - self.n
            c, k, b0, b1 = _names("c", n), _names("k", nk), _names("a", n), _names("b", n)
            ns: dict = {"_limit_error": self._limit_error}
            cond, body = self.plans["cond"], self.plans["body"]

            def step(src: list[str], dst: list[str]) -> list[str]:
                lines, globs = _call_lines(cond, src + k, ["pred"], "_c")
                ns.update(globs)
                lines += ["if not pred: return steps"]  # the one host read per iteration
                if self.max_steps is not None:
                    lines += [f"if steps >= {self.max_steps}: _limit_error()"]
                more, globs = _call_lines(body, src + k, dst, "_b")
                ns.update(globs)
                return lines + more + ["steps += 1"]

            lines = ["steps = 0", *step(c, b0), "while True:"]
            lines += ["    " + x for x in step(b0, b1) + step(b1, b0)]
            self._driver = _make_driver("drive", c + k + b0 + b1 + ["pred"], lines, ns)
        return self._driver

    def _limit_error(self) -> None:
        raise loop_limit_error(self.max_steps, self.loc)

    def run(self, ins: list, outs: list) -> None:
        if self._pred is None:
            self._pred = self.backend.empty(TensorType((), np.bool_))
        b0, b1 = self.bufs
        steps = self.trips = self.driver()(*ins, *b0, *b1, self._pred)
        final = ins[: self.n] if steps == 0 else (b0 if steps & 1 else b1)
        for o, c in zip(outs, final):
            o[...] = c


class ScanRunner(RegionRunner):
    def __init__(self, node: Node, backend: Any) -> None:
        super().__init__(node, backend)
        a = node.attrs
        self.nc, self.nx, self.length, self.reverse = (
            a["n_carry"],
            a["n_xs"],
            a["length"],
            a["reverse"],
        )
        self.plans = {"body": BodyPlan(a["body"], backend)}
        self.inplace = inplace_carries(self.plans["body"], self.nc)
        self._driver: Any = None

    def carry_types(self) -> list[TensorType]:
        return [v.type for v in self.node.outputs[: self.nc]]

    def driver(self) -> Any:
        """``drive(order, *carries, *xs, *consts, *b0, *b1, *ys)``: the whole scan as generated
        straight-line Python, unrolled twice so the carry swap is in the names; each step
        takes its rows of xs and ys as views (``[t, ...]`` keeps a 0-d row an array)."""
        if self._driver is None:
            node, nc, nx = self.node, self.nc, self.nx
            nk, ny = len(node.inputs) - nc - nx, len(node.outputs) - nc
            c, X, k = _names("c", nc), _names("X", nx), _names("k", nk)
            b0, b1, Y = _names("a", nc), _names("b", nc), _names("Y", ny)
            x, y = _names("x", nx), _names("y", ny)
            rows = [f"{r} = {A}[t, ...]" for r, A in zip(x + y, X + Y)]
            ns: dict = {}

            def step(src: list[str], dst: list[str]) -> list[str]:
                lines, globs = _call_lines(self.plans["body"], src + x + k, dst + y, "_b")
                ns.update(globs)
                return rows + lines

            lines = ["it = iter(order)", "for t in it:"]
            lines += ["    " + s for s in step(c, b0) + ["break"]]
            lines += ["for t in it:"] + ["    " + s for s in step(b0, b1)]
            lines += ["    for t in it:"] + ["        " + s for s in step(b1, b0) + ["break"]]
            params = ["order", *c, *X, *k, *b0, *b1, *Y]
            self._driver = _make_driver("drive", params, lines, ns)
        return self._driver

    def run(self, ins: list, outs: list) -> None:
        nc = self.nc
        b0, b1 = self.bufs
        order = range(self.length - 1, -1, -1) if self.reverse else range(self.length)
        self.driver()(order, *ins, *b0, *b1, *outs[nc:])
        self.trips = self.length
        final = ins[:nc] if self.length == 0 else (b0 if self.length & 1 else b1)
        for o, c in zip(outs[:nc], final):
            o[...] = c


RUNNERS = {"cond": CondRunner, "while": WhileRunner, "scan": ScanRunner}


def _install() -> None:
    for op in REGION_OPS:
        get_op(op).extra["scratch_bytes"] = scratch_bytes  # read by memory.plan_memory
        hooks = get_op(op).extra.setdefault("prepare", {})
        for backend in ("numpy", "cupy"):
            hooks[backend] = RUNNERS[op]


_install()
