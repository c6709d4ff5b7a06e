"""gg.jit: trace a Python function into a Graph, one compiled entry per input signature."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import GpuGraphError, TraceError
from .ir import Graph, TensorType, freeze
from .ops.core import check_dtype, is_array, is_python_scalar, scalar_default_dtype
from .pytree import TreeDef, flatten, leaf_paths, unflatten
from .runtime import Compiled, Options
from .tracer import Trace, Tracer


@dataclass(frozen=True)
class ShapeDtype:
    """An abstract argument for ``fn.lower``: a shape and a dtype, no data."""

    shape: tuple[int, ...]
    dtype: Any = np.float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "dtype", check_dtype(self.dtype, "ShapeDtype"))


def _is_leaf_arg(x: Any) -> bool:
    return isinstance(x, (ShapeDtype, Tracer)) or is_array(x) or is_python_scalar(x)


def leaf_type(x: Any, name: str) -> TensorType:
    if isinstance(x, ShapeDtype):
        return TensorType(x.shape, x.dtype)
    if isinstance(x, Tracer):
        return x.value.type
    if is_python_scalar(x):
        return TensorType((), scalar_default_dtype(x), weak=True)
    if is_array(x):
        return TensorType(x.shape, check_dtype(x.dtype, f"argument {name}"))
    raise GpuGraphError(
        f"argument {name}: expected an array, a number or a nested tuple/list/dict of them, "
        f"got {type(x).__name__} (mark it static with static_argnums if it is a setting)"
    )


def trace_flat(
    fn: Callable, types: Sequence[TensorType], in_tree: TreeDef, names: Sequence[str] | None
) -> tuple[Graph, TreeDef, Trace]:
    """Run ``fn`` on tracers for the flattened arguments; return the graph and output tree."""
    with Trace("jit") as tr:
        tracers = [tr.new_input(t, n) for t, n in zip(types, names or [None] * len(types))]
        args = unflatten(in_tree, tracers)
        out = fn(*args)
        out_leaves, out_tree = flatten(out)
        for i, leaf in enumerate(out_leaves):
            if not (isinstance(leaf, Tracer) or is_array(leaf) or is_python_scalar(leaf)):
                raise TraceError(
                    f"output {i} of {getattr(fn, '__name__', 'fn')} is a "
                    f"{type(leaf).__name__}; traced functions must return arrays (or nested "
                    "tuples/lists/dicts of arrays)"
                )
        values = [tr.lift(leaf) for leaf in out_leaves]
    graph = tr.builder.build(values)
    return graph, out_tree, tr


class JitFunction:
    """The object ``gg.jit`` returns: call it, ``lower`` it, or inspect its cache."""

    def __init__(self, fn: Callable, static_argnums: Sequence[int], options: Options):
        self.fn = fn
        self.static_argnums = tuple(sorted(set(static_argnums)))
        self.options = options
        self._cache: dict[Any, Compiled] = {}
        try:
            self._params = list(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            self._params = []
        functools.update_wrapper(self, fn)

    def _arg_name(self, i: int) -> str:
        return self._params[i] if i < len(self._params) else f"args[{i}]"

    def _split(self, args: tuple) -> tuple[list, tuple, Callable]:
        nargs = len(args)
        static_idx = [i if i >= 0 else nargs + i for i in self.static_argnums]
        for i in static_idx:
            if not 0 <= i < nargs:
                raise GpuGraphError(f"static_argnums names argument {i}, but {nargs} were given")
        dynamic = [a for i, a in enumerate(args) if i not in static_idx]
        static = tuple((i, args[i]) for i in static_idx)
        for i, v in static:
            try:
                hash(freeze(v))
            except TypeError:
                raise GpuGraphError(
                    f"static argument {self._arg_name(i)} must be hashable, got {type(v).__name__}"
                ) from None

        def call(*dyn: Any) -> Any:
            it = iter(dyn)
            full = [dict(static)[i] if i in static_idx else next(it) for i in range(nargs)]
            return self.fn(*full)

        return dynamic, static, call

    def _names(self, args: tuple, dynamic_tree: TreeDef) -> list[str]:
        dyn_idx = [i for i in range(len(args)) if i not in self.static_argnums]
        names = []
        for k, child in enumerate(dynamic_tree.children):
            names.extend(leaf_paths(child, self._arg_name(dyn_idx[k])))
        return names

    def _compiled_for(self, args: tuple) -> tuple[Compiled, list]:
        dynamic, static, call = self._split(args)
        leaves, tree = flatten(tuple(dynamic), is_leaf=_is_leaf_arg)
        names = self._names(args, tree)
        types = [leaf_type(x, n) for x, n in zip(leaves, names)]
        key = (tree, tuple(types), freeze(static), self.options)
        compiled = self._cache.get(key)
        if compiled is None:
            graph, out_tree, _ = trace_flat(call, types, tree, names)
            compiled = Compiled(graph, tree, out_tree, self.options, names)
            self._cache[key] = compiled
        return compiled, leaves

    def __call__(self, *args: Any) -> Any:
        leaves, _ = flatten(args, is_leaf=_is_leaf_arg)
        if any(isinstance(x, Tracer) for x in leaves):
            return self.fn(*args)  # jit inside a trace: inline into the outer graph
        compiled, dyn_leaves = self._compiled_for(args)
        return unflatten(compiled.out_tree, compiled.call_flat(dyn_leaves))

    def lower(self, *args: Any) -> Compiled:
        """Compile for these arguments (arrays or gg.ShapeDtype specs) without running."""
        return self._compiled_for(args)[0]

    @property
    def cache_size(self) -> int:
        """How many compiled entries (signatures) exist."""
        return len(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()


def jit(
    fn: Callable | None = None,
    *,
    static_argnums: int | Sequence[int] = (),
    backend: str = "auto",
    optimize: bool = True,
    fuse: bool = True,
    streams: int | None = None,
    cuda_graph: bool = False,
    verify: bool = False,
    unsafe_math: bool = False,
) -> Any:
    """Trace ``fn`` into a static graph and compile it per input signature.

    Usable as ``@gg.jit`` or ``@gg.jit(static_argnums=1, backend="numpy")``.
    ``unsafe_math=True`` allows rewrites that are not exact in IEEE arithmetic (``x*0 -> 0``).
    """
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    options = Options(backend, optimize, fuse, streams, cuda_graph, verify, unsafe_math)
    if fn is None:
        return lambda f: JitFunction(f, static_argnums, options)
    return JitFunction(fn, static_argnums, options)
