"""The training commands' command line (experiments.main, experiments.mechanism, experiments.bandwidth).

One argument group every training command takes (`add_shared_arguments`), the flags that were
renamed (`parse`, refused with one line naming the new spelling), and flags -> validated configs
(`resolve_config`, `resolve_configs`): every flag is written over the named config (or --resume's
stored one) and the result is validated once, so a bad flag stops with one line naming it before
anything is loaded. `parse_args` is experiments.main's parser: the shared group and its own flags.
"""

from __future__ import annotations

import argparse
import sys

from experiments import data_source
from experiments.configs import PAPER_MODELS, ConfigError, load_config, merge, parse_toml_value, toml, validate
from experiments.configs import grid as grid_config
from experiments.rundir import resume_config
from lipctr.models import MODEL_NAMES

DEFAULT_CONFIG = "dcnv2_ml100k"
MAIN_DESCRIPTION = ("Train a config's orig and smooth variants with every seed at once into "
                    "<runs-dir>/<model>_<dataset>/<timestamp>/ and print the Table-1-style summary.")
MODEL_SETS = {"all": MODEL_NAMES, "paper": PAPER_MODELS}
MAIN_RENAMED = {"--lambda-sweep": "--grid loss.lambda_r=0.1,0.3,0.5 (the sweep as one ensemble, the point chosen on "
                                  "validation) or --select-lambda (the sweep beside the config's lambda_r; its values: "
                                  "--set lambda_sweep=[0.1,0.3,0.5])"}


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of every training command: one group, then the data flags (experiments.data_source)."""
    g = parser.add_argument_group("every training command (docs/cli.md: 'One command line')")
    g.add_argument("--config", help=f"<model>_<dataset> (e.g. dcnv2_ml1m) or a .toml file (default {DEFAULT_CONFIG})")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.learning_rate=5e-3 (value in TOML syntax)")
    g.add_argument("--seeds", help="comma-separated seeds, e.g. 2020,2021 (default: the config's, 2020-2024)")
    g.add_argument("--epochs", type=int, help="maximum number of epochs (with --resume: train longer)")
    g.add_argument("--models", help="'all' (the twelve backbones), 'paper' (the paper's seven) or a comma list, "
                                    "each as <model>_<dataset> on the config's dataset (default: the config's model)")
    g.add_argument("--runs-dir", help="where the command's output folders are created (default runs)")
    g.add_argument("--resume", metavar="DIR",
                   help="continue the interrupted run (experiments.main) or study (mechanism, bandwidth) in DIR")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--mesh", help="device mesh over all visible devices, e.g. seeds=4 or seeds=2,data=2 "
                                  "(default: the config's 'mesh'; '' = one device)")
    g.add_argument("--print-config", action="store_true",
                   help="print the resolved config as TOML (what the command would run; --config FILE.toml runs it) "
                        "and exit")
    data_source.add_arguments(parser)


def parse(parser: argparse.ArgumentParser, argv, renamed: dict[str, str]) -> argparse.Namespace:
    """parser's arguments; ConfigError naming the replacement of a flag that was renamed or removed."""
    argv = sys.argv[1:] if argv is None else list(argv)
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag in renamed:
            raise ConfigError(f"{flag} is no longer a flag of {parser.prog}; use {renamed[flag]}")
    return parser.parse_args(argv)


def parse_args(argv=None) -> argparse.Namespace:
    """experiments.main's command line (ConfigError for a removed flag)."""
    return parse(main_parser(), argv, MAIN_RENAMED)


def main_parser() -> argparse.ArgumentParser:
    """experiments.main's parser: the shared group, then its own flags."""
    p = argparse.ArgumentParser(prog="python -m experiments.main", description=MAIN_DESCRIPTION)
    add_shared_arguments(p)
    p.add_argument("--variant", choices=["orig", "smooth", "both"], help="default: both")
    p.add_argument("--lambda-r", type=float, help="lambda_r of the smooth variant")
    p.add_argument("--analysis",
                   help="'all' or a comma list of lambda (Fig. 4: the lambda_r sweep, as --select-lambda; with "
                        "--models only dcnv2, widedeep, xdeepfm), analyses (weight norms, noise, Lipschitz), report; "
                        "'none' (default) only trains")
    g = p.add_argument_group("grids (docs/tuning.md)")
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
                   help="the lambda_r sweep: shorthand for a --grid loss.lambda_r of the config's lambda_sweep "
                        "(else 0.1..0.9) trained beside the config's lambda_r; reports smooth at the lambda_r of "
                        "best mean validation AUC next to it")
    g = p.add_argument_group("hosts (docs/devices.md)")
    g.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize (settings not given below come from the "
                        "environment: JAX_COORDINATOR_ADDRESS, SLURM, Open MPI, Cloud TPU, Kubernetes)")
    g.add_argument("--coordinator-address", help="multi-host: HOST:PORT of process 0 (implies --distributed)")
    g.add_argument("--num-processes", type=int, help="multi-host: number of processes (implies --distributed)")
    g.add_argument("--process-id", type=int, help="multi-host: this process's id, 0..N-1 (implies --distributed)")
    p.set_defaults(own_flags=_apply_main_flags)
    return p


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


def _apply_main_flags(config: dict, args: argparse.Namespace) -> dict:
    """experiments.main's own flags: --variant, --lambda-r, --grid / --grid-programs written over the
    config's grid tables (a key given twice on the command line is an error), --max-members, --select-lambda."""
    if args.variant:
        config["variants"] = ["orig", "smooth"] if args.variant == "both" else [args.variant]
    if args.lambda_r is not None:
        config["loss"]["lambda_r"] = args.lambda_r
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
    if getattr(args, "own_flags", None):
        config = args.own_flags(config, args)
    if args.seeds is not None:
        config["seeds"] = _parse_list("--seeds", args.seeds, int, "2020,2021")
    if args.epochs is not None:
        config["train"]["max_epochs"] = args.epochs
    config = data_source.apply_flags(config, args)
    if args.mesh is not None:
        config["mesh"] = args.mesh
    return validate(config, source=name)


def model_names(text: str) -> tuple[str, ...]:
    """--models: 'all', 'paper' or a comma list of backbones; ConfigError naming an unknown one."""
    if text in MODEL_SETS:
        return MODEL_SETS[text]
    models = tuple(m.strip() for m in text.split(","))
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown:
        raise ConfigError(f"--models: unknown backbone(s) {unknown}; expected {', '.join(MODEL_SETS)} or a comma list "
                          f"of {', '.join(MODEL_NAMES)}")
    return models


def resolve_configs(args: argparse.Namespace) -> list[dict]:
    """One config, or with --models one per backbone: <model>_<dataset> on the config's dataset."""
    config = resolve_config(args)
    if not args.models:
        return [config]
    return [resolve_config(args, f"{model}_{config['dataset']}") for model in model_names(args.models)]


def print_config(configs: list[dict], prog: str, argv) -> None:
    """--print-config: the resolved config as TOML on stdout (ConfigError for several --models)."""
    if len(configs) > 1:
        raise ConfigError(f"--print-config prints one config; --models gave {len(configs)}: give one backbone")
    command = " ".join([prog, *(sys.argv[1:] if argv is None else argv)])
    print(toml.dumps(configs[0], (f"the config of: {command}", f"{prog} --config FILE.toml runs it"
                                                                 " (the flags given with it are written over it)")),
          end="")
