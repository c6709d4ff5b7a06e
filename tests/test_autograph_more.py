"""Autograph, second part (issue 16): Python numbers out of a converted `if` stay weakly typed,
a converted `for`'s variable after the loop, functions passed to gg.cond & co. converted, a
traced `break` in a Python range as one loop, the reverse-mode advice for converted loops, and
stale source. Each program is checked as in test_autograph.py: equal to its Python run (values
and dtypes) on inputs taking every branch, one trace, gradients equal to the eager ones."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback

import numpy as np
import pytest
from test_autograph import _close, _line_of, f32

import gpugraph as gg
from gpugraph.errors import GpuGraphError, TraceError

X4 = [f32(1, 2, 3, 4), f32(-1, -2, -3, -4), f32(0.5, -0.2, 0.1, 0.3), f32(-4, 5, -6, 1)]
XS = [f32(1, -2, 3, 0.5, -1), f32(-1, -1, -1, -1, -1), f32(2, 2, 2, 2, 6), f32(0.5, 9, -2, 1, 1)]
X8 = [np.arange(8, dtype=np.float32), -np.arange(8, dtype=np.float32), np.full(8, 0.7, np.float32)]


# ---- 1. Python numbers assigned in the branches of a converted if ---------------------------
def p_if_python_numbers(x):
    if x.sum() > 0:
        flag = 1
        scale = 0.5
    elif x.max() > 0:
        flag = 2
        scale = 1.5
    else:
        flag = 3
        scale = 2.0
    return x + flag, x * scale, flag


def p_if_number_after_loop(x):
    n = 0
    while x.sum() > n:
        n += 1
    if x.max() > 3:
        n = 10  # a Python number on one side, the weak loop counter on the other
    return x * n, n


def p_counter_arith(x):
    n = 0
    while x.sum() > n:
        n += 1
    if x.max() > 1:
        n = n + 1  # a weak counter plus a Python int: still a Python number in Python
    m = n * 2
    return x * m, x / (n + 1), x - (-n) ** 2 % 7


# ---- 2. a converted for's variable after the loop -------------------------------------------
def p_for_target_after(xs):
    acc = xs * 0.0
    for _ in range(2):  # `_` is a Python int here, a traced row below
        acc = acc + 1.0
    for _ in xs:
        acc = acc * 1.5
    for v in xs:
        if v > 1:
            break
    return acc, v


def p_fori_target_after(x, n):
    i = -1
    acc = x * 0.0
    for i in range(n):
        acc = acc + x * i
    return acc, i


# ---- 3. functions passed to gg.cond / switch / while_loop / fori_loop / scan ----------------
def scan_body(carry, v):
    if v > 0:
        carry = carry + v
    else:
        carry = carry - 1.0
    return carry, carry * 2.0


def halve_if_big(v):
    if v.max() > 2:
        return v * 0.5
    return v


def grow(v):
    if v.sum() < 5:
        return v + 1.0
    return v * 1.5


def p_explicit_scan_if(xs):
    total, ys = gg.scan(scan_body, 0.0, xs)
    return total, ys


def p_explicit_ops_convert(x):
    a = gg.cond(x.sum() > 0, lambda: halve_if_big(x), lambda: x * 0.0)
    b = gg.switch(gg.argmax(x), [lambda: x, lambda: halve_if_big(x + 1.0)])
    c = gg.while_loop(lambda v: v.sum() < 10, grow, x * x, max_steps=16)

    def step(i, acc):
        if i > 1:
            acc = acc + x[i]
        return acc

    d = gg.fori_loop(0, 4, step, x[0] * 0.0)
    return a, b, c, d


def ref_explicit_scan_if(xs):  # the same computation as plain Python, for the reference run
    total, ys = 0.0, []
    for v in xs:
        total, y = scan_body(total, v)
        ys.append(y)
    return total, gg.stack(ys)


def ref_explicit_ops_convert(x):
    a = halve_if_big(x) if x.sum() > 0 else x * 0.0
    b = [lambda: x, lambda: halve_if_big(x + 1.0)][min(int(gg.argmax(x)), 1)]()
    c = x * x
    while c.sum() < 10:
        c = grow(c)
    d = x[0] * 0.0
    for i in range(4):
        if i > 1:
            d = d + x[i]
    return a, b, c, d


# ---- 5. a traced break in a Python for over a range ------------------------------------------
def p_range_traced_break(x):
    total = x[0] * 0.0
    for k in range(8):
        if total > 2:
            break
        total = total + x[k]
    return total, k


def p_range_step_traced_break(x):
    total = x[0] * 0.0
    for k in range(1, 8, 2):
        if total > 2:
            break
        total = total + x[k]
    return total


def p_range_break_needs_python_int(x):
    items = [x[0], x[1], x[2], x[3]]
    total = x[0] * 0.0
    for k in range(4):
        if total > 2:
            break
        total = total + items[k]  # a list index: these iterations stay unrolled
    return total


CORPUS_MORE = [
    (p_if_python_numbers, [(x,) for x in X4]),
    (p_if_number_after_loop, [(x,) for x in [f32(0.5, 1), f32(2, 4), f32(-1, -1)]]),
    (p_counter_arith, [(x,) for x in [f32(0.5, 1), f32(2, 4), f32(-1, -1)]]),
    (p_for_target_after, [(x,) for x in XS]),
    (p_fori_target_after, [(X4[0], np.int64(n)) for n in (0, 1, 3)]),
    (p_explicit_scan_if, [(x,) for x in XS]),
    (p_explicit_ops_convert, [(x,) for x in X4]),
    (p_range_traced_break, [(x,) for x in X8]),
    (p_range_step_traced_break, [(x,) for x in X8]),
    (p_range_break_needs_python_int, [(x,) for x in X4]),
]


# gg.scan & co. trace their functions even on concrete arrays (no conversion outside gg.jit,
# as in JAX), so programs calling them explicitly compare with a plain-Python version
REFERENCE = {
    p_explicit_scan_if: ref_explicit_scan_if,
    p_explicit_ops_convert: ref_explicit_ops_convert,
}


@pytest.mark.parametrize("fn,inputs", CORPUS_MORE, ids=[f.__name__ for f, _ in CORPUS_MORE])
def test_more_corpus_matches_python_with_one_trace(fn, inputs):
    jf = gg.jit(fn)
    ref = REFERENCE.get(fn, fn)
    for args in inputs:
        _close(jf(*args), ref(*args))
    assert jf.cache_size == 1


GRAD_MORE = [
    (p_if_python_numbers, X4),
    (p_for_target_after, XS),
    (p_explicit_scan_if, XS),
    (p_explicit_ops_convert, X4),
    (p_range_traced_break, X8),
]


@pytest.mark.parametrize("fn,inputs", GRAD_MORE, ids=[f.__name__ for f, _ in GRAD_MORE])
def test_more_grads_equal_eager_grads(fn, inputs):
    def make_loss(f):
        def loss(x):
            parts = f(x)
            floats = [p for p in parts if getattr(p, "dtype", np.dtype(int)).kind == "f"]
            return sum((p * p).sum() for p in floats)

        return loss

    jg = gg.jit(gg.grad(make_loss(fn)))
    eager = gg.grad(make_loss(REFERENCE.get(fn, fn)))
    for x in inputs:
        _close(jg(x), eager(x))
    assert jg.cache_size == 1


def test_if_numbers_stay_weak_as_in_python():
    """`x_f32 + flag` after the `if` is float32, as in the Python run (a strong int64 output
    would promote it to float64); explicit gg.cond keeps weak outputs too, as JAX's does."""
    for x in X4:
        got = gg.jit(p_if_python_numbers)(x)
        assert got[0].dtype == got[1].dtype == np.float32
    assert gg.cond(True, lambda: 1, lambda: 2) == 1  # eagerly a Python number, like the branches
    jf = gg.jit(lambda x: x * gg.cond(x.sum() > 0, lambda: 2, lambda: 3))
    assert jf(X4[0]).dtype == np.float32
    mixed = gg.jit(lambda x: x * gg.cond(x.sum() > 0, lambda: 2, lambda: np.int64(3)))
    assert mixed(X4[0]).dtype == np.float64  # one strong branch: strong, as in JAX


