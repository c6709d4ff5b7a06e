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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..device import cuda_include_options  # noqa: F401 - re-exported for the kernel tools
from ..errors import UnsupportedError
from ..ir import Graph, Node, Value
from ..ops.registry import get_op

# Storage C type of each dtype. Narrow integers compute in C's int and wrap when stored, as
# NumPy's do; float16 is stored as gg_half (CUDA's __half, see HALF_HEADER) and computed in
# float (COMPUTE_TYPES), each op's result rounded to float16 as NumPy's float16 loops do.
C_TYPES: dict[str, str] = {
    "float16": "gg_half",
    "float32": "float",
    "float64": "double",
    "int8": "signed char",
    "int16": "short",
    "int32": "int",
    "int64": "long long",
    "uint8": "unsigned char",
    "uint16": "unsigned short",
    "bool": "bool",
    "bfloat16": "gg_bfloat16",
}
# Where a value computes in another type than it is stored in: the type of its variables,
# literals and of ``{T}`` in op templates.
COMPUTE_TYPES: dict[str, str] = {"float16": "float", "bfloat16": "float"}
# float16 under NVRTC is cuda_fp16.h's __half (the include path: cuda_include_options()); host
# compilers (the kernel emulator, backend="cpu") use _Float16, whose conversions round to nearest
# even as CUDA's do. gg_round_half rounds a result to float16 and back: a double goes to float16
# directly (no double rounding), as NumPy's float64 -> float16 cast does.
HALF_HEADER = """\
#ifndef GG_HALF_DEFINED
#define GG_HALF_DEFINED
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#include <cuda_fp16.h>
typedef __half gg_half;
__device__ __forceinline__ float gg_h2f(gg_half h) { return __half2float(h); }
__device__ __forceinline__ gg_half gg_f2h(float x) { return __float2half_rn(x); }
__device__ __forceinline__ float gg_round_half(float x) { return __half2float(__float2half_rn(x)); }
__device__ __forceinline__ float gg_round_half(double x) { return __half2float(__double2half(x)); }
#else
typedef _Float16 gg_half;
inline float gg_h2f(gg_half h) { return (float)h; }
inline gg_half gg_f2h(float x) { return (gg_half)x; }
inline float gg_round_half(float x) { return (float)(gg_half)x; }
inline float gg_round_half(double x) { return (float)(gg_half)x; }
#endif
template <typename T> __device__ __forceinline__ float gg_round_half(T x) {
  return gg_round_half((float)x);  // integers and bool: exact in float up to 2**24
}
#endif
"""
# bfloat16 only ever meets a kernel through casts from and to float32 (ops/core.py runs every
# other op on float32): CUDA's __nv_bfloat16 under NVRTC; on host compilers the bits, rounded
# to nearest even as ml_dtypes does (a NaN stays a quiet NaN of the same sign).
BFLOAT16_HEADER = """\
#ifndef GG_BFLOAT16_DEFINED
#define GG_BFLOAT16_DEFINED
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#include <cuda_bf16.h>
typedef __nv_bfloat16 gg_bfloat16;
__device__ __forceinline__ float gg_bf2f(gg_bfloat16 h) { return __bfloat162float(h); }
__device__ __forceinline__ gg_bfloat16 gg_f2bf(float x) { return __float2bfloat16_rn(x); }
#else
struct gg_bfloat16 {
  unsigned short bits;
};
inline float gg_bf2f(gg_bfloat16 h) {
  unsigned int u = (unsigned int)h.bits << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
inline gg_bfloat16 gg_f2bf(float x) {
  unsigned int u;
  __builtin_memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return gg_bfloat16{(unsigned short)((u >> 16) | 0x40u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return gg_bfloat16{(unsigned short)(u >> 16)};
}
#endif
__device__ __forceinline__ float gg_round_bf16(float x) { return gg_bf2f(gg_f2bf(x)); }
#endif
"""
# Per storage dtype: how a loaded element becomes its compute value, how a computed result is
# rounded, and how it is stored; "{}" is the expression. Absent: as it is.
LOAD_CONVERT: dict[str, str] = {"float16": "gg_h2f({})", "bfloat16": "gg_bf2f({})"}
RESULT_ROUND: dict[str, str] = {"float16": "gg_round_half({})", "bfloat16": "gg_round_bf16({})"}
STORE_CONVERT: dict[str, str] = {"float16": "gg_f2h({})", "bfloat16": "gg_f2bf({})"}
# The header each such dtype needs in a kernel.
DTYPE_HEADERS: dict[str, str] = {"float16": HALF_HEADER, "bfloat16": BFLOAT16_HEADER}
# Templates that differ when the output is float16: a cast must not go through float first.
HALF_OUTPUT_TEMPLATES: dict[str, str] = {"astype": "{0}"}
# Where an op's own template is not valid or not exact C for a dtype kind: (op, kind of its
# first operand) -> the template to use, the helper source the kernel must then define, and
# why a given node may still not be fused (None: it may).
IPOW_HELPER = """\
#ifndef GG_IPOW_DEFINED
#define GG_IPOW_DEFINED
// Integer power by squaring, in unsigned arithmetic: it wraps on overflow as NumPy's does,
// where signed overflow would be undefined behaviour.
template <typename T> __device__ __forceinline__ T gg_ipow(T base, T exponent) {
  unsigned long long b = (unsigned long long)base, r = 1ULL;
  for (unsigned long long e = (unsigned long long)exponent; e != 0ULL; e >>= 1) {
    if (e & 1ULL) r *= b;
    b *= b;
  }
  return (T)r;
}
#endif
"""


