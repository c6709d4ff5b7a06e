"""Best-fit placement against live ranges without visiting every conflict.

``memory_place._place`` puts each item into the smallest gap between the byte ranges of the
already placed items it conflicts with. When conflicts are overlapping live ranges (plus a few
extra pairs, ``HBConflicts``), the overlap pairs are quadratic in number (activations kept for a
backward pass overlap almost everything), and scanning them all made the plan step O(n^2).

Here the placed items sit in a segment tree over time steps. An item living over steps
[first, last] is stored at the O(log T) nodes that exactly cover that range; each node keeps
``own``, the union of the byte ranges stored at it, and ``sub``, the union over its subtree,
both as sorted lists of disjoint ``[lo, hi)`` runs. An item placed over [f, l] meets a query
over [f', l'] exactly when one of its nodes is an ancestor or a descendant (or itself) of one
of the query's nodes, so the bytes taken during [f', l'] are the ``sub`` of the query's nodes
plus the ``own`` of their ancestors: O(log T) lists of merged runs, short when the arena is
well packed, instead of one range per conflicting item.

Only the union of the taken ranges matters for best fit (a gap is a hole in that union), so
the offsets are the ones ``_place`` gives: ends are aligned before they enter the union, as
``_place`` aligns its cursor, and runs that touch are merged (a gap of 0 fits no item of
positive size; plans with an item of size 0 keep ``_place``'s scan).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence


def _add(runs: list[int], lo: int, hi: int) -> None:
    """Insert [lo, hi) into ``runs`` (flat: lo0, hi0, lo1, hi1, ... sorted and disjoint,
    touching runs merged)."""
    # the list is strictly increasing; an odd count of entries below lo means lo falls inside
    # a run or at its end (then the runs merge), an even one that it falls in a gap
    a = bisect_left(runs, lo)
    if a % 2:
        a -= 1
        lo = runs[a]
    b = bisect_right(runs, hi)
    if b % 2:
        hi = runs[b]
        b += 1
    runs[a:b] = (lo, hi)


class Timeline:
    """Placed byte ranges over time steps [0, steps)."""

    def __init__(self, steps: int) -> None:
        self.size = 1
        while self.size < max(steps, 1):
            self.size *= 2
        self.own: list[list[int] | None] = [None] * (2 * self.size)
        self.sub: list[list[int] | None] = [None] * (2 * self.size)

    def cover(self, first: int, last: int) -> tuple[list[int], list[int]]:
        """The nodes that exactly cover [first, last], and the nodes on the paths from the
        leaves of ``first`` and ``last`` to the root. Every strict ancestor of a covering node
        is on those paths (its range holds a step outside [first, last] and one inside, so it
        holds ``first`` or ``last``), and every path node's range holds a step of the range, so
        an item stored there meets it: the paths serve as the ancestors."""
        nodes, lo, hi = [], first + self.size, last + self.size + 1
        while lo < hi:
            if lo & 1:
                nodes.append(lo)
                lo += 1
            if hi & 1:
                hi -= 1
                nodes.append(hi)
            lo >>= 1
            hi >>= 1
        path, a, b = [], first + self.size, last + self.size
        while a != b:
            path.append(a)
            path.append(b)
            a >>= 1
            b >>= 1
        while a:
            path.append(a)
            a >>= 1
        return nodes, path

    def add(self, nodes: list[int], path: list[int], lo: int, hi: int) -> None:
        """Store [lo, hi) over the range whose ``cover`` is (nodes, path)."""
        own, sub = self.own, self.sub
        for c in nodes:
            runs = own[c]
            if runs is None:
                own[c] = [lo, hi]
            else:
                _add(runs, lo, hi)
        for c in (*nodes, *path):
            runs = sub[c]
            if runs is None:
                sub[c] = [lo, hi]
            else:
                _add(runs, lo, hi)

    def taken(self, nodes: list[int], path: list[int]) -> list[list[int]]:
        """The run lists whose union is every byte taken at some step of the range."""
        sub, own = self.sub, self.own
        out = [sub[c] for c in nodes if sub[c]]
        out += [own[c] for c in path if own[c]]
        return out


def best_fit(lists: list[list[int]], size: int, loose: list[tuple[int, int]] = ()) -> int:
    """The start of the smallest hole (the first of equal ones) in the union of ``lists``
    (flat run lists) and of the ``loose`` (lo, hi) pairs (any order, may overlap) that holds
    ``size`` bytes, else the end of the union (0 when empty)."""
    if len(lists) == 1 and not loose:
        flat = lists[0]
        pairs = zip(flat[::2], flat[1::2])
    else:
        pairs = sorted([*loose, *(p for flat in lists for p in zip(flat[::2], flat[1::2]))])
    best, best_gap, cursor = -1, -1, 0
    for lo, hi in pairs:
        gap = lo - cursor
        if gap >= size and (best < 0 or gap < best_gap):
            best, best_gap = cursor, gap
        if hi > cursor:
            cursor = hi
    return best if best >= 0 else cursor


def place_timeline(
    sizes: Sequence[int],
    first: Sequence[int],
    last: Sequence[int],
    extras: Sequence[Sequence[int]] | None,
    order: Sequence[int],
    align: int,
) -> tuple[list[int], int]:
    """``_place`` for items of positive size conflicting when their inclusive ranges
    [first, last] overlap or when listed in each other's ``extras`` (index arrays or lists)."""
    n = len(sizes)
    offsets = [-1] * n
    spans: list[tuple[int, int] | None] = [None] * n  # placed items' (offset, aligned end)
    extra_lists = [e.tolist() if hasattr(e, "tolist") else e for e in extras or [()] * n]
    timeline = Timeline(max(last, default=0) + 1)
    total = 0
    for i in order:
        size = sizes[i]
        nodes, path = timeline.cover(first[i], last[i])
        lists = timeline.taken(nodes, path)
        ex = extra_lists[i]
        loose = [p for p in map(spans.__getitem__, ex) if p is not None] if ex else ()
        off = offsets[i] = best_fit(lists, size, loose)
        end = off + size
        if end > total:
            total = end
        spans[i] = (off, _up(end, align))
        timeline.add(nodes, path, off, spans[i][1])
    return offsets, _up(total, align)


def _up(n: int, a: int) -> int:
    return (n + a - 1) // a * a if a > 1 else n
