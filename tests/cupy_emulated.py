"""A ``cupy`` stand-in whose RawKernel launches run on the kernel emulator, for the runners that
launch generated or hand-written kernels (fused_reduce, fused_grid_reduce, take_grad, concat).
Install it with ``monkeypatch.setitem(sys.modules, "cupy", EmulatedCupy())``. The emulator
checks every argument against the kernel's C parameter types (widths included); everything
else (array functions, dtypes) is NumPy's."""

from __future__ import annotations

import numpy as np


class EmulatedCupy:
    """``launches`` records (kernel name, grid, block) per launch. ``max_block`` caps a 1-d
    block's threads (the emulator's threads are slow; a kernel that needs its full block, such
    as a row kernel holding its row in registers, must not be capped). ``sm_count`` is what
    ``cupy.cuda.Device().attributes["MultiProcessorCount"]`` says."""

    int64 = np.int64

    def __init__(self, max_block: int | None = None, sm_count: int = 1) -> None:
        from gpugraph.testing import emulate_kernel

        self.launches: list[tuple] = []
        fake = self

        class RawKernel:
            def __init__(self, source, name, options=()):
                self.source, self.name = source, name

            def __call__(self, grid, block, args):
                assert isinstance(grid, tuple) and isinstance(block, tuple)  # as CuPy wants
                fake.launches.append((self.name, grid, block))
                if max_block is not None and len(block) == 1:
                    block = (min(block[0], max_block),)
                emulate_kernel(self.source, self.name, grid, block, list(args))

        class Device:
            id = 0
            attributes = {"MultiProcessorCount": sm_count}

        self.RawKernel = RawKernel
        self.cuda = type("cuda", (), {"Device": lambda *a: Device()})

    def __getattr__(self, name):  # the array functions a runner calls: NumPy's
        return getattr(np, name)
