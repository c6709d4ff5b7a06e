"""Streams and CUDA graphs on a branchy graph of small kernels.

    python bench/bench_streams.py [--branches 8] [--depth 8] [--sizes 64,512] [--streams 4]

On a GPU it times, per call and per node (launch), N back-to-back calls between two CUDA
events on the caller's stream (bench/gpu_timing.py), and reports the host's time per call
beside the device's: gpugraph with 1 stream vs K streams, CUDA graph replay off vs on, against
CuPy eager and torch eager (when installed). When host time per call >= device time per call
the device waited on Python. Fusion is off so that every op is its own kernel: this
measures launch overhead and stream concurrency, not fusion. Goals (issue 7): >= 1.3x from
several streams; <= 3 us per node with CUDA graph replay.

Without a GPU it says so and times the NumPy path only (one implicit stream: the numbers show
the per-node cost of the Python launch loop, nothing about streams).

Results go to bench/results/streams-<device>-<date>.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_timing import device_time  # noqa: E402

import gpugraph as gg  # noqa: E402
from gpugraph.backends.base import default_backend  # noqa: E402
from gpugraph.testing.races import UNARY, branchy_function  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def native_branchy(branches: int, depth: int, unary: dict, concatenate):
    """branchy_function written directly in an array library: the peers' eager baseline."""

    def fn(x):
        outs = []
        for b in range(branches):
            y = x
            for d in range(depth):
                y = unary[UNARY[(b + d) % len(UNARY)]](y)
                y = y * y if d % 2 else y + x
            outs.append(y)
        return concatenate(outs, 0)

    return fn


def torch_branchy(branches: int, depth: int):
    import torch

    unary = {n: getattr(torch, n) for n in ("tanh", "sin", "cos", "relu", "sigmoid")}
    return native_branchy(branches, depth, {**unary, "negative": torch.neg}, torch.cat)


def cupy_branchy(branches: int, depth: int, cupy):
    unary = {n: getattr(cupy, n) for n in ("tanh", "sin", "cos", "negative")}
    unary["relu"] = lambda y: cupy.maximum(y, 0)
    unary["sigmoid"] = lambda y: 1 / (1 + cupy.exp(-y))
    return native_branchy(branches, depth, unary, cupy.concatenate)


def gpu_timer(cupy, fn, warmup: int, reps: int, calls: int = 10) -> tuple[float, float]:
    """(device us per call, host us per call) over ``calls`` back-to-back calls, median of
    ``reps``."""
    t = device_time(cupy, fn, calls=calls, repeats=reps, warmup=warmup)
    return t.device_ms * 1e3, t.host_us


