"""Per-call host cost of gpugraph's call paths against jax.jit, on a 2-op graph of (8,) float32
arrays (the arithmetic is negligible; the time is dispatch):

- ``jit(f)(x, y)``: the signature fast path;
- ``jit(f).lower(x, y)(x, y)``: calling the lowered entry;
- ``jit(f)(x=x, y=y)``: keywords naming positional parameters (bound, then the fast path);
- ``jit(f)(P(x, y))`` with P a NamedTuple: the full path (flatten, types, ``check_args``);
- the full path with a NamedTuple of N float32[4] leaves, for its per-leaf cost.

Interleaved rounds with jax.jit on the same NumPy arrays (bench/common.py); ratios are
contender / gpugraph's fast path or, for the leaf rows, jax.jit / gpugraph.

    python bench/bench_dispatch_paths.py [--rounds 15] [--leaves 2,500] [--name ...]
writes bench/results/<name>-cpu-<date>.{md,json}
"""

from __future__ import annotations

import argparse
from collections import namedtuple

import numpy as np
from common import gg, interleaved, table, write


def two_op(x, y):
    return x * y + x


def leafy(p, x):
    return x * p.l0000 + p.l0001


def two_op_tuple(p):
    return p.x * p.y + p.x


def small() -> dict:
    import jax

    x, y = np.ones(8, np.float32), np.full(8, 2, np.float32)
    g = gg.jit(two_op, backend="numpy")
    c = g.lower(x, y)
    t = gg.jit(two_op_tuple, backend="numpy")
    pair = namedtuple("Pair", "x y")(x, y)
    j = jax.jit(two_op)
    jt = jax.jit(two_op_tuple)
    return {
        "gpugraph jit (fast path)": lambda: g(x, y),
        "gpugraph lowered": lambda: c(x, y),
        "gpugraph keywords": lambda: g(x=x, y=y),
        "gpugraph NamedTuple (full path)": lambda: t(pair),
        "jax.jit (NumPy args)": lambda: j(x, y).block_until_ready(),
        "jax.jit keywords": lambda: j(x=x, y=y).block_until_ready(),
        "jax.jit NamedTuple": lambda: jt(pair).block_until_ready(),
    }


def leaves(n: int) -> dict:
    import jax

    rng = np.random.default_rng(0)
    fields = [f"l{i:04d}" for i in range(n)]
    p = namedtuple("Params", fields)(*(rng.standard_normal(4).astype(np.float32) for _ in fields))
    x = rng.standard_normal(4).astype(np.float32)
    g = gg.jit(leafy, backend="numpy")
    j = jax.jit(leafy)
    return {
        "gpugraph NamedTuple (full path)": lambda: g(p, x),
        "jax.jit NamedTuple (NumPy leaves)": lambda: j(p, x).block_until_ready(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--inner", type=int, default=200)
    ap.add_argument("--leaves", default="2,500")
    ap.add_argument("--name", default="dispatch-paths")
    a = ap.parse_args()
    rows = []
    med = interleaved(small(), a.rounds, a.inner)
    ref = med["gpugraph jit (fast path)"]
    for k, t in med.items():
        rows.append({"case": "2-op (8,)", "contender": k, "us/call": t * 1e6, "ratio": t / ref})
    per: dict[str, dict[int, float]] = {}
    counts = [int(s) for s in a.leaves.split(",")]
    for n in counts:
        m = interleaved(leaves(n), a.rounds, max(1, a.inner // max(1, n // 50)))
        for k, t in m.items():
            per.setdefault(k, {})[n] = t
            ratio = m["jax.jit NamedTuple (NumPy leaves)"] / m["gpugraph NamedTuple (full path)"]
            rows.append({"case": f"{n} leaves", "contender": k, "us/call": t * 1e6})
        rows[-1]["ratio"] = ratio
    lo, hi = counts[0], counts[-1]
    for k, ts in per.items():
        rows.append(
            {"case": "per leaf", "contender": k, "us/call": (ts[hi] - ts[lo]) / (hi - lo) * 1e6}
        )
    cols = ["case", "contender", "us/call", "ratio"]
    print(table(rows, cols))
    note = (
        f"medians of {a.rounds} interleaved rounds; 2-op rows: ratio = time / gpugraph fast "
        "path time; leaf rows: ratio (on the jax row) = jax.jit time / gpugraph time (> 1: "
        "gpugraph faster); per leaf = (time at max N - time at min N) / (N difference)."
    )
    print(write(a.name, rows, {"note": note}, cols))


if __name__ == "__main__":
    main()
