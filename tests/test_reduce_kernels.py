"""Grid (column and full) reductions and float16 row reductions (gpugraph/codegen/reduce_grid.py,
reduce_cuda.py): every kernel here compiles under NVRTC (compute_80/90) and matches NumPy on the
emulator, for sizes that are not multiples of the warp or block, 0 and 1 included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kernel_helpers import check_nvrtc, requires_emulator, requires_nvrtc

from gpugraph.codegen.reduce_cuda import (
    PERSISTENT_MAX_COLS,
    SHARED_MAX_COLS,
    RowKernel,
    RowProgram,
    RowStage,
    emit_row_kernel,
    emit_row_kernel_for,
    persistent_block,
    row_block,
    row_plan,
)
from gpugraph.codegen.reduce_grid import (
    GridKernels,
    GridProgram,
    emit_grid_kernels,
    grid_plan,
)
from gpugraph.errors import UnsupportedError
from gpugraph.testing.emulator import KernelRuntimeError, load_kernels

DTYPES = ("float16", "float32", "float64")
# (op, prologue, epilogue, NumPy of the float64 copy x of the input along `axis`)
PROGRAMS = {
    "sum": (GridProgram("sum"), lambda x, axis: np.sum(x, axis=axis)),
    "max": (GridProgram("max"), lambda x, axis: np.max(x, axis=axis, initial=-np.inf)),
    "min": (GridProgram("min"), lambda x, axis: np.min(x, axis=axis, initial=np.inf)),
    "mean": (GridProgram.mean(), lambda x, axis: np.mean(x, axis=axis)),
    "sumsq": (GridProgram("sum", "x * x"), lambda x, axis: np.sum(x * x, axis=axis)),
    "maxabs": (
        GridProgram("max", "fabs(x)", "r * 2"),
        lambda x, axis: 2 * np.max(np.abs(x), axis=axis, initial=-np.inf),
    ),
}
TOL = {"float16": (1e-3, 1e-3), "float32": (2e-5, 1e-5), "float64": (1e-12, 1e-12)}


def _program(kind: str, dtype: str) -> GridProgram:
    base = PROGRAMS[kind][0]
    return GridProgram(base.op, base.prologue, base.epilogue, dtype)


_LOADED: dict[str, dict] = {}
# name -> source of every kernel run on the emulator here that is not a planted bug: the last
# test compiles each under NVRTC, so nothing is checked on the host only
RAN: dict[str, str] = {}


def _load(kernels: list[GridKernels]) -> None:
    """Compile every not yet loaded kernel pair in one host compiler run."""
    todo = [k for k in kernels if k.name not in _LOADED]
    if todo:
        pairs = [(k.source, f"{k.name}_{s}") for k in todo for s in "pf"]
        loaded = load_kernels(pairs)
        for k in todo:
            _LOADED[k.name] = {s: loaded[f"{k.name}_{s}"] for s in "pf"}


def _run(kernels: GridKernels, x: np.ndarray, planted: bool = False) -> np.ndarray:
    _load([kernels])
    if not planted:
        RAN[kernels.name] = kernels.source
    count, acc = kernels.workspace(x.shape)
    work = np.full(count, np.nan, acc)
    out_dtype = np.dtype(kernels.program.out_type)
    out = np.full(kernels.plan(x.shape).out_shape, np.nan, out_dtype)
    for launch in kernels.launches(x, work, out):
        _LOADED[kernels.name][launch.kernel[-1]](launch.grid, launch.block, list(launch.args))
    return out


def _check(kind: str, dtype: str, x: np.ndarray, got: np.ndarray, axis) -> None:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of nothing is NaN
        # the reference accumulates in float64 and rounds once, like the kernel's wider sum
        want = PROGRAMS[kind][1](x.astype(np.float64), axis).astype(dtype)
    rtol, atol = TOL[dtype]
    if kind in ("sum", "sumsq", "mean"):
        atol *= max(1.0, float(np.sqrt(max(x.size, 1))))  # cancellation in a long sum
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


FULL_SIZES = (0, 1, 31, 33, 257, 1025, 2049, 20000)  # 20000 spans 10 partials
COLUMN_SHAPES = (
    (0, 5),
    (1, 1),
    (5, 0),
    (31, 33),
    (33, 1),
    (130, 65),
    (3, 70, 31),
    (2, 1025),
    (1025, 3),
    (0, 4, 3),
    (2, 0, 3),
)


def _kernels(kind: str, dtype: str, layout: str) -> GridKernels:
    return emit_grid_kernels(_program(kind, dtype), layout)


ALL = [_kernels(k, d, lay) for k in PROGRAMS for d in DTYPES for lay in ("full", "column")]


@requires_nvrtc
@pytest.mark.parametrize("kernels", ALL, ids=lambda k: f"{k.program.op}-{k.layout}")
def test_grid_kernels_compile_under_nvrtc(kernels: GridKernels) -> None:
    check_nvrtc(kernels.source, f"{kernels.name}.cu")


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", sorted(PROGRAMS))
def test_full_reduction_matches_numpy(kind: str, dtype: str) -> None:
    _load(ALL)
    rng = np.random.default_rng(len(kind))
    for n in FULL_SIZES:
        x = rng.uniform(-3, 3, n).astype(dtype)
        _check(kind, dtype, x, _run(_kernels(kind, dtype, "full"), x), None)


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", sorted(PROGRAMS))
def test_column_reduction_matches_numpy(kind: str, dtype: str) -> None:
    _load(ALL)
    rng = np.random.default_rng(len(kind) + 1)
    for shape in COLUMN_SHAPES:
        x = rng.uniform(-3, 3, shape).astype(dtype)
        _check(kind, dtype, x, _run(_kernels(kind, dtype, "column"), x), -2)


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["full", "column"])
def test_grid_reductions_edge_values(layout: str, dtype: str) -> None:
    """+-inf and NaN come out where NumPy puts them (inf - inf is NaN in any order; a NaN wins
    max and min from either side); values stay small so sums do not depend on order. In
    float16, a float32 sum past 65504 rounds to inf at the store, as NumPy's does."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-3, 3, (40, 8)).astype(dtype)
    x[3, 0] = np.inf
    x[5, 1], x[9, 1] = np.inf, -np.inf
    x[7, 2] = np.nan
    x[:, 3] = -np.inf
    x[0, 4] = np.nan  # first in the fold order
    x[39, 5] = np.nan  # last
    x[:, 7] = 60000 if dtype == "float16" else 1  # float16: the sum overflows only at the end
    axis = None if layout == "full" else -2
    for kind in ("sum", "max", "min", "mean"):
        data = x if layout == "column" else x[:, 0].copy()  # a full reduction over one inf
        _check(kind, dtype, data, _run(_kernels(kind, dtype, layout), data), axis)
        if layout == "full":
            for cols in (slice(4, 6), slice(7, 8)):  # NaN first and last; the float16 edge
                data = x[:, cols].copy()
                _check(kind, dtype, data, _run(_kernels(kind, dtype, layout), data), axis)


