"""The array-API lowering of the three conv primitives (NumPy and CuPy share it), on a scratch
range the memory plan reserves for the node (docs/memory.md, "Per-node scratch").

Every temporary a primitive needs (the zero-padded input, the im2col tile, a flipped weight,
col2im's padded image, conv_weight's per-tile product) is a piece of one byte range laid out by
``Layout``. The same layout gives the op's ``scratch_bytes`` (what the planner reserves: a range
live only at that node's step) and the views the impl carves from the ``scratch=`` array the
runtime passes; an eager call (no plan) allocates the range itself.

im2col is tiled: a tile is a run of samples, or of output rows of one sample, whose columns fit
in ``TILE_BYTES`` (about L2), copied channel-major from a strided window view and consumed by
one batched GEMM per tile and group that writes straight into its slice of ``out``. Measured
(bench/results/conv-cpu-2026-12-01-3.md) against one im2col of the whole batch: the GEMM reads
its columns from cache instead of memory, and the scratch is a tile, not a batch of columns.

conv_transpose with unit strides is itself a convolution: of the output gradient, padded by
``dilation*(K-1) - pad`` per side, with the weight flipped and its channel axes swapped (no
col2im, and the GEMM has the forward's well-shaped ``K = O/groups*prod(K)``). Strided ones keep
col2im: per sample tile, one GEMM into columns and one strided add per kernel offset.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import GpuGraphError

TILE_BYTES = 1 << 20  # im2col columns per tile: about one core's L2
# On a GPU one tile is the whole batch (as before tiling): a tile loop would be many small
# launches, and the device has no per-core cache to fit. The planned range is sized for the CPU
# tiling, so a GPU call whose layout does not fit it takes its buffer from CuPy's pool instead.
GPU_TILE_BYTES = 1 << 62
ALIGN = 64  # bytes between pieces of the scratch range (a cache line)


@dataclass
class Layout:
    """Named pieces (shape, dtype) at aligned offsets of one byte range."""

    pieces: dict[str, tuple[int, tuple[int, ...], np.dtype]] = field(default_factory=dict)
    nbytes: int = 0

    def add(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        off = -(-self.nbytes // ALIGN) * ALIGN
        dt = np.dtype(dtype)
        self.pieces[name] = (off, tuple(shape), dt)
        self.nbytes = off + math.prod(shape) * dt.itemsize

    def views(self, xp: Any, scratch: Any) -> dict[str, Any]:
        """Each piece as a flat array of its dtype over ``scratch`` (a uint8 array of at least
        ``nbytes``; None: allocated here, for a call without a plan)."""
        if scratch is None:
            scratch = xp.empty(max(self.nbytes, 1), dtype=np.uint8)
        elif scratch.nbytes < self.nbytes:
            raise GpuGraphError(
                f"conv: the planned scratch range has {scratch.nbytes} bytes, the lowering "
                f"needs {self.nbytes} (a scratch_bytes / impl mismatch: a gpugraph bug)"
            )
        out = {}
        for name, (off, shape, dt) in self.pieces.items():
            n = math.prod(shape) * dt.itemsize
            out[name] = scratch[off : off + n].view(dt)
        return out


# ---- geometry -----------------------------------------------------------------------------
def out_spatial(spatial, kernel, stride, pad, dilation) -> tuple[int, ...]:
    return tuple(
        (s + lo + hi - dl * (k - 1) - 1) // st + 1
        for s, k, st, (lo, hi), dl in zip(spatial, kernel, stride, pad, dilation)
    )


def pointwise(kernel, pad) -> bool:
    """A 1x1 kernel without padding: the conv is a GEMM over the channel axis of (a strided
    slice of) x itself, with no im2col copy (dilation does not matter for a 1x1 kernel; a
    negative high padding, conv_transpose's output_padding, only drops trailing inputs)."""
    return all(k == 1 for k in kernel) and all(lo == 0 and hi <= 0 for lo, hi in pad)


def _needs_pad(pad) -> bool:
    return any(p != (0, 0) for p in pad)


def _padded_shape(spatial, pad) -> tuple[int, ...]:
    # a negative high padding crops the input instead
    return tuple(s + lo + hi for s, (lo, hi) in zip(spatial, pad))


def tiles(n: int, per_sample_rows: int, y0: int, itemsize: int, row_elems: int, tile=None):
    """(samples per tile, output rows per tile): whole samples while one fits ``tile`` bytes
    (TILE_BYTES if None), else runs of rows of the first spatial axis of one sample."""
    tile = TILE_BYTES if tile is None else tile
    per_row = max(row_elems * itemsize, 1)
    per_sample = per_row * per_sample_rows
    if per_sample <= tile:
        return max(1, min(n, tile // per_sample)), y0
    return 1, max(1, min(y0, tile // per_row))


def tile_for(xp: Any) -> int | None:
    """The tile size for an array module: None (TILE_BYTES) on NumPy, the batch on a GPU."""
    return None if xp is np else GPU_TILE_BYTES


def usable(xp: Any, scratch: Any, lay: Layout) -> Any:
    """The planned range, or None (allocate) where a GPU layout outgrows it (see
    GPU_TILE_BYTES); on NumPy a short range stays an error (Layout.views)."""
    if xp is not np and scratch is not None and scratch.nbytes < lay.nbytes:
        return None
    return scratch


@dataclass(frozen=True)
class Im2col:
    """The im2col tiling of a conv of ``x_shape`` with a ``kernel``; ``rest`` is the number of
    output positions per row of the first spatial axis."""

    x_shape: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    dtype: np.dtype
    tile: int | None = None  # bytes per tile (None: TILE_BYTES)

    @property
    def ys(self) -> tuple[int, ...]:
        return out_spatial(self.x_shape[2:], self.kernel, self.stride, self.pad, self.dilation)

    @property
    def ck(self) -> int:  # C/groups * prod(K): the GEMM's inner dimension
        return self.x_shape[1] // self.groups * math.prod(self.kernel)

    @property
    def tiling(self) -> tuple[int, int]:
        ys = self.ys
        row = self.groups * self.ck * math.prod(ys[1:])
        return tiles(self.x_shape[0], ys[0], ys[0], self.dtype.itemsize, row, self.tile)

    def add_to(self, lay: Layout) -> None:
        if pads(self.pad):
            lay.add("xpad", (padded_elems(self.x_shape, self.pad),), self.dtype)
        nb, rows = self.tiling
        lay.add("cols", (nb * self.groups * self.ck * rows * math.prod(self.ys[1:]),), self.dtype)

    def window_view(self, xp: Any, x: Any, buf: dict) -> Any:
        """``[N, C, *K, *Y]``: the window of every output position, over x zero-padded into
        the scratch piece ``xpad`` (no copy of x where there is no padding)."""
        d = len(self.kernel)
        x = pad_into(x, self.pad, buf.get("xpad"), 0)
        ext = tuple(dl * (k - 1) + 1 for k, dl in zip(self.kernel, self.dilation))
        v = xp.lib.stride_tricks.sliding_window_view(x, ext, axis=tuple(range(2, 2 + d)))
        idx = (slice(None),) * 2 + tuple(slice(None, None, s) for s in self.stride)
        v = v[idx + tuple(slice(None, None, dl) for dl in self.dilation)]  # N, C, *Y, *K
        return v.transpose(0, 1, *range(2 + d, 2 + 2 * d), *range(2, 2 + d))

    def each_tile(self, xp: Any, x: Any, buf: dict):
        """For each tile: (sample slice, flat output-position slice, its columns
        ``[samples, G, C/G*prod(K), positions]`` filled in the scratch piece ``cols``)."""
        v = self.window_view(xp, x, buf)
        n, c = self.x_shape[:2]
        ys = self.ys
        rest = math.prod(ys[1:])
        nb, rows = self.tiling
        for n0 in range(0, n, nb):
            n1 = min(n, n0 + nb)
            for r0 in range(0, ys[0], rows):
                r1 = min(ys[0], r0 + rows)
                shape = (n1 - n0, c, *self.kernel, r1 - r0, *ys[1:])
                cols = buf["cols"][: math.prod(shape)].reshape(shape)
                cols[...] = v[
                    (slice(n0, n1), slice(None), *(slice(None),) * len(self.kernel), slice(r0, r1))
                ]
                flat = cols.reshape(n1 - n0, self.groups, self.ck, (r1 - r0) * rest)
                yield slice(n0, n1), slice(r0 * rest, r1 * rest), flat


def pad_into(x: Any, pad, flat: Any, fill: Any) -> Any:
    """x with its spatial dims padded by ``pad`` ((low, high) each; a negative high crops),
    written into ``flat`` (a scratch piece of at least that many elements: only the borders
    are filled, then the interior copied); x itself where nothing is padded."""
    if any(hi < 0 for _, hi in pad):
        x = x[
            (slice(None),) * 2
            + tuple(slice(0, s + min(hi, 0)) for s, (_, hi) in zip(x.shape[2:], pad))
        ]
        pad = tuple((lo, max(hi, 0)) for lo, hi in pad)
    if not _needs_pad(pad):
        return x
    spatial = x.shape[2:]
    xpad = flat[: math.prod(x.shape[:2]) * math.prod(_padded_shape(spatial, pad))]
    xpad = xpad.reshape((*x.shape[:2], *_padded_shape(spatial, pad)))
    for a, ((lo, _), s) in enumerate(zip(pad, spatial)):  # the borders only
        lead = (slice(None),) * (2 + a)
        xpad[lead + (slice(0, lo),)] = fill
        xpad[lead + (slice(lo + s, None),)] = fill
    xpad[(slice(None),) * 2 + tuple(slice(lo, lo + s) for (lo, _), s in zip(pad, spatial))] = x
    return xpad


def pads(pad) -> bool:
    """Whether ``pad_into`` writes a padded copy (a negative high padding only crops)."""
    return _needs_pad([(lo, max(hi, 0)) for lo, hi in pad])


def padded_elems(shape, pad) -> int:
    """Elements of ``pad_into``'s result for an input of ``shape`` (at most)."""
    sp = _padded_shape(shape[2:], [(lo, max(hi, 0)) for lo, hi in pad])
    return math.prod(shape[:2]) * math.prod(sp)


# ---- out= handling ------------------------------------------------------------------------
def _target(xp: Any, out: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """Where to write: ``out`` where given and C-contiguous (the planned buffer), else a new
    array (copied into a strided ``out`` by ``_finish``)."""
    if out is not None and out.flags.c_contiguous:
        return out
    return xp.empty(shape, dtype=dtype)


def _finish(out: Any, res: Any) -> Any:
    if out is None or res is out:
        return res
    out[...] = res
    return out


def _strided(x, stride, ys):
    """x at the output positions of a 1x1 kernel: x itself where every position is one (stride
    1, nothing cropped), else a strided view."""
    if all(s == 1 for s in stride) and tuple(x.shape[2:]) == tuple(ys):
        return x
    return x[(slice(None),) * 2 + tuple(slice(0, s * (y - 1) + 1, s) for s, y in zip(stride, ys))]


# ---- conv ---------------------------------------------------------------------------------
def conv_layout(x_shape, w_shape, stride, pad, dilation, groups, dtype, tile=None) -> Layout:
    lay = Layout()
    if not pointwise(w_shape[2:], pad):
        kernel = tuple(w_shape[2:])
        geo = Im2col(tuple(x_shape), kernel, stride, pad, dilation, groups, np.dtype(dtype), tile)
        geo.add_to(lay)
    return lay


def conv_impl(xp, x, w, stride, pad, dilation, groups, out=None, scratch=None):
    n, o, kernel = x.shape[0], w.shape[0], tuple(w.shape[2:])
    ys = out_spatial(x.shape[2:], kernel, stride, pad, dilation)
    y = _target(xp, out, (n, o, *ys), x.dtype)
    wg = w.reshape(groups, o // groups, math.prod(w.shape[1:]))  # G, Og, Cg*K
    yg = y.reshape(n, groups, o // groups, math.prod(ys))
    if pointwise(kernel, pad):
        # [G, Og, Cg] @ [N, G, Cg, Y]: a GEMM per sample and group on x itself, NCHW out
        xs = _strided(x, stride, ys).reshape(n, groups, x.shape[1] // groups, math.prod(ys))
        xp.matmul(wg, xs, out=yg)
        return _finish(out, y)
    tile = tile_for(xp)
    geo = Im2col(tuple(x.shape), kernel, stride, pad, dilation, groups, np.dtype(x.dtype), tile)
    lay = Layout()
    geo.add_to(lay)
    buf = lay.views(xp, usable(xp, scratch, lay))
    for ns, ps, cols in geo.each_tile(xp, x, buf):
        # [G, Og, Cg*K] @ [n, G, Cg*K, P]: a GEMM per sample and group, into out's slice
        xp.matmul(wg, cols, out=yg[ns, :, :, ps])
    return _finish(out, y)


# ---- conv_weight --------------------------------------------------------------------------
def conv_weight_layout(
    x_shape, y_shape, stride, pad, dilation, groups, kernel, dtype, tile=None
) -> Layout:
    lay = Layout()
    o = y_shape[1]
    if pointwise(kernel, pad):
        return lay
    geo = Im2col(
        tuple(x_shape), tuple(kernel), stride, pad, dilation, groups, np.dtype(dtype), tile
    )
    geo.add_to(lay)
    lay.add("part", (geo.tiling[0] * groups * geo.ck * (o // groups),), dtype)
    lay.add("acc", (groups * geo.ck * (o // groups),), dtype)
    return lay


def conv_weight_impl(xp, x, y, stride, pad, dilation, groups, kernel, out=None, scratch=None):
    n, o = y.shape[:2]
    kernel = tuple(kernel)
    cg = x.shape[1] // groups
    dw = _target(xp, out, (o, cg, *kernel), x.dtype)
    acc = dw.reshape(groups, o // groups, cg * math.prod(kernel))
    yv = y.reshape(n, groups, o // groups, math.prod(y.shape[2:]))  # N, G, Og, Y
    if pointwise(kernel, pad):
        cols = _strided(x, stride, y.shape[2:]).reshape(n, groups, cg, math.prod(y.shape[2:]))
        per_sample = xp.matmul(yv, cols.transpose(0, 1, 3, 2))  # N, G, Og, Cg: small
        per_sample.sum(axis=0, out=acc)
        return _finish(out, dw)
    tile = tile_for(xp)
    geo = Im2col(tuple(x.shape), kernel, stride, pad, dilation, groups, np.dtype(x.dtype), tile)
    geom = (stride, pad, dilation, groups, kernel, x.dtype, tile)
    lay = conv_weight_layout(x.shape, y.shape, *geom)
    buf = lay.views(xp, usable(xp, scratch, lay))
    part = buf["part"].reshape(geo.tiling[0], groups, geo.ck, o // groups)
    acc_t = buf["acc"].reshape(groups, geo.ck, o // groups)
    acc_t[...] = 0
    for ns, ps, cols in geo.each_tile(xp, x, buf):
        got = part[: ns.stop - ns.start]
        # [n, G, Cg*K, P] @ [n, G, P, Og]: each tile's share of the transposed gradient (this
        # orientation measured 0.8x the time of y @ cols^T: bench/results/conv-cpu-*-3.md)
        xp.matmul(cols, yv[ns, :, :, ps].transpose(0, 1, 3, 2), out=got)
        for j in range(got.shape[0]):
            acc_t += got[j]
    acc[...] = acc_t.transpose(0, 2, 1)
    return _finish(out, dw)


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
