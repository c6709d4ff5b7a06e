"""Short-row broadcasts on the CPU: a loop nest over blocks of whole rows with a tiled operand.

Where a group adds a short row to every row of an array (an (N, 3) array and a (3,) row), the
row x column nest of ``cpu_loops`` has too few columns to pay, and the flat kernel reads the
row through per-element index math, which GCC does not vectorize (so ``tanhf`` and friends run
scalar). Here the iteration space is cut into blocks of ``R`` whole rows (``R * cols`` >=
``BLOCK`` elements), and each broadcast row is copied ``R`` times into a local tile once per
call: over a block, every operand is then contiguous (``in + block0``, or the tile from 0),
and the inner loop is a plain loop that vectorizes, as in the nest. Blocks start on row
boundaries, so element ``c`` of any block is column ``c % cols`` of its row and the tile is
the same for every block. The per-element expressions are the CUDA kernel's
(``cuda._body_lines``)."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from ..ir import Graph
from .cuda import IN_PARAM, OUT_PARAM, Kernel, _body_lines, c_type, op_template

BLOCK = 256  # elements a block covers at least: a few vectors, a small stack tile
NAME_PREFIX = "gg_cputile_"

TEMPLATE = """\
// gpugraph fused kernel, CPU blocks of {rows_per} rows x {cols} columns (tiled rows): {summary}
{header}extern "C" void {name}({params}) {{
  const long long lo = GG_RANGE_LO({n}LL), hi = GG_RANGE_HI({n}LL);
{tiles}  for (long long b = lo / {width}LL; b * {width}LL < hi; ++b) {{
    const long long row0 = b * {width}LL;
    const long long cb = lo > row0 ? lo - row0 : 0;
    const long long ce = hi - row0 < {width}LL ? hi - row0 : {width}LL;
{ptrs}
    // as in the row x column nest: an output shares bytes only with a same-shape input
#pragma GCC ivdep
    for (long long c = cb; c < ce; ++c) {{
{body}
    }}
  }}
}}
"""
TILE = (
    "  {ct} t{j}[{width}];\n"
    "  for (long long c = 0; c < {width}LL; ++c) t{j}[c] = in{j}[c % {cols}LL];\n"
)
SCALAR = "  const {ct} s{j} = in{j}[0];\n"


def emit_tiled_kernel(body: Graph, min_cols: int) -> Kernel | None:
    """The tiled kernel of ``body``, or None where its shapes do not fit: every input must be
    of the output's shape, a single element, or a row broadcast (extent 1 on the leading
    axes, the output's extents on the rest) of fewer than ``min_cols`` elements."""
    out = tuple(np.broadcast_shapes(*(v.shape for v in body.outputs)))
    n = math.prod(out)
    if n == 0 or any(tuple(v.shape) != out for v in body.outputs):
        return None
    cols = 0
    kinds = []
    for v in body.inputs:
        shape = tuple(v.shape)
        if shape == out:
            kinds.append("full")
        elif math.prod(shape) == 1:
            kinds.append("scalar")
        else:
            trail = shape
            while trail and trail[0] == 1:
                trail = trail[1:]
            if out[len(out) - len(trail) :] != trail or len(trail) == len(out):
                return None
            size = math.prod(trail)
            if cols not in (0, size):
                return None  # rows of two lengths: no one tile width fits both
            cols = size
            kinds.append("row")
    if not cols or cols >= min_cols or n % cols:
        return None
    width = cols * -(-BLOCK // cols)
    tiles, ptrs, sources = "", [], []
    for j, (v, kind) in enumerate(zip(body.inputs, kinds)):
        ct = c_type(v.dtype)
        if kind == "full":
            ptrs.append(f"    const {ct}* const p{j} = in{j} + row0;")
            sources.append(f"p{j}[c]")
        elif kind == "row":
            tiles += TILE.format(ct=ct, j=j, width=width, cols=cols)
            sources.append(f"t{j}[c]")
        else:
            tiles += SCALAR.format(ct=ct, j=j)
            sources.append(f"s{j}")
    ptrs += [
        f"    {c_type(v.dtype)}* const q{j} = out{j} + row0;" for j, v in enumerate(body.outputs)
    ]
    lines = _body_lines(body, sources, lambda j: f"q{j}[c]")
    params = [IN_PARAM.format(ct=c_type(v.dtype), k=j) for j, v in enumerate(body.inputs)]
    params += [OUT_PARAM.format(ct=c_type(v.dtype), k=j) for j, v in enumerate(body.outputs)]
    helpers = {op_template(m)[1] for m in body.nodes if m.op != "constant"}
    text = TEMPLATE.format(
        rows_per=width // cols,
        cols=cols,
        summary=", ".join(m.op for m in body.nodes if m.op != "constant"),
        header="".join(sorted(helpers)),
        name="GG_KERNEL_NAME",
        params=", ".join(params),
        n=n,
        width=width,
        tiles=tiles,
        ptrs="\n".join(ptrs),
        body="\n".join("    " + line for line in lines),
    )
    name = NAME_PREFIX + hashlib.sha1(text.encode()).hexdigest()[:12]
    return Kernel(name, text.replace("GG_KERNEL_NAME", name), n)
