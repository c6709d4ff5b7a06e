"""Power and transcendental elementwise ops: power, exp, log, sqrt, rsqrt, tanh, sin, cos,
sigmoid, erf. All but power take float operands (ints are made float first)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ArgumentError
from ..tracer import Tracer
from .arithmetic import divide, multiply, negative, reciprocal, subtract
from .core import promote, type_of
from .elementwise import Gated, elementwise, float_unary, into, scalar_like
from .logic import equal, greater, greater_equal, less, logical_not, where


def _power_partial(i, o, a, b):
    zero_b = equal(b, scalar_like(0, b))
    if i == 0:
        # d/da a**b = b a**(b-1), and exactly 0 for b == 0 (as torch: not 0 * 0**-1 = NaN at
        # a == 0); the exponent is made 1 there so that no inf is computed to be thrown away
        safe_b = where(zero_b, scalar_like(1, b), b)
        b_minus_1 = subtract(safe_b, scalar_like(1, b))
        return Gated(logical_not(zero_b), multiply(b, power(a, b_minus_1)))
    # d/db a**b = a**b log a, as torch: 0 at a == 0 for b >= 0 (the limit), a**b * -inf at
    # a == 0 otherwise (log 0 = -inf: +-inf, or NaN for a NaN exponent), NaN for a < 0 (no real
    # derivative); log only sees positive operands, so eager gradients raise no warnings
    pos = greater(a, scalar_like(0, a))
    zero_a = equal(a, scalar_like(0, a))
    # o * -inf written as a function of o's sign only: a product with the constant -inf would
    # turn the zero cotangent where() sends to the branch not taken into NaN (0 * -inf) and
    # spoil second derivatives everywhere
    inf, nan = scalar_like(np.inf, a), scalar_like(np.nan, a)
    minus_o_inf = where(greater(o, scalar_like(0, o)), negative(inf), where(less(o, 0), inf, nan))
    at_zero = where(greater_equal(b, scalar_like(0, b)), scalar_like(0, a), minus_o_inf)
    off = where(zero_a, at_zero, scalar_like(np.nan, a))
    return where(pos, multiply(o, log(where(pos, a, scalar_like(1, a)))), off)


def _power_prepare(a, b):
    a, b = promote(a, b)
    if type_of(b).dtype.kind == "i" and not isinstance(b, Tracer) and np.any(np.asarray(b) < 0):
        raise _negative_int_power()  # known now: say so at the user's line, as NumPy would
    return [a, b]


def _negative_int_power() -> ArgumentError:
    return ArgumentError(
        "power: integers to negative integer powers are not allowed (as in NumPy); make the "
        "base float, e.g. gg.astype(x, 'float64') ** -1"
    )


def _power_impl(xp, a, b, out=None):
    # a run-time exponent: NumPy's own check, made a GpuGraphError (on CuPy it reads the
    # exponent back, which only integer powers with an array exponent pay)
    if a.dtype.kind == "i" and bool((b < 0).any()):
        raise _negative_int_power()
    return xp.power(a, b, out=out)


power = elementwise(
    "power", 2, _power_impl, "pow({0}, {1})", _power_partial, kinds="fi", prepare=_power_prepare
)
exp = float_unary("exp", "exp({0})", lambda i, o, a: o)
log = float_unary("log", "log({0})", lambda i, o, a: reciprocal(a))
sqrt = float_unary("sqrt", "sqrt({0})", lambda i, o, a: divide(scalar_like(0.5, o), o))


def _rsqrt_impl(xp, a, out=None):
    r = xp.sqrt(a, out=out)
    return xp.divide(1, r, out=r if out is not None else None) if out is not None else 1 / r


rsqrt = float_unary(
    "rsqrt",
    "rsqrt({0})",
    lambda i, o, a: multiply(scalar_like(-0.5, o), multiply(o, multiply(o, o))),  # -x**-1.5/2
    _rsqrt_impl,
)
tanh = float_unary("tanh", "tanh({0})", lambda i, o, a: subtract(scalar_like(1, o), multiply(o, o)))
sin = float_unary("sin", "sin({0})", lambda i, o, a: cos(a))
cos = float_unary("cos", "cos({0})", lambda i, o, a: negative(sin(a)))


# sigmoid(x) = exp(min(x, 0)) / (1 + exp(-|x|)): 1 / (1 + exp(-x)) for x >= 0 and
# exp(x) / (1 + exp(x)) for x < 0. No exp overflows, both tails keep full relative accuracy
# (sigmoid(-100) is the tiny exp(-100), not 0, so log(sigmoid(x)) stays about x), and no
# selection is needed: NumPy's masked loops (where=, np.where) cost 10x a plain pass on random
# signs. The kernel template and the NumPy impl compute the same operations, so the two agree
# to the libm's last bit. bench/bench_op_cost.py compares it with exp(-logaddexp(0, -x)) (the
# former impl, 15x slower) and with 0.5 * tanh(x / 2) + 0.5 (0 below x = -17 in float32).
def _sigmoid_impl(xp, a, out=None):
    # first: ``out`` may be ``a`` itself (the fused path runs in place)
    num = xp.asarray(xp.minimum(a, 0))  # asarray: a 0-d input gives a scalar, not an out=
    den = xp.asarray(xp.abs(a)) if out is None else xp.abs(a, out=out)
    xp.negative(den, out=den)
    xp.exp(den, out=den)
    xp.add(den, 1, out=den)
    xp.exp(num, out=num)
    return xp.divide(num, den, out=den)


sigmoid = float_unary(
    "sigmoid",
    "(exp({0} < ({T})0 ? {0} : ({T})0) / (({T})1 + exp(-fabs({0}))))",
    lambda i, o, a: multiply(o, subtract(scalar_like(1, o), o)),
    _sigmoid_impl,
)


def _erf_impl(xp, a, out=None):
    if xp is np:
        try:
            from scipy.special import erf as _erf  # exact and vectorized when available
        except ImportError:
            _erf = np.frompyfunc(math.erf, 1, 1)
        r = np.asarray(_erf(a)).astype(a.dtype)
    else:
        from cupyx.scipy.special import erf as _erf  # a CuPy ufunc ('f->f', 'd->d'): out= works

        return _erf(a, out=out)
    return into(out, r)


erf = float_unary(
    "erf",
    "erf({0})",
    lambda i, o, a: multiply(scalar_like(2 / math.sqrt(math.pi), o), exp(negative(multiply(a, a)))),
    _erf_impl,
)
