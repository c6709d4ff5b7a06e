"""Merge two scans that walk the same carries over the same xs into one.

The reverse-mode rule of ``scan`` (control_ad.py) builds a residual scan that recomputes the
forward loop to stack the carry entering every step; under ``gg.jit`` the forward scan is also
in the graph, so the loop body would run twice. Two scan nodes A (later) and B (earlier) with
the same length and direction, the same carry inits (same values, same order) and A's xs among
B's xs are merged when, after inlining A's body into B's on shared inputs and running CSE, every
carry A computes *is* the value B computes for it (then by induction the two loops carry equal
values at every step). The merged scan has B's outputs plus A's stacked ys; A's carries are B's.
"""

from __future__ import annotations

from ..ir import Graph, GraphBuilder, Node, Value, live_nodes
from .cse import cse
from .scan_residuals import forward_residuals

PassResult = tuple[Graph, dict[str, int]]


def _sections(n: Node) -> tuple[list[Value], list[Value], list[Value]]:
    nc, nx = n.attrs["n_carry"], n.attrs["n_xs"]
    return list(n.inputs[:nc]), list(n.inputs[nc : nc + nx]), list(n.inputs[nc + nx :])


def _try_merge(b: Node, a: Node, defined_before: set[Value]):
    """(inputs, attrs, out_types, a_outputs_map) for the merged node, or None."""
    keys = ("length", "reverse", "n_carry")
    if any(a.attrs[k] != b.attrs[k] for k in keys):
        return None
    bc, bx, bk = _sections(b)
    ac, ax, ak = _sections(a)
    if any(u is not v for u, v in zip(ac, bc)) or any(v not in bx for v in ax):
        return None
    new_consts = [v for v in dict.fromkeys(ak) if v not in bk]
    if any(v not in defined_before for v in new_consts):
        return None
    body_b: Graph = b.attrs["body"]
    body_a: Graph = a.attrs["body"]
    gb = GraphBuilder()
    gb.inputs = list(body_b.inputs)
    extra = [gb.add_input(v.type, name="merged") for v in new_consts]
    outer_to_inner = {v: body_b.inputs[len(bc) + len(bx) + i] for i, v in enumerate(bk)}
    outer_to_inner.update(zip(new_consts, extra))
    gb.nodes = list(body_b.nodes)
    nc = len(bc)
    args = list(body_b.inputs[:nc])
    args += [body_b.inputs[nc + bx.index(v)] for v in ax]
    args += [outer_to_inner[v] for v in ak]
    env: dict[Value, Value] = dict(zip(body_a.inputs, args))
    for n in body_a.nodes:
        new = gb.add_node(
            n.op, [env[v] for v in n.inputs], n.attrs, [o.type for o in n.outputs], n.loc
        )
        env.update(zip(n.outputs, new.outputs))
    a_outs = [env[v] for v in body_a.outputs]
    nb = len(body_b.outputs)
    merged, _ = cse(gb.build(list(body_b.outputs) + a_outs, body_b.meta))
    outs = merged.outputs
    if any(outs[k] is not outs[nb + k] for k in range(nc)):
        return None  # A's carries are not provably B's: leave both loops alone
    final = outs[:nb] + outs[nb + nc :]
    body = Graph(merged.inputs, live_nodes(Graph(merged.inputs, merged.nodes, final)), final)
    attrs = {**b.attrs, "body": body}
    hoisted = tuple(b.attrs.get("_hoisted", ())) + tuple(a.attrs.get("_hoisted", ()))
    if hoisted:
        attrs["_hoisted"] = hoisted
    types = [o.type for o in b.outputs] + [o.type for o in a.outputs[nc:]]
    return list(b.inputs) + new_consts, attrs, types


def merge_scans(graph: Graph) -> PassResult:
    """Merge scans over the same carries, then forward a backward scan's residuals from the
    forward one (scan_residuals.py) instead of recomputing them."""
    graph, rewrites = _merge_scans(graph)
    graph, more = forward_residuals(graph)
    return graph, {**rewrites, **more}


def _merge_scans(graph: Graph) -> PassResult:
    scans = [n for n in graph.nodes if n.op == "scan"]
    if len(scans) < 2:
        return graph, {}
    defined: set[Value] = set(graph.inputs)
    before: dict[Node, set[Value]] = {}
    for n in graph.nodes:
        if n.op == "scan":
            before[n] = set(defined)
        defined.update(n.outputs)
    plans: dict[Node, tuple] = {}
    partner: dict[Node, Node] = {}
    for i, base in enumerate(scans):
        if base in partner:
            continue
        for other in scans[i + 1 :]:
            if other in partner or other in plans:
                continue
            merged = _try_merge(base, other, before[base])
            if merged is not None:
                plans[base] = merged
                partner[base], partner[other] = other, base
                break
    if not plans:
        return graph, {}
    b = GraphBuilder()
    b.inputs = list(graph.inputs)
    env: dict[Value, Value] = {v: v for v in graph.inputs}
    for node in graph.nodes:
        if node in plans:
            ins, attrs, types = plans[node]
            new = b.add_node("scan", [env[v] for v in ins], attrs, types, node.loc)
            other, nb, nc = partner[node], len(node.outputs), node.attrs["n_carry"]
            env.update(zip(node.outputs, new.outputs[:nb]))
            env.update(zip(other.outputs[:nc], new.outputs[:nc]))
            env.update(zip(other.outputs[nc:], new.outputs[nb:]))
        elif node in partner:
            continue  # merged into its partner, which came first
        else:
            ins = [env[v] for v in node.inputs]
            if all(x is y for x, y in zip(ins, node.inputs)):
                b.nodes.append(node)
                env.update({o: o for o in node.outputs})
            else:
                new = b.add_node(node.op, ins, node.attrs, [o.type for o in node.outputs], node.loc)
                env.update(zip(node.outputs, new.outputs))
    new_graph = b.build([env[v] for v in graph.outputs], graph.meta)
    return new_graph, {"scans over the same carries merged": len(plans)}
