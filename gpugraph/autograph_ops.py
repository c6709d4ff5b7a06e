"""Run-time helpers that converted code calls (``ag__.if_stmt`` and friends).

Each helper decides at run time whether its predicate or iterable is traced: on Python values
it runs plain Python (so loops over Python values unroll as before), on tracers it builds the
explicit op (gg.cond, gg.while_loop, gg.fori_loop, gg.scan). State travels through
``get_vars()`` / ``set_vars(values)`` closures the converter generates over the variables a
block assigns, so the branches and bodies can be traced as pure functions of that state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .autograph_ast import RETVAL
from .errors import DTypeError, ShapeError, TraceError
from .ops.core import is_array, is_python_scalar
from .pytree import flatten
from .tracer import Tracer, user_loc

_local = threading.local()


class Undefined:
    """The value of a variable that has no value yet where a converted block starts. Left in
    a variable after a converted loop that ran zero times (a loop target), it raises a
    TraceError naming the variable on any use, as Python's NameError would."""

    __slots__ = ("name", "why")

    def __init__(self, name: str, why: str = "") -> None:
        self.name, self.why = name, why

    def __repr__(self) -> str:
        return f"<undefined {self.name}>"

    def _use(self, *_: Any, **__: Any) -> Any:
        raise TraceError(
            f"variable {self.name!r} has no value here: {self.why or 'it is unbound'} (at "
            f"{user_loc()})"
        )

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        self._use()


for _m in (
    "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift lt le gt ge "
    "radd rsub rmul rtruediv rfloordiv rmod rpow rmatmul rand ror rxor "
    "neg pos abs invert bool int float index len iter getitem call array"
).split():
    setattr(Undefined, f"__{_m}__", Undefined._use)


def ret(value: Any) -> Any:
    """A returned value (or tuple of them) that is an ``Undefined`` raises its error."""
    for v in value if type(value) is tuple else (value,):
        if isinstance(v, Undefined):
            v._use()
    return value


def lds(scope: dict, names: tuple[str, ...]) -> tuple:
    """The current values of ``names`` in a frame's locals(), ``Undefined`` where unbound."""
    return tuple(scope[n] if n in scope else Undefined(n) for n in names)


# -- conversion log (for explain()) -------------------------------------------------------
class record:
    """Collect the conversions made while a jit traces: ``with record(on) as notes: ...``;
    ``on`` says whether autograph is on for this trace (``converting()``)."""

    def __init__(self, on: bool = True) -> None:
        self.on = on

    def __enter__(self) -> list[str]:
        self.prev = getattr(_local, "notes", None), getattr(_local, "on", False)
        _local.notes, _local.on = [], self.on
        return _local.notes

    def __exit__(self, *exc) -> None:
        _local.notes, _local.on = self.prev


def converting() -> bool:
    """Whether a gg.jit trace with autograph on is running (gg.grad inside it then converts
    the function it differentiates)."""
    return getattr(_local, "on", False)


# user locations of the loops autograph made into while_loops: "while" or "for" (a range with
# a traced bound), so a reverse-mode error there says how to bound the user's own loop
_LOOP_ORIGIN: dict[str, str] = {}


def mark_loop(loc: str, kind: str) -> None:
    _LOOP_ORIGIN[loc] = kind


def unbounded_loop_advice(loc: str | None) -> str:
    """How to bound the trip count of the while_loop at ``loc`` for reverse mode."""
    kind = _LOOP_ORIGIN.get(loc or "")
    if kind == "while":
        return (
            "this is a Python `while` that gg.jit converted: make "
            "`gg.autograph.set_loop_options(max_steps=N)` the first statement of its body (the "
            "tape then holds at most N steps)"
        )
    if kind == "for":
        return (
            "this is a Python `for` over a range with a traced bound that gg.jit converted: make "
            "the bound static (static_argnums), or write a `while` loop with "
            "`gg.autograph.set_loop_options(max_steps=N)` as the first statement of its body"
        )
    return (
        "pass max_steps=N to gg.while_loop (the tape then holds at most N steps), or use "
        "fori_loop with static bounds or scan"
    )


def notes_mark(back_to: int | None = None) -> int:
    """How many conversions are noted; with ``back_to``, forget the ones after that (a
    conversion attempt that was given up)."""
    notes = getattr(_local, "notes", None)
    if notes is None:
        return 0
    if back_to is not None:
        del notes[back_to:]
    return len(notes)


def _note(what: str, loc: str) -> None:
    notes = getattr(_local, "notes", None)
    if notes is not None and f"{loc}: {what}" not in notes:
        notes.append(f"{loc}: {what}")


# -- predicates ---------------------------------------------------------------------------
def _to_pred(x: Any, what: str, loc: str) -> Any:
    """A traced truth value as a boolean scalar tracer (``x != 0`` for numbers)."""
    if x.shape != ():
        raise ShapeError(
            f"the condition of {what} is a traced array of shape {x.shape}; Python truth of an "
            f"array is ambiguous: reduce it first, e.g. gg.all(x) or x.sum() > 0 (at {loc})"
        )
    return x if x.dtype.kind == "b" else x != 0


def not_(x: Any) -> Any:
    if isinstance(x, Tracer):
        from .ops.elementwise import logical_not

        return logical_not(_to_pred(x, "`not`", user_loc()))
    return not x


