"""Autodiff: finite-difference checks (first and second order) for every differentiable op,
jvp/vjp consistency, composition with jit and with itself, pytrees, and the error messages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpugraph as gg
from gpugraph.ir import TensorType
from gpugraph.ops import REGISTRY, OpDef, bind, register
from gpugraph.ops.registry import FAMILY_RULES
from gpugraph.pytree import flatten
from gpugraph.trace import trace_flat
from tests.autodiff_cases_more import CASES as MORE_CASES

F64 = np.float64
EPS = 1e-6
FD_SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


# ---- finite differences -------------------------------------------------------------------
def _vdot(a: Any, b: Any) -> float:
    return float(np.sum(np.asarray(a, F64) * np.asarray(b, F64)))


def _shift(xs: list, vs: list, h: float) -> list:
    return [x + h * v for x, v in zip(xs, vs)]


def fd_directional(f: Callable, xs: list, vs: list, eps: float = EPS) -> np.ndarray:
    """(f(x + eps v) - f(x - eps v)) / 2 eps, the derivative of f along v."""
    hi = np.asarray(f(*_shift(xs, vs, eps)), F64)
    lo = np.asarray(f(*_shift(xs, vs, -eps)), F64)
    return (hi - lo) / (2 * eps)


def _close(got: float, want: float, tol: float) -> None:
    assert abs(got - want) <= tol * (1 + abs(want)), (got, want)


# ---- one case per differentiable op -------------------------------------------------------
@dataclass
class Case:
    fn: Callable  # of float64 arrays only; integer and bool operands are closed over
    xs: list
    tol: float = 1e-6
    eps: float = EPS  # the difference step; larger where the function rounds
    tol2: float = 1e-5  # second order
    eps2: float = 1e-5


def _values(draw, shape, domain: str, salt: int = 0) -> np.ndarray:
    # the salt keeps two operands apart when hypothesis draws the same seed for both (ties
    # would put maximum/minimum on their kink)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng((seed, salt))
    x = rng.uniform(-2, 2, shape)
    if domain == "pos":
        x = rng.uniform(0.5, 2, shape)
    elif domain == "away0":  # keep away from kinks (abs, relu, sign) and poles
        x = rng.choice([-1, 1], shape) * rng.uniform(0.3, 2, shape)
    return np.asarray(x, F64)


SHAPE = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
SHAPE2D = hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=4)
UNARY = {
    "negative": (gg.negative, "any"),
    "sign": (gg.sign, "away0"),
    "abs": (gg.abs, "away0"),
    "exp": (gg.exp, "any"),
    "log": (gg.log, "pos"),
    "sqrt": (gg.sqrt, "pos"),
    "rsqrt": (gg.rsqrt, "pos"),
    "reciprocal": (gg.reciprocal, "away0"),
    "tanh": (gg.tanh, "any"),
    "sin": (gg.sin, "any"),
    "cos": (gg.cos, "any"),
    "sigmoid": (gg.sigmoid, "any"),
    "relu": (gg.relu, "away0"),
    "erf": (gg.erf, "any"),
}
BINARY = {
    "add": (gg.add, "any", "any"),
    "subtract": (gg.subtract, "any", "any"),
    "multiply": (gg.multiply, "any", "any"),
    "divide": (gg.divide, "any", "away0"),
    "power": (gg.power, "pos", "any"),
    "maximum": (gg.maximum, "any", "any"),
    "minimum": (gg.minimum, "any", "any"),
}


def _unary(name):
    fn, dom = UNARY[name]
    return lambda draw: Case(fn, [_values(draw, draw(SHAPE), dom)])


def _binary(name):
    fn, da, db = BINARY[name]

    def make(draw):
        sa, sb = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))[0]
        return Case(fn, [_values(draw, sa, da), _values(draw, sb, db, salt=1)])

    return make


def _where(draw):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3))[0]
    cond = _values(draw, shapes[0], "any") > 0
    return Case(
        lambda a, b: gg.where(cond, a, b),
        [_values(draw, shapes[1], "any", 1), _values(draw, shapes[2], "any", 2)],
    )


def _astype(draw):
    # through float32 and back: the rounding limits the precision of the difference quotient
    return Case(
        lambda x: gg.astype(gg.astype(x, gg.float32), gg.float64) * 3.0,
        [_values(draw, draw(SHAPE), "any")],
        tol=1e-5,
        eps=0.1,
        tol2=2e-3,
        eps2=1e-3,
    )


def _reduce(name):
    fn = {"sum": gg.sum, "max": gg.max, "min": gg.min}[name]

    def make(draw):
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
        axes = draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1))
        keep = draw(st.booleans())
        return Case(lambda x: fn(x, axis=tuple(axes), keepdims=keep), [_values(draw, shape, "any")])

    return make


def _matmul(draw):
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    ba, bb = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))[0]
    return Case(
        gg.matmul, [_values(draw, ba + (m, k), "any"), _values(draw, bb + (k, n), "any", 1)]
    )


def _reshape(draw):
    shape = draw(SHAPE)
    return Case(lambda x: gg.reshape(x, (1, 1, 1, -1)), [_values(draw, shape, "any")])


def _transpose(draw):
    return Case(gg.transpose, [_values(draw, draw(SHAPE2D), "any")])


def _broadcast_to(draw):
    shape = draw(SHAPE)
    target = (2,) + tuple(3 if s == 1 and draw(st.booleans()) else s for s in shape)
    return Case(lambda x: gg.broadcast_to(x, target), [_values(draw, shape, "any")])


def _concatenate(draw):
    shape = list(draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3)))
    axis = draw(st.integers(0, len(shape) - 1))
    other = list(shape)
    other[axis] = draw(st.integers(1, 3))
    return Case(
        lambda a, b: gg.concatenate([a, b], axis=axis),
        [_values(draw, shape, "any"), _values(draw, other, "any", 1)],
    )


def _slice(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=5))
    return Case(lambda x: x[1::2], [_values(draw, shape, "any")])


def _slice_scatter(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=5))
    sliced = (len(range(1, shape[0], 2)),) + shape[1:]
    attrs = dict(
        starts=(1,) + (0,) * (len(shape) - 1), stops=shape, steps=(2,) + (1,) * (len(shape) - 1)
    )
    return Case(
        lambda g: bind("slice_scatter", g, shape=shape, **attrs), [_values(draw, sliced, "any")]
    )


def _take(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    axis = draw(st.integers(0, len(shape) - 1))
    idx = np.asarray(draw(st.lists(st.integers(0, shape[axis] - 1), min_size=1, max_size=5)))
    return Case(lambda x: gg.take(x, idx, axis=axis), [_values(draw, shape, "any")])


def _take_grad(draw):
    n, rest = draw(st.integers(1, 4)), draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
    idx = np.asarray(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5)))
    return Case(
        lambda g: bind("take_grad", g, idx, axis=0, dim=n),
        [_values(draw, (len(idx),) + rest, "any")],
    )


CASES: dict[str, Callable] = {
    **{n: _unary(n) for n in UNARY},
    **{n: _binary(n) for n in BINARY},
    **{n: _reduce(n) for n in ("sum", "max", "min")},
    "where": _where,
    "astype": _astype,
    "matmul": _matmul,
    "reshape": _reshape,
    "transpose": _transpose,
    "broadcast_to": _broadcast_to,
    "concatenate": _concatenate,
    "slice": _slice,
    "slice_scatter": _slice_scatter,
    "take": _take,
    "take_grad": _take_grad,
}


def _more(make):
    def case(draw):
        fn, xs, options = make(draw, _values)
        return Case(fn, xs, **options)

    return case


CASES.update({n: _more(m) for n, m in MORE_CASES.items()})  # conv, pooling, the newer math


def _differentiable_ops() -> list[str]:
    return sorted(
        n
        for n, d in REGISTRY.items()
        if d.differentiable and "vjp" in FAMILY_RULES[d.family] and not n.startswith("test_")
    )


def test_every_differentiable_op_has_a_fd_case():
    missing = [n for n in _differentiable_ops() if n not in CASES]
    assert not missing, f"differentiable ops without a finite-difference case: {missing}"


def _ops_in(fn: Callable, xs: list) -> set[str]:
    leaves, tree = flatten(tuple(xs))
    graph, _, _ = trace_flat(fn, [TensorType(x.shape, x.dtype) for x in leaves], tree, None)
    return set(graph.op_counts())


def _random_like(rng, x) -> np.ndarray:
    return rng.standard_normal(np.shape(x))


@pytest.mark.parametrize("name", sorted(CASES))
@FD_SETTINGS
@given(data=st.data())
def test_first_derivative_matches_finite_differences(name, data):
    case = CASES[name](data.draw)
    assert name in _ops_in(case.fn, case.xs), f"the case for {name} does not use it"
    rng = np.random.default_rng(1)
    out = np.asarray(case.fn(*case.xs))
    u = _random_like(rng, out)
    vs = [_random_like(rng, x) for x in case.xs]
    want = _vdot(u, fd_directional(case.fn, case.xs, vs, case.eps))
    # reverse mode: <J^T u, v>
    _, vjp_fn = gg.vjp(case.fn, *case.xs)
    cts = vjp_fn(u)
    _close(sum(_vdot(c, v) for c, v in zip(cts, vs)), want, case.tol)
    # forward mode: <u, J v>
    _, t_out = gg.jvp(case.fn, tuple(case.xs), tuple(vs))
    _close(_vdot(u, t_out), want, case.tol)
    for c, x in zip(cts, case.xs):
        assert isinstance(c, np.ndarray) and c.shape == x.shape and c.dtype == x.dtype


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=4, deadline=None, derandomize=True)
@given(data=st.data())
def test_derivatives_under_jit_equal_eager(name, data):
    """Every rule's graph survives the optimizer, fusion and memory planning unchanged."""
    case = CASES[name](data.draw)
    rng = np.random.default_rng(5)
    u = _random_like(rng, np.asarray(case.fn(*case.xs)))
    vs = [_random_like(rng, x) for x in case.xs]

    def both(xs, u, vs):
        _, vjp_fn = gg.vjp(case.fn, *xs)
        return vjp_fn(u), gg.jvp(case.fn, tuple(xs), tuple(vs))[1]

    eager_ct, eager_t = both(case.xs, u, vs)
    jit_ct, jit_t = gg.jit(both)(case.xs, u, vs)
    for a, b in zip((*eager_ct, eager_t), (*jit_ct, jit_t)):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=10, deadline=None, derandomize=True)
