"""Backends: where a plan runs. numpy (CPU), cupy (GPU), sim (simulated streams, for tests)."""

from __future__ import annotations

from .base import Backend, BackendInfo, asnumpy, default_backend, get_backend

__all__ = ["Backend", "BackendInfo", "asnumpy", "default_backend", "get_backend"]
