"""backend="cpu" internals: the row x column loop nest for broadcast operands
(codegen/cpu_loops.py) and the extension-module entry point (backends/cpu_native.py). Results
must equal the NumPy backend's (and NumPy's) on every broadcast layout, on the parallel path's
ragged chunks, and when the fast entry declines an argument (a strided view)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_helpers import requires_emulator

import gpugraph as gg
from gpugraph.backends import cpu_backend, cpu_native
from gpugraph.codegen.cpu_loops import emit_cpu_kernel

pytestmark = requires_emulator  # the same host compiler


@pytest.fixture(autouse=True)
def _every_group_native(monkeypatch):
    # these tests are about the native kernels themselves, so the size policy
    # (backends/cpu_select.py) must not hand small groups back to NumPy
    monkeypatch.setenv(cpu_backend.NATIVE_ENV, "all")


def _kernels(compiled) -> list:
    return [
        ln.runner.cpu_kernel
        for ln in compiled.executable.launches
        if hasattr(ln.runner, "cpu_kernel")
    ]


def _check(fn, *args, nest: bool | None = True):
    """cpu == numpy backend (and neither modifies its inputs); ``nest``: whether the plan's
    kernels must (True) or must not (False) be the loop nest."""
    before = [np.array(a, copy=True) for a in args]
    compiled = gg.jit(fn, backend="cpu").lower(*args)
    with np.errstate(all="ignore"):
        got = compiled(*args)
        want = gg.jit(fn, backend="numpy")(*args)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        if g.dtype.kind == "f":
            # operands are O(1); a residual add can cancel to near 0, hence the atol
            f32 = g.dtype == np.float32
            np.testing.assert_allclose(
                g, w, rtol=4e-6 if f32 else 1e-13, atol=1e-6 if f32 else 1e-13
            )
        else:
            np.testing.assert_array_equal(g, w)
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b)
    kernels = _kernels(compiled)
    assert kernels, "no fused group ran natively"
    if nest is not None:  # every kernel of the plan is (or none is) a loop nest
        assert {k.name.startswith("gg_cpu_") for k in kernels} == {nest}
    return compiled, got


def _gelu(x, b, r):
    h = x + b
    return 0.5 * h * (1 + gg.tanh(0.7978846 * (h + 0.044715 * h * h * h))) + r


RNG = np.random.default_rng(3)


def _f(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def _each(fn, arity: int):
    """One function applying ``fn`` to each consecutive ``arity`` arguments: many cases in one
    plan, so their kernels build in one compiler run."""
    return lambda *a: tuple(fn(*a[i : i + arity]) for i in range(0, len(a), arity))


LAYOUTS = [
    ((64, 40), (40,)),  # a bias row
    ((6, 5, 40), (6, 1, 40)),  # a middle-axis broadcast
    ((6, 5, 40), (6, 5, 1)),  # constant along the columns
    ((3, 4, 20), (3, 1, 20)),
    ((5, 1, 40), (40,)),  # an extent-1 axis in the output
    ((2, 3, 4, 16), (1, 3, 1, 16)),
]


def test_broadcast_layouts_use_the_loop_nest_and_match_numpy():
    args = [a for xs, bs in LAYOUTS for a in (_f(*xs), _f(*bs), _f(*xs))]
    compiled, _ = _check(_each(_gelu, 3), *args)
    kernels = _kernels(compiled)
    assert len(kernels) == len(LAYOUTS) and all("rows x" in k.source for k in kernels)


def test_both_operands_broadcast_and_several_outputs():
    a, b = _f(3, 1, 20, dtype=np.float64), _f(1, 4, 20, dtype=np.float64)
    _check(lambda a, b: (gg.exp(a - b) * 2, a * b + 1), a, b)


def test_integer_and_bool_broadcasts():
    i = np.arange(-60, 60, dtype=np.int32).reshape(4, 30)
    row = np.arange(30, dtype=np.int32) * 1_000_000_007
    _check(lambda i, r: i * r + 3, i, row)  # wraps as NumPy does
    m = (np.arange(120).reshape(4, 30) % 3) == 0
    mrow = np.arange(30) % 2 == 0
    _check(lambda m, r: gg.logical_and(m, r), m, mrow)


def test_scalars_and_small_columns_keep_the_flat_kernel():
    # one element (no index math), a NumPy scalar, 3 columns (too few for the nest)
    args = (_f(8, 40), _f(1), _f(8, 40), np.float32(2.5), _f(40, 3), _f(3))
    _check(_each(lambda x, s: x * s + 1, 2), *args, nest=False)


def test_size_zero_dims():
    args = (_f(0, 40), _f(40), _f(4, 0, 40), _f(4, 1, 40))
    _check(_each(lambda x, b: gg.tanh(x + b), 2), *args, nest=None)


@pytest.fixture
def parallel_from_64k(monkeypatch):
    """Groups from 2^16 elements run on every OpenMP thread (the default threshold is higher,
    see cpu_backend.PARALLEL_MIN_ELEMENTS): small tests reach the parallel path."""
    monkeypatch.setenv(cpu_backend.PARALLEL_MIN_ENV, str(1 << 16))
    cpu_backend.parallel_min.cache_clear()
    yield
    monkeypatch.undo()
    cpu_backend.parallel_min.cache_clear()


def test_parallel_chunks_split_rows_and_misaligned_views(parallel_from_64k):
    """300 x 1000 elements run as OpenMP chunks of multiples of 64 elements: chunk bounds fall
    inside rows. A view one element off a vector boundary must give the same results."""
    assert cpu_backend.parallel_min() == 1 << 16
    base = _f(300 * 1000 + 1)
    x = base[1:].reshape(300, 1000)
    b, r = _f(1000), _f(300, 1000)
    _check(_gelu, x, b, r)
    _check(lambda x, b: gg.exp(x) * b, _f(300, 1000, dtype=np.float64), _f(300, 1, 1)[:, :, 0])


def test_the_nest_picks_the_widest_column_block():
    from gpugraph.ir import GraphBuilder, TensorType

    g = GraphBuilder()
    t = np.dtype(np.float32)
    x = g.add_input(TensorType((6, 5, 40), t))
    b = g.add_input(TensorType((6, 1, 40), t))
    kernel = emit_cpu_kernel(g.build([g.add_node("add", [x, b], {}, [x.type]).output]))
    assert kernel is not None and "(30 rows x 40 columns)" in kernel.source
    assert "%" not in kernel.source.split("for (long long c")[1]  # no index math per element


needs_headers = pytest.mark.skipif(
    cpu_native.include_flags() is None, reason="Python.h or NumPy headers not found"
)


@needs_headers
def test_the_program_calls_the_extension_function():
    x = _f(8)
    compiled = gg.jit(lambda x, y: x * y + 1, backend="cpu").lower(x, x)
    out = compiled(x, x)
    (kernel,) = _kernels(compiled)
    assert kernel.py is not None
    source = compiled.executable._program.source  # the generated straight-line program
    assert "_k(" in source and "_run([" in source  # the fast call, ctypes only if it declines
    np.testing.assert_array_equal(out, x * x + 1)
    again = compiled(x * 2, x)
    np.testing.assert_array_equal(out, x * x + 1)  # the earlier result is still valid
    np.testing.assert_array_equal(again, 2 * x * x + 1)


@needs_headers
def test_the_extension_declines_arguments_it_cannot_take():
    x = _f(16)
    compiled = gg.jit(lambda x, y: x * y + 1, backend="cpu").lower(x, x)
    compiled(x, x)  # kernels compile at the first call
    (kernel,) = _kernels(compiled)
    out = np.empty(16, np.float32)
    assert kernel.py(x, x, out) is True
    np.testing.assert_array_equal(out, x * x + 1)
    assert kernel.py(x.astype(np.float64), x, out) is False  # wrong dtype
    assert kernel.py(_f(32)[::2], x, out) is False  # not contiguous
    assert kernel.py(x[:8], x, out) is False  # wrong size
    assert kernel.py(x.astype(">f4"), x, out) is False  # not in native byte order
    ro = np.empty(16, np.float32)
    ro.flags.writeable = False
    assert kernel.py(x, x, ro) is False
    with pytest.raises(TypeError, match="takes 3 arrays"):
        kernel.py(x, x)
    # a strided input through the whole plan: the ctypes path copies it first
    strided = _f(32)[::2]
    np.testing.assert_allclose(compiled(strided, x), strided * x + 1, rtol=1e-6)


@needs_headers
def test_the_abi_is_part_of_the_cache_key():
    assert cpu_native.abi() in cpu_backend.toolchain()


def test_the_parallel_threshold_is_part_of_the_kernel_key(monkeypatch):
    """The extension module bakes the threshold in, so another threshold is another library."""
    k = cpu_backend._Kernel("// source", "gg_fused_x", 1, [("float32", 4, True)])
    before = k.key()
    monkeypatch.setenv(cpu_backend.PARALLEL_MIN_ENV, "1000")
    cpu_backend.parallel_min.cache_clear()
    try:
        assert cpu_backend.parallel_min() == 1000 and k.key() != before
        monkeypatch.setenv(cpu_backend.PARALLEL_MIN_ENV, "lots")
        cpu_backend.parallel_min.cache_clear()
        with pytest.raises(gg.GpuGraphError, match="PARALLEL_MIN='lots'"):
            cpu_backend.parallel_min()
    finally:
        monkeypatch.undo()
        cpu_backend.parallel_min.cache_clear()


def test_a_module_that_does_not_compile_leaves_the_ctypes_entry(tmp_path, monkeypatch):
    """Headers that do not fit the compiler must not cost the backend: the library is built
    again without the module, and the kernel runs through ctypes."""
    monkeypatch.setenv("GPUGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_native, "module_source", lambda *a: "#error planted\n")
    backend = cpu_backend.CpuBackend()  # a fresh one: nothing compiled in this process
    source = (
        'extern "C" __global__ void gg_fused_plain(const float* in0, float* out0) {\n'
        "  for (long long i = GG_RANGE_LO(4); i < GG_RANGE_HI(4); ++i) out0[i] = in0[i] * 3;\n}\n"
    )
    k = backend.kernel(source, "gg_fused_plain", 2, [("float32", 4, False), ("float32", 4, True)])
    backend.compile_pending()
    assert k.py is None and k.fn is not None
    x, out = np.arange(4, dtype=np.float32), np.empty(4, np.float32)
    k.fn(4, 4, x.ctypes.data, out.ctypes.data)
    np.testing.assert_array_equal(out, x * 3)


def test_an_output_written_over_its_dying_input():
    """h = x @ w dies at the bias group, whose output may take h's bytes (the planner's
    in-place reuse): the loop nest reads element c of h before writing element c."""
    x, w, b, v = _f(64, 32), _f(32, 48), _f(48), _f(48, 8)

    def fn(x, w, b, v):
        h = x @ w
        return (gg.tanh(h + b) * 2.0 - h) @ v  # the group's output is an arena value

    compiled, _ = _check(fn, x, w, b, v)
    memory = next(ln for ln in compiled.explain().splitlines() if ln.startswith("memory:"))
    assert "(1 in place" in memory, memory


def test_random_broadcast_layouts():
    """Random output shapes (ranks 1-4, extents 1-40), each operand keeping or collapsing each
    axis and maybe dropping leading ones, through one fused expression; 6 cases in one plan."""
    rng = np.random.default_rng(100)
    args = []
    for _ in range(6):
        rank = int(rng.integers(1, 5))
        out = tuple(int(e) for e in rng.choice([1, 2, 3, 17, 40], size=rank))
        shapes = [out]  # one full-size operand fixes the output shape
        for _ in range(2):
            s = tuple(e if rng.random() < 0.6 else 1 for e in out)
            shapes.append(s[int(rng.integers(0, rank)) :] if rng.random() < 0.3 else s)
        args += [_f(*s, dtype=np.float64) for s in shapes]
    _check(_each(lambda a, b, c: gg.exp(a * 0.5 - b) + c * a, 3), *args, nest=None)


def test_the_entry_templates_are_part_of_the_kernel_key(monkeypatch):
    k = cpu_backend._Kernel("// source", "gg_fused_x", 1, [("float32", 4, True)])
    before = k.key()
    monkeypatch.setattr(cpu_native, "KERNEL_ENTRY", cpu_native.KERNEL_ENTRY + "// changed\n")
    assert k.key() != before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_binary_op_with_a_broadcast_row(dtype):
    """test_ops.py's binary table, the second operand a (20,) row over (6, 20), and the first
    operand broadcast along a middle axis: every op template inside the loop nest."""
    from test_ops import BINARY, sample, tol

    rng = np.random.default_rng(5)
    names = sorted(BINARY)
    full = {d: sample((6, 20), dtype, d, rng) for d in ("any", "pos", "nonzero", "small_int")}
    row = {d: sample((20,), dtype, d, rng) for d in full}
    mid = {d: sample((3, 1, 20), dtype, d, rng) for d in full}

    def fn(*arrays):
        outs = []
        for name in names:
            f, _, domain = BINARY[name]
            r = f(full[domain] * 1 + arrays[0] * 0, row[domain] + arrays[1] * 0)
            s = f(mid[domain] + arrays[2] * 0, row[domain])
            outs += [r * 1 if r.dtype != np.bool_ else gg.logical_and(r, r), s]
        return tuple(outs)

    zeros = (np.zeros((6, 20), dtype), np.zeros((20,), dtype), np.zeros((3, 1, 20), dtype))
    compiled = gg.jit(fn, backend="cpu").lower(*zeros)
    with np.errstate(all="ignore"):
        got = compiled(*zeros)
    assert any(k.name.startswith("gg_cpu_") for k in _kernels(compiled))
    for k, name in enumerate(names):
        _, ref, domain = BINARY[name]
        with np.errstate(all="ignore"):
            want_r, want_s = ref(full[domain], row[domain]), ref(mid[domain], row[domain])
        for g, w in ((got[2 * k], want_r), (got[2 * k + 1], want_s)):
            assert g.shape == w.shape, name
            if w.dtype.kind == "f":
                np.testing.assert_allclose(g, w, err_msg=name, **tol(dtype))
            else:
                np.testing.assert_array_equal(g, w, err_msg=name)


def test_a_library_the_loader_refuses_is_built_without_the_module(tmp_path, monkeypatch):
    """Where Python's symbols are not visible to the dynamic loader (an embedding host), the
    first load fails: the library is built again without the module."""
    monkeypatch.setenv("GPUGRAPH_CACHE_DIR", str(tmp_path))
    real, calls = cpu_backend.ctypes.CDLL, []

    def refuse_once(path, *a, **k):
        calls.append(path)
        if len(calls) == 1:
            raise OSError("undefined symbol: PyExc_TypeError (planted)")
        return real(path, *a, **k)

    monkeypatch.setattr(cpu_backend.ctypes, "CDLL", refuse_once)
    backend = cpu_backend.CpuBackend()
    source = (
        'extern "C" __global__ void gg_fused_refused(const float* in0, float* out0) {\n'
        "  for (long long i = GG_RANGE_LO(4); i < GG_RANGE_HI(4); ++i) out0[i] = in0[i] + 2;\n}\n"
    )
    k = backend.kernel(source, "gg_fused_refused", 2, [("float32", 4, False), ("float32", 4, True)])
    backend.compile_pending()
    assert len(calls) == 2 and calls[0] != calls[1] and k.py is None
    x, out = np.arange(4, dtype=np.float32), np.empty(4, np.float32)
    k.fn(4, 4, x.ctypes.data, out.ctypes.data)
    np.testing.assert_array_equal(out, x + 2)