@dataclass(frozen=True)
class KindRule:
    template: str
    helper: str
    refusal: Callable[[Node], str | None]
    # a template for this node in particular (e.g. from a literal operand), or None
    specialize: Callable[[Node], str | None] = lambda node: None


def _literal_exponent(node: Node) -> float | None:
    producer = node.inputs[1].node
    if producer is None or not is_inline_constant(producer):
        return None
    return float(np.asarray(producer.attrs["value"]).reshape(()))


def _integer_power_refusal(node: Node) -> str | None:
    """NumPy raises for a negative integer exponent, which a kernel cannot do: only a literal
    exponent known to be >= 0 is fused."""
    exponent = _literal_exponent(node)
    if exponent is None:
        return "integer power with a run-time exponent (NumPy raises for negative ones)"
    if exponent < 0:
        return "integer power with a negative exponent (NumPy raises for it)"
    return None


def _float_power_template(node: Node) -> str | None:
    """NumPy computes ``x ** 0.5`` with a scalar exponent as ``sqrt(x)`` (its scalar-power
    fast path), which differs from C's ``pow`` at -0 (-0, not +0) and -inf (NaN, not +inf):
    a literal exponent of 0.5 renders as sqrt so the kernel gives NumPy's answer."""
    return "sqrt({0})" if _literal_exponent(node) == 0.5 else None


KIND_RULES: dict[tuple[str, str], KindRule] = {
    ("power", "i"): KindRule("gg_ipow({0}, {1})", IPOW_HELPER, _integer_power_refusal),
    ("power", "u"): KindRule("gg_ipow({0}, {1})", IPOW_HELPER, _integer_power_refusal),
    ("power", "f"): KindRule("pow({0}, {1})", "", lambda node: None, _float_power_template),
}
# Called with (kernel, body) for every kernel emit_kernel makes (planted-bug kernels aside):
# the test suite compiles them all under NVRTC and runs them all on the kernel emulator.
KERNEL_OBSERVERS: list[Callable[[Kernel, Graph], None]] = []
NAME_PREFIX = "gg_fused_"
NAME_PLACEHOLDER = "GG_KERNEL_NAME"
LARGEST_INLINE_CONSTANT = 1  # elements; larger constants are passed as arrays

VECTOR_BYTES = 16  # one access per thread moves this much (the Hopper guide's lead)
MAX_LANES = 4  # elements per thread per access; more only grows the unrolled body

