"""Source conversion (autograph) in gg.jit and eager autodiff through Python control flow.

Every program of the corpus runs three ways on inputs that take each of its branches: as plain
Python on NumPy arrays (the reference), jitted (converted; one cache entry for all inputs), and
for the differentiable ones, eager gg.grad (which now follows Python control flow on concrete
values) against the jitted grad of the converted program.
"""

from __future__ import annotations

import inspect
import os
import traceback

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.errors import GpuGraphError, TraceError


def f32(*v):
    return np.array(v, np.float32)


def s32(v):
    return np.array(v, np.float32)


# ---- helpers with control flow of their own -----------------------------------------------
def clip_norm(v, limit):
    n = (v * v).sum()
    if n > limit * limit:
        v = v * (limit / gg.sqrt(n))
    return v


def halve_until(v, bound):
    steps = 0
    while v.max() > bound:
        gg.autograph.set_loop_options(max_steps=64)
        v = v * 0.5
        steps += 1
    return v, steps


def sign_of(x):
    if x > 0:
        return 1.0
    elif x < 0:
        return -1.0
    else:
        return 0.0


class Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, v):
        if v.sum() > 0:
            return v * self.k
        return v - self.k


# ---- the corpus ---------------------------------------------------------------------------
def p_if_else(x):
    if x.sum() > 0:
        y = x * 2.0
    else:
        y = -x
    return y


def p_elif(x):
    s = x.sum()
    if s > 10:
        y = x - 10.0
    elif s > 0:
        y = x * x
    elif s > -5:
        y = x + 1.0
    else:
        y = x * 0.0
    return y


def p_return_both(x):
    if x.mean() > 0:
        return (x * x).sum()
    else:
        return x.sum() * 3.0


def p_early_return(x):
    if x.max() > 2:
        return x.sum()
    y = x * 2.0
    if y.min() < -1:
        return y.mean()
    return (y * y).sum()


def p_nested_if(x):
    a = x.sum()
    if a > 0:
        if x.max() > 3:
            r = a * 2.0
        else:
            r = a + 1.0
    else:
        r = -a
    return r


def p_python_counter_if(x):
    n = 0
    if x.sum() > 0:
        n = n + 5
    else:
        n = n - 1
    return x * n


def p_while(x):
    i = 0
    while x.sum() < 100:
        gg.autograph.set_loop_options(max_steps=200)
        x = x * 1.5 + 1.0
        i += 1
    return x, i


def p_while_break(x):
    i = 0
    while i < 50:
        x = x + 1.0
        if x.sum() > 20:
            break
        i += 1
    return x, i


def p_while_continue(x):
    i = 0
    acc = 0.0
    while i < 6:
        i += 1
        if x[0] * i > 2:
            continue
        acc = acc + x.sum() * i
    return acc


def p_while_nested_if(x):
    s = x.sum()
    steps = 0
    while s > 1:
        if s > 10:
            s = s - 7.0
        else:
            s = s * 0.5
        steps += 1
    return s, steps


def p_fori_traced(x, n):
    for i in range(n):
        x = x * 0.9 + i
    return x


def p_fori_traced_lo_hi(x, n):
    acc = x.sum() * 0.0
    for i in range(1, n):
        if i > 2:
            acc = acc + x.sum() * i
        else:
            acc = acc - 1.0
    return acc


def p_scan(xs):
    h = xs[0] * 0.0
    for row in xs:
        h = gg.tanh(h + row)
    return h


def p_scan_if_counter(xs):
    pos = 0
    total = 0.0
    for v in xs:
        if v > 0:
            pos = pos + 1
            total = total + v
    return total, pos


def p_scan_continue(xs):
    total = 0.0
    for v in xs:
        if v < 0:
            continue
        total = total + v * v
    return total


def p_scan_break(xs):
    total = 0.0
    for v in xs:
        if total > 3:
            break
        total = total + v
    return total


def p_python_loop_traced_if(x):
    for k in range(3):
        if x.sum() > k:
            x = x - 1.0
        else:
            x = x + 0.5
    return x


def p_python_if_on_static(x):
    cfg = {"mode": 2}
    if cfg["mode"] == 2:
        y = x * 3.0
    else:
        y = x
    return y


