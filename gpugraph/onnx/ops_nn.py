"""Convolution, pooling, normalization and softmax converters."""

from __future__ import annotations

import itertools

import numpy as np

from .. import ops as _ops
from .table import NodeCtx, dtype_of, opt, register, shape_of

gg = _ops.API


def _auto_pad(attrs: dict) -> str:
    v = attrs.get("auto_pad", b"NOTSET")
    return v.decode() if isinstance(v, bytes) else v


def _padding(node: NodeCtx, attrs: dict, nsp: int):
    """gpugraph padding for ONNX ``pads``/``auto_pad``: (low, high) pairs or "SAME"/"VALID"."""
    mode = _auto_pad(attrs)
    if mode == "VALID":
        return [(0, 0)] * nsp
    if mode == "SAME_UPPER":
        return "SAME"  # gpugraph's SAME puts the odd element on the high side, as SAME_UPPER
    if mode != "NOTSET":
        raise node.unsupported(f"auto_pad={mode}")
    pads = attrs.get("pads", [0] * (2 * nsp))
    return [(int(pads[i]), int(pads[i + nsp])) for i in range(nsp)]


def _spatial(attrs: dict, key: str, nsp: int, default: int = 1) -> list[int]:
    return [int(v) for v in attrs.get(key, [default] * nsp)]


@register("Conv")
def _conv(node: NodeCtx, ins: list, attrs: dict):
    x, w, b = ins[0], ins[1], opt(ins, 2)
    nsp = len(w.shape) - 2
    pad = _padding(node, attrs, nsp)
    strides, dil = _spatial(attrs, "strides", nsp), _spatial(attrs, "dilations", nsp)
    if pad == "SAME" and (any(s != 1 for s in dil)):
        raise node.unsupported("auto_pad=SAME_UPPER with dilation")
    return gg["conv"](
        x, w, b, stride=strides, padding=pad, dilation=dil, groups=attrs.get("group", 1)
    )


@register("ConvTranspose")
def _conv_transpose(node: NodeCtx, ins: list, attrs: dict):
    x, w, b = ins[0], ins[1], opt(ins, 2)
    nsp = len(w.shape) - 2
    if "output_shape" in attrs or _auto_pad(attrs) not in ("NOTSET", "VALID"):
        raise node.unsupported("output_shape / auto_pad SAME")
    pads = attrs.get("pads", [0] * (2 * nsp))
    if any(pads[i] != pads[i + nsp] for i in range(nsp)):
        raise node.unsupported("asymmetric pads")
    return gg["conv_transpose"](
        x,
        w,
        b,
        stride=_spatial(attrs, "strides", nsp),
        padding=[int(p) for p in pads[:nsp]],
        output_padding=_spatial(attrs, "output_padding", nsp, 0),
        dilation=_spatial(attrs, "dilations", nsp),
        groups=attrs.get("group", 1),
    )


