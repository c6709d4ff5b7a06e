"""Functional random numbers, as jax.random: a key is two 32-bit words (an int64 array of
shape (2,) holding values in [0, 2**32)); draws are pure functions of (key, shape).

The generator is counter-based Threefry-2x32 (20 rounds, Salmon et al. 2011, the one JAX
uses): element i of a draw is ``threefry2x32(key, (i mod 2**32, i >> 32))[0]``. It is ONE
elementwise op, ``threefry2x32``, with a NumPy impl on uint32 arrays and a CUDA device
function doing the same uint32 arithmetic, so NumPy, the kernel emulator and a GPU give the
same bits, and the generator fuses with the arithmetic that turns bits into numbers. The
bit streams are not JAX's (JAX splits its counters differently)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ArgumentError, DTypeError, ShapeError
from ..ir import is_float
from .core import DEFAULT_FLOAT, bind, check_dtype, type_of
from .creation import arange, full_like
from .elementwise import (
    _ew_infer,
    astype,
    cos,
    less,
    log,
    multiply,
    scalar_like,
    sqrt,
    where,
)
from .index import getitem, take
from .math_more import floor_divide, remainder
from .registry import OpDef, register
from .select import argsort
from .shape import reshape

_ROT = (13, 15, 26, 6, 17, 29, 16, 24)
_PARITY = 0x1BD11BDA


def _threefry_impl(xp, k0, k1, c, out=None):
    with np.errstate(over="ignore"):  # uint32 arithmetic wraps on purpose (0-d NumPy warns)
        r = _threefry(xp, k0, k1, c)
    if out is not None:
        out[...] = r
        return out
    return r


def _threefry(xp, k0, k1, c):
    u32 = xp.uint32
    ks = [xp.asarray(k0).astype(u32), xp.asarray(k1).astype(u32)]
    ks.append(ks[0] ^ ks[1] ^ u32(_PARITY))
    c = xp.asarray(c).astype(xp.uint64)
    x0 = (c & xp.uint64(0xFFFFFFFF)).astype(u32) + ks[0]
    x1 = (c >> xp.uint64(32)).astype(u32) + ks[1]
    for g in range(5):  # 5 groups of 4 rounds, a key injection after each
        for r in _ROT[4 * (g % 2) : 4 * (g % 2) + 4]:
            x0 = x0 + x1
            x1 = (x1 << u32(r)) | (x1 >> u32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + ks[(g + 1) % 3]
        x1 = x1 + ks[(g + 2) % 3] + u32(g + 1)
    return x0.astype(xp.int64)


THREEFRY_HELPER = """\
#ifndef GG_THREEFRY_DEFINED
#define GG_THREEFRY_DEFINED
// Threefry-2x32, 20 rounds, word 0 of the block (key k0,k1; counter c: low, high words).
// The same uint32 arithmetic as gpugraph/ops/rng.py's NumPy impl, so the bits are equal.
__device__ __forceinline__ unsigned int gg_rotl32(unsigned int x, int r) {
  return (x << r) | (x >> (32 - r));
}
__device__ __forceinline__ long long gg_threefry2x32(long long k0, long long k1, long long c) {
  const int rot[8] = {13, 15, 26, 6, 17, 29, 16, 24};
  unsigned int ks[3];
  ks[0] = (unsigned int)k0;
  ks[1] = (unsigned int)k1;
  ks[2] = ks[0] ^ ks[1] ^ 0x1BD11BDAu;
  unsigned int x0 = (unsigned int)((unsigned long long)c & 0xFFFFFFFFull) + ks[0];
  unsigned int x1 = (unsigned int)((unsigned long long)c >> 32) + ks[1];
  for (int g = 0; g < 5; ++g) {
    for (int j = 0; j < 4; ++j) {
      x0 += x1;
      x1 = gg_rotl32(x1, rot[4 * (g % 2) + j]);
      x1 ^= x0;
    }
    x0 += ks[(g + 1) % 3];
    x1 += ks[(g + 2) % 3] + (unsigned int)(g + 1);
  }
  return (long long)x0;
}
#endif
"""

register(
    OpDef(
        "threefry2x32",
        "elementwise",
        _ew_infer("threefry2x32", "i", np.dtype(np.int64)),
        _threefry_impl,
        cuda="gg_threefry2x32({0}, {1}, {2})",
        vjp=lambda cts, outs, *xs: [None] * 3,
        jvp=lambda ts, outs, *xs: [None],
        out_kw=True,
        differentiable=False,
        doc="32 random bits (in an int64) per counter: Threefry-2x32 word 0",
        extra={"cuda_helper": THREEFRY_HELPER},
    )
)


# ---- keys ---------------------------------------------------------------------------------
def key(seed: int) -> np.ndarray:
    """A key from an integer seed (its low 64 bits: the high word, the low word)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ArgumentError(f"random.key: seed must be an int, got {seed!r}")
    s = int(seed) % 2**64
    return np.array([s >> 32, s & 0xFFFFFFFF], dtype=np.int64)


def _check_key(k: Any, what: str) -> Any:
    t = type_of(k)
    if t.shape != (2,) or t.dtype != np.int64:
        raise ArgumentError(f"random.{what}: key must be an int64 array of shape (2,), got {t}")
    return k


