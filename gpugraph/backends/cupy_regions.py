"""CUDA graphs around regions (``gg.jit(..., cuda_graph=True)`` on a plan with cond/while/scan).

A region decides on the host (a ``cond``'s index, a ``while``'s predicate: one small
device-to-host read each), and reading device memory on the host is illegal during stream
capture; CuPy 14 exposes no conditional graph nodes (docs/control-flow.md). So a plan with
regions is cut at its region launches into segments: every run of launches between two regions
is captured into its own CUDA graph once, and the regions run host-driven between the graph
launches, each on the caller's stream with its bodies' compiled launch lists (their arenas and
carry buffers are allocated once, so their addresses are stable from call to call).

Ordering: each captured segment forks its side streams off the caller's stream and joins them
back at its end (as a whole-plan capture does), and a region runs on the caller's stream, so
everything a launch waited on in an earlier segment has happened before it starts: waits that
cross a segment boundary are dropped from the segment (they are implied). Concurrency across a
region boundary is given up; inside a segment the schedule's streams are kept.

Views (reshapes with no launch) are Python-side only: replaying a graph does not make them, so
they are made again on the host on every call, before the region that may read them.
"""

from __future__ import annotations

import copy
import gc
from dataclasses import dataclass, replace
from typing import Any

from ..launch_bind import bound


def has_regions(ex: Any) -> bool:
    return any(getattr(la.runner, "plans", None) is not None for la in ex.launches)


@dataclass
class Segment:
    captured: bool  # a run of launches captured into a graph; else one region, host-driven
    ex: Any  # a shallow copy of the Executable holding just this segment's launches
    graph: Any = None  # the captured graph


def segments(ex: Any) -> list[Segment]:
    """``ex``'s launch list cut at its region launches (cross-segment waits dropped; a region
    moved onto stream 0, the caller's)."""
    out: list[Segment] = []
    run: list = []

    def part(launches: list, captured: bool) -> Segment:
        steps = {la.step for la in launches}
        sub = copy.copy(ex)
        sub.launches = [
            replace(
                la,
                waits=tuple(w for w in la.waits if w in steps),
                stream=la.stream if captured else 0,
            )
            for la in launches
        ]
        return Segment(captured, sub)

    for la in ex.launches:
        if getattr(la.runner, "plans", None) is None:
            run.append(la)
            continue
        if run:
            out.append(part(run, True))
            run = []
        out.append(part([la], False))
    if run:
        out.append(part(run, True))
    return out


def capture_segments(backend: Any, ex: Any, env: dict, st: Any) -> list[Segment] | None:
    """Capture every launch run between regions into its own graph (after the warm-up call);
    None, with ``st.failed`` set by the backend, if a capture failed."""
    segs = segments(ex)
    st.events, st.cursor = st.capture_events, 0  # one record site sequence for all captures
    was_enabled = gc.isenabled()  # no collection mid-capture (see cupy_backend)
    gc.collect()
    gc.disable()
    try:
        st.pool = backend.xp.cuda.MemoryPool()
        st.capture_stream = backend.xp.cuda.Stream(non_blocking=True)
        for seg in segs:
            if not seg.captured:
                continue
            backend._capture_launches(seg.ex, env, st)  # sets st.graph, or st.failed
            if st.failed:
                return None
            seg.graph, st.graph = st.graph, None
    finally:
        if was_enabled:
            gc.enable()
    st.captures = 1  # _capture_launches counted one per segment: one capture of the plan
    return segs


def replay_segments(backend: Any, segs: list[Segment], env: dict, caller: Any) -> None:
    """One call: each graph launched on the caller's stream, each region run there between."""
    for seg in segs:
        if seg.captured:
            for la in seg.ex.launches:  # views: host-side only, not in the graph
                if la.runner is None and la.outputs[0] not in seg.ex.fixed_values:
                    env[la.outputs[0]] = env[la.inputs[0]].reshape(la.outputs[0].type.shape)
            seg.graph.launch(stream=caller)
            continue
        region = bound(seg.ex)  # the region's launch, bound once
        region.fill(env)
        try:
            backend.run_on(caller, region.steps[0].call)
        finally:
            region.clear()
