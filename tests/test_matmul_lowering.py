"""Matmul lowering: transposes folded into the product as views, (..., m, k) @ (k, n) as one
2-d GEMM, batched products as one call, and the BLAS thread policy; results and gradients
against NumPy references (float64, hand-derived gradients)."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.backends import blas

RNG = np.random.default_rng(3)


def f64(*shape):
    return RNG.standard_normal(shape)


def ops_of(compiled):
    return [n.op for n in compiled.graph.nodes]


def matmuls(compiled):
    return [n for n in compiled.graph.nodes if n.op == "matmul"]


def test_transposed_operands_are_views_forward_and_backward():
    x, w = f64(5, 6), f64(7, 6)

    def loss(x, w):
        return gg.sum(gg.tanh(x @ w.T))

    f = gg.jit(gg.value_and_grad(loss, argnums=(0, 1)), backend="numpy")
    c = f.lower(x, w)
    assert "transpose" not in ops_of(c), c.graph  # no copy of w.T, nor of the VJP swapaxes
    assert len(matmuls(c)) == 3
    value, (gx, gw) = f(x, w)
    t = np.tanh(x @ w.T)
    d = 1 - t * t
    np.testing.assert_allclose(value, t.sum(), rtol=1e-12)
    np.testing.assert_allclose(gx, d @ w, rtol=1e-12)
    np.testing.assert_allclose(gw, d.T @ x, rtol=1e-12)


@pytest.mark.parametrize(
    "fn,ref",
    [
        (lambda a, b: a.T @ b, lambda a, b: a.T @ b),
        (lambda a, b: a.T @ b.T, lambda a, b: a.T @ b.T),
        (lambda a, b: gg.transpose(gg.transpose(a)) @ b, lambda a, b: a @ b),
    ],
)
def test_transposed_views_equal_numpy(fn, ref):
    a, b = f64(6, 6), f64(6, 6)
    c = gg.jit(fn, backend="numpy").lower(a, b)
    assert "transpose" not in ops_of(c)
    np.testing.assert_allclose(c(a, b), ref(a, b), rtol=1e-12)


def test_row_blocks_fold_into_one_2d_gemm_with_2d_gradients():
    x, w = f64(4, 5, 6), f64(6, 3)

    def loss(x, w):
        return gg.sum(gg.sin(x @ w))

    f = gg.jit(gg.value_and_grad(loss, argnums=(0, 1)), backend="numpy")
    c = f.lower(x, w)
    assert all(len(n.outputs[0].type.shape) == 2 for n in matmuls(c)), c.graph
    value, (gx, gw) = f(x, w)
    d = np.cos(x @ w)
    np.testing.assert_allclose(value, np.sin(x @ w).sum(), rtol=1e-12)
    np.testing.assert_allclose(gx, d @ w.T, rtol=1e-12)
    np.testing.assert_allclose(gw, np.einsum("bmk,bmn->kn", x, d), rtol=1e-12)


def test_transposed_stack_of_single_rows_times_a_matrix_matches_numpy(monkeypatch):
    """(seq, 1, k) as a transposed view of (1, seq, k), times a (k, n) weight (an ONNX
    attention projection): the product runs as one GEMM over the rows (NumPy's matmul would
    make one small product per leading index); values and gradients as NumPy's."""
    x, w = f64(1, 8, 6), f64(6, 5)

    def loss(x, w):
        return gg.sum(gg.sin(gg.matmul(gg.transpose(x, (1, 0, 2)), w)))

    xt = x.transpose(1, 0, 2)
    f = gg.jit(gg.value_and_grad(loss, argnums=(0, 1)), backend="numpy")
    value, (gx, gw) = f(x, w)
    d = np.cos(xt @ w)
    np.testing.assert_allclose(value, np.sin(xt @ w).sum(), rtol=1e-12)
    np.testing.assert_allclose(gx, (d @ w.T).transpose(1, 0, 2), rtol=1e-12)
    np.testing.assert_allclose(gw, np.einsum("smk,smn->kn", xt, d), rtol=1e-12)
    shapes = []
    real = np.matmul
    monkeypatch.setattr(np, "matmul", lambda a, b, **k: shapes.append(a.shape) or real(a, b, **k))
    f(x, w)
    monkeypatch.undo()
    assert (8, 6) in shapes and (8, 1, 6) not in shapes  # one (8, 6) @ (6, 5) GEMM
    eager = gg.matmul(xt, w)  # the eager path: no out buffer
    assert eager.shape == (8, 1, 5)
    np.testing.assert_allclose(eager, xt @ w, rtol=1e-12)


