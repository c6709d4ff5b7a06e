"""One thread or two for a native cpu-backend kernel, by group size: the same compiled kernel
(chain8 of bench_fusion, and a 2-op update ``p - 0.01 * g``) called through its ctypes entry
with one chunk (the calling thread) or two (an OpenMP region), interleaved; medians of wall
and process-CPU time. Backs cpu_backend.PARALLEL_MIN_ELEMENTS (docs/cpu-backend.md, Threads).

    python bench/probe_cpu_threads.py [--repeats K]
prints a table (the numbers are in docs/cpu-backend.md with the date and load average)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fusion import GG, chain8  # noqa: E402

import gpugraph as gg  # noqa: E402

WORK = {"chain8": (lambda x: chain8(x, GG), 1), "update": (lambda p, g: p - 0.01 * g, 2)}


def kernel_of(fn, args):
    jitted = gg.jit(fn, backend="cpu")
    jitted(*args)  # compiles
    ex = jitted.lower(*args).executable
    return next(ln.runner.cpu_kernel for ln in ex.launches if hasattr(ln.runner, "cpu_kernel"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    opts = ap.parse_args()
    print(f"load average {os.getloadavg()}")
    print("work     elements   1 thread ms (cpu)   2 threads ms (cpu)   2/1 wall")
    for name, (fn, nin) in WORK.items():
        for n in (1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24):
            args = [np.random.default_rng(k).standard_normal(n, np.float32) for k in range(nin)]
            k = kernel_of(fn, args)
            out = np.empty(n, np.float32)
            ptrs = [a.ctypes.data for a in args] + [out.ctypes.data]
            half = -(-(n // 2) // 64) * 64
            inner = max(1, (1 << 22) // n)
            times = {1: ([], []), 2: ([], [])}
            for _ in range(opts.repeats):
                for threads, chunk in ((1, n), (2, half)):
                    t0, c0 = time.perf_counter(), time.process_time()
                    for _ in range(inner):
                        k.fn(n, chunk, *ptrs)
                    times[threads][0].append((time.perf_counter() - t0) / inner * 1e3)
                    times[threads][1].append((time.process_time() - c0) / inner * 1e3)
            w1, c1 = (statistics.median(v) for v in times[1])
            w2, c2 = (statistics.median(v) for v in times[2])
            print(
                f"{name:8s} {n:9d}   {w1:8.3f} ({c1:7.3f})   {w2:8.3f} ({c2:7.3f})   {w2 / w1:6.2f}"
            )
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
