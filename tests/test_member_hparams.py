"""Per-member hyper-parameters: a grid of same-shape points is one compiled ensemble,
and each member trains as the same hyper-parameters trained alone."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import configs
from experiments.configs import named_config, validate
from experiments.run import build_trainer, config_variant, member_values, run_variant
from experiments.rundir import RunDirError
from lipctr.losses import LossConfig
from lipctr.member_hparams import check_names, grid_points, member_hparam, member_model, per_member_keys, stacked_values
from lipctr.models import MODEL_NAMES, build_model, default_hparams
from lipctr.models.base import Dropout
from lipctr.ranking import ranking_candidates
from lipctr.train import SavedState, TrainConfig, epoch_batches, loss_fn, to_device
from lipctr.trainer import Trainer, fit
from tests.tiny_data import tiny_dataset

SMALL = {"dcnv2": {"mlp_hidden_size": [16], "embedding_dim": 4},
         "eulernet": {"embedding_dim": 4, "order_list": [4]},
         "autoint": {"embedding_dim": 4, "attention_size": 4, "n_layers": 1, "mlp_hidden_size": [8]}}


@pytest.fixture(scope="module")
def data():
    ds = tiny_dataset(num_interactions=800)
    return ds, to_device(ds.train), to_device(ds.valid)


def small_config(model: str = "dcnv2", **values) -> dict:
    """A small validated config of `model`, members one after another, 2 epochs, one seed; values:
    {"section__field": value} set on it."""
    config = validate(configs.merge(named_config(f"{model}_ml100k"), {
        "model_hparams": SMALL[model], "seeds": [2020],
        "train": {"batch_size": 256, "max_epochs": 2, "patience": 9, "members": "sequential"}}))
    for key, value in values.items():
        section, field = key.split("__")
        config[section][field] = value
    return config


def train(config: dict, data, points=None, variant: str = "smooth"):
    """(final state, early stopping, epoch records) of the config's members (at `points`)."""
    ds, train_split, valid = data
    trainer = build_trainer(config, ds, variant, points=points)
    spec = config_variant(config, variant, points)
    members = spec.members(config["seeds"])
    state, stopping = trainer.init(train_split["features"], [m.seed for m in members], [m.lambda_r for m in members],
                             member_values(spec, members, config["model"]))
    records = []
    state, stopping = fit(trainer, state, stopping, train_split, valid, lambda s, e, r: records.append(r))
    return state, stopping, records


def valid_logits(data, trainer, state) -> np.ndarray:
    return np.asarray(trainer.predict_logits(state.params, state.model_state, data[2]["features"]))


def assert_same_member(grid_run, i: int, alone_run, atol=1e-5):
    """Member i of grid_run trained as alone_run's only member did: per-epoch training loss and
    valid AUC, and the final model's valid logits (raw params are not compared: a dense bias
    before batch-norm has zero gradient by construction, and Adam turns its rounding noise into
    steps of about lr)."""
    for g, a in zip(grid_run["records"], alone_run["records"], strict=True):
        np.testing.assert_allclose(g.stats.loss[i], a.stats.loss[0], atol=atol)
        np.testing.assert_allclose(g.valid_auc[i], a.valid_auc[0], atol=atol)
    np.testing.assert_allclose(grid_run["logits"][i], alone_run["logits"][0], atol=atol)


# eulernet_ml100k's value and one other for every per-member key of EulerNet (no batch-norm, so
# its trained functions can be compared to 1e-5)
OWN = {"train.learning_rate": 1e-3, "train.weight_decay": 0.0, "model_hparams.drop_ex": 0.3,
       "model_hparams.drop_im": 0.5, "model_hparams.reg_weight": 5e-4, "controls.label_smoothing": 0.0,
       "controls.embedding_l2": 0.0, "loss.lambda_r": 0.1}
