"""The experiment CLI: `python -m experiments.main --config dcnv2_ml100k`.

Loads the config's dataset (fetching ML-100K into datasets/ if needed), or the user's own files
(`--data DIR --format csv ...`, experiments.data_source), trains the orig and/or smooth variant
with every seed at once, writes `runs/<config>/<timestamp>/` and prints the Table-1-style summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import jax

from lipctr import runtime, sharding
from lipctr.checkpoint import CheckpointError
from lipctr.data import DataError
from lipctr.io import OutputPathError, check_output, write_json_atomic
from lipctr.ranking import ranking_candidates
from lipctr.run_files import RunFileError

from lipctr.models import MODEL_NAMES, check_model

from experiments import data_source
from experiments.report.analysis import run_analyses
from experiments.cli import parse_args, resolve_config
from experiments.configs import ConfigError, model_hparams
from experiments.evaluable import check_evaluable
from experiments.grid import check_grid_size, grid_note, run_grid, wave_size
from experiments.grid_report import chosen_final, describe, edge_notes, write_grid_outputs
from experiments.report.paper import write_report
from experiments.run import run_variant
from experiments.rundir import RunDirError, create_run_dir, lock_run_dir, read_run_config, resume_config
from experiments.table import results_table



ANALYSES = ("lambda", "analyses", "report")
LAMBDA_SWEEP = [0.1, 0.3, 0.5, 0.7, 0.9]
VALIDATION_CHOSEN = "smooth, lambda_r chosen on validation"  # --select-lambda's row of the summary
FIGURE4_MODELS = ("dcnv2", "widedeep", "xdeepfm")  # the paper's Figure 4; --models all sweeps these


class Interrupted(Exception):
    """Ctrl-C while training in `run_dir`."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def parse_analyses(text: str | None) -> tuple[str, ...]:
    if text in (None, "none"):
        return ()
    if text == "all":
        return ANALYSES
    chosen = tuple(x.strip() for x in text.split(","))
    unknown = set(chosen) - set(ANALYSES)
    if unknown:
        raise ConfigError(f"--analysis: unknown {sorted(unknown)}; choose 'all', 'none' or from {', '.join(ANALYSES)}")
    return chosen


def resolve_configs(args: argparse.Namespace) -> list[dict]:
    """One config, or with --models all one per backbone on the config's dataset."""
    config = resolve_config(args)
    if not args.models:
        return [config]
    if args.models != "all":
        raise ConfigError(f"--models {args.models!r}: expected 'all'")
    return [resolve_config(args, f"{model}_{config['dataset']}") for model in MODEL_NAMES]


def test_candidates(config: dict, dataset):
    """The test split's ranking candidates of a config; ConfigError if eval.num_negatives exceeds
    the items some test user never interacted with (the only items it can be ranked against)."""
    ev = config["eval"]
    try:
        return ranking_candidates(dataset, "test", ev["num_negatives"], ev["ranking_seed"], ev["relevance"])
    except ValueError as error:
        raise ConfigError(f"key 'eval.num_negatives' = {ev['num_negatives']}: {error}") from None


def run_name(config: dict, dataset) -> str:
    """A run's folder under --runs-dir: <model>_<dataset>, the dataset being the config's preset or,
    for one's own files (data.format), the data set's name (its folder, or data.name)."""
    return f"{config['model']}_{data_name(config, dataset)}"


def data_name(config: dict, dataset) -> str:
    """The config's preset dataset, or for one's own files (data.format) the data set's name."""
    return dataset.name if "format" in config["data"] else config["dataset"]


