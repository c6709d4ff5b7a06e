"""Elementwise ops. Each op is one factory call holding its impl, CUDA template and derivative.

Derivatives are given as ``partial(i, out, *xs)``: d out / d xs[i] as a tensor (or +1/-1, or
None for zero). Both the VJP (with broadcasting undone) and the JVP derive from it, so one rule
serves both modes. Ops whose derivative is not a pointwise factor pass explicit vjp/jvp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import TensorType
from .core import bind, check_dtype, promote, to_float, type_of
from .registry import OpDef, register

API: dict[str, Callable] = {}


def broadcast_shapes(op: str, shapes) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(
            f"{op}: operand shapes {', '.join(map(str, shapes))} cannot be broadcast together"
        ) from None


def _kinds_check(op: str, types, kinds: str) -> None:
    for t in types:
        if t.dtype.kind not in kinds:
            raise DTypeError(f"{op}: dtype {t.dtype} is not supported by this op")


def _ew_infer(op: str, kinds: str, out_dtype: Any):
    def infer(types: list[TensorType], **attrs) -> list[TensorType]:
        _kinds_check(op, types, kinds)
        dtypes = {t.dtype for t in types[1:] if op == "where"} or {t.dtype for t in types}
        if len(dtypes) > 1:
            raise DTypeError(f"{op}: operands must share a dtype, got {sorted(map(str, dtypes))}")
        shape = broadcast_shapes(op, [t.shape for t in types])
        dt = out_dtype if out_dtype is not None else next(iter(dtypes))
        return [TensorType(shape, dt)]

    return infer


def _vjp_from_partial(partial):
    def vjp(cts, outs, *xs, **attrs):
        from .shape import sum_to_shape

        g = cts[0]
        grads = []
        for i, x in enumerate(xs):
            p = partial(i, outs[0], *xs, **attrs)
            if p is None:
                grads.append(None)
                continue
            gi = _scale(g, p)
            grads.append(sum_to_shape(gi, type_of(x).shape))
        return grads

    return vjp


def _jvp_from_partial(partial):
    def jvp(tangents, outs, *xs, **attrs):
        from .shape import broadcast_to

        total = None
        for i, t in enumerate(tangents):
            if t is None:
                continue
            p = partial(i, outs[0], *xs, **attrs)
            if p is None:
                continue
            term = _scale(t, p)
            total = term if total is None else add(total, term)
        if total is None:
            return [None]
        out_shape = type_of(outs[0]).shape
        if type_of(total).shape != out_shape:
            total = broadcast_to(total, out_shape)
        return [total]

    return jvp


def _scale(g: Any, p: Any) -> Any:
    """g * p, where p may be the plain numbers +1/-1 (no node needed)."""
    if isinstance(p, int) and p == 1:
        return g
    if isinstance(p, int) and p == -1:
        return negative(g)
    return multiply(g, p)


def elementwise(
    name: str,
    arity: int,
    impl: Callable,
    cuda: str,
    partial: Callable | None,
    kinds: str = "fib",
    out_dtype: Any = None,
    prepare: Callable | None = None,
    vjp: Callable | None = None,
    jvp: Callable | None = None,
    out_kw: bool = True,
    doc: str = "",
) -> Callable:
    """Register an elementwise op and return its public function."""
    differentiable = partial is not None or vjp is not None
    if partial is not None:
        vjp = vjp or _vjp_from_partial(partial)
        jvp = jvp or _jvp_from_partial(partial)
    else:
        vjp = vjp or (lambda cts, outs, *xs, **a: [None] * len(xs))
        jvp = jvp or (lambda ts, outs, *xs, **a: [None])
    register(
        OpDef(
            name,
            "elementwise",
            _ew_infer(name, kinds, None if out_dtype is None else np.dtype(out_dtype)),
            impl,
            cuda=cuda,
            vjp=vjp,
            jvp=jvp,
            out_kw=out_kw,
            differentiable=differentiable,
            doc=doc,
        )
    )

    def api(*args):
        if len(args) != arity:
            raise TypeError(f"{name}() takes {arity} array arguments, got {len(args)}")
        args = prepare(*args) if prepare else promote(*args)
        return bind(name, *args)

    api.__name__ = name
    api.__doc__ = doc or f"Elementwise {name}, NumPy broadcasting and promotion."
    API[name] = api
    return api


def _floats(*xs):
    return promote(*[to_float(x) for x in xs])


def _true_divide(*xs):
    xs = promote(*xs)
    return [to_float(x) for x in xs]


def _bools(*xs):
    return [x if type_of(x).dtype == np.bool_ else astype(x, np.bool_) for x in xs]


def _unit(x, like):
    """The number ``x`` as a constant of like's dtype (keeps float32 graphs float32)."""
    return np.asarray(x, dtype=type_of(like).dtype)[()]


