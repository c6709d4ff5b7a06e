"""Contractions and diagonals, all *composite*: einsum lowered to transposes, reshapes and one
batched matmul per contracted pair (left to right), tensordot and outer through it or
broadcasting, diagonal as a ``take`` of flat positions, trace as its sum, meshgrid as
broadcasts. Their derivatives are those of the primitives they are built from."""

from __future__ import annotations

import math
import string
from typing import Any

import numpy as np

from ..errors import ArgumentError, ShapeError, UnsupportedError
from .core import type_of
from .half import accumulate_in_float32
from .index import take
from .linalg import matmul
from .reduce import sum as gg_sum
from .shape import broadcast_to, normalize_axis, reshape, transpose

_LETTERS = string.ascii_letters


# ---- diagonal / trace ---------------------------------------------------------------------
def diagonal(x: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Any:
    """np.diagonal: the two axes are removed and the diagonal becomes the last axis."""
    nd = type_of(x).ndim
    if nd < 2:
        raise ShapeError(f"diagonal: needs at least 2 dims, got {type_of(x).shape}")
    a1, a2 = normalize_axis("diagonal", axis1, nd), normalize_axis("diagonal", axis2, nd)
    if a1 == a2:
        raise ShapeError("diagonal: axis1 and axis2 must differ")
    rest = [d for d in range(nd) if d not in (a1, a2)]
    shape = type_of(x).shape
    n, m = shape[a1], shape[a2]
    k = int(offset)
    rows = np.arange(max(0, min(n, m - k) if k >= 0 else min(n + k, m)))
    pos = (rows * m + rows + k) if k >= 0 else ((rows - k) * m + rows)
    flat = reshape(transpose(x, [*rest, a1, a2]), [shape[d] for d in rest] + [n * m])
    return take(flat, pos.astype(np.int64), axis=len(rest))


@accumulate_in_float32
def trace(x: Any, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Any:
    """np.trace: the sum of the diagonal."""
    return gg_sum(diagonal(x, offset, axis1, axis2), axis=-1)


# ---- einsum -------------------------------------------------------------------------------
def _parse(subscripts: str, n_ops: int) -> tuple[list[str], str]:
    s = subscripts.replace(" ", "")
    ins, arrow, out = s.partition("->")
    terms = ins.split(",")
    if len(terms) != n_ops:
        raise ArgumentError(f"einsum: {len(terms)} subscripts for {n_ops} operands")
    if not all(c in _LETTERS for t in terms for c in t) or not all(c in _LETTERS for c in out):
        raise ArgumentError(f"einsum: subscripts must be letters, got {subscripts!r}")
    if not arrow:  # implicit output: the labels used once, in alphabetical order
        counts = {c: ins.count(c) for c in set(ins) if c != ","}
        out = "".join(sorted(c for c, k in counts.items() if k == 1))
    if len(set(out)) != len(out) or any(c not in ins for c in out):
        raise ArgumentError(f"einsum: bad output subscripts {out!r}")
    return terms, out


def _reduce_single(x: Any, labels: str, keep: set[str]) -> tuple[Any, str]:
    """Take diagonals of repeated labels and sum the labels nobody else needs."""
    while len(set(labels)) != len(labels):
        c = next(c for c in labels if labels.count(c) > 1)
        i = labels.index(c)
        j = labels.index(c, i + 1)
        x = diagonal(x, 0, i, j)
        labels = labels[:i] + labels[i + 1 : j] + labels[j + 1 :] + c
    drop = [i for i, c in enumerate(labels) if c not in keep]
    if drop:
        x = gg_sum(x, axis=tuple(drop))
        labels = "".join(c for c in labels if c in keep)
    return x, labels


def _contract(a: Any, la: str, b: Any, lb: str, keep: set[str]) -> tuple[Any, str]:
    batch = [c for c in la if c in lb and c in keep]
    contr = [c for c in la if c in lb and c not in keep]
    left = [c for c in la if c not in lb]
    right = [c for c in lb if c not in la]
    size = dict(zip(la, type_of(a).shape)) | dict(zip(lb, type_of(b).shape))

    def prod(cs):
        return math.prod(size[c] for c in cs)

    a3 = reshape(
        transpose(a, [la.index(c) for c in batch + left + contr]),
        (prod(batch), prod(left), prod(contr)),
    )
    b3 = reshape(
        transpose(b, [lb.index(c) for c in batch + contr + right]),
        (prod(batch), prod(contr), prod(right)),
    )
    y = reshape(matmul(a3, b3), [size[c] for c in batch + left + right])
    return y, "".join(batch + left + right)


def _expand_ellipsis(subscripts: str, operands: tuple) -> tuple[str, list[Any]]:
    """``...`` replaced by fresh letters, one per broadcast dim (aligned from the right, as
    NumPy's broadcasting), and the operands broadcast over those dims where they have size 1
    or fewer of them. Implicit output: the ``...`` dims first, then the labels used once."""
    s = subscripts.replace(" ", "")
    ins, arrow, out = s.partition("->")
    terms = ins.split(",")
    if len(terms) != len(operands):
        raise ArgumentError(f"einsum: {len(terms)} subscripts for {len(operands)} operands")
    if any(t.count("...") > 1 or t.replace("...", "").count(".") for t in [*terms, out]):
        raise ArgumentError(f"einsum: '.' only as one '...' per operand, got {subscripts!r}")
    ranks = []  # how many dims each operand's ``...`` stands for
    for t, x in zip(terms, operands):
        k = type_of(x).ndim - len(t.replace("...", ""))
        if k < 0 or (k > 0 and "..." not in t):
            raise ShapeError(f"einsum: subscripts {t!r} for an operand of shape {type_of(x).shape}")
        ranks.append(k if "..." in t else 0)
    rank = max(ranks, default=0)
    fresh = [c for c in _LETTERS if c not in s][:rank]
    if len(fresh) < rank:
        raise UnsupportedError(f"einsum: too many labels in {subscripts!r}")
    dims = [
        type_of(x).shape[t.index("...") : t.index("...") + k] if "..." in t else ()
        for t, x, k in zip(terms, operands, ranks)
    ]
    try:
        full = np.broadcast_shapes(*dims)
    except ValueError:
        raise ShapeError(f"einsum: the '...' dims {dims} do not broadcast together") from None
    new_terms, new_ops = [], []
    for t, x, k in zip(terms, operands, ranks):
        if "..." not in t:
            new_terms.append(t)
            new_ops.append(x)
            continue
        i = t.index("...")
        shape = type_of(x).shape
        letters = "".join(fresh[rank - k :])
        if tuple(shape[i : i + k]) != tuple(full[rank - k :]):
            x = broadcast_to(x, (*shape[:i], *full[rank - k :], *shape[i + k :]))
        new_terms.append(t.replace("...", letters))
        new_ops.append(x)
    if arrow:
        if "..." not in out and rank:
            raise ShapeError(
                f"einsum: {subscripts!r}: the output leaves out the {rank} '...' dims (as "
                "NumPy, write them in the output, or sum them afterwards)"
            )
        out = out.replace("...", "".join(fresh))
    else:
        once = sorted(c for c in set(ins.replace("...", "").replace(",", "")) if ins.count(c) == 1)
        out = "".join(fresh) + "".join(once)
    return ",".join(new_terms) + "->" + out, new_ops


@accumulate_in_float32
def einsum(subscripts: str, *operands: Any) -> Any:
    """np.einsum: explicit or implicit output, ``...`` broadcasting; operands are contracted
    left to right, each pair as one batched matmul after transposes and reshapes."""
    if not operands:
        raise ArgumentError("einsum: needs at least one operand")
    if "." in subscripts:
        subscripts, operands = _expand_ellipsis(subscripts, operands)
    terms, out = _parse(subscripts, len(operands))
    sizes: dict[str, int] = {}
    for t, x in zip(terms, operands):
        shape = type_of(x).shape
        if len(t) != len(shape):
            raise ShapeError(f"einsum: subscripts {t!r} for an operand of shape {shape}")
        for c, n in zip(t, shape):
            if sizes.setdefault(c, n) != n:
                raise ShapeError(f"einsum: label {c!r} has sizes {sizes[c]} and {n}")

    def needed(i: int) -> set[str]:  # labels used after operand i, or in the output
        return set(out).union(*terms[i + 1 :]) if i + 1 < len(terms) else set(out)

    x, lx = _reduce_single(operands[0], terms[0], needed(0))
    for i in range(1, len(operands)):
        keep = needed(i)
        y, ly = _reduce_single(operands[i], terms[i], keep | set(lx))
        x, lx = _contract(x, lx, y, ly, keep)
    x, lx = _reduce_single(x, lx, set(out))
    return transpose(x, [lx.index(c) for c in out]) if lx != out else x


@accumulate_in_float32
def tensordot(a: Any, b: Any, axes: Any = 2) -> Any:
    """np.tensordot: ``axes`` is an int (the last of a with the first of b) or two lists."""
    na, nb = type_of(a).ndim, type_of(b).ndim
    if isinstance(axes, (int, np.integer)):
        k = int(axes)
        if not 0 <= k <= min(na, nb):
            raise ShapeError(f"tensordot: cannot contract {k} axes of ranks {na} and {nb}")
        ax_a, ax_b = list(range(na - k, na)), list(range(k))
    else:
        ax_a, ax_b = ([x] if isinstance(x, (int, np.integer)) else list(x) for x in axes)
        ax_a = [normalize_axis("tensordot", i, na) for i in ax_a]
        ax_b = [normalize_axis("tensordot", i, nb) for i in ax_b]
        if len(ax_a) != len(ax_b):
            raise ShapeError("tensordot: axes of a and b must have the same length")
    la = _LETTERS[:na]
    lb = list(_LETTERS[na : na + nb])
    for i, j in zip(ax_a, ax_b):
        lb[j] = la[i]
    out = [c for i, c in enumerate(la) if i not in ax_a] + [
        c for j, c in enumerate(lb) if j not in ax_b
    ]
    return einsum(f"{la},{''.join(lb)}->{''.join(out)}", a, b)


def outer(a: Any, b: Any) -> Any:
    """np.outer: both operands flattened."""
    return reshape(a, (-1, 1)) * reshape(b, (1, -1))


def meshgrid(*xs: Any, indexing: str = "xy") -> list[Any]:
    """np.meshgrid of 1-d arrays; "xy" (default) swaps the first two output axes."""
    if indexing not in ("xy", "ij"):
        raise ArgumentError(f"meshgrid: indexing must be 'xy' or 'ij', got {indexing!r}")
    sizes = [type_of(x).size for x in xs]
    shape = list(sizes)
    if indexing == "xy" and len(xs) >= 2:
        shape[0], shape[1] = shape[1], shape[0]
    out = []
    for i, x in enumerate(xs):
        d = i if indexing == "ij" or len(xs) < 2 or i > 1 else 1 - i
        view = [1] * len(xs)
        view[d] = sizes[i]
        out.append(broadcast_to(reshape(x, view), shape))
    return out


__all__ = ["diagonal", "einsum", "meshgrid", "outer", "tensordot", "trace"]
