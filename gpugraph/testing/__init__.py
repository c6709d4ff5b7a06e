"""CPU-side proofs for GPU code: NVRTC compilation and a host emulator for CUDA kernels."""

from gpugraph.testing.emulator import (
    EmulatedKernel,
    KernelRuntimeError,
    emulate_kernel,
    emulator_available,
    load_kernel,
    load_kernels,
)
from gpugraph.testing.lifetimes import Overlap, find_overlaps
from gpugraph.testing.nvrtc import (
    KernelCompileError,
    check_compiles,
    compile_ptx,
    nvrtc_available,
    nvrtc_unavailable_reason,
)
from gpugraph.testing.races import Hazard, check_races

__all__ = [
    "Hazard",
    "Overlap",
    "check_races",
    "find_overlaps",
    "EmulatedKernel",
    "KernelCompileError",
    "KernelRuntimeError",
    "check_compiles",
    "compile_ptx",
    "emulate_kernel",
    "emulator_available",
    "load_kernel",
    "load_kernels",
    "nvrtc_available",
    "nvrtc_unavailable_reason",
]
