"""More elementwise ops: rounding, integer division, bitwise, predicates, and the activations
and stable log-sum forms models use. Each primitive is one ``elementwise`` entry with its CUDA
expression, so it fuses; where the expression needs a device function its source rides in the
op's ``extra["cuda_helper"]`` (guarded, so two ops' helpers can share a kernel).

Derivatives are selections, never ``inf * 0``: a branch that is not taken gets a harmless
operand (elu's exp, logaddexp's exp at equal infinities, arctan2 at the origin).
floor_divide and remainder replay NumPy's ``npy_divmod`` step by step in the CUDA helper, so
kernels and NumPy agree to the bit; softplus, silu and logaddexp use one formulation in the
NumPy impl and the kernel (NumPy's for logaddexp), equal up to the math libraries' last bit."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np

from ..errors import DTypeError
from .core import bind, promote, to_float, type_of
from .elementwise import (
    API,
    abs,
    add,
    astype,
    divide,
    elementwise,
    equal,
    exp,
    float_unary,
    greater,
    into,
    less,
    less_equal,
    logical_and,
    logical_not,
    logical_or,
    maximum,
    multiply,
    negative,
    promote_floats,
    reciprocal,
    scalar_like,
    sigmoid,
    subtract,
    ufunc,
    where,
)
from .registry import REGISTRY

LN2 = math.log(2.0)


def _quiet(xp):
    """NumPy's floating-point warnings off where the impl handles inf/NaN/zero on purpose."""
    return np.errstate(all="ignore") if xp is np else contextlib.nullcontext()


def _helper(name: str, source: str) -> None:
    REGISTRY[name].extra["cuda_helper"] = source


def _as(x, like):
    return astype(x, type_of(like).dtype)


# ---- simple unary math --------------------------------------------------------------------
square = ufunc(
    "square", 1, "({0} * {0})", lambda i, o, a: multiply(scalar_like(2, a), a), kinds="fi"
)
log1p = float_unary("log1p", "log1p({0})", lambda i, o, a: reciprocal(add(a, scalar_like(1, a))))
expm1 = float_unary("expm1", "expm1({0})", lambda i, o, a: add(o, scalar_like(1, o)))
log2 = float_unary(
    "log2", "log2({0})", lambda i, o, a: reciprocal(multiply(a, scalar_like(LN2, a)))
)
tan = float_unary("tan", "tan({0})", lambda i, o, a: add(scalar_like(1, o), multiply(o, o)))
arctan = ufunc(
    "arctan",
    1,
    "atan({0})",
    lambda i, o, a: reciprocal(add(scalar_like(1, a), multiply(a, a))),
    kinds="f",
    prepare=promote_floats,
)


def _rounding(name: str, cuda: str, xp_name: str):
    op = ufunc(name, 1, cuda, lambda i, o, a: None, xp_name=xp_name, kinds="f")

    def api(x: Any) -> Any:
        # NumPy 2 keeps integer dtypes (the value is already integral): a copy, no node
        if type_of(x).dtype.kind in "iu":
            return bind("stop_gradient", x)
        return op(x)

    api.__name__ = name
    api.__doc__ = f"Elementwise {name} (integers are returned unchanged, as NumPy 2)."
    API[name] = api
    return api


floor = _rounding("floor", "floor({0})", "floor")
ceil = _rounding("ceil", "ceil({0})", "ceil")
round = _rounding("round", "rint({0})", "rint")  # half to even, as np.round


# ---- predicates ---------------------------------------------------------------------------
isnan = ufunc("isnan", 1, "({0} != {0})", None, kinds="fib", out_dtype=np.bool_)
# x - x is 0 for every finite x (and any integer) and NaN for inf and NaN: one template for
# every dtype, where CUDA's isfinite() has no integer overloads
isfinite = ufunc(
    "isfinite", 1, "(({0} - {0}) == ({0} - {0}))", None, kinds="fi", out_dtype=np.bool_
)


def nan_to_num(x: Any, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None):
    """NaN -> ``nan``, +inf -> ``posinf`` (default: the dtype's largest), -inf -> ``neginf``."""
    if type_of(x).dtype.kind != "f":
        return bind("stop_gradient", x)
    big = float(np.finfo(type_of(x).dtype).max)
    posinf = big if posinf is None else posinf
    neginf = -big if neginf is None else neginf
    inf = scalar_like(np.inf, x)
    y = where(equal(x, inf), scalar_like(posinf, x), x)
    y = where(equal(x, negative(inf)), scalar_like(neginf, x), y)
    return where(isnan(x), scalar_like(nan, x), y)


