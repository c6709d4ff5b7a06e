"""The stream simulator: replay an Executable's launch list on NumPy with simulated streams.

Each launch becomes a ``SimStep`` with the byte ranges it reads and writes. Arena values
resolve to ``("arena", offset, offset + size)``; views resolve to their base's range; every
other buffer (inputs, constants, fresh outputs) is its own address space, keyed by the value.
``interleaving`` draws a random order that respects the launches' streams and waits (a step
runs once it heads its stream and every step it waits on has run); ``run`` executes one order
on NumPy, with the arena and fresh outputs poisoned so that reading unwritten bytes shows.
``evaluate_unplanned`` is the plan-free reference: the same runners, every value in fresh memory.
The race analysis on top of this lives in ``gpugraph.testing.races``.

Regions: a region launch (cond/while/scan) reads its inputs and writes its outputs in the
parent, like any launch; its bodies' arenas and carry buffers are the region's own memory, not
the parent's. Each body plan gets its own ``SimProgram`` (``bodies``, recursively), and ``run``
replays a region with every body run, every iteration, as a simulated program in a random
interleaving of its own streams, on a freshly poisoned arena (so a body that reads bytes left
by an earlier iteration shows). The reference evaluates regions without any plan: a plain loop
over ``evaluate_unplanned`` of the bodies.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir import Value
from .base import Runner, get_backend

Range = tuple[Any, int, int]  # (address space, first byte, one past the last byte)


@dataclass
class SimStep:
    index: int  # position in the launch list
    step: int  # the schedule's step index (what waits refer to)
    launch: Any  # runtime.Launch
    stream: int
    waits: tuple[int, ...]  # launch-list positions this step waits on
    reads: list[Range]
    writes: list[Range]
    runner: Runner | None


def root_of(plan: Any, v: Value) -> Value:
    while plan.slots[v].kind == "view":
        v = plan.slots[v].base
    return v


def value_range(plan: Any, v: Value) -> Range:
    r = root_of(plan, v)
    slot = plan.slots[r]
    if slot.kind == "arena":
        return ("arena", slot.offset, slot.offset + r.type.nbytes)
    return (f"{slot.kind}#{r.id}", 0, r.type.nbytes)


class SimProgram:
    """The launch list of one Executable, as the simulator sees it."""

    def __init__(self, executable: Any):
        self.executable = executable
        plan = executable.plan
        launches = executable.launches
        at = {launch.step: k for k, launch in enumerate(launches)}
        numpy = get_backend("numpy")
        native = executable.backend.name == "numpy"
        self.steps: list[SimStep] = []
        self.dropped_waits: list[tuple[int, int]] = []  # waits on steps that were not launched
        for k, launch in enumerate(launches):
            waits = []
            for w in launch.waits:
                if w in at and at[w] < k:
                    waits.append(at[w])
                else:
                    self.dropped_waits.append((launch.step, w))
            runner = launch.runner
            if runner is not None and not native and getattr(runner, "plans", None) is None:
                runner = numpy.prepare(executable.schedule.steps[launch.step].node)
            # a region keeps its own runner: its bodies are simulated from its own plans (on
            # CuPy, wide bodies have several streams), replayed on NumPy below
            reads = [value_range(plan, v) for v in launch.inputs if v in plan.slots]
            # a view launch (no runner) only names bytes its base owns: it writes none
            writes = [value_range(plan, v) for v in launch.outputs] if runner is not None else []
            node = executable.schedule.steps[launch.step].node
            if node in plan.scratch:  # a region's bodies read and write their child arena
                off, size = plan.scratch[node]
                reads.append(("arena", off, off + size))
                writes.append(("arena", off, off + size))
            self.steps.append(
                SimStep(
                    k,
                    launch.step,
                    launch,
                    launch.stream,
                    tuple(sorted(set(waits))),
                    reads,
                    writes,
                    runner,
                )
            )
        self.num_streams = 1 + max((s.stream for s in self.steps), default=0)
        # launch position -> {body name: its SimProgram} for region launches
        self.bodies: dict[int, dict[str, SimProgram]] = {}
        for k, st in enumerate(self.steps):
            plans = getattr(st.runner, "plans", None)
            if plans is not None:
                self.bodies[k] = {n: SimProgram(p.executable) for n, p in plans.items()}

    def walk(self, path: str = ""):
        """(path, program) for this program and every body program inside it, recursively;
        the path names each region step and body, e.g. ``step 3 (scan) body``."""
        yield path, self
        for k, bodies in self.bodies.items():
            for name, prog in bodies.items():
                here = f"step {self.steps[k].step} ({self.node(k).op}) {name}"
                yield from prog.walk(f"{path} > {here}" if path else here)

    def node(self, k: int):
        return self.executable.schedule.steps[self.steps[k].step].node

    def interleaving(self, rng: np.random.Generator | None) -> list[int]:
        """A random legal order of launch positions (None: the linear program order)."""
        if rng is None:
            return list(range(len(self.steps)))
        queues: dict[int, list[int]] = {}
        for s in self.steps:
            queues.setdefault(s.stream, []).append(s.index)
        heads = {s: 0 for s in queues}
        # uniform choices almost never delay one stream for long, so most trials favour a
        # random ranking of the streams: a low-ranked stream lags until the others block
        rank = dict(zip(queues, rng.permutation(len(queues)).tolist()))
        burst = float(rng.choice([0.0, 0.9, 1.0]))
        done: set[int] = set()
        order: list[int] = []
        while len(order) < len(self.steps):
            ready = [
                s
                for s, q in queues.items()
                if heads[s] < len(q) and all(w in done for w in self.steps[q[heads[s]]].waits)
            ]
            if not ready:
                raise RuntimeError("simulated streams deadlock: a wait can never be satisfied")
            if rng.random() < burst:  # run the favourite ready stream: long bursts
                s = max(ready, key=lambda r: rank[r])
            else:
                s = ready[int(rng.integers(len(ready)))]
            k = queues[s][heads[s]]
            heads[s] += 1
            done.add(k)
            order.append(k)
        return order

    def run(
        self,
        args: list[np.ndarray],
        order: list[int],
        poison: int = 0xFF,
        rng: np.random.Generator | None = None,
        dests: list[Any] | None = None,
        arena: np.ndarray | None = None,
    ) -> list[Any]:
        """Execute the launches in ``order`` on NumPy; return the graph outputs (copied).
        Region launches run their bodies simulated too, each body run in an interleaving
        drawn from ``rng`` (None: list order). ``dests``: write the outputs there instead, as
        a body program does (its fresh outputs are the caller's buffers), and return them.
        ``arena``: run on these bytes (a body's child range of its parent's arena; poisoned
        first) instead of a fresh arena."""
        ex = self.executable
        plan, graph = ex.plan, ex.graph
        numpy = get_backend("numpy")
        if arena is None or arena.size < plan.arena_bytes:
            arena = np.full(max(plan.arena_bytes, 1), poison, dtype=np.uint8)
        else:
            arena[...] = poison
        env: dict[Value, Any] = dict(zip(graph.inputs, args))
        given = {}
        if dests is not None:
            given = {v: dests[p] for p, v in ex.fresh_at.items()}
        for v, slot in plan.slots.items():
            if slot.kind == "const":
                env[v] = np.asarray(v.node.attrs["value"])
            elif slot.kind == "arena":
                env[v] = numpy.view(arena, slot.offset, v.type)
            elif slot.kind == "output" and v in given:
                env[v] = given[v]  # poisoned, as a fresh output would be, unless it is an
                if not any(np.shares_memory(env[v], a) for a in args):  # input (in place)
                    np.copyto(env[v], _poisoned(v.type, poison))
            elif slot.kind == "output":
                raw = np.full(max(v.type.nbytes, 1), poison, dtype=np.uint8)
                env[v] = raw[: v.type.nbytes].view(v.type.dtype).reshape(v.type.shape)
        for v, slot in plan.slots.items():  # views of arena bytes exist before any launch
            r = root_of(plan, v)
            if slot.kind == "view" and plan.slots[r].kind == "arena":
                env[v] = numpy.view(arena, plan.slots[r].offset, v.type)
        for k in order:
            st = self.steps[k]
            launch = st.launch
            ins = [env[v] for v in launch.inputs]
            if st.runner is None:
                out = launch.outputs[0]
                env[out] = ins[0].reshape(out.type.shape)
            elif k in self.bodies:
                node = self.node(k)
                child = None
                if node in plan.scratch:  # the bodies run on their range of this arena
                    off, size = plan.scratch[node]
                    child = arena[off : off + size]
                runner = simulated_region(st.runner, self.bodies[k], rng, poison, child)
                runner(ins, [env[v] for v in launch.outputs])
            elif launch.scratch is not None:  # the op's scratch: its range of this arena
                off, size = launch.scratch
                st.runner(ins, [env[v] for v in launch.outputs], scratch=arena[off : off + size])
            else:
                st.runner(ins, [env[v] for v in launch.outputs])
        if dests is None:
            return [np.array(env[v], copy=True) for v in graph.outputs]
        for p, v in enumerate(graph.outputs):
            if dests[p] is not env[v]:  # an input passed through, a constant, a repeat
                dests[p][...] = env[v]
        return dests


def simulated_region(
    runner: Any, bodies: dict[str, SimProgram], rng, poison: int, child: Any = None
) -> Any:
    """A copy of a region runner whose body programs are the simulated ``bodies``: the same
    driver (carry buffers, predicate reads, rows of the stacked outputs), each body run in a
    random interleaving (``rng``; None: list order) on a poisoned arena (``child``: the
    region's range of the parent's arena, where the real bodies run too), its fresh outputs
    written into the driver's buffers as the real program writes them."""

    class Body:
        def __init__(self, prog: SimProgram) -> None:
            n = len(prog.executable.graph.inputs)

            def program(*arrays: Any) -> list:
                order = prog.interleaving(rng)
                p = poison if rng is None else int(rng.integers(256))
                return prog.run(list(arrays[:n]), order, p, rng, list(arrays[n:]), child)

            self.program = program

    sim = copy.copy(runner)
    sim.backend = get_backend("numpy")  # the driver's own buffers are NumPy arrays here
    sim.plans = {name: Body(prog) for name, prog in bodies.items()}
    if hasattr(sim, "order"):  # a cond's branches, by index
        sim.order = list(sim.plans.values())
    sim._driver, sim._policy = None, None  # a fresh driver over the simulated bodies
    if getattr(sim, "native", None) is not None:  # a native cpu loop: host-driven here
        sim.native = None
    sim._bufs = sim.make_bufs(lambda t: _poisoned(t, poison))  # in-place carries: one buffer
    if hasattr(sim, "_pred"):
        sim._pred = None
    return sim


def _poisoned(t: Any, poison: int) -> np.ndarray:
    raw = np.full(max(t.nbytes, 1), poison, dtype=np.uint8)
    return raw[: t.nbytes].view(t.dtype).reshape(t.shape)


def _unplanned_region(node: Any, args: list[Any], poison: int) -> list[Any]:
    """A region node evaluated with no plan at all: its bodies by ``evaluate_unplanned``, in a
    plain loop written here from the ops' semantics (not the runners under test)."""
    from ..ops.control import clamp_index, loop_limit_error  # ops sit below the backends

    a = node.attrs

    def run(g: Any, xs: list[Any]) -> list[Any]:
        return evaluate_unplanned(g, xs, poison)

    if node.op == "cond":
        branches = a["branches"]
        return run(branches[clamp_index(int(args[0]), len(branches))], args[1:])
    nc = a["n_carry"]
    if node.op == "while":
        carry, consts, steps = list(args[:nc]), list(args[nc:]), 0
        while bool(run(a["cond_graph"], carry + consts)[0]):
            if a["max_steps"] is not None and steps >= a["max_steps"]:
                raise loop_limit_error(a["max_steps"], a.get("_loc"))
            carry, steps = run(a["body_graph"], carry + consts), steps + 1
        return carry
    nx, n = a["n_xs"], a["length"]
    carry, xs, consts = list(args[:nc]), args[nc : nc + nx], list(args[nc + nx :])
    ys = [_poisoned(v.type, poison) for v in node.outputs[nc:]]
    for t in range(n - 1, -1, -1) if a["reverse"] else range(n):
        out = run(a["body"], carry + [x[t] for x in xs] + consts)
        carry = out[:nc]
        for y, o in zip(ys, out[nc:]):
            y[t] = o
    return carry + ys


def evaluate_unplanned(graph: Any, args: list[np.ndarray], poison: int = 0xFF) -> list[Any]:
    """``graph`` evaluated node by node on NumPy with the same runners, every value in its own
    fresh (poisoned) buffer: no arena, no reuse, no views. The reference a memory plan's results
    must equal; it depends on no plan, so a broken plan cannot agree with itself here."""
    numpy = get_backend("numpy")
    env: dict[Value, Any] = dict(zip(graph.inputs, args))
    for node in graph.nodes:
        if node.op == "constant":
            env[node.outputs[0]] = np.asarray(node.attrs["value"])
            continue
        if node.op in ("cond", "while", "scan"):
            got = _unplanned_region(node, [env[v] for v in node.inputs], poison)
            env.update(
                zip(node.outputs, (np.asarray(x, v.dtype) for x, v in zip(got, node.outputs)))
            )
            continue
        outs = [_poisoned(v.type, poison) for v in node.outputs]
        numpy.prepare(node)([env[v] for v in node.inputs], outs)
        env.update(zip(node.outputs, outs))
    return [np.array(env[v], copy=True) for v in graph.outputs]
