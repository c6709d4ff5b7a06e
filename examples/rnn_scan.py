"""Train an Elman RNN written with ``gg.scan`` on a synthetic sequence task.

Task: each example is a sequence of 16 numbers in [-1, 1]; the label says whether the first
half sums to more than the second half. The cell ``h = tanh(x_t * U + h @ W + b)`` runs over a
batch of sequences with ``gg.scan`` (the time axis leads), a linear read-out of the last state
gives the logit. One jitted step computes the loss, its gradient through the scan (a reverse
scan over the stacked states) and the Adam update. Run ``python examples/rnn_scan.py``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

try:
    import gpugraph as gg
except ImportError:  # run from a source checkout without installing: use the repo root
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import gpugraph as gg

SEQ, HIDDEN, BATCH = 16, 24, 64
LR, BETAS, EPS = 4e-3, (0.9, 0.999), 1e-8


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-1, 1, (n, SEQ)).astype(np.float32)
    y = (x[:, : SEQ // 2].sum(1) > x[:, SEQ // 2 :].sum(1)).astype(np.float32)
    return x, y


def init(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "U": (rng.standard_normal((1, HIDDEN)) * 0.5).astype(np.float32),
        "W": (rng.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32),
        "b": np.zeros(HIDDEN, np.float32),
        "V": (rng.standard_normal((HIDDEN,)) / np.sqrt(HIDDEN)).astype(np.float32),
        "c": np.zeros((), np.float32),
    }


def logits(p, x):
    """x: (batch, SEQ) -> (batch,) logits; the scan runs over time (x transposed)."""

    def cell(h, x_t):
        h = gg.tanh(gg.expand_dims(x_t, 1) @ p["U"] + h @ p["W"] + p["b"])
        return h, None

    h0 = gg.zeros((x.shape[0], HIDDEN))
    h, _ = gg.scan(cell, h0, gg.transpose(x))
    return h @ p["V"] + p["c"]


def loss_fn(p, x, y):
    z = logits(p, x)
    # binary cross-entropy with logits, written stably: max(z,0) - z*y + log(1 + exp(-|z|))
    return (gg.maximum(z, 0.0) - z * y + gg.log(1.0 + gg.exp(-gg.abs(z)))).mean()


@gg.jit
def train_step(p, m, v, t, x, y):
    loss, g = gg.value_and_grad(loss_fn)(p, x, y)
    b1, b2 = BETAS
    new_p, new_m, new_v = {}, {}, {}
    for k in p:
        new_m[k] = b1 * m[k] + (1 - b1) * g[k]
        new_v[k] = b2 * v[k] + (1 - b2) * g[k] * g[k]
        mhat = new_m[k] / (1 - b1**t)
        vhat = new_v[k] / (1 - b2**t)
        new_p[k] = p[k] - LR * mhat / (gg.sqrt(vhat) + EPS)
    return new_p, new_m, new_v, loss


@gg.jit
def accuracy(p, x, y):
    return ((logits(p, x) > 0) == (y > 0.5)).astype(gg.float32).mean()


def bar(done: int, total: int, loss: float, width: int = 30) -> str:
    k = width * done // total
    return f"\r[{'#' * k}{'.' * (width - k)}] step {done}/{total}  loss {loss:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    x_tr, y_tr = make_data(4096, rng)
    x_te, y_te = make_data(1024, rng)
    p = init(rng)
    m = {k: np.zeros_like(a) for k, a in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(x_tr), BATCH)
        p, m, v, loss = train_step(p, m, v, np.float32(step), x_tr[idx], y_tr[idx])
        if step % 10 == 0 or step == args.steps:
            print(bar(step, args.steps, float(loss)), end="", flush=True)
    print(
        f"\ntrained {args.steps} steps in {time.perf_counter() - t0:.1f} s "
        f"({train_step.cache_size} compiled signature)"
    )
    acc = float(accuracy(p, x_te, y_te))
    print(f"test accuracy: {acc:.3f} (chance: {max(y_te.mean(), 1 - y_te.mean()):.3f})")


if __name__ == "__main__":
    main()
