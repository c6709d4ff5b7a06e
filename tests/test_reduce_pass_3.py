"""Third round of reduction fusion: grid kernels for bodies reading several arrays (a per-row,
per-column or scalar input beside full-shape ones), and a layer norm's dw / db column sums
recomputing their operand from the row group's per-row values (passes/fuse_reduce_grid.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from cupy_emulated import EmulatedCupy
from kernel_helpers import check_nvrtc, requires_emulator, requires_nvrtc
from test_reduce_pass import fused_reduce_inputs
from test_reduce_pass_2 import _grid_groups

import gpugraph as gg

F32 = np.float32


def _data(shape, seed=0, edges=False):
    r = np.random.default_rng(seed)
    a = r.uniform(-2, 2, shape).astype(F32)
    if edges and a.size > 3:
        flat = a.reshape(-1)
        flat[0], flat[a.size // 2], flat[-1] = np.nan, np.inf, -np.inf
    return a


# name -> fn of (x, y, per_row, per_col): bodies reading two full arrays and broadcast ones
MULTI = {
    "column_dw_like": lambda x, y, pr, pc: gg.sum(x * y * pc, axis=0),
    "column_xhat": lambda x, y, pr, pc: gg.sum(y * ((x - pr) * (pr + 1.0)), axis=0),
    "column_max": lambda x, y, pr, pc: gg.max(x - y * pr, axis=0),
    "full_mean": lambda x, y, pr, pc: gg.mean(x * y - pc + pr),
}
EDGE_ROWS = (0, 1, 31, 33, 257, 1025, 20000)


def _run_cupy(node, args, monkeypatch):
    from gpugraph.ops import fused, fused_grid_reduce

    monkeypatch.setitem(sys.modules, "cupy", EmulatedCupy())
    fused._raw_kernel.cache_clear()
    try:
        out = np.full(node.outputs[0].shape, np.nan, node.outputs[0].dtype)
        fused_grid_reduce._prepare_cupy(node, None)(list(args), [out])
    finally:
        fused._raw_kernel.cache_clear()
    return out


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("rows", EDGE_ROWS)
def test_multi_array_grid_kernels_match_numpy_at_edge_sizes(rows, monkeypatch):
    """Each body reads x, y (full), a per-row and a per-column array: one two-stage kernel pair
    (NVRTC 80/90), on the emulator equal to the unfused graph, NaN and +-inf included."""
    cols = 3 if rows == 20000 else 33  # 20,000 rows: many chunks, a quick emulation
    shape = (rows, cols)
    args = (_data(shape, 1, True), _data(shape, 2), _data((rows, 1), 3), _data((cols,), 4))
    for name, fn in MULTI.items():
        if rows == 0 and "max" in name:
            continue  # a max over nothing raises in NumPy, fused or not
        c = gg.jit(fn).lower(*args)
        if rows == 1 and name.startswith("column"):  # over one row: simplified away
            assert not _grid_groups(c) and not any(n.op in ("sum", "max") for n in c.graph.nodes)
            continue
        (node,) = _grid_groups(c)
        assert "cuda_refusal" not in node.attrs, node.attrs.get("cuda_refusal")
        assert len(node.inputs) >= 3, name
        check_nvrtc(node.attrs["cuda_source"], f"{node.attrs['kernel_name']}.cu")
        ((_, ins),) = fused_reduce_inputs(c, args, ("fused_grid_reduce",))
        got = _run_cupy(node, ins, monkeypatch)
        with np.errstate(all="ignore"):
            want = np.asarray(gg.jit(fn, fuse=False)(*args))
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-4, equal_nan=True, err_msg=name)


def test_an_input_broadcast_otherwise_is_refused_with_a_reason():
    from gpugraph.codegen.reduce_graph_grid import input_kind

    # (rows, cols) = (4, 5 * 3): reduced over axis 0
    assert input_kind((4, 1, 3), (4, 5, 3), 0, 1) is None  # per row and per column at once
    assert input_kind((5, 3), (4, 5, 3), 0, 1) == "col"
    assert input_kind((4, 1, 1), (4, 5, 3), 0, 1) == "row"
    assert input_kind((), (4, 5, 3), 0, 1) == "scalar"
    # (outer, rows, cols) = (4, 5, 3): reduced over axis 1
    assert input_kind((4, 1, 3), (4, 5, 3), 1, 2) == "col"
    assert input_kind((4, 5, 1), (4, 5, 3), 1, 2) == "row"
    assert input_kind((3,), (4, 5, 3), 1, 2) is None  # one per column of every outer: no kind
    x, odd = _data((4, 5, 3)), _data((4, 1, 3), 1)
    c = gg.jit(lambda x, a: gg.sum(x * a, axis=0)).lower(x, odd)
    (node,) = _grid_groups(c)
    assert "neither per row nor per column" in node.attrs["cuda_refusal"]
    np.testing.assert_allclose(c(x, odd), (x * odd).sum(axis=0), rtol=2e-5, atol=2e-5)


# ---- layer norm's dw / db: recomputed from the row group's per-row values ------------------
def _ln_grad(x, w, b, dy):
    return gg.grad(lambda x, w, b: gg.sum(gg.layer_norm(x, w, b) * dy), argnums=(0, 1, 2))(x, w, b)


def _rms_grad(x, w, b, dy):
    return gg.grad(lambda x, w: gg.sum(gg.rms_norm(x, w) * dy), argnums=(0, 1))(x, w)


@pytest.mark.parametrize("shape", [(6, 37), (300, 40), (0, 5), (1, 7)])
@pytest.mark.parametrize("fn", [_ln_grad, _rms_grad])
def test_norm_backward_is_one_row_group_and_one_grid_group(fn, shape, monkeypatch):
    """The row group hands out dx and the per-row mean / rstd (no full-size dy * xhat); one
    grid group recomputes xhat from them and folds dw (and db) in one pass over x and dy."""
    from gpugraph.ops import fused_grid_reduce

    monkeypatch.setattr(fused_grid_reduce, "CHUNK_ELEMENTS", 8 * shape[-1])  # many blocks
    args = (_data(shape, 1), _data(shape[-1:], 2), _data(shape[-1:], 3), _data(shape, 4))
    c = gg.jit(fn).lower(*args)
    ops = [n.op for n in c.graph.nodes if n.op != "constant"]
    if shape[0] > 1:
        assert sorted(ops) == ["fused_grid_reduce", "fused_reduce"], ops
        (row,) = [n for n in c.graph.nodes if n.op == "fused_reduce"]
        (grid,) = _grid_groups(c)
        full_outs = [v for v in row.outputs if v.shape == shape]
        assert len(full_outs) == 1  # dx only
        assert len(grid.outputs) == (2 if fn is _ln_grad else 1)
        assert "cuda_refusal" not in grid.attrs, grid.attrs.get("cuda_refusal")
        assert "recomputes" in c.explain() and "hands out per-row values" in c.explain()
    with np.errstate(all="ignore"):
        got, want = c(*args), gg.jit(fn, fuse=False)(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("rows", [33, 1025])
def test_layer_norm_dw_db_kernel_on_the_emulator(rows, monkeypatch):
    """The two-reduction grid kernel of the layer norm backward (one pass, two outputs)."""
    shape = (rows, 37)
    args = (_data(shape, 1, True), _data((37,), 2), _data((37,), 3), _data(shape, 4))
    c = gg.jit(_ln_grad).lower(*args)
    (node,) = _grid_groups(c)
    check_nvrtc(node.attrs["cuda_source"], f"{node.attrs['kernel_name']}.cu")
    ((_, ins),) = fused_reduce_inputs(c, args, ("fused_grid_reduce",))
    from gpugraph.ops import fused, fused_grid_reduce

    fake = EmulatedCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    fused._raw_kernel.cache_clear()
    try:
        outs = [np.full(v.shape, np.nan, v.dtype) for v in node.outputs]
        fused_grid_reduce._prepare_cupy(node, None)(ins, outs)
    finally:
        fused._raw_kernel.cache_clear()
    assert [k[-1] for k, *_ in fake.launches] == ["p", "f"]  # both sums in one pair
    with np.errstate(all="ignore"):
        want = gg.jit(_ln_grad, fuse=False)(*args)[1:]
    for g, w in zip(outs, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, equal_nan=True)


# ---- the grid workspace: a range of the plan's arena --------------------------------------
def _two_norm_grads(x, w, b, dy, x2, dy2):
    return _ln_grad(x, w, b, dy) + _ln_grad(x2, w, b, dy2)  # two independent groups


def _norm_args(shape):
    w, b = _data(shape[-1:], 2), _data(shape[-1:], 3)
    return _data(shape, 1), w, b, _data(shape, 4), _data(shape, 5), _data(shape, 6)


def test_the_plan_reserves_each_grid_workspace_and_the_race_checker_agrees():
    """Each grid group's workspace is arena bytes the memory plan reserves for its step
    (plan.scratch); the race checker simulates those bytes as written and read by the step,
    over every interleaving of the streams."""
    from gpugraph.ops.fused_grid_reduce import _scratch_bytes
    from gpugraph.testing import check_races

    args = _norm_args((64, 40))
    c = gg.jit(_two_norm_grads, streams=2, backend="numpy").lower(*args)  # side by side
    grids = _grid_groups(c)
    assert len(grids) == 2
    scratch = c.executable.plan.scratch
    for node in grids:
        size, dtype = node.attrs["grid_kernels"].workspace((64, 40))
        assert scratch[node][1] == _scratch_bytes(node) == size * dtype.itemsize > 0
    report = check_races(c, *args, trials=6)
    assert report.ok and report.num_streams == 2, str(report)
    for got, want in zip(c(*args), gg.jit(_two_norm_grads, fuse=False)(*args)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.emulator
@requires_emulator
def test_the_cupy_grid_runner_writes_its_partials_into_the_arena_range(monkeypatch):
    """Attached to a plan, the runner's workspace is the reserved slice of the arena (made
    once, no allocation per call); alone it allocates one per call. Same results."""
    from types import SimpleNamespace

    from gpugraph.ops import fused, fused_grid_reduce

    args = _norm_args((70, 37))[:4]
    c = gg.jit(_ln_grad).lower(*args)
    (node,) = _grid_groups(c)
    ((_, ins),) = fused_reduce_inputs(c, args, ("fused_grid_reduce",))
    nbytes = fused_grid_reduce._scratch_bytes(node)
    arena = np.full(nbytes + 512, 0xAB, np.uint8)
    parent = SimpleNamespace(plan=SimpleNamespace(scratch={node: (256, nbytes)}), arena=arena)
    monkeypatch.setitem(sys.modules, "cupy", EmulatedCupy())
    fused._raw_kernel.cache_clear()
    try:
        results = []
        for attached in (True, False):
            runner = fused_grid_reduce._prepare_cupy(node, None)
            if attached:
                runner.attach(parent)
            outs = [np.full(v.shape, np.nan, v.dtype) for v in node.outputs]
            runner(ins, outs)
            results.append(outs)
    finally:
        fused._raw_kernel.cache_clear()
    assert (arena[:256] == 0xAB).all() and (arena[256 + nbytes :] == 0xAB).all()
    assert (arena[256 : 256 + nbytes] != 0xAB).any()  # the partials went there
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ---- min in row and grid groups; argmax stays single with a reason ---------------------------
# (shape, dtype) of the min and prod group tests (tests/test_reduce_prod.py): rows and columns
# off the warp size, a two-warp row, float64 once
GROUP_SHAPES = [
    ((5, 37), np.float32),
    ((40, 2), np.float32),
    ((3, 1025), np.float32),
    ((5, 37), np.float64),
]
MIN_CASES = {  # name -> fn of x: each one group
    "row_shift_by_min": lambda x: gg.exp(x - gg.min(x, axis=-1, keepdims=True)),
    "row_min_and_max": lambda x: gg.min(x * 2.0, axis=-1) + gg.max(x, axis=-1),
    "column_min": lambda x: gg.min(gg.abs(x) + 1.0, axis=0),
    "full_min": lambda x: gg.min(x * x - 1.0),
}


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("shape, dtype", GROUP_SHAPES)
def test_min_fuses_in_row_and_grid_groups(shape, dtype, monkeypatch):
    """A NaN in a row or column wins, as np.min; the kernels (NVRTC 80/90, emulator) and the
    NumPy runners give the unfused values."""
    from kernel_helpers import emulate_fused

    x = _data(shape, 7).astype(dtype)
    x[1, 0] = np.nan
    for name, fn in MIN_CASES.items():
        c = gg.jit(fn).lower(x)
        fused = [n for n in c.graph.nodes if n.op in ("fused_reduce", "fused_grid_reduce")]
        assert len(fused) == 1 and not any(n.op == "min" for n in c.graph.nodes), name
        with np.errstate(all="ignore"):
            want = np.asarray(gg.jit(fn, fuse=False)(x))
            np.testing.assert_allclose(c(x), want, rtol=1e-6, equal_nan=True, err_msg=name)
        (node,) = fused
        check_nvrtc(node.attrs["cuda_source"], f"{node.attrs['kernel_name']}.cu")
        ((_, ins),) = fused_reduce_inputs(c, (x,), (node.op,))
        with np.errstate(all="ignore"):
            got = emulate_fused(node.attrs, ins, [v.type for v in node.outputs])
        tol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got[-1], want, rtol=tol, atol=tol, equal_nan=True)


def test_argmax_stays_unfused_and_explain_says_why():
    x = _data((4, 6))
    c = gg.jit(lambda x: gg.argmax(x * 2.0, axis=-1) + gg.prod(x * x, axis=-1)).lower(x)
    text = c.explain()
    assert "argmax (" in text and "int64 index" in text
    assert "argmax" in {n.op for n in c.graph.nodes}
    assert "prod" not in {n.op for n in c.graph.nodes}  # prod fuses (tests/test_reduce_prod.py)


def test_min_groups_on_each_backend(jit_backend):
    """The native CPU row kernel's min (an OpenMP min with NaN tracked beside it) and the
    NumPy runners give np.min's values, NaN included."""
    x = _data((9, 37), 8)
    x[2, 5] = np.nan
    for name, fn in MIN_CASES.items():
        with np.errstate(all="ignore"):
            got, want = gg.jit(fn)(x), gg.jit(fn, fuse=False)(x)
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True, err_msg=name)


