"""Composite converters: activations, norm-like reductions, depth/space rearrangements."""

from __future__ import annotations

import numpy as np

from .. import ops as _ops
from .ops_math import reduction
from .table import NodeCtx, dtype_of, register, shape_of

gg = _ops.API


def _c(v: float, like) -> np.ndarray:
    return np.asarray(v, dtype=dtype_of(like))


@register("Mod")
def _mod(node: NodeCtx, ins: list, attrs: dict):
    a, b = ins
    if attrs.get("fmod", 0):
        raise node.unsupported("fmod=1 (C fmod: the sign of the dividend)")
    if np.issubdtype(dtype_of(a), np.floating):
        raise node.unsupported("Mod of floats without fmod=1 (the spec requires fmod=1)")
    return gg["remainder"](a, b)  # integers: the sign of the divisor, as Python and NumPy


@register("Mish")
def _mish(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    return gg["multiply"](x, gg["tanh"](gg["softplus"](x)))


@register("Celu")
def _celu(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    alpha = attrs.get("alpha", 1.0)
    neg = gg["multiply"](
        _c(alpha, x), gg["expm1"](gg["divide"](gg["minimum"](x, _c(0, x)), _c(alpha, x)))
    )
    return gg["add"](gg["maximum"](x, _c(0, x)), neg)


@register("ThresholdedRelu")
def _thresholded_relu(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    return gg["where"](gg["greater"](x, _c(attrs.get("alpha", 1.0), x)), x, gg["zeros_like"](x))


def _logsumexp(x, axis, keepdims):
    m = gg["stop_gradient"](gg["max"](x, axis=axis, keepdims=True))
    y = gg["add"](
        gg["log"](gg["sum"](gg["exp"](gg["subtract"](x, m)), axis=axis, keepdims=True)), m
    )
    return y if keepdims else gg["squeeze"](y, axis)


register("ReduceL1")(reduction(lambda x, axis, keepdims: gg["sum"](gg["abs"](x), axis, keepdims)))
register("ReduceL2")(
    reduction(lambda x, axis, keepdims: gg["sqrt"](gg["sum"](gg["square"](x), axis, keepdims)))
)
register("ReduceSumSquare")(
    reduction(lambda x, axis, keepdims: gg["sum"](gg["square"](x), axis, keepdims))
)
register("ReduceLogSum")(
    reduction(lambda x, axis, keepdims: gg["log"](gg["sum"](x, axis, keepdims)))
)
register("ReduceLogSumExp")(reduction(_logsumexp))


@register("DepthToSpace")
def _depth_to_space(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    b = int(attrs["blocksize"])
    n, c, h, w = shape_of(x)
    mode = attrs.get("mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode == "DCR":
        y = gg["transpose"](gg["reshape"](x, (n, b, b, c // b // b, h, w)), (0, 3, 4, 1, 5, 2))
    else:  # CRD
        y = gg["transpose"](gg["reshape"](x, (n, c // b // b, b, b, h, w)), (0, 1, 4, 2, 5, 3))
    return gg["reshape"](y, (n, c // b // b, h * b, w * b))


@register("SpaceToDepth")
def _space_to_depth(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    b = int(attrs["blocksize"])
    n, c, h, w = shape_of(x)
    y = gg["transpose"](gg["reshape"](x, (n, c, h // b, b, w // b, b)), (0, 3, 5, 1, 2, 4))
    return gg["reshape"](y, (n, c * b * b, h // b, w // b))
