"""Reduction fusion, second part: float16 groups (the casts around a float16 softmax or
layer norm fuse, the row kernel reads and writes half and accumulates in float32)."""

from __future__ import annotations

import numpy as np
import pytest
from cupy_emulated import EmulatedCupy
from kernel_helpers import check_nvrtc, emulate_fused, requires_emulator, requires_nvrtc
from test_reduce_pass import (
    PATTERNS,
    _args,
    _arr,
    _grad,
    _groups,
    _innermost_left,
    fused_reduce_inputs,
)

import gpugraph as gg
from gpugraph.ops.fused import evaluate_body

F16 = np.float16


def _tuple(r):
    return tuple(np.asarray(x) for x in (r if isinstance(r, tuple) else (r,)))


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_float16_patterns_fuse_their_casts_and_match_unfused(name):
    args = _args((6, 37), F16)
    for fn in (PATTERNS[name], _grad(name)):
        c = gg.jit(fn).lower(*args)
        assert not _innermost_left(c)
        for group in _groups(c):
            assert "cuda_refusal" not in group.attrs, group.attrs.get("cuda_refusal")
            # the cast of x to float32 is inside: the group reads x as float16
            assert any(v.dtype == F16 and v.shape == (6, 37) for v in group.inputs)
        got, want = _tuple(c(*args)), _tuple(gg.jit(fn, fuse=False)(*args))
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            # the same ops in the same dtypes, block by block: the same bits
            np.testing.assert_array_equal(g, w)
    fwd = gg.jit(PATTERNS[name]).lower(*args)
    (group,) = _groups(fwd)
    if name in ("softmax", "log_softmax", "std"):  # float16 in, float16 out, nothing else
        assert [n.op for n in fwd.graph.nodes if n.op != "constant"] == ["fused_reduce"]
        assert all(v.dtype == F16 for v in group.outputs)


def _half_max(x, w, b):  # a max over float16 itself (exact), its result used as half
    return x - gg.max(x, axis=-1, keepdims=True)


def _half_cases():
    """(label, fused_reduce node, its inputs) of float16 forward and backward groups over 37
    columns (not a warp multiple) and 1 column."""
    for shape, names in [
        ((5, 37), ["softmax", "layer_norm", "log_softmax", "mean_var"]),
        ((3, 1), ["softmax"]),
    ]:
        args = _args(shape, F16)
        for name in names:
            fns = (("fwd", PATTERNS[name]), ("bwd", _grad(name)))
            if name == "softmax":
                fns += (("half-max", _half_max),)
            for direction, fn in fns:
                for node, ins in fused_reduce_inputs(gg.jit(fn).lower(*args), args):
                    yield f"{name}-{direction}-{shape}", node, ins


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
def test_float16_row_kernels_compile_and_match_numpy_on_the_emulator():
    from gpugraph.testing import load_kernels

    cases = list(_half_cases())
    assert cases
    sources = {n.attrs["kernel_name"]: n.attrs["cuda_source"] for _, n, _ in cases}
    for name, source in sources.items():
        assert "gg_half" in source and "float acc" in source  # half storage, float32 sums
        check_nvrtc(source, f"{name}.cu")
    load_kernels([(src, name) for name, src in sources.items()])
    for label, node, ins in cases:
        with np.errstate(all="ignore"):
            want = evaluate_body(np, node.attrs["body"], ins)
        got = emulate_fused(node.attrs, ins, [v.type for v in node.outputs])
        for g, w, v in zip(got, want, node.outputs):
            assert g.dtype == v.dtype
            tol = 2e-3 if v.dtype == F16 else 3e-5  # (one half ulp apart at most)
            w = np.asarray(w).reshape(g.shape)
            np.testing.assert_allclose(g.astype(np.float64), w, rtol=tol, atol=tol, err_msg=label)


