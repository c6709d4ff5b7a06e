"""CuPy lowering of ops backed by the hand-written sources in kernels/."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..ir import Node
from ..kernel_files import kernel_source
from ..ops.index import take_rows
from ..ops.registry import get_op

TAKE_GRAD_KERNELS = {
    np.dtype("float32"): "gg_take_grad_f32",
    np.dtype("float64"): "gg_take_grad_f64",
}


def take_grad_geometry(g_shape, idx_size: int, axis: int, dim: int) -> tuple[int, int, int, int]:
    """(outer, n_idx, inner, dim): the 3-D view the take_grad kernel works on."""
    outer = int(np.prod(g_shape[:axis], dtype=np.int64))
    inner = int(np.prod(g_shape[axis:], dtype=np.int64)) // max(idx_size, 1)
    return outer, idx_size, inner, dim


@functools.cache
def _raw_kernel(name: str) -> Any:
    import cupy

    return cupy.RawKernel(kernel_source("take_grad.cu"), name)


def prepare_take_grad(node: Node, backend: Any) -> Any:
    dtype = node.outputs[0].type.dtype
    if dtype not in TAKE_GRAD_KERNELS:  # ints: CuPy's generic scatter_add is fine
        return backend.generic_runner(node)
    cp = backend.xp
    axis, dim = node.attrs["axis"], node.attrs["dim"]
    mode = node.attrs.get("mode", "raise")
    g_type, idx_type = node.inputs[0].type, node.inputs[1].type
    geometry = take_grad_geometry(g_type.shape, idx_type.size, axis, dim)
    total = geometry[0] * geometry[1] * geometry[2]
    threads = 256
    blocks = max(1, min((total + threads - 1) // threads, 65535))

    def run(ins: list, outs: list) -> None:
        g, idx = ins
        out = outs[0]
        out.fill(0)
        if total:
            kernel = _raw_kernel(TAKE_GRAD_KERNELS[dtype])
            # rows in [0, dim) under the op's mode, the rule every backend follows
            idx64 = cp.ascontiguousarray(take_rows(cp, idx, dim, mode), dtype=cp.int64)
            args = (cp.ascontiguousarray(g), idx64, out, *map(np.int64, geometry))
            kernel((blocks,), (threads,), args)

    return run


def register_cupy_kernels() -> None:
    get_op("take_grad").extra.setdefault("prepare", {})["cupy"] = prepare_take_grad
