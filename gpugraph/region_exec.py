"""Running region nodes in a compiled plan: each body is compiled once into its own plan.

A region node's runner (installed as the ``prepare`` hook of ``cond``/``while``/``scan`` for
the NumPy and CuPy backends) compiles every sub-graph at lowering time into a ``BodyPlan``: the
memory-aware order, a one-stream schedule, a memory plan and an ``Executable`` whose arena is
allocated once. Running a body is ``launch_all`` over a reused environment dict with the body's
outputs bound straight to their destinations: no re-tracing, no re-planning, and no array
allocated per iteration. Loop carries live in two buffers allocated at lowering (iteration k
reads one and writes the other); a scan's per-step outputs are written straight into the rows
of the node's stacked outputs. A while loop reads its predicate once per iteration (on CuPy:
one small device-to-host copy, which also waits for the step's kernels).

Body plans are handed to ``runtime.COMPILED_OBSERVERS`` like top-level ones (the test suite's
race sweep reschedules them on several streams); kernels fused inside bodies reach
``codegen.cuda.KERNEL_OBSERVERS`` when the fusion pass makes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import UnsupportedError
from .ir import Graph, Node, TensorType
from .memory import plan_memory, reorder_for_memory
from .ops.control import REGION_OPS, clamp_index, loop_limit_error
from .ops.registry import get_op
from .schedule import schedule


class BodyPlan:
    """One sub-graph compiled once: its plan and arena; ``bind`` resolves its launches."""

    def __init__(self, graph: Graph, backend: Any) -> None:
        from .runtime import COMPILED_OBSERVERS, Executable  # runtime imports this module

        self.graph = reorder_for_memory(graph)
        self.schedule = schedule(self.graph, 1)
        self.memory = plan_memory(self.graph, self.schedule)
        self.executable = Executable(self.graph, self.schedule, self.memory, backend)
        self.backend = backend
        self.env: dict = dict(self.executable.fixed)
        # outputs the body writes itself (bound to the destination); the rest (an input passed
        # through, a constant, a second mention of one value) are copied into it
        seen: set = set()
        self.direct = []
        for v in self.graph.outputs:
            self.direct.append(self.memory.slots[v].kind == "output" and v not in seen)
            seen.add(v)
        for observe in COMPILED_OBSERVERS:
            observe(self)

    def bind(self, args: list, dests: list) -> Bound:
        """The launch list resolved to arrays for these inputs and destinations: running it is
        one call per launch (the body has one stream, the caller's, so no events)."""
        env = dict(self.env)
        env.update(zip(self.graph.inputs, args))
        for v, direct, d in zip(self.graph.outputs, self.direct, dests):
            if direct:
                env[v] = d
        fixed = self.executable.fixed
        steps = []
        for launch in self.executable.launches:
            ins = [env[v] for v in launch.inputs]
            if launch.runner is None:  # a view: made once here, not per iteration
                out = launch.outputs[0]
                if out not in fixed:
                    env[out] = ins[0].reshape(out.type.shape)
                continue
            steps.append((launch.runner, ins, [env[v] for v in launch.outputs]))
        copies = [
            [d, env[v]]
            for v, direct, d in zip(self.graph.outputs, self.direct, dests)
            if not direct
        ]
        return Bound(steps, copies)

    @property
    def arena_bytes(self) -> int:
        return self.memory.arena_bytes


class Bound:
    """A body's launches bound to arrays; calling it runs them once. ``slots`` (after
    ``find``) lists the places holding a row placeholder, which a scan re-points to the
    current step's row of its xs or ys before each call."""

    __slots__ = ("steps", "copies", "slots")

    def __init__(self, steps: list, copies: list) -> None:
        self.steps, self.copies = steps, copies
        self.slots: list[tuple[list, int, Any]] = []

    def find(self) -> None:
        """Remember every slot holding a row placeholder (its key says which row and view)."""
        for _, ins, outs in self.steps:
            for lst in (ins, outs):
                self.slots += [(lst, i, a.key) for i, a in enumerate(lst) if isinstance(a, _Row)]
        for pair in self.copies:
            self.slots += [(pair, i, a.key) for i, a in enumerate(pair) if isinstance(a, _Row)]

    def __call__(self) -> None:
        for runner, ins, outs in self.steps:
            runner(ins, outs)
        for d, src in self.copies:
            d[...] = src


class _Row:
    """Placeholder for row ``t`` of the k-th xs or ys array while binding a scan body; a view
    of it (a reshape in the body) is a placeholder too, resolved with the row."""

    def __init__(self, key: tuple) -> None:
        self.key = key  # ("x" | "y", k) or ("x" | "y", k, shape) for a view of the row

    def reshape(self, shape) -> _Row:
        return _Row((*self.key[:2], tuple(shape)))


def _row(arrays: dict, key: tuple, t: int) -> Any:
    a = arrays[key[:2]][t, ...]
    return a.reshape(key[2]) if len(key) > 2 else a


def _check_not_capturing(backend: Any) -> None:
    """Bodies launch on the caller's current stream (the region node's); under CUDA graph
    capture a host read of a predicate or index is illegal, so say so instead."""
    if backend.name != "cupy":
        return
    stream = backend.xp.cuda.get_current_stream()
    if getattr(stream, "is_capturing", lambda: False)():
        raise UnsupportedError(
            "a region (cond/while_loop/scan) cannot run under CUDA graph capture yet (its "
            "branch or trip count is read on the host); compile with cuda_graph=False"
        )


class RegionRunner:
    """Base of the three runners: holds the node and its body plans (for explain())."""

    plans: dict[str, BodyPlan]

    def __init__(self, node: Node, backend: Any) -> None:
        self.node, self.backend = node, backend
        self.trips: int | None = None  # iterations of the last run (loops)

    def carry_buffers(self, types: list[TensorType]) -> list[list[Any]]:
        return [[self.backend.empty(t) for t in types] for _ in range(2)]

    def buffer_bytes(self) -> int:
        return 0


class CondRunner(RegionRunner):
    def __init__(self, node: Node, backend: Any) -> None:
        super().__init__(node, backend)
        branches = node.attrs["branches"]
        self.plans = {f"branch {k}": BodyPlan(g, backend) for k, g in enumerate(branches)}
        self.order = list(self.plans.values())

    def __call__(self, ins: list, outs: list) -> None:
        _check_not_capturing(self.backend)
        k = clamp_index(int(ins[0]), len(self.order))  # on CuPy: one device-to-host read
        self.order[k].bind(list(ins[1:]), outs)()


class WhileRunner(RegionRunner):
    def __init__(self, node: Node, backend: Any) -> None:
        super().__init__(node, backend)
        a = node.attrs
        self.n, self.max_steps, self.loc = a["n_carry"], a["max_steps"], a.get("_loc")
        self.plans = {
            "cond": BodyPlan(a["cond_graph"], backend),
            "body": BodyPlan(a["body_graph"], backend),
        }
        self.bufs = self.carry_buffers([v.type for v in node.outputs])
        self.pred = [backend.empty(TensorType((), np.bool_))]

    def buffer_bytes(self) -> int:
        return 2 * sum(v.type.nbytes for v in self.node.outputs)

    def __call__(self, ins: list, outs: list) -> None:
        cond, body = self.plans["cond"], self.plans["body"]
        _check_not_capturing(self.backend)
        consts = list(ins[self.n :])
        b0, b1 = self.bufs
        # iteration 0 reads the inputs and writes b0; odd ones read b0, even ones read b1
        bodies = [body.bind(list(ins), b0), body.bind(b0 + consts, b1), body.bind(b1 + consts, b0)]
        conds = [
            cond.bind(list(ins), self.pred),
            cond.bind(b0 + consts, self.pred),
            cond.bind(b1 + consts, self.pred),
        ]
        pred = self.pred[0]
        steps, at, limit = 0, 0, self.max_steps
        while True:
            conds[at]()
            if not bool(pred):  # the one host read per iteration
                break
            if limit is not None and steps >= limit:
                raise loop_limit_error(limit, self.loc)
            bodies[at]()
            steps += 1
            at = 1 if steps & 1 else 2
        self.trips = steps
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
        self.bufs = self.carry_buffers([v.type for v in node.outputs[: self.nc]])

    def buffer_bytes(self) -> int:
        return 2 * sum(v.type.nbytes for v in self.node.outputs[: self.nc])

    def __call__(self, ins: list, outs: list) -> None:
        body = self.plans["body"]
        nc, nx = self.nc, self.nx
        xs, consts, ys = ins[nc : nc + nx], list(ins[nc + nx :]), outs[nc:]
        b0, b1 = self.bufs
        rows = [_Row(("x", k)) for k in range(nx)] + [_Row(("y", j)) for j in range(len(ys))]
        xr, yr = rows[:nx], rows[nx:]
        order = range(self.length - 1, -1, -1) if self.reverse else range(self.length)
        # iteration 0 reads the inputs and writes b0; odd ones read b0, even ones read b1
        bound = [
            body.bind(list(ins[:nc]) + xr + consts, b0 + yr),
            body.bind(b0 + xr + consts, b1 + yr),
            body.bind(b1 + xr + consts, b0 + yr),
        ]
        arrays = {("x", k): x for k, x in enumerate(xs)} | {("y", j): y for j, y in enumerate(ys)}
        for bd in bound:
            bd.find()
        for k, t in enumerate(order):
            bd = bound[0] if k == 0 else bound[1 if k & 1 else 2]
            for lst, i, key in bd.slots:
                lst[i] = _row(arrays, key, t)
            bd()
        self.trips = self.length
        final = ins[:nc] if self.length == 0 else (b0 if self.length & 1 else b1)
        for o, c in zip(outs[:nc], final):
            o[...] = c


RUNNERS = {"cond": CondRunner, "while": WhileRunner, "scan": ScanRunner}


def _install() -> None:
    for op in REGION_OPS:
        hooks = get_op(op).extra.setdefault("prepare", {})
        for backend in ("numpy", "cupy"):
            hooks[backend] = RUNNERS[op]


_install()


# -- explain ----------------------------------------------------------------------------------
def _trip_knowledge(node: Node) -> str:
    a = node.attrs
    if node.op == "scan":
        return f"trip count {a['length']} (static){', reversed' if a['reverse'] else ''}"
    if node.op == "while":
        if a["max_steps"] is not None:
            return f"trip count known at run time only, at most max_steps={a['max_steps']}"
        return "trip count known at run time only (unbounded: no max_steps)"
    return f"{len(a['branches'])} branches, chosen at run time (index read on the host)"


def explain_regions(executable: Any, indent: str = "") -> list[str]:
    """Per region node of a plan (recursively): what it knows about its trip count, what was
    hoisted out of its body, and each body's arena."""
    lines = []
    for launch in executable.launches:
        r = launch.runner
        if not isinstance(r, RegionRunner):
            continue
        node = r.node
        lines.append(
            f"{indent}region {node.op} (at {node.attrs.get('_loc')}): {_trip_knowledge(node)}"
        )
        if r.trips is not None:
            lines.append(f"{indent}  last run: {r.trips} iterations")
        hoisted = node.attrs.get("_hoisted", ())
        if hoisted:
            lines.append(f"{indent}  hoisted out of the body: {', '.join(hoisted)}")
        if r.buffer_bytes():
            lines.append(
                f"{indent}  carries: double-buffered, {r.buffer_bytes()} B, allocated once"
            )
        for name, plan in r.plans.items():
            ops = ", ".join(f"{k} x{n}" for k, n in sorted(plan.graph.op_counts().items()))
            lines.append(f"{indent}  {name}: {len(plan.graph.nodes)} nodes ({ops})")
            lines.append(
                f"{indent}    arena (planned once, reused every run): {plan.memory.summary()}"
            )
            lines.extend(explain_regions(plan.executable, indent + "    "))
    return lines
