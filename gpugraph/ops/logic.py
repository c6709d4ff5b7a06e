"""Comparisons, logic, selection and casts: equal ... greater_equal, logical_and/or/not,
where, astype."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..ir import TensorType, is_float
from ..tracer import Tracer
from .core import bind, check_dtype, promote, type_of
from .elementwise import API, elementwise, into, scalar_like, ufunc
from .registry import OpDef, register


def _bools(*xs):
    return [x if type_of(x).dtype == np.bool_ else astype(x, np.bool_) for x in xs]


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
    cuda = f"({{0}} {sym} {{1}})"
    return ufunc(name, 2, cuda, None, out_dtype=np.bool_, doc=f"Elementwise {fn.__name__}.")


equal, not_equal, less, less_equal, greater, greater_equal = (
    _comparison(n, s) for n, s in _COMPARISONS.items()
)
logical_and = ufunc("logical_and", 2, "({0} && {1})", None, kinds="b", prepare=_bools)
logical_or = ufunc("logical_or", 2, "({0} || {1})", None, kinds="b", prepare=_bools)
logical_not = ufunc("logical_not", 1, "(!{0})", None, kinds="b", prepare=_bools)


# ---- where and astype ---------------------------------------------------------------------
def _where_prepare(c, a, b):
    (c,) = _bools(c)
    return [c, *promote(a, b)]


def _where_impl(xp, c, a, b, out=None):
    if out is None:
        return xp.where(c, a, b)
    # no full-size temporary: the fused NumPy path calls this per chunk with an arena view as
    # ``out``, which the memory planner may have given the bytes of a dying operand
    if xp.may_share_memory(out, c) or (xp.may_share_memory(out, a) and xp.may_share_memory(out, b)):
        return into(out, xp.where(c, a, b))
    if xp.may_share_memory(out, a):  # out holds a already: only the b side changes
        xp.copyto(out, b, where=xp.logical_not(c))
        return out
    xp.copyto(out, b)
    xp.copyto(out, a, where=c)
    return out


def _where_vjp(cts, outs, c, a, b):
    from .shape import sum_to_shape

    g = cts[0]
    zero = scalar_like(0, g)
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
    zero = scalar_like(0, outs[0])
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
    return [astype(cts[0], src) if is_float(src) and is_float(dtype) else None]


def _astype_jvp(ts, outs, a, dtype):
    return [astype(ts[0], dtype) if ts[0] is not None and is_float(dtype) else None]


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
        # a traced value is immutable; an array is copied, as NumPy's astype does
        return x if isinstance(x, Tracer) else x.copy()
    if isinstance(x, (bool, int, float)):
        return np.asarray(x, dtype=dt)[()]
    return bind("astype", x, dtype=dt)


API["astype"] = astype
