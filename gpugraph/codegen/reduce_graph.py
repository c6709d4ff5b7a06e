"""Row programs (reduce_cuda.RowProgram) from body graphs: the bridge from a fused reduction
group to its kernel.

A body qualifies when it has one float32 input ``x`` of shape (..., cols), and every node is
either an elementwise op the CUDA codegen can express (operands and result float32), an inline
scalar constant, a ``sum``/``max`` over the last axis of a full-shape value, or a reshape of a
per-row value between (...,) and (..., 1). Values are then full-shape ("element" expressions of
``x``), per-row (expressions of the reductions' results) or scalars. At most one full-shape and
one per-row output (the two outputs a RowProgram has). Anything else raises UnsupportedError
saying why, which the fusion pass can report in ``explain()``.

Element expressions are inlined where used (each pass over the row recomputes them from ``x``:
the multi-pass kernel re-reads the row anyway); the C compiler merges repeats.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Value
from .cuda import inline_literal, op_template, unsupported_reason
from .reduce_cuda import REDUCERS, RowProgram, RowStage

F32 = np.dtype("float32")
ELEM, ROW, SCALAR = "element", "row", "scalar"


def row_program(body: Graph) -> RowProgram:
    """The row program computing ``body``'s outputs; UnsupportedError naming what does not fit."""
    if len(body.inputs) != 1:
        raise UnsupportedError(f"row reduction: {len(body.inputs)} inputs (one is supported)")
    (x,) = body.inputs
    if x.dtype != F32 or len(x.shape) < 1:
        raise UnsupportedError(f"row reduction: input {x.type} is not a float32 array")
    full, lead = tuple(x.shape), tuple(x.shape[:-1])
    row_shapes = {lead, (*lead, 1)}
    expr: dict[Value, str] = {x: "x"}
    kind: dict[Value, str] = {x: ELEM}
    stages: list[RowStage] = []
    for node in body.nodes:
        out = node.outputs[0] if len(node.outputs) == 1 else None
        if out is None:
            raise UnsupportedError(f"row reduction: {node.op} has {len(node.outputs)} outputs")
        if node.op == "constant":
            literal = inline_literal(node.attrs["value"])
            if literal is None or out.shape != ():
                raise UnsupportedError("row reduction: only scalar finite constants are inlined")
            expr[out], kind[out] = f"((float){literal})", SCALAR
        elif node.op in REDUCERS:
            (a,) = node.inputs
            if kind[a] != ELEM or tuple(node.attrs["axis"]) != (len(full) - 1,):
                raise UnsupportedError(
                    f"row reduction: {node.op} over axes {node.attrs['axis']} of a "
                    f"{kind[a]} value (only the last axis of a full-shape value)"
                )
            name = f"r{len(stages)}"
            stages.append(RowStage(name, node.op, expr[a]))
            expr[out], kind[out] = name, ROW
        elif node.op == "reshape":
            (a,) = node.inputs
            if kind[a] != ROW or out.shape not in row_shapes:
                raise UnsupportedError(f"row reduction: reshape to {out.shape}")
            expr[out], kind[out] = expr[a], ROW
        else:
            reason = unsupported_reason(node)
            if reason is not None:
                raise UnsupportedError(f"row reduction: {reason}")
            if any(v.dtype != F32 for v in (*node.inputs, out)):
                raise UnsupportedError(f"row reduction: {node.op} on non-float32 values")
            kinds = {kind[v] for v in node.inputs}
            k = ELEM if ELEM in kinds else ROW if ROW in kinds else SCALAR
            want = {ELEM: {full}, ROW: row_shapes, SCALAR: {()}}[k]
            if out.shape not in want:
                raise UnsupportedError(f"row reduction: {node.op} gives shape {out.shape}")
            template = op_template(node)[0]
            expr[out] = "(" + template.format(*(expr[v] for v in node.inputs), T="float") + ")"
            kind[out] = k
    elementwise = [v for v in body.outputs if kind[v] == ELEM]
    per_row = [v for v in body.outputs if kind[v] == ROW]
    if (
        len(elementwise) > 1
        or len(per_row) > 1
        or len(elementwise) + len(per_row) != len(body.outputs)
    ):
        raise UnsupportedError(
            "row reduction: outputs must be at most one full-shape and one per-row value"
        )
    if not stages:
        raise UnsupportedError("row reduction: the body reduces nothing")
    return RowProgram(
        tuple(stages),
        elementwise=expr[elementwise[0]] if elementwise else None,
        per_row=expr[per_row[0]] if per_row else None,
    )