API["nan_to_num"] = nan_to_num

# ---- integer-style division: NumPy's floor semantics, replayed in CUDA --------------------
DIVISION_HELPER = """\
#ifndef GG_DIVISION_DEFINED
#define GG_DIVISION_DEFINED
// NumPy's npy_divmod for floats, step by step, so kernels match np.floor_divide/np.remainder.
template <typename T> __device__ __forceinline__ T gg_fdivmod(T a, T b, T* modulus) {
  T mod = fmod(a, b);
  if (b == (T)0) { *modulus = mod; return a / b; }
  T div = (a - mod) / b;
  if (mod != (T)0) {
    if ((b < (T)0) != (mod < (T)0)) { mod += b; div -= (T)1; }
  } else {
    mod = copysign((T)0, b);
  }
  T floordiv;
  if (div != (T)0) {
    floordiv = floor(div);
    if (div - floordiv > (T)0.5) floordiv += (T)1;
  } else {
    floordiv = copysign((T)0, a / b);
  }
  *modulus = mod;
  return floordiv;
}
__device__ __forceinline__ float gg_floor_divide(float a, float b) {
  float m; return gg_fdivmod(a, b, &m);
}
__device__ __forceinline__ double gg_floor_divide(double a, double b) {
  double m; return gg_fdivmod(a, b, &m);
}
__device__ __forceinline__ float gg_remainder(float a, float b) {
  float m; gg_fdivmod(a, b, &m); return m;
}
__device__ __forceinline__ double gg_remainder(double a, double b) {
  double m; gg_fdivmod(a, b, &m); return m;
}
// Integers: NumPy gives 0 for a zero divisor; b == -1 is a negation that wraps (INT_MIN / -1
// would trap in C).
template <typename T> __device__ __forceinline__ T gg_ifloor_divide(T a, T b) {
  if (b == 0) return 0;
  if (b == -1) return (T)(0ULL - (unsigned long long)a);
  T q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
  return q;
}
template <typename T> __device__ __forceinline__ T gg_iremainder(T a, T b) {
  if (b == 0 || b == -1) return 0;
  T r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}
__device__ __forceinline__ int gg_floor_divide(int a, int b) { return gg_ifloor_divide(a, b); }
__device__ __forceinline__ long long gg_floor_divide(long long a, long long b) {
  return gg_ifloor_divide(a, b);
}
__device__ __forceinline__ int gg_remainder(int a, int b) { return gg_iremainder(a, b); }
__device__ __forceinline__ long long gg_remainder(long long a, long long b) {
  return gg_iremainder(a, b);
}
#endif
"""


def _floor_divide_impl(xp, a, b, out=None):
    with _quiet(xp):
        return xp.floor_divide(a, b, out=out)


def _remainder_impl(xp, a, b, out=None):
    with _quiet(xp):
        return xp.remainder(a, b, out=out)


floor_divide = elementwise(
    "floor_divide",
    2,
    _floor_divide_impl,
    "gg_floor_divide({0}, {1})",
    lambda i, o, a, b: None,  # piecewise constant
    kinds="fi",
)
remainder = elementwise(
    "remainder",
    2,
    _remainder_impl,
    "gg_remainder({0}, {1})",
    lambda i, o, a, b: 1 if i == 0 else negative(floor_divide(a, b)),
    kinds="fi",
)
_helper("floor_divide", DIVISION_HELPER)
_helper("remainder", DIVISION_HELPER)
mod = remainder
API["mod"] = remainder


def divmod_(a: Any, b: Any) -> tuple[Any, Any]:
    return floor_divide(a, b), remainder(a, b)


# ---- bitwise (ints) and logical_xor (bools) -----------------------------------------------
def _bools(*xs):
    return [x if type_of(x).dtype == np.bool_ else astype(x, np.bool_) for x in xs]


logical_xor = ufunc("logical_xor", 2, "({0} != {1})", None, kinds="b", prepare=_bools)
_BITWISE = {
    "bitwise_and": ("({0} & {1})", logical_and),
    "bitwise_or": ("({0} | {1})", logical_or),
    "bitwise_xor": ("({0} ^ {1})", logical_xor),
}


