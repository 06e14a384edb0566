"""Analyses of a finished run (the paper's Figures 2-3 and Theorem 1, measured).

Each function takes a `lipctr.inference.Run` (a variant's model and the best params of every
member, loaded by `lipctr.load_run`) and returns a DataFrame; `run_analyses` writes them as CSVs
under `<run_dir>/analysis/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from lipctr import lipschitz, metrics, softmax_jacobian
from lipctr.data.schema import Dataset
from lipctr.inference import Run, load_run
from lipctr.io import write_text_atomic
from lipctr.train import to_device

DENSE_NOISE_STDS = (0.01, 0.03, 0.05, 0.07, 0.09)
SPARSE_NOISE_STDS = (0.006, 0.008, 0.01, 0.012, 0.014)
SPARSE_DATASETS = ("yelp2018", "amazon_book")


def _member_columns(run: Run) -> dict:
    return {"variant": run.variant, "seed": run.member_seeds, "lambda_r": run.member_lambdas}


def weight_norms(run: Run) -> pd.DataFrame:
    """L2 (Frobenius) norms of the user and item embedding tables after training, per member."""
    return pd.DataFrame({**_member_columns(run), **lipschitz.embedding_weight_norms(run.params, run.model.schema)})


def noisy_logits_fn(model, num_examples: int, chunk: int = 8192):
    """(params, model_state, features, key, std) -> logits [n, K] of ONE member of the flax
    `model` with Gaussian noise of standard deviation std added to its input field embeddings."""
    chunk = min(chunk, num_examples)
    num_chunks = -(-num_examples // chunk)
    index = (jnp.arange(num_chunks * chunk) % num_examples).reshape(num_chunks, chunk)
    shape = (chunk, model.schema.num_fields, model.embedding_dim)

    def noisy(params, model_state, features, key, std):
        def body(_, inputs):
            i, idx = inputs
            batch = jax.tree.map(lambda x: x[idx], features)
            offset = std * jax.random.normal(jax.random.fold_in(key, i), shape)
            return None, model.apply({"params": params, **model_state}, batch, deterministic=True,
                                     embedding_offset=offset)

        logits = jax.lax.scan(body, None, (jnp.arange(num_chunks), index))[1]
        return logits.reshape(num_chunks * chunk, -1)[:num_examples]

    return noisy


def noise_robustness(run: Run, dataset: Dataset, stds, draws: int = 3, seed: int = 0) -> pd.DataFrame:
    """Test AUC / LogLoss of every member with N(0, std^2) noise on its input embeddings."""
    test = to_device(dataset.test)
    noisy = noisy_logits_fn(run.model, len(dataset.test))

    @jax.jit
    def evaluate(params, model_state, key, std):
        def one(p, s, k):
            logits = noisy(p, s, test["features"], k, std)
            score, prob = run.click_score(logits), run.click_probability(logits)
            return metrics.auc(score, test["label"]), metrics.log_loss(prob, test["label"])

        keys = jax.random.split(key, run.num_members)
        return jax.vmap(one)(params, model_state, keys)

    rows = []
    for std in (0.0, *stds):
        for draw in range(draws if std > 0 else 1):
            key = jax.random.fold_in(jax.random.key(seed), draw)
            auc, logloss = evaluate(run.params, run.model_state, key, jnp.float32(std))
            rows.append(pd.DataFrame({**_member_columns(run), "std": std, "draw": draw,
                                      "auc": np.asarray(auc), "logloss": np.asarray(logloss)}))
    return pd.concat(rows, ignore_index=True)


def local_lipschitz(run: Run, dataset: Dataset, num_examples: int = 256, seed: int = 0) -> pd.DataFrame:
    """Per-member summary (mean, median, max over test examples) of the local Lipschitz measures
    of p_hat w.r.t. the concatenated input field embeddings (lipctr.lipschitz.member_tables)."""
    features = lipschitz.example_subset(dataset.test.features, num_examples, seed)
    tables = lipschitz.member_tables(run.model, run.loss_config, run.params, run.model_state, features, seed=seed)
    rows = []
    for seed_i, lambda_r, table in zip(run.member_seeds, run.member_lambdas, tables):
        summary = lipschitz.summarize(table)
        row = {"variant": run.variant, "seed": seed_i, "lambda_r": lambda_r, "examples": len(table)}
        for column in table.columns:
            for stat in summary.index:
                row[f"{column}_{stat}"] = float(summary.loc[stat, column])
        rows.append(row)
    return pd.DataFrame(rows)


def trained_softmax_norms(run_dir: Path, variant: str = "smooth", aux_rating: bool = False) -> pd.DataFrame:
    """||J||_F of the softmax at each trained member's real test logits vs 1/sqrt(N): per member
    quantiles and the fraction of examples above the bound. With aux_rating the softmax is the
    separate rating head's (columns 1..N; column 0 is the BCE click logit)."""
    saved = np.load(run_dir / variant / "predictions.npz")
    logits = saved["logits"]  # [M, n, K]
    if aux_rating:
        logits = logits[..., 1:]
    rows = [{"member": i, **softmax_jacobian.jacobian_norm_distribution(jnp.asarray(logits[i])).summary()}
            for i in range(logits.shape[0])]
    return pd.DataFrame(rows)


def run_analyses(run_dir: Path, dataset: Dataset, variants, noise_draws: int = 3,
                 lipschitz_examples: int = 256) -> None:
    """Weight norms, noise robustness, local Lipschitz constants and trained softmax norms -> CSVs."""
    out = run_dir / "analysis"
    config = json.loads((run_dir / "config.json").read_text())
    stds = SPARSE_NOISE_STDS if config["dataset"] in SPARSE_DATASETS else DENSE_NOISE_STDS
    tables: dict[str, list[pd.DataFrame]] = {"weight_norms": [], "noise": [], "lipschitz": []}
    for variant in variants:
        run = load_run(run_dir, variant)
        tables["weight_norms"].append(weight_norms(run))
        tables["noise"].append(noise_robustness(run, dataset, stds, noise_draws))
        tables["lipschitz"].append(local_lipschitz(run, dataset, lipschitz_examples))
    for name, frames in tables.items():
        write_text_atomic(out / f"{name}.csv", pd.concat(frames, ignore_index=True).to_csv(index=False))
    if "smooth" in variants:
        aux_rating = bool(config.get("controls", {}).get("aux_rating", False))
        norms = trained_softmax_norms(run_dir, "smooth", aux_rating)
        write_text_atomic(out / "softmax_norms.csv", norms.to_csv(index=False))
