"""Arrays of other libraries as inputs: anything with ``__dlpack__`` (torch tensors, JAX arrays,
NumPy 2 arrays) or ``__cuda_array_interface__`` (CuPy, Numba, torch CUDA tensors).

``from_dlpack`` shares memory (zero copy): a CPU tensor becomes a NumPy array viewing its bytes
(``np.from_dlpack``), a CUDA tensor a CuPy array (``cupy.from_dlpack``). gpugraph never writes
into its inputs, so the view is safe; results are always new NumPy arrays (CPU) or CuPy arrays
(GPU), never the foreign type. A device gpugraph has no array library for is an error naming
what to do instead; nothing is ever copied between devices behind the caller's back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ArgumentError, UnsupportedError
from .ir import BFLOAT16

# DLPack device types (dlpack.h, DLDeviceType)
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_CPU_DEVICES = (_DL_CPU, _DL_CUDA_HOST)
_CUDA_DEVICES = (_DL_CUDA, _DL_CUDA_MANAGED)
_DEVICE_NAMES = {1: "CPU", 2: "CUDA", 3: "CUDA host", 4: "OpenCL", 7: "Vulkan", 8: "Metal"}
_DEVICE_NAMES |= {9: "VPI", 10: "ROCm", 13: "CUDA managed", 14: "oneAPI"}


def _cupy() -> Any:
    try:
        import cupy
    except Exception:  # noqa: BLE001 - ImportError, or CuPy failing to find CUDA
        return None
    return cupy


def is_foreign_array(x: Any) -> bool:
    """Whether ``x`` is another library's array that ``from_dlpack`` can take."""
    if isinstance(x, (np.ndarray, np.generic)):
        return False
    cupy = _cupy() if hasattr(x, "__cuda_array_interface__") else None
    if cupy is not None and isinstance(x, cupy.ndarray):
        return False
    t = type(x)
    return hasattr(t, "__dlpack__") or hasattr(x, "__cuda_array_interface__")


def _kind(x: Any) -> str:
    t = type(x)
    return f"{t.__module__.split('.')[0]}.{t.__name__}"


def from_dlpack(x: Any) -> Any:
    """A NumPy (CPU) or CuPy (CUDA) array sharing ``x``'s memory, for any array with
    ``__dlpack__`` or ``__cuda_array_interface__``. NumPy and CuPy arrays come back as they are."""
    if isinstance(x, (np.ndarray, np.generic)):
        return x
    if hasattr(x, "__cuda_array_interface__") and not hasattr(type(x), "__dlpack__"):
        return _on_cuda(x, lambda cp: cp.asarray(x))
    if not hasattr(type(x), "__dlpack__"):
        raise ArgumentError(
            f"from_dlpack: {_kind(x)} has neither __dlpack__ nor __cuda_array_interface__"
        )
    device = _dlpack_device(x)
    if device in _CPU_DEVICES:
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError) as e:
            shared = _bfloat16_view(x)
            if shared is None:
                raise _refused(x, e) from None
            return shared
    if device in _CUDA_DEVICES:
        return _on_cuda(x, lambda cp: cp.from_dlpack(x))
    where = _DEVICE_NAMES.get(device, f"DLPack device type {device}")
    raise UnsupportedError(
        f"from_dlpack: {_kind(x)} lives on {where}; gpugraph runs on the CPU (NumPy) and on "
        "CUDA GPUs (CuPy): move it to one of them first"
    )


def _bfloat16_view(x: Any) -> np.ndarray | None:
    """A bfloat16 CPU array, which DLPack cannot hand to NumPy (NumPy has no bfloat16): torch's
    bits viewed as int16 and then as ml_dtypes.bfloat16 (no copy), or JAX's ``__array__``
    (which gives ml_dtypes.bfloat16 itself). None when ``x`` is not that."""
    if BFLOAT16 is None or not str(getattr(x, "dtype", "")).endswith("bfloat16"):
        return None
    if type(x).__module__.startswith("torch"):
        import torch

        return np.from_dlpack(x.view(torch.int16)).view(BFLOAT16)
    arr = np.asarray(x) if hasattr(x, "__array__") else None
    return arr if arr is not None and arr.dtype == BFLOAT16 else None


def _dlpack_device(x: Any) -> int:
    get = getattr(x, "__dlpack_device__", None)
    if get is None:
        return _DL_CPU  # producers without it predate devices: host memory
    return int(get()[0])


def _on_cuda(x: Any, convert) -> Any:
    cupy = _cupy()
    if cupy is None:
        raise UnsupportedError(
            f"{_kind(x)} is a CUDA array, and CuPy (which gpugraph runs GPU arrays on) cannot "
            "be imported here; install cupy, or move the array to the CPU first"
        )
    try:
        return convert(cupy)
    except Exception as e:  # noqa: BLE001 - CUDA errors have CuPy's own types
        raise ArgumentError(
            f"from_dlpack: {_kind(x)} is a CUDA array that could not become a CuPy array "
            f"({type(e).__name__}: {e})"
        ) from None


def _refused(x: Any, e: Exception) -> ArgumentError:
    """The exporter refused (a torch tensor that requires grad, a dtype DLPack or NumPy
    cannot hold such as bfloat16): its reason, and the usual way out."""
    return ArgumentError(
        f"from_dlpack: {_kind(x)} could not be shared ({type(e).__name__}: {e}); for a torch "
        "tensor that requires grad pass x.detach()"
    )


def as_array(x: Any) -> Any:
    """``x`` itself, unless it is another library's array: then ``from_dlpack(x)``."""
    return from_dlpack(x) if is_foreign_array(x) else x
