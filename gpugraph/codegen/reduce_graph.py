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

from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Value
from .cuda import (
    DTYPE_HEADERS,
    KERNEL_OBSERVERS,
    NAME_PLACEHOLDER,
    STORE_CONVERT,
    c_type,
    inline_literal,
    kernel_name,
    op_template,
    unsupported_reason,
)
from .reduce_cuda import (
    MAX_PERSISTENT_BLOCK,
    PROD_HELPER,
    REDUCER_TEMPLATES,
    REDUCERS,
    ROW_REDUCE_HELPER,
    RowProgram,
    RowStage,
    persistent_block,
    row_block,
    row_plan,
)
from .reduce_walk import Target, Walk, walk_body

F32, F16, F64 = np.dtype("float32"), np.dtype("float16"), np.dtype("float64")
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


# ---- Row kernels for fused_reduce groups (passes/fuse_reduce.py) --------------------------
# The general form of the row program above: any number of inputs, each full-shape
# (``in[row * cols + c]``), per row (``in[row]``), a column vector (``in[c]``, e.g. a layer
# norm's gamma) or one element; any number of outputs, full-shape or per row; float32 or
# float64 (bool in between), and float16 as the elementwise kernels do it (codegen/cuda.py):
# stored as half, every variable a float, each op's result rounded to half, so a float16
# softmax's casts fuse and its sums accumulate in float32 as the unfused ops do. Element
# values are one ``const`` line each inside the column loop that needs them (a DAG stays
# linear in size; nvcc merges repeats), per-row values one line each at row level, in body
# order, so every reduction sees the values before it.
GRAPH_KERNEL = """\
// gpugraph row kernel: {summary}
{helpers}extern "C" __global__ void {name}({params}) {{
{guard}  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
{lines}  }}
}}
"""


@dataclass(frozen=True)
class GraphRowKernel:
    name: str
    source: str
    block: int  # threads per row (row_block, or persistent_block for the register variant)
    rows: int
    cols: int
    items: int | None = None  # the register variant's values per thread; None: multi-pass

    def attrs(self) -> dict:
        """What a fused_reduce node (and the launchers) keep of the kernel."""
        return {
            "cuda_source": self.source,
            "kernel_name": self.name,
            "row_block": self.block,
            "rows": self.rows,
            "cols": self.cols,
            "row_items": self.items,
        }


