"""Elementwise fusion benchmark on float32: an 8-op chain, bias + GELU(tanh) + residual, and
three sibling chains reading one input (one multi-output kernel: the input is read once).

CPU: gpugraph (jit, numpy backend, fused and unfused) vs NumPy eager vs numexpr (if installed).
GPU (when CuPy has a device): gpugraph (cupy backend) vs CuPy eager, cupy.fuse, torch eager and
torch.compile (if importable), timed with CUDA events, plus achieved bandwidth over the measured
device-to-device copy bandwidth; gpugraph with and without the kernels' vector path. Medians
of repeats after warm-up; ratios = baseline / gpugraph.

    python bench/bench_fusion.py [--size N] [--repeats K]
writes bench/results/fusion-<device>-<date>.{md,json}
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpugraph as gg  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
C = math.sqrt(2 / math.pi)


# ---- the workloads, once per array library ------------------------------------------------
def chain8(x, xp):
    t = x * 2.0
    t = t + 1.0
    t = xp.tanh(t)
    t = t * x
    t = t - 0.5
    t = xp.maximum(t, 0.0)
    t = t * t
    return t + x


def gelu_block(x, bias, res, xp):
    h = x + bias
    return 0.5 * h * (1.0 + xp.tanh(C * (h + 0.044715 * (h * h * h)))) + res


def siblings3(x, xp):
    return x / (1.0 + xp.exp(-x)), xp.tanh(x) * 0.5, xp.exp(-(x * x))


class GG:  # the gpugraph spelling of the xp functions the workloads use
    tanh, maximum, exp = staticmethod(gg.tanh), staticmethod(gg.maximum), staticmethod(gg.exp)


WORKLOADS = {
    "chain8": (lambda x: chain8(x, GG), chain8, "x", 2),
    "bias_gelu_residual": (lambda x, b, r: gelu_block(x, b, r, GG), gelu_block, "xbr", 3),
    "siblings3": (lambda x: siblings3(x, GG), siblings3, "x", 4),
}
# numexpr has no local names, so t is spelled out; constants are float32 variables (a Python
# float literal would be a double and upcast the whole expression).
NUMEXPR = {
    "chain8": "where(tanh(x * k2 + k1) * x - kh > k0, tanh(x * k2 + k1) * x - kh, k0) ** 2 + x",
    "bias_gelu_residual": "kh * (x + b) * (k1 + tanh(kc * ((x + b) + kg * (x + b) ** 3))) + r",
    "siblings3": ("x / (k1 + exp(-x))", "tanh(x) * kh", "exp(-(x * x))"),  # one pass each
}
NUMEXPR_CONSTANTS = {
    k: np.float32(v)
    for k, v in {"k0": 0, "k1": 1, "k2": 2, "kh": 0.5, "kc": C, "kg": 0.044715}.items()
}


def make_args(name: str, n: int, xp=np) -> list:
    rng = np.random.default_rng(0)
    cols = 4096 if n % 4096 == 0 else n
    x = rng.standard_normal((n // cols, cols), dtype=np.float32)
    args = [x]
    if name == "bias_gelu_residual":
        args += [
            rng.standard_normal(cols, dtype=np.float32),
            rng.standard_normal(x.shape, dtype=np.float32),
        ]
    return [xp.asarray(a) for a in args]


# ---- timing -------------------------------------------------------------------------------
def time_cpu(impls: dict, args, repeats: int, warmup: int = 2) -> dict[str, tuple[float, float]]:
    """(median wall ms, median process-CPU ms) of each impl. The impls take turns within every
    repeat, so a change in machine load (shared CI boxes) hits all of them alike; CPU time is
    reported too because it is less sensitive to other processes than wall time."""
    for fn in impls.values():
        for _ in range(warmup):
            fn(*args)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn(*args)
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return {
        k: (statistics.median(w for w, _ in v) * 1e3, statistics.median(c for _, c in v) * 1e3)
        for k, v in times.items()
    }


def time_gpu(fn, args, repeats: int, warmup: int = 3) -> float:
    import cupy

    for _ in range(warmup):
        fn(*args)
    cupy.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn(*args)
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


# ---- the two sides ------------------------------------------------------------------------
def cpu_rows(n: int, repeats: int) -> list[dict]:
    rows = []
    try:
        import numexpr
    except ImportError:
        numexpr = None
    for name, (gg_fn, xp_fn, names, _) in WORKLOADS.items():
        args = make_args(name, n)
        fused = gg.jit(gg_fn, backend="numpy")
        plain = gg.jit(gg_fn, backend="numpy", fuse=False)
        want = xp_fn(*args, np)
        np.testing.assert_allclose(fused(*args), want, rtol=1e-4, atol=1e-5)
        impls = {
            "numpy eager": lambda *a, f=xp_fn: f(*a, np),
            "gpugraph numpy (fused)": fused,
            "gpugraph numpy (fuse=False)": plain,
        }
        if numexpr is not None:
            exprs = NUMEXPR[name]
            impls[f"numexpr ({numexpr.nthreads} threads)"] = lambda *a, e=exprs, k=names: (
                numexpr_evaluate(numexpr, e, {**dict(zip(k, a)), **NUMEXPR_CONSTANTS})
            )
            got = impls[f"numexpr ({numexpr.nthreads} threads)"](*args)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        for impl, (ms, cpu_ms) in time_cpu(impls, args, repeats).items():
            rows.append({"workload": name, "impl": impl, "ms": ms, "cpu_ms": cpu_ms})
    return rows


def numexpr_evaluate(numexpr, exprs: str | tuple[str, ...], names: dict):
    if isinstance(exprs, tuple):
        return tuple(numexpr.evaluate(e, local_dict=names) for e in exprs)
    return numexpr.evaluate(exprs, local_dict=names)


def to_host(result, torch_tensor: bool):
    """A workload's result (an array or a tuple of arrays) as NumPy."""
    if not torch_tensor:
        return gg.asnumpy(result)
    if isinstance(result, tuple):
        return tuple(r.cpu().numpy() for r in result)
    return result.cpu().numpy()


