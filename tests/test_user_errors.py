"""Common user mistakes: each raises a GpuGraphError subclass with a message that says what to
do. One table feeds them all (README: "Every error a user can cause derives from
gg.GpuGraphError"); a few behaviours next to errors (NumPy ufuncs on tracers, the escaped
tracer, the captured-array warning, the demo's argument check) have their own tests below."""

from __future__ import annotations

import collections
import os
import re
import warnings

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.tracer import CAPTURE_WARN_BYTES

HERE = os.path.basename(__file__)
X = np.arange(12, dtype=np.float32).reshape(3, 4) - 5
I3 = np.arange(3)


def jit(fn, *args, **options):
    """Call ``gg.jit(fn, **options)`` on ``args``."""
    return gg.jit(fn, **options)(*args)


def setitem(x):
    x[0] = 1
    return x


def escaped():
    """Store a tracer in an outer list during tracing, then use it after tracing ended."""
    leak = []

    def f(x):
        leak.append(x * 2)
        return x

    gg.jit(f)(X)
    return leak[0] + 1


class DuckArray:
    """An array of some other library, seen only through its interchange protocol."""

    __cuda_array_interface__ = {"shape": (3,), "typestr": "<f4", "data": (0, False)}


class OtherDeviceArray:
    """A DLPack exporter on a device gpugraph has no array library for (OpenCL)."""

    def __dlpack__(self, stream=None):
        raise AssertionError("never asked for: the device is refused first")

    def __dlpack_device__(self):
        return (4, 0)


def foreign(module: str, dtype: str = "float32"):
    """A (3,) array of torch or jax, skipping when the library is not installed."""
    if module == "torch":
        torch = pytest.importorskip("torch")
        return torch.ones(3, dtype=getattr(torch, dtype))
    jnp = pytest.importorskip("jax.numpy")
    return jnp.ones(3, getattr(jnp, dtype))


State = collections.namedtuple("State", "w b")


def case(name, thunk, error, phrase, not_phrase=None, marks=()):
    """One mistake: ``thunk()`` must raise ``error`` whose message matches ``phrase`` (a
    regex) and does not match ``not_phrase``."""
    return pytest.param(thunk, error, phrase, not_phrase, id=name, marks=marks)


