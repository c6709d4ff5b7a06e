"""Which fused groups the native cpu backend compiles (``policy_refusal``), and whether it can
run here at all (``probe``, what ``backend="auto"`` asks; base.py). The backend itself, its
compiling and its calls, is ``cpu_backend.py``."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import numpy as np

from ..errors import UnsupportedError
from ..ir import GraphBuilder, Node, TensorType
from . import cpu_native
from .base import BackendInfo

# Which fused groups run natively: "auto" (default) all but those the native path makes slower
# (policy_refusal), "all" every group it can compile (the tests, to cover every kernel).
NATIVE_ENV = "GPUGRAPH_CPU_NATIVE"
# No size rule: through the extension module a native call costs ~0.07 us, and a native group
# was faster than the NumPy fused runner from 8 elements on in every workload measured (0.6-0.9x
# at 8-4096 elements; bench/results/cpu-policy-cpu-2026-12-01-2.md). The 8,192-element floor of
# the ctypes days (~1 us per array argument) stays only where calls still go through ctypes
# (no Python or NumPy headers to build the module with; cpu_native.include_flags):
# bench/results/cpu-policy-cpu-2026-12-01.md measured native losing under ~8K elements there.
CTYPES_MIN_ELEMENTS = 8192
#
# Math-library calls whose SIMD versions (libmvec, NumPy's own loops) are lost in a loop that
# does per-element index math: a flat-kernel broadcast group calling one runs each call scalar
# (tanh(x + b) over 3-column rows: 2-14x slower than NumPy), while the same group with plain
# arithmetic still wins (0.3-0.7x; the row3 rows of the -2 results). Spelled as the generated
# CUDA source calls them (float overloads, or the f-suffixed names).
_LIBM_CALL = re.compile(
    r"\b((?:exp|exp2|expm1|log|log2|log10|log1p|sin|cos|tan|asin|acos|atan|atan2|sinh|cosh"
    r"|tanh|asinh|acosh|atanh|pow|erf|erfc|cbrt|lgamma|tgamma)f?)\("
)


def status() -> str:
    """One line for ``python -m gpugraph info``: whether backend="cpu" can be used, and how."""
    found = probe()
    if found.name != "cpu":
        return f"unavailable: {found.reason}"
    try:
        mode = native_mode()
    except UnsupportedError as exc:  # a bad $GPUGRAPH_CPU_NATIVE: say so, do not fail info
        mode = str(exc)
    from . import cpu_backend as cb

    return f"available: {cb.compiler()} {cb._shown_flags()}; native groups: {mode}"


def native_mode() -> str:
    mode = os.environ.get(NATIVE_ENV, "auto").strip().lower()
    if mode not in ("auto", "all"):
        raise UnsupportedError(f"{NATIVE_ENV}={mode!r}: use 'auto' or 'all'")
    return mode


@functools.lru_cache(maxsize=1)
def probe() -> BackendInfo:
    """("cpu", how) when the host compiler builds, and the process loads and runs, a generated
    kernel with this backend's prelude and flags; else ("numpy", why not). Once per process;
    after the first time on a machine the library comes from the persistent cache, so a probe
    costs the compiler's ``--version`` and a load."""
    try:
        return _probe()
    except Exception as exc:  # any failure means: not usable here, and why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return BackendInfo("numpy", f"the cpu backend cannot run here: {first}")


def _probe() -> BackendInfo:
    from ..codegen import emit_kernel
    from . import cpu_backend as cb

    b = GraphBuilder()
    x = b.add_input(TensorType((67,), np.dtype(np.float32)))
    two = b.add_node("constant", [], {"value": np.array(2.0)}, [TensorType((), x.dtype)]).output
    y = b.add_node("multiply", [x, two], {}, [x.type]).output
    body = b.build([b.add_node("tanh", [y], {}, [x.type]).output])
    k = emit_kernel(body)
    attrs = {"body": body, "cuda_source": k.source, "kernel_name": k.name}
    node = Node("fused", body.inputs, attrs, [x.type])
    backend = cb.CpuBackend()
    run = cb._native_runner(node, backend)
    backend.compile_pending()
    xs = np.linspace(-3, 3, 67, dtype=np.float32)
    out = np.full(67, np.nan, np.float32)
    run([xs], [out])
    if not np.allclose(out, np.tanh(xs * 2), rtol=1e-5, atol=1e-6):
        return BackendInfo("numpy", "the cpu backend's probe kernel computed wrong results")
    return BackendInfo(
        "cpu",
        f"{Path(cb.compiler()).name} built and ran a probe kernel ({cb.flags()[0]}"
        f"{' -march=native' if '-march=native' in cb.flags() else ''})",
    )


