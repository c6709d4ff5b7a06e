"""More shape ops: flip (a primitive); pad, tile, repeat, roll, split, ravel, moveaxis, tril,
triu built from slices, concatenations, broadcasts and selections, so their derivatives come
from those; and the creation ops linspace and eye (built on arange, so nothing large is baked
into a graph)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GpuGraphError, ShapeError, UnsupportedError
from ..ir import TensorType
from .core import DEFAULT_FLOAT, bind, check_dtype, type_of
from .creation import arange, full
from .elementwise import add, astype, equal, greater_equal, multiply, scalar_like, where
from .index import slice_axis
from .reduce import canonical_axes
from .registry import OpDef, register
from .shape import broadcast_to, concatenate, normalize_axis, reshape, transpose

# ---- flip ---------------------------------------------------------------------------------
register(
    OpDef(
        "flip",
        "shape",
        lambda types, axes: [types[0]],
        lambda xp, a, axes: xp.flip(a, axis=axes),
        vjp=lambda cts, outs, a, axes: [bind("flip", cts[0], axes=axes)],
        jvp=lambda ts, outs, a, axes: [bind("flip", ts[0], axes=axes)],
    )
)


def flip(x: Any, axis: Any = None) -> Any:
    """Reverse the order of elements along ``axis`` (all axes when None)."""
    axes = canonical_axes("flip", axis, type_of(x).ndim)
    if not axes:
        return x
    return bind("flip", x, axes=axes)


# ---- pad ----------------------------------------------------------------------------------
def _pad_widths(pad_width: Any, nd: int) -> list[tuple[int, int]]:
    arr = np.asarray(pad_width)
    if arr.dtype.kind not in "iu" or (arr < 0).any():
        raise ShapeError(f"pad: pad_width must be non-negative ints, got {pad_width!r}")
    try:
        arr = np.broadcast_to(arr, (nd, 2))
    except ValueError:
        raise ShapeError(f"pad: pad_width {pad_width!r} does not fit {nd} axes") from None
    return [(int(a), int(b)) for a, b in arr]


def pad(x: Any, pad_width: Any, mode: str = "constant", constant_values: Any = 0) -> Any:
    """Pad as np.pad with mode "constant", "edge" or "reflect"; ``pad_width`` is an int, a
    (before, after) pair or one pair per axis."""
    t = type_of(x)
    widths = _pad_widths(pad_width, t.ndim)
    if mode not in ("constant", "edge", "reflect"):
        raise UnsupportedError(f"pad: mode {mode!r} is not supported (constant, edge, reflect)")
    for axis, (lo, hi) in enumerate(widths):
        if lo == hi == 0:
            continue
        n = type_of(x).shape[axis]
        if mode != "constant" and n == 0:
            raise ShapeError(f"pad: cannot {mode}-pad axis {axis} of size 0")
        if mode == "reflect" and max(lo, hi) > n - 1:
            raise UnsupportedError(
                f"pad: reflect padding of {max(lo, hi)} on axis {axis} needs a size above it, "
                f"got {n} (NumPy's repeated reflection is not supported)"
            )
        parts = [_pad_piece(x, axis, lo, "lo", mode, constant_values), x]
        parts.append(_pad_piece(x, axis, hi, "hi", mode, constant_values))
        x = concatenate([p for p in parts if p is not None], axis)
    return x


def _pad_piece(x, axis, width, side, mode, value):
    if width == 0:
        return None
    shape = list(type_of(x).shape)
    n = shape[axis]
    shape[axis] = width
    if mode == "constant":
        return full(shape, np.asarray(value, type_of(x).dtype).item(), type_of(x).dtype)
    if mode == "edge":
        edge = slice_axis(x, axis, 0, 1) if side == "lo" else slice_axis(x, axis, n - 1, n)
        return broadcast_to(edge, shape)
    piece = (
        slice_axis(x, axis, 1, width + 1)
        if side == "lo"
        else slice_axis(x, axis, n - 1 - width, n - 1)
    )
    return flip(piece, axis)


# ---- tile / repeat / roll / split ---------------------------------------------------------
def _ints(op: str, v: Any) -> tuple[int, ...]:
    t = (v,) if isinstance(v, (int, np.integer)) else tuple(v)
    if not all(isinstance(i, (int, np.integer)) and i >= 0 for i in t):
        raise ShapeError(f"{op}: expected non-negative ints, got {v!r}")
    return tuple(int(i) for i in t)


def tile(x: Any, reps: Any) -> Any:
    """np.tile: each dim repeated as a block, by a broadcast over an inserted axis."""
    reps = _ints("tile", reps)
    shape = type_of(x).shape
    nd = max(len(reps), len(shape))
    reps = (1,) * (nd - len(reps)) + reps
    shape = (1,) * (nd - len(shape)) + shape
    x = reshape(x, [d for s in shape for d in (1, s)])
    x = broadcast_to(x, [d for r, s in zip(reps, shape) for d in (r, s)])
    return reshape(x, [r * s for r, s in zip(reps, shape)])


def repeat(x: Any, repeats: int, axis: int | None = None) -> Any:
    """np.repeat with one repeat count: each element repeated in place along ``axis``."""
    if not isinstance(repeats, (int, np.integer)) or repeats < 0:
        raise UnsupportedError("repeat: only one non-negative int repeat count is supported")
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    shape = list(type_of(x).shape)
    axis = normalize_axis("repeat", axis, len(shape))
    x = reshape(x, shape[: axis + 1] + [1] + shape[axis + 1 :])
    x = broadcast_to(x, shape[: axis + 1] + [int(repeats)] + shape[axis + 1 :])
    shape[axis] *= int(repeats)
    return reshape(x, shape)


def roll(x: Any, shift: Any, axis: Any = None) -> Any:
    """np.roll: elements shifted along ``axis`` (the flattened array when None), wrapping."""
    if axis is None:
        return reshape(roll(reshape(x, (-1,)), shift, 0), type_of(x).shape)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    shifts = (shift,) * len(axes) if isinstance(shift, (int, np.integer)) else tuple(shift)
    if len(shifts) != len(axes):
        raise ShapeError(f"roll: {len(shifts)} shifts for {len(axes)} axes")
    for s, a in zip(shifts, axes):
        a = normalize_axis("roll", int(a), type_of(x).ndim)
        n = type_of(x).shape[a]
        k = int(s) % n if n else 0
        if k:
            x = concatenate([slice_axis(x, a, n - k, n), slice_axis(x, a, 0, n - k)], a)
    return x


def split(x: Any, indices_or_sections: Any, axis: int = 0) -> list[Any]:
    """np.split: ``n`` equal parts, or cuts at the given indices."""
    axis = normalize_axis("split", axis, type_of(x).ndim)
    n = type_of(x).shape[axis]
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ShapeError(f"split: axis {axis} of size {n} does not split into {k} equal parts")
        cuts = [n // k * i for i in range(1, k)]
    else:
        cuts = [int(c) for c in indices_or_sections]
    bounds = [0, *(min(max(c, 0), n) for c in cuts), n]
    return [slice_axis(x, axis, a, max(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


def ravel(x: Any) -> Any:
    return reshape(x, (-1,))


def moveaxis(x: Any, source: Any, destination: Any) -> Any:
    """np.moveaxis."""
    nd = type_of(x).ndim
    src = _ints_any("moveaxis", source, nd)
    dst = _ints_any("moveaxis", destination, nd)
    if len(src) != len(dst):
        raise ShapeError("moveaxis: source and destination need the same number of axes")
    order = [a for a in range(nd) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return transpose(x, order)


def _ints_any(op, v, nd):
    t = (v,) if isinstance(v, (int, np.integer)) else tuple(v)
    return [normalize_axis(op, int(a), nd) for a in t]


# ---- tril / triu --------------------------------------------------------------------------
def _tri_mask(x, k, upper):
    shape = type_of(x).shape
    if len(shape) < 2:
        raise ShapeError(f"{'triu' if upper else 'tril'}: needs at least 2 dims, got {shape}")
    rows = reshape(arange(shape[-2]), (-1, 1))
    cols = arange(shape[-1])
    # tril keeps col - row <= k; triu keeps col - row >= k
    return greater_equal(add(rows, k), cols) if not upper else greater_equal(cols, add(rows, k))


def tril(x: Any, k: int = 0) -> Any:
    """Zero above the k-th diagonal (of the last two dims), as np.tril."""
    return where(_tri_mask(x, k, False), x, scalar_like(0, x))


def triu(x: Any, k: int = 0) -> Any:
    """Zero below the k-th diagonal (of the last two dims), as np.triu."""
    return where(_tri_mask(x, k, True), x, scalar_like(0, x))


# ---- creation -----------------------------------------------------------------------------
def linspace(
    start: float, stop: float, num: int = 50, endpoint: bool = True, dtype: Any = None
) -> Any:
    """``num`` evenly spaced numbers from start to stop, as np.linspace (computed in float64
    and cast, as NumPy; the default dtype is float32, gpugraph's default float)."""
    if not isinstance(num, (int, np.integer)) or num < 0:
        raise GpuGraphError(f"linspace: num must be a non-negative int, got {num!r}")
    dt = check_dtype(dtype, "linspace") if dtype is not None else DEFAULT_FLOAT
    div = (num - 1) if endpoint else num
    step = (stop - start) / div if div > 0 else 0.0
    i = arange(0, int(num), 1, dtype=np.float64)
    y = add(multiply(i, np.float64(step)), np.float64(start))
    if endpoint and num > 1:  # NumPy sets the last element to stop exactly
        y = where(equal(i, np.float64(num - 1)), np.float64(stop), y)
    return astype(y, dt)


def eye(n: int, m: int | None = None, k: int = 0, dtype: Any = DEFAULT_FLOAT) -> Any:
    """Ones on the k-th diagonal of an n x m matrix, as np.eye."""
    m = n if m is None else m
    dt = check_dtype(dtype, "eye")
    rows = reshape(arange(int(n)), (-1, 1))
    return astype(equal(add(rows, int(k)), arange(int(m))), dt)


__all__ = [
    "TensorType",
    "eye",
    "flip",
    "linspace",
    "moveaxis",
    "pad",
    "ravel",
    "repeat",
    "roll",
    "split",
    "tile",
    "tril",
    "triu",
]
