"""Sparse embedding optimizers (lipctr.embedding_optim): the touched-rows-only step equals a
dense reference of the same optimiser (rowwise_adagrad, sgd) and a numpy lazy-Adam, on a model
with a token_seq field; per-member learning rates; bf16; refusals naming the key."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs import ConfigError, named_config, validate
from lipctr.embedding_optim import (
    ADAGRAD_EPS,
    EmbeddingError,
    RowOptimizer,
    compact_ids,
    get_path,
    set_paths,
    table_paths,
)
from lipctr.losses import LossConfig
from lipctr.models import build_model
from lipctr.train import TrainConfig, embedding_grad_norm, init_members, loss_fn, make_optimizer, to_device, train_step
from lipctr.trainer import Trainer, fit
from tests.tiny_data import tiny_dataset

LOSS = LossConfig(lambda_r=0.5)
STEPS, BATCH = 4, 64


@pytest.fixture(scope="module")
def setup():
    """WideDeep (embedding + first-order tables, dropout on) on the tiny data (genre: token_seq)."""
    ds = tiny_dataset(num_interactions=800)
    model = build_model("widedeep", ds.schema, 5, mlp_hidden_size=(16,), dropout_prob=0.2)
    train = to_device(ds.train)
    params = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                        jax.tree.map(lambda x: x[:2], train["features"]), deterministic=True)["params"]
    batches = [jax.tree.map(lambda x: x[i * BATCH:(i + 1) * BATCH], train) for i in range(STEPS)]  # noqa: B023 (called within its iteration)
    return ds, model, params, batches


def sparse_run(model, params, batches, config: TrainConfig, dtype="float32"):
    """(params, [grads of each step]) after STEPS train_steps with make_optimizer(config)."""
    tx = make_optimizer(config, model=model)
    step = jax.jit(lambda p, o, b, k: train_step(model, LOSS, tx, p, {}, o, b, jnp.ones(BATCH), k, dtype))
    opt_state, all_grads = tx.init(params), []
    for i, batch in enumerate(batches):
        params, _, opt_state, _, grads = step(params, opt_state, batch, jax.random.key(10 + i))
        all_grads.append(grads)
    return params, opt_state, all_grads


def touched_ids(ds, batch, field: str) -> np.ndarray:
    ids = np.asarray(batch["features"][field]).ravel()
    return np.unique(np.concatenate([[0], ids]) if ds.schema[field].kind == "token_seq" else ids)


def reference_run(ds, model, params, batches, name: str, lr: float, wd: float):
    """The same steps with dense gradients: AdamW (optax) for the non-table params, and for every
    table a numpy rowwise-Adagrad / SGD on the dense [vocab, w] gradient, or a numpy lazy Adam on
    the rows of the batch's ids. Returns (params, dense table grads of each step)."""
    paths = table_paths(model.schema, params)
    tx = optax.adamw(lr, weight_decay=wd)
    opt_state = tx.init(params)
    tables = {p: np.asarray(get_path(params, p), np.float64) for p in paths}
    state = {p: (np.zeros_like(t), np.zeros_like(t), np.zeros(len(t))) for p, t in tables.items()}
    grad_fn = jax.jit(jax.grad(lambda p, b, k: loss_fn(model, LOSS, p, {}, b, jnp.ones(BATCH), k)[0]))
    all_grads = []
    for i, batch in enumerate(batches):
        grads = grad_fn(params, batch, jax.random.key(10 + i))
        all_grads.append(grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        for p in paths:
            g, w = np.asarray(get_path(grads, p), np.float64), tables[p]
            m, v, acc = state[p]
            if name == "sgd":
                w -= lr * (g + wd * w)
            elif name == "rowwise_adagrad":
                acc += np.mean(g * g, axis=1)
                w -= lr * (g / (np.sqrt(acc)[:, None] + ADAGRAD_EPS) + wd * w)
            else:
                rows, t = touched_ids(ds, batch, p[-2]), i + 1
                m[rows] = 0.9 * m[rows] + 0.1 * g[rows]
                v[rows] = 0.999 * v[rows] + 0.001 * g[rows] ** 2
                step = (m[rows] / (1 - 0.9 ** t)) / (np.sqrt(v[rows] / (1 - 0.999 ** t)) + 1e-8)
                w[rows] -= lr * (step + wd * w[rows])
        params = set_paths(params, paths, [jnp.asarray(tables[p], jnp.float32) for p in paths])
    return params, tables, all_grads


@pytest.mark.parametrize("name, lr, wd", [("rowwise_adagrad", 0.05, 0.0), ("sgd", 0.5, 0.0),
                                          ("lazy_adam", 0.01, 0.0), ("lazy_adam", 0.01, 0.1)])
def test_sparse_step_equals_its_dense_reference(setup, name, lr, wd):
    ds, model, params, batches = setup
    config = TrainConfig(learning_rate=lr, weight_decay=wd, embedding_optimizer=name)
    sparse, _, sparse_grads = sparse_run(model, params, batches, config)
    dense, tables, dense_grads = reference_run(ds, model, params, batches, name, lr, wd)
    paths = table_paths(model.schema, params)
    assert len(paths) == 6  # 3 fields x (embedding, wide first-order)
    for path, table in tables.items():
        np.testing.assert_allclose(np.asarray(get_path(sparse, path)), table, atol=1e-6, rtol=0)
        seen = np.unique(np.concatenate([touched_ids(ds, b, path[-2]) for b in batches]))
        untouched = np.setdiff1d(np.arange(len(table)), seen)
        assert len(untouched) > 0 or path[-2] == "genre"
        np.testing.assert_array_equal(np.asarray(get_path(sparse, path))[untouched],
                                      np.asarray(get_path(params, path))[untouched])
    # AdamW layers: the same as dense AdamW. Adam's step m / sqrt(v) is scale-free, so a gradient
    # element that is a near-cancelling sum takes the float32 rounding of its summation order to the
    # step at relative size (seen: 1.5e-5 once, in one of 768 elements at lr 0.5); a wrong update
    # would be off by O(lr) per step, so the tolerance is 1e-5 of the largest possible movement.
    adam_atol = 1e-5 * lr * STEPS
    for path, leaf in jax.tree_util.tree_flatten_with_path(sparse)[0]:
        keys = tuple(k.key for k in path)
        if keys not in tables:
            np.testing.assert_allclose(np.asarray(leaf), np.asarray(get_path(dense, keys)), atol=adam_atol, rtol=0)
    for s, d in zip(sparse_grads, dense_grads):  # the logged norms: row gradients give the dense value
        for field in ("user_id", "item_id"):
            np.testing.assert_allclose(embedding_grad_norm(s, field), embedding_grad_norm(d, field), rtol=1e-5)
        assert get_path(s, ("embedding", "tables", "user_id", "embedding")).shape == (BATCH, 16)


def test_compact_ids_keep_padding_at_zero_and_invert_to_the_batch(setup):
    ds, _, _, batches = setup
    features = batches[0]["features"]
    unique, local, schema = compact_ids(ds.schema, features)
    for field in ("user_id", "item_id", "genre"):
        ids = np.asarray(features[field])
        np.testing.assert_array_equal(np.asarray(unique[field])[np.asarray(local[field])], ids)
        assert schema[field].vocab_size == ids.size + (field == "genre")
        filled = np.asarray(unique[field])
        padding = {0} if field == "genre" else set()
        assert set(filled[filled < ds.schema[field].vocab_size]) == set(ids.ravel()) | padding
    assert np.asarray(unique["genre"])[0] == 0
    assert np.all(np.asarray(local["genre"])[np.asarray(features["genre"]) == 0] == 0)


@pytest.mark.slow  # ~16 s a mode (suite time); the sparse step itself is checked in the default suite
@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_members_with_their_own_learning_rates_take_their_own_steps(mode):
    ds = tiny_dataset(num_interactions=600)
    train, valid = to_device(ds.train), to_device(ds.valid)
    model = build_model("widedeep", ds.schema, 5, mlp_hidden_size=(8,))

    config = TrainConfig(batch_size=128, max_epochs=1, patience=9, members=mode, embedding_optimizer="rowwise_adagrad")
    trainer = Trainer(model, LOSS, config, len(ds.train), len(ds.valid))  # one member runs alone in any mode

    def run(rates):
        state, stopping = trainer.init(train["features"], [2020] * len(rates), [0.5] * len(rates),
                                       {"learning_rate": rates})
        state, _ = fit(trainer, state, stopping, train, valid)
        return state.params

    both = run([0.003, 0.05])
    alone = [run([rate]) for rate in (0.003, 0.05)]
    for i in range(2):
        for a, b in zip(jax.tree.leaves(both), jax.tree.leaves(alone[i])):
            np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b)[0], atol=2e-5, err_msg=mode)
    user = [np.asarray(p["embedding"]["tables"]["user_id"]["embedding"]) for p in alone]
    assert np.abs(user[0] - user[1]).max() > 1e-2  # the two rates moved the rows differently


