"""Column and full (grid) reduction groups on the native cpu backend (codegen/cpu_grid.py)
against the NumPy backend's blocked runner, jax.jit and NumPy with out=: sum(a * b, axis=0)
over (4096, 1024) float32 with a broadcast row, and sum(x * x) (full) over (2048, 2048) float32.
Interleaved rounds, medians per call (bench/common.py).

    python bench/bench_cpu_grid.py [--quick]
writes bench/results/grid-cpubackend-cpu-<date>.{md,json}
"""

from __future__ import annotations

import argparse

import numpy as np
from common import gg, interleaved, table, write


def cases():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4096, 1024)).astype(np.float32)
    b = rng.standard_normal(1024).astype(np.float32)
    x = rng.standard_normal((2048, 2048)).astype(np.float32)
    col = (lambda p, q: gg.sum(p * q, axis=0), lambda p, q: (p * q).sum(axis=0), (a, b))
    full = (lambda p: gg.sum(p * p), lambda p: (p * p).sum(), (x,))
    return {"column sum (4096x1024)": col, "full sum (2048x2048)": full}


def contenders(fn, jfn, args) -> dict:
    import jax
    import jax.numpy as jnp

    cpu = gg.jit(fn, backend="cpu")
    ref = gg.jit(fn, backend="numpy")
    jitted = jax.jit(jfn)
    jargs = [jnp.asarray(a) for a in args]
    tmp = np.empty(args[0].shape, np.float32)
    out = np.empty(args[0].shape[1:] or (), np.float32)

    def numpy_out():
        np.multiply(args[0], args[-1], out=tmp)
        return np.sum(tmp, axis=0 if tmp.ndim == 2 else None, out=out)

    np.testing.assert_allclose(cpu(*args), ref(*args), rtol=1e-4)
    return {
        "gpugraph backend=cpu": lambda: cpu(*args),
        "gpugraph backend=numpy": lambda: ref(*args),
        "jax.jit": lambda: jitted(*jargs).block_until_ready(),
        "numpy out=": numpy_out,
    }


def run(quick: bool) -> list[dict]:
    rows = []
    rounds = 5 if quick else 15
    for name, (fn, jfn, args) in cases().items():
        med = interleaved(contenders(fn, jfn, args), rounds)
        for impl, t in med.items():
            rows.append(
                {
                    "case": name,
                    "impl": impl,
                    "ms": t * 1e3,
                    "over_jax_jit": t / med["jax.jit"],
                    "over_numpy_backend": t / med["gpugraph backend=numpy"],
                }
            )
    return rows


COLUMNS = ["case", "impl", "ms", "over_jax_jit", "over_numpy_backend"]

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    rows = run(args.quick)
    print(table(rows, COLUMNS))
    note = "Per call, medians of interleaved rounds; ratios < 1: faster than that peer."
    print(write("grid-cpubackend", rows, {"note": note, "quick": args.quick}, COLUMNS))
