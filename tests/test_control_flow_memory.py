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
