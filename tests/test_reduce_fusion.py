"""Row-reduction kernels (gpugraph/codegen/reduce_cuda.py): NVRTC compiles them, the emulator's
cooperative launch runs them against NumPy, and a planted missing barrier is caught."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import check_nvrtc, edge_values, requires_emulator, requires_nvrtc

import gpugraph as gg
from gpugraph.codegen.reduce_cuda import (
    MAX_ROW_BLOCK,
    RowProgram,
    RowStage,
    emit_row_kernel,
    row_block,
    row_launch,
)
from gpugraph.codegen.reduce_graph import row_program
from gpugraph.errors import UnsupportedError
from gpugraph.ir import Graph, TensorType
from gpugraph.pytree import flatten
from gpugraph.testing.emulator import KernelRuntimeError, load_kernels
from gpugraph.trace import trace_flat

EPS = 1e-5
PROGRAMS: dict[str, RowProgram] = {
    "softmax": RowProgram(
        (RowStage("m", "max", "x"), RowStage("s", "sum", "expf(x - m)")),
        elementwise="expf(x - m) / s",
    ),
    "log_softmax": RowProgram(
        (RowStage("m", "max", "x"), RowStage("s", "sum", "expf(x - m)")),
        elementwise="x - m - logf(s)",
    ),
    "logsumexp": RowProgram(
        (RowStage("m", "max", "x"), RowStage("s", "sum", "expf(x - m)")), per_row="m + logf(s)"
    ),
    "layer_norm": RowProgram(
        (RowStage("s1", "sum", "x"), RowStage("s2", "sum", "(x - s1 / n) * (x - s1 / n)")),
        elementwise=f"(x - s1 / n) * rsqrtf(s2 / n + {EPS}f)",
        per_row=f"rsqrtf(s2 / n + {EPS}f)",  # the rstd a backward pass saves
    ),
    "rms_norm": RowProgram(
        (RowStage("ss", "sum", "x * x"),), elementwise=f"x * rsqrtf(ss / n + {EPS}f)"
    ),
}
F = np.float32


def _reference(kind: str, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """NumPy in float32, the same formulas (max-shifted exponentials, two-pass variance)."""
    n = F(x.shape[1])
    with np.errstate(all="ignore"):
        if kind in ("softmax", "log_softmax", "logsumexp"):
            m = np.max(x, axis=1, keepdims=True, initial=-np.inf)
            s = np.sum(np.exp(x - m), axis=1, keepdims=True, dtype=F)
            return {
                "softmax": (np.exp(x - m) / s, None),
                "log_softmax": (x - m - np.log(s), None),
                "logsumexp": (None, (m + np.log(s))[:, 0]),
            }[kind]
        if kind == "layer_norm":
            mean = np.sum(x, axis=1, keepdims=True, dtype=F) / n
            var = np.sum((x - mean) ** 2, axis=1, keepdims=True, dtype=F) / n
            rstd = F(1) / np.sqrt(var + F(EPS))
            return (x - mean) * rstd, rstd[:, 0]
        ms = np.sum(x * x, axis=1, keepdims=True, dtype=F) / n
        return x / np.sqrt(ms + F(EPS)), None


def _kernels(bug: bool = False) -> dict:
    emitted = {k: emit_row_kernel(p) for k, p in PROGRAMS.items()}
    sources = {}
    for kind, kernel in emitted.items():
        source = kernel.source
        if bug:  # planted: drop the barrier that protects the reused partials buffer
            source = source.replace("__syncthreads();  // the next reduction reuses part", "")
            source = source.replace("GG_ROW_REDUCE_DEFINED", "GG_ROW_REDUCE_BUG_DEFINED")
        sources[kind] = (source, kernel.name)
    loaded = load_kernels(list(sources.values()))
    return {kind: (emitted[kind], loaded[sources[kind][1]]) for kind in emitted}


def _run(kind: str, x: np.ndarray, grid: int, block: int, bug: bool = False):
    row_kernel, emulated = _kernels(bug)[kind]
    out = np.full(x.shape, np.nan, F) if PROGRAMS[kind].elementwise else None
    row_out = np.full(x.shape[0], np.nan, F) if PROGRAMS[kind].per_row else None
    emulated(grid, block, row_kernel.args(x, out, row_out))
    return out, row_out


def _check(kind: str, x: np.ndarray, got) -> None:
    want = _reference(kind, x)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-6, equal_nan=True)


@requires_nvrtc
@pytest.mark.parametrize("kind", sorted(PROGRAMS))
def test_row_kernels_compile_under_nvrtc(kind: str) -> None:
    kernel = emit_row_kernel(PROGRAMS[kind])
    check_nvrtc(kernel.source, f"{kernel.name}.cu")


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("kind", sorted(PROGRAMS))
def test_row_kernels_match_numpy(kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    # rows of 0 and 1 columns, not multiples of the warp or block, and long enough for a
    # multi-warp block (row_block(2500) == 96: three warps, not a power of two)
    for cols in (0, 1, 31, 33, 257, 2500):
        x = rng.uniform(-3, 3, (5, cols)).astype(F)
        grid, block = row_launch(5, cols, sm_count=1, blocks_per_sm=2)  # 2 blocks: grid-stride
        _check(kind, x, _run(kind, x, grid, block))


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("block", [32, 64, 96, 1024])
def test_row_kernels_any_block_size(block: int) -> None:
    x = np.random.default_rng(block).standard_normal((3, 300)).astype(F)
    for kind in ("softmax", "layer_norm"):
        _check(kind, x, _run(kind, x, 2, block))


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "logsumexp"])
def test_row_kernels_edge_values(kind: str) -> None:
    """Signed zeros, the exp overflow edge, +-inf and NaN: max-shifted sums of values in [0, 1]
    do not depend on the summation order, so the kernel must agree with NumPy exactly as to
    where inf and NaN come out. (Norms of rows holding +-1e30 are order-dependent; not here.)"""
    rng = np.random.default_rng(7)
    edges = edge_values(F)
    x = rng.uniform(-3, 3, (8, 40)).astype(F)
    x[0, :] = -np.inf  # all -inf: NaN everywhere, as in NumPy
    x[1, 3] = np.inf
    x[2, 5] = np.nan
    x[3:] = np.where(rng.random((5, 40)) < 0.3, rng.choice(edges, (5, 40)), x[3:])
    x[7, :] = 88.8  # the float32 exp overflow edge, shifted away by the max
    _check(kind, x, _run(kind, x, 3, 64))


@pytest.mark.emulator
@requires_emulator
def test_missing_barrier_in_row_kernel_is_caught() -> None:
    """Without the closing barrier, layer_norm's second sum overwrites the partials its first
    sum's readers may still need. (Softmax's max and sum use different buffers, and the
    next row's max is fenced by the sum's barrier: there the barrier is not needed, and the
    emulator rightly reports nothing.)"""
    x = np.random.default_rng(0).standard_normal((2, 200)).astype(F)
    with pytest.raises(KernelRuntimeError, match=r"race on shared part\[0\]: read by several"):
        _run("layer_norm", x, 1, 64, bug=True)
    _check("softmax", x, _run("softmax", x, 1, 64, bug=True))


def test_row_block_sizes() -> None:
    assert row_block(0) == row_block(1) == row_block(1024) == 32
    assert row_block(1025) == 64
    assert row_block(10**6) == MAX_ROW_BLOCK
    assert all(row_block(c) % 32 == 0 for c in range(0, 20000, 97))
    assert row_launch(0, 10, sm_count=4) == (1, 32)


def test_row_program_rejects_bad_programs() -> None:
    with pytest.raises(UnsupportedError, match="not one of"):
        RowProgram((RowStage("m", "argmax", "x"),), per_row="m")
    with pytest.raises(UnsupportedError, match="free C identifier"):
        RowProgram((RowStage("x", "sum", "x"),), per_row="x")
    with pytest.raises(UnsupportedError, match="no output"):
        RowProgram((RowStage("m", "sum", "x"),))


# Row programs from traced graphs (codegen/reduce_graph.py): the bodies a fused reduction
# group will hold, rendered, compiled and run against gpugraph's existing (unfused) path.
def _gg_softmax(x):
    e = gg.exp(x - gg.max(x, axis=-1, keepdims=True))
    return e / gg.sum(e, axis=-1, keepdims=True)


def _gg_log_softmax(x):
    m = gg.max(x, axis=-1, keepdims=True)
    return x - m - gg.log(gg.sum(gg.exp(x - m), axis=-1, keepdims=True))


def _gg_logsumexp(x):
    m = gg.max(x, axis=-1)
    return m + gg.log(gg.sum(gg.exp(x - m[:, None]), axis=-1))


def _gg_layer_norm(x):
    d = x - gg.mean(x, axis=-1, keepdims=True)
    return d / gg.sqrt(gg.mean(d * d, axis=-1, keepdims=True) + 1e-5)


def _gg_rms_norm_and_rstd(x):
    rstd = 1.0 / gg.sqrt(gg.mean(x * x, axis=-1, keepdims=True) + 1e-6)
    return x * rstd, rstd


GRAPH_CASES = {
    "softmax": _gg_softmax,
    "log_softmax": _gg_log_softmax,
    "logsumexp": _gg_logsumexp,
    "layer_norm": _gg_layer_norm,
    "rms_norm": _gg_rms_norm_and_rstd,
}


def _traced(fn, shape) -> Graph:
    x = np.zeros(shape, F)
    return trace_flat(fn, [TensorType(shape, "float32")], flatten((x,))[1], None)[0]


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("kind", sorted(GRAPH_CASES))
def test_row_kernels_from_traced_graphs_match_unfused(kind: str) -> None:
    fn = GRAPH_CASES[kind]
    rng = np.random.default_rng(3)
    # (gpugraph rejects max over an empty row; the template tests above cover 0 columns)
    shapes = [(3, 1), (3, 33), (5, 300)]
    kernels = {}
    for shape in shapes:  # the mean's 1/n is a literal in the body: one kernel per row length
        program = row_program(_traced(fn, shape))
        kernels[shape] = emit_row_kernel(program)
        check_nvrtc(kernels[shape].source, f"{kernels[shape].name}.cu")
    loaded = load_kernels([(k.source, k.name) for k in kernels.values()])
    for shape, kernel in kernels.items():
        x = rng.uniform(-3, 3, shape).astype(F)
        want = gg.jit(fn, fuse=False)(x)  # unfused; it also adds no kernels to the sweep
        want = want if isinstance(want, tuple) else (want,)
        out = np.full(shape, np.nan, F) if kernel.program.elementwise else None
        row_out = np.full(shape[0], np.nan, F) if kernel.program.per_row else None
        grid, block = row_launch(shape[0], shape[1], sm_count=1, blocks_per_sm=2)
        loaded[kernel.name](grid, block, kernel.args(x, out, row_out))
        got = [g for g in (out, row_out) if g is not None]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g.reshape(w.shape), w, rtol=2e-5, atol=1e-6)


def test_row_program_says_why_a_body_does_not_fit() -> None:
    cases = [
        (lambda x: gg.sum(x, axis=0, keepdims=True), "only the last axis"),
        (lambda x: gg.exp(x), "reduces nothing"),
        (lambda x: (x * 2.0, x + 1.0), "at most one full-shape"),
        (lambda x: gg.sum(gg.sum(x, axis=-1, keepdims=True), axis=-1), "of a row value"),
    ]
    for fn, why in cases:
        with pytest.raises(UnsupportedError, match=why):
            row_program(_traced(fn, (4, 6)))
