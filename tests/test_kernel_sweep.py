"""Every CUDA kernel the rest of the suite generated compiles under NVRTC, for compute_80 and
compute_90 (DESIGN.md §4). Runs last (tests/conftest.py), so it sees the whole session's kernels:
random expression DAGs, gradients, the benchmarks' graphs, planted bugs and all. Kernels that a
test already compiled are not compiled again; the rest are shared out over worker processes
(NVRTC holds the GIL, so threads would not help)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from tests.kernel_helpers import ARCHS, GENERATED_KERNELS, NVRTC_CHECKED, requires_nvrtc

# Fewer than this means the test was run on its own (or with a narrow -k): nothing to sweep.
MIN_KERNELS = 50


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
    if len(GENERATED_KERNELS) < MIN_KERNELS:
        pytest.skip(f"only {len(GENERATED_KERNELS)} kernels recorded: run the whole suite")
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
