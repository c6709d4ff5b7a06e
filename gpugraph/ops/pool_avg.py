"""Average pooling as a direct windowed sum (no im2col, no padded copy, no scratch).

``avg_pool_sum(x)`` is, per output position, the sum of the real (not padded) elements of its
window: for every window offset, one strided slice of x is added into the box of outputs where
that offset falls on x itself (padding is zero, so it adds nothing). Its adjoint
``avg_pool_sum_grad(g)`` adds each such box of g back into the same strided slice of a zeroed
x-shaped result. Both are linear and each is the other's derivative, so gradients of any order
are graph. ``avg_pool`` divides the sum by the window size (``count_include_pad``) or by the
number of real elements per window, a constant computed once at trace time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import TensorType
from .conv import out_spatial
from .conv_lower import Layout, _finish, _target, pad_into, pads
from .core import bind, type_of
from .elementwise import divide, scalar_like
from .half import accumulate_in_float32
from .registry import OpDef, register


def real_box(kk, stride, pad, spatial, ys):
    """Per spatial dim, the output positions whose window offset ``kk`` falls on a real (not
    padded) element: a range, so the positions are a box."""
    box = []
    for k, st, (lo, _), s, y in zip(kk, stride, pad, spatial, ys):
        a = max(0, -((k - lo) // st))  # ceil((lo - k) / st)
        b = min(y, (lo + s - 1 - k) // st + 1)
        box.append((a, b))
    return box


def window_steps(window, stride, pad, spatial, ys):
    """Per window offset that reads any real element: (its flat index in the window, output
    box, the x slice it reads)."""
    steps = []
    for flat, kk in enumerate(itertools.product(*(range(k) for k in window))):
        box = real_box(kk, stride, pad, spatial, ys)
        if any(a >= b for a, b in box):
            continue
        at = (slice(None),) * 2 + tuple(slice(a, b) for a, b in box)
        src = (slice(None),) * 2 + tuple(
            slice(k - lo + a * st, k - lo + (b - 1) * st + 1, st)
            for k, st, (lo, _), (a, b) in zip(kk, stride, pad, box)
        )
        steps.append((flat, at, src))
    return steps


def _sum_shape(x_shape, window, stride, pad) -> tuple[int, ...]:
    ys = out_spatial(x_shape[2:], window, stride, pad, (1,) * len(window))
    if any(y < 1 for y in ys):
        raise ShapeError(f"avg_pool: window {window} is larger than the padded input {x_shape}")
    return tuple(x_shape[:2]) + ys


def _flat(window, stride) -> bool:
    """Overlapping windows: the separable flat-run sums (measured 2-4x faster than the box
    adds at 3x3 stride 1 and 2, though they sum at every padded position); windows that do
    not overlap (e.g. 2x2 stride 2): the per-offset box adds, which read each element once."""
    return any(k > s for k, s in zip(window, stride))


def _padded(x_shape, pad) -> tuple[int, ...]:
    return tuple(x_shape[:2]) + tuple(s + lo + hi for s, (lo, hi) in zip(x_shape[2:], pad))


def _layout(x_shape, window, stride, pad, dtype) -> Layout:
    """Two ping-pong buffers of the padded input's size (flat path only)."""
    lay = Layout()
    if _flat(window, stride):
        n = math.prod(_padded(x_shape, pad))
        lay.add("a", (n,), dtype)
        lay.add("b", (n,), dtype)
    return lay


def _runs(padded, window):
    """Per summed dim, last first: (flat step, window, elements in, elements out)."""
    steps, n = [], math.prod(padded)
    for d in reversed(range(len(window))):
        k, sf = window[d], math.prod(padded[3 + d :])
        if k > 1:
            steps.append((sf, k, n, n - (k - 1) * sf))
            n -= (k - 1) * sf
    return steps


def _outputs(ys, stride) -> tuple[slice, ...]:
    """Where the outputs sit among the window sums at every padded position."""
    return tuple(slice(0, (n - 1) * s + 1, s) for n, s in zip(ys, stride))


def _sum_flat(xp, x, window, stride, pad, y, buf):
    """Window sums along one dim at a time over the zero-padded input, each a few adds of long
    contiguous shifted runs of the flat buffer (a run that crosses a row end only feeds
    positions that are never outputs)."""
    padded = _padded(x.shape, pad)
    src, dst = buf["a"], buf["b"]
    p = pad_into(x, pad, src, 0)
    if not pads(pad):  # x itself (or a crop of it): copied, since the runs need it flat
        src[: math.prod(padded)].reshape(padded)[...] = p
    for sf, k, _, n in _runs(padded, window):
        xp.add(src[:n], src[sf : sf + n], out=dst[:n])
        for j in range(2, k):
            dst[:n] += src[j * sf : j * sf + n]
        src, dst = dst, src
    full = src[: math.prod(padded)].reshape(padded)
    y[...] = full[(slice(None),) * 2 + _outputs(y.shape[2:], stride)]
    return y