@pytest.mark.emulator
@requires_emulator
def test_grid_reduction_is_deterministic_and_exact_for_integers() -> None:
    """Integers in float32 sum exactly in any order: the kernel must give NumPy's bits. And two
    runs give the same bits (no atomics; the plan depends on the shape only)."""
    rng = np.random.default_rng(0)
    x = rng.integers(-1000, 1000, 5000).astype(np.float32)
    k = _kernels("sum", "float32", "full")
    a, b = _run(k, x), _run(k, x)
    assert a.tobytes() == b.tobytes() and a == np.float32(x.astype(np.int64).sum())
    c = _kernels("sum", "float32", "column")
    y = x.reshape(100, 50)
    np.testing.assert_array_equal(_run(c, y), y.astype(np.int64).sum(axis=0).astype(np.float32))


def test_grid_plans() -> None:
    assert grid_plan("full", (0,)).parts == 1
    assert grid_plan("full", (10**8,)).parts == 1024
    p = grid_plan("column", (1000, 33))
    assert p.parts * p.chunk_rows >= 1000 > (p.parts - 1) * p.chunk_rows  # no empty chunk
    assert grid_plan("column", (4, 10, 3)).out_shape == (4, 3)
    assert grid_plan("column", (0, 3)).parts == 1
    with pytest.raises(UnsupportedError, match="not 2-d or 3-d"):
        grid_plan("column", (5,))
    with pytest.raises(UnsupportedError, match="layout"):
        grid_plan("rows", (5, 5))
    with pytest.raises(UnsupportedError, match="not one of"):
        GridProgram("argmax")
    with pytest.raises(UnsupportedError, match="dtype int32"):
        GridProgram("sum", dtype="int32")
    k = _kernels("sum", "float32", "column")
    x = np.zeros((4, 3), np.float32)
    work = np.zeros(k.workspace(x.shape)[0], np.float32)
    with pytest.raises(UnsupportedError, match="input is float64"):
        k.launches(x.astype(np.float64), work, np.zeros(3, np.float32))
    with pytest.raises(UnsupportedError, match="output is float32 \\(2,\\).* at least 3"):
        k.launches(x, work, np.zeros(2, np.float32))
    with pytest.raises(UnsupportedError, match="not C-contiguous"):
        k.launches(np.zeros((3, 4), np.float32).T, work, np.zeros(3, np.float32))
    assert k.launches(np.zeros((0, 4, 3), np.float32), work, np.zeros((0, 3), np.float32)) == []


