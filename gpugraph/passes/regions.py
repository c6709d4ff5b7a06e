"""Passes and region bodies.

``map_regions(graph, pass_fn)`` runs a pass on every region body (innermost first) and then on
the graph itself; the pipeline calls every pass through it, so fold, simplify, CSE, DCE and
fusion reach bodies without knowing about regions.

``simplify_regions`` is the pass about the region nodes themselves:

* a ``cond`` whose index is a constant is replaced by its (clamped) branch, inlined;
* a small ``cond`` of cheap elementwise branches becomes both branches then a select
  (``cond_select.py``), so it fuses with its surroundings;
* loop-invariant code motion: a body node of a ``while``/``scan`` whose inputs are all consts
  (or constants) is moved before the loop and passed in as a new const (its op names are kept
  in the node's ``_hoisted`` attr for explain()); ops that may raise at run time and nested
  regions stay inside, so a loop that runs zero times raises nothing new;
* dead carries: a loop carry whose result nobody reads and that no other body output or the
  loop condition depends on is dropped (input, body input, body output and node output);
  stacked scan outputs nobody reads are dropped; inputs no body reads are dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from ..ir import Graph, GraphBuilder, Node, Value, live_nodes, rebuild
from ..ops.registry import get_op
from .cond_select import lower_to_select, selectable
from .fold import NO_FOLD_OPS, constant_of

PassResult = tuple[Graph, dict[str, int]]


def is_region(node: Node) -> bool:
    return bool(get_op(node.op).extra.get("region", False))


def _count(rewrites: dict[str, int], key: str, n: int = 1) -> None:
    rewrites[key] = rewrites.get(key, 0) + n


def map_regions(graph: Graph, pass_fn: Callable[[Graph], PassResult]) -> PassResult:
    """``pass_fn`` on every region body (recursively), then on ``graph``; rewrites inside
    bodies are reported with an ``in region:`` prefix."""
    rewrites: dict[str, int] = {}
    if any(is_region(n) for n in graph.nodes):
        changed = False

        def sub(g: Graph) -> Graph:
            nonlocal changed
            new, r = map_regions(g, pass_fn)
            for k, n in r.items():
                _count(rewrites, k if k.startswith("in region: ") else f"in region: {k}", n)
            changed |= new is not g
            return new

        def visit(b: GraphBuilder, node: Node, ins: list[Value]) -> list[Value] | None:
            if not is_region(node):
                return None
            attrs = {}
            for k, a in node.attrs.items():
                if isinstance(a, Graph):
                    a = sub(a)
                elif isinstance(a, tuple) and a and all(isinstance(g, Graph) for g in a):
                    a = tuple(sub(g) for g in a)
                attrs[k] = a
            if all(attrs[k] is node.attrs[k] for k in attrs):
                return None
            types = [o.type for o in node.outputs]
            return list(b.add_node(node.op, ins, attrs, types, node.loc).outputs)

        new = rebuild(graph, visit)
        if changed:
            graph = new
    graph, top = pass_fn(graph)
    for k, n in top.items():
        _count(rewrites, k, n)
    return graph, rewrites


def inline(b: GraphBuilder, graph: Graph, args: list[Value]) -> list[Value]:
    """Copy ``graph``'s nodes into ``b`` reading ``args``; its outputs in the new graph."""
    env: dict[Value, Value] = dict(zip(graph.inputs, args))
    for n in graph.nodes:
        new = b.add_node(
            n.op, [env[v] for v in n.inputs], n.attrs, [o.type for o in n.outputs], n.loc
        )
        env.update(zip(n.outputs, new.outputs))
    return [env[v] for v in graph.outputs]


def _with_inputs(g: Graph, inputs: list[Value], outputs: list[Value] | None = None) -> Graph:
    out = Graph(
        list(inputs), list(g.nodes), list(g.outputs if outputs is None else outputs), dict(g.meta)
    )
    return Graph(out.inputs, live_nodes(out), out.outputs, out.meta)


def _used(g: Graph) -> set[Value]:
    used = set(g.outputs)
    for n in g.nodes:
        used.update(n.inputs)
    return used


