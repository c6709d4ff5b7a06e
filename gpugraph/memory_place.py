"""Placing buffers in one arena: offsets for sized items so that no two conflicting items share a
byte. Pure arithmetic over (first, last, size) triples and conflict lists; ``memory.plan_memory``
builds those from a graph and a schedule. On one stream conflicts are overlapping live ranges
(``plan_intervals``); across streams they come from happens-before queries (``hb_conflicts``),
with ``clique_bound`` as the matching lower bound.
"""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from .schedule import Schedule

SEARCH_WORK = 1_000_000  # bound on placement work (items + conflicts, summed over tries)


def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a if a > 1 else n


def _place(sizes: Sequence[int], conflicts: list[list[int]], order: Sequence[int], align: int):
    """Put each item, in ``order``, into the smallest gap between already placed conflicting
    items that holds it (best fit), else just above them."""
    offsets = [-1] * len(sizes)
    total = 0
    for i in order:
        size = sizes[i]
        busy = sorted((offsets[j], offsets[j] + sizes[j]) for j in conflicts[i] if offsets[j] >= 0)
        best, best_gap, cursor = -1, -1, 0
        for lo, hi in busy:
            gap = lo - cursor
            if gap >= size and (best < 0 or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, align_up(hi, align))
        offsets[i] = best if best >= 0 else cursor
        total = max(total, offsets[i] + size)
    return offsets, align_up(total, align)


def plan_offsets(
    sizes: Sequence[int],
    conflicts: list[list[int]],
    align: int = 1,
    spans: Sequence[int] | None = None,
    target: int = 0,
) -> tuple[list[int], int]:
    """Offsets such that no two conflicting items share a byte. Greedy placement (``_place``)
    under a few orders: by size; by size then longest life; by size times conflicts; then
    seeded random orders by size times (1 + eps * noise), then a swap local search on the best
    order. Stops as soon as ``target`` (a lower bound) is reached; the work is bounded."""
    n = len(sizes)
    spans = spans or [0] * n
    target = align_up(target, align)
    orders = [
        sorted(range(n), key=lambda i: (-sizes[i], i)),
        sorted(range(n), key=lambda i: (-sizes[i], -spans[i], i)),
        sorted(range(n), key=lambda i: (-sizes[i] * (1 + len(conflicts[i])), i)),
    ]
    budget = max(4, SEARCH_WORK // max(n + sum(len(c) for c in conflicts), 1))
    rng = random.Random(0)
    best_order, best = orders[0], _place(sizes, conflicts, orders[0], align)
    for k in range(1, budget):
        if best[1] <= target:
            break
        if k < len(orders):
            order = orders[k]
        elif k < budget // 2:  # random orders, larger items still mostly first
            eps = (0.0, 1.0, 2.0, 4.0)[k % 4]
            noise = [1 + eps * rng.random() for _ in range(n)]
            order = sorted(range(n), key=lambda i: -sizes[i] * noise[i])
        else:  # local search: swap two items of the best order
            order = list(best_order)
            a, b = rng.randrange(n), rng.randrange(n)
            order[a], order[b] = order[b], order[a]
        got = _place(sizes, conflicts, order, align)
        if got[1] <= best[1]:
            best_order, best = order, got
    return best


def interval_conflicts(triples) -> list[list[int]]:
    """Pairs of (first, last, size) triples whose inclusive ranges overlap (a sweep)."""
    conflicts: list[list[int]] = [[] for _ in triples]
    active: list[int] = []
    for i in sorted(range(len(triples)), key=lambda k: triples[k][0]):
        first = triples[i][0]
        active = [j for j in active if triples[j][1] >= first]
        for j in active:
            conflicts[i].append(j)
            conflicts[j].append(i)
        active.append(i)
    return conflicts


def plan_intervals(triples, align: int = 1) -> tuple[list[int], int]:
    """Offsets for (first_use, last_use, size) triples so that no two whose inclusive live
    ranges overlap share a byte; returns (offsets, total bytes)."""
    sizes = [t[2] for t in triples]
    spans = [t[1] - t[0] for t in triples]
    bound = lower_bound([(f, la, align_up(x, align)) for f, la, x in triples])
    return plan_offsets(sizes, interval_conflicts(triples), align, spans, bound)


def lower_bound(triples) -> int:
    """The largest sum of live bytes at any step: no plan can use less."""
    if not triples:
        return 0
    delta = [0] * (max(t[1] for t in triples) + 2)
    for first, last, size in triples:
        delta[first] += size
        delta[last + 1] -= size
    peak = live = 0
    for d in delta:
        live += d
        peak = max(peak, live)
    return peak


def hb_conflicts(heads, members, slots, readers, sched: Schedule):
    """Buffers a, b conflict unless every access of one happens-before the first write of the
    other (later accesses of a buffer all depend on its first write). Overlapping linear
    ranges always conflict; for disjoint ones only the earlier can come first, and once past
    ``concurrent_until`` of all its accesses (when the schedule offers it) every later write is
    ordered after it, so happens-before is asked only inside that window."""
    hb = sched.happens_before
    horizon_of = getattr(sched, "concurrent_until", None)
    n = len(heads)
    acc, first, last, horizon = [], [], [], []
    for h in heads:
        a = {slots[m].first for m in members[h]}
        for m in members[h]:
            a.update(readers.get(m, ()))
        acc.append(sorted(a))
        first.append(slots[h].first)
        last.append(max(a))
        horizon.append(max(horizon_of(x) for x in a) if horizon_of else len(sched.steps))
    by_first = sorted(range(n), key=lambda i: first[i])
    starts = [first[i] for i in by_first]
    conflicts: list[list[int]] = [[] for _ in range(n)]
    for a in range(n):
        lo = bisect_left(starts, first[a])
        for b in by_first[lo : bisect_right(starts, horizon[a])]:
            if b == a or (first[b] == first[a] and b < a):
                continue  # each unordered pair once
            if first[b] <= last[a] or not all(hb(x, first[b]) for x in acc[a]):
                conflicts[a].append(b)
                conflicts[b].append(a)
    return conflicts, [last[i] for i in range(n)]


def clique_bound(sizes: Sequence[int], conflicts: list[list[int]], seeds) -> int:
    """A lower bound for any placement: the weight of a clique of the conflict graph, grown
    greedily (heaviest first) from each seed set (itself a clique)."""
    nbrs = [set(c) for c in conflicts]
    best = 0
    for seed in seeds:
        clique = set(seed)
        cand = set.intersection(*(nbrs[i] for i in clique)) if clique else set()
        for i in sorted(cand, key=lambda i: -sizes[i]):
            if clique <= nbrs[i]:
                clique.add(i)
        best = max(best, sum(sizes[i] for i in clique))
    return best
