"""The CuPy executor on a real GPU (the ``gpu`` tests skip without a CUDA device), and the CuPy
API it relies on (checked without a device). tests/test_cupy_backend.py drives the same
executor's stream logic through a stand-in for ``cupy``.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.backends.base import cupy_status
from gpugraph.backends.cupy_backend import CupyBackend
from gpugraph.testing.races import branchy_function

X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)

needs_gpu = pytest.mark.skipif(
    cupy_status().name != "cupy", reason=f"needs a CUDA device: {cupy_status().reason}"
)


def test_cupy_backend_refuses_without_a_device():
    if cupy_status().name == "cupy":
        pytest.skip("a CUDA device is present")
    with pytest.raises(gg.UnsupportedError, match="not usable"):
        CupyBackend()


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
@pytest.mark.parametrize("streams", [1, 4])
def test_gpu_executor_matches_numpy(cuda_graph, streams):
    import cupy

    fn = branchy_function(4, 3)
    j = gg.jit(fn, backend="cupy", streams=streams, cuda_graph=cuda_graph)
    ref = gg.jit(fn, backend="numpy")
    outs = []
    for k in range(3):
        x = X * (k + 1)
        out = j(cupy.asarray(x))
        outs.append(out)
        np.testing.assert_allclose(cupy.asnumpy(out), ref(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cupy.asnumpy(outs[0]), ref(X), rtol=1e-5, atol=1e-6)
    assert j.lower(X).schedule.num_streams <= streams


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_gpu_callers_stream_is_respected(cuda_graph):
    import cupy

    fn = branchy_function(4, 2)
    j = gg.jit(fn, backend="cupy", cuda_graph=cuda_graph)
    ref = gg.jit(fn, backend="numpy")(X)
    s = cupy.cuda.Stream(non_blocking=True)
    with s:
        x = cupy.asarray(X)
        for _ in range(3):
            x = x * 1.0  # queued work the executor must wait for
        out = j(x)
        y = out + 0  # used on the caller's stream with no host synchronization
    s.synchronize()
    np.testing.assert_allclose(cupy.asnumpy(y), ref, rtol=1e-5, atol=1e-6)


def test_the_cupy_api_the_executor_uses_exists():
    """No device needed: every CuPy name the executor calls is there, with those names."""
    cupy = pytest.importorskip("cupy")
    cuda = cupy.cuda
    for name in (
        "record",
        "wait_event",
        "synchronize",
        "begin_capture",
        "end_capture",
        "__enter__",
        "__exit__",
    ):
        assert hasattr(cuda.Stream, name), name
    assert hasattr(cuda.Device, "synchronize")
    assert hasattr(cuda.MemoryPool, "malloc")
    assert hasattr(cuda.graph.Graph, "launch")
    for fn in (cuda.using_allocator, cuda.get_current_stream, cupy.copyto, cupy.empty_like):
        assert callable(fn)
    import inspect

    for meth, param in (
        (cuda.Stream.__init__, "non_blocking"),
        (cuda.graph.Graph.launch, "stream"),
    ):
        doc = meth.__doc__ or ""
        try:
            params = inspect.signature(meth).parameters
        except (TypeError, ValueError):
            params = {}
        assert param in params or param in doc or param in (cuda.Stream.__doc__ or ""), param


def test_the_cupy_api_the_lowerings_use_exists():
    """No device needed: the CuPy names and parameters used by the backend's events and capture
    cleanup, the fused and take_grad RawKernel lowerings and the CuPy branches of op impls."""
    cupy = pytest.importorskip("cupy")
    import inspect

    import cupyx
    from cupyx.scipy.special import erf

    cuda = cupy.cuda
    assert "disable_timing" in inspect.signature(cuda.Event).parameters  # backend.record
    assert hasattr(cuda.Stream, "is_capturing")  # capture-failure cleanup
    assert "event" in (cuda.Stream.record.__doc__ or "")  # stream.record(event)
    assert hasattr(cuda.Device, "attributes")  # ["MultiProcessorCount"] for the grid size
    assert "shared_mem" in (cupy.RawKernel.__call__.__doc__ or "")  # kernel(grid, block, args)
    assert isinstance(erf, cupy.ufunc) and {"f->f", "d->d"} <= set(erf.types)  # erf(a, out=)
    assert list(inspect.signature(cupyx.scatter_add).parameters) == ["a", "slices", "value"]
    for fn, params in (
        (cupy.sum, ("axis", "dtype", "out", "keepdims")),
        (cupy.amax, ("axis", "out", "keepdims")),
        (cupy.amin, ("axis", "out", "keepdims")),
        (cupy.argmax, ("axis", "keepdims")),
        (cupy.concatenate, ("axis", "out")),
        (cupy.take, ("indices", "axis")),
        (cupy.copyto, ("dst", "src")),
        (cupy.ascontiguousarray, ("dtype",)),
        (cupy.array, ("copy",)),
    ):
        got = inspect.signature(fn).parameters
        assert all(p in got for p in params), (fn.__name__, list(got))


@pytest.mark.gpu
@needs_gpu
def test_gpu_cuda_graph_captures_a_many_input_concatenate():
    """cupy.concatenate of more than 8 arrays copies a pointer table from the host, which
    capture refuses; the concatenate lowering is kernels/concat.cu, pointers in the launch
    parameters. 10 inputs, float32 and float64."""
    import warnings

    import cupy

    def fn(x):
        return gg.concatenate([x * float(k) for k in range(10)], axis=1)

    j = gg.jit(fn, backend="cupy", cuda_graph=True)
    with warnings.catch_warnings():
        # a failed capture warns (RuntimeWarning); other warnings (a library's deprecations)
        # are not this test's business
        warnings.simplefilter("error", RuntimeWarning)
        for dtype in (np.float32, np.float64):
            for k in range(3):
                x = (X + k).astype(dtype)
                got = cupy.asnumpy(j(cupy.asarray(x)))
                want = np.concatenate([x * dtype(i) for i in range(10)], 1)
                np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_gpu_non_contiguous_input_and_take_grad(cuda_graph):
    import cupy

    fn0 = branchy_function(4, 2)

    def loss(x, idx):
        return gg.sum(gg.take(fn0(gg.reshape(x, (8, 8))), idx, axis=0) ** 2)

    idx = np.array([7, 0, 7, 3, 3, 3], np.int64)
    f = gg.jit(gg.grad(loss), backend="cupy", streams=4, cuda_graph=cuda_graph)
    ref = gg.jit(gg.grad(loss), backend="numpy")
    for k in range(3):
        xt = np.ascontiguousarray((X * (k + 1)).reshape(16, 4).T)  # (4, 16)
        x_dev = cupy.asfortranarray(cupy.asarray(xt))  # the same values, not C-contiguous
        got = cupy.asnumpy(f(x_dev, cupy.asarray(idx)))
        np.testing.assert_allclose(got, ref(xt, idx), rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@needs_gpu
def test_gpu_float32_subnormals_flush_within_the_tolerances():
    """CuPy compiles kernels with -ftz=true: float32 subnormals a fused kernel reads or writes
    become 0 (NumPy keeps them). Each subnormal element is exact or flushed, and the difference
    is far inside the float32 tolerances the GPU tests use (atol 2e-6 >> 1.2e-38)."""
    import cupy

    tiny = np.finfo(np.float32).tiny  # the smallest normal float32
    x = np.array([tiny / 4, -tiny / 8, tiny, 1.0, 0.0, -3.0], np.float32)  # two subnormals
    got = cupy.asnumpy(gg.jit(lambda x: gg.tanh(x) + x * 2.0, backend="cupy")(cupy.asarray(x)))
    want = np.tanh(x) + x * np.float32(2.0)
    sub = np.abs(x) < tiny  # tanh(s) + 2s = 3s exactly, or 0 once s is flushed
    assert np.all((got[sub] == want[sub]) | (got[sub] == 0)), (got, want)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
