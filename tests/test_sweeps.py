"""Sweeps over everything the rest of the suite built (DESIGN.md §4). They run last
(tests/conftest.py), so they see the whole session: random expression DAGs, gradients, the
benchmarks' graphs, planted bugs and all. Each prints progress lines (the ``progress`` fixture).

* Every generated CUDA kernel compiles under NVRTC for compute_90, and a fixed sample of them
  (one in SECOND_ARCH_SAMPLE, picked by a hash of the source, plus every kernel using half,
  bfloat16, warp or shared-memory intrinsics) for compute_80 too. The codegen emits no
  arch-dependent code (no __CUDA_ARCH__), so the second arch rarely fails where the first passed,
  and NVRTC is most of a cold run (about 0.2 s per kernel per arch). Kernels that
  a test already compiled, or that the persistent kernel cache (gpugraph.cache) records as
  compiled by an earlier run with the same NVRTC, are not compiled again; the rest are shared
  out over worker processes (NVRTC holds the GIL, so threads would not help).
* Every generated kernel, run on the kernel emulator on random inputs, matches NumPy's
  evaluation of the fused body it was generated from (kernels compiled in batches, one host
  compiler run per batch, on worker processes; libraries an earlier run built come from the
  kernel cache).
* Every compiled graph, scheduled again on 1, 2 and 4 streams with its memory planned for that
  schedule, passes the race checker's static analyses: no two unordered launches touch the same
  bytes with a write, and no two values live at the same time share bytes."""

from __future__ import annotations

import multiprocessing
import os
import re
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed

import pytest

from gpugraph.backends.base import get_backend
from gpugraph.backends.sim import SimProgram
from gpugraph.memory import plan_memory
from gpugraph.runtime import Executable
from gpugraph.schedule import schedule
from gpugraph.testing.lifetimes import find_overlaps
from gpugraph.testing.nvrtc import compiled_before
from gpugraph.testing.races import find_hazards
from tests.kernel_helpers import (
    ARCHS,
    COMPILED_GRAPHS,
    GENERATED_KERNELS,
    NVRTC_CHECKED,
    requires_emulator,
    requires_nvrtc,
)

# Fewer than this means the sweep was run on its own (or with a narrow -k): nothing to sweep.
MIN_RECORDED = 50


def need_the_whole_suite(recorded: dict, what: str) -> None:
    if len(recorded) < MIN_RECORDED:
        pytest.skip(f"only {len(recorded)} {what} recorded: run the whole suite")


SECOND_ARCH_SAMPLE = 8
# features whose support differs between architectures: always compiled for both
_ARCH_SENSITIVE = re.compile(r"__half|__nv_bfloat16|__shfl|__syncwarp|__shared__|atomic")


def sweep_archs(source: str) -> tuple[str, ...]:
    """The archs the sweep compiles ``source`` for: the newest always, the older one for a
    deterministic sample and for every kernel using arch-sensitive features."""
    newest, *older = sorted(ARCHS, reverse=True)
    sampled = zlib.crc32(source.encode()) % SECOND_ARCH_SAMPLE == 0
    return (newest, *older) if sampled or _ARCH_SENSITIVE.search(source) else (newest,)


def compile_all(batch: list[tuple[str, str]]) -> list[str]:
    """Compile every (name, source) for its sweep archs; the failures, as messages."""
    from gpugraph.testing.nvrtc import KernelCompileError, check_compiles

    failures = []
    for name, source in batch:
        try:
            check_compiles(source, f"{name}.cu", sweep_archs(source))
        except KernelCompileError as e:  # names the arch that failed
            failures.append(f"{name}: {e}")
    return failures


