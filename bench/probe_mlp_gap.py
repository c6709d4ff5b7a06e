"""Why the MLP step (bench_train.py) lost 1.9x to jax.jit in one run and 0.97x in another: the
step of gpugraph (NumPy backend, and backend="cpu") and of jax.jit, interleaved, with wall and
process-CPU medians, each timed alone (after a pause) and right after each other peer of the
all-peers run (torch eager, torch.compile, NumPy by hand), whose thread pools may still spin.

    python bench/probe_mlp_gap.py [--rounds K]
prints a table (bench/results/mlp-gap-cpu-2026-12-01.md holds one run)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import gg_step, mlp_contenders, mlp_data  # noqa: E402

import gpugraph as gg  # noqa: E402

PAUSE = 0.1  # seconds between the peer and the timed step, as bench_train's interleaving


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    opts = ap.parse_args()
    runs = mlp_contenders([], with_keep=False)
    p, x, y = mlp_data()
    native = gg.jit(gg_step, backend="cpu")
    targets = {
        "gpugraph numpy": runs["gpugraph jit"],
        "gpugraph cpu": lambda: native(p, x, y),
        "jax.jit": runs["jax.jit"],
    }
    before = {"(pause only)": lambda: None}
    before.update({k: runs[k] for k in runs if k.startswith(("torch", "numpy"))})
    for f in [*targets.values(), *before.values()]:
        f()
        f()
    wall = {(t, b): [] for t in targets for b in before}
    cpu = {(t, b): [] for t in targets for b in before}
    print(f"load average at start {os.getloadavg()}")
    for _ in range(opts.rounds):
        for b, peer in before.items():
            for t, step in targets.items():
                peer()
                time.sleep(PAUSE)
                t0, c0 = time.perf_counter(), time.process_time()
                step()
                wall[(t, b)].append((time.perf_counter() - t0) * 1e3)
                cpu[(t, b)].append((time.process_time() - c0) * 1e3)
    print(f"load average at end {os.getloadavg()}")
    print("| after | " + " | ".join(f"{t} wall ms (cpu ms)" for t in targets) + " |")
    print("|---|" + "---|" * len(targets))
    for b in before:
        cells = [
            f"{statistics.median(wall[(t, b)]):.1f} ({statistics.median(cpu[(t, b)]):.1f})"
            for t in targets
        ]
        print(f"| {b} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
