"""Autograph corpus, third part (issue 16): programs that each combine everything the issue's
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


def _statement_lines(fn) -> set[int]:
    lines, start = inspect.getsourcelines(fn)
    fdef = ast.parse(textwrap.dedent("".join(lines))).body[0]
    return {n.lineno + start - 1 for n in ast.walk(fdef) if isinstance(n, ast.stmt)} - {start}


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
    assert len(FULL) >= 10


# f05's `for i in range(n)` has a traced bound: a while_loop with no bound, which reverse mode
# refuses (test_autograph_more.py checks that error)
GRAD_FULL = [(f, i) for f, i in FULL if f is not f05]


@pytest.mark.parametrize("fn,inputs", GRAD_FULL, ids=[f.__name__ for f, _ in GRAD_FULL])
def test_full_program_grads_equal_eager(fn, inputs):
    def loss(*args):
        return (fn(*args)[0] ** 2).sum()

    jg = gg.jit(gg.grad(loss))
    for args in inputs:
        _close(jg(*args), gg.grad(loss)(*args))
    assert jg.cache_size == 1