KERNEL_TEMPLATE = """\
// gpugraph fused kernel: {summary}
{header}extern "C" __global__ void {name}({params}) {{
  const long long n = {n}LL;
  const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long stride = (long long)blockDim.x * gridDim.x;
  // This thread's part of [0, n): all of it, grid-strided, on a GPU; one contiguous range
  // per host thread under the CPU backend's prelude (codegen/cpu_prelude.h).
  const long long lo = GG_RANGE_LO(n), hi = GG_RANGE_HI(n);
  long long start = lo;
{vector_block}  for (long long i = start + first; i < hi; i += stride) {{
{body}
  }}
}}
"""
# The vector path: when every full-size operand is aligned for it, each thread moves {lanes}
# consecutive elements of each full-size operand with one access (a 16-byte load for float32
# x4 or float64 x2) and computes them in an unrolled loop; broadcast operands keep their index
# math per element. Misaligned pointers (a view such as x[1:]) and the last n % lanes elements
# take the scalar loop after it.
VECTOR_HEADER = """\
#ifndef GG_VECTOR_DEFINED
#define GG_VECTOR_DEFINED
template <typename T, int V> struct alignas(sizeof(T) * V) gg_vec {
  T v[V];
};
#endif
#ifndef GG_VECTOR_PTR  // the kernel emulator defines its own, which checks the alignment
#define GG_VECTOR_PTR(p, ...) reinterpret_cast<__VA_ARGS__*>(p)
#endif
"""
# The range of the iteration space one thread covers (see KERNEL_TEMPLATE); the CPU prelude
# defines its own (a host thread's contiguous chunk, whose start is a multiple of the lanes).
RANGE_HEADER = """\
#ifndef GG_RANGE_LO
#define GG_RANGE_LO(n) 0LL
#define GG_RANGE_HI(n) (n)
#endif
"""
VECTOR_BLOCK = """\
  if ({aligned}) {{
    for (long long j = lo / {lanes}LL + first; j < hi / {lanes}LL; j += stride) {{
{loads}
#pragma unroll
      for (int k = 0; k < {lanes}; ++k) {{
        const long long i = j * {lanes}LL + k;
{body}
      }}
{stores}
    }}
    start = hi / {lanes}LL * {lanes}LL;
  }}
"""
VECTOR_TYPE = "gg_vec<{ct}, {lanes}>"
ALIGNED_TEST = "(unsigned long long){ptr} % {bytes}ULL == 0"
VECTOR_LOAD = "      const {vt} w{j} = GG_VECTOR_PTR(in{j}, const {vt})[j];"
VECTOR_DECL = "      {vt} o{j};"
VECTOR_STORE = "      GG_VECTOR_PTR(out{j}, {vt})[j] = o{j};"
# No __restrict__: the memory planner may give an output the bytes of a same-shape input that
# dies at this kernel (ops/fused.py: _inplace_ok); each thread loads element i of every input
# before it stores element i of any output, which is exact only if the compiler may not assume
# the pointers never alias.
IN_PARAM = "const {ct}* in{k}"
OUT_PARAM = "{ct}* out{k}"
COORD_LINE = "    const long long c{axis} = (i / {stride}LL) % {extent}LL;"
INDEX_LINE = "    const long long i{k} = {expr};"
LOAD_LINE = "    const {ct} v{k} = {src};"
DEF_LINE = "    const {ct} v{k} = {expr};"
STORE_LINE = "    {dst} = {src};"


# Keyed by dtype: ``dtype.name`` is computed in Python on every access (5 us), and the codegen
# asks for every value of every kernel.
_C_TYPE_OF = {np.dtype(k): v for k, v in C_TYPES.items()}
_COMPUTE_TYPE_OF = {**_C_TYPE_OF, **{np.dtype(k): v for k, v in COMPUTE_TYPES.items()}}
_LOAD_OF = {np.dtype(k): v for k, v in LOAD_CONVERT.items()}
_ROUND_OF = {np.dtype(k): v for k, v in RESULT_ROUND.items()}
_STORE_OF = {np.dtype(k): v for k, v in STORE_CONVERT.items()}
_HEADER_OF = {np.dtype(k): v for k, v in DTYPE_HEADERS.items() if k in C_TYPES}
_HALF = np.dtype("float16")
_FLOAT32 = np.dtype("float32")


