"""backend="cpu" with fuse=False: each elementwise op is a one-op native kernel
(backends/cpu_unfused.py) where the policy says it pays, and a NumPy ufunc otherwise; results
equal the NumPy backend's (the op suite checks every op this way: tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import requires_emulator

import gpugraph as gg
from gpugraph.backends import cpu_backend, cpu_select
from gpugraph.ops.registry import get_op

pytestmark = requires_emulator  # the same host compiler


def _one_op_count(compiled) -> int:
    line = next(ln for ln in compiled.explain().splitlines() if ln.startswith("cpu: "))
    if "one-op kernels" not in line:
        return 0
    return int(line.split("), ")[-1].split()[0])


def mixed(x, y, i, j):
    # broadcasts, NaN/inf (x holds them), integer wraparound, a comparison and a select
    a = gg.tanh(x * y + 1.0) - x
    b = gg.where(x > y, gg.exp(y), gg.sqrt(gg.abs(x)))
    return a, b / 3.0, i * j + i, gg.maximum(i, j)


def _args():
    x = np.array([[0.5, -1.0, np.nan, np.inf], [-np.inf, 2.0, -0.0, 3.0]], np.float32)
    y = np.linspace(-1, 1, 4, dtype=np.float32)  # a broadcast row
    i = np.array([2**31 - 1, -(2**31), 7, -3], np.int32)
    j = np.array([2, 3, -5, 4], np.int32)
    return x, y, i, j


def test_unfused_ops_run_natively_and_match_numpy(monkeypatch):
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "auto")
    args = _args()
    compiled = gg.jit(mixed, backend="cpu", fuse=False).lower(*args)
    ops = compiled.graph.op_counts()
    assert "fused" not in ops
    elementwise = [n for n in compiled.graph.nodes if get_op(n.op).family == "elementwise"]
    assert len(elementwise) >= 10
    assert _one_op_count(compiled) == len(elementwise)  # every one of them, natively
    with np.errstate(all="ignore"):
        want = gg.jit(mixed, backend="numpy", fuse=False)(*args)
        got = compiled(*args)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=0)  # NaN == NaN here
    # inputs untouched, results stay valid after the next call
    np.testing.assert_array_equal(args[0], _args()[0])
    again = compiled(*[np.ones_like(a) for a in args])
    np.testing.assert_allclose(got[0], want[0], rtol=2e-6)
    assert not np.shares_memory(got[0], again[0])


def test_large_math_ops_stay_numpy_ufuncs(monkeypatch):
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "auto")
    n = cpu_select.UNFUSED_LIBM_MAX
    x = np.linspace(-3, 3, n, dtype=np.float32)
    compiled = gg.jit(lambda a: gg.tanh(a) + a, backend="cpu", fuse=False).lower(x)
    assert _one_op_count(compiled) == 1  # the add; tanh over that many elements is NumPy's
    np.testing.assert_allclose(compiled(x), np.tanh(x) + x, rtol=2e-6, atol=1e-6)
    small = gg.jit(lambda a: gg.tanh(a) + a, backend="cpu", fuse=False).lower(x[: n - 1])
    assert _one_op_count(small) == 2
    big = np.ones(cpu_select.UNFUSED_ARITH_MAX, np.float32)
    arith = gg.jit(lambda a: a * 2.0 + a, backend="cpu", fuse=False).lower(big)
    assert _one_op_count(arith) == 0  # memory-bound: ufuncs
    np.testing.assert_array_equal(arith(big), big * 3.0)


@pytest.mark.parametrize("mode", ["auto", "all"])
def test_ops_the_codegen_cannot_express_keep_numpy(monkeypatch, mode):
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, mode)
    x = np.linspace(-3, 3, 12).reshape(3, 4)
    compiled = gg.jit(lambda a: gg.sum(a * 2.0, axis=0), backend="cpu", fuse=False).lower(x)
    assert _one_op_count(compiled) == 1  # the multiply; the sum is not elementwise
    np.testing.assert_allclose(compiled(x), (x * 2.0).sum(axis=0), rtol=1e-12)