def p_bool_ops(x):
    if x.sum() > 0 and x.max() < 5:
        y = x + 1.0
    elif not x.min() > -3 or x.sum() > 8:
        y = x - 1.0
    else:
        y = x * 2.0
    return y


def p_calls_helper(x):
    v = clip_norm(x, 2.0)
    if v.sum() > 0:
        v = v + 1.0
    return v


def p_helper_while(x):
    v, steps = halve_until(x, 1.0)
    return v.sum() + steps


def p_helper_return(x):
    return sign_of(x.sum()) * x


def p_method(x):
    s = Scaler(3.0)
    return s.apply(x)


def p_nested_loops(x):
    total = 0.0
    i = 0
    while i < 3:
        for v in x:
            if v > i:
                total = total + v
        i += 1
    return total


def p_while_traced_bound(x, n):
    i = 0
    acc = 0.0
    while i < n:
        acc = acc + x[0]
        i += 1
    return acc, i


def p_loop_then_if(x):
    for _ in range(2):
        x = x * 2.0
    if x.sum() > 4:
        x = x / 4.0
    return x


def p_tuple_state(x):
    a, b = x, x * 0.0
    if a.sum() > 0:
        a, b = b, a
    return a - b


def p_chained_compare(x):
    if 0 < x.sum() < 5:
        x = x * 10.0
    while -100.0 < x.sum() < 30:
        x = x + 1.0
    return x


def p_while_turns_traced(x):
    acc = 0.0  # Python: the first test is a Python bool, the next ones are traced
    while acc < 3:
        acc = acc + x.sum()
    return acc


def p_python_for_traced_break(x):
    total = x[0] * 0.0
    for k in range(4):  # a Python loop whose `break` depends on a traced value
        if total > 2:
            break
        total = total + x[k]
    return total


def p_fori_break(x, n):
    total = 0.0
    for i in range(n):
        if total > 4:
            break
        total = total + x[0] * i
    return total


def p_nested_def(x):
    scale = 2.0

    def step(v):
        if v.sum() > 0:
            return v * scale
        return v - scale

    y = step(x)
    return step(y)


def p_while_break_continue(x):
    i = 0
    acc = 0.0
    while i < 10:
        i += 1
        v = x[gg.minimum(i, 3)]
        if v < 0:
            continue
        acc = acc + v
        if acc > 6:
            break
    return acc, i


def p_break_continue(xs):
    total = 0.0
    for v in xs:
        if v < 0:
            continue
        if v > 5:
            break
        total = total + v
    return total


X4 = [f32(1, 2, 3, 4), f32(-1, -2, -3, -4), f32(0.5, -0.2, 0.1, 0.3), f32(4, 5, 6, 1)]
X_SMALL = [f32(0.1, 0.2, 0.3, 0.1), f32(1, 1, 1, 1), f32(-3, -4, -5, -6), f32(2, 0.5, 7, 1)]
X_POS = [X_SMALL[0], X_SMALL[1], X_SMALL[3], f32(50, 60, 0, 0)]  # p_while diverges below 0
XS = [f32(1, -2, 3, 0.5, -1), f32(-1, -1, -1, -1, -1), f32(2, 2, 2, 2, 6), f32(0.5, 9, -2, 1, 1)]
N = [np.array(0), np.array(3), np.array(6)]