@given(data=st.data())
def test_second_derivative_matches_finite_differences(name, data):
    case = CASES[name](data.draw)
    rng = np.random.default_rng(2)
    u = _random_like(rng, np.asarray(case.fn(*case.xs)))
    argnums = tuple(range(len(case.xs)))

    def h(*xs):  # a scalar function whose Hessian involves the op's second derivative
        y = case.fn(*xs)
        return gg.sum(y * y * u) + gg.sum(gg.sin(y))

    grad_h = gg.grad(h, argnums=argnums)
    vs = [_random_like(rng, x) for x in case.xs]
    ws = [_random_like(rng, x) for x in case.xs]
    fd = [
        fd_directional(lambda *xs, i=i: grad_h(*xs)[i], case.xs, vs, case.eps2)
        for i in range(len(case.xs))
    ]
    want = sum(_vdot(w, f) for w, f in zip(ws, fd))  # <w, H v>
    tol = case.tol2
    # forward over reverse: H v = jvp(grad h)
    _, hv = gg.jvp(grad_h, tuple(case.xs), tuple(vs))
    _close(sum(_vdot(w, x) for w, x in zip(ws, hv)), want, tol)
    # reverse over reverse: H w = grad <grad h, w>
    hw = gg.grad(lambda *xs: sum(gg.sum(g * w) for g, w in zip(grad_h(*xs), ws)), argnums=argnums)(
        *case.xs
    )
    _close(sum(_vdot(v, x) for v, x in zip(vs, hw)), want, tol)


