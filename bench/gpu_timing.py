"""Timing that measures the device, not Python: N back-to-back calls between two CUDA events
on the current stream, with the host's time to enqueue them reported separately.

A single call timed between two events is mostly launch latency and Python; and an event pair
around each call lets the device idle while the host prepares the next one. Back-to-back calls
keep the device queue full whenever the host is faster than the device, so the events measure
the device. When the host is the slower side the device time per call equals the host time per
call: the two numbers side by side say which side bounds the workload.

``cp`` is the ``cupy`` module (or the NumPy-backed stand-in the tests use).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    device_ms: float  # median device time per call (events around ``calls`` calls)
    host_us: float  # median host time per call to enqueue them (no synchronization inside)
    calls: int
    repeats: int

    def host_bound(self) -> bool:
        """The device waited for the host: enqueueing took as long as running (within 10%)."""
        return self.host_us * 1e-3 >= 0.9 * self.device_ms


def device_time(
    cp: Any, fn: Callable[[], Any], calls: int = 20, repeats: int = 5, warmup: int = 3
) -> Timing:
    for _ in range(warmup):
        fn()
    stream = cp.cuda.get_current_stream()
    stream.synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()  # made once, re-recorded every repeat
    dev, host = [], []
    for _ in range(repeats):
        start.record(stream)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t1 = time.perf_counter()
        end.record(stream)
        end.synchronize()
        dev.append(cp.cuda.get_elapsed_time(start, end) / calls)
        host.append((t1 - t0) * 1e6 / calls)
    return Timing(statistics.median(dev), statistics.median(host), calls, repeats)