@pytest.mark.slow
def test_members_with_their_own_embedding_learning_rates_equal_each_alone():
    ds = tiny_dataset(num_interactions=600)
    train, valid = to_device(ds.train), to_device(ds.valid)
    model = build_model("widedeep", ds.schema, 5, mlp_hidden_size=(8,))

    def run(hparams, rate=0.0):
        config = TrainConfig(batch_size=128, max_epochs=2, patience=9, members="sequential",
                             embedding_optimizer="rowwise_adagrad", embedding_learning_rate=rate)
        trainer = Trainer(model, LOSS, config, len(ds.train), len(ds.valid))
        seeds = [2020] * len(next(iter(hparams.values()), [0]))
        state, stopping = trainer.init(train["features"], seeds, [0.5] * len(seeds), hparams)
        return fit(trainer, state, stopping, train, valid)[0].params

    both = run({"embedding_learning_rate": [0.01, 0.2]})
    for i, rate in enumerate((0.01, 0.2)):
        for a, b in zip(jax.tree.leaves(both), jax.tree.leaves(run({}, rate))):
            np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b)[0], atol=2e-5)


def test_a_grid_over_the_embedding_learning_rate_needs_a_sparse_optimizer():
    config = named_config("widedeep_ml100k")
    config["grid"] = {"train.embedding_learning_rate": [0.01, 0.2]}
    with pytest.raises(ConfigError, match="applies to a sparse train.embedding_optimizer"):
        validate(config)
    config["train"]["embedding_optimizer"] = "rowwise_adagrad"
    assert validate(config)["grid"] == {"train.embedding_learning_rate": [0.01, 0.2]}


