"""Elementwise ops: the factory and what it shares. Each op is one ``elementwise(...)`` call
holding its impl, CUDA template and derivative; the calls live in the family modules
(``arithmetic``, ``transcendental``, ``logic``), whose public functions are re-exported here.

Derivatives are given as ``partial(i, out, *xs)``: d out / d xs[i] as a tensor (or +1/-1, a
``Gated`` derivative that is exactly 0 outside a mask, or None for zero). Both the VJP (with
broadcasting undone) and the JVP derive from it, so one rule serves both modes. Ops whose
derivative is not a pointwise factor pass explicit vjp/jvp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DTypeError, ShapeError
from ..ir import TensorType
from .core import bind, promote, to_float, type_of
from .registry import OpDef, register

API: dict[str, Callable] = {}


def broadcast_shapes(op: str, shapes) -> tuple[int, ...]:
    first = shapes[0] if shapes else None
    if first is not None and all(s == first for s in shapes):
        return tuple(first)  # one shape: nothing to broadcast (most ops of a trace)
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ShapeError(
            f"{op}: operand shapes {', '.join(map(str, shapes))} cannot be broadcast together"
        ) from None


def _kinds_check(op: str, types, kinds: str) -> None:
    kinds += "u" if "i" in kinds else ""  # "i": every integer, signed or unsigned
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


@dataclass(frozen=True)
class Gated:
    """A derivative equal to ``factor`` where the boolean ``keep`` holds and to exactly 0
    elsewhere. It is applied by selection, ``where(keep, g * factor, 0)``, never by multiplying
    with a 0/1 mask: the incoming cotangent may be inf where the mask is 0 (d sqrt(u)/du at
    u = relu(x) = 0), and inf * 0 would make the gradient NaN where torch and JAX give 0."""

    keep: Any
    factor: Any = 1


def _scale(g: Any, p: Any) -> Any:
    """g * p, where p may be the plain numbers +1/-1 (no node needed) or ``Gated``."""
    if isinstance(p, Gated):
        return where(p.keep, _scale(g, p.factor), scalar_like(0, g))
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


def ufunc(
    name: str, arity: int, cuda: str, partial: Callable | None, xp_name: str = "", **kw
) -> Callable:
    """``elementwise`` for an op whose impl is the array module's ufunc ``xp_name`` (default:
    ``name``) called with ``out=``."""
    fn = xp_name or name
    if arity == 1:

        def impl(xp, a, out=None):
            return getattr(xp, fn)(a, out=out)

    else:

        def impl(xp, a, b, out=None):
            return getattr(xp, fn)(a, b, out=out)

    impl.xp_name = fn  # backends call xp.<fn> directly, without this wrapper's frame
    return elementwise(name, arity, impl, cuda, partial, **kw)


def float_unary(name: str, cuda: str, partial: Callable, impl: Callable | None = None) -> Callable:
    """A one-operand op on floats (int operands are made float first); the impl defaults to the
    array module's ufunc ``name``."""
    if impl is None:
        return ufunc(name, 1, cuda, partial, kinds="f", prepare=promote_floats)
    return elementwise(name, 1, impl, cuda, partial, kinds="f", prepare=promote_floats)


def promote_floats(*xs):
    """Operands of a float-only op: each made float, then promoted to one dtype."""
    return promote(*[to_float(x) for x in xs])


def scalar_like(x, like):
    """The number ``x`` as a constant of like's dtype (keeps float32 graphs float32)."""
    return np.asarray(x, dtype=type_of(like).dtype)[()]


def into(out, r):
    """``r`` from an impl without a native ``out=``: copied into ``out`` when one is given."""
    if out is not None:
        out[...] = r
        return out
    return r


# The op families register their ops on import; the derivative helpers above (_scale and the
# JVP sum) reach add, multiply and negative through these module-level names at trace time.
from .arithmetic import (  # noqa: E402
    abs,
    add,
    divide,
    maximum,
    minimum,
    multiply,
    negative,
    reciprocal,
    relu,
    sign,
    stop_gradient,
    subtract,
)
from .logic import (  # noqa: E402
    astype,
    equal,
    greater,
    greater_equal,
    less,
    less_equal,
    logical_and,
    logical_not,
    logical_or,
    not_equal,
    where,
)
from .transcendental import (  # noqa: E402
    cos,
    erf,
    exp,
    log,
    power,
    rsqrt,
    sigmoid,
    sin,
    sqrt,
    tanh,
)

__all__ = [
    "API",
    "broadcast_shapes",
    "elementwise",
    "float_unary",
    "into",
    "promote_floats",
    "scalar_like",
    "ufunc",
    "abs",
    "add",
    "astype",
    "cos",
    "divide",
    "equal",
    "erf",
    "exp",
    "greater",
    "greater_equal",
    "less",
    "less_equal",
    "log",
    "logical_and",
    "logical_not",
    "logical_or",
    "maximum",
    "minimum",
    "multiply",
    "negative",
    "not_equal",
    "power",
    "reciprocal",
    "relu",
    "rsqrt",
    "sigmoid",
    "sign",
    "sin",
    "sqrt",
    "stop_gradient",
    "subtract",
    "tanh",
    "where",
]