# ---- composites and consistency -----------------------------------------------------------
COMPOSITES = {
    "softmax": lambda x: gg.softmax(x, axis=-1),
    "log_softmax": lambda x: gg.log_softmax(x, axis=0),
    "logsumexp": lambda x: gg.logsumexp(x, axis=-1),
    "layer_norm": lambda x: gg.layer_norm(x),
    "gelu_tanh": lambda x: gg.gelu(x),
    "gelu_exact": lambda x: gg.gelu(x, approximate="none"),
    "var": lambda x: gg.var(x, axis=0),
    "mean": lambda x: gg.mean(x, axis=1, keepdims=True),
    "mlp": lambda x: gg.tanh(x @ x.T) @ x,
}


@pytest.mark.parametrize("name", sorted(COMPOSITES))
@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=5),
    seed=st.integers(0, 2**32 - 1),
)
def test_jvp_vjp_consistency(name, shape, seed):
    """<u, J v> from jvp equals <J^T u, v> from vjp, and both match finite differences."""
    fn = COMPOSITES[name]
    rng = np.random.default_rng(seed)
    x, v = rng.standard_normal(shape), rng.standard_normal(shape)
    out, t_out = gg.jvp(fn, (x,), (v,))
    u = rng.standard_normal(np.shape(out))
    out2, vjp_fn = gg.vjp(fn, x)
    (ct,) = vjp_fn(u)
    np.testing.assert_allclose(out, out2)
    _close(_vdot(u, t_out), _vdot(ct, v), 1e-10)
    _close(_vdot(ct, v), _vdot(u, fd_directional(fn, [x], [v])), 1e-6)


