"""The backend interface and backend selection ("auto" | "numpy" | "cupy" | "cpu").

"auto" picks CuPy where it sees a CUDA device, else the native CPU backend where a host C++
compiler builds and runs a probe kernel, else NumPy; $GPUGRAPH_BACKEND overrides it
(docs/backends.md)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from ..ir import Node, TensorType
from ..ops.registry import get_op

Runner = Callable[[list, list], None]


class Backend:
    """What a plan needs from an array library. Subclasses set ``name`` and ``xp``."""

    name = "base"
    xp: Any = np
    concurrent_streams = False  # True where streams really run side by side (CUDA)

    # -- memory ---------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> Any:
        return self.xp.empty(max(nbytes, 1), dtype=np.uint8)

    def view(self, arena: Any, offset: int, t: TensorType) -> Any:
        raw = arena[offset : offset + t.nbytes]
        return raw.view(t.dtype).reshape(t.shape)

    def empty(self, t: TensorType) -> Any:
        return self.xp.empty(t.shape, dtype=t.dtype)

    def asarray(self, host: np.ndarray) -> Any:
        return self.xp.asarray(host)

    def copy(self, a: Any) -> Any:
        return self.xp.array(a, copy=True)

    def copyto(self, dst: Any, src: Any) -> None:
        self.xp.copyto(dst, src)

    def is_native(self, a: Any) -> bool:
        return isinstance(a, self.xp.ndarray)

    def may_share_memory(self, a: Any, b: Any) -> bool:
        return bool(self.xp.may_share_memory(a, b))

    # -- streams (one implicit stream unless a backend has real ones) ----------------------
    def make_streams(self, n: int) -> list:
        return [None] * n

    def record(self, stream: Any) -> Any:
        return None

    def wait(self, stream: Any, event: Any) -> None:
        return None

    def run_on(self, stream: Any, fn: Callable[[], None]) -> None:
        fn()

    def program(self, executable: Any) -> Callable[..., list] | None:
        """Optionally, the whole launch list as one function ``f(*inputs, *outs) -> results``
        (see ``Executable.run``) made once per plan; None: calls go through ``execute``."""
        return None

    def execute(self, executable: Any, env: dict) -> None:
        """Run one call's launches (backends with real streams override this)."""
        executable.launch_all(env, executable.streams)

    def synchronize(self) -> None:
        return None

    def ready(self, executable: Any) -> None:
        """Called once a plan's launches are prepared (at ``lower()``): a backend that compiles
        code compiles it here, so its errors surface before the first call."""
        return None

    def explain_lines(self, executable: Any) -> list[str]:
        """What this backend adds to ``explain()`` about a plan (e.g. which groups it compiled)."""
        return []

    # -- ops ------------------------------------------------------------------------------
    def prepare(self, node: Node) -> Runner:
        """A callable that runs ``node`` writing into preallocated output arrays."""
        opdef = get_op(node.op)
        hook = opdef.extra.get("prepare", {}).get(self.name)
        if hook is not None:  # op-specific lowering for this backend (e.g. fused kernels)
            return hook(node, self)
        return self.generic_runner(node)

    def generic_runner(self, node: Node) -> Runner:
        """Run the op's array-API impl, through ``out=`` when the impl takes it."""
        opdef = get_op(node.op)
        xp, attrs = self.xp, node.attrs
        if opdef.out_kw and len(node.outputs) == 1:
            from ..ops.fused import direct_call

            call = direct_call(opdef, xp, attrs)
            if opdef.extra.get("scratch_kw"):  # the impl takes its planned scratch range too
                bound: list = [None]  # the plan's range, bound when the arena is made

                def run_scratch(ins: list, outs: list, scratch: Any = None) -> None:
                    call(*ins, out=outs[0], scratch=bound[0] if scratch is None else scratch)

                run_scratch.call = call  # type: ignore[attr-defined]
                run_scratch.scratch_kw = True  # type: ignore[attr-defined]
                run_scratch.bind_scratch = lambda a: bound.__setitem__(0, a)  # type: ignore
                return run_scratch

            def run_out(ins: list, outs: list) -> None:
                call(*ins, out=outs[0])

            run_out.call = call  # type: ignore[attr-defined]  # f(*ins, out=o), bound once
            return run_out

        def run_copy(ins: list, outs: list) -> None:
            res = opdef.impl(xp, *ins, **attrs)
            for o, r in zip(outs, res if isinstance(res, tuple) else (res,)):
                o[...] = r

        return run_copy


