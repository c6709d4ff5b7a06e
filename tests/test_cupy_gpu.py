"""The CuPy executor on a real GPU (the ``gpu`` tests skip without a CUDA device), and the CuPy
API it relies on (checked without a device). tests/test_cupy_backend.py drives the same
executor's stream logic through a stand-in for ``cupy``.
"""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.backends.base import default_backend
from gpugraph.backends.cupy_backend import CupyBackend
from gpugraph.testing.races import branchy_function

X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)

needs_gpu = pytest.mark.skipif(
    default_backend().name != "cupy", reason=f"needs a CUDA device: {default_backend().reason}"
)


def test_cupy_backend_refuses_without_a_device():
    if default_backend().name == "cupy":
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
