"""NamedTuples and dataclasses as pytree nodes (arguments, results, gradients), and the public
gg.tree_map / tree_leaves / tree_structure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pytest

import gpugraph as gg


class Layer(NamedTuple):
    w: Any
    b: Any


@dataclass(frozen=True)
class Params:
    layer: Layer
    scale: Any


@gg.register_dataclass
@dataclass
class Mutable:
    x: Any
    tag: Any = None


def test_leaves_structure_map():
    p = Params(Layer(np.ones(2), np.zeros(2)), np.float64(3.0))
    leaves = gg.tree_leaves(p)
    assert len(leaves) == 3 and leaves[2] == 3.0
    assert gg.tree_structure(p) == gg.tree_structure(gg.tree_map(lambda a: a * 2, p))
    assert gg.tree_structure(p) != gg.tree_structure(Layer(1.0, (2.0, 3.0)))
    q = gg.tree_map(lambda a, b: a + b, p, p)
    assert isinstance(q, Params) and isinstance(q.layer, Layer)
    np.testing.assert_array_equal(q.layer.w, [2, 2])
    assert gg.tree_leaves([None, {"a": 1}, Mutable(2)]) == [1, 2]  # None: an empty subtree
    with pytest.raises(gg.GpuGraphError, match="structure"):
        gg.tree_map(lambda a, b: a, p, Layer(1, 2))


def test_jit_and_grad_through_namedtuples_and_dataclasses():
    p = Params(Layer(np.arange(3.0), np.ones(3)), np.float64(2.0))

    def loss(p, x):
        return gg.sum((p.layer.w * x + p.layer.b) ** 2 * p.scale)

    x = np.array([1.0, -1.0, 0.5])
    g = gg.grad(loss)(p, x)
    assert isinstance(g, Params) and isinstance(g.layer, Layer)
    r = 2 * (p.layer.w * x + p.layer.b) * p.scale
    np.testing.assert_allclose(g.layer.w, r * x)
    np.testing.assert_allclose(g.layer.b, r)
    np.testing.assert_allclose(gg.jit(gg.grad(loss))(p, x).layer.w, r * x)
    out = gg.jit(lambda m: Mutable(m.x + 1, m.tag))(Mutable(np.zeros(2)))
    assert isinstance(out, Mutable) and out.tag is None
    np.testing.assert_array_equal(out.x, [1, 1])


def test_dataclass_with_non_init_field_is_not_a_node():
    @dataclass
    class Odd:
        x: Any
        y: Any = field(init=False, default=0)

    gg.register_dataclass(Odd)
    assert gg.tree_leaves(Odd(1)) == [Odd(1)]  # a leaf: it could not be rebuilt from fields

    @dataclass
    class Plain:
        x: Any

    assert gg.tree_leaves(Plain(1)) == [Plain(1)]  # neither frozen nor registered: a leaf


def test_unregistered_dataclass_argument_says_how_to_register():
    @dataclass
    class Config:
        x: Any

    with pytest.raises(gg.GpuGraphError, match="register_dataclass"):
        gg.jit(lambda c: c.x)(Config(np.ones(2)))