# ---- arithmetic ---------------------------------------------------------------------------
add = elementwise(
    "add",
    2,
    lambda xp, a, b, out=None: xp.add(a, b, out=out),
    "({0} + {1})",
    lambda i, o, a, b: 1,
    kinds="fi",
)
subtract = elementwise(
    "subtract",
    2,
    lambda xp, a, b, out=None: xp.subtract(a, b, out=out),
    "({0} - {1})",
    lambda i, o, a, b: 1 if i == 0 else -1,
    kinds="fi",
)
multiply = elementwise(
    "multiply",
    2,
    lambda xp, a, b, out=None: xp.multiply(a, b, out=out),
    "({0} * {1})",
    lambda i, o, a, b: b if i == 0 else a,
    kinds="fib",
)
divide = elementwise(
    "divide",
    2,
    lambda xp, a, b, out=None: xp.divide(a, b, out=out),
    "({0} / {1})",
    lambda i, o, a, b: reciprocal(b) if i == 0 else negative(divide(o, b)),
    kinds="f",
    prepare=_true_divide,
)


def _power_partial(i, o, a, b):
    if i == 0:
        return multiply(b, power(a, subtract(b, _unit(1, b))))
    # d/db a**b = a**b log a: 0 at a == 0 (the limit) and NaN for a < 0 (no real derivative);
    # log only sees positive operands, so eager gradients of x**2 at x < 0 raise no warnings
    pos = greater(a, _unit(0, a))
    off = where(equal(a, _unit(0, a)), _unit(0, a), _unit(np.nan, a))
    return where(pos, multiply(o, log(where(pos, a, _unit(1, a)))), off)


power = elementwise(
    "power",
    2,
    lambda xp, a, b, out=None: xp.power(a, b, out=out),
    "pow({0}, {1})",
    _power_partial,
    kinds="fi",
)


def _max_partial(i, o, a, b, *, pick):
    mine, other = (a, b) if i == 0 else (b, a)
    wins = astype(pick(mine, other), type_of(o).dtype)
    ties = astype(equal(mine, other), type_of(o).dtype)
    return add(wins, multiply(ties, _unit(0.5, o)))


maximum = elementwise(
    "maximum",
    2,
    lambda xp, a, b, out=None: xp.maximum(a, b, out=out),
    "(({0} > {1} || {0} != {0}) ? {0} : {1})",
    lambda i, o, a, b: _max_partial(i, o, a, b, pick=greater),
    kinds="fi",
)
minimum = elementwise(
    "minimum",
    2,
    lambda xp, a, b, out=None: xp.minimum(a, b, out=out),
    "(({0} < {1} || {0} != {0}) ? {0} : {1})",
    lambda i, o, a, b: _max_partial(i, o, a, b, pick=less),
    kinds="fi",
)

