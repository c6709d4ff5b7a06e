"""CUDA codegen for fused groups: every template under NVRTC, the emulator against NumPy, names,
index arithmetic, literals, unsupported dtypes and a planted broadcasting bug."""

from __future__ import annotations

import numpy as np
import pytest

from gpugraph.codegen import emit_kernel, inline_literal, kernel_name, unsupported_reason
from gpugraph.codegen.cuda import index_expr
from gpugraph.errors import UnsupportedError
from gpugraph.ir import Graph, GraphBuilder, TensorType
from gpugraph.ops.registry import REGISTRY
from tests.kernel_helpers import check_nvrtc, emulate_fused, requires_emulator, requires_nvrtc

DTYPES = ("float32", "float64", "int32", "int64", "bool")
UNARY = {
    "negative",
    "sign",
    "abs",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "reciprocal",
    "tanh",
    "sin",
    "cos",
    "sigmoid",
    "relu",
    "erf",
    "stop_gradient",
    "logical_not",
    "astype",
    # ops/math_more.py
    "square",
    "log1p",
    "expm1",
    "log2",
    "tan",
    "arctan",
    "floor",
    "ceil",
    "round",
    "isnan",
    "isfinite",
    "softplus",
    "silu",
    "bitwise_not",
}
TERNARY = {"where", "clip", "threefry2x32"}
# int-only by design: on bools they are the logical ops, floats are refused (as NumPy);
# threefry2x32 maps integer keys and counters to random words
INTEGER_ONLY = {"bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "threefry2x32"}
POSITIVE = {"log", "sqrt", "rsqrt", "reciprocal", "power"}  # keep these in their domain


def single_op_body(name: str, dtype: str, shapes=((3, 5),)) -> Graph | None:
    """A body holding one ``name`` node over ``dtype`` operands, or None if the op rejects it."""
    op = REGISTRY[name]
    arity = 3 if name in TERNARY else 1 if name in UNARY else 2
    shapes = (tuple(shapes) * arity)[:arity]
    b = GraphBuilder()
    ins = [
        b.add_input(TensorType(s, "bool" if name == "where" and i == 0 else dtype))
        for i, s in enumerate(shapes)
    ]
    attrs = (
        {"dtype": np.dtype("float64" if dtype != "float64" else "int32")}
        if (name == "astype")
        else {}
    )
    try:
        out_types = op.infer([v.type for v in ins], **attrs)
    except Exception:
        return None
    node = b.add_node(name, ins, attrs, out_types)
    if unsupported_reason(node) is not None:
        return None
    return b.build(node.outputs)


CASES = [
    (name, dt)
    for name, op in sorted(REGISTRY.items())
    if op.family == "elementwise"
    for dt in DTYPES
    if single_op_body(name, dt) is not None
]
# Operands of the per-dtype test kernel: full, row-broadcast and column-broadcast, each in a
# general and a positive flavour (for ops with a restricted domain), plus a bool condition.
SHAPES = ((4, 5), (5,), (4, 1))


def dtype_body(dtype: str) -> tuple[Graph, list[str]]:
    """One body applying every op that accepts ``dtype``: one kernel per dtype keeps the host
    compiler's work (and the test time) small; each op is still checked on its own output."""
    b = GraphBuilder()
    general = [b.add_input(TensorType(s, dtype)) for s in SHAPES]
    positive = [b.add_input(TensorType(s, dtype)) for s in SHAPES]
    cond = b.add_input(TensorType((4, 5), "bool"))
    names, outs = [], []
    for name, dt in CASES:
        if dt != dtype:
            continue
        arity = 3 if name in TERNARY else 1 if name in UNARY else 2
        ins = (positive if name in POSITIVE else general)[:arity]
        if name == "where":
            ins = [cond, *general[1:]]
        attrs = (
            {"dtype": single_op_body(name, dtype).nodes[0].attrs["dtype"]}
            if (name == "astype")
            else {}
        )
        out_types = REGISTRY[name].infer([v.type for v in ins], **attrs)
        out_types = [TensorType((4, 5), t.dtype) for t in out_types]
        if out_types[0].shape != np.broadcast_shapes(*(v.shape for v in ins)):
            ins = [general[0]] * arity  # unary: use the full-shape operand
        node = b.add_node(name, ins, attrs, out_types)
        names.append(name)
        outs.append(node.output)
    return b.build(outs), names


def test_every_elementwise_op_has_a_float_kernel():
    ops = {name for name, op in REGISTRY.items() if op.family == "elementwise"}
    with_float = {name for name, dt in CASES if dt in ("float32", "float64", "bool")}
    assert ops - INTEGER_ONLY <= with_float, ops - INTEGER_ONLY - with_float
    assert INTEGER_ONLY <= {name for name, dt in CASES if dt in ("int32", "int64")}


@pytest.mark.nvrtc
@requires_nvrtc
@pytest.mark.parametrize("dtype", DTYPES)
def test_templates_compile_under_nvrtc(dtype):
    body, names = dtype_body(dtype)
    assert names
    check_nvrtc(emit_kernel(body).source, f"all_ops_{dtype}.cu")


def _random_input(rng, t: TensorType, positive: bool) -> np.ndarray:
    if t.dtype.kind == "b":
        return rng.random(t.shape) < 0.5
    if t.dtype.kind == "i":
        return rng.integers(1 if positive else -5, 6, t.shape).astype(t.dtype)
    x = rng.uniform(0.1 if positive else -3, 3, t.shape).astype(t.dtype)
    if not positive and x.size > 2:
        x.flat[0], x.flat[1] = np.nan, -0.0  # NaN propagation and signed zeros must match
    return x


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("dtype", DTYPES)
def test_templates_match_numpy_on_the_emulator(dtype):
    body, names = dtype_body(dtype)
    kernel = emit_kernel(body)
    rng = np.random.default_rng(0)
    ins = [_random_input(rng, v.type, 3 <= k < 6) for k, v in enumerate(body.inputs)]
    attrs = kernel.attrs()
    got_all = emulate_fused(attrs, ins, [v.type for v in body.outputs])
    env = dict(zip(body.inputs, ins))
    for name, node, got in zip(names, body.nodes, got_all):
        args = [env[v] for v in node.inputs]
        with np.errstate(all="ignore"):
            want = REGISTRY[name].impl(np, *args, **node.attrs)
            want = np.broadcast_to(np.asarray(want).astype(node.output.dtype), got.shape)
        msg = f"{name} on {dtype}"
        if node.output.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, equal_nan=True, err_msg=msg)
        elif name == "astype" and args[0].dtype.kind == "f":
            ok = np.isfinite(args[0])  # float -> int of NaN is undefined in C and in NumPy
            np.testing.assert_array_equal(got[ok], want[ok], err_msg=msg)
        else:
            np.testing.assert_array_equal(got, want, err_msg=msg)


