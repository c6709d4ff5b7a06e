"""NVRTC compilation and host emulation of CUDA kernels (DESIGN.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import requires_emulator, requires_nvrtc

from gpugraph.errors import GpuGraphError
from gpugraph.testing.emulator import (
    KernelRuntimeError,
    emulate_kernel,
    load_kernel,
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


@pytest.mark.emulator
@requires_emulator
def test_syncthreads_is_rejected() -> None:
    source = r"""
    extern "C" __global__ void k(float* x) { x[threadIdx.x] = 1.0f; __syncthreads(); }
    """
    with pytest.raises(KernelCompileError, match="does not support __syncthreads"):
        load_kernel(source, "k")


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
