"""Host cost of an ONNX model call outside its compiled program: ``m(x)`` at batch 1 with the
plan's ``executable.run`` replaced by a stub that returns the last results, so what is timed
is the input checks, the parameter tree's flattening and keying, and packing the outputs.

    python bench/bench_dispatch_onnx.py [--nets shufflenet,resnet50] [--rounds 15]
prints microseconds per call (medians of rounds of 50 calls).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import onnx  # noqa: E402

import gpugraph as gg  # noqa: E402
from gpugraph.onnx.light import light_path, randomized  # noqa: E402
from gpugraph.pytree import flatten  # noqa: E402


def host_overhead_us(name: str, rounds: int) -> tuple[int, float]:
    m = gg.onnx.load(randomized(onnx.load(light_path(name))).SerializeToString())
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    m(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = m.lower(x)
    leaves = flatten((m.params, x), is_leaf=lambda v: isinstance(v, np.ndarray))[0]
    saved = c.executable.run(c.check_args(leaves))
    c.executable.run = lambda args, out=None: list(saved)  # the program, stubbed out
    m(x)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(50):
            m(x)
        times.append((time.perf_counter() - t) / 50)
    return len(m.params), statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", default="shufflenet,resnet50")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    for name in a.nets.split(","):
        n, us = host_overhead_us(name, a.rounds)
        print(f"{name}: {n} parameters, host cost per m(x) outside the program {us:.1f} us")


if __name__ == "__main__":
    main()
