"""CUDA C emission for fused elementwise groups: templates, C types, literals and names.

A group is a small body ``Graph`` whose nodes are elementwise ops (plus inlined scalar
constants). ``emit_kernel`` turns it into one ``extern "C" __global__`` kernel specialized to the
body's dtypes and static shapes: 64-bit indices, a grid-stride loop, broadcasting by index
arithmetic with the shapes and strides baked in, and no index math at all for operands that
already have the iteration shape. Everything textual lives in the templates at the top.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Node, Value
from ..ops.registry import get_op

C_TYPES: dict[str, str] = {
    "float32": "float",
    "float64": "double",
    "int32": "int",
    "int64": "long long",
    "bool": "bool",
}
# (op, dtype kind of its first operand) pairs whose template is not valid C for that dtype.
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("power", "i"): "integer power has no exact CUDA template (pow(int, int) is ambiguous)",
}
NAME_PREFIX = "gg_fused_"
NAME_PLACEHOLDER = "GG_KERNEL_NAME"
LARGEST_INLINE_CONSTANT = 1  # elements; larger constants are passed as arrays

KERNEL_TEMPLATE = """\
// gpugraph fused kernel: {summary}
extern "C" __global__ void {name}({params}) {{
  const long long n = {n}LL;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {{
{body}
  }}
}}
"""
# No __restrict__: the memory planner may give an output the bytes of a same-shape input that
# dies at this kernel (ops/fused.py: _inplace_ok); each thread loads element i of every input
# before it stores element i of any output, which is exact only if the compiler may not assume
# the pointers never alias.
IN_PARAM = "const {ct}* in{k}"
OUT_PARAM = "{ct}* out{k}"
COORD_LINE = "    const long long c{axis} = (i / {stride}LL) % {extent}LL;"
INDEX_LINE = "    const long long i{k} = {expr};"
LOAD_LINE = "    const {ct} v{k} = in{j}[{index}];"
DEF_LINE = "    const {ct} v{k} = {expr};"
STORE_LINE = "    out{j}[i] = v{k};"


def c_type(dtype: np.dtype) -> str:
    """The C type of ``dtype``; UnsupportedError naming it if the codegen cannot express it."""
    ct = C_TYPES.get(np.dtype(dtype).name)
    if ct is None:
        raise UnsupportedError(f"CUDA codegen: dtype {np.dtype(dtype)} has no C type here")
    return ct


def kernel_name(source_without_name: str) -> str:
    """The one place kernel names are made: a prefix and a hash of the kernel text."""
    digest = hashlib.sha1(source_without_name.encode()).hexdigest()[:12]
    return NAME_PREFIX + digest


def unsupported_reason(node: Node) -> str | None:
    """Why ``node`` cannot go into a generated kernel, or None when it can."""
    opdef = get_op(node.op)
    if opdef.family != "elementwise":
        return f"{node.op} is not elementwise (family {opdef.family})"
    if opdef.cuda is None:
        return f"{node.op} has no CUDA template"
    for v in (*node.inputs, *node.outputs):
        if v.dtype.name not in C_TYPES:
            return f"{node.op}: dtype {v.dtype} has no C type in the codegen"
    kind = node.inputs[0].dtype.kind if node.inputs else node.outputs[0].dtype.kind
    return UNSUPPORTED.get((node.op, kind))


def inline_literal(value: np.ndarray) -> str | None:
    """A C literal (with its type) for a small constant, or None if it must be an array."""
    arr = np.asarray(value)
    if arr.size != 1 or arr.size > LARGEST_INLINE_CONSTANT:
        return None
    x = arr.reshape(()).item()
    ct = c_type(arr.dtype)
    if arr.dtype.kind == "b":
        return "true" if x else "false"
    if arr.dtype.kind == "i":
        if int(x) == np.iinfo(np.int64).min:  # -9223372036854775808LL does not parse
            return f"(({ct})(-9223372036854775807LL - 1))"
        return f"(({ct}){int(x)}LL)"
    if not math.isfinite(x):
        return None  # no portable literal for inf/nan without headers: pass it as an array
    return f"(({ct}){float(x)!r})"


def is_inline_constant(node: Node) -> bool:
    return node.op == "constant" and inline_literal(node.attrs["value"]) is not None


def c_strides(shape: tuple[int, ...]) -> list[int]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    return strides[::-1]


@dataclass(frozen=True)
class Kernel:
    name: str
    source: str
    n: int  # iteration space size (elements of the output shape)


def index_expr(in_shape: tuple[int, ...], out_shape: tuple[int, ...], *, stride_bug: bool = False):
    """C expression for an input's linear index from the output index ``i`` and the set of
    output axes whose coordinates it needs. ``i`` itself when the shapes agree, 0 for one
    element. ``stride_bug`` (tests only) corrupts the strides to prove the tests can see it."""
    if tuple(in_shape) == tuple(out_shape):
        return "i", set()
    if int(np.prod(in_shape, dtype=np.int64)) == 1:
        return "0", set()
    core = tuple(in_shape)
    while core and core[0] == 1:
        core = core[1:]
    if not stride_bug and tuple(out_shape[len(out_shape) - len(core) :]) == core:
        return f"(i % {int(np.prod(core, dtype=np.int64))}LL)", set()  # a trailing block
    offset = len(out_shape) - len(in_shape)
    terms, axes = [], set()
    for k, (extent, stride) in enumerate(zip(in_shape, c_strides(in_shape))):
        if extent == 1:
            continue
        axis = k + offset
        stride = stride + 1 if stride_bug else stride
        axes.add(axis)
        terms.append(f"c{axis}" if stride == 1 else f"c{axis} * {stride}LL")
    return " + ".join(terms), axes


def emit_kernel(body: Graph, *, stride_bug: bool = False) -> Kernel:
    """One kernel computing every output of ``body`` over their common (broadcast) shape."""
    out_shape = tuple(np.broadcast_shapes(*(v.shape for v in body.outputs)))
    assert all(v.shape == out_shape for v in body.outputs), "group outputs must share a shape"
    n = int(np.prod(out_shape, dtype=np.int64))
    out_strides = c_strides(out_shape)
    names: dict[Value, str] = {}
    lines: list[str] = []
    index_lines: list[str] = []
    axes_needed: set[int] = set()
    params = [IN_PARAM.format(ct=c_type(v.dtype), k=j) for j, v in enumerate(body.inputs)]
    params += [OUT_PARAM.format(ct=c_type(v.dtype), k=j) for j, v in enumerate(body.outputs)]
    for j, v in enumerate(body.inputs):
        expr, axes = index_expr(v.shape, out_shape, stride_bug=stride_bug)
        axes_needed |= axes
        if expr not in ("i", "0"):
            index_lines.append(INDEX_LINE.format(k=j, expr=expr))
            expr = f"i{j}"
        names[v] = f"v{len(names)}"
        lines.append(LOAD_LINE.format(ct=c_type(v.dtype), k=len(names) - 1, j=j, index=expr))
    for node in body.nodes:
        if node.op == "constant":
            literal = inline_literal(node.attrs["value"])
            assert literal is not None, "only small finite constants are inlined"
            names[node.output] = literal
            continue
        reason = unsupported_reason(node)
        if reason is not None:
            raise UnsupportedError(f"CUDA codegen: {reason}")
        out = node.output
        expr = get_op(node.op).cuda.format(*(names[v] for v in node.inputs), T=c_type(out.dtype))
        names[out] = f"v{len(names)}"
        lines.append(DEF_LINE.format(ct=c_type(out.dtype), k=len(names) - 1, expr=expr))
    for j, v in enumerate(body.outputs):
        src = names[v]
        if not src.startswith("v"):  # an output that is an inlined literal or input: copy it
            names[v] = src = f"v{len(names)}"
            lines.append(DEF_LINE.format(ct=c_type(v.dtype), k=len(names) - 1, expr=src))
        lines.append(STORE_LINE.format(j=j, k=src[1:]))
    coord_lines = [
        COORD_LINE.format(axis=a, stride=out_strides[a], extent=out_shape[a])
        for a in sorted(axes_needed)
    ]
    summary = ", ".join(n.op for n in body.nodes if n.op != "constant")
    summary += f" -> {', '.join(str(v.type) for v in body.outputs)}"
    text = KERNEL_TEMPLATE.format(
        summary=summary,
        name=NAME_PLACEHOLDER,
        params=", ".join(params),
        n=n,
        body="\n".join(coord_lines + index_lines + lines),
    )
    name = kernel_name(text)
    return Kernel(name, text.replace(NAME_PLACEHOLDER, name), n)
