"""Conflicts between arena buffers across several streams, kept in linear space.

Two buffers conflict when their linear live ranges overlap, or when they are disjoint but the
earlier one's accesses are not all ordered (happens-before) before the later one's first write.
With long-lived values (activations kept for a backward pass) the overlap pairs are quadratic in
number, while the extra happens-before pairs sit in the short window in which streams run
concurrently. ``HBConflicts`` therefore stores only the extra pairs and answers overlap from the
ranges on demand (as ``IntervalConflicts`` does on one stream); ``hb_clique_bound`` computes the
same bound as ``memory_place.clique_bound`` over those conflicts from the ranges instead of one
neighbour bitset per buffer. On a ``Schedule`` the extra pairs come from per-stream windows over
the vector clocks (``window_extras``: on one stream, the buffers a given buffer conflicts with
through happens-before are one run of time steps), found by binary searches for all buffers at
once; they are the same pairs the per-buffer test finds.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Sequence

import numpy as np

from . import memory_place
from .memory_place import IntervalConflicts
from .schedule import Schedule

# the extra pairs from per-stream windows over the vector clocks (``window_extras``); False:
# one happens-before test per buffer in each window (the reference the tests compare against)
WINDOWS = True


class HBConflicts(IntervalConflicts):
    """Overlap of inclusive (first, last) ranges plus ``extras[i]``: the disjoint buffers that
    conflict with item i through happens-before (each pair listed on both sides)."""

    def __init__(self, first, last, extras: list[list[int]], horizon=None) -> None:
        super().__init__([(f, la, 0) for f, la in zip(first, last)])
        self.first = np.asarray(first, dtype=np.int64)
        self.last = np.asarray(last, dtype=np.int64)
        # an extra pair (a, b) with a ending before b starts has first[b] <= horizon[a]
        self.horizon = np.asarray(last if horizon is None else horizon, dtype=np.int64)
        if horizon is None:  # no window known: any later buffer may be an extra pair
            self.horizon = np.full(len(self.first), np.iinfo(np.int64).max)
        self.extras = [np.asarray(sorted(e), dtype=np.int64) for e in extras]
        self.extra_sets = [set(e) for e in extras]
        self.counts = [c + len(e) for c, e in zip(self.counts, extras)]

    def __getitem__(self, i: int) -> np.ndarray:
        return np.concatenate((super().__getitem__(i), self.extras[i]))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def conflict(self, i: int, j: int) -> bool:
        overlap = self.first[i] <= self.last[j] and self.first[j] <= self.last[i]
        return bool(overlap) or j in self.extra_sets[i]


def hb_conflicts(heads, members, slots, readers, sched: Schedule):
    """Buffers a, b conflict unless every access of one happens-before the first write of the
    other (later accesses of a buffer all depend on its first write). Overlapping linear
    ranges always conflict; for disjoint ones only the earlier can come first, and once past
    ``concurrent_until`` of all its accesses (when the schedule offers it) every later write is
    ordered after it, so happens-before is asked only inside that window. A wide window is
    tested with NumPy on the schedule's vector clocks (when happens-before is Schedule's own):
    step x happens before step j iff ``clock[j, stream of x] >= x``. Returns the conflicts as
    ``HBConflicts`` and each buffer's last access."""
    hb = sched.happens_before
    horizon_of = getattr(sched, "concurrent_until", None)
    clocks = type(sched).happens_before is Schedule.happens_before
    if horizon_of is not None and type(sched).concurrent_until is Schedule.concurrent_until:
        horizon_of = _horizons(sched).__getitem__  # the same numbers, for all steps at once
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
    if clocks and WINDOWS:
        return HBConflicts(first, last, window_extras(acc, first, last, sched), horizon), last
    by_first = sorted(range(n), key=lambda i: first[i])
    starts = [first[i] for i in by_first]
    first_arr, by_first_arr = np.asarray(first, dtype=np.int64), np.asarray(by_first, dtype=int)
    if clocks:
        stream_arr = np.asarray(sched._streams, dtype=np.int64)
    extras: list[list[int]] = [[] for _ in range(n)]
    for a in range(n):
        # only buffers first written after a's last access and inside its window: the
        # overlapping ones conflict anyway, and HBConflicts answers those from the ranges
        lo = bisect_right(starts, last[a])
        hi = bisect_right(starts, horizon[a])
        if lo >= hi:
            continue
        if not clocks or hi - lo < memory_place._VECTOR_FROM:
            later = [b for b in by_first[lo:hi] if not all(hb(x, first[b]) for x in acc[a])]
        else:
            win = by_first_arr[lo:hi]
            x = np.asarray(acc[a], dtype=np.int64)
            ordered = (sched.clock[np.ix_(first_arr[win], stream_arr[x])] >= x).all(axis=1)
            later = win[~ordered].tolist()
        for b in later:
            extras[a].append(b)
            extras[b].append(a)
    return HBConflicts(first, last, extras, horizon), last


