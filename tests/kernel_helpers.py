"""Helpers the fusion and codegen tests share: NVRTC checks and running a graph on the emulator."""

from __future__ import annotations

import numpy as np
import pytest

from gpugraph.codegen import Kernel, emit_kernel
from gpugraph.ir import Graph
from gpugraph.ops.fused import launch_config
from gpugraph.ops.registry import get_op
from gpugraph.testing import (
    check_compiles,
    emulate_kernel,
    emulator_available,
    nvrtc_available,
    nvrtc_unavailable_reason,
)

ARCHS = ("compute_80", "compute_90")
requires_nvrtc = pytest.mark.skipif(
    not nvrtc_available(), reason=f"NVRTC missing: {nvrtc_unavailable_reason()}"
)
requires_emulator = pytest.mark.skipif(
    not emulator_available(), reason="g++ (host C++ compiler for the kernel emulator) missing"
)
EMULATOR_SMS = 2  # a tiny pretend device: grid-stride loops run several rounds
# name -> source of every kernel the codegen made during this test session (tests/conftest.py
# registers the observer; test_sweeps.py compiles them all at the end of the run)
GENERATED_KERNELS: dict[str, tuple[Kernel, Graph]] = {}  # name -> (kernel, fused body)


# text form -> final graph of every function the suite compiled (test_sweeps.py race-checks
# each one again on several streams)
COMPILED_GRAPHS: dict[str, Graph] = {}


def record_kernel(kernel: Kernel, body: Graph) -> None:
    GENERATED_KERNELS.setdefault(kernel.name, (kernel, body))


def record_compiled(compiled) -> None:
    COMPILED_GRAPHS.setdefault(str(compiled.graph), compiled.graph)


NVRTC_CHECKED: set[str] = set()  # sources that compiled for every arch in this session


def check_nvrtc(source: str, name: str = "fused.cu") -> None:
    """Compile for every arch in ARCHS, once per source per session, and not at all when the
    persistent kernel cache records that it compiled before (gpugraph.cache)."""
    if source not in NVRTC_CHECKED:
        check_compiles(source, name, ARCHS)
        NVRTC_CHECKED.add(source)


def edge_values(dtype) -> np.ndarray:
    """The inputs where formulations differ: signed zeros, the float32 exp overflow edge
    (+-88.x), huge values, the smallest normal and subnormal numbers, +-inf and NaN; for ints,
    zero, +-1 and the extremes."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return np.array([False, True])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array([0, 1, -1, info.max, info.min], np.int64).astype(dtype)  # -1 wraps
    info = np.finfo(dtype) if dtype.kind == "f" else ml_finfo(dtype)  # bfloat16: ml_dtypes
    finite = [0.0, -0.0, 1.0, -1.0, 88.0, -88.0, 88.8, -88.8, 103.0, -103.0, 1e30, -1e30]
    tiny = [float(info.tiny), -float(info.tiny), float(info.smallest_subnormal)]
    with np.errstate(over="ignore"):  # 1e30 is inf in float16: an edge all the same
        return np.array(finite + tiny + [np.inf, -np.inf, np.nan]).astype(dtype)


def ml_finfo(dtype):
    import ml_dtypes

    return ml_dtypes.finfo(dtype)


def random_array(shape, dtype, rng: np.random.Generator, edges: float = 0.0) -> np.ndarray:
    """Test data for a kernel operand: fair coin flips, small ints in [-9, 9], or floats in
    [-2, 2) (inside every op's domain but log/sqrt's, where NaN is compared as NaN).
    ``edges``: the fraction of elements (for floats and ints) replaced by ``edge_values``, so
    that sweeps meet overflow, subnormals, infinities and NaN, not only tame numbers."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        a = rng.integers(-9, 10, shape).astype(dtype)  # unsigned: the negatives wrap
    else:
        a = rng.uniform(-2, 2, shape).astype(dtype)
    if edges:
        pick = rng.random(a.shape) < edges
        a[pick] = rng.choice(edge_values(dtype), size=int(pick.sum()))
    return a


def flush_subnormals(a: np.ndarray) -> np.ndarray:
    """``a`` with float32 subnormals made (signed) zero: what CuPy's kernels see and produce,
    since CuPy compiles every kernel with -ftz=true. The host emulator and NumPy keep them."""
    a = np.array(a, copy=True)
    if a.dtype == np.float32:
        small = np.abs(a) < np.finfo(np.float32).tiny
        a[small] = np.copysign(np.float32(0), a[small])
    return a


def assert_kernel_matches(
    got, want, rtol: float, want_flushed=None, what: str = "", atol: float = 0.0
) -> None:
    """``got`` (a kernel's output) equals ``want`` (NumPy's) elementwise: NaN where NaN, the same
    infinities, finite values within rtol (no absolute slack unless ``atol``: a kernel that
    returns 0 for sigmoid(-88.8) = 2.7e-39 is wrong, however small the number). Where
    ``want_flushed`` is given (NumPy on flushed inputs, for a GPU run under -ftz), an element
    may match it instead, and a float32 subnormal expected value may come back as zero; nothing
    else is tolerated, so a real difference in formulation still fails."""
    got, want = np.asarray(got), np.broadcast_to(np.asarray(want), np.shape(got))

    def ok(w):
        w = np.broadcast_to(np.asarray(w), got.shape)
        if got.dtype.kind != "f":
            return got == w
        with np.errstate(all="ignore"):
            close = np.isclose(got, w, rtol=rtol, atol=atol)
        return (np.isnan(got) & np.isnan(w)) | (got == w) | (close & np.isfinite(w))

    good = ok(want)
    if want_flushed is not None:
        good |= ok(want_flushed) | ok(flush_subnormals(want))
    bad = np.flatnonzero(~good)
    assert not bad.size, (
        f"{what}: {bad.size} elements differ, e.g. got {got.reshape(-1)[bad[:4]]} "
        f"where NumPy gives {want.reshape(-1)[bad[:4]]}"
    )


