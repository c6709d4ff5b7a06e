"""Composites built from primitives, so autodiff and fusion get them for free."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ArgumentError
from .core import to_float
from .elementwise import (
    abs,
    add,
    erf,
    exp,
    less,
    log,
    multiply,
    reciprocal,
    rsqrt,
    scalar_like,
    stop_gradient,
    subtract,
    tanh,
    where,
)
from .half import accumulate_in_float32
from .reduce import max as _max
from .reduce import mean, sum
from .shape import squeeze


def _finite_max(x: Any, axis: Any) -> Any:
    """The max over ``axis`` (kept) where it is finite, else 0, as a constant for autodiff: the
    shift that keeps exp from overflowing. A row of -inf is not shifted (-inf - -inf = NaN),
    nor one holding +inf, which then gives +inf as in scipy, JAX and PyTorch."""
    m = _max(x, axis=axis, keepdims=True)
    return stop_gradient(where(less(abs(m), scalar_like(np.inf, x)), m, scalar_like(0.0, x)))


@accumulate_in_float32
def logsumexp(x: Any, axis: Any = -1, keepdims: bool = False) -> Any:
    x = to_float(x)
    shift = _finite_max(x, axis)
    out = add(log(sum(exp(subtract(x, shift)), axis=axis, keepdims=True)), shift)
    return out if keepdims else squeeze(out, axis if axis is not None else None)


@accumulate_in_float32
def softmax(x: Any, axis: int = -1) -> Any:
    x = to_float(x)
    e = exp(subtract(x, stop_gradient(_max(x, axis=axis, keepdims=True))))
    return multiply(e, reciprocal(sum(e, axis=axis, keepdims=True)))


@accumulate_in_float32
def log_softmax(x: Any, axis: int = -1) -> Any:
    """(x - m) - log(sum(exp(x - m))), m the row's finite max: subtracting the shift first keeps
    the small log term exact where x - logsumexp(x) would round it away (1e300 + log 2)."""
    x = to_float(x)
    shifted = subtract(x, _finite_max(x, axis))
    return subtract(shifted, log(sum(exp(shifted), axis=axis, keepdims=True)))


@accumulate_in_float32
def var(x: Any, axis: Any = None, keepdims: bool = False) -> Any:
    x = to_float(x)
    centered = subtract(x, mean(x, axis=axis, keepdims=True))
    return mean(multiply(centered, centered), axis=axis, keepdims=keepdims)


@accumulate_in_float32
def layer_norm(
    x: Any, weight: Any = None, bias: Any = None, axis: int = -1, eps: float = 1e-5
) -> Any:
    """(x - mean) / sqrt(var + eps) over ``axis``, then scaled and shifted."""
    x = to_float(x)
    mu = mean(x, axis=axis, keepdims=True)
    centered = subtract(x, mu)
    v = mean(multiply(centered, centered), axis=axis, keepdims=True)
    y = multiply(centered, rsqrt(add(v, scalar_like(eps, x))))
    if weight is not None:
        y = multiply(y, weight)
    if bias is not None:
        y = add(y, bias)
    return y


def gelu(x: Any, approximate: str | bool = "tanh") -> Any:
    """GELU; ``approximate="tanh"`` (default) or ``"none"`` for the exact erf form."""
    x = to_float(x)
    half = multiply(scalar_like(0.5, x), x)
    if approximate in ("tanh", True):
        inner = multiply(
            scalar_like(math.sqrt(2 / math.pi), x),
            add(x, multiply(scalar_like(0.044715, x), multiply(x, multiply(x, x)))),
        )
        return multiply(half, add(scalar_like(1.0, x), tanh(inner)))
    if approximate in ("none", False):
        return multiply(
            half, add(scalar_like(1.0, x), erf(multiply(x, scalar_like(1 / math.sqrt(2), x))))
        )
    raise ArgumentError(f"gelu: approximate must be 'tanh' or 'none', got {approximate!r}")
