"""Reduction fusion, second part: float16 groups (the casts around a float16 softmax or
layer norm fuse, the row kernel reads and writes half and accumulates in float32)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import check_nvrtc, emulate_fused, requires_emulator, requires_nvrtc
from test_reduce_pass import PATTERNS, _args, _grad, _groups, _innermost_left

import gpugraph as gg
from gpugraph.ops.fused import evaluate_body
from gpugraph.ops.registry import get_op

F16 = np.float16


def _tuple(r):
    return tuple(np.asarray(x) for x in (r if isinstance(r, tuple) else (r,)))


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_float16_patterns_fuse_their_casts_and_match_unfused(name):
    args = _args((6, 37), F16)
    for fn in (PATTERNS[name], _grad(name)):
        c = gg.jit(fn).lower(*args)
        assert not _innermost_left(c)
        for group in _groups(c):
            assert "cuda_refusal" not in group.attrs, group.attrs.get("cuda_refusal")
            # the cast of x to float32 is inside: the group reads x as float16
            assert any(v.dtype == F16 and v.shape == (6, 37) for v in group.inputs)
        got, want = _tuple(c(*args)), _tuple(gg.jit(fn, fuse=False)(*args))
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            # the same ops in the same dtypes, block by block: the same bits
            np.testing.assert_array_equal(g, w)
    fwd = gg.jit(PATTERNS[name]).lower(*args)
    (group,) = _groups(fwd)
    if name in ("softmax", "log_softmax", "std"):  # float16 in, float16 out, nothing else
        assert [n.op for n in fwd.graph.nodes if n.op != "constant"] == ["fused_reduce"]
        assert all(v.dtype == F16 for v in group.outputs)


def _half_max(x, w, b):  # a max over float16 itself (exact), its result used as half
    return x - gg.max(x, axis=-1, keepdims=True)


def _half_cases():
    """(label, fused_reduce node, its inputs) of float16 forward and backward groups over 37
    columns (not a warp multiple) and 1 column."""
    for shape, names in [
        ((5, 37), ["softmax", "layer_norm", "log_softmax"]),
        ((3, 1), ["softmax"]),
    ]:
        args = _args(shape, F16)
        for name in names:
            fns = (("fwd", PATTERNS[name]), ("bwd", _grad(name)))
            if name == "softmax":
                fns += (("half-max", _half_max),)
            for direction, fn in fns:
                c = gg.jit(fn).lower(*args)
                env = dict(zip(c.graph.inputs, args))
                for node in c.graph.nodes:
                    if node.op == "constant":
                        env[node.output] = np.asarray(node.attrs["value"])
                        continue
                    ins = [env[v] for v in node.inputs]
                    with np.errstate(all="ignore"):
                        outs = get_op(node.op).impl(np, *ins, **node.attrs)
                    outs = outs if isinstance(outs, tuple) else (outs,)
                    if node.op == "fused_reduce":
                        yield f"{name}-{direction}-{shape}", node, ins
                    env.update(zip(node.outputs, (np.asarray(o) for o in outs)))


@requires_nvrtc
@pytest.mark.emulator
@requires_emulator
def test_float16_row_kernels_compile_and_match_numpy_on_the_emulator():
    from gpugraph.testing import load_kernels

    cases = list(_half_cases())
    assert cases
    sources = {n.attrs["kernel_name"]: n.attrs["cuda_source"] for _, n, _ in cases}
    for name, source in sources.items():
        assert "gg_half" in source and "float acc" in source  # half storage, float32 sums
        check_nvrtc(source, f"{name}.cu")
    load_kernels([(src, name) for name, src in sources.items()])
    for label, node, ins in cases:
        with np.errstate(all="ignore"):
            want = evaluate_body(np, node.attrs["body"], ins)
        got = emulate_fused(node.attrs, ins, [v.type for v in node.outputs])
        for g, w, v in zip(got, want, node.outputs):
            assert g.dtype == v.dtype
            tol = 2e-3 if v.dtype == F16 else 3e-5  # (one half ulp apart at most)
            w = np.asarray(w).reshape(g.shape)
            np.testing.assert_allclose(g.astype(np.float64), w, rtol=tol, atol=tol, err_msg=label)