def test_bf16_sparse_step_keeps_float32_state_and_tracks_float32_gradients(setup):
    ds, model, params, batches = setup
    config = TrainConfig(learning_rate=0.01, embedding_optimizer="lazy_adam")
    _, _, g32 = sparse_run(model, params, batches, config)
    p16, o16, g16 = sparse_run(model, params, batches, config, "bfloat16")
    floats = {x.dtype for x in jax.tree.leaves((p16, o16, g16)) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}
    for path in table_paths(model.schema, params):  # step 1: the same params, row gradients agree
        a, b = (np.asarray(get_path(g[0], path)).ravel() for g in (g16, g32))
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


class OwnModel(nn.Module):
    @nn.compact
    def __call__(self, features, deterministic=True):
        return nn.Dense(1)(nn.Embed(10, 4)(features["user_id"]))


def test_a_model_without_the_built_in_tables_is_refused_in_one_line():
    with pytest.raises(EmbeddingError, match=r"^train.embedding_optimizer 'lazy_adam' needs a lipctr CTRModel.*"
                                             r"OwnModel has no schema: use train.embedding_optimizer 'adamw'$"):
        make_optimizer(TrainConfig(embedding_optimizer="lazy_adam"), model=OwnModel())
    assert isinstance(make_optimizer(TrainConfig(), model=OwnModel()), optax.GradientTransformation)


