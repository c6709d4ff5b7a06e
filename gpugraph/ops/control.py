"""Region ops: ``cond``, ``while`` and ``scan`` hold sub-``Graph``s in their attrs.

Input layouts (every outer value a body reads is an explicit input; no hidden closure):

* ``cond``:  inputs ``[index, *operands, *consts]``; attrs ``branches`` (a tuple of Graphs,
  each taking ``operands + consts``); ``index`` is an int32 scalar, clamped into range.
* ``while``: inputs ``[*carries, *consts]``; attrs ``cond_graph`` (carries + consts -> bool
  scalar), ``body_graph`` (carries + consts -> carries), ``n_carry``, ``max_steps`` (None or
  an int; exceeding it at run time raises).
* ``scan``:  inputs ``[*carries, *xs, *consts]``; attrs ``body`` (carries + one slice of each
  x + consts -> carries + one slice of each y), ``n_carry``, ``n_xs``, ``length``, ``reverse``.
  Outputs ``[*carries, *ys]`` with each y stacked along a new leading axis of ``length``.

``impl`` interprets the sub-graph node by node with each op's impl (the eager path and
constant folding use it); compiled plans lower region nodes through ``extra["prepare"]``
(installed by gpugraph.region_exec), which runs each body's own compiled plan. The AD rules
build new region nodes with the public control-flow functions; they import them lazily because
those live above the op layer (they trace and differentiate Python functions).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GpuGraphError, ShapeError
from ..ir import Graph, TensorType
from .core import run_node_impl
from .registry import OpDef, register

REGION_OPS = ("cond", "while", "scan")


class LoopLimitError(GpuGraphError):
    """A while_loop ran past its ``max_steps`` at run time."""


def sub_graphs(attrs: dict) -> list[Graph]:
    """Every Graph an attribute dict holds (directly or in a tuple/list)."""
    found = []
    for a in attrs.values():
        for sub in a if isinstance(a, (tuple, list)) else (a,):
            if isinstance(sub, Graph):
                found.append(sub)
    return found


def _strong(types) -> list[TensorType]:
    return [t.strong() for t in types]


def _types(vals) -> list[TensorType]:
    return _strong(v.type for v in vals)


def _check_inputs(what: str, graph: Graph, types: list[TensorType]) -> None:
    if _types(graph.inputs) != _strong(types):
        got = ", ".join(map(str, _strong(types)))
        want = ", ".join(map(str, _types(graph.inputs)))
        raise ShapeError(f"{what} takes ({want}) but the node gives it ({got})")


# -- interpreter ------------------------------------------------------------------------------
def run_graph(xp: Any, graph: Graph, args: list) -> list:
    """Evaluate ``graph`` on arrays with each op's impl (nested regions recurse)."""
    env = dict(zip(graph.inputs, args))
    for node in graph.nodes:
        outs = run_node_impl(xp, node.op, [env[v] for v in node.inputs], node.attrs)
        for v, r in zip(node.outputs, outs):
            if isinstance(r, np.generic) or getattr(r, "dtype", None) != v.type.dtype:
                r = xp.asarray(r).astype(v.type.dtype)
            env[v] = r
    return [env[v] for v in graph.outputs]


def clamp_index(i: int, n: int) -> int:
    return min(max(int(i), 0), n - 1)


def loop_limit_error(max_steps: int, loc: str | None) -> LoopLimitError:
    return LoopLimitError(
        f"while_loop ran past max_steps={max_steps} (at {loc}): its condition was still true "
        "after that many iterations; raise max_steps or check the loop's condition"
    )


# -- cond ------------------------------------------------------------------------------------
def _cond_infer(types, branches, _loc=None) -> list[TensorType]:
    idx = types[0]
    if idx.shape != () or idx.dtype != np.int32:
        raise ShapeError(f"cond: the branch index must be an int32 scalar, got {idx}")
    outs = None
    for k, g in enumerate(branches):
        _check_inputs(f"cond branch {k}", g, types[1:])
        t = _types(g.outputs)
        if outs is not None and t != outs:
            raise ShapeError(f"cond: branch {k} returns {t} but branch 0 returns {outs}")
        outs = t
    # weakly typed (a Python number) where every branch returns it weak, as JAX's cond does
    weak = [all(g.outputs[i].type.weak for g in branches) for i in range(len(outs))]
    return [TensorType(t.shape, t.dtype, weak=True) if w else t for t, w in zip(outs, weak)]


def _cond_impl(xp, index, *operands, branches, _loc=None):
    out = run_graph(xp, branches[clamp_index(index, len(branches))], list(operands))
    return tuple(xp.array(o, copy=True) if any(o is a for a in operands) else o for o in out)


def _weak_carries(carry: list[TensorType], body: Graph) -> list[TensorType]:
    """A carry the body was traced with as weakly typed (it started as a Python number) leaves
    the loop weakly typed too, as in JAX, so ``f32_array * counter`` stays float32."""
    return [
        TensorType(t.shape, t.dtype, weak=True) if v.type.weak else t
        for t, v in zip(carry, body.inputs)
    ]