# ---- the register (persistent) variant of the row kernel ----------------------------------
def _group(fn, args):
    """(fused_reduce node, its inputs) of the one group of ``fn`` (inputs computed unfused)."""
    c = gg.jit(fn).lower(*args)
    (node,) = _groups(c)
    ins = next(ins for n, ins in fused_reduce_inputs(c, args) if n is node)
    return node, [np.asarray(a) for a in ins]


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
def test_register_and_multi_pass_row_kernels_agree():
    """The pass emits the register variant where the row fits; the multi-pass kernel (rows
    past PERSISTENT_MAX_COLS) is the same body. Both compile and match NumPy; with the same
    block they fold each thread's columns in the same order: the same bits."""
    from gpugraph.codegen.reduce_graph import row_kernel
    from gpugraph.ops.row_space import Space
    from gpugraph.testing import load_kernels

    cases = []
    # 37 columns: 2 per thread in one warp; 300: 8 per thread in two warps (a remainder)
    for name, shape in (("layer_norm", (3, 37)), ("softmax", (3, 300)), ("rms_norm", (2, 300))):
        node, ins = _group(_grad(name), _args(shape, np.float32))
        space = Space(tuple(node.attrs["lead"]), int(node.attrs["cols"]))
        assert node.attrs["row_items"] is not None  # what the pass chose
        body = node.attrs["body"]
        regs, multi = row_kernel(body, space), row_kernel(body, space, persistent=False)
        assert regs.source == node.attrs["cuda_source"] and multi.items is None
        assert "a0_v[" in regs.source and "a0_v[" not in multi.source
        cases.append((name, body, ins, regs, multi))
    kernels = [k for *_, regs, multi in cases for k in (regs, multi)]
    for k in kernels:
        check_nvrtc(k.source, f"{k.name}.cu")
    load_kernels([(k.source, k.name) for k in kernels])
    for name, body, ins, regs, multi in cases:
        out_types = [v.type for v in body.outputs]
        want = evaluate_body(np, body, ins)
        got = emulate_fused(regs.attrs(), ins, out_types)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, np.asarray(w).reshape(g.shape), rtol=3e-5, atol=3e-5)
        same_block = dict(multi.attrs(), row_block=regs.block)
        for g, m in zip(got, emulate_fused(same_block, ins, out_types)):
            np.testing.assert_array_equal(g, m, err_msg=name)


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
def test_register_row_kernel_traps_when_launched_too_narrow():
    from gpugraph.testing import emulate_kernel
    from gpugraph.testing.emulator import KernelRuntimeError

    node, ins = _group(PATTERNS["softmax"], _args((2, 300), np.float32))
    assert node.attrs["row_block"] == 64 and node.attrs["row_items"] == 8
    out = np.zeros((2, 300), np.float32)
    args = [*ins, out, np.int64(2), np.int64(300)]
    with pytest.raises(KernelRuntimeError, match="__trap"):  # 32 x 8 < 300: never a wrong row
        emulate_kernel(node.attrs["cuda_source"], node.attrs["kernel_name"], 1, 32, args)


def test_register_variant_stays_within_the_register_budget():
    from gpugraph.codegen.reduce_graph import REGISTER_WORDS, _items

    assert _items(8192, 1) == 8 and _items(37, 1) == 2 and _items(0, 1) == 1
    assert _items(8193, 1) is None  # past PERSISTENT_MAX_COLS: multi-pass
    assert _items(300, 6) == REGISTER_WORDS // 6  # three float64 inputs: 5 per thread
    assert _items(8192, 6) is None  # 5 per thread would take 1,664 threads: multi-pass
    assert _items(100, 40) is None  # not one value per thread fits


# ---- grid groups: reductions over leading axes (passes/fuse_reduce_grid.py) ---------------
def _col_inputs(shape, seed=3):
    r = np.random.default_rng(seed)
    x, y = (r.uniform(-2, 2, shape).astype(np.float32) for _ in range(2))
    return x, y, r.uniform(-2, 2, shape[-1:]).astype(np.float32)


