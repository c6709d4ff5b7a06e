"""The "fused" op: a group of elementwise ops run as one pass over memory.

attrs: ``body`` (the member ops as a Graph whose inputs/outputs are the node's), ``cuda_source``
and ``kernel_name`` (from gpugraph.codegen). Backends lower it through ``extra["prepare"]``:
  numpy: one evaluation over cache-sized chunks, each member op's impl writing with ``out=`` into
         chunk-sized scratch buffers (reused by liveness); no full-size temporaries.
  cupy:  one ``cupy.RawKernel`` launch on the current stream (compiled once per source hash).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..ir import Graph, TensorType, Value
from .registry import OpDef, get_op, register

# Elements per scratch buffer. Measured on the 2-core CI box (8-op float32 chain, 16M
# elements, medians): 16K -> 41 ms, 64K -> 33 ms, 256K -> 31-35 ms. 64K keeps a handful of
# float32 scratch buffers (256 KiB each) in L2 while amortizing the per-ufunc call overhead.
CHUNK_ELEMENTS = 65536
# NumPy releases the GIL inside ufunc loops, so chunks can run on several threads. Off by
# default: on the 2-vCPU CI box two threads were slower (Python overhead holds the GIL, and the
# box is shared). GPUGRAPH_FUSED_THREADS=n turns it on.
THREADS = max(1, int(os.environ.get("GPUGRAPH_FUSED_THREADS", "1")))
BLOCK = 256  # threads per block of a generated kernel
BLOCKS_PER_SM = 16  # grid-stride: enough resident blocks to hide latency, no more


def _infer(types: list[TensorType], body: Graph, **attrs: Any) -> list[TensorType]:
    return [v.type.strong() for v in body.outputs]


def evaluate_body(xp: Any, body: Graph, arrays) -> tuple:
    """Reference evaluation of a body on whole arrays (no chunking)."""
    env: dict[Value, Any] = dict(zip(body.inputs, arrays))
    for node in body.nodes:
        if node.op == "constant":
            env[node.output] = xp.asarray(node.attrs["value"])
            continue
        r = get_op(node.op).impl(xp, *(env[v] for v in node.inputs), **node.attrs)
        env[node.output] = xp.asarray(r).astype(node.output.dtype, copy=False)
    return tuple(env[v] for v in body.outputs)


def _impl(xp: Any, *arrays: Any, body: Graph, **attrs: Any) -> tuple:
    return evaluate_body(xp, body, arrays)


def direct_call(opdef: OpDef, xp: Any, attrs: dict) -> Any:
    """The op's impl bound once: ``f(*arrays, out=o)``. An op whose impl is a plain ufunc of
    the array module (``impl.xp_name``) is that ufunc itself, so a step costs one C call and no
    Python frame; any other impl is bound to ``xp`` and its attrs."""
    name = getattr(opdef.impl, "xp_name", None)
    if name is not None and not attrs:
        return getattr(xp, name)
    return functools.partial(opdef.impl, xp, **attrs)


# NumPy 2.4 deprecates a positional out for these (a third positional argument is to become
# another operand), so they keep the keyword
_KEYWORD_OUT = frozenset({np.maximum, np.minimum})


def out_call(f: str, call: Any, args: Sequence[str], dst: str) -> str:
    """Source of ``call(*args, out=dst)`` under the name ``f``. A ufunc taking exactly these
    inputs gets its output positionally: same result, but no keyword parsing (about 0.04-0.07
    us of a 0.4 us ufunc call on small arrays, NumPy 2.4); anything else keeps the keyword."""
    positional = (
        isinstance(call, np.ufunc)
        and call.nout == 1
        and call.nin == len(args)
        and call not in _KEYWORD_OUT
    )
    return f"{f}({''.join(a + ', ' for a in args)}{'' if positional else 'out='}{dst})"


# A fused group whose iteration space has at most this many elements runs as one unchunked
# evaluation: a generated straight-line function over buffers the runner owns (at most a few
# of 16 KiB each for float32), with no per-call chunk bookkeeping.
SMALL_ELEMENTS = 4096


class _ChunkPlan:
    """A body compiled to a flat list of steps over numbered slots, run once per chunk.

    Slots: the body inputs, then its outputs, then scratch buffers (reused by liveness, in place
    where an input dies), then constants. The iteration space ``shape`` is split on ``axis`` in
    runs of ``step``, outer axes one index at a time.
    """

    def __init__(self, body: Graph, shape: tuple[int, ...], chunk: int) -> None:
        self.body, self.shape = body, shape
        self.axis, inner = 0, 1
        for a in range(len(shape) - 1, -1, -1):
            self.axis = a
            if inner * shape[a] > chunk:
                break
            inner *= shape[a]
        # rows of ``axis`` per chunk: chunk / (elements of one row). When the whole shape fits
        # (no break above) ``inner`` also counts axis 0, so divide by the row size instead
        row = math.prod(shape[self.axis + 1 :])
        self.step = max(1, min(shape[self.axis], chunk // max(row, 1))) if shape else 1
        self.padded = {v: (1,) * (len(shape) - len(v.shape)) + v.shape for v in _values(body)}
        self.cuts = [self._cut(self.padded[v]) for v in (*body.inputs, *body.outputs)]
        self._plan_steps()
        extent = shape[self.axis] if shape else 1
        outer_shape = shape[: self.axis]
        # the chunks, once: (outer index, lo, hi) each
        self.tasks = [
            (outer, lo, min(lo + self.step, extent))
            for outer in (np.ndindex(*outer_shape) if outer_shape else [()])
            for lo in range(0, extent, self.step)
        ]

    def _plan_steps(self) -> None:
        body, nin = self.body, len(self.body.inputs)
        slot = {v: j for j, v in enumerate(body.inputs)}
        outputs = {v: nin + j for j, v in enumerate(body.outputs)}
        last_use: dict[Value, int] = {}
        for i, node in enumerate(body.nodes):
            for v in node.inputs:
                last_use[v] = i
        free: dict[tuple, list[int]] = {}
        self.scratch: list[tuple[tuple[int, ...], np.dtype]] = []
        self.consts: list[Any] = []
        first_scratch = nin + len(body.outputs)
        steps = []
        for i, node in enumerate(body.nodes):
            if node.op == "constant":
                slot[node.output] = -1 - len(self.consts)
                value = np.asarray(node.attrs["value"])
                # A chunk drops the outer axes of the iteration space, so a one-element
                # constant kept at full rank, e.g. (1, 1), would broadcast a (k,) chunk to
                # (1, k): as a 0-d array it broadcasts against any chunk.
                assert value.size == 1, "fused bodies hold only one-element constants"
                self.consts.append(value.reshape(()))
                continue
            for v in dict.fromkeys(node.inputs):  # free inputs that die here: in-place reuse
                k = slot[v]
                if k >= first_scratch and last_use[v] == i:
                    free.setdefault(self._key(v), []).append(k)
            out = node.output
            if out in outputs:
                slot[out] = outputs[out]
            elif free.get(self._key(out)):
                slot[out] = free[self._key(out)].pop()
            else:
                self.scratch.append(self._key(out))
                slot[out] = first_scratch + len(self.scratch) - 1
            call = direct_call(get_op(node.op), np, node.attrs)
            steps.append((call, [slot[v] for v in node.inputs], slot[out]))
        n_slots = first_scratch + len(self.scratch)
        self.steps = [
            (call, tuple(k if k >= 0 else n_slots - 1 - k for k in ins), dst)
            for call, ins, dst in steps
        ]
        self.n_slots = n_slots

    def _key(self, v: Value) -> tuple:
        return (self._chunk_shape(self.padded[v], self.step), v.dtype)

    def _chunk_shape(self, padded: tuple[int, ...], rows: int) -> tuple[int, ...]:
        if not padded:
            return ()
        k = self.axis
        return (rows if padded[k] != 1 else 1, *padded[k + 1 :])

    def _cut(self, padded: tuple[int, ...]):
        """For one value: f(array, outer index, lo, hi) -> the chunk's view of it."""
        k = self.axis
        if not padded:
            return lambda a, outer, lo, hi: a
        keep = [p != 1 for p in padded[:k]]
        if padded[k] == 1:
            return lambda a, outer, lo, hi: a[(*(i if f else 0 for i, f in zip(outer, keep)),)]
        if k == 0:
            return lambda a, outer, lo, hi: a[lo:hi]
        return lambda a, outer, lo, hi: a[
            (*(i if f else 0 for i, f in zip(outer, keep)), slice(lo, hi))
        ]

    def run(self, ins: list, outs: list) -> None:
        body = self.body
        arrays = [a.reshape(self.padded[v]) for a, v in zip(ins, body.inputs)]
        arrays += [o.reshape(self.padded[v]) for o, v in zip(outs, body.outputs)]
        tasks = self.tasks
        workers = min(THREADS, len(tasks) // 8) if THREADS > 1 else 1
        if workers <= 1:
            self._run_tasks(arrays, tasks)
            return
        parts = [
            tasks[k * len(tasks) // workers : (k + 1) * len(tasks) // workers]
            for k in range(workers)
        ]
        futures = [_pool().submit(self._run_tasks, arrays, p) for p in parts[1:]]
        self._run_tasks(arrays, parts[0])
        for f in futures:
            f.result()

    def _run_tasks(self, arrays: list, tasks: list) -> None:
        """Run the steps over the given chunks with this thread's own scratch buffers."""
        bufs = _scratch(self.scratch)
        rows = [b.ndim > 0 and b.shape[0] == self.step and self.step > 1 for b in bufs]
        slots: list[Any] = [None] * len(arrays) + bufs + self.consts
        first = len(arrays)
        steps, current = self.steps, self.step  # the length the scratch slots are cut to
        pairs = list(enumerate(zip(arrays, self.cuts)))
        for outer, lo, hi in tasks:
            for j, (a, cut) in pairs:
                slots[j] = cut(a, outer, lo, hi)
            if hi - lo != current:
                current = hi - lo
                for j, (b, r) in enumerate(zip(bufs, rows)):
                    slots[first + j] = b[:current] if r else b
            for call, src, dst in steps:
                call(*[slots[k] for k in src], out=slots[dst])


_SCRATCH = threading.local()


def _scratch(specs: list) -> list[np.ndarray]:
    """Chunk scratch buffers from a per-thread pool shared by every fused node: nodes run one
    after another on a thread, so the pool costs the largest node's scratch (not the sum) and
    nothing is allocated per call once it has grown."""
    pool: list[np.ndarray] = _SCRATCH.__dict__.setdefault("pool", [])
    views = []
    for j, (shape, dtype) in enumerate(specs):
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if j == len(pool):
            pool.append(np.empty(0, np.uint8))
        if pool[j].nbytes < nbytes:
            pool[j] = np.empty(nbytes, np.uint8)
        views.append(pool[j][:nbytes].view(dtype).reshape(shape))
    return views


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, THREADS - 1), thread_name_prefix="gg-fused")


