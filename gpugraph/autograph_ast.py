"""Static analyses and rewrites the converter runs before it converts control flow.

* ``assigned``/``loads``: the names a block assigns (outside nested scopes) and every name
  read in a function with its position (liveness: a variable is live after a statement if it
  is read later in the text or anywhere in an enclosing loop, a safe over-approximation).
* ``normalize_returns`` / ``tail_returns``: an ``if`` whose branch returns gets the rest of
  the block as its other branch; a function ending in such an ``if`` assigns ``retval__`` on
  every path and returns it once, so both branches become outputs of one gg.cond.
* ``lower_jumps``: ``break``/``continue`` become assignments to a boolean flag, and the
  statements after them run under ``if not flag``; the flag joins the loop test (``while``)
  or guards the next iterations (``for``).
"""

from __future__ import annotations

import ast

RETVAL = "retval__"
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_LOOPS = (ast.For, ast.While, ast.AsyncFor)


def walk_local(stmts: list[ast.AST], into_loops: bool = True):
    """``ast.walk`` over ``stmts`` that does not enter nested scopes (or loops, if asked)."""
    todo = list(stmts)
    while todo:
        n = todo.pop()
        yield n
        if isinstance(n, _SCOPES + _COMPS) or (not into_loops and isinstance(n, _LOOPS)):
            continue
        todo.extend(ast.iter_child_nodes(n))


def assigned(stmts: list[ast.AST]) -> dict[str, int]:
    """Names the statements bind, each with the first line that binds it."""
    out: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        out[name] = min(out.get(name, line), line)

    for n in walk_local(stmts):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            add(n.id, n.lineno)
        elif isinstance(n, _SCOPES) and not isinstance(n, ast.Lambda):
            add(n.name, n.lineno)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                add((a.asname or a.name).split(".")[0], n.lineno)
    return out


def declared(fdef: ast.FunctionDef) -> set[str]:
    """Names the function declares global or nonlocal (side effects, never carried)."""
    names: set[str] = set()
    for n in walk_local(fdef.body):
        if isinstance(n, (ast.Global, ast.Nonlocal)):
            names.update(n.names)
    return names


def loads(node: ast.AST) -> list[tuple[tuple[int, int], str]]:
    return [
        ((n.lineno, n.col_offset), n.id)
        for n in ast.walk(node)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    ]


def has(stmts: list[ast.AST], kinds: tuple, into_loops: bool = True) -> bool:
    return any(isinstance(n, kinds) for n in walk_local(stmts, into_loops))


def _always_returns(stmts: list[ast.stmt]) -> bool:
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, ast.Return):
        return True
    return isinstance(last, ast.If) and _always_returns(last.body) and _always_returns(last.orelse)


def normalize_returns(stmts: list[ast.stmt]) -> list[ast.stmt]:
    """Move the statements after an ``if`` that returns on one side into its other side, and
    drop statements after a ``return`` (dead code)."""
    out: list[ast.stmt] = []
    for i, s in enumerate(stmts):
        if isinstance(s, ast.If) and has([s], (ast.Return,), into_loops=False):
            s.body, s.orelse = normalize_returns(s.body), normalize_returns(s.orelse)
            rest = stmts[i + 1 :]
            tb, fb = _always_returns(s.body), _always_returns(s.orelse)
            if tb and fb:
                out.append(s)
                return out
            if rest and tb:
                s.orelse = normalize_returns(s.orelse + rest)
                out.append(s)
                return out
            if rest and fb:
                s.body = normalize_returns(s.body + rest)
                out.append(s)
                return out
        out.append(s)
        if isinstance(s, ast.Return):
            return out
    return out


def _assign(name: str, value: ast.expr | None, like: ast.AST) -> ast.stmt:
    node = ast.Assign([ast.Name(name, ast.Store())], value or ast.Constant(None))
    return ast.fix_missing_locations(ast.copy_location(node, like))


def _tail(stmts: list[ast.stmt], like: ast.AST) -> None:
    last = stmts[-1] if stmts else None
    if isinstance(last, ast.Return):
        stmts[-1] = _assign(RETVAL, last.value, last)
    elif isinstance(last, ast.If) and has([last], (ast.Return,), into_loops=False):
        _tail(last.body, last)
        _tail(last.orelse, last)
    else:
        stmts.append(_assign(RETVAL, None, last or like))


def _fix_ends(node: ast.AST) -> tuple[int, int]:
    """An ``if`` that received moved statements ends where its last statement ends (the
    liveness analysis compares positions)."""
    end = (getattr(node, "end_lineno", 0) or 0, getattr(node, "end_col_offset", 0) or 0)
    for child in ast.iter_child_nodes(node):
        end = max(end, _fix_ends(child))
    if isinstance(node, ast.If):
        node.end_lineno, node.end_col_offset = end
    return end


def tail_returns(fdef: ast.FunctionDef) -> bool:
    """If the function ends in an ``if`` that returns, make every path assign ``retval__``
    and return it once at the end. Returns whether it did."""
    fdef.body = normalize_returns(fdef.body)
    for s in fdef.body:
        _fix_ends(s)
    last = fdef.body[-1]
    if not (isinstance(last, ast.If) and has([last], (ast.Return,), into_loops=False)):
        return False
    _tail(fdef.body, fdef)
    ret = ast.Return(ast.Name(RETVAL, ast.Load()))
    ret.lineno = ret.end_lineno = fdef.end_lineno or last.lineno
    ret.col_offset, ret.end_col_offset = 10**6, 10**6  # after every other read, for liveness
    ret.value.lineno, ret.value.end_lineno = ret.lineno, ret.lineno
    ret.value.col_offset = ret.value.end_col_offset = 10**6
    fdef.body.append(ret)
    return True


def _not_flag(flag: str, rest: list[ast.stmt]) -> ast.If:
    test = ast.parse(f"ag__.not_({flag})", mode="eval").body
    node = ast.If(test, rest, [])
    ast.copy_location(node, rest[0])
    node.end_lineno, node.end_col_offset = rest[-1].end_lineno, rest[-1].end_col_offset
    for n in ast.walk(test):
        ast.copy_location(n, rest[0])
    return node


class JumpError(Exception):
    """A break/continue in a place the lowering does not handle (inside a try/with)."""


def lower_jumps(stmts: list[ast.stmt], kind: type, flag: str) -> list[ast.stmt]:
    """Replace ``kind`` (Break or Continue) of this loop by ``flag = True``; what follows runs
    under ``if not flag``."""
    out: list[ast.stmt] = []
    for i, s in enumerate(stmts):
        if isinstance(s, kind):
            out.append(_assign(flag, ast.Constant(True), s))
            return out
        if has([s], (kind,), into_loops=False) and not isinstance(s, _LOOPS):
            if not isinstance(s, ast.If):
                raise JumpError(type(s).__name__)
            s.body = lower_jumps(s.body, kind, flag)
            s.orelse = lower_jumps(s.orelse, kind, flag)
            out.append(s)
            rest = lower_jumps(stmts[i + 1 :], kind, flag)
            if rest:
                out.append(_not_flag(flag, rest))
            return out
        out.append(s)
    return out