@pytest.mark.emulator
@requires_emulator
def test_planted_grid_bugs_are_caught() -> None:
    """A column kernel without its barrier races on the lanes' buffer; a final stage folding
    one partial too few gives wrong numbers that NumPy catches."""
    k = _kernels("sum", "float32", "column")
    no_sync = k.source.replace("__syncthreads();\n  if (threadIdx.y == 0", "if (threadIdx.y == 0")
    assert no_sync != k.source
    short = k.source.replace("k < chunks; ++k", "k < chunks - 1; ++k")
    assert short != k.source
    bad = {}
    for tag, src in (("nosync", no_sync), ("short", short)):
        src = src.replace(k.name, f"{k.name}{tag}")
        bad[tag] = GridKernels(f"{k.name}{tag}", src, k.program, "column")
    _load(list(bad.values()))
    x = np.random.default_rng(1).standard_normal((200, 40)).astype(np.float32)
    with pytest.raises(KernelRuntimeError, match=r"shared gg_lanes0\[\d+\]"):
        _run(bad["nosync"], x, planted=True)
    got = _run(bad["short"], x, planted=True)
    assert not np.allclose(got, x.sum(axis=0), rtol=1e-3)


# Row reductions (reduce_cuda.py): the persistent single-pass variant and float16.
EPS = 1e-5
ROW_PROGRAMS: dict[str, RowProgram] = {
    "softmax": RowProgram(
        (RowStage("m", "max", "x"), RowStage("s", "sum", "expf(x - m)")),
        elementwise="expf(x - m) / s",
    ),
    "logsumexp": RowProgram(
        (RowStage("m", "max", "x"), RowStage("s", "sum", "expf(x - m)")), per_row="m + logf(s)"
    ),
    "layer_norm": RowProgram(
        (RowStage("s1", "sum", "x"), RowStage("s2", "sum", "(x - s1 / n) * (x - s1 / n)")),
        elementwise=f"(x - s1 / n) * rsqrtf(s2 / n + {EPS}f)",
        per_row=f"rsqrtf(s2 / n + {EPS}f)",
    ),
}
ROW_COLS = (0, 1, 31, 33, 257, 1025)


def _row_reference(kind: str, x: np.ndarray):
    """NumPy in float64 from the (float32 or float16) input; (elementwise, per-row)."""
    x = x.astype(np.float64)
    n = x.shape[1]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if kind in ("softmax", "logsumexp"):
            m = np.max(x, axis=1, keepdims=True, initial=-np.inf)
            s = np.sum(np.exp(x - m), axis=1, keepdims=True)
            return (np.exp(x - m) / s, None) if kind == "softmax" else (None, (m + np.log(s))[:, 0])
        mean = np.sum(x, axis=1, keepdims=True) / n
        rstd = 1 / np.sqrt(np.sum((x - mean) ** 2, axis=1, keepdims=True) / n + EPS)
        return (x - mean) * rstd, rstd[:, 0]


def _row_run(
    kernel: RowKernel, emulated, x: np.ndarray, block: int | None = None, shared_mem: int = -1
):
    rows, cols = x.shape
    RAN[kernel.name] = kernel.source
    out = np.full(x.shape, np.nan, x.dtype) if kernel.program.elementwise else None
    row_out = np.full(rows, np.nan, x.dtype) if kernel.program.per_row else None
    grid, default_block = kernel.launch(rows, cols, sm_count=1, blocks_per_sm=2)
    smem = kernel.shared_mem(cols) if shared_mem < 0 else shared_mem
    emulated(grid, block or default_block, kernel.args(x, out, row_out), shared_mem=smem)
    return out, row_out