def window_extras(acc, first, last, sched: Schedule) -> list[list[int]]:
    """The extra pairs of ``hb_conflicts`` from the vector clocks, all buffers at once.

    A buffer b first written at step j on stream s after a's last access conflicts with a
    when some access x of a does not happen before j, i.e. when j comes before ``W_s(a)``,
    the first step on s that knows every access of a (the largest over x of the first step
    k on s with ``clock[k, stream of x] >= x``; clock columns only grow along a stream). So
    on each stream a's partners are the buffers first written there in (last[a], W_s(a)):
    two binary searches per stream instead of a test per buffer in a's window."""
    n_steps = len(sched.steps)
    streams = np.asarray(sched._streams, dtype=np.int64)
    on = [np.flatnonzero(streams == k) for k in range(sched.num_streams)]
    know = np.full((len(on), n_steps), n_steps, dtype=np.int64)  # know[s, x]: that first k
    for t, xs in enumerate(on):
        for s, ks in enumerate(on):
            if len(xs) and len(ks):
                at = np.searchsorted(sched.clock[ks, t], xs, side="left")
                know[s, xs] = np.where(at < len(ks), ks[np.minimum(at, len(ks) - 1)], n_steps)
    n = len(first)
    if not n:
        return []
    flat = np.fromiter((x for a in acc for x in a), dtype=np.int64)
    starts = np.cumsum([0] + [len(a) for a in acc[:-1]])
    until = np.maximum.reduceat(know[:, flat], starts, axis=1)  # until[s, a] = W_s(a)
    first_arr, last_arr = np.asarray(first, dtype=np.int64), np.asarray(last, dtype=np.int64)
    rows, cols = [], []
    for s in range(len(on)):
        mine = np.flatnonzero(streams[first_arr] == s)  # buffers first written on stream s
        mine = mine[np.argsort(first_arr[mine], kind="stable")]
        at = first_arr[mine]
        lo = np.searchsorted(at, last_arr, side="right")
        hi = np.searchsorted(at, until[s], side="left")
        count = np.maximum(hi - lo, 0)
        total = int(count.sum())
        if not total:
            continue
        a = np.repeat(np.arange(n), count)
        # the k-th partner of a is mine[lo[a] + k]
        offset = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        b = mine[np.repeat(lo, count) + offset]
        rows += [a, b]
        cols += [b, a]
    if not rows:
        return [[] for _ in range(n)]
    r, c = np.concatenate(rows), np.concatenate(cols)
    by = np.lexsort((c, r))
    bounds = np.searchsorted(r[by], np.arange(n + 1), side="left").tolist()
    c = c[by].tolist()
    return [c[bounds[i] : bounds[i + 1]] for i in range(n)]


def _horizons(sched: Schedule) -> list[int]:
    """``sched.concurrent_until(x)`` for every step x, by one binary search per stream pair
    over the vector clocks instead of one per step (clock[., t] is non-decreasing along each
    stream: the steps of stream k before the first that knows x may run concurrently)."""
    streams = np.asarray(sched._streams, dtype=np.int64)
    out = np.arange(len(streams), dtype=np.int64)
    on = [np.flatnonzero(streams == k) for k in range(sched.num_streams)]
    for t, xs in enumerate(on):
        for k, ys in enumerate(on):
            if k == t or not len(ys) or not len(xs):
                continue
            first = np.searchsorted(sched.clock[ys, t], xs, side="left")
            known = first > 0
            cand = ys[np.maximum(first - 1, 0)]
            out[xs] = np.where(known, np.maximum(out[xs], cand), out[xs])
    return out.tolist()


