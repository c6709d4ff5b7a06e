"""The CuPy executor's stream logic without a GPU: the caller's stream, fork/join, CUDA graph
capture and replay, driven through a stand-in for the ``cupy`` module (NumPy arrays; streams,
events and graph capture that log every call, and a captured graph that replays the captured
kernels). tests/test_cupy_gpu.py runs the real thing.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import warnings

import numpy as np
import pytest
from cupy_emulated import EmulatedCupy

import gpugraph as gg
from gpugraph.backends.base import register_backend
from gpugraph.backends.cupy_backend import CupyBackend
from gpugraph.ops.registry import get_op
from gpugraph.region_exec import RUNNERS
from gpugraph.testing.races import branchy_function

X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)


# -- a logging stand-in for cupy ----------------------------------------------------------------
class FakeEvent:
    ids = itertools.count()

    def __init__(self, disable_timing: bool = False, cuda: FakeCuda | None = None) -> None:
        self.id = next(self.ids)
        self.disable_timing = disable_timing
        self.cuda = cuda
        self.stream: str | None = None  # where it was last recorded
        self.done = True  # kernels run at once here; a test sets False for work still queued
        self.time = 0.0  # host clock at the last record (kernels run at once here)

    def record(self, stream: FakeStream | None = None) -> None:
        (stream or self.cuda.get_current_stream()).record(self)

    def synchronize(self) -> None:
        self.cuda.log.append(("event_sync", self.stream, self.id))


class FakeStream:
    def __init__(self, cuda: FakeCuda, name: str) -> None:
        self.cuda, self.name = cuda, name

    def record(self, event: FakeEvent | None = None) -> FakeEvent:
        ev = FakeEvent(cuda=self.cuda) if event is None else event
        self.cuda.timing_events += not ev.disable_timing
        ev.stream, ev.time = self.name, time.perf_counter()
        self.cuda.log.append(("record", self.name, ev.id))
        return ev

    def wait_event(self, ev: FakeEvent) -> None:
        self.cuda.log.append(("wait", self.name, ev.id))
        if ev.stream in self.cuda.in_capture:  # waiting on captured work joins the capture
            self.cuda.in_capture.add(self.name)

    def is_capturing(self) -> bool:
        if self.name in self.cuda.broken:  # as CuPy for a stream left in a dead capture
            raise RuntimeError("the capture sequence on this stream has been invalidated")
        return self.name in self.cuda.in_capture

    def synchronize(self) -> None:
        self.cuda.log.append(("sync", self.name, None))
        if self.name in self.cuda.in_capture:  # as CUDA: refused, and the capture is lost
            self.cuda.invalidated = True
            raise RuntimeError("cudaErrorStreamCaptureUnsupported: synchronize while capturing")

    def __enter__(self) -> FakeStream:
        self.cuda.current.append(self)
        return self

    def __exit__(self, *exc) -> None:
        self.cuda.current.pop()

    def begin_capture(self) -> None:
        self.cuda.capturing = []
        self.cuda.in_capture = {self.name}
        self.cuda.log.append(("begin_capture", self.name, None))

    def end_capture(self) -> FakeGraph:
        # as CUDA: every stream that joined the capture must have been joined back (this
        # stream waited on an event recorded on it after its last work), else the end fails
        # and the unjoined streams are left broken
        log, start = self.cuda.log, self.cuda.log_index("begin_capture")
        recorded = {ev: (i, name) for i, (k, name, ev) in enumerate(log) if k == "record"}
        unjoined = set()
        for s in self.cuda.in_capture - {self.name}:
            last = max(i for i, e in enumerate(log) if i >= start and e[1] == s)
            joined = any(
                k == "wait"
                and name == self.name
                and recorded.get(ev, (-1, ""))[1] == s
                and recorded[ev][0] >= last
                for k, name, ev in log[start:]
            )
            if not joined:
                unjoined.add(s)
        g = FakeGraph(self.cuda, self.cuda.capturing)
        self.cuda.capturing = None
        self.cuda.in_capture = set()
        self.cuda.log.append(("end_capture", self.name, None))
        if self.cuda.invalidated:  # as CUDA: something not capturable ran during the capture
            self.cuda.invalidated = False
            raise RuntimeError("cudaErrorStreamCaptureInvalidated")
        if unjoined:
            self.cuda.broken |= unjoined
            raise RuntimeError(f"cudaErrorStreamCaptureUnjoined: {sorted(unjoined)}")
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
        self.in_capture: set[str] = set()  # streams taking part in the capture
        self.broken: set[str] = set()  # streams a failed capture left unusable
        self.timing_events = 0  # events recorded with timing on (slower to record and wait)
        self.device_syncs = 0
        self.invalidated = False  # the running capture met an operation it cannot hold

    def free(self, what: str) -> None:
        """cudaFree: synchronizes the device, so a capture in progress is invalidated."""
        self.log.append(("free", what, None))
        if self.capturing is not None:
            self.invalidated = True

    def log_index(self, kind: str) -> int:
        return max(i for i, e in enumerate(self.log) if e[0] == kind)

    def Event(self, block: bool = False, disable_timing: bool = False) -> FakeEvent:  # noqa: N802
        return FakeEvent(disable_timing, self)

    @staticmethod
    def get_elapsed_time(start: FakeEvent, end: FakeEvent) -> float:
        """Milliseconds between two records (host clock: kernels run at once here)."""
        assert not (start.disable_timing or end.disable_timing), "events made without timing"
        return (end.time - start.time) * 1e3

    class runtime:  # noqa: N801 (cupy's name)
        @staticmethod
        def getDeviceProperties(device: int) -> dict:  # noqa: N802
            return {"name": b"stand-in for cupy (NumPy)", "multiProcessorCount": 1}

    def Stream(self, non_blocking: bool = False) -> FakeStream:  # noqa: N802 (cupy's name)
        return FakeStream(self, f"s{next(self.names)}")

    def Device(self):  # noqa: N802
        cuda = self

        class Device:
            id = 0
            attributes = {"MultiProcessorCount": 1}

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
    __version__ = "stand-in"

    def __init__(self) -> None:
        self.cuda = FakeCuda()

    @staticmethod
    def fuse(fn):
        return fn  # cupy.fuse compiles fn into one kernel; NumPy just runs it

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
            assert stream.name not in cuda.broken, f"launch on {stream.name}, left in a capture"
            cuda.log.append(("kernel", cuda.get_current_stream().name, None))
            if cuda.capturing is not None:
                if getattr(cuda, "refuse_capture", False):
                    raise RuntimeError("operation not permitted when stream is capturing")
                # a graph keeps the arrays it was captured with; the launch list's bound
                # calls get other arrays at later calls
                cuda.capturing.append(fn.frozen() if hasattr(fn, "frozen") else fn)
            else:
                fn()


register_backend("fake-cupy", FakeCupyBackend)


@pytest.fixture
def region_runners_on_the_stand_in():
    """The stand-in backend gets the region runners CuPy gets (installed for 'cupy' only)."""
    for op, runner in RUNNERS.items():
        get_op(op).extra["prepare"]["fake-cupy"] = runner
    yield
    for op in RUNNERS:
        del get_op(op).extra["prepare"]["fake-cupy"]


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
    # the side streams had joined the capture (they waited on its fork): the failed capture
    # joined them back before ending it, so none is left inside a dead capture
    assert not c.backend.xp.cuda.broken and not c.backend.xp.cuda.in_capture


def test_side_streams_a_failed_capture_leaves_stuck_are_replaced(monkeypatch):
    """If the cleanup cannot join a side stream back (CUDA can leave the streams of an
    invalidated capture unqueryable), the ended capture leaves it unusable: later calls run on
    a fresh stream instead."""
    fn = branchy_function(3, 2)
    j = fake_jit(fn, cuda_graph=True)
    c = j.lower(X)
    cuda = c.backend.xp.cuda
    cuda.refuse_capture = True

    # the cleanup's query fails as for an invalidated capture, so nothing is joined back
    def is_capturing(self) -> bool:
        if self.cuda.capturing is not None:
            raise RuntimeError("the capture sequence on this stream has been invalidated")
        return self.name in self.cuda.broken

    monkeypatch.setattr(FakeStream, "is_capturing", is_capturing)
    try:
        with pytest.warns(RuntimeWarning, match="capture failed"):
            np.testing.assert_allclose(j(X), fn(X), rtol=1e-6)
    finally:
        cuda.refuse_capture = False
    st = c.backend.state(c.executable)
    assert cuda.broken and set(s.name for s in st.stuck) == cuda.broken
    assert not cuda.broken & {s.name for s in c.executable.streams[1:]}
    log = fresh_log(c)
    for k in (2.0, -1.0):  # eager calls, on the fresh streams only (run_on asserts it)
        np.testing.assert_allclose(j(X * k), fn(X * k), rtol=1e-6)
    assert len(kernels_by_stream(log)) == c.schedule.num_streams


def test_events_only_order_streams_so_they_are_recorded_without_timing():
    fn = branchy_function(4, 2)
    for cuda_graph in (False, True):
        j = fake_jit(fn, cuda_graph=cuda_graph)
        c = j.lower(X)
        for _ in range(2):
            j(X)
        assert c.backend.xp.cuda.timing_events == 0


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_events_are_made_once_per_record_site(cuda_graph):
    fn = branchy_function(4, 2)
    j = fake_jit(fn, cuda_graph=cuda_graph)
    c = j.lower(X)
    j(X)  # the first call makes the events (and, with cuda_graph, captures)
    made = next(FakeEvent.ids)
    sites = []
    for k in range(3):
        log = fresh_log(c)
        np.testing.assert_allclose(j(X * k), fn(X * k), rtol=1e-6)
        sites.append([ev for kind, _, ev in log if kind == "record"])
    assert next(FakeEvent.ids) == made + 1  # the three calls made no event
    assert sites[0] == sites[1] == sites[2]  # each site re-records its own event
    assert len(set(sites[0])) == len(sites[0])  # and no two sites of a call share one
    if not cuda_graph:
        assert len(sites[0]) >= c.schedule.num_streams  # fork, joins and done at least


class DeviceBuffer:
    """Garbage in a reference cycle whose finalizer frees device memory, as a CuPy array held
    by a cycle does when the collector breaks it."""

    def __init__(self, cuda: FakeCuda, name: str) -> None:
        self.cuda, self.name, self.cycle = cuda, name, self

    def __del__(self) -> None:
        self.cuda.free(self.name)


@pytest.mark.parametrize("guarded", [True, False])
def test_a_collection_during_capture_cannot_invalidate_it(monkeypatch, guarded):
    """Garbage waits before the call and more is made during capture, with the collector set
    to run at nearly every allocation. Collected before capture and not during it, nothing is
    freed mid-capture; with the guard removed (planted bug) the capture is invalidated."""
    import gc

    from gpugraph.backends import cupy_backend

    if not guarded:
        no_guard = {"collect": lambda: 0, "disable": lambda: None, "enable": lambda: None}
        monkeypatch.setattr(
            cupy_backend, "gc", type("NoGuard", (), {**no_guard, "isenabled": gc.isenabled})
        )
    fn = branchy_function(3, 2)
    j = fake_jit(fn, cuda_graph=True)
    c = j.lower(X)
    cuda = c.backend.xp.cuda
    real_run_on = c.backend.run_on

    def run_on(stream, body):
        if cuda.capturing is not None:
            DeviceBuffer(cuda, "during")
            _ = [[] for _ in range(50)]  # allocations: a chance for the collector to run
        real_run_on(stream, body)

    monkeypatch.setattr(c.backend, "run_on", run_on)
    log = fresh_log(c)
    DeviceBuffer(cuda, "before")
    threshold = gc.get_threshold()
    gc.set_threshold(1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = j(X)
        gc.collect()
    finally:
        gc.set_threshold(*threshold)
    st = c.backend.state(c.executable)
    if not guarded:
        assert "CaptureInvalidated" in st.failed and st.graph is None
        assert any("capture failed" in str(w.message) for w in caught)
        return
    assert not caught and not st.failed and st.captures == 1
    begin, end = cuda.log_index("begin_capture"), cuda.log_index("end_capture")
    frees = {name: i for i, (kind, name, _) in enumerate(log) if kind == "free"}
    assert frees["before"] < begin and frees["during"] > end
    np.testing.assert_allclose(first, fn(X), rtol=1e-6)
    for k in (2.0, -1.0):  # and the graph replays correctly
        np.testing.assert_allclose(j(X * k), fn(X * k), rtol=1e-6)
    assert st.replays == 2


def test_a_dropped_executables_arena_outlives_its_last_call():
    import gc
    import weakref

    fn = branchy_function(3, 2)
    j = fake_jit(fn)
    c = j.lower(X)
    j(X)
    backend = c.backend
    st = backend.state(c.executable)
    st.done.done = False  # the last call is still running on the device
    arena = weakref.ref(c.executable.arena)
    const = [weakref.ref(a) for v, a in c.executable.fixed.items() if v.node.op == "constant"]
    del j, c, st
    gc.collect()
    assert arena() is not None and all(r() is not None for r in const)
    assert backend.release_finished() == 1  # parked, not freed
    backend._parked[0][0].done = True  # the call finished
    assert backend.release_finished() == 0
    gc.collect()
    assert arena() is None and all(r() is None for r in const)


class CaptureStrictCupy(FakeCupy):
    """cupy.concatenate of more than 8 arrays uploads a pointer table from the host, which
    CuPy refuses while the current stream is capturing (H2D copies are not capturable)."""

    def concatenate(self, arrays, axis=0, out=None):
        if len(arrays) > 8 and self.cuda.capturing is not None:
            raise RuntimeError("the current stream is capturing, so H2D transfers are disallowed")
        return np.concatenate(arrays, axis=axis, out=out)


class CaptureStrictBackend(FakeCupyBackend):
    name = "fake-cupy-strict"

    def __init__(self) -> None:
        CupyBackend.__init__(self, CaptureStrictCupy())

    def run_on(self, stream, fn) -> None:
        cuda = self.xp.cuda
        if cuda.capturing is not None:
            with stream:
                fn()  # what CuPy does while capturing: the calls are made (and may be refused)
        super().run_on(stream, fn)


register_backend("fake-cupy-strict", CaptureStrictBackend)


def test_concatenate_of_many_inputs_is_capturable():
    def fn(x):
        return gg.concatenate([x * float(k) for k in range(10)], axis=1)

    j = gg.jit(fn, backend="fake-cupy-strict", fuse=False, cuda_graph=True)
    c = j.lower(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns
        for k in range(3):
            want = np.concatenate([(X + k) * i for i in range(10)], axis=1)
            np.testing.assert_allclose(j(X + k), want)
    st = c.backend.state(c.executable)
    assert not st.failed and st.captures == 1 and st.replays == 2


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


# -- the take_grad lowering (a hand-written RawKernel) on the kernel emulator -------------------
@pytest.mark.emulator
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "axis,x_shape,idx,mode",
    [
        (0, (5, 3), [4, 0, 4, -1, 7, -6], "wrap"),
        (0, (5, 3), [4, 0, 4, -1, 7, -6], "clip"),
        (0, (5, 3), [4, 0, 4, -1, -5], "raise"),
        (1, (2, 6, 3), [[1, 1], [5, 0]], "raise"),
        (1, (2, 4), 2, "raise"),
    ],
)
def test_take_grad_runner_on_the_emulator(monkeypatch, dtype, axis, x_shape, idx, mode):
    import sys

    from gpugraph.backends import cupy_kernels
    from gpugraph.ir import GraphBuilder, TensorType
    from gpugraph.testing import emulator_available

    if not emulator_available():
        pytest.skip("g++ not found (kernel emulator)")
    idx = np.asarray(idx, dtype=np.int32)  # int32 indices: the runner widens them to int64
    g_shape = x_shape[:axis] + idx.shape + x_shape[axis + 1 :]
    g = np.random.default_rng(0).standard_normal(g_shape).astype(dtype)
    b = GraphBuilder()
    ins = [b.add_input(TensorType(g_shape, dtype)), b.add_input(TensorType(idx.shape, "int32"))]
    attrs = {"axis": axis, "dim": x_shape[axis], "mode": mode}
    node = b.add_node("take_grad", ins, attrs, [TensorType(x_shape, dtype)])
    fake = EmulatedCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cupy_kernels._raw_kernel.cache_clear()
    try:
        run = cupy_kernels.prepare_take_grad(node, type("B", (), {"xp": fake})())
        out = np.full(x_shape, np.nan, dtype)  # the runner zeroes it first
        run([g, idx], [out])
    finally:
        cupy_kernels._raw_kernel.cache_clear()
    # the rows np.take's mode picks (raise: in range here, negatives from the end)
    n = x_shape[axis]
    rows = np.clip(idx, 0, n - 1) if mode == "clip" else idx % n
    want = np.zeros(x_shape, dtype)
    np.add.at(
        np.moveaxis(want, axis, 0),
        rows.reshape(-1),
        np.moveaxis(g.reshape(g_shape[:axis] + (idx.size,) + x_shape[axis + 1 :]), axis, 0),
    )
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    from gpugraph.ops.index import _take_grad_impl

    np.testing.assert_allclose(
        _take_grad_impl(np, g, idx, axis, n, mode), want, rtol=1e-6, atol=1e-6
    )
    ((name, grid, block),) = fake.launches
    assert name == cupy_kernels.TAKE_GRAD_KERNELS[np.dtype(dtype)] and block == (256,)


@pytest.mark.emulator
@pytest.mark.parametrize(
    "dtype,axis,widths",
    [
        ("float32", 1, [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]),  # more than 8: one launch, no table
        ("int64", 0, [2, 0, 3]),  # an empty input
        ("bool", 2, [1] * 20),  # more than 16: two launches
    ],
)
def test_concatenate_runner_on_the_emulator(monkeypatch, dtype, axis, widths):
    """concatenate on CuPy is one hand-written kernel per 16 inputs (kernels/concat.cu)."""
    import sys

    from gpugraph.backends import cupy_kernels
    from gpugraph.ir import GraphBuilder, TensorType
    from gpugraph.testing import emulator_available

    if not emulator_available():
        pytest.skip("g++ not found (kernel emulator)")
    rng = np.random.default_rng(1)
    base = [2, 3, 2]
    arrays = []
    for w in widths:
        shape = base[:axis] + [w] + base[axis + 1 :]
        arrays.append((rng.standard_normal(shape) * 10).astype(dtype))
    b = GraphBuilder()
    ins = [b.add_input(TensorType(a.shape, dtype)) for a in arrays]
    out_shape = base[:axis] + [sum(widths)] + base[axis + 1 :]
    node = b.add_node("concatenate", ins, {"axis": axis}, [TensorType(out_shape, dtype)])
    fake = EmulatedCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cupy_kernels._raw_kernel.cache_clear()
    try:
        run = cupy_kernels.prepare_concatenate(node, type("B", (), {"xp": fake})())
        out = np.zeros(out_shape, dtype)
        run(arrays, [out])
    finally:
        cupy_kernels._raw_kernel.cache_clear()
    np.testing.assert_array_equal(out, np.concatenate(arrays, axis=axis))
    want_launches = -(-len(widths) // cupy_kernels.CONCAT_BATCH)
    assert len(fake.launches) == want_launches
    assert all(name == cupy_kernels.CONCAT_KERNELS[np.dtype(dtype)] for name, _, _ in fake.launches)


def test_eager_like_creation_stays_on_the_arrays_device(monkeypatch):
    """zeros_like/ones_like/full_like of a CuPy array, eagerly, give a CuPy array (stand-ins)."""
    from gpugraph.ops import core

    class DeviceArray(np.ndarray):
        pass

    class FakeModule:
        ndarray = DeviceArray

        @staticmethod
        def full(shape, value, dtype):
            return np.full(shape, value, dtype).view(DeviceArray)

        def __getattr__(self, name):
            return getattr(np, name)

    monkeypatch.setattr(core, "_cupy", FakeModule())
    monkeypatch.setattr(core, "_CUPY_ARRAY", (DeviceArray,))
    x = X.view(DeviceArray)
    for fn, args, want in (
        (gg.zeros_like, (), 0.0),
        (gg.ones_like, (np.int32,), 1),
        (gg.full_like, (2.5,), 2.5),
    ):
        r = fn(x, *args)
        assert isinstance(r, DeviceArray), fn.__name__
        np.testing.assert_array_equal(np.asarray(r), np.full(X.shape, want, r.dtype))
    assert r.dtype == np.float32 and gg.ones_like(x, np.int32).dtype == np.int32
    assert not isinstance(gg.zeros_like(X), DeviceArray)  # NumPy in, NumPy out


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_non_contiguous_inputs_are_reshaped_as_views(cuda_graph):
    """A reshape in the launch loop runs outside any stream context: of a non-contiguous
    input it would copy on the current stream, unordered with the side streams reading it."""
    fn0 = branchy_function(3, 2)

    def fn(x):
        return fn0(gg.reshape(x, (8, 8)))

    j = fake_jit(fn, cuda_graph=cuda_graph, streams=3)
    xt = np.ascontiguousarray(X.reshape(4, 16).T).T  # (4, 16), Fortran order
    c = j.lower(xt)
    ex = c.executable
    reshapes = [la for la in ex.launches if la.runner is None and la.inputs[0] in ex.graph.inputs]
    assert reshapes, "the test needs a reshape of an input in the launch list"
    seen = []
    real = ex.launch_all

    def checked(env, streams):
        seen.extend(env[la.inputs[0]].flags.c_contiguous for la in reshapes)
        real(env, streams)

    ex.launch_all = checked
    for k in range(2):
        np.testing.assert_allclose(j(xt * (k + 1)), fn0(X * (k + 1)), rtol=1e-6)
    assert seen and all(seen)


def test_constants_are_uploaded_c_ordered_with_their_shape():
    ft = np.asfortranarray(X)  # a Fortran-ordered constant; np.float32 a 0-d one

    def fn(x):
        return gg.reshape(x * np.float32(3.0) + ft, (64,))

    j = fake_jit(fn)
    c = j.lower(X)
    consts = [(v, a) for v, a in c.executable.fixed.items() if c.memory.slots[v].kind == "const"]
    assert len(consts) >= 2
    for v, a in consts:
        assert a.shape == v.type.shape and a.flags.c_contiguous, (v, a.shape)
    np.testing.assert_allclose(j(X), (X * 3 + X).reshape(64), rtol=1e-6)
