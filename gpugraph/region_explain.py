"""explain() for region nodes: trip-count knowledge, hoisted nodes, carries, stacked outputs
(the reverse-mode tape) and each body's arena, recursively."""

from __future__ import annotations

from typing import Any

from .ir import Node
from .region_exec import RegionRunner


def _trip_knowledge(node: Node) -> str:
    a = node.attrs
    if node.op == "scan":
        return f"trip count {a['length']} (static){', reversed' if a['reverse'] else ''}"
    if node.op == "while":
        if a["max_steps"] is not None:
            return f"trip count known at run time only, at most max_steps={a['max_steps']}"
        return "trip count known at run time only (unbounded: no max_steps)"
    return f"{len(a['branches'])} branches, chosen at run time (index read on the host)"


def _stacked_outputs(executable: Any, node: Node) -> str:
    """Where a scan's stacked outputs (``ys``, and the reverse-mode tape of a differentiated
    scan: the residuals of every step) live: their slots in the parent's memory plan, so an
    arena stack is allocated once and each step writes its row in place."""
    if node.op != "scan":
        return ""
    plan = executable.plan
    parts = []
    for v in node.outputs[node.attrs["n_carry"] :]:
        kind = plan.slots[plan.root(v)].kind if v in plan.slots else "unplanned"
        where = {
            "arena": f"a {v.type.nbytes} B stack in the parent arena at offset "
            f"{plan.slots[plan.root(v)].offset}",
            "output": "the caller's fresh output",
        }.get(kind, kind)
        parts.append(f"{v.type} in {where}")
    return "; ".join(parts) + (", rows written in place" if parts else "")


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
        note = getattr(r, "native_note", None)  # backend="cpu" (backends/cpu_loop_runner.py)
        if note:
            lines.append(f"{indent}  native loop: {note}")
        hoisted = node.attrs.get("_hoisted", ())
        if hoisted:
            lines.append(f"{indent}  hoisted out of the body: {', '.join(hoisted)}")
        if r.buffer_bytes():
            n_in = sum(r.inplace)
            how = "double-buffered"
            if n_in:
                rest = "" if n_in == len(r.inplace) else ", the rest double-buffered"
                how = (
                    f"{n_in} of {len(r.inplace)} updated in place (every read of the old value "
                    f"comes before the new one is written){rest}"
                )
            lines.append(f"{indent}  carries: {how}, {r.buffer_bytes()} B, allocated once")
        stacked = _stacked_outputs(executable, node)
        if stacked:
            lines.append(f"{indent}  stacked outputs (one row per iteration): {stacked}")
        for name, plan in r.plans.items():
            ops = ", ".join(f"{k} x{n}" for k, n in sorted(plan.graph.op_counts().items()))
            lines.append(f"{indent}  {name}: {len(plan.graph.nodes)} nodes ({ops})")
            where = "its own allocation"
            if getattr(r, "native", None) is not None:  # the native function does not run it
                where = (
                    "none reserved in the parent arena: the native loop does not run this "
                    "plan; allocated only if the loop runs host-driven"
                )
            elif r.child_range is not None and plan.executable.arena_source is not None:
                off, size = r.child_range
                where = f"a child plan in the parent arena at [{off}, {off + size})"
            lines.append(
                f"{indent}    arena (planned once, reused every run; {where}): "
                f"{plan.memory.summary()}"
            )
            lines.extend(explain_regions(plan.executable, indent + "    "))
    return lines
