"""The loaded model: ``OnnxModel`` runs the converted nodes in order over an environment of
values (NumPy constants and tracers), as a pure function of parameters and inputs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends import asnumpy
from ..errors import (
    CapturedArrayWarning,
    DTypeError,
    GpuGraphError,
    ShapeError,
    UnsupportedError,
)
from ..tracer import source_location
from .ops_seq import Seq
from .ops_string import as_strings, split_host
from .table import OPS, SHAPE_INPUTS, NodeCtx


class OnnxError(GpuGraphError, ValueError):
    """The ONNX file is malformed or inconsistent (a dangling name, an unreadable protobuf,
    an external-data path outside the model's directory)."""


@dataclass(frozen=True)
class InputSpec:
    """A graph input: its name, dtype and shape (a dim is an int, a symbolic name or None)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...] | None
    # A sequence of tensors (a list of arrays at the call); dtype and shape are its items'.
    sequence: bool = False


@dataclass(frozen=True)
class _Node:
    ctx: NodeCtx
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict


@dataclass(frozen=True)
class SubGraph:
    """A graph attribute (an If branch, a Loop or Scan body), converted like the main graph.
    ``free`` lists the outer-scope values it reads; the node holding it gets them appended to
    its inputs, so its converter sees them as ``ins[-len(free):]``."""

    name: str
    nodes: list[_Node]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    constants: dict
    free: tuple[str, ...]


def run_nodes(nodes: list[_Node], env: dict[str, Any]) -> None:
    """Run converted nodes in order, reading and filling ``env`` (name -> value)."""
    for node in nodes:
        args = [env[n] if n else None for n in node.inputs]
        try:
            # ops traced here report the ONNX node as their location (explain, errors)
            with source_location(
                f"ONNX node {node.ctx.name or '<unnamed>'!r} ({node.ctx.op_type})"
            ):
                outs = OPS[node.ctx.op_type](node.ctx, args, node.attrs)
        except GpuGraphError:
            raise
        except (TypeError, ValueError, IndexError, KeyError) as e:
            # A converter met attributes or inputs the ONNX spec does not allow (a
            # malformed model): say which node, keep the cause.
            raise OnnxError(f"{node.ctx.where()}: invalid node: {type(e).__name__}: {e}") from e
        if not isinstance(outs, (tuple, list)):
            outs = (outs,)
        for name, v in zip(node.outputs, outs):
            if name:
                env[name] = v


def run_subgraph(sub: SubGraph, args: tuple, outer: dict[str, Any]) -> tuple:
    """Run a subgraph on its inputs ``args``, seeing the outer-scope values ``outer``."""
    env = dict(outer)
    env.update(sub.constants)
    env.update(zip(sub.inputs, args))
    run_nodes(sub.nodes, env)
    return tuple(env[n] for n in sub.outputs)


class OnnxModel:
    """A loaded ONNX model. ``m(*inputs)`` runs it compiled (one compiled entry per concrete
    input shape); ``m.fn(params, *inputs)`` is the pure function behind it."""

    def __init__(self, nodes, params, constants, inputs, output_names, opset, declared=None):
        self._nodes: list[_Node] = nodes
        # name -> InputSpec of the graph outputs and value_info the file declares: the traced
        # values are checked against them (a conflict is an OnnxError, never ignored).
        self.declared: dict[str, InputSpec] = dict(declared or {})
        self.params: dict[str, np.ndarray] = params
        self.constants: dict[str, np.ndarray] = constants
        self.inputs: tuple[InputSpec, ...] = inputs
        self.input_names = tuple(s.name for s in inputs)
        self.output_names: tuple[str, ...] = output_names
        self.opset = opset
        self._jit = None
        # String inputs and the string ops reading them form a host pre-stage (NumPy object
        # arrays); the compiled function takes only the numeric inputs.
        for s in inputs:
            if s.sequence and s.dtype == object:
                raise UnsupportedError(f"ONNX input {s.name!r}: a sequence of strings")
        self.string_inputs = tuple(i for i, s in enumerate(inputs) if s.dtype == object)
        self._host_nodes, self._graph_nodes, strings = split_host(nodes, inputs, constants)
        self._numeric_names = tuple(
            s.name for i, s in enumerate(inputs) if i not in self.string_inputs
        )
        self._graph_outputs = tuple(n for n in output_names if n not in strings)
        self._sequence_inputs = {s.name for s in inputs if s.sequence}  # lists at the call
        # Integer graph inputs used as shapes/axes: static arguments of the compiled function
        # (positions among the numeric inputs).
        shape_names = _shape_arg_names(nodes)
        self.static_inputs = tuple(
            i
            for i, name in enumerate(self._numeric_names)
            if name in shape_names and np.issubdtype(self._spec(name).dtype, np.integer)
        )

    def _spec(self, name: str) -> InputSpec:
        return next(s for s in self.inputs if s.name == name)

    def fn(self, params: dict, *inputs: Any) -> tuple:
        """The model as a pure function of its parameters and inputs."""
        self._check_count(inputs)
        host = self.host_stage(*(inputs[i] for i in self.string_inputs))
        numeric = [x for i, x in enumerate(inputs) if i not in self.string_inputs]
        return self._merge(host, self._graph_fn(params, *numeric))

    def host_stage(self, *strings: Any) -> dict[str, np.ndarray]:
        """The string pre-stage: the string inputs (in order) through the string ops, run on
        NumPy object arrays. Returns every string value by name."""
        env: dict[str, Any] = dict(self.constants)
        names = [self.inputs[i].name for i in self.string_inputs]
        env.update((n, as_strings(x)) for n, x in zip(names, strings))
        run_nodes(self._host_nodes, env)
        for name, spec in self.declared.items():
            if name in env and spec.dtype == object:
                # dtype and rank: a string op's output length depends on the data (stopwords
                # removed), so a fixed declared dim describes one input only
                rank = None if spec.shape is None else (None,) * len(spec.shape)
                check_declared(InputSpec(spec.name, spec.dtype, rank), env[name])
        return env

    def _graph_fn(self, params: dict, *inputs: Any) -> tuple:
        """The numeric graph (what is compiled): numeric inputs to numeric outputs."""
        env: dict[str, Any] = dict(self.constants)
        env.update(params)
        for name, x in zip(self._numeric_names, inputs):
            env[name] = Seq(tuple(x)) if name in self._sequence_inputs else x
        run_nodes(self._graph_nodes, env)
        for name, spec in self.declared.items():
            if name in env and spec.dtype != object:
                check_declared(spec, env[name])
        # a sequence output is a list of arrays (as onnxruntime returns it)
        return tuple(
            list(env[n].items) if isinstance(env[n], Seq) else env[n] for n in self._graph_outputs
        )

    def _merge(self, host: dict[str, Any], graph_outs: tuple) -> tuple:
        """The outputs in the graph's order, from the host stage and the numeric graph."""
        computed = dict(zip(self._graph_outputs, graph_outs))
        return tuple(computed[n] if n in computed else host[n] for n in self.output_names)

    def _check_count(self, inputs: tuple) -> None:
        if len(inputs) != len(self.inputs):
            raise GpuGraphError(
                f"the ONNX model takes {len(self.inputs)} inputs {list(self.input_names)}, "
                f"got {len(inputs)}"
            )

    def check_inputs(self, inputs: tuple) -> list[np.ndarray]:
        self._check_count(inputs)
        out = []
        for spec, x in zip(self.inputs, inputs):
            if spec.sequence:
                if not isinstance(x, (list, tuple)):
                    raise DTypeError(
                        f"ONNX input {spec.name!r} is a sequence: pass a list of arrays, got "
                        f"{type(x).__name__}"
                    )
                item = InputSpec(f"{spec.name}[]", spec.dtype, spec.shape)
                out.append([self._check_one(item, v) for v in x])
                continue
            out.append(self._check_one(spec, x))
        return out

    def _check_one(self, spec: InputSpec, x: Any) -> Any:
        x = (
            x
            if hasattr(x, "__array_namespace__") or hasattr(x, "__cuda_array_interface__")
            else np.asarray(x)
        )
        if spec.dtype == object and np.dtype(x.dtype).kind in "OUS":
            x = as_strings(x)  # str, bytes (UTF-8) or object arrays of them
        elif np.dtype(x.dtype) != spec.dtype:
            raise DTypeError(f"ONNX input {spec.name!r} has dtype {spec.dtype}, got {x.dtype}")
        if spec.shape is not None:
            ok = len(x.shape) == len(spec.shape) and all(
                not isinstance(d, int) or d == s for d, s in zip(spec.shape, x.shape)
            )
            if not ok:
                raise ShapeError(
                    f"ONNX input {spec.name!r} has shape {list(spec.shape)}, got {tuple(x.shape)}"
                )
        return x

    def _compiled_args(self, inputs: tuple) -> tuple[list, list]:
        """(string inputs, numeric inputs as the compiled function takes them)."""
        from ..trace import jit

        xs = self.check_inputs(inputs)
        if self._jit is None:
            self._jit = jit(
                self._static_fn, static_argnums=tuple(i + 1 for i in self.static_inputs)
            )
        strings = [xs[i] for i in self.string_inputs]
        xs = [x for i, x in enumerate(xs) if i not in self.string_inputs]
        for i in self.static_inputs:  # hashable, so the compiled-entry cache keys on the value
            xs[i] = (asnumpy(xs[i]).tolist(), str(xs[i].dtype))
        return strings, xs

    def __call__(self, *inputs: Any) -> tuple:
        strings, xs = self._compiled_args(inputs)
        host = self.host_stage(*strings) if self._host_nodes or strings else {}
        if not self._graph_outputs:  # string outputs only: nothing to compile
            return self._merge(host, ())
        with warnings.catch_warnings():
            # Weights folded from Constant/ConstantOfShape nodes are true constants of the
            # model: capturing them into the graph is what is wanted.
            warnings.simplefilter("ignore", CapturedArrayWarning)
            return self._merge(host, tuple(self._jit(self.params, *xs)))

    def lower(self, *inputs: Any):
        """The compiled plan ``m(*inputs)`` runs (``.explain()``, ``.to_dot()``, ``.graph``);
        the string pre-stage is not part of it."""
        _, xs = self._compiled_args(inputs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CapturedArrayWarning)
            return self._jit.lower(self.params, *xs)

    def _static_fn(self, params: dict, *inputs: Any) -> tuple:
        xs = list(inputs)
        for i in self.static_inputs:
            xs[i] = np.asarray(xs[i][0], dtype=xs[i][1])
        return self._graph_fn(params, *xs)

    def __repr__(self) -> str:
        return (
            f"OnnxModel(inputs={list(self.input_names)}, outputs={list(self.output_names)}, "
            f"opset={self.opset}, {len(self._nodes)} nodes)"
        )


def check_declared(spec: InputSpec, v: Any) -> None:
    """The traced value ``v`` against the dtype and fixed dims the file declares for it."""
    shape = tuple(int(d) for d in v.shape)
    if spec.dtype is not None and np.dtype(v.dtype) != spec.dtype:
        raise OnnxError(
            f"shape-inference conflict: ONNX value {spec.name!r} is declared {spec.dtype}, "
            f"but the graph computes {np.dtype(v.dtype)}"
        )
    if spec.shape is None:
        return
    if len(spec.shape) != len(shape) or any(
        isinstance(d, int) and d != s for d, s in zip(spec.shape, shape)
    ):
        raise OnnxError(
            f"shape-inference conflict: ONNX value {spec.name!r} is declared with shape "
            f"{list(spec.shape)}, but the graph computes {list(shape)}"
        )


def _shape_arg_names(nodes) -> set[str]:
    """The value names some node reads as a shape, axes, pads or bounds (SHAPE_INPUTS)."""
    names = set()
    for n in nodes:
        op, inputs = (n.ctx.op_type, n.inputs) if isinstance(n, _Node) else (n.op_type, n.input)
        if isinstance(n, _Node):  # values a subgraph reads as shapes count too
            for sub in n.attrs.values():
                for sg in sub if isinstance(sub, list) else [sub]:
                    if isinstance(sg, SubGraph):
                        names |= _shape_arg_names(sg.nodes)
        if op in SHAPE_INPUTS:
            pos = SHAPE_INPUTS[op]
            names.update(name for i, name in enumerate(inputs) if pos is None or i in pos)
    return names
