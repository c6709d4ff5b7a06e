"""RNN, GRU and LSTM as ``gg.scan`` over time. The input projection ``X @ W^T + Wb`` of every
step is one matmul before the loop; each step does the recurrent matmul and the gates.
``sequence_lens`` masks the steps past a sequence's end: its state stays, its Y rows are zero
(in reverse the state stays at ``initial_h`` until the sequence's last element, so walking
the padded sequence backwards starts each one at its own end)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import control_flow as _cf
from .. import ops as _ops
from .table import OPS, NodeCtx, dtype_of, opt, register, shape_of

gg = _ops.API


def _onnx_op(op: str) -> Callable[[NodeCtx, dict], Callable[[Any], Any]]:
    """An activation computed by the ONNX op of the same name (the same alpha/beta rules)."""
    return lambda node, p: lambda v: OPS[op](node, [v], p)


def _affine(node: NodeCtx, p: dict) -> Callable[[Any], Any]:
    return lambda v: v * np.asarray(p["alpha"], dtype_of(v)) + np.asarray(p["beta"], dtype_of(v))


def _scaled_tanh(node: NodeCtx, p: dict) -> Callable[[Any], Any]:
    return lambda v: (
        np.asarray(p["alpha"], dtype_of(v)) * gg["tanh"](v * np.asarray(p["beta"], dtype_of(v)))
    )


# The ONNX recurrent activations: (the parameters each takes from activation_alpha and
# activation_beta, with their defaults; a builder of the function).
_ACTS: dict[str, tuple[dict[str, float], Callable[[NodeCtx, dict], Callable[[Any], Any]]]] = {
    "Sigmoid": ({}, lambda node, p: gg["sigmoid"]),
    "Tanh": ({}, lambda node, p: gg["tanh"]),
    "Relu": ({}, lambda node, p: gg["relu"]),
    "Softsign": ({}, _onnx_op("Softsign")),
    "Softplus": ({}, _onnx_op("Softplus")),
    "LeakyRelu": ({"alpha": 0.01}, _onnx_op("LeakyRelu")),
    "ThresholdedRelu": ({"alpha": 1.0}, _onnx_op("ThresholdedRelu")),
    "Elu": ({"alpha": 1.0}, _onnx_op("Elu")),
    "HardSigmoid": ({"alpha": 0.2, "beta": 0.5}, _onnx_op("HardSigmoid")),
    "Affine": ({"alpha": 1.0, "beta": 0.0}, _affine),
    "ScaledTanh": ({"alpha": 1.0, "beta": 1.0}, _scaled_tanh),
}
# gates per op, the default activations per direction, the extra state (LSTM's cell)
_SPEC = {
    "RNN": (1, ["Tanh"]),
    "GRU": (3, ["Sigmoid", "Tanh"]),
    "LSTM": (4, ["Sigmoid", "Tanh", "Tanh"]),
}


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _acts(node: NodeCtx, attrs: dict, n_dir: int) -> list[list[Callable]]:
    """Each direction's activation functions. ``activation_alpha``/``activation_beta`` are
    consumed in order by the activations that take an alpha (a beta), as onnxruntime reads
    them; where a list runs out, the activation's default applies."""
    default = _SPEC[node.op_type][1]
    names = [_s(a) for a in attrs.get("activations", default * n_dir)]
    if len(names) != len(default) * n_dir:
        raise node.unsupported(f"activations={names} (expected {len(default) * n_dir} names)")
    given = {
        "alpha": list(attrs.get("activation_alpha", [])),
        "beta": list(attrs.get("activation_beta", [])),
    }
    fns = []
    for a in names:
        if a not in _ACTS:
            raise node.unsupported(f"activation {a!r}")
        params, build = _ACTS[a]
        fns.append(build(node, {k: given[k].pop(0) if given[k] else d for k, d in params.items()}))
    extra = [k for k, v in given.items() if v]
    if extra:
        raise node.unsupported(f"more activation_{extra[0]} values than activations taking one")
    k = len(default)
    return [fns[d * k : (d + 1) * k] for d in range(n_dir)]


def _mm_t(a: Any, w: Any) -> Any:
    """``a @ w.T`` with ``w`` a (rows, cols) weight."""
    return gg["matmul"](a, gg["transpose"](w, (1, 0)))


def _gates(v: Any, n: int, axis: int = -1) -> list:
    return gg["split"](v, n, axis)


