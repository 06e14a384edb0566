"""Supervision-bandwidth sweep (beyond the paper): does a wider rating head shrink the local
Lipschitz constant and lift AUC, as Theorem 1 suggests?

`python -m experiments.bandwidth [--preset small] [--model dcnv2] [--classes 2,3,5,10,20]
[--seeds 2020,2021,2022] [--epochs E] [--out DIR]`

One synthetic dataset (fixed data seed) keeps its continuous latent preference; for each N the
preference is bucketed into classes 1..N (lipctr.rating_buckets.bucketize, edges fitted on train) with
the binary threshold at the same quantile, so the binary labels, and hence the orig (K = 1)
baseline, are identical for every N (checked, `check_same_labels`). For each N the smooth model
(K = N logits) is trained with all seeds as one ensemble; orig once. Per member we measure test
AUC / LogLoss, the local Lipschitz constant of p_hat w.r.t. the input field embeddings over a fixed
set of test examples (lipctr.lipschitz.local_lipschitz) and the softmax Jacobian norms at the
trained test logits against 1/sqrt(N). Each ensemble is a run of experiments.run.run_variant in
--runs-dir (<orig | smooth_N<n>>/: checkpoints, metrics.csv, final.json), so an interrupted
sweep resumes where it stopped when run again. Outputs, atomically, in --out: bandwidth.csv (one
row per member), bandwidth.png, bandwidth.md.

Synthetic data: the numbers show how the method behaves, not how it does on real data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lipctr import runtime
from lipctr.io import OutputPathError, check_output
from lipctr.losses import AGGREGATIONS

from experiments.bandwidth.data import SweepConfig, load_data
from experiments.configs import parse_toml_value
from experiments.bandwidth.measure import run_sweep
from experiments.bandwidth.report import write_outputs


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers, got {text!r}") from None

def _hparam(item: str) -> tuple[str, object]:
    """"name=value" (value in TOML syntax; lists become tuples) -> (name, value)."""
    name, sep, text = item.partition("=")
    try:
        value = parse_toml_value(text, strict=True) if sep else None
    except ValueError:
        value = None
    if not name or value is None:
        raise ValueError(f"--hparam {item!r}: expected KEY=VALUE with a TOML value, e.g. mlp_hidden_size=[64,64,64]")
    return name, tuple(value) if isinstance(value, list) else value


def main(argv=None) -> int:
    runtime.configure_xla()
    p = argparse.ArgumentParser(prog="python -m experiments.bandwidth", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", help="synthetic preset (tiny, small, ml1m, ...)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--model", default="dcnv2")
    p.add_argument("--classes", "--Ns", dest="classes", default="2,3,5,10,20",
                   help="comma-separated numbers of rating classes N")
    p.add_argument("--seeds", default="2020,2021,2022")
    p.add_argument("--epochs", type=int, default=50, help="maximum epochs (early stopping on valid AUC)")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--lambda-r", type=float, default=0.7)
    p.add_argument("--quantile", type=float, default=0.6, help="binary threshold quantile of the preference")
    p.add_argument("--aggregation", choices=AGGREGATIONS, default="prob")
    p.add_argument("--batch-size", type=int, help="default: the model config's")
    p.add_argument("--lr", type=float, help="learning rate; default: the model config's")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                   help="model hyper-parameter override, value in TOML syntax, e.g. mlp_hidden_size=[64,64,64]")
    p.add_argument("--lipschitz-examples", type=int, default=256)
    p.add_argument("--power-iters", type=int, default=30)
    p.add_argument("--out", help="output folder (default runs/bandwidth/<preset>_<model>)")
    p.add_argument("--runs-dir", help="the ensembles' run directories, resumed when present "
                                      "(default runs/bandwidth/<preset>_<model>/runs)")
    args = p.parse_args(argv)
    try:
        config = SweepConfig(
            preset=args.preset, data_seed=args.data_seed, model=args.model,
            class_counts=_int_list(args.classes, "--classes"), seeds=_int_list(args.seeds, "--seeds"),
            lambda_r=args.lambda_r, threshold_quantile=args.quantile, aggregation=args.aggregation,
            max_epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, learning_rate=args.lr,
            lipschitz_examples=args.lipschitz_examples, power_iters=args.power_iters,
            model_hparams=tuple(_hparam(item) for item in args.hparam))
    except ValueError as error:
        p.error(str(error))
    out = Path(args.out or f"runs/bandwidth/{config.preset}_{config.model}")
    runs_dir = Path(args.runs_dir or f"runs/bandwidth/{config.preset}_{config.model}/runs")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        check_output("--out", out, folder=True)
        check_output("--runs-dir", runs_dir, folder=True)
    except OutputPathError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log(runtime.device_line())  # the devices this sweep trains on
    dataset, preference = load_data(config)
    try:
        frame, buckets = run_sweep(config, dataset, preference, runs_dir, log, progress=True)
    except ValueError as error:  # ConfigError, RunDirError, a mismatching run directory
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = write_outputs(out, config, frame, buckets, dataset)
    headline = ["variant", "N", "test_auc", "test_auc_std", "grad_norm_mean", "relative_lipschitz_mean"]
    print(summary[headline].to_string(index=False))
    print(f"wrote {out / 'bandwidth.csv'}, {out / 'bandwidth.png'}, {out / 'bandwidth.md'}")
    return 0