def _shape(shape: Any) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(isinstance(s, (int, np.integer)) and s >= 0 for s in shape):
        raise ShapeError(f"random: shape must be non-negative ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def bits(k: Any, shape: Any = ()) -> Any:
    """Uniform 32-bit words (int64 values in [0, 2**32)) of ``shape``."""
    _check_key(k, "bits")
    shape = _shape(shape)
    ctr = reshape(arange(math.prod(shape)), shape)
    return bind("threefry2x32", getitem(k, 0), getitem(k, 1), ctr)


def split(k: Any, num: int = 2) -> Any:
    """``num`` new keys (shape (num, 2)); use them instead of ``k`` from then on."""
    return reshape(bits(_check_key(k, "split"), (int(num), 2)), (int(num), 2))


def _float_dtype(dtype: Any, what: str) -> np.dtype:
    dt = check_dtype(dtype, f"random.{what}")
    if not is_float(dt):
        raise DTypeError(f"random.{what}: dtype must be a float dtype, got {dt}")
    return dt


# Random bits per unit float: as many as the significand holds, so that every value is exact
# and below 1 (a float16 or bfloat16 made from 24 bits would round up to 1.0).
_UNIT_BITS = {"float16": 11, "bfloat16": 8, "float32": 24}


def _unit(b: Any, dt: np.dtype) -> Any:
    """Words to floats in [0, 1), exactly: the top 11 bits for float16, 8 for bfloat16, 24 for
    float32, all 32 for float64."""
    m = _UNIT_BITS.get(dt.name)
    if m is None:
        return multiply(astype(b, dt), np.float64(2.0**-32))
    u = multiply(astype(floor_divide(b, 2 ** (32 - m)), np.float32), np.float32(2.0**-m))
    return u if dt == np.float32 else astype(u, dt)


def uniform(
    k: Any, shape: Any = (), dtype: Any = DEFAULT_FLOAT, minval: float = 0.0, maxval: float = 1.0
) -> Any:
    """Uniform floats in [minval, maxval)."""
    dt = _float_dtype(dtype, "uniform")
    u = _unit(bits(_check_key(k, "uniform"), shape), dt)
    if minval == 0.0 and maxval == 1.0:
        return u
    return u * scalar_like(maxval - minval, u) + scalar_like(minval, u)


def normal(k: Any, shape: Any = (), dtype: Any = DEFAULT_FLOAT) -> Any:
    """Standard normal floats (Box-Muller on two uniform draws; 1 - u keeps log away from 0)."""
    dt = _float_dtype(dtype, "normal")
    if dt.name in ("float16", "bfloat16"):  # drawn in float32 and rounded once
        return astype(normal(k, shape, np.float32), dt)
    shape = _shape(shape)
    b = bits(_check_key(k, "normal"), (2,) + shape)
    u1 = scalar_like(1.0, astype(b, dt)) - _unit(getitem(b, 0), dt)
    u2 = _unit(getitem(b, 1), dt)
    r = sqrt(multiply(log(u1), scalar_like(-2.0, u1)))
    return r * cos(u2 * scalar_like(2 * math.pi, u2))


def bernoulli(k: Any, p: float = 0.5, shape: Any = ()) -> Any:
    """Booleans that are True with probability ``p``."""
    return less(uniform(k, shape, np.float64), p)


def randint(k: Any, shape: Any, minval: int, maxval: int, dtype: Any = np.int64) -> Any:
    """Integers in [minval, maxval) (maxval - minval <= 2**32; a word modulo the range, so a
    range that does not divide 2**32 has a bias below range / 2**32)."""
    n = int(maxval) - int(minval)
    if not 0 < n <= 2**32:
        raise ArgumentError(f"random.randint: need 0 < maxval - minval <= 2**32, got {n}")
    r = remainder(bits(_check_key(k, "randint"), shape), n) + int(minval)
    return astype(r, dtype)


def permutation(k: Any, x: Any) -> Any:
    """A random permutation of range(x) for an int x, else of x's first axis (argsort of
    random words, stable, so ties keep their order)."""
    if isinstance(x, (int, np.integer)):
        return argsort(bits(_check_key(k, "permutation"), (int(x),)))
    n = type_of(x).shape[0]
    return take(x, argsort(bits(_check_key(k, "permutation"), (n,))), axis=0)


def dropout(k: Any, x: Any, rate: float) -> Any:
    """Inverted dropout: each element zeroed with probability ``rate``, the rest scaled by
    1 / (1 - rate), so the expectation is x."""
    if not 0.0 <= rate <= 1.0:
        raise ArgumentError(f"dropout: rate must be in [0, 1], got {rate!r}")
    if rate == 0.0:
        return x
    if rate == 1.0:
        return full_like(x, 0)
    zero = scalar_like(0, x)
    keep = bernoulli(k, 1.0 - rate, type_of(x).shape)
    return where(keep, x * scalar_like(1.0 / (1.0 - rate), x), zero)


__all__ = [
    "bernoulli",
    "bits",
    "dropout",
    "key",
    "normal",
    "permutation",
    "randint",
    "split",
    "uniform",
]
