"""Generated CUDA kernels on extreme inputs (issue 12, item 5): every elementwise op and the
composites whose formulation matters (sigmoid, log(sigmoid), gelu, softmax, logsumexp,
log_softmax), compiled by gg.jit, run on the kernel emulator over signed zeros, +-88.x (the
float32 exp overflow edge), +-103, +-1e30, the smallest normal and subnormal numbers, +-inf and
NaN, and compared with NumPy elementwise. On a GPU the same table runs through CuPy, where
-ftz=true lets float32 subnormals be zero (and only that) — see assert_kernel_matches."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import (
    assert_kernel_matches,
    edge_values,
    flush_subnormals,
    random_array,
    requires_emulator,
    run_graph_emulated,
)

import gpugraph as gg

FLOATS = ["float32", "float64"]
RTOL = {"float32": 2e-5, "float64": 1e-12}

UNARY = {
    "negative": gg.negative,
    "abs": gg.abs,
    "sign": gg.sign,
    "relu": gg.relu,
    "exp": gg.exp,
    "log": gg.log,
    "sqrt": gg.sqrt,
    "rsqrt": gg.rsqrt,
    "reciprocal": gg.reciprocal,
    "tanh": gg.tanh,
    "sin": gg.sin,
    "cos": gg.cos,
    "erf": gg.erf,
    "sigmoid": gg.sigmoid,
    "log_sigmoid": lambda x: gg.log(gg.sigmoid(x)),
    "gelu_tanh": lambda x: gg.gelu(x, "tanh"),
    "gelu_exact": lambda x: gg.gelu(x, "none"),
    "softplus": lambda x: gg.log(1.0 + gg.exp(x)),
    # literal exponents: NumPy's scalar fast path makes x ** 0.5 a sqrt (-0 at -0, NaN at -inf)
    "power_half": lambda x: x**0.5,
    "power_two": lambda x: x**2.0,
    "power_minus_one": lambda x: x**-1.0,
}
BINARY = {
    "add": gg.add,
    "subtract": gg.subtract,
    "multiply": gg.multiply,
    "divide": gg.divide,
    "power": gg.power,
    "maximum": gg.maximum,
    "minimum": gg.minimum,
    "where": lambda a, b: gg.where(a > b, a, b),
    "compare": lambda a, b: gg.logical_or(a < b, gg.equal(a, b)),
}
ROWS = {  # reductions between elementwise parts: each row is one softmax
    "softmax": lambda x: gg.softmax(x, axis=-1),
    "log_softmax": lambda x: gg.log_softmax(x, axis=-1),
    "logsumexp": lambda x: gg.logsumexp(x, axis=-1),
}


def _check(table, args, dtype):
    """Every function of ``table`` as one output of one jitted function: one kernel (or a few,
    around reductions) per dtype, so the host compiler runs once, not once per op."""
    names = sorted(table)

    def fn(*xs):
        # "* 1": one more op after the one under test, so a kernel computes it (not a copy)
        return tuple(table[n](*xs) * 1 for n in names)

    compiled = gg.jit(fn, backend="numpy").lower(*args)
    # (softmax and friends become one fused_reduce row kernel, emulated the same way)
    fused = {"fused", "fused_reduce"} & set(compiled.graph.op_counts())
    assert fused, "nothing was fused"
    with np.errstate(all="ignore"):
        want = fn(*args)  # eager: the NumPy impls
        got = run_graph_emulated(compiled.graph, list(args))
    for name, g, w in zip(names, got, want):
        assert_kernel_matches(g, w, RTOL[dtype], what=f"{name} {dtype}")


@requires_emulator
@pytest.mark.emulator
@pytest.mark.parametrize("dtype", FLOATS)
def test_unary_kernels_match_numpy_on_edge_values(dtype):
    _check(UNARY, [edge_values(dtype)], dtype)


@requires_emulator
@pytest.mark.emulator
@pytest.mark.parametrize("dtype", FLOATS)
def test_binary_kernels_match_numpy_on_edge_values(dtype):
    e = edge_values(dtype)
    _check(BINARY, [e[:, None], e[None, :]], dtype)


@requires_emulator
@pytest.mark.emulator
@pytest.mark.parametrize("dtype", FLOATS)
def test_row_composites_match_numpy_on_edge_values(dtype):
    rng = np.random.default_rng(1)
    x = random_array((12, 8), dtype, rng, edges=0.4)
    x[0] = -np.inf  # a row with nothing in it
    x[1, :3] = np.inf
    _check(ROWS, [x], dtype)


def test_sigmoid_is_accurate_in_both_tails_eager_and_jit():
    x32 = np.array([-103.0, -95.0, -88.8, -20.0, 0.0, 20.0, 88.8], np.float32)
    want = 1 / (1 + np.exp(-x32.astype(np.float64)))  # exact enough in float64
    for got in (gg.sigmoid(x32), gg.jit(gg.sigmoid)(x32)):
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=2e-6, atol=0)
    # log of the float32 result: about x, where 1 / (1 + exp(-x)) gives 0 and log gives -inf
    # (subnormal results are quantized, so compare with the log of the rounded value)
    logs = gg.jit(lambda a: gg.log(gg.sigmoid(a)))(x32[:4])
    np.testing.assert_allclose(logs, np.log(want[:4].astype(np.float32)), rtol=1e-6)


def test_random_array_edges_draws_every_edge_value():
    rng = np.random.default_rng(0)
    a = random_array((4000,), "float32", rng, edges=0.5)
    for v in edge_values("float32"):
        assert np.isnan(a).any() if np.isnan(v) else (a == v).any()
    assert not np.isnan(random_array((100,), "float32", rng)).any()


def test_flush_tolerance_only_covers_subnormals():
    tiny = np.finfo(np.float32).smallest_subnormal
    want = np.array([tiny, 1.0], np.float32)
    assert_kernel_matches(np.array([0.0, 1.0], np.float32), want, 2e-5, want_flushed=want)
    with pytest.raises(AssertionError):
        assert_kernel_matches(np.array([0.0, 1.0], np.float32), want, 2e-5)
    with pytest.raises(AssertionError):  # a normal number flushed is a real difference
        big = np.array([1e-30, 1.0], np.float32)
        assert_kernel_matches(np.array([0.0, 1.0], np.float32), big, 2e-5, want_flushed=big)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_edge_values_on_the_gpu(name):
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as e:  # no driver
        pytest.skip(f"no CUDA device: {e}")
    x = edge_values("float32")
    f = UNARY[name]
    fn = gg.jit(lambda a: f(a) * 1.0, backend="cupy")
    got = gg.asnumpy(fn(cp.asarray(x)))
    with np.errstate(all="ignore"):
        want = f(x) * np.float32(1.0)
        want_flushed = f(flush_subnormals(x)) * np.float32(1.0)
    assert_kernel_matches(got, want, RTOL["float32"], want_flushed=want_flushed, what=name)
