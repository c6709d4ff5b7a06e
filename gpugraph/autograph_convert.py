"""The AST rewrite of autograph: ``if``/``while``/``for`` statements become calls to the
run-time helpers (``ag__.if_stmt`` ...) over generated closures; calls become
``ag__.call(f)(...)``, ``range`` becomes ``ag__.range_``. Generated nodes carry the line of
the statement they replace, so errors and tracebacks point at the user's source."""

from __future__ import annotations

import ast
import re

from .autograph_ast import JumpError, assigned, declared, has, loads, lower_jumps

_TRY_WHY = (
    "errors of the compiled graph are raised when it runs, not while tracing, so a `try` "
    "cannot catch them; move the control flow out of the `try`, or call gg.cond / "
    "gg.while_loop explicitly"
)
_IF_RETURN_WHY = (
    "a `return` converts only at the end of both branches (or of the function); assign the "
    "result to a variable and `return` it after the `if`, or use gg.cond"
)
_LOOP_RETURN_WHY = (
    "set a result variable and `break` instead, then `return` after the loop; or use gg.while_loop"
)
_RAISE_WHY = (
    "both branches of a graph cond are traced, so the `raise` would always run, and a compiled "
    "graph cannot raise on a value; check the value outside gg.jit, or return a flag/NaN with "
    "gg.where"
)
_ELSE_WHY = "move the `else` part after the loop, guarded by a flag you set before `break`"
_JUMP_WHY = "`break`/`continue` inside a `try`/`with` block do not convert; move them out"


_GENERATED = re.compile(r"(get|set|if_true|if_false|loop_test|loop_body|for_body|itr)_\d+")


def _expr(src: str) -> ast.expr:
    return ast.parse(src, mode="eval").body


def _relocate(tree: ast.AST, like: ast.AST) -> None:
    """Give generated nodes the first line of ``like`` (start and end: CPython reports a
    method call at its attribute's end line, which must be the statement's own line)."""
    for n in ast.walk(tree):
        if "lineno" in n._attributes:
            n.lineno = n.end_lineno = like.lineno
            n.col_offset = n.end_col_offset = like.col_offset