# ---- middle-axis reductions: the column layout with ``outer`` --------------------------------
MIDDLE = {  # name -> fn of (x, y, per (outer, row), per (outer, col))
    "sum_of_products": lambda x, y, pr, pc: gg.sum(x * y, axis=1),
    "mean_keepdims": lambda x, y, pr, pc: gg.mean(x * pr + pc, axis=1, keepdims=True),
    "max_scaled": lambda x, y, pr, pc: gg.max(x - y, axis=1) * 2.0,
    "min_of_squares": lambda x, y, pr, pc: gg.min(x * x - y, axis=1),
}


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
@pytest.mark.parametrize("rows", [0, 1, 33, 257])
def test_middle_axis_reductions_are_grid_groups(rows, monkeypatch):
    """sum/mean/max/min over the middle axes of (outer, rows, cols): one grid group; NumPy
    computes each block of axis 0's slice, the kernels run the column layout with outer > 1
    (NVRTC 80/90, emulator), both equal to the unfused graph, NaN and +-inf included."""
    from gpugraph.ops import fused_grid_reduce

    monkeypatch.setattr(fused_grid_reduce, "CHUNK_ELEMENTS", 2 * max(rows, 1) * 5)  # blocks
    shape = (6, rows, 5)
    args = (
        _data(shape, 1, True),
        _data(shape, 2),
        _data((6, rows, 1), 3),
        _data((6, 1, 5), 4),
    )
    for name, fn in MIDDLE.items():
        if rows == 0 and name.startswith(("max", "min")):
            continue  # a max over nothing raises in NumPy, fused or not
        c = gg.jit(fn).lower(*args)
        groups = _grid_groups(c)
        if rows == 1 and not groups:  # over one row: simplified away
            assert not any(n.op in ("sum", "max", "min") for n in c.graph.nodes), name
            continue
        (node,) = groups
        assert node.attrs["start"] == 1 and "cuda_refusal" not in node.attrs, name
        assert "grid reduction group" in c.explain()
        with np.errstate(all="ignore"):
            want = np.asarray(gg.jit(fn, fuse=False)(*args))
            np.testing.assert_allclose(c(*args), want, rtol=2e-5, atol=1e-4, equal_nan=True)
        check_nvrtc(node.attrs["cuda_source"], f"{node.attrs['kernel_name']}.cu")
        ((_, ins),) = fused_reduce_inputs(c, args, ("fused_grid_reduce",))
        got = _run_cupy(node, ins, monkeypatch)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-4, equal_nan=True, err_msg=name)


def test_a_run_of_trailing_axes_or_split_axes_stays_unfused():
    x = _data((3, 4, 5))
    for axes in ((1, 2), (0, 2)):
        c = gg.jit(lambda x, a=axes: gg.sum(gg.exp(x), axis=a)).lower(x)
        assert not _grid_groups(c) and "reduction left unfused" in c.explain()
