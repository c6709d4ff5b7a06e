"""jit, tracing, pytrees, the signature cache, eager mode, promotion, backends and errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.backends.base import auto_backend, cupy_status, get_backend
from gpugraph.ir import GraphBuilder, TensorType, verify

HERE = os.path.basename(__file__)


def f32(*shape):
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


# ---- IR ---------------------------------------------------------------------------------
def test_text_form_and_dot():
    c = gg.jit(lambda x, y: gg.exp(x * y).sum(axis=1)).lower(f32(4, 8), f32(4, 8))
    text = str(c.traced_graph)
    assert "graph(%x:f32[4,8], %y:f32[4,8])" in text  # inputs print as argument paths
    assert "%0:f32[4,8] = multiply %x %y" in text
    assert "sum %1 {axis=(1,), keepdims=False}" in text
    dot = c.to_dot()
    assert dot.startswith("digraph") and "multiply" in dot or "fused" in dot


def test_verify_catches_use_before_definition():
    b = GraphBuilder()
    x = b.add_input(TensorType((2,), np.float32))
    n1 = b.add_node("negative", [x], {}, [TensorType((2,), np.float32)])
    n2 = b.add_node("exp", [n1.output], {}, [TensorType((2,), np.float32)])
    b.nodes = [n2, n1]
    with pytest.raises(AssertionError, match="before it is defined"):
        verify(b.build([n2.output]))


def test_verify_catches_wrong_type():
    b = GraphBuilder()
    x = b.add_input(TensorType((2,), np.float32))
    n = b.add_node("exp", [x], {}, [TensorType((3,), np.float32)])
    with pytest.raises(AssertionError, match="rule gives"):
        verify(b.build([n.output]))


# ---- jit ----------------------------------------------------------------------------------
def test_decorator_forms_and_cache_per_signature():
    @gg.jit
    def f(x):
        return x * 2.0

    @gg.jit(backend="numpy")
    def g(x):
        return x + 1

    assert f(f32(3)).dtype == np.float32
    f(f32(3))
    assert f.cache_size == 1
    f(f32(4))
    f(np.ones(3, np.float64))
    assert f.cache_size == 3
    np.testing.assert_array_equal(g(np.arange(3)), np.arange(3) + 1)


def test_pytrees_in_and_out():
    @gg.jit
    def f(params, xs):
        h = xs[0] @ params["w"] + params["b"]
        return {"out": h, "pair": (h.sum(), [xs[1] * 2])}

    params = {"w": f32(3, 2), "b": f32(2)}
    xs = (f32(4, 3), f32(5))
    out = f(params, xs)
    np.testing.assert_allclose(out["out"], xs[0] @ params["w"] + params["b"], rtol=1e-6)
    np.testing.assert_allclose(out["pair"][1][0], xs[1] * 2)
    assert isinstance(out["pair"], tuple) and isinstance(out["pair"][1], list)


def test_static_argnums():
    @gg.jit(static_argnums=1)
    def f(x, n):
        for _ in range(n):
            x = x * 2
        return x

    np.testing.assert_allclose(f(f32(3), 3), f32(3) * 8)
    f(f32(3), 2)
    assert f.cache_size == 2


def test_python_scalar_arguments_are_weak():
    f = gg.jit(lambda x, s: x * s)
    assert f(f32(3), 2.0).dtype == np.float32
    assert f(np.ones(3), 2.0).dtype == np.float64
    np.testing.assert_allclose(f(f32(3), 3.0), f32(3) * 3)
    assert f.cache_size == 2  # the value of s is not part of the signature


def test_repeated_calls_take_the_fast_path_with_the_same_results():
    traces = []

    @gg.jit(backend="numpy")
    def f(x, s):
        traces.append(1)
        return x * s

    x32, x64 = f32(3), np.ones(3)
    calls = [(x32, 2), (x32, 2.5), (x32, True), (x64, 2), (x32, 3), (x32, 1.5), (x32, False)]
    for x, s in calls * 2:
        got = f(x, s)
        want = x * s
        assert got.dtype == want.dtype and np.array_equal(got, want), (x.dtype, s)
    assert f.cache_size == len(traces) == 4  # (f32, int), (f32, float), (f32, bool), (f64, int)
    assert len(f._fast) == 4
    g = gg.jit(lambda x: x + 1, backend="numpy")
    sub = np.ma.masked_array(x32)  # an ndarray subclass: the full path, not the fast one
    np.testing.assert_array_equal(g(sub), x32 + 1)
    assert g.cache_size == 1 and not g._fast
    f.clear_cache()
    assert f.cache_size == 0 and not f._fast


def test_tracer_ndarray_protocol():
    def f(x, y):
        assert x.shape == (2, 3) and x.ndim == 2 and x.dtype == np.float32
        a = x.T @ y
        b = (-x).reshape(3, 2).transpose(1, 0).sum(axis=0) / 2
        c = x.mean() - x.max() + x.min() + (x**2).astype("float64").sum()
        d = (x > 0) & (x < 1) | ~(x == 0)
        e = 1.0 - x
        return a, b, c, d, e, x.reshape((6,))[::2], len(x)

    x, y = f32(2, 3), f32(2, 4)
    eager = f(x, y)
    jitted = gg.jit(f)(x, y)
    for e, j in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-5)


def test_numpy_array_on_the_left_of_a_tracer():
    w = f32(3)
    f = gg.jit(lambda x: w * x + w)
    np.testing.assert_allclose(f(f32(3)), w * f32(3) + w, rtol=1e-6)


def test_lower_with_shape_dtype_specs():
    c = gg.jit(lambda x, y: x @ y).lower(gg.ShapeDtype((2, 3)), gg.ShapeDtype((3, 4), "float64"))
    assert [str(v.type) for v in c.graph.inputs] == ["f32[2,3]", "f64[3,4]"]
    out = c(f32(2, 3), np.ones((3, 4)))
    assert out.shape == (2, 4) and out.dtype == np.float64
    assert "passes:" in c.explain() and "memory:" in c.explain()


def test_outputs_survive_the_next_call():
    f = gg.jit(lambda x: (gg.exp(x) + 1) * 2)
    a = f(np.zeros(4, np.float32))
    first = a.copy()
    f(np.ones(4, np.float32))
    np.testing.assert_array_equal(a, first)


def test_inputs_are_not_modified_and_identity_is_copied():
    x = f32(5)
    keep = x.copy()
    out = gg.jit(lambda x: (x, x * 2, gg.relu(x)))(x)
    np.testing.assert_array_equal(x, keep)
    assert out[0] is not x and np.shares_memory(out[0], x) is False


def test_jit_inside_jit_inlines():
    inner = gg.jit(lambda x: x * 3)
    outer = gg.jit(lambda x: inner(x) + 1)
    np.testing.assert_allclose(outer(f32(2)), f32(2) * 3 + 1)


def test_creation_inside_jit_is_a_node_not_a_constant():
    c = gg.jit(lambda x: x + gg.zeros((1000, 1000))).lower(gg.ShapeDtype((1000, 1000)))
    ops = c.traced_graph.op_counts()
    assert ops.get("full") == 1 and "constant" not in ops


# ---- eager mode and promotion ----------------------------------------------------------
def test_eager_returns_numpy():
    r = gg.add(f32(3), 1.0)
    assert isinstance(r, np.ndarray) and r.dtype == np.float32


@pytest.mark.parametrize(
    "a,b",
    [
        (np.float32, 2.0),
        (np.int32, 2),
        (np.int32, 2.5),
        (np.float32, np.float64),
        (np.int32, np.float32),
        (np.int64, np.float32),
        (np.bool_, 1),
        (np.int32, np.int64),
    ],
)
def test_promotion_matches_numpy2(a, b):
    x = np.ones(3, a)
    y = b if isinstance(b, (int, float)) else np.ones(3, b)
    expected = (x * y).dtype
    assert gg.multiply(x, y).dtype == expected
    assert gg.jit(lambda x: x * y)(x).dtype == expected


def test_true_divide_of_ints_is_float64():
    assert gg.divide(np.arange(3), 2).dtype == np.float64


# ---- backends ------------------------------------------------------------------------------
def test_default_backend_says_why():
    info = gg.default_backend()
    assert info.name in ("numpy", "cpu", "cupy") and info.reason
    assert info.name in str(info)


def test_asnumpy_takes_trees_of_arrays_and_numbers():
    tree = {"a": f32(2, 3), "b": [np.arange(3), 2.5], "c": None}
    got = gg.asnumpy(tree)
    assert isinstance(got["a"], np.ndarray) and got["a"].dtype == np.float32
    np.testing.assert_array_equal(got["a"], tree["a"])
    assert got["b"][1].shape == () and float(got["b"][1]) == 2.5 and got["c"] is None


def test_gpugraph_backend_environment_variable(monkeypatch):
    found = cupy_status()
    monkeypatch.setenv("GPUGRAPH_BACKEND", "auto")
    assert gg.default_backend() == auto_backend()
    monkeypatch.setenv("GPUGRAPH_BACKEND", "NumPy")
    info = gg.default_backend()
    assert info.name == "numpy" and "GPUGRAPH_BACKEND" in info.reason
    assert get_backend().name == "numpy"
    np.testing.assert_array_equal(gg.jit(lambda x: x + 1)(f32(3)), f32(3) + 1)
    monkeypatch.setenv("GPUGRAPH_BACKEND", "tpu")
    with pytest.raises(gg.UnsupportedError, match="GPUGRAPH_BACKEND='tpu'"):
        gg.jit(lambda x: x + 1)(f32(3))
    if found.name != "cupy":
        monkeypatch.setenv("GPUGRAPH_BACKEND", "cupy")
        with pytest.raises(gg.UnsupportedError, match="GPUGRAPH_BACKEND=cupy, but"):
            gg.default_backend()


def test_device_info_never_raises():
    info = gg.device_info()
    assert isinstance(info.available, bool) and info.reason
    str(info)


def test_unknown_backend_is_named():
    with pytest.raises(gg.UnsupportedError, match="'tpu'"):
        gg.jit(lambda x: x, backend="tpu")(f32(2))


def test_cupy_backend_module_imports():
    from gpugraph.backends import cupy_backend

    assert cupy_backend.CupyBackend.name == "cupy"
    if cupy_status().name != "cupy":
        with pytest.raises(gg.UnsupportedError, match="cupy"):
            gg.jit(lambda x: x, backend="cupy")(f32(2))


# ---- errors --------------------------------------------------------------------------------
def test_shape_error_names_op_shapes_and_user_line():
    def f(x, y):
        return x + y  # the line the error must point at

    line = f.__code__.co_firstlineno + 1
    with pytest.raises(gg.ShapeError) as ei:
        gg.jit(f)(f32(3, 4), f32(5))
    msg = str(ei.value)
    assert "add" in msg and "(3, 4)" in msg and "(5,)" in msg and f"{HERE}:{line}" in msg


def test_matmul_error_names_shapes():
    with pytest.raises(gg.ShapeError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
        gg.jit(lambda a, b: a @ b)(f32(2, 3), f32(4, 5))


def test_eager_error_has_location_too():
    with pytest.raises(gg.ShapeError, match=HERE):
        gg.reshape(f32(6), (4, 2))


def test_bool_of_tracer_is_a_trace_error():
    def f(x):
        if x.sum() > 0:
            return x
        return -x

    with pytest.raises(gg.TraceError, match="static argument"):
        gg.jit(f, autograph=False)(f32(3))
    x = f32(3)  # with autograph (the default) the `if` becomes a gg.cond
    np.testing.assert_array_equal(gg.jit(f)(x), f(x))


def test_wrong_arguments_are_named():
    f = gg.jit(lambda x, params: x @ params["w"])
    f(f32(2, 3), {"w": f32(3, 4)})
    c = f.lower(f32(2, 3), {"w": f32(3, 4)})
    with pytest.raises(gg.ShapeError, match=r"params\['w'\].*\(3, 4\).*\(3, 5\)"):
        c(f32(2, 3), {"w": f32(3, 5)})
    with pytest.raises(gg.DTypeError, match=r"argument x.*float32.*float64"):
        c(np.ones((2, 3)), {"w": f32(3, 4)})
    with pytest.raises(gg.GpuGraphError, match="takes 2 array arguments, got 1"):
        c(f32(2, 3))


def test_unsupported_dtype_is_named():
    with pytest.raises(gg.DTypeError, match="uint32"):
        gg.jit(lambda x: x)(np.ones(2, np.uint32))
    with pytest.raises(gg.DTypeError, match="subtract: dtype bool"):
        gg.jit(lambda x: x - x)(np.ones(2, bool))


def test_non_array_argument_is_named():
    with pytest.raises(gg.GpuGraphError, match="argument y"):
        gg.jit(lambda x, y: x)(f32(2), "hello")


def test_escaped_tracer_is_reported():
    leaked = []

    @gg.jit
    def f(x):
        leaked.append(x)
        return x + 1

    f(f32(2))
    with pytest.raises(gg.TraceError, match="escaped"):
        gg.jit(lambda y: y + leaked[0])(f32(2))


def test_index_errors():
    with pytest.raises(gg.ShapeError, match="out of bounds"):
        gg.jit(lambda x: x[5])(f32(3))
    with pytest.raises(gg.ShapeError, match="too many indices"):
        gg.jit(lambda x: x[0, 0])(f32(3))


# ---- the README's main command and example ---------------------------------------------
def test_readme_example_runs(capsys):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        text = f.read()
    example = text.split("## Example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example, "README.md example", "exec"), {})
    assert "matmul" in capsys.readouterr().out


def test_demo_command_runs():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    out = subprocess.run(
        [sys.executable, "-m", "gpugraph", "demo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "backend:" in out.stdout and "ms" in out.stdout and "graph(" in out.stdout
