"""The pass pipeline, as one explicit list, run to a fixpoint with a bounded iteration count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..ir import Graph, verify
from .cse import cse
from .dce import dce
from .fold import fold
from .regions import map_regions, simplify_regions, simplify_regions_keep_conds
from .scan_merge import merge_scans
from .simplify import simplify, simplify_unsafe

Pass = Callable[[Graph], tuple[Graph, dict[str, int]]]

# The optimizer, in order: fold constants, rewrite algebra, merge duplicates, drop dead nodes;
# repeated until no pass changes the graph (at most MAX_ROUNDS rounds).
OPTIMIZE_PASSES: list[tuple[str, Pass]] = [
    ("fold", fold),
    ("simplify", simplify),
    ("cse", cse),
    ("dce", dce),
    ("regions", simplify_regions),
    ("merge scans", merge_scans),
]
# Default of optimize(unsafe_math=None): non-IEEE-exact rewrites (x * 0 -> 0, x + 0.0 -> x).
UNSAFE_MATH = False
MAX_ROUNDS = 8


@dataclass
class PassRecord:
    name: str
    nodes_before: int
    nodes_after: int
    rewrites: dict[str, int] = field(default_factory=dict)


def run_passes(
    graph: Graph, passes, log: list[PassRecord], check: bool = False, rounds: int = MAX_ROUNDS
) -> Graph:
    for _ in range(rounds):
        changed = False
        for name, fn in passes:
            before = len(graph.nodes)
            graph, rewrites = map_regions(graph, fn)  # bodies first, then the graph
            if check:
                verify(graph)
            if rewrites:
                changed = True
                log.append(PassRecord(name, before, len(graph.nodes), dict(rewrites)))
        if not changed:
            break
    return graph


def optimize_passes(
    unsafe_math: bool = False, cond_to_select: bool = True
) -> list[tuple[str, Pass]]:
    """OPTIMIZE_PASSES, with simplify swapped for its unsafe-math variant and the regions pass
    for the one that keeps every cond a region, when asked."""
    swap = {}
    if unsafe_math:
        swap[simplify] = simplify_unsafe
    if not cond_to_select:
        swap[simplify_regions] = simplify_regions_keep_conds
    return [(n, swap.get(fn, fn)) for n, fn in OPTIMIZE_PASSES]


def optimize(
    graph: Graph,
    log: list[PassRecord],
    check: bool = False,
    unsafe_math: bool | None = None,
    cond_to_select: bool = True,
) -> Graph:
    """Run OPTIMIZE_PASSES to a fixpoint; ``check`` runs ir.verify after every pass."""
    unsafe = UNSAFE_MATH if unsafe_math is None else unsafe_math
    return run_passes(graph, optimize_passes(unsafe, cond_to_select), log, check)


def lower_for_backend(
    graph: Graph, log: list[PassRecord], fuse: bool, check: bool = False, vectorize: bool = True
):
    """Passes after optimization: fusion (when enabled: reductions with their elementwise
    producers and consumers first, then the remaining elementwise groups), then a final DCE."""
    from .fuse import fuse as fuse_pass  # local: fusion pulls in the codegen
    from .fuse_reduce import fuse_reductions

    def fusion(g: Graph) -> tuple[Graph, dict[str, int]]:
        return fuse_pass(g, vectorize)

    fusing = [("fuse reductions", fuse_reductions), ("fuse", fusion)]
    passes = [*fusing, ("dce", dce)] if fuse else [("dce", dce)]
    return run_passes(graph, passes, log, check, rounds=1)
