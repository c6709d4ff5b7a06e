"""The CPU backend: NumPy, one implicit stream.

Its ``program`` turns an Executable's launch list into one generated Python function, so that a
call costs the array operations and little else: every launch's callable (a ufunc, a bound impl
or a runner), every arena view and every constant is bound once as a global of that function;
only the inputs and the output buffers are its parameters. A launch whose runner has a
``call`` attribute (``f(*ins, out=o)``) is called directly; one with an ``inline`` method (a
small fused group) contributes its own lines; others get ``runner(ins, outs)``. The program's
own ``inline`` gives its lines over a caller's names, so that a region's generated loop driver
(region_exec) holds its body's lines instead of calling it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ops.registry import get_op
from . import blas
from .base import Backend, register_backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def program(self, executable: Any) -> Callable[..., list]:
        return make_program(executable)


def make_program(ex: Any) -> Callable[..., list]:
    """``f(*inputs, *outs)``: one call of ``ex`` as straight-line Python. ``outs`` is optional
    (each a buffer to write that output into, or None for a fresh one).

    ``f.inline(ins, outs, prefix)`` gives the same lines over a caller's names (``outs``: names
    of buffers that exist) and the globals they need, for a caller that generates code itself
    (a region's loop driver); it leaves the BLAS thread policy to that caller."""
    params = [f"i{k}" for k in range(len(ex.graph.inputs))]
    results = [f"r{p}" for p in range(len(ex.graph.outputs))]
    lines, ns, gemms, switches = _emit(ex, params, results, "_", given=False)
    blas_policy = blas.policy()
    # the BLAS thread policy, restored on the way out; a region body with small GEMMs only
    # leaves it to its region, which sets it once per run instead of twice an iteration
    scoped = bool(gemms and blas_policy is not None and (ex.blas_scope or switches))
    if scoped:
        ns.update(_get=blas.get_threads, _set=blas.set_threads)
        small = blas_policy.small or "_caller"
        lines = (
            ["_caller = _get()", f"_set({small})", "try:"]
            + ["    " + line for line in lines]
            + ["finally:", "    _set(_caller)"]
        )
    signature = ", ".join(params + [f"{r}=None" for r in results])
    body = "".join(f"    {line}\n" for line in lines)
    source = f"def program({signature}):\n{body}    return [{', '.join(results)}]\n"
    exec(compile(source, "<gpugraph program>", "exec"), ns)
    program = ns["program"]
    program.source = source  # what one call does, for debugging and tests
    program.gemms, program.blas_scoped = gemms, scoped
    program.inline = lambda ins, outs, prefix: _emit(ex, ins, outs, prefix, given=True)[:2]
    return program


def _emit(
    ex: Any, ins: list[str], outs: list[str], prefix: str, given: bool
) -> tuple[list[str], dict, int, bool]:
    """The lines of one call of ``ex`` over input names ``ins`` and output names ``outs``
    (None there means a fresh buffer, unless ``given``), every other name prefixed; and the
    globals, the GEMM count and whether a GEMM switches the BLAS thread count."""
    graph, fixed = ex.graph, ex.fixed
    ns: dict[str, Any] = {f"{prefix}copy": np.array, f"{prefix}copyto": np.copyto}
    name: dict[Any, str] = {}
    for j, (v, array) in enumerate(fixed.items()):
        name[v] = f"{prefix}k{j}"
        ns[name[v]] = array
    name.update(zip(graph.inputs, ins))
    lines: list[str] = []
    blas_policy, gemms, switches = blas.policy(), 0, False
    for p, v in ex.fresh_at.items():
        if not given:
            ns[f"{prefix}e{p}"] = functools.partial(np.empty, v.type.shape, v.type.dtype)
            lines.append(f"if {outs[p]} is None: {outs[p]} = {prefix}e{p}()")
        name[v] = outs[p]
    for k, launch in enumerate(ex.launches):
        args = [name[v] for v in launch.inputs]
        if launch.runner is None:  # a view made per call (of an input or an output)
            out = launch.outputs[0]
            if out not in fixed:
                name[out] = f"{prefix}v{k}"
                lines.append(f"{prefix}v{k} = {args[0]}.reshape({tuple(out.type.shape)!r})")
            continue
        dests = [name[v] for v in launch.outputs]
        call = getattr(launch.runner, "call", None)
        inline = getattr(launch.runner, "inline", None)
        if inline is not None:  # a generated runner: its lines, over this program's names
            more, globs = inline(args, dests, f"{prefix}g{k}_")
            ns.update(globs)
            lines.extend(more)
            continue
        f = f"{prefix}f{k}"
        if call is not None and len(dests) == 1:
            ns[f] = call
            line = f"{f}({''.join(a + ', ' for a in args)}out={dests[0]}"
            if launch.scratch is not None:  # the plan's scratch range for this step
                ns[f"{prefix}s{k}"] = ex.scratch_of(launch)
                line += f", scratch={prefix}s{k}"
            line += ")"
        else:
            ns[f] = launch.runner
            line = f"{f}([{', '.join(args)}], [{', '.join(dests)}])"  # Runner takes lists
        node = ex.schedule.steps[launch.step].node
        flops = get_op(node.op).extra.get("flops")
        if flops is not None and blas_policy is not None:
            gemms += 1
            switched = _with_threads(line, blas_policy, flops(node))
            switches |= switched != line  # a big GEMM: it restores the caller's count
            line = switched
        lines.append(line)
    for p, v in enumerate(graph.outputs):
        if ex.fresh_at.get(p) is not v:  # an input, a constant, a view or a repeat: a copy
            r = outs[p]
            if not given:
                lines.append(f"if {r} is None: {r} = {prefix}copy({name[v]})")
                lines.append(f"else: {prefix}copyto({r}, {name[v]})")
            else:
                lines.append(f"{prefix}copyto({r}, {name[v]})")
    return lines, ns, gemms, switches


def _with_threads(line: str, policy: blas.Policy, flops: int) -> str:
    """``line`` (a GEMM) under the policy: the program runs on ``policy.small`` threads, so a
    GEMM that gets another count switches around its call."""
    want = policy.big if flops >= blas.BIG_FLOPS else policy.small
    if want == policy.small:
        return line
    return f"_set({want or '_caller'}); {line}; _set({policy.small or '_caller'})"


register_backend("numpy", NumpyBackend)
