"""CPU kernels of fused_grid_reduce groups (a column or full reduction with its elementwise
prologue and epilogue; ops/fused_grid_reduce.py) for the native CPU backend
(backends/cpu_grid.py). Beside the row kernel of codegen/cpu_reduce.py, not sharing its walker:
a grid body is a straight chain (prologue over the full shape, one reduction, an epilogue on the
reduced value with constants only), so it is rendered here in one pass.

The reduced axes are merged into ``rows`` and the kept ones into ``cols``; a call covers the
columns [GG_RANGE_LO, GG_RANGE_HI) (the backend splits columns over threads). Rows are walked in
order, in blocks of ``BLOCK_ROWS``: per block each column's partial sum starts at zero and is
added to the column's total at the block's end, the association of the NumPy runner's blocked
pass (whose blocks are larger). Sums accumulate in double (float32 values are rounded once, at
the end), so the result is within rounding of NumPy's and the same on every call and every
thread count. A max is exact in any order; NaN is tracked beside it, so that a column holding
one gives NaN as ``np.max`` does. Inputs are read through the CUDA codegen's broadcast index
expressions (``cuda.index_expr``), the prologue and epilogue through its op templates.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Value
from .cuda import (
    COORD_LINE,
    c_strides,
    c_type,
    index_expr,
    inline_literal,
    op_template,
    unsupported_reason,
)

NAME_PREFIX = "gg_cpugrid_"
BLOCK_ROWS = 256
KERNEL = """\
// gpugraph fused grid reduction, CPU kernel ({rows} rows x {cols} columns): {summary}
#include <stdlib.h>
{helpers}extern "C" void {name}({params}) {{
  const long long rows = {rows}LL, cols = {cols}LL;
  const long long lo = GG_RANGE_LO(cols), hi = GG_RANGE_HI(cols), width = hi - lo;
  if (width <= 0) return;
  {acc_t}* total = ({acc_t}*)malloc(sizeof({acc_t}) * width);
  {acc_t}* part = ({acc_t}*)malloc(sizeof({acc_t}) * width);
  unsigned char* nan = (unsigned char*)calloc(width, 1);
  for (long long c = 0; c < width; ++c) total[c] = {init};
  for (long long r0 = 0; r0 < rows; r0 += {block}LL) {{
    const long long r1 = r0 + {block}LL < rows ? r0 + {block}LL : rows;
{block_body}
  }}
  for (long long c = lo; c < hi; ++c) {{
    const {ct} {red} = nan[c - lo] ? ({ct})NAN : ({ct})total[c - lo];
{epilogue}    out0[c] = {result};
  }}
  free(total);
  free(part);
  free(nan);
}}
"""
# per block of rows: every column's partial in ``part`` (independent across columns, so the
# column loop vectorizes), merged into ``total``
COLUMNS_BLOCK = """\
    for (long long c = 0; c < width; ++c) part[c] = {init};
    for (long long r = r0; r < r1; ++r) {{
#pragma omp simd
      for (long long c = lo; c < hi; ++c) {{
        const long long i = r * cols + c;
{prologue}        {combine}
      }}
    }}
    for (long long c = 0; c < width; ++c) {merge}"""
# one column (a full reduction): the block is one simd reduction (one partial per vector lane,
# a fixed association for a given build), added to the total; a sequential chain of adds would
# be bound by the add's latency (3.3x slower than NumPy's pairwise sum measured)
ONE_COLUMN_BLOCK = {
    "sum": """\
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (long long r = r0; r < r1; ++r) {{
      const long long i = r;
{prologue}      acc += (double)({x});
    }}
    total[0] += acc;""",
    "max": """\
    {ct} acc = -({ct})INFINITY;
    int seen_nan = 0;
