"""The mechanism study: where does smooth's gain come from?

    python -m experiments.mechanism --config dcnv2_ml100k [--models all|paper|dcnv2,nfm] [--controls a,b]
                                    [--seeds 2020,2021] [--epochs 50] [--set KEY=VALUE] [--mesh seeds=2]
                                    [--select-lambda]
    python -m experiments.mechanism --resume DIR [--epochs 80] [--report-only]

For each backbone trains orig, smooth and every control (experiments.mechanism.controls) as
ensembles over the config's seeds, runs the analyses of a run on each (local Lipschitz constant,
embedding weight norms, AUC under the largest input-embedding noise) and writes
`runs/mechanism_<dataset>/<timestamp>/`. With --select-lambda each backbone first trains smooth's
lambda_r sweep (the config's lambda_sweep, else 0.1..0.9, over the study's seeds) and every
control then trains at the lambda_r of best mean validation AUC:
  <model>/lambda_sweep/            --select-lambda's grid run (grid.csv, selected.json)
  <model>/<control>/<candidate>/   a run directory each (config.json, <orig|smooth>/, analysis/)
  mechanism.csv, mechanism.md      the table (experiments.mechanism.report)
  forest.png                       paired ΔAUC vs orig with its 95% confidence interval
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import pandas as pd

from experiments import data_source
from experiments.cli import add_shared_arguments, parse, print_config, resolve_configs
from experiments.configs import ConfigError, merge, validate
from experiments.evaluable import check_evaluable, test_candidates
from experiments.grid import run_grid
from experiments.grid_report import select, write_grid_outputs
from experiments.mechanism.controls import Control, choose
from experiments.mechanism.report import write_mechanism_report
from experiments.report.analysis import (
    DENSE_NOISE_STDS,
    SPARSE_DATASETS,
    SPARSE_NOISE_STDS,
    local_lipschitz,
    noise_robustness,
    weight_norms,
)
from experiments.run_config import lambda_sweep_config, run_config
from experiments.rundir import CONFIG_FLAGS
from lipctr import runtime, sharding
from lipctr.data import DataError
from lipctr.inference import load_run
from lipctr.io import check_output, write_json_atomic, write_text_atomic


def parse_args(argv=None) -> argparse.Namespace:
    return parse(parser(), argv, {})


def parser() -> argparse.ArgumentParser:
    """The study's command line: every training command's flags (experiments.cli) and its own."""
    p = argparse.ArgumentParser(prog="python -m experiments.mechanism", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_arguments(p)
    g = p.add_argument_group("the mechanism study's own")
    g.add_argument("--controls", help="comma list of controls (default all; orig and smooth are always trained)")
    g.add_argument("--report-only", action="store_true",
                   help="with --resume: train nothing; write the report from the finished (backbone, control) pairs")
    g.add_argument("--select-lambda", action="store_true", default=None,
                   help="per backbone, first train smooth's lambda_r sweep (the config's lambda_sweep, else "
                        "0.1..0.9) over the study's seeds; every control then trains at the lambda_r of best mean "
                        "validation AUC")
    g.add_argument("--noise-draws", type=int, default=3, help="noise draws per member for the robustness analysis")
    g.add_argument("--lipschitz-examples", type=int, default=256, help="test examples for the Lipschitz analysis")
    return p


def resumed_args(args: argparse.Namespace) -> argparse.Namespace:
    """--resume DIR: the command line stored in DIR/study.json, with --epochs (only to train longer),
    --mesh, --no-progress and --report-only of this one; ConfigError for a flag that would change the study."""
    root = Path(args.resume)
    if not (root / "study.json").is_file():
        raise ConfigError(f"--resume {args.resume}: no study.json there; is it a mechanism study directory?")
    given = [flag for dest, flag in {**CONFIG_FLAGS, "controls": "--controls"}.items()
             if getattr(args, dest, None) not in (None, [])]
    if given:
        raise ConfigError(f"{given[0]} cannot be combined with --resume: a resume continues the study's stored command "
                          f"({root / 'study.json'}); with --resume only --epochs, --mesh, --no-progress and "
                          "--report-only apply")
    stored = parse_args(json.loads((root / "study.json").read_text())["argv"])
    if args.epochs is not None:
        stored.epochs = args.epochs
    if args.mesh is not None:
        stored.mesh = args.mesh
    stored.resume, stored.no_progress, stored.report_only = args.resume, args.no_progress, args.report_only
    return stored


def study_configs(args: argparse.Namespace) -> list[dict]:
    """One validated config per backbone (experiments.cli.resolve_configs), the study's resume aside."""
    return resolve_configs(argparse.Namespace(**{**vars(args), "resume": None}))


