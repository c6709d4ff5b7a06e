"""Convolution benchmark, float32, batch 8, 56x56: 3x3 64 -> 64 channels (padding 1), 1x1
64 -> 256 (no padding), a 3x3 depthwise conv over 64 channels and a 3x3 conv in 8 groups of
8 channels (both padding 1); the forward pass alone and forward + backward (gradients in x and w of
sum(conv(x, w)**2) / 2, whose backward needs the forward's output, so no library can skip the
forward).

CPU: gpugraph (jit, numpy backend: im2col + GEMM; a 1x1 kernel is a GEMM on x itself) vs torch
(eager, its CPU conv kernels) vs jax.jit(jax.lax.conv_general_dilated) (XLA CPU), the three
interleaved within each round; medians. torch and the BLAS gpugraph calls get --threads
(default 1), XLA uses every visible core; ratio = peer / gpugraph (below 1: gpugraph is
slower). --onnx appends the rows of a bench_onnx.py result JSON (same machine, same session);
--ab compares the NumPy lowerings with another version of ops/conv.py.

    python bench/bench_conv.py [--rounds K] [--threads T] [--suffix=-2] [--onnx FILE.json]
                               [--ab BASELINE_CONV.py] [--cases depthwise,groups]
writes bench/results/conv-cpu-<date><suffix>.{md,json}
"""

from __future__ import annotations

import argparse
import datetime
import functools
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

RESULTS = Path(__file__).resolve().parent / "results"
N, H = 8, 56
CASES = {  # C, O, K, pad, groups
    "3x3 64->64 pad 1": (64, 64, 3, 1, 1),
    "1x1 64->256": (64, 256, 1, 0, 1),
    "3x3 depthwise 64 pad 1": (64, 64, 3, 1, 64),
    "3x3 64->64 groups 8 pad 1": (64, 64, 3, 1, 8),
}


def gpugraph_fns(x, w, p, g=1):
    fwd = gg.jit(lambda x, w: gg.conv(x, w, padding=p, groups=g))
    loss = lambda x, w: 0.5 * gg.sum(gg.square(gg.conv(x, w, padding=p, groups=g)))  # noqa: E731
    both = gg.jit(gg.grad(loss, (0, 1)))
    return lambda: fwd(x, w), lambda: both(x, w)


def torch_fns(x, w, p, g=1):
    import torch

    xt, wt = torch.tensor(x), torch.tensor(w)
    xg, wg = xt.clone().requires_grad_(), wt.clone().requires_grad_()

    def fwd():
        with torch.no_grad():
            return torch.nn.functional.conv2d(xt, wt, padding=p, groups=g)

    def both():
        xg.grad = wg.grad = None
        y = torch.nn.functional.conv2d(xg, wg, padding=p, groups=g)
        (0.5 * (y * y).sum()).backward()
        return xg.grad, wg.grad

    return fwd, both


def jax_fns(x, w, p, g=1):
    import jax

    def conv(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), ((p, p), (p, p)), feature_group_count=g)

    fwd = jax.jit(conv)
    both = jax.jit(jax.grad(lambda x, w: 0.5 * (conv(x, w) ** 2).sum(), (0, 1)))
    xj, wj = jax.numpy.asarray(x), jax.numpy.asarray(w)
    return (lambda: fwd(xj, wj).block_until_ready(), lambda: jax.block_until_ready(both(xj, wj)))


def _row(r: dict) -> str:
    return (
        f"| {r['case']} | {r['impl']} | {r['pass']} | {r['ms']} | {r['ratio_peer_over_gpugraph']} "
        f"| {r['cpu_ms']} | {r['cpu_ratio']} |"
    )


def timed(contenders: dict, rounds: int, pause: float = 0.02) -> dict[str, tuple[float, float]]:
    """name -> (median wall seconds, median process CPU seconds) per call, the contenders
    alternating within each round (as common.interleaved). On a shared, oversubscribed box the
    CPU time counts the work done, not the time spent waiting for a core; it includes every
    thread of the process (XLA's pool too, spinning included)."""
    for fn in contenders.values():
        fn(), fn()
    wall: dict[str, list[float]] = {k: [] for k in contenders}
    cpu: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            time.sleep(pause)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in contenders}


def _onnx_lines(path: str) -> list[str]:
    """The rows of a bench_onnx.py result JSON, as a table (ratio = ORT ms / gpugraph ms)."""
    meta = json.loads(Path(path).read_text())
    keys = (
        "net",
        "batch",
        "max_rel_err_vs_ort",
        "gpugraph_ms",
        "ort_ms",
        "ratio_ort_over_gpugraph",
    )
    return [
        "",
        f"ONNX nets ({Path(path).name}: {meta.get('threads')} thread(s) for ORT and gpugraph's "
        f"BLAS, median of {meta.get('rounds')} interleaved rounds; "
        f"load {meta.get('load_average')}):",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
        *("| " + " | ".join(str(_round(r[k])) for k in keys) + " |" for r in meta["rows"]),
    ]


def _round(v):
    return round(v, 1) if isinstance(v, float) and v > 1 else v


def _impls_of(path: str) -> dict:
    """The lowering functions of another version of gpugraph/ops/conv.py (e.g. main's, from
    ``git show main:gpugraph/ops/conv.py``), loaded without registering its ops again."""
    src = Path(path).read_text()
    src = src[: src.index("# ---- shape rules")].replace("from ..", "from gpugraph.")
    ns: dict = {"__name__": "conv_baseline"}
    exec(compile(src.replace("from .", "from gpugraph.ops."), path, "exec"), ns)
    return ns


