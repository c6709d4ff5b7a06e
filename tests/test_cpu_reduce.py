"""backend="cpu" runs fused_reduce groups as native row kernels (codegen/cpu_reduce.py,
backends/cpu_rows.py): equal to backend="numpy" within float tolerances (the sums' order
differs from NumPy's pairwise sums: docs/cpu-backend.md, "Fused reductions"), on every row
layout of inputs and outputs, edge shapes, NaN/inf, and any split of the rows over threads."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import requires_emulator

import gpugraph as gg
from gpugraph.backends import cpu_backend

pytestmark = requires_emulator  # the same host compiler

F32, F64 = np.float32, np.float64
TOL = {F32: 2e-5, F64: 1e-12}  # as tests/test_reduce_pass.py (fused vs unfused)


@pytest.fixture(autouse=True)
def _every_group_native(monkeypatch):
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "all")


def _arr(shape, dtype=F32, seed=0):
    return np.random.default_rng(seed).uniform(-2, 2, shape).astype(dtype)


PATTERNS = {
    "softmax": lambda x, w, b: gg.softmax(x),
    "log_softmax": lambda x, w, b: gg.log_softmax(x),
    "logsumexp": lambda x, w, b: gg.logsumexp(x, axis=-1),
    "layer_norm": lambda x, w, b: gg.layer_norm(x, w, b),
    "rms_norm": lambda x, w, b: gg.rms_norm(x, w),
    "var_std": lambda x, w, b: (gg.var(x, axis=-1), gg.std(x, axis=-1, keepdims=True) * x),
    "sum_of_squares": lambda x, w, b: gg.sum(gg.square(x - 1.0), axis=-1),
}


def _loss(x, w, b):
    """Every pattern's outputs in one weighted sum: one plan (one compiler run) whose gradient
    holds the row-wise backward of each."""
    total = 0.0
    for k, fn in enumerate(PATTERNS.values()):
        out = fn(x, w, b)
        for o in out if isinstance(out, tuple) else (out,):
            weights = np.linspace(-1, 1, int(np.prod(o.shape))).reshape(o.shape)
            total = total + gg.sum(o * weights.astype(o.dtype) * (k + 1))
    return total


def _forward(x, w, b):
    outs = []
    for fn in PATTERNS.values():
        out = fn(x, w, b)
        outs += list(out) if isinstance(out, tuple) else [out]
    return tuple(outs)


def _row_kernels(compiled) -> list:
    launches = compiled.executable.launches
    assert not [ln for ln in launches if hasattr(ln.runner, "cpu_refusal")]
    return [
        ln.runner.cpu_kernel
        for ln in launches
        if getattr(getattr(ln.runner, "cpu_kernel", None), "name", "").startswith("gg_cpurow_")
    ]


def _check(fn, args, dtype, native: bool = True):
    before = [np.array(a, copy=True) for a in args]
    compiled = gg.jit(fn, backend="cpu").lower(*args)
    with np.errstate(all="ignore"):
        got, want = compiled(*args), gg.jit(fn, backend="numpy")(*args)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=TOL[dtype], atol=TOL[dtype], equal_nan=True)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b)
    groups = [n for n in compiled.graph.nodes if n.op == "fused_reduce"]
    if native:  # every group that formed ran natively (one column may leave none to form)
        assert len(_row_kernels(compiled)) == len(groups)
    return compiled, got


@pytest.mark.parametrize("dtype", [F32, F64])
def test_patterns_forward_and_gradient_match_numpy(dtype):
    x, w, b = _arr((7, 33), dtype), _arr((33,), dtype, 1), _arr((33,), dtype, 2)
    compiled, _ = _check(_forward, (x, w, b), dtype)
    assert [n for n in compiled.graph.nodes if n.op == "fused_reduce"]
    assert "fused reductions as row kernels" in compiled.explain()
    _check(gg.grad(_loss, argnums=(0, 1, 2)), (x, w, b), dtype)


@pytest.mark.parametrize("shape", [(3, 1), (1, 1), (1, 200), (2, 3, 5), (37,)])
def test_edge_shapes(shape):
    x, w, b = _arr(shape), _arr(shape[-1:], seed=1), _arr(shape[-1:], seed=2)
    _check(_forward, (x, w, b), F32)


def test_empty_rows_and_columns():
    def f(x, w):  # sums only: a sum over no columns is 0, a max has no identity
        mean = gg.mean(x, axis=-1, keepdims=True)
        return (x - mean) * w, gg.sum(x * x, axis=-1)

    for shape in [(0, 5), (4, 0), (0, 0), (2, 0, 3)]:
        x, w = _arr(shape), _arr(shape[-1:], seed=1)
        _check(f, (x, w), F32, native=shape[-1] != 0 or 0 in shape[:-1])


def test_max_over_no_columns_is_refused_as_on_numpy():
    for backend in ("numpy", "cpu"):  # at trace time (no identity), as np.max raises
        with pytest.raises(gg.GpuGraphError, match="no identity"):
            gg.jit(gg.softmax, backend=backend)(_arr((4, 0)))


@pytest.mark.parametrize("dtype", [F32, F64])
def test_nan_and_inf(dtype):
    x = _arr((6, 9), dtype)
    x[0, 3] = np.nan  # max must pass NaN on, as np.max does
    x[1, 0] = np.inf
    x[2, :] = -np.inf
    x[3, 8] = -np.inf
    x[4, :] = np.nan

    def f(x):
        return gg.softmax(x), gg.logsumexp(x, axis=-1), gg.max(x, axis=-1) + 1.0

    compiled, got = _check(f, (x,), dtype)
    assert np.isnan(got[2][[0, 4]]).all() and got[2][1] == np.inf


def test_any_split_of_the_rows_over_calls():
    """The kernel runs the rows whose first element lies in its range: every chunk size,
    aligned or not to rows, gives every row to exactly one call."""
    x, w, b = _arr((50, 7)), _arr((7,), seed=1), _arr((7,), seed=2)
    compiled = gg.jit(lambda x, w, b: gg.layer_norm(x, w, b), backend="cpu").lower(x, w, b)
    (kernel,) = _row_kernels(compiled)
    want = gg.jit(lambda x, w, b: gg.layer_norm(x, w, b), backend="numpy")(x, w, b)
    assert kernel.n == 350
    for chunk in (1, 5, 7, 64, 100, 349, 350):
        out = np.full(x.shape, np.nan, F32)
        ptrs = [a.ctypes.data for a in (x, w, b, out)]
        kernel.fn(kernel.n, chunk, *ptrs)
        np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)


def test_parallel_path_and_strided_input(monkeypatch):
    monkeypatch.setenv(cpu_backend.PARALLEL_MIN_ENV, "64")
    cpu_backend.parallel_min.cache_clear()
    try:
        x = _arr((41, 24))
        _check(gg.log_softmax, (x,), F32)
        _check(gg.log_softmax, (_arr((41, 48))[:, ::2],), F32)  # the ctypes path copies it
    finally:
        monkeypatch.delenv(cpu_backend.PARALLEL_MIN_ENV)
        cpu_backend.parallel_min.cache_clear()


def test_a_body_the_kernel_refuses_runs_on_numpy_and_says_why(monkeypatch):
    from gpugraph.backends import cpu_rows
    from gpugraph.errors import UnsupportedError

    def refuse(body, space):
        raise UnsupportedError("cpu row kernel: planted refusal")

    monkeypatch.setattr(cpu_rows, "cpu_row_kernel", refuse)
    x = _arr((5, 9))
    compiled = gg.jit(gg.softmax, backend="cpu").lower(x)
    assert "a fused group runs on NumPy: cpu row kernel: planted refusal" in compiled.explain()
    np.testing.assert_allclose(compiled(x), gg.jit(gg.softmax, backend="numpy")(x), rtol=1e-6)