# ---- unary --------------------------------------------------------------------------------
negative = elementwise(
    "negative",
    1,
    lambda xp, a, out=None: xp.negative(a, out=out),
    "(-{0})",
    lambda i, o, a: -1,
    kinds="fi",
)
sign = elementwise(
    "sign",
    1,
    lambda xp, a, out=None: xp.sign(a, out=out),
    "(({0} != {0}) ? {0} : ({T})(({0} > 0) - ({0} < 0)))",
    lambda i, o, a: None,
    kinds="fi",
)
abs = elementwise(
    "abs",
    1,
    lambda xp, a, out=None: xp.absolute(a, out=out),
    "({0} < 0 ? -{0} : ({0} == 0 ? ({T})0 : {0}))",
    lambda i, o, a: sign(a),
    kinds="fi",
)
exp = elementwise(
    "exp",
    1,
    lambda xp, a, out=None: xp.exp(a, out=out),
    "exp({0})",
    lambda i, o, a: o,
    kinds="f",
    prepare=_floats,
)
log = elementwise(
    "log",
    1,
    lambda xp, a, out=None: xp.log(a, out=out),
    "log({0})",
    lambda i, o, a: reciprocal(a),
    kinds="f",
    prepare=_floats,
)
sqrt = elementwise(
    "sqrt",
    1,
    lambda xp, a, out=None: xp.sqrt(a, out=out),
    "sqrt({0})",
    lambda i, o, a: divide(_unit(0.5, o), o),
    kinds="f",
    prepare=_floats,
)


def _rsqrt_impl(xp, a, out=None):
    r = xp.sqrt(a, out=out)
    return xp.divide(1, r, out=r if out is not None else None) if out is not None else 1 / r


rsqrt = elementwise(
    "rsqrt",
    1,
    _rsqrt_impl,
    "rsqrt({0})",
    lambda i, o, a: multiply(_unit(-0.5, o), divide(o, a)),
    kinds="f",
    prepare=_floats,
)


def _reciprocal_impl(xp, a, out=None):
    return xp.divide(1, a, out=out)


reciprocal = elementwise(
    "reciprocal",
    1,
    _reciprocal_impl,
    "(({T})1 / {0})",
    lambda i, o, a: negative(multiply(o, o)),
    kinds="f",
    prepare=_floats,
)
tanh = elementwise(
    "tanh",
    1,
    lambda xp, a, out=None: xp.tanh(a, out=out),
    "tanh({0})",
    lambda i, o, a: subtract(_unit(1, o), multiply(o, o)),
    kinds="f",
    prepare=_floats,
)
sin = elementwise(
    "sin",
    1,
    lambda xp, a, out=None: xp.sin(a, out=out),
    "sin({0})",
    lambda i, o, a: cos(a),
    kinds="f",
    prepare=_floats,
)
cos = elementwise(
    "cos",
    1,
    lambda xp, a, out=None: xp.cos(a, out=out),
    "cos({0})",
    lambda i, o, a: negative(sin(a)),
    kinds="f",
    prepare=_floats,
)


def _sigmoid_impl(xp, a, out=None):
    # exp(-log(1 + exp(-x))) is exact for large |x| and raises no overflow warnings
    # asarray: on a 0-d input the ufunc returns a scalar, which cannot be an ``out=`` below
    r = xp.asarray(xp.logaddexp(0, -a)) if out is None else xp.logaddexp(0, -a, out=out)
    r = xp.negative(r, out=r)
    return xp.exp(r, out=r)


sigmoid = elementwise(
    "sigmoid",
    1,
    _sigmoid_impl,
    "(({T})1 / (({T})1 + exp(-{0})))",
    lambda i, o, a: multiply(o, subtract(_unit(1, o), o)),
    kinds="f",
    prepare=_floats,
)


def _relu_impl(xp, a, out=None):
    return xp.maximum(a, a.dtype.type(0), out=out)


relu = elementwise(
    "relu",
    1,
    _relu_impl,
    "(({0} > ({T})0 || {0} != {0}) ? {0} : ({T})0)",
    lambda i, o, a: astype(greater(a, _unit(0, a)), type_of(a).dtype),
    kinds="fi",
)


def _erf_impl(xp, a, out=None):
    if xp is np:
        try:
            from scipy.special import erf as _erf  # exact and vectorized when available
        except ImportError:
            _erf = np.frompyfunc(math.erf, 1, 1)
        r = np.asarray(_erf(a)).astype(a.dtype)
    else:
        from cupyx.scipy.special import erf as _erf

        r = _erf(a)
    if out is not None:
        out[...] = r
        return out
    return r


erf = elementwise(
    "erf",
    1,
    _erf_impl,
    "erf({0})",
    lambda i, o, a: multiply(_unit(2 / math.sqrt(math.pi), o), exp(negative(multiply(a, a)))),
    kinds="f",
    prepare=_floats,
)
stop_gradient = elementwise(
    "stop_gradient",
    1,
    lambda xp, a, out=None: xp.copyto(out, a) or out if out is not None else a.copy(),
    "{0}",
    None,
    kinds="fib",
)

