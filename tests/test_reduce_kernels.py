"""Grid (column and full) reductions and float16 row reductions (gpugraph/codegen/reduce_grid.py,
reduce_cuda.py): every kernel here compiles under NVRTC (compute_80/90) and matches NumPy on the
emulator, for sizes that are not multiples of the warp or block, 0 and 1 included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from kernel_helpers import check_nvrtc, requires_emulator, requires_nvrtc

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
TOL = {"float16": (2e-3, 2e-3), "float32": (2e-5, 1e-5), "float64": (1e-12, 1e-12)}


def _program(kind: str, dtype: str) -> GridProgram:
    base = PROGRAMS[kind][0]
    return GridProgram(base.op, base.prologue, base.epilogue, dtype)


_LOADED: dict[str, dict] = {}


def _load(kernels: list[GridKernels]) -> None:
    """Compile every not yet loaded kernel pair in one host compiler run."""
    todo = [k for k in kernels if k.name not in _LOADED]
    if todo:
        pairs = [(k.source, f"{k.name}_{s}") for k in todo for s in "pf"]
        loaded = load_kernels(pairs)
        for k in todo:
            _LOADED[k.name] = {s: loaded[f"{k.name}_{s}"] for s in "pf"}


def _run(kernels: GridKernels, x: np.ndarray) -> np.ndarray:
    _load([kernels])
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


FULL_SIZES = (0, 1, 31, 33, 257, 2049, 20000)  # 20000 spans 10 partials
COLUMN_SHAPES = ((0, 5), (1, 1), (5, 0), (31, 33), (33, 1), (130, 65), (3, 70, 31))


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
@pytest.mark.parametrize("layout", ["full", "column"])
def test_grid_reductions_edge_values(layout: str) -> None:
    """+-inf and NaN come out where NumPy puts them (inf - inf is NaN in any order; a NaN wins
    max and min from either side); values stay small so sums do not depend on order."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-3, 3, (40, 7)).astype(np.float32)
    x[3, 0] = np.inf
    x[5, 1], x[9, 1] = np.inf, -np.inf
    x[7, 2] = np.nan
    x[:, 3] = -np.inf
    x[0, 4] = np.nan  # first in the fold order
    x[39, 5] = np.nan  # last
    axis = None if layout == "full" else -2
    for kind in ("sum", "max", "min", "mean"):
        data = x if layout == "column" else x[:, 0].copy()  # a full reduction over one inf
        _check(kind, "float32", data, _run(_kernels(kind, "float32", layout), data), axis)
        if layout == "full":
            data = x[:, 4:6].copy()  # NaN first and last
            _check(kind, "float32", data, _run(_kernels(kind, "float32", layout), data), axis)


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
        GridProgram("prod")
    with pytest.raises(UnsupportedError, match="dtype int32"):
        GridProgram("sum", dtype="int32")


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
    with pytest.raises(KernelRuntimeError, match=r"shared gg_lanes\[\d+\]"):
        _run(bad["nosync"], x)
    got = _run(bad["short"], x)
    assert not np.allclose(got, x.sum(axis=0), rtol=1e-3)