# ---- composition and pytrees --------------------------------------------------------------
def _mlp_loss(params, x, y):
    h = gg.tanh(x @ params["w1"] + params["b1"])
    logits = h @ params["w2"] + params["b2"]
    return -gg.mean(gg.sum(gg.log_softmax(logits, axis=-1) * y, axis=-1))


def _mlp_problem(seed=0, dtype=F64):
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.standard_normal((5, 7)) * 0.5,
        "b1": np.zeros(7),
        "w2": rng.standard_normal((7, 3)) * 0.5,
        "b2": np.zeros(3),
    }
    x = rng.standard_normal((8, 5))
    y = np.eye(3)[rng.integers(0, 3, 8)]
    cast = lambda a: a.astype(dtype)  # noqa: E731
    return {k: cast(v) for k, v in params.items()}, cast(x), cast(y)


def test_grad_under_jit_equals_eager_and_pytree_structure():
    params, x, y = _mlp_problem()
    eager = gg.grad(_mlp_loss)(params, x, y)
    jitted = gg.jit(gg.grad(_mlp_loss))(params, x, y)
    assert set(eager) == set(params) == set(jitted)
    for k in params:
        assert isinstance(eager[k], np.ndarray) and eager[k].shape == params[k].shape
        np.testing.assert_allclose(jitted[k], eager[k], rtol=1e-12, atol=1e-14)
    # and against finite differences along a random direction
    rng = np.random.default_rng(3)
    v = {k: rng.standard_normal(p.shape) for k, p in params.items()}
    keys = sorted(params)
    loss_flat = lambda *ws: _mlp_loss(dict(zip(keys, ws)), x, y)  # noqa: E731
    want = float(fd_directional(loss_flat, [params[k] for k in keys], [v[k] for k in keys]))
    _close(sum(_vdot(eager[k], v[k]) for k in params), want, 1e-6)


def test_jitted_grad_graph_shows_backward_and_returns_only_gradients():
    params, x, y = _mlp_problem()
    compiled = gg.jit(gg.grad(_mlp_loss)).lower(params, x, y)
    ops = compiled.graph.op_counts()
    assert ops.get("matmul", 0) >= 5  # 2 forward + 3 backward (dx of layer 1 is not needed)
    assert "broadcast_to" in ops or "sum" in ops  # bias gradients undo broadcasting
    assert len(compiled.graph.outputs) == len(params)  # no forward intermediate escapes


def test_forward_values_the_backward_does_not_need_are_not_computed():
    # add/subtract/scale have constant partials: after DCE the gradient graph holds none of
    # the forward chain, so nothing of it is kept alive
    f = lambda x: gg.sum(((x + 1.0) * 3.0 - 2.0) * 0.5)  # noqa: E731
    graph = gg.jit(gg.grad(f)).lower(np.ones(5)).graph
    ops = [n.op for n in graph.nodes]
    assert "add" not in ops and "subtract" not in ops and "sum" not in ops, graph
    np.testing.assert_allclose(gg.jit(gg.grad(f))(np.ones(5)), 1.5 * np.ones(5))


def test_eval_graph_inlines_a_traced_graph_eagerly_and_under_jit():
    f = lambda x, y: gg.tanh(x) @ y  # noqa: E731
    x, y = np.ones((2, 3)), np.arange(6.0).reshape(3, 2)
    graph = gg.jit(f).lower(x, y).traced_graph
    (eager,) = gg.eval_graph(graph, [x, y])
    (jitted,) = gg.jit(lambda x, y: tuple(gg.eval_graph(graph, [x, y])))(x, y)
    np.testing.assert_allclose(eager, f(x, y))
    np.testing.assert_allclose(jitted, f(x, y))


