"""bfloat16 (ml_dtypes): every op runs on float32 and rounds its results to bfloat16, as JAX
and ml_dtypes compute; JAX's promotion; gradients; fused kernels cast with __nv_bfloat16 and
give ml_dtypes' bits on the kernel emulator."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from tests.kernel_helpers import requires_emulator, requires_nvrtc, run_graph_emulated
from tests.test_dtypes import CASES
from tests.test_ops import sample

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
RNG = np.random.default_rng(11)
TOL = dict(rtol=3e-2, atol=3e-2)  # bfloat16 keeps 8 significant bits (ulp 2**-7 relative)


def bf16_sample(shape, domain):
    return sample(shape, np.float32, domain, RNG).astype(BF16)


def _f32(a):
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype == BF16 else a


def _check(got, want32, what):
    got, want32 = np.asarray(got), np.asarray(want32)
    assert got.shape == want32.shape, what
    if want32.dtype == np.float32:
        assert got.dtype == BF16, (what, got.dtype)
        want = want32.astype(BF16).astype(np.float32)
        np.testing.assert_allclose(got.astype(np.float32), want, **TOL, err_msg=what)
    else:
        assert got.dtype == want32.dtype, (what, got.dtype)
        np.testing.assert_array_equal(got, want32, err_msg=what)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_op_tables_match_float32(name):
    fn, domain, arity = CASES[name]
    args = [bf16_sample((3, 4), domain) for _ in range(arity)]
    with np.errstate(all="ignore"):
        want = fn(*[_f32(a) for a in args])
        _check(fn(*args), want, f"{name} eager")
        for fuse in (True, False):
            _check(gg.jit(fn, backend="numpy", fuse=fuse)(*args), want, f"{name} fuse={fuse}")


@requires_nvrtc
@requires_emulator
def test_bfloat16_kernels_give_ml_dtypes_bits_on_the_emulator():
    """One fused kernel: bfloat16 loads, float32 math, every op's result rounded to bfloat16,
    at inf, NaN, the largest finite value and subnormals too; equal to NumPy/ml_dtypes bit for
    bit (compiled under NVRTC with cuda_bf16.h first)."""
    edges = [np.inf, -np.inf, np.nan, 0.0, -0.0, 3.38e38, 1e-40, -1e-39]
    x = np.concatenate([RNG.uniform(-3, 3, 40), edges]).astype(BF16)
    y = RNG.uniform(-3, 3, x.size).astype(BF16)

    def f(x, y):
        return gg.tanh(x) * 2 + y, x > y, gg.astype(x, np.float32), gg.exp(x * y) - 1.0

    c = gg.jit(f, backend="numpy").lower(x, y)
    assert c.graph.op_counts() == {"fused": 1}
    assert any("gg_bfloat16" in src for src in c.kernels.values())
    with np.errstate(all="ignore"):
        want = gg.jit(f, backend="numpy", fuse=False)(x, y)  # NumPy/ml_dtypes, op by op
        got = run_graph_emulated(c.graph, [x, y])
    for w, g in zip(want, got):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(_f32(g), _f32(w))


def test_casts_to_bfloat16_from_other_than_float32_stay_unfused_with_a_note():
    x = np.linspace(-2, 2, 9)  # float64: ml_dtypes rounds float64 -> bfloat16 its own way
    c = gg.jit(lambda x: gg.astype(x * 3.0, BF16), backend="numpy").lower(x)
    assert "astype" in c.graph.op_counts()
    assert "bfloat16 is only cast from and to float32" in c.explain()
    np.testing.assert_array_equal(c(x), (x * 3.0).astype(BF16))


@pytest.mark.parametrize(
    "other, want",
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.float16, np.float32),
        (np.int32, BF16),
        (np.int8, BF16),
        (np.uint8, BF16),
        (np.bool_, BF16),
    ],
)
def test_promotion_as_jax(other, want):
    x, y = np.ones(3, BF16), np.ones(3, other)
    assert gg.add(x, y).dtype == want and gg.jit(gg.add)(x, y).dtype == want
    assert gg.multiply(x, 2.5).dtype == BF16 and gg.jit(lambda x: 1 - x)(x).dtype == BF16


def test_bfloat16_reductions_gradients_and_matmul():
    x = (RNG.standard_normal((3, 500)) * 0.5 + 0.25).astype(BF16)
    for fn in (lambda x: gg.mean(x, axis=1), lambda x: gg.softmax(x, axis=1)[:, :3]):
        want = fn(x.astype(np.float32))
        got = gg.jit(fn)(x)
        assert got.dtype == BF16
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=2e-2, atol=2e-3)
    w = (RNG.standard_normal((500, 4)) * 0.1).astype(BF16)

    def loss(x, w):
        return gg.sum(gg.tanh(gg.matmul(x, w)))

    want = gg.grad(loss, argnums=(0, 1))(x.astype(np.float32), w.astype(np.float32))
    for got in (gg.grad(loss, argnums=(0, 1))(x, w), gg.jit(gg.grad(loss, argnums=(0, 1)))(x, w)):
        for g, wt in zip(got, want):
            assert g.dtype == BF16
            np.testing.assert_allclose(g.astype(np.float32), wt, rtol=3e-2, atol=3e-2)


def test_bfloat16_random_draws():
    k = gg.random.key(5)
    u = gg.random.uniform(k, (20000,), BF16)
    assert u.dtype == BF16 and u.min() >= 0 and u.max() < 1
    n = gg.random.normal(k, (20000,), BF16).astype(np.float32)
    assert np.isfinite(n).all() and abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05


@requires_emulator  # backend="cpu" needs the same host compiler
def test_backend_cpu_runs_bfloat16_groups_natively():
    x = RNG.standard_normal((4, 9)).astype(BF16)

    def f(x):
        return gg.tanh(x) * 2 + x

    c = gg.jit(f, backend="cpu").lower(x)
    np.testing.assert_array_equal(_f32(c(x)), _f32(gg.jit(f, backend="numpy")(x)))
    assert "runs on NumPy" not in c.explain()  # tests/test_cpu_bfloat16.py has the edge values