def test_python_scalar_argument_arithmetic_promotes_like_numpy():
    """A Python scalar argument of gg.jit is weakly typed, and so is arithmetic on it alone."""

    def f(x, k):
        return x * (k * 2), x + (k / 2 - 1), x * gg.sin(k)

    jf = gg.jit(f)
    for k in (3, 2.5):
        _close(jf(X4[0], k), f(X4[0], k))
    assert [o.dtype for o in jf(X4[0], 3)] == [np.float32] * 3


def test_break_in_python_range_becomes_one_loop():
    text = gg.jit(p_range_traced_break).lower(X8[0]).explain()
    line = _line_of(p_range_traced_break, "for k in range(8)")
    want = f"test_autograph_more.py:{line}: for range (after a traced break) -> gg.while_loop"
    assert want in text
    # a body that needs the Python int keeps the unrolled form, and says nothing false
    text = gg.jit(p_range_break_needs_python_int).lower(X4[0]).explain()
    assert "after a traced break" not in text


def test_reverse_mode_advice_names_the_users_loop():
    def conv(x):
        while x.sum() < 10:
            x = x * 2.0
        return x.sum()

    def explicit(x):
        return gg.while_loop(lambda v: v.sum() < 10, lambda v: v * 2.0, x).sum()

    with pytest.raises(GpuGraphError, match=r"set_loop_options\(max_steps=N\)") as info:
        gg.jit(gg.grad(conv))(X4[0])
    assert f"test_autograph_more.py:{_line_of(conv, 'while x.sum()')}" in str(info.value)
    with pytest.raises(GpuGraphError, match="pass max_steps=N to gg.while_loop"):
        gg.jit(gg.grad(explicit))(X4[0])


