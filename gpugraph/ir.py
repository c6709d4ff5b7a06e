"""The typed graph IR: TensorType, Value, Node, Graph, a builder, verify() and two printers.

A Graph is a list of nodes in a valid topological order. Values are SSA: each is defined once,
either as a graph input or as an output of exactly one node. Nodes are never edited in place;
passes build new graphs with GraphBuilder (``Graph.rebuild`` helps with the common case).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The dtype table: every dtype a value may have, with its short name for printed graphs.
# float16 computes as NumPy does (each op in float32, rounded to float16), and reductions and
# contractions accumulate in float32 (see docs/ops.md, "Dtypes").
_DTYPE_TABLE: dict[str, str] = {
    "float16": "f16",
    "float32": "f32",
    "float64": "f64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "uint16": "u16",
    "bool": "b1",
}
try:  # bfloat16 is not a NumPy dtype; ml_dtypes (installed with JAX) provides one
    import ml_dtypes as _ml_dtypes

    BFLOAT16: np.dtype | None = np.dtype(_ml_dtypes.bfloat16)
    _DTYPE_TABLE["bfloat16"] = "bf16"
except ImportError:  # pragma: no cover - depends on the machine
    BFLOAT16 = None
SUPPORTED_DTYPES = tuple(np.dtype(name) for name in _DTYPE_TABLE)
SHORT_NAMES = dict(_DTYPE_TABLE)


def is_float(dtype: np.dtype) -> bool:
    """Floating point: NumPy's kind "f", or bfloat16 (whose kind is "V")."""
    return dtype.kind == "f" or (BFLOAT16 is not None and dtype == BFLOAT16)


def unsupported_dtype_message(dt: np.dtype) -> str:
    """Why ``dt`` is refused, with what to do instead."""
    names = ", ".join(d.name for d in SUPPORTED_DTYPES)
    if dt.name == "bfloat16":
        return "dtype bfloat16 needs the ml_dtypes package (pip install ml_dtypes)"
    return f"dtype {dt} is not supported; use one of {names}"


_ids = itertools.count()

# The most bytes one array may span: NumPy and CuPy index with a signed 64-bit integer.
MAX_BYTES = 2**63 - 1


def check_size(shape: tuple[int, ...], itemsize: int, what: str) -> None:
    """Raise ShapeError when an array of ``shape`` could not exist (too many bytes)."""
    n = math.prod(shape)
    if n * itemsize > MAX_BYTES:
        from .errors import ShapeError

        raise ShapeError(
            f"{what + ': ' if what else ''}shape {shape} has {n} elements of {itemsize} bytes, "
            f"more than one array can hold (2**63 - 1 bytes)"
        )


def check_shape(shape: Any, what: str, itemsize: int = 1) -> tuple[int, ...]:
    """A user-given static shape as a tuple of ints: an int or a sequence of integers (not
    floats), none negative, small enough to allocate. ``what`` names the op or argument."""
    from .errors import ShapeError

    if not isinstance(shape, (tuple, list)):
        try:  # one size; a traced one raises TraceError here, which says to make it static
            shape = (operator.index(shape),)
        except TypeError:
            pass  # an iterable of sizes (a NumPy array), or nothing usable: checked below
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise ShapeError(
            f"{what}: shape must be an int or a sequence of ints, got {shape!r}"
        ) from None
    if any(d < 0 for d in dims):
        raise ShapeError(f"{what}: negative dimension in shape {dims}")
    check_size(dims, itemsize, what)
    return dims


