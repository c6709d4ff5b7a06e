"""Automatic differentiation as graph transforms: vjp, grad, value_and_grad, jvp.

How it works. The user function is traced once into a Graph on fresh tracers typed like the
primals. That graph is then *evaluated* on the caller's values by re-binding each node
(``bind(node.op, *inputs, **attrs)``), and the derivative is computed by walking the same
nodes and calling each op's ``vjp`` (reverse mode, nodes in reverse order) or ``jvp`` (forward
mode) rule on the caller's values. Because every step is a ``bind`` call, the same code
computes eagerly on NumPy/CuPy arrays, emits ordinary nodes into an enclosing ``gg.jit`` trace
(so the backward is optimized, fused and memory-planned like the forward), and composes: the
backward of an inner ``grad`` is just more nodes of the outer trace, which the outer ``grad``
then differentiates again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .autograph_ops import converting
from .errors import DTypeError, GpuGraphError, ShapeError, UnsupportedError
from .interop import as_array
from .ir import Graph, Node, TensorType, Value, is_float, live_nodes
from .ops.core import bind, is_cupy, type_of
from .ops.registry import get_op
from .pytree import TreeDef, flatten, leaf_paths, unflatten
from .trace import arg_label, positional_names, trace_flat
from .tracer import Tracer, current_trace

__all__ = ["eval_graph", "grad", "jvp", "value_and_grad", "vjp"]


# ---- tracing and evaluation ---------------------------------------------------------------
@dataclass
class _Traced:
    """A user function traced once. ``graph.inputs`` are the flat primals followed by the
    captured outer tracers, whose caller-side values are ``captures``."""

    graph: Graph
    out_tree: TreeDef
    captures: list[Any]
    known: dict[Value, Any]  # values already computed while tracing (eager, concrete trace)


def _trace(fn: Callable, flat: list[Any], in_tree: TreeDef, names: list[str]) -> _Traced:
    types = [type_of(x, f"argument {n}") for x, n in zip(flat, names)]
    # Eager (no enclosing trace, no traced argument): trace on concrete values, so Python
    # control flow on them works and the graph is the path taken. Under jit values are
    # abstract and a Python `if` on them stays an error (or is converted by autograph).
    eager = current_trace() is None and not any(isinstance(x, Tracer) for x in flat)
    if not eager and converting():  # grad inside gg.jit(autograph=True): convert fn too
        from .autograph import convert

        fn = convert(fn)
    graph, out_tree, tr = trace_flat(
        fn, types, in_tree, names, label="autodiff", concrete=flat if eager else None
    )
    return _Traced(graph, out_tree, [outer for outer, _ in tr.captures], tr.concrete or {})


def _eval_nodes(nodes: Sequence[Node], env: dict[Value, Any], own: bool = False) -> None:
    """Re-bind each node on the values in ``env`` (arrays or tracers of the caller's trace).
    ``own``: copy eager constants (arrays the function closed over) rather than refer to them."""
    for node in nodes:
        if node.outputs and all(o in env for o in node.outputs):
            continue  # computed already while tracing on concrete values
        if node.op == "constant" and current_trace() is None:
            value = node.attrs["value"]  # eager: the host array is the value
            env[node.output] = _owned(value) if own else value
            continue
        outs = bind(node.op, *[env[v] for v in node.inputs], **node.attrs)
        env.update(zip(node.outputs, outs if isinstance(outs, tuple) else (outs,)))


def eval_graph(graph: Graph, args: Sequence[Any]) -> list[Any]:
    """Evaluate ``graph`` on ``args`` (one per graph input) by binding its nodes in the
    caller's context: eagerly on arrays, or as nodes of the active trace on tracers."""
    if len(args) != len(graph.inputs):
        raise GpuGraphError(f"eval_graph: graph takes {len(graph.inputs)} inputs, got {len(args)}")
    env = dict(zip(graph.inputs, args))
    _eval_nodes(live_nodes(graph), env)
    return [env[v] for v in graph.outputs]


# ---- helpers ------------------------------------------------------------------------------
def _is_float(t: TensorType) -> bool:
    return is_float(t.dtype)


def _fill(t: TensorType, value: float, like: Any) -> Any:
    """A tensor of type ``t`` filled with ``value``, in the same world as ``like``."""
    dtype = t.dtype
    if isinstance(like, Tracer) or current_trace() is not None:
        return bind("full", shape=t.shape, value=dtype.type(value).item(), dtype=dtype)
    if is_cupy(like):
        import cupy

        return cupy.full(t.shape, value, dtype=dtype)
    return np.full(t.shape, value, dtype=dtype)


def _fit(ct: Any, v: Value, node: Node | None, what: str) -> Any:
    """Give a rule's result the dtype of ``v``; a wrong shape is a bug in the rule."""
    from .ops.elementwise import astype

    t = type_of(ct)
    assert t.shape == v.type.shape, (
        f"{what} rule of '{node.op if node else '?'}' returned shape {t.shape} for a value of "
        f"shape {v.type.shape}"
    )
    return ct if t.dtype == v.type.dtype and not t.weak else astype(ct, v.type.dtype)


def _is_constant(v: Value) -> bool:
    return v.node is not None and v.node.op == "constant"


def _owned(x: Any) -> Any:
    """A private copy of a concrete array (tracers and Python scalars are immutable)."""
    return x.copy() if isinstance(x, np.ndarray) or is_cupy(x) else x


def _as_output(x: Any) -> Any:
    """Eager results are arrays, never NumPy scalars."""
    return np.asarray(x) if isinstance(x, np.generic) else x


def _arg_names(fn: Callable, in_tree: TreeDef) -> list[str]:
    """Readable pytree paths of every flat primal: ``params['w']``, ``args[1]``."""
    params = positional_names(fn)
    names: list[str] = []
    for i, child in enumerate(in_tree.children):
        names.extend(leaf_paths(child, arg_label(params, i)))
    return names


def _fn_name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


# ---- the transforms -----------------------------------------------------------------------
class _Forward:
    """``fn`` traced and evaluated on the caller's values, ready for vjp or jvp.

    ``wrt`` lists the positional arguments whose leaves are differentiated; their flat graph
    inputs are ``self.wrt_inputs``. Only floating-point values reachable from them through
    differentiable ops are *active*; everything else has a zero derivative.
    """

    def __init__(
        self,
        who: str,
        fn: Callable,
        args: tuple,
        wrt: Sequence[int],
        has_aux: bool,
        own: bool = False,
    ):
        """``own``: evaluate on private copies of the caller's arrays, so that rules run later
        (an eager vjp_fn) see the values of the call even if the caller mutates its arrays."""
        self.who = who
        flat, self.in_tree = flatten(tuple(args))
        flat = [as_array(x) for x in flat]  # torch, JAX ... arrays: shared (interop.py)
        names = _arg_names(fn, self.in_tree)
        starts = np.cumsum([0] + [c.num_leaves for c in self.in_tree.children])
        self.arg_slices = [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]
        wrt_idx = [i for k in wrt for i in range(*self.arg_slices[k].indices(len(flat)))]
        for i in wrt_idx:
            t = type_of(flat[i], f"argument {names[i]}")
            if not _is_float(t):
                raise DTypeError(
                    f"{who}: cannot differentiate {_fn_name(fn)} with respect to {names[i]}: "
                    f"its dtype is {t.dtype}, and only floating-point inputs have gradients "
                    "(leave it out of argnums, or cast it with astype)"
                )
        if own:  # trace (and so compute, eagerly) on private copies
            flat = [_owned(x) for x in flat]
        self.traced = _trace(fn, flat, self.in_tree, names)
        g = self.traced.graph
        self.wrt_inputs = [g.inputs[i] for i in wrt_idx]
        self._split_outputs(has_aux, fn)
        self.nodes = live_nodes(g)
        self.env: dict[Value, Any] = dict(zip(g.inputs, [*flat, *self.traced.captures]))
        known = self.traced.known  # computed while tracing on concrete values (from ``flat``)
        if own:  # closed-over arrays became constants by reference: copy them too
            known = {v: _owned(x) if _is_constant(v) else x for v, x in known.items()}
        self.env.update(known)
        _eval_nodes(self.nodes, self.env, own)
        self.active = self._find_active()

    def _split_outputs(self, has_aux: bool, fn: Callable) -> None:
        tree = self.traced.out_tree
        outs = self.traced.graph.outputs
        if not has_aux:
            self.out_tree, self.aux_tree, self.n_main = tree, None, len(outs)
            return
        if tree.kind not in ("tuple", "list") or len(tree.children) != 2:
            raise GpuGraphError(
                f"{self.who}: has_aux=True needs {_fn_name(fn)} to return a pair (output, aux)"
            )
        self.out_tree, self.aux_tree = tree.children
        self.n_main = self.out_tree.num_leaves

    def _find_active(self) -> set[Value]:
        active = set(self.wrt_inputs)
        for node in self.nodes:
            if any(v in active for v in node.inputs) and get_op(node.op).differentiable:
                active.update(o for o in node.outputs if _is_float(o.type))
        return active

    # -- results --------------------------------------------------------------------------
    @property
    def main_outputs(self) -> list[Value]:
        return self.traced.graph.outputs[: self.n_main]

    def out_values(self, own: bool = False) -> Any:
        """The function's results; ``own``: copies, so the caller may write to them without
        changing the residuals an eager vjp_fn reads."""
        vals = [_as_output(self.env[v]) for v in self.traced.graph.outputs]
        vals = [_owned(x) for x in vals] if own else vals
        main = unflatten(self.out_tree, vals[: self.n_main])
        if self.aux_tree is None:
            return main
        return main, unflatten(self.aux_tree, vals[self.n_main :])

    def wrt_structure(self, wrt: Sequence[int], flat_grads: list[Any]) -> list[Any]:
        """Regroup flat per-input results into one pytree per differentiated argument."""
        it = iter(flat_grads)
        trees = []
        for k in wrt:
            n = self.arg_slices[k].stop - self.arg_slices[k].start
            trees.append(unflatten(self.in_tree.children[k], [next(it) for _ in range(n)]))
        return trees

    # -- reverse mode ---------------------------------------------------------------------
    def backward(self, out_cts: list[Any]) -> list[Any]:
        """Cotangents of the differentiated inputs, given one per main output (None = 0)."""
        ct: dict[Value, Any] = {}
        for v, c in zip(self.main_outputs, out_cts):
            if c is not None and v in self.active:
                c = _fit(c, v, None, "output cotangent")
                ct[v] = c if v not in ct else _add(ct[v], c)
        for node in reversed(self.nodes):
            if any(o in ct for o in node.outputs):
                self._transpose_node(node, ct)
        return [
            _as_output(ct[v]) if v in ct else _fill(v.type, 0, self.env[v]) for v in self.wrt_inputs
        ]

    def _transpose_node(self, node: Node, ct: dict[Value, Any]) -> None:
        opdef = get_op(node.op)
        if opdef.vjp is None:
            raise UnsupportedError(
                f"{self.who}: op '{node.op}' (at {node.loc}) has no VJP rule, so it cannot be "
                "differentiated in reverse mode"
            )
        env = self.env
        cts = [ct.pop(o, None) for o in node.outputs]
        cts = [_fill(o.type, 0, env[o]) if c is None else c for o, c in zip(node.outputs, cts)]
        ins = [env[v] for v in node.inputs]
        in_cts = opdef.vjp(cts, [env[o] for o in node.outputs], *ins, **node.attrs)
        for v, c in zip(node.inputs, in_cts):
            if c is None or v not in self.active:
                continue
            c = _fit(c, v, node, "VJP")
            ct[v] = c if v not in ct else _add(ct[v], c)

    # -- forward mode ---------------------------------------------------------------------
    def forward_tangents(self, tangents: list[Any]) -> list[Any]:
        """Tangents of the main outputs given one per differentiated input (zeros filled)."""
        tan: dict[Value, Any] = {}
        for v, t in zip(self.wrt_inputs, tangents):
            tan[v] = _fit(t, v, None, "input tangent")
        for node in self.nodes:
            if any(v in tan for v in node.inputs):
                self._push_node(node, tan)
        return [
            _as_output(tan[v]) if v in tan else _fill(v.type, 0, self.env[v])
            for v in self.main_outputs
        ]

    def _push_node(self, node: Node, tan: dict[Value, Any]) -> None:
        opdef = get_op(node.op)
        if not opdef.differentiable:
            return
        if opdef.jvp is None:
            raise UnsupportedError(
                f"{self.who}: op '{node.op}' (at {node.loc}) has no JVP rule, so it cannot be "
                "differentiated in forward mode"
            )
        env = self.env
        ts = [tan.get(v) for v in node.inputs]
        outs = opdef.jvp(
            ts, [env[o] for o in node.outputs], *[env[v] for v in node.inputs], **node.attrs
        )
        for o, t in zip(node.outputs, outs):
            if t is not None and o in self.active:
                tan[o] = _fit(t, o, node, "JVP")

    def release_unneeded(self) -> None:
        """Keep only what reverse rules read, so an eager vjp_fn does not pin every
        forward intermediate in memory."""
        needed = set(self.wrt_inputs) | set(self.main_outputs)
        for node in self.nodes:
            if any(o in self.active for o in node.outputs):
                needed.update(node.inputs)
                needed.update(node.outputs)
        self.env = {v: x for v, x in self.env.items() if v in needed}


def _add(a: Any, b: Any) -> Any:
    from .ops.elementwise import add

    return add(a, b)


def _normalize_argnums(argnums: int | Sequence[int], nargs: int, who: str) -> list[int]:
    nums = [argnums] if isinstance(argnums, int) else list(argnums)
    out = []
    for k in nums:
        if not -nargs <= k < nargs:
            raise GpuGraphError(f"{who}: argnums names argument {k}, but {nargs} were given")
        out.append(k % nargs)
    return out


def vjp(fn: Callable, *primals: Any, has_aux: bool = False) -> tuple:
    """``(out, vjp_fn)`` (or ``(out, vjp_fn, aux)``): ``vjp_fn(ct)`` returns one cotangent
    pytree per primal. Every primal must be floating point."""
    # vjp_fn runs after the caller has its arrays back (JAX's are immutable, PyTorch checks a
    # version counter): an eager vjp works on copies of the primals, of arrays the function
    # closed over, and hands out copies of its results; traced, every value is immutable
    eager = current_trace() is None
    fwd = _Forward("vjp", fn, primals, range(len(primals)), has_aux, own=eager)
    fwd.release_unneeded()
    out = fwd.out_values(own=eager)

    def vjp_fn(cotangent: Any) -> tuple:
        leaves, tree = flatten(cotangent)
        if len(leaves) != fwd.n_main:
            raise GpuGraphError(
                f"vjp_fn: the cotangent has {len(leaves)} arrays but the output has "
                f"{fwd.n_main}; pass one per output, shaped like it"
            )
        for v, c in zip(fwd.main_outputs, leaves):
            if tuple(type_of(c).shape) != v.type.shape:
                raise ShapeError(
                    f"vjp_fn: cotangent of shape {type_of(c).shape} for an output of shape "
                    f"{v.type.shape}"
                )
        return tuple(fwd.wrt_structure(range(len(primals)), fwd.backward(leaves)))

    if has_aux:
        main, aux = out
        return main, vjp_fn, aux
    return out, vjp_fn


def value_and_grad(
    fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False
) -> Callable:
    """A function returning ``(fn(*args), gradient)``; with has_aux ``((value, aux), grad)``.
    ``fn`` must return a floating-point scalar."""

    def value_and_grad_fn(*args: Any, **kwargs: Any) -> tuple:
        nums = _normalize_argnums(argnums, len(args), "grad")
        f = _with_kwargs(fn, kwargs)  # keyword arguments pass through, not differentiated
        fwd = _Forward("grad", f, args, nums, has_aux)
        _check_scalar(fwd, f)
        (out_v,) = fwd.main_outputs
        seed = _fill(out_v.type, 1, fwd.env[out_v])
        grads = fwd.wrt_structure(nums, fwd.backward([seed]))
        return fwd.out_values(), grads[0] if isinstance(argnums, int) else tuple(grads)

    functools.update_wrapper(value_and_grad_fn, fn)  # signature: gg.jit binds keywords by it
    value_and_grad_fn.__name__ = f"value_and_grad_{_fn_name(fn)}"
    return value_and_grad_fn


def _with_kwargs(fn: Callable, kwargs: dict) -> Callable:
    if not kwargs:
        return fn

    @functools.wraps(fn)
    def bound(*args: Any) -> Any:
        return fn(*args, **kwargs)

    return bound


def grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """The gradient of a scalar-valued ``fn`` with respect to ``args[argnums]`` (a pytree,
    or a tuple of them when argnums is a tuple); with has_aux returns ``(grad, aux)``."""
    vg = value_and_grad(fn, argnums, has_aux)

    def grad_fn(*args: Any, **kwargs: Any) -> Any:
        value, g = vg(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    functools.update_wrapper(grad_fn, fn)
    grad_fn.__name__ = f"grad_{_fn_name(fn)}"
    return grad_fn


def _check_scalar(fwd: _Forward, fn: Callable) -> None:
    outs = fwd.main_outputs
    if len(outs) != 1 or outs[0].type.shape != ():
        got = ", ".join(str(v.type) for v in outs) or "nothing"
        raise ShapeError(
            f"grad: {_fn_name(fn)} must return one scalar, got {got}; use gg.vjp for "
            "non-scalar outputs (or has_aux=True to return extra values)"
        )
    if not _is_float(outs[0].type):
        raise DTypeError(
            f"grad: {_fn_name(fn)} returned {outs[0].type}; only a floating-point scalar can "
            "be differentiated"
        )


def jvp(fn: Callable, primals: Sequence[Any], tangents: Sequence[Any]) -> tuple:
    """Forward mode: ``(fn(*primals), J @ tangents)``, tangents shaped like the primals."""
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise GpuGraphError("jvp: primals and tangents must be tuples (one entry per argument)")
    p_leaves, p_tree = flatten(tuple(primals))
    t_leaves, t_tree = flatten(tuple(tangents))
    if p_tree != t_tree:
        raise GpuGraphError("jvp: tangents must have the same structure as the primals")
    for x, t in zip(p_leaves, t_leaves):
        if type_of(x).shape != type_of(t).shape:
            raise ShapeError(
                f"jvp: tangent of shape {type_of(t).shape} for a primal of shape {type_of(x).shape}"
            )
    fwd = _Forward("jvp", fn, tuple(primals), range(len(primals)), False)
    tangents_out = fwd.forward_tangents(t_leaves)
    return fwd.out_values(), unflatten(fwd.out_tree, tangents_out)
