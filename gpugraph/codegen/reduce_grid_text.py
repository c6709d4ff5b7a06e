"""The C text of the grid reduction kernels (codegen/reduce_grid.py): per layout, the kernel
pair's template and the parts rendered once per reduction of a program, and how each input
kind is indexed. reduce_grid fills them; the launch shapes that must agree with them
(``COL_LANES``, the block sizes) live there too and are passed in as ``{lanes}``."""

from __future__ import annotations

# dtype -> (C type, accumulation C type, load expression of {v}, store expression of {v})
TYPES: dict[str, tuple[str, str, str, str]] = {
    "float16": ("__half", "float", "__half2float({v})", "__float2half((float)({v}))"),
    "float32": ("float", "float", "({v})", "(float)({v})"),
    "float64": ("double", "double", "({v})", "(double)({v})"),
}
# Templates of one program: {init}, {folds} ... are rendered per reduction m (acc{m}, out{m}):
# a program of several reductions (``GridProgram.also``) folds them all in one pass over its
# inputs. The workspace holds reduction m's partials in slab m.
FULL_TEMPLATE = """\
extern "C" __global__ void {name}_p({params}, {A}* __restrict__ work,
                                    long long n{extra_params}) {{
{init}  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {{
{loads}{folds}  }}
{block_combines}  if (threadIdx.x == 0) {{
{partials}  }}
}}
extern "C" __global__ void {name}_f(const {A}* __restrict__ work, {outs},
                                    long long parts, long long count) {{
  const {A} n = ({A})count;
{finals}}}
"""
FULL_PARTS = {
    "init": "  {A} acc{m} = {op}<{A}>::identity();\n",
    "folds": "    acc{m} = {op}<{A}>::combine(acc{m}, ({A})({prologue}));\n",
    "block_combines": "  acc{m} = gg_row_reduce<{op}<{A}>>(acc{m});\n",
    "partials": "    work[{m} * gridDim.x + blockIdx.x] = acc{m};\n",
    "finals": """\
  {{
    {A} acc = {op}<{A}>::identity();
    for (long long i = threadIdx.x; i < parts; i += blockDim.x)
      acc = {op}<{A}>::combine(acc, work[{m} * parts + i]);
    acc = gg_row_reduce<{op}<{A}>>(acc);
    if (threadIdx.x == 0) {{
      const {A} r = acc;
      out{m}[0] = {store_out};
    }}
  }}
""",
}
COLUMN_TEMPLATE = """\
// grid (tiles * outer, chunks), block (32, {lanes}): block (tile, chunk) folds rows
// [chunk * chunk_rows, +chunk_rows) of 32 columns; lane y of a column takes every {lanes}th row.
extern "C" __global__ void {name}_p({params}, {A}* __restrict__ work,
                                    long long rows, long long cols, long long chunk_rows) {{
{shared}  if (cols == 0) return;  // the one idle block of an empty launch
  const long long tiles = (cols + 31) / 32, o = blockIdx.x / tiles;
  const long long col = (blockIdx.x % tiles) * 32 + threadIdx.x;
  const long long r0 = (long long)blockIdx.y * chunk_rows;
  const long long r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  const long long slab = (long long)(gridDim.x / tiles) * gridDim.y * cols;
{init}  if (col < cols) {{
    for (long long r = r0 + threadIdx.y; r < r1; r += {lanes}) {{
{loads}{folds}    }}
  }}
{lanes_store}  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {{
{lane_folds}  }}
}}
extern "C" __global__ void {name}_f(const {A}* __restrict__ work, {outs},
                                    long long outer, long long cols, long long chunks,
                                    long long count) {{
  const long long total = outer * cols, stride = (long long)gridDim.x * blockDim.x;
  const {A} n = ({A})count;
  for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < total; j += stride) {{
    const long long o = j / cols, col = j % cols;
{finals}  }}
}}
"""
COLUMN_PARTS = {
    "shared": "  __shared__ {A} gg_lanes{m}[32 * {lanes}];\n",
    "init": "  {A} acc{m} = {op}<{A}>::identity();\n",
    "folds": "      acc{m} = {op}<{A}>::combine(acc{m}, ({A})({prologue}));\n",
    "lanes_store": "  gg_lanes{m}[threadIdx.y * 32 + threadIdx.x] = acc{m};\n",
    "lane_folds": """\
    for (int y = 1; y < {lanes}; ++y)
      acc{m} = {op}<{A}>::combine(acc{m}, gg_lanes{m}[y * 32 + threadIdx.x]);
    work[{m} * slab + (o * gridDim.y + blockIdx.y) * cols + col] = acc{m};
""",
    "finals": """\
    {{
      {A} acc = {op}<{A}>::identity();
      for (long long k = 0; k < chunks; ++k)
        acc = {op}<{A}>::combine(acc, work[{m} * total * chunks + (o * chunks + k) * cols + col]);
      const {A} r = acc;
      out{m}[j] = {store_out};
    }}
""",
}
LAYOUTS = {"full": (FULL_TEMPLATE, FULL_PARTS), "column": (COLUMN_TEMPLATE, COLUMN_PARTS)}
# how input j is laid out against the reduced input: "full" (its shape), "row" (one value per
# row of the (rows, cols) view: broadcast along the kept axes), "col" (one per column:
# broadcast along the reduced axes) or "scalar"; -> its element index per layout (a "full"
# layout views its input as (n / cols, cols) for this, cols being the last axis)
INDEX: dict[str, dict[str, str]] = {
    "full": {"full": "i", "row": "i / cols", "col": "i % cols", "scalar": "0"},
    "column": {
        "full": "(o * rows + r) * cols + col",
        "row": "o * rows + r",
        "col": "o * cols + col",
        "scalar": "0",
    },
}
