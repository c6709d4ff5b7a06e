"""avg_pool through its direct windowed sum (ops/pool_avg.py) against torch float64: values,
gradients and a second-order gradient in 1/2/3 dims, with strides, padding (uneven too) and
both ``count_include_pad``; eager and under jit. im2col and the conv lowering are made to fail,
so a passing test proves the direct path ran."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.ops import conv_dispatch, conv_lower
from tests.conv_helpers import no_im2col, torch_grads
from tests.torch_ref import F, torch

RNG = np.random.default_rng(11)
TOL = dict(rtol=1e-10, atol=1e-10)
SPATIAL = {1: (9,), 2: (7, 6), 3: (5, 6, 4)}


def _refuse(*a, **k):
    raise AssertionError("the conv lowering ran on avg_pool")


@pytest.fixture
def direct_only(monkeypatch):
    no_im2col(monkeypatch, "avg_pool")
    for mod in (conv_lower, conv_dispatch):
        for name in ("conv_impl", "conv_transpose_impl", "conv_weight_impl"):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, _refuse)


@pytest.mark.parametrize(
    "d, k, st, pad, include",
    [
        (2, 3, 1, 1, True),
        (2, 3, 2, 1, False),
        (2, (2, 3), (1, 2), (1, 0), False),
        (1, 4, 3, 2, False),
        (1, 2, None, 0, True),
        (3, 3, 2, 1, True),
        (3, 2, 1, 1, False),
    ],
)
def test_avg_pool_and_gradient_against_torch(d, k, st, pad, include, direct_only):
    x = RNG.standard_normal((2, 3, *SPATIAL[d]))
    tpool = getattr(F, f"avg_pool{d}d")

    def tf(x):
        return tpool(x, k, st, pad, count_include_pad=include)

    g = RNG.standard_normal(tf(torch.tensor(x)).shape)
    want, (gx,) = torch_grads(tf, [x], g)

    def f(x):
        return gg.avg_pool(x, k, st, pad, count_include_pad=include)

    np.testing.assert_allclose(f(x), want, **TOL)
    np.testing.assert_allclose(gg.jit(f)(x), want, **TOL)
    grad = gg.grad(lambda x: gg.sum(f(x) * g))
    for got in (grad(x), gg.jit(grad)(x)):
        np.testing.assert_allclose(got, gx, **TOL)


@pytest.mark.parametrize("st", [1, 3])
@pytest.mark.parametrize("pad", [((0, 2), (1, 0)), ((1, 0), (1, 1))])
def test_avg_pool_uneven_padding_counts_the_zeros(st, pad, direct_only):
    """Asymmetric padding (torch has none): count_include_pad=True is a pool of the zero-padded
    input, on both the flat-run (overlapping windows) and the box path (stride = window)."""
    x = RNG.standard_normal((1, 2, 7, 6))
    flat = [v for lo_hi in reversed(pad) for v in lo_hi]
    tf = lambda x: F.avg_pool2d(F.pad(x, flat), 3, st)  # noqa: E731
    g = RNG.standard_normal(tf(torch.tensor(x)).shape)
    want, (gx,) = torch_grads(tf, [x], g)
    f = lambda x: gg.avg_pool(x, 3, st, pad)  # noqa: E731
    np.testing.assert_allclose(f(x), want, **TOL)
    np.testing.assert_allclose(gg.grad(lambda x: gg.sum(f(x) * g))(x), gx, **TOL)


def test_avg_pool_second_order_against_torch(direct_only):
    """The gradient's gradient runs the two primitives again (each is the other's adjoint)."""
    x = RNG.standard_normal((2, 2, 6, 7))
    v = RNG.standard_normal(x.shape)

    def tf(x):
        y = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        (gx,) = torch.autograd.grad((y**2).sum(), x, create_graph=True)
        return (gx * torch.tensor(v)).sum()

    xt = torch.tensor(x, requires_grad=True)
    tf(xt).backward()

    def h(x):
        gx = gg.grad(lambda x: gg.sum(gg.avg_pool(x, 3, 2, 1, count_include_pad=False) ** 2))
        return gg.sum(gx(x) * v)

    np.testing.assert_allclose(gg.grad(h)(x), xt.grad.numpy(), **TOL)


def test_avg_pool_impls_write_into_out_contiguous_or_not():
    from gpugraph.ops.registry import get_op

    x = RNG.standard_normal((2, 3, 7, 6))
    geom = dict(window=(3, 2), stride=(2, 1), pad=((1, 1), (1, 0)))
    y = get_op("avg_pool_sum").impl(np, x, **geom)
    for name, arg, extra in (
        ("avg_pool_sum", x, {}),
        ("avg_pool_sum_grad", y, {"x_shape": x.shape}),
    ):
        impl = get_op(name).impl
        want = impl(np, arg, **geom, **extra)
        for out in (np.full_like(want, np.nan), np.full(want.shape[::-1], np.nan).T):
            assert impl(np, arg, **geom, **extra, out=out) is out
            np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("pad", [((1, 1), (1, 0)), ((0, 0), (0, 0))])
def test_avg_pool_runs_in_exactly_its_planned_scratch(pad):
    """The flat-run path's scratch_bytes is what it uses: it runs in exactly that range
    (NaN-filled, so reads of unwritten scratch would show), and a shorter one is an error."""
    from gpugraph.errors import GpuGraphError
    from gpugraph.ops import pool_avg
    from gpugraph.ops.registry import get_op

    x = RNG.standard_normal((2, 3, 7, 6))
    geom = dict(window=(3, 2), stride=(1, 1), pad=pad)
    y = get_op("avg_pool_sum").impl(np, x, **geom)
    lay = pool_avg._layout(x.shape, (3, 2), (1, 1), pad, x.dtype)
    assert lay.nbytes > 0
    for name, arg, extra in (
        ("avg_pool_sum", x, {}),
        ("avg_pool_sum_grad", y, {"x_shape": x.shape}),
    ):
        impl = get_op(name).impl
        want = impl(np, arg, **geom, **extra)
        planned = np.full(lay.nbytes // 8, np.nan).view(np.uint8)
        got = impl(np, arg, **geom, **extra, scratch=planned)
        np.testing.assert_array_equal(got, want)
        with pytest.raises(GpuGraphError):
            impl(np, arg, **geom, **extra, scratch=planned[: lay.nbytes - 8])
