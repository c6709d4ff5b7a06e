"""gg.random: Threefry-2x32 known answers, the same bits eagerly, under jit (fusion on/off)
and in the generated kernel run by the emulator, and the distributions' basic properties."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.ops.rng import _threefry_impl
from tests.kernel_helpers import requires_emulator, requires_nvrtc, run_graph_emulated


def test_threefry_known_answers():
    # Random123's kat_vectors for threefry2x32_20 (word 0 of the output block)
    cases = [((0, 0), 0, 0x6B200159), ((0xFFFFFFFF,) * 2, -1, 0x1CB996FC)]
    for (k0, k1), ctr, want in cases:
        got = _threefry_impl(np, np.int64(k0), np.int64(k1), np.int64(ctr))
        assert int(got) == want


def draws(k):
    return (
        gg.random.uniform(k, (7, 5)),
        gg.random.uniform(k, (3,), "float64", -2.0, 3.0),
        gg.random.normal(k, (4, 4), "float64"),
        gg.random.randint(k, (9,), -3, 4),
        gg.random.bernoulli(k, 0.3, (6,)),
        gg.random.split(k, 3),
        gg.dropout(k, np.ones((2, 5), np.float32), 0.25),
    )


@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=requires_emulator)])
def test_eager_and_jit_agree_bitwise(backend, monkeypatch):
    """Bit for bit; on backend="cpu" (the threefry kernels compiled natively) too, but for the
    normal draw, whose log and cos come from the host's libm there (within an ulp)."""
    monkeypatch.setenv("GPUGRAPH_CPU_NATIVE", "all")
    k = gg.random.key(1234)
    want = draws(k)
    for f in (gg.jit(draws, backend=backend), gg.jit(draws, backend=backend, fuse=False)):
        for i, (g, w) in enumerate(zip(f(k), want, strict=True)):
            if backend == "cpu" and i == 2:  # gg.random.normal
                np.testing.assert_allclose(g, w, rtol=2e-15, atol=0)
            else:
                np.testing.assert_array_equal(g, w)


@pytest.mark.nvrtc
@pytest.mark.emulator
@requires_nvrtc
@requires_emulator
def test_kernel_gives_the_same_bits_as_numpy():
    def f(k):
        return gg.random.bits(k, (37, 3)), gg.random.uniform(k, (50,)), gg.random.split(k, 2)

    k = gg.random.key(2**40 + 7)
    c = gg.jit(f, backend="numpy").lower(k)
    kernels = [n for n in c.graph.nodes if n.op == "fused"]
    assert kernels and any("gg_threefry2x32" in n.attrs["cuda_source"] for n in kernels)
    got = run_graph_emulated(c.graph, [k])
    for g, w in zip(got, f(k)):
        np.testing.assert_array_equal(g, w)


def test_distributions():
    k = gg.random.key(0)
    u = gg.random.uniform(k, (20000,))
    assert u.dtype == np.float32 and 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01
    z = gg.random.normal(gg.random.key(1), (20000,), "float64")
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    r = gg.random.randint(k, (5000,), 3, 8)
    assert set(np.unique(r)) == {3, 4, 5, 6, 7}
    p = gg.random.permutation(k, 50)
    np.testing.assert_array_equal(np.sort(p), np.arange(50))
    x = np.arange(12.0).reshape(6, 2)
    np.testing.assert_array_equal(np.sort(gg.random.permutation(k, x), 0), x)
    assert abs(gg.random.bernoulli(k, 0.2, (10000,)).mean() - 0.2) < 0.02
    k1, k2 = gg.random.split(k)
    assert not np.array_equal(gg.random.uniform(k1, (8,)), gg.random.uniform(k2, (8,)))
    assert gg.random.uniform(k, (0, 3)).shape == (0, 3)


def test_dropout():
    k = gg.random.key(3)
    x = np.ones((100, 100))
    y = gg.dropout(k, x, 0.3)
    assert abs((y == 0).mean() - 0.3) < 0.02
    np.testing.assert_allclose(y[y != 0], 1 / 0.7)
    assert gg.dropout(k, x, 0.0) is x
    np.testing.assert_array_equal(gg.dropout(k, x, 1.0), 0 * x)
    g = gg.grad(lambda x: gg.sum(gg.dropout(k, x, 0.3)))(x)
    np.testing.assert_allclose(g, (y != 0) / 0.7)
    with pytest.raises(gg.GpuGraphError, match="rate"):
        gg.dropout(k, x, 1.5)
    with pytest.raises(gg.GpuGraphError, match="key"):
        gg.random.uniform(np.zeros(3, np.int64), (2,))


# primitives this file checks (known answers, emulator bits); see tests/test_ops.py
COVERED = {"threefry2x32"}
