"""What each elementwise op and composite costs on the NumPy path, relative to a copy.

At 16M float32 elements, every op of the table runs through its NumPy impl with a preallocated
``out=`` (what a fused group's chunked evaluation pays per op) and as an eager gg call (which
allocates its result); composites run as eager gg calls. Each is divided by the time of
``np.copyto`` between two preallocated arrays of the same size: 1.0 is memory-bound, more is
compute. Peers for the same math, side by side: numexpr (1 thread) and torch on the CPU
(1 thread), and NumPy formulations of sigmoid (the former exp(-logaddexp(0, -x)), the textbook
1/(1+exp(-x)), and 0.5*tanh(x/2)+0.5) next to the one gpugraph uses.

    python bench/bench_op_cost.py [--n 16777216] [--repeats 5]
        # writes bench/results/op-cost-cpu-<date>.{md,json}
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpugraph as gg  # noqa: E402
from gpugraph.ops.registry import get_op  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ROW = 4096  # composites over rows: (n // ROW, ROW)

try:
    import numexpr

    numexpr.set_num_threads(1)
except ImportError:  # pragma: no cover - optional peer
    numexpr = None
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - optional peer
    torch = None


def median_ms(fn, repeats: int) -> float:
    fn()  # warm: page in the output, load libraries
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


# name -> (input maker index, numexpr expression or None, torch function or None)
UNARY = {
    "negative": ("-x", lambda t: torch.neg(t)),
    "abs": ("abs(x)", lambda t: torch.abs(t)),
    "sign": (None, lambda t: torch.sign(t)),
    "relu": ("where(x > 0, x, 0)", lambda t: torch.relu(t)),
    "exp": ("exp(x)", lambda t: torch.exp(t)),
    "log": ("log(x)", lambda t: torch.log(t)),
    "sqrt": ("sqrt(x)", lambda t: torch.sqrt(t)),
    "rsqrt": ("1 / sqrt(x)", lambda t: torch.rsqrt(t)),
    "reciprocal": ("1 / x", lambda t: torch.reciprocal(t)),
    "tanh": ("tanh(x)", lambda t: torch.tanh(t)),
    "sin": ("sin(x)", lambda t: torch.sin(t)),
    "cos": ("cos(x)", lambda t: torch.cos(t)),
    "erf": (None, lambda t: torch.erf(t)),
    "sigmoid": ("1 / (1 + exp(-x))", lambda t: torch.sigmoid(t)),
    "stop_gradient": ("x", None),
}
BINARY = {
    "add": ("x + y", lambda a, b: torch.add(a, b)),
    "subtract": ("x - y", lambda a, b: torch.sub(a, b)),
    "multiply": ("x * y", lambda a, b: torch.mul(a, b)),
    "divide": ("x / y", lambda a, b: torch.div(a, b)),
    "power": ("x ** y", lambda a, b: torch.pow(a, b)),
    "maximum": ("where(x > y, x, y)", lambda a, b: torch.maximum(a, b)),
    "minimum": ("where(x < y, x, y)", lambda a, b: torch.minimum(a, b)),
    "greater": ("x > y", lambda a, b: torch.gt(a, b)),
}
POSITIVE = {"log", "sqrt", "rsqrt", "power"}
COMPOSITES = {
    "gelu (tanh)": (
        lambda x: gg.gelu(x, "tanh"),
        lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
    ),
    "gelu (erf)": (lambda x: gg.gelu(x, "none"), lambda t: torch.nn.functional.gelu(t)),
    "softmax": (lambda x: gg.softmax(x, -1), lambda t: torch.softmax(t, -1)),
    "log_softmax": (lambda x: gg.log_softmax(x, -1), lambda t: torch.log_softmax(t, -1)),
    "logsumexp": (lambda x: gg.logsumexp(x, -1), lambda t: torch.logsumexp(t, -1)),
    "layer_norm": (
        lambda x: gg.layer_norm(x),
        lambda t: torch.nn.functional.layer_norm(t, t.shape[-1:]),
    ),
    "var": (lambda x: gg.var(x, -1), lambda t: torch.var(t, -1, correction=0)),
    "log(sigmoid)": (lambda x: gg.log(gg.sigmoid(x)), lambda t: torch.nn.functional.logsigmoid(t)),
}


def sigmoid_variants(x, out):
    """NumPy formulations of sigmoid, each writing ``out``."""

    def logaddexp():  # gpugraph's former impl
        np.logaddexp(0, -x, out=out)
        np.negative(out, out=out)
        np.exp(out, out=out)

    def textbook():  # overflows (with a warning) for x < -88.7 in float32
        np.negative(x, out=out)
        np.exp(out, out=out)
        np.add(out, 1, out=out)
        np.divide(1, out, out=out)

    def tanh_form():  # 0 below x = -17 in float32 (no relative accuracy in the left tail)
        np.multiply(x, 0.5, out=out)
        np.tanh(out, out=out)
        np.multiply(out, 0.5, out=out)
        np.add(out, 0.5, out=out)

    return {
        "exp(-logaddexp(0, -x)) (former)": logaddexp,
        "1 / (1 + exp(-x)) (overflows)": textbook,
        "0.5 * tanh(x / 2) + 0.5 (inexact tail)": tanh_form,
    }


def run(n: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.uniform(-4, 4, n).astype(np.float32)
    y = rng.uniform(-4, 4, n).astype(np.float32)
    pos_x, pos_y = np.abs(x) + 0.1, np.abs(y) * 0.5
    out = np.empty_like(x)
    copy_ms = median_ms(lambda: np.copyto(out, x), repeats)
    rows = []

    def add(name, kind, ms, numexpr_ms=None, torch_ms=None, eager_ms=None):
        rows.append(
            {
                "op": name,
                "kind": kind,
                "out_ms": ms,
                "vs_copy": ms / copy_ms,
                "eager_ms": eager_ms,
                "numexpr_ms": numexpr_ms,
                "torch_ms": torch_ms,
            }
        )
        print(f"{name:42s} {ms:8.1f} ms  x{ms / copy_ms:5.1f}", flush=True)

    with np.errstate(all="ignore"):
        for table, arity in ((UNARY, 1), (BINARY, 2)):
            for name, (expr, tfn) in table.items():
                a, b = (pos_x, pos_y) if name in POSITIVE else (x, y)
                args = (a,) if arity == 1 else (a, b)
                impl = get_op(name).impl
                ms = median_ms(lambda impl=impl, args=args: impl(np, *args, out=out), repeats)
                fn = getattr(gg, name)
                eager = median_ms(lambda fn=fn, args=args: fn(*args), repeats)
                ne = None
                if numexpr is not None and expr is not None:
                    local = {"x": a, "y": b}
                    ne = median_ms(
                        lambda expr=expr, local=local: numexpr.evaluate(
                            expr, local_dict=local, out=out if "> " not in expr else None
                        ),
                        repeats,
                    )
                tm = None
                if torch is not None and tfn is not None:
                    ts = [torch.from_numpy(v) for v in args]
                    tm = median_ms(lambda tfn=tfn, ts=ts: tfn(*ts), repeats)
                add(name, "elementwise", ms, ne, tm, eager)
        for name, fn in sigmoid_variants(x, out).items():
            add(f"sigmoid as {name}", "sigmoid formulation", median_ms(fn, repeats))
        xr = x.reshape(-1, ROW)
        for name, (gfn, tfn) in COMPOSITES.items():
            ms = median_ms(lambda gfn=gfn: gfn(xr), repeats)
            tm = None
            if torch is not None:
                t = torch.from_numpy(xr)
                tm = median_ms(lambda tfn=tfn, t=t: tfn(t), repeats)
            add(name, "composite (eager)", ms, None, tm, ms)
    return {"copy_ms": copy_ms, "rows": rows}


def environment() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.date.today().isoformat(),
        "device": f"CPU: {cpu}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numexpr": getattr(numexpr, "__version__", None),
        "torch": getattr(torch, "__version__", None),
        "load_average_1min": round(__import__("os").getloadavg()[0], 1),
    }


def fmt(v, copy_ms=None):
    if v is None:
        return "-"
    return f"{v:.1f}" if copy_ms is None else f"{v:.1f} (x{v / copy_ms:.1f})"


def markdown(n: int, env: dict, res: dict) -> str:
    c = res["copy_ms"]
    lines = [
        f"# NumPy cost of each op, {n:,} float32 elements",
        "",
        f"{env['date']}, {env['device']}; Python {env['python']}, NumPy {env['numpy']}, "
        f"numexpr {env['numexpr']}, torch {env['torch']} (peers on 1 thread; NumPy is "
        f"single-threaded). Medians of repeated runs on a shared machine (1-minute load average "
        f"{env['load_average_1min']} at the start), so read ratios, not absolute times.",
        "",
        f"Copy (np.copyto, preallocated): **{c:.1f} ms** = x1.0. `out=` is the op's NumPy impl "
        "writing a preallocated array (what a fused group pays per op); eager is the gg call "
        "(allocates); composites are eager gg calls on (n/4096, 4096) rows.",
        "",
        "| op | kind | out= ms (x copy) | eager ms | numexpr ms | torch ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['op']} | {r['kind']} | {fmt(r['out_ms'], c)} | {fmt(r['eager_ms'])} | "
            f"{fmt(r['numexpr_ms'])} | {fmt(r['torch_ms'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=16 * 2**20)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    env = environment()
    res = run(args.n, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"op-cost-cpu-{env['date']}"
    stem.with_suffix(".json").write_text(json.dumps({"n": args.n, **env, **res}, indent=1))
    stem.with_suffix(".md").write_text(markdown(args.n, env, res))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