@pytest.mark.nvrtc
@pytest.mark.after_all_tests
@requires_nvrtc
def test_every_kernel_the_suite_generated_compiles_under_nvrtc(progress):
    need_the_whole_suite(GENERATED_KERNELS, "kernels")
    todo = [(k.name, k.source) for k, _ in GENERATED_KERNELS.values()]
    todo = sorted((name, src) for name, src in todo if src not in NVRTC_CHECKED)
    fresh = [(name, src) for name, src in todo if not compiled_before(src, sweep_archs(src))]
    both = sum(len(sweep_archs(src)) == len(ARCHS) for _, src in fresh)
    progress(
        f"{len(GENERATED_KERNELS)} kernels: {len(GENERATED_KERNELS) - len(todo)} compiled by "
        f"tests, {len(todo) - len(fresh)} proven by the kernel cache, {len(fresh)} to compile"
        f" ({both} of them for {', '.join(ARCHS)}, the rest for {max(ARCHS)})",
        force=True,
    )
    failures = in_processes(compile_all, fresh, 8, progress, "kernels compiled")
    assert not failures, f"{len(failures)} of {len(fresh)} kernels failed:\n" + (
        "\n\n".join(failures[:5])
    )


def in_processes(work, items: list, chunk: int, progress, what: str) -> list[str]:
    """``work`` over ``items`` in chunks shared out on worker processes; every returned
    failure. Reports progress as chunks finish."""
    if not items:
        return []
    parts = [items[k : k + chunk] for k in range(0, len(items), chunk)]
    workers = max(1, min(os.cpu_count() or 1, 8, len(parts)))
    # spawn, not fork: the session has threads (fused-kernel pools) a fork would copy badly
    context = multiprocessing.get_context("spawn")
    failures, done = [], 0
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(work, part): len(part) for part in parts}
        for future in as_completed(futures):
            failures += future.result()
            done += futures[future]
            last = done == len(items)
            progress(f"{done}/{len(items)} {what}, {len(failures)} failed", force=last)
    return failures


EMULATOR_BATCH = 25  # kernels per host compiler run


def emulate_all(items: list[tuple]) -> list[str]:
    """Run each (kernel, body) on the emulator against NumPy; the failures."""
    import zlib

    import numpy as np

    from gpugraph.ops.fused import evaluate_body
    from gpugraph.testing import load_kernels
    from tests.kernel_helpers import emulate_fused, random_array

    failures = []
    for lo in range(0, len(items), EMULATOR_BATCH):
        batch = items[lo : lo + EMULATOR_BATCH]
        # a grid kernel pair has two entry points ({name}_p, {name}_f): loaded when launched
        load_kernels([(k.source, k.name) for k, _ in batch if "grid_kernels" not in k.attrs()])
        for kernel, body in batch:
            # inputs drawn per kernel (seeded by its name): the same for a kernel whatever
            # other kernels the suite made, so a new test does not redraw everyone's inputs
            rng = np.random.default_rng(zlib.crc32(kernel.name.encode()))
            # A row or grid kernel (fused_reduce, fused_grid_reduce) sums in another order
            # than NumPy's pairwise sum: with 1e30 or inf among the terms the results differ
            # legitimately. Their edge values are tested on their own (test_reduce_*.py).
            edges = 0.0 if {"row_block", "grid_kernels"} & kernel.attrs().keys() else 0.1
            args = [random_array(v.shape, v.dtype, rng, edges=edges) for v in body.inputs]
            with np.errstate(all="ignore"):
                want = evaluate_body(np, body, args)
            got = emulate_fused(kernel.attrs(), args, [v.type for v in body.outputs])
            # a float32 step anywhere (host libm and NumPy may differ by an ulp there) limits
            # the agreement of every float output downstream, float64 ones included
            single = any(v.dtype == np.float32 for v in body.values())
            # float16 and bfloat16: NumPy's multi-step impls (sigmoid ...) round every step, a
            # kernel rounds each op once (docs/ops.md, "Dtypes"): a last-bit difference
            low = {v.dtype.name for v in body.values()} & {"float16", "bfloat16"}
            for k, (g, w) in enumerate(zip(got, want)):
                w = np.broadcast_to(np.asarray(w), g.shape)
                tol = 0 if g.dtype.kind not in "fV" else (2e-5 if single else 1e-12)
                if low:
                    tol = 1e-2 if "bfloat16" in low else 2e-3
                if g.dtype.kind == "V":  # bfloat16: compared as float32
                    g, w = g.astype(np.float32), w.astype(np.float32)
                if g.dtype != w.dtype or not np.allclose(g, w, rtol=tol, atol=tol, equal_nan=True):
                    failures.append(
                        f"{kernel.name} output {k}: kernel != NumPy\n{body}\n"
                        + first_mismatch(args, g, w, tol)
                    )
                    break
    return failures


