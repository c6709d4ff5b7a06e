"""2-D matmuls in a native loop (``loop_native.py``): a call of the BLAS library NumPy loaded
(cblas ``?gemm``) for float operands where the backend found one (``backends/cpu_loop_blas.py``),
else plain loops GCC vectorizes, up to ``MAX_MATMUL_MNK`` multiply-adds; either operand may be
transposed."""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError
from .cuda import c_type
from .loop_native_ops import HELPER_NAME, Emitter

MATMUL_DTYPES = {np.dtype(t) for t in ("float32", "float64", "int32", "int64")}
# out[m, n] = sum_k A'[m, k] B'[k, n]; with B' not transposed the inner loop runs over n
# (contiguous in B and out: a vectorized axpy per k), else over k (a dot product per element,
# its lanes summed by an OpenMP simd reduction, as the row kernels do)
MATMUL_AXPY = """\
static void {name}(const void* pa, const void* pb, void* po) {{
  const {ct}* __restrict a = (const {ct}*)pa;
  const {ct}* __restrict b = (const {ct}*)pb;
  {ct}* __restrict o = ({ct}*)po;
  for (long long m = 0; m < {M}LL; ++m) {{
    {ct}* __restrict row = o + m * {N}LL;
    for (long long n = 0; n < {N}LL; ++n) row[n] = ({ct})0;
    for (long long k = 0; k < {K}LL; ++k) {{
      const {ct} s = a[{a_index}];
      const {ct}* __restrict bk = b + k * {N}LL;
      for (long long n = 0; n < {N}LL; ++n) row[n] += s * bk[n];
    }}
  }}
}}
"""
MATMUL_DOT = """\
static void {name}(const void* pa, const void* pb, void* po) {{
  const {ct}* __restrict a = (const {ct}*)pa;
  const {ct}* __restrict b = (const {ct}*)pb;
  {ct}* __restrict o = ({ct}*)po;
  for (long long m = 0; m < {M}LL; ++m) {{
    for (long long n = 0; n < {N}LL; ++n) {{
      {ct} acc = ({ct})0;
      const {ct}* __restrict bn = b + n * {K}LL;
#pragma omp simd reduction(+ : acc)
      for (long long k = 0; k < {K}LL; ++k) acc += a[{a_index}] * bn[k];
      o[m * {N}LL + n] = acc;
    }}
  }}
}}
"""


# Float matmuls call BLAS from the loop where a library is found (GEMM_CALL): a scan of
# tanh(h @ W + x), W 64x64, measured 0.19 us/step with BLAS against 0.56 with plain loops at
# h of 1 row, 0.44 against 1.23 at 4 rows (OpenBLAS's kernels against loops at ~7 GFLOP/s).
# Without BLAS, plain loops up to this many multiply-adds; above, the host-driven loop (with
# NumPy's BLAS) is faster: 4.9 against 3.8 us/step at 16 rows, about even at 4 (16,384).
MAX_MATMUL_MNK = 1 << 14


def matmul(node, em: Emitter) -> str:
    a, b = node.inputs
    pa, pb = node.attrs.get("perm_a"), node.attrs.get("perm_b")
    if len(a.shape) != 2 or len(b.shape) != 2 or a.dtype not in MATMUL_DTYPES:
        raise UnsupportedError(f"matmul {a.type} @ {b.type} (only 2-D float/int operands)")
    ta = pa is not None and tuple(pa) == (1, 0)
    tb = pb is not None and tuple(pb) == (1, 0)
    M, K = (a.shape[1], a.shape[0]) if ta else a.shape
    N = b.shape[0] if tb else b.shape[1]
    if em.blas_int is not None and a.dtype in GEMM_DTYPES and M * N * K > 0:
        return _gemm(a.dtype, ta, tb, M, N, K, em)
    if M * N * K > MAX_MATMUL_MNK:
        raise UnsupportedError(
            f"matmul {a.type} @ {b.type} ({M * N * K} multiply-adds, over {MAX_MATMUL_MNK}, "
            "and no BLAS library to call: BLAS in the host-driven loop is faster)"
        )
    a_index = f"k * {M}LL + m" if ta else f"m * {K}LL + k"
    template = MATMUL_DOT if tb else MATMUL_AXPY
    text = template.format(name=HELPER_NAME, ct=c_type(a.dtype), M=M, N=N, K=K, a_index=a_index)
    return em.helper(text, None)


# The BLAS library NumPy loaded, called from the loop (cblas ?gemm, row-major): the function's
# address is read from a constant array the runner fills, so the source (and the cache key)
# does not hold it. Results are then those of the host-driven loop's BLAS call.
GEMM_CALL = """\
static void {name}(const void* pa, const void* pb, void* po, const void* fns) {{
  typedef void (*gemm_t)(int, int, int, {bi}, {bi}, {bi}, {ct}, const {ct}*, {bi}, const {ct}*,
                         {bi}, {ct}, {ct}*, {bi});
  const gemm_t gemm = (gemm_t)((const long long*)fns)[{which}];
  gemm(101, {ta}, {tb}, {M}, {N}, {K}, ({ct})1, (const {ct}*)pa, {lda}, (const {ct}*)pb, {ldb},
       ({ct})0, ({ct}*)po, {N});
}}
"""
GEMM_DTYPES = {np.dtype("float32"): 0, np.dtype("float64"): 1}  # index in the address array


def _gemm(dtype: np.dtype, ta: bool, tb: bool, M: int, N: int, K: int, em: Emitter) -> str:
    if em.gemm_slot is None:
        em.gemm_slot = len(em.consts)
        em.consts.append(np.zeros(2, np.int64))
    text = GEMM_CALL.format(
        name=HELPER_NAME,
        bi=em.blas_int,
        ct=c_type(dtype),
        which=GEMM_DTYPES[dtype],
        ta=112 if ta else 111,  # CblasTrans / CblasNoTrans
        tb=112 if tb else 111,
        M=M,
        N=N,
        K=K,
        lda=M if ta else K,
        ldb=K if tb else N,
    )
    name = em.helper(text, None)
    em.extra[name] = [f"K{em.gemm_slot}"]
    return name
