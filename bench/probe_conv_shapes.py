"""Conv shapes beside the bench's two, under jit, process CPU ms (median of 7), 1 BLAS thread:
a depthwise 3x3 (32 groups), a strided 3x3 64->128 and LeNet's 5x5 at batch 64; forward and
forward + backward of sum(conv**2). Run it with another checkout's root to compare trees:

    python bench/probe_conv_shapes.py /path/to/tree
"""

import sys, time, numpy as np

root = sys.argv[1]
sys.path.insert(0, root)
import gpugraph as gg
from threadpoolctl import threadpool_limits

rng = np.random.default_rng(0)
cases = {
    "depthwise 32": ((8, 32, 56, 56), (32, 1, 3, 3), 32, 1),
    "3x3 s2 64->128": ((8, 64, 56, 56), (128, 64, 3, 3), 1, 2),
    "small lenet": ((64, 6, 14, 14), (16, 6, 5, 5), 1, 1),
}


def t(f, n=7):
    f()
    ts = []
    for _ in range(n):
        a = time.process_time()
        f()
        ts.append(time.process_time() - a)
    return round(np.median(ts) * 1e3, 2)


with threadpool_limits(1, user_api="blas"):
    out = []
    for name, (xs, ws, gr, st) in cases.items():
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        fw = gg.jit(lambda x, w: gg.conv(x, w, stride=st, padding=1, groups=gr))
        fb = gg.jit(
            gg.grad(
                lambda x, w: gg.sum(gg.square(gg.conv(x, w, stride=st, padding=1, groups=gr))),
                (0, 1),
            )
        )
        out.append(f"{name}: fwd {t(lambda: fw(x, w))} fwd+bwd {t(lambda: fb(x, w))}")
print(root.split("/")[-1], " | ".join(out))