def test_default_optimizer_state_is_optax_adamw():
    ds = tiny_dataset(num_interactions=300)
    model = build_model("widedeep", ds.schema, 1, mlp_hidden_size=(8,))
    features = to_device(ds.train)["features"]
    tx = make_optimizer(TrainConfig(), model=model)
    assert not isinstance(tx, RowOptimizer)
    state = init_members(model, tx, features, [1], [0.0])
    reference = jax.vmap(optax.adamw(1e-3, weight_decay=0.0).init)(state.params)
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(reference)


@pytest.mark.parametrize("train, message", [
    ({"embedding_optimizer": "adagrad"}, "key 'train.embedding_optimizer' must be one of adamw, lazy_adam, "
                                         "rowwise_adagrad, sgd, got 'adagrad'"),
    ({"embedding_learning_rate": -1.0}, "key 'train.embedding_learning_rate' must be >= 0"),
    ({"embedding_learning_rate": 0.1}, "key 'train.embedding_learning_rate' applies to a sparse"),
])
def test_bad_embedding_optimizer_keys_are_named(train, message):
    config = named_config("widedeep_ml100k")
    config["train"].update(train)
    with pytest.raises(ConfigError, match=f"^my.toml: {message}"):
        validate(config, source="my.toml")


def test_grid_programs_over_the_embedding_optimizer_validate():
    from experiments.configs.grid import parse_flag

    assert parse_flag("--grid-programs", "train.embedding_optimizer=adamw, lazy_adam") == (
        "train.embedding_optimizer", ["adamw", "lazy_adam"])
    config = named_config("widedeep_ml100k")
    config["grid_programs"] = {"train.embedding_optimizer": ["adamw", "lazy_adam", "rowwise_adagrad", "sgd"]}
    assert validate(config)["grid_programs"]["train.embedding_optimizer"][1] == "lazy_adam"
    config["grid_programs"] = {"train.embedding_optimizer": ["adamw", "adam"]}
    with pytest.raises(ConfigError, match="grid_programs key 'train.embedding_optimizer' value 'adam': key "
                                          "'train.embedding_optimizer' must be one of"):
        validate(config, source="x")