def train_control(config: dict, control: Control, dataset, root: Path, candidates, progress: bool, mesh=None) -> dict:
    """Train every candidate of `control` on `config`'s backbone; the chosen one (best mean
    validation AUC over seeds): {"control", "variant", "chosen", "dir", "final", "selection"}."""
    trained = []
    for candidate in control.candidates:
        config_ = validate(merge(config, candidate.update), source=f"control {control.name}")
        run_dir = root / config["model"] / control.name / candidate.label
        if not (run_dir / "config.json").is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / "config.json", config_)
        final = run_config({**config_, "variants": [control.variant]}, dataset, run_dir, candidates, progress,
                           mesh)[control.variant]
        valid = sum(m["best_valid_auc"] for m in final["members"]) / len(final["members"])
        trained.append((valid, candidate.label, run_dir, final))
    valid, label, run_dir, final = max(trained, key=lambda t: t[0])
    return {"control": control.name, "variant": control.variant, "chosen": label, "dir": run_dir, "final": final,
            "selection": {t[1]: t[0] for t in trained}}


def select_lambda(config: dict, dataset, root: Path, candidates, progress: bool, mesh=None) -> float:
    """Train (or read back) smooth's lambda_r sweep on `config`'s backbone in root/<model>/lambda_sweep/
    and return the lambda_r of best mean validation AUC over the seeds (grid.csv, selected.json there)."""
    sweep = validate({**lambda_sweep_config(config), "variants": ["smooth"]}, source="--select-lambda")
    run_dir = root / config["model"] / "lambda_sweep"
    if not (run_dir / "config.json").is_file():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", sweep)
    records = run_grid(sweep, dataset, "smooth", run_dir, candidates, progress, mesh)
    if sharding.is_primary():
        write_grid_outputs(run_dir, records)
    return float(select(records)["smooth"]["point"]["loss.lambda_r"])


def sweep_finished(config: dict, root: Path) -> bool:
    """Whether --select-lambda's sweep on `config`'s backbone has been trained to the end."""
    return (root / config["model"] / "lambda_sweep" / "selected.json").is_file()


def is_finished(config: dict, control: Control, root: Path) -> bool:
    """Whether every candidate of `control` on `config`'s backbone has been trained to the end."""
    return all((root / config["model"] / control.name / c.label / control.variant / "final.json").is_file()
               for c in control.candidates)


def analyse(run_dir: Path, variant: str, dataset, config: dict, noise_draws: int, lipschitz_examples: int) -> dict:
    """Per-member analyses of a trained variant -> {name: DataFrame}, cached under run_dir/analysis/."""
    out = run_dir / "analysis"
    largest = max(SPARSE_NOISE_STDS if config["dataset"] in SPARSE_DATASETS else DENSE_NOISE_STDS)
    names = ("weight_norms", "noise", "lipschitz")
    if not all((out / f"{n}.csv").is_file() for n in names):
        run = load_run(run_dir, variant)
        tables = {"weight_norms": weight_norms(run), "noise": noise_robustness(run, dataset, (largest,), noise_draws),
                  "lipschitz": local_lipschitz(run, dataset, lipschitz_examples)}
        for name, frame in tables.items():
            write_text_atomic(out / f"{name}.csv", frame.to_csv(index=False))
    return {n: pd.read_csv(out / f"{n}.csv") for n in names}


def study_root(args, dataset_name: str) -> Path:
    if args.resume:
        root = Path(args.resume)
        if not (root / "study.json").is_file():
            raise ConfigError(f"--resume {args.resume}: no study.json there; is it a mechanism study directory?")
        return root
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(args.runs_dir or "runs") / f"mechanism_{dataset_name}" / stamp


