"""Compile the native kernels of many plans ahead, in a few large compiler runs.

A plan's first ``lower()`` on ``backend="cpu"`` compiles its new kernels in one compiler run,
and most of a run's ~0.5-1 s is the compiler parsing the prelude and the Python and NumPy
headers, not the kernels. A process that will lower many plans whose graphs it already knows
(the test suite, which runs every op test on NumPy first and then on ``cpu``; a service
warming its cache) compiles them all here instead: every fused group of ``graphs`` goes into
``jobs`` libraries built by concurrent compiler runs and indexed in the persistent kernel cache
(gpugraph.cache). A later ``lower()`` of the same groups finds its kernels in the index and
compiles nothing. Which groups compile follows the backend's policy at the time of the call
($GPUGRAPH_CPU_NATIVE).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ..errors import GpuGraphError
from ..ir import Graph
from ..ops.registry import get_op
from .cpu_backend import CpuBackend, CpuCompileError

# the node ops whose cpu runners register native kernels (elementwise groups, row and grid
# reductions; and every elementwise op: cpu_unfused)
NATIVE_OPS = ("fused", "fused_reduce", "fused_grid_reduce")


def prebuild(graphs: Iterable[Graph], jobs: int | None = None) -> int:
    """Compile the native kernels of every fused group in ``graphs`` that the kernel cache does
    not hold yet, in ``jobs`` concurrent compiler runs (default: the CPUs this process may use).
    Returns how many kernels were registered (compiled now or found in the cache).

    A batch the compiler rejects is skipped: its kernels compile again, one plan at a time, at
    their own ``lower()``, which raises the compiler's error to the user there."""
    if jobs is None:
        jobs = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    backend = CpuBackend()
    for graph in graphs:
        for node in graph.nodes:
            if node.op in NATIVE_OPS or get_op(node.op).family == "elementwise":
                try:
                    backend.prepare(node)  # an unfused elementwise op: a one-op kernel
                except GpuGraphError:
                    continue  # the plan's own lower() meets (and reports) it
    count = len(backend._pending)
    try:
        backend.compile_pending(jobs)
    except CpuCompileError:
        pass  # reported where it matters: at the lower() that needs the kernel
    return count
