"""Memory planner benchmark: an MLP training step and a transformer block (forward and
backward) at batch 1 and 64, planned under the pipeline's order and the memory-aware order,
with the default multi-stream schedule and with one stream.

Records naive_bytes/arena_bytes and arena_bytes/lower_bound_bytes for every graph, the
tracemalloc peak of one NumPy call, and (where a GPU, CuPy and PyTorch are available) the
device peak against torch.cuda.max_memory_allocated for the same step.

    python bench/bench_memory.py            # writes bench/results/memory-<device>-<date>.{md,json}
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gpugraph as gg  # noqa: E402
from gpugraph.memory import plan_memory, reorder_for_memory  # noqa: E402
from gpugraph.schedule import schedule  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NOTES = [
    "Notes: sizes are 256-byte aligned. `bound` is the largest sum of live aligned buffer bytes",
    "at a step of the order (one stream), or the heaviest conflict clique found (several",
    "streams, where concurrent values must coexist); no plan can go below it. `in place` counts",
    "outputs written over a dying input (fused nodes included, see docs/memory.md).",
    "The NumPy peak is what one call allocates beyond the preallocated arena and inputs: the",
    "fresh outputs plus temporaries of runners without `out=` (peak - outputs).",
]
HAS_GRAD = hasattr(gg, "value_and_grad")


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---- the MLP training step ---------------------------------------------------------------
def mlp_loss(params, x, y):
    w1, b1, w2, b2 = params
    a = gg.relu(gg.matmul(x, w1) + b1)
    logp = gg.log_softmax(gg.matmul(a, w2) + b2, axis=-1)
    return -gg.sum(logp * y) / x.shape[0]


def mlp_step_manual(params, x, y, lr=0.1):
    w1, b1, w2, b2 = params
    n = x.shape[0]
    h = gg.matmul(x, w1) + b1
    a = gg.relu(h)
    logp = gg.log_softmax(gg.matmul(a, w2) + b2, axis=-1)
    loss = -gg.sum(logp * y) / n
    dlogits = (gg.exp(logp) - y) / n
    da = gg.matmul(dlogits, gg.transpose(w2))
    dh = da * gg.astype(h > 0, np.float32)
    grads = (
        gg.matmul(gg.transpose(x), dh),
        gg.sum(dh, axis=0),
        gg.matmul(gg.transpose(a), dlogits),
        gg.sum(dlogits, axis=0),
    )
    return loss, [p - lr * g for p, g in zip(params, grads)]


def mlp_step(params, x, y, lr=0.1):
    if not HAS_GRAD:
        return mlp_step_manual(params, x, y, lr)
    loss, grads = gg.value_and_grad(mlp_loss)(params, x, y)
    return loss, [p - lr * g for p, g in zip(params, grads)]


def mlp_args(batch, d=784, hidden=1024, classes=10):
    rng = np.random.default_rng(0)
    params = [
        rand(rng, d, hidden, scale=0.03),
        np.zeros(hidden, np.float32),
        rand(rng, hidden, classes, scale=0.03),
        np.zeros(classes, np.float32),
    ]
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]
    return params, rand(rng, batch, d), y


# ---- a transformer block ------------------------------------------------------------------
def block(p, x, mask, heads):
    b, t, d = x.shape
    dh = d // heads
    h = gg.layer_norm(x, p["ln1_w"], p["ln1_b"])
    qkv = gg.matmul(h, p["w_qkv"])

    def split(k):
        part = qkv[:, :, k * d : (k + 1) * d]
        return gg.transpose(gg.reshape(part, (b, t, heads, dh)), (0, 2, 1, 3))

    q, k, v = split(0), split(1), split(2)
    scores = gg.matmul(q, gg.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(dh)) + mask
    att = gg.matmul(gg.softmax(scores, axis=-1), v)
    att = gg.reshape(gg.transpose(att, (0, 2, 1, 3)), (b, t, d))
    x1 = x + gg.matmul(att, p["w_o"])
    h2 = gg.layer_norm(x1, p["ln2_w"], p["ln2_b"])
    m = gg.matmul(gg.gelu(gg.matmul(h2, p["w_1"]) + p["b_1"]), p["w_2"]) + p["b_2"]
    return x1 + m


def block_loss(p, x, mask, heads=4):
    out = block(p, x, mask, heads)
    return gg.mean(out * out)


def block_step(p, x, mask, lr=0.01):
    if not HAS_GRAD:  # forward only: recorded as such in the results
        return block_loss(p, x, mask)
    loss, grads = gg.value_and_grad(block_loss)(p, x, mask)
    return loss, {k: p[k] - lr * grads[k] for k in p}


def block_args(batch, t=128, d=256):
    rng = np.random.default_rng(1)
    p = {
        "ln1_w": np.ones(d, np.float32),
        "ln1_b": np.zeros(d, np.float32),
        "w_qkv": rand(rng, d, 3 * d, scale=0.05),
        "w_o": rand(rng, d, d, scale=0.05),
        "ln2_w": np.ones(d, np.float32),
        "ln2_b": np.zeros(d, np.float32),
        "w_1": rand(rng, d, 4 * d, scale=0.05),
        "b_1": np.zeros(4 * d, np.float32),
        "w_2": rand(rng, 4 * d, d, scale=0.05),
        "b_2": np.zeros(d, np.float32),
    }
    mask = np.triu(np.full((t, t), -1e9, np.float32), 1)
    return p, rand(rng, batch, t, d), mask


# ---- measuring ----------------------------------------------------------------------------
def plan_row(graph, streams, reorder):
    g = reorder_for_memory(graph) if reorder else graph
    t0 = time.perf_counter()
    sched = schedule(g, streams)
    m = plan_memory(g, sched)
    return {
        "order": "memory-aware" if reorder else "pipeline",
        "streams": sched.num_streams,
        "arena_bytes": m.arena_bytes,
        "naive_bytes": m.naive_bytes,
        "lower_bound_bytes": m.lower_bound_bytes,
        "live_peak_bytes": m.live_peak_bytes,
        "inplace": m.inplace_count,
        "naive/arena": m.naive_bytes / max(m.arena_bytes, 1),
        "arena/bound": m.arena_bytes / max(m.lower_bound_bytes, 1),
        "plan_s": time.perf_counter() - t0,
    }


def numpy_peak(fn, args):
    """tracemalloc peak of one call after a warm-up, with the arena already allocated."""
    jf = gg.jit(fn, backend="numpy")
    jf(*args)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = jf(*args)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    leaves = [a for a in _leaves(out)]
    return peak, sum(a.nbytes for a in leaves)


def _leaves(x):
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from _leaves(y)
    else:
        yield np.asarray(x)


def gpu_row(name, fn, args, torch_fn):
    """Device peaks: gpugraph's arena + fresh outputs (CuPy pool high-water) and PyTorch's
    max_memory_allocated for the same step. Only where CuPy, a GPU and torch are present."""
    try:
        import cupy
        import torch

        if not torch.cuda.is_available() or gg.default_backend().name != "cupy":
            return None
    except Exception:
        return None
    pool = cupy.get_default_memory_pool()
    dev_args = _to(args, cupy.asarray)
    pool.free_all_blocks()
    base = pool.used_bytes()
    jf = gg.jit(fn, backend="cupy")
    c = jf.lower(*dev_args)
    out = jf(*dev_args)
    cupy.cuda.Device().synchronize()
    gg_bytes = pool.total_bytes() - base
    del out
    t_args = _to(args, lambda a: torch.from_numpy(np.asarray(a)).cuda())
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t_base = torch.cuda.memory_allocated()
    torch_fn(*t_args)
    torch.cuda.synchronize()
    t_peak = torch.cuda.max_memory_allocated() - t_base
    return {
        "graph": name,
        "gpugraph_pool_bytes": int(gg_bytes),
        "gpugraph_arena_bytes": c.memory.arena_bytes,
        "torch_peak_bytes": int(t_peak),
    }


def _to(x, f):
    if isinstance(x, dict):
        return {k: _to(v, f) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to(v, f) for v in x)
    return f(x)


def torch_mlp(params, x, y):
    import torch

    ps = [p.clone().requires_grad_(True) for p in params]
    logits = torch.relu(x @ ps[0] + ps[1]) @ ps[2] + ps[3]
    loss = -(torch.log_softmax(logits, -1) * y).sum() / x.shape[0]
    loss.backward()
    return [p.detach() - 0.1 * p.grad for p in ps]


def torch_block(p, x, mask, heads=4):
    import torch
    import torch.nn.functional as F

    ps = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    b, t, d = x.shape
    dh = d // heads
    h = F.layer_norm(x, (d,), ps["ln1_w"], ps["ln1_b"])
    q, k, v = (h @ ps["w_qkv"]).split(d, -1)
    q, k, v = (z.reshape(b, t, heads, dh).transpose(1, 2) for z in (q, k, v))
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh) + mask, -1) @ v
    x1 = x + att.transpose(1, 2).reshape(b, t, d) @ ps["w_o"]
    h2 = F.layer_norm(x1, (d,), ps["ln2_w"], ps["ln2_b"])
    out = x1 + F.gelu(h2 @ ps["w_1"] + ps["b_1"], approximate="tanh") @ ps["w_2"] + ps["b_2"]
    (out * out).mean().backward()
    return {k: v.detach() - 0.01 * v.grad for k, v in ps.items()}


def main() -> None:
    cases = [
        ("mlp", mlp_step, mlp_args, torch_mlp),
        ("transformer", block_step, block_args, torch_block),
    ]
    rows, runs, gpu = [], [], []
    for name, fn, make, torch_fn in cases:
        for batch in (1, 64):
            args = make(batch)
            for fuse in (True, False):
                c = gg.jit(fn, backend="numpy", fuse=fuse).lower(*args)
                for streams in (None, 1):
                    for reorder in (False, True):
                        row = plan_row(c.graph, streams, reorder)
                        rows.append(
                            {
                                "graph": name,
                                "batch": batch,
                                "fused": fuse,
                                "nodes": len(c.graph.nodes),
                                **row,
                            }
                        )
            c = gg.jit(fn, backend="numpy").lower(*args)
            peak, out_bytes = numpy_peak(fn, args)
            runs.append(
                {
                    "graph": name,
                    "batch": batch,
                    "arena_bytes": c.memory.arena_bytes,
                    "tracemalloc_peak_bytes": peak,
                    "output_bytes": out_bytes,
                }
            )
            g = gpu_row(f"{name}-b{batch}", fn, args, torch_fn)
            if g:
                gpu.append(g)
    write(rows, runs, gpu)


def write(rows, runs, gpu) -> None:
    info = gg.device_info()
    device = info.devices[0]["name"].replace(" ", "-") if info.available else "cpu"
    date = datetime.date.today().isoformat()
    meta = {
        "device": str(info),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gpugraph": gg.__version__,
        "machine": platform.machine(),
        "backward": "gg.value_and_grad" if HAS_GRAD else "hand-written (mlp) / none",
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"memory-{device}-{date}"
    stem.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "plans": rows, "numpy_runs": runs, "gpu": gpu}, indent=1)
    )
    md = [
        f"# Memory planner, {meta['date']}",
        "",
        *(f"- {k}: {v}" for k, v in meta.items()),
        "",
        "| graph | batch | fused | nodes | order | streams | naive MB | arena MB | bound MB | "
        "naive/arena | arena/bound | in place |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        md.append(
            f"| {r['graph']} | {r['batch']} | {r['fused']} | {r['nodes']} | {r['order']} | "
            f"{r['streams']} | {r['naive_bytes'] / 1e6:.3f} | {r['arena_bytes'] / 1e6:.3f}"
            f" | {r['lower_bound_bytes'] / 1e6:.3f} | {r['naive/arena']:.2f} | "
            f"{r['arena/bound']:.3f} | {r['inplace']} |"
        )
    md += [
        "",
        "NumPy call, default pipeline (tracemalloc peak during one call, arena preallocated):",
        "",
        "| graph | batch | arena MB | peak MB | outputs MB |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        md.append(
            f"| {r['graph']} | {r['batch']} | {r['arena_bytes'] / 1e6:.3f} | "
            f"{r['tracemalloc_peak_bytes'] / 1e6:.3f} | {r['output_bytes'] / 1e6:.3f} |"
        )
    if gpu:
        md += ["", "| graph | gpugraph pool MB | arena MB | torch peak MB |", "|---|---|---|---|"]
        md += [
            f"| {g['graph']} | {g['gpugraph_pool_bytes'] / 1e6:.3f} | "
            f"{g['gpugraph_arena_bytes'] / 1e6:.3f} | {g['torch_peak_bytes'] / 1e6:.3f} |"
            for g in gpu
        ]
    else:
        md += ["", "GPU comparison with torch.cuda.max_memory_allocated: not run (no GPU here)."]
    md += ["", *NOTES]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
