"""DCNV2, NFM and xDeepFM building blocks and L2 terms against direct numpy computations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipctr.data.schema import Field, Schema
from lipctr.models import build_model
from lipctr.models.base import xavier_normal
from lipctr.models.dcnv2 import CrossNetwork, MixedCrossNetwork
from lipctr.models.nfm import bi_interaction
from lipctr.models.parameter_counts import random_features
from lipctr.models.regularization import group_norm
from lipctr.models.xdeepfm import CIN, FeatureMapDense, cin_output_width

RNG = np.random.default_rng(0)
SCHEMA = Schema(
    fields=(
        Field("user_id", "token", "user", 7),
        Field("item_id", "token", "item", 9),
        Field("genre", "token_seq", "item", 5, max_len=3),
        Field("tags", "token_seq", "item", 4, max_len=2),
        Field("price", "float", "item"),
        Field("rank", "float", "item"),
    )
)


def normal(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-4, atol=1e-5)


def test_bi_interaction_is_the_sum_of_pairwise_products():
    emb = normal(3, 5, 4)
    pairs = sum(emb[:, i] * emb[:, j] for i in range(5) for j in range(i + 1, 5))
    close(bi_interaction(jnp.asarray(emb)), pairs)


def test_cross_network():
    x0, layers = normal(4, 6), 3
    params = {f"w_{i}": normal(6, 6) for i in range(layers)} | {f"b_{i}": normal(6) for i in range(layers)}
    expected = x0.astype(np.float64)
    for layer in range(layers):
        expected = x0 * (expected @ params[f"w_{layer}"] + params[f"b_{layer}"]) + expected
    close(CrossNetwork(layers).apply({"params": params}, x0), expected)


def test_mixed_cross_network():
    x0, layers, experts, rank = normal(4, 6), 2, 3, 2
    params = {"gate_kernel": normal(experts, 6, 1), "gate_bias": normal(experts)}
    for layer in range(layers):
        params |= {f"u_{layer}": normal(experts, rank, 6), f"v_{layer}": normal(experts, 6, rank)}
        params |= {f"c_{layer}": normal(experts, rank, rank), f"b_{layer}": normal(6)}
    x = x0.astype(np.float64)
    for layer in range(layers):
        gate_logits = np.stack([x @ params["gate_kernel"][e, :, 0] + params["gate_bias"][e] for e in range(experts)], 1)
        gates = np.exp(gate_logits) / np.exp(gate_logits).sum(1, keepdims=True)
        update = np.zeros_like(x)
        for e in range(experts):
            low = np.tanh(np.tanh(x @ params[f"v_{layer}"][e]) @ params[f"c_{layer}"][e])
            update += gates[:, e : e + 1] * x0 * (low @ params[f"u_{layer}"][e] + params[f"b_{layer}"])
        x = x + update
    close(MixedCrossNetwork(layers, experts, rank).apply({"params": params}, x0), x)


@pytest.mark.parametrize("direct", [False, True])
def test_cin_matches_its_definition(direct):
    batch, fields, dim, sizes = 3, 4, 5, (6, 4, 3)
    x0 = normal(batch, fields, dim)
    params, hidden_width = {}, fields
    for index, size in enumerate(sizes):
        params[f"conv_{index}"] = {"kernel": normal(hidden_width * fields, size), "bias": normal(size)}
        hidden_width = size if direct or index == len(sizes) - 1 else size // 2
    hidden, pooled = x0.astype(np.float64), []
    for index, size in enumerate(sizes):
        kernel = params[f"conv_{index}"]["kernel"].reshape(hidden.shape[1], fields, size)
        maps = np.zeros((batch, size, dim))
        for c in range(size):  # feature map c = sum over (h, m) of W[h, m, c] * X^{k-1}_h * X^0_m
            for h in range(hidden.shape[1]):
                for m in range(fields):
                    maps[:, c] += kernel[h, m, c] * hidden[:, h] * x0[:, m]
        maps = np.maximum(maps + params[f"conv_{index}"]["bias"][None, :, None], 0.0)
        last = index == len(sizes) - 1
        hidden, out = (maps, maps) if direct or last else (maps[:, : size // 2], maps[:, size // 2 :])
        pooled.append(out.sum(-1))
    expected = np.concatenate(pooled, 1)
    assert expected.shape[1] == cin_output_width(sizes, direct)
    close(CIN(sizes, direct).apply({"params": params}, x0), expected)


def zeros_like_model(model, features):
    shapes = jax.eval_shape(model.init, jax.random.key(0), features)
    return jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)


def fill(tree):
    """Every leaf replaced by random normal values (numpy), same structure."""
    return jax.tree.map(lambda leaf: normal(*leaf.shape), tree)


def frobenius(arrays):
    return np.sqrt(sum(float((np.asarray(a, np.float64) ** 2).sum()) for a in arrays))


@pytest.mark.parametrize("mixed", [False, True])
def test_dcnv2_penalty_is_reg_weight_times_sum_of_cross_norms(mixed):
    model = build_model("dcnv2", SCHEMA, 5, mixed=mixed, low_rank=2, expert_num=2, cross_layer_num=3,
                        mlp_hidden_size=(4,), reg_weight=0.7)
    params = fill(zeros_like_model(model, random_features(SCHEMA, 2, RNG))["params"])
    names = ("u", "v", "c") if mixed else ("w",)
    expected = 0.7 * sum(frobenius([params["cross"][f"{n}_{layer}"]]) for n in names for layer in range(3))
    close(model.penalty(params), expected)


def test_xdeepfm_penalty_covers_dnn_cin_and_first_order_weights_as_recbole_groups_them():
    model = build_model("xdeepfm", SCHEMA, 5, mlp_hidden_size=(4, 3), cin_layer_size=(4, 2), reg_weight=0.3)
    params = fill(zeros_like_model(model, random_features(SCHEMA, 2, RNG))["params"])
    weights = params["first_order"]["weights"]
    first_order = (
        frobenius([weights["user_id"]["embedding"], weights["item_id"]["embedding"]])  # one token table
        + frobenius([weights["genre"]["embedding"]])  # one table per token_seq field
        + frobenius([weights["tags"]["embedding"]])
        + frobenius([weights["price"], weights["rank"]])  # one float table
    )
    dnn = sum(frobenius([params["mlp"][f"Dense_{i}"]["kernel"]]) for i in range(2)) + frobenius(
        [params["dnn_output"]["kernel"]]
    )
    cin = sum(frobenius([params["cin"][f"conv_{i}"]["kernel"]]) for i in range(2))
    close(model.penalty(params), 0.3 * (first_order + dnn + cin))


def test_xdeepfm_dnn_output_can_be_negative():
    """No ReLU after the DNN's output layer (RecBole's quirk): with every other part zero, a
    negative output bias comes through unchanged."""
    model = build_model("xdeepfm", SCHEMA, 5, mlp_hidden_size=(4,), cin_layer_size=(2,))
    features = random_features(SCHEMA, 3, RNG)
    variables = zeros_like_model(model, features)
    variables["params"]["dnn_output"]["bias"] = np.full(5, -2.0, np.float32)
    close(model.apply(variables, features), np.full((3, 5), -2.0))


def test_group_norm_gradient_is_zero_not_nan_at_zero():
    grad = jax.grad(lambda w: group_norm([w]))(jnp.zeros((3, 2)))
    assert np.all(np.asarray(grad) == 0.0)
    close(group_norm([jnp.array([3.0]), jnp.array([[4.0]])]), 5.0)


@pytest.mark.parametrize(
    "name,hparams,message",
    [
        ("dcnv2", {"structure": "deep"}, "structure"),
        ("dcnv2", {"cross_init": "uniform"}, "cross_init"),
        ("xdeepfm", {"cin_layer_size": (5, 4)}, "even"),
        ("xdeepfm", {"cin_layer_size": ()}, "cin_layer_size"),
    ],
)
def test_bad_hyper_parameters_are_named(name, hparams, message):
    model = build_model(name, SCHEMA, 1, **hparams)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(model.init, jax.random.key(0), random_features(SCHEMA, 2, RNG))


def test_feature_map_dense_equals_flax_dense_bitwise():
    """CIN's 1x1 convolution: values and gradients (input, kernel, bias) equal nn.Dense's on the
    same params. On XLA:CPU bit for bit (the bias sum keeps nn.Dense's order), elsewhere to
    rounding; the kernel gradient against numpy."""
    z = jnp.asarray(normal(4096, 16, 49), jnp.float32)
    cotangent = jnp.asarray(normal(4096, 16, 200), jnp.float32)
    dense = nn.Dense(200, kernel_init=xavier_normal, bias_init=nn.initializers.normal(1.0))
    params = dense.init(jax.random.key(0), z)
    ours = FeatureMapDense(200)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), z)) == jax.tree.map(jnp.shape, params)

    def grads(module):  # relu after it, as in CIN, so its cotangent has CIN's structure
        def run(params, z):
            out, vjp = jax.vjp(lambda p, z: jax.nn.relu(module.apply(p, z)), params, z)
            return out, vjp(cotangent)
        return jax.jit(run)(params, z)

    (value, (g_params, g_z)), (ref_value, (ref_params, ref_z)) = grads(ours), grads(dense)
    leaves, ref_leaves = jax.tree.leaves((value, g_params, g_z)), jax.tree.leaves((ref_value, ref_params, ref_z))
    if jax.default_backend() == "cpu":
        for a, b in zip(leaves, ref_leaves):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    else:
        for a, b in zip(leaves, ref_leaves):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    # The relu mask is the fp32 forward's own (a float64 pre-activation flips it where it is ~0);
    # each gradient entry sums 65,536 terms, so its rounding is bounded by the sum of |terms|.
    z64 = np.asarray(z, np.float64)
    masked = np.where(np.asarray(value) > 0, np.asarray(cotangent, np.float64), 0.0)
    kernel_error = np.abs(np.asarray(g_params["params"]["kernel"]) - np.einsum("bdc,bdo->co", z64, masked))
    assert np.all(kernel_error <= 1e-5 * np.einsum("bdc,bdo->co", np.abs(z64), np.abs(masked)))
    bias_error = np.abs(np.asarray(g_params["params"]["bias"]) - masked.sum((0, 1)))
    assert np.all(bias_error <= 1e-5 * np.abs(masked).sum((0, 1)))
