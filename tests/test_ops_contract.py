"""diagonal, trace, einsum, tensordot, outer, meshgrid, resize/upsample: values against NumPy
and torch (eagerly and under jit with fusion on and off, size-0/1 dims), gradients against
torch in float64."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from tests.torch_ref import F, torch

RNG = np.random.default_rng(7)
TOL = dict(rtol=1e-10, atol=1e-12)
# every test also on backend="cpu" (tests/conftest.py): fused groups over gathers, scatters
# and contractions as native kernels
pytestmark = pytest.mark.usefixtures("jit_backend")


def check(fn, ref, args):
    want = ref(*args)
    for run in (fn, gg.jit(fn), gg.jit(fn, fuse=False)):
        got = run(*args)
        pairs = zip(got, want) if isinstance(want, (tuple, list)) else [(got, want)]
        for g, w in pairs:
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
            np.testing.assert_allclose(g, w, **TOL)


def check_grad(fn, tfn, *xs):
    w = RNG.standard_normal(np.shape(tfn(*map(torch.tensor, xs)).detach().numpy()))
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    (tfn(*ts) * torch.tensor(w)).sum().backward()
    argnums = tuple(range(len(xs)))
    grads = gg.grad(lambda *a: gg.sum(fn(*a) * w), argnums=argnums)(*xs)
    for g, t in zip(grads, ts):
        np.testing.assert_allclose(g, t.grad.numpy(), **TOL)


@pytest.mark.parametrize("shape", [(3, 4), (4, 3, 2), (1, 1), (0, 3), (2, 5, 5)])
@pytest.mark.parametrize("offset", [0, 1, -2])
def test_diagonal_trace(shape, offset):
    x = RNG.standard_normal(shape)
    check(lambda x: gg.diagonal(x, offset), lambda x: np.diagonal(x, offset), (x,))
    check(lambda x: gg.trace(x, offset), lambda x: np.trace(x, offset), (x,))
    if len(shape) == 3:
        check(lambda x: gg.diagonal(x, offset, 2, 0), lambda x: np.diagonal(x, offset, 2, 0), (x,))
    check_grad(
        lambda x: gg.diagonal(x, offset, -1, 0), lambda x: torch.diagonal(x, offset, -1, 0), x
    )


def test_trace_is_the_op():
    x = RNG.standard_normal((3, 3))
    assert gg.trace(x) == pytest.approx(np.trace(x))
    from gpugraph.trace import jit  # the submodule stays importable

    assert jit is gg.jit


EINSUMS = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 1)]),
    ("ij,ij->", [(3, 4), (3, 4)]),
    ("i,j->ij", [(3,), (0,)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(3, 3)]),
    ("ijk->kj", [(2, 3, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("abc,cd,bd->ad", [(2, 3, 4), (4, 5), (3, 5)]),
    ("ij,kj", [(2, 3), (4, 3)]),
    ("iij,jk->ik", [(3, 3, 2), (2, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]),
    ("i...->...", [(3, 2, 4)]),
    ("...i,...i->...", [(2, 3), (3,)]),
    ("ij...,jk...->ik...", [(2, 3, 4), (3, 5, 1)]),
    ("...ii->...i", [(2, 3, 3)]),
    ("ab...,b->a...", [(2, 3), (3,)]),
    ("...,...", [(2, 1), (3,)]),
]


@pytest.mark.parametrize("spec,shapes", EINSUMS, ids=[e[0] for e in EINSUMS])
def test_einsum(spec, shapes):
    xs = [RNG.standard_normal(s) for s in shapes]
    check(lambda *a: gg.einsum(spec, *a), lambda *a: np.einsum(spec, *a), xs)
    if all(np.prod(s) for s in shapes):
        check_grad(lambda *a: gg.einsum(spec, *a), lambda *a: torch.einsum(spec, *a), *xs)


def test_einsum_errors():
    with pytest.raises(gg.ShapeError, match="label 'j'"):
        gg.einsum("ij,jk->ik", np.ones((2, 3)), np.ones((4, 2)))
    with pytest.raises(gg.ShapeError, match="leaves out the 1 '...' dims"):
        gg.einsum("...i->i", np.ones((2, 3)))  # NumPy refuses it too
    with pytest.raises(gg.ShapeError, match="do not broadcast"):
        gg.einsum("...i,...i->...", np.ones((2, 3)), np.ones((4, 3)))


@pytest.mark.parametrize("axes", [2, 0, ([1, 0], [0, 2]), (2, 1)])
def test_tensordot(axes):
    a, b = RNG.standard_normal((4, 3, 5)), RNG.standard_normal((3, 5, 4))
    if axes == 2:
        b = RNG.standard_normal((3, 5, 2))
    check(lambda a, b: gg.tensordot(a, b, axes), lambda a, b: np.tensordot(a, b, axes), (a, b))
    check_grad(
        lambda a, b: gg.tensordot(a, b, axes),
        lambda a, b: torch.tensordot(
            a,
            b,
            axes
            if isinstance(axes, int)
            else tuple(map(list, axes))
            if isinstance(axes[0], list)
            else ([axes[0]], [axes[1]]),
        ),
        a,
        b,
    )


def test_outer_meshgrid():
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal(4)
    check(gg.outer, np.outer, (a, b))
    xs = (np.arange(3.0), np.arange(4), np.arange(2.0))
    for ix in ("xy", "ij"):
        check(
            lambda *a, ix=ix: gg.meshgrid(*a, indexing=ix),
            lambda *a, ix=ix: np.meshgrid(*a, indexing=ix),
            xs,
        )
        check(
            lambda *a, ix=ix: gg.meshgrid(*a, indexing=ix),
            lambda *a, ix=ix: np.meshgrid(*a, indexing=ix),
            xs[:2],
        )


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("size", [(9, 4), (5, 14), (1, 1), (3, 7)])
def test_resize_against_torch(mode, size):
    x = RNG.standard_normal((2, 3, 3, 7))
    tm = {"nearest": "nearest", "linear": "bilinear"}[mode]
    kw = {} if mode == "nearest" else {"align_corners": False}

    def tfn(x):
        return F.interpolate(x, size=size, mode=tm, **kw)

    check(lambda x: gg.resize(x, size, mode), lambda x: tfn(torch.tensor(x)).numpy(), (x,))
    check_grad(lambda x: gg.resize(x, size, mode), tfn, x)


def test_upsample_1d_3d():
    x1, x3 = RNG.standard_normal((1, 2, 5)), RNG.standard_normal((1, 1, 2, 3, 2))
    for x, tm in ((x1, "linear"), (x3, "trilinear")):
        for mode in ("nearest", "linear"):
            want = F.interpolate(
                torch.tensor(x),
                scale_factor=2,
                mode=tm if mode == "linear" else "nearest",
                **({"align_corners": False} if mode == "linear" else {}),
            )
            check(
                lambda x, mode=mode: gg.upsample(x, 2, mode),
                lambda x, want=want: want.numpy(),
                (x,),
            )
