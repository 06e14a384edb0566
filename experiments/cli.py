"""The experiment CLI's command line: flags -> one validated config (`parse_args`, `resolve_config`).

Every flag is written over the named config (or --resume's stored one) and the result is
validated once, so a bad flag stops with one line naming it before anything is loaded.
"""

from __future__ import annotations

import argparse

from experiments import data_source
from experiments.configs import ConfigError, load_config, merge, parse_toml_value, validate
from experiments.configs import grid as grid_config
from experiments.rundir import resume_config

DEFAULT_CONFIG = "dcnv2_ml100k"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.main", description=__doc__)
    p.add_argument("--config", help=f"<model>_<dataset> (e.g. dcnv2_ml1m) or a .toml file (default {DEFAULT_CONFIG})")
    p.add_argument("--variant", choices=["orig", "smooth", "both"], help="default: both")
    p.add_argument("--lambda-r", type=float, help="lambda_r of the smooth variant")
    p.add_argument("--lambda-sweep", help="comma-separated lambda_r values trained as one ensemble, e.g. 0.1,0.3,0.5,0.7,0.9")
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 2020,2021 (default 2020-2024)")
    p.add_argument("--epochs", type=int, help="maximum number of epochs (with --resume: train longer)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.learning_rate=5e-3 (value in TOML syntax)")
    g = p.add_argument_group("grids (README: 'Tuning: grids as one compiled ensemble')")
    g.add_argument("--grid", action="append", default=[], metavar="KEY=VALUES",
                   help="a per-member grid key (repeatable): members = product of the grid x seeds, one compiled "
                        "ensemble, e.g. --grid train.learning_rate=1e-3,5e-3 --grid loss.lambda_r=0.1,0.5,0.9")
    g.add_argument("--grid-programs", action="append", default=[], metavar="KEY=VALUES",
                   help="a shape-changing grid key (repeatable): one program per value, run one after another, "
                        "e.g. --grid-programs model_hparams.embedding_dim=8,16 or "
                        "'model_hparams.mlp_hidden_size=[[64, 64], [128]]'")
    g.add_argument("--max-members", type=int, metavar="N",
                   help="train a grid in waves of at most N members (default: all at once on CPU, sized from free "
                        "device memory on an accelerator)")
    g.add_argument("--grid-limit", type=int, metavar="N",
                   help="refuse a grid whose variant trains more than N members (points x programs x seeds; "
                        "default 1000, 0 = no limit); the grid's members, memory and epoch time are printed first")
    g.add_argument("--select-lambda", action="store_true", default=None,
                   help="also train the lambda_r sweep (the config's lambda_sweep, else 0.1..0.9) of smooth and report "
                        "smooth at the lambda_r of best mean validation AUC next to the config's lambda_r")
    p.add_argument("--runs-dir", help="where run directories are created (default runs)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run in RUN_DIR with its stored config (only --epochs, --mesh, "
                        "--no-progress and --analysis may be given with it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--analysis",
                   help="after training: 'all' or a comma list of lambda (Fig. 4 sweep), analyses (weight norms, "
                        "noise, Lipschitz), report; 'none' (default) only trains")
    p.add_argument("--models", help="'all': run the config's dataset for all seven backbones (<model>_<dataset>); the lambda "
                        "sweep then covers the paper's Figure 4 models (dcnv2, widedeep, xdeepfm)")
    data_source.add_arguments(p)
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


def _parse_list(flag: str, text: str, kind, example: str) -> list:
    """Comma-separated values of `kind`; ConfigError naming the flag for an empty list or a bad item."""
    what = "integers" if kind is int else "numbers"
    if not text.strip():
        raise ConfigError(f"{flag} {text!r}: empty; expected comma-separated {what}, e.g. {example}")
    values = []
    for item in text.split(","):
        try:
            values.append(kind(item.strip()))
        except ValueError:
            raise ConfigError(f"{flag} {text!r}: {item.strip()!r} is not one of the comma-separated {what} "
                              f"expected, e.g. {example}") from None
    return values


def _set_key(config: dict, dotted: str, value) -> dict:
    update: dict = {}
    node = update
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return merge(config, update)


def _apply_grid_flags(config: dict, args: argparse.Namespace) -> dict:
    """--grid / --grid-programs written over the config's grid tables (a key given twice on the
    command line is an error), --max-members, --select-lambda."""
    given: dict[str, str] = {}
    for table, flag, items in (("grid", "--grid", args.grid), ("grid_programs", "--grid-programs", args.grid_programs)):
        for item in items:
            key, values = grid_config.parse_flag(flag, item)
            if key in given:
                raise ConfigError(f"{flag} key {key!r}: given twice (also by {given[key]}); give each key once")
            given[key] = flag
            config = merge(config, {table: {key: values}})
    if args.max_members is not None:
        config["max_members"] = args.max_members
    if args.select_lambda:
        config["select_lambda"] = True
    return config


def resolve_config(args: argparse.Namespace, name: str | None = None) -> dict:
    """The config (`name`, default --config) with the command line's overrides applied and validated;
    with --resume the run's stored config (see `resume_config`)."""
    if args.resume:
        return resume_config(args)[0]
    name = name or args.config or DEFAULT_CONFIG
    config = load_config(name)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.learning_rate=5e-3")
        key, value = item.split("=", 1)
        config = _set_key(config, key.strip(), parse_toml_value(value.strip()))
    if args.variant:
        config["variants"] = ["orig", "smooth"] if args.variant == "both" else [args.variant]
    if args.lambda_r is not None:
        config["loss"]["lambda_r"] = args.lambda_r
    if args.lambda_sweep is not None:
        config["lambda_sweep"] = _parse_list("--lambda-sweep", args.lambda_sweep, float, "0.1,0.3,0.5")
    if args.seeds is not None:
        config["seeds"] = _parse_list("--seeds", args.seeds, int, "2020,2021")
    if args.epochs is not None:
        config["train"]["max_epochs"] = args.epochs
    config = _apply_grid_flags(config, args)
    config = data_source.apply_flags(config, args)
    if args.mesh is not None:
        config["mesh"] = args.mesh
    return validate(config, source=name)
