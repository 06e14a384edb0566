"""The bandwidth sweep's training and measurements: each N's ensemble trained with early
stopping, then per member test metrics, local Lipschitz summaries and embedding weight norms
(lipctr.lipschitz's one measurement, as the analyses of a run take them) and softmax Jacobian norms."""

from __future__ import annotations

import time

import jax
import numpy as np
import pandas as pd

from lipctr import lipschitz, softmax_jacobian
from lipctr.data.schema import Dataset
from lipctr.losses import LossConfig
from lipctr.models import build_model
from lipctr.models.base import FeatureEmbedding
from lipctr.evaluation import member_metrics
from lipctr.train import TrainConfig, to_device
from lipctr.trainer import Trainer, fit

from experiments.bandwidth_data import SweepConfig, bandwidth_datasets
from experiments.configs import model_hparams, named_config

LIPSCHITZ_MEASURES = ("grad_norm", "spectral_probs", "spectral_logits", "ratio")
# Columns that are NaN for the orig rows (K = 1 has no softmax over rating classes).
SOFTMAX_COLUMNS = ("softmax_norm_mean", "softmax_norm_median", "softmax_norm_max", "softmax_fraction_above_bound")


def train_config(config: SweepConfig) -> tuple[TrainConfig, dict]:
    """TrainConfig and model hyper-parameters: the `<model>_ml1m` config with the sweep's overrides."""
    base = named_config(f"{config.model}_ml1m")
    train = {**base["train"], "max_epochs": config.max_epochs, "patience": config.patience}
    if config.batch_size is not None:
        train["batch_size"] = config.batch_size
    if config.learning_rate is not None:
        train["learning_rate"] = config.learning_rate
    return TrainConfig(**train), {**model_hparams(base), **dict(config.model_hparams)}

def train_members(config: SweepConfig, dataset: Dataset, num_outputs: int, lambda_r: float, log=None):
    """Train all seeds as one ensemble with early stopping on valid AUC -> (trainer, early
    stopping record [M], {"epochs", "train_seconds"})."""
    tc, hparams = train_config(config)
    model = build_model(config.model, dataset.schema, num_outputs, **hparams)
    loss = LossConfig(lambda_r=lambda_r, threshold=dataset.schema.threshold, aggregation=config.aggregation)
    trainer = Trainer(model, loss, tc, len(dataset.train), len(dataset.valid))
    train, valid = to_device(dataset.train), to_device(dataset.valid)
    state, es = trainer.init(train["features"], list(config.seeds), [lambda_r] * len(config.seeds))
    epochs = []

    def on_epoch(_state, _es, record):
        epochs.append(record.epoch)
        if log is not None:
            log(f"  epoch {record.epoch:3d}  valid AUC " + " ".join(f"{a:.4f}" for a in record.valid_auc)
                + f"  ({record.train_seconds:.1f} s)")

    start = time.perf_counter()
    state, es = fit(trainer, state, es, train, valid, on_epoch)
    return trainer, es, {"epochs": len(epochs), "train_seconds": time.perf_counter() - start}

def input_norms(model, params, features) -> np.ndarray:
    """||e|| of each example's concatenated field embeddings e (the point where the Lipschitz
    measures are taken): features [m, ...] -> [m]."""
    emb = FeatureEmbedding(model.schema, model.embedding_dim).apply({"params": params["embedding"]}, features)
    return np.linalg.norm(np.asarray(emb).reshape(emb.shape[0], -1), axis=1)

def lipschitz_columns(table: pd.DataFrame, input_norm: np.ndarray) -> dict:
    """Summaries of one member's per-example Lipschitz table (lipctr.lipschitz.local_lipschitz)
    and of grad_norm x ||e|| (input_norm [m], `input_norms`)."""
    summary = lipschitz.summarize(table[list(LIPSCHITZ_MEASURES)])
    row = {f"{measure}_{stat}": float(summary.loc[stat, measure])
           for measure in LIPSCHITZ_MEASURES for stat in ("mean", "median", "max")}
    relative = table["grad_norm"].to_numpy() * input_norm
    row.update({"input_norm_mean": float(input_norm.mean()), "relative_lipschitz_mean": float(relative.mean()),
                "relative_lipschitz_median": float(np.median(relative)),
                "relative_lipschitz_max": float(relative.max())})
    fd_error = np.abs(table["spectral_probs_fd"] - table["spectral_probs"]) / np.maximum(table["spectral_probs"], 1e-12)
    row["fd_rel_error_max"] = float(fd_error.max())
    return row