def ab_lines(path: str, rounds: int) -> list[str]:
    """The three conv primitives' NumPy impls, this tree's against ``path``'s, interleaved;
    no jit, so only the lowering differs."""
    from gpugraph.ops import conv as ours

    base, rows = _impls_of(path), []
    rng = np.random.default_rng(0)
    for case, (c, o, k, p, gr) in CASES.items():
        x = rng.standard_normal((N, c, H, H)).astype(np.float32)
        w = (rng.standard_normal((o, c // gr, k, k)) * 0.05).astype(np.float32)
        g = dict(stride=(1, 1), pad=((p, p), (p, p)), dilation=(1, 1), groups=gr)
        y = ours._conv_impl(np, x, w, **g)
        for prim, args, extra in (
            ("conv", (x, w), {}),
            ("conv_transpose", (y, w), {"in_shape": (H, H)}),
            ("conv_weight", (x, y), {"kernel": (k, k)}),
        ):
            fns = {
                who: functools.partial(m[f"_{prim}_impl"], np, *args, **g, **extra)
                for who, m in (("baseline", base), ("this tree", vars(ours)))
            }
            # this tree's impls get a scratch range made once, as a plan's arena gives them
            layout = getattr(ours, f"_{prim}_layout")(
                args[0].shape, args[1].shape, *g.values(), *extra.values(), np.float32
            )
            fns["this tree"].keywords["scratch"] = np.empty(layout.nbytes, np.uint8)
            med = timed(fns, rounds)
            b, t = med["baseline"][1] * 1e3, med["this tree"][1] * 1e3
            rows.append(f"| {case} | {prim} | {b:.1f} | {t:.1f} | {b / t:.2f} |")
    return [
        "",
        f"Lowering before/after ({Path(path).name} vs this tree; the NumPy impls called "
        f"directly, interleaved, median process CPU ms of {rounds} rounds, speedup = before / "
        "after):",
        "",
        "| case | primitive | before ms | after ms | speedup |",
        "|---|---|---|---|---|",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--suffix", default="")
    parser.add_argument("--cases", default="", help="comma-separated substrings of case names")
    parser.add_argument("--onnx", help="a bench_onnx.py result JSON to append")
    parser.add_argument("--ab", help="another conv.py (e.g. main's) to compare lowerings with")
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    load = [os.getloadavg()]
    with threadpool_limits(args.threads, user_api="blas"):
        for case, (c, o, k, p, gr) in CASES.items():
            if args.cases and not any(s in case for s in args.cases.split(",")):
                continue
            x = rng.standard_normal((N, c, H, H)).astype(np.float32)
            w = (rng.standard_normal((o, c // gr, k, k)) * 0.05).astype(np.float32)
            impls = {"gpugraph (jit, numpy)": gpugraph_fns(x, w, p, gr)}
            impls["torch eager (CPU)"] = torch_fns(x, w, p, gr)
            try:
                impls["jax.jit lax.conv (XLA CPU)"] = jax_fns(x, w, p, gr)
            except ImportError:
                pass
            for i, name in enumerate(("forward", "fwd+bwd")):
                med = timed({k: v[i] for k, v in impls.items()}, args.rounds)
                for impl, (sec, cpu) in med.items():
                    rows.append(
                        {
                            "case": case,
                            "impl": impl,
                            "pass": name,
                            "ms": sec * 1e3,
                            "cpu_ms": cpu * 1e3,
                        }
                    )
        ab = ab_lines(args.ab, args.rounds) if args.ab else []
    load.append(os.getloadavg())
    ours = {(r["case"], r["pass"]): r for r in rows if r["impl"].startswith("gpugraph")}
    for r in rows:
        mine = ours[r["case"], r["pass"]]
        r["ratio_peer_over_gpugraph"] = round(r["ms"] / mine["ms"], 3)
        r["cpu_ratio"] = round(r["cpu_ms"] / mine["cpu_ms"], 3)
    for r in rows:
        r["ms"], r["cpu_ms"] = round(r["ms"], 2), round(r["cpu_ms"], 2)
    import jax

    meta = {
        "date": datetime.date.today().isoformat(),
        "device": f"cpu {platform.machine()} ({os.cpu_count()} cores visible)",
        "threads": args.threads,
        "rounds": args.rounds,
        "shape": f"x[{N},C,{H},{H}] * w[O,C,K,K], float32: " + ", ".join(CASES),
        "load_average_start_end": [list(map(float, l)) for l in load],
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "jax": jax.__version__,
            "gpugraph": gg.__version__,
        },
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"conv-cpu-{meta['date']}{args.suffix}"
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    lines = [
        f"# conv benchmark — {meta['device']} — {meta['date']}",
        "",
        f"{meta['shape']}; median of {args.rounds} interleaved rounds after warm-up; "
        f"{args.threads} thread(s) for torch and for gpugraph's BLAS, XLA on every visible "
        "core; ratio = that row's ms / gpugraph's ms for the same case and pass (above 1: "
        f"gpugraph is faster). cpu ms: the process CPU time per call (all its threads), the "
        f"same ratio on it. Load average start/end: {load[0]} / {load[1]}.",
        "",
        "| case | impl | pass | ms | ratio | cpu ms | cpu ratio |",
        "|---|---|---|---|---|---|---|",
        *(_row(r) for r in rows),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        *ab,
        *(_onnx_lines(args.onnx) if args.onnx else []),
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
