"""Shape and indexing ops: reshape, transpose, broadcast_to, concatenate, slice, take, and the
sugar built on them (expand_dims, squeeze, stack, getitem, sum_to_shape)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import TensorType
from .core import bind, promote, type_of
from .registry import OpDef, register


def normalize_axis(op: str, axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1) or (ndim == 0 and axis not in (0, -1)):
        raise ShapeError(f"{op}: axis {axis} is out of range for an array of rank {ndim}")
    return axis % ndim if ndim else 0


def _t(types, shape) -> list[TensorType]:
    return [TensorType(shape, types[0].dtype)]


# ---- reshape ------------------------------------------------------------------------------
def _reshape_infer(types, shape):
    if TensorType(shape, types[0].dtype).size != types[0].size:
        raise ShapeError(f"reshape: cannot reshape {types[0]} into shape {shape}")
    return _t(types, shape)


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
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    t = type_of(x)
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
    return _t(types, tuple(types[0].shape[p] for p in perm))


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
        else tuple(normalize_axis("transpose", int(a), nd) for a in axes)
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
    return _t(types, shape)


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
    for a in sorted(normalize_axis("expand_dims", int(a), nd) for a in axes):
        shape.insert(a, 1)
    return reshape(x, shape)


def squeeze(x: Any, axis: int | Sequence[int] | None = None) -> Any:
    shape = type_of(x).shape
    if axis is None:
        axes = {i for i, s in enumerate(shape) if s == 1}
    else:
        axes = {
            normalize_axis("squeeze", int(a), len(shape))
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


register(
    OpDef(
        "concatenate",
        "shape",
        _concat_infer,
        lambda xp, *arrays, axis, out=None: xp.concatenate(arrays, axis=axis, out=out),
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
    if len(xs) == 1:
        return xs[0]
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


# ---- slicing (basic indexing) -------------------------------------------------------------
def _slice_infer(types, starts, stops, steps):
    shape = tuple(len(range(a, b, s)) for a, b, s in zip(starts, stops, steps))
    return _t(types, shape)


def _slices(starts, stops, steps):
    return tuple(
        slice(a, None if (b < 0 and s < 0) else b, s) for a, b, s in zip(starts, stops, steps)
    )


def _scatter_infer(types, shape, starts, stops, steps):
    return _t(types, shape)


def _scatter_impl(xp, g, shape, starts, stops, steps):
    out = xp.zeros(shape, dtype=g.dtype)
    out[_slices(starts, stops, steps)] = g
    return out


register(
    OpDef(
        "slice",
        "index",
        _slice_infer,
        lambda xp, a, starts, stops, steps: a[_slices(starts, stops, steps)],
        vjp=lambda cts, outs, a, **k: [bind("slice_scatter", cts[0], shape=type_of(a).shape, **k)],
        jvp=lambda ts, outs, a, **k: [bind("slice", ts[0], **k)],
    )
)
register(
    OpDef(
        "slice_scatter",
        "index",
        _scatter_infer,
        _scatter_impl,
        vjp=lambda cts, outs, g, shape, **k: [bind("slice", cts[0], **k)],
        jvp=lambda ts, outs, g, shape, **k: [bind("slice_scatter", ts[0], shape=shape, **k)],
        doc="zeros of `shape` with the operand written at the slice (the adjoint of slice)",
    )
)


def slice_axis(x: Any, axis: int, start: int, stop: int, step: int = 1) -> Any:
    shape = type_of(x).shape
    starts = [0] * len(shape)
    stops = list(shape)
    steps = [1] * len(shape)
    starts[axis], stops[axis], steps[axis] = start, stop, step
    return _slice(x, starts, stops, steps)


def _slice(x, starts, stops, steps):
    shape = type_of(x).shape
    if list(starts) == [0] * len(shape) and list(stops) == list(shape) and set(steps) <= {1}:
        return x
    return bind("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


def getitem(x: Any, idx: Any) -> Any:
    """Basic indexing (ints, slices with steps, None, Ellipsis); an integer array index on
    the first axis becomes ``take``."""
    from .core import is_tensor

    if is_tensor(idx):
        return take(x, idx, axis=0)
    idx = idx if isinstance(idx, tuple) else (idx,)
    shape = type_of(x).shape
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if sum(1 for i in idx if i is Ellipsis) > 1:
        raise ShapeError("index: an index can only have a single ellipsis ('...')")
    if n_real > len(shape):
        raise ShapeError(f"index: too many indices ({n_real}) for an array of shape {shape}")
    expanded: list[Any] = []
    for i in idx:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (len(shape) - n_real))
        else:
            expanded.append(i)
    expanded.extend([slice(None)] * (len(shape) - sum(1 for i in expanded if i is not None)))
    starts, stops, steps, out_shape, dim = [], [], [], [], 0
    for i in expanded:
        if i is None:
            out_shape.append(1)
            continue
        n = shape[dim]
        if isinstance(i, slice):
            a, b, s = i.indices(n)
            starts.append(a), stops.append(b), steps.append(s)
            out_shape.append(len(range(a, b, s)))
        elif isinstance(i, (int, np.integer)) and not isinstance(i, bool):
            if not -n <= i < n:
                raise ShapeError(f"index: index {i} is out of bounds for axis {dim} with size {n}")
            i = int(i) % n
            starts.append(i), stops.append(i + 1), steps.append(1)
        else:
            raise ShapeError(f"index: unsupported index {i!r} (basic indexing only)")
        dim += 1
    return reshape(_slice(x, starts, stops, steps), out_shape)


# ---- take (gather along an axis) ----------------------------------------------------------
def _take_infer(types, axis):
    x, idx = types
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"take: indices must be integers, got {idx.dtype}")
    return [TensorType(x.shape[:axis] + idx.shape + x.shape[axis + 1 :], x.dtype)]


def _take_grad_infer(types, axis, dim):
    g, idx = types
    shape = g.shape[:axis] + (dim,) + g.shape[axis + idx.ndim :]
    return [TensorType(shape, g.dtype)]


def _take_grad_impl(xp, g, idx, axis, dim):
    shape = g.shape[:axis] + (dim,) + g.shape[axis + idx.ndim :]
    out = xp.zeros(shape, dtype=g.dtype)
    # move the gathered axes to the front so one add.at scatters them all
    lead = tuple(range(axis, axis + idx.ndim))
    rest = tuple(i for i in range(g.ndim) if i not in lead)
    g2 = xp.transpose(g, lead + rest).reshape((idx.size,) + tuple(g.shape[i] for i in rest))
    o2 = xp.moveaxis(out, axis, 0)
    if xp is np:
        np.add.at(o2, idx.reshape(-1), g2)
    else:
        import cupyx

        cupyx.scatter_add(o2, idx.reshape(-1), g2)
    return out


register(
    OpDef(
        "take",
        "index",
        _take_infer,
        lambda xp, a, idx, axis: xp.take(a, idx, axis=axis),
        vjp=lambda cts, outs, a, idx, axis: [
            bind("take_grad", cts[0], idx, axis=axis, dim=type_of(a).shape[axis]),
            None,
        ],
        jvp=lambda ts, outs, a, idx, axis: [None if ts[0] is None else take(ts[0], idx, axis)],
    )
)
register(
    OpDef(
        "take_grad",
        "index",
        _take_grad_infer,
        _take_grad_impl,
        vjp=lambda cts, outs, g, idx, axis, dim: [take(cts[0], idx, axis), None],
        jvp=lambda ts, outs, g, idx, axis, dim: [
            None if ts[0] is None else bind("take_grad", ts[0], idx, axis=axis, dim=dim)
        ],
        doc="scatter-add of a gathered gradient back to the source axis (adjoint of take)",
    )
)


def take(x: Any, indices: Any, axis: int = 0) -> Any:
    """Gather ``x`` along ``axis`` at integer ``indices`` (like np.take with an axis)."""
    from .core import is_array, is_python_scalar

    if is_python_scalar(indices) or isinstance(indices, (list, tuple)):
        indices = np.asarray(indices, dtype=np.int64)
    if is_array(indices) and indices.dtype.kind in "iu" and indices.dtype != np.int32:
        indices = indices.astype(np.int64)
    nd = type_of(x).ndim
    return bind("take", x, indices, axis=normalize_axis("take", axis, nd))
