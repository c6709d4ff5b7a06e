"""CUDA C column and full reductions: a deterministic two-stage grid reduction.

A ``GridProgram`` is one reduction (``sum``, ``max``, ``min`` or ``prod``) of a prologue
expression of the element ``x``, followed by an epilogue expression of the result ``r`` and the
count reduced ``n`` (``r / n`` is a mean). Two layouts of a C-contiguous input:

- ``full``: all ``n`` elements to one value. Stage 1 gives each of ``parts`` blocks a
  grid-stride share of the elements; every thread folds its share in index order, the block
  combines with a warp butterfly and one value per warp through shared memory, and thread 0
  writes the block's partial to ``work[block]``. Stage 2 is one block folding the partials the
  same way and writing ``epilogue(r)``.
- ``column``: (outer, rows, cols) to (outer, cols), reducing the middle axis (a column sum of a
  matrix is outer == 1). Stage 1 blocks are 32 columns wide (coalesced rows) by ``COL_LANES``
  threads tall; block (tile, chunk) folds a chunk of ``chunk_rows`` rows, the lanes of a column
  combine through shared memory in lane order, and the result goes to
  ``work[outer][chunk][col]``. Stage 2 has one thread per output folding its chunks in order.

Together with the row template this covers a reduction over any run of adjacent axes of a
C-contiguous array: merge the axes before the run into ``outer``, the run into ``rows`` and the
axes after it into ``cols`` (no trailing axes: a row reduction; nothing kept: ``full``).

No atomics: the partial counts and block shapes are functions of the input shape only
(``grid_plan``), so the same input gives the same bits on every run and every device. Float16
and float32 inputs accumulate in float32, float64 in float64; ``max``/``min`` pass NaN like
``np.max``/``np.min``. A reduction over nothing gives ``epilogue(identity)`` (0 for sum, 1 for
prod, -inf for max, and NaN for a mean's 0 / 0, as NumPy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UnsupportedError
from .cuda import kernel_name
from .reduce_cuda import REDUCER_TEMPLATES, reducer_helpers
from .reduce_grid_text import INDEX, LAYOUTS, TYPES

WARP = 32
FULL_BLOCK = 256  # stage-1 threads per block for full reductions
FULL_ITEMS = 8  # elements per thread before another partial is worth it
MAX_PARTS = 1024  # stage-1 blocks of a full reduction (the final block folds them)
COL_LANES = 8  # threads per column in a column block (32 columns x 8 lanes = 256 threads)
COL_ROWS_PER_LANE = 8
MAX_COL_BLOCKS = 2048  # stage-1 blocks of a column reduction, beyond one chunk per tile
# op -> the reduce_cuda.ROW_REDUCE_HELPER struct template (identity and combine; max and min
# pass NaN like np.max / np.min), instantiated in the accumulation type. Its gg_row_reduce
# (warp butterflies, one value per warp through shared memory, a closing barrier so the next
# call may reuse the partials) is the block combine here too: blockDim.x is a multiple of 32.
REDUCERS: dict[str, str] = REDUCER_TEMPLATES


@dataclass(frozen=True)
class GridProgram:
    op: str  # a key of REDUCERS
    prologue: str = "x"  # C expression of the element x (in the accumulation type)
    epilogue: str = "r"  # C expression of the result r and the count n (accumulation type)
    dtype: str = "float32"  # input element type, a key of TYPES
    out_dtype: str | None = None  # output element type; None: the input's
    # several inputs: (dtype, kind: a key of INDEX["column"]) each, named x0, x1, ... in the
    # prologue; None: the one full input x of ``dtype``
    inputs: tuple[tuple[str, str], ...] | None = None
    # more reductions over the same inputs in the same pass: (op, prologue, epilogue,
    # output dtype) each; reduction m writes out{m} (the first is out0)
    also: tuple[tuple[str, str, str, str], ...] = ()

    def __post_init__(self) -> None:
        for op in (self.op, *(r[0] for r in self.also)):
            if op not in REDUCERS:
                raise UnsupportedError(f"grid reduction: {op!r} is not one of {sorted(REDUCERS)}")
        for _, kind in self.inputs or ():
            if kind not in INDEX["column"]:
                raise UnsupportedError(
                    f"grid reduction: input kind {kind!r} is not one of {sorted(INDEX['column'])}"
                )
        ins = [dt for dt, _ in self.inputs or ()]
        for what, dt in (
            ("input", self.dtype),
            ("output", self.out_type),
            *(("input", d) for d in ins),
            *(("output", r[3]) for r in self.also),
        ):
            if dt not in TYPES:
                raise UnsupportedError(
                    f"grid reduction: {what} dtype {dt} is not one of {sorted(TYPES)}"
                )

    @property
    def out_type(self) -> str:
        return self.out_dtype or self.dtype

    @property
    def reductions(self) -> tuple[tuple[str, str, str, str], ...]:
        """(op, prologue, epilogue, output dtype) of each reduction, the first one first."""
        return ((self.op, self.prologue, self.epilogue, self.out_type), *self.also)

    @property
    def in_types(self) -> tuple[tuple[str, str], ...]:
        return self.inputs or ((self.dtype, "full"),)

    @property
    def acc_dtype(self) -> np.dtype:
        wide = any(TYPES[dt][1] == "double" for dt, _ in self.in_types)
        return np.dtype(np.float64 if wide else np.float32)

    @property
    def broadcasts(self) -> bool:
        """Some input is one per row or per column: a full layout then needs ``cols``."""
        return any(kind in ("row", "col") for _, kind in self.in_types)

    @classmethod
    def mean(cls, prologue: str = "x", dtype: str = "float32", **kw) -> GridProgram:
        """The mean of ``prologue``: a sum scaled by 1 / n in the epilogue."""
        return cls("sum", prologue, "r / n", dtype, **kw)


@dataclass(frozen=True)
class GridLaunch:
    """One kernel launch: ``kernel`` (a name in the source), grid, block and arguments."""

    kernel: str
    grid: tuple[int, ...]
    block: tuple[int, ...]
    args: tuple


@dataclass(frozen=True)
class GridPlan:
    """The launch shape for one input shape: a function of the shape only (determinism)."""

    layout: str
    outer: int
    rows: int  # elements reduced per output (the n of the epilogue)
    cols: int
    parts: int  # stage-1 partials per output (chunks of a column reduction)
    chunk_rows: int = 0
    final_block: int = WARP
    out_shape: tuple[int, ...] = field(default=())

    @property
    def work_size(self) -> int:
        return self.outer * self.parts * self.cols


def grid_plan(layout: str, shape: tuple[int, ...]) -> GridPlan:
    """How to launch a ``layout`` reduction of a C-contiguous input of ``shape``: ``full``
    reduces every element; ``column`` reduces axis -2 of (rows, cols) or (outer, rows, cols)."""
    if layout == "full":
        n = int(np.prod(shape, dtype=np.int64))
        parts = max(1, min(MAX_PARTS, -(-n // (FULL_BLOCK * FULL_ITEMS))))
        final = min(FULL_BLOCK, WARP * -(-parts // WARP))
        return GridPlan("full", 1, n, 1, parts, final_block=final, out_shape=())
    if layout != "column":
        raise UnsupportedError(f"grid reduction: layout {layout!r} is not 'full' or 'column'")
    if len(shape) not in (2, 3):
        raise UnsupportedError(f"column reduction: input shape {shape} is not 2-d or 3-d")
    outer, rows, cols = (1, *shape) if len(shape) == 2 else shape
    tiles = max(1, outer * -(-cols // WARP))
    want = max(1, -(-rows // (COL_LANES * COL_ROWS_PER_LANE)))
    chunks = max(1, min(want, MAX_COL_BLOCKS // tiles))
    chunk_rows = max(1, -(-rows // chunks))
    chunks = max(1, -(-rows // chunk_rows))  # no empty chunk
    out_shape = (cols,) if len(shape) == 2 else (outer, cols)
    return GridPlan("column", outer, rows, cols, chunks, chunk_rows, FULL_BLOCK, out_shape)


@dataclass(frozen=True)
class GridKernels:
    """The two kernels (``{name}_p``: partials, ``{name}_f``: final) of one program and layout,
    in one source."""

    name: str
    source: str
    program: GridProgram
    layout: str

    def plan(self, shape: tuple[int, ...]) -> GridPlan:
        return grid_plan(self.layout, tuple(shape))

    def workspace(self, shape: tuple[int, ...]) -> tuple[int, np.dtype]:
        """Elements and dtype of the workspace (the partials) for an input of ``shape``."""
        size = max(1, self.plan(shape).work_size) * len(self.program.reductions)
        return size, self.program.acc_dtype

    def launches(self, x, work, out, shape: tuple[int, ...] | None = None) -> list[GridLaunch]:
        """The launches reducing ``x`` (an array, or the program's inputs in order: each
        C-contiguous, laid out as its kind says against ``shape``, the reduced input's shape,
        which defaults to the first input's) into ``out`` (an array, or one per reduction)
        through ``work`` (workspace()): two, or none when nothing is written."""
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        outs = tuple(out) if isinstance(out, (list, tuple)) else (out,)
        shape = tuple(xs[0].shape) if shape is None else tuple(shape)
        p = self.plan(shape)
        self._check(xs, work, outs, p)
        i64 = np.int64
        if p.layout == "full":
            cols = (i64(shape[-1] if shape else 1),) if self.program.broadcasts else ()
            stage1 = (*xs, work, i64(p.rows), *cols)
            return [
                GridLaunch(f"{self.name}_p", (p.parts,), (FULL_BLOCK,), stage1),
                GridLaunch(
                    f"{self.name}_f",
                    (1,),
                    (p.final_block,),
                    (work, *outs, i64(p.parts), i64(p.rows)),
                ),
            ]
        if p.outer * p.cols == 0:
            return []  # nothing to write (and stage 1 would index an empty input)
        tiles = -(-p.cols // WARP)
        stage1 = (*xs, work, i64(p.rows), i64(p.cols), i64(p.chunk_rows))
        outputs = p.outer * p.cols
        final_grid = min(-(-outputs // p.final_block), 1024)
        return [
            GridLaunch(f"{self.name}_p", (tiles * p.outer, p.parts), (WARP, COL_LANES), stage1),
            GridLaunch(
                f"{self.name}_f",
                (final_grid,),
                (p.final_block,),
                (work, *outs, i64(p.outer), i64(p.cols), i64(p.parts), i64(p.rows)),
            ),
        ]

    def _check(self, xs: list, work, outs: tuple, p: GridPlan) -> None:
        """The arrays must be what the kernels were generated for: wrong ones would be read
        as other types or past their ends on a GPU."""
        types, reductions = self.program.in_types, self.program.reductions
        for what, got, need in (("input", xs, types), ("output", outs, reductions)):
            if len(got) != len(need):
                raise UnsupportedError(
                    f"grid reduction {self.name}: {len(got)} {what}(s), the kernels take "
                    f"{len(need)}"
                )
        sizes = {"full": p.outer * p.rows * p.cols, "row": p.outer * p.rows}
        sizes.update(col=p.outer * p.cols, scalar=1)
        if p.layout == "full":  # (n / cols, cols): the launch's cols, not the plan's 1
            sizes.update(row=None, col=None)  # checked against the shape by the caller
        want = (
            [
                ("input" if len(xs) == 1 else f"input {j}", a, np.dtype(dt), sizes[kind] or None)
                for j, (a, (dt, kind)) in enumerate(zip(xs, types))
            ]
            + [
                ("workspace", work, self.program.acc_dtype, max(1, p.work_size) * len(outs)),
            ]
            + [
                (
                    "output" if len(outs) == 1 else f"output {m}",
                    out,
                    np.dtype(r[3]),
                    p.outer * p.cols,
                )
                for m, (out, r) in enumerate(zip(outs, reductions))
            ]
        )
        for what, a, dtype, size in want:
            if a.dtype != dtype or not a.flags.c_contiguous or (size and a.size < size):
                raise UnsupportedError(
                    f"grid reduction {self.name}: {what} is {a.dtype} {a.shape}"
                    f"{'' if a.flags.c_contiguous else ' (not C-contiguous)'}; the kernels"
                    f" need C-contiguous {dtype}"
                    + (f" of at least {size} elements" if size else "")
                )


def emit_grid_kernels(program: GridProgram, layout: str) -> GridKernels:
    """The source of ``program``'s two-stage reduction for ``layout`` ("full" or "column")."""
    if layout not in LAYOUTS:
        raise UnsupportedError(f"grid reduction: layout {layout!r} is not one of {sorted(LAYOUTS)}")
    acc = "double" if program.acc_dtype == np.float64 else "float"
    types = program.in_types
    one = program.inputs is None  # the one input "in", element "x"
    params, loads = [], []
    pad = " " * (4 if layout == "full" else 6)
    for j, (dt, kind) in enumerate(types):
        t_in, _, load, _ = TYPES[dt]
        arr, elem = ("in", "x") if one else (f"in{j}", f"x{j}")
        params.append(f"const {t_in}* __restrict__ {arr}")
        value = load.format(v=f"{arr}[{INDEX[layout][kind]}]")
        loads.append(f"{pad}const {acc} {elem} = {value};\n")
    template, parts = LAYOUTS[layout]
    per = {key: [] for key in parts}
    outs = []
    for m, (op, prologue, epilogue, out_dtype) in enumerate(program.reductions):
        t_out, _, _, store = TYPES[out_dtype]
        outs.append(f"{t_out}* __restrict__ out{m}")
        fill = dict(A=acc, m=m, op=REDUCERS[op], lanes=COL_LANES, prologue=prologue)
        fill.update(store_out=store.format(v=epilogue))
        for key, text in parts.items():
            per[key].append(text.format(**fill))
    out_types = [TYPES[r[3]][0] for r in program.reductions]
    half = "__half" in (*out_types, *(TYPES[dt][0] for dt, _ in types))
    body = template.format(
        name="{name}",
        A=acc,
        lanes=COL_LANES,
        params=", ".join(params),
        outs=", ".join(outs),
        extra_params=", long long cols" if layout == "full" and program.broadcasts else "",
        loads="".join(loads),
        **{key: "".join(lines) for key, lines in per.items()},
    )
    helper = reducer_helpers([r[0] for r in program.reductions])
    text = ("#include <cuda_fp16.h>\n" if half else "") + helper + body
    name = kernel_name(text)
    return GridKernels(name, text.replace("{name}", name), program, layout)
