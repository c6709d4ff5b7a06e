"""Session set-up shared by every test module.

* The suite is the same on every machine: ``backend="auto"`` means NumPy here unless
  GPUGRAPH_BACKEND is set. GPU tests name ``backend="cupy"`` and skip without a CUDA device.
* Tests (or modules) marked ``usefixtures("jit_backend")`` run twice: on that backend and on
  the native CPU backend with every fused group compiled (``GPUGRAPH_CPU_NATIVE=all``), so
  their ``backend="auto"`` jit calls check backend="cpu" against the same references. Every
  test of the op suite (``CPU_SUITE``) is marked so. The cpu runs come after all the others,
  and the first one compiles the fused groups of every graph the others lowered in a few
  large compiler runs (``cpu_prebuild``): a cold kernel cache then costs seconds, not one
  compiler run per plan. The rest of the suite runs on it with
  ``GPUGRAPH_BACKEND=cpu GPUGRAPH_CPU_NATIVE=all pytest ...`` (docs/backends.md, "Testing").
* Every kernel the codegen makes and every compiled graph is recorded; the tests marked
  ``after_all_tests`` (the NVRTC and race sweeps in test_sweeps.py) run last, when the record
  is complete.
* ``GPUGRAPH_HYPOTHESIS_PROFILE=ci`` makes every property test draw the same examples on every
  run (hypothesis ``derandomize``): a run then generates the same kernels as the last one, and
  the persistent kernel cache (gpugraph.cache) spares the NVRTC and emulator sweeps all their
  compiling. It is the default when ``CI`` is set (CI runs are reproducible); otherwise each
  run draws new examples: more programs tried over time.
* The ``progress`` fixture prints a line to the terminal, even under ``-q`` and output capture,
  at most every few seconds: the sweeps run for minutes on a loaded machine.
"""

import os
import re
import sys
import time

import pytest
from hypothesis import settings

os.environ.setdefault("GPUGRAPH_BACKEND", "numpy")

settings.register_profile("ci", derandomize=True, database=None)
# CI (CI=true) draws the same examples every run, so a red CI is reproducible and never a
# rare random draw; a developer's run explores new examples unless told otherwise.
settings.load_profile(
    os.environ.get("GPUGRAPH_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)

from gpugraph.codegen.cuda import KERNEL_OBSERVERS  # noqa: E402
from gpugraph.runtime import COMPILED_OBSERVERS  # noqa: E402
from tests.kernel_helpers import record_compiled, record_kernel  # noqa: E402

KERNEL_OBSERVERS.append(record_kernel)
COMPILED_OBSERVERS.append(record_compiled)


# Modules whose every test also runs on backend="cpu" (the jit_backend fixture): the op suite,
# fused and unfused (each test jits its function both ways).
CPU_SUITE = {
    "test_ops.py",
    "test_ops_contract.py",
    "test_ops_conv.py",
    "test_ops_elementwise_more.py",
    "test_ops_more.py",
    "test_ops_select.py",
}
# Graphs lowered by the "default" runs of jit_backend tests, which the first "cpu" run compiles
# ahead in one go (cpu_prebuild); None once it has.
_FOR_CPU: list | None = []
_RECORDING = [False]


def _record_for_cpu(compiled) -> None:
    if _RECORDING[0] and _FOR_CPU is not None:
        _FOR_CPU.append(compiled.graph)


COMPILED_OBSERVERS.append(_record_for_cpu)


def pytest_collectstart(collector: pytest.Collector) -> None:
    if isinstance(collector, pytest.Module) and collector.path.name in CPU_SUITE:
        collector.add_marker(pytest.mark.usefixtures("jit_backend"))


@pytest.fixture(params=["default", "cpu"])
def jit_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """The backend ``backend="auto"`` resolves to in this run of the test: "default" (the
    session's, NumPy unless GPUGRAPH_BACKEND says otherwise) or "cpu" (skipped, with the
    reason, where no host compiler builds a probe kernel)."""
    global _FOR_CPU
    if request.param == "default":
        _RECORDING[0] = True
        try:
            yield request.param
        finally:
            _RECORDING[0] = False
        return
    from gpugraph.backends.base import cpu_status

    found = cpu_status()
    if found.name != "cpu":
        pytest.skip(found.reason)
    monkeypatch.setenv("GPUGRAPH_BACKEND", "cpu")
    monkeypatch.setenv("GPUGRAPH_CPU_NATIVE", "all")
    if _FOR_CPU is not None:  # the first cpu run: every kernel the others need, at once
        from gpugraph.backends.cpu_prebuild import prebuild

        graphs, _FOR_CPU = _FOR_CPU, None
        prebuild(graphs)
    yield request.param


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item):
    """A property test's two jit_backend runs draw the same examples (hypothesis keys its draws
    by the test's id, set by its plugin just before this): so the cpu run's graphs are the ones
    the default run lowered, whose kernels the first cpu run compiled ahead."""
    inner = getattr(getattr(getattr(item, "obj", None), "hypothesis", None), "inner_test", None)
    callspec = getattr(item, "callspec", None)
    if inner is not None and callspec is not None and "jit_backend" in callspec.params:
        key = re.sub(r"(?<=[\[-])(default|cpu)(?=[-\]])", "jit_backend", item.nodeid, count=1)
        inner._hypothesis_internal_add_digest = key.encode()
    yield


def _runs_on_cpu(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("jit_backend") == "cpu"


def pytest_collection_modifyitems(items):
    # the cpu runs of jit_backend tests after every other run (their kernels are compiled at
    # once, from the graphs the others lowered), and the after_all_tests sweeps last
    last = [item for item in items if item.get_closest_marker("after_all_tests")]
    cpu = [item for item in items if _runs_on_cpu(item) and item not in last]
    rest = [item for item in items if item not in last and not _runs_on_cpu(item)]
    items[:] = rest + cpu + last


PROGRESS_EVERY = 5.0  # seconds between two progress lines of one test


class Progress:
    def __init__(self, config: pytest.Config, what: str, every: float = PROGRESS_EVERY):
        self.config, self.what, self.every = config, what, every
        self.start = self.last = time.monotonic()

    def __call__(self, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        line = f"[{self.what} {now - self.start:5.0f} s] {message}"
        plugins = self.config.pluginmanager
        reporter = plugins.getplugin("terminalreporter")
        capture = plugins.getplugin("capturemanager")
        if reporter is None or capture is None:  # e.g. -p no:terminal
            print(line, file=sys.__stderr__, flush=True)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


@pytest.fixture
def progress(request: pytest.FixtureRequest) -> Progress:
    """``progress(message, force=False)``: a progress line for this test (rate-limited)."""
    return Progress(request.config, request.node.name)
