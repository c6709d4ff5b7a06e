"""Reading a function's source for autograph: the ``def`` (or the lambda) of a function with
its file's line numbers, checked against the code that runs, so an edited file is refused
(``StaleSourceError``) instead of converting text that is not the function's."""

from __future__ import annotations

import ast
import copy
import inspect
import os
import textwrap
import types

from .errors import TraceError


def parse_def(fn: types.FunctionType) -> ast.FunctionDef:
    """The function's ``def`` (a lambda: a ``def`` returning its body), with the line numbers
    of its file. ValueError/SyntaxError when the source cannot be told apart (the function
    then runs unconverted); StaleSourceError when it is not the running code's source."""
    raw = inspect.getsource(fn)
    text = textwrap.dedent(raw)
    shift = len(raw.splitlines()[0]) - len(text.splitlines()[0])  # columns dedent removed
    tree = ast.parse(text)
    ast.increment_lineno(tree, fn.__code__.co_firstlineno - 1)
    code = fn.__code__
    if code.co_name != "<lambda>":
        fdef = tree.body[0] if tree.body else None
        if not isinstance(fdef, ast.FunctionDef) or fdef.name != code.co_name:
            # the line the code object starts at no longer holds its def (or a decorator)
            what = getattr(fdef, "name", None) or type(fdef).__name__.lower()
            raise _stale(fn, f"line {code.co_firstlineno} now holds {what!r}, not its def")
        _check_fresh(fn, fdef, None)
        fdef.decorator_list = []
        return fdef
    params = list(code.co_varnames[: code.co_argcount + code.co_kwonlyargcount])
    lams = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Lambda)
        and n.lineno == code.co_firstlineno
        and [a.arg for a in n.args.args + n.args.kwonlyargs] == params
    ]
    if len(lams) > 1:  # several on one line: the one whose span holds the code's positions
        lams = _innermost_holding(lams, code, shift)
    if len(lams) != 1:
        raise ValueError("ambiguous lambda")
    lam = lams[0]
    _check_fresh(fn, None, lam)
    ret = ast.copy_location(ast.Return(lam.body), lam.body)
    return ast.copy_location(ast.FunctionDef("lambda__", lam.args, [ret], [], None), lam)


class StaleSourceError(TraceError):
    """The source file of a function changed after the function was defined: converting the
    file's current text would run code other than the function's own."""


def _stale(fn: types.FunctionType, why: str) -> StaleSourceError:
    code = fn.__code__
    return StaleSourceError(
        f"the source of {code.co_name!r} ({os.path.basename(code.co_filename)}:"
        f"{code.co_firstlineno}) changed after it was defined ({why}); gg.jit converts a "
        "function from its source text, which no longer matches the code that runs (or an "
        "import hook rewrote that code). Reload the module (or restart Python), or pass "
        "autograph=False to gg.jit"
    )


def _fingerprint(code: types.CodeType) -> tuple:
    """What text edits change in a code object: arguments, local names, constants, the lines
    its instructions come from, and the same of its nested functions."""
    consts = tuple(repr(c) for c in code.co_consts if not isinstance(c, types.CodeType))
    nested = tuple(_fingerprint(c) for c in code.co_consts if isinstance(c, types.CodeType))
    lines = frozenset(ln for _, _, ln in code.co_lines() if ln is not None)
    counts = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount)
    return (counts, code.co_varnames, consts, lines, nested)


def _names_ok(orig: types.CodeType, new: types.CodeType) -> bool:
    """Same global/attribute names (a closure variable of ``orig`` is a global in ``new``,
    which was compiled on its own)."""
    extra = set(new.co_names) - set(orig.co_names)
    if set(orig.co_names) - set(new.co_names) or extra - set(orig.co_freevars):
        return False
    inner = [(a, b) for a, b in zip(orig.co_consts, new.co_consts)]
    return all(_names_ok(a, b) for a, b in inner if isinstance(a, types.CodeType))


def _rewritten(code: types.CodeType) -> bool:
    if any(n.startswith("@py_assert") for n in code.co_varnames) or "@pytest_ar" in code.co_names:
        return True
    return any(_rewritten(c) for c in code.co_consts if isinstance(c, types.CodeType))


def _check_fresh(fn: types.FunctionType, fdef: ast.FunctionDef | None, lam) -> None:
    """Raise StaleSourceError when the parsed text does not compile to ``fn``'s code."""
    if _rewritten(fn.__code__):
        return  # pytest rewrote its asserts: the code is not the plain compile of the text
    node = copy.deepcopy(fdef if fdef is not None else lam)
    module = ast.Module([node if fdef is not None else ast.Expr(node)], [])
    ast.fix_missing_locations(module)
    try:
        top = compile(module, fn.__code__.co_filename, "exec")
    except SyntaxError as e:
        raise _stale(fn, f"it no longer compiles: {e.msg}") from None
    codes = [c for c in top.co_consts if isinstance(c, types.CodeType)]
    new, orig = codes[0] if codes else None, fn.__code__
    if new is None or _fingerprint(new) != _fingerprint(orig) or not _names_ok(orig, new):
        raise _stale(fn, "its text differs from the code that runs")


def _innermost_holding(lams: list[ast.Lambda], code: types.CodeType, shift: int) -> list:
    """The lambdas whose source span contains every instruction position of ``code`` (the
    smallest one, for a lambda inside another)."""
    pos = [(a, c - shift) for a, _, c, e in code.co_positions() if c is not None and e]
    pos_end = [(b, e - shift) for _, b, c, e in code.co_positions() if c is not None and e]
    holding = [
        n
        for n in lams
        if all((n.lineno, n.col_offset) <= p for p in pos)
        and all(p <= (n.end_lineno, n.end_col_offset) for p in pos_end)
    ]
    holding.sort(key=lambda n: (n.end_lineno - n.lineno, n.end_col_offset - n.col_offset))
    return holding[:1]
