"""NVRTC compilation and host emulation of CUDA kernels (DESIGN.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import check_nvrtc, requires_emulator, requires_nvrtc

from gpugraph.errors import GpuGraphError
from gpugraph.testing.emulator import (
    KernelRuntimeError,
    emulate_kernel,
    load_kernel,
    load_kernels,
)
from gpugraph.testing.nvrtc import (
    KernelCompileError,
    compile_ptx,
    nvrtc_available,
    nvrtc_unavailable_reason,
)

SAXPY = r"""
extern "C" __global__ void saxpy(const float* __restrict__ x, float* __restrict__ y,
                                 float a, long long n) {
  // Grid-stride loop with 64-bit indices: correct for any launch size and for n > 2^31.
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    y[i] = a * x[i] + y[i];
  }
}
"""

# out[r, c] = tanh(a[r, c]) * exp(b[c]) + sqrt(|a[r, c]|), with b broadcast along rows.
BROADCAST_TEMPLATE = r"""
__device__ __forceinline__ double combine(double a, double b) {
  return tanh(a) * exp(b) + sqrt(fabs(a));
}
extern "C" __global__ void bcast(const double* __restrict__ a, const double* __restrict__ b,
                                 double* __restrict__ out, long long rows, long long cols) {
  const long long n = rows * cols;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x) {
    out[i] = combine(a[i], b[B_INDEX]);
  }
}
"""
BROADCAST = BROADCAST_TEMPLATE.replace("B_INDEX", "i % cols")
# Planted bug: b indexed by row instead of column (in bounds, since the test uses rows <= cols).
BROADCAST_WRONG = BROADCAST_TEMPLATE.replace("B_INDEX", "i / cols")

# (grid, block); all but the last launch far fewer threads than elements.
LAUNCHES = [(1, 1), (1, 32), (3, 64), (7, 33), (64, 256)]
# Kernels indexing with .x only run y/z threads as duplicates; harmless when writes are idempotent.
LAUNCHES_MULTI_DIM = [(2, (8, 4)), ((2, 2), (16, 2, 2))]


def bcast_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.tanh(a) * np.exp(b)[None, :] + np.sqrt(np.abs(a))


def run_bcast(source: str, a: np.ndarray, b: np.ndarray, grid, block) -> np.ndarray:
    out = np.full_like(a, np.nan)
    rows, cols = a.shape
    emulate_kernel(source, "bcast", grid, block, [a, b, out, np.int64(rows), np.int64(cols)])
    return out


# --- NVRTC ------------------------------------------------------------------------------------


@pytest.mark.nvrtc
@requires_nvrtc
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
def test_compile_ptx_elementwise(arch: str) -> None:
    ptx = compile_ptx(SAXPY, name="saxpy.cu", arch=arch)
    assert ".entry saxpy" in ptx
    assert f".target sm_{arch.removeprefix('compute_')}" in ptx


@pytest.mark.nvrtc
@requires_nvrtc
def test_compile_error_carries_nvrtc_log_and_source() -> None:
    bad = 'extern "C" __global__ void broken(float* x) {\n  x[0] = 1.0f\n}\n'
    with pytest.raises(KernelCompileError) as info:
        compile_ptx(bad, name="broken.cu", arch="compute_80")
    message = str(info.value)
    assert "broken.cu(3): error" in message  # NVRTC's log, with its file(line) location
    assert 'expected a ";"' in message
    assert "2 |   x[0] = 1.0f" in message  # the numbered source
    assert isinstance(info.value, GpuGraphError)


# --- emulator: numbers against NumPy ------------------------------------------------------------


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("grid, block", LAUNCHES)
def test_saxpy_float32(grid, block) -> None:
    rng = np.random.default_rng(0)
    n = 1000
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    expected = np.float32(2.5) * x + y
    emulate_kernel(SAXPY, "saxpy", grid, block, [x, y, np.float32(2.5), np.int64(n)])
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("grid, block", LAUNCHES + LAUNCHES_MULTI_DIM)
def test_broadcast_float64(grid, block) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((7, 33))
    b = rng.standard_normal(33)
    out = run_bcast(BROADCAST, a, b, grid, block)
    np.testing.assert_allclose(out, bcast_reference(a, b), rtol=1e-12, atol=1e-12)


@pytest.mark.emulator
@requires_emulator
def test_planted_broadcast_bug_is_detected() -> None:
    rng = np.random.default_rng(2)
    a = rng.standard_normal((7, 33))
    b = rng.standard_normal(33)
    out = run_bcast(BROADCAST_WRONG, a, b, 3, 64)
    assert np.isfinite(out).all()  # the kernel ran over every element ...
    with pytest.raises(AssertionError):  # ... but its numbers are wrong, and the check says so
        np.testing.assert_allclose(out, bcast_reference(a, b), rtol=1e-12, atol=1e-12)


@pytest.mark.emulator
@requires_emulator
def test_int_bool_buffers_and_scalars_by_value() -> None:
    source = r"""
    extern "C" __global__ void mixed(const int* a, const long long* b, const bool* mask,
                                     long long* out, bool* flag, int k, long long offset,
                                     double scale, bool negate, int n) {
      int i = blockIdx.x * blockDim.x + threadIdx.x;
      if (i >= n) return;
      long long v = mask[i] ? (long long)a[i] * k + b[i] : offset;
      v = (long long)(v * scale);
      out[i] = negate ? -v : v;
      flag[i] = out[i] > 0;
    }
    """
    rng = np.random.default_rng(3)
    n = 100
    a = rng.integers(-1000, 1000, n, dtype=np.int32)
    b = rng.integers(-(2**40), 2**40, n, dtype=np.int64)
    mask = rng.random(n) < 0.5
    out = np.zeros(n, np.int64)
    flag = np.zeros(n, np.bool_)
    scalars = [np.int32(3), np.int64(2**35), np.float64(2.0), np.bool_(True), np.int32(n)]
    emulate_kernel(source, "mixed", 4, 32, [a, b, mask, out, flag, *scalars])
    expected = -(np.where(mask, a.astype(np.int64) * 3 + b, 2**35) * 2)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(flag, expected > 0)


@pytest.mark.emulator
@requires_emulator
def test_3d_launch_covers_every_thread_once() -> None:
    source = r"""
    extern "C" __global__ void count(int* hits) {
      long long bid = blockIdx.x + (long long)gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
      long long tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
      atomicAdd(&hits[bid * blockDim.x * blockDim.y * blockDim.z + tid], 1);
    }
    """
    hits = np.zeros(2 * 3 * 2 * 4 * 2 * 3, np.int32)
    emulate_kernel(source, "count", (2, 3, 2), (4, 2, 3), [hits])
    np.testing.assert_array_equal(hits, 1)


@pytest.mark.emulator
@requires_emulator
def test_same_buffer_twice_stays_aliased() -> None:
    source = r"""
    extern "C" __global__ void twice(const float* x, float* y, int n) {
      for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] = 2.0f * x[i];
    }
    """
    x = np.arange(10, dtype=np.float32)
    emulate_kernel(source, "twice", 1, 4, [x, x, np.int32(10)])
    np.testing.assert_array_equal(x, 2 * np.arange(10, dtype=np.float32))


# --- emulator: it refuses what it cannot model and reports kernel faults -----------------------


@pytest.mark.emulator
@requires_emulator
def test_out_of_bounds_write_is_reported() -> None:
    source = r"""
    extern "C" __global__ void fill(float* x, int n) {
      int i = blockIdx.x * blockDim.x + threadIdx.x;  // missing "if (i < n)" guard
      x[i] = 1.0f;
    }
    """
    x = np.zeros(10, np.float32)
    with pytest.raises(KernelRuntimeError, match="out of bounds of arg 0"):
        emulate_kernel(source, "fill", 1, 16, [x, np.int32(10)])


@pytest.mark.emulator
@requires_emulator
def test_device_assert_becomes_error() -> None:
    source = r"""
    extern "C" __global__ void check(const int* x) { assert(x[threadIdx.x] >= 0); }
    """
    x = np.array([0, 1, -1, 3], np.int32)
    with pytest.raises(KernelRuntimeError, match=r"assertion failed.*threadIdx=2,0,0"):
        emulate_kernel(source, "check", 1, 4, [x])


# Cooperative execution: a block sum with warp shuffles and shared memory, and planted bugs.
BLOCK_SUM_TEMPLATE = r"""
extern "C" __global__ void NAME(const float* x, float* out, int cols) {
  __shared__ float part[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  float acc = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) acc += x[blockIdx.x * cols + c];
  for (int o = FIRST_OFFSET; o > 0; o >>= 1) acc += __shfl_down_sync(MASK, acc, o);
  if (lane == 0) part[PART_INDEX] = acc;
  SYNC;
  if (warp == 0) {
    acc = lane < warps ? part[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) out[blockIdx.x] = acc;
  }
}
"""
BLOCK_SUM_OK = dict(
    FIRST_OFFSET="16", MASK="0xffffffffu", PART_INDEX="warp", SYNC="__syncthreads()"
)
BLOCK_SUM_BUGS = {
    "no_sync": dict(BLOCK_SUM_OK, SYNC=""),
    "wrong_mask": dict(BLOCK_SUM_OK, MASK="0x0000ffffu"),
    "wrong_offset": dict(BLOCK_SUM_OK, FIRST_OFFSET="8"),
    "off_by_one": dict(BLOCK_SUM_OK, PART_INDEX="warp + 1"),
}


def _block_sum_kernels() -> dict:
    variants = {"ok": BLOCK_SUM_OK, **BLOCK_SUM_BUGS}
    sources = []
    for tag, subs in variants.items():
        src = BLOCK_SUM_TEMPLATE.replace("NAME", f"block_sum_{tag}")
        for key, value in subs.items():
            src = src.replace(key, value)
        sources.append((src, f"block_sum_{tag}"))
    kernels = load_kernels(sources)  # one compiler run for all variants
    return {tag: kernels[f"block_sum_{tag}"] for tag in variants}


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("block", [32, 64, 96, 1024])
def test_cooperative_block_sum_matches_numpy(block: int) -> None:
    kernel = _block_sum_kernels()["ok"]
    rng = np.random.default_rng(block)
    for cols in (0, 1, 31, 33, 300):
        x = rng.standard_normal((3, cols)).astype(np.float32)
        out = np.full(3, np.nan, np.float32)
        kernel(3, block, [x, out, np.int32(cols)])
        np.testing.assert_allclose(out, x.sum(axis=1), rtol=1e-5, atol=1e-5)


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize(
    "bug, error",
    [
        # warp 0 reads warp 1's partial before warp 1 has run
        ("no_sync", r"read of shared part\[1\], never written in this block"),
        ("wrong_mask", r"lane 16 is not in mask|reads lane 16, which is not in mask"),
        ("wrong_offset", None),  # in-bounds, race-free, wrong numbers: NumPy catches it
        ("off_by_one", r"read of shared part\[0\], never written|index 2 out of bounds"),
    ],
)
def test_cooperative_planted_bugs_are_caught(bug: str, error: str | None) -> None:
    kernel = _block_sum_kernels()[bug]
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    out = np.zeros(2, np.float32)
    if error is None:
        kernel(2, 64, [x, out, np.int32(64)])
        assert not np.allclose(out, x.sum(axis=1), rtol=1e-4)
    else:
        with pytest.raises(KernelRuntimeError, match=error):
            kernel(2, 64, [x, out, np.int32(64)])


COOP_MISC = r"""
extern "C" __global__ void war_race(float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = (float)threadIdx.x;
  __syncthreads();
  float v = s[(threadIdx.x + 1) % 64];  // read the neighbour's word ...
  s[threadIdx.x] = v * 2.0f;            // ... which the neighbour overwrites: no barrier between
  out[threadIdx.x] = v;
}
// Serial thread order makes this right (thread t-1 ran first): only race tracking catches it.
extern "C" __global__ void raw_race(float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = (float)threadIdx.x;
  out[threadIdx.x] = threadIdx.x > 0 ? s[threadIdx.x - 1] : 0.0f;
}
extern "C" __global__ void divergent_sync(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();  // a different barrier: undefined behaviour on a GPU
  }
  out[threadIdx.x] = 1.0f;
}
extern "C" __global__ void shuffle_all(int* out) {
  const int lane = threadIdx.x % 32;
  int v = lane * 10;
  out[threadIdx.x * 4 + 0] = __shfl_sync(0xffffffffu, v, 3);
  out[threadIdx.x * 4 + 1] = __shfl_up_sync(0xffffffffu, v, 2);
  out[threadIdx.x * 4 + 2] = __shfl_down_sync(0xffffffffu, v, 5, 8);
  out[threadIdx.x * 4 + 3] = __shfl_xor_sync(0xffffffffu, v, 1);
}
extern "C" __global__ void early_exit_shuffle(int* out) {
  if (threadIdx.x == 7) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}