CASES = [
    # NumPy on traced arrays
    case("np.ufunc without gg op", lambda: jit(lambda x: np.fmod(x, 2), X), gg.UnsupportedError,
         r"np\.fmod has no gpugraph op.*" + HERE),
    case("np.ufunc out=", lambda: jit(lambda x: np.exp(x, out=np.empty_like(X)), X),
         gg.UnsupportedError, r"np\.exp with out="),
    case("np.add.reduce", lambda: jit(lambda x: np.add.reduce(x), X), gg.UnsupportedError,
         r"use gg\.sum"),
    case("np.sum", lambda: jit(lambda x: np.sum(x), X), gg.TraceError, r"use gg\.sum"),
    case("np.asarray", lambda: jit(lambda x: np.asarray(x), X), gg.TraceError,
         r"cannot be converted to a concrete array"),
    # things a static graph cannot do
    # (autograph converts `a if c else b` into gg.cond; without it the truth value is refused)
    case("python if", lambda: jit(lambda x: x if x.sum() > 0 else -x, X, autograph=False),
         gg.TraceError, r"gg\.where"),
    case("int(tracer)", lambda: jit(lambda x, n: gg.reshape(x, (int(n), -1)), X, 3), gg.TraceError,
         r"static_argnums"),
    case("arange(traced)", lambda: jit(lambda n: gg.arange(n), 3), gg.TraceError,
         r"arange: stop is a traced value.*static"),
    case("x[0] = 1", lambda: jit(setitem, X), gg.UnsupportedError,
         r"immutable.*x\.at\[\.\.\.\]\.set\(value\)`.*gg\.where"),
    case("x[x > 0]", lambda: jit(lambda x: x[x > 0], X), gg.UnsupportedError,
         r"depends on the data.*gg\.where"),
    case("eager gg.getitem(x, mask)", lambda: gg.getitem(X, X > 0), gg.UnsupportedError,
         r"boolean array is not supported.*gg\.where"),
    case("len(0-d)", lambda: jit(lambda x: len(x.sum()), X), gg.TraceError, r"0-d"),
    case("escaped tracer", escaped, gg.EscapedTracerError,
         rf"escaped tracer.*made by multiply at {HERE}:\d+"),
    # arguments
    case("torch tensor that requires grad",
         lambda: jit(lambda a: a, foreign("torch").requires_grad_()), gg.GpuGraphError,
         r"torch\.Tensor could not be shared.*detach", r"static"),
    case("DLPack array on another device", lambda: jit(lambda a: a, OtherDeviceArray()),
         gg.UnsupportedError, r"OtherDeviceArray lives on OpenCL.*move it", r"static"),
    case("__cuda_array_interface__", lambda: jit(lambda a: a, DuckArray()), gg.GpuGraphError,
         r"DuckArray is a CUDA array.*CuPy", r"static"),
    case("ShapeDtype to the call", lambda: jit(lambda a: a, gg.ShapeDtype((3,))), gg.GpuGraphError,
         r"\.lower"),
    case("ShapeDtype to a lowered function",
         lambda: gg.jit(lambda a: a * 2).lower(X)(gg.ShapeDtype((3, 4))), gg.GpuGraphError,
         r"expected an array, got ShapeDtype.*lower"),
    case("ShapeDtype((-2, 3))", lambda: gg.ShapeDtype((-2, 3)), gg.ShapeError,
         r"negative dimension"),
    case("ShapeDtype((2.5,))", lambda: gg.ShapeDtype((2.5,)), gg.ShapeError,
         r"sequence of ints"),
    case("wrong shape", lambda: gg.jit(lambda a: a + 1).lower(X)(X[:2]), gg.ShapeError,
         r"argument a: expected shape \(3, 4\)"),
    case("returns a string", lambda: jit(lambda a: "a", X), gg.TraceError, r"must return arrays"),
    *[case(f"streams={s!r}", lambda s=s: gg.jit(lambda a: a, streams=s), gg.GpuGraphError,
           r"streams must be None .* int >= 1", None) for s in (0, -1, 2.5, "2", True)],
    case("static_argnums='x'", lambda: gg.jit(lambda x: x, static_argnums="x"), gg.GpuGraphError,
         r"static_argnums must be an int .*static_argnames"),
    case("complex argument", lambda: jit(lambda a: a, 1j), gg.GpuGraphError,
         r"complex numbers are not supported", r"static"),
    # shapes and values
    case("reshape(2.5, 4)", lambda: jit(lambda x: x.reshape(2.5, 4), X[:2]), gg.ShapeError,
         r"sequence of ints, got \(2\.5, 4\)"),
    case("zeros(traced size)", lambda: jit(lambda x: gg.zeros(x.sum()), X), gg.TraceError,
         r"shape.*static_argnums"),
    case("reshape(-2, 6)", lambda: jit(lambda x: x.reshape(-2, 6), X), gg.ShapeError,
         r"reshape: invalid dimension.*-1.*" + HERE),
    case("full int32 overflow", lambda: gg.full((2,), 2**40, dtype="int32"), gg.DTypeError,
         r"does not fit in dtype int32"),
    case("zeros size overflow", lambda: gg.zeros((2**40,) * 3), gg.ShapeError,
         r"more than one array can hold", r"broadcast"),
    case("jit zeros size overflow", lambda: jit(lambda: gg.zeros((2**40,) * 3)), gg.ShapeError,
         r"more than one array can hold", r"broadcast"),
    case("zeros float shape", lambda: gg.zeros((2.0, 3)), gg.ShapeError, r"sequence of ints"),
    case("complex dtype", lambda: gg.zeros(3, "complex64"), gg.DTypeError, r"not supported"),
    # op-level mistakes
    case("x[::0]", lambda: jit(lambda x: x[::0], X), gg.ShapeError, r"step", None),
    case("int ** -1", lambda: jit(lambda x: x ** -1, I3), gg.GpuGraphError,
         r"negative", None),
    case("sum(axis=1.0)", lambda: jit(lambda x: gg.sum(x, axis=1.0), X),
         gg.GpuGraphError, r"axis", None),
    case("argmax(axis=(0, 1))", lambda: jit(lambda x: gg.argmax(x, axis=(0, 1)), X),
         gg.GpuGraphError, r"axis", None),
    case("gelu(approximate='xx')", lambda: jit(lambda x: gg.gelu(x, approximate="xx"), X),
         gg.GpuGraphError, r"approximate", None),
    case("take out of range", lambda: jit(lambda x, i: gg.take(x, i), X, np.array([5])),
         gg.GpuGraphError, r"out of (range|bounds)", None),
]  # fmt: skip


@pytest.mark.parametrize("thunk, error, phrase, not_phrase", CASES)
def test_user_error(thunk, error, phrase, not_phrase):
    assert issubclass(error, gg.GpuGraphError)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(error, match=phrase) as info:
            thunk()
    if not_phrase is not None:
        assert not re.search(not_phrase, str(info.value)), str(info.value)