CORPUS = [
    (p_if_else, [(x,) for x in X4]),
    (p_elif, [(f32(6, 6, 6, 6),), (f32(1, 1, 1, 1),), (f32(-1, -1, 0, 0),), (f32(-9, -9, 0, 0),)]),
    (p_return_both, [(x,) for x in X4]),
    (p_early_return, [(f32(3, 0, 0, 0),), (f32(-1, 0, 0, 0),), (f32(0.1, 0.2, 0.1, 0),)]),
    (p_nested_if, [(x,) for x in X4]),
    (p_python_counter_if, [(x,) for x in X4]),
    (p_while, [(x,) for x in X_POS]),
    (p_while_break, [(x,) for x in X_SMALL]),
    (p_while_continue, [(x,) for x in X_SMALL]),
    (p_while_nested_if, [(x,) for x in X4]),
    (p_fori_traced, [(X4[0], n) for n in N]),
    (p_fori_traced_lo_hi, [(X4[1], n) for n in N]),
    (p_scan, [(np.stack([x, x * 0.5]),) for x in X4]),
    (p_scan_if_counter, [(x,) for x in XS]),
    (p_scan_continue, [(x,) for x in XS]),
    (p_scan_break, [(x,) for x in XS]),
    (p_python_loop_traced_if, [(x,) for x in X4]),
    (p_python_if_on_static, [(x,) for x in X4]),
    (p_bool_ops, [(x,) for x in X4 + [f32(-4, 1, 1, 1), f32(9, 1, 1, -5)]]),
    (p_calls_helper, [(x,) for x in X4]),
    (p_helper_while, [(x,) for x in X4]),
    (p_helper_return, [(x,) for x in X4 + [f32(1, -1, 0, 0)]]),
    (p_method, [(x,) for x in X4]),
    (p_nested_loops, [(x,) for x in X4]),
    (p_while_traced_bound, [(X4[0], n) for n in N]),
    (p_loop_then_if, [(x,) for x in X4]),
    (p_tuple_state, [(x,) for x in X4]),
    (p_break_continue, [(x,) for x in XS]),
    (p_while_turns_traced, [(x,) for x in X_POS]),
    (p_python_for_traced_break, [(x,) for x in X4]),
    (p_fori_break, [(f32(1, 0, 0, 0), n) for n in N] + [(f32(-1, 0, 0, 0), np.array(5))]),
    (p_nested_def, [(x,) for x in X4 + [f32(1, -1.5, 0, 0)]]),
    (p_while_break_continue, [(x,) for x in X4]),
    (p_chained_compare, [(f32(0.5, 0.5, 0.1, 0.1),), (f32(-1, -1, 0, 0),), (f32(5, 5, 5, 6),)]),
]


def _close(a, b):
    """Equal values and, where the reference is an array (not a Python number, which the
    graph holds as a 0-d array of its carry's dtype), equal dtypes: a converted program
    must not promote differently from its Python run."""
    la, lb = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        np.testing.assert_allclose(np.asarray(u, np.float64), np.asarray(v, np.float64), 1e-5)
        if not isinstance(v, (bool, int, float)):
            assert np.asarray(u).dtype == np.asarray(v).dtype, (np.asarray(u).dtype, type(v))


@pytest.mark.parametrize("fn,inputs", CORPUS, ids=[f.__name__ for f, _ in CORPUS])
def test_corpus_matches_python_with_one_trace(fn, inputs):
    jf = gg.jit(fn)
    for args in inputs:
        _close(jf(*args), fn(*args))
    assert jf.cache_size == 1


def test_corpus_is_large_and_really_converts():
    assert len(CORPUS) >= 25
    jf = gg.jit(p_while)
    text = jf.lower(X4[0]).explain()
    line = inspect.getsourcelines(p_while)[1] + 2
    assert f"autograph: test_autograph.py:{line}: while -> gg.while_loop" in text
    src = gg.autograph.to_source(p_while)
    assert "ag__.while_stmt" in src and "max_steps=200" in src


def test_autograph_false_traces_as_written():
    with pytest.raises(TraceError, match="truth value"):
        gg.jit(p_if_else, autograph=False)(X4[0])


GRAD_CASES = [
    (p_if_else, X4),
    (p_return_both, X4),
    (p_early_return, [f32(3, 0, 0, 0), f32(-1, 0, 0, 0), f32(0.1, 0.2, 0.1, 0)]),
    (p_nested_if, X4),
    (p_while, X_POS),
    (p_scan, [np.stack([x, x * 0.5]) for x in X4]),
    (p_python_loop_traced_if, X4),
    (p_calls_helper, X4),
    (p_helper_while, X4),
    (p_bool_ops, X4),
]


@pytest.mark.parametrize("fn,inputs", GRAD_CASES, ids=[f.__name__ for f, _ in GRAD_CASES])
def test_grad_of_converted_equals_eager_grad(fn, inputs):
    def loss(x):
        out = fn(x)
        return (out[0] if isinstance(out, tuple) else out).sum()

    jg = gg.jit(gg.grad(loss))
    for x in inputs:
        eager = gg.grad(loss)(x)  # plain Python control flow on concrete values
        _close(jg(x), eager)
    assert jg.cache_size == 1


