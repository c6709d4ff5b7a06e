"""backend="cpu": fused groups as generated kernels compiled by the host C++ compiler, every
other op through NumPy; results equal the NumPy backend's. Lean on compiler runs: each test
jits one function holding many cases, so a plan's kernels build in one compiler run. Every
test but the policy ones compiles every fused group (GPUGRAPH_CPU_NATIVE=all): the default
policy leaves small groups to NumPy, and these tests use small arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_helpers import edge_values, requires_emulator
from test_ops import BINARY, UNARY, sample, tol
from test_ops_elementwise_more import BINARY as BINARY_MORE
from test_ops_elementwise_more import BOOL_BINARY, INT_BINARY
from test_ops_elementwise_more import UNARY as UNARY_MORE
from test_ops_elementwise_more import sample as sample_more

import gpugraph as gg
from gpugraph import cache
from gpugraph.backends import cpu_backend
from gpugraph.backends.base import _backend
from gpugraph.codegen import emit_kernel
from gpugraph.ir import GraphBuilder, TensorType
from gpugraph.testing.races import dag_function
from tests.dag_strategies import dag_recipes

pytestmark = requires_emulator  # the same host compiler


@pytest.fixture(autouse=True)
def _every_group_native(monkeypatch):
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "all")


def _both(fn, *args):
    """(cpu result, numpy result, the cpu plan) of jitted ``fn``."""
    compiled = gg.jit(fn, backend="cpu").lower(*args)
    with np.errstate(all="ignore"):
        got = compiled(*args)
        want = gg.jit(fn, backend="numpy")(*args)
    return got, want, compiled


def _native_groups(compiled) -> int:
    """How many fused groups run as native kernels (explain() says); checks that is all of
    the plan's fused groups but those explain() says stay on NumPy."""
    text = compiled.explain()
    assert "backend: cpu" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("cpu: "))
    native, refused = int(line.split()[1]), text.count("runs on NumPy:")
    assert native + refused == compiled.graph.op_counts().get("fused", 0)
    return native


