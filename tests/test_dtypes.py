"""float16 and the narrow integers (int8, uint8, int16, uint16): promotion as NumPy 2, float16
within float16 tolerance of the float32 computation (eagerly, under jit fused and unfused, and
on the kernel emulator), float32 accumulation in reductions and contractions, gradients."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from tests import test_ops, test_ops_elementwise_more
from tests.kernel_helpers import (
    assert_kernel_matches,
    requires_emulator,
    requires_nvrtc,
    run_graph_emulated,
)

F16 = np.float16
RNG = np.random.default_rng(7)
# A float16 result rounds once (ulp 2**-10 relative); composites (gelu, softplus ...) round
# every step, so a few ulps: the tolerance of the float16-vs-float32 comparisons.
HALF_TOL = dict(rtol=8e-3, atol=8e-3)


def half_sample(shape, domain):
    return test_ops.sample(shape, F16, domain, RNG)


def _tables():
    cases = {}
    for table, prefix in ((test_ops, ""), (test_ops_elementwise_more, "more_")):
        for name, entry in table.UNARY.items():
            cases[prefix + name] = (entry[0], entry[-1], 1)
        for name, entry in table.BINARY.items():
            cases[prefix + name] = (entry[0], entry[-1], 2)
    return cases


CASES = _tables()


def _as_f32(a):
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype == F16 else a


def _check_half(got, want32, what):
    """``got`` (from float16 inputs) is float16 where the float32 run gave float32, and equal
    to it within float16 tolerance (NaN where NaN, the same infinities)."""
    got, want32 = np.asarray(got), np.asarray(want32)
    assert got.shape == want32.shape, what
    if want32.dtype == np.float32:
        assert got.dtype == F16, (what, got.dtype)
        want = want32.astype(F16).astype(np.float32)  # the float32 answer, rounded once
        np.testing.assert_allclose(got.astype(np.float32), want, **HALF_TOL, err_msg=what)
    else:
        assert got.dtype == want32.dtype, (what, got.dtype)
        np.testing.assert_array_equal(got, want32, err_msg=what)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float16_op_tables_match_float32_eager_and_jit(name):
    fn, domain, arity = CASES[name]
    args = [half_sample((3, 4), domain) for _ in range(arity)]
    want = fn(*[_as_f32(a) for a in args])
    with np.errstate(all="ignore"):
        _check_half(fn(*args), want, f"{name} eager")
        for fuse in (True, False):
            got = gg.jit(fn, backend="numpy", fuse=fuse)(*args)
            _check_half(got, want, f"{name} jit fuse={fuse}")


# Signed zeros, +-1, the float16 exp overflow edge (exp(11) fits, exp(12) does not), the
# largest finite value, subnormals, infinities and NaN.
HALF_EDGES = [0.0, -0.0, 1.0, -1.0, 11.0, -11.0, 12.0, -12.0, 65504.0, -65504.0, 6e-8, -6e-5]
HALF_EDGES += [np.inf, -np.inf, np.nan, 0.5, 2.0, -2.5]


@requires_nvrtc
@requires_emulator
@pytest.mark.parametrize("inputs", ["sample", "edges"])
@pytest.mark.parametrize("arity", [1, 2])
def test_float16_fused_kernels_compile_and_match_numpy_on_the_emulator(arity, inputs):
    """All ops of the tables of one arity in one jitted function (a few kernels, one compile
    each): every kernel compiles under NVRTC with cuda_fp16.h, and its results on the emulator
    equal NumPy's float16 evaluation of the same graph within float16 tolerance, NaN where NaN
    and the same infinities (at the edge values too)."""
    names = sorted(n for n, (_, _, a) in CASES.items() if a == arity)
    if inputs == "sample":
        args = [half_sample((5, 9), "pos") for _ in range(arity)]
    else:
        edges = np.array(HALF_EDGES, F16)
        args = [edges, edges[::-1].copy()][:arity]

    def f(*xs):
        return tuple(CASES[n][0](*xs) for n in names)

    c = gg.jit(f, backend="numpy").lower(*args)
    assert "fused" in c.graph.op_counts()
    assert any("gg_half" in src for src in c.kernels.values())
    with np.errstate(all="ignore"):
        want = c(*args)
        got = run_graph_emulated(c.graph, args)
    for n, w, g in zip(names, want, got):
        assert g.dtype == w.dtype, n
        assert_kernel_matches(_as_f32(g), _as_f32(w), rtol=2e-3, atol=1e-3, what=n)


@requires_emulator
def test_float16_casts_in_a_kernel_round_as_numpy():
    """float64 -> float16 rounds directly (no double rounding through float32), float16 ->
    int and overflow to inf: the emulated kernel gives NumPy's bits exactly."""
    x = np.array([65504.0, 65520.0, 1e5, -1e5, 1 + 2**-11 + 2**-40, 2**-25, 0.1, -0.0], np.float64)

    def f(x):
        h = gg.astype(x * 1.0, F16)
        return h, gg.astype(h, np.float64) + 0.0, gg.astype(gg.astype(h, np.float32) * 2.0, F16)

    c = gg.jit(f, backend="numpy").lower(x)
    with np.errstate(all="ignore"):
        want = f(x)
        got = run_graph_emulated(c.graph, [x], check_compile=False)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


