"""`jax.random.bernoulli`'s exact bits, faster on the CPU: the dropout masks of every backbone.

JAX lowers the threefry2x32 hash on the CPU as a 5-step `while` loop (to keep compile times
short). XLA:CPU cannot fuse across the loop, so each step is a separate pass that reads and
writes the whole uint32 [shape] state, and the loop carries are copied: for one [4096, 512]
dropout mask that is about 9.7 ms on this repository's 2-core CPU. On the CPU, `bernoulli` below
computes the same counter-mode hash with its 20 rounds written out, which XLA fuses into one pass
(about 1.6 ms), inside a `lax.cond` whose predicate is true at run time but opaque to XLA: the
mask is then computed once and stored, instead of being fused (and recomputed) into every
consumer, such as the backward pass or a broadcast over attention heads. On other platforms,
and for any key that is not a typed threefry key under `jax_threefry_partitionable` (JAX's
default), it is `jax.random.bernoulli` itself. tests/test_random_bits.py checks the equality.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: jax.Array, r: int) -> jax.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash (20 rounds, Salmon et al. 2011) of the counter pair (x1, x2)
    under the key (k1, k2); uint32 arrays of one shape (keys []) -> two uint32 arrays."""
    ks = (k1, k2, k1 ^ k2 ^ _KEY_PARITY)
    a, b = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            a = a + b
            b = _rotate_left(b, r) ^ a
        a = a + ks[(i + 1) % 3]
        b = b + ks[(i + 2) % 3] + np.uint32(i + 1)
    return a, b


def _is_fast_path(key: jax.Array, shape: tuple[int, ...]) -> bool:
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    return (typed and str(jax.random.key_impl(key)) == "threefry2x32" and key.shape == ()
            and jax.config.jax_threefry_partitionable and math.prod(shape) < 2**32)


def bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """`jax.random.bits(key, shape)` (uint32) for a typed threefry key []: the hash of the
    element's flat index (high word 0, low word the index), its two output words xor-ed."""
    shape = tuple(shape)
    if not _is_fast_path(key, shape):
        return jax.random.bits(key, shape)
    k1, k2 = jax.random.key_data(key)
    index = lax.iota(np.uint32, math.prod(shape)).reshape(shape)
    hi, lo = threefry2x32(k1, k2, jnp.zeros(shape, np.uint32), index)
    return hi ^ lo


def _fused_bernoulli(key: jax.Array, p: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    mantissa = bits(key, shape) >> np.uint32(9)  # uniforms as JAX makes them: a float in [1, 2), minus 1
    uniform = lax.bitcast_convert_type(mantissa | np.uint32(0x3F800000), np.float32) - np.float32(1.0)
    return jnp.maximum(np.float32(0.0), uniform) < p


def _stored_bernoulli(key: jax.Array, p: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    k1, k2 = jax.random.key_data(key)
    true_at_run_time = (k1 ^ k2) != (k1 ^ k2 ^ np.uint32(1))
    return lax.cond(true_at_run_time, lambda: _fused_bernoulli(key, p, shape), lambda: jnp.zeros(shape, bool))


def bernoulli(key: jax.Array, p: float | jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """`jax.random.bernoulli(key, p, shape)`, bit for bit: bool [shape], True with probability
    p (a float or a float32 [] array)."""
    shape = tuple(shape)
    if not _is_fast_path(key, shape) or jnp.result_type(p) != np.float32:
        return jax.random.bernoulli(key, p, shape)
    p = jnp.asarray(p, np.float32)
    return lax.platform_dependent(key, p, cpu=lambda k, q: _stored_bernoulli(k, q, shape),
                                  default=lambda k, q: jax.random.bernoulli(k, q, shape))
