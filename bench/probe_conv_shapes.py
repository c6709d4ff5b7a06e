"""Conv shapes beside bench_conv.py's two, under jit, process CPU ms (median of 7), 1 BLAS
thread: a depthwise 3x3 (32 groups), a strided 3x3 64->128 and LeNet's 5x5 at batch 64; forward
and forward + backward of sum(conv**2). Give another checkout's root to measure that tree:

    python bench/probe_conv_shapes.py [/path/to/tree]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

# (x shape, w shape, groups, stride); padding 1
CASES = {
    "depthwise 32": ((8, 32, 56, 56), (32, 1, 3, 3), 32, 1),
    "3x3 s2 64->128": ((8, 64, 56, 56), (128, 64, 3, 3), 1, 2),
    "small lenet": ((64, 6, 14, 14), (16, 6, 5, 5), 1, 1),
}


def cpu_ms(f, n: int = 7) -> float:
    f()
    ts = []
    for _ in range(n):
        t0 = time.process_time()
        f()
        ts.append(time.process_time() - t0)
    return round(float(np.median(ts)) * 1e3, 2)


def main() -> None:
    root = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1])
    sys.path.insert(0, root)
    from threadpoolctl import threadpool_limits

    import gpugraph as gg

    rng = np.random.default_rng(0)
    out = []
    with threadpool_limits(1, user_api="blas"):
        for name, (xs, ws, groups, stride) in CASES.items():
            x = rng.standard_normal(xs).astype(np.float32)
            w = rng.standard_normal(ws).astype(np.float32)

            def conv(x, w, stride=stride, groups=groups):
                return gg.conv(x, w, stride=stride, padding=1, groups=groups)

            fwd = gg.jit(conv)
            both = gg.jit(gg.grad(lambda x, w, conv=conv: gg.sum(gg.square(conv(x, w))), (0, 1)))
            f_ms = cpu_ms(lambda fwd=fwd, x=x, w=w: fwd(x, w))
            b_ms = cpu_ms(lambda both=both, x=x, w=w: both(x, w))
            out.append(f"{name}: fwd {f_ms} fwd+bwd {b_ms}")
    print(root, " | ".join(out))


if __name__ == "__main__":
    main()
