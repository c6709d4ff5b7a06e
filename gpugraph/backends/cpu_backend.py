"""The native CPU backend (``backend="cpu"``): one codegen, two targets.

Fused elementwise groups run as the same kernel source the CuPy backend launches
(``codegen/cuda.py``), compiled by the host C++ compiler with ``codegen/cpu_prelude.h``, which
turns the grid-stride loop into a plain vectorizable loop and splits large iteration spaces
into one contiguous chunk per OpenMP thread. Every other op runs as on the NumPy backend,
through the same arena and the same generated straight-line program (this class is a
``NumpyBackend``). Libraries live in the persistent kernel cache (``gpugraph.cache``).

Kernels are compiled in batches: ``prepare`` only registers a fused group; when the plan is
built (``ready``, at ``lower()``) every kernel registered so far is compiled in one compiler run
(one library), unless the cache already holds them; kernels registered inside ``deferred()``
(a native loop's body plans, run only by its fallback) wait until released. A float -> int
cast is undefined behaviour in C for NaN, inf and out-of-range values, so a group containing
one runs on NumPy (``explain()`` says so). So do groups the native path would make slower
(``cpu_select``, which also has the probe ``backend="auto"`` runs).

Where the rest lives: the compiler, its flags, the prelude and the C entry point in
``cpu_toolchain.py`` (re-exported here); the precompiled prelude in ``cpu_pch.py``; the
runners of fused groups and the kernel call in ``cpu_runner.py`` (re-exported here); one-op
kernels for unfused elementwise ops in ``cpu_unfused.py``; the fused reductions' runners in
``cpu_rows.py`` (row) and ``cpu_grid.py`` (column/full); compiling many plans ahead in
``cpu_prebuild.py``; the policy and the probe in ``cpu_select.py``; the extension entry point
in ``cpu_native.py``.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import cache
from ..codegen.cpu_grid import NAME_PREFIX as GRID_KERNEL_PREFIX
from ..codegen.cpu_reduce import NAME_PREFIX as ROW_KERNEL_PREFIX
from ..ir import Node
from ..ops.fused import FUSED
from ..ops.registry import get_op
from . import cpu_native, cpu_pch
from .base import Runner, register_backend
from .cpu_native import PARALLEL_MIN_ENV, parallel_min  # noqa: F401  (tests set the env)
from .cpu_runner import (  # noqa: F401  (re-exported: cpu_grid, cpu_rows, cpu_unfused, tests)
    CHUNK_ALIGN,
    _native_refusal,
    _native_runner,
    _prepare_fused,
    kernel_runner,
)
from .cpu_select import (  # noqa: F401  (also re-exported: the policy's names on this module)
    NATIVE_ENV,
    native_mode,
    policy_refusal,
    probe,
    status,
)
from .cpu_toolchain import (  # noqa: F401  (re-exported: the toolchain's names on this module)
    ARCH_ENV,
    BASE_FLAGS,
    CXX_ENV,
    PRELUDE_PATH,
    SEMANTIC_FLAGS,
    CpuBackendUnavailable,
    CpuCompileError,
    _cpu_identity,
    _entry,
    _libmvec,
    _link_flags,
    _prelude,
    _shown_flags,
    _toolchain,
    compiler,
    flags,
)
from .cpu_unfused import prepare_unfused
from .numpy_backend import NumpyBackend

Arg = tuple[str, int, bool]  # a kernel parameter: dtype name, element count, is an output
# libgomp's default wait policy spins its worker threads after each parallel region; on a
# machine with more runnable threads than cores (a shared CI box, BLAS threads, other processes)
# the spinning workers take the cores the caller needs: a 1M-element group measured 8-24 ms a
# call instead of 0.1 ms. Passive workers sleep at once. libgomp reads this when it loads (with
# the first kernel library), so it is set before; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def toolchain() -> str:
    """Everything a library depends on besides its source (the Python/NumPy ABI too, where
    the library holds an extension module: cpu_native)."""
    with_module = cpu_native.include_flags() is not None
    return _toolchain(" ".join(flags())) + (f" | {cpu_native.abi()}" if with_module else "")


class _Kernel:
    """One generated kernel: its source, and once compiled, its entry points (``fn`` through
    ctypes; ``py``, the extension module's function taking the arrays, where one was built)."""

    def __init__(
        self, source: str, name: str, nargs: int, args: list[Arg] | None, n: int | None = None
    ) -> None:
        self.source, self.name, self.nargs, self.args = source, name, nargs, args
        # the iteration space: every output has the kernel's full size (a row kernel's is
        # given: rows * cols, codegen/cpu_reduce.py)
        if n is None:
            n = max((size for _, size, out in args if out), default=0) if args else 0
        self.n = n
        self.fn: Any = None
        self.py: Any = None
        self.threads = 1

    def key(self) -> str:
        # the extension module bakes the threading threshold in: a library built with another
        # one is another library
        threading_key = f"{parallel_min()} {CHUNK_ALIGN}"
        # and the entry points' templates (ctypes and module): a library built by another
        # version of them is not this kernel's
        entries = _entry(self.name, self.nargs) + cpu_native.templates()
        return cache.digest(
            toolchain(), _prelude(), self.source, repr(self.args), threading_key, entries
        )

    def bind(self, lib: ctypes.CDLL, module: Any) -> None:
        fn = getattr(lib, f"gpugraph_cpu_{self.name}")
        fn.argtypes = [ctypes.c_longlong, ctypes.c_longlong] + [ctypes.c_void_p] * self.nargs
        fn.restype = None
        self.threads = max(1, int(lib.gpugraph_cpu_threads()))
        self.py = getattr(module, self.name, None) if module is not None else None
        self.fn = fn


def _build(kernels: list[_Kernel]) -> Path:
    """One library holding ``kernels`` (from the cache, or compiled into it). Where the
    extension module does not compile (headers that do not fit this compiler), the library is
    built without it and its kernels are called through ctypes."""
    try:
        return _build_library(kernels, cpu_native.include_flags())
    except CpuCompileError as exc:
        if cpu_native.include_flags() is None or cpu_native.MODULE_FILE not in str(exc):
            raise
        return _build_library(kernels, None)


def _build_library(kernels: list[_Kernel], includes: tuple[str, ...] | None) -> Path:
    prelude = cpu_pch.header_text(_prelude(), False)
    text = prelude
    text += "".join(f'#line 1 "{k.name}.cu"\n{k.source}\n' for k in kernels)
    text += '#line 1 "gpugraph_cpu_entry.cpp"\n' + "".join(_entry(k.name, k.nargs) for k in kernels)
    if includes is not None:  # the fast entry point (cpu_native), named after the kernels
        module = "gg_cpu_mod_" + cache.digest(text)[:16]
        text += f'#line 1 "{cpu_native.MODULE_FILE}"\n'
        typed = [k for k in kernels if k.args is not None]
        text += cpu_native.module_source(module, typed, parallel_min(), CHUNK_ALIGN)
    cmd = [compiler(), *flags(), *(includes or ())]

    def compile_to(out: Path) -> None:
        # the prelude (and the module's includes) come precompiled where they can (cpu_pch);
        # the cache key stays the whole text: the program is the same with or without the .gch
        head = cpu_pch.header(cmd[0], tuple(cmd[1:]), toolchain(), _prelude(), bool(includes))
        pch = ["-include", str(head)] if head is not None else []
        body = text[len(prelude) :] if head is not None else text
        proc = subprocess.run(
            [*cmd, *pch, "-x", "c++", "-o", str(out), "-", *_link_flags()],
            input=body,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            names = ", ".join(k.name for k in kernels)
            raise CpuCompileError(
                f"{compiler()} ({' '.join(flags())}) failed to compile kernel(s) {names} for "
                f"backend='cpu':\n{proc.stderr}"
            )

    return cache.file_entry("cpu-so", cache.digest(toolchain(), text), ".so", compile_to)


def _indexed(kernel: _Kernel) -> Path | None:
    """The cached library that holds ``kernel`` (built in some earlier batch), if any."""
    name = cache.read("cpu-index", kernel.key())
    if name is None or not re.fullmatch(rb"[0-9a-f]{64}\.so", name):
        return None
    return cache.verified("cpu-so", name.decode())


class CpuBackend(NumpyBackend):
    name = "cpu"

    def __init__(self) -> None:
        compiler()  # no compiler: a clear error now (at gg.jit / lower), not at the first call
        self._pending: dict[str, _Kernel] = {}
        self._kernels: dict[str, _Kernel] = {}
        self._lock = threading.Lock()
        self._scopes = threading.local()  # per thread: the stack of open ``deferred()`` groups

    def prepare(self, node: Node) -> Runner:
        """This backend's hook for the op, else a one-op native kernel for an elementwise op
        (cpu_unfused, where the policy says it pays), else the NumPy backend's hook, else the
        generic one."""
        hooks = get_op(node.op).extra.get("prepare", {})
        hook = hooks.get(self.name)
        if hook is None:
            native = prepare_unfused(node, self)
            if native is not None:
                return native
            hook = hooks.get("numpy")
        return hook(node, self) if hook is not None else self.generic_runner(node)

    def ready(self, executable: Any) -> None:
        """Every kernel the plan registered, in one compiler run, at lower(); kernels
        registered inside a ``deferred()`` scope are not among them."""
        self.compile_pending()

    @contextmanager
    def deferred(self) -> Iterator[list[_Kernel]]:
        """Kernels first registered inside this scope (by plans lowered in it) are held in
        the yielded group instead of the next batch: no ``ready()``/``compile_pending()``
        compiles them until ``release(group)``. For plans that may never run (the body plans
        of a native loop, run only by its host-driven fallback), and for compiling many plans
        in one batch (lower them in the scope, release, ``compile_pending(jobs)``). An
        executable whose ``cpu_deferred`` is a group releases it when its program is made."""
        stack = self._scopes.__dict__.setdefault("stack", [])
        group: list[_Kernel] = []
        stack.append(group)
        try:
            yield group
        finally:
            stack.pop()

    def release(self, group: list[_Kernel] | None) -> None:
        """The group's uncompiled kernels join the next batch (``compile_pending``)."""
        with self._lock:
            for k in group or ():
                if k.fn is None:
                    self._pending[k.name] = k

    def program(self, executable: Any):
        # a deferred plan's kernels compile when it first runs; a plan built without ready()
        # (e.g. the race checker's copies) compiles its own here too
        self.release(getattr(executable, "cpu_deferred", None))
        self.compile_pending()
        return super().program(executable)

    def kernel(
        self,
        source: str,
        name: str,
        nargs: int,
        args: list[Arg] | None = None,
        n: int | None = None,
    ) -> _Kernel:
        """The kernel ``name`` (registered for the next batch compile if new). With ``args``,
        its parameters' (dtype, element count, is output), it also gets the fast entry point
        (cpu_native); without, only the ctypes one. ``n``: its iteration space, where that is
        not its outputs' size."""
        stack = getattr(self._scopes, "stack", None)
        with self._lock:  # a name is a hash of the source, which fixes the parameters
            k = self._kernels.get(name)
            if k is None:
                k = self._kernels[name] = _Kernel(source, name, nargs, args, n)
            if k.fn is None:  # new, or held by a deferred group: needed by this plan too
                if stack:
                    stack[-1].append(k)
                else:
                    self._pending[name] = k
            return k

    def compile_pending(self, jobs: int = 1) -> None:
        """Compile every registered kernel the cache does not hold, in one compiler run, or
        split into ``jobs`` libraries built by concurrent compiler runs (cpu_prebuild)."""
        with self._lock:
            todo = [k for k in self._pending.values() if k.fn is None]
            self._pending.clear()
            if not todo:
                return
            by_lib: dict[Path, list[_Kernel]] = {}
            missing = []
            for k in todo:
                path = _indexed(k)
                (by_lib.setdefault(path, []) if path else missing).append(k)
            for path, ks in by_lib.items():
                try:
                    lib = ctypes.CDLL(str(path))
                except OSError:  # removed since (cache clear): build again
                    missing += ks
                    continue
                module = cpu_native.load(path, lib)
                for k in ks:
                    k.bind(lib, module)
            batches = [missing[j::jobs] for j in range(min(jobs, len(missing)))]
            if not batches:
                return
            if len(batches) == 1:
                _bind_built(_build(batches[0]), batches[0])
                return
            # each compiler run is a process: threads overlap them. A batch that fails does not
            # cost the others their libraries; its error is raised after they are bound.
            with ThreadPoolExecutor(len(batches)) as pool:
                futures = [pool.submit(_build, b) for b in batches]
            errors = [f.exception() for f in futures]
            for future, batch, error in zip(futures, batches, errors):
                if error is None:
                    _bind_built(future.result(), batch)
            raised = next((e for e in errors if e is not None), None)
            if raised is not None:
                raise raised

    def explain_lines(self, executable: Any) -> list[str]:
        runners = [ln.runner for ln in executable.launches]
        one_op = sum(hasattr(r, "cpu_one_op") for r in runners)
        native = [
            r.cpu_kernel
            for r in runners
            if hasattr(r, "cpu_kernel") and not hasattr(r, "cpu_one_op")
        ]
        refused = [r for r in runners if hasattr(r, "cpu_refusal")]
        rows = sum(k.name.startswith(ROW_KERNEL_PREFIX) for k in native)
        grid = sum(k.name.startswith(GRID_KERNEL_PREFIX) for k in native)
        grids = f", {grid} column/full reductions as grid kernels" if grid else ""
        unfused = f", {one_op} unfused elementwise op(s) as one-op kernels" if one_op else ""
        lines = [
            f"cpu: {len(native)} fused group(s) as native kernels ({rows} of them fused "
            f"reductions as row kernels{grids}; {Path(compiler()).name} {_shown_flags()})"
            f"{unfused}; other ops through NumPy"
        ]
        lines += [f"  cpu: a fused group runs on NumPy: {r.cpu_refusal}" for r in refused]
        return lines


def _bind_built(path: Path, kernels: list[_Kernel]) -> None:
    """Load the library just built for ``kernels``, bind them and index them in the cache."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:  # Python's symbols not visible here (an embedding host)
        path = _build_library(kernels, None)
        lib = ctypes.CDLL(str(path))
    module = cpu_native.load(path, lib)
    for k in kernels:
        k.bind(lib, module)
        cache.write("cpu-index", k.key(), path.name.encode())


FUSED.extra["prepare"]["cpu"] = _prepare_fused
register_backend("cpu", CpuBackend)
# the runners of fused_reduce, fused_grid_reduce and while/scan (native loops); each imports
# this module
from . import cpu_grid, cpu_loop_runner, cpu_rows  # noqa: E402, F401
