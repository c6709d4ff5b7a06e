"""Control-flow benchmark (CPU): loops inside the graph against the same loop in Python.

1. fori_loop: 2,000 iterations of a 6-op body (multiply, add, tanh, multiply, multiply, add)
   on a float32 64-vector. gpugraph (jit: the native cpu backend, where the whole loop is one
   generated C++ function, and the same backend with the loop host-driven; the numpy backend,
   fused body and unfused) vs the same
   loop in Python over NumPy (plain, and with preallocated ``out=`` buffers) vs
   ``jax.lax.fori_loop`` under ``jax.jit``.
2. scan RNN, forward + backward: an Elman cell ``h = tanh(h @ W + x_t)`` (hidden 64, T=200,
   float32), loss = sum(h_T^2) + sum over t of sum(h_t) , gradient with respect to W.
   gpugraph ``jit(value_and_grad)`` of ``gg.scan`` vs hand-written BPTT in Python over NumPy vs
   ``jax.jit(jax.value_and_grad)`` of ``jax.lax.scan``.

3. while_loop whose predicate is a grid reduction group: ``while (v * v).sum() < k:
   v = v * 0.999 + 0.01`` on a float32 16x64 array, 1,001 iterations; gpugraph (cpu backend
   native and host-driven, numpy backend) vs the Python loop over NumPy vs
   ``jax.lax.while_loop`` under ``jax.jit``.

Reported: median wall time of one call over repeats (after warm-up; the implementations are
timed interleaved, round by round, so load on a shared machine hits them alike), in
microseconds per loop iteration; ratio = peer / gpugraph (> 1: gpugraph is faster).

    python bench/bench_control_flow.py [--repeats K] [--tag NAME]
writes bench/results/control-flow-cpu-<date>[-NAME].{md,json}
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpugraph as gg  # noqa: E402
from bench.common import load_average  # noqa: E402
from gpugraph.backends import blas, cpu_loop_runner  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
N_ITER, N_VEC = 2000, 64
T, H = 200, 64


def medians_us(fns: dict, repeats: int) -> dict:
    """(median, fastest) µs of one call of each function, interleaved: every round times each
    function once, so load from other processes on the shared machine hits all of them alike."""
    for fn in fns.values():
        fn()
        fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(ts) * 1e6, min(ts) * 1e6) for name, ts in times.items()}


# ---- 1. fori_loop --------------------------------------------------------------------------
def gg_fori(x, a, b):
    return gg.fori_loop(0, N_ITER, lambda i, v: gg.tanh(v * a + b) * 0.5 + v * 0.25, x)


def np_fori(x, a, b):
    v = x
    for _ in range(N_ITER):
        v = np.tanh(v * a + b) * np.float32(0.5) + v * np.float32(0.25)
    return v


def np_fori_out(x, a, b):
    v, t, u = x.copy(), np.empty_like(x), np.empty_like(x)
    half, quarter = np.float32(0.5), np.float32(0.25)
    for _ in range(N_ITER):
        np.multiply(v, a, out=t)
        np.add(t, b, out=t)
        np.tanh(t, out=t)
        np.multiply(t, half, out=t)
        np.multiply(v, quarter, out=u)
        np.add(t, u, out=v)
    return v


# ---- 2. scan RNN forward + backward --------------------------------------------------------
def gg_rnn_loss(w, xs):
    def cell(h, x):
        h = gg.tanh(h @ w + x)
        return h, h.sum()

    h, ys = gg.scan(cell, gg.zeros((H,)), xs)
    return (h * h).sum() + ys.sum()


def np_rnn_value_and_grad(w, xs):
    hs = [np.zeros(H, np.float32)]
    for t in range(T):
        hs.append(np.tanh(hs[-1] @ w + xs[t]))
    h = hs[-1]
    loss = (h * h).sum() + sum(x.sum() for x in hs[1:])
    gw = np.zeros_like(w)
    gh = 2 * h
    for t in reversed(range(T)):
        gh = gh + 1.0  # d(sum h_t)/d h_t
        gz = gh * (1 - hs[t + 1] ** 2)
        gw += np.outer(hs[t], gz)
        gh = gz @ w.T
    return loss, gw


# ---- 3. while_loop on a grid reduction ---------------------------------------------------------
W_ROWS, W_ITER = 16, 1000  # while (v * v).sum() < k on f32[16, 64]: a grid-reduction group


def gg_while(v, k):
    return gg.while_loop(
        lambda u: (u * u).sum() < k, lambda u: u * 0.999 + 0.01, v, max_steps=10**6
    )


def np_while(v, k):
    while (v * v).sum() < k:
        v = v * np.float32(0.999) + np.float32(0.01)
    return v


def one_thread(fn, *args):
    """``fn`` with BLAS on one thread (what gpugraph's policy picks for these small GEMMs;
    under load, BLAS threads that spin-wait on a busy core cost more than they save)."""
    caller = blas.get_threads()
    blas.set_threads(1)
    try:
        return fn(*args)
    finally:
        blas.set_threads(caller)


def host_driven(make, *args):
    """A cpu-backend function whose loops stay host-driven (GPUGRAPH_CPU_LOOPS=host while it
    is compiled; the runners read it then)."""
    old = os.environ.get(cpu_loop_runner.LOOPS_ENV)
    os.environ[cpu_loop_runner.LOOPS_ENV] = "host"
    try:
        f = make()
        f(*args)
        assert "native loop: compiled" not in f.lower(*args).explain()
        return f
    finally:
        if old is None:
            del os.environ[cpu_loop_runner.LOOPS_ENV]
        else:
            os.environ[cpu_loop_runner.LOOPS_ENV] = old


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--tag", default="", help="suffix of the results file names")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(N_VEC).astype(np.float32)
    a, b = np.float32(0.9), np.float32(0.1)
    w = (rng.standard_normal((H, H)) * 0.1).astype(np.float32)
    xs = (rng.standard_normal((T, H)) * 0.5).astype(np.float32)
    rows = []

    native = gg.jit(gg_fori, backend="cpu")
    a0, b0 = np.array(a), np.array(b)
    host = host_driven(lambda: gg.jit(gg_fori, backend="cpu"), x, a, b)
    fused = gg.jit(gg_fori, backend="numpy")
    unfused = gg.jit(gg_fori, backend="numpy", fuse=False)
    ref = np_fori(x, a, b)
    assert "native loop: compiled" in native.lower(x, a, b).explain()
    for f in (native, host, fused, unfused, np_fori_out):
        np.testing.assert_allclose(f(x, a, b), ref, rtol=1e-5, atol=1e-6)
    fori = {
        "gpugraph jit, cpu backend (native loop)": lambda: native(x, a, b),
        "gpugraph jit, cpu backend (native loop), a, b as 0-d arrays": lambda: native(x, a0, b0),
        "gpugraph jit, cpu backend (host-driven loop)": lambda: host(x, a, b),
        "gpugraph jit, cpu backend (host-driven loop), a, b as 0-d arrays": lambda: host(x, a0, b0),
        "gpugraph jit, numpy backend (fused body)": lambda: fused(x, a, b),
        "gpugraph jit, numpy backend (unfused)": lambda: unfused(x, a, b),
        "Python loop over NumPy": lambda: np_fori(x, a, b),
        "Python loop over NumPy, out=": lambda: np_fori_out(x, a, b),
    }
    vg_native = gg.jit(gg.value_and_grad(gg_rnn_loss), backend="cpu")
    vg_host = host_driven(lambda: gg.jit(gg.value_and_grad(gg_rnn_loss), backend="cpu"), w, xs)
    vg = gg.jit(gg.value_and_grad(gg_rnn_loss), backend="numpy")
    vg_unfused = gg.jit(gg.value_and_grad(gg_rnn_loss), backend="numpy", fuse=False)
    l_ref, g_ref = np_rnn_value_and_grad(w, xs)
    assert vg_native.lower(w, xs).explain().count("native loop: compiled") == 2
    for f in (vg_native, vg_host, vg, vg_unfused):
        l_gg, g_gg = f(w, xs)
        np.testing.assert_allclose(l_gg, l_ref, rtol=1e-4)
        np.testing.assert_allclose(g_gg, g_ref, rtol=1e-3, atol=1e-4)
    rnn = {
        "gpugraph jit(value_and_grad), cpu backend (native loops)": lambda: vg_native(w, xs),
        "gpugraph jit(value_and_grad), cpu backend (host-driven)": lambda: vg_host(w, xs),
        "gpugraph jit(value_and_grad), numpy backend": lambda: vg(w, xs),
        "gpugraph jit(value_and_grad), numpy backend, unfused": lambda: vg_unfused(w, xs),
        "Python BPTT over NumPy": lambda: np_rnn_value_and_grad(w, xs),
        "Python BPTT over NumPy, 1 BLAS thread": lambda: one_thread(np_rnn_value_and_grad, w, xs),
    }
    v0 = np.full((W_ROWS, N_VEC), 0.5, np.float32) + x * 0.01
    trips, vk = 0, v0.astype(np.float64)  # k half a step past the W_ITER-th sum: rounding of
    for _ in range(W_ITER):  # the sums cannot move the exit by an iteration
        vk = vk * 0.999 + 0.01
    after = vk * 0.999 + 0.01
    k = np.float32(((vk * vk).sum() + (after * after).sum()) / 2)
    w_native = gg.jit(gg_while, backend="cpu")
    w_host = host_driven(lambda: gg.jit(gg_while, backend="cpu"), v0, k)
    w_np = gg.jit(gg_while, backend="numpy")
    w_ref = np_while(v0, k)
    lowered = w_native.lower(v0, k)
    lowered(v0, k)
    assert "native loop: compiled" in lowered.explain(), lowered.explain()
    assert "fused_grid_reduce" in lowered.explain(), lowered.explain()
    assert f"last run: {W_ITER + 1} iterations" in lowered.explain(), lowered.explain()
    for f in (w_native, w_host, w_np):
        np.testing.assert_allclose(f(v0, k), w_ref, rtol=1e-4)
    trips = W_ITER + 1
    grid = {
        "gpugraph jit, cpu backend (native loop)": lambda: w_native(v0, k),
        "gpugraph jit, cpu backend (host-driven loop)": lambda: w_host(v0, k),
        "gpugraph jit, numpy backend": lambda: w_np(v0, k),
        "Python loop over NumPy": lambda: np_while(v0, k),
    }
    versions = {
        "numpy": np.__version__,
        "gpugraph": gg.__version__,
        "python": platform.python_version(),
    }
    try:
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_platforms", "cpu")
        versions["jax"] = jax.__version__

        @jax.jit
        def jx_fori(x, a, b):
            return jax.lax.fori_loop(
                0, N_ITER, lambda i, v: jnp.tanh(v * a + b) * 0.5 + v * 0.25, x
            )

        def jx_loss(w, xs):
            def cell(h, x):
                h = jnp.tanh(h @ w + x)
                return h, h.sum()

            h, ys = jax.lax.scan(cell, jnp.zeros(H, jnp.float32), xs)
            return (h * h).sum() + ys.sum()

        jx_vg = jax.jit(jax.value_and_grad(jx_loss))
        np.testing.assert_allclose(np.asarray(jx_fori(x, a, b)), ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(jx_vg(w, xs)[1]), g_ref, rtol=1e-3, atol=1e-4)
        jx_while = jax.jit(
            lambda v, k: jax.lax.while_loop(
                lambda u: (u * u).sum() < k, lambda u: u * 0.999 + 0.01, v
            )
        )
        np.testing.assert_allclose(np.asarray(jx_while(v0, k)), w_ref, rtol=1e-4)
        grid["jax.jit(lax.while_loop)"] = lambda: jx_while(v0, k).block_until_ready()
        fori["jax.jit(lax.fori_loop)"] = lambda: jx_fori(x, a, b).block_until_ready()
        rnn["jax.jit(value_and_grad(lax.scan))"] = lambda: jax.block_until_ready(jx_vg(w, xs))
    except ImportError as e:
        print(f"jax not available: {e}")
    load_before = load_average()
    fori, rnn = medians_us(fori, args.repeats), medians_us(rnn, args.repeats)
    grid = medians_us(grid, args.repeats)
    load = f"{load_before} before, {load_average()} after (1/5/15 min, 2 cores)"

    for name, table, n, base in (
        (
            f"fori_loop: {N_ITER} iterations, 6-op body, f32[{N_VEC}]",
            fori,
            N_ITER,
            "gpugraph jit, cpu backend (native loop)",
        ),
        (
            f"scan RNN forward+backward: T={T}, hidden {H}, f32",
            rnn,
            T,
            "gpugraph jit(value_and_grad), cpu backend (native loops)",
        ),
        (
            f"while_loop: (u * u).sum() < k on f32[{W_ROWS},{N_VEC}], {trips} iterations",
            grid,
            trips,
            "gpugraph jit, cpu backend (native loop)",
        ),
    ):
        for peer, (us, best) in table.items():
            rows.append(
                {
                    "bench": name,
                    "impl": peer,
                    "us_per_call": round(us, 1),
                    "us_per_iter": round(us / n, 3),
                    "min_us_per_iter": round(best / n, 3),
                    "peer_over_gpugraph": round(us / table[base][0], 2),
                    "min_peer_over_gpugraph": round(best / table[base][1], 2),
                }
            )
    date = datetime.date.today().isoformat()
    meta = {
        "date": date,
        "device": f"CPU ({platform.machine()}, {platform.processor() or 'unknown'})",
        "backend": "cpu (native loops; and host-driven) and numpy",
        "repeats": args.repeats,
        "versions": versions,
        "load_average": load,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"control-flow-cpu-{date}{'-' + args.tag if args.tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# Control-flow benchmark (CPU)",
        "",
        f"{meta['device']}, {date}; versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"Median of {args.repeats} calls after 2 warm-up calls, implementations interleaved "
        "(each round times each once). ratio = peer time / gpugraph time (> 1: gpugraph faster); "
        "the last two columns use each implementation's fastest call (less sensitive to load). "
        "The fori_loop's a and b are NumPy float32 scalars for every implementation; the "
        "rows 'a, b as 0-d arrays' show gg.jit's dispatch without its NumPy-scalar path "
        "(jax.jit is given the scalars).",
        f"Load average: {load}.",
        "",
        "| benchmark | implementation | µs per call | µs per iteration | ratio "
        "| fastest call: µs per iteration | ratio of fastest |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['bench']} | {r['impl']} | {r['us_per_call']} | {r['us_per_iter']} "
            f"| {r['peer_over_gpugraph']} | {r['min_us_per_iter']} "
            f"| {r['min_peer_over_gpugraph']} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