# ---- comparisons and logic ----------------------------------------------------------------
_COMPARISONS = {
    "equal": "==",
    "not_equal": "!=",
    "less": "<",
    "less_equal": "<=",
    "greater": ">",
    "greater_equal": ">=",
}


def _comparison(name: str, sym: str) -> Callable:
    fn = getattr(np, name)
    return elementwise(
        name,
        2,
        lambda xp, a, b, out=None: getattr(xp, name)(a, b, out=out),
        f"({{0}} {sym} {{1}})",
        None,
        out_dtype=np.bool_,
        doc=f"Elementwise {fn.__name__}.",
    )


equal, not_equal, less, less_equal, greater, greater_equal = (
    _comparison(n, s) for n, s in _COMPARISONS.items()
)
logical_and = elementwise(
    "logical_and",
    2,
    lambda xp, a, b, out=None: xp.logical_and(a, b, out=out),
    "({0} && {1})",
    None,
    kinds="b",
    prepare=_bools,
)
logical_or = elementwise(
    "logical_or",
    2,
    lambda xp, a, b, out=None: xp.logical_or(a, b, out=out),
    "({0} || {1})",
    None,
    kinds="b",
    prepare=_bools,
)
logical_not = elementwise(
    "logical_not",
    1,
    lambda xp, a, out=None: xp.logical_not(a, out=out),
    "(!{0})",
    None,
    kinds="b",
    prepare=_bools,
)


# ---- where and astype ---------------------------------------------------------------------
def _where_prepare(c, a, b):
    (c,) = _bools(c)
    return [c, *promote(a, b)]


def _where_impl(xp, c, a, b, out=None):
    r = xp.where(c, a, b)
    if out is not None:
        out[...] = r
        return out
    return r


def _where_vjp(cts, outs, c, a, b):
    from .shape import sum_to_shape

    g = cts[0]
    zero = _unit(0, g)
    return [
        None,
        sum_to_shape(where(c, g, zero), type_of(a).shape),
        sum_to_shape(where(c, zero, g), type_of(b).shape),
    ]


def _where_jvp(ts, outs, c, a, b):
    from .shape import broadcast_to

    _, ta, tb = ts
    if ta is None and tb is None:
        return [None]
    zero = _unit(0, outs[0])
    r = where(c, zero if ta is None else ta, zero if tb is None else tb)
    shape = type_of(outs[0]).shape
    return [r if type_of(r).shape == shape else broadcast_to(r, shape)]


where = elementwise(
    "where",
    3,
    _where_impl,
    "({0} ? {1} : {2})",
    None,
    prepare=_where_prepare,
    vjp=_where_vjp,
    jvp=_where_jvp,
    doc="where(cond, x, y), like np.where.",
)


def _astype_infer(types, dtype):
    return [TensorType(types[0].shape, dtype)]


def _astype_impl(xp, a, dtype, out=None):
    if out is not None:
        out[...] = a
        return out
    return a.astype(dtype)


def _astype_vjp(cts, outs, a, dtype):
    src = type_of(a).dtype
    return [astype(cts[0], src) if src.kind == "f" and dtype.kind == "f" else None]


def _astype_jvp(ts, outs, a, dtype):
    return [astype(ts[0], dtype) if ts[0] is not None and dtype.kind == "f" else None]


register(
    OpDef(
        "astype",
        "elementwise",
        _astype_infer,
        _astype_impl,
        cuda="(({T}){0})",
        vjp=_astype_vjp,
        jvp=_astype_jvp,
        out_kw=True,
    )
)


def astype(x: Any, dtype: Any) -> Any:
    """Cast to ``dtype`` (float32, float64, int32, int64 or bool)."""
    dt = check_dtype(dtype, "astype")
    if type_of(x).dtype == dt and not type_of(x).weak:
        return x
    if isinstance(x, (bool, int, float)):
        return np.asarray(x, dtype=dt)[()]
    return bind("astype", x, dtype=dt)


API["astype"] = astype
