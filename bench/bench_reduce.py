"""Reduction fusion benchmark on the CPU: softmax and layer_norm over (8192, 4096) float32,
forward and forward+backward (the gradient of sum(f(x) * dy): the forward recomputed and the
row-wise backward, as a training step runs them).

Contenders take turns within every round, in reverse order every other round (``alternating``):
gpugraph jit on the
NumPy backend with reduction fusion (one fused_reduce group per direction) and with
``fuse=False``, NumPy eager (the same formulas, op by op), jax.jit, torch eager and
torch.compile (each where installed; a failure is listed, not hidden). Ratio = row / gpugraph
fused (above 1: gpugraph is faster).

    python bench/bench_reduce.py [--rows R] [--cols C] [--rounds K]
writes bench/results/reduce-cpu-<date>.{md,json}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table, try_torch_compile, write  # noqa: E402

import gpugraph as gg  # noqa: E402

EPS = 1e-5


def alternating(contenders: dict, rounds: int, pause: float = 0.5) -> dict[str, float]:
    """name -> median seconds per call. As common.interleaved, but every other round runs the
    contenders in reverse order, and ``pause`` seconds (untimed) separate two contenders: on
    this shared 2-core box, whoever ran right after torch's or jax's thread pools (which spin
    after their work) was measured slower, whatever it was."""
    import statistics
    import time

    for fn in contenders.values():
        fn()  # warm-up (and compilation)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    order = list(contenders)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            time.sleep(pause)
            t0 = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# ---- gpugraph ------------------------------------------------------------------------------
def gg_softmax(x):
    return gg.softmax(x)


def gg_softmax_grad(x, dy):
    return gg.grad(lambda x: gg.sum(gg.softmax(x) * dy))(x)


def gg_layer_norm(x, w, b):
    return gg.layer_norm(x, w, b, eps=EPS)


def gg_layer_norm_grad(x, w, b, dy):
    return gg.grad(lambda x, w, b: gg.sum(gg.layer_norm(x, w, b, eps=EPS) * dy), argnums=(0, 1, 2))(
        x, w, b
    )


# ---- NumPy eager: the same formulas ---------------------------------------------------------
def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_softmax_grad(x, dy):
    y = np_softmax(x)
    return y * (dy - (dy * y).sum(-1, keepdims=True))


def np_layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    d = x - mu
    rstd = 1 / np.sqrt((d * d).mean(-1, keepdims=True) + EPS)
    return d * rstd * w + b


def np_layer_norm_grad(x, w, b, dy):
    n = x.shape[-1]
    mu = x.mean(-1, keepdims=True)
    d = x - mu
    rstd = 1 / np.sqrt((d * d).mean(-1, keepdims=True) + EPS)
    xhat = d * rstd
    g = dy * w
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).sum(-1, keepdims=True) / n)
    return dx, (dy * xhat).sum(0), dy.sum(0)


# ---- peers ----------------------------------------------------------------------------------
def jax_fns():
    import jax
    import jax.numpy as jnp

    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        d = x - mu
        return d * jax.lax.rsqrt((d * d).mean(-1, keepdims=True) + EPS) * w + b

    return {
        "softmax": jax.jit(lambda x: jax.nn.softmax(x, axis=-1)),
        "softmax_grad": jax.jit(jax.grad(lambda x, dy: jnp.sum(jax.nn.softmax(x, axis=-1) * dy))),
        "layer_norm": jax.jit(ln),
        "layer_norm_grad": jax.jit(
            jax.grad(lambda x, w, b, dy: jnp.sum(ln(x, w, b) * dy), argnums=(0, 1, 2))
        ),
    }, jax


def torch_fns():
    import torch

    def sm_grad(x, dy):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad((torch.softmax(x, -1) * dy).sum(), (x,))
        return g

    def ln(x, w, b):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, EPS)

    def ln_grad(x, w, b, dy):
        x, w, b = (t.detach().requires_grad_(True) for t in (x, w, b))
        return torch.autograd.grad((ln(x, w, b) * dy).sum(), (x, w, b))

    return {
        "softmax": lambda x: torch.softmax(x, -1),
        "softmax_grad": sm_grad,
        "layer_norm": ln,
        "layer_norm_grad": ln_grad,
    }, torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=8192)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--name", default="reduce")
    p.add_argument("--suffix", default="", help="appended after the date: reduce-cpu-<date>-3")
    p.add_argument("--peers", default="jax,torch", help="comma-separated: jax, torch")
    p.add_argument("--cpu", action="store_true", help='add backend="cpu" (native row kernels)')
    a = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.rows, a.cols), dtype=np.float32)
    dy = rng.standard_normal((a.rows, a.cols), dtype=np.float32)
    w = rng.standard_normal(a.cols, dtype=np.float32)
    b = rng.standard_normal(a.cols, dtype=np.float32)
    cases = {
        "softmax": ((x,), gg_softmax, np_softmax),
        "softmax_grad": ((x, dy), gg_softmax_grad, np_softmax_grad),
        "layer_norm": ((x, w, b), gg_layer_norm, np_layer_norm),
        "layer_norm_grad": ((x, w, b, dy), gg_layer_norm_grad, np_layer_norm_grad),
    }
    notes: list[str] = []
    peers: dict[str, tuple[dict, object]] = {}
    for label, make in (("jax", jax_fns), ("torch", torch_fns)):
        if label not in a.peers.split(","):
            continue
        try:
            peers[label] = make()
        except Exception as e:
            notes.append(f"{label} absent: {type(e).__name__}: {e}")
    rows = []
    for case, (args, gg_fn, np_fn) in cases.items():
        fused = gg.jit(gg_fn, backend="numpy")
        unfused = gg.jit(gg_fn, backend="numpy", fuse=False)
        plan = fused.lower(*args)
        groups = "{}+{}".format(
            sum(n.op == "fused_reduce" for n in plan.graph.nodes),
            sum(n.op == "fused_grid_reduce" for n in plan.graph.nodes),
        )
        notes.append(f"{case}: fused plan {[n.op for n in plan.graph.nodes if n.op != 'constant']}")
        contenders = {
            "gpugraph fused": lambda f=fused, args=args: f(*args),
            "gpugraph fuse=False": lambda f=unfused, args=args: f(*args),
            "numpy eager": lambda f=np_fn, args=args: f(*args),
        }
        want = np_fn(*args)
        got = fused(*args)
        for g, wv in zip(
            got if isinstance(got, tuple) else (got,),
            (want if isinstance(want, tuple) else (want,)),
        ):
            np.testing.assert_allclose(g, wv, rtol=2e-3, atol=2e-3)  # same function
        if case == "layer_norm_grad":  # the dw/db grid group against the earlier plan
            from gpugraph.passes import fuse_reduce_grid

            fuse_reduce_grid.RECOMPUTE = False  # read when the plan is made (the first call)
            before = gg.jit(gg_fn, backend="numpy")
            before(*args)
            fuse_reduce_grid.RECOMPUTE = True
            ops = [n.op for n in before.lower(*args).graph.nodes if n.op != "constant"]
            notes.append(f"{case}: without the recomputing grid group the plan is {ops}")
            contenders["gpugraph fused, no recompute"] = lambda f=before, args=args: f(*args)
        if a.cpu:  # the native backend: one row kernel per fused_reduce group
            native = gg.jit(gg_fn, backend="cpu")
            cplan = native.lower(*args)
            got = native(*args)
            for g, wv in zip(
                got if isinstance(got, tuple) else (got,),
                (want if isinstance(want, tuple) else (want,)),
            ):
                np.testing.assert_allclose(g, wv, rtol=2e-3, atol=2e-3)
            kernels = [ln for ln in cplan.executable.launches if hasattr(ln.runner, "cpu_kernel")]
            notes.append(f"{case}: backend='cpu' plan runs {len(kernels)} native kernel(s)")
            contenders["gpugraph cpu"] = lambda f=native, args=args: f(*args)
        if "jax" in peers:
            fns, jax = peers["jax"]
            jargs = [jax.device_put(t) for t in args]
            f = fns[case]
            contenders["jax.jit"] = lambda f=f, jargs=jargs, jax=jax: jax.block_until_ready(
                f(*jargs)
            )
        if "torch" in peers:
            fns, torch = peers["torch"]
            targs = [torch.from_numpy(t) for t in args]
            f = fns[case]
            contenders["torch eager"] = lambda f=f, targs=targs: f(*targs)
            compiled = try_torch_compile(f, targs, case, notes)
            if compiled is not None:
                contenders["torch.compile"] = lambda c=compiled, targs=targs: c(*targs)
        times = alternating(contenders, a.rounds)
        base = times["gpugraph fused"]
        for name, t in times.items():
            rows.append(
                {
                    "case": case,
                    "impl": name,
                    "ms": t * 1e3,
                    "ratio_vs_gpugraph_fused": t / base,
                    "row+grid_groups": groups if name == "gpugraph fused" else "",
                }
            )
        print(table([r for r in rows if r["case"] == case], list(rows[0])), flush=True)
    note = (
        f"Reduction fusion, ({a.rows}, {a.cols}) float32, medians of {a.rounds} rounds (one "
        "call each; the contenders take turns, in reverse order every other round, 0.5 s "
        "apart). ratio = impl / gpugraph fused (above 1: gpugraph is faster). "
        "gpugraph's NumPy backend runs on one thread; jax and torch use the machine's cores. "
        "_grad cases: the gradient of sum(f(x) * dy) (forward recomputed plus backward; "
        "layer_norm: dx, dw, db). row+grid_groups: fused_reduce and fused_grid_reduce nodes "
        "of the fused plan.\n\n" + "\n".join(f"- {n}" for n in notes)
    )
    cols = ["case", "impl", "ms", "ratio_vs_gpugraph_fused", "row+grid_groups"]
    # common.write names <name>-cpu-<date>: a rerun the same day writes under a temporary
    # name (the day's earlier files stay) and moves to <name>-cpu-<date>-<suffix>
    tmp = f"{a.name}_partial" if a.suffix else a.name
    path = write(tmp, rows, {"note": note, "shape": [a.rows, a.cols]}, cols)
    if a.suffix:
        stem = path.stem.replace(tmp, a.name, 1) + f"-{a.suffix}"
        for ext in (".md", ".json"):
            src = path.with_suffix(ext)
            src.with_name(stem + ext).write_text(src.read_text().replace(tmp, a.name))
            src.unlink()
        path = path.with_name(stem + ".md")
    print(path)


if __name__ == "__main__":
    main()
