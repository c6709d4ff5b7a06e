"""The walk over a fused_reduce body that both row kernels share: the CUDA one
(reduce_graph.row_kernel: a block per row) and the native CPU one (cpu_reduce.cpu_row_kernel:
a thread's loops per row). They differ only in how a reduction is emitted (a block reduction
with shuffles, or an OpenMP simd loop) and in how the CUDA register variant holds its inputs;
those are the ``Target`` hooks.

Values are classified by ``row_space.body_kinds`` (element, row, column, scalar). An element
(or column) value is one ``const`` line inside the column loop that needs it (``loop_lines``
picks them in body order); a per-row value is one line at row level, in body order, so every
reduction sees the values before it. Reshapes and broadcasts rename a value; scalar constants
are inlined. float16 values load converted to float and round once per op (the CPU target
refuses them before walking).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UnsupportedError
from ..ir import Graph, Node, Value
from .cuda import (
    HALF_OUTPUT_TEMPLATES,
    LOAD_CONVERT,
    RESULT_ROUND,
    compute_type,
    inline_literal,
    op_template,
    unsupported_reason,
)

ELEM, COL = "element", "column"
LOAD = {
    ELEM: "in{j}[row * cols + c]",
    COL: "in{j}[c]",
    "row": "in{j}[row]",
    "scalar": "in{j}[0]",
}
REDUCTION_OPS = ("sum", "max", "min", "prod")


@dataclass
class Walk:
    """The walk's result: each value's C name, the row-level lines, the element lines (value ->
    its line inside a column loop; "" for a renamed value) and the helper sources needed."""

    body: Graph
    names: dict[Value, str] = field(default_factory=dict)
    row_lines: list[str] = field(default_factory=list)
    elem_lines: dict[Value, str] = field(default_factory=dict)
    helpers: set[str] = field(default_factory=set)

    def loop_lines(self, targets: list[Value]) -> list[str]:
        """The element lines the ``targets`` need inside one column loop, in body order."""
        producer = {n.output: n for n in self.body.nodes}
        need: set[Value] = set()
        stack = [v for v in targets if v in self.elem_lines]
        while stack:
            v = stack.pop()
            if v in need:
                continue
            need.add(v)
            node = producer.get(v)
            if node is not None:
                stack += [w for w in node.inputs if w in self.elem_lines and w not in need]
        order = list(self.body.inputs) + [n.output for n in self.body.nodes]
        return [self.elem_lines[v] for v in order if v in need and self.elem_lines[v]]


# (walk, k, node, C name of its operand, the element lines its column loop needs, C type of
# the result) -> the row-level lines computing r{k}
ReduceHook = Callable[[Walk, int, Node, str, list[str], str], list[str]]
# (j, C type, load expression) -> row-level lines holding input j's row (the CUDA register
# variant), or None: the input is loaded where used
HoldHook = Callable[[int, str, str], list[str] | None]


@dataclass(frozen=True)
class Target:
    what: str  # how errors name the kernel ("row kernel", "cpu row kernel")
    reduce: ReduceHook
    hold: HoldHook | None = None


def walk_body(body: Graph, kinds: dict[Value, str], target: Target) -> Walk:
    """Name every value of ``body`` and write its lines (module docstring); UnsupportedError
    names what the target's kernel cannot express."""
    w = Walk(body)
    for j, v in enumerate(body.inputs):
        load = LOAD_CONVERT.get(v.dtype.name, "{}").format(LOAD[kinds[v]].format(j=j))
        ct = compute_type(v.dtype)
        w.names[v] = f"a{j}"
        held = target.hold(j, ct, load) if target.hold and kinds[v] == ELEM else None
        if held is not None:  # loaded once per row, read from the held copy
            w.row_lines += held
            w.elem_lines[v] = f"const {ct} a{j} = a{j}_v[k];"
        elif kinds[v] in (ELEM, COL):
            w.elem_lines[v] = f"const {ct} a{j} = {load};"
        else:
            w.row_lines.append(f"const {ct} a{j} = {load};")
    for k, node in enumerate(body.nodes):
        out = node.output
        if node.op == "constant":
            literal = inline_literal(node.attrs["value"])
            if literal is None:
                raise UnsupportedError(f"{target.what}: a constant that is not a finite scalar")
            w.names[out] = literal
            continue
        if node.op in ("reshape", "broadcast_to"):  # the same value under another shape
            w.names[out] = w.names[node.inputs[0]]
            if node.inputs[0] in w.elem_lines:
                w.elem_lines[out] = ""  # no line of its own; the loop still needs its input's
            continue
        ct = compute_type(out.dtype)
        if node.op in REDUCTION_OPS:
            (a,) = node.inputs
            w.names[out] = f"r{k}"
            w.row_lines += target.reduce(w, k, node, w.names[a], w.loop_lines([a]), ct)
            continue
        reason = unsupported_reason(node)
        if reason is not None:
            raise UnsupportedError(f"{target.what}: {reason}")
        template, helper = op_template(node)
        if helper:
            w.helpers.add(helper)
        if out.dtype.name == "float16":
            template = HALF_OUTPUT_TEMPLATES.get(node.op, template)
        expr = template.format(*(w.names[v] for v in node.inputs), T=ct)
        expr = RESULT_ROUND.get(out.dtype.name, "{}").format(expr)
        w.names[out] = f"v{k}"
        line = f"const {ct} v{k} = {expr};"
        if kinds[out] == ELEM:
            w.elem_lines[out] = line
        else:
            w.row_lines.append(line)
    return w
