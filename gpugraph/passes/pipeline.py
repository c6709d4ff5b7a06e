"""The pass pipeline, as one explicit list, run to a fixpoint with a bounded iteration count."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..ir import Graph, verify
from .dce import dce

Pass = Callable[[Graph], tuple[Graph, dict[str, int]]]

OPTIMIZE_PASSES: list[tuple[str, Pass]] = [
    ("dce", dce),
]
MAX_ROUNDS = 8


@dataclass
class PassRecord:
    name: str
    nodes_before: int
    nodes_after: int
    rewrites: dict[str, int] = field(default_factory=dict)


def run_passes(graph: Graph, passes, log: list[PassRecord], check: bool = False,
               rounds: int = MAX_ROUNDS) -> Graph:
    for _ in range(rounds):
        changed = False
        for name, fn in passes:
            before = len(graph.nodes)
            graph, rewrites = fn(graph)
            if check:
                verify(graph)
            if rewrites:
                changed = True
                log.append(PassRecord(name, before, len(graph.nodes), dict(rewrites)))
        if not changed:
            break
    return graph


def optimize(graph: Graph, log: list[PassRecord], check: bool = False) -> Graph:
    return run_passes(graph, OPTIMIZE_PASSES, log, check)


def lower_for_backend(graph: Graph, log: list[PassRecord], fuse: bool, check: bool = False):
    """Passes after optimization: fusion (when enabled), then a final DCE."""
    return run_passes(graph, [("dce", dce)], log, check, rounds=1)