def c_type(dtype: np.dtype) -> str:
    """The C type of ``dtype``; UnsupportedError naming it if the codegen cannot express it."""
    ct = _C_TYPE_OF.get(dtype if isinstance(dtype, np.dtype) else np.dtype(dtype))
    if ct is None:
        raise UnsupportedError(f"CUDA codegen: dtype {np.dtype(dtype)} has no C type here")
    return ct


def compute_type(dtype: np.dtype) -> str:
    """The C type a value of ``dtype`` is computed in (float for float16, else its own)."""
    c_type(dtype)  # the same error for a dtype the codegen cannot express
    return _COMPUTE_TYPE_OF[np.dtype(dtype)]


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
        if v.dtype not in _C_TYPE_OF:
            return f"{node.op}: dtype {v.dtype} has no C type in the codegen"
        if v.dtype.name == "bfloat16" and (
            node.op != "astype" or _FLOAT32 not in node_dtypes(node)
        ):
            return (
                f"{node.op}: bfloat16 is only cast from and to float32 in a kernel (other ops "
                "run on float32; other casts round as ml_dtypes does, on the host)"
            )
    rule = _kind_rule(node)
    return rule.refusal(node) if rule is not None else None


def node_dtypes(node: Node) -> set[np.dtype]:
    return {v.dtype for v in (*node.inputs, *node.outputs)}


def _kind_rule(node: Node) -> KindRule | None:
    kind = node.inputs[0].dtype.kind if node.inputs else node.outputs[0].dtype.kind
    return KIND_RULES.get((node.op, kind))


def op_template(node: Node) -> tuple[str, str]:
    """(CUDA expression template, helper source or "") of ``node`` for its operand dtype."""
    rule = _kind_rule(node)
    if rule is not None:
        return rule.specialize(node) or rule.template, rule.helper
    opdef = get_op(node.op)  # an op whose template calls a device function ships its source
    return opdef.cuda, opdef.extra.get("cuda_helper", "")


def inline_literal(value: np.ndarray) -> str | None:
    """A C literal (with its type) for a small constant, or None if it must be an array."""
    arr = np.asarray(value)
    if arr.size != 1 or arr.size > LARGEST_INLINE_CONSTANT:
        return None
    x = arr.reshape(()).item()
    ct = compute_type(arr.dtype)
    if arr.dtype.kind == "b":
        return "true" if x else "false"
    if arr.dtype.kind in "iu":
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
    lanes: int = 1  # elements per thread per vector access (1: no vector path)

    def attrs(self) -> dict:
        """What a fused node (and the launchers) keep of the kernel."""
        return {"cuda_source": self.source, "kernel_name": self.name, "lanes": self.lanes}


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


