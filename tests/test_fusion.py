"""The fusion pass and the fused op: grouping rules, explain() notes, the chunked NumPy path, and
random expression DAGs checked fused == unfused == NumPy (NumPy path) and on the kernel emulator."""

from __future__ import annotations

import os
import re
import tracemalloc
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpugraph as gg
from gpugraph.backends.base import cupy_status
from gpugraph.errors import ArgumentError
from gpugraph.ir import verify
from gpugraph.testing import emulate_kernel
from gpugraph.testing.emulator import KernelRuntimeError
from gpugraph.testing.nvrtc import compile_ptx
from tests.cupy_emulated import EmulatedCupy
from tests.kernel_helpers import (
    check_nvrtc,
    emulate_fused,
    random_array,
    requires_emulator,
    requires_nvrtc,
    run_graph_emulated,
)


def lower(fn, *args, **options):
    return gg.jit(fn, backend="numpy", verify=True, **options).lower(*args)


def chain(x, n=8):
    for k in range(n):
        x = [gg.tanh, lambda t: t * 1.5, lambda t: t + 0.25, gg.sigmoid][k % 4](x)
    return x


def rand(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---- grouping ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 8, 20])
def test_n_op_chain_makes_exactly_one_kernel(n):
    x = rand(33, 17)
    c = lower(lambda x: chain(x, n), x)
    assert [node.op for node in c.graph.nodes] == ["fused"]
    assert len(c.kernels) == 1
    assert len([m for m in c.graph.nodes[0].attrs["body"].nodes if m.op != "constant"]) == n
    np.testing.assert_allclose(c(x), chain(x, n), rtol=1e-6)


def test_fuse_false_turns_fusion_off():
    x = rand(10)
    c = lower(chain, x, fuse=False)
    assert "fused" not in c.graph.op_counts() and c.kernels == {}
    assert "fusion:" not in c.explain()


def test_value_used_outside_the_group_is_an_output_written_once():
    def f(x, y):
        t = gg.exp(x) * y
        return t + 1.0, gg.sum(t)  # t feeds a reduction: a group output

    x, y = rand(8, 9), rand(8, 9, seed=1)
    c = lower(f, x, y)
    (fused,) = [n for n in c.graph.nodes if n.op == "fused"]
    assert len(fused.outputs) == 2 and len(c.kernels) == 1
    assert fused.attrs["cuda_source"].count("out0[i] =") == 1
    a, s = c(x, y)
    np.testing.assert_allclose(a, np.exp(x) * y + 1, rtol=1e-6)
    np.testing.assert_allclose(s, np.sum(np.exp(x) * y), rtol=1e-5)


@pytest.fixture
def no_reduction_fusion(monkeypatch):
    """The elementwise pass at a reduction boundary: with reduction fusion on, a last-axis sum
    and its elementwise neighbours become one fused_reduce group instead (that pass has its own
    tests, tests/test_reduce_pass.py)."""
    from gpugraph.passes import fuse_reduce

    monkeypatch.setattr(fuse_reduce, "ENABLED", False)


def test_reduction_between_members_is_a_boundary_and_never_a_cycle(no_reduction_fusion):
    def f(x):
        a = gg.exp(x)
        s = gg.sum(a, axis=1, keepdims=True)  # a -> sum -> b: a path out of and back into
        return a * s - a  # the would-be group {exp, multiply, subtract}

    x = rand(5, 6)
    c = lower(f, x)
    verify(c.graph)
    assert c.graph.op_counts()["fused"] == 2
    assert "not merged" in c.explain() and "re-enters" in c.explain()
    e = np.exp(x)
    np.testing.assert_allclose(c(x), e * e.sum(1, keepdims=True) - e, rtol=1e-5)


