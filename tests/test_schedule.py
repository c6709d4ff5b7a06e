"""The scheduler: streams per chain, minimal waits, and a true happens-before relation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpugraph as gg
from gpugraph.schedule import Schedule, Step, schedule, vector_clocks
from gpugraph.testing.races import branchy_function, dag_function
from tests.dag_strategies import dag_recipes, lower

X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)

recipes = dag_recipes(max_size=24)


def closure(sched: Schedule) -> np.ndarray:
    """Brute-force happens-before: program order + wait edges, transitively (Warshall)."""
    n = len(sched.steps)
    hb = np.zeros((n, n), dtype=bool)
    last: dict[int, int] = {}
    for j, s in enumerate(sched.steps):
        if s.stream in last:
            hb[last[s.stream], j] = True
        last[s.stream] = j
        for w in s.waits:
            hb[w, j] = True
    for k in range(n):
        hb |= hb[:, k : k + 1] & hb[k : k + 1, :]
    return hb


def data_edges(sched: Schedule):
    pos = {s.node: i for i, s in enumerate(sched.steps)}
    for j, s in enumerate(sched.steps):
        for v in s.node.inputs:
            i = pos.get(v.node)
            if i is not None and v.node.op != "constant":
                yield i, j


def test_chain_stays_on_one_stream():
    def chain(x):
        for _ in range(6):
            x = gg.tanh(x) * 2.0
        return x

    s = lower(chain, X).schedule
    assert s.num_streams == 1
    assert s.num_waits == 0
    assert all(step.stream == 0 for step in s.steps)


def test_inception_gets_several_streams_and_chains_stay_put():
    c = lower(branchy_function(4, 3), X)
    s = c.schedule
    assert s.num_streams >= 2
    concat = next(i for i, st_ in enumerate(s.steps) if st_.node.op == "concatenate")
    assert len(s.steps[concat].waits) >= 1
    # every node with one consumer and whose consumer has one producer shares its stream
    for i, j in data_edges(s):
        ni, nj = s.steps[i].node, s.steps[j].node
        n_users = sum(1 for st_ in s.steps if any(v.node is ni for v in st_.node.inputs))
        n_prods = len({v.node for v in nj.inputs if v.node is not None and v.node.op != "constant"})
        if n_users == 1 and n_prods == 1:
            assert s.steps[i].stream == s.steps[j].stream, (ni, nj)
    assert "stream" in c.explain()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_stream_cap(k):
    s = lower(branchy_function(6, 2), X, streams=k).schedule
    assert s.num_streams <= k
    assert max(step.stream for step in s.steps) < k


def test_happens_before_accepts_nodes_and_indices():
    s = lower(branchy_function(3, 2), X).schedule
    a, b = s.steps[1].node, s.steps[-1].node
    assert s.happens_before(a, b) == s.happens_before(1, len(s.steps) - 1)
    assert not s.happens_before(b, a)
    assert not s.happens_before(a, a)


def test_vector_clocks_small():
    # s0: 0 -> 2 ; s1: 1 -> 3 (3 waits on 0)
    clock = vector_clocks([0, 1, 0, 1], [(), (), (), (0,)], 2)
    assert clock.tolist() == [[0, -1], [-1, 1], [2, -1], [0, 3]]


def test_schedule_refresh_after_edit():
    s = lower(branchy_function(2, 2), X).schedule
    j = next(i for i, st_ in enumerate(s.steps) if st_.waits)
    w = s.steps[j].waits[0]
    assert s.happens_before(w, j)
    steps = [
        Step(x.node, x.stream, () if i == j else x.waits, x.record) for i, x in enumerate(s.steps)
    ]
    assert not Schedule(steps, s.num_streams).happens_before(w, j)


@settings(max_examples=60, deadline=None)
@given(recipe=recipes, k=st.sampled_from([1, 2, 4]))
def test_random_dags_hb_is_exact_and_waits_minimal(recipe, k):
    s = lower(dag_function(recipe), X, X[::-1].copy(), streams=k).schedule
    n = len(s.steps)
    hb = closure(s)
    fast = np.zeros((n, n), dtype=bool)
    for i in range(n):
        for j in range(n):
            fast[i, j] = s.happens_before(i, j)
    np.testing.assert_array_equal(fast, hb)
    for i in range(n):
        np.testing.assert_array_equal(s.after(i), hb[i])
    # every data edge is ordered
    for i, j in data_edges(s):
        assert hb[i, j], f"edge {i}->{j} not ordered"
    # waits only on cross-stream steps, and none is implied by the others
    for j, step in enumerate(s.steps):
        for w in step.waits:
            assert s.steps[w].stream != step.stream
            others = [
                Step(x.node, x.stream, tuple(v for v in x.waits if v != w) if i == j else x.waits)
                for i, x in enumerate(s.steps)
            ]
            assert not Schedule(others, s.num_streams).happens_before(w, j), (w, j)
        assert bool(step.record) == any(w == j for x in s.steps for w in x.waits)
    # concurrent_until: the last step not ordered after i
    for i in range(n):
        expect = max([i] + [j for j in range(i + 1, n) if not hb[i, j]])
        assert s.concurrent_until(i) == expect


def test_schedule_function_default_width():
    g = lower(branchy_function(2, 1), X).graph
    assert schedule(g).num_streams == 2
    assert schedule(g, 1).num_streams == 1
