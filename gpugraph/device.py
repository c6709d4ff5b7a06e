"""device_info(): what GPU is here, through NVML, and which backend ``backend="auto"`` picks
and why; never raises for a missing GPU or NVML."""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field


@dataclass
class DeviceInfo:
    available: bool
    reason: str
    devices: list[dict] = field(default_factory=list)
    driver: str | None = None
    backend: str = ""  # what backend="auto" picks, and why (gg.default_backend())

    def __str__(self) -> str:
        return self.gpu_summary() + (f"; auto backend: {self.backend}" if self.backend else "")

    def gpu_summary(self) -> str:
        if not self.available:
            return f"no GPU: {self.reason}"
        parts = [
            f"GPU {d['index']}: {d['name']}, {d['memory_total'] / 2**30:.1f} GiB total, "
            f"{d['memory_free'] / 2**30:.1f} GiB free"
            for d in self.devices
        ]
        return "; ".join(parts) + f" (driver {self.driver})"


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def device_info() -> DeviceInfo:
    info = _nvml_info()
    info.backend = _auto_backend()
    return info


def _auto_backend() -> str:
    from .backends.base import default_backend
    from .errors import GpuGraphError

    try:
        return str(default_backend())
    except GpuGraphError as e:  # e.g. $GPUGRAPH_BACKEND names a backend that cannot run
        return f"none: {e}"


def _nvml_info() -> DeviceInfo:
    try:
        import pynvml
    except ImportError:
        return DeviceInfo(False, "pynvml is not installed (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError: no driver / no GPU
        return DeviceInfo(False, f"NVML could not start: {e}")
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            devices.append(
                {
                    "index": i,
                    "name": _text(pynvml.nvmlDeviceGetName(h)),
                    "memory_total": int(mem.total),
                    "memory_free": int(mem.free),
                }
            )
        if not devices:
            return DeviceInfo(False, "NVML reports no GPU", [], driver)
        return DeviceInfo(True, f"{len(devices)} GPU(s) found by NVML", devices, driver)
    except Exception as e:
        return DeviceInfo(False, f"NVML query failed: {e}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


@functools.cache
def cuda_include_options() -> tuple[str, ...]:
    """NVRTC ``-I`` options for the CUDA headers kernels may include (cuda_fp16.h): the
    toolkit's include folder ($CUDA_PATH, /usr/local/cuda) or the nvidia-cuda-runtime wheel's."""
    dirs = [
        os.path.join(os.environ[k], "include")
        for k in ("CUDA_PATH", "CUDA_HOME")
        if k in os.environ
    ]
    dirs.append("/usr/local/cuda/include")
    for pkg in ("nvidia.cu13", "nvidia.cuda_runtime"):
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            dirs += [os.path.join(p, "include") for p in spec.submodule_search_locations]
    for d in dirs:
        if os.path.isfile(os.path.join(d, "cuda_fp16.h")):
            return (f"-I{d}",)
    return ()
