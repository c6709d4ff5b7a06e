"""avg_pool benchmark, float32: gpugraph's direct windowed sum (ops/pool_avg.py) vs the same
pool as a ones-kernel conv over [N*C, 1, *S] (the graph avg_pool built before, rebuilt here
from public ops: its forward took the depthwise direct lowering, its x gradient the
conv_transpose one, col2im where strided) vs torch (eager F.avg_pool2d) vs jax.jit (a
lax.reduce_window sum divided by the counts); the forward pass alone and forward + backward
(the x gradient of sum(avg_pool(x)**2) / 2). The contenders alternate within each round;
medians of wall and process CPU time; ratio = peer / gpugraph (below 1: gpugraph is slower).

    python bench/bench_pool.py [--rounds K] [--threads T] [--suffix=-5]
writes bench/results/<--name>-cpu-<date><suffix>.md (the tables also go to stdout)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpugraph as gg  # noqa: E402
from bench.bench_conv import timed  # noqa: E402

# name -> N, C, H, window, stride, pad, count_include_pad
CASES = {
    "Inception 3x3 s1 p1 (excl. pad), 8x192x35x35": (8, 192, 35, 3, 1, 1, False),
    "DenseNet transition 2x2 s2, 8x128x56x56": (8, 128, 56, 2, 2, 0, True),
    "ResNet-D shortcut 3x3 s2 p1, 8x256x28x28": (8, 256, 28, 3, 2, 1, True),
}


def via_conv(x, k, s, p, include):
    """avg_pool as it was: a ones-kernel conv over [N*C, 1, H, W], / the counts."""
    from gpugraph.ops.pool_avg import _sum_impl

    n, c, h, w = gg.ops.core.type_of(x).shape
    ones = np.ones((1, 1, k, k), np.float32)
    y = gg.conv(gg.reshape(x, (n * c, 1, h, w)), ones, stride=s, padding=p)
    if include:
        count = np.float32(k * k)
    else:
        pad = ((p, p), (p, p))
        count = _sum_impl(np, np.ones((1, 1, h, w), np.float32), (k, k), (s, s), pad)[0, 0]
    ys = gg.ops.core.type_of(y).shape[2:]
    return gg.reshape(y / count, (n, c, *ys))


def gg_fns(pool, x):
    fwd = gg.jit(pool)
    both = gg.jit(gg.grad(lambda x: 0.5 * gg.sum(gg.square(pool(x)))))
    return lambda: fwd(x), lambda: both(x)


def torch_fns(x, k, s, p, include):
    import torch

    xt = torch.tensor(x)
    xg = xt.clone().requires_grad_()
    f = torch.nn.functional.avg_pool2d

    def fwd():
        with torch.no_grad():
            return f(xt, k, s, p, count_include_pad=include)

    def both():
        xg.grad = None
        y = f(xg, k, s, p, count_include_pad=include)
        (0.5 * (y * y).sum()).backward()
        return xg.grad

    return fwd, both


def jax_fns(x, k, s, p, include):
    import jax
    import jax.numpy as jnp

    def wsum(v):
        pads = ((0, 0), (0, 0), (p, p), (p, p))
        return jax.lax.reduce_window(v, 0.0, jax.lax.add, (1, 1, k, k), (1, 1, s, s), pads)

    def pool(v):
        count = k * k if include else wsum(jnp.ones((1, 1) + v.shape[2:], v.dtype))
        return wsum(v) / count

    fwd = jax.jit(pool)
    both = jax.jit(jax.grad(lambda v: 0.5 * (pool(v) ** 2).sum()))
    xj = jnp.asarray(x)
    return lambda: fwd(xj).block_until_ready(), lambda: both(xj).block_until_ready()


TRANSPOSE = {  # N, C, H (of x), K, stride, pad: the x gradient of a strided depthwise conv
    "MobileNet 3x3 s2 p1, 8x64x56x56": (8, 64, 56, 3, 2, 1),
    "ShuffleNet 3x3 s2 p1, 8x232x14x14": (8, 232, 14, 3, 2, 1),
    "EfficientNet 5x5 s2 p2, 8x96x28x28": (8, 96, 28, 5, 2, 2),
}


def _transpose_fns(n, c, h, k, s, p, rng) -> dict:
    import torch

    from gpugraph.ops.conv_depthwise_t import dw_phased_impl, dw_phased_layout
    from gpugraph.ops.conv_transpose_lower import conv_transpose_impl, conv_transpose_layout

    ys = (h + 2 * p - k) // s + 1
    y = rng.standard_normal((n, c, ys, ys), dtype=np.float32)
    w = rng.standard_normal((c, 1, k, k), dtype=np.float32)
    g, hw = ((s, s), ((p, p), (p, p)), (1, 1)), (h, h)
    sp = np.empty(dw_phased_layout(y.shape, w.shape, *g, hw, y.dtype).nbytes, np.uint8)
    lay = conv_transpose_layout(y.shape, w.shape, *g, c, hw, y.dtype)
    sc, out = np.empty(lay.nbytes, np.uint8), np.empty((n, c, h, h), np.float32)
    yt, wt, op = torch.tensor(y), torch.tensor(w), (h + 2 * p - k) % s
    return {
        "gpugraph by phase": lambda: dw_phased_impl(np, y, w, *g, hw, out=out, scratch=sp),
        "gpugraph col2im (before)": lambda: conv_transpose_impl(
            np, y, w, *g, c, hw, out=out, scratch=sc
        ),
        "torch": lambda: torch.nn.functional.conv_transpose2d(yt, wt, None, s, p, op, 1, c),
    }


def transpose_lines(rounds: int) -> list[str]:
    """Strided depthwise conv_transpose: the phase lowering vs col2im (both impls called
    directly with their planned scratch) vs torch, interleaved."""
    rng, lines = np.random.default_rng(1), []
    for case, geo in TRANSPOSE.items():
        res = timed(_transpose_fns(*geo, rng), rounds)
        base = res["gpugraph by phase"][0]
        for name, (t, _) in res.items():
            lines.append(f"| {case} | {name} | {t * 1e3:.2f} | {t / base:.2f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--suffix", default="")
    ap.add_argument("--name", default="pool")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    lines = []
    for case, (n, c, h, k, s, p, inc) in CASES.items():
        x = rng.standard_normal((n, c, h, h), dtype=np.float32)
        geo = (k, s, p, inc)
        direct = gg_fns(lambda x, geo=geo: gg.avg_pool(x, *geo[:3], count_include_pad=geo[3]), x)
        old = gg_fns(lambda x, geo=geo: via_conv(x, *geo), x)
        a, b = gg.avg_pool(x, k, s, p, count_include_pad=inc), old[0]()
        err = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        peers = {"torch": torch_fns(x, k, s, p, inc), "jax.jit": jax_fns(x, k, s, p, inc)}
        for i, what in enumerate(("forward", "forward+backward")):
            fns = {"gpugraph direct": direct[i], "gpugraph ones-kernel conv (before)": old[i]}
            fns.update({name: f[i] for name, f in peers.items()})
            res = timed(fns, args.rounds)
            base_w, base_c = res["gpugraph direct"]
            for name, (w, cpu) in res.items():
                lines.append(
                    f"| {case} | {what} | {name} | {w * 1e3:.2f} | {w / base_w:.2f} "
                    f"| {cpu * 1e3:.2f} | {cpu / base_c:.2f} |"
                )
        lines.append(f"| {case} | max abs diff direct vs before | | {err:.1e} | | | |")
    head = [
        f"# avg_pool on the CPU, {datetime.date.today()}",
        "",
        f"{platform.platform()}; numpy {np.__version__}, torch {torch.__version__}, "
        f"jax {__import__('jax').__version__}; {args.threads} thread(s) for torch; "
        f"load average {os.getloadavg()}; median of {args.rounds} interleaved rounds.",
        "ratio = this row's ms / gpugraph direct's ms (below 1: gpugraph direct is slower "
        "than that row; the 'before' row's ratio is the speedup of the direct path).",
        "",
        "| case | pass | impl | wall ms | ratio | cpu ms | cpu ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    tail = [
        "",
        "Strided depthwise conv_transpose (multiplier 1), float32, impl level (planned scratch "
        "passed in), ratio = row ms / phase ms:",
        "",
        "| case | impl | wall ms | ratio |",
        "|---|---|---|---|",
        *transpose_lines(args.rounds),
    ]
    text = "\n".join(head + lines + tail) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "results"
    (out / f"{args.name}-cpu-{datetime.date.today()}{args.suffix}.md").write_text(text)


if __name__ == "__main__":
    main()
