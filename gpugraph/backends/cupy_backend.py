"""The GPU backend: CuPy arrays in one device arena, real CUDA streams and events."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UnsupportedError
from .base import Backend, default_backend, register_backend


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self) -> None:
        info = default_backend()
        if info.name != "cupy":
            raise UnsupportedError(f"backend 'cupy' is not usable here: {info.reason}")
        import cupy

        self.xp = cupy

    def asarray(self, host: Any) -> Any:
        return self.xp.asarray(host)

    def make_streams(self, n: int) -> list:
        return [self.xp.cuda.get_current_stream()] + [
            self.xp.cuda.Stream(non_blocking=True) for _ in range(n - 1)
        ]

    def record(self, stream: Any) -> Any:
        return stream.record()

    def wait(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)

    def run_on(self, stream: Any, fn: Callable[[], None]) -> None:
        with stream:
            fn()

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()


register_backend("cupy", CupyBackend)
