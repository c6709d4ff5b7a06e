"""resize / upsample of the spatial dims of NCHW-style arrays, *composite*: per resized axis a
``take`` of source rows (nearest) or of the two neighbours blended by constant weights
(linear), with the coordinates of torch.nn.functional.interpolate(align_corners=False)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ArgumentError, ShapeError
from .core import type_of
from .index import take
from .shape import reshape

MODES = ("nearest", "linear")


def _axis_nearest(x, axis, n, m):
    src = np.minimum((np.arange(m) * n) // m, n - 1)  # floor(dst * n / m), exact in ints
    return take(x, src.astype(np.int64), axis=axis)


def _axis_linear(x, axis, n, m):
    src = np.maximum((np.arange(m) + 0.5) * (n / m) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    shape = [1] * type_of(x).ndim
    shape[axis] = m
    w1 = reshape((src - i0).astype(type_of(x).dtype), shape)
    w0 = reshape((1 - (src - i0)).astype(type_of(x).dtype), shape)
    return take(x, i0, axis=axis) * w0 + take(x, i1, axis=axis) * w1


def resize(x: Any, size: Any, mode: str = "nearest") -> Any:
    """Resize the dims after the first two (N, C) to ``size`` (an int or one per dim), as
    torch.nn.functional.interpolate with align_corners=False: "nearest" or "linear" (which
    is bilinear / trilinear over several dims, applied one axis at a time)."""
    if mode not in MODES:
        raise ArgumentError(f"resize: mode must be one of {MODES}, got {mode!r}")
    t = type_of(x)
    if t.dtype.kind != "f" and mode == "linear":
        raise ArgumentError(f"resize: linear mode needs a float array, got {t.dtype}")
    spatial = t.shape[2:]
    if not spatial:
        raise ShapeError(f"resize: needs (N, C, *spatial) with a spatial dim, got {t.shape}")
    sizes = (size,) * len(spatial) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(sizes) != len(spatial) or not all(
        isinstance(s, (int, np.integer)) and s > 0 for s in sizes
    ):
        raise ShapeError(f"resize: size {size!r} must be positive ints, one per spatial dim")
    for d, (n, m) in enumerate(zip(spatial, sizes)):
        if n == m:
            continue
        if n == 0:
            raise ShapeError(f"resize: cannot resize spatial dim {d} of size 0")
        step = _axis_nearest if mode == "nearest" else _axis_linear
        x = step(x, d + 2, n, int(m))
    return x


def upsample(x: Any, scale_factor: Any, mode: str = "nearest") -> Any:
    """``resize`` to floor(size * scale_factor) per spatial dim (integer factors match torch's
    interpolate(scale_factor=...) exactly)."""
    spatial = type_of(x).shape[2:]
    f = (scale_factor,) * len(spatial) if np.isscalar(scale_factor) else tuple(scale_factor)
    if len(f) != len(spatial):
        raise ShapeError(f"upsample: {len(f)} scale factors for {len(spatial)} spatial dims")
    return resize(x, [math.floor(n * s) for n, s in zip(spatial, f)], mode)


__all__ = ["resize", "upsample"]