def _row_kernels(specs: list[tuple]) -> dict:
    """(kind, dtype, items[, shared]) -> (RowKernel, emulated kernel), compiled in one run."""
    emitted = {s: emit_row_kernel(ROW_PROGRAMS[s[0]], *s[1:]) for s in specs}
    loaded = load_kernels([(k.source, k.name) for k in emitted.values()])
    return {s: (k, loaded[k.name]) for s, k in emitted.items()}


ROW_SPECS = [
    (kind, dtype, row_plan(cols))
    for kind in ROW_PROGRAMS
    for dtype in ("float32", "float16")
    for cols in ROW_COLS
] + [
    (kind, dtype, None, shared)
    for kind in ROW_PROGRAMS
    for dtype in ("float32", "float16")
    for shared in (False, True)
]
ROW_SPECS = list(dict.fromkeys(ROW_SPECS))


@requires_nvrtc
def test_row_kernel_variants_compile_under_nvrtc() -> None:
    for kind, *variant in ROW_SPECS:
        kernel = emit_row_kernel(ROW_PROGRAMS[kind], *variant)
        check_nvrtc(kernel.source, f"{kernel.name}.cu")


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("kind", sorted(ROW_PROGRAMS))
def test_row_kernels_by_length_match_numpy(kind: str, dtype: str) -> None:
    """emit_row_kernel_for: persistent for every length here (all fit), and the multi-pass
    kernel, against NumPy; float16 within a float16 rounding of the float32 result."""
    kernels = _row_kernels(ROW_SPECS)
    rng = np.random.default_rng(len(kind))
    rtol, atol = (2e-5, 1e-6) if dtype == "float32" else (1e-3, 2e-5)  # float16: 1 ulp
    for cols in ROW_COLS:
        x = rng.uniform(-3, 3, (3, cols)).astype(dtype)
        chosen = emit_row_kernel_for(ROW_PROGRAMS[kind], cols, dtype)
        assert chosen.items is not None  # every length here fits the registers
        for spec in ((kind, dtype, chosen.items), (kind, dtype, None, False)):
            kernel, emulated = kernels[spec]
            assert kernel.name == chosen.name or spec[2] is None
            got = _row_run(kernel, emulated, x)
            for g, w in zip(got, _row_reference(kind, x), strict=True):
                assert (g is None) == (w is None)
                if g is not None:
                    assert g.dtype == np.dtype(dtype)
                    np.testing.assert_allclose(
                        g.astype(np.float64), w, rtol=rtol, atol=atol, equal_nan=True
                    )


@pytest.mark.emulator
@requires_emulator
def test_persistent_row_kernel_gives_the_multi_pass_bits() -> None:
    """Same block, same per-thread fold order: the single-pass kernel must agree bit for bit."""
    specs = [("layer_norm", "float32", 8)] + [("layer_norm", "float32", None, v) for v in (0, 1)]
    kernels = _row_kernels(specs)
    x = np.random.default_rng(2).standard_normal((4, 1000)).astype(np.float32)
    x[1, 7] = np.inf
    x[2, 9] = np.nan
    block = kernels[specs[0]][0].block(1000)
    assert block == 128
    a = _row_run(*kernels[specs[0]], x)
    for spec in specs[1:]:  # multi-pass, and the row in shared memory
        b = _row_run(*kernels[spec], x, block=block)
        for u, v in zip(a, b, strict=True):
            assert u.tobytes() == v.tobytes()


@pytest.mark.emulator
@requires_emulator
def test_persistent_row_kernel_refuses_a_row_that_does_not_fit() -> None:
    kernel, emulated = _row_kernels([("softmax", "float32", 2)])[("softmax", "float32", 2)]
    x = np.zeros((2, 100), np.float32)
    with pytest.raises(KernelRuntimeError, match=r"__trap\(\) called"):
        _row_run(kernel, emulated, x, block=32)  # 32 threads x 2 values < 100 columns
    assert kernel.block(100) == 64
    with pytest.raises(UnsupportedError, match="does not fit"):
        kernel.block(1024 * 2 + 1)


