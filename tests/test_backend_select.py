"""backend="auto" and $GPUGRAPH_BACKEND: CuPy with a CUDA device, else the native CPU backend
where a host compiler builds and runs a probe kernel, else NumPy; every choice says why
(default_backend(), explain(), python -m gpugraph info). Also the cpu backend's policy (which
fused groups it compiles) and its compile errors at lower() time."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.__main__ import main
from gpugraph.backends import base, cpu_backend, cpu_native, cpu_select
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
    x = np.linspace(-1, 1, 3000, dtype=np.float32)
    c = gg.jit(lambda x: gg.tanh(x * 2) + 1).lower(x)
    text = c.explain()
    assert text.startswith("backend: cpu (auto: GPUGRAPH_BACKEND=cpu; ")
    assert "cpu: 1 fused group(s) as native kernels" in text
    np.testing.assert_allclose(c(x), np.tanh(x * 2) + 1, rtol=2e-6)
    main(["info"])
    out = capsys.readouterr().out
    assert "backend: cpu (GPUGRAPH_BACKEND=cpu; " in out and "cpu backend: available: " in out


@requires_emulator
def test_policy_leaves_only_short_broadcast_math_groups_to_numpy(monkeypatch):
    """The default policy (bench/results/cpu-policy-cpu-2026-12-01-2.md): a group of any size
    runs natively (a 7-element one too), and so does a bias over 64-column rows (the loop
    nest) or over 3-column rows (tiled rows, tests/test_cpu_tiled.py); only a broadcast group
    with neither (here a per-row value over 3-column rows) that calls tanh, exp, ... runs on
    the NumPy fused runner, and explain() says why. GPUGRAPH_CPU_NATIVE=all compiles it too."""
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "auto")

    def f(small, rows, bias, narrow, nbias):
        return gg.exp(small) * 2, gg.tanh(rows + bias) * 3, gg.tanh(narrow + nbias) * 5

    small = np.linspace(-1, 1, 7)
    rows = np.linspace(-1, 1, 4096).reshape(-1, 64)
    bias = np.linspace(0, 1, 64)
    narrow = np.linspace(-1, 1, 300).reshape(-1, 3)
    nbias = np.linspace(0, 1, 100).reshape(-1, 1)
    args = (small, rows, bias, narrow, nbias)
    c = gg.jit(f, backend="cpu").lower(*args)
    text = c.explain()
    assert "cpu: 2 fused group(s) as native kernels" in text
    assert text.count("cpu: a fused group runs on NumPy") == 1
    assert "input 1 is broadcast ((100, 1)" in text and "calls tanh" in text
    want = gg.jit(f, backend="numpy")(*args)
    got = c(*args)
    np.testing.assert_array_equal(got[2], want[2])  # the same NumPy runner: bit for bit
    for j in (0, 1):
        np.testing.assert_allclose(got[j], want[j], rtol=1e-12)
    arith = gg.jit(lambda a, b: a * b + 7, backend="cpu").lower(narrow, nbias)
    assert "cpu: 1 fused group(s) as native kernels" in arith.explain()
    assert "runs on NumPy" not in arith.explain()
    np.testing.assert_array_equal(arith(narrow, nbias), narrow * nbias + 7)
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "all")
    c = gg.jit(f, backend="cpu").lower(*args)
    assert "cpu: 3 fused group(s) as native kernels" in c.explain()
    for g, w in zip(c(*args), want):
        np.testing.assert_allclose(g, w, rtol=1e-12)
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "some")
    with pytest.raises(gg.UnsupportedError, match="GPUGRAPH_CPU_NATIVE='some'"):
        gg.jit(f, backend="cpu").lower(*args)


@requires_emulator
def test_without_the_extension_module_small_groups_stay_on_numpy(monkeypatch):
    """Where the module cannot be built (no Python or NumPy headers) every call goes through
    ctypes, whose fixed cost loses to the NumPy runner under CTYPES_MIN_ELEMENTS."""
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "auto")
    monkeypatch.setattr(cpu_native, "include_flags", lambda: None)
    small = np.linspace(-1, 1, 7)
    big = np.linspace(-1, 1, cpu_select.CTYPES_MIN_ELEMENTS)
    c = gg.jit(lambda s, b: (gg.exp(s) * 2, gg.tanh(b) * 3), backend="cpu").lower(small, big)
    text = c.explain()
    assert "cpu: 1 fused group(s) as native kernels" in text
    assert f"7 elements, under {cpu_select.CTYPES_MIN_ELEMENTS}, and kernels are called" in text
    got = c(small, big)
    np.testing.assert_array_equal(got[0], np.exp(small) * 2)
    np.testing.assert_allclose(got[1], np.tanh(big) * 3, rtol=1e-12)


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
