"""Reductions: sum, max, min, argmax; mean is sugar. Axes are canonical sorted tuples."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from ..errors import ArgumentError, ShapeError
from ..ir import TensorType
from ..tracer import Tracer
from .core import bind, type_of
from .half import accumulate_in_float32
from .registry import OpDef, register
from .shape import broadcast_to, normalize_axis, reshape


def canonical_axes(op: str, axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axes = (axis,)
    elif isinstance(axis, (tuple, list)):
        axes = tuple(axis)
    else:
        raise ArgumentError(f"{op}: axis must be None, an integer or a tuple of them, got {axis!r}")
    norm = tuple(sorted(normalize_axis(op, a, ndim) for a in axes))
    if len(set(norm)) != len(norm):
        raise ShapeError(f"{op}: repeated axis in {axis}")
    return norm


def reduced_shape(shape, axis, keepdims) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axis else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axis)


def _sum_dtype(dt: np.dtype) -> np.dtype:
    return np.dtype(np.int64) if dt.kind in "biu" else dt


def _sum_impl(xp, a, axis, keepdims, out=None):
    dt = _sum_dtype(a.dtype)
    if xp is np:  # np.sum is a Python wrapper of add.reduce: ~3 us of a small sum (a loop body)
        return np.add.reduce(a, axis=axis, dtype=dt, out=out, keepdims=keepdims)
    return xp.sum(a, axis=axis, keepdims=keepdims, dtype=dt, out=out)


def _reduce_infer(op, dtype_rule):
    def infer(types, axis, keepdims):
        t = types[0]
        if op in ("max", "min") and any(t.shape[a] == 0 for a in axis):
            raise ShapeError(f"{op}: zero-size reduction over axis {axis} of {t} has no identity")
        return [TensorType(reduced_shape(t.shape, axis, keepdims), dtype_rule(t.dtype))]

    return infer


def _expand_back(g, x, axis, keepdims):
    """Broadcast a reduced value back over the reduced axes of x."""
    shape = type_of(x).shape
    if not keepdims:
        g = reshape(g, reduced_shape(shape, axis, True))
    return broadcast_to(g, shape)


def _sum_vjp(cts, outs, x, axis, keepdims):
    g = cts[0]
    if type_of(g).dtype != type_of(x).dtype:
        return [None]
    return [_expand_back(g, x, axis, keepdims)]


def _extreme_share(x, out, axis, keepdims):
    """(hit, 1/count): which entries attain the max (or min) and the share of the gradient
    each gets. Ties split it evenly; where the result is NaN the NaN entries attain it (as
    torch.max). Applied by selection: a cotangent of inf must not meet a 0 mask (inf * 0)."""
    from .elementwise import astype, divide, equal, logical_and, logical_or, not_equal, scalar_like

    full = _expand_back(out, x, axis, keepdims)
    both_nan = logical_and(not_equal(x, x), not_equal(full, full))
    hit = logical_or(equal(x, full), both_nan)
    count = sum(astype(hit, type_of(x).dtype), axis=axis, keepdims=True)
    return hit, divide(scalar_like(1, x), count)


def _extreme_vjp(cts, outs, x, axis, keepdims):
    from .elementwise import multiply, scalar_like, where

    hit, share = _extreme_share(x, outs[0], axis, keepdims)
    g = _expand_back(multiply(_keep(cts[0], axis, keepdims), share), x, axis, True)
    return [where(hit, g, scalar_like(0, g))]


def _extreme_jvp(ts, outs, x, axis, keepdims):
    from .elementwise import multiply, scalar_like, where

    hit, share = _extreme_share(x, outs[0], axis, keepdims)
    picked = sum(where(hit, ts[0], scalar_like(0, ts[0])), axis=axis, keepdims=True)
    r = multiply(picked, share)
    return [r if keepdims else reshape(r, reduced_shape(type_of(x).shape, axis, False))]


def _keep(g, axis, keepdims):
    """A reduced value in its keepdims shape."""
    if keepdims:
        return g
    shape = type_of(g).shape
    full_rank = len(shape) + len(axis)
    dims, it = [], iter(shape)
    for i in range(full_rank):
        dims.append(1 if i in axis else next(it))
    return reshape(g, tuple(dims))


register(
    OpDef(
        "sum",
        "reduce",
        _reduce_infer("sum", _sum_dtype),
        _sum_impl,
        vjp=_sum_vjp,
        jvp=lambda ts, outs, x, **k: [sum(ts[0], **k)],
        out_kw=True,
    )
)
for _name, _fn in (("max", "amax"), ("min", "amin")):
    register(
        OpDef(
            _name,
            "reduce",
            _reduce_infer(_name, lambda d: d),
            lambda xp, a, axis, keepdims, out=None, _fn=_fn: getattr(xp, _fn)(
                a, axis=axis, keepdims=keepdims, out=out
            ),
            vjp=_extreme_vjp,
            jvp=_extreme_jvp,
            out_kw=True,
        )
    )


def _reduce(op: str, x: Any, axis: Any, keepdims: bool) -> Any:
    t = type_of(x)
    axes = canonical_axes(op, axis, t.ndim)
    if op != "sum" and not axes and isinstance(x, Tracer):
        return x  # nothing to reduce; eagerly the impl still runs, so the result is a new array
    return bind(op, x, axis=axes, keepdims=bool(keepdims))


@accumulate_in_float32
def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return _reduce("sum", x, axis, keepdims)


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return _reduce("max", x, axis, keepdims)


def min(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    return _reduce("min", x, axis, keepdims)


@accumulate_in_float32
def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    from .core import to_float
    from .elementwise import divide

    x = to_float(x) if type_of(x).dtype.kind != "f" else x
    t = type_of(x)
    axes = canonical_axes("mean", axis, t.ndim)
    count = int(np.prod([t.shape[a] for a in axes], dtype=np.int64))
    return divide(sum(x, axes, keepdims), np.asarray(builtins.max(count, 0), t.dtype)[()])


def _arg_reduce_infer(name: str):
    def infer(types, axis, keepdims):
        t = types[0]
        if t.shape[axis] == 0:
            raise ShapeError(f"{name}: attempt to get {name} of an empty axis of {t}")
        return [TensorType(reduced_shape(t.shape, (axis,), keepdims), np.int64)]

    return infer


for _name in ("argmax", "argmin"):
    register(
        OpDef(
            _name,
            "nondiff",
            _arg_reduce_infer(_name),
            lambda xp, a, axis, keepdims, _name=_name: getattr(xp, _name)(
                a, axis=axis, keepdims=keepdims
            ),
            differentiable=False,
        )
    )


def _arg_reduce(op: str, x: Any, axis: int | None, keepdims: bool) -> Any:
    t = type_of(x)
    if axis is None:
        flat = bind(op, reshape(x, (-1,)), axis=0, keepdims=False)
        return reshape(flat, (1,) * t.ndim) if keepdims else flat
    return bind(op, x, axis=normalize_axis(op, axis, t.ndim), keepdims=bool(keepdims))


def argmax(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
    return _arg_reduce("argmax", x, axis, keepdims)


def argmin(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
    return _arg_reduce("argmin", x, axis, keepdims)