def test_row_plan_picks_persistent_by_length() -> None:
    assert row_plan(0) == row_plan(1) == row_plan(32) == 1
    assert row_plan(33) == 2 and row_plan(256) == 8 and row_plan(4096) == 8
    assert row_plan(PERSISTENT_MAX_COLS) == 8 and row_plan(PERSISTENT_MAX_COLS + 1) is None
    long_kernel = emit_row_kernel_for(ROW_PROGRAMS["softmax"], 10_000)
    assert long_kernel.items is None and long_kernel.block(10_000) == row_block(10_000)
    for cols in (1, 33, 1025, 4096, PERSISTENT_MAX_COLS):
        items = row_plan(cols)
        assert persistent_block(cols, items) * items >= cols
        assert persistent_block(cols, items) <= 1024
    with pytest.raises(UnsupportedError, match="dtype float64"):
        emit_row_kernel(ROW_PROGRAMS["softmax"], "float64")


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_shared_memory_row_kernel_for_rows_past_the_registers(dtype: str) -> None:
    """Rows longer than the register variant holds (and within 48 KiB) keep the row in dynamic
    shared memory; a launch with less shared memory than the row is reported out of bounds."""
    cols = PERSISTENT_MAX_COLS + 33
    kernel = emit_row_kernel_for(ROW_PROGRAMS["softmax"], cols, dtype)
    assert kernel.shared and kernel.items is None and kernel.shared_mem(cols) == 4 * cols
    assert not emit_row_kernel_for(ROW_PROGRAMS["softmax"], SHARED_MAX_COLS + 1).shared
    check_nvrtc(kernel.source, f"{kernel.name}.cu")
    emulated = load_kernels([(kernel.source, kernel.name)])[kernel.name]
    x = np.random.default_rng(4).uniform(-3, 3, (2, cols)).astype(dtype)
    got, _ = _row_run(kernel, emulated, x)
    rtol, atol = (2e-5, 1e-9) if dtype == "float32" else (1e-3, 1e-7)
    np.testing.assert_allclose(got.astype(np.float64), _row_reference("softmax", x)[0], rtol, atol)
    with pytest.raises(KernelRuntimeError, match=r"extern shared gg_row index \d+ out of bounds"):
        _row_run(kernel, emulated, x, shared_mem=kernel.shared_mem(cols) - 4)


@pytest.mark.emulator
@requires_emulator
@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    shape=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    start=st.integers(0, 3),
    stop=st.integers(1, 4),
    kind=st.sampled_from(sorted(PROGRAMS)),
    dtype=st.sampled_from(DTYPES),
)
def test_any_adjacent_axes_reduce_like_numpy(shape, start, stop, kind, dtype) -> None:
    """A reduction over any run of adjacent axes, as the grid docstring says to lower it:
    outer / rows / cols by merging axes; no trailing axes is a row reduction (not this
    template), nothing kept is the full layout."""
    ndim = len(shape)
    start, stop = min(start, ndim - 1), max(min(stop, ndim), min(start, ndim - 1) + 1)
    outer = int(np.prod(shape[:start], dtype=np.int64))
    rows = int(np.prod(shape[start:stop], dtype=np.int64))
    cols = int(np.prod(shape[stop:], dtype=np.int64))
    x = np.random.default_rng(ndim).uniform(-3, 3, shape).astype(dtype)
    axes = tuple(range(start, stop))
    assume(start == 0 or stop < ndim)  # else a row reduction: reduce_cuda's template
    if start == 0 and stop == ndim:
        got = _run(_kernels(kind, dtype, "full"), x)
    else:
        got = _run(_kernels(kind, dtype, "column"), x.reshape(outer, rows, cols))
    want_shape = tuple(d for i, d in enumerate(shape) if i not in axes)
    _check(kind, dtype, x, got.reshape(want_shape), axes)


@requires_nvrtc
def test_every_reduction_kernel_here_compiles_under_nvrtc() -> None:
    """The sweep: each kernel this module ran on the emulator, plus every program x dtype x
    variant it defines (so the check holds when run alone), compiles for compute_80 and 90."""
    sources = dict(RAN)
    sources.update({k.name: k.source for k in ALL})
    for kind, *variant in ROW_SPECS:
        k = emit_row_kernel(ROW_PROGRAMS[kind], *variant)
        sources[k.name] = k.source
    assert len(sources) >= len(ALL) + len(ROW_SPECS)
    for name, source in sources.items():
        check_nvrtc(source, f"{name}.cu")
