"""Row kernels of fused_reduce groups for the native CPU backend (backends/cpu_rows.py).

The CUDA row kernel (``reduce_graph.row_kernel``) gives each row a thread block and combines
partial results with warp shuffles; on the CPU a row is one thread's sequential loops. The
values are classified as for the CUDA kernel (``row_space.body_kinds``: element, row, column,
scalar), read the same way (``reduce_graph.LOAD``) and computed by the same expression
templates (``cuda.op_template``); per row, each reduction is one loop over the columns with
its elementwise prologue inlined, then one loop writes the full-shape outputs.

Reduction order. A sequential float sum does not vectorize (its order is fixed); the loops are
``#pragma omp simd reduction``, which lets the compiler keep one partial sum per vector lane.
NumPy's ``np.add.reduce`` sums pairwise instead, so the two differ by rounding. Sums of float32
values accumulate in double: the result is then the float32 rounding of a sum whose own error
(lanes of ~cols/8 doubles) is far below a float32 ulp, so it is within NumPy's pairwise error of
NumPy's result (a few float32 ulp for the row lengths here), independently of the lane count.
float64 sums accumulate in double per lane (error ~ cols/8 ulp in the worst case, ~1e-15 of the
row's magnitude sum). A max is exact in any order; NaN is tracked beside it (an OpenMP max
drops NaN) so that a row holding one gives NaN, as ``np.max`` does.

The iteration space the backend splits over threads is ``rows * max(cols, 1)`` elements (its
threading threshold is in elements); a call covering elements [lo, hi) runs the rows whose
first element lies there, so ragged chunks still give every row to exactly one call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Value
from ..ops.row_space import COL, ELEM, Space, body_kinds
from .cuda import c_type, inline_literal, op_template, unsupported_reason
from .reduce_graph import LOAD, _loop_lines

NAME_PREFIX = "gg_cpurow_"
KERNEL = """\
// gpugraph fused reduction, CPU row kernel ({rows} rows x {cols} columns): {summary}
{helpers}extern "C" void {name}({params}) {{
  const long long cols = {cols}LL;
  const long long row_lo = (GG_RANGE_LO({n}LL) + {w}LL - 1) / {w}LL;
  const long long row_hi = (GG_RANGE_HI({n}LL) + {w}LL - 1) / {w}LL;
  for (long long row = row_lo; row < row_hi; ++row) {{
{lines}  }}
}}
"""
SUM = """\
{ct} {r};
{{
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (long long c = 0; c < cols; ++c) {{
{loop}    acc += (double)({x});
  }}
  {r} = ({ct})acc;
}}"""
MAX = """\
{ct} {r};
{{
  {ct} acc = -({ct})INFINITY;
  int nan = 0;
#pragma omp simd reduction(max : acc) reduction(| : nan)
  for (long long c = 0; c < cols; ++c) {{
{loop}    const {ct} e = {x};
    acc = e > acc ? e : acc;
    nan |= e != e;
  }}
  {r} = nan ? ({ct})NAN : acc;
}}"""
STORE = """\
#pragma GCC ivdep
for (long long c = 0; c < cols; ++c) {{
{loop}}}"""
REDUCTIONS = {"sum": SUM, "max": MAX}


@dataclass(frozen=True)
class CpuRowKernel:
    name: str
    source: str
    n: int  # the iteration space the backend splits: rows * max(cols, 1) elements


def cpu_row_kernel(body: Graph, space: Space) -> CpuRowKernel:
    """The CPU row kernel of a fused_reduce body over ``space``: parameters ``in0..`` then
    ``out0..`` (pointers; rows and cols are compiled in). UnsupportedError says what does not
    fit (the group then runs on the NumPy row-block runner)."""
    if any(v.dtype == np.dtype("float16") for n in body.nodes for v in (*n.inputs, *n.outputs)):
        # float16 groups (the casts around a float16 softmax) need the float16 rules of the
        # CUDA row kernel (half storage, float compute, one rounding per op), not written here
        raise UnsupportedError("cpu row kernel: float16 values are not rendered")
    kinds = body_kinds(body, space)
    names: dict[Value, str] = {}
    row_lines: list[str] = []
    elem_lines: dict[Value, str] = {}  # element value -> its line inside a column loop
    helpers: set[str] = set()
    order = list(body.inputs) + [n.output for n in body.nodes]
    for j, v in enumerate(body.inputs):
        line = f"const {c_type(v.dtype)} a{j} = {LOAD[kinds[v]].format(j=j)};"
        names[v] = f"a{j}"
        if kinds[v] in (ELEM, COL):
            elem_lines[v] = line
        else:
            row_lines.append(line)
    for k, node in enumerate(body.nodes):
        out = node.output
        if node.op == "constant":
            literal = inline_literal(node.attrs["value"])
            if literal is None:
                raise UnsupportedError("cpu row kernel: a constant that is not a finite scalar")
            names[out] = literal
            continue
        if node.op in ("reshape", "broadcast_to"):  # the same value under another shape
            names[out] = names[node.inputs[0]]
            if node.inputs[0] in elem_lines:
                elem_lines[out] = ""
            continue
        ct = c_type(out.dtype)
        if node.op in REDUCTIONS:
            (a,) = node.inputs
            if out.dtype not in (np.dtype("float32"), np.dtype("float64")):
                raise UnsupportedError(f"cpu row kernel: {node.op} of {out.dtype}")
            loop = "".join(f"    {x}\n" for x in _loop_lines([a], elem_lines, order, body))
            names[out] = f"r{k}"
            text = REDUCTIONS[node.op].format(ct=ct, r=f"r{k}", loop=loop, x=names[a])
            row_lines += text.splitlines()
            continue
        reason = unsupported_reason(node)
        if reason is not None:
            raise UnsupportedError(f"cpu row kernel: {reason}")
        template, helper = op_template(node)
        if helper:
            helpers.add(helper)
        names[out] = f"v{k}"
        line = f"const {ct} v{k} = {template.format(*(names[v] for v in node.inputs), T=ct)};"
        if kinds[out] == ELEM:
            elem_lines[out] = line
        else:
            row_lines.append(line)
    full = [(j, v) for j, v in enumerate(body.outputs) if kinds[v] == ELEM]
    if full:
        lines = _loop_lines([v for _, v in full], elem_lines, order, body)
        lines += [f"out{j}[row * cols + c] = {names[v]};" for j, v in full]
        row_lines += STORE.format(loop="".join(f"  {x}\n" for x in lines)).splitlines()
    row_lines += [
        f"out{j}[row] = {names[v]};" for j, v in enumerate(body.outputs) if kinds[v] != ELEM
    ]
    params = [f"const {c_type(v.dtype)}* __restrict__ in{j}" for j, v in enumerate(body.inputs)]
    params += [f"{c_type(v.dtype)}* __restrict__ out{j}" for j, v in enumerate(body.outputs)]
    w = max(space.cols, 1)
    text = KERNEL.format(
        rows=space.rows,
        cols=space.cols,
        summary=", ".join(n.op for n in body.nodes if n.op != "constant"),
        helpers="".join(sorted(helpers)),
        name="GG_KERNEL_NAME",
        params=", ".join(params),
        n=space.rows * w,
        w=w,
        lines="".join(f"    {x}\n" for x in row_lines),
    )
    name = NAME_PREFIX + hashlib.sha1(text.encode()).hexdigest()[:12]
    return CpuRowKernel(name, text.replace("GG_KERNEL_NAME", name), space.rows * w)
