"""Shared pytest configuration."""

from __future__ import annotations

import pytest

MARKERS = {
    "gpu": "needs CuPy and a CUDA device",
    "nvrtc": "needs NVRTC (pip install nvidia-cuda-nvrtc); no GPU required",
    "emulator": "needs g++ for the host kernel emulator",
    "slow": "takes more than a few seconds",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
