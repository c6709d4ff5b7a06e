"""Compile CUDA C to PTX with NVRTC, with no GPU and no driver.

CuPy's RawKernel and compile_with_cache query the current device, so they fail on machines without
a GPU. NVRTC itself only needs its shared library (the ``nvidia-cuda-nvrtc`` wheel), so we call
CuPy's thin binding ``cupy_backends.cuda.libs.nvrtc`` directly.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
from pathlib import Path
from types import ModuleType

from gpugraph import cache
from gpugraph.errors import GpuGraphError

DEFAULT_OPTIONS: tuple[str, ...] = ("--std=c++17", "-default-device")
# Sources including a CUDA toolkit header (cuda_fp16.h, ...) get the toolkit's include folder.
_TOOLKIT_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*[<\"]cuda_\w+\.h[>\"]", re.M)


class KernelCompileError(GpuGraphError):
    """NVRTC (or the host compiler, for the emulator) rejected a kernel source."""


def number_lines(source: str) -> str:
    """Source with 1-based line numbers, so compiler messages like ``k.cu(12)`` can be followed."""
    lines = source.splitlines()
    width = len(str(len(lines)))
    return "\n".join(f"{i:>{width}} | {line}" for i, line in enumerate(lines, start=1))


@functools.lru_cache(maxsize=1)
def _load_nvrtc() -> tuple[ModuleType | None, str]:
    """Import the binding and make one call that really loads libnvrtc; cache the outcome."""
    try:
        nvrtc = importlib.import_module("cupy_backends.cuda.libs.nvrtc")
    except Exception as exc:  # noqa: BLE001 - ImportError, or CuPy failing to set itself up
        return None, f"cannot import cupy_backends.cuda.libs.nvrtc: {exc!r}"
    try:
        # The import succeeds even without libnvrtc; the first real call is what loads it.
        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - the error type depends on the CuPy version
        return None, f"NVRTC library cannot be loaded (pip install nvidia-cuda-nvrtc): {exc!r}"
    return nvrtc, ""


def nvrtc_available() -> bool:
    """True when NVRTC can be loaded and called on this machine (no GPU needed)."""
    return _load_nvrtc()[0] is not None


def nvrtc_unavailable_reason() -> str:
    """Why NVRTC cannot be used, or an empty string when it can."""
    return _load_nvrtc()[1]


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the loaded NVRTC."""
    return tuple(_require_nvrtc().getVersion())  # type: ignore[return-value]


def _require_nvrtc() -> ModuleType:
    nvrtc, reason = _load_nvrtc()
    if nvrtc is None:
        raise GpuGraphError(f"NVRTC is not available: {reason}")
    return nvrtc


@functools.lru_cache(maxsize=1)
def cuda_include_dirs() -> tuple[str, ...]:
    """Folders holding the CUDA headers NVRTC does not build in (cuda_fp16.h): $CUDA_PATH, the
    pip wheels' nvidia/*/include (nvidia-cuda-runtime), then /usr/local/cuda; the first found."""
    candidates = [Path(os.environ["CUDA_PATH"]) / "include"] if "CUDA_PATH" in os.environ else []
    try:
        import nvidia  # namespace package of the nvidia-* wheels

        for root in nvidia.__path__:
            candidates += sorted(Path(root).glob("*/include"))
    except ImportError:
        pass
    candidates.append(Path("/usr/local/cuda/include"))
    return tuple(str(d) for d in candidates if (d / "cuda_fp16.h").is_file())[:1]


def _options(source: str, options: tuple[str, ...]) -> tuple[str, ...]:
    """``options`` plus -I for the toolkit headers when ``source`` includes one."""
    if not _TOOLKIT_INCLUDE.search(source):
        return options
    return (*options, *(f"-I{d}" for d in cuda_include_dirs()))


def compile_ptx(
    source: str,
    name: str = "kernel.cu",
    arch: str = "compute_90",
    options: tuple[str, ...] = (),
) -> str:
    """Compile ``source`` to PTX for virtual architecture ``arch`` (e.g. ``compute_80``).

    Raises KernelCompileError carrying the NVRTC log and the numbered source on failure.
    """
    nvrtc = _require_nvrtc()
    options = _options(source, options)
    all_options = [f"--gpu-architecture={arch}", *DEFAULT_OPTIONS, *options]
    prog = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, all_options)
        except nvrtc.NVRTCError as exc:
            log = _log_text(nvrtc.getProgramLog(prog))
            if _TOOLKIT_INCLUDE.search(source) and not cuda_include_dirs():
                log += (
                    "\n(no CUDA include folder with cuda_fp16.h was found: set CUDA_PATH or"
                    " pip install nvidia-cuda-runtime)"
                )
            raise KernelCompileError(
                f"NVRTC failed to compile {name} for {arch} ({exc}).\n"
                f"options: {' '.join(all_options)}\n"
                f"--- NVRTC log ---\n{log.rstrip()}\n"
                f"--- source ---\n{number_lines(source)}"
            ) from None
        ptx = nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    return _log_text(ptx).rstrip("\x00")


@functools.lru_cache(maxsize=1)
def nvrtc_identity() -> str:
    """NVRTC's version and, where /proc tells, which library files (path, size, mtime) are
    loaded: part of the cache key, so that another NVRTC build never reuses a result."""
    major, minor = nvrtc_version()
    ident = f"nvrtc {major}.{minor}"
    try:
        with open("/proc/self/maps") as maps:
            # the main library only: libnvrtc-builtins may be loaded later, at the first compile
            paths = sorted({line.split()[-1] for line in maps if "/libnvrtc.so" in line})
    except OSError:
        return ident
    for path in paths:
        st = os.stat(path)
        ident += f" | {path} {st.st_size} {st.st_mtime_ns}"
    return ident


def check_compiles(
    source: str,
    name: str = "kernel.cu",
    archs: tuple[str, ...] = ("compute_90",),
    options: tuple[str, ...] = (),
) -> int:
    """Raise KernelCompileError unless ``source`` compiles for every arch in ``archs``.

    A success is recorded in the persistent kernel cache (gpugraph.cache, kind ``nvrtc-ok``),
    keyed by the source, arch, options and NVRTC build, so a later process skips what is already
    proven. Failures are never cached. Returns how many compilations actually ran."""
    ran = 0
    for arch in archs:
        key = _key(source, arch, options)
        if cache.read("nvrtc-ok", key) is not None:
            continue
        compile_ptx(source, name, arch, options)
        ran += 1
        cache.write("nvrtc-ok", key, f"{name} {arch}".encode())
    return ran


def compiled_before(
    source: str, archs: tuple[str, ...] = ("compute_90",), options: tuple[str, ...] = ()
) -> bool:
    """Whether the persistent cache records that ``source`` compiled for every arch."""
    return all(cache.read("nvrtc-ok", _key(source, a, options)) is not None for a in archs)


def _key(source: str, arch: str, options: tuple[str, ...]) -> str:
    options = _options(source, options)
    return cache.digest(nvrtc_identity(), arch, *DEFAULT_OPTIONS, *options, source)


def _log_text(data: str | bytes) -> str:
    # The binding returns bytes for PTX and str for the log, depending on the CuPy version.
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data
