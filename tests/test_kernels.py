"""The hand-written CUDA sources in kernels/: NVRTC compile, emulation against NumPy, and that
an installed wheel ships them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from kernel_helpers import requires_emulator, requires_nvrtc

from gpugraph.backends.cupy_kernels import TAKE_GRAD_KERNELS, take_grad_geometry
from gpugraph.kernel_files import kernel_names, kernel_source
from gpugraph.ops.index import take_rows
from gpugraph.testing import (
    compile_ptx,
    emulate_kernel,
)


def test_kernel_files_are_found():
    assert "take_grad.cu" in kernel_names()


@pytest.mark.nvrtc
@requires_nvrtc
@pytest.mark.parametrize("arch", ["compute_80", "compute_90"])
@pytest.mark.parametrize("name", kernel_names())
def test_hand_written_kernels_compile(name, arch):
    ptx = compile_ptx(kernel_source(name), name, arch=arch)
    assert ".entry" in ptx


@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("dtype", sorted(TAKE_GRAD_KERNELS, key=str))
@pytest.mark.parametrize(
    "axis,x_shape,idx",
    [
        (0, (5, 3), [4, 0, 4, -1]),
        (1, (2, 6, 3), [[1, 1], [5, 0]]),
        (2, (2, 3, 4), [3]),
    ],
)
def test_take_grad_kernel_matches_numpy(dtype, axis, x_shape, idx):
    rng = np.random.default_rng(0)
    idx = np.asarray(idx, dtype=np.int64)
    g_shape = x_shape[:axis] + idx.shape + x_shape[axis + 1 :]
    g = rng.standard_normal(g_shape).astype(dtype)
    expected = np.zeros(x_shape, dtype)
    np.add.at(
        np.moveaxis(expected, axis, 0),
        idx.reshape(-1) % x_shape[axis],
        np.moveaxis(g.reshape(g_shape[:axis] + (idx.size,) + x_shape[axis + 1 :]), axis, 0),
    )
    out = np.zeros(x_shape, dtype)
    geometry = take_grad_geometry(g.shape, idx.size, axis, x_shape[axis])
    rows = take_rows(np, idx, x_shape[axis], "raise")  # what the launcher passes
    emulate_kernel(
        kernel_source("take_grad.cu"),
        TAKE_GRAD_KERNELS[np.dtype(dtype)],
        2,
        8,
        [g, rows.reshape(-1), out, *map(np.int64, geometry)],
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.emulator
@requires_emulator
def test_take_grad_kernel_drops_rows_outside_the_axis():
    """Rows the launcher did not resolve (negative, or >= dim) are skipped: no other row
    receives them and nothing is written outside ``out`` (the emulator checks bounds)."""
    g = np.arange(1.0, 6.0).reshape(5, 1)
    idx = np.array([1, -1, 3, 3, 9], dtype=np.int64)
    out = np.zeros((4, 1))
    emulate_kernel(
        kernel_source("take_grad.cu"),
        TAKE_GRAD_KERNELS[np.dtype("float64")],
        1,
        4,
        [g, idx, out, *map(np.int64, take_grad_geometry(g.shape, 5, 0, 4))],
    )
    np.testing.assert_array_equal(out[:, 0], [0.0, 1.0, 0.0, 3.0 + 4.0])


def test_installed_wheel_ships_kernels(tmp_path):
    """Run from outside the checkout: if gpugraph is installed (CI installs it), the
    kernels must come from the installed package, not the source tree."""
    code = (
        "import gpugraph, gpugraph.kernel_files as k; "
        "print(gpugraph.__file__); print(k.kernel_dir()); print(k.kernel_names())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip("gpugraph is not installed in this environment (pip install .)")
    pkg_file, kdir, names = out.stdout.strip().splitlines()
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if pkg_file.startswith(checkout):
        pytest.skip("gpugraph is installed in editable/development mode")
    assert "take_grad.cu" in names and not kdir.startswith(checkout)