# -- while -----------------------------------------------------------------------------------
def _while_infer(types, cond_graph, body_graph, n_carry, max_steps=None, _loc=None):
    _check_inputs("while_loop condition", cond_graph, types)
    _check_inputs("while_loop body", body_graph, types)
    carry = _strong(types[:n_carry])
    (pred,) = _types(cond_graph.outputs)
    if pred != TensorType((), np.bool_):
        raise ShapeError(f"while_loop: the condition must return a bool scalar, got {pred}")
    if _types(body_graph.outputs) != carry:
        raise ShapeError(
            f"while_loop: the body returns {_types(body_graph.outputs)} for carries {carry}"
        )
    return _weak_carries(carry, body_graph)


def _while_impl(xp, *ins, cond_graph, body_graph, n_carry, max_steps=None, _loc=None):
    carry, consts = list(ins[:n_carry]), list(ins[n_carry:])
    steps = 0
    while bool(run_graph(xp, cond_graph, carry + consts)[0]):
        if max_steps is not None and steps >= max_steps:
            raise loop_limit_error(max_steps, _loc)
        carry = run_graph(xp, body_graph, carry + consts)
        steps += 1
    return tuple(xp.array(c, copy=True) if any(c is a for a in ins) else c for c in carry)


# -- scan ------------------------------------------------------------------------------------
def _scan_infer(types, body, n_carry, n_xs, length, reverse=False, _loc=None):
    carry = _strong(types[:n_carry])
    xs = types[n_carry : n_carry + n_xs]
    for k, t in enumerate(xs):
        if not t.shape or t.shape[0] != length:
            raise ShapeError(f"scan: xs[{k}] has shape {t.shape}, expected leading axis {length}")
    sliced = [TensorType(t.shape[1:], t.dtype) for t in xs]
    _check_inputs("scan body", body, carry + sliced + list(types[n_carry + n_xs :]))
    outs = _types(body.outputs)
    if outs[:n_carry] != carry:
        raise ShapeError(f"scan: the body returns carries {outs[:n_carry]} for {carry}")
    ys = [TensorType((length, *t.shape), t.dtype) for t in outs[n_carry:]]
    return _weak_carries(carry, body) + ys


def _scan_impl(xp, *ins, body, n_carry, n_xs, length, reverse=False, _loc=None):
    carry = list(ins[:n_carry])
    xs = ins[n_carry : n_carry + n_xs]
    consts = list(ins[n_carry + n_xs :])
    ys = [xp.empty((length, *v.type.shape), dtype=v.type.dtype) for v in body.outputs[n_carry:]]
    for t in reversed(range(length)) if reverse else range(length):
        out = run_graph(xp, body, carry + [x[t] for x in xs] + consts)
        carry = out[:n_carry]
        for y, o in zip(ys, out[n_carry:]):
            y[t] = o
    carry = [xp.array(c, copy=True) if any(c is a for a in ins) else c for c in carry]
    return tuple(carry + ys)


# -- AD rules (built from the public functions, which live above the op layer) -------------
def _cond_jvp(tangents, outs, *ins, **attrs):
    from ..control_ad import cond_jvp

    return cond_jvp(tangents, outs, *ins, **attrs)


def _cond_vjp(cts, outs, *ins, **attrs):
    from ..control_ad import cond_vjp

    return cond_vjp(cts, outs, *ins, **attrs)


def _while_jvp(tangents, outs, *ins, **attrs):
    from ..control_ad import while_jvp

    return while_jvp(tangents, outs, *ins, **attrs)


def _while_vjp(cts, outs, *ins, **attrs):
    from ..control_ad import while_vjp

    return while_vjp(cts, outs, *ins, **attrs)


def _scan_jvp(tangents, outs, *ins, **attrs):
    from ..control_ad import scan_jvp

    return scan_jvp(tangents, outs, *ins, **attrs)


def _scan_vjp(cts, outs, *ins, **attrs):
    from ..control_ad import scan_vjp

    return scan_vjp(cts, outs, *ins, **attrs)


# "no_fold": folding evaluates nodes with all-constant inputs; a region is simplified by the
# region pass instead (a constant-index cond inlines its branch). "region": the printer, the
# passes and the runtime recurse into its sub-graphs.
_EXTRA = {"no_fold": True, "region": True}
for _name, _infer, _impl, _jvp, _vjp, _doc in (
    ("cond", _cond_infer, _cond_impl, _cond_jvp, _cond_vjp, "run one of N branch graphs"),
    ("while", _while_infer, _while_impl, _while_jvp, _while_vjp, "loop a body graph"),
    ("scan", _scan_infer, _scan_impl, _scan_jvp, _scan_vjp, "loop a body over a leading axis"),
):
    register(
        OpDef(_name, "control", _infer, _impl, vjp=_vjp, jvp=_jvp, doc=_doc, extra=dict(_EXTRA))
    )
