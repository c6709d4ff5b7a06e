"""What source conversion costs: first-call (trace + compile) time of gg.jit with autograph on
and off, the converted program against the same program written with explicit gg ops, and
jax.jit (jax.lax.cond / while_loop) as the peer; steady per-call time of each.

Run: python3 bench/bench_autograph.py  (writes bench/results/autograph-cpu-<date>.{md,json})
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import interleaved, load_average  # noqa: E402

import gpugraph as gg  # noqa: E402


def converted(x):
    steps = 0
    while x.sum() < 100:
        x = x * 1.5 + 1.0
        steps += 1
    if x.max() > 200:
        y = x * 0.5
    else:
        y = x - 1.0
    return y, steps


def explicit(x):
    steps, x = gg.while_loop(
        lambda c: c[1].sum() < 100, lambda c: (c[0] + 1, c[1] * 1.5 + 1.0), (0, x)
    )
    y = gg.cond(x.max() > 200, lambda a: a * 0.5, lambda a: a - 1.0, x)
    return y, steps


def range_break(x):  # a traced break in a Python range: the rest becomes one while_loop
    total = x[0] * 0.0
    for k in range(32):
        if total > 40:
            break
        total = total + x[k]
    return total


def straight(x):  # no control flow: what conversion alone adds to the first call
    return gg.tanh(x * 2.0 + 1.0).sum()


def first_call(make, x, reps=7):
    times = []
    for _ in range(reps):
        f = make()
        t0 = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_call(f, x, reps=300):
    f(x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    x = np.full(256, 0.5, np.float32)
    rows = []

    def fresh(fn, **kw):
        def make():
            gg.autograph._CACHE.clear()  # convert afresh: the cost a new program pays once
            return gg.jit(fn, backend="numpy", **kw)

        return make

    for name, make in [
        ("straight, autograph=True", fresh(straight)),
        ("straight, autograph=False", fresh(straight, autograph=False)),
        ("converted while+if", fresh(converted)),
        ("explicit gg.while_loop+gg.cond", fresh(explicit, autograph=False)),
    ]:
        rows.append((name, first_call(make, x), per_call(make(), x)))
    try:
        import jax
        import jax.numpy as jnp

        def jx(x):
            steps, x = jax.lax.while_loop(
                lambda c: c[1].sum() < 100, lambda c: (c[0] + 1, c[1] * 1.5 + 1.0), (0, x)
            )
            y = jax.lax.cond(x.max() > 200, lambda a: a * 0.5, lambda a: a - 1.0, x)
            return y, steps

        xj = jnp.asarray(x)
        jf = jax.jit(jx)
        rows.append(
            (
                "jax.jit lax.while_loop+lax.cond",
                first_call(lambda: jax.jit(lambda v: jx(v)), xj),  # a new function: retrace
                per_call(lambda v: jax.block_until_ready(jf(v)), xj),
            )
        )
        jax_version = jax.__version__
    except ImportError:
        jax_version = "not installed"
    break_rows = _range_break_rows()
    date = datetime.date.today().isoformat()
    meta = {
        "date": date,
        "device": f"CPU ({platform.machine()}, {os.cpu_count()} cores, shared, loaded)",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "jax": jax_version,
        "gpugraph": gg.__version__,
        "load average": load_average(),
    }
    base = dict((r[0], r) for r in rows)
    ref = base["explicit gg.while_loop+gg.cond"]
    lines = [
        f"# autograph cost ({date})",
        "",
        ", ".join(f"{k}: {v}" for k, v in meta.items()),
        "",
        "Medians. First call = trace + convert + compile + run on a fresh gg.jit (conversion "
        "cache cleared). Ratio = time / explicit-ops gpugraph program.",
        "",
        "| program | first call (ms) | ratio | per call (us) | ratio |",
        "|---|---|---|---|---|",
    ]
    for name, fc, pc in rows:
        lines.append(
            f"| {name} | {fc * 1e3:.2f} | {fc / ref[1]:.2f} | {pc * 1e6:.1f} | {pc / ref[2]:.2f} |"
        )
    lines += [
        "",
        "A traced `break` in `for k in range(32)` (it turns traced in the first iteration): the "
        "31 iterations left as one gg.while_loop (it stops at the break), against the unrolled "
        "form (one gg.cond per iteration, what a body that needs `k` as a Python int still "
        "gets), and jax.jit of the "
        "same loop written as lax.while_loop (jax cannot convert it). Per call: interleaved "
        "rounds, median. Ratio = time / while_loop form.",
        "",
        "| program | first call (ms) | ratio | per call (us) | ratio |",
        "|---|---|---|---|---|",
    ]
    ref = break_rows[0]
    for name, fc, pc in break_rows:
        lines.append(
            f"| {name} | {fc * 1e3:.2f} | {fc / ref[1]:.2f} | {pc * 1e6:.1f} | {pc / ref[2]:.2f} |"
        )
    rows += break_rows
    out = os.path.join(os.path.dirname(__file__), "results", f"autograph-cpu-{date}")
    with open(out + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(out + ".json", "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    print("\n".join(lines))


def _range_break_rows() -> list[tuple[str, float, float]]:
    from gpugraph import autograph_loops

    x = np.full(32, 0.5, np.float32)
    keep = autograph_loops._rest_as_loop

    def fresh(old: bool):
        """A fresh jit of range_break, traced (first call, timed by the caller) under the new
        lowering or the previous one (the rest of the loop unrolled as guarded conds)."""
        gg.autograph._CACHE.clear()
        f = gg.jit(range_break, backend="numpy")

        def call(v):
            if old:
                autograph_loops._rest_as_loop = lambda *a: False
            try:
                return f(v)
            finally:
                autograph_loops._rest_as_loop = keep

        return call

    first = {"loop": first_call(lambda: fresh(False), x)}
    first["unrolled"] = first_call(lambda: fresh(True), x)
    calls = {"loop": fresh(False), "unrolled": fresh(True)}
    for f in calls.values():
        f(x)  # traced once; later calls run the compiled plan
    contenders = {k: (lambda f=f: f(x)) for k, f in calls.items()}
    names = {
        "loop": "traced break in range(32): one gg.while_loop",
        "unrolled": "traced break in range(32): one gg.cond per iteration",
    }
    try:
        import jax
        import jax.numpy as jnp

        def jx(v):
            def body(c):
                k, total = c
                return k + 1, total + v[k]

            return jax.lax.while_loop(lambda c: (c[0] < 32) & (c[1] <= 40), body, (0, v[0] * 0.0))[
                1
            ]

        xj = jnp.asarray(x)
        jf = jax.jit(jx)
        first["jax"] = first_call(lambda: jax.jit(lambda v: jx(v)), xj)
        contenders["jax"] = lambda: jax.block_until_ready(jf(xj))
        names["jax"] = "jax.jit lax.while_loop (same loop)"
    except ImportError:
        pass
    per = interleaved(contenders, rounds=200)
    return [(names[k], first[k], per[k]) for k in names]


if __name__ == "__main__":
    main()
