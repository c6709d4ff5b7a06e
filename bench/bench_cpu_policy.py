"""Which fused groups the native cpu backend should compile (cpu_select.policy_refusal), and
what backend="auto" costs against the NumPy backend it replaces on a machine without a GPU.

Per size (elements) and workload, per call: the NumPy backend's fused runner, the cpu
backend compiling every group (GPUGRAPH_CPU_NATIVE=all), the cpu backend's default policy
(short-row broadcast groups that call tanh, exp, ... on the NumPy runner), and jax.jit (the
strongest installed peer). Workloads: 2-op (x * 2 + 1), chain8 (4 x tanh(x * 1.1 + 0.1)),
bias + GELU(tanh) + residual (a (rows, 256) matrix plus a (256,) bias: a broadcast operand,
the row x column loop nest), and two over 3-column rows plus a (3,) row, too short for the
loop nest: tanh(x + b) * 5 ("row3 tanh") and x * b + 1 ("row3 arith"). Interleaved rounds,
medians (bench/common.py). Then, in child processes, 2^20 elements: on the calling thread (the
default, under GPUGRAPH_CPU_PARALLEL_MIN) and on the OpenMP parallel path (the threshold set to
2^20) under libgomp's default wait policy and under OMP_WAIT_POLICY=PASSIVE (the backend's).

    python bench/bench_cpu_policy.py [--quick] [--tag 2]
writes bench/results/cpu-policy-cpu-<date>[-<tag>].{md,json}
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import common
import numpy as np
from common import gg, interleaved, load_average, table, write


def two_op(x):
    return x * 2 + 1


def chain8(x, tanh=gg.tanh):
    for _ in range(4):
        x = tanh(x * 1.1 + 0.1)
    return x


def _gelu_tanh(v):
    return gg.gelu(v, "tanh")


# A named default, not a lambda: autograph's source check takes a lambda in a default for
# changed source (StaleSourceError), a bug outside this benchmark.
def bias_gelu(x, b, r, gelu=_gelu_tanh):
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
        "row3 tanh": lambda x, b: row3_tanh(x, b, jnp.tanh),
        "row3 arith": row3_arith,
    }
    f = jax.jit(fns[fn_name])
    return lambda *a: f(*a).block_until_ready()


def _args(workload: str, n: int) -> tuple:
    x = np.linspace(-2, 2, n, dtype=np.float32)
    if workload.startswith("row3"):
        xr = np.linspace(-2, 2, 3 * (n // 3 or 1), dtype=np.float32).reshape(-1, 3)
        return xr, np.linspace(0, 1, 3, dtype=np.float32)
    if workload != "bias+gelu+res":
        return (x,)
    cols = 256 if n >= 256 else n
    xm = x.reshape(-1, cols)
    return xm, np.linspace(0, 1, cols, dtype=np.float32), xm.copy()


def row3_tanh(x, b, tanh=gg.tanh):
    return tanh(x + b) * 5


def row3_arith(x, b):
    return x * b + 1


WORKLOADS = {
    "2-op": two_op,
    "chain8": chain8,
    "bias+gelu+res": bias_gelu,
    "row3 tanh": row3_tanh,
    "row3 arith": row3_arith,
}


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
            # from 2^16 elements on, a pause before each contender: jax.jit's thread pool spins
            # after its work and slowed the calls after it by up to 5x on the 2-core box
            pause = 0.02 if n >= 1 << 16 else 0.0
            t = interleaved(calls, rounds=rounds, inner=inner, pause=pause)
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
    runs = {"serial (default threshold)": {}}
    for policy in ("ACTIVE", "PASSIVE"):
        runs[f"OpenMP, OMP_WAIT_POLICY={policy}"] = {
            "OMP_WAIT_POLICY": policy,
            "GPUGRAPH_CPU_PARALLEL_MIN": str(1 << 20),
        }
    for label, extra in runs.items():
        env = {**os.environ, "GPUGRAPH_CPU_NATIVE": "all", **extra}
        out = subprocess.run(
            [sys.executable, "-c", CHILD.format(root=root)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        us = float(out.stdout.strip().splitlines()[-1])
        rows.append({"workload": f"2-op, 2^20 elements, {label}", "cpu_all us": us})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tag", default="", help="suffix of the results file names")
    a = p.parse_args()
    sizes = (
        [8, 1024, 8192, 65536]
        if a.quick
        else [8, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536, 1 << 20]
    )
    load_before = load_average()
    rows = measure(sizes, rounds=5 if a.quick else 11) + wait_policy()
    cols = ["workload", "elements", "numpy us", "cpu_all us", "cpu_policy us", "jax.jit us"]
    cols += ["cpu_all/numpy", "cpu_policy/numpy", "cpu_policy/jax"]
    note = (
        "Per-call medians (us); ratios < 1: the cpu backend is faster. cpu_all compiles every "
        "fused group (GPUGRAPH_CPU_NATIVE=all); cpu_policy is the default (groups under "
        "broadcast groups that no row x column loop nest fits and that call tanh, exp, ... on "
        "the NumPy fused runner; row3 workloads have 3 * (elements // 3) elements). The wait "
        "policy rows are separate processes (libgomp reads OMP_WAIT_POLICY when it loads). "
        f"Load average before: {load_before}; the 2-core box is shared with other jobs."
    )
    if not a.tag:
        print(write("cpu-policy", rows, {"note": note}, cols))
        return
    results, common.RESULTS = common.RESULTS, Path(tempfile.mkdtemp())
    try:  # write() names files by date only: write aside, then move in with the tag
        md = write("cpu-policy", rows, {"note": note}, cols)
    finally:
        tmp, common.RESULTS = common.RESULTS, results
    for f in (md, md.with_suffix(".json")):
        dest = results / f"{f.stem}-{a.tag}{f.suffix}"
        shutil.move(str(f), dest)
        print(dest)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
