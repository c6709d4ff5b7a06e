"""Source conversion ("autograph"): Python ``if``/``while``/``for`` on traced values become
gg.cond / gg.while_loop / gg.fori_loop / gg.scan inside ``gg.jit``.

The function's AST is rewritten once (cached per function): each ``if``/``while``/``for``
becomes a call to a helper in ``autograph_ops`` that decides *at run time* whether its
predicate or iterable is traced, so Python values keep Python semantics. The variables a
block assigns travel through generated ``get``/``set`` closures (``nonlocal``), so branches
and bodies trace as pure functions of them. Plain Python functions the code calls are
converted lazily through ``ag__.call``; library, builtin and gpugraph functions are not.
The generated code is compiled with the user's file name and line numbers, so tracebacks and
error messages point at the user's source. ``to_source(fn)`` shows it.
"""

from __future__ import annotations

import ast
import inspect
import os
import sysconfig
import types
import weakref
from collections.abc import Callable
from typing import Any

from . import autograph_loops, autograph_ops
from .autograph_ast import tail_returns
from .autograph_convert import _Converter, _relocate_missing, set_loop_options
from .autograph_ops import record
from .autograph_source import StaleSourceError, parse_def

__all__ = [
    "StaleSourceError",
    "call",
    "convert",
    "record",
    "set_loop_options",
    "to_source",
]

_PKG = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LIB_DIRS = tuple(
    os.path.abspath(p) + os.sep
    for k in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_paths().get(k))
)
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_NOT_CONVERTIBLE = object()


# -- converting functions ---------------------------------------------------------------------
def _convertible(f: Any) -> bool:
    if not isinstance(f, types.FunctionType) or hasattr(f, "__ag_tree__"):
        return False
    code = f.__code__
    if code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE):
        return False
    path = os.path.abspath(code.co_filename)
    return not (
        code.co_filename.startswith("<") or path.startswith(_PKG) or path.startswith(_LIB_DIRS)
    )


def _strip_def_time_exprs(fdef: ast.FunctionDef) -> None:
    """Defaults and annotations are evaluated where the ``def`` runs (our factory, where the
    names they use may not exist); the new function takes ``fn.__defaults__`` instead."""
    a = fdef.args
    a.defaults, a.kw_defaults = [], [None] * len(a.kwonlyargs)
    for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
        if arg is not None:
            arg.annotation = None
    fdef.returns = None


def _build(fn: types.FunctionType) -> types.FunctionType:
    fdef = parse_def(fn)
    _strip_def_time_exprs(fdef)
    tail_returns(fdef)
    conv = _Converter(fdef)
    fdef.body = [s for stmt in fdef.body for s in _as_list(conv.visit(stmt))]
    ast.fix_missing_locations(fdef)
    free = fn.__code__.co_freevars
    factory = ast.FunctionDef(
        "ag__factory",
        ast.arguments([], [ast.arg(n) for n in ("ag__", *free)], None, [], [], None, []),
        [fdef, ast.Return(ast.Name(fdef.name, ast.Load()))],
        [],
    )
    module = ast.Module([factory], [])
    ast.fix_missing_locations(module)
    _relocate_missing(module, fdef)
    ns: dict[str, Any] = {}
    exec(compile(module, fn.__code__.co_filename, "exec"), fn.__globals__, ns)
    inner = ns["ag__factory"](autograph_ops, *[None] * len(free)).__code__
    cells = dict(zip(free, fn.__closure__ or ()))
    closure = tuple(
        cells[n] if n in cells else types.CellType(_AG if n == "ag__" else None)
        for n in inner.co_freevars
    )
    new = types.FunctionType(inner, fn.__globals__, fn.__name__, fn.__defaults__, closure)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__dict__.update(fn.__dict__)
    new.__ag_tree__ = fdef  # unparsed on demand by to_source (it costs a millisecond)
    new.__ag_conversions__ = conv.converted
    new.__wrapped__ = fn
    return new


def _as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]


class _AgNamespace(types.SimpleNamespace):
    pass


def convert(fn: Callable) -> Callable:
    """The converted version of a plain Python function (cached); other callables as they
    are. A function whose source cannot be read runs unconverted."""
    if not isinstance(fn, types.FunctionType):
        return fn
    got = _CACHE.get(fn)
    if got is None:
        got = _NOT_CONVERTIBLE
        if _convertible(fn):
            try:
                got = _build(fn)
            except (OSError, TypeError, ValueError, SyntaxError, NameError):
                pass  # no readable (or no unambiguous) source: run it as written
        _CACHE[fn] = got
    return fn if got is _NOT_CONVERTIBLE else got


def call(f: Any) -> Any:
    """What converted code calls in place of ``f``: its converted version for user functions
    and methods, gg.cond & co. converting the functions passed to them, ``f`` itself for
    everything else."""
    if isinstance(f, types.MethodType) and _convertible(f.__func__):
        return types.MethodType(convert(f.__func__), f.__self__)
    if isinstance(f, types.FunctionType):
        region = _region_ops().get(f)
        return region if region is not None else convert(f)
    return f


def _convert_arg(a: Any) -> Any:
    if isinstance(a, (types.FunctionType, types.MethodType)):
        return call(a)
    if isinstance(a, (list, tuple)) and any(callable(b) for b in a):  # gg.switch's branches
        return type(a)(_convert_arg(b) for b in a)
    return a


_REGIONS: dict[Any, Callable] = {}


def _region_ops() -> dict[Any, Callable]:
    """gg.cond / switch / while_loop / fori_loop / scan, each wrapped so that the user
    functions passed to it are converted too (a Python `if` in a scan body converts)."""
    if not _REGIONS:
        from . import control_flow

        def wrap(op: Callable) -> Callable:
            def run(*args: Any, **kwargs: Any) -> Any:
                args = tuple(_convert_arg(a) for a in args)
                return op(*args, **{k: _convert_arg(v) for k, v in kwargs.items()})

            run.__name__ = run.__qualname__ = op.__name__
            return run

        for name in control_flow.__all__:
            op = getattr(control_flow, name)
            _REGIONS[op] = wrap(op)
    return _REGIONS


def to_source(fn: Callable) -> str:
    """The converted source of ``fn`` (a function or a gg.jit function)."""
    fn = getattr(fn, "fn", fn)
    conv = convert(fn)
    if conv is fn:
        raise ValueError(f"{getattr(fn, '__name__', fn)!r} cannot be converted (no source?)")
    return ast.unparse(conv.__ag_tree__)


_AG = _AgNamespace(**{**vars(autograph_ops), **vars(autograph_loops)})
_AG.call = call
