"""Tracers and trace contexts: how op calls on symbolic values become graph nodes.

A Trace owns a GraphBuilder. Traces nest (grad inside jit, grad of grad); a tracer of an outer
trace used inside an inner one is captured as an extra input of the inner graph, so closures
over traced values work.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import sys
import threading
import warnings
from typing import Any

import numpy as np

from .errors import (
    CapturedArrayWarning,
    EscapedTracerError,
    GpuGraphError,
    TraceError,
    UnsupportedError,
)
from .interop import from_dlpack, is_foreign_array
from .ir import GraphBuilder, TensorType, Value

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_local = threading.local()

# A concrete array larger than this that a jitted function closes over (or otherwise uses
# without taking it as an argument) is baked into the graph as a constant: later changes to it
# are ignored, as in JAX. Above this size that is rarely intended, so gg.jit warns
# (CapturedArrayWarning). 1 MiB is a 512x512 float32 matrix.
CAPTURE_WARN_BYTES = 1 << 20


# co_filename -> (inside the gpugraph package, base name), for absolute file names only: a
# relative name's meaning changes with the working directory, so it is resolved each time.
# user_loc runs once per traced op and walks several frames; abspath on each was most of it.
_FILES: dict[str, tuple[bool, str]] = {}


def _file_info(fname: str) -> tuple[bool, str]:
    info = _FILES.get(fname)
    if info is None:
        info = (os.path.abspath(fname).startswith(_PKG_DIR + os.sep), os.path.basename(fname))
        if os.path.isabs(fname):
            _FILES[fname] = info
    return info


# A source location that stands in for the stack's: an importer tracing converted nodes (an
# ONNX node) names the node, since the innermost user frame is only where the model was called.
_SOURCE_LOC: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gpugraph_source_loc", default=None
)


@contextlib.contextmanager
def source_location(loc: str):
    """Ops traced inside the block report ``loc`` as their source location."""
    token = _SOURCE_LOC.set(loc)
    try:
        yield
    finally:
        _SOURCE_LOC.reset(token)


def user_loc() -> str:
    """file:line of the innermost stack frame outside the gpugraph package (or the
    ``source_location`` in effect)."""
    loc = _SOURCE_LOC.get()
    if loc is not None:
        return loc
    frame = sys._getframe(1)
    while frame is not None:
        inside, base = _file_info(frame.f_code.co_filename)
        if not inside:
            return f"{base}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def _user_stacklevel() -> int:
    """The ``stacklevel`` for warnings.warn called by our caller that makes the warning point
    at the innermost frame outside the gpugraph package."""
    frame, level = sys._getframe(2), 2
    while frame is not None and _file_info(frame.f_code.co_filename)[0]:
        frame, level = frame.f_back, level + 1
    return level


class MissingAttributeError(UnsupportedError, AttributeError):
    """An ndarray attribute or method that traced arrays do not have (hasattr() sees False)."""


class ZeroDimError(TraceError, TypeError):
    """len() of, or iteration over, a 0-d traced array (a TypeError in NumPy too)."""


def with_user_loc(fn):
    """Wrap a public op function so that a user error raised before ``bind`` (an axis out of
    range, a bad index, a bad shape argument) names the user's file:line like bind's do."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GpuGraphError as e:
            # Arrays of other libraries (torch, JAX ...) are shared as NumPy/CuPy arrays and
            # the call retried: converting only after a refusal keeps the common path free.
            shared = _share_foreign(args, kwargs)
            if shared is not None:
                return wrapper(*shared[0], **shared[1])
            if " (at " in str(e):
                raise
            raise type(e)(f"{e} (at {user_loc()})") from None

    return wrapper


