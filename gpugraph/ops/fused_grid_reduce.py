"""The "fused_grid_reduce" op: an elementwise prologue, sums/maxes/mins over the same run of
axes of full-shape values of it (leading axes: column or full reductions; or a middle run;
one reduction, or several sharing the pass over their inputs, as a layer norm's dw and db)
and an elementwise epilogue per reduced value (passes/fuse_reduce_grid.py).

attrs: ``body`` (the members as a Graph: prologue, the reductions, epilogues; one output per
reduction), ``start`` and ``axes`` (the reductions are over axes start..axes-1; start is 0
for leading axes); also ``cuda_source``, ``kernel_name``, ``grid_layout``, ``grid_shape``
and ``grid_kernels`` (codegen/reduce_grid.GridKernels) when the body renders as the
two-stage grid kernels, else ``cuda_refusal``. Backends:
  numpy: blocks of about CHUNK_ELEMENTS along axis 0; per block the prologue and the
         reductions (so no full-size temporary exists), partials combined with np.add /
         np.maximum / np.minimum in block order; then the epilogues. The sum is associated
         by blocks, not as one NumPy call would: equal within rounding, not bit for bit. A
         middle run keeps axis 0: each block computes its slice of the outputs.
  cupy:  the partials kernel and the final kernel (every reduction in each) with a
         workspace, or the members one by one where no kernel renders.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ir import Graph, TensorType, Value
from .fused import evaluate_body, members_runner
from .registry import OpDef, get_op, register

# Elements per block of axis 0: each temporary of the prologue is one block (64 KiB of
# float32), and only those the DAG still needs are alive (_frees).
CHUNK_ELEMENTS = 16384
COMBINE = {"sum": np.add, "max": np.maximum, "min": np.minimum, "prod": np.multiply}


def _infer(types: list[TensorType], body: Graph, **attrs: Any) -> list[TensorType]:
    return [v.type.strong() for v in body.outputs]


def _impl(xp: Any, *arrays: Any, body: Graph, **attrs: Any) -> tuple:
    return evaluate_body(xp, body, arrays)


def _frees(nodes: list, keep: set[Value]) -> list[list[Value]]:
    """Per node, the values no later node reads (and not in ``keep``): dropped after it, so a
    block's temporaries live only as long as the DAG needs them (a few blocks at a time)."""
    last: dict[Value, int] = {}
    for i, node in enumerate(nodes):
        for v in (*node.inputs, *node.outputs):
            last[v] = i
    drop: list[list[Value]] = [[] for _ in nodes]
    for v, i in last.items():
        if v not in keep:
            drop[i].append(v)
    return drop


def _run_nodes(nodes, env: dict[Value, Any], frees: list[list[Value]] | None = None) -> None:
    """evaluate_body's steps over part of a body, on NumPy; ``frees`` (from _frees) drops the
    values dead after each step."""
    for i, node in enumerate(nodes):
        if node.op == "constant":
            env[node.output] = np.asarray(node.attrs["value"])
        else:
            r = get_op(node.op).impl(np, *(env[v] for v in node.inputs), **node.attrs)
            env[node.output] = np.asarray(r).astype(node.output.dtype, copy=False)
        for v in frees[i] if frees is not None else ():
            env.pop(v, None)


def _stages(body: Graph) -> tuple[list, list, list]:
    """(the body's reductions, the nodes before them: the prologue, run per block, the nodes
    after: the epilogue, on the combined results). A node is after when it reads a
    reduction's result; constants go to both."""
    reductions = [n for n in body.nodes if n.op in COMBINE]
    after_values = {n.output for n in reductions}
    pro, epi = [], []
    for n in body.nodes:
        if n.op == "constant":
            pro.append(n)
            epi.append(n)
        elif n not in reductions and any(v in after_values for v in n.inputs):
            after_values.add(n.output)
            epi.append(n)
        else:
            pro.append(n)
    return reductions, pro, epi