REDUCTIONS = {
    "sum": lambda x: gg.sum(x, axis=1),
    "mean": lambda x: gg.mean(x, axis=-1, keepdims=True),
    "var": lambda x: gg.var(x, axis=1),
    "std": lambda x: gg.std(x, axis=1),
    "norm": lambda x: gg.norm(x, axis=1),
    "softmax": lambda x: gg.softmax(x, axis=1),
    "log_softmax": lambda x: gg.log_softmax(x, axis=1),
    "logsumexp": lambda x: gg.logsumexp(x, axis=1),
    "layer_norm": lambda x: gg.layer_norm(x),
    "rms_norm": lambda x: gg.rms_norm(x),
    "cumsum": lambda x: gg.cumsum(x, axis=1),
    "matmul": lambda x: gg.matmul(x, gg.transpose(x)),
    "einsum": lambda x: gg.einsum("ij,kj->ik", x, x),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_float16_reductions_accumulate_in_float32(name):
    """Long rows: a float16 accumulator would lose the small terms (or overflow); the results
    are float16 and equal the float32 computation rounded once, within float16 tolerance."""
    fn = REDUCTIONS[name]
    x = (RNG.standard_normal((3, 2000)) * 0.5 + 0.25).astype(F16)
    want = fn(x.astype(np.float32))
    for got in (fn(x), gg.jit(fn, backend="numpy")(x)):
        got = np.asarray(got)
        assert got.dtype == F16
        scale = np.max(np.abs(want))
        np.testing.assert_allclose(
            got.astype(np.float32), want, rtol=4e-3, atol=4e-3 * scale, err_msg=name
        )


def test_float16_mean_of_values_whose_sum_overflows_float16():
    x = np.full(5000, 20.0, F16)  # the sum, 1e5, is above float16's largest finite 65504
    assert gg.mean(x) == F16(20.0) and gg.mean(x).dtype == F16
    assert gg.jit(gg.mean)(x) == F16(20.0)
    with np.errstate(over="ignore"):
        assert np.isinf(gg.sum(x))  # the sum itself does not fit: float16 inf, as JAX's


def test_float16_conv_and_pool():
    x = RNG.standard_normal((2, 3, 6, 6)).astype(F16)
    w = RNG.standard_normal((4, 3, 3, 3)).astype(F16)
    want = gg.conv(x.astype(np.float32), w.astype(np.float32), padding=1)
    got = gg.jit(lambda x, w: gg.conv(x, w, padding=1))(x, w)
    assert got.dtype == F16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=4e-3, atol=2e-2)
    pooled = gg.avg_pool(x, 2)
    assert pooled.dtype == F16 and gg.max_pool(x, 2).dtype == F16
    np.testing.assert_allclose(pooled, gg.avg_pool(x.astype(np.float32), 2), **HALF_TOL)


def _loss(x, w):
    return gg.sum(gg.tanh(gg.matmul(x, w)) * gg.softmax(x, axis=1)[:, :1])


def test_float16_gradients_match_float32():
    x = RNG.standard_normal((4, 5)).astype(F16)
    w = (RNG.standard_normal((5, 3)) * 0.5).astype(F16)
    want = gg.grad(_loss, argnums=(0, 1))(x.astype(np.float32), w.astype(np.float32))
    for grad in (gg.grad(_loss, argnums=(0, 1)), gg.jit(gg.grad(_loss, argnums=(0, 1)))):
        got = grad(x, w)
        for g, wnt in zip(got, want):
            assert g.dtype == F16
            np.testing.assert_allclose(g.astype(np.float32), wnt, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    "a, b",
    [
        (F16, np.float32),
        (F16, np.int8),
        (F16, np.uint8),
        (F16, np.int16),
        (np.int8, np.uint8),
        (np.int16, np.uint8),
        (np.uint8, np.uint16),
        (np.int8, np.int32),
        (np.uint16, np.int16),
        (np.uint8, np.bool_),
    ],
)
def test_promotion_follows_numpy(a, b):
    x, y = np.ones(3, a), np.full(3, 2, b)
    want = np.result_type(a, b)
    assert gg.add(x, y).dtype == want
    assert gg.jit(lambda x, y: x * y)(x, y).dtype == want
    # Python scalars are weak: the array's dtype wins, as NumPy 2
    assert gg.add(x, 1).dtype == (x + 1).dtype == a
    assert gg.jit(lambda x: x + 1)(x).dtype == (x + 1).dtype


def test_weak_scalars_keep_float16():
    x = np.ones(3, F16)
    for f in (lambda x: x * 2.5, lambda x: 1.0 - x, lambda x: gg.exp(x) + 3):
        assert f(x).dtype == F16 and gg.jit(f)(x).dtype == F16


INT_DTYPES = [np.int8, np.uint8, np.int16, np.uint16]


