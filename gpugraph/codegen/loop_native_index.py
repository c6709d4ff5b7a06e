"""Indexing and data movement in a native loop (``loop_native.py``), as pointers or as lines
of the loop function itself (so that an index out of range can stop it):

* ``take``: a row by a scalar index on axis 0 (``xs[i]``) is a pointer into the array; any
  other gather (an index array, another axis) copies each indexed block;
* ``take_grad``: the scatter-add adjoint of a gather, in index order as ``np.add.at``;
* ``slice``: one contiguous block, as a pointer;
* ``broadcast_to``: a copy loop reading each output element's source element.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from .cuda import c_strides, c_type
from .loop_native_ops import RERUN_HOST, Emitter

TAKE_INDEX = {
    "raise": "if (i{k} < -{d}LL || i{k} >= {d}LL) {{ *(long long*)status = {bad}; return; }}\n"
    "if (i{k} < 0) i{k} += {d}LL;",
    "wrap": "i{k} %= {d}LL;\nif (i{k} < 0) i{k} += {d}LL;",
    "clip": "i{k} = i{k} < 0 ? 0 : (i{k} >= {d}LL ? {d}LL - 1 : i{k});",
}


def take_row(node, names: dict, lines: list[str], em: Emitter) -> str:
    """A gather by ``take``: a row of a contiguous array by a scalar index on axis 0 (the loop
    counter's ``xs[i]``) is a pointer into it, no copy; any other (an index array, another
    axis) copies each indexed block into the output's slot. An index out of range under
    mode="raise" stops the loop with status RERUN_HOST (the runner then reruns it
    host-driven, which raises NumPy's error)."""
    a, idx = node.inputs
    axis = node.attrs["axis"]
    d = a.shape[axis] if a.shape else 0
    if idx.dtype.kind not in "iu" or d == 0:
        raise UnsupportedError(f"take of {a.type} by {idx.type} on axis {axis}")
    k = em.scratch_names
    em.scratch_names += 1
    rule = TAKE_INDEX[node.attrs.get("mode", "raise")].format(k=k, d=d, bad=RERUN_HOST)
    it = c_type(idx.dtype)
    if idx.shape == () and axis == 0:
        lines.append(f"long long i{k} = (long long)*(const {it}*){names[idx]};")
        lines += rule.splitlines()
        lines.append(f"char* const r{k} = (char*){names[a]} + i{k} * {a.type.nbytes // d}LL;")
        return f"r{k}"
    out = em.slot(node.output)
    pre = int(np.prod(a.shape[:axis]))
    block = int(np.prod(a.shape[axis + 1 :])) * a.dtype.itemsize  # bytes per indexed block
    n = idx.type.size
    lines += [
        f"for (long long p{k} = 0; p{k} < {pre}LL; ++p{k}) {{",
        f"  for (long long j{k} = 0; j{k} < {n}LL; ++j{k}) {{",
        f"    long long i{k} = (long long)((const {it}*){names[idx]})[j{k}];",
        *("    " + x for x in rule.splitlines()),
        f"    std::memcpy((char*){out} + (p{k} * {n}LL + j{k}) * {block}LL,",
        f"                (const char*){names[a]} + (p{k} * {d}LL + i{k}) * {block}LL, {block});",
        "  }",
        "}",
    ]
    return out


def slice_view(node, names: dict) -> str:
    """A static slice that is one contiguous block of its input (``x[0]``, ``x[2:5]``,
    ``x[1, 2:4]`` of a row-major array): a pointer into it, no copy. Others raise
    UnsupportedError."""
    a = node.inputs[0]
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    out = node.output.shape
    # one block: one index on every axis before the first it takes more of, unit steps there,
    # and every later axis whole
    f = next((k for k, n in enumerate(out) if n != 1), len(out))
    block = f == len(out) or (
        steps[f] == 1 and all(out[k] == a.shape[k] for k in range(f + 1, len(out)))
    )
    if not block:
        raise UnsupportedError(f"slice of {a.type} to {node.output.type} (not one block)")
    offset = sum(int(b) * st for b, st in zip(starts, c_strides(a.shape))) * a.dtype.itemsize
    return f"((char*){names[a]} + {offset}LL)"


def _index_var(node, d: int, em: Emitter) -> tuple[int, str]:
    """A fresh index variable number and the lines applying ``node``'s take mode to it."""
    k = em.scratch_names
    em.scratch_names += 1
    return k, TAKE_INDEX[node.attrs.get("mode", "raise")].format(k=k, d=d, bad=RERUN_HOST)


def take_grad(node, names: dict, lines: list[str], em: Emitter) -> str:
    """``take_grad`` (the gradient of a gather): zeros, then each gathered block added back at
    its index, in index order as ``np.add.at`` (repeated indices accumulate)."""
    g, idx = node.inputs
    axis, d = node.attrs["axis"], int(node.attrs["dim"])
    if idx.dtype.kind not in "iu" or g.dtype.kind not in "fi" or d == 0:
        raise UnsupportedError(f"take_grad of {g.type} by {idx.type} on axis {axis}")
    out = em.slot(node.output)
    k, rule = _index_var(node, d, em)
    pre = int(np.prod(g.shape[:axis]))
    post = int(np.prod(g.shape[axis + len(idx.shape) :]))
    n, ct, it = idx.type.size, c_type(g.dtype), c_type(idx.dtype)
    lines += [
        f"std::memset({out}, 0, {node.output.type.nbytes});",
        f"for (long long p{k} = 0; p{k} < {pre}LL; ++p{k}) {{",
        f"  for (long long j{k} = 0; j{k} < {n}LL; ++j{k}) {{",
        f"    long long i{k} = (long long)((const {it}*){names[idx]})[j{k}];",
        *("    " + x for x in rule.splitlines()),
        f"    {ct}* __restrict o{k} = ({ct}*){out} + (p{k} * {d}LL + i{k}) * {post}LL;",
        f"    const {ct}* __restrict s{k} = (const {ct}*){names[g]} "
        f"+ (p{k} * {n}LL + j{k}) * {post}LL;",
        f"    for (long long c{k} = 0; c{k} < {post}LL; ++c{k}) o{k}[c{k}] += s{k}[c{k}];",
        "  }",
        "}",
    ]
    return out


MAX_BROADCAST_MAP = 1 << 16  # elements of a general broadcast's index map (a constant)


def broadcast(node, names: dict, lines: list[str], em: Emitter) -> str:
    """``broadcast_to``: each output element copies its source element: the one element, the
    trailing row repeated (``i % size``), or, for another pattern (a column), through an index
    map passed as a constant."""
    a, out_v = node.inputs[0], node.output
    n, size, ct = out_v.type.size, a.type.size, c_type(a.dtype)
    full = tuple(out_v.shape)
    out = em.slot(out_v)
    k = em.scratch_names
    em.scratch_names += 1
    if size == 1:
        src = "0"
    elif tuple(a.shape) == full[len(full) - len(a.shape) :]:
        src = f"i{k} % {size}LL"
    elif n <= MAX_BROADCAST_MAP:
        index = np.arange(size, dtype=np.int64).reshape(a.shape)
        src = f"((const long long*)K{len(em.consts)})[i{k}]"
        em.consts.append(np.ascontiguousarray(np.broadcast_to(index, full).reshape(-1)))
    else:
        raise UnsupportedError(f"broadcast_to of {a.type} to {out_v.type} (over {n} elements)")
    lines.append(
        f"for (long long i{k} = 0; i{k} < {n}LL; ++i{k}) "
        f"(({ct}*){out})[i{k}] = ((const {ct}*){names[a]})[{src}];"
    )
    return out
