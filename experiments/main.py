"""The experiment CLI: `python -m experiments.main --config dcnv2_ml100k` (or `lipctr-train`).

Loads the config's dataset (fetching ML-100K into datasets/ if needed), or the user's own files
(`--data DIR --format csv ...`, experiments.data_source), trains the orig and/or smooth variant
with every seed at once (experiments.run_config), writes `runs/<config>/<timestamp>/` and prints the
Table-1-style summary. The command line is experiments.cli's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax

from experiments import data_source
from experiments.cli import parse_args, print_config, resolve_configs
from experiments.configs import ConfigError, model_hparams
from experiments.evaluable import check_evaluable, test_candidates
from experiments.grid import check_grid_size, grid_note, wave_size
from experiments.report.analysis import run_analyses
from experiments.report.paper import write_report
from experiments.run_config import run_config
from experiments.rundir import RunDirError, open_run_dir, resume_config
from experiments.table import results_table
from lipctr import runtime, sharding
from lipctr.checkpoint import CheckpointError
from lipctr.data import DataError
from lipctr.io import OutputPathError, check_output
from lipctr.models import check_model
from lipctr.run_files import RunFileError

ANALYSES = ("lambda", "analyses", "report")
FIGURE4_MODELS = ("dcnv2", "widedeep", "xdeepfm")  # the paper's Figure 4: --analysis lambda with --models sweeps these


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


def lambda_analysis(configs: list[dict]) -> list[dict]:
    """--analysis lambda: Figure 4's lambda_r sweep is --select-lambda's, on the one config or, with
    --models, on the paper's Figure 4 backbones."""
    return [{**c, "select_lambda": True} if len(configs) == 1 or c["model"] in FIGURE4_MODELS else c for c in configs]


def train(config: dict, dataset, args: argparse.Namespace, analyses, mesh, candidates) -> Path:
    """One config's run directory: opened (new or --resume's), trained by run_config, summarised."""
    name = f"{config['model']}_{data_source.data_name(config, dataset)}"
    primary = sharding.is_primary()
    grid = bool(config["grid"] or config["grid_programs"])
    if grid or config["select_lambda"]:  # config.json records the wave size, so a resume keeps the waves
        config = {**config, "max_members": wave_size(config, dataset)}
    if grid and primary and not args.resume:
        print(grid_note(config, dataset), file=sys.stderr)
    run_dir, lock = open_run_dir(config, name, args.runs_dir, args.resume)
    try:
        if primary:
            print(f"{name}: {len(config['seeds'])} seeds; run directory {run_dir}", file=sys.stderr)
        start = time.perf_counter()
        finals = run_config(config, dataset, run_dir, candidates, not args.no_progress, mesh)
    except KeyboardInterrupt:
        raise Interrupted(run_dir) from None
    finally:
        if lock is not None:
            os.close(lock)
    if primary:
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
    try:
        return _main(parse_args(argv), argv)
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


def _main(args: argparse.Namespace, argv) -> int:
    analyses = parse_analyses(args.analysis)
    if args.resume and "lambda" in analyses:
        raise ConfigError("--analysis lambda cannot be combined with --resume: the lambda_r sweep is part of a run's "
                          "config (--select-lambda); start a run with it")
    configs = resolve_configs(args)
    if "lambda" in analyses:
        configs = lambda_analysis(configs)
    if args.print_config:
        print_config(configs, "python -m experiments.main", argv)
        return 0
    if not args.resume:
        check_output("--runs-dir", args.runs_dir or "runs", folder=True)
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
        analyses = ()
        if sharding.is_primary():
            print("note: in a multi-host run --analysis trains the lambda sweep only; run the analyses and report "
                  "afterwards in one process: python -m experiments.main --resume RUN_DIR --analysis analyses,report",
                  file=sys.stderr)
    if sharding.is_primary():  # the devices this run trains on, once every input check has passed
        print(runtime.device_line(), file=sys.stderr)
        print(f"{dataset.name}: {dataset.stats.get('interactions', 0):,} interactions, train/valid/test "
              f"{len(dataset.train):,}/{len(dataset.valid):,}/{len(dataset.test):,}", file=sys.stderr)
    run_dirs = [train(config, dataset, args, analyses, mesh, candidates[json.dumps(config["eval"], sort_keys=True)])
                for config in configs]
    if "report" in analyses:
        out = run_dirs[0] if len(run_dirs) == 1 else (
            Path(args.runs_dir or "runs") / f"study_{data_source.data_name(configs[0], dataset)}" / run_dirs[0].name)
        print(f"report: {write_report(run_dirs, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