def _values(body: Graph) -> list[Value]:
    return list(body.values())


def _flat_body_shape(body: Graph) -> tuple[int, ...] | None:
    """(n,) when every value is full-size or one element, so arrays can be viewed as 1-D."""
    n = math.prod(body.outputs[0].shape)
    if all(v.type.size in (n, 1) for v in body.values()):
        return (n,)
    return None


def _prepare_numpy(node: Any, backend: Any):
    body: Graph = node.attrs["body"]
    shape = tuple(body.outputs[0].shape)
    members = [n for n in body.nodes if n.op != "constant"]
    if len(members) == 1 and all(n.op != "constant" for n in body.nodes):
        call = direct_call(get_op(members[0].op), np, members[0].attrs)
        where = [body.inputs.index(v) for v in members[0].inputs]

        def run_single(ins: list, outs: list) -> None:  # one op: one ufunc pass, no chunking
            call(*[ins[k] for k in where], out=outs[0])

        if where == list(range(len(node.inputs))):
            run_single.call = call  # the launch loop may call it directly
        return run_single
    if math.prod(shape) == 0:
        return lambda ins, outs: None  # no elements: nothing to compute
    if math.prod(shape) <= min(SMALL_ELEMENTS, CHUNK_ELEMENTS):  # one chunk: no chunking
        return _straight_line(_ChunkPlan(body, shape, math.prod(shape)))
    flat = _flat_body_shape(body)
    plan_nd = _ChunkPlan(body, shape, CHUNK_ELEMENTS)
    plan_flat = (
        _ChunkPlan(_flat(body, flat), flat, CHUNK_ELEMENTS) if flat and flat != shape else None
    )

    def run(ins: list, outs: list) -> None:
        if plan_flat is not None and all(a.flags.c_contiguous for a in (*ins, *outs)):
            plan_flat.run(ins, outs)
        else:
            plan_nd.run(ins, outs)

    return run


