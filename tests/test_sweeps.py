"""Sweeps over everything the rest of the suite built (DESIGN.md §4). They run last
(tests/conftest.py), so they see the whole session: random expression DAGs, gradients, the
benchmarks' graphs, planted bugs and all.

* Every generated CUDA kernel compiles under NVRTC for compute_80 and compute_90. Kernels that
  a test already compiled are not compiled again; the rest are shared out over worker
  processes (NVRTC holds the GIL, so threads would not help).
* Every compiled graph, scheduled again on 2 and on 4 streams with its memory planned for that
  schedule, has no hazard in the stream simulator: no two unordered launches touch the same
  bytes with a write."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from gpugraph.backends.base import get_backend
from gpugraph.backends.sim import SimProgram
from gpugraph.memory import plan_memory
from gpugraph.runtime import Executable
from gpugraph.schedule import schedule
from gpugraph.testing.races import find_hazards
from tests.kernel_helpers import (
    ARCHS,
    COMPILED_GRAPHS,
    GENERATED_KERNELS,
    NVRTC_CHECKED,
    requires_nvrtc,
)

# Fewer than this means the sweep was run on its own (or with a narrow -k): nothing to sweep.
MIN_RECORDED = 50


def need_the_whole_suite(recorded: dict, what: str) -> None:
    if len(recorded) < MIN_RECORDED:
        pytest.skip(f"only {len(recorded)} {what} recorded: run the whole suite")


def compile_all(batch: list[tuple[str, str]]) -> list[str]:
    """Compile every (name, source) for every arch; the failures, as messages."""
    from gpugraph.testing.nvrtc import KernelCompileError, compile_ptx

    failures = []
    for name, source in batch:
        for arch in ARCHS:
            try:
                compile_ptx(source, f"{name}.cu", arch=arch)
            except KernelCompileError as e:
                failures.append(f"{name} ({arch}): {e}")
                break
    return failures


@pytest.mark.nvrtc
@pytest.mark.after_all_tests
@requires_nvrtc
def test_every_kernel_the_suite_generated_compiles_under_nvrtc():
    need_the_whole_suite(GENERATED_KERNELS, "kernels")
    todo = sorted((n, s) for n, s in GENERATED_KERNELS.items() if s not in NVRTC_CHECKED)
    workers = max(1, min(os.cpu_count() or 1, 8))
    batches = [todo[k::workers] for k in range(workers)]
    # spawn, not fork: the session has threads (fused-kernel pools) a fork would copy badly
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        failures = [f for part in pool.map(compile_all, batches) for f in part]
    assert not failures, f"{len(failures)} of {len(todo)} kernels failed:\n" + (
        "\n\n".join(failures[:5])
    )


@pytest.mark.after_all_tests
@pytest.mark.parametrize("streams", [2, 4])
def test_every_compiled_graph_is_race_free_on_several_streams(streams):
    need_the_whole_suite(COMPILED_GRAPHS, "graphs")
    numpy = get_backend("numpy")
    racy = []
    for text, graph in COMPILED_GRAPHS.items():
        sched = schedule(graph, streams)
        executable = Executable(graph, sched, plan_memory(graph, sched), numpy)
        hazards = find_hazards(SimProgram(executable))
        if hazards:
            racy.append(f"{hazards[0]}\n{text}")
    assert not racy, f"{len(racy)} of {len(COMPILED_GRAPHS)} graphs have hazards:\n" + (
        "\n\n".join(racy[:3])
    )
