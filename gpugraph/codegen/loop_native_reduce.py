"""Reductions in a native loop (``loop_native.py``) that are not row kernels: float ``sum``s over
a contiguous range of axes (``sum_rows``) and ``fused_grid_reduce`` groups (``grid_reduce``: an
elementwise prologue, a sum/max over the leading axes, an elementwise epilogue), as plain loops
in a fixed order, float32 sums accumulating in double like the cpu backend's row kernels."""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph
from .cpu_grid import BLOCK_ROWS, COLUMNS_BLOCK, ONE_COLUMN_BLOCK, TABLES, native_form_refusal
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


# fused_grid_reduce: rows (the reduced leading axes, merged) x columns (the kept axes, merged).
# The row blocks are cpu_grid's own templates (COLUMNS_BLOCK, ONE_COLUMN_BLOCK, its per-op
# init/combine/merge TABLES): the same association (a partial per column and block of
# BLOCK_ROWS rows, added to the column's total; double for sums), the same NaN tracking for
# max/min, so a grid reduction in a native loop gives the bits the host-driven fallback's grid
# kernel gives. Only this frame is the loop's: one call covers every column (no thread range),
# the accumulators are on the stack, inputs are read full-size, one element, or a row of the
# trailing axes (``_source``) through the loop's prologue lines, and the epilogue writes o[c].
GRID_FRAME = """\
{helpers}static void {name}({params}) {{
{hoisted}  const long long rows = {red}LL, cols = {post}LL, lo = 0, hi = cols, width = cols;
  (void)hi;
  (void)width;
  {at} total[{slots}], part[{slots}];
  unsigned char nan[{slots}] = {{0}};
  (void)part;
  for (long long c = 0; c < cols; ++c) total[c] = {init};
  for (long long r0 = 0; r0 < rows; r0 += {block}LL) {{
    const long long r1 = r0 + {block}LL < rows ? r0 + {block}LL : rows;
{block_body}
  }}
  for (long long c = 0; c < cols; ++c) {{
    const {rt} x = nan[c] ? ({rt})NAN : ({rt})total[c];
{epilogue}  }}
}}
"""


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


def _element(lines: list[str], rt: str, pad: str) -> str:
    """The prologue of one element (index i) computed into ``t``, in its own scope."""
    inner = "".join(f"{pad}  {ln}\n" for ln in lines)
    return f"{pad}{rt} t;\n{pad}{{\n{inner}{pad}}}\n"


def grid_reduce(node, em: Emitter) -> str:
    body: Graph = node.attrs["body"]
    # one sum/max/min over leading axes; several reductions in one pass (a layer norm's dw and
    # db) and middle runs of axes keep the loop host-driven
    why = native_form_refusal(body, int(node.attrs.get("start", 0)))
    if why is not None:
        raise UnsupportedError(why)
    split = next(i for i, n in enumerate(body.nodes) if n.op in TABLES) + 1
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
    members = [n for n in body.nodes if n.op not in ("constant", *TABLES)]
    rt = compute_type(x.dtype)
    table, ct = TABLES[seed.op], c_type(x.dtype)
    lines = _body_lines(pro, sources, lambda j: "t")
    if post == 1:  # a full reduction: one simd reduction per block
        block_body = ONE_COLUMN_BLOCK[seed.op].format(
            prologue=_element(lines, rt, "      "), x="t", ct=ct
        )
    else:
        block_body = COLUMNS_BLOCK.format(
            init=table["init"].format(ct=ct),
            prologue=_element(lines, rt, "        "),
            combine=table["combine"].format(x="t", ct=ct),
            merge=table["merge"],
        )
    text = GRID_FRAME.format(
        helpers="".join(sorted({op_template(m)[1] for m in members})),
        name=HELPER_NAME,
        params=", ".join(params),
        hoisted="".join(hoisted),
        at="double" if seed.op == "sum" else ct,
        slots=max(post, 1),
        post=post,
        init=table["init"].format(ct=ct),
        red=red,
        block=BLOCK_ROWS,
        block_body=block_body,
        rt=rt,
        epilogue="".join(f"    {ln}\n" for ln in _body_lines(epi, ["x"], lambda j: "o[c]")),
    )
    return em.helper(text, None)