@requires_emulator
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_narrow_int_arithmetic_and_casts_wrap_in_fused_kernels(dtype):
    """Wraparound as NumPy's: sums and products past the range, casts from wider ints, unsigned
    negation; floor division and remainder (zero divisors give 0); the emulated kernel's bits
    equal NumPy's."""
    info = np.iinfo(dtype)
    a = np.array([info.min, info.max, 0, 1, 7, info.max // 2 + 3], dtype)
    b = np.array([1, 1, 0, 3, 5, 2], dtype)
    wide = np.array([300, -129, 70000, -1, 2**31 - 1, 256], np.int64)

    def f(a, b, wide):
        return (
            a + b,
            a * b + a,
            -a,
            a // b,
            a % b,
            (a & b) ^ ~a,
            gg.astype(wide + 0, dtype),
            gg.astype(a, np.float32) * 0.5,
            gg.astype(a, F16),
        )

    with np.errstate(all="ignore"):
        want = f(a, b, wide)
        for fuse in (True, False):
            got = gg.jit(f, backend="numpy", fuse=fuse)(a, b, wide)
            for w, g in zip(want, got):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(g, w)
        c = gg.jit(f, backend="numpy").lower(a, b, wide)
        assert "fused" in c.graph.op_counts()
        emulated = run_graph_emulated(c.graph, [a, b, wide])
    for w, g in zip(want, emulated):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_narrow_int_indices(dtype):
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    idx = np.array([[4, 0, 2, 1], [1, 1, 3, 0]], dtype)
    rows = np.array([3, 0, 3], dtype)
    for run in (lambda f, *a: f(*a), lambda f, *a: gg.jit(f)(*a)):
        np.testing.assert_array_equal(run(lambda x, i: gg.take(x, i, axis=0), x, rows), x[rows])
        np.testing.assert_array_equal(
            run(lambda x, i: gg.take_along_axis(x, i, axis=0), x, idx),
            np.take_along_axis(x, idx, axis=0),
        )
        np.testing.assert_array_equal(
            run(lambda x, i: gg.gather(x, 0, i), x, idx), np.take_along_axis(x, idx, axis=0)
        )
        np.testing.assert_array_equal(
            run(lambda i: gg.one_hot(i, 5), rows), np.eye(5, dtype=np.float32)[rows]
        )
    g = gg.grad(lambda x: gg.sum(gg.take(x, rows, axis=0) * 2.0))(x)
    want = np.zeros_like(x)
    np.add.at(want, rows, 2.0)
    np.testing.assert_array_equal(g, want)


def test_unsupported_dtypes_are_named():
    with pytest.raises(gg.DTypeError, match="uint32 is not supported; use one of float16"):
        gg.exp(np.ones(2, np.uint32))
    with pytest.raises(gg.DTypeError, match="complex64 is not supported"):
        gg.jit(gg.exp)(np.ones(2, np.complex64))


def test_float16_round_trip_casts_fold_away():
    """astype(astype(x, float32), float16) is x (the widening loses nothing), so float32
    accumulation wrappers back to back leave no cast pair between them."""
    x = np.ones((2, 3), F16)
    c = gg.jit(lambda x: gg.astype(gg.astype(x, np.float32), F16) * 2, fuse=False).lower(x)
    assert "astype" not in c.graph.op_counts()
    c = gg.jit(lambda x: gg.astype(gg.astype(x, np.int8), F16), fuse=False).lower(x)
    assert c.graph.op_counts()["astype"] == 2  # float16 -> int8 truncates: kept


def test_float16_random_draws():
    """Unit floats take as many random bits as float16 holds (11): every value is exact and
    below 1 (24 bits would round up to 1.0, and the raw 32-bit word overflows to inf)."""
    k = gg.random.key(3)
    u = gg.random.uniform(k, (20000,), F16)
    assert u.dtype == F16 and u.min() >= 0 and u.max() < 1
    np.testing.assert_array_equal(u, gg.jit(lambda k: gg.random.uniform(k, (20000,), F16))(k))
    assert abs(float(u.astype(np.float32).mean()) - 0.5) < 0.02
    n = gg.random.normal(k, (20000,), F16).astype(np.float32)
    assert np.isfinite(n).all() and abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05


@requires_emulator  # backend="cpu" needs the same host compiler
@pytest.mark.parametrize("dtype", [F16, np.int8, np.uint8])
def test_backend_cpu_native_kernels(dtype, monkeypatch):
    """backend="cpu" compiles the same kernels with the host compiler (_Float16 for float16):
    the results equal the NumPy backend's (float16 within its tolerance, integers exactly)."""
    monkeypatch.setenv("GPUGRAPH_CPU_NATIVE", "all")  # small groups too (cpu_select.py)
    x = (RNG.standard_normal((7, 33)) * 3).astype(dtype)

    def f(x):
        return gg.tanh(x * 0.5) + x if x.dtype == F16 else (x * 3 + 7) // 2 - x

    want = gg.jit(f, backend="numpy")(x)
    c = gg.jit(f, backend="cpu").lower(x)
    with np.errstate(all="ignore"):
        got = c(x)
    assert "1 fused group(s) as native kernels" in c.explain()
    assert got.dtype == want.dtype
    np.testing.assert_allclose(_as_f32(got), _as_f32(want), **HALF_TOL)