class TorchNS:  # torch spelled like the xp functions the workloads use
    def __init__(self, torch) -> None:
        self.tanh, self.exp = torch.tanh, torch.exp
        self.maximum = lambda a, b: torch.clamp_min(a, b)


def gpu_rows(n: int, repeats: int) -> tuple[list[dict], dict]:
    import cupy

    rows = []
    x = cupy.empty(n, np.float32)
    y = cupy.empty_like(x)
    copy_ms = time_gpu(lambda: cupy.copyto(y, x), [], repeats)
    copy_gbs = 2 * x.nbytes / copy_ms / 1e6
    try:
        import torch
    except ImportError:
        torch = None
    for name, (gg_fn, xp_fn, _, n_arrays) in WORKLOADS.items():
        args = make_args(name, n, cupy)
        want = to_host(xp_fn(*args, cupy), False)
        impls = {
            "cupy eager": lambda *a, f=xp_fn: f(*a, cupy),
            "cupy.fuse": cupy.fuse(lambda *a, f=xp_fn: f(*a, cupy)),
            "gpugraph cupy (fused)": gg.jit(gg_fn, backend="cupy"),
            "gpugraph cupy (fused, vectorize=False)": gg.jit(
                gg_fn, backend="cupy", vectorize=False
            ),
            "gpugraph cupy (fuse=False)": gg.jit(gg_fn, backend="cupy", fuse=False),
        }
        targs = []
        if torch is not None and torch.cuda.is_available():
            targs = [torch.as_tensor(a, device="cuda") for a in args]
            tns = TorchNS(torch)
            impls["torch eager"] = lambda *a, f=xp_fn, t=tns: f(*a, t)
            impls["torch.compile"] = torch.compile(lambda *a, f=xp_fn, t=tns: f(*a, t))
        moved = n_arrays * n * 4  # bytes each call must read and write at least
        for impl, fn in impls.items():
            a = targs if impl.startswith("torch") else args
            try:
                got = to_host(fn(*a), impl.startswith("torch"))
                np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
                ms = time_gpu(fn, a, repeats)
            except Exception as e:  # noqa: BLE001 - a missing toolchain must not stop the run
                print(f"{name}: {impl} failed: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            gbs = moved / ms / 1e6
            row = {"workload": name, "impl": impl, "ms": ms, "GB/s": gbs}
            rows.append({**row, "of_copy_bw": gbs / copy_gbs})
    return rows, {"copy_GB/s": copy_gbs}


# ---- reporting ----------------------------------------------------------------------------
def add_ratios(rows: list[dict]) -> None:
    """speedup_of_gpugraph (and its CPU-time twin): each row's median over the fused gpugraph
    median of the same workload."""
    for r in rows:
        ours = next(
            x
            for x in rows
            if x["workload"] == r["workload"]
            and x["impl"].startswith("gpugraph")
            and "(fused)" in x["impl"]
        )
        r["speedup_of_gpugraph"] = r["ms"] / ours["ms"]
        if "cpu_ms" in r:
            r["cpu_speedup_of_gpugraph"] = r["cpu_ms"] / ours["cpu_ms"]


def markdown(rows: list[dict], meta: dict) -> str:
    cols = ["workload", "impl", "ms", "speedup_of_gpugraph"] + (
        ["GB/s", "of_copy_bw"]
        if any("GB/s" in r for r in rows)
        else ["cpu_ms", "cpu_speedup_of_gpugraph"]
    )
    out = [
        f"# fusion benchmark — {meta['device']} — {meta['date']}",
        "",
        f"size {meta['size']} float32 elements, median of {meta['repeats']} repeats; "
        "speedup_of_gpugraph = that row's median / gpugraph fused median "
        "(cpu_ = process CPU time instead of wall time). "
        f"Load average at start/end: {meta.get('load', 'n/a')}.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v if v is not None else ""))
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        "```",
        json.dumps({k: v for k, v in meta.items() if k != "rows"}, indent=1),
        "```",
        "",
    ]
    return "\n".join(out)


def memory_report(n: int) -> dict:
    """Arena, naive and lower-bound bytes of each workload's plan, fused and unfused."""
    report = {}
    for name, (gg_fn, *_rest) in WORKLOADS.items():
        args = make_args(name, n)
        for fuse in (True, False):
            m = gg.jit(gg_fn, backend="numpy", fuse=fuse).lower(*args).memory
            report[f"{name} fuse={fuse}"] = {
                "arena_bytes": m.arena_bytes,
                "naive_bytes": m.naive_bytes,
                "lower_bound_bytes": m.lower_bound_bytes,
            }
    return report


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def versions() -> dict:
    found = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gpugraph": gg.__version__,
    }
    for mod in ("numexpr", "cupy", "torch"):
        try:
            found[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=16 * 2**20)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-write", action="store_true", help="print only")
    opts = ap.parse_args()
    backend = gg.default_backend()
    load_before = _load()
    meta = {
        "date": datetime.date.today().isoformat(),
        "size": opts.size,
        "repeats": opts.repeats,
        "versions": versions(),
        "backend": str(backend),
    }
    if backend.name == "cupy":
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        meta["device"] = (
            props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        )
        rows, extra = gpu_rows(opts.size, opts.repeats)
        meta.update(extra)
    else:
        meta["device"] = f"cpu {platform.processor() or platform.machine()}"
        rows = cpu_rows(opts.size, opts.repeats)
    meta["load"] = f"{load_before} / {_load()}"
    add_ratios(rows)
    meta["memory"] = memory_report(opts.size)
    meta["rows"] = rows
    text = markdown(rows, meta)
    print(text)
    if not opts.no_write:
        RESULTS.mkdir(exist_ok=True)
        slug = (
            "cpu"
            if backend.name != "cupy"
            else re.sub(r"[^a-z0-9]+", "-", meta["device"].lower()).strip("-")
        )
        stem = RESULTS / f"fusion-{slug}-{meta['date']}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
