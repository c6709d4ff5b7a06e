"""Shape, indexing and constant converters. Whatever only depends on constants folds at load
or trace time (gpugraph ops on NumPy arrays run eagerly); shape arguments must be constants."""

from __future__ import annotations

import numpy as np

from .. import ops as _ops
from .table import NodeCtx, check_size, dtype_of, is_const, opt, register, shape_of

gg = _ops.API


def _axes(node: NodeCtx, ins: list, attrs: dict, index: int, from_opset: int) -> list[int] | None:
    """Axes given as an attribute before ``from_opset`` and as input ``index`` from it on."""
    if node.opset >= from_opset:
        return node.ints(opt(ins, index), "axes")
    a = attrs.get("axes")
    return None if a is None else [int(v) for v in a]


@register("Constant")
def _constant(node: NodeCtx, ins: list, attrs: dict):
    from onnx import numpy_helper

    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"]).copy()
    for key, dt in (("value_float", np.float32), ("value_int", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dt)
    for key, dt in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(list(attrs[key]), dt)
    raise node.unsupported(f"Constant with attribute(s) {sorted(attrs)}")


@register("ConstantOfShape")
def _constant_of_shape(node: NodeCtx, ins: list, attrs: dict):
    from onnx import numpy_helper

    shape = node.ints(ins[0], "shape")
    value = (
        numpy_helper.to_array(attrs["value"]).reshape(-1)
        if "value" in attrs
        else np.zeros(1, np.float32)
    )
    check_size(shape, value.dtype, node.where())
    return np.full(shape, value[0], dtype=value.dtype)


@register("Shape")
def _shape(node: NodeCtx, ins: list, attrs: dict):
    shape = shape_of(ins[0])
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.asarray(shape[start:end], np.int64)


@register("Size")
def _size(node: NodeCtx, ins: list, attrs: dict):
    return np.asarray(int(np.prod(shape_of(ins[0]), dtype=np.int64)), np.int64)


@register("Reshape")
def _reshape(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    shape = attrs["shape"] if node.opset < 5 else node.ints(ins[1], "shape")
    if not attrs.get("allowzero", 0):
        shape = [shape_of(x)[i] if d == 0 else d for i, d in enumerate(shape)]
    return gg["reshape"](x, tuple(int(d) for d in shape))


@register("Flatten")
def _flatten(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    shape = shape_of(x)
    axis = attrs.get("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis  # ONNX accepts [-rank, rank]
    lead = int(np.prod(shape[:axis], dtype=np.int64))
    return gg["reshape"](x, (lead, int(np.prod(shape[axis:], dtype=np.int64))))


@register("Transpose")
def _transpose(node: NodeCtx, ins: list, attrs: dict):
    perm = attrs.get("perm")
    return gg["transpose"](ins[0], None if perm is None else [int(p) for p in perm])


@register("Squeeze")
def _squeeze(node: NodeCtx, ins: list, attrs: dict):
    axes = _axes(node, ins, attrs, 1, 13)
    return gg["squeeze"](ins[0], None if axes is None else tuple(axes))


@register("Unsqueeze")
def _unsqueeze(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    axes = _axes(node, ins, attrs, 1, 13)
    rank = len(x.shape) + len(axes)
    return gg["expand_dims"](x, tuple(sorted(a % rank for a in axes)))


@register("Concat")
def _concat(node: NodeCtx, ins: list, attrs: dict):
    xs = [x for x in ins if x is not None]
    if all(is_const(x) for x in xs):
        return np.concatenate([np.asarray(x) for x in xs], axis=attrs["axis"])
    return gg["concatenate"](xs, axis=attrs["axis"])


@register("Split")
def _split(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    axis = attrs.get("axis", 0)
    n = shape_of(x)[axis]
    sizes = attrs.get("split") if node.opset < 13 else node.ints(opt(ins, 1), "split")
    if sizes is None:
        parts = attrs.get("num_outputs", node.n_outputs)
        step = -(-n // parts)  # ONNX: equal parts, the last one smaller where n does not divide
        sizes = [min(step, n - i * step) for i in range(parts)]
    bounds = np.cumsum([int(s) for s in sizes])[:-1].tolist()
    return tuple(gg["split"](x, bounds, axis=axis))


@register("Slice")
def _slice(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    if node.opset < 10:
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = node.ints(ins[1], "starts"), node.ints(ins[2], "ends")
        axes, steps = node.ints(opt(ins, 3), "axes"), node.ints(opt(ins, 4), "steps")
    rank = len(x.shape)
    axes = list(range(len(starts))) if axes is None else [a % rank for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    idx = [slice(None)] * rank
    big = np.iinfo(np.int64).max
    for a, s, e, st in zip(axes, starts, ends, steps):
        # ONNX uses INT64_MAX/MIN as "to the end"; Python slices want None there.
        e = None if (st > 0 and e >= big // 2) or (st < 0 and e <= -(big // 2)) else int(e)
        idx[a] = slice(int(s), e, int(st))
    return gg["getitem"](x, tuple(idx))


@register("Gather")
def _gather(node: NodeCtx, ins: list, attrs: dict):
    x, idx = ins
    axis = attrs.get("axis", 0) % len(x.shape)
    n = shape_of(x)[axis]
    if is_const(idx):
        idx = np.asarray(idx)
        if ((idx < -n) | (idx >= n)).any():
            raise node.unsupported("out-of-range Gather indices")
        idx = np.where(idx < 0, idx + n, idx)
        if is_const(x):
            return np.take(np.asarray(x), idx, axis=axis)
    else:  # negative indices count from the end, as ONNX says
        idx = gg["where"](
            gg["less"](idx, np.asarray(0, dtype_of(idx))),
            gg["add"](idx, np.asarray(n, dtype_of(idx))),
            idx,
        )
    return gg["take"](x, idx, axis=axis)


@register("Expand")
def _expand(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    shape = node.ints(ins[1], "shape")
    out = np.broadcast_shapes(shape_of(x), tuple(shape))  # ONNX Expand broadcasts both ways
    return gg["broadcast_to"](x, out)


@register("Tile")
def _tile(node: NodeCtx, ins: list, attrs: dict):
    return gg["tile"](ins[0], tuple(node.ints(ins[1], "repeats")))


@register("Pad")
def _pad(node: NodeCtx, ins: list, attrs: dict):
    x = ins[0]
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    rank = len(x.shape)
    if node.opset < 11:
        pads, value, axes = [int(p) for p in attrs["pads"]], attrs.get("value", 0.0), None
    else:
        pads = node.ints(ins[1], "pads")
        cv = opt(ins, 2)
        value = 0 if cv is None else node.const(cv, "constant_value").reshape(-1)[0].item()
        axes = node.ints(opt(ins, 3), "axes")
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    k = len(axes)
    width = [(0, 0)] * rank
    for i, a in enumerate(axes):
        width[a] = (pads[i], pads[i + k])
    if any(lo < 0 or hi < 0 for lo, hi in width):
        raise node.unsupported("negative pads")
    if mode not in ("constant", "edge", "reflect"):
        raise node.unsupported(f"mode={mode}")
    if mode != "constant":
        return gg["pad"](x, width, mode)
    return gg["pad"](x, width, "constant", np.asarray(value, dtype_of(x)))


@register("Range")
def _range(node: NodeCtx, ins: list, attrs: dict):
    start, limit, delta = (node.const(v, "Range bound") for v in ins)
    if delta.item() == 0:
        raise node.unsupported("Range with delta 0")
    n = max(int(np.ceil((limit.item() - start.item()) / delta.item())), 0)
    check_size([n], start.dtype, node.where())
    return np.arange(start.item(), limit.item(), delta.item()).astype(start.dtype)
