"""metrics.csv: one row per (epoch, member) of training and validation metrics, and reading it
back on resume, checked, so that a damaged file is an error and never a silently wrong history."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from experiments.rundir import RunDirError

COLUMNS = ("epoch", "member", "seed", "lambda_r", "train_loss", "user_grad_norm", "item_grad_norm",
           "valid_auc", "valid_logloss", "stopped", "train_seconds", "eval_seconds")
ALWAYS_SET = ("epoch", "member", "seed", "lambda_r", "stopped", "train_seconds", "eval_seconds")  # never NaN


def history_rows(record, labels: list[str], members) -> list[dict]:
    """metrics.csv rows of one EpochRecord (lipctr.train) for members [M] named labels [M]."""
    return [
        {
            "epoch": record.epoch,
            "member": label,
            "seed": m.seed,
            "lambda_r": m.lambda_r,
            "train_loss": float(record.stats.loss[i]),
            "user_grad_norm": float(record.stats.user_grad_norm[i]),
            "item_grad_norm": float(record.stats.item_grad_norm[i]),
            "valid_auc": float(record.valid_auc[i]),
            "valid_logloss": float(record.valid_logloss[i]),
            "stopped": bool(record.stopped[i]),
            "train_seconds": record.train_seconds,
            "eval_seconds": record.eval_seconds,
        }
        for i, (label, m) in enumerate(zip(labels, members))
    ]


def read_history(path: Path, labels: list[str], epochs: int) -> list[dict]:
    """The rows of epochs 1..epochs (those of the saved state) from metrics.csv, which must hold
    each of them whole for every member in `labels`; later rows (written after the state) are dropped."""
    if epochs == 0:
        return []
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing; it holds the history of the saved state (epochs 1-{epochs}), "
                          "so this run cannot be resumed; start a new run") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path}: not a readable CSV ({str(error).strip().splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise RunDirError(f"{path}: lacks column(s) {missing}; expected {', '.join(COLUMNS)}")
    epoch = pd.to_numeric(frame["epoch"], errors="coerce")
    rows = frame[epoch <= epochs]
    broken = rows[list(ALWAYS_SET)].isna().any(axis=1) | rows["member"].map(lambda x: x not in labels)
    if broken.any():
        line = int(rows.index[broken.to_numpy()][0]) + 2  # 1-based, after the header
        raise RunDirError(f"{path} line {line}: incomplete or unknown row (member {rows['member'][broken].iloc[0]!r}); "
                          "the file was cut or edited, so this run cannot be resumed")
    have = set(zip(rows["epoch"].astype(int), rows["member"]))
    expected = {(e, label) for e in range(1, epochs + 1) for label in labels}
    if have != expected or len(rows) != len(expected):
        lacking = sorted(expected - have)
        raise RunDirError(f"{path}: expected one row per member for epochs 1-{epochs} ({len(expected)} rows), "
                          f"found {len(rows)}"
                          + (f"; missing e.g. epoch {lacking[0][0]} of {lacking[0][1]}" if lacking else ""))
    rows = rows.astype({"epoch": int, "seed": int, "lambda_r": float, "stopped": bool})
    return rows.to_dict("records")
