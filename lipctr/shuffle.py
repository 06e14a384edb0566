"""An epoch's example order: `train.shuffle`.

    "sort"     jax.random.permutation (a sort of random keys: O(n log n); XLA:CPU sorts slowly, so at
               10M rows the permutation alone is a large part of a cheap model's epoch). The default:
               runs made before this option keep their bits.
    "feistel"  a keyed bijection of [0, n) evaluated at each position, O(n) and elementwise: a Feistel
               network on the k = ceil(log2 n) bits of an index, walked until it lands below n.

Both give every example exactly once per epoch; their orders differ, so a run's results depend on
which one it used (it is part of the config). An epoch under "feistel" never holds its whole order:
each training step computes its own batch's indices (lipctr.train.epoch_batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SHUFFLES = ("sort", "feistel")
ELEMENTWISE = ("feistel",)  # any position of the order costs O(1): a batch computes its own part
FEISTEL_ROUNDS = 6


def _mix32(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijective avalanche of uint32 x."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _feistel(x: jax.Array, round_keys: jax.Array, bits: int) -> jax.Array:
    """A bijection of the `bits`-bit integers (uint32 x, any shape): Feistel rounds on the high
    `bits - bits // 2` and low `bits // 2` bits, the halves swapping width each round."""
    left_bits, right_bits = bits - bits // 2, bits // 2
    left, right = x >> right_bits, x & jnp.uint32((1 << right_bits) - 1)
    for r in range(round_keys.shape[0]):
        # (left: a bits, right: b bits) -> (right: b bits, left ^ F(right): a bits)
        mixed = left ^ (_mix32(right ^ round_keys[r]) & jnp.uint32((1 << left_bits) - 1))
        left, right = right, mixed
        left_bits, right_bits = right_bits, left_bits
    return (left << right_bits) | right


def feistel_permutation(key, n: int, positions: jax.Array) -> jax.Array:
    """perm(positions) for a pseudo-random permutation perm of [0, n) chosen by `key`: int32, the
    shape of `positions` (ints in [0, n)). Cycle walking: perm(i) applies the bijection of the
    k-bit integers (2^k < 2n) until the value is below n, which keeps it a bijection of [0, n)."""
    if not 1 <= n < 2**31:
        raise ValueError(f"feistel_permutation: n must be in [1, 2**31), got {n}")
    bits = max(2, (n - 1).bit_length())
    round_keys = jax.random.bits(key, (FEISTEL_ROUNDS,), jnp.uint32)
    step = lambda x: _feistel(x, round_keys, bits)  # noqa: E731
    first = step(positions.astype(jnp.uint32))

    def outside(x):
        return jnp.any(x >= n)

    def walk(x):
        return jnp.where(x >= n, step(x), x)

    return jax.lax.while_loop(outside, walk, first).astype(jnp.int32)


def epoch_order(key, n: int, positions: jax.Array, shuffle: str = "sort") -> jax.Array:
    """The example at each of `positions` (int [P], values in [0, n)) of an epoch's order of n
    examples: int32 [P]."""
    if shuffle == "sort":
        return jax.random.permutation(key, n)[positions]
    if shuffle == "feistel":
        return feistel_permutation(key, n, positions)
    raise ValueError(f"train.shuffle must be one of {', '.join(SHUFFLES)}, got {shuffle!r}")
