"""Elementwise, matrix and reduction converters."""

from __future__ import annotations

import functools

import numpy as np

from .. import ops as _ops
from .table import NodeCtx, dtype_of, is_const, opt, register

gg = _ops.API

_UNARY = {
    "Abs": "abs",
    "Neg": "negative",
    "Exp": "exp",
    "Log": "log",
    "Sqrt": "sqrt",
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Sin": "sin",
    "Cos": "cos",
    "Tan": "tan",
    "Atan": "arctan",
    "Erf": "erf",
    "Floor": "floor",
    "Ceil": "ceil",
    "Reciprocal": "reciprocal",
    "Sign": "sign",
    "Softplus": "softplus",
    "Not": "logical_not",
    "IsNaN": "isnan",
    "Round": "round",
}
_BINARY = {
    "Add": "add",
    "Sub": "subtract",
    "Mul": "multiply",
    "Equal": "equal",
    "Less": "less",
    "Greater": "greater",
    "LessOrEqual": "less_equal",
    "GreaterOrEqual": "greater_equal",
    "And": "logical_and",
    "Or": "logical_or",
    "Xor": "logical_xor",
}


def _unary(name: str):
    return lambda node, ins, attrs: gg[name](ins[0])


def _binary(name: str):
    return lambda node, ins, attrs: gg[name](ins[0], ins[1])


for _t, _n in _UNARY.items():
    register(_t)(_unary(_n))
for _t, _n in _BINARY.items():
    register(_t)(_binary(_n))


@register("Identity", "Dropout")
def _identity(node: NodeCtx, ins: list, attrs: dict):
    # Dropout at inference (training_mode absent or a constant False) is the identity; its
    # optional mask output is all True.
    if node.op_type == "Dropout":
        training = opt(ins, 2)
        if training is not None and bool(node.const(training, "training_mode")):
            raise node.unsupported("Dropout with training_mode=True")
        if node.n_outputs > 1:
            return ins[0], np.ones(tuple(ins[0].shape), dtype=bool)
    return ins[0]


@register("Div")
def _div(node: NodeCtx, ins: list, attrs: dict):
    a, b = ins
    if np.issubdtype(dtype_of(a), np.integer):
        # ONNX integer division truncates toward zero; fold it when both operands are known.
        if is_const(a) and is_const(b):
            return (np.trunc(np.asarray(a) / np.asarray(b))).astype(dtype_of(a))
        raise node.unsupported("integer Div on computed values")
    return gg["divide"](a, b)


@register("Pow")
def _pow(node: NodeCtx, ins: list, attrs: dict):
    a, b = ins
    if is_const(b) and dtype_of(b) != dtype_of(a):
        b = np.asarray(b).astype(dtype_of(a))  # ONNX Pow keeps the base's type
    return gg["power"](a, b)


def _variadic(name: str):
    def conv(node: NodeCtx, ins: list, attrs: dict):
        return functools.reduce(gg[name], ins)

    return conv


register("Sum")(_variadic("add"))
register("Max")(_variadic("maximum"))
register("Min")(_variadic("minimum"))


@register("Mean")
def _mean(node: NodeCtx, ins: list, attrs: dict):
    return gg["divide"](functools.reduce(gg["add"], ins), np.asarray(len(ins), dtype_of(ins[0])))


@register("Where")
def _where(node: NodeCtx, ins: list, attrs: dict):
    return gg["where"](*ins)


def _scalar(v: float, like) -> np.ndarray:
    return np.asarray(v, dtype=dtype_of(like))


@register("PRelu")
def _prelu(node: NodeCtx, ins: list, attrs: dict):
    x, slope = ins
    if (
        node.opset < 7
        and len(slope.shape) == 1
        and len(x.shape) > 2
        and slope.shape[0] == x.shape[1]
    ):
        # Opset 6 broadcast a per-channel slope over the spatial dims (legacy broadcasting).
        slope = gg["reshape"](slope, (slope.shape[0],) + (1,) * (len(x.shape) - 2))
    return gg["where"](gg["less"](x, _scalar(0, x)), gg["multiply"](x, slope), x)


@register("LeakyRelu")
def _leaky(node: NodeCtx, ins: list, attrs: dict):
    return gg["leaky_relu"](ins[0], attrs.get("alpha", 0.01))


@register("Elu")
def _elu(node: NodeCtx, ins: list, attrs: dict):
    return gg["elu"](ins[0], attrs.get("alpha", 1.0))


