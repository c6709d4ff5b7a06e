"""Tracing cost (``trace_flat``: trace plus autodiff) against graph size, CPU time, best of
``--repeats`` in a fresh process per point; with ``--baseline`` (a checkout of the code
before) each point is measured there too, right after, the same way.

    python bench/bench_trace.py [--baseline DIR] [--repeats K] [--no-write]
writes bench/results/trace-cpu-<date>.md
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("GPUGRAPH_ROOT") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent
POINTS = [("transformer_grad", 25), ("transformer_grad", 51), ("sin_chain", 10000)]
POINTS += [("elementwise", 8000)]


def measure(workload: str, n: int, repeats: int) -> dict:
    sys.path.insert(0, str(HERE))
    import bench_compile as bc

    import gpugraph as gg

    trace = importlib.import_module("gpugraph.trace")  # the name gg.trace is the op
    fn, shapes = bc.build(workload, n, "gpugraph")
    args = bc.specs(shapes, lambda s: gg.ShapeDtype(s))
    times: list[float] = []
    real = trace.trace_flat

    def timed(*a, **k):
        t = time.process_time()
        try:
            return real(*a, **k)
        finally:
            times.append(time.process_time() - t)

    trace.trace_flat = timed
    for _ in range(repeats):
        c = gg.jit(fn, backend="numpy").lower(*args)
    return {"seconds": min(times), "traced_nodes": len(c.traced_graph.nodes)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.one:
        print(json.dumps(measure(opts.one[0], int(opts.one[1]), opts.repeats)))
        return
    load = os.getloadavg()
    rows = []
    for w, n in POINTS:
        row = {}
        for name, root in (("now", str(ROOT)), ("before", opts.baseline)):
            if root is None:
                continue
            cmd = [sys.executable, str(HERE / "bench_trace.py"), "--one", w, str(n)]
            cmd += ["--repeats", str(opts.repeats)]
            out = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "GPUGRAPH_ROOT": root},
            )
            row[name] = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((w, n, row))
        print(w, n, json.dumps(row))
    import numpy as np

    lines = [
        f"# Tracing cost ({datetime.date.today().isoformat()})",
        "",
        "`trace_flat` (trace + autodiff) of `gg.jit(fn, backend='numpy').lower(...)`, CPU time",
        f"(process_time), best of {opts.repeats}, a fresh process per point"
        + ("; 'before': the baseline checkout, measured right after." if opts.baseline else "."),
        f"Python {sys.version.split()[0]}, NumPy {np.__version__}; load average before/after: "
        f"{' '.join(f'{x:.1f}' for x in load)} / {' '.join(f'{x:.1f}' for x in os.getloadavg())}.",
        "",
        "| workload | size | traced nodes | now s | "
        + ("before s | now / before |" if opts.baseline else ""),
        "|---|---:|---:|---:|" + ("---:|---:|" if opts.baseline else ""),
    ]
    for w, n, row in rows:
        r = row["now"]
        extra = ""
        if opts.baseline:
            b = row["before"]["seconds"]
            extra = f" {b:.3f} | {r['seconds'] / b:.2f} |"
        lines.append(f"| {w} | {n} | {r['traced_nodes']} | {r['seconds']:.3f} |{extra}")
    text = "\n".join(lines) + "\n"
    print(text)
    if not opts.no_write:
        path = HERE / "results" / f"trace-cpu-{datetime.date.today().isoformat()}.md"
        path.write_text(text)
        print("wrote", path)


if __name__ == "__main__":
    main()
