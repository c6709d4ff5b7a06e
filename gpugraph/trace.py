"""gg.jit: trace a Python function into a Graph, one compiled entry per input signature."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .autograph_ops import record as record_conversions
from .errors import GpuGraphError, TraceError
from .interop import as_array
from .ir import SUPPORTED_DTYPES, Graph, TensorType, check_shape, freeze
from .ops.core import _TYPE_CACHE, check_dtype, is_array, is_python_scalar, type_of
from .pytree import TreeDef, flatten, leaf_paths, unflatten
from .runtime import Compiled, Options
from .tracer import Trace, Tracer


@dataclass(frozen=True)
class ShapeDtype:
    """An abstract argument for ``fn.lower``: a shape and a dtype, no data."""

    __pytree_leaf__ = True  # a frozen dataclass, but an argument leaf, not a pytree node

    shape: tuple[int, ...]
    dtype: Any = np.float32

    def __post_init__(self) -> None:
        dtype = check_dtype(self.dtype, "ShapeDtype")
        object.__setattr__(self, "shape", check_shape(self.shape, "ShapeDtype", dtype.itemsize))
        object.__setattr__(self, "dtype", dtype)


def static_key(v: Any) -> Any:
    """The cache key of a static argument: its value and its type, so that 1, 1.0 and True
    (equal and equally hashed in Python), 0.0 and -0.0, or [0] and (0,) are different
    signatures."""
    if isinstance(v, (list, tuple)):
        return (type(v).__qualname__, tuple(static_key(e) for e in v))
    if isinstance(v, dict):
        return ("dict", tuple(sorted(((k, static_key(e)) for k, e in v.items()), key=repr)))
    if isinstance(v, float):  # bits: -0.0 is not 0.0, and NaN is itself
        return ("float", v.hex())
    if isinstance(v, np.generic):
        return ("scalar", v.dtype.str, v.tobytes())
    return (type(v).__qualname__, freeze(v))


_FAST_SCALARS = (bool, int, float)
# NumPy scalar types that may be arguments (the supported dtypes' types): a set, since the
# fast key tests membership on every argument of every call
_NUMPY_SCALARS = frozenset(np.dtype(d).type for d in SUPPORTED_DTYPES)
_SCALAR_TYPES = _NUMPY_SCALARS | frozenset(_FAST_SCALARS)


_DICT = object()  # the fast key's token for a dict node (a type token could be a leaf's)


def fast_key(args: tuple) -> tuple | None:
    """A cheap cache key for a call whose arguments are exact ndarrays, Python numbers and
    NumPy scalars nested in plain tuples, lists and dicts (None allowed), or None. See
    ``fast_flatten``."""
    found = fast_flatten(args)
    return None if found is None else found[0]


def fast_flatten(obj: Any) -> tuple[tuple, list] | None:
    """(key, leaves) of ``obj`` in one pass, or None where the full path is needed: exact
    types only (ndarray subclasses, NamedTuples, dataclasses, dict subclasses, tracers and
    foreign arrays take the full path). The key is one flat tuple of tokens: a NumPy array
    adds its shape and dtype; a CuPy array its type, shape and dtype; a Python number or NumPy
    scalar its type; a dict ``_DICT`` and its keys in insertion order; a tuple or list its
    type and length; None itself. Read left to right the tokens decode to one structure, so
    equal keys mean equal signatures (tree, types, shapes, dtypes) for ``_compiled_for``.
    A Python number's type stands for a weakly typed 0-d input (its value is checked per
    call); a NumPy scalar's type (np.float32, ...) fixes its dtype. The two never collide:
    np.float64 subclasses float, but ``type`` is exact. Leaves come in insertion order (a
    dict's), not the full path's sorted order: ``leaf_order`` maps between them."""
    key: list = []
    leaves: list = []
    return (tuple(key), leaves) if _walk_fast(obj, key, leaves) else None


def _walk_fast(o: Any, key: list, leaves: list) -> bool:
    t = type(o)
    if t is dict:
        key.append(_DICT)
        key.append(tuple(o))
        items: Any = o.values()
    elif t is tuple or t is list:
        key.append(t)
        key.append(len(o))
        items = o
    else:
        return _leaf_fast(o, t, key, leaves)
    # the common leaf inline, with local names: no call and no global lookup per leaf
    nd, add_leaf, add_key = np.ndarray, leaves.append, key.append
    for v in items:
        if type(v) is nd:
            add_leaf(v)
            add_key(v.shape)
            add_key(v.dtype)
        elif not _walk_fast(v, key, leaves):
            return False
    return True


def _leaf_fast(o: Any, t: type, key: list, leaves: list) -> bool:
    if t is np.ndarray:
        key.append(o.shape)
        key.append(o.dtype)
    elif t in _SCALAR_TYPES:
        key.append(t)
    elif o is None:
        key.append(None)
        return True
    elif t.__name__ == "ndarray" and is_array(o):  # CuPy
        key.append(t)
        key.append(o.shape)
        key.append(o.dtype)
    else:
        return False
    leaves.append(o)
    return True


class _Slot:
    """A leaf's place in insertion order, as a leaf of its own (for ``leaf_order``)."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i


def leaf_order(obj: Any) -> tuple[int, ...] | None:
    """For a tree ``fast_flatten`` accepts: the insertion-order index of each leaf in the full
    path's order (dict keys sorted), or None when the two orders are the same."""
    count = iter(range(1 << 62))

    def slots(o: Any) -> Any:
        t = type(o)
        if t is dict:
            return {k: slots(v) for k, v in o.items()}
        if t is tuple or t is list:
            return t(slots(v) for v in o)
        return None if o is None else _Slot(next(count))

    ordered = flatten(slots(obj), is_leaf=lambda x: type(x) is _Slot)[0]
    perm = tuple(s.i for s in ordered)
    return None if perm == tuple(range(len(perm))) else perm


def numpy_scalars_at(args: tuple) -> tuple[int, ...]:
    """The positions of NumPy scalars in ``args``: the fast path makes them 0-d arrays, as
    ``Compiled.check_args`` does on the full path."""
    return tuple(i for i, a in enumerate(args) if type(a) in _NUMPY_SCALARS)


def positional_names(fn: Callable) -> list[str]:
    """The names of ``fn``'s parameters that take positional arguments, in order (none when
    it has no inspectable signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def arg_label(names: Sequence[str], i: int) -> str:
    """How errors name positional argument ``i``: its parameter name, else ``args[i]``."""
    return names[i] if i < len(names) else f"args[{i}]"


def _is_leaf_arg(x: Any) -> bool:
    return isinstance(x, (ShapeDtype, Tracer)) or is_array(x) or is_python_scalar(x)


def leaf_type(x: Any, name: str) -> TensorType:
    if type(x) is np.ndarray:  # the common leaf: one TensorType per (shape, dtype), built once
        t = _TYPE_CACHE.get((x.shape, x.dtype))
        if t is not None:
            return t
    if isinstance(x, ShapeDtype):
        return TensorType(x.shape, x.dtype)
    if isinstance(x, Tracer):
        return x.value.type
    if is_python_scalar(x) or is_array(x):  # cached (and checked once) by ops.core.type_of
        return type_of(x, f"argument {name}")
    raise GpuGraphError(f"argument {name}: {_not_a_leaf(x)}")


def _not_a_leaf(x: Any) -> str:
    """Why ``x`` cannot be a traced argument, and what to do instead."""
    kind = type(x).__name__
    got = (
        f"expected a NumPy or CuPy array, a number or a nested tuple/list/dict of them, got {kind}"
    )
    if dataclasses.is_dataclass(x):
        return (
            f"{got}, a dataclass that is neither frozen nor registered as a pytree: "
            "gg.register_dataclass(type(x)) makes its fields arguments"
        )
    if isinstance(x, complex):
        return f"{got}; complex numbers are not supported"
    if hasattr(x, "__array__"):  # no __dlpack__ (else it would have been shared)
        return f"{got}, an array-like without __dlpack__; convert it first: np.asarray(x)"
    return f"{got} (if it is a setting, not data, mark it static with static_argnums)"


def trace_flat(
    fn: Callable,
    types: Sequence[TensorType],
    in_tree: TreeDef,
    names: Sequence[str] | None,
    label: str = "jit",
    concrete: Sequence[Any] | None = None,
) -> tuple[Graph, TreeDef, Trace]:
    """Run ``fn`` on tracers for the flattened arguments; return the graph, the output tree and
    the finished trace (its ``captures`` list the outer tracers the function closed over).
    ``concrete`` (eager autodiff) gives the arguments' values: Python control flow on the
    tracers then follows them (``Trace.concrete``)."""
    with Trace(label) as tr:
        tracers = [tr.new_input(t, n) for t, n in zip(types, names or [None] * len(types))]
        if concrete is not None:
            tr.concrete = {t.value: x for t, x in zip(tracers, concrete)}
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

    def __init__(
        self,
        fn: Callable,
        static_argnums: Sequence[int],
        options: Options,
        static_argnames: Sequence[str] = (),
        donate_argnums: Sequence[int] = (),
        autograph: bool = True,
    ):
        self.fn = fn
        self.donate_argnums = tuple(sorted(set(donate_argnums)))
        self.autograph = bool(autograph)
        self._converted: Callable | None = None
        self.static_argnums = tuple(sorted(set(static_argnums)))
        self.static_argnames = tuple(sorted(set(static_argnames)))
        self.options = options
        self._cache: dict[Any, Compiled] = {}
        # calls without keywords whose dynamic arguments are plain trees of arrays and
        # numbers: the fast key (statics' static_key first) -> the compiled entry, the
        # positions of NumPy scalars and leaf_order's map, so a repeated call skips binding,
        # naming, per-leaf types and per-leaf checks
        self._fast: dict[tuple, tuple[Compiled, tuple[int, ...], tuple[int, ...] | None]] = {}
        # without static arguments the fast key is the arguments' alone
        self._fast_ok = not self.static_argnums and not self.static_argnames
        try:
            self._sig: inspect.Signature | None = inspect.signature(fn)
            self._params = list(self._sig.parameters)
        except (TypeError, ValueError):
            self._sig, self._params = None, []
        if self._sig is not None:
            params = self._sig.parameters.values()
            takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
            unknown = [n for n in self.static_argnames if n not in self._params]
            if unknown and not takes_any:
                raise GpuGraphError(
                    f"static_argnames names {', '.join(map(repr, unknown))}, which "
                    f"{getattr(fn, '__name__', 'fn')} has no parameter for"
                )
        self._positional = positional_names(fn)
        # ``out=`` is gpugraph's (output buffers) unless fn has a parameter of that name
        self._out_kw = self._sig is None or not (
            "out" in self._params
            or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self._sig.parameters.values())
        )
        functools.update_wrapper(self, fn)

    def _arg_name(self, i: int) -> str:
        return arg_label(self._positional, i)

    def _bind(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Keyword arguments that name positional parameters become positions (so that
        static_argnums and the cache see one form of each call); keyword-only ones stay."""
        if not kwargs:
            return args, {}
        if self._sig is None:
            raise GpuGraphError(
                f"{getattr(self.fn, '__name__', 'fn')} has no inspectable signature, so it "
                f"cannot take keyword arguments ({', '.join(kwargs)}); pass them by position"
            )
        bound = self._sig.bind(*args, **kwargs)  # TypeError names a bad keyword, as Python
        return tuple(bound.args), dict(sorted(bound.kwargs.items()))

    def _static_positions(self, nargs: int) -> list[int]:
        static_idx = [i if i >= 0 else nargs + i for i in self.static_argnums]
        for i in static_idx:
            if not 0 <= i < nargs:
                raise GpuGraphError(f"static_argnums names argument {i}, but {nargs} were given")
        by_name = {i for i, n in enumerate(self._positional[:nargs]) if n in self.static_argnames}
        return sorted(set(static_idx) | by_name)

    def _split(
        self, args: tuple, kwargs: dict, static_idx: list[int]
    ) -> tuple[list, tuple, Callable]:
        nargs = len(args)
        dynamic: list[Any] = [a for i, a in enumerate(args) if i not in static_idx]
        static_kw = {k: v for k, v in kwargs.items() if k in self.static_argnames}
        dyn_kw = {k: v for k, v in kwargs.items() if k not in static_kw}
        if dyn_kw:
            dynamic.append(dyn_kw)
        static = (tuple((i, args[i]) for i in static_idx), tuple(static_kw.items()))
        for name, v in [(self._arg_name(i), v) for i, v in static[0]] + list(static_kw.items()):
            try:
                hash(static_key(v))
            except TypeError:
                raise GpuGraphError(
                    f"static argument {name} must be hashable, got {type(v).__name__}"
                ) from None

        def call(*dyn: Any) -> Any:
            it = iter(dyn)
            full = [dict(static[0])[i] if i in static_idx else next(it) for i in range(nargs)]
            kw = {**static_kw, **(next(it) if dyn_kw else {})}
            return self._user_fn()(*full, **kw)

        return dynamic, static, call

    def _user_fn(self) -> Callable:
        """``fn`` with Python control flow on traced values converted (autograph), once."""
        if self._converted is None:
            self._converted = self.fn
            if self.autograph:
                from .autograph import call

                self._converted = call(self.fn)  # functions, lambdas and bound methods
        return self._converted

    def _names(self, args: tuple, static_idx: list[int], dynamic_tree: TreeDef) -> list[str]:
        labels = [self._arg_name(i) for i in range(len(args)) if i not in static_idx]
        children = dynamic_tree.children
        names = []
        for k, child in enumerate(children[: len(labels)]):
            names.extend(leaf_paths(child, labels[k]))
        if len(children) > len(labels):  # the dynamic keyword arguments, a dict by name
            kw = children[-1]
            for key, child in zip(kw.keys, kw.children):
                names.extend(leaf_paths(child, str(key)))
        return names

    def _compiled_for(
        self, args: tuple, kwargs: dict, flat: tuple[list, TreeDef] | None = None
    ) -> tuple[Compiled, list]:
        """``flat``: ``flatten(args, is_leaf=_is_leaf_arg)`` when the caller has it and there
        are no keywords and no static arguments (then it is the dynamic arguments' flattening)."""
        args, kwargs = self._bind(args, kwargs)
        static_idx = self._static_positions(len(args))
        dynamic, static, call = self._split(args, kwargs, static_idx)
        if flat is not None and not kwargs and not static_idx:
            leaves, tree = flat
        else:
            leaves, tree = flatten(tuple(dynamic), is_leaf=_is_leaf_arg)
        nd = np.ndarray  # torch, JAX ... arrays: shared, not copied
        leaves = [x if type(x) is nd else as_array(x) for x in leaves]
        try:  # the leaves' names only matter for an error or a new entry: built lazily
            types = [leaf_type(x, "") for x in leaves]
        except GpuGraphError:
            names = self._names(args, static_idx, tree)
            types = [leaf_type(x, n) for x, n in zip(leaves, names)]  # raises, naming it
        key = (tree, tuple(types), static_key(static), self.options)
        compiled = self._cache.get(key)
        if compiled is None:
            names = self._names(args, static_idx, tree)
            with gc_paused(), record_conversions(self.autograph) as notes:
                graph, out_tree, _ = trace_flat(call, types, tree, names)
                graph.meta["autograph"] = list(notes)
                donated = self._donated_leaves(args, static_idx, tree)
                compiled = Compiled(graph, tree, out_tree, self.options, names, donated)
            compiled.reserve_out = self._out_kw
            self._cache[key] = compiled
        return compiled, leaves

    def _donated_leaves(self, args: tuple, static_idx: list[int], tree: TreeDef) -> list[int]:
        """The flat leaf indices of the arguments named by donate_argnums."""
        if not self.donate_argnums:
            return []
        nargs = len(args)
        wanted = {i if i >= 0 else nargs + i for i in self.donate_argnums}
        for i in sorted(wanted):
            if not 0 <= i < nargs:
                raise GpuGraphError(f"donate_argnums names argument {i}, but {nargs} were given")
            if i in static_idx:
                raise GpuGraphError(
                    f"argument {self._arg_name(i)} is both static and donated; only arrays "
                    "can be donated"
                )
        leaves, start = [], 0
        dynamic = [i for i in range(nargs) if i not in static_idx]
        for child, i in zip(tree.children, dynamic):
            n = child.num_leaves
            if i in wanted:
                leaves.extend(range(start, start + n))
            start += n
        return leaves

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` compiled for these arguments. ``out=`` (when ``fn`` has no parameter
        of that name): arrays to write the outputs into, in the output's structure; they are
        returned. Without it each call returns fresh arrays that stay valid."""
        found = self._fast_probe(args) if not kwargs else self._fast_probe_keywords(args, kwargs)
        if found is not None:  # the hot path: a signature seen before, plain trees of arrays
            hit = self._fast.get(found[0])
            if hit is not None:
                compiled, scalars_at, order = hit
                leaves = found[1] if order is None else [found[1][i] for i in order]
                return compiled.call_fast(leaves, scalars_at)
        out = kwargs.pop("out", None) if self._out_kw and "out" in kwargs else None
        leaves, whole = flatten((args, kwargs), is_leaf=_is_leaf_arg)
        if any(isinstance(x, Tracer) for x in leaves):
            if out is not None:
                raise GpuGraphError("out= cannot be used inside a traced function")
            # jit inside a trace: inline into the outer graph
            return self._user_fn()(*args, **kwargs)
        if any(isinstance(x, ShapeDtype) for x in leaves):
            raise GpuGraphError(
                "a gg.ShapeDtype was passed to a call; ShapeDtype describes an argument without "
                f"data for compiling only: use {getattr(self.fn, '__name__', 'fn')}.lower(...) "
                "with it, then call the result with arrays"
            )
        # without keywords, (args, {}) flattens to args' leaves and tree: not flattened again
        flat = None if kwargs else (leaves, whole.children[0])
        compiled, dyn_leaves = self._compiled_for(args, kwargs, flat)
        if out is None and found is not None:
            self._remember_fast(found, compiled, dyn_leaves)
        results = compiled.call_flat(dyn_leaves, compiled.flatten_out(out))
        return unflatten(compiled.out_tree, results)

    def _fast_probe(self, args: tuple) -> tuple[tuple, list, tuple] | None:
        """(fast key, leaves in insertion order, the dynamic arguments) of a call without
        keywords, or None for the full path. With static arguments the key starts with their
        ``static_key``, as the full path's does; one that is unhashable or out of range is left
        to the full path, which raises."""
        if self._fast_ok:
            found = fast_flatten(args)
            return None if found is None else (found[0], found[1], args)
        try:
            static_idx = self._static_positions(len(args))
            skey = static_key((tuple((i, args[i]) for i in static_idx), ()))
            hash(skey)
        except (GpuGraphError, TypeError):
            return None
        dyn = tuple(a for i, a in enumerate(args) if i not in static_idx)
        found = fast_flatten(dyn)
        return None if found is None else ((skey, found[0]), found[1], dyn)

    def _fast_probe_keywords(self, args: tuple, kwargs: dict) -> tuple[tuple, list, tuple] | None:
        """``_fast_probe`` of a call whose keywords all name positional parameters: bound to
        positions, it is the positional call (``_compiled_for`` binds it so too), and shares
        its fast key. Keyword-only parameters, ``out=`` and a binding error: the full path."""
        if self._out_kw and "out" in kwargs:
            return None
        try:
            bound, rest = self._bind(args, kwargs)
        except (TypeError, GpuGraphError):
            return None  # the full path raises it, after its own checks
        return None if rest else self._fast_probe(bound)

    def _remember_fast(
        self, found: tuple[tuple, list, tuple], compiled: Compiled, leaves: list
    ) -> None:
        """Enter this call's fast key for ``compiled``: with it the positions of NumPy scalars
        and the map from insertion order to the compiled entry's leaf order."""
        order = leaf_order(found[2])
        mine = found[1] if order is None else [found[1][i] for i in order]
        if len(mine) != len(leaves) or any(a is not b for a, b in zip(mine, leaves)):
            return  # not the full path's leaves (cannot happen for accepted trees): no entry
        scalars_at = numpy_scalars_at(leaves)
        # a donated NumPy scalar is consumed as the caller's object: the full path only
        if not (scalars_at and compiled.donated):
            self._fast[found[0]] = (compiled, scalars_at, order)

    def lower(self, *args: Any, **kwargs: Any) -> Compiled:
        """Compile for these arguments (arrays or gg.ShapeDtype specs) without running."""
        return self._compiled_for(args, kwargs)[0]

    @property
    def cache_size(self) -> int:
        """How many compiled entries (signatures) exist."""
        return len(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._fast.clear()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a signature is traced and compiled: the compiler
    allocates many small objects and keeps them alive, so a collection finds nothing to free
    and costs 10-25% of compile time on large graphs (measured on 5,000-op chains). The
    collector is re-enabled afterwards only if it was enabled before."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_argnums(nums: Any, what: str, hint: str = "") -> tuple[int, ...]:
    """static_argnums / donate_argnums as a tuple of ints (an int alone is one position; None
    is none)."""
    if nums is None:
        return ()
    if isinstance(nums, (int, np.integer)) and not isinstance(nums, bool):
        return (int(nums),)
    if isinstance(nums, (tuple, list)) and all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in nums
    ):
        return tuple(int(i) for i in nums)
    raise GpuGraphError(
        f"gg.jit: {what} must be an int or a sequence of ints (argument positions), "
        f"got {nums!r}{hint}"
    )


def jit(
    fn: Callable | None = None,
    *,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
    backend: str = "auto",
    optimize: bool = True,
    fuse: bool = True,
    streams: int | None = None,
    cuda_graph: bool = False,
    verify: bool = False,
    unsafe_math: bool = False,
    vectorize: bool = True,
    cond_to_select: bool = True,
    donate_argnums: int | Sequence[int] = (),
    autograph: bool = True,
) -> Any:
    """Trace ``fn`` into a static graph and compile it per input signature.

    Usable as ``@gg.jit`` or ``@gg.jit(static_argnums=1, backend="numpy")``. Keyword arguments
    work as in the Python call; ``static_argnames`` marks parameters static by name (whether
    they are passed by position or by keyword), ``static_argnums`` by position.
    ``unsafe_math=True`` allows rewrites that are not exact in IEEE arithmetic (``x*0 -> 0``).
    ``vectorize=False`` leaves the vector path (16-byte accesses) out of generated kernels.
    ``cond_to_select=False`` keeps every ``cond`` a region: by default a small one (cheap
    elementwise branches, small outputs) computes both branches and selects, so it fuses with
    its surroundings (docs/control-flow.md).
    ``donate_argnums`` gives those arguments' memory to the call (as in JAX): an output of the
    same shape and dtype may be written into it, and the donated array must not be used
    afterwards (NumPy marks it read-only; passing it again raises ``DonationError``). See
    ``gpugraph.buffers``.
    ``autograph=True`` converts Python ``if``/``while``/``for`` on traced values into
    gg.cond / gg.while_loop / gg.fori_loop / gg.scan (docs/control-flow.md); ``False`` traces
    the function as written. A static argument retraces for every new value (as in JAX).
    """
    static_argnums = _check_argnums(
        static_argnums, "static_argnums", "; name parameters with static_argnames"
    )
    donate_argnums = _check_argnums(donate_argnums, "donate_argnums")
    if isinstance(static_argnames, str):
        static_argnames = (static_argnames,)
    if static_argnames is None:
        static_argnames = ()
    if not isinstance(static_argnames, (tuple, list)) or not all(
        isinstance(n, str) for n in static_argnames
    ):
        raise GpuGraphError(
            f"gg.jit: static_argnames must be a str or a sequence of str, got {static_argnames!r}"
        )
    if streams is not None:
        if isinstance(streams, bool) or not isinstance(streams, (int, np.integer)) or streams < 1:
            raise GpuGraphError(
                "gg.jit: streams must be None (choose automatically) or an int >= 1 (the most "
                f"streams to use), got {streams!r}"
            )
        streams = int(streams)
    options = Options(
        backend, optimize, fuse, streams, cuda_graph, verify, unsafe_math, vectorize, cond_to_select
    )
    if fn is None:
        return lambda f: JitFunction(
            f, static_argnums, options, static_argnames, donate_argnums, autograph
        )
    return JitFunction(fn, static_argnums, options, static_argnames, donate_argnums, autograph)
