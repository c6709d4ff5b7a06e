"""Dead code elimination: drop nodes none of whose outputs reach a graph output."""

from __future__ import annotations

from ..ir import Graph


def dce(graph: Graph) -> tuple[Graph, dict[str, int]]:
    live = set(graph.outputs)
    keep = []
    for node in reversed(graph.nodes):
        if any(v in live for v in node.outputs):
            keep.append(node)
            live.update(node.inputs)
    removed = len(graph.nodes) - len(keep)
    if not removed:
        return graph, {}
    g = Graph(list(graph.inputs), keep[::-1], list(graph.outputs), dict(graph.meta))
    return g, {"dead node removed": removed}
