"""A CPU-only rendering of fused groups with broadcast operands: a row x column loop nest.

The CUDA kernel (``cuda.py``) indexes a broadcast operand per element (``in1[i % 4096]``, or
coordinates by division): right for a GPU thread, but GCC does not vectorize such a loop, so
every element pays a scalar call of ``tanhf`` and friends. Here the iteration space is split
into rows and one contiguous column range: each operand is, over the columns, either contiguous
(``p[c]`` from a per-row base) or constant (loaded once per row), and the inner loop is a
plain loop over ``c`` that GCC vectorizes, calling libmvec's SIMD functions. The per-element
expressions are the CUDA kernel's own (``cuda._body_lines``), so both targets compute the same
thing; only the loop around them differs. GPU kernels are not touched by this file.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ..ir import Graph
from .cuda import IN_PARAM, OUT_PARAM, Kernel, _body_lines, c_strides, c_type, op_template

MIN_INNER = 16  # columns; a shorter inner loop is no better than the flat kernel's index math
NAME_PREFIX = "gg_cpu_"

CPU_KERNEL_TEMPLATE = """\
// gpugraph fused kernel, CPU loop nest ({rows} rows x {cols} columns): {summary}
{header}extern "C" void {name}({params}) {{
  const long long lo = GG_RANGE_LO({n}LL), hi = GG_RANGE_HI({n}LL);
{hoisted}  for (long long r = lo / {cols}LL; r * {cols}LL < hi; ++r) {{
    const long long row0 = r * {cols}LL;
    const long long cb = lo > row0 ? lo - row0 : 0;
    const long long ce = hi - row0 < {cols}LL ? hi - row0 : {cols}LL;
{row}
    // An output shares bytes only with a same-shape input (ops/fused.py: _inplace_ok), so
    // column c reads element c of it before writing element c: no dependence across columns.
#pragma GCC ivdep
    for (long long c = cb; c < ce; ++c) {{
{body}
    }}
  }}
}}
"""
COORD = "    const long long c{a} = (r / {inner}LL) % {extent}LL;"
ROW_PTR = "    const {ct}* const p{j} = in{j} + {base};"
ROW_VALUE = "    const {ct} s{j} = in{j}[{base}];"
OUT_PTR = "    {ct}* const q{j} = out{j} + row0;"
SCALAR = "  const {ct} s{j} = in{j}[0];\n"


@dataclass(frozen=True)
class _Operand:
    """One input seen from the loop nest: contiguous over the columns or constant there, and
    its per-row offset as (row axis, input stride) terms."""

    contiguous: bool
    terms: tuple[tuple[int, int], ...]


def _split(shapes: list[tuple[int, ...]], out: tuple[int, ...]) -> int | None:
    """The first column axis: the smallest k such that every input is either equal to the
    output over axes [k:] or has extent 1 on all of them. None when no input needs index math
    (the flat kernel is already a plain loop) or the columns would be too few."""
    cats = [[e == o for e, o in zip(s, out)] for s in shapes]  # True: full extent on axis a
    needs_math = [c for c in cats if any(c) and not all(c)]
    if not needs_math:
        return None
    k = len(out)
    while k > 0 and all(len(set(c[k - 1 :])) == 1 for c in cats):
        k -= 1
    return k if math.prod(out[k:]) >= MIN_INNER else None


def emit_cpu_kernel(body: Graph) -> Kernel | None:
    """The loop-nest kernel of ``body``, or None where the CUDA kernel's flat loop serves."""
    full = tuple(np.broadcast_shapes(*(v.shape for v in body.outputs)))
    keep = [a for a, e in enumerate(full) if e != 1]  # extent-1 axes index nothing
    out = tuple(full[a] for a in keep)
    shapes = []
    for v in body.inputs:
        padded = (1,) * (len(full) - len(v.shape)) + tuple(v.shape)
        shapes.append(tuple(padded[a] for a in keep))
    k = _split(shapes, out)
    if k is None:
        return None
    rows, cols, n = math.prod(out[:k]), math.prod(out[k:]), math.prod(out)
    if n == 0:
        return None  # nothing runs; the flat kernel has no division by a zero extent
    operands = []
    for s in shapes:
        strides = c_strides(s)
        terms = tuple((a, strides[a]) for a in range(k) if s[a] != 1)
        operands.append(_Operand(k < len(out) and s[k] != 1, terms))
    axes = sorted({a for op in operands for a, _ in op.terms})
    row = [COORD.format(a=a, inner=math.prod(out[a + 1 : k]), extent=out[a]) for a in axes]
    hoisted, sources = "", []
    for j, (v, op) in enumerate(zip(body.inputs, operands)):
        ct = c_type(v.dtype)
        base = " + ".join(f"c{a} * {s}LL" for a, s in op.terms) or "0LL"
        if op.contiguous:
            row.append(ROW_PTR.format(ct=ct, j=j, base=base))
            sources.append(f"p{j}[c]")
        elif op.terms:
            row.append(ROW_VALUE.format(ct=ct, j=j, base=base))
            sources.append(f"s{j}")
        else:  # one element for the whole group
            hoisted += SCALAR.format(ct=ct, j=j)
            sources.append(f"s{j}")
    row += [OUT_PTR.format(ct=c_type(v.dtype), j=j) for j, v in enumerate(body.outputs)]
    lines = _body_lines(body, sources, lambda j: f"q{j}[c]")
    params = [IN_PARAM.format(ct=c_type(v.dtype), k=j) for j, v in enumerate(body.inputs)]
    params += [OUT_PARAM.format(ct=c_type(v.dtype), k=j) for j, v in enumerate(body.outputs)]
    helpers = {op_template(m)[1] for m in body.nodes if m.op != "constant"}
    summary = ", ".join(m.op for m in body.nodes if m.op != "constant")
    text = CPU_KERNEL_TEMPLATE.format(
        rows=rows,
        cols=cols,
        summary=summary,
        header="".join(sorted(helpers)),
        name="GG_KERNEL_NAME",
        params=", ".join(params),
        n=n,
        hoisted=hoisted,
        row="\n".join(row),
        body="\n".join("    " + line for line in lines),
    )
    name = NAME_PREFIX + hashlib.sha1(text.encode()).hexdigest()[:12]
    return Kernel(name, text.replace("GG_KERNEL_NAME", name), n)
