"""Creation ops. Inside a traced function they become nodes (so a large zeros() is not a
materialized constant); eagerly they return NumPy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GpuGraphError, ShapeError
from ..ir import TensorType
from .core import DEFAULT_FLOAT, array_module, bind, check_dtype, scalar_default_dtype, type_of
from .registry import OpDef, register


def _full_impl(xp, shape, value, dtype):
    return xp.full(shape, value, dtype=dtype)


register(
    OpDef(
        "full",
        "creation",
        lambda types, shape, value, dtype: [TensorType(shape, dtype)],
        _full_impl,
    )
)
register(
    OpDef(
        "arange",
        "creation",
        lambda types, start, stop, step, dtype: [TensorType((_n(start, stop, step),), dtype)],
        lambda xp, start, stop, step, dtype: xp.arange(start, stop, step, dtype=dtype),
    )
)


def _n(start, stop, step) -> int:
    return max(0, int(np.ceil((stop - start) / step)))


def _shape(shape: Any, op: str = "full") -> tuple[int, ...]:
    try:
        dims = (
            (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        )
    except TypeError:
        raise ShapeError(
            f"{op}: shape must be an int or a sequence of ints, got {shape!r}"
        ) from None
    if any(d < 0 for d in dims):
        raise ShapeError(f"{op}: negative dimension in shape {dims}")
    return dims


def full(shape: Any, value: Any, dtype: Any = None) -> Any:
    dt = check_dtype(dtype, "full") if dtype is not None else scalar_default_dtype(value)
    return bind("full", shape=_shape(shape), value=np.asarray(value, dt).item(), dtype=dt)


def zeros(shape: Any, dtype: Any = DEFAULT_FLOAT) -> Any:
    return full(shape, 0, dtype)


def ones(shape: Any, dtype: Any = DEFAULT_FLOAT) -> Any:
    return full(shape, 1, dtype)


def _like(x: Any, value: Any, dtype: Any) -> Any:
    t = type_of(x)
    r = full(t.shape, value, dtype or t.dtype)
    xp = array_module([x])
    if isinstance(r, np.ndarray) and xp is not np:  # eager on a CuPy array: stay on the device
        return xp.full(r.shape, r.reshape(-1)[0] if r.size else 0, dtype=r.dtype)
    return r


def zeros_like(x: Any, dtype: Any = None) -> Any:
    return _like(x, 0, dtype)


def ones_like(x: Any, dtype: Any = None) -> Any:
    return _like(x, 1, dtype)


def full_like(x: Any, value: Any, dtype: Any = None) -> Any:
    return _like(x, value, dtype)


def arange(start: Any, stop: Any = None, step: Any = 1, dtype: Any = None) -> Any:
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise GpuGraphError("arange: step must not be zero")
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, stop, step))
        dtype = DEFAULT_FLOAT if is_float else np.int64
    return bind("arange", start=start, stop=stop, step=step, dtype=check_dtype(dtype, "arange"))
