"""Scheduling: a topological order, a stream per node and the events between streams.

The order is the graph's (already topological). Nodes are grouped into chains (a node continues
the chain of one of its producers, preferring a producer whose only consumer it is, so a plain
chain never leaves its stream), and chains are placed on up to K streams by list scheduling
with estimated costs. A step waits on another step's event only where a data edge crosses
streams and the order is not already implied by program order plus earlier waits.

``Schedule.happens_before(i, j)`` is the true happens-before partial order of the steps as
executed: same-stream program order plus event edges, transitively. It is answered in O(1) from
vector clocks: ``clock[j][s]`` is the largest step index on stream ``s`` that happens before (or
is) step ``j`` (-1 if none).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

import numpy as np

from .ir import Graph, Node

DEFAULT_MAX_STREAMS = 4  # cap on the default stream count (Options.streams=None)
FREE_OPS = frozenset({"constant"})  # never launched: no stream work, no events
VIEW_OPS = frozenset({"reshape"})  # usually a view: costs nothing


@dataclass
class Step:
    node: Node
    stream: int = 0
    waits: tuple[int, ...] = ()  # indices of earlier steps whose recorded event this waits on
    record: bool = False  # record an event after this step (some other stream waits on it)


def vector_clocks(streams: list[int], waits: list[tuple[int, ...]], num_streams: int) -> np.ndarray:
    """clock[j, s]: the largest step index on stream s ordered before-or-at step j (-1: none).

    Program order on each stream plus one edge per wait (event recorded after step w on its
    stream, waited on before step j), closed transitively."""
    n = len(streams)
    clock = np.full((n, max(num_streams, 1)), -1, dtype=np.int64)
    last: dict[int, int] = {}
    for j in range(n):
        s = streams[j]
        if s in last:
            clock[j] = clock[last[s]]
        for w in waits[j]:
            assert 0 <= w < j, f"step {j} waits on step {w}, which is not earlier"
            np.maximum(clock[j], clock[w], out=clock[j])
        clock[j, s] = j
        last[s] = j
    return clock


@dataclass
class Schedule:
    steps: list[Step]
    num_streams: int = 1
    _index: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {s.node: i for i, s in enumerate(self.steps)}
        self.num_streams = max(self.num_streams, 1 + max((s.stream for s in self.steps), default=0))
        self.refresh()

    def refresh(self) -> None:
        """Recompute the happens-before relation (call after editing steps' streams/waits)."""
        streams = [s.stream for s in self.steps]
        self.clock = vector_clocks(streams, [s.waits for s in self.steps], self.num_streams)
        self._streams = streams
        self._rows = self.clock.tolist()  # plain lists: the fastest scalar queries
        self._on_stream = [
            [i for i, s in enumerate(streams) if s == k] for k in range(self.num_streams)
        ]

    def index(self, node: Node | int) -> int:
        return node if isinstance(node, int) else self._index[node]

    def happens_before(self, a: Node | int, b: Node | int) -> bool:
        """True when step a is guaranteed to finish before step b starts (a strict order)."""
        i = a if a.__class__ is int else self._index[a]
        j = b if b.__class__ is int else self._index[b]
        return i != j and self._rows[j][self._streams[i]] >= i

    def after(self, a: Node | int) -> np.ndarray:
        """Bool mask over steps: which steps step a happens before (a vectorized query)."""
        i = self.index(a)
        mask = self.clock[:, self._streams[i]] >= i
        mask[i] = False
        return mask

    def ordered(self, a: Node | int, b: Node | int) -> bool:
        """True when a and b cannot run concurrently (one happens before the other)."""
        return self.happens_before(a, b) or self.happens_before(b, a)

    def concurrent_until(self, a: Node | int) -> int:
        """The largest step index k such that step k is not ordered after step a (>= a).

        A planner may give a value's bytes to a value defined after ``max(concurrent_until(u)
        for u in its uses and definition)`` in the linear order: every use then happens before
        that definition."""
        i = self.index(a)
        t = self.steps[i].stream
        horizon = i
        for k, on in enumerate(self._on_stream):
            if k == t or not on:
                continue
            # clock[., t] is non-decreasing along stream k: find the first step that knows i
            first = bisect_left(on, True, key=lambda j: bool(self.clock[j, t] >= i))
            if first > 0:
                horizon = max(horizon, on[first - 1])
        return horizon

    def stream_of(self, node: Node | int) -> int:
        return self.steps[self.index(node)].stream

    @property
    def num_waits(self) -> int:
        return sum(len(s.waits) for s in self.steps)

    def describe(self) -> str:
        lines = [
            f"schedule: {self.num_streams} stream(s), {len(self.steps)} steps, "
            f"{self.num_waits} wait(s)"
        ]
        for i, s in enumerate(self.steps):
            extra = f" waits {list(s.waits)}" if s.waits else ""
            extra += " record" if s.record else ""
            lines.append(f"  {i:3d} s{s.stream} {s.node.op}{extra}")
        return "\n".join(lines)


def _cost(node: Node) -> float:
    if node.op in VIEW_OPS:
        return 0.0
    return 1.0 + sum(v.type.nbytes for v in node.outputs) / (4 << 20)


def graph_width(preds: list[list[int]], free: list[bool]) -> int:
    """Most launched nodes on one level (level = longest path from a source, in nodes)."""
    level = [0] * len(preds)
    counts: dict[int, int] = {}
    for i, ps in enumerate(preds):
        if free[i]:
            continue
        level[i] = 1 + max((level[p] for p in ps), default=0)
        counts[level[i]] = counts.get(level[i], 0) + 1
    return max(counts.values(), default=1)


def schedule(graph: Graph, streams: int | None = None) -> Schedule:
    """Assign each node a stream (at most ``streams``; None: the graph's width, capped at
    DEFAULT_MAX_STREAMS) and insert the minimal waits."""
    nodes = graph.nodes
    n = len(nodes)
    pos = {node: i for i, node in enumerate(nodes)}
    free = [node.op in FREE_OPS for node in nodes]
    preds: list[list[int]] = []
    succs: list[list[int]] = [[] for _ in range(n)]
    for i, node in enumerate(nodes):
        ps = sorted({pos[v.node] for v in node.inputs if v.node in pos and not free[pos[v.node]]})
        preds.append([] if free[i] else ps)
        for p in preds[i]:
            succs[p].append(i)
    k = streams if streams is not None else min(graph_width(preds, free), DEFAULT_MAX_STREAMS)
    k = max(1, int(k))
    stream = _assign_streams(nodes, preds, succs, free, k)
    waits = _minimal_waits(stream, preds, k)
    recorded = {w for ws in waits for w in ws}
    steps = [Step(node, stream[i], waits[i], i in recorded) for i, node in enumerate(nodes)]
    return Schedule(steps, 1 + max(stream, default=0))


def _assign_streams(nodes, preds, succs, free, k: int) -> list[int]:
    n = len(nodes)
    if k == 1:
        return [0] * n
    chain_of = [-1] * n
    chain_stream: list[int] = []
    continued: set[int] = set()
    depth = [0.0] * n  # longest cost-weighted path ending at the node
    finish = [0.0] * n  # estimated finish time under the streams chosen so far
    free_at = [0.0] * k
    open_chains = [0] * k
    stream = [0] * n
    for i in range(n):
        if free[i]:
            continue
        depth[i] = _cost(nodes[i]) + max((depth[p] for p in preds[i]), default=0.0)
        cand = [p for p in preds[i] if p not in continued]
        ready = max((finish[p] for p in preds[i]), default=0.0)
        if cand:  # continue a producer's chain: its only consumer first, then the deepest
            p = max(cand, key=lambda q: (len(succs[q]) == 1, depth[q], q))
            continued.add(p)
            c = chain_of[p]
            s = chain_stream[c]
        else:  # a new chain: the stream that can start it soonest, preferring idle ones
            pred_streams = {stream[p] for p in preds[i]}

            s = min(
                range(k),
                key=lambda s: (
                    open_chains[s] > 0,
                    max(free_at[s], ready),  # noqa: B023  (used right here, in the loop)
                    s not in pred_streams,  # noqa: B023
                    s,
                ),
            )
            c = len(chain_stream)
            chain_stream.append(s)
            open_chains[s] += 1
        chain_of[i] = c
        stream[i] = s
        finish[i] = max(free_at[s], ready) + _cost(nodes[i])
        free_at[s] = finish[i]
        # a chain closes at a sink, or once its tail's last consumer went elsewhere
        if not succs[i]:
            open_chains[s] -= 1
        for p in preds[i]:
            if p not in continued and succs[p][-1] == i:
                open_chains[stream[p]] -= 1
    return _renumber(stream, free)


def _renumber(stream: list[int], free: list[bool]) -> list[int]:
    """Streams numbered by first use (the first launched node is on stream 0)."""
    order: dict[int, int] = {}
    for s, f in zip(stream, free):
        if not f and s not in order:
            order[s] = len(order)
    return [order.get(s, 0) if not f else 0 for s, f in zip(stream, free)]


def _minimal_waits(stream: list[int], preds: list[list[int]], k: int) -> list[tuple[int, ...]]:
    """One wait per cross-stream edge not already implied; the latest producers first, since a
    later step's event may imply an earlier one's but never the reverse."""
    n = len(stream)
    clock = np.full((n, k), -1, dtype=np.int64)
    last: dict[int, int] = {}
    waits: list[tuple[int, ...]] = []
    for j in range(n):
        s = stream[j]
        if s in last:
            clock[j] = clock[last[s]]
        mine: list[int] = []
        for p in sorted(preds[j], reverse=True):
            if clock[j, stream[p]] >= p:
                continue  # already ordered: program order or an earlier wait implies it
            mine.append(p)
            np.maximum(clock[j], clock[p], out=clock[j])
        clock[j, s] = j
        last[s] = j
        waits.append(tuple(sorted(mine)))
    return waits
