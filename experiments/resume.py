"""Reading a variant's saved work back: its final.json, the checks a saved state must pass before
anything is built (members, train.embedding_optimizer, metrics.csv's history), and restoring the
newest intact state with early stopping re-derived for the config's max_epochs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from experiments.history import read_history
from experiments.rundir import RunDirError
from lipctr import sharding
from lipctr.checkpoint import StateCheckpoints
from lipctr.trainer import Trainer


def log(text: str) -> None:
    if sharding.is_primary():
        print(text, file=sys.stderr)


def read_final(path: Path, labels: list[str]) -> dict:
    try:
        final = json.loads(path.read_text(encoding="utf-8"))
        found = [m["member"] for m in final["members"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise RunDirError(f"{path}: damaged ({type(error).__name__}: {error}); delete it to evaluate again") from None
    if found != labels:
        raise RunDirError(f"{path} holds members {found}, but config.json asks for {labels} (was it edited?)")
    return final


def saved_history(checkpoints: StateCheckpoints, labels: list[str], metrics_path: Path,
                   embedding_optimizer: str = "adamw") -> list[dict]:
    """Before anything is built: the saved state's members and train.embedding_optimizer (its
    optimiser state's form; states saved before the key existed are "adamw") must be the
    config's, and metrics.csv must hold the history up to the newest saved epoch; that history."""
    latest = checkpoints.latest_epoch()
    info = checkpoints.info(latest)
    saved = info.get("members")
    if saved is not None and saved != labels:
        raise RunDirError(f"{checkpoints.directory}: the saved state holds members {saved}, but config.json asks "
                          f"for {labels} (was it edited?)")
    optimizer = info.get("embedding_optimizer", "adamw")
    if optimizer != embedding_optimizer:
        raise RunDirError(f"{checkpoints.directory}: the saved state was trained with train.embedding_optimizer "
                          f"{optimizer!r}, but the config asks for {embedding_optimizer!r}; resume with {optimizer!r} "
                          "or start a new run")
    return read_history(metrics_path, labels, latest)


def resumable(trainer: Trainer, state, stopping, num: int) -> dict:
    """What a resumable checkpoint holds: the real members' SavedState (no hparams: they come
    from the config) and early-stopping records."""
    return trainer.real_members({"state": state.saved(), "es": stopping}, num)


def restore_state(checkpoints: StateCheckpoints, trainer: Trainer, state, stopping, config: dict, num: int, name: str):
    """(state, stopping, epoch, info) of the newest intact saved state. Early stopping is re-derived
    for the config's max_epochs, so a longer run continues the members the epoch limit stopped,
    while those stopped by patience or divergence stay stopped."""
    restored = checkpoints.restore(resumable(trainer, state, stopping, num), log)
    epoch = checkpoints.latest_epoch()
    train_config = config["train"]
    r_state = restored["state"].with_hparams(trainer.real_members(state.hparams, num))
    r_stopping = restored["es"]  # the checkpoint's key for the early-stopping record
    stopped = (r_stopping.diverged | (r_stopping.bad_epochs >= train_config["patience"])
               | (r_state.epoch >= train_config["max_epochs"]))
    state, stopping = trainer.with_members((state, stopping), (r_state, r_stopping._replace(stopped=stopped)))
    done = int(np.sum(sharding.to_host(stopped)))
    log(f"resuming {name} from epoch {epoch} of {train_config['max_epochs']}, {num} members"
         + (f" ({done} stopped)" if done else ""))
    return state, stopping, epoch, checkpoints.info(epoch)
