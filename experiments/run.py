"""Run one variant (orig or smooth) of a config: train the ensemble, evaluate, write the outputs.
`run_variant` reads a finished variant back or builds its trainer (`build_trainer`, of the members
`config_variant` lists), restores a saved state, trains with experiments.epoch_log writing every
epoch, and writes the rest with experiments.variant_outputs.

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
from pathlib import Path

from experiments import data_source
from experiments.configs import model_hparams
from experiments.epoch_log import EpochLog
from experiments.resume import log as _log
from experiments.resume import read_final, restore_state, saved_history
from experiments.tensorboard_log import open_log
from experiments.variant_outputs import final_record, write_outputs
from lipctr import sharding
from lipctr import variant as variants
from lipctr.checkpoint import StateCheckpoints
from lipctr.controls import Controls, controlled_train_split
from lipctr.data.schema import Dataset
from lipctr.io import write_json_atomic
from lipctr.member_hparams import grid_points, member_hparam, per_member_keys, stacked_values
from lipctr.models import build_model
from lipctr.models.controlled import controlled_model
from lipctr.train import TrainConfig, to_device
from lipctr.trainer import Trainer, fit


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
    labels = [m.label(spec.sweep) for m in members]
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
    train = to_device(controlled_train_split(dataset.train, dataset.schema, spec.controls), mesh,
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
    log = EpochLog(config, trainer, variant, out, members, labels, history, checkpoints, board, seconds_before,
                   progress)
    state, stopping = fit(trainer, state, stopping, train, valid, log)
    train_seconds_total = log.close()
    results, extra, stopping = write_outputs(out, trainer, stopping, dataset, config, spec, members, candidates)
    final = final_record(config, variant, spec, members, trainer, stopping, results, history, train_seconds_total,
                         extra["test_seconds"])
    if sharding.is_primary():
        write_json_atomic(final_path, final)
    sharding.barrier(f"{out} final.json")
    return final
