"""Conv's temporaries (im2col tiles, the zero-padded input, col2im's image, the flipped weight)
live in a per-node scratch range of the memory plan: the plan reserves it live only at that
step, the runtime passes it as scratch=, explain() shows it, the race checker sees it (a planted
overlap with a live value is caught); the tiled lowering matches torch in float64 with tiles
forced small (row tiles, partial tiles, several samples per tile), eagerly and under jit."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.errors import GpuGraphError
from gpugraph.ops import conv_lower, conv_transpose_lower
from gpugraph.ops.registry import get_op
from gpugraph.testing.races import check_races, with_plan
from tests.torch_ref import F, torch

RNG = np.random.default_rng(5)
TOL = dict(rtol=1e-10, atol=1e-10)
CONV_OPS = ("conv", "conv_transpose", "conv_weight")


def _loss(x, w):
    return gg.sum(gg.square(gg.conv(x, w, padding=1)))


def test_the_plan_reserves_each_conv_steps_scratch_and_the_program_passes_it():
    x, w = RNG.standard_normal((2, 3, 7, 6)), RNG.standard_normal((4, 3, 3, 3))
    c = gg.jit(gg.grad(_loss, (0, 1)), backend="numpy").lower(x, w)
    ex, plan = c.executable, c.memory
    nodes = {n.op: n for n in plan.scratch}
    assert set(nodes) == set(CONV_OPS)
    for op, node in nodes.items():
        off, size = plan.scratch[node]
        assert size == get_op(op).extra["scratch_bytes"](node) > 0
        assert off + size <= plan.arena_bytes
    launches = [la for la in ex.launches if la.scratch is not None]
    assert len(launches) == 3
    c(x, w)  # the arena exists from the first call on
    for la in launches:
        assert np.shares_memory(ex.scratch_of(la), ex.arena)
    assert ex._program.source.count("scratch=") == 3
    assert "scratch for 3 step(s)" in c.explain()
    assert c.memory.table().count("scratch") == 3
    assert check_races(c, x, w, trials=2).ok


def test_scratch_is_live_only_at_its_step():
    """Three convs in a chain: their scratch ranges share bytes with each other (none is live
    at another's step), the arena is smaller than values plus scratch side by side, and the
    result is right (the race checker agrees)."""

    def f(x, w):
        h = gg.tanh(x) * 2.0
        for _ in range(3):
            h = gg.tanh(gg.conv(h, w, padding=1)) + h
        return gg.sum(h * h)

    x, w = RNG.standard_normal((2, 3, 8, 8)), RNG.standard_normal((3, 3, 3, 3)) * 0.3
    c = gg.jit(f, backend="numpy", fuse=False).lower(x, w)
    plan = c.memory
    ranges = sorted(plan.scratch.values())
    assert len(ranges) == 3 and all(size > 0 for _, size in ranges)
    (off0, size0), (off1, _) = ranges[0], ranges[1]
    assert off1 < off0 + size0  # the second shares bytes with the first
    assert plan.arena_bytes < plan.naive_bytes
    assert check_races(c, x, w, trials=3).ok
    np.testing.assert_allclose(c(x, w), f(x, w), rtol=1e-12)


def test_planted_bug_scratch_over_a_live_value_is_caught():
    """A conv's scratch moved onto the bytes of a value live at its step (here its own input,
    which it reads while it fills the scratch): the race checker reports the overlap and the
    numbers go wrong, in its replay and in the real run."""

    def f(x, w):
        return gg.conv(gg.tanh(x), w, padding=1) + 1.0

    x, w = RNG.standard_normal((2, 3, 6, 6)), RNG.standard_normal((3, 3, 3, 3))
    c = gg.jit(f, backend="numpy", fuse=False).lower(x, w)
    assert check_races(c, x, w, trials=2).ok
    (conv,) = [n for n in c.graph.nodes if n.op == "conv"]
    at = c.schedule.index(conv)
    live = [
        v
        for v, s in c.memory.slots.items()
        if s.kind == "arena" and s.first < at <= s.last and v.type.nbytes >= 64
    ]
    assert live, c.memory.table()
    bad = copy.copy(c.memory)
    bad.scratch = dict(c.memory.scratch)
    off, size = c.memory.slots[live[0]].offset, c.memory.scratch[conv][1]
    bad.scratch[conv] = (off, size)
    bad.arena_bytes = max(bad.arena_bytes, off + size)
    broken = with_plan(c, bad)
    report = check_races(broken, x, w, trials=2)
    assert any("conv scratch" in str(o) for o in report.overlaps), str(report)
    assert report.mismatches
    assert not np.allclose(broken(x, w), c(x, w))


def test_a_scratch_range_too_small_is_an_error_not_a_wrong_answer():
    x, w = RNG.standard_normal((1, 2, 5, 5)), RNG.standard_normal((2, 2, 3, 3))
    geom = dict(stride=(1, 1), pad=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    with pytest.raises(GpuGraphError, match="scratch"):
        conv_lower.conv_impl(np, x, w, **geom, scratch=np.empty(8, np.uint8))


CASES = [  # d, stride, padding, dilation, groups, output_padding (for conv_transpose)
    (2, 1, 1, 1, 1, 0),  # conv_transpose as a conv with the flipped weight
    (2, 2, 1, 1, 2, 1),  # strided: col2im, output_padding crops
    (2, 1, 2, 2, 1, 0),
    (2, 1, 3, 1, 1, 0),  # padding wider than the kernel: col2im
    (1, 1, 1, 1, 2, 0),
    (3, (1, 2, 1), 1, 1, 1, 0),
]


@pytest.mark.parametrize("tile", [1, 200, 1 << 20])  # bytes: row tiles, partial, whole batch
@pytest.mark.parametrize("d, stride, padding, dilation, groups, outpad", CASES)
def test_tiled_lowering_matches_torch(
    monkeypatch, tile, d, stride, padding, dilation, groups, outpad
):
    monkeypatch.setattr(conv_lower, "TILE_BYTES", tile)  # read at plan time and at run time
    spatial = {1: (9,), 2: (7, 6), 3: (4, 5, 4)}[d]
    x = RNG.standard_normal((3, 4, *spatial))
    w = RNG.standard_normal((6, 4 // groups, *(3,) * d))
    wt = RNG.standard_normal((4, 6 // groups, *(3,) * d))
    tconv, ttrans = getattr(F, f"conv{d}d"), getattr(F, f"conv_transpose{d}d")

    def ours(x, w, wt):
        y = gg.conv(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
        z = gg.conv_transpose(x, wt, None, stride, padding, outpad, dilation, groups)
        return gg.sum(y * y) + gg.sum(z * z * z)

    def theirs(x, w, wt):
        y = tconv(x, w, None, stride, padding, dilation, groups)
        z = ttrans(x, wt, None, stride, padding, outpad, groups, dilation)
        return (y * y).sum() + (z * z * z).sum()

    ts = [torch.tensor(a, requires_grad=True) for a in (x, w, wt)]
    theirs(*ts).backward()
    want = [t.grad.numpy() for t in ts]
    grad = gg.grad(ours, (0, 1, 2))
    for got in (grad(x, w, wt), gg.jit(grad, backend="numpy")(x, w, wt)):
        for a, e in zip(got, want):
            np.testing.assert_allclose(a, e, **TOL)


def test_tiles_cover_rows_and_samples():
    """The tiling rule: whole samples while one fits, else runs of rows of one sample."""
    assert conv_lower.tiles(8, 10, 10, 4, 100) == (8, 10)  # 4000 B a sample: all 8 fit
    saved = conv_lower.TILE_BYTES
    try:
        conv_lower.TILE_BYTES = 1000
        assert conv_lower.tiles(8, 10, 10, 4, 100) == (1, 2)  # 400 B a row
        assert conv_lower.tiles(8, 10, 10, 4, 1000) == (1, 1)  # a row over the tile: one row
    finally:
        conv_lower.TILE_BYTES = saved


def test_max_pool_pads_into_plan_scratch_and_writes_the_planned_buffer():
    """The forward max_pool's padded input (filled with -inf) is plan scratch; its gradient
    and the values match torch."""
    x = RNG.standard_normal((2, 3, 7, 6))

    def f(x):
        return gg.max_pool(gg.tanh(x), 3, 2, 1)

    c = gg.jit(f, backend="numpy").lower(x)
    (node,) = [n for n in c.memory.scratch if n.op == "max_pool"]
    assert c.memory.scratch[node][1] == 2 * 3 * 9 * 8 * 8  # the padded x, float64
    xt = torch.tensor(x, requires_grad=True)
    want = F.max_pool2d(torch.tanh(xt), 3, 2, 1)
    np.testing.assert_allclose(c(x), want.detach().numpy(), **TOL)
    assert check_races(c, x, trials=2).ok
    g = RNG.standard_normal(want.shape)
    want.backward(torch.tensor(g))
    grad = gg.jit(gg.grad(lambda x: gg.sum(f(x) * g)), backend="numpy")
    np.testing.assert_allclose(grad(x), xt.grad.numpy(), **TOL)
    cg = grad.lower(x)  # max_pool_grad: its winner bookkeeping is scratch too
    assert "max_pool_grad" in {n.op for n in cg.memory.scratch}
    assert check_races(cg, x, trials=2).ok


def test_max_pool_grad_winners_at_nan_inf_and_ties_match_torch():
    """The running winner: the first maximum, a NaN over anything but an earlier NaN, never
    a padded position (a window of -inf), in 1-3 dims with strides and padding."""
    for d, (k, st, p) in [(1, (3, 2, 1)), (2, (3, 1, 1)), (2, (2, 2, 0)), (3, (3, 2, 1))]:
        x = RNG.integers(-2, 3, (2, 2, *(7, 6, 5)[:d])).astype(np.float64)  # many ties
        x[0, 0].flat[3], x[1, 1] = np.nan, -np.inf
        xt = torch.tensor(x, requires_grad=True)
        y = getattr(F, f"max_pool{d}d")(xt, k, st, p)
        g = RNG.standard_normal(y.shape)
        y.backward(torch.tensor(g))
        loss = lambda x, k=k, st=st, p=p, g=g: gg.sum(gg.max_pool(x, k, st, p) * g)  # noqa: E731
        with np.errstate(invalid="ignore"):  # the primal sum meets -inf * g of both signs
            got = gg.grad(loss)(x)
        np.testing.assert_allclose(got, xt.grad.numpy(), **TOL)


class _DeviceLike:
    """An array module that is not NumPy (NumPy underneath): the lowering takes its GPU
    branch, one whole-batch tile, which outgrows a range planned for the CPU tiling."""

    def __getattr__(self, name):
        return getattr(np, name)


def test_gpu_branch_tiles_the_whole_batch_and_allocates_past_a_cpu_sized_range(monkeypatch):
    monkeypatch.setattr(conv_lower, "TILE_BYTES", 256)  # the CPU tiling: many small tiles
    x, w = RNG.standard_normal((3, 4, 7, 6)), RNG.standard_normal((6, 4, 3, 3))
    geom = ((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    y = conv_lower.conv_impl(np, x, w, *geom)
    calls = {  # impl, arrays, extra attrs, the CPU-sized layout a plan reserves
        "conv": (
            conv_lower.conv_impl,
            (x, w),
            (),
            conv_lower.conv_layout(x.shape, w.shape, *geom, x.dtype),
        ),
        "conv_transpose": (
            conv_transpose_lower.conv_transpose_impl,
            (y, w),
            ((7, 6),),
            conv_transpose_lower.conv_transpose_layout(y.shape, w.shape, *geom, (7, 6), x.dtype),
        ),
        "conv_weight": (
            conv_lower.conv_weight_impl,
            (x, y),
            ((3, 3),),
            conv_lower.conv_weight_layout(x.shape, y.shape, *geom, (3, 3), x.dtype),
        ),
    }
    whole = conv_lower.Im2col(x.shape, (3, 3), *geom, np.dtype(x.dtype), 1 << 62)
    assert whole.tiling == (3, 7)  # the GPU tiling: one tile, the batch
    for impl, args, extra, lay in calls.values():
        want = impl(np, *args, *geom, *extra)
        planned = np.empty(lay.nbytes, np.uint8)
        with pytest.raises(GpuGraphError):  # on NumPy a short range is an error ...
            impl(np, *args, *geom, *extra, scratch=planned[:8])
        for scratch in (None, planned):  # ... on a device, the pool serves the batch tile
            got = impl(_DeviceLike(), *args, *geom, *extra, scratch=scratch)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_max_pool_select_of_another_h_in_its_planned_scratch():
    """max_pool(x, h) with h not x (a derivative's selection): h at torch's winner (ties,
    NaN, an all -inf window with padding), computed in exactly its planned scratch range
    (NaN-filled); a shorter range is an error; under jit its node has a scratch range."""
    from gpugraph.ops import pool
    from gpugraph.ops.registry import get_op

    x = RNG.integers(-2, 3, (2, 2, 7, 6)).astype(np.float64)  # many ties
    x[0, 0].flat[3], x[1, 1] = np.nan, -np.inf
    h = RNG.standard_normal(x.shape)
    geom = dict(window=(3, 3), stride=(2, 1), pad=((1, 1), (1, 1)))
    _, ind = F.max_pool2d(torch.tensor(x), 3, (2, 1), 1, return_indices=True)
    ind = ind.numpy()
    want = np.take_along_axis(h.reshape(4, -1), ind.reshape(4, -1), 1).reshape(ind.shape)
    lay = pool._select_layout(x.shape, ind.shape, geom["pad"], x.dtype, False)
    planned = np.full(-(-lay.nbytes // 8), np.nan).view(np.uint8)
    impl = get_op("max_pool").impl
    np.testing.assert_array_equal(impl(np, x, h, **geom, scratch=planned), want)
    with pytest.raises(GpuGraphError):
        impl(np, x, h, **geom, scratch=planned[: lay.nbytes - 8])
    v = RNG.standard_normal(x.shape)
    xs = RNG.standard_normal(x.shape)
    hvp = gg.jit(
        gg.grad(lambda x: gg.sum(gg.grad(lambda y: gg.sum(gg.max_pool(y, 3, 2, 1) ** 2))(x) * v)),
        backend="numpy",
    )
    selects = [n for n in hvp.lower(xs).memory.scratch if n.op == "max_pool"]
    assert any(n.inputs[0] is not n.inputs[1] for n in selects)  # the forward has one too
    xt = torch.tensor(xs, requires_grad=True)
    (gt,) = torch.autograd.grad((F.max_pool2d(xt, 3, 2, 1) ** 2).sum(), xt, create_graph=True)
    (gt * torch.tensor(v)).sum().backward()
    np.testing.assert_allclose(hvp(xs), xt.grad.numpy(), **TOL)
