"""GatherND and ScatterND: the index tuples (the last axis of ``indices``) become one linear
row index into ``data`` seen as a matrix of (indexed dims) x (remaining dims), so each op is one
``gg.take`` or one ``gg.scatter`` of rows. A component outside its dim (after counting negative
ones from the end) makes the row index out of range, so the take/scatter raises
``IndexOutOfRangeError`` rather than reading a neighbouring row."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ops as _ops
from .table import NodeCtx, register, shape_of

gg = _ops.API


def _prod(dims) -> int:
    return int(np.prod(dims, dtype=np.int64))


def _row_index(node: NodeCtx, idx: Any, dims: tuple[int, ...]) -> Any:
    """``idx[..., k]`` into ``dims`` (k dims) as one int64 row-major index, or ``prod(dims)``
    (out of range) where any component is outside its dim."""
    if not np.issubdtype(np.dtype(idx.dtype), np.integer):
        raise node.unsupported(f"{idx.dtype} indices")
    k = len(dims)
    idx = gg["astype"](idx, np.int64)
    lin, bad = None, None
    for j, d in enumerate(dims):
        c = gg["getitem"](idx, (Ellipsis, j))
        c = gg["where"](gg["less"](c, np.int64(0)), gg["add"](c, np.int64(d)), c)
        out = gg["logical_or"](gg["less"](c, np.int64(0)), gg["greater_equal"](c, np.int64(d)))
        stride = np.int64(_prod(dims[j + 1 : k]))
        term = gg["multiply"](c, stride)
        lin = term if lin is None else gg["add"](lin, term)
        bad = out if bad is None else gg["logical_or"](bad, out)
    if lin is None:  # k == 0: every index tuple is empty and selects all of data
        return gg["zeros"](shape_of(idx)[:-1], np.int64)
    return gg["where"](bad, np.int64(_prod(dims)), lin)


@register("GatherND")
def _gather_nd(node: NodeCtx, ins: list, attrs: dict):
    data, idx = ins
    b = int(attrs.get("batch_dims", 0))
    ds, ishape = shape_of(data), shape_of(idx)
    k = ishape[-1]
    if b + k > len(ds) or ishape[:b] != ds[:b]:
        raise node.unsupported(f"indices {ishape} with batch_dims={b} for data {ds}")
    batch, inner, rest = ds[:b], ds[b : b + k], ds[b + k :]
    nb, ni = _prod(batch), _prod(inner)
    lin = _row_index(node, idx, inner)  # shape batch + M
    m_shape = ishape[b:-1]
    if b:  # rows of batch element i start at i * ni
        lin = gg["reshape"](lin, (nb, *m_shape))
        base = np.arange(nb, dtype=np.int64).reshape((nb,) + (1,) * len(m_shape)) * ni
        # an out-of-range index (== ni) must stay out of range after the shift
        lin = gg["where"](gg["equal"](lin, np.int64(ni)), np.int64(nb * ni), gg["add"](lin, base))
    rows = gg["reshape"](data, (nb * ni, *rest))
    return gg["reshape"](gg["take"](rows, lin, 0), (*batch, *m_shape, *rest))


@register("ScatterND")
def _scatter_nd(node: NodeCtx, ins: list, attrs: dict):
    data, idx, upd = ins
    reduce = attrs.get("reduction", "none")
    reduce = reduce.decode() if isinstance(reduce, bytes) else reduce
    if reduce not in ("none", "add", "mul", "min", "max"):
        raise node.unsupported(f"reduction={reduce!r}")
    ds, ishape = shape_of(data), shape_of(idx)
    k = ishape[-1]
    if k > len(ds) or shape_of(upd) != ishape[:-1] + ds[k:]:
        raise node.unsupported(f"updates {shape_of(upd)} for data {ds} and indices {ishape}")
    rest = ds[k:]
    n, r = _prod(ishape[:-1]), _prod(rest)
    lin = gg["reshape"](_row_index(node, idx, ds[:k]), (n, 1))
    index = gg["broadcast_to"](lin, (n, r))
    rows = gg["reshape"](data, (_prod(ds[:k]), r))
    out = gg["scatter"](rows, 0, index, gg["reshape"](upd, (n, r)), reduce=reduce)
    return gg["reshape"](out, ds)
