"""A whole while/scan loop as one C++ function, for the native CPU backend.

``emit_native_loop(node)`` renders a ``while`` or ``scan`` node whose bodies hold only ops this
file can express (fused elementwise groups, fused row reductions, 2-D matmuls, reshapes and
constants) into one function that runs every iteration: the carries live in two scratch buffers
per carry whose pointers swap each iteration (iteration 0 reads the caller's inputs, which are
never written), a scan's row t of each xs/ys is a pointer offset, every other body value has
its own slot in the scratch buffer, and a value returned by the body is computed straight into
its destination (next carry buffer or ys row) where it is the only output with that value. The
fused groups are the kernels the backend compiles anyway (the CUDA source under the CPU prelude,
or its broadcast loop nest; the row kernels of ``cpu_reduce``), renamed ``static`` and called
over their whole range on the calling thread. A while's predicate is read from its slot; past
``max_steps`` the function stores -1 as its step count (the caller raises) before any output
is written. Parameters are all ``void*``: the node's inputs, its outputs, the body constants,
the scratch buffer and a one-element int64 status (the iterations run).

Anything else raises UnsupportedError naming the op; the backend then keeps the host-driven
loop and says why in ``explain()``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Value
from ..ops.row_space import Space
from .cpu_loops import emit_cpu_kernel
from .cpu_reduce import cpu_row_kernel
from .cuda import _body_lines, c_type, op_template

NAME_PREFIX = "gg_cpuloop_"
ALIGN = 64  # bytes; every scratch slot starts on a vector (and cache line) boundary
DTYPES = {np.dtype(t) for t in ("float32", "float64", "int32", "int64", "bool")}
MATMUL_DTYPES = {np.dtype(t) for t in ("float32", "float64", "int32", "int64")}
COMPUTE_OPS = ("fused", "fused_reduce", "matmul", "sum")
LOOP_OPS = ("scan", "while")
HELPER_NAME = "GG_HELPER_NAME"
HEADER = """\
#include <cstring>
#ifndef GG_NATIVE_INVOKE_DEFINED
#define GG_NATIVE_INVOKE_DEFINED
// one generated kernel over its whole range [0, n) on the calling thread
template <class... P>
static inline void gg_loop_invoke(void (*kernel)(P...), long long n, void* const* args) {
  __gg_cpu::range_lo = 0;
  __gg_cpu::range_hi = n;
  __gg_cpu::call(kernel, args, std::index_sequence_for<P...>{});
}
#endif
"""
# out[m, n] = sum_k A'[m, k] B'[k, n]; with B' not transposed the inner loop runs over n
# (contiguous in B and out: a vectorized axpy per k), else over k (a dot product per element,
# its lanes summed by an OpenMP simd reduction, as the row kernels do)
MATMUL_AXPY = """\
static void {name}(const void* pa, const void* pb, void* po) {{
  const {ct}* __restrict a = (const {ct}*)pa;
  const {ct}* __restrict b = (const {ct}*)pb;
  {ct}* __restrict o = ({ct}*)po;
  for (long long m = 0; m < {M}LL; ++m) {{
    {ct}* __restrict row = o + m * {N}LL;
    for (long long n = 0; n < {N}LL; ++n) row[n] = ({ct})0;
    for (long long k = 0; k < {K}LL; ++k) {{
      const {ct} s = a[{a_index}];
      const {ct}* __restrict bk = b + k * {N}LL;
      for (long long n = 0; n < {N}LL; ++n) row[n] += s * bk[n];
    }}
  }}
}}
"""
MATMUL_DOT = """\
static void {name}(const void* pa, const void* pb, void* po) {{
  const {ct}* __restrict a = (const {ct}*)pa;
  const {ct}* __restrict b = (const {ct}*)pb;
  {ct}* __restrict o = ({ct}*)po;
  for (long long m = 0; m < {M}LL; ++m) {{
    for (long long n = 0; n < {N}LL; ++n) {{
      {ct} acc = ({ct})0;
      const {ct}* __restrict bn = b + n * {K}LL;
#pragma omp simd reduction(+ : acc)
      for (long long k = 0; k < {K}LL; ++k) acc += a[{a_index}] * bn[k];
      o[m * {N}LL + n] = acc;
    }}
  }}
}}
"""


@dataclass
class NativeLoop:
    name: str
    source: str
    consts: list[np.ndarray]  # the body constants, passed after the outputs
    scratch_bytes: int
    nodes: int  # body nodes compiled in


@dataclass
class _Emitter:
    """Scratch slots, helper functions and constants shared by every body of one loop."""

    scratch: int = 0
    helpers: list[str] = field(default_factory=list)
    consts: list[np.ndarray] = field(default_factory=list)
    nodes: int = 0
    depth: int = 0  # loops entered (a nested loop's variables carry its depth)
    scratch_names: int = 0  # local variables made so far (take's index and row)

    def slot(self, v: Value) -> str:
        off = self.scratch
        self.scratch += -(-max(v.type.nbytes, 1) // ALIGN) * ALIGN
        return f"(S + {off}LL)"

    def helper(self, text: str, old: str | None) -> str:
        """Add a helper function (a kernel renamed from ``old``); returns its new name."""
        name = f"GG_LOOP_f{len(self.helpers)}"
        if old is not None:
            pattern = r'extern "C" (?:__global__ )?void ' + re.escape(old) + r"\("
            text, hits = re.subn(pattern, f"static void {name}(", text, count=1)
            assert hits == 1, f"kernel {old} has no entry point to rename"
        else:
            text = text.replace(HELPER_NAME, name)
        self.helpers.append(text)
        return name


def _root(graph: Graph, v: Value) -> Value:
    """The value whose bytes ``v`` is (through reshapes, which are aliases here)."""
    producer = {o: n for n in graph.nodes for o in n.outputs}
    while v in producer and producer[v].op == "reshape":
        v = producer[v].inputs[0]
    return v


def _flat(body: Graph, em: _Emitter) -> str | None:
    """A fused group whose inputs are each full-size or one element, as one plain loop: its
    outputs never share bytes with its inputs here (every value has its own slot), so the
    pointers are ``__restrict`` and the loop vectorizes without the CUDA kernel's alignment
    test and lanes. None for other groups (broadcasts: the loop nest or the CUDA kernel)."""
    n = body.outputs[0].type.size
    if any(v.type.size != n for v in body.outputs) or any(
        v.type.size not in (1, n) for v in body.inputs
    ):
        return None
    params, hoisted, sources = [], [], []
    for j, v in enumerate(body.inputs):
        ct = c_type(v.dtype)
        params.append(f"const void* p{j}")
        hoisted.append(f"  const {ct}* __restrict in{j} = (const {ct}*)p{j};")
        if v.type.size == 1 and n != 1:
            hoisted.append(f"  const {ct} s{j} = in{j}[0];")
            sources.append(f"s{j}")
        else:
            sources.append(f"in{j}[i]")
    for j, v in enumerate(body.outputs):
        ct = c_type(v.dtype)
        params.append(f"void* q{j}")
        hoisted.append(f"  {ct}* __restrict out{j} = ({ct}*)q{j};")
    helpers = "".join(sorted({op_template(m)[1] for m in body.nodes if m.op != "constant"}))
    lines = _body_lines(body, sources, lambda j: f"out{j}[i]")
    text = (
        f"{helpers}static void {HELPER_NAME}({', '.join(params)}) {{\n"
        + "".join(x + "\n" for x in hoisted)
        + f"#pragma GCC ivdep\n  for (long long i = 0; i < {n}LL; ++i) {{\n"
        + "".join(f"  {x}\n" for x in lines)
        + "  }\n}\n"
    )
    return em.helper(text, None)


def _kernel_of(node, em: _Emitter) -> tuple[str, int]:
    """(helper name, range) of a fused or fused_reduce node's generated kernel (called over
    its whole range through ``gg_loop_invoke``, which sets the range the kernel reads)."""
    body: Graph = node.attrs["body"]
    if node.op == "fused":
        nest = emit_cpu_kernel(body)
        if nest is not None:
            return em.helper(nest.source, nest.name), nest.n
        return em.helper(node.attrs["cuda_source"], node.attrs["kernel_name"]), node.outputs[
            0
        ].type.size
    space = Space(tuple(node.attrs["lead"]), int(node.attrs["cols"]))
    if space.cols == 0 and any(n.op == "max" for n in body.nodes):
        raise UnsupportedError("a max over rows of 0 columns (NumPy raises)")
    rk = cpu_row_kernel(body, space)
    return em.helper(rk.source, rk.name), (rk.n if space.rows else 0)


def _matmul(node, em: _Emitter) -> str:
    a, b = node.inputs
    pa, pb = node.attrs.get("perm_a"), node.attrs.get("perm_b")
    if len(a.shape) != 2 or len(b.shape) != 2 or a.dtype not in MATMUL_DTYPES:
        raise UnsupportedError(f"matmul {a.type} @ {b.type} (only 2-D float/int operands)")
    ta = pa is not None and tuple(pa) == (1, 0)
    tb = pb is not None and tuple(pb) == (1, 0)
    M, K = (a.shape[1], a.shape[0]) if ta else a.shape
    N = b.shape[0] if tb else b.shape[1]
    if M * N * K > MAX_MATMUL_MNK:
        raise UnsupportedError(
            f"matmul {a.type} @ {b.type} ({M * N * K} multiply-adds, over {MAX_MATMUL_MNK}: "
            "BLAS in the host-driven loop is faster)"
        )
    a_index = f"k * {M}LL + m" if ta else f"m * {K}LL + k"
    template = MATMUL_DOT if tb else MATMUL_AXPY
    text = template.format(name=HELPER_NAME, ct=c_type(a.dtype), M=M, N=N, K=K, a_index=a_index)
    return em.helper(text, None)


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
# Multiply-adds of a matmul written as plain loops. Above this BLAS (through the host-driven
# loop) is faster: a scan of tanh(h @ W + x), W 64x64, measured 0.55 us/step native against
# ~2.4 host-driven with h of 1 row, about even at 4 rows (16,384), and 4.9 against 3.8 at 16
# rows (the loops run at ~7 GFLOP/s; OpenBLAS's kernels reach several times that).
MAX_MATMUL_MNK = 1 << 14
MAX_SUM_POST = 4096  # elements of the per-row accumulator on the stack


def _sum(node, em: _Emitter) -> str:
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


TAKE_INDEX = {
    "raise": "if (i{k} < -{d}LL || i{k} >= {d}LL) {{ *(long long*)status = {bad}; return; }}\n"
    "if (i{k} < 0) i{k} += {d}LL;",
    "wrap": "i{k} %= {d}LL;\nif (i{k} < 0) i{k} += {d}LL;",
    "clip": "i{k} = i{k} < 0 ? 0 : (i{k} >= {d}LL ? {d}LL - 1 : i{k});",
}
# statuses of a loop stopped early: past its max_steps (the runner raises LoopLimitError), or
# by an error the host-driven loop raises itself (a take index out of range, an inner loop past
# its max_steps: the runner reruns the loop host-driven)
PAST_MAX_STEPS, RERUN_HOST = -1, -2


def _take(node, names: dict, lines: list[str], em: _Emitter) -> str:
    """A row of a contiguous array by a scalar index (the loop counter's ``xs[i]``): a pointer
    into it, no copy. An index out of range under mode="raise" stops the loop with status
    RERUN_HOST (the runner then reruns it host-driven, which raises NumPy's error)."""
    a, idx = node.inputs
    d = a.shape[0] if a.shape else 0
    if node.attrs["axis"] != 0 or idx.shape != () or idx.dtype.kind not in "iu" or d == 0:
        raise UnsupportedError(f"take of {a.type} by {idx.type} on axis {node.attrs['axis']}")
    k = em.scratch_names
    em.scratch_names += 1
    lines.append(f"long long i{k} = (long long)*(const {c_type(idx.dtype)}*){names[idx]};")
    rule = TAKE_INDEX[node.attrs.get("mode", "raise")]
    lines += rule.format(k=k, d=d, bad=RERUN_HOST).splitlines()
    lines.append(f"char* const r{k} = (char*){names[a]} + i{k} * {a.type.nbytes // d}LL;")
    return f"r{k}"


def _emit_graph(graph: Graph, ins: list[str], dests: list[str], em: _Emitter) -> list[str]:
    """Lines computing ``graph`` once: inputs at pointers ``ins``, outputs to ``dests``."""
    names: dict[Value, str] = dict(zip(graph.inputs, ins))
    producer = {o: n for n in graph.nodes for o in n.outputs}
    direct: dict[Value, str] = {}  # a computed value that lives in an output's destination
    for v, d in zip(graph.outputs, dests):
        r = _root(graph, v)
        if r in producer and producer[r].op in COMPUTE_OPS and r not in direct:
            direct[r] = d
    lines: list[str] = []
    for node in graph.nodes:
        inner = node.attrs["body"].values() if node.op in ("fused", "fused_reduce") else ()
        for v in (*node.inputs, *node.outputs, *inner):
            if v.dtype not in DTYPES:
                raise UnsupportedError(f"dtype {v.dtype} (at {node.op})")
        if node.op == "constant":
            names[node.output] = f"K{len(em.consts)}"
            em.consts.append(np.ascontiguousarray(node.attrs["value"], node.output.dtype))
            continue
        if node.op == "reshape":
            names[node.output] = names[node.inputs[0]]
            continue
        if node.op == "take":
            names[node.output] = _take(node, names, lines, em)
            continue
        if node.op in LOOP_OPS:  # a nested loop, inline; its outputs in slots of their own
            for o in node.outputs:
                names[o] = em.slot(o)
            inner = _loop_lines(
                node, [names[v] for v in node.inputs], [names[o] for o in node.outputs], em
            )
            lines += ["{", *("  " + x for x in inner), "}"]
            continue
        if node.op not in COMPUTE_OPS:
            where = node.attrs.get("_loc")
            raise UnsupportedError(f"op {node.op}" + (f" (at {where})" if where else ""))
        em.nodes += 1
        for o in node.outputs:
            names[o] = direct.get(o) or em.slot(o)
        ptrs = [names[v] for v in (*node.inputs, *node.outputs)]
        direct_call = {"matmul": _matmul, "sum": _sum}.get(node.op, lambda n, e: None)(node, em)
        if node.op == "fused":  # a plain loop, called directly (no range to set)
            direct_call = _flat(node.attrs["body"], em)
        if direct_call is not None:
            lines.append(f"{direct_call}({', '.join(ptrs)});")
            continue
        fn, n = _kernel_of(node, em)
        if n > 0:
            lines.append(
                f"{{ void* const a[] = {{{', '.join(ptrs)}}}; gg_loop_invoke(&{fn}, {n}LL, a); }}"
            )
    for v, d in zip(graph.outputs, dests):
        if names[v] != d:  # an input, a constant, or a value another output already holds
            lines.append(f"std::memcpy({d}, {names[v]}, {v.type.nbytes});")
    return lines


def loop_graphs(node) -> list[Graph]:
    a = node.attrs
    return [a["cond_graph"], a["body_graph"]] if node.op == "while" else [a["body"]]


def _check_sizes(node, limit: int) -> None:
    for g in loop_graphs(node):
        for n in g.nodes:
            if n.op in LOOP_OPS:
                _check_sizes(n, limit)
            for v in n.outputs:
                if v.type.size >= limit:
                    raise UnsupportedError(
                        f"{n.op} of {v.type.size} elements (from {limit} a kernel runs on every "
                        "thread; a native loop runs on one)"
                    )


def _loop_lines(node, ins: list[str], outs: list[str], em: _Emitter) -> list[str]:
    """The loop of a ``while``/``scan`` node over pointer expressions ``ins``/``outs``; a
    nested loop's lines go inline into its parent's body (names carry the depth)."""
    a, L = node.attrs, em.depth
    em.depth += 1
    nc = a["n_carry"]
    carries = node.inputs[:nc]
    bufs = [(em.slot(v), em.slot(v)) for v in carries]
    c, n = [f"c{L}_{j}" for j in range(nc)], [f"n{L}_{j}" for j in range(nc)]
    lines = [f"char* {c[j]} = (char*)({ins[j]});" for j in range(nc)]
    step = [f"char* const {n[j]} = {c[j]} == {x} ? {y} : {x};" for j, (x, y) in enumerate(bufs)]
    it, t = f"it{L}", f"t{L}"
    if node.op == "scan":
        nx, length, body = a["n_xs"], a["length"], a["body"]
        rows = [
            f"((char*)({ins[nc + j]}) + {t} * {v.type.nbytes}LL)"
            for j, v in enumerate(body.inputs[nc : nc + nx])
        ]
        ys = [
            f"((char*)({outs[nc + j]}) + {t} * {v.type.nbytes}LL)"
            for j, v in enumerate(body.outputs[nc:])
        ]
        inner = _emit_graph(body, c + rows + ins[nc + nx :], n + ys, em)
        order = f"{length - 1}LL - {it}" if a["reverse"] else it
        lines += [f"long long {it} = 0;", f"for (; {it} < {length}LL; ++{it}) {{"]
        lines += [f"  const long long {t} = {order};"]
        lines += ["  " + x for x in step + inner]
    else:
        pred = em.slot(a["cond_graph"].outputs[0])
        cond = _emit_graph(a["cond_graph"], c + ins[nc:], [pred], em)
        inner = _emit_graph(a["body_graph"], c + ins[nc:], n, em)
        lines += [f"long long {it} = 0;", f"for (;; ++{it}) {{"]
        lines += ["  " + x for x in cond] + [f"  if (!*(const bool*){pred}) break;"]
        if a["max_steps"] is not None:
            # the outermost loop's runner raises its LoopLimitError; an inner loop's is raised
            # by the host-driven rerun, which names that loop
            bad = PAST_MAX_STEPS if L == 0 else RERUN_HOST
            lines += [f"  if ({it} >= {int(a['max_steps'])}LL) {{"]
            lines += [f"    *(long long*)status = {bad};", "    return;", "  }"]
        lines += ["  " + x for x in step + inner]
    lines += [f"  {c[j]} = {n[j]};" for j in range(nc)] + ["}"]
    lines += [f"std::memcpy({outs[j]}, {c[j]}, {v.type.nbytes});" for j, v in enumerate(carries)]
    if L == 0:
        lines.append(f"*(long long*)status = {it};")
    em.depth -= 1
    return lines


def emit_native_loop(node, parallel_from: int) -> NativeLoop:
    """The native loop of a ``while`` or ``scan`` node; UnsupportedError naming what does not
    fit. ``parallel_from``: the element count from which groups run threaded (such loops stay
    host-driven, so their kernels keep their threads)."""
    _check_sizes(node, parallel_from)
    em = _Emitter()
    nin, nout = len(node.inputs), len(node.outputs)
    lines = _loop_lines(node, [f"in{j}" for j in range(nin)], [f"out{j}" for j in range(nout)], em)
    params = [f"void* in{j}" for j in range(nin)] + [f"void* out{j}" for j in range(nout)]
    params += [f"void* K{j}" for j in range(len(em.consts))] + ["void* scratch", "void* status"]
    text = HEADER + "\n".join(em.helpers)
    text += f'extern "C" void GG_LOOP({", ".join(params)}) {{\n  char* const S = (char*)scratch;\n'
    text += "".join(f"  {x}\n" for x in lines) + "}\n"
    # constants are arguments: their types, not their values, make the function another one
    kinds = repr([(c.dtype.str, c.shape) for c in em.consts])
    digest = hashlib.sha1((text + kinds).encode())
    name = NAME_PREFIX + digest.hexdigest()[:12]
    return NativeLoop(name, text.replace("GG_LOOP", name), em.consts, em.scratch, em.nodes)
