"""Finite-difference cases for the ops of ops/conv.py, pool.py, math_more.py, reduce_more.py and
shape_more.py; tests/test_autodiff.py runs them with its own. Each entry maps an op to
``make(draw, values) -> (fn, xs, options)``: ``values(draw, shape, domain, salt)`` draws
float64 operands, ``options`` are Case fields (tolerances, steps)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gpugraph as gg
from gpugraph.ops import bind

SHAPE = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
CONV = dict(stride=(2, 1), pad=((1, 0), (1, 1)), dilation=(1, 2), groups=2)
POOL = dict(window=(2, 2), stride=(1, 2), pad=((1, 1), (0, 0)))

# name -> (gg function, domain); piecewise-constant ones (floor, ...) have derivative 0 away
# from their jumps, which a random point misses
UNARY = {
    "square": (gg.square, "any"),
    "log1p": (gg.log1p, "pos"),
    "expm1": (gg.expm1, "any"),
    "log2": (gg.log2, "pos"),
    "tan": (gg.tan, "small"),
    "arctan": (gg.arctan, "any"),
    "floor": (gg.floor, "any"),
    "ceil": (gg.ceil, "any"),
    "round": (gg.round, "any"),
    "softplus": (gg.softplus, "any"),
    "silu": (gg.silu, "any"),
}
BINARY = {
    "arctan2": (gg.arctan2, "any", "away0"),
    "logaddexp": (gg.logaddexp, "any", "any"),
    "remainder": (gg.remainder, "any", "away0"),
    "floor_divide": (gg.floor_divide, "any", "away0"),
}


def _unary(name):
    fn, dom = UNARY[name]

    def make(draw, values):
        if dom == "small":
            return fn, [values(draw, draw(SHAPE), "any") * 0.6], {}
        return fn, [values(draw, draw(SHAPE), dom)], {}

    return make


def _binary(name):
    fn, da, db = BINARY[name]

    def make(draw, values):
        sa, sb = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3))[0]
        return fn, [values(draw, sa, da), values(draw, sb, db, salt=1)], {}

    return make


def _clip(draw, values):
    shape = draw(SHAPE)
    lo, hi = values(draw, (), "any", 1) * 0.3 - 0.5, 0.5
    return lambda x, lo: gg.clip(x, lo, hi), [values(draw, shape, "any"), lo], {}


def _conv(draw, values):
    x, w = values(draw, (2, 4, 5, 6), "any"), values(draw, (4, 2, 2, 3), "any", 1)
    return lambda x, w: bind("conv", x, w, **CONV), [x, w], {}


def _conv_transpose(draw, values):
    y, w = values(draw, (2, 4, 3, 4), "any"), values(draw, (4, 2, 2, 3), "any", 1)
    return lambda y, w: bind("conv_transpose", y, w, **CONV, in_shape=(5, 6)), [y, w], {}


def _conv_weight(draw, values):
    x, y = values(draw, (2, 4, 5, 6), "any"), values(draw, (2, 4, 3, 4), "any", 1)
    return lambda x, y: bind("conv_weight", x, y, **CONV, kernel=(2, 3)), [x, y], {}


def _max_pool(draw, values):
    return (
        lambda x: gg.max_pool(x, 2, (1, 2), ((1, 1), (0, 0))),
        [values(draw, (1, 2, 4, 5), "any")],
        {},
    )


def _max_pool_grad(draw, values):
    x = values(draw, (1, 2, 4, 5), "any", 2)
    return lambda g: bind("max_pool_grad", x, g, **POOL), [values(draw, (1, 2, 5, 2), "any")], {}


def _avg_pool_sum(draw, values):
    return lambda x: bind("avg_pool_sum", x, **POOL), [values(draw, (1, 2, 4, 5), "any")], {}


def _avg_pool_sum_grad(draw, values):
    g = values(draw, (1, 2, 5, 2), "any")
    return lambda g: bind("avg_pool_sum_grad", g, **POOL, x_shape=(1, 2, 4, 5)), [g], {}


def _prod(draw, values):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    axis = draw(st.integers(0, len(shape) - 1))
    return lambda x: gg.prod(x, axis=axis), [values(draw, shape, "any")], {}


def _flip(draw, values):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    return gg.flip, [values(draw, shape, "any")], {}


def _cumsum(draw, values):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    axis = draw(st.integers(0, len(shape) - 1))
    return lambda x: gg.cumsum(x, axis=axis), [values(draw, shape, "any")], {}


def _take_along_axis(draw, values):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    axis = draw(st.integers(0, len(shape) - 1))
    ishape = shape[:axis] + (draw(st.integers(1, 5)),) + shape[axis + 1 :]
    idx = draw(hnp.arrays(np.int64, ishape, elements=st.integers(-shape[axis], shape[axis] - 1)))
    return lambda x: gg.take_along_axis(x, idx, axis), [values(draw, shape, "any")], {}


def _scatter(draw, values):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=4))
    reduce = draw(st.sampled_from(["none", "add", "max"]))
    n = shape[0]
    k = draw(st.integers(1, n)) if reduce == "none" else draw(st.integers(1, 5))
    # "none" with duplicates writes an unspecified one: unique rows keep the result defined
    rows = np.asarray(
        draw(st.permutations(range(n)))[:k]
        if reduce == "none"
        else draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k))
    )
    idx = np.broadcast_to(rows.reshape((k,) + (1,) * (len(shape) - 1)), (k,) + shape[1:])
    x, u = values(draw, shape, "any"), values(draw, idx.shape, "any", salt=1)
    return lambda x, u: gg.scatter(x, 0, idx, u, reduce), [x, u], {}


CASES = {
    **{n: _unary(n) for n in UNARY},
    "take_along_axis": _take_along_axis,
    "scatter": _scatter,
    **{n: _binary(n) for n in BINARY},
    "clip": _clip,
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "conv_weight": _conv_weight,
    "max_pool": _max_pool,
    "max_pool_grad": _max_pool_grad,
    "avg_pool_sum": _avg_pool_sum,
    "avg_pool_sum_grad": _avg_pool_sum_grad,
    "prod": _prod,
    "cumsum": _cumsum,
    "flip": _flip,
}
