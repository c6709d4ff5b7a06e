"""The array-API lowering of ``conv_transpose`` (the adjoint of conv in its input), on the
node's planned scratch range (``conv_lower.Layout``).

With unit strides it is itself a convolution: of its input padded by ``dilation*(K-1) - pad``
per side, with the weight flipped and its channel axes swapped (no col2im, and the GEMM has
the forward's shape). Strided ones (or a padding wider than the dilated kernel) keep col2im:
per tile of samples, one GEMM into columns and one strided add per kernel offset into a
zero-padded image, whose interior is copied to the output.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .conv_lower import (
    Im2col,
    Layout,
    _finish,
    _padded_shape,
    _target,
    out_spatial,
    pointwise,
    tile_flops,
    tile_for,
    tiles,
    usable,
)


# ---- conv_transpose -----------------------------------------------------------------------
def _as_conv(kernel, stride, pad, dilation):
    """The pads of the conv that equals this unit-stride conv_transpose, or None (a stride, or
    a padding wider than the dilated kernel, keeps col2im)."""
    if any(s != 1 for s in stride):
        return None
    pads = tuple(
        (dl * (k - 1) - lo, dl * (k - 1) - hi) for k, dl, (lo, hi) in zip(kernel, dilation, pad)
    )
    return pads if all(lo >= 0 and hi >= 0 for lo, hi in pads) else None


def conv_transpose_layout(
    y_shape, w_shape, stride, pad, dilation, groups, in_shape, dtype, tile=None
):
    lay = Layout()
    n, o = y_shape[:2]
    kernel, ys = tuple(w_shape[2:]), tuple(y_shape[2:])
    c = w_shape[1] * groups
    if pointwise(kernel, pad):
        if not (all(s == 1 for s in stride) and ys == tuple(in_shape)):
            lay.add("cols", (n * c * math.prod(ys),), dtype)
        return lay
    flipped = _as_conv(kernel, stride, pad, dilation)
    if flipped is not None:
        lay.add("wflip", (c * (o // groups) * math.prod(kernel),), dtype)
        geo = Im2col(
            tuple(y_shape), kernel, stride, flipped, dilation, groups, np.dtype(dtype), tile
        )
        geo.add_to(lay)
        return lay
    padded = _padded_shape(in_shape, [(lo, max(hi, 0)) for lo, hi in pad])
    per = c * math.prod(kernel) * math.prod(ys)
    nb = tiles(n, 1, 1, np.dtype(dtype).itemsize, per, tile)[0]
    lay.add("cols", (nb * per,), dtype)
    lay.add("xpad", (nb * c * math.prod(padded),), dtype)
    return lay


def conv_transpose_impl(xp, y, w, stride, pad, dilation, groups, in_shape, out=None, scratch=None):
    n, ys, kernel = y.shape[0], tuple(y.shape[2:]), tuple(w.shape[2:])
    c, o = w.shape[1] * groups, w.shape[0]
    in_shape = tuple(in_shape)
    x = _target(xp, out, (n, c, *in_shape), y.dtype)
    tile = tile_for(xp)
    geom = (stride, pad, dilation, groups, in_shape, y.dtype, tile)
    lay = conv_transpose_layout(y.shape, w.shape, *geom)
    buf = lay.views(xp, usable(xp, scratch, lay))
    wt = w.reshape(groups, o // groups, math.prod(w.shape[1:])).transpose(0, 2, 1)  # G,Cg*K,Og
    yg = y.reshape(n, groups, o // groups, math.prod(ys))  # N, G, Og, Y
    if pointwise(kernel, pad):
        if all(s == 1 for s in stride) and ys == in_shape:  # a GEMM per sample and group
            xp.matmul(wt, yg, out=x.reshape(n, groups, c // groups, math.prod(ys)))
            return _finish(out, x)
        cols = buf["cols"].reshape(n, groups, c // groups, math.prod(ys))
        xp.matmul(wt, yg, out=cols)
        x[...] = 0
        hit = tuple(slice(0, s * (yy - 1) + 1, s) for s, yy in zip(stride, ys))
        x[(slice(None),) * 2 + hit] = cols.reshape((n, c, *ys))  # the rest get nothing
        return _finish(out, x)
    flipped = _as_conv(kernel, stride, pad, dilation)
    if flipped is not None:
        # w[G*Og, Cg, *K] -> w'[G*Cg, Og, *K], each kernel axis reversed
        wf = buf["wflip"].reshape(c, o // groups, *kernel)
        flip = (slice(None),) * 3 + (slice(None, None, -1),) * len(kernel)
        wf.reshape(groups, c // groups, o // groups, *kernel)[...] = w.reshape(
            groups, o // groups, c // groups, *kernel
        ).swapaxes(1, 2)[flip]
        dt = np.dtype(y.dtype)
        geo = Im2col(tuple(y.shape), kernel, stride, flipped, dilation, groups, dt, tile)
        wg = wf.reshape(groups, c // groups, (o // groups) * math.prod(kernel))
        xg = x.reshape(n, groups, c // groups, math.prod(in_shape))
        for ns, ps, cols in geo.each_tile(xp, y, buf):
            xp.matmul(wg, cols, out=xg[ns, :, :, ps])
        return _finish(out, x)
    geom = (stride, pad, dilation, kernel, in_shape, tile)
    return _finish(out, _col2im(xp, x, yg, wt, buf, *geom))


def _col2im(xp, x, yg, wt, buf, stride, pad, dilation, kernel, in_shape, tile):
    """Per tile of samples: the GEMM into columns ``[n, C, *K, *Y]``, then one strided add per
    kernel offset into the zero-padded image, whose interior is the tile's slice of x."""
    n, c = x.shape[:2]
    ys = out_spatial(in_shape, kernel, stride, pad, dilation)
    padded = _padded_shape(in_shape, [(lo, max(hi, 0)) for lo, hi in pad])
    per = c * math.prod(kernel) * math.prod(ys)
    nb = tiles(n, 1, 1, x.dtype.itemsize, per, tile)[0]
    crop = tuple(slice(lo, lo + s + min(hi, 0)) for s, (lo, hi) in zip(in_shape, pad))
    kept = tuple(slice(0, s + min(hi, 0)) for s, (_, hi) in zip(in_shape, pad))
    if any(hi < 0 for _, hi in pad):  # the cropped high end gets nothing
        x[...] = 0
    for n0 in range(0, n, nb):
        m = min(n, n0 + nb) - n0
        cols = buf["cols"][: m * per].reshape(m, *yg.shape[1:2], wt.shape[1], yg.shape[3])
        xp.matmul(wt, yg[n0 : n0 + m], out=cols)
        cols = cols.reshape(m, c, *kernel, *ys)
        xpad = buf["xpad"][: m * c * math.prod(padded)].reshape(m, c, *padded)
        xpad[...] = 0
        for kk in itertools.product(*(range(k) for k in kernel)):
            sl = tuple(
                slice(k * dl, k * dl + st * (yy - 1) + 1, st)
                for k, dl, st, yy in zip(kk, dilation, stride, ys)
            )
            xpad[(slice(None), slice(None), *sl)] += cols[(slice(None), slice(None), *kk)]
        x[(slice(n0, n0 + m), slice(None), *kept)] = xpad[(slice(None), slice(None), *crop)]
    return x


def conv_transpose_flops(y_shape, w_shape, stride, pad, dilation, groups, in_shape, dtype):
    """The largest single GEMM call (see conv_lower.conv_flops)."""
    n, o = y_shape[:2]
    kernel, ys = tuple(w_shape[2:]), tuple(y_shape[2:])
    c = w_shape[1] * groups
    if pointwise(kernel, pad):
        return 2 * n * o * (c // groups) * math.prod(ys)
    flipped = _as_conv(kernel, stride, pad, dilation)
    if flipped is not None:
        geo = Im2col(tuple(y_shape), kernel, stride, flipped, dilation, groups, np.dtype(dtype))
        return tile_flops(geo, c // groups)
    per = c * math.prod(kernel) * math.prod(ys)
    nb = tiles(n, 1, 1, np.dtype(dtype).itemsize, per)[0]
    return 2 * nb * c * math.prod(kernel) * (o // groups) * math.prod(ys)