def row_kernel(body: Graph, space, persistent: bool = True) -> GraphRowKernel:
    """The row kernel of a fused_reduce body over ``space`` (ops.row_space.Space):
    parameters ``in0..``, ``out0..`` (the body's), then ``rows`` and ``cols`` (long long).
    ``persistent``: where the row fits (``_items``: reduce_cuda.row_plan, up to
    PERSISTENT_MAX_COLS, within REGISTER_WORDS per thread over all full-shape inputs), each
    full-shape input is loaded once per row into registers and every pass reads it from there
    (launch with ``block`` threads: the kernel traps if the row does not fit); else every pass
    re-reads the row from global memory. UnsupportedError says what does not fit."""
    from ..ops.row_space import body_kinds

    kinds = body_kinds(body, space)
    # The shared-memory variant of reduce_cuda is not used here: a body has several full-shape
    # inputs (x and dy in a backward pass), which would split its 48 KiB between them, and
    # rows past the registers' 8192 columns are rare in the patterns this serves.
    words = sum(2 if v.dtype.itemsize == 8 else 1 for v in body.inputs if kinds[v] == ELEM)
    items = _items(space.cols, words) if persistent else None

    def reduce(w: Walk, k: int, node, x: str, loop: list[str], ct: str) -> list[str]:
        out = node.output
        if out.dtype not in (F32, F64) and not (out.dtype == F16 and node.op in ("max", "min")):
            raise UnsupportedError(f"row kernel: {node.op} of {out.dtype}")  # (max/min: exact)
        op = f"{REDUCER_TEMPLATES[node.op]}<{ct}>"
        fold = [*loop, f"acc = {op}::combine(acc, {x});"]
        return [
            f"{ct} r{k};",
            "{",
            f"  {ct} acc = {op}::identity();",
            *(f"  {line}" for line in _column_loop(items, fold)),
            f"  r{k} = gg_row_reduce<{op}>(acc);",
            "}",
        ]

    def hold(j: int, ct: str, load: str) -> list[str] | None:
        if items is None:
            return None
        return [f"{ct} a{j}_v[{items}];", *_column_loop(items, [f"a{j}_v[k] = {load};"])]

    w = walk_body(body, kinds, Target("row kernel", reduce, hold))
    names, row_lines = w.names, w.row_lines
    helpers = w.helpers | {ROW_REDUCE_HELPER}
    if any(n.op == "prod" for n in body.nodes):
        helpers.add(PROD_HELPER)
    for v in (*body.inputs, *(o for n in body.nodes for o in n.outputs)):
        if v.dtype.name in DTYPE_HEADERS:
            helpers.add(DTYPE_HEADERS[v.dtype.name])

    def store(v: Value) -> str:
        return STORE_CONVERT.get(v.dtype.name, "{}").format(names[v])

    stores = [
        f"out{j}[row * cols + c] = {store(v)};"
        for j, v in enumerate(body.outputs)
        if kinds[v] == ELEM
    ]
    if stores:
        full = [v for v in body.outputs if kinds[v] == ELEM]
        row_lines += _column_loop(items, w.loop_lines(full) + stores)
    per_row = [f"out{j}[row] = {store(v)};" for j, v in enumerate(body.outputs) if kinds[v] != ELEM]
    if per_row:
        row_lines += ["if (threadIdx.x == 0) {", *(f"  {x}" for x in per_row), "}"]
    params = [f"const {c_type(v.dtype)}* __restrict__ in{j}" for j, v in enumerate(body.inputs)]
    params += [f"{c_type(v.dtype)}* __restrict__ out{j}" for j, v in enumerate(body.outputs)]
    params += ["long long rows", "long long cols"]
    summary = ", ".join(n.op for n in body.nodes if n.op != "constant")
    text = GRAPH_KERNEL.format(
        summary=summary + f" -> {', '.join(str(v.type) for v in body.outputs)}",
        helpers="".join(sorted(helpers)),
        name=NAME_PLACEHOLDER,
        params=", ".join(params),
        guard=""
        if items is None
        else f"  if (cols > (long long){items} * blockDim.x) __trap();  // the row must fit\n",
        lines="".join(f"    {x}\n" for x in row_lines),
    )
    name = kernel_name(text)
    block = row_block(space.cols) if items is None else persistent_block(space.cols, items)
    kernel = GraphRowKernel(
        name, text.replace(NAME_PLACEHOLDER, name), block, space.rows, space.cols, items
    )
    for observe in KERNEL_OBSERVERS:
        observe(kernel, body)
    return kernel


# 32-bit registers per thread for the held row values: half of the 64 a thread may use when
# 1,024 threads share a multiprocessor's register file, leaving the rest for the arithmetic.
REGISTER_WORDS = 32


def _items(cols: int, words: int) -> int | None:
    """Values per thread of the register variant for rows of ``cols`` when each column holds
    ``words`` registers (one per float32/float16 full-shape input, two per float64), or None
    (the multi-pass kernel) when the row does not fit in registers."""
    items = row_plan(cols)
    if items is None or words == 0:
        return items
    items = min(items, REGISTER_WORDS // words)
    if items < 1 or persistent_block(cols, items) > MAX_PERSISTENT_BLOCK:
        return None
    return items


def _column_loop(items: int | None, lines: list[str]) -> list[str]:
    """``lines`` run for each of this thread's columns ``c`` (strided by the block, in order):
    a loop to ``cols``, or the register variant's unrolled ``k`` over ``items`` slots."""
    if items is None:
        head = ["for (long long c = threadIdx.x; c < cols; c += blockDim.x) {"]
        return [*head, *(f"  {x}" for x in lines), "}"]
    return [
        "#pragma unroll",
        f"for (int k = 0; k < {items}; ++k) {{",
        "  const long long c = threadIdx.x + (long long)k * blockDim.x;",
        "  if (c < cols) {",
        *(f"    {x}" for x in lines),
        "  }",
        "}",
    ]
