"""backend="cpu" runners of while/scan nodes: the whole loop as one native function.

Where every op of a loop's bodies is one ``codegen/loop_native.py`` can express, the region
runs as one call of a generated C++ function holding all its iterations (compiled in the
backend's batch, called through the extension entry point with the arrays themselves): no
Python per iteration. Other loops keep the host-driven runner (``region_exec``), and
``explain()`` says why (``native_note``). The runners subclass the host ones: the body plans
stay compiled (explain() shows them, the race checker replays them), and a runner whose
``native`` is None (a simulated copy, ``backends/sim.py``) runs host-driven.

Set ``GPUGRAPH_CPU_LOOPS=host`` to keep every loop host-driven (for A/B measurements).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import numpy as np

from ..codegen.loop_native import RERUN_HOST, NativeLoop, emit_native_loop, loop_graphs
from ..errors import UnsupportedError
from ..ir import Graph, Node
from ..ops.control import loop_limit_error
from ..ops.fused import copy_back, staged_targets
from ..ops.registry import get_op
from ..region_body import planned
from ..region_exec import ScanRunner, WhileRunner
from . import blas
from .cpu_backend import CpuBackend
from .cpu_loop_blas import gemm
from .cpu_native import parallel_min
from .cpu_select import float_to_int_cast

LOOPS_ENV = "GPUGRAPH_CPU_LOOPS"


def _refusal(graph: Graph) -> str | None:
    """Why a body cannot be native beyond what the codegen checks: a float -> int cast in a
    fused group (undefined in C where NumPy's result is defined), in nested regions too."""
    for n in graph.nodes:
        if n.op in ("cond", "while", "scan"):
            why = next((r for r in map(_refusal, loop_graphs(n)) if r), None)
            if why:
                return why
        if n.op in ("fused", "fused_reduce", "fused_grid_reduce"):
            why = float_to_int_cast(n.attrs["body"])
            if why:
                return why
    return None


# (node id, loop mode, parallel_min, BLAS found) -> (node, result): the parent's memory plan
# asks first (``child_bytes``), the runner then builds on the same answer; the node is held so
# its id stays its
_DECIDED: OrderedDict[tuple, tuple[Node, tuple[NativeLoop | None, str]]] = OrderedDict()
_DECIDED_MAX = 256


def native_loop(node: Node) -> tuple[NativeLoop | None, str]:
    """(the generated loop, an explain() note), or (None, why it stays host-driven)."""
    mode = os.environ.get(LOOPS_ENV, "native").strip().lower()
    found = gemm()
    key = (id(node), mode, parallel_min(), found is not None)
    hit = _DECIDED.get(key)
    if hit is not None and hit[0] is node:
        return hit[1]
    result = _decide(node, mode, found)
    _DECIDED[key] = (node, result)
    if len(_DECIDED) > _DECIDED_MAX:
        _DECIDED.popitem(last=False)
    return result


def child_bytes(node: Node) -> int:
    """The parent arena range a region node's bodies need on this backend: none for a loop
    that runs as one native function (its scratch is its own allocation; should the loop run
    host-driven, to raise an error the host loop reports, its body plans allocate their own
    arenas then), else the largest body arena planned for this backend."""
    if node.op in ("while", "scan") and native_loop(node)[0] is not None:
        return 0
    return max((planned(g, 1, "cpu")[2].arena_bytes for g in loop_graphs(node)), default=0)


def _decide(node: Node, mode: str, found: Any) -> tuple[NativeLoop | None, str]:
    if mode == "host":
        return None, f"host-driven ({LOOPS_ENV}=host)"
    why = next((r for r in map(_refusal, loop_graphs(node)) if r), None)
    if why is None:
        try:
            loop = emit_native_loop(node, parallel_min(), found.blas_int if found else None)
        except UnsupportedError as exc:
            why = str(exc)
        else:
            if loop.gemm_slot is not None and found is not None:
                loop.consts[loop.gemm_slot][:] = found.addresses

            calls_blas = ", matmuls through BLAS" if loop.gemm_slot is not None else ""
            return loop, (
                f"compiled: one native function runs every iteration ({loop.nodes} body "
                f"kernel(s), {loop.scratch_bytes} B of carries and body values{calls_blas})"
            )
    return None, f"host-driven, not compiled: {why}"


class _Native:
    """The native part of a loop runner (mixed into the host runners)."""

    node: Node
    backend: Any
    trips: int | None
    max_steps: int | None = None
    loc: str | None = None

    def build(self, node: Node, backend: CpuBackend, host_init: Any) -> None:
        """``host_init`` (the host runner's __init__, which compiles the body plans), then the
        native function. The body plans of a native loop run only in its host-driven fallback:
        their kernels are deferred (``CpuBackend.deferred``) and compile when a body plan's
        program is first made, not at ``lower()``."""
        loop, self.native_note = native_loop(node)
        self.deferred: list | None = None
        if loop is None:
            host_init(self, node, backend)
        else:
            with backend.deferred() as self.deferred:
                host_init(self, node, backend)
            for plan in self.plans.values():
                plan.executable.cpu_deferred = self.deferred
        self.setup_native(loop)

    def setup_native(self, loop: NativeLoop | None) -> None:
        self.native: Any = None
        self.gemm_policy: Any = None
        if loop is None:
            return
        args = [(v.dtype.name, v.type.size, False) for v in self.node.inputs]
        args += [(v.dtype.name, v.type.size, True) for v in self.node.outputs]
        args += [(c.dtype.name, c.size, False) for c in loop.consts]
        args += [("uint8", max(loop.scratch_bytes, 1), True), ("int64", 1, True)]
        self.native = self.backend.kernel(loop.source, loop.name, len(args), args, n=1)
        # a loop calling BLAS sets its thread policy once around the call, as host loops do
        self.gemm_policy = blas.policy() if loop.gemm_slot is not None else None
        self.consts = loop.consts
        self.scratch = np.zeros(max(loop.scratch_bytes, 1), np.uint8)
        self.status = np.zeros(1, np.int64)

    def buffer_bytes(self) -> int:  # a native loop's carries are in its scratch (the note)
        return 0 if self.native is not None else super().buffer_bytes()  # type: ignore[misc]

    def _blas_policy(self) -> Any:
        return None if self.native is not None else super()._blas_policy()  # type: ignore[misc]

    def __call__(self, ins: list, outs: list) -> None:
        # a native loop skips the host runner's CUDA-capture check (NumPy arrays only) and
        # the body plans' BLAS policy: its GEMMs run under its own (gemm_policy)
        if self.native is None:
            return super().__call__(ins, outs)  # type: ignore[misc]
        blas.run_small(self.gemm_policy, self.run, ins, outs)

    def run(self, ins: list, outs: list) -> None:
        k = self.native
        if k is None:
            return super().run(ins, outs)  # type: ignore[misc]
        if k.fn is None:
            self.backend.compile_pending()
        args = [*ins, *outs, *self.consts, self.scratch, self.status]
        if k.py is None or not k.py(*args):
            self._run_ctypes(ins, outs)
        steps = int(self.status[0])
        if steps == RERUN_HOST:  # the host-driven loop raises the error itself (take's, ...)
            return super().run(ins, outs)  # type: ignore[misc]
        if steps < 0:
            raise loop_limit_error(self.max_steps, self.loc)
        self.trips = steps

    def _run_ctypes(self, ins: list, outs: list) -> None:
        """The ctypes entry on contiguous copies (an input that is a NumPy scalar, a view)."""
        types = [v.type for v in self.node.inputs]
        arrays = [np.ascontiguousarray(x, t.dtype).reshape(t.shape) for x, t in zip(ins, types)]
        targets = staged_targets(np, outs)
        ptrs = [a.ctypes.data for a in (*arrays, *targets, *self.consts)]
        self.native.fn(1, 1, *ptrs, self.scratch.ctypes.data, self.status.ctypes.data)
        copy_back(outs, targets)


class NativeScanRunner(_Native, ScanRunner):
    def __init__(self, node: Node, backend: CpuBackend) -> None:
        self.build(node, backend, ScanRunner.__init__)


class NativeWhileRunner(_Native, WhileRunner):
    def __init__(self, node: Node, backend: CpuBackend) -> None:
        self.build(node, backend, WhileRunner.__init__)


def _install() -> None:
    for op, runner in (("scan", NativeScanRunner), ("while", NativeWhileRunner)):
        get_op(op).extra.setdefault("prepare", {})["cpu"] = runner
    for op in ("cond", "scan", "while"):  # a cond's branches may hold native loops
        get_op(op).extra.setdefault("scratch_bytes_on", {})["cpu"] = child_bytes


_install()
