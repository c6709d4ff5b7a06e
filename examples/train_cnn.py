"""Train a LeNet-style CNN on scikit-learn's bundled 8x8 digits with gpugraph.

Two conv + relu + max_pool stages and a dense layer; one jitted step computes the loss, its
gradient through the convolutions and pools (gg.value_and_grad) and the Adam update. Run
``python examples/train_cnn.py``; it needs scikit-learn (the ``examples`` extra), no download.
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

CHANNELS = (16, 32)
BATCH = 64
LR = 3e-3
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def load_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The digits as [N, 1, 8, 8] images scaled to [0, 1], split 80/20 by a fixed permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_train = int(0.8 * len(x))
    tr, te = order[:n_train], order[n_train:]
    return x[tr], y[tr], x[te], y[te]


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-initialised conv kernels and dense weights, zero biases."""
    c1, c2 = CHANNELS

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32)

    return {
        "k1": he((c1, 1, 3, 3), 9),
        "b1": np.zeros(c1, np.float32),
        "k2": he((c2, c1, 3, 3), 9 * c1),
        "b2": np.zeros(c2, np.float32),
        "w3": he((c2 * 2 * 2, 10), c2 * 4),
        "b3": np.zeros(10, np.float32),
    }


def logits_fn(params: dict, x):
    h = gg.max_pool(gg.relu(gg.conv(x, params["k1"], params["b1"], padding=1)), 2)  # 8x4x4
    h = gg.max_pool(gg.relu(gg.conv(h, params["k2"], params["b2"], padding=1)), 2)  # 16x2x2
    return gg.reshape(h, (h.shape[0], -1)) @ params["w3"] + params["b3"]


def loss_fn(params: dict, x, labels):
    """Mean cross-entropy; the one-hot targets are built in-graph from integer labels."""
    logits = logits_fn(params, x)
    onehot = gg.astype(gg.equal(gg.reshape(labels, (-1, 1)), gg.arange(10)), logits.dtype)
    return -gg.mean(gg.sum(gg.log_softmax(logits, axis=-1) * onehot, axis=-1))


def adam_step(params: dict, state: dict, x, labels):
    """One Adam step (bias-corrected); ``state`` holds m, v and the step count t."""
    loss, grads = gg.value_and_grad(loss_fn)(params, x, labels)
    b1, b2 = BETAS
    t = state["t"] + 1.0
    new_params, new_m, new_v = {}, {}, {}
    lr_t = LR * gg.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    for k, p in params.items():
        new_m[k] = b1 * state["m"][k] + (1 - b1) * grads[k]
        new_v[k] = b2 * state["v"][k] + (1 - b2) * grads[k] * grads[k]
        new_params[k] = p - lr_t * new_m[k] / (gg.sqrt(new_v[k]) + ADAM_EPS)
    return loss, new_params, {"m": new_m, "v": new_v, "t": t}


def _progress(epoch: int, epochs: int, loss: float, acc: float, elapsed: float) -> str:
    width = 20
    done = int(width * epoch / epochs)
    bar = "#" * done + "." * (width - done)
    return f"epoch {epoch:3d}/{epochs} [{bar}] loss {loss:.4f}  test acc {acc:.3f}  {elapsed:5.1f}s"


def main(epochs: int = 15, seed: int = 0, verbose: bool = True) -> float:
    """Train and return the test accuracy."""
    x_tr, y_tr, x_te, y_te = load_data(seed=0)  # the split is fixed; seed varies the init
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    state = {"m": zeros, "v": dict(zeros), "t": np.zeros((), np.float32)}
    step = gg.jit(adam_step)
    predict = gg.jit(lambda p, x: gg.argmax(logits_fn(p, x), axis=-1))
    steps_per_epoch = len(x_tr) // BATCH  # full batches only: one compiled signature
    start = time.perf_counter()
    acc = 0.0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_tr))
        total = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * BATCH : (s + 1) * BATCH]
            loss, params, state = step(params, state, x_tr[idx], y_tr[idx])
            total += float(loss)
        acc = float(np.mean(gg.asnumpy(predict(params, x_te)) == y_te))
        if verbose:
            elapsed = time.perf_counter() - start
            print(_progress(epoch, epochs, total / steps_per_epoch, acc, elapsed), flush=True)
    if verbose:
        print(
            f"test accuracy {acc:.4f} after {epochs} epochs "
            f"({time.perf_counter() - start:.1f}s, backend {gg.default_backend()})"
        )
    return acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.exit(0 if main(args.epochs, args.seed) >= 0.97 else 1)
