"""Control flow inside the graph: gg.cond, gg.switch, gg.while_loop, gg.fori_loop, gg.scan.

Each function traces the user's Python callables once, on tracers typed like the operands, into
sub-``Graph``s (a nested Trace; outer tracers a body closes over are captured as explicit extra
inputs, the region's "consts"), checks their types, and binds one region op (ops/control.py).
Bound on concrete arrays the op runs at once (its impl interprets the bodies); bound on tracers
of a ``gg.jit`` trace it becomes one node that the passes, the planner and the runtime see.
Semantics follow the JAX functions of the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import DTypeError, GpuGraphError, ShapeError
from .ir import Graph, TensorType, Value
from .ops import control as _control  # noqa: F401  (registers the region ops)
from .ops.core import bind, check_dtype, is_array, is_python_scalar, scalar_default_dtype
from .pytree import TreeDef, flatten, leaf_paths, unflatten
from .trace import trace_flat
from .tracer import Tracer, tracing_branch, user_loc

__all__ = ["cond", "fori_loop", "scan", "switch", "while_loop"]


@dataclass
class _Body:
    graph: Graph
    out_tree: TreeDef
    captures: list[Any]  # outer tracers the body read, in the order of its extra inputs
    n_in: int
    weak_out: frozenset[int]  # outputs that are Python numbers or weakly typed tracers


def _trace(fn: Callable, types: list[TensorType], in_tree: TreeDef, label: str) -> _Body:
    weak: set[int] = set()

    def run(*args: Any) -> Any:
        out = fn(*args)
        weak.update(_weak_leaves(out))
        return out

    graph, out_tree, tr = trace_flat(run, types, in_tree, None, label=label)
    for i in weak:  # a Python number became a (strong) constant: keep it weak, as it was
        v = graph.outputs[i]
        v.type = TensorType(v.type.shape, v.type.dtype, weak=True)
    return _Body(graph, out_tree, [outer for outer, _ in tr.captures], len(types), frozenset(weak))


def _unify(bodies: list[_Body]) -> tuple[list[Any], list[Graph]]:
    """One const list for all bodies of a region; each body graph takes all of them (the ones
    it does not read are unused inputs), after its own ``n_in`` inputs."""
    consts: list[Any] = []
    seen: dict[int, int] = {}
    for b in bodies:
        for c in b.captures:
            if id(c) not in seen:
                seen[id(c)] = len(consts)
                consts.append(c)
    graphs = []
    for b in bodies:
        g = b.graph
        own = {id(c): v for c, v in zip(b.captures, g.inputs[b.n_in :])}
        extra = [own[id(c)] if id(c) in own else Value(c.value.type, name="unused") for c in consts]
        graphs.append(Graph(g.inputs[: b.n_in] + extra, g.nodes, g.outputs, dict(g.meta)))
    return consts, graphs


def _leaf(x: Any, what: str, loc: str) -> Any:
    """A region operand as an array or tracer with a strong dtype."""
    if isinstance(x, Tracer):
        return x
    if is_python_scalar(x):
        return np.asarray(x, dtype=scalar_default_dtype(x))
    if is_array(x):
        check_dtype(x.dtype, what)
        return np.asarray(x) if isinstance(x, np.generic) else x
    raise GpuGraphError(f"{what}: expected an array or a number, got {type(x).__name__} (at {loc})")


def _leaves(tree_obj: Any, what: str, loc: str) -> tuple[list, TreeDef, list[TensorType]]:
    leaves, tree = flatten(tree_obj)
    paths = leaf_paths(tree, what)
    leaves = [_leaf(x, p, loc) for x, p in zip(leaves, paths)]
    return leaves, tree, [_type(x) for x in leaves]


def _weak_leaves(tree_obj: Any) -> set[int]:
    """Indices of the leaves that are weakly typed: Python numbers and weak tracers."""
    leaves, _ = flatten(tree_obj)
    return {
        i
        for i, x in enumerate(leaves)
        if is_python_scalar(x) or (isinstance(x, Tracer) and x.value.type.weak)
    }


def _carry_out(outs: list, weak: set[int]) -> list:
    """Eagerly (concrete arrays, no trace) a weak carry comes back as a Python number, the one
    weakly typed eager value, so the loop's result promotes as the plain Python loop's does.
    Under a trace the loop op's output tracer is itself weakly typed."""
    return [o.item() if i in weak and not isinstance(o, Tracer) else o for i, o in enumerate(outs)]


def _type(x: Any) -> TensorType:
    if isinstance(x, Tracer):
        return x.value.type.strong()
    return TensorType(x.shape, x.dtype)


def _out_types(body: _Body) -> list[TensorType]:
    return [v.type.strong() for v in body.graph.outputs]


def _as_list(out: Any, n: int) -> list:
    if n == 1:
        return [out]
    return list(out) if isinstance(out, tuple) else [out]


