"""Forward the residuals of a differentiated scan instead of recomputing them.

The vjp of ``scan`` (control_ad.py) stacks the carry entering every step (the tape) and runs
the body's vjp backwards over it, so the backward body recomputes the forward step from the
tape: in an Elman RNN, ``h @ W``, the add and the ``tanh`` again, every step. The forward scan
computes those very values at the same step. This pass finds, for a scan B that reads per-step
rows of another scan F (F's stacked carries or passed-through xs, F's xs, F's consts), the
nodes of B's body that are the same computation as a node of F's body on the same per-step
data (same op, attrs and inputs, matched from B's inputs onward), and for each such value that
B still needs after the match, F stacks it as one more output and B reads its row instead of
recomputing it. Row t of every stack is F's value at its step t, whatever the two directions,
so B sees the same numbers; the forward loop does no new work but one row copy per value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, GraphBuilder, Node, TensorType, Value, live_nodes
from ..memory_order import VIEW_OPS
from ..ops.registry import get_op

PassResult = tuple[Graph, dict[str, int]]


def _same_attrs(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if k.startswith("_"):
            continue  # source locations and notes
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (
                isinstance(x, np.ndarray)
                and isinstance(y, np.ndarray)
                and x.dtype == y.dtype
                and x.shape == y.shape
                and np.array_equal(x, y, equal_nan=True)
            ):
                return False
        elif isinstance(x, Graph) or isinstance(y, Graph):
            return False
        elif x != y:
            return False
    return True


def _input_map(f: Node, b: Node) -> dict[Value, Value]:
    """B body input -> F body input holding the same per-step data."""
    fa, ba = f.attrs, b.attrs
    fnc, fnx, bnc, bnx = fa["n_carry"], fa["n_xs"], ba["n_carry"], ba["n_xs"]
    fbody, bbody = fa["body"], ba["body"]
    f_xs, f_consts = f.inputs[fnc : fnc + fnx], f.inputs[fnc + fnx :]
    out: dict[Value, Value] = {}
    for i in range(bnx):
        v = b.inputs[bnc + i]
        inner = bbody.inputs[bnc + i]
        if v in f.outputs[fnc:]:
            j = f.outputs.index(v)
            src = fbody.outputs[j]
            if src in fbody.inputs[: fnc + fnx]:  # a stacked carry or x: F's step-t input
                out[inner] = src
        elif v in f_xs:
            out[inner] = fbody.inputs[fnc + f_xs.index(v)]
    for i, v in enumerate(b.inputs[bnc + bnx :]):
        if v in f_consts:
            out[bbody.inputs[bnc + bnx + i]] = fbody.inputs[fnc + fnx + f_consts.index(v)]
    return out


def _match(fbody: Graph, bbody: Graph, env: dict[Value, Value]) -> dict[Value, Value]:
    """Extend ``env`` (B value -> F value) over B's nodes that F computes identically."""
    env = dict(env)
    by_op: dict[str, list[Node]] = {}
    for n in fbody.nodes:
        by_op.setdefault(n.op, []).append(n)
    for n in bbody.nodes:
        if get_op(n.op).extra.get("region") or get_op(n.op).extra.get("nondeterministic"):
            continue
        if n.op != "constant" and not all(v in env for v in n.inputs):
            continue
        want = [env[v] for v in n.inputs]
        for m in by_op.get(n.op, []):
            if (
                list(m.inputs) == want
                and [o.type for o in m.outputs] == [o.type for o in n.outputs]
                and _same_attrs(m.attrs, n.attrs)
            ):
                env.update(zip(n.outputs, m.outputs))
                break
    return env


def _try(f: Node, b: Node) -> tuple[Node, list[Value], list[Value]] | None:
    """(b, the B body values to read from F, their F body values), or None."""
    if f.attrs["length"] != b.attrs["length"]:
        return None
    fbody, bbody = f.attrs["body"], b.attrs["body"]
    start = _input_map(f, b)
    if not start:
        return None
    env = _match(fbody, bbody, start)
    matched = {v for v in env if v not in start}
    if not matched:
        return None
    need: list[Value] = []
    for n in bbody.nodes:
        if n.outputs and n.outputs[0] in matched:
            continue
        need += [v for v in n.inputs if v in matched and v not in need]
    need += [v for v in bbody.outputs if v in matched and v not in need]
    # a view costs nothing to recompute; stacking it would cost a copy a step
    need = [v for v in need if v.node.op not in VIEW_OPS and v.node.op != "constant"]
    if not need:
        return None
    return b, need, [env[v] for v in need]


