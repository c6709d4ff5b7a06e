"""The ONNX op table: one converter per ONNX op type, and the helpers converters share.

A converter is ``fn(node: NodeCtx, inputs: list, attrs: dict) -> value | tuple``. Values are
NumPy arrays (constants: initializers of integer type, Constant nodes, anything computed only
from them, which folds eagerly because gpugraph ops on NumPy arrays run eagerly) or tracers.
Attribute defaults follow the ONNX operator spec; ``attrs`` holds only the attributes present.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UnsupportedError

Converter = Callable[["NodeCtx", list, dict], Any]
OPS: dict[str, Converter] = {}

# The inputs (by position; ``None`` for all) each op needs as constants: shapes, axes, pads,
# slice bounds. A graph input that feeds one of them is made a static argument of the
# compiled function (one compiled entry per value), so ``Expand(x, shape)`` with ``shape`` an
# input still traces.
SHAPE_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "ConstantOfShape": (0,),
    "Slice": (1, 2, 3, 4),
    "Pad": (1, 3),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Split": (1,),
    "Range": None,
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
    "ReduceL1": (1,),
    "ReduceL2": (1,),
    "ReduceSumSquare": (1,),
    "ReduceLogSum": (1,),
    "ReduceLogSumExp": (1,),
    "TopK": (1,),
    "OneHot": (1,),
    "Resize": (1, 2, 3),
    "Upsample": (1,),  # opset 10: scales at 1; 11+: roi, scales, sizes
    "Loop": (0,),
    "SequenceAt": (1,),  # sequences exist only while tracing: positions and splits are static
    "SequenceInsert": (2,),
    "SequenceErase": (1,),
    "SplitToSequence": (
        1,
    ),  # a known trip count makes a scan (scan outputs, reverse-mode gradients)
}


def register(*op_types: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for t in op_types:
            assert t not in OPS, f"ONNX op {t} registered twice"
            OPS[t] = fn
        return fn

    return deco


@dataclass(frozen=True)
class NodeCtx:
    """What a converter knows about its node: type, name, the model's opset, output count."""

    op_type: str
    name: str
    opset: int
    n_outputs: int

    def where(self) -> str:
        return f"ONNX node {self.name or '<unnamed>'!r} ({self.op_type}, opset {self.opset})"

    def unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(f"{self.where()}: {what} is not supported")

    def const(self, v: Any, what: str) -> np.ndarray:
        """``v`` as a NumPy constant; a traced value here would make shapes data-dependent."""
        if v is None or isinstance(v, np.ndarray):
            return v
        if isinstance(v, np.generic):
            return np.asarray(v)
        raise self.unsupported(f"a computed (non-constant) {what}")

    def ints(self, v: Any, what: str) -> list[int] | None:
        c = self.const(v, what)
        return None if c is None else [int(e) for e in np.asarray(c).reshape(-1)]


# The largest tensor a model may declare (an initializer) or fold (ConstantOfShape, Range):
# refused before anything is allocated. Change it with gg.onnx.LIMITS["max_tensor_bytes"].
# "max_unrolled_trips": the most iterations of a Loop unrolled while tracing (a loop whose
# scan-output length or sequences are known only by running its constant condition).
LIMITS = {"max_tensor_bytes": 4 << 30, "max_unrolled_trips": 1024}


def check_size(shape: Any, dtype: Any, what: str) -> None:
    from ..errors import GpuGraphError

    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise GpuGraphError(f"{what}: negative dimension in shape {dims}")
    nbytes = int(np.prod(dims, dtype=object)) * np.dtype(dtype).itemsize
    if nbytes > LIMITS["max_tensor_bytes"]:
        raise GpuGraphError(
            f"{what}: a {nbytes}-byte tensor {dims} is over gg.onnx.LIMITS['max_tensor_bytes'] "
            f"({LIMITS['max_tensor_bytes']})"
        )


def opt(inputs: list, i: int) -> Any:
    """Input ``i`` or None where it is absent or the empty name (ONNX's optional input)."""
    return inputs[i] if i < len(inputs) else None


def is_const(v: Any) -> bool:
    return isinstance(v, (np.ndarray, np.generic))


def shape_of(v: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in v.shape)


def dtype_of(v: Any) -> np.dtype:
    return np.dtype(v.dtype)
