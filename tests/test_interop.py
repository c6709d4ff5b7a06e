"""Arrays of other libraries as inputs (torch tensors, JAX arrays): shared through DLPack without
a copy, results are NumPy arrays, refusals name the reason. Skipped where a library is absent."""

from __future__ import annotations

import numpy as np
import pytest

import gpugraph as gg
from gpugraph.errors import ArgumentError
from gpugraph.interop import from_dlpack, is_foreign_array

torch = pytest.importorskip("torch")


def _torch_view(t):
    return t.detach().numpy()


def test_from_dlpack_shares_a_torch_cpu_tensor():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = gg.from_dlpack(t)
    assert type(a) is np.ndarray and a.dtype == np.float32 and a.shape == (3, 4)
    assert np.shares_memory(a, _torch_view(t))  # zero copy
    x = np.ones(3)
    assert gg.from_dlpack(x) is x and not is_foreign_array(x)


@pytest.mark.parametrize(
    "dtype, np_dtype",
    [
        ("float32", np.float32),
        ("float16", np.float16),
        ("float64", np.float64),
        ("int8", np.int8),
        ("uint8", np.uint8),
        ("int64", np.int64),
        ("bool", np.bool_),
    ],
)
def test_torch_tensors_are_op_and_jit_arguments(dtype, np_dtype):
    t = (torch.arange(6).reshape(2, 3) % 3).to(getattr(torch, dtype))
    ref = _torch_view(t).copy()

    def f(x, y):
        return x * y + 1

    want = f(ref, ref)
    shared = gg.from_dlpack(t)
    for got in (f(shared, shared), gg.add(gg.multiply(t, t), 1), gg.jit(f)(t, t)):
        assert type(got) is np.ndarray and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_torch_view(t), ref)  # inputs are never written


def test_torch_tensor_gradients_and_lists():
    t = torch.linspace(-1, 1, 5, dtype=torch.float64)
    g = gg.grad(lambda x: gg.sum(gg.tanh(x) * x))(t)
    x = _torch_view(t)
    np.testing.assert_allclose(g, np.tanh(x) + x * (1 - np.tanh(x) ** 2), rtol=1e-12)
    assert gg.concatenate([t, t]).shape == (10,)
    assert gg.jit(lambda d: d["a"] + d["b"])({"a": t, "b": x}).dtype == np.float64


def test_a_captured_torch_tensor_is_a_snapshot():
    t = torch.ones(3)
    f = gg.jit(lambda x: x + t)
    np.testing.assert_array_equal(f(np.zeros(3, np.float32)), np.ones(3))
    t += 1  # the compiled graph holds the values seen when it was traced, as with NumPy
    np.testing.assert_array_equal(f(np.zeros(3, np.float32)), np.ones(3))


def test_refusals_name_the_reason():
    with pytest.raises(ArgumentError, match="requires? grad.*detach"):
        gg.exp(torch.ones(2, requires_grad=True))
    with pytest.raises(ArgumentError, match="neither __dlpack__"):
        from_dlpack(object())


def test_bfloat16_tensors_are_shared_through_their_bits():
    """DLPack cannot give NumPy a bfloat16 array; torch's bits are viewed as ml_dtypes'
    bfloat16 instead, still without a copy."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    t = torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16)
    a = gg.from_dlpack(t)
    assert a.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(a.astype(np.float32), [1.5, -2.25, 3.0])
    t[0] = 7.0
    assert a[0] == 7.0  # the same memory
    got = gg.jit(lambda x: x * 2)(t)
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), [14.0, -4.5, 6.0])


def test_jax_arrays():
    jnp = pytest.importorskip("jax.numpy")
    j = jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)
    a = gg.from_dlpack(j)
    assert type(a) is np.ndarray and a.dtype == np.float32
    np.testing.assert_array_equal(a, np.arange(6.0).reshape(2, 3))
    got = gg.jit(lambda x, y: gg.matmul(x, gg.transpose(y)))(j, j)
    np.testing.assert_allclose(got, np.asarray(j) @ np.asarray(j).T)
    np.testing.assert_array_equal(gg.exp(jnp.zeros(2, jnp.float16)), np.ones(2, np.float16))
    assert str(gg.exp(jnp.zeros(2, jnp.bfloat16)).dtype) == "bfloat16"


def test_cuda_tensors_need_cupy_or_say_so():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for a torch CUDA tensor")
    t = torch.ones(4, device="cuda")
    a = gg.from_dlpack(t)  # a CuPy array on the same device, sharing the memory
    assert a.__cuda_array_interface__["data"][0] == t.data_ptr()
