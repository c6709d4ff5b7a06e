"""gpugraph: trace tensor code into a static graph, optimize, fuse, schedule, plan memory and
run it on CuPy (GPU) or NumPy (CPU). This module only re-exports the public API."""

from . import autograph, random
from .autodiff import eval_graph, grad, jvp, value_and_grad, vjp
from .backends import asnumpy, default_backend
from .control_flow import cond, fori_loop, scan, switch, while_loop
from .device import device_info
from .errors import (
    CapturedArrayWarning,
    DTypeError,
    EscapedTracerError,
    GpuGraphError,
    GpuGraphWarning,
    ShapeError,
    TraceError,
    UnsupportedError,
)
from .interop import from_dlpack
from .ir import Graph, TensorType
from .ops import API as _API
from .ops.core import DEFAULT_FLOAT as _F32
from .pytree import register_dataclass, tree_leaves, tree_map, tree_structure
from .runtime import Compiled
from .trace import JitFunction, ShapeDtype, jit
from .tracer import Tracer, install_tracer_methods

# After the submodule imports: the name ``trace`` becomes the op gg.trace(x); the submodule
# stays importable as ``gpugraph.trace`` (``from gpugraph.trace import ...``, sys.modules).
globals().update(_API)
install_tracer_methods(_API)

float32, float64, int32, int64 = "float32", "float64", "int32", "int64"
float16, int8, int16, uint8, uint16 = "float16", "int8", "int16", "uint8", "uint16"
bool_ = "bool"
del _F32

__all__ = [
    "from_dlpack",
    "CapturedArrayWarning",
    "Compiled",
    "DTypeError",
    "EscapedTracerError",
    "GpuGraphError",
    "GpuGraphWarning",
    "Graph",
    "JitFunction",
    "ShapeDtype",
    "ShapeError",
    "TensorType",
    "TraceError",
    "Tracer",
    "UnsupportedError",
    "asnumpy",
    "autograph",
    "random",
    "cond",
    "fori_loop",
    "scan",
    "switch",
    "while_loop",
    "default_backend",
    "device_info",
    "jit",
    *sorted(_API),
    "eval_graph",
    "register_dataclass",
    "tree_leaves",
    "tree_map",
    "tree_structure",
    "grad",
    "jvp",
    "value_and_grad",
    "vjp",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # gg.onnx is imported on first use: the onnx package is optional (pip install gpugraph[onnx]).
    if name == "onnx":
        import importlib

        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module 'gpugraph' has no attribute {name!r}")
