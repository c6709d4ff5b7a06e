"""The rewrite rules of ``simplify``: each ``rule(ctx, inputs) -> Value | None`` returns the
node's replacement, or None (emitting nothing) when it does not apply. ``simplify.RULES`` says
which rules serve which op; the module docstring of ``simplify`` says which rewrites are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..ir import GraphBuilder, Node, Value
from ..ops.registry import get_op
from .fold import splat


@dataclass
class Ctx:
    """What a rule sees: the builder to emit into, the node being rewritten, the options."""

    b: GraphBuilder
    node: Node
    unsafe: bool

    @property
    def out(self) -> Value:
        return self.node.outputs[0]

    def emit(self, op: str, inputs: list[Value], **attrs) -> Value:
        types = get_op(op).infer([v.type for v in inputs], **attrs)
        return self.b.add_node(op, inputs, attrs, types, self.node.loc).outputs[0]

    def like_out(self, x: Value) -> Value:
        """``x`` as the node's result: broadcast to the output shape where it is smaller."""
        assert x.type.dtype == self.out.type.dtype, (self.node, x)
        if x.type.shape == self.out.type.shape:
            return x
        return self.emit("broadcast_to", [x], shape=self.out.type.shape)

    def constant(self, number: float) -> Value:
        """A scalar constant of the output's dtype."""
        value = np.asarray(number, dtype=self.out.type.dtype)
        return self.emit("constant", [], value=value)

    def zeros(self) -> Value:
        t = self.out.type
        return self.emit("full", [], shape=t.shape, value=t.dtype.type(0).item(), dtype=t.dtype)


Rule = Callable[[Ctx, list[Value]], Value | None]


# ---- what a value is known to be ---------------------------------------------------------
def _negative_sign(s: np.generic) -> bool:
    return s.dtype.kind == "f" and bool(np.signbit(s))


def _is(v: Value, number: float) -> bool:
    """v is ``number`` everywhere; a zero must be +0.0."""
    s = splat(v)
    return s is not None and bool(s == number) and not (number == 0 and _negative_sign(s))


def _is_neg_zero(v: Value) -> bool:
    s = splat(v)
    return s is not None and s.dtype.kind == "f" and bool(s == 0) and _negative_sign(s)


def _is_int_zero(v: Value) -> bool:
    s = splat(v)
    return s is not None and s.dtype.kind in "biu" and not s


def _is_minus_one(v: Value) -> bool:
    s = splat(v)
    return s is not None and s.dtype.kind in "fi" and bool(s == -1)


def _producer(v: Value, op: str) -> Node | None:
    return v.node if v.node is not None and v.node.op == op else None


# ---- arithmetic identities ---------------------------------------------------------------
def add_zero(c: Ctx, ins: list[Value]) -> Value | None:
    """x + 0 -> x for ints and x + (-0.0) -> x for floats (either side); x + 0.0 if unsafe."""
    for k, other in ((1, 0), (0, 1)):
        z = ins[k]
        if _is_int_zero(z) or _is_neg_zero(z) or (c.unsafe and _is(z, 0)):
            return c.like_out(ins[other])
    return None


def sub_zero(c: Ctx, ins: list[Value]) -> Value | None:
    """x - 0.0 -> x (exact: x - (+0.0) == x + (-0.0)); x - (-0.0) -> x only if unsafe."""
    z = ins[1]
    if _is_int_zero(z) or _is(z, 0) or (c.unsafe and _is_neg_zero(z)):
        return c.like_out(ins[0])
    return None


def zero_sub(c: Ctx, ins: list[Value]) -> Value | None:
    """(-0.0) - x -> -x (exact), 0 - x -> -x for ints; 0.0 - x -> -x only if unsafe."""
    z = ins[0]
    if _is_int_zero(z) or _is_neg_zero(z) or (c.unsafe and _is(z, 0)):
        return c.like_out(c.emit("negative", [ins[1]]))
    return None


def mul_one(c: Ctx, ins: list[Value]) -> Value | None:
    for k, other in ((1, 0), (0, 1)):
        if _is(ins[k], 1):
            return c.like_out(ins[other])
    return None


def mul_minus_one(c: Ctx, ins: list[Value]) -> Value | None:
    for k, other in ((1, 0), (0, 1)):
        if _is_minus_one(ins[k]):
            return c.like_out(c.emit("negative", [ins[other]]))
    return None


def mul_zero(c: Ctx, ins: list[Value]) -> Value | None:
    """x * 0 -> 0: exact for ints and bools; for floats (NaN * 0, inf * 0) only if unsafe."""
    exact = c.out.type.dtype.kind in "biu"
    if any(_is_int_zero(v) for v in ins) or (
        c.unsafe and not exact and any(splat(v) is not None and splat(v) == 0 for v in ins)
    ):
        return c.zeros()
    return None


def div_one(c: Ctx, ins: list[Value]) -> Value | None:
    return c.like_out(ins[0]) if _is(ins[1], 1) else None


def div_minus_one(c: Ctx, ins: list[Value]) -> Value | None:
    return c.like_out(c.emit("negative", [ins[0]])) if _is_minus_one(ins[1]) else None


def involution(op: str) -> Rule:
    """f(f(x)) -> x for negative and logical_not."""

    def rule(c: Ctx, ins: list[Value]) -> Value | None:
        inner = _producer(ins[0], op)
        return inner.inputs[0] if inner is not None else None

    return rule


def same_operands(c: Ctx, ins: list[Value]) -> Value | None:
    """maximum(x, x), minimum(x, x) -> x."""
    return ins[0] if ins[0] is ins[1] else None


