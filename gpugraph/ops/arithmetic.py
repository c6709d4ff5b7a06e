"""Arithmetic elementwise ops: add, subtract, multiply, divide, maximum, minimum, negative,
sign, abs, reciprocal, relu, and stop_gradient (a copy that blocks derivatives)."""

from __future__ import annotations

from .core import promote, to_float, type_of
from .elementwise import Gated, elementwise, float_unary, scalar_like, ufunc
from .logic import astype, equal, greater, less, less_equal, logical_not, not_equal, where


def _true_divide(*xs):
    """NumPy's true division: promoted first, then bool and int operands divide as float64."""
    xs = promote(*xs)
    if type_of(xs[0]).dtype.kind in "biu":
        return [to_float(astype(x, "int64") if type_of(x).dtype.kind == "b" else x) for x in xs]
    return xs


# bool + bool is logical or in NumPy (its 'add' has a '??->?' loop); in C, true + true is 2,
# which the bool store turns back into true
add = ufunc("add", 2, "({0} + {1})", lambda i, o, a, b: 1, kinds="fib")
subtract = ufunc("subtract", 2, "({0} - {1})", lambda i, o, a, b: 1 if i == 0 else -1, kinds="fi")
multiply = ufunc("multiply", 2, "({0} * {1})", lambda i, o, a, b: b if i == 0 else a, kinds="fib")


def _divide_jvp(ts, outs, a, b):
    """(ta - tb * o) / b, as torch: not ta / b - tb * o / b, whose two terms are infinities of
    opposite sign (NaN) when b is 0 or tiny."""
    from .shape import broadcast_to

    ta, tb = ts
    o = outs[0]
    if ta is None and tb is None:
        return [None]
    if tb is None:
        num = ta
    else:
        scaled = multiply(tb, o)
        num = negative(scaled) if ta is None else subtract(ta, scaled)
    r = divide(num, b)
    shape = type_of(o).shape
    return [r if type_of(r).shape == shape else broadcast_to(r, shape)]


divide = ufunc(
    "divide",
    2,
    "({0} / {1})",
    lambda i, o, a, b: reciprocal(b) if i == 0 else negative(divide(o, b)),
    kinds="f",
    prepare=_true_divide,
    jvp=_divide_jvp,
)


def _max_partial(i, o, a, b, *, loses):
    """As torch and JAX: the operand that loses gets exactly 0, a tie splits the gradient in
    halves, and where a NaN is involved (no comparison holds) both operands get it."""
    mine, other = (a, b) if i == 0 else (b, a)
    half = where(equal(mine, other), scalar_like(0.5, o), scalar_like(1, o))
    return Gated(logical_not(loses(mine, other)), half)


maximum = ufunc(
    "maximum",
    2,
    "(({0} > {1} || {0} != {0}) ? {0} : {1})",
    lambda i, o, a, b: _max_partial(i, o, a, b, loses=less),
    kinds="fi",
)
minimum = ufunc(
    "minimum",
    2,
    "(({0} < {1} || {0} != {0}) ? {0} : {1})",
    lambda i, o, a, b: _max_partial(i, o, a, b, loses=greater),
    kinds="fi",
)
negative = ufunc("negative", 1, "(-{0})", lambda i, o, a: -1, kinds="fi")
sign = ufunc(
    "sign",
    1,
    "(({0} != {0}) ? {0} : ({T})(({0} > 0) - ({0} < 0)))",
    lambda i, o, a: None,
    kinds="fi",
)
abs = ufunc(
    "abs",
    1,
    "({0} < 0 ? -{0} : ({0} == 0 ? ({T})0 : {0}))",
    lambda i, o, a: Gated(not_equal(a, scalar_like(0, a)), sign(a)),  # 0 at 0, as torch
    xp_name="absolute",
    kinds="fi",
)


def _reciprocal_impl(xp, a, out=None):
    return xp.divide(1, a, out=out)


reciprocal = float_unary(
    "reciprocal", "(({T})1 / {0})", lambda i, o, a: negative(multiply(o, o)), _reciprocal_impl
)


def _relu_impl(xp, a, out=None):
    return xp.maximum(a, a.dtype.type(0), out=out)


relu = elementwise(
    "relu",
    1,
    _relu_impl,
    "(({0} > ({T})0 || {0} != {0}) ? {0} : ({T})0)",
    # not (x <= 0), so a NaN passes its gradient on, as torch's threshold_backward does
    lambda i, o, a: Gated(logical_not(less_equal(a, scalar_like(0, a)))),
    kinds="fi",
)
stop_gradient = elementwise(
    "stop_gradient",
    1,
    lambda xp, a, out=None: xp.copyto(out, a) or out if out is not None else a.copy(),
    "{0}",
    None,
    kinds="fib",
)