def first_mismatch(args, got, want, tol: float) -> str:
    """The inputs and both outputs at the first differing element, so a failure in a sweep
    over randomly drawn kernels can be reproduced from its message alone."""
    import numpy as np

    if got.dtype != want.dtype:
        return f"dtypes: kernel {got.dtype}, NumPy {want.dtype}"
    bad = ~np.isclose(got, want, rtol=tol, atol=tol, equal_nan=True)
    at = np.unravel_index(int(np.flatnonzero(bad)[0]), got.shape)
    ins = [np.broadcast_to(a, got.shape)[at] if np.ndim(a) else a for a in args]
    return f"at {at}: inputs {ins!r}, kernel {got[at]!r}, NumPy {want[at]!r}"


def casts_float_to_int(body) -> bool:
    """float -> int casts of NaN, inf or out-of-range values are undefined in C (and differ
    from NumPy's); tests/test_codegen.py checks the cast on finite values instead."""
    return any(
        n.op == "astype" and n.inputs[0].dtype.kind == "f" and n.output.dtype.kind in "iu"
        for n in body.nodes
    )


@pytest.mark.emulator
@pytest.mark.after_all_tests
@requires_emulator
def test_every_generated_kernel_matches_numpy_on_the_emulator(progress):
    need_the_whole_suite(GENERATED_KERNELS, "kernels")
    items = [kb for _, kb in sorted(GENERATED_KERNELS.items()) if not casts_float_to_int(kb[1])]
    assert len(items) > len(GENERATED_KERNELS) // 2  # the cast rule leaves most of them in
    progress(f"{len(items)} kernels to run on the emulator", force=True)
    failures = in_processes(emulate_all, items, EMULATOR_BATCH, progress, "kernels emulated")
    assert not failures, f"{len(failures)} of {len(items)} kernels differ:\n" + (
        "\n\n".join(failures[:3])
    )


@pytest.mark.after_all_tests
@pytest.mark.parametrize("streams", [1, 2, 4])
def test_every_compiled_graph_is_race_free(streams, progress):
    need_the_whole_suite(COMPILED_GRAPHS, "graphs")
    numpy = get_backend("numpy")
    racy = []
    for k, (text, graph) in enumerate(COMPILED_GRAPHS.items()):
        sched = schedule(graph, streams)
        prog = SimProgram(Executable(graph, sched, plan_memory(graph, sched), numpy))
        found = [*find_hazards(prog), *find_overlaps(prog)]
        if found:
            racy.append(f"{found[0]}\n{text}")
        progress(f"{k + 1}/{len(COMPILED_GRAPHS)} graphs checked, {len(racy)} racy")
    assert not racy, f"{len(racy)} of {len(COMPILED_GRAPHS)} graphs have races:\n" + (
        "\n\n".join(racy[:3])
    )


def test_the_sweep_compiles_a_sample_and_every_arch_sensitive_kernel_for_both_archs():
    plain = [f'extern "C" __global__ void k{i}(float* o) {{ o[0] = {i}.0f; }}' for i in range(400)]
    both = [s for s in plain if len(sweep_archs(s)) == 2]
    assert all(sweep_archs(s)[0] == "compute_90" for s in plain)
    assert len(plain) // (2 * SECOND_ARCH_SAMPLE) < len(both) < 2 * len(plain) // SECOND_ARCH_SAMPLE
    for feature in ("__half h;", "__shared__ float s[4];", "__shfl_xor_sync(m, v, 1)"):
        assert sweep_archs(plain[1] + feature) == ("compute_90", "compute_80")
