"""prod in fused row and grid groups: the CUDA kernels (NVRTC 80/90, the emulator at edge row
lengths), the NumPy runners and the native CPU row kernel against np.prod, with NaN, +-inf, 0
and 0 * inf in rows and columns. The factors are near +-1 so that long products stay finite.

Tolerance: the kernels multiply in another order than np.prod (per-thread partials, a warp
butterfly; simd lanes on the CPU). Each product of n float32 factors is then within about
n * 2**-24 of NumPy's in the worst case, sqrt(n) * 2**-24 typically (docs/fusion.md, "prod");
the tests check rtol 2e-5 (float32, n <= 3075) and 1e-12 (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import check_nvrtc, emulate_fused, requires_emulator, requires_nvrtc
from test_reduce_pass import fused_reduce_inputs
from test_reduce_pass_3 import GROUP_SHAPES

import gpugraph as gg

GROUP_OPS = ("fused_reduce", "fused_grid_reduce")
CASES = {  # name -> fn of x: each one group holding its prod
    "row_prod_scales_row": lambda x: x * gg.prod(-x, axis=-1, keepdims=True),
    "row_prod_and_sum": lambda x: gg.prod(gg.abs(x), axis=-1) + gg.sum(x, axis=-1),
    "column_prod": lambda x: gg.prod(x * 0.5 + 0.5, axis=0),
    "full_prod": lambda x: gg.prod(-x) * 2.0,
}
ROW_CASES = ("row_prod_scales_row", "row_prod_and_sum")


def _data(shape, dtype=np.float32, edges=True, seed=3):
    """Factors of size 0.9..1.1 with random signs; with ``edges``, row 1 holds a NaN, row 2 a
    0 and an inf (0 * inf: NaN), row 3 a -inf, row 4 a 0 (where the rows exist)."""
    r = np.random.default_rng(seed)
    x = (r.uniform(0.9, 1.1, shape) * r.choice([-1.0, 1.0], shape)).astype(dtype)
    if edges and x.ndim == 2 and x.shape[1]:
        c = x.shape[1]
        for row, col, v in [(1, 0, np.nan), (2, c - 1, 0.0), (2, 0, np.inf)]:
            if row < x.shape[0]:
                x[row, col] = v
        for row, col, v in [(3, c // 2, -np.inf), (4, c - 1, 0.0)]:
            if row < x.shape[0]:
                x[row, col] = v
    return x


def _tol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-12


def _lower(fn, x):
    c = gg.jit(fn).lower(x)
    fused = [n for n in c.graph.nodes if n.op in GROUP_OPS]
    assert len(fused) == 1 and not any(n.op == "prod" for n in c.graph.nodes), c.explain()
    return c, fused[0]


def _emulated(c, node, x):
    ((_, ins),) = fused_reduce_inputs(c, (x,), (node.op,))
    with np.errstate(all="ignore"):
        return emulate_fused(node.attrs, ins, [v.type for v in node.outputs])[-1]


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("shape, dtype", GROUP_SHAPES)
def test_prod_fuses_in_row_and_grid_groups(shape, dtype):
    """Each case is one group; its kernels compile (NVRTC 80/90) and, like the NumPy runner,
    give the unfused values on the emulator: NaN and 0 * inf give NaN, a 0 gives 0 (or -0)."""
    x = _data(shape, dtype)
    for name, fn in CASES.items():
        c, node = _lower(fn, x)
        with np.errstate(all="ignore"):
            want = np.asarray(gg.jit(fn, fuse=False)(x))
            np.testing.assert_allclose(c(x), want, rtol=_tol(dtype), equal_nan=True, err_msg=name)
        check_nvrtc(node.attrs["cuda_source"], f"{node.attrs['kernel_name']}.cu")
        got = _emulated(c, node, x)
        np.testing.assert_allclose(got, want, rtol=_tol(dtype), equal_nan=True, err_msg=name)


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("cols", [0, 1, 31, 33])
def test_prod_row_kernel_at_edge_row_lengths(cols):
    """Row lengths 0 (a product over nothing: 1), 1 and either side of a warp, with the edge
    rows where they fit; one case per length keeps the cold compile count low."""
    x = _data((6, cols))
    fn = CASES["row_prod_scales_row"] if cols else CASES["row_prod_and_sum"]
    c, node = _lower(fn, x)
    with np.errstate(all="ignore"):
        want = np.asarray(gg.jit(fn, fuse=False)(x))
    np.testing.assert_allclose(_emulated(c, node, x), want, rtol=2e-5, equal_nan=True)


@pytest.mark.parametrize("shape", [(9, 37), (0, 5), (4, 0), (1, 3075)])
def test_prod_groups_on_each_backend(shape, jit_backend):
    """The NumPy runners and the native CPU row kernel (an OpenMP simd product) against the
    unfused graph; empty rows and columns give np.prod's 1."""
    x = _data(shape)
    for name, fn in CASES.items():
        if shape == (1, 3075) and name not in ROW_CASES:
            continue  # the long row is for the row kernels' order
        with np.errstate(all="ignore"):
            got, want = gg.jit(fn)(x), gg.jit(fn, fuse=False)(x)
        np.testing.assert_allclose(got, want, rtol=2e-5, equal_nan=True, err_msg=name)


def test_prod_overflow_and_float16_match_numpy():
    """A product past float32's range is inf in the group as in np.prod (the kernels multiply
    in float32, not double). A float16 prod multiplies in float32 (the public op casts): the
    casts join the group, which gives the unfused bits."""
    x = np.full((2, 40), 10.0, np.float32)
    fn = CASES["row_prod_and_sum"]
    c, _ = _lower(fn, x)
    with np.errstate(over="ignore"):
        want = np.prod(x, axis=-1) + np.sum(x, axis=-1)
        np.testing.assert_array_equal(c(x), want)
    assert np.isinf(want).all()
    h = _data((6, 33), np.float16)
    c, node = _lower(_half_prod, h)
    body = node.attrs["body"]
    assert {n.output.dtype for n in body.nodes if n.op == "prod"} == {np.dtype("float32")}
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(c(h), gg.jit(_half_prod, fuse=False)(h))


def _half_prod(x):
    return gg.prod(x * x, axis=-1) * 2.0


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
def test_float16_prod_row_kernel_on_the_emulator():
    """The kernel loads half, rounds x * x to half, multiplies in float32 and stores half: the
    unfused values within the float32 order tolerance, then one half rounding (rtol 1e-3)."""
    h = _data((6, 33), np.float16)
    c, node = _lower(_half_prod, h)
    check_nvrtc(node.attrs["cuda_source"], f"{node.attrs['kernel_name']}.cu")
    with np.errstate(all="ignore"):
        want = np.asarray(gg.jit(_half_prod, fuse=False)(h), np.float64)
    got = np.asarray(_emulated(c, node, h), np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-3, equal_nan=True)
