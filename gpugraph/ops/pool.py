"""Pooling over the spatial dims of ``x[N, C, *S]``.

* ``max_pool`` is the primitive ``max_pool(x, h)``: in every window, h at the position of x's
  largest element (the first one on ties, as torch; NaN wins, as torch). ``max_pool(x)`` is
  ``max_pool(x, x)``. It is linear in h, and its adjoint ``max_pool_grad(x, g)`` adds each g
  into the window position that won; each is the other's derivative in h, and x only selects
  (piecewise constant), so gradients of any order are graph.
* ``avg_pool`` (ops/pool_avg.py) is a direct windowed sum divided by the window counts.
* Global pooling is a mean or max over the spatial axes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import TensorType
from .conv import as_tuple, norm_padding, out_spatial
from .conv_lower import Layout, _finish, _target, pad_into, padded_elems, pads
from .core import bind, type_of
from .pool_avg import avg_pool as avg_pool  # re-exported: ops/__init__ reads it here
from .pool_avg import window_steps
from .reduce import max as _max
from .reduce import mean
from .registry import OpDef, register


def _fill(dtype: np.dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _window_max(xp, x, window, stride, pad, y, buf):
    """max_pool(x, x) into ``y``: the window maximum, one elementwise maximum per window offset
    (NaN propagates, as the winner rule; a padded position only wins where every real element
    equals the fill, which gives the same value), over x padded into the scratch piece
    ``xpad``, with no copy of the windows."""
    d = len(window)
    src = pad_into(x, pad, buf.get("xpad"), _fill(x.dtype))
    v = xp.lib.stride_tricks.sliding_window_view(src, window, axis=tuple(range(2, 2 + d)))
    v = v[(slice(None),) * 2 + tuple(slice(None, None, s) for s in stride)]  # N, C, *Y, *K
    offsets = itertools.product(*(range(k) for k in window))
    y[...] = v[(Ellipsis, *next(offsets))]
    for kk in offsets:
        xp.maximum(y, v[(Ellipsis, *kk)], out=y)
    return y


def _select_layout(x_shape, y_shape, pad, dtype, same: bool) -> Layout:
    """The forward pool's scratch: x padded with the fill value (``h is x``); else (a
    derivative's selection) the winner bookkeeping."""
    if not same:
        return _winner_layout(y_shape, dtype)
    lay = Layout()
    if pads(pad):
        lay.add("xpad", (padded_elems(x_shape, pad),), dtype)
    return lay


def _select_scratch(node) -> int:
    x, h = node.inputs
    a = node.attrs
    y = node.outputs[0].type.shape
    return _select_layout(x.type.shape, y, a["pad"], x.type.dtype, x is h).nbytes


def _select_impl(xp, x, h, window, stride, pad, out=None, scratch=None):
    d = len(window)
    shape = (*x.shape[:2], *out_spatial(x.shape[2:], window, stride, pad, (1,) * d))
    if h is x:  # the forward pool (the selected values are the maxima themselves)
        y = _target(xp, out, shape, x.dtype)
        lay = _select_layout(x.shape, shape, pad, x.dtype, True)
        if scratch is not None and scratch.nbytes < lay.nbytes:
            # the plan saw two values (e.g. x and a view of it) that are one array here: no
            # range was reserved, so this call allocates its own
            scratch = None
        buf = lay.views(xp, scratch)
        return _finish(out, _window_max(xp, x, window, stride, pad, y, buf))
    buf = _winner_layout(shape, x.dtype).views(xp, scratch)
    steps, idx, take = _winners(xp, x, window, stride, pad, shape, buf)
    y = _target(xp, out, shape, h.dtype)
    for flat, at, src in steps:  # every window has a real element, so each y is written
        tt = take[at]
        xp.equal(idx[at], flat, out=tt)
        xp.copyto(y[at], h[src], where=tt)
    return _finish(out, y)


def _winner_layout(g_shape, xdtype) -> Layout:
    lay = Layout()
    n = math.prod(g_shape)
    lay.add("best", (n,), xdtype)
    lay.add("idx", (n,), np.int32)
    for name in ("take", "new"):
        lay.add(name, (n,), np.bool_)
    return lay


def _scatter_layout(g_shape, xdtype, gdtype) -> Layout:
    lay = _winner_layout(g_shape, xdtype)
    lay.add("sel", (math.prod(g_shape),), gdtype)
    return lay


def _scatter_scratch(node) -> int:
    x, g = (v.type for v in node.inputs)
    return _scatter_layout(g.shape, x.dtype, g.dtype).nbytes


