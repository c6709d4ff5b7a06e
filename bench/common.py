"""What the CPU benchmarks share: interleaved timing, versions, the results writer.

Timing is interleaved: every round runs each contender once (``inner`` calls timed together),
so load from other processes on a shared machine falls on all of them alike; the figure is the
median over rounds of the per-call time. Ratios are ``contender / gpugraph`` (> 1: gpugraph is
faster) against the row named as the reference.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpugraph as gg  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def interleaved(
    contenders: dict[str, Callable[[], object]],
    rounds: int,
    inner: int = 1,
    warmup: int = 2,
    pause: float = 0.0,
) -> dict[str, float]:
    """name -> median seconds per call, contenders alternating within each round. ``pause``
    seconds (untimed) between contenders let thread pools that spin after their work (OpenMP,
    OpenBLAS, Eigen) go idle, so one contender's spinning threads do not slow the next."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            if pause:
                time.sleep(pause)
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


PEERS = ("jax", "jaxlib", "torch", "numexpr", "threadpoolctl")


def versions(modules: tuple[str, ...] = PEERS) -> dict[str, str]:
    """Python, NumPy, gpugraph and each of ``modules`` that imports."""
    found = {"python": platform.python_version(), "numpy": np.__version__}
    found["gpugraph"] = getattr(gg, "__version__", "?")
    for mod in modules:
        try:
            found[mod] = __import__(mod).__version__
        except Exception:
            pass
    return found


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine() -> dict[str, object]:
    return {
        "device": f"cpu {platform.machine()} ({os.cpu_count()} cores)",
        "load_average": load_average(),
        "blas_threads_env": os.environ.get("GPUGRAPH_BLAS_THREADS", "auto"),
    }


def write(name: str, rows: list[dict], meta: dict, columns: list[str]) -> Path:
    """bench/results/<name>-cpu-<date>.{md,json}; returns the markdown path."""
    date = datetime.date.today().isoformat()
    meta = {"date": date, **meta, "versions": versions(), **machine()}
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{name}-cpu-{date}"
    lines = [f"# {name} benchmark — {meta['device']} — {date}", ""]
    lines.append(meta.get("note", ""))
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    lines += ["", "```", json.dumps({k: v for k, v in meta.items() if k != "note"}, indent=1)]
    lines += ["```", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    return stem.with_suffix(".md")


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(_fmt(r.get(c, ""))) for r in rows)) for c in columns]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    for r in rows:
        out.append("  ".join(_fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)))
    return "\n".join(out)


def try_torch_compile(fn, args, label: str, notes: list[str]):
    """torch.compile(fn) after one call on ``args``, or None (the failure goes in ``notes``)."""
    try:
        import torch

        compiled = torch.compile(fn)
        compiled(*args)
        return compiled
    except Exception as e:  # no compiler, an inductor failure: say so, skip the row
        notes.append(f"torch.compile skipped for {label}: {type(e).__name__}: {str(e)[:200]}")
        return None
