"""backend="cpu" runner for fused_reduce groups: the CPU row kernel (codegen/cpu_reduce.py),
compiled in the backend's batch with the elementwise kernels (same cache, same extension
entry point, same threading threshold in elements). A body the kernel cannot express, and a
max over rows of no columns (NumPy raises there, and so must we), run on the NumPy row-block
runner, with ``cpu_refusal`` saying why in ``explain()``."""

from __future__ import annotations

from ..codegen.cpu_reduce import cpu_row_kernel
from ..errors import UnsupportedError
from ..ir import Node
from ..ops.fused_reduce import FUSED_REDUCE, _prepare_numpy, _space
from .base import Runner
from .cpu_backend import CpuBackend, kernel_runner


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
    if any(v.dtype.name == "bfloat16" for v in body.values()):
        # the row kernel's loads and stores have no bfloat16 rules (elementwise groups do)
        return _refused(node, backend, "cpu row kernel: bfloat16 values are not rendered")
    try:
        rk = cpu_row_kernel(body, space)
    except UnsupportedError as exc:
        return _refused(node, backend, str(exc))
    n = rk.n if space.rows else 0
    return kernel_runner(node, backend, rk.source, rk.name, n, kernel_n=rk.n)


FUSED_REDUCE.extra["prepare"]["cpu"] = prepare_fused_reduce
