"""Control flow inside the graph: gg.cond, gg.switch, gg.while_loop, gg.fori_loop, gg.scan.

Each op against a plain NumPy loop under every option combination, eager and jit; gradients
against float64 finite differences and torch.autograd on the unrolled loop; the passes that
know regions; errors naming the branch or carry and the user's line."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.backends.base import cupy_status
from gpugraph.backends.sim import SimProgram
from gpugraph.codegen.cuda import KERNEL_OBSERVERS
from gpugraph.ir import Graph, verify
from gpugraph.region_exec import RegionRunner
from gpugraph.runtime import COMPILED_OBSERVERS
from gpugraph.testing.races import find_hazards

RNG = np.random.default_rng(14)
X = RNG.standard_normal(4).astype(np.float32)
XS = RNG.standard_normal((6, 3)).astype(np.float32)
W = (RNG.standard_normal((3, 3)) * 0.5).astype(np.float32)
HERE = "test_control_flow.py:"

OPTIONS = [
    dict(optimize=o, fuse=f, streams=s)
    for o, f, s in itertools.product((True, False), (True, False), (None, 2))
]
MODES = ["eager"] + [f"jit{i}" for i in range(len(OPTIONS))]


def run(mode: str, fn, *args):
    if mode == "eager":
        return fn(*args)
    return gg.jit(fn, **OPTIONS[int(mode[3:])], verify=True)(*args)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(
        np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol
    )


# -- forward semantics against NumPy ---------------------------------------------------------
def _cond(p, x):
    return gg.cond(p, lambda a: (a * 2 + 1, a.sum()), lambda a: (gg.exp(a), a.max()), x)


def _switch(i, x):
    return gg.switch(i, [lambda a: a + 1, lambda a: a * a, lambda a: -a], x)


def _while(x):
    return gg.while_loop(lambda c: c[1].sum() < 50, lambda c: (c[0] + 1, c[1] * 1.5 + 1), (0, x))


def _fori(x, k):
    return gg.fori_loop(0, 7, lambda i, v: v * 0.9 + gg.sin(v) * k + i, x)


def _fori_traced(n, x):
    return gg.fori_loop(0, n, lambda i, v: v * 0.5 + i, x)


def _scan(xs, reverse):
    def step(c, x):
        h, n = c["h"], c["n"]
        h = gg.tanh(h @ W + x)
        return {"h": h, "n": n + 1}, (h.sum(), h * 2)

    return gg.scan(step, {"h": gg.zeros((3,)), "n": 0}, xs, reverse=reverse)


def _np_scan(xs, reverse):
    h, n, ys0, ys1 = np.zeros(3, np.float32), 0, [None] * len(xs), [None] * len(xs)
    for t in reversed(range(len(xs))) if reverse else range(len(xs)):
        h = np.tanh(h @ W + xs[t])
        n += 1
        ys0[t], ys1[t] = h.sum(), h * 2
    return h, n, np.stack(ys0), np.stack(ys1)


@pytest.mark.parametrize("mode", MODES)
def test_every_op_matches_numpy(mode):
    for p in (True, False):
        out, s = run(mode, _cond, np.bool_(p), X)
        close(out, X * 2 + 1 if p else np.exp(X))
        close(s, X.sum() if p else X.max())
    for i in (-3, 0, 1, 2, 9):  # out of range clamps
        ref = [X + 1, X * X, -X][min(max(i, 0), 2)]
        close(run(mode, _switch, np.int64(i), X), ref)
    n, v = run(mode, _while, X)
    ref_v, ref_n = X.copy(), 0
    while ref_v.sum() < 50:
        ref_v, ref_n = ref_v * 1.5 + 1, ref_n + 1
    assert int(n) == ref_n and np.asarray(n).dtype == np.int64
    close(v, ref_v)
    ref = X.copy()
    for i in range(7):
        ref = ref * 0.9 + np.sin(ref) * np.float32(0.3) + i
    close(run(mode, _fori, X, np.float32(0.3)), ref)
    for n in (0, 3):
        ref = X.copy()
        for i in range(n):
            ref = ref * 0.5 + i
        close(run(mode, _fori_traced, n, X), ref)
    for reverse in (False, True):
        carry, (y0, y1) = run(mode, lambda xs, r=reverse: _scan(xs, r), XS)
        h, n, r0, r1 = _np_scan(XS, reverse)
        close(carry["h"], h)
        assert int(carry["n"]) == n
        close(y0, r0)
        close(y1, r1)


def test_cache_size_stays_one_when_only_the_predicate_changes():
    f = gg.jit(_cond)
    for p in (True, False, True):
        f(np.bool_(p), X)
    g = gg.jit(_fori_traced)
    for n in (0, 2, 5):
        g(n, X)
    assert f.cache_size == 1 and g.cache_size == 1


def test_results_stay_valid_and_inputs_unchanged():
    f = gg.jit(lambda xs: _scan(xs, False))
    xs = XS.copy()
    a = f(xs)
    a_h = np.array(a[0]["h"])
    b = f(xs * 2)
    np.testing.assert_array_equal(a[0]["h"], a_h)  # not overwritten by the next call
    assert a[0]["h"] is not b[0]["h"]
    np.testing.assert_array_equal(xs, XS)
    w = gg.jit(lambda x: gg.while_loop(lambda v: v.sum() > 1e9, lambda v: v, x))
    out = w(X)  # zero trips: a copy of the input, never the input itself
    assert out is not X
    close(out, X)


def test_closures_over_jit_values_become_region_inputs():
    @gg.jit
    def f(x, k):
        return gg.fori_loop(0, 3, lambda i, v: v + k, x)

    close(f(X, np.float32(2)), X + 6)
    c = f.lower(X, np.float32(2))
    (node,) = [n for n in c.graph.nodes if n.op == "scan"]
    assert c.graph.inputs[1] in node.inputs  # k is an explicit input of the region
    assert node.attrs["n_carry"] == 1  # the unused counter was dropped as a dead carry


# -- gradients ------------------------------------------------------------------------------
def fd_grad(f, x, eps=1e-6):
    """Central differences in float64 on a float64 copy of the function."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (float(f(x + e)) - float(f(x - e))) / (2 * eps)
    return g