GRID_CASES = {  # name -> (fn of x, y, w, reads w: per column of a 2-d x only)
    "full_sum_of_squares": (lambda x, y, w: gg.sum(x * x), False),
    "column_mean": (lambda x, y, w: gg.mean(x, axis=0), False),
    "column_max_keepdims": (lambda x, y, w: gg.max(gg.abs(x - 1.0), axis=0, keepdims=True), False),
    "column_sum_scaled": (lambda x, y, w: gg.sum(gg.square(x - 0.5), axis=0) * 0.25, False),
    "column_dw_like": (lambda x, y, w: gg.sum(x * y * w, axis=0), True),  # several arrays
    "full_mean_of_products": (lambda x, y, w: gg.mean(x * y - w), True),
}


def _grid_groups(c):
    return [n for n in c.graph.nodes if n.op == "fused_grid_reduce"]


@pytest.mark.parametrize("shape", [(300, 37), (5, 4, 6), (0, 5), (3, 1)])
def test_grid_groups_match_unfused_and_numpy(shape, monkeypatch):
    from gpugraph.ops import fused_grid_reduce

    monkeypatch.setattr(fused_grid_reduce, "CHUNK_ELEMENTS", 8 * shape[-1])  # many blocks
    args = _col_inputs(shape)
    for name, (fn, reads_w) in GRID_CASES.items():
        # w (cols,) is one per column of a 2-d x; against (5, 4, 6) reduced over axis 0 it is
        # neither per row nor per (4 * 6) column: the grid kernels refuse it
        renders = not (reads_w and len(shape) == 3 and "column" in name)
        if shape[0] == 0 and "max" in name:
            continue  # NumPy: a max over nothing raises, fused or not
        c = gg.jit(fn).lower(*args)
        (group,) = _grid_groups(c)
        assert [n.op for n in c.graph.nodes if n.op != "constant"] == ["fused_grid_reduce"]
        assert ("cuda_refusal" not in group.attrs) == renders, group.attrs.get("cuda_refusal")
        assert "grid reduction group" in c.explain()
        with np.errstate(all="ignore"):
            got, want, eager = c(*args), gg.jit(fn, fuse=False)(*args), fn(*args)
        for w in (want, eager):
            np.testing.assert_allclose(np.asarray(got), np.asarray(w), rtol=2e-5, atol=2e-5)


def test_grid_groups_over_two_leading_axes_read_broadcast_inputs_whole(monkeypatch):
    from gpugraph.ops import fused_grid_reduce

    monkeypatch.setattr(fused_grid_reduce, "CHUNK_ELEMENTS", 12)  # blocks of 2 along axis 0
    x = _arr((5, 4, 3))
    per_row = _arr((5, 4, 1), seed=1)  # cut with x along axis 0
    per_col = _arr((1, 4, 3), seed=2)  # broadcast along axis 0: read whole by every block

    def f(x, a, b):
        return gg.sum(x * a + b, axis=(0, 1))

    c = gg.jit(f).lower(x, per_row, per_col)
    (group,) = _grid_groups(c)
    assert group.attrs["axes"] == 2
    np.testing.assert_allclose(c(x, per_row, per_col), f(x, per_row, per_col), rtol=2e-5)