def _bitwise(name: str, cuda: str, on_bools):
    op = ufunc(name, 2, cuda, None, kinds="i")

    def api(a: Any, b: Any) -> Any:
        a, b = promote(a, b)
        dt = type_of(a).dtype
        if dt == np.bool_:
            return on_bools(a, b)  # NumPy's & | ^ on bools are the logical ops
        if dt.kind not in "iu":
            raise DTypeError(f"{name}: dtype {dt} is not supported (integers and bools only)")
        return op(a, b)

    api.__name__ = name
    api.__doc__ = f"Elementwise {name} of integers (the logical op on bools)."
    API[name] = api
    return api


bitwise_and, bitwise_or, bitwise_xor = (_bitwise(n, c, f) for n, (c, f) in _BITWISE.items())
_bitwise_not = ufunc("bitwise_not", 1, "(~{0})", None, kinds="i")


def bitwise_not(x: Any) -> Any:
    """``~x``: bitwise not of integers, logical not of bools."""
    dt = type_of(x).dtype
    if dt == np.bool_:
        return logical_not(x)
    if dt.kind not in "iu":
        raise DTypeError(f"bitwise_not: dtype {dt} is not supported (integers and bools only)")
    return _bitwise_not(x)


API["bitwise_not"] = bitwise_not
API["invert"] = bitwise_not
invert = bitwise_not

# ---- clip ---------------------------------------------------------------------------------
CLIP_HELPER = """\
#ifndef GG_CLIP_DEFINED
#define GG_CLIP_DEFINED
// np.clip is minimum(maximum(x, lo), hi) with NaN propagating from any operand.
template <typename T> __device__ __forceinline__ T gg_clip(T x, T lo, T hi) {
  const T t = (x > lo || x != x) ? x : lo;
  return (t < hi || t != t) ? t : hi;
}
#endif
"""


def _clip_impl(xp, a, lo, hi, out=None):
    # the memory plan may hand ``out`` the bytes of any dying operand, hi included: hi must be
    # read before anything is written, so the first step goes to a temporary
    with _quiet(xp):
        return xp.minimum(xp.maximum(a, lo), hi, out=out)


def _clip_partial(i, o, x, lo, hi):
    dt = type_of(o).dtype
    if i == 0:  # inside [lo, hi], bounds included (as torch.clamp)
        return astype(logical_and(less_equal(lo, x), less_equal(x, hi)), dt)
    if i == 1:
        return astype(logical_and(less(x, lo), less_equal(lo, hi)), dt)
    return astype(greater(maximum(x, lo), hi), dt)


_clip = elementwise("clip", 3, _clip_impl, "gg_clip({0}, {1}, {2})", _clip_partial, kinds="fi")
_helper("clip", CLIP_HELPER)


def clip(x: Any, a_min: Any = None, a_max: Any = None) -> Any:
    """Limit ``x`` to [a_min, a_max] (either may be None), as np.clip."""
    dt = type_of(x).dtype
    if a_min is None and a_max is None:
        raise ValueError("clip: give a_min, a_max or both")
    lowest, highest = (-np.inf, np.inf) if dt.kind == "f" else (np.iinfo(dt).min, np.iinfo(dt).max)
    if dt.kind == "b":
        raise DTypeError("clip: dtype bool is not supported")
    x, lo, hi = promote(
        x,
        np.asarray(lowest, dt)[()] if a_min is None else a_min,
        np.asarray(highest, dt)[()] if a_max is None else a_max,
    )
    return bind("clip", x, lo, hi)


API["clip"] = clip

# ---- stable activations -------------------------------------------------------------------
SILU_HELPER = """\
#ifndef GG_SILU_DEFINED
#define GG_SILU_DEFINED
// x * sigmoid(x) with sigmoid from exp(-|x|), which never overflows.
template <typename T> __device__ __forceinline__ T gg_silu(T x) {
  const T e = exp(-fabs(x));
  const T s = x >= (T)0 ? (T)1 / ((T)1 + e) : e / ((T)1 + e);
  return x * s;
}
#endif
"""


def _silu_impl(xp, a, out=None):
    e = xp.exp(-xp.abs(a))
    s = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
    return xp.multiply(a, s, out=out)


def _silu_partial(i, o, a):
    # s * (1 + x * (1 - s)); at x = +-inf the limits 1 and 0 are selected (inf * 0 would be NaN)
    inf = scalar_like(np.inf, a)
    finite = less(abs(a), inf)
    xs = where(finite, a, scalar_like(0, a))
    s = sigmoid(xs)
    one = scalar_like(1, a)
    d = multiply(s, add(one, multiply(xs, subtract(one, s))))
    limit = astype(greater(a, scalar_like(0, a)), type_of(a).dtype)
    return where(finite, d, limit)


