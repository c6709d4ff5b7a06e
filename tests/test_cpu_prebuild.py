"""cpu_prebuild: the fused groups of many graphs compiled ahead in a few concurrent compiler
runs, then found in the kernel cache by each plan's own lower() (tests/conftest.py uses it for
the op suite's cpu runs)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import requires_emulator

import gpugraph as gg
from gpugraph import cache
from gpugraph.backends import cpu_backend
from gpugraph.backends.cpu_prebuild import prebuild

pytestmark = requires_emulator  # the same host compiler

FUNCTIONS = [
    lambda x: gg.tanh(x * 1.5) - x,
    lambda x: gg.exp(-x) * x + 2.0,
    lambda x: gg.sum(gg.sqrt(gg.abs(x) + 1.0) * x, axis=-1),  # a fused reduction
    lambda x: gg.maximum(x, 0.25) / (x * x + 1.0),
]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "all")


def _misses() -> int:
    return cache.STATS.by_kind.get("cpu-so", [0, 0])[1]


def test_prebuilt_kernels_are_found_by_each_plan(fresh_cache, monkeypatch):
    x = np.linspace(-2, 2, 48, dtype=np.float32).reshape(4, 12)
    graphs = [gg.jit(f, backend="numpy").lower(x).graph for f in FUNCTIONS]
    before = _misses()
    assert prebuild(graphs, jobs=2) == len(FUNCTIONS)
    assert _misses() - before == 2  # two libraries, one per concurrent compiler run
    monkeypatch.setattr(cpu_backend, "_build", lambda ks: pytest.fail("compiled again"))
    for f in FUNCTIONS:
        compiled = gg.jit(f, backend="cpu").lower(x)
        assert "1 fused group(s) as native kernels" in compiled.explain()
        want = gg.jit(f, backend="numpy")(x)
        np.testing.assert_allclose(compiled(x), want, rtol=2e-5, atol=2e-6)


def test_a_batch_that_fails_leaves_the_others_built(fresh_cache):
    backend = cpu_backend.CpuBackend()
    broken = 'extern "C" __global__ void gg_fused_broken(float* out0) { out0[0] = nope; }'
    good = 'extern "C" __global__ void gg_fused_good(float* out0) { out0[0] = 3.0f; }'
    bad_k = backend.kernel(broken, "gg_fused_broken", 1)
    good_k = backend.kernel(good, "gg_fused_good", 1)
    with pytest.raises(cpu_backend.CpuCompileError, match="nope"):
        backend.compile_pending(jobs=2)
    assert bad_k.fn is None
    out = np.zeros(1, np.float32)
    good_k.fn(1, 1, out.ctypes.data)
    assert out[0] == 3.0