OTHER = {"train.learning_rate": 5e-3, "train.weight_decay": 0.5, "model_hparams.drop_ex": 0.1,
         "model_hparams.drop_im": 0.2, "model_hparams.reg_weight": 0.05, "controls.label_smoothing": 0.2,
         "controls.embedding_l2": 0.01, "loss.lambda_r": 0.5}


def fit_members(trainer, spec, members, data, model="dcnv2"):
    ds, train_split, valid = data
    state, stopping = trainer.init(train_split["features"], [m.seed for m in members], [m.lambda_r for m in members],
                             member_values(spec, members, model))
    records = []
    state, stopping = fit(trainer, state, stopping, train_split, valid, lambda s, e, r: records.append(r))
    return {"records": records, "logits": valid_logits(data, trainer, state)}


@pytest.mark.slow  # ~40 s; test_members_take_their_own_adamw_steps is its fast twin
def test_grid_members_train_as_the_same_points_alone(data):
    """One program for 9 points (the config's values, then each per-member key of EulerNet
    moved to another value): every member equals its point trained as a one-member ensemble (to
    1e-5), each moved key changes the member, and the config's own point equals the plain config
    without a grid (traced values = the static ones)."""
    config = small_config("eulernet")
    points = [dict(OWN)] + [{**OWN, key: value} for key, value in OTHER.items()]
    spec = config_variant(config, "smooth", points)
    trainer = build_trainer(config, data[0], "smooth", points=points)
    members = spec.members(config["seeds"])
    grid = fit_members(trainer, spec, members, data, "eulernet")
    for i, member in enumerate(members):
        assert_same_member(grid, i, fit_members(trainer, spec, [member], data, "eulernet"))
    for i, key in enumerate(OTHER, start=1):
        moved = np.abs(grid["logits"][i] - grid["logits"][0]).max()
        assert moved > 1e-4, f"{key}: moving it did not change the member ({moved})"
    plain = train(config, data)
    assert_same_member(grid, 0, {"records": plain[2], "logits": valid_logits(data, build_trainer(config, data[0],
                                                                                                "smooth"), plain[0])})


@pytest.mark.slow  # 3 programs per key; the default suite has the one-program version above
@pytest.mark.parametrize("model,key,own,other", [
    *[("eulernet", key, OWN[key], value) for key, value in OTHER.items()],
    ("autoint", "model_hparams.dropout_probs", 0.2, 0.5)])
def test_grid_member_trains_as_the_plain_config_of_its_values(data, model, key, own, other):
    """A 2-point grid [own, other]: member 1 equals the config with `other` set (no grid)."""
    section, field = key.split(".")
    current = small_config(model)[section].get(field, default_hparams(model).get(field))
    assert current in (own, (own,) * 3, [own] * 3)
    config = {**small_config(model), "grid": {key: [own, other]}}
    grid_state, _, grid_records = train(config, data)
    alone_config = small_config(model, **{f"{section}__{field}": [other] * 3 if field == "dropout_probs" else other})
    alone_state, _, alone_records = train(alone_config, data)
    logits = [valid_logits(data, build_trainer(c, data[0], "smooth"), s)
              for c, s in ((config, grid_state), (alone_config, alone_state))]
    assert_same_member({"records": grid_records, "logits": logits[0]}, 1,
                       {"records": alone_records, "logits": logits[1]})
    assert np.abs(logits[0][0] - logits[0][1]).max() > 1e-4  # the two values train different models


@pytest.mark.parametrize("model", [name if name in ("nfm", "autoint") else pytest.param(name, marks=pytest.mark.slow)
                                   for name in MODEL_NAMES])  # EulerNet's fields: also the grid test above