"""


def _coop_misc(name: str):
    # one source per kernel (load_kernels joins its sources into one library), one compiler run
    chunks = COOP_MISC.split('extern "C"')[1:]
    sources = [('extern "C"' + c, c.split("void ")[1].split("(")[0]) for c in chunks]
    return load_kernels(sources)[name]


@pytest.mark.emulator
@requires_emulator
def test_cooperative_write_after_read_race_is_caught() -> None:
    with pytest.raises(KernelRuntimeError, match=r"race on shared s\[\d+\]: read by thread"):
        _coop_misc("war_race")(1, 64, [np.zeros(64, np.float32)])


@pytest.mark.emulator
@requires_emulator
def test_cooperative_read_after_write_race_is_caught_even_when_serial_order_is_right() -> None:
    with pytest.raises(
        KernelRuntimeError,
        match=r"race on shared s\[0\]: written by thread 0 "
        r"and read by thread 1 with no __syncthreads between",
    ):
        _coop_misc("raw_race")(1, 64, [np.zeros(64, np.float32)])


@pytest.mark.emulator
@requires_emulator
def test_cooperative_divergent_syncthreads_is_caught() -> None:
    with pytest.raises(KernelRuntimeError, match="different __syncthreads"):
        _coop_misc("divergent_sync")(1, 32, [np.zeros(32, np.float32)])


@pytest.mark.emulator
@requires_emulator
def test_cooperative_shuffle_semantics() -> None:
    out = np.zeros((64, 4), np.int32)
    _coop_misc("shuffle_all")(1, 64, [out])
    lane = np.arange(64) % 32
    np.testing.assert_array_equal(out[:, 0], np.full(64, 30))
    np.testing.assert_array_equal(out[:, 1], np.where(lane >= 2, lane - 2, lane) * 10)
    seg_in = lane % 8
    np.testing.assert_array_equal(out[:, 2], np.where(seg_in + 5 < 8, lane + 5, lane) * 10)
    np.testing.assert_array_equal(out[:, 3], (lane ^ 1) * 10)


@pytest.mark.emulator
@requires_emulator
def test_cooperative_shuffle_with_exited_lane_is_caught() -> None:
    with pytest.raises(KernelRuntimeError, match="lane 7 of mask .* has exited"):
        _coop_misc("early_exit_shuffle")(1, 32, [np.zeros(32, np.int32)])


@pytest.mark.emulator
@requires_emulator
def test_cooperative_shuffle_mask_beyond_block_is_caught() -> None:
    # 48 threads: warp 1 has lanes 0..15 only, so a full mask names lanes it does not have
    with pytest.raises(KernelRuntimeError, match="names lane 16, which this block does not have"):
        _block_sum_kernels()["ok"](
            1, 48, [np.zeros((1, 4), np.float32), np.zeros(1, np.float32), np.int32(4)]
        )


@pytest.mark.emulator
@requires_emulator
def test_host_compile_error_points_at_kernel_line() -> None:
    source = 'extern "C" __global__ void k(float* x) {\n  x[0] = 1.0f\n}\n'
    with pytest.raises(KernelCompileError, match=r"kernel\.cu:2:\d+: error"):
        load_kernel(source, "k")


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize(
    "args, match",
    [
        ([np.zeros(4, np.float64), np.int64(4)], "declared f32\\*.*float64"),
        ([np.zeros(4, np.float32), np.int32(4)], "declared i64.*int32"),
        ([np.zeros(4, np.float32), 4], "numpy scalar"),
        ([np.zeros(4, np.float32)], "takes 2 args"),
    ],
)
def test_argument_type_mismatch_is_rejected(args, match) -> None:
    source = r"""
    extern "C" __global__ void fill(float* y, long long n) {
      if (threadIdx.x < n) y[threadIdx.x] = 1.0f;
    }
    """
    with pytest.raises(TypeError, match=match):
        emulate_kernel(source, "fill", 1, 4, args)


def test_nvrtc_unavailable_is_reported_not_raised(monkeypatch) -> None:
    import sys

    from gpugraph.testing import nvrtc

    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs.nvrtc", None)  # import now fails
    nvrtc._load_nvrtc.cache_clear()
    try:
        assert not nvrtc_available()
        assert "cupy_backends.cuda.libs.nvrtc" in nvrtc_unavailable_reason()
        with pytest.raises(GpuGraphError, match="NVRTC is not available"):
            compile_ptx(SAXPY)
    finally:
        monkeypatch.undo()
        nvrtc._load_nvrtc.cache_clear()


@pytest.mark.emulator
@requires_emulator
def test_cooperative_unsupported_shared_forms_are_refused() -> None:
    source = r"""
    extern "C" __global__ void k(float* x) {
      __shared__ float tile[4][32];
      tile[0][threadIdx.x] = x[threadIdx.x];
    }
    """
    with pytest.raises(GpuGraphError, match=r"kernel\.cu:3: the emulator supports only 1-D"):
        load_kernel(source, "k")


# Dynamic shared memory (extern __shared__, sized at launch) and __syncwarp.
WARP_EXCHANGE = r"""
extern "C" __global__ void NAME(const float* x, float* out) {
  extern __shared__ float buf[];
  extern __shared__ double as_double[];  // aliases buf, as every extern array does
  const unsigned lane = threadIdx.x % 32, base = threadIdx.x - lane;
  float v = x[threadIdx.x];
  for (int o = 16; o > 0; o >>= 1) {
    buf[threadIdx.x] = v;
    SYNC1;
    v += buf[base + (lane ^ o)];
    SYNC2;
  }
  out[threadIdx.x] = v;
  if (threadIdx.x == 0) as_double[0] = 1.5;
}
"""
WARP_EXCHANGE_VARIANTS = {
    "ok": {"SYNC1": "__syncwarp()", "SYNC2": "__syncwarp()"},
    "no_first_sync": {"SYNC1": "", "SYNC2": "__syncwarp()"},  # read before the lane wrote
    "no_second_sync": {"SYNC1": "__syncwarp()", "SYNC2": ""},  # overwritten before read
    "half_mask": {"SYNC1": "__syncwarp(0x0000ffffu)", "SYNC2": "__syncwarp()"},
}


def _warp_exchange(tag: str):
    sources = []
    for name, subs in WARP_EXCHANGE_VARIANTS.items():
        src = WARP_EXCHANGE.replace("NAME", f"warp_exchange_{name}")
        for key, value in subs.items():
            src = src.replace(key, value)
        sources.append((src, f"warp_exchange_{name}"))
    return load_kernels(sources)[f"warp_exchange_{tag}"]


@pytest.mark.emulator
@requires_emulator
def test_syncwarp_exchange_through_dynamic_shared_memory() -> None:
    x = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    out = np.zeros(64, np.float32)
    _warp_exchange("ok")(1, 64, [x, out], shared_mem=64 * 4)
    want = np.repeat(x.reshape(2, 32).sum(axis=1), 32)
    np.testing.assert_allclose(out, want, rtol=1e-5)


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize(
    "tag, error",
    [
        # lane 0 reads lane 16's word first (never written), or after it without an order
        ("no_first_sync", r"shared buf\[16\], never written|buf\[\d+\]: written by thread"),
        # lane 0 overwrites its word (next round) before lane 16 has read it
        ("no_second_sync", r"race on shared buf\[0\]: written by thread 0 and read by thread 16"),
        # lanes 16..31 call __syncwarp with a mask that leaves them out: undefined on a GPU
        ("half_mask", r"__syncwarp at line 9: calling lane 16 is not in mask 65535"),
    ],
)
def test_missing_syncwarp_is_caught(tag: str, error: str) -> None:
    x = np.ones(32, np.float32)
    with pytest.raises(KernelRuntimeError, match=error):
        _warp_exchange(tag)(1, 32, [x, np.zeros(32, np.float32)], shared_mem=32 * 4)


@pytest.mark.emulator
@requires_emulator
def test_dynamic_shared_memory_too_small_is_out_of_bounds() -> None:
    x = np.ones(64, np.float32)
    with pytest.raises(KernelRuntimeError, match=r"extern shared buf index 48 out of bounds "):
        _warp_exchange("ok")(1, 64, [x, np.zeros(64, np.float32)], shared_mem=48 * 4)
    with pytest.raises(KernelRuntimeError, match=r"index 0 out of bounds \[0, 0\)"):
        _warp_exchange("ok")(1, 64, [x, np.zeros(64, np.float32)])  # forgot shared_mem
    with pytest.raises(ValueError, match="shared_mem"):
        _warp_exchange("ok")(1, 64, [x, np.zeros(64, np.float32)], shared_mem=1 << 20)


SYNCWARP_MISC = r"""
extern "C" __global__ void syncwarp_exited_lane(float* out) {
  if (threadIdx.x == 3) return;  // exited lanes count as arrived at __syncwarp
  __syncwarp();
  out[threadIdx.x] = 1.0f;
}
extern "C" __global__ void syncwarp_vs_shuffle(float* out) {
  if (threadIdx.x < 16) __syncwarp();
  else out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
"""


@pytest.mark.emulator
@requires_emulator
def test_syncwarp_waits_for_live_lanes_only() -> None:
    chunks = SYNCWARP_MISC.split('extern "C"')[1:]
    sources = [('extern "C"' + c, c.split("void ")[1].split("(")[0]) for c in chunks]
    kernels = load_kernels(sources)
    out = np.zeros(32, np.float32)
    kernels["syncwarp_exited_lane"](1, 32, [out])
    assert out[3] == 0 and out.sum() == 31
    with pytest.raises(KernelRuntimeError, match="can never complete: lane .* is at another"):
        kernels["syncwarp_vs_shuffle"](1, 32, [np.zeros(32, np.float32)])


# float16: the host __half shim rounds like the device (and NumPy): every bit pattern to float
# and back, and float32 values (ties, overflow edge, subnormals) to half.
HALF_ROUND_TRIP = r"""
#include <cuda_fp16.h>
extern "C" __global__ void half_io(const __half* h, float* f, const float* g, __half* gh, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    f[i] = __half2float(h[i]);
    gh[i] = __float2half(g[i]);
  }
}
"""


@pytest.mark.emulator
@requires_emulator
def test_half_shim_converts_like_numpy() -> None:
    bits = np.arange(1 << 16, dtype=np.uint16)
    h = bits.view(np.float16)
    rng = np.random.default_rng(0)
    with np.errstate(invalid="ignore"):  # inf + -inf among the ties
        g = np.concatenate(
            [
                rng.standard_normal(20000).astype(np.float32) * np.float32(1000),
                rng.standard_normal(20000).astype(np.float32)
                * np.float32(1e-5),  # subnormal halves
                h.astype(np.float32),  # exact
                (h[:-1].astype(np.float32) + h[1:].astype(np.float32)) / 2,  # ties (and NaN/inf)
                np.array(
                    [65504, 65519.99, 65520, -65520, 1e-8, 2.0**-25, 3 * 2.0**-26], np.float32
                ),
            ]
        ).astype(np.float32)
    g = np.resize(g, bits.size)
    f = np.zeros(bits.size, np.float32)
    gh = np.zeros(bits.size, np.float16)
    emulate_kernel(HALF_ROUND_TRIP, "half_io", 64, 128, [h, f, g, gh, np.int32(bits.size)])
    with np.errstate(invalid="ignore", over="ignore"):
        want_f, want_gh = h.astype(np.float32), g.astype(np.float16)
    np.testing.assert_array_equal(
        f.view(np.uint32)[~np.isnan(f)], want_f.view(np.uint32)[~np.isnan(f)]
    )
    assert np.array_equal(np.isnan(f), np.isnan(want_f))
    nan = np.isnan(want_gh)
    assert np.array_equal(np.isnan(gh), nan)
    np.testing.assert_array_equal(gh.view(np.uint16)[~nan], want_gh.view(np.uint16)[~nan])


@requires_nvrtc
def test_half_kernel_compiles_under_nvrtc() -> None:
    check_nvrtc(HALF_ROUND_TRIP, "half_io.cu")


SYNCWARP_PAIRS = r"""
extern "C" __global__ void NAME(float* out) {
  __shared__ float s[32];
  const unsigned lane = threadIdx.x % 32;
  s[lane] = (float)lane;
  __syncwarp(3u << (lane & ~1u));  // lanes 2i and 2i+1 only
  out[lane] = s[lane ^ PARTNER];
}
"""


@pytest.mark.emulator
@requires_emulator
def test_partial_syncwarp_orders_only_the_lanes_it_names() -> None:
    sources = [
        (SYNCWARP_PAIRS.replace("NAME", f"pairs_{p}").replace("PARTNER", str(p)), f"pairs_{p}")
        for p in (1, 2)
    ]
    kernels = load_kernels(sources)
    out = np.zeros(32, np.float32)
    kernels["pairs_1"](1, 32, [out])  # reads its pair's word: ordered by the pair's __syncwarp
    np.testing.assert_array_equal(out, np.arange(32) ^ 1)
    # lane 0 reads lane 2's word: no completed __syncwarp names both lanes
    with pytest.raises(
        KernelRuntimeError, match=r"race on shared s\[2\]: written by thread 2 and read by thread 0"
    ):
        kernels["pairs_2"](1, 32, [out])


HALF_ARITH = r"""
#include <cuda_fp16.h>
extern "C" __global__ void half_arith(const __half* a, const __half* b, __half* out, int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    __half s = a[i];
    s += b[i];
    out[4 * i] = s;
    out[4 * i + 1] = a[i] - b[i];
    out[4 * i + 2] = a[i] * b[i];
    out[4 * i + 3] = a[i] < b[i] ? a[i] / b[i] : -(a[i] / b[i]);
  }
}
"""


@pytest.mark.emulator
@requires_emulator
def test_half_arithmetic_rounds_like_the_device() -> None:
    """__half op __half rounds to half each time, as on the device (and as NumPy float16)."""
    rng = np.random.default_rng(3)
    edges = np.array([0, -0.0, 65504, -65504, 6e-8, np.inf, -np.inf, np.nan], np.float16)
    a = np.concatenate([rng.standard_normal(500).astype(np.float16) * 300, edges])
    b = np.concatenate([rng.standard_normal(500).astype(np.float16), edges[::-1]])
    out = np.zeros((a.size, 4), np.float16)
    check_nvrtc(HALF_ARITH, "half_arith.cu")
    emulate_kernel(HALF_ARITH, "half_arith", 1, 64, [a, b, out, np.int32(a.size)])
    with np.errstate(all="ignore"):
        q = a / b
        want = np.stack([a + b, a - b, a * b, np.where(a < b, q, -q)], axis=1)
    np.testing.assert_array_equal(out, want)  # NaN where NaN, bits otherwise (+-0 equal)


@requires_nvrtc
def test_missing_cuda_headers_are_named(monkeypatch) -> None:
    from gpugraph.testing import nvrtc

    monkeypatch.setattr(nvrtc, "cuda_include_dirs", lambda: ())
    source = HALF_ARITH.replace("half_arith", "half_arith_no_headers")
    with pytest.raises(KernelCompileError, match="no CUDA include folder with cuda_fp16.h"):
        compile_ptx(source, "half.cu", "compute_80")


SHARED_SCALAR = r"""
extern "C" __global__ void NAME(const float* x, float* out) {
  __shared__ float total;
  __shared__ unsigned int count;
  if (threadIdx.x == 0) { total = 0.0f; count = 0u; }
  SYNC;
  if (threadIdx.x == 0) for (int i = 0; i < blockDim.x; ++i) { total += x[i]; count += 1u; }
  __syncthreads();
  out[threadIdx.x] = total / (float)count;
}
"""


@pytest.mark.emulator
@requires_emulator
def test_shared_scalars_are_checked_like_arrays() -> None:
    sources = [
        (SHARED_SCALAR.replace("NAME", f"scalar_{tag}").replace("SYNC", sync), f"scalar_{tag}")
        for tag, sync in (("ok", "__syncthreads()"), ("nosync", "(void)0"))
    ]
    kernels = load_kernels(sources)
    x = np.arange(64, dtype=np.float32)
    out = np.zeros(64, np.float32)
    kernels["scalar_ok"](1, 64, [x, out])
    np.testing.assert_array_equal(out, np.full(64, x.mean()))
    # the first barrier is not needed (only thread 0 touches the scalars before the second):
    # no report, as none is due
    kernels["scalar_nosync"](1, 64, [x, out])
    racy = SHARED_SCALAR.replace("NAME", "scalar_racy").replace("SYNC", "(void)0")
    racy = racy.replace("  __syncthreads();\n  out[", "  out[")  # readers race the writer
    with pytest.raises(KernelRuntimeError, match=r"race on shared total\[0\]|total\[0\], never"):
        emulate_kernel(racy, "scalar_racy", 1, 64, [x, out])
