"""benchmarks.profile_epoch's HLO attribution: dot FLOPs and op classes against a known program."""

import jax
import jax.numpy as jnp

from benchmarks.profile_epoch import parse_hlo
from lipctr import random_bits


def test_dot_flops_and_classes_of_a_known_program():
    def f(x, w1, w2, key):
        h = jnp.tanh(x @ w1)  # [64, 32] @ [32, 48]
        mask = random_bits.bernoulli(key, 0.9, h.shape)
        return (jnp.where(mask, h, 0.0) @ w2).sum()  # [64, 48] @ [48, 8]

    args = (jnp.ones((64, 32)), jnp.ones((32, 48)), jnp.ones((48, 8)), jax.random.key(0))
    table = parse_hlo(jax.jit(f).lower(*args).compile().as_text())
    dots = [i for i in table.values() if i["class"] == "dot" and i["in_step"] and i["opcode"] not in ("while", "call")]
    assert sum(i["flops"] for i in dots) == 2 * 64 * 32 * 48 + 2 * 64 * 48 * 8  # counted once, not per fusion level
    assert any(i["class"] == "rng" for i in table.values())  # the threefry hash is recognised
