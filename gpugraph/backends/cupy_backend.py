"""The GPU backend: CuPy arrays in one device arena, real CUDA streams and events.

``execute(executable, env)`` owns the launch sequence of one call (the Executable's run loop
hands it over):

* **The caller's stream.** Stream 0 of the schedule is the caller's current stream at call
  time, so work on it starts after whatever the caller queued. The other streams (created once
  per Executable, non-blocking) first wait on an event recorded on the caller's stream (fork),
  and at the end the caller's stream waits on an event recorded on each of them (join), so the
  results are safe to use on the caller's stream with no host synchronization. The next call
  waits on the previous call's final event first, so a caller that switches streams between
  calls cannot overlap two calls on the one arena.
* **CUDA graphs** (``gg.jit(..., cuda_graph=True)``). The first call of a signature allocates
  persistent input and output buffers, runs the launch list once eagerly (this compiles and
  loads every kernel and gives that call's results), then captures the same launch list,
  fork/join events included, on a private capture stream into a CUDA graph. Every later call
  copies the arguments into the captured input buffers on the caller's stream, launches the
  graph there, and copies the outputs out of the captured output buffers into fresh arrays
  (the caller owns those; the captured buffers are reused by the next replay). Allocations
  made during capture (temporaries of CuPy ops) come from a private memory pool kept alive
  with the graph, so nothing else can reuse their addresses between replays.

Hazards a real device adds, and how they are kept away:

* **No collection during capture.** A destructor that runs mid-capture and frees device memory
  (``cudaFree`` is not capturable) invalidates the capture. Capture starts with ``gc.collect()``
  and runs with the cyclic collector disabled until ``end_capture`` (re-enabled in a ``finally``),
  as ``torch.cuda.graph`` does.
* **Events made once.** Every record site of an Executable (each fork, each join, each
  cross-stream edge, the call's ``done``) has its own ``cupy.cuda.Event``, made on the first
  call and re-recorded on later ones: a wait binds to the record made before it, so re-recording
  an event never disturbs an earlier wait. Capture has its own set.
* **Arenas outlive their last call.** CuPy's pool returns a freed block to the stream it was
  allocated on, and reuses it for allocations on that stream only; the arena is written on the
  caller's stream and on side streams that are not ordered with it. When an Executable is
  dropped, its arena, constants and captured graph are parked until the event recorded at the
  end of its last call has completed, and only then released (checked at the next call or
  lowering, or by ``release_finished()``).
"""

from __future__ import annotations

import gc
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UnsupportedError
from .base import Backend, cupy_status, register_backend
from .cupy_regions import capture_segments, has_regions, replay_segments


@dataclass
class _CallState:
    """Per-Executable state kept by the backend across calls."""

    done: Any = None  # event recorded on the caller's stream at the end of the last call
    graph: Any = None  # the captured cupy.cuda.Graph (cuda_graph mode)
    segments: Any = None  # with regions: the captured segments between them (cupy_regions)
    inputs: list = field(default_factory=list)  # captured input buffers
    outputs: dict = field(default_factory=dict)  # captured output buffers, by Value
    pool: Any = None  # the memory pool that served allocations during capture
    capture_stream: Any = None
    failed: str = ""  # why capture failed (then calls run eagerly)
    captures: int = 0  # how many times a graph was captured (once per signature)
    replays: int = 0
    eager_events: list = field(default_factory=list)  # one per record site, eager calls
    capture_events: list = field(default_factory=list)  # one per record site, the capture
    events: list = field(default_factory=list)  # which of the two this call records into
    cursor: int = 0  # the next record site of this call
    side: list = field(default_factory=list)  # the Executable's side streams
    streams: list = field(default_factory=list)  # [caller, *side]; slot 0 set per call
    stuck: list = field(default_factory=list)  # side streams a failed capture left unusable


