"""Selection ops: take_along_axis (torch/ONNX ``gather``) and its adjoint ``scatter`` (ONNX
ScatterElements / torch ``scatter``/``scatter_reduce``) as primitives, the nondifferentiable
``argsort``, and what is built on them: gather, scatter, scatter_add, sort, top_k, one_hot,
segment_sum and JAX's ``x.at[idx].set/add/mul/min/max``.

Index rule (every path): indices are integers in [-n, n) of the indexed axis, negative ones
counting from the end; anything else raises IndexOutOfRangeError (on CuPy the check reads one
flag back, as ``take``'s default mode)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ArgumentError, DTypeError, ShapeError, UnsupportedError
from ..ir import TensorType
from .core import DEFAULT_FLOAT, bind, is_python_scalar, type_of
from .creation import arange, zeros
from .elementwise import astype, equal, where
from .half import accumulate_in_float32
from .index import getitem, slice_axis, take_rows
from .registry import OpDef, register
from .shape import broadcast_to, expand_dims, normalize_axis, reshape

SCATTER_REDUCE = ("none", "add", "mul", "min", "max")
_UFUNC = {"add": "add", "mul": "multiply", "min": "minimum", "max": "maximum"}


def _check_index(op: str, x: TensorType, idx: TensorType, axis: int) -> None:
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"{op}: indices must be integers, got {idx.dtype}")
    if idx.ndim != x.ndim:
        raise ShapeError(f"{op}: indices {idx.shape} need the rank of the array {x.shape}")
    for d, (i, n) in enumerate(zip(idx.shape, x.shape)):
        if d != axis and i > n:
            raise ShapeError(
                f"{op}: indices {idx.shape} are larger than the array {x.shape} on axis {d}"
            )


def _grid(xp, idx, axis, dim):
    """The NumPy advanced index that picks ``x[..., idx[p], ...]`` (idx on ``axis``) for every
    position p of ``idx``; other axes index 0..idx.shape[d]-1 (torch.gather's rule)."""
    parts = []
    for d, n in enumerate(idx.shape):
        if d == axis:
            parts.append(take_rows(xp, idx, dim, "raise"))
        else:
            shape = [1] * idx.ndim
            shape[d] = n
            parts.append(xp.arange(n).reshape(shape))
    return tuple(parts)


def _gather(x, idx, axis):
    return bind("take_along_axis", x, idx, axis=axis)


# ---- take_along_axis / scatter (primitives) -----------------------------------------------
def _tal_infer(types, axis):
    _check_index("take_along_axis", types[0], types[1], axis)
    return [TensorType(types[1].shape, types[0].dtype)]


def _tal_impl(xp, a, idx, axis):
    return a[_grid(xp, idx, axis, a.shape[axis])]


def _scatter_infer(types, axis, reduce):
    x, idx, upd = types
    _check_index("scatter", x, idx, axis)
    if upd.shape != idx.shape:
        raise ShapeError(f"scatter: updates {upd.shape} must have the indices' shape {idx.shape}")
    if upd.dtype != x.dtype:
        raise DTypeError(f"scatter: updates {upd.dtype} must have the array's dtype {x.dtype}")
    return [x]


def _scatter_impl(xp, a, idx, upd, axis, reduce):
    out = a.copy()
    where_ = _grid(xp, idx, axis, a.shape[axis])
    if reduce == "none":
        out[where_] = upd  # duplicate positions: NumPy keeps the last; CuPy any one
    elif reduce == "mul" and xp is not np:
        # CuPy's ufunc.at has scatter kernels for add/min/max only (atomics; no atomic multiply)
        raise UnsupportedError("scatter with reduce='mul' is not supported on CuPy")
    else:
        getattr(xp, _UFUNC[reduce]).at(out, where_, upd)
    return out


def _scatter_vjp(cts, outs, x, idx, upd, axis, reduce):
    g = cts[0]
    if reduce == "add":
        return [g, None, _gather(g, idx, axis)]
    if reduce == "none":
        gx = bind(
            "scatter", g, idx, zeros(type_of(upd).shape, type_of(g).dtype), axis=axis, reduce="none"
        )
        return [gx, None, _gather(g, idx, axis)]
    if reduce == "mul":
        raise UnsupportedError(
            "scatter with reduce='mul': the gradient in the updates is not implemented (with "
            "duplicate indices it needs the product of the other updates; JAX refuses it too)"
        )
    # min/max: the gradient goes to whichever operands equal the result (all of a tie)
    out = outs[0]
    gx = where(equal(out, x), g, zeros((), type_of(g).dtype))
    hit = equal(_gather(out, idx, axis), upd)
    return [gx, None, where(hit, _gather(g, idx, axis), zeros((), type_of(g).dtype))]


def _scatter_jvp(ts, outs, x, idx, upd, axis, reduce):
    tx, _, tu = ts
    if tx is None and tu is None:
        return [None]
    dt = type_of(x).dtype
    tx = zeros(type_of(x).shape, dt) if tx is None else tx
    tu = zeros(type_of(upd).shape, dt) if tu is None else tu
    if reduce in ("none", "add"):
        return [bind("scatter", tx, idx, tu, axis=axis, reduce=reduce)]
    if reduce == "mul":
        raise UnsupportedError("scatter with reduce='mul': the jvp is not implemented")
    out = outs[0]
    from_x = where(equal(out, x), tx, zeros((), dt))
    hit = equal(_gather(out, idx, axis), upd)
    # the adjoint of the vjp above: every operand equal to the result (all of a tie) counts
    won = bind(
        "scatter",
        zeros(type_of(x).shape, dt),
        idx,
        where(hit, tu, zeros((), dt)),
        axis=axis,
        reduce="add",
    )
    return [from_x + won]


register(
    OpDef(
        "take_along_axis",
        "index",
        _tal_infer,
        _tal_impl,
        vjp=lambda cts, outs, a, idx, axis: [
            bind(
                "scatter",
                zeros(type_of(a).shape, type_of(cts[0]).dtype),
                idx,
                cts[0],
                axis=axis,
                reduce="add",
            ),
            None,
        ],
        jvp=lambda ts, outs, a, idx, axis: [
            None if ts[0] is None else bind("take_along_axis", ts[0], idx, axis=axis)
        ],
        doc="x at indices along one axis (np.take_along_axis, torch.gather)",
    )
)
register(
    OpDef(
        "scatter",
        "index",
        _scatter_infer,
        _scatter_impl,
        vjp=_scatter_vjp,
        jvp=_scatter_jvp,
        doc="x with updates written (or combined) at indices along one axis",
    )
)
register(
    OpDef(
        "argsort",
        "nondiff",
        lambda types, axis, descending: [TensorType(types[0].shape, np.dtype(np.int64))],
        lambda xp, a, axis, descending: _argsort_impl(xp, a, axis, descending),
        differentiable=False,
        doc="stable argsort; descending keeps ties in order and puts NaN first",
    )
)


def _argsort_impl(xp, a, axis, descending):
    if not descending:
        return xp.argsort(a, axis=axis, kind="stable")
    # stable descending: sort the reversed array ascending and read it backwards
    n = a.shape[axis]
    r = xp.flip(xp.argsort(xp.flip(a, axis), axis=axis, kind="stable"), axis)
    return (n - 1 - r).astype(np.int64)


# ---- public functions ---------------------------------------------------------------------
def _indices(op: str, idx: Any) -> Any:
    if is_python_scalar(idx) or isinstance(idx, (list, tuple)):
        idx = np.asarray(idx, dtype=np.int64)
    if type_of(idx).dtype.kind not in "iu":
        raise DTypeError(f"{op}: indices must be integers, got {type_of(idx).dtype}")
    return idx


def take_along_axis(x: Any, indices: Any, axis: int = -1) -> Any:
    """np.take_along_axis: indices of x's rank, broadcast against x on the other axes."""
    indices = _indices("take_along_axis", indices)
    xt, it = type_of(x), type_of(indices)
    if it.ndim != xt.ndim:
        raise ShapeError(f"take_along_axis: indices {it.shape} need the rank of x {xt.shape}")
    axis = normalize_axis("take_along_axis", axis, xt.ndim)
    shape = []
    for d, (n, i) in enumerate(zip(xt.shape, it.shape)):
        if d == axis:
            shape.append(i)
        elif n == i or 1 in (n, i):
            shape.append(max(n, i) if 0 not in (n, i) else 0)
        else:
            raise ShapeError(f"take_along_axis: indices {it.shape} do not broadcast with x")
    xs = list(shape)
    xs[axis] = xt.shape[axis]
    return bind("take_along_axis", broadcast_to(x, xs), broadcast_to(indices, shape), axis=axis)


def gather(x: Any, axis: int, index: Any) -> Any:
    """torch.gather / ONNX GatherElements: ``out[p] = x[p with p[axis] = index[p]]``; index
    may be smaller than x on the other axes."""
    index = _indices("gather", index)
    axis = normalize_axis("gather", axis, type_of(x).ndim)
    return bind("take_along_axis", x, index, axis=axis)


def scatter(x: Any, axis: int, index: Any, src: Any, reduce: str = "none") -> Any:
    """torch.scatter / scatter_reduce (ONNX ScatterElements), functional: a new array, x with
    ``src[p]`` written at ``p with p[axis] = index[p]``; ``reduce`` is "none" (duplicate
    positions keep an unspecified one of their updates), "add", "mul", "min" or "max" (which
    combine the updates with x). A scalar or larger ``src`` is cut to the index's shape."""
    if reduce not in SCATTER_REDUCE:
        raise ArgumentError(f"scatter: reduce must be one of {SCATTER_REDUCE}, got {reduce!r}")
    index = _indices("scatter", index)
    xt, it = type_of(x), type_of(index)
    axis = normalize_axis("scatter", axis, xt.ndim)
    src = _as_dtype(src, xt.dtype)
    st = type_of(src)
    if st.ndim == 0:
        src = broadcast_to(src, it.shape)
    elif st.shape != it.shape:
        if st.ndim != it.ndim or any(s < i for s, i in zip(st.shape, it.shape)):
            raise ShapeError(f"scatter: src {st.shape} is smaller than the index {it.shape}")
        for d, n in enumerate(it.shape):
            src = slice_axis(src, d, 0, n)
    return bind("scatter", x, index, src, axis=axis, reduce=reduce)


def scatter_add(x: Any, axis: int, index: Any, src: Any) -> Any:
    """torch.scatter_add, functional. NumPy runs ``np.add.at`` (deterministic, in index order);
    CuPy uses atomic adds, so float sums over duplicate indices may differ in the last bits
    from run to run."""
    return scatter(x, axis, index, src, reduce="add")


def _as_dtype(v: Any, dt: np.dtype) -> Any:
    if is_python_scalar(v) or isinstance(v, (list, tuple)):
        return np.asarray(v, dtype=dt)
    return astype(v, dt) if type_of(v).dtype != dt else v


def argsort(x: Any, axis: int = -1, descending: bool = False) -> Any:
    """Stable argsort (int64); NaN sorts last, or first when ``descending``."""
    axis = normalize_axis("argsort", axis, type_of(x).ndim)
    return bind("argsort", x, axis=axis, descending=bool(descending))


def sort(x: Any, axis: int = -1, descending: bool = False) -> Any:
    """Sorted copy; the gradient flows back through the permutation."""
    if type_of(x).ndim == 0:
        return x
    axis = normalize_axis("sort", axis, type_of(x).ndim)
    return bind("take_along_axis", x, argsort(x, axis, descending), axis=axis)


def top_k(x: Any, k: int, axis: int = -1) -> tuple[Any, Any]:
    """(values, indices) of the k largest along ``axis``, largest first (ties by position,
    NaN counts as largest), as torch.topk."""
    nd = type_of(x).ndim
    axis = normalize_axis("top_k", axis, nd)
    n = type_of(x).shape[axis]
    if not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ShapeError(f"top_k: k must be an int in [0, {n}], got {k!r}")
    idx = slice_axis(argsort(x, axis, descending=True), axis, 0, int(k))
    return bind("take_along_axis", x, idx, axis=axis), idx


def one_hot(indices: Any, num_classes: int, dtype: Any = DEFAULT_FLOAT) -> Any:
    """A new last axis of ``num_classes`` with 1 at each index; out-of-range indices give
    all zeros (as jax.nn.one_hot)."""
    indices = _indices("one_hot", indices)
    return astype(equal(expand_dims(indices, -1), arange(int(num_classes))), dtype)


@accumulate_in_float32
def segment_sum(data: Any, segment_ids: Any, num_segments: int) -> Any:
    """Sums of ``data`` rows by segment id (jax.ops.segment_sum with num_segments given, since
    shapes are static); ids outside [-num_segments, num_segments) raise. Deterministic on
    NumPy (``np.add.at``); atomic adds on CuPy."""
    segment_ids = _indices("segment_sum", segment_ids)
    dt, it = type_of(data), type_of(segment_ids)
    if dt.shape[: it.ndim] != it.shape:
        raise ShapeError(f"segment_sum: ids {it.shape} must lead data's shape {dt.shape}")
    return bind("take_grad", data, segment_ids, axis=0, dim=int(num_segments), mode="raise")


# ---- x.at[idx].op(v), as JAX --------------------------------------------------------------
class _At:
    def __init__(self, x: Any):
        self._x = x

    def __getitem__(self, idx: Any) -> _AtRef:
        return _AtRef(self._x, idx)


class _AtRef:
    """``x.at[idx]``: each method returns a new array (nothing is updated in place)."""

    def __init__(self, x: Any, idx: Any):
        self.x, self.idx = x, idx

    def get(self) -> Any:
        return getitem(self.x, self.idx)

    def set(self, v: Any) -> Any:
        return self._apply(v, "none")

    def add(self, v: Any) -> Any:
        return self._apply(v, "add")

    def multiply(self, v: Any) -> Any:
        return self._apply(v, "mul")

    mul = multiply

    def min(self, v: Any) -> Any:
        return self._apply(v, "min")

    def max(self, v: Any) -> Any:
        return self._apply(v, "max")

    def _apply(self, v: Any, reduce: str) -> Any:
        # Index the flat positions with the same index, then scatter on the flat array: one
        # rule for ints, slices, None, ... and integer arrays.
        t = type_of(self.x)
        pos = getitem(reshape(arange(t.size), t.shape), self.idx)
        pshape = type_of(pos).shape
        v = broadcast_to(_as_dtype(v, t.dtype), pshape)
        flat = bind(
            "scatter",
            reshape(self.x, (t.size,)),
            reshape(pos, (-1,)),
            reshape(v, (-1,)),
            axis=0,
            reduce=reduce,
        )
        return reshape(flat, t.shape)


def at(x: Any) -> _At:
    """``gg.at(x)[idx].set(v)`` for any array (traced arrays also have ``x.at``)."""
    return _At(x)


__all__ = [
    "argsort",
    "at",
    "gather",
    "one_hot",
    "scatter",
    "scatter_add",
    "segment_sum",
    "sort",
    "take_along_axis",
    "top_k",
]
