"""Indexing ops: slice and its adjoint slice_scatter, take (gather along an axis) and its
adjoint take_grad, and ``getitem`` (basic indexing ``x[1, ::2, None, ...]``) built on them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import (
    ArgumentError,
    DTypeError,
    IndexOutOfRangeError,
    ShapeError,
    UnsupportedError,
)
from ..ir import TensorType
from ..tracer import Tracer
from .core import bind, type_of
from .registry import OpDef, register
from .shape import normalize_axis, of_shape, reshape


# ---- slicing (basic indexing) -------------------------------------------------------------
def _slice_infer(types, starts, stops, steps):
    shape = tuple(len(range(a, b, s)) for a, b, s in zip(starts, stops, steps))
    return of_shape(types, shape)


def _slices(starts, stops, steps):
    """Python slices selecting ``range(start, stop, step)`` on each axis. Starts are never
    negative (``_slice_bounds``); a negative stop only ends a negative-step range that runs
    through element 0, which only ``None`` can say."""
    return tuple(
        slice(a, None if (b < 0 and s < 0) else b, s) for a, b, s in zip(starts, stops, steps)
    )


def _scatter_infer(types, shape, starts, stops, steps):
    return of_shape(types, shape)


def _scatter_impl(xp, g, shape, starts, stops, steps, out=None):
    """Zeros with ``g`` at the slice; written into ``out`` (an arena view) when given."""
    if out is None:
        out = xp.zeros(shape, dtype=g.dtype)
    else:
        out[...] = 0
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
        out_kw=True,
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


def boolean_mask_refusal(index: Any) -> str | None:
    """Why ``x[index]`` is refused, if ``index`` holds a boolean mask (eagerly too, so that a
    function behaves the same eagerly and under jit)."""
    parts = index if isinstance(index, tuple) else (index,)
    for p in parts:
        if getattr(p, "dtype", None) == np.dtype(bool) and getattr(p, "ndim", 0) > 0:
            if isinstance(p, Tracer):
                return (
                    "boolean mask indexing x[mask] gives an array whose length depends on the "
                    "data (how many entries are True), and gpugraph graphs have static shapes. "
                    "Keep the shape and select with gg.where(mask, x, 0) (then gg.sum or "
                    "gg.max over it), as in JAX"
                )
            return (
                "indexing with a boolean array is not supported; turn a concrete mask into "
                "integer indices first (x[np.nonzero(mask)[0]] for a 1-d mask), or select with "
                "gg.where(mask, x, 0) to keep the shape"
            )
    return None


def getitem(x: Any, idx: Any) -> Any:
    """Basic indexing (ints, slices with steps, None, Ellipsis); an integer array index on
    the first axis becomes ``take``."""
    from .core import is_tensor

    why = boolean_mask_refusal(idx)
    if why is not None:
        raise UnsupportedError(why)
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
            a, b, s = _slice_bounds(i, n, dim)
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


def _slice_bounds(i: slice, n: int, dim: int) -> tuple[int, int, int]:
    """(start, stop, step) of ``i`` on an axis of size ``n``, in the form ``_slices`` re-slices
    exactly: an empty selection is (0, 0, 1). ``slice.indices`` gives (-1, -1, -1) for
    ``x[-5::-1]`` on 4 elements, and a start of -1 re-read by NumPy means the last element."""
    for part in (i.start, i.stop, i.step):
        if part is not None and (isinstance(part, bool) or not isinstance(part, (int, np.integer))):
            raise ShapeError(
                f"index: slice {i} on axis {dim}: bounds and step must be integers or None"
            )
    if i.step == 0:
        raise ShapeError(f"index: slice {i} on axis {dim}: the step must not be zero")
    a, b, s = i.indices(n)
    return (a, b, s) if len(range(a, b, s)) else (0, 0, 1)


# ---- take (gather along an axis) ----------------------------------------------------------
# What an index outside [-dim, dim) does, as np.take's ``mode``. One rule for every path (eager,
# jit on NumPy, the CuPy lowering and its take_grad kernel): ``take_rows`` below.
TAKE_MODES = ("raise", "wrap", "clip")


def take_rows(xp: Any, idx: Any, dim: int, mode: str) -> Any:
    """``idx`` as row numbers in [0, dim) under ``mode`` (an int64 array of xp):

    * "raise" (default): negative indices count from the end; any index outside [-dim, dim)
      raises IndexOutOfRangeError naming take. On CuPy the check reads one flag back from the
      device (a synchronization, which also keeps the call out of CUDA-graph capture).
    * "wrap": every index is taken modulo dim (so -1 is the last row), as np.take.
    * "clip": indices are clipped to [0, dim - 1], as np.take (so -1 means row 0).
    """
    idx = idx.astype(xp.int64, copy=False)
    if dim == 0:
        if idx.size:
            raise IndexOutOfRangeError(
                f"take: cannot take index {int(idx.reshape(-1)[0])} from an empty axis"
            )
        return idx
    if mode == "wrap":
        return idx % dim
    if mode == "clip":
        return xp.clip(idx, 0, dim - 1)
    if idx.size and bool(((idx < -dim) | (idx >= dim)).any()):
        bad = idx[(idx < -dim) | (idx >= dim)].reshape(-1)[0]
        raise IndexOutOfRangeError(
            f"take: index {int(bad)} is out of range for an axis of size {dim} (mode='raise'; "
            "pass mode='wrap' or mode='clip' to take another row instead)"
        )
    return xp.where(idx < 0, idx + dim, idx)


def _take_infer(types, axis, mode="raise"):
    x, idx = types
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"take: indices must be integers, got {idx.dtype}")
    return [TensorType(x.shape[:axis] + idx.shape + x.shape[axis + 1 :], x.dtype)]


def _take_impl(xp, a, idx, axis, mode="raise"):
    return xp.take(a, take_rows(xp, idx, a.shape[axis], mode), axis=axis)


def _take_grad_infer(types, axis, dim, mode="raise"):
    g, idx = types
    shape = g.shape[:axis] + (dim,) + g.shape[axis + idx.ndim :]
    return [TensorType(shape, g.dtype)]


def _take_grad_impl(xp, g, idx, axis, dim, mode="raise"):
    shape = g.shape[:axis] + (dim,) + g.shape[axis + idx.ndim :]
    out = xp.zeros(shape, dtype=g.dtype)
    rows = take_rows(xp, idx, dim, mode).reshape(-1)
    # move the gathered axes to the front so one add.at scatters them all
    lead = tuple(range(axis, axis + idx.ndim))
    rest = tuple(i for i in range(g.ndim) if i not in lead)
    g2 = xp.transpose(g, lead + rest).reshape((idx.size,) + tuple(g.shape[i] for i in rest))
    o2 = xp.moveaxis(out, axis, 0)
    if xp is np:
        np.add.at(o2, rows, g2)
    else:
        import cupyx

        cupyx.scatter_add(o2, rows, g2)
    return out


register(
    OpDef(
        "take",
        "index",
        _take_infer,
        _take_impl,
        vjp=lambda cts, outs, a, idx, axis, mode="raise": [
            bind("take_grad", cts[0], idx, axis=axis, dim=type_of(a).shape[axis], mode=mode),
            None,
        ],
        jvp=lambda ts, outs, a, idx, axis, mode="raise": [
            None if ts[0] is None else take(ts[0], idx, axis, mode)
        ],
    )
)
register(
    OpDef(
        "take_grad",
        "index",
        _take_grad_infer,
        _take_grad_impl,
        vjp=lambda cts, outs, g, idx, axis, dim, mode="raise": [
            take(cts[0], idx, axis, mode),
            None,
        ],
        jvp=lambda ts, outs, g, idx, axis, dim, mode="raise": [
            None if ts[0] is None else bind("take_grad", ts[0], idx, axis=axis, dim=dim, mode=mode)
        ],
        doc="scatter-add of a gathered gradient back to the source axis (adjoint of take)",
    )
)


def take(x: Any, indices: Any, axis: int = 0, mode: str = "raise") -> Any:
    """Gather ``x`` along ``axis`` at integer ``indices``, like ``np.take(x, indices, axis,
    mode=mode)``. ``mode`` says what an index outside [-n, n) does: "raise" (the default; at
    the call for concrete indices, at run time for traced ones), "wrap" or "clip" (see
    ``take_rows``). Every backend follows the same rule, the gradient too."""
    from .core import is_array, is_python_scalar

    if mode not in TAKE_MODES:
        raise ArgumentError(f"take: mode must be one of {TAKE_MODES}, got {mode!r}")
    if is_python_scalar(indices) or isinstance(indices, (list, tuple)):
        indices = np.asarray(indices, dtype=np.int64)
    if is_array(indices) and indices.dtype.kind in "iu" and indices.dtype != np.int32:
        indices = indices.astype(np.int64)
    shape = type_of(x).shape
    ax = normalize_axis("take", axis, len(shape))
    if is_array(indices) and indices.dtype.kind in "iu":
        # known now: checked at the user's line rather than at run time
        take_rows(
            np,
            np.asarray(indices if not hasattr(indices, "get") else indices.get()),
            shape[ax],
            mode,
        )
    return bind("take", x, indices, axis=ax, mode=mode)
