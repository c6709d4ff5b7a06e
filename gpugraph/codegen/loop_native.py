"""A whole while/scan loop as one C++ function, for the native CPU backend.

``emit_native_loop(node)`` renders a ``while`` or ``scan`` node whose bodies hold only ops
``loop_native_ops`` / ``_matmul`` / ``_reduce`` can express (fused groups, row and grid
reductions, 2-D matmuls, float sums, gathers, block slices), reshapes (aliases), constants
(arguments), and nested loops and conds of the same kind (inline) into one function that runs
every iteration:

* each carry has two scratch buffers whose pointers swap every iteration; iteration 0 reads
  the caller's input, which is never written, and the final carry is copied out at the end;
* a scan's row t of each xs/ys is a pointer offset;
* every other body value has its own slot in the scratch buffer (no reuse: bodies are small),
  and a computed value the body returns goes straight into its destination (the next carry
  buffer, or the ys row) where no other output holds it; the rest are copied there;
* a while's predicate is read from its slot.

Parameters are all ``void*``: the node's inputs, its outputs, the body constants, the scratch
buffer and a one-element int64 status: the iterations run, or ``PAST_MAX_STEPS`` (the
outermost while ran past ``max_steps``; no output written) or ``RERUN_HOST`` (an error the
host-driven loop raises itself: a take index out of range, an inner loop past its max_steps).

Anything else raises UnsupportedError naming the op; the backend then keeps the host-driven
loop and says why in ``explain()``.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Value
from .loop_native_index import broadcast, slice_view, take_grad, take_row
from .loop_native_matmul import matmul
from .loop_native_ops import DTYPES, PAST_MAX_STEPS, RERUN_HOST, Emitter, flat, kernel_of
from .loop_native_reduce import grid_reduce, sum_rows

__all__ = ["PAST_MAX_STEPS", "RERUN_HOST", "NativeLoop", "emit_native_loop", "loop_graphs"]

NAME_PREFIX = "gg_cpuloop_"
COMPUTE_OPS = ("fused", "fused_reduce", "fused_grid_reduce", "matmul", "sum")
GROUP_OPS = ("fused", "fused_reduce", "fused_grid_reduce")  # ops holding a body graph
LOOP_OPS = ("scan", "while")
# ops whose helper is a plain function of their pointers (``fused``: where it is one flat loop)
DIRECT = {
    "matmul": matmul,
    "sum": sum_rows,
    "fused_grid_reduce": grid_reduce,
    "fused": lambda n, em: flat(n.attrs["body"], em),
}
INDEX_OPS = {"take": take_row, "take_grad": take_grad, "broadcast_to": broadcast}
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


@dataclass
class NativeLoop:
    name: str
    source: str
    consts: list[np.ndarray]  # the body constants, passed after the outputs
    scratch_bytes: int
    nodes: int  # body nodes compiled in
    gemm_slot: int | None = None  # consts[gemm_slot]: the [sgemm, dgemm] addresses to fill


def _root(graph: Graph, v: Value) -> Value:
    """The value whose bytes ``v`` is (through reshapes, which are aliases here)."""
    producer = {o: n for n in graph.nodes for o in n.outputs}
    while v in producer and producer[v].op == "reshape":
        v = producer[v].inputs[0]
    return v


def _emit_graph(graph: Graph, ins: list[str], dests: list[str], em: Emitter) -> list[str]:
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
        inner = node.attrs["body"].values() if node.op in GROUP_OPS else ()
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
        if node.op == "slice":
            names[node.output] = slice_view(node, names)
            continue
        if node.op in INDEX_OPS:  # a pointer, or lines of this function (which may stop it)
            names[node.output] = INDEX_OPS[node.op](node, names, lines, em)
            continue
        if node.op == "cond":  # the chosen branch, inline; outputs in slots of their own
            for o in node.outputs:
                names[o] = em.slot(o)
            lines += _cond_lines(
                node, [names[v] for v in node.inputs], [names[o] for o in node.outputs], em
            )
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
        helper = DIRECT[node.op](node, em) if node.op in DIRECT else None
        if helper is not None:  # a plain function of the pointers (no range to set)
            lines.append(f"{helper}({', '.join(ptrs + em.extra.get(helper, []))});")
            continue
        fn, n = kernel_of(node, em)
        if n > 0:
            lines.append(
                f"{{ void* const a[] = {{{', '.join(ptrs)}}}; gg_loop_invoke(&{fn}, {n}LL, a); }}"
            )
    for v, d in zip(graph.outputs, dests):
        if names[v] != d:  # an input, a constant, or a value another output already holds
            lines.append(f"std::memcpy({d}, {names[v]}, {v.type.nbytes});")
    return lines


def loop_graphs(node) -> list[Graph]:
    """The sub-graphs of a while, scan or cond node."""
    a = node.attrs
    if node.op == "cond":
        return list(a["branches"])
    return [a["cond_graph"], a["body_graph"]] if node.op == "while" else [a["body"]]


def _cond_lines(node, ins: list[str], outs: list[str], em: Emitter) -> list[str]:
    """cond/switch: the index (clamped into range, as the host-driven runner does) picks the
    branch whose lines run; each branch writes the node's outputs."""
    branches = node.attrs["branches"]
    k, last = em.scratch_names, len(branches) - 1
    em.scratch_names += 1
    lines = [
        f"long long b{k} = (long long)*(const int*){ins[0]};",
        f"b{k} = b{k} < 0 ? 0 : (b{k} > {last}LL ? {last}LL : b{k});",
    ]
    for j, g in enumerate(branches):
        if last == 0:
            lines.append("{")
        elif j < last:
            lines.append(f"{'if' if j == 0 else '} else if'} (b{k} == {j}LL) {{")
        else:
            lines.append("} else {")
        lines += ["  " + x for x in _emit_graph(g, ins[1:], outs, em)]
    return [*lines, "}"]


def _check_sizes(node, limit: int) -> None:
    for g in loop_graphs(node):
        for n in g.nodes:
            if n.op in (*LOOP_OPS, "cond"):
                _check_sizes(n, limit)
            for v in n.outputs:
                if v.type.size >= limit:
                    raise UnsupportedError(
                        f"{n.op} of {v.type.size} elements (from {limit} a kernel runs on every "
                        "thread; a native loop runs on one)"
                    )


def _loop_lines(node, ins: list[str], outs: list[str], em: Emitter) -> list[str]:
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


def emit_native_loop(node, parallel_from: int, blas_int: str | None = None) -> NativeLoop:
    """The native loop of a ``while`` or ``scan`` node; UnsupportedError naming what does not
    fit. ``parallel_from``: the element count from which groups run threaded (such loops stay
    host-driven, so their kernels keep their threads). ``blas_int``: the integer type of a
    cblas library the loop may call for matmuls too large for plain loops (None: none)."""
    _check_sizes(node, parallel_from)
    em = Emitter(blas_int=blas_int)
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
    source = text.replace("GG_LOOP", name)
    return NativeLoop(name, source, em.consts, em.scratch, em.nodes, em.gemm_slot)