def _depends(g: Graph) -> dict[Value, set[int]]:
    """For each value of ``g``: the input positions it depends on."""
    dep: dict[Value, set[int]] = {v: {i} for i, v in enumerate(g.inputs)}
    for n in g.nodes:
        d = set().union(*(dep[v] for v in n.inputs)) if n.inputs else set()
        for o in n.outputs:
            dep[o] = d
    return dep


# -- the region pass -----------------------------------------------------------------------
def simplify_regions_keep_conds(graph: Graph) -> PassResult:
    """simplify_regions without lowering small conds to selects
    (``gg.jit(cond_to_select=False)``)."""
    return simplify_regions(graph, cond_to_select=False)


def simplify_regions(graph: Graph, cond_to_select: bool = True) -> PassResult:
    if not any(is_region(n) for n in graph.nodes):
        return graph, {}
    rewrites: dict[str, int] = {}
    users = graph.users()
    outputs = set(graph.outputs)

    def read(v: Value) -> bool:
        return bool(users.get(v)) or v in outputs

    def visit(b: GraphBuilder, node: Node, ins: list[Value]) -> list[Value] | None:
        if node.op == "cond":
            idx = constant_of(ins[0])
            if idx is not None:
                branches = node.attrs["branches"]
                k = min(max(int(idx), 0), len(branches) - 1)
                _count(rewrites, "cond on a constant index inlined")
                return inline(b, branches[k], ins[1:])
            if cond_to_select and selectable(node):
                _count(rewrites, "small cond lowered to both branches + select")
                return lower_to_select(b, node, ins, inline)
            return _drop_unused_inputs(b, node, ins, rewrites)
        if node.op in ("while", "scan"):
            return _loop(b, node, ins, [read(o) for o in node.outputs], rewrites)
        return None

    new = rebuild(graph, visit)
    return (new, rewrites) if rewrites else (graph, {})


def _drop_unused_inputs(b, node, ins, rewrites):
    branches = node.attrs["branches"]
    keep = [i for i in range(len(ins) - 1) if any(g.inputs[i] in _used(g) for g in branches)]
    if len(keep) == len(ins) - 1:
        return None
    _count(rewrites, "unused region input dropped", len(ins) - 1 - len(keep))
    new = tuple(_with_inputs(g, [g.inputs[i] for i in keep]) for g in branches)
    attrs = {**node.attrs, "branches": new}
    n = b.add_node(
        "cond",
        [ins[0]] + [ins[1 + i] for i in keep],
        attrs,
        [o.type for o in node.outputs],
        node.loc,
    )
    return list(n.outputs)