def _losses():
    def cond_loss(x):
        return gg.cond(x.sum() > 0, lambda a: (a * a).sum(), lambda a: gg.sin(a).sum(), x)

    def switch_loss(x):
        return gg.switch(
            2, [lambda a: a.sum(), lambda a: (a * a).sum(), lambda a: gg.exp(a).sum()], x
        )

    def fori_loss(x):
        return gg.fori_loop(1, 4, lambda i, v: gg.sin(v) * i + v * 0.5, x).sum()

    def while_loss(x):
        c = gg.while_loop(
            lambda c: c[0] < 3,
            lambda c: (c[0] + 1, gg.tanh(c[1]) + c[1] * 0.3),
            (0, x),
            max_steps=5,
        )
        return (c[1] * c[1]).sum()

    def scan_loss(x, reverse=True):
        c, ys = gg.scan(lambda h, e: (gg.tanh(h * x[1] + e), h * e), x[0] * 0.5, x, reverse=reverse)
        return c + (ys * ys).sum()

    return dict(
        cond=cond_loss, switch=switch_loss, fori=fori_loss, while_=while_loss, scan=scan_loss
    )


@pytest.mark.parametrize("name", ["cond", "switch", "fori", "while_", "scan"])
@pytest.mark.parametrize("jit", [False, True])
def test_grad_and_jvp_match_float64_finite_differences(name, jit):
    f = _losses()[name]
    x = X.astype(np.float64)
    ref = fd_grad(lambda v: f(v), x)
    g = gg.grad(f)
    close((gg.jit(g) if jit else g)(x), ref, 1e-6)
    t = RNG.standard_normal(4)
    _, tan = gg.jvp(f, (x,), (t,))
    close(tan, ref @ t, 1e-6)


