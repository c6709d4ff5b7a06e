"""The runners of native cpu kernels (split from cpu_backend.py, which re-exports these
names): a fused elementwise group's (``_prepare_fused``: its loop-nest or flat kernel, or the
NumPy fused runner where a refusal or the policy says so, with the reason for ``explain()``),
and ``kernel_runner``, the call of one compiled kernel that the row, grid and one-op runners
share: the extension function on the arrays themselves where it accepts them, else ctypes on
contiguous copies, over OpenMP chunks above the parallel threshold."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np

from ..codegen.cpu_loops import MIN_INNER, emit_cpu_kernel
from ..codegen.cpu_tiled import emit_tiled_kernel
from ..codegen.cuda import Kernel
from ..ir import Graph, Node
from ..ops.fused import _prepare_numpy, copy_back, staged_targets
from . import cpu_native
from .base import Runner
from .cpu_native import parallel_min
from .cpu_select import float_to_int_cast, policy_refusal

if TYPE_CHECKING:
    from .cpu_backend import CpuBackend

CHUNK_ALIGN = 64  # elements; chunk starts stay multiples of every vector width


def _native_refusal(body: Graph) -> str | None:
    """Why this group cannot be a native kernel, or None."""
    for v in body.values():
        if v.dtype.name not in cpu_native._NPY_TYPES:
            return f"dtype {v.dtype} (the extension entry point has no NumPy type for it)"
    return float_to_int_cast(body)


def _prepare_fused(node: Node, backend: CpuBackend) -> Runner:
    body: Graph = node.attrs["body"]
    # broadcast operands: a row x column loop nest that vectorizes (rendered once: the policy
    # and the runner both need it)
    nest = emit_cpu_kernel(body) or _tiled(body)
    refusal = _native_refusal(body) or policy_refusal(node, nest is not None)
    if refusal is not None:
        # the NumPy backend's runner itself (a new function per node), so the program keeps
        # inlining it (its ``inline`` / ``call``) as on the NumPy backend
        runner = _prepare_numpy(node, backend)
        runner.cpu_refusal = refusal  # type: ignore[attr-defined]
        return runner
    return _native_runner(node, backend, nest)


def _native_runner(node: Node, backend: CpuBackend, nest: Kernel | None = None) -> Runner:
    """The group's native runner: ``nest`` (its loop-nest kernel) when it has one, else the
    flat kernel of its CUDA source."""
    source, name = (
        (nest.source, nest.name) if nest else (node.attrs["cuda_source"], node.attrs["kernel_name"])
    )
    return kernel_runner(node, backend, source, name, node.outputs[0].type.size)


def kernel_runner(
    node: Node, backend: CpuBackend, source: str, name: str, n: int, kernel_n: int | None = None
) -> Runner:
    """The runner of one native kernel over an iteration space of ``n`` elements (split into
    chunks over the OpenMP threads above the parallel threshold), for a fused group
    (elementwise, or a row kernel: cpu_rows). ``kernel_n``: the kernel's own element count,
    when it differs from ``n``."""
    params = [(v.type.dtype.name, v.type.size, False) for v in node.inputs]
    params += [(v.type.dtype.name, v.type.size, True) for v in node.outputs]
    kernel = backend.kernel(source, name, len(params), params, n=kernel_n)

    def run(ins: list, outs: list) -> None:
        if n == 0:
            return
        if kernel.fn is None:
            backend.compile_pending()
        chunk = n
        if n >= parallel_min() and kernel.threads > 1:
            chunk = -(-math.ceil(n / kernel.threads) // CHUNK_ALIGN) * CHUNK_ALIGN
        args = [np.ascontiguousarray(a) for a in ins]
        targets = staged_targets(np, outs)
        kernel.fn(n, chunk, *[a.ctypes.data for a in args], *[t.ctypes.data for t in targets])
        copy_back(outs, targets)

    def inline(args: list[str], dests: list[str], prefix: str) -> tuple[list[str], dict]:
        """One line of the generated program: the extension function on the arrays
        themselves, falling back to ``run`` (ctypes, contiguous copies) when it declines."""
        slow = f"{prefix}run([{', '.join(args)}], [{', '.join(dests)}])"
        if kernel.fn is None:  # a plan's kernels compile before its program is generated
            backend.compile_pending()
        if kernel.py is None:
            return [slow], {f"{prefix}run": run}
        line = f"{prefix}k({', '.join(args + dests)}) or {slow}"
        return [line], {f"{prefix}run": run, f"{prefix}k": kernel.py}

    run.cpu_kernel = kernel  # type: ignore[attr-defined]
    run.inline = inline  # type: ignore[attr-defined]
    return run


def _tiled(body: Graph) -> Kernel | None:
    """Short-row broadcasts as blocks of rows with a tiled row (codegen/cpu_tiled.py), unless
    GPUGRAPH_CPU_TILED=0 (the flat kernel, for measurements)."""
    if os.environ.get("GPUGRAPH_CPU_TILED", "1") == "0":
        return None
    return emit_tiled_kernel(body, MIN_INNER)