def test_sibling_groups_reading_one_input_share_one_kernel():
    def f(x, b):
        return gg.exp(x) * 2.0, gg.sin(x) + b  # no edge between the two chains; both read x

    x, b = rand(6, 10), rand(10, seed=1)
    c = lower(f, x, b)
    assert c.graph.op_counts() == {"fused": 1}
    (fused,) = c.graph.nodes
    assert len(fused.outputs) == 2 and len(fused.inputs) == 2  # x is read once
    src = fused.attrs["cuda_source"]
    assert src.count("in0[") == 1 and "out0[i] =" in src and "out1[i] =" in src
    got = c(x, b)
    np.testing.assert_allclose(got[0], np.exp(x) * 2, rtol=1e-6)
    np.testing.assert_allclose(got[1], np.sin(x) + b, rtol=1e-6)


@pytest.mark.nvrtc
@pytest.mark.emulator
@requires_nvrtc
@requires_emulator
def test_sibling_kernel_compiles_and_runs_on_the_emulator():
    def f(x, b):
        return gg.tanh(x + b), gg.exp(x) * x, x > 0.0

    x, b = rand(33, 65), rand(65, seed=1)
    c = lower(f, x, b)
    assert c.graph.op_counts() == {"fused": 1}
    got = run_graph_emulated(c.graph, [x, b])  # compiles under NVRTC first
    np.testing.assert_allclose(got[0], np.tanh(x + b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[1], np.exp(x) * x, rtol=1e-6)
    np.testing.assert_array_equal(got[2], x > 0)


def _gelu_residual(x, bias, res):
    return gg.gelu(x + bias) + res


@pytest.mark.nvrtc
@pytest.mark.emulator
@requires_nvrtc
@requires_emulator
@pytest.mark.parametrize(  # a view is always aligned to its element size, hence no (f64, 4)
    "dtype, misalign",
    [(np.float32, 0), (np.float32, 4), (np.float32, 8), (np.float64, 0), (np.float64, 8)],
)
@pytest.mark.parametrize("cols", [128, 131])  # 131: rows do not fill whole vectors
def test_vector_path_and_its_fallback_match_numpy(dtype, misalign, cols):
    x, b, r = rand(5, cols, dtype=dtype), rand(cols, dtype=dtype, seed=1), rand(5, cols, seed=2)
    r = r.astype(dtype)
    c = lower(_gelu_residual, x, b, r)
    (node,) = c.graph.nodes
    assert node.attrs["lanes"] == 16 // np.dtype(dtype).itemsize
    (got,) = run_graph_emulated(c.graph, [x, b, r], misalign=misalign)
    want = gg.jit(_gelu_residual, backend="numpy", fuse=False)(x, b, r)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.emulator
@requires_emulator
def test_emulator_faults_on_a_misaligned_vector_access():
    """A planted bug: the alignment test removed. The GPU would fault; so must the emulator."""
    x, b, r = rand(4, 64), rand(64, seed=1), rand(4, 64, seed=2)
    (node,) = lower(_gelu_residual, x, b, r).graph.nodes
    src = node.attrs["cuda_source"]
    test = src[src.index("  if (") + 6 : src.index(") {\n    for (long long j")]
    attrs = dict(node.attrs, cuda_source=src.replace(test, "true"))
    out = [node.outputs[0].type]
    emulate_fused(attrs, [x, b, r], out)  # aligned: fine
    with pytest.raises(KernelRuntimeError, match="misaligned vector access"):
        emulate_fused(attrs, [x, b, r], out, misalign=4)


@pytest.mark.nvrtc
@requires_nvrtc
@pytest.mark.parametrize("dtype, width", [(np.float32, "v4.f32"), (np.float64, "v2.f64")])
def test_vector_path_compiles_to_16_byte_accesses(dtype, width):
    x = rand(64, 256, dtype=dtype)
    (src,) = lower(lambda x, y: gg.tanh(x) * y, x, x).kernels.values()
    ptx = compile_ptx(src, "vector.cu", arch="compute_90")
    loads = re.findall(rf"ld\.global(?:\.nc)?\.{re.escape(width)}", ptx)
    assert len(loads) >= 2 and re.search(rf"st\.global\.{re.escape(width)}", ptx), ptx


def test_siblings_joined_through_a_reduction_stay_apart(no_reduction_fusion):
    def f(x):
        s = gg.sum(gg.exp(x), axis=1, keepdims=True)  # exp(x) -> sum -> (x * s): merging the
        return x * s  # two x readers would put the sum both before and after the kernel

    x = rand(5, 6)
    c = lower(f, x)
    verify(c.graph)
    assert c.graph.op_counts()["fused"] == 2
    assert "siblings not merged" in c.explain() and "re-enters" in c.explain()
    np.testing.assert_allclose(c(x), x * np.exp(x).sum(1, keepdims=True), rtol=1e-5)


def test_siblings_of_different_shapes_stay_apart():
    def f(x, y):
        return gg.exp(x), gg.sin(x) * y  # (4, 8) and (3, 4, 8): one kernel cannot write both

    x, y = rand(4, 8), rand(3, 4, 8, seed=1)
    c = lower(f, x, y)
    assert c.graph.op_counts() == {"fused": 2}
    got = c(x, y)
    np.testing.assert_allclose(got[0], np.exp(x), rtol=1e-6)
    np.testing.assert_allclose(got[1], np.sin(x) * y, rtol=1e-6)


def test_diamond_and_broadcasting_members_fuse_into_one():
    def f(x, bias, scale):
        h = x + bias  # (R, C) + (C,)
        return gg.maximum(gg.sin(h), gg.cos(h)) * scale  # scale (R, 1)

    x, b, s = rand(7, 11), rand(11, seed=1), rand(7, 1, seed=2)
    c = lower(f, x, b, s)
    assert c.graph.op_counts() == {"fused": 1}
    h = x + b
    np.testing.assert_allclose(c(x, b, s), np.maximum(np.sin(h), np.cos(h)) * s, rtol=1e-6)


def test_small_members_recompute_but_small_outputs_split():
    def f(x, v):
        r = gg.rsqrt(v + 1e-5)  # (R, 1): used only inside the group
        return (x - 1.0) * r

    x, v = rand(6, 40), np.abs(rand(6, 1, seed=3))
    c = lower(f, x, v)
    assert c.graph.op_counts() == {"fused": 1}
    np.testing.assert_allclose(c(x, v), (x - 1) / np.sqrt(v + np.float32(1e-5)), rtol=1e-5)

    c2 = lower(lambda x, v: ((x - 1.0) * gg.rsqrt(v + 1e-5), gg.rsqrt(v + 1e-5)), x, v)
    assert c2.graph.op_counts()["fused"] >= 2  # an (R, 1) output cannot share the (R, C) kernel
    assert "smaller than the group's shape" in c2.explain()


def test_casts_where_comparisons_and_constants_fuse():
    def f(x, i):
        y = gg.where(x > 0.5, x, gg.astype(i, np.float32) * 2.0)
        return gg.astype(y < 1.0, np.int32) + i

    x, i = rand(9, 4), np.arange(36, dtype=np.int32).reshape(9, 4)
    c = lower(f, x, i)
    assert c.graph.op_counts() == {"fused": 1}
    src = next(iter(c.kernels.values()))
    assert "((float)0.5)" in src and "((float)2.0)" in src  # scalar constants are literals
    y = np.where(x > 0.5, x, i.astype(np.float32) * 2)
    np.testing.assert_array_equal(c(x, i), (y < 1).astype(np.int32) + i)


def test_unsupported_op_is_left_out_with_a_note():
    def f(a, b):
        return gg.power(a + 1, b) * 3

    a, b = np.arange(6, dtype=np.int64), np.full(6, 2, dtype=np.int64)
    c = lower(f, a, b)
    assert "power" in c.graph.op_counts()
    assert "left unfused: power" in c.explain() and "integer power" in c.explain()
    np.testing.assert_array_equal(c(a, b), (a + 1) ** b * 3)


@pytest.mark.nvrtc
@pytest.mark.emulator
@requires_nvrtc
@requires_emulator
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_power_with_a_literal_exponent_fuses_and_wraps_like_numpy(dtype):
    def f(x):
        return (x - 3) ** 3 + x**0 - (x * 1000003) ** 2  # the last one overflows and wraps

    x = np.arange(-40, 41, dtype=dtype).reshape(9, 9)
    c = lower(f, x)
    assert c.graph.op_counts() == {"fused": 1} and "gg_ipow" in next(iter(c.kernels.values()))
    with np.errstate(over="ignore"):
        want = f(x)  # eager NumPy
    np.testing.assert_array_equal(c(x), want)
    (got,) = run_graph_emulated(c.graph, [x])
    np.testing.assert_array_equal(got, want)


def test_integer_power_with_a_negative_or_run_time_exponent_stays_unfused():
    x = np.arange(1, 7, dtype=np.int64)
    with pytest.raises(ArgumentError, match="negative integer powers"):
        lower(lambda x: (x + 1) ** -1, x)  # a literal: refused at the call, as NumPy refuses it
    c = lower(lambda x, e: (x + 1) ** e, x, np.array(-1))
    assert "power" in c.graph.op_counts() and "run-time exponent" in c.explain()
    with pytest.raises(ArgumentError, match="negative integer powers"):
        c(x, np.array(-1))  # NumPy's own check, as a GpuGraphError


def test_explain_lists_groups_and_kernels_map_names_to_source():
    c = lower(chain, rand(10))
    text = c.explain()
    assert "fusion: group 0: 8 ops" in text
    ((name, src),) = c.kernels.items()
    assert name in text and f'extern "C" __global__ void {name}(' in src
    assert f"kernel {name} (4 lanes)" in text  # float32: the 16-byte vector path
    assert "lanes" not in lower(chain, rand(10), vectorize=False).explain()


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=requires_emulator)])
def test_fused_output_may_take_over_a_dying_input(backend, monkeypatch, no_reduction_fusion):
    monkeypatch.setenv("GPUGRAPH_CPU_NATIVE", "all")  # backend="cpu": the kernel writes in place

    def f(x):
        a = gg.exp(x)
        s = gg.sum(a, axis=1, keepdims=True)
        b = gg.tanh(a * 2.0 - s) + a  # reads a for the last time: may write into a's bytes
        return gg.sum(b * b)

    x = rand(6, 50)
    c = gg.jit(f, backend=backend, verify=True).lower(x)
    fused = [n for n in c.graph.nodes if n.op == "fused"]
    assert any(c.memory.slots[v].inplace is not None for n in fused for v in n.outputs)
    np.testing.assert_allclose(c(x), gg.jit(f, backend="numpy", fuse=False)(x), rtol=1e-5)


