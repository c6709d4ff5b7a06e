"""Run CUDA C kernels on the host, thread by thread, to check their numbers against NumPy.

The kernel source is compiled by the host C++ compiler together with ``cuda_prelude.h`` (which
defines ``__global__``, ``threadIdx`` & co. and CUDA's math functions) and a two-line driver, then
loaded with ctypes. The driver walks every (block, thread) of the launch sequentially; kernels
that use ``__shared__`` (static or ``extern``, sized by the launch's ``shared_mem``),
``__syncthreads``, ``__syncwarp`` or warp shuffles instead run each block's threads as
coroutines that meet at barriers, with every shared-memory access checked for races (see the
prelude's launch_coop). ``__half`` (cuda_fp16.h) is a host shim with the device's rounding. Built
libraries go to the persistent kernel cache (gpugraph.cache), keyed by the text and the
compiler, with an index from each kernel to the library that holds it: kernels compiled in one
batch by one run are found one by one by the next.

Array arguments are copied into buffers with canary guard zones on both sides, so out-of-bounds
writes are reported (instead of silently corrupting the Python heap) and out-of-bounds reads see
NaN / -1 and show up as wrong numbers. Results are copied back into the caller's arrays.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpugraph import cache
from gpugraph.errors import GpuGraphError, UnsupportedError
from gpugraph.testing.nvrtc import KernelCompileError, number_lines

CXX = "g++"
CXX_FLAGS = ("-O1", "-shared", "-fPIC", "-std=c++17")
PRELUDE_PATH = Path(__file__).with_name("cuda_prelude.h")
GUARD_BYTES = 4096
ALIGN_BYTES = 256  # cudaMalloc alignment; kernels doing vector loads may rely on it
CANARY = 0xFF  # NaN as float/double, -1 as an integer
# CUDA's launch limits, checked so that a launch the GPU would refuse fails here too.
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_THREADS_PER_BLOCK = 1024

Dim = int | tuple[int, ...]


class KernelRuntimeError(GpuGraphError):
    """An emulated kernel failed: assert/__trap, or it wrote outside an argument buffer."""


def emulator_available() -> bool:
    """True when the host C++ compiler the emulator needs is installed."""
    return shutil.which(CXX) is not None


@dataclass(frozen=True)
class Param:
    """One kernel parameter, as reported by the compiled driver."""

    pointer: bool
    kind: str  # numpy dtype kind: f, i, u, b; v for void, ? for anything else
    itemsize: int
    const: bool

    @classmethod
    def parse(cls, token: str) -> Param:
        const = token.endswith("c") and token[0] == "P"
        body = token[1:-1] if const else token[1:]
        return cls(token[0] == "P", body[0], int(body[1:]), const)

    def matches(self, dtype: np.dtype) -> bool:
        if self.kind in "v?":
            return True
        return dtype.kind == self.kind and dtype.itemsize == self.itemsize

    def __str__(self) -> str:
        base = "void" if self.kind == "v" else f"{self.kind}{self.itemsize * 8}"
        return f"{'const ' if self.const else ''}{base}{'*' if self.pointer else ''}"


@functools.lru_cache(maxsize=1)
def toolchain() -> str:
    """The host compiler's identity and flags: part of every cache key, so that a new compiler
    (or new flags) never loads a library an old one built."""
    proc = subprocess.run([CXX, "--version"], capture_output=True, text=True, check=False)
    version = proc.stdout.splitlines()[0] if proc.stdout else f"{CXX} (version unknown)"
    return f"{version} | {' '.join(CXX_FLAGS)}"


def _build(key_text: str, body: str) -> Path:
    """Compile the prelude plus ``body`` to a shared library in the persistent kernel cache
    (gpugraph.cache), or find an earlier build of ``key_text`` (the prelude and ``body`` as one
    text) by the same compiler there."""

    def compile_to(out: Path) -> None:
        proc = subprocess.run(
            [CXX, *CXX_FLAGS, "-include", str(_prelude_header()), "-x", "c++", "-o", str(out), "-"],
            input=body,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise KernelCompileError(f"{CXX} failed to compile the emulated kernel.\n{proc.stderr}")

    return cache.file_entry("emu-so", cache.digest(toolchain(), key_text), ".so", compile_to)


@functools.lru_cache(maxsize=1)
def _prelude_header() -> Path:
    """The prelude as a header file, precompiled once per process where the compiler can: the
    compiler then loads it instead of parsing it (about 1.2 s of a 25-kernel batch's 2.9 s).
    Where the precompiled header is missing or stale, the compiler reads the text: the same
    program either way."""
    folder = Path(tempfile.mkdtemp(prefix="gpugraph-emu-"))
    atexit.register(shutil.rmtree, folder, True)
    header = folder / "gpugraph_emu_prelude.h"
    header.write_text(f'#line 1 "{PRELUDE_PATH.name}"\n{_prelude()}\n')
    pch_flags = [f for f in CXX_FLAGS if f != "-shared"]
    # a failed precompile only costs speed: the -include of the text still works
    subprocess.run(
        [CXX, *pch_flags, "-x", "c++-header", str(header), "-o", f"{header}.gch"],
        capture_output=True,
        check=False,
    )
    return header


# Kernels whose threads cooperate need the cooperative launch (slower: a coroutine per thread).
_COOPERATIVE = re.compile(r"\b(__shared__|__syncthreads|__syncwarp|__shfl_\w*sync)\b")
# `extern __shared__ T name[];`: dynamic shared memory, sized by the launch's shared_mem.
_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?"
    r"([A-Za-z_][\w:]*(?:\s+[A-Za-z_][\w:]*)*?)\s+([A-Za-z_]\w*)\s*\[\s*\]\s*;"
)
# The prelude defines __half; the CUDA header is not on the host (the line count is kept).
_FP16_INCLUDE = re.compile(r"^[ \t]*#[ \t]*include[ \t]*[<\"]cuda_fp16\.h[>\"]", re.M)
MAX_DYNAMIC_SHARED = 48 * 1024  # bytes a launch may ask for without cudaFuncSetAttribute
# `__shared__ T name[N];` (1-D, static size): rewritten into the prelude's checked Shared<T, N>.
_SHARED_DECL = re.compile(
    r"(?<!extern )__shared__\s+(?:volatile\s+)?([A-Za-z_][\w:]*(?:\s+[A-Za-z_][\w:]*)*?)"
    r"\s+([A-Za-z_]\w*)\s*\[([^\]\[;]+)\]\s*;"
)


# `__shared__ T name;`: a shared scalar (a checked one-word array read and written by name).
_SHARED_SCALAR = re.compile(
    r"(?<!extern )__shared__\s+(?:volatile\s+)?([A-Za-z_][\w:]*(?:\s+[A-Za-z_][\w:]*)*?)"
    r"\s+([A-Za-z_]\w*)\s*;"
)


def _rewrite_shared(source: str, name: str) -> str:
    """Shared arrays and scalars become access-checked objects (bounds, uninitialised reads,
    races); cuda_fp16.h's include is dropped (the prelude has __half)."""

    def sub(m: re.Match) -> str:
        ctype, var, size = m.groups()
        return f'static thread_local ::__gpugraph_emu::Shared<{ctype}, ({size})> {var}{{"{var}"}};'

    def sub_extern(m: re.Match) -> str:
        ctype, var = m.groups()
        return f'::__gpugraph_emu::DynShared<{ctype}> {var}{{"{var}"}};'

    def sub_scalar(m: re.Match) -> str:
        ctype, var = m.groups()
        return f'static thread_local ::__gpugraph_emu::SharedScalar<{ctype}> {var}{{"{var}"}};'

    out = _FP16_INCLUDE.sub("// cuda_fp16.h: the emulator prelude's __half", source)
    out = _SHARED_DECL.sub(sub, _EXTERN_SHARED.sub(sub_extern, out))
    out = _SHARED_SCALAR.sub(sub_scalar, out)
    if "__shared__" in out:
        line = out[: out.index("__shared__")].count("\n") + 1
        raise UnsupportedError(
            f"{name}:{line}: the emulator supports only 1-D __shared__ arrays of static size"
            " (`__shared__ T name[N];`), scalars (`__shared__ T name;`) and"
            " `extern __shared__ T name[];`, not multi-dimensional ones"
        )
    return out


def _driver(kernel_name: str, cooperative: bool = False) -> str:
    """The two C entry points ctypes calls for one kernel (its signature, and a launch)."""
    k = kernel_name
    launch = "launch_coop" if cooperative else "launch"
    return (
        f'extern "C" const char* gpugraph_emu_signature_{k}() {{\n'
        f"  return __gpugraph_emu::signature(&{k}); }}\n"
        f'extern "C" int gpugraph_emu_launch_{k}(const unsigned* d, void** a, char* e, size_t n)'
        " {\n"
        f"  return __gpugraph_emu::{launch}(&{k}, d, a, e, n); }}\n"
    )


def _check_names(kernels: list[tuple[str, str, str]]) -> None:
    for source, kernel_name, name in kernels:
        if not kernel_name.isidentifier():
            raise ValueError(f"kernel name {kernel_name!r} is not a C identifier")
        if not re.search(rf"\b{kernel_name}\s*\(", source):
            raise KernelCompileError(f"no kernel named {kernel_name!r} in {name}")


def _library(kernels: list[tuple[str, str, str]]) -> Path:
    """One host library holding every (source, kernel name, file name) of ``kernels``; a
    source holding several of them (a grid reduction's two stages) is compiled once."""
    # #line directives make compiler errors point at lines of the caller's sources.
    prelude = f'#line 1 "{PRELUDE_PATH.name}"\n{_prelude()}\n'
    sources: dict[str, str] = {}  # source -> the first file name given for it
    for source, _, name in kernels:
        sources.setdefault(source, name)
    text = "".join(
        f'#line 1 "{name}"\n{_rewrite_shared(source, name)}\n' for source, name in sources.items()
    )
    text += '#line 1 "gpugraph_emulator_driver.cpp"\n'
    text += "".join(
        _driver(kernel_name, bool(_COOPERATIVE.search(source)))
        for source, kernel_name, _ in kernels
    )
    try:
        return _build(prelude + text, text)
    except KernelCompileError as exc:
        listing = "\n".join(f"--- {name} ---\n{number_lines(src)}" for src, name in sources.items())
        raise KernelCompileError(f"{exc}\n{listing}") from None


@functools.lru_cache(maxsize=1)
def _prelude() -> str:
    return PRELUDE_PATH.read_text()


def _kernel_key(kernel: tuple[str, str, str]) -> str:
    """The cache key of one kernel: which library (built by this compiler, with this prelude)
    holds it is recorded under this key in the ``emu-index`` entries."""
    return cache.digest(toolchain(), _prelude(), *kernel)


class EmulatedKernel:
    """A compiled kernel; call it like ``cupy.RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(
        self, source: str, kernel_name: str, name: str = "kernel.cu", lib: ctypes.CDLL | None = None
    ) -> None:
        """``lib``: a library that already holds the kernel (see load_kernels)."""
        if lib is None:
            lib = ctypes.CDLL(str(_library([(source, kernel_name, name)])))
        self.name = kernel_name
        signature = getattr(lib, f"gpugraph_emu_signature_{kernel_name}")
        signature.restype = ctypes.c_char_p
        self._launch = getattr(lib, f"gpugraph_emu_launch_{kernel_name}")
        self._launch.restype = ctypes.c_int
        self._lib = lib  # keeps the library loaded as long as the kernel lives
        self.params = tuple(Param.parse(t) for t in signature().decode().split())

    def __call__(
        self, grid: Dim, block: Dim, args: list | tuple, misalign: int = 0, shared_mem: int = 0
    ) -> None:
        """``misalign``: every array starts that many bytes past a 256-byte boundary, as a view
        like ``x[1:]`` would on the GPU (0: cudaMalloc's alignment). ``shared_mem``: bytes of
        dynamic shared memory per block (``extern __shared__``), as CuPy's ``shared_mem=``."""
        if not 0 <= shared_mem <= MAX_DYNAMIC_SHARED:
            raise ValueError(
                f"shared_mem={shared_mem} is outside [0, {MAX_DYNAMIC_SHARED}] bytes (more needs"
                " cudaFuncSetAttribute on a GPU)"
            )
        dims = _check_dims("grid", grid, MAX_GRID) + _check_dims("block", block, MAX_BLOCK)
        if dims[3] * dims[4] * dims[5] > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"block {block} has more than {MAX_THREADS_PER_BLOCK} threads")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} args, got {len(args)}")
        staged: dict[tuple[int, int], _Staged] = {}
        slots = (ctypes.c_void_p * max(len(args), 1))()
        keep = []  # storage the slots point into must outlive the call
        for i, (arg, param) in enumerate(zip(args, self.params, strict=True)):
            value = self._pack(i, arg, param, staged, misalign)
            keep.append(value)
            slots[i] = value.ctypes.data
        err = ctypes.create_string_buffer(1024)
        c_dims = (ctypes.c_uint * 7)(*dims, int(shared_mem))
        if self._launch(c_dims, slots, err, len(err)) != 0:
            raise KernelRuntimeError(f"{self.name}: {err.value.decode()}")
        for stage in staged.values():
            stage.check_guards(self.name)
        for stage in staged.values():
            stage.copy_back()

    def _pack(self, i: int, arg: object, param: Param, staged: dict, misalign: int) -> np.ndarray:
        """Storage holding the bytes of the i-th parameter (a pointer, or the scalar itself)."""
        where = f"{self.name} arg {i} (declared {param})"
        if isinstance(arg, np.ndarray):
            if not param.pointer or not param.matches(arg.dtype):
                raise TypeError(f"{where}: got array of {arg.dtype}")
            stage = _stage(arg, i, staged, misalign)
            stage.written |= not param.const
            return np.array([stage.ptr], dtype=np.uintp)
        if isinstance(arg, np.generic):
            if param.pointer or not param.matches(arg.dtype):
                raise TypeError(f"{where}: got scalar {arg.dtype}")
            return np.array(arg)
        # Python numbers have no C type; on a GPU, CuPy would guess one that may not match.
        raise TypeError(f"{where}: pass a numpy array or numpy scalar, got {type(arg).__name__}")


