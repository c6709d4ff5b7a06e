"""gg.random: functional random numbers as jax.random (keys in, arrays out); the generator
is Threefry-2x32, one fusible elementwise op (gpugraph/ops/rng.py)."""

from .ops.rng import bernoulli, bits, key, normal, permutation, randint, split, uniform

__all__ = ["bernoulli", "bits", "key", "normal", "permutation", "randint", "split", "uniform"]