def _assert_close(got, want, dtype):
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        if np.dtype(dtype).kind == "f" and g.dtype.kind == "f":
            np.testing.assert_allclose(g, w, **tol(dtype))  # NaN where NumPy has NaN
        else:
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_op_matches_numpy_on_samples_and_edge_values(dtype):
    """test_ops.py's unary and binary tables, each case one output of one function: on random
    samples of the op's domain, on every edge value (signed zeros, overflow edges, subnormals,
    +-inf, NaN) and on every pair of edge values. "* 1" (or a logical_and) after each op makes
    a kernel compute it."""
    rng = np.random.default_rng(1)
    domains = ("any", "pos", "nonzero", "small_int")
    xs = {d: sample((7, 9), dtype, d, rng) for d in domains}
    e = edge_values(dtype)
    ea, eb = np.repeat(e, e.size), np.tile(e, e.size)

    def after(r):
        return gg.logical_and(r, r) if r.dtype == np.bool_ else r * 1

    def fn(x_any, x_pos, x_nonzero, x_small_int, edges, ea, eb):
        by = dict(zip(domains, (x_any, x_pos, x_nonzero, x_small_int)))
        outs = []
        for name in sorted(UNARY):
            f, _, domain = UNARY[name]
            outs += [after(f(by[domain])), after(f(edges))]
        for name in sorted(BINARY):
            f, _, domain = BINARY[name]
            outs += [after(f(by[domain], by[domain][::-1])), after(f(ea, eb))]
        return tuple(outs)

    got, want, compiled = _both(fn, *xs.values(), e, ea, eb)
    assert _native_groups(compiled) >= 1
    _assert_close(got, want, dtype)
    # and against NumPy itself, for the cases on random samples
    for k, name in enumerate(sorted(UNARY)):
        _, ref, domain = UNARY[name]
        np.testing.assert_allclose(got[2 * k], ref(xs[domain]), **tol(dtype))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_integer_arithmetic_wraps_like_numpy(dtype):
    info = np.iinfo(dtype)
    a = np.array([info.max, info.min, -1, 0, 1, info.max // 2 + 7, info.min + 3], dtype)
    b = np.array([1, -1, info.min, info.max, info.max, 3, info.min], dtype)

    def fn(a, b):
        return (a + b, a - b, a * b + a, -a, gg.abs(a) * 1, gg.maximum(a, b) * 3, a**3)

    with np.errstate(all="ignore"):
        got, want, compiled = _both(fn, a, b)
    assert _native_groups(compiled) >= 1
    _assert_close(got, want, dtype)
    np.testing.assert_array_equal(got[0], a + b)  # wrapped, as NumPy does


def test_float_to_int_casts_stay_on_numpy_with_a_note():
    x = np.array([1.5, -2.5, np.nan, np.inf, -np.inf, 3e10], np.float32)

    def fn(x):
        return gg.astype(x * 2, "int32") + 1, gg.astype(x * 1, "float64") * 2

    with np.errstate(all="ignore"):
        got, want, compiled = _both(fn, x)
    assert "runs on NumPy: a float32 -> int32 cast" in compiled.explain()
    _assert_close(got, want, np.float64)


def test_misaligned_views_and_the_parallel_path(monkeypatch):
    """x[1:] of a float32 array is 4 bytes off any vector boundary: the kernel's alignment
    test sends it down the scalar loop. 300001 elements split over the OpenMP threads (chunks
    start on multiples of 64 elements; the last one is ragged): the threshold is lowered to
    reach the parallel path."""
    monkeypatch.setenv(cpu_backend.PARALLEL_MIN_ENV, str(1 << 16))
    cpu_backend.parallel_min.cache_clear()
    rng = np.random.default_rng(2)
    base = rng.standard_normal(300002).astype(np.float32)
    other = rng.standard_normal(300002).astype(np.float32)
    bias = rng.standard_normal(1).astype(np.float32)

    def fn(x, y, b):
        return gg.tanh(x * y + b) - x, gg.exp(-y) * 0.5

    try:
        for x, y in ((base[1:], other[:-1]), (base[:-1], other[:-1])):
            got, want, compiled = _both(fn, x, y, bias)
            assert _native_groups(compiled) >= 1
            _assert_close(got, want, np.float32)
    finally:
        monkeypatch.undo()
        cpu_backend.parallel_min.cache_clear()


def test_size_zero_and_broadcast_inputs():
    x = np.zeros((0, 3), np.float64)
    got, want, _ = _both(lambda x: gg.sin(x) * 2 + 1, x)
    assert got.shape == (0, 3)
    rows = np.linspace(-3, 3, 5 * 6).reshape(5, 6)
    col = np.linspace(1, 2, 5).reshape(5, 1)
    got, want, compiled = _both(lambda r, c: gg.sqrt(gg.abs(r * c)) + c, rows, col)
    assert _native_groups(compiled) >= 1
    np.testing.assert_allclose(got, want, rtol=1e-12)


X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
Y = np.cos(X * 3).astype(np.float32)


@settings(max_examples=6, deadline=None)
@given(recipe=dag_recipes(max_size=12), k=st.sampled_from([1, 2]))
def test_random_fused_dags_match_numpy(recipe, k):
    fn = dag_function(recipe)
    compiled = gg.jit(fn, backend="cpu", streams=k).lower(X, Y)
    want = gg.jit(fn, backend="numpy", streams=k)(X, Y)
    np.testing.assert_allclose(compiled(X, Y), want, rtol=2e-6, atol=2e-6)


def _one_kernel(scale: float):
    b = GraphBuilder()
    x = b.add_input(TensorType((10,), np.dtype(np.float64)))
    c = b.add_node("constant", [], {"value": np.array(scale)}, [TensorType((), x.dtype)]).output
    y = b.add_node("multiply", [x, c], {}, [x.type]).output
    return emit_kernel(b.build([b.add_node("exp", [y], {}, [x.type]).output]))


def test_libraries_come_from_the_persistent_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUGRAPH_CACHE_DIR", str(tmp_path))
    kernel = _one_kernel(1.25)
    x, out = np.arange(10.0), np.empty(10)

    def build_and_run():
        backend = cpu_backend.CpuBackend()  # a fresh one: nothing compiled in this process
        k = backend.kernel(kernel.source, kernel.name, 2)
        backend.compile_pending()
        k.fn(10, 10, x.ctypes.data, out.ctypes.data)
        np.testing.assert_allclose(out, np.exp(1.25 * x), rtol=1e-15)

    before = list(cache.STATS.by_kind.get("cpu-so", [0, 0]))
    build_and_run()
    misses = cache.STATS.by_kind["cpu-so"][1] - before[1]
    assert misses == 1 and cache.info().kinds["cpu-so"][0] == 1
    hits = cache.STATS.by_kind["cpu-so"][0]
    monkeypatch.setattr(cpu_backend, "_build", lambda ks: pytest.fail("compiled again"))
    build_and_run()
    assert cache.STATS.by_kind["cpu-so"][0] == hits + 1


def test_compile_errors_name_the_compiler_and_show_its_log():
    backend = cpu_backend.CpuBackend()
    source = 'extern "C" __global__ void gg_fused_broken(float* out0) { out0[0] = nope; }'
    backend.kernel(source, "gg_fused_broken", 1)
    with pytest.raises(cpu_backend.CpuCompileError, match=r"(?s)g\+\+.*nope"):
        backend.compile_pending()


def test_a_missing_compiler_is_a_clear_error_at_lower_time(monkeypatch):
    monkeypatch.setenv(cpu_backend.CXX_ENV, "no-such-compiler-gpugraph")
    cpu_backend.compiler.cache_clear()
    _backend.cache_clear()
    try:
        with pytest.raises(cpu_backend.CpuBackendUnavailable, match="no-such-compiler"):
            gg.jit(lambda x: x * 2, backend="cpu").lower(np.ones(3))
    finally:
        monkeypatch.undo()
        cpu_backend.compiler.cache_clear()
        _backend.cache_clear()


def test_info_says_whether_the_cpu_backend_can_run():
    assert cpu_backend.status().startswith("available: ")
    assert cpu_backend.probe().name == "cpu"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_math_more_ops_match_numpy_on_samples_and_edge_values(dtype):
    """test_ops_elementwise_more.py's float tables (softplus, tan, arctan2, remainder, ...) in
    one plan: random samples of each op's domain, every edge value, every pair of them."""
    rng_domains = ("any", "pos", "gt-1", "nonzero")
    xs = {d: sample_more((5, 7), dtype, d) for d in rng_domains}
    e = edge_values(dtype)
    ea, eb = np.repeat(e, e.size), np.tile(e, e.size)

    def after(r):
        return gg.logical_and(r, r) if r.dtype == np.bool_ else r * 1

    def fn(x_any, x_pos, x_gt1, x_nonzero, edges, ea, eb):
        by = dict(zip(rng_domains, (x_any, x_pos, x_gt1, x_nonzero)))
        outs = []
        for name in sorted(UNARY_MORE):
            f, _, _, domain = UNARY_MORE[name]
            outs += [after(f(by[domain])), after(f(edges))]
        for name in sorted(BINARY_MORE):
            f, _, _, domain = BINARY_MORE[name]
            outs += [after(f(by["any"], by[domain][::-1])), after(f(ea, eb))]
        return tuple(outs)

    got, want, compiled = _both(fn, *xs.values(), e, ea, eb)
    assert _native_groups(compiled) >= 1
    _assert_close(got, want, dtype)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_integer_and_bool_ops_match_numpy(dtype):
    """The integer (floor division and remainder by negatives, bitwise ops, clip) and boolean
    tables of test_ops_elementwise_more.py, on values around zero and the dtype's limits."""
    if dtype == np.bool_:
        a = np.array([True, False, True, False])
        b = np.array([True, True, False, False])
        table = BOOL_BINARY
    else:
        info = np.iinfo(dtype)
        a = np.array([-9, -7, -1, 0, 1, 7, 9, info.max, info.min, info.min], dtype)
        b = np.array([4, -4, 3, -3, 2, -2, 1, 7, -7, 3], dtype)
        table = INT_BINARY

    def fn(a, b):
        return tuple(
            table[name][0](a, b) * 1 if dtype != np.bool_ else table[name][0](a, b)
            for name in sorted(table)
        )

    with np.errstate(all="ignore"):
        got, want, compiled = _both(fn, a, b)
    _assert_close(got, want, dtype)
    for k, name in enumerate(sorted(table)):
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(got[k], table[name][1](a, b), err_msg=name)


BROADCASTS = [
    ((), (3,)),
    ((4, 1), (1, 5)),
    ((2, 3, 4), (3, 1)),
    ((2, 1, 4), (1, 3, 1)),
    ((5,), (2, 5)),
    ((1,), (3, 2)),
    ((3, 1, 1), (1, 1, 2)),
    ((0, 3), (1, 3)),
]


def test_broadcast_operands_every_pattern_in_one_plan():
    """Operands broadcast along leading, middle, trailing and several axes (the kernel's
    index arithmetic), with each binary op of test_ops.py's table on one of the patterns."""
    rng = np.random.default_rng(4)
    args = [rng.standard_normal(s) for pair in BROADCASTS for s in pair]
    names = sorted(BINARY)

    def fn(*xs):
        outs = []
        for k in range(len(BROADCASTS)):
            a, b = xs[2 * k], xs[2 * k + 1]
            for name in names[k :: len(BROADCASTS)]:
                r = BINARY[name][0](a, b)
                outs.append(gg.logical_and(r, r) if r.dtype == np.bool_ else r * 1)
            outs.append(gg.tanh(a) * b + a)
        return tuple(outs)

    got, want, compiled = _both(fn, *args)
    assert _native_groups(compiled) >= len(BROADCASTS) - 1  # the size-0 pattern may be empty
    _assert_close(got, want, np.float64)
