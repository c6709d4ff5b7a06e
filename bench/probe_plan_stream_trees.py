"""Probe: does replacing the stored happens-before pairs of the several-stream memory plan by
per-stream segment trees pay at the sizes the compile bench reaches?

The idea (issue 13, compile): a buffer a (accesses acc[a], last access last[a]) conflicts with
a later buffer b, first written at step first[b] on stream s, exactly when
``last[a] < first[b] < W_s(a)``, where ``W_s(a)`` is the first step on s that every access of
a happens before (``max`` over x in acc[a] of the first step j on s with ``clock[j, stream x]
>= x``). On one stream those b form one run of time steps, so instead of the pairs
(``memory_hb.hb_conflicts``) the placement can ask, per item i:

- the main timeline over [first[i], last[i]] (overlap, as ``place_timeline`` does);
- ``ext[s(i)]`` at the point first[i]: earlier items whose window on i's stream holds it;
- ``pts[s]`` over (last[i], W_s(i)) for each stream s: later items first written there.

This file builds the windows from the vector clocks, places with those trees, asserts the
offsets equal the current planner's on the same order, and times both in CPU time (best of
``--repeats``, interleaved, garbage collection off as in gg.jit).

    PYTHONPATH=. python bench/probe_plan_stream_trees.py [--sizes 6 13 25 51 102]
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compile import build, specs  # noqa: E402

import gpugraph as gg  # noqa: E402
from gpugraph import memory, memory_hb, memory_timeline  # noqa: E402
from gpugraph.memory_timeline import Timeline, _up, best_fit  # noqa: E402


def windows(heads, members, slots, readers, sched) -> tuple[list, list, list, list]:
    """(first, last, stream of first, W) per buffer; W[i][s] as in the module docstring."""
    n = len(sched.steps)
    streams = np.asarray(sched._streams, dtype=np.int64)
    ns = sched.num_streams
    on = [np.flatnonzero(streams == k) for k in range(ns)]
    know = np.full((ns, n), n, dtype=np.int64)  # know[s, x]: first step on s that x precedes
    for t in range(ns):
        for s in range(ns):
            xs, ys = on[t], on[s]
            if len(xs) and len(ys):
                idx = np.searchsorted(sched.clock[ys, t], xs, side="left")
                know[s, xs] = np.where(idx < len(ys), ys[np.minimum(idx, len(ys) - 1)], n)
    first, last, accs = [], [], []
    for h in heads:
        acc = {slots[m].first for m in members[h]}
        for m in members[h]:
            acc.update(readers.get(m, ()))
        accs.append(list(acc))
        first.append(slots[h].first)
        last.append(max(acc))
    flat = np.fromiter((x for a in accs for x in a), dtype=np.int64)
    starts = np.cumsum([0] + [len(a) for a in accs[:-1]])
    w = np.maximum.reduceat(know[:, flat], starts, axis=1)
    return first, last, streams[first].tolist(), w.T.tolist()


def place_streams(sizes, first, last, fstream, w, order, align, ns) -> tuple[list[int], int]:
    """``place_timeline`` with per-stream trees instead of extra pairs (same offsets)."""
    offsets = [-1] * len(sizes)
    steps = max(last, default=0) + 1
    main = Timeline(steps)
    ext = [Timeline(steps) for _ in range(ns)]
    pts = [Timeline(steps) for _ in range(ns)]
    total = 0
    for i in order:
        f, la, s0 = first[i], last[i], fstream[i]
        nodes, path = main.cover(f, la)
        lists = main.taken(nodes, path)
        lists += ext[s0].taken(*ext[s0].cover(f, f))
        wins = []
        for s in range(ns):
            hi = min(w[i][s] - 1, steps - 1)
            if hi > la:
                cov = pts[s].cover(la + 1, hi)
                wins.append((s, hi))
                lists += pts[s].taken(*cov)
        off = offsets[i] = best_fit(lists, sizes[i]) if lists else 0
        total = max(total, off + sizes[i])
        top = _up(off + sizes[i], align)
        main.add(nodes, path, off, top)
        pts[s0].add(*pts[s0].cover(f, f), off, top)
        for s, hi in wins:
            ext[s].add(*ext[s].cover(la + 1, hi), off, top)
    return offsets, _up(total, align)


def measure(n: int, repeats: int) -> dict:
    fn, shapes = build("transformer_grad_4_streams", n, "gpugraph")
    c = gg.jit(fn, backend="numpy", streams=4).lower(*specs(shapes, lambda s: gg.ShapeDtype(s)))
    sched = c.schedule
    slots, readers = memory.liveness(c.graph, sched)
    buffer = memory._assign_inplace(slots, readers, sched)
    members: dict = {}
    for v, s in slots.items():
        if s.kind == "arena":
            members.setdefault(buffer[v], []).append(v)
    heads = list(members)
    sizes = [slots[h].size for h in heads]
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    best = {"pairs": math.inf, "trees": math.inf}
    gc.disable()
    for _ in range(repeats):
        t = time.process_time()
        conf, _ = memory_hb.hb_conflicts(heads, members, slots, readers, sched)
        old = memory_timeline.place_timeline(sizes, *conf.ranges, conf.extras, order, 256)
        best["pairs"] = min(best["pairs"], time.process_time() - t)
        t = time.process_time()
        first, last, fstream, w = windows(heads, members, slots, readers, sched)
        new = place_streams(sizes, first, last, fstream, w, order, 256, sched.num_streams)
        best["trees"] = min(best["trees"], time.process_time() - t)
    gc.enable()
    assert old == new, "the per-stream trees gave other offsets"
    wins = sum(w[i][s] - 1 > last[i] for i in range(len(w)) for s in range(sched.num_streams))
    return {
        "traced": len(c.traced_graph.nodes),
        "buffers": len(heads),
        "pairs_per_buffer": sum(map(len, conf.extras)) / len(heads),
        "windows_per_buffer": wins / len(heads),
        "arena": old[1],
        **best,
    }


def slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = np.log(xs), np.log(ys)
    return float(np.polyfit(lx, ly, 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[6, 13, 25, 51, 102])
    ap.add_argument("--repeats", type=int, default=5)
    opts = ap.parse_args()
    rows = [measure(n, opts.repeats) for n in opts.sizes]
    print(
        "| size | traced nodes | buffers | extra pairs / buffer | windows / buffer | arena B |"
        " pairs s | trees s | trees / pairs |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in zip(opts.sizes, rows):
        print(
            f"| {n} | {r['traced']} | {r['buffers']} | {r['pairs_per_buffer']:.1f} | "
            f"{r['windows_per_buffer']:.2f} | {r['arena']} | {r['pairs']:.4f} | "
            f"{r['trees']:.4f} | {r['trees'] / r['pairs']:.2f} |"
        )
    traced = [r["traced"] for r in rows]
    print(
        f"\nFitted exponent: pairs {slope(traced, [r['pairs'] for r in rows]):.2f}, "
        f"trees {slope(traced, [r['trees'] for r in rows]):.2f}"
    )


if __name__ == "__main__":
    main()
