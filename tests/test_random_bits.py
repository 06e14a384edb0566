"""lipctr.random_bits draws exactly jax.random's bits (the dropout masks of every backbone)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipctr import random_bits
from lipctr.models.base import Dropout

SHAPES = [(1,), (7,), (4096, 16), (3, 5, 11), (2, 4, 39, 39)]


@pytest.mark.parametrize("shape", SHAPES)
def test_bits_equal_jax_random_bits(shape):
    for key in (jax.random.key(0), jax.random.fold_in(jax.random.key(2020), 7), jax.random.split(jax.random.key(5))[1]):
        np.testing.assert_array_equal(np.asarray(random_bits.bits(key, shape)), np.asarray(jax.random.bits(key, shape)))


def test_threefry2x32_known_answer():
    """Random123's published known-answer vector for Threefry-2x32-20 (key and counter all ones)."""
    ones = np.uint32(0xFFFFFFFF)
    hi, lo = random_bits.threefry2x32(ones, ones, jnp.array([ones]), jnp.array([ones]))
    assert (int(hi[0]), int(lo[0])) == (0x1CB996FC, 0xBB002BE7)


@pytest.mark.parametrize("p", [0.5, 0.9, 0.1])
def test_bernoulli_equals_jax_under_jit_and_vmap(p):
    keys = jax.random.split(jax.random.key(11), 4)
    shape = (64, 33)
    ours = jax.jit(jax.vmap(lambda k, q: random_bits.bernoulli(k, q, shape)))(keys, jnp.full(4, p, jnp.float32))
    theirs = jax.vmap(lambda k: jax.random.bernoulli(k, p, shape))(keys)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    assert abs(float(ours.mean()) - p) < 0.02  # and it is a Bernoulli(p) draw


def test_other_keys_fall_back_to_jax_random():
    raw = jax.random.PRNGKey(3)  # a uint32 [2] key, not a typed one
    rbg = jax.random.key(3, impl="rbg")
    for key in (raw, rbg):
        np.testing.assert_array_equal(np.asarray(random_bits.bernoulli(key, 0.7, (5, 6))),
                                      np.asarray(jax.random.bernoulli(key, 0.7, (5, 6))))


def test_dropout_module_equals_flax_dropout():
    x = jax.random.normal(jax.random.key(1), (128, 40))
    rngs = {"dropout": jax.random.key(9)}
    ours = Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs)
    flax_out = nn.Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(flax_out))


def test_on_the_cpu_the_mask_is_computed_once_and_stored():
    """The CPU path holds the fused hash in a conditional (stored once, not fused into consumers)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the stored-mask path is the CPU's; other platforms use jax.random.bernoulli")
    key = jax.random.key(4)
    hlo = jax.jit(lambda k: random_bits.bernoulli(k, 0.8, (256, 64))).lower(key).compile().as_text()
    assert " conditional(" in hlo and "while" not in hlo


def test_dropout_gradient_equals_flax_dropout_gradient():
    x = jax.random.normal(jax.random.key(1), (64, 48))
    rngs = {"dropout": jax.random.key(12)}

    def grad_of(module):
        return jax.jit(jax.grad(lambda v: jnp.sum(jnp.tanh(module.apply({}, v, deterministic=False,
                                                                        rngs=rngs)) ** 2)))(x)

    np.testing.assert_array_equal(np.asarray(grad_of(Dropout(0.4))), np.asarray(grad_of(nn.Dropout(0.4))))
