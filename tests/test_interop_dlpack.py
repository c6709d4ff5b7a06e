"""The DLPack path without torch or JAX (CI installs neither): a minimal foreign array type
that exposes only ``__dlpack__`` / ``__dlpack_device__`` (backed by a NumPy array) is shared
without a copy, works as an op, jit and grad argument, and other devices are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg


class Foreign:
    """Another library's CPU array, as far as gpugraph can tell: DLPack only."""

    def __init__(self, a: np.ndarray, device: tuple[int, int] = (1, 0)):
        self._a, self._device = a, device

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device


def test_from_dlpack_shares_memory():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    view = gg.from_dlpack(Foreign(a))
    assert isinstance(view, np.ndarray) and np.shares_memory(view, a)
    np.testing.assert_array_equal(view, a)


def test_foreign_arrays_are_op_jit_and_grad_arguments():
    a = np.linspace(-1, 1, 8, dtype=np.float32)
    keep = a.copy()
    x = Foreign(a)

    def f(x):
        return gg.sum(gg.tanh(x) * 2.0)

    np.testing.assert_allclose(gg.tanh(x), np.tanh(a), rtol=1e-6)
    np.testing.assert_allclose(gg.jit(f)(x), f(a), rtol=1e-6)
    np.testing.assert_allclose(gg.grad(f)(x), 2 * (1 - np.tanh(a) ** 2), rtol=1e-5)
    np.testing.assert_array_equal(a, keep)  # inputs are never written


def test_a_device_without_an_array_library_is_refused_by_name():
    x = Foreign(np.ones(3, np.float32), device=(8, 0))  # Metal
    with pytest.raises(gg.GpuGraphError, match="Metal"):
        gg.from_dlpack(x)
