"""Normalization, the new reductions and scans, shape and creation ops: values against NumPy
(eagerly and under jit with fusion on and off, shapes with size-0 and size-1 dims) and
gradients against torch in float64."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from tests.torch_ref import F, torch

RNG = np.random.default_rng(11)
TOL = dict(rtol=1e-10, atol=1e-12)


def check(fn, ref, args, tol=TOL):
    want = ref(*args)
    outs = (fn(*args), gg.jit(fn)(*args), gg.jit(fn, fuse=False)(*args))
    for got in outs:
        if isinstance(want, (list, tuple)):
            assert len(got) == len(want)
            pairs = list(zip(got, want))
        else:
            pairs = [(got, want)]
        for g, w in pairs:
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
            np.testing.assert_allclose(g, w, **tol)


def torch_grad(tfn, x, w):
    xt = torch.tensor(x, requires_grad=True)
    (tfn(xt) * torch.tensor(w)).sum().backward()
    return xt.grad.numpy()


def check_grad(fn, tfn, x):
    w = RNG.standard_normal(np.shape(tfn(torch.tensor(x)).detach().numpy()))
    want = torch_grad(tfn, x, w)
    grad = gg.grad(lambda x: gg.sum(fn(x) * w))
    np.testing.assert_allclose(grad(x), want, **TOL)
    np.testing.assert_allclose(gg.jit(grad)(x), want, **TOL)


# ---- normalization ------------------------------------------------------------------------
X4 = RNG.standard_normal((3, 4, 5, 2))
W4, B4 = RNG.standard_normal(4), RNG.standard_normal(4)
NORMS = {
    "batch_norm": (
        lambda x: gg.batch_norm(x, W4, B4),
        lambda x: F.batch_norm(x, None, None, torch.tensor(W4), torch.tensor(B4), training=True),
    ),
    "batch_norm_inference": (
        lambda x: gg.batch_norm(x, W4, B4, B4, np.abs(W4), training=False),
        lambda x: F.batch_norm(
            x, torch.tensor(B4), torch.tensor(np.abs(W4)), torch.tensor(W4), torch.tensor(B4)
        ),
    ),
    "group_norm": (
        lambda x: gg.group_norm(x, 2, W4, B4),
        lambda x: F.group_norm(x, 2, torch.tensor(W4), torch.tensor(B4)),
    ),
    "instance_norm": (
        lambda x: gg.instance_norm(x, W4, B4),
        lambda x: F.instance_norm(x, weight=torch.tensor(W4), bias=torch.tensor(B4)),
    ),
    "rms_norm": (
        lambda x: gg.rms_norm(x, W4[:2]),
        lambda x: F.rms_norm(x, (2,), torch.tensor(W4[:2]), eps=1e-6),
    ),
    "layer_norm_axes": (
        lambda x: gg.layer_norm(x, axis=(-2, -1)),
        lambda x: F.layer_norm(x, (5, 2)),
    ),
}


@pytest.mark.parametrize("name", sorted(NORMS))
def test_normalization_against_torch(name):
    fn, tfn = NORMS[name]
    check(fn, lambda x: tfn(torch.tensor(x)).numpy(), [X4])
    check_grad(fn, tfn, X4)


def test_batch_norm_running_statistics():
    rm, rv = RNG.standard_normal(4), np.abs(RNG.standard_normal(4))
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    want = F.batch_norm(torch.tensor(X4), trm, trv, training=True, momentum=0.2).numpy()
    fn = lambda x, rm, rv: gg.batch_norm(x, None, None, rm, rv, momentum=0.2)  # noqa: E731
    for y, m, v in (fn(X4, rm, rv), gg.jit(fn)(X4, rm, rv)):
        np.testing.assert_allclose(y, want, **TOL)
        np.testing.assert_allclose(m, trm.numpy(), **TOL)  # torch updated its copies in place
        np.testing.assert_allclose(v, trv.numpy(), **TOL)
    with pytest.raises(gg.GpuGraphError, match="running_mean"):
        gg.batch_norm(X4, training=False)


# ---- reductions and scans -----------------------------------------------------------------
SHAPES = [(0,), (1,), (3, 1), (2, 3), (2, 0, 3)]


@pytest.mark.filterwarnings("ignore:Degrees of freedom")  # NumPy's std of an empty slice
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("axis", [None, 0, -1])
def test_reductions_against_numpy(shape, axis):
    x = RNG.standard_normal(shape)
    for fn, ref in (
        (gg.prod, np.prod),
        (gg.any, lambda x, axis: np.any(x > 0, axis=axis)),
        (gg.all, lambda x, axis: np.all(x > 0, axis=axis)),
        (gg.std, np.std),
        (gg.cumsum, np.cumsum),
        (gg.cumprod, np.cumprod),
        (
            gg.cummax,
            lambda x, axis: np.maximum.accumulate(x if axis is not None else x.ravel(), axis or 0),
        ),
    ):
        arg = x > 0 if fn in (gg.any, gg.all) else x
        with np.errstate(all="ignore"):  # std of an empty axis is NaN, as NumPy (and warns)
            check(lambda x, fn=fn: fn(x, axis=axis), lambda x, ref=ref: ref(x, axis=axis), [arg])
    if x.size and (axis is None or shape[axis]):
        check(lambda x: gg.argmin(x, axis=axis), lambda x: np.argmin(x, axis=axis), [x])


def test_ndarray_style_methods():
    x = RNG.standard_normal((3, 4))

    def f(x):
        return (
            x.prod(1),
            x.any(),
            (x > 0).all(0),
            x.std(),
            x.argmin(1),
            x.cumsum(0),
            x.cumprod(1),
            x.clip(-0.5, 0.5),
            x.round(),
            x.ravel(),
        )

    want = f(x)  # the same methods on the NumPy array
    for got, w in zip(gg.jit(f)(x), want):
        np.testing.assert_allclose(got, w, **TOL)


def test_reductions_keepdims_ints_and_ddof():
    xi = RNG.integers(-3, 4, (3, 4))
    check(lambda x: gg.prod(x, axis=1, keepdims=True), lambda x: np.prod(x, 1, keepdims=True), [xi])
    check(lambda x: gg.cumsum(x, axis=0), lambda x: np.cumsum(x, 0), [xi])
    check(lambda x: gg.cumprod(x, axis=1), lambda x: np.cumprod(x, 1), [xi.astype(np.int32)])
    check(lambda x: gg.cummax(x, axis=1), lambda x: np.maximum.accumulate(x, 1), [xi])
    x = RNG.standard_normal((3, 4))
    check(lambda x: gg.std(x, axis=1, ddof=1), lambda x: np.std(x, axis=1, ddof=1), [x])
    check(lambda x: gg.argmin(x, keepdims=True), lambda x: np.argmin(x, keepdims=True), [x])


@pytest.mark.parametrize("zeros", [0, 1, 2])
def test_prod_gradient_with_zeros_matches_torch(zeros):
    x = RNG.standard_normal((3, 5))
    x[0, :zeros] = 0.0
    x[1, 1 : 1 + zeros] = 0.0
    check_grad(lambda x: gg.prod(x, axis=1), lambda x: torch.prod(x, 1), x)
    check_grad(lambda x: gg.cumsum(x, axis=1), lambda x: torch.cumsum(x, 1), x)
    check_grad(lambda x: gg.cumprod(x, axis=1), lambda x: torch.cumprod(x, 1), x)
    if not zeros:  # at ties gg shares the gradient (as maximum does); torch picks one
        check_grad(lambda x: gg.cummax(x, axis=1), lambda x: torch.cummax(x, 1).values, x)
    check_grad(lambda x: gg.std(x, axis=0, ddof=1), lambda x: torch.std(x, 0), x)


NORM_CASES = [(None, None), (2, 1), (1, 0), (np.inf, 1), (-np.inf, 1), (3, 1), ("fro", None)]


@pytest.mark.parametrize("ord, axis", NORM_CASES)
def test_norm(ord, axis):
    x = RNG.standard_normal((3, 4))
    check(lambda x: gg.norm(x, ord, axis), lambda x: np.linalg.norm(x, ord, axis), [x])
    tord = "fro" if ord is None and axis is None else ord
    check_grad(lambda x: gg.norm(x, ord, axis), lambda x: torch.linalg.norm(x, tord, axis), x)


def test_norm_gradient_at_zero_is_zero_not_nan():
    g = gg.grad(lambda x: gg.norm(x))(np.zeros(3))
    np.testing.assert_array_equal(g, np.zeros(3))  # torch.linalg.norm gives 0 as well


# ---- shape ops ----------------------------------------------------------------------------
X = RNG.standard_normal((3, 4))
SHAPE_CASES = {
    "flip": (lambda x: gg.flip(x, 1), lambda x: np.flip(x, 1), lambda x: torch.flip(x, (1,))),
    "flip_all": (gg.flip, np.flip, lambda x: torch.flip(x, (0, 1))),
    "pad_constant": (
        lambda x: gg.pad(x, ((1, 2), (0, 1)), constant_values=1.5),
        lambda x: np.pad(x, ((1, 2), (0, 1)), constant_values=1.5),
        lambda x: F.pad(x, (0, 1, 1, 2), value=1.5),
    ),
    "pad_edge": (
        lambda x: gg.pad(x, 2, "edge"),
        lambda x: np.pad(x, 2, "edge"),
        lambda x: F.pad(x[None], (2, 2, 2, 2), mode="replicate")[0],
    ),
    "pad_reflect": (
        lambda x: gg.pad(x, (1, 2), "reflect"),
        lambda x: np.pad(x, (1, 2), "reflect"),
        lambda x: F.pad(x[None], (1, 2, 1, 2), mode="reflect")[0],
    ),
    "tile": (lambda x: gg.tile(x, (2, 1, 3)), lambda x: np.tile(x, (2, 1, 3)), None),
    "repeat": (lambda x: gg.repeat(x, 2, 1), lambda x: np.repeat(x, 2, 1), None),
    "repeat_flat": (lambda x: gg.repeat(x, 3), lambda x: np.repeat(x, 3), None),
    "roll": (lambda x: gg.roll(x, 5, 1), lambda x: np.roll(x, 5, 1), None),
    "roll_flat": (lambda x: gg.roll(x, -2), lambda x: np.roll(x, -2), None),
    "roll_axes": (
        lambda x: gg.roll(x, (1, -1), (0, 1)),
        lambda x: np.roll(x, (1, -1), (0, 1)),
        lambda x: torch.roll(x, (1, -1), (0, 1)),
    ),
    "split": (lambda x: gg.split(x, 2, 1), lambda x: np.split(x, 2, 1), None),
    "split_at": (lambda x: gg.split(x, [1, 5], 1), lambda x: np.split(x, [1, 5], 1), None),
    "ravel": (gg.ravel, np.ravel, None),
    "moveaxis": (
        lambda x: gg.moveaxis(x[None], 0, -1),
        lambda x: np.moveaxis(x[None], 0, -1),
        lambda x: torch.moveaxis(x[None], 0, -1),
    ),
    "tril": (lambda x: gg.tril(x, -1), lambda x: np.tril(x, -1), lambda x: torch.tril(x, -1)),
    "triu": (lambda x: gg.triu(x, 1), lambda x: np.triu(x, 1), lambda x: torch.triu(x, 1)),
}


@pytest.mark.parametrize("name", sorted(SHAPE_CASES))
def test_shape_ops(name):
    fn, ref, tfn = SHAPE_CASES[name]
    small = (X[:1], X[:, :0]) if name not in ("pad_edge", "pad_reflect") else (X[:, :3],)
    for x in (X, *small):
        if name.startswith("split") and x.shape[1] % 2:
            continue
        check(fn, ref, [x])
    # gradient: against torch where it has the op, else the adjoint identity of a linear map,
    # <x', grad of <f(x), g>> = <f(x'), g>
    if tfn is not None:
        check_grad(fn, tfn, X)
    else:
        _adjoint_check(fn, ref)


def _listed(v):
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _adjoint_check(fn, ref):
    gs = [RNG.standard_normal(np.shape(o)) for o in _listed(ref(X))]

    def loss(x):
        return sum(gg.sum(y * g) for y, g in zip(_listed(fn(x)), gs))

    grad = gg.jit(gg.grad(loss))(X)
    dx = RNG.standard_normal(X.shape)
    want = sum(np.sum(y * g) for y, g in zip(_listed(ref(dx)), gs))
    np.testing.assert_allclose(np.sum(grad * dx), want, rtol=1e-10)


def test_shape_op_errors():
    with pytest.raises(gg.UnsupportedError, match="reflect"):
        gg.pad(X, 4, "reflect")
    with pytest.raises(gg.ShapeError, match="equal parts"):
        gg.split(X, 3, 1)
    with pytest.raises(gg.UnsupportedError, match="mode"):
        gg.pad(X, 1, "wrap")


# ---- creation -----------------------------------------------------------------------------
@pytest.mark.parametrize("args", [(0, 1, 5), (-2.5, 3, 7, False), (1, 1, 1), (0, 1, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linspace(args, dtype):
    want = np.linspace(*args[:3], endpoint=args[3] if len(args) > 3 else True, dtype=dtype)
    kw = dict(endpoint=args[3] if len(args) > 3 else True, dtype=dtype)
    np.testing.assert_array_equal(gg.linspace(*args[:3], **kw), want)
    np.testing.assert_array_equal(
        gg.jit(lambda x: x + gg.linspace(*args[:3], **kw))(np.zeros((), dtype)), want
    )


@pytest.mark.parametrize("n, m, k", [(3, None, 0), (2, 4, 1), (4, 2, -1), (0, None, 0)])
def test_eye(n, m, k):
    np.testing.assert_array_equal(gg.eye(n, m, k), np.eye(n, m, k, dtype=np.float32))
    got = gg.jit(lambda x: gg.eye(n, m, k, dtype=np.float64) + x)(np.zeros(()))
    np.testing.assert_array_equal(got, np.eye(n, m, k))


# The primitives this module and its siblings compare with NumPy (tests/test_ops.py checks
# that every registered op is covered by some table).
COVERED = {
    "conv",
    "conv_transpose",
    "conv_weight",
    "max_pool",
    "max_pool_grad",
    "avg_pool_sum",  # and its adjoint: against torch in tests/test_conv_pool_avg.py
    "avg_pool_sum_grad",
    "prod",
    "argmin",
    "any",
    "all",
    "cumsum",
    "flip",
}
