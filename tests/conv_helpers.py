"""Helpers the convolution tests share: a guard that fails if im2col runs (so a passing test
proves a direct lowering ran), and torch's values and gradients as the reference."""

from __future__ import annotations

import numpy as np

from gpugraph.ops import conv_lower
from gpugraph.ops.registry import get_op
from tests.torch_ref import torch


def no_im2col(monkeypatch, what: str) -> None:
    """Make any im2col call fail, naming ``what`` should have avoided it."""

    def refuse(*a, **k):
        raise AssertionError(f"im2col ran on {what}")

    monkeypatch.setattr(conv_lower.Im2col, "each_tile", refuse)


def torch_grads(f, args, g):
    """torch's ``f(*args)`` and the gradients of ``sum(f * g)`` with respect to each arg."""
    ts = [torch.tensor(a, requires_grad=True) for a in args]
    out = f(*ts)
    out.backward(torch.tensor(g))
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


def check_out_argument(calls: dict, geom: dict) -> None:
    """Each op impl of ``calls`` (name -> (args, extra kwargs)) writes into a given ``out=``,
    contiguous or transposed, and returns it, with the values of a fresh result."""
    for name, (args, extra) in calls.items():
        impl = get_op(name).impl
        want = impl(np, *args, **geom, **extra)
        for out in (np.empty_like(want), np.empty(want.shape[::-1]).T):
            assert impl(np, *args, **geom, **extra, out=out) is out
            np.testing.assert_array_equal(out, want)
