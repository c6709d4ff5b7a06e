"""The NumPy dispatch path (generated program, signature fast path, small fused groups), lazy
arena allocation, output donation and out=, all against NumPy references."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.errors import ArenaMemoryError, DonationError
from gpugraph.ops.fused import out_call

RNG = np.random.default_rng(7)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def jit(fn, **kw):
    return gg.jit(fn, backend="numpy", **kw)


# -- the generated program -------------------------------------------------------------------
@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("shape", [(8,), (3, 5), (300, 70)])  # small (inlined) and chunked
def test_program_matches_numpy_and_results_outlive_the_next_call(fuse, shape):
    def fn(x, y):
        t = gg.sin(x * y + x)
        return t * 2.0, gg.sum(t, axis=-1), x, gg.reshape(t, (-1,))

    def ref(x, y):
        t = np.sin(x * y + x)
        return t * 2, t.sum(-1), x, t.reshape(-1)

    f = jit(fn, fuse=fuse)
    x, y = f32(*shape), f32(*shape)
    first = f(x, y)
    kept = [np.array(r) for r in first]
    second = f(x * 2, y)
    for got, want in zip(first, ref(x, y)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(second, ref(x * 2, y)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for r, k in zip(first, kept):  # the second call wrote nothing the first one returned
        np.testing.assert_array_equal(r, k)
    assert first[2] is not x and not np.shares_memory(first[2], x)


def test_repeated_output_and_constant_output_are_separate_copies():
    c = np.arange(4, dtype=np.float32)
    f = jit(lambda x: (x + 1, x + 1, c))
    a, b, k = f(np.zeros(4, np.float32))
    assert not np.shares_memory(a, b)
    a[0] = 99
    np.testing.assert_array_equal(b, [1, 1, 1, 1])
    k[0] = 99
    np.testing.assert_array_equal(f(np.zeros(4, np.float32))[2], c)


def test_fast_path_still_checks_python_numbers():
    f = jit(lambda x, k: x + k)
    x = np.arange(4, dtype=np.int32)
    np.testing.assert_array_equal(f(x, 3), x + 3)  # caches the signature (int32[4], int)
    with pytest.raises(gg.DTypeError, match="out of bounds"):
        f(x, 2**40)


def test_numpy_scalars_take_the_fast_path_with_their_own_signatures(monkeypatch):
    """np.float32(2) is a strongly typed 0-d float32 (one entry with a 0-d float32 array);
    2.0 is a weak Python float (its own entry); np.float64 is a float64 input (its own entry,
    promoting the result as NumPy does). A repeated call never reaches the full path."""
    f = jit(lambda x, a, b: x * a + b)
    x = f32(5)
    calls = [
        (np.float32(2), np.float32(0.5)),
        (np.array(3, np.float32), np.float32(1.5)),  # same signature as the first
        (2.0, 0.5),  # weak
        (np.float64(2), np.float32(0.5)),  # float64 a: promotes
    ]
    for a, b in calls:
        got = f(x, a, b)
        want = x * a + b
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert f.cache_size == 3

    def full_path(*args, **kwargs):
        raise AssertionError("a seen signature took the full call path")

    monkeypatch.setattr(f, "_compiled_for", full_path)
    a, b = np.float32(-3), np.float32(4)
    kept = f(x, a, b)
    np.testing.assert_allclose(kept, x * a + b, rtol=1e-6)
    np.testing.assert_allclose(f(x, np.float64(1.5), np.float32(1)), x * 1.5 + 1, rtol=1e-6)
    np.testing.assert_allclose(f(x, 1.0, 2.0), x + 2, rtol=1e-6)
    np.testing.assert_allclose(kept, x * a + b, rtol=1e-6)  # not overwritten by later calls
    with pytest.raises(AssertionError, match="full call path"):  # a new signature
        f(x, np.int32(2), np.float32(1))
    assert f.cache_size == 3


@pytest.mark.parametrize("fuse", [True, False])
def test_ufunc_steps_pass_the_output_positionally(fuse):
    """A generated call of a ufunc gives ``out`` by position (no keyword parsing per call);
    an impl bound to attrs keeps the keyword. Results are NumPy's."""
    f = jit(lambda x, y: gg.clip(gg.sin(x * y) + x, -0.5, 0.5), fuse=fuse)
    x, y = f32(8), f32(8)
    np.testing.assert_allclose(f(x, y), np.clip(np.sin(x * y) + x, -0.5, 0.5), rtol=1e-6)
    source = f.lower(x, y).executable._program.source
    assert re.search(r"_f\d+\(i0, i1, _\w+\)", source), source  # the multiply
    assert out_call("f", np.add, ["a", "b"], "o") == "f(a, b, o)"
    assert out_call("f", np.add, ["a"], "o") == "f(a, out=o)"  # not the ufunc's arity
    assert out_call("f", np.maximum, ["a", "b"], "o") == "f(a, b, out=o)"  # NumPy 2.4
    assert out_call("f", functools.partial(np.add, 1), ["a"], "o") == "f(a, out=o)"


