"""Composites built from primitives, so autodiff and fusion get them for free."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..tracer import with_user_loc
from .core import to_float, type_of
from .elementwise import (
    abs,
    add,
    erf,
    exp,
    less,
    log,
    multiply,
    rsqrt,
    stop_gradient,
    subtract,
    tanh,
    where,
)
from .reduce import max as _max
from .reduce import mean, sum
from .shape import squeeze


def _c(value: float, like: Any) -> Any:
    return np.asarray(value, dtype=type_of(like).dtype)[()]


@with_user_loc
def logsumexp(x: Any, axis: Any = -1, keepdims: bool = False) -> Any:
    x = to_float(x)
    m = _max(x, axis=axis, keepdims=True)
    # shift by the max only where it is finite: a row of -inf gives -inf (not -inf - -inf =
    # NaN) and a +inf entry gives +inf, as in scipy, JAX and PyTorch
    shift = stop_gradient(where(less(abs(m), _c(np.inf, x)), m, _c(0.0, x)))
    out = add(log(sum(exp(subtract(x, shift)), axis=axis, keepdims=True)), shift)
    return out if keepdims else squeeze(out, axis if axis is not None else None)


@with_user_loc
def softmax(x: Any, axis: int = -1) -> Any:
    x = to_float(x)
    e = exp(subtract(x, stop_gradient(_max(x, axis=axis, keepdims=True))))
    return multiply(e, _reciprocal(sum(e, axis=axis, keepdims=True)))


def _reciprocal(x: Any) -> Any:
    from .elementwise import reciprocal

    return reciprocal(x)


@with_user_loc
def log_softmax(x: Any, axis: int = -1) -> Any:
    x = to_float(x)
    return subtract(x, logsumexp(x, axis=axis, keepdims=True))


@with_user_loc
def var(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    x = to_float(x)
    centered = subtract(x, mean(x, axis=axis, keepdims=True))
    return mean(multiply(centered, centered), axis=axis, keepdims=keepdims)


@with_user_loc
def layer_norm(
    x: Any, weight: Any = None, bias: Any = None, axis: int = -1, eps: float = 1e-5
) -> Any:
    """(x - mean) / sqrt(var + eps) over ``axis``, then scaled and shifted."""
    x = to_float(x)
    mu = mean(x, axis=axis, keepdims=True)
    centered = subtract(x, mu)
    v = mean(multiply(centered, centered), axis=axis, keepdims=True)
    y = multiply(centered, rsqrt(add(v, _c(eps, x))))
    if weight is not None:
        y = multiply(y, weight)
    if bias is not None:
        y = add(y, bias)
    return y


@with_user_loc
def gelu(x: Any, approximate: str | bool = "tanh") -> Any:
    """GELU; ``approximate="tanh"`` (default) or ``"none"`` for the exact erf form."""
    x = to_float(x)
    half = multiply(_c(0.5, x), x)
    if approximate in ("tanh", True):
        inner = multiply(
            _c(math.sqrt(2 / math.pi), x),
            add(x, multiply(_c(0.044715, x), multiply(x, multiply(x, x)))),
        )
        return multiply(half, add(_c(1.0, x), tanh(inner)))
    if approximate in ("none", False):
        return multiply(half, add(_c(1.0, x), erf(multiply(x, _c(1 / math.sqrt(2), x)))))
    raise ValueError(f"gelu: approximate must be 'tanh' or 'none', got {approximate!r}")
