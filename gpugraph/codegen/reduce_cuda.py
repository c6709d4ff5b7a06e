"""CUDA C row-reduction kernels: elementwise producers -> sum/max over each row -> consumers.

A row program (``RowProgram``) covers the softmax / log_softmax / logsumexp / layer_norm
forward patterns over the innermost, contiguous axis of a C-contiguous (rows, cols) float32
array: a sequence of reductions (``RowStage``: ``sum`` or ``max`` of a C expression of the
row element ``x``, the row length ``n`` and the earlier stages' results), then an expression
per element written back over the row, and/or one per row.

The kernel gives each row one block (a grid-stride loop over rows). The block size follows the
row length (``row_block``): one warp for short rows, up to 256 threads for long ones. Each
thread folds its strided columns in a fixed order, then the block combines with a warp
butterfly (``__shfl_xor_sync``, so every lane ends with the same bits: the combine is
commutative), one float per warp through shared memory and a second butterfly in every warp.
No atomics: the same inputs give the same bits on every run for a given launch. Accumulation
is in float32. Each stage re-reads the row from global memory (the multi-pass variant; keeping
the row in registers or shared memory is the persistent variant the issue asks for next).

This is the template layer only: the fusion pass does not build row programs from graphs yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedError
from .cuda import kernel_name

WARP = 32
MAX_ROW_BLOCK = 256
# One butterfly per warp, partials through shared memory, a butterfly over the partials in
# every warp (so every thread holds the row's result without a broadcast barrier), and a
# closing barrier because the next reduction reuses ``part``.
ROW_REDUCE_HELPER = """\
#ifndef GG_ROW_REDUCE_DEFINED
#define GG_ROW_REDUCE_DEFINED
struct GgSum {
  static __device__ __forceinline__ float identity() { return 0.0f; }
  static __device__ __forceinline__ float combine(float a, float b) { return a + b; }
};
struct GgMax {
  static __device__ __forceinline__ float identity() { return -__int_as_float(0x7f800000); }
  // NaN wins from either side, as in np.max (fmaxf would drop it)
  static __device__ __forceinline__ float combine(float a, float b) {
    return (a != a || a > b) ? a : b;
  }
};
// The block's reduction of every thread's v, returned to every thread. blockDim.x must be a
// multiple of 32 (row_block's sizes are).
template <class Op> __device__ __forceinline__ float gg_row_reduce(float v) {
  __shared__ float part[32];
  const unsigned lane = threadIdx.x % 32u, warp = threadIdx.x / 32u, warps = blockDim.x / 32u;
  for (int o = 16; o > 0; o >>= 1) v = Op::combine(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (warps == 1u) return v;
  if (lane == 0u) part[warp] = v;
  __syncthreads();
  v = lane < warps ? (float)part[lane] : Op::identity();
  for (int o = 16; o > 0; o >>= 1) v = Op::combine(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // the next reduction reuses part
  return v;
}
#endif
"""
# op -> the C struct with its identity and combine
REDUCERS: dict[str, str] = {"sum": "GgSum", "max": "GgMax"}
KERNEL_TEMPLATE = """\
extern "C" __global__ void {name}({params}) {{
  const float n = (float)cols;
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
    const float* __restrict__ xr = in + row * cols;
{stages}{elementwise}{per_row}  }}
}}
"""
STAGE_TEMPLATE = """\
    float {name};
    {{
      float acc = {op}::identity();
      for (long long c = threadIdx.x; c < cols; c += blockDim.x) {{
        const float x = xr[c];
        acc = {op}::combine(acc, ({expr}));
      }}
      {name} = gg_row_reduce<{op}>(acc);
    }}
"""
ELEMENTWISE_TEMPLATE = """\
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) {{
      const float x = xr[c];
      out[row * cols + c] = ({expr});
    }}
"""
PER_ROW_TEMPLATE = """\
    if (threadIdx.x == 0) row_out[row] = ({expr});
"""


@dataclass(frozen=True)
class RowStage:
    name: str  # C identifier of the result, for later stages and the outputs
    op: str  # a key of REDUCERS
    expr: str  # C float expression of x, n and earlier stage names


@dataclass(frozen=True)
class RowProgram:
    stages: tuple[RowStage, ...]
    elementwise: str | None = None  # out[row, c] = this, for every column
    per_row: str | None = None  # row_out[row] = this

    def __post_init__(self) -> None:
        if not self.stages:
            raise UnsupportedError("row program: at least one reduction stage is needed")
        if self.elementwise is None and self.per_row is None:
            raise UnsupportedError("row program: no output (elementwise or per_row)")
        seen = {"x", "n", "c", "row", "cols", "rows", "acc", "in", "out", "row_out", "xr"}
        for stage in self.stages:
            if stage.op not in REDUCERS:
                raise UnsupportedError(
                    f"row program: reduction {stage.op!r} is not one of {sorted(REDUCERS)}"
                )
            if not stage.name.isidentifier() or stage.name in seen:
                raise UnsupportedError(
                    f"row program: stage name {stage.name!r} is not a free C identifier"
                )
            seen.add(stage.name)


@dataclass(frozen=True)
class RowKernel:
    name: str
    source: str
    program: RowProgram

    def args(self, x, out=None, row_out=None) -> list:
        """The kernel's arguments for a (rows, cols) float32 input (NumPy or CuPy arrays)."""
        import numpy as np

        rows, cols = x.shape
        arrays = [x]
        if self.program.elementwise is not None:
            arrays.append(out)
        if self.program.per_row is not None:
            arrays.append(row_out)
        return [*arrays, np.int64(rows), np.int64(cols)]


def emit_row_kernel(program: RowProgram) -> RowKernel:
    """One kernel evaluating ``program`` over every row of a C-contiguous (rows, cols) float32
    input: parameters ``in``, then ``out`` (rows, cols) if the program has an elementwise output,
    ``row_out`` (rows,) if it has a per-row one, then ``rows`` and ``cols`` (long long)."""
    params = ["const float* __restrict__ in"]
    if program.elementwise is not None:
        params.append("float* __restrict__ out")
    if program.per_row is not None:
        params.append("float* __restrict__ row_out")
    params += ["long long rows", "long long cols"]
    stages = "".join(
        STAGE_TEMPLATE.format(name=s.name, op=REDUCERS[s.op], expr=s.expr) for s in program.stages
    )
    elementwise = (
        ELEMENTWISE_TEMPLATE.format(expr=program.elementwise) if program.elementwise else ""
    )
    per_row = PER_ROW_TEMPLATE.format(expr=program.per_row) if program.per_row else ""
    body = KERNEL_TEMPLATE.format(
        name="{name}",
        params=", ".join(params),
        stages=stages,
        elementwise=elementwise,
        per_row=per_row,
    )
    name = kernel_name(ROW_REDUCE_HELPER + body)
    return RowKernel(name, ROW_REDUCE_HELPER + body.replace("{name}", name, 1), program)


def row_block(cols: int) -> int:
    """Threads per row: one warp while a warp's 32 columns per thread cover the row, more
    (a multiple of 32, at most MAX_ROW_BLOCK) for longer rows so each thread folds <= ~32."""
    return min(MAX_ROW_BLOCK, WARP * max(1, -(-cols // (WARP * 32))))


def row_launch(rows: int, cols: int, sm_count: int, blocks_per_sm: int = 8) -> tuple[int, int]:
    """(grid, block) for ``rows`` rows of ``cols``: a block per row, grid-stride over rows."""
    return max(1, min(rows, sm_count * blocks_per_sm)), row_block(cols)
