"""Reading an ONNX protobuf: parsing, initializers (external data kept inside the model's
folder), the op and arity checks, subgraphs with their outer-scope names, and onnx's shape
inference as a conflict check. ``load`` (in ``__init__``) assembles the model from these."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import GpuGraphError, UnsupportedError
from .model import InputSpec, OnnxError, SubGraph, _Node
from .ops_string import HOST_OPS
from .table import OPS, NodeCtx, check_size

_DEFAULT_DOMAINS = ("", "ai.onnx")
_TRAINING = "ai.onnx.preview.training"
# Ops of other domains that have a converter (registered under their op type).
_OTHER_DOMAIN_OPS = {(_TRAINING, "Gradient")}


def is_mapped(n) -> bool:
    if n.domain in _DEFAULT_DOMAINS:
        return n.op_type in OPS
    return (n.domain, n.op_type) in _OTHER_DOMAIN_OPS


MIN_OPSET, MAX_OPSET = 6, 21


def _check_arity(n, opset: int) -> None:
    """The node's input and output counts against the ONNX schema of its op at ``opset``."""
    from onnx import defs

    try:
        domain = "" if n.domain in _DEFAULT_DOMAINS else n.domain
        schema = defs.get_schema(n.op_type, opset, domain)
    except Exception:  # noqa: BLE001  (onnx raises its own SchemaError)
        raise UnsupportedError(f"ONNX op {n.op_type} has no schema at opset {opset}") from None
    where = f"ONNX node {n.name or '<unnamed>'!r} ({n.op_type}, opset {opset})"
    if not schema.min_input <= len(n.input) <= schema.max_input:
        lo, hi = schema.min_input, schema.max_input
        raise OnnxError(f"{where} has {len(n.input)} inputs; the op takes {lo} to {hi}")
    if not schema.min_output <= len(n.output) <= schema.max_output:
        lo, hi = schema.min_output, schema.max_output
        raise OnnxError(f"{where} has {len(n.output)} outputs; the op takes {lo} to {hi}")


def _parse(model: Any):
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model, onnx.ModelProto):
        return model, None
    base = None
    if isinstance(model, (str, os.PathLike)):
        base = os.path.dirname(os.path.abspath(os.fspath(model)))
        with open(model, "rb") as f:
            data = f.read()
    elif isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    else:
        raise GpuGraphError(
            f"gg.onnx.load takes a path, bytes or an onnx.ModelProto, got {type(model).__name__}"
        )
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise OnnxError(f"not a readable ONNX model: {e}") from None
    if not proto.HasField("graph"):
        raise OnnxError("not an ONNX model: it has no graph")
    return proto, base


def _load_external(tensor, base: str | None) -> None:
    """Read one initializer's external data, refusing paths that leave ``base``
    (absolute paths, ``..``, symlinks out: CVE-2022-25882)."""
    from onnx.external_data_helper import load_external_data_for_tensor

    info = {e.key: e.value for e in tensor.external_data}
    loc = info.get("location", "")
    if base is None:
        raise OnnxError(
            f"initializer {tensor.name!r} has external data {loc!r}: pass external_data_dir"
        )
    root = os.path.realpath(base)
    path = os.path.realpath(os.path.join(root, loc))
    if (
        os.path.isabs(loc)
        or ".." in loc.replace("\\", "/").split("/")
        or os.path.commonpath([root, path]) != root
    ):
        raise OnnxError(f"initializer {tensor.name!r}: external data path {loc!r} leaves {base!r}")
    if not os.path.isfile(path):
        raise OnnxError(
            f"initializer {tensor.name!r}: external data file {loc!r} not found in {base!r}"
        )
    load_external_data_for_tensor(tensor, root)
    tensor.data_location = 0  # DEFAULT: the data is in the tensor now
    del tensor.external_data[:]


def _check_ops(g, opset: int, nested: bool = False) -> None:
    """Every node of ``g`` and of its subgraphs has a converter (else UnsupportedError);
    string ops only in the main graph (its host pre-stage)."""
    from onnx import AttributeProto

    for n in g.node:
        if not is_mapped(n):
            dom = f"domain {n.domain!r} " if n.domain not in _DEFAULT_DOMAINS else ""
            raise UnsupportedError(
                f"ONNX op {dom}{n.op_type} (opset {opset}, node {n.name or '<unnamed>'!r}) "
                "has no gpugraph mapping"
            )
        if nested and n.op_type in HOST_OPS:
            raise UnsupportedError(
                f"ONNX op {n.op_type} (opset {opset}, node {n.name or '<unnamed>'!r}) inside a "
                "subgraph: string ops run only in the main graph's host pre-stage"
            )
        for a in n.attribute:
            if a.type == AttributeProto.GRAPH:
                _check_ops(a.g, opset, True)
            elif a.type == AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _check_ops(sub, opset, True)


def _read_initializer(t, base: str | None) -> np.ndarray:
    from onnx import helper, numpy_helper

    try:
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
    except Exception:  # noqa: BLE001  (an unknown type code)
        raise OnnxError(f"initializer {t.name!r} has unknown data type {t.data_type}") from None
    check_size(t.dims, dtype, f"initializer {t.name!r}")  # before anything is read
    if t.data_location == 1:  # EXTERNAL
        _load_external(t, base)
    try:
        return numpy_helper.to_array(t).copy()
    except GpuGraphError:
        raise
    except Exception as e:  # noqa: BLE001  (onnx raises several types for bad tensors)
        raise OnnxError(f"initializer {t.name!r} cannot be read: {e}") from None