def softmax_columns(logits) -> dict:
    """Softmax Jacobian norms at one member's test logits [n, K] vs 1/sqrt(K); NaN for K = 1."""
    if logits.shape[-1] == 1:
        return {c: float("nan") for c in SOFTMAX_COLUMNS}
    norms = softmax_jacobian.jacobian_norm_distribution(logits).summary()
    return {"softmax_norm_mean": norms["mean"], "softmax_norm_median": norms["median"],
            "softmax_norm_max": norms["max"], "softmax_fraction_above_bound": norms["fraction_above_bound"]}

def measure_members(trainer: Trainer, es, dataset: Dataset, config: SweepConfig, features) -> list[dict]:
    """Per member: test AUC / LogLoss, local Lipschitz summaries (mean / median / max over the
    examples in `features`), softmax Jacobian norms at its test logits, embedding weight norms."""
    test = to_device(dataset.test)
    logits = trainer.predict_logits(es.best_params, es.best_model_state, test["features"])
    scores, probs = trainer.click_score(logits), trainer.click_probability(logits)
    measured = member_metrics(scores, probs, test["label"])
    auc, logloss = np.asarray(measured["auc"]), np.asarray(measured["logloss"])
    tables = lipschitz.member_tables(trainer.model, trainer.loss_config, es.best_params, es.best_model_state,
                                     features, num_iters=config.power_iters)
    weight_norms = lipschitz.embedding_weight_norms(es.best_params, trainer.model.schema)
    rows = []
    for i, table in enumerate(tables):
        params = jax.tree.map(lambda x: x[i], es.best_params)
        best_epoch = int(np.asarray(es.best_epoch)[i])
        row = {"best_epoch": best_epoch, "capped": best_epoch > config.max_epochs - config.patience,
               "best_valid_auc": float(np.asarray(es.best_auc)[i]),
               "test_auc": float(auc[i]), "test_logloss": float(logloss[i]),
               **lipschitz_columns(table, input_norms(trainer.model, params, features)),
               **softmax_columns(logits[i]), **{name: float(norms[i]) for name, norms in weight_norms.items()}}
        rows.append(row)
    return rows

def run_sweep(config: SweepConfig, dataset: Dataset, preference: dict[str, np.ndarray],
              log=None) -> tuple[pd.DataFrame, dict]:
    """Train and measure orig once and smooth for every N -> (one row per member, {N: Buckets})."""
    log = log or (lambda _msg: None)
    datasets = bandwidth_datasets(dataset, preference, config.class_counts, config.threshold_quantile)
    features = lipschitz.example_subset(dataset.test.features, config.lipschitz_examples)
    runs = [("orig", min(datasets), 1, 0.0)] + [("smooth", n, n, config.lambda_r) for n in sorted(datasets)]
    rows = []
    for variant, n, num_outputs, lambda_r in runs:
        data = datasets[n][0]
        log(f"{config.model} {variant} K={num_outputs} (threshold class {data.schema.threshold} of {n})")
        trainer, es, timing = train_members(config, data, num_outputs, lambda_r, log)
        start = time.perf_counter()
        measured = measure_members(trainer, es, data, config, features)
        measure_seconds = time.perf_counter() - start
        for seed, row in zip(config.seeds, measured):
            rows.append({"variant": variant, "N": 2 if variant == "orig" else n, "K": num_outputs,
                         "threshold": data.schema.threshold, "seed": seed, "lambda_r": lambda_r, **row,
                         "lipschitz_examples": len(next(iter(features.values()))), **timing,
                         "measure_seconds": measure_seconds})
        log(f"  test AUC {np.mean([r['test_auc'] for r in measured]):.4f}, "
            f"Lipschitz mean {np.mean([r['grad_norm_mean'] for r in measured]):.4g}")
    return pd.DataFrame(rows), {n: b for n, (_, b) in datasets.items()}