def test_gradient_of_unused_input_is_not_computed():
    f = lambda a, b: gg.sum(gg.exp(a))  # noqa: E731
    compiled = gg.jit(gg.grad(f, argnums=(0, 1))).lower(np.ones(3), np.ones(4))
    ga, gb = compiled(np.ones(3), np.ones(4))
    np.testing.assert_allclose(ga, np.e * np.ones(3))
    np.testing.assert_array_equal(gb, np.zeros(4))


def test_value_and_grad_has_aux_and_argnums_tuple():
    params, x, y = _mlp_problem()

    def loss_aux(p, x, y):
        loss = _mlp_loss(p, x, y)
        return loss, {"loss_x2": loss * 2, "n": gg.sum(y)}

    (value, aux), (gp, gx) = gg.value_and_grad(loss_aux, argnums=(0, 1), has_aux=True)(params, x, y)
    np.testing.assert_allclose(value, _mlp_loss(params, x, y))
    np.testing.assert_allclose(aux["loss_x2"], 2 * value)
    assert gx.shape == x.shape and set(gp) == set(params)
    g_only, aux2 = gg.grad(loss_aux, has_aux=True)(params, x, y)
    np.testing.assert_allclose(g_only["w1"], gp["w1"])
    np.testing.assert_allclose(aux2["n"], 8.0)
    # vjp with aux
    out, vjp_fn, aux3 = gg.vjp(lambda x: (x * 2, gg.sum(x)), x, has_aux=True)
    np.testing.assert_allclose(vjp_fn(np.ones_like(x))[0], 2 * np.ones_like(x))
    np.testing.assert_allclose(aux3, x.sum())


def test_higher_order_and_forward_over_reverse():
    x = np.array([0.3, -1.2, 2.0])
    f = lambda x: gg.sum(x**3)  # noqa: E731
    np.testing.assert_allclose(gg.grad(lambda x: gg.sum(gg.grad(f)(x)))(x), 6 * x)
    third = gg.grad(lambda x: gg.sum(gg.grad(lambda x: gg.sum(gg.grad(f)(x)))(x)))(x)
    np.testing.assert_allclose(third, 6 * np.ones(3))
    _, hv = gg.jvp(gg.grad(f), (x,), (np.ones(3),))
    np.testing.assert_allclose(hv, 6 * x)
    # the same compositions compiled
    np.testing.assert_allclose(gg.jit(gg.grad(lambda x: gg.sum(gg.grad(f)(x))))(x), 6 * x)
    np.testing.assert_allclose(
        gg.jit(lambda x, v: gg.jvp(gg.grad(f), (x,), (v,))[1])(x, np.ones(3)), 6 * x
    )
    # a jitted function differentiates like a plain one (it is inlined into the trace)
    np.testing.assert_allclose(gg.grad(gg.jit(f))(x), 3 * x**2)


def test_closure_over_an_outer_traced_value():
    # d/dy of grad_x[(x*y)^2 / 2] = d/dy (x y^2) = 2 x y
    def inner_grad(x, y):
        return gg.grad(lambda x: gg.sum((x * y) ** 2) / 2)(x)

    x, y = np.array([1.5, -2.0]), np.array([0.5, 3.0])
    np.testing.assert_allclose(inner_grad(x, y), x * y * y)
    dy = gg.grad(lambda y: gg.sum(inner_grad(x, y)))(y)
    np.testing.assert_allclose(dy, 2 * x * y)
    np.testing.assert_allclose(gg.jit(gg.grad(lambda y: gg.sum(inner_grad(x, y))))(y), 2 * x * y)


def test_scalar_python_and_float32_inputs_keep_their_dtype():
    g = gg.grad(lambda x: x * x)(np.float32(3.0))
    assert isinstance(g, np.ndarray) and g.dtype == np.float32 and float(g) == 6.0
    g64 = gg.grad(lambda x: gg.sum(gg.exp(x)))(np.zeros(2, np.float32))
    assert g64.dtype == np.float32


