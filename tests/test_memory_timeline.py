"""The placement over a segment tree on time (gpugraph/memory_timeline.py) gives the offsets of
the scan over every conflict (memory_place._place on stored lists), on the interval rule and
with extra happens-before pairs; the all-steps horizons equal Schedule.concurrent_until; and
plan_offsets asks for the costly clique bound only when the first order misses the cheap one."""

from __future__ import annotations

import random

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.memory_hb import HBConflicts, _horizons
from gpugraph.memory_place import _VECTOR_FROM, IntervalConflicts, _place, plan_offsets
from gpugraph.memory_timeline import _add
from gpugraph.testing.races import branchy_function


def stored(conflicts, n: int) -> list:
    """The conflicts as _place's scan takes them (plan_offsets' conversion)."""
    out = []
    for i in range(n):
        c = conflicts[i]
        out.append(c.tolist() if len(c) < _VECTOR_FROM else np.asarray(c, dtype=np.int64))
    return out


def random_case(rng: random.Random, n: int, steps: int, extra: bool):
    triples = []
    for _ in range(n):
        f = rng.randrange(steps)
        triples.append((f, rng.randrange(f, steps), rng.choice([1, 3, 8, 16, 64, 100, 256])))
    if not extra:
        return triples, IntervalConflicts(triples)
    extras: list[list[int]] = [[] for _ in range(n)]
    for _ in range(rng.randrange(2 * n)):
        a, b = rng.randrange(n), rng.randrange(n)
        if triples[a][1] < triples[b][0] and b not in extras[a]:
            extras[a].append(b)
            extras[b].append(a)
    return triples, HBConflicts([t[0] for t in triples], [t[1] for t in triples], extras)


@pytest.mark.parametrize("extra", [False, True])
@pytest.mark.parametrize("big", [False, True])  # big: many items scan with NumPy in _place
def test_timeline_offsets_equal_the_scan_over_every_conflict(extra, big):
    rng = random.Random(7 + 2 * big + extra)
    for _ in range(40 if big else 300):
        n = rng.randrange(40, 160) if big else rng.randrange(1, 30)
        triples, conflicts = random_case(rng, n, rng.randrange(1, 3 * n), extra)
        sizes = [t[2] for t in triples]
        order = list(range(n))
        rng.shuffle(order)
        align = rng.choice([1, 4, 64, 256])
        got = _place(sizes, conflicts, order, align)  # the timeline
        assert got == _place(sizes, stored(conflicts, n), order, align)
        offsets, total = got
        for i in range(n):  # and valid: no two conflicting items share a byte
            for j in conflicts[i].tolist():
                assert offsets[i] + sizes[i] <= offsets[j] or offsets[j] + sizes[j] <= offsets[i]
        assert total >= max(o + s for o, s in zip(offsets, sizes))


def test_a_run_list_merges_what_it_touches():
    runs: list[int] = []
    for lo, hi in [(10, 20), (30, 40), (20, 25), (50, 60), (5, 10), (26, 29), (24, 31)]:
        _add(runs, lo, hi)
    assert runs == [5, 40, 50, 60]
    _add(runs, 0, 100)
    assert runs == [0, 100]


@pytest.mark.parametrize("branches,depth", [(4, 3), (3, 5)])
def test_all_step_horizons_equal_concurrent_until(branches, depth):
    fn = branchy_function(branches, depth)

    def twice(x):  # two rounds: streams sync at the concatenate, then fork again
        return fn(fn(x)[:8] * 2.0)

    c = gg.jit(twice, backend="numpy", streams=4, fuse=False).lower(
        gg.ShapeDtype((8, 8), np.float32)
    )
    sched = c.schedule
    assert sched.num_streams > 1
    want = [sched.concurrent_until(i) for i in range(len(sched.steps))]
    assert _horizons(sched) == want
    assert any(h > i for i, h in enumerate(want))  # some step runs concurrently with later ones


def test_the_clique_bound_is_asked_for_only_when_the_cheap_bound_is_missed():
    rng = random.Random(3)
    triples, conflicts = random_case(rng, 60, 40, True)
    sizes = [t[2] for t in triples]
    asked = []

    def refine(value):
        def f() -> int:
            asked.append(value)
            return value

        return f

    reached = plan_offsets(sizes, conflicts, 64, None, 10**9, refine(0))
    assert asked == []  # the first order already met the target
    top = plan_offsets(sizes, conflicts, 64, None, 0)[1]  # what the search reaches with no stop
    for tighter in (top, top + 640):
        asked.clear()
        got = plan_offsets(sizes, conflicts, 64, None, 0, refine(tighter))
        assert asked == [tighter] and got == plan_offsets(sizes, conflicts, 64, None, tighter)
    assert reached[1] >= top