def test_fused_chunk_keeps_one_element_constant_of_rank_two():
    """Issue 12 item 2: a group chunked along an inner axis with a (1, 1) constant."""
    x = np.ones((3, 100000), np.float32)
    b = np.arange(100000, dtype=np.float32)
    c = np.full((1, 1), 2.0, np.float32)
    got = jit(lambda x, b: b * c + x)(x, b)
    np.testing.assert_array_equal(got, b * c + x)
    got = jit(lambda x: gg.exp(x * c) - c)(x[:, :70000])
    np.testing.assert_allclose(got, np.exp(x[:, :70000] * c) - c, rtol=1e-6)


# -- memory on first call ----------------------------------------------------------------------
def test_lower_allocates_nothing_until_the_first_call():
    f = jit(lambda x: gg.sin(x) * gg.cos(x) + gg.sum(x), fuse=False)
    c = f.lower(gg.ShapeDtype((1000,), np.float32))
    assert c.memory.arena_bytes > 0
    assert c.executable._arena is None and c.executable._fixed is None
    x = f32(1000)
    np.testing.assert_allclose(c(x), np.sin(x) * np.cos(x) + x.sum(), rtol=1e-4)
    assert c.executable._arena is not None


def test_an_arena_that_cannot_fit_raises_with_its_size():
    # 2**48 float32 intermediates: 1 PiB each, beyond any address space; lowering plans it
    # without allocating anything
    f = jit(lambda x: gg.sin(x) * gg.cos(x), fuse=False)
    c = f.lower(gg.ShapeDtype((2**48,), np.float32))
    size = c.memory.arena_bytes
    assert size >= 2**50
    with pytest.raises(ArenaMemoryError, match=f"{size} bytes") as e:
        c.executable.run([None])
    assert isinstance(e.value, gg.GpuGraphError) and isinstance(e.value, MemoryError)


# -- donation ------------------------------------------------------------------------------------
def _address(a):
    return a.__array_interface__["data"][0]


def test_donated_input_buffer_holds_the_output():
    f = jit(lambda w, g: w - 0.5 * g, donate_argnums=0)
    w, g = f32(1000), f32(1000)
    want = w - 0.5 * g
    addr = _address(w)
    out = f(w, g)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert _address(out) == addr  # written into the donated bytes
    assert not w.flags.writeable and out.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        w[0] = 1.0
    with pytest.raises(DonationError, match="argument w was donated"):
        f(w, g)
    with pytest.raises(DonationError):
        jit(lambda a: a + 1)(w)  # any compiled function refuses it


def test_donation_loop_matches_reference():
    def step(p, x):
        loss, g = gg.value_and_grad(lambda q: gg.sum(gg.tanh(x @ q["w"] + q["b"]) ** 2))(p)
        return {k: p[k] - 0.1 * g[k] for k in p}, loss

    def ref_step(p, x):
        t = np.tanh(x @ p["w"] + p["b"])
        d = 2 * t * (1 - t * t)
        return {"w": p["w"] - 0.1 * (x.T @ d), "b": p["b"] - 0.1 * d.sum(0)}, (t * t).sum()

    x = RNG.standard_normal((16, 8))
    p = {"w": RNG.standard_normal((8, 8)) * 0.3, "b": np.zeros(8)}
    f = jit(step, donate_argnums=0)
    mine, ref = {k: v.copy() for k, v in p.items()}, p
    for _ in range(4):
        mine, loss = f(mine, x)
        ref, ref_loss = ref_step(ref, x)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-10)
        for k in p:
            np.testing.assert_allclose(mine[k], ref[k], rtol=1e-10)


