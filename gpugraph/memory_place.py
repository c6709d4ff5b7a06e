"""Placing buffers in one arena: offsets for sized items so that no two conflicting items share a
byte. Pure arithmetic over (first, last, size) triples and conflict lists; ``memory.plan_memory``
builds those from a graph and a schedule. On one stream conflicts are overlapping live ranges
(``plan_intervals``); across streams they come from happens-before queries
(``memory_hb.hb_conflicts``), with ``clique_bound`` as the matching lower bound.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import numpy as np

from .memory_timeline import place_timeline

SEARCH_WORK = 1_000_000  # bound on placement work (items + conflicts, summed over tries)


def align_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a if a > 1 else n


_VECTOR_FROM = 32  # conflicts of an item from which NumPy scans them faster than Python


def _place(sizes: Sequence[int], conflicts: list, order: Sequence[int], align: int):
    """Put each item, in ``order``, into the smallest gap between already placed conflicting
    items that holds it (best fit), else just above them. ``conflicts[i]`` may be a list or a
    NumPy index array; an item with many conflicts is scanned with NumPy (the same rule,
    vectorized: sort the placed neighbours' ranges, a running max of their aligned ends is the
    cursor before each, the first smallest gap that fits wins)."""
    if isinstance(conflicts, IntervalConflicts) and min(sizes, default=1) > 0:
        # overlap (+ extra pairs): O(n log n) work. Placed items of size 0 split the gaps the
        # rule below sees (a quirk kept for identical offsets): those plans take the scan.
        extras = getattr(conflicts, "extras", None)
        return place_timeline(sizes, *conflicts.ranges, extras, order, align)
    offsets = [-1] * len(sizes)
    offs = np.full(len(sizes), -1, dtype=np.int64)
    size_arr = np.asarray(sizes, dtype=np.int64)
    total = 0
    for i in order:
        size = sizes[i]
        conf = conflicts[i]
        if len(conf) < _VECTOR_FROM:
            off = _place_one(sizes, offsets, conf, size, align)
        else:
            lo = offs[conf]
            placed = lo >= 0
            lo = lo[placed]
            hi = lo + size_arr[conf[placed]]
            by = np.lexsort((hi, lo))
            lo, hi = lo[by], hi[by]
            ends = (hi + align - 1) // align * align if align > 1 else hi
            before = np.maximum.accumulate(np.concatenate(([0], ends)))
            gaps = lo - before[:-1]
            fits = np.flatnonzero(gaps >= size)
            off = int(before[fits[np.argmin(gaps[fits])]] if len(fits) else before[-1])
        offsets[i] = off
        offs[i] = off
        total = max(total, offsets[i] + size)
    return offsets, align_up(total, align)


def _place_one(sizes: Sequence[int], offsets: list[int], conf, size: int, align: int) -> int:
    """The smallest gap (the lowest of equal ones) between the placed items of ``conf`` that
    holds ``size``, else the aligned top of them."""
    if not isinstance(conf, list):
        conf = conf.tolist()
    busy = sorted((offsets[j], offsets[j] + sizes[j]) for j in conf if offsets[j] >= 0)
    best, best_gap, cursor = -1, -1, 0
    for lo, hi in busy:
        gap = lo - cursor
        if gap >= size and (best < 0 or gap < best_gap):
            best, best_gap = cursor, gap
        cursor = max(cursor, align_up(hi, align))
    return best if best >= 0 else cursor


def plan_offsets(
    sizes: Sequence[int],
    conflicts: list[list[int]] | IntervalConflicts,
    align: int = 1,
    spans: Sequence[int] | None = None,
    target: int = 0,
    refine: Callable[[], int] | None = None,
) -> tuple[list[int], int]:
    """Offsets such that no two conflicting items share a byte. Greedy placement (``_place``)
    under a few orders: by size; by size then longest life; by size times conflicts; then
    seeded random orders by size times (1 + eps * noise), then a swap local search on the best
    order. Stops as soon as ``target`` (a lower bound) is reached; the work is bounded.
    ``refine``: a costlier, tighter lower bound, asked for only when the first order misses
    ``target`` (the search then stops at the larger of the two, as if given it at first)."""
    n = len(sizes)
    spans = spans or [0] * n
    if isinstance(conflicts, IntervalConflicts):
        degree = conflicts.counts
    else:
        conflicts = [  # the form _place scans fastest
            list(map(int, c)) if len(c) < _VECTOR_FROM else np.asarray(c, dtype=np.int64)
            for c in conflicts
        ]
        degree = [len(c) for c in conflicts]
    target = align_up(target, align)
    orders = [
        sorted(range(n), key=lambda i: (-sizes[i], i)),
        sorted(range(n), key=lambda i: (-sizes[i], -spans[i], i)),
        sorted(range(n), key=lambda i: (-sizes[i] * (1 + degree[i]), i)),
    ]
    budget = max(4, SEARCH_WORK // max(n + sum(degree), 1))
    rng = random.Random(0)
    best_order, best = orders[0], _place(sizes, conflicts, orders[0], align)
    if refine is not None and best[1] > target:
        target = max(target, align_up(refine(), align))
    lazy = isinstance(conflicts, IntervalConflicts)
    if lazy and best[1] > target and sum(degree) <= 2 * MATERIALIZE_PAIRS:
        # more tries to come: scanning stored lists is faster (the offsets are the same)
        conflicts = [conflicts[i] for i in range(n)]
        conflicts = [c.tolist() if len(c) < _VECTOR_FROM else c for c in conflicts]
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


class IntervalConflicts:
    """The conflicts of (first, last, size) triples under the interval rule (inclusive ranges
    overlap), made on demand instead of stored: ``self[i]`` is an index array, ``counts[i]``
    its length. Sorted by first, the items that overlap item i and start no earlier are the
    run right after it; those that start earlier are the ones before it that are still live,
    a mask over that prefix. One scan costs O(n) NumPy work, so a whole placement is O(n^2)
    in C with no pair list in memory: with long-lived values (activations kept for a
    backward pass) the pairs themselves are quadratic in number."""

    def __init__(self, triples) -> None:
        n = len(triples)
        first = np.fromiter((t[0] for t in triples), dtype=np.int64, count=n)
        last = np.fromiter((t[1] for t in triples), dtype=np.int64, count=n)
        assert (first <= last).all(), "a live range ends before it starts"
        self.by_first = np.argsort(first, kind="stable")
        self.starts = first[self.by_first]
        self.lasts = last[self.by_first]
        self.pos = np.empty(n, dtype=np.int64)
        self.pos[self.by_first] = np.arange(n)
        self.ends = np.searchsorted(self.starts, self.lasts, side="right")
        # earlier-starting overlaps of position p: p minus those that ended before it starts
        # (such an item starts earlier still, so it sits before p)
        ended = np.searchsorted(np.sort(last), self.starts, side="left")
        counts = np.empty(n, dtype=np.int64)
        counts[self.by_first] = self.ends - np.arange(n) - 1 + np.arange(n) - ended
        self.counts = counts.tolist()
        self.ranges = (first.tolist(), last.tolist())  # each item's (firsts, lasts)

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, i: int) -> np.ndarray:
        p = int(self.pos[i])
        earlier = self.by_first[:p][self.lasts[:p] >= self.starts[p]]
        return np.concatenate((earlier, self.by_first[p + 1 : self.ends[p]]))


MATERIALIZE_PAIRS = 200_000  # up to this many conflict pairs are stored, not recomputed


def _interval_conflicts(triples):
    """What plan_intervals places against: stored lists when there are few pairs (the search
    may place a small problem thousands of times), else the on-demand form."""
    lazy = IntervalConflicts(triples)
    if sum(lazy.counts) <= 2 * MATERIALIZE_PAIRS:
        return [lazy[i].tolist() for i in range(len(lazy))]
    return lazy


def interval_conflicts(triples) -> list[list[int]]:
    """Pairs of (first, last, size) triples whose inclusive ranges overlap, as lists."""
    lazy = IntervalConflicts(triples)
    return [lazy[i].tolist() for i in range(len(lazy))]


def plan_intervals(triples, align: int = 1) -> tuple[list[int], int]:
    """Offsets for (first_use, last_use, size) triples so that no two whose inclusive live
    ranges overlap share a byte; returns (offsets, total bytes)."""
    sizes = [t[2] for t in triples]
    spans = [t[1] - t[0] for t in triples]
    bound = lower_bound([(f, la, align_up(x, align)) for f, la, x in triples])
    return plan_offsets(sizes, _interval_conflicts(triples), align, spans, bound)


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


def _bits(items) -> int:
    """A set of small non-negative ints as a bitset (a Python int)."""
    idx = np.fromiter(items, dtype=np.int64) if not isinstance(items, np.ndarray) else items
    arr = np.zeros(int(idx.max(initial=-1)) + 1, dtype=bool)
    arr[idx] = True
    return int.from_bytes(np.packbits(arr, bitorder="little").tobytes(), "little")


def _members(mask: int) -> list[int]:
    """The items of a bitset, ascending."""
    raw = np.frombuffer(mask.to_bytes((mask.bit_length() + 7) // 8, "little"), dtype=np.uint8)
    return np.flatnonzero(np.unpackbits(raw, bitorder="little")).tolist()


def live_sets(triples, steps: int) -> set[int]:
    """The distinct sets of items live at some step (``first <= k <= last``) as bitsets, by one
    sweep over the steps (each a clique of any conflict relation that includes overlap)."""
    adds: dict[int, int] = {}
    drops: dict[int, int] = {}
    for i, (first, last, _) in enumerate(triples):
        lo, hi = max(first, 0), min(last, steps - 1)
        if lo <= hi:
            adds[lo] = adds.get(lo, 0) | 1 << i
            drops[hi + 1] = drops.get(hi + 1, 0) | 1 << i
    live, found = 0, set()
    for k in range(steps):
        live = (live & ~drops.get(k, 0)) | adds.get(k, 0)
        found.add(live)
    return found


def clique_bound(sizes: Sequence[int], conflicts: list, seeds) -> int:
    """A lower bound for any placement: the weight of a clique of the conflict graph, grown
    greedily (heaviest first, then lowest index) from each seed (itself a clique: a bitset or
    a collection of item indices). Neighbour sets are bitsets, so a seed costs one AND per
    member and one test per candidate, each over n / 64 machine words."""
    nbrs = [_bits(c) for c in conflicts]
    size_arr = np.asarray(sizes, dtype=np.int64)
    best = 0
    for seed in seeds:
        mask = seed if isinstance(seed, int) else _bits(seed)
        if not mask:
            continue
        members = _members(mask)
        cand = nbrs[members[0]]
        for i in members[1:]:
            cand &= nbrs[i]
        weight = int(size_arr[members].sum())
        for i in sorted(_members(cand), key=lambda i: (-sizes[i], i)):
            if not mask & ~nbrs[i]:
                mask |= 1 << i
                weight += sizes[i]
        best = max(best, weight)
    return best
