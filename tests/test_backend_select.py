"""backend="auto" and $GPUGRAPH_BACKEND: CuPy with a CUDA device, else the native CPU backend
where a host compiler builds and runs a probe kernel, else NumPy; every choice says why
(default_backend(), explain(), python -m gpugraph info). Also the cpu backend's policy (which
fused groups it compiles) and its compile errors at lower() time."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.__main__ import main
from gpugraph.backends import base, cpu_backend
from tests.kernel_helpers import requires_emulator


@pytest.fixture
def fresh_probes():
    """Forget this process's probe results (and made backends) before and after the test."""

    def clear():
        cpu_backend.probe.cache_clear()
        cpu_backend.compiler.cache_clear()
        base._backend.cache_clear()

    clear()
    yield
    clear()


def test_auto_prefers_cupy_then_cpu_then_numpy(monkeypatch, fresh_probes):
    monkeypatch.setenv("GPUGRAPH_BACKEND", "auto")
    gpu, cpu = base.cupy_status(), base.cpu_status()
    info = gg.default_backend()
    want = "cupy" if gpu.name == "cupy" else cpu.name
    assert info.name == want
    if want != "cupy":  # the reason names both checks
        assert gpu.reason in info.reason and cpu.reason in info.reason
    assert base.get_backend().name == want


def test_without_a_compiler_auto_falls_back_to_numpy_and_says_why(monkeypatch, fresh_probes):
    monkeypatch.setenv("GPUGRAPH_BACKEND", "auto")
    monkeypatch.setenv(cpu_backend.CXX_ENV, "no-such-compiler-gpugraph")
    if base.cupy_status().name == "cupy":
        pytest.skip("a CUDA device is present: auto picks CuPy")
    info = gg.default_backend()
    assert info.name == "numpy" and "no-such-compiler-gpugraph" in info.reason
    c = gg.jit(lambda x: x * 2).lower(np.ones(3))
    assert c.explain().startswith("backend: numpy (auto: ")
    assert "no-such-compiler-gpugraph" in c.explain().splitlines()[0]
    monkeypatch.setenv("GPUGRAPH_BACKEND", "cpu")  # asked for by name: an error, with why
    with pytest.raises(gg.UnsupportedError, match="GPUGRAPH_BACKEND=cpu, but .*no-such-comp"):
        gg.default_backend()


def test_a_probe_that_computes_wrong_results_is_refused(monkeypatch, fresh_probes):
    monkeypatch.setattr(cpu_backend, "_native_runner", lambda node, b: lambda ins, outs: None)
    found = cpu_backend.probe()
    assert found.name == "numpy" and "wrong results" in found.reason


@requires_emulator
def test_gpugraph_backend_cpu_and_explain_say_so(monkeypatch, capsys):
    monkeypatch.setenv("GPUGRAPH_BACKEND", "cpu")
    info = gg.default_backend()
    assert info.name == "cpu" and info.reason.startswith("GPUGRAPH_BACKEND=cpu; ")
    x = np.linspace(-1, 1, 3 * cpu_backend.NATIVE_MIN_ELEMENTS, dtype=np.float32)
    c = gg.jit(lambda x: gg.tanh(x * 2) + 1).lower(x)
    text = c.explain()
    assert text.startswith("backend: cpu (auto: GPUGRAPH_BACKEND=cpu; ")
    assert "cpu: 1 fused group(s) as native kernels" in text
    np.testing.assert_allclose(c(x), np.tanh(x * 2) + 1, rtol=2e-6)
    main(["info"])
    out = capsys.readouterr().out
    assert "backend: cpu (GPUGRAPH_BACKEND=cpu; " in out and "cpu backend: available: " in out


@requires_emulator
def test_policy_leaves_small_and_short_broadcast_groups_to_numpy(monkeypatch):
    """The default policy (bench/results/cpu-policy-cpu-2026-12-01.md): a group under
    NATIVE_MIN_ELEMENTS, or one reading a broadcast operand with no row x column loop nest
    (under 16 columns a row), runs on the NumPy fused runner, and explain() says why; a bias
    over 64-column rows gets the loop nest and runs natively; GPUGRAPH_CPU_NATIVE=all compiles
    them all."""
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "auto")
    n = cpu_backend.NATIVE_MIN_ELEMENTS

    def f(small, rows, bias, narrow, nbias):
        return gg.exp(small) * 2, gg.tanh(rows + bias) * 3, gg.tanh(narrow + nbias) * 5

    small = np.linspace(-1, 1, 7)
    rows = np.linspace(-1, 1, 4 * n).reshape(-1, 64)
    bias = np.linspace(0, 1, 64)
    narrow = np.linspace(-1, 1, 3 * n).reshape(-1, 3)
    nbias = np.linspace(0, 1, 3)
    args = (small, rows, bias, narrow, nbias)
    c = gg.jit(f, backend="cpu").lower(*args)
    text = c.explain()
    assert "cpu: 1 fused group(s) as native kernels" in text
    assert f"7 elements, under {n}" in text and "input 1 is broadcast ((3,)" in text
    want = gg.jit(f, backend="numpy")(*args)
    got = c(*args)
    for j in (0, 2):
        np.testing.assert_array_equal(got[j], want[j])  # the same NumPy runner: bit for bit
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "all")
    c = gg.jit(f, backend="cpu").lower(*args)
    assert "cpu: 3 fused group(s) as native kernels" in c.explain()
    for g, w in zip(c(*args), want):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "some")
    with pytest.raises(gg.UnsupportedError, match="GPUGRAPH_CPU_NATIVE='some'"):
        gg.jit(f, backend="cpu").lower(*args)


@requires_emulator
def test_compile_errors_surface_at_lower_not_at_the_first_call(monkeypatch):
    """A plan's kernels are compiled when it is built: a compiler that rejects them fails
    lower() (here: a flag the compiler does not know, which also makes a new cache key)."""
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "all")
    flags = cpu_backend.flags
    monkeypatch.setattr(cpu_backend, "flags", lambda: (*flags(), "-fno-such-flag-gpugraph"))
    with pytest.raises(cpu_backend.CpuCompileError, match="no-such-flag-gpugraph"):
        gg.jit(lambda x: gg.sin(x) * 3, backend="cpu").lower(np.ones(5))


def test_device_info_says_what_auto_picks(monkeypatch):
    monkeypatch.setenv("GPUGRAPH_BACKEND", "numpy")
    info = gg.device_info()
    assert info.backend == "numpy (GPUGRAPH_BACKEND=numpy)"
    assert str(info).endswith("; auto backend: numpy (GPUGRAPH_BACKEND=numpy)")
    monkeypatch.setenv("GPUGRAPH_BACKEND", "tpu")  # never raises: says why there is none
    assert gg.device_info().backend.startswith("none: GPUGRAPH_BACKEND='tpu' names no backend")
