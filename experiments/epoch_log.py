"""What a variant's training writes after every epoch (`EpochLog`, fit's on_epoch callback):
metrics.csv, the TensorBoard rows (log.tensorboard), the resumable state every checkpoint_every
epochs and at the end, one line per member whose loss turned NaN/inf, and the progress bar."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from experiments.history import history_rows
from experiments.resume import resumable
from lipctr import sharding
from lipctr.checkpoint import StateCheckpoints
from lipctr.io import write_text_atomic


class EpochLog:
    """fit's on_epoch for one variant: `history` holds the metrics.csv rows so far (a resume's first)."""

    def __init__(self, config: dict, trainer, variant: str, out: Path, members, labels: list[str], history: list,
                 checkpoints: StateCheckpoints, board, seconds_before: float, progress: bool):
        self.config, self.trainer, self.variant, self.out = config, trainer, variant, out
        self.members, self.labels, self.history = members, labels, history
        self.checkpoints, self.board, self.seconds_before = checkpoints, board, seconds_before
        self.optimizer = config["train"].get("embedding_optimizer", "adamw")
        self.reported_divergence: set = set()
        self.bar = tqdm(total=config["train"]["max_epochs"], initial=len(history) // max(len(members), 1),
                        desc=f"{config['model']} {variant}", unit="epoch", file=sys.stderr,
                        disable=not (progress and sharding.is_primary()), dynamic_ncols=True)
        self.start = time.perf_counter()

    def __call__(self, state, stopping, record) -> None:
        num, members = len(self.members), self.members
        rows = history_rows(record, self.labels, members)
        self.history.extend(rows)
        if sharding.is_primary():
            write_text_atomic(self.out / "metrics.csv", pd.DataFrame(self.history).to_csv(index=False))
        if self.board is not None:
            self.board.write(rows)
        if record.epoch % self.config["checkpoint_every"] == 0 or record.stopped[:num].all():
            seconds = self.seconds_before + time.perf_counter() - self.start
            self.checkpoints.save(record.epoch, resumable(self.trainer, state, stopping, num),
                                  {"members": self.labels, "train_seconds": seconds,
                                   "embedding_optimizer": self.optimizer})
        for i in np.flatnonzero(record.diverged[:num]):
            if i not in self.reported_divergence:
                self.reported_divergence.add(i)
                m = members[i]
                tqdm.write(
                    f"NaN/inf training loss: model {self.config['model']}, variant {self.variant}, seed {m.seed}, "
                    f"lambda_r {m.lambda_r:g}, epoch {record.epoch}; that member stopped and keeps its "
                    f"best params (epoch {int(sharding.to_host(stopping.best_epoch)[i])}).",
                    file=sys.stderr,
                )
        self.bar.update(1)
        self.bar.set_postfix_str("valid AUC " + " ".join(f"{a:.4f}" for a in record.valid_auc[:min(num, 8)]))

    def close(self) -> float:
        """Close the progress bar; the training seconds of all sessions."""
        self.bar.close()
        return self.seconds_before + time.perf_counter() - self.start
