"""Small ``cond``s lowered to both-branches-then-select, as XLA does.

A ``cond`` whose every branch is a handful of elementwise ops (no reductions, no regions, no
op that may raise at run time, no random numbers) and whose outputs are small is replaced by
every branch inlined into the parent graph and one ``where`` per output choosing by the index:
nothing is read on the host (on CuPy a region's index costs a device-to-host copy and a
synchronization), and the branches fuse with the surrounding elementwise work. The untaken
branch's values are computed and dropped, which is why only cheap branches qualify; the
selection itself is exact (``where`` copies the chosen element bit for bit), so the results are
the same as the region's.

Gradients are not affected: autodiff runs on the traced graph (a ``cond`` there has its own
vjp rule choosing the branch), and this pass runs afterwards, on the forward and backward
``cond`` nodes alike.

Opt out with ``gg.jit(..., cond_to_select=False)`` (passes/pipeline.optimize_passes);
``MAX_NODES`` and ``MAX_ELEMENTS`` set what counts as small.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, GraphBuilder, Node, TensorType, Value
from ..ops.registry import get_op
from .fold import NO_FOLD_OPS

MAX_NODES = 12  # non-constant nodes over all branches together
MAX_ELEMENTS = 1 << 16  # per output: the work thrown away stays small


def _cheap_node(op: str) -> bool:
    if op == "constant":
        return True
    d = get_op(op)
    return d.elementwise and op not in NO_FOLD_OPS and not d.extra.get("nondeterministic")


def selectable(node: Node) -> bool:
    """Whether ``node`` (a cond) qualifies: small elementwise branches, small outputs."""
    branches: tuple[Graph, ...] = node.attrs["branches"]
    if len(branches) < 2:
        return False
    work = [n for g in branches for n in g.nodes if n.op != "constant"]
    if len(work) > MAX_NODES or not all(_cheap_node(n.op) for g in branches for n in g.nodes):
        return False
    return all(int(np.prod(v.type.shape)) <= MAX_ELEMENTS for v in node.outputs)


def lower_to_select(b: GraphBuilder, node: Node, ins: list[Value], inline) -> list[Value]:
    """Every branch inlined, then ``out = b[n-1]; out = where(index <= k, b[k], out)`` for
    k = n-2 .. 0: an index below 0 picks branch 0 and one past the end the last, the clamping
    of the region's own rule."""
    branches: tuple[Graph, ...] = node.attrs["branches"]
    results = [inline(b, g, ins[1:]) for g in branches]
    index, loc = ins[0], node.loc
    scalar_bool = TensorType((), np.bool_)
    outs = list(results[-1])
    for k in range(len(branches) - 2, -1, -1):
        bound = np.array(k, dtype=np.int32)
        bound.flags.writeable = False
        kv = b.add_node("constant", [], {"value": bound}, [TensorType((), np.int32)], loc).output
        pick = b.add_node("less_equal", [index, kv], {}, [scalar_bool], loc).output
        outs = [
            b.add_node("where", [pick, mine, rest], {}, [o.type], loc).output
            for mine, rest, o in zip(results[k], outs, node.outputs)
        ]
    return outs
