"""A trained variant's outputs (experiments.run lists them): the test evaluation of each member's
best params (`evaluate_test`), predictions.npz, the members' checkpoints and run files
(`write_outputs`), and final.json's content (`final_record`)."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from lipctr import metrics, sharding
from lipctr import variant as variants
from lipctr.checkpoint import save_tree
from lipctr.data.schema import Dataset
from lipctr.evaluation import member_metrics
from lipctr.io import save_npz_atomic
from lipctr.run_files import write_run_files
from lipctr.train import to_device
from lipctr.trainer import Trainer


def member_point(spec: variants.Variant, member: variants.Member) -> dict:
    """{"hparams": the member's grid point} in a grid run, else {} (final.json, run_schema.json)."""
    return {"hparams": spec.member_point(member)} if spec.points else {}


def _summary(values: np.ndarray) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def evaluate_test(trainer: Trainer, stopping, dataset: Dataset, config: dict, candidates,
                  num_members: int | None = None) -> tuple[dict, dict]:
    """Test metrics [M] of each member's best params, and the arrays to save; with num_members,
    only the first num_members members (the rest are a mesh's padding)."""
    test = to_device(dataset.test, trainer.mesh)
    start = time.perf_counter()
    best = (stopping.best_params, stopping.best_model_state)
    logits = jax.block_until_ready(trainer.predict_logits(*best, test["features"]))
    probs = trainer.click_probability(logits)
    test_seconds = time.perf_counter() - start
    scores = trainer.click_score(logits)
    results = member_metrics(scores, probs, test["label"])
    relevant = candidates.select(candidates.relevant)
    ranked = trainer.score_candidates(*best, relevant)
    ranking = jax.vmap(lambda s: metrics.ranking_metrics(s, relevant.relevant, tuple(config["eval"]["ks"])))(ranked)
    results.update(ranking)
    results = {k: sharding.to_host(v)[:num_members] for k, v in results.items()}
    arrays = {
        "label": dataset.test.label,
        "rating": dataset.test.rating,
        "probability": sharding.to_host(probs)[:num_members],
        "logits": sharding.to_host(logits)[:num_members],
    }
    return results, {"arrays": arrays, "test_seconds": test_seconds}


def write_outputs(out: Path, trainer: Trainer, stopping, dataset: Dataset, config: dict, spec: variants.Variant,
                  members: list[variants.Member], candidates):
    """Evaluate on test and write predictions.npz, checkpoints/<member>/ and the run files; (test
    metrics [M], evaluate_test's extra, the members' early-stopping records on the host)."""
    num, sweep = len(members), spec.sweep
    results, extra = evaluate_test(trainer, stopping, dataset, config, candidates, num)
    if sharding.is_primary():
        save_npz_atomic(out / "predictions.npz", **extra["arrays"])
    best_all = trainer.real_members({"params": stopping.best_params, **stopping.best_model_state}, num)
    for i, m in enumerate(members):
        save_tree(out / "checkpoints" / m.label(sweep), jax.tree.map(lambda x, i=i: x[i], best_all))
    if sharding.is_primary():  # what makes the variant scorable on its own (lipctr.load_run)
        write_run_files(out, dataset, trainer, config["model"], [
            {"member": m.label(sweep), "seed": m.seed, "lambda_r": m.lambda_r, **member_point(spec, m)}
            for m in members])
    stopping = jax.tree.map(sharding.to_host,
                            trainer.real_members(stopping._replace(best_params=None, best_model_state=None), num))
    return results, extra, stopping


def final_record(config: dict, variant: str, spec: variants.Variant, members: list[variants.Member], trainer: Trainer,
                 stopping, results: dict, history: list, train_seconds_total: float, test_seconds: float) -> dict:
    """final.json's content: per-member test metrics and early stopping, timings, per-group summaries."""
    sweep = spec.sweep
    frame = pd.DataFrame(history)
    epochs = frame.drop_duplicates("epoch")
    final = {
        "config": config["model"] + "_" + config["dataset"],
        "variant": variant,
        "num_outputs": trainer.model.num_outputs,
        "lambda_sweep": config["lambda_sweep"] if sweep else [],
        "max_epochs": config["train"]["max_epochs"],
        "members": [
            {
                "member": m.label(sweep),
                "seed": m.seed,
                "lambda_r": m.lambda_r,
                "best_epoch": int(np.asarray(stopping.best_epoch)[i]),
                "best_valid_auc": float(np.asarray(stopping.best_auc)[i]),
                "diverged": bool(np.asarray(stopping.diverged)[i]),
                **member_point(spec, m),
                **{k: float(v[i]) for k, v in results.items()},
            }
            for i, m in enumerate(members)
        ],
        "timing": {
            "epochs": int(epochs["epoch"].max()) if len(epochs) else 0,
            "seconds_per_epoch": float(epochs["train_seconds"].median()) if len(epochs) else 0.0,
            "eval_seconds_per_epoch": float(epochs["eval_seconds"].median()) if len(epochs) else 0.0,
            "train_seconds_total": train_seconds_total,
            "test_eval_seconds": test_seconds,
            "num_members": len(members),
        },
    }
    groups = {}  # by lambda_r ("0.7"); in a grid by point ("lambda0.5_lr0.001")
    for i, m in enumerate(members):
        groups.setdefault(m.point_label(sweep) if spec.points else f"{m.lambda_r:g}", []).append(i)
    final["summary"] = {group: {k: _summary(v[idx]) for k, v in results.items()} for group, idx in groups.items()}
    return final
