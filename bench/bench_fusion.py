"""Elementwise fusion benchmark on float32: an 8-op chain, bias + GELU(tanh) + residual, and
three sibling chains reading one input (one multi-output kernel: the input is read once).

CPU: gpugraph (jit, numpy backend, fused and unfused; the native cpu backend) vs the strongest
CPU peers installed: NumPy eager, NumPy with preallocated out= buffers, numexpr, jax.jit, torch
eager and torch.compile (each optional; a missing one is listed as absent, with why). Wall and
process-CPU medians, the impls taking turns within every repeat; over_jax_jit = row / jax.jit.

GPU (when CuPy has a device): gpugraph (cupy backend, with and without the kernels' vector
path, and unfused) vs CuPy eager, cupy.fuse, torch eager and torch.compile. Each impl is timed
as N back-to-back calls between two CUDA events (bench/gpu_timing.py: the device time, not
Python's), with the host's time per call reported beside it; plus the achieved bandwidth over
a plain device-to-device copy's. The default size is 2^28 float32 elements (1 GiB an operand):
at 2^24 an operand is 64 MB, about an H200's L2 cache, and repeated calls would partly hit it.

Ratios = that row's median / gpugraph fused median (above 1: gpugraph is faster).

    python bench/bench_fusion.py [--size N] [--repeats K] [--name fusion]
writes bench/results/<name>-<device>-<date>.{md,json}
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, versions  # noqa: E402
from gpu_timing import device_time  # noqa: E402

import gpugraph as gg  # noqa: E402

# The cpu rows measure native kernels: compile every fused group, whatever the backend's
# default policy leaves to NumPy (docs/backends.md, GPUGRAPH_CPU_NATIVE).
os.environ.setdefault("GPUGRAPH_CPU_NATIVE", "all")

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


def arg_shapes(name: str, n: int) -> list[tuple[int, ...]]:
    cols = 4096 if n % 4096 == 0 else n
    x = (n // cols, cols)
    return [x, (cols,), x] if name == "bias_gelu_residual" else [x]


def make_args(name: str, n: int, xp=np) -> list:
    rng = np.random.default_rng(0)
    return [xp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in arg_shapes(name, n)]


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


# ---- the two sides ------------------------------------------------------------------------
def numpy_out(name: str, args: list):
    """The workload in NumPy with every step into preallocated buffers (out=): NumPy at its
    best without fusion (no allocation, no temporaries beyond the buffers)."""
    x = args[0]
    buf = [np.empty_like(x) for _ in range(3)]
    if name == "chain8":

        def run(x):
            t = buf[0]
            np.multiply(x, 2.0, out=t)
            np.add(t, 1.0, out=t)
            np.tanh(t, out=t)
            np.multiply(t, x, out=t)
            np.subtract(t, 0.5, out=t)
            np.maximum(t, 0.0, out=t)
            np.multiply(t, t, out=t)
            return np.add(t, x, out=t)

    elif name == "bias_gelu_residual":

        def run(x, b, r):
            h, t = buf[0], buf[1]
            np.add(x, b, out=h)
            np.multiply(h, h, out=t)
            np.multiply(t, h, out=t)
            np.multiply(t, 0.044715, out=t)
            np.add(t, h, out=t)
            np.multiply(t, C, out=t)
            np.tanh(t, out=t)
            np.add(t, 1.0, out=t)
            np.multiply(t, h, out=t)
            np.multiply(t, 0.5, out=t)
            return np.add(t, r, out=t)

    else:  # siblings3

        def run(x):
            a, b, c = buf
            np.negative(x, out=a)
            np.exp(a, out=a)
            np.add(a, 1.0, out=a)
            np.divide(x, a, out=a)
            np.tanh(x, out=b)
            np.multiply(b, 0.5, out=b)
            np.multiply(x, x, out=c)
            np.negative(c, out=c)
            return a, b, np.exp(c, out=c)

    return run


def cpu_peers(name: str, args: list, xp_fn, names: str, absent: dict) -> dict:
    """The optional CPU peers of one workload: name -> callable(*args) returning host arrays.
    A peer that cannot be imported or built is recorded in ``absent`` with why."""
    peers = {}
    try:
        import numexpr

        exprs = NUMEXPR[name]
        peers[f"numexpr ({numexpr.nthreads} threads)"] = lambda *a, e=exprs, k=names: (
            numexpr_evaluate(numexpr, e, {**dict(zip(k, a)), **NUMEXPR_CONSTANTS})
        )
    except ImportError as e:
        absent["numexpr"] = str(e)
    try:
        import jax
        import jax.numpy as jnp

        jitted = jax.jit(lambda *a, f=xp_fn: f(*a, jnp))
        jargs = [jax.device_put(a) for a in args]  # on the device once, as our arrays are
        peers["jax.jit"] = lambda *a, f=jitted, j=jargs: jax.block_until_ready(f(*j))
    except ImportError as e:
        absent["jax"] = str(e)
    try:
        import torch

        targs = [torch.from_numpy(a) for a in args]
        tns = TorchNS(torch)
        fn = lambda *a, f=xp_fn, t=tns: f(*a, t)  # noqa: E731
        peers[f"torch eager ({torch.get_num_threads()} threads)"] = lambda *a, t=targs: fn(*t)
        compiled = torch.compile(fn)
        peers["torch.compile"] = lambda *a, t=targs, c=compiled: c(*t)
    except ImportError as e:
        absent["torch"] = str(e)
    return peers


def cpu_rows(n: int, repeats: int) -> tuple[list[dict], dict]:
    rows, absent = [], {}
    for name, (gg_fn, xp_fn, names, _) in WORKLOADS.items():
        args = make_args(name, n)
        fused = gg.jit(gg_fn, backend="numpy")
        plain = gg.jit(gg_fn, backend="numpy", fuse=False)
        want = xp_fn(*args, np)
        impls = {
            "numpy eager": lambda *a, f=xp_fn: f(*a, np),
            "numpy out= (preallocated)": numpy_out(name, args),
            "gpugraph numpy (fused)": fused,
            "gpugraph numpy (fuse=False)": plain,
            "gpugraph cpu (native kernels)": gg.jit(gg_fn, backend="cpu"),
            **cpu_peers(name, args, xp_fn, names, absent),
        }
        for impl, fn in list(impls.items()):
            try:  # every impl computes the same numbers (and is compiled/warmed here)
                got = fn(*args)
                got = tuple(map(host, got)) if isinstance(got, tuple) else host(got)
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
            except Exception as e:  # noqa: BLE001 - a peer's toolchain may be missing
                absent[f"{impl} ({name})"] = f"{type(e).__name__}: {str(e)[:300]}"
                del impls[impl]
        if name == "chain8":  # copy references (not the workload): bytes moved = chain8's
            impls.update(copy_references(args[0]))
        for impl, (ms, cpu_ms) in time_cpu(impls, args, repeats).items():
            rows.append({"workload": name, "impl": impl, "ms": ms, "cpu_ms": cpu_ms})
    return rows, {"absent": absent}


def copy_references(x) -> dict:
    """Reading x and writing a fresh array of its size, chain8's memory traffic: NumPy's copy
    (one thread) and the cpu backend's kernel for ``x * 2 + 1`` (its OpenMP threads; one op
    alone is not a kernel). chain8's copy-bandwidth fraction is copy ms / chain8 ms."""
    native = gg.jit(lambda x: x * 2.0 + 1.0, backend="cpu")
    native(x)  # compiled here, outside the timing
    return {"copy ref: np.copy": lambda x: np.copy(x), "copy ref: gpugraph cpu x*2+1": native}