def test_every_backbones_rates_and_reg_weight_follow_the_members_values(model, data):
    """For every per-member field of every backbone: one training-mode loss (dropout on, the
    backbone's penalty) with the value traced per member (vmapped over two members) equals the
    model built with that value, and the two values give different losses."""
    ds = data[0]
    small = {"dcnv2": SMALL["dcnv2"], "eulernet": SMALL["eulernet"], "autoint": SMALL["autoint"],
             "widedeep": {"mlp_hidden_size": (8,)}, "nfm": {"mlp_hidden_size": (8,)},
             "xdeepfm": {"mlp_hidden_size": (8,), "cin_layer_size": (4, 4), "embedding_dim": 4},
             "fignn": {"embedding_dim": 4, "attention_size": 4},
             "deepfm": {"mlp_hidden_size": (8,)}, "dcn": {"mlp_hidden_size": (8,), "cross_layer_num": 2},
             "finalmlp": {"mlp1_hidden_units": (8,), "mlp2_hidden_units": (8,), "fs_hidden_units": (4,)},
             "gdcn": {"dnn_hidden_units": (8,), "num_cross_layers": 2},
             "dcnv3": {"num_deep_cross_layers": 2, "num_shallow_cross_layers": 2}}[model]
    small = {k: tuple(v) if isinstance(v, list) else v for k, v in small.items()}
    batch = jax.tree.map(lambda x: jnp.asarray(x[:64]), to_device(ds.train))
    fields = [key.split(".")[1] for key in per_member_keys(model) if key.startswith("model_hparams.")]
    for field in fields:
        values = (0.1, 0.4) if field != "reg_weight" else (0.5, 3.0)
        base = build_model(model, ds.schema, 5, **small)
        params_and_state = base.init({"params": jax.random.key(0)}, batch["features"])
        variables = {"params": params_and_state["params"]}
        model_state = {k: v for k, v in params_and_state.items() if k != "params"}

        def loss(net):
            value, _ = loss_fn(net, LossConfig(lambda_r=0.5), variables["params"], model_state, batch,  # noqa: B023 (called within its iteration)
                               jnp.ones(64), jax.random.key(5))
            return value

        traced = jax.jit(jax.vmap(lambda v: loss(member_model(base, {field: v}))))(jnp.float32(values))  # noqa: B023 (called within its iteration)
        for value, got in zip(values, np.asarray(traced)):
            static_value = (value,) * 3 if field == "dropout_probs" else value
            want = jax.jit(lambda: loss(build_model(model, ds.schema, 5, **{**small, field: static_value})))()  # noqa: B023 (called within its iteration)
            np.testing.assert_allclose(got, np.asarray(want), rtol=1e-6, err_msg=f"{model}.{field}={value}")
        assert abs(traced[0] - traced[1]) > 1e-4, f"{model}.{field}: the value had no effect"


def test_members_take_their_own_adamw_steps(data):
    """One step (the whole training split is one batch) of 3 members with their own learning
    rate and weight decay equals optax.adamw applied directly with each member's values."""
    ds, train_split, valid = data
    model = build_model("widedeep", ds.schema, 5, mlp_hidden_size=(8,))
    config = TrainConfig(learning_rate=1e-3, batch_size=len(ds.train), max_epochs=1)
    trainer = Trainer(model, LossConfig(lambda_r=0.5), config, len(ds.train), len(ds.valid))
    rates, decays = [1e-3, 1e-2, 1e-2], [0.0, 0.0, 0.5]
    state, stopping = trainer.init(train_split["features"], [7, 7, 7], [0.5] * 3,
                             {"learning_rate": rates, "weight_decay": decays})
    before = jax.tree.map(np.asarray, state.params)
    keys = np.asarray(jax.random.key_data(state.key))  # a host copy: train_epoch donates state
    after, _ = trainer.train_epoch(state, stopping, train_split)
    @jax.jit
    def gradient(params, key):
        _, perm_key, dropout_key = jax.random.split(key, 3)
        index, weight = epoch_batches(perm_key, len(ds.train), len(ds.train))
        batch = jax.tree.map(lambda x: x[index[0]], train_split)
        return jax.grad(lambda p: loss_fn(model, LossConfig(lambda_r=0.5), p, {}, batch, weight[0],
                                          jax.random.fold_in(dropout_key, 0))[0])(params)

    steps = []
    for i, (rate, decay) in enumerate(zip(rates, decays)):
        params = jax.tree.map(lambda x: jnp.asarray(x[i]), before)  # noqa: B023 (called within its iteration)
        grads = gradient(params, jax.random.wrap_key_data(jnp.asarray(keys[i])))
        tx = optax.adamw(rate, weight_decay=decay)  # applied eagerly, outside any lipctr program
        updates, _ = tx.update(grads, tx.init(params), params)
        expected = optax.apply_updates(params, updates)
        for got, want in zip(jax.tree.leaves(after.params), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(np.asarray(got)[i], np.asarray(want), rtol=1e-5, atol=1e-7)
        steps.append(np.concatenate([np.ravel(np.asarray(a)[i] - b[i])
                                     for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(before))]))
    # the first Adam step is about lr per moved coordinate: member 1 steps ~10x member 0
    moved = np.abs(steps[0]) > 0
    np.testing.assert_allclose(np.median(np.abs(steps[1][moved]) / np.abs(steps[0][moved])), 10.0, rtol=0.05)
    assert np.abs(steps[2] - steps[1]).max() > 1e-4  # weight decay changed member 2's step


