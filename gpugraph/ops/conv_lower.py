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

conv_transpose is lowered in ``conv_transpose_lower`` on the same pieces: with unit strides as a
conv with the flipped weight, else with col2im.
"""

from __future__ import annotations

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


# ---- GEMM sizes (the BLAS thread policy asks an op for its flops: backends/blas.py) ---------
def tile_flops(geo: Im2col, og: int) -> int:
    """2*m*n*k of one tile's GEMM call, every group and sample of the tile together."""
    nb, rows = geo.tiling
    return 2 * nb * geo.groups * og * geo.ck * rows * math.prod(geo.ys[1:])


def conv_flops(x_shape, w_shape, stride, pad, dilation, groups, dtype) -> int:
    """The largest single GEMM call of a conv: tiles are small, so the policy keeps them on one
    thread (each call waiting for more threads cost far more than it gained, measured)."""
    o, kernel = w_shape[0], tuple(w_shape[2:])
    if pointwise(kernel, pad):
        ys = out_spatial(x_shape[2:], kernel, stride, pad, dilation)
        return 2 * x_shape[0] * o * (x_shape[1] // groups) * math.prod(ys)
    geo = Im2col(tuple(x_shape), kernel, stride, pad, dilation, groups, np.dtype(dtype))
    return tile_flops(geo, o // groups)


def conv_weight_flops(x_shape, y_shape, stride, pad, dilation, groups, kernel, dtype) -> int:
    o, kernel = y_shape[1], tuple(kernel)
    if pointwise(kernel, pad):
        return 2 * x_shape[0] * o * (x_shape[1] // groups) * math.prod(y_shape[2:])
    geo = Im2col(tuple(x_shape), kernel, stride, pad, dilation, groups, np.dtype(dtype))
    return tile_flops(geo, o // groups)
