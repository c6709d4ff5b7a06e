"""matmul with NumPy semantics: batched, broadcasting, 1-D operands promoted and squeezed.

The primitive is ``matmul(a, b, perm_a=None, perm_b=None)``: ``transpose(a, perm_a) @
transpose(b, perm_b)``, where a permutation is a view, never a copy. The ``matmul`` function
folds at trace time:

* a transpose that feeds an operand into that operand's ``perm`` (so ``x @ w.T`` and the
  ``swapaxes`` of every matmul VJP reach BLAS as a transposed layout, not as a copied array),
  when the view keeps the source's last axis among the matrix axes (NumPy's matmul then calls
  BLAS on it directly, with a transpose flag where needed);
* ``(..., m, k) @ (k, n)`` into one 2-d GEMM ``(M, k) @ (k, n)`` through reshapes (views in
  the memory plan), so a batch of row blocks is one BLAS call, and its VJP is two 2-d GEMMs
  rather than a batched product summed over the batch.

A batched product with a batched right operand is one ``np.matmul`` / ``cupy.matmul`` call.
NumPy loops over the batch inside that call. CuPy runs one strided-batched cuBLAS GEMM, but
for 3-d and higher operands it makes them C-contiguous first, so there a transposed batched
view is copied inside CuPy. 2-d products go through ``cupy.dot``, which passes a transposed
view to cuBLAS as a transpose flag. How many
BLAS threads a GEMM may use inside a compiled call is the NumPy backend's choice, see
``gpugraph.backends.blas``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..ir import TensorType
from .core import bind, promote, type_of
from .elementwise import add, broadcast_shapes
from .half import accumulate_in_float32
from .registry import OpDef, register
from .shape import reshape, sum_to_shape, transpose


def _permuted(t: TensorType, perm: tuple[int, ...] | None) -> tuple[int, ...]:
    return t.shape if perm is None else tuple(t.shape[p] for p in perm)


def _matmul_infer(types, perm_a=None, perm_b=None):
    a, b = types
    sa, sb = _permuted(a, perm_a), _permuted(b, perm_b)
    if len(sa) < 2 or len(sb) < 2:
        raise ShapeError(f"matmul: operands must be at least 2-D here, got {a} and {b}")
    if sa[-1] != sb[-2]:
        raise ShapeError(
            f"matmul: contraction dimensions differ: {sa} @ {sb} ({sa[-1]} != {sb[-2]})"
        )
    if a.dtype != b.dtype or a.dtype.kind == "b":
        raise ShapeError(f"matmul: operands must share a numeric dtype, got {a.dtype}, {b.dtype}")
    batch = broadcast_shapes("matmul", [sa[:-2], sb[:-2]])
    return [TensorType(batch + (sa[-2], sb[-1]), a.dtype)]


def _matmul_impl(xp, a, b, out=None, perm_a=None, perm_b=None):
    if perm_a is not None:
        a = xp.transpose(a, perm_a)  # a view: matmul reads it with the permuted strides
    if perm_b is not None:
        b = xp.transpose(b, perm_b)
    if a.shape[-1] == 1 and a.ndim >= 2 and b.ndim >= 2:
        # k = 1 (an outer product, e.g. a weight gradient of one step): each element is one
        # product, so the broadcast multiply is the same numbers at half a GEMM call's cost
        return xp.multiply(a, b, out=out)
    if a.ndim > 2 and b.ndim == 2 and a.shape[-2] < 16:
        # A stack of a few rows each (an ONNX attention's (seq, 1, d) projection) times one
        # matrix: matmul would run one small product per leading index (128 of (1, 256) @
        # (256, 768) cost 5 ms against 0.5 ms), so it is one GEMM over all rows instead.
        rows = a.reshape(-1, a.shape[-1])  # a view where the strides allow, else a copy
        shape = a.shape[:-1] + (b.shape[-1],)
        if out is None:
            return xp.matmul(rows, b).reshape(shape)
        if out.flags.c_contiguous:  # so the 2-D shape of ``out`` is a view of it
            xp.matmul(rows, b, out=out.reshape(rows.shape[0], b.shape[-1]))
        else:
            out[...] = xp.matmul(rows, b).reshape(shape)
        return out
    return xp.matmul(a, b, out=out)


def _view(x: Any, perm: tuple[int, ...] | None) -> Any:
    """The operand as the product sees it (a transpose node the matmul function folds)."""
    return x if perm is None else transpose(x, perm)


def _swap(x: Any) -> Any:
    nd = type_of(x).ndim
    return transpose(x, (*range(nd - 2), nd - 1, nd - 2))


def _matmul_vjp(cts, outs, a, b, perm_a=None, perm_b=None):
    g = cts[0]
    av, bv = _view(a, perm_a), _view(b, perm_b)
    if perm_a is None:
        ga = sum_to_shape(matmul(g, _swap(bv)), type_of(av).shape)
    else:  # (g @ bv^T)^T = bv @ g^T, laid out as a: a transpose view folds into the product
        y = sum_to_shape(matmul(bv, _swap(g)), _swapped(type_of(av).shape))
        ga = transpose(y, _back(perm_a))
    if perm_b is None:
        gb = sum_to_shape(matmul(_swap(av), g), type_of(bv).shape)
    else:  # (av^T @ g)^T = g^T @ av
        y = sum_to_shape(matmul(_swap(g), av), _swapped(type_of(bv).shape))
        gb = transpose(y, _back(perm_b))
    return [ga, gb]


def _swapped(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:-2] + (shape[-1], shape[-2])


def _back(perm: tuple[int, ...]) -> tuple[int, ...]:
    """The permutation taking Y = swap(transpose(x, perm)) back to x's layout (the identity,
    so no node, when ``perm`` is the swap of the last two axes)."""
    nd = len(perm)
    s = (*range(nd - 2), nd - 1, nd - 2)
    return tuple(s[j] for j in _inverse(perm))


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def _matmul_jvp(ts, outs, a, b, perm_a=None, perm_b=None):
    ta, tb = ts
    av, bv = _view(a, perm_a), _view(b, perm_b)
    terms = [
        matmul(_view(ta, perm_a), bv) if ta is not None else None,
        matmul(av, _view(tb, perm_b)) if tb is not None else None,
    ]
    terms = [t for t in terms if t is not None]
    if not terms:
        return [None]
    return [terms[0] if len(terms) == 1 else add(*terms)]


register(
    OpDef(
        "matmul",
        "linalg",
        _matmul_infer,
        _matmul_impl,
        vjp=_matmul_vjp,
        jvp=_matmul_jvp,
        out_kw=True,
        extra={"flops": lambda node: _matmul_flops(node)},
    )
)


def _matmul_flops(node: Any) -> int:
    """2*M*N*K over the whole (batched) product: what a backend's BLAS policy looks at."""
    a = node.inputs[0].type
    k = _permuted(a, node.attrs.get("perm_a"))[-1]
    return 2 * node.outputs[0].type.size * k


