"""float16 reductions and contractions accumulate in float32, as JAX's do.

A float16 sum of a few thousand values overflows or loses every small term when it is kept in
float16; mean, var and norms divide such sums. ``accumulate_in_float32`` wraps an op's public
function: when its tensor operands promote to float16, they are cast to float32, the op runs
in float32 and its float32 results are cast back to float16. The casts are ordinary ``astype``
nodes, so autodiff (the cotangents are cast back the same way) and fusion see them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from .core import is_python_scalar, is_tensor, result_dtype, type_of

HALF = np.dtype("float16")
ACCUMULATOR = np.dtype("float32")


def _half_result(args: list[Any]) -> bool:
    tensors = [a for a in args if is_tensor(a) and not is_python_scalar(a)]
    return bool(tensors) and result_dtype(*tensors) == HALF


def accumulate_in_float32(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` computed in float32 when its operands are float16; results returned in float16."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not _half_result([*args, *kwargs.values()]):
            return fn(*args, **kwargs)
        from .elementwise import astype  # local: elementwise imports the reduce modules

        def up(a: Any) -> Any:
            return astype(a, ACCUMULATOR) if is_tensor(a) and type_of(a).dtype == HALF else a

        def down(r: Any) -> Any:
            if isinstance(r, tuple):
                return tuple(down(x) for x in r)
            if is_tensor(r) and type_of(r).dtype == ACCUMULATOR:
                return astype(r, HALF)
            return r

        out = fn(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})
        return down(out)

    return wrapped
