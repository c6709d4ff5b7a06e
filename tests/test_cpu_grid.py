"""backend="cpu": fused_grid_reduce groups (column and full reductions with their prologue and
epilogue) as native grid kernels (codegen/cpu_grid.py), against the NumPy backend's blocked
runner: broadcast prologue inputs, several reduced axes, ragged row blocks, NaN and infinities,
empty reductions, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import requires_emulator

import gpugraph as gg
from gpugraph.backends import cpu_backend
from gpugraph.codegen.cpu_grid import BLOCK_ROWS

pytestmark = requires_emulator  # the same host compiler

rng = np.random.default_rng(19)


def _f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


CASES = {
    "column sum, broadcast row": (
        lambda a, b: gg.sum(a * b + 1.0, axis=0),
        (_f32(3 * BLOCK_ROWS + 7, 5), _f32(5)),
    ),
    "full sum float64": (lambda a: gg.sum(a * a), (rng.standard_normal((33, 17)),)),
    "column max, epilogue": (
        lambda a: gg.max(gg.abs(a) + 1.0, axis=0) * 2.0,
        (_f32(300, 3, 4),),
    ),
    "mean over two axes": (lambda a: gg.mean(gg.exp(a), axis=(0, 1)), (_f32(6, 300, 4),)),
    "full max": (lambda a: gg.max(a - 0.5), (_f32(2 * BLOCK_ROWS, 3),)),
    "column sum, column input": (
        lambda a, c: gg.sum(a * c, axis=0),
        (_f32(40, 6), _f32(40, 1)),
    ),
}


def _grid_count(compiled) -> int:
    line = next(ln for ln in compiled.explain().splitlines() if ln.startswith("cpu: "))
    if "grid kernels" not in line:
        return 0
    return int(line.split("row kernels, ")[1].split()[0])


@pytest.fixture(autouse=True)
def _every_group_native(monkeypatch):
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "all")


def _check(fn, args, rtol):
    compiled = gg.jit(fn, backend="cpu").lower(*args)
    assert compiled.graph.op_counts().get("fused_grid_reduce") == 1
    assert _grid_count(compiled) == 1, compiled.explain()
    with np.errstate(all="ignore"):
        want = gg.jit(fn, backend="numpy")(*args)
        got = compiled(*args)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    return got


@pytest.mark.parametrize("case", sorted(CASES))
def test_grid_kernels_match_numpy(case):
    fn, args = CASES[case]
    _check(fn, args, 1e-5 if args[0].dtype == np.float32 else 1e-12)


def test_nan_and_inf_columns():
    a = _f32(2 * BLOCK_ROWS + 3, 4)
    a[5, 0], a[-1, 1], a[7, 2], a[9, 2] = np.nan, np.nan, np.inf, -np.inf
    s = _check(lambda x: gg.sum(x * 2.0, axis=0), (a,), 1e-5)
    assert np.isnan(s[:3]).all() and np.isfinite(s[3])
    m = _check(lambda x: gg.max(x + 1.0, axis=0), (a,), 1e-6)
    assert np.isnan(m[:2]).all() and m[2] == np.inf
    # full reductions (one column: the simd reduction path)
    assert np.isnan(_check(lambda x: gg.max(x - 0.5), (a,), 0))
    b = a[:, 3:]
    b[BLOCK_ROWS + 1, 0] = np.inf
    assert _check(lambda x: gg.max(x + 1.0), (np.ascontiguousarray(b),), 0) == np.inf
    assert np.isnan(_check(lambda x: gg.sum(x + 1.0), (a,), 0))


def test_empty_reductions():
    # no rows: the sum's identity through the epilogue; no columns: nothing to compute
    z = _check(lambda x: gg.sum(x + 1.0, axis=0) + 2.0, (np.zeros((0, 3), np.float32),), 0)
    np.testing.assert_array_equal(z, np.full(3, 2.0, np.float32))
    _check(lambda x: gg.sum(x * 3.0, axis=0), (np.zeros((5, 0)),), 0)


def test_float16_groups_stay_on_numpy_and_say_so():
    x = _f32(40, 3).astype(np.float16)
    fn = lambda a: gg.sum(a * a, axis=0)  # noqa: E731
    compiled = gg.jit(fn, backend="cpu").lower(x)
    assert "float16 values are not rendered" in compiled.explain()
    np.testing.assert_allclose(compiled(x), gg.jit(fn, backend="numpy")(x), rtol=1e-3)