class _Converter(ast.NodeTransformer):
    def __init__(self, fdef: ast.FunctionDef) -> None:
        self.loads = loads(fdef)
        self.skip = declared(fdef)
        self.loop_loads: list[list[tuple[tuple[int, int], str]]] = []
        self.in_try = 0
        self.count = 0
        self.converted: list[str] = []

    # -- helpers ------------------------------------------------------------------------
    def _id(self) -> int:
        self.count += 1
        return self.count

    def _live_after(self, node: ast.AST) -> set[str]:
        """Read later in the text, or read earlier in an enclosing loop (next iteration)."""
        start, end = (node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)
        live = {n for pos, n in self.loads if pos > end}
        for reads in self.loop_loads:
            live |= {n for pos, n in reads if pos < start}
        return live

    def _guard(self, test: ast.expr, construct: str, why: str, like: ast.AST) -> ast.expr:
        call = ast.Call(
            _expr("ag__.py_test"), [test, ast.Constant(construct), ast.Constant(why)], []
        )
        _relocate(call.func, like)
        return ast.copy_location(call, like)

    def _state(self, k: int, names: list[str], like: ast.AST) -> list[ast.stmt]:
        """``(a, b,) = ag__.lds(locals(), ...)`` plus the get/set closures over ``names``."""
        tup = "".join(f"{n}, " for n in names)
        nl = f"nonlocal {', '.join(names)}\n    " if names else ""
        src = (
            (f"({tup}) = ag__.lds(locals(), {tuple(names)!r})\n" if names else "")
            + f"def get_{k}():\n    return ({tup})\n"
            + f"def set_{k}(vals__):\n    {nl}({tup}) = vals__\n"
        )
        stmts = ast.parse(src).body
        for s in stmts:
            _relocate(s, like)
        return stmts

    def _func(self, name: str, args: list[str], names: list[str], body, like) -> ast.stmt:
        head = f"def {name}({', '.join(args)}):\n"
        head += f"    nonlocal {', '.join(names)}\n" if names else ""
        fn = ast.parse(head + "    pass").body[0]
        _relocate(fn, like)
        fn.body = (fn.body[:-1] if names else []) + (body or fn.body[-1:])
        return fn

    def _names(self, stmts) -> tuple[list[str], dict[str, int]]:
        """The user variables ``stmts`` assign (not the converter's own helper functions)."""
        lines = {
            n: ln
            for n, ln in assigned(stmts).items()
            if n not in self.skip and not _GENERATED.fullmatch(n)
        }
        return sorted(lines), lines

    def _test(self, e: ast.expr) -> ast.expr:
        """``and``/``or``/``not`` in a test become ag__ calls (a tracer has no truth value)."""
        if isinstance(e, ast.BoolOp):
            fn = "and_" if isinstance(e.op, ast.And) else "or_"
            thunks = [ast.Lambda(_no_args(), self._test(v)) for v in e.values]
            new = ast.Call(_expr(f"ag__.{fn}"), thunks, [])
        elif isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            new = ast.Call(_expr("ag__.not_"), [self._test(e.operand)], [])
        elif isinstance(e, ast.Compare) and len(e.ops) > 1:  # a < b < c: a < b and b < c
            terms = [e.left, *e.comparators]
            pairs = [
                ast.copy_location(ast.Compare(terms[i], [op], [terms[i + 1]]), e)
                for i, op in enumerate(e.ops)
            ]
            return self._test(ast.copy_location(ast.BoolOp(ast.And(), pairs), e))
        else:
            return e
        ast.copy_location(new, e)
        ast.fix_missing_locations(new)
        _relocate(new.func, e)
        for t in new.args:
            ast.copy_location(t, e)
        return new

    # -- statements ---------------------------------------------------------------------
    def visit_FunctionDef(self, node):  # nested functions convert when called (ag__.call)
        return node

    visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = visit_FunctionDef

    def visit_Try(self, node):
        self.in_try += 1
        self.generic_visit(node)
        self.in_try -= 1
        return node

    def visit_If(self, node: ast.If):
        self.generic_visit(node)
        if self.in_try:
            node.test = self._guard(node.test, "an `if` inside a `try` block", _TRY_WHY, node)
            return node
        if has([node], (ast.Return,), into_loops=True):
            node.test = self._guard(node.test, "an `if` containing `return`", _IF_RETURN_WHY, node)
            return node
        if has(node.body + node.orelse, (ast.Raise,)):
            node.test = self._guard(node.test, "an `if` containing `raise`", _RAISE_WHY, node)
            return node
        k = self._id()
        names, t_lines = self._names(node.body)
        f_names, f_lines = self._names(node.orelse)
        names = sorted(set(names) | set(f_names))
        live = sorted(set(names) & self._live_after(node))
        lines = {n: (t_lines.get(n), f_lines.get(n)) for n in names}
        else_line = node.orelse[0].lineno if node.orelse else None
        out = self._state(k, names, node)
        out.append(self._func(f"if_true_{k}", [], names, node.body, node))
        out.append(self._func(f"if_false_{k}", [], names, node.orelse, node))
        call = _expr(
            f"ag__.if_stmt(None, if_true_{k}, if_false_{k}, get_{k}, set_{k}, {tuple(names)!r}, "
            f"{tuple(live)!r}, ({node.lineno}, {else_line}, {lines!r}))"
        )
        _relocate(call, node)
        call.args[0] = self._test(node.test)
        out.append(ast.copy_location(ast.Expr(call), node))
        self.converted.append(f"line {node.lineno}: if")
        return out

    def _loop_prelude(self, node, construct: str):
        """Guard cases (conversion impossible) or None; else lower break/continue."""
        if node.orelse:
            return f"a `{construct} ... else`", _ELSE_WHY
        if self.in_try:
            return f"a `{construct}` loop inside a `try` block", _TRY_WHY
        if has(node.body, (ast.Return,)):
            return f"a `{construct}` loop containing `return`", _LOOP_RETURN_WHY
        return None

    def _lower(self, node, k: int) -> tuple[list[ast.stmt], str | None, str | None]:
        pre, brk, cont = [], None, None
        if has(node.body, (ast.Continue,), into_loops=False):
            cont = f"continue_{k}"
            node.body = lower_jumps(node.body, ast.Continue, cont)
            node.body.insert(0, _assign_const(cont, False, node.body[0]))
            pre.append(_assign_const(cont, False, node))
        if has(node.body, (ast.Break,), into_loops=False):
            brk = f"break_{k}"
            node.body = lower_jumps(node.body, ast.Break, brk)
            pre.append(_assign_const(brk, False, node))
        return pre, brk, cont

    def _visit_loop(self, node, construct: str, field: str):
        guard = self._loop_prelude(node, construct)
        k = self._id()
        if guard is None:
            try:
                pre, brk, cont = self._lower(node, k)
            except JumpError:
                guard = (f"a `{construct}` loop with `break`/`continue` in a block", _JUMP_WHY)
        if guard is not None:
            self.generic_visit(node)
            setattr(node, field, self._guard(getattr(node, field), *guard, node))
            return node
        flags = [((0, 0), f) for f in (brk, cont) if f]
        self.loop_loads.append(loads(node) + flags)
        self.generic_visit(node)
        self.loop_loads.pop()
        return pre, brk, k

    def visit_While(self, node: ast.While):
        opts = _loop_options(node)  # before `continue` lowering puts a flag reset first
        res = self._visit_loop(node, "while", "test")
        if isinstance(res, ast.AST):
            return res
        pre, brk, k = res
        names, lines = self._names(node.body)
        live = sorted(set(names) & self._live_after(node))
        out = pre + self._state(k, names, node)
        test = self._test(node.test)
        if brk:
            not_brk = _expr(f"not {brk}")
            _relocate(not_brk, node)
            test = self._test(ast.copy_location(ast.BoolOp(ast.And(), [not_brk, test]), node))
        ret = ast.copy_location(ast.Return(test), node)
        out.append(self._func(f"loop_test_{k}", [], [], [ret], node))
        out.append(self._func(f"loop_body_{k}", [], names, node.body, node))
        call = _expr(
            f"ag__.while_stmt(loop_test_{k}, loop_body_{k}, get_{k}, set_{k}, "
            f"{tuple(names)!r}, {tuple(live)!r}, ({node.lineno}, {lines!r}))"
        )
        _relocate(call, node)
        call.keywords = opts
        out.append(ast.copy_location(ast.Expr(call), node))
        self.converted.append(f"line {node.lineno}: while")
        return out

    def visit_For(self, node: ast.For):
        res = self._visit_loop(node, "for", "iter")
        if isinstance(res, ast.AST):
            return res
        pre, brk, k = res
        bind = ast.copy_location(ast.Assign([node.target], ast.Name(f"itr_{k}", ast.Load())), node)
        ast.fix_missing_locations(bind)
        body = [bind, *node.body]
        names, lines = self._names(body)
        live = sorted(set(names) & self._live_after(node))
        out = pre + self._state(k, names, node)
        out.append(self._func(f"for_body_{k}", [f"itr_{k}"], names, body, node))
        extra = f"lambda: ag__.not_({brk})" if brk else "None"
        target = node.target.id if isinstance(node.target, ast.Name) else None
        tnames = tuple(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        call = _expr(
            f"ag__.for_stmt(None, {extra}, for_body_{k}, get_{k}, set_{k}, "
            f"{tuple(names)!r}, {tuple(live)!r}, ({node.lineno}, {lines!r}, {target!r}, "
            f"{tnames!r}))"
        )
        _relocate(call, node)
        call.args[0] = node.iter
        out.append(ast.copy_location(ast.Expr(call), node))
        self.converted.append(f"line {node.lineno}: for")
        return out

    def visit_Return(self, node: ast.Return):
        """``return v`` -> ``return ag__.ret(v)``: returning a variable left undefined (the
        target of a loop that ran zero times) is a use, and raises naming it."""
        self.generic_visit(node)
        if node.value is not None:
            new = ast.Call(_expr("ag__.ret"), [node.value], [])
            _relocate(new.func, node)
            node.value = ast.copy_location(new, node.value)
        return node

    # -- expressions --------------------------------------------------------------------
    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "ag__":
            return node
        if isinstance(f, ast.Name) and f.id == "range":
            node.func = ast.copy_location(_expr("ag__.range_"), f)
            _relocate(node.func, f)
        elif not (isinstance(f, ast.Name) and f.id in ("super", "locals", "globals", "vars")):
            wrap = ast.Call(_expr("ag__.call"), [f], [])
            _relocate(wrap, f)
            wrap.args = [f]
            node.func = wrap
        return node

    def visit_Subscript(self, node: ast.Subscript):
        self.generic_visit(node)
        if not isinstance(node.ctx, ast.Load) or isinstance(
            node.slice, (ast.Constant, ast.Slice, ast.Tuple)
        ):
            return node
        new = ast.Call(_expr("ag__.getitem"), [node.value, node.slice], [])
        _relocate(new.func, node)
        return ast.copy_location(new, node)


def _loop_options(node: ast.While) -> list[ast.keyword]:
    """A first body statement ``gg.autograph.set_loop_options(max_steps=N)`` (any spelling
    ending in ``set_loop_options``) moves to the while_stmt call as its keywords."""
    first = node.body[0] if node.body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Call)):
        return []
    f = first.value.func
    while isinstance(f, ast.Call) and f.args:  # ag__.call(x.set_loop_options) after visiting
        f = f.args[0]
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
    if name != "set_loop_options":
        return []
    node.body = node.body[1:] or [ast.copy_location(ast.Pass(), first)]
    return first.value.keywords


def set_loop_options(max_steps: int | None = None) -> None:
    """As the first statement of a ``while`` body: options of the gg.while_loop it converts
    to (``max_steps`` bounds the trip count and allows reverse-mode differentiation). Does
    nothing when called anywhere else or when the loop stays Python."""


def _no_args() -> ast.arguments:
    return ast.arguments([], [], None, [], [], None, [])


def _assign_const(name: str, value: bool, like: ast.AST) -> ast.stmt:
    node = ast.Assign([ast.Name(name, ast.Store())], ast.Constant(value))
    _relocate(node, like)
    return node


def _relocate_missing(tree: ast.AST, like: ast.AST) -> None:
    for n in ast.walk(tree):
        if "lineno" in n._attributes and not hasattr(n, "lineno"):
            ast.copy_location(n, like)