@dataclass(frozen=True)
class TensorType:
    """Static shape and dtype of a value. ``weak`` marks a Python scalar that has not yet
    been given a dtype by promotion (NumPy 2 weak-scalar semantics)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    weak: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.dtype not in SUPPORTED_DTYPES:
            from .errors import DTypeError

            raise DTypeError(unsupported_dtype_message(self.dtype))
        if any(s < 0 for s in self.shape):
            from .errors import ShapeError

            raise ShapeError(f"negative dimension in shape {self.shape}")
        check_size(self.shape, self.dtype.itemsize, "")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    # Cached on the (frozen) instance: planners ask for sizes of every value many times.
    @functools.cached_property
    def size(self) -> int:
        return math.prod(self.shape)

    @functools.cached_property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def strong(self) -> TensorType:
        return TensorType(self.shape, self.dtype) if self.weak else self

    def __str__(self) -> str:
        return f"{SHORT_NAMES[self.dtype.name]}[{','.join(map(str, self.shape))}]"


class Value:
    """An SSA value. Identity-hashed; ``node`` is None for graph inputs."""

    __slots__ = ("id", "type", "node", "index", "name")

    def __init__(self, type: TensorType, node: Node | None = None, index: int = 0, name=None):
        self.id = next(_ids)
        self.type = type
        self.node = node
        self.index = index
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"Value#{self.id}:{self.type}"


class Node:
    """One op application. ``attrs`` must be treated as immutable; ``loc`` is the user's
    file:line that created it (for error messages and explain())."""

    __slots__ = ("id", "op", "inputs", "attrs", "outputs", "loc")

    def __init__(self, op: str, inputs, attrs: dict, out_types, loc: str | None = None):
        self.id = next(_ids)
        self.op = op
        self.inputs: tuple[Value, ...] = tuple(inputs)
        self.attrs: dict[str, Any] = dict(attrs)
        self.outputs: tuple[Value, ...] = tuple(Value(t, self, i) for i, t in enumerate(out_types))
        self.loc = loc

    @property
    def output(self) -> Value:
        assert len(self.outputs) == 1, f"{self.op} has {len(self.outputs)} outputs"
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Node#{self.id}({self.op})"


def freeze(obj: Any) -> Any:
    """A hashable stand-in for an attribute value (used by CSE and signature caches)."""
    if isinstance(obj, dict):
        return tuple(sorted((k, freeze(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return tuple(freeze(v) for v in obj)
    if isinstance(obj, np.ndarray):
        digest = hashlib.sha1(np.ascontiguousarray(obj).tobytes()).hexdigest()
        return ("ndarray", obj.dtype.str, obj.shape, digest)
    if isinstance(obj, np.generic):
        return ("scalar", obj.dtype.str, obj.item())
    if isinstance(obj, float) and obj != obj:
        return ("nan",)
    if isinstance(obj, np.dtype):
        return ("dtype", obj.str)
    if isinstance(obj, Graph):
        return ("graph", id(obj))
    if isinstance(obj, slice):
        return ("slice", obj.start, obj.stop, obj.step)
    return obj


@dataclass
class Graph:
    inputs: list[Value]
    nodes: list[Node]
    outputs: list[Value]
    meta: dict = field(default_factory=dict)

    def values(self) -> Iterable[Value]:
        yield from self.inputs
        for n in self.nodes:
            yield from n.outputs

    def users(self) -> dict[Value, list[Node]]:
        uses: dict[Value, list[Node]] = {v: [] for v in self.values()}
        for n in self.nodes:
            for v in n.inputs:
                uses.setdefault(v, []).append(n)
        return uses

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self.nodes)

    def __str__(self) -> str:
        return format_graph(self)

    def to_dot(self, stream_of: dict[Node, int] | None = None, memory: Any = None) -> str:
        return to_dot(self, stream_of, memory)


def live_nodes(graph: Graph) -> list[Node]:
    """The nodes some graph output depends on, in graph order."""
    live = set(graph.outputs)
    keep = []
    for node in reversed(graph.nodes):
        if any(v in live for v in node.outputs):
            keep.append(node)
            live.update(node.inputs)
    return keep[::-1]


class GraphBuilder:
    """Appends nodes in order; ``emit`` for new nodes, ``copy_node`` to carry a node over
    from another graph with remapped inputs."""

    def __init__(self) -> None:
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []

    def add_input(self, type: TensorType, name: str | None = None) -> Value:
        v = Value(type, None, 0, name)
        self.inputs.append(v)
        return v

    def add_node(self, op: str, inputs, attrs: dict, out_types, loc=None) -> Node:
        node = Node(op, inputs, attrs, out_types, loc)
        self.nodes.append(node)
        return node

    def build(self, outputs: Iterable[Value], meta: dict | None = None) -> Graph:
        return Graph(list(self.inputs), list(self.nodes), list(outputs), dict(meta or {}))


def rebuild(
    graph: Graph,
    visit: Callable[[GraphBuilder, Node, list[Value]], list[Value] | None],
) -> Graph:
    """Copy ``graph`` node by node. ``visit(builder, node, new_inputs)`` may return the
    replacement outputs for ``node`` (emitting nodes into the builder as needed) or None to
    keep a copy of the node. Inputs are carried over as the same Value objects."""
    b = GraphBuilder()
    b.inputs = list(graph.inputs)
    env: dict[Value, Value] = {v: v for v in graph.inputs}
    for node in graph.nodes:
        new_inputs = [env[v] for v in node.inputs]
        outs = visit(b, node, new_inputs)
        if outs is None:
            if all(a is o for a, o in zip(new_inputs, node.inputs)):
                b.nodes.append(node)
                outs = list(node.outputs)
            else:
                copy = b.add_node(
                    node.op, new_inputs, node.attrs, [o.type for o in node.outputs], node.loc
                )
                outs = list(copy.outputs)
        assert len(outs) == len(node.outputs), node
        for old, new in zip(node.outputs, outs):
            env[old] = new
    return b.build([env[v] for v in graph.outputs], graph.meta)


def verify(graph: Graph, check_types: bool = True) -> None:
    """Check SSA form, topological order and (optionally) that every node's output types
    agree with its op's shape rule. Raises AssertionError: a failure is a bug in gpugraph."""
    from .ops.registry import get_op  # lazy: ops import the IR

    defined: set[Value] = set()
    for v in graph.inputs:
        assert v not in defined, f"input {v} listed twice"
        assert v.node is None, f"graph input {v} has a producer"
        defined.add(v)
    for node in graph.nodes:
        for v in node.inputs:
            assert v in defined, f"{node.op} ({node.loc}) uses {v} before it is defined"
        for i, v in enumerate(node.outputs):
            assert v.node is node and v.index == i, f"broken output link on {node}"
            assert v not in defined, f"{v} defined twice"
            defined.add(v)
        if check_types:
            opdef = get_op(node.op)
            expected = opdef.infer([v.type for v in node.inputs], **node.attrs)
            got = [v.type.strong() for v in node.outputs]
            assert [t.strong() for t in expected] == got, (
                f"{node.op}: outputs {got} but its rule gives {expected}"
            )
        for a in node.attrs.values():
            for sub in a if isinstance(a, (tuple, list)) else (a,):
                if isinstance(sub, Graph):
                    verify(sub, check_types)
    for v in graph.outputs:
        assert v in defined, f"output {v} is not defined in the graph"


