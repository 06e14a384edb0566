"""The mechanism study (issue 15): where does smooth's gain come from?

    python -m experiments.mechanism --config dcnv2_ml100k [--models all|dcnv2,nfm] [--controls a,b]
                                    [--seeds 2020,2021] [--epochs 50] [--resume DIR [--report-only]]

For each backbone trains orig, smooth and every control (experiments.mechanism.controls) as
ensembles over the config's seeds, runs the analyses of a run on each (local Lipschitz constant,
embedding weight norms, AUC under the largest input-embedding noise) and writes
`runs/mechanism_<dataset>/<timestamp>/`:
  <model>/<control>/<candidate>/   a run directory each (config.json, <orig|smooth>/, analysis/)
  mechanism.csv, mechanism.md      the table (experiments.mechanism.report)
  forest.png                       paired ΔAUC vs orig with its 95% confidence interval
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path

import pandas as pd

from lipctr import runtime
from lipctr.data import DataError, get_preset, load_dataset
from lipctr.inference import load_run
from lipctr.io import check_output, write_json_atomic, write_text_atomic
from lipctr.models import MODEL_NAMES
from lipctr.ranking import ranking_candidates

from experiments.report.analysis import (DENSE_NOISE_STDS, SPARSE_DATASETS, SPARSE_NOISE_STDS, local_lipschitz,
                                  noise_robustness, weight_norms)
from experiments.configs import ConfigError, load_config, merge, named_config, validate
from experiments.evaluable import check_evaluable
from experiments.mechanism.controls import Control, choose
from experiments.mechanism.report import write_mechanism_report
from experiments.run import run_variant


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.mechanism", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="dcnv2_ml100k", help="<model>_<dataset> or a .toml file")
    p.add_argument("--models", help="'all' or a comma list of backbones on the config's dataset (default: the config's)")
    p.add_argument("--controls", default="all", help="comma list of controls (orig and smooth are always trained)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the config's)")
    p.add_argument("--epochs", type=int, help="maximum number of epochs")
    p.add_argument("--data", help="dataset folder")
    p.add_argument("--runs-dir", default="runs", help="where runs/mechanism_<dataset>/<timestamp>/ is created")
    p.add_argument("--resume", metavar="DIR", help="continue a study directory (finished parts are kept)")
    p.add_argument("--report-only", action="store_true",
                   help="with --resume: train nothing; write the report from the finished (backbone, control) pairs")
    p.add_argument("--noise-draws", type=int, default=3, help="noise draws per member for the robustness analysis")
    p.add_argument("--lipschitz-examples", type=int, default=256, help="test examples for the Lipschitz analysis")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def study_configs(args) -> list[dict]:
    """One validated config per backbone, with the command line's seeds / epochs / data."""
    base = load_config(args.config)
    if args.models == "all":
        models = list(MODEL_NAMES)
    elif args.models:
        models = [m.strip() for m in args.models.split(",")]
        unknown = [m for m in models if m not in MODEL_NAMES]
        if unknown:
            raise ConfigError(f"--models: unknown backbone(s) {unknown}; known: all, {', '.join(MODEL_NAMES)}")
    else:
        models = [base["model"]]
    update: dict = {"train": {}}
    if args.seeds:
        try:
            update["seeds"] = [int(x) for x in args.seeds.split(",")]
        except ValueError:
            raise ConfigError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    if args.epochs is not None:
        update["train"]["max_epochs"] = args.epochs
    if args.data:
        update["data_path"] = args.data
    configs = [base if m == base["model"] else named_config(f"{m}_{base['dataset']}") for m in models]
    return [validate(merge(c, update), source=args.config) for c in configs]


def train_control(config: dict, control: Control, dataset, root: Path, candidates, progress: bool) -> dict:
    """Train every candidate of `control` on `config`'s backbone; the chosen one (best mean
    validation AUC over seeds): {"control", "variant", "chosen", "dir", "final", "selection"}."""
    trained = []
    for candidate in control.candidates:
        run_config = validate(merge(config, candidate.update), source=f"control {control.name}")
        run_dir = root / config["model"] / control.name / candidate.label
        if not (run_dir / "config.json").is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / "config.json", run_config)
        final = run_variant(run_config, dataset, control.variant, run_dir, candidates, progress)
        valid = sum(m["best_valid_auc"] for m in final["members"]) / len(final["members"])
        trained.append((valid, candidate.label, run_dir, final))
    valid, label, run_dir, final = max(trained, key=lambda t: t[0])
    return {"control": control.name, "variant": control.variant, "chosen": label, "dir": run_dir, "final": final,
            "selection": {t[1]: t[0] for t in trained}}


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
    return Path(args.runs_dir) / f"mechanism_{dataset_name}" / stamp


def main(argv=None) -> int:
    runtime.configure_xla()
    args = parse_args(argv)
    try:
        if args.report_only and not args.resume:
            raise ConfigError("--report-only needs --resume DIR (the study to report)")
        check_output("--runs-dir", args.runs_dir, folder=True)
        configs = study_configs(args)
        models = [c["model"] for c in configs]
        chosen = choose(args.controls)
        data_config = get_preset(configs[0]["dataset"])
        if configs[0]["data_path"]:
            data_config = dataclasses.replace(data_config, path=configs[0]["data_path"])
        dataset = load_dataset(data_config)
        check_evaluable(configs[0], dataset)
        root = study_root(args, configs[0]["dataset"])
    except (ConfigError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.resume:
        root.mkdir(parents=True, exist_ok=False)
        write_json_atomic(root / "study.json", {"argv": sys.argv[1:] if argv is None else list(argv),
                                                "models": models, "controls": [c.name for c in chosen]})
    print(runtime.device_line(), file=sys.stderr)  # the devices this study trains on
    print(f"mechanism study: {', '.join(models)} x {', '.join(c.name for c in chosen)}; {root}", file=sys.stderr)
    ev = configs[0]["eval"]
    candidates = ranking_candidates(dataset, "test", ev["num_negatives"], ev["ranking_seed"], ev["relevance"])
    results = []
    for config in configs:
        for control in chosen:
            if not control.applies_to(config["model"]):
                continue
            if args.report_only and not is_finished(config, control, root):
                print(f"not in the report (not trained to the end): {config['model']} x {control.name}", file=sys.stderr)
                continue
            result = train_control(config, control, dataset, root, candidates, not args.no_progress)
            result["analysis"] = analyse(result["dir"], control.variant, dataset, config, args.noise_draws,
                                         args.lipschitz_examples)
            results.append({"model": config["model"], "what": control.what, **result})
    command = "python -m experiments.mechanism " + " ".join(sys.argv[1:] if argv is None else argv)
    path = write_mechanism_report(results, root, command, configs, [c for c in chosen])
    print(f"wrote {path}")
    print(json.dumps({"study": str(root)}))
    return 0

