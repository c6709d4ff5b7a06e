"""Per-call host cost of a pytree argument with many array leaves: ``f(params, x)`` where
``params`` is a dict of N small float32 arrays (the shape of a model's weights) and ``f`` reads
two of them, so the time is argument handling, not arithmetic.

Contenders, interleaved (bench/common.py): gpugraph jit (NumPy backend), jax.jit with the
same dict of NumPy arrays, jax.jit with a dict of jax arrays (its best case), and NumPy eager
(the floor: no argument handling at all). Per-leaf cost = (time at N - time at 2) / (N - 2).

    python bench/bench_dispatch_leaves.py [--leaves 2,250,1000] [--rounds 15] [--name ...]
writes bench/results/<name>-cpu-<date>.{md,json}
"""

from __future__ import annotations

import argparse

import numpy as np
from common import gg, interleaved, table, write


def fn(p, x):
    return x * p["layer0000.w"] + p["layer0001.w"]


def contenders(n: int) -> dict:
    import jax

    rng = np.random.default_rng(0)
    # insertion order = sorted order here; shufflenet's is not (bench_onnx covers that case)
    params = {f"layer{i:04d}.w": rng.standard_normal(4).astype(np.float32) for i in range(n)}
    x = rng.standard_normal(4).astype(np.float32)
    g = gg.jit(fn, backend="numpy")
    j = jax.jit(fn)
    jparams = jax.tree_util.tree_map(jax.numpy.asarray, params)
    jx = jax.numpy.asarray(x)
    return {
        "gpugraph": lambda: g(params, x),
        "jax.jit (NumPy leaves)": lambda: j(params, x).block_until_ready(),
        "jax.jit (jax leaves)": lambda: j(jparams, jx).block_until_ready(),
        "NumPy eager": lambda: fn(params, x),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--leaves", default="2,250,1000")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--inner", type=int, default=200)
    ap.add_argument("--name", default="dispatch-leaves")
    a = ap.parse_args()
    rows, per = [], {}
    for n in [int(s) for s in a.leaves.split(",")]:
        med = interleaved(contenders(n), a.rounds, a.inner)
        for k, t in med.items():
            per.setdefault(k, {})[n] = t
            rows.append(
                {
                    "leaves": n,
                    "contender": k,
                    "us/call": t * 1e6,
                    "vs gpugraph": t / med["gpugraph"],
                }
            )
    counts = sorted({r["leaves"] for r in rows})
    if len(counts) > 1:
        lo, hi = counts[0], counts[-1]
        for k, ts in per.items():
            rows.append(
                {
                    "leaves": f"per leaf ({lo}->{hi})",
                    "contender": k,
                    "us/call": (ts[hi] - ts[lo]) / (hi - lo) * 1e6,
                }
            )
    cols = ["leaves", "contender", "us/call", "vs gpugraph"]
    print(table(rows, cols))
    note = (
        f"f(params, x) with params a dict of N float32[4] arrays; medians of {a.rounds} "
        f"interleaved rounds of {a.inner} calls; 'vs gpugraph' = contender time / gpugraph time "
        "(> 1: gpugraph faster)."
    )
    print(write(a.name, rows, {"note": note}, cols))


if __name__ == "__main__":
    main()
