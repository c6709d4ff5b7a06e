"""Shape ops: reshape, transpose, broadcast_to, concatenate, and the sugar built on them
(swapaxes, expand_dims, squeeze, stack, sum_to_shape). Indexing ops live in ``index``."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ArgumentError, DTypeError, ShapeError
from ..ir import TensorType
from ..tracer import Tracer
from .core import bind, promote, type_of
from .registry import OpDef, register


def normalize_axis(op: str, axis: int, ndim: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ArgumentError(f"{op}: axis must be an integer, got {axis!r}")
    axis = int(axis)
    if not -ndim <= axis < max(ndim, 1) or (ndim == 0 and axis not in (0, -1)):
        raise ShapeError(f"{op}: axis {axis} is out of range for an array of rank {ndim}")
    return axis % ndim if ndim else 0


def of_shape(types, shape) -> list[TensorType]:
    """The output type of an op that keeps its first operand's dtype and gives it ``shape``."""
    return [TensorType(shape, types[0].dtype)]


# ---- reshape ------------------------------------------------------------------------------
def _reshape_infer(types, shape):
    if TensorType(shape, types[0].dtype).size != types[0].size:
        raise ShapeError(f"reshape: cannot reshape {types[0]} into shape {shape}")
    return of_shape(types, shape)


register(
    OpDef(
        "reshape",
        "shape",
        _reshape_infer,
        lambda xp, a, shape: xp.reshape(a, shape),
        vjp=lambda cts, outs, a, shape: [reshape(cts[0], type_of(a).shape)],
        jvp=lambda ts, outs, a, shape: [reshape(ts[0], shape)],
    )
)


def reshape(x: Any, shape: Sequence[int] | int) -> Any:
    try:  # operator.index: 2.5 is refused, not truncated; a traced size says to make it static
        shape = (
            (operator.index(shape),)
            if isinstance(shape, (int, np.integer))
            else tuple(operator.index(s) for s in shape)
        )
    except TypeError:
        raise ShapeError(
            f"reshape: shape must be an int or a sequence of ints, got {shape!r}"
        ) from None
    t = type_of(x)
    if any(s < -1 for s in shape):
        raise ShapeError(
            f"reshape: invalid dimension in shape {shape}: sizes must be >= 0, or -1 for the "
            "one size to infer"
        )
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: more than one -1 in {shape}")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
        if known == 0 or t.size % known:
            raise ShapeError(f"reshape: cannot reshape {t} into shape {shape}")
        shape = tuple(t.size // known if s == -1 else s for s in shape)
    if shape == t.shape:
        return x
    return bind("reshape", x, shape=shape)


# ---- transpose ----------------------------------------------------------------------------
def _transpose_infer(types, perm):
    if sorted(perm) != list(range(types[0].ndim)):
        raise ShapeError(f"transpose: {perm} is not a permutation of the axes of {types[0]}")
    return of_shape(types, tuple(types[0].shape[p] for p in perm))


def _inverse(perm):
    return tuple(int(i) for i in np.argsort(perm))


register(
    OpDef(
        "transpose",
        "shape",
        _transpose_infer,
        lambda xp, a, perm: xp.transpose(a, perm),
        vjp=lambda cts, outs, a, perm: [transpose(cts[0], _inverse(perm))],
        jvp=lambda ts, outs, a, perm: [transpose(ts[0], perm)],
    )
)


def transpose(x: Any, axes: Sequence[int] | None = None) -> Any:
    nd = type_of(x).ndim
    perm = (
        tuple(range(nd))[::-1]
        if axes is None
        else tuple(normalize_axis("transpose", a, nd) for a in axes)
    )
    if perm == tuple(range(nd)):
        return x
    return bind("transpose", x, perm=perm)


def swapaxes(x: Any, a: int, b: int) -> Any:
    nd = type_of(x).ndim
    perm = list(range(nd))
    a, b = normalize_axis("swapaxes", a, nd), normalize_axis("swapaxes", b, nd)
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(x, perm)


# ---- broadcast_to and its adjoint ---------------------------------------------------------
def _broadcast_infer(types, shape):
    src = types[0].shape
    ok = len(src) <= len(shape) and all(s in (1, d) for s, d in zip(src[::-1], shape[::-1]))
    if not ok:
        raise ShapeError(f"broadcast_to: cannot broadcast {types[0]} to shape {shape}")
    return of_shape(types, shape)


register(
    OpDef(
        "broadcast_to",
        "shape",
        _broadcast_infer,
        lambda xp, a, shape: xp.broadcast_to(a, shape),
        vjp=lambda cts, outs, a, shape: [sum_to_shape(cts[0], type_of(a).shape)],
        jvp=lambda ts, outs, a, shape: [broadcast_to(ts[0], shape)],
    )
)


def broadcast_to(x: Any, shape: Sequence[int]) -> Any:
    shape = tuple(int(s) for s in shape)
    if type_of(x).shape == shape:
        return x
    return bind("broadcast_to", x, shape=shape)


def sum_to_shape(x: Any, shape: tuple[int, ...]) -> Any:
    """Sum a broadcast result back to ``shape`` (the adjoint of broadcasting)."""
    from .reduce import sum as _sum

    xs = type_of(x).shape
    if xs == tuple(shape):
        return x
    lead = len(xs) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and xs[lead + i] != 1
    )
    return reshape(_sum(x, axis=axes), shape)