@register("Selu")
def _selu(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    alpha = attrs.get("alpha", 1.67326319217681884765625)
    gamma = attrs.get("gamma", 1.05070102214813232421875)
    neg = gg["multiply"](_scalar(alpha, x), gg["expm1"](gg["minimum"](x, _scalar(0, x))))
    pos = gg["where"](gg["greater"](x, _scalar(0, x)), x, neg)
    return gg["multiply"](_scalar(gamma, x), pos)


@register("HardSigmoid")
def _hard_sigmoid(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    y = gg["add"](
        gg["multiply"](x, _scalar(attrs.get("alpha", 0.2), x)), _scalar(attrs.get("beta", 0.5), x)
    )
    return gg["clip"](y, _scalar(0, x), _scalar(1, x))


@register("Gelu")
def _gelu(node: NodeCtx, ins: list, attrs: dict):
    approx = attrs.get("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    return gg["gelu"](ins[0], approximate="tanh" if approx == "tanh" else "none")


@register("Shrink")
def _shrink(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    lambd, bias = attrs.get("lambd", 0.5), attrs.get("bias", 0.0)
    lo = gg["add"](x, _scalar(bias, x))
    hi = gg["subtract"](x, _scalar(bias, x))
    zero = gg["zeros_like"](x)
    return gg["where"](
        gg["less"](x, _scalar(-lambd, x)),
        lo,
        gg["where"](gg["greater"](x, _scalar(lambd, x)), hi, zero),
    )


@register("Clip")
def _clip(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    if node.opset < 11:
        lo, hi = attrs.get("min"), attrs.get("max")
        lo = None if lo is None else _scalar(lo, x)
        hi = None if hi is None else _scalar(hi, x)
    else:
        lo, hi = opt(ins, 1), opt(ins, 2)
    return gg["clip"](x, lo, hi)


@register("Cast")
def _cast(node: NodeCtx, ins: list, attrs: dict):
    from onnx import helper

    return gg["astype"](ins[0], np.dtype(helper.tensor_dtype_to_np_dtype(attrs["to"])))


@register("CastLike")
def _cast_like(node: NodeCtx, ins: list, attrs: dict):
    return gg["astype"](ins[0], dtype_of(ins[1]))


@register("MatMul")
def _matmul(node: NodeCtx, ins: list, attrs: dict):
    return gg["matmul"](ins[0], ins[1])


@register("Gemm")
def _gemm(node: NodeCtx, ins: list, attrs: dict):
    a, b, c = ins[0], ins[1], opt(ins, 2)
    if attrs.get("transA", 0):
        a = gg["transpose"](a)
    if attrs.get("transB", 0):
        b = gg["transpose"](b)
    y = gg["matmul"](a, b)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = gg["multiply"](y, _scalar(alpha, y))
    if c is not None:
        y = gg["add"](y, c if beta == 1.0 else gg["multiply"](c, _scalar(beta, y)))
    return y


_REDUCE = {
    "ReduceSum": "sum",
    "ReduceMean": "mean",
    "ReduceMax": "max",
    "ReduceMin": "min",
    "ReduceProd": "prod",
}
# The opset from which each reduction takes its axes as an input instead of an attribute.
_AXES_INPUT_FROM = {"ReduceSum": 13}


def reduction(name):
    """A Reduce* converter around ``gg[name]`` or a function ``(x, axis, keepdims)``."""
    fn = gg[name] if isinstance(name, str) else name

    def conv(node: NodeCtx, ins: list, attrs: dict):
        x = ins[0]
        if node.opset >= _AXES_INPUT_FROM.get(node.op_type, 18):
            axes = node.ints(opt(ins, 1), "axes")
        else:
            axes = attrs.get("axes")
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = None
        else:
            axes = tuple(int(a) for a in axes)
        return fn(x, axis=axes, keepdims=bool(attrs.get("keepdims", 1)))

    return conv


for _t, _n in _REDUCE.items():
    register(_t)(reduction(_n))


def _arg(name: str):
    def conv(node: NodeCtx, ins: list, attrs: dict):
        if attrs.get("select_last_index", 0):
            raise node.unsupported("select_last_index=1")
        axis = attrs.get("axis", 0)
        y = gg[name](ins[0], axis=axis)
        if attrs.get("keepdims", 1):
            y = gg["expand_dims"](y, axis)
        return gg["astype"](y, np.int64)

    return conv


register("ArgMax")(_arg("argmax"))
register("ArgMin")(_arg("argmin"))


@register("HardSwish")
def _hard_swish(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]  # x * max(0, min(1, x/6 + 1/2)), as ONNX (alpha 1/6, beta 0.5)
    return gg["multiply"](x, _hard_sigmoid(node, [x], {"alpha": 1 / 6, "beta": 0.5}))


@register("Softsign")
def _softsign(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    return gg["divide"](x, gg["add"](gg["abs"](x), _scalar(1, x)))


@register("CumSum")
def _cumsum(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    axis = int(node.const(ins[1], "axis").reshape(-1)[0]) % len(x.shape)
    rev = attrs.get("reverse", 0)
    if rev:
        x = gg["flip"](x, axis)
    y = gg["cumsum"](x, axis=axis)
    if attrs.get("exclusive", 0):
        y = gg["subtract"](y, x)  # exclusive: the sum of the elements strictly before
    return gg["flip"](y, axis) if rev else y


@register("Trilu")
def _trilu(node: NodeCtx, ins: list, attrs: dict):
    k = opt(ins, 1)
    k = 0 if k is None else int(node.const(k, "k").reshape(-1)[0])
    return gg["triu" if attrs.get("upper", 1) else "tril"](ins[0], k)
