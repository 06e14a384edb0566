"""A trained grid's selection and outputs.

Selection rule: per variant, the point with the best mean VALIDATION AUC over its seeds (each
member's best_valid_auc, the early-stopping criterion) is chosen (the first such point on a tie);
its test metrics are reported. Test metrics never take part in the choice.

Outputs in the run directory, written atomically:
  grid.csv            one row per (variant, point): its hyper-parameters, seeds, diverged members,
                      valid / test AUC and LogLoss, best epoch and epochs trained (mean and std over seeds)
  selected.json       per variant: the chosen point, its validation and test metrics, its members
  grid_<variant>.png  validation (and test) AUC over a 1-D grid (line plot) or a 2-D grid (heatmap)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.report.figures import grid_figure, save_png
from lipctr.io import write_json_atomic, write_text_atomic

RULE = "best mean validation AUC over seeds (best_valid_auc); test metrics reported, never used to choose"
COLUMNS = {"valid_auc": "best_valid_auc", "valid_logloss": "valid_logloss", "test_auc": "auc",
           "test_logloss": "logloss", "best_epoch": "best_epoch", "epochs": "epochs"}
BOOKKEEPING = {"member", "seed", "lambda_r", "hparams", "best_epoch", "best_valid_auc", "diverged", "variant",
               "output", "point", "valid_logloss", "epochs"}


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _point_key(point: dict) -> tuple:
    return tuple(point.items())


def group_points(records: list[dict]) -> dict[tuple[str, tuple], list[dict]]:
    """{(variant, point items): its members' records}, in training order."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["variant"], _point_key(r["point"])), []).append(r)
    return groups


def grid_table(records: list[dict]) -> pd.DataFrame:
    """One row per (variant, point): hyper-parameters, seeds, diverged, outputs, and each of
    COLUMNS as <name>_mean / <name>_std over the point's members (std with ddof 1)."""
    rows = []
    for (variant, point), members in group_points(records).items():
        row = {"variant": variant, **dict(point), "seeds": len(members),
               "diverged": sum(bool(m.get("diverged", False)) for m in members),
               "outputs": " ".join(dict.fromkeys(m["output"] for m in members))}
        for name, key in COLUMNS.items():
            row[f"{name}_mean"], row[f"{name}_std"] = _mean_std([m[key] for m in members])
        rows.append(row)
    keys = list(dict.fromkeys(k for r in records for k in r["point"]))
    frame = pd.DataFrame(rows)
    return frame[["variant", *keys, *(c for c in frame.columns if c not in keys and c != "variant")]]


def select(records: list[dict]) -> dict[str, dict]:
    """{variant: {"point", "members"}} of the point with the best mean validation AUC (NaN: never)."""
    best: dict = {}
    for (variant, point), members in group_points(records).items():
        valid = float(np.mean([m["best_valid_auc"] for m in members]))
        valid = -math.inf if math.isnan(valid) else valid
        if variant not in best or valid > best[variant][0]:
            best[variant] = (valid, {"point": dict(point), "members": members})
    return {variant: chosen for variant, (_, chosen) in best.items()}


def selected_summary(chosen: dict) -> dict:
    """selected.json's entry of one variant: the rule, the point, validation and test metrics."""
    members = chosen["members"]
    tests = [k for k in members[0] if k not in BOOKKEEPING and isinstance(members[0][k], (int, float))]
    summary = lambda key: dict(zip(("mean", "std"), _mean_std([m[key] for m in members])))  # noqa: E731
    return {"rule": RULE, "point": chosen["point"], "seeds": len(members),
            "valid_auc": summary("best_valid_auc"), "valid_logloss": summary("valid_logloss"),
            "test": {k: summary(k) for k in tests},
            "members": [{"output": m["output"], "member": m["member"]} for m in members]}


def chosen_final(chosen: dict) -> dict:
    """A final.json-like {"summary", "members"} of the chosen point's members (experiments.table)."""
    members = chosen["members"]
    return {"summary": {f"{members[0]['lambda_r']:g}": {}}, "members": members}


def edge_notes(records: list[dict], chosen: dict[str, dict]) -> list[str]:
    """One note per (variant, numeric grid key with 3 or more values) whose chosen value is the
    smallest or largest of its range: the best may lie beyond the grid."""
    notes = []
    for variant, c in chosen.items():
        for key, value in c["point"].items():
            values = sorted({r["point"][key] for r in records if r["variant"] == variant and key in r["point"]})
            if len(values) < 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                continue
            if value in (values[0], values[-1]):
                side = "smallest" if value == values[0] else "largest"
                notes.append(f"{variant}: {key}={value:g} is the {side} value of its grid "
                             f"({values[0]:g}..{values[-1]:g}); "
                             "the best may lie beyond it: extend the range on that side")
    return notes


def describe(variant: str, chosen: dict) -> str:
    point = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen["point"].items())
    valid = _mean_std([m["best_valid_auc"] for m in chosen["members"]])
    return f"{variant}: {point or 'no grid key of its own'} (mean validation AUC {100 * valid[0]:.2f})"


def write_grid_outputs(run_dir: Path, records: list[dict]) -> dict[str, dict]:
    """grid.csv, selected.json and a figure per variant whose grid is 1-D or 2-D; the selection."""
    table = grid_table(records)
    chosen = select(records)
    write_text_atomic(run_dir / "grid.csv", table.to_csv(index=False))
    write_json_atomic(run_dir / "selected.json", {v: selected_summary(c) for v, c in chosen.items()})
    for variant, c in chosen.items():
        rows = table[table["variant"] == variant].dropna(axis=1, how="all")
        fig = grid_figure(rows, [k for k in c["point"] if rows[k].nunique() > 1], c["point"], variant)
        if fig is not None:
            save_png(fig, run_dir / f"grid_{variant}.png")
    return chosen
