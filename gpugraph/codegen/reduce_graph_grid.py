"""Grid kernels for fused_grid_reduce groups (passes/fuse_reduce_grid.py): the bridge from a
group body to codegen/reduce_grid.py's two-stage column and full reductions."""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Value
from .cuda import (
    HALF_OUTPUT_TEMPLATES,
    compute_type,
    inline_literal,
    op_template,
    unsupported_reason,
)

F16, F32, F64 = np.dtype("float16"), np.dtype("float32"), np.dtype("float64")


def grid_kernel(body: Graph, axes: int) -> dict:
    """The attrs of a fused_grid_reduce node's kernels: a reduce_grid.GridProgram whose
    prologue is the body's elementwise chain up to its reduction (an expression of the one
    array input ``x``) and whose epilogue is the chain after it (an expression of ``r``);
    ``full`` layout when ``axes`` is the input's rank, else ``column`` over (rows, cols).
    UnsupportedError when the body reads more than one array (GridProgram has one input) or
    holds what the templates cannot express."""
    from .reduce_grid import GridProgram, emit_grid_kernels

    if len(body.inputs) != 1:
        raise UnsupportedError(
            f"grid reduction: the prologue reads {len(body.inputs)} arrays (the grid kernels "
            "read one)"
        )
    (x,) = body.inputs
    if x.dtype not in (F16, F32, F64):
        raise UnsupportedError(f"grid reduction: input {x.type} is not a float16/32/64 array")
    # values compute in the accumulation type (float for a float16 x, loaded converted); a
    # float16 value other than x may only be the result, rounded once by the store, as the
    # unfused cast or op rounds it
    acc = F64 if x.dtype == F64 else F32
    final = body.outputs[0]
    expr: dict[Value, str] = {x: "x"}
    reduction = None
    for node in body.nodes:
        out = node.output
        if node.op == "constant":
            literal = inline_literal(node.attrs["value"])
            if literal is None:
                raise UnsupportedError("grid reduction: a constant that is not a finite scalar")
            expr[out] = literal
            continue
        if node.op in ("sum", "max") and reduction is None:
            reduction = node
            expr[out] = "r"
            continue
        reason = unsupported_reason(node)
        if reason is not None:
            raise UnsupportedError(f"grid reduction: {reason}")
        if out.dtype not in (acc, np.dtype("bool")) and not (out is final and out.dtype == F16):
            raise UnsupportedError(f"grid reduction: {node.op} gives {out.dtype}, not {acc}")
        template, helper = op_template(node)
        if helper:
            raise UnsupportedError(f"grid reduction: {node.op} needs a helper function")
        if out.dtype == F16:
            template = HALF_OUTPUT_TEMPLATES.get(node.op, template)
        ct = compute_type(out.dtype)
        expr[out] = "(" + template.format(*(expr[v] for v in node.inputs), T=ct) + ")"
    if reduction is None or reduction.output.dtype != acc or final.dtype not in (acc, x.dtype):
        raise UnsupportedError(
            f"grid reduction: the reduction must give {acc} and the result {acc} or {x.dtype}"
        )
    if reduction.inputs[0].shape != x.shape:  # the kernels index x over the reduced shape
        raise UnsupportedError(f"grid reduction: input {x.type} is not the reduced shape")
    program = GridProgram(
        reduction.op, expr[reduction.inputs[0]], expr[final], x.dtype.name, final.dtype.name
    )
    layout = "full" if axes == len(x.shape) else "column"
    kernels = emit_grid_kernels(program, layout)
    return {
        "cuda_source": kernels.source,
        "kernel_name": kernels.name,
        "grid_layout": layout,
        "grid_kernels": kernels,
    }