def _check_match(
    who: str,
    want: tuple[TreeDef, list[TensorType]],
    got: tuple[TreeDef, list[TensorType]],
    prefix: str,
    what_got: str,
    loc: str,
    ref: str = "the carry going in is",
) -> None:
    """Equal structure and per-leaf types, else an error naming the first leaf that differs."""
    (wt, wtypes), (gt, gtypes) = want, got
    if wt.num_leaves != gt.num_leaves or wt != gt:
        raise ShapeError(
            f"{who}: {what_got} returns a {gt.kind} of {gt.num_leaves} array(s), but {ref} a "
            f"{wt.kind} of {wt.num_leaves} (the structures must match) (at {loc})"
        )
    for path, a, b in zip(leaf_paths(wt, prefix), wtypes, gtypes):
        if a != b:
            cls = DTypeError if a.shape == b.shape else ShapeError
            raise cls(f"{who}: {what_got} returns {path} as {b}, but {ref} {a} (at {loc})")


# -- cond / switch ------------------------------------------------------------------------
def _switch_index(index: Any, fns: Sequence[Callable], names: list[str], operands, who, loc):
    leaves, tree, types = _leaves(tuple(operands), "operands", loc)
    with tracing_branch():
        bodies = [_trace(fn, types, tree, f"{who} {n}") for fn, n in zip(fns, names)]
    first = bodies[0]
    for name, b in zip(names[1:], bodies[1:]):
        _check_match(
            who,
            (first.out_tree, _out_types(first)),
            (b.out_tree, _out_types(b)),
            "output",
            name,
            loc,
            f"{names[0]} returns it as",
        )
    consts, graphs = _unify(bodies)
    out = bind("cond", index, *leaves, *consts, branches=tuple(graphs), _loc=loc)
    # an output every branch returns weakly typed (a Python number) stays weak, as in JAX
    weak = frozenset.intersection(*(b.weak_out for b in bodies))
    outs = _carry_out(_as_list(out, first.out_tree.num_leaves), weak)
    return unflatten(first.out_tree, outs)


def _scalar_check(x: Any, who: str, what: str, kinds: str, loc: str) -> TensorType:
    if isinstance(x, Tracer) or is_array(x) or is_python_scalar(x):
        t = _type(x) if not is_python_scalar(x) else TensorType((), scalar_default_dtype(x))
        if t.shape != ():
            raise ShapeError(f"{who}: {what} must be a scalar, got shape {t.shape} (at {loc})")
        if t.dtype.kind not in kinds:
            kind = "a boolean" if kinds == "b" else "an integer"
            raise DTypeError(f"{who}: {what} must be {kind} scalar, got {t.dtype} (at {loc})")
        return t
    raise GpuGraphError(f"{who}: {what} must be a scalar array, got {type(x).__name__} (at {loc})")


def cond(pred: Any, true_fn: Callable, false_fn: Callable, *operands: Any) -> Any:
    """``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)``; both branches are traced
    and must return the same structure, shapes and dtypes. ``pred`` is a boolean scalar."""
    loc = user_loc()
    _scalar_check(pred, "cond", "the predicate", "b", loc)
    index = pred.astype(np.int32) if isinstance(pred, Tracer) else np.int32(bool(pred))
    return _switch_index(index, [false_fn, true_fn], ["false_fn", "true_fn"], operands, "cond", loc)


def switch(index: Any, branches: Sequence[Callable], *operands: Any) -> Any:
    """``branches[index](*operands)``; an out-of-range index is clamped into range."""
    loc = user_loc()
    branches = list(branches)
    if not branches:
        raise GpuGraphError(f"switch: branches must not be empty (at {loc})")
    _scalar_check(index, "switch", "the index", "iu", loc)
    n = len(branches)
    if isinstance(index, Tracer):  # clamp in the index's own dtype, then narrow
        from .ops.elementwise import astype, maximum, minimum

        index = astype(minimum(maximum(index, 0), n - 1), np.int32)
    else:
        index = np.int32(min(max(int(index), 0), n - 1))
    names = [f"branches[{k}]" for k in range(n)]
    return _switch_index(index, branches, names, operands, "switch", loc)


# -- loops --------------------------------------------------------------------------------
def _max_steps(max_steps: Any, loc: str) -> int | None:
    if max_steps is None:
        return None
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)):
        raise GpuGraphError(
            f"while_loop: max_steps must be a Python int, got {max_steps!r} (at {loc})"
        )
    if max_steps < 0:
        raise GpuGraphError(f"while_loop: max_steps must be >= 0, got {max_steps} (at {loc})")
    return int(max_steps)


