"""The ops a native loop (``loop_native.py``) computes, and the scratch and helper
bookkeeping every emitter shares (``Emitter``).

Each emitter adds a ``static`` helper function to the loop's source (``Emitter.helper``) and
returns its name, or raises UnsupportedError naming what it cannot express. Here:

* ``fused``: one plain ``__restrict`` loop where every input is full-size or one element
  (``flat``); otherwise the group's broadcast loop nest (``cpu_loops``) or its CUDA kernel
  under the CPU prelude, called through ``gg_loop_invoke`` (``kernel_of``);
* ``fused_reduce``: the cpu backend's row kernel (``cpu_reduce``), likewise;

Elsewhere: ``matmul`` in ``loop_native_matmul.py`` (BLAS gemm calls or plain loops), ``sum``
and ``fused_grid_reduce`` in ``loop_native_reduce.py``, gathers, their scatter-add gradient,
slices and broadcasts in ``loop_native_index.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Value
from ..ops.row_space import Space
from .cpu_loops import emit_cpu_kernel
from .cpu_reduce import cpu_row_kernel
from .cuda import _body_lines, c_type, op_template

ALIGN = 64  # bytes; every scratch slot starts on a vector (and cache line) boundary
DTYPES = {np.dtype(t) for t in ("float32", "float64", "int32", "int64", "bool")}
HELPER_NAME = "GG_HELPER_NAME"


@dataclass
class Emitter:
    """Scratch slots, helper functions and constants shared by every body of one loop."""

    scratch: int = 0
    helpers: list[str] = field(default_factory=list)
    consts: list[np.ndarray] = field(default_factory=list)
    nodes: int = 0
    depth: int = 0  # loops entered (a nested loop's variables carry its depth)
    scratch_names: int = 0  # local variables made so far (take's index and row)
    # BLAS: the C type of its integers ("long long" for an ILP64 library, "int"), or None
    # where none is usable; ``gemm_slot``: the index in ``consts`` of the int64 array of
    # [sgemm, dgemm] addresses the runner fills (added on first use)
    blas_int: str | None = None
    gemm_slot: int | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)  # a helper's extra arguments

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


def flat(body: Graph, em: Emitter) -> str | None:
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


def kernel_of(node, em: Emitter) -> tuple[str, int]:
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


# statuses of a loop stopped early: past its max_steps (the runner raises LoopLimitError), or
# by an error the host-driven loop raises itself (a take index out of range, an inner loop past
# its max_steps: the runner reruns the loop host-driven)
PAST_MAX_STEPS, RERUN_HOST = -1, -2
