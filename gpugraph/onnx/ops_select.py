"""Selection, scatter, contraction and resampling converters: TopK, GatherElements,
ScatterElements, OneHot, Einsum, Resize. Each maps onto one gpugraph op whose semantics it
matches exactly; attribute forms the op does not compute exactly are refused, naming the node."""

from __future__ import annotations

import numpy as np

from .. import ops as _ops
from .table import NodeCtx, dtype_of, opt, register, shape_of

gg = _ops.API


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


@register("TopK")
def _top_k(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    k = attrs["k"] if node.opset < 10 else node.ints(ins[1], "K")[0]
    axis = attrs.get("axis", -1)
    # sorted=0 leaves the order unspecified, so the sorted order is a valid answer.
    if attrs.get("largest", 1):
        return gg["top_k"](x, int(k), axis)
    # The k smallest, smallest first, ties by position: a stable ascending argsort's head.
    idx = gg["argsort"](x, axis)
    a = axis % len(x.shape)
    idx = gg["getitem"](idx, (slice(None),) * a + (slice(0, int(k)),))
    return gg["take_along_axis"](x, idx, axis), idx


@register("GatherElements")
def _gather_elements(node: NodeCtx, ins: list, attrs: dict):
    return gg["gather"](ins[0], attrs.get("axis", 0), ins[1])


@register("ScatterElements")
def _scatter_elements(node: NodeCtx, ins: list, attrs: dict):
    x, idx, upd = ins
    reduce = _s(attrs.get("reduction", "none"))
    if reduce not in ("none", "add", "mul", "min", "max"):
        raise node.unsupported(f"reduction={reduce!r}")
    return gg["scatter"](x, attrs.get("axis", 0), idx, upd, reduce=reduce)


@register("OneHot")
def _one_hot(node: NodeCtx, ins: list, attrs: dict):
    idx, depth, values = ins
    depth = int(node.const(depth, "depth").reshape(-1)[0])
    if not np.issubdtype(dtype_of(idx), np.integer):
        raise node.unsupported("non-integer indices")
    rank = len(idx.shape)
    axis = attrs.get("axis", -1)
    axis = axis + rank + 1 if axis < 0 else axis
    zero, n = np.asarray(0, dtype_of(idx)), np.asarray(depth, dtype_of(idx))
    # ONNX counts indices in [-depth, 0) from the end; one_hot maps other values to all-off.
    idx = gg["where"](gg["less"](idx, zero), gg["add"](idx, n), idx)
    hot = gg["one_hot"](idx, depth, np.bool_)
    off = gg["getitem"](values, 0)
    on = gg["getitem"](values, 1)
    y = gg["where"](hot, on, off)
    return y if axis == rank else gg["moveaxis"](y, -1, axis)


@register("Einsum")
def _einsum(node: NodeCtx, ins: list, attrs: dict):
    # gg.einsum follows np.einsum, which is ONNX's definition, ``...`` included (broadcast
    # dims aligned from the right; an implicit output puts them first)
    return gg["einsum"](_s(attrs["equation"]).replace(" ", ""), *ins)


# Resize: gg.resize computes torch's interpolate(align_corners=False), which is ONNX's
# nearest + asymmetric + floor and linear + half_pixel / pytorch_half_pixel (with clamping at
# the border, as onnxruntime does).
_NEAREST_OK = {("asymmetric", "floor")}
_LINEAR_OK = ("half_pixel", "pytorch_half_pixel")


def _resize_sizes(node: NodeCtx, x, ins: list) -> list[int]:
    shape = shape_of(x)
    scales = node.const(opt(ins, 2), "scales")
    sizes = node.const(opt(ins, 3), "sizes")
    scales = None if scales is None or scales.size == 0 else scales
    sizes = None if sizes is None or sizes.size == 0 else sizes
    if sizes is not None:
        out = [int(s) for s in sizes.reshape(-1)]
        if len(out) != len(shape):
            raise node.unsupported("sizes with a length other than the input rank")
        return out
    f = [float(s) for s in scales.reshape(-1)]
    if len(f) != len(shape):
        raise node.unsupported("scales with a length other than the input rank")
    out = [int(np.floor(n * s)) for n, s in zip(shape, f)]
    # The op maps output i to input i * n / m; ONNX with scales uses i / scale, equal only
    # where the scale is exactly m / n.
    if any(m / n != s for n, m, s in zip(shape, out, f) if n):
        raise node.unsupported(f"scales {f} that are not exactly output/input sizes")
    return out


@register("Resize")
def _resize(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    mode = _s(attrs.get("mode", "nearest"))
    ctm = _s(attrs.get("coordinate_transformation_mode", "half_pixel"))
    nearest = _s(attrs.get("nearest_mode", "round_prefer_floor"))
    if node.opset < 11:
        # Opset 10 fixes asymmetric coordinates and leaves nearest's rounding to the runtime
        # (onnxruntime rounds up when shrinking): neither is the op's.
        raise node.unsupported("Resize before opset 11 (asymmetric coordinates)")
    for key, default in (("antialias", 0), ("keep_aspect_ratio_policy", "stretch")):
        if _s(attrs.get(key, default)) != default:
            raise node.unsupported(f"{key}={attrs[key]!r}")
    if "axes" in attrs:
        raise node.unsupported("the axes attribute")
    if mode == "nearest" and (ctm, nearest) not in _NEAREST_OK:
        raise node.unsupported(
            f"mode=nearest with coordinate_transformation_mode={ctm!r}, nearest_mode="
            f"{nearest!r} (only asymmetric + floor, torch's nearest, is computed exactly)"
        )
    if mode == "linear" and ctm not in _LINEAR_OK:
        raise node.unsupported(
            f"mode=linear with coordinate_transformation_mode={ctm!r} (only half_pixel and "
            "pytorch_half_pixel)"
        )
    if mode not in ("nearest", "linear"):
        raise node.unsupported(f"mode={mode!r}")
    shape = shape_of(x)
    out = _resize_sizes(node, x, ins)
    if out[:2] != list(shape[:2]):
        raise node.unsupported("resizing the first two (N, C) axes")
    if len(shape) < 3:
        raise node.unsupported("an input without spatial axes")
    inexact = [n and float(np.float32(m / n)) != m / n for n, m in zip(shape, out)]
    if mode == "nearest" and any(inexact):
        # ONNX's nearest index is floor(i / scale) with scale = m / n in float32; where that
        # ratio is inexact, rounding moves some indices (onnxruntime disagrees with the exact
        # floor(i * n / m) the op computes), so neither answer can be promised.
        raise node.unsupported(f"nearest {list(shape)} -> {out}: a size ratio inexact in float32")
    if ctm == "pytorch_half_pixel" and any(m == 1 and n != 1 for n, m in zip(shape, out)):
        # pytorch_half_pixel samples coordinate 0 for a length-1 output; the op the centre.
        raise node.unsupported("pytorch_half_pixel with an output length of 1")
    return gg["resize"](x, out[2:], mode)


@register("Upsample")
def _upsample(node: NodeCtx, ins: list, attrs: dict):
    # Upsample (opsets 7-9) uses asymmetric coordinates: nearest upscaling by a factor >= 1
    # with an exact output/input ratio is the op's floor(i * n / m); linear (asymmetric, not
    # half_pixel) is not.
    x = ins[0]
    mode = _s(attrs.get("mode", "nearest"))
    if mode != "nearest":
        raise node.unsupported(f"Upsample mode={mode!r} (asymmetric coordinates)")
    f = attrs["scales"] if node.opset < 9 else node.const(ins[1], "scales").reshape(-1).tolist()
    shape = shape_of(x)
    if len(f) != len(shape) or len(shape) < 3 or any(s < 1 for s in f):
        raise node.unsupported(f"scales {list(f)} (one per dim, each >= 1)")
    out = [int(np.floor(n * s)) for n, s in zip(shape, f)]
    if out[:2] != list(shape[:2]):
        raise node.unsupported("resizing the first two (N, C) axes")
    if any(m / n != s or float(np.float32(m / n)) != m / n for n, m, s in zip(shape, out, f) if n):
        raise node.unsupported(f"scales {list(f)} that are not exact output/input sizes")
    return gg["resize"](x, out[2:], "nearest")
