"""The per-iteration fast paths loop bodies lean on give the same numbers as the plain calls:
a k=1 matmul (the outer product of a step's weight gradient) as a broadcast multiply, and a
NumPy sum as ``add.reduce`` without the ``np.sum`` wrapper."""

from __future__ import annotations

import numpy as np
import pytest

from gpugraph.ops.registry import get_op

RNG = np.random.default_rng(5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize(
    "sa, sb, perm_a",
    [((7, 1), (1, 5), None), ((1, 7), (1, 5), (1, 0)), ((3, 4, 1), (1, 1, 6), None)],
)
def test_k1_matmul_is_bitwise_the_gemm(dtype, sa, sb, perm_a):
    impl = get_op("matmul").impl
    a = (RNG.standard_normal(sa) * 100).astype(dtype)
    b = (RNG.standard_normal(sb) * 100).astype(dtype)
    av = a if perm_a is None else a.transpose(perm_a)
    want = np.matmul(av, b)
    out = np.empty_like(want)
    assert impl(np, a, b, out=out, perm_a=perm_a) is out
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(impl(np, a, b, perm_a=perm_a), want)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_])
@pytest.mark.parametrize("axis, keepdims", [((0,), False), ((1,), True), ((0, 1), False)])
def test_sum_is_bitwise_np_sum(dtype, axis, keepdims):
    impl = get_op("sum").impl
    x = (RNG.standard_normal((5, 33)) * 10).astype(dtype)
    dt = np.int64 if np.dtype(dtype).kind in "biu" else dtype
    want = np.sum(x, axis=axis, keepdims=keepdims, dtype=dt)
    got = impl(np, x, axis=axis, keepdims=keepdims)
    assert got.dtype == want.dtype and np.shape(got) == np.shape(want)
    np.testing.assert_array_equal(got, want)
    out = np.empty(np.shape(want), dt)
    impl(np, x, axis=axis, keepdims=keepdims, out=out)
    np.testing.assert_array_equal(out, want)