def _sum_grad_flat(xp, g, window, stride, pad, y, buf):
    """The adjoint of ``_sum_flat``: g placed into a zeroed padded buffer, each dim's shifted
    adds run backwards (in reverse dim order), then the padding cropped off."""
    padded = _padded(y.shape, pad)
    src, dst = buf["a"], buf["b"]
    src[: math.prod(padded)] = 0
    full = src[: math.prod(padded)].reshape(padded)
    full[(slice(None),) * 2 + _outputs(g.shape[2:], stride)] = g
    for sf, k, n_in, n in reversed(_runs(padded, window)):
        dst[:n] = src[:n]
        dst[n:n_in] = 0
        for j in range(1, k):
            dst[j * sf : j * sf + n] += src[:n]
        src, dst = dst, src
    full = src[: math.prod(padded)].reshape(padded)
    real = tuple(s + min(hi, 0) for s, (_, hi) in zip(y.shape[2:], pad))
    if real != y.shape[2:]:  # a negative high padding cropped x: those elements get 0
        y[...] = 0
    at = tuple(slice(0, s) for s in real)
    y[(slice(None),) * 2 + at] = full[
        (slice(None),) * 2 + tuple(slice(lo, lo + s) for (lo, _), s in zip(pad, real))
    ]
    return y


def _scratch(node) -> int:
    a = node.attrs
    x_shape = a["x_shape"] if "x_shape" in a else node.inputs[0].type.shape
    return _layout(x_shape, a["window"], a["stride"], a["pad"], node.inputs[0].type.dtype).nbytes


def _sum_impl(xp, x, window, stride, pad, out=None, scratch=None):
    ys = _sum_shape(x.shape, window, stride, pad)
    y = _target(xp, out, ys, x.dtype)
    if _flat(window, stride):
        buf = _layout(x.shape, window, stride, pad, x.dtype).views(xp, scratch)
        return _finish(out, _sum_flat(xp, x, window, stride, pad, y, buf))
    y[...] = 0
    for _, at, src in window_steps(window, stride, pad, x.shape[2:], ys[2:]):
        y[at] += x[src]
    return _finish(out, y)


def _sum_grad_impl(xp, g, window, stride, pad, x_shape, out=None, scratch=None):
    y = _target(xp, out, tuple(x_shape), g.dtype)
    if _flat(window, stride):
        buf = _layout(x_shape, window, stride, pad, g.dtype).views(xp, scratch)
        return _finish(out, _sum_grad_flat(xp, g, window, stride, pad, y, buf))
    y[...] = 0
    for _, at, src in window_steps(window, stride, pad, x_shape[2:], g.shape[2:]):
        y[src] += g[at]
    return _finish(out, y)


def _sum_infer(types, window, stride, pad):
    (x,) = types
    if x.dtype.kind != "f":
        raise DTypeError(f"avg_pool: x must be floating point, got {x}")
    return [TensorType(_sum_shape(x.shape, window, stride, pad), x.dtype)]


def _sum_grad_infer(types, window, stride, pad, x_shape):
    (g,) = types
    if g.shape != _sum_shape(x_shape, window, stride, pad):
        raise ShapeError(f"avg_pool_sum_grad: {g} is not the pooled shape of {x_shape}")
    return [TensorType(tuple(x_shape), g.dtype)]


def _geo(a: dict) -> dict:
    return {k: a[k] for k in ("window", "stride", "pad")}


register(
    OpDef(
        "avg_pool_sum",
        "linalg",
        _sum_infer,
        _sum_impl,
        vjp=lambda cts, outs, x, **a: [
            bind("avg_pool_sum_grad", cts[0], x_shape=type_of(x).shape, **a)
        ],
        jvp=lambda ts, outs, x, **a: [None if ts[0] is None else bind("avg_pool_sum", ts[0], **a)],
        out_kw=True,
        extra={"scratch_bytes": _scratch, "scratch_kw": True},
    )
)
register(
    OpDef(
        "avg_pool_sum_grad",
        "linalg",
        _sum_grad_infer,
        _sum_grad_impl,
        vjp=lambda cts, outs, g, **a: [bind("avg_pool_sum", cts[0], **_geo(a))],
        jvp=lambda ts, outs, g, **a: [
            None if ts[0] is None else bind("avg_pool_sum_grad", ts[0], **a)
        ],
        out_kw=True,
        extra={"scratch_bytes": _scratch, "scratch_kw": True},
    )
)


@accumulate_in_float32
def avg_pool(
    x: Any,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: Any = 0,
    count_include_pad: bool = True,
) -> Any:
    """Average pooling of ``x[N, C, *S]``; with ``count_include_pad=False`` padded positions
    are left out of each window's count (torch's flag)."""
    from .core import to_float
    from .pool import _geometry

    x = to_float(x)
    window, stride, pad = _geometry("avg_pool", x, window, stride, padding)
    summed = bind("avg_pool_sum", x, window=window, stride=stride, pad=pad)
    if count_include_pad:
        count: Any = scalar_like(math.prod(window), x)
    else:  # static shapes: the counts are a constant computed once, at trace time
        t = type_of(x)
        ones = np.ones((1, 1, *t.shape[2:]), t.dtype)
        count = _sum_impl(np, ones, window, stride, pad)[0, 0]
    return divide(summed, count)
