"""train.compute_dtype = "bfloat16": the forward / backward pass in bf16, everything kept float32."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lipctr.losses import LossConfig
from lipctr.models import MODEL_NAMES
from lipctr.precision import compute_params
from lipctr.train import loss_fn, train_step
from tests.test_models import SCHEMA, batch, small_model

LOSS = LossConfig(lambda_r=0.5)


def setup(name):
    model = small_model(name, SCHEMA.num_ratings)  # the rating head (K = 5)
    features, rating, label = batch(512, seed=3)
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, features, deterministic=True)
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    data = {"features": features, "rating": rating, "label": label}
    return model, params, state, data


def loss_and_grads(model, params, state, data, dtype):
    def fn(p):
        return loss_fn(model, LOSS, p, state, data, jnp.ones(len(data["label"])), jax.random.key(7), dtype)[0]
    return jax.jit(jax.value_and_grad(fn))(params)


# Two backbones in the default suite (an MLP with batch norm, and DCNV2's cross network); all seven with -m slow.
BACKBONES = [name if name == "dcnv2" else pytest.param(name, marks=pytest.mark.slow) for name in MODEL_NAMES]


@pytest.mark.parametrize("name", BACKBONES)
def test_bf16_loss_and_gradients_close_to_fp32(name):
    model, params, state, data = setup(name)
    loss32, grads32 = loss_and_grads(model, params, state, data, "float32")
    loss16, grads16 = loss_and_grads(model, params, state, data, "bfloat16")
    assert {g.dtype for g in jax.tree.leaves(grads16)} == {jnp.dtype(jnp.float32)}
    assert abs(float(loss16) - float(loss32)) <= 2e-2 * abs(float(loss32))
    a = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads32)])
    b = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads16)])
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cosine > 0.99, cosine
    assert abs(np.linalg.norm(b) / np.linalg.norm(a) - 1) < 0.05
    assert not np.array_equal(a, b)  # it did compute in bf16


def test_bf16_really_runs_the_matmuls_in_bf16_and_fp32_is_untouched():
    model, params, state, data = setup("dcnv2")
    weight = jnp.ones(len(data["label"]))

    def dot_input_dtypes(dtype):
        jaxpr = jax.make_jaxpr(lambda p: loss_fn(model, LOSS, p, state, data, weight, jax.random.key(7),
                                                 dtype)[0])(params)
        return {str(v.aval.dtype) for eqn in jaxpr.eqns if eqn.primitive.name == "dot_general" for v in eqn.invars}

    assert dot_input_dtypes("bfloat16") == {"bfloat16"}
    assert dot_input_dtypes("float32") == {"float32"}
    assert compute_params(params, "float32") is params


def test_bf16_train_step_keeps_params_and_optimiser_state_fp32():
    model, params, state, data = setup("nfm")
    tx = optax.adamw(1e-3, weight_decay=0.0)
    opt_state = tx.init(params)
    new_params, new_state, new_opt, loss, _ = jax.jit(
        lambda p, s, o: train_step(model, LOSS, tx, p, s, o, data, jnp.ones(len(data["label"])), jax.random.key(2),
                                   "bfloat16"))(params, state, opt_state)
    for tree in (new_params, new_state, new_opt):
        floats = [x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
        assert floats and set(floats) == {jnp.dtype(jnp.float32)}
    assert loss.dtype == jnp.float32
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new_params))]
    assert all(moved)


def test_unknown_compute_dtype_is_refused():
    with pytest.raises(ValueError, match="compute_dtype must be one of float32, bfloat16, got 'float16'"):
        compute_params({}, "float16")


def test_config_names_the_key_of_a_bad_compute_dtype():
    from experiments.configs import ConfigError, named_config, validate

    config = named_config("dcnv2_ml100k")
    config["train"]["compute_dtype"] = "fp16"
    with pytest.raises(ConfigError,
                       match=r"my.toml: key 'train.compute_dtype' must be one of float32, bfloat16, got 'fp16'"):
        validate(config, source="my.toml")
