"""conv, conv_transpose and pooling against torch.nn.functional in float64: values, gradients
(and second derivatives) over a grid of stride/padding/dilation/groups in 1, 2 and 3 dims,
eagerly and under jit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import gpugraph as gg
from tests.torch_ref import F, torch

RNG = np.random.default_rng(3)
TOL = dict(rtol=1e-10, atol=1e-10)
SPATIAL = {1: (7,), 2: (6, 5), 3: (5, 6, 5)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
GRID = list(itertools.product((1, 2), (0, 1, (1, 2)), (1, 2), (1, 2)))


def _torch_pad(pad, d):
    return pad if isinstance(pad, int) else (pad[0],) * d  # torch takes symmetric pads


def _our_pad(pad, d):
    return pad if isinstance(pad, int) else [pad] * d  # (low, high) per dim


def _grads(f, args, g):
    ts = [torch.tensor(a, requires_grad=True) for a in args]
    out = f(*ts)
    out.backward(torch.tensor(g))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def _conv_case(d, stride, pad, dil, groups, under_jit):
    x = RNG.standard_normal((2, 4, *SPATIAL[d]))
    w = RNG.standard_normal((6, 4 // groups, *KERNEL[d]))
    b = RNG.standard_normal(6)
    conv = getattr(F, f"conv{d}d")
    if isinstance(pad, tuple):  # asymmetric: torch gets it through an explicit F.pad
        flat = [p for _ in range(d) for p in pad]

        def tf(x, w, b):
            return conv(F.pad(x, flat), w, b, stride, 0, dil, groups)
    else:

        def tf(x, w, b):
            return conv(x, w, b, stride, pad, dil, groups)

    g = RNG.standard_normal(tf(*map(torch.tensor, (x, w, b))).shape)
    want, grads = _grads(tf, [x, w, b], g)

    def f(x, w, b):
        return gg.conv(
            x, w, b, stride=stride, padding=_our_pad(pad, d), dilation=dil, groups=groups
        )

    np.testing.assert_allclose(f(x, w, b), want, **TOL)
    grad = gg.grad(lambda x, w, b: gg.sum(f(x, w, b) * g), (0, 1, 2))
    for got in (grad(x, w, b),) + ((gg.jit(grad)(x, w, b),) if under_jit else ()):
        for a, e in zip(got, grads):
            np.testing.assert_allclose(a, e, **TOL)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_conv_grid_against_torch(d):
    for k, (stride, pad, dil, groups) in enumerate(GRID):
        # eagerly everywhere; compiling is the slow part, so under jit a quarter of the grid
        _conv_case(d, stride, pad, dil, groups, under_jit=k % 4 == 0)


def _conv_transpose_case(d, stride, pad, outpad, dil, groups):
    x = RNG.standard_normal((2, 4, *SPATIAL[d]))
    w = RNG.standard_normal((4, 6 // groups, *KERNEL[d]))
    conv_t = getattr(F, f"conv_transpose{d}d")

    def tf(x, w):
        return conv_t(x, w, None, stride, pad, outpad, groups, dil)

    g = RNG.standard_normal(tf(torch.tensor(x), torch.tensor(w)).shape)
    want, grads = _grads(tf, [x, w], g)
    kw = dict(stride=stride, padding=pad, output_padding=outpad, dilation=dil, groups=groups)
    np.testing.assert_allclose(gg.conv_transpose(x, w, **kw), want, **TOL)
    grad = gg.grad(lambda x, w: gg.sum(gg.conv_transpose(x, w, **kw) * g), (0, 1))
    for a, e in zip((gg.jit(grad) if outpad else grad)(x, w), grads):
        np.testing.assert_allclose(a, e, **TOL)


@pytest.mark.parametrize("d", [1, 2])
def test_conv_transpose_grid_against_torch(d):
    for stride, pad, dil, groups in GRID:
        if not isinstance(pad, tuple):
            for outpad in range(max(stride, dil)):
                _conv_transpose_case(d, stride, pad, outpad, dil, groups)


def test_conv_second_derivatives_match_torch():
    x, w = RNG.standard_normal((2, 4, 6, 5)), RNG.standard_normal((6, 2, 3, 3))
    v = RNG.standard_normal(x.shape)

    def tf(x, w):
        y = F.conv2d(x, w, None, 2, 1, 1, 2)
        (gx,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
        return (gx * torch.tensor(v)).sum()

    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tf(xt, wt).backward()

    def f(x, w):
        gx = gg.grad(lambda x: gg.sum(gg.square(gg.conv(x, w, None, 2, 1, 1, 2))))(x)
        return gg.sum(gx * v)

    gx, gw = gg.jit(gg.grad(f, (0, 1)))(x, w)
    np.testing.assert_allclose(gx, xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(gw, wt.grad.numpy(), **TOL)


def test_conv_jvp_matches_vjp():
    x, w = RNG.standard_normal((1, 2, 5, 5)), RNG.standard_normal((3, 2, 3, 3))
    tx, tw = RNG.standard_normal(x.shape), RNG.standard_normal(w.shape)
    g = RNG.standard_normal((1, 3, 3, 3))
    loss = lambda x, w: gg.sum(gg.conv(x, w) * g)  # noqa: E731
    _, tangent = gg.jvp(loss, (x, w), (tx, tw))
    gx, gw = gg.grad(loss, (0, 1))(x, w)
    np.testing.assert_allclose(tangent, np.sum(gx * tx) + np.sum(gw * tw), rtol=1e-10)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_string_padding(padding):
    x, w = RNG.standard_normal((1, 2, 7, 6)), RNG.standard_normal((3, 2, 3, 2))
    ours = gg.conv(x, w, stride=2, padding=padding)
    if padding == "SAME":
        assert ours.shape == (1, 3, 4, 3)  # ceil(S / stride)
        # total padding 2 on H (low 1, high 1), 0... on W: (ceil(6/2)-1)*2 + 2 - 6 = 0
        want = F.conv2d(F.pad(torch.tensor(x), (0, 0, 1, 1)), torch.tensor(w), stride=2)
    else:
        want = F.conv2d(torch.tensor(x), torch.tensor(w), stride=2)
    np.testing.assert_allclose(ours, want.numpy(), **TOL)


def test_conv_and_pooling_with_fusion_off():
    x, w, b = RNG.standard_normal((2, 4, 6, 6)), RNG.standard_normal((4, 1, 3, 3)), np.ones(4)

    def f(x, w, b):
        h = gg.relu(gg.conv(x, w, b, padding=1, groups=4))
        return gg.avg_pool(gg.max_pool(h, 2), 2, 1, 1, count_include_pad=False)

    def tf(x, w, b):
        h = F.relu(F.conv2d(x, w, b, padding=1, groups=4))
        return F.avg_pool2d(F.max_pool2d(h, 2), 2, 1, 1, count_include_pad=False)

    g = RNG.standard_normal((2, 4, 4, 4))
    want, grads = _grads(tf, [x, w, b], g)
    grad = gg.grad(lambda x, w, b: gg.sum(f(x, w, b) * g), (0, 1, 2))
    for fuse in (False, True):
        np.testing.assert_allclose(gg.jit(f, fuse=fuse)(x, w, b), want, **TOL)
        for a, e in zip(gg.jit(grad, fuse=fuse)(x, w, b), grads):
            np.testing.assert_allclose(a, e, **TOL)


def test_depthwise_conv():
    x, w = RNG.standard_normal((2, 3, 6, 6)), RNG.standard_normal((6, 1, 3, 3))
    want = F.conv2d(torch.tensor(x), torch.tensor(w), padding=1, groups=3).numpy()
    np.testing.assert_allclose(
        gg.jit(lambda x, w: gg.conv(x, w, padding=1, groups=3))(x, w), want, **TOL
    )


def test_conv_size_zero_and_one_dims_and_float32():
    w = RNG.standard_normal((2, 3, 1, 1))
    for n in (0, 1):
        x = RNG.standard_normal((n, 3, 1, 1))
        for fn in (gg.conv, gg.jit(gg.conv)):
            np.testing.assert_allclose(fn(x, w), np.einsum("nchw,ocij->nohw", x, w), **TOL)
    x32, w32 = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32), w.astype(np.float32)
    got = gg.jit(gg.conv)(x32, w32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got, F.conv2d(torch.tensor(x32), torch.tensor(w32)).numpy(), rtol=1e-5
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: gg.conv(np.ones((1, 3, 4, 4)), np.ones((2, 2, 3, 3))), "groups"),
        (lambda: gg.conv(np.ones((1, 3, 2, 2)), np.ones((2, 3, 3, 3))), "larger than"),
        (lambda: gg.conv(np.ones((1, 3, 4, 4)), np.ones((2, 3, 3))), "rank"),
        (lambda: gg.conv(np.ones((1, 3, 4, 4)), np.ones((2, 3, 3, 3)), padding="FULL"), "SAME"),
        (lambda: gg.conv(np.ones((1, 3, 4, 4)), np.ones((2, 3, 3, 3)), padding=-1), "non-neg"),
        (lambda: gg.max_pool(np.ones((1, 3, 4, 4)), 2, padding=2), "at most half"),
    ],
)
def test_bad_arguments_are_shape_errors(call, match):
    with pytest.raises(gg.ShapeError, match=match):
        call()


POOL_GRID = list(itertools.product((2, 3), (None, 1, 2), (0, 1)))


def _pool_case(d, name, kw, window, stride, pad):
    x = RNG.standard_normal((2, 3, *SPATIAL[d]))
    tf = getattr(F, f"{name}{d}d")
    fn = getattr(gg, name)

    def tfn(x):
        return tf(x, window, stride, pad, **kw)

    def f(x):
        return fn(x, window, stride, pad, **kw)

    g = RNG.standard_normal(tfn(torch.tensor(x)).shape)
    want, (gx,) = _grads(tfn, [x], g)
    np.testing.assert_allclose(f(x), want, **TOL)
    grad = gg.grad(lambda x: gg.sum(f(x) * g))
    np.testing.assert_allclose(grad(x), gx, **TOL)
    if stride is None:  # compiling is the slow part: under jit for part of the grid
        np.testing.assert_allclose(gg.jit(f)(x), want, **TOL)
        np.testing.assert_allclose(gg.jit(grad)(x), gx, **TOL)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_pooling_grid_against_torch(d):
    kinds = [("max_pool", {}), ("avg_pool", {"count_include_pad": True})]
    kinds.append(("avg_pool", {"count_include_pad": False}))
    for window, stride, pad in POOL_GRID:
        if pad <= window // 2:
            for name, kw in kinds:
                _pool_case(d, name, kw, window, stride, pad)


def test_max_pool_ties_go_to_the_first_and_ints_work():
    x = np.zeros((1, 1, 2, 2))
    g = gg.grad(lambda x: gg.sum(gg.max_pool(x, 2)))(x)
    np.testing.assert_array_equal(g, [[[[1, 0], [0, 0]]]])  # as torch
    xi = np.arange(16).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(
        gg.max_pool(xi, 2, padding=1),
        F.max_pool2d(torch.tensor(xi).double(), 2, padding=1).long().numpy(),
    )


def test_max_pool_never_picks_padding():
    """Real elements equal to the padding value (-inf, the integer minimum) still win."""
    x = np.full((1, 1, 3, 3), -np.inf)
    want = F.max_pool2d(torch.tensor(x), 2, 1, 1).numpy()
    np.testing.assert_array_equal(gg.max_pool(x, 2, 1, 1), want)
    np.testing.assert_array_equal(gg.jit(lambda x: gg.max_pool(x, 2, 1, 1))(x), want)
    lowest = np.iinfo(np.int64).min
    np.testing.assert_array_equal(gg.max_pool(np.full((1, 1, 2, 2), lowest), 2, 1, 1), lowest)
    nan = np.array([[[[1.0, np.nan], [3.0, 2.0]]]])
    np.testing.assert_array_equal(gg.max_pool(nan, 2), [[[[np.nan]]]])


def test_max_pool_second_order_and_jvp():
    x = RNG.standard_normal((1, 2, 4, 4))
    t = RNG.standard_normal(x.shape)
    _, tangent = gg.jvp(lambda x: gg.sum(gg.max_pool(x, 2) ** 2), (x,), (t,))
    gx = gg.grad(lambda x: gg.sum(gg.max_pool(x, 2) ** 2))(x)
    np.testing.assert_allclose(tangent, np.sum(gx * t), rtol=1e-12)
    # d/dx of <grad, v> = 2 * (selection of v): a Hessian-vector product through max_pool_grad
    hv = gg.grad(lambda x: gg.sum(gg.grad(lambda y: gg.sum(gg.max_pool(y, 2) ** 2))(x) * t))(x)
    xt = torch.tensor(x, requires_grad=True)
    (gt,) = torch.autograd.grad((F.max_pool2d(xt, 2) ** 2).sum(), xt, create_graph=True)
    (gt * torch.tensor(t)).sum().backward()
    np.testing.assert_allclose(hv, xt.grad.numpy(), **TOL)


def test_global_pooling():
    x = RNG.standard_normal((2, 3, 4, 5))
    np.testing.assert_allclose(gg.global_avg_pool(x), x.mean(axis=(2, 3), keepdims=True), **TOL)
    np.testing.assert_allclose(gg.jit(gg.global_max_pool)(x), x.max(axis=(2, 3), keepdims=True))