def test_scan_reverse_and_nested_loops_match_torch_on_the_unrolled_loop():
    torch = pytest.importorskip("torch")

    def nested(x, w):
        def body(i, v):
            inner = lambda a: gg.scan(lambda c, e: (gg.tanh(c * w + e), c), a, x, reverse=True)[0]
            return gg.cond(i < 2, inner, lambda a: a * w, v)

        return gg.fori_loop(0, 4, body, x[0])

    def t_nested(x, w):
        v = x[0]
        for i in range(4):
            if i < 2:
                c = v
                for e in reversed(list(x)):
                    c = torch.tanh(c * w + e)
                v = c
            else:
                v = v * w
        return v

    x64, w64 = X.astype(np.float64), np.float64(0.8)
    tx = torch.tensor(x64, requires_grad=True)
    tw = torch.tensor(w64, requires_grad=True)
    t_nested(tx, tw).backward()
    for fn in (gg.grad(nested, (0, 1)), gg.jit(gg.grad(nested, (0, 1)))):
        gx, gw = fn(x64, w64)
        close(gx, tx.grad.numpy(), 1e-9)
        close(gw, tw.grad.numpy(), 1e-9)

    def rnn(w, xs):
        c, ys = gg.scan(
            lambda h, x: (gg.tanh(h @ w + x), (h * h).sum()),
            gg.zeros((3,), gg.float64),
            xs,
            reverse=True,
        )
        return c.sum() + ys.sum()

    tw = torch.tensor(W.astype(np.float64), requires_grad=True)
    h, acc = torch.zeros(3, dtype=torch.float64), 0
    for t in reversed(range(len(XS))):
        acc = acc + (h * h).sum()
        h = torch.tanh(h @ tw + torch.tensor(XS[t], dtype=torch.float64))
    (h.sum() + acc).backward()
    close(gg.jit(gg.grad(rnn))(W.astype(np.float64), XS.astype(np.float64)), tw.grad.numpy(), 1e-9)


def test_grad_of_grad_through_scan():
    e = XS[:, 0].astype(np.float64)

    def f(a):
        return gg.scan(lambda c, x: (gg.sin(c * a) + x, c), a, e)[0]

    def f64(a):
        c = a
        for x in e:
            c = np.sin(c * a) + x
        return c

    a = 0.7
    h = 1e-4
    ref = (f64(a + h) - 2 * f64(a) + f64(a - h)) / h**2
    close(gg.grad(gg.grad(f))(np.float64(a)), ref, 1e-5)
    close(gg.jit(gg.grad(gg.grad(f)))(np.float64(a)), ref, 1e-5)


# -- errors -------------------------------------------------------------------------------
def _raises(cls, pattern: str, fn):
    with pytest.raises(cls) as info:
        fn()
    msg = str(info.value)
    assert re.search(pattern, msg), msg
    assert HERE in msg, f"the message does not name the user's line: {msg}"
    return msg


