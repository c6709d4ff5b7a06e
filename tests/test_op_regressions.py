"""Regression tests for the op-level defects of issue 12 ("wrong answers and crashes"), each the
minimal reproduction from the issue, eager and under jit."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.errors import GpuGraphError, IndexOutOfRangeError, ShapeError

# ---- 1. negative-step slices that start before the beginning --------------------------------
SLICES = [
    ((4,), (slice(-5, None, -1),)),
    ((4,), (slice(-6, None, -2),)),
    ((2, 2), (slice(-3, None, -1),)),
    ((4,), (slice(-5, -9, -1),)),
    ((4,), (slice(-1, -5, -1),)),
    ((4,), (slice(7, None, -3),)),
    ((4,), (slice(2, -7, -1),)),
    ((5, 3), (slice(None, None, -2), slice(-4, None, -1))),
    ((3, 4), (slice(None, -9, -1), slice(1, 3))),
]


@pytest.mark.parametrize("shape,idx", SLICES)
def test_negative_step_slices_match_numpy(shape, idx):
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    want = x[idx]
    eager = gg.getitem(x, idx)
    jitted = gg.jit(lambda a: a[idx])(x)
    np.testing.assert_array_equal(eager, want)
    np.testing.assert_array_equal(jitted, want)
    assert eager.shape == jitted.shape == want.shape


@pytest.mark.parametrize("shape,idx", SLICES)
def test_negative_step_slice_gradients(shape, idx):
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    want = np.zeros_like(x)
    want[idx] = 1.0
    g = gg.grad(lambda a: gg.sum(a[idx]))(x)
    gj = gg.jit(gg.grad(lambda a: gg.sum(a[idx])))(x)
    np.testing.assert_array_equal(g, want)
    np.testing.assert_array_equal(gj, want)


def test_zero_slice_step_is_a_gpugraph_error():
    x = np.arange(4.0)
    with pytest.raises(ShapeError, match="step"):
        gg.getitem(x, slice(None, None, 0))
    with pytest.raises(ShapeError, match="step"):
        gg.jit(lambda a: a[::0])(x)


def test_non_integer_slice_bound_is_a_gpugraph_error():
    with pytest.raises(ShapeError, match="slice"):
        gg.getitem(np.arange(4.0), slice(1.5, None))


# ---- 4. NaN-free gradients where torch and JAX give 0 ----------------------------------------
def test_sqrt_of_relu_gradient_is_zero_where_relu_is_flat():
    x = np.array([-1.0, 0.0, 4.0])
    f = lambda a: gg.sum(gg.sqrt(gg.relu(a)))  # noqa: E731
    want = [0.0, 0.0, 0.25]
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(gg.grad(f)(x), want)
    np.testing.assert_array_equal(gg.jit(gg.grad(f))(x), want)


@pytest.mark.parametrize(
    "f",
    [
        lambda a: gg.sum(gg.sqrt(gg.maximum(a, 0.0))),
        lambda a: gg.sum(gg.sqrt(gg.minimum(-a, 0.0) * -1.0)),
        lambda a: (
            gg.sqrt(gg.max(gg.stack([a, gg.zeros_like(a)]), axis=0))[1] * 0.0
            + gg.sum(gg.sqrt(gg.max(gg.stack([a, gg.zeros_like(a)]), axis=0)))
        ),
    ],
)
def test_masked_cotangents_are_selected_not_multiplied(f):
    x = np.array([-1.0, 0.0, 4.0])
    with np.errstate(all="ignore"):
        g = gg.grad(f)(x)
    gj = gg.jit(gg.grad(f))(x)
    assert np.isfinite(g[0]) and g[0] == 0.0
    np.testing.assert_array_equal(g, gj)


def test_power_zero_exponent_has_zero_derivative_at_zero():
    x = np.array([0.0, 1.0, -2.0])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(gg.grad(lambda a: gg.sum(a**0.0))(x), [0, 0, 0])
        _, t = gg.jvp(lambda a: a**0.0, (x,), (np.ones(3),))
    np.testing.assert_array_equal(t, [0, 0, 0])
    np.testing.assert_array_equal(gg.jit(gg.grad(lambda a: gg.sum(a**0.0)))(x), [0, 0, 0])


def test_max_reduction_gradient_with_nan_goes_to_the_nan():
    # torch.max(x).backward() gives the gradient to the NaN entries (evenly)
    x = np.array([1.0, np.nan, 3.0, np.nan])
    with np.errstate(all="ignore"):
        g = gg.grad(lambda a: gg.max(a))(x)
    np.testing.assert_array_equal(g, [0.0, 0.5, 0.0, 0.5])


def test_max_reduction_inf_cotangent_does_not_leak_nan():
    x = np.array([[0.0, 2.0], [0.0, -1.0]])
    f = lambda a: gg.sum(gg.sqrt(gg.max(a, axis=0)))  # noqa: E731  d sqrt at 0 is inf
    with np.errstate(all="ignore"):
        g = gg.grad(f)(x)
    # column 0 ties at 0 (sqrt' = inf, shared); column 1: 2 wins, -1 gets exactly 0
    np.testing.assert_array_equal(g, [[np.inf, 0.5 / np.sqrt(2)], [np.inf, 0.0]])
    np.testing.assert_array_equal(gg.jit(gg.grad(f))(x), g)


# ---- 6. eager vjp does not keep the caller's arrays ----------------------------------------
def test_vjp_is_unaffected_by_mutating_the_input_afterwards():
    x = np.array([0.5, 1.0])
    want = np.cos(x)
    _, vjp_fn = gg.vjp(gg.sin, x)
    x[:] = 0.0
    np.testing.assert_array_equal(vjp_fn(np.ones(2))[0], want)


def test_vjp_is_unaffected_by_mutating_the_output_or_a_view_input():
    x = np.array([0.5, 1.0, 2.0])
    out, vjp_fn = gg.vjp(gg.exp, x)
    want = np.exp(x)
    out[:] = 0.0
    np.testing.assert_array_equal(vjp_fn(np.ones(3))[0], want)
    base = np.array([[0.5, 1.0], [2.0, 3.0]])
    _, vjp2 = gg.vjp(lambda a: gg.sin(a[0]), base)
    base[:] = 0.0
    np.testing.assert_array_equal(vjp2(np.ones(2))[0][0], np.cos([0.5, 1.0]))


# ---- 8. NumPy 2 departures ----------------------------------------------------------------
def test_bool_divide_gives_float64_like_numpy():
    a, b = np.array([True, False, True]), np.array([True, True, True])
    assert gg.divide(a, b).dtype == np.divide(a, b).dtype == np.float64
    assert gg.jit(lambda p, q: p / q)(a, b).dtype == np.float64


def test_bool_plus_bool_is_allowed_like_numpy():
    a, b = np.array([True, False, False]), np.array([True, True, False])
    want = a + b
    got = gg.add(a, b)
    assert got.dtype == want.dtype == np.bool_
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(gg.jit(lambda p, q: p + q)(a, b), want)


def test_astype_and_concatenate_of_one_return_copies():
    x = np.ones(3, np.float32)
    for r in (gg.astype(x, np.float32), gg.concatenate([x])):
        assert r is not x and not np.shares_memory(r, x)
        r[0] = 5.0
        assert x[0] == 1.0


# ---- errors: argument mistakes are GpuGraphErrors naming the argument -----------------------
@pytest.mark.parametrize(
    "call,phrase",
    [
        (lambda: gg.power(np.arange(3), -1), "negative"),
        (lambda: gg.jit(lambda a: a**-1)(np.arange(1, 3)), "negative"),
        (lambda: gg.power(np.arange(3), np.array([1, -2, 0])), "negative"),
        (lambda: gg.gelu(np.ones(2), approximate="xx"), "approximate"),
        (lambda: gg.sum(np.ones((2, 2)), axis=1.0), "axis"),
        (lambda: gg.jit(lambda a: gg.sum(a, axis=1.0))(np.ones((2, 2))), "axis"),
        (lambda: gg.argmax(np.ones((2, 2)), axis=(0, 1)), "axis"),
        (lambda: gg.max(np.ones((2, 2)), axis="0"), "axis"),
    ],
)
def test_argument_mistakes_raise_gpugraph_errors(call, phrase):
    with pytest.raises(GpuGraphError, match=phrase):
        call()


# ---- 7. out-of-range take indices: one rule (np.take's mode) everywhere -----------------------
def test_out_of_range_take_index_at_run_time_names_take():
    x = np.arange(12.0).reshape(4, 3)
    f = gg.jit(lambda a, i: gg.take(a, i, axis=0))
    np.testing.assert_array_equal(f(x, np.array([-1, 2])), x[[3, 2]])
    for bad in (np.array([4]), np.array([0, -5])):
        with pytest.raises(IndexOutOfRangeError, match="take") as info:
            f(x, bad)
        assert isinstance(info.value, IndexError)
        with pytest.raises(IndexOutOfRangeError, match="take"):
            gg.take(x, bad)
    g = gg.jit(gg.grad(lambda a, i: gg.sum(gg.take(a, i, axis=0))))
    with pytest.raises(IndexOutOfRangeError, match="take"):
        g(x, np.array([7]))


@pytest.mark.parametrize("mode", ["wrap", "clip"])
@pytest.mark.parametrize("axis", [0, 1])
def test_take_modes_match_numpy_eager_and_jit_with_gradients(mode, axis):
    x = np.arange(12.0).reshape(4, 3)
    idx = np.array([[5, -1], [-7, 2]])
    want = np.take(x, idx, axis=axis, mode=mode)
    np.testing.assert_array_equal(gg.take(x, idx, axis, mode=mode), want)
    f = gg.jit(lambda a, i: gg.take(a, i, axis, mode=mode))
    np.testing.assert_array_equal(f(x, idx), want)
    # the gradient adds into the rows the forward read
    rows = np.clip(idx, 0, x.shape[axis] - 1) if mode == "clip" else idx % x.shape[axis]
    want_g = np.zeros_like(x)
    np.add.at(np.moveaxis(want_g, axis, 0), rows.reshape(-1), 1.0)
    grad = gg.grad(lambda a, i: gg.sum(gg.take(a, i, axis, mode=mode)))
    np.testing.assert_array_equal(grad(x, idx), want_g)
    np.testing.assert_array_equal(gg.jit(grad)(x, idx), want_g)


def test_take_mode_is_checked():
    with pytest.raises(GpuGraphError, match="mode"):
        gg.take(np.ones(3), np.array([0]), mode="fill")
