"""The graph optimizer (issue 4): constant folding, CSE, algebraic simplification, DCE, the
fixpoint pipeline and Compiled.explain()."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpugraph as gg
from gpugraph.ir import Graph, GraphBuilder, TensorType, Value, verify
from gpugraph.ops.core import run_node_impl
from gpugraph.ops.registry import get_op
from gpugraph.passes import fold as fold_mod
from gpugraph.passes.cse import cse
from gpugraph.passes.dce import dce
from gpugraph.passes.fold import fold
from gpugraph.passes.pipeline import PassRecord, optimize
from gpugraph.passes.simplify import simplify

F32 = np.dtype("float32")


# ---- helpers -----------------------------------------------------------------------------
def traced(fn, *specs) -> Graph:
    """The unoptimized traced graph of ``fn`` for ShapeDtype specs."""
    return gg.jit(fn, optimize=False, fuse=False, backend="numpy").lower(*specs).traced_graph


def spec(*shape, dtype=np.float32) -> gg.ShapeDtype:
    return gg.ShapeDtype(shape, dtype)


def emit(b: GraphBuilder, op: str, *inputs: Value, **attrs) -> Value:
    types = get_op(op).infer([v.type for v in inputs], **attrs)
    return b.add_node(op, inputs, attrs, types).outputs[0]


def const(b: GraphBuilder, value, dtype=F32) -> Value:
    return emit(b, "constant", value=np.asarray(value, dtype=dtype))


def run_graph(graph: Graph, *args: np.ndarray) -> list[np.ndarray]:
    """A reference interpreter: every node through its NumPy impl."""
    env: dict[Value, np.ndarray] = dict(zip(graph.inputs, args))
    with np.errstate(all="ignore"):
        for node in graph.nodes:
            res = run_node_impl(np, node.op, [env[v] for v in node.inputs], node.attrs)
            for v, r in zip(node.outputs, res):
                env[v] = np.asarray(r).astype(v.type.dtype)
    return [env[v] for v in graph.outputs]


def opt(graph: Graph, unsafe: bool = False) -> tuple[Graph, list[PassRecord]]:
    log: list[PassRecord] = []
    return optimize(graph, log, check=True, unsafe_math=unsafe), log


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def same_values(a: np.ndarray, b: np.ndarray, exact_zeros: bool = True) -> None:
    """allclose, with NaN and +-inf at the same positions (and the same sign of zero)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    if a.dtype.kind != "f":
        np.testing.assert_array_equal(a, b)
        return
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b))
    np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b))
    finite = np.isfinite(a)
    np.testing.assert_allclose(a[finite], b[finite], rtol=1e-5, atol=1e-6)
    if exact_zeros:
        zero = finite & (a == 0) & (b == 0)
        np.testing.assert_array_equal(np.signbit(a[zero]), np.signbit(b[zero]))


# ---- constant folding --------------------------------------------------------------------
def test_fold_keeps_inferred_dtype():
    b = GraphBuilder()
    x = const(b, [1, 2], np.int32)
    s = emit(b, "add", x, x)
    t = emit(b, "sum", s, axis=(0,), keepdims=False)  # sum of int32 is int64
    h = emit(b, "astype", s, dtype=np.dtype(np.float32))
    g, rw = fold(b.build([s, t, h]))
    verify(g)
    assert rw == {"fold add": 1, "fold sum": 1, "fold astype": 1}
    vals = [v.node.attrs["value"] for v in g.outputs]
    assert [v.dtype for v in vals] == [np.int32, np.int64, np.float32]
    np.testing.assert_array_equal(vals[0], [2, 4])
    assert vals[1] == 6


