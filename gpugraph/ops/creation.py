"""Creation ops. Inside a traced function they become nodes (so a large zeros() is not a
materialized constant); eagerly they return NumPy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DTypeError, GpuGraphError, TraceError
from ..ir import TensorType, check_shape
from ..tracer import Tracer
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


def _fill_value(value: Any, dt: np.dtype) -> Any:
    """``value`` as a Python scalar of dtype ``dt``; a value the dtype cannot hold is an error
    (NumPy 2 raises OverflowError for an out-of-range Python int, and wraps NumPy ints)."""
    try:
        arr = np.asarray(value)
        if arr.shape != ():
            raise GpuGraphError(f"full: the fill value must be a scalar, got shape {arr.shape}")
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            out = arr.astype(dt) if arr.dtype != object else np.asarray(value, dt)
        if dt.kind in "iu" and arr.dtype.kind in "iub" and int(out) != int(arr):
            raise OverflowError
        if dt.kind in "iu" and arr.dtype.kind == "f" and not np.isfinite(arr):
            raise OverflowError
    except (OverflowError, ValueError, TypeError):
        raise DTypeError(f"full: fill value {value!r} does not fit in dtype {dt}") from None
    return out.item()


def full(shape: Any, value: Any, dtype: Any = None) -> Any:
    if isinstance(value, Tracer):  # a traced fill value: broadcast it, as jnp.full does
        from .elementwise import astype
        from .shape import broadcast_to

        dt = check_dtype(dtype, "full") if dtype is not None else value.dtype
        return broadcast_to(astype(value, dt), check_shape(shape, "full", dt.itemsize))
    dt = check_dtype(dtype, "full") if dtype is not None else scalar_default_dtype(value)
    dims = check_shape(shape, "full", dt.itemsize)
    return bind("full", shape=dims, value=_fill_value(value, dt), dtype=dt)


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
    for name, v in (("start", start), ("stop", stop), ("step", step)):
        if isinstance(v, Tracer):
            raise TraceError(
                f"arange: {name} is a traced value ({v.value.type}), but the length of an arange "
                "decides its shape, which must be known when tracing. Pass it as a static "
                "argument (static_argnums / static_argnames); a Python number argument is "
                "traced unless marked static"
            )
    if step == 0:
        raise GpuGraphError("arange: step must not be zero")
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, stop, step))
        dtype = DEFAULT_FLOAT if is_float else np.int64
    return bind("arange", start=start, stop=stop, step=step, dtype=check_dtype(dtype, "arange"))
