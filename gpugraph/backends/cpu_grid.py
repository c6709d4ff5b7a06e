"""backend="cpu" runner for fused_grid_reduce groups (column and full reductions): the CPU grid
kernel (codegen/cpu_grid.py), compiled in the backend's batch with the other kernels (same
cache, entry point and runner; the columns are the iteration space split over threads). A body
the kernel cannot express (several reductions in one pass, a middle run of axes, float16 ...)
and a max or min over no rows (NumPy raises there, and so must we) run on the NumPy blocked
runner, with ``cpu_refusal`` saying why in ``explain()``."""

from __future__ import annotations

import math

from ..codegen.cpu_grid import cpu_grid_kernel, native_form_refusal
from ..errors import UnsupportedError
from ..ir import Node
from ..ops.fused_grid_reduce import FUSED_GRID_REDUCE, _prepare_numpy
from .base import Runner
from .cpu_backend import CpuBackend, _native_refusal, kernel_runner


def _refused(node: Node, backend: CpuBackend, why: str) -> Runner:
    runner = _prepare_numpy(node, backend)
    runner.cpu_refusal = why  # type: ignore[attr-defined]
    return runner


def prepare_fused_grid_reduce(node: Node, backend: CpuBackend) -> Runner:
    body = node.attrs["body"]
    axes = int(node.attrs["axes"])
    form = native_form_refusal(body, int(node.attrs.get("start", 0)))
    if form is not None:
        return _refused(node, backend, form)
    reduction = next(n for n in body.nodes if n.op in ("sum", "max", "min"))
    rows = math.prod(reduction.inputs[0].shape[:axes])
    if rows == 0 and reduction.op != "sum":
        return _refused(node, backend, f"a {reduction.op} over 0 rows (NumPy raises)")
    refusal = _native_refusal(body)
    if refusal is None and any(v.dtype.name == "bfloat16" for v in body.values()):
        # the grid kernel's loads have no bfloat16 rules (it did not compile; elementwise do)
        refusal = "cpu grid kernel: bfloat16 values are not rendered"
    if refusal is not None:
        return _refused(node, backend, refusal)
    try:
        gk = cpu_grid_kernel(body, axes)
    except UnsupportedError as exc:
        return _refused(node, backend, str(exc))
    return kernel_runner(node, backend, gk.source, gk.name, gk.cols, kernel_n=gk.cols)


FUSED_GRID_REDUCE.extra["prepare"]["cpu"] = prepare_fused_grid_reduce