class FlaxDropped(nn.Module):
    rate: float

    @nn.compact
    def __call__(self, x):
        return nn.Dropout(self.rate, deterministic=False)(nn.Dropout(self.rate, deterministic=False)(x))


class OwnDropped(nn.Module):
    rate: float | jax.Array

    @nn.compact
    def __call__(self, x):
        return Dropout(self.rate)(Dropout(self.rate)(x, False), False)


def test_traced_dropout_is_flax_dropout_bit_for_bit():
    x = jax.random.normal(jax.random.key(0), (200, 500))
    rngs = {"dropout": jax.random.key(3)}
    for rate in (0.1, 0.3, 0.5):
        flax_out = FlaxDropped(rate).apply({}, x, rngs=rngs)
        static = OwnDropped(rate).apply({}, x, rngs=rngs)
        traced = jax.jit(lambda r: OwnDropped(r).apply({}, x, rngs=rngs))(jnp.float32(rate))
        np.testing.assert_array_equal(np.asarray(static), np.asarray(flax_out))
        np.testing.assert_array_equal(np.asarray(traced), np.asarray(flax_out))
        np.testing.assert_allclose(np.mean(np.asarray(traced) != 0), (1 - rate) ** 2, atol=0.005)
    # rate 0: the identity, static (no key drawn) and traced; deterministic: the identity at any rate
    assert np.array_equal(np.asarray(OwnDropped(0.0).apply({}, x)), np.asarray(x))
    traced_zero = jax.jit(lambda r: OwnDropped(r).apply({}, x, rngs=rngs))(jnp.float32(0.0))
    assert np.array_equal(np.asarray(traced_zero), np.asarray(x))
    assert np.array_equal(np.asarray(Dropout(0.5).apply({}, x, True)), np.asarray(x))
    # per member under vmap: each member's own rate
    kept = jax.vmap(lambda r: jnp.mean(OwnDropped(r).apply({}, x, rngs=rngs) != 0))(jnp.array([0.1, 0.6]))
    np.testing.assert_allclose(np.asarray(kept), [0.81, 0.16], atol=0.005)