class CupyBackend(Backend):
    name = "cupy"
    concurrent_streams = True

    def __init__(self, module: Any = None) -> None:
        """``module`` stands in for ``cupy`` (tests drive the stream logic without a GPU)."""
        if module is None:
            info = cupy_status()
            if info.name != "cupy":
                raise UnsupportedError(f"backend 'cupy' is not usable here: {info.reason}")
            import cupy as module

            from .cupy_kernels import register_cupy_kernels

            register_cupy_kernels()
        self.xp = module
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._call = threading.local()  # .st: the _CallState of the call running on this thread
        self._parked: list[tuple[Any, tuple]] = []  # (last done event, what it keeps alive)

    def alloc(self, nbytes: int) -> Any:
        self.release_finished()  # a new arena: first give back those no call still uses
        return super().alloc(nbytes)

    def asarray(self, host: Any) -> Any:
        # C order: a reshape in the launch loop must be a view, never a copy (see execute)
        return self.xp.asarray(np.asarray(host, order="C"))  # (np.ascontiguousarray makes 0-d 1-d)

    # -- streams --------------------------------------------------------------------------
    def make_streams(self, n: int) -> list:
        """Slot 0 is filled with the caller's current stream at each call."""
        return [None] + [self.xp.cuda.Stream(non_blocking=True) for _ in range(n - 1)]

    def record(self, stream: Any) -> Any:
        """Record this call's next record site's event on ``stream``."""
        st = getattr(self._call, "st", None)
        if st is None:  # outside execute (no Executable to keep events for)
            return stream.record(self._new_event())
        i = st.cursor
        st.cursor = i + 1
        if i == len(st.events):  # first time this site is reached
            st.events.append(self._new_event())
        return stream.record(st.events[i])

    def _new_event(self) -> Any:
        # events only order streams here: without timing, record/wait are cheapest (CUDA docs)
        return self.xp.cuda.Event(disable_timing=True)

    def wait(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)

    def run_on(self, stream: Any, fn: Callable[[], None]) -> None:
        with stream:
            fn()

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    def state(self, executable: Any) -> _CallState:
        st = self._states.get(executable)
        if st is None:
            st = self._states[executable] = _CallState()
            st.side = list(executable.streams[1:])
            st.streams = [None, *st.side]
            # when the Executable goes, park what its last call may still be using
            keep = (executable.arena, list(executable.fixed.values()), executable.streams, st)
            weakref.finalize(executable, self._park, st, keep)
        return st

    def _park(self, st: _CallState, keep: tuple) -> None:
        # runs when an Executable is collected, possibly inside someone else's call: no CUDA
        # call here, only bookkeeping (freeing happens in release_finished)
        self._parked.append((st.done, keep))

    def release_finished(self) -> int:
        """Release the memory of dropped Executables whose last call has finished on the
        device; returns how many are still waiting."""
        if self._parked:
            # swap, then filter: a finalizer may append to the new list meanwhile
            parked, self._parked = self._parked, []
            self._parked.extend(item for item in parked if not _finished(item[0]))
        return len(self._parked)

    # -- one call -------------------------------------------------------------------------
    def execute(self, executable: Any, env: dict) -> None:
        """Run every launch of ``executable`` for one call, filling ``env``."""
        caller = self.xp.cuda.get_current_stream()
        st = self._states.get(executable)
        if st is None:
            # first call of this signature: constants were uploaded at lowering on whatever
            # stream was current then, which non-blocking streams do not order after
            self.xp.cuda.Device().synchronize()
            st = self.state(executable)
        if self._parked:
            self.release_finished()
        if st.done is not None:
            caller.wait_event(st.done)
        outer = getattr(self._call, "st", None)  # a call made from inside a runner
        self._call.st = st
        st.events, st.cursor = st.eager_events, 0
        try:
            self._execute(executable, env, caller, st)
        finally:
            self._call.st = outer

    def _execute(self, executable: Any, env: dict, caller: Any, st: _CallState) -> None:
        # The launch loop reshapes values as views outside any stream context; a reshape of a
        # non-contiguous input would copy on the current stream, unordered with the side
        # streams that read it. Made contiguous here, on the caller's stream before the fork,
        # every such reshape is a view (constants are uploaded C-ordered).
        for v in executable.graph.inputs:
            if not c_contiguous(env[v]):
                env[v] = self.xp.ascontiguousarray(env[v])
        if executable.cuda_graph:
            self._graph_call(executable, env, caller, st)
        else:
            self.launch(executable, env, caller, st)
        st.done = self.record(caller)

    def launch(self, executable: Any, env: dict, origin: Any, st: _CallState) -> None:
        """The launch list with ``origin`` as stream 0: fork the side streams off ``origin``
        first, join them back into it at the end."""
        side = st.side
        if side:
            fork = self.record(origin)
            for s in side:
                s.wait_event(fork)
        streams = st.streams
        streams[0] = origin
        try:
            executable.launch_all(env, streams)
        finally:
            streams[0] = None  # hold no stream between calls
        for s in side:
            origin.wait_event(self.record(s))

    def _graph_call(self, ex: Any, env: dict, caller: Any, st: _CallState) -> None:
        if st.failed:  # capture was refused once (e.g. an op that syncs): stay eager
            self.launch(ex, env, caller, st)
            return
        inputs = ex.graph.inputs
        fresh = {v: env[v] for v in ex.fresh}  # what the caller gets: filled from the graph's
        if st.graph is None and st.segments is None:
            st.inputs = [self.empty(v.type) for v in inputs]
            st.outputs = {v: self.empty(v.type) for v in ex.fresh}
        for buf, v in zip(st.inputs, inputs):
            self.xp.copyto(buf, env[v])  # on the caller's (current) stream
        env.update(zip(inputs, st.inputs))
        env.update(st.outputs)
        if st.graph is None and st.segments is None:
            self.launch(ex, env, caller, st)  # warm-up: loads kernels; gives this call's results
            caller.synchronize()
            eager_sites = st.cursor
            if has_regions(ex):  # regions run host-driven between captured segments
                st.segments = capture_segments(self, ex, dict(env), st)
            else:
                self._capture(ex, dict(env), st)  # records into the capture's own events
            st.events, st.cursor = st.eager_events, eager_sites  # "done": the next eager site
        elif st.segments is not None:
            replay_segments(self, st.segments, env, caller)
            st.replays += 1
        else:
            st.graph.launch(stream=caller)
            st.replays += 1
        for v, out in fresh.items():
            self.xp.copyto(out, st.outputs[v])  # ordered after the replay on the caller's stream
            env[v] = out

    def _capture(self, ex: Any, env: dict, st: _CallState) -> None:
        cuda = self.xp.cuda
        st.pool = cuda.MemoryPool()
        st.capture_stream = cuda.Stream(non_blocking=True)
        st.events, st.cursor = st.capture_events, 0
        # A collection mid-capture could run a destructor that frees device memory, which
        # invalidates the capture: collect now, and let no cycle collection run until it ends.
        gc_was_enabled = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            self._capture_launches(ex, env, st)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _capture_launches(self, ex: Any, env: dict, st: _CallState) -> None:
        cuda = self.xp.cuda
        cap = st.capture_stream
        with cuda.using_allocator(st.pool.malloc), cap:
            cap.begin_capture()
            try:
                self.launch(ex, env, cap, st)
            except Exception as e:
                # leave every stream usable: side streams that joined the capture (they waited
                # on the fork) must be joined back before it can end, or they stay in it
                for s in st.side:
                    try:
                        if s.is_capturing():
                            cap.wait_event(self.record(s))
                    except Exception:
                        pass
                try:
                    cap.end_capture()
                except Exception:
                    pass
                self._capture_failed(ex, st, e)
                return
            try:  # ends the capture even when it fails (e.g. it was invalidated)
                st.graph = cap.end_capture()
            except Exception as e:
                self._capture_failed(ex, st, e)
                return
        st.captures += 1

    def _capture_failed(self, ex: Any, st: _CallState, e: Exception) -> None:
        # A side stream the ended capture still holds (an invalidated capture can leave its
        # joined streams so) would fail every later launch: it is replaced by a fresh one.
        for i, s in enumerate(st.side):
            try:
                stuck = s.is_capturing()
            except Exception:  # CuPy raises for a stream whose capture was invalidated
                stuck = True
            if stuck:
                st.stuck.append(s)  # kept, not destroyed: destroying it could fail too
                st.side[i] = st.streams[i + 1] = ex.streams[i + 1] = self.xp.cuda.Stream(
                    non_blocking=True
                )
        st.failed = f"{type(e).__name__}: {e}"
        warnings.warn(
            f"gpugraph: CUDA graph capture failed ({st.failed}); this signature runs "
            "without a graph",
            RuntimeWarning,
            stacklevel=7,  # Executable._run, as before the capture was split up
        )


def c_contiguous(a: Any) -> bool:
    """``a.flags.c_contiguous`` without making a flags object on every call (CuPy keeps the
    bit as ``_c_contiguous``; NumPy arrays, in the tests' stand-in, have only flags)."""
    try:
        return a._c_contiguous
    except AttributeError:
        return a.flags.c_contiguous


def _finished(event: Any) -> bool:
    """Whether the work before ``event``'s last record has completed (no event: nothing ran)."""
    return event is None or event.done


register_backend("cupy", CupyBackend)
