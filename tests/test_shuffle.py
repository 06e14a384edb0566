"""train.shuffle: the "feistel" order is a bijection of [0, n) for every n, chosen by the key, and
statistically a fair shuffle; "sort" is jax.random.permutation bit for bit (earlier runs keep their
bits); both reach training and the sharded placement."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from experiments.configs import ConfigError, named_config, validate
from lipctr.losses import LossConfig
from lipctr.models import build_model
from lipctr.sharding import shard_batch, shard_batches
from lipctr.shuffle import epoch_order, feistel_permutation
from lipctr.train import TrainConfig, epoch_batch, epoch_batches, to_device
from lipctr.trainer import Trainer, fit
from tests.tiny_data import tiny_dataset


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 65, 1000, 4097, 100_003])
def test_feistel_is_a_bijection_of_the_range(n):
    order = np.asarray(feistel_permutation(jax.random.key(n), n, jnp.arange(n)))
    assert order.dtype == np.int32
    np.testing.assert_array_equal(np.sort(order), np.arange(n))


def test_feistel_depends_on_the_key_only():
    positions = jnp.arange(5000)
    a = np.asarray(feistel_permutation(jax.random.key(0), 5000, positions))
    np.testing.assert_array_equal(a, np.asarray(feistel_permutation(jax.random.key(0), 5000, positions)))
    b = np.asarray(feistel_permutation(jax.random.key(1), 5000, positions))
    assert (a == b).mean() < 0.01  # two keys: about n * (1/n) common positions
    # evaluated at a subset of positions, the same values as the whole order there
    np.testing.assert_array_equal(np.asarray(feistel_permutation(jax.random.key(0), 5000, positions[::7])), a[::7])


def test_feistel_positions_are_uniform_over_keys():
    """For n = 10 over 3,000 keys: where each element lands is uniform (chi-square per element),
    and the number of fixed points has mean and variance 1 (as for uniform random permutations)."""
    n, keys = 10, 3000
    orders = np.asarray(jax.vmap(lambda k: feistel_permutation(k, n, jnp.arange(n)))(
        jax.random.split(jax.random.key(7), keys)))
    for element in range(n):
        counts = np.bincount(np.argmax(orders == element, axis=1), minlength=n)
        assert stats.chisquare(counts).pvalue > 1e-4, (element, counts)
    fixed = (orders == np.arange(n)).sum(axis=1)
    assert abs(fixed.mean() - 1) < 0.1 and abs(fixed.var() - 1) < 0.2
    # order of a pair: element 0 before element 1 half the time
    assert abs((np.argmax(orders == 0, axis=1) < np.argmax(orders == 1, axis=1)).mean() - 0.5) < 0.04


def test_feistel_order_has_no_visible_structure():
    """One key, n = 100,003: the order is uncorrelated with the position, and neighbours are not
    close (a shift or a stride would fail both)."""
    n = 100_003
    order = np.asarray(feistel_permutation(jax.random.key(11), n, jnp.arange(n)), np.float64)
    assert abs(stats.spearmanr(np.arange(n), order).statistic) < 0.02
    gaps = np.abs(np.diff(order))
    assert abs(gaps.mean() / (n / 3) - 1) < 0.02  # E|U - V| = n / 3 for independent uniforms


def test_sort_is_jax_random_permutation():
    key, positions = jax.random.key(3), jnp.arange(1152) % 1000
    np.testing.assert_array_equal(np.asarray(epoch_order(key, 1000, positions, "sort")),
                                  np.asarray(jax.random.permutation(key, 1000)[positions]))
    with pytest.raises(ValueError, match="train.shuffle"):
        epoch_order(key, 1000, positions, "random")


@pytest.mark.parametrize("shuffle", ["sort", "feistel"])
def test_epoch_batches_and_shards_cover_every_example_once(shuffle):
    indices, weights = map(np.asarray, epoch_batches(jax.random.key(3), 1000, 384, shuffle))
    np.testing.assert_array_equal(np.bincount(indices.ravel(), weights=weights.ravel(), minlength=1000),
                                  np.ones(1000))
    index, weights = map(np.asarray, shard_batches(jax.random.key(4), 250, 96, 4, shuffle))
    assert index.shape == weights.shape == (11, 4, 24)  # ceil(250 / (96 // 4)) batches
    for shard in range(4):
        np.testing.assert_array_equal(
            np.bincount(index[:, shard].ravel(), weights=weights[:, shard].ravel(), minlength=250), np.ones(250))


@pytest.mark.parametrize("shuffle", ["sort", "feistel"])
def test_one_batch_alone_is_that_batch_of_the_epoch(shuffle):
    """epoch_batch / shard_batch (what a feistel epoch computes in each step) equal the rows of the
    whole epoch's epoch_batches / shard_batches, the last batch's weight-0 fillers included."""
    key = jax.random.key(5)
    indices, weights = map(np.asarray, epoch_batches(key, 1000, 384, shuffle))
    for b in range(indices.shape[0]):
        index, weight = map(np.asarray, jax.jit(epoch_batch, static_argnums=(1, 2, 4))(key, 1000, 384, b, shuffle))
        np.testing.assert_array_equal(index, indices[b])
        np.testing.assert_array_equal(weight, weights[b])
    index, weights = map(np.asarray, shard_batches(key, 250, 96, 4, shuffle))
    for b in range(index.shape[0]):
        one, weight = map(np.asarray, shard_batch(key, 250, 96, 4, jnp.int32(b), shuffle))
        np.testing.assert_array_equal(one, index[b])
        np.testing.assert_array_equal(weight, weights[b])


def test_the_trainer_epoch_uses_the_configured_shuffle():
    """TrainConfig.shuffle reaches the epoch program: "sort" sorts and cuts the epoch's order into
    batches, "feistel" has no sort at all (WideDeep with dense AdamW sorts nothing else) and no
    epoch-sized array of indices. Traced only, not compiled."""
    ds = tiny_dataset()
    train = to_device(ds.train)
    net = build_model("widedeep", ds.schema, 5, mlp_hidden_size=(16, 16))
    trainers = {shuffle: Trainer(net, LossConfig(lambda_r=0.5), TrainConfig(batch_size=512, shuffle=shuffle),
                                 len(ds.train), len(ds.valid)) for shuffle in ("sort", "feistel")}
    state, stopping = trainers["sort"].init(train["features"], [2020], [0.5])  # the same state for both
    epoch_indices = f"i32[{-(-len(ds.train) // 512)},512]"  # epoch_batches' [num_batches, batch_size]
    for shuffle, whole_epoch in (("sort", True), ("feistel", False)):
        program = str(jax.make_jaxpr(trainers[shuffle].train_epoch)(state, stopping, train))
        assert ("sort[" in program) == whole_epoch, shuffle
        assert (epoch_indices in program) == whole_epoch, shuffle  # feistel: each step computes its own batch


@pytest.mark.slow  # ~25 s: two trainings; test_the_trainer_epoch_uses_the_configured_shuffle is its fast twin
def test_feistel_trains_and_differs_from_sort_only_in_order():
    ds = tiny_dataset()
    train, valid = to_device(ds.train), to_device(ds.valid)
    results = {}
    for shuffle in ("sort", "feistel"):
        net = build_model("widedeep", ds.schema, 5, mlp_hidden_size=(16, 16))
        config = TrainConfig(learning_rate=5e-3, batch_size=512, max_epochs=3, patience=10, shuffle=shuffle)
        trainer = Trainer(net, LossConfig(lambda_r=0.5), config, len(ds.train), len(ds.valid))
        state, stopping = trainer.init(train["features"], [2020, 2021], [0.5, 0.5])
        records = []
        fit(trainer, state, stopping, train, valid, lambda s, e, r: records.append(r))  # noqa: B023 (called within its iteration)
        results[shuffle] = np.array([r.valid_auc for r in records])  # [epochs, members]
    assert results["feistel"].shape == results["sort"].shape
    assert np.all(np.isfinite(results["feistel"])) and results["feistel"][-1].min() > 0.5
    assert not np.array_equal(results["feistel"], results["sort"])


def test_config_key_is_validated():
    config = named_config("widedeep_ml100k")
    assert config["train"]["shuffle"] == "sort"
    assert validate({**config, "train": {**config["train"], "shuffle": "feistel"}})["train"]["shuffle"] == "feistel"
    with pytest.raises(ConfigError, match="train.shuffle' must be one of sort, feistel"):
        validate({**config, "train": {**config["train"], "shuffle": "random"}})
