"""Scheduling: a topological order, a stream per node and the events between streams.

This first version puts every node on one stream in graph order (the order is already
topological). The Schedule type is what the memory planner and the backends consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ir import Graph, Node


@dataclass
class Step:
    node: Node
    stream: int = 0
    waits: tuple[int, ...] = ()  # indices of earlier steps whose recorded event this waits on
    record: bool = False  # record an event after this step (some other stream waits on it)


@dataclass
class Schedule:
    steps: list[Step]
    num_streams: int = 1
    _index: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {s.node: i for i, s in enumerate(self.steps)}

    def index(self, node: Node) -> int:
        return self._index[node]

    def happens_before(self, a: Node | int, b: Node | int) -> bool:
        """True when step a is guaranteed to finish before step b starts."""
        i = a if isinstance(a, int) else self._index[a]
        j = b if isinstance(b, int) else self._index[b]
        return i < j


def schedule(graph: Graph, streams: int | None = None) -> Schedule:
    return Schedule([Step(n) for n in graph.nodes], 1)
