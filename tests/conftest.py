"""The suite is the same on every machine: ``backend="auto"`` means NumPy here unless
GPUGRAPH_BACKEND is set. GPU tests name ``backend="cupy"`` and skip without a CUDA device."""

import os

os.environ.setdefault("GPUGRAPH_BACKEND", "numpy")
