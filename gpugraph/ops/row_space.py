"""Row spaces: how the members of a fused reduction group (ops/fused_reduce.py) lay out
their values, and which nodes fit one.

A row space ``(lead, cols)`` is the iteration space ``lead + (cols,)`` seen as ``prod(lead)``
rows. A value in it is one of
  element  (rows, cols)   full shape,
  row      (rows, 1)      one per row: ``lead + (1,)`` or ``lead`` (a reduction's result),
  column   (1, cols)      broadcast down the rows (a layer norm's gamma), only as an input,
  scalar   ()             one element.
``member_kinds`` says, for a node, what its output is and how it reads each input (by NumPy
broadcasting), or None when the node does not fit: the fusion pass forms groups with it, the
NumPy runner and the row-kernel codegen lay out values with ``body_kinds``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node, Value
from .registry import get_op

ELEM, ROW, COL, SCALAR = "element", "row", "column", "scalar"
# the reductions a row kernel has (codegen/reduce_cuda.REDUCERS)
ROW_REDUCERS = ("sum", "max", "min", "prod")
FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))
HALF = np.dtype("float16")
# float16 values (a softmax or layer norm of float16 input casts to float32 and back around the
# float32 math, ops/half.py) are members; the casts fuse, so the group reads and writes half.
MEMBER_DTYPES = (*FLOAT_DTYPES, HALF, np.dtype("bool"))
# The operand dtypes each row reduction fuses for: a float16 max is exact in float32 (the
# kernels compare float32 copies, NumPy compares halves: the same element wins); a float16 sum
# never reaches a graph from the public ops (they accumulate in float32) and NumPy's float16
# add.reduce rounds differently from a float32 accumulator, so it stays out.
# A float16 prod is out for the same reason as a float16 sum (NumPy rounds each step to half).
REDUCE_DTYPES = {
    "sum": FLOAT_DTYPES,
    "prod": FLOAT_DTYPES,
    "max": (*FLOAT_DTYPES, HALF),
    "min": (*FLOAT_DTYPES, HALF),
}


@dataclass(frozen=True)
class Space:
    lead: tuple[int, ...]
    cols: int

    @property
    def full(self) -> tuple[int, ...]:
        return (*self.lead, self.cols)

    @property
    def rows(self) -> int:
        return math.prod(self.lead)

    def read(self, shape: tuple[int, ...], out_rank: int) -> str | None:
        """How an operand of ``shape`` broadcast against a full-shape result is read."""
        if len(shape) > out_rank:
            return None
        padded = (1,) * (out_rank - len(shape)) + tuple(shape)
        if padded == self.full:
            return ELEM
        if padded == (*self.lead, 1):
            return ROW
        if all(s == 1 for s in padded):
            return SCALAR
        if padded == (1,) * len(self.lead) + (self.cols,):
            return COL
        return None

    def compatible(self, made: str, read: str) -> bool:
        """A value made as ``made`` may be read as ``read`` (one column: rows are elements)."""
        return made == read or (self.cols == 1 and {made, read} == {ELEM, ROW})


def reduction_space(node: Node) -> Space | None:
    """The row space of a sum/max over the last axis of a float value (REDUCE_DTYPES), else
    None."""
    if node.op not in ROW_REDUCERS or len(node.inputs) != 1:
        return None
    x = node.inputs[0]
    if x.dtype not in REDUCE_DTYPES[node.op] or not x.shape:
        return None
    if tuple(node.attrs["axis"]) != (len(x.shape) - 1,):
        return None
    return Space(tuple(x.shape[:-1]), x.shape[-1])


def _row_shapes(space: Space) -> tuple[tuple[int, ...], ...]:
    return ((*space.lead, 1), space.lead)


def member_kinds(node: Node, space: Space) -> tuple[str, list[str]] | None:
    """(kind of the output, kind each input is read as) of ``node`` in ``space``, or None."""
    if len(node.outputs) != 1:
        return None
    out = node.outputs[0]
    if node.op in ROW_REDUCERS:
        return (ROW, [ELEM]) if reduction_space(node) == space else None
    if node.op == "reshape":
        rows = _row_shapes(space)
        ok = node.inputs[0].shape in rows and out.shape in rows
        return (ROW, [ROW]) if ok else None
    opdef = get_op(node.op)
    if opdef.family != "elementwise" and node.op != "broadcast_to":
        return None
    if opdef.cuda is None and node.op != "broadcast_to":
        return None
    if any(v.dtype not in MEMBER_DTYPES for v in (*node.inputs, out)):
        return None
    shape = tuple(out.shape)
    if shape == space.full:
        reads = [space.read(v.shape, len(shape)) for v in node.inputs]
        return (ELEM, reads) if None not in reads else None  # type: ignore[return-value]
    if node.op == "broadcast_to":
        return None
    if shape == (*space.lead, 1):
        reads = [space.read(v.shape, len(shape)) for v in node.inputs]
        ok = all(r in (ROW, SCALAR) for r in reads) or (space.cols == 1 and None not in reads)
        return (ROW, [ROW if r == ELEM else r for r in reads]) if ok else None  # type: ignore
    if shape == space.lead:  # (for one row, lead == (): a 1-D reduction's result)
        reads = [
            ROW if v.shape == space.lead else SCALAR if v.shape == () else None for v in node.inputs
        ]
        return (ROW, reads) if None not in reads else None  # type: ignore[return-value]
    return None


def body_kinds(body: Graph, space: Space) -> dict[Value, str]:
    """The kind of every value of a fused_reduce body (inputs by how their readers read them)."""
    kinds: dict[Value, str] = {}
    for node in body.nodes:
        if node.op == "constant":
            kinds[node.output] = SCALAR
            continue
        found = member_kinds(node, space)
        assert found is not None, f"{node.op} does not fit row space {space}"
        made, reads = found
        for v, r in zip(node.inputs, reads):
            kinds.setdefault(v, r)
        kinds[node.output] = made
    return kinds
