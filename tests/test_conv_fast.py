"""The conv fast paths against torch float64: 1x1 kernels without padding (a GEMM on x itself,
no im2col), strided and grouped, in 1/2/3 dims, values, gradients and conv_transpose; the
im2col path at size-0 and size-1 batches; the forward max_pool as a running window maximum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.ops import conv as conv_mod
from tests.conv_helpers import check_out_argument, no_im2col, torch_grads
from tests.torch_ref import F, torch

RNG = np.random.default_rng(11)
TOL = dict(rtol=1e-10, atol=1e-10)
SPATIAL = {1: (7,), 2: (6, 5), 3: (3, 4, 5)}


def _pointwise_case(d, stride, groups, dil):
    tconv = getattr(F, f"conv{d}d")
    x = RNG.standard_normal((2, 4, *SPATIAL[d]))
    w = RNG.standard_normal((6, 4 // groups, *(1,) * d))

    def tf(x, w):
        return tconv(x, w, None, stride, 0, dil, groups)

    g = RNG.standard_normal(tf(torch.tensor(x), torch.tensor(w)).shape)
    want, grads = torch_grads(tf, [x, w], g)

    def f(x, w):
        return gg.conv(x, w, stride=stride, dilation=dil, groups=groups)

    np.testing.assert_allclose(f(x, w), want, **TOL)
    grad = gg.grad(lambda x, w: gg.sum(f(x, w) * g), (0, 1))
    for got in (grad(x, w), gg.jit(grad)(x, w)):
        for a, e in zip(got, grads):
            np.testing.assert_allclose(a, e, **TOL)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_pointwise_conv_and_gradients_against_torch(d, monkeypatch):
    no_im2col(monkeypatch, "a 1x1 unpadded conv")
    for stride, groups, dil in itertools.product((1, 2, (2, 1, 3)[:d]), (1, 2), (1, 2)):
        _pointwise_case(d, stride, groups, dil)


@pytest.mark.parametrize(
    "stride, outpad, dil", [(1, 0, 1), (2, 0, 1), (2, 1, 1), (3, 2, 1), (1, 1, 2)]
)
def test_pointwise_conv_transpose_against_torch(stride, outpad, dil, monkeypatch):
    no_im2col(monkeypatch, "a 1x1 unpadded conv")
    x = RNG.standard_normal((2, 4, 5, 4))
    w = RNG.standard_normal((4, 3, 1, 1))

    def tf(x, w):
        return F.conv_transpose2d(x, w, None, stride, 0, outpad, 1, dil)

    g = RNG.standard_normal(tf(torch.tensor(x), torch.tensor(w)).shape)
    want, grads = torch_grads(tf, [x, w], g)

    def f(x, w):
        return gg.conv_transpose(x, w, stride=stride, output_padding=outpad, dilation=dil)

    np.testing.assert_allclose(f(x, w), want, **TOL)
    for a, e in zip(gg.grad(lambda x, w: gg.sum(f(x, w) * g), (0, 1))(x, w), grads):
        np.testing.assert_allclose(a, e, **TOL)


def test_pointwise_second_derivative_matches_torch():
    x, w = RNG.standard_normal((2, 4, 4, 4)), RNG.standard_normal((3, 4, 1, 1))

    def ours(x, w):
        return gg.sum(gg.square(gg.conv(x, w, stride=2)))

    hx = gg.grad(lambda x, w: gg.sum(gg.grad(ours, 1)(x, w) ** 2))(x, w)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    (gw,) = torch.autograd.grad((F.conv2d(xt, wt, stride=2) ** 2).sum(), wt, create_graph=True)
    (gx,) = torch.autograd.grad((gw**2).sum(), xt)
    np.testing.assert_allclose(hx, gx.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_grouped_strided_conv_at_small_batches(n):
    x, w = RNG.standard_normal((n, 4, 5, 5)), RNG.standard_normal((6, 2, 3, 3))
    g = RNG.standard_normal((n, 6, 3, 3))

    def tf(x, w):
        return F.conv2d(x, w, None, 2, 1, 1, 2)

    want, grads = torch_grads(tf, [x, w], g)
    f = lambda x, w: gg.conv(x, w, stride=2, padding=1, groups=2)  # noqa: E731
    np.testing.assert_allclose(f(x, w), want, **TOL)
    for a, e in zip(gg.jit(gg.grad(lambda x, w: gg.sum(f(x, w) * g), (0, 1)))(x, w), grads):
        np.testing.assert_allclose(a, e, **TOL)


def test_forward_max_pool_is_the_window_max(monkeypatch):
    """max_pool(x) takes the running-maximum path (no window copy); NaN wins, all -inf and
    integer-minimum windows next to padding give the same values as torch."""
    from gpugraph.ops import pool

    ran = []
    real = pool._window_max
    monkeypatch.setattr(pool, "_window_max", lambda *a: ran.append(1) or real(*a))
    x = RNG.standard_normal((2, 3, 7, 6))
    x[0, 0, 0, 0], x[1, 1] = np.nan, -np.inf
    want = F.max_pool2d(torch.tensor(x), 3, 2, 1).numpy()
    for fn in (gg.max_pool, gg.jit(gg.max_pool, static_argnums=(1, 2, 3))):
        np.testing.assert_array_equal(fn(x, 3, 2, 1), want)
    xi = RNG.integers(-5, 5, (1, 2, 5, 5)).astype(np.int32)
    xi[0, 0] = np.iinfo(np.int32).min
    want = F.max_pool2d(torch.tensor(xi, dtype=torch.float64), 2, 1, 1).numpy()
    np.testing.assert_array_equal(gg.max_pool(xi, 2, 1, 1), want.astype(np.int32))
    assert len(ran) == 3


@pytest.mark.parametrize("k, pad", [(1, ((0, 0), (0, 0))), (3, ((1, 1), (1, 1)))])
def test_impls_write_into_out_contiguous_or_not(k, pad):
    """The runtime passes the planned buffer as out=: the GEMM writes into it (contiguous) or
    the result is copied in (a strided buffer); either way out holds what the plain call
    returns, and is what comes back."""

    x, w = RNG.standard_normal((2, 4, 5, 5)), RNG.standard_normal((6, 2, k, k))
    geom = dict(stride=(1, 1), pad=pad, dilation=(1, 1), groups=2)
    y = conv_mod._conv_impl(np, x, w, **geom)
    calls = {
        "conv": ((x, w), {}),
        "conv_transpose": ((y, w), {"in_shape": (5, 5)}),
        "conv_weight": ((x, y), {"kernel": (k, k)}),
    }
    check_out_argument(calls, geom)
