"""Train one config in a run directory: `run_config(config, dataset, run_dir, candidates)`.

What experiments.main runs for each config, and what the studies (experiments.mechanism,
experiments.bandwidth) run for each of theirs: the config's variants as plain ensembles
(experiments.run.run_variant), or as a grid (experiments.grid: every variant's validation-chosen
point), and with `select_lambda` also the lambda_r sweep of smooth (a grid over loss.lambda_r,
output lambda_sweep/, Figure 4's data) beside them. In a multi-host run every process trains and
process 0 alone writes files.
"""

from __future__ import annotations

from pathlib import Path

from experiments.grid import run_grid
from experiments.grid_report import chosen_final, describe, edge_notes, write_grid_outputs
from experiments.run import run_variant
from lipctr import sharding

LAMBDA_SWEEP = [0.1, 0.3, 0.5, 0.7, 0.9]  # select_lambda's sweep when the config's lambda_sweep is empty
VALIDATION_CHOSEN = "smooth, lambda_r chosen on validation"  # select_lambda's row of the summary


def lambda_sweep_config(config: dict) -> dict:
    """`config` as select_lambda's grid: loss.lambda_r over its lambda_sweep, else LAMBDA_SWEEP."""
    return {**config, "select_lambda": False, "lambda_sweep": [],
            "grid": {"loss.lambda_r": config["lambda_sweep"] or LAMBDA_SWEEP}}


def run_config(config: dict, dataset, run_dir: Path, candidates, progress: bool = True, mesh=None) -> dict:
    """Train (or resume, or read back) the config's variants in `run_dir` -> {summary row: final.json
    content}: one row per variant (a grid's chosen point), plus VALIDATION_CHOSEN with select_lambda.
    A grid or select_lambda run writes grid.csv and selected.json (experiments.grid_report) too."""
    grid = bool(config["grid"] or config["grid_programs"])
    records = [r for v in config["variants"] if grid
               for r in run_grid(config, dataset, v, run_dir, candidates, progress, mesh)]
    fixed = {**config, "lambda_sweep": []} if config["select_lambda"] else config  # smooth at loss.lambda_r
    finals = {} if grid else {v: run_variant(fixed, dataset, v, run_dir, candidates, progress, mesh=mesh)
                              for v in config["variants"]}
    if config["select_lambda"]:
        records += run_grid(lambda_sweep_config(config), dataset, "smooth", run_dir, candidates, progress, mesh,
                            base="lambda_sweep")
    if not records or not sharding.is_primary():
        return finals
    chosen = write_grid_outputs(run_dir, records)
    print("chosen on validation (grid.csv, selected.json): " + "; ".join(describe(v, c) for v, c in chosen.items()))
    for note in edge_notes(records, chosen):
        print(f"note: {note}")
    finals = {**{v: chosen_final(chosen[v]) for v in config["variants"] if grid}, **finals}
    if config["select_lambda"]:
        finals[VALIDATION_CHOSEN] = chosen_final(chosen["lambda_sweep"])
    return finals
