"""The "fused_reduce" op: elementwise producers, reductions over the innermost axis, and their
elementwise consumers, run as one pass over blocks of rows.

Every value of the body lives in one *row space* ``(lead, cols)``: the iteration space is
``lead + (cols,)`` seen as a 2-D array of ``rows = prod(lead)`` rows. A value is then one of
  element  (rows, cols)   full shape,
  row      (rows, 1)      one per row: ``lead + (1,)`` or ``lead`` (a reduction's result),
  column   (1, cols)      broadcast down the rows (a layer norm's gamma), only as an input,
  scalar   ()             one element.
``member_kinds`` says, for a node in a row space, what its output is and how it reads each
input (by NumPy broadcasting), or None when the node does not fit; the fusion pass
(passes/fuse_reduce.py) uses it to form groups, the runners here to lay out the blocks.

attrs: ``body`` (the members as a Graph), ``lead``, ``cols``; on CuPy also ``cuda_source``,
``kernel_name`` when the body renders as a row kernel (codegen/reduce_graph.py), else
``cuda_refusal`` saying why not. Backends:
  numpy: the rows in blocks of about CHUNK_ELEMENTS elements; each member op writes with
         ``out=`` into block-sized scratch, so no full-size temporary exists.
  cupy:  one row-kernel launch, or the members one by one where no kernel renders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir import Graph, Node, TensorType, Value
from .fused import _scratch, direct_call, evaluate_body
from .registry import OpDef, get_op, register

ELEM, ROW, COL, SCALAR = "element", "row", "column", "scalar"
ROW_REDUCERS = ("sum", "max")  # the reductions a row kernel has (codegen/reduce_cuda.REDUCERS)
FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))
MEMBER_DTYPES = (*FLOAT_DTYPES, np.dtype("bool"))
# Elements per row block. As in fused.CHUNK_ELEMENTS: a handful of float32 scratch blocks
# (256 KiB each) stay in L2 while the per-ufunc call overhead is amortized.
CHUNK_ELEMENTS = 65536


@dataclass(frozen=True)
class Space:
    lead: tuple[int, ...]
    cols: int

    @property
    def full(self) -> tuple[int, ...]:
        return (*self.lead, self.cols)

    @property
    def rows(self) -> int:
        return math.prod(self.lead)

    def read(self, shape: tuple[int, ...], out_rank: int) -> str | None:
        """How an operand of ``shape`` broadcast against a full-shape result is read."""
        if len(shape) > out_rank:
            return None
        padded = (1,) * (out_rank - len(shape)) + tuple(shape)
        if padded == self.full:
            return ELEM
        if padded == (*self.lead, 1):
            return ROW
        if all(s == 1 for s in padded):
            return SCALAR
        if padded == (1,) * len(self.lead) + (self.cols,):
            return COL
        return None

    def compatible(self, made: str, read: str) -> bool:
        """A value made as ``made`` may be read as ``read`` (one column: rows are elements)."""
        return made == read or (self.cols == 1 and {made, read} == {ELEM, ROW})


def reduction_space(node: Node) -> Space | None:
    """The row space of a sum/max over the last axis of a float value, else None."""
    if node.op not in ROW_REDUCERS or len(node.inputs) != 1:
        return None
    x = node.inputs[0]
    if x.dtype not in FLOAT_DTYPES or not x.shape:
        return None
    if tuple(node.attrs["axis"]) != (len(x.shape) - 1,):
        return None
    return Space(tuple(x.shape[:-1]), x.shape[-1])


def _row_shapes(space: Space) -> tuple[tuple[int, ...], ...]:
    return ((*space.lead, 1), space.lead)


def member_kinds(node: Node, space: Space) -> tuple[str, list[str]] | None:
    """(kind of the output, kind each input is read as) of ``node`` in ``space``, or None."""
    if len(node.outputs) != 1:
        return None
    out = node.outputs[0]
    if node.op in ROW_REDUCERS:
        return (ROW, [ELEM]) if reduction_space(node) == space else None
    if node.op == "reshape":
        rows = _row_shapes(space)
        ok = node.inputs[0].shape in rows and out.shape in rows
        return (ROW, [ROW]) if ok else None
    opdef = get_op(node.op)
    if opdef.family != "elementwise" and node.op != "broadcast_to":
        return None
    if opdef.cuda is None and node.op != "broadcast_to":
        return None
    if any(v.dtype not in MEMBER_DTYPES for v in (*node.inputs, out)):
        return None
    shape = tuple(out.shape)
    if shape == space.full:
        reads = [space.read(v.shape, len(shape)) for v in node.inputs]
        return (ELEM, reads) if None not in reads else None  # type: ignore[return-value]
    if node.op == "broadcast_to":
        return None
    if shape == (*space.lead, 1):
        reads = [space.read(v.shape, len(shape)) for v in node.inputs]
        ok = all(r in (ROW, SCALAR) for r in reads) or (space.cols == 1 and None not in reads)
        return (ROW, [ROW if r == ELEM else r for r in reads]) if ok else None  # type: ignore
    if shape == space.lead:  # (for one row, lead == (): a 1-D reduction's result)
        reads = [
            ROW if v.shape == space.lead else SCALAR if v.shape == () else None for v in node.inputs
        ]
        return (ROW, reads) if None not in reads else None  # type: ignore[return-value]
    return None


def body_kinds(body: Graph, space: Space) -> dict[Value, str]:
    """The kind of every value of a fused_reduce body (inputs by how their readers read them)."""
    kinds: dict[Value, str] = {}
    for node in body.nodes:
        if node.op == "constant":
            kinds[node.output] = SCALAR
            continue
        found = member_kinds(node, space)
        assert found is not None, f"{node.op} does not fit row space {space}"
        made, reads = found
        for v, r in zip(node.inputs, reads):
            kinds.setdefault(v, r)
        kinds[node.output] = made
    return kinds


def _block_shape(kind: str, space: Space, rows: int) -> tuple[int, ...]:
    return {ELEM: (rows, space.cols), ROW: (rows, 1), COL: (1, space.cols), SCALAR: ()}[kind]


def _infer(types: list[TensorType], body: Graph, **attrs: Any) -> list[TensorType]:
    return [v.type.strong() for v in body.outputs]


def _impl(xp: Any, *arrays: Any, body: Graph, **attrs: Any) -> tuple:
    return evaluate_body(xp, body, arrays)


def _reducer(op: str):
    fn = np.add.reduce if op == "sum" else np.maximum.reduce

    def reduce(a: np.ndarray, out: np.ndarray) -> None:
        fn(a, axis=1, keepdims=True, out=out)

    return reduce


def _copy(a: np.ndarray, out: np.ndarray) -> None:
    np.copyto(out, a)


class RowPlan:
    """A body compiled to steps over numbered slots, run once per block of rows.

    Slots: body inputs, body outputs, scratch blocks (reused by liveness), constants. A reshape
    between ``lead`` and ``lead + (1,)`` is free: both are (block, 1), so its output shares
    its input's slot (its *root*), unless it is itself a body output: then it is a copy."""

    def __init__(self, body: Graph, space: Space, chunk: int | None = None) -> None:
        self.body, self.space = body, space
        chunk = CHUNK_ELEMENTS if chunk is None else chunk  # read now: tests change it
        self.block = max(1, min(space.rows, chunk // max(space.cols, 1)))
        self.kinds = kinds = body_kinds(body, space)
        nin, nout = len(body.inputs), len(body.outputs)
        first = nin + nout
        outputs = {v: nin + j for j, v in enumerate(body.outputs)}
        root: dict[Value, Value] = {}
        for node in body.nodes:
            if node.op == "reshape" and node.output not in outputs:
                src = node.inputs[0]
                root[node.output] = root.get(src, src)
        last_use: dict[Value, int] = {}
        for i, node in enumerate(body.nodes):
            for v in node.inputs:
                last_use[root.get(v, v)] = i
        slot: dict[Value, int] = {v: j for j, v in enumerate(body.inputs)}
        self.scratch: list[tuple[tuple[int, ...], np.dtype]] = []
        self.sliced: list[bool] = []  # scratch slot j is cut to the block's rows
        self.consts: list[np.ndarray] = []
        free: dict[tuple, list[int]] = {}
        steps: list[tuple[Any, list[int], int]] = []
        for i, node in enumerate(body.nodes):
            out = node.output
            if node.op == "constant":
                slot[out] = -1 - len(self.consts)
                self.consts.append(np.asarray(node.attrs["value"]).reshape(()))
                continue
            if node.op == "reshape" and out not in outputs:
                slot[out] = slot[node.inputs[0]]
                continue
            for v in dict.fromkeys(root.get(v, v) for v in node.inputs):
                k = slot[v]  # an input dying here lends its block to the output
                if k >= first and last_use[v] == i:
                    free.setdefault((kinds[v], v.dtype), []).append(k)
            key = (kinds[out], out.dtype)
            if out in outputs:
                slot[out] = outputs[out]
            elif free.get(key):
                slot[out] = free[key].pop()
            else:
                self.scratch.append((_block_shape(kinds[out], space, self.block), out.dtype))
                self.sliced.append(kinds[out] in (ELEM, ROW))
                slot[out] = first + len(self.scratch) - 1
            if out not in last_use and out not in outputs:  # unused: give it back at once
                free.setdefault(key, []).append(slot[out])
            if node.op in ROW_REDUCERS:
                call = _reducer(node.op)
            elif node.op in ("broadcast_to", "reshape"):  # (a reshape that is an output)
                call = _copy
            else:
                call = direct_call(get_op(node.op), np, node.attrs)
            steps.append((call, [slot[v] for v in node.inputs], slot[out]))
        n = first + len(self.scratch)

        def fix(k: int) -> int:  # constants come after the scratch slots
            return k if k >= 0 else n - 1 - k

        self.steps = [(c, tuple(fix(k) for k in ins), dst) for c, ins, dst in steps]

    def _layout(self, arrays: list, values: list[Value]) -> list[tuple[np.ndarray, bool]]:
        laid = []
        for a, v in zip(arrays, values):
            kind = self.kinds.get(v, ELEM)
            laid.append(
                (
                    np.reshape(a, _block_shape(kind, self.space, self.space.rows)),
                    kind in (ELEM, ROW),
                )
            )
        return laid

    def run(self, ins: list, outs: list) -> None:
        rows = self.space.rows
        if rows == 0:
            return
        targets = [o if o.flags.c_contiguous else np.empty(o.shape, o.dtype) for o in outs]
        arrays = self._layout(ins, self.body.inputs) + self._layout(targets, self.body.outputs)
        bufs = _scratch(self.scratch)
        slots: list[Any] = [a for a, _ in arrays] + bufs + self.consts
        nio, current = len(arrays), self.block
        for lo in range(0, rows, self.block):
            hi = min(lo + self.block, rows)
            for j, (a, cut) in enumerate(arrays):
                if cut:
                    slots[j] = a[lo:hi]
            if hi - lo != current:
                current = hi - lo
                for j, (b, cut) in enumerate(zip(bufs, self.sliced)):
                    slots[nio + j] = b[:current] if cut else b
            for call, src, dst in self.steps:
                call(*[slots[k] for k in src], out=slots[dst])
        for o, t in zip(outs, targets):
            if o is not t:
                o[...] = t


def _space(node: Any) -> Space:
    return Space(tuple(node.attrs["lead"]), int(node.attrs["cols"]))


def _prepare_numpy(node: Any, backend: Any):
    return RowPlan(node.attrs["body"], _space(node)).run


def _prepare_cupy(node: Any, backend: Any):
    """One row-kernel launch (a block per row, grid-stride over rows); where the body rendered
    no kernel (``cuda_refusal``), the members run one by one as CuPy ops."""
    import cupy

    from .fused import _raw_kernel, _sm_count

    body: Graph = node.attrs["body"]
    source = node.attrs.get("cuda_source")
    if source is None:

        def run_ops(ins: list, outs: list) -> None:
            for o, r in zip(outs, evaluate_body(cupy, body, ins)):
                o[...] = r

        return run_ops
    kernel = _raw_kernel(source, node.attrs["kernel_name"])
    space = _space(node)
    block = int(node.attrs["row_block"])
    grid = max(1, min(space.rows, _sm_count(cupy.cuda.Device().id) * 8))
    sizes = (np.int64(space.rows), np.int64(space.cols))

    def run(ins: list, outs: list) -> None:  # called inside `with stream:`: launches on it
        if space.rows == 0:
            return
        args = [cupy.ascontiguousarray(a) for a in ins]
        targets = [o if o.flags.c_contiguous else cupy.empty(o.shape, o.dtype) for o in outs]
        kernel((grid,), (block,), (*args, *targets, *sizes))
        for o, t in zip(outs, targets):
            if o is not t:
                o[...] = t

    return run


FUSED_REDUCE = register(
    OpDef(
        "fused_reduce",
        "internal",
        _infer,
        _impl,
        differentiable=False,
        doc="elementwise ops and innermost-axis reductions run as one pass over row blocks "
        "(see gpugraph.passes.fuse_reduce)",
        extra={"prepare": {"numpy": _prepare_numpy, "cupy": _prepare_cupy}},
    )
)
