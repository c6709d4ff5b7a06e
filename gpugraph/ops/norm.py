"""Normalization layers as composites of primitives (mean, multiply, rsqrt, ...), so they
differentiate and fuse like any other graph. ``layer_norm`` (any axis list) lives in ``nn``."""

from __future__ import annotations

import math
from typing import Any

from ..errors import GpuGraphError, ShapeError
from .core import to_float, type_of
from .elementwise import add, multiply, rsqrt, scalar_like, stop_gradient, subtract
from .half import accumulate_in_float32
from .reduce import mean
from .shape import normalize_axis, reshape


def _normalize(x: Any, axes: tuple[int, ...], eps: float) -> tuple[Any, Any, Any]:
    """(x - mean) / sqrt(var + eps) over ``axes``; also the mean and (biased) variance."""
    mu = mean(x, axis=axes, keepdims=True)
    centered = subtract(x, mu)
    var = mean(multiply(centered, centered), axis=axes, keepdims=True)
    return multiply(centered, rsqrt(add(var, scalar_like(eps, x)))), mu, var


def _along(p: Any, ndim: int, axis: int) -> Any:
    """A per-channel vector shaped to broadcast along ``axis`` of an ``ndim`` array."""
    return reshape(p, tuple(-1 if i == axis else 1 for i in range(ndim)))


def _affine(y: Any, weight: Any, bias: Any, axis: int) -> Any:
    nd = type_of(y).ndim
    if weight is not None:
        y = multiply(y, _along(weight, nd, axis))
    if bias is not None:
        y = add(y, _along(bias, nd, axis))
    return y


@accumulate_in_float32
def batch_norm(
    x: Any,
    weight: Any = None,
    bias: Any = None,
    running_mean: Any = None,
    running_var: Any = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    axis: int = 1,
) -> Any:
    """Batch normalization over every axis but the channel ``axis``.

    ``training=True`` normalizes with the batch statistics; given running statistics it
    returns ``(y, new_running_mean, new_running_var)`` (functional: nothing is updated in
    place; the running variance takes the unbiased batch variance, as torch).
    ``training=False`` normalizes with ``running_mean`` and ``running_var``."""
    x = to_float(x)
    nd = type_of(x).ndim
    axis = normalize_axis("batch_norm", axis, nd)
    if not training:
        if running_mean is None or running_var is None:
            raise GpuGraphError("batch_norm: training=False needs running_mean and running_var")
        inv = rsqrt(add(_along(running_var, nd, axis), scalar_like(eps, x)))
        y = multiply(subtract(x, _along(running_mean, nd, axis)), inv)
        return _affine(y, weight, bias, axis)
    red = tuple(i for i in range(nd) if i != axis)
    y, mu, var = _normalize(x, red, eps)
    y = _affine(y, weight, bias, axis)
    if running_mean is None and running_var is None:
        return y
    if running_mean is None or running_var is None:
        raise GpuGraphError("batch_norm: give both running_mean and running_var, or neither")
    n = math.prod(type_of(x).shape[i] for i in red)
    unbiased = multiply(var, scalar_like(n / max(n - 1, 1), x))
    m = scalar_like(momentum, x)
    keep = scalar_like(1 - momentum, x)
    new_mean = add(multiply(keep, running_mean), multiply(m, reshape(stop_gradient(mu), (-1,))))
    new_var = add(multiply(keep, running_var), multiply(m, reshape(stop_gradient(unbiased), (-1,))))
    return y, new_mean, new_var


@accumulate_in_float32
def group_norm(
    x: Any, num_groups: int, weight: Any = None, bias: Any = None, eps: float = 1e-5
) -> Any:
    """Normalize ``x[N, C, *S]`` over each group of C/num_groups channels and S (as
    torch.nn.functional.group_norm), then scale and shift per channel."""
    x = to_float(x)
    t = type_of(x)
    if t.ndim < 2 or num_groups < 1 or t.shape[1] % num_groups:
        raise ShapeError(f"group_norm: {t} does not split into {num_groups} channel groups")
    n, c = t.shape[:2]
    grouped = reshape(x, (n, num_groups, c // num_groups, *t.shape[2:]))
    y, _, _ = _normalize(grouped, tuple(range(2, t.ndim + 1)), eps)
    return _affine(reshape(y, t.shape), weight, bias, 1)


@accumulate_in_float32
def instance_norm(x: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Any:
    """Normalize ``x[N, C, *S]`` over S for each sample and channel."""
    x = to_float(x)
    nd = type_of(x).ndim
    if nd < 3:
        raise ShapeError(f"instance_norm: x must be [N, C, *spatial], got {type_of(x)}")
    y, _, _ = _normalize(x, tuple(range(2, nd)), eps)
    return _affine(y, weight, bias, 1)


@accumulate_in_float32
def rms_norm(x: Any, weight: Any = None, axis: Any = -1, eps: float = 1e-6) -> Any:
    """x / sqrt(mean(x**2 over ``axis``) + eps), times ``weight``."""
    x = to_float(x)
    ms = mean(multiply(x, x), axis=axis, keepdims=True)
    y = multiply(x, rsqrt(add(ms, scalar_like(eps, x))))
    return y if weight is None else multiply(y, weight)