def where_same(c: Ctx, ins: list[Value]) -> Value | None:
    return c.like_out(ins[1]) if ins[1] is ins[2] else None


def where_const(c: Ctx, ins: list[Value]) -> Value | None:
    s = splat(ins[0])
    if s is None:
        return None
    return c.like_out(ins[1] if s else ins[2])


def identity(c: Ctx, ins: list[Value]) -> Value | None:
    """stop_gradient is a copy once gradients exist; the optimizer runs after autodiff."""
    return ins[0]


# ---- casts -------------------------------------------------------------------------------
def lossless(src: np.dtype, dst: np.dtype) -> bool:
    """Whether the cast src -> dst represents every value of src exactly: bool to anything,
    ints to wider ints (NumPy's safe casts), ints to floats whose significand holds them
    (int32 -> float64, not int64 -> float64), and floats to wider floats."""
    if src == dst or src.kind == "b":
        return True
    if src.kind in "iu" and dst.kind in "iu":
        return bool(np.can_cast(src, dst, "safe"))
    if src.kind in "iu" and dst.kind == "f":
        return np.iinfo(src).bits - (src.kind == "i") <= np.finfo(dst).nmant + 1
    return src.kind == "f" and dst.kind == "f" and src.itemsize <= dst.itemsize


def cast_same(c: Ctx, ins: list[Value]) -> Value | None:
    return ins[0] if ins[0].type.dtype == c.node.attrs["dtype"] else None


def cast_cast(c: Ctx, ins: list[Value]) -> Value | None:
    """astype(astype(x, A), B) -> astype(x, B) when x -> A loses nothing."""
    inner = _producer(ins[0], "astype")
    if inner is None or not lossless(inner.inputs[0].type.dtype, inner.attrs["dtype"]):
        return None
    x, dtype = inner.inputs[0], c.node.attrs["dtype"]
    return x if x.type.dtype == dtype else c.emit("astype", [x], dtype=dtype)


# ---- shape ops ---------------------------------------------------------------------------
def same_shape(c: Ctx, ins: list[Value]) -> Value | None:
    """reshape / broadcast_to to the operand's own shape -> x."""
    return ins[0] if ins[0].type.shape == c.out.type.shape else None


def chain(op: str) -> Rule:
    """reshape(reshape(x)) and broadcast_to(broadcast_to(x)) -> one op on x (or x)."""

    def rule(c: Ctx, ins: list[Value]) -> Value | None:
        inner = _producer(ins[0], op)
        if inner is None:
            return None
        x = inner.inputs[0]
        return x if x.type.shape == c.out.type.shape else c.emit(op, [x], shape=c.out.type.shape)

    return rule


def transpose_identity(c: Ctx, ins: list[Value]) -> Value | None:
    perm = tuple(c.node.attrs["perm"])
    return ins[0] if perm == tuple(range(len(perm))) else None


def transpose_transpose(c: Ctx, ins: list[Value]) -> Value | None:
    inner = _producer(ins[0], "transpose")
    if inner is None:
        return None
    p1, p2 = inner.attrs["perm"], c.node.attrs["perm"]
    perm = tuple(int(p1[k]) for k in p2)
    x = inner.inputs[0]
    return x if perm == tuple(range(len(perm))) else c.emit("transpose", [x], perm=perm)


# ---- reductions --------------------------------------------------------------------------
def reduce_unit_axes(c: Ctx, ins: list[Value]) -> Value | None:
    """sum/max/min over axes of size 1 (or none) -> reshape (sum of ints: astype + reshape).

    A float sum starts from +0.0 (NumPy and CuPy: ``sum([-0.0])`` is ``+0.0``), so by default
    it becomes ``reshape(x + 0.0)``: an elementwise op that fusion absorbs, exact for -0.0.
    """
    x, axis = ins[0], c.node.attrs["axis"]
    if any(x.type.shape[a] != 1 for a in axis):
        return None
    out = c.out.type
    if x.type.dtype != out.dtype:
        x = c.emit("astype", [x], dtype=out.dtype)
    elif c.node.op == "sum" and out.dtype.kind == "f" and not c.unsafe:
        x = c.emit("add", [x, c.constant(0)])
    return x if x.type.shape == out.shape else c.emit("reshape", [x], shape=out.shape)


def argmax_unit_axis(c: Ctx, ins: list[Value]) -> Value | None:
    return c.zeros() if ins[0].type.shape[c.node.attrs["axis"]] == 1 else None


# ---- implicit broadcasting of elementwise operands ----------------------------------------
def implicit_broadcast(c: Ctx, ins: list[Value]) -> Value | None:
    """An elementwise operand that is ``broadcast_to(y)`` or a splat constant/full: use y (or a
    0-d constant) and let the op broadcast, when that leaves the output shape unchanged."""
    shapes = [v.type.shape for v in ins]
    for k, v in enumerate(ins):
        if v.type.ndim == 0:
            continue
        bcast = _producer(v, "broadcast_to")
        s = splat(v) if bcast is None else None
        if bcast is None and s is None:
            continue
        smaller = bcast.inputs[0].type.shape if bcast is not None else ()
        rest = shapes[:k] + [smaller] + shapes[k + 1 :]
        if tuple(np.broadcast_shapes(*rest)) != c.out.type.shape:
            continue
        new = bcast.inputs[0] if bcast is not None else c.emit("constant", [], value=np.asarray(s))
        return c.emit(c.node.op, [*ins[:k], new, *ins[k + 1 :]], **c.node.attrs)
    return None