def test_fold_chain_and_creation_ops():
    b = GraphBuilder()
    x = b.add_input(TensorType((3,), F32))
    a = emit(b, "arange", start=0, stop=3, step=1, dtype=F32)
    f = emit(b, "full", shape=(3,), value=2.0, dtype=F32)
    y = emit(b, "add", x, emit(b, "multiply", a, f))
    g, _ = opt(b.build([y]))
    assert ops(g) == ["constant", "add"]
    np.testing.assert_array_equal(g.nodes[0].attrs["value"], [0, 2, 4])


def test_fold_size_limit_keeps_big_full_and_broadcast():
    n = fold_mod.FOLD_MAX_ELEMENTS * 4
    b = GraphBuilder()
    big = emit(b, "full", shape=(n,), value=1.5, dtype=F32)
    c = const(b, 2.0)
    wide = emit(b, "broadcast_to", c, shape=(n, 2))
    small = emit(b, "broadcast_to", c, shape=(4,))
    g, rw = fold(b.build([big, wide, small]))
    assert rw == {"fold broadcast_to": 1}
    assert ops(g)[:3] == ["full", "constant", "broadcast_to"]
    assert all(
        n.attrs["value"].size <= fold_mod.FOLD_MAX_ELEMENTS for n in g.nodes if n.op == "constant"
    )


