"""More reductions and scans: prod, argmin, any, all, cumsum (primitives); std and norm
(composites)."""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from ..errors import ShapeError, UnsupportedError
from ..ir import TensorType
from .core import bind, to_float, type_of
from .elementwise import (
    abs,
    add,
    astype,
    divide,
    equal,
    logical_and,
    multiply,
    not_equal,
    power,
    scalar_like,
    sqrt,
    where,
)
from .half import accumulate_in_float32
from .reduce import (
    _expand_back,
    _reduce_infer,
    _sum_dtype,
    argmin,  # noqa: F401  (registered beside argmax; listed here in API)
    canonical_axes,
    reduced_shape,
)
from .reduce import max as _max
from .reduce import min as _min
from .reduce import sum as _sum
from .registry import OpDef, register
from .shape import normalize_axis, reshape


# ---- prod ---------------------------------------------------------------------------------
def _prod_grad(x, axis):
    """d prod / d x_i = product of the others, without dividing by zero: with no zero in the
    slice it is prod / x_i; with one zero, the zero's entry is the product of the rest and
    the others are 0; with more, all are 0."""
    zero, one = scalar_like(0, x), scalar_like(1, x)
    is_zero = equal(x, zero)
    nonzero = where(is_zero, one, x)
    p = bind("prod", nonzero, axis=axis, keepdims=True)
    zeros = _sum(astype(is_zero, np.int64), axis=axis, keepdims=True)
    no_zero = divide(p, nonzero)
    one_zero = where(logical_and(equal(zeros, 1), is_zero), p, zero)
    return where(equal(zeros, 0), no_zero, one_zero)


def _prod_vjp(cts, outs, x, axis, keepdims):
    if type_of(x).dtype.kind != "f":
        return [None]
    return [multiply(_expand_back(cts[0], x, axis, keepdims), _prod_grad(x, axis))]


def _prod_jvp(ts, outs, x, axis, keepdims):
    return [_sum(multiply(ts[0], _prod_grad(x, axis)), axis=axis, keepdims=keepdims)]


register(
    OpDef(
        "prod",
        "reduce",
        _reduce_infer("prod", _sum_dtype),
        lambda xp, a, axis, keepdims, out=None: xp.prod(
            a, axis=axis, keepdims=keepdims, dtype=_sum_dtype(a.dtype), out=out
        ),
        vjp=_prod_vjp,
        jvp=_prod_jvp,
        out_kw=True,
    )
)