def test_eager_grad_matches_jax():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy

    def f(x, np_=gg):
        y = x
        while y.sum() < 10:
            y = y * 2.0
        if y.max() > 15:
            return (y**2).sum()
        return y.sum() * 3.0

    for x in (f32(1, 2), f32(8, 9)):
        want = jax.grad(lambda v: f(v))(jnp.asarray(x))
        np.testing.assert_allclose(gg.grad(f)(x), np.asarray(want), rtol=1e-6)
        out, vjp_fn = gg.vjp(f, x)
        np.testing.assert_allclose(vjp_fn(np.float32(1.0))[0], np.asarray(want), rtol=1e-6)


def test_eager_grad_int_and_index_of_concrete_values():
    def f(x):
        k = int(x.sum() > 0) + 1  # a Python int from a concrete value, a constant of the path
        return (x * x)[k] * float(k)

    np.testing.assert_allclose(gg.grad(f)(f32(1, 2, 3)), f32(0, 0, 12))


# ---- errors: construct, user file and line --------------------------------------------------
def bad_one_branch(x):
    if x.sum() > 0:
        y = x * 2.0
    return y


def bad_types(x):
    if x.sum() > 0:
        y = x * 2.0
    else:
        y = x.sum()
    return y


def bad_list_index(x, i):
    items = [x, x * 2.0, x * 3.0]
    return items[i]


def bad_try(x):
    try:
        if x.sum() > 0:
            x = x * 2.0
    except ValueError:
        pass
    return x


def bad_comprehension(x, n):
    parts = [x * k for k in range(n)]
    return parts[0]


def bad_return_in_loop(x):
    while x.sum() < 10:
        if x.max() > 3:
            return x
        x = x * 2.0
    return x


def bad_while_else(x):
    while x.sum() < 10:
        x = x * 2.0
    else:
        x = x + 1.0
    return x


def bad_defined_in_loop(x):
    while x.sum() < 10:
        x = x * 2.0
        last = x
    return last


def bad_carry_dtype(x):
    k = 0
    while x.sum() < 10:
        x = x * 2.0
        k = k + 0.5
    return x, k


def bad_shape_in_branch(x):
    if x.sum() > 0:
        y = x + gg.ones((3,))
    else:
        y = x
    return y


def bad_raise(x):
    if x.sum() < 0:
        raise ValueError("negative")
    return x


def _line_of(fn, needle):
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, ln in enumerate(lines) if needle in ln)


BAD = [
    (bad_one_branch, (X4[0],), "if x.sum()", r"variable 'y' is assigned in the true branch"),
    (bad_types, (X4[0],), "if x.sum()", r"variable 'y' is f32\[4\] after the true branch"),
    (bad_list_index, (X4[0], np.array(1)), "return items[i]", "index into a Python list"),
    (bad_try, (X4[0],), "if x.sum()", "inside a `try` block"),
    (bad_comprehension, (X4[0], np.array(2)), "parts = ", "comprehension, generator"),
    (bad_return_in_loop, (X4[0],), "while x.sum()", "containing `return`"),
    (bad_while_else, (X4[0],), "while x.sum()", r"while \.\.\. else"),
    (bad_defined_in_loop, (X4[0],), "while x.sum()", "variable 'last' is first assigned"),
    (bad_carry_dtype, (X4[0],), "while x.sum()", "variable 'k' is i64"),
    (bad_shape_in_branch, (X4[0],), "gg.ones", "broadcast|shape"),
    (bad_raise, (X4[0],), "if x.sum()", "containing `raise`"),
]


@pytest.mark.parametrize("fn,args,needle,msg", BAD, ids=[b[0].__name__ for b in BAD])
def test_bad_programs_name_the_construct_and_the_users_line(fn, args, needle, msg):
    with pytest.raises(GpuGraphError, match=msg) as info:
        gg.jit(fn)(*args)
    line = _line_of(fn, needle)
    assert f"test_autograph.py:{line}" in str(info.value)
    # the traceback shows the user's file and line, not generated code
    frames = [f for f in traceback.extract_tb(info.tb) if f.filename == os.path.abspath(__file__)]
    assert any(f.lineno == line for f in frames) or needle == "gg.ones"
    # the same programs run as plain Python on inputs they accept
    if fn in (bad_types, bad_carry_dtype, bad_try, bad_while_else):
        fn(*args)