def test_bad_input_raises_naming_branch_or_carry_and_line():
    x = np.ones(3, np.float32)
    E = gg.GpuGraphError
    _raises(
        gg.ShapeError,
        r"true_fn returns output as f32\[3\], but false_fn returns it as f32\[\]",
        lambda: gg.cond(True, lambda a: a, lambda a: a.sum(), x),
    )
    _raises(
        gg.DTypeError,
        r"true_fn returns output as f32\[3\].*f64\[3\]",
        lambda: gg.cond(True, lambda a: a, lambda a: a.astype(np.float64), x),
    )
    _raises(
        gg.ShapeError,
        r"branches\[1\] returns output\[1\]",
        lambda: gg.switch(0, [lambda a: (a, a), lambda a: (a, a.sum())], x),
    )
    _raises(
        gg.DTypeError,
        r"body_fun returns carry\[1\] as f64\[3\].*f32\[3\]",
        lambda: gg.while_loop(
            lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1].astype(np.float64)), (0, x)
        ),
    )
    _raises(
        gg.ShapeError,
        r"f returns carry\['h'\] as f32\[\]",
        lambda: gg.scan(lambda c, e: ({"h": c["h"].sum()}, e), {"h": x}, x),
    )
    _raises(
        gg.ShapeError,
        r"predicate must be a scalar",
        lambda: gg.cond(np.array([True, False]), lambda a: a, lambda a: a, x),
    )
    _raises(
        gg.DTypeError,
        r"predicate must be a boolean scalar, got float32",
        lambda: gg.jit(lambda p, x: gg.cond(p, lambda a: a, lambda a: a, x))(np.float32(1), x),
    )
    _raises(
        gg.DTypeError,
        r"switch: the index must be an integer scalar, got float32",
        lambda: gg.switch(np.float32(1), [lambda a: a, lambda a: -a], x),
    )
    _raises(
        gg.DTypeError,
        r"cond_fun must return one boolean scalar",
        lambda: gg.while_loop(lambda v: v.sum(), lambda v: v * 2, x),
    )
    _raises(
        E,
        r"reverse-mode differentiation of while_loop .* pass max_steps",
        lambda: gg.grad(lambda v: gg.while_loop(lambda c: c.sum() < 9, lambda c: c * 2, v).sum())(
            x
        ),
    )
    for wrap in (lambda f: f, gg.jit):
        _raises(
            E,
            r"while_loop ran past max_steps=3",
            lambda w=wrap: w(
                lambda v: gg.while_loop(lambda c: c.sum() < 100, lambda c: c * 2, v, max_steps=3)
            )(x),
        )


def test_verify_checks_region_types():
    f = gg.jit(_cond)
    g = f.lower(np.bool_(True), X).graph
    verify(g)
    (node,) = [n for n in g.nodes if n.op == "cond"]
    b0, b1 = node.attrs["branches"]
    bad = Graph(b1.inputs, b1.nodes, [b1.outputs[1], b1.outputs[0]])
    node.attrs["branches"] = (b0, bad)
    with pytest.raises((AssertionError, gg.GpuGraphError), match="branch 1"):
        verify(g)
    node.attrs["branches"] = (b0, b1)


# -- passes, plans, explain ----------------------------------------------------------------
def _regions(graph: Graph) -> list:
    return [n for n in graph.nodes if n.op in ("cond", "while", "scan")]


def test_cond_on_a_constant_predicate_folds_to_its_branch():
    c = gg.jit(lambda x: gg.cond(True, lambda a: a * 2, lambda a: a - 1, x)).lower(X)
    assert not _regions(c.graph)
    close(c(X), X * 2)
    c = gg.jit(lambda x: gg.switch(7, [lambda a: a * 2, lambda a: a - 1], x), fuse=False).lower(X)
    assert not _regions(c.graph) and "subtract" in c.graph.op_counts()


def test_hoisting_dead_carries_fusion_and_cse_inside_bodies():
    def f(x, k):
        def body(i, c):
            v, unused = c
            kk = gg.exp(k + gg.zeros(()))  # invariant: reads only the captured k
            return (gg.sin(v) * kk + gg.sin(v) * 2.0, unused + 1.0)

        return gg.fori_loop(0, 5, body, (x, gg.zeros((4,))))[0]

    c = gg.jit(f).lower(X, np.float32(0.1))
    ref = X.copy()
    for _ in range(5):
        ref = np.sin(ref) * np.exp(np.float32(0.1)) + np.sin(ref) * 2
    close(c(X, np.float32(0.1)), ref)
    (node,) = _regions(c.graph)
    assert "exp" in node.attrs["_hoisted"]
    body = node.attrs["body"]
    assert node.attrs["n_carry"] == 1  # v; the unused counter and `unused` were dropped
    assert "fused" in body.op_counts() and "exp" not in body.op_counts()
    text = c.explain()
    assert "trip count 5 (static)" in text and "hoisted out of the body: " in text
    assert "arena (planned once" in text
    assert "in region: " in text  # a pass fired inside the body
    assert "loop-invariant node hoisted" in text and "dead loop carry dropped" in text
    ops = gg.jit(f, fuse=False).lower(X, np.float32(0.1))
    (n2,) = _regions(ops.graph)
    assert n2.attrs["body"].op_counts().get("sin") == 1  # CSE merged the two sin(v)