def host(a):
    """An array of any peer (NumPy, JAX, torch) as NumPy."""
    return a.numpy() if hasattr(a, "numpy") and not isinstance(a, np.ndarray) else np.asarray(a)


def numexpr_evaluate(numexpr, exprs: str | tuple[str, ...], names: dict):
    if isinstance(exprs, tuple):
        return tuple(numexpr.evaluate(e, local_dict=names) for e in exprs)
    return numexpr.evaluate(exprs, local_dict=names)


CHECKED = 1 << 20  # elements of each result compared with the reference (a 2^28 one is slow)


def to_host(result, torch_tensor: bool):
    """The first CHECKED elements of a workload's result (an array or a tuple), as NumPy."""
    if isinstance(result, tuple):
        return tuple(to_host(r, torch_tensor) for r in result)
    if torch_tensor:
        return result.reshape(-1)[:CHECKED].cpu().numpy()
    return gg.asnumpy(result.reshape(-1)[:CHECKED])


class TorchNS:  # torch spelled like the xp functions the workloads use
    def __init__(self, torch) -> None:
        self.tanh, self.exp = torch.tanh, torch.exp
        self.maximum = lambda a, b: torch.clamp_min(a, b)


def gpu_rows(
    n: int, repeats: int, cp=None, backend: str = "cupy", calls: int = 20
) -> tuple[list[dict], dict]:
    """``cp``: the cupy module (the tests pass a NumPy-backed stand-in with ``backend``)."""
    if cp is None:
        import cupy as cp
    rows = []
    x = cp.empty(n, np.float32)
    y = cp.empty_like(x)
    copy = device_time(cp, lambda: cp.copyto(y, x), calls, repeats)
    copy_gbs = 2 * x.nbytes / copy.device_ms / 1e6
    x = y = None  # the copy's 2 GiB back to the pool before the workloads
    try:
        import torch

        cuda_torch = torch.cuda.is_available()
    except ImportError:
        torch, cuda_torch = None, False
    for name, (gg_fn, xp_fn, _, n_arrays) in WORKLOADS.items():
        args = make_args(name, n, cp)
        want = to_host(xp_fn(*args, cp), False)
        impls = {
            "cupy eager": lambda *a, f=xp_fn: f(*a, cp),
            "cupy.fuse": cp.fuse(lambda *a, f=xp_fn: f(*a, cp)),
            "gpugraph cupy (fused)": gg.jit(gg_fn, backend=backend),
            "gpugraph cupy (fused, vectorize=False)": gg.jit(
                gg_fn, backend=backend, vectorize=False
            ),
            "gpugraph cupy (fuse=False)": gg.jit(gg_fn, backend=backend, fuse=False),
        }
        targs = []
        if cuda_torch:  # torch's default stream is the legacy one, as CuPy's current stream
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
                t = device_time(cp, lambda fn=fn, a=a: fn(*a), calls, repeats)
            except Exception as e:  # noqa: BLE001 - a missing toolchain must not stop the run
                print(f"{name}: {impl} failed: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            gbs = moved / t.device_ms / 1e6
            rows.append(
                {
                    "workload": name,
                    "impl": impl,
                    "ms": t.device_ms,
                    "host_us_per_call": t.host_us,
                    "host_bound": t.host_bound(),
                    "GB/s": gbs,
                    "of_copy_bw": gbs / copy_gbs,
                }
            )
        del args, targs
    return rows, {"copy_GB/s": copy_gbs, "calls_per_timing": calls}


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
        jax = [x for x in rows if x["workload"] == r["workload"] and x["impl"] == "jax.jit"]
        if jax:
            r["over_jax_jit"] = r["ms"] / jax[0]["ms"]


def markdown(rows: list[dict], meta: dict) -> str:
    cols = ["workload", "impl", "ms", "speedup_of_gpugraph"] + (
        ["host_us_per_call", "GB/s", "of_copy_bw"]
        if any("GB/s" in r for r in rows)
        else ["cpu_ms", "cpu_speedup_of_gpugraph", "over_jax_jit"]
    )
    out = [
        f"# fusion benchmark — {meta['device']} — {meta['date']}",
        "",
        f"size {meta['size']} float32 elements, median of {meta['repeats']} repeats; "
        "speedup_of_gpugraph = that row's median / gpugraph fused median "
        "(cpu_ = process CPU time instead of wall time; GPU ms = device time per call of "
        "back-to-back calls between two CUDA events, host_us_per_call = the host's time to "
        "enqueue one). "
        f"Load average at start/end: {meta.get('load', 'n/a')}. "
        f"Absent peers: {meta.get('absent') or 'none'}.",
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
        specs = [gg.ShapeDtype(s, np.float32) for s in arg_shapes(name, n)]  # no data needed
        for fuse in (True, False):
            m = gg.jit(gg_fn, backend="numpy", fuse=fuse).lower(*specs).memory
            report[f"{name} fuse={fuse}"] = {
                "arena_bytes": m.arena_bytes,
                "naive_bytes": m.naive_bytes,
                "lower_bound_bytes": m.lower_bound_bytes,
            }
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, help="elements (default: 2^28 on a GPU, 2^24 on the CPU)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--name", default="fusion", help="results file name prefix")
    opts = ap.parse_args()
    backend = gg.default_backend()
    if opts.size is None:
        opts.size = 2**28 if backend.name == "cupy" else 2**24
    load_before = load_average()
    meta = {
        "date": datetime.date.today().isoformat(),
        "size": opts.size,
        "repeats": opts.repeats,
        "versions": versions(("numexpr", "jax", "cupy", "torch")),
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
        rows, extra = cpu_rows(opts.size, opts.repeats)
        meta.update(extra)
    meta["load"] = f"{load_before} / {load_average()}"
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
        stem = RESULTS / f"{opts.name}-{slug}-{meta['date']}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
