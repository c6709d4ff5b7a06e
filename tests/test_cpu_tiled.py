"""Short-row broadcasts on the cpu backend (codegen/cpu_tiled.py): blocks of whole rows with
the row tiled, against the NumPy backend: shapes, dtypes, edge values, ragged thread chunks,
in-place outputs, and the shapes it leaves to other kernels."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.backends import cpu_backend
from gpugraph.codegen.cpu_tiled import NAME_PREFIX

pytestmark = pytest.mark.skipif(
    cpu_backend.status().startswith("unavailable"), reason="no host C++ compiler"
)
RNG = np.random.default_rng(8)


def _native_kernels(c) -> list:
    return [
        ln.runner.cpu_kernel for ln in c.executable.launches if hasattr(ln.runner, "cpu_kernel")
    ]


def _check(fn, *args, rtol=2e-6):
    c = gg.jit(fn, backend="cpu").lower(*args)
    assert "runs on NumPy" not in c.explain(), c.explain()
    (kernel,) = _native_kernels(c)
    assert kernel.name.startswith(NAME_PREFIX)
    with np.errstate(all="ignore"):
        want = gg.jit(fn, backend="numpy")(*args)
        got = c(*args)
    for g, w in zip(*(x if isinstance(x, tuple) else (x,) for x in (got, want))):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=0 if g.dtype.kind in "iub" else 1e-30)
    return c, kernel


@pytest.mark.parametrize(
    "shape,row",
    [
        ((101, 3), (3,)),
        ((7, 3, 4), (3, 4)),
        ((64, 5), (1, 5)),
        ((1, 3), (3,)),
        ((90, 1, 15), (15,)),
    ],
)
def test_math_over_short_rows_runs_tiled_by_default(shape, row):
    """Under the default policy too (it used to leave these groups to NumPy)."""
    x = RNG.standard_normal(shape).astype(np.float32)
    b = RNG.standard_normal(row).astype(np.float32)
    _check(lambda x, b: gg.tanh(x + b) * 5, x, b)


def test_several_rows_scalars_outputs_and_edge_values():
    edges = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-310, 1e308, -2.5])
    x = np.concatenate([edges, RNG.standard_normal(40 * 3 - edges.size)]).reshape(40, 3)
    b, w = np.array([1.5, -0.0, np.inf]), np.array([2.0, np.nan, -1.0])
    s = np.array(3.0)

    def f(x, b, w, s):
        y = gg.exp(x * b) + w
        return y * s, gg.maximum(x, w) - b

    _check(f, x, b, w, s, rtol=1e-12)


def test_integer_wraparound_and_bool():
    x = RNG.integers(-(2**31), 2**31 - 1, (33, 7), dtype=np.int32)
    b = np.array([2**31 - 1, -(2**31), 7, -1, 0, 3, 2**30], np.int32)
    _check(lambda x, b: x * b + b, x, b)
    m = RNG.random((20, 6)) > 0.5
    _check(lambda m, r: gg.logical_xor(m, r), m, np.array([True, False, True, True, False, False]))


@pytest.mark.parametrize("chunk", [64, 128, 320, 1024])
def test_ragged_thread_chunks(chunk):
    """A call covering elements [lo, hi) from any chunking gives the same elements (blocks
    start on rows; a chunk may start inside a block). Elements a vector loop's scalar
    remainder computes may differ by an ulp (libm's tanh, not libmvec's): as in every kernel."""
    x = RNG.standard_normal((333, 3))
    b = RNG.standard_normal(3)
    c, kernel = _check(lambda x, b: gg.tanh(x - b), x, b, rtol=1e-12)
    out = np.empty_like(x)
    kernel.fn(x.size, chunk, x.ctypes.data, b.ctypes.data, out.ctypes.data)
    np.testing.assert_allclose(out, c(x, b), rtol=1e-15, atol=0)


def test_shapes_it_leaves_to_the_other_kernels():
    """A per-row value (a column broadcast) and rows of two lengths are not tiled; 16 columns
    and more are the row x column nest's."""
    x = RNG.standard_normal((50, 3))
    for args in [(x, RNG.standard_normal((50, 1))), (RNG.standard_normal((50, 16)), np.ones(16))]:
        c = gg.jit(lambda a, b: a * b + 1, backend="cpu").lower(*args)
        assert not any(k.name.startswith(NAME_PREFIX) for k in _native_kernels(c))
        np.testing.assert_allclose(c(*args), args[0] * args[1] + 1, rtol=1e-15)
    y = RNG.standard_normal((4, 3, 2))
    c = gg.jit(lambda y, a, b: y * a + b, backend="cpu").lower(y, np.ones((3, 2)), np.ones(2))
    assert not any(k.name.startswith(NAME_PREFIX) for k in _native_kernels(c))
    np.testing.assert_allclose(c(y, np.ones((3, 2)), np.ones(2)), y + 1, rtol=1e-15)