def test_a_producer_read_outside_stays_out_of_the_grid_group():
    def f(x):
        sq = x * x
        return gg.sum(sq, axis=0), sq + 1.0  # sq is needed whole: not recomputed, not fused

    c = gg.jit(f).lower(_arr((6, 5)))
    assert not _grid_groups(c)
    assert "over leading axes, a grid group needs" in c.explain()


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
def test_cupy_grid_runner_launches_the_two_stage_kernels(monkeypatch):
    import sys

    from gpugraph.ops import fused, fused_grid_reduce

    fake = EmulatedCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    fused._raw_kernel.cache_clear()
    try:
        for shape, name in [
            ((300, 37), "column_sum_scaled"),
            ((5, 4, 6), "column_mean"),
            ((33, 40), "full_sum_of_squares"),
            ((9, 37), "column_max_keepdims"),
        ]:
            args = _col_inputs(shape)
            fn = GRID_CASES[name][0]
            (node,) = _grid_groups(gg.jit(fn).lower(*args))
            check_nvrtc(node.attrs["cuda_source"], f"{node.attrs['kernel_name']}.cu")
            ins = [args[0]]  # the one array the group reads (x)
            assert [v.shape for v in node.inputs] == [shape]
            out = np.full(node.outputs[0].shape, np.nan, np.float32)
            fake.launches.clear()
            fused_grid_reduce._prepare_cupy(node, None)(ins, [out])
            assert [k[-1] for k, *_ in fake.launches] == ["p", "f"]
            np.testing.assert_allclose(out, fn(*args), rtol=2e-5, atol=2e-5, err_msg=name)
    finally:
        fused._raw_kernel.cache_clear()


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
def test_float16_grid_group_reads_and_writes_half(monkeypatch):
    """mean(x16, axis=0): the casts around the float32 sum join; the grid kernels load half,
    accumulate in float32 and store half once; NumPy runs the same ops by blocks."""
    import sys

    from gpugraph.ops import fused, fused_grid_reduce

    x = _arr((300, 37), F16)
    fn = lambda x: gg.mean(x, axis=0)  # noqa: E731
    monkeypatch.setattr(fused_grid_reduce, "CHUNK_ELEMENTS", 8 * 37)
    c = gg.jit(fn).lower(x)
    (node,) = _grid_groups(c)
    assert node.inputs[0].dtype == F16 and node.outputs[0].dtype == F16
    assert node.attrs["grid_kernels"].program.dtype == "float16"
    want = np.asarray(gg.jit(fn, fuse=False)(x), np.float64)
    np.testing.assert_allclose(np.asarray(c(x), np.float64), want, rtol=1e-3, atol=1e-3)
    check_nvrtc(node.attrs["cuda_source"], f"{node.attrs['kernel_name']}.cu")
    monkeypatch.setitem(sys.modules, "cupy", EmulatedCupy())
    fused._raw_kernel.cache_clear()
    try:
        out = np.full((37,), np.nan, F16)
        fused_grid_reduce._prepare_cupy(node, None)([x], [out])
    finally:
        fused._raw_kernel.cache_clear()
    np.testing.assert_allclose(out.astype(np.float64), want, rtol=1e-3, atol=1e-3)


@requires_emulator  # the host compiler backend="cpu" needs
@pytest.mark.parametrize("name", ["softmax", "layer_norm"])
def test_float16_groups_on_the_cpu_backend_run_the_numpy_row_runner(name, monkeypatch):
    """The native CPU row kernel has no float16 rules: it refuses, the group runs on the NumPy
    row runner (the unfused bits) and explain() says why."""
    from gpugraph.backends import cpu_backend

    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "all")  # no size policy: the renderer decides
    args = _args((6, 37), F16)
    for fn in (PATTERNS[name], _grad(name)):
        c = gg.jit(fn, backend="cpu").lower(*args)
        assert _groups(c)
        assert "float16 values are not rendered" in c.explain()
        for g, w in zip(_tuple(c(*args)), _tuple(gg.jit(fn, fuse=False, backend="numpy")(*args))):
            np.testing.assert_array_equal(g, w)


def test_groups_that_would_need_each_other_are_not_both_fused():
    """Two row groups, each convex alone, that feed each other (a sibling reader of ``y`` in
    each one feeds the other's producers: found by the property tests on an unoptimized
    gradient): one is dropped with a note instead of a cycle in the fused graph."""

    def loss(x, y):
        a = gg.where(x > y, x, y * 0.5)
        b = gg.where(x > y, x, y * 0.5)  # a duplicate that optimize=False keeps apart
        return gg.sum(gg.sin(a * 0.3)) + gg.sum(gg.sin(b * 0.4))

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    y = rng.standard_normal(8).astype(np.float32)
    g = gg.grad(loss, argnums=(0, 1))
    c = gg.jit(g, optimize=False).lower(x, y)
    assert "would form a cycle with another reduction group" in c.explain()
    for got, want in zip(c(x, y), g(x, y)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
