"""first_order_pooling: how the first-order term of the five backbones that have one (WideDeep,
NFM, xDeepFM, AutoInt, DeepFM) pools a token_seq field's per-id weights. "mean" (the default,
today's) averages them over the non-padding ids; "sum" adds them up, as RecBole 1.2.1's
FMFirstOrderLinear does."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from lipctr.data.schema import Field, Schema
from lipctr.models import MODEL_NAMES, build_model, check_model, default_hparams
from lipctr.models.base import FirstOrderLinear
from lipctr.models.parameter_counts import random_features

SCHEMA = Schema(fields=(
    Field("user_id", "token", "user", 11),
    Field("genre", "token_seq", "item", 9, max_len=4),
    Field("score", "float", "inter"),
))
# the first-order module's name in each backbone with one
FIRST_ORDER = {"widedeep": "wide", "nfm": "first_order", "xdeepfm": "first_order", "autoint": "first_order_linear",
               "deepfm": "first_order"}
# compiles dominate; LLVM -O0 roughly halves them (as tests/test_models.py)
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
SMALL = {"mlp_hidden_size": (8,), "cin_layer_size": (4,), "embedding_dim": 4}


def batch(size: int = 6) -> dict[str, np.ndarray]:
    """Random rows, the last one's sequence all padding (both poolings give 0 there)."""
    features = random_features(SCHEMA, size, np.random.default_rng(0))
    features["genre"][-1] = 0
    return features


def numpy_first_order(params, features, pooling: str) -> np.ndarray:
    """bias + sum over fields of the field's weight row(s) [B, K], in float64."""
    weights = {name: np.asarray(leaf["embedding"] if isinstance(leaf, dict) else leaf, np.float64)
               for name, leaf in params["weights"].items()}
    out = np.asarray(params["bias"], np.float64)[None].repeat(len(features["user_id"]), 0)
    out = out + weights["user_id"][features["user_id"]] + features["score"][:, None] * weights["score"]
    ids = features["genre"]
    mask = (ids != 0)[..., None]
    summed = (weights["genre"][ids] * mask).sum(1)  # padding id 0 excluded
    return out + (summed if pooling == "sum" else summed / np.maximum(mask.sum(1), 1))


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_first_order_term_pools_a_sequence_fields_weights_as_numpy_does(pooling):
    features = batch()
    module = FirstOrderLinear(SCHEMA, 3, pooling)
    params = jax.jit(module.init, compiler_options=FAST)(jax.random.key(0), features)["params"]
    params = jax.tree.map(lambda leaf: leaf + 0.1, params)  # a nonzero bias
    got = np.asarray(jax.jit(module.apply, compiler_options=FAST)({"params": params}, features))
    np.testing.assert_allclose(got, numpy_first_order(params, features, pooling), rtol=1e-6, atol=1e-6)
    if pooling == "sum":  # ... and differs from the mean wherever a row has 2+ genres
        several = (features["genre"] != 0).sum(1) > 1
        mean = numpy_first_order(params, features, "mean")
        assert several.any() and np.all(np.abs(got - mean).max(1)[several] > 1e-4)


def test_the_hyper_parameter_is_the_five_first_order_backbones_with_default_mean():
    having = [name for name in MODEL_NAMES if "first_order_pooling" in default_hparams(name)]
    assert sorted(having) == sorted(FIRST_ORDER)
    assert all(default_hparams(name)["first_order_pooling"] == "mean" for name in having)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):  # no first-order term, no such switch
        build_model("dcn", SCHEMA, 1, first_order_pooling="sum")


@pytest.mark.parametrize("name", sorted(FIRST_ORDER))
def test_each_backbone_hands_its_value_to_its_first_order_term(name):
    """Traced only (no compile): the first-order module gets the model's first_order_pooling,
    "mean" when it is not given."""
    features = batch()
    hparams = {k: v for k, v in SMALL.items() if k in default_hparams(name)}
    for extra, expected in (({}, "mean"), ({"first_order_pooling": "mean"}, "mean"),
                            ({"first_order_pooling": "sum"}, "sum")):
        seen = []

        def record(call, args, kwargs, context, seen=seen):
            if isinstance(context.module, FirstOrderLinear) and context.method_name == "__call__":
                seen.append((context.module.name, context.module.pooling))
            return call(*args, **kwargs)

        model = build_model(name, SCHEMA, 5, **hparams, **extra)
        with nn.intercept_methods(record):
            jax.eval_shape(model.init, {"params": jax.random.key(0), "dropout": jax.random.key(1)}, features)
        assert seen == [(FIRST_ORDER[name], expected)], (extra, seen)


def test_deepfm_sum_changes_only_the_sequence_fields_first_order_term_and_mean_is_the_default():
    """Same parameters; "mean" logits bit-identical to the model built without the hyper-parameter;
    "sum" logits minus "mean" logits = the numpy sum minus mean of the genre weights (K = 5)."""
    features = batch()
    models = [build_model("deepfm", SCHEMA, 5, mlp_hidden_size=(8,), embedding_dim=4, **extra)
              for extra in ({}, {"first_order_pooling": "mean"}, {"first_order_pooling": "sum"})]
    keys = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    inits = jax.jit(lambda k: [m.init(k, features) for m in models], compiler_options=FAST)(keys)
    for leaves in zip(*(jax.tree.leaves(v) for v in inits), strict=True):  # the same parameters
        np.testing.assert_array_equal(leaves[0], leaves[1])
        np.testing.assert_array_equal(leaves[0], leaves[2])
    variables = jax.tree.map(lambda leaf: leaf + 0.01, inits[0])  # fm_weights != 1, bias != 0
    plain, mean, summed = jax.jit(lambda v: [m.apply(v, features, deterministic=True) for m in models],
                                  compiler_options=FAST)(variables)
    np.testing.assert_array_equal(np.asarray(mean), np.asarray(plain))
    first_order = variables["params"]["first_order"]
    expected = numpy_first_order(first_order, features, "sum") - numpy_first_order(first_order, features, "mean")
    got = np.asarray(summed, np.float64) - np.asarray(mean, np.float64)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    assert np.abs(expected).max() > 1e-3


@pytest.mark.parametrize("value", ["max", "Sum", True])
def test_a_bad_value_is_refused_in_one_line_naming_the_hyper_parameter(value):
    with pytest.raises(ValueError, match="first_order_pooling must be one of 'mean', 'sum'") as error:
        check_model("deepfm", SCHEMA, 1, first_order_pooling=value)
    assert len(str(error.value).splitlines()) == 1 and repr(value) in str(error.value)