def hb_clique_bound(sizes: Sequence[int], conflicts: HBConflicts, seeds) -> int:
    """``memory_place.clique_bound(sizes, list(conflicts), seeds)`` without neighbour bitsets.
    Item j conflicts with every member of a seed when it overlaps the members it does not
    extra-conflict with: the members that ended before j starts and those that start after j
    ends are counted by two binary searches, and j is a candidate when its extra pairs inside
    the seed are exactly that many. The greedy growth (heaviest first, then lowest index) asks
    the same of each candidate against the items added so far. Seeds go heaviest first, and
    one that cannot beat the best so far even with every possible candidate is skipped (the
    maximum, the only result, does not change)."""
    size_arr = np.asarray(sizes, dtype=np.int64)
    first, last, horizon = conflicts.first, conflicts.last, conflicts.horizon
    n = len(size_arr)
    edeg = np.fromiter((len(e) for e in conflicts.extras), dtype=np.int64, count=n)
    ptr = np.concatenate(([0], np.cumsum(edeg)))
    flat = np.concatenate([*conflicts.extras, np.zeros(0, dtype=np.int64)])
    inseed = np.zeros(n, dtype=bool)
    fl, ll, xs = first.tolist(), last.tolist(), conflicts.extra_sets
    best = 0
    # heaviest seeds first: a seed whose members and possible candidates together weigh no
    # more than the best clique so far cannot raise the bound and is skipped
    mems = [m for m in map(_member_array, seeds) if len(m)]
    weights = [int(size_arr[m].sum()) for m in mems]
    for k in sorted(range(len(mems)), key=lambda k: -weights[k]):
        mem, weight = mems[k], weights[k]
        # a candidate overlaps every member or has extra pairs with those it does not; an
        # extra pair starts inside the earlier item's window, so either way j starts by every
        # member's horizon and j's horizon reaches every member's first write
        inseed[mem] = True
        near = (first <= horizon[mem].min()) & (horizon >= first[mem].max()) & ~inseed
        js = np.flatnonzero(near)
        if weight + int(size_arr[js].sum()) <= best:
            inseed[mem] = False
            continue
        ended = np.searchsorted(np.sort(last[mem]), first[js], side="left")
        later = len(mem) - np.searchsorted(np.sort(first[mem]), last[js], side="right")
        need = ended + later  # members that j does not overlap
        pick = (need > 0) & (need <= edeg[js])
        maybe = js[pick]
        lens = edeg[maybe]
        at = np.repeat(ptr[maybe] - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        hits = np.bincount(np.repeat(np.arange(len(maybe)), lens), inseed[flat[at]], len(maybe))
        inseed[mem] = False
        cand = np.concatenate((js[need == 0], maybe[hits == need[pick]]))
        cand = cand[np.lexsort((cand, -size_arr[cand]))]
        # greedy growth: i joins when the added items it does not overlap (those that end
        # before it starts, those that start after it ends) are all extra pairs of i
        lasts: list[int] = []
        firsts: list[int] = []
        added: set[int] = set()
        for i in cand.tolist():
            req = bisect_left(lasts, fl[i]) + len(firsts) - bisect_right(firsts, ll[i])
            if req and (req > len(xs[i]) or len(added & xs[i]) != req):
                continue
            insort(lasts, ll[i])
            insort(firsts, fl[i])
            added.add(i)
            weight += sizes[i]
        best = max(best, weight)
    return best


def _member_array(seed) -> np.ndarray:
    """The items of a seed (a bitset or a collection of indices) as an index array."""
    if not isinstance(seed, int):
        return np.unique(np.fromiter(seed, dtype=np.int64))
    raw = np.frombuffer(seed.to_bytes((seed.bit_length() + 7) // 8, "little"), dtype=np.uint8)
    return np.flatnonzero(np.unpackbits(raw, bitorder="little"))