def _subgraph(g, opset: int, outer: set[str], base: str | None, where: str) -> SubGraph:
    """A subgraph attribute (If branch, Loop/Scan body). Names it reads that it does not
    define are outer-scope values: they must exist in ``outer``, and become its ``free``."""
    constants = {t.name: _read_initializer(t, base) for t in g.initializer}
    inputs = tuple(vi.name for vi in g.input)
    local = set(constants) | set(inputs)
    nodes, free = _convert_nodes(g.node, opset, local, outer, base)  # fills ``local``
    outputs = tuple(o.name for o in g.output)
    for name in outputs:
        if name not in local:
            if name not in outer:
                raise OnnxError(f"{where}: subgraph output {name!r} is not defined")
            free.add(name)
    return SubGraph(g.name, nodes, inputs, outputs, constants, tuple(sorted(free)))


def _gradient_forward(n, attrs: dict, nodes: list[_Node], where: str) -> SubGraph:
    """The Gradient node's function ``xs -> y``: the nodes before it in its graph, which it
    re-runs on the xs being differentiated (every other value they read comes in as free)."""
    xs = tuple(x.decode() if isinstance(x, bytes) else x for x in attrs.get("xs", ()))
    y = attrs.get("y", b"")
    y = y.decode() if isinstance(y, bytes) else y
    if tuple(n.input[: len(xs)]) != xs:
        raise OnnxError(f"{where}: its inputs {list(n.input)} do not start with xs {list(xs)}")
    produced = {o for nd in nodes for o in nd.outputs}
    if y not in produced:
        raise UnsupportedError(f"{where}: y={y!r} is not computed by a node before it")
    free = {i for nd in nodes for i in nd.inputs if i and i not in produced and i not in xs}
    return SubGraph("gradient", list(nodes), xs, (y,), {}, tuple(sorted(free)))


def _convert_nodes(
    protos, opset: int, defined: set[str], outer: set[str], base: str | None
) -> tuple[list[_Node], set[str]]:
    """The nodes of one graph, checked in order (arity, every input defined before it reads
    it). Returns them and the outer-scope names they read (``outer``: names visible from the
    enclosing graphs). A node holding subgraphs gets their free names appended to its inputs,
    listed in ``attrs['__free__']``."""
    from onnx import AttributeProto, helper

    nodes, free = [], set()
    for n in protos:
        _check_arity(n, opset)
        where = f"ONNX node {n.name or '<unnamed>'!r} ({n.op_type})"
        for name in n.input:
            if name and name not in defined:
                if name not in outer:
                    raise OnnxError(f"{where} reads {name!r}, which nothing defines before it")
                free.add(name)
        attrs, sub_free = {}, set()
        for a in n.attribute:
            if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                subs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)
                conv = [_subgraph(s, opset, defined | outer, base, where) for s in subs]
                for sg in conv:
                    sub_free.update(sg.free)
                attrs[a.name] = conv[0] if a.type == AttributeProto.GRAPH else conv
            else:
                attrs[a.name] = helper.get_attribute_value(a)
        if n.domain == _TRAINING and n.op_type == "Gradient":
            fwd = _gradient_forward(n, attrs, nodes, where)
            attrs["__forward__"] = fwd
            sub_free.update(fwd.free)
        extra: tuple[str, ...] = ()
        if sub_free:
            extra = tuple(sorted(sub_free))
            attrs["__free__"] = extra
            free.update(x for x in extra if x not in defined)
        defined.update(o for o in n.output if o)
        nodes.append(
            _Node(
                NodeCtx(n.op_type, n.name, opset, len(n.output)),
                tuple(n.input) + extra,
                tuple(n.output),
                attrs,
            )
        )
    return nodes, free


def _spec(vi) -> InputSpec:
    """A value_info's name, dtype and shape (a dim: int, symbolic name or None); for a
    sequence of tensors, its items' dtype and shape."""
    from onnx import helper

    seq = vi.type.WhichOneof("value") == "sequence_type"
    tt = vi.type.sequence_type.elem_type.tensor_type if seq else vi.type.tensor_type
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    except Exception:  # noqa: BLE001  (an unknown type code)
        raise OnnxError(f"ONNX value {vi.name!r} has unknown element type {tt.elem_type}") from None
    shape = None
    if tt.HasField("shape"):
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim
        )
    return InputSpec(vi.name, dtype, shape, seq)


def _inference_view(proto):
    """``proto`` for shape inference without its large initializers' data (serializing a
    100 MB model dominated the load): each initializer over 4,096 elements becomes a graph
    input of the same type and shape. Small ones (shapes, axes) stay, for data propagation."""
    from onnx import GraphProto, ModelProto, helper

    g = proto.graph
    view = ModelProto(ir_version=max(proto.ir_version, 4), opset_import=proto.opset_import)
    gv = GraphProto(
        name=g.name, node=g.node, input=g.input, output=g.output, value_info=g.value_info
    )
    listed = {vi.name for vi in g.input}
    for t in g.initializer:
        if np.prod(t.dims, dtype=np.int64) <= 4096 or t.data_location == 1:
            gv.initializer.append(t)
        elif t.name not in listed:
            gv.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    view.graph.CopyFrom(gv)
    return view


def _infer_shapes(proto) -> None:
    """onnx's strict shape inference: a declared shape, rank or element type that differs from
    what the ops imply is an OnnxError at load. Other failures of the inference (an op it
    cannot type in an old IR version, a model over 2 GiB) are not conflicts: the traced values
    are still checked against the declarations when the model runs."""
    from onnx import shape_inference

    try:
        shape_inference.infer_shapes(
            _inference_view(proto), check_type=True, strict_mode=True, data_prop=True
        )
    except shape_inference.InferenceError as e:
        msg = str(e).strip()
        if "differ" in msg:  # "Inferred shape and existing shape differ ...", "... type differs"
            raise OnnxError(f"shape-inference conflict: {msg}") from None
    except Exception:  # noqa: BLE001, S110  (see the docstring)
        pass
