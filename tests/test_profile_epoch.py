"""benchmarks.profile_epoch's HLO attribution: dot FLOPs and op classes against a known program."""

import jax
import jax.numpy as jnp

from benchmarks.profile_epoch import describe_dot, parse_hlo, signature_flops, time_dot
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


def test_dot_signatures_rebuild_the_programs_dots():
    """Each in-step dot's (shapes, dimension numbers) rebuilds a dot of the same FLOPs, which
    time_dot compiles and runs alone."""
    def f(x, w1, w2):
        return (jnp.tanh(x @ w1) @ w2).sum()  # [64, 32] @ [32, 48], [64, 48] @ [48, 8]

    args = (jnp.ones((64, 32)), jnp.ones((32, 48)), jnp.ones((48, 8)))
    table = parse_hlo(jax.jit(jax.value_and_grad(f, argnums=(1, 2))).lower(*args).compile().as_text())
    signatures = [d for i in table.values() if i["in_step"] for d in i["dots"]]
    # forward 2 dots; backward: dw2, dh (through w2), dw1 -> 5 dots of known sizes
    expected = sorted([2 * 64 * 32 * 48] * 2 + [2 * 64 * 48 * 8] * 3)
    assert sorted(signature_flops(d) for d in signatures) == expected
    assert sum(i["flops"] for i in table.values() if i["in_step"] and i["class"] == "dot") == sum(expected)
    for d in signatures:
        lhs_dtype, lhs, rhs_dtype, rhs, numbers, _ = d
        out = jax.eval_shape(lambda a, b: jax.lax.dot_general(a, b, numbers), jnp.ones(lhs), jnp.ones(rhs))
        assert 2 * out.size * (signature_flops(d) // (2 * out.size)) == signature_flops(d)
        assert describe_dot(d).startswith(f"{lhs_dtype}[{','.join(map(str, lhs))}] x {rhs_dtype}[")
        assert 0.0 < time_dot(d, calls=2) < 1.0
