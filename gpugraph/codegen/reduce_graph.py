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
    HALF_OUTPUT_TEMPLATES,
    KERNEL_OBSERVERS,
    LOAD_CONVERT,
    NAME_PLACEHOLDER,
    RESULT_ROUND,
    STORE_CONVERT,
    c_type,
    compute_type,
    inline_literal,
    kernel_name,
    op_template,
    unsupported_reason,
)
from .reduce_cuda import (
    MAX_PERSISTENT_BLOCK,
    REDUCERS,
    ROW_REDUCE_HELPER,
    RowProgram,
    RowStage,
    persistent_block,
    row_block,
    row_plan,
)

F32, F16 = np.dtype("float32"), np.dtype("float16")
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
DOUBLE_REDUCE_HELPER = """\
#ifndef GG_ROW_REDUCE_D_DEFINED
#define GG_ROW_REDUCE_D_DEFINED
struct GgSumD {
  static __device__ __forceinline__ double identity() { return 0.0; }
  static __device__ __forceinline__ double combine(double a, double b) { return a + b; }
};
struct GgMaxD {
  // float -inf widened: exact, and the same intrinsic the float reducer uses
  static __device__ __forceinline__ double identity() {
    return (double)(-__int_as_float(0x7f800000));
  }
  static __device__ __forceinline__ double combine(double a, double b) {
    return (a != a || a > b) ? a : b;
  }
};
// gg_row_reduce for double: the same butterfly, partials and closing barrier.
template <class Op> __device__ __forceinline__ double gg_row_reduce_d(double v) {
  __shared__ double part_d[32];
  const unsigned lane = threadIdx.x % 32u, warp = threadIdx.x / 32u, warps = blockDim.x / 32u;
  for (int o = 16; o > 0; o >>= 1) v = Op::combine(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (warps == 1u) return v;
  if (lane == 0u) part_d[warp] = v;
  __syncthreads();
  v = lane < warps ? (double)part_d[lane] : Op::identity();
  for (int o = 16; o > 0; o >>= 1) v = Op::combine(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // the next reduction reuses part_d
  return v;
}
#endif
"""
DOUBLE_REDUCERS = {"sum": "GgSumD", "max": "GgMaxD"}
GRAPH_KERNEL = """\
// gpugraph row kernel: {summary}
{helpers}extern "C" __global__ void {name}({params}) {{
{guard}  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
{lines}  }}
}}
"""
LOAD = {
    ELEM: "in{j}[row * cols + c]",
    "column": "in{j}[c]",
    ROW: "in{j}[row]",
    SCALAR: "in{j}[0]",
}


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

    names: dict[Value, str] = {}
    row_lines: list[str] = []
    elem_lines: dict[Value, str] = {}  # element value -> its line inside a column loop
    helpers: set[str] = {ROW_REDUCE_HELPER}
    order = list(body.inputs) + [n.output for n in body.nodes]
    for v in (*body.inputs, *(o for n in body.nodes for o in n.outputs)):
        if v.dtype.name in DTYPE_HEADERS:
            helpers.add(DTYPE_HEADERS[v.dtype.name])
    for j, v in enumerate(body.inputs):
        load = LOAD_CONVERT.get(v.dtype.name, "{}").format(LOAD[kinds[v]].format(j=j))
        ct = compute_type(v.dtype)
        line = f"const {ct} a{j} = {load};"
        names[v] = f"a{j}"
        if items is not None and kinds[v] == ELEM:  # loaded once per row, read from registers
            row_lines += [f"{ct} a{j}_v[{items}];", *_column_loop(items, [f"a{j}_v[k] = {load};"])]
            elem_lines[v] = f"const {ct} a{j} = a{j}_v[k];"
        elif kinds[v] in (ELEM, "column"):
            elem_lines[v] = line
        else:
            row_lines.append(line)
    for k, node in enumerate(body.nodes):
        out = node.output
        if node.op == "constant":
            literal = inline_literal(node.attrs["value"])
            if literal is None:
                raise UnsupportedError("row kernel: a constant that is not a finite scalar")
            names[out] = literal
            continue
        if node.op in ("reshape", "broadcast_to"):  # the same value under another shape
            names[out] = names[node.inputs[0]]
            if node.inputs[0] in elem_lines:
                elem_lines[out] = ""  # no line of its own; the loop still needs its input's
            continue
        ct = compute_type(out.dtype)
        if node.op in REDUCERS:
            (a,) = node.inputs
            if out.dtype == F32 or (out.dtype == F16 and node.op == "max"):  # (max: exact)
                op, call = REDUCERS[node.op], "gg_row_reduce"
            elif out.dtype == np.dtype("float64"):
                op, call = DOUBLE_REDUCERS[node.op], "gg_row_reduce_d"
                helpers.add(DOUBLE_REDUCE_HELPER)
            else:
                raise UnsupportedError(f"row kernel: {node.op} of {out.dtype}")
            names[out] = f"r{k}"
            loop = _loop_lines([a], elem_lines, order, body)
            fold = [*loop, f"acc = {op}::combine(acc, {names[a]});"]
            row_lines += [
                f"{ct} r{k};",
                "{",
                f"  {ct} acc = {op}::identity();",
                *(f"  {x}" for x in _column_loop(items, fold)),
                f"  r{k} = {call}<{op}>(acc);",
                "}",
            ]
            continue
        reason = unsupported_reason(node)
        if reason is not None:
            raise UnsupportedError(f"row kernel: {reason}")
        template, helper = op_template(node)
        if helper:
            helpers.add(helper)
        if out.dtype == F16:
            template = HALF_OUTPUT_TEMPLATES.get(node.op, template)
        expr = template.format(*(names[v] for v in node.inputs), T=ct)
        expr = RESULT_ROUND.get(out.dtype.name, "{}").format(expr)
        names[out] = f"v{k}"
        line = f"const {ct} v{k} = {expr};"
        if kinds[out] == ELEM:
            elem_lines[out] = line
        else:
            row_lines.append(line)

    def store(v: Value) -> str:
        return STORE_CONVERT.get(v.dtype.name, "{}").format(names[v])

    stores = [
        f"out{j}[row * cols + c] = {store(v)};"
        for j, v in enumerate(body.outputs)
        if kinds[v] == ELEM
    ]
    if stores:
        full = [v for v in body.outputs if kinds[v] == ELEM]
        row_lines += _column_loop(items, _loop_lines(full, elem_lines, order, body) + stores)
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


def _loop_lines(
    targets: list[Value], elem_lines: dict, order: list[Value], body: Graph
) -> list[str]:
    """The element lines the ``targets`` need inside one column loop, in body order."""
    producer = {n.output: n for n in body.nodes}
    need: set[Value] = set()
    stack = [v for v in targets if v in elem_lines]
    while stack:
        v = stack.pop()
        if v in need:
            continue
        need.add(v)
        node = producer.get(v)
        if node is not None:
            stack += [w for w in node.inputs if w in elem_lines and w not in need]
    return [elem_lines[v] for v in order if v in need and elem_lines[v]]


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
