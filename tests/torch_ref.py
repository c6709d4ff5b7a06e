"""torch as a reference for the op tests, optional: the `test` extra does not install it
(PyPI's wheel pulls the CUDA stack). With torch, ``torch`` is the module, on one thread (on a
2-core CI runner reference threads only contend). Without it, ``torch`` is a stand-in: tables
that name torch functions still import, and a test skips (naming why) at its first torch call,
so the NumPy halves of these modules still run."""

from __future__ import annotations

from typing import Any

import pytest

try:
    import torch

    torch.set_num_threads(1)
    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False

    class _Absent:
        """Any attribute is another stand-in; calling one skips the running test."""

        def __getattr__(self, name: str) -> Any:
            return self

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            pytest.skip("torch is not installed: it is this test's reference")

    torch = _Absent()  # type: ignore[assignment]

F = torch.nn.functional
