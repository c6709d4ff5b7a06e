"""The ops against PyTorch in float64 on edge values (0, -0, +-1, ties,
subnormals, huge numbers, +-inf, NaN): values, reverse-mode gradients and forward-mode
tangents, eagerly and under jit (issue 12): elementwise ops, reductions and composites, shape
and index ops (take, negative-step slices, transpose, broadcast, concatenate), matmul, and the
values of argmax and comparisons. Binary ops run on every pair of edge values, so the
diagonal holds the ties. Where gpugraph deliberately differs from torch, ``DEVIATIONS`` says
where and why; everything else must agree bit for bit in NaN-ness and infinities and to 1e-12
relatively elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch)")

EDGES = np.array(
    [0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 30.0, -800.0, 1e-310, -1e-310, 1e300, np.inf, -np.inf]
    + [np.nan],
    dtype=np.float64,
)
RTOL = 1e-12

UNARY = {
    "negative": (gg.negative, torch.neg),
    "abs": (gg.abs, torch.abs),
    "sign": (gg.sign, torch.sign),
    "relu": (gg.relu, torch.relu),
    "exp": (gg.exp, torch.exp),
    "log": (gg.log, torch.log),
    "sqrt": (gg.sqrt, torch.sqrt),
    "rsqrt": (gg.rsqrt, torch.rsqrt),
    "reciprocal": (gg.reciprocal, torch.reciprocal),
    "tanh": (gg.tanh, torch.tanh),
    "sin": (gg.sin, torch.sin),
    "cos": (gg.cos, torch.cos),
    "erf": (gg.erf, torch.erf),
    "sigmoid": (gg.sigmoid, torch.sigmoid),
    "gelu_tanh": (
        lambda x: gg.gelu(x, "tanh"),
        lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    ),
    "gelu_exact": (
        lambda x: gg.gelu(x, "none"),
        lambda x: torch.nn.functional.gelu(x, approximate="none"),
    ),
    "square": (lambda x: x**2.0, lambda x: x**2.0),
    "pow_zero": (lambda x: x**0.0, lambda x: x**0.0),
    "pow_half": (lambda x: x**0.5, lambda x: x**0.5),
    "max_with_0": (
        lambda x: gg.maximum(x, 0.0),
        lambda x: torch.maximum(x, torch.zeros_like(x)),
    ),
}
BINARY = {
    "add": (gg.add, torch.add),
    "subtract": (gg.subtract, torch.sub),
    "multiply": (gg.multiply, torch.mul),
    "divide": (gg.divide, torch.div),
    "power": (gg.power, torch.pow),
    "maximum": (gg.maximum, torch.maximum),
    "minimum": (gg.minimum, torch.minimum),
    "where": (lambda a, b: gg.where(a > b, a, b), lambda a, b: torch.where(a > b, a, b)),
}
ROWS = {  # reductions over the last axis of rows that mix edge values, ties and NaN
    "sum": (lambda x: gg.sum(x, axis=-1), lambda x: torch.sum(x, dim=-1)),
    "mean": (lambda x: gg.mean(x, axis=-1), lambda x: torch.mean(x, dim=-1)),
    "max": (lambda x: gg.max(x, axis=-1), lambda x: torch.amax(x, dim=-1)),
    "min": (lambda x: gg.min(x, axis=-1), lambda x: torch.amin(x, dim=-1)),
    "softmax": (lambda x: gg.softmax(x, -1), lambda x: torch.softmax(x, -1)),
    "log_softmax": (lambda x: gg.log_softmax(x, -1), lambda x: torch.log_softmax(x, -1)),
    "logsumexp": (lambda x: gg.logsumexp(x, -1), lambda x: torch.logsumexp(x, -1)),
    "var": (lambda x: gg.var(x, -1), lambda x: torch.var(x, -1, correction=0)),
}


def _rows_where(cond):
    """A deviation mask covering every entry of the rows where ``cond(row)`` holds."""
    return lambda x: np.broadcast_to(np.array([cond(r) for r in x])[:, None], x.shape)


def _has_pos_inf(row):
    return bool(np.isposinf(row).any())


TAKE_IDX = np.array([5, 0, 5, -1, 2])  # a repeat (gradients add) and a negative index
ROWS_SEL = np.arange(45)[-50::-3].copy()  # a negative step starting before element 0: empty
COLS_SEL = np.arange(6)[9::-2].copy()  # starting past the end
STRUCTURAL = {  # shape and index ops and matmul: the same edge rows, values and gradients
    "take": (
        lambda x: gg.take(x, TAKE_IDX, axis=1),
        lambda x: torch.index_select(x, 1, torch.tensor(TAKE_IDX % 6)),
    ),
    "negative_step_slices": (
        lambda x: gg.concatenate(
            [x[-50::-3], gg.concatenate([x[:, 9::-2], x[:, :3]], axis=1)], axis=0
        ),
        lambda x: torch.cat(
            [x[torch.tensor(ROWS_SEL)], torch.cat([x[:, torch.tensor(COLS_SEL)], x[:, :3]], 1)],
            0,
        ),
    ),
    "transpose_broadcast": (
        lambda x: gg.transpose(x) * gg.broadcast_to(x[:1].T, (6, x.shape[0])),
        lambda x: x.T * x[:1].T.expand(6, x.shape[0]),
    ),
    "matmul": (lambda x: x[:, :4] @ x[:4], lambda x: x[:, :4] @ x[:4]),
    "stop_gradient": (lambda x: x * gg.stop_gradient(x), lambda x: x * x.detach()),
}
NONDIFF = {  # integer and boolean results: values only
    "argmax": (lambda x: gg.argmax(x, axis=1), lambda x: torch.argmax(x, dim=1)),
    "equal": (lambda x: gg.equal(x, x[:, :1]), lambda x: torch.eq(x, x[:, :1])),
    "less": (lambda x: gg.less(x, x[:, 1:2]), lambda x: torch.lt(x, x[:, 1:2])),
    "where": (
        lambda x: gg.where(x > 0, x, -x),
        lambda x: torch.where(x > 0, x, -x),
    ),
}

# (op, "value" | "grad" | "jvp"): a boolean mask over the inputs where gpugraph may differ from
# torch, and why. Nothing else may differ.
DEVIATIONS = {
    ("sign", "value"): (lambda x: np.isnan(x), "sign(NaN) is NaN, as NumPy; torch gives 0"),
    ("abs", "grad"): (
        lambda x: np.isnan(x),
        "d|x|/dx at NaN is NaN (sign(NaN)); torch gives 0 (its sgn(NaN) is 0)",
    ),
    ("pow_half", "grad"): (
        lambda x: (x == 0) & np.signbit(x) | np.isneginf(x),
        "torch differentiates x**0.5 as sqrt (1/(2 sqrt x): -inf at -0, NaN at -inf); gpugraph "
        "as 0.5 x**-0.5, with C's pow(-0, -0.5) = +inf and pow(-inf, -0.5) = 0",
    ),
    ("max_with_0", "jvp"): (
        lambda x: np.isnan(x),
        "torch's forward mode of maximum gives 0 at NaN where its reverse mode gives 1; "
        "gpugraph's jvp is the transpose of its vjp (1, as torch's reverse mode)",
    ),
    ("maximum", "jvp"): (
        lambda a, b: np.isnan(a) | np.isnan(b),
        "as max_with_0: with a NaN both operands get the tangent (torch's reverse mode; its "
        "forward mode gives only one)",
    ),
    ("minimum", "jvp"): (lambda a, b: np.isnan(a) | np.isnan(b), "as maximum"),
    ("max", "grad"): (
        _rows_where(lambda r: np.isnan(r).any()),
        "a NaN row gives its gradient to its NaN entries, as torch.max(x) does; torch.amax "
        "gives NaN to the whole row",
    ),
    ("min", "grad"): (_rows_where(lambda r: np.isnan(r).any()), "as max"),
    ("max", "jvp"): (
        lambda x: np.isnan(x).any(-1),
        "the tangent of a NaN row is the mean of its NaN entries' tangents (the transpose of "
        "the vjp above); torch.amax's forward mode gives NaN",
    ),
    ("min", "jvp"): (lambda x: np.isnan(x).any(-1), "as max"),
    ("log_softmax", "value"): (
        _rows_where(_has_pos_inf),
        "a row holding +inf: gpugraph gives the limit, -inf at the finite entries (x - "
        "logsumexp, and logsumexp is +inf there as in torch); torch and JAX give NaN to the row",
    ),
    ("log_softmax", "grad"): (_rows_where(_has_pos_inf), "as its value"),
    ("logsumexp", "grad"): (
        _rows_where(lambda r: np.nanmax(r) > 700),
        "rows whose max overflows exp (> 709): gpugraph's composite gives NaN to entries whose "
        "exp overflows next to a +inf, where torch gives 0; and it splits a tie at a huge max "
        "(0.5 each, the exact answer) where torch's exp(x - result) gives 1 to each",
    ),
    ("var", "grad"): (
        _rows_where(lambda r: not np.isfinite(r).all() or np.abs(r).max() > 1e150),
        "rows with +-inf or squares that overflow: gpugraph's composite gradient (through the "
        "mean) is NaN where torch's closed form 2(x - mean)/n gives +-inf",
    ),
}


def _torch_value_and_grads(tfn, arrays):
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = tfn(*ts)
    grads = torch.autograd.grad(out.sum(), ts, allow_unused=True)
    grads = [np.zeros_like(a) if g is None else g.detach().numpy() for g, a in zip(grads, arrays)]
    return out.detach().numpy(), grads


def _torch_tangent(tfn, arrays):
    """Forward mode: J @ ones, by torch.func.jvp."""
    primals = tuple(torch.tensor(a, dtype=torch.float64) for a in arrays)
    _, tangent = torch.func.jvp(tfn, primals, tuple(torch.ones_like(p) for p in primals))
    return tangent.numpy()


def _mismatch(got, want, allowed=None, atol=1e-300):
    got, want = np.broadcast_arrays(np.asarray(got, np.float64), np.asarray(want, np.float64))
    with np.errstate(all="ignore"):
        same = (np.isnan(got) & np.isnan(want)) | (got == want)
        same |= np.isfinite(want) & np.isclose(got, want, rtol=RTOL, atol=atol)
    if allowed is not None:
        same |= np.broadcast_to(allowed, same.shape)
    return np.flatnonzero(~same)


def _compare(name, gfn, tfn, arrays, atol=1e-300):
    """Mismatches of values, gradients and tangents; ``atol`` for results that cancel to
    about 0 (the gradient of sum(softmax(x)) is 0 up to rounding, in both)."""
    want, want_grads = _torch_value_and_grads(tfn, arrays)
    want_tangent = _torch_tangent(tfn, arrays)
    dev_v = DEVIATIONS.get((name, "value"), (None, ""))[0]
    dev_g = DEVIATIONS.get((name, "grad"), (None, ""))[0]
    dev_t = DEVIATIONS.get((name, "jvp"), (None, ""))[0]
    allowed_v = dev_v(*arrays) if dev_v else None
    allowed_g = dev_g(*arrays) if dev_g else None
    argnums = tuple(range(len(arrays)))
    loss = lambda *xs: gg.sum(gfn(*xs))  # noqa: E731
    with np.errstate(all="ignore"):
        eager = gfn(*arrays)
        eager_grads = gg.grad(loss, argnums)(*arrays)
        _, tangent = gg.jvp(gfn, tuple(arrays), tuple(np.ones_like(a) for a in arrays))
        jitted = gg.jit(gfn)(*arrays)
        jit_grads = gg.jit(gg.grad(loss, argnums))(*arrays)
    problems = []
    pairs = [("value", eager, want, allowed_v), ("jit value", jitted, want, allowed_v)]
    for k, (eg, jg, wg) in enumerate(zip(eager_grads, jit_grads, want_grads)):
        pairs += [(f"grad {k}", eg, wg, allowed_g), (f"jit grad {k}", jg, wg, allowed_g)]
    if dev_t is None and dev_g is not None and np.shape(want) == np.shape(arrays[0]):
        dev_t = dev_g  # elementwise: the tangent deviates where the gradient does
    allowed_t = dev_t(*arrays) if dev_t else None
    pairs.append(("jvp", tangent, want_tangent, allowed_t))
    for what, got, ref, allowed in pairs:
        bad = _mismatch(got, ref, allowed, atol)
        if bad.size:
            got_flat, ref_flat = np.ravel(got)[bad[:3]], np.ravel(ref)[bad[:3]]
            at = [
                np.ravel(a)[bad[:3]] if np.shape(a) == np.shape(got) else f"rows {bad[:3]}"
                for a in arrays
            ]
            problems.append(f"{name} {what}: at {at} gpugraph gives {got_flat}, torch {ref_flat}")
    return problems


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_ops_match_torch_on_edge_values(name):
    gfn, tfn = UNARY[name]
    problems = _compare(name, gfn, tfn, [EDGES.copy()])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_match_torch_on_every_pair_of_edge_values(name):
    gfn, tfn = BINARY[name]
    a, b = np.meshgrid(EDGES, EDGES, indexing="ij")  # same shapes: gradients stay elementwise
    problems = _compare(name, gfn, tfn, [a.reshape(-1).copy(), b.reshape(-1).copy()])
    assert not problems, "\n".join(problems)


def _rows():
    rng = np.random.default_rng(0)
    rows = [rng.choice(EDGES, 6) for _ in range(40)]
    rows += [
        np.array([1.0, 3.0, 3.0, -1.0, 0.0, 2.0]),  # a tie at the max
        np.array([-np.inf] * 6),
        np.array([np.inf, 1.0, 2.0, np.inf, 0.0, 0.0]),
        np.array([0.0, -0.0, 0.0, -0.0, 0.0, -0.0]),
        np.array([1e-310, -1e-310, 0.0, 1e-310, 1e-310, 0.0]),
    ]
    return np.stack(rows)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_ops_match_torch_on_edge_values(name):
    gfn, tfn = ROWS[name]
    problems = _compare(name, gfn, tfn, [_rows()], atol=1e-12)
    assert not problems, "\n".join(problems)


def test_every_deviation_is_still_needed():
    """A deviation that no longer occurs should be removed from the table."""
    for (name, kind), (_mask, _why) in DEVIATIONS.items():
        table = {**UNARY, **BINARY, **ROWS}
        gfn, tfn = table[name]
        a, b = np.meshgrid(EDGES, EDGES, indexing="ij")
        arrays = (
            [_rows()]
            if name in ROWS
            else [a.reshape(-1), b.reshape(-1)]
            if name in BINARY
            else [EDGES.copy()]
        )
        want, want_grads = _torch_value_and_grads(tfn, arrays)
        with np.errstate(all="ignore"):
            if kind == "value":
                got, ref = gfn(*arrays), want
            elif kind == "grad":
                got = gg.grad(lambda *x, f=gfn: gg.sum(f(*x)))(*arrays)
                ref = want_grads[0]
            else:
                ones = tuple(np.ones_like(a) for a in arrays)
                got, ref = gg.jvp(gfn, tuple(arrays), ones)[1], _torch_tangent(tfn, arrays)
        assert _mismatch(got, ref).size, f"({name}, {kind}) agrees with torch now"


@pytest.mark.parametrize("name", sorted(STRUCTURAL))
def test_shape_index_and_matmul_ops_match_torch(name):
    gfn, tfn = STRUCTURAL[name]
    problems = _compare(name, gfn, tfn, [_rows()], atol=1e-12)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(NONDIFF))
def test_non_differentiable_results_match_torch(name):
    gfn, tfn = NONDIFF[name]
    x = _rows()
    want = tfn(torch.tensor(x)).numpy()
    for got in (gfn(x), gg.jit(gfn)(x)):
        np.testing.assert_array_equal(got, want)
