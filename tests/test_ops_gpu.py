"""Every op case of tests/test_ops.py on CuPy: eagerly on CuPy arrays and under jit (fused and
unfused), against the same NumPy references, plus gradients (gpu tier: skipped without a CUDA
device). Each test runs a whole table and reports every failing case at once, so a first run
on a new machine shows everything that breaks in one go."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.backends.base import cupy_status
from tests.test_ops import (
    BINARY,
    MATMUL_SHAPES,
    REDUCTIONS,
    SHAPE_CASES,
    UNARY,
    _layer_norm,
    _logsumexp,
    _softmax,
    sample,
    tol,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        cupy_status().name != "cupy", reason=f"needs a CUDA device: {cupy_status().reason}"
    ),
]
DTYPES = [np.float32, np.float64]
Case = tuple[Callable, Callable, list, object]  # gg function, NumPy reference, args, tol dtype


def results_on_gpu(fn: Callable, args: list, eager: bool = True) -> dict[str, np.ndarray]:
    import cupy

    dev = [cupy.asarray(a) for a in args]
    runs = {f"jit fuse={f}": gg.jit(fn, backend="cupy", fuse=f) for f in (True, False)}
    if eager:
        runs["eager"] = fn
    return {how: cupy.asnumpy(run(*dev)) for how, run in runs.items()}


def check_cases(cases: dict[str, Case], eager: bool = True) -> None:
    failures = []
    for name, (fn, ref, args, dtype) in cases.items():
        expected = np.asarray(ref(*args))
        try:
            for how, got in results_on_gpu(fn, args, eager).items():
                where = f"{name} ({how})"
                assert got.shape == expected.shape, f"{where}: shape {got.shape}"
                assert got.dtype == expected.dtype, f"{where}: dtype {got.dtype}"
                np.testing.assert_allclose(got, expected, **tol(dtype), err_msg=where)
        except Exception as e:  # noqa: BLE001 - collect every failing case, then report
            failures.append(f"{name}: {type(e).__name__}: {e}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_on_gpu(dtype):
    cases = {
        name: (fn, ref, [sample((33, 65), dtype, domain)], dtype)
        for name, (fn, ref, domain) in UNARY.items()
    }
    for name, (fn, ref, domain) in BINARY.items():
        for sa, sb in [((33, 65), (33, 65)), ((33, 65), (65,)), ((33, 1), (1, 65)), ((), (7,))]:
            args = [sample(sa, dtype, domain), sample(sb, dtype, domain)]
            cases[f"{name} {sa} {sb}"] = (fn, ref, args, dtype)
    c, a, b = (sample(s, dtype, "any") for s in [(5, 1), (1, 7), (5, 7)])
    cases["where"] = (
        lambda c, a, b: gg.where(c > 0, a, b),
        lambda c, a, b: np.where(c > 0, a, b),
        [c, a, b],
        dtype,
    )
    check_cases(cases)


def test_astype_on_gpu():
    kinds = ["float32", "float64", "int32", "int64", "bool"]
    cases = {
        f"{src}->{dst}": (
            lambda x, d=dst: gg.astype(x, d),
            lambda x, d=dst: x.astype(d),
            [(np.random.default_rng(0).standard_normal(37) * 4).astype(src)],
            np.float64,
        )
        for src in kinds
        for dst in kinds
    }
    check_cases(cases)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_matmul_shapes_and_composites_on_gpu(dtype):
    x = sample((3, 4, 2), dtype, "any")
    cases: dict[str, Case] = {}
    for name, (fn, ref) in REDUCTIONS.items():
        for axis in (None, 0, -1, (0, 2)):
            for keep in (False, True):
                cases[f"{name} axis={axis} keepdims={keep}"] = (
                    lambda x, f=fn, a=axis, k=keep: f(x, axis=a, keepdims=k),
                    lambda x, f=ref, a=axis, k=keep: f(x, axis=a, keepdims=k),
                    [x],
                    dtype,
                )
    for axis in (None, 1):
        cases[f"argmax axis={axis}"] = (
            lambda x, a=axis: gg.argmax(x, axis=a),
            lambda x, a=axis: np.argmax(x, axis=a),
            [x],
            np.float64,
        )
    for sa, sb in MATMUL_SHAPES:
        args = [sample(sa, dtype, "any"), sample(sb, dtype, "any")]
        cases[f"matmul {sa} {sb}"] = (gg.matmul, np.matmul, args, dtype)
    for name, (fn, ref) in SHAPE_CASES.items():
        cases[name] = (fn, ref, [sample((2, 3, 2), dtype, "any")], dtype)
    y = sample((3, 5), dtype, "any") * 3
    w, b = sample((5,), dtype, "any"), sample((5,), dtype, "any")
    cases["softmax"] = (gg.softmax, _softmax, [y], dtype)
    cases["log_softmax"] = (gg.log_softmax, lambda y: np.log(_softmax(y)), [y], dtype)
    cases["logsumexp"] = (gg.logsumexp, _logsumexp, [y], dtype)
    cases["layer_norm"] = (gg.layer_norm, _layer_norm, [y, w, b], dtype)
    # on CuPy arrays Python indexing is CuPy's own: the index cases are checked under jit only
    check_cases({k: v for k, v in cases.items() if k.startswith("index")}, eager=False)
    check_cases({k: v for k, v in cases.items() if not k.startswith("index")})


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_on_gpu_match_numpy(dtype):
    import cupy

    def loss(params, tokens, onehot):
        x = gg.take(params["emb"], tokens, axis=0)  # its gradient is the take_grad kernel
        h = gg.tanh(x @ params["w1"] + params["b1"])
        logp = gg.log_softmax(h @ params["w2"])
        return -gg.mean(gg.sum(logp * onehot, axis=1)) + 0.01 * gg.sum(params["w1"] ** 2)

    rng = np.random.default_rng(0)
    params = {
        "emb": rng.standard_normal((10, 6)).astype(dtype),
        "w1": rng.standard_normal((6, 8)).astype(dtype),
        "b1": np.zeros(8, dtype),
        "w2": rng.standard_normal((8, 3)).astype(dtype),
    }
    tokens = rng.integers(0, 10, 16)  # repeats: take_grad must add them up
    onehot = np.eye(3, dtype=dtype)[rng.integers(0, 3, 16)]
    want = gg.jit(gg.grad(loss), backend="numpy")(params, tokens, onehot)
    dev_params = {k: cupy.asarray(v) for k, v in params.items()}
    dev = [dev_params, cupy.asarray(tokens), cupy.asarray(onehot)]
    for how, fn in [("eager", gg.grad(loss)), ("jit", gg.jit(gg.grad(loss), backend="cupy"))]:
        got = gg.asnumpy(fn(*dev))
        for k in params:
            assert isinstance(got[k], np.ndarray)
            np.testing.assert_allclose(got[k], want[k], **tol(dtype), err_msg=f"{how} d/d{k}")
