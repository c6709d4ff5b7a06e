"""Helpers the convolution tests share: a guard that fails if im2col runs (so a passing test
proves a direct lowering ran), and torch's values and gradients as the reference."""

from __future__ import annotations

from gpugraph.ops import conv_lower
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
