"""The experiment CLI: `python -m experiments.main --config dcnv2_ml100k`.

Loads (fetching ML-100K if needed) the config's dataset, trains the orig and/or smooth variant
with every seed at once, writes `runs/<config>/<timestamp>/` and prints the Table-1-style summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
import tomllib
from pathlib import Path

import jax

from lipctr import runtime, sharding
from lipctr.data import DataError, get_preset, load_dataset
from lipctr.io import write_json_atomic
from lipctr.ranking import ranking_candidates

from lipctr.models import MODEL_NAMES

from experiments.analysis import run_analyses
from experiments.configs import ConfigError, load_config, merge, validate
from experiments.report import write_report
from experiments.run import run_variant
from experiments.table import results_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.main", description=__doc__)
    p.add_argument("--config", default="dcnv2_ml100k", help="<model>_<dataset> (e.g. dcnv2_ml1m) or a .toml file")
    p.add_argument("--variant", choices=["orig", "smooth", "both"], help="default: both")
    p.add_argument("--lambda-r", type=float, help="lambda_r of the smooth variant")
    p.add_argument("--lambda-sweep", help="comma-separated lambda_r values trained as one ensemble, e.g. 0.1,0.3,0.5,0.7,0.9")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 2020,2021 (default 2020-2024)")
    p.add_argument("--epochs", type=int, help="maximum number of epochs")
    p.add_argument("--data", help="dataset folder (GroupLens files or RecBole atomic files)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.learning_rate=5e-3 (value in TOML syntax)")
    p.add_argument("--runs-dir", default="runs", help="where run directories are created")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in RUN_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--analysis", default="none",
                   help="after training: 'all' or a comma list of lambda (Fig. 4 sweep), analyses (weight norms, "
                        "noise, Lipschitz), report; 'none' (default) only trains")
    p.add_argument("--models", help="'all': run the config's dataset for all seven backbones (<model>_<dataset>); the lambda "
                        "sweep then covers the paper's Figure 4 models (dcnv2, widedeep, xdeepfm)")
    g = p.add_argument_group("devices and hosts (README: 'Many devices and hosts')")
    g.add_argument("--mesh", help="device mesh over all visible devices, e.g. seeds=4 or seeds=2,data=2 "
                                  "(default: the config's 'mesh'; '' = one device)")
    g.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize (settings not given below come from the "
                        "environment: JAX_COORDINATOR_ADDRESS, SLURM, Open MPI, Cloud TPU, Kubernetes)")
    g.add_argument("--coordinator-address", help="multi-host: HOST:PORT of process 0 (implies --distributed)")
    g.add_argument("--num-processes", type=int, help="multi-host: number of processes (implies --distributed)")
    g.add_argument("--process-id", type=int, help="multi-host: this process's id, 0..N-1 (implies --distributed)")
    return p.parse_args(argv)


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_key(config: dict, dotted: str, value) -> dict:
    update: dict = {}
    node = update
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return merge(config, update)


def resolve_config(args: argparse.Namespace, name: str | None = None) -> dict:
    """The config (`name`, default --config) with the command line's overrides applied and validated."""
    if args.resume:
        path = Path(args.resume) / "config.json"
        if not path.is_file():
            raise ConfigError(f"--resume {args.resume}: no config.json there; is it a run directory?")
        return validate(json.loads(path.read_text()), source=str(path))
    config = load_config(name or args.config)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.learning_rate=5e-3")
        key, value = item.split("=", 1)
        config = _set_key(config, key.strip(), _parse_value(value.strip()))
    if args.variant:
        config["variants"] = ["orig", "smooth"] if args.variant == "both" else [args.variant]
    if args.lambda_r is not None:
        config["loss"]["lambda_r"] = args.lambda_r
    if args.lambda_sweep:
        config["lambda_sweep"] = [float(x) for x in args.lambda_sweep.split(",")]
    if args.seeds:
        try:
            config["seeds"] = [int(x) for x in args.seeds.split(",")]
        except ValueError:
            raise ConfigError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    if args.epochs is not None:
        config["train"]["max_epochs"] = args.epochs
    if args.data:
        config["data_path"] = args.data
    if args.mesh is not None:
        config["mesh"] = args.mesh
    return validate(config, source=name or args.config)


