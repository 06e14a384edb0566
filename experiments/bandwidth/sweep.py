"""Supervision-bandwidth sweep (beyond the paper): does a wider rating head shrink the local
Lipschitz constant and lift AUC, as Theorem 1 suggests?

`python -m experiments.bandwidth [--config dcnv2_ml100k] [--models dcnv2,nfm] [--seeds 2020,2021,2022]
[--epochs 50] [--set bandwidth.classes=[2,3,5,10,20]] [--set bandwidth.preset=small] [--runs-dir runs]`

The sweep's own settings are the config's [bandwidth] table (experiments.configs.defaults: the
synthetic preset and its data seed, the classes N, the threshold quantile, the Lipschitz
examples and power iterations), set like any key with --set; the model, seeds, epochs, patience,
learning rate, batch size, lambda_r and aggregation are the config's. The config's dataset is not
read: one synthetic dataset (fixed data seed) keeps its continuous latent preference; for each N
the preference is bucketed into classes 1..N (lipctr.rating_buckets.bucketize, edges fitted on
train) with the binary threshold at the same quantile, so the binary labels, and hence the orig
(K = 1) baseline, are identical for every N (checked, `check_same_labels`). For each N the smooth
model (K = N logits) is trained with all seeds as one ensemble; orig once. Per member we measure
test AUC / LogLoss, the local Lipschitz constant of p_hat w.r.t. the input field embeddings over a
fixed set of test examples (lipctr.lipschitz.local_lipschitz) and the softmax Jacobian norms at the
trained test logits against 1/sqrt(N). Everything goes to <runs-dir>/bandwidth/<preset>_<model>/:
config.json, runs/<orig | smooth_N<n>>/ (each ensemble a run of experiments.run_config:
checkpoints, metrics.csv, final.json; an interrupted sweep resumes where it stopped when run again,
or with --resume DIR), and, atomically, bandwidth.csv (one row per member), bandwidth.png, bandwidth.md.

Synthetic data: the numbers show how the method behaves, not how it does on real data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.bandwidth.data import load_data
from experiments.bandwidth.measure import run_sweep
from experiments.bandwidth.report import write_outputs
from experiments.cli import add_shared_arguments, parse, print_config, resolve_configs
from experiments.configs import ConfigError
from experiments.rundir import read_run_config
from lipctr import runtime, sharding
from lipctr.io import OutputPathError, check_output, write_json_atomic

PROG = "python -m experiments.bandwidth"
RENAMED = {  # the sweep's flags before it took the training commands' command line (experiments.cli)
    "--preset": "--set bandwidth.preset=small", "--data-seed": "--set bandwidth.data_seed=0",
    "--model": "--models dcnv2 (or --config dcnv2_ml100k)", "--classes": "--set bandwidth.classes=[2,3,5,10,20]",
    "--Ns": "--set bandwidth.classes=[2,3,5,10,20]", "--quantile": "--set bandwidth.quantile=0.6",
    "--lipschitz-examples": "--set bandwidth.lipschitz_examples=256",
    "--power-iters": "--set bandwidth.power_iters=30", "--patience": "--set train.patience=5",
    "--lambda-r": "--set loss.lambda_r=0.7", "--aggregation": "--set loss.aggregation=prob",
    "--batch-size": "--set train.batch_size=4096", "--lr": "--set train.learning_rate=1e-3",
    "--hparam": "--set model_hparams.KEY=VALUE, e.g. --set model_hparams.mlp_hidden_size=[64,64,64]",
    "--out": "--runs-dir DIR (the sweep is written to DIR/bandwidth/<preset>_<model>/)",
}
DATA_FLAGS = ("data", "format", "inter", "user", "item", "columns", "field_types")


def parse_args(argv=None) -> argparse.Namespace:
    return parse(parser(), argv, RENAMED)


def parser() -> argparse.ArgumentParser:
    """The sweep's command line: every training command's flags (experiments.cli); its own settings are keys."""
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    add_shared_arguments(p)
    return p


def sweep_configs(args: argparse.Namespace) -> list[dict]:
    """The sweep's config per backbone (--resume: the stored one, --epochs applied); ConfigError for a
    data flag (the sweep's data is synthetic: bandwidth.preset)."""
    given = [f"--{d.replace('_', '-')}" for d in DATA_FLAGS if getattr(args, d)]
    if given:
        raise ConfigError(f"{given[0]}: the bandwidth sweep trains on synthetic data; choose it with "
                          "--set bandwidth.preset=NAME (and bandwidth.data_seed)")
    if args.resume and args.models:
        raise ConfigError("--models cannot be combined with --resume: a resume continues the sweep stored in "
                          f"{Path(args.resume) / 'config.json'}")
    return resolve_configs(args)


def sweep_folder(args: argparse.Namespace, config: dict) -> Path:
    """<runs-dir>/bandwidth/<preset>_<model>/, or --resume's folder; ConfigError if it holds another sweep."""
    if args.resume:
        return Path(args.resume)
    out = Path(args.runs_dir or "runs") / "bandwidth" / f"{config['bandwidth']['preset']}_{config['model']}"
    check_output("--runs-dir", out, folder=True)
    if (out / "config.json").is_file() and read_run_config(out) != config:
        raise ConfigError(f"{out} holds a sweep of another config (its config.json); continue it with --resume {out}, "
                          "or give another --runs-dir")
    return out


def main(argv=None) -> int:
    runtime.configure_xla()
    try:
        args = parse_args(argv)
        configs = sweep_configs(args)
        if args.print_config:
            print_config(configs, PROG, argv)
            return 0
        outs = [sweep_folder(args, config) for config in configs]
        mesh = sharding.make_mesh(configs[0]["mesh"])
    except (ConfigError, OutputPathError, sharding.MeshError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(runtime.device_line())  # the devices this sweep trains on
    for config, out in zip(configs, outs):
        write_json_atomic(out / "config.json", config)
        try:
            dataset, preference = load_data(config)
            frame, buckets = run_sweep(config, dataset, preference, out / "runs", log, mesh, not args.no_progress)
        except ValueError as error:  # RunDirError, a run directory of another config
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"interrupted; continue with: {PROG} --resume {out}", file=sys.stderr)
            return 130
        summary = write_outputs(out, config, frame, buckets, dataset)
        headline = ["variant", "N", "test_auc", "test_auc_std", "grad_norm_mean", "relative_lipschitz_mean"]
        print(summary[headline].to_string(index=False))
        print(f"wrote {out / 'bandwidth.csv'}, {out / 'bandwidth.png'}, {out / 'bandwidth.md'}")
        print(json.dumps({"sweep": str(out)}))
    return 0
