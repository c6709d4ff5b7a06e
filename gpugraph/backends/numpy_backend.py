"""The CPU backend: NumPy, one implicit stream."""

from __future__ import annotations

import numpy as np

from .base import Backend, register_backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np


register_backend("numpy", NumpyBackend)
