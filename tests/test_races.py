"""The stream simulator: no hazards in real plans; planted bugs are each caught."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpugraph as gg
from gpugraph.memory import plan_memory
from gpugraph.testing.races import (
    LinearOrder,
    branchy_function,
    check_races,
    clobbered_plan,
    dag_function,
    drop_wait,
    stream_safe_plan,
    with_plan,
    with_schedule,
)
from tests.dag_strategies import dag_recipes, lower

X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
Y = np.cos(X * 3).astype(np.float32)

recipes = dag_recipes(max_size=20)


@settings(max_examples=40, deadline=None)
@given(recipe=recipes, k=st.sampled_from([1, 2, 4]))
def test_random_dags_have_no_hazards(recipe, k):
    fn = dag_function(recipe)
    c = lower(fn, X, Y, streams=k)
    report = check_races(c, X, Y, trials=12, seed=len(recipe))
    assert report.ok, str(report)
    np.testing.assert_allclose(c(X, Y), fn(X, Y), rtol=1e-6, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(recipe=recipes, k=st.sampled_from([2, 4]))
def test_reference_stream_safe_plan_has_no_hazards(recipe, k):
    c = lower(dag_function(recipe), X, Y, streams=k)
    safe = with_plan(c, stream_safe_plan(c.graph, c.schedule))
    assert check_races(safe, X, Y, trials=6).ok


def test_inception_is_race_free_on_several_streams():
    fn = branchy_function(4, 3)
    c = lower(fn, X)
    assert c.schedule.num_streams >= 2
    report = check_races(c, X, trials=50, seed=1)
    assert report.ok, str(report)
    assert report.num_streams == c.schedule.num_streams


def cross_stream_waits(sched):
    return [(j, w) for j, s in enumerate(sched.steps) for w in s.waits]


def test_planted_bug_dropped_wait_is_caught():
    c = lower(branchy_function(4, 2), X)
    pairs = cross_stream_waits(c.schedule)
    assert pairs
    for j, w in pairs:
        bad = with_schedule(c, drop_wait(c.schedule, j, w))
        report = check_races(bad, X, trials=4)
        named = {(h.a.step, h.b.step) for h in report.hazards}
        assert (w, j) in named, f"dropping wait {w}->{j} not reported:\n{report}"
        h = next(h for h in report.hazards if (h.a.step, h.b.step) == (w, j))
        assert h.kind == "RAW"
        assert c.schedule.steps[w].node.op in str(h) and c.schedule.steps[j].node.op in str(h)


def test_planted_bug_dropped_wait_changes_results_in_some_interleaving():
    def fn(x):  # a long producer on one stream, a quick consumer on the other
        a = x
        for _ in range(6):
            a = gg.tanh(a) + 1.0
        b = gg.sin(x)
        return gg.concatenate([a * b, b], axis=0)

    c = lower(fn, X, streams=2)
    pairs = cross_stream_waits(c.schedule)
    assert pairs
    j, w = pairs[-1]
    report = check_races(with_schedule(c, drop_wait(c.schedule, j, w)), X, trials=200, seed=3)
    assert report.hazards
    assert report.mismatches, "no interleaving exposed the dropped wait"


def branches_with_temporaries(x):
    outs = []
    for b in range(4):  # y dies inside its branch: a linear-order planner hands its bytes on
        y = gg.sin(x + float(b))
        t = gg.tanh(y * y)
        outs.append(t + y)
    return gg.concatenate(outs, axis=0)


def test_planted_bug_linear_order_reuse_is_caught():
    c = lower(branches_with_temporaries, X)
    assert c.schedule.num_streams >= 2
    bad_plan = plan_memory(c.graph, LinearOrder(c.schedule))
    assert bad_plan.arena_bytes < c.memory.arena_bytes  # it does reuse more
    report = check_races(with_plan(c, bad_plan), X, trials=30)
    assert report.hazards, "linear-order reuse on several streams went unnoticed"
    assert report.overlaps, "the plan check missed values sharing bytes across streams"
    assert report.mismatches, "no interleaving exposed the linear-order reuse"
    assert {h.kind for h in report.hazards} & {"WAR", "WAW", "RAW"}
    assert all(h.space == "arena" for h in report.hazards)
    # one stream: the same linear-order plan is fine
    c1 = lower(branches_with_temporaries, X, streams=1)
    assert check_races(with_plan(c1, plan_memory(c1.graph, LinearOrder(c1.schedule))), X).ok


def test_report_shape():
    c = lower(branchy_function(2, 1), X)
    r = check_races(c, X, trials=3)
    assert len(r) == 0 and list(r) == [] and r.trials == 3
    assert "0 hazard(s)" in str(r)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_weak_scalar_and_pytree_args(k):
    def fn(x, s):
        return gg.concatenate([gg.tanh(x) * s, gg.sin(x) + s], axis=0)

    c = gg.jit(fn, backend="numpy", streams=k).lower(X, 2.0)
    assert check_races(c, X, 2.0, trials=5).ok


def late_read(x):  # a is read again after b is written: they must not share bytes
    a = gg.sin(x)
    b = gg.exp(x)
    c = gg.tanh(b) * b
    return gg.concatenate([c + a, b], axis=0)


def late_read_through_a_view(x):  # the same, but the late read of a goes through views
    a = gg.sin(x)
    b = gg.exp(x)
    c = gg.tanh(b) * b
    return gg.concatenate([c + gg.reshape(gg.reshape(a, (64,)), (8, 8)), b], axis=0)


@pytest.mark.parametrize("fn", [late_read, late_read_through_a_view])
def test_planted_bug_ordered_clobber_on_one_stream_is_caught(fn):
    c = lower(fn, X, streams=1)
    assert check_races(c, X, trials=2).ok
    bad_plan, a, b = clobbered_plan(c.memory)
    bad = with_plan(c, bad_plan)
    # the bug is real: the compiled function returns wrong numbers
    assert not np.allclose(bad(X), fn(X), atol=1e-3)
    report = check_races(bad, X, trials=0)
    assert not report.hazards  # one stream: every pair of launches is ordered
    assert not report.ok
    assert report.overlaps, str(report)
    named = {(o.a.value, o.b.value) for o in report.overlaps}
    assert named <= {(u.id, v.id) for u in a for v in b}, str(report)
    o = report.overlaps[0]
    for v in (o.a, o.b):  # both values and their nodes are named
        assert f"#{v.value} ({v.op} at test_races.py:" in str(o)
    # the numbers are compared with an unplanned evaluation, not with the broken plan itself
    assert report.mismatches and "the sequential run" in report.mismatches[0]


@settings(max_examples=15, deadline=None)
@given(recipe=recipes, k=st.sampled_from([1, 4]))
def test_random_planted_clobbers_are_caught(recipe, k):
    c = lower(dag_function(recipe), X, Y, streams=k)
    try:
        bad_plan, a, b = clobbered_plan(c.memory)
    except ValueError:  # no two buffers live at the same time: nothing to clobber
        return
    report = check_races(with_plan(c, bad_plan), X, Y, trials=0)
    pairs = {(u.id, v.id) for u in a for v in b}
    assert {(o.a.value, o.b.value) for o in report.overlaps} & pairs, str(report)


def test_planted_bug_clobber_on_several_streams_is_caught():
    c = lower(branches_with_temporaries, X, streams=4)
    assert c.schedule.num_streams >= 2
    bad_plan, a, b = clobbered_plan(c.memory)
    report = check_races(with_plan(c, bad_plan), X, trials=10)
    pairs = {(u.id, v.id) for u in a for v in b}
    assert report.overlaps and {(o.a.value, o.b.value) for o in report.overlaps} <= pairs


def test_in_place_reuse_passes_and_a_non_elementwise_overwrite_is_caught():
    def fn(x, w):  # the tanh/exp chain runs in place; the matmul is not elementwise
        h = gg.exp(gg.tanh(gg.sin(x) + 1.0))
        return gg.concatenate([h @ w, w], axis=0)

    c = lower(fn, X, Y, streams=1)
    assert c.memory.inplace_count >= 2
    assert check_races(c, X, Y, trials=2).ok
    matmul = next(n for n in c.graph.nodes if n.op == "matmul")
    h, out = matmul.inputs[0], matmul.outputs[0]
    slots = c.memory.slots
    assert slots[h].kind == slots[out].kind == "arena"
    assert slots[h].last == slots[out].first  # h dies at the matmul that writes out
    bad_plan = copy.copy(c.memory)
    bad_plan.slots = {v: copy.copy(s) for v, s in slots.items()}
    bad_plan.slots[out].offset = slots[h].offset  # the matmul "in place": it reads rows it wrote
    report = check_races(with_plan(c, bad_plan), X, Y, trials=0)
    assert len(report.overlaps) == 1, str(report)
    assert "not in place" in str(report.overlaps[0]) and "matmul" in str(report.overlaps[0])
    # NumPy's matmul copies an operand that overlaps ``out``, so the replay gets the right
    # numbers here; a GPU GEMM would not. Only the plan check can see this one.
    assert not report.ok and not report.mismatches
