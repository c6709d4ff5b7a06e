"""Which lowering runs for a conv primitive: depthwise convs the direct one (conv_depthwise),
the rest im2col + GEMM (conv_lower, conv_transpose_lower). Each pair (layout or flops, and
impl) makes the same choice from the same shapes, so the planned scratch always fits the impl
that runs."""

from __future__ import annotations

from .conv_depthwise import (
    dw_conv_impl,
    dw_conv_layout,
    dw_transpose_impl,
    dw_transpose_layout,
    dw_transpose_ok,
    dw_weight_impl,
    dw_weight_layout,
    is_depthwise,
)
from .conv_depthwise_t import dw_phased_impl, dw_phased_layout, dw_phased_ok
from .conv_lower import (
    conv_flops,
    conv_impl,
    conv_layout,
    conv_weight_flops,
    conv_weight_impl,
    conv_weight_layout,
)
from .conv_transpose_lower import (
    conv_transpose_flops,
    conv_transpose_impl,
    conv_transpose_layout,
)


def _conv_layout(x_shape, w_shape, stride, pad, dilation, groups, dtype, tile=None):
    if is_depthwise(x_shape[1], w_shape[1], groups, w_shape[2:], stride):
        return dw_conv_layout(x_shape, w_shape, stride, pad, dilation, dtype, tile)
    return conv_layout(x_shape, w_shape, stride, pad, dilation, groups, dtype, tile)


def _conv_weight_layout(x_shape, y_shape, stride, pad, dilation, groups, kernel, dtype):
    if is_depthwise(x_shape[1], x_shape[1] // groups, groups, kernel, stride):
        return dw_weight_layout(x_shape, y_shape, stride, pad, dilation, kernel, dtype)
    return conv_weight_layout(x_shape, y_shape, stride, pad, dilation, groups, kernel, dtype)


def _conv_transpose_layout(y_shape, w_shape, stride, pad, dilation, groups, in_shape, dtype):
    if dw_transpose_ok(y_shape, w_shape, groups, w_shape[2:], pad, stride, dilation):
        return dw_transpose_layout(y_shape, w_shape, stride, pad, dilation, dtype)
    if dw_phased_ok(y_shape, w_shape, groups, stride, pad, dilation, in_shape):
        return dw_phased_layout(y_shape, w_shape, stride, pad, dilation, in_shape, dtype)
    return conv_transpose_layout(y_shape, w_shape, stride, pad, dilation, groups, in_shape, dtype)


def _gemm_free(rule, direct):
    """A flops rule that says 0 (no GEMM: the BLAS policy keeps one thread) where ``direct``."""
    return lambda *a: 0 if direct(*a) else rule(*a)


def _dw_conv(x_shape, w_shape, stride, pad, dilation, groups, *rest):
    return is_depthwise(x_shape[1], w_shape[1], groups, w_shape[2:], stride)


def _dw_weight(x_shape, y_shape, stride, pad, dilation, groups, kernel, *rest):
    return is_depthwise(x_shape[1], x_shape[1] // groups, groups, kernel, stride)


def _dw_transpose(y_shape, w_shape, stride, pad, dilation, groups, in_shape, *rest):
    return dw_transpose_ok(
        y_shape, w_shape, groups, w_shape[2:], pad, stride, dilation
    ) or dw_phased_ok(y_shape, w_shape, groups, stride, pad, dilation, in_shape)


def _conv_impl(xp, x, w, stride, pad, dilation, groups, out=None, scratch=None):
    if is_depthwise(x.shape[1], w.shape[1], groups, w.shape[2:], stride):
        return dw_conv_impl(xp, x, w, stride, pad, dilation, out=out, scratch=scratch)
    return conv_impl(xp, x, w, stride, pad, dilation, groups, out=out, scratch=scratch)


def _conv_weight_impl(xp, x, y, stride, pad, dilation, groups, kernel, out=None, scratch=None):
    if is_depthwise(x.shape[1], x.shape[1] // groups, groups, kernel, stride):
        return dw_weight_impl(xp, x, y, stride, pad, dilation, kernel, out=out, scratch=scratch)
    geom = (stride, pad, dilation, groups, kernel)
    return conv_weight_impl(xp, x, y, *geom, out=out, scratch=scratch)


def _conv_transpose_impl(xp, y, w, stride, pad, dilation, groups, in_shape, out=None, scratch=None):
    if dw_transpose_ok(y.shape, w.shape, groups, w.shape[2:], pad, stride, dilation):
        return dw_transpose_impl(xp, y, w, stride, pad, dilation, out=out, scratch=scratch)
    if dw_phased_ok(y.shape, w.shape, groups, stride, pad, dilation, in_shape):
        geom = (stride, pad, dilation, in_shape)
        return dw_phased_impl(xp, y, w, *geom, out=out, scratch=scratch)
    geom = (stride, pad, dilation, groups, in_shape)
    return conv_transpose_impl(xp, y, w, *geom, out=out, scratch=scratch)


_FLOP_RULES = {
    "conv": _gemm_free(conv_flops, _dw_conv),
    "conv_transpose": _gemm_free(conv_transpose_flops, _dw_transpose),
    "conv_weight": _gemm_free(conv_weight_flops, _dw_weight),
}
