"""The op set. Importing this package registers every op; API lists the public functions."""

from __future__ import annotations

from ..ir import TensorType
from ..tracer import with_user_loc
from .core import bind
from .half import bfloat16_via_float32
from .registry import REGISTRY, OpDef, get_op, register

register(
    OpDef(
        "constant",
        "internal",
        lambda types, value: [TensorType(value.shape, value.dtype)],
        lambda xp, value: xp.asarray(value),
        doc="a host array baked into the graph",
    )
)

from . import (  # noqa: E402
    contract,
    conv,
    creation,
    elementwise,
    fused,  # noqa: E402,F401  (registers the "fused" op of the fusion pass)
    fused_reduce,  # noqa: F401  (registers "fused_reduce", the reduction fusion's op)
    index,
    linalg,
    math_more,  # noqa: F401  (registers its ops into elementwise.API)
    nn,
    norm,
    pool,
    reduce,
    reduce_more,
    resample,
    rng,
    select,
    shape,
    shape_more,
)

API: dict = {
    **elementwise.API,
    **{n: getattr(reduce, n) for n in ("sum", "mean", "max", "min", "argmax")},
    "matmul": linalg.matmul,
    "dot": linalg.dot,
    **{
        n: getattr(shape, n)
        for n in (
            "reshape",
            "transpose",
            "swapaxes",
            "broadcast_to",
            "expand_dims",
            "squeeze",
            "concatenate",
            "stack",
            "sum_to_shape",
        )
    },
    "getitem": index.getitem,
    "take": index.take,
    **{
        n: getattr(nn, n)
        for n in ("softmax", "log_softmax", "logsumexp", "layer_norm", "gelu", "var")
    },
    **{
        n: getattr(creation, n)
        for n in ("zeros", "ones", "full", "arange", "zeros_like", "ones_like", "full_like")
    },
    "conv": conv.conv,
    "conv_transpose": conv.conv_transpose,
    **{n: getattr(pool, n) for n in ("max_pool", "avg_pool", "global_avg_pool", "global_max_pool")},
    **{n: getattr(norm, n) for n in ("batch_norm", "group_norm", "instance_norm", "rms_norm")},
    **{
        n: getattr(reduce_more, n)
        for n in ("prod", "argmin", "any", "all", "std", "norm", "cumsum", "cumprod", "cummax")
    },
    **{
        n: getattr(shape_more, n)
        for n in (
            "flip",
            "pad",
            "tile",
            "repeat",
            "roll",
            "split",
            "ravel",
            "moveaxis",
            "tril",
            "triu",
            "linspace",
            "eye",
        )
    },
    **{
        n: getattr(select, n)
        for n in (
            "take_along_axis",
            "gather",
            "scatter",
            "scatter_add",
            "argsort",
            "sort",
            "top_k",
            "one_hot",
            "segment_sum",
            "at",
        )
    },
    **{
        n: getattr(contract, n)
        for n in ("diagonal", "trace", "einsum", "tensordot", "outer", "meshgrid")
    },
    "resize": resample.resize,
    "upsample": resample.upsample,
    "dropout": rng.dropout,
}

# Errors raised before bind (a bad axis, index or shape argument) name the user's line too;
# bfloat16 operands compute in float32 (ops/half.py), except in the cast itself.
API = {
    name: with_user_loc(fn if name == "astype" else bfloat16_via_float32(fn))
    for name, fn in API.items()
}

__all__ = ["API", "REGISTRY", "OpDef", "bind", "get_op", "register"]
