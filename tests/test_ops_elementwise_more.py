"""The elementwise ops of gpugraph/ops/math_more.py: values against NumPy (eagerly, under jit
with fusion on and off, over shapes with size-0 and size-1 dims), gradients against torch in
float64, NaN-safe derivatives at the awkward points, the operators, and the CUDA helpers on
the kernel emulator against NumPy at special values."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from tests.kernel_helpers import requires_emulator, requires_nvrtc, run_graph_emulated
from tests.torch_ref import F, torch

RNG = np.random.default_rng(7)
SHAPES = [(), (0,), (1,), (3, 1), (2, 3)]


def sample(shape, dtype, domain):
    x = RNG.standard_normal(shape) * 2
    if domain == "pos":
        x = np.abs(x) + 0.1
    elif domain == "gt-1":
        x = np.abs(x) - 0.5
    elif domain == "nonzero":
        x = np.where(np.abs(x) < 0.2, 0.7, x)
    elif domain == "int":
        x = RNG.integers(-9, 10, shape)
    return np.asarray(x).astype(dtype)


def _hsig(x):
    return np.clip(x + 3, 0, 6) / 6


# name -> (gg fn, NumPy reference, torch reference (None: no gradient check), domain)
UNARY = {
    "square": (gg.square, np.square, torch.square, "any"),
    "log1p": (gg.log1p, np.log1p, torch.log1p, "gt-1"),
    "expm1": (gg.expm1, np.expm1, torch.expm1, "any"),
    "log2": (gg.log2, np.log2, torch.log2, "pos"),
    "tan": (gg.tan, np.tan, torch.tan, "any"),
    "arctan": (gg.arctan, np.arctan, torch.atan, "any"),
    "floor": (gg.floor, np.floor, torch.floor, "any"),
    "ceil": (gg.ceil, np.ceil, torch.ceil, "any"),
    "round": (gg.round, np.round, torch.round, "any"),
    "isnan": (gg.isnan, np.isnan, None, "any"),
    "isfinite": (gg.isfinite, np.isfinite, None, "any"),
    "nan_to_num": (gg.nan_to_num, np.nan_to_num, torch.nan_to_num, "any"),
    "softplus": (gg.softplus, lambda x: np.logaddexp(0, x).astype(x.dtype), F.softplus, "any"),
    "silu": (gg.silu, lambda x: x / (1 + np.exp(-x)), F.silu, "any"),
    "leaky_relu": (gg.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), F.leaky_relu, "any"),
    "elu": (gg.elu, lambda x: np.where(x > 0, x, np.expm1(x)), F.elu, "any"),
    "hard_sigmoid": (gg.hard_sigmoid, _hsig, F.hardsigmoid, "any"),
    "hard_swish": (gg.hard_swish, lambda x: x * _hsig(x), F.hardswish, "any"),
    "clip": (
        lambda x: gg.clip(x, -0.5, 1.0),
        lambda x: np.clip(x, -0.5, 1.0),
        lambda x: torch.clamp(x, -0.5, 1.0),
        "any",
    ),
}
BINARY = {
    "arctan2": (gg.arctan2, np.arctan2, torch.atan2, "any"),
    "logaddexp": (gg.logaddexp, np.logaddexp, torch.logaddexp, "any"),
    "remainder": (gg.remainder, np.remainder, torch.remainder, "nonzero"),
    "mod_operator": (lambda a, b: a % b, np.remainder, None, "nonzero"),
    "floor_divide": (gg.floor_divide, np.floor_divide, None, "nonzero"),
    "floordiv_operator": (lambda a, b: a // b, np.floor_divide, None, "nonzero"),
    "clip_bounds": (
        lambda a, b: gg.clip(a, b, 0.5),
        lambda a, b: np.clip(a, b, 0.5),
        lambda a, b: torch.clamp(a, b, torch.tensor(0.5, dtype=a.dtype)),
        "any",
    ),
}
INT_BINARY = {
    "floor_divide": (lambda a, b: a // b, np.floor_divide),
    "remainder": (lambda a, b: a % b, np.remainder),
    "bitwise_and": (lambda a, b: a & b, np.bitwise_and),
    "bitwise_or": (lambda a, b: a | b, np.bitwise_or),
    "bitwise_xor": (lambda a, b: a ^ b, np.bitwise_xor),
    "bitwise_not": (lambda a, b: ~a + b * 0, lambda a, b: ~a + b * 0),
    "clip": (lambda a, b: gg.clip(a, b, 3), lambda a, b: np.clip(a, b, 3)),
    "square": (lambda a, b: gg.square(a) + b, lambda a, b: np.square(a) + b),
    "floor": (lambda a, b: gg.floor(a) + b, lambda a, b: np.floor(a) + b),
}
BOOL_BINARY = {
    "logical_xor": (gg.logical_xor, np.logical_xor),
    "xor_operator": (lambda a, b: a ^ b, np.bitwise_xor),
    "and_operator": (lambda a, b: a & b, np.bitwise_and),
    "or_operator": (lambda a, b: a | b, np.bitwise_or),
    "invert_operator": (lambda a, b: ~a, lambda a, b: ~a),
}


def tol(dtype):
    return dict(rtol=3e-6, atol=3e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def check(fn, ref, args, dtype, fused=True):
    """Eagerly and under jit with fusion off and (``fused``) on: NumPy's shape, dtype and values.
    Every fused kernel is compiled and emulated again by tests/test_sweeps.py, so the callers
    fuse a representative few shapes, not all of them."""
    want = np.asarray(ref(*args))
    runs = [fn, gg.jit(fn, fuse=False)] + ([gg.jit(fn)] if fused else [])
    for got in (run(*args) for run in runs):
        got = np.asarray(got)
        assert got.shape == want.shape and got.dtype == want.dtype, (got.dtype, want.dtype)
        np.testing.assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name, dtype):
    fn, ref, _, domain = UNARY[name]
    for shape in SHAPES:
        check(fn, ref, [sample(shape, dtype, domain)], dtype, fused=shape in ((0,), (2, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary(name, dtype):
    fn, ref, _, domain = BINARY[name]
    for sa, sb in [((), ()), ((0,), (1,)), ((3, 1), (1, 4)), ((2, 3), (3,))]:
        args = [sample(sa, dtype, "any"), sample(sb, dtype, domain)]
        check(fn, ref, args, dtype, fused=sa in ((0,), (3, 1)))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("name", sorted(INT_BINARY))
def test_integer_ops(name, dtype):
    fn, ref = INT_BINARY[name]
    a = RNG.integers(-20, 21, (3, 4)).astype(dtype)
    b = RNG.integers(-4, 5, (4,)).astype(dtype)  # zero divisors included: NumPy gives 0
    with np.errstate(all="ignore"):
        check(fn, ref, [a, b], dtype)


@pytest.mark.parametrize("name", sorted(BOOL_BINARY))
def test_bool_ops(name):
    fn, ref = BOOL_BINARY[name]
    a, b = RNG.random((3, 4)) < 0.5, RNG.random((4,)) < 0.5
    check(fn, ref, [a, b], np.float64)


def test_bitwise_refuses_floats():
    with pytest.raises(gg.DTypeError, match="bitwise_and"):
        gg.jit(lambda x: x & x)(np.ones(3))
    with pytest.raises(gg.DTypeError, match="bitwise_not"):
        gg.bitwise_not(np.ones(3))


def test_divmod_operator():
    a, b = np.arange(-5.0, 5.0), np.full(10, 3.0)
    q, r = gg.jit(lambda a, b: divmod(a, b))(a, b)
    np.testing.assert_array_equal(q, a // b)
    np.testing.assert_array_equal(r, a % b)


def _torch_grads(tfn, args, w):
    ts = [torch.tensor(a, requires_grad=True) for a in args]
    (tfn(*ts) * torch.tensor(w)).sum().backward()
    return [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("name", sorted(n for n in UNARY if UNARY[n][2] is not None))
def test_unary_gradients_match_torch(name):
    fn, _, tfn, domain = UNARY[name]
    x = sample((2, 3), np.float64, domain)
    w = RNG.standard_normal(x.shape)
    want = _torch_grads(tfn, [x], w)[0]
    loss = lambda x: gg.sum(fn(x) * w)  # noqa: E731
    # torch's hardsigmoid backward scales by a float32 1/6, even in float64
    rtol = 1e-7 if name.startswith("hard_") else 1e-10
    np.testing.assert_allclose(gg.grad(loss)(x), want, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(gg.jit(gg.grad(loss))(x), want, rtol=rtol, atol=1e-12)
    # forward mode agrees with reverse mode
    t = RNG.standard_normal(x.shape)
    _, tangent = gg.jvp(loss, (x,), (t,))
    np.testing.assert_allclose(tangent, np.sum(want * t), rtol=rtol * 10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(n for n in BINARY if BINARY[n][2] is not None))
def test_binary_gradients_match_torch(name):
    fn, _, tfn, domain = BINARY[name]
    a, b = sample((2, 3), np.float64, "any"), sample((2, 3), np.float64, domain)
    w = RNG.standard_normal(a.shape)
    want = _torch_grads(tfn, [a, b], w)
    loss = lambda a, b: gg.sum(fn(a, b) * w)  # noqa: E731
    for got in (gg.grad(loss, argnums=(0, 1))(a, b), gg.jit(gg.grad(loss, argnums=(0, 1)))(a, b)):
        for g, wnt in zip(got, want):
            np.testing.assert_allclose(g, wnt, rtol=1e-10, atol=1e-12)


AWKWARD = np.array([-np.inf, -800.0, -1.0, 0.0, 1.0, 800.0, np.inf])


@pytest.mark.parametrize(
    "name, fn, want",
    [
        ("silu", gg.silu, [0, 0, 0.0723295, 0.5, 0.9276705, 1, 1]),
        ("softplus", gg.softplus, [0, 0, 0.2689414, 0.5, 0.7310586, 1, 1]),
        ("elu", gg.elu, [0, 0, 0.3678794, 1, 1, 1, 1]),
        ("logaddexp_same", lambda x: gg.logaddexp(x, x), [1.0] * 7),
        ("arctan2_origin", lambda x: gg.arctan2(x * 0, x * 0), [0] * 7),
    ],
)
def test_derivatives_are_finite_at_awkward_points(name, fn, want):
    """Selections, not inf * 0: the limits come out, never NaN."""
    x = AWKWARD
    with np.errstate(all="ignore"):  # the forward values at +-inf may warn; the grads may not
        g = gg.grad(lambda x: gg.sum(fn(x)))(x)
    if name == "arctan2_origin":
        want = [np.nan, 0, 0, 0, 0, 0, np.nan]  # x * 0 is NaN at +-inf: nothing to be safe from
    np.testing.assert_allclose(g[1:-1], np.asarray(want, float)[1:-1], rtol=1e-6, atol=1e-12)
    if name != "arctan2_origin":
        np.testing.assert_allclose(g[[0, -1]], np.asarray(want, float)[[0, -1]], atol=1e-12)


SPECIAL = np.array([-np.inf, -3.5, -2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, 3.5, np.inf, np.nan])


@requires_nvrtc
@requires_emulator
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_cuda_helpers_match_numpy_at_special_values(dtype):
    """One fused kernel of every helper-backed op, on the emulator, against NumPy to the bit
    (every pair of special values: zeros, signs, infinities, NaN)."""
    vals = SPECIAL if np.dtype(dtype).kind == "f" else np.array([-7, -3, -2, -1, 0, 1, 2, 3, 7])
    a, b = (v.astype(dtype) for v in np.meshgrid(vals, vals))

    def f(a, b):
        outs = [a // b, a % b, gg.clip(a, b, a - b), gg.square(a)]
        if np.dtype(dtype).kind == "f":
            outs[3] = gg.isfinite(a) & ~gg.isnan(b)
            outs += [gg.logaddexp(a, b), gg.silu(a), gg.softplus(a)]
        return tuple(outs)

    with np.errstate(all="ignore"):
        want = [np.asarray(w) for w in gg.jit(f, fuse=False)(a, b)]
        compiled = gg.jit(f).lower(a, b)
        assert "fused" in compiled.graph.op_counts()
        got = run_graph_emulated(compiled.graph, [a, b])
    exact = 4  # division, clip and square are exact; exp/log1p differ between libms by an ulp
    for k, (g, w) in enumerate(zip(got, want)):
        if k < exact or np.dtype(dtype).kind != "f":
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=4 * np.finfo(dtype).eps, atol=0)


def test_impls_are_exact_when_out_aliases_any_operand():
    """The memory plan may give an elementwise op's output the bytes of any same-shape operand
    that dies there: every impl must read an element of every operand before writing it."""
    from gpugraph.ops import REGISTRY

    rng = np.random.default_rng(0)
    for name in ("clip", "logaddexp", "arctan2", "remainder", "floor_divide", "silu", "softplus"):
        impl = REGISTRY[name].impl
        arity = {"clip": 3, "silu": 1, "softplus": 1}.get(name, 2)
        args = [rng.uniform(-2, 2, (4, 5)) for _ in range(arity)]
        if arity == 3:
            args[2] = args[1] + 1.0
        want = impl(np, *args)
        for k in range(arity):
            copies = [a.copy() for a in args]
            got = impl(np, *copies, out=copies[k])
            np.testing.assert_array_equal(got, want, err_msg=f"{name}, out = operand {k}")


def test_numpy_ufuncs_on_tracers_reach_the_new_ops():
    a = np.arange(-4, 5)

    def f(x):
        return (
            np.floor_divide(x, 3),
            np.remainder(x, 3),
            a & x,
            np.invert(x),
            np.square(x),
            np.rint(x * 0.5),
            np.logaddexp(x * 1.0, 0.0),
        )

    want = (a // 3, a % 3, a & a, ~a, a * a, np.rint(a * 0.5), np.logaddexp(a * 1.0, 0.0))
    for got, w in zip(gg.jit(f)(a), want):
        np.testing.assert_array_equal(got, w)
