"""Session set-up shared by every test module.

* The suite is the same on every machine: ``backend="auto"`` means NumPy here unless
  GPUGRAPH_BACKEND is set. GPU tests name ``backend="cupy"`` and skip without a CUDA device.
* Every kernel the codegen makes is recorded, and the test marked ``after_all_tests`` (the NVRTC
  sweep in test_kernel_sweep.py) runs last, when the record is complete.
"""

import os

os.environ.setdefault("GPUGRAPH_BACKEND", "numpy")

from gpugraph.codegen.cuda import KERNEL_OBSERVERS  # noqa: E402
from tests.kernel_helpers import record_kernel  # noqa: E402

KERNEL_OBSERVERS.append(record_kernel)


def pytest_collection_modifyitems(items):
    last = [item for item in items if item.get_closest_marker("after_all_tests")]
    items[:] = [item for item in items if item not in last] + last
