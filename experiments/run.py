"""Run one variant (orig or smooth) of a config: train the ensemble, evaluate, write the outputs.

Outputs under `<run_dir>/<variant>/`, each written atomically:
  metrics.csv        per-epoch, per-member training and validation metrics
  tensorboard/<member>/  with log.tensorboard: metrics.csv's rows as TensorBoard event files (tensorboard_log)
  final.json         per-member test metrics, their mean/std, timings, early-stopping record
  predictions.npz    test labels, ratings, click probabilities [M, n] and logits [M, n, K]
  checkpoints/<member>/  orbax checkpoint of each member's best params (and batch statistics)
  run_schema.json, run_tables.npz  model, schema, vocabularies, feature tables (lipctr.run_files)
  state/             the two newest resumable states (params, optimiser, keys, early stopping),
                     with their array digests, member labels and training seconds so far

With a `mesh` (lipctr.sharding) the ensemble is sharded over devices and processes; padding members
never reach an output, only process 0 writes the files above, and every process takes part in
saving the orbax checkpoints (which hold the real members only, so any mesh or none can resume).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
from tqdm import tqdm

from lipctr import metrics, sharding
from lipctr import variant as variants
from lipctr.checkpoint import StateCheckpoints, save_tree
from lipctr.controls import Controls, controlled_train_split
from lipctr.data.schema import Dataset
from lipctr.io import save_npz_atomic, write_json_atomic, write_text_atomic
from lipctr.member_hparams import grid_points, member_hparam, per_member_keys, stacked_values
from lipctr.models import build_model
from lipctr.models.controlled import controlled_model
from lipctr.run_files import write_run_files
from lipctr.evaluation import member_metrics
from lipctr.train import TrainConfig, to_device
from lipctr.trainer import Trainer, fit

from experiments import data_source
from experiments.configs import model_hparams
from experiments.history import history_rows
from experiments.tensorboard_log import open_log
from experiments.resume import log as _log, read_final, restore_state, resumable, saved_history

METRIC_KEYS = ("auc", "logloss")


def config_variant(config: dict, variant: str, points: list[dict] | None = None) -> variants.Variant:
    """The Variant `variant` ("orig" or "smooth") of a config: its loss options and controls (orig
    takes only the controls that act on its BCE: label smoothing, embedding L2); smooth with a
    non-empty config["lambda_sweep"] is that lambda_r sweep. points: the grid points [{dotted key:
    value}] its members train at (x seeds, point-major), by default the product of
    config["grid"] ({dotted key: [values]}; none or {} = no grid); ValueError naming a key that is
    not per-member (lipctr.member_hparams), or loss.lambda_r for orig."""
    loss, controls = config["loss"], Controls(**config.get("controls", {}))  # runs before controls had none
    points = grid_points(config.get("grid", {})) if points is None else points
    for key in dict.fromkeys(k for point in points for k in point):
        if member_hparam(key, config["model"]) is None:
            raise ValueError(f"grid {key}: not a per-member hyper-parameter of {config['model']} (per-member: "
                             f"{', '.join(per_member_keys(config['model']))}); a key that changes a shape is one "
                             "program per value")
    grid = {"points": tuple(tuple(sorted(p.items())) for p in points if p)}
    if variant == "orig":
        controls = Controls(label_smoothing=controls.label_smoothing, embedding_l2=controls.embedding_l2)
        spec = variants.orig(loss["aggregation"], loss["scale_penalty"], controls)
    elif config["lambda_sweep"]:
        spec = variants.lambda_sweep(config["lambda_sweep"], aggregation=loss["aggregation"],
                                     scale_penalty=loss["scale_penalty"], controls=controls)
    else:
        spec = variants.smooth(loss["lambda_r"], loss["aggregation"], loss["scale_penalty"], controls)
    if not grid["points"]:
        return spec
    sweep = spec.sweep or any(variants.LAMBDA_KEY in dict(p) for p in grid["points"])
    return dataclasses.replace(spec, sweep=sweep, **grid)


def member_values(spec: variants.Variant, members: list[variants.Member], model: str) -> dict[str, list[float]]:
    """{name: [value of each member]} of the members' own hyper-parameters (Trainer.init's hparams)."""
    return stacked_values([m.hparams for m in members], model) if spec.points else {}


def build_trainer(config: dict, dataset: Dataset, variant: str, mesh=None, points: list[dict] | None = None) -> Trainer:
    spec = config_variant(config, variant, points)
    schema = spec.schema(dataset.schema)
    model = build_model(config["model"], schema, spec.num_outputs(schema.num_ratings), **model_hparams(config))
    per_member = member_values(spec, spec.members(config["seeds"]), config["model"])
    model = controlled_model(model, spec.controls, per_member_embedding_l2="embedding_l2" in per_member)
    loss_config = spec.loss_config(schema.threshold)
    train_config = TrainConfig(**config["train"])
    return Trainer(model, loss_config, train_config, len(dataset.train), len(dataset.valid), mesh,
                   data_source.placement(config))


def _point(spec: variants.Variant, member: variants.Member) -> dict:
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


def run_variant(config: dict, dataset: Dataset, variant: str, run_dir: Path, candidates,
                progress: bool = True, output: str | None = None, mesh=None, points: list[dict] | None = None) -> dict:
    """Train (or resume) one variant to the end and write its outputs to `<run_dir>/<output>/`
    (output defaults to the variant's name); returns final.json's content. A finished variant is
    read back, unless it was trained for fewer max_epochs than the config now asks for. points:
    the grid points of its members (config_variant)."""
    name = output or variant
    out = run_dir / name
    final_path = out / "final.json"
    spec = config_variant(config, variant, points)
    members = spec.members(config["seeds"])
    num = len(members)
    sweep = spec.sweep
    labels = [m.label(sweep) for m in members]
    max_epochs = config["train"]["max_epochs"]
    if final_path.exists():
        final = read_final(final_path, labels)
        if final.get("max_epochs", max_epochs) == max_epochs:
            _log(f"{name}: already complete, {num} members ({final_path})")
            return final
        _log(f"{name}: trained for max_epochs {final['max_epochs']}; continuing to {max_epochs}")
    checkpoints = StateCheckpoints(out / "state")
    resuming = checkpoints.latest_epoch() is not None
    optimizer = config["train"].get("embedding_optimizer", "adamw")
    history = saved_history(checkpoints, labels, out / "metrics.csv", optimizer) if resuming else []
    trainer = build_trainer(config, dataset, variant, mesh, points)
    controls = spec.controls
    train = to_device(controlled_train_split(dataset.train, dataset.schema, controls), mesh,
                      data_source.placement(config))
    valid = to_device(dataset.valid, mesh)
    state, stopping = trainer.init(train["features"], [m.seed for m in members], [m.lambda_r for m in members],
                                   member_values(spec, members, config["model"]))
    seconds_before = 0.0
    if resuming:
        state, stopping, epoch_done, info = restore_state(checkpoints, trainer, state, stopping, config, num, name)
        history = [row for row in history if row["epoch"] <= epoch_done]  # older if the newest was damaged
        seconds_before = float(info.get("train_seconds", 0.0))
    board = open_log(config, out, variant, labels, members, [spec.member_point(m) for m in members],
                     history) if sharding.is_primary() else None  # TensorBoard: log.tensorboard

    model_name = config["model"]
    bar = tqdm(total=config["train"]["max_epochs"], initial=len(history) // max(len(members), 1),
               desc=f"{model_name} {variant}", unit="epoch", file=sys.stderr,
               disable=not (progress and sharding.is_primary()),
               dynamic_ncols=True)
    reported_divergence = set()

    def on_epoch(state, stopping, record):
        rows = history_rows(record, labels, members)
        history.extend(rows)
        if sharding.is_primary():
            write_text_atomic(out / "metrics.csv", pd.DataFrame(history).to_csv(index=False))
        if board is not None:
            board.write(rows)
        if record.epoch % config["checkpoint_every"] == 0 or record.stopped[:num].all():
            seconds = seconds_before + time.perf_counter() - start
            checkpoints.save(record.epoch, resumable(trainer, state, stopping, num),
                             {"members": labels, "train_seconds": seconds, "embedding_optimizer": optimizer})
        for i in np.flatnonzero(record.diverged[:num]):
            if i not in reported_divergence:
                reported_divergence.add(i)
                m = members[i]
                tqdm.write(
                    f"NaN/inf training loss: model {model_name}, variant {variant}, seed {m.seed}, "
                    f"lambda_r {m.lambda_r:g}, epoch {record.epoch}; that member stopped and keeps its "
                    f"best params (epoch {int(sharding.to_host(stopping.best_epoch)[i])}).",
                    file=sys.stderr,
                )
        bar.update(1)
        bar.set_postfix_str("valid AUC " + " ".join(f"{a:.4f}" for a in record.valid_auc[:min(num, 8)]))

    start = time.perf_counter()
    state, stopping = fit(trainer, state, stopping, train, valid, on_epoch)
    bar.close()
    train_seconds_total = seconds_before + time.perf_counter() - start  # all sessions' training

    results, extra = evaluate_test(trainer, stopping, dataset, config, candidates, num)
    if sharding.is_primary():
        save_npz_atomic(out / "predictions.npz", **extra["arrays"])
    best_all = trainer.real_members({"params": stopping.best_params, **stopping.best_model_state}, num)
    for i, m in enumerate(members):
        save_tree(out / "checkpoints" / m.label(sweep), jax.tree.map(lambda x: x[i], best_all))
    if sharding.is_primary():  # what makes the variant scorable on its own (lipctr.load_run)
        write_run_files(out, dataset, trainer, config["model"], [
            {"member": m.label(sweep), "seed": m.seed, "lambda_r": m.lambda_r, **_point(spec, m)} for m in members])
    stopping = jax.tree.map(sharding.to_host,
                            trainer.real_members(stopping._replace(best_params=None, best_model_state=None), num))

    frame = pd.DataFrame(history)
    epochs = frame.drop_duplicates("epoch")
    final = {
        "config": config["model"] + "_" + config["dataset"],
        "variant": variant,
        "num_outputs": trainer.model.num_outputs,
        "lambda_sweep": config["lambda_sweep"] if sweep else [],
        "max_epochs": max_epochs,
        "members": [
            {
                "member": m.label(sweep),
                "seed": m.seed,
                "lambda_r": m.lambda_r,
                "best_epoch": int(np.asarray(stopping.best_epoch)[i]),
                "best_valid_auc": float(np.asarray(stopping.best_auc)[i]),
                "diverged": bool(np.asarray(stopping.diverged)[i]),
                **_point(spec, m),
                **{k: float(v[i]) for k, v in results.items()},
            }
            for i, m in enumerate(members)
        ],
        "timing": {
            "epochs": int(epochs["epoch"].max()) if len(epochs) else 0,
            "seconds_per_epoch": float(epochs["train_seconds"].median()) if len(epochs) else 0.0,
            "eval_seconds_per_epoch": float(epochs["eval_seconds"].median()) if len(epochs) else 0.0,
            "train_seconds_total": train_seconds_total,
            "test_eval_seconds": extra["test_seconds"],
            "num_members": len(members),
        },
    }
    groups = {}  # by lambda_r ("0.7"); in a grid by point ("lambda0.5_lr0.001")
    for i, m in enumerate(members):
        groups.setdefault(m.point_label(sweep) if spec.points else f"{m.lambda_r:g}", []).append(i)
    final["summary"] = {group: {k: _summary(v[idx]) for k, v in results.items()} for group, idx in groups.items()}
    if sharding.is_primary():
        write_json_atomic(final_path, final)
    sharding.barrier(f"{out} final.json")
    return final