def _winners(xp, x, window, stride, pad, g_shape, buf):
    """Each window's winner, the first maximal element (the first NaN, if any) among the real
    ones (never a padded position, even where the real elements equal the fill): a running
    comparison over the window offsets, each restricted to the box of outputs where that
    offset falls on x itself (so nothing is padded). Returns the offsets' (flat index, output
    box, x slice), the winners' flat indices and a bool piece free for the caller; every
    temporary is a piece of ``buf`` (the plan's scratch)."""
    spatial, ys = x.shape[2:], g_shape[2:]
    best, idx, take, new = (buf[k].reshape(g_shape) for k in ("best", "idx", "take", "new"))
    idx[...] = -1
    floats = x.dtype.kind == "f"
    steps = window_steps(window, stride, pad, spatial, ys)
    for flat, at, src in steps:
        val, bb, ii, tt, nn = x[src], best[at], idx[at], take[at], new[at]
        if floats:  # not (val <= best): greater, or a NaN on either side; a NaN best stays
            xp.less_equal(val, bb, out=tt)
            xp.logical_not(tt, out=tt)
            xp.equal(bb, bb, out=nn)
            xp.logical_and(tt, nn, out=tt)
        else:
            xp.greater(val, bb, out=tt)
        xp.less(ii, 0, out=nn)  # the first real element of the window
        xp.logical_or(tt, nn, out=tt)
        xp.copyto(bb, val, where=tt)
        xp.copyto(ii, flat, where=tt)
    return steps, idx, take


def _scatter_impl(xp, x, g, window, stride, pad, out=None, scratch=None):
    """max_pool_grad: each g added at its window's winner (``_winners``)."""
    buf = _scatter_layout(g.shape, x.dtype, g.dtype).views(xp, scratch)
    steps, idx, take = _winners(xp, x, window, stride, pad, g.shape, buf)
    sel = buf["sel"].reshape(g.shape)
    y = _target(xp, out, x.shape, g.dtype)
    y[...] = 0
    for flat, at, src in steps:
        ss, tt = sel[at], take[at]
        xp.equal(idx[at], flat, out=tt)
        ss[...] = 0
        xp.copyto(ss, g[at], where=tt)
        y[src] += ss
    return _finish(out, y)


def _pool_shape(x: TensorType, window, stride, pad) -> tuple[int, ...]:
    if any(lo > k // 2 or hi > k // 2 for (lo, hi), k in zip(pad, window)):
        raise ShapeError(f"max_pool: padding {pad} must be at most half the window {window}")
    ys = out_spatial(x.shape[2:], window, stride, pad, (1,) * len(window))
    if any(y < 1 for y in ys):
        raise ShapeError(f"max_pool: window {window} is larger than the padded input {x}")
    return x.shape[:2] + ys


def _select_infer(types, window, stride, pad):
    x, h = types
    if x.shape != h.shape or x.dtype.kind not in "fi" or h.dtype.kind not in "fi":
        raise DTypeError(f"max_pool: operands must be numeric arrays of one shape, got {x}, {h}")
    return [TensorType(_pool_shape(x, window, stride, pad), h.dtype)]


def _scatter_infer(types, window, stride, pad):
    x, g = types
    if g.shape != _pool_shape(x, window, stride, pad):
        raise ShapeError(f"max_pool_grad: {g} is not the pooled shape of {x}")
    return [TensorType(x.shape, g.dtype)]


register(
    OpDef(
        "max_pool",
        "linalg",
        _select_infer,
        _select_impl,
        vjp=lambda cts, outs, x, h, **a: [None, bind("max_pool_grad", x, cts[0], **a)],
        jvp=lambda ts, outs, x, h, **a: [
            None if ts[1] is None else bind("max_pool", x, ts[1], **a)
        ],
        out_kw=True,  # the forward writes the planned buffer; its padded x is plan scratch
        extra={"scratch_bytes": _select_scratch, "scratch_kw": True},
    )
)
register(
    OpDef(
        "max_pool_grad",
        "linalg",
        _scatter_infer,
        _scatter_impl,
        vjp=lambda cts, outs, x, g, **a: [None, bind("max_pool", x, cts[0], **a)],
        jvp=lambda ts, outs, x, g, **a: [
            None if ts[1] is None else bind("max_pool_grad", x, ts[1], **a)
        ],
        out_kw=True,
        extra={"scratch_bytes": _scatter_scratch, "scratch_kw": True},
    )
)


def _geometry(op, x, window, stride, padding):
    t = type_of(x)
    if t.ndim < 3:
        raise ShapeError(f"{op}: x must be [N, C, *spatial], got {t}")
    d = t.ndim - 2
    window = as_tuple(op, "window", window, d)
    stride = window if stride is None else as_tuple(op, "stride", stride, d)
    if min(window + stride, default=1) < 1:
        raise ShapeError(f"{op}: window and stride must be >= 1, got {window}, {stride}")
    pad = norm_padding(op, padding, d, t.shape[2:], window, stride, (1,) * d)
    return window, stride, pad


def max_pool(
    x: Any,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
) -> Any:
    """Max pooling of ``x[N, C, *S]`` (stride defaults to the window; padding is never the
    max). The gradient goes to the first maximal element of each window, as torch."""
    window, stride, pad = _geometry("max_pool", x, window, stride, padding)
    return bind("max_pool", x, x, window=window, stride=stride, pad=pad)


def global_avg_pool(x: Any) -> Any:
    """Mean over the spatial dims of ``x[N, C, *S]``, kept as size-1 dims."""
    return mean(x, axis=tuple(range(2, type_of(x).ndim)), keepdims=True)


def global_max_pool(x: Any) -> Any:
    """Max over the spatial dims of ``x[N, C, *S]``, kept as size-1 dims."""
    return _max(x, axis=tuple(range(2, type_of(x).ndim)), keepdims=True)
