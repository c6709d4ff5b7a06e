"""The strided depthwise ``conv_transpose`` (multiplier 1) without col2im: by output phase.

Input position ``p = s*q + r`` of the padded gradient (per axis) receives only the kernel taps
``k`` with ``k*dl = r (mod s)``, at ``y[q - (k*dl - r)//s]``; those taps are evenly spaced,
so each phase ``r`` is a unit-stride depthwise conv of y with the phase's taps, flipped, at
dilation ``dl / gcd(s, dl)``: the direct flat-run lowering (conv_depthwise) once per phase,
written into the phase's strided positions of the result. Phases are a partition of the
positions, so each is written once (zeros where a phase has no tap).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from .conv_depthwise import dw_conv_impl, dw_conv_layout
from .conv_lower import Layout, _finish, _target, usable


@dataclass(frozen=True)
class _Axis:
    """One axis of one phase: the taps, where its outputs sit, the conv that makes them."""

    taps: tuple[int, ...]  # kernel indices, flipped (the conv's order)
    start: int  # first x position of the phase
    count: int  # its x positions
    pad: tuple[int, int]  # the phase conv's padding of y
    dilation: int
    skip: int  # leading phase-conv outputs before x's first position (computed, dropped)


def _axis_phases(k, s, dl, lo, size, y) -> list[_Axis]:
    out = []
    for r in range(s):
        taps = [t for t in range(k) if (t * dl - r) % s == 0]
        q0 = -(-(lo - r) // s)
        count = (lo + size - 1 - r) // s - q0 + 1
        if count <= 0:
            continue
        a = [(t * dl - r) // s for t in taps]
        step = a[1] - a[0] if len(a) > 1 else 1
        # the phase conv starts at y[-lo_g]; where that would be inside y (lo_g < 0), it
        # starts at y[0] instead and its first -lo_g outputs are dropped
        lo_g = (a[-1] - q0) if taps else 0
        skip = max(0, -lo_g)
        lo_g += skip
        hi_g = count + skip + (len(a) - 1) * step - y - lo_g if taps else 0
        start = s * q0 + r - lo
        out.append(_Axis(tuple(reversed(taps)), start, count, (lo_g, hi_g), step, skip))
    return out


@functools.lru_cache(maxsize=256)
def _phases(kernel, stride, pad, dilation, in_shape, ys):
    axes = [
        _axis_phases(k, s, dl, lo, size, y)
        for k, s, dl, (lo, _), size, y in zip(kernel, stride, dilation, pad, in_shape, ys)
    ]
    return list(itertools.product(*axes))


def _geo(y_shape, w_shape, stride, pad, dilation, in_shape):
    t = tuple
    return _phases(
        t(w_shape[2:]), t(stride), t(map(t, pad)), t(dilation), t(in_shape), t(y_shape[2:])
    )


def dw_phased_ok(y_shape, w_shape, groups, stride, pad, dilation, in_shape) -> bool:
    """Depthwise (``w[C, 1, *K]``, groups = C > 1, multiplier 1) with a stride."""
    return (
        groups > 1
        and w_shape[0] == groups
        and w_shape[1] == 1
        and y_shape[1] == groups
        and any(s > 1 for s in stride)
    )


def _conv_layouts(y_shape, w_shape, phases, dtype):
    for axes in phases:
        if all(ax.taps for ax in axes):
            sub = (w_shape[0], 1, *(len(ax.taps) for ax in axes))
            geom = ((1,) * len(axes), [ax.pad for ax in axes], [ax.dilation for ax in axes])
            yield axes, sub, geom, dw_conv_layout(y_shape, sub, *geom, dtype)


def dw_phased_layout(y_shape, w_shape, stride, pad, dilation, in_shape, dtype) -> Layout:
    phases = _geo(y_shape, w_shape, stride, pad, dilation, in_shape)
    n, c = y_shape[:2]
    lay = Layout()
    lay.add("res", (n * c * max(math.prod(ax.count + ax.skip for ax in p) for p in phases),), dtype)
    lay.add("wsub", (math.prod(w_shape),), dtype)
    conv = max((cl.nbytes for *_, cl in _conv_layouts(y_shape, w_shape, phases, dtype)), default=0)
    lay.add("conv", (conv,), np.uint8)
    return lay


def dw_phased_impl(xp, y, w, stride, pad, dilation, in_shape, out=None, scratch=None):
    n, c = y.shape[:2]
    phases = _geo(y.shape, w.shape, stride, pad, dilation, in_shape)
    x = _target(xp, out, (n, c, *in_shape), y.dtype)
    lay = dw_phased_layout(y.shape, w.shape, stride, pad, dilation, in_shape, y.dtype)
    buf = lay.views(xp, usable(xp, scratch, lay))
    convs = list(_conv_layouts(y.shape, w.shape, phases, y.dtype))
    if len(convs) < len(phases):  # a phase without a tap: its positions get zeros
        x[...] = 0
    for axes, sub, geom, _ in convs:
        ws = buf["wsub"][: math.prod(sub)].reshape(sub)
        ws[...] = w[np.ix_(range(c), [0], *(ax.taps for ax in axes))]
        rs = tuple(ax.count + ax.skip for ax in axes)
        res = buf["res"][: n * c * math.prod(rs)].reshape(n, c, *rs)
        dw_conv_impl(xp, y, ws, *geom, out=res, scratch=buf["conv"])
        res = res[(slice(None), slice(None), *(slice(ax.skip, None) for ax in axes))]
        at = tuple(
            slice(ax.start, ax.start + stride[a] * (ax.count - 1) + 1, stride[a])
            for a, ax in enumerate(axes)
        )
        x[(slice(None), slice(None), *at)] = res
    return _finish(out, x)