def _straight_line(plan: _ChunkPlan):
    """A one-chunk plan as a generated Python function: one line per member op, the scratch
    buffers and constants bound as globals, so a call costs the ufunc calls and nothing else.
    Inputs and outputs keep their own shapes (broadcasting lines them up with the padded
    scratch buffers, which hold the whole iteration space).

    The runner's ``inline(ins, outs, prefix)`` gives the same lines over the caller's names
    (and the globals they need, prefixed), for a caller that generates code itself."""
    nin, nout = len(plan.body.inputs), len(plan.body.outputs)
    buffers = [np.empty(shape, dtype) for shape, dtype in plan.scratch] + list(plan.consts)

    def inline(ins: list[str], outs: list[str], prefix: str) -> tuple[list[str], dict]:
        names = list(ins) + list(outs) + [f"{prefix}s{j}" for j in range(len(buffers))]
        ns = {f"{prefix}s{j}": b for j, b in enumerate(buffers)}
        lines = []
        for k, (call, src, dst) in enumerate(plan.steps):
            ns[f"{prefix}f{k}"] = call
            lines.append(out_call(f"{prefix}f{k}", call, [names[j] for j in src], names[dst]))
        return lines, ns

    ins = [f"a{k}" for k in range(nin)]
    outs = [f"o{k}" for k in range(nout)]
    lines, ns = inline(ins, outs, "_")
    # (a group can have no array inputs: one op on inlined constants, left on its own when its
    # consumer joined a fused_reduce group with optimize=False)
    unpack = [
        f"    {''.join(a + ', ' for a in names)}= {what}\n"
        for names, what in ((ins, "ins"), (outs, "outs"))
        if names
    ]
    source = "def run(ins, outs):\n" + "".join(unpack) + "".join(f"    {x}\n" for x in lines)
    exec(compile(source, "<gpugraph fused group>", "exec"), ns)
    run = ns["run"]
    run.source = source  # for debugging: what one call does
    run.inline = inline
    return run