def _prepare_numpy(node: Any, backend: Any):
    body: Graph = node.attrs["body"]
    reductions, prologue, epilogue = _stages(body)
    full = tuple(reductions[0].inputs[0].shape)
    block = max(1, CHUNK_ELEMENTS // max(1, math.prod(full[1:])))
    sliced = int(node.attrs.get("start", 0)) > 0  # a middle run: axis 0 is kept
    every = list(body.nodes)
    frees_all = _frees(every, set(body.outputs))
    frees_pro = _frees(prologue, {r.output for r in reductions})

    def run(ins: list, outs: list) -> None:
        # a full-rank input along axis 0 is cut; one broadcast along it (size 1, or lower
        # rank: aligned to the trailing axes) is read whole by every block
        cut = [a.ndim == len(full) and a.shape[0] == full[0] for a in ins]
        if full[0] == 0:  # nothing to cut: the whole body (a sum of nothing is 0 ...)
            results = evaluate_body(np, body, ins)
        elif sliced:  # each block of axis 0 is its own slice of every output
            for lo in range(0, full[0], block):
                env = {v: a[lo : lo + block] if c else a for v, a, c in zip(body.inputs, ins, cut)}
                _run_nodes(every, env, frees_all)
                for out, v in zip(outs, body.outputs):
                    out[lo : lo + block] = env[v]
            return
        else:
            acc: dict[Value, Any] = {}
            for lo in range(0, full[0], block):
                env = {v: a[lo : lo + block] if c else a for v, a, c in zip(body.inputs, ins, cut)}
                _run_nodes(prologue, env, frees_pro)
                for r in reductions:  # partials combined in block order: deterministic
                    part, prev = env[r.output], acc.get(r.output)
                    acc[r.output] = part if prev is None else COMBINE[r.op](prev, part, out=prev)
            _run_nodes(epilogue, acc)
            results = [acc[v] for v in body.outputs]
        for out, r in zip(outs, results):
            out[...] = r

    return run


def _prepare_cupy(node: Any, backend: Any):
    """Two launches (partials into a workspace, then the final fold) per call; where the body
    rendered no kernel (``cuda_refusal``), the members run one by one as CuPy ops."""
    import cupy

    body: Graph = node.attrs["body"]
    kernels = node.attrs.get("grid_kernels")
    if kernels is None:
        return members_runner(cupy, body)
    return _GridRunner(node, kernels, cupy)


def _scratch_bytes(node: Any) -> int:
    """Arena bytes of the grid kernels' workspace (memory.plan_memory reserves them for this
    step only; 0 where no kernel rendered). The plan does not know the backend: NumPy and the
    CPU reserve the range too (a few hundred KiB at most, shared with values dead then)."""
    kernels = node.attrs.get("grid_kernels")
    if kernels is None:
        return 0
    size, dtype = kernels.workspace(node.attrs["grid_shape"])
    return size * dtype.itemsize


class _GridRunner:
    """The two launches of a grid group. Its workspace is the range of the arena the plan
    reserved for this step (``attach``): made once with the arena, ordered against every
    other use of those bytes by the plan's stream waits, as any arena value is (the race
    checker simulates it so). Without a parent plan (a test calling the runner alone) the
    workspace is allocated per call."""

    def __init__(self, node: Any, kernels: Any, cupy: Any) -> None:
        from .fused import _raw_kernel

        self.node, self.kernels, self.cupy = node, kernels, cupy
        source = node.attrs["cuda_source"]
        self.launch = {s: _raw_kernel(source, f"{kernels.name}_{s}") for s in "pf"}
        self.shape = shape = node.attrs["grid_shape"]  # reduced axes merged into rows
        # an input one per row or per column is read as a vector, a scalar as one element
        views = {"full": shape, "row": (-1,), "col": (-1,), "scalar": (1,)}
        self.views = [views[kind] for _, kind in kernels.program.in_types]
        self.size, self.dtype = kernels.workspace(shape)
        self.work_source: Any = None  # () -> the workspace array, once attached

    def attach(self, parent: Any) -> None:
        got = parent.plan.scratch.get(self.node)
        if got is None or got[1] < self.size * self.dtype.itemsize:
            return
        start, nbytes = got[0], self.size * self.dtype.itemsize
        self.work_source = lambda: parent.arena[start : start + nbytes].view(self.dtype)

    def __call__(self, ins: list, outs: list) -> None:  # inside `with stream:`: launches on it
        cp = self.cupy
        xs = [cp.ascontiguousarray(a).reshape(view) for a, view in zip(ins, self.views)]
        targets = [o if o.flags.c_contiguous else cp.empty(o.shape, o.dtype) for o in outs]
        work = self.work_source() if self.work_source else cp.empty(self.size, self.dtype)
        flat = [t.reshape(-1) for t in targets]
        for step in self.kernels.launches(xs, work, flat, self.shape):
            self.launch[step.kernel[-1]](step.grid, step.block, step.args)
        for out, target in zip(outs, targets):
            if target is not out:
                out[...] = target


FUSED_GRID_REDUCE = register(
    OpDef(
        "fused_grid_reduce",
        "internal",
        _infer,
        _impl,
        differentiable=False,
        doc="an elementwise prologue, a sum/max over leading axes and an elementwise epilogue "
        "as one blocked pass (see gpugraph.passes.fuse_reduce_grid)",
        extra={
            "prepare": {"numpy": _prepare_numpy, "cupy": _prepare_cupy},
            "scratch_bytes": _scratch_bytes,
        },
    )
)
