"""Depthwise convolution (one input channel per group: ``w[O, 1, *K]`` with ``groups = C``,
``O = m*C``) and its adjoints without im2col's 6-d window copy.

Through im2col a depthwise conv is C GEMMs of ``[m, prod(K)] @ [prod(K), positions]`` whose
columns come from a strided copy of a 6-d window view; that copy dominated (shufflenet's 3x3
depthwise convs ran at 0.22-0.40x torch's speed). Here each channel's padded input is one flat
run (``Flat``): every kernel tap reads a shifted 1-d slice of it, so the columns of a channel
tile are one copy from an overlapping strided view, then one batched matmul per tile. Strides
are handled by splitting the input into its phases first. ``conv_weight`` is the same with the
gradient laid out flat, and a unit-stride ``conv_transpose`` with multiplier 1 is the forward
with the kernel flipped. Measured in bench/results/conv-cpu-2026-12-01-4.md.

Every temporary (padded input or phases, the column tile, the flat result tile, the flipped
weight) is a piece of the node's planned scratch range (``conv_lower.Layout``).
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
    usable,
)


def is_depthwise(c: int, w_in: int, groups: int, kernel, stride) -> bool:
    """One input channel per group, more than one group, and a kernel im2col would copy."""
    return groups > 1 and w_in == 1 and c == groups and not all(k == 1 for k in kernel)


@dataclass
class Flat:
    """The padded input of one channel as a flat run: output position ``i`` (an index tuple)
    of kernel tap ``k`` reads element ``off(k) + t(i)`` with ``t(i) = sum_a i_a * P_a`` (``P``:
    the strides, in elements, of the image the run holds), so every tap is one 1-d view per
    channel with a long inner loop. Positions ``t`` that would fall past a row's end are junk
    columns, computed and dropped (about ``K-1`` per row).

    With strides ``s`` the run holds the input's ``prod(s)`` *phases* one after another
    (phase ``r`` = ``xpad[r0::s0, r1::s1, ...]``, each padded to ``ceil(S/s)`` per axis): tap k
    on axis a reads ``xpad[s*i + k*dl] = phase[(k*dl) % s][i + (k*dl) // s]``, unit-stride
    again, so there are no more junk columns than at stride 1. The derived sizes are computed
    once (lru_cache on ``_flat_of``): the impls run at every node step."""

    padded: tuple[int, ...]  # the padded input's spatial shape
    ys: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]

    def __post_init__(self) -> None:
        self.sq = tuple(-(-sp // st) for sp, st in zip(self.padded, self.stride))  # a phase
        p = tuple(math.prod(self.sq[a + 1 :]) for a in range(len(self.sq)))
        self.pstrides = p
        self.phases = math.prod(self.stride)
        self.run = self.phases * math.prod(self.sq)  # elements per channel
        self.span = sum((y - 1) * q for y, q in zip(self.ys, p)) + 1  # last position + 1
        self.full = self.ys[0] * p[0]  # room for the view [Y0, *sq[1:]]
        self.taps = math.prod(self.kernel)
        offs = []
        for kk in itertools.product(*(range(k) for k in self.kernel)):
            r = [k * dl % st for k, dl, st in zip(kk, self.dilation, self.stride)]
            q = [k * dl // st for k, dl, st in zip(kk, self.dilation, self.stride)]
            phase = sum(ra * math.prod(self.stride[a + 1 :]) for a, ra in enumerate(r))
            offs.append(phase * math.prod(self.sq) + sum(qa * pa for qa, pa in zip(q, p)))
        self.offs = offs

    def offsets(self):
        return self.offs

    def split(self, xp, xpad, flat):
        """``xpad[N, C, *padded]`` as flat runs ``[N, C, run]``: itself at unit strides, else
        its phases written into ``flat`` (a scratch piece of ``N*C*run`` elements)."""
        n, c = xpad.shape[:2]
        if self.phases == 1:
            if not xpad.flags.c_contiguous:
                xpad = xp.ascontiguousarray(xpad)
            return xpad.reshape(n, c, self.run)  # (-1 fails at size 0)
        ph = flat[: n * c * self.run].reshape(n, c, self.phases, *self.sq)
        ph[...] = 0  # a phase shorter than ceil(S/s) leaves a tail no real position reads
        for i, r in enumerate(itertools.product(*(range(st) for st in self.stride))):
            src = xpad[
                (slice(None), slice(None), *(slice(ra, None, st) for ra, st in zip(r, self.stride)))
            ]
            ph[(slice(None), slice(None), i, *(slice(0, e) for e in src.shape[2:]))] = src
        return ph.reshape(n, c, self.run)

    def shifted(self, xp, xflat, cols):
        """``cols[:, tap, t] = xflat[:, off(tap) + t]``: at unit strides one copy from an
        overlapping strided view ``[C, *K, span]`` of the runs (measured faster than a copy per
        tap, and than im2col's copy of a 6-d window view); with phases, a copy per tap."""
        if self.phases > 1:
            for i, off in enumerate(self.offs):
                cols[:, i] = xflat[:, off : off + self.span]
            return
        isz = xflat.strides[-1]
        steps = tuple(dl * q * isz for dl, q in zip(self.dilation, self.pstrides))
        shape = (xflat.shape[0], *self.kernel, self.span)
        v = xp.lib.stride_tricks.as_strided(xflat, shape, (xflat.strides[0], *steps, isz))
        cols.reshape(shape)[...] = v

    def read(self, xflat, off):
        """``xflat[..., off + t]`` for t < span (unit strides)."""
        return xflat[..., off : off + self.span]

    def valid(self, yfull):
        """The output positions of flat results ``yfull[..., full]``."""
        lead = yfull.shape[:-1]
        v = yfull.reshape(*lead, self.ys[0], *self.sq[1:])
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
    return Flat(padded, tuple(ys), tuple(kernel), tuple(stride), tuple(dilation))


def _chunk(c: int, per_channel: int, itemsize: int) -> int:
    """Channels per tile: its shifted runs and its result in about 2 * TILE_BYTES (measured
    on shufflenet's shapes: 3-8% faster than 1x, fewer NumPy calls; 4x was no better)."""
    return max(1, min(c, 2 * TILE_BYTES // max(per_channel * itemsize, 1)))


def _runs(xp, x, pad, buf, geo):
    """x zero-padded (scratch ``xpad``) as flat runs; with strides its phases are written
    straight from x into scratch ``xph`` (no padded copy: it cost more than the split)."""
    if geo.phases == 1:
        return geo.split(xp, pad_into(x, pad, buf.get("xpad"), 0), None)
    n, c = x.shape[:2]
    x = x[
        (slice(None),) * 2 + tuple(slice(0, e + min(hi, 0)) for e, (_, hi) in zip(x.shape[2:], pad))
    ]
    ph = buf["xph"][: n * c * geo.run].reshape(n, c, geo.phases, *geo.sq)
    ph[...] = 0
    for i, r in enumerate(itertools.product(*(range(st) for st in geo.stride))):
        dst, src = [], []
        for ra, st, (lo, _), e, q in zip(r, geo.stride, pad, x.shape[2:], geo.sq):
            u0 = max(0, -(-(lo - ra) // st))  # first phase index on x: st*u + ra - lo >= 0
            j0 = st * u0 + ra - lo
            cnt = max(0, min(q - u0, -(-(e - j0) // st)))
            dst.append(slice(u0, u0 + cnt))
            src.append(slice(j0, j0 + st * (cnt - 1) + 1 if cnt else j0, st))
        ph[(slice(None), slice(None), i, *dst)] = x[(slice(None), slice(None), *src)]
    return ph.reshape(n, c, geo.run)


def _add_pieces(lay, x_shape, pad, geo, dtype):
    if pads(pad) and geo.phases == 1:
        lay.add("xpad", (padded_elems(x_shape, pad),), dtype)
    if geo.phases > 1:
        lay.add("xph", (x_shape[0] * x_shape[1] * geo.run,), dtype)


# ---- conv ---------------------------------------------------------------------------------
def dw_conv_layout(x_shape, w_shape, stride, pad, dilation, dtype, tile=None) -> Layout:
    lay = Layout()
    c, m = x_shape[1], w_shape[0] // x_shape[1]
    geo = _flat(x_shape, w_shape[2:], stride, pad, dilation)
    _add_pieces(lay, x_shape, pad, geo, dtype)
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
    xflat = _runs(xp, x, pad, buf, geo)  # N, C, flat
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
    _add_pieces(lay, x_shape, pad, geo, dtype)
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
    xflat = _runs(xp, x, pad, buf, geo)
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


# ---- conv_transpose (the adjoint in x of a unit-stride depthwise conv with multiplier 1) ----
def _flipped_pads(kernel, pad, dilation):
    pads = tuple(
        (dl * (k - 1) - lo, dl * (k - 1) - hi) for k, dl, (lo, hi) in zip(kernel, dilation, pad)
    )
    return pads if all(lo >= 0 and hi >= 0 for lo, hi in pads) else None


def dw_transpose_ok(y_shape, w_shape, groups, kernel, pad, stride, dilation) -> bool:
    """conv_transpose with ``w[C, 1, *K]``, ``groups = C``, unit strides and a padding within
    the dilated kernel: itself a depthwise conv of its input with the kernel flipped (as
    conv_transpose_lower does for im2col). Multipliers above 1 (the flipped conv sums m
    channels) and strides keep the general path; a scatter-add lowering of those measured
    4x slower than col2im (bench/results/conv-cpu-2026-12-01-4.md)."""
    return (
        groups > 1
        and w_shape[0] == groups
        and w_shape[1] == 1
        and y_shape[1] == groups
        and all(st == 1 for st in stride)
        and not all(k == 1 for k in kernel)
        and _flipped_pads(kernel, pad, dilation) is not None
    )


def dw_transpose_layout(y_shape, w_shape, stride, pad, dilation, dtype) -> Layout:
    kernel = tuple(w_shape[2:])
    fp = _flipped_pads(kernel, pad, dilation)
    lay = dw_conv_layout(y_shape, w_shape, stride, fp, dilation, dtype)
    lay.add("wflip", (math.prod(w_shape),), dtype)  # after the conv's pieces: they are a prefix
    return lay


def dw_transpose_impl(xp, y, w, stride, pad, dilation, out=None, scratch=None):
    kernel = tuple(w.shape[2:])
    fp = _flipped_pads(kernel, pad, dilation)
    lay = dw_transpose_layout(y.shape, w.shape, stride, pad, dilation, y.dtype)
    scratch = usable(xp, scratch, lay)
    wf = lay.views(xp, scratch)["wflip"].reshape(w.shape)
    wf[...] = w[(slice(None), slice(None), *(slice(None, None, -1),) * len(kernel))]
    return dw_conv_impl(xp, y, wf, stride, fp, dilation, out=out, scratch=scratch)
