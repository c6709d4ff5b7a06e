"""The GPU harness without a GPU: bench/gpu_smoke.py and the benchmarks' GPU branches run
against the logging stand-in for ``cupy`` of tests/test_cupy_backend.py (hand-written
RawKernels on the kernel emulator), and bench/gpu_check.sh on a machine with no GPU ends at
once with a "no usable GPU" line and returns at most 8 files.
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from gpugraph.backends import cupy_kernels
from gpugraph.backends.base import _backend, cupy_status
from gpugraph.ops.registry import get_op
from gpugraph.testing import emulate_kernel, emulator_available

# The stand-in lives in test_cupy_backend.py. Import it under the name pytest gives it (tests/
# is on sys.path, there being no tests/__init__.py): as tests.test_cupy_backend it would be a
# second copy whose classes re-register the stand-in backends, and monkeypatches of one copy's
# classes would miss the other's instances.
try:
    import test_cupy_backend  # noqa: F401 (registers the stand-in backends)
except ImportError:  # run from elsewhere, with the checkout on sys.path
    from tests import test_cupy_backend  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
STAND_IN = "fake-cupy-strict"  # calls each launch while capturing, as CuPy does
MAX_FILES = 8  # what the device tool sends back from $OUT


def bench_module(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


class EmulatedRawKernel:
    """cupy.RawKernel on the kernel emulator; every launch is logged by name."""

    launches: list[str] = []

    def __init__(self, source: str, name: str, options=()) -> None:
        self.source, self.name = source, name

    def __call__(self, grid, block, args) -> None:
        self.launches.append(self.name)
        emulate_kernel(self.source, self.name, grid, block, list(args))


@pytest.fixture
def stand_in(monkeypatch):
    """The stand-in ``cupy`` module, imported as ``cupy`` too, with the hand-written kernels
    (take_grad, concatenate) lowered for the stand-in backend exactly as for CuPy."""
    if not emulator_available():
        pytest.skip("g++ not found (kernel emulator)")
    backend = _backend(STAND_IN)
    cp = backend.xp
    monkeypatch.setattr(type(cp), "RawKernel", EmulatedRawKernel, raising=False)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    for op, hook in (
        ("take_grad", cupy_kernels.prepare_take_grad),
        ("concatenate", cupy_kernels.prepare_concatenate),
    ):
        monkeypatch.setitem(get_op(op).extra.setdefault("prepare", {}), STAND_IN, hook)
    cupy_kernels._raw_kernel.cache_clear()
    EmulatedRawKernel.launches = []
    cp.cuda.log.clear()
    yield cp
    cupy_kernels._raw_kernel.cache_clear()


@pytest.mark.emulator
def test_gpu_smoke_dry_run(stand_in):
    smoke_mod = bench_module("gpu_smoke")
    smoke = smoke_mod.Smoke(stand_in, STAND_IN, size_log2=12)
    out = io.StringIO()
    code = smoke.run(out=out)
    lines = out.getvalue().splitlines()
    assert code == 0, out.getvalue()
    names = [name for name, _ in smoke.checks()]
    assert len(lines) == len(names) + 1 and lines[-1] == f"smoke: {len(names)} passed, 0 failed"
    for line, name in zip(lines, names):
        assert line.startswith(f"PASS {name} ("), line
    # the calls it made: captures and replays, several streams, the hand-written kernels
    kinds = {kind for kind, *_ in stand_in.cuda.log}
    assert {"begin_capture", "end_capture", "graph_launch", "record", "wait"} <= kinds
    streams = {name for kind, name, _ in stand_in.cuda.log if kind == "kernel"}
    assert len(streams) >= 4
    assert {"gg_take_grad_f32", "gg_concat_f32"} <= set(EmulatedRawKernel.launches)
    by_name = {r["check"]: r for r in smoke.results}
    assert "cudaErrorStreamCapture" in by_name["capture_fallback"]["why"]
    assert by_name["chain8_bandwidth"]["elements"] == 2**12


@pytest.mark.emulator
def test_gpu_smoke_reports_a_failing_check(stand_in, monkeypatch):
    """A wrong result is a FAIL line naming the check, and the exit status says so."""
    smoke_mod = bench_module("gpu_smoke")
    smoke = smoke_mod.Smoke(stand_in, STAND_IN, size_log2=12)
    monkeypatch.setattr(smoke, "dev", lambda a: stand_in.asarray(a + 1))  # wrong data uploaded
    only = [c for c in smoke.checks() if c[0] == "fused_vector"]
    monkeypatch.setattr(smoke, "checks", lambda: only)
    out = io.StringIO()
    assert smoke.run(out=out) == 1
    first = out.getvalue().splitlines()[0]
    assert first.startswith("FAIL fused_vector") and "gpu_smoke.py:" in first


@pytest.mark.emulator
def test_fusion_bench_gpu_branch_dry_run(stand_in):
    bench = bench_module("bench_fusion")
    rows, extra = bench.gpu_rows(2**12, 3, cp=stand_in, backend=STAND_IN, calls=2)
    impls = {r["impl"] for r in rows}
    assert {"cupy eager", "cupy.fuse", "gpugraph cupy (fused)"} <= impls
    for r in rows:
        assert r["ms"] > 0 and r["host_us_per_call"] > 0 and "of_copy_bw" in r
    assert extra["copy_GB/s"] > 0
    assert {w for w in bench.WORKLOADS} == {r["workload"] for r in rows}


@pytest.mark.emulator
def test_streams_bench_gpu_branch_dry_run(stand_in):
    bench = bench_module("bench_streams")
    args = bench.parse_args(["--sizes", "16", "--branches", "3", "--depth", "2", "--reps", "2"])
    device, rows = bench.bench_gpu(args, cp=stand_in, backend=STAND_IN)
    assert "stand-in" in device
    got = {(r["impl"], r.get("streams"), r.get("cuda_graph")) for r in rows}
    assert ("gpugraph", 1, False) in got and ("gpugraph", 1, True) in got
    assert any(impl == "gpugraph" and s > 1 for impl, s, _ in got)
    assert all(r["host_us_per_call"] > 0 for r in rows if "skipped" not in r)


# -- bench/gpu_check.sh on a machine without a GPU ---------------------------------------------
no_gpu = pytest.mark.skipif(cupy_status().name == "cupy", reason="a CUDA device is present")


@no_gpu
def test_gpu_smoke_without_a_gpu_says_so():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_smoke.py")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == bench_module("gpu_smoke").NO_GPU == 3
    assert "no usable GPU" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


@no_gpu
def test_gpu_check_on_cpu_ends_at_once_and_returns_few_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_RUN_DIR": str(tmp_path / "run")}
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "smoke", "gpu"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 3, text
    assert "no usable GPU" in text and "Traceback" not in text
    assert "## gpu" not in text  # it stopped before the steps
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 1 <= len(files) <= MAX_FILES, files
    log = out / "gpu-check.log"
    assert "no usable GPU" in log.read_text()
    (tarball,) = [p for p in files if p.name.endswith(".tar.gz")]
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert any(n.endswith("gpu-check.log") for n in names)


def test_gpu_check_packs_many_results_into_few_files(tmp_path):
    """However many result files the steps write, $OUT gets the log and one tarball."""
    out, run = tmp_path / "out", tmp_path / "run"
    out.mkdir()
    run.mkdir()
    for k in range(20):
        (run / f"result-{k}.json").write_text("{}")
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_RUN_DIR": str(run)}
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--pack-only"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= MAX_FILES, files
    (tarball,) = [p for p in files if p.name.endswith(".tar.gz")]
    with tarfile.open(tarball) as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {f"result-{k}.json" for k in range(20)} <= names


def test_float32_flush_to_zero_is_within_the_gpu_tolerances():
    """CuPy compiles kernels with -ftz=true: float32 subnormals read or produced by a kernel
    become 0. The smoke's and the gpu tier's float32 atol must cover that difference."""
    try:  # under pytest's module name (see the stand-in import above)
        from test_ops import tol
    except ImportError:
        from tests.test_ops import tol

    smallest_normal = np.finfo(np.float32).tiny
    assert bench_module("gpu_smoke").ATOL > smallest_normal
    assert tol(np.float32)["atol"] > smallest_normal


@pytest.mark.parametrize("deadline", [560, 0])
def test_gpu_check_steps_dry_run(tmp_path, deadline):
    """The step plumbing (timeouts, pytest options, the deadline, the status) with the
    commands printed instead of run."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "GPU_CHECK_RUN_DIR": str(tmp_path / "run"),
        "GPU_CHECK_DRY_RUN": "1",
        "GPU_CHECK_DEADLINE_S": str(deadline),
    }
    steps = ["smoke", "gpu", "fusion", "memory", "streams"]
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), *steps],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    log = (out / "gpu-check.log").read_text()
    if deadline == 0:  # no time left: every step is skipped, and that is a failure
        assert proc.returncode == 1, log
        assert all(f"## {s}: skipped" in log for s in steps)
        return
    assert proc.returncode == 0, log
    lines = log.splitlines()
    for s in steps:
        assert any(line.startswith(f"## {s} (timeout ") for line in lines), s
        assert f"## {s}: exit 0" in log
    (pytest_line,) = [line for line in lines if "dry run:" in line and "-m pytest" in line]
    for opt in ("-m gpu", "-rfE", "--tb=short", "--junitxml="):
        assert opt in pytest_line
    assert "dry run: python3 bench/gpu_smoke.py --json" in log
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check-results.tar.gz", "gpu-check.log"]