def _bool_op(thunks: tuple[Callable, ...], is_and: bool) -> Any:
    from .ops.elementwise import logical_and, logical_or

    v = thunks[0]()
    for t in thunks[1:]:
        if isinstance(v, Tracer):
            w = t()
            w = _to_pred(w, "`and`/`or`", user_loc()) if isinstance(w, Tracer) else bool(w)
            v = (logical_and if is_and else logical_or)(_to_pred(v, "`and`/`or`", user_loc()), w)
        elif bool(v) is not is_and:  # Python short-circuit: `and` stops at falsy, `or` at truthy
            return v
        else:
            v = t()
    return v


def and_(*thunks: Callable) -> Any:
    return _bool_op(thunks, True)


def or_(*thunks: Callable) -> Any:
    return _bool_op(thunks, False)


def py_test(value: Any, construct: str, why: str) -> Any:
    """A test left as Python (conversion impossible): fine on Python values, an error naming
    the construct, the line and the rewrite on traced ones."""
    if isinstance(value, Tracer):
        raise TraceError(
            f"{construct} depends on a traced value and cannot be converted (at {user_loc()}): "
            f"{why}"
        )
    return value


def getitem(value: Any, index: Any) -> Any:
    if isinstance(value, (list, tuple)) and isinstance(index, Tracer):
        raise TraceError(
            f"a traced value is used as an index into a Python {type(value).__name__} (at "
            f"{user_loc()}): the list has no graph form. Stack it into an array and index that "
            "(gg.stack(items)[i]), or pick with gg.switch(i, [lambda: a, lambda: b])"
        )
    return value[index]


# -- if -----------------------------------------------------------------------------------
def _is_leafish(x: Any) -> bool:
    return isinstance(x, Tracer) or is_array(x) or is_python_scalar(x)


def _check_values(names, vals, where: str, loc: str) -> None:
    for n, v in zip(names, vals):
        leaves, _ = flatten(v)
        bad = [x for x in leaves if not _is_leafish(x)]
        if bad:
            raise TraceError(
                f"variable {n!r} holds a {type(bad[0]).__name__} {where}; only arrays, numbers "
                f"and tuples/lists/dicts of them can be graph values (at {loc})"
            )


def _types(v: Any) -> str:
    from .ops.core import type_of

    leaves, _ = flatten(v)
    return ", ".join(str(type_of(x).strong()) for x in leaves) or "nothing"


def _mismatch(names, a_vals, b_vals, a_what: str, b_what: str, err: Exception, loc: str):
    """Re-raise a branch/carry type mismatch naming the variable."""
    for n, a, b in zip(names, a_vals, b_vals):
        if _types(a) != _types(b) or flatten(a)[1] != flatten(b)[1]:
            cls = DTypeError if isinstance(err, DTypeError) else ShapeError
            what = "the return value" if n == RETVAL else f"variable {n!r}"
            raise cls(
                f"{what} is {_types(a)} {a_what} but {_types(b)} {b_what}; it must keep "
                f"one shape and dtype (at {loc})"
            ) from None
    raise err


def if_stmt(pred, true_fn, false_fn, get_vars, set_vars, names, live, info) -> None:
    """``if pred: true_fn() else: false_fn()``; on a traced pred a gg.cond whose outputs are
    the ``live`` variables. ``info = (if_line, else_line, {name: (true_line, false_line)})``."""
    if not isinstance(pred, Tracer):
        true_fn() if pred else false_fn()
        return
    from .control_flow import cond

    loc = user_loc()
    _note("if -> gg.cond", loc)
    pred = _to_pred(pred, "an `if`", loc)
    init = get_vars()
    out_idx = [i for i, n in enumerate(names) if n in live]
    out_names = [names[i] for i in out_idx]
    seen: dict[str, tuple] = {}

    def branch(fn: Callable, which: str) -> Callable:
        def run():
            set_vars(init)
            fn()
            vals = get_vars()
            outs = tuple(vals[i] for i in out_idx)
            _check_undefined(out_names, outs, which, info, loc)
            _check_values(out_names, outs, f"after the {which} branch", loc)
            seen[which] = outs
            return outs

        return run

    try:
        outs = cond(pred, branch(true_fn, "true"), branch(false_fn, "false"))
    except (ShapeError, DTypeError) as e:
        if len(seen) < 2:
            raise
        t, f = info[0], info[1] or info[0]
        _mismatch(
            out_names,
            seen["true"],
            seen["false"],
            f"after the true branch (line {t})",
            f"after the false branch (line {f})",
            e,
            loc,
        )
    vals = list(init)
    for i, v in zip(out_idx, outs):
        vals[i] = v
    set_vars(tuple(vals))


def _check_undefined(names, outs, which, info, loc) -> None:
    if_line, else_line, lines = info
    for n, v in zip(names, outs):
        if not isinstance(v, Undefined):
            continue
        t_line, f_line = lines.get(n, (None, None))
        other, other_line = ("false", f_line) if which == "true" else ("true", t_line)
        here = f"line {else_line or if_line}" if which == "false" else f"line {if_line}"
        raise TraceError(
            f"variable {n!r} is assigned in the {other} branch (line {other_line}) but not in "
            f"the {which} branch ({here}) of an `if` on a traced value; a graph cond needs it "
            f"on both: give it a value before the `if` or in both branches (at {loc})"
        )