def test_one_branch_variable_names_both_lines():
    with pytest.raises(TraceError) as info:
        gg.jit(bad_one_branch)(X4[0])
    assign = _line_of(bad_one_branch, "y = x * 2.0")
    assert f"true branch (line {assign})" in str(info.value)
    assert f"false branch (line {_line_of(bad_one_branch, 'if x.sum()')})" in str(info.value)


def test_traced_if_predicate_must_be_a_scalar():
    def f(x):
        if x > 0:
            x = x + 1.0
        return x

    with pytest.raises(GpuGraphError, match="shape \\(4,\\).*reduce it"):
        gg.jit(f)(X4[0])


def test_static_argument_retraces_per_value_and_stays_python():
    def f(x, mode):
        if mode == "double":
            return x * 2.0
        return x

    jf = gg.jit(f, static_argnames="mode")
    _close(jf(X4[0], mode="double"), X4[0] * 2)
    _close(jf(X4[0], mode="same"), X4[0])
    assert jf.cache_size == 2  # one trace per static value, as in JAX
    assert "ag__.if_stmt" in gg.autograph.to_source(jf)


def test_conversion_is_cached_and_leaves_library_code_alone():
    conv = gg.autograph.convert(clip_norm)
    assert conv is not clip_norm and gg.autograph.convert(clip_norm) is conv
    for f in (np.sum, gg.tanh, os.path.join, len, lambda v: v):
        assert gg.autograph.call(f) is f
    m = gg.autograph.call(Scaler(2.0).apply)
    assert m.__func__ is gg.autograph.convert(Scaler.apply)


def test_concrete_tracing_is_eager_only():
    def loss(x):
        if x.sum() > 0:
            return (x * x).sum()
        return x.sum()

    x = X4[0]
    np.testing.assert_allclose(gg.grad(loss)(x), 2 * x)  # eager: follows the values
    with pytest.raises(TraceError, match="truth value"):  # jit: abstract values
        gg.jit(gg.grad(loss), autograph=False)(x)
    np.testing.assert_allclose(gg.jit(gg.grad(loss))(x), 2 * x)  # jit + autograph: a cond


def test_lambdas_and_bound_methods_convert_as_entries():
    jl = gg.jit(lambda x: p_nested_if(x) + 1.0)  # the lambda's call is converted
    jm = gg.jit(Scaler(3.0).apply)
    for x in X4:
        _close(jl(x), p_nested_if(x) + 1.0)
        _close(jm(x), Scaler(3.0).apply(x))
    assert jl.cache_size == jm.cache_size == 1
    assert "ag__.call(p_nested_if)" in gg.autograph.to_source(jl)


def test_defaults_and_annotations_come_from_the_function():
    k = 3.0

    def scaled(x: np.ndarray, s: float = k) -> np.ndarray:
        if x.sum() > 0:
            return x * s
        return x

    jf = gg.jit(lambda x, s=k: scaled(x) + s)
    for x in X4:
        _close(jf(x), scaled(x) + k)
    assert jf.cache_size == 1


# ---- Python counters carried by converted loops stay weakly typed (issue 16) ----------------
def p_weak_counters(x, k):
    n = 0
    while x.sum() > n:
        n += 1
    c = 1.0
    for _i in range(k):
        c += 0.5
    m = 0
    for _v in x:
        m += 1
    return x * n, x * c, x * m


def test_converted_loop_counters_promote_like_python():
    """A Python int/float carried by a converted while / for-range / for-over-array keeps the
    float32 of ``x * counter`` that the plain Python run has (a strong int64 would give
    float64); values and gradients equal the eager run's."""
    x = f32(1, 2, 0.5)
    jf = gg.jit(p_weak_counters)
    for k in (0, 3):
        want, got = p_weak_counters(x, k), jf(x, np.int64(k))
        assert [w.dtype for w in want] == [g.dtype for g in got] == [np.float32] * 3
        _close(got, want)
    assert jf.cache_size == 1

    def loss(x):
        a, b, c = p_weak_counters(x, 3)
        return (a + b + c).sum()

    _close(gg.jit(gg.grad(loss))(x), gg.grad(loss)(x))