@pytest.mark.parametrize(
    "fn,ref",
    [
        (lambda x: (gg.sin(x), x * 3.0), lambda x: (np.sin(x), x * 3)),  # x read after sin
        (lambda x: x @ x, lambda x: x @ x),  # matmul reads x while writing: never in place
        (lambda x: (x + 1, x), lambda x: (x + 1, x)),  # x itself returned
        (lambda x: gg.transpose(x) * 2.0, lambda x: x.T * 2),
        (lambda x: x - gg.sum(x, axis=0), lambda x: x - x.sum(0)),
    ],
)
def test_donation_never_changes_results(fn, ref):
    x = f32(6, 6)
    want = ref(x.copy())
    got = jit(fn, donate_argnums=0)(x.copy())
    for g, w in zip(
        got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)
    ):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_donation_skips_memory_another_argument_reads():
    f = jit(lambda a, b: a * 2.0 + b, donate_argnums=0)
    x = f32(100)
    want = x * 2 + x
    np.testing.assert_allclose(f(x, x), want, rtol=1e-6)  # same array twice: not reused
    y = f32(200)
    np.testing.assert_allclose(f(y[::2], y[1::2]), y[::2] * 2 + y[1::2], rtol=1e-6)


def test_donating_a_static_argument_is_refused():
    f = jit(lambda x, n: x * n, static_argnums=1, donate_argnums=1)
    with pytest.raises(gg.GpuGraphError, match="both static and donated"):
        f(f32(3), 2)


# -- out= ----------------------------------------------------------------------------------------
def test_out_buffers_are_written_and_returned():
    f = jit(lambda a, b: (a + b, a * b, a))
    a, b = f32(50), f32(50)
    bufs = (np.empty(50, np.float32), np.empty(50, np.float32), np.empty(50, np.float32))
    got = f(a, b, out=bufs)
    assert all(g is o for g, o in zip(got, bufs))
    np.testing.assert_allclose(bufs[0], a + b, rtol=1e-6)
    np.testing.assert_allclose(bufs[1], a * b, rtol=1e-6)
    np.testing.assert_array_equal(bufs[2], a)
    single = np.empty((4, 4), np.float32)
    c = jit(lambda x: x @ x).lower(f32(4, 4))
    x = f32(4, 4)
    assert c(x, out=single) is single
    np.testing.assert_allclose(single, x @ x, rtol=1e-5)


def test_out_buffer_mistakes_raise():
    f = jit(lambda a: a * 2.0)
    a = f32(10)
    with pytest.raises(gg.GpuGraphError, match="shape"):
        f(a, out=np.empty(11, np.float32))
    with pytest.raises(gg.GpuGraphError, match="dtype"):
        f(a, out=np.empty(10, np.float64))
    with pytest.raises(gg.GpuGraphError, match="shares memory with argument 0"):
        f(a, out=a)
    with pytest.raises(gg.GpuGraphError, match="structure"):
        f(a, out=[np.empty(10, np.float32)] * 2)


def test_out_is_a_parameter_when_the_function_has_one():
    f = jit(lambda x, out: x + out)
    np.testing.assert_allclose(f(np.ones(3), out=np.ones(3)), [2, 2, 2])

    def g(x, *, out):
        return x * out

    k = jit(g)
    np.testing.assert_allclose(k(np.ones(3), out=np.full(3, 2.0)), [2, 2, 2])
    c = k.lower(np.ones(3), out=np.ones(3))
    np.testing.assert_allclose(c(np.ones(3), out=np.full(3, 3.0)), [3, 3, 3])


def test_no_garbage_collection_while_compiling_and_state_restored():
    import gc

    seen = []

    def f(x):
        seen.append(gc.isenabled())  # called while tracing
        return gg.sin(x) * 2.0

    x = np.ones(4, np.float32)
    assert gc.isenabled()
    gg.jit(f).lower(x)
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        gg.jit(f).lower(x)  # a caller who turned it off keeps it off
        assert not gc.isenabled()
    finally:
        gc.enable()
