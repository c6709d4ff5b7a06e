"""matmul with NumPy semantics: batched, broadcasting, 1-D operands promoted and squeezed."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..ir import TensorType
from .core import bind, promote, type_of
from .elementwise import add, broadcast_shapes
from .registry import OpDef, register
from .shape import reshape, sum_to_shape, swapaxes


def _matmul_infer(types):
    a, b = types
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError(f"matmul: operands must be at least 2-D here, got {a} and {b}")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"matmul: contraction dimensions differ: {a.shape} @ {b.shape} "
            f"({a.shape[-1]} != {b.shape[-2]})"
        )
    if a.dtype != b.dtype or a.dtype.kind == "b":
        raise ShapeError(f"matmul: operands must share a numeric dtype, got {a.dtype}, {b.dtype}")
    batch = broadcast_shapes("matmul", [a.shape[:-2], b.shape[:-2]])
    return [TensorType(batch + (a.shape[-2], b.shape[-1]), a.dtype)]


def _matmul_vjp(cts, outs, a, b):
    g = cts[0]
    return [
        sum_to_shape(matmul(g, swapaxes(b, -1, -2)), type_of(a).shape),
        sum_to_shape(matmul(swapaxes(a, -1, -2), g), type_of(b).shape),
    ]


def _matmul_jvp(ts, outs, a, b):
    ta, tb = ts
    terms = [matmul(ta, b) if ta is not None else None, matmul(a, tb) if tb is not None else None]
    terms = [t for t in terms if t is not None]
    if not terms:
        return [None]
    return [terms[0] if len(terms) == 1 else add(*terms)]


register(
    OpDef(
        "matmul",
        "linalg",
        lambda types: _matmul_infer(types),
        lambda xp, a, b, out=None: xp.matmul(a, b, out=out),
        vjp=_matmul_vjp,
        jvp=_matmul_jvp,
        out_kw=True,
    )
)


def matmul(a: Any, b: Any) -> Any:
    """Matrix product as np.matmul: 1-D operands are promoted to matrices and squeezed back."""
    a, b = promote(a, b)
    ta, tb = type_of(a), type_of(b)
    if ta.ndim == 0 or tb.ndim == 0:
        raise ShapeError(f"matmul: scalar operands are not allowed ({ta} @ {tb}); use multiply")
    a2 = reshape(a, (1,) + ta.shape) if ta.ndim == 1 else a
    b2 = reshape(b, tb.shape + (1,)) if tb.ndim == 1 else b
    out = bind("matmul", a2, b2)
    shape = type_of(out).shape
    if ta.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if tb.ndim == 1:
        shape = shape[:-1]
    return reshape(out, shape)


def dot(a: Any, b: Any) -> Any:
    return matmul(a, b)


__all__ = ["matmul", "dot", "np"]