def _flat(body: Graph, flat: tuple[int, ...]) -> Graph:
    """The same body with every full-size value 1-D (one-element values become shape ())."""
    from ..ir import GraphBuilder

    def t(v: Value) -> TensorType:
        return TensorType(flat if v.type.size == flat[0] and flat[0] != 1 else (), v.dtype)

    b = GraphBuilder()
    env = {v: b.add_input(t(v)) for v in body.inputs}
    for node in body.nodes:
        attrs = node.attrs
        if node.op == "constant":
            attrs = {"value": np.asarray(attrs["value"]).reshape(())}
        new = b.add_node(
            node.op, [env[v] for v in node.inputs], attrs, [t(o) for o in node.outputs], node.loc
        )
        env.update(zip(node.outputs, new.outputs))
    return b.build([env[v] for v in body.outputs])


def _inplace_ok(node: Any, out: int, inp: int) -> bool:
    """May output ``out`` take over the bytes of input ``inp`` (the memory planner asks)?

    Yes when they have the same shape and no member reads that input after the member that
    writes that output: per element on the GPU (loads precede stores in every thread) and per
    chunk on NumPy (steps run in body order; an op whose ``out=`` is its own input is exact).
    Every input that may share those bytes counts, not only ``inp``: two inputs that are
    reshapes (views) of one value alias each other, and a late reader of either must not see
    the output already written there.
    """
    body: Graph = node.attrs["body"]
    dst = body.outputs[out]
    if dst.node is None:
        return False
    writer = body.nodes.index(dst.node)
    root = _view_root(node.inputs[inp])
    for j, outer in enumerate(node.inputs):
        if j != inp and _view_root(outer) is not root:
            continue
        src = body.inputs[j]
        if src.shape != dst.shape:
            return False
        readers = [i for i, n in enumerate(body.nodes) if src in n.inputs]
        if max(readers, default=-1) > writer:
            return False
    return True