silu = float_unary("silu", "gg_silu({0})", _silu_partial, _silu_impl)
_helper("silu", SILU_HELPER)


def _softplus_impl(xp, a, out=None):
    # max(x, 0) + log1p(exp(-|x|)): exact for large |x|, no overflow; the kernel does the same
    r = xp.log1p(xp.exp(-xp.abs(a)))
    return xp.add(xp.maximum(a, a.dtype.type(0)), r, out=out)


softplus = float_unary(
    "softplus",
    "(({0} > ({T})0 ? {0} : ({T})0) + log1p(exp(-fabs({0}))))",
    lambda i, o, a: sigmoid(a),
    _softplus_impl,
)

LOGADDEXP_HELPER = """\
#ifndef GG_LOGADDEXP_DEFINED
#define GG_LOGADDEXP_DEFINED
// NumPy's npy_logaddexp: equal operands (infinities included) give a + log 2.
template <typename T> __device__ __forceinline__ T gg_logaddexp(T a, T b) {
  if (a == b) return a + (T)0.6931471805599453094;
  const T d = a - b;
  return (d > (T)0 ? a : b) + log1p(exp(-fabs(d)));
}
#endif
"""


def _logaddexp_impl(xp, a, b, out=None):
    with _quiet(xp):
        d = a - b
        r = xp.where(d > 0, a, b) + xp.log1p(xp.exp(-xp.abs(d)))
        r = xp.where(a == b, a + a.dtype.type(LN2), r)
    return into(out, r)


def _logaddexp_partial(i, o, a, b):
    mine = a if i == 0 else b
    eq = equal(a, b)
    zero = scalar_like(0, o)
    # exp(mine - out); equal operands (where inf - inf would be NaN) split the derivative evenly
    d = exp(subtract(where(eq, zero, mine), where(eq, zero, o)))
    return where(eq, scalar_like(0.5, o), d)


logaddexp = elementwise(
    "logaddexp",
    2,
    _logaddexp_impl,
    "gg_logaddexp({0}, {1})",
    _logaddexp_partial,
    kinds="f",
    prepare=promote_floats,
)
_helper("logaddexp", LOGADDEXP_HELPER)


def _arctan2_partial(i, o, y, x):
    r2 = add(multiply(y, y), multiply(x, x))
    safe = where(equal(r2, scalar_like(0, r2)), scalar_like(1, r2), r2)  # 0 at the origin
    return divide(x, safe) if i == 0 else negative(divide(y, safe))


arctan2 = ufunc(
    "arctan2", 2, "atan2({0}, {1})", _arctan2_partial, kinds="f", prepare=promote_floats
)


# ---- composite activations (selections of primitives; they fuse) --------------------------
def leaky_relu(x: Any, negative_slope: float = 0.01) -> Any:
    x = to_float(x)
    return where(greater(x, scalar_like(0, x)), x, multiply(x, scalar_like(negative_slope, x)))


def elu(x: Any, alpha: float = 1.0) -> Any:
    x = to_float(x)
    pos = greater(x, scalar_like(0, x))
    # expm1 only sees x <= 0: its derivative exp(x) never overflows in the branch not taken
    neg = multiply(scalar_like(alpha, x), expm1(where(pos, scalar_like(0, x), x)))
    return where(pos, x, neg)


def hard_sigmoid(x: Any) -> Any:
    """relu6(x + 3) / 6, as torch.nn.functional.hardsigmoid and jax.nn.hard_sigmoid."""
    x = to_float(x)
    return divide(clip(add(x, scalar_like(3, x)), 0, 6), scalar_like(6, x))


def hard_swish(x: Any) -> Any:
    """x * hard_sigmoid(x), as torch.nn.functional.hardswish."""
    x = to_float(x)
    return multiply(x, hard_sigmoid(x))


for _fn in (leaky_relu, elu, hard_sigmoid, hard_swish):
    API[_fn.__name__] = _fn

__all__ = sorted(
    [
        "arctan",
        "arctan2",
        "bitwise_and",
        "bitwise_not",
        "bitwise_or",
        "bitwise_xor",
        "ceil",
        "clip",
        "divmod_",
        "elu",
        "expm1",
        "floor",
        "floor_divide",
        "hard_sigmoid",
        "hard_swish",
        "invert",
        "isfinite",
        "isnan",
        "leaky_relu",
        "log1p",
        "log2",
        "logaddexp",
        "logical_xor",
        "mod",
        "nan_to_num",
        "remainder",
        "round",
        "silu",
        "softplus",
        "square",
        "tan",
    ]
)
