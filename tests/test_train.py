"""The training engine: ensemble = independent runs, one compilation, no host transfers, batching."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from lipctr.losses import LossConfig
from lipctr.models import build_model
from lipctr.train import TrainConfig, epoch_batches, to_device
from lipctr.trainer import Trainer, fit
from tests.tiny_data import tiny_dataset

SEEDS = [2020, 2021, 2022, 2023, 2024]


@pytest.fixture(scope="module")
def data():
    ds = tiny_dataset()
    return ds, to_device(ds.train), to_device(ds.valid)


def make_trainer(ds, num_outputs=5, max_epochs=3, patience=10, model="widedeep"):
    net = build_model(model, ds.schema, num_outputs, mlp_hidden_size=(16, 16)) if model == "widedeep" else \
        build_model(model, ds.schema, num_outputs)
    config = TrainConfig(learning_rate=5e-3, batch_size=512, max_epochs=max_epochs, patience=patience)
    return Trainer(net, LossConfig(lambda_r=0.5), config, len(ds.train), len(ds.valid))


@pytest.fixture(scope="module")
def trainer3(data):
    return make_trainer(data[0])


def run(trainer, train, valid, seeds, lambdas=None):
    state, stopping = trainer.init(train["features"], seeds, lambdas or [0.5] * len(seeds))
    records = []
    state, stopping = fit(trainer, state, stopping, train, valid, lambda s, e, r: records.append(r))
    return trainer, state, stopping, records


def test_epoch_batches_cover_every_example_once():
    indices, weights = epoch_batches(jax.random.key(3), 1000, 384)
    indices, weights = np.asarray(indices), np.asarray(weights)
    assert indices.shape == weights.shape == (3, 384)
    counts = np.bincount(indices.ravel(), weights=weights.ravel(), minlength=1000)
    np.testing.assert_array_equal(counts, np.ones(1000))
    assert weights.sum() == 1000


@pytest.mark.slow  # ~30 s; test_models checks vmap == loop per backbone in the default suite
def test_ensemble_equals_independent_runs(data, trainer3):
    ds, train, valid = data
    _, _, es_all, rec_all = run(trainer3, train, valid, SEEDS)
    for i, seed in enumerate(SEEDS):
        _, _, es_one, rec_one = run(trainer3, train, valid, [seed])
        np.testing.assert_allclose(rec_all[-1].valid_auc[i], rec_one[-1].valid_auc[0], atol=1e-5)
        np.testing.assert_allclose(rec_all[-1].stats.loss[i], rec_one[-1].stats.loss[0], atol=1e-5)
        np.testing.assert_allclose(np.asarray(es_all.best_auc)[i], np.asarray(es_one.best_auc)[0], atol=1e-5)
    # different seeds really are different members
    assert len(set(np.round(rec_all[-1].valid_auc, 6))) == len(SEEDS)


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_lambda_is_a_member_axis(data, trainer3):
    ds, train, valid = data
    _, _, _, rec = run(trainer3, train, valid, [2020, 2020], lambdas=[0.1, 0.9])
    _, _, _, rec_one = run(trainer3, train, valid, [2020], lambdas=[0.9])
    np.testing.assert_allclose(rec[-1].stats.loss[1], rec_one[-1].stats.loss[0], atol=1e-5)
    assert abs(rec[-1].stats.loss[0] - rec[-1].stats.loss[1]) > 1e-3


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_vmapped_and_sequential_members_agree(data):
    """Both ways of computing the member axis (over_members) train the same ensemble; one member
    runs without a member axis at all and still matches."""
    ds, train, valid = data
    records = {}
    for mode in ("vmap", "sequential"):
        trainer = make_trainer(ds, max_epochs=2)
        trainer = Trainer(trainer.model, trainer.loss_config, dataclasses.replace(trainer.config, members=mode),
                          len(ds.train), len(ds.valid))
        assert trainer.sequential == (mode == "sequential")
        records[mode] = run(trainer, train, valid, SEEDS[:3])[3]
    for a, b in zip(records["vmap"], records["sequential"]):
        np.testing.assert_allclose(a.stats.loss, b.stats.loss, atol=1e-5)
        np.testing.assert_allclose(a.valid_auc, b.valid_auc, atol=1e-5)
    assert len(set(np.round(records["vmap"][-1].valid_auc, 6))) == 3


def test_unknown_members_mode_is_rejected(data):
    ds = data[0]
    net = build_model("widedeep", ds.schema, 1, mlp_hidden_size=(8,))
    with pytest.raises(ValueError, match="train.members must be one of"):
        Trainer(net, LossConfig(), TrainConfig(members="threads"), len(ds.train), len(ds.valid))


def test_one_compilation_and_no_transfers_inside_an_epoch(data):
    ds, train, valid = data
    trainer = make_trainer(ds, model="dcnv2")  # batch-norm: a mutable collection in the scan
    state, stopping = trainer.init(train["features"], SEEDS[:2], [0.5, 0.5])
    state, stats = trainer.train_epoch(state, stopping, train)  # compile outside the guard
    jax.block_until_ready(state)
    with jax.transfer_guard("disallow"):
        for _ in range(3):
            state, stats = trainer.train_epoch(state, stopping, train)
            stopping, auc, _ = trainer.evaluate(state, stopping, stats, valid)
        jax.block_until_ready((state, stopping))
    assert trainer.trace_counts == {"epoch": 1, "evaluate": 1}
    assert trainer.train_epoch._cache_size() == 1


@pytest.mark.slow  # long; keeps the default suite under 10 minutes on 2 cores
def test_early_stopping_is_per_member_and_keeps_best(data):
    ds, train, valid = data
    trainer, state, stopping, records = run(make_trainer(ds, max_epochs=40, patience=2), train, valid, SEEDS[:3])
    valid_auc = np.stack([r.valid_auc for r in records])  # [epochs, M]
    stopped = np.stack([r.stopped for r in records])
    best_epoch, best_auc = np.asarray(stopping.best_epoch), np.asarray(stopping.best_auc)
    for m in range(3):
        stop_at = int(np.argmax(stopped[:, m])) + 1  # first epoch at which member m is stopped
        seen = valid_auc[:stop_at, m]
        assert best_epoch[m] == int(np.argmax(seen)) + 1
        np.testing.assert_allclose(best_auc[m], seen.max(), rtol=1e-6)
        assert stop_at == min(40, best_epoch[m] + 2)
    # best params reproduce the best validation AUC
    from lipctr import metrics
    logits = trainer.predict_logits(stopping.best_params, stopping.best_model_state, valid["features"])
    auc = jax.vmap(metrics.auc, in_axes=(0, None))(trainer.click_probability(logits), valid["label"])
    np.testing.assert_allclose(np.asarray(auc), best_auc, atol=1e-6)


@pytest.mark.slow  # ~7 s (suite time)
def test_candidate_scoring_in_chunks_equals_direct_scoring(data, trainer3):
    from lipctr.ranking import ranking_candidates

    ds, train, valid = data
    state, stopping = trainer3.init(train["features"], SEEDS[:2], [0.5, 0.5])
    candidates = ranking_candidates(ds, "test", 20, seed=1, relevance="any")
    chunked = trainer3.score_candidates(state.params, state.model_state, candidates, rows_per_chunk=64)
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in candidates.features.items()}
    direct = trainer3.click_score(trainer3.predict_logits(state.params, state.model_state, jax.device_put(flat)))
    assert chunked.shape == (2, candidates.num_rows, 21)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(direct).reshape(2, -1, 21), rtol=1e-5, atol=1e-5)
    default = trainer3.score_candidates(state.params, state.model_state, candidates)  # eval_batch_size // 21 rows
    np.testing.assert_allclose(np.asarray(default), np.asarray(chunked), rtol=1e-5, atol=1e-5)