def _eqns(jaxpr):
    """Every equation of a jaxpr, sub-jaxprs (jit, custom derivatives, scan, cond) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _eqns(inner)


def test_only_the_row_scatters_touch_vocabulary_sized_arrays():
    """The cost of a sparse step does not grow with the vocabulary: of all its operations only the
    scatters of the updated rows (into the tables and their state) produce a vocab-sized array;
    dense AdamW computes on every row."""
    vocab = 100_003  # no other dimension has this size
    ds = tiny_dataset(num_users=vocab - 1, num_interactions=300)
    model = build_model("widedeep", ds.schema, 5, mlp_hidden_size=(8,))
    batch = jax.tree.map(lambda x: x[:BATCH], to_device(ds.train))
    params = model.init({"params": jax.random.key(0)}, batch["features"], deterministic=True)["params"]

    def big_ops(name):
        tx = make_optimizer(TrainConfig(embedding_optimizer=name), model=model)
        jaxpr = jax.make_jaxpr(lambda p, o: train_step(model, LOSS, tx, p, {}, o, batch, jnp.ones(BATCH),
                                                       jax.random.key(0), frozen=jnp.bool_(False)))(
            params, tx.init(params))
        return [e.primitive.name for e in _eqns(jaxpr.jaxpr) if any(vocab in getattr(v.aval, "shape", ())
                                                                   for v in e.outvars)]

    for name, scatters in (("lazy_adam", 6), ("rowwise_adagrad", 4), ("sgd", 2)):  # 2 user tables x (rows + state)
        assert big_ops(name) == ["scatter"] * scatters, name
    assert len(big_ops("adamw")) > 20


@pytest.mark.slow  # ~7 s (suite time)
def test_a_stopped_member_keeps_its_whole_state_under_a_sparse_optimizer():
    ds = tiny_dataset(num_interactions=600)
    train = to_device(ds.train)
    model = build_model("widedeep", ds.schema, 5, mlp_hidden_size=(8,))
    config = TrainConfig(batch_size=128, embedding_optimizer="lazy_adam")
    trainer = Trainer(model, LOSS, config, len(ds.train), len(ds.valid))
    state, stopping = trainer.init(train["features"], [2020, 2021], [0.5, 0.5])
    before = jax.tree.map(np.asarray, state.saved())  # train_epoch donates the state
    stopping = stopping._replace(stopped=jnp.array([True, False]))
    after, _ = trainer.train_epoch(state, stopping, train)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after.saved()), strict=True):
        np.testing.assert_array_equal(a[0], np.asarray(b)[0])
    moved = before.params["embedding"]["tables"]["user_id"]["embedding"][1]
    assert not np.array_equal(moved, np.asarray(after.params["embedding"]["tables"]["user_id"]["embedding"])[1])


def _backbone_case(name):
    from lipctr.models import default_hparams

    small = {"mlp_hidden_size": (16,), "cin_layer_size": (8,), "mlp1_hidden_units": (16,), "mlp2_hidden_units": (8,),
             "fs_hidden_units": (8,), "dnn_hidden_units": (16,), "reg_weight": 0.0}  # a penalty on the tables
    defaults = default_hparams(name)  # reads all rows under "adamw", only the batch's under a sparse one
    return {k: v for k, v in small.items() if k in defaults}


FAST_BACKBONES = ("xdeepfm",)  # its penalty reads the first-order tables


@pytest.mark.parametrize("name, extra", [
    *[pytest.param(n, {}, id=n, marks=() if n in FAST_BACKBONES else pytest.mark.slow)
      for n in __import__("lipctr.models", fromlist=["MODEL_NAMES"]).MODEL_NAMES],
    pytest.param("xdeepfm", {"first_order_pooling": "sum"}, id="xdeepfm-first_order_pooling=sum"),
])
def test_every_backbone_gets_the_dense_gradient_from_its_rows(name, extra):
    """For every registered backbone the sparse step's gradients (dense layers, and the row
    gradients scattered back into tables) equal the dense gradient, dropout and batch-norm on;
    also with the first-order term summing the token_seq field's weights (padding id 0 at
    compact index 0 is masked out of the sum as out of the mean)."""
    ds = tiny_dataset(num_interactions=400)
    model = build_model(name, ds.schema, 5, **_backbone_case(name), **extra)
    batch = jax.tree.map(lambda x: x[:BATCH], to_device(ds.train))
    variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, batch["features"],
                           deterministic=True)
    params, state = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    key, weight = jax.random.key(3), jnp.ones(BATCH)
    dense = jax.jit(jax.grad(lambda p: loss_fn(model, LOSS, p, state, batch, weight, key)[0]))(params)
    tx = make_optimizer(TrainConfig(embedding_optimizer="sgd"), model=model)
    rows = jax.jit(lambda p: train_step(model, LOSS, tx, p, state, tx.init(p), batch, weight, key)[4])(params)
    unique, _, _ = compact_ids(model.schema, batch["features"])
    paths = table_paths(model.schema, params)
    assert paths
    for path, leaf in jax.tree_util.tree_flatten_with_path(dense)[0]:
        keys, expected = tuple(k.key for k in path), np.asarray(leaf)
        got = np.asarray(get_path(rows, keys))
        if keys in paths:
            ids, scattered = np.asarray(unique[keys[-2]]), np.zeros_like(expected)
            np.add.at(scattered, ids[ids < len(expected)], got[ids < len(expected)])
            got = scattered
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=1e-5, err_msg=f"{name} {keys}")