def _fmt_attr(v: Any) -> str:
    if isinstance(v, np.ndarray):
        if v.size <= 4:
            return np.array2string(v, separator=",").replace("\n", "")
        return f"<array {TensorType(v.shape, v.dtype)}>"
    if isinstance(v, np.dtype):
        return SHORT_NAMES.get(v.name, v.name)
    if isinstance(v, Graph):
        ops = ", ".join(n.op for n in v.nodes if n.op != "constant")
        return f"<graph: {ops}>"
    if isinstance(v, str) and (len(v) > 60 or "\n" in v):
        return f"<{v.count(chr(10)) + 1} lines; see Compiled.kernels>"
    if isinstance(v, (list, tuple)) and any(isinstance(x, Graph) for x in v):
        return "[" + ", ".join(_fmt_attr(x) for x in v) + "]"
    return repr(v)


def input_names(graph: Graph) -> dict[Value, str]:
    """Printable names of the graph's inputs: the argument path jit gave each one
    (``x``, ``params['w1']``) when it is unique, else ``%N`` like other values."""
    given = [v.name for v in graph.inputs]
    return {
        v: str(v.name)
        for v in graph.inputs
        if v.name and v.name != "capture" and given.count(v.name) == 1
    }


def _region_graphs(node: Node) -> list[tuple[str, Graph]]:
    """The sub-graphs of a region op (cond/while/scan), named by attr, for the printers."""
    from .ops.registry import get_op  # lazy: ops import the IR

    if not get_op(node.op).extra.get("region"):
        return []
    found = []
    for k, a in node.attrs.items():
        if isinstance(a, Graph):
            found.append((k, a))
        elif isinstance(a, tuple) and a and all(isinstance(g, Graph) for g in a):
            found.extend((f"{k}[{i}]", g) for i, g in enumerate(a))
    return found


def format_graph(
    graph: Graph,
    indent: str = "",
    names: dict[Value, str] | None = None,
    counter: Iterator[int] | None = None,
) -> str:
    # Nested regions share the names and the counter: one numbering for the whole text.
    if names is None:
        names = {v: f"%{n}" for v, n in input_names(graph).items()}
    counter = itertools.count() if counter is None else counter

    def name(v: Value) -> str:
        if v not in names:
            names[v] = f"%{next(counter)}"
        return names[v]

    args = ", ".join(f"{name(v)}:{v.type}" for v in graph.inputs)
    lines = [f"{indent}graph({args}) {{"]
    for n in graph.nodes:
        outs = ", ".join(f"{name(v)}:{v.type}" for v in n.outputs)
        ins = " ".join(name(v) for v in n.inputs)
        attrs = {k: v for k, v in n.attrs.items() if not k.startswith("_")}
        attr_s = (
            " {" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in attrs.items()) + "}" if attrs else ""
        )
        lines.append(f"{indent}  {outs} = {n.op}{' ' + ins if ins else ''}{attr_s}")
        for key, sub in _region_graphs(n):  # regions print nested, indented
            lines.append(f"{indent}    {key}:")
            lines.append(format_graph(sub, indent + "    ", names, counter))
    outs = ", ".join(name(v) if v in names else f"?{v.id}" for v in graph.outputs)
    lines.append(f"{indent}  return {outs}")
    lines.append(f"{indent}}}")
    return "\n".join(lines)


