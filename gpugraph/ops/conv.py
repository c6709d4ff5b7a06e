"""N-d convolution (NCHW, ``x[N, C, *S]`` with ``w[O, C/groups, *K]``) and its adjoints.

Three bilinear primitives close under differentiation:

* ``conv(x, w)``                     -> y[N, O, *Y]        the correlation, as torch's conv
* ``conv_transpose(y, w; in_shape)`` -> x[N, C, *S]        its adjoint in x (torch's
  conv_transpose with the same weight layout)
* ``conv_weight(x, y; kernel)``      -> w[O, C/groups, *K] its adjoint in w

Each one's derivatives are the other two, so gradients of any order are ordinary graph.

Lowering (``conv_dispatch`` picks one; ``conv_lower``, ``conv_transpose_lower`` and
``conv_depthwise`` are written against ``xp``, so NumPy and CuPy share them): im2col, a strided
window view of the padded input copied channel-major one cache-sized tile at a time, and a GEMM
per tile and group that writes its slice of the NCHW output; a unit-stride conv_transpose is a
conv with the flipped weight, a strided one keeps col2im. A 1x1 kernel without padding skips
im2col; a depthwise conv (groups = C) takes flat shifted runs instead (conv_depthwise). The
impls take ``out=`` (the planned buffer) and ``scratch=`` (a range the memory plan reserves for
the node, live only at its step; each op's ``scratch_bytes`` says how much).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import DTypeError, ShapeError, UnsupportedError
from ..ir import TensorType
from .conv_dispatch import (
    _FLOP_RULES,
    _conv_impl,
    _conv_layout,
    _conv_transpose_impl,
    _conv_transpose_layout,
    _conv_weight_impl,
    _conv_weight_layout,
)
from .conv_lower import out_spatial
from .core import bind, type_of
from .elementwise import add, promote_floats
from .half import accumulate_in_float32
from .registry import OpDef, register
from .shape import reshape


# ---- attribute normalization --------------------------------------------------------------
def as_tuple(op: str, name: str, v: Any, d: int) -> tuple[int, ...]:
    """An int or a length-``d`` sequence of ints, as a tuple."""
    t = (v,) * d if isinstance(v, int) else tuple(v)
    if len(t) != d or not all(isinstance(i, int) for i in t):
        raise ShapeError(f"{op}: {name} must be an int or {d} ints, got {v!r}")
    return tuple(int(i) for i in t)


def norm_padding(op, padding, d, spatial, kernel, stride, dilation) -> tuple[tuple[int, int], ...]:
    """Padding as (low, high) per spatial dim. "VALID" is none; "SAME" gives ceil(S/stride)
    outputs, the odd element going to the high side (as JAX and TensorFlow)."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * d
        if mode != "SAME":
            raise ShapeError(
                f"{op}: padding must be 'SAME', 'VALID', ints or pairs, got {padding!r}"
            )
        pads = []
        for s, k, st, dl in zip(spatial, kernel, stride, dilation):
            total = max((-(-s // st) - 1) * st + dl * (k - 1) + 1 - s, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int):
        pads = ((padding, padding),) * d
    else:
        items = list(padding)
        if len(items) != d:
            raise ShapeError(
                f"{op}: padding needs {d} entries (one per spatial dim), got {padding!r}"
            )
        pads = tuple((p, p) if isinstance(p, int) else tuple(p) for p in items)
    if not all(len(p) == 2 and all(isinstance(i, int) and i >= 0 for i in p) for p in pads):
        raise ShapeError(
            f"{op}: padding must be non-negative ints or (low, high) pairs, got {padding!r}"
        )
    return tuple((int(a), int(b)) for a, b in pads)


# ---- the lowering (xp = numpy or cupy) ----------------------------------------------------
def windows(xp, x, kernel, stride, pad, dilation, fill=0):
    """A strided view ``[N, C, *Y, *K]`` of the padded x: window of every output position."""
    d = len(kernel)
    if any(
        hi < 0 for _, hi in pad
    ):  # negative high padding (conv_transpose's output_padding) crops
        x = x[
            (slice(None),) * 2
            + tuple(slice(0, s + min(hi, 0)) for s, (_, hi) in zip(x.shape[2:], pad))
        ]
        pad = tuple((lo, max(hi, 0)) for lo, hi in pad)
    if any(p != (0, 0) for p in pad):
        x = xp.pad(x, [(0, 0), (0, 0), *pad], constant_values=fill)
    ext = tuple(dl * (k - 1) + 1 for k, dl in zip(kernel, dilation))
    v = xp.lib.stride_tricks.sliding_window_view(x, ext, axis=tuple(range(2, 2 + d)))
    idx = (slice(None),) * 2 + tuple(slice(None, None, s) for s in stride)
    return v[idx + tuple(slice(None, None, dl) for dl in dilation)]


def _sizes(rule, last: str | None):
    """``rule(a.shape, b.shape, stride, pad, dilation, groups[, attrs[last]], dtype)`` of a conv
    primitive's node: its scratch layout or its GEMM flops."""

    def of(node):
        a, b = (v.type for v in node.inputs)
        at = node.attrs
        geom = [at["stride"], at["pad"], at["dilation"], at["groups"]]
        return rule(a.shape, b.shape, *geom, *([at[last]] if last else []), a.dtype)

    return of


def _nbytes(layout):
    return lambda *args: layout(*args).nbytes


_conv_scratch = _sizes(_nbytes(_conv_layout), None)
_conv_transpose_scratch = _sizes(_nbytes(_conv_transpose_layout), "in_shape")
_conv_weight_scratch = _sizes(_nbytes(_conv_weight_layout), "kernel")
_FLOPS = {
    "conv": _sizes(_FLOP_RULES["conv"], None),
    "conv_transpose": _sizes(_FLOP_RULES["conv_transpose"], "in_shape"),
    "conv_weight": _sizes(_FLOP_RULES["conv_weight"], "kernel"),
}


# ---- shape rules --------------------------------------------------------------------------
def _check_operands(op, a, b):
    if a.dtype != b.dtype or a.dtype.kind != "f":
        raise DTypeError(f"{op}: operands must share a float dtype, got {a.dtype} and {b.dtype}")
    if a.ndim < 3 or a.ndim != b.ndim:
        raise ShapeError(
            f"{op}: operands must be [N, C, *spatial] and [O, C/groups, *kernel] of one rank "
            f">= 3, got {a} and {b}"
        )


def _check_groups(op, c, o, w_in, groups):
    if groups < 1 or c % groups or o % groups or c // groups != w_in:
        raise ShapeError(
            f"{op}: {c} input channels, {o} output channels and weight in-channels {w_in} do "
            f"not fit groups={groups} (need C = groups * w.shape[1] and O % groups == 0)"
        )


def _y_shape(op, x_shape, kernel, stride, pad, dilation):
    ys = out_spatial(x_shape, kernel, stride, pad, dilation)
    if any(y < 1 for y in ys):
        raise ShapeError(
            f"{op}: kernel {tuple(kernel)} (dilation {dilation}) is larger than the padded "
            f"input {tuple(x_shape)} (padding {pad})"
        )
    return ys


def _conv_infer(types, stride, pad, dilation, groups):
    x, w = types
    _check_operands("conv", x, w)
    _check_groups("conv", x.shape[1], w.shape[0], w.shape[1], groups)
    ys = _y_shape("conv", x.shape[2:], w.shape[2:], stride, pad, dilation)
    return [TensorType((x.shape[0], w.shape[0], *ys), x.dtype)]


def _conv_transpose_infer(types, stride, pad, dilation, groups, in_shape):
    y, w = types
    _check_operands("conv_transpose", y, w)
    _check_groups("conv_transpose", w.shape[1] * groups, y.shape[1], w.shape[1], groups)
    if w.shape[0] != y.shape[1]:
        raise ShapeError(f"conv_transpose: weight {w} does not take {y.shape[1]} input channels")
    ys = _y_shape("conv_transpose", in_shape, w.shape[2:], stride, pad, dilation)
    if ys != y.shape[2:]:
        raise ShapeError(f"conv_transpose: output spatial shape {in_shape} does not fit {y}")
    return [TensorType((y.shape[0], w.shape[1] * groups, *in_shape), y.dtype)]


def _conv_weight_infer(types, stride, pad, dilation, groups, kernel):
    x, y = types
    _check_operands("conv_weight", x, y)
    ys = _y_shape("conv_weight", x.shape[2:], kernel, stride, pad, dilation)
    if ys != y.shape[2:] or x.shape[0] != y.shape[0]:
        raise ShapeError(f"conv_weight: {y} is not the conv output of {x}")
    _check_groups("conv_weight", x.shape[1], y.shape[1], x.shape[1] // groups, groups)
    return [TensorType((y.shape[1], x.shape[1] // groups, *kernel), x.dtype)]


# ---- derivatives: each primitive's are the other two --------------------------------------
def _geom(attrs):
    return {k: attrs[k] for k in ("stride", "pad", "dilation", "groups")}


def _sum(*terms):
    terms = [t for t in terms if t is not None]
    return None if not terms else terms[0] if len(terms) == 1 else add(*terms)


def _conv_vjp(cts, outs, x, w, **a):
    g = cts[0]
    return [
        bind("conv_transpose", g, w, **a, in_shape=type_of(x).shape[2:]),
        bind("conv_weight", x, g, **a, kernel=type_of(w).shape[2:]),
    ]


def _conv_jvp(ts, outs, x, w, **a):
    tx, tw = ts
    return [
        _sum(
            None if tx is None else bind("conv", tx, w, **a),
            None if tw is None else bind("conv", x, tw, **a),
        )
    ]


def _conv_transpose_vjp(cts, outs, y, w, in_shape, **a):
    g = cts[0]
    return [bind("conv", g, w, **a), bind("conv_weight", g, y, **a, kernel=type_of(w).shape[2:])]


def _conv_transpose_jvp(ts, outs, y, w, in_shape, **a):
    ty, tw = ts
    return [
        _sum(
            None if ty is None else bind("conv_transpose", ty, w, **a, in_shape=in_shape),
            None if tw is None else bind("conv_transpose", y, tw, **a, in_shape=in_shape),
        )
    ]


def _conv_weight_vjp(cts, outs, x, y, kernel, **a):
    g = cts[0]
    return [
        bind("conv_transpose", y, g, **a, in_shape=type_of(x).shape[2:]),
        bind("conv", x, g, **a),
    ]


def _conv_weight_jvp(ts, outs, x, y, kernel, **a):
    tx, ty = ts
    return [
        _sum(
            None if tx is None else bind("conv_weight", tx, y, **a, kernel=kernel),
            None if ty is None else bind("conv_weight", x, ty, **a, kernel=kernel),
        )
    ]


for _name, _infer, _impl, _vjp, _jvp, _scratch in (
    ("conv", _conv_infer, _conv_impl, _conv_vjp, _conv_jvp, _conv_scratch),
    (
        "conv_transpose",
        _conv_transpose_infer,
        _conv_transpose_impl,
        _conv_transpose_vjp,
        _conv_transpose_jvp,
        _conv_transpose_scratch,
    ),
    (
        "conv_weight",
        _conv_weight_infer,
        _conv_weight_impl,
        _conv_weight_vjp,
        _conv_weight_jvp,
        _conv_weight_scratch,
    ),
):
    # out_kw: the runtime hands the planned output buffer to the impl (out=), which the GEMMs
    # write into directly instead of returning a result the runtime then copies.
    # scratch_bytes: the memory plan reserves that many arena bytes live only at the node's
    # step; scratch_kw: the runtime passes them to the impl as scratch= (docs/memory.md)
    # flops: the BLAS thread policy (backends/blas.py) reads the largest GEMM call's size
    extra = {"scratch_bytes": _scratch, "scratch_kw": True, "flops": _FLOPS[_name]}
    register(OpDef(_name, "linalg", _infer, _impl, vjp=_vjp, jvp=_jvp, out_kw=True, extra=extra))


# ---- public functions ---------------------------------------------------------------------
def _add_bias(y, bias):
    if bias is None:
        return y
    return add(y, reshape(bias, (-1,) + (1,) * (type_of(y).ndim - 2)))


@accumulate_in_float32
def conv(
    x: Any,
    w: Any,
    bias: Any = None,
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Any:
    """N-d convolution (cross-correlation, as torch.nn.functional.convNd) of ``x[N, C, *S]``
    with ``w[O, C/groups, *K]``; padding is an int, one int or (low, high) pair per spatial
    dim, "SAME" or "VALID". ``groups=C`` with ``O = m*C`` is a depthwise convolution."""
    x, w = promote_floats(x, w)
    tx, tw = type_of(x), type_of(w)
    _check_operands("conv", tx, tw)
    d = tx.ndim - 2
    stride = as_tuple("conv", "stride", stride, d)
    dilation = as_tuple("conv", "dilation", dilation, d)
    if min(stride + dilation, default=1) < 1:
        raise ShapeError(f"conv: stride and dilation must be >= 1, got {stride}, {dilation}")
    pad = norm_padding("conv", padding, d, tx.shape[2:], tw.shape[2:], stride, dilation)
    y = bind("conv", x, w, stride=stride, pad=pad, dilation=dilation, groups=int(groups))
    return _add_bias(y, bias)


@accumulate_in_float32
def conv_transpose(
    x: Any,
    w: Any,
    bias: Any = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    output_padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> Any:
    """Transposed convolution as torch.nn.functional.conv_transposeNd: ``x[N, Cin, *S]`` with
    ``w[Cin, Cout/groups, *K]``; it is the gradient of ``conv`` in its input."""
    x, w = promote_floats(x, w)
    tx, tw = type_of(x), type_of(w)
    _check_operands("conv_transpose", tx, tw)
    d = tx.ndim - 2
    if isinstance(padding, str):
        raise UnsupportedError("conv_transpose: give padding as ints or pairs, not a string")
    stride = as_tuple("conv_transpose", "stride", stride, d)
    dilation = as_tuple("conv_transpose", "dilation", dilation, d)
    outpad = as_tuple("conv_transpose", "output_padding", output_padding, d)
    if min(stride + dilation, default=1) < 1:
        raise ShapeError(
            f"conv_transpose: stride and dilation must be >= 1, got {stride}, {dilation}"
        )
    if any(op >= max(s, dl) or op < 0 for op, s, dl in zip(outpad, stride, dilation)):
        raise ShapeError(
            f"conv_transpose: output_padding {outpad} must be smaller than stride or dilation"
        )
    pad = norm_padding("conv_transpose", padding, d, tx.shape[2:], tw.shape[2:], stride, dilation)
    # output_padding extends the high side: the adjoint of a conv whose high padding is that
    # much smaller (negative padding crops)
    pad = tuple((lo, hi - op) for (lo, hi), op in zip(pad, outpad))
    in_shape = tuple(
        (y - 1) * s - lo - hi + dl * (k - 1) + 1
        for y, s, (lo, hi), dl, k in zip(tx.shape[2:], stride, pad, dilation, tw.shape[2:])
    )
    if any(s < 0 for s in in_shape):
        raise ShapeError(f"conv_transpose: padding {pad} leaves a negative output size {in_shape}")
    y = bind(
        "conv_transpose",
        x,
        w,
        stride=stride,
        pad=pad,
        dilation=dilation,
        groups=int(groups),
        in_shape=in_shape,
    )
    return _add_bias(y, bias)
