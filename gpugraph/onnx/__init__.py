"""ONNX import: ``gg.onnx.load(model)`` turns an ONNX model into a pure gpugraph function.

Each ONNX node is converted by one entry of the op table (``OPS``, in ``table.py``; the
converters live in ``ops_*.py``). Every node is checked against the table when the model is
loaded, so an unsupported op is an ``UnsupportedError``
before anything runs. Floating-point initializers are the model's parameters (``m.params``,
the first argument of ``m.fn``, so ``gg.grad`` fine-tunes them); integer initializers are
constants, so shape arithmetic on them folds while tracing. The ``onnx`` package is needed
only here (``pip install gpugraph[onnx]``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UnsupportedError
from . import (  # noqa: F401  (they fill the op table)
    ops_control,
    ops_math,
    ops_more,
    ops_nd,
    ops_nn,
    ops_rnn,
    ops_select,
    ops_seq,
    ops_shape,
    ops_string,
)
from .model import InputSpec, OnnxError, OnnxModel, _shape_arg_names
from .reader import (
    _DEFAULT_DOMAINS,
    MAX_OPSET,
    MIN_OPSET,
    _check_ops,
    _convert_nodes,
    _infer_shapes,
    _parse,
    _read_initializer,
    _spec,
    is_mapped,
)
from .table import LIMITS, OPS

__all__ = [
    "LIMITS",
    "OPS",
    "InputSpec",
    "OnnxError",
    "OnnxModel",
    "is_mapped",
    "load",
    "op_table_markdown",
]


def load(model: Any, *, external_data_dir: str | None = None) -> OnnxModel:
    """Load an ONNX model (a path, bytes or an ``onnx.ModelProto``) as an ``OnnxModel``."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UnsupportedError(
            "gg.onnx.load needs the onnx package: pip install gpugraph[onnx]"
        ) from None
    proto, base = _parse(model)
    base = external_data_dir or base
    g = proto.graph
    opset = max((o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS), default=0)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedError(
            f"ONNX opset {opset} (gpugraph imports opsets {MIN_OPSET} to {MAX_OPSET})"
        )

    # Every node (in subgraphs too) is checked before anything is converted or run.
    _check_ops(g, opset)

    params: dict[str, np.ndarray] = {}
    constants: dict[str, np.ndarray] = {}
    shape_args = _shape_arg_names(g.node)  # initializers read as shapes stay constants
    for t in g.initializer:
        arr = _read_initializer(t, base)
        trainable = np.issubdtype(arr.dtype, np.floating) and t.name not in shape_args
        (params if trainable else constants)[t.name] = arr

    inputs = []
    for vi in g.input:
        if vi.name in params or vi.name in constants:
            continue  # before IR 4 initializers are listed as inputs too
        if not (vi.type.HasField("tensor_type") or _is_tensor_sequence(vi.type)):
            raise UnsupportedError(
                f"ONNX input {vi.name!r}: only tensor and tensor-sequence inputs are supported"
            )
        inputs.append(_spec(vi))
    declared = {
        vi.name: _spec(vi)
        for vi in (*g.output, *g.value_info)
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type
    }

    defined = set(params) | set(constants) | {s.name for s in inputs}
    nodes, _ = _convert_nodes(g.node, opset, defined, set(), base)
    outputs = tuple(o.name for o in g.output)
    for o in g.output:
        if o.name not in defined:
            raise OnnxError(
                f"ONNX graph output {o.name!r} is not defined by any node, input or initializer"
            )
        if o.type.WhichOneof("value") not in (None, "tensor_type") and not _is_tensor_sequence(
            o.type
        ):
            raise UnsupportedError(
                f"ONNX graph output {o.name!r} is a {o.type.WhichOneof('value')}: only tensor "
                "and tensor-sequence outputs are supported"
            )
    _infer_shapes(proto)
    return OnnxModel(nodes, params, constants, tuple(inputs), outputs, opset, declared)


def _is_tensor_sequence(t) -> bool:
    return t.WhichOneof("value") == "sequence_type" and t.sequence_type.elem_type.HasField(
        "tensor_type"
    )


_FAMILIES = {
    "ops_math": "elementwise, matrix, reductions",
    "ops_nn": "convolution, pooling, normalization, softmax",
    "ops_shape": "shape, indexing, constants",
    "ops_more": "composite activations, reductions, depth/space",
    "ops_select": "top-k, gather/scatter elements, one-hot, einsum, resize/upsample",
    "ops_nd": "gather/scatter by index tuples",
    "ops_rnn": "recurrent layers (gg.scan)",
    "ops_control": "control flow, Gradient (subgraphs)",
    "ops_seq": "sequences (traced as lists)",
    "ops_string": "strings (a host pre-stage on NumPy, before the compiled graph)",
}


def op_table_markdown() -> str:
    """The op coverage table of docs/onnx.md, generated from ``OPS`` (a test keeps the page
    in sync)."""
    groups: dict[str, list[str]] = {}
    for op, fn in OPS.items():
        groups.setdefault(fn.__module__.rsplit(".", 1)[-1], []).append(op)
    lines = ["| family (converter file) | ONNX op types |", "| --- | --- |"]
    for mod, family in _FAMILIES.items():
        ops = ", ".join(f"`{op}`" for op in sorted(groups.pop(mod, [])))
        lines.append(f"| {family} (`{mod}.py`) | {ops} |")
    assert not groups, f"converters outside the known files: {groups}"
    return "\n".join(lines) + "\n"