def test_fold_special_values_without_warnings():
    b = GraphBuilder()
    one, zero = const(b, 1.0), const(b, 0.0)
    outs = [
        emit(b, "divide", one, zero),
        emit(b, "divide", zero, zero),
        emit(b, "log", zero),
        emit(b, "exp", const(b, 1000.0)),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g, rw = fold(b.build(outs))
    assert rw == {"fold divide": 2, "fold log": 1, "fold exp": 1}
    vals = [float(v.node.attrs["value"]) for v in g.outputs]
    assert vals[0] == math.inf and math.isnan(vals[1]) and vals[2] == -math.inf
    assert vals[3] == math.inf


def test_fold_never_folds_ops_that_may_raise():
    b = GraphBuilder()
    table = const(b, [1.0, 2.0])
    idx = const(b, [5], np.int64)  # out of range: must raise when run, not when compiled
    y = emit(b, "take", table, idx, axis=0)
    g, rw = fold(b.build([y]))
    assert rw == {} and ops(g) == ["constant", "constant", "take"]
    # and an impl that raises is left in place, e.g. int power with a negative exponent
    b = GraphBuilder()
    p = emit(b, "power", const(b, 2, np.int64), const(b, -1, np.int64))
    g, rw = fold(b.build([p]))
    assert rw == {} and ops(g)[-1] == "power"


def test_fold_result_is_a_private_copy():
    b = GraphBuilder()
    c = const(b, [1.0, 2.0])
    r = emit(b, "reshape", c, shape=(2, 1))
    g, _ = fold(b.build([r]))
    arr = g.outputs[0].node.attrs["value"]
    assert arr.shape == (2, 1) and not np.shares_memory(arr, c.node.attrs["value"])


# ---- CSE ---------------------------------------------------------------------------------
def test_cse_merges_duplicates_and_chains():
    g = traced(lambda x: gg.exp(x) * 2.0 + gg.exp(x) * 2.0, spec(4))
    g2, rw = cse(g)
    verify(g2)
    assert rw == {"merge constant": 1, "merge exp": 1, "merge multiply": 1}
    assert ops(g2) == ["exp", "constant", "multiply", "add"]
    x = np.linspace(-1, 1, 4, dtype=F32)
    same_values(run_graph(g, x)[0], run_graph(g2, x)[0])


def test_cse_commutative_operands():
    b = GraphBuilder()
    x = b.add_input(TensorType((2,), F32))
    y = b.add_input(TensorType((2,), F32))
    outs = [
        emit(b, "multiply", x, y),
        emit(b, "multiply", y, x),
        emit(b, "maximum", x, y),
        emit(b, "maximum", y, x),  # maximum(-0.0, 0.0) != maximum(0.0, -0.0): kept
        emit(b, "subtract", x, y),
        emit(b, "subtract", y, x),
    ]
    g, rw = cse(b.build(outs))
    assert rw == {"merge multiply": 1} and ops(g) == ["multiply", *ops(g)[1:]]
    assert g.outputs[0] is g.outputs[1] and len(g.nodes) == 5


def test_cse_keeps_signed_zeros_and_attrs_apart():
    b = GraphBuilder()
    x = b.add_input(TensorType((2,), F32))
    outs = [
        emit(b, "add", x, const(b, 0.0)),
        emit(b, "add", x, const(b, -0.0)),
        emit(b, "add", x, const(b, np.nan)),
        emit(b, "add", x, const(b, np.nan)),
        emit(b, "full", shape=(2,), value=0.0, dtype=F32),
        emit(b, "full", shape=(2,), value=-0.0, dtype=F32),
        emit(b, "sum", x, axis=(0,), keepdims=True),
        emit(b, "sum", x, axis=(0,), keepdims=False),
        emit(b, "constant", value=np.zeros(2, np.float32)),
        emit(b, "constant", value=np.zeros(2, np.int32)),
    ]
    g, rw = cse(b.build(outs))
    assert rw == {"merge constant": 1, "merge add": 1}  # only the two NaN constants/adds
    assert len({id(v) for v in g.outputs}) == len(outs) - 1


# ---- simplification ----------------------------------------------------------------------
SIMPLIFY_CASES = [
    # (name, fn, input specs, ops left after the optimizer)
    ("x*1", lambda x: x * 1.0, [spec(3)], []),
    ("1*x", lambda x: 1.0 * x, [spec(3)], []),
    ("x*ones broadcast", lambda x: x * np.ones((2, 3), np.float32), [spec(3)], ["broadcast_to"]),
    ("x+(-0.0)", lambda x: x + np.float32(-0.0), [spec(3)], []),
    ("(-0.0)+x", lambda x: np.float32(-0.0) + x, [spec(3)], []),
    ("x+0.0 kept", lambda x: x + 0.0, [spec(3)], ["constant", "add"]),
    ("int x+0", lambda x: x + 0, [spec(3, dtype=np.int32)], []),
    ("x-0.0", lambda x: x - 0.0, [spec(3)], []),
    ("x-(-0.0) kept", lambda x: x - np.float32(-0.0), [spec(3)], ["constant", "subtract"]),
    ("(-0.0)-x", lambda x: np.float32(-0.0) - x, [spec(3)], ["negative"]),
    ("x/1", lambda x: x / 1.0, [spec(3)], []),
    ("x/-1", lambda x: x / -1.0, [spec(3)], ["negative"]),
    ("x*-1", lambda x: x * -1.0, [spec(3)], ["negative"]),
    ("--x", lambda x: gg.negative(gg.negative(x)), [spec(3)], []),
    ("x*0 kept", lambda x: x * 0.0, [spec(3)], ["constant", "multiply"]),
    ("int x*0", lambda x: x * 0, [spec(3, dtype=np.int64)], ["constant"]),
    ("T.T", lambda x: x.T.T, [spec(2, 3)], []),
    (
        "transposes compose",
        lambda x: gg.transpose(gg.transpose(x, (1, 2, 0)), (1, 0, 2)),
        [spec(2, 3, 4)],
        ["transpose"],
    ),
    ("reshape.reshape", lambda x: x.reshape(6).reshape(3, 2), [spec(2, 3)], ["reshape"]),
    ("reshape.reshape back", lambda x: x.reshape(6).reshape(2, 3), [spec(2, 3)], []),
    ("f32->f64->f32", lambda x: x.astype(np.float64).astype(np.float32), [spec(3)], []),
    (
        "f64->f32->f64 kept",
        lambda x: x.astype(np.float32).astype(np.float64),
        [spec(3, dtype=np.float64)],
        ["astype", "astype"],
    ),
    (
        "i32->f64->i64",
        lambda x: x.astype(np.float64).astype(np.int64),
        [spec(3, dtype=np.int32)],
        ["astype"],
    ),
    # a float sum starts from +0.0 (sum([-0.0]) is +0.0): reshape(x + 0.0), fusable
    (
        "sum size-1 axis",
        lambda x: gg.sum(x, axis=1),
        [spec(2, 1, 3)],
        ["constant", "add", "reshape"],
    ),
    (
        "sum size-1 keepdims",
        lambda x: gg.sum(x, axis=(0, 1), keepdims=True),
        [spec(1, 1, 3)],
        ["constant", "add"],
    ),
    (
        "int32 sum size-1",
        lambda x: gg.sum(x, axis=0),
        [spec(1, 3, dtype=np.int32)],
        ["astype", "reshape"],
    ),
    ("max size-1", lambda x: gg.max(x, axis=0), [spec(1, 3)], ["reshape"]),
    ("sum real axis kept", lambda x: gg.sum(x, axis=0), [spec(2, 3)], ["sum"]),
    ("argmax size-1", lambda x: gg.argmax(x, axis=1), [spec(3, 1)], ["constant"]),
    ("where(c,x,x)", lambda c, x: gg.where(c, x, x), [spec(3, dtype=bool), spec(3)], []),
    ("max(x,x)", lambda x: gg.maximum(x, x), [spec(3)], []),
    (
        "bcast.bcast",
        lambda x: gg.broadcast_to(gg.broadcast_to(x, (2, 3)), (4, 2, 3)),
        [spec(3)],
        ["broadcast_to"],
    ),
    ("x*ones_like", lambda x: x * gg.ones_like(x), [spec(3)], []),
    ("!!b", lambda c: gg.logical_not(gg.logical_not(c)), [spec(3, dtype=bool)], []),
    (
        "where(true,x,y)",
        lambda x, y: gg.where(gg.full((3,), True, bool), x, y),
        [spec(3), spec(3)],
        [],
    ),
    (
        "x+broadcast_to(y)",
        lambda x, y: x + gg.broadcast_to(y, (2, 3)),
        [spec(2, 3), spec(3)],
        ["add"],
    ),
    (
        "splat array -> scalar",
        lambda x: x * np.full((2, 3), 2.0, np.float32),
        [spec(2, 3)],
        ["constant", "multiply"],
    ),
    ("huge ones kept as full", lambda x: x * gg.ones((1 << 17,)), [spec(1)], ["broadcast_to"]),
]


@pytest.mark.parametrize("name,fn,specs,left", SIMPLIFY_CASES, ids=[c[0] for c in SIMPLIFY_CASES])
def test_simplify_rules(name, fn, specs, left):
    g = traced(fn, *specs)
    g2, _ = opt(g)
    assert ops(g2) == left, str(g2)
    rng = np.random.default_rng(0)
    specials = np.array([0.0, -0.0, 1.0, -2.5, np.nan, np.inf, -np.inf, 3.0])
    args = []
    for s in specs:
        if s.dtype == np.bool_:
            args.append(rng.random(s.shape) > 0.5)
        elif s.dtype.kind == "f":
            args.append(rng.choice(specials, size=s.shape).astype(s.dtype))
        else:
            args.append(rng.integers(-5, 5, size=s.shape).astype(s.dtype))
    for a, b in zip(run_graph(g, *args), run_graph(g2, *args)):
        same_values(a, b)


def test_simplify_hand_built_identities():
    b = GraphBuilder()
    x = b.add_input(TensorType((2, 3), F32))
    outs = [
        emit(b, "astype", x, dtype=F32),
        emit(b, "reshape", x, shape=(2, 3)),
        emit(b, "broadcast_to", x, shape=(2, 3)),
        emit(b, "transpose", x, perm=(0, 1)),
        emit(b, "stop_gradient", x),
        emit(b, "max", x, axis=(), keepdims=False),
    ]
    g, rw = simplify(b.build(outs))
    verify(g)
    assert all(v is x for v in g.outputs)
    assert rw == {
        "astype same dtype -> x": 1,
        "reshape same shape -> x": 1,
        "broadcast_to same shape -> x": 1,
        "transpose identity -> x": 1,
        "stop_gradient -> x": 1,
        "reduce over size-1 axes": 1,
    }


def test_x_plus_zero_keeps_ieee_sign_by_default():
    """-0.0 + 0.0 is +0.0: the default pipeline must not drop x + 0.0; unsafe_math does."""
    g = traced(lambda x: x + 0.0, spec(2))
    x = np.array([-0.0, 1.0], np.float32)
    safe, _ = opt(g)
    assert np.signbit(run_graph(safe, x)[0][0]) == np.False_
    fast, log = opt(g, unsafe=True)
    assert ops(fast) == [] and any("x+0 -> x" in r.rewrites for r in log)


def test_float_sum_over_unit_axes_is_a_reshape_with_unsafe_math():
    g = traced(lambda x: gg.sum(x, axis=1), spec(2, 1, 3))
    fast, log = opt(g, unsafe=True)
    assert ops(fast) == ["reshape"]
    assert any("reduce over size-1 axes" in r.rewrites for r in log)


def test_x_times_zero_only_with_unsafe_math():
    g = traced(lambda x: x * 0.0 + 1.0, spec(3))
    safe, _ = opt(g)
    assert "multiply" in ops(safe)
    x = np.array([np.nan, np.inf, 2.0], np.float32)
    np.testing.assert_array_equal(np.isnan(run_graph(safe, x)[0]), [True, True, False])
    fast, _ = opt(g, unsafe=True)
    assert ops(fast) == ["constant"]  # 0 + 1 folded
    np.testing.assert_array_equal(run_graph(fast, x)[0], [1.0, 1.0, 1.0])


def test_unsafe_math_jit_option():
    safe = gg.jit(lambda x: x * 0.0, backend="numpy", fuse=False).lower(spec(3))
    assert ops(safe.graph) != ["constant"]
    c = gg.jit(lambda x: x * 0.0, backend="numpy", fuse=False, unsafe_math=True).lower(spec(3))
    assert ops(c.graph) == ["constant"]
    np.testing.assert_array_equal(c(np.full(3, np.inf, np.float32)), [0.0, 0.0, 0.0])


def test_rewritten_outputs_never_alias_the_arguments():
    f = gg.jit(lambda x: (x * 1.0, x + np.float32(-0.0), x.T.T), backend="numpy")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    outs = f(x)
    assert len(f.lower(x).graph.nodes) == 0
    for o in outs:
        np.testing.assert_array_equal(o, x)
        assert not np.shares_memory(o, x)
    assert not np.shares_memory(outs[0], outs[1])


# ---- DCE and the pipeline ----------------------------------------------------------------
def test_dce_removes_unused_nodes():
    b = GraphBuilder()
    x = b.add_input(TensorType((2,), F32))
    emit(b, "exp", emit(b, "log", x))
    y = emit(b, "negative", x)
    g, rw = dce(b.build([y]))
    assert ops(g) == ["negative"] and rw == {"dead node removed": 2}
    assert dce(g) == (g, {})


def test_pipeline_reaches_fixpoint_and_is_idempotent():
    def f(x):
        y = gg.max(gg.reshape(x * 1.0, (2, 1, 3)), axis=1)  # reduce -> reshape.reshape
        return gg.exp(y.T.T) + gg.exp(y)

    g = traced(f, spec(2, 3))
    g2, log = opt(g)
    assert ops(g2) == ["exp", "add"]
    again, log2 = opt(g2)
    assert again is g2 and log2 == []
    assert all(r.rewrites for r in log)


def test_explain_reports_each_pass():
    def f(x):
        return gg.exp(x * 1.0) + gg.exp(x * 1.0) + gg.full((3,), 2.0).sum()

    c = gg.jit(f, backend="numpy", fuse=False, verify=True).lower(spec(3))
    text = c.explain()
    names = [r.name for r in c.pass_log]
    assert {"fold", "simplify", "cse", "dce"} <= set(names)
    for rec in c.pass_log:
        assert f"{rec.name}: {rec.nodes_before} -> {rec.nodes_after} nodes" in text
    simp = next(r for r in c.pass_log if r.name == "simplify")
    assert simp.rewrites["x*1 -> x"] == 2 and "x*1 -> x x2" in text
    assert "fold full x1" in text and "merge exp x1" in text
    assert f"traced graph: {len(c.traced_graph.nodes)} nodes" in text
    off = gg.jit(f, backend="numpy", fuse=False, optimize=False).lower(spec(3))
    assert not any(r.name in ("fold", "simplify", "cse") for r in off.pass_log)


# ---- property test: random graphs, optimized == unoptimized ------------------------------
SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.5, np.nan, np.inf, -np.inf]
SHAPES = [(), (3,), (1, 3), (2, 3), (2, 1, 3)]
UNARY = ["negative", "exp", "tanh", "abs", "log", "sqrt", "relu", "sigmoid"]
BINARY = ["add", "subtract", "multiply", "divide", "maximum", "minimum"]
KINDS = [
    "unary",
    "binary",
    "const",
    "const",
    "reduce",
    "transpose",
    "reshape",
    "broadcast",
    "cast",
    "where",
    "full",
]


