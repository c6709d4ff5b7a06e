"""bind(): the single entry point of every op call, eager or traced; dtype promotion."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DTypeError, GpuGraphError, UnsupportedError
from ..interop import from_dlpack, is_foreign_array
from ..ir import BFLOAT16, SUPPORTED_DTYPES, TensorType, is_float, unsupported_dtype_message
from ..tracer import Tracer, current_trace, innermost_trace, user_loc
from .registry import OpDef, get_op

DEFAULT_FLOAT = np.dtype("float32")
DEFAULT_INT = np.dtype("int64")

try:  # CuPy is optional; eager calls on CuPy arrays stay on the device
    import cupy as _cupy

    _CUPY_ARRAY: tuple[type, ...] = (_cupy.ndarray,)
except Exception:  # pragma: no cover - depends on the machine
    _cupy = None
    _CUPY_ARRAY = ()


def is_cupy(x: Any) -> bool:
    return bool(_CUPY_ARRAY) and isinstance(x, _CUPY_ARRAY)


def is_array(x: Any) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) or is_cupy(x)


def is_tensor(x: Any) -> bool:
    return isinstance(x, Tracer) or is_array(x)


def is_python_scalar(x: Any) -> bool:
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def array_module(args) -> Any:
    return _cupy if any(is_cupy(a) for a in args) else np


def check_dtype(dtype: Any, what: str) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise DTypeError(f"{what}: {dtype!r} is not a dtype") from None
    if dt not in SUPPORTED_DTYPES:
        raise DTypeError(f"{what}: {unsupported_dtype_message(dt)}")
    return dt


# TensorTypes of concrete operands, by (shape, dtype) or Python scalar type: eager ops ask for
# the same few types again and again, and building one (with its checks) costs more than the
# NumPy op on a small array. Bounded: cleared when it grows past _TYPE_CACHE_SIZE.
_TYPE_CACHE: dict[Any, TensorType] = {}
_TYPE_CACHE_SIZE = 4096


def type_of(x: Any, what: str = "argument") -> TensorType:
    if isinstance(x, Tracer):
        return x.value.type
    key = type(x) if is_python_scalar(x) else (x.shape, x.dtype) if is_array(x) else None
    if key is None:
        return _not_a_tensor(x, what)
    t = _TYPE_CACHE.get(key)
    if t is None:
        if len(_TYPE_CACHE) >= _TYPE_CACHE_SIZE:
            _TYPE_CACHE.clear()
        if is_python_scalar(x):
            t = TensorType((), scalar_default_dtype(x), weak=True)
        else:
            t = TensorType(x.shape, check_dtype(x.dtype, what))
        _TYPE_CACHE[key] = t
    return t


def _not_a_tensor(x: Any, what: str) -> TensorType:
    if isinstance(x, complex):
        raise UnsupportedError(f"{what}: complex numbers are not supported")
    raise GpuGraphError(f"{what}: expected an array or a number, got {type(x).__name__}")


def scalar_default_dtype(x: Any) -> np.dtype:
    if isinstance(x, bool):
        return np.dtype(bool)
    if isinstance(x, int):
        return DEFAULT_INT
    return DEFAULT_FLOAT


def constant_array(x: Any) -> np.ndarray:
    """A host NumPy array for a constant captured by a trace."""
    if is_foreign_array(x):  # a snapshot: the graph must not see later writes to x
        x = from_dlpack(x)
        return x.get() if is_cupy(x) else np.array(x)
    if is_cupy(x):
        x = x.get()
    if is_python_scalar(x):
        return np.asarray(x, dtype=scalar_default_dtype(x))
    arr = np.asarray(x)
    check_dtype(arr.dtype, "constant")
    return arr


def result_dtype(*xs: Any) -> np.dtype:
    """NumPy 2 promotion with Python scalars weak; all-scalar operands get gpugraph defaults."""
    strong = [type_of(x).dtype for x in xs if not _is_weak(x)]
    weak = [_weak_stand_in(x) for x in xs if _is_weak(x)]
    if not strong:
        return max((scalar_default_dtype(w) for w in weak), key=lambda d: "bif".index(d.kind))
    if BFLOAT16 is not None and BFLOAT16 in strong:
        return _bfloat16_result(strong)
    return np.result_type(*strong, *weak)


def _bfloat16_result(strong: list[np.dtype]) -> np.dtype:
    """JAX's promotion for bfloat16 (NumPy has none that makes sense: ml_dtypes promotes it
    with a Python float to float64 and not at all with int32 or float16): with bools, ints
    and Python numbers it stays bfloat16; with float16 it is float32; a wider float wins."""
    floats = [d for d in strong if d.kind == "f"]
    if not floats:
        return BFLOAT16
    widest = np.result_type(*floats)
    return np.dtype(np.float32) if widest == np.float16 else widest


def _is_weak(x: Any) -> bool:
    return is_python_scalar(x) or (isinstance(x, Tracer) and x.value.type.weak)


def _weak_stand_in(x: Any) -> Any:
    """A Python scalar of x's kind, which NumPy's result_type treats as weak."""
    return x if is_python_scalar(x) else {"b": False, "i": 0, "f": 0.0}[x.dtype.kind]


def promote(*xs: Any, dtype: Any = None) -> list[Any]:
    """Bring operands to one dtype: scalars become constants of it, tensors are cast."""
    if dtype is None and _same_strong_dtype(xs):
        return list(xs)  # what the rule below gives: nothing to cast (the common case)
    target = np.dtype(dtype) if dtype is not None else result_dtype(*xs)
    from .elementwise import astype  # local: elementwise imports this module

    out = []
    for x in xs:
        if is_python_scalar(x):
            out.append(np.asarray(x, dtype=target)[()])
        elif type_of(x).dtype != target or type_of(x).weak:
            out.append(astype(x, target))
        else:
            out.append(x)
    return out


def _same_strong_dtype(xs: tuple) -> bool:
    """All operands traced, none weak, all of one dtype: their result dtype is that dtype
    (NumPy's result_type of one dtype with itself; bfloat16 with itself stays bfloat16)."""
    dt = None
    for x in xs:
        if x.__class__ is not Tracer:
            return False
        t = x.value.type
        if t.weak or (dt is not None and t.dtype != dt):
            return False
        dt = t.dtype
    return dt is not None


def to_float(x: Any) -> Any:
    """Operand of a floating-point op: ints become float64 and bools float32 (as NumPy)."""
    t = type_of(x)
    if is_float(t.dtype):
        return x
    if is_python_scalar(x):
        return np.asarray(x, dtype=DEFAULT_FLOAT)[()]
    from .elementwise import astype

    wide = t.dtype.kind in "iu" and not t.weak  # a weak int stands for a Python int: as above
    return astype(x, np.float64 if wide else DEFAULT_FLOAT)


def _with_loc(err: GpuGraphError, loc: str) -> GpuGraphError:
    return type(err)(f"{err} (at {loc})")


def bind(name: str, *args: Any, **attrs: Any) -> Any:
    """Apply op ``name``: record a node if any operand is traced, else compute eagerly."""
    opdef = get_op(name)
    if BFLOAT16 is not None and opdef.family in _VIA_FLOAT32 and _has_bfloat16(args):
        return _bind_via_float32(name, args, attrs)
    trace = innermost_trace(args)
    if trace is None and not args:
        trace = current_trace()  # creation ops inside a traced function become nodes
    if trace is None:
        return _eager(opdef, args, attrs)
    values = [trace.lift(a) for a in args]
    loc = user_loc()
    try:
        out_types = opdef.infer([v.type for v in values], **attrs)
    except GpuGraphError as e:
        raise _with_loc(e, loc) from None
    node = trace.builder.add_node(name, values, attrs, out_types, loc)
    outs = tuple(Tracer(trace, v) for v in node.outputs)
    return outs[0] if len(outs) == 1 else outs


# bfloat16 operands of these families are cast to float32, the op runs in float32 and its
# float32 results are rounded to bfloat16 (as ml_dtypes' and JAX's CPU loops compute): every
# op rule, kernel template and backend then only ever sees float32, and bfloat16 values exist
# only as inputs and outputs of ``astype`` (whose CUDA form is __nv_bfloat16, codegen/cuda.py).
_VIA_FLOAT32 = frozenset({"elementwise", "reduce", "linalg", "shape", "index", "nondiff"})


def _has_bfloat16(args: tuple) -> bool:
    for a in args:
        dt = a.value.type.dtype if isinstance(a, Tracer) else getattr(a, "dtype", None)
        if dt == BFLOAT16:
            return True
    return False


def _bind_via_float32(name: str, args: tuple, attrs: dict) -> Any:
    from .elementwise import astype  # local: elementwise imports this module

    if name == "astype":
        return bind_astype(args[0], attrs["dtype"])
    f32 = np.dtype(np.float32)
    ins = [astype(a, f32) if is_tensor(a) and type_of(a).dtype == BFLOAT16 else a for a in args]
    out = bind(name, *ins, **attrs)
    outs = out if isinstance(out, tuple) else (out,)
    back = tuple(astype(r, BFLOAT16) if type_of(r).dtype == f32 else r for r in outs)
    return back if isinstance(out, tuple) else back[0]


def bind_astype(x: Any, dtype: np.dtype) -> Any:
    """The one op that takes bfloat16 as it is: the cast, recorded or computed directly."""
    opdef = get_op("astype")
    trace = innermost_trace((x,))
    if trace is None:
        return _eager(opdef, (x,), {"dtype": dtype})
    value = trace.lift(x)
    (t,) = opdef.infer([value.type], dtype=dtype)
    node = trace.builder.add_node("astype", [value], {"dtype": dtype}, [t], user_loc())
    return Tracer(trace, node.output)


def _eager(opdef: OpDef, args: tuple, attrs: dict) -> Any:
    try:
        types = [type_of(a, f"{opdef.name} operand {i}") for i, a in enumerate(args)]
        out_types = opdef.infer(types, **attrs)
    except GpuGraphError as e:
        raise _with_loc(e, user_loc()) from None
    xp = array_module(args)
    arrays = [xp.asarray(a) if not is_array(a) or xp is not np else a for a in args]
    result = opdef.impl(xp, *arrays, **attrs)
    results = result if isinstance(result, tuple) else (result,)
    fixed = tuple(
        r if getattr(r, "dtype", None) == t.dtype else xp.asarray(r).astype(t.dtype)
        for r, t in zip(results, out_types)
    )
    return fixed[0] if len(fixed) == 1 else fixed


def run_node_impl(xp: Any, node_op: str, arrays, attrs: dict) -> tuple:
    """Run an op's impl on concrete arrays (used by constant folding and simple backends)."""
    result = get_op(node_op).impl(xp, *arrays, **attrs)
    return result if isinstance(result, tuple) else (result,)
