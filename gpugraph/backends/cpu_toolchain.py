"""The host C++ compiler of the native CPU backend: which one (``compiler``), its flags
(``flags``: exactness first, then speed), the identity of the toolchain and CPU that goes into
every cache key, the prelude, the C entry point of a kernel and the errors. Split from
cpu_backend.py, which re-exports these names (tests patch them there)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import GpuGraphError, UnsupportedError

PRELUDE_PATH = Path(__file__).parent.parent / "codegen" / "cpu_prelude.h"
BASE_FLAGS = ("-O3", "-shared", "-fPIC", "-std=c++17", "-fopenmp")
# Exactness, not speed, decides these: NumPy never contracts a*b+c into an fma, wraps signed
# integers, and the kernels reinterpret arrays as vectors of their element type.
# -fno-tree-slp-vectorize: GCC 12.2's SLP vectorizer drops a double -> float -> double round
# trip (``(double)(float)v`` comes out as ``v``) in the vector path's unrolled lanes, at -O2
# and -O3 (found by tests/test_properties.py; tests/test_cpu_backend.py keeps a case). Loop
# vectorization stays on and is what vectorizes these kernels: chain8 and bias+GELU measured
# the same with and without SLP.
SEMANTIC_FLAGS = (
    "-ffp-contract=off",
    "-fwrapv",
    "-fno-strict-aliasing",
    "-fno-math-errno",
    "-fno-tree-slp-vectorize",
)
ARCH_ENV = "GPUGRAPH_CPU_ARCH"  # "native" (default) or "portable" (the compiler's baseline)
CXX_ENV = "GPUGRAPH_CXX"


class CpuCompileError(GpuGraphError):
    """The host C++ compiler rejected a generated kernel (the message has its log)."""


class CpuBackendUnavailable(UnsupportedError):
    """backend="cpu" was asked for, but no working host C++ compiler was found."""


@functools.lru_cache(maxsize=1)
def compiler() -> str:
    """The host C++ compiler's path; CpuBackendUnavailable when there is none."""
    name = os.environ.get(CXX_ENV, "g++")
    path = shutil.which(name)
    if path is None:
        raise CpuBackendUnavailable(
            f"backend='cpu' compiles fused kernels with a host C++ compiler, and {name!r} was "
            f"not found on PATH (set ${CXX_ENV} to one, or use backend='numpy')"
        )
    return path


def _shown_flags() -> str:
    return " ".join(f for f in flags() if f not in ("-shared", "-fPIC"))


def flags() -> tuple[str, ...]:
    arch = os.environ.get(ARCH_ENV, "native").strip().lower()
    if arch not in ("native", "portable"):
        raise UnsupportedError(f"{ARCH_ENV}={arch!r}: use 'native' or 'portable'")
    native = ("-march=native",) if arch == "native" else ()
    return BASE_FLAGS + SEMANTIC_FLAGS + native + (("-DGG_CPU_MVEC",) if _libmvec() else ())


@functools.lru_cache(maxsize=1)
def _libmvec() -> bool:
    """glibc's vector math library is here (see cpu_prelude.h: vectorized exp, tanh, ...)."""
    import ctypes.util

    return ctypes.util.find_library("mvec") is not None


def _link_flags() -> tuple[str, ...]:
    return ("-lmvec",) if _libmvec() else ()


@functools.lru_cache(maxsize=4)
def _toolchain(flag_text: str) -> str:
    """Compiler identity, flags and (for -march=native) the CPU: part of every cache key, so
    a library built for another CPU or by another compiler is never loaded."""
    proc = subprocess.run([compiler(), "--version"], capture_output=True, text=True, check=False)
    version = proc.stdout.splitlines()[0] if proc.stdout else compiler()
    return f"{version} | {flag_text} | {_cpu_identity() if 'native' in flag_text else ''}"


def _cpu_identity() -> str:
    """The model and feature flags of this CPU (what -march=native compiles for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return f"{platform.machine()} {platform.processor()}"
    keep = [ln for ln in text.splitlines()[:40] if ln.startswith(("model name", "flags"))]
    return " ".join(keep)


@functools.lru_cache(maxsize=1)
def _prelude() -> str:
    return PRELUDE_PATH.read_text()


def _entry(name: str, nargs: int) -> str:
    """The C entry point ctypes calls: ``gpugraph_cpu_<kernel>(n, chunk, ptr, ptr, ...)``."""
    params = "".join(f", void* a{j}" for j in range(nargs))
    slots = ", ".join(f"a{j}" for j in range(nargs))
    return (
        f'extern "C" void gpugraph_cpu_{name}(long long n, long long chunk{params}) {{\n'
        f"  void* const args[] = {{{slots}}};\n"
        f"  __gg_cpu::run(&{name}, args, n, chunk);\n}}\n"
    )
