"""Sequence converters. A sequence is a ``Seq`` (a tuple of tensors) that exists only while the
model is traced: every position, split and length must be a constant (a graph input read as
one is a static argument, one compiled entry per value), so each op is plain list work and the
compiled graph holds only the tensor ops (concatenate, stack, slices). A sequence graph input
is a list of arrays (a pytree argument of the compiled function); a sequence output becomes a
list of arrays (``model.OnnxModel``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import ops as _ops
from .table import NodeCtx, opt, register, shape_of

gg = _ops.API


@dataclass(frozen=True)
class Seq:
    items: tuple


def _seq(node: NodeCtx, v: Any) -> tuple:
    if not isinstance(v, Seq):
        raise node.unsupported("a tensor where a sequence is expected")
    return v.items


def _pos(node: NodeCtx, v: Any, n: int, *, insert: bool) -> int:
    """A position in [-n, n) (or [-n, n] to insert), counted from the end when negative."""
    p = node.ints(v, "position")[0]
    hi = n if insert else n - 1
    if not -n <= p <= hi:
        from ..errors import IndexOutOfRangeError

        raise IndexOutOfRangeError(f"{node.where()}: position {p} for a sequence of {n}")
    return p + n if p < 0 else p


@register("SequenceEmpty")
def _empty(node: NodeCtx, ins: list, attrs: dict):
    return Seq(())


@register("SequenceConstruct")
def _construct(node: NodeCtx, ins: list, attrs: dict):
    return Seq(tuple(ins))


@register("SequenceLength")
def _length(node: NodeCtx, ins: list, attrs: dict):
    return np.asarray(len(_seq(node, ins[0])), np.int64)


@register("SequenceAt")
def _at(node: NodeCtx, ins: list, attrs: dict):
    items = _seq(node, ins[0])
    return items[_pos(node, ins[1], len(items), insert=False)]


@register("SequenceInsert")
def _insert(node: NodeCtx, ins: list, attrs: dict):
    items = _seq(node, ins[0])
    pos = opt(ins, 2)
    p = len(items) if pos is None else _pos(node, pos, len(items), insert=True)
    return Seq(items[:p] + (ins[1],) + items[p:])


@register("SequenceErase")
def _erase(node: NodeCtx, ins: list, attrs: dict):
    items = _seq(node, ins[0])
    pos = opt(ins, 1)
    p = len(items) - 1 if pos is None else _pos(node, pos, len(items), insert=False)
    return Seq(items[:p] + items[p + 1 :])


@register("ConcatFromSequence")
def _concat(node: NodeCtx, ins: list, attrs: dict):
    items = _seq(node, ins[0])
    if not items:
        raise node.unsupported("an empty sequence")
    axis = attrs["axis"]
    if attrs.get("new_axis", 0):
        return gg["stack"](list(items), axis if axis >= 0 else axis + len(shape_of(items[0])) + 1)
    return gg["concatenate"](list(items), axis)


@register("SplitToSequence")
def _split(node: NodeCtx, ins: list, attrs: dict):
    x, split = ins[0], opt(ins, 1)
    shape = shape_of(x)
    axis = attrs.get("axis", 0) % len(shape)
    n = shape[axis]
    if split is None:
        sizes, squeeze = [1] * n, not attrs.get("keepdims", 1)
    else:
        s = node.ints(split, "split")
        squeeze = False
        if np.ndim(split) == 0:  # chunks of s[0], the last one smaller
            sizes = [min(s[0], n - i) for i in range(0, n, s[0])] if s[0] > 0 else []
        else:
            sizes = s
    if sum(sizes) != n or any(v < 0 for v in sizes):
        raise node.unsupported(f"split sizes {sizes} for a dim of {n}")
    out, start = [], 0
    for size in sizes:
        idx = (slice(None),) * axis + (slice(start, start + size),)
        piece = gg["getitem"](x, idx)
        out.append(gg["squeeze"](piece, axis) if squeeze else piece)
        start += size
    return Seq(tuple(out))
