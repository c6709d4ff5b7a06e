"""Memory of regions: the reverse-mode tape of a scan is a stack in the parent's arena, planned
once and written row by row (no array made per call), and explain() says where it lives."""

from __future__ import annotations

import numpy as np

import gpugraph as gg

RNG = np.random.default_rng(3)
W = (RNG.standard_normal((3, 3)) * 0.5).astype(np.float64)
XS = RNG.standard_normal((6, 3)).astype(np.float64)


def loss(w, xs):
    h, ys = gg.scan(lambda h, x: (gg.tanh(h @ w + x), h.sum()), gg.zeros((3,), np.float64), xs)
    return (h * h).sum() + ys.sum()


def test_the_scan_tape_is_an_arena_stack_planned_once():
    f = gg.jit(gg.grad(loss))
    c = f.lower(W, XS)
    fwd = next(n for n in c.graph.nodes if n.op == "scan" and not n.attrs["reverse"])
    tape = [v for v in fwd.outputs[fwd.attrs["n_carry"] :] if v.type.shape == (6, 3)]
    assert tape, "the forward scan stacks the carry entering every step"
    slot = c.memory.slots[c.memory.root(tape[0])]
    assert slot.kind == "arena"
    assert f"f64[6,3] in a 144 B stack in the parent arena at offset {slot.offset}" in (c.explain())
    arena = c.executable.arena
    view = c.executable.fixed[tape[0]]
    g1 = c(W, XS)
    assert c.executable.arena is arena and c.executable.fixed[tape[0]] is view
    g2 = c(W, XS * 0.5)
    assert np.shares_memory(view, arena)  # the rows live in the arena, not a per-call array
    eps = 1e-6
    for g, xs in ((g1, XS), (g2, XS * 0.5)):
        fd = np.zeros_like(W)
        for i in np.ndindex(W.shape):
            d = np.zeros_like(W)
            d[i] = eps
            fd[i] = (loss(W + d, xs) - loss(W - d, xs)) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(g, gg.grad(loss)(W, xs), rtol=1e-12, atol=1e-12)


def nested(x, xs):
    def step(c, e):
        d = gg.cond(c.sum() > 0, lambda a: gg.tanh(a) * a.sum(), lambda a: a * 0.5 - 1, c + e)
        return d * 0.9 + e, (d * d).sum()

    h, ys = gg.scan(step, x, xs)
    w = gg.while_loop(lambda v: v.sum() < 30, lambda v: gg.exp(v * 0.1) + v, h, max_steps=50)
    side = gg.sin(xs) * gg.cos(xs) + gg.exp(xs) * gg.tanh(xs)  # independent: another stream
    return w * 2, ys, side


X4 = RNG.standard_normal(4).astype(np.float32)
XS4 = RNG.standard_normal((5, 4)).astype(np.float32)


def _runners(c):
    from gpugraph.testing.races import region_runners

    return region_runners(c)


def test_body_arenas_are_child_plans_inside_the_parent_arena():
    seen_streams = set()
    for streams in (1, 2):
        c = gg.jit(nested, fuse=False, streams=streams).lower(X4, XS4)
        assert c.memory.scratch and len(c.memory.scratch) == 2
        text = c.explain()
        assert "a child plan in the parent arena at [" in text
        for r in _runners(c):
            off, size = c.memory.scratch[r.node]
            assert r.child_range == (off, size) and off + size <= c.memory.arena_bytes
        got = c(X4, XS4)
        for r in _runners(c):  # made when the parent's arena was: views of its bytes
            for plan in r.plans.values():
                if plan.memory.arena_bytes:
                    assert np.shares_memory(plan.executable.arena, c.executable.arena)
        want = nested(X4, XS4)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-6)
        if c.schedule.num_streams > 1:  # concurrent streams: child ranges have their own bytes
            slots = [s for s in c.memory.slots.values() if s.kind == "arena"]
            for off, size in c.memory.scratch.values():
                assert all(s.offset + s.size <= off or s.offset >= off + size for s in slots)
        from gpugraph.testing.races import check_races

        report = check_races(c, X4, XS4, trials=3)
        assert report.ok, str(report)
        seen_streams.add(c.schedule.num_streams)
    assert seen_streams == {1, 2}