def _reshapes(shape):
    size = int(np.prod(shape, dtype=np.int64))
    return [shape, (size,), (1,) + shape, shape + (1,), tuple(s for s in shape if s != 1)]


@st.composite
def programs(draw):
    """A random straight-line program over a pool of values, tracked by shape."""
    shapes = [draw(st.sampled_from(SHAPES)) for _ in range(draw(st.integers(1, 3)))]
    n_in = len(shapes)
    prog = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(KINDS))
        i = draw(st.integers(0, len(shapes) - 1))
        s = shapes[i]
        if kind == "unary":
            prog.append(("unary", draw(st.sampled_from(UNARY)), i))
        elif kind == "binary":
            j = draw(st.integers(0, len(shapes) - 1))
            try:
                s = tuple(np.broadcast_shapes(s, shapes[j]))
            except ValueError:
                continue
            prog.append(("binary", draw(st.sampled_from(BINARY)), i, j))
        elif kind == "const":
            cshape = draw(st.sampled_from([(), s, (2,) + s, s[-1:]]))
            left = draw(st.booleans())
            prog.append(
                (
                    "const",
                    draw(st.sampled_from(BINARY)),
                    i,
                    draw(st.sampled_from(SPECIAL)),
                    cshape,
                    left,
                )
            )
            s = tuple(np.broadcast_shapes(s, cshape))
        elif kind == "reduce":
            axes = tuple(a for a in range(len(s)) if draw(st.booleans()))
            keep = draw(st.booleans())
            prog.append(("reduce", draw(st.sampled_from(["sum", "max", "min"])), i, axes, keep))
            s = (
                tuple(1 if a in axes else d for a, d in enumerate(s))
                if keep
                else tuple(d for a, d in enumerate(s) if a not in axes)
            )
        elif kind == "transpose":
            perm = tuple(draw(st.permutations(range(len(s)))))
            prog.append(("transpose", perm, i))
            s = tuple(s[p] for p in perm)
        elif kind == "reshape":
            s = draw(st.sampled_from(_reshapes(s)))
            prog.append(("reshape", s, i))
        elif kind == "broadcast":
            s = draw(st.sampled_from([s, (2,) + s, tuple(2 if d == 1 else d for d in s)]))
            prog.append(("broadcast", s, i))
        elif kind == "cast":
            prog.append(("cast", draw(st.sampled_from(["float32", "float64"])), i))
        elif kind == "full":  # a creation node: what it feeds is folded
            s = draw(st.sampled_from(SHAPES))
            prog.append(("full", s, draw(st.sampled_from(SPECIAL))))
        else:
            j = draw(st.integers(0, len(shapes) - 1))
            try:
                s = tuple(np.broadcast_shapes(s, shapes[j]))
            except ValueError:
                continue
            prog.append(("where", i, j))
        shapes.append(s)
    n_out = draw(st.integers(1, 2))
    outs = sorted({len(shapes) - 1, draw(st.integers(0, len(shapes) - 1))})[-n_out:]
    return shapes[:n_in], prog, outs


