"""The CuPy executor's stream logic without a GPU: the caller's stream, fork/join, CUDA graph
capture and replay, driven through a stand-in for the ``cupy`` module (NumPy arrays; streams,
events and graph capture that log every call, and a captured graph that replays the captured
kernels). tests/test_cupy_gpu.py runs the real thing.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.backends.base import register_backend
from gpugraph.backends.cupy_backend import CupyBackend
from gpugraph.testing.races import branchy_function

X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)


# -- a logging stand-in for cupy ----------------------------------------------------------------
class FakeEvent:
    ids = itertools.count()

    def __init__(self) -> None:
        self.id = next(self.ids)


class FakeStream:
    def __init__(self, cuda: FakeCuda, name: str) -> None:
        self.cuda, self.name = cuda, name

    def record(self) -> FakeEvent:
        ev = FakeEvent()
        self.cuda.log.append(("record", self.name, ev.id))
        return ev

    def wait_event(self, ev: FakeEvent) -> None:
        self.cuda.log.append(("wait", self.name, ev.id))

    def synchronize(self) -> None:
        self.cuda.log.append(("sync", self.name, None))

    def __enter__(self) -> FakeStream:
        self.cuda.current.append(self)
        return self

    def __exit__(self, *exc) -> None:
        self.cuda.current.pop()

    def begin_capture(self) -> None:
        self.cuda.capturing = []
        self.cuda.log.append(("begin_capture", self.name, None))

    def end_capture(self) -> FakeGraph:
        g = FakeGraph(self.cuda, self.cuda.capturing)
        self.cuda.capturing = None
        self.cuda.log.append(("end_capture", self.name, None))
        return g


class FakeGraph:
    def __init__(self, cuda: FakeCuda, kernels: list) -> None:
        self.cuda, self.kernels = cuda, kernels

    def launch(self, stream=None) -> None:
        self.cuda.log.append(("graph_launch", stream.name, len(self.kernels)))
        for fn in self.kernels:
            fn()


class FakeCuda:
    def __init__(self) -> None:
        self.log: list = []
        self.names = itertools.count(1)
        self.current = [FakeStream(self, "caller")]
        self.capturing: list | None = None
        self.device_syncs = 0

    def Stream(self, non_blocking: bool = False) -> FakeStream:  # noqa: N802 (cupy's name)
        return FakeStream(self, f"s{next(self.names)}")

    def Device(self):  # noqa: N802
        cuda = self

        class Device:
            def synchronize(self) -> None:
                cuda.device_syncs += 1

        return Device()

    def get_current_stream(self) -> FakeStream:
        return self.current[-1]

    def MemoryPool(self):  # noqa: N802
        return type("Pool", (), {"malloc": staticmethod(lambda n: None)})()

    @contextlib.contextmanager
    def using_allocator(self, malloc):
        self.log.append(("allocator", "pool", None))
        yield


class FakeCupy:
    def __init__(self) -> None:
        self.cuda = FakeCuda()

    def __getattr__(self, name: str):
        return getattr(np, name)


class FakeCupyBackend(CupyBackend):
    """The real executor logic; kernels run (or are captured) on NumPy and are logged."""

    name = "fake-cupy"

    def __init__(self) -> None:
        super().__init__(FakeCupy())

    def run_on(self, stream, fn) -> None:
        cuda = self.xp.cuda
        with stream:
            cuda.log.append(("kernel", cuda.get_current_stream().name, None))
            if cuda.capturing is not None:
                if getattr(cuda, "refuse_capture", False):
                    raise RuntimeError("operation not permitted when stream is capturing")
                cuda.capturing.append(fn)
            else:
                fn()


register_backend("fake-cupy", FakeCupyBackend)


def fake_jit(fn, **kw):
    j = gg.jit(fn, backend="fake-cupy", fuse=False, **kw)
    return j


def fresh_log(compiled) -> list:
    log = compiled.backend.xp.cuda.log
    log.clear()
    return log


def kernels_by_stream(log) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind, name, _ in log:
        if kind == "kernel":
            out[name] = out.get(name, 0) + 1
    return out


def test_fork_join_on_the_callers_stream():
    fn = branchy_function(4, 2)
    j = fake_jit(fn)
    c = j.lower(X)
    assert c.schedule.num_streams >= 2
    log = fresh_log(c)
    syncs = c.backend.xp.cuda.device_syncs
    np.testing.assert_allclose(j(X), fn(X), rtol=1e-6)
    assert log[0][:2] == ("record", "caller")  # the fork, after what the caller queued
    fork = log[0][2]
    side = {name for kind, name, _ in log if kind == "kernel"} - {"caller"}
    assert len(side) == c.schedule.num_streams - 1
    for s in side:  # each side stream waits on the fork before its first kernel
        first = next(i for i, e in enumerate(log) if e[1] == s)
        assert log[first] == ("wait", s, fork)
    joined = {ev for kind, name, ev in log if kind == "wait" and name == "caller"}
    finals = {}
    for kind, name, ev in log:
        if kind == "record" and name in side:
            finals[name] = ev
    assert set(finals.values()) <= joined  # the caller waits on every side stream's last event
    assert log[-1][:2] == ("record", "caller")  # the call's "done" event
    assert c.backend.xp.cuda.device_syncs == syncs + 1  # first call only (constants uploaded)
    j(X)
    assert c.backend.xp.cuda.device_syncs == syncs + 1


def test_second_call_waits_for_the_first_and_honours_a_new_caller_stream():
    fn = branchy_function(3, 2)
    j = fake_jit(fn)
    c = j.lower(X)
    j(X)
    done = c.backend.state(c.executable).done
    log = fresh_log(c)
    other = c.backend.xp.cuda.Stream()
    with other:
        out = j(X * 2)
    np.testing.assert_allclose(out, fn(X * 2), rtol=1e-6)
    assert log[0] == ("wait", other.name, done.id)
    assert kernels_by_stream(log).get(other.name, 0) > 0
    assert "caller" not in kernels_by_stream(log)


def test_cuda_graph_captures_once_and_replays():
    fn = branchy_function(4, 2)
    j = fake_jit(fn, cuda_graph=True)
    c = j.lower(X)
    log = fresh_log(c)
    first = j(X)
    np.testing.assert_allclose(first, fn(X), rtol=1e-6)
    kinds = [k for k, _, _ in log]
    assert kinds.count("begin_capture") == 1 and kinds.count("end_capture") == 1
    cap = next(name for k, name, _ in log if k == "begin_capture")
    assert cap != "caller"
    st = c.backend.state(c.executable)
    assert st.captures == 1 and st.replays == 0
    keep = first.copy()
    for scale in (2.0, -3.0):
        log.clear()
        out = j(X * scale)
        np.testing.assert_allclose(out, fn(X * scale), rtol=1e-6)
        kinds = [k for k, _, _ in log]
        assert "begin_capture" not in kinds and "kernel" not in kinds
        assert ("graph_launch", "caller") in [(k, n) for k, n, _ in log]
    assert st.captures == 1 and st.replays == 2
    np.testing.assert_array_equal(first, keep)  # outputs are fresh arrays, not graph buffers


def test_cuda_graph_capture_failure_falls_back_to_eager():
    fn = branchy_function(3, 2)
    j = fake_jit(fn, cuda_graph=True)
    c = j.lower(X)
    c.backend.xp.cuda.refuse_capture = True
    try:
        with pytest.warns(RuntimeWarning, match="capture failed"):
            np.testing.assert_allclose(j(X), fn(X), rtol=1e-6)
        log = fresh_log(c)
        np.testing.assert_allclose(j(X * 2), fn(X * 2), rtol=1e-6)
    finally:
        c.backend.xp.cuda.refuse_capture = False
    st = c.backend.state(c.executable)
    assert st.failed and st.graph is None
    assert "graph_launch" not in [k for k, _, _ in log]
    assert c.backend.xp.cuda.capturing is None


def test_cuda_graph_single_stream_and_identity_output():
    def fn(x):
        return gg.tanh(x) * 2.0, x

    j = fake_jit(fn, cuda_graph=True, streams=1)
    a, b = j(X)
    a2, b2 = j(X + 1)
    np.testing.assert_allclose(a2, np.tanh(X + 1) * 2, rtol=1e-6)
    np.testing.assert_array_equal(b2, X + 1)
    np.testing.assert_array_equal(b, X)


def trace_order(log) -> list[set[int]]:
    """For each log entry, the entries that happen before it (stream order + record->wait)."""
    last: dict[str, int] = {}
    recorded: dict[int, int] = {}
    before: list[set[int]] = []
    for i, (kind, name, ev) in enumerate(log):
        b: set[int] = set()
        if name in last:
            b |= before[last[name]] | {last[name]}
        if kind == "wait" and ev in recorded:
            b |= before[recorded[ev]] | {recorded[ev]}
        if kind == "record":
            recorded[ev] = i
        before.append(b)
        if kind in ("kernel", "record", "wait"):
            last[name] = i
    return before


@pytest.mark.parametrize("streams", [2, 4])
def test_trace_orders_every_data_edge_and_joins_everything(streams):
    fn = branchy_function(4, 3)
    j = fake_jit(fn, streams=streams)
    c = j.lower(X)
    log = fresh_log(c)
    log.append(("kernel", "caller", None))  # the caller's work that produced the inputs
    j(X)
    kernels = [i for i, e in enumerate(log) if e[0] == "kernel" and i > 0]
    launches = [la for la in c.executable.launches if la.runner is not None]
    assert len(kernels) == len(launches)
    at = {v: k for k, la in zip(kernels, launches) for v in la.outputs}
    before = trace_order(log)
    for k, la in zip(kernels, launches):
        assert 0 in before[k], f"{la} may run before the caller's earlier work"
        for v in la.inputs:
            if v in at:
                assert at[v] in before[k], f"{la} may run before the producer of {v}"
    done = len(log) - 1
    assert log[done][:2] == ("record", "caller")
    assert set(kernels) <= before[done]