def test_planted_bug_a_child_arena_on_a_live_value_is_caught():
    import copy

    from gpugraph.testing.races import check_races, with_plan

    def f(x, xs):
        y = x * 3.0 + 1.0  # live across the scan: read after it
        h, ys = gg.scan(lambda c, e: (gg.tanh(c * 0.5 + e) * 2.0 - c, c.sum()), x, xs)
        return h + y, ys

    c = gg.jit(f, fuse=False).lower(X4, XS4)
    assert check_races(c, X4, XS4, trials=2).ok
    (scan,) = [n for n in c.graph.nodes if n.op == "scan"]
    live = [
        v
        for v, s in c.memory.slots.items()
        if s.kind == "arena" and s.first < c.schedule.index(scan) < s.last
    ]
    assert live, "a value live across the scan"
    bad = copy.copy(c.memory)
    bad.scratch = dict(c.memory.scratch)
    bad.scratch[scan] = (c.memory.slots[live[0]].offset, c.memory.scratch[scan][1])
    broken = with_plan(c, bad)
    report = check_races(broken, X4, XS4, trials=2)
    assert any("child arena" in str(o) for o in report.overlaps), str(report)
    assert report.mismatches  # and the numbers are wrong
    got = broken(X4, XS4)[0]
    assert not np.allclose(got, c(X4, XS4)[0])  # the real run too: the checker is not alone


def swap_and_mix(x):
    """Carry a is rewritten in place (its one read precedes its write); carry b's new value
    reads the new a and the old a after a's write, so a in place needs that read first."""

    def body(i, c):
        a, b = c
        new_a = gg.tanh(a * 0.9 + 0.1)
        new_b = b * 0.5 + new_a * a  # reads the old a after new_a is computed
        return new_a, new_b

    return gg.fori_loop(0, 5, body, (x, x * 2))


def _loop_runner(c):
    (r,) = [r for r in _runners(c) if r.node.op in ("scan", "while")]
    return r


def test_carries_are_updated_in_place_when_liveness_allows(monkeypatch):
    # the host-driven loop's carry buffers (a native cpu loop keeps its carries in its own
    # scratch: tests/test_native_loops.py)
    monkeypatch.setenv("GPUGRAPH_CPU_LOOPS", "host")
    c = gg.jit(lambda x: gg.fori_loop(0, 5, lambda i, v: gg.tanh(v * 0.9) + v * 0.5, x)).lower(X4)
    r = _loop_runner(c)
    assert r.inplace == [True]
    assert "1 of 1 updated in place" in c.explain()
    b0, b1 = r.bufs
    assert b0[0] is b1[0] and r.buffer_bytes() == X4.nbytes
    for fuse in (True, False):
        f = gg.jit(swap_and_mix, fuse=fuse)
        r = _loop_runner(f.lower(X4))
        assert r.inplace[1]  # b: read only by the launch that writes it, elementwise
        got, want = f(X4), swap_and_mix(X4)
        # the cpu backend's native groups use libm (docs/cpu-backend.md: float32 rtol 2e-5)
        rtol = 1e-6 if f.lower(X4).backend.name == "numpy" else 2e-5
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, np.asarray(w), rtol=rtol)
        from gpugraph.testing.races import check_races

        assert check_races(f.lower(X4), X4, trials=2).ok


def test_planted_bug_a_carry_forced_in_place_against_liveness_is_caught():
    from gpugraph.testing.races import check_races

    c = gg.jit(swap_and_mix, fuse=False).lower(X4)
    r = _loop_runner(c)
    assert r.inplace[0] is False  # the old a is read after the new a is written
    assert check_races(c, X4, trials=2).ok
    r.inplace = [True, *r.inplace[1:]]  # the planted bug: a in place all the same
    r._bufs = None
    report = check_races(c, X4, trials=2)
    assert report.mismatches, str(report)
    assert not np.allclose(c(X4)[1], np.asarray(swap_and_mix(X4)[1]))  # and really wrong