def interpret(prog, outs, *inputs):
    pool = list(inputs)
    for ins in prog:
        kind = ins[0]
        if kind == "unary":
            r = getattr(gg, ins[1])(pool[ins[2]])
        elif kind == "binary":
            r = getattr(gg, ins[1])(pool[ins[2]], pool[ins[3]])
        elif kind == "const":
            _, op, i, value, cshape, left = ins
            x = pool[i]
            c = np.full(cshape, value, dtype=x.dtype)
            r = getattr(gg, op)(c, x) if left else getattr(gg, op)(x, c)
        elif kind == "reduce":
            r = getattr(gg, ins[1])(pool[ins[2]], axis=ins[3], keepdims=ins[4])
        elif kind == "transpose":
            r = gg.transpose(pool[ins[2]], ins[1])
        elif kind == "reshape":
            r = gg.reshape(pool[ins[2]], ins[1])
        elif kind == "broadcast":
            r = gg.broadcast_to(pool[ins[2]], ins[1])
        elif kind == "cast":
            r = gg.astype(pool[ins[2]], ins[1])
        elif kind == "full":
            r = gg.full(ins[1], ins[2], np.float32)
        else:
            a, b = pool[ins[1]], pool[ins[2]]
            r = gg.where(gg.greater(a, b), a, b)
        pool.append(r)
    return tuple(pool[k] for k in outs)


