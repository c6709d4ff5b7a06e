"""Per-call host cost: a 2-op and a 50-op elementwise graph on (8,) float32 arrays, where the
arithmetic is negligible and the time is dispatch.

Contenders: gpugraph jit on NumPy (fused, and fuse=False), on the native cpu backend
(backend="cpu": the fused group as one compiled kernel), jax.jit (on jax arrays, and on
NumPy arrays as gpugraph gets them), torch eager, torch.compile (CPU), numexpr (2-op only: one
expression string), NumPy eager, NumPy with preallocated out= buffers (the floor of any
NumPy-dispatching executor). Interleaved rounds, medians per call (bench/common.py).

    python bench/bench_dispatch.py [--quick] [--name dispatch]
writes bench/results/<name>-cpu-<date>.{md,json}
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from common import gg, interleaved, table, try_torch_compile, write

# The cpu rows measure native kernels: compile every fused group, whatever the backend's
# default policy leaves to NumPy (docs/backends.md, GPUGRAPH_CPU_NATIVE).
os.environ.setdefault("GPUGRAPH_CPU_NATIVE", "all")

N = 8


def two_op(x, y):
    return x * y + x


def fifty_op(x, y, sin):
    t = x
    for i in range(25):
        t = t * y
        t = sin(t) if i % 5 == 0 else t + x
    return t


def two_numpy_out(x, y, bufs):
    """two_op in NumPy with every result written into a preallocated buffer."""
    t = bufs[0]
    np.multiply(x, y, out=t)
    return np.add(t, x, out=t)


def fifty_numpy_out(x, y, bufs):
    t = bufs[0]
    for i in range(25):
        np.multiply(x if i == 0 else t, y, out=t)
        if i % 5 == 0:
            np.sin(t, out=t)
        else:
            np.add(t, x, out=t)
    return t


# graph -> (gpugraph function, NumPy eager function, NumPy out= function)
GRAPHS = {
    "2-op": (two_op, two_op, two_numpy_out),
    "50-op": (
        lambda x, y: fifty_op(x, y, gg.sin),
        lambda x, y: fifty_op(x, y, np.sin),
        fifty_numpy_out,
    ),
}


def contenders(graph: str, notes: list[str]) -> dict:
    import jax
    import jax.numpy as jnp
    import torch

    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal(N).astype(np.float32) for _ in range(2))
    gg_fn, np_fn, out_fn = GRAPHS[graph]
    if graph == "2-op":
        jax_fn = torch_fn = two_op
    else:

        def jax_fn(a, b):
            return fifty_op(a, b, jnp.sin)

        def torch_fn(a, b):
            return fifty_op(a, b, torch.sin)

    fused = gg.jit(gg_fn, backend="numpy")
    unfused = gg.jit(gg_fn, backend="numpy", fuse=False)
    native = gg.jit(gg_fn, backend="cpu")
    native_unfused = gg.jit(gg_fn, backend="cpu", fuse=False)  # one-op native kernels
    jitted = jax.jit(jax_fn)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    bufs = (np.empty_like(x),)
    ref = np_fn(x, y)
    for name, got in [
        ("fused", fused(x, y)),
        ("unfused", unfused(x, y)),
        ("cpu", native(x, y)),
        ("cpu unfused", native_unfused(x, y)),
    ]:
        np.testing.assert_allclose(got, ref, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(out_fn(x, y, bufs), ref, rtol=1e-5)
    runs = {
        "gpugraph jit (fused)": lambda: fused(x, y),
        "gpugraph jit (fuse=False)": lambda: unfused(x, y),
        "gpugraph jit (backend=cpu)": lambda: native(x, y),
        "gpugraph jit (backend=cpu, fuse=False)": lambda: native_unfused(x, y),
        "jax.jit (jax arrays)": lambda: jitted(xj, yj).block_until_ready(),
        "jax.jit (numpy arrays)": lambda: jitted(x, y).block_until_ready(),
        "torch eager": lambda: torch_fn(xt, yt),
        "numpy eager": lambda: np_fn(x, y),
        "numpy out=": lambda: out_fn(x, y, bufs),
    }
    tc = try_torch_compile(torch_fn, (xt, yt), graph, notes)
    if tc is not None:
        runs["torch.compile"] = lambda: tc(xt, yt)
    if graph == "2-op":
        try:
            import numexpr as ne

            names = {"x": x, "y": y}
            ne.evaluate("x * y + x", local_dict=names)  # parsed once, cached by numexpr
            runs["numexpr evaluate"] = lambda: ne.evaluate("x * y + x", local_dict=names)
        except Exception as e:
            notes.append(f"numexpr skipped: {type(e).__name__}: {e}")
    return runs


def run(quick: bool = False) -> list[dict]:
    notes: list[str] = []
    rows = []
    rounds, inner = (15, 100) if quick else (41, 300)
    for graph in GRAPHS:
        med = interleaved(contenders(graph, notes), rounds, inner)
        base = med["gpugraph jit (fused)"]
        jax_t = med["jax.jit (jax arrays)"]
        for name, t in med.items():
            rows.append(
                {
                    "graph": graph,
                    "impl": name,
                    "us_per_call": t * 1e6,
                    "vs_gpugraph_fused": t / base,
                    "gpugraph_fused_over_this": base / t,
                    "over_jax_jit": t / jax_t,
                }
            )
    run.notes = notes  # type: ignore[attr-defined]
    return rows


COLUMNS = ["graph", "impl", "us_per_call", "vs_gpugraph_fused", "over_jax_jit"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--name", default="dispatch", help="results file name prefix")
    args = p.parse_args(argv)
    rows = run(args.quick)
    notes = run.notes  # type: ignore[attr-defined]
    print(table(rows, COLUMNS))
    for n in notes:
        print("note:", n)
    note = (
        f"Per-call host cost on ({N},) float32 arrays; interleaved rounds, medians. "
        "vs_gpugraph_fused = this row / gpugraph fused (> 1: gpugraph is faster); "
        "over_jax_jit = this row / jax.jit on jax arrays (< 1: faster than jax.jit). "
        + " ".join(notes)
    )
    path = write(args.name, rows, {"note": note, "quick": args.quick}, COLUMNS)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