def policy_refusal(node: Node, has_nest: bool) -> str | None:
    """Why the NumPy fused runner beats the native kernel on this group, if it does (measured
    in bench/results/cpu-policy-cpu-2026-12-01-2.md); None: run it natively. ``has_nest``:
    cpu_loops renders the group as a row x column loop nest."""
    if native_mode() == "all":
        return None
    n = node.outputs[0].type.size
    if n < CTYPES_MIN_ELEMENTS and cpu_native.include_flags() is None:
        return (
            f"{n} elements, under {CTYPES_MIN_ELEMENTS}, and kernels are called through ctypes "
            f"here (no Python or NumPy headers for the extension module): the call's fixed cost "
            f"is more than the loop saves (${NATIVE_ENV}=all compiles it anyway)"
        )
    broadcast = [j for j, v in enumerate(node.inputs) if v.type.size not in (n, 1)]
    if not broadcast or has_nest:
        return None  # a plain loop, or a row x column loop nest: both vectorize
    call = _LIBM_CALL.search(node.attrs["cuda_source"])
    if call is None:
        return None  # scalar index math, but no vector math lost: still faster than NumPy
    return (
        f"input {broadcast[0]} is broadcast ({node.inputs[broadcast[0]].type.shape} over "
        f"{node.outputs[0].type.shape}), no row x column loop nest fits (under 16 columns a "
        f"row) and the group calls {call.group(1)}: in the flat loop's per-element index math "
        f"it runs scalar, not vectorized (${NATIVE_ENV}=all compiles it anyway)"
    )


# One-op kernels for elementwise ops outside groups (cpu_unfused). Measured one op per plan,
# fuse=False, float32, native / NumPy backend ("Sizes" in
# bench/results/dispatch-cpubackend-cpu-2026-12-01-4.md): a math-library op (tanh, exp, sin)
# wins up to 2^8 elements (0.83-0.95: the ufunc's fixed cost) and loses from 2^9-2^10 on
# (1.02-1.19 there, 1.7-3.3 from 2^14: NumPy's SIMD loops beat glibc's and libmvec's); plain
# arithmetic (add) wins up to 2^14 (0.79-0.91) and loses slightly from 2^16 (1.08-1.09,
# memory-bound both ways).
UNFUSED_LIBM_MAX = 1 << 9
UNFUSED_ARITH_MAX = 1 << 16


def unfused_refusal(group: Node) -> str | None:
    """Why the elementwise op in the one-op group ``group`` stays a NumPy ufunc call, if it
    does; None: run it as a native kernel."""
    if native_mode() == "all":
        return None
    n = group.outputs[0].type.size
    if cpu_native.include_flags() is None:
        return "kernels are called through ctypes here (~1 us per argument, more than a ufunc)"
    call = _LIBM_CALL.search(group.attrs["cuda_source"])
    if call is not None and n >= UNFUSED_LIBM_MAX:
        return f"{n} elements and it calls {call.group(1)}: NumPy's SIMD loop is faster"
    if n >= UNFUSED_ARITH_MAX:
        return f"{n} elements: memory-bound, the ufunc's fixed cost no longer matters"
    return None


def float_to_int_cast(body) -> str | None:
    """Why a group body cannot run natively because of a float -> int cast (undefined in C for
    NaN, inf and out-of-range values), or None. The fused-group runner and native loops ask."""
    for n in body.nodes:
        if n.op == "astype" and n.inputs[0].dtype.kind == "f" and n.output.dtype.kind in "iu":
            return (
                f"a {n.inputs[0].dtype} -> {n.output.dtype} cast (undefined in C for NaN, inf "
                "and out-of-range values, where NumPy's result is defined by its own loop)"
            )
    return None
