"""How many BLAS threads a GEMM may use inside a compiled call on the NumPy backend.

Measured on the 2-core CI box, shared with other work (``bench/results/blas-threads-*.md``,
float32, medians of 40 alternating runs): with OpenBLAS's default 2 threads, GEMMs of
30-270 MFLOP (an MLP layer at batch 128, a transformer projection) ran 10-20x *slower* than
with 1 thread, and 25-100x slower with one competing busy process, because each call waits
for a second thread that the OS has not scheduled; single calls stalled for 15-100 ms. Only
from about 1 GFLOP on did 2 threads win (0.7-0.9x the 1-thread time), and with one busy
process they lost even there (up to 1.2x). torch and jax degrade
far less because their pools do not hand tiny GEMMs to every thread.

So the policy (``GPUGRAPH_BLAS_THREADS``):

* ``auto`` (default): inside a compiled call GEMMs below ``BIG_FLOPS`` run on 1 thread, larger
  ones on the thread count the process had when the call started; the count is restored when
  the call ends. Switching costs about 1 us a call (two ctypes calls into the BLAS library).
* an integer n: every GEMM inside compiled calls uses n threads.
* ``keep``: gpugraph leaves the BLAS thread count alone.

It needs threadpoolctl (to find the BLAS library NumPy loaded); without it the count is kept.
The count is process-wide: a compiled call changes it for NumPy code other threads run at the
same time.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from ..errors import GpuGraphError

BIG_FLOPS = 1e9  # 2*m*n*k (times the batch) from which a GEMM gets every thread
ENV = "GPUGRAPH_BLAS_THREADS"


@dataclass(frozen=True)
class Policy:
    small: int  # threads for GEMMs below BIG_FLOPS (0: the caller's count)
    big: int  # threads for the others (0: the caller's count)


def policy() -> Policy | None:
    """The policy $GPUGRAPH_BLAS_THREADS asks for, or None to keep the count as it is."""
    raw = os.environ.get(ENV, "auto").strip().lower()
    if raw == "keep" or _controllers() is None:
        return None
    if raw in ("", "auto"):
        return Policy(small=1, big=0)
    try:
        n = int(raw)
    except ValueError:
        raise GpuGraphError(f"{ENV}={raw!r}: use auto, keep or a thread count") from None
    if n < 1:
        raise GpuGraphError(f"{ENV}={raw!r}: a thread count must be at least 1")
    return Policy(small=n, big=n)


@functools.cache
def _controllers() -> tuple[Any, ...] | None:
    try:
        import numpy  # noqa: F401  (loads the BLAS library threadpoolctl looks for)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    return tuple(libs) or None


def get_threads() -> int:
    libs = _controllers()
    return libs[0].get_num_threads() if libs else 0


def set_threads(n: int) -> None:
    for lib in _controllers() or ():
        lib.set_num_threads(n)


def run_small(policy: Policy | None, run: Any, ins: list, outs: list) -> None:
    """``run(ins, outs)`` with the thread count ``policy`` gives small GEMMs (a loop body's),
    then the caller's count back; with no policy, just ``run``."""
    if policy is None:
        return run(ins, outs)
    caller = get_threads()
    set_threads(policy.small or caller)
    try:
        run(ins, outs)
    finally:
        set_threads(caller)