@pytest.mark.slow  # ~12 s (suite time); test_train checks one compilation per epoch program in the default suite
def test_one_compilation_for_a_grid_of_same_shape_points(data):
    """Three points differing in every per-member key of DCNV2 train as ONE epoch program and
    ONE evaluation program; a second grid of other values reuses them."""
    ds, train_split, valid = data
    keys = ("controls.embedding_l2", "controls.label_smoothing", "model_hparams.dropout_prob",
            "model_hparams.reg_weight", "train.learning_rate", "train.weight_decay")
    config = small_config()
    config["train"].update(members="vmap", max_epochs=1)  # the accelerators' way; "sequential" is covered above
    points = [dict(zip(keys, values)) for values in
              [(0.0, 0.0, 0.2, 2.0, 1e-3, 0.0), (0.01, 0.1, 0.4, 0.5, 3e-3, 0.01), (0.001, 0.2, 0.0, 0.0, 1e-2, 0.1)]]
    trainer = build_trainer(config, ds, "smooth", points=points)
    spec = config_variant(config, "smooth", points)
    members = spec.members([1, 2])
    assert [(m.seed, m.hparams) for m in members[:3]] == [(1, spec.points[0]), (2, spec.points[0]),
                                                          (1, spec.points[1])]  # point-major
    members = spec.members([1])
    hparams = member_values(spec, members, "dcnv2")
    state, stopping = trainer.init(train_split["features"], [1] * 3, [0.7] * 3, hparams)
    records = []
    fit(trainer, state, stopping, train_split, valid, lambda s, e, r: records.append(r))
    other = {name: [v * 0.5 for v in values] for name, values in hparams.items()}
    state, stopping = trainer.init(train_split["features"], [1] * 3, [0.7] * 3, other)
    state, stats = trainer.train_epoch(state, stopping, train_split)
    trainer.evaluate(state, stopping, stats, valid)
    assert trainer.trace_counts == {"epoch": 1, "evaluate": 1}
    assert trainer.train_epoch._cache_size() == 1 and trainer.evaluate._cache_size() == 1
    assert len(set(np.round(records[-1].stats.loss, 5))) == 3  # every member trained differently


def test_member_hparam_names_and_per_member_keys():
    assert member_hparam("train.learning_rate", "nfm") == "learning_rate"
    assert member_hparam("loss.lambda_r", "nfm") == "lambda_r"
    assert member_hparam("controls.embedding_l2", "nfm") == "embedding_l2"
    assert member_hparam("model_hparams.reg_weight", "dcnv2") == "reg_weight"
    assert member_hparam("model_hparams.reg_weight", "nfm") is None  # NFM has no explicit L2 term
    assert member_hparam("model_hparams.drop_im", "eulernet") == "drop_im"
    assert member_hparam("model_hparams.attn_dropout_prob", "fignn") == "attn_dropout_prob"
    for shape_key in ("model_hparams.embedding_dim", "model_hparams.mlp_hidden_size", "train.batch_size",
                      "model_hparams.cross_layer_num", "loss.aggregation", "controls.rating_classes"):
        assert member_hparam(shape_key, "dcnv2") is None
    for model in MODEL_NAMES:  # every backbone has at least one per-member dropout rate
        assert any("drop" in key for key in per_member_keys(model)), model
    assert grid_points({"a": [1, 2], "b": [3, 4, 5]})[:4] == [{"a": 1, "b": 3}, {"a": 1, "b": 4},
                                                              {"a": 1, "b": 5}, {"a": 2, "b": 3}]
    assert grid_points({}) == [{}]
    net = build_model("nfm", tiny_dataset(num_interactions=50).schema, 1, mlp_hidden_size=(4,))
    check_names(net, ["learning_rate", "dropout_prob", "label_smoothing"])
    for name in ("learning_rat", "reg_weight", "embedding_l2"):  # a typo; NFM has no L2 term; not controlled
        with pytest.raises(ValueError, match=f"member hyper-parameter '{name}'"):
            check_names(net, [name])
    assert stacked_values([(("train.learning_rate", 0.1),), (("train.learning_rate", 0.2),)], "nfm") == {
        "learning_rate": [0.1, 0.2]}