def _share_foreign(args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    """``args`` and ``kwargs`` with foreign arrays (also inside a list or tuple argument)
    replaced by NumPy/CuPy arrays sharing their memory; None when there are none."""
    found = False

    def conv(x):
        nonlocal found
        if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
            return type(x)(conv(v) for v in x)
        if is_foreign_array(x):
            found = True
            return from_dlpack(x)
        return x

    new_args, new_kwargs = tuple(conv(a) for a in args), {k: conv(v) for k, v in kwargs.items()}
    return (new_args, new_kwargs) if found else None


def trace_stack() -> list[Trace]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def current_trace() -> Trace | None:
    stack = trace_stack()
    return stack[-1] if stack else None


class Trace:
    """One level of tracing. Use as a context manager while the user function runs."""

    def __init__(self, name: str = "trace") -> None:
        self.name = name
        self.builder = GraphBuilder()
        parent = current_trace()
        self.level = 0 if parent is None else parent.level + 1
        self.captures: list[tuple[Any, Value]] = []  # (outer tracer, inner input value)
        self._captured: dict[int, Value] = {}
        self.active = False
        self.loc = user_loc()  # where the user started this trace, for escaped-tracer errors
        self._warned: set[int] = set()  # ids of captured arrays already warned about
        # Eager autodiff traces on concrete arguments: the known value of each Value so far
        # (None in a jit trace, where values are abstract). Python control flow then follows
        # the actual values and the graph records the path taken, as in JAX/PyTorch eager.
        self.concrete: dict[Value, Any] | None = None
        self._n_evaluated = 0

    def known_value(self, v: Value) -> Any:
        """The concrete value of ``v`` (a concrete trace only): the nodes recorded since the
        last call are evaluated eagerly, each once."""
        from .ops.core import _eager
        from .ops.registry import get_op

        env = self.concrete
        nodes = self.builder.nodes
        for node in nodes[self._n_evaluated :]:
            if node.op == "constant":
                outs: Any = node.attrs["value"]
            else:
                outs = _eager(get_op(node.op), [env[i] for i in node.inputs], node.attrs)
            env.update(zip(node.outputs, outs if isinstance(outs, tuple) else (outs,)))
        self._n_evaluated = len(nodes)
        return env[v]

    def __enter__(self) -> Trace:
        trace_stack().append(self)
        self.active = True
        return self

    def __exit__(self, *exc) -> None:
        popped = trace_stack().pop()
        assert popped is self
        self.active = False

    def new_input(self, type: TensorType, name: str | None = None) -> Tracer:
        return Tracer(self, self.builder.add_input(type, name))

    def lift(self, x: Any) -> Value:
        """The Value inside this trace for x: own tracer, captured outer tracer or constant."""
        if isinstance(x, Tracer):
            if x.trace is self:
                return x.value
            if not x.trace.active:
                raise escaped_error(x)
            if x.trace.level > self.level:
                raise TraceError("a value from an inner trace was used in an outer one")
            key = id(x)
            if key not in self._captured:
                v = self.builder.add_input(x.value.type, name="capture")
                self._captured[key] = v
                self.captures.append((x, v))
            return self._captured[key]
        from .ops.core import constant_array

        arr = constant_array(x)
        if arr is x:  # snapshot: the graph must not see later writes to the caller's array
            arr = arr.copy()
        if arr.nbytes > CAPTURE_WARN_BYTES:
            self._warn_captured(x, arr)
        t = TensorType(arr.shape, arr.dtype)
        node = self.builder.add_node("constant", [], {"value": arr}, [t], user_loc())
        return node.output

    def _warn_captured(self, x: Any, arr: np.ndarray) -> None:
        """Warn once per array and jit trace; eager grad/vjp re-trace on every call, so there
        the array is read afresh and nothing is frozen."""
        root = trace_stack()[0]
        if root.name != "jit" or id(x) in root._warned:
            return
        root._warned.add(id(x))
        warnings.warn(
            f"a jitted function uses a {TensorType(arr.shape, arr.dtype)} array "
            f"({arr.nbytes / 2**20:.1f} MiB) that is not one of its arguments (at {user_loc()}). "
            "It is copied into the graph as a constant when the function is traced, so later "
            "changes to the array are ignored and the graph holds a copy. Pass it as an "
            "argument instead, or filter gpugraph.CapturedArrayWarning if it is a true constant",
            CapturedArrayWarning,
            stacklevel=_user_stacklevel(),
        )


def escaped_error(x: Tracer) -> EscapedTracerError:
    """The error for using ``x`` after its trace ended, naming where it was made."""
    v = x.value
    made = f"by {v.node.op} at {v.node.loc}" if v.node is not None else f"as input {v.name!r}"
    return EscapedTracerError(
        f"escaped tracer: a traced value ({v.type}) made {made} in the {x.trace.name} trace "
        f"started at {x.trace.loc} was used at {user_loc()}, after that trace had ended. A "
        "traced function must not store its traced values outside (in a global, an outer "
        "list or an object attribute) to use later; return them as outputs instead"
    )


def innermost_trace(args) -> Trace | None:
    best: Trace | None = None
    for a in args:
        if isinstance(a, Tracer):
            if not a.trace.active:
                raise escaped_error(a)
            if best is None or a.trace.level > best.level:
                best = a.trace
    if best is not None and getattr(_local, "branch_depth", 0):
        cur = current_trace()  # a cond branch: its ops stay in it (see tracing_branch)
        if cur is not None and cur.level > best.level:
            return cur
    return best


class tracing_branch:
    """While a gg.cond / gg.switch branch is traced, an op on values of an outer trace only
    is recorded in the branch (reading them as captures) instead of in the outer trace: it
    must run only when its branch is taken. Hoisted out, it would run always, and its
    derivative (say the infinite one of ``1 / x`` at 0 in the branch not taken) would reach
    the gradient as ``0 * inf = nan``. Loop bodies keep hoisting such loop-invariant ops."""

    def __enter__(self) -> None:
        _local.branch_depth = getattr(_local, "branch_depth", 0) + 1

    def __exit__(self, *exc) -> None:
        _local.branch_depth -= 1


class Tracer:
    """A symbolic array inside a Trace. Behaves like an ndarray for the common operations."""

    __slots__ = ("trace", "value")

    def __init__(self, trace: Trace, value: Value) -> None:
        self.trace = trace
        self.value = value

    # -- metadata ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.value.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self.value.type.size

    def __len__(self) -> int:
        if not self.shape:
            raise ZeroDimError(f"len() of a 0-d traced array (at {user_loc()})")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"Tracer<{self.value.type}>"

    # -- things a static graph cannot do ----------------------------------------------
    def __bool__(self) -> bool:
        if self.trace.concrete is not None:
            return bool(self.trace.known_value(self.value))
        raise TraceError(
            f"the truth value of a traced array ({self.value.type}) is not known while "
            f"tracing (at {user_loc()}): a Python `if`/`while` cannot depend on it. Pass the "
            "value as a static argument (static_argnums) or use gg.where for a data-dependent "
            "choice. (gg.jit converts `if`/`while`/`for` on traced values into gg.cond / "
            "gg.while_loop in functions whose source it can read, autograph=True; code it does "
            "not convert: functions passed to gg.cond/gg.scan/gg.grad outside jit, code defined by "
            "exec, library code)"
        )

    def __array__(self, *a, **k):
        raise TraceError(
            f"a traced array ({self.value.type}) cannot be converted to a concrete array "
            f"inside a traced function (at {user_loc()}); use gg ops instead of NumPy calls"
        )

    def _concrete(self, what: str):
        if self.trace.concrete is not None:  # eager autodiff: the value is known (a constant
            x = self.trace.known_value(self.value)  # of the recorded path, as .item() in torch)
            return {"float": float, "int": int}.get(what, np.asarray(x).__index__)(x)
        raise TraceError(
            f"a traced array ({self.value.type}) cannot be converted to a Python {what} while "
            f"tracing (at {user_loc()}): its value is not known yet. Values that decide shapes, "
            "axes, ranges or Python control flow must be static: pass them with static_argnums "
            "/ static_argnames (a Python number argument is traced, so it cannot be used there)"
        )

    def __float__(self):
        return self._concrete("float")

    def __int__(self):
        return self._concrete("int")

    def __index__(self):
        return self._concrete("int (an index, a shape or a range bound)")

    def __iter__(self):
        if not self.shape:
            raise ZeroDimError(f"iteration over a 0-d traced array (at {user_loc()})")
        return (self[i] for i in range(self.shape[0]))

    def __setitem__(self, index, value):
        raise UnsupportedError(
            f"traced arrays are immutable: `x[...] = value` cannot update {self.value.type} in "
            f"place (at {user_loc()}). Build the new array with JAX-style "
            "`y = x.at[...].set(value)` (or .add/.mul/.min/.max), or gg.where"
        )


# NumPy ufuncs whose gpugraph op has another name; the rest map by their own name.
UFUNC_NAMES = {"absolute": "abs", "rint": "round"}
# Bitwise ufuncs that equal a logical gg op only on bool operands.
BOOL_UFUNCS: dict[str, str] = {}  # none left: gg's bitwise ops take bools (as the logical ops)
# ufunc.reduce spellings and the gg reduction that does the same.
UFUNC_REDUCTIONS = {"add": "sum", "maximum": "max", "minimum": "min"}


def _is_bool(x: Any) -> bool:
    return isinstance(x, bool) or getattr(x, "dtype", None) == np.dtype(bool)


# Python operators that give a Python number on Python numbers
_PY_ARITH = [
    f"__{r}{m}__"
    for m in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow")
    for r in ("", "r")
] + ["__neg__", "__abs__"]


def _is_weak(x: Any) -> bool:
    return type(x) in (bool, int, float) or (isinstance(x, Tracer) and x.value.type.weak)


def _python_number_result(op):
    """Arithmetic whose operands are all weakly typed (Python numbers, or tracers that stand
    for one: a loop counter, a Python scalar argument) gives a weakly typed scalar, as Python
    gives a Python number (and JAX a weak type): ``x_f32 * (n + 1)`` stays float32."""

    def run(*args):
        out = op(*args)
        t = out.value.type if isinstance(out, Tracer) else None
        if t is not None and not t.weak and t.shape == () and t.dtype.kind in "if":
            if all(_is_weak(a) for a in args):
                out.value.type = TensorType((), t.dtype, weak=True)
        return out

    run.__name__ = getattr(op, "__name__", "op")
    return run


def install_tracer_methods(namespace: dict) -> None:
    """Attach arithmetic and ndarray-style methods (called once the ops exist)."""
    ns = namespace

    def rev(fn):
        return lambda self, other: fn(other, self)

    def getitem(self, index):
        return ns["getitem"](self, index)

    methods = {
        "__add__": ns["add"],
        "__radd__": rev(ns["add"]),
        "__sub__": ns["subtract"],
        "__rsub__": rev(ns["subtract"]),
        "__mul__": ns["multiply"],
        "__rmul__": rev(ns["multiply"]),
        "__truediv__": ns["divide"],
        "__rtruediv__": rev(ns["divide"]),
        "__pow__": ns["power"],
        "__rpow__": rev(ns["power"]),
        "__matmul__": ns["matmul"],
        "__rmatmul__": rev(ns["matmul"]),
        "__neg__": ns["negative"],
        "__pos__": lambda self: self,
        "__abs__": ns["abs"],
        "__lt__": ns["less"],
        "__le__": ns["less_equal"],
        "__gt__": ns["greater"],
        "__ge__": ns["greater_equal"],
        "__eq__": ns["equal"],
        "__ne__": ns["not_equal"],
        # NumPy's meaning: bitwise on integers, logical on bools
        "__and__": ns["bitwise_and"],
        "__rand__": rev(ns["bitwise_and"]),
        "__or__": ns["bitwise_or"],
        "__ror__": rev(ns["bitwise_or"]),
        "__xor__": ns["bitwise_xor"],
        "__rxor__": rev(ns["bitwise_xor"]),
        "__invert__": ns["bitwise_not"],
        "__floordiv__": ns["floor_divide"],
        "__rfloordiv__": rev(ns["floor_divide"]),
        "__mod__": ns["remainder"],
        "__rmod__": rev(ns["remainder"]),
        "__divmod__": lambda self, other: (
            ns["floor_divide"](self, other),
            ns["remainder"](self, other),
        ),
        "__rdivmod__": lambda self, other: (
            ns["floor_divide"](other, self),
            ns["remainder"](other, self),
        ),
        "__getitem__": getitem,
        "sum": ns["sum"],
        "mean": ns["mean"],
        "max": ns["max"],
        "min": ns["min"],
        "argmax": ns["argmax"],
        **{
            m: ns[m]
            for m in ("prod", "any", "all", "std", "argmin", "cumsum", "cumprod", "clip", "round")
        },
        "ravel": ns["ravel"],
        "astype": ns["astype"],
        "squeeze": ns["squeeze"],
        "reshape": lambda self, *shape: ns["reshape"](
            self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        ),
        "transpose": lambda self, *axes: ns["transpose"](
            self,
            None
            if not axes
            else (axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes),
        ),
        "flatten": lambda self: ns["reshape"](self, (-1,)),
        "T": property(lambda self: ns["transpose"](self)),
    }

    def unsupported(name: str, sym: str):
        def method(self, *other):
            raise UnsupportedError(
                f"{name} (the `{sym}` operator) is not supported on traced arrays (at {user_loc()})"
            )

        return method

    for dunder, name, sym in (
        ("lshift", "left_shift", "<<"),
        ("rshift", "right_shift", ">>"),
    ):
        methods[f"__{dunder}__"] = methods[f"__r{dunder}__"] = unsupported(name, sym)
    for m in _PY_ARITH:
        methods[m] = _python_number_result(methods[m])
    # JAX's functional updates: x.at[idx].set(v) and friends (gpugraph/ops/select.py)
    methods["at"] = property(lambda self: ns["at"](self))
    for k, v in methods.items():
        setattr(Tracer, k, v if isinstance(v, property) else with_user_loc(v))

    def missing(self, name: str):
        if name.startswith("__"):  # protocol probes (copy, pickle, NumPy) get the plain error
            raise AttributeError(name)
        hint = f"; use gg.{name}(x, ...)" if name in ns else ""
        raise MissingAttributeError(
            f"traced arrays have no attribute or method {name!r}{hint} (at {user_loc()})"
        )

    Tracer.__getattr__ = missing

    def array_function(self, func, types, args, kwargs):
        """NumPy functions (np.sum, np.reshape, ...) on a traced array: np.shape/ndim/size
        answer from the type; the rest raise an error naming the function and the gg op."""
        name = getattr(func, "__name__", repr(func))
        if func in (np.shape, np.ndim, np.size) and len(args) == 1 and not kwargs:
            a = args[0]
            if isinstance(a, Tracer):
                return {"shape": a.shape, "ndim": a.ndim, "size": a.size}[name]
        hint = f"; use gg.{name}" if name in ns else ""
        raise TraceError(
            f"NumPy function np.{name} cannot run on a traced array ({self.value.type}) inside "
            f"a traced function (at {user_loc()}){hint}"
        )

    Tracer.__array_function__ = array_function

    def array_ufunc(self, ufunc, method, *inputs, **kwargs):
        """NumPy ufuncs on traced arrays (np.exp(x), ndarray + x, ndarray @ x): the ones
        gpugraph has become its ops; the rest raise an error naming the gg op to use."""
        name = ufunc.__name__
        if method == "__call__" and not kwargs:
            op = UFUNC_NAMES.get(name, name)
            if name in BOOL_UFUNCS and all(_is_bool(x) for x in inputs):
                op = BOOL_UFUNCS[name]
            if op in ns and op not in BOOL_UFUNCS:
                return ns[op](*inputs)
        loc = user_loc()
        if method != "__call__":
            red = UFUNC_REDUCTIONS.get(name) if method == "reduce" else None
            hint = f"; use gg.{red}" if red else ""
            raise UnsupportedError(
                f"np.{name}.{method} is not supported on traced arrays (at {loc}){hint}"
            )
        if kwargs:
            raise UnsupportedError(
                f"np.{name} with {', '.join(f'{k}=' for k in kwargs)} is not supported on "
                f"traced arrays (at {loc}): traced arrays cannot be written into, and ufunc "
                f"options have no graph form; call the gg op and use its result"
            )
        if name in BOOL_UFUNCS:
            why = f"np.{name} on non-bool traced arrays is not supported (at {loc})"
        else:
            why = f"NumPy ufunc np.{name} has no gpugraph op, so it cannot run on a traced array"
            why += f" (at {loc}); write it with gg ops"
        raise UnsupportedError(why)

    Tracer.__array_ufunc__ = array_ufunc
    Tracer.__hash__ = object.__hash__
