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
    date = datetime.date.today().isoformat()
    meta = {
        "date": date,
        "device": f"CPU ({platform.machine()}, {os.cpu_count()} cores, shared, loaded)",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "jax": jax_version,
        "gpugraph": gg.__version__,
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
    out = os.path.join(os.path.dirname(__file__), "results", f"autograph-cpu-{date}")
    with open(out + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(out + ".json", "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
