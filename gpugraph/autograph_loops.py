"""Run-time helpers for converted loops: ``ag__.while_stmt``, ``ag__.for_stmt``,
``ag__.range_``. Python iterables and tests run as Python; a traced test, a range with a
traced bound or a traced array becomes gg.while_loop / gg.fori_loop / gg.scan whose carries
are the variables the body assigns that have a value before the loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from .autograph_ops import (
    Undefined,
    _check_values,
    _mismatch,
    _note,
    _to_pred,
    if_stmt,
    mark_loop,
    notes_mark,
)
from .errors import DTypeError, ShapeError, TraceError
from .tracer import Tracer, user_loc


# -- loops --------------------------------------------------------------------------------
def _carry_setup(names, init, live, info, loc, what, exempt=frozenset()):
    carry_idx = [i for i, v in enumerate(init) if not isinstance(v, Undefined)]
    targets = info[3] if len(info) > 3 else ()
    for i, v in enumerate(init):
        if isinstance(v, Undefined) and names[i] in live and names[i] not in exempt:
            line = info[1].get(names[i], info[0])
            if names[i] in targets:
                raise TraceError(
                    f"the loop variable {names[i]!r} of a `for` over a traced range (line "
                    f"{info[0]}) is used after the loop, but it has no value before the loop "
                    "and the range may be empty; give it a value before the loop, e.g. "
                    f"`{names[i]} = 0` (at {loc})"
                )
            raise TraceError(
                f"variable {names[i]!r} is first assigned inside a {what} on a traced value "
                f"(line {line}) and used after it; give it a value before the loop (line "
                f"{info[0]}) so it can be a loop carry (at {loc})"
            )
    cnames = [names[i] for i in carry_idx]
    _check_values(cnames, [init[i] for i in carry_idx], "entering the loop", loc)
    return carry_idx, cnames


def _merge(init, idx, carry):
    vals = list(init)
    for i, v in zip(idx, carry):
        vals[i] = v
    return tuple(vals)


def _loop_error(cnames, init_c, seen, e, loc):
    if "body" not in seen:
        raise e
    _mismatch(cnames, init_c, seen["body"], "entering the loop", "after the loop body", e, loc)


def _graph_while(test_fn, body_fn, get_vars, set_vars, names, live, info, loc, opts) -> None:
    from .control_flow import while_loop

    _note("while -> gg.while_loop", loc)
    mark_loop(loc, "while")
    init = get_vars()
    idx, cnames = _carry_setup(names, init, live, info, loc, "`while` loop")
    seen: dict[str, tuple] = {}

    def cond_fun(carry):
        set_vars(_merge(init, idx, carry))
        c = test_fn()
        return _to_pred(c, "a `while`", loc) if isinstance(c, Tracer) else bool(c)

    def body_fun(carry):
        set_vars(_merge(init, idx, carry))
        body_fn()
        vals = get_vars()
        seen["body"] = out = tuple(vals[i] for i in idx)
        _check_values(cnames, out, "after the loop body", loc)
        return out

    init_c = tuple(init[i] for i in idx)
    try:
        out = while_loop(cond_fun, body_fun, init_c, **opts)
    except (ShapeError, DTypeError) as e:
        _loop_error(cnames, init_c, seen, e, loc)
    set_vars(_merge(init, idx, out))


def while_stmt(test_fn, body_fn, get_vars, set_vars, names, live, info, **opts) -> None:
    """``while test_fn(): body_fn()``: Python iterations while the test is a Python value; from
    the first traced test on, the rest of the loop is one gg.while_loop."""
    while True:
        c = test_fn()
        if isinstance(c, Tracer):
            loc = user_loc()
            return _graph_while(test_fn, body_fn, get_vars, set_vars, names, live, info, loc, opts)
        if not c:
            return
        body_fn()


class TracedRange:
    """``range(...)`` with a traced bound: a for loop over it becomes gg.fori_loop."""

    def __init__(self, args: tuple, loc: str) -> None:
        self.args, self.loc = args, loc

    def bounds(self) -> tuple[Any, Any]:
        if len(self.args) == 3:
            step = self.args[2]
            if isinstance(step, Tracer) or step != 1:
                raise TraceError(
                    f"range() with a traced bound and step {step!r} cannot be converted (at "
                    f"{self.loc}); write a `while` loop with an explicit counter"
                )
        return (0, self.args[0]) if len(self.args) == 1 else (self.args[0], self.args[1])

    def __iter__(self):
        raise TraceError(
            f"range() with a traced bound is iterated outside a `for` statement (a "
            f"comprehension, generator or list()) (at {self.loc}): its length would depend on "
            "a traced value. Use a `for` statement, gg.fori_loop or gg.scan, or make the bound "
            "static (static_argnums)"
        )

    def __len__(self):
        self.__iter__()


def range_(*args: Any) -> Any:
    if any(isinstance(a, Tracer) for a in args):
        return TracedRange(args, user_loc())
    return range(*args)


def _guarded(pred, fn, get_vars, set_vars, names, info) -> None:
    """``if pred: fn()`` for a loop body after a traced `break`: the outputs are the
    variables that have a value now (the body's temporaries stay inside)."""
    live = {n for n, v in zip(names, get_vars()) if not isinstance(v, Undefined)}
    if_stmt(pred, fn, lambda: None, get_vars, set_vars, names, live, (info[0], None, {}))


def _target_inits(iterable, names, init, live, info) -> tuple[list, set[str]]:
    """Loop variables (targets) are carries only when read after the loop, as Python's last
    value; a traced array's loop variable starts as zeros of a row (the first iteration
    overwrites it), so an earlier value of another type (``_`` of a previous loop) does not
    matter. After a loop over an empty array it keeps its old value, or stays undefined."""
    vals, exempt = list(init), set()
    target, targets = (info[2], info[3]) if len(info) > 3 else (None, ())
    for i, n in enumerate(names):
        if n not in targets:
            continue
        if n not in live:
            vals[i] = Undefined(n)
            exempt.add(n)
        elif n == target and isinstance(iterable, Tracer) and iterable.shape:
            if iterable.shape[0] > 0:
                vals[i] = np.zeros(iterable.shape[1:], iterable.dtype)
            else:
                exempt.add(n)
                if isinstance(vals[i], Undefined):
                    why = f"the `for` loop at line {info[0]} ran zero times (empty array)"
                    vals[i] = Undefined(n, why)
    return vals, exempt


def for_stmt(iterable, extra_test, body_fn, get_vars, set_vars, names, live, info) -> None:
    """``for x in iterable: body_fn(x)`` (stopping when ``extra_test()``, the negated break
    flag, is false): Python iteration over Python iterables; gg.fori_loop over a range with
    traced bounds; gg.scan over a traced array's leading axis."""
    if isinstance(iterable, (Tracer, TracedRange)):
        return _graph_for(iterable, extra_test, body_fn, get_vars, set_vars, names, live, info)
    for pos, x in enumerate(iterable):
        t = extra_test() if extra_test is not None else True
        if isinstance(t, Tracer):  # a break taken under a traced condition earlier
            rest = iterable[pos:] if isinstance(iterable, range) else None
            if rest is not None and len(rest) > 1:
                args = (extra_test, body_fn, get_vars, set_vars, names, live, info)
                if _rest_as_loop(rest, *args):
                    return
            _guarded(t, lambda x=x: body_fn(x), get_vars, set_vars, names, info)
        elif not t:
            break
        else:
            body_fn(x)


def _rest_as_loop(rest: range, *args) -> bool:
    """The iterations of a Python range left after a `break` became traced, as one
    gg.while_loop (``_rest_while``) rather than one gg.cond per iteration. The loop
    variable is then traced; a body that needs it as a Python int (a list index, a shape)
    fails to trace, and the caller unrolls instead (returns False)."""
    init, notes = args[2](), notes_mark()
    try:
        _graph_for(_StaticRange(rest), *args)
        return True
    except Exception:  # noqa: BLE001  (the unrolled form re-raises genuine errors)
        args[3](init)
        notes_mark(notes)
        return False


def _rest_while(r: range, extra_test, set_vars, init, idx, step, loc):
    """The rest of a Python range whose `break` is traced: ``while j < len(r) and not
    broken``, so it stops at the break; ``max_steps=len(r)`` keeps it reverse-differentiable.
    The loop variable is ``r.start + j * r.step`` with ``j`` weakly typed, like a Python int."""
    from .control_flow import while_loop
    from .ops.elementwise import logical_and

    def test(c):
        set_vars(_merge(init, idx, c[1]))
        t = extra_test()
        more = c[0] < len(r)
        return logical_and(more, _to_pred(t, "a `break`", loc)) if isinstance(t, Tracer) else more

    def body(c):
        j, carry = c
        x = r.start + j * r.step if r.step != 1 else r.start + j
        return j + 1, step(x, carry, False)  # the test saw no break: no guard needed

    return while_loop(test, body, (0, tuple(init[i] for i in idx)), max_steps=len(r))[1]


class _StaticRange:
    """The rest of a Python range, run as one graph loop (see ``_rest_while``)."""

    def __init__(self, r: range) -> None:
        self.r = r


def _graph_for(iterable, extra_test, body_fn, get_vars, set_vars, names, live, info) -> None:
    from .control_flow import fori_loop, scan

    loc = user_loc()
    init, exempt = _target_inits(iterable, names, get_vars(), live, info)
    idx, cnames = _carry_setup(names, init, live, info, loc, "`for` loop", exempt)
    seen: dict[str, tuple] = {}

    def step(x, carry, guard=True):
        set_vars(_merge(init, idx, carry))
        t = extra_test() if extra_test is not None and guard else True
        if isinstance(t, Tracer):
            _guarded(t, lambda: body_fn(x), get_vars, set_vars, names, info)
        elif t:
            body_fn(x)
        vals = get_vars()
        seen["body"] = out = tuple(vals[i] for i in idx)
        _check_values(cnames, out, "after the loop body", loc)
        return out

    init_c = tuple(init[i] for i in idx)
    try:
        if isinstance(iterable, TracedRange):
            _note("for range -> gg.fori_loop", loc)
            mark_loop(loc, "for")
            lo, hi = iterable.bounds()
            out = fori_loop(lo, hi, lambda i, c: step(i, c), init_c)
        elif isinstance(iterable, _StaticRange):
            _note("for range (after a traced break) -> gg.while_loop", loc)
            out = _rest_while(iterable.r, extra_test, set_vars, init, idx, step, loc)
        else:
            _note("for over array -> gg.scan", loc)
            out, _ = scan(lambda c, x: (step(x, c), None), init_c, iterable)
    except (ShapeError, DTypeError) as e:
        _loop_error(cnames, init_c, seen, e, loc)
    set_vars(_merge(init, idx, out))