@accumulate_in_float32
def prod(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    axes = canonical_axes("prod", axis, type_of(x).ndim)
    return bind("prod", x, axis=axes, keepdims=bool(keepdims))


# ---- any / all ----------------------------------------------------------------------------
for _name in ("any", "all"):
    register(
        OpDef(
            _name,
            "nondiff",
            lambda types, axis, keepdims: [
                TensorType(reduced_shape(types[0].shape, axis, keepdims), np.bool_)
            ],
            lambda xp, a, axis, keepdims, out=None, _name=_name: getattr(xp, _name)(
                a, axis=axis, keepdims=keepdims, out=out
            ),
            out_kw=True,
            differentiable=False,
        )
    )


def any(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    axes = canonical_axes("any", axis, type_of(x).ndim)
    return bind("any", x, axis=axes, keepdims=bool(keepdims))


def all(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    axes = canonical_axes("all", axis, type_of(x).ndim)
    return bind("all", x, axis=axes, keepdims=bool(keepdims))


# ---- cumsum -------------------------------------------------------------------------------
def _cumsum_vjp(cts, outs, x, axis):
    from .shape_more import flip

    if type_of(x).dtype.kind != "f":
        return [None]
    return [flip(bind("cumsum", flip(cts[0], axis), axis=axis), axis)]


register(
    OpDef(
        "cumsum",
        "reduce",
        lambda types, axis: [TensorType(types[0].shape, _sum_dtype(types[0].dtype))],
        lambda xp, a, axis, out=None: xp.cumsum(a, axis=axis, dtype=_sum_dtype(a.dtype), out=out),
        vjp=_cumsum_vjp,
        jvp=lambda ts, outs, x, axis: [bind("cumsum", ts[0], axis=axis)],
        out_kw=True,
    )
)


@accumulate_in_float32
def cumsum(x: Any, axis: int | None = None) -> Any:
    """Running sum along ``axis`` (the flattened array when None), as np.cumsum."""
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    return bind("cumsum", x, axis=normalize_axis("cumsum", axis, type_of(x).ndim))


# ---- cumprod / cummax (composites: log-depth scans) ----------------------------------------
def _scan(op, x: Any, axis: int | None, fill: Any) -> Any:
    """Inclusive scan of the associative ``op`` along ``axis`` in ceil(log2 n) steps (Hillis
    and Steele): step k combines each element with the one 2**k before it (``fill``, op's
    identity, where there is none). Built from slices, concatenations and ``op``, so it
    differentiates through them."""
    from .creation import full
    from .index import slice_axis
    from .shape import concatenate

    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    t = type_of(x)
    axis = normalize_axis("scan", axis, t.ndim)
    n, shift = t.shape[axis], 1
    while shift < n:
        pad_shape = list(t.shape)
        pad_shape[axis] = shift
        before = concatenate(
            [full(pad_shape, fill, t.dtype), slice_axis(x, axis, 0, n - shift)], axis
        )
        x = op(x, before)
        shift *= 2
    return x


@accumulate_in_float32
def cumprod(x: Any, axis: int | None = None) -> Any:
    """Running product along ``axis`` (the flattened array when None), as np.cumprod; its
    gradient is exact with zeros (no division)."""
    from .elementwise import multiply as _mul

    if type_of(x).dtype.kind in "bi":  # NumPy accumulates integers in int64
        x = astype(x, _sum_dtype(type_of(x).dtype))
    return _scan(_mul, x, axis, 1)


def cummax(x: Any, axis: int | None = None) -> Any:
    """Running maximum along ``axis`` (the flattened array when None), as
    np.maximum.accumulate; at ties the gradient is shared, as ``maximum``'s."""
    from .elementwise import maximum

    dt = type_of(x).dtype
    lowest = -np.inf if dt.kind == "f" else np.iinfo(dt).min if dt.kind in "iu" else False
    return _scan(maximum, x, axis, lowest)


# ---- std and norm (composites) ------------------------------------------------------------
@accumulate_in_float32
def std(x: Any, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> Any:
    """Standard deviation, as np.std (``ddof`` = delta degrees of freedom)."""
    from .nn import var

    x = to_float(x)
    t = type_of(x)
    n = int(np.prod([t.shape[a] for a in canonical_axes("std", axis, t.ndim)], dtype=np.int64))
    v = var(x, axis=axis, keepdims=keepdims)
    if ddof:
        v = multiply(v, scalar_like(n / builtins.max(n - ddof, 0) if n > ddof else np.inf, x))
    return sqrt(v)


def _safe_sqrt_sum(sq: Any) -> Any:
    """sqrt of a sum of squares whose derivative at 0 is 0 (the subgradient torch and JAX use),
    not 0 * inf = NaN."""
    zero = scalar_like(0, sq)
    is_zero = equal(sq, zero)
    return where(is_zero, zero, sqrt(where(is_zero, scalar_like(1, sq), sq)))


@accumulate_in_float32
def norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
    """Vector norms (ord None/2, 1, inf, -inf, 0 or any p) over ``axis``, and the Frobenius
    norm (ord None or "fro") over two axes; as np.linalg.norm. The gradient at 0 is 0."""
    x = to_float(x)
    nd = type_of(x).ndim
    if ord == "fro" or (ord is None and (axis is None or not isinstance(axis, int))):
        if ord == "fro" and (axis is None and nd != 2):
            raise ShapeError("norm: ord='fro' needs a 2-D array or two axes")
        return _safe_sqrt_sum(_sum(multiply(x, x), axis=axis, keepdims=keepdims))
    if axis is not None and not isinstance(axis, int):
        raise UnsupportedError(f"norm: matrix norm ord={ord!r} is not supported (only 'fro')")
    if axis is None and nd != 1:
        raise UnsupportedError(f"norm: ord={ord!r} over a {nd}-D array needs an int axis")
    a = abs(x)
    if ord is None or ord == 2:  # None with an int axis: the 2-norm, as np.linalg.norm
        return _safe_sqrt_sum(_sum(multiply(x, x), axis=axis, keepdims=keepdims))
    if ord == 1:
        return _sum(a, axis=axis, keepdims=keepdims)
    if ord == np.inf:
        return _max(a, axis=axis, keepdims=keepdims)
    if ord == -np.inf:
        return _min(a, axis=axis, keepdims=keepdims)
    if ord == 0:
        nz = astype(not_equal(x, scalar_like(0, x)), type_of(x).dtype)
        return _sum(nz, axis=axis, keepdims=keepdims)
    p = float(ord)
    s = _sum(power(a, scalar_like(p, x)), axis=axis, keepdims=keepdims)
    return power(s, scalar_like(1 / p, x))


__all__ = ["add", "all", "any", "argmin", "cummax", "cumprod", "cumsum", "norm", "prod", "std"]
