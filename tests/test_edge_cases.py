"""Edge cases a JAX or PyTorch user hits: odd shapes, dtypes, strides, arguments and errors.

Each test states the behaviour it pins, and each was written against a bug it found.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.ops import core as ops_core
from tests.kernel_helpers import requires_emulator, run_graph_emulated

HERE = "test_edge_cases.py:"


def jit(fn, **kw):
    return gg.jit(fn, backend="numpy", **kw)


def user_error(fn, *args, exc=gg.GpuGraphError) -> str:
    """Call fn and return the message of the gpugraph error it must raise."""
    with pytest.raises(exc) as info:
        fn(*args)
    return str(info.value)


# --- shapes: zero-size and 0-d ----------------------------------------------------------------


def test_zero_size_arrays_through_fusion_reductions_and_matmul():
    x = np.zeros((0, 3), np.float32)

    def f(x):
        return (
            gg.exp(x) * 2 + 1,
            (x * 2).sum(axis=0),
            x.sum(axis=1, keepdims=True),
            x.mean(axis=1),
            x.T @ x,
            gg.concatenate([x, x + 1]),
            x.reshape(3, 0) * 3,
        )

    ref = [np.exp(x) * 2 + 1, (x * 2).sum(0), x.sum(1, keepdims=True), np.zeros(0, np.float32)]
    ref += [x.T @ x, np.concatenate([x, x + 1]), x.reshape(3, 0) * 3]
    for opts in ({}, {"fuse": False}, {"optimize": False}):
        got = jit(f, **opts)(x)
        for g, r in zip(got, ref):
            assert g.shape == r.shape and g.dtype == r.dtype
            np.testing.assert_array_equal(g, r)
    assert "no identity" in user_error(jit(lambda x: x.max(axis=0)), x)


def test_zero_d_arrays_and_python_scalars_in_and_out():
    f = jit(lambda x, s: (x * s + 1, 2.5, None, s))
    out, const, none, s_out = f(np.float32(2.0), 3.0)
    assert out.dtype == np.float32 and out.shape == () and out == 7.0
    assert const == 2.5 and none is None and s_out == 3.0
    out2 = f(np.array(2.0, np.float32), 4.0)[0]
    assert out2 == 9.0 and out == 7.0  # the first result is not overwritten by the second call
    assert f.cache_size == 1  # a new weak scalar value is not a new signature
    assert jit(lambda: gg.ones(3) * 2)().tolist() == [2.0, 2.0, 2.0]
    assert jit(lambda x: x * 2)(True).dtype == np.int64  # bool * int scalar -> int, as NumPy


# --- dtypes: int and bool graphs under fusion ------------------------------------------------

A = np.array([-7, 7, -8, 9, 0, 5], np.int32)
B = np.array([2, -2, 3, 4, 5, -3], np.int32)
INT_FNS = {
    "true_divide": lambda a, b: (a / b) * 2 + 1,
    "arith": lambda a, b: a * b - a + 3,
    "power": lambda a, b: a**2 + 1,
    "max_min": lambda a, b: gg.maximum(a, b) + gg.minimum(a, 2) * 3,
    "abs_sign_neg": lambda a, b: gg.abs(a) + gg.sign(b) - (-a),
    "compare_where": lambda a, b: gg.where(a > b, a * 2, b - 1),
    "logic": lambda a, b: ((a > b) & (b > 0)) | ~(a == b),
    "bool_sum": lambda a, b: ((a > 0) & (b > 0)).sum(),
    "int_sum_axis": lambda a, b: (a * 3 + b).reshape(2, 3).sum(axis=0),
    "int_mean": lambda a, b: (a + b).mean(),
    "casts": lambda a, b: (a * 1.5).astype("int32") + a.astype("bool").astype("int32"),
    "argmax": lambda a, b: gg.argmax(a * -1 + b),
}


@pytest.mark.parametrize("name", sorted(INT_FNS))
def test_int_and_bool_graphs_match_numpy_under_fusion(name):
    fn = INT_FNS[name]
    ref = fn(A.copy(), B.copy())  # plain NumPy
    for opts in ({}, {"fuse": False}):
        got = jit(fn, **opts)(A, B)
        assert got.dtype == np.asarray(ref).dtype, (got.dtype, np.asarray(ref).dtype)
        np.testing.assert_array_equal(got, ref)


def test_weak_python_int_that_overflows_the_array_dtype_is_an_error_not_a_wrap():
    f = jit(lambda x, s: x * s)
    np.testing.assert_array_equal(f(A, 3), A * 3)
    msg = user_error(f, A, 2**40 + 1)  # NumPy 2: OverflowError; gpugraph used to wrap to 1
    assert "argument s" in msg and str(2**40 + 1) in msg
    user_error(f, A, -(2**31) - 1)
    np.testing.assert_array_equal(f(A, -(2**31)), A * np.int64(-(2**31)).astype(np.int32))
    big = A.astype(np.int64)
    np.testing.assert_array_equal(f(big, 2**40), big * 2**40)  # fits int64: fine
    assert "argument s" in user_error(f, big, 2**70)


# --- NaN and inf ------------------------------------------------------------------------------

NAN_X = np.array([np.nan, 1.0, -np.inf, np.inf, -0.0, 0.0, -2.5, 3.0], np.float32)
NAN_Y = np.array([1.0, np.nan, 0.0, np.nan, 0.0, -0.0, np.inf, -np.inf], np.float32)


def nan_fn(x, y):
    return (
        gg.maximum(x, y) * 1.0,
        gg.minimum(x, y) + 0.0,
        gg.relu(x) * 2,
        gg.abs(x) - 1,
        gg.sign(x) * 3,
        gg.where(x > y, x, y) + 0,
        gg.where(x != x, 1.0, 0.0) + x,
        (x < y).astype("float32") + x,
        gg.maximum(x, 0.0) - y,
    )


def nan_ref(x, y):
    with np.errstate(invalid="ignore"):
        return (
            np.maximum(x, y),
            np.minimum(x, y),
            np.maximum(x, 0) * 2,
            np.abs(x) - 1,
            np.sign(x) * 3,
            np.where(x > y, x, y),
            np.where(np.isnan(x), 1.0, 0.0).astype(np.float32) + x,
            (x < y).astype(np.float32) + x,
            np.maximum(x, 0) - y,
        )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_and_inf_propagate_the_same_eager_and_jitted():
    ref = nan_ref(NAN_X, NAN_Y)
    for got in (nan_fn(NAN_X, NAN_Y), jit(nan_fn)(NAN_X, NAN_Y)):
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r)
    for fn, npfn in ((gg.argmax, np.argmax), (gg.max, np.max), (gg.min, np.min)):
        assert np.array_equal(jit(lambda x, fn=fn: fn(x * 1.0))(NAN_X), npfn(NAN_X), equal_nan=True)
        assert np.array_equal(fn(NAN_X), npfn(NAN_X), equal_nan=True)


@pytest.mark.emulator
@requires_emulator
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_and_inf_in_generated_cuda_kernels_match_numpy():
    compiled = jit(nan_fn).lower(NAN_X, NAN_Y)
    got = run_graph_emulated(compiled.graph, [NAN_X, NAN_Y], check_compile=False)
    for g, r in zip(got, nan_ref(NAN_X, NAN_Y)):
        np.testing.assert_array_equal(g, r)


# --- reductions and outputs -------------------------------------------------------------------


def test_reductions_over_all_axes_and_keepdims_inside_fused_chains():
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)

    def f(x):
        return (
            (gg.exp(x) * 2).sum(axis=None, keepdims=True) + x,
            (x * x).max(axis=(0, 2), keepdims=True) - x.min(keepdims=True),
            x.mean(axis=(-1, 0)),
            gg.sum(x * 2, axis=()) + 1,
            (x + 1).sum(),
        )

    ref = (
        (np.exp(x) * 2).sum(keepdims=True) + x,
        (x * x).max(axis=(0, 2), keepdims=True) - x.min(keepdims=True),
        x.mean(axis=(-1, 0)),
        x * 2 + 1,
        (x + 1).sum(),
    )
    for g, r in zip(jit(f)(x), ref):
        assert g.shape == np.shape(r)
        np.testing.assert_allclose(g, r, rtol=1e-5)


def test_repeated_outputs_inputs_and_constants_come_back_as_distinct_fresh_arrays():
    x = np.ones(3, np.float32)
    c = np.arange(3, dtype=np.float32)
    f = jit(lambda x: (x, x, x * 2, x * 2, c, {"a": x, "b": [x * 2]}))
    r = f(x)
    arrays = [r[0], r[1], r[2], r[3], r[4], r[5]["a"], r[5]["b"][0]]
    for i, a in enumerate(arrays):
        assert not np.shares_memory(a, x) and not np.shares_memory(a, c)
        for b in arrays[i + 1 :]:
            assert not np.shares_memory(a, b)
    r[4][0] = 100.0
    r[0][0] = 100.0
    r2 = f(x)
    assert r2[4][0] == 0.0 and c[0] == 0.0 and x[0] == 1.0
    np.testing.assert_array_equal(r[2], [2, 2, 2])  # still valid after the next call


def test_outputs_that_are_reshape_views_stay_valid_after_the_next_call():
    f = jit(lambda x: ((x * 2).reshape(-1), (x + 1).reshape(3, 2)[1], gg.exp(x).T, x.reshape(6)))
    x = np.arange(6.0).reshape(2, 3)
    first = f(x)
    kept = [a.copy() for a in first]
    f(x * 10)
    for a, k in zip(first, kept):
        np.testing.assert_array_equal(a, k)
    assert not np.shares_memory(first[3], x)


# --- strides, read-only and aliased inputs ----------------------------------------------------


def _strided_inputs():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    big = rng.standard_normal((300, 400)).astype(np.float32)
    return {
        "transposed": base.T,
        "sliced": base[:, ::2],
        "negative_stride": base[::-1],
        "negative_transposed": base[::-1, ::-2].T,
        "big_sliced_negative": big[::-1, ::2],  # several chunks in the NumPy fused runner
        "broadcast_readonly": np.broadcast_to(base[0], (5, 8)),
    }


@pytest.mark.parametrize("kind", sorted(_strided_inputs()))
def test_non_contiguous_and_read_only_inputs_give_correct_results(kind):
    x = _strided_inputs()[kind]
    before = x.copy()
    fns = [
        lambda x: gg.exp(x) * 2 + x,
        lambda x: (x * 2).reshape(-1) + 1,
        lambda x: x.reshape(-1),
        lambda x: x.T.reshape(-1) * 3,
        lambda x: x @ x.T + 1,
        lambda x: gg.tanh(x) - x.sum(axis=0),
        lambda x: gg.where(x > 0, x, -x)[1:, ::-1] * 2,
    ]
    for fn in fns:
        for opts in ({}, {"fuse": False}):
            np.testing.assert_allclose(jit(fn, **opts)(x), fn(before), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x, before)


def test_read_only_input_flag_is_respected():
    y = np.arange(12, dtype=np.float32).reshape(3, 4)
    y.flags.writeable = False
    f = jit(lambda x: (gg.exp(x * 0.1) + x * 2, x.reshape(12), -x))
    out = f(y)
    np.testing.assert_allclose(out[0], np.exp(y * 0.1) + y * 2, rtol=1e-6)
    assert all(o.flags.writeable for o in out)


@pytest.mark.parametrize("fuse", [False, True])
def test_concurrent_calls_from_threads_do_not_share_intermediates(fuse):
    import threading

    f = gg.jit(lambda x: gg.tanh(x * 2.0) * 3.0 + gg.exp(-x), backend="numpy", fuse=fuse)
    xs = [np.full(1 << 16, k / 4, np.float32) for k in range(4)]
    wants = [f(x) for x in xs]  # one thread: the reference
    wrong: list[int] = []

    def worker(k: int) -> None:
        for _ in range(40):
            if not np.array_equal(f(xs[k]), wants[k]):
                wrong.append(k)
                return

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, f"threads {wrong} got another call's numbers"


def test_the_same_array_passed_twice():
    x = np.random.default_rng(2).standard_normal((4, 4))
    x0 = x.copy()
    f = jit(lambda a, b: (gg.exp(a) * b + a @ b, a - b))
    got, zero = f(x, x)
    np.testing.assert_allclose(got, np.exp(x0) * x0 + x0 @ x0, rtol=1e-6)
    np.testing.assert_array_equal(zero, 0)
    np.testing.assert_array_equal(x, x0)


# --- graph size and fusion legality -----------------------------------------------------------


def _random_chain(seed: int, n: int):
    def f(x, y):
        rng = np.random.default_rng(seed)  # the same graph on every call
        vals = [x, y]
        ops = [gg.add, gg.multiply, gg.subtract, gg.maximum]
        for _ in range(n):
            a, b = (vals[int(rng.integers(len(vals)))] for _ in range(2))
            k = int(rng.integers(6))
            v = gg.tanh(a) if k == 4 else (a.sum(axis=0) + b if k == 5 else ops[k](a, b))
            vals.append(v)
        return vals[-1] + vals[-2], vals[len(vals) // 2]

    return f


def test_a_200_node_random_chain_compiles_and_matches_eager():
    x, y = np.random.default_rng(3).standard_normal((2, 3, 4)) * 0.5
    f = _random_chain(7, 200)
    compiled = jit(f).lower(x, y)
    assert len(compiled.traced_graph.nodes) >= 200
    for g, r in zip(compiled(x, y), f(x, y)):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


def test_fusion_never_forms_two_groups_that_feed_each_other():
    """Groups A = {x-y, relu, +} and B = {neg, abs, sigmoid, maximum} are each convex, but A
    feeds B through sum and B feeds A through abs: fused whole, the graph had a cycle
    ("AssertionError: fusion produced a cycle")."""

    def f(x, y):
        d = x - y
        s = gg.relu(d).sum(axis=0, keepdims=True)
        n = -y
        b = gg.maximum(s, gg.sigmoid(n))
        t = d + gg.abs(n)
        return gg.maximum(t, b), t.sum()

    x, y = np.random.default_rng(4).standard_normal((2, 5, 7))
    for g, r in zip(jit(f)(x, y), f(x, y)):
        np.testing.assert_allclose(g, r, rtol=1e-12)


def test_unused_elementwise_values_with_optimize_off():
    def f(x):
        unused = gg.exp(x) * 2  # noqa: F841  (dead code: DCE is off)
        return x.sum()

    assert jit(f, optimize=False)(np.ones((2, 3))) == 6.0


def test_fused_output_never_overwrites_a_value_another_view_input_still_reads():
    """v1 and v2 are two reshapes (views) of r. The group {o = v1*2, p = o + v2} may write o
    over r's bytes as far as v1 is concerned, but v2 reads them later: p came out as 4*e^x
    instead of 3*e^x (optimize=False keeps the duplicate reshape; grad graphs have them)."""

    def f(x):
        r = gg.exp(x).sum()
        v1, v2 = r.reshape(1), r.reshape(1)
        o = v1 * 2.0
        return o + v2, o.sum()

    x = np.array([0.5])
    for opts in ({"optimize": False}, {}):
        p, t = jit(f, **opts)(x)
        np.testing.assert_allclose(p, [3 * np.exp(0.5)], rtol=1e-12)
        np.testing.assert_allclose(t, 2 * np.exp(0.5), rtol=1e-12)


# --- autodiff ---------------------------------------------------------------------------------


def test_grad_through_getitem_take_concatenate():
    x = np.random.default_rng(5).standard_normal((3, 4))
    idx = np.array([0, 2, 2])

    def f(x):
        return (
            (x[1:, ::2] * 2).sum()
            + gg.take(x, idx, axis=0).sum()
            + gg.concatenate([x, x * 3], axis=0).sum()
            + x[::-1, None, -1].sum() * 5
        )

    want = np.full_like(x, 4.0)
    want[1:, ::2] += 2
    want[0] += 1
    want[2] += 2
    want[:, -1] += 5
    np.testing.assert_allclose(gg.grad(f)(x), want)
    np.testing.assert_allclose(jit(gg.grad(f))(x), want)


def test_grad_of_max_with_ties_splits_evenly():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    want_rows = np.array([[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(gg.grad(lambda x: x.max(axis=1).sum())(x), want_rows)
    np.testing.assert_allclose(jit(gg.grad(lambda x: x.max(axis=1).sum()))(x), want_rows)
    want_all = np.array([[0, 0.5, 0.5], [0, 0, 0]])
    np.testing.assert_allclose(gg.grad(lambda x: gg.max(x))(x), want_all)
    want_max = np.array([[0, 1, 1], [0.5, 0.5, 0.5]])  # maximum(x, 2): ties split in half
    np.testing.assert_allclose(gg.grad(lambda x: gg.maximum(x, 2.0).sum())(x), want_max)


def test_grad_through_where_with_broadcasting():
    c = np.array([True, False, True, False])
    a = np.random.default_rng(6).standard_normal((3, 4))
    b = np.random.default_rng(7).standard_normal(4)
    g = gg.grad(lambda a, b: (gg.where(c, a, b) * 2).sum(), argnums=(0, 1))
    for ga, gb in (g(a, b), jit(g)(a, b)):
        np.testing.assert_allclose(ga, 2.0 * np.broadcast_to(c, (3, 4)))
        np.testing.assert_allclose(gb, 6.0 * ~c)
    gs = gg.grad(lambda s, a: gg.where(a > 0.0, s, a).sum())(2.0, a)
    assert gs == (a > 0).sum()


def test_value_and_grad_with_aux_pytree_eager_and_jitted():
    def loss(p, x):
        y = p["w"] * x + p["b"]
        return (y**2).sum(), {"y": y, "stats": [y.mean(), None, 1.5]}

    params = {"w": np.full(3, 2.0), "b": np.float64(0.5)}
    x = np.arange(3.0)
    vg = gg.value_and_grad(loss, has_aux=True)
    y = 2.0 * x + 0.5
    for (v, aux), g in (vg(params, x), jit(vg)(params, x)):
        np.testing.assert_allclose(v, (y**2).sum())
        np.testing.assert_allclose(aux["y"], y)
        assert aux["stats"][1] is None and aux["stats"][2] == 1.5
        np.testing.assert_allclose(aux["stats"][0], y.mean())
        np.testing.assert_allclose(g["w"], 2 * y * x)
        np.testing.assert_allclose(g["b"], (2 * y).sum())
        assert np.shape(g["b"]) == ()


# --- calling conventions ----------------------------------------------------------------------


def test_keyword_arguments_bind_like_python():
    x = np.random.default_rng(8).standard_normal((3, 4)).astype(np.float32)
    f = jit(lambda x, scale=1.0: x * scale)
    np.testing.assert_allclose(f(x, scale=2.0), 2 * x)
    np.testing.assert_allclose(f(x, 3.0), 3 * x)
    np.testing.assert_allclose(f(x=x, scale=4.0), 4 * x)
    np.testing.assert_allclose(f(x), x)  # the default is a Python constant of the trace
    assert f.cache_size == 2  # scale by position or keyword is one signature
    with pytest.raises(TypeError, match="bogus"):
        f(x, bogus=1)


def test_static_argnums_and_static_argnames_by_position_or_keyword():
    x = np.random.default_rng(9).standard_normal((3, 4)).astype(np.float32)

    def g(x, axis, *, eps=1e-3, mode="sum"):
        return (x.sum(axis=axis) if mode == "sum" else x.max(axis=axis)) + eps

    h = gg.jit(g, static_argnums=1, static_argnames="mode", backend="numpy")
    np.testing.assert_allclose(h(x, axis=0, eps=0.5), x.sum(0) + 0.5, rtol=1e-6)
    np.testing.assert_allclose(h(x, 1, mode="max"), x.max(1) + 1e-3, rtol=1e-6)
    np.testing.assert_allclose(h(x, 1, mode="max", eps=2.0), x.max(1) + 2, rtol=1e-6)
    assert h.cache_size == 3  # axis 0/sum/eps given, axis 1/max, and the same with eps given
    k = gg.jit(g, static_argnames=("axis", "mode"), backend="numpy")
    k(x, 0)
    k(x, axis=0)
    k(x, axis=1)
    assert k.cache_size == 2
    with pytest.raises(gg.GpuGraphError, match="static argument axis must be hashable"):
        k(x, axis={0})
    with pytest.raises(gg.GpuGraphError, match="'mdoe'"):
        gg.jit(g, static_argnames="mdoe")  # a typo would silently trace the value instead


def test_static_values_that_compare_equal_but_differ_in_type_are_different_signatures():
    a = np.array([1, 2], np.int32)
    f = jit(lambda x, n: x * n, static_argnums=1)
    assert f(a, 1).dtype == np.int32
    out = f(a, 1.0)  # used to hit the entry traced for 1 (1 == 1.0) and return int32
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0]
    g = jit(lambda x, flag: x * 2 if flag is True else x * 3, static_argnums=1)
    assert g(a, 1).tolist() == [3, 6] and g(a, True).tolist() == [2, 4]
    z = jit(lambda x, c: x * c, static_argnums=1)
    assert not np.signbit(z(np.ones(1), 0.0)[0]) and np.signbit(z(np.ones(1), -0.0)[0])
    h = jit(lambda x, axes: x.sum(axis=axes) if isinstance(axes, tuple) else x, static_argnums=1)
    assert h(a, (0,)).shape == () and h(a, [0]).shape == (2,)


def test_keyword_only_array_argument_is_traced_and_named_in_errors():
    x = np.ones((3, 4), np.float32)
    c = jit(lambda x, *, w: x @ w)
    np.testing.assert_allclose(c(x, w=np.ones((4, 2), np.float32)), np.full((3, 2), 4.0))
    compiled = c.lower(x, w=gg.ShapeDtype((4, 2)))
    np.testing.assert_allclose(compiled(x, w=np.ones((4, 2), np.float32)), np.full((3, 2), 4.0))
    with pytest.raises(gg.ShapeError, match="argument w: expected shape"):
        compiled(x, w=np.ones((4, 3), np.float32))


def test_retrace_on_static_values_not_on_weak_scalar_values():
    x = np.ones((3, 4), np.float32)
    f = jit(lambda x, n: x.sum(axis=n), static_argnums=1)
    assert f(x, 0).shape == (4,) and f(x, 1).shape == (3,) and f(x, 1).shape == (3,)
    assert f.cache_size == 2
    h = jit(lambda x, s: x * s)
    h(x, 2.0)
    np.testing.assert_allclose(h(x, 3.0), 3 * x)
    assert h.cache_size == 1
    h(x, 3)  # an int scalar is a different (weak int) signature
    assert h.cache_size == 2


class FakeCupyArray:
    """Stands in for cupy.ndarray (CuPy imports here, but there is no GPU to make one on)."""

    shape, dtype = (3,), np.dtype("float32")

    def __array__(self, *a, **k):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")


def test_cupy_array_passed_to_a_numpy_compiled_function_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(ops_core, "_CUPY_ARRAY", (FakeCupyArray,))
    msg = user_error(jit(lambda x: x * 2), FakeCupyArray())
    assert "argument x" in msg and "CuPy" in msg and "backend" in msg


# --- error messages name the user's line ------------------------------------------------------

X = np.ones((3, 4), np.float32)
LOC_CASES = {
    "method_sum_axis": lambda x: x.sum(axis=5),
    "method_mean_axis": lambda x: x.mean(axis=5),
    "method_max_repeated_axis": lambda x: x.max(axis=(0, 0)),
    "method_argmax_axis": lambda x: x.argmax(axis=5),
    "getitem_out_of_range": lambda x: x[5],
    "getitem_too_many": lambda x: x[0, 0, 0],
    "method_squeeze": lambda x: x.squeeze(0),
    "method_astype_complex": lambda x: x.astype(np.complex64),
    "matmul_operator": lambda x: x @ x,
    "add_operator": lambda x: x + x.T,
    "softmax_axis": lambda x: gg.softmax(x, axis=3),
    "layer_norm_axis": lambda x: gg.layer_norm(x, axis=3),
    "module_sum_axis": lambda x: gg.sum(x, axis=5),
    "zeros_negative": lambda x: gg.zeros((-1,)) + x.sum(),
    "arange_zero_step": lambda x: gg.arange(0, 5, 0) + x.sum(),
    "lshift_operator": lambda x: x << 2,
    "floordiv_operator_dtype": lambda x: (x > 0) // (x > 0),
}


@pytest.mark.parametrize("case", sorted(LOC_CASES))
def test_errors_from_methods_operators_and_composites_name_the_user_line(case):
    msg = user_error(jit(LOC_CASES[case]), X)
    assert HERE in msg, msg


@pytest.mark.parametrize("case", ["module_sum_axis", "zeros_negative", "arange_zero_step"])
def test_eager_errors_name_the_user_line(case):
    assert HERE in user_error(LOC_CASES[case], X)


def test_unsupported_operators_name_the_op():
    msg = user_error(jit(lambda x: x << 2), X, exc=gg.UnsupportedError)
    assert "left_shift" in msg and "<<" in msg


SHAPE_PY_CASES = {
    "take_axis": lambda x: gg.take(x, np.array([0]), axis=4),
    "swapaxes_axis": lambda x: gg.swapaxes(x, 0, 3),
    "expand_dims_axis": lambda x: gg.expand_dims(x, 7),
    "stack_shapes": lambda x: gg.stack([x, x.T]),
    "astype_complex": lambda x: gg.astype(x, np.complex64),
}


@pytest.mark.parametrize("case", sorted(SHAPE_PY_CASES))
def test_module_level_shape_op_errors_name_the_user_line(case):
    msg = user_error(jit(SHAPE_PY_CASES[case]), X)
    assert HERE in msg, msg


def test_grad_and_value_and_grad_pass_keyword_arguments_through():
    x = np.arange(4.0)

    def loss(x, scale=1.0, *, shift=0.0):
        return ((x * scale + shift) ** 2).sum()

    want = 2 * (x * 2.0 + 1.0) * 2.0
    np.testing.assert_allclose(gg.grad(loss)(x, scale=2.0, shift=1.0), want)
    np.testing.assert_allclose(jit(gg.grad(loss))(x, scale=2.0, shift=1.0), want)
    v, g = jit(gg.value_and_grad(loss))(x, 2.0, shift=1.0)
    np.testing.assert_allclose(v, ((x * 2 + 1) ** 2).sum())
    np.testing.assert_allclose(g, want)


def test_missing_ndarray_methods_name_the_method_and_line_and_hasattr_is_false():
    seen = {}

    def f(x):
        seen["hasattr"] = (hasattr(x, "sort"), hasattr(x, "sum"))
        return x.var()

    msg = user_error(jit(f), X, exc=gg.UnsupportedError)
    assert "'var'" in msg and "gg.var" in msg and HERE in msg
    assert seen["hasattr"] == (False, True)


def test_take_with_out_of_range_concrete_indices_is_a_trace_time_error():
    msg = user_error(jit(lambda x: gg.take(x, np.array([0, 5]), axis=0)), X)
    assert "take" in msg and HERE in msg


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_logsumexp_of_infinite_rows_is_infinite_not_nan():
    a = np.array(
        [[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 1.0], [np.inf, 0.0, 1.0], [1e3, 1e3, -1e3]],
        np.float32,
    )
    with np.errstate(all="ignore"):  # the reference: log(sum(exp)) in float64, no shift
        want = np.log(np.exp(a.astype(np.float64) - 1e3).sum(axis=-1)) + 1e3
    want[:3] = np.log(np.exp(a[:3].astype(np.float64)).sum(axis=-1))
    for got in (gg.logsumexp(a), jit(lambda x: gg.logsumexp(x))(a)):
        np.testing.assert_allclose(got, want, rtol=1e-6)  # was NaN for rows 0 and 2
    g = jit(gg.grad(lambda x: gg.logsumexp(x).sum()))(a[1:2])  # the gradient is softmax
    np.testing.assert_allclose(g, [[1 / (1 + np.e), 0.0, np.e / (1 + np.e)]], rtol=1e-6)


@pytest.mark.parametrize(
    "name, fn",
    [
        ("sum", lambda x: np.sum(x)),  # was "sum() got an unexpected keyword argument 'out'"
        ("reshape", lambda x: np.reshape(x, (12,))),
        ("concatenate", lambda x: np.concatenate([x, x])),
        ("mean", lambda x: np.mean(x, axis=0)),
    ],
)
def test_numpy_functions_on_traced_arrays_name_the_function_and_the_gg_op(name, fn):
    msg = user_error(jit(fn), X, exc=gg.TraceError)
    assert f"np.{name}" in msg and f"gg.{name}" in msg and HERE in msg


def test_numpy_shape_queries_still_work_on_traced_arrays():
    f = jit(lambda x: x * (np.shape(x)[0] + np.ndim(x) + np.size(x)))
    np.testing.assert_array_equal(f(X), X * (3 + 2 + 12))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, n: x.reshape(n, -1),
        lambda x, n: x * float(n),
        lambda x, n: [x for _ in range(n)][0],
    ],
)
def test_traced_number_used_as_a_python_number_says_to_make_it_static(fn):
    msg = user_error(jit(fn), np.ones(4), 2, exc=gg.TraceError)
    assert "static_argnums" in msg and HERE in msg and "if`/`while" not in msg
    assert jit(fn, static_argnums=1)(np.ones(4), 2).shape[0] in (2, 4)


def test_eager_reduction_over_no_axes_returns_a_new_array():
    x = np.arange(3.0)
    for fn in (gg.max, gg.min, gg.sum):
        y = fn(x, axis=())
        np.testing.assert_array_equal(y, x)
        assert not np.shares_memory(y, x)  # was x itself for max/min: y += 1 changed x