@pytest.mark.emulator
@requires_emulator
def test_kernel_is_exact_when_an_output_aliases_an_input():
    def f(x, y):
        return gg.tanh(x * y) + x

    x, y = rand(7, 9, dtype=np.float64), rand(9, dtype=np.float64, seed=1)
    c = lower(f, x, y)
    (node,) = c.graph.nodes
    from gpugraph.ops.fused import _inplace_ok

    assert _inplace_ok(node, 0, 0)
    want = np.tanh(x * y) + x
    buf = x.copy()
    emulate_kernel(node.attrs["cuda_source"], node.attrs["kernel_name"], 3, 16, [buf, y, buf])
    np.testing.assert_allclose(buf, want, rtol=1e-12)


# ---- the chunked NumPy path ----------------------------------------------------------------
@pytest.mark.parametrize(
    "shapes",
    [
        [(100_003,), (100_003,)],  # flat, with a partial last chunk
        [(3, 50_001), (50_001,)],  # row broadcast, flat impossible
        [(7, 9000), (7, 1)],  # column broadcast: outer axis index by index
        [(2, 3, 70_001), (3, 1)],
    ],
)
@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=requires_emulator)])
def test_chunked_numpy_path_matches_unfused(shapes, backend, monkeypatch):
    """On backend="cpu" the same groups are native kernels over the OpenMP chunks."""
    monkeypatch.setenv("GPUGRAPH_CPU_NATIVE", "all")

    def f(x, y):
        t = gg.tanh(x * y) + y
        return gg.sigmoid(t) * x, t

    args = [rand(*s, seed=k) for k, s in enumerate(shapes)]
    fused = gg.jit(f, backend=backend)(*args)
    plain = gg.jit(f, backend="numpy", fuse=False)(*args)
    # the cpu backend's tanh is libm's/libmvec's (a few ulp from NumPy's): the op tolerance
    tol = dict(rtol=1e-6, atol=1e-7) if backend == "numpy" else dict(rtol=2e-5, atol=2e-6)
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("shape", [(), (0,), (4, 0), (1,), (1, 1)])
def test_degenerate_shapes(shape):
    x = rand(*shape)
    np.testing.assert_allclose(gg.jit(chain, backend="numpy")(x), chain(x), rtol=1e-6)


