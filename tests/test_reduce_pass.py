"""Reduction fusion (passes/fuse_reduce.py, ops/fused_reduce.py): which groups form, what
explain() says about the rest, the NumPy row-block runner against the unfused plan, and the
row kernels (codegen/reduce_graph.row_kernel) under NVRTC, on the emulator and through the CuPy
runner with an emulating stand-in."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from cupy_emulated import EmulatedCupy
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_helpers import check_nvrtc, emulate_fused, requires_emulator, requires_nvrtc

import gpugraph as gg
from gpugraph.ir import verify
from gpugraph.ops import fused_reduce
from gpugraph.ops.fused import evaluate_body
from gpugraph.ops.registry import get_op

F32, F64 = np.float32, np.float64
RNG = np.random.default_rng(0)


def _arr(shape, dtype=F32, seed=0):
    return np.random.default_rng(seed).uniform(-2, 2, shape).astype(dtype)


def _weights(shape, dtype):
    return np.linspace(-1, 1, int(np.prod(shape))).reshape(shape).astype(dtype)


# forward patterns: name -> (fn of x, w, b), each one reduction group over the last axis
PATTERNS = {
    "softmax": lambda x, w, b: gg.softmax(x),
    "log_softmax": lambda x, w, b: gg.log_softmax(x),
    "logsumexp": lambda x, w, b: gg.logsumexp(x, axis=-1),
    "layer_norm": lambda x, w, b: gg.layer_norm(x, w, b),
    "rms_norm": lambda x, w, b: gg.rms_norm(x, w),
    "mean_var": lambda x, w, b: (gg.mean(x, axis=-1), gg.var(x, axis=-1)),
    "std": lambda x, w, b: gg.std(x, axis=-1, keepdims=True) * x,
    "sum_of_squares": lambda x, w, b: gg.sum(gg.square(x - 1.0), axis=-1),
}
# at most this many column reductions a gradient adds (of w, b): not innermost, left out
COLUMN_GRADS = {"layer_norm": 2, "rms_norm": 1}


def _loss(name):
    fwd = PATTERNS[name]

    def loss(x, w, b):
        out = fwd(x, w, b)
        outs = out if isinstance(out, tuple) else (out,)
        total = 0.0
        for k, o in enumerate(outs):  # a weighted sum: a gradient that is not the same per row
            total = total + gg.sum(o * _weights(o.shape, o.dtype) * (k + 1))
        return total

    return loss


def _args(shape, dtype=F32):
    return _arr(shape, dtype), _arr(shape[-1:], dtype, 1), _arr(shape[-1:], dtype, 2)


def _grad(name):
    return gg.grad(_loss(name), argnums=(0, 1, 2))


def _groups(c) -> list:
    return [n for n in c.graph.nodes if n.op == "fused_reduce"]


def _innermost_left(c) -> list:
    """Reductions left in the plan over the last axis (which the pass should have fused)."""
    return [
        n
        for n in c.graph.nodes
        if n.op in ("sum", "max") and tuple(n.attrs["axis"]) == (len(n.inputs[0].shape) - 1,)
    ]


def _close(got, want, dtype):
    tol = 2e-5 if dtype == F32 else 1e-12
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_each_pattern_is_one_group_per_direction(name):
    x, w, b = _args((6, 40))
    fwd = gg.jit(PATTERNS[name]).lower(x, w, b)
    (group,) = _groups(fwd)
    # nothing else computes: no other kernel, no reduction left
    assert all(n.op in ("fused_reduce", "constant", "reshape") for n in fwd.graph.nodes)
    assert "cuda_refusal" not in group.attrs, group.attrs.get("cuda_refusal")
    bwd = gg.jit(_grad(name)).lower(x, w, b)
    # forward recomputation and the row-wise backward: one pass (none where the gradient
    # has no row reduction, as for a sum of squares: then it is elementwise)
    unfused = gg.jit(_grad(name), fuse=False).lower(x, w, b)
    assert len(_groups(bwd)) == (1 if _innermost_left(unfused) else 0)
    assert not _innermost_left(bwd)
    for group in _groups(bwd):
        assert "cuda_refusal" not in group.attrs, group.attrs.get("cuda_refusal")
    left = [n for n in bwd.graph.nodes if n.op in ("sum", "max")]
    assert len(left) <= COLUMN_GRADS.get(name, 0)  # (b's may fold: its cotangent is constant)
    if left:
        assert "only the innermost (last) axis" in bwd.explain()


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("shape", [(7, 33), (3, 1), (2, 3, 5), (1, 200), (37,)])
def test_patterns_match_unfused(dtype, shape):
    args = _args(shape, dtype)
    for name in sorted(PATTERNS):
        for fn in (PATTERNS[name], _grad(name)):
            _close(gg.jit(fn)(*args), gg.jit(fn, fuse=False)(*args), dtype)


def test_empty_rows_and_columns():
    def f(x, w):
        mean = gg.mean(x, axis=-1, keepdims=True)
        return (x - mean) * w, gg.sum(x * x, axis=-1)

    for shape in [(0, 5), (4, 0), (0, 0), (2, 0, 3)]:
        x, w = _arr(shape), _arr(shape[-1:], seed=1)
        c = gg.jit(f).lower(x, w)
        assert len(_groups(c)) == 1
        with np.errstate(all="ignore"):
            _close(c(x, w), gg.jit(f, fuse=False)(x, w), F32)


def test_many_row_blocks_with_a_remainder(monkeypatch):
    """Blocks of 3 rows over 10 rows (the last block 1 row): scratch cut to size, per-row
    outputs (the saved mean and rstd) and a reshape output written per block."""
    monkeypatch.setattr(fused_reduce, "CHUNK_ELEMENTS", 3 * 16)

    def f(x, w):
        mean = gg.mean(x, axis=-1, keepdims=True)
        rstd = gg.rsqrt(gg.var(x, axis=-1, keepdims=True) + 1e-5)
        return (x - mean) * rstd * w, mean, gg.reshape(rstd, (10,))

    x, w = _arr((10, 16)), _arr((16,), seed=1)
    c = gg.jit(f).lower(x, w)
    (group,) = _groups(c)
    assert len(group.outputs) == 3  # y, mean and rstd from one pass
    assert fused_reduce.RowPlan(group.attrs["body"], fused_reduce._space(group)).block == 3
    got = c(x, w)
    _close(got, gg.jit(f, fuse=False)(x, w), F32)
    got2 = c(x + 1, w)  # returned arrays stay valid after the next call; inputs unmodified
    _close(got, gg.jit(f, fuse=False)(x, w), F32)
    _close(got2, gg.jit(f, fuse=False)(x + 1, w), F32)
    np.testing.assert_array_equal(x, _arr((10, 16)))


def test_explain_says_why_a_reduction_stayed_unfused():
    cases = [
        (  # axes 0 and 2: not one run, neither a row nor a grid group
            lambda x: gg.exp(gg.sum(gg.exp(gg.reshape(x, (2, 2, 6))), axis=(0, 2))),
            "only the innermost (last) axis",
        ),
        (lambda x: gg.sum(x, axis=0), "over leading axes, a grid group needs"),
        (lambda x: gg.argmax(gg.exp(x), axis=-1), "int64 index"),
        (lambda x: gg.sum(x, axis=-1), "no elementwise producer or consumer"),
        (
            lambda x: gg.sum(gg.astype(x, "int32") * 2, axis=-1),
            "dtype int32",
        ),
    ]
    for fn, why in cases:
        c = gg.jit(fn).lower(_arr((4, 6)))
        assert not _groups(c)
        assert why in c.explain(), c.explain()


def test_fuse_false_and_the_switch_turn_it_off(monkeypatch):
    x = _arr((4, 6))
    assert not _groups(gg.jit(gg.softmax, fuse=False).lower(x))
    from gpugraph.passes import fuse_reduce

    monkeypatch.setattr(fuse_reduce, "ENABLED", False)
    c = gg.jit(gg.softmax).lower(x)
    assert not _groups(c) and any(n.op == "fused" for n in c.graph.nodes)


def test_a_row_value_read_as_a_column_is_not_fused_into_the_group():
    """x of shape (4, 4): sum over the last axis gives (4,), which broadcasting reads as a
    column; the group must not treat it as one value per row."""

    def f(x):
        s = gg.sum(gg.exp(x), axis=-1)
        return x * s, s + 1.0

    x = _arr((4, 4))
    _close(gg.jit(f)(x), gg.jit(f, fuse=False)(x), F32)


def test_the_group_stays_convex():
    """exp -> sum -> ... -> matmul -> back into an elementwise consumer of the row: the matmul
    path leaves the group, so the consumer after it stays out."""

    def f(x, m):
        e = gg.exp(x)
        s = gg.sum(e, axis=-1, keepdims=True)
        back = (e / s) @ m  # leaves the group
        return back * s + e  # would re-enter it

    x, m = _arr((5, 6)), _arr((6, 6), seed=3)
    c = gg.jit(f).lower(x, m)
    verify(c.graph)
    assert len(_groups(c)) == 1
    _close(c(x, m), gg.jit(f, fuse=False)(x, m), F32)


# ---- random DAGs: elementwise ops and reductions along random axes ---------------------------
UNARY = {"exp": lambda a: gg.exp(a * 0.25), "tanh": gg.tanh, "neg": lambda a: -a}
BINARY = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "sub": lambda a, b: a - b}


def _dag(steps):
    def f(x, w):
        vals = [x, x * w]
        for kind, i, j, axis, keep in steps:
            a, b = vals[i % len(vals)], vals[j % len(vals)]
            if kind in UNARY:
                vals.append(UNARY[kind](a))
            elif kind in BINARY:
                vals.append(BINARY[kind](a, b))
            else:  # sum or max over one axis, broadcast back: as a row value (keepdims) or,
                # on a square array, without keepdims, which broadcasting reads as a column
                keep = keep or a.shape[0] != a.shape[1]
                r = (gg.sum if kind == "sum" else gg.max)(a, axis=axis, keepdims=keep)
                vals.append(b - r)
        return vals[-1], vals[len(vals) // 2]

    return f


step = st.tuples(
    st.sampled_from([*UNARY, *BINARY, "sum", "max"]),
    st.integers(0, 30),
    st.integers(0, 30),
    st.integers(-2, 1),
    st.booleans(),
)


@settings(max_examples=20, deadline=None)
@given(
    steps=st.lists(step, min_size=1, max_size=8),
    dtype=st.sampled_from([F32, F64]),
    shape=st.sampled_from([(3, 5), (4, 4)]),
)
def test_fused_equals_unfused_equals_numpy_on_random_dags(steps, dtype, shape):
    f = _dag(steps)
    x, w = _arr(shape, dtype), _arr(shape[-1:], dtype, 1)
    fused = gg.jit(f)(x, w)
    unfused = gg.jit(f, fuse=False)(x, w)
    with np.errstate(all="ignore"):
        _close(fused, unfused, dtype)
        _close(fused, f(x, w), dtype)  # eager: NumPy op by op


# ---- the row kernels -----------------------------------------------------------------------
def fused_reduce_inputs(compiled, args, ops=("fused_reduce",)):
    """(node, its input arrays) for each node of ``compiled`` whose op is in ``ops``,
    evaluating the nodes op by op with their NumPy impls on ``args``."""
    env = dict(zip(compiled.graph.inputs, args))
    for node in compiled.graph.nodes:
        if node.op == "constant":
            env[node.output] = np.asarray(node.attrs["value"])
            continue
        ins = [env[v] for v in node.inputs]
        if node.op in ops:
            yield node, ins
        with np.errstate(all="ignore"):
            outs = get_op(node.op).impl(np, *ins, **node.attrs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        env.update(zip(node.outputs, (np.asarray(o) for o in outs)))


def _kernel_cases():
    """(label, fused_reduce node, its inputs) for the patterns' forward and backward groups:
    float32 over 37 columns (not a warp multiple) and 1 column, float64 over 37; more rows
    than the emulated grid (a grid-stride over rows); one row (a 1-D reduction)."""
    every = sorted(PATTERNS)
    for dtype, shape, names in [
        (F32, (5, 37), every),
        (F32, (3, 1), every),
        (F64, (5, 37), every),
        (F32, (37,), ["logsumexp", "softmax"]),
    ]:
        args = _args(shape, dtype)
        for name in names:
            for direction, fn in (("fwd", PATTERNS[name]), ("bwd", _grad(name))):
                for node, ins in fused_reduce_inputs(gg.jit(fn).lower(*args), args):
                    yield f"{name}-{direction}-{np.dtype(dtype)}-{shape}", node, ins


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
def test_row_kernels_compile_and_match_numpy_on_the_emulator():
    from gpugraph.testing import load_kernels

    cases = list(_kernel_cases())
    sources = {n.attrs["kernel_name"]: n.attrs["cuda_source"] for _, n, _ in cases}
    for name, source in sources.items():
        check_nvrtc(source, f"{name}.cu")
    load_kernels([(src, name) for name, src in sources.items()])  # one host compiler run
    for label, node, ins in cases:
        with np.errstate(all="ignore"):
            want = evaluate_body(np, node.attrs["body"], ins)
        got = emulate_fused(node.attrs, ins, [v.type for v in node.outputs])
        tol = 3e-5 if node.outputs[0].dtype == F32 else 1e-12
        for g, w in zip(got, want):
            w = np.asarray(w).reshape(g.shape)
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=label)


@pytest.mark.emulator
@requires_emulator
def test_cupy_runner_launches_one_row_kernel(monkeypatch):
    from gpugraph.ops import fused

    fake = EmulatedCupy(max_block=64)  # the emulator's threads are slow; still 2 warps
    monkeypatch.setitem(sys.modules, "cupy", fake)
    fused._raw_kernel.cache_clear()
    fused._sm_count.cache_clear()
    try:
        # the register variant (row_items per thread): 300 columns at 8 per thread take two
        # warps per row (partials through shared memory); 40: one warp
        for name, shape, threads in (("softmax", (9, 300), 64), ("layer_norm", (9, 40), 32)):
            args = _args(shape)
            c = gg.jit(_grad(name)).lower(*args)
            (node,) = _groups(c)
            env = dict(zip(c.graph.inputs, args))
            for n in c.graph.nodes:  # the group's inputs, computed unfused
                if n is node:
                    break
                if n.op == "constant":
                    env[n.output] = np.asarray(n.attrs["value"])
            ins = [env[v] for v in node.inputs]
            outs = [np.full(v.shape, np.nan, v.dtype) for v in node.outputs]
            fake.launches.clear()
            fused_reduce._prepare_cupy(node, None)(ins, outs)
            ((kernel, grid, block),) = fake.launches
            assert kernel == node.attrs["kernel_name"] and grid == (8,) and block == (threads,)
            _close(tuple(outs), evaluate_body(np, node.attrs["body"], ins), F32)
    finally:
        fused._raw_kernel.cache_clear()
        fused._sm_count.cache_clear()


def test_a_reshaped_per_row_output_is_written_before_its_block_is_reused():
    """s dies at the multiply, so a later per-row value may take its scratch block: the
    reshape of s that the group returns must be written before that."""

    def f(x):
        s = gg.sum(gg.exp(x), axis=-1, keepdims=True)
        flat = gg.reshape(s, (6,))  # before the per-row values that follow
        t = gg.max(x * (1.0 / s), axis=-1, keepdims=True)
        u = gg.sum(x - t, axis=-1, keepdims=True)
        return flat, x / u

    x = _arr((6, 9))
    c = gg.jit(f).lower(x)
    assert len(_groups(c)) == 1 and "reshape" in [n.op for n in _groups(c)[0].attrs["body"].nodes]
    _close(c(x), gg.jit(f, fuse=False)(x), F32)


def test_one_outer_value_read_as_a_column_and_as_rows_is_not_one_argument():
    """y of shape (4,) over (4, 4): x * y reads it as a column, s + y (s per row, shape (4,))
    as one value per row. One group cannot pass y in both layouts."""

    def f(x, y):
        s = gg.sum(gg.exp(x * y), axis=-1)
        return s + y, x / gg.reshape(s, (4, 1))

    x, y = _arr((4, 4)), _arr((4,), seed=5)
    _close(gg.jit(f)(x, y), gg.jit(f, fuse=False)(x, y), F32)


def test_an_op_on_constants_left_out_of_a_group_still_runs():
    """optimize=False keeps 1 / 2 (the mean's gradient) as an op on a constant; its consumer
    joins the row group, so it becomes an elementwise group with no array input."""

    def loss(x):
        m = gg.mean(gg.stack([x, x], axis=2), axis=2)
        return gg.sum(gg.sin(m * 0.3))

    x = _arr((5, 8))
    g = gg.grad(loss)
    from gpugraph.testing import emulator_available

    for backend in ("numpy", "cpu") if emulator_available() else ("numpy",):  # cpu: needs g++
        got = gg.jit(g, backend=backend, optimize=False)(x)
        _close(got, g(x), F32)
