"""Property tests across the whole compiler stack on random programs.

A program is a recipe: a list of steps, each an op applied to earlier values picked by index.
Every value has a shape that broadcasts to (R, C), so any two can be combined. Checked on each
program: eager == jit under every optimize x fuse x streams combination (NumPy backend), the
IR verifier after every pass, race freedom on several streams, a memory plan in which no two
possibly-concurrent live values share bytes, calls that leave earlier outputs and the inputs
alone, gradients (eager == jit == central differences in float64) and jvp == vjp transposed.
"""

from __future__ import annotations

import itertools
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpugraph as gg
from gpugraph.testing import check_races
from tests.kernel_helpers import requires_emulator

R, C = 5, 8
PERM = np.array([2, 0, 7, 3, 1, 1, 6, 4])  # a repeat: gradients add
SCALE = int(os.environ.get("GG_PROPERTY_SCALE", "1"))  # >1: a longer hunt, same tests
CONFIGS = list(itertools.product([True, False], [True, False], [1, 2, 4]))

UNARY = ("exp_tanh", "sin", "tanh", "sigmoid", "relu", "abs", "square", "neg", "sqrt1", "log1")
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "where", "pow2")
REDUCE = ("sum", "mean", "max", "min", "logsumexp")
OTHER = (
    "matmul",
    "reshape_t",
    "slice_concat",
    "take",
    "flip",
    "softmax",
    "layer_norm",
    "cast",
    "getitem_row",
    "identity",
    "log_raw",
    "div_raw",
    "const",
    "matvec",
    "vecmat",
    "batched",
    "expand_squeeze",
    "swap",
    "stack_mean",
    "var",
    "log_softmax",
    "gelu",
    "rsqrt1",
    "argmax",
    "powpos",
    "compare_cast",
    "logical",
    "neg_step",
    "sqrt_relu",
    "pow0",
    "max_tie",
)
BLAS = ("matmul", "matvec", "vecmat", "batched")
# NumPy reductions round differently over a strided view (eager) and a contiguous copy (a plan)
STRIDED = ("reshape_t", "swap", "flip", "take", "slice_concat", "getitem_row", "expand_squeeze")
STRIDED += ("neg_step",)
REDUCING = (*REDUCE, "softmax", "layer_norm", "log_softmax", "var", "stack_mean", "argmax")


def bitwise_expected(recipe):
    """Whether every plan must match eager bit for bit: the same NumPy calls in the same
    dtypes (fused ones chunk by chunk, rewrites exact), unless BLAS or a reduction sees
    another memory layout than eager's (a materialized transpose or broadcast)."""
    ops = {op for op, *_ in recipe}
    return not ops & set(BLAS) and not (ops & set(STRIDED) and ops & set(REDUCING))


ALL_OPS = UNARY + BINARY + REDUCE + OTHER


def _full(v):
    """Broadcast a value to (R, C) (for ops that need the full shape)."""
    return gg.broadcast_to(v, (R, C)) if v.shape != (R, C) else v