# ---- errors: the user's file and line --------------------------------------------------------
def bad_target_of_empty_scan(x):
    for r in x[:0]:
        x = x + r
    return r


def bad_target_of_traced_range(x, n):
    for i in range(n):  # noqa: B007  (read after the loop)
        x = x + 1.0
    return x, i


BAD_MORE = [
    (bad_target_of_empty_scan, (X4[0],), "return r", "'r' has no value here.*ran zero times"),
    (bad_target_of_traced_range, (X4[0], np.int64(2)), "for i in", "loop variable 'i'"),
]


@pytest.mark.parametrize("fn,args,needle,msg", BAD_MORE, ids=[b[0].__name__ for b in BAD_MORE])
def test_bad_more_name_the_users_line(fn, args, needle, msg):
    with pytest.raises(TraceError, match=msg) as info:
        gg.jit(fn)(*args)
    line = _line_of(fn, needle)
    assert f"test_autograph_more.py:{line}" in str(info.value)
    frames = [f for f in traceback.extract_tb(info.tb) if f.filename == os.path.abspath(__file__)]
    assert any(f.lineno == line for f in frames)


_SRC = """import gpugraph as gg

def f(x):
    if x.sum() > 0:
        x = x * 2.0
    return x
"""


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace("2.0", "3.0"),  # same lines, another constant
        lambda s: "\n\n" + s,  # lines moved
        lambda s: s.replace("x * 2.0", "x * x"),  # another expression
    ],
    ids=["constant", "moved", "expression"],
)
def test_stale_source_is_refused(tmp_path, monkeypatch, edit):
    name = f"ag_stale_{abs(hash(inspect.getsource(edit))) % 10**8}"
    path = tmp_path / f"{name}.py"
    path.write_text(_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module(name)
    try:
        np.testing.assert_allclose(gg.jit(mod.f)(X4[0]), X4[0] * 2)  # fresh: converts
        gg.autograph._CACHE.pop(mod.f, None)
        path.write_text(edit(_SRC))
        with pytest.raises(gg.autograph.StaleSourceError, match=f"{name}.py:3.*changed"):
            gg.jit(mod.f)(X4[0])
    finally:
        sys.modules.pop(name, None)


def test_branch_not_taken_stays_out_of_the_gradient():
    """A branch op on a captured value runs only in its branch: the derivative of `3 / x[0]`
    at 0 (the branch not taken) must not turn the gradient into nan (0 * inf)."""

    def explicit(x):
        return gg.cond(x[1] < 0, lambda: x[0] - 1.0, lambda: 3.0 / x[0])

    def converted(x):
        if x[1] < 0:
            y = x[0] - 1.0
        else:
            y = 3.0 / x[0]
        return y

    x = f32(0.0, -1.0)
    for fn in (explicit, converted):
        _close(gg.jit(gg.grad(fn))(x), f32(1, 0))
    _close(gg.grad(explicit)(x), f32(1, 0))
    _close(gg.grad(converted)(x), f32(1, 0))  # eager: the Python path
