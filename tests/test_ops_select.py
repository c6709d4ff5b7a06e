"""Selection ops (take_along_axis, gather/scatter, sort, argsort, top_k, one_hot,
segment_sum, x.at[...]): values against NumPy/torch eagerly and under jit with fusion on and
off, shapes with size-0/1 dims, gradients against torch in float64, jvp against vjp."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from tests.torch_ref import torch

RNG = np.random.default_rng(5)
TOL = dict(rtol=1e-10, atol=1e-12)
# every test also on backend="cpu" (tests/conftest.py): fused groups over gathers, scatters
# and contractions as native kernels
pytestmark = pytest.mark.usefixtures("jit_backend")


def check(fn, ref, args):
    want = ref(*args)
    for run in (fn, gg.jit(fn), gg.jit(fn, fuse=False)):
        got = run(*args)
        pairs = zip(got, want) if isinstance(want, tuple) else [(got, want)]
        for g, w in pairs:
            g, w = np.asarray(g), np.asarray(w)
            assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
            np.testing.assert_allclose(g, w, **TOL)


def check_grad(fn, tfn, x):
    w = RNG.standard_normal(np.shape(tfn(torch.tensor(x)).detach().numpy()))
    xt = torch.tensor(x, requires_grad=True)
    (tfn(xt) * torch.tensor(w)).sum().backward()
    grad = gg.grad(lambda x: gg.sum(fn(x) * w))
    np.testing.assert_allclose(grad(x), xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(gg.jit(grad)(x), xt.grad.numpy(), **TOL)
    # forward mode agrees with reverse mode: <jvp(t), w> == <t, vjp(w)>
    t = RNG.standard_normal(x.shape)
    _, jt = gg.jvp(fn, (x,), (t,))
    np.testing.assert_allclose(
        np.sum(np.asarray(jt) * w), np.sum(t * xt.grad.numpy()), rtol=1e-9, atol=1e-12
    )


SHAPES = [(3, 4), (1, 5), (4, 1), (0, 3), (2, 3, 4)]


@pytest.mark.parametrize("shape", SHAPES)
def test_take_along_axis_and_gather(shape):
    x = RNG.standard_normal(shape)
    ax = len(shape) - 1
    n = shape[ax]
    idx_shape = shape[:ax] + (max(n - 1, 0) + 2 if n else 0,)
    idx = RNG.integers(-n, n, idx_shape) if n else np.zeros(idx_shape, np.int64)
    check(lambda x: gg.take_along_axis(x, idx, ax), lambda x: np.take_along_axis(x, idx, ax), (x,))
    if n:
        pos = idx % n
        check_grad(
            lambda x: gg.gather(x, ax, idx), lambda x: torch.gather(x, ax, torch.tensor(pos)), x
        )


def test_gather_smaller_index_and_errors():
    x = RNG.standard_normal((4, 5))
    idx = np.array([[0, 3], [1, 1], [2, 0]])
    want = torch.gather(torch.tensor(x), 1, torch.tensor(idx)).numpy()
    check(lambda x: gg.gather(x, 1, idx), lambda x: want, (x,))
    with pytest.raises(gg.GpuGraphError, match="out of range"):
        gg.gather(x, 1, np.array([[5]]))
    with pytest.raises(gg.DTypeError, match="integers"):
        gg.gather(x, 1, np.zeros((1, 1)))


@pytest.mark.parametrize("reduce", ["none", "add", "mul", "min", "max"])
def test_scatter_against_torch(reduce):
    x = RNG.standard_normal((4, 5))
    idx = np.array([[0, 3, 1], [2, 2, 2]])  # duplicates along axis 1
    if reduce == "none":
        idx = np.array([[0, 3, 1], [2, 4, 1]])  # unique: the result is defined
    src = RNG.standard_normal((2, 3))
    ti = torch.tensor(idx)
    if reduce == "none":
        want = torch.tensor(x).scatter(1, ti, torch.tensor(src)).numpy()
    else:
        tr = {"add": "sum", "mul": "prod", "min": "amin", "max": "amax"}[reduce]
        want = torch.tensor(x).scatter_reduce(1, ti, torch.tensor(src), tr).numpy()
    check(lambda x, s: gg.scatter(x, 1, idx, s, reduce), lambda x, s: want, (x, src))
    if reduce == "mul":
        return
    tr = {"none": None, "add": "sum", "min": "amin", "max": "amax"}[reduce]
    for which in (0, 1):

        def f(v, which=which):
            a, b = (v, src) if which == 0 else (x, v)
            return gg.scatter(a, 1, idx, b, reduce)

        def tf(v, which=which):
            a, b = (v, torch.tensor(src)) if which == 0 else (torch.tensor(x), v)
            return a.scatter(1, ti, b) if tr is None else a.scatter_reduce(1, ti, b, tr)

        check_grad(f, tf, x if which == 0 else src)


def test_scatter_add_duplicates_deterministic():
    idx = np.array([0, 1, 0, 0, 2])
    src = np.array([1e16, 1.0, -1e16, 1.0, 3.0])
    want = np.zeros(3)
    np.add.at(want, idx, src)
    got = gg.jit(lambda z, s: gg.scatter_add(z, 0, idx, s))(np.zeros(3), src)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 1), (0, 4), (3, 0)])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_argsort(shape, descending):
    x = RNG.integers(0, 3, shape).astype(np.float64)  # ties: stability is checked

    def ref_idx(x):
        return torch.sort(torch.tensor(x), dim=-1, descending=descending, stable=True)[1].numpy()

    check(lambda x: gg.argsort(x, -1, descending), ref_idx, (x,))
    check(
        lambda x: gg.sort(x, -1, descending), lambda x: np.take_along_axis(x, ref_idx(x), -1), (x,)
    )
    if x.size:
        xr = RNG.standard_normal(shape)
        check_grad(
            lambda x: gg.sort(x, -1, descending),
            lambda x: torch.sort(x, -1, descending=descending)[0],
            xr,
        )


def test_sort_nan_order():
    x = np.array([2.0, np.nan, -1.0, 5.0])
    np.testing.assert_array_equal(gg.sort(x), np.sort(x))
    np.testing.assert_array_equal(gg.argsort(x, descending=True), [1, 3, 0, 2])


@pytest.mark.parametrize("k", [0, 1, 3])
def test_top_k(k):
    x = RNG.standard_normal((3, 5))
    tv, ti = torch.topk(torch.tensor(x), k, -1)
    check(lambda x: gg.top_k(x, k), lambda x: (tv.numpy(), ti.numpy()), (x,))
    check_grad(lambda x: gg.top_k(x, k)[0], lambda x: torch.topk(x, k, -1)[0], x)
    with pytest.raises(gg.ShapeError, match="top_k"):
        gg.top_k(x, 6)


def test_one_hot_and_segment_sum():
    idx = np.array([[0, 2], [4, 1]])
    check(
        lambda i: gg.one_hot(i, 3),
        lambda i: np.eye(4, 3, dtype=np.float32)[np.minimum(i, 3)],
        (idx,),
    )
    data = RNG.standard_normal((5, 3))
    ids = np.array([0, 2, 0, 1, 2])
    want = np.zeros((4, 3))
    np.add.at(want, ids, data)
    check(lambda d: gg.segment_sum(d, ids, 4), lambda d: want, (data,))
    tfn = lambda d: torch.zeros(4, 3, dtype=d.dtype).index_add(0, torch.tensor(ids), d)  # noqa: E731
    check_grad(lambda d: gg.segment_sum(d, ids, 4), tfn, data)


AT_INDICES = [1, (slice(None), 2), (slice(0, 3, 2), slice(1, None, 2)), np.array([2, 0, 2])]


@pytest.mark.parametrize("idx", AT_INDICES, ids=["int", "col", "strided", "array-dup"])
@pytest.mark.parametrize("op", ["set", "add", "multiply", "min", "max"])
def test_at(idx, op):
    x = RNG.standard_normal((3, 4))
    v = RNG.standard_normal(np.empty((3, 4))[idx].shape)
    if op == "set" and isinstance(idx, np.ndarray):
        idx = np.array([2, 0])
        v = v[:2]

    def ref(x, v):
        y = x.copy()
        uf = {"add": np.add, "multiply": np.multiply, "min": np.minimum, "max": np.maximum}
        if op == "set":
            y[idx] = v
        else:
            uf[op].at(y, idx, v)
        return y

    check(lambda x, v: getattr(gg.at(x)[idx], op)(v), ref, (x, v))
    got = gg.jit(lambda x, v: getattr(x.at[idx], op)(v))(x, v)
    np.testing.assert_allclose(got, ref(x, v), **TOL)
    if op in ("set", "add"):  # linear: the gradient is the adjoint, checked by torch
        g = gg.grad(lambda x, v: gg.sum(getattr(x.at[idx], op)(v) * x), argnums=(0, 1))(x, v)
        xt, vt = torch.tensor(x, requires_grad=True), torch.tensor(v, requires_grad=True)
        ti = torch.tensor(idx) if isinstance(idx, np.ndarray) else idx
        y = xt.clone()
        y = y.index_put((ti,), vt, accumulate=op == "add") if isinstance(idx, np.ndarray) else y
        if not isinstance(idx, np.ndarray):
            y[idx] = vt if op == "set" else y[idx] + vt
        (y * xt).sum().backward()
        np.testing.assert_allclose(g[0], xt.grad.numpy(), **TOL)
        np.testing.assert_allclose(g[1], vt.grad.numpy(), **TOL)


def test_at_scalar_value_and_traced_index():
    x = np.arange(6.0)
    np.testing.assert_array_equal(gg.jit(lambda x: x.at[2:4].set(0))(x), [0, 1, 0, 0, 4, 5])
    f = gg.jit(lambda x, i: x.at[i].add(1.0))
    np.testing.assert_array_equal(f(x, np.array([0, 0, 5])), [2, 1, 2, 3, 4, 6])
    np.testing.assert_array_equal(x, np.arange(6.0))  # never modified in place


# primitives this file compares with NumPy/torch (tests/test_ops.py checks every op is somewhere)
COVERED = {"take_along_axis", "scatter", "argsort"}
