"""The race checker inside regions: body plans are checked with the parent (hazards and live
overlaps per body, each body run simulated in random interleavings of its own streams inside
the parent's interleavings, against a plan-free evaluation), and planted bugs in a body's plan
are caught through the parent."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.backends.sim import SimProgram, evaluate_unplanned
from gpugraph.testing.races import (
    check_races,
    clobbered_plan,
    region_runners,
    with_body_plan,
)

RNG = np.random.default_rng(7)
X = RNG.standard_normal((4, 8)).astype(np.float32)
XS = RNG.standard_normal((5, 8)).astype(np.float32)


def _body(c, e):
    a = gg.tanh(c * 0.5 + e)
    b = gg.sin(a) * c
    return a + b * 0.1, (a * b).sum()


def every_region(x, xs):
    h, ys = gg.scan(_body, x[0], xs, reverse=True)
    w = gg.while_loop(lambda v: v.sum() < 50, lambda v: gg.exp(v * 0.1) + v * 1.5, x, max_steps=100)
    # a reduction in a branch keeps these conds regions (not lowered to a select)
    k = gg.cond(x.sum() > 0, lambda v: v * v.sum(), lambda v: gg.sin(v) + v, x[1])
    n = gg.fori_loop(
        0, 3, lambda i, v: gg.cond(v.sum() > 1, lambda u: u * u.max(), _twice, v), x[2]
    )
    return h, ys, w, k, n


def _twice(u):
    return u + u


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("streams", [1, 2])
def test_real_region_plans_are_race_free_and_every_body_is_checked(fuse, streams):
    c = gg.jit(every_region, fuse=fuse, streams=streams).lower(X, XS)
    report = check_races(c, X, XS, trials=4, seed=streams)
    assert report.ok, str(report)
    kinds = " ".join(report.regions)
    for body in ("(scan) body", "(while) cond", "(while) body", "(cond) branch 1"):
        assert body in kinds, kinds
    assert "(scan) body > " in kinds  # the cond nested in the fori_loop's body, recursively


def test_the_reference_evaluates_regions_without_any_plan():
    c = gg.jit(every_region).lower(X, XS)
    want = every_region(X, XS)
    got = evaluate_unplanned(c.graph, [X, XS])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-5)


def _clobbered(c, which: str):
    for k, runner in enumerate(region_runners(c)):
        if which in runner.plans:
            try:
                bad, a, b = clobbered_plan(runner.plans[which].memory)
            except ValueError:
                continue
            return with_body_plan(c, which, bad, region=k), a, b
    raise AssertionError(f"no region body {which!r} with two live arena buffers")


def test_planted_bug_a_clobbered_loop_body_plan_is_caught_through_the_parent():
    c = gg.jit(every_region, fuse=False).lower(X, XS)
    assert check_races(c, X, XS, trials=2).ok
    bad, a, b = _clobbered(c, "body")
    report = check_races(bad, X, XS, trials=3)
    assert not report.ok
    (overlap,) = report.overlaps
    assert overlap.region and "body" in str(overlap)
    assert {overlap.a.value, overlap.b.value} <= {v.id for v in a + b}
    # and the wrong numbers show in the runs, not only in the static check
    assert report.mismatches and "the sequential run" in report.mismatches[0]
    # the real compiled object is untouched
    assert check_races(c, X, XS, trials=1).ok


def test_planted_bug_a_body_reading_bytes_it_never_wrote_is_caught_by_the_runs():
    """A body whose first launch is dropped reads arena bytes nothing wrote in this
    iteration. The plan itself has no hazard or overlap; only running the body inside the
    loop, on an arena poisoned afresh every iteration, shows it."""

    def f(x):
        return gg.fori_loop(0, 4, lambda i, v: gg.tanh(v * 0.9 + 0.1) + v * 0.5, x)

    c = gg.jit(f, fuse=False).lower(X[0])
    (runner,) = region_runners(c)
    body = runner.plans["body"]
    ex = body.executable
    # the planted bug: the body's first arena value is never written (its launch dropped)
    first = next(k for k, la in enumerate(ex.launches) if la.runner is not None)
    bad_ex = _without_launch(ex, first)
    bad = _with_body_executable(c, bad_ex)
    report = check_races(bad, X[0], trials=3)
    assert not report.hazards and not report.overlaps
    assert report.mismatches, str(report)
    assert len(report.mismatches) == 4  # the sequential run and every trial
    assert check_races(c, X[0], trials=1).ok


def _without_launch(ex, k):
    import copy

    new = copy.copy(ex)
    new.launches = ex.launches[:k] + ex.launches[k + 1 :]
    return new


def _with_body_executable(c, ex):
    import copy
    from dataclasses import replace

    top = copy.copy(c.executable)
    top.launches = list(top.launches)
    at = next(k for k, la in enumerate(top.launches) if getattr(la.runner, "plans", None))
    runner = copy.copy(top.launches[at].runner)
    plan = copy.copy(runner.plans["body"])
    plan.executable, plan._program = ex, None
    runner.plans = {**runner.plans, "body": plan}
    runner._driver = None
    top.launches[at] = replace(top.launches[at], runner=runner)
    new = copy.copy(c)
    new.executable = top
    return new


def test_sim_program_walks_nested_bodies():
    c = gg.jit(every_region).lower(X, XS)
    paths = [p for p, _ in SimProgram(c.executable).walk()]
    assert paths[0] == "" and len(paths) == 1 + 2 + 1 + 2 + 1 + 2
