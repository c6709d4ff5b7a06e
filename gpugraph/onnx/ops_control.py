"""Control-flow converters: If, Loop and Scan onto gg.cond, gg.scan and gg.while_loop.

Subgraphs are converted at load like the main graph (``SubGraph``); the outer-scope values a
subgraph reads arrive as the node's trailing inputs (``attrs['__free__']`` names them) and
are closed over by the bodies, which gpugraph captures as the region's extra inputs. A
predicate or trip count that is a constant decides in Python (the branch is inlined, the
loop length is static), so shape-driven control flow folds as other constant subgraphs do.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np

from .. import control_flow as _cf
from .. import ops as _ops
from ..autodiff import grad
from ..errors import DTypeError, ShapeError, UnsupportedError
from .model import SubGraph, run_subgraph
from .ops_seq import Seq
from .table import LIMITS, NodeCtx, check_size, dtype_of, is_const, opt, register, shape_of

gg = _ops.API


def _split(node: NodeCtx, ins: list, attrs: dict) -> tuple[list, dict[str, Any]]:
    """The node's own inputs and the outer-scope values its subgraphs read."""
    free = attrs.get("__free__", ())
    n = len(ins) - len(free)
    return ins[:n], dict(zip(free, ins[n:]))


def _scalar(node: NodeCtx, v: Any, what: str) -> Any:
    """A one-element predicate or count as a scalar (ONNX allows shape [] or [1])."""
    if int(np.prod(v.shape, dtype=np.int64)) != 1:
        raise node.unsupported(f"a {what} of shape {tuple(v.shape)} (one element expected)")
    return np.asarray(v).reshape(()) if is_const(v) else gg["reshape"](v, ())


def _run(sub: SubGraph, args: tuple, outer: dict) -> tuple:
    return run_subgraph(sub, args, outer)


@contextmanager
def _typed_regions(node: NodeCtx, what: str):
    """ONNX lets If branches differ in output shape and loop carries change shape; gpugraph's
    region ops need them fixed: say so, naming the node (the cause is kept)."""
    try:
        yield
    except (ShapeError, DTypeError) as e:
        # Only the region's own type check ("... returns X as T1, but ... T2"); an error
        # from an op inside a body is not this and passes unchanged.
        if isinstance(e, UnsupportedError) or " returns " not in str(e) or " but " not in str(e):
            raise
        raise node.unsupported(f"{what} ({e})") from e


@register("If")
def _if(node: NodeCtx, ins: list, attrs: dict):
    (pred,), outer = _split(node, ins, attrs)
    then_g, else_g = attrs["then_branch"], attrs["else_branch"]
    pred = _scalar(node, pred, "condition")
    if is_const(pred):  # decided while tracing: inline the branch taken
        return _run(then_g if bool(pred) else else_g, (), outer)
    if np.dtype(pred.dtype) != np.bool_:
        pred = gg["not_equal"](pred, np.zeros((), pred.dtype))
    kinds: dict[str, list] = {}  # each branch's outputs: a tensor (None) or a sequence length

    def branch(g: SubGraph, key: str) -> tuple:
        # A sequence output travels through the cond as its tensors, flattened in order.
        outs = _run(g, (), outer)
        kinds[key] = [len(o.items) if isinstance(o, Seq) else None for o in outs]
        return tuple(t for o in outs for t in (o.items if isinstance(o, Seq) else (o,)))

    with _typed_regions(node, "branches whose outputs differ in shape or dtype"):
        flat = list(_cf.cond(pred, lambda: branch(then_g, "then"), lambda: branch(else_g, "else")))
    if kinds["then"] != kinds["else"]:
        raise node.unsupported(
            f"branches whose sequence outputs differ in length ({kinds['then']} against "
            f"{kinds['else']}, None for a tensor)"
        )
    outs = []
    for k in kinds["then"]:
        outs.append(flat.pop(0) if k is None else Seq(tuple(flat.pop(0) for _ in range(k))))
    return tuple(outs)


def _cond_is_fixed(body: SubGraph) -> bool:
    """The body hands its condition input straight back (directly or through Identity), as
    exporters write for-loops: then the loop's condition never changes."""
    name, src = body.outputs[0], body.inputs[1]
    producers = {o: n for n in body.nodes for o in n.outputs}
    while name in producers and producers[name].ctx.op_type == "Identity":
        name = producers[name].inputs[0]
    return name == src