def _cell(
    op: str,
    acts: list[Callable],
    r: Any,
    rb: Any,
    p: Any,
    clip: float | None,
    lbr: int,
    input_forget: int = 0,
):
    """The step ``(state, xw_t) -> new state`` of one direction; state is (h,) or (h, c)."""

    def cl(v):
        return v if clip is None else gg["clip"](v, -clip, clip)

    def rnn(state, xw):
        return (acts[0](cl(xw + _mm_t(state[0], r) + rb)),)

    def gru(state, xw):
        (h,) = state
        xz, xr, xh = _gates(xw, 3)
        rz, rr, rh = _gates(r, 3, 0)  # weight rows
        bz, br, bh = _gates(rb, 3)
        z = acts[0](cl(xz + _mm_t(h, rz) + bz))
        rt = acts[0](cl(xr + _mm_t(h, rr) + br))
        if lbr:
            hh = acts[1](cl(xh + rt * (_mm_t(h, rh) + bh)))
        else:
            hh = acts[1](cl(xh + _mm_t(rt * h, rh) + bh))
        return ((1 - z) * hh + z * h,)

    def lstm(state, xw):
        # Clipping comes after the peephole term, on each gate's whole pre-activation (as
        # onnxruntime does); the output gate's peephole reads the new cell.
        h, c = state
        gi, go, gf, gc = _gates(xw + _mm_t(h, r) + rb, 4)
        if p is not None:
            pi, po, pf = _gates(p, 3)
            gi, gf = gi + pi * c, gf + pf * c
        i = acts[0](cl(gi))
        # input_forget couples the gates: the forget gate is 1 - the input gate
        f = 1 - i if input_forget else acts[0](cl(gf))
        c2 = f * c + i * acts[1](cl(gc))
        if p is not None:
            go = go + po * c2
        return (acts[0](cl(go)) * acts[2](c2), c2)

    return {"RNN": rnn, "GRU": gru, "LSTM": lstm}[op]


@register("RNN", "GRU", "LSTM")
def _recurrent(node: NodeCtx, ins: list, attrs: dict):
    op = node.op_type
    n_gates = _SPEC[op][0]
    x, w, r = ins[0], ins[1], ins[2]
    b, seq_lens, h0 = opt(ins, 3), opt(ins, 4), opt(ins, 5)
    c0, peep = (opt(ins, 6), opt(ins, 7)) if op == "LSTM" else (None, None)
    direction = _s(attrs.get("direction", "forward"))
    if direction not in ("forward", "reverse", "bidirectional"):
        raise node.unsupported(f"direction={direction!r}")
    n_dir = 2 if direction == "bidirectional" else 1
    layout = attrs.get("layout", 0)
    clip = attrs.get("clip")
    acts = _acts(node, attrs, n_dir)
    dt = dtype_of(x)
    if layout:  # batch-major X, initial_h, initial_c: to sequence- and direction-major
        x, h0, c0 = (None if v is None else gg["transpose"](v, (1, 0, 2)) for v in (x, h0, c0))
    t_len, batch, _ = shape_of(x)
    hidden = shape_of(r)[-1]
    if b is None:
        b = np.zeros((n_dir, 2 * n_gates * hidden), dt)
    if h0 is None:
        h0 = np.zeros((n_dir, batch, hidden), dt)
    if op == "LSTM" and c0 is None:
        c0 = np.zeros((n_dir, batch, hidden), dt)
    mask = None
    if seq_lens is not None:  # (T, B, 1): step t of sequence b is real
        steps = np.arange(t_len, dtype=np.int64).reshape(t_len, 1)
        lens = gg["reshape"](gg["astype"](seq_lens, np.int64), (1, batch))
        mask = gg["expand_dims"](gg["less"](steps, lens), -1)

    ys, hs, cs = [], [], []
    for d in range(n_dir):
        reverse = direction == "reverse" or d == 1
        wd, rd, bd = (gg["getitem"](v, d) for v in (w, r, b))
        wb, rb = _gates(bd, 2)
        xw = _mm_t(x, wd) + wb  # (T, B, gates * hidden): every step's input projection
        cell = _cell(
            op,
            acts[d],
            rd,
            rb,
            None if peep is None else gg["getitem"](peep, d),
            clip,
            attrs.get("linear_before_reset", 0),
            attrs.get("input_forget", 0) if op == "LSTM" else 0,
        )
        init = (gg["getitem"](h0, d),) + ((gg["getitem"](c0, d),) if op == "LSTM" else ())

        def step(state, xs, cell=cell):
            new = cell(state, xs[0])
            if mask is None:
                return new, new[0]
            m = xs[1]
            new = tuple(gg["where"](m, a, o) for a, o in zip(new, state))
            return new, gg["where"](m, new[0], np.zeros((), dt))

        seq = (xw,) if mask is None else (xw, mask)
        final, y = _cf.scan(step, init, seq, reverse=reverse)
        ys.append(y)
        hs.append(final[0])
        if op == "LSTM":
            cs.append(final[1])
    y = gg["stack"](ys, 1)  # (T, D, B, H)
    h, c = gg["stack"](hs, 0), (gg["stack"](cs, 0) if cs else None)
    if layout:
        y = gg["transpose"](y, (2, 0, 1, 3))
        h = gg["transpose"](h, (1, 0, 2))
        c = None if c is None else gg["transpose"](c, (1, 0, 2))
    return (y, h) if op != "LSTM" else (y, h, c)