def vector_lanes(full: list[Value], n: int) -> int:
    """Elements per vector access for the full-size operands ``full`` (1: no vector path)."""
    widest = max(v.dtype.itemsize for v in full)
    lanes = min(MAX_LANES, VECTOR_BYTES // widest)
    return lanes if n >= lanes else 1


def emit_kernel(body: Graph, *, vectorize: bool = True, stride_bug: bool = False) -> Kernel:
    """One kernel computing every output of ``body`` over their common (broadcast) shape;
    ``vectorize`` adds the vector path (see VECTOR_BLOCK) in front of the scalar loop."""
    out_shape = tuple(np.broadcast_shapes(*(v.shape for v in body.outputs)))
    assert all(v.shape == out_shape for v in body.outputs), "group outputs must share a shape"
    n = int(np.prod(out_shape, dtype=np.int64))
    out_strides = c_strides(out_shape)
    index: list[str] = []  # per input: "i" (full size), "0" (one element) or its index variable
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
        index.append(expr)
    coord_lines = [
        COORD_LINE.format(axis=a, stride=out_strides[a], extent=out_shape[a])
        for a in sorted(axes_needed)
    ]
    prologue = coord_lines + index_lines
    scalar = _body_lines(body, [f"in{j}[{e}]" for j, e in enumerate(index)], lambda j: f"out{j}[i]")
    full_inputs = [j for j, e in enumerate(index) if e == "i"]
    full = [body.inputs[j] for j in full_inputs] + list(body.outputs)
    lanes = vector_lanes(full, n) if vectorize else 1
    helpers = {op_template(n)[1] for n in body.nodes if n.op != "constant"}
    helpers |= {_HEADER_OF[v.dtype] for v in body.values() if v.dtype in _HEADER_OF}
    header, vector_block = "".join(sorted(helpers)) + RANGE_HEADER, ""
    if lanes > 1:
        header += VECTOR_HEADER
        vector_block = _vector_block(body, index, full_inputs, prologue, lanes)
    summary = ", ".join(n.op for n in body.nodes if n.op != "constant")
    summary += f" -> {', '.join(str(v.type) for v in body.outputs)}"
    text = KERNEL_TEMPLATE.format(
        summary=summary,
        header=header,
        name=NAME_PLACEHOLDER,
        params=", ".join(params),
        n=n,
        vector_block=vector_block,
        body="\n".join(prologue + scalar),
    )
    name = kernel_name(text)
    kernel = Kernel(name, text.replace(NAME_PLACEHOLDER, name), n, lanes)
    if not stride_bug:
        for observe in KERNEL_OBSERVERS:
            observe(kernel, body)
    return kernel


def _vector_block(
    body: Graph, index: list[str], full_inputs: list[int], prologue: list[str], lanes: int
) -> str:
    vt = {v: VECTOR_TYPE.format(ct=c_type(v.dtype), lanes=lanes) for v in body.values()}
    nbytes = {v: v.dtype.itemsize * lanes for v in body.values()}
    ins, outs = body.inputs, body.outputs
    aligned = [ALIGNED_TEST.format(ptr=f"in{j}", bytes=nbytes[ins[j]]) for j in full_inputs]
    aligned += [ALIGNED_TEST.format(ptr=f"out{j}", bytes=nbytes[v]) for j, v in enumerate(outs)]
    loads = [VECTOR_LOAD.format(vt=vt[ins[j]], j=j) for j in full_inputs]
    loads += [VECTOR_DECL.format(vt=vt[v], j=j) for j, v in enumerate(outs)]
    stores = [VECTOR_STORE.format(vt=vt[v], j=j) for j, v in enumerate(outs)]
    sources = [f"w{j}.v[k]" if e == "i" else f"in{j}[{e}]" for j, e in enumerate(index)]
    lane_body = _body_lines(body, sources, lambda j: f"o{j}.v[k]")
    return VECTOR_BLOCK.format(
        aligned=" && ".join(f"({a})" for a in aligned),
        lanes=lanes,
        loads="\n".join(loads),
        body="\n".join("    " + line for line in prologue + lane_body),
        stores="\n".join(stores),
    )


def _body_lines(body: Graph, sources: list[str], target) -> list[str]:
    """Loads (input j from ``sources[j]``), one line per op, and stores (output j to
    ``target(j)``): the computation of one element, each value in its compute type."""
    names: dict[Value, str] = {}
    lines: list[str] = []
    for v, src in zip(body.inputs, sources):
        names[v] = f"v{len(names)}"
        src = _LOAD_OF.get(v.dtype, "{}").format(src)
        lines.append(LOAD_LINE.format(ct=compute_type(v.dtype), k=len(names) - 1, src=src))
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
        template = op_template(node)[0]
        if out.dtype == _HALF:
            template = HALF_OUTPUT_TEMPLATES.get(node.op, template)
        ct = compute_type(out.dtype)
        expr = template.format(*(names[v] for v in node.inputs), T=ct)
        names[out] = f"v{len(names)}"
        expr = _ROUND_OF.get(out.dtype, "{}").format(expr)
        lines.append(DEF_LINE.format(ct=ct, k=len(names) - 1, expr=expr))
    for j, v in enumerate(body.outputs):
        src = names[v]
        if not src.startswith("v"):  # an output that is an inlined literal or input: copy it
            names[v] = src = f"v{len(names)}"
            lines.append(DEF_LINE.format(ct=compute_type(v.dtype), k=len(names) - 1, expr=src))
        lines.append(STORE_LINE.format(dst=target(j), src=_STORE_OF.get(v.dtype, "{}").format(src)))
    return lines