ELEMENTS = st.sampled_from(SPECIAL + [0.5, -3.0, 1e30, -7.25])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_graphs_optimized_equals_unoptimized(data):
    in_shapes, prog, outs = data.draw(programs())
    args = [data.draw(hnp.arrays(np.float32, s, elements=ELEMENTS)) for s in in_shapes]

    def f(*xs):
        return interpret(prog, outs, *xs)

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain = gg.jit(f, optimize=False, fuse=False, backend="numpy", verify=True)
        fast = gg.jit(f, optimize=True, fuse=False, backend="numpy", verify=True)
        expected, got = plain(*args), fast(*args)
    for e, r in zip(expected, got):
        same_values(e, r)


# ---- the gradient of a 3-layer MLP shrinks ------------------------------------------------
SIZES = (8, 16, 16, 4)  # batch 8: 16 -> 16 -> 16 -> 4


def _mlp_specs():
    n, d0, d1, d2 = SIZES[0], SIZES[1], SIZES[2], SIZES[3]
    # weights are stored (out, in) so the forward uses W.T, as torch.nn.Linear does
    return [
        spec(n, d0),
        spec(n, d2),
        spec(d1, d0),
        spec(1, d1),
        spec(d1, d1),
        spec(1, d1),
        spec(d2, d1),
        spec(1, d2),
    ]