def run_stamp() -> str:
    """A new run directory's name: the local time to the second."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _open_run_dir(config: dict, args: argparse.Namespace, name: str) -> tuple[Path, int | None]:
    """The run directory (new, or --resume's), locked, with config.json written; (path, lock)."""
    primary = sharding.is_primary()
    if args.resume:
        run_dir = Path(args.resume)
        lock = lock_run_dir(run_dir)
        if primary and read_run_config(run_dir) != config:
            write_json_atomic(run_dir / "config.json", config)  # what --epochs / --mesh changed
    else:
        parent = Path(args.runs_dir or "runs") / name
        try:
            made = create_run_dir(parent, run_stamp()).name if primary else ""
        except OSError as error:
            raise RunDirError(f"--runs-dir {args.runs_dir or 'runs'}: cannot create {parent} ({error.strerror})") from None
        run_dir = parent / sharding.broadcast_text(made)
        lock = lock_run_dir(run_dir)
        if primary:
            write_json_atomic(run_dir / "config.json", config)
    sharding.barrier(f"run directory {run_dir}")
    return run_dir, lock


def run_config(config: dict, dataset, args, analyses, mesh=None, sweep_lambda: bool = True,
               candidates=None) -> Path:
    """Train one config's variants (and the lambda sweep and analyses asked for); its run dir.
    In a multi-host run every process trains, process 0 alone creates and writes files."""
    name = run_name(config, dataset)
    primary = sharding.is_primary()
    candidates = test_candidates(config, dataset) if candidates is None else candidates
    grid = bool(config["grid"] or config["grid_programs"])
    if grid or config["select_lambda"]:  # config.json records the wave size, so a resume keeps the waves
        config = {**config, "max_members": wave_size(config, dataset)}
    if grid and primary and not args.resume:
        print(grid_note(config, dataset), file=sys.stderr)
    run_dir, lock = _open_run_dir(config, args, name)
    try:
        if primary:
            print(f"{name}: {len(config['seeds'])} seeds; run directory {run_dir}", file=sys.stderr)
        start = time.perf_counter()
        progress = not args.no_progress
        records = [r for v in config["variants"] if grid
                   for r in run_grid(config, dataset, v, run_dir, candidates, progress, mesh)]
        fixed = {**config, "lambda_sweep": []} if config["select_lambda"] else config  # smooth at loss.lambda_r
        finals = {} if grid else {v: run_variant(fixed, dataset, v, run_dir, candidates, progress, mesh=mesh)
                                  for v in config["variants"]}
        if config["select_lambda"]:
            sweep = {**config, "select_lambda": False, "lambda_sweep": [],
                     "grid": {"loss.lambda_r": config["lambda_sweep"] or LAMBDA_SWEEP}}
            records += run_grid(sweep, dataset, "smooth", run_dir, candidates, progress, mesh, base="lambda_sweep")
        elif "lambda" in analyses and sweep_lambda:
            sweep = {**config, "lambda_sweep": config["lambda_sweep"] or LAMBDA_SWEEP, "grid": {}, "grid_programs": {}}
            finals["lambda_sweep"] = run_variant(sweep, dataset, "smooth", run_dir, candidates, progress,
                                                 "lambda_sweep", mesh=mesh)
    except KeyboardInterrupt:
        raise Interrupted(run_dir) from None
    finally:
        if lock is not None:
            os.close(lock)
    if not primary:
        return run_dir
    if records:
        chosen = write_grid_outputs(run_dir, records)
        print("chosen on validation (grid.csv, selected.json): " + "; ".join(describe(v, c) for v, c in chosen.items()))
        for note in edge_notes(records, chosen):
            print(f"note: {note}")
        finals = {**{v: chosen_final(chosen[v]) for v in config["variants"] if grid}, **finals}
        if config["select_lambda"]:
            finals[VALIDATION_CHOSEN] = chosen_final(chosen["lambda_sweep"])
    print(results_table(finals, tuple(config["eval"]["ks"])))
    if "analyses" in analyses:
        run_analyses(run_dir, dataset, config["variants"])
    print(f"{name}: wall time {time.perf_counter() - start:.1f} s; outputs in {run_dir}\n")
    return run_dir


def start_devices(args: argparse.Namespace, spec: str):
    """Join the multi-host run if asked (before anything touches a device); the mesh of `spec`."""
    if args.distributed or any(v is not None for v in (args.coordinator_address, args.num_processes, args.process_id)):
        sharding.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    return sharding.make_mesh(spec)


def main(argv=None) -> int:
    """The CLI; exit code 0, 2 for bad input (one `error:` line, nothing written), 130 on Ctrl-C."""
    runtime.configure_xla()
    args = parse_args(argv)
    try:
        return _main(args)
    except (ConfigError, DataError, sharding.MeshError, CheckpointError, RunDirError, RunFileError,
            OutputPathError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"interrupted; continue with: python -m experiments.main --resume {stop.run_dir}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted before any training; nothing to resume", file=sys.stderr)
        return 130


def _main(args: argparse.Namespace) -> int:
    analyses = parse_analyses(args.analysis)
    if not args.resume:
        check_output("--runs-dir", args.runs_dir or "runs", folder=True)
    configs = resolve_configs(args)
    if not args.resume:
        for config in configs:
            check_grid_size(config, args.grid_limit)
    if "analyses" in analyses and any(c["grid"] or c["grid_programs"] for c in configs):
        raise ConfigError("--analysis analyses: not for a grid run (its variants hold many points); rerun the "
                          "chosen point (selected.json) without the grid to analyse it")
    if args.resume and sharding.is_primary():
        notes = resume_config(args)[1]
        print(f"--resume {args.resume}: stored config" + (f"; applied {'; '.join(notes)}" if notes else ""),
              file=sys.stderr)
    mesh = start_devices(args, configs[0]["mesh"])
    dataset = data_source.load(configs[0])
    candidates = {}
    for config in configs:  # every config's data needs and bound on eval.num_negatives, before any run directory
        check_evaluable(config, dataset)
        try:  # the model's own checks, including those needing the data's fields (abstract init)
            check_model(config["model"], dataset.schema, 1, **model_hparams(config))
        except ValueError as error:
            raise ConfigError(f"model_hparams: {error}") from None
        key = json.dumps(config["eval"], sort_keys=True)
        if key not in candidates:
            candidates[key] = test_candidates(config, dataset)
    if jax.process_count() > 1 and {"analyses", "report"} & set(analyses):
        analyses = tuple(a for a in analyses if a == "lambda")
        if sharding.is_primary():
            print("note: in a multi-host run --analysis trains the lambda sweep only; run the analyses and report "
                  "afterwards in one process: python -m experiments.main --resume RUN_DIR --analysis analyses,report",
                  file=sys.stderr)
    if sharding.is_primary():  # the devices this run trains on, once every input check has passed
        print(runtime.device_line(), file=sys.stderr)
        print(f"{dataset.name}: {dataset.stats.get('interactions', 0):,} interactions, train/valid/test "
              f"{len(dataset.train):,}/{len(dataset.valid):,}/{len(dataset.test):,}", file=sys.stderr)
    run_dirs = [run_config(config, dataset, args, analyses, mesh,
                           sweep_lambda=len(configs) == 1 or config["model"] in FIGURE4_MODELS,
                           candidates=candidates[json.dumps(config["eval"], sort_keys=True)])
                for config in configs]
    if "report" in analyses:
        out = run_dirs[0] if len(run_dirs) == 1 else (
            Path(args.runs_dir or "runs") / f"study_{data_name(configs[0], dataset)}" / run_dirs[0].name)
        print(f"report: {write_report(run_dirs, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
