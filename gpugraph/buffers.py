"""Buffers the caller hands over: donated inputs (``donate_argnums``) and ``out=``.

Donation, as in JAX: ``gg.jit(f, donate_argnums=0)`` gives the first argument's memory to the
call, which may write an output into it instead of a fresh buffer. Which output may take which
donated input is decided once per plan (``donation_pairs``): the same shape and dtype, and every
read of the input (through views too) happens before the output's first write, or in that very
launch when the op reads each element before writing it (an elementwise op, or a fused group
that allows that pair in place). At call time an input is used only if it is a writeable,
C-contiguous array of the backend that shares no memory with another argument; otherwise that
output gets a fresh buffer, as without donation.

After the call a donated array is *consumed*, whether or not its bytes were used: its contents
are unspecified (they may hold an output), NumPy marks it read-only (writing to it raises), and
passing it to a compiled gpugraph function again raises ``DonationError``. A donated output is a
new array object over the donated bytes, so the usual loop ``params = step(params, batch)``
donates the previous step's results. NumPy cannot stop a plain read of a consumed array (JAX
deletes it); reading one is the caller's bug, which the read-only flag and the error on reuse
make hard to miss. Views of a donated array that the caller made before the call see the
outputs too: donation hands over the memory, not one Python object.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

from .errors import DonationError, GpuGraphError
from .ir import Graph, Value
from .memory import MemoryPlan, inplace_safe
from .memory_order import view_root
from .ops.registry import get_op
from .schedule import Schedule

# id(array) -> weak reference, for every consumed (donated) array still alive
_CONSUMED: dict[int, Any] = {}


def donation_pairs(
    graph: Graph,
    sched: Schedule,
    plan: MemoryPlan,
    donated: frozenset[int],
    fresh_at: dict[int, Value],
) -> dict[int, int]:
    """output position -> donated input index, for the outputs that may be written into a
    donated input's buffer (see the module docstring)."""
    if not donated:
        return {}
    readers: dict[Value, list[int]] = {}
    for i, step in enumerate(sched.steps):
        for v in step.node.inputs:
            readers.setdefault(view_root(plan.slots, v), []).append(i)
    pairs: dict[int, int] = {}
    for k in sorted(donated):
        u = graph.inputs[k]
        if u in graph.outputs:  # returned as is: its copy is taken after the launches
            continue
        for p, v in fresh_at.items():
            if p in pairs or v.type.shape != u.type.shape or v.type.dtype != u.type.dtype:
                continue
            if _safe(sched, plan, readers.get(u, []), u, v):
                pairs[p] = k
                break
    return pairs


def _safe(sched: Schedule, plan: MemoryPlan, reads: list[int], u: Value, v: Value) -> bool:
    w = plan.slots[v].first
    node = sched.steps[w].node
    for r in reads:
        if r == w:
            if not _inplace_pair(plan, node, u, v):
                return False
        elif not sched.happens_before(r, w):
            return False
    return True


def _inplace_pair(plan: MemoryPlan, node: Any, u: Value, v: Value) -> bool:
    """May ``node`` write output ``v`` over input ``u`` that it also reads?"""
    if not inplace_safe(node):
        return False
    k = node.outputs.index(v)
    rule = get_op(node.op).extra.get("inplace")
    for j, x in enumerate(node.inputs):
        if view_root(plan.slots, x) is not u:
            continue
        if x.type.shape != v.type.shape or x.type.dtype.itemsize != v.type.dtype.itemsize:
            return False
        if callable(rule) and not rule(node, k, j):
            return False
    return True


# -- at call time -------------------------------------------------------------------------------
def check_live(leaves: list[Any], names: list[str]) -> None:
    """Raise if an argument is an array consumed by an earlier donation."""
    for name, x in zip(names, leaves):
        ref = _CONSUMED.get(id(x))
        if ref is not None and ref() is x:
            raise DonationError(
                f"argument {name} was donated to an earlier call (donate_argnums) and may now "
                "hold that call's outputs; pass a live array instead (for example the earlier "
                "call's result), or do not donate it"
            )


def donated_outputs(
    backend: Any, args: list[Any], pairs: dict[int, int], n_out: int
) -> list[Any] | None:
    """One buffer (a view of a donated input) or None per output, or None if none is usable."""
    outs: list[Any] = [None] * n_out
    used = False
    for p, k in pairs.items():
        a = args[k]
        if not _donatable(backend, a):
            continue
        if any(j != k and backend.may_share_memory(a, b) for j, b in enumerate(args)):
            continue  # the same memory passed twice: the other argument still reads it
        outs[p], used = a.view(), True
    return outs if used else None


def _donatable(backend: Any, a: Any) -> bool:
    if not backend.is_native(a) or not a.flags.c_contiguous:
        return False
    return bool(getattr(a.flags, "writeable", True))


def consume(backend: Any, leaves: list[Any], donated: frozenset[int]) -> None:
    """Mark the donated arguments of a finished call as consumed."""
    for k in donated:
        a = leaves[k]
        if not backend.is_native(a):
            continue  # converted on the way in (a list, a number): the caller has no alias
        if hasattr(a.flags, "writeable"):
            a.flags.writeable = False
        key = id(a)
        try:
            _CONSUMED[key] = weakref.ref(a, functools.partial(_forget, key))
        except TypeError:  # an array type without weak references: no reuse check for it
            pass


def _forget(key: int, _ref: Any) -> None:
    _CONSUMED.pop(key, None)


def check_out(backend: Any, out_leaves: list[Any], types: list[Any], args: list[Any]) -> list[Any]:
    """Validate ``out=`` buffers: one per output, of the backend, exact shape and dtype,
    writeable, overlapping no argument and no other out buffer."""
    if len(out_leaves) != len(types):
        raise GpuGraphError(
            f"out= must hold one array per output ({len(types)}), got {len(out_leaves)}"
        )
    for p, (o, t) in enumerate(zip(out_leaves, types)):
        what = f"out[{p}]" if len(types) > 1 else "out"
        if not backend.is_native(o):
            raise GpuGraphError(f"{what} must be a {backend.name} array, got {type(o).__name__}")
        if tuple(o.shape) != t.shape or o.dtype != t.dtype:
            raise GpuGraphError(
                f"{what} must have shape {t.shape} and dtype {t.dtype} (the output's), "
                f"got {tuple(o.shape)} {o.dtype}"
            )
        if not getattr(o.flags, "writeable", True):
            raise GpuGraphError(f"{what} is read-only")
        for j, x in enumerate([*args, *out_leaves[:p]]):
            if backend.is_native(x) and backend.may_share_memory(o, x):
                other = f"argument {j}" if j < len(args) else f"out[{j - len(args)}]"
                raise GpuGraphError(
                    f"{what} shares memory with {other}; outputs are written while inputs "
                    "are still read, so out= buffers must not overlap them (donate the "
                    "argument instead with donate_argnums)"
                )
    return out_leaves
