"""BLAS threads on a small shared machine: each GEMM size timed with 1 thread and with the
library's default (all cores), alternating, with and without one competing busy process.
The measurement behind gpugraph's BLAS thread policy (gpugraph/backends/blas.py).

    python bench/bench_blas.py [--quick]
writes bench/results/blas-threads-cpu-<date>.{md,json}
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from common import table, write

from gpugraph.backends import blas

# (m, k, n) or (batch, m, k, n): MLP layers at batch 128, transformer projections and
# attention products at batch 8 x seq 128 x d 256, and large squares
SIZES = [
    (128, 784, 512),
    (128, 512, 512),
    (128, 512, 10),
    (1024, 256, 256),
    (1024, 256, 1024),
    (1024, 1024, 256),
    (512, 512, 512),
    (32, 128, 64, 128),
    (32, 128, 128, 64),
    (1024, 1024, 1024),
]


def operands(shape, rng):
    f = np.float32
    if len(shape) == 3:
        m, k, n = shape
        return rng.standard_normal((m, k)).astype(f), rng.standard_normal((k, n)).astype(f)
    b, m, k, n = shape
    return rng.standard_normal((b, m, k)).astype(f), rng.standard_normal((b, k, n)).astype(f)


def measure(load: int, reps: int, default: int) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
    rows = []
    try:
        time.sleep(0.3)
        rng = np.random.default_rng(0)
        for shape in SIZES:
            a, b = operands(shape, rng)
            out = np.matmul(a, b)
            times: dict[int, list[float]] = {1: [], default: []}
            n = reps if np.prod(shape) < 2e8 else max(3, reps // 5)
            for _ in range(n):
                for th in times:
                    blas.set_threads(th)
                    t0 = time.perf_counter()
                    np.matmul(a, b, out=out)
                    times[th].append(time.perf_counter() - t0)
            blas.set_threads(default)
            one, many = (statistics.median(times[t]) * 1e3 for t in (1, default))
            rows.append(
                {
                    "competing_processes": load,
                    "shape": "x".join(map(str, shape)),
                    "mflop": 2 * float(np.prod(shape)) / 1e6,
                    "ms_1_thread": one,
                    f"ms_{default}_threads": many,
                    "default_over_1": many / one,
                    "worst_ms_default": max(times[default]) * 1e3,
                }
            )
    finally:
        for p in procs:
            p.kill()
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if blas.policy() is None and os.environ.get(blas.ENV, "auto") != "keep":
        print("threadpoolctl finds no BLAS library: nothing to measure")
        return
    default = blas.get_threads()
    rows = measure(0, 11 if args.quick else 41, default)
    if not args.quick:
        rows += measure(1, 21, default)
    cols = list(rows[0])
    print(table(rows, cols))
    note = (
        f"float32 np.matmul, medians of alternating runs with 1 and {default} BLAS threads; "
        "competing_processes = busy-looping processes started for the measurement (the machine "
        "is shared besides). default_over_1 > 1: the default thread count is slower."
    )
    print(f"wrote {write('blas-threads', rows, {'note': note, 'quick': args.quick}, cols)}")


if __name__ == "__main__":
    main()