def test_batched_attention_products_are_single_batched_calls():
    q, k = f64(2, 5, 3, 4), f64(2, 5, 3, 4)  # (batch, seq, heads, dh)

    def scores(q, k):
        qh = gg.transpose(q, (0, 2, 1, 3))  # (b, h, s, dh): a view the product reads
        kh = gg.transpose(k, (0, 2, 1, 3))
        return qh @ gg.swapaxes(kh, -1, -2)

    def ref(q, k):
        return q.transpose(0, 2, 1, 3) @ k.transpose(0, 2, 3, 1)

    c = gg.jit(scores, backend="numpy").lower(q, k)
    assert ops_of(c) == ["matmul"], c.graph
    np.testing.assert_allclose(c(q, k), ref(q, k), rtol=1e-12)

    def loss(q, k):
        return gg.sum(gg.sin(scores(q, k)))

    gq, gk = gg.jit(gg.grad(loss, argnums=(0, 1)), backend="numpy")(q, k)
    d = np.cos(ref(q, k))  # (b, h, s, s)
    qh, kh = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)
    np.testing.assert_allclose(gq, (d @ kh).transpose(0, 2, 1, 3), rtol=1e-12)
    np.testing.assert_allclose(gk, (d.swapaxes(-1, -2) @ qh).transpose(0, 2, 1, 3), rtol=1e-12)


def test_a_transpose_blas_cannot_read_stays_a_copy():
    x = f64(3, 4, 5)  # moving the last axis to the front: no unit stride in the matrix
    c = gg.jit(lambda x: gg.transpose(x, (2, 0, 1)) @ f64(4, 2), backend="numpy").lower(x)
    assert "transpose" in ops_of(c)


def test_matmul_vectors_and_broadcast_batches_match_numpy():
    cases = [((6,), (6, 3)), ((4, 6), (6,)), ((2, 1, 4, 6), (3, 6, 5)), ((3, 4, 6), (6,))]
    for sa, sb in cases:
        a, b = f64(*sa), f64(*sb)
        np.testing.assert_allclose(gg.jit(gg.matmul, backend="numpy")(a, b), a @ b, rtol=1e-12)
        np.testing.assert_allclose(gg.matmul(a, b), a @ b, rtol=1e-12)  # eager


# -- the BLAS thread policy ----------------------------------------------------------------------
needs_blas = pytest.mark.skipif(blas.policy() is None, reason="threadpoolctl finds no BLAS")


@needs_blas
def test_policy_restores_the_callers_thread_count():
    before = blas.get_threads()
    a = f64(64, 64)
    c = gg.jit(lambda a: a @ a, backend="numpy").lower(a)
    np.testing.assert_allclose(c(a), a @ a, rtol=1e-12)
    assert "_set(1)" in c.executable._program.source
    assert blas.get_threads() == before


@needs_blas
def test_policy_keep_and_bad_values(monkeypatch):
    monkeypatch.setenv(blas.ENV, "keep")
    a = f64(8, 8)
    c = gg.jit(lambda a: a @ a, backend="numpy").lower(a)
    c(a)
    assert "_set" not in c.executable._program.source
    monkeypatch.setenv(blas.ENV, "3")
    assert blas.policy() == blas.Policy(3, 3)
    monkeypatch.setenv(blas.ENV, "many")
    with pytest.raises(gg.GpuGraphError, match="GPUGRAPH_BLAS_THREADS"):
        blas.policy()
