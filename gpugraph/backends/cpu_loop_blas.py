"""The BLAS library NumPy loaded, for native loops (backends/cpu_loop_runner.py): the
addresses of its cblas ``sgemm``/``dgemm``, which a generated loop calls for matmuls too large
for plain loops (codegen/loop_native_ops.py, ``GEMM_CALL``).

Only symbols whose integer width is known from their name are used: the ``64_`` suffix of an
ILP64 build (NumPy's scipy-openblas64: ``scipy_cblas_sgemm64_``) takes 64-bit integers, and
scipy-openblas32's ``scipy_cblas_sgemm`` 32-bit ones. Each candidate is checked once with a
small product against NumPy before any loop uses it; where none is found or the check fails,
loops with such matmuls stay host-driven.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import numpy as np

# (sgemm symbol, dgemm symbol, C type of the integers)
CANDIDATES = (
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "long long"),
    ("cblas_sgemm64_", "cblas_dgemm64_", "long long"),
    ("scipy_cblas_sgemm", "scipy_cblas_dgemm", "int"),
)
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


@dataclass(frozen=True)
class Gemm:
    blas_int: str  # the C type of the library's integers
    addresses: tuple[int, int]  # sgemm, dgemm
    library: str


@functools.lru_cache(maxsize=1)
def gemm() -> Gemm | None:
    """The cblas gemm functions of NumPy's BLAS library, checked; None where unusable."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        try:
            handle = ctypes.CDLL(lib.filepath)
        except OSError:
            continue
        for s_name, d_name, blas_int in CANDIDATES:
            fns = [getattr(handle, n, None) for n in (s_name, d_name)]
            if None in fns:
                continue
            if all(_works(f, t, blas_int) for f, t in zip(fns, (np.float32, np.float64))):
                addresses = tuple(ctypes.cast(f, ctypes.c_void_p).value or 0 for f in fns)
                return Gemm(blas_int, addresses, lib.filepath)  # type: ignore[arg-type]
    return None


def _works(fn, dtype, blas_int: str) -> bool:
    """A 2x3 @ (2x3)^T product through ``fn`` equals NumPy's."""
    it = ctypes.c_longlong if blas_int == "long long" else ctypes.c_int
    real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    ptr = ctypes.c_void_p
    fn.argtypes = [ctypes.c_int] * 3 + [it] * 3 + [real, ptr, it, ptr, it, real, ptr, it]
    fn.restype = None
    a = np.arange(1, 7, dtype=dtype).reshape(2, 3)
    b = np.arange(2, 8, dtype=dtype).reshape(2, 3)
    out = np.full((2, 2), -1, dtype)
    fn(ROW_MAJOR, NO_TRANS, TRANS, 2, 2, 3, 1.0, a.ctypes.data, 3, b.ctypes.data, 3, 0.0,
       out.ctypes.data, 2)  # fmt: skip
    return bool(np.array_equal(out, a @ b.T))
