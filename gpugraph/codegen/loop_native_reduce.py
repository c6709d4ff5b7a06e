"""Reductions in a native loop (``loop_native.py``) that are not row kernels: float ``sum``s over
a contiguous range of axes (``sum_rows``) and ``fused_grid_reduce`` groups (``grid_reduce``: an
elementwise prologue, a sum/max over the leading axes, an elementwise epilogue), as plain loops
in a fixed order, float32 sums accumulating in double like the cpu backend's row kernels."""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph
from .cpu_grid import native_form_refusal
from .cuda import _body_lines, c_type, compute_type, op_template
from .loop_native_ops import DTYPES, HELPER_NAME, Emitter

# a sum over a contiguous range of axes: in[pre, red, post] -> out[pre, post]; each output
# row accumulates in double (float32 sums are then the rounding of a much more exact sum, as
# the row kernels' are; NumPy's pairwise sum differs from either by rounding only)
SUM_ROWS = """\
static void {name}(const void* pa, void* po) {{
  const {ct}* __restrict a = (const {ct}*)pa;
  {ct}* __restrict o = ({ct}*)po;
  double acc[{post} > 0 ? {post} : 1];
  for (long long p = 0; p < {pre}LL; ++p) {{
    for (long long j = 0; j < {post}LL; ++j) acc[j] = 0.0;
    for (long long r = 0; r < {red}LL; ++r) {{
      const {ct}* __restrict row = a + (p * {red}LL + r) * {post}LL;
      for (long long j = 0; j < {post}LL; ++j) acc[j] += (double)row[j];
    }}
    for (long long j = 0; j < {post}LL; ++j) o[p * {post}LL + j] = ({ct})acc[j];
  }}
}}
"""
SUM_LAST = """\
static void {name}(const void* pa, void* po) {{
  const {ct}* __restrict a = (const {ct}*)pa;
  {ct}* __restrict o = ({ct}*)po;
  for (long long p = 0; p < {pre}LL; ++p) {{
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (long long r = 0; r < {red}LL; ++r) acc += (double)a[p * {red}LL + r];
    o[p] = ({ct})acc;
  }}
}}
"""

MAX_SUM_POST = 4096  # elements of the per-row accumulator on the stack


def sum_rows(node, em: Emitter) -> str:
    a, axes = node.inputs[0], sorted(node.attrs["axis"])
    if a.dtype.kind != "f" or a.dtype not in DTYPES or node.output.dtype != a.dtype:
        raise UnsupportedError(f"sum of {a.type} (only float32/float64 sums)")
    if axes and axes != list(range(axes[0], axes[-1] + 1)):
        raise UnsupportedError(f"sum over axes {tuple(axes)} (not one contiguous range)")
    lo, hi = (axes[0], axes[-1] + 1) if axes else (0, 0)
    pre, red, post = (
        int(np.prod(a.shape[i:j])) for i, j in ((0, lo), (lo, hi), (hi, len(a.shape)))
    )
    if post > MAX_SUM_POST:
        raise UnsupportedError(f"sum of {a.type} over {tuple(axes)} ({post} columns per row)")
    template = SUM_LAST if post == 1 else SUM_ROWS
    text = template.format(name=HELPER_NAME, ct=c_type(a.dtype), pre=pre, red=red, post=post)
    return em.helper(text, None)


# fused_grid_reduce: rows r (the reduced leading axes, merged) x columns c (the kept axes,
# merged); each element's prologue is computed where it is read, the rows are folded in order
# into one accumulator per column (double for sums, as the row kernels do; max propagates NaN
# as np.maximum does), then the epilogue runs per column
GRID_REDUCE = """\
{helpers}static void {name}({params}) {{
{hoisted}  {at} acc[{post}];
  for (long long c = 0; c < {post}LL; ++c) acc[c] = {init};
  for (long long r = 0; r < {red}LL; ++r) {{
    for (long long c = 0; c < {post}LL; ++c) {{
      const long long i = r * {post}LL + c;
      {rt} t;
      {{
{prologue}      }}
      {combine}
    }}
  }}
  for (long long c = 0; c < {post}LL; ++c) {{
    const {rt} x = ({rt})acc[c];
{epilogue}  }}
}}
"""
# a full sum (one column): one double accumulator whose lanes GCC vectorizes (an OpenMP simd
# reduction, a fixed order, as the row kernels' sums); a sequential add chain ran about 3x
# slower (cpu backend's grid kernels, bench/results cpu-grid)
GRID_FULL_SUM = """\
{helpers}static void {name}({params}) {{
{hoisted}  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (long long i = 0; i < {red}LL; ++i) {{
    {rt} t;
    {{
{prologue}    }}
    acc += (double)t;
  }}
  {{
    const long long c = 0;
    const {rt} x = ({rt})acc;
{epilogue}  }}
}}
"""
COMBINE = {
    "sum": ("double", "0.0", "acc[c] += (double)t;"),
    # a NaN kept stays (acc != acc); a NaN read is taken (t <= acc is false)
    "max": (None, None, "acc[c] = (acc[c] != acc[c] || t <= acc[c]) ? acc[c] : t;"),
    "min": (None, None, "acc[c] = (acc[c] != acc[c] || t >= acc[c]) ? acc[c] : t;"),
}
# the identity of max and min, when the accumulator type is the compute type
INIT = {"max": "-({rt})__builtin_inf()", "min": "({rt})__builtin_inf()"}


