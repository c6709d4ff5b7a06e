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


CONCAT_KERNELS = {
    np.dtype(t): f"gg_concat_{s}"
    for t, s in (
        ("float32", "f32"),
        ("float64", "f64"),
        ("int32", "i32"),
        ("int64", "i64"),
        ("bool", "bool"),
    )
}
CONCAT_BATCH = 16  # inputs per launch: the kernel's pointer parameters (kernels/concat.cu)
THREADS = 256
MAX_BLOCKS = 1024  # the kernels stride over the rest; a few per SM keep every SM busy


@functools.cache
def _raw_kernel(name: str, file: str = "take_grad.cu") -> Any:
    import cupy

    return cupy.RawKernel(kernel_source(file), name)


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
            kernel = _raw_kernel(TAKE_GRAD_KERNELS[dtype], "take_grad.cu")
            # rows in [0, dim) under the op's mode, the rule every backend follows
            idx64 = cp.ascontiguousarray(take_rows(cp, idx, dim, mode), dtype=cp.int64)
            args = (cp.ascontiguousarray(g), idx64, out, *map(np.int64, geometry))
            kernel((blocks,), (threads,), args)

    return run


def concat_launches(
    in_shapes: list[tuple[int, ...]], axis: int
) -> tuple[int, int, list[tuple[tuple[int, int], int, list[int], list[int]]]]:
    """(outer, out_width, launches) of a concatenate along ``axis``: each launch is (grid,
    start0, input indices, widths), at most CONCAT_BATCH inputs each, widths in elements of
    each input's [outer, width] view."""
    shape = in_shapes[0]
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    widths = [s[axis] * inner for s in in_shapes]
    launches, start = [], 0
    for b in range(0, len(widths), CONCAT_BATCH):
        ws = widths[b : b + CONCAT_BATCH]
        most = max(ws) * outer
        if most:
            blocks = max(1, min(-(-most // THREADS), MAX_BLOCKS))
            launches.append(((blocks, len(ws)), start, list(range(b, b + len(ws))), ws))
        start += sum(ws)
    return outer, start, launches


def c_contiguous(a: Any) -> bool:
    try:  # CuPy keeps the bit; reading flags would make an object per call
        return a._c_contiguous
    except AttributeError:  # NumPy (the emulator tests)
        return a.flags.c_contiguous


def prepare_concatenate(node: Node, backend: Any) -> Any:
    """One kernel per 16 inputs (cupy.concatenate: one copy kernel per input, and for more than
    8 inputs a pointer table copied from the host, which capture refuses)."""
    dtype = node.outputs[0].type.dtype
    if dtype not in CONCAT_KERNELS or len(node.inputs) < 2:
        return backend.generic_runner(node)
    cp = backend.xp
    outer, out_width, plan = concat_launches(
        [v.type.shape for v in node.inputs], node.attrs["axis"]
    )
    name = CONCAT_KERNELS[dtype]
    head = (np.int64(outer), np.int64(out_width))
    # the scalars of each launch made once; the unused pointer slots repeat the first input
    # (with width 0 they are never read)
    launches = [
        (
            grid,
            np.int64(start0),
            idx,
            [np.int64(w) for w in ws] + [np.int64(0)] * (CONCAT_BATCH - len(ws)),
        )
        for grid, start0, idx, ws in plan
    ]

    def run(ins: list, outs: list) -> None:
        out = outs[0]
        target = out if c_contiguous(out) else cp.empty(out.shape, out.dtype)
        srcs = [a if c_contiguous(a) else cp.ascontiguousarray(a) for a in ins]
        kernel = _raw_kernel(name, "concat.cu")
        for grid, start0, idx, widths in launches:
            ptrs = [srcs[i] for i in idx]
            ptrs += ptrs[:1] * (CONCAT_BATCH - len(ptrs))
            args = [target, *head, start0]
            for p, w in zip(ptrs, widths):
                args += (p, w)
            kernel(grid, (THREADS,), tuple(args))
        if target is not out:
            out[...] = target

    return run


def register_cupy_kernels() -> None:
    get_op("take_grad").extra.setdefault("prepare", {})["cupy"] = prepare_take_grad
    get_op("concatenate").extra.setdefault("prepare", {})["cupy"] = prepare_concatenate
