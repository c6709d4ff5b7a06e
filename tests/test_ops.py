"""Every op against NumPy, eagerly and under jit, float32 and float64, with hypothesis-drawn
broadcasting shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpugraph as gg
from gpugraph.ops import REGISTRY
from gpugraph.ops.registry import FAMILY_RULES

RNG = np.random.default_rng(0)


def _erf(x):
    return np.vectorize(math.erf)(x).astype(x.dtype)


def _gelu_tanh(x):
    return (0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))).astype(x.dtype)


# name -> (gg function, NumPy reference, domain for inputs)
UNARY = {
    "negative": (gg.negative, np.negative, "any"),
    "abs": (gg.abs, np.abs, "any"),
    "exp": (gg.exp, np.exp, "any"),
    "log": (gg.log, np.log, "pos"),
    "sqrt": (gg.sqrt, np.sqrt, "pos"),
    "rsqrt": (gg.rsqrt, lambda x: 1 / np.sqrt(x), "pos"),
    "tanh": (gg.tanh, np.tanh, "any"),
    "sigmoid": (gg.sigmoid, lambda x: 1 / (1 + np.exp(-x)), "any"),
    "relu": (gg.relu, lambda x: np.maximum(x, 0), "any"),
    "gelu_tanh": (lambda x: gg.gelu(x, "tanh"), _gelu_tanh, "any"),
    "gelu_exact": (
        lambda x: gg.gelu(x, "none"),
        lambda x: (0.5 * x * (1 + _erf(x / math.sqrt(2)))).astype(x.dtype),
        "any",
    ),
    "sin": (gg.sin, np.sin, "any"),
    "cos": (gg.cos, np.cos, "any"),
    "erf": (gg.erf, _erf, "any"),
    "sign": (gg.sign, np.sign, "any"),
    "reciprocal": (gg.reciprocal, lambda x: 1 / x, "pos"),
    "logical_not": (lambda x: gg.logical_not(x > 0), lambda x: np.logical_not(x > 0), "any"),
    "stop_gradient": (gg.stop_gradient, lambda x: x, "any"),
}
BINARY = {
    "add": (gg.add, np.add, "any"),
    "subtract": (gg.subtract, np.subtract, "any"),
    "multiply": (gg.multiply, np.multiply, "any"),
    "divide": (gg.divide, np.divide, "nonzero"),
    "power": (gg.power, np.power, "pos"),
    "maximum": (gg.maximum, np.maximum, "any"),
    "minimum": (gg.minimum, np.minimum, "any"),
    "equal": (gg.equal, np.equal, "small_int"),
    "not_equal": (gg.not_equal, np.not_equal, "small_int"),
    "less": (gg.less, np.less, "any"),
    "less_equal": (gg.less_equal, np.less_equal, "small_int"),
    "greater": (gg.greater, np.greater, "any"),
    "greater_equal": (gg.greater_equal, np.greater_equal, "small_int"),
    "logical_and": (
        lambda a, b: gg.logical_and(a > 0, b > 0),
        lambda a, b: np.logical_and(a > 0, b > 0),
        "any",
    ),
    "logical_or": (
        lambda a, b: gg.logical_or(a > 0, b > 0),
        lambda a, b: np.logical_or(a > 0, b > 0),
        "any",
    ),
}


def sample(shape, dtype, domain, rng=RNG):
    x = rng.standard_normal(shape)
    if domain == "pos":
        x = np.abs(x) + 0.5
    elif domain == "nonzero":
        x = np.where(np.abs(x) < 0.2, 0.7, x)
    elif domain == "small_int":
        x = rng.integers(-2, 3, shape).astype(np.float64)
    return np.asarray(x).astype(dtype)


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def check(fn, ref, args, dtype):
    expected = ref(*args)
    eager = fn(*args)
    jitted = gg.jit(fn)(*args)  # the session's backend, or cpu under the jit_backend fixture
    for got in (eager, jitted):
        got = np.asarray(got)
        assert got.shape == np.shape(expected)
        assert got.dtype == np.asarray(expected).dtype, (got.dtype, np.asarray(expected).dtype)
        np.testing.assert_allclose(got, expected, **tol(dtype))


shapes2 = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, dtype):
    fn, ref, domain = UNARY[name]
    check(fn, ref, [sample((3, 4), dtype, domain)], dtype)


def edge_sample(dtype):
    """Signed zeros, +-1, the float32 exp overflow edge, huge values, subnormals, +-inf, NaN."""
    info = np.finfo(dtype)
    values = [0.0, -0.0, 1.0, -1.0, 88.8, -88.8, 1e30, -1e30, float(info.smallest_subnormal)]
    return np.array(values + [-float(info.tiny), np.inf, -np.inf, np.nan], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_on_edge_values(name, dtype):
    fn, ref, _ = UNARY[name]
    with np.errstate(all="ignore"):
        check(fn, ref, [edge_sample(dtype)], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_on_every_pair_of_edge_values(name, dtype):
    fn, ref, _ = BINARY[name]
    e = edge_sample(dtype)
    with np.errstate(all="ignore"):
        check(fn, ref, [e[:, None], e[None, :]], dtype)


def _slices_strategy(n):
    bound = st.one_of(st.none(), st.integers(-2 * n - 2, 2 * n + 2))
    step = st.one_of(st.none(), st.sampled_from([-3, -2, -1, 1, 2, 3]))
    return st.builds(slice, bound, bound, step)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
def test_random_slices_match_numpy_eager_jit_and_grad(data, shape):
    """Slices with any bounds (starts and stops before the beginning or past the end) and
    negative steps, as NumPy reads them; the gradient is 1 on the selected elements."""
    idx = tuple(data.draw(_slices_strategy(n)) for n in shape)
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    want = x[idx]
    for got in (gg.getitem(x, idx), gg.jit(lambda a: a[idx])(x)):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    mask = np.zeros_like(x)
    mask[idx] = 1.0
    np.testing.assert_array_equal(gg.grad(lambda a: gg.sum(a[idx]))(x), mask)
    np.testing.assert_array_equal(gg.jit(gg.grad(lambda a: gg.sum(a[idx])))(x), mask)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(BINARY))
@settings(max_examples=8, deadline=None)
@given(shapes=shapes2)
def test_binary_broadcasting(name, dtype, shapes):
    fn, ref, domain = BINARY[name]
    a, b = (sample(s, dtype, domain) for s in shapes.input_shapes)
    check(fn, ref, [a, b], dtype)


@pytest.mark.usefixtures("jit_backend")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=10, deadline=None)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3))
def test_where_broadcasting(dtype, shapes):
    c, a, b = (sample(s, dtype, "any") for s in shapes.input_shapes)
    check(
        lambda c, a, b: gg.where(c > 0, a, b),
        lambda c, a, b: np.where(c > 0, a, b),
        [c, a, b],
        dtype,
    )


@pytest.mark.usefixtures("jit_backend")
@pytest.mark.parametrize("src", ["float32", "float64", "int32", "int64", "bool"])
@pytest.mark.parametrize("dst", ["float32", "float64", "int32", "int64", "bool"])
def test_astype(src, dst):
    x = (RNG.standard_normal((5,)) * 4).astype(src)
    check(lambda x: gg.astype(x, dst), lambda x: x.astype(dst), [x], np.float64)


REDUCTIONS = {
    "sum": (gg.sum, np.sum),
    "mean": (gg.mean, np.mean),
    "max": (gg.max, np.max),
    "min": (gg.min, np.min),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("axis", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(name, dtype, axis, keepdims):
    fn, ref = REDUCTIONS[name]
    x = sample((3, 4, 2), dtype, "any")
    check(
        lambda x: fn(x, axis=axis, keepdims=keepdims),
        lambda x: ref(x, axis=axis, keepdims=keepdims),
        [x],
        dtype,
    )


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_argmax(axis, keepdims):
    x = sample((3, 5), np.float32, "any")
    check(
        lambda x: gg.argmax(x, axis=axis, keepdims=keepdims),
        lambda x: np.argmax(x, axis=axis, keepdims=keepdims),
        [x],
        np.float64,
    )


def test_sum_of_ints_promotes_like_numpy():
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    check(lambda x: gg.sum(x, axis=1), lambda x: np.sum(x, axis=1), [x], np.float64)
    check(lambda x: gg.mean(x), lambda x: np.mean(x), [x], np.float64)


MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((2, 3, 4), (4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((1, 3, 4), (2, 4, 5)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul(sa, sb, dtype):
    a, b = sample(sa, dtype, "any"), sample(sb, dtype, "any")
    check(gg.matmul, np.matmul, [a, b], dtype)
    check(
        lambda a, b: a @ b if not isinstance(a, np.ndarray) else gg.matmul(a, b),
        np.matmul,
        [a, b],
        dtype,
    )


SHAPE_CASES = {
    "reshape": (lambda x: gg.reshape(x, (4, -1)), lambda x: x.reshape(4, -1)),
    "transpose": (lambda x: gg.transpose(x, (2, 0, 1)), lambda x: x.transpose(2, 0, 1)),
    "transpose_default": (gg.transpose, np.transpose),
    "broadcast_to": (
        lambda x: gg.broadcast_to(x[:, :1], (3, 2, 4, 2)),
        lambda x: np.broadcast_to(x[:, :1], (3, 2, 4, 2)),
    ),
    "expand_dims": (lambda x: gg.expand_dims(x, (0, -1)), lambda x: np.expand_dims(x, (0, -1))),
    "squeeze": (lambda x: gg.squeeze(x[:, :1]), lambda x: np.squeeze(x[:, :1])),
    "concatenate": (
        lambda x: gg.concatenate([x, x * 2], axis=1),
        lambda x: np.concatenate([x, x * 2], axis=1),
    ),
    "stack": (lambda x: gg.stack([x, x + 1, x], axis=-1), lambda x: np.stack([x, x + 1, x], -1)),
    "index_int": (lambda x: x[1], lambda x: x[1]),
    "index_slices": (lambda x: x[::-1, 1:3, ::2], lambda x: x[::-1, 1:3, ::2]),
    "index_none_ellipsis": (lambda x: x[None, ..., -1], lambda x: x[None, ..., -1]),
    "index_mixed": (lambda x: x[-1, None, 2:0:-1], lambda x: x[-1, None, 2:0:-1]),
    "take": (
        lambda x: gg.take(x, np.array([2, 0, 2]), axis=1),
        lambda x: np.take(x, np.array([2, 0, 2]), axis=1),
    ),
    "take_2d_idx": (
        lambda x: gg.take(x, np.array([[1, 0], [0, 1]]), axis=0),
        lambda x: np.take(x, np.array([[1, 0], [0, 1]]), axis=0),
    ),
}


def _index_ref(fn):
    return fn


@pytest.mark.usefixtures("jit_backend")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SHAPE_CASES))
def test_shape_ops(name, dtype):
    fn, ref = SHAPE_CASES[name]
    x = sample((2, 3, 2), dtype, "any")
    if name.startswith("index"):
        # on plain arrays Python indexing is NumPy's own, so compare under jit and via getitem
        expected = ref(x)
        np.testing.assert_array_equal(gg.jit(fn)(x), expected)
        np.testing.assert_array_equal(gg.getitem(x, _tuple_of(name)), expected)
        return
    check(fn, ref, [x], dtype)


def _tuple_of(name):
    return {
        "index_int": 1,
        "index_slices": (slice(None, None, -1), slice(1, 3), slice(None, None, 2)),
        "index_none_ellipsis": (None, Ellipsis, -1),
        "index_mixed": (-1, None, slice(2, 0, -1)),
    }[name]


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m).squeeze(axis)


def _layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


@pytest.mark.usefixtures("jit_backend")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_composites(dtype):
    x = sample((3, 5), dtype, "any") * 3
    w, b = sample((5,), dtype, "any"), sample((5,), dtype, "any")
    check(gg.softmax, _softmax, [x], dtype)
    check(lambda x: gg.softmax(x, axis=0), lambda x: _softmax(x, 0), [x], dtype)
    check(gg.log_softmax, lambda x: np.log(_softmax(x)), [x], dtype)
    check(gg.logsumexp, _logsumexp, [x], dtype)
    check(gg.layer_norm, _layer_norm, [x, w, b], dtype)


def test_logsumexp_is_stable():
    x = np.array([1000.0, 1000.0], dtype=np.float32)
    np.testing.assert_allclose(gg.logsumexp(x), 1000 + np.log(2), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "bool"])
def test_creation(dtype):
    def fn(x):
        return (
            gg.zeros((2, 3), dtype),
            gg.ones(4, dtype),
            gg.full((2,), 1, dtype),
            gg.arange(5, dtype=dtype if dtype != "bool" else "int64") + x,
        )

    x = np.zeros((), np.int64)
    expected = (
        np.zeros((2, 3), dtype),
        np.ones(4, dtype),
        np.full((2,), 1, dtype),
        np.arange(5, dtype=dtype if dtype != "bool" else "int64") + x,
    )
    for got in (fn(x), gg.jit(fn)(x)):
        for g, e in zip(got, expected):
            assert np.asarray(g).dtype == e.dtype
            np.testing.assert_array_equal(g, e)


def test_arange_float_default_is_float32():
    assert gg.arange(0.0, 1.0, 0.25).dtype == np.float32
    np.testing.assert_allclose(gg.arange(0.0, 1.0, 0.25), [0, 0.25, 0.5, 0.75])


def test_every_op_has_every_rule_its_family_needs():
    for name, opdef in REGISTRY.items():
        for rule in FAMILY_RULES[opdef.family]:
            assert getattr(opdef, rule) is not None, f"op {name} ({opdef.family}) lacks {rule}"
        if opdef.family in ("reduce", "linalg", "shape", "index") and opdef.differentiable:
            assert opdef.vjp is not None and opdef.jvp is not None, name


def test_every_public_op_is_tested_here():
    tested = set(UNARY) | set(BINARY) | set(REDUCTIONS) | {"argmax", "astype", "matmul", "where"}
    tested |= {
        "reshape",
        "transpose",
        "broadcast_to",
        "expand_dims",
        "squeeze",
        "concatenate",
        "stack",
        "take",
        "getitem",
        "softmax",
        "log_softmax",
        "logsumexp",
        "layer_norm",
        "gelu",
        "zeros",
        "ones",
        "full",
        "arange",
    }
    from tests import test_ops_elementwise_more as more_ew
    from tests import test_ops_more

    tested |= test_ops_more.COVERED  # conv, pooling, reductions, shape (tests/test_ops_more.py)
    from tests import test_ops_select, test_random

    tested |= test_ops_select.COVERED | test_random.COVERED  # selection, the RNG
    tested |= set(more_ew.UNARY) | set(more_ew.BINARY) | set(more_ew.INT_BINARY)
    tested |= set(more_ew.BOOL_BINARY)
    # region ops (family "control") are compared with NumPy loops in test_control_flow.py
    primitives = {n for n, o in REGISTRY.items() if o.family not in ("internal", "control")}
    internal_only = {"slice", "slice_scatter", "take_grad"}  # reached via getitem/take and grads
    missing = primitives - tested - internal_only
    assert not missing, f"ops without a NumPy comparison: {sorted(missing)}"


def test_slice_scatter_writes_into_a_dirty_out_buffer():
    """The executor hands out= an arena view that still holds earlier bytes: the impl must
    write every element (zeros outside the slice), and the compiled grad must match eager."""
    impl = REGISTRY["slice_scatter"].impl
    g = RNG.standard_normal((3, 5)).astype(np.float32)
    attrs = dict(shape=(6, 5), starts=(1, 4), stops=(6, -1), steps=(2, -1))
    out = np.full((6, 5), np.nan, np.float32)
    assert REGISTRY["slice_scatter"].out_kw
    assert impl(np, g, out=out, **attrs) is out
    np.testing.assert_array_equal(out, impl(np, g, **attrs))

    def f(x, w):
        return gg.sum(gg.tanh(gg.exp(x)[1::2, ::-1] * w))

    compiled = gg.jit(gg.grad(f))
    for _ in range(2):  # the second call finds the arena holding the first call's bytes
        x = RNG.standard_normal((6, 5)).astype(np.float32)
        # float32 tolerance of the op tests: on backend="cpu" tanh and exp come from libmvec
        np.testing.assert_allclose(compiled(x, g), gg.grad(f)(x, g), **tol(np.float32))