def test_printer_nests_regions_and_dot_draws_clusters():
    c = gg.jit(
        lambda x: gg.fori_loop(
            0, 2, lambda i, v: gg.cond(v.sum() > 0, lambda a: a * a.sum(), lambda a: a, v), x
        ),
        fuse=False,
    ).lower(X)
    text = str(c.graph)
    assert "    body:\n    graph(" in text and "        branches[1]:\n        graph(" in text
    dot = c.to_dot()
    assert "subgraph cluster_" in dot and "branches[0]:" not in dot  # the cond is inside the scan
    assert 'label="scan"' in dot and "body:" in dot


def test_while_plan_reuses_buffers_and_body_plans_reach_the_observers():
    seen_plans, seen_kernels = [], []
    COMPILED_OBSERVERS.append(seen_plans.append)
    KERNEL_OBSERVERS.append(lambda k, body: seen_kernels.append(k))
    try:
        f = gg.jit(
            lambda x: gg.while_loop(
                lambda v: v.sum() < 1e3, lambda v: gg.exp(v * 0.1) + v * 1.5, x, max_steps=100
            )
        )
        c = f.lower(X)
    finally:
        COMPILED_OBSERVERS.pop()
        KERNEL_OBSERVERS.pop()
    runner = next(
        launch.runner for launch in c.executable.launches if isinstance(launch.runner, RegionRunner)
    )
    body = runner.plans["body"]
    assert body in seen_plans and runner.plans["cond"] in seen_plans and c in seen_plans
    assert seen_kernels  # the body's fused kernel went through the kernel observers
    arena, bufs = body.executable.arena, [id(b) for b in runner.bufs[0] + runner.bufs[1]]
    out1 = f(X)
    out2 = f(X + 1)
    assert (
        body.executable.arena is arena and [id(b) for b in runner.bufs[0] + runner.bufs[1]] == bufs
    )
    assert runner.trips and "last run:" in c.explain()
    assert not np.shares_memory(out1, out2)


def test_region_nodes_are_one_opaque_step_for_the_race_checker():
    def f(x, y):
        a = gg.scan(lambda c, e: (c + e, c), x.sum(), y)[0]
        b = gg.cond(x.sum() > 0, lambda v: v * 2, lambda v: v, y)
        return a + b.sum(), gg.exp(x)

    c = gg.jit(f, streams=2).lower(X, XS[:, 0])
    assert not find_hazards(SimProgram(c.executable))
    for r in (launch.runner for launch in c.executable.launches):
        if isinstance(r, RegionRunner):
            for plan in r.plans.values():
                assert not find_hazards(SimProgram(plan.executable))


def test_newton_example_gradient_through_the_solver_matches_the_implicit_function():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "newton.py"
    spec = importlib.util.spec_from_file_location("newton_example", path)
    newton = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(newton)
    a = np.linspace(0.5, 4.0, 8)
    x, steps = newton.roots(a)
    assert 0 < int(steps) < newton.MAX_STEPS
    close(x**3 + a * x - 1, np.zeros_like(a), 1e-12)
    close(newton.root_grad(a), -x / (3 * x * x + a), 1e-12)


CUPY = pytest.mark.skipif(cupy_status().name != "cupy", reason="needs CuPy with a CUDA device")


@CUPY
def test_every_op_on_cupy_matches_numpy():
    import cupy

    def all_ops(p, i, x, xs):
        a = _cond(p, x)[0]
        b = _switch(i, x)
        c = _while(x)[1]
        d = _fori(x, np.float32(0.3))
        e = _scan(xs, True)[1][1]
        return a, b, c, d, e

    args = (np.bool_(True), np.int64(1), X, XS)
    ref = gg.jit(all_ops, backend="numpy")(*args)
    got = gg.jit(all_ops, backend="cupy")(*[cupy.asarray(a) for a in args])
    for r, g in zip(ref, got):
        close(cupy.asnumpy(g), r)
    g_ref = gg.jit(gg.grad(_losses()["scan"]), backend="numpy")(X)
    g_gpu = gg.jit(gg.grad(_losses()["scan"]), backend="cupy")(cupy.asarray(X))
    close(cupy.asnumpy(g_gpu), g_ref, 1e-5)