#pragma omp simd reduction(max : acc) reduction(| : seen_nan)
    for (long long r = r0; r < r1; ++r) {{
      const long long i = r;
{prologue}      const {ct} e = {x};
      acc = e > acc ? e : acc;
      seen_nan |= e != e;
    }}
    total[0] = acc > total[0] ? acc : total[0];
    nan[0] |= seen_nan;""",
}
SUM = {
    "init": "0.0",
    "combine": "part[c - lo] += (double)({x});",
    "merge": "total[c] += part[c];",
}
MAX = {
    "init": "-({ct})INFINITY",
    "combine": "{{ const {ct} e = {x}; part[c - lo] = e > part[c - lo] ? e : part[c - lo]; "
    "nan[c - lo] |= e != e; }}",
    "merge": "total[c] = part[c] > total[c] ? part[c] : total[c];",
}


@dataclass(frozen=True)
class CpuGridKernel:
    name: str
    source: str
    cols: int  # the iteration space the backend splits (columns)


def _literal(node) -> str:
    literal = inline_literal(node.attrs["value"])
    if literal is None:
        raise UnsupportedError("cpu grid kernel: a constant that is not a finite scalar")
    return literal


def cpu_grid_kernel(body: Graph, axes: int) -> CpuGridKernel:
    """The CPU kernel of a fused_grid_reduce body reducing axes 0..axes-1: parameters
    ``in0..`` then ``out0`` (pointers; the shape is compiled in). UnsupportedError says what
    does not fit (the group then runs on the NumPy blocked runner)."""
    if any(v.dtype == np.dtype("float16") for v in body.values()):
        # half storage with float compute needs the CUDA kernels' float16 rules (as for the
        # row kernel, codegen/cpu_reduce.py): not rendered here
        raise UnsupportedError("cpu grid kernel: float16 values are not rendered")
    split = next(i for i, n in enumerate(body.nodes) if n.op in ("sum", "max")) + 1
    reduction = body.nodes[split - 1]
    full = tuple(reduction.inputs[0].shape)
    rows, cols = math.prod(full[:axes]), math.prod(full[axes:])
    ct = c_type(reduction.output.dtype)
    if reduction.output.dtype not in (np.dtype("float32"), np.dtype("float64")):
        raise UnsupportedError(f"cpu grid kernel: {reduction.op} of {reduction.output.dtype}")
    if body.outputs[0].type.size != cols or len(body.outputs) != 1:
        raise UnsupportedError("cpu grid kernel: an output that is not one value per column")
    names: dict[Value, str] = {}
    helpers: set[str] = set()
    pro: list[str] = []
    coords: set[int] = set()
    for j, v in enumerate(body.inputs):
        expr, need = index_expr(tuple(v.shape), full)
        coords |= need
        names[v] = f"a{j}"
        pro.append(f"const {c_type(v.dtype)} a{j} = in{j}[{expr}];")
    strides = c_strides(full)
    pro = [
        COORD_LINE.format(axis=a, stride=strides[a], extent=full[a]).strip() for a in sorted(coords)
    ] + pro
    epi: list[str] = []
    for k, node in enumerate(body.nodes):
        out = node.output
        if node is reduction:
            names[out] = f"red{k}"
            continue
        if node.op == "constant":
            names[out] = _literal(node)
            continue
        if node.op in ("reshape", "broadcast_to", "squeeze", "expand_dims") and k >= split:
            names[out] = names[node.inputs[0]]  # one value per column either way
            continue
        reason = unsupported_reason(node)
        if reason is not None:
            raise UnsupportedError(f"cpu grid kernel: {reason}")
        if any(v not in names for v in node.inputs):
            raise UnsupportedError(f"cpu grid kernel: {node.op} reads a value it cannot see")
        if k >= split and any(v in body.inputs for v in node.inputs):
            raise UnsupportedError("cpu grid kernel: an epilogue reading a group input")
        template, helper = op_template(node)
        if helper:
            helpers.add(helper)
        oct_ = c_type(out.dtype)
        names[out] = f"v{k}"
        line = f"const {oct_} v{k} = {template.format(*(names[v] for v in node.inputs), T=oct_)};"
        (pro if k < split else epi).append(line)
    table = SUM if reduction.op == "sum" else MAX
    acc_t = "double" if reduction.op == "sum" else ct
    x = names[reduction.inputs[0]]
    if cols == 1:
        block_body = ONE_COLUMN_BLOCK[reduction.op].format(
            prologue="".join(f"      {ln}\n" for ln in pro), x=x, ct=ct
        )
    else:
        block_body = COLUMNS_BLOCK.format(
            init=table["init"].format(ct=ct),
            prologue="".join(f"        {ln}\n" for ln in pro),
            combine=table["combine"].format(x=x, ct=ct),
            merge=table["merge"],
        )
    text = KERNEL.format(
        rows=rows,
        cols=cols,
        summary=", ".join(n.op for n in body.nodes if n.op != "constant"),
        helpers="".join(sorted(helpers)),
        name="GG_KERNEL_NAME",
        params=", ".join(
            [f"const {c_type(v.dtype)}* __restrict__ in{j}" for j, v in enumerate(body.inputs)]
            + [f"{c_type(body.outputs[0].dtype)}* __restrict__ out0"]
        ),
        acc_t=acc_t,
        init=table["init"].format(ct=ct),
        block=BLOCK_ROWS,
        block_body=block_body,
        ct=ct,
        red=names[reduction.output],
        epilogue="".join(f"    {ln}\n" for ln in epi),
        result=names[body.outputs[0]],
    )
    name = NAME_PREFIX + hashlib.sha1(text.encode()).hexdigest()[:12]
    return CpuGridKernel(name, text.replace("GG_KERNEL_NAME", name), cols)
