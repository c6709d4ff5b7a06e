"""Autograph corpus, third part (issue 16): 25 programs that each combine everything the issue's
check names: nested `if`/`while`/`for`, `break` and `continue`, an early `return`, carried
Python counters, and calls into helpers with control flow of their own. Each equals its Python
run (values and dtypes) under one trace, on inputs that together execute every statement of
the program (recorded with a line tracer on the Python run, so the claim is checked, not
assumed); gradients of the float results equal the eager ones."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap

import numpy as np
import pytest
from test_autograph import _close, f32

import gpugraph as gg


# ---- helpers with control flow of their own --------------------------------------------------
def soft_clip(v, hi):
    if v.max() > hi:
        v = v * (hi / v.max())
    return v


def count_pos(xs):
    k = 0
    for v in xs:
        if v > 0:
            k += 1
    return k


def shrink(v):
    steps = 0
    while gg.abs(v).sum() > 4:
        gg.autograph.set_loop_options(max_steps=64)
        v = v * 0.5
        steps += 1
    return v, steps


def pick(a, b):
    if a.sum() > b.sum():
        return a
    return b


def f01(x):
    n = 0
    if x.sum() > 20:
        return x * 0.0, n
    for v in x:
        if v < 0:
            continue
        n += 1
        if v > 3:
            break
    y = soft_clip(x, 2.0)
    while y.sum() < 5 and n < 8:
        gg.autograph.set_loop_options(max_steps=8)
        y = y * 1.5 + 0.25
        n += 1
    return y, n


def f02(x):
    if x.min() > 4:
        return x.sum(), 0
    total = x[0] * 0.0
    hits = 0
    i = 0
    while i < 4:
        gg.autograph.set_loop_options(max_steps=4)
        i += 1
        if x[i - 1] < 0:
            continue
        for j in range(2):
            total = total + x[i - 1] * (j + 1)
        hits += 1
        if total > 6:
            break
    return total + count_pos(x), hits


def f03(x):
    k = count_pos(x)
    if k == 0:
        return x - 1.0, k
    v, steps = shrink(x * 3.0)
    for row in gg.stack([v, x]):
        if row.sum() < 0:
            continue
        if row.max() > 2.5:
            v = v + 1.0
            break
        steps += 1
    return v, steps


def f04(xs):
    acc = xs[0] * 0.0
    seen = 0
    for v in xs:
        if v > 5:
            break
        if v < -0.5:
            continue
        seen += 1
        if seen > 2:
            acc = acc + v * 2.0
        else:
            acc = acc + v
    if seen == 0:
        return acc - 1.0, seen
    return soft_clip(acc * 2.0, 3.0), seen


def f05(x, n):
    if n < 1:
        return x, 0
    c = 0
    for i in range(n):
        if x[0] * i > 3:
            break
        j = 0
        while j < 2:
            j += 1
            if j == 1:
                continue
            x = x + 0.5
        c += 1
    return pick(x, x * -1.0), c


def f06(x):
    r = 0
    if x.max() < 0:
        return x * 2.0, r
    while x.sum() < 12:
        gg.autograph.set_loop_options(max_steps=100)
        r += 1
        if r > 6:
            break
        if x.min() < 0:
            x = gg.abs(x)
            continue
        x = x * 1.5
    v, s = shrink(x)
    return v, r + s


def f07(xs):
    best = xs[0] * 0.0
    n = 0
    for v in xs:
        n += 1
        if v < 0:
            continue
        if v > 8:
            best = v
            break
        best = gg.maximum(best, v)
    if best == 0:
        return best - 1.0, n
    k = 0
    while best > 1 and k < 10:
        gg.autograph.set_loop_options(max_steps=10)
        best = best * 0.5
        k += 1
    return best, n + k


def f08(x):
    if x[0] > 3:
        return soft_clip(x, 1.0), 1
    out = x
    m = 0
    for _i in range(3):
        if out.sum() > 10:
            break
        for v in out:
            if v < 0:
                continue
            m += 1
        out = out + 1.0
    return out, m


def f09(x):
    total = 0.0
    n = 0
    for v in x:
        if v == 0:
            continue
        total = total + v
        n += 1
        if total > 5:
            break
    if n == 0:
        return x, n
    y, s = shrink(x * total)
    if y.sum() > 0:
        y = y + s
    return y, n


def f10(x, n):
    c = 0
    if n > 5:
        return x * 0.0, c
    i = 0
    while i < n:
        gg.autograph.set_loop_options(max_steps=8)
        i += 1
        if x.sum() > 8:
            break
        for v in x:
            if v < 0:
                continue
            c += 1
        x = pick(x + 1.0, x * 1.1)
    return x, c


FULL = [
    (
        f01,
        [
            (x,)
            for x in [
                f32(6, 6, 6, 6),
                f32(1, -2, 4, 0.5),
                f32(-1, -1, 0.1, 0.2),
                f32(0.5, 0.5, 0.5, 0.5),
            ]
        ],
    ),
    (
        f02,
        [
            (x,)
            for x in [
                f32(5, 6, 7, 8),
                f32(1, -2, 3, 4),
                f32(-1, -2, -3, 0.5),
                f32(0.1, 0.2, 0.3, 0.1),
            ]
        ],
    ),
    (
        f03,
        [
            (x,)
            for x in [
                f32(-1, -2, -3, -4),
                f32(1, 2, 3, 4),
                f32(0.1, -0.2, 0.1, 0.1),
                f32(-3, 0.2, -1, -1),
            ]
        ],
    ),
    (
        f04,
        [
            (x,)
            for x in [
                f32(1, -2, 3, 0.5, -1),
                f32(-1, -1, -1, -1, -1),
                f32(2, 2, 2, 2, 6),
                f32(6, 9, -2, 1, 1),
                f32(0.5, 9, -2, 1, 1),
            ]
        ],
    ),
    (f05, [(f32(1, 2, 3, 4), np.int64(n)) for n in (0, 2, 5)] + [(f32(-1, 2, 3, 4), np.int64(3))]),
    (
        f06,
        [
            (x,)
            for x in [
                f32(-1, -2, -3, -4),
                f32(1, 2, 3, 4),
                f32(-1, 2, 0.1, 0.2),
                f32(0.01, 0.01, 0.01, 0.01),
            ]
        ],
    ),
    (
        f07,
        [
            (x,)
            for x in [
                f32(1, -2, 3, 0.5, -1),
                f32(-1, -1, -1, -1, -1),
                f32(2, 9, 2, 2, 6),
                f32(0.5, 0.25, -2, 1, 1),
            ]
        ],
    ),
    (
        f08,
        [
            (x,)
            for x in [f32(4, 0, 0, 0), f32(1, 2, 3, 4), f32(-1, -2, 0.5, 0.5), f32(1, -1, 1, -1)]
        ],
    ),
    (
        f09,
        [
            (x,)
            for x in [f32(0, 0, 0, 0), f32(1, 2, 3, 4), f32(0.5, -0.5, 0, 0.1), f32(-3, 0, 1, 1)]
        ],
    ),
    (
        f10,
        [(f32(1, 2, 3, 4), np.int64(n)) for n in (0, 2, 6)]
        + [(f32(-1, 0.5, -3, 0.2), np.int64(4))],
    ),
]


class Stepper:
    def __init__(self, rate):
        self.rate = rate

    def run(self, v, n):
        k = 0
        while k < n:
            gg.autograph.set_loop_options(max_steps=8)
            if v.sum() > 6:
                break
            v = v * self.rate
            k += 1
        return v


def norm_or_zero(v):
    s = (v * v).sum()
    if s == 0:
        return v
    return v / gg.sqrt(s)


def first_big(xs, t):
    idx = -1
    i = 0
    for v in xs:
        if v > t:
            idx = i
            break
        i += 1
    return idx


def f11(x):
    if x.sum() < -10:
        return x, 0
    st = Stepper(1.5)
    v = st.run(x, 4)
    c = 0
    for w in v:
        if w < 0:
            continue
        c += 1
        if c > 2:
            break
    return v * c, c


def f12(xs):
    i = first_big(xs, 2.0)
    if i < 0:
        return xs * 0.5, i
    total = xs[0] * 0.0
    for k in range(5):
        if k == 2:
            continue
        total = total + xs[k]
        if total > 8:
            break
    return xs + total, i


def f13(m):
    rows = 0
    acc = m[0] * 0.0
    for row in m:
        if row.sum() < 0:
            continue
        rows += 1
        acc = acc + norm_or_zero(row)
        if rows >= 2:
            break
    if rows == 0:
        return acc - 1.0, rows
    while acc.sum() < 3:
        gg.autograph.set_loop_options(max_steps=10)
        acc = acc * 2.0
    return acc, rows


def f14(x):
    scale = 1.0
    if x.max() > 100:
        return x / 100.0, 0
    n = 0
    while n < 5:
        gg.autograph.set_loop_options(max_steps=5)
        n += 1
        if x[0] < 0:
            x = -x
            continue
        if x.sum() > 10:
            break
        x = x + 1.0
        scale = scale * 0.5
    return soft_clip(x, 5.0) * scale, n


def f15(x):
    def inner(v):
        if v.min() < 0:
            return v - v.min()
        return v

    y = inner(x)
    cnt = 0
    for i in range(4):
        if y[i] == 0:
            continue
        cnt += 1
        if y[i] > 3:
            break
    if cnt == 0:
        return y, cnt
    return y * 2.0, cnt


def f16(xs):
    neg = 0
    pos = xs[0] * 0.0
    for v in xs:
        if v < 0:
            neg += 1
            if neg > 2:
                break
            continue
        pos = pos + v
    if pos > 10:
        return pos * 0.0, neg
    r = pos
    while r > 1:
        gg.autograph.set_loop_options(max_steps=20)
        r = r * 0.5
    return r, neg


def f17(x, n):
    t = 0
    if n == 0:
        return x, t
    for i in range(n):
        if i % 2 == 1:
            continue
        v = pick(x, -x)
        x = v * 0.9
        t += 1
        if x.sum() < 1:
            break
    return x, t


def f18(x):
    best = x.sum()
    k = 0
    for j in range(3):
        y = x * (j + 1.0)
        if y.sum() > 12:
            break
        if y.max() < best:
            continue
        best = y.max()
        k += 1
    if k == 0:
        return best, k
    z, s = shrink(x * best)
    return z.sum() + s, k


def f19(xs):
    a = xs[0] * 0.0
    b = xs[0] * 0.0
    c = 0
    for v in xs:
        if v > 0:
            a = a + v
        elif v < -1:
            b = b + v
            continue
        else:
            c += 1
        if a > 5:
            break
    if a + b == 0:
        return a, c
    return a * b, c


def f20(x):
    f = lambda v: soft_clip(v, 2.0)  # noqa: E731
    y = f(x)
    hops = 0
    while y.sum() < 4:
        gg.autograph.set_loop_options(max_steps=20)
        hops += 1
        if hops > 1:
            break
        if y.min() < 0:
            y = gg.abs(y)
            continue
        y = y + 0.5
    if hops == 0:
        return y * 3.0, hops
    return y, hops


def f21(x):
    m = x.max()
    if m < 0:
        return -x, 0
    out = x
    steps = 0
    for _ in range(3):
        if out.sum() > 20:
            break
        for v in out:
            if v > 1:
                steps += 1
        out = out + count_pos(out)
    return out, steps


def f22(xs):
    i = 0
    s = xs[0] * 0.0
    while i < 5:
        gg.autograph.set_loop_options(max_steps=5)
        v = xs[i]
        i += 1
        if v == 0:
            continue
        if v < -5:
            break
        s = s + sign_like(v) * v
    if s == 0:
        return s - 1.0, i
    return s, i


def sign_like(v):
    if v > 0:
        return 1.0
    elif v < 0:
        return -1.0
    return 0.0


def f23(x):
    n = count_pos(x)
    if n == 4:
        return x.sum(), n
    acc = x * 0.0
    for k in range(4):
        if x[k] < 0:
            acc = acc - x
            continue
        for j in range(2):
            if j == 1 and acc.sum() > 3:
                break
            acc = acc + x * 0.5
    return acc.sum(), n


def f24(x):
    z = norm_or_zero(x)
    m = 0
    while z.max() < 0.9 and m < 6:
        gg.autograph.set_loop_options(max_steps=6)
        m += 1
        if z.min() < -0.5:
            z = z * 0.0
            break
        z = z * 1.25
    if m == 0:
        return z, m
    for v in z:
        if v < 0:
            continue
        m += 1
    return z, m


def f25(x):
    k = 0
    if x[0] > 10:
        return x, k
    st = Stepper(2.0)
    while k < 3:
        gg.autograph.set_loop_options(max_steps=3)
        x = st.run(x, 2)
        k += 1
        if x.max() > 5:
            break
        if x.min() < 0:
            x = gg.abs(x)
            continue
    return x, k


FULL2 = [
    (
        f11,
        [
            (x,)
            for x in [
                f32(-9, -9, -1, 0),
                f32(1, 2, 3, 4),
                f32(-1, 0.5, 0.5, -1),
                f32(1, -2, 0.1, 0.1),
            ]
        ],
    ),
    (
        f12,
        [
            (x,)
            for x in [
                f32(1, 1, 1, 1, 1),
                f32(3, 1, 1, 1, 1),
                f32(1, 5, 9, 0, 0),
                f32(2, 0.5, 0, 7, 4),
            ]
        ],
    ),
    (
        f13,
        [
            (np.stack([x, x * 2.0]),)
            for x in [f32(1, 2, 0), f32(-1, -1, 0), f32(0.1, 0.1, 0.1), f32(3, 4, 0)]
        ]
        + [(np.stack([f32(-1, 0, 0), f32(1, 0.5, 0)]),)],
    ),
    (
        f14,
        [
            (x,)
            for x in [
                f32(200, 1, 1, 1),
                f32(1, 2, 3, 4),
                f32(-1, 0.5, 0.5, 0.5),
                f32(0.1, 0.1, 0.1, 0.1),
            ]
        ],
    ),
    (
        f15,
        [(x,) for x in [f32(1, 2, 3, 4), f32(0, 0, 0, 0), f32(-1, 0, 5, 1), f32(0, 0.5, 0.5, 0.5)]],
    ),
    (
        f16,
        [
            (x,)
            for x in [
                f32(1, -2, 3, 0.5, -1),
                f32(-1, -1, -1, -1, -1),
                f32(2, 2, 2, 2, 6),
                f32(5, 9, -2, 1, 1),
            ]
        ],
    ),
    (
        f17,
        [(f32(1, 2, 3, 4), np.int64(n)) for n in (0, 1, 3, 6)]
        + [(f32(0.1, 0.1, 0.1, 0.1), np.int64(5))],
    ),
    (
        f18,
        [
            (x,)
            for x in [
                f32(1, 2, 3, 4),
                f32(0.1, 0.2, 0.1, 0.2),
                f32(-1, -2, 0.5, 0.1),
                f32(1, 0, 0, 5),
            ]
        ],
    ),
    (
        f19,
        [
            (x,)
            for x in [
                f32(1, -2, 3, 0.5, -1),
                f32(0, 0, 0, 0, 0),
                f32(2, 2, 2, -3, 6),
                f32(-0.5, 9, -2, 1, 1),
            ]
        ],
    ),
    (
        f20,
        [
            (x,)
            for x in [
                f32(1, 2, 3, 4),
                f32(-1, -2, 0.5, 0.1),
                f32(0.1, 0.1, 0.1, 0.1),
                f32(-0.5, 0, 0, 0),
            ]
        ],
    ),
    (
        f21,
        [(x,) for x in [f32(-1, -2, -3, -4), f32(1, 2, 3, 4), f32(0.5, -1, 2, 0), f32(9, 9, 9, 9)]],
    ),
    (
        f22,
        [
            (x,)
            for x in [
                f32(1, -2, 3, 0.5, -1),
                f32(0, 0, 0, 0, 0),
                f32(2, -6, 2, 2, 6),
                f32(-0.5, 9, 0, 1, 1),
            ]
        ],
    ),
    (
        f23,
        [
            (x,)
            for x in [f32(1, 2, 3, 4), f32(-1, 2, 3, 4), f32(-1, -2, -3, 0.5), f32(0.1, -0.1, 5, 5)]
        ],
    ),
    (
        f24,
        [
            (x,)
            for x in [f32(1, 0, 0, 0), f32(1, 1, 1, 1), f32(-3, 1, 1, 1), f32(1, -0.2, 0.5, 0.5)]
        ],
    ),
    (
        f25,
        [
            (x,)
            for x in [f32(11, 1, 1, 1), f32(1, 2, 3, 4), f32(-1, 0.5, 0.1, 0.1), f32(1, 1, 1, 2.8)]
        ],
    ),
]
FULL = FULL + FULL2


def _statement_lines(fn) -> set[int]:
    """The lines of ``fn``'s statements, not entering nested functions (their own code)."""
    lines, start = inspect.getsourcelines(fn)
    todo, out = list(ast.parse(textwrap.dedent("".join(lines))).body[0].body), set()
    while todo:
        n = todo.pop()
        if isinstance(n, ast.stmt):
            out.add(n.lineno + start - 1)
        if not isinstance(n, (ast.FunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(n))
    return out


def _run_recording_lines(fn, args, hit: set[int]):
    code = fn.__code__

    def tracer(frame, event, arg):
        if frame.f_code is not code:
            return None
        if event == "line":
            hit.add(frame.f_lineno)
        return tracer

    prev = sys.gettrace()
    sys.settrace(tracer)
    try:
        return fn(*args)
    finally:
        sys.settrace(prev)


@pytest.mark.parametrize("fn,inputs", FULL, ids=[f.__name__ for f, _ in FULL])
def test_full_programs_match_python_on_every_path(fn, inputs):
    jf = gg.jit(fn)
    hit: set[int] = set()
    for args in inputs:
        _close(jf(*args), _run_recording_lines(fn, args, hit))
    assert jf.cache_size == 1
    assert _statement_lines(fn) <= hit, sorted(_statement_lines(fn) - hit)


def test_full_corpus_size():
    assert len(FULL) >= 25


# f05's and f17's `for i in range(n)` have a traced bound: a while_loop with no bound, which
# reverse mode refuses (test_autograph_more.py checks that error)
GRAD_FULL = [(f, i) for f, i in FULL if f not in (f05, f17)]


@pytest.mark.parametrize("fn,inputs", GRAD_FULL, ids=[f.__name__ for f, _ in GRAD_FULL])
def test_full_program_grads_equal_eager(fn, inputs):
    def loss(*args):
        return (fn(*args)[0] ** 2).sum()

    jg = gg.jit(gg.grad(loss))
    for args in inputs:
        _close(jg(*args), gg.grad(loss)(*args))
    assert jg.cache_size == 1