def mlp_grad_by_hand(x, y, w1, b1, w2, b2, w3, b3):
    """The backward of mean((mlp(x) - y)**2) written the way reverse-mode autodiff emits it:
    a seed of ones, x*1 scalings, the forward recomputed per use, transposes of transposes,
    sum_to_shape over broadcast axes (sums over size-1 axes) and reshapes of reshapes."""

    def fwd():
        z1 = x @ w1.T + b1
        h1 = gg.tanh(z1)
        z2 = h1 @ w2.T + b2
        h2 = gg.tanh(z2)
        out = h2 @ w3.T + b3
        return h1, h2, out

    h1, h2, out = fwd()
    d = out - y
    seed = gg.ones(())  # d loss / d loss
    g = gg.broadcast_to(gg.reshape(seed / float(d.size), (1, 1)), d.shape)
    gd = g * d * 1.0 + d * g  # vjp of d*d: both partials, scaled by +1
    gout = gd * 1.0  # vjp of subtract wrt out
    grads = []
    layers = [(w3, b3, h2), (w2, b2, h1), (w1, b1, x)]
    gz = gout
    for k, (w, b, a) in enumerate(layers):
        gw_t = gg.transpose(a) @ gz  # grad of w.T
        gw = gg.transpose(gw_t)
        gb = gg.reshape(
            gg.sum(gg.sum(gz, axis=0, keepdims=True), axis=(0,), keepdims=True), b.shape
        )
        ga = gz @ gg.transpose(gg.transpose(w, (1, 0)), (1, 0))
        grads.append((gg.reshape(gg.reshape(gw, (-1,)), w.shape), gb * 1.0))
        if k < 2:
            h = fwd()[1 - k]  # recomputed forward: duplicate subexpressions for CSE
            gz = ga * (1.0 - h * h) * 1.0
    return tuple(g for pair in grads[::-1] for g in pair)