@pytest.mark.parametrize("threads", [1, 3])
def test_chunks_on_several_threads(monkeypatch, threads):
    from gpugraph.ops import fused as fused_mod

    monkeypatch.setattr(fused_mod, "THREADS", threads)
    x, col = rand(5, 80_001), rand(5, 1, seed=1)  # 25 chunks: 3 threads get 8 or more
    f = gg.jit(lambda x, c: (chain(x * c), gg.tanh(x) - c), backend="numpy")
    for got, want in zip(f(x, col), (chain(x * col), np.tanh(x) - col)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_non_contiguous_inputs_use_the_nd_chunking():
    x = rand(300, 400).T  # Fortran-ordered view
    f = gg.jit(chain, backend="numpy")
    np.testing.assert_allclose(f(x), chain(x), rtol=1e-6)


def test_numpy_path_makes_no_full_size_temporaries():
    x = rand(1 << 20)
    f = gg.jit(chain, backend="numpy")
    f(x)  # compile and warm up
    tracemalloc.start()
    try:
        f(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * x.nbytes, f"peak {peak} B for a {x.nbytes} B result"


# ---- random expression DAGs ----------------------------------------------------------------
FLOAT_UNARY = [
    gg.tanh,
    gg.sin,
    gg.sigmoid,
    gg.relu,
    gg.abs,
    gg.negative,
    lambda t: gg.exp(gg.tanh(t)),
    lambda t: gg.sqrt(gg.abs(t)),
]
NUMERIC_BINARY = [gg.add, gg.subtract, gg.maximum, gg.minimum]
FLOAT_BINARY = [gg.multiply, lambda a, b: gg.where(a > b, a, b * 0.5)]
INT_UNARY = [gg.negative, gg.abs, lambda t: t + 3, lambda t: gg.where(t < 0, t, -t)]
CENTER = lambda t: t - gg.max(t, keepdims=True)  # a reduction boundary inside the DAG
BOOL_BINARY = [gg.logical_and, gg.logical_or, gg.equal, gg.not_equal]
BOOL_UNARY = [gg.logical_not]
DTYPES = ["float32", "float64", "int32", "int64", "bool"]


@st.composite
def dags(draw):
    """(fn, args): a random elementwise DAG over 1-3 inputs that broadcast together."""
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(0, 3))
    out_shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    n_in = draw(st.integers(1, 3))
    shapes = []
    for _ in range(n_in):
        keep = draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim))
        drop = draw(st.integers(0, ndim))
        shape = tuple(s if k else 1 for s, k in zip(out_shape, keep))[drop:]
        shapes.append(shape)
    kind = np.dtype(dtype).kind
    unary = {"f": FLOAT_UNARY + [CENTER], "i": INT_UNARY + [CENTER], "b": BOOL_UNARY}[kind]
    binary = {"f": NUMERIC_BINARY + FLOAT_BINARY, "i": NUMERIC_BINARY, "b": BOOL_BINARY}[kind]
    steps = draw(
        st.lists(
            st.tuples(st.booleans(), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)),
            min_size=1,
            max_size=10,
        )
    )
    n_out = draw(st.integers(1, 3))
    cast = draw(st.booleans()) and kind == "f"

    def fn(*xs):
        vals = list(xs)
        for is_unary, k, a, b in steps:
            if is_unary:
                vals.append(unary[k % len(unary)](vals[a % len(vals)]))
            else:
                vals.append(binary[k % len(binary)](vals[a % len(vals)], vals[b % len(vals)]))
        if cast:
            other = "float64" if dtype == "float32" else "float32"
            vals.append(gg.astype(gg.astype(vals[-1], other) * 2.0, dtype))
        return tuple(vals[n_in:][-n_out:])

    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return fn, [random_array(s, dtype, rng) for s in shapes]


