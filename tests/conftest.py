"""Session set-up shared by every test module.

* The suite is the same on every machine: ``backend="auto"`` means NumPy here unless
  GPUGRAPH_BACKEND is set. GPU tests name ``backend="cupy"`` and skip without a CUDA device.
* Every kernel the codegen makes and every compiled graph is recorded; the tests marked
  ``after_all_tests`` (the NVRTC and race sweeps in test_sweeps.py) run last, when the record
  is complete.
"""

import os

os.environ.setdefault("GPUGRAPH_BACKEND", "numpy")

from gpugraph.codegen.cuda import KERNEL_OBSERVERS  # noqa: E402
from gpugraph.runtime import COMPILED_OBSERVERS  # noqa: E402
from tests.kernel_helpers import record_compiled, record_kernel  # noqa: E402

KERNEL_OBSERVERS.append(record_kernel)
COMPILED_OBSERVERS.append(record_compiled)


def pytest_collection_modifyitems(items):
    last = [item for item in items if item.get_closest_marker("after_all_tests")]
    items[:] = [item for item in items if item not in last] + last