class _Staged:
    """A copy of one argument array inside canary guard zones."""

    def __init__(self, arr: np.ndarray, index: int, misalign: int = 0) -> None:
        self.arr, self.index, self.written = arr, index, False
        raw = np.full(arr.nbytes + 2 * GUARD_BYTES + ALIGN_BYTES + misalign, CANARY, dtype=np.uint8)
        self.start = GUARD_BYTES + (-(raw.ctypes.data + GUARD_BYTES) % ALIGN_BYTES) + misalign
        self.raw = raw
        self.inner = raw[self.start : self.start + arr.nbytes]
        self.inner[...] = _bytes_of(arr)
        self.ptr = raw.ctypes.data + self.start

    def check_guards(self, kernel: str) -> None:
        end = self.start + self.arr.nbytes
        before = np.flatnonzero(self.raw[self.start - GUARD_BYTES : self.start] != CANARY)
        after = np.flatnonzero(self.raw[end : end + GUARD_BYTES] != CANARY)
        if before.size or after.size:
            offset = int(before[0]) - GUARD_BYTES if before.size else self.arr.nbytes + after[0]
            raise KernelRuntimeError(
                f"{kernel} wrote out of bounds of arg {self.index} ({self.arr.dtype} "
                f"{self.arr.shape}, {self.arr.nbytes} bytes): byte offset {offset}"
            )

    def copy_back(self) -> None:
        if self.written:
            target = _bytes_of(self.arr)
            if not np.array_equal(target, self.inner):
                np.copyto(target, self.inner)  # raises for a read-only array, as it should


