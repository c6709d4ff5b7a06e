"""Every GPU path of gpugraph once, in under two minutes: one PASS/FAIL line per check.

    python bench/gpu_smoke.py [--size-log2 26] [--json PATH]

Checks (each against the NumPy backend, or against CuPy itself):

  fused_vector, fused_scalar   fused kernels with and without the 16-byte vector path
  misaligned_view              inputs 4 bytes past an allocation (the scalar loop must run)
  take_grad                    the hand-written scatter-add kernel, repeated indices
  matmul_arena                 forward and backward of a matmul chain (results into arena views)
  concat_kernel                a 20-input concatenate (kernels/concat.cu, two launches)
  streams_fwd_bwd[graph=off|on]   a branchy graph's gradient on 4 streams, 3 calls
  capture_replay               captured once, then replayed (counts), first results unchanged
  capture_fallback             a capture that fails (a sync inside) warns and runs eagerly
  callers_stream[graph=off|on] work queued on a caller's non-blocking stream is waited for
  host_us_per_call             host time per call and per launch, CUDA graph off and on
  chain8_bandwidth             chain8 at 2^26 float32 vs a plain device-to-device copy

Exit status: 0 every check passed; 1 some check failed (or a hang: faulthandler prints every
thread's stack and exits 1); 3 no usable GPU (nothing was run; the line says why).

A check that hangs past its budget dumps the stacks (``faulthandler.dump_traceback_later``).
Timing numbers are measurements, not pass criteria: a check passes when it runs and its
results match. Float32 kernels flush subnormals to zero (CuPy compiles with -ftz=true), so
comparisons use an absolute tolerance far above the smallest normal float32 (1.2e-38).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_timing import device_time  # noqa: E402

import gpugraph as gg  # noqa: E402
from gpugraph.testing.races import branchy_function  # noqa: E402

NO_GPU = 3  # exit status: no usable GPU, nothing ran
CHECK_BUDGET_S = 60  # a check still running after this is a hang: dump stacks and exit
RTOL, ATOL = 1e-5, 1e-6  # float32 against the NumPy backend (atol >> flushed subnormals)


class CheckFailed(AssertionError):
    pass


def close(got: Any, want: Any, what: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    got_host = gg.asnumpy(got)
    try:
        np.testing.assert_allclose(got_host, want, rtol=rtol, atol=atol)
    except AssertionError as e:
        raise CheckFailed(f"{what}: {str(e).strip().splitlines()[-1]}") from None


def ptr(a: Any) -> int:
    data = a.data
    return data.ptr if hasattr(data, "ptr") else a.__array_interface__["data"][0]


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def chain8(x: Any) -> Any:
    t = gg.tanh(x * 2.0 + 1.0) * x - 0.5
    t = gg.maximum(t, 0.0)
    return t * t + x


def gelu_block(x: Any, b: Any, r: Any) -> Any:
    return gg.gelu(x + b) + r


class Smoke:
    """The checks, against ``cp`` (cupy, or a stand-in) and gpugraph backend ``backend``."""

    def __init__(self, cp: Any, backend: str = "cupy", size_log2: int = 26) -> None:
        self.cp, self.backend, self.n = cp, backend, 2**size_log2
        self.results: list[dict] = []

    def jit(self, fn: Callable, **kw: Any) -> Any:
        return gg.jit(fn, backend=self.backend, **kw)

    def dev(self, a: np.ndarray) -> Any:
        return self.cp.asarray(a)

    # -- the checks (each returns a dict of numbers worth keeping, or None) ---------------------
    def fused(self, vectorize: bool) -> dict:
        args = [rand(33, 1024), rand(1024, seed=1), rand(33, 1024, seed=2)]
        want = gg.jit(gelu_block, backend="numpy", fuse=False)(*args)
        j = self.jit(gelu_block, vectorize=vectorize)
        close(j(*map(self.dev, args)), want, "gelu_block")
        x = rand(4096 + 3)  # a length the vector path must finish with a scalar tail
        close(self.jit(chain8, vectorize=vectorize)(self.dev(x)), chain8(x), "chain8 (odd n)")
        return {"fused_kernels": len(j.lower(*args).kernels)}

    def misaligned_view(self) -> dict:
        args = [rand(33, 1024), rand(1024, seed=1), rand(33, 1024, seed=2)]
        want = gg.jit(gelu_block, backend="numpy", fuse=False)(*args)
        views = []
        for a in args:
            flat = self.cp.zeros(a.size + 1, a.dtype)
            flat[1:] = self.dev(a).ravel()
            views.append(flat[1:].reshape(a.shape))
        offset = ptr(views[0]) % 16
        if offset != 4:
            raise CheckFailed(f"the view is {offset} bytes past a 16-byte boundary, not 4")
        close(self.jit(gelu_block)(*views), want, "misaligned gelu_block")
        return {"offset": offset}

    def take_grad(self) -> dict:
        def loss(x, idx):
            return gg.sum(gg.take(gg.tanh(x), idx, axis=0) ** 2)

        x, idx = rand(64, 33), np.array([5, 0, 5, 63, 5, 7, 7], np.int64)
        want = gg.jit(gg.grad(loss), backend="numpy")(x, idx)
        j = self.jit(gg.grad(loss))
        close(j(self.dev(x), self.dev(idx)), want, "take_grad", atol=1e-5)
        if not any(n.op == "take_grad" for n in j.lower(x, idx).graph.nodes):
            raise CheckFailed("the gradient has no take_grad node; the check needs one")
        return {}

    def matmul_arena(self) -> dict:
        def loss(a, b, c):
            h = gg.tanh(gg.matmul(a, b))  # the matmul result is an arena intermediate
            return gg.sum(gg.matmul(h, c) ** 2)

        args = [rand(64, 96), rand(96, 128, seed=1) * 0.1, rand(128, 32, seed=2) * 0.1]
        g = gg.grad(loss, argnums=(0, 1, 2))
        want = gg.jit(g, backend="numpy")(*args)
        got = self.jit(g)(*map(self.dev, args))
        for k, (a, w) in enumerate(zip(got, want)):
            close(a, w, f"d/d arg {k}", rtol=1e-4, atol=1e-5)
        compiled = self.jit(g).lower(*args)
        slots = compiled.memory.slots
        into_arena = [
            n
            for n in compiled.graph.nodes
            if n.op == "matmul" and slots[n.outputs[0]].kind == "arena"
        ]
        if not into_arena:
            raise CheckFailed("no matmul wrote into the arena; the check needs one that does")
        return {"arena_bytes": compiled.memory.arena_bytes, "matmuls_into_arena": len(into_arena)}

    def concat_kernel(self) -> dict:
        def fn(x):
            return gg.concatenate([x * float(k) for k in range(20)], axis=1)

        x = rand(8, 5)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a failed capture warns
            j = self.jit(fn, cuda_graph=True)
            for k in range(3):
                close(j(self.dev(x + k)), np.concatenate([(x + k) * i for i in range(20)], 1), "")
        st = self._state(j, x)
        return {"captures": st.captures, "replays": st.replays}

    def streams_fwd_bwd(self, cuda_graph: bool) -> dict:
        fn0 = branchy_function(4, 3)

        def loss(x):
            return gg.sum(fn0(x) ** 2)

        g = gg.grad(loss)
        ref = gg.jit(g, backend="numpy")
        j = self.jit(g, streams=4, cuda_graph=cuda_graph)
        x = rand(16, 16) * 0.5
        outs = []
        for k in range(3):
            outs.append(j(self.dev(x * (k + 1))))
            close(outs[-1], ref(x * (k + 1)), f"call {k}", rtol=1e-4, atol=1e-5)
        close(outs[0], ref(x), "first result after later calls", rtol=1e-4, atol=1e-5)
        streams = j.lower(x).schedule.num_streams
        if streams < 2:
            raise CheckFailed(f"the schedule used {streams} stream(s); the check needs several")
        return {"streams": streams}

    def capture_replay(self) -> dict:
        fn = branchy_function(4, 2)
        j = self.jit(fn, cuda_graph=True, streams=4)
        ref = gg.jit(fn, backend="numpy")
        x = rand(8, 8)
        first = j(self.dev(x))
        keep = gg.asnumpy(first).copy()
        st = self._state(j, x)
        if (st.captures, st.replays) != (1, 0) or st.failed:
            raise CheckFailed(f"after 1 call: {st.captures} captures, {st.replays} replays")
        for k in (2.0, -3.0, 0.5):
            close(j(self.dev(x * k)), ref(x * k), f"replay x*{k}")
        if (st.captures, st.replays) != (1, 3):
            raise CheckFailed(f"after 4 calls: {st.captures} captures, {st.replays} replays")
        close(first, keep, "the first call's result after the replays", rtol=0, atol=0)
        return {"captures": st.captures, "replays": st.replays}

    def capture_fallback(self) -> dict:
        """A launch that synchronizes its stream cannot be captured: the capture fails, a
        RuntimeWarning says so, and this and later calls run eagerly on usable streams."""
        fn = branchy_function(4, 2)
        j = self.jit(fn, cuda_graph=True, streams=4)
        ref = gg.jit(fn, backend="numpy")
        x = rand(8, 8)
        ex = j.lower(x).executable
        runs = [la for la in ex.launches if la.runner is not None]
        target = next((la for la in runs if la.stream != 0), runs[-1])  # a side stream if any
        real, cp = target.runner, self.cp

        def syncing(ins: list, outs: list) -> None:
            real(ins, outs)
            cp.cuda.get_current_stream().synchronize()  # refused while capturing

        target.runner = syncing
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            close(j(self.dev(x)), ref(x), "the call whose capture failed")
        st = self._state(j, x)
        if not st.failed or st.graph is not None:
            raise CheckFailed("the capture did not fail; the check needs it to")
        if not any("capture failed" in str(w.message) for w in caught):
            raise CheckFailed("no RuntimeWarning about the failed capture")
        for k in (2.0, -1.0):
            close(j(self.dev(x * k)), ref(x * k), f"eager call x*{k} after the failure")
        other = self.jit(branchy_function(3, 2), streams=4)  # the streams are usable again
        close(other(self.dev(x)), gg.jit(branchy_function(3, 2), backend="numpy")(x), "other")
        return {"why": st.failed[:200]}

    def callers_stream(self, cuda_graph: bool) -> dict:
        cp = self.cp
        fn = branchy_function(4, 2)
        j = self.jit(fn, cuda_graph=cuda_graph, streams=4)
        n = min(1 << 22, self.n)  # long enough that a missed wait reads unfinished values
        x = rand(n // 64, 64) * 0.1
        ref = gg.jit(fn, backend="numpy")(x + 20)
        j(self.dev(x))  # compile (and capture) first
        s = cp.cuda.Stream(non_blocking=True)
        with s:
            xd = self.dev(x)
            for _ in range(20):
                xd += 1.0  # queued on s; the executor must wait for all of it
            y = j(xd) + 0  # and its result used on s with no host synchronization
        s.synchronize()
        close(y, ref, "result read on the caller's stream", rtol=1e-4, atol=1e-4)
        return {}

    def host_us_per_call(self) -> dict:
        fn = branchy_function(8, 4)
        x = self.dev(rand(64, 64))
        out = {}
        for graph in (False, True):
            j = self.jit(fn, fuse=False, streams=4, cuda_graph=graph)
            launches = sum(1 for la in j.lower(x).executable.launches if la.runner is not None)
            t = device_time(self.cp, lambda j=j: j(x), calls=50, repeats=5)
            key = "graph" if graph else "eager"
            out[key] = {
                "host_us_per_call": t.host_us,
                "device_us_per_call": t.device_ms * 1e3,
                "launches": launches,
                "host_us_per_launch": t.host_us / launches,
            }
        return out

    def chain8_bandwidth(self) -> dict:
        cp, n = self.cp, self.n
        x = cp.asarray(rand(n // 4096, 4096) if n % 4096 == 0 else rand(n))
        y = cp.empty_like(x)
        copy = device_time(cp, lambda: cp.copyto(y, x), calls=20, repeats=5)
        j = self.jit(chain8)
        got = j(x)
        spot = slice(0, 1 << 16)
        close(got.ravel()[spot], chain8(gg.asnumpy(x.ravel()[spot])), "chain8 spot check")
        t = device_time(cp, lambda: j(x), calls=20, repeats=5)
        moved = 2 * x.nbytes  # read x, write the result: the least any implementation moves
        copy_gbs = 2 * x.nbytes / copy.device_ms / 1e6
        gbs = moved / t.device_ms / 1e6
        return {
            "elements": n,
            "copy_GB/s": copy_gbs,
            "chain8_GB/s": gbs,
            "of_copy_bw": gbs / copy_gbs,
            "chain8_device_ms": t.device_ms,
            "chain8_host_us_per_call": t.host_us,
            "host_bound": t.host_bound(),
        }

    def _state(self, j: Any, x: np.ndarray) -> Any:
        c = j.lower(x)
        return c.backend.state(c.executable)

    # -- running them ----------------------------------------------------------------------
    def checks(self) -> list[tuple[str, Callable[[], Any]]]:
        return [
            ("fused_vector", lambda: self.fused(True)),
            ("fused_scalar", lambda: self.fused(False)),
            ("misaligned_view", self.misaligned_view),
            ("take_grad", self.take_grad),
            ("matmul_arena", self.matmul_arena),
            ("concat_kernel", self.concat_kernel),
            ("streams_fwd_bwd[graph=off]", lambda: self.streams_fwd_bwd(False)),
            ("streams_fwd_bwd[graph=on]", lambda: self.streams_fwd_bwd(True)),
            ("capture_replay", self.capture_replay),
            ("capture_fallback", self.capture_fallback),
            ("callers_stream[graph=off]", lambda: self.callers_stream(False)),
            ("callers_stream[graph=on]", lambda: self.callers_stream(True)),
            ("host_us_per_call", self.host_us_per_call),
            ("chain8_bandwidth", self.chain8_bandwidth),
        ]

    def run(self, budget_s: float = CHECK_BUDGET_S, out: Any = sys.stdout) -> int:
        failed = 0
        for name, check in self.checks():
            faulthandler.dump_traceback_later(budget_s, exit=True)  # a hang: stacks, exit 1
            t0 = time.perf_counter()
            try:
                info = check()
                self.cp.cuda.Device().synchronize()  # an asynchronous fault shows up here
                status, detail = "PASS", info or {}
            except Exception as e:  # noqa: BLE001 - report every check, then the verdict
                failed += 1
                frame = traceback.extract_tb(e.__traceback__)[-1]
                where = f"{Path(frame.filename).name}:{frame.lineno}"
                status, detail = "FAIL", {"error": f"{type(e).__name__}: {e}", "at": where}
            finally:
                faulthandler.cancel_dump_traceback_later()
            seconds = time.perf_counter() - t0
            self.results.append({"check": name, "status": status, "s": seconds, **detail})
            print(f"{status} {name} ({seconds:.1f} s) {_compact(detail)}", file=out, flush=True)
        print(f"smoke: {len(self.results) - failed} passed, {failed} failed", file=out, flush=True)
        return 1 if failed else 0


def _compact(detail: dict) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}={fmt(x)}" for k, x in v.items()) + "}"
        return str(v)

    return " ".join(f"{k}={fmt(v)}" for k, v in detail.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-log2", type=int, default=26, help="chain8 bandwidth size (2^N)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    opts = ap.parse_args(argv)
    from gpugraph.backends.base import cupy_status

    status = cupy_status()
    if status.name != "cupy":
        print(f"gpu_smoke: no usable GPU ({status.reason}); nothing run", flush=True)
        return NO_GPU
    import cupy

    smoke = Smoke(cupy, "cupy", opts.size_log2)
    code = smoke.run()
    if opts.json:
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        meta = {
            "device": name.decode() if isinstance(name, bytes) else str(name),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cupy": cupy.__version__,
            "numpy": np.__version__,
            "gpugraph": gg.__version__,
        }
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps({"meta": meta, "checks": smoke.results}, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