ANALYSES = ("lambda", "analyses", "report")
LAMBDA_SWEEP = [0.1, 0.3, 0.5, 0.7, 0.9]
FIGURE4_MODELS = ("dcnv2", "widedeep", "xdeepfm")  # the paper's Figure 4; --models all sweeps these


def parse_analyses(text: str) -> tuple[str, ...]:
    if text == "none":
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
    if args.models != "all" or args.resume:
        raise ConfigError("--models takes 'all' (and cannot be combined with --resume)")
    return [resolve_config(args, f"{model}_{config['dataset']}") for model in MODEL_NAMES]


def run_config(config: dict, dataset, args, analyses, mesh=None, sweep_lambda: bool = True) -> Path:
    """Train one config's variants (and the lambda sweep and analyses asked for); its run dir.
    In a multi-host run every process trains, process 0 alone creates and writes files."""
    name = f"{config['model']}_{config['dataset']}"
    primary = sharding.is_primary()
    if args.resume:
        run_dir = Path(args.resume)
    else:
        stamp = sharding.broadcast_text(datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
        run_dir = Path(args.runs_dir) / name / stamp
        if primary:
            run_dir.mkdir(parents=True, exist_ok=False)
            write_json_atomic(run_dir / "config.json", config)
        sharding.barrier(f"run directory {run_dir}")
    if primary:
        print(f"{name}: {len(config['seeds'])} seeds; run directory {run_dir}", file=sys.stderr)
    ev = config["eval"]
    candidates = ranking_candidates(dataset, "test", ev["num_negatives"], ev["ranking_seed"], ev["relevance"])
    start = time.perf_counter()
    progress = not args.no_progress
    finals = {v: run_variant(config, dataset, v, run_dir, candidates, progress, mesh=mesh) for v in config["variants"]}
    if "lambda" in analyses and sweep_lambda:
        sweep = {**config, "lambda_sweep": config["lambda_sweep"] or LAMBDA_SWEEP}
        finals["lambda_sweep"] = run_variant(sweep, dataset, "smooth", run_dir, candidates, progress, "lambda_sweep",
                                             mesh=mesh)
    if not primary:
        return run_dir
    print(results_table(finals, tuple(ev["ks"])))
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
    sharding.deterministic_gpu_ops()
    runtime.cpu_speed_flags()
    args = parse_args(argv)
    try:
        analyses = parse_analyses(args.analysis)
        configs = resolve_configs(args)
        mesh = start_devices(args, configs[0]["mesh"] if args.mesh is None else args.mesh)
        data_config = get_preset(configs[0]["dataset"])
        if configs[0]["data_path"]:
            data_config = dataclasses.replace(data_config, path=configs[0]["data_path"])
        dataset = load_dataset(data_config)
    except (ConfigError, DataError, sharding.MeshError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if jax.process_count() > 1 and {"analyses", "report"} & set(analyses):
        analyses = tuple(a for a in analyses if a == "lambda")
        if sharding.is_primary():
            print("note: in a multi-host run --analysis trains the lambda sweep only; run the analyses and report "
                  "afterwards in one process: python -m experiments.main --resume RUN_DIR --analysis analyses,report",
                  file=sys.stderr)
    if sharding.is_primary():
        print(f"{configs[0]['dataset']}: {dataset.stats.get('interactions', 0):,} interactions, train/valid/test "
              f"{len(dataset.train):,}/{len(dataset.valid):,}/{len(dataset.test):,}", file=sys.stderr)
    run_dirs = [run_config(config, dataset, args, analyses, mesh,
                           sweep_lambda=len(configs) == 1 or config["model"] in FIGURE4_MODELS)
                for config in configs]
    if "report" in analyses:
        out = run_dirs[0] if len(run_dirs) == 1 else (
            Path(args.runs_dir) / f"study_{configs[0]['dataset']}" / run_dirs[0].name)
        print(f"report: {write_report(run_dirs, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