def _source(v, size: int, full: tuple[int, ...], j: int) -> str:
    """How element i of the full shape reads body input j: every element, one element, or
    one row of the trailing axes repeated (a bias row)."""
    if v.type.size == size:
        return f"in{j}[i]"
    if v.type.size == 1:
        return f"in{j}[0]"
    if v.shape and tuple(v.shape) == full[len(full) - len(v.shape) :]:
        return f"in{j}[i % {v.type.size}LL]"
    raise UnsupportedError(f"grid reduction input {v.type} read against {full}")


def grid_reduce(node, em: Emitter) -> str:
    body: Graph = node.attrs["body"]
    # one sum/max/min over leading axes; several reductions in one pass (a layer norm's dw and
    # db) and middle runs of axes keep the loop host-driven
    why = native_form_refusal(body, int(node.attrs.get("start", 0)))
    if why is not None:
        raise UnsupportedError(why)
    split = next(i for i, n in enumerate(body.nodes) if n.op in COMBINE) + 1
    seed = body.nodes[split - 1]
    x, k = seed.inputs[0], int(node.attrs["axes"])
    full = tuple(x.shape)
    red, post = int(np.prod(full[:k])), int(np.prod(full[k:]))
    if x.dtype.kind != "f" or x.dtype not in DTYPES:
        raise UnsupportedError(f"grid {seed.op} of {x.type} (only float32/float64)")
    if seed.op != "sum" and red == 0:
        raise UnsupportedError(f"a {seed.op} over 0 rows (NumPy raises)")
    if post > MAX_SUM_POST:
        raise UnsupportedError(f"grid {seed.op} of {x.type} ({post} columns per row)")
    consts = [n for n in body.nodes if n.op == "constant"]
    pro = Graph(list(body.inputs), body.nodes[: split - 1], [x])
    epi = Graph([seed.output], consts + body.nodes[split:], list(body.outputs))
    params, hoisted = [], []
    for j, v in enumerate(body.inputs):
        ct = c_type(v.dtype)
        params.append(f"const void* p{j}")
        hoisted.append(f"  const {ct}* __restrict in{j} = (const {ct}*)p{j};\n")
    out = body.outputs[0]
    params.append("void* q0")
    hoisted.append(f"  {c_type(out.dtype)}* __restrict o = ({c_type(out.dtype)}*)q0;\n")
    sources = [_source(v, x.type.size, full, j) for j, v in enumerate(body.inputs)]
    rt = compute_type(x.dtype)
    at, init, combine = COMBINE[seed.op]
    members = [n for n in body.nodes if n.op not in ("constant", *COMBINE)]
    template = GRID_FULL_SUM if seed.op == "sum" and post == 1 else GRID_REDUCE
    text = template.format(
        helpers="".join(sorted({op_template(m)[1] for m in members})),
        name=HELPER_NAME,
        params=", ".join(params),
        hoisted="".join(hoisted),
        at=at or rt,
        post=post,
        init=init or INIT[seed.op].format(rt=rt),
        red=red,
        rt=rt,
        prologue="".join(f"    {ln}\n" for ln in _body_lines(pro, sources, lambda j: "t")),
        combine=combine,
        epilogue="".join(f"{ln}\n" for ln in _body_lines(epi, ["x"], lambda j: "o[c]")),
    )
    return em.helper(text, None)