def cpu_timer(fn, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(10):
            fn()
        times.append((time.perf_counter() - t) * 1e6 / 10)
    return statistics.median(times)


def n_launches(compiled) -> int:
    return sum(1 for la in compiled.executable.launches if la.runner is not None)


def bench_gpu(args, cp=None, backend: str = "cupy") -> tuple[str, list[dict]]:
    """``cp``: the cupy module (the tests pass a NumPy-backed stand-in with ``backend``)."""
    if cp is None:
        import cupy as cp
    props = cp.cuda.runtime.getDeviceProperties(0)
    device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    rows = []
    fn = branchy_function(args.branches, args.depth)
    for n in args.sizes:
        x_host = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        x = cp.asarray(x_host)
        base = None
        for streams in (1, args.streams):
            for graph in (False, True):
                j = gg.jit(fn, backend=backend, fuse=False, streams=streams, cuda_graph=graph)
                c = j.lower(x)
                us, host = gpu_timer(cp, lambda j=j, x=x: j(x), args.warmup, args.reps)
                launches = n_launches(c)
                base = base or us
                streams_used = c.schedule.num_streams
                rows.append(
                    timing_row(n, "gpugraph", streams_used, graph, us, launches, base, host)
                )
        cfn = cupy_branchy(args.branches, args.depth, cp)
        us, host = gpu_timer(cp, lambda f=cfn, x=x: f(x), args.warmup, args.reps)
        rows.append(timing_row(n, "cupy eager", 1, False, us, launches, base, host))
        us, host = gpu_timer(cp, lambda x=x: fn(x), args.warmup, args.reps)
        rows.append(
            timing_row(n, "gpugraph eager (CuPy arrays)", 1, False, us, launches, base, host)
        )
        try:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("torch sees no CUDA device")
            tfn, tx = torch_branchy(args.branches, args.depth), torch.as_tensor(x_host).cuda()
            us, host = gpu_timer(cp, lambda f=tfn, t=tx: f(t), args.warmup, args.reps)
            rows.append(timing_row(n, "torch eager", 1, False, us, launches, base, host))
        except Exception as e:  # torch missing, or without CUDA
            rows.append(dict(size=n, impl="torch eager", skipped=f"{type(e).__name__}: {e}"))
    return device, rows


def timing_row(
    size: int,
    impl: str,
    streams: int,
    cuda_graph: bool,
    us: float,
    nodes: int,
    base: float,
    host_us: float | None = None,
) -> dict:
    """One result row; ``nodes`` is gpugraph's launch count for the graph (the per-node cost of
    every impl is over the same count), ``base`` gpugraph's 1-stream time."""
    return dict(
        size=size,
        impl=impl,
        streams=streams,
        cuda_graph=cuda_graph,
        us_per_call=us,
        nodes=nodes,
        us_per_node=us / nodes,
        speedup_vs_gg_1stream=base / us,
        host_us_per_call=us if host_us is None else host_us,
    )


def bench_cpu(args) -> tuple[str, list[dict]]:
    print(
        f"bench_streams: no CUDA device ({default_backend().reason}); streams and CUDA graphs "
        "need a GPU. Timing the NumPy path only (one implicit stream)."
    )
    fn = branchy_function(args.branches, args.depth)
    rows = []
    for n in args.sizes:
        x = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        base = None
        for streams in (1, args.streams):
            j = gg.jit(fn, backend="numpy", fuse=False, streams=streams)
            c = j.lower(x)
            us = cpu_timer(lambda j=j, x=x: j(x), args.warmup, args.reps)
            base = base or us
            row = timing_row(
                n, "gpugraph numpy", c.schedule.num_streams, False, us, n_launches(c), base
            )
            rows.append({**row, "arena_bytes": c.memory.arena_bytes})
        us = cpu_timer(lambda x=x: fn(x), args.warmup, args.reps)
        rows.append(
            dict(
                size=n,
                impl="numpy eager",
                streams=1,
                cuda_graph=False,
                us_per_call=us,
                nodes=rows[-1]["nodes"],
                us_per_node=us / rows[-1]["nodes"],
                speedup_vs_gg_1stream=base / us,
                host_us_per_call=us,
            )
        )
    return f"cpu-{platform.processor() or platform.machine()}", rows


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__, "gpugraph": gg.__version__}
    for mod in ("cupy", "torch"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


def write(device: str, rows: list[dict], args, note: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    stem = RESULTS / f"streams-{slug}-{date}"
    meta = dict(
        device=device,
        date=date,
        versions=versions(),
        branches=args.branches,
        depth=args.depth,
        streams=args.streams,
        note=note,
    )
    stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    cols = [
        "size",
        "impl",
        "streams",
        "cuda_graph",
        "us_per_call",
        "nodes",
        "us_per_node",
        "speedup_vs_gg_1stream",
        "host_us_per_call",
    ]
    lines = [
        f"# bench_streams on {device}, {date}",
        "",
        f"branchy graph: {args.branches} branches x {args.depth} (unary, binary) pairs, "
        "joined by concatenate; fusion off. speedup_vs_gg_1stream: gpugraph with 1 stream and no "
        "CUDA graph over this row, same size.",
        "",
        note,
        "",
        f"versions: {meta['versions']}",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = [r.get(c, r.get("skipped", "")) for c in cols]
        lines.append(
            "| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in cells) + " |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--branches", type=int, default=8)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--sizes", default="64,512")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    return args


def main() -> int:
    args = parse_args()
    gpu = default_backend().name == "cupy"
    device, rows = bench_gpu(args) if gpu else bench_cpu(args)
    note = (
        "Device time: 10 back-to-back calls between two CUDA events on the caller's stream, "
        "median of reps; host_us_per_call: the host's time to enqueue one call."
        if gpu
        else "NO GPU: NumPy path only (one implicit stream; the streams column only changes "
        "the plan, nothing runs concurrently). Wall-clock medians; shared, noisy CPU."
    )
    for r in rows:
        print({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()})
    if not args.no_save:
        print("wrote", write(device, rows, args, note).with_suffix(".md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
