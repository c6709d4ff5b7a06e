"""The stream simulator: replay an Executable's launch list on NumPy with simulated streams.

Each launch becomes a ``SimStep`` with the byte ranges it reads and writes. Arena values
resolve to ``("arena", offset, offset + size)``; views resolve to their base's range; every
other buffer (inputs, constants, fresh outputs) is its own address space, keyed by the value.
``interleaving`` draws a random order that respects the launches' streams and waits (a step
runs once it heads its stream and every step it waits on has run); ``run`` executes one order
on NumPy, with the arena and fresh outputs poisoned so that reading unwritten bytes shows.
``evaluate_unplanned`` is the plan-free reference: the same runners, every value in fresh memory.
The race analysis on top of this lives in ``gpugraph.testing.races``.
"""

from __future__ import annotations

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
            if runner is not None and not native:
                runner = numpy.prepare(executable.schedule.steps[launch.step].node)
            self.steps.append(
                SimStep(
                    k,
                    launch.step,
                    launch,
                    launch.stream,
                    tuple(sorted(set(waits))),
                    [value_range(plan, v) for v in launch.inputs if v in plan.slots],
                    # a view launch (no runner) only names bytes its base owns: it writes none
                    [value_range(plan, v) for v in launch.outputs] if runner is not None else [],
                    runner,
                )
            )
        self.num_streams = 1 + max((s.stream for s in self.steps), default=0)

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

    def run(self, args: list[np.ndarray], order: list[int], poison: int = 0xFF) -> list[Any]:
        """Execute the launches in ``order`` on NumPy; return the graph outputs (copied)."""
        ex = self.executable
        plan, graph = ex.plan, ex.graph
        numpy = get_backend("numpy")
        arena = np.full(max(plan.arena_bytes, 1), poison, dtype=np.uint8)
        env: dict[Value, Any] = dict(zip(graph.inputs, args))
        for v, slot in plan.slots.items():
            if slot.kind == "const":
                env[v] = np.asarray(v.node.attrs["value"])
            elif slot.kind == "arena":
                env[v] = numpy.view(arena, slot.offset, v.type)
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
            else:
                st.runner(ins, [env[v] for v in launch.outputs])
        return [np.array(env[v], copy=True) for v in graph.outputs]


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
        outs = []
        for v in node.outputs:
            raw = np.full(max(v.type.nbytes, 1), poison, dtype=np.uint8)
            outs.append(raw[: v.type.nbytes].view(v.type.dtype).reshape(v.type.shape))
        numpy.prepare(node)([env[v] for v in node.inputs], outs)
        env.update(zip(node.outputs, outs))
    return [np.array(env[v], copy=True) for v in graph.outputs]