def _bytes_of(arr: np.ndarray) -> np.ndarray:
    return arr.ravel(order="K").view(np.uint8)


def _stage(arr: np.ndarray, index: int, staged: dict, misalign: int) -> _Staged:
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        raise UnsupportedError(f"arg {index}: the emulator needs contiguous arrays")
    key = (arr.__array_interface__["data"][0], arr.nbytes)
    if key in staged:  # the same buffer passed twice must stay aliased, as on the GPU
        return staged[key]
    for other in staged.values():
        if np.may_share_memory(arr, other.arr):
            raise UnsupportedError(f"args {other.index} and {index} partially overlap")
    staged[key] = _Staged(arr, index, misalign)
    return staged[key]


def _check_dims(what: str, dim: Dim, limits: tuple[int, ...]) -> tuple[int, int, int]:
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    if not 1 <= len(dims) <= 3:
        raise ValueError(f"{what} {dim} must have 1 to 3 dimensions")
    dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
    if any(not 1 <= d <= lim for d, lim in zip(dims, limits, strict=True)):
        raise ValueError(f"{what} {dim} is outside CUDA's limits {limits}")
    return dims  # type: ignore[return-value]


_KERNELS: dict[tuple[str, str], EmulatedKernel] = {}


def load_kernel(source: str, kernel_name: str) -> EmulatedKernel:
    """Compile (or fetch from the in-process cache) ``kernel_name`` from ``source``."""
    return _load([(source, kernel_name, "kernel.cu")])[kernel_name]


