"""The bandwidth sweep's training and measurements: each N's ensemble trained as a run of
experiments.run_config (early stopping, checkpoints, resume, an optional mesh) in its own run
directory, then per member test metrics, local Lipschitz summaries and embedding weight norms
(lipctr.lipschitz's one measurement, as the analyses of a run take them) and softmax Jacobian
norms, on the variant loaded back by lipctr.load_run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from experiments.bandwidth.data import bandwidth_datasets
from experiments.configs import merge, validate
from experiments.run_config import run_config
from lipctr import lipschitz, softmax_jacobian
from lipctr.data.schema import Dataset
from lipctr.inference import load_run
from lipctr.io import write_json_atomic
from lipctr.models.base import FeatureEmbedding
from lipctr.ranking import ranking_candidates

LIPSCHITZ_MEASURES = ("grad_norm", "spectral_probs", "spectral_logits", "ratio")
# Columns that are NaN for the orig rows (K = 1 has no softmax over rating classes).
SOFTMAX_COLUMNS = ("softmax_norm_mean", "softmax_norm_median", "softmax_norm_max", "softmax_fraction_above_bound")


def feasible_negatives(dataset: Dataset, wanted: int) -> int:
    """`wanted`, lowered to the sampled negatives per user the dataset allows (items its busiest
    user never interacted with in any split)."""
    schema = dataset.schema
    pairs = np.unique(np.concatenate([np.stack([s.features[schema.user_field], s.features[schema.item_field]], 1)
                                      for s in dataset.splits.values()]), axis=0)
    return max(1, min(wanted, schema[schema.item_field].vocab_size - 1 - int(np.bincount(pairs[:, 0]).max())))


def sweep_settings(config: dict, dataset: Dataset) -> dict:
    """The validated config of the sweep's runs: the sweep's config, its ranking evaluation (which
    run_config does; the sweep reports none of it) taking at most the negatives `dataset` allows."""
    update = {"eval": {"num_negatives": feasible_negatives(dataset, config["eval"]["num_negatives"])}}
    return validate(merge(config, update), source="bandwidth sweep")


def train_variant(config: dict, dataset: Dataset, variant: str, run_dir: Path, mesh=None,
                  progress: bool = False) -> dict:
    """Train (or resume, or read back) `variant` of `config` on `dataset` in `run_dir` (its
    config.json written first; a run_dir holding another config is refused) -> final.json."""
    path = run_dir / "config.json"
    if path.is_file():
        if json.loads(path.read_text()) != json.loads(json.dumps(config)):
            raise ValueError(f"{path}: this folder holds a sweep run of another configuration; give another --runs-dir")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, config)
    ev = config["eval"]
    candidates = ranking_candidates(dataset, "test", ev["num_negatives"], ev["ranking_seed"], ev["relevance"])
    return run_config({**config, "variants": [variant]}, dataset, run_dir, candidates, progress, mesh)[variant]


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

def measure_members(run_dir: Path, variant: str, final: dict, config: dict, features) -> list[dict]:
    """Per member of the finished `variant` in run_dir: test AUC / LogLoss and early stopping
    (final.json), local Lipschitz summaries (mean / median / max over the examples in
    `features`), softmax Jacobian norms at its test logits (predictions.npz), embedding weight norms."""
    run = load_run(run_dir, variant)
    logits = np.load(run_dir / variant / "predictions.npz")["logits"]  # [M, n, K]
    tables = lipschitz.member_tables(run.model, run.loss_config, run.params, run.model_state, features,
                                     num_iters=config["bandwidth"]["power_iters"])
    weight_norms = lipschitz.embedding_weight_norms(run.params, run.model.schema)
    last_improvable = config["train"]["max_epochs"] - config["train"]["patience"]
    rows = []
    for i, (member, table) in enumerate(zip(final["members"], tables)):
        params = jax.tree.map(lambda x, i=i: x[i], run.params)
        row = {"best_epoch": member["best_epoch"], "capped": member["best_epoch"] > last_improvable,
               "best_valid_auc": member["best_valid_auc"], "test_auc": member["auc"], "test_logloss": member["logloss"],
               **lipschitz_columns(table, input_norms(run.model, params, features)),
               **softmax_columns(logits[i]), **{name: float(norms[i]) for name, norms in weight_norms.items()}}
        rows.append(row)
    return rows


def run_sweep(config: dict, dataset: Dataset, preference: dict[str, np.ndarray], runs_dir: Path,
              log=None, mesh=None, progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Train (resuming what `runs_dir` holds) and measure orig once and smooth for every N of
    bandwidth.classes, each a run directory runs_dir/<orig | smooth_N<n>>/ whose config records
    its N -> (one row per member, {N: Buckets})."""
    log = log or (lambda _msg: None)
    sweep = config["bandwidth"]
    settings = sweep_settings(config, dataset)
    datasets = bandwidth_datasets(dataset, preference, sweep["classes"], sweep["quantile"])
    features = lipschitz.example_subset(dataset.test.features, sweep["lipschitz_examples"])
    lambda_r = config["loss"]["lambda_r"]
    runs = [("orig", min(datasets), 1, 0.0)] + [("smooth", n, n, lambda_r) for n in sorted(datasets)]
    rows = []
    for variant, n, num_outputs, member_lambda in runs:
        data = datasets[n][0]
        log(f"{config['model']} {variant} K={num_outputs} (threshold class {data.schema.threshold} of {n})")
        run_dir = Path(runs_dir) / ("orig" if variant == "orig" else f"smooth_N{n}")
        run_settings = merge(settings, {"bandwidth": {"classes": [n]}})
        final = train_variant(run_settings, data, variant, run_dir, mesh, progress)
        timing = {"epochs": final["timing"]["epochs"], "train_seconds": final["timing"]["train_seconds_total"]}
        start = time.perf_counter()
        measured = measure_members(run_dir, variant, final, config, features)
        measure_seconds = time.perf_counter() - start
        for seed, row in zip(config["seeds"], measured):
            rows.append({"variant": variant, "N": 2 if variant == "orig" else n, "K": num_outputs,
                         "threshold": data.schema.threshold, "seed": seed, "lambda_r": member_lambda, **row,
                         "lipschitz_examples": len(next(iter(features.values()))), **timing,
                         "measure_seconds": measure_seconds})
        log(f"  test AUC {np.mean([r['test_auc'] for r in measured]):.4f}, "
            f"Lipschitz mean {np.mean([r['grad_norm_mean'] for r in measured]):.4g}")
    return pd.DataFrame(rows), {n: b for n, (_, b) in datasets.items()}