def test_grad_of_a_scan_runs_the_forward_loop_once():
    def loss(w, xs):
        h, ys = gg.scan(lambda h, x: (gg.tanh(h @ w + x), h.sum()), gg.zeros((3,)), xs)
        return (h * h).sum() + ys.sum()

    c = gg.jit(gg.value_and_grad(loss)).lower(W, XS)
    scans = [n for n in c.graph.nodes if n.op == "scan"]
    assert len(scans) == 2  # forward (with the tape as extra stacked outputs) and backward
    assert "scans over the same carries merged x1" in c.explain()
    value, grad = c(W, XS)
    close(value, loss(W, XS))
    close(grad, gg.grad(loss)(W, XS))


def _region_runner(c) -> RegionRunner:
    return next(la.runner for la in c.executable.launches if isinstance(la.runner, RegionRunner))


def test_bodies_allocate_nothing_at_lower_and_run_as_generated_programs():
    f = gg.jit(  # the NumPy backend's program generator (the cpu backend calls a kernel)
        lambda x: gg.fori_loop(0, 5, lambda i, v: gg.tanh(v * 0.9 + 0.1) + v * 0.5, x),
        backend="numpy",
    )
    c = f.lower(X)
    runner = _region_runner(c)
    body = runner.plans["body"]
    assert body.executable._fixed is None and runner._bufs is None  # lazy, like the top level
    expect = X.copy()
    for _ in range(5):
        expect = np.tanh(expect * np.float32(0.9) + np.float32(0.1)) + expect * np.float32(0.5)
    np.testing.assert_allclose(c(X), expect, rtol=1e-6)
    assert body.executable._fixed is not None and runner._bufs is not None
    # the dispatch generator's program, the fused group inlined as direct ufunc calls, and
    # the loop driver generated around the same lines (no per-iteration call of the program)
    calls = re.compile(r"_f\d+\(")  # one direct ufunc call per fused member op
    steps = len(calls.findall(body.program.source))
    assert steps and "[" not in body.program.source.split("return")[0]
    drive = runner.driver().source
    assert len(calls.findall(drive)) == 3 * steps and "_bp(" not in drive


def test_a_scan_body_with_a_gemm_sets_the_blas_threads_once_per_run(monkeypatch):
    from gpugraph.backends import blas

    # the host-driven loop's policy (a native cpu loop sets it around its one call instead)
    monkeypatch.setenv("GPUGRAPH_CPU_LOOPS", "host")

    if blas.policy() is None:
        pytest.skip("no BLAS thread control (threadpoolctl) or GPUGRAPH_BLAS_THREADS=keep")
    w = (RNG.standard_normal((3, 3)) * 0.5).astype(np.float32)
    f = gg.jit(lambda xs: gg.scan(lambda h, x: (gg.tanh(h @ w + x), h.sum()), gg.zeros((3,)), xs))
    c = f.lower(XS)
    calls = []
    real = blas.set_threads
    monkeypatch.setattr(blas, "set_threads", lambda n: (calls.append(n), real(n)))
    h, ys = c(XS)
    ref, hs = np.zeros(3, np.float32), []
    for x in XS:
        hs.append(ref.sum())
        ref = np.tanh(ref @ w + x)
    np.testing.assert_allclose(h, ref, rtol=1e-5)
    np.testing.assert_allclose(ys, hs, rtol=1e-5, atol=1e-6)
    body = _region_runner(c).plans["body"].program
    assert body.gemms and "_set(" not in body.source  # not twice per iteration
    assert 1 <= len(calls) <= 2  # set around the run, restored after it