def load_kernels(kernels: list[tuple[str, str]]) -> dict[str, EmulatedKernel]:
    """Compile several (source, kernel name) pairs in one compiler run (cheaper than one run
    each: the prelude is parsed once) and cache them like load_kernel. Sources must not
    define the same names twice (generated kernels guard their shared helpers)."""
    return _load([(source, name, f"{name}.cu") for source, name in kernels])


def _load(kernels: list[tuple[str, str, str]]) -> dict[str, EmulatedKernel]:
    """The kernels of (source, kernel name, file name) triples: from this process's table, else
    from a library in the persistent cache that holds them (the ``emu-index`` entry of each
    kernel names it), else compiled together into one new library (then indexed)."""
    todo = list(dict.fromkeys(k for k in kernels if k[:2] not in _KERNELS))
    _check_names(todo)
    found: dict[Path, list[tuple[str, str, str]]] = {}
    missing = []
    for k in todo:
        lib = _indexed_library(k)
        (found.setdefault(lib, []) if lib is not None else missing).append(k)
    for path, ks in found.items():
        try:
            _open(path, ks)
        except OSError:  # removed since (python -m gpugraph cache clear): build it again
            missing += ks
    if missing:
        path = _library(missing)
        _open(path, missing)
        for k in missing:
            cache.write("emu-index", _kernel_key(k), path.name.encode())
    return {name: _KERNELS[(source, name)] for source, name, _ in kernels}


def _indexed_library(kernel: tuple[str, str, str]) -> Path | None:
    name = cache.read("emu-index", _kernel_key(kernel))
    if name is None or not re.fullmatch(rb"[0-9a-f]{64}\.so", name):
        return None
    return cache.verified("emu-so", name.decode())


def _open(path: Path, kernels: list[tuple[str, str, str]]) -> None:
    lib = ctypes.CDLL(str(path))
    for source, name, file in kernels:
        _KERNELS[(source, name)] = EmulatedKernel(source, name, file, lib)


def emulate_kernel(
    source: str,
    kernel_name: str,
    grid: Dim,
    block: Dim,
    args: list,
    misalign: int = 0,
    shared_mem: int = 0,
) -> None:
    """Run ``extern "C" __global__`` kernel ``kernel_name`` over the whole launch on the host.

    Arrays are passed by pointer and updated in place; numpy scalars are passed by value and must
    match the declared parameter type exactly (np.float32 for float, np.int64 for long long, ...).
    ``misalign`` shifts every array off its 256-byte alignment by that many bytes;
    ``shared_mem`` is the dynamic shared memory per block in bytes (``extern __shared__``).
    """
    load_kernel(source, kernel_name)(grid, block, args, misalign, shared_mem)
