"""Small conds lowered to both-branches-then-select: same numbers as the region (eager, and jit
with the pass off), fused with their surroundings, said by explain(), opt-out flag, and left
alone when a branch is not cheap elementwise work."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.passes import cond_select
from gpugraph.testing.races import check_races

X = np.linspace(-2, 2, 8, dtype=np.float32)
SAID = "small cond lowered to both branches + select"


def small(x):
    y = x * 2  # the untaken sqrt branch makes NaNs on negative inputs; they must not leak
    return gg.cond(y.min() >= 0, lambda a: gg.sqrt(a) + 1, lambda a: gg.exp(-a) * a, y) + 1


INPUTS = (X, np.abs(X))  # the false branch, then the true one


def three(i, x):
    return gg.switch(i, [lambda a: a + 1, lambda a: a * a, lambda a: -a], x)


def regions(c) -> list[str]:
    return [n.op for n in c.graph.nodes if n.op in ("cond", "while", "scan")]


def test_small_cond_becomes_a_select_fused_with_its_surroundings():
    c = gg.jit(small).lower(X)
    assert not regions(c)
    assert SAID in c.explain()
    # x * 2 and its min: one row reduction group | the two branches, the select and + 1: one
    # kernel
    assert c.graph.op_counts() == {"fused_reduce": 1, "fused": 1}
    f = gg.jit(small)
    # on the NumPy backend the select is exact; the cpu backend's exp is libm's, which may
    # differ from NumPy's by an ulp or two (docs/cpu-backend.md, "Semantics": float32 rtol
    # 2e-5), so there it is compared at that tolerance
    exact = f.lower(X).backend.name == "numpy"
    with np.errstate(invalid="ignore"):  # NumPy warns about the untaken sqrt (documented)
        for x in INPUTS:
            want = small(x)  # eager: one branch, the region's semantics
            got = f(x)
            if exact:
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=0)
            assert not np.isnan(got).any()
    assert f.cache_size == 1


@pytest.mark.parametrize("i", [-3, 0, 1, 2, 7])
def test_switch_select_clamps_like_the_region(i):
    got = gg.jit(three)(np.int64(i), X)
    np.testing.assert_array_equal(got, three(np.int64(i), X))


def test_opt_out_keeps_the_region_and_gives_the_same_numbers():
    lowered = gg.jit(small)
    kept = gg.jit(small, cond_to_select=False)
    c = kept.lower(X)
    assert regions(c) == ["cond"] and SAID not in c.explain()
    with np.errstate(invalid="ignore"):
        for x in INPUTS:
            np.testing.assert_array_equal(kept(x), lowered(x))


@pytest.mark.parametrize(
    "branch",
    [lambda a: a * a.sum(), lambda a: gg.fori_loop(0, 2, lambda i, b: b * 0.5, a)],
    ids=["reduction", "nested region"],
)
def test_a_branch_that_is_not_cheap_elementwise_stays_a_region(branch):
    def f(p, x):
        return gg.cond(p, branch, lambda a: a + 1, x)

    c = gg.jit(f).lower(np.bool_(True), X)
    assert "cond" in regions(c) and SAID not in c.explain()


def test_large_outputs_stay_a_region():
    big = np.ones(cond_select.MAX_ELEMENTS + 1, np.float32)
    c = gg.jit(lambda p, x: gg.cond(p, lambda a: a + 1, lambda a: a, x)).lower(np.bool_(1), big)
    assert regions(c) == ["cond"]


def test_gradients_through_a_selected_cond_match_finite_differences():
    def loss(x):
        return gg.cond(x.sum() > 0, lambda a: gg.sin(a) * a, lambda a: a * a * 0.5, x).sum()

    g = gg.jit(gg.grad(loss))
    c = gg.jit(gg.grad(loss)).lower(X)
    assert SAID in c.explain()
    for x in (X.astype(np.float64) + 0.5, -X.astype(np.float64) - 0.5):  # away from the switch
        eps = 1e-6
        fd = [(loss(x + eps * e) - loss(x - eps * e)) / (2 * eps) for e in np.eye(len(x))]
        np.testing.assert_allclose(g(x), np.array(fd), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g(x), gg.grad(loss)(x), rtol=1e-12)


def test_selected_plan_is_race_free_on_two_streams():
    c = gg.jit(small, streams=2, fuse=False).lower(X)
    assert SAID in c.explain()
    with np.errstate(invalid="ignore"):
        report = check_races(c, X, trials=4)
    assert report.ok, str(report)