def forward_residuals(graph: Graph) -> PassResult:
    scans = [n for n in graph.nodes if n.op == "scan"]
    found = None
    for i, f in enumerate(scans):
        for b in scans[i + 1 :]:
            found = _try(f, b)
            if found is not None:
                break
        if found is not None:
            break
    if found is None:
        return graph, {}
    b_node, need, from_f = found
    f_node = f
    length = f_node.attrs["length"]
    fa = dict(f_node.attrs)
    fbody: Graph = fa["body"]
    fa["body"] = Graph(fbody.inputs, fbody.nodes, list(fbody.outputs) + from_f, dict(fbody.meta))
    f_types = [o.type for o in f_node.outputs]
    f_types += [TensorType((length, *v.type.shape), v.type.dtype) for v in from_f]
    ba = dict(b_node.attrs)
    bbody: Graph = ba["body"]
    bnc, bnx = ba["n_carry"], ba["n_xs"]
    fresh = [Value(v.type, name="residual") for v in need]
    new_inputs = bbody.inputs[: bnc + bnx] + fresh + bbody.inputs[bnc + bnx :]
    ba["body"] = _redirect(
        Graph(new_inputs, bbody.nodes, bbody.outputs, dict(bbody.meta)), need, fresh
    )
    ba["n_xs"] = bnx + len(need)
    gb = GraphBuilder()
    gb.inputs = list(graph.inputs)
    env: dict[Value, Value] = {v: v for v in graph.inputs}
    stacks: list[Value] = []
    for node in graph.nodes:
        ins = [env[v] for v in node.inputs]
        if node is f_node:
            new = gb.add_node("scan", ins, fa, f_types, node.loc)
            env.update(zip(node.outputs, new.outputs))
            stacks = list(new.outputs[len(node.outputs) :])
        elif node is b_node:
            ins = ins[: bnc + bnx] + stacks + ins[bnc + bnx :]
            new = gb.add_node("scan", ins, ba, [o.type for o in node.outputs], node.loc)
            env.update(zip(node.outputs, new.outputs))
        elif all(x is y for x, y in zip(ins, node.inputs)):
            gb.nodes.append(node)
            env.update({o: o for o in node.outputs})
        else:
            new = gb.add_node(node.op, ins, node.attrs, [o.type for o in node.outputs], node.loc)
            env.update(zip(node.outputs, new.outputs))
    out = gb.build([env[v] for v in graph.outputs], graph.meta)
    return out, {"scan residuals forwarded instead of recomputed": len(need)}


def _redirect(g: Graph, old: list[Value], new: list[Value]) -> Graph:
    """``g`` with every read of ``old[i]`` reading ``new[i]`` (a body input) instead; the nodes
    that computed them are dropped when nothing else reads them."""
    sub: dict[Any, Value] = dict(zip(old, new))
    gb = GraphBuilder()
    gb.inputs = list(g.inputs)
    env: dict[Value, Value] = {v: v for v in g.inputs}
    env.update(sub)
    for n in g.nodes:
        if all(o in sub for o in n.outputs):
            continue
        ins = [env[v] for v in n.inputs]
        if all(x is y for x, y in zip(ins, n.inputs)):
            gb.nodes.append(n)
            env.update({o: o for o in n.outputs})
        else:
            m = gb.add_node(n.op, ins, n.attrs, [o.type for o in n.outputs], n.loc)
            env.update(zip(n.outputs, m.outputs))
        env.update({o: sub[o] for o in n.outputs if o in sub})  # a multi-output node, in part
    built = gb.build([env[v] for v in g.outputs], g.meta)
    return Graph(built.inputs, live_nodes(built), built.outputs, built.meta)