def _close(a, b, dtype):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    if a.dtype.kind == "f":
        tol = 2e-5 if a.dtype == np.float32 else 1e-12
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(a, b)


SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(dags())
def test_random_dags_fused_equals_unfused_equals_numpy(case):
    fn, args = case
    want = fn(*args)  # eager: plain NumPy through the op impls
    fused = gg.jit(fn, backend="numpy", verify=True)
    plain = gg.jit(fn, backend="numpy", fuse=False)
    for w, a, b in zip(want, fused(*args), plain(*args)):
        _close(a, b, w.dtype)
        _close(a, w, w.dtype)
    ops = fused.lower(*args).graph.op_counts()
    # (a max over the innermost axis joins its neighbours in a fused_reduce group)
    allowed = {"fused", "fused_reduce", "constant", "max"}
    assert set(ops) <= allowed, f"an elementwise op escaped fusion: {ops}"


@requires_emulator  # backend="cpu" needs the same host compiler
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(dags())
def test_random_dags_on_the_cpu_backend_match_numpy(case):
    """The same DAGs (every dtype, broadcasting, casts, a reduction boundary) with every fused
    group a native kernel (backend="cpu", GPUGRAPH_CPU_NATIVE=all)."""
    fn, args = case
    want = fn(*args)
    with mock.patch.dict(os.environ, {"GPUGRAPH_CPU_NATIVE": "all"}):
        got = gg.jit(fn, backend="cpu", verify=True)(*args)
    for w, a in zip(want, got, strict=True):
        _close(a, w, w.dtype)


