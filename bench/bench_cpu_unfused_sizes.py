"""One elementwise op per plan with fuse=False: the cpu backend's one-op native kernel
(backends/cpu_unfused.py, every op native) against the NumPy backend's ufunc, by size; the
numbers behind cpu_select.unfused_refusal ("Sizes" in
bench/results/dispatch-cpubackend-cpu-2026-12-01-4.md). Interleaved, medians per call.

    python bench/bench_cpu_unfused_sizes.py
"""

from __future__ import annotations

import os

import numpy as np
from common import gg, interleaved

os.environ["GPUGRAPH_CPU_NATIVE"] = "all"  # measure the native kernel whatever the policy says

OPS = {"tanh": gg.tanh, "exp": gg.exp, "sin": gg.sin, "add": lambda a: a + a}


def measure(op: str, n: int) -> tuple[float, float]:
    x = np.linspace(-3, 3, n, dtype=np.float32)
    fn = OPS[op]
    native = gg.jit(fn, backend="cpu", fuse=False)
    ref = gg.jit(fn, backend="numpy", fuse=False)
    np.testing.assert_allclose(native(x), ref(x), rtol=2e-6, atol=1e-6)
    inner = max(1, (1 << 16) // n)
    med = interleaved({"native": lambda: native(x), "numpy": lambda: ref(x)}, 15, inner)
    return med["native"], med["numpy"]


if __name__ == "__main__":
    for exp2 in (3, 6, 8, 9, 10, 14, 16, 20):
        for op in OPS:
            t_native, t_numpy = measure(op, 1 << exp2)
            print(
                f"| {op} | 2^{exp2} | {t_native * 1e6:.3g} | {t_numpy * 1e6:.3g} "
                f"| {t_native / t_numpy:.2f} |",
                flush=True,
            )