def _fold_transpose(x: Any) -> tuple[Any, tuple[int, ...] | None]:
    """(source, perm) when ``x`` is a traced chain of transposes whose composite view BLAS can
    read in place (the source's last axis stays one of the two matrix axes), else (x, None)."""
    value = getattr(x, "value", None)
    node = getattr(value, "node", None)
    if node is None or node.op != "transpose":
        return x, None
    perm = tuple(range(len(value.type.shape)))
    while node is not None and node.op == "transpose":
        perm = tuple(node.attrs["perm"][p] for p in perm)
        value = node.inputs[0]
        node = value.node
    nd = len(perm)
    if nd - 1 not in perm[-2:]:
        return x, None
    if perm == tuple(range(nd)):
        return type(x)(x.trace, value), None
    return type(x)(x.trace, value), perm


@accumulate_in_float32
def matmul(a: Any, b: Any) -> Any:
    """Matrix product as np.matmul: 1-D operands are promoted to matrices and squeezed back."""
    a, b = promote(a, b)
    ta, tb = type_of(a), type_of(b)
    if ta.ndim == 0 or tb.ndim == 0:
        raise ShapeError(f"matmul: scalar operands are not allowed ({ta} @ {tb}); use multiply")
    a2 = reshape(a, (1,) + ta.shape) if ta.ndim == 1 else a
    b2 = reshape(b, tb.shape + (1,)) if tb.ndim == 1 else b
    out = _product(a2, b2)
    shape = type_of(out).shape
    if ta.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if tb.ndim == 1:
        shape = shape[:-1]
    return reshape(out, shape)


def _product(a: Any, b: Any) -> Any:
    """a @ b for operands of rank >= 2, with the folds of the module docstring."""
    sa, pa = _fold_transpose(a)
    sb, pb = _fold_transpose(b)
    shape_a, shape_b = type_of(a).shape, type_of(b).shape
    if pa is None and len(shape_a) > 2 and len(shape_b) == 2 and shape_a[-1] == shape_b[0]:
        # (..., m, k) @ (k, n): one (M, k) @ (k, n) GEMM over the row blocks
        flat = reshape(sa, (math.prod(shape_a[:-1]), shape_a[-1]))
        return reshape(_bind(flat, sb, None, pb), shape_a[:-1] + (shape_b[-1],))
    return _bind(sa, sb, pa, pb)


def _bind(a: Any, b: Any, perm_a: tuple | None, perm_b: tuple | None) -> Any:
    attrs = {k: v for k, v in (("perm_a", perm_a), ("perm_b", perm_b)) if v is not None}
    return bind("matmul", a, b, **attrs)


def dot(a: Any, b: Any) -> Any:
    return matmul(a, b)


__all__ = ["matmul", "dot", "np"]