def _while(cond_fun, body_fun, init_val, max_steps, loc, weak: Sequence[int] = ()):
    weak = set(weak) | _weak_leaves(init_val)
    leaves, tree, types = _leaves(init_val, "init_val", loc)
    trace_types = [TensorType(t.shape, t.dtype, weak=i in weak) for i, t in enumerate(types)]
    in_tree = TreeDef("tuple", (tree,))
    c = _trace(cond_fun, trace_types, in_tree, "while_loop cond")
    if c.out_tree.num_leaves != 1 or _out_types(c)[0] != TensorType((), np.bool_):
        got = ", ".join(map(str, _out_types(c))) or "nothing"
        raise DTypeError(
            f"while_loop: cond_fun must return one boolean scalar, got {got} (at {loc})"
        )
    b = _trace(body_fun, trace_types, in_tree, "while_loop body")
    _check_match("while_loop", (tree, types), (b.out_tree, _out_types(b)), "carry", "body_fun", loc)
    consts, (cg, bg) = _unify([c, b])
    out = bind(
        "while",
        *leaves,
        *consts,
        cond_graph=cg,
        body_graph=bg,
        n_carry=len(leaves),
        max_steps=max_steps,
        _loc=loc,
    )
    return unflatten(tree, _carry_out(_as_list(out, len(leaves)), weak))


def while_loop(
    cond_fun: Callable, body_fun: Callable, init_val: Any, max_steps: int | None = None
) -> Any:
    """``val = init_val; while cond_fun(val): val = body_fun(val); return val``.

    ``max_steps`` bounds the trip count: running past it raises at run time, and it is what
    makes reverse-mode differentiation possible (the tape holds at most that many steps)."""
    loc = user_loc()
    return _while(cond_fun, body_fun, init_val, _max_steps(max_steps, loc), loc)


def _static_int(x: Any) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, np.ndarray) and x.shape == () and x.dtype.kind in "iu":
        return int(x)
    return None


def fori_loop(lower: Any, upper: Any, body_fun: Callable, init_val: Any) -> Any:
    """``for i in range(lower, upper): val = body_fun(i, val)``. With static (Python or NumPy)
    bounds this is a ``scan`` of known length (so it is reverse-differentiable); with traced
    bounds it is a ``while_loop``. ``i`` is a weakly typed integer, as in JAX."""
    loc = user_loc()
    lo, hi = _static_int(lower), _static_int(upper)
    if lo is not None and hi is not None:

        def step(carry, _):
            i, val = carry
            return (i + 1, body_fun(i, val)), None

        (_, val), _ = _scan(step, (np.int64(lo), init_val), None, max(hi - lo, 0), False, loc, (0,))
        return val
    for name, b in (("lower", lower), ("upper", upper)):
        _scalar_check(b, "fori_loop", name, "iu", loc)

    def body(carry):
        i, val = carry
        return i + 1, body_fun(i, val)

    i0 = lower if isinstance(lower, Tracer) else np.int64(lower)
    return _while(lambda c: c[0] < upper, body, (i0, init_val), None, loc, (0,))[1]


def _scan(f, init, xs, length, reverse, loc, weak: Sequence[int] = ()):
    weak = set(weak) | _weak_leaves(init)
    carry, ctree, ctypes = _leaves(init, "init", loc)
    xl, xtree, xtypes = _leaves(xs, "xs", loc)
    lengths = {t.shape[0] if t.shape else None for t in xtypes}
    if None in lengths:
        raise ShapeError(f"scan: every xs leaf needs a leading axis to scan over (at {loc})")
    if len(lengths) > 1:
        raise ShapeError(
            f"scan: xs leaves have different leading sizes {sorted(lengths)} (at {loc})"
        )
    if length is not None and lengths and lengths != {int(length)}:
        raise ShapeError(
            f"scan: length={length} but xs have leading size {lengths.pop()} (at {loc})"
        )
    if length is None and not lengths:
        raise GpuGraphError(f"scan: pass length= when xs is None or empty (at {loc})")
    n = int(length) if length is not None else lengths.pop()
    trace_types = [TensorType(t.shape, t.dtype, weak=i in weak) for i, t in enumerate(ctypes)]
    trace_types += [TensorType(t.shape[1:], t.dtype) for t in xtypes]
    b = _trace(f, trace_types, TreeDef("tuple", (ctree, xtree)), "scan body")
    if b.out_tree.kind not in ("tuple", "list") or len(b.out_tree.children) != 2:
        raise GpuGraphError(f"scan: f must return a pair (carry, y) (at {loc})")
    out_ctree, ytree = b.out_tree.children
    nc = ctree.num_leaves
    _check_match("scan", (ctree, ctypes), (out_ctree, _out_types(b)[:nc]), "carry", "f", loc)
    consts, (g,) = _unify([b])
    out = bind(
        "scan",
        *carry,
        *xl,
        *consts,
        body=g,
        n_carry=nc,
        n_xs=len(xl),
        length=n,
        reverse=bool(reverse),
        _loc=loc,
    )
    outs = _as_list(out, nc + ytree.num_leaves)
    return unflatten(ctree, _carry_out(outs[:nc], weak)), unflatten(ytree, outs[nc:])


def scan(
    f: Callable, init: Any, xs: Any = None, length: int | None = None, reverse: bool = False
) -> tuple[Any, Any]:
    """``carry = init; for x in xs: carry, y = f(carry, x)``; returns ``(carry, stacked ys)``.
    ``reverse=True`` walks xs from the end (ys keep xs's order)."""
    return _scan(f, init, xs, length, reverse, user_loc())
