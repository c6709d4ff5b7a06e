"""Row kernels of fused_reduce groups for the native CPU backend (backends/cpu_rows.py).

The CUDA row kernel (``reduce_graph.row_kernel``) gives each row a thread block and combines
partial results with warp shuffles; on the CPU a row is one thread's sequential loops. The
body is walked as for the CUDA kernel (``reduce_walk.walk_body``: the same value kinds, loads
and expression templates); only the reduction hook differs: per row, each reduction is one
loop over the columns with its elementwise prologue inlined, then one loop writes the
full-shape outputs.

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
from ..ir import Graph, Node
from ..ops.row_space import ELEM, Space, body_kinds
from .cuda import c_type
from .reduce_walk import Target, Walk, walk_body

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
MIN = """\
{ct} {r};
{{
  {ct} acc = ({ct})INFINITY;
  int nan = 0;
#pragma omp simd reduction(min : acc) reduction(| : nan)
  for (long long c = 0; c < cols; ++c) {{
{loop}    const {ct} e = {x};
    acc = e < acc ? e : acc;
    nan |= e != e;
  }}
  {r} = nan ? ({ct})NAN : acc;
}}"""
# prod multiplies in the value type (float for float32, as the CUDA kernel and np.prod do: a
# product that overflows there gives inf here too); the simd lanes' partial products make the
# order differ from NumPy's, within a few ulp per element (docs/fusion.md, "prod").
PROD = """\
{ct} {r};
{{
  {ct} acc = ({ct})1;
#pragma omp simd reduction(* : acc)
  for (long long c = 0; c < cols; ++c) {{
{loop}    acc *= {x};
  }}
  {r} = acc;
}}"""
STORE = """\
#pragma GCC ivdep
for (long long c = 0; c < cols; ++c) {{
{loop}}}"""
REDUCTIONS = {"sum": SUM, "max": MAX, "min": MIN, "prod": PROD}


def _reduction(w: Walk, k: int, node: Node, x: str, loop: list[str], ct: str) -> list[str]:
    """The walk's reduction hook: one OpenMP simd loop over the row's columns."""
    if node.output.dtype not in (np.dtype("float32"), np.dtype("float64")):
        raise UnsupportedError(f"cpu row kernel: {node.op} of {node.output.dtype}")
    body = "".join(f"    {line}\n" for line in loop)
    return REDUCTIONS[node.op].format(ct=ct, r=f"r{k}", loop=body, x=x).splitlines()


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
    w = walk_body(body, kinds, Target("cpu row kernel", _reduction))
    names, row_lines, helpers = w.names, w.row_lines, w.helpers
    full = [(j, v) for j, v in enumerate(body.outputs) if kinds[v] == ELEM]
    if full:
        lines = w.loop_lines([v for _, v in full])
        lines += [f"out{j}[row * cols + c] = {names[v]};" for j, v in full]
        row_lines += STORE.format(loop="".join(f"  {x}\n" for x in lines)).splitlines()
    row_lines += [
        f"out{j}[row] = {names[v]};" for j, v in enumerate(body.outputs) if kinds[v] != ELEM
    ]
    params = [f"const {c_type(v.dtype)}* __restrict__ in{j}" for j, v in enumerate(body.inputs)]
    params += [f"{c_type(v.dtype)}* __restrict__ out{j}" for j, v in enumerate(body.outputs)]
    width = max(space.cols, 1)
    text = KERNEL.format(
        rows=space.rows,
        cols=space.cols,
        summary=", ".join(n.op for n in body.nodes if n.op != "constant"),
        helpers="".join(sorted(helpers)),
        name="GG_KERNEL_NAME",
        params=", ".join(params),
        n=space.rows * width,
        w=width,
        lines="".join(f"    {x}\n" for x in row_lines),
    )
    name = NAME_PREFIX + hashlib.sha1(text.encode()).hexdigest()[:12]
    return CpuRowKernel(name, text.replace("GG_KERNEL_NAME", name), space.rows * width)