def test_non_differentiable_ops_give_zero_gradients():
    x = np.array([0.5, 2.0, -1.0])

    def f(x):
        picked = gg.astype(gg.argmax(x), gg.float64)
        mask = gg.astype(x > 0, gg.float64)
        return gg.sum(gg.stop_gradient(x) * x) + picked + gg.sum(mask)

    np.testing.assert_allclose(gg.grad(f)(x), x)
    np.testing.assert_allclose(gg.grad(lambda x: gg.astype(gg.argmax(x), gg.float64))(x), 0 * x)


# ---- errors -------------------------------------------------------------------------------
def test_integer_argument_error_names_it():
    params = {"w": np.ones(3), "steps": np.arange(3)}
    with pytest.raises(gg.DTypeError, match=r"params\['steps'\]"):
        gg.grad(lambda params: gg.sum(params["w"]))(params)
    with pytest.raises(gg.DTypeError, match="labels"):
        gg.grad(lambda x, labels: gg.sum(x), argnums=1)(np.ones(2), np.arange(2))
    with pytest.raises(gg.DTypeError, match=r"args\[1\]"):
        gg.grad(lambda *a: gg.sum(a[0]), argnums=(0, 1))(np.ones(2), np.array([True]))
    # not differentiating it is fine
    gg.grad(lambda x, labels: gg.sum(x))(np.ones(2), np.arange(2))


def test_non_scalar_or_integer_output_error():
    with pytest.raises(gg.ShapeError, match="scalar"):
        gg.grad(lambda x: x * 2)(np.ones(3))
    with pytest.raises(gg.DTypeError, match="floating-point"):
        gg.grad(lambda x: gg.argmax(x))(np.ones(3))


def test_op_without_rule_is_named():
    name = "test_autodiff_no_rule_op"
    register(
        OpDef(name, "linalg", lambda types: [types[0]], lambda xp, a: a * 1, vjp=None, jvp=None)
    )
    try:  # the throwaway op must not stay in the table the op-table tests inspect
        f = lambda x: gg.sum(bind(name, x))  # noqa: E731
        np.testing.assert_allclose(f(np.ones(2)), 2.0)
        with pytest.raises(gg.UnsupportedError, match=name):
            gg.grad(f)(np.ones(2))
        with pytest.raises(gg.UnsupportedError, match=name):
            gg.jvp(f, (np.ones(2),), (np.ones(2),))
        with pytest.raises(gg.UnsupportedError, match=name):
            gg.jit(gg.grad(f))(np.ones(2))
    finally:
        del REGISTRY[name]


# ---- training: jit and eager agree --------------------------------------------------------
def _sgd_momentum_step(params, vel, x, y, lr=0.1, beta=0.9):
    loss, g = gg.value_and_grad(_mlp_loss)(params, x, y)
    new_vel = {k: vel[k] * beta + g[k] for k in params}
    new_params = {k: params[k] - lr * new_vel[k] for k in params}
    return loss, new_params, new_vel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jitted_training_step_matches_eager(dtype):
    params, x, y = _mlp_problem(seed=4, dtype=dtype)
    vel = {k: np.zeros_like(v) for k, v in params.items()}
    step = gg.jit(_sgd_momentum_step)
    pe, ve, pj, vj = params, vel, params, vel
    losses = []
    for _ in range(10):
        le, pe, ve = _sgd_momentum_step(pe, ve, x, y)
        lj, pj, vj = step(pj, vj, x, y)
        losses.append(float(le))
        np.testing.assert_allclose(lj, le, rtol=1e-5)
    for k in params:
        assert pj[k].dtype == dtype
        np.testing.assert_allclose(pj[k], pe[k], rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0]
    assert step.cache_size == 1


@pytest.mark.gpu
def test_eager_grad_on_cupy_stays_on_device():
    cupy = pytest.importorskip("cupy", reason="needs CuPy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:
        pytest.skip("needs a CUDA device")
    x = cupy.asarray([0.5, 1.0])
    g = gg.grad(lambda x: gg.sum(gg.exp(x)))(x)
    assert isinstance(g, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(g), np.exp([0.5, 1.0]))


def test_every_elementwise_op_is_covered_by_second_order():
    # the second-order test runs over every CASES entry, so this keeps elementwise ops in it
    ew = [n for n in _differentiable_ops() if REGISTRY[n].family == "elementwise"]
    assert ew and set(ew) <= set(CASES)
