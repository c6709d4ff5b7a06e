"""Dead code elimination: drop nodes none of whose outputs reach a graph output."""

from __future__ import annotations

from ..ir import Graph, live_nodes


def dce(graph: Graph) -> tuple[Graph, dict[str, int]]:
    keep = live_nodes(graph)
    removed = len(graph.nodes) - len(keep)
    if not removed:
        return graph, {}
    g = Graph(list(graph.inputs), keep, list(graph.outputs), dict(graph.meta))
    return g, {"dead node removed": removed}