@register("Loop")
def _loop(node: NodeCtx, ins: list, attrs: dict):
    own, outer = _split(node, ins, attrs)
    body: SubGraph = attrs["body"]
    trip, cond, carried = opt(own, 0), opt(own, 1), list(own[2:])
    n_carry = len(carried)
    n_scan = len(body.outputs) - 1 - n_carry
    trip = None if trip is None else _scalar(node, trip, "trip count")
    cond = None if cond is None else _scalar(node, cond, "condition")
    cond_false = cond is not None and is_const(cond) and not bool(cond)
    fixed = cond is None or (is_const(cond) and (cond_false or _cond_is_fixed(body)))
    if fixed and (cond_false or (trip is not None and is_const(trip))):
        # A for-loop of known length: a scan (reverse-differentiable, scan outputs stacked).
        length = 0 if cond_false else max(int(trip), 0)
        check_size((length,), np.int64, node.where())  # a runaway "infinite" trip count

        def step(c, _):
            outs = _run(body, (c[0], np.asarray(True), *c[1:]), outer)
            return (c[0] + np.int64(1), *outs[1 : 1 + n_carry]), tuple(outs[1 + n_carry :])

        if any(isinstance(c, Seq) for c in carried):  # a list that may grow: unrolled
            return _unroll(node, body, length, np.asarray(True), carried, n_scan, outer)
        try:
            with _typed_regions(node, "loop-carried values that change shape or dtype"):
                final, ys = _cf.scan(step, (np.zeros((), np.int64), *carried), None, length=length)
        except UnsupportedError as e:  # carries that change shape: ONNX allows it, unroll
            if not isinstance(e.__cause__, (ShapeError, DTypeError)):
                raise
            return _unroll(node, body, length, np.asarray(True), carried, n_scan, outer)
        return (*final[1:], *ys)
    if cond is None:
        cond = np.asarray(True)
    if n_scan or any(isinstance(c, Seq) for c in carried):
        # The output length (or a sequence's) is known only when the condition is computable
        # while tracing (from the iteration number and constants): unroll it, else refuse.
        if (trip is not None and not is_const(trip)) or not is_const(cond):
            raise _data_dependent(node)
        return _unroll(node, body, trip, cond, carried, n_scan, outer)

    def go_on(c):
        ok = c[1]
        if trip is not None:
            ok = gg["logical_and"](ok, gg["less"](c[0], trip))
        return ok

    def step(c):
        outs = _run(body, tuple(c), outer)
        more = _scalar(node, outs[0], "condition output")
        more = more if is_const(more) else gg["astype"](more, np.bool_)
        return (c[0] + np.int64(1), more, *outs[1 : 1 + n_carry])

    init = (np.zeros((), np.int64), np.asarray(cond, bool) if is_const(cond) else cond, *carried)
    with _typed_regions(node, "loop-carried values that change shape or dtype"):
        return tuple(_cf.while_loop(go_on, step, init)[2:])


def _data_dependent(node: NodeCtx) -> UnsupportedError:
    return node.unsupported(
        "a Loop with scan outputs (or sequences) whose trip count depends on data (the output "
        "length would be data-dependent)"
    )


def _unroll(node, body, trip, cond, carried, n_scan, outer) -> tuple:
    """The loop run while tracing, one body per iteration, up to
    ``LIMITS['max_unrolled_trips']``: each iteration's condition must come out a constant.
    Carries may change shape and sequences may grow, as ONNX allows; scan outputs must keep
    one shape (they are stacked)."""
    limit = LIMITS["max_unrolled_trips"]
    n_carry, i, ys = len(carried), 0, []
    go = bool(cond)
    while go and (trip is None or i < int(trip)):
        if i >= limit:
            raise node.unsupported(
                f"a Loop unrolled while tracing past gg.onnx.LIMITS['max_unrolled_trips'] "
                f"({limit}) iterations"
            )
        outs = _run(body, (np.asarray(i, np.int64), np.asarray(True), *carried), outer)
        more = _scalar(node, outs[0], "condition output")
        if not is_const(more):
            raise _data_dependent(node)
        go, carried = bool(more), list(outs[1 : 1 + n_carry])
        ys.append(outs[1 + n_carry :])
        i += 1
    if not ys and n_scan:  # no iteration: the body's scan-output types, traced once
        outs = _run(body, (np.asarray(0, np.int64), np.asarray(True), *carried), outer)
        return (*carried, *(np.zeros((0, *shape_of(y)), dtype_of(y)) for y in outs[1 + n_carry :]))
    stacked = []
    for k in range(n_scan):
        parts = [y[k] for y in ys]
        if len({shape_of(p) for p in parts}) > 1:
            raise node.unsupported("scan outputs whose shape changes between iterations")
        stacked.append(gg["stack"](parts, 0))
    return (*carried, *stacked)