def emulate_fused(
    node_attrs: dict, ins: list[np.ndarray], out_types, misalign: int = 0
) -> list[np.ndarray]:
    """Run a fused node's generated kernel on the host, as the CuPy runner would launch it;
    ``misalign`` bytes off 256-byte alignment for every array (emulate_kernel)."""
    outs = [np.full(t.shape, 0, dtype=t.dtype) for t in out_types]
    if "row_block" in node_attrs:  # a fused_reduce row kernel: a block per row
        return _emulate_rows(node_attrs, ins, outs, misalign)
    if "grid_kernels" in node_attrs:  # a fused_grid_reduce kernel pair
        return _emulate_grid(node_attrs, ins, outs, misalign)
    n = int(np.prod(out_types[0].shape, dtype=np.int64))
    grid, block = launch_config(n, EMULATOR_SMS, node_attrs["lanes"])
    block = min(block, 64)  # fewer threads per block keeps the emulator quick; still strided
    args = [np.ascontiguousarray(a) for a in ins] + outs
    if n:
        source, name = node_attrs["cuda_source"], node_attrs["kernel_name"]
        emulate_kernel(source, name, grid, block, args, misalign)
    return outs


def _emulate_rows(attrs: dict, ins: list, outs: list, misalign: int) -> list[np.ndarray]:
    """A row kernel (codegen/reduce_graph.row_kernel) on the cooperative emulator: at most 64
    threads per row (still several warps for long rows) and a grid-stride over the rows; the
    register variant (``row_items``) gets its block, which it needs to hold the row."""
    rows, cols = attrs["rows"], attrs["cols"]
    grid = max(1, min(rows, EMULATOR_SMS))
    block = attrs["row_block"] if attrs.get("row_items") else min(attrs["row_block"], 64)
    args = [np.ascontiguousarray(a) for a in ins] + outs + [np.int64(rows), np.int64(cols)]
    if rows:
        emulate_kernel(attrs["cuda_source"], attrs["kernel_name"], grid, block, args, misalign)
    return outs


def _emulate_grid(attrs: dict, ins: list, outs: list, misalign: int) -> list[np.ndarray]:
    """A grid kernel pair (codegen/reduce_grid.py) launched as the CuPy runner launches it:
    inputs viewed by kind, a NaN-filled workspace, stage 1 then stage 2."""
    kernels, shape = attrs["grid_kernels"], tuple(attrs["grid_shape"])
    views = {"full": shape, "row": (-1,), "col": (-1,), "scalar": (1,)}
    kinds = [kind for _, kind in kernels.program.in_types]
    xs = [np.ascontiguousarray(a).reshape(views[k]) for a, k in zip(ins, kinds)]
    size, dtype = kernels.workspace(shape)
    work = np.full(size, np.nan, dtype)
    for step in kernels.launches(xs, work, [o.reshape(-1) for o in outs], shape):
        emulate_kernel(
            kernels.source, step.kernel, step.grid, step.block, list(step.args), misalign
        )
    return outs


def run_graph_emulated(
    graph: Graph,
    args: list[np.ndarray],
    check_compile: bool = True,
    stride_bug: bool = False,
    misalign: int = 0,
):
    """Evaluate ``graph``: fused nodes (and fused_reduce nodes' row kernels) on the kernel
    emulator, everything else with NumPy. ``stride_bug`` regenerates every elementwise kernel
    with corrupted broadcast strides (a planted bug); ``misalign`` shifts every kernel
    argument off its alignment by that many bytes."""
    env = dict(zip(graph.inputs, args))
    for node in graph.nodes:
        ins = [env[v] for v in node.inputs]
        if node.op == "fused_reduce" and "cuda_source" in node.attrs:
            if check_compile:
                check_nvrtc(node.attrs["cuda_source"])
            outs = emulate_fused(node.attrs, ins, [v.type for v in node.outputs], misalign)
        elif node.op == "fused":
            attrs = node.attrs
            if stride_bug:
                k = emit_kernel(attrs["body"], stride_bug=True)
                attrs = k.attrs()
            if check_compile:
                check_nvrtc(attrs["cuda_source"])
            outs = emulate_fused(attrs, ins, [v.type for v in node.outputs], misalign)
        elif node.op == "constant":
            outs = [np.asarray(node.attrs["value"])]
        else:
            r = get_op(node.op).impl(np, *ins, **node.attrs)
            outs = list(r) if isinstance(r, tuple) else [r]
        env.update(zip(node.outputs, outs))
    return [env[v] for v in graph.outputs]