def main(argv=None) -> int:
    runtime.configure_xla()
    try:
        args = parse_args(argv)
        if args.report_only and not args.resume:
            raise ConfigError("--report-only needs --resume DIR (the study to report)")
        if args.resume:
            args = resumed_args(args)
        if args.select_lambda and any(s.split("=")[0].strip() == "loss.lambda_r" for s in args.set or []):
            raise ConfigError("--select-lambda chooses loss.lambda_r on validation; drop --set loss.lambda_r "
                              "(the values it tries: --set lambda_sweep=[0.1,0.5,0.9])")
        check_output("--runs-dir", args.runs_dir or "runs", folder=True)
        configs = study_configs(args)
        if not args.select_lambda and any(c["lambda_sweep"] for c in configs):  # its members would be averaged
            raise ConfigError("key 'lambda_sweep' gives the lambda_r values --select-lambda tries; add "
                              "--select-lambda, or drop lambda_sweep to train every control at loss.lambda_r")
        if args.print_config:
            print_config(configs, "python -m experiments.mechanism", argv)
            return 0
        models = [c["model"] for c in configs]
        chosen = choose(args.controls or "all")
        mesh = sharding.make_mesh(configs[0]["mesh"])
        dataset = data_source.load(configs[0])
        check_evaluable(configs[0], dataset)
        candidates = test_candidates(configs[0], dataset)
        root = study_root(args, data_source.data_name(configs[0], dataset))
    except (ConfigError, DataError, ValueError) as error:  # ValueError: MeshError, OutputPathError
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # e.g. while the data loads
        print("interrupted before any training; nothing to resume", file=sys.stderr)
        return 130
    if not args.resume:
        root.mkdir(parents=True, exist_ok=False)
        write_json_atomic(root / "study.json", {"argv": sys.argv[1:] if argv is None else list(argv),
                                                "models": models, "controls": [c.name for c in chosen]})
    print(runtime.device_line(), file=sys.stderr)  # the devices this study trains on
    print(f"mechanism study: {', '.join(models)} x {', '.join(c.name for c in chosen)}; {root}", file=sys.stderr)
    try:
        results, reported = train_study(args, configs, chosen, dataset, candidates, root, mesh)
    except KeyboardInterrupt:
        print(f"interrupted; continue with: python -m experiments.mechanism --resume {root}", file=sys.stderr)
        return 130
    command = "python -m experiments.mechanism " + " ".join(sys.argv[1:] if argv is None else argv)
    path = write_mechanism_report(results, root, command, reported or configs, list(chosen),
                                  data_source.data_name(configs[0], dataset), lambda_chosen=bool(args.select_lambda))
    print(f"wrote {path}")
    print(json.dumps({"study": str(root)}))
    return 0


def train_study(args, configs: list[dict], chosen: list[Control], dataset, candidates, root: Path, mesh):
    """Train (or read back) every backbone's controls, --select-lambda's sweep first -> (results of the
    report, each backbone's config as trained)."""
    results, reported = [], []
    for config in configs:
        if args.select_lambda:
            if args.report_only and not sweep_finished(config, root):
                print(f"not in the report (lambda_r sweep not trained to the end): {config['model']}", file=sys.stderr)
                continue
            lambda_r = select_lambda(config, dataset, root, candidates, not args.no_progress, mesh)
            print(f"{config['model']}: lambda_r {lambda_r:g} chosen on validation "
                  f"({root / config['model'] / 'lambda_sweep' / 'selected.json'})", file=sys.stderr)
            config = validate(merge(config, {"loss": {"lambda_r": lambda_r}, "lambda_sweep": []}),
                              source="--select-lambda")
        reported.append(config)
        for control in chosen:
            if not control.applies_to(config["model"]):
                continue
            if args.report_only and not is_finished(config, control, root):
                print(f"not in the report (not trained to the end): {config['model']} x {control.name}",
                      file=sys.stderr)
                continue
            result = train_control(config, control, dataset, root, candidates, not args.no_progress, mesh)
            result["analysis"] = analyse(result["dir"], control.variant, dataset, config, args.noise_draws,
                                         args.lipschitz_examples)
            results.append({"model": config["model"], "what": control.what, **result})
    return results, reported