def test_grid_labels_and_bad_grids():
    config = small_config()
    plain = config_variant(config, "smooth")
    assert [m.label(plain.sweep) for m in plain.members([1])] == ["seed1"]  # today's labels
    grid = {**config, "grid": {"train.learning_rate": [1e-3, 5e-3], "train.weight_decay": [1e-4]}}
    spec = config_variant(grid, "smooth")
    assert [m.label(spec.sweep) for m in spec.members([1, 2])] == [
        "seed1_lr0.001_wd0.0001", "seed2_lr0.001_wd0.0001", "seed1_lr0.005_wd0.0001", "seed2_lr0.005_wd0.0001"]
    assert spec.member_point(spec.members([1])[1]) == {"train.learning_rate": 5e-3, "train.weight_decay": 1e-4}
    lam = config_variant({**config, "grid": {"loss.lambda_r": [0.1, 0.9]}}, "smooth")
    assert [(m.label(lam.sweep), m.lambda_r, m.hparams) for m in lam.members([1])] == [
        ("seed1_lambda0.1", 0.1, ()), ("seed1_lambda0.9", 0.9, ())]
    assert lam.member_point(lam.members([1])[0]) == {"loss.lambda_r": 0.1}
    with pytest.raises(ValueError, match="grid model_hparams.embedding_dim: not a per-member"):
        config_variant({**config, "grid": {"model_hparams.embedding_dim": [4, 8]}}, "smooth")
    with pytest.raises(ValueError, match="grid loss.lambda_r: orig trains with lambda_r = 0 only"):
        config_variant({**config, "grid": {"loss.lambda_r": [0.1]}}, "orig")
    with pytest.raises(ValueError, match=r"grid model_hparams.dropout_prob: 1.0 must lie in \[0, 1\)"):
        config_variant({**config, "grid": {"model_hparams.dropout_prob": [0.1, 1.0]}}, "smooth")
    with pytest.raises(ValueError, match=r"grid train.learning_rate: 0.0 must lie in \(0, inf\)"):
        config_variant(config, "smooth", points=[{"train.learning_rate": 0.0}])
    with pytest.raises(ValueError, match="do not all differ"):
        config_variant({**config, "grid": {"train.learning_rate": [1e-3, 1.0000001e-3]}}, "smooth")
    with pytest.raises(ValueError, match="a lambda_r sweep sets it too"):
        config_variant({**config, "lambda_sweep": [0.1, 0.5], "grid": {"loss.lambda_r": [0.3]}}, "smooth")


def test_saved_state_keeps_the_resumable_fields_of_before_grids():
    """Checkpoints hold SavedState, whose fields are the TrainState of before per-member
    hyper-parameters, so unfinished runs of then still restore."""
    assert SavedState._fields == ("params", "model_state", "opt_state", "key", "lambda_r", "epoch")


@pytest.mark.slow  # ~11 s (suite time); test_reliability runs grids through the CLI in the default suite
def test_grid_run_outputs_and_a_changed_grid_is_refused(tmp_path):
    ds = tiny_dataset(num_interactions=800)
    candidates = ranking_candidates(ds, "test", 10, 0, "positive")
    config = {**small_config(), "eval": {**small_config()["eval"], "num_negatives": 10},
              "grid": {"model_hparams.dropout_prob": [0.1, 0.3]}}
    config["train"]["max_epochs"] = 1
    final = run_variant(config, ds, "smooth", tmp_path, candidates, progress=False)
    assert [m["member"] for m in final["members"]] == ["seed2020_dropout_prob0.1", "seed2020_dropout_prob0.3"]
    assert [m["hparams"] for m in final["members"]] == [{"model_hparams.dropout_prob": 0.1},
                                                       {"model_hparams.dropout_prob": 0.3}]
    assert list(final["summary"]) == ["dropout_prob0.1", "dropout_prob0.3"]
    schema = json.loads((tmp_path / "smooth" / "run_schema.json").read_text())
    assert [m["hparams"] for m in schema["members"]] == [m["hparams"] for m in final["members"]]
    assert (tmp_path / "smooth" / "checkpoints" / "seed2020_dropout_prob0.3").is_dir()
    changed = {**config, "grid": {"model_hparams.dropout_prob": [0.1, 0.5]}}
    with pytest.raises(RunDirError, match="holds members"):
        run_variant(changed, ds, "smooth", tmp_path, candidates, progress=False)