def test_a_body_program_without_inline_lines_is_called_once_per_iteration(monkeypatch):
    # the path of backends without a generated program (CuPy): launches walked per call, by
    # the host-driven loop (on the cpu backend this loop would otherwise run natively)
    monkeypatch.setenv("GPUGRAPH_CPU_LOOPS", "host")
    f = gg.jit(lambda xs: gg.scan(lambda c, e: (c * 0.5 + e, c.sum()), gg.zeros((3,)), xs))
    c = f.lower(XS)
    runner = _region_runner(c)
    body = runner.plans["body"]
    calls = []

    def program(*arrays):
        calls.append(1)
        return make(*arrays)

    from gpugraph.region_exec import _launch_program

    make = _launch_program(body.executable)  # the launch walk backends without .program get
    body._program = program  # a plain function: no .inline
    h, ys = c(XS)
    ref, hs = np.zeros(3, np.float32), []
    for x in XS:
        hs.append(ref.sum())
        ref = ref * np.float32(0.5) + x
    np.testing.assert_allclose(h, ref, rtol=1e-6)
    np.testing.assert_allclose(ys, hs, rtol=1e-6)
    assert len(calls) == len(XS) and "_bp(" in runner.driver().source


# -- Python numbers in a carry stay weakly typed (issue 16) -----------------------------------
def _weak_while(x):
    n = gg.while_loop(lambda c: c * 2.0 < x.sum(), lambda c: c + 1, 0)
    return x * n, n


def _weak_fori(x, k):
    return x * gg.fori_loop(0, k, lambda i, c: c + i * 0.5, 1.0)


def _weak_scan(x):
    n, _ = gg.scan(lambda c, v: (c + 1, None), 0, x)
    return x * n


@pytest.mark.parametrize("jit", [False, True])
def test_a_python_number_carried_through_a_loop_stays_weakly_typed(jit):
    """``f32 * counter`` after the loop is float32, as after the plain Python loop (and in
    JAX); a float32 array times a strong int64 counter would be float64."""
    x = np.array([3.0, 4.0, 5.0], np.float32)
    py_n = 0
    while py_n * 2.0 < x.sum():
        py_n += 1
    py_c = 1.0
    for i in range(3):
        py_c += i * 0.5
    assert (x * py_n).dtype == (x * py_c).dtype == np.float32  # the reference: Python's run
    run_ = gg.jit if jit else (lambda f: f)
    out, n = run_(_weak_while)(x)
    assert out.dtype == np.float32 and int(n) == py_n and np.asarray(n).dtype == np.int64
    close(out, x * py_n)
    for k in (3, np.int64(3)):  # static bound: a scan; traced bound (under jit): a while
        out = run_(_weak_fori)(x, k)
        assert out.dtype == np.float32
        close(out, x * py_c)
    assert run_(_weak_scan)(x).dtype == np.float32
    close(run_(_weak_scan)(x), x * 3)
    # Gradients are those of x * counter, with the counter a constant of the path.
    g = run_(gg.grad(lambda x: _weak_while(x)[0].sum()))(x)
    assert g.dtype == np.float32
    close(g, np.full(3, py_n, np.float32))
    close(run_(gg.grad(lambda x: _weak_fori(x, 3).sum()))(x), np.full(3, py_c))


def test_a_weak_carry_accepts_a_strong_body_output_of_its_dtype_and_errors_on_another():
    x = np.ones(2, np.float32)
    # The body's c + 1 is a strong int64 (gpugraph's ops do not propagate weakness): accepted,
    # the carry stays weak because it started as a Python number.
    n = gg.jit(lambda x: gg.while_loop(lambda c: c < x.sum() * 3, lambda c: c + 1, 0) * x)(x)
    assert n.dtype == np.float32
    with pytest.raises(gg.DTypeError, match="carry"):  # int carry, float32 body output
        gg.jit(lambda x: gg.while_loop(lambda c: c < 3, lambda c: c + x.sum(), 0))(x)