# ---- behaviours next to the errors ------------------------------------------------------------
def test_numpy_ufuncs_on_tracers_become_gg_ops():
    a = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    m = np.ones((4, 2), np.float32)

    def f(x):
        ys = (np.exp(x), np.absolute(x), np.maximum(x, 0.5), a + x, a @ x.T, x @ m, a < x)
        return ys + (np.logical_and(x > 0, a > 0), np.bitwise_and(x > 0, a > 0), np.negative(x))

    want = (np.exp(a), np.abs(a), np.maximum(a, 0.5), a + a, a @ a.T, a @ m, a < a)
    want += (np.logical_and(a > 0, a > 0), (a > 0) & (a > 0), -a)
    c = gg.jit(f).lower(a)
    got = c(a)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)
        assert g.dtype == w.dtype
    assert {"exp", "abs", "maximum", "matmul", "less", "negative"} <= set(
        c.traced_graph.op_counts()
    )
    # & on ints is bitwise, not logical (it was refused before gg had bitwise ops)
    np.testing.assert_array_equal(gg.jit(lambda i: np.bitwise_and(i, 1))(I3), np.bitwise_and(I3, 1))


def test_escaped_tracer_names_both_lines_and_the_trace():
    leak = []

    def f(x):
        leak.append(gg.exp(x))  # the line the error names as the tracer's origin
        return x

    gg.jit(f)(X)
    origin = f"{HERE}:{f.__code__.co_firstlineno + 1}"
    for use in (lambda: leak[0] * 2, lambda: gg.jit(lambda y: y + leak[0])(X)):
        with pytest.raises(gg.EscapedTracerError, match=rf"made by exp at {origin} in the jit"):
            use()


def test_large_captured_array_warns_once_per_trace():
    big = np.ones(CAPTURE_WARN_BYTES // 4 + 1, np.float32)
    small = np.ones(16, np.float32)
    with pytest.warns(gg.CapturedArrayWarning, match=r"not one of its arguments.*ignored") as rec:
        f = gg.jit(lambda x: x + big - big * x)
        f(big)
    assert len(rec) == 1 and HERE in str(rec[0].message) and rec[0].filename == __file__
    big[:] = 5  # frozen at trace time: the documented behaviour the warning points at
    assert f(big)[0] == 5 + 1 - 5
    with warnings.catch_warnings():
        warnings.simplefilter("error", gg.GpuGraphWarning)
        g = gg.jit(lambda x: x + small)
        g(small)  # below the threshold: no warning, but frozen all the same
        small[:] = 3
        assert g(small)[0] == 3 + 1
        f(big)  # cached: no new trace, no new warning
        gg.grad(lambda x: gg.sum(x * big))(big)  # eager grad re-traces every call: not frozen


def test_demo_checks_its_arguments(capsys):
    from gpugraph.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["demo", "--repeats", "0"])
    assert info.value.code == 2 and "--repeats: must be at least 1" in capsys.readouterr().err


def test_graph_text_and_dot_name_inputs_by_argument_path():
    p = {"w1": np.ones((4, 8), np.float32)}
    c = gg.jit(lambda params, x: gg.exp(x @ params["w1"]).sum(axis=1)).lower(p, X)
    text = str(c.traced_graph)
    assert text.startswith("graph(%params['w1']:f32[4,8], %x:f32[3,4])")
    assert "%0:f32[3,8] = matmul %x %params['w1']" in text
    dot = c.to_dot()  # the compiled function's DOT passes its memory plan
    assert dot == c.graph.to_dot({s.node: s.stream for s in c.schedule.steps}, c.memory)
    assert "label=\"params['w1']\\nf32[4,8]\"" in dot and 'label="x\\nf32[3,4]"' in dot
    arena = [s for s in c.memory.slots.values() if s.kind == "arena"]
    assert arena and f"arena [{arena[0].offset}, {arena[0].offset + arena[0].size})" in dot
    assert 'tooltip="stream 0' in dot


def test_dot_colours_nodes_by_stream():
    def branches(x):
        return [gg.sum(gg.exp(x * k), axis=0) for k in (1.0, 2.0, 3.0)]

    c = gg.jit(branches, streams=3, fuse=False).lower(np.ones((64, 64), np.float32))
    stream_of = {s.node: s.stream for s in c.schedule.steps}
    assert len(set(stream_of.values())) > 1
    dot = c.graph.to_dot(stream_of, c.memory)
    assert 'stream1 [shape=note, fillcolor=lightgoldenrod, label="stream 1"]' in dot
    used = {
        line.split("fillcolor=")[1].split(",")[0] for line in dot.splitlines() if "tooltip" in line
    }
    assert {"lightblue", "lightgoldenrod"} <= used
