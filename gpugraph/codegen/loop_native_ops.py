"""The ops a native loop (``loop_native.py``) computes, and the scratch and helper
bookkeeping every emitter shares (``Emitter``).

Each emitter adds a ``static`` helper function to the loop's source (``Emitter.helper``) and
returns its name, or raises UnsupportedError naming what it cannot express. Here:

* ``fused``: one plain ``__restrict`` loop where every input is full-size or one element
  (``flat``); otherwise the group's broadcast loop nest (``cpu_loops``) or its CUDA kernel
  under the CPU prelude, called through ``gg_loop_invoke`` (``kernel_of``);
* ``fused_reduce``: the cpu backend's row kernel (``cpu_reduce``), likewise;
* ``take``: a row by a scalar index as a pointer into the array, any other gather as a copy
  loop in the function's own lines; ``slice``: one contiguous block, as a pointer (no helper).

Elsewhere: ``matmul`` in ``loop_native_matmul.py`` (BLAS gemm calls or plain loops), ``sum``
and ``fused_grid_reduce`` in ``loop_native_reduce.py``.
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
from .cuda import _body_lines, c_strides, c_type, op_template

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


def take_row(node, names: dict, lines: list[str], em: Emitter) -> str:
    """A gather by ``take``: a row of a contiguous array by a scalar index on axis 0 (the loop
    counter's ``xs[i]``) is a pointer into it, no copy; any other (an index array, another
    axis) copies each indexed block into the output's slot. An index out of range under
    mode="raise" stops the loop with status RERUN_HOST (the runner then reruns it
    host-driven, which raises NumPy's error)."""
    a, idx = node.inputs
    axis = node.attrs["axis"]
    d = a.shape[axis] if a.shape else 0
    if idx.dtype.kind not in "iu" or d == 0:
        raise UnsupportedError(f"take of {a.type} by {idx.type} on axis {axis}")
    k = em.scratch_names
    em.scratch_names += 1
    rule = TAKE_INDEX[node.attrs.get("mode", "raise")].format(k=k, d=d, bad=RERUN_HOST)
    it = c_type(idx.dtype)
    if idx.shape == () and axis == 0:
        lines.append(f"long long i{k} = (long long)*(const {it}*){names[idx]};")
        lines += rule.splitlines()
        lines.append(f"char* const r{k} = (char*){names[a]} + i{k} * {a.type.nbytes // d}LL;")
        return f"r{k}"
    out = em.slot(node.output)
    pre = int(np.prod(a.shape[:axis]))
    block = int(np.prod(a.shape[axis + 1 :])) * a.dtype.itemsize  # bytes per indexed block
    n = idx.type.size
    lines += [
        f"for (long long p{k} = 0; p{k} < {pre}LL; ++p{k}) {{",
        f"  for (long long j{k} = 0; j{k} < {n}LL; ++j{k}) {{",
        f"    long long i{k} = (long long)((const {it}*){names[idx]})[j{k}];",
        *("    " + x for x in rule.splitlines()),
        f"    std::memcpy((char*){out} + (p{k} * {n}LL + j{k}) * {block}LL,",
        f"                (const char*){names[a]} + (p{k} * {d}LL + i{k}) * {block}LL, {block});",
        "  }",
        "}",
    ]
    return out


def slice_view(node, names: dict) -> str:
    """A static slice that is one contiguous block of its input (``x[0]``, ``x[2:5]``,
    ``x[1, 2:4]`` of a row-major array): a pointer into it, no copy. Others raise
    UnsupportedError."""
    a = node.inputs[0]
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    out = node.output.shape
    # one block: one index on every axis before the first it takes more of, unit steps there,
    # and every later axis whole
    f = next((k for k, n in enumerate(out) if n != 1), len(out))
    block = f == len(out) or (
        steps[f] == 1 and all(out[k] == a.shape[k] for k in range(f + 1, len(out)))
    )
    if not block:
        raise UnsupportedError(f"slice of {a.type} to {node.output.type} (not one block)")
    offset = sum(int(b) * st for b, st in zip(starts, c_strides(a.shape))) * a.dtype.itemsize
    return f"((char*){names[a]} + {offset}LL)"
