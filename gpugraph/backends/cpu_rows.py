"""backend="cpu" runner for fused_reduce groups: the CPU row kernel (codegen/cpu_reduce.py),
compiled in the backend's batch with the elementwise kernels (same cache, same extension
entry point, same threading threshold in elements). A body the kernel cannot express, and a
max over rows of no columns (NumPy raises there, and so must we), run on the NumPy row-block
runner, with ``cpu_refusal`` saying why in ``explain()``."""

from __future__ import annotations

import math

import numpy as np

from ..codegen.cpu_reduce import cpu_row_kernel
from ..errors import UnsupportedError
from ..ir import Node
from ..ops.fused_reduce import FUSED_REDUCE, _prepare_numpy, _space
from .base import Runner
from .cpu_backend import CHUNK_ALIGN, CpuBackend, parallel_min


def _refused(node: Node, backend: CpuBackend, why: str) -> Runner:
    runner = _prepare_numpy(node, backend)  # a bound method: give it a function to tag
    run = lambda ins, outs: runner(ins, outs)  # noqa: E731
    run.cpu_refusal = why  # type: ignore[attr-defined]
    return run


def prepare_fused_reduce(node: Node, backend: CpuBackend) -> Runner:
    space = _space(node)
    body = node.attrs["body"]
    if space.cols == 0 and any(n.op == "max" for n in body.nodes):
        return _refused(node, backend, "a max over rows of 0 columns (NumPy raises)")
    try:
        rk = cpu_row_kernel(body, space)
    except UnsupportedError as exc:
        return _refused(node, backend, str(exc))
    params = [(v.type.dtype.name, v.type.size, False) for v in node.inputs]
    params += [(v.type.dtype.name, v.type.size, True) for v in node.outputs]
    kernel = backend.kernel(rk.source, rk.name, len(params), params, n=rk.n)
    n = rk.n if space.rows else 0

    def run(ins: list, outs: list) -> None:
        if n == 0:
            return
        if kernel.fn is None:
            backend.compile_pending()
        chunk = n
        if n >= parallel_min() and kernel.threads > 1:
            chunk = -(-math.ceil(n / kernel.threads) // CHUNK_ALIGN) * CHUNK_ALIGN
        args = [np.ascontiguousarray(a) for a in ins]
        targets = [o if o.flags.c_contiguous else np.empty(o.shape, o.dtype) for o in outs]
        kernel.fn(n, chunk, *[a.ctypes.data for a in args], *[t.ctypes.data for t in targets])
        for o, t in zip(outs, targets):
            if o is not t:
                o[...] = t

    def inline(args: list[str], dests: list[str], prefix: str) -> tuple[list[str], dict]:
        """As for elementwise groups (cpu_backend._native_runner): the extension function on
        the arrays themselves, else ``run`` (ctypes, on contiguous copies)."""
        slow = f"{prefix}run([{', '.join(args)}], [{', '.join(dests)}])"
        if kernel.fn is None:
            backend.compile_pending()
        if kernel.py is None:
            return [slow], {f"{prefix}run": run}
        return [f"{prefix}k({', '.join(args + dests)}) or {slow}"], {
            f"{prefix}run": run,
            f"{prefix}k": kernel.py,
        }

    run.cpu_kernel = kernel  # type: ignore[attr-defined]
    run.inline = inline  # type: ignore[attr-defined]
    return run


FUSED_REDUCE.extra["prepare"]["cpu"] = prepare_fused_reduce
