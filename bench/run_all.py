"""Run the CPU benchmark suite and print one table (``python -m gpugraph bench [--quick]``).

Each benchmark runs in its own process (so one library's threads and imports do not disturb
the next) and writes its own results file under bench/results/; this runner reads those files
back and prints every row as: bench, workload, implementation, time per call, and that time
over gpugraph's in the same run (> 1: gpugraph is faster).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# name -> (script, quick args, full args, results-file prefix)
SUITE = {
    "dispatch": ("bench_dispatch.py", ["--quick"], [], "dispatch-cpu-"),
    "train": ("bench_train.py", ["--quick"], [], "train-cpu-"),
    "fusion": ("bench_fusion.py", ["--size", str(2**20), "--repeats", "5"], [], "fusion-cpu-"),
    "streams": ("bench_streams.py", ["--reps", "5", "--warmup", "2"], [], "streams-cpu-"),
    "memory": ("bench_memory.py", [], [], "memory-cpu-"),
    "blas": ("bench_blas.py", ["--quick"], [], "blas-threads-cpu-"),
}


def _rows(name: str, data: dict) -> list[tuple[str, str, float, str, float | None]]:
    """(workload, impl, time, unit, ratio to gpugraph) for one results file."""
    out = []
    for r in data.get("rows", []):
        if name == "dispatch":
            out.append((r["graph"], r["impl"], r["us_per_call"], "us", r["vs_gpugraph_fused"]))
        elif name == "train":
            out.append((r["workload"], r["impl"], r["ms"], "ms", r["vs_gpugraph"]))
        elif name == "fusion":
            out.append((r["workload"], r["impl"], r["ms"], "ms", r.get("speedup_of_gpugraph")))
        elif name == "blas":
            shape = f"{r['shape']} ({r['competing_processes']} busy procs)"
            many = next(k for k in r if k.startswith("ms_") and k != "ms_1_thread")
            out.append((shape, "1 BLAS thread", r["ms_1_thread"], "ms", None))
            out.append((shape, many[3:].replace("_", " "), r[many], "ms", None))
        elif name == "streams":
            impl = f"{r['impl']} ({r['streams']} streams)"
            ratio = r.get("speedup_vs_gg_1stream")
            out.append((f"size {r['size']}", impl, r["us_per_call"], "us", ratio))
    return out


def run(quick: bool, only: list[str] | None = None) -> int:
    rows: list[tuple] = []
    failed = []
    for name, (script, quick_args, full_args, prefix) in SUITE.items():
        if only and name not in only:
            continue
        started = time.time()
        cmd = [sys.executable, str(HERE / script), *(quick_args if quick else full_args)]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n")
            continue
        written = [p for p in RESULTS.glob(f"{prefix}*.json") if p.stat().st_mtime >= started]
        if not written:
            print(f"   ({name} wrote no results file; its output:)\n{proc.stdout[-1500:]}")
            continue
        newest = max(written, key=lambda p: p.stat().st_mtime)
        for row in _rows(name, json.loads(newest.read_text())):
            rows.append((name, *row))
        print(f"   {time.time() - started:.0f} s, results in {newest.relative_to(HERE.parent)}")
    print()
    header = ("bench", "workload", "impl", "time", "unit", "time / gpugraph's")
    cells = [header] + [
        (b, w, i, f"{t:.3g}", u, "" if r is None else f"{r:.2f}") for b, w, i, t, u, r in rows
    ]
    widths = [max(len(c[k]) for c in cells) for k in range(len(header))]
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths)))
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpugraph bench")
    p.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    p.add_argument("--only", nargs="*", choices=list(SUITE), help="run only these")
    args = p.parse_args(argv)
    return run(args.quick, args.only)


if __name__ == "__main__":
    sys.exit(main())