def _mlp_args(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s.shape).astype(np.float32) * 0.5 for s in _mlp_specs()]


def test_mlp_hand_backward_shrinks():
    plain = gg.jit(mlp_grad_by_hand, optimize=False, fuse=False, backend="numpy")
    fast = gg.jit(mlp_grad_by_hand, optimize=True, fuse=False, backend="numpy", verify=True)
    before = len(plain.lower(*_mlp_specs()).traced_graph.nodes)
    c = fast.lower(*_mlp_specs())
    after = len(c.graph.nodes)
    assert (before, after) == (MLP_HAND_BEFORE, MLP_HAND_AFTER), c.explain()
    assert after < before
    args = _mlp_args()
    for e, r in zip(plain(*args), fast(*args)):
        same_values(e, r)


# 34: the transposes feeding matmuls fold into them as views (ops/linalg.py), DCE drops them
MLP_HAND_BEFORE, MLP_HAND_AFTER = 94, 34


def mlp_loss(params, x, y):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i < len(params) - 1:
            h = gg.tanh(h)
    d = h - y
    return gg.mean(d * d)


def test_mlp_autodiff_gradient_shrinks():
    if not hasattr(gg, "grad"):
        pytest.skip("gg.grad is not available yet (autodiff is being written)")

    def grad_fn(x, y, w1, b1, w2, b2, w3, b3):
        return gg.grad(mlp_loss)(((w1, b1), (w2, b2), (w3, b3)), x, y)

    plain = gg.jit(grad_fn, optimize=False, fuse=False, backend="numpy")
    fast = gg.jit(grad_fn, optimize=True, fuse=False, backend="numpy", verify=True)
    before = len(plain.lower(*_mlp_specs()).traced_graph.nodes)
    c = fast.lower(*_mlp_specs())
    after = len(c.graph.nodes)
    # measured 2026-11-25: 57 -> 39 (exact counts depend on the autodiff rules, so the test
    # asserts a solid reduction rather than the numbers)
    assert after <= before - 15, c.explain()
    args = _mlp_args(1)
    flat_e = [a for pair in plain(*args) for a in pair]
    flat_r = [a for pair in fast(*args) for a in pair]
    for e, r in zip(flat_e, flat_r):
        same_values(e, r)
    # the hand-written backward computes the same gradients
    hand = mlp_grad_by_hand(*args)
    for e, r in zip(flat_e, hand):
        np.testing.assert_allclose(e, r, rtol=1e-4, atol=1e-6)