@dataclass(frozen=True)
class BackendInfo:
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def asnumpy(tree: Any) -> Any:
    """``tree`` (an array, or nested tuples/lists/dicts of them) with every array on the host as
    a NumPy array: CuPy arrays are copied back (which waits for their work), NumPy arrays and
    numbers go through ``np.asarray``. Like ``cupy.asnumpy`` or ``jax.device_get``."""
    from ..ops.core import is_cupy
    from ..pytree import flatten, unflatten

    leaves, treedef = flatten(tree)
    return unflatten(treedef, [x.get() if is_cupy(x) else np.asarray(x) for x in leaves])


BACKEND_ENV = "GPUGRAPH_BACKEND"  # overrides what backend="auto" picks: auto, numpy, cpu, cupy


@functools.lru_cache(maxsize=1)
def cupy_status() -> BackendInfo:
    """("cupy", why) when CuPy imports and sees a CUDA device, else ("numpy", why not)."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install
        return BackendInfo("numpy", f"CuPy is not importable: {type(e).__name__}: {e}")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return BackendInfo("numpy", f"CuPy imports but no CUDA device is usable: {e}")
    if n < 1:
        return BackendInfo("numpy", "CuPy imports but reports no CUDA device")
    return BackendInfo("cupy", f"CuPy found {n} CUDA device(s)")


def cpu_status() -> BackendInfo:
    """("cpu", how) when the native CPU backend builds and runs a probe kernel here (checked
    once per process), else ("numpy", why not)."""
    from . import cpu_select

    return cpu_select.probe()


def auto_backend() -> BackendInfo:
    """CuPy with a CUDA device; else the native CPU backend where it works; else NumPy."""
    gpu = cupy_status()
    if gpu.name == "cupy":
        return gpu
    cpu = cpu_status()
    return BackendInfo(cpu.name, f"no GPU ({gpu.reason}); {cpu.reason}")


def default_backend() -> BackendInfo:
    """Which backend "auto" picks, and why: the one $GPUGRAPH_BACKEND names, if set; else
    ``auto_backend()``."""
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced in ("", "auto"):
        return auto_backend()
    if forced == "numpy":
        return BackendInfo("numpy", f"{BACKEND_ENV}=numpy")
    if forced in ("cupy", "cpu"):
        found = cupy_status() if forced == "cupy" else cpu_status()
        if found.name != forced:
            raise UnsupportedError(f"{BACKEND_ENV}={forced}, but {found.reason}")
        return BackendInfo(forced, f"{BACKEND_ENV}={forced}; {found.reason}")
    raise UnsupportedError(
        f"{BACKEND_ENV}={forced!r} names no backend; use auto, numpy, cpu or cupy"
    )


_BACKENDS: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    _BACKENDS[name] = factory


def get_backend(name: str = "auto") -> Backend:
    """The backend called ``name``; "auto" is resolved (default_backend) on every call."""
    return _backend(default_backend().name if name == "auto" else name)


@functools.cache
def _backend(name: str) -> Backend:
    from . import cpu_backend, cupy_backend, numpy_backend, sim  # noqa: F401  (registration)

    if name not in _BACKENDS:
        raise UnsupportedError(
            f"backend {name!r} is not known; use 'auto', " + ", ".join(map(repr, _BACKENDS))
        )
    return _BACKENDS[name]()
