"""The mechanism study's controls do exactly what they say."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import configs
from experiments.configs import ConfigError, named_config, validate
from experiments.run import build_trainer
from lipctr.controls import (
    ControlError,
    Controls,
    controlled_schema,
    controlled_train_split,
    merge_groups,
    rating_class_map,
    redraw_within_label,
)
from lipctr.losses import LossConfig, click_score, multihead_loss
from lipctr.models import build_model
from lipctr.models.controlled import controlled_model, embedding_square_norm
from lipctr.models.parameter_counts import count
from lipctr.train import init_members, make_epoch_fn, to_device
from tests.tiny_data import tiny_dataset


def test_within_label_redraw_keeps_labels_and_class_rating_counts_and_is_seeded():
    split = tiny_dataset().train
    redrawn = controlled_train_split(split, tiny_dataset().schema, Controls(rating_noise="within_label",
                                                                            rating_noise_seed=3)).rating
    assert np.array_equal(redrawn > 3, split.label == 1)  # every binary label kept
    for value in (0.0, 1.0):
        cls = split.label == value
        assert np.array_equal(np.bincount(redrawn[cls], minlength=6), np.bincount(split.rating[cls], minlength=6))
    assert np.mean(redrawn != split.rating) > 0.2  # the ratings did move
    assert np.array_equal(redrawn, redraw_within_label(split.rating, split.label, 3))  # deterministic
    assert not np.array_equal(redrawn, redraw_within_label(split.rating, split.label, 4))
    assert np.array_equal(controlled_train_split(split, tiny_dataset().schema, Controls()).rating, split.rating)


def test_rating_classes_merge_contiguous_groups_on_each_side_of_the_threshold():
    assert merge_groups(5, 3, 3) == ((1, 2), (3,), (4, 5))
    assert list(rating_class_map(5, 3, 3)) == [0, 1, 1, 2, 3, 3]
    assert list(rating_class_map(5, 3, 2)) == [0, 1, 1, 1, 2, 2]
    assert merge_groups(5, 3, 4) == ((1, 2), (3,), (4,), (5,))
    assert merge_groups(5, 3, 0) == merge_groups(5, 3, 5) == ((1,), (2,), (3,), (4,), (5,))
    dataset = tiny_dataset()
    for classes, threshold in ((3, 2), (2, 1)):
        controls = Controls(rating_classes=classes)
        schema = controlled_schema(dataset.schema, controls)
        assert (schema.num_ratings, schema.threshold) == (classes, threshold)
        merged = controlled_train_split(dataset.train, dataset.schema, controls).rating
        assert set(np.unique(merged)) == set(range(1, classes + 1))
        assert np.array_equal(merged > threshold, dataset.train.label == 1)


@pytest.mark.parametrize("kwargs, key", [
    ({"rating_noise": "shuffle"}, "controls.rating_noise"),
    ({"label_smoothing": 1.0}, "controls.label_smoothing"),
    ({"label_smoothing": -0.1}, "controls.label_smoothing"),
    ({"rating_classes": -1}, "controls.rating_classes"),
    ({"embedding_l2": -1e-3}, "controls.embedding_l2"),
    ({"aux_rating": 1}, "controls.aux_rating"),
])
def test_bad_control_values_name_the_key(kwargs, key):
    with pytest.raises(ControlError, match=key):
        Controls(**kwargs)


@pytest.mark.parametrize("update, message", [
    ({"controls": {"rating_classes": 7}}, "controls.rating_classes = 7 does not divide the rating scale 1..5"),
    ({"controls": {"rating_classes": 1}}, "controls.rating_classes = 1 does not divide"),
    ({"controls": {"label_smoothing": 1.5}}, "controls.label_smoothing (epsilon) must lie in [0, 1)"),
    ({"controls": {"rating_noise": "random"}}, "controls.rating_noise must be one of"),
    ({"controls": {"aux": True}}, "unknown key 'controls.aux'"),
    ({"model_hparams": {"scalar_side_branches": "yes"}}, "'model_hparams.scalar_side_branches' must be bool"),
])
def test_bad_control_config_values_stop_with_the_key(update, message):
    with pytest.raises(ConfigError) as error:
        validate(configs.merge(named_config("widedeep_ml100k"), update), source="study.toml")
    assert message in str(error.value) and "study.toml" in str(error.value)


def small_config(model: str, **controls) -> dict:
    hparams = {"dcnv2": {"mlp_hidden_size": [16], "embedding_dim": 4},
               "xdeepfm": {"mlp_hidden_size": [16], "cin_layer_size": [4, 4], "embedding_dim": 4},
               "fignn": {"embedding_dim": 4, "attention_size": 4},
               "deepfm": {"mlp_hidden_size": [16], "embedding_dim": 4},
               "dcn": {"mlp_hidden_size": [16], "embedding_dim": 4, "cross_layer_num": 2},
               "finalmlp": {"mlp1_hidden_units": [16], "mlp2_hidden_units": [8], "fs_hidden_units": [8],
                            "embedding_dim": 4},
               "gdcn": {"dnn_hidden_units": [16], "embedding_dim": 4},
               "dcnv3": {"embedding_dim": 4, "num_heads": 2}}[model]
    return validate(configs.merge(named_config(f"{model}_ml100k"), {"model_hparams": hparams, "controls": controls,
                                                                    "train": {"batch_size": 256, "max_epochs": 3,
                                                                              "patience": 9}}))


def test_build_trainer_follows_the_controls():
    dataset = tiny_dataset(num_interactions=400)
    assert build_trainer(small_config("dcnv2", aux_rating=True), dataset, "smooth").model.num_outputs == 6
    assert build_trainer(small_config("dcnv2", aux_rating=True), dataset, "orig").model.num_outputs == 1
    merged = build_trainer(small_config("dcnv2", rating_classes=3, aux_rating=True), dataset, "smooth")
    assert merged.model.num_outputs == 4 and merged.loss_config.threshold == 2 and merged.loss_config.aux_rating
    smoothed = build_trainer(small_config("dcnv2", label_smoothing=0.1), dataset, "orig")
    assert smoothed.loss_config.label_smoothing == 0.1


def test_aux_rating_scores_clicks_from_the_bce_head_only():
    dataset = tiny_dataset(num_interactions=400)
    trainer = build_trainer(small_config("dcnv2", aux_rating=True), dataset, "smooth")
    logits = jax.random.normal(jax.random.key(0), (7, 6))
    changed = logits.at[:, 1:].set(10 * jax.random.normal(jax.random.key(1), (7, 5)))
    np.testing.assert_array_equal(trainer.click_score(logits), click_score(logits[:, :1]))
    np.testing.assert_array_equal(trainer.click_score(changed), trainer.click_score(logits))
    np.testing.assert_allclose(trainer.click_probability(changed), jax.nn.sigmoid(logits[:, 0]), rtol=1e-6)
    rating, label = jnp.array([1, 2, 3, 4, 5, 5, 1]), jnp.array([0, 0, 0, 1, 1, 1, 0.0])
    at_zero = LossConfig(lambda_r=0.0, aux_rating=True)
    unchanged = multihead_loss(logits, rating, label, at_zero)
    assert float(multihead_loss(changed, rating, label, at_zero)) == float(unchanged)
    expected = 0.3 * multihead_loss(logits[:, 1:], rating, label, LossConfig(lambda_r=1.0)) + 0.7 * multihead_loss(
        logits[:, :1], rating, label, LossConfig())
    np.testing.assert_allclose(multihead_loss(logits, rating, label, LossConfig(lambda_r=0.3, aux_rating=True)),
                               expected, rtol=1e-6)


@pytest.mark.parametrize("model", ["dcnv2", *(pytest.param(m, marks=pytest.mark.slow) for m in (
    "xdeepfm", "fignn", "deepfm", "dcn", "finalmlp", "gdcn", "dcnv3"))])
@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_aux_rating_click_head_trains_as_orig_at_lambda_zero(model):
    """Same seed, same init of the click column and shared parameters, lambda_r = 0: the click
    logits follow orig's training trajectory to float rounding (xDeepFM: its L2 term covers K-wide
    layers; FiGNN: per-class scorers) and the rating-head parameters never move; at lambda_r = 0.5
    the click head differs. Plain SGD: Adam divides each gradient by its own running magnitude, so
    rounding noise in directions whose gradient is ~0 by construction (a dense bias before
    batch-norm) becomes a step of ~lr, and the two runs then agree to ~1e-3 only."""
    dataset = tiny_dataset(num_interactions=800)
    train, test = to_device(dataset.train), to_device(dataset.test)
    tx = optax.sgd(0.1)

    def trained(variant, seeds, lambdas):
        trainer = build_trainer(small_config(model, aux_rating=True), dataset, variant)
        state = init_members(trainer.model, tx, train["features"], seeds, lambdas)
        initial = jax.tree.map(np.asarray, state.params)
        epoch = jax.jit(jax.vmap(make_epoch_fn(trainer.model, trainer.loss_config, tx, len(dataset.train), 256),
                                 (0, None)))
        for _ in range(2):
            state, _ = epoch(state, train)
        logits = trainer.predict_logits(state.params, state.model_state, test["features"])
        return trainer, initial, state.params, np.asarray(logits)

    _, _, _, orig = trained("orig", [5, 6], [0.0, 0.0])
    aux_trainer, initial, params, aux = trained("smooth", [5, 5], [0.0, 0.5])
    assert aux.shape[-1] == 6 and orig.shape[-1] == 1
    np.testing.assert_allclose(aux[0, :, :1], orig[0], atol=2e-6)
    assert np.abs(orig[1] - orig[0]).max() > 1e4 * 2e-6  # another seed is far outside that tolerance
    assert np.abs(aux[1, :, 0] - orig[0, :, 0]).max() > 1e3 * 2e-6  # lambda_r = 0.5 changes the click head
    click = aux_trainer.model.click_model()
    shapes = jax.eval_shape(click.init, jax.random.key(0), jax.tree.map(lambda x: x[:2], dataset.train.features))
    moved = []
    for leaf, start, like in zip(jax.tree.leaves(params), jax.tree.leaves(initial), jax.tree.leaves(shapes["params"])):
        if leaf.shape[1:] != like.shape:  # a K-wide leaf: columns 1.. are the rating head
            axis = next(i for i, (a, b) in enumerate(zip(leaf.shape[1:], like.shape)) if a != b)
            rating_now = np.take(np.asarray(leaf), np.arange(1, 6), axis=axis + 1)
            rating_start = np.take(start, np.arange(1, 6), axis=axis + 1)
            np.testing.assert_array_equal(rating_now[0], rating_start[0])
            moved.append(np.abs(rating_now[1] - rating_start[1]).max())
    assert moved and max(moved) > 0


@pytest.mark.parametrize("name", ["widedeep", "xdeepfm", "autoint"])
def test_scalar_side_branches_drop_exactly_their_extra_columns(name):
    schema = tiny_dataset(num_interactions=200).schema
    features = {k: v[:2] for k, v in tiny_dataset(num_interactions=200).train.features.items()}
    k = 5

    def params(scalar, num_outputs=k):
        model = build_model(name, schema, num_outputs, scalar_side_branches=scalar)
        return jax.eval_shape(model.init, jax.random.key(0), features)["params"]

    full, scalar = params(False), params(True)
    first_order = sum(f.vocab_size if f.kind != "float" else 1 for f in schema.fields) + 1  # weights + bias
    hp = build_model(name, schema, k)
    if name == "widedeep":  # the wide part
        extra = first_order
    elif name == "xdeepfm":  # first-order part and CIN output layer (its input: the CIN maps sent out)
        extra = first_order + sum(s // 2 for s in hp.cin_layer_size[:-1]) + hp.cin_layer_size[-1] + 1
    else:  # AutoInt's attention output layer over the flat [F, E] attention output
        extra = schema.num_fields * hp.attention_size + 1
    assert count(full) - count(scalar) == (k - 1) * extra
    changed = [(a.shape, b.shape) for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(scalar)) if a.shape != b.shape]
    assert changed and all(a[:-1] == b[:-1] and (a[-1], b[-1]) == (k, 1) for a, b in changed)
    assert sum(np.prod(b[:-1]) for _, b in changed) == extra
    assert count(params(True, 1)) == count(params(False, 1))  # the orig head is unchanged


def test_label_smoothing_and_embedding_l2_are_the_stated_terms():
    logits = jnp.array([[2.0], [-1.0], [0.5]])
    label = jnp.array([1.0, 0.0, 1.0])
    eps = 0.2
    target = np.array([0.9, 0.1, 0.9])
    p = 1 / (1 + np.exp(-np.array([2.0, -1.0, 0.5])))
    expected = -np.mean(target * np.log(p) + (1 - target) * np.log(1 - p))
    np.testing.assert_allclose(multihead_loss(logits, None, label, LossConfig(label_smoothing=eps)), expected,
                               rtol=1e-6)
    dataset = tiny_dataset(num_interactions=200)
    features = {k: v[:2] for k, v in dataset.train.features.items()}
    base = build_model("dcnv2", dataset.schema, 1, embedding_dim=4, mlp_hidden_size=(8,))
    regularised = controlled_model(base, Controls(embedding_l2=0.01))
    params = base.init(jax.random.key(0), features)["params"]
    tables = params["embedding"]["tables"]
    squares = sum(np.sum(np.square(np.asarray(tables[f.name]["embedding"]))) for f in dataset.schema.fields)
    np.testing.assert_allclose(regularised.penalty(params) - base.penalty(params), 0.01 * squares, rtol=1e-5)
    np.testing.assert_allclose(embedding_square_norm(params), squares, rtol=1e-6)
