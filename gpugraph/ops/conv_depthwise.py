"""Depthwise convolution (one input channel per group: ``w[O, 1, *K]`` with ``groups = C``,
``O = m*C``) and its two adjoints without im2col: ``prod(K)`` shifted multiply-adds over the
padded input, each a NumPy/CuPy broadcast of one weight per channel.

Through im2col a depthwise conv is C GEMMs of ``[m, prod(K)] @ [prod(K), positions]``: each too
small for BLAS, so the batched matmul spent its time in per-matrix overhead and the column copy
(shufflenet's 3x3 depthwise convs ran at 0.22-0.40x torch's speed; bench/results/
conv-cpu-2026-12-01-4.md). Here every pass is a strided elementwise op over one cache-sized
tile of the output (runs of samples, or of rows of one sample: ``conv_lower.tiles``).

The pieces live on the node's planned scratch range (``conv_lower.Layout``): the zero-padded
input, and one product tile.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from .conv_lower import (
    TILE_BYTES,
    Layout,
    _finish,
    _padded_shape,
    _target,
    out_spatial,
    pad_into,
    padded_elems,
    pads,
    pointwise,
    usable,
)


def is_depthwise(c: int, w_in: int, groups: int, kernel, stride) -> bool:
    """One input channel per group, more than one group, unit strides, and a kernel im2col
    would copy. Strided ones keep im2col: their flat runs would be half junk columns (measured
    slower than im2col at stride 2: bench/results/conv-cpu-2026-12-01-4.md)."""
    return (
        groups > 1
        and w_in == 1
        and c == groups
        and all(st == 1 for st in stride)
        and not all(k == 1 for k in kernel)
    )


@dataclass
class Flat:
    """The padded input of one channel as a flat run: output position ``i`` (an index tuple)
    of kernel offset ``k`` reads element ``off(k) + s * t(i)`` with ``t(i) = sum_a i_a * P_a``
    (``P``: the padded input's strides in elements), so every offset is one strided 1-d view
    per channel, with a long inner loop. Positions ``t`` whose index would fall past an
    output edge are junk columns, computed and dropped (about ``K-1`` per row).
    The derived sizes are computed once: the impls are called per node step."""

    padded: tuple[int, ...]
    ys: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: int
    dilation: tuple[int, ...]

    def __post_init__(self) -> None:
        p = tuple(math.prod(self.padded[a + 1 :]) for a in range(len(self.padded)))
        self.pstrides = p
        self.span = sum((y - 1) * q for y, q in zip(self.ys, p)) + 1  # last position + 1
        self.full = self.ys[0] * p[0]  # room for the view [Y0, *padded[1:]]
        self.taps = math.prod(self.kernel)
        self.offs = [
            sum(k * dl * q for k, dl, q in zip(kk, self.dilation, p))
            for kk in itertools.product(*(range(k) for k in self.kernel))
        ]

    def offsets(self):
        return self.offs

    def shifted(self, xp, xflat, cols):
        """``cols[:, taps, t] = xflat[:, off(tap) + t]`` (unit stride): one copy from an
        overlapping strided view ``[C, *K, span]`` of the flat runs (measured faster than a copy
        per tap, and than im2col's copy of a 6-d window view)."""
        isz = xflat.strides[-1]
        steps = tuple(dl * q * isz for dl, q in zip(self.dilation, self.pstrides))
        shape = (xflat.shape[0], *self.kernel, self.span)
        v = xp.lib.stride_tricks.as_strided(xflat, shape, (xflat.strides[0], *steps, isz))
        cols.reshape(shape)[...] = v

    def read(self, xflat, off):
        """``xflat[..., off + s*t]`` for t < span."""
        return xflat[..., off : off + self.stride * (self.span - 1) + 1 : self.stride]

    def valid(self, yfull):
        """The output positions of flat results ``yfull[..., full]``."""
        lead = yfull.shape[:-1]
        v = yfull.reshape(*lead, self.ys[0], *self.padded[1:])
        return v[(Ellipsis, slice(None), *(slice(0, y) for y in self.ys[1:]))]


def _flat(x_shape, kernel, stride, pad, dilation) -> Flat:
    t = tuple
    return _flat_of(t(x_shape), t(kernel), t(stride), t(map(t, pad)), t(dilation))


@functools.lru_cache(maxsize=512)  # called per node step: the geometry once per shape
def _flat_of(x_shape, kernel, stride, pad, dilation) -> Flat:
    padded = _padded_shape(x_shape[2:], [(lo, max(hi, 0)) for lo, hi in pad])
    crop = [(lo, min(hi, 0)) for lo, hi in pad]  # pad_into crops before padding
    padded = tuple(p + hi for p, (_, hi) in zip(padded, crop))
    ys = out_spatial(x_shape[2:], kernel, stride, pad, dilation)
    return Flat(padded, tuple(ys), tuple(kernel), stride[0], tuple(dilation))


def _chunk(c: int, per_channel: int, itemsize: int) -> int:
    """Channels per tile: its shifted runs and its result fit about L2 (TILE_BYTES)."""
    return max(1, min(c, TILE_BYTES // max(per_channel * itemsize, 1)))


def _padded_flat(xp, x, pad, buf):
    xpad = pad_into(x, pad, buf.get("xpad"), 0)
    if not xpad.flags.c_contiguous:
        xpad = xp.ascontiguousarray(xpad)
    return xpad.reshape(*xpad.shape[:2], math.prod(xpad.shape[2:]))  # -1 fails at size 0


# ---- conv ---------------------------------------------------------------------------------
def dw_conv_layout(x_shape, w_shape, stride, pad, dilation, dtype, tile=None) -> Layout:
    lay = Layout()
    c, m = x_shape[1], w_shape[0] // x_shape[1]
    geo = _flat(x_shape, w_shape[2:], stride, pad, dilation)
    if pads(pad):
        lay.add("xpad", (padded_elems(x_shape, pad),), dtype)
    cc = _chunk(c, m * geo.full + geo.taps * geo.span, np.dtype(dtype).itemsize)
    lay.add("acc", (cc * m * geo.full,), dtype)
    lay.add("cols", (cc * geo.taps * geo.span,), dtype)
    return lay


def dw_conv_impl(xp, x, w, stride, pad, dilation, out=None, scratch=None):
    n, c, o, kernel = x.shape[0], x.shape[1], w.shape[0], tuple(w.shape[2:])
    m = o // c
    geo = _flat(x.shape, kernel, stride, pad, dilation)
    y = _target(xp, out, (n, o, *geo.ys), x.dtype)
    lay = dw_conv_layout(x.shape, w.shape, stride, pad, dilation, x.dtype)
    buf = lay.views(xp, usable(xp, scratch, lay))
    xflat = _padded_flat(xp, x, pad, buf)  # N, C, flat
    wk = w.reshape(c, m, math.prod(kernel))
    yv = y.reshape(n, c, m, *geo.ys)
    kk = geo.taps
    cc = _chunk(c, m * geo.full + kk * geo.span, x.dtype.itemsize)
    for c0 in range(0, c, cc):
        c1 = min(c, c0 + cc)
        acc = buf["acc"][: (c1 - c0) * m * geo.full].reshape(c1 - c0, m, geo.full)
        cols = buf["cols"][: (c1 - c0) * kk * geo.span].reshape(c1 - c0, kk, geo.span)
        for b in range(n):
            geo.shifted(xp, xflat[b, c0:c1], cols)
            # [cc, m, K] @ [cc, K, span]: per channel, its m weights times its K shifted runs
            xp.matmul(wk[c0:c1], cols, out=acc[..., : geo.span])
            yv[b, c0:c1] = geo.valid(acc)
    return _finish(out, y)


# ---- conv_weight --------------------------------------------------------------------------
def dw_weight_layout(x_shape, y_shape, stride, pad, dilation, kernel, dtype, tile=None):
    lay = Layout()
    c, m = x_shape[1], y_shape[1] // x_shape[1]
    geo = _flat(x_shape, kernel, stride, pad, dilation)
    if pads(pad):
        lay.add("xpad", (padded_elems(x_shape, pad),), dtype)
    cc = _chunk(c, m * geo.full + geo.taps * geo.span, np.dtype(dtype).itemsize)
    lay.add("gfull", (cc * m * geo.full,), dtype)
    lay.add("cols", (cc * geo.taps * geo.span,), dtype)
    lay.add("part", (cc * m * geo.taps,), dtype)
    return lay


def dw_weight_impl(xp, x, y, stride, pad, dilation, kernel, out=None, scratch=None):
    """dw[c, j, k] = sum over samples and positions of y[n, c, j] * (x's window at k): the
    gradient laid out flat (junk columns zero), times each offset's flat view, summed."""
    n, c, o, kernel = x.shape[0], x.shape[1], y.shape[1], tuple(kernel)
    m = o // c
    geo = _flat(x.shape, kernel, stride, pad, dilation)
    dw = _target(xp, out, (o, 1, *kernel), x.dtype)
    lay = dw_weight_layout(x.shape, y.shape, stride, pad, dilation, kernel, x.dtype)
    buf = lay.views(xp, usable(xp, scratch, lay))
    xflat = _padded_flat(xp, x, pad, buf)
    yv = y.reshape(n, c, m, *geo.ys)
    dwv = dw.reshape(c, m, math.prod(kernel))
    dwv[...] = 0
    kk = geo.taps
    cc = _chunk(c, m * geo.full + kk * geo.span, x.dtype.itemsize)
    for c0 in range(0, c, cc):
        c1 = min(c, c0 + cc)
        gfull = buf["gfull"][: (c1 - c0) * m * geo.full].reshape(c1 - c0, m, geo.full)
        gfull[...] = 0  # junk columns stay zero
        cols = buf["cols"][: (c1 - c0) * kk * geo.span].reshape(c1 - c0, kk, geo.span)
        part = buf["part"][: (c1 - c0) * m * kk].reshape(c1 - c0, m, kk)
        for b in range(n):
            geo.valid(gfull)[...] = yv[b, c0:c1]
            geo.shifted(xp, xflat[b, c0:c1], cols)
            # [cc, m, span] @ [cc, span, K]: per channel, gradient dotted with each shifted run
            xp.matmul(gfull[..., : geo.span], cols.transpose(0, 2, 1), out=part)
            dwv[c0:c1] += part
    return _finish(out, dw)


# ---- conv_transpose (one output channel per input channel: m == 1) -------------------------
def dw_transpose_ok(y_shape, w_shape, groups, kernel, pad, stride) -> bool:
    """conv_transpose that is the adjoint of a unit-stride depthwise conv: ``w[C*m, 1, *K]``,
    ``groups = C`` (each output channel gathers its own m input channels); a 1x1 unpadded
    kernel keeps its GEMM."""
    return (
        groups > 1
        and w_shape[1] == 1
        and y_shape[1] == w_shape[0]
        and w_shape[0] % groups == 0
        and all(st == 1 for st in stride)
        and not pointwise(kernel, pad)
    )


def _x_geo(x_shape, kernel, stride, pad, dilation):
    return _flat(x_shape, kernel, stride, pad, dilation)


def dw_transpose_layout(y_shape, w_shape, stride, pad, dilation, groups, in_shape, dtype):
    lay = Layout()
    n, o, c = y_shape[0], y_shape[1], groups
    geo = _x_geo((n, c, *in_shape), w_shape[2:], stride, pad, dilation)
    lay.add("xpad", (n * c * math.prod(geo.padded),), dtype)
    lay.add("gfull", (o * geo.full,), dtype)
    lay.add("cols", (c * geo.taps * geo.span,), dtype)
    return lay


def dw_transpose_impl(xp, y, w, stride, pad, dilation, groups, in_shape, out=None, scratch=None):
    """x[n, c] = sum over taps k and multipliers j of w[c*m+j, k] * y[n, c*m+j], added at the
    positions tap k reads: per sample one batched GEMM ``[C, K, m] @ [C, m, span]`` (the sum
    over j), then one strided add per tap into the zero-padded flat image, whose interior is
    x."""
    n, o, c, kernel = y.shape[0], y.shape[1], groups, tuple(w.shape[2:])
    m, in_shape = o // c, tuple(in_shape)
    geo = _x_geo((n, c, *in_shape), kernel, stride, pad, dilation)
    x = _target(xp, out, (n, c, *in_shape), y.dtype)
    geom = (stride, pad, dilation, groups, in_shape, y.dtype)
    lay = dw_transpose_layout(y.shape, w.shape, *geom)
    buf = lay.views(xp, usable(xp, scratch, lay))
    xpad = buf["xpad"].reshape(n, c, *geo.padded)
    xpad[...] = 0
    xflat = xpad.reshape(n, c, math.prod(geo.padded))
    gfull = buf["gfull"].reshape(c, m, geo.full)
    gfull[...] = 0  # junk columns stay zero: they land on real pixels
    cols = buf["cols"].reshape(c, geo.taps, geo.span)
    wk = w.reshape(c, m, math.prod(kernel)).transpose(0, 2, 1)  # C, K, m
    yv = y.reshape(n, c, m, *y.shape[2:])
    for b in range(n):
        geo.valid(gfull)[...] = yv[b]
        xp.matmul(wk, gfull[..., : geo.span], out=cols)
        for i, off in enumerate(geo.offsets()):
            geo.read(xflat[b], off)[...] += cols[:, i]
    crop = tuple(slice(lo, lo + s + min(hi, 0)) for s, (lo, hi) in zip(in_shape, pad))
    kept = tuple(slice(0, s + min(hi, 0)) for s, (_, hi) in zip(in_shape, pad))
    if any(hi < 0 for _, hi in pad):  # the cropped high end (output_padding) gets nothing
        x[...] = 0
    x[(slice(None), slice(None), *kept)] = xpad[(slice(None), slice(None), *crop)]
    return _finish(out, x)
