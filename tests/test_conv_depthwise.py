"""Depthwise convolution (groups = C, one input channel per group) through its direct lowering
(ops/conv_depthwise.py: shifted flat runs, no im2col) against torch float64: values, both
gradients and conv_transpose, in 1/2/3 dims, with strides (the phase split), channel
multipliers, dilation and uneven padding; eager and under jit (planned scratch). im2col is made
to fail, so a passing test proves the direct path ran (the x gradient of a multiplier > 1
depthwise conv keeps the general path; a strided one with multiplier 1 runs by phase,
ops/conv_depthwise_t.py)."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.errors import GpuGraphError
from gpugraph.ops import conv_dispatch, conv_lower
from tests.conv_helpers import check_out_argument, no_im2col, torch_grads
from tests.torch_ref import F, torch

RNG = np.random.default_rng(5)
TOL = dict(rtol=1e-10, atol=1e-10)
SPATIAL = {1: (9,), 2: (7, 6), 3: (4, 5, 4)}


def _refuse(*a, **k):
    raise AssertionError("the general conv lowering ran on a depthwise conv")


@pytest.mark.parametrize(
    "d, mult, pad, dil, k, n, st",
    [
        (2, 1, 1, 1, 3, 2, 1),
        (2, 2, ((0, 2), (1, 0)), 2, 3, 1, 1),
        (1, 3, 0, 1, 5, 2, 1),
        (3, 1, 1, 1, 3, 1, 1),
        (2, 1, 2, 1, 5, 0, 1),
        (2, 1, 1, 1, 3, 2, 2),
        (2, 2, ((1, 2), (0, 1)), 2, 3, 1, (2, 3)),
        (1, 1, 2, 1, 4, 1, 3),
        (2, 1, ((1, 2), (0, 1)), 2, 3, 1, (2, 3)),
        (3, 1, 1, 1, 3, 1, 2),
    ],
)
def test_depthwise_conv_and_gradients_against_torch(d, mult, pad, dil, k, n, st, monkeypatch):
    c = 3
    x = RNG.standard_normal((n, c, *SPATIAL[d]))
    w = RNG.standard_normal((c * mult, 1, *(k,) * d))
    pads = pad if isinstance(pad, int) else list(pad)[:d]
    tconv = getattr(F, f"conv{d}d")

    def tf(x, w):
        if isinstance(pad, int):
            return tconv(x, w, None, st, pad, dil, c)
        flat = [v for lo_hi in reversed(pads) for v in lo_hi]
        return tconv(F.pad(x, flat), w, None, st, 0, dil, c)

    g = RNG.standard_normal(tf(torch.tensor(x), torch.tensor(w)).shape)
    want, grads = torch_grads(tf, [x, w], g)
    if mult == 1:  # conv_transpose too is a direct path (strided: by phase; no col2im)
        no_im2col(monkeypatch, "a depthwise conv")
        monkeypatch.setattr(conv_dispatch, "conv_transpose_impl", _refuse)
    else:  # the x gradient keeps the general path; conv and conv_weight must not
        monkeypatch.setattr(conv_lower, "conv_impl", _refuse)
        monkeypatch.setattr(conv_lower, "conv_weight_impl", _refuse)
        monkeypatch.setattr(conv_dispatch, "conv_impl", _refuse)
        monkeypatch.setattr(conv_dispatch, "conv_weight_impl", _refuse)

    def f(x, w):
        return gg.conv(x, w, stride=st, padding=pads, dilation=dil, groups=c)

    np.testing.assert_allclose(f(x, w), want, **TOL)
    np.testing.assert_allclose(gg.jit(f)(x, w), want, **TOL)
    grad = gg.grad(lambda x, w: gg.sum(f(x, w) * g), (0, 1))
    for got in (grad(x, w), gg.jit(grad)(x, w)):
        for a, e in zip(got, grads):
            np.testing.assert_allclose(a, e, **TOL)


@pytest.mark.parametrize("stride, outpad", [(1, 0), (2, 1)])
def test_depthwise_conv_transpose_against_torch(stride, outpad, monkeypatch):
    c = 4
    x = RNG.standard_normal((2, c, 5, 6))
    w = RNG.standard_normal((c, 1, 3, 3))
    want = F.conv_transpose2d(torch.tensor(x), torch.tensor(w), None, stride, 1, outpad, c).numpy()
    no_im2col(monkeypatch, "a depthwise conv")  # strided: the phase lowering, no col2im
    monkeypatch.setattr(conv_dispatch, "conv_transpose_impl", _refuse)
    got = gg.conv_transpose(x, w, stride=stride, padding=1, output_padding=outpad, groups=c)
    np.testing.assert_allclose(got, want, **TOL)


def test_depthwise_impls_write_into_out_contiguous_or_not():
    from gpugraph.ops.registry import get_op

    x, w = RNG.standard_normal((2, 3, 6, 5)), RNG.standard_normal((6, 1, 3, 3))
    geom = dict(stride=(1, 1), pad=((1, 1), (0, 1)), dilation=(1, 1), groups=3)
    y = get_op("conv").impl(np, x, w, **geom)
    w1 = w[:3]
    y1 = get_op("conv").impl(np, x, w1, **geom)
    calls = {
        "conv": ((x, w), {}),
        "conv_transpose": ((y1, w1), {"in_shape": (6, 5)}),
        "conv_weight": ((x, y), {"kernel": (3, 3)}),
    }
    check_out_argument(calls, geom)


class _OtherModule:
    """An array module that is not NumPy (NumPy underneath), as CuPy would be."""

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
def test_depthwise_runs_in_exactly_its_planned_scratch(stride):
    """Each primitive's scratch_bytes (the plan's reservation) is what the direct impl uses:
    it runs in exactly that range (NaN-filled, so reads of unwritten scratch would show), a
    shorter one is an error, and a non-NumPy module takes the same path."""
    from gpugraph.ops import conv_dispatch as cd
    from gpugraph.ops.registry import get_op

    x, w = RNG.standard_normal((2, 3, 7, 6)), RNG.standard_normal((3, 1, 3, 3))
    geom = dict(stride=stride, pad=((1, 1), (1, 0)), dilation=(1, 1), groups=3)
    y = get_op("conv").impl(np, x, w, **geom)
    g = tuple(geom.values())
    calls = {
        "conv": ((x, w), {}, cd._conv_layout(x.shape, w.shape, *g, x.dtype)),
        "conv_weight": (
            (x, y),
            {"kernel": (3, 3)},
            cd._conv_weight_layout(x.shape, y.shape, *g, (3, 3), x.dtype),
        ),
    }
    calls["conv_transpose"] = (  # strided: the phase lowering's layout
        (y, w),
        {"in_shape": (7, 6)},
        cd._conv_transpose_layout(y.shape, w.shape, *g, (7, 6), x.dtype),
    )
    for name, (args, extra, lay) in calls.items():
        impl = get_op(name).impl
        want = impl(np, *args, **geom, **extra)
        planned = np.full(lay.nbytes // 8, np.nan).view(np.uint8)
        assert planned.nbytes == lay.nbytes, name
        for xp in (np, _OtherModule()):
            got = impl(xp, *args, **geom, **extra, scratch=planned.copy())
            np.testing.assert_array_equal(got, want)
        with pytest.raises(GpuGraphError):
            impl(np, *args, **geom, **extra, scratch=planned[: lay.nbytes - 8])
