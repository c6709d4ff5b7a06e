"""The "fused_reduce" op: elementwise producers, reductions over the innermost axis, and their
elementwise consumers, run as one pass over blocks of rows.

Every value of the body lives in one row space ``(lead, cols)`` (ops/row_space.py): full-shape,
one per row, a column vector or one element.

attrs: ``body`` (the members as a Graph), ``lead``, ``cols``; on CuPy also ``cuda_source``,
``kernel_name`` when the body renders as a row kernel (codegen/reduce_graph.py), else
``cuda_refusal`` saying why not. Backends:
  numpy: the rows in blocks of about CHUNK_ELEMENTS elements; each member op writes with
         ``out=`` into block-sized scratch, so no full-size temporary exists.
  cupy:  one row-kernel launch, or the members one by one where no kernel renders.
  cpu:   a native CPU row kernel (backends/cpu_rows.py, codegen/cpu_reduce.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, TensorType, Value
from .fused import (
    _scratch,
    copy_back,
    direct_call,
    evaluate_body,
    members_runner,
    staged_targets,
)
from .registry import OpDef, get_op, register
from .row_space import COL, ELEM, ROW, ROW_REDUCERS, SCALAR, Space, body_kinds

# Elements per row block. As in fused.CHUNK_ELEMENTS: a handful of float32 scratch blocks
# (256 KiB each) stay in L2 while the per-ufunc call overhead is amortized.
CHUNK_ELEMENTS = 65536


def _block_shape(kind: str, space: Space, rows: int) -> tuple[int, ...]:
    return {ELEM: (rows, space.cols), ROW: (rows, 1), COL: (1, space.cols), SCALAR: ()}[kind]


def _infer(types: list[TensorType], body: Graph, **attrs: Any) -> list[TensorType]:
    return [v.type.strong() for v in body.outputs]


def _impl(xp: Any, *arrays: Any, body: Graph, **attrs: Any) -> tuple:
    return evaluate_body(xp, body, arrays)


def _reducer(op: str):
    fn = {
        "sum": np.add.reduce,
        "max": np.maximum.reduce,
        "min": np.minimum.reduce,
        "prod": np.multiply.reduce,
    }[op]

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
        targets = staged_targets(np, outs)
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
        copy_back(outs, targets)


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
        return members_runner(cupy, body)
    kernel = _raw_kernel(source, node.attrs["kernel_name"])
    space = _space(node)
    block = int(node.attrs["row_block"])
    grid = max(1, min(space.rows, _sm_count(cupy.cuda.Device().id) * 8))
    sizes = (np.int64(space.rows), np.int64(space.cols))

    def run(ins: list, outs: list) -> None:  # called inside `with stream:`: launches on it
        if space.rows == 0:
            return
        args = [cupy.ascontiguousarray(a) for a in ins]
        targets = staged_targets(cupy, outs)
        kernel((grid,), (block,), (*args, *targets, *sizes))
        copy_back(outs, targets)

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


from . import fused_grid_reduce  # noqa: E402,F401  (registers "fused_grid_reduce")