def _view_root(v: Value) -> Value:
    """The value whose bytes ``v`` may share: through reshapes (views in the memory plan)."""
    while v.node is not None and v.node.op == "reshape":
        v = v.node.inputs[0]
    return v


@functools.cache
def _raw_kernel(source: str, name: str) -> Any:
    import cupy

    from ..device import cuda_include_options  # cuda_fp16.h for float16 kernels

    return cupy.RawKernel(source, name, options=("--std=c++17", *cuda_include_options()))


@functools.cache
def _sm_count(device_id: int) -> int:
    import cupy

    return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])


def staged_targets(xp: Any, outs: list) -> list:
    """Where a kernel writes each output: the output itself when C-contiguous, else a
    contiguous stand-in that ``copy_back`` copies into it (kernels index flat)."""
    return [o if o.flags.c_contiguous else xp.empty(o.shape, o.dtype) for o in outs]


def copy_back(outs: list, targets: list) -> None:
    """The stand-ins ``staged_targets`` made, copied into their outputs."""
    for o, t in zip(outs, targets):
        if o is not t:
            o[...] = t


def members_runner(xp: Any, body: Graph):
    """A runner evaluating ``body`` op by op with ``xp`` (a group no kernel rendered)."""

    def run_ops(ins: list, outs: list) -> None:
        for o, r in zip(outs, evaluate_body(xp, body, ins)):
            o[...] = r

    return run_ops


def launch_config(n: int, sm_count: int, lanes: int = 1) -> tuple[int, int]:
    """(grid, block) for a grid-stride loop over n elements, ``lanes`` per thread and step, on a
    device with sm_count SMs."""
    return max(1, min(-(-n // (BLOCK * lanes)), sm_count * BLOCKS_PER_SM)), BLOCK


def _prepare_cupy(node: Any, backend: Any):
    import cupy

    kernel = _raw_kernel(node.attrs["cuda_source"], node.attrs["kernel_name"])
    n = node.outputs[0].type.size
    grid, block = launch_config(n, _sm_count(cupy.cuda.Device().id), node.attrs["lanes"])

    def run(ins: list, outs: list) -> None:  # called inside `with stream:`: launches on it
        if n == 0:
            return
        args = [cupy.ascontiguousarray(a) for a in ins]
        targets = staged_targets(cupy, outs)
        kernel((grid,), (block,), (*args, *targets))
        copy_back(outs, targets)

    return run


FUSED = register(
    OpDef(
        "fused",
        "internal",
        _infer,
        _impl,
        differentiable=False,
        doc="a fused group of elementwise ops (see gpugraph.passes.fuse)",
        extra={"prepare": {"numpy": _prepare_numpy, "cupy": _prepare_cupy}, "inplace": _inplace_ok},
    )
)
