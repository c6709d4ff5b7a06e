"""Which fused groups the native cpu backend should compile (cpu_backend._policy_refusal), and
what backend="auto" costs against the NumPy backend it replaces on a machine without a GPU.

Per size (elements) and workload, per call: the NumPy backend's fused runner, the cpu
backend compiling every group (GPUGRAPH_CPU_NATIVE=all), the cpu backend's default policy
(small and broadcast groups on the NumPy runner), and jax.jit (the strongest installed peer).
Workloads: 2-op (x * 2 + 1), chain8 (4 x tanh(x * 1.1 + 0.1)), and bias + GELU(tanh) +
residual (a (rows, 256) matrix plus a (256,) bias: a broadcast operand). Interleaved rounds,
medians (bench/common.py). Then, in child processes, the OpenMP parallel path (2^20 elements)
under libgomp's default wait policy and under OMP_WAIT_POLICY=PASSIVE (the backend's default).

    python bench/bench_cpu_policy.py [--quick]
writes bench/results/cpu-policy-cpu-<date>.{md,json}
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
from common import gg, interleaved, load_average, table, write


def two_op(x):
    return x * 2 + 1


def chain8(x, tanh=gg.tanh):
    for _ in range(4):
        x = tanh(x * 1.1 + 0.1)
    return x


def bias_gelu(x, b, r, gelu=lambda v: gg.gelu(v, "tanh")):
    return gelu(x + b) + r


def _jax(fn_name: str):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    fns = {
        "2-op": two_op,
        "chain8": lambda x: chain8(x, jnp.tanh),
        "bias+gelu+res": lambda x, b, r: bias_gelu(
            x, b, r, lambda v: jax.nn.gelu(v, approximate=True)
        ),
    }
    f = jax.jit(fns[fn_name])
    return lambda *a: f(*a).block_until_ready()


def _args(workload: str, n: int) -> tuple:
    x = np.linspace(-2, 2, n, dtype=np.float32)
    if workload != "bias+gelu+res":
        return (x,)
    cols = 256 if n >= 256 else n
    xm = x.reshape(-1, cols)
    return xm, np.linspace(0, 1, cols, dtype=np.float32), xm.copy()


WORKLOADS = {"2-op": two_op, "chain8": chain8, "bias+gelu+res": bias_gelu}


def _cpu(fn, mode: str, args: tuple):
    os.environ["GPUGRAPH_CPU_NATIVE"] = mode  # read when the plan is built: build it now
    try:
        return gg.jit(fn, backend="cpu").lower(*args)
    finally:
        del os.environ["GPUGRAPH_CPU_NATIVE"]


def measure(sizes: list[int], rounds: int) -> list[dict]:
    rows = []
    for n in sizes:
        for name, fn in WORKLOADS.items():
            args = _args(name, n)
            contenders = {
                "numpy": gg.jit(fn, backend="numpy").lower(*args),
                "cpu_all": _cpu(fn, "all", args),
                "cpu_policy": _cpu(fn, "auto", args),
            }
            for c in contenders.values():
                c(*args)  # compile outside the timing
            calls = {k: (lambda c=c, a=args: c(*a)) for k, c in contenders.items()}
            jx = _jax(name)
            if jx is not None:  # on jax arrays, made once (not a host transfer per call)
                import jax.numpy as jnp

                jargs = tuple(jnp.asarray(a) for a in args)
                calls["jax.jit"] = lambda f=jx, a=jargs: f(*a)
            inner = max(1, min(200, 2_000_000 // max(n, 1) // 8))
            t = interleaved(calls, rounds=rounds, inner=inner)
            row = {"workload": name, "elements": n}
            row.update({f"{k} us": v * 1e6 for k, v in t.items()})
            row["cpu_all/numpy"] = t["cpu_all"] / t["numpy"]
            row["cpu_policy/numpy"] = t["cpu_policy"] / t["numpy"]
            if "jax.jit" in t:
                row["cpu_policy/jax"] = t["cpu_policy"] / t["jax.jit"]
            rows.append(row)
            print(table([row], list(row)), flush=True)
    return rows


CHILD = """
import sys, time, statistics
sys.path.insert(0, {root!r})
import numpy as np, gpugraph as gg
x = np.linspace(-1, 1, 1 << 20, dtype=np.float32)
c = gg.jit(lambda x: x * 2 + 1, backend="cpu")
c(x)
ts = []
for _ in range(40):
    t = time.perf_counter(); c(x); ts.append(time.perf_counter() - t)
print(statistics.median(ts) * 1e6)
"""


def wait_policy() -> list[dict]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for policy in ("ACTIVE", "PASSIVE"):
        env = {**os.environ, "OMP_WAIT_POLICY": policy, "GPUGRAPH_CPU_NATIVE": "all"}
        out = subprocess.run(
            [sys.executable, "-c", CHILD.format(root=root)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        us = float(out.stdout.strip().splitlines()[-1])
        rows.append(
            {"workload": f"2-op, 2^20 elements, OMP_WAIT_POLICY={policy}", "cpu_all us": us}
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    sizes = [8, 1024, 8192, 65536] if a.quick else [8, 1024, 4096, 8192, 16384, 65536, 1 << 20]
    load_before = load_average()
    rows = measure(sizes, rounds=5 if a.quick else 11) + wait_policy()
    cols = ["workload", "elements", "numpy us", "cpu_all us", "cpu_policy us", "jax.jit us"]
    cols += ["cpu_all/numpy", "cpu_policy/numpy", "cpu_policy/jax"]
    note = (
        "Per-call medians (us); ratios < 1: the cpu backend is faster. cpu_all compiles every "
        "fused group (GPUGRAPH_CPU_NATIVE=all); cpu_policy is the default (groups under "
        "NATIVE_MIN_ELEMENTS or with a broadcast operand on the NumPy fused runner). The wait "
        "policy rows are separate processes (libgomp reads OMP_WAIT_POLICY when it loads). "
        f"Load average before: {load_before}; the 2-core box is shared with other jobs."
    )
    print(write("cpu-policy", rows, {"note": note}, cols))


if __name__ == "__main__":
    main()