def apply(op, a, b, k):
    """One program step on values ``a`` and ``b`` (every shape broadcasts to (R, C))."""
    if op == "exp_tanh":
        return gg.exp(gg.tanh(a))
    if op == "sin":
        return gg.sin(a)
    if op == "tanh":
        return gg.tanh(a)
    if op == "sigmoid":
        return gg.sigmoid(a)
    if op == "relu":
        return gg.relu(a)
    if op == "abs":
        return gg.abs(a)
    if op == "square":
        return a * a
    if op == "neg":
        return -a
    if op == "sqrt1":
        return gg.sqrt(a * a + 1.0)
    if op == "log1":
        return gg.log(a * a + 1.0)
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return a / (b * b + 1.0)
    if op == "maximum":
        return gg.maximum(a, b)
    if op == "minimum":
        return gg.minimum(a, b)
    if op == "where":
        return gg.where(a > b, a, b * 0.5)
    if op == "pow2":
        return a**2
    if op in REDUCE:
        a = _full(a)
        axis, keep = [(0, True), (1, True), (0, False), (None, True)][k % 4]
        if op == "logsumexp":
            return gg.logsumexp(a, axis=axis, keepdims=keep)
        return getattr(gg, op)(a, axis=axis, keepdims=keep)
    if op == "matmul":
        a, b = _full(a), _full(b)
        return a @ (gg.transpose(b) @ b) * 0.05
    if op == "reshape_t":
        return (
            gg.transpose(gg.reshape(_full(a), (C, R)))
            if k % 2
            else gg.reshape(_full(a), (-1,)).reshape(R, C)
        )
    if op == "slice_concat":
        a = _full(a)
        return gg.concatenate([a[:, 2:], a[:, :2] * 2.0], axis=1)
    if op == "take":
        return gg.take(_full(a), PERM, axis=1)
    if op == "flip":
        return _full(a)[::-1, ::2].reshape(R, C // 2)[:, :1] if k % 2 else _full(a)[::-1]
    if op == "softmax":
        return gg.softmax(_full(a), axis=k % 2)
    if op == "layer_norm":
        return gg.layer_norm(_full(a) * 3.0)
    if op == "cast":
        other = np.float64 if a.dtype == np.float32 else np.float32
        return gg.astype(gg.astype(a, other), a.dtype)
    if op == "identity":
        return a
    if op == "log_raw":  # NaN for negatives, -inf at 0
        return gg.log(a)
    if op == "div_raw":  # inf where b is 0
        return a / b
    if op == "const":
        return gg.ones_like(a) * 2.0 + gg.full((C,), 0.5, dtype=a.dtype)
    if op == "matvec":  # 1-D right operand
        return (_full(a) @ _full(b)[0])[:, None]
    if op == "vecmat":  # 1-D left operand
        return _full(b)[1] @ (gg.transpose(_full(a)) @ _full(a)) * 0.1
    if op == "batched":
        st2 = gg.stack([_full(a), _full(b)])
        return gg.sum(st2 @ gg.transpose(st2, (0, 2, 1)), axis=0) @ _full(a) * 0.1
    if op == "expand_squeeze":
        return gg.squeeze(gg.expand_dims(a, 0), 0)
    if op == "swap":
        return gg.swapaxes(gg.reshape(_full(a), (C, R)), 0, 1).reshape(R, C)
    if op == "stack_mean":
        return gg.mean(gg.stack([_full(a), _full(b)], axis=2), axis=2)
    if op == "var":
        return gg.var(_full(a), axis=k % 2, keepdims=True)
    if op == "log_softmax":
        return gg.log_softmax(_full(a), axis=-1)
    if op == "gelu":
        return gg.gelu(a, approximate="tanh" if k % 2 else "none")
    if op == "rsqrt1":
        return gg.rsqrt(a * a + 1.0)
    if op == "argmax":
        return gg.astype(gg.argmax(_full(a), axis=1), a.dtype)[:, None] * a
    if op == "powpos":
        return gg.power(a * a + 1.0, gg.tanh(b))
    if op == "compare_cast":
        return gg.astype(a < b, a.dtype) * a
    if op == "logical":
        return gg.where(gg.logical_and(a > 0, gg.logical_not(b < 0)), a, b)
    if op == "getitem_row":
        return _full(a)[k % R][None, :]
    if op == "neg_step":  # negative steps whose start lies before the beginning or past the end
        a = _full(a)
        nothing = a[-R - 1 - k % 3 :: -1 - k % 2]  # starts before element 0: empty
        backwards = a[R + k :: -1]  # starts past the end: the whole axis, reversed
        no_cols = backwards[:, -C - 1 - k :: -2]  # empty along the columns
        return gg.concatenate([nothing, backwards], axis=0) + gg.sum(no_cols)
    if op == "sqrt_relu":  # d sqrt at 0 is inf: the masks of relu and maximum must select
        return gg.sqrt(gg.relu(a)) + gg.sqrt(gg.maximum(b, 0.0))
    if op == "pow0":  # d/da a**0 is 0, also at a == 0
        return a**0.0 * b
    if op == "max_tie":  # a max over a row with a tie (and a sqrt of it: inf cotangents at 0)
        a = _full(a)
        return gg.sqrt(gg.max(gg.concatenate([a, a[:, :1]], axis=1), axis=1, keepdims=True) ** 2)
    raise AssertionError(op)


def program(recipe, n_out=2, dup=False):
    """A function of (x, y) (x: (R, C), y: (C,)) built from ``recipe``; returns the last
    ``n_out`` values nobody consumed (the last value if every one was consumed)."""

    def fn(x, y):
        vals = [x, y]
        used = [False, False]
        for op, i, j, k in recipe:
            i, j = i % len(vals), j % len(vals)
            used[i] = used[j] = True
            vals.append(apply(op, vals[i], vals[j], k))
            used.append(False)
        outs = [v for v, u in zip(vals[2:], used[2:]) if not u] or [vals[-1]]
        outs = outs[-n_out:]
        if dup:  # the same value twice, and an input, as outputs
            outs = [*outs, outs[0], x]
        return tuple(outs)

    return fn


def loss_of(fn):
    """A scalar loss of every output of ``fn`` (weighted, so every output matters)."""

    def loss(x, y):
        total = 0.0
        for n, o in enumerate(fn(x, y)):
            total = total + gg.sum(gg.sin(o * (0.3 + 0.1 * n)))
        return total

    return loss


recipes = st.lists(
    st.tuples(st.sampled_from(ALL_OPS), st.integers(0, 99), st.integers(0, 99), st.integers(0, 7)),
    min_size=1,
    max_size=10 if SCALE == 1 else 20,
)
dtypes = st.sampled_from([np.float32, np.float64])


def inputs(seed, dtype, dtype_y=None, special=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((R, C)).astype(dtype)
    y = rng.standard_normal(C).astype(dtype_y or dtype)
    if special:  # zeros, infinities and a NaN
        x[0, 0], x[1, 1], y[2] = 0.0, np.inf, 0.0
        x[2, 3] = -np.inf if seed % 2 else np.nan
    return x, y


def assert_same(got, want, exact, what, single=False):
    """``single``: a float32 step happened upstream (an f32 product promoted to f64 carries
    float32 rounding, and BLAS may sum a product in another order under jit)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.dtype, want.dtype)
    assert np.array_equal(np.isnan(got), np.isnan(want)), what
    assert np.array_equal(np.isposinf(got), np.isposinf(want)), what
    assert np.array_equal(np.isneginf(got), np.isneginf(want)), what
    if exact:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        tol = 1e-4 if got.dtype == np.float32 or single else 1e-10
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=what)


def compile_all(fn, *args):
    for opt, fuse, k in CONFIGS:
        jf = gg.jit(fn, backend="numpy", optimize=opt, fuse=fuse, streams=k, verify=True)
        yield (opt, fuse, k), jf.lower(*args)


# -- memory: no two possibly concurrent live values share bytes ---------------------------------
def check_memory_plan(c):
    """From ``c.memory.slots`` and ``c.schedule``: two arena values whose byte ranges overlap
    must be ordered: every access (definition, reads, reads through views) of one
    happens-before the definition of the other, unless the second is the first's in-place
    successor (written by the step that last reads it, element by element)."""
    slots, sched = c.memory.slots, c.schedule
    root = {v: c.memory.root(v) for v in slots}
    access: dict = {}
    for i, step in enumerate(sched.steps):
        for v in step.node.inputs:
            access.setdefault(root[v], set()).add(i)
        for v in step.node.outputs:
            access.setdefault(root[v], set()).add(i)
    arena = [v for v, s in slots.items() if s.kind == "arena"]
    for v in arena:
        s = slots[v]
        assert s.size == v.type.nbytes and 0 <= s.offset <= s.offset + s.size <= (
            c.memory.arena_bytes
        ), f"#{v.id} [{s.offset}, +{s.size}) outside the arena of {c.memory.arena_bytes} B"
    # an in-place chain is one buffer: group it and check buffers against each other
    head = {}
    for v in sorted(arena, key=lambda v: slots[v].first):
        p = slots[v].inplace
        head[v] = head[p] if p is not None else v
    buffers: dict = {}
    for v in arena:
        buffers.setdefault(head[v], []).append(v)
    for members in buffers.values():  # an in-place step is the last access of its input
        for v in members:
            p = slots[v].inplace
            if p is None:
                continue
            d = slots[v].first
            for a in access.get(p, ()):
                assert a == d or sched.happens_before(a, d), (
                    f"in-place #{v.id} over #{p.id} at step {d}, but step {a} also reads it"
                )
    heads = list(buffers)
    for x, y in itertools.combinations(heads, 2):
        lo_x = slots[x].offset
        hi_x = lo_x + max(slots[m].size for m in buffers[x])
        lo_y = slots[y].offset
        hi_y = lo_y + max(slots[m].size for m in buffers[y])
        if hi_x <= lo_y or hi_y <= lo_x or hi_x == lo_x or hi_y == lo_y:
            continue
        ax = set().union(*(access.get(m, set()) for m in buffers[x]))
        ay = set().union(*(access.get(m, set()) for m in buffers[y]))
        dx, dy = min(ax), min(ay)
        x_first = all(sched.happens_before(a, dy) for a in ax)
        y_first = all(sched.happens_before(a, dx) for a in ay)
        assert x_first or y_first, (
            f"#{x.id} [{lo_x},{hi_x}) and #{y.id} [{lo_y},{hi_y}) share arena bytes but are "
            f"not ordered by happens-before\n{sched.describe()}\n{c.memory.table()}"
        )


def check_calls(c, args, other_args, ref_other):
    """A second call with other inputs leaves the first outputs unchanged and inputs alone."""
    saved_in = [np.copy(a) for a in args]
    first = [np.copy(o) for o in c(*args)]
    first_refs = c(*args)
    before = [np.copy(o) for o in first_refs]
    second = c(*other_args)
    for a, s in zip(args, saved_in):
        np.testing.assert_array_equal(a, s)
    for r, b, f in zip(first_refs, before, first):
        np.testing.assert_array_equal(r, b)
        np.testing.assert_array_equal(r, f)
    for g, w in zip(second, ref_other):
        assert_same(g, w, False, "second call")


# -- 1, 4, 5: forward ------------------------------------------------------------------------
@settings(max_examples=80 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes, dtype=dtypes, dtype_y=dtypes, seed=st.integers(0, 3), special=st.booleans())
def test_eager_equals_jit_every_config(recipe, dtype, dtype_y, seed, special):
    fn = program(recipe, dup=seed % 2 == 1)
    x, y = inputs(seed, dtype, dtype_y, special)
    x2, y2 = inputs(seed + 10, dtype, dtype_y)
    with np.errstate(all="ignore"):
        want = fn(x, y)
        want2 = fn(x2, y2)
    exact = bitwise_expected(recipe)
    for cfg, c in compile_all(fn, x, y):
        with np.errstate(all="ignore"):
            got = c(x, y)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w, exact, f"{cfg}\n{c.graph}", single=np.float32 in (dtype, dtype_y))
        check_memory_plan(c)
        with np.errstate(all="ignore"):
            check_calls(c, (x, y), (x2, y2), want2)


@requires_emulator  # backend="cpu" needs the same host C++ compiler
@settings(max_examples=12 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recipe=recipes,
    dtype=dtypes,
    seed=st.integers(0, 3),
    special=st.booleans(),
    k=st.sampled_from([1, 2]),
)
def test_cpu_backend_equals_numpy_backend(recipe, dtype, seed, special, k):
    """The same random programs on backend="cpu" (every fused group a native kernel) and on
    the NumPy backend: equal within the op tolerances, with NaN and inf in the same places."""
    fn = program(recipe, dup=seed % 2 == 1)
    x, y = inputs(seed, dtype, dtype, special)
    with np.errstate(all="ignore"), mock.patch.dict(os.environ, {"GPUGRAPH_CPU_NATIVE": "all"}):
        want = gg.jit(fn, backend="numpy", streams=k)(x, y)
        c = gg.jit(fn, backend="cpu", streams=k, verify=True).lower(x, y)
        got = c(x, y)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w, False, f"cpu, {k} stream(s)\n{c.graph}", single=dtype == np.float32)


# -- 3: races, forward and backward ---------------------------------------------------------
@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes, seed=st.integers(0, 3), k=st.sampled_from([2, 4]), fuse=st.booleans())
def test_no_races_forward_and_backward(recipe, seed, k, fuse):
    fn = program(recipe, dup=seed == 3)
    x, y = inputs(seed, np.float32)
    for f in (fn, gg.grad(loss_of(fn), argnums=(0, 1))):
        c = gg.jit(f, backend="numpy", fuse=fuse, streams=k, verify=True).lower(x, y)
        with np.errstate(all="ignore"):
            report = check_races(c, x, y, trials=6, seed=seed)
        assert report.ok, f"{report}\n{c.graph}\n{c.schedule.describe()}"
        check_memory_plan(c)


# -- 2: gradients --------------------------------------------------------------------------
def numeric_grad(f, args, eps=1e-6):
    out = []
    for n, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [np.copy(b) for b in args]
            minus = [np.copy(b) for b in args]
            plus[n][idx] += eps
            minus[n][idx] -= eps
            g[idx] = (float(f(*plus)) - float(f(*minus))) / (2 * eps)
        out.append(g)
    return out


# kinks (relu, abs, max, ...) break finite differences; "cast" rounds through float32
KINKS = ("relu", "abs", "maximum", "minimum", "where", "max", "min", "cast", "log_raw", "div_raw")
KINKS += ("argmax", "compare_cast", "logical", "sqrt_relu", "pow0", "max_tie")
SMOOTH = tuple(o for o in ALL_OPS if o not in KINKS)
smooth_recipes = st.lists(
    st.tuples(st.sampled_from(SMOOTH), st.integers(0, 99), st.integers(0, 99), st.integers(0, 7)),
    min_size=1,
    max_size=6,
)


grad_recipes = st.lists(
    st.tuples(
        st.sampled_from([o for o in ALL_OPS if o not in ("log_raw", "div_raw")]),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 7),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=grad_recipes, seed=st.integers(0, 3), dtype=dtypes)
def test_grad_eager_jit_and_finite_differences(recipe, seed, dtype):
    fn = program(recipe)
    loss = loss_of(fn)
    x, y = inputs(seed, dtype)
    gfn = gg.grad(loss, argnums=(0, 1))
    eager = gfn(x, y)
    big = max(float(np.max(np.abs(g))) for g in eager)
    # central differences are only accurate where the loss is tame (|grad| not huge)
    if dtype == np.float64 and big < 1e3 and all(op not in KINKS for op, *_ in recipe):
        num = numeric_grad(gg.jit(loss, backend="numpy"), [x, y])
        for g, n in zip(eager, num):
            np.testing.assert_allclose(g, n, rtol=1e-4, atol=1e-5 * max(1.0, big))
    exact = bitwise_expected(recipe)
    for cfg, c in compile_all(gfn, x, y):
        for g, e in zip(c(x, y), eager):
            assert_same(g, e, exact, f"{cfg}\n{c.graph}")


def edge_inputs(seed, dtype):
    """Finite inputs on the kinks: exact zeros (-0 too), a row of ties, repeated values."""
    x, y = inputs(seed, dtype)
    x[0, :3] = 0.0
    x[1] = x[1, 0]  # a row of ties
    x[2, 1], y[0], y[3] = -0.0, 0.0, -0.0
    y[5] = y[4]
    return x, y


def kink_loss_of(fn):
    """A scalar loss whose cotangent is infinite at the zeros of fn's outputs (sqrt at 0)
    where relu and abs select: their derivative there is 0, so the gradient must be 0, not
    inf * 0 = NaN."""

    def loss(x, y):
        total = 0.0
        for o in fn(x, y):
            total = total + gg.sum(gg.sin(gg.sqrt(gg.relu(o)) + 0.5 * gg.sqrt(gg.abs(o))))
        return total

    return loss


@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=st.deferred(lambda: jvp_recipes), seed=st.integers(0, 3), dtype=dtypes)
def test_grad_on_kinks_is_nan_free_where_the_loss_is_finite(recipe, seed, dtype):
    """At zeros and ties of finite inputs, a finite loss has a NaN-free gradient, eager and
    jitted alike: a 0/1 mask multiplied into an inf cotangent (inf * 0) is the bug this hunts.
    (Programs whose own steps take sqrt at 0 are left out: a zero cotangent meeting sqrt's
    infinite derivative is NaN in torch and JAX too.)"""
    fn = program(recipe)
    loss = kink_loss_of(fn)
    x, y = edge_inputs(seed, dtype)
    with np.errstate(all="ignore"):
        value = float(loss(x, y))
        if not np.isfinite(value):
            return
        eager = gg.grad(loss, argnums=(0, 1))(x, y)
        jitted = gg.jit(gg.grad(loss, argnums=(0, 1)), backend="numpy")(x, y)
    for g, j in zip(eager, jitted):
        assert not np.isnan(g).any(), f"NaN in the gradient of a finite loss: {g}"
        assert_same(j, g, False, "jit")


# -- 6: jvp against vjp ----------------------------------------------------------------------
# sqrt of a relu or a max that is 0: forward mode multiplies the zero tangent by sqrt's
# infinite derivative (0 * inf = NaN), as torch.func.jvp and jax.jvp do; reverse mode selects
# after the product and stays finite, so the two are not each other's transpose there
INF_AT_0 = ("sqrt_relu", "max_tie")
jvp_recipes = st.lists(
    st.tuples(
        st.sampled_from([o for o in ALL_OPS if o not in ("log_raw", "div_raw", *INF_AT_0)]),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 7),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=jvp_recipes, seed=st.integers(0, 3), jit=st.booleans())
def test_jvp_is_vjp_transposed(recipe, seed, jit):
    fn = program(recipe)
    x, y = inputs(seed, np.float64)
    tx, ty = inputs(seed + 100, np.float64)
    outs = fn(x, y)
    rng = np.random.default_rng(seed + 7)
    cts = tuple(rng.standard_normal(np.shape(o)) for o in outs)

    def both(x, y, tx, ty, cts):
        _, t_out = gg.jvp(fn, (x, y), (tx, ty))
        _, vjp_fn = gg.vjp(fn, x, y)
        gx, gy = vjp_fn(cts)
        return t_out, gx, gy

    f = gg.jit(both, backend="numpy", verify=True) if jit else both
    t_out, gx, gy = f(x, y, tx, ty, cts)
    lhs = sum(float(np.sum(np.asarray(t) * c)) for t, c in zip(t_out, cts))
    rhs = float(np.sum(gx * tx) + np.sum(gy * ty))
    # "cast" rounds tangents and cotangents through float32, each its own way
    tol = 1e-6 if any(op == "cast" for op, *_ in recipe) else 1e-9
    assert lhs == pytest.approx(rhs, rel=tol, abs=tol)


# -- 1b: fused NumPy kernels over tiny chunks (chunk edges inside rows), optionally threaded ---
@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    recipe=recipes,
    dtype=dtypes,
    seed=st.integers(0, 3),
    chunk=st.sampled_from([1, 2, 3, 5, 7]),
    threads=st.sampled_from([1, 2]),
)
def test_fused_chunks_equal_eager(recipe, dtype, seed, chunk, threads):
    from gpugraph.ops import fused

    fn = program(recipe, dup=seed == 1)
    x, y = inputs(seed, dtype, special=seed == 2)
    with np.errstate(all="ignore"):
        want = fn(x, y)
    saved = fused.CHUNK_ELEMENTS, fused.THREADS
    fused.CHUNK_ELEMENTS, fused.THREADS = chunk, threads
    try:
        for k in (1, 2):
            c = gg.jit(fn, backend="numpy", streams=k, verify=True).lower(x, y)
            with np.errstate(all="ignore"):
                got = c(x, y)
            for g, w in zip(got, want):
                assert_same(g, w, False, f"chunk={chunk}\n{c.graph}")
    finally:
        fused.CHUNK_ELEMENTS, fused.THREADS = saved


# -- second order, and jvp graphs on several streams --------------------------------------------
@settings(max_examples=20 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=smooth_recipes, seed=st.integers(0, 3), k=st.sampled_from([1, 2, 4]))
def test_grad_of_grad_and_jvp_graphs(recipe, seed, k):
    fn = program(recipe)
    loss = loss_of(fn)
    x, y = inputs(seed, np.float64)
    tx, ty = inputs(seed + 100, np.float64)

    def gg_loss(x, y):  # grad of grad: the squared gradient norm's gradient
        gx, gy = gg.grad(loss, argnums=(0, 1))(x, y)
        return gg.sum(gx * gx) + gg.sum(gy * gy)

    def hvp(x, y, tx, ty):
        return gg.jvp(gg.grad(loss, argnums=(0, 1)), (x, y), (tx, ty))[1]

    for f, args in ((gg.grad(gg_loss, argnums=(0, 1)), (x, y)), (hvp, (x, y, tx, ty))):
        want = f(*args)
        for fuse in (True, False):
            c = gg.jit(f, backend="numpy", fuse=fuse, streams=k, verify=True).lower(*args)
            for g, w in zip(c(*args), want):
                assert_same(g, w, False, f"{fuse} {k}\n{c.graph}")
            check_memory_plan(c)
            if k > 1:
                report = check_races(c, *args, trials=4, seed=seed)
                assert report.ok, f"{report}\n{c.graph}"


# -- regressions and checks that the checkers can fail ----------------------------------------
def test_regression_view_launch_writes_no_bytes():
    """A reshape kept in the launch list only for its waits/record is a view: it writes no
    bytes. The simulator counted its base's bytes as written, so a concurrent read of the
    base on another stream was reported as a WAR hazard (a false race)."""

    def loss(x, y):
        m = gg.max(gg.exp(gg.tanh(x)), axis=0)
        return gg.sum(gg.sin(gg.sin(x) * 0.3)) + gg.sum(gg.sin(m * 0.4))

    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    y = np.zeros(4, np.float32)
    f = gg.grad(loss, argnums=(0, 1))
    c = gg.jit(f, backend="numpy", fuse=False, streams=2).lower(x, y)
    views = [la for la in c.executable.launches if la.runner is None]
    assert views, "the plan no longer has a view launch; the regression needs one"
    report = check_races(c, x, y, trials=4)
    assert report.ok, str(report)


def test_memory_checker_catches_a_planted_overlap():
    """Give two values that may run concurrently the same offset: the checker must object."""

    def fn(x):
        return gg.sum(gg.exp(x) * 2.0) + gg.sum(gg.sin(x) * 3.0)

    x = np.ones((4, 8), np.float32)
    c = gg.jit(fn, backend="numpy", fuse=False, streams=2).lower(x)
    check_memory_plan(c)
    sched, slots = c.schedule, c.memory.slots
    arena = [v for v, s in slots.items() if s.kind == "arena"]
    step = {s.node: i for i, s in enumerate(sched.steps)}
    pair = next(
        (a, b)
        for a, b in itertools.combinations(arena, 2)
        if not sched.ordered(step[a.node], step[b.node])
    )
    slots[pair[1]].offset = slots[pair[0]].offset
    with pytest.raises(AssertionError, match="share arena bytes"):
        check_memory_plan(c)