@pytest.mark.nvrtc
@pytest.mark.emulator
@requires_nvrtc
@requires_emulator
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(dags(), st.sampled_from([0, 8]))
def test_random_dags_on_the_emulator_match_numpy(case, misalign):
    """misalign=8: every array 8 bytes off its alignment, as views like x[1:] are; vector
    accesses would then fault (the emulator checks), so the kernels must take the scalar loop."""
    fn, args = case
    want = fn(*args)
    c = gg.jit(fn, backend="numpy").lower(*args)
    assert set(c.graph.op_counts()) <= {"fused", "fused_reduce", "constant", "max"}
    got = run_graph_emulated(c.graph, args, misalign=misalign)
    for w, g in zip(want, got):
        _close(np.asarray(g).reshape(np.shape(w)), w, w.dtype)


@pytest.mark.nvrtc
@requires_nvrtc
def test_benchmark_graphs_compile_under_nvrtc():
    def block(x, bias, res):
        return gg.gelu(x + bias) + res

    c = lower(block, rand(64, 128), rand(128), rand(64, 128))
    c8 = lower(chain, rand(1000))
    for comp in (c, c8):
        ((name, src),) = comp.kernels.items()
        check_nvrtc(src, f"{name}.cu")


@pytest.mark.emulator
@requires_emulator
def test_planted_broadcast_bug_fails_the_dag_comparison():
    def f(x, col, row):
        t = gg.tanh(x * col) + row
        return t * gg.sigmoid(row - col), t

    args = [rand(5, 6), rand(5, 1, seed=1), rand(6, seed=2)]
    want = f(*args)
    c = gg.jit(f, backend="numpy").lower(*args)
    good = run_graph_emulated(c.graph, args)
    for w, g in zip(want, good):
        _close(g, w, w.dtype)
    bad = run_graph_emulated(c.graph, args, check_compile=False, stride_bug=True)
    with pytest.raises(AssertionError):
        for w, g in zip(want, bad):
            _close(g, w, w.dtype)


