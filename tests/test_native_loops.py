"""backend="cpu": while/scan/fori loops whose bodies the native codegen can express run as one
generated C++ function (gpugraph/codegen/loop_native.py, backends/cpu_loop_runner.py); the
results equal the NumPy backend's (same programs, gradients too), explain() says which loops
were compiled and why the others were not, and the race checker passes on their plans.

Cold cache: every plan's compile is one compiler run (1-2 s here), so the programs the tests
compile are registered at module level (``program``) and built first, in one batch
(``_one_batch``: two concurrent compiler runs); the tests then find their kernels compiled."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from kernel_helpers import requires_emulator
from test_control_flow_races import every_region

import gpugraph as gg
from gpugraph.backends import cpu_loop_blas, cpu_loop_runner
from gpugraph.backends.base import get_backend
from gpugraph.errors import GpuGraphError
from gpugraph.testing.races import check_races

pytestmark = requires_emulator  # the same host compiler

RNG = np.random.default_rng(3)
W = (RNG.standard_normal((8, 8)) * 0.3).astype(np.float32)
XS = RNG.standard_normal((6, 8)).astype(np.float32)
V = RNG.standard_normal(8).astype(np.float32)
COMPILED = "native loop: compiled"
PROGRAMS: list[tuple[Callable, tuple, dict]] = []  # (fn, args, jit options) built first


def program(fn: Callable, *args, **jit) -> Callable:
    """Register ``fn`` (with the arguments and jit options a test compiles it with) for the
    one batch; returns ``fn``."""
    PROGRAMS.append((fn, args, jit))
    return fn


@pytest.fixture(scope="module", autouse=True)
def _one_batch():
    """Lower every registered program on the cpu backend with its compile deferred
    (``CpuBackend.deferred``), then compile them all at once: two libraries. The body plans of
    native loops stay deferred (their own group): they compile only if a fallback runs."""
    backend = get_backend("cpu")
    with backend.deferred() as group:
        for fn, args, jit in PROGRAMS:
            gg.jit(fn, backend="cpu", **jit).lower(*args)
    backend.release(group)
    backend.compile_pending(2)  # two concurrent compiler runs (CI has 2 cores)


def both(fn, *args, rtol=1e-5, atol=1e-6, **jit):
    """``fn`` on the cpu and NumPy backends: equal results; returns the cpu Compiled."""
    got = gg.jit(fn, backend="cpu", **jit)(*args)
    want = gg.jit(fn, backend="numpy", **jit)(*args)
    for g, w in zip(gg.tree_leaves(got), gg.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)
    return gg.jit(fn, backend="cpu", **jit).lower(*args)


def compiled_loops(c) -> int:
    return c.explain().count(COMPILED)


def fori(x, a):
    return gg.fori_loop(0, 50, lambda i, v: gg.tanh(v * a + 0.1) * 0.5 + v * 0.25, x)


def rnn_loss(w, xs):
    def cell(h, x):
        h = gg.tanh(h @ w + x)
        return h, h.sum()

    h, ys = gg.scan(cell, gg.zeros((8,)), xs)
    return (h * h).sum() + ys.sum()


program(fori, V, np.float32(0.9))
RNN_VG = program(gg.value_and_grad(rnn_loss), W, XS)


def test_fori_loop_runs_as_one_native_function():
    c = both(fori, V, np.float32(0.9))
    c(V, np.float32(0.9))
    text = c.explain()
    assert compiled_loops(c) == 1, text
    assert "last run: 50 iterations" in text


def test_rnn_value_and_grad_forward_and_reverse_scan_are_native():
    c = both(RNN_VG, W, XS, rtol=1e-4, atol=1e-5)
    assert compiled_loops(c) == 2, c.explain()  # the forward scan and the reverse (BPTT) one


def _two_carries(h, xs):
    def step(carry, x):
        k, h = carry
        h = gg.sin(h * 0.7 + x) + k.astype(np.float32) * 0.01
        return (k + 1, h), (h * 2.0, h.sum())

    return gg.scan(step, (np.int32(0), h), xs, reverse=True)


program(_two_carries, V, XS)


def test_reverse_scan_two_carries_int_counter_xs_and_ys():
    c = both(_two_carries, V, XS)
    assert compiled_loops(c) == 1, c.explain()


def _mm64(w, xs):
    def step(h, x):
        h = gg.tanh(h @ w.T + x) + gg.reshape(gg.reshape(h, (1, 8)) @ w, (8,)) * 0.1
        return h, h

    return gg.scan(step, xs[0], xs)


W64, XS64 = W.astype(np.float64), XS.astype(np.float64)
MM64_GRAD = program(gg.grad(lambda w, xs: _mm64(w, xs)[1].sum()), W64, XS64)
program(_mm64, W64, XS64)


def test_matmul_forms_float64_and_transposed_operands():
    c = both(_mm64, W64, XS64, rtol=1e-12, atol=1e-12)
    assert compiled_loops(c) == 1, c.explain()
    g = both(MM64_GRAD, W64, XS64, rtol=1e-10, atol=1e-12)
    assert compiled_loops(g) == 2, g.explain()


def _zero_trips(x, xs):
    a = gg.fori_loop(0, 0, lambda i, v: v * 2.0 + 1.0, x)
    h, ys = gg.scan(lambda h, r: (h + r, h * r), x, xs)
    w = gg.while_loop(lambda v: v.sum() > 1e9, lambda v: v * 2.0, x, max_steps=5)
    return a, h, ys, w


program(_zero_trips, V, XS[:0])


def test_zero_trip_loops_return_their_inputs():
    c = both(_zero_trips, V, XS[:0])
    out = c(V, XS[:0])
    np.testing.assert_array_equal(out[0], V)
    np.testing.assert_array_equal(out[3], V)
    assert out[2].shape == (0, 8)


def _while_exp(x):
    return gg.while_loop(lambda v: v.sum() < 40.0, lambda v: gg.exp(v * 0.1) + v, x, max_steps=100)


def _small(x):
    return gg.while_loop(lambda v: v.sum() < 40.0, lambda v: v + 1.0, x, max_steps=3)


program(_while_exp, np.abs(V))
program(_small, np.zeros(8, np.float32))


def _trips(c) -> int:
    line = next(ln for ln in c.explain().splitlines() if "last run:" in ln)
    return int(line.split("last run: ")[1].split()[0])


def _ran(c, *args):
    c(*args)
    return c


def test_while_loop_native_predicate_and_max_steps():
    x = np.abs(V)
    c = both(_while_exp, x)
    c(x)
    assert compiled_loops(c) == 1, c.explain()
    trips = _ran(gg.jit(_while_exp, backend="numpy").lower(x), x)
    assert f"last run: {_trips(trips)} iterations" in c.explain()
    for backend in ("cpu", "numpy"):  # the same error, raised before any output is written
        with pytest.raises(GpuGraphError, match="ran past max_steps=3"):
            gg.jit(_small, backend=backend)(np.zeros(8, np.float32))


def _unsupported(x, xs):
    inner = gg.fori_loop(0, 3, lambda i, v: gg.scan(lambda h, r: (h * 0.5 + r, None), v, xs)[0], x)
    sorted_ = gg.fori_loop(0, 2, lambda i, v: gg.sort(v) * 0.5 + 1.0, x)
    half = gg.fori_loop(0, 2, lambda i, v: (v.astype(np.float16) * 3).astype(np.float32), x)
    return inner, sorted_, half


program(_unsupported, V, XS)


def test_unsupported_bodies_stay_host_driven_and_say_why():
    c = both(_unsupported, V, XS)
    text = c.explain()
    assert "host-driven, not compiled: op argsort" in text, text
    assert "host-driven, not compiled: dtype float16 (at fused)" in text, text
    # the fori_loop holding a scan is one native function (and the inner scan's own runner,
    # in the body plan the host-driven path and the race checker use, is native too)
    assert compiled_loops(c) == 2, text


def _nested(x, xs, limit):
    def outer(i, v):
        w = gg.while_loop(lambda u: u.sum() < limit, lambda u: u * 1.5 + 0.5, v, max_steps=30)
        h, ys = gg.scan(lambda h, r: (gg.tanh(h + r), h.sum()), w * 0.01, xs, reverse=True)
        return h + ys.sum() * 0.001

    return gg.fori_loop(0, 3, outer, x)


program(_nested, np.abs(V) + 0.1, XS, np.float32(50.0))


def test_nested_loops_inline_and_an_inner_max_steps_raises_as_on_numpy():
    x, ok = np.abs(V) + 0.1, np.float32(50.0)
    c = both(_nested, x, XS, ok)
    notes = [ln.strip() for ln in c.explain().splitlines() if "native loop:" in ln]
    # the outer fori_loop (first) is one native function holding the inner loops; the inner
    # loops' own runners (in the body plan, for the race checker's replay) are native too
    assert len(notes) == 3 and all(n.startswith(COMPILED) for n in notes), notes
    for backend in ("cpu", "numpy"):
        with pytest.raises(GpuGraphError, match="ran past max_steps=30"):
            gg.jit(_nested, backend=backend)(x, XS, np.float32(1e30))


def test_inputs_untouched_and_results_survive_the_next_call():
    f = gg.jit(RNN_VG, backend="cpu")
    w, xs = W.copy(), XS.copy()
    first = f(w, xs)
    kept = [np.array(a) for a in first]
    f(w * 2.0, xs)
    np.testing.assert_array_equal(w, W)
    np.testing.assert_array_equal(xs, XS)
    for a, b in zip(first, kept):
        np.testing.assert_array_equal(a, b)


def test_host_env_keeps_loops_host_driven(monkeypatch):
    monkeypatch.setenv(cpu_loop_runner.LOOPS_ENV, "host")
    c = both(fori, V, np.float32(0.9))
    assert compiled_loops(c) == 0
    assert f"host-driven ({cpu_loop_runner.LOOPS_ENV}=host)" in c.explain()


def _grad_and_fori(w, xs, x):
    return gg.grad(rnn_loss)(w, xs), fori(x, 0.9)


X48, XS5 = RNG.standard_normal((4, 8)).astype(np.float32), XS[:5]
program(_grad_and_fori, W, XS, V, streams=2)
program(every_region, X48, XS5, streams=2)


def test_race_checker_passes_on_plans_with_native_loops():
    c = gg.jit(_grad_and_fori, backend="cpu", streams=2).lower(W, XS, V)
    assert compiled_loops(c) == 3, c.explain()
    report = check_races(c, W, XS, V, trials=3, seed=1)
    assert report.ok, str(report)

    # every region kind, a cond inside a fori_loop among them (test_control_flow_races); its
    # while_loop's condition is a grid reduction (v.sum() of a 2-D v)
    c = gg.jit(every_region, backend="cpu", streams=2).lower(X48, XS5)
    assert compiled_loops(c) == 3, c.explain()  # the scan, the while, the fori_loop (a cond)
    report = check_races(c, X48, XS5, trials=3, seed=2)
    assert report.ok, str(report)
    for got, want in zip(c(X48, XS5), gg.jit(every_region, backend="numpy")(X48, XS5)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _take_rows(x, xs):
    def body(i, v):
        wrapped = gg.take(xs, i + 4, mode="wrap") + gg.take(xs, i - 9, mode="clip")
        return v * 0.5 + xs[i] * v.sum() * 0.1 + wrapped

    return gg.fori_loop(0, 6, body, x)


def _past_the_end(x, xs):  # row 6 of 6, read by a matmul's operand
    return gg.fori_loop(0, 7, lambda i, v: gg.tanh(v @ xs[i] * 0.5), x)


ONES32, XS622 = np.ones((3, 2), np.float32), np.ascontiguousarray(XS.reshape(6, 2, 4)[:, :, :2])
program(_take_rows, V, XS)
program(_past_the_end, ONES32, XS622)


def test_fori_loop_reads_rows_by_its_counter_and_raises_out_of_range():
    c = both(_take_rows, V, XS)
    assert compiled_loops(c) == 1, c.explain()
    for backend in ("cpu", "numpy"):  # NumPy's error (the native loop stops, reruns on host)
        with pytest.raises(GpuGraphError, match="index 6 is out of range"):
            gg.jit(_past_the_end, backend=backend)(ONES32, XS622)


def _gathers(h, ids, e):
    def step(h, row):  # an embedding lookup by an index vector, a gather on axis 1 (wrapped)
        emb = gg.take(e, row, axis=0)
        cols = gg.take(e, row, axis=1, mode="wrap")
        return gg.tanh(h + emb.sum(axis=0)), cols.sum() + gg.take(e, row[0] + 20, mode="clip")

    return gg.scan(step, h, ids)


EMB, IDS = RNG.standard_normal((10, 4)).astype(np.float32), np.array([[3, 1, 9], [0, -2, 4]])
program(_gathers, np.zeros(4, np.float32), IDS, EMB)


def test_gathers_by_index_arrays_and_on_other_axes():
    args = (np.zeros(4, np.float32), IDS, EMB)
    c = both(_gathers, *args)
    assert compiled_loops(c) == 1, c.explain()
    bad = IDS.copy()
    bad[1, 1] = 10
    for backend in ("cpu", "numpy"):  # NumPy's error (the native loop stops, reruns on host)
        with pytest.raises(GpuGraphError, match="index 10 is out of range"):
            gg.jit(_gathers, backend=backend)(args[0], bad, EMB)


def _emb_loss(e, ids):
    def step(h, row):
        emb = gg.take(e, row, axis=0)
        return gg.tanh(h + emb.sum(axis=0) + (emb * emb).sum(axis=1).sum() * 0.1), None

    h, _ = gg.scan(step, gg.zeros((4,)), ids)
    return (h * h).sum()


def _broadcasts(h, xs):
    def step(h, x):  # a column (through an index map), a row repeated, one element
        h = gg.tanh(h + x)
        col = gg.broadcast_to(gg.reshape(h, (4, 1)), (4, 3))
        return h, (col, gg.broadcast_to(h, (2, 4)), gg.broadcast_to(h[1], (3,)))

    return gg.scan(step, h, xs)


EMB_VG, REPEATS = program(gg.value_and_grad(_emb_loss), EMB, IDS), np.array([[3, 1, 3], [7, 7, 2]])
program(EMB_VG, EMB, REPEATS)
program(_broadcasts, V[:4], XS[:, :4])


def test_gather_gradients_scatter_add_and_broadcasts_in_bodies():
    # the backward scan of an embedding lookup holds take_grad (repeated indices accumulate,
    # in index order as np.add.at) and the broadcast_to of a sum's gradient
    for ids in (IDS, REPEATS):
        c = both(EMB_VG, EMB, ids, rtol=1e-5, atol=1e-6)
        assert compiled_loops(c) == 2, c.explain()
    c = both(_broadcasts, V[:4], XS[:, :4])
    assert compiled_loops(c) == 1 and "broadcast_to x3" in c.explain(), c.explain()


def test_a_native_loop_reserves_no_parent_arena_for_its_bodies(monkeypatch):
    c = gg.jit(RNN_VG, backend="cpu").lower(W, XS)
    ref = gg.jit(RNN_VG, backend="numpy").lower(W, XS)
    # the NumPy backend reserves a child range per scan (forward and reverse); the native
    # loops reserve none: the same values, less arena
    ranges = sorted(size for _, size in ref.memory.scratch.values())
    assert len(ranges) == 2 and not c.memory.scratch, (ref.memory.scratch, c.memory.scratch)
    assert c.memory.naive_bytes == ref.memory.naive_bytes - sum(ranges)  # 256-aligned sizes
    assert c.memory.arena_bytes < ref.memory.arena_bytes
    assert c.explain().count("none reserved in the parent arena") == 2, c.explain()
    for g, w in zip(c(W, XS), ref(W, XS)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    for la in c.executable.launches:  # the body plans never ran: their arenas were not made
        for plan in getattr(la.runner, "plans", {}).values():
            assert plan.executable._fixed is None
    # host-driven loops on the cpu backend reserve a range each, sized for their one-stream
    # body plans (NumPy's covers the wide plans too), and their bodies run in it
    monkeypatch.setenv(cpu_loop_runner.LOOPS_ENV, "host")
    host = gg.jit(RNN_VG, backend="cpu").lower(W, XS)
    runners = [la.runner for la in host.executable.launches if getattr(la.runner, "plans", 0)]
    assert len(runners) == len(host.memory.scratch) == 2
    for r in runners:
        assert r.child_range[1] == max(p.arena_bytes for p in r.plans.values()) > 0
        assert all(p.executable.arena_source is not None for p in r.plans.values())
    assert c.memory.arena_bytes < host.memory.arena_bytes <= ref.memory.arena_bytes
    for g, w in zip(host(W, XS), ref(W, XS)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_the_host_driven_fallback_allocates_the_body_arena_when_it_runs():
    # the native function stops at row 6 of 6; the host-driven rerun raises NumPy's error,
    # on a body arena of its own, made then (none was reserved in the parent arena)
    c = gg.jit(_past_the_end, backend="cpu").lower(ONES32, XS622)
    assert compiled_loops(c) == 1 and not c.memory.scratch, c.explain()
    (runner,) = [la.runner for la in c.executable.launches if getattr(la.runner, "plans", 0)]
    body = runner.plans["body"]
    assert body.arena_bytes > 0 and body.executable._fixed is None
    with pytest.raises(GpuGraphError, match="index 6 is out of range"):
        c(ONES32, XS622)
    assert body.executable._fixed is not None  # made by the host-driven rerun
    assert body.executable.arena.nbytes >= body.arena_bytes


def _grids(v, b, xs):
    w = gg.while_loop(lambda u: u.sum() < 200.0, lambda u: u * 1.1 + 0.05, v, max_steps=99)

    def step(h, x):
        h = gg.tanh(h * 0.9 + x)
        col = (h * h + b).sum(axis=0) * 0.5
        return h, (col, gg.max(gg.exp(h) * 2.0, axis=0), (h * 3.0).max())

    return w, gg.scan(step, v, xs)


GRID_V = np.abs(XS[:4]) + 0.1
GRID_XS = np.stack([XS[:4], XS[2:], -XS[:4]])
GRID_XS[1, 2, 3] = np.nan
program(_grids, GRID_V, V, GRID_XS)


def test_grid_reductions_in_bodies_compile_with_the_loop():
    # a while whose condition sums a 2-D carry (a fused_grid_reduce), and a scan body with a
    # column sum (a bias row in its prologue, an epilogue), a column max and a full max; a NaN
    # in xs reaches the maxes, which propagate it as np.maximum does
    args = (GRID_V, V, GRID_XS)
    c = both(_grids, *args)
    text = c.explain()
    assert compiled_loops(c) == 2 and "fused_grid_reduce x3" in text, text
    got = c(*args)
    col_max, full_max = got[1][1][1], got[1][1][2]  # the NaN stays in h's column 3
    assert np.isnan(col_max).sum() == 2 and np.isnan(col_max[1:, 3]).all()
    assert np.isnan(full_max[1:]).all() and not np.isnan(full_max[0])
    assert _trips(c) == _trips(_ran(gg.jit(_grids, backend="numpy").lower(*args), *args))


def _mins_and_middle(v, v3, xs):
    def step(h, x):  # a column min and a full min (grid groups) compile with the loop
        h = gg.tanh(h * 0.9 + x)
        return h, (gg.min(h * 2.0, axis=0), gg.min(h - 1.0))

    def step3(h, _):  # a sum over the middle axis: a grid group the loop cannot render
        h = gg.tanh(h * 0.9 + 0.1)
        return h, gg.sum(gg.exp(h), axis=1)

    return gg.scan(step, v, xs), gg.scan(step3, v3, xs)


V3 = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 4, 3)
program(_mins_and_middle, GRID_V, V3, GRID_XS)


def test_grid_min_compiles_and_a_middle_axis_sum_keeps_its_loop_host_driven():
    c = both(_mins_and_middle, GRID_V, V3, GRID_XS)
    text = c.explain()
    assert compiled_loops(c) == 1, text
    assert "host-driven, not compiled" in text and "middle run of axes" in text, text
    (_, (col_min, full_min)), _ = c(GRID_V, V3, GRID_XS)
    assert np.isnan(col_min[1:, 3]).all() and np.isnan(full_min[1:]).all()  # NaN propagates


def _sums(h0, xs):
    def step(h, x):  # a batch of 3 rows: sums over the batch, over features, over all
        h = gg.tanh(h * 0.9 + x)
        return h, (h.sum(axis=0), h.sum(axis=1, keepdims=True), h.sum())

    return gg.scan(step, h0, xs)


H0, XS3 = np.zeros((3, 8), np.float32), XS.reshape(6, 1, 8) * np.ones((1, 3, 1), np.float32)
program(_sums, H0, XS3)


def test_unfused_sums_in_a_body():
    c = both(_sums, H0, XS3, rtol=1e-5, atol=1e-5)
    assert compiled_loops(c) == 1, c.explain()


def _two_matmul_scans(w, xs):
    h, _ = gg.scan(lambda h, x: (gg.tanh(h @ w + x), None), xs[0], xs)
    # 1 row, transposed; x[0], x[1, 2:] and x[2, 3] are pointers into the row (slices)
    g, _ = gg.scan(lambda g, x: (g @ w.T + x[0] + x[1, 2:][0] * x[2, 3], None), xs[0, 0], xs)
    return h, g


EYE, XS64W = np.eye(64, dtype=np.float32) * 0.5, RNG.standard_normal((3, 8, 64)).astype(np.float32)
program(_two_matmul_scans, EYE, XS64W)


def test_matmuls_call_blas_and_without_it_only_small_ones_are_plain_loops(monkeypatch):
    if cpu_loop_blas.gemm() is not None:
        c = both(_two_matmul_scans, EYE, XS64W)
        assert c.explain().count("matmuls through BLAS") == 2, c.explain()
    monkeypatch.setattr(cpu_loop_runner, "gemm", lambda: None)  # no BLAS library found
    c = both(_two_matmul_scans, EYE, XS64W)
    text = c.explain()
    assert "host-driven, not compiled: matmul f32[8,64] @ f32[64,64] (32768 multiply-adds" in text
    assert compiled_loops(c) == 1 and "through BLAS" not in text, text


def _sin_scan(h, xs):
    return gg.scan(lambda h, x: (gg.sin(h) + x, h * 2.0), h, xs)


program(_sin_scan, V, XS)


def test_non_contiguous_inputs_take_the_ctypes_entry_on_copies():
    xs = np.asfortranarray(XS)  # the scan reads it as given: not C-contiguous
    c = both(_sin_scan, V, xs)
    runner = next(la.runner for la in c.executable.launches if getattr(la.runner, "native", 0))
    calls = []
    runner._run_ctypes = lambda ins, outs, real=runner._run_ctypes: (
        calls.append(1) or real(ins, outs)
    )
    got = c(V, xs)
    want = gg.jit(_sin_scan, backend="numpy")(V, XS)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    assert calls, "the extension entry took a non-contiguous array"


def _conds(x, xs, ks):
    def step(h, row):
        r, k = row
        # reductions in the branches keep them regions (not lowered to a select)
        h = gg.cond(h.sum() > 0, lambda u: u * 0.5 - u.max(), lambda u: gg.sin(u) + 1, h)
        h = gg.switch(k, [lambda u: u + u.sum(), lambda u: u * 0.9, lambda u: -u], h)
        return h + r, h.sum()

    return gg.scan(step, x, (xs, ks))


KS = np.array([-2, 0, 1, 2, 5, 1], np.int32)  # out of range: clamped, as on NumPy
program(_conds, V, XS, KS)


def test_cond_and_switch_in_a_body_compile_with_the_loop():
    c = both(_conds, V, XS, KS)
    assert compiled_loops(c) == 1, c.explain()
    assert "cond" in str(c.graph), "the conds stayed regions"


def _deferred_body(x, a):  # a body kernel no other test uses: its compile state is this test's
    return gg.fori_loop(0, 9, lambda i, v: gg.sin(v * a) * 0.75 + 0.2, x)


program(_deferred_body, V, np.float32(1.3))


def test_the_fallback_compiles_the_body_kernels_when_it_first_runs():
    args = (V, np.float32(1.3))
    c = gg.jit(_deferred_body, backend="cpu").lower(*args)
    (runner,) = [la.runner for la in c.executable.launches if getattr(la.runner, "plans", 0)]
    body = runner.plans["body"].executable
    kernels = [la.runner.cpu_kernel for la in body.launches if hasattr(la.runner, "cpu_kernel")]
    assert compiled_loops(c) == 1 and kernels, c.explain()
    native = c(*args)
    assert all(k.fn is None for k in kernels)  # not compiled at lower(), nor by a native run
    runner.native = None  # this runner now runs host-driven (as the race checker's copies)
    host = c(*args)
    assert all(k.fn is not None for k in kernels)  # compiled by the fallback's first run
    want = gg.jit(_deferred_body, backend="numpy")(*args)
    np.testing.assert_allclose(host, native, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(host, want, rtol=1e-6, atol=1e-6)


def _grid_prod(v, xs):
    return gg.scan(lambda h, x: (gg.tanh(h * 0.9 + x), gg.prod(h * 0.5 + 1.0, axis=0)), v, xs)


program(_grid_prod, GRID_V, GRID_XS)


def test_a_grid_prod_keeps_its_loop_host_driven_and_says_why():
    text = gg.jit(_grid_prod, backend="cpu").lower(GRID_V, GRID_XS).explain()
    assert "host-driven, not compiled: cpu grid kernel: a prod reduction" in text, text


def _blocked_grids(v, xs):  # 600 rows: three of the grid templates' 256-row blocks
    def step(h, x):
        return h + 1.0, ((x * x + 0.5).sum(axis=0), (x - 0.25).sum(), gg.max(x * 2.0, axis=0))

    return gg.scan(step, v, xs)


# float64: the association shows in the last bits (float32 results round it away)
BIG_XS = np.random.default_rng(5).standard_normal((2, 600, 5))
BIG_XS[1, 300, 2] = np.nan
V64 = V.astype(np.float64)
program(_blocked_grids, V64, BIG_XS)


def test_grid_reductions_in_a_loop_give_the_bits_of_the_fallbacks_grid_kernels():
    # the loop renders cpu_grid's block templates: the same association (256-row blocks) and
    # NaN tracking as the grid kernels the host-driven fallback runs (in-order accumulation
    # differed in the last bits of these float64 sums)
    c = both(_blocked_grids, V64, BIG_XS, rtol=1e-12, atol=1e-12)
    assert compiled_loops(c) == 1 and "fused_grid_reduce x3" in c.explain(), c.explain()
    native = gg.tree_leaves(c(V64, BIG_XS))
    (runner,) = [la.runner for la in c.executable.launches if getattr(la.runner, "plans", 0)]
    runner.native = None
    for got, want in zip(native, gg.tree_leaves(c(V64, BIG_XS))):
        np.testing.assert_array_equal(got, want)
