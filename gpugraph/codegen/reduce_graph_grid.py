"""Grid kernels for fused_grid_reduce groups (passes/fuse_reduce_grid.py): the bridge from a
group body to codegen/reduce_grid.py's two-stage column and full reductions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Node, Value
from .cuda import (
    HALF_OUTPUT_TEMPLATES,
    KERNEL_OBSERVERS,
    compute_type,
    inline_literal,
    op_template,
    unsupported_reason,
)

F16, F32, F64 = np.dtype("float16"), np.dtype("float32"), np.dtype("float64")


def input_kind(shape: tuple[int, ...], full: tuple[int, ...], start: int, stop: int) -> str | None:
    """How an input of ``shape`` broadcasts against the reduced operand's ``full`` shape seen
    as (outer, rows, cols) = (full[:start], full[start:stop], full[stop:]): "full", "row" (per
    outer and row), "col" (per outer and column), "scalar", or None (another broadcast, which
    the grid kernels do not index)."""
    full = tuple(full)
    padded = (1,) * (len(full) - len(shape)) + tuple(shape)
    if padded == full:
        return "full"
    if all(d == 1 for d in padded):
        return "scalar"
    ones = [all(d == 1 for d in part) for part in (padded[start:stop], padded[stop:])]
    if padded[:start] != full[:start]:
        return None
    if ones[1] and padded[start:stop] == full[start:stop]:
        return "row"
    if ones[0] and padded[stop:] == full[stop:]:
        return "col"
    return None


def grid_run(full: tuple[int, ...], stop: int, start: int) -> tuple[int, int]:
    """The (start, stop) input kinds are taken against: the reduced run of a column layout;
    for a full reduction its kernel's view, (n / cols, cols) with cols the last axis."""
    return (start, stop) if stop < len(full) else (0, max(0, len(full) - 1))


def grid_kernel(body: Graph, axes: int, start: int = 0) -> dict:
    """The attrs of a fused_grid_reduce node's kernels: a reduce_grid.GridProgram whose
    prologue is the body's elementwise chain up to its reduction (an expression of the input
    elements: ``x`` for one full-shape array, else ``x0``, ``x1``, ... each loaded by its
    kind, input_kind) and whose epilogue is the chain after it (an expression of ``r``);
    ``full`` layout when the reduction is over every axis, else ``column`` over (rows, cols),
    or (outer, rows, cols) for a middle run (axes ``start``..``axes - 1``).
    UnsupportedError when an input broadcasts otherwise or the body holds what the templates
    cannot express."""
    from .reduce_grid import REDUCERS, GridProgram, emit_grid_kernels

    first = next((n for n in body.nodes if n.op in REDUCERS), None)
    if first is None:
        raise UnsupportedError("grid reduction: the body has no sum or max")
    full = tuple(first.inputs[0].shape)
    run = grid_run(full, axes, start)
    kinds = []
    for v in body.inputs:
        kind = input_kind(v.shape, full, *run)
        if kind is None:
            raise UnsupportedError(
                f"grid reduction: input {v.type} broadcasts against {full} neither per row "
                "nor per column"
            )
        if v.dtype not in (F16, F32, F64):
            raise UnsupportedError(f"grid reduction: input {v.type} is not a float16/32/64 array")
        kinds.append(kind)
    if "full" not in kinds:
        raise UnsupportedError(f"grid reduction: no input of the reduced shape {full}")
    one = kinds == ["full"]
    # values compute in the accumulation type (float for float16 inputs, loaded converted); a
    # float16 value other than an input may only be the result, rounded once by the store, as
    # the unfused cast or op rounds it
    acc = F64 if any(v.dtype == F64 for v in body.inputs) else F32
    finals = set(body.outputs)
    expr: dict[Value, str] = {v: "x" if one else f"x{j}" for j, v in enumerate(body.inputs)}
    behind: dict[Value, Node] = {}  # a value after a reduction -> that reduction
    for node in body.nodes:
        out = node.output
        if node.op == "constant":
            literal = inline_literal(node.attrs["value"])
            if literal is None:
                raise UnsupportedError("grid reduction: a constant that is not a finite scalar")
            expr[out] = literal
            continue
        if node.op in REDUCERS:
            if node.inputs[0] in behind or node.inputs[0].shape != full:
                raise UnsupportedError("grid reduction: a reduction of a reduced value")
            behind[out] = node
            expr[out] = "r"  # each reduction's epilogue is rendered with its own r
            continue
        after = {behind[v] for v in node.inputs if v in behind}
        if len(after) > 1:
            raise UnsupportedError(f"grid reduction: {node.op} combines two reductions' results")
        if after:
            behind[out] = after.pop()
        reason = unsupported_reason(node)
        if reason is not None:
            raise UnsupportedError(f"grid reduction: {reason}")
        if out.dtype not in (acc, np.dtype("bool")) and not (out in finals and out.dtype == F16):
            raise UnsupportedError(f"grid reduction: {node.op} gives {out.dtype}, not {acc}")
        template, helper = op_template(node)
        if helper:
            raise UnsupportedError(f"grid reduction: {node.op} needs a helper function")
        if out.dtype == F16:
            template = HALF_OUTPUT_TEMPLATES.get(node.op, template)
        ct = compute_type(out.dtype)
        expr[out] = "(" + template.format(*(expr[v] for v in node.inputs), T=ct) + ")"
    x = body.inputs[kinds.index("full")]
    reductions = []
    for final in body.outputs:
        reduction = behind.get(final)
        if reduction is None or reduction.output.dtype != acc or final.dtype not in (acc, x.dtype):
            raise UnsupportedError(
                f"grid reduction: each output must come from one reduction giving {acc}, and be "
                f"{acc} or {x.dtype}"
            )
        reductions.append((reduction.op, expr[reduction.inputs[0]], expr[final], final.dtype.name))
    (op, prologue, epilogue, out_dtype), *also = reductions
    program = GridProgram(
        op,
        prologue,
        epilogue,
        x.dtype.name,
        out_dtype,
        None if one else tuple((v.dtype.name, k) for v, k in zip(body.inputs, kinds)),
        tuple(also),
    )
    layout = "full" if axes == len(full) and start == 0 else "column"
    kernels = emit_grid_kernels(program, layout)
    # the shape the kernels view the reduced operand as (rows, cols merged for a column)
    shape = full if layout == "full" else (math.prod(full[start:axes]), math.prod(full[axes:]))
    if start:
        shape = (math.prod(full[:start]), *shape)
    attrs = {
        "cuda_source": kernels.source,
        "kernel_name": kernels.name,
        "grid_layout": layout,
        "grid_kernels": kernels,
        "grid_shape": shape,
    }
    observed = ObservedGrid(kernels.name, kernels.source, attrs)
    for observe in KERNEL_OBSERVERS:  # the sweeps compile and emulate every kernel made
        observe(observed, body)
    return attrs


@dataclass(frozen=True)
class ObservedGrid:
    """What KERNEL_OBSERVERS get for a grid kernel pair: ``name`` and ``source`` as a Kernel
    has them, ``attrs()`` the node attrs (``grid_kernels`` tells the emulating helpers)."""

    name: str
    source: str
    node_attrs: dict

    def attrs(self) -> dict:
        return self.node_attrs
