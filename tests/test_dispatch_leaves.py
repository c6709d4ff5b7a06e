"""The signature fast path for pytree arguments (dicts, lists, tuples of arrays): one pass
builds the key and the leaves, a hit skips per-leaf types and checks. Every result is checked
against NumPy, and every change of signature must retrace or raise as on the full path."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.errors import DonationError

RNG = np.random.default_rng(11)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def jit(fn, **kw):
    return gg.jit(fn, backend="numpy", **kw)


def weighted(p, x):
    return x * p["b"] - p["a"] + p["c"][0] * p["c"][1]


def weighted_ref(p, x):
    return x * p["b"] - p["a"] + p["c"][0] * p["c"][1]


def test_dict_in_unsorted_order_hits_the_fast_path_with_each_leaf_in_its_place():
    f = jit(weighted)
    x = f32(4)
    p = {"c": [f32(4), f32(4)], "b": f32(4), "a": f32(4)}  # insertion order is not sorted
    before = {k: np.copy(v) if k != "c" else [np.copy(e) for e in v] for k, v in p.items()}
    for _ in range(3):
        np.testing.assert_allclose(f(p, x), weighted_ref(p, x), rtol=1e-6)
    assert f.cache_size == 1 and len(f._fast) == 1
    # the same keys in another insertion order: another fast key, the same compiled entry
    q = {"a": f32(4), "b": f32(4), "c": (f32(4), f32(4))}
    q["c"] = list(q["c"])
    for _ in range(2):
        np.testing.assert_allclose(f(q, x), weighted_ref(q, x), rtol=1e-6)
    assert f.cache_size == 1 and len(f._fast) == 2
    # inputs are never modified
    np.testing.assert_array_equal(p["a"], before["a"])
    np.testing.assert_array_equal(p["c"][1], before["c"][1])


def test_the_same_array_twice_then_two_arrays():
    f = jit(lambda p: p["x"] - 2 * p["y"])
    a, b = f32(3), f32(3)
    np.testing.assert_allclose(f({"y": a, "x": a}), a - 2 * a, rtol=1e-6)
    np.testing.assert_allclose(f({"y": b, "x": a}), a - 2 * b, rtol=1e-6)
    np.testing.assert_allclose(f({"y": a, "x": b}), b - 2 * a, rtol=1e-6)


def test_in_place_writes_are_seen_and_results_outlive_the_next_call():
    f = jit(lambda p, x: (p["w"] * x, p["w"] + 0))
    p, x = {"w": f32(5)}, f32(5)
    first = f(p, x)
    kept = [np.copy(r) for r in first]
    p["w"][:] = 3.0  # written in place: the next call reads the new values
    second = f(p, x)
    np.testing.assert_allclose(second[0], 3.0 * x, rtol=1e-6)
    for got, want in zip(first, kept):
        np.testing.assert_array_equal(got, want)
    p["w"] = np.full(5, 2.0, np.float32)  # an entry replaced: the new array is used
    np.testing.assert_allclose(f(p, x)[0], 2.0 * x, rtol=1e-6)


@pytest.mark.parametrize(
    "change",
    [
        lambda p: {**p, "b": f32(1)},  # a leaf's shape
        lambda p: {**p, "b": p["b"].astype(np.float64)},  # a leaf's dtype
        lambda p: {**p, "c": tuple(p["c"])},  # a list became a tuple
        lambda p: {**p, "c": [*p["c"], f32(4)]},  # one more leaf
        lambda p: {**p, "d": f32(4)},  # one more key
    ],
)
def test_a_changed_signature_retraces(change):
    traces = []

    def fn(p, x):
        traces.append(1)
        return weighted(p, x)

    f = jit(fn)
    x = f32(4)
    p = {"c": [f32(4), f32(4)], "b": f32(4), "a": f32(4)}
    f(p, x)
    f(p, x)
    q = change(p)
    np.testing.assert_allclose(f(q, x), weighted_ref(q, x), rtol=1e-5)
    assert len(traces) == 2 and f.cache_size == 2
    np.testing.assert_allclose(f(p, x), weighted_ref(p, x), rtol=1e-6)  # the first entry
    assert len(traces) == 2


def test_a_lowered_signature_rejects_other_leaves():
    c = jit(weighted).lower({"c": [f32(4), f32(4)], "b": f32(4), "a": f32(4)}, f32(4))
    bad = {"c": [f32(4), f32(4)], "b": f32(4), "a": f32(3)}
    with pytest.raises(gg.ShapeError, match=r"p\['a'\]"):
        c(bad, f32(4))


def test_numbers_in_a_tree_are_still_checked_per_call():
    f = jit(lambda p: p["x"] + p["k"])
    x = np.arange(4, dtype=np.int8)
    np.testing.assert_array_equal(f({"x": x, "k": 3}), x + 3)
    np.testing.assert_array_equal(f({"x": x, "k": 5}), x + 5)  # the fast path
    assert len(f._fast) == 1
    with pytest.raises(gg.DTypeError, match="out of bounds"):
        f({"x": x, "k": 300})
    np.testing.assert_array_equal(f({"k": np.int8(2), "x": x}), x + 2)  # a NumPy scalar


class Pair(NamedTuple):
    a: np.ndarray
    b: np.ndarray


def test_trees_the_fast_path_does_not_take_still_work():
    f = jit(lambda p: p.a - p.b)
    a, b = f32(3), f32(3)
    for _ in range(2):
        np.testing.assert_allclose(f(Pair(a, b)), a - b, rtol=1e-6)
    assert f.cache_size == 1 and not f._fast  # a NamedTuple: the full path each time


def test_donated_tree_on_the_fast_path():
    f = jit(lambda p: {"w": p["w"] - 1.0, "v": p["v"] * 2.0}, donate_argnums=0)
    p = {"w": f32(6), "v": f32(6)}
    for _ in range(3):
        want = {"w": p["w"] - 1.0, "v": p["v"] * 2.0}
        old = p
        p = f(p)
        np.testing.assert_allclose(p["w"], want["w"], rtol=1e-6)
        np.testing.assert_allclose(p["v"], want["v"], rtol=1e-6)
        with pytest.raises(DonationError):
            f(old)
    # the caller's order ('w', 'v'), then the results' (sorted keys): two fast keys, one entry
    assert len(f._fast) == 2 and f.cache_size == 1


def test_static_arguments_are_part_of_the_fast_key():
    traces = []

    def fn(p, n, x):
        traces.append(n)
        return x * p["w"] + n

    f = jit(fn, static_argnums=1)
    p, x = {"w": f32(3)}, f32(3)
    for _ in range(2):
        for n in (2, 3, 2.0, True):  # 2 and 2.0 and True are different signatures
            got = f(p, n, x)
            want = x * p["w"] + n
            assert got.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-6)
    assert [type(n) for n in traces] == [int, int, float, bool]
    assert f.cache_size == 4 and len(f._fast) == 4
    with pytest.raises(gg.GpuGraphError, match="hashable"):
        f(p, {1, 2}, x)  # an unhashable static: the full path raises as before
    with pytest.raises(gg.GpuGraphError, match="static_argnums names argument"):
        jit(fn, static_argnums=5)(p, 2, x)


def test_feeding_sorted_dict_outputs_back_adds_one_fast_key_once(monkeypatch):
    """Outputs come back with sorted keys: ``params = step(params)`` from an unsorted dict
    makes a second fast key (the same compiled entry) on the first feedback, then no more."""
    step = jit(lambda p: {k: v * 0.5 for k, v in p.items()})
    p = {"w": f32(3), "b": f32(3)}  # insertion order is not sorted
    want = {k: v.copy() for k, v in p.items()}
    p = step(p)
    assert list(p) == ["b", "w"]
    p = step(p)
    assert step.cache_size == 1 and len(step._fast) == 2

    def full_path(*args, **kwargs):
        raise AssertionError("a seen signature took the full call path")

    monkeypatch.setattr(step, "_compiled_for", full_path)
    for _ in range(3):
        p = step(p)
    assert step.cache_size == 1 and len(step._fast) == 2
    for k in want:
        np.testing.assert_allclose(p[k], want[k] * 0.5**5, rtol=1e-6)


def test_keywords_naming_positional_parameters_share_the_positional_fast_key(monkeypatch):
    f = jit(weighted)
    p = {"a": f32(4), "b": f32(4), "c": [f32(4), f32(4)]}
    x = f32(4)
    f(p, x)

    def full_path(*args, **kwargs):
        raise AssertionError("a seen signature took the full call path")

    monkeypatch.setattr(f, "_compiled_for", full_path)
    np.testing.assert_allclose(f(p=p, x=x), weighted_ref(p, x), rtol=1e-6)
    np.testing.assert_allclose(f(p, x=2 * x), weighted_ref(p, 2 * x), rtol=1e-6)
    assert len(f._fast) == 1
    monkeypatch.undo()
    with pytest.raises(TypeError):  # a wrong keyword raises as Python does
        f(p, y=x)
    with pytest.raises(gg.ShapeError):
        f.lower(p, x)(p, x=f32(5))
    g = jit(lambda x, *, k: x * k)  # keyword-only: the full path, still correct
    np.testing.assert_allclose(g(x, k=x), x * x, rtol=1e-6)
    np.testing.assert_allclose(g(x, k=x), x * x, rtol=1e-6)
    assert g.cache_size == 1


def test_static_argname_by_keyword_is_in_the_fast_key():
    f = jit(lambda x, n: x * n, static_argnames="n")
    x = f32(3)
    np.testing.assert_allclose(f(x, n=2), x * 2, rtol=1e-6)
    np.testing.assert_allclose(f(x, n=3), x * 3, rtol=1e-6)
    np.testing.assert_allclose(f(x=x, n=2), x * 2, rtol=1e-6)
    assert f.cache_size == 2