_COLOURS = ["lightblue", "lightgoldenrod", "palegreen", "lightpink", "plum", "lightsalmon"]


def _dot_str(text: str) -> str:
    """A DOT double-quoted string; ``\\n`` in ``text`` stays a DOT line break."""
    return '"' + text.replace('"', '\\"') + '"'


def _where(v: Value, memory: Any) -> str:
    """Where a value's bytes live under a memory plan (any object with MemoryPlan's ``slots``)."""
    slot = getattr(memory, "slots", {}).get(v)
    if slot is None:
        return f"{v.type}"
    if slot.kind == "arena":
        return f"{v.type} arena [{slot.offset}, {slot.offset + slot.size})"
    if slot.kind == "view":
        return f"{v.type} view of #{slot.base.id}"
    return f"{v.type} {slot.kind}"


def to_dot(graph: Graph, stream_of: dict[Node, int] | None = None, memory: Any = None) -> str:
    """Graphviz DOT: inputs as ellipses labelled with their argument paths, nodes as boxes
    filled with their stream's colour; fused nodes are drawn as clusters holding their member
    ops. Hovering a node shows its stream and, given a memory plan (``Compiled.memory``), where
    each output lives (its arena byte range, a view, or a fresh output buffer)."""
    lines = ["digraph gpugraph {", "  rankdir=TB;", "  node [shape=box, style=filled];"]
    ids: dict[Value, str] = {}
    named = input_names(graph)
    for i, v in enumerate(graph.inputs):
        ids[v] = f"in{i}"
        label = _dot_str(f"{named.get(v, f'input {i}')}\\n{v.type}")
        lines.append(f"  in{i} [shape=ellipse, fillcolor=white, label={label}];")
    streams = stream_of or {}
    if len(set(streams.values())) > 1:  # a legend, so colours can be read as streams
        for s in sorted(set(streams.values())):
            colour = _COLOURS[s % len(_COLOURS)]
            lines.append(f'  stream{s} [shape=note, fillcolor={colour}, label="stream {s}"];')
    for k, n in enumerate(graph.nodes):
        stream = streams.get(n, 0)
        colour = _COLOURS[stream % len(_COLOURS)]
        tip = f"stream {stream}\\n" + "\\n".join(_where(v, memory) for v in n.outputs)
        if n.loc:
            tip += f"\\nat {n.loc}"
        attrs = f"fillcolor={colour}, tooltip={_dot_str(tip)}"
        label = f"{n.op}\\n" + ", ".join(str(v.type) for v in n.outputs)
        regions = _region_graphs(n)
        sub = n.attrs.get("body")
        if regions:  # one dashed cluster per region node, one box per sub-graph
            lines.append(f"  subgraph cluster_{k} {{ label={_dot_str(n.op)}; style=dashed;")
            lines.append(f"    n{k} [{attrs}, label={_dot_str(label)}];")
            for j, (key, g) in enumerate(regions):
                members = "\\n".join(m.op for m in g.nodes if m.op != "constant")
                lines.append(f'    n{k}_{j} [fillcolor=white, label="{key}:\\n{members}"];')
            lines.append("  }")
        elif isinstance(sub, Graph):
            members = "\\n".join(m.op for m in sub.nodes)
            lines.append(f"  subgraph cluster_{k} {{ label={_dot_str(n.op)}; style=dashed;")
            lines.append(f"    n{k} [{attrs}, label={_dot_str(members)}]; }}")
        else:
            lines.append(f"  n{k} [{attrs}, label={_dot_str(label)}];")
        for v in n.outputs:
            ids[v] = f"n{k}"
        for v in n.inputs:
            if v in ids:
                lines.append(f"  {ids[v]} -> n{k};")
    for i, v in enumerate(graph.outputs):
        lines.append(f'  out{i} [shape=ellipse, fillcolor=white, label="out{i}"];')
        if v in ids:
            lines.append(f"  {ids[v]} -> out{i};")
    lines.append("}")
    return "\n".join(lines)