def _axis(node: NodeCtx, a: int, rank: int, what: str) -> int:
    if not -rank <= a < rank:
        raise node.unsupported(f"{what} {a} for rank {rank}")
    return a % rank


@register("Scan")
def _scan(node: NodeCtx, ins: list, attrs: dict):
    if node.opset < 9:
        return _scan8(node, ins, attrs)
    own, outer = _split(node, ins, attrs)
    body: SubGraph = attrs["body"]
    m = int(attrs["num_scan_inputs"])
    states, xs = list(own[: len(own) - m]), list(own[len(own) - m :])
    if any(isinstance(v, Seq) for v in states):
        raise node.unsupported("a sequence as a Scan state")
    in_axes = list(attrs.get("scan_input_axes", [0] * m))
    in_dirs = list(attrs.get("scan_input_directions", [0] * m))
    n_out = len(body.outputs) - len(states)
    out_axes = list(attrs.get("scan_output_axes", [0] * n_out))
    out_dirs = list(attrs.get("scan_output_directions", [0] * n_out))
    seq = []
    for x, a, d in zip(xs, in_axes, in_dirs):
        x = gg["moveaxis"](x, _axis(node, a, len(x.shape), "scan_input_axes"), 0)
        seq.append(gg["flip"](x, 0) if d else x)
    ns = len(states)

    def step(c, x):
        outs = _run(body, (*c, *x), outer)
        return tuple(outs[:ns]), tuple(outs[ns:])

    with _typed_regions(node, "state values that change shape or dtype"):
        final, ys = _cf.scan(step, tuple(states), tuple(seq))
    outs = []
    for y, a, d in zip(ys, out_axes, out_dirs):
        y = gg["flip"](y, 0) if d else y
        outs.append(gg["moveaxis"](y, 0, _axis(node, a, len(y.shape), "scan_output_axes")))
    return (*final, *outs)


def _scan8(node: NodeCtx, ins: list, attrs: dict):
    """Opset-8 Scan: inputs ``[sequence_lens], states..., scan inputs...`` with a batch axis 0
    and the sequence on axis 1. Each batch row is its own ``gg.scan`` over its first
    ``sequence_lens[b]`` steps (a constant; reversed inputs walk back from that end); its
    scan outputs are zero past its length, as onnxruntime gives."""
    own, outer = _split(node, ins, attrs)
    body: SubGraph = attrs["body"]
    m = int(attrs["num_scan_inputs"])
    lens, rest = own[0], own[1:]
    states, xs = list(rest[: len(rest) - m]), list(rest[len(rest) - m :])
    if any(isinstance(v, Seq) for v in states):
        raise node.unsupported("a sequence as a Scan state")
    dirs = list(attrs.get("directions", [0] * m))
    batch, t_len = shape_of(xs[0])[:2]
    lens = [t_len] * batch if lens is None else node.ints(lens, "sequence_lens")
    if len(lens) != batch or not all(0 <= n <= t_len for n in lens):
        raise node.unsupported(f"sequence_lens {lens} for batch {batch} and length {t_len}")
    ns = len(states)

    def step(c, x):
        outs = _run(body, (*c, *x), outer)
        return tuple(outs[:ns]), tuple(outs[ns:])

    finals, rows = [], []
    for b, n in enumerate(lens):
        seq = []
        for x, d in zip(xs, dirs):
            xb = gg["getitem"](x, (b, slice(0, n)))
            seq.append(gg["flip"](xb, 0) if d else xb)
        with _typed_regions(node, "state values that change shape or dtype"):
            final, ys = _cf.scan(step, tuple(gg["getitem"](v, b) for v in states), tuple(seq))
        finals.append(final)
        pad = [(0, t_len - n)]
        rows.append([gg["pad"](y, pad + [(0, 0)] * (len(shape_of(y)) - 1)) for y in ys])
    outs = [gg["stack"]([f[k] for f in finals], 0) for k in range(ns)]
    outs += [gg["stack"]([r[k] for r in rows], 0) for k in range(len(rows[0]))]
    return tuple(outs)


@register("Gradient")  # domain ai.onnx.preview.training
def _gradient(node: NodeCtx, ins: list, attrs: dict):
    """d sum(y) / d x for each x of ``xs`` (the ONNX convention for a non-scalar y), by
    gg.grad of the forward nodes re-run on the xs; ``zs`` and every other value they read are
    held constant."""
    own, outer = _split(node, ins, attrs)
    fwd: SubGraph = attrs["__forward__"]
    n = len(fwd.inputs)

    def f(*xs):
        (y,) = _run(fwd, xs, outer)
        return gg["sum"](y)

    return tuple(grad(f, argnums=tuple(range(n)))(*own[:n]))