def _loop(b: GraphBuilder, node: Node, ins: list[Value], read: list[bool], rewrites) -> list | None:
    """Hoist invariants, drop dead carries / ys / unused inputs of a while or scan node."""
    a = dict(node.attrs)
    is_scan = node.op == "scan"
    body_key = "body" if is_scan else "body_graph"
    body: Graph = a[body_key]
    cond_g: Graph | None = None if is_scan else a["cond_graph"]
    nc = a["n_carry"]
    nx = a["n_xs"] if is_scan else 0
    first_const = nc + nx
    changed = False

    # 1. loop-invariant code motion (consts are the inputs from first_const on)
    invariant = {v: ins[i] for i, v in enumerate(body.inputs) if i >= first_const}
    hoisted: list[str] = []
    moved: dict[Value, Value] = {}  # body value -> parent value
    for n in body.nodes:
        if n.op == "constant":
            continue
        movable = (
            n.inputs
            and all(v in invariant or v in moved or constant_of(v) is not None for v in n.inputs)
            and any(v in invariant or v in moved for v in n.inputs)
            and not is_region(n)
            and n.op not in NO_FOLD_OPS
            and not get_op(n.op).extra.get("nondeterministic")
        )
        if not movable:
            continue
        args = []
        for v in n.inputs:
            if v in invariant:
                args.append(invariant[v])
            elif v in moved:
                args.append(moved[v])
            else:  # a constant: copy it out too
                c = v.node
                args.append(b.add_node("constant", [], c.attrs, [v.type], c.loc).output)
        new = b.add_node(n.op, args, n.attrs, [o.type for o in n.outputs], n.loc)
        moved.update(zip(n.outputs, new.outputs))
        hoisted.append(n.op)
    if hoisted:
        changed = True
        _count(rewrites, "loop-invariant node hoisted", len(hoisted))
        rest = [n for n in body.nodes if not any(o in moved for o in n.outputs)]
        live = {v for n in rest for v in n.inputs} | set(body.outputs)
        new_ins = [v for v in moved if v in live]
        # the hoisted values become new body inputs (same Value objects: now defined outside)
        fresh = {v: Value(v.type, name="hoisted") for v in new_ins}
        body = _substitute(
            Graph(body.inputs + [fresh[v] for v in new_ins], rest, body.outputs), fresh
        )
        ins = ins + [moved[v] for v in new_ins]
        if cond_g is not None:
            cond_g = Graph(
                cond_g.inputs + [Value(v.type, name="unused") for v in new_ins],
                cond_g.nodes,
                cond_g.outputs,
                dict(cond_g.meta),
            )
        a["_hoisted"] = tuple(node.attrs.get("_hoisted", ())) + tuple(hoisted)

    # 2. dead carries and dead stacked outputs
    dep = _depends(body)
    cond_dep = _depends(cond_g)[cond_g.outputs[0]] if cond_g is not None else set()
    out_dep = [dep[v] for v in body.outputs]
    drop_c = []
    for k in range(nc):
        others = [j for j in range(len(body.outputs)) if j != k and k in out_dep[j]]
        if not read[k] and not others and k not in cond_dep:
            drop_c.append(k)
    drop_y = [j for j in range(nc, len(node.outputs)) if not read[j]] if is_scan else []
    # 3. inputs no body reads (consts and xs)
    keep_out = [j for j in range(len(body.outputs)) if j not in drop_c and j not in drop_y]
    kept_body_outs = [body.outputs[j] for j in keep_out]
    still_used = {
        v for n in live_nodes(Graph(body.inputs, body.nodes, kept_body_outs)) for v in n.inputs
    }
    still_used |= set(kept_body_outs)
    cond_used = _used(cond_g) if cond_g is not None else set()
    drop_in = [
        i
        for i in range(nc, len(ins))
        if body.inputs[i] not in still_used
        and (cond_g is None or cond_g.inputs[i] not in cond_used)
    ]
    if drop_c or drop_y or drop_in:
        changed = True
        if drop_c:
            _count(rewrites, "dead loop carry dropped", len(drop_c))
        if drop_y:
            _count(rewrites, "dead scan output dropped", len(drop_y))
        if drop_in:
            _count(rewrites, "unused region input dropped", len(drop_in))
        keep_in = [i for i in range(len(ins)) if i not in drop_c and i not in drop_in]
        body = _with_inputs(body, [body.inputs[i] for i in keep_in], kept_body_outs)
        if cond_g is not None:
            cond_g = _with_inputs(cond_g, [cond_g.inputs[i] for i in keep_in])
        a["n_carry"] = nc - len(drop_c)
        if is_scan:
            a["n_xs"] = nx - sum(1 for i in drop_in if i < nc + nx)
        ins = [ins[i] for i in keep_in]
    if not changed:
        return None
    a[body_key] = body
    if cond_g is not None:
        a["cond_graph"] = cond_g
    kept = [j for j in range(len(node.outputs)) if j not in drop_c and j not in drop_y]
    new = b.add_node(node.op, ins, a, [node.outputs[j].type for j in kept], node.loc)
    result: list = [None] * len(node.outputs)
    for j, v in zip(kept, new.outputs):
        result[j] = v
    return result


def _substitute(g: Graph, fresh: dict[Value, Value]) -> Graph:
    """``g`` with every read of a key of ``fresh`` redirected to its value."""
    if not fresh:
        return g
    b = GraphBuilder()
    b.inputs = list(g.inputs)
    env: dict[Value, Value] = {v: v for v in g.inputs}
    env.update(fresh)
    for n in g.nodes:
        ins = [env.get(v, v) for v in n.inputs]
        if all(x is y for x, y in zip(ins, n.inputs)):
            b.nodes.append(n)
            env.update({o: o for o in n.outputs})
        else:
            new = b.add_node(n.op, ins, n.attrs, [o.type for o in n.outputs], n.loc)
            env.update(zip(n.outputs, new.outputs))
    return b.build([env.get(v, v) for v in g.outputs], g.meta)
