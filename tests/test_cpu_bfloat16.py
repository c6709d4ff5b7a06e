"""bfloat16 fused groups on the cpu backend: native kernels (bfloat16 storage, float32 math,
round to nearest even on every store) called through the extension entry point, equal to the
NumPy backend (ml_dtypes) bit for bit, at NaN, infinities, ties and overflow too. Row and grid
reductions with bfloat16 values stay on NumPy, with the reason."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.backends import cpu_backend

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
pytestmark = pytest.mark.skipif(
    cpu_backend.status().startswith("unavailable"), reason="no host C++ compiler"
)
ULP = 2.0**-7  # bfloat16's ulp at 1.0
# float32 values that round differently under truncation, ties-away and ties-to-even, the
# rounding into and out of inf, NaNs of both signs, signed zeros and subnormals.
EDGES32 = np.array(
    [
        1 + ULP / 2,  # a tie: to even (1.0)
        1 + 3 * ULP / 2,  # a tie: to even (1 + 2 ulp)
        1 + ULP / 2 + 2.0**-20,  # just above a tie: up
        -(1 + ULP / 2),
        3.3895313892515355e38,  # bfloat16's largest finite value
        3.3961775e38,  # at/above its midpoint with 2**128: rounds to inf
        3.3961773e38,
        np.inf,
        -np.inf,
        np.nan,
        -np.nan,
        0.0,
        -0.0,
        1e-40,  # a float32 subnormal
        -9.2e-41,
        1.1754944e-38,  # the smallest normal
    ],
    np.float32,
)


@pytest.fixture(autouse=True)
def _every_group_native(monkeypatch):
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "all")


def _bits(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == BF16:
        bits = a.view(np.uint16).astype(np.uint32) << 16
        return np.where(np.isnan(a.astype(np.float32)), np.uint32(0x7FC00000), bits)
    return a.view(np.uint32) if a.dtype == np.float32 else a


def _same(fn, *args, nan_sign: bool = False):
    c = gg.jit(fn, backend="cpu").lower(*args)
    text = c.explain()
    assert "runs on NumPy" not in text and "1 fused group(s) as native kernels" in text, text
    with np.errstate(all="ignore"):
        want = gg.jit(fn, backend="numpy")(*args)
        got = c(*args)
    for g, w in zip(*(x if isinstance(x, tuple) else (x,) for x in (got, want))):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(_bits(g), _bits(w))
        g32, w32 = np.asarray(g, np.float32), np.asarray(w, np.float32)
        # signed zeros; and NaN signs where a cast keeps them (math on a NaN may not: libm and
        # NumPy's loops differ, and no backend promises a NaN's sign after arithmetic)
        keep = np.ones(w32.shape, bool) if nan_sign else ~np.isnan(w32)
        np.testing.assert_array_equal(np.signbit(g32)[keep], np.signbit(w32)[keep])


def test_float32_to_bfloat16_rounds_to_nearest_even_as_ml_dtypes():
    x = np.concatenate([EDGES32, np.random.default_rng(3).standard_normal(45, np.float32)])
    _same(lambda a: gg.astype(a * 1.0, BF16), x, nan_sign=True)


def test_bfloat16_math_matches_the_numpy_backend_bit_for_bit():
    rng = np.random.default_rng(4)
    x = np.concatenate([EDGES32, rng.uniform(-4, 4, 50).astype(np.float32)]).astype(BF16)
    y = rng.uniform(-4, 4, x.size).astype(BF16)
    _same(lambda a, b: (gg.tanh(a) * 2 + b, gg.exp(a * b) - 1.0, gg.astype(a, np.float32)), x, y)


def test_bfloat16_kernels_take_the_extension_entry_point():
    """The module checks bfloat16 arrays against ml_dtypes' type number in this process (set
    at load): the fast path takes them, and refuses arrays of another dtype."""
    x = np.linspace(-3, 3, 9).astype(BF16)
    c = gg.jit(lambda a: gg.astype(gg.astype(a, np.float32) * 3, BF16), backend="cpu").lower(x)
    (kernel,) = [
        ln.runner.cpu_kernel for ln in c.executable.launches if hasattr(ln.runner, "cpu_kernel")
    ]
    out = np.empty(9, BF16)
    assert kernel.py(x, out) is True
    np.testing.assert_array_equal(_bits(out), _bits((x.astype(np.float32) * 3).astype(BF16)))
    assert kernel.py(x.view(np.uint16), out) is False  # the same bits, another dtype: declined


@pytest.mark.parametrize("fn", [lambda a: (a * a).sum(axis=0), lambda a: gg.exp(a).sum()])
def test_grid_reductions_of_bfloat16_stay_on_numpy_with_the_reason(fn):
    x = np.random.default_rng(5).standard_normal((6, 5)).astype(BF16)
    c = gg.jit(fn, backend="cpu").lower(x)
    want = gg.jit(fn, backend="numpy")(x)
    np.testing.assert_array_equal(_bits(c(x)), _bits(want))
    assert c.graph.op_counts().get("fused_grid_reduce") == 1
    assert "cpu grid kernel: bfloat16 values are not rendered" in c.explain()
