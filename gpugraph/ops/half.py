"""Low-precision floats compute in float32.

float16: a sum of a few thousand values overflows or loses every small term when it is kept in
float16; mean, var and norms divide such sums. ``accumulate_in_float32`` wraps the public
function of a reduction or contraction: when its tensor operands promote to float16, they are
cast to float32, the op runs in float32 and its float32 results are cast back, as JAX does.

bfloat16 (ml_dtypes): NumPy has no rules for it, so every public op goes through
``bfloat16_via_float32`` (ops/__init__.py), and ``bind`` casts any bfloat16 operand that still
reaches it the same way (ops/core.py): op rules only ever see float32.

The casts are ordinary ``astype`` nodes, so autodiff (the cotangents are cast back the same
way) and fusion see them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from ..ir import BFLOAT16
from ..tracer import Tracer
from .core import is_python_scalar, is_tensor, result_dtype, type_of

HALF = np.dtype("float16")
ACCUMULATOR = np.dtype("float32")
_LOW = (HALF, BFLOAT16) if BFLOAT16 is not None else (HALF,)


def _via_float32(fn: Callable[..., Any], narrow: tuple[np.dtype, ...]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        target = _narrow_target([*args, *kwargs.values()], narrow)
        if target is None:
            return fn(*args, **kwargs)
        from .elementwise import astype  # local: elementwise imports the reduce modules

        def up(a: Any) -> Any:
            return astype(a, ACCUMULATOR) if is_tensor(a) and type_of(a).dtype in narrow else a

        def down(r: Any) -> Any:
            if isinstance(r, (tuple, list)):
                return type(r)(down(x) for x in r)
            # float32, or float64 where float32 met an int (NumPy promotes them so; JAX
            # keeps bfloat16 with ints): every float result is the target's
            if is_tensor(r) and type_of(r).dtype.kind == "f" and type_of(r).dtype != target:
                return astype(r, target)
            return r

        return down(fn(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()}))

    return wrapped


def _dtype(a: Any) -> np.dtype | None:
    return a.value.type.dtype if isinstance(a, Tracer) else getattr(a, "dtype", None)


def _narrow_target(args: list[Any], narrow: tuple[np.dtype, ...]) -> np.dtype | None:
    """The narrow dtype the tensor operands promote to, or None (nothing to do)."""
    if not any(_dtype(a) in narrow for a in args):  # the common case, kept cheap
        return None
    tensors = [a for a in args if is_tensor(a) and not is_python_scalar(a)]
    if not tensors:  # another library's array: shared first (tracer.with_user_loc), then here
        return None
    target = result_dtype(*tensors)
    return target if target in narrow else None


def accumulate_in_float32(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` computed in float32 when its operands are float16 or bfloat16; results in that."""
    return _via_float32(fn, _LOW)


def bfloat16_via_float32(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` computed in float32 when its operands are bfloat16 (no-op without ml_dtypes)."""
    return fn if BFLOAT16 is None else _via_float32(fn, (BFLOAT16,))
