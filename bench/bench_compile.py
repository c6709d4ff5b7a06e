"""Compile time against graph size: gpugraph (``gg.jit(...).lower``) vs jax.jit (first call, and
``lower().compile()``), with a fitted growth exponent and a per-stage breakdown.

Workloads (float32, small arrays: compile time, not run time, is measured):
  elementwise       8 lanes of (64,) values, each layer ``tanh(x_i * x_{i+1} + x_i)``, summed
  sin_chain         ``x = sin(x)`` n times
  transformer_grad  gradient of ``sum(out**2)`` through L pre-norm transformer blocks
                    (attention + GELU MLP, seq 16, d 32) with respect to every weight
  transformer_grad_4_streams  the same compiled with streams=4 (what CuPy gets by default)

Every point runs in a fresh process (no kernel or trace cache carries over from a smaller size),
best of ``--repeats``. The exponent is the least-squares slope of log(time) on log(traced node
count). The breakdown times each pipeline stage by wrapping it (trace, each optimize pass,
fusion with its code generation shown apart, final DCE, memory-aware order, schedule, memory
plan, lowering to an Executable).

    python bench/bench_compile.py [--repeats K] [--quick] [--no-jax] [--no-write]
writes bench/results/compile-cpu-<date>.{md,json}
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# GPUGRAPH_ROOT: measure another checkout (``--baseline``: the code before a change)
ROOT = Path(os.environ.get("GPUGRAPH_ROOT") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"

SIZES = {  # the size parameter of each workload (lanes*layers, ops, layers)
    "elementwise": [500, 1000, 2000, 4000, 8000],
    "sin_chain": [1250, 2500, 5000, 10000, 20000],
    "transformer_grad": [6, 13, 25, 51],
    "transformer_grad_4_streams": [6, 13, 25, 51],
}
QUICK = {
    "elementwise": [500, 1000],
    "sin_chain": [1250, 2500],
    "transformer_grad": [3, 6],
    "transformer_grad_4_streams": [3, 6],
}
# Workloads compiled with several streams (the CuPy default, up to 4): the memory plan then
# works from happens-before conflicts. jax has no such setting: no jax column.
STREAMS = {"transformer_grad_4_streams": 4}
WIDTH, SEQ, DIM = 8, 16, 32


# ---- the workloads, written once against a namespace (gpugraph or jax.numpy) ----------------
def elementwise(n: int, xp):
    depth = max(1, n // (3 * WIDTH))

    def fn(*xs):
        xs = list(xs)
        for _ in range(depth):
            xs = [xp.tanh(xs[i] * xs[(i + 1) % WIDTH] + xs[i]) for i in range(WIDTH)]
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    return fn, [(64,)] * WIDTH


def sin_chain(n: int, xp):
    def fn(x):
        for _ in range(n):
            x = xp.sin(x)
        return x

    return fn, [(64,)]


class Gg:
    """gpugraph spelled like the few jax.numpy / jax.nn functions the transformer uses."""

    def __init__(self) -> None:
        import gpugraph as gg

        self.gg = gg

    def layer_norm(self, x):
        return self.gg.layer_norm(x)

    def softmax(self, x):
        return self.gg.softmax(x)

    def gelu(self, x):
        return self.gg.gelu(x)

    def swapaxes(self, x, a, b):
        return self.gg.swapaxes(x, a, b)

    def sum(self, x):
        return self.gg.sum(x)

    def grad(self, f):
        return self.gg.grad(f)


class Jx:
    def __init__(self) -> None:
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp

    def layer_norm(self, x):
        mu = self.jnp.mean(x, axis=-1, keepdims=True)
        c = x - mu
        return c * self.jax.lax.rsqrt(self.jnp.mean(c * c, axis=-1, keepdims=True) + 1e-5)

    def softmax(self, x):
        return self.jax.nn.softmax(x, axis=-1)

    def gelu(self, x):
        return self.jax.nn.gelu(x, approximate=True)

    def swapaxes(self, x, a, b):
        return self.jnp.swapaxes(x, a, b)

    def sum(self, x):
        return self.jnp.sum(x)

    def grad(self, f):
        return self.jax.grad(f)


def transformer_grad(layers: int, ns):
    def block(x, p):
        wq, wk, wv, wo, w1, w2 = p
        h = ns.layer_norm(x)
        q, k, v = h @ wq, h @ wk, h @ wv
        a = ns.softmax(q @ ns.swapaxes(k, -1, -2) * (1.0 / math.sqrt(DIM)))
        x = x + (a @ v) @ wo
        return x + ns.gelu(ns.layer_norm(x) @ w1) @ w2

    def loss(params, x):
        for i in range(layers):
            x = block(x, params[6 * i : 6 * i + 6])
        return ns.sum(x * x)

    shapes = [(DIM, DIM)] * 4 + [(DIM, 4 * DIM), (4 * DIM, DIM)]
    return ns.grad(loss), [[s for _ in range(layers) for s in shapes], (SEQ, DIM)]


def build(workload: str, n: int, peer: str):
    if workload.startswith("transformer_grad"):
        return transformer_grad(n, Gg() if peer == "gpugraph" else Jx())
    if peer == "gpugraph":
        import gpugraph as xp
    else:
        import jax.numpy as xp
    return {"elementwise": elementwise, "sin_chain": sin_chain}[workload](n, xp)


def specs(shapes, make):
    """The argument structure with each shape replaced by ``make(shape)``."""
    if isinstance(shapes, list):
        return [specs(s, make) for s in shapes]
    return make(shapes)


# ---- per-stage timing of gpugraph's pipeline ---------------------------------------------------
@contextlib.contextmanager
def stage_timers(times: dict[str, float]):
    """Wrap each pipeline stage so that its time adds up in ``times`` (restored on exit)."""
    import importlib

    import gpugraph.passes.fuse as fuse_mod
    import gpugraph.passes.pipeline as pipeline
    import gpugraph.runtime as runtime

    trace = importlib.import_module("gpugraph.trace")  # the name gg.trace is the op

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - t

        return wrapper

    patches = [
        (trace, "trace_flat", "trace (incl. autodiff)"),
        (fuse_mod, "emit_kernel", "codegen (inside fuse)"),
        (runtime, "reorder_for_memory", "memory-aware order"),
        (runtime, "schedule", "schedule"),
        (runtime, "plan_memory", "memory plan"),
        (runtime, "Executable", "lower to Executable"),
    ]
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in patches]
    passes = list(pipeline.OPTIMIZE_PASSES)
    fuse_fn = fuse_mod.fuse
    dce_fn = pipeline.dce
    try:
        for mod, attr, name in patches:
            setattr(mod, attr, timed(name, getattr(mod, attr)))
        pipeline.OPTIMIZE_PASSES[:] = [(n, timed(f"optimize: {n}", f)) for n, f in passes]
        fuse_mod.fuse = timed("fuse (incl. codegen)", fuse_fn)
        pipeline.dce = timed("final dce", dce_fn)  # lower_for_backend's own DCE
        yield times
    finally:
        for mod, attr, fn in saved:
            setattr(mod, attr, fn)
        pipeline.OPTIMIZE_PASSES[:] = passes
        fuse_mod.fuse = fuse_fn
        pipeline.dce = dce_fn


def measure_one(workload: str, n: int, peer: str) -> dict:
    """One point, in this (fresh) process."""
    fn, shapes = build(workload, n, peer)
    if peer == "gpugraph":
        import gpugraph as gg

        args = specs(shapes, lambda s: gg.ShapeDtype(s))
        times: dict[str, float] = {}
        with stage_timers(times):
            t = time.perf_counter()
            c = gg.jit(fn, backend="numpy", streams=STREAMS.get(workload)).lower(*args)
            total = time.perf_counter() - t
        # the optimize passes also run inside the fixpoint: the pass DCE is "optimize: dce"
        return {
            "seconds": total,
            "traced_nodes": len(c.traced_graph.nodes),
            "final_nodes": len(c.graph.nodes),
            "kernels": len(c.kernels),
            "stages": times,
        }
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    arrays = specs(shapes, lambda s: jnp.asarray(rng.standard_normal(s).astype(np.float32)))
    t = time.perf_counter()
    jax.block_until_ready(jax.jit(fn)(*arrays))
    first_call = time.perf_counter() - t
    fresh, _ = build(workload, n, peer)  # a new function: jax caches compilations per function
    t = time.perf_counter()
    jax.jit(fresh).lower(*arrays).compile()
    lower_compile = time.perf_counter() - t
    return {"seconds": first_call, "lower_compile_seconds": lower_compile}


def plan_ab(n: int, reps: int = 5) -> dict:
    """The several-stream memory plan alone, on one compiled 4-stream transformer gradient:
    the current planner against the stored-pairs reference kept in tests/test_compile_time.py
    (every conflict pair stored, the bitset clique bound: the planner before HBConflicts),
    interleaved, best of ``reps``; the two plans must be the same."""
    import gpugraph as gg
    from gpugraph import memory, memory_place

    sys.path.insert(0, str(ROOT / "tests"))
    from test_compile_time import ref_hb_conflicts

    fn, shapes = build("transformer_grad_4_streams", n, "gpugraph")
    c = gg.jit(fn, backend="numpy", streams=4).lower(*specs(shapes, lambda s: gg.ShapeDtype(s)))
    ways = {
        "now": (memory.hb_conflicts, memory.hb_clique_bound),
        "reference": (ref_hb_conflicts, memory_place.clique_bound),
    }
    best: dict[str, float] = {}
    plans = {}
    for _ in range(reps):
        for name, (conflicts, bound) in ways.items():
            memory.hb_conflicts, memory.hb_clique_bound = conflicts, bound
            t = time.process_time()  # CPU time: steadier than wall time on a shared machine
            plan = memory.plan_memory(c.graph, c.schedule)
            best[name] = min(best.get(name, math.inf), time.process_time() - t)
            plans[name] = ({v.id: s.offset for v, s in plan.slots.items()}, plan.arena_bytes)
    assert plans["now"] == plans["reference"], "the plans differ"
    return {
        "traced_nodes": len(c.traced_graph.nodes),
        "buffers": sum(s.kind == "arena" for s in plan.slots.values()),
        "arena_bytes": plans["now"][1],
        "lower_bound_bytes": plan.lower_bound_bytes,
        **best,
    }


def plan_ab_table(sizes: list[int], baseline: str | None = None) -> str:
    """The plan-alone table; with ``baseline`` (a checkout of the code before), its planner is
    measured the same way in its own process right after each size (a 'before' column)."""
    rows = []
    for n in sizes:  # a fresh process per size (and per checkout)
        row = {}
        for name, root in (("now", str(ROOT)), ("before", baseline)):
            if root is None:
                continue
            cmd = [sys.executable, str(Path(root) / "bench" / "bench_compile.py")]
            env = dict(os.environ, GPUGRAPH_ROOT=root)
            out = subprocess.run(
                [*cmd, "--plan-ab-one", str(n)], capture_output=True, text=True, check=True, env=env
            )
            row[name] = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((n, row))
    xs = [r["now"]["traced_nodes"] for _, r in rows]
    before = baseline is not None
    lines = [
        "## Several-stream memory plan alone (4 streams, transformer gradient)",
        "",
        "Same compiled graph, the planner now against the stored-pairs reference from",
        "tests/test_compile_time.py, interleaved in one process, best of 5 in CPU time",
        "(process_time). The plans are identical (offsets and arena asserted equal)."
        + (" 'before': the baseline checkout's planner, measured the same way." if before else ""),
        "",
        "| size | traced nodes | arena buffers | arena B | lower bound B | now s | "
        + ("before s | now / before | " if before else "")
        + "reference s | now / reference |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if before else ""),
    ]
    for n, row in rows:
        r = row["now"]
        b = (
            f"{row['before']['now']:.4f} | {r['now'] / row['before']['now']:.2f} | "
            if before
            else ""
        )
        lines.append(
            f"| {n} | {r['traced_nodes']} | {r['buffers']} | {r['arena_bytes']} | "
            f"{r['lower_bound_bytes']} | {r['now']:.4f} | {b}{r['reference']:.4f} | "
            f"{r['now'] / r['reference']:.2f} |"
        )
    now = fit_exponent(xs, [r["now"]["now"] for _, r in rows])
    ref = fit_exponent(xs, [r["now"]["reference"] for _, r in rows])
    fit = f"Fitted exponent of the plan alone: now {now:.2f}, reference {ref:.2f}"
    if before:
        fit += f", before {fit_exponent(xs, [r['before']['now'] for _, r in rows]):.2f}"
    lines += ["", fit + "."]
    return "\n".join(lines)


def run_point(
    workload: str, n: int, peer: str, repeats: int, timeout: float, root: str | None = None
) -> dict:
    best: dict | None = None
    env = dict(os.environ, GPUGRAPH_ROOT=root or str(ROOT))
    for _ in range(repeats):
        cmd = [sys.executable, __file__, "--one", workload, str(n), peer]
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, check=True, env=env
            )
        except subprocess.TimeoutExpired:
            return {"seconds": None, "error": f"did not finish in {timeout:.0f} s"}
        except subprocess.CalledProcessError as e:
            return {"seconds": None, "error": e.stderr.strip().splitlines()[-1]}
        got = json.loads(out.stdout.strip().splitlines()[-1])
        if best is None or got["seconds"] < best["seconds"]:
            best = got
        if got["seconds"] > 10:  # long points vary less than they cost
            break
    return best


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x and y]
    if len(pts) < 2:
        return None
    lx, ly = np.array(pts).T
    return float(np.polyfit(lx, ly, 1)[0])


# ---- report ------------------------------------------------------------------------------------
# Not bench/common's helpers: importing common imports gpugraph from this checkout, while
# this script must import the one under GPUGRAPH_ROOT (--baseline measures another checkout).
def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def versions() -> dict:
    import gpugraph as gg

    found = {"python": platform.python_version(), "numpy": np.__version__}
    found["gpugraph"] = gg.__version__
    for mod in ("jax", "jaxlib"):
        try:
            found[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return found


def _s(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def markdown(meta: dict) -> str:
    lines = [
        f"# Compile time vs graph size ({meta['date']})",
        "",
        f"Machine: {meta['machine']}; load before/after: {meta['load']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + f". Best of {meta['repeats']} fresh processes per point.",
        "",
        "gpugraph: `gg.jit(fn, backend='numpy').lower(specs)` (trace, autodiff, optimize, fuse "
        "+ codegen, schedule, memory plan, Executable). jax: first call of `jax.jit(fn)` "
        "(trace + XLA compile + run on tiny arrays) and `lower().compile()`. Ratio = gpugraph / "
        "jax first call (above 1: gpugraph is slower). 'before': the same gpugraph measurement "
        "on the code before the compile-time work (`--baseline`, one run, timeout shown).",
        "",
    ]
    for w, rows in meta["workloads"].items():
        lines += [
            f"## {w}",
            "",
            "| size | traced nodes | final nodes | gpugraph s | before s | jax first call s "
            "| jax lower+compile s | ratio |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            g, j, b = r["gpugraph"], r.get("jax", {}), r.get("before", {})
            ratio = (
                f"{g['seconds'] / j['seconds']:.2f}"
                if g.get("seconds") and j.get("seconds")
                else "—"
            )
            before = _s(b.get("seconds")) if b.get("seconds") else b.get("error", "—")
            lines.append(
                f"| {r['size']} | {g.get('traced_nodes', '—')} | {g.get('final_nodes', '—')} | "
                f"{_s(g.get('seconds'))} | {before} | {_s(j.get('seconds'))} | "
                f"{_s(j.get('lower_compile_seconds'))} | {ratio} |"
            )
        ex = meta["exponents"][w]
        lines += [
            "",
            f"Fitted exponent (log time on log traced nodes): gpugraph "
            f"{_fmt(ex.get('gpugraph'))} (before: {_fmt(ex.get('before'))}), jax first call "
            f"{_fmt(ex.get('jax'))}.",
        ]
        big = rows[-1]["gpugraph"].get("stages")
        if big:
            total = rows[-1]["gpugraph"]["seconds"]
            lines += [
                "",
                f"Stages at size {rows[-1]['size']} (s; codegen is part of fuse, the "
                "optimize passes run to a fixpoint):",
                "",
            ]
            for name, sec in sorted(big.items(), key=lambda kv: -kv[1]):
                lines.append(f"- {name}: {sec:.3f} ({sec / total:.0%})")
        lines.append("")
    return "\n".join(lines)


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="two small sizes per workload")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--only", nargs="+", help="these workloads only")
    ap.add_argument("--suffix", default="", help="results file name suffix, e.g. -2")
    ap.add_argument("--baseline", help="a checkout of the code before: a 'before' column")
    ap.add_argument("--baseline-timeout", type=float, default=120)
    ap.add_argument("--plan-ab", action="store_true", help="append the plan-alone A/B table")
    ap.add_argument("--plan-sizes", type=int, nargs="+", help="sizes of the plan-alone table")
    ap.add_argument("--plan-ab-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--one", nargs=3, metavar=("WORKLOAD", "SIZE", "PEER"), help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.plan_ab_one:
        print(json.dumps(plan_ab(opts.plan_ab_one)))
        return
    if opts.one:
        w, n, peer = opts.one
        print(json.dumps(measure_one(w, int(n), peer)))
        return
    try:
        import jax  # noqa: F401

        have_jax = not opts.no_jax
    except ImportError:
        have_jax = False
    load_before = _load()
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.system()}",
        "repeats": opts.repeats,
        "baseline": opts.baseline,
        "versions": versions(),
        "workloads": {},
        "exponents": {},
    }
    for w, sizes in (QUICK if opts.quick else SIZES).items():
        if opts.only and w not in opts.only:
            continue
        rows = []
        for n in sizes:
            row = {"size": n, "gpugraph": run_point(w, n, "gpugraph", opts.repeats, opts.timeout)}
            if opts.baseline:
                row["before"] = run_point(w, n, "gpugraph", 1, opts.baseline_timeout, opts.baseline)
            if have_jax and w not in STREAMS:
                row["jax"] = run_point(w, n, "jax", opts.repeats, opts.timeout)
            print(w, n, json.dumps({k: v.get("seconds") for k, v in row.items() if k != "size"}))
            rows.append(row)
        meta["workloads"][w] = rows
        xs = [r["gpugraph"].get("traced_nodes") for r in rows]
        meta["exponents"][w] = {
            p: fit_exponent(xs, [r.get(p, {}).get("seconds") for r in rows])
            for p in (["gpugraph", "jax"] if have_jax and w not in STREAMS else ["gpugraph"])
        }
        if opts.baseline:
            meta["exponents"][w]["before"] = fit_exponent(
                xs, [r["before"].get("seconds") for r in rows]
            )
    meta["load"] = f"{load_before} / {_load()}"
    text = markdown(meta)
    if opts.plan_ab:
        sizes = opts.plan_sizes or SIZES["transformer_grad_4_streams"]
        text += "\n" + plan_ab_table(sizes, opts.baseline) + "\n"
    print(text)
    if not opts.no_write:
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / f"compile-cpu-{meta['date']}{opts.suffix}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