def _pool_args(node: NodeCtx, x, attrs: dict, ceil_ok: bool):
    """(kernel, strides, dilations, padding) of a pooling node. ``ceil_mode`` becomes extra
    high padding where ``ceil_ok`` (max pooling: padding is never the maximum)."""
    kernel = [int(k) for k in attrs["kernel_shape"]]
    nsp = len(kernel)
    strides, dil = _spatial(attrs, "strides", nsp), _spatial(attrs, "dilations", nsp)
    if node.n_outputs > 1:
        raise node.unsupported("the Indices output of MaxPool")
    pad = _padding(node, attrs, nsp)
    if attrs.get("ceil_mode", 0) or any(d != 1 for d in dil):
        if pad == "SAME":
            raise node.unsupported("auto_pad=SAME_UPPER with ceil_mode or dilations")
    if attrs.get("ceil_mode", 0):
        sp = shape_of(x)[2:]
        new = []
        for s, k, st, d, (lo, hi) in zip(sp, kernel, strides, dil, pad):
            span = d * (k - 1) + 1
            out = -(-(s + lo + hi - span) // st) + 1
            if (out - 1) * st >= s + lo:  # the last window may not start in the high padding
                out -= 1
            extra = max((out - 1) * st + span - (s + lo + hi), 0)
            if extra and not ceil_ok:
                raise node.unsupported("ceil_mode=1 with a partial last window")
            new.append((lo, hi + extra))
        pad = new
    return kernel, strides, dil, pad


_MAX_OFFSETS = 64  # the slice-and-maximum form's size limit: one graph node per offset


def _general_max_pool(node: NodeCtx, x, kernel, strides, dil, pad):
    """Max pooling with dilations or padding over half the window (gg.max_pool takes
    neither): the input is padded with its dtype's lowest value first. Where each stride is
    a multiple of its dilation every window element sits at a multiple of the dilation, so
    it is a plain max_pool of the every-d-th-element view; otherwise the maximum over the
    kernel offsets of strided slices (small kernels only: one node per offset)."""
    dt = dtype_of(x)
    low = -np.inf if np.issubdtype(dt, np.floating) else np.iinfo(dt).min
    xp = gg["pad"](x, [(0, 0), (0, 0), *pad], "constant", np.asarray(low, dt))
    if all(st % d == 0 for st, d in zip(strides, dil)):
        view = gg["getitem"](xp, (slice(None), slice(None), *(slice(None, None, d) for d in dil)))
        return gg["max_pool"](view, kernel, stride=[st // d for st, d in zip(strides, dil)])
    if int(np.prod(kernel)) > _MAX_OFFSETS:
        raise node.unsupported(
            f"dilated MaxPool with a {kernel} window and strides not a multiple of the dilations"
        )
    sizes = [
        (s + lo + hi - (d * (k - 1) + 1)) // st + 1
        for s, k, st, d, (lo, hi) in zip(shape_of(x)[2:], kernel, strides, dil, pad)
    ]
    acc = None
    for offs in itertools.product(*(range(k) for k in kernel)):
        idx = tuple(
            slice(o * d, o * d + (n - 1) * st + 1, st)
            for o, d, n, st in zip(offs, dil, sizes, strides)
        )
        t = gg["getitem"](xp, (slice(None), slice(None), *idx))
        acc = t if acc is None else gg["maximum"](acc, t)
    return acc


@register("MaxPool")
def _max_pool(node: NodeCtx, ins: list, attrs: dict):
    if attrs.get("storage_order", 0):
        raise node.unsupported("storage_order=1")
    kernel, strides, dil, pad = _pool_args(node, ins[0], attrs, ceil_ok=True)
    # gg.max_pool takes no dilation, and no padding over half the window (which ceil_mode's
    # extra padding can need): those go through the slice-and-maximum form.
    wide = pad != "SAME" and any(max(p) > k // 2 for p, k in zip(pad, kernel))
    if wide or any(d != 1 for d in dil):
        return _general_max_pool(node, ins[0], kernel, strides, dil, pad)
    return gg["max_pool"](ins[0], kernel, stride=strides, padding=pad)


@register("AveragePool")
def _avg_pool(node: NodeCtx, ins: list, attrs: dict):
    kernel, strides, dil, pad = _pool_args(node, ins[0], attrs, ceil_ok=False)
    if any(d != 1 for d in dil):
        raise node.unsupported("AveragePool with dilations")
    include = bool(attrs.get("count_include_pad", 0))
    return gg["avg_pool"](ins[0], kernel, stride=strides, padding=pad, count_include_pad=include)


register("GlobalAveragePool")(lambda node, ins, attrs: gg["global_avg_pool"](ins[0]))
register("GlobalMaxPool")(lambda node, ins, attrs: gg["global_max_pool"](ins[0]))


@register("BatchNormalization")
def _batch_norm(node: NodeCtx, ins: list, attrs: dict):
    if attrs.get("training_mode", 0) or node.n_outputs > 1:
        raise node.unsupported("BatchNormalization in training mode")
    if node.opset < 9 and not attrs.get("spatial", 1):
        raise node.unsupported("spatial=0")
    x, scale, bias, mean, var = ins[:5]
    return gg["batch_norm"](
        x, scale, bias, mean, var, training=False, eps=attrs.get("epsilon", 1e-5)
    )


@register("InstanceNormalization")
def _instance_norm(node: NodeCtx, ins: list, attrs: dict):
    return gg["instance_norm"](ins[0], ins[1], ins[2], eps=attrs.get("epsilon", 1e-5))


@register("LayerNormalization")
def _layer_norm(node: NodeCtx, ins: list, attrs: dict):
    if node.n_outputs > 1:
        raise node.unsupported("the Mean/InvStdDev outputs of LayerNormalization")
    if attrs.get("stash_type", 1) != 1:
        raise node.unsupported("stash_type other than float32")
    x = ins[0]
    axis = attrs.get("axis", -1) % len(x.shape)
    axes = list(range(axis, len(x.shape)))
    return gg["layer_norm"](x, ins[1], opt(ins, 2), axis=axes, eps=attrs.get("epsilon", 1e-5))


@register("LRN")
def _lrn(node: NodeCtx, ins: list, attrs: dict):
    # y = x / (bias + alpha/size * square_sum)^beta, square_sum over the channels
    # [c - (size-1)//2, c + ceil((size-1)/2)]
    x = ins[0]
    size = int(attrs["size"])
    if not 1 <= size <= 32:  # one add per window element: a window this size is not a model's
        raise node.unsupported(f"LRN size={size}")
    alpha, beta, bias = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = gg["square"](x)
    c = shape_of(x)[1]
    padded = gg["pad"](sq, [(0, 0), (lo, hi)] + [(0, 0)] * (len(x.shape) - 2))
    acc = None
    for k in range(size):
        term = gg["getitem"](padded, (slice(None), slice(k, k + c)))
        acc = term if acc is None else gg["add"](acc, term)
    dt = dtype_of(x)
    denom = gg["power"](
        gg["add"](gg["multiply"](acc, np.asarray(alpha / size, dt)), np.asarray(bias, dt)),
        np.asarray(beta, dt),
    )
    return gg["divide"](x, denom)


def _softmax(name: str):
    def conv(node: NodeCtx, ins: list, attrs: dict):
        x = ins[0]
        if node.opset >= 13:
            return gg[name](x, axis=attrs.get("axis", -1))
        # Before opset 13 the input is coerced to 2-d at `axis` (default 1) and normalized over
        # everything from `axis` on.
        shape = shape_of(x)
        axis = attrs.get("axis", 1) % max(len(shape), 1)
        lead = int(np.prod(shape[:axis], dtype=np.int64))
        y = gg[name](gg["reshape"](x, (lead, -1)), axis=-1)
        return gg["reshape"](y, shape)

    return conv


register("Softmax")(_softmax("softmax"))
register("LogSoftmax")(_softmax("log_softmax"))
