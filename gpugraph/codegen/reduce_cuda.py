"""CUDA C row-reduction kernels: elementwise producers -> sum/max over each row -> consumers.

A row program (``RowProgram``) covers the softmax / log_softmax / logsumexp / layer_norm
forward patterns over the innermost, contiguous axis of a C-contiguous (rows, cols) float32 or
float16 array (float16 is loaded to float32, computed and accumulated in float32, and rounded
once at the store): a sequence of reductions (``RowStage``: ``sum`` or ``max`` of a C
expression of the row element ``x``, the row length ``n`` and the earlier stages' results),
then an expression per element written back over the row, and/or one per row.

The kernel gives each row one block (a grid-stride loop over rows). The block size follows the
row length (``row_block``): one warp for short rows, up to 256 threads for long ones. Each
thread folds its strided columns in a fixed order, then the block combines with a warp
butterfly (``__shfl_xor_sync``, so every lane ends with the same bits: the combine is
commutative), one float per warp through shared memory and a second butterfly in every warp.
No atomics: the same inputs give the same bits on every run for a given launch. Accumulation
is in float32.

Three variants. The multi-pass kernel (``emit_row_kernel(program)``) re-reads the row from
global memory for each stage and for the outputs: any row length. The persistent kernel
(``items=K``) loads each thread's K strided elements into registers once and runs every stage
and the outputs from them, so each input element is read once; the row must fit
(cols <= K * blockDim.x). The shared-memory kernel (``shared=True``) does the same with the row
in ``extern __shared__`` memory (4 * cols bytes at launch). ``emit_row_kernel_for`` picks by
row length: registers up to PERSISTENT_MAX_COLS, shared memory up to SHARED_MAX_COLS, else
multi-pass. All fold a thread's columns in the same order: for one block size, the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedError
from .cuda import kernel_name

WARP = 32
MAX_ROW_BLOCK = 256
MAX_PERSISTENT_BLOCK = 1024
# One butterfly per warp, partials through shared memory, a butterfly over the partials in
# every warp (so every thread holds the row's result without a broadcast barrier), and a
# closing barrier because the next reduction reuses ``part``.
ROW_REDUCE_HELPER = """\
#ifndef GG_ROW_REDUCE_DEFINED
#define GG_ROW_REDUCE_DEFINED
// A reduction's identity and combine in its value type A (float, or double for float64 rows)
template <class A> struct GgSum {
  static __device__ __forceinline__ A identity() { return A(0); }
  static __device__ __forceinline__ A combine(A a, A b) { return a + b; }
};
template <class A> struct GgMax {
  // float -inf (widened exactly for double)
  static __device__ __forceinline__ A identity() { return (A)(-__int_as_float(0x7f800000)); }
  // NaN wins from either side, as in np.max (fmaxf would drop it)
  static __device__ __forceinline__ A combine(A a, A b) { return (a != a || a > b) ? a : b; }
};
template <class A> struct GgMin {
  static __device__ __forceinline__ A identity() { return (A)__int_as_float(0x7f800000); }
  static __device__ __forceinline__ A combine(A a, A b) { return (a != a || a < b) ? a : b; }
};
// The block's reduction of every thread's v, returned to every thread. blockDim.x must be a
// multiple of 32 (row_block's sizes are). Each value type has its own partials array.
template <class Op, class A> __device__ __forceinline__ A gg_row_reduce(A v) {
  __shared__ A part[32];
  const unsigned lane = threadIdx.x % 32u, warp = threadIdx.x / 32u, warps = blockDim.x / 32u;
  for (int o = 16; o > 0; o >>= 1) v = Op::combine(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (warps == 1u) return v;
  if (lane == 0u) part[warp] = v;
  __syncthreads();
  v = lane < warps ? (A)part[lane] : Op::identity();
  for (int o = 16; o > 0; o >>= 1) v = Op::combine(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // the next reduction reuses part
  return v;
}
#endif
"""
# prod's struct, emitted only where a kernel multiplies (the kernels without one keep their
# source, so their cached builds stay valid). NaN and inf pass through a * b as in
# np.prod; a product over nothing is 1.
PROD_HELPER = """\
#ifndef GG_PROD_DEFINED
#define GG_PROD_DEFINED
template <class A> struct GgProd {
  static __device__ __forceinline__ A identity() { return A(1); }
  static __device__ __forceinline__ A combine(A a, A b) { return a * b; }
};
#endif
"""
# op -> the C struct template with its identity and combine (instantiated per value type)
REDUCER_TEMPLATES: dict[str, str] = {
    "sum": "GgSum",
    "max": "GgMax",
    "min": "GgMin",
    "prod": "GgProd",
}


def reducer_helpers(ops) -> str:
    """The helper source for kernels folding ``ops``: the block reduce, and prod's struct."""
    return (PROD_HELPER if "prod" in ops else "") + ROW_REDUCE_HELPER


# the float instantiations the RowProgram kernels here use
REDUCERS: dict[str, str] = {op: f"{t}<float>" for op, t in REDUCER_TEMPLATES.items()}
KERNEL_TEMPLATE = """\
extern "C" __global__ void {name}({params}) {{
  const float n = (float)cols;
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
    const {T}* __restrict__ xr = in + row * cols;
{stages}{elementwise}{per_row}  }}
}}
"""
STAGE_TEMPLATE = """\
    float {name};
    {{
      float acc = {op}::identity();
      for (long long c = threadIdx.x; c < cols; c += blockDim.x) {{
        const float x = {load};
        acc = {op}::combine(acc, ({expr}));
      }}
      {name} = gg_row_reduce<{op}>(acc);
    }}
"""
ELEMENTWISE_TEMPLATE = """\
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) {{
      const float x = {load};
      out[row * cols + c] = {store};
    }}
"""
PER_ROW_TEMPLATE = """\
    if (threadIdx.x == 0) row_out[row] = {store};
"""
# The persistent variant: the row lives in v[] (registers once unrolled) between the passes.
PERSISTENT_KERNEL_TEMPLATE = """\
extern "C" __global__ void {name}({params}) {{
  const float n = (float)cols;
  if (cols > (long long){items} * blockDim.x) __trap();  // the row must fit: launch() sizes it
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
    const {T}* __restrict__ xr = in + row * cols;
    float v[{items}];
#pragma unroll
    for (int k = 0; k < {items}; ++k) {{
      const long long c = threadIdx.x + (long long)k * blockDim.x;
      v[k] = c < cols ? {load} : 0.0f;
    }}
{stages}{elementwise}{per_row}  }}
}}
"""
PERSISTENT_LOOP = """\
#pragma unroll
      for (int k = 0; k < {items}; ++k) {{
        const long long c = threadIdx.x + (long long)k * blockDim.x;
        if (c < cols) {{
          const float x = v[k];
          {body}
        }}
      }}
"""
PERSISTENT_STAGE_TEMPLATE = """\
    float {name};
    {{
      float acc = {op}::identity();
{loop}      {name} = gg_row_reduce<{op}>(acc);
    }}
"""
# dtype -> (C type, load of xr[c] as float, store of a float expression {v})
ROW_TYPES: dict[str, tuple[str, str, str]] = {
    "float32": ("float", "xr[c]", "({v})"),
    "float16": ("__half", "__half2float(xr[c])", "__float2half({v})"),
}
PERSISTENT_ITEMS = 8  # values per thread row_plan aims at
PERSISTENT_MAX_COLS = 1024 * PERSISTENT_ITEMS  # longer rows: shared memory, else multi-pass
# The shared-memory variant: the row (as float) in dynamic shared memory, within the 48 KiB a
# launch gets without cudaFuncSetAttribute. Each thread reads back only the columns it loaded,
# so no barrier guards the buffer.
SHARED_MAX_COLS = 48 * 1024 // 4
SHARED_KERNEL_TEMPLATE = """\
extern "C" __global__ void {name}({params}) {{
  extern __shared__ float gg_row[];  // cols floats: launch with shared_mem(cols) bytes
  const float n = (float)cols;
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
    const {T}* __restrict__ xr = in + row * cols;
    for (long long c = threadIdx.x; c < cols; c += blockDim.x) gg_row[c] = {load};
{stages}{elementwise}{per_row}  }}
}}
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
        # the kernels' own names; a stage may not shadow them
        seen = {"x", "n", "c", "row", "cols", "rows", "acc", "in", "out", "row_out", "xr"}
        seen |= {"v", "k", "gg_row"}
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
    dtype: str = "float32"
    items: int | None = None  # the persistent variant's values per thread; None: multi-pass
    shared: bool = False  # the row in dynamic shared memory (shared_mem(cols) bytes per block)

    def shared_mem(self, cols: int) -> int:
        """Bytes of dynamic shared memory a launch for rows of ``cols`` needs."""
        if self.shared and cols > SHARED_MAX_COLS:
            raise UnsupportedError(
                f"row reduction: a row of {cols} does not fit {4 * SHARED_MAX_COLS} bytes of "
                "shared memory"
            )
        return 4 * cols if self.shared else 0

    def block(self, cols: int) -> int:
        """Threads per row for rows of ``cols``: row_block's for the multi-pass kernel, enough
        threads to hold the row for the persistent one (UnsupportedError if it cannot)."""
        if self.items is None:
            return row_block(cols)
        block = persistent_block(cols, self.items)
        if block > MAX_PERSISTENT_BLOCK:
            raise UnsupportedError(
                f"row reduction: a row of {cols} does not fit {self.items} values per thread"
            )
        return block

    def launch(
        self, rows: int, cols: int, sm_count: int, blocks_per_sm: int = 8
    ) -> tuple[int, int]:
        """(grid, block): a block per row, grid-stride over rows."""
        return max(1, min(rows, sm_count * blocks_per_sm)), self.block(cols)

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


def emit_row_kernel(
    program: RowProgram, dtype: str = "float32", items: int | None = None, shared: bool = False
) -> RowKernel:
    """One kernel evaluating ``program`` over every row of a C-contiguous (rows, cols) input of
    ``dtype`` (float32 or float16): parameters ``in``, then ``out`` (rows, cols) if the program
    has an elementwise output, ``row_out`` (rows,) if it has a per-row one (both of ``dtype``),
    then ``rows`` and ``cols`` (long long). ``items``: the persistent variant holding that many
    values per thread (None: the multi-pass kernel); ``shared``: the row held in dynamic shared
    memory instead (launch with ``shared_mem(cols)`` bytes)."""
    if shared and items is not None:
        raise UnsupportedError("row reduction: the row is held in registers or shared memory")
    if dtype not in ROW_TYPES:
        raise UnsupportedError(f"row reduction: dtype {dtype} is not one of {sorted(ROW_TYPES)}")
    if items is not None and not 1 <= items <= 64:
        raise UnsupportedError(f"row reduction: {items} values per thread is not in [1, 64]")
    t, load, store = ROW_TYPES[dtype]
    params = [f"const {t}* __restrict__ in"]
    if program.elementwise is not None:
        params.append(f"{t}* __restrict__ out")
    if program.per_row is not None:
        params.append(f"{t}* __restrict__ row_out")
    params += ["long long rows", "long long cols"]
    if items is None:
        # the passes read the row back from shared memory (the shared variant) or global memory
        again = "gg_row[c]" if shared else load
        stages = "".join(
            STAGE_TEMPLATE.format(name=s.name, op=REDUCERS[s.op], expr=s.expr, load=again)
            for s in program.stages
        )
        elementwise = (
            ELEMENTWISE_TEMPLATE.format(load=again, store=store.format(v=program.elementwise))
            if program.elementwise
            else ""
        )
        template = SHARED_KERNEL_TEMPLATE if shared else KERNEL_TEMPLATE
    else:
        stages = "".join(
            PERSISTENT_STAGE_TEMPLATE.format(
                name=s.name,
                op=REDUCERS[s.op],
                loop=PERSISTENT_LOOP.format(
                    items=items, body=f"acc = {REDUCERS[s.op]}::combine(acc, ({s.expr}));"
                ),
            )
            for s in program.stages
        )
        elementwise = (
            "    {\n"
            + PERSISTENT_LOOP.format(
                items=items,
                body=f"out[row * cols + c] = {store.format(v=program.elementwise)};",
            )
            + "    }\n"
            if program.elementwise
            else ""
        )
        template = PERSISTENT_KERNEL_TEMPLATE
    per_row = (
        PER_ROW_TEMPLATE.format(store=store.format(v=program.per_row)) if program.per_row else ""
    )
    body = template.format(
        name="{name}",
        params=", ".join(params),
        T=t,
        items=items,
        load=load,
        stages=stages,
        elementwise=elementwise,
        per_row=per_row,
    )
    head = ("#include <cuda_fp16.h>\n" if dtype == "float16" else "") + reducer_helpers(
        [s.op for s in program.stages]
    )
    name = kernel_name(head + body)
    return RowKernel(name, head + body.replace("{name}", name, 1), program, dtype, items, shared)


def row_plan(cols: int) -> int | None:
    """Values per thread of the persistent kernel for rows of ``cols`` (PERSISTENT_ITEMS, or
    fewer where one warp holds the row), or None when the row is too long to hold."""
    if cols > PERSISTENT_MAX_COLS:
        return None
    return max(1, min(PERSISTENT_ITEMS, -(-cols // WARP)))


def emit_row_kernel_for(program: RowProgram, cols: int, dtype: str = "float32") -> RowKernel:
    """The kernel for rows of ``cols``, each input element read once where the row fits:
    in registers (row_plan) up to PERSISTENT_MAX_COLS, in shared memory up to SHARED_MAX_COLS,
    else the multi-pass kernel. Launch it with ``launch(rows, cols, sm_count)`` and
    ``shared_mem(cols)`` bytes of dynamic shared memory."""
    items = row_plan(cols)
    return emit_row_kernel(program, dtype, items, items is None and cols <= SHARED_MAX_COLS)


def persistent_block(cols: int, items: int) -> int:
    """The fewest threads (a multiple of 32) holding a row of ``cols`` at ``items`` each."""
    return WARP * max(1, -(-cols // (WARP * items)))


def row_block(cols: int) -> int:
    """Threads per row: one warp while a warp's 32 columns per thread cover the row, more
    (a multiple of 32, at most MAX_ROW_BLOCK) for longer rows so each thread folds <= ~32."""
    return min(MAX_ROW_BLOCK, WARP * max(1, -(-cols // (WARP * 32))))


def row_launch(rows: int, cols: int, sm_count: int, blocks_per_sm: int = 8) -> tuple[int, int]:
    """(grid, block) for ``rows`` rows of ``cols``: a block per row, grid-stride over rows."""
    return max(1, min(rows, sm_count * blocks_per_sm)), row_block(cols)
