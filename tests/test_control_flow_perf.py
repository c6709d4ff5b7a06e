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


def _rnn_loss(w, xs, reverse=False):
    import gpugraph as gg

    def cell(h, x):
        h = gg.tanh(h @ w + x)
        return h, h.sum()

    h, ys = gg.scan(cell, gg.zeros((w.shape[0],), w.dtype), xs, reverse=reverse)
    return (h * h).sum() + (ys * ys).sum()


@pytest.mark.parametrize("reverse", [False, True])
def test_the_backward_scan_reads_forward_activations_instead_of_recomputing(reverse):
    import gpugraph as gg

    w = RNG.standard_normal((5, 5)) * 0.4
    xs = RNG.standard_normal((7, 5))

    def loss(w, xs):
        return _rnn_loss(w, xs, reverse)

    f = gg.jit(gg.grad(loss))
    c = f.lower(w, xs)
    assert "scan residuals forwarded instead of recomputed" in c.explain()
    fwd, bwd = (n for n in c.graph.nodes if n.op == "scan")
    bwd_ops = bwd.attrs["body"].op_counts()
    assert bwd_ops.get("tanh", 0) == 0 and "tanh" not in str(bwd.attrs["body"])
    assert bwd_ops.get("matmul", 0) == 2  # ct @ W^T and the outer product; h @ W is read
    g = f(w, xs)
    np.testing.assert_allclose(g, gg.grad(loss)(w, xs), rtol=1e-12, atol=1e-12)
    eps, fd = 1e-6, np.zeros_like(w)
    for i in np.ndindex(w.shape):
        d = np.zeros_like(w)
        d[i] = eps
        fd[i] = (loss(w + d, xs) - loss(w - d, xs)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


def test_forwarding_leaves_scans_over_other_data_alone():
    import gpugraph as gg

    def f(w, xs, zs):
        a = gg.scan(lambda h, x: (gg.tanh(h @ w + x), h.sum()), gg.zeros((5,), w.dtype), xs)
        b = gg.scan(lambda h, x: (gg.tanh(h @ w + x), h.sum()), gg.zeros((5,), w.dtype), zs)
        return a[0] + b[0], a[1] * b[1]

    w = RNG.standard_normal((5, 5)) * 0.4
    xs, zs = RNG.standard_normal((2, 7, 5))
    c = gg.jit(f).lower(w, xs, zs)
    assert "forwarded" not in c.explain()
    for got, want in zip(c(w, xs, zs), f(w, xs, zs)):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12)
