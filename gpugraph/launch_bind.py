"""Launches bound once: the per-call loop of backends without a generated program (CuPy).

A ``Launch``'s runner takes ``(ins, outs)`` lists, and ``Backend.run_on`` takes a callable of
no arguments. Building the two lists and a closure for every launch on every call puts three
Python objects per launch into the hot loop. Instead, the first run of a launch list binds
each launch once (``BoundLaunch``): a callable over argument lists made once, with the arrays
that stay put (constants, arena values and their views) filled in at binding. What changes from
call to call (the user's inputs, the output buffers, views of them) is written into its list
positions at the start of a call (``fill``) or by the view step that makes it, and taken out
again at the end (``clear``), so that no user array is kept alive between calls.

A launch list is run by one caller at a time (``Executable.run`` holds a lock; a region body
runs inside its parent's call), which is what lets the lists be reused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .ir import Value


class BoundLaunch:
    """One launch's runner over its argument lists: ``run_on(stream, bound)`` calls it."""

    __slots__ = ("runner", "ins", "outs")

    def __init__(self, runner: Any, ins: list, outs: list) -> None:
        self.runner, self.ins, self.outs = runner, ins, outs

    def __call__(self) -> None:
        self.runner(self.ins, self.outs)

    def frozen(self) -> Callable[[], None]:
        """This call with the arrays it holds now, unaffected by later calls (a stand-in for a
        device that records a stream capture as callables replays them later)."""
        return functools.partial(self.runner, list(self.ins), list(self.outs))


class Step:
    """One launch of the loop: a bound call, or a view made on the host, or only the
    stream bookkeeping of a view that needs no work (an arena view made once)."""

    __slots__ = ("step", "stream", "waits", "record", "call", "src", "dst", "shape", "targets")

    def __init__(self, launch: Any) -> None:
        self.step, self.stream = launch.step, launch.stream
        self.waits, self.record = launch.waits, launch.record
        self.call: BoundLaunch | None = None
        self.src: Value | None = None  # a view made per call: dst = src.reshape(shape)
        self.dst: Value | None = None
        self.shape: tuple = ()
        self.targets: list[tuple[list, int]] = []  # argument-list positions that take dst


class BoundLaunches:
    """A launch list bound once over ``fixed`` (value -> array made once)."""

    def __init__(self, launches: list, fixed: dict[Value, Any]) -> None:
        self.source = launches  # rebound if the Executable's list is replaced
        self.steps: list[Step] = []
        self.patches: list[tuple[list, int, Value]] = []  # filled from env at each call
        self.dynamic: list[tuple[list, int]] = []  # every position cleared after a call
        self.events: dict[int, Any] = {}
        made: dict[Value, Step] = {}  # values made by a view step of this list
        for la in launches:
            step = Step(la)
            self.steps.append(step)
            if la.runner is None:
                out = la.outputs[0]
                if out not in fixed:
                    step.src, step.dst, step.shape = la.inputs[0], out, out.type.shape
                    made[out] = step
                continue
            ins = [fixed.get(v) for v in la.inputs]
            outs = [fixed.get(v) for v in la.outputs]
            for lst, values in ((ins, la.inputs), (outs, la.outputs)):
                for i, v in enumerate(values):
                    if v in fixed:
                        continue
                    self.dynamic.append((lst, i))
                    maker = made.get(v)
                    if maker is not None:
                        maker.targets.append((lst, i))
                    else:
                        self.patches.append((lst, i, v))
            step.call = BoundLaunch(la.runner, ins, outs)

    def fill(self, env: dict) -> None:
        for lst, i, v in self.patches:
            lst[i] = env[v]

    def clear(self) -> None:
        for lst, i in self.dynamic:
            lst[i] = None

    def run(self, backend: Any, env: dict, streams: list, own: dict | None = None) -> None:
        """Every step in order on ``streams``, through ``backend``'s run_on/wait/record.
        ``own``: step -> an event made once and re-recorded at that step (a region body's
        record sites), instead of the event ``backend.record`` gives."""
        self.fill(env)
        events = self.events if own is None else own
        run_on, wait, record = backend.run_on, backend.wait, backend.record
        try:
            for s in self.steps:
                stream = streams[s.stream]
                for w in s.waits:
                    wait(stream, events[w])
                if s.call is not None:
                    run_on(stream, s.call)
                elif s.dst is not None:
                    made_view(env, s)
                if s.record:
                    if own is None:
                        events[s.step] = record(stream)
                    else:
                        stream.record(own[s.step])
        finally:
            self.clear()

    def run_here(self, env: dict) -> None:
        """Every step in order on the current stream (a one-stream list: no waits)."""
        self.fill(env)
        try:
            for s in self.steps:
                if s.call is not None:
                    s.call()
                elif s.dst is not None:
                    made_view(env, s)
        finally:
            self.clear()


def made_view(env: dict, s: Step) -> None:
    a = env[s.dst] = env[s.src].reshape(s.shape)
    for lst, i in s.targets:
        lst[i] = a


def bound(ex: Any) -> BoundLaunches:
    """``ex``'s launches bound once (again if its launch list was replaced)."""
    b = ex.__dict__.get("_bound")
    if b is None or b.source is not ex.launches:
        b = ex._bound = BoundLaunches(ex.launches, ex.fixed)
    return b