@pytest.mark.gpu
@pytest.mark.skipif(cupy_status().name != "cupy", reason="needs CuPy and a CUDA device")
def test_fused_kernels_on_the_gpu_match_numpy():
    import cupy

    def f(x, b, r):
        return gg.gelu(x + b) + r, chain(x)

    args = [rand(33, 1000), rand(1000, seed=1), rand(33, 1000, seed=2)]
    want = gg.jit(f, backend="numpy", fuse=False)(*args)
    fn = gg.jit(f, backend="cupy")
    for vectorize in (True, False):
        got = gg.jit(f, backend="cupy", vectorize=vectorize)(*[cupy.asarray(a) for a in args])
        for g, w in zip(got, want):
            np.testing.assert_allclose(cupy.asnumpy(g), w, rtol=1e-5, atol=1e-6)
    # views 4 bytes past an allocation: contiguous but misaligned for 16-byte vector loads,
    # so the kernels must take their scalar loop (a vector access there would fault)
    views = []
    for a in args:
        flat = cupy.zeros(a.size + 1, a.dtype)
        flat[1:] = cupy.asarray(a).ravel()
        views.append(flat[1:].reshape(a.shape))
    assert views[0].data.ptr % 16 == 4
    for g, w in zip(fn(*views), want):
        np.testing.assert_allclose(cupy.asnumpy(g), w, rtol=1e-5, atol=1e-6)


@pytest.mark.emulator
@requires_emulator
def test_cupy_runner_launches_the_generated_kernel(monkeypatch):
    import sys

    from gpugraph.ops import fused as fused_mod

    def f(x, b):
        t = x + b
        return gg.gelu(t) * 2.0, t - b

    x, b = rand(9, 40).T.copy().T, rand(40, seed=1)  # a non-contiguous input: made contiguous
    c = lower(f, x, b)
    (node,) = c.graph.nodes
    fake = EmulatedCupy(sm_count=2)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    fused_mod._raw_kernel.cache_clear()
    fused_mod._sm_count.cache_clear()
    try:
        runner = fused_mod._prepare_cupy(node, None)
        outs = [np.empty(v.type.shape, v.dtype) for v in node.outputs]
        runner([x, b], outs)
    finally:
        fused_mod._raw_kernel.cache_clear()
        fused_mod._sm_count.cache_clear()
    ((name, grid, block),) = fake.launches
    assert node.attrs["lanes"] == 4  # 360 elements, 4 per thread and step: one block of 256
    assert name == node.attrs["kernel_name"] and grid == (1,) and block == (256,)
    for got, want in zip(outs, gg.jit(f, backend="numpy", fuse=False)(x, b)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_all_ones_operand_in_tiny_chunks_is_cut_like_the_output(monkeypatch):
    """Regression: a [1,1] operand beside a [5,8] output, with chunks smaller than a row,
    kept its outer axis and broadcast to the wrong rank (found by test_properties)."""
    from gpugraph.ops import fused

    monkeypatch.setattr(fused, "CHUNK_ELEMENTS", 1)
    x = np.linspace(-1, 1, 40, dtype=np.float32).reshape(5, 8)
    s = np.full((1, 1), 0.25, np.float32)

    def fn(x, v, s):
        return gg.exp(gg.tanh(x + v)) + s

    v = np.arange(8, dtype=np.float32) / 8
    np.testing.assert_allclose(gg.jit(fn, backend="numpy")(x, v, s), fn(x, v, s), rtol=1e-6)