# ---- expand_dims / squeeze: reshapes ------------------------------------------------------
def expand_dims(x: Any, axis: int | Sequence[int]) -> Any:
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    shape = list(type_of(x).shape)
    nd = len(shape) + len(axes)
    for a in sorted(normalize_axis("expand_dims", a, nd) for a in axes):
        shape.insert(a, 1)
    return reshape(x, shape)


def squeeze(x: Any, axis: int | Sequence[int] | None = None) -> Any:
    shape = type_of(x).shape
    if axis is None:
        axes = {i for i, s in enumerate(shape) if s == 1}
    else:
        axes = {
            normalize_axis("squeeze", a, len(shape))
            for a in ((axis,) if isinstance(axis, (int, np.integer)) else axis)
        }
        bad = [a for a in axes if shape[a] != 1]
        if bad:
            raise ShapeError(f"squeeze: axis {bad[0]} of shape {shape} has size {shape[bad[0]]}")
    return reshape(x, [s for i, s in enumerate(shape) if i not in axes])


# ---- concatenate / stack ------------------------------------------------------------------
def _concat_infer(types, axis):
    first = types[0]
    for t in types[1:]:
        if t.ndim != first.ndim or any(
            a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis
        ):
            raise ShapeError(
                "concatenate: shapes "
                + ", ".join(str(t.shape) for t in types)
                + f" do not match outside axis {axis}"
            )
        if t.dtype != first.dtype:
            raise DTypeError("concatenate: operands must share a dtype")
    shape = list(first.shape)
    shape[axis] = sum(t.shape[axis] for t in types)
    return [TensorType(shape, first.dtype)]


def _concat_vjp(cts, outs, *xs, axis):
    from .index import slice_axis

    grads, start = [], 0
    for x in xs:
        n = type_of(x).shape[axis]
        grads.append(slice_axis(cts[0], axis, start, start + n))
        start += n
    return grads


def _concat_jvp(ts, outs, *xs, axis):
    from .creation import zeros_like

    if all(t is None for t in ts):
        return [None]
    return [concatenate([zeros_like(x) if t is None else t for t, x in zip(ts, xs)], axis)]


def _concat_impl(xp, *arrays, axis, out=None):
    if out is None or xp is np:
        return xp.concatenate(arrays, axis=axis, out=out)
    # CuPy: with more than 8 inputs cupy.concatenate uploads a table of their pointers from the
    # host, which CUDA graph capture refuses (no host-to-device copies while capturing); one
    # copy per input into its slice of ``out`` is what cupy.concatenate does for 8 or fewer
    index, start = [slice(None)] * out.ndim, 0
    for a in arrays:
        index[axis] = slice(start, start + a.shape[axis])
        out[tuple(index)] = a
        start += a.shape[axis]
    return out


register(
    OpDef(
        "concatenate",
        "shape",
        _concat_infer,
        _concat_impl,
        vjp=_concat_vjp,
        jvp=_concat_jvp,
        out_kw=True,
    )
)


def concatenate(xs: Sequence[Any], axis: int = 0) -> Any:
    xs = list(xs)
    if not xs:
        raise ShapeError("concatenate: needs at least one array")
    xs = promote(*xs)
    nd = type_of(xs[0]).ndim
    if nd == 0:
        raise ShapeError("concatenate: zero-dimensional arrays cannot be concatenated")
    if len(xs) == 1:  # a traced value is immutable; an array is copied, as NumPy does
        return xs[0] if isinstance(xs[0], Tracer) else xs[0].copy()
    return bind("concatenate", *xs, axis=normalize_axis("concatenate", axis, nd))


def stack(xs: Sequence[Any], axis: int = 0) -> Any:
    xs = list(xs)
    if not xs:
        raise ShapeError("stack: needs at least one array")
    shapes = {type_of(x).shape for x in xs}
    if len(shapes) > 1:
        raise ShapeError(f"stack: all arrays must have the same shape, got {sorted(shapes)}")
    nd = type_of(xs[0]).ndim + 1
    ax = normalize_axis("stack", axis, nd)
    return concatenate([expand_dims(x, ax) for x in xs], ax)
