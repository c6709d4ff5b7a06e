"""Calling the result of ``lower()``: a tree seen and checked once skips the per-leaf checks
on later calls (as ``jit``'s cache hit does), and every mismatch still raises what the
checked path raises."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg

RNG = np.random.default_rng(11)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def lowered(fn, *args):
    return gg.jit(fn, backend="numpy").lower(*args)


def no_checks(monkeypatch, c):
    def check_args(leaves):
        raise AssertionError("a checked tree went through check_args again")

    monkeypatch.setattr(c, "check_args", check_args)


def test_a_checked_tree_skips_the_checks_and_keeps_each_leaf_in_its_place(monkeypatch):
    c = lowered(lambda p, x: p["w"] * x + p["b"], {"w": f32(4), "b": f32(4)}, f32(4))
    p = {"w": f32(4), "b": f32(4)}
    swapped = {"b": p["b"], "w": p["w"]}  # insertion order differs from the sorted leaves
    x = f32(4)
    np.testing.assert_allclose(c(p, x), p["w"] * x + p["b"], rtol=1e-6)
    np.testing.assert_allclose(c(swapped, x), p["w"] * x + p["b"], rtol=1e-6)
    no_checks(monkeypatch, c)
    kept = c(swapped, x)
    np.testing.assert_allclose(kept, p["w"] * x + p["b"], rtol=1e-6)
    np.testing.assert_allclose(c(p, 2 * x), p["w"] * 2 * x + p["b"], rtol=1e-6)
    np.testing.assert_allclose(kept, p["w"] * x + p["b"], rtol=1e-6)  # not overwritten
    with pytest.raises(AssertionError, match="check_args"):  # a new tree: checked
        c({"w": p["w"], "b": p["b"], "c": None}, x)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((np.ones(5, np.float32), np.ones(4, np.float32)), gg.ShapeError, "expected shape"),
        ((np.ones(4, np.float64), np.ones(4, np.float32)), gg.DTypeError, "expected dtype"),
        ((np.ones(4, np.float32),), gg.GpuGraphError, "takes 2 array arguments"),
        (([np.ones(4, np.float32)], np.ones(4, np.float32)), None, None),  # same leaves
        ((1.0, np.ones(4, np.float32)), gg.GpuGraphError, "expected an array"),
    ],
)
def test_mismatches_after_a_checked_call_raise_as_before(args, error, message):
    c = lowered(lambda x, y: x + y, f32(4), f32(4))
    c(f32(4), f32(4))  # enters the fast key
    c(f32(4), f32(4))
    if error is None:
        np.testing.assert_allclose(c(*args), np.full(4, 2, np.float32))
    else:
        with pytest.raises(error, match=message):
            c(*args)
    with pytest.raises(gg.ShapeError):  # and the seen key still raises nothing wrong after
        c(f32(3), f32(4))


def test_numbers_are_still_range_checked_on_every_call(monkeypatch):
    x = np.arange(4, dtype=np.int32)
    c = lowered(lambda x, k: x + k, x, 3)
    np.testing.assert_array_equal(c(x, 3), x + 3)
    no_checks(monkeypatch, c)
    np.testing.assert_array_equal(c(x, -7), x - 7)
    with pytest.raises(gg.DTypeError, match="out of bounds"):
        c(x, 2**40)


def test_a_zero_d_array_for_a_number_and_numpy_scalars_stay_correct():
    c = lowered(lambda x, k: x * k, f32(3), 2.0)
    x = f32(3)
    for k in (np.array(1.5, np.float32), np.array(1.5, np.float32), 1.5, 1.5):
        np.testing.assert_allclose(c(x, k), x * 1.5, rtol=1e-6)
    s = lowered(lambda x, a: x * a, f32(3), np.float32(2))
    for a in (np.float32(3), np.float32(3), np.array(3, np.float32)):
        got = s(x, a)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, x * 3, rtol=1e-6)


def test_keywords_and_out_keep_the_checked_path():
    c = lowered(lambda x: x * 2, f32(4))
    x, buf = f32(4), np.empty(4, np.float32)
    c(x)
    assert c(x, out=buf) is buf
    np.testing.assert_allclose(buf, x * 2, rtol=1e-6)
    with pytest.raises(gg.GpuGraphError, match="out must have shape"):
        c(x, out=np.empty(5, np.float32))


def test_donated_lowered_calls_consume_their_argument():
    c = gg.jit(lambda x: x + 1, backend="numpy", donate_argnums=0).lower(f32(4))
    for _ in range(3):
        x = f32(4)
        want = x + 1
        np.testing.assert_allclose(c(x), want, rtol=1e-6)
        with pytest.raises(gg.GpuGraphError):
            c(x)


def test_full_path_errors_still_name_the_leaf_and_entries_are_shared():
    """The full path (keywords) builds leaf names only for an error or a new entry."""
    g = gg.jit(lambda p, x: p["w"] * x, backend="numpy")
    p, x = {"w": f32(3)}, f32(3)
    np.testing.assert_allclose(g(p=p, x=x), p["w"] * x, rtol=1e-6)
    np.testing.assert_allclose(g(p=p, x=2 * x), p["w"] * 2 * x, rtol=1e-6)
    assert g.cache_size == 1
    with pytest.raises(gg.DTypeError, match=r"argument p\['w'\]: dtype complex64"):
        g(p={"w": np.ones(3, np.complex64)}, x=x)