def test_kernel_name_is_a_hash_of_the_source():
    a = emit_kernel(single_op_body("add", "float32"))
    b = emit_kernel(single_op_body("add", "float32"))
    c = emit_kernel(single_op_body("add", "float32", shapes=((3, 6),)))
    assert a.name == b.name and a.source == b.source
    assert a.name != c.name
    assert a.name.startswith("gg_fused_") and len(a.name) == len("gg_fused_") + 12
    assert kernel_name("x") == kernel_name("x") != kernel_name("y")
    assert f"void {a.name}(" in a.source


def test_same_shape_operands_take_the_fast_path():
    body = single_op_body("multiply", "float32", shapes=((64, 33),))
    src = emit_kernel(body, vectorize=False).source
    assert "in0[i]" in src and "in1[i]" in src
    assert "%" not in src and " / " not in src  # no index arithmetic at all
    assert "long long i = " in src and "i += stride" in src
    vec = emit_kernel(body)
    assert vec.lanes == 4 and "w0.v[k]" in vec.source and "w1.v[k]" in vec.source
    assert "const long long c" not in vec.source and "const long long i0" not in vec.source


def test_vector_width_follows_the_widest_full_size_operand():
    assert emit_kernel(single_op_body("add", "float64")).lanes == 2  # 16 bytes
    assert emit_kernel(single_op_body("add", "int32")).lanes == 4
    assert emit_kernel(single_op_body("add", "float32", shapes=((3,),))).lanes == 1  # n < 4
    kernel, _ = _bcast_body(False)  # float64 x with (6, 1) and (1, 7) operands
    assert kernel.lanes == 2 and "w0.v[k]" in kernel.source and "in1[i1]" in kernel.source


def test_index_expressions():
    assert index_expr((4, 5), (4, 5)) == ("i", set())
    assert index_expr((1, 1), (4, 5)) == ("0", set())
    assert index_expr((5,), (4, 5)) == ("(i % 5LL)", set())
    assert index_expr((1, 4, 5), (3, 4, 5)) == ("(i % 20LL)", set())
    expr, axes = index_expr((4, 1), (4, 5))
    assert axes == {0} and expr == "c0"
    expr, axes = index_expr((3, 1, 5), (3, 4, 5))
    assert axes == {0, 2} and expr == "c0 * 5LL + c2"


def test_literals():
    assert inline_literal(np.float32(0.5)) == "((float)0.5)"
    assert inline_literal(np.asarray(2.5)) == "((double)2.5)"
    assert inline_literal(np.int32(-3)) == "((int)-3LL)"
    assert inline_literal(np.bool_(True)) == "true"
    assert inline_literal(np.int64(-(2**63))) == "((long long)(-9223372036854775807LL - 1))"
    assert inline_literal(np.float32(np.inf)) is None  # passed as a one-element array instead
    assert inline_literal(np.zeros(3, np.float32)) is None


def test_unsupported_dtype_raises_naming_it():
    b = GraphBuilder()
    x, y = b.add_input(TensorType((3,), "int32")), b.add_input(TensorType((3,), "int32"))
    node = b.add_node("power", [x, y], {}, [TensorType((3,), "int32")])
    assert "integer power" in unsupported_reason(node)
    with pytest.raises(UnsupportedError, match="power"):
        emit_kernel(b.build(node.outputs))


def _bcast_body(stride_bug: bool):
    b = GraphBuilder()
    x = b.add_input(TensorType((6, 7), "float64"))
    col = b.add_input(TensorType((6, 1), "float64"))
    row = b.add_input(TensorType((1, 7), "float64"))
    t = b.add_node("multiply", [x, col], {}, [TensorType((6, 7), "float64")]).output
    u = b.add_node("add", [t, row], {}, [TensorType((6, 7), "float64")]).output
    return emit_kernel(b.build([u]), stride_bug=stride_bug), [x.type, col.type, row.type]


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("stride_bug", [False, True])
def test_planted_stride_bug_is_caught(stride_bug):
    kernel, types = _bcast_body(stride_bug)
    rng = np.random.default_rng(1)
    x, col, row = (rng.standard_normal(t.shape) for t in types)
    attrs = kernel.attrs()
    (got,) = emulate_fused(attrs, [x, col, row], [TensorType((6, 7), "float64")])
    ok = np.allclose(got, x * col + row, equal_nan=False)
    assert ok != stride_bug, "the emulator comparison must fail exactly for the planted bug"
